"""Stacked schedulers against torch 1.13, bit for bit (issue 11, item 1).

Two or more schedulers stepped on one optimizer compose in torch: each
chainable scheduler rescales the lr the group holds, a closed-form one
overwrites it. Every ordered pair of the catalogue below (torch's fifteen
classes with settings that reach their interesting parts within the run),
random triples, ChainedScheduler and SequentialLR around them and nested, the
second scheduler created after some steps of the first, hand edits of the lr,
a param group added mid-run, and a resume from state_dicts mid-run: every
group's lr, momentum and betas and each scheduler's get_last_lr() and
last_epoch equal torch's (==, not a tolerance) after every step, on
torch.optim and optim.torch optimizers. Where torch raises, ours raises the
same exception class at the same point.
"""
import itertools
import pickle
import random
import warnings

import pytest
import torch

import optim.torch as optim_torch
import optim.torch.lr_scheduler as L
from lr_harness import Mismatch, check, groups_state, make_opt, negative_lr, run_side_by_side, step_opt

STEPS = 160


def _decay(t):
    return 1.0 / (1.0 + 0.05 * t)


def _every_third(t):
    return 0.99 if t % 3 else 1.0


# name -> factory(module, optimizer); lambdas inside are module-level functions so that states pickle.
CATALOGUE = {
    "lambda": lambda m, o: m.LambdaLR(o, _decay),
    "multiplicative": lambda m, o: m.MultiplicativeLR(o, _every_third),
    "step": lambda m, o: m.StepLR(o, 7, 0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, [10, 25, 25, 60], 0.3),
    "constant": lambda m, o: m.ConstantLR(o, 0.5, 20),
    "linear_warmup": lambda m, o: m.LinearLR(o, 0.1, 1.0, 30),
    "linear_decay": lambda m, o: m.LinearLR(o, 1.0, 0.2, 80),
    "exponential": lambda m, o: m.ExponentialLR(o, 0.98),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, 40),
    "cosine_eta": lambda m, o: m.CosineAnnealingLR(o, 70, 1e-3),
    "polynomial": lambda m, o: m.PolynomialLR(o, 90, 2.0),
    "restarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, 10, 2, 1e-4),
    "cyclic": lambda m, o: m.CyclicLR(o, 0.01, 0.1, 15, 5),
    "one_cycle": lambda m, o: m.OneCycleLR(o, [0.1, 0.05], total_steps=STEPS + 1, three_phase=True,
                                           anneal_strategy="linear"),
    # Steps past its end (torch raises at step 51). Cosine: the linear anneal goes below 0 at step 50,
    # which optim.torch's optimizers refuse at their next step (torch.optim's take it).
    "one_cycle_short": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=50),
}
NAMES = sorted(CATALOGUE)


def stack(*names):
    return lambda m, o: [CATALOGUE[n](m, o) for n in names]


def chained(*names):
    return lambda m, o: [m.ChainedScheduler([CATALOGUE[n](m, o) for n in names])]


def sequential(names, milestones, outer=()):
    """SequentialLR of `names`, then the schedulers `outer` stacked after it."""
    def recipe(m, o):
        seq = m.SequentialLR(o, [CATALOGUE[n](m, o) for n in names], milestones)
        return [seq] + [CATALOGUE[n](m, o) for n in outer]
    return recipe


def test_the_issue_case():
    """LinearLR warm-up and CosineAnnealingLR, the most common recipe: torch's
    0.01, 0.028, 0.046, ... (optim.torch's last one used to win: 0.1, 0.09998, ...)."""
    def recipe(m, o):
        return [m.LinearLR(o, 0.1, 1.0, 5), m.CosineAnnealingLR(o, 10000)]
    (ot, st), (oo, so) = run_side_by_side(recipe, 0, "plain", lrs=(0.1,))
    lrs = [oo.param_groups[0]["lr"]]
    for k in range(1, 3):
        step_opt(oo, k)
        for s in so:
            s.step()
        lrs.append(oo.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01, 0.028, 0.046], rel=1e-6)
    run_side_by_side(recipe, 300, "plain", lrs=(0.1,))


@pytest.mark.parametrize("first", NAMES)
def test_pairs(first):
    """Every ordered pair (this scheduler, then each of the catalogue), with a
    hand edit of both groups' lr before step 150."""
    def edit(m, o, steppers):
        o.param_groups[0]["lr"] *= 3.0
        o.param_groups[1]["lr"] = 0.05
    for second in NAMES:
        run_side_by_side(stack(first, second), STEPS, events={150: edit}, label="%s + %s" % (first, second))


