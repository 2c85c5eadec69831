"""Gradient clipping: optim.torch.clip_grad_norm_ / clip_grad_value_ against
torch.nn.utils's and against float64 arithmetic, and the clipping fused into
every optimizer's step against clip_grad_norm_ followed by step().

What "the same" means here: liboptim sums the norm in double precision (in a
fixed order) and returns it rounded to float32, so it must equal numpy's
float64 norm to float32 rounding (6e-8), and the clipped gradients must be the
float32 products g * c with torch's factor c = (1 / (n + 1e-6)) * max_norm
computed in float32 from the float32 norm n. torch sums in float32: over 65537
elements its 1-norm and 3-norm are off by up to about 1e-5 (relative) from
float64, so against torch the norm and the gradients are compared to
TORCH_TOL = 3e-5; where torch's float32 norm is exact (the inf-norm), the
gradients are compared bit for bit. Where torch's float32 norm overflows
(|g|^p summing past float32's range) both give inf."""
import math

import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_harness import Scales, assert_close

# Odd sizes: a 0-dim tensor, tails for every vector width, a 2-D tensor, one
# large enough to be split into several blocks, and an empty one.
SHAPES = [(), (7,), (10, 100), (65537,), (0,), (3, 5)]
NORM_TYPES = [1.0, 2.0, 3.0, math.inf, 1.5, 0.5]
TORCH_TOL = 3e-5


def _params(rng, shapes=SHAPES, without_grad=(4 + 1,)):
    """Leaf tensors with N(0, s^2) gradients (a different s per tensor); the
    indices in without_grad have no .grad."""
    ps = []
    for i, shape in enumerate(shapes):
        p = torch.tensor(rng.standard_normal(shape), dtype=torch.float32, requires_grad=True)
        if i not in without_grad:
            p.grad = torch.tensor(rng.standard_normal(shape) * (0.1 + i), dtype=torch.float32)
        ps.append(p)
    return ps


def _clone(ps):
    out = []
    for p in ps:
        q = p.detach().clone().requires_grad_()
        if p.grad is not None:
            q.grad = p.grad.clone()
        out.append(q)
    return out


def _norm64(ps, norm_type):
    g = np.concatenate([p.grad.double().numpy().ravel() for p in ps if p.grad is not None])
    if math.isinf(norm_type):
        return float(np.max(np.abs(g))) if g.size else 0.0
    return float(np.sum(np.abs(g) ** norm_type) ** (1.0 / norm_type))


def _torch_coef(norm, max_norm):
    """torch's clamped clip factor for a float32 total norm: max_norm / (norm + 1e-6)
    on a float32 tensor is reciprocal() then * max_norm, each in float32."""
    n = np.float32(norm)
    with np.errstate(over="ignore", invalid="ignore"):
        c = (np.float32(1) / (n + np.float32(1e-6))) * np.float32(max_norm)
    return c if not c > 1 else np.float32(1)


def _grads(ps):
    return [None if p.grad is None else p.grad.clone() for p in ps]


def _same(a, b):
    """The same values, NaN where the other has NaN (and +-inf where it has
    +-inf): element by element, not through nan_to_num (which confuses NaN
    with 0 and inf with the largest float)."""
    if a is None or b is None:
        return a is None and b is None
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(a[~nan], b[~nan])


