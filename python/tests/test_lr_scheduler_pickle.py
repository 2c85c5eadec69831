"""copy.deepcopy, pickle and torch.save of schedulers, as torch's (issue 11,
item 7, the schedulers' part).

A torch scheduler pickles its __dict__, the optimizer included: the copy has
its own copy of the optimizer (one, shared by the schedulers inside a
SequentialLR or ChainedScheduler), and goes on from where the original was. A
LambdaLR holding a lambda cannot be pickled (deepcopy works). Ours do the same:
for every class, the same outcome as torch's (or the same exception class),
and copies that go on with torch's values. Where torch 1.13 fails and ours do
not: CyclicLR (torch keeps an unpicklable WeakMethod; torch >= 2.0 does not).
"""
import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.optim.lr_scheduler as T

import optim.torch as optim_torch
import optim.torch.lr_scheduler as L
from lr_harness import check, make_opt, step_opt

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of", "ignore:The epoch parameter")


def _factor(t):
    return 0.95 ** t


class Factor(object):
    """A callable object: torch saves its __dict__ in the state_dict."""

    def __init__(self, gamma):
        self.gamma = gamma

    def __call__(self, t):
        return self.gamma ** t


CLASSES = {
    "lambda_function": lambda m, o: m.LambdaLR(o, _factor),
    "lambda_object": lambda m, o: m.LambdaLR(o, Factor(0.9)),
    "multiplicative": lambda m, o: m.MultiplicativeLR(o, _factor),
    "step": lambda m, o: m.StepLR(o, 5, 0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, [4, 9], 0.5),
    "constant": lambda m, o: m.ConstantLR(o, 0.5, 6),
    "linear": lambda m, o: m.LinearLR(o, 0.2, 1.0, 8),
    "exponential": lambda m, o: m.ExponentialLR(o, 0.9),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, 12, 1e-3),
    "polynomial": lambda m, o: m.PolynomialLR(o, 20, 2.0),
    "restarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, 4, 2),
    "one_cycle": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=100),
    "one_cycle_linear": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=100, anneal_strategy="linear"),
    "cyclic": lambda m, o: m.CyclicLR(o, 0.01, 0.1, 4),
    "sequential": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.1, 1.0, 5), m.ExponentialLR(o, 0.9)], [5]),
    "chained": lambda m, o: m.ChainedScheduler([m.LinearLR(o, 0.1, 1.0, 5), m.CosineAnnealingLR(o, 30)]),
    "plateau": lambda m, o: m.ReduceLROnPlateau(o, patience=1),
}


def _torch_save_load(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf)


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda s: pickle.loads(pickle.dumps(s)),
    "torch.save": _torch_save_load,
}


def _step(s, k):
    s.optimizer.step()
    if isinstance(s, T.ReduceLROnPlateau):
        s.step(1.0 / (1 + k % 3))
    else:
        s.step()


