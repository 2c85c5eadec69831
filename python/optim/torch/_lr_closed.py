"""optim's schedulers beyond torch's: WarmupCosine and WarmupStableDecay,
closed forms evaluated by liboptim (include/optim_schedule.h, the schedules C
users attach with optim_group_set_schedule), made chainable by ratios so that
they stack with torch's schedulers. Exported by optim.torch.lr_scheduler."""
from .._schedule import Schedule, _int64
from ._lr_base import LRScheduler, _warn_get_lr

__all__ = ["WarmupCosine", "WarmupStableDecay"]


# ---- Warm-up + cosine, warm-up-stable-decay (optim's, closed forms in C) ------------------------


class _ClosedFormChain(LRScheduler):
    """A schedule given in closed form by liboptim, c(base, t), made chainable
    by ratios: step t multiplies the group's lr by c(t) / c(t - 1), with
    c(-1) = the initial lr. When the group holds exactly c(t - 1) (the
    scheduler runs alone, or the others left the lr as it wrote it), the
    result is c(t) itself, exact, with no rounding carried from step to step;
    when another scheduler or a hand edit changed the lr, the change carries
    on multiplicatively, as with torch's chainable schedulers. Where
    c(t - 1) = 0 (the end of a decay to eta_min = 0) the group's lr is kept
    while c stays 0. step(epoch) and SequentialLR's restarts use c(t)
    directly. Subclasses set their arguments and build self._c in _build()."""

    def _build(self):
        raise NotImplementedError

    def _c_lr(self, base, t):
        return base if t < 0 else self._c.lr(base, _int64("last_epoch", t))

    def get_lr(self):
        _warn_get_lr(self)
        t = self.last_epoch
        lrs = []
        for base, group in zip(self.base_lrs, self.optimizer.param_groups):
            prev, cur = self._c_lr(base, t - 1), self._c_lr(base, t)
            lr = group["lr"]
            if lr == prev:
                lrs.append(cur)
            elif prev == 0:
                lrs.append(lr if cur == 0 else cur)
            else:
                lrs.append(lr * (cur / prev))
        return lrs

    def _get_closed_form_lr(self):
        return [self._c_lr(base, self.last_epoch) for base in self.base_lrs]

    # The C schedule is not state: rebuilt from the arguments.
    def state_dict(self):
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "_c")}

    def load_state_dict(self, state_dict):
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "_c"})
        self._build()

    def __getstate__(self):
        return {key: value for key, value in self.__dict__.items() if key != "_c"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build()


class WarmupCosine(_ClosedFormChain):
    """Linear warm-up to the group's lr, then cosine decay to eta_min at step
    total_steps, then eta_min (llm.c's schedule), with W = warmup_steps,
    T = total_steps:
        c(t) = base * (t + 1) / W                                        t < W
        c(t) = eta_min + (base - eta_min) * (1 + cos(pi (t - W) / (T - W))) / 2     W <= t < T
        c(t) = eta_min                                                   t >= T
    Alone, the lr of step t is c(t) exactly; stacked, it chains by ratios
    (see _ClosedFormChain)."""

    def __init__(self, optimizer, warmup_steps, total_steps, eta_min=0.0, last_epoch=-1, verbose=False):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.eta_min = eta_min
        self._build()  # validates before the groups change
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        w, total = _int64("warmup_steps", self.warmup_steps), _int64("total_steps", self.total_steps)
        if total < w:
            raise ValueError("WarmupCosine: total_steps = {} must be >= warmup_steps = {}".format(total, w))
        self._c = Schedule.wsd(w, 0, total - w, self.eta_min, "cosine")


class WarmupStableDecay(_ClosedFormChain):
    """Warm-up, stable, decay (WSD): linear warm-up to the group's lr over
    warmup_steps, the lr for stable_steps, then down to eta_min over
    decay_steps (decay="linear" or "cosine"), then eta_min for ever. Alone,
    the lr of step t is the closed form exactly; stacked, it chains by ratios
    (see _ClosedFormChain)."""

    def __init__(self, optimizer, warmup_steps, stable_steps, decay_steps, eta_min=0.0, decay="linear",
                 last_epoch=-1, verbose=False):
        self.warmup_steps = warmup_steps
        self.stable_steps = stable_steps
        self.decay_steps = decay_steps
        self.eta_min = eta_min
        self.decay = decay
        self._build()
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = Schedule.wsd(self.warmup_steps, self.stable_steps, self.decay_steps, self.eta_min, self.decay)
