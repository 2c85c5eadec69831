"""The EMA of the weights in optim.torch (ema_decay=, ema_warmup=, swap_ema,
ema_state; docs/EMA.md) against torch 1.13's own averaging:
torch.optim.swa_utils.AveragedModel(model, avg_fn=lambda avg, p, n:
decay * avg + (1 - decay) * p) updated after every step, bit for bit over
hundreds of steps for several rules (the average follows whatever
parameters the rule produced, so any rule compares), float32 and float64,
with a parameter that has no gradient at some steps; the warm-up against
the same AveragedModel with the documented decay transcribed into avg_fn;
the swap, state_dict, pickling, checkpoints, rebuilt C objects and refusals.
"""
import copy
import pickle

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

import optim.torch as ot

DECAY = 0.95


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
        self.unused = torch.nn.Linear(2, 2)  # a gradient only every third step

    def forward(self, x):
        return self.body(x)


def _model(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    return _Net().to(dtype)


def _train(m, opt, steps, seed, dtype, avg=None, unused_every=3):
    g = torch.Generator().manual_seed(seed)
    for s in range(steps):
        opt.zero_grad(set_to_none=True)
        x = torch.randn(8, 6, generator=g, dtype=dtype)
        loss = (m(x) ** 2).mean()
        if s % unused_every == 0:
            loss = loss + m.unused(torch.randn(3, 2, generator=g, dtype=dtype)).sum()
        loss.backward()
        opt.step()
        if avg is not None:
            avg.update_parameters(m)


def _warm(decay):
    def d(n):
        n = int(n)
        return min(decay, (1 + n) / (10 + n))
    return d


CASES = [
    ("Adam", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("Adagrad", dict(lr=0.05)),
    ("Lion", dict(lr=1e-3)),
    ("LAMB", dict(lr=1e-2)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("warmup", [False, True], ids=["plain", "warmup"])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_matches_averaged_model(name, kw, warmup, dtype, seed):
    m = _model(seed, dtype)
    opt = getattr(ot, name)(m.parameters(), ema_decay=DECAY, ema_warmup=warmup, **kw)
    if warmup:
        d = _warm(DECAY)
        avg = AveragedModel(m, avg_fn=lambda a, p, n: d(n) * a + (1 - d(n)) * p)
    else:
        avg = AveragedModel(m, avg_fn=lambda a, p, n: DECAY * a + (1 - DECAY) * p)
    _train(m, opt, 200, seed, dtype, avg)
    st = opt.ema_state()
    assert st["count"] == int(avg.n_averaged) == 200 and st["decay"] == DECAY and st["warmup"] is warmup
    for i, (a, b) in enumerate(zip(st["averages"], avg.module.parameters())):
        assert a.dtype == dtype and a.shape == b.shape
        assert torch.equal(a, b), (i, (a - b).abs().max().item())


def test_muon_and_bfloat16_master(seed):
    """Muon averages after its apply pass; a bfloat16 parameter with an fp32 master averages the master."""
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(8, 6))
    opt = ot.Muon([w], lr=0.02, ema_decay=0.9)
    ref = w.detach().clone()
    for s in range(40):
        w.grad = torch.randn(8, 6)
        opt.step()
        ref = w.detach().clone() if s == 0 else 0.9 * ref + (1 - 0.9) * w.detach()
    assert torch.equal(opt.ema_state()["averages"][0], ref)
    b = torch.nn.Parameter(torch.randn(50).to(torch.bfloat16))
    opt = ot.AdamW([b], lr=1e-2, master_weights=True, ema_decay=0.9)
    for s in range(40):
        b.grad = torch.randn(50).to(torch.bfloat16)
        opt.step()
        master = opt.state[b]["master"].clone()
        ref = master if s == 0 else 0.9 * ref + (1 - 0.9) * master
    avg = opt.ema_state()["averages"][0]
    assert avg.dtype == torch.float32 and torch.equal(avg, ref)
    opt.swap_ema()
    assert torch.equal(b.detach(), avg.to(torch.bfloat16))
    opt.swap_ema()


def test_swap_state_dict_pickle_checkpoint(seed, tmp_path):
    m = _model(seed)
    opt = ot.Adam(m.parameters(), lr=1e-2, ema_decay=0.9, ema_warmup=True)
    _train(m, opt, 20, seed, torch.float32)
    st = opt.ema_state()
    before = [p.detach().clone() for p in m.parameters()]
    assert opt.swap_ema() is True
    assert all(torch.equal(p, a) for p, a in zip(m.parameters(), st["averages"]))
    assert opt.ema_state()["swapped"] and opt.ema_state()["averages"] is None
    for call in (opt.step, opt.state_dict, lambda: opt.set_ema(0.5),
                 lambda: opt.load_state_dict({"state": {}, "param_groups": []})):
        with pytest.raises(RuntimeError, match="swap_ema"):
            call()
    assert opt.swap_ema() is False
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before))

    # Resumed three ways, then 20 more steps: the same bits as the run that went on.
    sd = copy.deepcopy(opt.state_dict())
    assert sd["optim_ema"]["count"] == 20
    pk = pickle.dumps((m, opt))
    opt.save_checkpoint(str(tmp_path / "ck"))
    m1 = copy.deepcopy(m)
    o1 = ot.Adam(m1.parameters(), lr=1e-2)  # no EMA: the state dict turns it on
    o1.load_state_dict(sd)
    m2, o2 = pickle.loads(pk)
    m3 = copy.deepcopy(m)
    o3 = ot.Adam(m3.parameters(), lr=1e-2)
    o3.load_checkpoint(str(tmp_path / "ck"))
    _train(m, opt, 20, seed + 1, torch.float32)
    want = opt.ema_state()
    for mm, oo in ((m1, o1), (m2, o2), (m3, o3)):
        _train(mm, oo, 20, seed + 1, torch.float32)
        got = oo.ema_state()
        assert got["count"] == want["count"] == 40 and got["warmup"] and got["decay"] == 0.9
        assert all(torch.equal(a, b) for a, b in zip(got["averages"], want["averages"]))
        assert all(torch.equal(a, b) for a, b in zip(mm.parameters(), m.parameters()))

    # torch.optim's state dict (no EMA in it): the setting stays, the average restarts (the next step copies).
    t = torch.optim.Adam(m.parameters(), lr=1e-2)
    opt.load_state_dict(t.state_dict())
    assert opt.ema_state()["count"] == 0
    _train(m, opt, 1, seed, torch.float32)
    assert all(torch.equal(a, p) for a, p in zip(opt.ema_state()["averages"], m.parameters()))


def test_param_groups_edit_keeps_the_average(seed):
    """A hand edit of param_groups rebuilds the C object: the averages of the tensors that stay come along."""
    m = _model(seed)
    opt = ot.SGD(m.parameters(), lr=0.1, ema_decay=0.8)
    avg = AveragedModel(m, avg_fn=lambda a, p, n: 0.8 * a + (1 - 0.8) * p)
    _train(m, opt, 10, seed, torch.float32, avg)
    extra = torch.nn.Parameter(torch.randn(4))
    opt.param_groups[0]["params"].append(extra)
    extra.grad = torch.zeros(4)
    _train(m, opt, 10, seed, torch.float32, avg)
    st = opt.ema_state()
    assert st["count"] == 20
    assert all(torch.equal(a, b) for a, b in zip(st["averages"][:-1], avg.module.parameters()))


def test_refusals():
    p = torch.nn.Parameter(torch.randn(3))
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="ema_decay"):
            ot.Adam([p], ema_decay=bad)
    with pytest.raises(TypeError, match="ema_decay"):
        ot.Adam([p], ema_decay="0.9")
    with pytest.raises(ValueError, match="ema_warmup=True needs"):
        ot.Adam([p], ema_warmup=True)
    with pytest.raises(ValueError, match="adamw_schedule_free"):
        ot.AdamWScheduleFree([p], ema_decay=0.9)
    opt = ot.Adam([p])
    assert opt.ema_state() is None
    with pytest.raises(RuntimeError, match="EMA is off"):
        opt.swap_ema()
    opt.set_ema(0.5)
    assert opt.ema_state()["decay"] == 0.5
    opt.set_ema(None)
    assert opt.ema_state() is None and "optim_ema" not in opt.state_dict()


