"""optim.torch.SAM: Sharpness-Aware Minimization (Foret et al. 2020) and ASAM
(Kwon et al. 2021) around an optim.torch optimizer, with the interface of the
widely used reference PyTorch SAM (github.com/davda54/sam), computed by
liboptim's optim_sam (include/optim_sam.h) on the base optimizer's C object.
"""
import math

import numpy as np
import torch
from torch.optim.optimizer import Optimizer

from .. import _core
from .._capi import OptimError
from . import _distributed, _groups, _members, _optimizers
from ._base import _Optimizer
from ._step import bind, nonfinite_error

__all__ = ["SAM"]

# SAM's own group keys, as the reference keeps rho and adaptive in its groups.
_SAM_KEYS = ("rho", "adaptive", "p", "eta")
# Keys of the reference's per-parameter state (the w saved by first_step;
# e_w in its first version): meaningless once a step is complete.
_REFERENCE_STATE_KEYS = ("old_p", "e_w")


def _resolve_base(base_optimizer):
    """The optim.torch class to build the base optimizer from."""
    names = ", ".join(_optimizers.__all__)
    if isinstance(base_optimizer, type):
        if issubclass(base_optimizer, _Optimizer):
            return base_optimizer
        name = base_optimizer.__name__
        if name in _optimizers.__all__ and getattr(torch.optim, name, None) is base_optimizer:
            return getattr(_optimizers, name)
        raise TypeError("SAM: base_optimizer %s.%s is not supported: liboptim's SAM wraps an optim.torch "
                        "optimizer (%s), or the torch.optim class of the same name, which it replaces by "
                        "optim.torch's" % (base_optimizer.__module__, base_optimizer.__qualname__, names))
    if isinstance(base_optimizer, Optimizer):
        raise TypeError("SAM: base_optimizer must be a class, not an instance (%s): SAM builds the base "
                        "optimizer over its own param_groups, e.g. SAM(model.parameters(), optim.torch.SGD, "
                        "lr=0.1, momentum=0.9)" % type(base_optimizer).__name__)
    raise TypeError("SAM: base_optimizer = %r must be an optim.torch optimizer class (%s)" % (base_optimizer, names))


