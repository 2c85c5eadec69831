"""optim.torch.lr_scheduler beyond the comparison with torch: WarmupCosine and
WarmupStableDecay against their closed forms, state_dict / pickle / resume,
the closed-form difference from torch, argument errors, the Schedule binding,
and use with optim.torch's optimizers (the lr of every step reaches the
parameters)."""
import copy
import math
import pickle
import warnings

import pytest
import torch
import torch.optim.lr_scheduler as T

import optim.torch.lr_scheduler as L
from optim._schedule import Schedule, ScheduleArgumentError

# Jumping with step(epoch) and stepping without an optimizer step are on purpose here.
pytestmark = pytest.mark.filterwarnings("ignore:The epoch parameter", "ignore:Detected call of")

from optim.torch import SGD as OptimSGD, Adam as OptimAdam  # an import error fails this file, never skips it


def make_opt(lrs=(0.1, 0.03), momentum=0.9):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], momentum=momentum)


def lrs_over(sched, opt, steps):
    out = [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(sched.get_last_lr())
    return out


# ---- WarmupCosine, WarmupStableDecay ----------------------------------------------


def warmup_cosine_ref(base, t, warmup, total, eta_min):
    """llm.c's get_learning_rate, in double, held at eta_min after the end."""
    if t < warmup:
        return base * (t + 1) / warmup
    if t >= total:
        return eta_min
    ratio = (t - warmup) / (total - warmup)
    return eta_min + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (base - eta_min)


@pytest.mark.parametrize("warmup,total,eta_min", [(100, 1000, 0.0), (1, 1200, 1e-5), (0, 500, 1e-3),
                                                  (250, 250, 0.0), (37, 1001, 2e-4)])
def test_warmup_cosine_closed_form(warmup, total, eta_min):
    opt = make_opt()
    s = L.WarmupCosine(opt, warmup_steps=warmup, total_steps=total, eta_min=eta_min)
    for t, lrs in enumerate(lrs_over(s, opt, total + 100)):
        for base, lr in zip((0.1, 0.03), lrs):
            want = warmup_cosine_ref(base, t, warmup, total, eta_min)
            assert lr == pytest.approx(want, rel=1e-13, abs=1e-16), (t, base)
    # Exact where it matters: the end of the warm-up is the lr, the end is eta_min.
    s2 = L.WarmupCosine(make_opt(), warmup, total, eta_min)
    if warmup:
        s2.step(warmup - 1)
        assert s2.get_last_lr() == [0.1, 0.03]
    s2.step(total)
    assert s2.get_last_lr() == [eta_min, eta_min]


def wsd_ref(base, t, warmup, stable, decay, eta_min, kind):
    if t < warmup:
        return base * (t + 1) / warmup
    if t < warmup + stable:
        return base
    k = t - warmup - stable
    if k >= decay:
        return eta_min
    x = k / decay
    if kind == "cosine":
        return eta_min + (base - eta_min) * (1 + math.cos(math.pi * x)) / 2
    return base + (eta_min - base) * x


@pytest.mark.parametrize("decay", ["linear", "cosine"])
@pytest.mark.parametrize("warmup,stable,decay_steps,eta_min", [(100, 600, 300, 0.0), (0, 0, 1000, 1e-4),
                                                               (50, 1000, 1, 1e-3), (10, 0, 0, 0.0)])
def test_warmup_stable_decay_closed_form(warmup, stable, decay_steps, eta_min, decay):
    opt = make_opt()
    s = L.WarmupStableDecay(opt, warmup, stable, decay_steps, eta_min=eta_min, decay=decay)
    for t, lrs in enumerate(lrs_over(s, opt, warmup + stable + decay_steps + 50)):
        for base, lr in zip((0.1, 0.03), lrs):
            assert lr == pytest.approx(wsd_ref(base, t, warmup, stable, decay_steps, eta_min, decay), rel=1e-13,
                                       abs=1e-16), (t, base)


def test_warmup_schedulers_validate():
    with pytest.raises(ValueError, match="total_steps = 10 must be >= warmup_steps = 20"):
        L.WarmupCosine(make_opt(), 20, 10)
    with pytest.raises(ValueError, match="decay = 'exp' must be 'linear' or 'cosine'"):
        L.WarmupStableDecay(make_opt(), 1, 1, 1, decay="exp")
    with pytest.raises(ValueError, match="stable_steps = -1 must be >= 0"):
        L.WarmupStableDecay(make_opt(), 1, -1, 1)
    with pytest.raises(ValueError, match="eta_min = -0.1"):
        L.WarmupCosine(make_opt(), 1, 10, eta_min=-0.1)


# ---- State --------------------------------------------------------------------------

RESUMABLE = {
    "step": lambda o: L.StepLR(o, 7, 0.5),
    "multistep": lambda o: L.MultiStepLR(o, [10, 40, 40], 0.3),
    "constant": lambda o: L.ConstantLR(o, 0.25, 30),
    "linear": lambda o: L.LinearLR(o, 0.1, 1.0, 50),
    "exponential": lambda o: L.ExponentialLR(o, 0.97),
    "polynomial": lambda o: L.PolynomialLR(o, 80, 2.0),
    "cosine": lambda o: L.CosineAnnealingLR(o, 30, 1e-4),
    "restarts": lambda o: L.CosineAnnealingWarmRestarts(o, 5, 2, 1e-4),
    "one_cycle": lambda o: L.OneCycleLR(o, [0.2, 0.1], total_steps=120, three_phase=True),
    "cyclic": lambda o: L.CyclicLR(o, 0.01, 0.1, 9, 4, mode="exp_range", gamma=0.99),
    "warmup_cosine": lambda o: L.WarmupCosine(o, 10, 100, 1e-4),
    "wsd": lambda o: L.WarmupStableDecay(o, 10, 20, 30, 1e-4, "cosine"),
    "sequential": lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 10), L.StepLR(o, 9, 0.7),
                                               L.CosineAnnealingLR(o, 40)], [10, 50]),
    "chained": lambda o: L.ChainedScheduler([L.StepLR(o, 10, 0.5), L.ExponentialLR(o, 0.99)]),
    "multiplicative": lambda o: L.MultiplicativeLR(o, lambda t: 0.98),
}