def test_layouts_and_bfloat16(seed):
    """Transposed and channels_last parameters (C steps them in their memory order): the averages by logical
    index; a bfloat16 parameter without a master: averaged in float32 from its stored value."""
    torch.manual_seed(seed)
    a = torch.nn.Parameter(torch.randn(6, 4).t())
    b = torch.nn.Parameter(torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last))
    c = torch.nn.Parameter(torch.randn(30).to(torch.bfloat16))
    opt = ot.SGD([a, b, c], lr=0.1, momentum=0.9, ema_decay=0.9, ema_warmup=True)
    d = _warm(0.9)
    refs = None
    for s in range(30):
        for p in (a, b, c):
            p.grad = torch.randn_like(p)
        opt.step()
        now = [p.detach().float().clone() for p in (a, b, c)]
        refs = now if s == 0 else [d(s) * r + (1 - d(s)) * x for r, x in zip(refs, now)]
    got = opt.ema_state()["averages"]
    assert got[2].dtype == torch.float32
    assert all(torch.equal(g, r) for g, r in zip(got, refs))
    before = [p.detach().clone() for p in (a, b, c)]
    opt.swap_ema()
    assert torch.equal(a, refs[0]) and torch.equal(b, refs[1]) and torch.equal(c, refs[2].to(torch.bfloat16))
    opt.swap_ema()
    assert all(torch.equal(p, q) for p, q in zip((a, b, c), before))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["complex64", "complex128"])
