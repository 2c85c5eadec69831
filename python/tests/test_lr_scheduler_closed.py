"""optim.torch.lr_scheduler beyond the step-by-step comparison with torch:
WarmupCosine and WarmupStableDecay (optim's, closed forms from liboptim,
chained by ratios) against their formulas, alone and stacked; state_dict
round trips and resumption for every class; hand edits; argument errors; the
Schedule binding; and training with torch.optim's and optim.torch's
optimizers (the lr of every step reaches the parameters)."""
import copy
import math
import pickle
import warnings

import pytest
import torch
import torch.optim.lr_scheduler as T

import optim.torch.lr_scheduler as L
from optim._schedule import Schedule, ScheduleArgumentError
from optim.torch import SGD as OptimSGD, Adam as OptimAdam

# Jumping with step(epoch) and stepping without an optimizer step are on purpose here.
pytestmark = pytest.mark.filterwarnings("ignore:The epoch parameter", "ignore:Detected call of")


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
    """Alone, the lr of step t is liboptim's closed form c(t) exactly (no
    rounding carried between steps) and llm.c's formula to ~1 ulp."""
    opt = make_opt()
    s = L.WarmupCosine(opt, warmup_steps=warmup, total_steps=total, eta_min=eta_min)
    c = Schedule.wsd(warmup, 0, total - warmup, eta_min, "cosine")
    for t, lrs in enumerate(lrs_over(s, opt, total + 100)):
        for base, lr in zip((0.1, 0.03), lrs):
            assert lr == c.lr(base, t), (t, base)
            assert lr == pytest.approx(warmup_cosine_ref(base, t, warmup, total, eta_min), rel=1e-13, abs=1e-16)
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
    c = Schedule.wsd(warmup, stable, decay_steps, eta_min, decay)
    for t, lrs in enumerate(lrs_over(s, opt, warmup + stable + decay_steps + 50)):
        for base, lr in zip((0.1, 0.03), lrs):
            assert lr == c.lr(base, t), (t, base)
            assert lr == pytest.approx(wsd_ref(base, t, warmup, stable, decay_steps, eta_min, decay), rel=1e-13,
                                       abs=1e-16), (t, base)


EXTRAS = {
    "warmup_cosine": (lambda m, o: m.WarmupCosine(o, 20, 150, 1e-4),
                      lambda base, t: warmup_cosine_ref(base, t, 20, 150, 1e-4)),
    "wsd_linear": (lambda m, o: m.WarmupStableDecay(o, 10, 30, 60), lambda base, t: wsd_ref(base, t, 10, 30, 60, 0.0,
                                                                                              "linear")),
    "wsd_cosine": (lambda m, o: m.WarmupStableDecay(o, 5, 20, 80, 1e-3, "cosine"),
                   lambda base, t: wsd_ref(base, t, 5, 20, 80, 1e-3, "cosine")),
}


@pytest.mark.parametrize("name", sorted(EXTRAS))
@pytest.mark.parametrize("order", ["before", "after", "chained", "later"])
def test_extras_chain_multiplicatively(name, order):
    """Stacked with ExponentialLR(gamma) (before or after it, in a
    ChainedScheduler, or created at step 40), the lr is c(t) * gamma^k: each
    step multiplies the group's lr by c(t) / c(t - 1). A hand edit (x3 at step
    90) carries on multiplicatively, as with torch's chainable schedulers."""
    make, ref = EXTRAS[name]
    gamma = 0.99
    opt = make_opt()
    if order == "before":
        steppers = [make(L, opt), L.ExponentialLR(opt, gamma)]
    elif order == "after":
        steppers = [L.ExponentialLR(opt, gamma), make(L, opt)]
    elif order == "chained":
        steppers = [L.ChainedScheduler([make(L, opt), L.ExponentialLR(opt, gamma)])]
    else:
        steppers = [L.ExponentialLR(opt, gamma)]
    scale = 1.0
    for t in range(0, 250):
        if t == 90:
            for g in opt.param_groups:
                g["lr"] *= 3.0
            scale = 3.0
        if t > 0:
            opt.step()
            for s in steppers:
                s.step()
        if order == "later" and t == 40:
            steppers.append(make(L, opt))  # its step 0 multiplies the group's lr by c(0) / base
        for base, g in zip((0.1, 0.03), opt.param_groups):
            k = t - 40 if order == "later" else t
            want = scale * (ref(base, k) if k >= 0 else base) * gamma ** t
            assert g["lr"] == pytest.approx(want, rel=1e-12, abs=1e-18), (t, base)


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_extras_in_sequential(name):
    """In SequentialLR after a warm-up, restarted with step(0) at the
    milestone as torch does: torch's SequentialLR with a LambdaLR of the
    formula gives the same lrs (to rounding: ours is liboptim's closed form)."""
    make, ref = EXTRAS[name]
    ot, oo = make_opt(), make_opt()
    st = T.SequentialLR(ot, [T.LinearLR(ot, 0.1, 1.0, 25), T.LambdaLR(ot, [lambda t, b=b: ref(b, t) / b
                                                                           for b in (0.1, 0.03)])], [25])
    so = L.SequentialLR(oo, [L.LinearLR(oo, 0.1, 1.0, 25), make(L, oo)], [25])
    for t in range(300):
        assert so.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-13, abs=1e-18), t
        for o, s in ((ot, st), (oo, so)):
            o.step()
            s.step()


