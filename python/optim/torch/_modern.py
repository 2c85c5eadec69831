"""optim.torch's optimizers from after torch.optim 1.13: the authors' reference
implementations' arguments and defaults, stepped by liboptim."""
from ._base import _Optimizer, _check_flags
from ._optimizers import _COMMON_DOC, _spec

__all__ = ["Lion"]


class Lion(_Optimizer):
    __doc__ = """Lion, EvoLved Sign Momentum (Chen et al. 2023), as the authors'
    reference lion_pytorch.Lion (github.com/google/automl, lion/lion_pytorch.py).

    Per element: p = p * (1 - lr * weight_decay); c = beta1 * m + (1 - beta1) * g;
    p = p - lr * sign(c); m = beta2 * m + (1 - beta2) * g. The step of every
    element is +-lr (0 where c = 0): lr is typically 3-10x smaller than AdamW's,
    and weight_decay 3-10x larger (the authors' advice).

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-4, the reference's).
        betas (Tuple[float, float], optional): beta1 interpolates the update's
            sign, beta2 the momentum, each in [0, 1) (default: (0.9, 0.99)).
        weight_decay (float, optional): decoupled weight decay (default: 0, the
            reference's; optax.lion's default is 1e-3).
        maximize (bool, optional, optim extra): maximize the objective (default: False).
        decoupled_weight_decay (bool, optional, optim extra): True (default,
            the reference) multiplies p by 1 - lr * weight_decay; False adds
            weight_decay * p to the gradient instead (L2).
        foreach (bool, optional): accepted, no effect.

    state[p] is {'exp_avg': tensor} after p's first step, as the reference
    (no 'step'). Differences from the reference: a NaN in c gives a NaN
    parameter element (the library's policy), where torch's sign(NaN) is 0.
    """ + _COMMON_DOC

    _rule_name = "lion"
    _complex_reason = "Lion is defined for real parameters (torch.optim 1.13 has no Lion to follow)"
    _hp_spec = _spec("lr", "betas", "weight_decay", "maximize", "decoupled_weight_decay")
    _step_kind = None
    _required_slots = ("exp_avg",)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
                 decoupled_weight_decay=True, foreach=None, capturable=False, differentiable=False, fused=False,
                 nonfinite="propagate", clip_grad_norm=None, clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("Lion", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