def _real(value, name, where):
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("%s: %s = %r must be a number" % (where, name, value))
    try:
        return float(value.item() if torch.is_tensor(value) and value.numel() == 1 else value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError("%s: %s = %r must be a number" % (where, name, value)) from None


def _parse(values, where):
    """(rho, p, adaptive, eta) checked, from a mapping with SAM's four values
    under its four names."""
    rho = _real(values["rho"], "rho", where)
    if not (rho >= 0 and math.isfinite(rho)):
        raise ValueError("%s: rho = %r must be a finite number >= 0" % (where, rho))
    p = _real(values["p"], "p", where)
    if not p > 1:
        raise ValueError("%s: p = %r must be > 1 or inf (the perturbation's norm; its dual norm q = p/(p-1) "
                         "measures the gradient)" % (where, p))
    adaptive = values["adaptive"]
    try:
        ok = adaptive in (True, False)
    except (TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        raise ValueError("%s: adaptive = %r must be True or False" % (where, adaptive))
    adaptive = bool(adaptive)
    eta = _real(values["eta"], "eta", where)
    if not (eta >= 0 and math.isfinite(eta)):
        raise ValueError("%s: eta = %r must be a finite number >= 0" % (where, eta))
    if eta != 0 and not adaptive:
        raise ValueError("%s: eta = %r applies only to ASAM (adaptive=True), whose T_w = |w| + eta; "
                         "plain SAM has T_w = 1" % (where, eta))
    return rho, p, adaptive, eta


class SAM(Optimizer):
    """Sharpness-Aware Minimization (Foret et al. 2020) and ASAM (Kwon et al.
    2021) around an optim.torch optimizer, as the reference PyTorch SAM
    (github.com/davda54/sam), computed by liboptim (include/optim_sam.h).

    SAM minimises max_{||e||_p <= rho} L(w + e) with two gradient evaluations
    per step:

        loss_fn(model(x), y).backward()   # gradient at w
        sam.first_step(zero_grad=True)    # save w, move to w + e_hat
        loss_fn(model(x), y).backward()   # gradient at w + e_hat
        sam.second_step(zero_grad=True)   # back to w, base step with that gradient

    or sam.step(closure) with a closure that recomputes the loss and calls
    backward(), after a first backward() at w. With h = T_w g, where T_w = 1
    (SAM) or |w| + eta (ASAM), and 1/p + 1/q = 1:

        e_hat = rho T_w sign(h) |h|^(q-1) / ||h||_q^(q-1)
        p = 2:   e_hat = rho T_w^2 g / ||T_w g||_2       (the reference's formula)
        p = inf: e_hat = rho T_w sign(T_w g)

    the norms taken over all parameters as one vector (for p = 2, 1e-12 is
    added to the norm, as the reference does).

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        base_optimizer (type): the class of the base optimizer, an optim.torch
            class (optim.torch.SGD, ...). A torch.optim class of the same name
            (torch.optim.SGD, ...) is accepted and replaced by optim.torch's,
            which takes the same arguments; anything else raises TypeError.
        rho (float, optional): radius of the perturbation, >= 0 (default: 0.05).
        adaptive (bool, optional): ASAM (default: False).
        p (float, optional): the norm of the perturbation's ball, > 1 or inf
            (default: 2, as the reference).
        eta (float, optional): ASAM's T_w = |w| + eta, >= 0; 0 as the reference's
            adaptive=True (default: 0); must be 0 without adaptive.
        **kwargs: the base optimizer's arguments (lr, momentum, ...,
            nonfinite, clip_grad_norm).

    As in the reference, rho and adaptive (and here p and eta) are keys of
    every param group, param_groups is the base optimizer's list itself (an lr
    scheduler may be given either), and base_optimizer is the base optimizer.
    Each group has its own rho, adaptive and eta, as in the reference; p is
    one value for all groups, since it defines the one norm taken over all
    parameters (groups that disagree on p: ValueError at first_step).
    Adadelta has its own 'rho' key: around Adadelta SAM's rho is kept under
    'sam_rho' (and Adadelta's rho is set per group).

    Differences from the reference:
      - step(closure) returns the closure's loss (at w + e_hat); if the closure
        raises, the parameters are restored to w before the error propagates.
      - state_dict() is the base optimizer's (its state, e.g. momentum buffers,
        which the reference does not save; the groups with SAM's keys);
        load_state_dict() takes it, a base optimizer's state (SAM's keys then
        keep their current values) or the reference's (its 'old_p' entries are
        dropped). state is the base optimizer's state.
      - A parameter whose gradient is None at first_step is not perturbed; one
        that was perturbed is restored by second_step even if its gradient is
        None by then (the reference leaves it at w + e_hat).
      - restore() abandons a step after first_step (parameters back to w, no
        update).
      - NaN or Inf gradients follow the base optimizer's nonfinite policy:
        'propagate' perturbs with NaN (as the reference), 'skip' skips the whole
        SAM step (first_step moves nothing, second_step does not update; counted
        once in skipped_steps), 'error' makes first_step raise
        NonFiniteGradientError naming the parameter, with nothing moved. The
        gradient at w + e_hat is checked by the base step as usual (w is then
        restored, not updated).
      - Fused clipping (clip_grad_norm) applies to the base step's gradient,
        the one at w + e_hat.

    Between the halves (docs/SAM.md):
      - w belongs to each parameter, not to its memory: if p.data is replaced
        after first_step (also by a closure that then raises), second_step and
        restore write w into the new memory, as an in-place write between the
        halves is overwritten; the old memory is never written. They check every
        parameter first: one no longer valid (dtype, shape, layout, storage
        freed or shrunk, memory shared with another) raises TypeError or
        ValueError naming it, nothing changed; give it valid memory and call
        restore() (or second_step()) again.
      - The base optimizer refuses its own step(), add_param_group() and
        checkpoints (RuntimeError), as add_param_group() here does: second_step()
        or restore() can always bring the parameters back to w.
      - copy.deepcopy, pickle and torch.save work between steps (the base
        optimizer is copied with its state, as torch's is), not between the
        halves (w lives in the C SAM object).

    Threads: the SAM and its base optimizer are one optimizer: their calls
    hold the base's lock, so they never run at once (two threads driving one
    SAM take turns call by call, which does not make their halves pair up:
    drive one SAM from one thread). Different SAMs run in parallel.
    Lifetime: the SAM keeps its base alive; no reference cycle is made.
    """

    def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, p=2, eta=0.0, **kwargs):
        rank = _distributed.zero_local_rank()
        if rank is not None:
            raise ValueError(_distributed.sam_refusal(rank))
        base_cls = _resolve_base(base_optimizer)
        base_keys = {key for key, _, _ in base_cls._hp_spec}
        self._keys = {k: ("sam_" + k if k in base_keys else k) for k in _SAM_KEYS}
        _parse(dict(rho=rho, adaptive=adaptive, p=p, eta=eta), "SAM")
        self._c = None        # the C SAM object, made at the first first_step
        self._c_shape = None  # (param count, group count, p) it was made with
        self._c_groups = None  # per group: the (rho, adaptive, eta) last pushed to C
        defaults = {self._keys["rho"]: rho, self._keys["adaptive"]: adaptive, self._keys["p"]: p,
                    self._keys["eta"]: eta}
        defaults.update(kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_cls(self.param_groups, **kwargs)
        self.defaults.update(self.base_optimizer.defaults)
        self._base_name = "SAM(%s)" % base_cls.__name__

    # param_groups and state are the base optimizer's, whatever replaces its
    # lists (its load_state_dict does); before it exists (during torch's
    # constructor) they are SAM's own.

    @property
    def param_groups(self):
        base = self.__dict__.get("base_optimizer")
        return base.param_groups if base is not None else self.__dict__["_own_groups"]

    @param_groups.setter
    def param_groups(self, value):
        base = self.__dict__.get("base_optimizer")
        if base is not None:
            base.param_groups = value
        else:
            self.__dict__["_own_groups"] = value

    @property
    def state(self):
        base = self.__dict__.get("base_optimizer")
        return base.state if base is not None else self.__dict__["_own_state"]

    @state.setter
    def state(self, value):
        base = self.__dict__.get("base_optimizer")
        if base is not None:
            base.state = value
        else:
            self.__dict__["_own_state"] = value

    def add_param_group(self, param_group):
        """Add a group to the base optimizer (param_groups is shared), with
        SAM's keys filled from the constructor's values. Refused between
        first_step and second_step."""
        base = self.__dict__.get("base_optimizer")
        if base is None:  # torch's constructor, before the base exists
            return super().add_param_group(param_group)
        if self.perturbed:
            raise RuntimeError("SAM.add_param_group: the parameters are at w + e_hat (between first_step and "
                               "second_step); finish or restore() the step first")
        if isinstance(param_group, dict):
            for k in _SAM_KEYS:
                param_group.setdefault(self._keys[k], self.defaults[self._keys[k]])
            self._group_settings(param_group, "SAM: param group %d" % len(self.param_groups))
        base.add_param_group(param_group)

    # ---- settings -----------------------------------------------------------------

    def _group_settings(self, group, where):
        keys = self._keys
        missing = [keys[k] for k in _SAM_KEYS if keys[k] not in group]
        if missing:
            raise ValueError("%s: has no %s" % (where, ", ".join("'%s'" % k for k in missing)))
        return _parse({k: group[keys[k]] for k in _SAM_KEYS}, where)

    def _settings(self, groups, what="param group"):
        """Every group's (rho, p, adaptive, eta), checked; p must be one value."""
        out = []
        for gi, group in enumerate(groups):
            s = self._group_settings(group, "SAM: %s %d" % (what, gi))
            if out and s[1] != out[0][1]:
                raise ValueError("SAM: %s %d has %s = %r but group 0 has %r: p defines the one norm taken over "
                                 "all parameters; give every group the same" % (what, gi, self._keys["p"], s[1],
                                                                                 out[0][1]))
            out.append(s)
        return out

    def _handle(self, settings):
        """The C SAM object, made again when the base optimizer has other
        parameters or groups or p changed; each group's rho, adaptive and eta
        pushed when they changed."""
        base_h = self.base_optimizer._h
        p = settings[0][1]
        shape = (base_h, base_h.param_count(), len(settings), p)  # a new C object after a param_groups edit
        if self._c is None or self._c_shape != shape:
            self._c = None  # free the old one before allocating its copy of w again
            rho, _, adaptive, eta = settings[0]
            try:
                self._c = _core.SamHandle(base_h, rho, p, adaptive, eta)
            except OptimError as e:
                raise ValueError("SAM: %s" % e) from None
            self._c_shape = shape
            self._c_groups = [None] * len(settings)
        for gi, (rho, _, adaptive, eta) in enumerate(settings):
            if self._c_groups[gi] != (rho, adaptive, eta):
                try:
                    self._c.set_group(gi, rho, adaptive, eta)
                except OptimError as e:
                    raise ValueError("SAM: param group %d: %s" % (gi, e)) from None
                self._c_groups[gi] = (rho, adaptive, eta)
        return self._c

    @property
    def perturbed(self):
        """True between first_step() and second_step() (or restore()): the
        parameters are at w + e_hat."""
        return self._c is not None and self._c.is_perturbed()

    @property
    def last_grad_norm(self):
        """The dual norm ||T_w g||_q the last first_step() measured (NaN before any)."""
        return self._c.last_grad_norm() if self._c is not None else math.nan

    @property
    def last_step_skipped(self):
        """True if the last SAM step was skipped for a NaN or Inf gradient (the base's)."""
        return self.base_optimizer.last_step_skipped

    @property
    def skipped_steps(self):
        """Steps skipped for NaN or Inf gradients (the base optimizer's count)."""
        return self.base_optimizer.skipped_steps

    # ---- the step -----------------------------------------------------------------------

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        """Save w and move every parameter with a gradient to w + e_hat
        (computed from the gradients now in .grad). zero_grad: then zero the
        gradients (as optimizer.zero_grad())."""
        base = self.base_optimizer
        c = base._c
        with c.lock:
            if self.perturbed:
                raise RuntimeError("SAM.first_step: called twice: the parameters are already at w + e_hat; call "
                                   "second_step() (or restore() to abandon the step) first")
            settings = self._settings(self.param_groups)
            c = _members.sync(base)
            _groups.sync(c, base.param_groups)
            sam = self._handle(settings)
            n, pp, gp, pins = bind(c)
            if pins.sparse is not None:
                raise RuntimeError("SAM.first_step: sparse gradients are not supported (the ascent step moves "
                                   "every element); step with dense gradients")
            try:
                sam.first_step_with(n, pp, gp)
            except OptimError as e:
                raise self._error("first_step", "nothing moved", e) from None
            pins.write_back()  # parameters stepped through a working copy (_step.bind)
            del pins  # held until the call returned
        if zero_grad:
            self.zero_grad()

    def _error(self, call, what, e):
        """The Python error for OptimError e of a SAM call."""
        base = self.base_optimizer
        if e.code == _core.ENONFINITE:
            return nonfinite_error(base._c, "%s: %s" % (self._base_name, call), what, e)
        if e.code == _core.ESTATE:
            return RuntimeError("%s: %s: %s" % (self._base_name, call, e))
        return ValueError("%s: %s: %s" % (self._base_name, call, e))

    def _rebind(self, c, n, pp, gp):
        """Point the C object at the parameters' memory now, before w is
        written back: a parameter whose data was replaced since first_step
        gets w in its new memory; the old memory (perhaps freed) is never
        written. Only the new addresses are compared (optim_rebind)."""
        try:
            c.h.rebind(n, pp, gp)
        except OptimError as e:
            raise self._error("restoring w", "nothing changed: the parameters are still at w + e_hat", e) from None

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        """Restore w and take the base optimizer's step with the gradients now
        in .grad (those at w + e_hat). zero_grad: then zero the gradients.
        w goes into each parameter's memory as it is now (see the class's
        docstring); every parameter and gradient is checked first, and a bad
        one is refused with nothing changed (still at w + e_hat)."""
        sam = self._c
        if sam is None:
            raise RuntimeError("SAM.second_step: no first_step to complete; call first_step() first")
        base = self.base_optimizer
        c = base._c
        with c.lock:
            c = _members.sync(base)  # an edit of param_groups between the halves is refused
            _groups.sync(c, base.param_groups)
            n, pp, gp, pins = bind(c)
            if sam.is_perturbed():
                self._rebind(c, n, pp, gp)
            try:
                sam.second_step_with(n, pp, gp)
            except OptimError as e:
                pins.write_back()  # w was restored (into the working copies of parameters stepped through one)
                raise self._error("second_step", "w was restored and nothing was updated", e) from None
            pins.write_back()
            del pins  # held until the calls returned
            if c.scalars:
                c.refresh_scalars()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self):
        """Abandon a step after first_step(): every perturbed parameter goes
        back to w, nothing is updated. Does nothing when not perturbed. w goes
        into each parameter's memory as it is now; every parameter is checked
        first (ValueError or TypeError naming a bad one, nothing changed: make
        it valid again and call restore() again)."""
        sam = self._c
        if sam is None:
            return
        c = self.base_optimizer._c
        with c.lock:
            if sam.is_perturbed():
                n, pp, gp, pins = bind(c, grads=False)
                self._rebind(c, n, pp, gp)
                sam.restore()
                pins.write_back()
                del pins  # held until the calls returned
            else:
                sam.restore()  # a step skipped at first_step: nothing to undo

    def step(self, closure=None):
        """One SAM step, as the reference's: first_step(zero_grad=True), then
        closure() (under torch.enable_grad()) to recompute the gradients at
        w + e_hat, then second_step(). The gradients at w must already be in
        .grad. Returns what the closure returned. If the closure raises, the
        parameters are restored to w and the error propagates (if they cannot
        be, because the closure left a parameter without valid memory, a
        RuntimeError says so, from the closure's error)."""
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and calls backward() at the "
                             "perturbed weights (or call first_step() and second_step() around your own "
                             "second forward-backward pass)")
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        try:
            loss = closure()
        except BaseException as exc:
            try:
                self.restore()
            except Exception as err:
                raise RuntimeError("SAM.step: the closure raised %s, and w could not be restored: %s. The "
                                   "parameters stay at w + e_hat: give them valid memory and call restore()"
                                   % (type(exc).__name__, err)) from exc
            raise
        self.second_step()
        return loss

    # ---- state -----------------------------------------------------------------------------

    def state_dict(self):
        """The base optimizer's state_dict(): its state and the shared groups
        (which hold SAM's keys)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict):
        """Load a state from SAM.state_dict(), from the base optimizer's class
        (SAM's keys then keep their current values) or from the reference SAM
        (its per-parameter 'old_p' is dropped). Everything is checked before
        anything changes. Refused between first_step and second_step."""
        if self.perturbed:
            raise RuntimeError("SAM.load_state_dict: the parameters are at w + e_hat (between first_step and "
                               "second_step); finish or restore() the step first")
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("SAM: a state dict has the keys 'state' and 'param_groups'")
        groups = self.param_groups
        saved_groups = list(state_dict["param_groups"])
        new_groups = []
        for gi, saved in enumerate(saved_groups):
            g = dict(saved)
            if gi < len(groups):
                for k in _SAM_KEYS:
                    g.setdefault(self._keys[k], groups[gi][self._keys[k]])
            new_groups.append(g)
        if len(new_groups) == len(groups):
            self._settings(new_groups, "loaded param group")
        state = {}
        for key, value in state_dict["state"].items():
            if isinstance(value, dict) and any(k in value for k in _REFERENCE_STATE_KEYS):
                value = {k: v for k, v in value.items() if k not in _REFERENCE_STATE_KEYS}
                if not value:
                    continue
            state[key] = value
        # The base optimizer's own top-level keys (optim_precision, optim_ema, ...) go through as they are: a
        # dict rebuilt from 'state' and 'param_groups' alone dropped them (the EMA's averages were lost).
        extra = {k: v for k, v in state_dict.items() if k not in ("state", "param_groups")}
        self.base_optimizer.load_state_dict(dict(extra, state=state, param_groups=new_groups))

    # ---- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, path):
        """The base optimizer's save_checkpoint (docs/CHECKPOINT.md): its
        groups, state, counters and settings, written atomically. SAM itself
        carries nothing from one step to the next; its group keys (rho,
        adaptive, p, eta) are not in the file: build the SAM that loads it
        with the same ones. Refused between first_step and second_step (the
        parameters are then at w + e_hat, not at w)."""
        if self.perturbed:
            raise RuntimeError("SAM.save_checkpoint: the parameters are at w + e_hat (between first_step and "
                               "second_step); finish or restore() the step first")
        self.base_optimizer.save_checkpoint(path)

    def load_checkpoint(self, path, match="name"):
        """The base optimizer's load_checkpoint: its groups' hyperparameters
        and settings become the saved ones; SAM's keys keep their values.
        Everything is checked before anything changes. Refused between
        first_step and second_step."""
        if self.perturbed:
            raise RuntimeError("SAM.load_checkpoint: the parameters are at w + e_hat (between first_step and "
                               "second_step); finish or restore() the step first")
        self.base_optimizer.load_checkpoint(path, match)

    def __getstate__(self):
        """As a torch optimizer, with the base optimizer (whose own state is
        pickled as torch's is) and SAM's settings. Refused between first_step
        and second_step: the saved w lives in the C SAM object."""
        if self.perturbed:
            raise RuntimeError("SAM: cannot be copied or pickled between first_step and second_step (the saved w "
                               "is in the C SAM object); finish or restore() the step first")
        return {"defaults": self.defaults, "base_optimizer": self.base_optimizer, "_keys": self._keys,
                "_base_name": self._base_name}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._c = None  # made again at the next first_step
        self._c_shape = None
        self._c_groups = None
        self._hook_for_profile()
