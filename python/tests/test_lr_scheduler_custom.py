"""Custom schedulers: subclasses of optim.torch.lr_scheduler.LRScheduler (or
_LRScheduler, torch 1.13's name) that override get_lr(), written as torch
users write them, against the same classes written on torch's base class
(issue 11, item 4). Each is defined once over a module of schedulers, so the
two versions are the same code on two bases; they run side by side, alone
and stacked with built-in schedulers, and give the same lrs (==). Then the
base class's own behaviour: the warnings, step(epoch), verbose, state_dict,
isinstance.
"""
import math
import warnings

import pytest
import torch.optim.lr_scheduler as T

import optim.torch.lr_scheduler as L
from lr_harness import make_opt, run_side_by_side, step_opt


def customs(m):
    """Custom schedulers over the module m (torch's or ours)."""

    class NoamLR(m._LRScheduler):
        """The Transformer paper's schedule (a common tutorial subclass)."""

        def __init__(self, optimizer, d_model, warmup_steps, last_epoch=-1):
            self.d_model = d_model
            self.warmup_steps = warmup_steps
            super().__init__(optimizer, last_epoch)

        def get_lr(self):
            step = max(self.last_epoch, 1)
            scale = self.d_model ** -0.5 * min(step ** -0.5, step * self.warmup_steps ** -1.5)
            return [base_lr * scale for base_lr in self.base_lrs]

    class WarmupLinear(m.LambdaLR):
        """Linear warm-up then linear decay to 0, as a LambdaLR subclass whose
        factor is a bound method (the old pytorch-transformers pattern)."""

        def __init__(self, optimizer, warmup_steps, t_total, last_epoch=-1):
            self.warmup_steps = warmup_steps
            self.t_total = t_total
            super().__init__(optimizer, self.lr_lambda, last_epoch=last_epoch)

        def lr_lambda(self, step):
            if step < self.warmup_steps:
                return float(step) / float(max(1, self.warmup_steps))
            return max(0.0, float(self.t_total - step) / float(max(1.0, self.t_total - self.warmup_steps)))

    class PolyDecay(m._LRScheduler):
        """Polynomial decay to an end lr that overrides step(step=None) and
        sets the groups itself (a popular standalone repo's shape)."""

        def __init__(self, optimizer, max_decay_steps, end_learning_rate=1e-4, power=1.0):
            if max_decay_steps <= 1.:
                raise ValueError("max_decay_steps should be greater than 1.")
            self.max_decay_steps = max_decay_steps
            self.end_learning_rate = end_learning_rate
            self.power = power
            self.last_step = 0
            super().__init__(optimizer)

        def get_lr(self):
            if self.last_step > self.max_decay_steps:
                return [self.end_learning_rate for _ in self.base_lrs]
            return [(base_lr - self.end_learning_rate) * ((1 - self.last_step / self.max_decay_steps) ** self.power)
                    + self.end_learning_rate for base_lr in self.base_lrs]

        def step(self, step=None):
            if step is None:
                step = self.last_step + 1
            self.last_step = step if step != 0 else 1
            if self.last_step <= self.max_decay_steps:
                for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
                    group["lr"] = lr

    class GradualWarmup(m._LRScheduler):
        """Warm-up by a multiplier over total_epoch, then hands over to
        another scheduler (the shape of a much-used warm-up wrapper)."""

        def __init__(self, optimizer, multiplier, total_epoch, after_scheduler=None):
            self.multiplier = multiplier
            self.total_epoch = total_epoch
            self.after_scheduler = after_scheduler
            self.finished = False
            super().__init__(optimizer)

        def get_lr(self):
            if self.last_epoch > self.total_epoch:
                if self.after_scheduler:
                    if not self.finished:
                        self.after_scheduler.base_lrs = [b * self.multiplier for b in self.base_lrs]
                        self.finished = True
                    return self.after_scheduler.get_last_lr()
                return [b * self.multiplier for b in self.base_lrs]
            return [b * ((self.multiplier - 1.) * self.last_epoch / self.total_epoch + 1.) for b in self.base_lrs]

        def step(self, epoch=None, metrics=None):
            if self.finished and self.after_scheduler:
                if epoch is None:
                    self.after_scheduler.step(None)
                else:
                    self.after_scheduler.step(epoch - self.total_epoch)
                self._last_lr = self.after_scheduler.get_last_lr()
            else:
                return super().step(epoch)

    class HalveEvery(m._LRScheduler):
        """A chainable custom scheduler with a closed form (for step(epoch))."""

        def __init__(self, optimizer, every, last_epoch=-1, verbose=False):
            self.every = every
            super().__init__(optimizer, last_epoch, verbose)

        def get_lr(self):
            if self.last_epoch == 0 or self.last_epoch % self.every:
                return [group["lr"] for group in self.optimizer.param_groups]
            return [group["lr"] * 0.5 for group in self.optimizer.param_groups]

        def _get_closed_form_lr(self):
            return [base_lr * 0.5 ** (self.last_epoch // self.every) for base_lr in self.base_lrs]

    class CosineFromGroup(m._LRScheduler):
        """Reads the group's lr and last lr: a cosine multiplier relative to
        the previous step, the style of the chainable forms."""

        def __init__(self, optimizer, period):
            self.period = period
            super().__init__(optimizer)

        def get_lr(self):
            t = self.last_epoch
            f = lambda k: 0.55 + 0.45 * math.cos(math.pi * k / self.period)  # noqa: E731
            return [group["lr"] * (f(t) / f(t - 1) if t > 0 else 1.0) for group in self.optimizer.param_groups]

    return {
        "noam": lambda o: NoamLR(o, 512, 40),
        "warmup_linear": lambda o: WarmupLinear(o, 30, 300),
        "poly_decay": lambda o: PolyDecay(o, 150, 1e-4, 2.0),
        "gradual_warmup": lambda o: GradualWarmup(o, 4.0, 20, m.CosineAnnealingLR(o, 200)),
        "halve_every": lambda o: HalveEvery(o, 17),
        "cosine_from_group": lambda o: CosineFromGroup(o, 90),
    }


CUSTOM_T, CUSTOM_L = customs(T), customs(L)


def custom(name, *others):
    """The custom scheduler `name`, then built-in schedulers stacked after it."""
    def recipe(m, o):
        table = CUSTOM_T if m is T else CUSTOM_L
        return [table[name](o)] + [make(m, o) for make in others]
    return recipe


@pytest.mark.parametrize("name", sorted(CUSTOM_T))
def test_custom_alone(name):
    run_side_by_side(custom(name), 250, label=name)


@pytest.mark.parametrize("name", sorted(CUSTOM_T))
@pytest.mark.parametrize("other", ["linear", "cosine", "step_after"])
def test_custom_stacked(name, other):
    """Stacked with a built-in scheduler, after it or before it."""
    make = {"linear": lambda m, o: m.LinearLR(o, 0.2, 1.0, 25), "cosine": lambda m, o: m.CosineAnnealingLR(o, 60),
            "step_after": lambda m, o: m.StepLR(o, 13, 0.7)}[other]
    run_side_by_side(custom(name, make), 200, label="%s + %s" % (name, other))

    def first(m, o):
        table = CUSTOM_T if m is T else CUSTOM_L
        return [make(m, o), table[name](o)]
    run_side_by_side(first, 200, label="%s + %s" % (other, name))


def test_custom_in_sequential_and_chained():
    def recipe(m, o):
        table = CUSTOM_T if m is T else CUSTOM_L
        seq = m.SequentialLR(o, [m.LinearLR(o, 0.1, 1.0, 20), table["halve_every"](o)], [20])
        return [m.ChainedScheduler([seq, table["cosine_from_group"](o)])]
    run_side_by_side(recipe, 200, label="custom in Sequential in Chained")


def test_custom_step_with_epoch():
    """step(epoch): the closed form when the subclass has one, else get_lr;
    torch's deprecation warning."""
    for name in ("halve_every", "noam"):
        ot, oo = make_opt(), make_opt()
        st, so = CUSTOM_T[name](ot), CUSTOM_L[name](oo)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for epoch in (40, 3, 100, 17, 18):
                st.step(epoch)
                so.step(epoch)
                assert so.get_last_lr() == st.get_last_lr() and so.last_epoch == st.last_epoch
                st.step()
                so.step()
                assert so.get_last_lr() == st.get_last_lr()
        assert sum("epoch parameter" in str(w.message) for w in rec) == 10


def _save_and_resume(m, make, k, n):
    """n steps straight, and k steps, state_dicts, a fresh optimizer and
    scheduler loaded, n - k more: the lrs of both runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o1 = make_opt()
        s1 = make(m, o1)
        straight = []
        for j in range(1, n + 1):
            step_opt(o1, j)
            s1.step()
            straight.append([g["lr"] for g in o1.param_groups])
        o2 = make_opt()
        s2 = make(m, o2)
        for j in range(1, k + 1):
            step_opt(o2, j)
            s2.step()
        sd, osd = s2.state_dict(), o2.state_dict()
        assert "optimizer" not in sd
        o3 = make_opt()
        s3 = make(m, o3)
        o3.load_state_dict(osd)
        s3.load_state_dict(sd)
        resumed = []
        for j in range(k + 1, n + 1):
            step_opt(o3, j)
            s3.step()
            resumed.append([g["lr"] for g in o3.param_groups])
    return straight, resumed


@pytest.mark.parametrize("name", sorted(CUSTOM_T))
def test_custom_state_dict(name):
    """state_dict (every attribute but the optimizer) mid-run, loaded into a
    fresh one after the optimizer's: as torch, and, but for GradualWarmup
    (whose state holds its after_scheduler object, built on the first
    optimizer: it does not resume in torch either), as straight through."""
    t_straight, t_resumed = _save_and_resume(T, lambda m, o: CUSTOM_T[name](o), 50, 120)
    o_straight, o_resumed = _save_and_resume(L, lambda m, o: CUSTOM_L[name](o), 50, 120)
    assert (o_straight, o_resumed) == (t_straight, t_resumed)
    assert (o_resumed == o_straight[50:]) == (name != "gradual_warmup")


def test_base_class_behaviour():
    """What torch's base class does, ours does: isinstance of torch's class,
    _LRScheduler is LRScheduler, initial_lr and base_lrs, the first step at
    construction, the warnings, verbose output, get_last_lr."""
    assert L._LRScheduler is L.LRScheduler
    assert issubclass(L.LRScheduler, T._LRScheduler)
    assert isinstance(L.StepLR(make_opt(), 3), T._LRScheduler)
    assert isinstance(L.ReduceLROnPlateau(make_opt()), T.ReduceLROnPlateau)

    class Missing(L.LRScheduler):
        pass
    with pytest.raises(NotImplementedError, match="Missing must override get_lr"):
        Missing(make_opt())

    class Twice(L.LRScheduler):
        def get_lr(self):
            return [2.0 * b for b in self.base_lrs]
    o = make_opt()
    s = Twice(o)
    assert [g["initial_lr"] for g in o.param_groups] == [0.1, 0.03] and s.base_lrs == [0.1, 0.03]
    assert s.last_epoch == 0 and s._step_count == 1 and s.get_last_lr() == [0.2, 0.06]
    assert o._step_count == 0 and getattr(o.step, "_with_counter", False)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        s.step()
    o.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.step()
    with pytest.raises(KeyError, match="param 'initial_lr' is not specified in param_groups\\[0\\]"):
        Twice(make_opt(), last_epoch=4)


def test_step_overridden_warning():
    """optimizer.step replaced after the scheduler was built: torch's warning."""
    for m in (T, L):
        o = make_opt()
        s = m.StepLR(o, 3)
        o.step = lambda: None
        with pytest.warns(UserWarning, match="Seems like `optimizer.step\\(\\)` has been overridden"):
            s.step()


def test_get_lr_outside_step_warns():
    for m in (T, L):
        s = m.ExponentialLR(make_opt(), 0.9)
        with pytest.warns(UserWarning, match="please use `get_last_lr\\(\\)`"):
            s.get_lr()


def test_verbose_custom(capsys):
    outs = []
    for m in (T, L):
        class Verbose(m._LRScheduler):
            def get_lr(self):
                return [b * 0.5 ** self.last_epoch for b in self.base_lrs]
        o = make_opt()
        s = Verbose(o, verbose=True)
        o.step()
        s.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s.step(7)
            s.step(2.5)
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and "Epoch 2.50: adjusting learning rate of group 1" in outs[1]


def test_no_reference_cycle_through_the_optimizer():
    """The step counter holds the optimizer weakly, as torch's: dropping the
    optimizer and the scheduler frees them without the cyclic collector."""
    import gc
    import weakref
    gc.disable()
    try:
        o = make_opt()
        s = L.CosineAnnealingLR(o, 10)
        o.step()
        s.step()
        ro, rs = weakref.ref(o), weakref.ref(s)
        del o, s
        assert ro() is None and rs() is None
    finally:
        gc.enable()


def test_torch_optimizer_subclass_and_duck_typing():
    """Any object with param_groups holding 'lr' works (torch requires a
    torch.optim.Optimizer): an optimizer-like wrapper."""
    class Wrapper(object):
        def __init__(self, opt):
            self.opt = opt
            self.param_groups = opt.param_groups
            self.defaults = opt.defaults

        def step(self):
            self.opt.step()
    w = Wrapper(make_opt())
    s = L.StepLR(w, 2, 0.5)
    for _ in range(4):
        w.step()
        s.step()
    assert s.get_last_lr() == [0.1 * 0.25, 0.03 * 0.25]