def test_extras_zero_end_holds():
    """After a decay to eta_min = 0, c(t - 1) = 0: the ratio is undefined, and
    the group's lr is kept (here a hand edit after the end stays)."""
    opt = make_opt()
    s = L.WarmupStableDecay(opt, 0, 0, 10)
    for _ in range(12):
        opt.step()
        s.step()
    assert s.get_last_lr() == [0.0, 0.0]
    opt.param_groups[0]["lr"] = 0.004
    for _ in range(3):
        opt.step()
        s.step()
    assert s.get_last_lr() == [0.004, 0.0]


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


KEYS = {
    "step": lambda m, o: m.StepLR(o, 7, 0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, [10, 40, 40], 0.3),
    "constant": lambda m, o: m.ConstantLR(o, 0.25, 30),
    "linear": lambda m, o: m.LinearLR(o, 0.1, 1.0, 50),
    "exponential": lambda m, o: m.ExponentialLR(o, 0.97),
    "polynomial": lambda m, o: m.PolynomialLR(o, 80, 2.0),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, 30, 1e-4),
    "restarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, 5, 2, 1e-4),
    "lambda": lambda m, o: m.LambdaLR(o, lambda t: 0.9 ** t),
    "multiplicative": lambda m, o: m.MultiplicativeLR(o, lambda t: 0.9),
    "sequential": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.1, 1.0, 10), m.StepLR(o, 9, 0.7)], [10]),
    "chained": lambda m, o: m.ChainedScheduler([m.StepLR(o, 10, 0.5), m.ExponentialLR(o, 0.99)]),
    "one_cycle": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=100),
    "cyclic": lambda m, o: m.CyclicLR(o, 0.01, 0.1, 9),
}


def _keys(sd):
    return {k: (_keys(v) if isinstance(v, dict) else [_keys(x) for x in v] if k == "_schedulers" else None)
            for k, v in sd.items()}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_state_dict_keys_as_torch(name):
    """The same state_dict keys as torch's (every attribute but the optimizer),
    after some steps: a state saved by one loads into the other. Two differ,
    as in torch >= 2.0: OneCycleLR keeps the annealing function's name
    (_anneal_func_type) instead of a bound method of the scheduler
    (anneal_func); CyclicLR has no WeakMethod (_scale_fn_ref) and says
    whether it cycles beta1 (use_beta1, as OneCycleLR)."""
    ot, oo = make_opt(), make_opt()
    st, so = KEYS[name](T, ot), KEYS[name](L, oo)
    for _ in range(12):
        for o, s in ((ot, st), (oo, so)):
            o.step()
            s.step()
    kt, ko = _keys(st.state_dict()), _keys(so.state_dict())
    if name == "one_cycle":
        assert kt.pop("anneal_func", 0) is None and ko.pop("_anneal_func_type", 0) is None
    if name == "cyclic":
        assert kt.pop("_scale_fn_ref", 0) is None and ko.pop("use_beta1", 0) is None
    assert ko == kt
    assert "optimizer" not in ko


