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
from torch_harness import Grads, leaves, make_params, set_grads

SHAPES = [(), (7,), (10, 100), (65537,)]
CLASSES = [(ot.SGD, dict(lr=0.1, momentum=0.9)), (ot.Adagrad, dict(lr=0.1)),
           (ot.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)), (ot.Adadelta, dict()),
           (ot.Adam, dict(lr=0.01, amsgrad=True)), (ot.AdamW, dict(lr=0.01)), (ot.RAdam, dict(lr=0.01)),
           (ot.NAdam, dict(lr=0.01)), (ot.AdaBound, dict(lr=0.01))]
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


@pytest.mark.parametrize("cls,kw", [(ot.SGD, dict(lr=0.1, momentum=0.9)), (ot.Adam, dict(lr=0.01)),
                                    (ot.RMSprop, dict(lr=0.01))], ids=["SGD", "Adam", "RMSprop"])
def test_propagate_is_torchs_arithmetic(rng, seed, cls, kw):
    """The default: a NaN or Inf reaches exactly the elements it reaches in
    torch.optim, the others keep stepping."""
    p0 = make_params(rng, SHAPES)
    po, pt = leaves(p0), leaves(p0)
    ours = cls(po, **kw)
    theirs = getattr(torch.optim, cls.__name__)(pt, **kw)
    assert ours.nonfinite == "propagate"
    grads = Grads(rng, SHAPES)
    for t in range(6):
        g = grads.next()
        if t == 2:
            g[2][4, 5] = math.nan
            g[3][7] = math.inf
        set_grads(po, g)
        set_grads(pt, g)
        ours.step()
        theirs.step()
        assert not ours.last_step_skipped and ours.skipped_steps == 0
    for i, (a, b) in enumerate(zip(po, pt)):
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(torch.isinf(a), torch.isinf(b)), i
        keep = torch.isfinite(b)
        assert torch.allclose(a[keep], b[keep], rtol=1e-5, atol=1e-6), "seed %d, tensor %d" % (seed, i)
    assert bool(torch.isnan(po[2][4, 5])) and int(torch.isnan(po[2]).sum()) == 1


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