@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=["p=%s" % p for p in NORM_TYPES])
@pytest.mark.parametrize("ratio", [0.3, 3.0], ids=["clipped", "unclipped"])
def test_clip_grad_norm_matches_torch_and_float64(rng, seed, norm_type, ratio):
    po = _params(rng)
    pt = _clone(po)
    pt[4].grad = None  # torch 1.13's inf-norm fails on an empty gradient; it adds nothing to any norm
    before = _grads(po)
    want64 = _norm64(po, norm_type)
    max_norm = ratio * want64
    got = ot.clip_grad_norm_(po, max_norm, norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(pt, max_norm, norm_type)
    assert torch.is_tensor(got) and got.dtype == torch.float32 and got.shape == ()
    what = "seed %d, norm_type %s" % (seed, norm_type)
    assert abs(float(got) - want64) <= 6e-8 * want64, "%s: %r vs float64 %r" % (what, float(got), want64)
    assert abs(float(got) - float(theirs)) <= TORCH_TOL * want64, "%s: %r vs torch %r" % (
        what, float(got), float(theirs))
    coef = _torch_coef(want64, max_norm)
    for i, (a, b, g0) in enumerate(zip(po, pt, before)):
        if g0 is None:
            assert a.grad is None and b.grad is None
            continue
        if coef >= 1:
            assert torch.equal(a.grad, g0), "%s: tensor %d changed although the norm is below max_norm" % (what, i)
        else:
            # float32 * float32, rounded once; liboptim's norm and numpy's may
            # differ in their last double bits, which can move coef by one ulp
            # in the rarest case: allow one ulp per element.
            exact = (g0.numpy() * coef).astype(np.float32)
            assert np.all(np.abs(a.grad.numpy() - exact) <= np.spacing(np.abs(exact))), \
                "%s: tensor %d is not g * torch's float32 factor" % (what, i)
        if b.grad is not None:
            assert_close(a.grad, b.grad, "%s, tensor %d against torch" % (what, i), tol=TORCH_TOL)


def test_clip_grad_value_matches_torch(rng, seed):
    po = _params(rng)
    po[3].grad[100] = float("nan")
    po[3].grad[101] = float("inf")
    pt = _clone(po)
    for value in (0.5, 2, 0.0):
        assert ot.clip_grad_value_(po, value) is None
        torch.nn.utils.clip_grad_value_(pt, value)
        for i, (a, b) in enumerate(zip(po, pt)):
            if b.grad is None:
                assert a.grad is None
            else:
                assert torch.equal(torch.isnan(a.grad), torch.isnan(b.grad))
                assert _same(a.grad, b.grad), \
                    "seed %d, clip_value %s, tensor %d" % (seed, value, i)
    g = [p.grad.clone() for p in po if p.grad is not None]
    ot.clip_grad_value_(po, math.inf)  # changes nothing, as torch's clamp to +-inf
    assert all(_same(a, p.grad)
               for a, p in zip(g, [p for p in po if p.grad is not None]))


def test_parameters_as_torch_takes_them(rng):
    """A single tensor, a generator, a list without any gradient, an empty list."""
    p = torch.tensor(rng.standard_normal(10), dtype=torch.float32, requires_grad=True)
    p.grad = torch.full((10,), 2.0)
    assert float(ot.clip_grad_norm_(p, 1.0)) == pytest.approx(math.sqrt(40.0), rel=1e-7)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    ot.clip_grad_value_((q for q in [p]), 0.1)
    assert torch.equal(p.grad, torch.full((10,), 0.1))
    no_grad = [torch.zeros(3, requires_grad=True)]
    for params in (no_grad, [], (q for q in no_grad)):
        got = ot.clip_grad_norm_(params, 1.0)
        assert torch.equal(got, torch.nn.utils.clip_grad_norm_([], 1.0))
    assert float(ot.clip_grad_norm_(p, 1.0, "inf")) == pytest.approx(float(p.grad.abs().max()), rel=1e-7)


def test_nonfinite_gradients_as_torch(rng):
    """A NaN or Inf: with error_if_nonfinite the same RuntimeError as torch's
    and the gradients untouched; without, the same NaN/Inf arithmetic."""
    for bad in (float("nan"), float("inf"), -float("inf")):
        for norm_type in (2.0, math.inf, 1.0):
            po = _params(rng)
            po[2].grad[3, 7] = bad
            pt = _clone(po)
            pt[4].grad = None  # torch 1.13's inf-norm fails on an empty gradient
            before = _grads(po)
            with pytest.raises(RuntimeError) as ours:
                ot.clip_grad_norm_(po, 1.0, norm_type, error_if_nonfinite=True)
            with pytest.raises(RuntimeError) as theirs:
                torch.nn.utils.clip_grad_norm_(pt, 1.0, norm_type, error_if_nonfinite=True)
            assert str(ours.value) == str(theirs.value)
            for a, g0 in zip(po, before):
                assert _same(a.grad, g0)
            got = ot.clip_grad_norm_(po, 1.0, norm_type)
            want = torch.nn.utils.clip_grad_norm_(pt, 1.0, norm_type)
            assert torch.equal(torch.isnan(got), torch.isnan(want)) and (torch.isnan(want) or got == want)
            for a, b in zip(po, pt):
                if b.grad is not None:
                    assert torch.equal(torch.isnan(a.grad), torch.isnan(b.grad)), (bad, norm_type)
                    assert _same(a.grad, b.grad), (bad, norm_type)
    # max_norm = inf measures only, and still checks.
    po = _params(rng)
    before = _grads(po)
    assert float(ot.clip_grad_norm_(po, math.inf)) == pytest.approx(_norm64(po, 2.0), rel=1e-7)
    assert all(_same(p.grad, g0) for p, g0 in zip(po, before))
    po[0].grad.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="non-finite"):
        ot.clip_grad_norm_(po, math.inf, error_if_nonfinite=True)