def group_state(opt):
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in opt.param_groups]


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_state_dict_round_trip(name):
    """Run 100 steps straight, or 40 steps, save, rebuild, load, 60 more: the
    same lrs and momenta at every step; and the state survives pickling."""
    make = RESUMABLE[name]
    o1 = make_opt()
    s1 = make(o1)
    whole = [(s1.get_last_lr(), group_state(o1))]
    for _ in range(100):
        o1.step()
        s1.step()
        whole.append((s1.get_last_lr(), group_state(o1)))
    o2 = make_opt()
    s2 = make(o2)
    for _ in range(40):
        o2.step()
        s2.step()
    sd = pickle.loads(pickle.dumps(s2.state_dict()))
    osd = o2.state_dict()
    o3 = make_opt()
    s3 = make(o3)
    o3.load_state_dict(osd)
    s3.load_state_dict(sd)
    assert getattr(s3, "last_epoch", None) == getattr(s2, "last_epoch", None)
    assert s3.get_last_lr() == whole[40][0]
    for k in range(41, 101):
        o3.step()
        s3.step()
        assert (s3.get_last_lr(), group_state(o3)) == whole[k], (name, k)


def test_state_dict_keys_and_rebuild():
    o = make_opt()
    s = L.StepLR(o, 10, 0.5)
    sd = s.state_dict()
    # torch's keys (and no C object).
    assert {"step_size", "gamma", "base_lrs", "last_epoch", "_step_count", "verbose", "_last_lr"} <= set(sd)
    assert "_c" not in sd and "optimizer" not in sd
    # A loaded gamma rebuilds the C schedule, as torch's load changes its attribute.
    sd["gamma"] = 0.1
    s.load_state_dict(sd)
    s.step(20)
    assert s.get_last_lr() == pytest.approx([0.1 * 0.01, 0.03 * 0.01], rel=1e-15)
    # torch's state dict loads into ours.
    ot = make_opt()
    st = T.StepLR(ot, 10, 0.5)
    for _ in range(25):
        ot.step()
        st.step()
    s.load_state_dict(st.state_dict())
    o.step()
    s.step()
    ot.step()
    st.step()
    assert s.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-15)