def test_state_dict_rebuilds_extras():
    """WarmupCosine's state (no C object in it) loads into another one: the
    arguments loaded rebuild its C schedule."""
    o = make_opt()
    s = L.WarmupCosine(o, 10, 100)
    assert "_c" not in s.state_dict() and "optimizer" not in s.state_dict()
    o2 = make_opt()
    s2 = L.WarmupCosine(o2, 50, 60, 1e-3)
    for _ in range(20):
        o.step()
        s.step()
    s2.load_state_dict(pickle.loads(pickle.dumps(s.state_dict())))
    o2.load_state_dict(o.state_dict())
    for _ in range(100):
        for opt, sch in ((o, s), (o2, s2)):
            opt.step()
            sch.step()
        assert s2.get_last_lr() == s.get_last_lr()


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


# ---- liboptim's closed forms (what C users attach) against torch's recursion ----------------

C_VS_TORCH = {
    "step": (lambda o: T.StepLR(o, 7, 0.5), Schedule.step(7, 0.5)),
    "step_slow": (lambda o: T.StepLR(o, 1, 0.995), Schedule.step(1, 0.995)),
    "multistep": (lambda o: T.MultiStepLR(o, [10, 100, 100, 500], 0.3), Schedule.multistep([10, 100, 100, 500], 0.3)),
    "constant": (lambda o: T.ConstantLR(o, 0.3, 50), Schedule.constant(0.3, 50)),
    "linear": (lambda o: T.LinearLR(o, 0.1, 1.0, 700), Schedule.linear(0.1, 1.0, 700)),
    "linear_down": (lambda o: T.LinearLR(o, 1.0, 0.05, 1000), Schedule.linear(1.0, 0.05, 1000)),
    "exponential": (lambda o: T.ExponentialLR(o, 0.995), Schedule.exponential(0.995)),
    "exponential_09": (lambda o: T.ExponentialLR(o, 0.9), Schedule.exponential(0.9)),
    "polynomial": (lambda o: T.PolynomialLR(o, 1000, 2.0), Schedule.polynomial(1000, 2.0)),
    "polynomial_sqrt": (lambda o: T.PolynomialLR(o, 700, 0.5), Schedule.polynomial(700, 0.5)),
    "cosine": (lambda o: T.CosineAnnealingLR(o, 100), Schedule.cosine(100)),
    "cosine_eta": (lambda o: T.CosineAnnealingLR(o, 300, 1e-3), Schedule.cosine(300, 1e-3)),
    "cosine_long": (lambda o: T.CosineAnnealingLR(o, 1000, 1e-4), Schedule.cosine(1000, 1e-4)),
    "restarts": (lambda o: T.CosineAnnealingWarmRestarts(o, 37), Schedule.cosine_restarts(37)),
    "restarts_mult": (lambda o: T.CosineAnnealingWarmRestarts(o, 10, 2, 1e-4), Schedule.cosine_restarts(10, 2, 1e-4)),
}


@pytest.mark.parametrize("name", sorted(C_VS_TORCH))
def test_c_closed_forms_against_torch_recursion(name):
    """docs/SCHEDULES.md's bound: a C schedule, which a C user attaches with
    optim_group_set_schedule, is torch's lr to within 1e-12 of the lr plus
    1e-12 of the base over 1500 steps (torch's recursion rounds at every
    step; its cosine ratio form errs relative to base - eta_min)."""
    make, c = C_VS_TORCH[name]
    o = make_opt()
    s = make(o)
    for t in range(1501):
        for base, lr in zip((0.1, 0.03), s.get_last_lr()):
            assert abs(c.lr(base, t) - lr) <= 1e-12 * abs(lr) + 1e-12 * base, (t, base, c.lr(base, t), lr)
        o.step()
        s.step()


# ---- Hand edits ---------------------------------------------------------------------------


def test_hand_edits_carry_on_as_torch():
    """torch's chainable forms follow a hand edit of group['lr']; so do ours
    (bit for bit: test_lr_scheduler_stack.py edits every stacked pair); the
    closed-form schedulers write their value again, as torch's."""
    for make, edited in ((lambda m, o: m.ExponentialLR(o, 0.9), 0.9),
                         (lambda m, o: m.LambdaLR(o, lambda t: 0.9 ** t), 0.1 * 0.81)):
        ot, oo = make_opt(), make_opt()
        st, so = make(T, ot), make(L, oo)
        for o, s in ((ot, st), (oo, so)):
            o.step()
            s.step()
            o.param_groups[0]["lr"] = 1.0  # by hand
            o.step()
            s.step()
        assert so.get_last_lr() == st.get_last_lr()
        assert so.get_last_lr()[0] == pytest.approx(edited)


