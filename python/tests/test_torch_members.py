"""param_groups[i]["params"] edited by hand, side by side with torch.optim:
progressive unfreezing (a tensor appended), a tensor dropped and put back
later, a tensor moved to another group, a group's list replaced by a new
list object; every step compared with torch (parameters and every state
tensor), and the state the user holds (ParamState, state tensors, a kept
state_dict) compared with torch's objects held the same way."""
import pytest
import torch

import optim.torch as ot
from torch_harness import WD_SMALL, Grads, assert_state_matches, make_params
from torch_ref64 import rel_err

SHAPES = [(5,), (3, 4), (7,), (2,)]
TOL = 1e-5

CASES = [
    (ot.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True), dict(lr=0.003)),
    (ot.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.125), dict(lr=0.02, weight_decay=0.0)),
    (ot.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.01, momentum=0.5)),
    (ot.NAdam, torch.optim.NAdam, dict(lr=0.01, weight_decay=WD_SMALL, foreach=True), dict(lr=0.02)),  # torch 1.13 single-tensor NAdam: docs/TORCH.md
    (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True), dict(lr=0.002)),
]
IDS = [c[0].__name__ for c in CASES]


class Side:
    """One optimizer (ours or torch's) over its own copies of the tensors."""

    def __init__(self, cls, arrays, kw, kw1):
        self.p = [torch.tensor(a, requires_grad=True) for a in arrays]
        self.opt = cls([{"params": [self.p[0]]}, dict(params=[self.p[1]], **kw1)], **kw)

    def step(self, grads):
        for p, g in zip(self.p, grads):
            p.grad = torch.tensor(g)
        self.opt.step()


def _compare(ours, theirs, what):
    for k, (a, b) in enumerate(zip(ours.p, theirs.p)):
        err = rel_err(a.detach().double().numpy(), b.detach().double().numpy(), 1e-3)
        assert err <= TOL, "%s: parameter %d: relative error %.3g" % (what, k, err)
        assert (a in ours.opt.state) == (b in theirs.opt.state), "%s: parameter %d has state in one only" % (what, k)
        if b in theirs.opt.state:
            assert_state_matches(ours.opt.state[a], theirs.opt.state[b], "%s: parameter %d" % (what, k), tol=TOL)


EDITS = [
    ("append p2 to group 0 (unfreeze)", lambda s: s.opt.param_groups[0]["params"].append(s.p[2])),
    ("append p3 to group 1", lambda s: s.opt.param_groups[1]["params"].append(s.p[3])),
    ("move p0 to group 1", lambda s: (s.opt.param_groups[0]["params"].remove(s.p[0]),
                                      s.opt.param_groups[1]["params"].insert(0, s.p[0]))),
    ("drop p2", lambda s: s.opt.param_groups[0]["params"].remove(s.p[2])),
    ("replace group 1's list by a new list", lambda s: s.opt.param_groups[1].__setitem__(
        "params", [s.p[3], s.p[0], s.p[1]])),
    ("put p2 back, in group 1", lambda s: s.opt.param_groups[1]["params"].append(s.p[2])),
    ("drop p0 and p3", lambda s: s.opt.param_groups[1].__setitem__("params", [s.p[1], s.p[2]])),
]


@pytest.mark.parametrize("ours_cls,torch_cls,kw,kw1", CASES, ids=IDS)
def test_edits_of_params_follow_torch(rng, seed, ours_cls, torch_cls, kw, kw1):
    arrays = make_params(rng, SHAPES)
    ours, theirs = Side(ours_cls, arrays, kw, kw1), Side(torch_cls, arrays, kw, kw1)
    grads = Grads(rng, SHAPES)
    held_o = held_t = None
    for what, edit in [("start", None)] + EDITS:
        if edit is not None:
            edit(ours)
            edit(theirs)
        for t in range(6):
            g = grads.next()
            ours.step(g)
            theirs.step(g)
            _compare(ours, theirs, "%s, step %d after '%s' (seed %d)" % (ours_cls.__name__, t + 1, what, seed))
        if held_o is None:
            # the state objects of p0 as the user holds them, taken before any edit
            held_o, held_t = ours.opt.state[ours.p[0]], theirs.opt.state[theirs.p[0]]
            tensors_o = {k: v for k, v in held_o.items() if torch.is_tensor(v)}
            tensors_t = {k: v for k, v in held_t.items() if torch.is_tensor(v)}
        # p0's held state objects follow its state while it is in the optimizer, and keep their
        # values once it leaves, as torch's dict and tensors do
        assert_state_matches(held_o, held_t, "held ParamState of p0 after '%s'" % what, tol=TOL)
        for k, v in tensors_t.items():
            assert_state_matches({k: tensors_o[k]}, {k: v}, "held state tensor %r of p0 after '%s'" % (k, what),
                                 tol=TOL)
    # p0 and p3 were dropped with state: torch's state_dict raises KeyError, and so does ours
    for side in (theirs, ours):
        assert side.p[0] in side.opt.state
        with pytest.raises(KeyError):
            side.opt.state_dict()
        del side.opt.state[side.p[0]], side.opt.state[side.p[3]]
    sd_o, sd_t = ours.opt.state_dict(), theirs.opt.state_dict()
    assert sorted(sd_o["state"]) == sorted(sd_t["state"])
    assert [g["params"] for g in sd_o["param_groups"]] == [g["params"] for g in sd_t["param_groups"]]
    for k in sd_t["state"]:
        assert_state_matches(sd_o["state"][k], sd_t["state"][k], "state_dict entry %d" % k, tol=TOL)


