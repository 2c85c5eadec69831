"""optim.torch.lr_scheduler against torch.optim.lr_scheduler, one scheduler at
a time, step by step, bit for bit.

Each case builds the same scheduler twice, on two identical torch.optim.SGD
(or Adam) optimizers with two parameter groups of different lrs: torch's, and
ours. After construction and after each of up to 1200 steps, get_last_lr(),
last_epoch, every group's lr and, where a scheduler cycles it, the momentum /
beta1 must be the same Python floats (==): ours compute torch's expressions in
torch's order (lr_harness.run_side_by_side). Stacked schedulers are in
test_lr_scheduler_stack.py, custom subclasses in test_lr_scheduler_custom.py.
"""
import math
import random
import warnings

import pytest
import torch.optim.lr_scheduler as T

import optim.torch.lr_scheduler as L
from lr_harness import LRS, make_opt, run_side_by_side

STEPS = 1200


def run_pair(make, steps=STEPS, opt="sgd", lrs=LRS):
    """Build with torch's and our module; step both `steps` times, comparing
    after construction and after every step. Returns both (optimizer,
    scheduler) pairs."""
    (ot, (st,)), (oo, (so,)) = run_side_by_side(lambda m, o: [make(m, o)], steps, opt, lrs=lrs,
                                                label=type(make(L, make_opt(opt, lrs))).__name__)
    return (ot, st), (oo, so)


def assert_same(ot, st, oo, so, k):
    assert st.get_last_lr() == so.get_last_lr(), k
    for gt, go in zip(ot.param_groups, oo.param_groups):
        assert (gt["lr"], gt.get("momentum"), gt.get("betas")) == (go["lr"], go.get("momentum"), go.get("betas")), k


