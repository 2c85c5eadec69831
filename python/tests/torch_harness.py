"""Running optim.torch side by side with torch.optim (float32) or with a
float64 reference (torch_ref64), on the same parameters and gradients, and
comparing every element of the parameters and of the state.

The measure is torch_ref64.rel_err: max |x - y| / (|y| + scale), where scale
is the largest mean magnitude the same quantity (tensor, key) had during the
run, so that an element that lands near 0 is judged against the size of the
terms it was computed from (see rel_err). Snapshots are taken at the check
steps and compared at the end of the run, when the scales are known.

The tolerance is 1e-5 against float32 torch.optim, and against the float64
reference run with float32 recurrence constants (torch_ref64.Ref64 says
why): optim's float32 error is then around 1e-7 to 1e-6 after 200 steps.

Tests use weight decays that are powers of two (0.125, 2^-7): wd * p is then
exact in float32, so g + wd * p is rounded once however it is computed (torch's
CPU kernels and liboptim use one fused multiply-add; the float64 reference
keeps it exact). With other values an element where g and -wd * p nearly
cancel is ill-conditioned: a float32 result and the exact one differ by an ulp
of g, which the first step's d / (|d| + eps) can magnify a million times.
Bits against torch, with any weight decay, are test_torch_bits.py's.
"""
import numpy as np
import torch

from torch_ref64 import Ref64, rel_err

# Sizes 1 (a 0-dim tensor), 7, 1000 (2-D) and 32771: odd sizes that leave
# tails for every vector width and a tensor large enough to be split into
# several blocks across two threads (the kernels split from 2 x 16384
# elements: src/kernels/parallel.c).
SHAPES = [(), (7,), (10, 100), (32771,)]
TOL = 1e-5
STEPS = 200
CHECK_AT = (1, 2, 3, 7, 50, STEPS)
WD = 0.125      # weight decays of the tests: powers of two (see above)
WD_SMALL = 2.0 ** -7


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


def _copy(x):
    if torch.is_tensor(x):
        return x.detach().clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    return x


def assert_close(ours, theirs, what, tol=TOL, floor=0.0):
    err = rel_err(_np(ours), _np(theirs), floor)
    assert err <= tol, "%s: relative error %.3g > %.3g (scale %.3g)\n ours   %s\n theirs %s" % (
        what, err, tol, floor, _np(ours).ravel()[:6], _np(theirs).ravel()[:6])


class Scales:
    """The largest mean magnitude each compared quantity (tensor i, key) has
    had: the scale of its terms, for rel_err. Tensors of up to SMALL elements
    are sampled every step (their own mean is no scale: think of a 0-dim
    moment crossing zero), larger ones at the check steps."""

    SMALL = 1000

    def __init__(self):
        self.s = {}

    def update(self, name, y):
        if y is None:
            return
        y = _np(y)  # tensors, arrays, and numpy scalars (a 0-dim array's arithmetic gives those)
        y = y[np.isfinite(y)]  # an inf would make every difference look small, a NaN every mean NaN
        m = float(np.mean(np.abs(y))) if y.size else 0.0
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
            # torch keeps the product in a float32 tensor (it underflows to 0
            # after a few hundred steps), optim the same float32 values in a
            # double; the float64 reference keeps it exact.
            if exact_keys:
                assert float(a) == float(b), "%s: %r vs %r" % (w, a, b)
            else:
                assert abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b))), "%s: %r vs %r" % (w, a, b)
        elif b is None or a is None:
            assert a is None and b is None, "%s: %r vs %r" % (w, a, b)
        else:
            if exact_keys:
                assert torch.is_tensor(a) and a.dtype == torch.float32 and a.shape == b.shape, \
                    "%s: %s vs torch's %s" % (w, a, b)
            assert_close(a, b, w, tol, scales.floor((index, key)) if scales else 0.0)


