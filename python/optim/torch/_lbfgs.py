"""optim.torch.LBFGS: torch.optim.LBFGS 1.13 (limited-memory BFGS with an
optional strong-Wolfe line search), its vector operations run by liboptim
(include/optim_vec.h), its control flow here.

The vector work of an iteration (dot products, the two-loop recursion over the
history, y = g - g_prev, s = t d, the step p += t d over every parameter, the
max |g| and sum |g| tests) is liboptim's, deterministic for any thread count and
CPU path. The scalar work (step lengths, the line search's interpolation and
tests, the history's ro and H_diag) is done, as torch does it, on 0-dim tensors
of the parameters' dtype, in the same order: the only differences from torch
are the roundings of the reductions (liboptim sums dot products and |g| in
double in a fixed order, then rounds to the dtype; torch's float32 BLAS sums in
float32 in its own order). docs/rules/lbfgs.md and docs/TORCH.md say what is
compared with torch and how closely.
"""
import torch

from .. import _constants as C
from .. import _vec
from ._tensors import STRIDED, check_readable, describe, storage_of, storage_problem

__all__ = ["LBFGS"]

_DTYPES = {torch.float32: C.OPTIM_FLOAT32, torch.float64: C.OPTIM_FLOAT64}


def _addr(t):
    """The address of contiguous tensor t's element 0 and the storage that holds
    it (keep the storage until C returns)."""
    st = storage_of(t)
    return st.data_ptr() + t.storage_offset() * t.element_size(), st


class _Flat:
    """Operations on whole flat vectors (contiguous CPU tensors of one dtype and
    n elements, the parameters' total). Every operand is checked before its
    address goes to C: a vector of another size, dtype or layout (state loaded
    from another model, a parameter replaced) would be read or written past its
    storage."""

    def __init__(self, dtype, sizes):
        self.dtype = dtype
        self.code = _DTYPES[dtype]
        self.sizes = sizes  # the parameters' numbers of elements when the step began
        self.n = sum(sizes)

    def _one(self, t):
        if (not isinstance(t, torch.Tensor)
                or t.dtype != self.dtype or t.numel() != self.n
                or t.layout is not STRIDED or not t.is_cpu or not t.is_contiguous()):
            raise RuntimeError("LBFGS: a vector of the step (%s) is not a contiguous CPU %s vector of %d elements, "
                               "the parameters' total" % (describe(t) if isinstance(t, torch.Tensor) else type(t),
                                                          self.dtype, self.n))
        return t.data_ptr() if t.numel() else 0

    def dot(self, x, y):
        """x . y as a 0-dim tensor of the dtype (the double sum rounded once)."""
        v = _vec.dot(self.code, [self._one(x)], [self._one(y)], [x.numel()])
        return torch.tensor(v, dtype=self.dtype)

    def max_abs(self, x):
        return torch.tensor(_vec.norm(self.code, [self._one(x)], [x.numel()], float("inf")), dtype=self.dtype)

    def sum_abs(self, x):
        return torch.tensor(_vec.norm(self.code, [self._one(x)], [x.numel()], 1.0), dtype=self.dtype)

    def sub(self, x, y):
        """x - y, a new tensor (fma(-1, y, x): one rounding, as torch's sub)."""
        out = x.clone()
        _vec.axpy(self.code, -1.0, [self._one(y)], [self._one(out)], [x.numel()])
        return out

    def mul(self, x, a):
        """a * x, a new tensor (a rounded to the dtype first, as torch's mul by a scalar or 0-dim tensor)."""
        out = torch.empty_like(x)
        _vec.scale(self.code, float(a), [self._one(x)], [self._one(out)], [x.numel()])
        return out

    def direction(self, g, dirs, stps, ro, h_diag):
        """(d, al): the two-loop recursion, d = -H g, as torch computes it."""
        d = torch.empty_like(g)
        if not len(dirs) == len(stps) == len(ro):
            raise RuntimeError("LBFGS: the history holds %d old_dirs, %d old_stps and %d ro: they go in pairs"
                               % (len(dirs), len(stps), len(ro)))
        al = _vec.lbfgs_direction(self.code, self.n, [self._one(y) for y in dirs], [self._one(s) for s in stps],
                                  [float(r) for r in ro], float(h_diag), self._one(g), self._one(d))
        return d, [torch.tensor(a, dtype=self.dtype) for a in al]