# ---- Errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("make,match", [
    # torch's own checks, with torch's messages
    (lambda o: L.ConstantLR(o, factor=1.5), "Constant multiplicative factor expected to be between 0 and 1"),
    (lambda o: L.LinearLR(o, start_factor=2.0), "Starting multiplicative factor expected to be between 0 and 1"),
    (lambda o: L.LinearLR(o, end_factor=-0.5), "Ending multiplicative factor expected to be between 0 and 1"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, 0), "Expected positive integer T_0, but got 0"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, 5, 0), "Expected integer T_mult >= 1, but got 0"),
    (lambda o: L.OneCycleLR(o, 0.1), "You must define either total_steps OR"),
    (lambda o: L.OneCycleLR(o, 0.1, total_steps=0), "Expected positive integer total_steps, but got 0"),
    (lambda o: L.OneCycleLR(o, 0.1, total_steps=100, pct_start=1.5), "Expected float between 0 and 1 pct_start"),
    (lambda o: L.OneCycleLR(o, 0.1, total_steps=100, anneal_strategy="exp"), "anneal_strategy must by one of"),
    (lambda o: L.OneCycleLR(o, [0.1], total_steps=100), "expected 2 values for max_lr, got 1"),
    (lambda o: L.CyclicLR(o, 0.1, 1.0, mode="square"), "mode is invalid and scale_fn is None"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 3), L.StepLR(o, 4)], [5, 6]), "number of milestones to be equal"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 3), L.StepLR(make_opt(), 4)], [5]), "same optimizer"),
    (lambda o: L.ChainedScheduler([L.StepLR(o, 3), L.StepLR(make_opt(), 4)]), "same optimizer"),
    (lambda o: L.LambdaLR(o, [lambda t: 1.0]), "Expected 2 lr_lambdas, but got 1"),
    # ours: what torch divides by (ZeroDivisionError at a later step), non-finite or negative values
    (lambda o: L.StepLR(o, 0), "StepLR: step_size = 0 must be a whole number >= 1"),
    (lambda o: L.StepLR(o, 2.5), "StepLR: step_size = 2.5 must be a whole number >= 1"),
    (lambda o: L.StepLR(o, 5, gamma=-1), "StepLR: gamma = -1 must be a finite number >= 0"),
    (lambda o: L.MultiStepLR(o, [5, -1]), "MultiStepLR: milestones\\[1\\] = -1 must be a whole number >= 0"),
    (lambda o: L.ConstantLR(o, factor=0.0), "ConstantLR: factor = 0.0 must be a finite number > 0"),
    (lambda o: L.LinearLR(o, start_factor=0), "LinearLR: start_factor = 0 must be a finite number > 0"),
    (lambda o: L.LinearLR(o, total_iters=-1), "LinearLR: total_iters = -1 must be a whole number >= 0"),
    (lambda o: L.ExponentialLR(o, float("nan")), "ExponentialLR: gamma = nan must be a finite number >= 0"),
    (lambda o: L.PolynomialLR(o, total_iters=0), "PolynomialLR: total_iters = 0 must be a whole number >= 1"),
    (lambda o: L.PolynomialLR(o, power=-2), "PolynomialLR: power = -2 must be a finite number >= 0"),
    (lambda o: L.CosineAnnealingLR(o, 0), "CosineAnnealingLR: T_max = 0 must be a finite number > 0"),
    (lambda o: L.CosineAnnealingLR(o, 10, eta_min=math.inf), "eta_min = inf must be a finite number >= 0"),
    (lambda o: L.OneCycleLR(o, 0.1, total_steps=10, div_factor=0), "OneCycleLR: div_factor = 0 must be a finite"),
    (lambda o: L.OneCycleLR(o, [0.1, -1.0], total_steps=10), "OneCycleLR: max_lr\\[1\\] = -1.0 must be a finite"),
    (lambda o: L.CyclicLR(o, 0.1, 1.0, step_size_up=0), "CyclicLR: step_size_up = 0 must be a finite number > 0"),
    (lambda o: L.CyclicLR(o, -0.1, 1.0), "CyclicLR: base_lr = -0.1 must be a finite number >= 0"),
    (lambda o: L.WarmupCosine(o, 20, 10), "WarmupCosine: total_steps = 10 must be >= warmup_steps = 20"),
    (lambda o: L.WarmupStableDecay(o, 1, -1, 1), "stable_steps = -1 must be >= 0"),
])
def test_argument_errors(make, match):
    o = make_opt()
    with pytest.raises(ValueError, match=match):
        make(o)


