"""Adamax, ASGD and Rprop against torch 1.13 itself, beyond the bits of
test_torch_bits.py (every option, 300 steps, every path): torch's defaults,
state_dict in torch's format both ways mid-run (the next steps are torch's
bits), the state's keys and types, a NaN gradient in Rprop, and the
arguments torch refuses."""
import inspect

import pytest
import torch

import optim.torch as ot

NAMES = ["Adamax", "ASGD", "Rprop"]
KW = {"Adamax": dict(lr=1e-2, weight_decay=1e-2, betas=(0.8, 0.99)),
      "ASGD": dict(lr=2e-2, t0=4, lambd=0.01, weight_decay=1e-2),
      "Rprop": dict(lr=1e-2, etas=(0.4, 1.3), step_sizes=(1e-4, 0.1))}


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_torch_1_13s(name):
    ours = inspect.signature(getattr(ot, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    for key, par in theirs.items():
        if key == "params":
            continue
        assert key in ours, "%s lacks torch's argument %s" % (name, key)
        assert ours[key].default == par.default, (name, key, ours[key].default, par.default)
    p = torch.zeros(3, requires_grad=True)
    a, b = getattr(ot, name)([p]), getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)])
    for key, value in b.defaults.items():
        assert a.defaults[key] == value, (name, key)


def _pair(name, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    p0 = [torch.randn(s, generator=g, dtype=dtype) for s in [(), (5,), (7, 13)]]
    po = [p.clone().requires_grad_() for p in p0]
    pt = [p.clone().requires_grad_() for p in p0]
    return g, po, pt


def _steps(g, opts, params, n, dtype):
    for _ in range(n):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in params[0]]
        for ps in params:
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
        for o in opts:
            o.step()


def _same_state(a, b, where):
    assert set(a) == set(b), (where, sorted(a), sorted(b))
    for key, v in b.items():
        u = a[key]
        if torch.is_tensor(v):
            assert torch.is_tensor(u) and u.dtype == v.dtype and u.shape == v.shape, (where, key, u, v)
            assert torch.equal(u, v), (where, key)
        else:
            assert type(u) is type(v) and u == v, (where, key, u, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_with_torch(name, dtype, seed):
    """torch runs 30 steps, optim.torch loads its state_dict and both run 30
    more (bits equal, state keys and types torch's); then torch loads optim's
    state_dict and both run 30 more."""
    g, po, pt = _pair(name, dtype, seed)
    theirs = getattr(torch.optim, name)(pt, **KW[name])
    _steps(g, [theirs], [pt], 30, dtype)
    with torch.no_grad():
        for a, b in zip(po, pt):
            a.copy_(b)
    ours = getattr(ot, name)(po, **KW[name])
    ours.load_state_dict(theirs.state_dict())
    for a, b in zip(po, pt):
        _same_state(ours.state[a], theirs.state[b], "%s after load (seed %d)" % (name, seed))
    _steps(g, [ours, theirs], [po, pt], 30, dtype)
    for a, b in zip(po, pt):
        assert torch.equal(a, b), "%s seed %d: parameters after 30 steps from torch's state" % (name, seed)
        _same_state(ours.state[a], theirs.state[b], "%s after 60 steps (seed %d)" % (name, seed))
    theirs2 = getattr(torch.optim, name)(pt, **KW[name])
    theirs2.load_state_dict(ours.state_dict())
    _steps(g, [ours, theirs2], [po, pt], 30, dtype)
    for a, b in zip(po, pt):
        assert torch.equal(a, b), "%s seed %d: parameters after 30 steps from optim's state" % (name, seed)


def test_asgd_state_types_are_torchs():
    p, q = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    a, b = ot.ASGD([p], t0=1), torch.optim.ASGD([q], t0=1)
    for _ in range(4):
        p.grad, q.grad = torch.ones(3), torch.ones(3)
        a.step()
        b.step()
    for key in ("step", "eta", "mu"):
        u, v = a.state[p][key], b.state[q][key]
        assert u.dtype == v.dtype == torch.float32 and u.dim() == v.dim() == 0 and float(u) == float(v), key
    # the tensors are live, as torch's (mutated in place by each step)
    eta, mu = a.state[p]["eta"], a.state[p]["mu"]
    p.grad = torch.ones(3)
    a.step()
    assert float(eta) == float(a.state[p]["eta"]) and float(mu) == float(a.state[p]["mu"]) == 1 / 4
    with pytest.raises(ValueError, match=r"\['eta'\] = -1.0 must be a finite number >= 0"):
        a.state[p]["eta"] = -1.0


def test_rprop_nan_gradient_as_torch():
    """torch 1.13's sign(NaN) is 0: a NaN gradient element leaves p and its
    step size unchanged, and 'prev' holds the NaN until the next step; an
    infinite one moves it by its (finite) step size."""
    p, q = torch.linspace(-1, 1, 40).requires_grad_(), torch.linspace(-1, 1, 40).requires_grad_()
    a, b = ot.Rprop([p]), torch.optim.Rprop([q])
    for t in range(6):
        g = torch.sin(torch.arange(40.0) * (t + 1))
        if t in (2, 3):
            g[::7] = float("nan")
            g[1::9] = float("inf") if t == 2 else -float("inf")
        p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
        assert torch.equal(p, q), t
        for key in ("prev", "step_size"):
            assert torch.equal(a.state[p][key].isnan(), b.state[q][key].isnan()), (t, key)
            m = ~b.state[q][key].isnan()
            assert torch.equal(a.state[p][key][m], b.state[q][key][m]), (t, key)


@pytest.mark.parametrize("name,kw", [
    ("Rprop", dict(etas=(1.0, 1.2))), ("Rprop", dict(etas=(0.5, 1.0))), ("Rprop", dict(lr=-1.0)),
    ("Adamax", dict(betas=(1.0, 0.999))), ("Adamax", dict(betas=(0.9, -0.1))), ("Adamax", dict(weight_decay=-1)),
    ("ASGD", dict(lr=-0.1)), ("ASGD", dict(weight_decay=-1.0)),
])
def test_refuses_what_torch_refuses(name, kw):
    with pytest.raises(ValueError):
        getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kw)
    with pytest.raises(ValueError):
        getattr(ot, name)([torch.zeros(2, requires_grad=True)], **kw)


def test_asgd_schedule_moves_eta_as_torch():
    """eta of step t+1 is computed from the lr of step t: a scheduler's lr
    reaches ASGD's steps one step later, in optim as in torch."""
    p, q = torch.ones(4, requires_grad=True), torch.ones(4, requires_grad=True)
    a, b = ot.ASGD([p], lr=0.1, lambd=0.1), torch.optim.ASGD([q], lr=0.1, lambd=0.1)
    sa = ot.lr_scheduler.StepLR(a, 2, gamma=0.3)
    sb = torch.optim.lr_scheduler.StepLR(b, 2, gamma=0.3)
    for t in range(9):
        p.grad = q.grad = None
        p.grad, q.grad = torch.full((4,), 0.5 + t), torch.full((4,), 0.5 + t)
        a.step()
        b.step()
        sa.step()
        sb.step()
        assert torch.equal(p, q) and float(a.state[p]["eta"]) == float(b.state[q]["eta"]), t
