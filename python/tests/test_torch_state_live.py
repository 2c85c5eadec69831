"""state_dict() as torch 1.13's: the live state, side by side with torch.

torch's state_dict holds its per-parameter state dicts themselves, whose
tensors (moments, and 'step', a 0-dim tensor that its step mutates with
+= 1) change in place as training continues: a state_dict kept in memory
follows the training, and loading it later changes nothing; load_state_dict
makes new state objects, so a state_dict kept from before a load keeps the
values it had at the load. A deep copy (or torch.save) keeps the state of
then. Every case is run on both and compared.

And state keys the rule does not have (a Lookahead wrapper's 'slow_param',
anything a user keeps there) round-trip through state_dict/load_state_dict,
torch.save and between optim.torch and torch.optim, cast as torch casts them."""
import copy
import io

import pytest
import torch

import optim.torch as ot
from torch_harness import WD_SMALL, Grads, assert_state_matches, make_params

SHAPES = [(), (7,), (10, 10)]
TOL = 1e-5

CASES = [
    (ot.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    (ot.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    (ot.NAdam, torch.optim.NAdam, dict(lr=0.01, weight_decay=WD_SMALL, foreach=True)),
    (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.9)),
    (ot.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (ot.Adagrad, torch.optim.Adagrad, dict(lr=0.05)),
    (ot.RAdam, torch.optim.RAdam, dict(lr=0.01)),
    (ot.Adadelta, torch.optim.Adadelta, dict()),
]
IDS = [c[0].__name__ for c in CASES]


class Side:
    def __init__(self, cls, arrays, kw):
        self.p = [torch.tensor(a, requires_grad=True) for a in arrays]
        self.opt = cls(self.p, **kw)

    def run(self, grads):
        for g in grads:
            for p, x in zip(self.p, g):
                p.grad = torch.tensor(x)
            self.opt.step()


def _same_sd(so, st, what):
    assert sorted(so["state"]) == sorted(st["state"]), what
    for k in st["state"]:
        assert_state_matches(so["state"][k], st["state"][k], "%s, state %r" % (what, k), tol=TOL)
    for a, b in zip(so["param_groups"], st["param_groups"]):
        for key in b:
            assert a[key] == b[key], "%s: group key %s: %r vs torch's %r" % (what, key, a[key], b[key])


def _same_params(ours, theirs, what):
    for k, (a, b) in enumerate(zip(ours.p, theirs.p)):
        assert torch.allclose(a, b, rtol=TOL, atol=1e-7), "%s: parameter %d" % (what, k)


@pytest.mark.parametrize("ours_cls,torch_cls,kw", CASES, ids=IDS)
def test_a_kept_state_dict_is_live_until_a_load(rng, seed, ours_cls, torch_cls, kw):
    arrays = make_params(rng, SHAPES)
    grads = Grads(rng, SHAPES)
    batches = [[grads.next() for _ in range(5)] for _ in range(5)]
    o, t = Side(ours_cls, arrays, kw), Side(torch_cls, arrays, kw)
    what = "%s (seed %d)" % (ours_cls.__name__, seed)
    for side in (o, t):
        side.run(batches[0])
        side.kept = side.opt.state_dict()
        side.copy = copy.deepcopy(side.opt.state_dict())
        side.held_step = side.opt.state[side.p[1]].get("step")
        side.held_param_state = side.opt.state[side.p[1]]
        side.run(batches[1])
    # the 'step' tensor held and the kept state_dict followed the training, in both
    if torch.is_tensor(t.held_step):
        assert float(t.held_step) == 10.0 and float(o.held_step) == 10.0, what
    elif t.held_step is not None:
        assert t.held_step == o.held_step == 5, what  # an int: torch's dict holds a new one
    _same_sd(o.kept, t.kept, what + ": kept state_dict after 5 more steps")
    _same_sd(o.copy, t.copy, what + ": deep copy after 5 more steps")
    for side in (o, t):
        side.opt.load_state_dict(side.kept)  # changes nothing: it is the state of now
        side.run(batches[2])
    _same_params(o, t, what + ": after loading the kept state_dict")
    _same_sd(o.opt.state_dict(), t.opt.state_dict(), what + ": after loading the kept state_dict")
    # the kept state_dict, its dicts and tensors are no longer the optimizer's: they kept the values
    # of the load (in torch, load_state_dict made new state objects)
    _same_sd(o.kept, t.kept, what + ": kept state_dict after a load and 5 steps")
    assert_state_matches(o.held_param_state, t.held_param_state, what + ": held state of p1", tol=TOL)
    if torch.is_tensor(t.held_step):
        assert float(t.held_step) == float(o.held_step) == 10.0, what
    # a deep copy rewinds
    for side in (o, t):
        side.opt.load_state_dict(side.copy)
        side.run(batches[3])
    _same_params(o, t, what + ": after loading the deep copy")
    _same_sd(o.opt.state_dict(), t.opt.state_dict(), what + ": after loading the deep copy")
    # through torch.save / torch.load, into a new optimizer, and across the two
    for side in (o, t):
        buf = io.BytesIO()
        torch.save(side.opt.state_dict(), buf)
        side.saved = buf.getvalue()
    for side, other in ((o, t), (t, o)):
        side.opt = type(side.opt)(side.p, **kw)
        side.opt.load_state_dict(torch.load(io.BytesIO(other.saved)))
        side.run(batches[4])
    _same_params(o, t, what + ": resumed from the other's torch.save'd state")
    _same_sd(o.opt.state_dict(), t.opt.state_dict(), what + ": resumed from the other's torch.save'd state")


def test_state_dict_entries_pickle_as_plain_dicts():
    p = torch.zeros(3, requires_grad=True)
    opt = ot.Adam([p])
    p.grad = torch.ones(3)
    opt.step()
    sd = opt.state_dict()
    entry = sd["state"][0]
    shallow = copy.copy(entry)
    assert type(shallow) is dict and shallow["exp_avg"] is entry["exp_avg"]
    for copied in (copy.deepcopy(sd), torch.load(io.BytesIO(_saved(sd)))):
        e = copied["state"][0]
        assert type(e) is dict and set(e) == {"step", "exp_avg", "exp_avg_sq"}
        assert e["exp_avg"].data_ptr() != entry["exp_avg"].data_ptr() and torch.equal(e["exp_avg"], entry["exp_avg"])
    snap = copy.deepcopy(sd)
    opt.step()
    assert float(snap["state"][0]["step"]) == 1.0 and float(sd["state"][0]["step"]) == 2.0


def _saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ---- state keys the rule does not have -------------------------------------------------------


class Lookahead:
    """Lookahead (Zhang et al. 2019) as users write it around any torch.optim
    optimizer: slow weights kept in the inner optimizer's state, so that
    they travel with its state_dict."""

    def __init__(self, optimizer, k=3, alpha=0.5):
        self.optimizer = optimizer
        self.k, self.alpha = k, alpha
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state
        for group in self.param_groups:
            group.setdefault("la_counter", 0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        for group in self.param_groups:
            group["la_counter"] += 1
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "slow_param" not in st:
                    st["slow_param"] = p.detach().clone()
                if group["la_counter"] % self.k == 0:
                    slow = st["slow_param"]
                    slow.add_(p - slow, alpha=self.alpha)
                    p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none=False):
        self.optimizer.zero_grad(set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, sd):
        self.optimizer.load_state_dict(sd)
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state


@pytest.mark.parametrize("ours_cls,torch_cls,kw", CASES[:2] + CASES[4:5], ids=IDS[:2] + IDS[4:5])
def test_lookahead_round_trips_with_torch(rng, seed, ours_cls, torch_cls, kw):
    arrays = make_params(rng, SHAPES)
    grads = Grads(rng, SHAPES)
    model = torch.nn.Linear(10, 3)
    batches = [[grads.next() for _ in range(7)] for _ in range(3)]
    sides = []
    for cls in (ours_cls, torch_cls):
        s = Side(cls, arrays, kw)
        s.opt = Lookahead(s.opt)
        sides.append(s)
    o, t = sides
    what = "Lookahead over %s (seed %d)" % (ours_cls.__name__, seed)
    for side in sides:
        side.run(batches[0])
    _same_params(o, t, what)
    _same_sd(o.opt.state_dict(), t.opt.state_dict(), what + ": state_dict with slow_param")
    # resume each from the other's torch.save'd state, in new optimizers
    saved = [_saved(s.opt.state_dict()) for s in sides]
    for side, other_saved, cls in ((o, saved[1], ours_cls), (t, saved[0], torch_cls)):
        side.opt = Lookahead(cls(side.p, **kw))
        side.opt.load_state_dict(torch.load(io.BytesIO(other_saved)))
        assert "slow_param" in side.opt.state[side.p[2]]
        side.run(batches[1])
    _same_params(o, t, what + ": resumed across")
    _same_sd(o.opt.state_dict(), t.opt.state_dict(), what + ": resumed across")
    del model


def test_extra_values_are_cast_as_torch_casts_them():
    """Tensors to the parameter's dtype (an int64 tensor too, as torch does)
    and device, containers item by item, other values kept; in the state of
    now (load_state_dict deep-copies). One difference: torch 1.13 turns a str
    into the text of a generator object, optim.torch keeps it."""
    values = {
        "f64": torch.arange(3, dtype=torch.float64) / 3,
        "i64": torch.arange(3),
        "nested": {"a": torch.ones(2, dtype=torch.float16), "b": [torch.zeros(1, dtype=torch.float64), 5]},
        "tup": (1, torch.ones(1, dtype=torch.float64)),
        "n": 7,
        "none": None,
    }
    loaded = []
    for cls in (ot.Adam, torch.optim.Adam):
        p = torch.zeros(3, requires_grad=True)
        opt = cls([p])
        p.grad = torch.ones(3)
        opt.step()
        for k, v in values.items():
            opt.state[p][k] = v
        opt.state[p]["text"] = "kept"
        sd = opt.state_dict()
        assert sd["state"][0]["f64"] is values["f64"]  # as given, until a load
        opt.load_state_dict(sd)
        loaded.append(dict(opt.state[p]))
    ours, theirs = loaded
    assert ours.pop("text") == "kept" and theirs.pop("text") != "kept"  # torch 1.13's str cast

    def same(a, b, where):
        assert type(a) is type(b), where
        if torch.is_tensor(b):
            assert a.dtype == b.dtype and torch.equal(a, b), where
        elif isinstance(b, dict):
            assert a.keys() == b.keys(), where
            for k in b:
                same(a[k], b[k], where + "." + k)
        elif isinstance(b, (list, tuple)):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, "%s[%d]" % (where, i))
        else:
            assert a == b, where

    for k in values:
        same(ours[k], theirs[k], k)
    assert ours["i64"].dtype == torch.float32 and ours["f64"] is not values["f64"]
