"""optim.torch's SparseAdam: torch.optim.SparseAdam 1.13's class, with its
arguments, defaults and checks, stepped by liboptim (src/rules/sparse_adam.h,
include/optim_sparse.h)."""
from ._base import _Optimizer
from ._optimizers import _COMMON_DOC, _spec

__all__ = ["SparseAdam"]


class SparseAdam(_Optimizer):
    __doc__ = """Lazy Adam for sparse gradients, as torch.optim.SparseAdam.

    Only the rows present in a parameter's sparse gradient (nn.Embedding(
    sparse=True) gives such gradients) have their moments and values
    updated; every other row keeps every byte, and a step costs the rows
    present, not the table. The step is counted per parameter at each step
    it has a gradient (an empty one too), as torch counts it. Uncoalesced
    gradients (duplicate indices) are summed by torch's own coalesce() first.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter
            groups; dense tensors (ValueError for sparse ones, as torch).
        lr (float, optional): learning rate, > 0 (default: 1e-3).
        betas (Tuple[float, float], optional): coefficients of the running
            averages of the gradient and of its square, each in [0, 1)
            (default: (0.9, 0.999)).
        eps (float, optional): added to the denominator, > 0 (default: 1e-8).
        maximize (bool, optional): maximize the objective (default: False).

    A dense gradient raises RuntimeError ("SparseAdam does not support dense
    gradients, please consider Adam instead"), as in torch. state[p] has
    'step' (a Python int, as torch 1.13), 'exp_avg' and 'exp_avg_sq' after
    p's first step. Bit-identical to torch 1.13 on float32 and float64
    (python/tests/test_torch_sparse.py). Sparse steps need parameters whose
    state is row-major (contiguous), of float32 or float64 (not bfloat16,
    float16, master weights, stochastic rounding or a state_dtype= other than
    the parameter's: ValueError naming them),
    and real (complex parameters are refused).
    """ + _COMMON_DOC

    _rule_name = "sparse_adam"
    _complex = None
    _complex_reason = "optim.torch steps sparse gradients of real parameters only"
    _hp_spec = _spec("lr", "betas", "eps", "maximize")
    _step_kind = "int"
    _required_slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False, *, nonfinite="propagate",
                 clip_grad_norm=None, clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        # torch 1.13's checks and messages, in its order.
        if not 0.0 < lr:
            raise ValueError("Invalid learning rate: {}".format(lr))
        if not 0.0 < eps:
            raise ValueError("Invalid epsilon value: {}".format(eps))
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError("Invalid beta parameter at index 0: {}".format(betas[0]))
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError("Invalid beta parameter at index 1: {}".format(betas[1]))
        params = list(params)
        sparse_params = []
        for index, param in enumerate(params):
            if isinstance(param, dict):
                for d_index, d_param in enumerate(param.get("params", [])):
                    if getattr(d_param, "is_sparse", False):
                        sparse_params.append([index, d_index])
            elif getattr(param, "is_sparse", False):
                sparse_params.append(index)
        if sparse_params:
            raise ValueError(
                f"Sparse params at indices {sparse_params}: SparseAdam requires dense parameter tensors"
            )
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
