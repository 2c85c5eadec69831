"""State: optimizer.state[p] as views of the C memory, 'step', state_dict()
and load_state_dict() in torch.optim's format, runs moved between torch.optim
and optim.torch mid-training in both directions, save/load continuing with
the same bits, and loads that must fail without changing anything."""
import copy
import gc
import io
import weakref

import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_harness import WD, WD_SMALL, Grads, Pair, assert_close, assert_state_matches, leaves, make_params, set_grads

SHAPES = [(), (7,), (10, 100), (32771,)]

PAIRS = [
    (ot.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9), {}),
    (ot.SGD, torch.optim.SGD, dict(lr=0.05), {}),
    (ot.Adagrad, torch.optim.Adagrad, dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1), {}),
    (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True), {}),
    (ot.Adadelta, torch.optim.Adadelta, dict(weight_decay=WD_SMALL), {}),
    (ot.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True), {}),
    (ot.AdamW, torch.optim.AdamW, dict(lr=0.01), {}),
    (ot.RAdam, torch.optim.RAdam, dict(lr=0.01, foreach=False), {}),
    (ot.NAdam, torch.optim.NAdam, dict(lr=0.01, weight_decay=WD_SMALL, foreach=True), {}),
]
PAIR_IDS = ["%s-%d" % (c[0].__name__, i) for i, c in enumerate(PAIRS)]


def _run(opt, params, grads, steps):
    for t in range(steps):
        set_grads(params, grads.next())
        opt.step()


def _continue(pair, grads, what):
    """Compare now, step both 50 times, compare again."""
    pair.sample()
    pair.check(what + ", when loaded")
    for _ in range(50):
        pair.step(grads.next())
    pair.check(what + ", 50 steps later")
    pair.verify()


@pytest.mark.parametrize("ours,theirs,kw,_", PAIRS, ids=PAIR_IDS)
def test_torch_to_optim_mid_training(rng, seed, ours, theirs, kw, _):
    p0 = make_params(rng, SHAPES)
    pt = leaves(p0)
    otorch = theirs(pt, **kw)
    grads = Grads(rng, SHAPES)
    _run(otorch, pt, grads, 30)
    po = [p.detach().clone().requires_grad_() for p in pt]
    oo = ours(po, lr=0.5)  # the loaded groups replace these hyperparameters
    oo.load_state_dict(otorch.state_dict())
    assert oo.param_groups[0]["lr"] == otorch.param_groups[0]["lr"] != 0.5
    _continue(Pair(oo, po, otorch, pt), grads, "%s loaded from torch, seed %d" % (ours.__name__, seed))


@pytest.mark.parametrize("ours,theirs,kw,_", PAIRS, ids=PAIR_IDS)
def test_optim_to_torch_mid_training(rng, seed, ours, theirs, kw, _):
    p0 = make_params(rng, SHAPES)
    po = leaves(p0)
    oo = ours(po, **kw)
    grads = Grads(rng, SHAPES)
    _run(oo, po, grads, 30)
    pt = [p.detach().clone().requires_grad_() for p in po]
    otorch = theirs(pt, lr=0.5)
    otorch.load_state_dict(oo.state_dict())
    _continue(Pair(oo, po, otorch, pt), grads, "%s state given to torch, seed %d" % (ours.__name__, seed))


ALL = [(ot.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)), (ot.Adagrad, dict(lr_decay=0.01)),
       (ot.RMSprop, dict(momentum=0.5, centered=True)), (ot.Adadelta, dict(momentum=0.5)),
       (ot.Adam, dict(amsgrad=True, bias_correction=False)), (ot.AdamW, dict(eps_placement="inside")),
       (ot.RAdam, dict(decoupled_weight_decay=True, weight_decay=WD)), (ot.NAdam, dict(maximize=True)),
       (ot.AdaBound, dict(amsbound=True, lr=0.01))]