def test_errors_leave_the_optimizer_alone():
    o = make_opt()
    before = copy.deepcopy(o.param_groups)
    for bad in (lambda: L.StepLR(o, 0), lambda: L.OneCycleLR(o, 0.1, total_steps=10, pct_start=2.0),
                lambda: L.OneCycleLR(o, 0.1, total_steps=10, div_factor=-1.0),
                lambda: L.CyclicLR(o, 0.1, 1.0, step_size_up=-3), lambda: L.WarmupCosine(o, 5, 1)):
        with pytest.raises(ValueError):
            bad()
    assert [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in before]


def test_type_errors():
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        L.StepLR([], 3)
    o = make_opt()
    for plateau in (L.ReduceLROnPlateau(o), T.ReduceLROnPlateau(o)):
        with pytest.raises(TypeError, match="SequentialLR: schedulers\\[1\\] is a ReduceLROnPlateau, whose step "
                                            "takes a metric"):
            L.SequentialLR(o, [L.StepLR(o, 2), plateau], [3])
        with pytest.raises(TypeError, match="ChainedScheduler: schedulers\\[0\\] is a ReduceLROnPlateau"):
            L.ChainedScheduler([plateau])
    with pytest.raises(TypeError, match="schedulers\\[0\\] is a ChainedScheduler, which SequentialLR cannot "
                                        "restart"):
        L.SequentialLR(o, [L.ChainedScheduler([L.StepLR(o, 2)]), L.StepLR(o, 2)], [3])
    inner = L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(o, 3)], [4])
    with pytest.raises(TypeError, match="schedulers\\[1\\] is a SequentialLR, .*only schedulers\\[0\\] may"):
        L.SequentialLR(o, [L.StepLR(o, 2), inner], [3])
    with pytest.raises(ValueError, match="optimizer must support momentum"):
        L.OneCycleLR(torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]), 0.1, total_steps=10)
    # What torch accepts and computes, we accept and compute the same (test_lr_scheduler.py compares them).
    L.ConstantLR(make_opt(), 0.5, total_iters=0)
    L.LinearLR(make_opt(), 0.5, total_iters=0)
    L.CyclicLR(make_opt(), 0.01, 0.1, 2.5, 0.5)
    L.CosineAnnealingLR(make_opt(), 12.5)
    L.OneCycleLR(make_opt(), 0.1, total_steps=10, pct_start=1)


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
    """Our scheduler on torch.optim.SGD moves the parameters as torch's
    scheduler does: the same lrs, so the same parameter bits."""
    make, kw = WITH_OPTIM[name]
    pt, qt, lt = _train(torch.optim.SGD, T, make, TRAIN_STEPS, **kw)
    po, qo, lo = _train(torch.optim.SGD, L, make, TRAIN_STEPS, **kw)
    assert lo == lt  # the same Python floats
    assert torch.equal(po, pt) and torch.equal(qo, qt)


@pytest.mark.parametrize("name", sorted(WITH_OPTIM))
def test_drives_optim_torch_sgd(name):
    """Our scheduler on optim.torch.SGD (the C optimizer) against torch's
    scheduler on torch.optim.SGD: the same lrs reach the parameters (to the
    rule's own agreement with torch)."""
    make, kw = WITH_OPTIM[name]
    pt, qt, lt = _train(torch.optim.SGD, T, make, TRAIN_STEPS, **kw)
    po, qo, lo = _train(OptimSGD, L, make, TRAIN_STEPS, **kw)
    assert lo == lt  # the same Python floats
    assert torch.allclose(po, pt, rtol=1e-5, atol=1e-6) and torch.allclose(qo, qt, rtol=1e-5, atol=1e-6)


def test_one_cycle_betas_optim_torch_adam():
    """OneCycleLR cycles beta1 of optim.torch.Adam as of torch.optim.Adam."""
    make = lambda m, o: m.OneCycleLR(o, 0.01, total_steps=TRAIN_STEPS, three_phase=True)  # noqa: E731
    pt, qt, lt = _train(torch.optim.Adam, T, make, TRAIN_STEPS)
    po, qo, lo = _train(OptimAdam, L, make, TRAIN_STEPS)
    assert lo == lt  # the same Python floats
    assert torch.allclose(po, pt, rtol=1e-4, atol=1e-6) and torch.allclose(qo, qt, rtol=1e-4, atol=1e-6)
