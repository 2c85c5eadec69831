"""NaN and Inf gradients: the nonfinite= option of every optim.torch optimizer.

'skip' leaves every byte of the parameters and of the state (tensors, step
counters, NAdam's mu_product) as it was and counts the step; the next clean
step continues as if the bad one had never happened (the same bits as a run
that never saw it). 'error' does the same and raises NonFiniteGradientError
naming the parameter. 'propagate', the default, is torch.optim's IEEE
arithmetic (checked against torch.optim element by element)."""
import math

import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_harness import Checks, Grads, leaves, make_params, set_grads
from torch_ref64 import Ref64

SHAPES = [(), (7,), (10, 100), (65537,)]
CLASSES = [(ot.SGD, dict(lr=0.1, momentum=0.9)), (ot.Adagrad, dict(lr=0.1)),
           (ot.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)), (ot.Adadelta, dict()),
           (ot.Adam, dict(lr=0.01, amsgrad=True)), (ot.AdamW, dict(lr=0.01)), (ot.RAdam, dict(lr=0.01)),
           (ot.NAdam, dict(lr=0.01)), (ot.AdaBound, dict(lr=0.01)), (ot.Adamax, dict(lr=0.01)),
           (ot.ASGD, dict(t0=2)), (ot.Rprop, {})]
IDS = [c.__name__ for c, _ in CLASSES]


def _bytes(opt, ps):
    """Every byte a step can change: parameters, state tensors and numbers."""
    out = [p.detach().numpy().tobytes() for p in ps]
    for p in ps:
        for k, v in sorted(opt.state[p].items()):
            out.append((k, v.detach().numpy().tobytes() if torch.is_tensor(v) else v))
    return out


def _poison(grads, rng, value):
    """A copy of grads with one element of one random tensor set to value."""
    out = [g.copy() for g in grads]
    i = int(rng.integers(len(out)))
    flat = out[i].reshape(-1)
    j = int(rng.integers(flat.size))
    flat[j] = value
    return out, i, j


@pytest.mark.parametrize("clip", [None, (1.0, 2.0)], ids=["no-clip", "clip"])
@pytest.mark.parametrize("cls,kw", CLASSES, ids=IDS)
def test_skip_leaves_every_byte(rng, seed, cls, kw, clip):
    p0 = make_params(rng, SHAPES)
    pa, pb = leaves(p0), leaves(p0)
    a = cls(pa, nonfinite="skip", clip_grad_norm=clip, **kw)  # sees the bad steps
    b = cls(pb, clip_grad_norm=clip, **kw)                    # never does
    grads = Grads(rng, SHAPES)
    skipped = 0
    for t in range(8):
        g = grads.next()
        if t in (3, 4, 6):
            bad, i, j = _poison(g, rng, [math.nan, math.inf, -math.inf][t % 3])
            before = _bytes(a, pa)
            set_grads(pa, bad)
            a.step()
            skipped += 1
            assert a.last_step_skipped and a.skipped_steps == skipped
            assert _bytes(a, pa) == before, "%s seed %d: a skipped step (tensor %d, element %d) changed bytes" % (
                cls.__name__, seed, i, j)
        set_grads(pa, g)
        set_grads(pb, g)
        a.step()
        b.step()
        assert not a.last_step_skipped and a.skipped_steps == skipped
        assert math.isfinite(a.last_grad_norm)
    assert _bytes(a, pa) == _bytes(b, pb), "%s seed %d: the skipped steps left a trace" % (cls.__name__, seed)


def test_error_raises_naming_the_parameter(rng, seed):
    p0 = make_params(rng, SHAPES)
    ps = leaves(p0)
    groups = [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.001}]
    opt = ot.Adam(groups, lr=0.01, nonfinite="error")
    grads = Grads(rng, SHAPES)
    set_grads(ps, grads.next())
    opt.step()
    bad = grads.next()
    bad[3][40000] = math.nan
    bad[2][1, 2] = math.inf  # the first in the optimizer's order is the one named
    set_grads(ps, bad)
    before = _bytes(opt, ps)
    with pytest.raises(ot.NonFiniteGradientError,
                       match=r"Adam: step: the gradient of parameter 2 \(shape \(10, 100\), dtype torch.float32, "
                             r"device cpu, param group 1\) holds NaN or Inf; nothing was updated") as exc:
        opt.step()
    assert isinstance(exc.value, RuntimeError)
    assert exc.value.index == 2 and exc.value.group == 1 and exc.value.param is ps[2]
    assert _bytes(opt, ps) == before and opt.last_step_skipped and opt.skipped_steps == 1
    set_grads(ps, grads.next())
    opt.step()
    assert not opt.last_step_skipped and _bytes(opt, ps) != before


# ---- 'propagate' (the default) against torch.optim itself ------------------------------------

