"""Draw the plots of docs/SCHEDULES.md: one PNG per schedule in docs/img/schedules/.

Every curve is evaluated by liboptim (optim._schedule.Schedule, i.e.
optim_schedule_lr) or, for the momentum panels, ReduceLROnPlateau and
ChainedScheduler, by optim.torch.lr_scheduler; nothing is drawn by hand.
Run from the checkout, with a built library:

    PYTHONPATH=python /usr/bin/python3 docs/tools/plot_schedules.py [--out docs/img/schedules]

(OPTIM_LIBRARY=path/to/liboptim.so picks a build; otherwise build*/liboptim.so.)
The PNGs carry no timestamp, so an unchanged schedule gives an unchanged file.
"""
import argparse
import os
import random
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optim._schedule import Schedule  # noqa: E402

BASE = 0.1  # the group's lr in every plot
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def curve(s, n, base=BASE):
    return list(range(n)), [s.lr(base, t) for t in range(n)]


def figure(title, n, ends=(), ylabel="lr", log=False, panels=1):
    fig, axes = plt.subplots(panels, 1, figsize=(9.5, 3.0 if panels == 1 else 4.6), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1]} if panels == 2 else None)
    axes = [axes] if panels == 1 else list(axes)
    axes[0].set_title(title, fontsize=11, loc="left")
    for ax in axes:
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_xlim(0, n - 1)
        for e in ends:
            ax.axvline(e, color="#888888", linestyle=":", linewidth=1)
    axes[0].set_ylabel(ylabel)
    if log:
        axes[0].set_yscale("log")
    axes[-1].set_xlabel("step t")
    return fig, axes


def plot(ax, xs, ys, label, i, drawstyle="default"):
    ax.plot(xs, ys, label=label, color=COLORS[i % len(COLORS)], linewidth=1.6, drawstyle=drawstyle)


def save(fig, axes, out, name):
    if axes[0].get_yscale() == "linear":
        axes[0].set_ylim(bottom=0)  # an lr axis from 0 shows proportions truly
    # One legend, outside the plot on the right, so that it never hides a curve.
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = os.path.join(out, name + ".png")
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    print(path)


def multi(out, name, title, n, items, ends=(), log=False, steps=False):
    """items: (label, Schedule) drawn with base lr BASE over steps 0..n-1."""
    fig, axes = figure(title, n, ends, log=log)
    for i, (label, s) in enumerate(items):
        plot(axes[0], *curve(s, n), label, i, "steps-post" if steps else "default")
    save(fig, axes, out, name)


class _Opt(object):
    """The smallest optimizer the schedulers accept: param_groups and defaults."""

    def __init__(self, lr=BASE, **defaults):
        self.defaults = dict(lr=lr, **defaults)
        self.param_groups = [dict(self.defaults)]

    def step(self):
        pass


