"""optim.torch's Adamax, ASGD and Rprop: torch.optim 1.13's classes, with its
arguments and defaults, stepped by liboptim (src/rules/adamax.h, asgd.h, rprop.h)."""
from ._base import _Optimizer, _check_flags
from ._optimizers import _COMMON_DOC, _spec

__all__ = ["Adamax", "ASGD", "Rprop"]


class Adamax(_Optimizer):
    __doc__ = """AdaMax (Adam with the infinity norm), as torch.optim.Adamax.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 2e-3).
        betas (Tuple[float, float], optional): coefficients of the running
            average of the gradient and of the infinity norm, each in [0, 1)
            (default: (0.9, 0.999)).
        eps (float, optional): added to |g| in the infinity norm; must be >= 0 (default: 1e-8).
        weight_decay (float, optional): L2 penalty (default: 0).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional): maximize the objective (default: False).

    state[p] has 'step' (a 0-dim float32 tensor, as torch), 'exp_avg' and
    'exp_inf'. Bit-identical to torch 1.13's default path on float32 and
    float64 (docs/FIDELITY.md).
    """ + _COMMON_DOC

    _rule_name = "adamax"
    _complex = "real"  # torch 1.13 steps torch.view_as_real of parameter, gradient and state (weight decay aside)
    _hp_spec = _spec("lr", "betas", "eps", "weight_decay", "maximize")
    _step_kind = "tensor"
    _required_slots = ("exp_avg", "exp_inf")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, capturable=False, differentiable=False, fused=None, nonfinite="propagate",
                 clip_grad_norm=None, clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("Adamax", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                    fused=fused))
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class ASGD(_Optimizer):
    __doc__ = """Averaged SGD (Polyak & Juditsky 1992), as torch.optim.ASGD.

    Per element, with eta and mu as the previous step left them (eta = lr and
    mu = 1 at the first step): p = p * (1 - lambd * eta) - eta * g; the
    average ax = p while mu = 1, then ax + (p - ax) * mu. After the step,
    eta = lr / (1 + lambd * lr * step) ** alpha and mu = 1 / max(1, step - t0).

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-2).
        lambd (float, optional): decay term, >= 0 (default: 1e-4).
        alpha (float, optional): power of the eta update, in [0, 1] (default: 0.75).
        t0 (float, optional): step after which averaging starts (default: 1e6).
        weight_decay (float, optional): L2 penalty (default: 0).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional): maximize the objective (default: False).

    state[p] has 'step', 'eta', 'mu' (0-dim float32 tensors, as torch 1.13)
    and 'ax'. Two differences from torch: lambd < 0 and alpha outside [0, 1]
    are refused (torch accepts them; the paper's alpha is in (1/2, 1]), and
    'mu' is computed from the step and the group's t0 as torch computes it
    (a loaded 'mu' is checked, not kept: with an unchanged t0 it is the same
    number). Bit-identical to torch 1.13's default path on float32 and
    float64 (docs/FIDELITY.md).
    """ + _COMMON_DOC

    _rule_name = "asgd"
    _complex = "real"  # torch 1.13 steps torch.view_as_real of parameter, gradient and ax (weight decay aside)
    _hp_spec = _spec("lr", "lambd", "alpha", "t0", "weight_decay", "maximize")
    _step_kind = "tensor"
    _required_slots = ("ax",)
    _scalar_keys = ("eta", "mu")

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, foreach=None,
                 maximize=False, *, capturable=False, differentiable=False, fused=None, nonfinite="propagate",
                 clip_grad_norm=None, clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("ASGD", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class Rprop(_Optimizer):
    __doc__ = """Resilient backpropagation, as torch.optim.Rprop.

    Per element: the step size is multiplied by etaplus while the gradient
    keeps its sign and by etaminus when it flips (then that element does not
    move and its gradient is forgotten), clamped to step_sizes; p moves by
    the step size against the gradient's sign.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): initial step size (default: 1e-2).
        etas (Tuple[float, float], optional): (etaminus, etaplus), with
            0 < etaminus < 1 < etaplus (default: (0.5, 1.2)).
        step_sizes (Tuple[float, float], optional): the smallest and largest
            step size, each >= 0 (default: (1e-6, 50)).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional): maximize the objective (default: False).

    state[p] has 'step' (a Python int, as torch 1.13's Rprop), 'prev' and
    'step_size'. The step sizes start at the group's lr when p's state is
    made (later lr changes do not move them, as in torch). A NaN gradient
    element leaves p and its step size unchanged and makes 'prev' NaN, as
    torch 1.13 does (its sign(NaN) is 0). Bit-identical to torch 1.13's
    default path on float32 and float64 (docs/FIDELITY.md).
    """ + _COMMON_DOC

    _rule_name = "rprop"
    _complex = "real"  # torch 1.13 steps the real views (its step sizes start at complex(lr, lr): lr in each)
    _hp_spec = _spec("lr", "etas", "step_sizes", "maximize")
    _step_kind = "int"
    _required_slots = ("prev", "step_size")

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), foreach=None, maximize=False, *,
                 capturable=False, differentiable=False, fused=None, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False, loss_scale=None,
                 state_dtype=None):
        _check_flags("Rprop", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                   fused=fused))
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach, maximize=maximize)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