WD = 2.0 ** -7  # a power of two: g + wd * p rounds alike with and without fused multiply-add
# (class name, keyword arguments, extra torch keyword arguments): every rule, AMSGrad on and off,
# the momentum / centered / Nesterov / dampening variants, weight decay and maximize.
# AdaBound, which torch lacks, against the float64 reference (np.maximum and np.clip keep NaN,
# as the authors' torch.max and clamp_ do).
PROPAGATE = [
    ("SGD", dict(lr=0.1), {}), ("SGD", dict(lr=0.1, momentum=0.9), {}),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=WD), {}),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True), {}),
    ("Adagrad", dict(lr=0.1), {}), ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=WD, maximize=True), {}),
    ("RMSprop", dict(lr=0.01), {}), ("RMSprop", dict(lr=0.01, momentum=0.5), {}),
    ("RMSprop", dict(lr=0.01, centered=True), {}),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=WD), {}),
    ("Adadelta", dict(), {}), ("Adadelta", dict(weight_decay=WD, maximize=True), {}),
    ("Adam", dict(lr=0.01), {}), ("Adam", dict(lr=0.01, amsgrad=True), {}),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.125, maximize=True), {}),
    ("AdamW", dict(lr=0.01), {}), ("AdamW", dict(lr=0.01, amsgrad=True), {}),
    ("RAdam", dict(lr=0.01, weight_decay=0.125), dict(foreach=False)),
    ("NAdam", dict(lr=0.01, weight_decay=0.125), dict(foreach=True)),
    ("AdaBound", dict(lr=0.01), None), ("AdaBound", dict(lr=0.01, amsbound=True), None),
]


def _case_id(case):
    name, kw, _ = case
    return name + "".join(",%s=%s" % (k, v) for k, v in sorted(kw.items()) if k != "lr")


class _Torch:
    """torch.optim's side of a comparison: step, state, state poisoning."""

    def __init__(self, name, p0, kw, extra, clip):
        self.params = leaves(p0)
        self.opt = getattr(torch.optim, name)(self.params, **kw, **extra)
        self.clip = clip

    def step(self, g):
        set_grads(self.params, g)
        if self.clip is not None:
            kind, a, b = self.clip
            if kind == "norm":
                torch.nn.utils.clip_grad_norm_(self.params, a, b)
            else:
                torch.nn.utils.clip_grad_value_(self.params, a)
        self.opt.step()

    def states(self):
        return [self.opt.state[p] for p in self.params]

    def poison(self, where):
        """where(i, key, tensor) -> [(flat index, value)]: set those elements of
        every state tensor through state_dict / load_state_dict (a state that
        was saved with NaN in it) and of the parameters in place."""
        sd = self.opt.state_dict()
        for i, st in sd["state"].items():
            for key, v in st.items():
                if key not in ("step", "mu_product") and torch.is_tensor(v) and v.numel():
                    v = v.clone()
                    for j, x in where(i, key, v):
                        v.view(-1)[j] = x
                    st[key] = v
        self.opt.load_state_dict(sd)
        with torch.no_grad():
            for i, p in enumerate(self.params):
                for j, x in where(i, "param", p):
                    p.view(-1)[j] = x
        return sd


class _Ref:
    """The float64 reference's side (AdaBound)."""

    def __init__(self, name, p0, kw, clip):
        assert clip is None
        self.ref = Ref64(name, p0, [dict(kw, params=list(range(len(p0))))])
        self.params = self.ref.params

    def step(self, g):
        with np.errstate(invalid="ignore", over="ignore"):
            self.ref.step(g)

    def states(self):
        return self.ref.state

    def poison(self, where):
        for i, st in enumerate(self.ref.state):
            for key, v in st.items():
                if isinstance(v, np.ndarray) and v.size:
                    for j, x in where(i, key, v):
                        v.reshape(-1)[j] = x
            for j, x in where(i, "param", self.ref.params[i]):
                self.ref.params[i].reshape(-1)[j] = x
        return None


def _where(i, key, t):
    """Elements to poison: a NaN and a +inf per tensor and key, at places that
    differ between keys (so a NaN in max_exp_avg_sq sits where exp_avg_sq is
    finite: torch.maximum keeps it); -inf in the parameters."""
    n = t.numel() if torch.is_tensor(t) else t.size
    k = {"param": 0, "momentum_buffer": 1, "sum": 1, "square_avg": 1, "exp_avg": 1, "acc_delta": 2,
         "exp_avg_sq": 2, "grad_avg": 3, "max_exp_avg_sq": 3}[key]
    out = [((5 + 11 * k) % n, math.nan)]
    if n > 1:
        out.append(((60 + 13 * k) % n, -math.inf if key == "param" else math.inf))
    return out