def test_copy_and_pickle_scheduler():
    o = make_opt()
    s = L.CosineAnnealingLR(o, 50, 1e-3)
    for _ in range(7):
        o.step()
        s.step()
    s2 = copy.deepcopy(s)  # copies the optimizer too, as for torch's schedulers
    assert s2._c[0] is not s._c[0]
    s2.optimizer.step()
    s2.step()
    o.step()
    s.step()
    assert s2.get_last_lr() == s.get_last_lr()
    s3 = pickle.loads(pickle.dumps(s))
    s3.step()
    s.step()
    assert s3.get_last_lr() == s.get_last_lr()


def test_resume_with_last_epoch():
    """torch's resume: groups keep initial_lr; a scheduler built with
    last_epoch = k continues at step k + 1."""
    o1 = make_opt()
    s1 = L.PolynomialLR(o1, 60, 1.5)
    for _ in range(20):
        o1.step()
        s1.step()
    o2 = make_opt()
    o2.load_state_dict(o1.state_dict())
    s2 = L.PolynomialLR(o2, 60, 1.5, last_epoch=20)
    o1.step()
    s1.step()
    assert s2.get_last_lr() == s1.get_last_lr() and s2.last_epoch == 21
    with pytest.raises(KeyError, match="initial_lr"):
        L.StepLR(make_opt(), 3, last_epoch=5)


# ---- The deliberate difference ----------------------------------------------------------


def test_closed_form_ignores_hand_edits():
    """torch's chainable forms follow a hand edit of group['lr']; ours do not:
    the next step writes the scheduled value again."""
    ot, oo = make_opt(), make_opt()
    st, so = T.ExponentialLR(ot, 0.9), L.ExponentialLR(oo, 0.9)
    for o, s in ((ot, st), (oo, so)):
        o.step()
        s.step()
        o.param_groups[0]["lr"] = 1.0  # by hand
        o.step()
        s.step()
    assert st.get_last_lr()[0] == pytest.approx(0.9)
    assert so.get_last_lr()[0] == pytest.approx(0.1 * 0.81)
    # Changing the base rescales from then on.
    so.base_lrs[0] = 1.0
    oo.step()
    so.step()
    assert so.get_last_lr()[0] == pytest.approx(0.9 ** 3)


# ---- Errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("make,match", [
    (lambda o: L.StepLR(o, 0), "step_size = 0 must be >= 1"),
    (lambda o: L.StepLR(o, 2.5), "step_size = 2.5 must be an integer"),
    (lambda o: L.StepLR(o, 5, gamma=-1), "gamma = -1 must be a finite number >= 0"),
    (lambda o: L.MultiStepLR(o, [5, -1]), "milestones\\[0\\] = -1 must be >= 0"),
    (lambda o: L.ConstantLR(o, factor=1.5), "factor = 1.5 must be in \\[0, 1\\]"),
    (lambda o: L.ConstantLR(o, total_iters=0), "total_iters = 0 must be >= 1"),
    (lambda o: L.LinearLR(o, start_factor=2.0), "start_factor = 2 must be in \\[0, 1\\]"),
    (lambda o: L.ExponentialLR(o, float("nan")), "gamma = nan"),
    (lambda o: L.PolynomialLR(o, power=-2), "power = -2"),
    (lambda o: L.CosineAnnealingLR(o, 0), "t_max = 0 must be in \\[1, 2\\^62\\)"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, 0), "Expected positive integer T_0, but got 0"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, 5, 0), "Expected integer T_mult >= 1, but got 0"),
    (lambda o: L.OneCycleLR(o, 0.1), "You must define either total_steps OR"),
    (lambda o: L.OneCycleLR(o, 0.1, total_steps=100, pct_start=1.5), "pct_start = 1.5 must be in \\[0, 1\\]"),
    (lambda o: L.OneCycleLR(o, 0.1, total_steps=100, anneal_strategy="exp"), "anneal_strategy must by one of"),
    (lambda o: L.OneCycleLR(o, [0.1], total_steps=100), "expected 2 values for max_lr, got 1"),
    (lambda o: L.OneCycleLR(o, 0.1, total_steps=10, div_factor=0), "div_factor = 0 must be a finite number > 0"),
    (lambda o: L.CyclicLR(o, 0.1, 1.0, mode="square"), "mode is invalid and scale_fn is None"),
    (lambda o: L.CyclicLR(o, 0.1, 1.0, step_size_up=0), "step_size_up = 0 must be >= 1"),
    (lambda o: L.CyclicLR(o, -0.1, 1.0), "base_lr = -0.1"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 3), L.StepLR(o, 4)], [0]), "milestones\\[0\\] = 0 must be >= 1"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 3), L.StepLR(o, 4)], [5, 6]), "number of milestones to be equal"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 3), L.StepLR(make_opt(), 4)], [5]), "same optimizer"),
    (lambda o: L.ChainedScheduler([L.StepLR(o, 3), L.StepLR(make_opt(), 4)]), "same optimizer"),
    (lambda o: L.LambdaLR(o, [lambda t: 1.0]), "Expected 2 lr_lambdas, but got 1"),
])
def test_argument_errors(make, match):
    o = make_opt()
    with pytest.raises((ValueError, TypeError), match=match):
        make(o)