@pytest.mark.parametrize("cls,kw", ALL, ids=[c[0].__name__ for c in ALL])
def test_save_load_continues_with_the_same_bits(rng, seed, cls, kw):
    """Split versus whole: 25 steps, torch.save of the state_dict, a new
    optimizer loads it, 25 more steps == 50 steps in one run, bit for bit."""
    shapes = [(), (7,), (300,)]
    p0 = make_params(rng, shapes)
    whole, first = leaves(p0), leaves(p0)
    ow, o1 = cls(whole, **kw), cls(first, **kw)
    stream = Grads(rng, shapes)
    grads = [stream.next() for _ in range(50)]
    for t in range(50):
        set_grads(whole, grads[t])
        ow.step()
        if t < 25:
            set_grads(first, grads[t])
            o1.step()
    buf = io.BytesIO()
    torch.save(o1.state_dict(), buf)
    del o1
    second = [p.detach().clone().requires_grad_() for p in first]
    o2 = cls(second, lr=1.0)  # other hyperparameters: the loaded groups replace them
    buf.seek(0)
    o2.load_state_dict(torch.load(buf))
    for t in range(25, 50):
        set_grads(second, grads[t])
        o2.step()
    for i, (a, b) in enumerate(zip(whole, second)):
        assert torch.equal(a, b), "%s tensor %d differs after save/load, seed %d" % (cls.__name__, i, seed)
        sa, sb = ow.state[a], o2.state[b]
        assert list(sa) == list(sb)
        for key in sa:
            x, y = sa[key], sb[key]
            assert (torch.equal(x, y) if torch.is_tensor(x) else x == y), "%s state %r" % (cls.__name__, key)


def test_adabound_loads_the_reference_format(rng, seed):
    """adabound.AdaBound's state_dict: int 'step', groups with amsbound and
    without optim's extras. Loading one and continuing gives the same bits."""
    shapes = [(5,), (40,)]
    p0 = make_params(rng, shapes)
    whole, first = leaves(p0), leaves(p0)
    ow, o1 = ot.AdaBound(whole, lr=0.01, amsbound=True), ot.AdaBound(first, lr=0.01, amsbound=True)
    grads = Grads(rng, shapes)
    gs = [grads.next() for _ in range(40)]
    for t in range(40):
        set_grads(whole, gs[t])
        ow.step()
        if t < 20:
            set_grads(first, gs[t])
            o1.step()
    sd = o1.state_dict()
    reference_keys = {"lr", "betas", "final_lr", "gamma", "eps", "weight_decay", "amsbound", "params"}
    sd = {"state": {k: dict(v) for k, v in sd["state"].items()},
          "param_groups": [{k: v for k, v in g.items() if k in reference_keys} for g in sd["param_groups"]]}
    assert all(type(s["step"]) is int for s in sd["state"].values())
    second = [p.detach().clone().requires_grad_() for p in first]
    o2 = ot.AdaBound(second, lr=0.01)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["maximize"] is False and o2.param_groups[0]["eps_placement"] == "outside"
    for t in range(20, 40):
        set_grads(second, gs[t])
        o2.step()
    for a, b in zip(whole, second):
        assert torch.equal(a, b), "seed %d" % seed


@pytest.mark.parametrize("ours,theirs,kw,_", PAIRS, ids=PAIR_IDS)
def test_state_before_the_first_step_is_torchs(ours, theirs, kw, _):
    p0 = [np.full((3,), 0.5, dtype=np.float32), np.full((4,), -2.0, dtype=np.float32)]
    po, pt = leaves(p0), leaves(p0)
    oo, otorch = ours(po, **kw), theirs(pt, **kw)
    so, st = oo.state_dict(), otorch.state_dict()
    assert sorted(so["state"]) == sorted(st["state"])
    for k in st["state"]:
        assert_state_matches(so["state"][k], st["state"][k], "%s state %d before a step" % (ours.__name__, k))
    assert len(oo.state) == len(otorch.state)
    for a, b in zip(so["param_groups"], st["param_groups"]):
        for key in b:
            assert a[key] == b[key], "%s group key %s: %r vs torch's %r" % (ours.__name__, key, a[key], b[key])


