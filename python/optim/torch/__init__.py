"""optim.torch: drop-in replacements for torch.optim's optimizers, stepped by liboptim.

    import optim.torch
    opt = optim.torch.Adam(model.parameters(), lr=1e-3)   # was torch.optim.Adam
    ...
    loss.backward(); opt.step(); opt.zero_grad()

Each class subclasses torch.optim.Optimizer and takes torch.optim's arguments
and defaults (AdaBound: the reference adabound.AdaBound's), plus a few extras
(bias_correction, eps_placement, decoupled_weight_decay, maximize everywhere,
Adadelta momentum, and on every class nonfinite= and clip_grad_norm=, gradient
checks fused into the step). One step is one call into the C library over
every tensor. Parameters and gradients must be CPU, contiguous float32 tensors.
See each class's docstring for what differs from torch.optim.

optim.torch.lr_scheduler (imported with optim.torch, as torch.optim.lr_scheduler
is with torch.optim) has torch's schedulers. Also here: clip_grad_norm_ and clip_grad_value_ (torch.nn.utils's, computed by
liboptim in one call), SAM (sharpness-aware minimization and ASAM around any of
the optimizers, with the interface of the reference PyTorch SAM), and
NonFiniteGradientError (raised under nonfinite='error').
"""
from . import lr_scheduler
from ._clip import clip_grad_norm_, clip_grad_value_
from ._optimizers import SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW, RAdam, NAdam, AdaBound
from ._sam import SAM
from ._step import NonFiniteGradientError

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "RAdam", "NAdam", "AdaBound", "SAM",
           "clip_grad_norm_", "clip_grad_value_", "NonFiniteGradientError", "lr_scheduler"]