def _compare_propagate(rng, seed, case, clip=None, bad=("nan", "inf"), poison_state=True, steps=8, tol=1e-5):
    """Step optim.torch and torch.optim (or the float64 reference) with NaN and
    +-inf gradients at chosen elements (steps 2 and 3), NaN/inf in the state
    and the parameters before step 5; after steps 2, 3, 4, 5 and the last the
    parameters and EVERY state tensor must have the other side's NaN, +inf and
    -inf elements exactly, and the same finite values (relative tol)."""
    name, kw, extra = case
    p0 = make_params(rng, SHAPES)
    po = leaves(p0)
    ours_kw = dict(kw)
    if clip is not None:
        ours_kw["clip_grad_norm" if clip[0] == "norm" else "clip_grad_value"] = (
            (clip[1], clip[2]) if clip[0] == "norm" else clip[1])
    ours = getattr(ot, name)(po, **ours_kw)
    assert ours.nonfinite == "propagate"
    theirs = _Ref(name, p0, kw, clip) if extra is None else _Torch(name, p0, kw, extra, clip)
    checks = Checks(extra is not None, tol)
    grads = Grads(rng, SHAPES)
    what = "%s(%s) clip %s seed %d" % (name, ours_kw, clip, seed)
    for t in range(1, steps + 1):
        g = grads.next()
        if t == 2:
            if "nan" in bad:
                g[2][4, 5] = math.nan
                g[0][()] = math.nan
            if "inf" in bad:
                g[3][7] = math.inf
                g[1][3] = -math.inf
        if t == 3:
            if "nan" in bad:
                g[3][65536] = math.nan
            if "inf" in bad:
                g[2][0, 0] = math.inf
                g[3][7] = -math.inf  # the same element again, the other sign
        if t == 5 and poison_state:
            sd = theirs.poison(_where)
            if sd is not None:
                ours.load_state_dict(sd)
            else:  # the reference's state, in torch's format
                ref_sd = ours.state_dict()
                for i, st in enumerate(theirs.states()):
                    for key, v in st.items():
                        if isinstance(v, np.ndarray):
                            ref_sd["state"][i][key] = torch.tensor(v, dtype=torch.float32)
                ours.load_state_dict(ref_sd)
            with torch.no_grad():
                for i, p in enumerate(po):
                    for j, x in _where(i, "param", p):
                        p.view(-1)[j] = x
        set_grads(po, g)
        ours.step()
        theirs.step(g)
        assert not ours.last_step_skipped
        checks.every_step(theirs.params, theirs.states())
        if t in (2, 3, 4, 5, steps):
            checks.record("%s, step %d" % (what, t), po, theirs.params, [ours.state[p] for p in po],
                          theirs.states())
    checks.verify()
    return po


@pytest.mark.parametrize("case", PROPAGATE, ids=[_case_id(c) for c in PROPAGATE])
def test_propagate_is_torchs_arithmetic(rng, seed, case):
    """The default: a NaN or Inf in a gradient, a state tensor or a parameter
    reaches exactly the elements it reaches in torch.optim (parameters and
    every state tensor, AMSGrad's maximum included), and the other elements
    keep stepping as torch's do."""
    po = _compare_propagate(rng, seed, case)
    assert bool(torch.isnan(po[2][4, 5])) and not bool(torch.isnan(po[2][4, 6]))


NORM_TYPES = [1.0, 2.0, 3.0, math.inf]


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=["p=%s" % p for p in NORM_TYPES])
@pytest.mark.parametrize("case", [PROPAGATE[1], PROPAGATE[13]], ids=["SGD-momentum", "Adam-amsgrad"])
def test_propagate_with_norm_clipping_is_torchs(rng, seed, case, norm_type, bad):
    """clip_grad_norm=(2, p) against torch.nn.utils.clip_grad_norm_(2, p) then
    torch's step: a NaN gradient makes the norm NaN for every p (the inf-norm
    too: torch's max propagates NaN), so every element of every parameter
    turns NaN; an inf makes it inf, the factor 0, and inf * 0 = NaN only where
    the inf was. torch sums the 1- and 3-norms in float32, off by up to about
    1e-5 (test_clip.py), which the factor carries into the moments (squared
    in exp_avg_sq): 1e-4 for them."""
    po = _compare_propagate(rng, seed, case, ("norm", 2.0, norm_type), (bad,), poison_state=False,
                            tol=1e-5 if norm_type in (2.0, math.inf) else 1e-4)
    if bad == "nan":
        assert all(bool(torch.isnan(p).all()) for p in po)
    else:
        assert bool(torch.isnan(po[3][7])) and int(sum(int(torch.isnan(p).sum()) for p in po)) == 3


@pytest.mark.parametrize("case", [PROPAGATE[1], PROPAGATE[13], PROPAGATE[9]],
                         ids=["SGD-momentum", "Adam-amsgrad", "RMSprop-centered-momentum"])