def test_state_tensors_are_views_of_the_c_memory(rng, seed):
    """Writing into state[p][key] changes what the C optimizer uses; torch
    with the same write stays equal."""
    p0 = make_params(rng, SHAPES)
    po, pt = leaves(p0), leaves(p0)
    oo, otorch = ot.Adam(po, lr=0.01), torch.optim.Adam(pt, lr=0.01)
    pair = Pair(oo, po, otorch, pt)
    grads = Grads(rng, SHAPES)
    for _ in range(5):
        pair.step(grads.next())
    m = oo.state[po[3]]["exp_avg"]
    assert m.dtype == torch.float32 and m.shape == po[3].shape
    m.mul_(-3.0)
    otorch.state[pt[3]]["exp_avg"].mul_(-3.0)
    oo.state[po[2]]["exp_avg_sq"] = torch.full((10, 100), 0.25)  # assignment copies into C memory
    otorch.state[pt[2]]["exp_avg_sq"] = torch.full((10, 100), 0.25)
    assert oo.state[po[3]]["exp_avg"] is m  # the same view every time
    for _ in range(10):
        pair.step(grads.next())
    pair.check("after writing the state, seed %d" % seed)
    pair.verify()
    assert float(oo.state[po[0]]["step"]) == 15.0


def test_step_counts_every_step_and_any_value_loads():
    for cls, kw in ALL:
        p = torch.zeros(3, requires_grad=True)
        opt = cls([p], **kw)
        p.grad = torch.ones(3)
        for _ in range(300):
            opt.step()
        if cls is ot.SGD:
            assert "step" not in opt.state[p]
            continue
        step = opt.state[p]["step"]
        assert float(step) == 300.0, cls.__name__
        if cls in (ot.RMSprop, ot.Adadelta, ot.AdaBound):
            assert type(step) is int
        else:
            assert torch.is_tensor(step) and step.dtype == torch.float32 and step.dim() == 0
        opt.state[p]["step"] = 2 ** 40
        assert float(opt.state[p]["step"]) == 2.0 ** 40
        opt.step()
        assert opt._h.get_step(0) == 2 ** 40 + 1


def test_views_keep_the_c_optimizer_alive():
    p = torch.zeros(1000, requires_grad=True)
    opt = ot.Adam([p])
    p.grad = torch.ones(1000)
    opt.step()
    view = opt.state[p]["exp_avg"]
    handle = weakref.ref(opt._h)
    del opt
    gc.collect()
    assert handle() is not None
    assert torch.allclose(view, torch.full((1000,), 0.1))  # still readable
    del view
    gc.collect()
    assert handle() is None  # freed with the last view


def test_reset_and_replace_one_parameters_state():
    p, q = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = ot.Adam([p, q])
    p.grad, q.grad = torch.ones(3), torch.ones(2)
    opt.step()
    opt.step()
    assert p in opt.state and len(opt.state) == 2
    del opt.state[p]
    assert p not in opt.state and len(opt.state[p]) == 0 and len(opt.state) == 1
    opt.step()
    assert float(opt.state[p]["step"]) == 1.0 and float(opt.state[q]["step"]) == 3.0
    opt.state[q] = {"step": torch.tensor(7.0), "exp_avg": torch.ones(2), "exp_avg_sq": torch.ones(2)}
    assert float(opt.state[q]["step"]) == 7.0 and torch.equal(opt.state[q]["exp_avg"], torch.ones(2))
    opt.state[q]["note"] = "kept in Python"
    assert opt.state[q]["note"] == "kept in Python" and "note" in dict(opt.state[q])
    with pytest.raises(KeyError, match="cannot be deleted"):
        del opt.state[q]["exp_avg"]


def test_sgd_momentum_buffer_none_and_switched_on():
    """torch keeps {'momentum_buffer': None} without momentum and starts the
    buffer from the gradient when momentum is switched on later."""
    p, q = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    oo, otorch = ot.SGD([p], lr=0.1), torch.optim.SGD([q], lr=0.1)
    for opt, x in ((oo, p), (otorch, q)):
        x.grad = torch.ones(3)
        opt.step()
    assert dict(oo.state[p]) == otorch.state[q] == {"momentum_buffer": None}
    sd = otorch.state_dict()
    oo.load_state_dict(sd)
    for opt, x in ((oo, p), (otorch, q)):
        opt.param_groups[0]["momentum"] = 0.9
        x.grad = torch.full((3,), 2.0)
        opt.step()
    assert torch.equal(oo.state[p]["momentum_buffer"], otorch.state[q]["momentum_buffer"])
    assert torch.equal(p, q)