class Checks:
    """Snapshots of both sides at the check steps, compared at the end of the
    run with the scales the run established."""

    def __init__(self, exact_keys, tol):
        self.exact_keys = exact_keys
        self.tol = tol
        self.scales = Scales()
        self.snaps = []

    def every_step(self, params, states):
        for i, (p, st) in enumerate(zip(params, states)):
            self.scales.sample(i, p, st, every_step=True)

    def record(self, what, ours, theirs, states_o, states_t, indices=None):
        """Snapshot tensors ours[j] / theirs[j] and their states; indices[j]
        names tensor j for the scales (default: j)."""
        indices = range(len(ours)) if indices is None else indices
        for j, i in enumerate(indices):
            self.scales.sample(i, theirs[j], states_t[j], every_step=False)
            self.snaps.append(("%s, tensor %d" % (what, i), i, _copy(ours[j]), _copy(theirs[j]),
                               {k: _copy(v) for k, v in states_o[j].items()},
                               {k: _copy(v) for k, v in states_t[j].items()}))

    def verify(self):
        for what, i, po, pt, so, st in self.snaps:
            assert_close(po, pt, what + " param", self.tol, self.scales.floor((i, "param")))
            assert_state_matches(so, st, what, self.tol, self.exact_keys, self.scales, i)


class Pair:
    """optim.torch and torch.optim over copies of the same parameters, stepped
    together; check() snapshots both, verify() compares every snapshot."""

    def __init__(self, oo, po, ot, pt, tol=TOL):
        self.oo, self.po, self.ot, self.pt = oo, po, ot, pt
        self.checks = Checks(True, tol)

    def step(self, grads):
        set_grads(self.po, grads)
        set_grads(self.pt, grads)
        self.oo.step()
        self.ot.step()
        self.sample()

    def sample(self):
        self.checks.every_step(self.pt, [self.ot.state[p] for p in self.pt])

    def check(self, what, indices=None):
        indices = list(range(len(self.po))) if indices is None else list(indices)
        po = [self.po[i] for i in indices]
        pt = [self.pt[i] for i in indices]
        self.checks.record(what, po, pt, [self.oo.state[p] for p in po], [self.ot.state[p] for p in pt], indices)

    def verify(self):
        self.checks.verify()


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
    checks = Checks(True, tol)
    for t in range(1, steps + 1):
        g = grads.next()
        set_grads(po, g)
        set_grads(pt, g)
        oo.step()
        ot.step()
        checks.every_step(pt, [ot.state[p] for p in pt])
        if t in check_at:
            what = "%s(%s) seed %d, step %d" % (ours_cls.__name__, kwargs, seed, t)
            checks.record(what, po, pt, [oo.state[p] for p in po], [ot.state[p] for p in pt])
    checks.verify()
    return oo, ot, po, pt


def run_vs_ref(rng, seed, ours_cls, kwargs, ref_kwargs=None, steps=STEPS, check_at=CHECK_AT, shapes=SHAPES,
               tol=TOL, between=None):
    """Step optim.torch and the float64 reference (float32 constants) and
    compare. between(t, opt, ref) may change hyperparameters before step t."""
    ref_kwargs = dict(kwargs if ref_kwargs is None else ref_kwargs)
    p0 = make_params(rng, shapes)
    po = leaves(p0)
    oo = ours_cls(po, **kwargs)
    ref = Ref64(ours_cls.__name__, p0, [dict(ref_kwargs, params=list(range(len(p0))))], float32_constants=True)
    grads = Grads(rng, shapes)
    checks = Checks(False, tol)
    for t in range(1, steps + 1):
        if between is not None:
            between(t, oo, ref)
        g = grads.next()
        set_grads(po, g)
        oo.step()
        ref.step(g)
        checks.every_step(ref.params, ref.state)
        if t in check_at:
            what = "%s(%s) vs float64, seed %d, step %d" % (ours_cls.__name__, kwargs, seed, t)
            checks.record(what, po, ref.params, [oo.state[p] for p in po], ref.state)
    checks.verify()
    return oo, ref, po
