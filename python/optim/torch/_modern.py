"""optim.torch's optimizers from after torch.optim 1.13: the authors' reference
implementations' arguments and defaults, stepped by liboptim."""
import torch

from .._capi import OptimError
from . import _distributed, _groups, _members, _step
from ._base import _Optimizer, _check_flags
from ._optimizers import _COMMON_DOC, _spec

__all__ = ["Lion", "LAMB", "LARS", "SGDScheduleFree", "AdamWScheduleFree"]


class Lion(_Optimizer):
    __doc__ = """Lion, EvoLved Sign Momentum (Chen et al. 2023), as the authors'
    reference lion_pytorch.Lion (github.com/google/automl, lion/lion_pytorch.py).

    Per element: p = p * (1 - lr * weight_decay); c = beta1 * m + (1 - beta1) * g;
    p = p - lr * sign(c); m = beta2 * m + (1 - beta2) * g. The step of every
    element is +-lr (0 where c = 0): lr is typically 3-10x smaller than AdamW's,
    and weight_decay 3-10x larger (the authors' advice).

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-4, the reference's).
        betas (Tuple[float, float], optional): beta1 interpolates the update's
            sign, beta2 the momentum, each in [0, 1) (default: (0.9, 0.99)).
        weight_decay (float, optional): decoupled weight decay (default: 0, the
            reference's; optax.lion's default is 1e-3).
        maximize (bool, optional, optim extra): maximize the objective (default: False).
        decoupled_weight_decay (bool, optional, optim extra): True (default,
            the reference) multiplies p by 1 - lr * weight_decay; False adds
            weight_decay * p to the gradient instead (L2).
        foreach (bool, optional): accepted, no effect.
        use_triton (bool, optional): lucidrains/lion-pytorch's argument;
            False (default) accepted, True (its Triton kernel) is refused: ValueError.

    decoupled_weight_decay is not lion-pytorch's argument of the same name:
    there True divides weight_decay by the constructor's lr and False (its
    default) is this class's True.

    state[p] is {'exp_avg': tensor} after p's first step, as the reference
    (no 'step'). Differences from the reference: a NaN in c gives a NaN
    parameter element (the library's policy), where torch's sign(NaN) is 0.
    """ + _COMMON_DOC

    _rule_name = "lion"
    _complex_reason = "Lion is defined for real parameters (torch.optim 1.13 has no Lion to follow)"
    _hp_spec = _spec("lr", "betas", "weight_decay", "maximize", "decoupled_weight_decay")
    _step_kind = None
    _required_slots = ("exp_avg",)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, use_triton=False, *, maximize=False,
                 decoupled_weight_decay=True, foreach=None, capturable=False, differentiable=False, fused=False,
                 nonfinite="propagate", clip_grad_norm=None, clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("Lion", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        if use_triton is not False:
            raise ValueError("Lion: use_triton = %r is not supported (lion-pytorch's Triton kernel; liboptim steps "
                             "on the CPU: use_triton=False)" % (use_triton,))
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class LAMB(_Optimizer):
    __doc__ = """LAMB, Layer-wise Adaptive Moments for Batch training (You et al. 2019,
    "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"),
    with the arguments and defaults of timm's Lamb (timm.optim.Lamb, the
    NVLAMB form of apex's FusedLAMB), stepped by liboptim.

    Per tensor: m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
    u = (m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * p (bc = 1 - beta^t,
    or 1 without bias_correction); where weight_decay != 0 or always_adapt,
    u = u * ||p|| / ||u|| (1 where either norm is 0; at most 1 with
    trust_clip); p = p - lr * u. The norms are reductions inside the same
    step (liboptim's pass 1: fixed blocks, fixed order, the same bits on any
    thread count and CPU path). A group with weight_decay=0 (biases, norms:
    the usual exclusion) gets neither decay nor trust ratio, as in timm.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-3).
        bias_correction (bool, optional): divide the moments by 1 - beta^t (default: True).
        betas (Tuple[float, float], optional): coefficients of the moments, each
            in [0, 1) (default: (0.9, 0.999)).
        eps (float, optional): term added to the denominator; must be >= 0 (default: 1e-6).
        weight_decay (float, optional): decay added to the update (default: 0.01).
        grad_averaging (bool, optional): must be True (timm's default; False,
            m = beta1 m + g, is not supported: ValueError).
        max_grad_norm (float or None, optional): clip the gradients to this
            total norm over every parameter before the step (default: 1.0, as
            timm). liboptim's fused clip_grad_norm does it (the two cannot both be
            given), with torch.nn.utils.clip_grad_norm_'s factor
            min(1, max_norm / (norm + 1e-6)) where timm divides by
            max(1, norm / max_norm): a relative difference of at most 1e-6 / norm.
        trust_clip (bool, optional): clip the trust ratio at 1 (LAMBC; default: False).
        always_adapt (bool, optional): apply the trust ratio where weight_decay
            is 0 too (default: False).
        maximize (bool, optional, optim extra): maximize the objective (default: False).
        foreach (bool, optional): accepted, no effect.

    state[p] is {'step', 'exp_avg', 'exp_avg_sq'} after p's first step: the
    step counter is kept per parameter (timm keeps one per group, in the
    param group); it counts the same steps while every parameter of the group
    has a gradient at every step (a parameter without one does not advance its
    own, where timm's group counter, and so its bias correction, advances). timm's newer options caution,
    decoupled_decay and corrected_weight_decay are not offered.
    """ + _COMMON_DOC

    _rule_name = "lamb"
    _complex_reason = "timm's Lamb defines no complex step (its norms would be of the complex tensors)"
    _hp_spec = _spec("lr", "bias_correction", "betas", "eps", "weight_decay", "trust_clip", "always_adapt",
                     "maximize")
    _step_kind = "tensor"
    _required_slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 grad_averaging=True, max_grad_norm=1.0, trust_clip=False, always_adapt=False, *, maximize=False,
                 foreach=None, capturable=False, differentiable=False, fused=False, nonfinite="propagate",
                 clip_grad_norm=None, clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("LAMB", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        if grad_averaging is not True:
            raise ValueError("LAMB: grad_averaging = %r is not supported (m = beta1 m + (1 - beta1) g, timm's "
                             "default, is the only form)" % (grad_averaging,))
        if max_grad_norm is not None:
            if clip_grad_norm is not None:
                raise ValueError("LAMB: max_grad_norm = %r and clip_grad_norm = %r are the same clipping: give one "
                                 "(max_grad_norm=None to use clip_grad_norm)" % (max_grad_norm, clip_grad_norm))
            clip_grad_norm = max_grad_norm
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        trust_clip=trust_clip, always_adapt=always_adapt, maximize=maximize, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class LARS(_Optimizer):
    __doc__ = """LARS, Layer-wise Adaptive Rate Scaling (You et al. 2017, "Large Batch
    Training of Convolutional Networks"), with the arguments and defaults of
    timm's Lars (timm.optim.Lars: SGD with apex's LARC scaling), stepped by
    liboptim.

    Per tensor, where weight_decay != 0 or always_adapt:
    r = trust_coeff * ||p|| / (||g|| + weight_decay * ||p|| + eps) (1 where
    either norm is 0; min(r / lr, 1) with trust_clip, LARC) and
    g = (g + weight_decay * p) * r; then SGD: with momentum,
    b = g (first step) or momentum * b + (1 - dampening) * g, and
    g = g + momentum * b (nesterov) or b; p = p - lr * g. The norms are
    reductions inside the same step (fixed blocks, fixed order). A group with
    weight_decay=0 (biases, norms) is plain SGD unless always_adapt.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1.0, as timm).
        momentum (float, optional): momentum factor (default: 0).
        dampening (float, optional): dampening for momentum, in [0, 1] (default: 0).
        weight_decay (float, optional): weight decay, inside the trust ratio (default: 0).
        nesterov (bool, optional): Nesterov momentum; needs momentum > 0 and
            dampening = 0 (default: False).
        trust_coeff (float, optional): the trust coefficient (default: 0.001).
        eps (float, optional): added to the ratio's denominator; must be >= 0 (default: 1e-8).
        trust_clip (bool, optional): LARC clipping, min(ratio / lr, 1) (default: False).
        always_adapt (bool, optional): the ratio where weight_decay is 0 too (default: False).
        maximize (bool, optional, optim extra): maximize the objective (default: False).
        foreach (bool, optional): accepted, no effect.

    state[p] is {'momentum_buffer': tensor} after p's first step with momentum,
    as timm (no 'step'). ||g|| is the norm of the gradient the step sees:
    after maximize and the fused clipping, if any.
    """ + _COMMON_DOC

    _rule_name = "lars"
    _state_from_grad = True  # the momentum buffer is a clone of its first step's gradient: its layout
    _complex_reason = "timm's Lars defines no complex step (its norms would be of the complex tensors)"
    _hp_spec = _spec("lr", "momentum", "dampening", "weight_decay", "nesterov", "trust_coeff", "eps", "trust_clip",
                     "always_adapt", "maximize")
    _step_kind = None
    _required_slots = ()

    def __init__(self, params, lr=1.0, momentum=0, dampening=0, weight_decay=0, nesterov=False, trust_coeff=0.001,
                 eps=1e-8, trust_clip=False, always_adapt=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=False, nonfinite="propagate", clip_grad_norm=None, clip_grad_value=None,
                 master_weights=False, stochastic_rounding=False, loss_scale=None,
                 state_dtype=None):
        _check_flags("LARS", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, trust_coeff=trust_coeff, eps=eps, trust_clip=trust_clip,
                        always_adapt=always_adapt, maximize=maximize, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class _ScheduleFree(_Optimizer):
    """The train()/eval() switch and the group keys of facebookresearch/
    schedule_free's optimizers (k, train_mode, weight_sum, lr_max,
    scheduled_lr), over liboptim's schedule-free rules."""

    _step_kind = None  # the reference's state has no 'step': its k is per group
    _coef_name = "momentum"

    def _sf_init(self):
        c = self._c
        with c.lock:
            c.h.sf_set_mode(False)  # the reference starts in eval mode (no z yet: nothing moves)
        for group in self.param_groups:
            group["train_mode"] = False
        self._sf_record()

    def add_param_group(self, param_group):
        """As _Optimizer.add_param_group; the new group's train_mode is the
        optimizer's mode (liboptim keeps one mode: train() and eval() move
        every group's parameters; the reference's new group says False, and
        its eval() would then leave that group's parameters at y)."""
        super().add_param_group(param_group)
        if getattr(self, "_sf_shown", None) is not None:  # built (__init__, unpickling: the groups' own)
            self.param_groups[-1]["train_mode"] = self._c.h.sf_mode() == 1

    def _sf_switch(self, train):
        c = self._c
        with c.lock:
            _step.sam_guard(c, "train" if train else "eval")
            c = _members.sync(self)
            _groups.sync(c, self.param_groups)
            if c.params:
                n, pp, gp, pins = _step.bind(c, grads=False)
                try:
                    c.h.rebind(n, pp, gp)
                    c.h.sf_switch(train)
                except OptimError as e:
                    raise ValueError("%s: %s: %s" % (c.owner, "train" if train else "eval", e)) from None
                pins.write_back()  # parameters switched through a working copy
                del pins
            else:
                c.h.sf_set_mode(train)
        for group in self.param_groups:
            group["train_mode"] = bool(train)

    @torch.no_grad()
    def train(self):
        """Move the parameters to y, where gradients are taken (the reference's
        optimizer.train(): p.lerp_(z, 1 - c), c = momentum or beta1); a
        no-op in train mode."""
        self._sf_switch(True)

    @torch.no_grad()
    def eval(self):
        """Move the parameters to x, the average to evaluate (the reference's
        optimizer.eval(): p.lerp_(z, 1 - 1/c)); a no-op in eval mode."""
        self._sf_switch(False)

    def _sf_refresh(self, reset=False):
        """The reference's group keys from the C object's per-parameter scalars
        (the first parameter of a group that has stepped). reset: a group none
        of whose parameters has stepped takes the keys of a new optimizer (after
        a checkpoint load: C holds the whole state); else it keeps its keys."""
        c = self._c
        for group in self.param_groups:
            for p in group["params"]:
                i = c.index.get(p)
                if i is None:
                    continue
                k = c.h.get_step(i)
                if k == 0:
                    continue
                lr_max, weight_sum = c.h.get_schedule_free(i)
                warm = group["warmup_steps"]
                group["k"] = k
                group["lr_max"] = lr_max
                group["weight_sum"] = weight_sum
                group["scheduled_lr"] = group["lr"] * (k / warm if k - 1 < warm else 1.0)
                break
            else:
                if reset:
                    group.update(k=0, lr_max=-1.0, weight_sum=0.0, scheduled_lr=0.0)
        self._sf_record()

    def _sf_record(self):
        """Remember the group keys k, lr_max, weight_sum as C holds them, to see a
        hand edit of them at the next step (_sf_push_edits)."""
        self._sf_shown = {id(g): (g, (g.get("k"), g.get("lr_max"), g.get("weight_sum"))) for g in self.param_groups}

    def _sf_push_edits(self):
        """A group's k, lr_max or weight_sum edited by hand since the last step
        (k = 0 to warm up again, as the reference's step reads them from the
        group) becomes the scalars of the group's parameters that have a z."""
        shown = getattr(self, "_sf_shown", {})
        c = self._c
        edited = []
        for gi, group in enumerate(self.param_groups):  # every edit checked before any is applied
            entry = shown.get(id(group))
            now = (group.get("k"), group.get("lr_max"), group.get("weight_sum"))
            if entry is None or entry[0] is not group or entry[1] == now:
                continue
            where = "%s: param group %d" % (c.owner, gi)
            k = now[0]
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError("%s: k = %r must be an int >= 0 (the steps taken)" % (where, k))
            for key, v in zip(("lr_max", "weight_sum"), now[1:]):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError("%s: %s = %r must be a float" % (where, key, v))
            edited.append((group, now))
        for group, (k, lr_max, weight_sum) in edited:
            for p in group["params"]:
                i = c.index.get(p)
                if i is None or "z" not in self.state[p]:
                    continue
                c.h.set_step(i, k)
                c.h.set_schedule_free(i, float(lr_max), float(weight_sum))

    def _sf_from_groups(self):
        """Each parameter's scalars and the mode in C from the reference's group
        keys k, lr_max, weight_sum and train_mode (after load_state_dict or
        unpickling: the groups hold them, the C object is new or was reset)."""
        c = self._c
        with c.lock:
            c = _members.sync(self)
            for group in self.param_groups:
                for p in group["params"]:
                    i = c.index.get(p)
                    if i is None or "z" not in self.state[p]:
                        continue
                    c.h.set_step(i, int(group.get("k", 0)))
                    c.h.set_schedule_free(i, float(group.get("lr_max", -1.0)), float(group.get("weight_sum", 0.0)))
            train = bool(self.param_groups[0].get("train_mode", False)) if self.param_groups else False
            c.h.sf_set_mode(train)
            for group in self.param_groups:
                group["train_mode"] = train  # one mode for the whole optimizer (liboptim's)
        self._sf_record()

    @torch.no_grad()
    def step(self, closure=None):
        """One step (the parameters must hold y: call train() first, as the
        reference requires; in eval mode RuntimeError, nothing changed)."""
        try:
            if not self.param_groups[0].get("train_mode", False) or self._c.h.sf_mode() != 1:
                raise RuntimeError("%s: the optimizer is not in train mode when step is called; call "
                                   "optimizer.train() before training and optimizer.eval() before evaluating (as "
                                   "the reference requires)" % type(self).__name__)
            with self._c.lock:
                self._sf_push_edits()
        except BaseException:
            with self._c.lock:  # under ZeroRedundancyOptimizer the other ranks raise too (_distributed.step_failed)
                _distributed.begin_step(self._c)
                _distributed.step_failed(self._c)
            raise
        loss = super().step(closure)
        self._sf_refresh()
        return loss

    def load_state_dict(self, state_dict):
        """A state_dict of this class or of the reference's: the group keys k,
        lr_max, weight_sum and train_mode become each parameter's scalars and
        the mode (the parameters are taken to be where that mode keeps them,
        as the reference takes them)."""
        super().load_state_dict(state_dict)
        self._sf_from_groups()

    def __setstate__(self, state):
        # pickle and copy.deepcopy: the copy's new C object takes the scalars and the mode of the groups
        super().__setstate__(state)
        self._sf_from_groups()

    def load_checkpoint(self, path, match="name"):
        """As _Optimizer.load_checkpoint; the checkpoint holds each parameter's
        k, lr_max, weight_sum and the mode (its SFRE section): the group keys
        k, lr_max, weight_sum, scheduled_lr and train_mode show them."""
        super().load_checkpoint(path, match)
        c = self._c
        with c.lock:
            train = c.h.sf_mode() == 1
            for group in self.param_groups:
                group["train_mode"] = train
            self._sf_refresh(reset=True)


_SF_DOC = """
    Differences from the reference: k, lr_max and weight_sum are kept per
    parameter by liboptim (the reference keeps them per group): the same
    numbers while every parameter of a group has a gradient at every step;
    a parameter without one does not advance its own. The group keys k,
    lr_max, weight_sum and scheduled_lr are refreshed after each step from
    the group's first stepped parameter; k, lr_max or weight_sum set by hand
    (k = 0 to warm up again) become the group's parameters' at the next step,
    as the reference reads them. One mode for the whole optimizer: train()
    and eval() move every group (a group added later too; the reference's
    new group starts with train_mode False). foreach is accepted, no effect.
    The weight decay is evaluated at y, as in the reference.
"""


class SGDScheduleFree(_ScheduleFree):
    __doc__ = """Schedule-free SGD (Defazio et al. 2024, "The Road Less Scheduled"), as
    the authors' SGDScheduleFree (github.com/facebookresearch/schedule_free,
    schedulefree/sgd_schedulefree.py at 59ed9b6), stepped by liboptim.

    No lr schedule is needed: the parameters hold y = (1 - momentum) z +
    momentum x while training, where z is the SGD sequence and x its
    weighted average; call train() before training and eval() before
    evaluating or saving the model (the parameters then hold x).

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1.0).
        momentum (float, optional): in (0, 1) (default: 0.9).
        weight_decay (float, optional): L2 penalty, evaluated at y (default: 0).
        warmup_steps (int, optional): linear lr warm-up over this many steps (default: 0).
        r (float, optional): polynomial weighting of the average, (k+1)^r (default: 0).
        weight_lr_power (float, optional): weights lr_max^weight_lr_power (default: 2).
        foreach (bool, optional): accepted, no effect.

    state[p] is {'z': tensor} after p's first step, as the reference.
    """ + _SF_DOC + _COMMON_DOC

    _rule_name = "sgd_schedule_free"
    _complex_reason = "schedule-free SGD is defined for real parameters (the reference's lerp_ of complex tensors is not followed)"
    _hp_spec = _spec("lr", "momentum", "weight_decay", "warmup_steps", "r", "weight_lr_power")
    _required_slots = ("z",)

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0, warmup_steps=0, r=0.0, weight_lr_power=2,
                 foreach=None, *, nonfinite="propagate", clip_grad_norm=None, clip_grad_value=None,
                 master_weights=False, stochastic_rounding=False, loss_scale=None, state_dtype=None):
        if not 0 < momentum < 1:
            raise ValueError("Momentum must be between 0 and 1 exclusive: {}".format(momentum))
        defaults = dict(lr=lr, momentum=momentum, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
        self._sf_init()


class AdamWScheduleFree(_ScheduleFree):
    __doc__ = """Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), as
    the authors' AdamWScheduleFree (github.com/facebookresearch/schedule_free,
    schedulefree/adamw_schedulefree.py at 59ed9b6; the later inner_momentum,
    default 0, is not supported), stepped by liboptim.

    The parameters hold y = (1 - beta1) z + beta1 x while training; call
    train() before training and eval() before evaluating or saving the model.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 0.0025).
        betas (Tuple[float, float], optional): beta1 in (0, 1) interpolates y,
            beta2 in [0, 1) averages g^2 (default: (0.9, 0.999)).
        eps (float, optional): added to the denominator, outside the root (default: 1e-8).
        weight_decay (float, optional): added to the normalized gradient at y (default: 0).
        warmup_steps (int, optional): linear lr warm-up over this many steps (default: 0).
        r (float, optional): polynomial weighting of the average, (k+1)^r (default: 0).
        weight_lr_power (float, optional): weights lr_max^weight_lr_power (default: 2).
        foreach (bool, optional): accepted, no effect.

    state[p] is {'z', 'exp_avg_sq'} after p's first step, as the reference.
    """ + _SF_DOC + _COMMON_DOC

    _rule_name = "adamw_schedule_free"
    _complex_reason = "schedule-free AdamW is defined for real parameters (the reference's lerp_ of complex tensors is not followed)"
    _hp_spec = _spec("lr", "betas", "eps", "weight_decay", "warmup_steps", "r", "weight_lr_power")
    _required_slots = ("z", "exp_avg_sq")

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0, r=0.0,
                 weight_lr_power=2.0, foreach=None, *, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False, loss_scale=None,
                 state_dtype=None):
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
        self._sf_init()