def test_loading_amsgrad_state_into_a_group_without_amsgrad(rng):
    """torch keeps max_exp_avg_sq after amsgrad is switched off; loading such
    a state works and keeps it, as torch does, so that switching amsgrad back
    on uses it (test_distributed.py checks the same through the order in which
    ZeroRedundancyOptimizer loads: the state first, then the groups)."""
    p = torch.zeros(3, requires_grad=True)
    q = torch.zeros(3, requires_grad=True)
    src = torch.optim.Adam([q], amsgrad=True)
    q.grad = torch.ones(3)
    src.step()
    src.param_groups[0]["amsgrad"] = False
    opt = ot.Adam([p])
    opt.load_state_dict(src.state_dict())
    assert sorted(opt.state[p]) == sorted(src.state[q]) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
    assert torch.equal(opt.state[p]["max_exp_avg_sq"], src.state[q]["max_exp_avg_sq"])
    with torch.no_grad():
        p.copy_(q)
    for o in (opt, src):
        o.param_groups[0]["amsgrad"] = True
    p.grad = q.grad = torch.full((3,), 0.01)
    opt.step()
    src.step()
    assert torch.equal(opt.state[p]["max_exp_avg_sq"], src.state[q]["max_exp_avg_sq"])
    assert (src.state[q]["max_exp_avg_sq"] > src.state[q]["exp_avg_sq"]).all()  # the kept maximum was used
    assert_close(p, q, "parameter after amsgrad came back on")