def test_complex_average_carried(dtype, seed, tmp_path):
    """A complex parameter's average (kept as its real view's pairs): exact, and carried by state_dict, pickling,
    deepcopy, a rebuilt C object and a checkpoint into a fresh optimizer, also when its state is kept in another
    layout than the parameter's (a transposed parameter, contiguous gradients: SGD's momentum takes the gradient's
    layout). The review of the EMA merge found every one of these restores failing (the average written through
    the real type: 'view_as_real is only supported for complex tensors') and the checkpoint's average left in the
    live layout (other values in other places)."""
    torch.manual_seed(seed)
    a = torch.nn.Parameter(torch.randn(3, 4, dtype=dtype).t())
    opt = ot.SGD([a], lr=1e-2, momentum=0.9, ema_decay=0.9)
    ref = None
    for s in range(5):
        a.grad = torch.randn(4, 3, dtype=dtype)
        opt.step()
        now = a.detach().clone()
        ref = now if s == 0 else 0.9 * ref + (1 - 0.9) * now
    got = opt.ema_state()["averages"][0]
    assert got.dtype == dtype and torch.equal(got, ref)
    opt.save_checkpoint(str(tmp_path / "ck"))
    assert torch.equal(opt.ema_state()["averages"][0], ref)
    b = torch.nn.Parameter(a.detach().clone())
    o1 = ot.SGD([b], lr=1e-2, momentum=0.9)
    o1.load_checkpoint(str(tmp_path / "ck"))
    o2 = ot.SGD([torch.nn.Parameter(a.detach().clone())], lr=1e-2, momentum=0.9)
    o2.load_state_dict(opt.state_dict())
    o3 = pickle.loads(pickle.dumps(opt))
    o4 = copy.deepcopy(opt)
    for o in (o1, o2, o3, o4):
        st = o.ema_state()
        assert st["count"] == 5 and torch.equal(st["averages"][0], ref)
    opt.param_groups[0]["params"].append(torch.nn.Parameter(torch.randn(2, dtype=dtype)))
    a.grad = None
    opt.step()  # rebuilds the C object: a's average carried, then averaged once more
    assert torch.equal(opt.ema_state()["averages"][0], 0.9 * ref + (1 - 0.9) * a.detach())


def test_sam_carries_the_average(seed):
    """SAM over a class with ema_decay=: only second_step averages; SAM.state_dict holds the base optimizer's
    'optim_ema' and SAM.load_state_dict must hand it on (the review of the EMA merge found it dropped: the loaded
    SAM had no EMA)."""
    torch.manual_seed(seed)
    a = torch.nn.Parameter(torch.randn(10))
    opt = ot.SAM([a], ot.SGD, lr=0.1, rho=0.05, ema_decay=0.5)
    ref = None
    for s in range(3):
        a.grad = torch.randn(10)
        opt.first_step(zero_grad=True)
        a.grad = torch.randn(10)
        opt.second_step()
        now = a.detach().clone()
        ref = now if s == 0 else 0.5 * ref + 0.5 * now
    want = opt.base_optimizer.ema_state()
    assert want["count"] == 3 and torch.equal(want["averages"][0], ref)
    o2 = ot.SAM([torch.nn.Parameter(a.detach().clone())], ot.SGD, lr=0.1, rho=0.05)
    o2.load_state_dict(opt.state_dict())
    got = o2.base_optimizer.ema_state()
    assert got is not None and got["count"] == 3 and torch.equal(got["averages"][0], ref)