def test_propagate_with_value_clipping_is_torchs(rng, seed, case):
    """clip_grad_value=0.6 against clip_grad_value_(0.6) then torch's step: an
    inf is clamped to the bound (finite from then on), a NaN stays NaN."""
    po = _compare_propagate(rng, seed, case, ("value", 0.6, None), poison_state=False)
    assert bool(torch.isnan(po[2][4, 5])) and bool(torch.isfinite(po[3][7]))


def test_last_grad_norm(rng):
    ps = leaves(make_params(rng, SHAPES))
    grads = Grads(rng, SHAPES)
    opt = ot.SGD(ps, lr=0.1)
    set_grads(ps, grads.next())
    opt.step()
    assert math.isnan(opt.last_grad_norm)  # neither a check nor clipping: nothing measured
    opt.set_nonfinite("skip")
    g = grads.next()
    set_grads(ps, g)
    opt.step()
    want = math.sqrt(sum(float(np.sum(np.asarray(x, dtype=np.float64) ** 2)) for x in g))
    assert opt.last_grad_norm == pytest.approx(want, rel=1e-12)
    opt.set_clip_grad_norm(100.0, 1.0)
    opt.step()
    want1 = sum(float(np.sum(np.abs(np.asarray(x, dtype=np.float64)))) for x in g)
    assert opt.last_grad_norm == pytest.approx(want1, rel=1e-12)
    ps[1].grad[0] = math.nan
    opt.step()
    assert opt.last_step_skipped and math.isnan(opt.last_grad_norm)


def test_the_setting_is_checked_shared_and_saved(rng):
    a, b = leaves(make_params(rng, [(5,), (3,)]))
    opt = ot.RMSprop([{"params": [a]}, {"params": [b]}], lr=0.01)
    assert [g["nonfinite"] for g in opt.param_groups] == ["propagate", "propagate"]
    opt.set_nonfinite("error")
    assert opt.nonfinite == "error" and [g["nonfinite"] for g in opt.param_groups] == ["error", "error"]
    c = torch.zeros(2, requires_grad=True)
    opt.add_param_group({"params": [c]})  # takes the current setting
    assert opt.param_groups[2]["nonfinite"] == "error"
    for bad in ("Skip", "ignore", None, 1):
        with pytest.raises(ValueError, match="nonfinite = %r must be 'propagate'" % (bad,)):
            ot.Adam([torch.zeros(2, requires_grad=True)], nonfinite=bad)
        with pytest.raises(ValueError, match="RMSprop.set_nonfinite: nonfinite = %r" % (bad,)):
            opt.set_nonfinite(bad)
    assert opt.nonfinite == "error"
    with pytest.raises(ValueError, match="param group 1 has nonfinite = 'propagate' but group 0 has 'skip'"):
        ot.Adam([{"params": [torch.zeros(2, requires_grad=True)], "nonfinite": "skip"},
                 {"params": [torch.zeros(2, requires_grad=True)]}])
    set_grads([a, b, c], [np.ones(5, np.float32), np.full(3, np.nan, np.float32), np.ones(2, np.float32)])
    opt.param_groups[1]["nonfinite"] = "skip"
    w = [a.detach().clone(), b.detach().clone()]
    with pytest.raises(ValueError, match="RMSprop: param group 1 has nonfinite = 'skip' but group 0 has 'error'"):
        opt.step()
    assert torch.equal(a, w[0]) and torch.equal(b, w[1])
    for g in opt.param_groups:
        g["nonfinite"] = "skip"  # changing every group is the same as set_nonfinite
    opt.step()
    assert opt.nonfinite == "skip" and opt.last_step_skipped

    # state_dict keeps it; torch.optim's state (which has no such key) keeps the current one.
    sd = opt.state_dict()
    assert [g["nonfinite"] for g in sd["param_groups"]] == ["skip"] * 3
    a2, b2, c2 = (x.detach().clone().requires_grad_() for x in (a, b, c))
    other = ot.RMSprop([{"params": [a2]}, {"params": [b2]}, {"params": [c2]}], lr=0.01)
    other.load_state_dict(sd)
    assert other.nonfinite == "skip"
    other.set_nonfinite("error")
    other.load_state_dict(torch.optim.RMSprop([{"params": [a2]}, {"params": [b2]}, {"params": [c2]}],
                                              lr=0.02).state_dict())
    assert other.nonfinite == "error" and other.param_groups[0]["lr"] == 0.02
    bad = dict(sd, param_groups=[dict(g) for g in sd["param_groups"]])
    bad["param_groups"][2]["nonfinite"] = "propagate"
    with pytest.raises(ValueError, match="loaded param group 2 has nonfinite = 'propagate' but group 0 has 'skip'"):
        other.load_state_dict(bad)
    assert other.nonfinite == "error"