def test_factor_bit_for_bit_with_torch(rng):
    """The inf-norm is exact in float32 on both sides, so the clipped gradients
    must be torch's to the bit: the factor is formed as torch forms it."""
    for _ in range(300):
        po = _params(rng, [(7,), (33,)], without_grad=())
        for p in po:
            p.grad.mul_(float(np.exp(rng.normal() * 4)))
        pt = _clone(po)
        max_norm = float(np.exp(rng.normal() * 4))
        got = ot.clip_grad_norm_(po, max_norm, math.inf)
        want = torch.nn.utils.clip_grad_norm_(pt, max_norm, math.inf)
        assert torch.equal(got, want)
        for a, b in zip(po, pt):
            assert torch.equal(a.grad, b.grad), (max_norm, float(want))


@pytest.mark.parametrize("grads,norm_type", [
    ([3e38, 3e38], 2.0), ([3e38, 3e38], 1.0), ([3e38, 3e38], 3.0), ([3e38, 3e38], 0.5), ([2e19], 2.0),
    ([1e13, 1.0], 3.0), ([2e19, 2e19, 1.0], 1.0), ([1e19, 1e19], 2.0), ([3e38, 3e38], math.inf)],
    ids=lambda v: repr(v))
def test_float32_overflow_as_torch(grads, norm_type):
    """torch's float32 norm overflows when sum |g|^p leaves float32's range,
    where the exact norm is finite: the same inf, the same RuntimeError with
    error_if_nonfinite (gradients untouched), and without it the same
    gradients (max_norm / inf = 0 zeroes them); where it does not overflow,
    the same clipping."""
    def make():
        p = torch.zeros(len(grads), requires_grad=True)
        p.grad = torch.tensor(grads, dtype=torch.float32)
        return p
    a, b = make(), make()
    theirs = None
    try:
        torch.nn.utils.clip_grad_norm_([b], 1.0, norm_type, error_if_nonfinite=True)
    except RuntimeError as e:
        theirs = str(e)
    if theirs is not None:
        with pytest.raises(RuntimeError) as ours:
            ot.clip_grad_norm_([a], 1.0, norm_type, error_if_nonfinite=True)
        assert str(ours.value) == theirs
        assert torch.equal(a.grad, make().grad) and torch.equal(b.grad, make().grad)
    a, b = make(), make()
    got = ot.clip_grad_norm_([a], 1.0, norm_type)
    want = torch.nn.utils.clip_grad_norm_([b], 1.0, norm_type)
    assert math.isinf(float(got)) == math.isinf(float(want)) == (theirs is not None)
    if theirs is not None:
        assert float(got) == float(want) == math.inf
        assert torch.equal(a.grad, b.grad) and torch.equal(a.grad, torch.zeros(len(grads)))
    else:
        assert float(got) == pytest.approx(float(want), rel=1e-6)
        assert_close(a.grad, b.grad, "%r, p = %s" % (grads, norm_type), tol=1e-6)


