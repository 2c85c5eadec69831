"""The base of optim.torch's optimizers: a torch.optim.Optimizer whose update
runs in liboptim's optimizer object.

One C object (optim_create) holds every parameter group and every
parameter's state. A step checks every tensor, pushes the hyperparameters
of groups that changed since the last step, and makes one call,
optim_step_with, which updates every parameter in one parallel pass.

The class puts together rooms of one concern each:
  _cobject     the C object (its handle and lifetime, optim._core) and the
               parameters registered in it
  _groups      param groups and their sync to C (hyperparameters, the
               gradient checks kept in every group)
  _members     the tensors of the groups' 'params' lists, edited by hand:
               seen at each step, the C object rebuilt around them
  _state       optimizer.state: views of the C state memory
  _state_dict  state_dict / load_state_dict, and pickling
  _checkpoint  save_checkpoint / load_checkpoint
  _step        the step's tensors: checked, pinned, bound to C
  _tensors     what makes a tensor safe to give to C

Lifetime: the optimizer owns its CObject; nothing there refers back to the
optimizer, so `del opt` frees the C object at once (no reference cycle),
unless a view of its state memory is still held (the view keeps the C
memory, not the optimizer).

Threads: every operation holds the optimizer's lock from its first check to
its last C call: operations on one optimizer are serialized, on different
optimizers they run in parallel (ctypes releases the GIL). See the README's
"Threads" section for what a step does when another thread replaces a
tensor meanwhile.
"""
import functools
import inspect

import torch
from torch.optim.optimizer import Optimizer, required

from .. import _constants, _core
from .._capi import OptimError
from . import _checkpoint, _distributed, _ema, _groups, _members, _precision, _state_dict, _step
from ._cobject import CObject, Rule
from ._groups import CLIP_KEY, CLIPV_KEY, NONFINITE_KEY, check_flags
from ._state import State
from ._step import NonFiniteGradientError, bind, nonfinite_error, sam_guard

__all__ = ["NonFiniteGradientError", "_Optimizer", "_check_flags"]

_check_flags = check_flags  # used by the classes' constructors