# name -> (factory over a module of schedulers, optimizer kind, steps)
CASES = {
    "step": (lambda m, o: m.StepLR(o, step_size=7, gamma=0.5), "sgd", STEPS),
    "step_slow": (lambda m, o: m.StepLR(o, 1, gamma=0.995), "sgd", STEPS),
    "step_gamma0": (lambda m, o: m.StepLR(o, 100, gamma=0.0), "sgd", 300),
    "multistep": (lambda m, o: m.MultiStepLR(o, milestones=[10, 100, 100, 500], gamma=0.3), "sgd", STEPS),
    "multistep_unsorted_0": (lambda m, o: m.MultiStepLR(o, [900, 0, 30]), "sgd", STEPS),
    "constant": (lambda m, o: m.ConstantLR(o, factor=0.3, total_iters=50), "sgd", STEPS),
    "constant_default": (lambda m, o: m.ConstantLR(o), "sgd", STEPS),
    "constant_1": (lambda m, o: m.ConstantLR(o, factor=1.0 / 7, total_iters=1), "sgd", 100),
    "linear": (lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=700), "sgd", STEPS),
    "linear_down": (lambda m, o: m.LinearLR(o, 1.0, 0.05, 1000), "sgd", STEPS),
    "linear_default": (lambda m, o: m.LinearLR(o), "sgd", 200),
    "exponential": (lambda m, o: m.ExponentialLR(o, gamma=0.995), "sgd", STEPS),
    "exponential_09": (lambda m, o: m.ExponentialLR(o, gamma=0.9), "sgd", STEPS),
    "exponential_0999": (lambda m, o: m.ExponentialLR(o, gamma=0.999), "sgd", STEPS),
    "exponential_1": (lambda m, o: m.ExponentialLR(o, gamma=1.0), "sgd", STEPS),
    "polynomial": (lambda m, o: m.PolynomialLR(o, total_iters=1000, power=2.0), "sgd", STEPS),
    "polynomial_sqrt": (lambda m, o: m.PolynomialLR(o, total_iters=700, power=0.5), "sgd", STEPS),
    "polynomial_default": (lambda m, o: m.PolynomialLR(o), "sgd", 100),
    "cosine": (lambda m, o: m.CosineAnnealingLR(o, T_max=100), "sgd", STEPS),
    "cosine_eta": (lambda m, o: m.CosineAnnealingLR(o, T_max=300, eta_min=1e-3), "sgd", STEPS),
    "cosine_long": (lambda m, o: m.CosineAnnealingLR(o, T_max=1000, eta_min=1e-4), "sgd", STEPS),
    "cosine_1": (lambda m, o: m.CosineAnnealingLR(o, T_max=1), "sgd", 50),
    "restarts": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=37), "sgd", STEPS),
    "restarts_mult": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-4), "sgd", STEPS),
    "restarts_mult3": (lambda m, o: m.CosineAnnealingWarmRestarts(o, 1, 3, 0.001), "sgd", STEPS),
    "one_cycle": (lambda m, o: m.OneCycleLR(o, max_lr=[0.1, 0.05], total_steps=STEPS + 1), "sgd", STEPS),
    "one_cycle_adam": (lambda m, o: m.OneCycleLR(o, 0.01, total_steps=STEPS + 1, anneal_strategy="linear"), "adam",
                       STEPS),
    "one_cycle_3": (lambda m, o: m.OneCycleLR(o, 0.1, total_steps=STEPS + 1, pct_start=0.25, three_phase=True,
                                              div_factor=10., final_div_factor=100., base_momentum=[0.8, 0.7],
                                              max_momentum=0.99), "sgd", STEPS),
    # total_steps = STEPS: the last comparison is at step total_steps, the last phase carried on past its end.
    "one_cycle_3_linear": (lambda m, o: m.OneCycleLR(o, [0.1, 0.05], total_steps=STEPS, pct_start=0.3,
                                                     anneal_strategy="linear", three_phase=True), "sgd", STEPS),
    "one_cycle_3_linear_adam": (lambda m, o: m.OneCycleLR(o, 0.01, total_steps=STEPS - 7, pct_start=0.2,
                                                          anneal_strategy="linear", three_phase=True,
                                                          div_factor=5., final_div_factor=50.), "adam", STEPS - 7),
    "one_cycle_end_cos": (lambda m, o: m.OneCycleLR(o, 0.1, total_steps=STEPS, pct_start=0.4), "sgd", STEPS),
    "one_cycle_epochs": (lambda m, o: m.OneCycleLR(o, 1.0, epochs=12, steps_per_epoch=100, cycle_momentum=False),
                         "plain", 1199),
    "cyclic": (lambda m, o: m.CyclicLR(o, base_lr=0.001, max_lr=0.1, step_size_up=50), "sgd", STEPS),
    "cyclic_tri2": (lambda m, o: m.CyclicLR(o, 0.001, [0.1, 0.2], 33, 70, mode="triangular2",
                                            base_momentum=0.85, max_momentum=0.95), "sgd", STEPS),
    "cyclic_exp": (lambda m, o: m.CyclicLR(o, [0.001, 0.002], 0.1, 20, mode="exp_range", gamma=0.999), "sgd",
                   STEPS),
    "cyclic_down": (lambda m, o: m.CyclicLR(o, 0.1, 0.01, 13, cycle_momentum=False), "plain", STEPS),
    # step_size_down=0: torch's sawtooth (up over step_size_up steps, then straight back to base_lr).
    "cyclic_sawtooth": (lambda m, o: m.CyclicLR(o, 0.0, 1.0, step_size_up=4, step_size_down=0,
                                                cycle_momentum=False), "plain", STEPS),
    "cyclic_sawtooth_momentum": (lambda m, o: m.CyclicLR(o, 0.001, 0.1, 37, 0), "sgd", STEPS),
    "cyclic_tri2_default_down": (lambda m, o: m.CyclicLR(o, 0.001, 0.1, 40, mode="triangular2"), "sgd", STEPS),
    "cyclic_tri2_sawtooth": (lambda m, o: m.CyclicLR(o, [0.002, 0.001], 0.1, 25, 0, mode="triangular2"), "sgd",
                             STEPS),
    "cyclic_tri2_long_down": (lambda m, o: m.CyclicLR(o, 0.001, 0.01, 10, 45, mode="triangular2",
                                                      base_momentum=0.8, max_momentum=0.95), "sgd", STEPS),
    "cyclic_exp_long_down": (lambda m, o: m.CyclicLR(o, 0.001, 0.1, 15, 40, mode="exp_range", gamma=0.9995),
                             "sgd", STEPS),
    "cyclic_exp_sawtooth": (lambda m, o: m.CyclicLR(o, 0.01, [0.1, 0.3], 30, 0, mode="exp_range", gamma=0.998),
                            "sgd", STEPS),
    "cyclic_fractional": (lambda m, o: m.CyclicLR(o, 0.001, 0.1, 2.5, 7.25), "sgd", STEPS),
    "cyclic_scale_fn": (lambda m, o: m.CyclicLR(o, 0.001, 0.1, 25, scale_fn=lambda x: 1 / (1 + x),
                                                scale_mode="iterations"), "sgd", STEPS),
    "cyclic_scale_fn_cycle": (lambda m, o: m.CyclicLR(o, 0.001, 0.1, 25, 10, scale_fn=lambda x: 0.9 ** x),
                              "sgd", STEPS),
    "lambda": (lambda m, o: m.LambdaLR(o, lambda t: 1.0 / (1 + 0.01 * t)), "sgd", STEPS),
    "lambda_per_group": (lambda m, o: m.LambdaLR(o, [lambda t: 0.99 ** t, lambda t: t // 30 + 1]), "sgd", 300),
    "multiplicative": (lambda m, o: m.MultiplicativeLR(o, lambda t: 0.999 if t % 2 else 1.0), "sgd", STEPS),
    # SequentialLR: warm-up then cosine (the common case), torch's doc example, three parts.
    "seq_warmup_cosine": (lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, 0.01, 1.0, 100), m.CosineAnnealingLR(o, 1000, 1e-5)], milestones=[100]), "sgd", STEPS),
    "seq_doc": (lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.1, total_iters=2), m.ExponentialLR(o, gamma=0.9)], milestones=[2]), "sgd", 300),
    "seq_three": (lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, 0.99), m.StepLR(o, 50, 0.5), m.CosineAnnealingWarmRestarts(o, 40, 2)],
        milestones=[150, 700]), "sgd", STEPS),
    "seq_lambda": (lambda m, o: m.SequentialLR(
        o, [m.LambdaLR(o, lambda t: (t + 1) / 50), m.PolynomialLR(o, 900, 1.5)], milestones=[50]), "sgd", STEPS),
    # ChainedScheduler: products of chainable schedulers (torch's doc example first).
    "chain_doc": (lambda m, o: m.ChainedScheduler([m.ConstantLR(o, 0.1, 2), m.ExponentialLR(o, 0.9)]), "sgd", 200),
    "chain_three": (lambda m, o: m.ChainedScheduler(
        [m.StepLR(o, 100, 0.5), m.LinearLR(o, 0.2, 1.0, 300), m.MultiStepLR(o, [400, 800], 0.3)]), "sgd", STEPS),
    "chain_multiplicative": (lambda m, o: m.ChainedScheduler(
        [m.MultiplicativeLR(o, lambda t: 0.999), m.StepLR(o, 100, 0.5), m.PolynomialLR(o, 1100, 0.7)]), "sgd", STEPS),
    "chain_cosine": (lambda m, o: m.ChainedScheduler(
        [m.ExponentialLR(o, 0.999), m.CosineAnnealingLR(o, 2000)]), "sgd", STEPS),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch(name):
    make, opt, steps = CASES[name]
    run_pair(make, steps, opt)