def test_add_param_group_while_swapped(seed):
    """add_param_group while the parameters hold the averages is refused before anything changes (the review of
    the EMA merge found the group added to param_groups and to C, then its parameters refused by C with an
    OptimError: the optimizer left with a group C did not have the parameters of)."""
    torch.manual_seed(seed)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))
    opt = ot.SGD([a], lr=0.1, ema_decay=0.5)
    for _ in range(3):
        a.grad = torch.randn(5)
        opt.step()
    opt.swap_ema()
    with pytest.raises(RuntimeError, match="swap_ema"):
        opt.add_param_group({"params": [b]})
    assert len(opt.param_groups) == 1
    opt.swap_ema()
    opt.add_param_group({"params": [b], "lr": 0.2})
    avg = opt.ema_state()["averages"]
    a.grad, b.grad = torch.randn(5), torch.randn(3)
    opt.step()
    st = opt.ema_state()
    assert st["count"] == 4 and len(st["averages"]) == 2 and st["counts"] == [4, 1]
    # b came in after 3 averages: its first average copies it (test_param_added_late_starts_fresh).
    assert torch.equal(st["averages"][1], b.detach()) and torch.equal(st["averages"][0], 0.5 * avg[0] + 0.5 * a.detach())


def test_edit_of_param_groups_while_swapped(seed):
    """A hand edit of param_groups while swapped: swap_ema() still swaps back (the review of the EMA merge found
    it refused, 'call swap_ema() again', by the rebuild it ran first: the trained weights stranded in C), and the
    next step takes the edit (the new tensor's first average copies it, as for one added late)."""
    torch.manual_seed(seed)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))
    opt = ot.SGD([a], lr=0.1, ema_decay=0.5)
    for _ in range(3):
        a.grad = torch.randn(5)
        opt.step()
    w, avg = a.detach().clone(), opt.ema_state()["averages"][0]
    assert opt.swap_ema() is True
    opt.param_groups[0]["params"].append(b)
    assert opt.ema_state()["swapped"] is True
    assert opt.swap_ema() is False
    assert torch.equal(a.detach(), w)
    b0 = b.detach().clone()
    a.grad, b.grad = torch.randn(5), torch.randn(3)
    opt.step()
    st = opt.ema_state()
    assert st["count"] == 4 and len(st["averages"]) == 2
    assert torch.equal(st["averages"][0], 0.5 * avg + 0.5 * a.detach())
    assert not torch.equal(b0, b.detach()) and torch.equal(st["averages"][1], b.detach())  # its first: a copy