def test_max_norm_inf_as_torch():
    """max_norm = inf: torch's factor min(1, inf / (n + 1e-6)) leaves finite
    norms alone and is NaN (0 * inf) for an infinite one."""
    for grads in ([1.5, -2.0], [3e38, 3e38], [float("inf"), 1.0], [float("nan"), 1.0]):
        pa, pb = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
        pa.grad, pb.grad = torch.tensor(grads), torch.tensor(grads)
        got = ot.clip_grad_norm_([pa], math.inf)
        want = torch.nn.utils.clip_grad_norm_([pb], math.inf)
        assert torch.equal(torch.isnan(got), torch.isnan(want)) and (torch.isnan(want) or got == want)
        assert torch.equal(torch.isnan(pa.grad), torch.isnan(pb.grad)), grads
        assert _same(pa.grad, pb.grad), grads


def test_errors_name_the_parameter():
    def with_grad(g, shape=None):
        p = torch.zeros(g.shape if shape is None else shape, dtype=g.dtype, requires_grad=True)
        p.grad = g
        return p

    ok = with_grad(torch.ones(3))
    cases = [
        ([ok, with_grad(torch.ones(3, dtype=torch.float64))], TypeError,
         r"clip_grad_norm_: the gradient of parameter 1 \(shape \(3,\), dtype torch.float64.*is not float32"),
        ([ok, ok, with_grad(torch.ones(1, 6).expand(4, 6))], ValueError, "parameter 2 .*overlaps itself"),
        ([with_grad(torch.ones(3).to_sparse())], TypeError, "parameter 0 .*is sparse"),
        ([ok, [1.0]], TypeError, "item 1 is a list"),
        ([ok, torch.zeros(2), ok], ValueError, "parameters 0 and 2 share memory"),
    ]
    for params, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            ot.clip_grad_norm_(params, 1.0)
        with pytest.raises(exc, match=msg.replace("clip_grad_norm_", "clip_grad_value_")):
            ot.clip_grad_value_(params, 1.0)
    for kw, msg in [(dict(norm_type=0), r"norm_type = 0.0 is not supported: optim computes p-norms with p > 0 or "
                                        r"inf \(torch.nn.utils.clip_grad_norm_ also takes 0, a count of non-zero"),
                    (dict(norm_type=-1.0), "norm_type = -1.0 is not supported"),
                    (dict(norm_type=math.nan), "norm_type = nan is not supported"),
                    (dict(norm_type=-math.inf), "norm_type = -inf is not supported"),
                    (dict(max_norm=-1.0), r"max_norm = -1.0 must be a number >= 0"),
                    (dict(max_norm=math.nan), "max_norm = nan must be"),
                    (dict(max_norm="one"), "max_norm = 'one' is not a number")]:
        kw.setdefault("max_norm", 1.0)
        with pytest.raises((ValueError, TypeError), match=msg):
            ot.clip_grad_norm_([ok], **kw)
    for value in (-0.5, math.nan):
        with pytest.raises(ValueError, match="clip_value = %r must be a number >= 0" % value):
            ot.clip_grad_value_([ok], value)
    assert torch.equal(ok.grad, torch.ones(3))


# ---- clipping fused into the step ---------------------------------------------------------------

CLASSES = [(ot.SGD, dict(lr=0.1, momentum=0.9)), (ot.Adagrad, dict(lr=0.1)), (ot.RMSprop, dict(lr=0.01)),
           (ot.Adadelta, dict()), (ot.Adam, dict(lr=0.01, amsgrad=True)), (ot.AdamW, dict(lr=0.01)),
           (ot.RAdam, dict(lr=0.01)), (ot.NAdam, dict(lr=0.01)), (ot.AdaBound, dict(lr=0.01))]