def test_momentum_buffer_given_at_momentum_zero_is_used_when_momentum_comes_on():
    """A state assigned before the groups that use it (ZeroRedundancyOptimizer.load_state_dict's
    order): SGD's momentum_buffer given while momentum is 0 is kept, shown by state and
    state_dict, and used as the buffer once momentum is on, as torch does."""
    buf = torch.tensor([0.5, -1.0, 2.0])
    p = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ours, theirs = ot.SGD([p], lr=0.1), torch.optim.SGD([q], lr=0.1)
    ours.state[p] = {"momentum_buffer": buf}
    theirs.state[q] = {"momentum_buffer": buf.clone()}
    assert torch.equal(ours.state[p]["momentum_buffer"], buf)
    assert torch.equal(ours.state_dict()["state"][0]["momentum_buffer"], buf)
    for o in (ours, theirs):
        o.param_groups[0]["momentum"] = 0.9
    p.grad = torch.ones(3)
    q.grad = torch.ones(3)
    ours.step()
    theirs.step()
    assert torch.equal(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"])
    assert_close(p, q, "parameter after momentum came on")
    assert not torch.allclose(q, torch.tensor([0.9, 1.9, 2.9]))  # the buffer mattered



def test_a_waiting_slot_is_dropped_by_load_checkpoint_and_kept_by_deepcopy(tmp_path):
    """The kept momentum_buffer (momentum 0) belongs to the state it was given with: a
    load_checkpoint replaces every state, so the buffer goes with it (momentum switched on
    afterwards starts from the checkpoint, as an optimizer that only loaded it); a deep copy
    keeps it, as it keeps the rest of the state."""
    buf = torch.tensor([0.5, -1.0, 2.0])
    p = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    fresh_p = p.detach().clone().requires_grad_()
    saved = ot.SGD([torch.zeros(3, requires_grad=True)], lr=0.1)
    saved.save_checkpoint(tmp_path / "sgd.ckpt")
    ours, fresh = ot.SGD([p], lr=0.1), ot.SGD([fresh_p], lr=0.1)
    ours.state[p] = {"momentum_buffer": buf}
    copied = copy.deepcopy(ours)
    assert torch.equal(copied.state[copied.param_groups[0]["params"][0]]["momentum_buffer"], buf)
    ours.load_checkpoint(tmp_path / "sgd.ckpt")
    fresh.load_checkpoint(tmp_path / "sgd.ckpt")
    assert "momentum_buffer" not in ours.state[p] or ours.state[p]["momentum_buffer"] is None
    for o in (ours, fresh, copied):
        o.param_groups[0]["momentum"] = 0.9
    p.grad = torch.ones(3)
    fresh_p.grad = torch.ones(3)
    cp = copied.param_groups[0]["params"][0]
    cp.grad = torch.ones(3)
    for o in (ours, fresh, copied):
        o.step()
    assert torch.equal(p, fresh_p)
    assert torch.equal(ours.state[p]["momentum_buffer"], fresh.state[fresh_p]["momentum_buffer"])
    assert torch.equal(copied.state[cp]["momentum_buffer"], 0.9 * buf + 1.0)  # the kept buffer was used


def _snapshot(opt):
    sd = opt.state_dict()
    return copy.deepcopy(sd)


def _same(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert sorted(a["state"]) == sorted(b["state"])
    for k in a["state"]:
        assert sorted(a["state"][k]) == sorted(b["state"][k])
        for key, x in a["state"][k].items():
            y = b["state"][k][key]
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y


def _bad_loads(sd):
    """(mutation, expected message) pairs applied to a copy of Adam's state_dict."""
    def groups(d):
        d["param_groups"].append(copy.deepcopy(d["param_groups"][0]))

    def size(d):
        d["param_groups"][0]["params"] = d["param_groups"][0]["params"][:1]

    def shape(d):
        d["state"][1]["exp_avg"] = torch.zeros(8)

    def missing(d):
        del d["state"][0]["exp_avg_sq"]

    def step_text(d):  # (a key Adam does not have is kept in Python, as torch keeps it: test_torch_extra_state)
        d["state"][0]["step"] = "three"

    def neg_step(d):
        d["state"][1]["step"] = torch.tensor(-1.0)

    def frac_step(d):
        d["state"][1]["step"] = 2.5

    def bad_beta(d):
        d["param_groups"][0]["betas"] = (1.5, 0.999)

    def bad_placement(d):
        d["param_groups"][0]["eps_placement"] = "middle"

    def not_tensor(d):
        d["state"][1]["exp_avg"] = [0.0] * 7

    def not_a_dict(d):
        del d["param_groups"]

    return [(groups, "different number of parameter groups"), (size, "doesn't match the size"),
            (shape, r"\['exp_avg'\] has shape \(8,\) but parameter 1 has shape \(7,\)"),
            (missing, "has no 'exp_avg_sq'"), (step_text, r"\['step'\] must be a number"),
            (neg_step, "whole number >= 0"), (frac_step, "whole number >= 0"),
            (bad_beta, r"beta1 = 1.5 is outside \[0, 1\)"), (bad_placement, "'outside'"),
            (not_tensor, "must be a tensor"), (not_a_dict, "'state' and 'param_groups'")]


@pytest.mark.parametrize("index", range(11))
def test_bad_loads_fail_and_change_nothing(rng, index):
    params = leaves(make_params(rng, [(), (7,)]))
    opt = ot.Adam(params, lr=0.01)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    mutate, message = _bad_loads(None)[index]
    before = _snapshot(opt)
    bad = copy.deepcopy(opt.state_dict())
    mutate(bad)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    _same(before, _snapshot(opt))
    opt.step()  # still usable
    assert float(opt.state[params[0]]["step"]) == 2.0


def test_state_dict_copies_and_repr(rng):
    p = torch.zeros(3, requires_grad=True)
    opt = ot.NAdam([p])
    p.grad = torch.ones(3)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert sd["state"][0]["mu_product"].dtype == torch.float64
    opt.step()
    assert float(sd["state"][0]["step"]) == 1.0  # the copy does not move
    assert "NAdam (" in repr(opt) and "momentum_decay" in repr(opt)
    assert "mu_product" in repr(opt.state)