class _One(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w


@pytest.mark.parametrize("warmup", [False, True], ids=["plain", "warmup"])
@pytest.mark.parametrize("how", ["add_param_group", "param_groups_edit"])
def test_param_added_late_starts_fresh(how, warmup, seed, tmp_path):
    """A parameter added after the EMA has taken averages (add_param_group, or a hand edit of param_groups that
    rebuilds the C object) is averaged as an AveragedModel made for it then: its first average copies it and its
    warm-up counts its own averages (include/optim_ema.h); the others go on with theirs. state_dict() carries
    the per-parameter counts ('counts'), and a state dict, a pickle and a checkpoint resume bit for bit."""
    d = _warm(0.9) if warmup else (lambda n: 0.9)
    fn = lambda a, p, n: d(n) * a + (1 - d(n)) * p  # noqa: E731
    m = _model(seed)
    opt = ot.Adam(m.parameters(), lr=1e-2, ema_decay=0.9, ema_warmup=warmup)
    avg = AveragedModel(m, avg_fn=fn)
    _train(m, opt, 5, seed, torch.float32, avg)
    torch.manual_seed(seed + 7)
    w = torch.nn.Parameter(torch.randn(4, 3))
    if how == "add_param_group":
        opt.add_param_group({"params": [w], "lr": 0.05})
    else:
        opt.param_groups[0]["params"].append(w)
    late = AveragedModel(_One(w), avg_fn=fn)  # made now: n_averaged 0, its first update copies
    g = torch.Generator().manual_seed(seed + 3)

    def steps(m, opt, w, k, s0, avg=None, late=None):
        for s in range(k):
            w.grad = torch.randn(4, 3, generator=g)
            _train(m, opt, 1, seed + s0 + s, torch.float32)
            if avg is not None:
                avg.update_parameters(m)
                late.update_parameters(_One(w))

    steps(m, opt, w, 6, 100, avg, late)
    st = opt.ema_state()
    assert st["count"] == 11 and st["counts"] == [11] * len(list(m.parameters())) + [6]
    assert torch.equal(st["averages"][-1], late.module.w)
    assert all(torch.equal(a, b) for a, b in zip(st["averages"][:-1], avg.module.parameters()))
    # Resumed from a state dict, a pickle and a checkpoint: the same bits as the run that goes on.
    sd = copy.deepcopy(opt.state_dict())
    assert sd["optim_ema"]["counts"][-1] == 6
    pk = pickle.dumps((m, w, opt))
    opt.save_checkpoint(str(tmp_path / "ck"))
    g0 = g.get_state()
    steps(m, opt, w, 4, 200, avg, late)
    want = opt.ema_state()
    assert torch.equal(want["averages"][-1], late.module.w)
    resumed = []
    m1 = copy.deepcopy(m)
    for kind in ("state_dict", "pickle", "checkpoint"):
        if kind == "pickle":
            mm, ww, oo = pickle.loads(pk)
        else:
            mm, ww = copy.deepcopy(m1), torch.nn.Parameter(torch.zeros(4, 3))
            if how == "add_param_group":
                oo = ot.Adam(mm.parameters(), lr=1e-2)
                oo.add_param_group({"params": [ww], "lr": 0.05})
            else:
                oo = ot.Adam(list(mm.parameters()) + [ww], lr=1e-2)
            if kind == "state_dict":
                oo.load_state_dict(sd)
            else:
                oo.load_checkpoint(str(tmp_path / "ck"))
        resumed.append((kind, mm, ww, oo))
    for kind, mm, ww, oo in resumed:
        if kind != "pickle":
            # The models as they were when saved: the pickle's (m and w went on since).
            with torch.no_grad():
                for a, b in zip(mm.parameters(), pickle.loads(pk)[0].parameters()):
                    a.copy_(b)
                ww.copy_(pickle.loads(pk)[1])
        assert oo.ema_state()["counts"][-1] == 6, kind
        g.set_state(g0)
        steps(mm, oo, ww, 4, 200)
        got = oo.ema_state()
        assert got["count"] == 15 and got["counts"] == want["counts"], kind
        assert all(torch.equal(a, b) for a, b in zip(got["averages"], want["averages"])), kind
    # A count above the optimizer's is refused by name.
    bad = copy.deepcopy(sd)
    bad["optim_ema"]["counts"][-1] = 12
    with pytest.raises(ValueError, match=r"\['counts'\] must be a list of \d+ ints in \[0, count = 11\]"):
        opt.load_state_dict(bad)


@pytest.mark.parametrize("entry", ["load_state_dict", "load_checkpoint"])
@pytest.mark.parametrize("saved", [True, False], ids=["saved_ema", "saved_none"])
@pytest.mark.parametrize("has", [True, False], ids=["opt_ema", "opt_none"])
def test_load_combinations(entry, saved, has, seed, tmp_path):
    """load_state_dict and load_checkpoint follow one rule (docs/EMA.md, "Loading"; tests/test_ema.c
    ema_load_combinations for the C API): a saved EMA comes in with its settings, count and averages (turned on
    where it was off); a state without one leaves the optimizer's settings, on or off, and an EMA that is on
    restarts (count 0: the next step's average copies the parameters)."""
    m = _model(seed)
    src = ot.Adam(m.parameters(), lr=1e-2, ema_decay=0.9 if saved else None, ema_warmup=saved)
    _train(m, src, 3, seed, torch.float32)
    sd = copy.deepcopy(src.state_dict())
    src.save_checkpoint(str(tmp_path / "ck"))
    m2 = copy.deepcopy(m)
    dst = ot.Adam(m2.parameters(), lr=1e-2, ema_decay=0.5 if has else None)
    _train(m2, dst, 2, seed + 1, torch.float32)
    with torch.no_grad():
        for a, b in zip(m2.parameters(), m.parameters()):
            a.copy_(b)
    if entry == "load_state_dict":
        dst.load_state_dict(sd)
    else:
        dst.load_checkpoint(str(tmp_path / "ck"))
    st = dst.ema_state()
    if saved:
        want = src.ema_state()
        assert (st["decay"], st["warmup"], st["count"]) == (0.9, True, 3)
        assert all(torch.equal(a, b) for a, b in zip(st["averages"], want["averages"]))
    elif has:
        assert (st["decay"], st["warmup"], st["count"]) == (0.5, False, 0)
        _train(m2, dst, 1, seed + 2, torch.float32)
        assert all(torch.equal(a, p) for a, p in zip(dst.ema_state()["averages"], m2.parameters()))
    else:
        assert st is None