def test_errors_leave_the_optimizer_alone():
    o = make_opt()
    before = copy.deepcopy(o.param_groups)
    for bad in (lambda: L.StepLR(o, 0), lambda: L.OneCycleLR(o, 0.1, total_steps=10, pct_start=2.0),
                lambda: L.CyclicLR(o, 0.1, 1.0, step_size_up=-3)):
        with pytest.raises(ValueError):
            bad()
    assert [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in before]


def test_type_errors():
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        L.StepLR([], 3)
    o = make_opt()
    plateau = L.ReduceLROnPlateau(o)
    with pytest.raises(TypeError, match="schedulers\\[1\\] is a ReduceLROnPlateau, which cannot be composed"):
        L.SequentialLR(o, [L.StepLR(o, 2), plateau], [3])
    chain = L.ChainedScheduler([L.StepLR(o, 2)])
    with pytest.raises(TypeError, match="schedulers\\[0\\] is a ChainedScheduler"):
        L.ChainedScheduler([chain])
    with pytest.raises(ValueError, match="optimizer must support momentum"):
        L.OneCycleLR(torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]), 0.1, total_steps=10)


def test_schedule_binding():
    s = Schedule.cosine(100, 0.0)
    assert s.kind == "cosine" and s.lr(1.0, 0) == 1.0 and s.lr(1.0, 100) == 0.0
    assert s.lr(1.0, 10 ** 18) == 1.0  # periodic, evaluated in O(1)
    c = copy.copy(s)
    del s
    assert c.lr(2.0, 50) == pytest.approx(1.0, rel=1e-15)
    w = Schedule.warmup(10, c)
    assert w.kind == "warmup" and w.lr(1.0, 4) == 0.5 and w.lr(1.0, 10) == 1.0
    seq = Schedule.sequential([w, Schedule.step(5, 0.5)], [110])
    assert seq.kind == "sequential" and seq.lr(1.0, 115) == 0.5
    with pytest.raises(ScheduleArgumentError, match="optim_schedule_step: step_size = 0 must be >= 1") as info:
        Schedule.step(0, 0.5)
    assert info.value.name == "OPTIM_EINVAL" and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="does not fit a 64-bit integer"):
        Schedule.step(2 ** 70, 0.5)
    with pytest.raises(ValueError, match="t = 18446744073709551616 does not fit"):
        c.lr(1.0, 2 ** 64)
    assert math.isnan(c.lr(1.0, -1)) and c.lr(1.0, 50.0) == c.lr(1.0, 50)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(c)
    assert Schedule.one_cycle(0.1, 100).lr(0.0, 10 ** 12) == Schedule.one_cycle(0.1, 100).lr(0.0, 99)
    # Cyclic: None is as many steps down as up, 0 none (a sawtooth); -1 is refused (the library's "as up").
    tri, saw = Schedule.cyclic(0.0, 1.0, 4), Schedule.cyclic(0.0, 1.0, 4, 0)
    assert [tri.lr(0.0, t) for t in range(9)] == [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0]
    assert [saw.lr(0.0, t) for t in range(9)] == [0, 0.25, 0.5, 0.75, 0, 0.25, 0.5, 0.75, 0]
    with pytest.raises(ValueError, match="step_size_down = -1 must be >= 0 \\(None: as many steps"):
        Schedule.cyclic(0.0, 1.0, 4, -1)