class _Optimizer(Optimizer):
    """Base of optim.torch's classes; see optim.torch for the user's view.

    A subclass sets:
      _rule_name   liboptim's rule ("adam")
      _hp_spec     (group key, kind, C field names): the group keys pushed to C;
                   kind is "real", "bool", "pair" (betas) or "placement"
      _fixed       {C field name: value} set for every group (AdamW's decoupling)
      _step_kind   "tensor" (torch's 0-dim float32 'step'), "int", or None (no 'step')
      _required_slots  slot names torch always creates (missing on load = error)
      _scalar_keys     scalar state beside 'step' (NAdam's 'mu_product'; ASGD's 'eta', 'mu')
      _eager_state     state exists before the first step (Adagrad)

    Threads: calls on one optimizer are serialized by its lock (two threads
    stepping it take turns); calls on different optimizers run in parallel.
    A step uses the tensors' memory as it is when the step checks them: if
    another thread replaces a parameter's or a gradient's data (p.data = ...,
    p.grad.data = ...) meanwhile, the step updates the memory it checked,
    which it keeps alive until it returns, and the next step follows the new
    tensor. Freeing memory in place (storage().resize_()) while a step runs
    is the caller's to avoid, as with torch's own operations. (Replacing
    p.grad itself from another thread, p.grad = None, can crash torch 1.13
    in its own deallocation, with torch.optim too.)
    """

    _fixed = {}
    _scalar_keys = ()
    _eager_state = False
    # Complex parameters (_cobject.Rule): None refuses them (with _complex_reason), "real" steps
    # their real view as torch 1.13 does, "rounding" too where torch computes the same arithmetic
    # on the complex tensors with other roundings.
    _complex = None
    _complex_reason = None
    _complex_refuse = {}  # C field -> why a complex parameter cannot step while it is set (_step.bind)

    def __init__(self, params, defaults):
        defaults = dict(defaults)
        prec = _precision.parse(defaults, type(self).__name__)  # optimizer-wide, not param group keys
        self._init_c(defaults)
        self._c.master_weights = prec["master_weights"]
        self._c.stochastic_rounding = prec["stochastic_rounding"]
        self._c.state_dtype = prec["state_dtype"]
        _precision.apply_loss_scale(self._c.h, prec["loss_scale"], type(self).__name__)
        # Built by a ZeroRedundancyOptimizer over one rank's shard? Then fused
        # checks over all gradients are refused (_distributed).
        # (A dynamic loss scale there agrees on overflows with the other ranks at every step.)
        zero = _distributed.zero_constructing()
        if zero is not None:
            _distributed.attach(self._c, zero)
        defaults = dict(defaults)
        defaults.setdefault(NONFINITE_KEY, "propagate")
        defaults.setdefault(CLIP_KEY, None)
        defaults.setdefault(CLIPV_KEY, None)
        owner = self._c.owner
        _groups.parse_nonfinite(defaults[NONFINITE_KEY], owner)
        defaults[CLIP_KEY] = _groups.parse_clip(defaults[CLIP_KEY], owner)
        defaults[CLIPV_KEY] = _groups.parse_clip_value(defaults[CLIPV_KEY], owner)
        super().__init__(params, defaults)
        c = self._c
        _groups.push_checks(c, _groups.read_checks(c, self.param_groups, "param group"))
        self.state = State(c)
        _distributed.publish(c, self.param_groups)

    def __init_subclass__(cls, **kwargs):
        """Every class takes ema_decay= (None: no EMA; a number in [0, 1))
        and ema_warmup= (False) beside its own keywords (include/optim_ema.h,
        docs/EMA.md): its __init__ is wrapped here, once per class, so that
        the keywords live in one place. The signature shown stays the
        class's own (torch's)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_optim_ema", False):
            return

        @functools.wraps(init)
        def __init__(self, *args, ema_decay=None, ema_warmup=False, **kw):
            init(self, *args, **kw)
            if ema_decay is not None or ema_warmup is not False:
                self.set_ema(ema_decay, ema_warmup)

        __init__._optim_ema = True
        cls.__init__ = __init__

    def _init_c(self, defaults):
        """A new C object for this class's rule, with no groups yet."""
        self._c = CObject(Rule.of(type(self)))
        self.defaults = defaults
        self.param_groups = []
        self.state = State(self._c)

    @property
    def _h(self):
        """The C object's handle (optim._core.Handle)."""
        return self._c.h

    @property
    def _owner(self):
        return self._c.owner

    def _fill_loaded_group(self, gi, group):
        """Complete a group being loaded with what only this optimizer knows
        (AdaBound's base_lr when loading the reference's state)."""

    @classmethod
    def _ctor_defaults(cls):
        sig = inspect.signature(cls.__init__)
        return {name: prm.default for name, prm in sig.parameters.items()
                if prm.default is not inspect.Parameter.empty and prm.default is not required}

    # ---- gradient checks: the user's view ------------------------------------------

    def set_nonfinite(self, policy):
        """What a step does when a gradient holds NaN or Inf: 'propagate'
        (IEEE arithmetic as torch.optim: only those elements go bad; the
        default), 'skip' (skip the whole step: parameters, state and step
        counters untouched, counted in skipped_steps) or 'error' (skip it and
        raise NonFiniteGradientError naming the parameter). Applies to the
        whole optimizer; kept in every param group under 'nonfinite'."""
        c = self._c
        code = _groups.parse_nonfinite(policy, "%s.set_nonfinite" % c.owner)
        with c.lock:
            _groups.refuse_sharded(c, (code,) + c.checks_pushed[1:])
            for group in self.param_groups:
                group[NONFINITE_KEY] = policy
            self.defaults[NONFINITE_KEY] = policy
            _groups.push_checks(c, (code,) + c.checks_pushed[1:])

    def set_clip_grad_norm(self, max_norm, norm_type=2.0):
        """Clip the gradients to a total norm of max_norm at every step, as
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type) before
        step() would, fused into the step (the gradient tensors are not
        written). max_norm: a finite number > 0, or None to turn clipping off;
        norm_type > 0 or inf. Kept in every param group under 'clip_grad_norm'
        as None or (max_norm, norm_type)."""
        c = self._c
        value = None if max_norm is None else (max_norm, norm_type)
        where = "%s.set_clip_grad_norm" % c.owner
        clip = _groups.parse_clip(value, where)
        with c.lock:
            if clip is not None and c.checks_pushed[2] is not None:
                raise ValueError("%s: clip_grad_value = %r is on: norm and value clipping cannot both be on (turn it "
                                 "off with set_clip_grad_value(None) first)" % (where, c.checks_pushed[2]))
            _groups.refuse_sharded(c, (c.checks_pushed[0], clip, c.checks_pushed[2]))
            for group in self.param_groups:
                group[CLIP_KEY] = clip
            self.defaults[CLIP_KEY] = clip
            _groups.push_checks(c, (c.checks_pushed[0], clip, c.checks_pushed[2]))

    def set_clip_grad_value(self, clip_value):
        """Clamp every gradient element to [-clip_value, clip_value] at every
        step, as torch.nn.utils.clip_grad_value_(params, clip_value) before
        step() would, fused into the step (the gradient tensors are not
        written; a NaN stays NaN). clip_value: a finite number > 0, or None to
        turn it off. Cannot be on together with clip_grad_norm. Kept in every
        param group under 'clip_grad_value'."""
        c = self._c
        where = "%s.set_clip_grad_value" % c.owner
        cv = _groups.parse_clip_value(clip_value, where)
        with c.lock:
            if cv is not None and c.checks_pushed[1] is not None:
                raise ValueError("%s: clip_grad_norm = %s is on: norm and value clipping cannot both be on (turn it "
                                 "off with set_clip_grad_norm(None) first)"
                                 % (where, _groups.clip_text(c.checks_pushed[1])))
            for group in self.param_groups:
                group[CLIPV_KEY] = cv
            self.defaults[CLIPV_KEY] = cv
            _groups.push_checks(c, c.checks_pushed[:2] + (cv,))

    # ---- reduced precision: the user's view (_precision) -----------------------------

    @property
    def loss_scale(self):
        """The current loss scale: multiply the loss by it before backward()
        (1.0 without loss_scale=). With loss_scale='dynamic' it follows
        torch.cuda.amp.GradScaler's update at every step()."""
        with self._c.lock:
            _distributed.adopt(self._c, self.param_groups)  # loaded by a ZeroRedundancyOptimizer
            return self._c.h.loss_scale_value()

    @property
    def seed(self):
        """The seed of stochastic rounding (0 unless set_seed was called)."""
        with self._c.lock:
            _distributed.adopt(self._c, self.param_groups)
            return self._c.h.get_seed()

    def set_seed(self, seed):
        """Seed stochastic rounding's random stream (an int in [0, 2^64))."""
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 64:
            raise ValueError("%s.set_seed: seed = %r must be an int in [0, 2^64)" % (self._c.owner, seed))
        with self._c.lock:
            _distributed.adopt(self._c, self.param_groups)
            self._c.h.set_seed(seed)
            _distributed.publish(self._c, self.param_groups)

    def master_sync(self, p):
        """Re-initialise parameter p's fp32 master from p's values (after
        writing new weights into a bfloat16/float16 parameter yourself: the
        master is otherwise the truth, and the next step would overwrite p
        from it). ValueError if p has no master."""
        c = self._c
        with c.lock:
            c = _members.sync(self)
            i = c.index.get(p)
            if i is None or not c.masters[i]:
                raise ValueError("%s.master_sync: the tensor is not a parameter with an fp32 master "
                                 "(master_weights=True, bfloat16/float16 parameters)" % c.owner)
            _step.with_live_params(c, lambda: c.h.master_sync(i))  # C reads p's memory: live, held

    @property
    def nonfinite(self):
        """The non-finite policy: 'propagate', 'skip' or 'error' (see set_nonfinite)."""
        return _groups.nonfinite_name(_groups.read_checks(self._c, self.param_groups, "param group")[0])

    @property
    def clip_grad_norm(self):
        """None, or (max_norm, norm_type) of the fused clipping (see set_clip_grad_norm)."""
        return _groups.read_checks(self._c, self.param_groups, "param group")[1]

    @property
    def clip_grad_value(self):
        """None, or the clip_value of the fused value clipping (see set_clip_grad_value)."""
        return _groups.read_checks(self._c, self.param_groups, "param group")[2]

    def set_threads(self, threads):
        """Threads a step may use: 0 (the default) follows OpenMP's setting at
        each step, which torch.set_num_threads() also sets (so by default a
        step uses as many threads as torch's own operators); k > 0: at most k;
        1: the calling thread only. Results are bit-identical for any value.
        Not saved by state_dict (a property of the process, not of the run)."""
        owner = self._c.owner
        if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads < 2 ** 31:
            raise ValueError("%s.set_threads: threads = %r must be an int >= 0 (0: follow torch.set_num_threads / "
                             "OpenMP)" % (owner, threads))
        try:
            self._c.h.set_threads(threads)
        except OptimError as e:
            raise ValueError("%s.set_threads: %s" % (owner, e)) from None

    @property
    def threads(self):
        """The thread setting of set_threads (0: follow OpenMP / torch.set_num_threads)."""
        return self._c.h.get_threads()

    @property
    def last_step_skipped(self):
        """True if the last step() skipped its update for a NaN or Inf gradient."""
        return self._c.h.last_step_skipped()

    @property
    def skipped_steps(self):
        """Steps skipped for NaN or Inf gradients (under 'skip' or 'error') since
        the optimizer was made. Not saved by state_dict()."""
        return self._c.h.skipped_steps() + self._c.skipped_base

    @property
    def last_grad_norm(self):
        """The total gradient norm measured by the last step(): of the clipping's
        norm_type when clipping is on, else the 2-norm when nonfinite is 'skip'
        or 'error'; NaN when the step measured none (neither is on) or a
        gradient held NaN. A float (before any clipping)."""
        return self._c.h.last_grad_norm()

    # ---- the EMA of the weights (optim_ema.h; docs/EMA.md) ------------------------

    def set_ema(self, decay, warmup=False):
        """Keep an exponential moving average of the weights, updated by every
        step() in the same pass: ema = d * ema + (1 - d) * p, d = decay, or
        with warmup=True min(decay, (1 + t) / (10 + t)), t the averages taken
        before; the first average copies the parameters (torch's
        AveragedModel with n_averaged == 0). decay in [0, 1), or None to turn
        it off (freeing the averages). Turning it on (again) starts a new
        average; changing decay or warmup while on keeps it. The same as the
        constructor's ema_decay= and ema_warmup=."""
        c = self._c
        where = "%s.set_ema" % c.owner
        decay, warmup = _ema.parse(decay, warmup, where)
        if decay is None and warmup:
            raise ValueError("%s: ema_warmup=True needs an ema_decay" % where)
        with c.lock:
            sam_guard(c, "set_ema")
            c = _members.sync(self)
            _ema.refuse_swapped(c, "set_ema")
            _step.with_live_params(c, lambda: _ema.apply(c, decay, warmup))  # C reads p's memory: live, held

    def swap_ema(self):
        """Exchange the parameters and their averages, for evaluation: the
        parameters then hold the EMA (rounded to nearest even in a
        bfloat16/float16 parameter), and a second call puts the trained
        weights back, bit for bit. step(), set_ema, load_state_dict,
        state_dict and load_checkpoint are refused (RuntimeError) while
        swapped. Returns True when the parameters now hold the EMA."""
        return _ema.swap(self)

    def ema_state(self):
        """None without an EMA, else a dict: 'decay', 'warmup', 'count' (the
        averages taken: torch's AveragedModel.n_averaged), 'swapped', and
        'averages', a list of new tensors (float32, float64 for float64
        parameters) in the order of param_groups' params (None while
        swapped)."""
        return _ema.state(self)

    # ---- step statistics (optim_stats.h; docs/STATS.md) ---------------------------

    def enable_stats(self, on=True):
        """Measure statistics of every step() that follows (on=True) or stop
        (False; off by default): per parameter, the gradient's norm, the
        update's RMS, its ratio to the parameter's RMS, its largest magnitude,
        the fraction of clamped elements, the effective learning rate, LAMB's
        and LARS's trust ratio, RAdam's rectification (step_stats()). Measured
        by the step's own pass, bit-identical for any thread count and CPU
        path; turning it on changes no parameter or state bit. Not saved by
        state_dict (a setting of the process, as set_threads)."""
        if not isinstance(on, bool):
            raise ValueError("%s.enable_stats: on = %r must be True or False" % (self._c.owner, on))
        self._c.h.set_stats(on)

    @property
    def stats_enabled(self):
        """Whether steps measure statistics (enable_stats)."""
        return self._c.h.stats_enabled()

    def step_stats(self):
        """The statistics of the last step() with statistics on: a list with
        one entry per parameter, in the order of param_groups' 'params'
        lists: None for a parameter that step did not update (no gradient, a
        skipped step), else a dict with the keys 'step' (the parameter's own
        step count after it, as torch's state['step']), 'numel', 'grad_norm',
        'update_rms', 'param_rms',
        'update_ratio', 'update_max', 'clamped_fraction', 'effective_lr'
        (NaN for Rprop), 'trust_ratio' (LAMB, LARS; else None) and
        'rectified' (RAdam: True or False; else None); floats. A sparse
        gradient's step gives the per-tensor values only (the element
        statistics NaN). Definitions in docs/STATS.md."""
        c = self._c
        trust = c.h.rule in (_constants.OPTIM_LAMB, _constants.OPTIM_LARS)
        with c.lock:
            out = []
            for group in self.param_groups:
                for p in group["params"]:
                    i = c.index.get(p)
                    st = c.h.param_stats(i) if i is not None else None
                    if st is None or st.step == 0:
                        out.append(None)
                        continue
                    out.append({"step": int(st.step), "numel": int(st.n) if st.has_elements else p.numel(),
                                "grad_norm": st.grad_norm, "update_rms": st.update_rms, "param_rms": st.param_rms,
                                "update_ratio": st.update_ratio, "update_max": st.update_max,
                                "clamped_fraction": st.clamped_fraction, "effective_lr": st.effective_lr,
                                "trust_ratio": st.trust_ratio if trust else None,
                                "rectified": None if st.rectified < 0 else bool(st.rectified)})
            return out

    # ---- parameters ------------------------------------------------------------

    def add_param_group(self, param_group):
        """Add a parameter group, as torch.optim.Optimizer.add_param_group. The
        group's hyperparameters are checked by liboptim (ValueError naming the
        value) and its tensors must be CPU, dense, of a dtype it steps (TypeError or
        ValueError naming the parameter). Refused (RuntimeError) while a SAM
        over this optimizer is between first_step and second_step."""
        c = self._c
        owner = c.owner
        if not isinstance(param_group, dict):
            raise TypeError("%s: param group must be a dict, got %s" % (owner, type(param_group).__name__))
        with c.lock:
            sam_guard(c, "add_param_group")
            c = _members.sync(self)
            _ema.refuse_swapped(c, "add_param_group")  # before anything changes (C refuses the parameters then)
            params = param_group["params"]
            if isinstance(params, torch.Tensor):
                params = [params]
            elif isinstance(params, set):
                raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                                "the ordering of tensors in sets will change between runs. Please use a list "
                                "instead.")
            else:
                params = list(params)
            names = self._param_names(param_group, params)
            if names is not None:
                params = [t for _, t in params] if params and isinstance(params[0], tuple) else params
                param_group["param_names"] = names
            param_group["params"] = params
            base = len(c.params)
            for j, p in enumerate(params):
                c.check_new_param(base + j, p)
            group = dict(param_group)
            for name, default in self.defaults.items():
                group.setdefault(name, default)
            gi = len(self.param_groups)
            values = _groups.group_values(c, group, gi)
            hp = _groups.hparams(c, values, gi, "param group")
            _groups.read_checks(c, self.param_groups + [group], "param group")
            c.check_disjoint(params, base)
            # The C object still holds the addresses of the last step, whose
            # memory may be gone (a gradient freed by zero_grad(set_to_none=
            # True), a parameter's data replaced) and reused by a new tensor:
            # point it at the parameters' memory now, without gradients, so
            # that optim_add_param compares the new memory with live memory only.
            n, pp, gp, pins = bind(c, grads=False)
            if n:
                try:
                    c.h.rebind(n, pp, gp)
                except OptimError as e:
                    raise ValueError("%s: add_param_group: %s" % (owner, e)) from None

            super().add_param_group(param_group)
            try:
                c.h.add_group(hp)
            except OptimError as e:
                self.param_groups.pop()
                raise ValueError("%s: param group %d: %s" % (owner, gi, _groups.keys_in(c, e))) from None
            c.pushed.append(values)
            c.add_params(gi, params, names)
            del pins

    def _param_names(self, param_group, params):
        """The names of a group's parameters, or None: from (name, tensor)
        pairs, as model.named_parameters() gives them (torch 2.6's named
        parameters), or from the group's 'param_names'. They name the
        parameters in liboptim (its messages, and checkpoints matched by name,
        whatever the order); without them parameter i is 'param<i>'. Names must
        be non-empty strings, unique in the optimizer."""
        owner = self._c.owner
        pairs = [isinstance(p, tuple) for p in params]
        if any(pairs):
            if not all(pairs) or not all(len(p) == 2 and isinstance(p[0], str) for p in params):
                raise TypeError("%s: a param group mixes (name, tensor) pairs with other items: give every "
                                "parameter as a (name, tensor) pair (model.named_parameters()) or none" % owner)
            names = [n for n, _ in params]
            if "param_names" in param_group and list(param_group["param_names"]) != names:
                raise ValueError("%s: the group's param_names %r differ from the names of its (name, tensor) pairs"
                                 % (owner, list(param_group["param_names"])))
        elif "param_names" in param_group:
            names = list(param_group["param_names"])
            if len(names) != len(params):
                raise ValueError("%s: param_names has %d names for %d parameters" % (owner, len(names), len(params)))
        else:
            return None
        taken = set()
        for g in self.param_groups:
            taken.update(g.get("param_names", ()))
        for n in names:
            if not isinstance(n, str) or not n:
                raise TypeError("%s: parameter name %r must be a non-empty str" % (owner, n))
            # What liboptim takes (checked here, before anything changes: a name it
            # refused after the group was added would leave the optimizer half-changed).
            if "\0" in n:
                raise ValueError("%s: parameter name %r holds a NUL byte: liboptim would cut it there (names "
                                 "match checkpoints to parameters)" % (owner, n))
            try:
                size = len(n.encode())
            except UnicodeEncodeError as e:
                raise ValueError("%s: parameter name %r cannot be encoded as UTF-8 (%s)" % (owner, n, e.reason)) \
                    from None
            if size > _core.MAX_NAME:
                raise ValueError("%s: parameter name of %d bytes (%r...) is longer than %d bytes, the longest "
                                 "liboptim's checkpoints store" % (owner, size, n[:40], _core.MAX_NAME))
            if n in taken:
                raise ValueError("%s: parameter name %r is given twice: names must be unique (they match "
                                 "checkpoints to parameters)" % (owner, n))
            taken.add(n)
        return names

    # ---- state_dict, pickling, checkpoints ---------------------------------------------

    def state_dict(self):
        """The optimizer's state in torch.optim's format: {'state': {index: {...}},
        'param_groups': [...]}, as torch.optim's: the state of each parameter is
        its live state (the ParamState of optimizer.state[p]), whose tensors
        are views of the C memory and whose 'step' (and NAdam's 'mu_product')
        tensor every step rewrites in place, as torch's are its state dicts
        and tensors, which its steps mutate in place. So a state_dict kept in
        memory follows the training, as torch's does (load_state_dict of it
        later changes nothing); copy.deepcopy it (or torch.save it) to keep
        the state of now. Each parameter's state pickles and deep-copies as a
        plain dict. Keys the rule does not have (a wrapper's 'slow_param')
        are included, as in torch. KeyError, as in torch, if a tensor taken
        out of param_groups by hand still has state."""
        return _state_dict.state_dict(self)

    def load_state_dict(self, state_dict):
        """Load a state in torch.optim's format (from this class, from the
        matching torch.optim class, or from adabound.AdaBound for AdaBound). The
        values are copied into the C object's memory. Everything is checked
        before anything changes; a mismatch (group sizes, tensor shapes, missing
        or unknown keys, invalid hyperparameters, a tensor whose memory is gone)
        raises ValueError saying what. Group keys the saved groups lack (this
        class's extras, such as bias_correction or eps_placement, when loading
        torch.optim's state) take this class's constructor defaults, as torch
        does for keys added in later versions. State keys the rule does not
        have (a wrapper's 'slow_param') are kept in Python, deep-copied and
        cast as torch 1.13 casts them (tensors to the parameter's dtype and
        device, except 'step'; dicts and other containers item by item); a
        str is kept as it is (torch 1.13 turns it into the text of a
        generator object). As in torch, the state objects held before (a
        kept state_dict, optimizer.state[p]) keep their values and no longer
        follow the optimizer."""
        _state_dict.load_state_dict(self, state_dict)

    def __getstate__(self):
        """As torch.optim.Optimizer: defaults, state and param_groups. copy.deepcopy,
        pickle and torch.save of an optimizer work as in torch; the copy has a C
        object of its own over the copied parameters and steps as the original
        would (the thread setting and skipped_steps, not part of a run's state,
        start afresh)."""
        return _state_dict.getstate(self)

    def __setstate__(self, state):
        _state_dict.setstate(self, state)

    def save_checkpoint(self, path):
        """Save the optimizer's whole state to `path` in liboptim's checkpoint
        format (docs/CHECKPOINT.md): every group's hyperparameters, every
        parameter's step counter and state, the non-finite and clipping
        settings and counters, and every parameter's shape. Written to a
        temporary file that is flushed to disk and then renamed over `path`
        (through a symbolic link, the file it points to): a crash leaves the
        old file or the new one, never a torn one. The parameters themselves
        are the model's: save them too (torch.save(model.state_dict(), ...)).
        An lr scheduler's state is not in the file either: save
        scheduler.state_dict() with it (see load_checkpoint). `path`: a str,
        bytes or os.PathLike, as for torch.save; a NUL byte in it raises
        ValueError. Raises optim.OptimError (with the library's message, naming
        the file) on failure; nothing is then changed at `path`."""
        _checkpoint.save(self, path)

    def load_checkpoint(self, path, match="name"):
        """Load a checkpoint written by save_checkpoint (or by liboptim in C)
        into this optimizer, which must have the same rule, groups and
        parameters (match="name": parameters named param0, param1, ... in the
        order they were given, so the same model in the same order;
        match="position": by index), of the same shapes. Everything is checked
        before anything changes: on any error (OptimError: a missing,
        truncated or corrupt file, a newer format, another optimizer, a
        parameter of another shape) this optimizer is unchanged. The groups'
        hyperparameters and settings become the saved ones (and param_groups
        shows them), the lr an lr scheduler last set included. `path` as for
        save_checkpoint.

        With an lr scheduler, resume in this order: build the optimizer, build
        the scheduler as before (it writes its first lr), load_checkpoint (the
        saved lr replaces it), then scheduler.load_state_dict(saved state).
        Building the scheduler after load_checkpoint would overwrite the
        loaded lr until the scheduler's next step."""
        _checkpoint.load(self, path, match)

    # ---- the step --------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step over every parameter with a gradient, in one
        call into liboptim. closure: re-evaluates the model and returns the
        loss (run with gradients enabled, as torch.optim does). With
        nonfinite='error', a NaN or Inf gradient raises NonFiniteGradientError
        and nothing is updated. Refused (RuntimeError) while a SAM over this
        optimizer is between first_step and second_step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        c = self._c
        with c.lock:
            sam_guard(c, "step")
            _distributed.begin_step(c)
            try:
                c = _members.sync(self)
                _ema.refuse_swapped(c, "step")
                _groups.sync(c, self.param_groups)
                _distributed.adopt(c, self.param_groups)  # a ZeroRedundancyOptimizer's loaded loss scale
                n, pp, gp, pins = bind(c)  # (before the collective: a refused gradient fails it on every rank)
                collective = _distributed.prepare_step(c)  # its overflow agreement: every rank steps
                if not c.params and not collective:
                    return loss
                try:
                    if pins.sparse is not None:
                        c.h.step_sparse(n, pp, gp, pins.sparse)  # some gradients sparse (optim_sparse.h)
                    else:
                        c.h.step_with(n, pp, gp)
                except OptimError as e:
                    if e.code == _core.ENONFINITE:
                        raise nonfinite_error(c, "%s: step" % c.owner, "nothing was updated", e) from None
                    cause = _distributed.step_error(c, e)
                    if cause is not None:
                        raise cause
                    raise ValueError("%s: step: %s" % (c.owner, e)) from None
            except BaseException:
                # Under ZeroRedundancyOptimizer, a rank failing before the loss scale's all-reduce the
                # others make at this step joins it with a failure flag: every rank raises, none waits.
                _distributed.step_failed(c)
                raise
            pins.write_back()  # parameters stepped through a working copy (_step.bind)
            del pins  # held until the call returned
            if c.scalars:
                c.refresh_scalars()
            _distributed.publish(c, self.param_groups)
        return loss