def _attempt(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 -- compared with torch's
        return None, exc


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_copies_as_torch(name, how):
    ot, oo = make_opt(), make_opt()
    st, so = CLASSES[name](T, ot), CLASSES[name](L, oo)
    for k in range(7):
        _step(st, k)
        _step(so, k)
    ct, et = _attempt(lambda: COPIES[how](st))
    co, eo = _attempt(lambda: COPIES[how](so))
    if name == "cyclic":
        assert type(et) is TypeError and "WeakMethod" in str(et)  # torch 1.13's
        assert eo is None
        ct = co = None
        # The copy of ours goes on as the original.
        c = COPIES[how](so)
        for k in range(7, 40):
            _step(so, k)
            _step(c, k)
            assert c.get_last_lr() == so.get_last_lr() and c.optimizer.param_groups[0]["momentum"] == \
                so.optimizer.param_groups[0]["momentum"]
        return
    assert type(eo) is type(et), (et, eo)
    if et is not None:
        return
    assert co.optimizer is not oo and ct.optimizer is not ot
    inner = getattr(co, "_schedulers", [])
    assert all(s.optimizer is co.optimizer for s in inner), "one optimizer copy, shared as in the original"
    # The copies, and the originals, go on with torch's values.
    for k in range(7, 40):
        for s in (st, so, ct, co):
            _step(s, k)
        check(ot, [st], oo, [so], "%s original, step %d" % (name, k))
        check(ct.optimizer, [ct], co.optimizer, [co], "%s copy (%s), step %d" % (name, how, k))


def test_lambda_cannot_be_pickled():
    """A LambdaLR holding a lambda: pickle fails as torch's does (same
    exception class); deepcopy works as torch's."""
    for how in ("pickle", "torch.save"):
        ot, oo = make_opt(), make_opt()
        st, so = T.LambdaLR(ot, lambda t: 0.9 ** t), L.LambdaLR(oo, lambda t: 0.9 ** t)
        _, et = _attempt(lambda: COPIES[how](st))
        _, eo = _attempt(lambda: COPIES[how](so))
        assert et is not None and type(eo) is type(et) and str(eo) == str(et)
    assert copy.deepcopy(so).get_last_lr() == so.get_last_lr()


@pytest.mark.parametrize("name", ["warmup_cosine", "wsd"])
def test_extras_copy(name):
    """optim's extras hold a C schedule: not pickled, rebuilt on load."""
    make = {"warmup_cosine": lambda o: L.WarmupCosine(o, 5, 40, 1e-4),
            "wsd": lambda o: L.WarmupStableDecay(o, 3, 5, 20, 0.0, "cosine")}[name]
    o = make_opt()
    s = make(o)
    for k in range(9):
        _step(s, k)
    for how in sorted(COPIES):
        c = COPIES[how](s)
        assert c._c is not s._c
        for k in range(9, 50):
            _step(c, k)
        ref = COPIES["deepcopy"](s)
        ref._c = s._c
        for k in range(9, 50):
            _step(ref, k)
        assert c.get_last_lr() == ref.get_last_lr()


WITH_EXTRAS = dict(CLASSES, **{
    "cyclic_scale_fn": lambda m, o: m.CyclicLR(o, 0.01, 0.1, 4, scale_fn=lambda x: 0.8 ** x),
    "warmup_cosine": lambda m, o: m.WarmupCosine(o, 3, 40),
    "sequential_extras": lambda m, o: m.SequentialLR(o, [m.WarmupStableDecay(o, 2, 3, 10), m.WarmupCosine(o, 0, 30)],
                                                      [8]),
})


@pytest.mark.parametrize("name", sorted(WITH_EXTRAS))
def test_state_dict_saves_without_the_optimizer(name):
    """torch.save(scheduler.state_dict()) works on an optim.torch optimizer,
    whatever the optimizer can do: the state holds no optimizer (torch 1.13's
    OneCycleLR holds a bound method of itself there, ours a name; a lambda is
    saved as None, as torch; CyclicLR's custom scale_fn as torch >= 2.0 saves
    it; the extras' C schedules are rebuilt)."""
    o = make_opt(module=optim_torch)
    s = WITH_EXTRAS[name](L, o)
    for k in range(5):
        _step(s, k)
    sd = _torch_save_load(s.state_dict())
    o2 = make_opt(module=optim_torch)
    s2 = WITH_EXTRAS[name](L, o2)
    o2.load_state_dict(o.state_dict())
    s2.load_state_dict(sd)
    for k in range(5, 30):
        _step(s, k)
        _step(s2, k)
        assert s2.get_last_lr() == s.get_last_lr()


def test_scheduler_pickles_as_its_optimizer():
    """On an optim.torch optimizer a scheduler pickles exactly when the
    optimizer does (the scheduler pickles its optimizer, as torch's), with
    the optimizer's exception otherwise."""
    o = make_opt(module=optim_torch)
    s = L.CosineAnnealingLR(o, 10)
    step_opt(o, 1)
    s.step()
    for how, fn in COPIES.items():
        _, e_opt = _attempt(lambda: fn(o))
        c, e_s = _attempt(lambda: fn(s))
        assert type(e_s) is type(e_opt) and str(e_s) == str(e_opt), how
        if e_opt is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for k in range(2, 20):
                    _step(s, k)
                    _step(c, k)
                    assert c.get_last_lr() == s.get_last_lr()