@pytest.mark.parametrize("first", NAMES)
def test_pairs_created_later(first):
    """The second scheduler created after 37 steps of the first (it takes the
    groups' initial_lr as its base and rescales whatever lr they hold)."""
    for second in NAMES:
        run_side_by_side(stack(first), 120, events={38: lambda m, o, s, n=second: [CATALOGUE[n](m, o)]},
                         label="%s, then %s at step 37" % (first, second))


def test_pairs_chained():
    """ChainedScheduler([a, b]) for every ordered pair."""
    for a, b in itertools.product(NAMES, NAMES):
        run_side_by_side(chained(a, b), 80, label="Chained(%s, %s)" % (a, b))


def test_random_triples(seed):
    """Random stacked triples (seeded: see the printed seed), each also as a
    ChainedScheduler."""
    rng = random.Random(seed)
    triples = rng.sample(list(itertools.product(NAMES, NAMES, NAMES)), 60)
    for i, names in enumerate(triples):
        make = chained(*names) if i % 2 else stack(*names)
        run_side_by_side(make, 150, label="%s %s" % ("Chained" if i % 2 else "stack", names))


def test_sequential_pairs():
    """SequentialLR([a, b], milestones=[40]) for every ordered pair, with a
    third scheduler stacked after it (a chainable or a closed-form one)."""
    outers = ["exponential", "cosine_eta", "lambda", "step"]
    for k, (a, b) in enumerate(itertools.product(NAMES, NAMES)):
        run_side_by_side(sequential([a, b], [40], outer=(outers[k % len(outers)],)), 80,
                         label="Sequential(%s, %s) + %s" % (a, b, outers[k % len(outers)]))


class Fed(object):
    """A ReduceLROnPlateau fed a fixed sequence of metrics by step()."""

    def __init__(self, plateau, metrics):
        self.plateau, self.metrics, self.k = plateau, metrics, 0

    def step(self):
        self.plateau.step(self.metrics[self.k])
        self.k += 1

    def get_last_lr(self):  # torch 1.13's has _last_lr from its first step on
        return self.plateau._last_lr if self.k else None

    @property
    def last_epoch(self):
        return self.plateau.last_epoch


def test_pairs_with_plateau(seed):
    """ReduceLROnPlateau (fed a seeded random walk of metrics) stacked after
    and before every scheduler of the catalogue: it multiplies the lr the
    group holds, as torch's."""
    rng = random.Random(seed)
    metrics = [1.0]
    for _ in range(200):
        metrics.append(metrics[-1] + rng.gauss(0, 0.05) - 0.002)
    for name in NAMES:
        for after in (True, False):
            def recipe(m, o, name=name, after=after):
                plateau = Fed(m.ReduceLROnPlateau(o, patience=3, factor=0.5, cooldown=2, min_lr=1e-4), metrics)
                other = CATALOGUE[name](m, o)
                return [other, plateau] if after else [plateau, other]
            run_side_by_side(recipe, 150, label="%s %s plateau" % (name, "then" if after else "after"))


@pytest.mark.parametrize("recipe,label", [
    (lambda m, o: [m.ChainedScheduler([m.SequentialLR(o, [m.LinearLR(o, 0.1, 1.0, 20), m.CosineAnnealingLR(o, 150)],
                                                      [20]), m.MultiStepLR(o, [60, 90], 0.5)])],
     "Chained(Sequential(warm-up, cosine), MultiStep)"),
    (lambda m, o: [m.SequentialLR(o, [m.SequentialLR(o, [m.ConstantLR(o, 0.2, 5), m.ExponentialLR(o, 0.97)], [5]),
                                      m.CosineAnnealingLR(o, 60, 1e-4), m.StepLR(o, 9, 0.8)], [50, 120])],
     "Sequential(Sequential(Constant, Exponential), Cosine, Step)"),
    (lambda m, o: [m.ChainedScheduler([m.ChainedScheduler([m.StepLR(o, 11, 0.7), m.LinearLR(o, 0.5, 1.0, 40)]),
                                       m.CosineAnnealingWarmRestarts(o, 13)])],
     "Chained(Chained(Step, Linear), Restarts)"),
    (lambda m, o: [m.SequentialLR(o, [m.LinearLR(o, 0.01, 1.0, 30), m.CyclicLR(o, 0.01, 0.1, 10),
                                      m.PolynomialLR(o, 50, 0.5)], [30, 80]), m.ExponentialLR(o, 0.995)],
     "Sequential(Linear, Cyclic, Polynomial) + Exponential"),
])
def test_nesting(recipe, label):
    run_side_by_side(recipe, 200, label=label)


@pytest.mark.parametrize("first", ["step", "cosine", "cosine_eta", "linear_warmup", "cyclic", "one_cycle",
                                   "lambda", "restarts", "multiplicative"])
