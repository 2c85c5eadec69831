"""optim.torch's post-1.13 optimizers (Lion, ...) against their authors'
reference implementations, transcribed here from the reference code: once
with torch's float32 operations (the reference's step, line for line) and
once in float64 numpy, step by step from our float32 state (so that one step
of float arithmetic is compared with the same step in exact arithmetic).
"""
import io
import itertools

import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_harness import Grads, leaves, make_params, set_grads
from torch_ref64 import rel_err

SHAPES = [(), (7,), (3, 5), (40, 25)]


def _cases(**axes):
    names = sorted(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


# ---- Lion ------------------------------------------------------------------------------


@torch.no_grad()
def lion_reference_step(params, states, lr, betas, weight_decay):
    """google/automl lion/lion_pytorch.py, Lion.step (under torch.no_grad), transcribed (torch ops)."""
    beta1, beta2 = betas
    for p in params:
        if p.grad is None:
            continue
        p.data.mul_(1 - lr * weight_decay)
        grad = p.grad
        state = states.setdefault(p, {})
        if len(state) == 0:
            state["exp_avg"] = torch.zeros_like(p)
        exp_avg = state["exp_avg"]
        update = exp_avg * beta1 + grad * (1 - beta1)
        p.add_(torch.sign(update), alpha=-lr)
        exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)


def lion_ref64(p, m, g, lr, b1, b2, wd, maximize, decoupled):
    """The same step in float64 numpy; returns p, m, c (the interpolation), its two
    terms, and the momentum's two terms (the scale of their rounding)."""
    p, m, g = (np.asarray(x, dtype=np.float64) for x in (p, m, g))
    if maximize:
        g = -g
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    c = m * b1 + g * (1 - b1)
    return p - lr * np.sign(c), m * b2 + g * (1 - b2), c, g * (1 - b1), m * b1, np.abs(m * b2) + np.abs(g * (1 - b2))


def test_lion_defaults_are_the_references():
    opt = ot.Lion([torch.zeros(3, requires_grad=True)])
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"], g["maximize"], g["decoupled_weight_decay"]) == \
        (1e-4, (0.9, 0.99), 0.0, False, True)


def test_lion_vs_reference_code_float32(rng, seed):
    """The reference's own step on float32 tensors, run alongside for 300 steps."""
    p0 = make_params(rng, SHAPES)
    pt, po = leaves(p0), leaves(p0)
    kw = dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.3)
    opt = ot.Lion(po, **kw)
    states = {}
    grads = Grads(rng, SHAPES)
    worst = 0.0
    for t in range(300):
        g = grads.next()
        set_grads(pt, g)
        set_grads(po, g)
        lion_reference_step(pt, states, **kw)
        opt.step()
        for a, b in zip(po, pt):
            worst = max(worst, rel_err(a.detach().numpy(), b.detach().numpy()))
    for a, b in zip(po, pt):
        np.testing.assert_allclose(opt.state[a]["exp_avg"].numpy(), states[b]["exp_avg"].numpy(), rtol=1e-5,
                                   atol=1e-6)
    assert worst <= 1e-6, "seed %d: Lion vs the reference's code, worst %.3g" % (seed, worst)


LION_CASES = _cases(weight_decay=[0.0, 0.5], maximize=[False, True], decoupled_weight_decay=[True, False],
                    betas=[(0.9, 0.99), (0.5, 0.9)])


@pytest.mark.parametrize("kw", LION_CASES, ids=[",".join("%s=%s" % kv for kv in sorted(c.items()))
                                                for c in LION_CASES])
def test_lion_vs_float64_step_by_step(rng, seed, kw):
    p0 = make_params(rng, SHAPES)
    po = leaves(p0)
    lr = 1e-2
    opt = ot.Lion(po, lr=lr, **kw)
    grads = Grads(rng, SHAPES)
    ties = 0
    for t in range(300):
        g = grads.next()
        before = [(p.detach().numpy().copy(), opt.state[p]["exp_avg"].numpy().copy() if p in opt.state
                   else np.zeros(p.shape, np.float32)) for p in po]
        set_grads(po, g)
        opt.step()
        for i, p in enumerate(po):
            pr, mr, c, a, b, mscale = lion_ref64(before[i][0], before[i][1], g[i], lr, kw["betas"][0], kw["betas"][1],
                                         kw["weight_decay"], kw["maximize"], kw["decoupled_weight_decay"])
            tie = np.abs(c) <= 1e-5 * (np.abs(a) + np.abs(b))   # sign within float rounding of 0
            ties += int(tie.sum())
            ours = p.detach().numpy()
            err = np.abs(ours - pr) / np.maximum(np.abs(pr), 1e-3)
            assert np.all(err[~tie] <= 1e-6), "seed %d, step %d, tensor %d: param error %.3g" % (
                seed, t, i, err[~tie].max())
            assert np.all(np.abs(ours[tie] - pr[tie]) <= 2.0 * lr * 1.0001)
            merr = np.abs(opt.state[p]["exp_avg"].numpy() - mr) / (mscale + 1e-30)
            assert np.all(merr <= 1e-6), "seed %d, step %d, tensor %d: exp_avg error %.3g" % (seed, t, i, merr.max())
    assert ties <= 3, "seed %d: %d sign ties: the test's data are degenerate" % (seed, ties)


def test_lion_state_dict_resumes_bit_for_bit(rng):
    p0 = make_params(rng, SHAPES)
    pa, pb = leaves(p0), leaves(p0)
    groups = lambda ps: [dict(params=ps[:2]), dict(params=ps[2:], weight_decay=0.2, lr=2e-3)]
    a = ot.Lion(groups(pa), lr=1e-3)
    b = ot.Lion(groups(pb), lr=1e-3)
    grads = Grads(rng, SHAPES)
    gs = [grads.next() for _ in range(60)]
    for g in gs[:30]:
        set_grads(pa, g)
        a.step()
        set_grads(pb, g)
        b.step()
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    pc = [p.detach().clone().requires_grad_(True) for p in pb]
    c = ot.Lion(groups(pc), lr=1e-3)
    c.load_state_dict(torch.load(buf))
    assert set(c.state[pc[3]].keys()) == {"exp_avg"}
    for g in gs[30:]:
        set_grads(pa, g)
        a.step()
        set_grads(pc, g)
        c.step()
    for x, y in zip(pa, pc):
        assert torch.equal(x, y)
        assert torch.equal(a.state[x]["exp_avg"], c.state[y]["exp_avg"])