# ---- With optim.torch's optimizers ----------------------------------------------------


def _train(opt_cls, sched_mod, make, steps, **opt_kw):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64))
    q = torch.nn.Parameter(torch.randn(8))
    opt = opt_cls([{"params": [p]}, {"params": [q], "lr": 0.01}], lr=0.05, **opt_kw)
    sched = make(sched_mod, opt)
    lrs = []
    g = torch.Generator().manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            p.grad = torch.randn(64, generator=g)
            q.grad = torch.randn(8, generator=g)
            lrs.append([grp["lr"] for grp in opt.param_groups])
            opt.step()
            sched.step()
    return p.detach().clone(), q.detach().clone(), lrs


TRAIN_STEPS = 1200

WITH_OPTIM = {
    "warmup_cosine": (lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.01, 1.0, 100), m.CosineAnnealingLR(o, 1100)],
                                                  [100]), {"momentum": 0.9}),
    # total_steps = TRAIN_STEPS: the last sched.step() reaches step total_steps.
    "one_cycle": (lambda m, o: m.OneCycleLR(o, [0.1, 0.02], total_steps=TRAIN_STEPS), {"momentum": 0.9}),
    "one_cycle_3_linear": (lambda m, o: m.OneCycleLR(o, 0.05, total_steps=TRAIN_STEPS + 1, three_phase=True,
                                                     anneal_strategy="linear"), {"momentum": 0.9}),
    "cyclic": (lambda m, o: m.CyclicLR(o, 0.001, 0.05, 15), {"momentum": 0.8}),
    "cyclic_tri2_sawtooth": (lambda m, o: m.CyclicLR(o, 0.001, 0.05, 40, 0, mode="triangular2"), {"momentum": 0.8}),
    "cyclic_exp": (lambda m, o: m.CyclicLR(o, 0.001, 0.05, 30, 70, mode="exp_range", gamma=0.999),
                   {"momentum": 0.8}),
    "step": (lambda m, o: m.StepLR(o, 150, 0.5), {}),
    "exponential": (lambda m, o: m.ExponentialLR(o, 0.998), {"momentum": 0.5}),
}


@pytest.mark.parametrize("name", sorted(WITH_OPTIM))
def test_drives_torch_sgd(name):
    """Our scheduler on torch.optim.SGD moves the parameters as torch's scheduler does."""
    make, kw = WITH_OPTIM[name]
    pt, qt, lt = _train(torch.optim.SGD, T, make, TRAIN_STEPS, **kw)
    po, qo, lo = _train(torch.optim.SGD, L, make, TRAIN_STEPS, **kw)
    assert sum(lo, []) == pytest.approx(sum(lt, []), rel=1e-12)
    assert torch.allclose(po, pt, rtol=1e-5, atol=1e-6) and torch.allclose(qo, qt, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(WITH_OPTIM))
def test_drives_optim_torch_sgd(name):
    """Our scheduler on optim.torch.SGD (the C optimizer) against torch's
    scheduler on torch.optim.SGD: the same lrs reach the same parameters."""
    make, kw = WITH_OPTIM[name]
    pt, qt, lt = _train(torch.optim.SGD, T, make, TRAIN_STEPS, **kw)
    po, qo, lo = _train(OptimSGD, L, make, TRAIN_STEPS, **kw)
    assert sum(lo, []) == pytest.approx(sum(lt, []), rel=1e-12)
    assert torch.allclose(po, pt, rtol=1e-5, atol=1e-6) and torch.allclose(qo, qt, rtol=1e-5, atol=1e-6)


def test_one_cycle_betas_optim_torch_adam():
    """OneCycleLR cycles beta1 of optim.torch.Adam as of torch.optim.Adam."""
    make = lambda m, o: m.OneCycleLR(o, 0.01, total_steps=TRAIN_STEPS, three_phase=True)  # noqa: E731
    pt, qt, lt = _train(torch.optim.Adam, T, make, TRAIN_STEPS)
    po, qo, lo = _train(OptimAdam, L, make, TRAIN_STEPS)
    assert sum(lo, []) == pytest.approx(sum(lt, []), rel=1e-12)
    assert torch.allclose(po, pt, rtol=1e-4, atol=1e-6) and torch.allclose(qo, qt, rtol=1e-4, atol=1e-6)