def _cubic_min(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped
    to bounds (default: the interval between x1 and x2); the interval's middle
    when the cubic has no real minimiser. The operations and their operands'
    types are torch 1.13's (_cubic_interpolate), so that 0-dim float32 tensors
    round where torch's do."""
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    c1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = c1 ** 2 - g1 * g2
    if not disc >= 0:
        return (lo + hi) / 2.
    c2 = disc.sqrt()
    if x1 <= x2:
        x = x2 - (x2 - x1) * ((g2 + c2 - c1) / (g2 - g1 + 2 * c2))
    else:
        x = x1 - (x1 - x2) * ((g1 + c2 - c1) / (g1 - g2 + 2 * c2))
    return min(max(x, lo), hi)


def _wolfe_search(evaluate, flat, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """The strong-Wolfe line search of torch 1.13 (minFunc's, via torch/optim's
    lswolfe.lua) along d from the point where the loss is f, the flat gradient g
    and the directional derivative gtd, starting at step t. evaluate(t) gives
    (loss, flat gradient) at x + t d. Returns (loss, flat gradient, t, evaluations).

    Two phases: bracketing (grow t by cubic extrapolation until an interval holds
    a point that satisfies the conditions, or one does) then zooming (shrink the
    interval by safeguarded cubic interpolation)."""
    d_norm = flat.max_abs(d)
    g = g.clone()
    f_new, g_new = evaluate(t)
    evals = 1
    gtd_new = flat.dot(g_new, d)

    # Bracketing. The interval is kept as lists [a, b] of step, loss, gradient, derivative.
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    it = 0
    interval = None
    while it < max_ls:
        if f_new > (f + c1 * t * gtd) or (it > 1 and f_new >= f_prev):
            interval = ([t_prev, t], [f_prev, f_new], [g_prev, g_new.clone()], [gtd_prev, gtd_new])
            break
        if abs(gtd_new) <= -c2 * gtd:
            interval = ([t], [f_new], [g_new], None)
            done = True
            break
        if gtd_new >= 0:
            interval = ([t_prev, t], [f_prev, f_new], [g_prev, g_new.clone()], [gtd_prev, gtd_new])
            break
        # extrapolate: a step between 1.01 t and 10 t from the cubic through the last two points
        t_old = t
        t = _cubic_min(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = t_old, f_new, g_new.clone(), gtd_new
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = flat.dot(g_new, d)
        it += 1
    if it == max_ls:
        # torch keeps the derivatives of the last bracket built (none if none was)
        ds = interval[3] if interval is not None else None
        interval = ([0, t], [f, f_new], [g, g_new], ds)
    steps, losses, grads, derivs = interval

    # Zooming.
    stuck = False
    lo, hi = (0, 1) if losses[0] <= losses[-1] else (1, 0)
    while not done and it < max_ls:
        if abs(steps[1] - steps[0]) * d_norm < tolerance_change:
            break
        t = _cubic_min(steps[0], losses[0], derivs[0], steps[1], losses[1], derivs[1])
        # Safeguard: a trial within 10% of the interval's length from an end is
        # moved to that distance when the last trial was too (or t is outside).
        top, bottom = max(steps), min(steps)
        margin = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < margin:
            if stuck or t >= top or t <= bottom:
                t = top - margin if abs(t - top) < abs(t - bottom) else bottom + margin
                stuck = False
            else:
                stuck = True
        else:
            stuck = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = flat.dot(g_new, d)
        it += 1
        if f_new > (f + c1 * t * gtd) or f_new >= losses[lo]:
            # not enough decrease, or not below the low end: t is the new high end
            steps[hi], losses[hi], grads[hi], derivs[hi] = t, f_new, g_new.clone(), gtd_new
            lo, hi = (0, 1) if losses[0] <= losses[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (steps[hi] - steps[lo]) >= 0:
                # the low end becomes the high end
                steps[hi], losses[hi], grads[hi], derivs[hi] = steps[lo], losses[lo], grads[lo], derivs[lo]
            steps[lo], losses[lo], grads[lo], derivs[lo] = t, f_new, g_new.clone(), gtd_new
    return losses[lo], grads[lo], steps[lo], evals


def _check_line_search(name):
    if name is not None and name != "strong_wolfe":
        raise RuntimeError("LBFGS: line_search_fn = %r: only 'strong_wolfe' is supported (or None: fixed steps "
                           "of length lr)" % (name,))


def _state_vector(t, name, dtype, n):
    """State vector `name` (loaded or edited since it was made) as _Flat takes it: a contiguous copy if it is
    strided; an error naming it if its size or dtype is not the parameters'."""
    if not isinstance(t, torch.Tensor) or t.layout is not STRIDED or not t.is_cpu:
        raise TypeError("LBFGS: state %s is %s, not a dense CPU tensor" % (name, describe(t) if isinstance(
            t, torch.Tensor) else type(t).__name__))
    if t.dtype != dtype:
        raise TypeError("LBFGS: state %s (%s) is not of the parameters' dtype %s" % (name, describe(t), dtype))
    if t.numel() != n:
        raise RuntimeError("LBFGS: state %s holds %d elements but the parameters %d: was it loaded from another "
                           "model, or a parameter replaced?" % (name, t.numel(), n))
    check_readable(t, "LBFGS: state %s" % name)
    return t.reshape(-1).contiguous()


class LBFGS(torch.optim.Optimizer):
    """L-BFGS, as torch.optim.LBFGS 1.13 (after minFunc), its vector operations
    run by liboptim.

    Args:
        params (iterable): parameters to optimize (one group only, as torch).
        lr (float): step length of an iteration without line search, and the
            line search's first trial (default: 1).
        max_iter (int): iterations per step() (default: 20).
        max_eval (int): closure evaluations per step() (default: max_iter * 5 // 4).
        tolerance_grad (float): stop when max |g| <= this (default: 1e-7).
        tolerance_change (float): stop when the loss or the step changes less
            than this (default: 1e-9).
        history_size (int): pairs (s, y) kept (default: 100).
        line_search_fn (str): None or "strong_wolfe" (default: None).

    step(closure) needs the closure (it re-evaluates the loss and its
    gradients). state[first parameter] holds torch's keys: 'func_evals',
    'n_iter', 'd', 't', 'old_dirs', 'old_stps', 'ro', 'H_diag',
    'prev_flat_grad', 'prev_loss', 'al', as torch does, so state_dict() loads
    into torch.optim.LBFGS and torch's into this class.

    Parameters must be dense CPU float32 or float64 tensors of one dtype
    (TypeError naming the parameter otherwise; torch.optim.LBFGS also steps
    half types). Complex parameters raise RuntimeError where torch 1.13 does (at
    the first iteration, after the first evaluation and its convergence test:
    torch compares the complex directional derivative with a real tolerance).
    Dot products and sums of |g| are computed in double in a fixed order and
    rounded to the dtype, which may differ from torch's float32 sums in the
    last bits (docs/rules/lbfgs.md): results agree with torch to float32
    precision, not bit for bit.
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        _check_line_search(line_search_fn)  # torch raises the same error, at the first iteration
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                        tolerance_change=tolerance_change, history_size=history_size, line_search_fn=line_search_fn)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    # ---- the parameters as one vector -----------------------------------------------------

    def _params(self):
        return self.param_groups[0]["params"]

    def _check(self, params):
        """The dtype of every parameter (None if one is complex), or an error naming the first that liboptim
        cannot step."""
        dtype = None
        for i, p in enumerate(params):
            what = "LBFGS: parameter %d (%s)" % (i, describe(p))
            if p.is_complex():
                return None  # torch fails at its first iteration: step() does the same (_complex_step)
            if p.layout is not STRIDED or not p.is_cpu:
                raise TypeError("%s: optim.torch.LBFGS steps dense CPU tensors (torch.optim.LBFGS handles others)"
                                % what)
            if p.dtype not in _DTYPES:
                raise TypeError("%s: optim.torch.LBFGS steps float32 and float64 parameters "
                                "(torch.optim.LBFGS handles %s)" % (what, p.dtype))
            if dtype is not None and p.dtype != dtype:
                raise TypeError("%s: every parameter of LBFGS must have one dtype, and parameter 0 is %s"
                                % (what, dtype))
            dtype = p.dtype
            problem = storage_problem(p)
            if problem:
                raise ValueError("%s %s" % (what, problem))
        if dtype is None and not params:
            raise ValueError("LBFGS: no parameters")
        return dtype

    def _same(self, params, flat):
        """Every parameter still of the step's dtype and size, in memory C may write (the closure runs between
        the step's C calls and may replace a parameter's .data)."""
        for i, p in enumerate(params):
            what = "LBFGS: parameter %d (%s)" % (i, describe(p))
            if p.layout is not STRIDED or not p.is_cpu or p.dtype != flat.dtype:
                raise TypeError("%s changed during the step: it was a dense CPU %s tensor" % (what, flat.dtype))
            if p.numel() != flat.sizes[i]:
                raise RuntimeError("%s holds %d elements, %d when the step began: was its .data replaced?"
                                   % (what, p.numel(), flat.sizes[i]))
            problem = storage_problem(p)
            if problem:
                raise ValueError("%s %s" % (what, problem))

    def _flat_grad(self, params, flat=None):
        """The gradients as one vector; with flat, the parameters and each gradient checked to be of the step's
        dtype and sizes."""
        if flat is not None:
            self._same(params, flat)
        views = []
        for i, p in enumerate(params):
            g = p.grad
            if g is None:
                views.append(p.new_zeros(p.numel()))
                continue
            if flat is not None and (g.dtype != p.dtype or g.numel() != p.numel()):
                err = TypeError if g.dtype != p.dtype else RuntimeError
                raise err("LBFGS: parameter %d (%s) has a gradient of %d elements of %s: every gradient must be of "
                          "its parameter's dtype and size" % (i, describe(p), g.numel(), g.dtype))
            if g.is_sparse:
                views.append(g.to_dense().reshape(-1))
            else:
                views.append(g.reshape(-1))
        return torch.cat(views, 0)

    def _move(self, params, flat, t, d):
        """p += t * d[its elements] for every parameter, in one call: one rounding
        per element (torch's p.add_(d, alpha=t)). Non-contiguous parameters go
        through a contiguous copy written back."""
        self._same(params, flat)
        flat._one(d)
        ptrs, xs, sizes, pins, back = [], [], [], [], []
        offset = 0
        for p in params:
            n = p.numel()
            if n:
                target = p if p.is_contiguous() else p.contiguous()
                if target is not p:
                    back.append((p, target))
                addr, st = _addr(target)
                pins.append(st)
                ptrs.append(addr)
                xs.append(d.data_ptr() + offset * d.element_size())
                sizes.append(n)
            offset += n
        if offset != d.numel():
            raise RuntimeError("LBFGS: the parameters hold %d elements but the direction %d: were parameters "
                               "added to or removed from the group during the step?" % (offset, d.numel()))
        _vec.axpy(flat.code, float(t), xs, ptrs, sizes)
        for p, c in back:
            p.copy_(c)
        del pins

    def _complex_step(self, params, closure, tol_grad):
        """torch 1.13 with a complex parameter: the first evaluation, its convergence test (max |g| of the
        complex gradient), then a RuntimeError where torch compares the complex g.d with a real tolerance."""
        state = self.state[params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        first_loss = closure()
        state["func_evals"] += 1
        if self._flat_grad(params).abs().max() <= tol_grad:
            return first_loss
        state["n_iter"] += 1
        raise RuntimeError("LBFGS: complex parameters cannot be stepped: torch.optim.LBFGS 1.13 fails here too "
                           "(\"gt_cpu\" not implemented for 'ComplexFloat': its step compares the complex directional "
                           "derivative g.d with a real tolerance); optimize torch.view_as_real of the parameter "
                           "instead")

    # ---- step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure):
        """One step: up to max_iter iterations and max_eval closure evaluations.

        Args:
            closure (Callable): reevaluates the model (zeroing and recomputing
                the gradients) and returns the loss; called with gradients enabled.

        Returns the loss of the first evaluation, as torch.
        """
        if closure is None:
            raise RuntimeError("LBFGS.step needs a closure that reevaluates the model and returns the loss")
        if len(self.param_groups) != 1:
            # torch asserts this at every step too (add_param_group is inherited)
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups): %d groups"
                             % len(self.param_groups))
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        params = self._params()
        dtype = self._check(params)
        if dtype is None:
            return self._complex_step(params, closure, group["tolerance_grad"])
        flat = _Flat(dtype, [p.numel() for p in params])
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        line_search, history = group["line_search_fn"], group["history_size"]
        _check_line_search(line_search)  # the group may have been loaded or edited since

        # The state lives under the first parameter, as torch keeps it.
        state = self.state[params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        first_loss = closure()
        loss = float(first_loss)
        evals = 1
        state["func_evals"] += 1
        g = self._flat_grad(params, flat)
        # 0-dim tensors compared with Python numbers: the number is rounded to the dtype, as in torch
        converged = flat.max_abs(g) <= tol_grad
        if converged:
            return first_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag, prev_g, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
        if state["n_iter"] > 0:  # the history goes on: its vectors (perhaps loaded or edited) must fit
            d = _state_vector(d, "d", dtype, flat.n)
            prev_g = _state_vector(prev_g, "prev_flat_grad", dtype, flat.n)
            for key, vs in (("old_dirs", old_dirs), ("old_stps", old_stps)):
                vs[:] = [_state_vector(v, "%s[%d]" % (key, j), dtype, flat.n) for j, v in enumerate(vs)]

        it = 0
        while it < max_iter:
            it += 1
            state["n_iter"] += 1

            # -- the direction
            if state["n_iter"] == 1:
                d = flat.mul(g, -1.0)
                old_dirs, old_stps, ro, h_diag = [], [], [], 1
            else:
                y = flat.sub(g, prev_g)
                s = flat.mul(d, t)
                ys = flat.dot(y, s)
                if ys > 1e-10:  # curvature condition: keep the pair
                    if len(old_dirs) == history:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1. / ys)
                    h_diag = ys / flat.dot(y, y)
                if "al" not in state:
                    state["al"] = [None] * history
                al = state["al"]
                d, fresh = flat.direction(g, old_dirs, old_stps, ro, h_diag)
                al[:len(fresh)] = fresh

            if prev_g is None:
                prev_g = g.clone()
            else:
                prev_g.copy_(g)
            prev_loss = loss

            # -- the step length
            if state["n_iter"] == 1:
                t = min(1., 1. / flat.sum_abs(g)) * lr
            else:
                t = lr
            gtd = flat.dot(g, d)
            if gtd > -tol_change:  # not a descent direction (to the tolerance)
                break

            ls_evals = 0
            if line_search is not None:
                x0 = [p.clone(memory_format=torch.contiguous_format) for p in params]

                def evaluate(step, x0=x0, d=d):
                    self._move(params, flat, step, d)
                    value = float(closure())
                    grad = self._flat_grad(params, flat)
                    for p, x in zip(params, x0):
                        p.copy_(x)
                    return value, grad

                loss, g, t, ls_evals = _wolfe_search(evaluate, flat, t, d, loss, g, gtd)
                self._move(params, flat, t, d)
                converged = flat.max_abs(g) <= tol_grad
            else:
                self._move(params, flat, t, d)
                if it != max_iter:
                    # torch does not evaluate after the last iteration
                    with torch.enable_grad():
                        loss = float(closure())
                    g = self._flat_grad(params, flat)
                    converged = flat.max_abs(g) <= tol_grad
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals

            # -- stop?
            if it == max_iter or evals >= max_eval or converged:
                break
            # max |t d| (rounding is monotone: max |R(t d_i)| = R(|t| max |d_i|))
            if (flat.max_abs(d) * t).abs() <= tol_change:
                break
            if abs(loss - prev_loss) < tol_change:
                break

        state["d"], state["t"] = d, t
        state["old_dirs"], state["old_stps"], state["ro"] = old_dirs, old_stps, ro
        state["H_diag"], state["prev_flat_grad"], state["prev_loss"] = h_diag, prev_g, prev_loss
        return first_loss