def test_param_group_added_mid_run(first):
    """A param group added at step 60 (progressive unfreezing): torch's
    schedulers keep their base_lrs; each class's own loop (over the groups or
    over base_lrs) decides whether the new group's lr is touched, or raises
    (OneCycleLR: the group has no 'initial_lr'). Ours the same."""
    def add(m, o, steppers):
        o.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "lr": 0.02})
    for second in ("exponential", "cosine", "step"):
        run_side_by_side(stack(first, second), 120, events={60: add}, label="%s + %s, group added" % (first, second))


def _resume(recipe, k, steps, kind="sgd", module=torch.optim, label=""):
    """k steps, then the state_dicts (through pickle) loaded into a freshly
    built optimizer and schedulers, then the rest: against torch run
    straight through."""
    ot, oo = make_opt(kind), make_opt(kind, module=module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            st = recipe(torch.optim.lr_scheduler, ot)
        except Exception:  # noqa: BLE001 -- torch cannot build it: covered by the side-by-side tests
            return
        so = recipe(L, oo)
        for j in range(1, k + 1):
            step_opt(oo, j)
            for s in so:
                s.step()
        saved = pickle.loads(pickle.dumps(([s.state_dict() for s in so], oo.state_dict())))
        oo = make_opt(kind, module=module)
        so = recipe(L, oo)
        oo.load_state_dict(saved[1])
        for s, sd in zip(so, saved[0]):
            s.load_state_dict(sd)
        for j in range(1, k + 1):
            step_opt(ot, j)
            for s in st:
                s.step()
        check(ot, st, oo, so, "%s: resumed at step %d" % (label, k))
        for j in range(k + 1, steps + 1):
            step_opt(ot, j)
            step_opt(oo, j)
            try:
                for s in st:
                    s.step()
            except Exception as exc:  # noqa: BLE001 -- past OneCycleLR's end: ours must raise alike
                with pytest.raises(type(exc)):
                    for s in so:
                        s.step()
                return
            for s in so:
                s.step()
            check(ot, st, oo, so, "%s: step %d after resuming at %d" % (label, j, k))


@pytest.mark.parametrize("first", NAMES)
def test_resume_mid_run(first):
    """Every ordered pair, stopped at step 45, saved (state_dicts through
    pickle), rebuilt, loaded and run on: torch's values at every step."""
    for second in NAMES:
        _resume(stack(first, second), 45, 110, label="%s + %s" % (first, second))


def test_resume_nested():
    _resume(lambda m, o: [m.ChainedScheduler([m.SequentialLR(o, [m.LinearLR(o, 0.1, 1.0, 20),
                                                                 m.CosineAnnealingLR(o, 150)], [20]),
                                              m.MultiStepLR(o, [60, 90], 0.5)])], 30, 120, label="nested")
    _resume(sequential(["cyclic", "exponential"], [40], outer=("cosine",)), 55, 120, label="sequential")


def test_torch_state_dict_loads_into_ours():
    """A torch scheduler's state_dict (pickled) loads into ours mid-run, and
    ours into torch's: both go on with torch's values."""
    for a, b in itertools.product(["linear_warmup", "cosine_eta", "one_cycle", "cyclic", "restarts", "step"],
                                  ["cosine", "multistep"]):
        recipe = stack(a, b)
        ot, oo = make_opt(), make_opt()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = recipe(torch.optim.lr_scheduler, ot)
            for j in range(1, 31):
                step_opt(ot, j)
                for s in st:
                    s.step()
            so = recipe(L, oo)
            oo.load_state_dict(ot.state_dict())
            for s_o, s_t in zip(so, st):
                sd = s_t.state_dict()
                if a == "cyclic" and "_scale_fn_ref" in sd:  # torch 1.13's WeakMethod does not pickle
                    sd = dict(sd)
                else:
                    sd = pickle.loads(pickle.dumps(sd))
                s_o.load_state_dict(sd)
            for j in range(31, 80):
                step_opt(ot, j)
                step_opt(oo, j)
                for s in st:
                    s.step()
                for s in so:
                    s.step()
                check(ot, st, oo, so, "%s + %s loaded from torch, step %d" % (a, b, j))


# ---- optim.torch's optimizers -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_pairs_on_optim_torch(kind):
    """Ours on optim.torch's SGD / Adam against torch's on torch.optim's: every
    ordered pair (on Adam: every pair with a OneCycleLR, which cycles beta1), the same lrs, momenta and betas, bit for bit, after every
    step (the optimizer reads the group's lr and leaves it as the scheduler
    wrote it). A run stops where the lr goes below 0 (a cosine with eta_min
    stacked after a decay takes the lr below eta_min, and its affine step
    then below 0): torch.optim's optimizers step with a negative lr,
    optim.torch's refuse it (an optimizer matter, not the schedulers')."""
    pairs = list(itertools.product(NAMES, NAMES))
    if kind == "adam":  # the betas: every pair with a OneCycleLR (torch 1.13 has no CyclicLR on Adam)
        pairs = [(a, b) for a, b in pairs if "cyclic" not in (a, b) and {a, b} & {"one_cycle", "one_cycle_short"}]
    for a, b in pairs:
        run_side_by_side(stack(a, b), 80, kind, ours_module=optim_torch, label="%s + %s on optim.torch.%s" % (
            a, b, kind), stop_if=negative_lr)


@pytest.mark.parametrize("module", [torch.optim, optim_torch])
def test_cyclic_beta1(module):
    """Beyond torch 1.13 (which refuses Adam with cycle_momentum), as torch >=
    2.0: CyclicLR cycles Adam's beta1 exactly as torch 1.13's cycles SGD's
    momentum (beta2 untouched), also stacked."""
    def recipe(m, o):
        return [m.CyclicLR(o, [0.01, 0.02], 0.1, 15, 5, mode="triangular2", base_momentum=0.85, max_momentum=0.95),
                m.ExponentialLR(o, 0.99)]
    ot, oa = make_opt("sgd"), make_opt("adam", module=module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st, sa = recipe(torch.optim.lr_scheduler, ot), recipe(L, oa)
        for k in range(150):
            assert [(g["lr"], g["momentum"]) for g in ot.param_groups] == \
                [(g["lr"], g["betas"][0]) for g in oa.param_groups], k
            assert all(g["betas"][1] == 0.999 for g in oa.param_groups)
            step_opt(ot, k)
            step_opt(oa, k)
            for s in st + sa:
                s.step()


def test_resume_on_optim_torch():
    for a, b in [("linear_warmup", "cosine"), ("one_cycle", "step"), ("cyclic", "exponential")]:
        _resume(stack(a, b), 40, 100, module=optim_torch, label="%s + %s on optim.torch" % (a, b))


def test_warmup_cosine_training_matches_torch():
    """nanoGPT's recipe as two stacked schedulers on AdamW parameter groups:
    the same lrs reach the parameters (values: the rule's own agreement with
    torch, to ~1e-6)."""
    torch.manual_seed(0)
    init = [torch.randn(32, 16), torch.randn(16)]
    out = {}
    for side, module, sched in (("torch", torch.optim, torch.optim.lr_scheduler),
                                ("ours", optim_torch, L)):
        w, b = (torch.nn.Parameter(t.clone()) for t in init)
        opt = module.AdamW([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}], lr=6e-4,
                           betas=(0.9, 0.95))
        warm = sched.LinearLR(opt, 0.01, 1.0, 40)
        cos = sched.CosineAnnealingLR(opt, 300, 6e-5)
        g = torch.Generator().manual_seed(1)
        lrs = []
        for _ in range(300):
            w.grad = torch.randn(32, 16, generator=g)
            b.grad = torch.randn(16, generator=g)
            opt.step()
            warm.step()
            cos.step()
            lrs.append([grp["lr"] for grp in opt.param_groups])
        out[side] = (lrs, w.detach().clone(), b.detach().clone())
    assert out["ours"][0] == out["torch"][0]
    for x, y in zip(out["ours"][1:], out["torch"][1:]):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)