def test_a_removed_tensor_comes_back_with_its_state():
    """torch keeps a removed tensor's state in optimizer.state and continues
    from it when the tensor returns; not stepped meanwhile."""
    sides = []
    for cls in (ot.Adam, torch.optim.Adam):
        a, b = torch.ones(4, requires_grad=True), torch.ones(3, requires_grad=True)
        opt = cls([a, b], lr=0.1)
        for _ in range(3):
            a.grad, b.grad = torch.full((4,), 0.5), torch.full((3,), -1.0)
            opt.step()
        opt.param_groups[0]["params"].remove(a)
        before = a.detach().clone()
        for _ in range(2):
            a.grad, b.grad = torch.full((4,), 0.5), torch.full((3,), -1.0)
            opt.step()
        assert torch.equal(a, before), cls  # not stepped while out
        assert float(opt.state[a]["step"]) == 3.0 and float(opt.state[b]["step"]) == 5.0
        opt.param_groups[0]["params"].append(a)
        a.grad = torch.full((4,), 0.5)
        opt.step()
        assert float(opt.state[a]["step"]) == 4.0 and float(opt.state[b]["step"]) == 6.0
        sides.append((a, b, opt))
    (ao, bo, oo), (at, bt, otorch) = sides
    assert torch.equal(ao, at) and torch.equal(bo, bt)
    for x, y in ((ao, at), (bo, bt)):
        assert_state_matches(oo.state[x], otorch.state[y], "after the return", tol=0)


def test_adagrad_appended_tensor_starts_as_if_given_at_construction():
    """torch 1.13's Adagrad makes its state in the constructor only: a tensor
    appended by hand fails its step (KeyError 'sum'). optim.torch's starts
    from initial_accumulator_value, as a tensor given at construction that
    had no gradient until now: compared with torch run that way."""
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = torch.optim.Adagrad([a], lr=0.1, initial_accumulator_value=0.2)
    opt.param_groups[0]["params"].append(b)
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    with pytest.raises(KeyError, match="sum"):
        opt.step()
    outs = []
    for late in (True, False):
        a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
        opt = (ot.Adagrad if late else torch.optim.Adagrad)([a] if late else [a, b], lr=0.1,
                                                            initial_accumulator_value=0.2)
        for t in range(6):
            if t == 3 and late:
                opt.param_groups[0]["params"].append(b)
            a.grad = torch.full((3,), 0.5 + t)
            b.grad = torch.full((2,), -1.0 - t) if t >= 3 else None
            opt.step()
        outs.append((a, b, opt))
    (ao, bo, oo), (at, bt, otorch) = outs
    assert torch.allclose(ao, at, rtol=1e-6) and torch.allclose(bo, bt, rtol=1e-6)
    assert_state_matches(oo.state[bo], otorch.state[bt], "appended Adagrad tensor", tol=1e-6)


def test_the_same_tensor_twice_is_refused_naming_the_groups():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = ot.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}])
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    opt.step()
    opt.param_groups[1]["params"].append(a)
    with pytest.raises(ValueError, match=r"in param group 0 and in param group 1"):
        opt.step()
    assert float(opt.state[a]["step"]) == 1.0  # nothing changed
    opt.param_groups[1]["params"].pop()
    opt.param_groups[0]["params"].append(a)
    with pytest.raises(ValueError, match=r"in param group 0 and in param group 0"):
        opt.step()
    opt.param_groups[0]["params"].pop()
    opt.step()
    assert float(opt.state[a]["step"]) == 2.0 and float(opt.state[b]["step"]) == 2.0
    opt.param_groups[0]["params"] = "not a list"
    with pytest.raises(TypeError, match="param group 0: 'params' is str"):
        opt.step()


def test_state_given_before_a_tensor_joins_is_used():
    """optimizer.state[t] written while t is in no group (a wrapper's key, or
    a whole state) is the state t starts with when appended, as in torch."""
    outs = []
    for cls in (ot.Adam, torch.optim.Adam):
        a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
        opt = cls([a], lr=0.1)
        opt.state[b]["step"] = torch.tensor(10.0)
        opt.state[b]["exp_avg"] = torch.full((2,), 0.5)
        opt.state[b]["exp_avg_sq"] = torch.full((2,), 0.25)
        opt.state[b]["note"] = [1, 2]
        opt.param_groups[0]["params"].append(b)
        a.grad, b.grad = torch.ones(3), torch.full((2,), 2.0)
        opt.step()
        outs.append((b.detach().clone(), dict(opt.state[b])))
    (bo, so), (bt, st) = outs
    assert torch.equal(bo, bt)
    assert so.pop("note") == st.pop("note") == [1, 2]
    assert_state_matches(so, st, "state given before joining", tol=0)


def test_sam_refuses_an_edit_between_its_halves():
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    sam = ot.SAM([a], ot.SGD, lr=0.1)
    a.grad = torch.ones(3)
    sam.first_step()
    sam.base_optimizer.param_groups[0]["params"].append(b)
    with pytest.raises(RuntimeError, match="between first_step and second_step"):
        sam.second_step()
    sam.base_optimizer.param_groups[0]["params"].pop()
    sam.second_step()
    sam.base_optimizer.param_groups[0]["params"].append(b)
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    before = b.detach().clone()
    sam.first_step()
    sam.second_step()
    assert not torch.equal(b, before)  # the appended tensor is stepped by SAM's base too
