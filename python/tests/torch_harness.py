"""Running optim.torch side by side with torch.optim (float32) or with a
float64 reference (torch_ref64), on the same parameters and gradients, and
comparing every element of the parameters and of the state.

The tolerance is on torch_ref64.rel_err (max |x - y| / (|y| + mean|y|), with
the mean magnitude of small tensors taken over the steps so far: see there
why): 1e-5 for float32 against float32 torch.optim, and against the
float64 reference as well (optim's float32 error against exact arithmetic
is of the same order as torch's, around 1e-7 to 1e-6 after 200 steps).
"""
import numpy as np
import torch

from torch_ref64 import Ref64, rel_err

# Sizes 1 (a 0-dim tensor), 7, 1000 (2-D) and 65537: odd sizes that leave
# tails for every vector width and a tensor large enough to be split into
# several blocks across threads.
SHAPES = [(), (7,), (10, 100), (65537,)]
TOL = 1e-5
STEPS = 200
CHECK_AT = (1, 2, 3, 7, 50, STEPS)


def make_params(rng, shapes=SHAPES):
    return [np.asarray(rng.standard_normal(shape), dtype=np.float32).reshape(shape) for shape in shapes]


class Grads:
    """Random gradients: a fixed per-element offset (so that moments do not
    average to 0) plus fresh Gaussian noise each step, with a different scale
    per tensor."""

    SCALES = (1.0, 0.05, 1.0, 4.0)

    def __init__(self, rng, shapes=SHAPES):
        self.rng = rng
        self.shapes = shapes
        self.offsets = [np.asarray(rng.standard_normal(s) * 0.5) for s in shapes]

    def next(self):
        out = []
        for k, (shape, off) in enumerate(zip(self.shapes, self.offsets)):
            scale = self.SCALES[k % len(self.SCALES)]
            g = (off + self.rng.standard_normal(shape)) * scale
            out.append(np.asarray(g, dtype=np.float32).reshape(shape))
        return out


def leaves(arrays, dtype=torch.float32):
    return [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]


def set_grads(params, grads, dtype=torch.float32):
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.tensor(g, dtype=dtype)


def _np(x):
    if torch.is_tensor(x):
        return x.detach().double().numpy()
    return np.asarray(x, dtype=np.float64)


class Scales:
    """The largest mean magnitude each compared quantity (tensor i, key) has
    had so far: the scale of its terms, for rel_err's floor. Tensors of up to
    SMALL elements are sampled every step (their own mean is no scale: a
    0-dim moment crossing zero), larger ones when they are compared."""

    SMALL = 1000

    def __init__(self):
        self.s = {}

    def update(self, name, y):
        if y is None or (not torch.is_tensor(y) and not isinstance(y, np.ndarray)):
            return
        m = float(np.mean(np.abs(_np(y)))) if np.size(_np(y)) else 0.0
        if m > self.s.get(name, 0.0):
            self.s[name] = m

    def sample(self, i, param, state, every_step):
        if every_step and np.size(_np(param)) > self.SMALL:
            return
        self.update((i, "param"), param)
        for key, value in state.items():
            if key not in ("step", "mu_product"):
                self.update((i, key), value)

    def floor(self, name):
        return self.s.get(name, 0.0)


def assert_close(ours, theirs, what, tol=TOL, floor=0.0):
    err = rel_err(_np(ours), _np(theirs), floor)
    assert err <= tol, "%s: relative error %.3g > %.3g\n ours   %s\n theirs %s" % (
        what, err, tol, _np(ours).ravel()[:6], _np(theirs).ravel()[:6])