@pytest.mark.parametrize("anneal,three,opt", [("linear", False, "sgd"), ("cos", False, "adam"),
                                              ("linear", True, "adam"), ("cos", True, "sgd")])
def test_one_cycle_end(anneal, three, opt):
    """Step total_steps is torch's to the bit, lr and momentum (or beta1): the
    last phase carried on past its end (the linear anneal below 0, the
    momentum above max_momentum); one more step raises, as torch's."""
    total = 100
    (ot, st), (oo, so) = run_pair(lambda m, o: m.OneCycleLR(o, 0.1, total_steps=total, anneal_strategy=anneal,
                                                            three_phase=three), total, opt)
    key = "betas" if opt == "adam" else "momentum"
    assert so.get_last_lr() == st.get_last_lr()
    assert [g[key] for g in oo.param_groups] == [g[key] for g in ot.param_groups]
    if anneal == "linear":
        assert st.get_last_lr()[0] < 0  # torch's linear extrapolation
    if not three:  # (three_phase's last phase keeps max_momentum)
        m = ot.param_groups[0][key]
        assert (m[0] if opt == "adam" else m) != 0.95  # the momentum carried on too
    for s in (st, so):
        with pytest.raises(ValueError, match="Tried to step 102 times. The specified number of total steps is 100"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s.step()


def test_one_cycle_empty_last_phase():
    """pct_start=1: the last phase has no length, and torch divides by zero at
    step total_steps; ours keeps the lr and momentum of the step before."""
    (ot, st), (oo, so) = run_pair(lambda m, o: m.OneCycleLR(o, 0.1, total_steps=50, pct_start=1.0), 49)
    before = so.get_last_lr(), [g["momentum"] for g in oo.param_groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ZeroDivisionError):
            st.step()
        so.step()
    assert (so.get_last_lr(), [g["momentum"] for g in oo.param_groups]) == before


def test_cyclic_sawtooth_values():
    """The audit's case: step_size_down=0 is torch's sawtooth, not a triangle."""
    want = [0.0, 0.25, 0.5, 0.75] * 3
    for mod in (T, L):
        o = make_opt("plain")
        s = mod.CyclicLR(o, 0.0, 1.0, step_size_up=4, step_size_down=0, cycle_momentum=False)
        got = [s.get_last_lr()[0]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(len(want) - 1):
                o.step()
                s.step()
                got.append(s.get_last_lr()[0])
        assert got == want, mod.__name__


def test_cyclic_step_sizes():
    """Step sizes as torch's float(step_size): whole floats, fractional ones
    (the peak between two steps) and a sawtooth; arguments torch would divide
    by zero with (or that are negative) are refused, naming them."""
    run_pair(lambda m, o: m.CyclicLR(o, 0.001, 0.1, 20.0, 10.0), 200)
    run_pair(lambda m, o: m.CyclicLR(o, 0.001, 0.1, 0.5, 0, cycle_momentum=False), 50)
    for kw, match in ((dict(step_size_up=0), "CyclicLR: step_size_up = 0 must be a finite number > 0"),
                      (dict(step_size_down=-1), "CyclicLR: step_size_down = -1 must be a finite number >= 0"),
                      (dict(step_size_up=math.inf), "step_size_up = inf must be a finite number")):
        with pytest.raises(ValueError, match=match):
            L.CyclicLR(make_opt(), 0.001, 0.1, **kw)


def test_restarts_fractional_epochs():
    """torch's documented use: scheduler.step(epoch + i / iters) inside the
    batch loop, then plain step() calls afterwards; then whole epochs."""
    ot, oo = make_opt(), make_opt()
    st = T.CosineAnnealingWarmRestarts(ot, T_0=3, T_mult=2, eta_min=1e-4)
    so = L.CosineAnnealingWarmRestarts(oo, T_0=3, T_mult=2, eta_min=1e-4)
    iters = 7
    k = 0
    for epoch in range(12):
        for i in range(iters):
            st.step(epoch + i / iters)
            so.step(epoch + i / iters)
            k += 1
            assert_same(ot, st, oo, so, k)
            assert (so.T_cur, so.T_i, so.last_epoch) == (st.T_cur, st.T_i, st.last_epoch)
    for _ in range(20):
        st.step()
        so.step()
        assert_same(ot, st, oo, so, k)
    for epoch in (5, 9, 21, 22, 45, 46, 93, 94, 400):
        st.step(epoch)
        so.step(epoch)
        assert_same(ot, st, oo, so, epoch)
        assert (so.T_cur, so.T_i) == (st.T_cur, st.T_i)


def test_restarts_exact_restart():
    """step(epoch) with T_mult > 1: torch's math.log puts some exact restarts
    in the cycle before (T_0 = 1, T_mult = 3: epoch 121 = 1 + 3 + 9 + 27 + 81
    gets T_cur = T_i = 81, so eta_min); ours finds the cycle exactly (T_cur =
    0: the initial lr). Every other epoch, whole or fractional, is torch's to
    the bit."""
    ot, oo = make_opt(), make_opt()
    st = T.CosineAnnealingWarmRestarts(ot, T_0=1, T_mult=3, eta_min=1e-4)
    so = L.CosineAnnealingWarmRestarts(oo, T_0=1, T_mult=3, eta_min=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.step(121)
        so.step(121)
        assert (st.T_cur, st.T_i) == (81.0, 81) and st.get_last_lr() == [1e-4, 1e-4]
        assert (so.T_cur, so.T_i) == (0.0, 243) and so.get_last_lr() == list(LRS)
        for epoch in [e for e in range(400) if e != 121] + [e + 0.37 for e in range(400)]:
            st.step(epoch)
            so.step(epoch)
            assert_same(ot, st, oo, so, epoch)
            assert (so.T_cur, so.T_i) == (st.T_cur, st.T_i), epoch


JUMPERS = [
    lambda m, o: m.StepLR(o, 10, 0.5), lambda m, o: m.ExponentialLR(o, 0.97),
    lambda m, o: m.CosineAnnealingLR(o, 50, 1e-3), lambda m, o: m.MultiStepLR(o, [3, 30, 30], 0.2),
    lambda m, o: m.LinearLR(o, 0.2, 0.9, 40), lambda m, o: m.PolynomialLR(o, 60, 3.0),
    lambda m, o: m.ConstantLR(o, 0.25, 33), lambda m, o: m.LambdaLR(o, lambda t: 0.9 ** t),
    lambda m, o: m.MultiplicativeLR(o, lambda t: 0.9), lambda m, o: m.CyclicLR(o, 0.01, 0.1, 7),
    lambda m, o: m.OneCycleLR(o, 0.1, total_steps=2000),
]


@pytest.mark.parametrize("make", JUMPERS)
def test_step_with_epoch(make):
    """The deprecated step(epoch): torch's closed form where the class has one
    (get_lr otherwise), with torch's warning, then step() goes on chainably
    from there; the same floats as torch."""
    ot, oo = make_opt(), make_opt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st, so = make(T, ot), make(L, oo)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for epoch in (5, 80, 17, 0, 1000, 42, 33, 34):
            st.step(epoch)
            so.step(epoch)
            assert_same(ot, st, oo, so, epoch)
            for _ in range(3):
                st.step()
                so.step()
                assert_same(ot, st, oo, so, epoch)
    assert any("epoch parameter in `scheduler.step()` was not necessary" in str(w.message) for w in rec)


def test_reduce_on_plateau(seed):
    rng = random.Random(seed)  # a random walk of metrics (conftest prints the seed)
    settings = [dict(), dict(mode="max", factor=0.5, patience=3, threshold=0.01),
                dict(threshold_mode="abs", threshold=0.05, cooldown=4, patience=2, min_lr=[1e-3, 0.0]),
                dict(mode="max", threshold_mode="abs", patience=0, factor=0.9, eps=1e-3, min_lr=0.02)]
    for kw in settings:
        ot, oo = make_opt(), make_opt()
        st, so = T.ReduceLROnPlateau(ot, **kw), L.ReduceLROnPlateau(oo, **kw)
        metric = 1.0
        for k in range(1000):
            metric += rng.gauss(0, 0.05) - 0.001
            st.step(metric)
            so.step(metric)
            assert st._last_lr == so.get_last_lr(), (kw, k)  # torch 1.13 has no get_last_lr here
            assert [g["lr"] for g in ot.param_groups] == [g["lr"] for g in oo.param_groups]
            assert (st.num_bad_epochs, st.cooldown_counter, st.best) == (so.num_bad_epochs, so.cooldown_counter,
                                                                         so.best)
        sd = so.state_dict()
        so2 = L.ReduceLROnPlateau(make_opt(), **kw)
        so2.load_state_dict(sd)
        assert so2.best == so.best and so2.is_better(so.best - 1, so.best) == so.is_better(so.best - 1, so.best)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        L.ReduceLROnPlateau(make_opt(), factor=1.0)
    with pytest.raises(ValueError, match="mode avg is unknown"):
        L.ReduceLROnPlateau(make_opt(), mode="avg")


def test_verbose_prints_as_torch(capsys):
    ot, oo = make_opt(), make_opt()
    st = T.StepLR(ot, 2, verbose=True)
    ot.step()
    st.step()
    torch_out = capsys.readouterr().out
    so = L.StepLR(oo, 2, verbose=True)
    oo.step()
    so.step()
    ours = capsys.readouterr().out
    assert ours == torch_out and "Adjusting learning rate of group 1 to 3.0000e-02." in ours


def test_warns_when_stepped_before_optimizer():
    for mod in (T, L):
        o = make_opt()
        s = mod.StepLR(o, 2)
        with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
            s.step()
    # Both modules share torch's step counter wrapper on the same optimizer.
    o = make_opt()
    s1, s2 = T.StepLR(o, 2), L.ExponentialLR(o, 0.9)
    assert getattr(o.step, "_with_counter", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o.step()
        s1.step()
        s2.step()