FUSED_SHAPES = [(), (7,), (10, 100), (65537,)]


def _bytes(opt, ps):
    out = [p.detach().numpy().tobytes() for p in ps]
    for p in ps:
        for k, v in sorted(opt.state[p].items()):
            out.append((k, v.numpy().tobytes() if torch.is_tensor(v) else v))
    return out


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 0.5], ids=["p=2", "p=1", "p=inf", "p=0.5"])
@pytest.mark.parametrize("cls,kw", CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_fused_clipping_equals_clip_then_step(rng, seed, cls, kw, norm_type):
    """clip_grad_norm=(max_norm, norm_type) gives the bits of
    optim.torch.clip_grad_norm_ then step(), leaves the gradients as they
    were, and reports the norm. max_norm is chosen so that some steps clip
    and some do not."""
    po = _params(rng, FUSED_SHAPES, without_grad=())
    pf = _clone(po)
    plain = cls(po, **kw)
    fused = cls(pf, clip_grad_norm=(1.0, norm_type), **kw)
    assert fused.clip_grad_norm == (1.0, norm_type) and plain.clip_grad_norm is None
    for t in range(12):
        gs = [torch.tensor(rng.standard_normal(a.shape), dtype=torch.float32) for a in po]
        for a, b, g in zip(po, pf, gs):
            a.grad, b.grad = g.clone(), g.clone()
        scale = 0.5 * 1.5 ** t / _norm64(po, norm_type)  # total norms from 0.5 to 43: clipped from step 2 on
        for a, b, g in zip(po, pf, gs):
            a.grad, b.grad = g * scale, g * scale
        raw = [b.grad.clone() for b in pf]
        norm = ot.clip_grad_norm_(po, 1.0, norm_type)
        plain.step()
        fused.step()
        assert all(torch.equal(b.grad, g) for b, g in zip(pf, raw)), "the fused step wrote a gradient"
        assert np.float32(fused.last_grad_norm) == float(norm), (fused.last_grad_norm, float(norm))
        assert _bytes(plain, po) == _bytes(fused, pf), "%s seed %d: step %d differs" % (cls.__name__, seed, t)


@pytest.mark.parametrize("ours_cls,theirs_cls,kw,fused,clip,steps", [
    (ot.Adam, torch.optim.Adam, dict(lr=0.01), dict(clip_grad_norm=0.5),
     lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.5), 30),
    (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.9), dict(clip_grad_value=0.3),
     lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.3), 200),
], ids=["norm, Adam", "value, RMSprop"])
def test_fused_clipping_against_torch(rng, seed, ours_cls, theirs_cls, kw, fused, clip, steps):
    """Fused clipping against torch.nn.utils' clipping + torch.optim's step
    (float32 on both sides: relative 1e-5, the other suites' tolerance, with
    each tensor's largest magnitude over the run as the scale near zero, as
    torch_harness.Scales does: a 0-dim parameter's own value is no scale)."""
    po = _params(rng, FUSED_SHAPES, without_grad=())
    pt = _clone(po)
    ours = ours_cls(po, **kw, **fused)
    theirs = theirs_cls(pt, **kw)
    scales = Scales()
    for t in range(steps):
        for a, b in zip(po, pt):
            g = torch.tensor(rng.standard_normal(a.shape), dtype=torch.float32)
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        clip(pt)
        theirs.step()
        for i, b in enumerate(pt):
            scales.update(i, b)
    for i, (a, b) in enumerate(zip(po, pt)):
        assert_close(a, b, "seed %d, tensor %d" % (seed, i), floor=scales.floor(i))


