"""optim.torch: drop-in replacements for torch.optim's optimizers, stepped by liboptim.

    import optim.torch
    opt = optim.torch.Adam(model.parameters(), lr=1e-3)   # was torch.optim.Adam
    ...
    loss.backward(); opt.step(); opt.zero_grad()

Each class subclasses torch.optim.Optimizer and takes torch.optim's arguments
and defaults (AdaBound: the reference adabound.AdaBound's), plus a few extras
(bias_correction, eps_placement, decoupled_weight_decay, maximize everywhere,
Adadelta momentum). One step is one call into the C library over every tensor.
Parameters and gradients must be CPU, contiguous float32 tensors.
See each class's docstring for what differs from torch.optim.
"""
from ._optimizers import SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW, RAdam, NAdam, AdaBound

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "RAdam", "NAdam", "AdaBound"]
