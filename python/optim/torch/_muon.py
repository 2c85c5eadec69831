"""optim.torch.Muon: torch.optim.Muon (torch >= 2.9) stepped by liboptim, its
matrix products by liboptim_muon over OpenBLAS; and MuonWithAuxAdam, Keller
Jordan's reference class that hands the parameters Muon does not take to AdamW."""
import torch

from ._base import _Optimizer, _check_flags
from ._optimizers import _COMMON_DOC

__all__ = ["Muon"]

_DEFAULT_NS = (3.4445, -4.7750, 2.0315)


def _check_muon_params(owner, groups):
    """torch.optim.Muon's refusal of parameters that are not 2-D (its message), and
    liboptim's of other dtypes than float32 (the iteration is sgemm's), before a step."""
    for group in groups:
        for p in group["params"]:
            if p.ndim != 2:
                raise ValueError("Muon only supports 2D parameters whereas we found a parameter with size: %s"
                                 % (p.size(),))
            if p.dtype is not torch.float32:
                raise TypeError("%s: a parameter of size %s has dtype %s: Muon's Newton-Schulz iterations run in "
                                "float32 over OpenBLAS's sgemm (float32 parameters only)"
                                % (owner, tuple(p.size()), p.dtype))


class Muon(_Optimizer):
    __doc__ = """Muon, MomentUm Orthogonalized by Newton-Schulz (Keller Jordan 2024), with
    torch.optim.Muon's arguments and defaults (torch >= 2.9), for 2-D parameters.

    Per parameter P (rows x cols): B = lerp(B, G, 1 - momentum); U = lerp(G, B,
    momentum) if nesterov else B; X = U / max(||U||, eps); ns_steps times
    X = a X + (b A + c A A) X with A = X X^T (the same on X^T when rows > cols);
    P = P (1 - lr weight_decay) - adjusted_lr X, adjusted_lr = lr sqrt(max(1,
    rows / cols)) (adjust_lr_fn None or "original") or lr 0.2 sqrt(max(rows,
    cols)) ("match_rms_adamw"). Element-wise parts are liboptim kernels (the same
    bits on every CPU path and thread count); the matrix products are
    liboptim_muon's, OpenBLAS sgemm on one thread (docs/rules/muon.md).

    Args:
        params (iterable): 2-D float32 parameters or dicts defining parameter groups
            (others: ValueError, as torch).
        lr (float, optional): learning rate (default: 1e-3).
        weight_decay (float, optional): decoupled weight decay (default: 0.1).
        momentum (float, optional): momentum factor (default: 0.95).
        nesterov (bool, optional): Nesterov momentum (default: True).
        ns_coefficients (tuple of three floats, optional): (a, b, c) of the quintic
            (default: (3.4445, -4.7750, 2.0315)).
        eps (float, optional): the norm's lower bound; must be > 0 (default: 1e-7).
        ns_steps (int, optional): Newton-Schulz iterations, 1..99 (default: 5).
        adjust_lr_fn (str or None, optional): None or "original", or
            "match_rms_adamw" (default: None).
        foreach (bool, optional): accepted, no effect.

    state[p] is {'momentum_buffer': tensor} after p's first step, as torch. Differences
    from torch: the iteration runs in float32 (torch's in bfloat16: ours is closer to
    the exact iteration); float32 parameters only.
    """ + _COMMON_DOC

    _rule_name = "muon"
    _complex_reason = "torch.optim.Muon does not support complex parameters"
    _hp_spec = (("lr", "real", ("lr",)), ("weight_decay", "real", ("weight_decay",)),
                ("momentum", "real", ("momentum",)), ("nesterov", "bool", ("nesterov",)),
                ("ns_coefficients", "triple", ("ns_a", "ns_b", "ns_c")), ("eps", "real", ("eps",)),
                ("ns_steps", "int", ("ns_steps",)), ("adjust_lr_fn", "adjust_lr", ("adjust_lr",)))
    _step_kind = None
    _required_slots = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=_DEFAULT_NS, eps=1e-7, ns_steps=5, adjust_lr_fn=None, *, foreach=None,
                 capturable=False, differentiable=False, fused=False, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False, loss_scale=None,
                 state_dtype=None):
        _check_flags("Muon", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        # torch.optim.Muon's checks, its messages
        if not 0.0 <= lr:
            raise ValueError("Learning rate should be >= 0 but is: %s" % (lr,))
        if not 0.0 <= momentum:
            raise ValueError("momentum should be >= 0 but is: %s" % (momentum,))
        if not 0.0 <= weight_decay:
            raise ValueError("weight decay should be >= 0 but is: %s" % (weight_decay,))
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError("Adjust learning rate function %s is not supported" % (adjust_lr_fn,))
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
        _check_muon_params("Muon", self.param_groups)

    def add_param_group(self, param_group):
        # torch checks the shapes in __init__ only; a group added later must be 2-D as well (else its
        # first step would fail): checked before it is added.
        if getattr(self, "_c", None) is not None and self.param_groups:
            params = param_group["params"]
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            _check_muon_params("Muon", [{"params": params}])
            param_group = dict(param_group, params=params)
        super().add_param_group(param_group)