def assert_state_matches(st_o, st_t, what, tol=TOL, exact_keys=True, scales=None, index=None):
    """optim.torch's state of one parameter against torch.optim's (same keys,
    same kinds of values) or the reference's dict of arrays (exact_keys=False:
    compare the keys they share)."""
    keys_o = set(st_o.keys())
    keys_t = set(st_t.keys())
    if exact_keys:
        assert keys_o == keys_t, "%s: state keys %s, torch has %s" % (what, sorted(keys_o), sorted(keys_t))
    for key in sorted(keys_o & keys_t):
        a, b = st_o[key], st_t[key]
        w = "%s state[%r]" % (what, key)
        if key == "step":
            if exact_keys:
                assert type(a) is type(b), "%s: %r is a %s, torch's %r a %s" % (w, a, type(a), b, type(b))
                if torch.is_tensor(b):
                    assert a.dtype == b.dtype and a.shape == b.shape, "%s: %r vs torch's %r" % (w, a, b)
            assert float(a) == float(b), "%s: %r != %r" % (w, a, b)
        elif key == "mu_product":
            # torch keeps the product in float32 (it underflows to 0 after a
            # few hundred steps), optim in double.
            assert abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b))), "%s: %r vs %r" % (w, a, b)
        elif b is None or a is None:
            assert a is None and b is None, "%s: %r vs %r" % (w, a, b)
        else:
            if exact_keys:
                assert torch.is_tensor(a) and a.dtype == torch.float32 and a.shape == b.shape, \
                    "%s: %s vs torch's %s" % (w, a, b)
            assert_close(a, b, w, tol, scales.floor((index, key)) if scales else 0.0)


def _check(i, po, pt, st_o, st_t, what, tol, scales, exact_keys):
    scales.sample(i, pt, st_t, every_step=False)
    assert_close(po, pt, what + " param", tol, scales.floor((i, "param")))
    assert_state_matches(st_o, st_t, what, tol, exact_keys, scales, i)


def run_vs_torch(rng, seed, ours_cls, torch_cls, kwargs, torch_kwargs=None, steps=STEPS, check_at=CHECK_AT,
                 shapes=SHAPES, tol=TOL):
    """Step optim.torch and torch.optim with the same arguments for `steps`
    steps and compare parameters and state at the steps in check_at."""
    torch_kwargs = kwargs if torch_kwargs is None else torch_kwargs
    p0 = make_params(rng, shapes)
    po, pt = leaves(p0), leaves(p0)
    oo = ours_cls(po, **kwargs)
    ot = torch_cls(pt, **torch_kwargs)
    grads = Grads(rng, shapes)
    scales = Scales()
    for t in range(1, steps + 1):
        g = grads.next()
        set_grads(po, g)
        set_grads(pt, g)
        oo.step()
        ot.step()
        for i in range(len(pt)):
            scales.sample(i, pt[i], ot.state[pt[i]], every_step=True)
        if t in check_at:
            for i in range(len(po)):
                what = "%s(%s) seed %d, step %d, tensor %d %s" % (ours_cls.__name__, kwargs, seed, t, i, shapes[i])
                _check(i, po[i], pt[i], oo.state[po[i]], ot.state[pt[i]], what, tol, scales, True)
    return oo, ot, po, pt


def run_vs_ref(rng, seed, ours_cls, kwargs, ref_kwargs=None, steps=STEPS, check_at=CHECK_AT, shapes=SHAPES,
               tol=TOL, between=None):
    """Step optim.torch and the float64 reference (torch_ref64) and compare.
    between(t, opt, ref) may change hyperparameters before step t of both."""
    ref_kwargs = dict(kwargs if ref_kwargs is None else ref_kwargs)
    p0 = make_params(rng, shapes)
    po = leaves(p0)
    oo = ours_cls(po, **kwargs)
    ref = Ref64(ours_cls.__name__, p0, [dict(ref_kwargs, params=list(range(len(p0))))])
    grads = Grads(rng, shapes)
    scales = Scales()
    for t in range(1, steps + 1):
        if between is not None:
            between(t, oo, ref)
        g = grads.next()
        set_grads(po, g)
        oo.step()
        ref.step(g)
        for i in range(len(po)):
            scales.sample(i, ref.params[i], ref.state[i], every_step=True)
        if t in check_at:
            for i in range(len(po)):
                what = "%s(%s) vs float64, seed %d, step %d, tensor %d %s" % (
                    ours_cls.__name__, kwargs, seed, t, i, shapes[i])
                _check(i, po[i], ref.params[i], oo.state[po[i]], ref.state[i], what, tol, scales, False)
    return oo, ref, po