def test_set_clip_grad_norm_and_the_group_keys(rng):
    ps = _params(rng, [(5,), (3,)], without_grad=())
    opt = ot.SGD(ps, lr=0.1)
    assert opt.clip_grad_norm is None and all(g["clip_grad_norm"] is None for g in opt.param_groups)
    assert math.isnan(opt.last_grad_norm)  # nothing measured
    opt.set_clip_grad_norm(0.25, "inf")
    assert opt.clip_grad_norm == (0.25, math.inf) and opt.param_groups[0]["clip_grad_norm"] == (0.25, math.inf)
    g0 = [p.grad.clone() for p in ps]
    w0 = [p.detach().clone() for p in ps]
    opt.step()
    top = max(float(g.abs().max()) for g in g0)
    assert opt.last_grad_norm == pytest.approx(top, rel=1e-7)
    coef = np.float32(0.25 / (top + 1e-6))
    for p, w, g in zip(ps, w0, g0):
        assert torch.allclose(p, w - 0.1 * g * float(coef), rtol=1e-6, atol=1e-7)
    opt.set_clip_grad_norm(None)
    assert opt.clip_grad_norm is None
    opt.param_groups[0]["clip_grad_norm"] = 2.0  # a number: norm type 2
    with pytest.raises(ValueError, match=r"param group 1 has clip_grad_norm = None but group 0 has \(2.0, 2.0\)"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})
    opt.param_groups[0]["clip_grad_norm"] = None
    # Saved with the state, restored by load_state_dict; a torch.optim state keeps the current setting.
    opt.set_clip_grad_norm(3.0, 1)
    other = ot.SGD(_clone(ps), lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.clip_grad_norm == (3.0, 1.0)
    other.load_state_dict(torch.optim.SGD(_clone(ps), lr=0.2).state_dict())
    assert other.clip_grad_norm == (3.0, 1.0) and other.param_groups[0]["lr"] == 0.2
    for value, msg in [(0.0, "max_norm = 0.0 must be a finite number > 0 \\(None turns clipping off\\)"),
                       (-1.0, "max_norm = -1.0"), (math.inf, "max_norm = inf"),
                       ((1.0, 0.0), "norm_type = 0.0 must be > 0 or inf"), ((1.0, 2.0, 3.0), "must be None"),
                       (True, "must be None"), ("big", "must be None, max_norm or \\(max_norm, norm_type\\)")]:
        with pytest.raises(ValueError, match=msg):
            ot.Adam(_clone(ps), clip_grad_norm=value)
    opt.param_groups[0]["clip_grad_norm"] = (1.0, 0.0)
    w = [p.detach().clone() for p in ps]
    with pytest.raises(ValueError, match="SGD: param group 0: clip_grad_norm: norm_type = 0.0"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(w, ps))


def test_groups_must_agree_on_clipping(rng):
    a, b = _params(rng, [(5,), (3,)], without_grad=())
    with pytest.raises(ValueError, match=r"param group 1 has clip_grad_norm = \(1.0, 2.0\) but group 0 has None"):
        ot.Adam([{"params": [a]}, {"params": [b], "clip_grad_norm": 1.0}])
    opt = ot.Adam([{"params": [a]}, {"params": [b]}], clip_grad_norm=(1.0, 1.0))
    opt.param_groups[1]["clip_grad_norm"] = (2.0, 1.0)
    with pytest.raises(ValueError, match="group 1 has clip_grad_norm = \\(2.0, 1.0\\) but group 0 has \\(1.0, 1.0\\)"):
        opt.step()


# ---- value clipping fused into the step -------------------------------------------------------


@pytest.mark.parametrize("cls,kw", CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_fused_value_clipping_equals_clip_then_step(rng, seed, cls, kw):
    """clip_grad_value=v gives the bits of clip_grad_value_ then step(),
    with NaN and +-inf elements among the gradients, and leaves the gradients
    as they were."""
    po = _params(rng, FUSED_SHAPES, without_grad=())
    pf = _clone(po)
    plain = cls(po, **kw)
    fused = cls(pf, clip_grad_value=0.6, **kw)
    assert fused.clip_grad_value == 0.6 and plain.clip_grad_value is None
    assert all(g["clip_grad_value"] == 0.6 for g in fused.param_groups)
    for t in range(12):
        gs = [torch.tensor(1.5 * rng.standard_normal(a.shape), dtype=torch.float32) for a in po]
        if t == 9:
            gs[3][10], gs[3][11], gs[3][12] = math.nan, math.inf, -math.inf
        for a, b, g in zip(po, pf, gs):
            a.grad, b.grad = g.clone(), g.clone()
        raw = [b.grad.clone() for b in pf]
        ot.clip_grad_value_(po, 0.6)
        plain.step()
        fused.step()
        # Every byte, NaN included: the fused step writes no gradient.
        assert all(b.grad.numpy().tobytes() == g.numpy().tobytes() for b, g in zip(pf, raw))
        assert _bytes(plain, po) == _bytes(fused, pf), "%s seed %d: step %d differs" % (cls.__name__, seed, t)


def test_set_clip_grad_value_keys_and_errors(rng):
    ps = _params(rng, [(5,), (3,)], without_grad=())

    def groups(tensors):
        return [{"params": [tensors[0]]}, {"params": [tensors[1]]}]

    opt = ot.Adam(groups(ps), lr=0.1)
    opt.set_clip_grad_value(0.25)
    assert opt.clip_grad_value == 0.25 and opt.param_groups[1]["clip_grad_value"] == 0.25
    # Saved with the state, restored by load_state_dict and by a checkpoint; a torch.optim state keeps it.
    other = ot.Adam(groups(_clone(ps)), lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.clip_grad_value == 0.25
    other.load_state_dict(torch.optim.Adam(groups(_clone(ps)), lr=0.2).state_dict())
    assert other.clip_grad_value == 0.25
    # Not together with norm clipping, whichever is set second; nothing changes on refusal.
    with pytest.raises(ValueError, match=r"clip_grad_value = 0.25 is on: norm and value clipping cannot both be on"):
        opt.set_clip_grad_norm(1.0)
    assert opt.clip_grad_norm is None and opt.clip_grad_value == 0.25
    with pytest.raises(ValueError, match=r"clip_grad_norm = \(1.0, 2.0\) and clip_grad_value = 0.5 cannot both be on"):
        ot.SGD(_clone(ps), lr=0.1, clip_grad_norm=1.0, clip_grad_value=0.5)
    opt.set_clip_grad_value(None)
    opt.set_clip_grad_norm(1.0)
    with pytest.raises(ValueError, match=r"clip_grad_norm = \(1.0, 2.0\) is on"):
        opt.set_clip_grad_value(0.5)
    opt.set_clip_grad_norm(None)
    opt.param_groups[0]["clip_grad_value"] = 0.5
    with pytest.raises(ValueError, match=r"group 1 has clip_grad_value = None but group 0 has 0.5"):
        opt.step()
    for value, msg in [(0.0, "clip_grad_value = 0.0 must be None or a finite number > 0"), (-1.0, "= -1.0"),
                       (math.inf, "= inf"), (math.nan, "= nan"), (True, "= True"), ("big", "= 'big'")]:
        with pytest.raises(ValueError, match=msg):
            ot.Adam(_clone(ps), clip_grad_value=value)


def test_fused_value_clipping_in_a_checkpoint(rng, tmp_path):
    ps = _params(rng, [(5,), (3,)], without_grad=())
    opt = ot.SGD(ps, lr=0.1, clip_grad_value=0.125)
    opt.step()
    opt.save_checkpoint(str(tmp_path / "c.ckpt"))
    other = ot.SGD(_clone(ps), lr=0.1)
    other.load_checkpoint(str(tmp_path / "c.ckpt"))
    assert other.clip_grad_value == 0.125 and other.param_groups[0]["clip_grad_value"] == 0.125
