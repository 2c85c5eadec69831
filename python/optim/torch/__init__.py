"""optim.torch: drop-in replacements for torch.optim's optimizers, stepped by liboptim.

    import optim.torch
    opt = optim.torch.Adam(model.parameters(), lr=1e-3)   # was torch.optim.Adam
    ...
    loss.backward(); opt.step(); opt.zero_grad()

Each class subclasses torch.optim.Optimizer and takes torch.optim's arguments
and defaults (AdaBound, Lion: the authors' reference implementations'; LAMB,
LARS: timm's), plus a few extras
(bias_correction, eps_placement, decoupled_weight_decay, maximize everywhere,
Adadelta momentum, and on every class nonfinite= and clip_grad_norm=, gradient
checks fused into the step). One step is one call into the C library over
every tensor. Parameters and gradients must be CPU float32, float64, bfloat16 or float16
tensors (state in the parameter's dtype, docs/PRECISION.md), or complex64 and
complex128 where torch.optim steps them, in any layout (docs/TORCH.md).
See each class's docstring for what differs from torch.optim.

optim.torch.lr_scheduler (imported with optim.torch, as torch.optim.lr_scheduler
is with torch.optim) has torch's schedulers. Also here: clip_grad_norm_ and clip_grad_value_ (torch.nn.utils's, computed by
liboptim in one call), SAM (sharpness-aware minimization and ASAM around any of
the optimizers, with the interface of the reference PyTorch SAM), and
NonFiniteGradientError (raised under nonfinite='error').

Under torch.distributed the classes work with DistributedDataParallel and as
the optimizer_class of torch's ZeroRedundancyOptimizer; inside the latter,
whose local optimizer sees one rank's shard, fused clip_grad_norm,
nonfinite='skip' and SAM are refused (docs/DISTRIBUTED.md says what to do
instead; examples/ddp_zero.py is a complete program).
"""
from . import lr_scheduler
from ._clip import clip_grad_norm_, clip_grad_value_
from ._optimizers import SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW, RAdam, NAdam, AdaBound
from ._modern import Lion, LAMB, LARS, SGDScheduleFree, AdamWScheduleFree
from ._muon import Muon, MuonWithAuxAdam
from ._adafactor import Adafactor
from ._classic import Adamax, ASGD, Rprop
from ._lbfgs import LBFGS
from ._sparse import SparseAdam
from ._sam import SAM
from ._step import NonFiniteGradientError
from ._quantized import QuantizedState, dequantize_state_dict

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "RAdam", "NAdam", "AdaBound", "Lion", "LAMB", "LARS", "SGDScheduleFree", "AdamWScheduleFree", "Muon", "MuonWithAuxAdam", "SAM",
           "Adamax", "ASGD", "Rprop",
           "Adafactor",
           "LBFGS", "SparseAdam",
           "clip_grad_norm_", "clip_grad_value_", "NonFiniteGradientError", "lr_scheduler",
           "QuantizedState", "dequantize_state_dict"]