def run_scheduler(make, n, momentum_key=None, opt_kw=None, metrics=None):
    opt = _Opt(**(opt_kw or {}))
    lrs, moms = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make(opt)
        for t in range(n):
            g = opt.param_groups[0]
            lrs.append(g["lr"])
            if momentum_key:
                moms.append(g["betas"][0] if momentum_key == "betas" else g["momentum"])
            opt.step()
            if metrics is not None:
                s.step(metrics[t])
            elif t < n - 1:
                s.step()
    return lrs, moms


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "img", "schedules"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    import optim.torch.lr_scheduler as L

    multi(out, "constant", "ConstantLR (optim_schedule_constant): factor until total_iters, then the base lr", 150,
          [("factor 1/3, total_iters 50", Schedule.constant(1 / 3, 50)),
           ("factor 0.5, total_iters 100", Schedule.constant(0.5, 100))], ends=(50, 100), steps=True)
    multi(out, "step", "StepLR (optim_schedule_step): times gamma every step_size steps", 200,
          [("step_size 30, gamma 0.5", Schedule.step(30, 0.5)),
           ("step_size 50, gamma 0.1", Schedule.step(50, 0.1))], log=True, steps=True)
    multi(out, "multistep", "MultiStepLR (optim_schedule_multistep): times gamma at each milestone", 200,
          [("milestones 50, 120, 160; gamma 0.3", Schedule.multistep([50, 120, 160], 0.3)),
           ("milestones 30, 30, 100 (30 twice); gamma 0.5", Schedule.multistep([30, 30, 100], 0.5))],
          ends=(30, 50, 100, 120, 160), log=True, steps=True)
    multi(out, "exponential", "ExponentialLR (optim_schedule_exponential): base * gamma^t", 200,
          [("gamma 0.99", Schedule.exponential(0.99)), ("gamma 0.97", Schedule.exponential(0.97))], log=True)
    multi(out, "linear", "LinearLR (optim_schedule_linear): factor from start to end over total_iters, then held",
          200, [("start 0.1, end 1, total_iters 100", Schedule.linear(0.1, 1.0, 100)),
                ("start 1, end 0.1, total_iters 150", Schedule.linear(1.0, 0.1, 150))], ends=(100, 150))
    multi(out, "polynomial", "PolynomialLR (optim_schedule_polynomial): base * (1 - t/total_iters)^power, then 0",
          200, [("power %g, total_iters 150" % p, Schedule.polynomial(150, p)) for p in (0.5, 1.0, 2.0)],
          ends=(150,))
    multi(out, "cosine", "CosineAnnealingLR (optim_schedule_cosine): periodic after T_max, as torch's", 400,
          [("T_max 100, eta_min 0", Schedule.cosine(100, 0.0)),
           ("T_max 150, eta_min 0.02", Schedule.cosine(150, 0.02))], ends=(100, 150))
    multi(out, "cosine_restarts", "CosineAnnealingWarmRestarts (optim_schedule_cosine_restarts)", 320,
          [("T_0 40, T_mult 1", Schedule.cosine_restarts(40, 1, 0.0)),
           ("T_0 10, T_mult 2, eta_min 0.01", Schedule.cosine_restarts(10, 2, 0.01))], ends=(10, 30, 70, 150, 310))
    multi(out, "warmup", "Warm-up (optim_schedule_warmup): linear to where the next schedule starts", 400,
          [("50 steps, then cosine T_max 350", Schedule.warmup(50, Schedule.cosine(350, 0.0))),
           ("100 steps, then StepLR 100 x 0.5", Schedule.warmup(100, Schedule.step(100, 0.5))),
           ("30 steps, then the base lr", Schedule.warmup(30))], ends=(30, 50, 100))
    multi(out, "wsd", "Warm-up, stable, decay (optim_schedule_wsd, WarmupStableDecay)", 550,
          [("linear decay: 50 / 250 / 150, eta_min 0.005", Schedule.wsd(50, 250, 150, 0.005, "linear")),
           ("cosine decay: 50 / 250 / 150, eta_min 0.005", Schedule.wsd(50, 250, 150, 0.005, "cosine"))],
          ends=(50, 300, 450))
    multi(out, "warmup_cosine", "WarmupCosine: warm-up, cosine to eta_min at total_steps, then eta_min", 1200,
          [("warmup 100, total 1000, eta_min 0.01", Schedule.wsd(100, 0, 900, 0.01, "cosine")),
           ("warmup 20, total 600, eta_min 0", Schedule.wsd(20, 0, 580, 0.0, "cosine"))], ends=(20, 100, 600, 1000))
    multi(out, "sequential", "SequentialLR (optim_schedule_sequential): each part from its own step 0", 500,
          [("LinearLR 0.01..1 over 50 | cosine T_max 450",
            Schedule.sequential([Schedule.linear(0.01, 1.0, 50), Schedule.cosine(450, 0.0)], [50])),
           ("ConstantLR 0.1 | ExponentialLR 0.99 | StepLR 50 x 0.5",
            Schedule.sequential([Schedule.constant(0.1, 1000), Schedule.exponential(0.99), Schedule.step(50, 0.5)],
                                [100, 250]))], ends=(50, 100, 250))

    # Absolute schedules, with the momentum they cycle.
    n = 230
    fig, axes = figure("OneCycleLR (optim_schedule_one_cycle): lr, and momentum below; total_steps 200", n,
                       ends=(200,), panels=2)
    for i, (label, kw) in enumerate([("cos, pct_start 0.3", {}),
                                     ("linear, pct_start 0.3", {"anneal_strategy": "linear"}),
                                     ("cos, three_phase, pct_start 0.25", {"three_phase": True, "pct_start": 0.25})]):
        lrs, moms = run_scheduler(lambda o: L.OneCycleLR(o, 0.1, total_steps=200, **kw), 201, "momentum",
                                  {"momentum": 0.9})
        s = Schedule.one_cycle(0.1, 200, kw.get("pct_start", 0.3), kw.get("anneal_strategy", "cos") == "cos",
                               three_phase=kw.get("three_phase", False))
        plot(axes[0], *curve(s, n), label, i)
        plot(axes[1], list(range(201)), moms, label, i)
    axes[1].set_ylabel("momentum")
    axes[0].annotate("held after the end", xy=(215, 0.004), fontsize=8, ha="center")
    save(fig, axes, out, "one_cycle")

    n = 400
    fig, axes = figure("CyclicLR (optim_schedule_cyclic): lr, and momentum below", n, panels=2)
    for i, (label, kw) in enumerate([("triangular, step_size_up 50", {}),
                                     ("triangular2, step_size_up 50", {"mode": "triangular2"}),
                                     ("exp_range, gamma 0.995, step_size_up 50",
                                      {"mode": "exp_range", "gamma": 0.995}),
                                     ("triangular, step_size_up 50, down 20", {"step_size_down": 20})]):
        lrs, moms = run_scheduler(lambda o: L.CyclicLR(o, 0.01, 0.1, 50, **kw), n, "momentum", {"momentum": 0.9})
        plot(axes[0], list(range(n)), lrs, label, i)
        plot(axes[1], list(range(n)), moms, label, i)
    axes[1].set_ylabel("momentum")
    save(fig, axes, out, "cyclic")

    # Python-level composition and the metric-driven scheduler.
    n = 400
    fig, axes = figure("ChainedScheduler: the product of chainable schedules", n, ends=(100,))
    lrs, _ = run_scheduler(lambda o: L.ChainedScheduler([L.LinearLR(o, 0.1, 1.0, 100), L.StepLR(o, 80, 0.5)]), n)
    plot(axes[0], list(range(n)), lrs, "LinearLR 0.1..1 over 100 x StepLR 80 x 0.5", 0)
    lrs, _ = run_scheduler(lambda o: L.ChainedScheduler([L.ExponentialLR(o, 0.995), L.CosineAnnealingLR(o, 400)]),
                           n)
    plot(axes[0], list(range(n)), lrs, "ExponentialLR 0.995 x CosineAnnealingLR T_max 400", 1)
    save(fig, axes, out, "chained")

    n = 300
    rng = random.Random(7)
    loss, metrics = 1.0, []
    for t in range(n):
        loss = max(0.2, loss * 0.985) + rng.gauss(0, 0.01)
        metrics.append(loss)
    fig, axes = figure("ReduceLROnPlateau: the lr follows the metric below", n, panels=2, log=True)
    lrs, _ = run_scheduler(lambda o: L.ReduceLROnPlateau(o, patience=10, factor=0.5, min_lr=1e-3), n,
                           metrics=metrics)
    plot(axes[0], list(range(n)), lrs, "patience 10, factor 0.5, min_lr 1e-3", 0, "steps-post")
    plot(axes[1], list(range(n)), metrics, "metric passed to step()", 1)
    axes[1].set_ylabel("metric")
    save(fig, axes, out, "plateau")


if __name__ == "__main__":
    main()