def test_mixed_modules_share_an_optimizer():
    """torch's scheduler and ours stacked on one optimizer (both rescale the
    group's lr, and share torch's optimizer.step counter)."""
    o1, o2 = make_opt(), make_opt()
    t1 = [torch.optim.lr_scheduler.LinearLR(o1, 0.1, 1.0, 20), torch.optim.lr_scheduler.CosineAnnealingLR(o1, 90)]
    from optim.torch import lr_scheduler as ours
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler before optimizer" warning: the counter is shared
        t2 = [ours.LinearLR(o2, 0.1, 1.0, 20), torch.optim.lr_scheduler.CosineAnnealingLR(o2, 90)]
        for j in range(1, 120):
            step_opt(o1, j)
            step_opt(o2, j)
            for s in t1 + t2:
                s.step()
            assert groups_state(o1) == groups_state(o2)


def test_mismatch_is_detected():
    """The harness itself: a scheduler that is not torch's is caught, and a
    failure on one side only."""
    def recipe(m, o):
        return [m.StepLR(o, 3, 0.5)] if m is torch.optim.lr_scheduler else [m.StepLR(o, 3, 0.5000001)]
    with pytest.raises(Mismatch, match="step 3"):
        run_side_by_side(recipe, 5)

    def fails(m, o):
        return [m.LambdaLR(o, lambda t: 1.0 / (4 - t) if m is L else 1.0 / (4 - min(t, 3)))]
    with pytest.raises(Mismatch, match="step 4: torch None, ours ZeroDivisionError"):
        run_side_by_side(fails, 5)
