"""optim.torch.Adafactor: torch 2.x's torch.optim.Adafactor (torch >= 2.5,
torch/optim/_adafactor.py), stepped by liboptim's OPTIM_ADAFACTOR."""
import torch

from ._base import _Optimizer, _check_flags
from ._optimizers import _COMMON_DOC, _spec

__all__ = ["Adafactor"]


def _slot_geometry(shape, s):
    """The shape of slot s (0 row_var, 1 col_var, 2 variance) of a parameter of
    `shape`, as torch 2.x's Adafactor makes its state; None where it has none."""
    if len(shape) >= 2:
        if s == 0:
            return shape[:-1] + (1,)
        if s == 1:
            return shape[:-2] + (1, shape[-1])
        return None
    return shape if s == 2 else None


class Adafactor(_Optimizer):
    __doc__ = """Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates
    with Sublinear Memory Cost") with the arguments, defaults, state and
    arithmetic of torch 2.x's torch.optim.Adafactor (_single_tensor_adafactor),
    stepped by liboptim.

    Per tensor at step t: w = t^beta2_decay; rho = min(lr, 1/sqrt(t));
    alpha = max(eps2, RMS(p)) * rho; p = p * (1 - lr * weight_decay); for a
    tensor of two or more dimensions, factored over its last two (batched
    over the leading ones): row_var = lerp(row_var, mean of g^2 over the
    last dim, w), col_var = lerp(col_var, mean of g^2 over the second-last,
    w), v = row_var col_var / max(mean(row_var), eps1); else variance =
    lerp(variance, g^2, w), v = variance; u = g / sqrt(max(v, eps1^2));
    p = p - alpha / max(1, RMS(u) / d) * u. The RMS values are reductions
    inside the same step (fixed blocks and order: the same bits on any
    thread count and CPU path). docs/rules/adafactor.md.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float or one-element tensor, optional): the cap of the relative step size rho and the
            weight decay's factor (default: 1e-2).
        beta2_decay (float, optional): beta2_t = 1 - t^beta2_decay, <= 0 (default: -0.8).
        eps (Tuple[float or None, float], optional): eps1, the floor of the
            variance estimate (None: the machine epsilon of the dtype of the
            group's first parameter with a gradient at this step, kept for
            the group's others, as torch 2.x), and eps2, the floor of RMS(p) in the step size
            (default: (None, 1e-3)).
        d (float, optional): the clipping threshold of RMS(u), >= 1 (default: 1.0).
        weight_decay (float, optional): decoupled decay, p *= 1 - lr * weight_decay (default: 0.0).
        foreach (bool, optional): accepted, no effect (default: None).
        maximize (bool, optional): maximize the objective (default: False).

    state[p] is {'step', 'row_var', 'col_var'} for a parameter of two or more
    dimensions (row_var of shape (..., R, 1), col_var (..., 1, C)) and
    {'step', 'variance'} for the others, after p's first step, as torch
    2.x's: its state_dict loads into torch >= 2.5's Adafactor and back. The
    factors are views of the C memory, row-major; a parameter in another
    layout (transposed, channels_last) is stepped through a row-major working
    copy, so its factors are those of the tensor's logical shape, as
    torch's. float32 and float64 parameters with state of their own dtype
    (bfloat16/float16 parameters, master_weights, state_dtype and
    stochastic_rounding are refused by name: the reductions run on float32
    and float64 memory); eps1 None is the machine epsilon of the dtype of
    the group's first parameter stepped (a group mixing float32 and float64
    parameters takes one for all of them, as torch 2.x).
    """ + _COMMON_DOC

    _rule_name = "adafactor"
    _complex_reason = "torch 2.x's Adafactor refuses complex parameters"
    _hp_spec = _spec("lr", "beta2_decay") + (("eps", "eps_pair", ("eps_auto", "eps1", "eps2")),
                                             ("d", "real", ("clip_threshold",))) + _spec("weight_decay", "maximize")
    _step_kind = "tensor"
    _required_slots = ("row_var", "col_var", "variance")
    _row_major = True  # C reads the last two dimensions as rows x cols, row-major (_cobject.Rule)
    _slot_geometry = staticmethod(_slot_geometry)

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=False,
                 nonfinite="propagate", clip_grad_norm=None, clip_grad_value=None, master_weights=False,
                 stochastic_rounding=False, loss_scale=None, state_dtype=None):
        _check_flags("Adafactor", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                       fused=fused))
        # torch 2.x's checks and messages (lr, beta2_decay, eps, d, weight_decay).
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
