"""optim.torch.Muon: torch.optim.Muon (torch >= 2.9) stepped by liboptim, its
matrix products by liboptim_muon over OpenBLAS; and MuonWithAuxAdam, Keller
Jordan's reference class that hands the parameters Muon does not take to AdamW."""
import math

import torch

from .. import _core
from . import _groups, _muon_ckpt
from ._base import _Optimizer, _check_flags
from ._optimizers import _COMMON_DOC, AdamW
from ._step import NonFiniteGradientError
from ._tensors import describe

__all__ = ["Muon", "MuonWithAuxAdam"]

_DEFAULT_NS = (3.4445, -4.7750, 2.0315)


def _check_muon_params(owner, groups, base=0):
    """torch.optim.Muon's refusal of parameters that are not 2-D (its message), and
    liboptim's of other dtypes than float32 (the iteration is sgemm's), before a step;
    each names the parameter (its index from `base`, and its name: a (name, tensor)
    pair or the group's param_names). Items that are not tensors are left to
    add_param_group's checks."""
    i = base
    for group in groups:
        names = group.get("param_names")
        for j, p in enumerate(group["params"]):
            name = None
            if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
                name, p = p
            elif names is not None and j < len(names):
                name = names[j]
            if not isinstance(p, torch.Tensor):
                i += 1
                continue
            what = "parameter %d%s" % (i, " (%r)" % (name,) if name is not None else "")
            if p.ndim != 2:
                raise ValueError("Muon only supports 2D parameters whereas we found a parameter with size: %s "
                                 "(%s: %s)" % (p.size(), owner, what))
            if p.dtype is not torch.float32:
                raise TypeError("%s: %s of size %s has dtype %s: Muon's Newton-Schulz iterations run in "
                                "float32 over OpenBLAS's sgemm (float32 parameters only)"
                                % (owner, what, tuple(p.size()), p.dtype))
            i += 1


class Muon(_Optimizer):
    __doc__ = """Muon, MomentUm Orthogonalized by Newton-Schulz (Keller Jordan 2024), with
    torch.optim.Muon's arguments and defaults (torch >= 2.9), for 2-D parameters.

    Per parameter P (rows x cols): B = lerp(B, G, 1 - momentum); U = lerp(G, B,
    momentum) if nesterov else B; X = U / max(||U||, eps); ns_steps times
    X = a X + (b A + c A A) X with A = X X^T (the same on X^T when rows > cols);
    P = P (1 - lr weight_decay) - adjusted_lr X, adjusted_lr = lr sqrt(max(1,
    rows / cols)) (adjust_lr_fn None or "original") or lr 0.2 sqrt(max(rows,
    cols)) ("match_rms_adamw"). Element-wise parts are liboptim kernels (the same
    bits on every CPU path and thread count); the matrix products are
    liboptim_muon's, OpenBLAS sgemm on one thread (docs/rules/muon.md).

    Args:
        params (iterable): 2-D float32 parameters or dicts defining parameter groups
            (others: ValueError, as torch).
        lr (float or one-element tensor, optional): learning rate (default: 1e-3).
        weight_decay (float, optional): decoupled weight decay (default: 0.1).
        momentum (float, optional): momentum factor (default: 0.95).
        nesterov (bool, optional): Nesterov momentum (default: True).
        ns_coefficients (tuple of three floats, optional): (a, b, c) of the quintic
            (default: (3.4445, -4.7750, 2.0315)).
        eps (float, optional): the norm's lower bound; must be >= 0 (default: 1e-7).
        ns_steps (int, optional): Newton-Schulz iterations, 1..99 (default: 5).
        adjust_lr_fn (str or None, optional): None or "original", or
            "match_rms_adamw" (default: None).
        use_addmm (bool, optional): torch's choice of torch.addmm for the
            iteration's products; accepted and kept in the group, no effect here
            (the products are sgemm's either way) (default: False).
        foreach (bool, optional): accepted, no effect.

    state[p] is {'momentum_buffer': tensor} after p's first step, as torch, always
    contiguous (torch's takes the gradient's strides): a parameter in another layout
    (a transposed view, p.data replaced by one) is stepped through a row-major working
    copy, with the same values as a contiguous one. Differences
    from torch: the iteration runs in float32 (torch's in bfloat16: ours is closer to
    the exact iteration); float32 parameters only.
    """ + _COMMON_DOC

    _rule_name = "muon"
    _complex_reason = "torch.optim.Muon does not support complex parameters"
    _hp_spec = (("lr", "real", ("lr",)), ("weight_decay", "real", ("weight_decay",)),
                ("momentum", "real", ("momentum",)), ("nesterov", "bool", ("nesterov",)),
                ("ns_coefficients", "triple", ("ns_a", "ns_b", "ns_c")), ("eps", "real", ("eps",)),
                ("ns_steps", "int", ("ns_steps",)), ("adjust_lr_fn", "adjust_lr", ("adjust_lr",)))
    _step_kind = None
    _required_slots = ("momentum_buffer",)
    _row_major = True  # C reads P, G and B as rows x cols matrices in row-major order (_cobject.Rule)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=_DEFAULT_NS, eps=1e-7, ns_steps=5, adjust_lr_fn=None, use_addmm=False, *,
                 foreach=None,
                 capturable=False, differentiable=False, fused=False, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False, loss_scale=None,
                 state_dtype=None):
        _check_flags("Muon", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        # torch.optim.Muon's checks, its messages
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError("Learning rate should be >= 0 but is: %s" % (lr,))
        if not 0.0 <= momentum:
            raise ValueError("momentum should be >= 0 but is: %s" % (momentum,))
        if not 0.0 <= weight_decay:
            raise ValueError("weight decay should be >= 0 but is: %s" % (weight_decay,))
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError("Adjust learning rate function %s is not supported" % (adjust_lr_fn,))
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn, use_addmm=use_addmm, foreach=foreach)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
        _check_muon_params("Muon", self.param_groups)

    def add_param_group(self, param_group):
        # torch checks the shapes in __init__ only; a group added later must be 2-D as well (else its
        # first step would fail): checked before it is added.
        if getattr(self, "_c", None) is not None and self.param_groups:
            params = param_group["params"]
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            _check_muon_params("Muon", [dict(param_group, params=params)],
                               sum(len(g["params"]) for g in self.param_groups))
            param_group = dict(param_group, params=params)
        super().add_param_group(param_group)


_MUON_KEYS = {"params", "lr", "momentum", "weight_decay", "use_muon"}
_ADAM_KEYS = {"params", "lr", "betas", "eps", "weight_decay", "use_muon"}


class _MergedState(dict):
    """optimizer.state of a MuonWithAuxAdam: each parameter's state in the inner optimizer that steps it
    (a snapshot mapping, rebuilt on each read; its tensors are the inner optimizers' live views)."""


class MuonWithAuxAdam(torch.optim.Optimizer):
    """Keller Jordan's MuonWithAuxAdam (github.com/KellerJordan/Muon, muon.py): one optimizer over
    param groups that each say use_muon=True (2-D hidden weights: Muon) or False (embeddings, heads,
    biases, gains: AdamW), with the reference's keys and defaults:

      use_muon=True:  lr 0.02, momentum 0.95, weight_decay 0 (Nesterov, 5 steps of
                      (3.4445, -4.7750, 2.0315), lr * sqrt(max(1, rows / cols)))
      use_muon=False: lr 3e-4, betas (0.9, 0.95), eps 1e-10, weight_decay 0

    and no other key (the reference asserts the key set; ValueError here). The Muon groups are
    stepped by an optim.torch.Muon and the others by an optim.torch.AdamW (torch.optim.AdamW's
    arithmetic: the reference's adam_update is the same update, rounded in another order); param
    group values changed between steps (by a scheduler) are used at the next step. state[p] is
    {'momentum_buffer'} for a Muon parameter, {'step', 'exp_avg', 'exp_avg_sq'} for an AdamW one;
    state_dict() / load_state_dict(), pickling and copy.deepcopy work as for any optimizer; a
    group's 'params' list edited by hand is followed at the next step, and enable_stats() /
    step_stats() are optim.torch's (each parameter's from the inner optimizer that steps it).
    Differences from the reference: Muon's normalisation clamps ||U|| at eps (torch's) where the
    reference adds 1e-7 (the same unless ||U|| ~ 1e-7), the iteration runs in float32, not bfloat16;
    the reference's distributed variant (an all_gather across ranks) is not offered.

    As optim.torch's other classes (keyword-only, beyond the reference's one argument):
    nonfinite='propagate' | 'skip' | 'error', clip_grad_norm=None | max_norm | (max_norm, norm_type),
    clip_grad_value=None | v, with set_nonfinite, set_clip_grad_norm, set_clip_grad_value,
    set_threads, the properties nonfinite, clip_grad_norm, clip_grad_value, threads,
    last_step_skipped, skipped_steps, last_grad_norm, and save_checkpoint / load_checkpoint (one file
    holding both inner objects, _muon_ckpt). These act on the whole step, over both inner
    optimizers: 'skip' and 'error' skip both when any gradient holds NaN or Inf, and clip_grad_norm
    clips by the total norm of every gradient, as torch.nn.utils.clip_grad_norm_ over all of them
    before step() would. Unlike a single optimizer's fused checks (two objects cannot share one fused
    norm), they cost one more read of the gradients, and norm clipping a float32 copy of them during
    the step (the gradient tensors are not written); both need dense float32 gradients.
    clip_grad_value is element-wise and fused into each inner step.
    """

    def __init__(self, param_groups, *, nonfinite="propagate", clip_grad_norm=None, clip_grad_value=None):
        self._muon = None
        self._adam = None
        self._where = []  # outer group index -> (inner optimizer's attribute name, its group index)
        self._threads = 0
        self._nonfinite = "propagate"
        self._clip = self._clipv = None
        self._skipped = 0
        self._last_skipped = False
        self._last_norm = math.nan
        clip = _groups.parse_clip(clip_grad_norm, "MuonWithAuxAdam")
        clipv = _groups.parse_clip_value(clip_grad_value, "MuonWithAuxAdam")
        if clip is not None and clipv is not None:
            raise ValueError("MuonWithAuxAdam: clip_grad_norm = %s and clip_grad_value = %r: norm and value "
                             "clipping cannot both be on" % (_groups.clip_text(clip), clipv))
        self.set_nonfinite(nonfinite)
        self._clip, self._clipv = clip, clipv
        super().__init__(param_groups, dict())

    # ---- groups ----------------------------------------------------------------------------------

    def add_param_group(self, param_group):
        if not isinstance(param_group, dict) or "use_muon" not in param_group:
            raise ValueError("MuonWithAuxAdam: each param group must be a dict with 'use_muon' (True: Muon, "
                             "False: AdamW), as the reference's")
        group = dict(param_group)
        if group["use_muon"]:
            group.setdefault("lr", 0.02)
            group.setdefault("momentum", 0.95)
            group.setdefault("weight_decay", 0)
            keys = _MUON_KEYS
        else:
            group.setdefault("lr", 3e-4)
            group.setdefault("betas", (0.9, 0.95))
            group.setdefault("eps", 1e-10)
            group.setdefault("weight_decay", 0)
            keys = _ADAM_KEYS
        if set(group) != keys:
            raise ValueError("MuonWithAuxAdam: a group with use_muon=%s takes the keys %s; this one has %s"
                             % (bool(group["use_muon"]), sorted(keys), sorted(set(group))))
        n = len(self.param_groups)
        super().add_param_group(group)  # torch's checks (tensors, no parameter twice)
        group = self.param_groups[-1]
        try:
            inner = self._inner_group(group)
            name = "_muon" if group["use_muon"] else "_adam"
            opt = getattr(self, name)
            if opt is None:
                opt = Muon([inner]) if group["use_muon"] else AdamW([inner])
                if getattr(self, "_stats_on", False):
                    opt.enable_stats(True)
                opt.set_threads(self._threads)
                if self._clipv is not None:
                    opt.set_clip_grad_value(self._clipv)
                setattr(self, name, opt)
            else:
                opt.add_param_group(inner)
            self._where.append((name, len(opt.param_groups) - 1))
        except BaseException:
            del self.param_groups[n:]
            raise

    @staticmethod
    def _inner_group(group):
        if group["use_muon"]:
            return dict(params=group["params"], lr=group["lr"], momentum=group["momentum"],
                        weight_decay=group["weight_decay"], nesterov=True, ns_coefficients=_DEFAULT_NS, eps=1e-7,
                        ns_steps=5, adjust_lr_fn=None)
        return dict(params=group["params"], lr=group["lr"], betas=tuple(group["betas"]), eps=group["eps"],
                    weight_decay=group["weight_decay"])

    def _sync(self):
        """The outer groups' values (a scheduler may have changed them) and 'params' lists (edited by
        hand: a tensor appended, removed or replaced) into the inner optimizers' groups, which follow
        such edits as any optim.torch optimizer does (a Muon group's tensors checked first)."""
        if len(self._where) != len(self.param_groups):
            raise ValueError("MuonWithAuxAdam: param_groups has %d groups where %d were added: add groups with "
                             "add_param_group" % (len(self.param_groups), len(self._where)))
        base = 0
        for group, (name, gi) in zip(self.param_groups, self._where):
            inner = getattr(self, name).param_groups[gi]
            params = group["params"]
            first, base = base, base + (1 if isinstance(params, torch.Tensor) else len(params))
            if len(params) != len(inner["params"]) or any(a is not b for a, b in zip(params, inner["params"])):
                if isinstance(params, torch.Tensor):
                    params = group["params"] = [params]
                if group["use_muon"]:
                    _check_muon_params("MuonWithAuxAdam", [group], first)
                inner["params"] = list(params)
            for k, v in self._inner_group(group).items():
                if k != "params":
                    inner[k] = v

    # ---- step statistics (as optim.torch's optimizers: docs/STATS.md) ------------------------------

    def enable_stats(self, on=True):
        """Measure statistics of every step() that follows (on=True) or stop (False; off by default),
        in both inner optimizers (see optim.torch.Adam.enable_stats)."""
        if not isinstance(on, bool):
            raise ValueError("MuonWithAuxAdam.enable_stats: on = %r must be True or False" % (on,))
        self._stats_on = on
        for opt in (self._muon, self._adam):
            if opt is not None:
                opt.enable_stats(on)

    @property
    def stats_enabled(self):
        """Whether steps measure statistics (enable_stats)."""
        return any(opt.stats_enabled for opt in (self._muon, self._adam) if opt is not None)

    def step_stats(self):
        """The statistics of the last step() with statistics on, one entry per parameter in the order of
        param_groups' 'params' lists (None for a parameter that step did not update), each from the
        inner optimizer that steps it (keys as optim.torch.Adam.step_stats; Muon's in docs/STATS.md)."""
        found = {}
        for opt in (self._muon, self._adam):
            if opt is not None:
                for p, st in zip((p for g in opt.param_groups for p in g["params"]), opt.step_stats()):
                    found[id(p)] = st
        return [found.get(id(p)) for g in self.param_groups for p in g["params"]]

    # ---- state -----------------------------------------------------------------------------------

    @property
    def state(self):
        merged = _MergedState()
        for opt in (self._muon, self._adam):
            if opt is not None:
                merged.update(opt.state)
        return merged

    @state.setter
    def state(self, value):
        # torch's Optimizer.__init__ and __setstate__ assign a fresh mapping: the state lives in the inner
        # optimizers; anything else would be lost, so only an empty mapping is accepted.
        if value:
            raise ValueError("MuonWithAuxAdam: its state is its inner optimizers'; use load_state_dict")

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
            if bool(mine["use_muon"]) != bool(theirs["use_muon"]):
                raise ValueError("MuonWithAuxAdam: a loaded group's use_muon differs from this optimizer's")
        inner = {"_muon": ([], {}), "_adam": ([], {})}
        for mine, theirs, (name, gi) in zip(self.param_groups, groups, self._where):
            igroups, istate = inner[name]
            base = sum(len(g["params"]) for g in igroups)
            ig = self._inner_group(dict(theirs, params=mine["params"]))
            ig["params"] = list(range(base, base + len(mine["params"])))
            igroups.append(ig)
            for j, idx in enumerate(theirs["params"]):
                if idx in state_dict["state"]:
                    istate[base + j] = state_dict["state"][idx]
        for name, (igroups, istate) in inner.items():
            opt = getattr(self, name)
            if opt is not None:
                full = opt.state_dict()
                for ig, old in zip(igroups, full["param_groups"]):
                    old.update({k: v for k, v in ig.items() if k != "params"})
                opt.load_state_dict({"state": istate, "param_groups": full["param_groups"]})
        for mine, theirs in zip(self.param_groups, groups):
            mine.update({k: v for k, v in theirs.items() if k != "params"})

    def __getstate__(self):
        # The settings of the whole step go with the copy; the thread setting and the skipped-step count (a
        # process's, not the run's) start afresh, as for optim.torch's other optimizers.
        return {"defaults": self.defaults, "param_groups": self.param_groups, "_muon": self._muon,
                "_adam": self._adam, "_where": self._where, "_nonfinite": self._nonfinite, "_clip": self._clip,
                "_clipv": self._clipv}

    def __setstate__(self, state):
        self.__dict__.update(dict(_threads=0, _nonfinite="propagate", _clip=None, _clipv=None, _skipped=0,
                                  _last_skipped=False, _last_norm=math.nan))
        self.__dict__.update(state)

    # ---- the whole step's settings (as optim.torch's optimizers: set_nonfinite, ...) ------------------

    def _inners(self):
        return [opt for opt in (self._muon, self._adam) if opt is not None]

    def set_nonfinite(self, policy):
        """What a step does when a gradient holds NaN or Inf: 'propagate' (IEEE arithmetic, the
        default), 'skip' (neither inner optimizer steps; counted in skipped_steps) or 'error' (skip
        and raise NonFiniteGradientError naming the parameter). Checked over every gradient of both
        inner optimizers before either steps."""
        code = _groups.parse_nonfinite(policy, "MuonWithAuxAdam.set_nonfinite")
        self._nonfinite = _groups.nonfinite_name(code)

    def set_clip_grad_norm(self, max_norm, norm_type=2.0):
        """Clip the gradients of every step to a total norm of max_norm over every parameter of both
        inner optimizers, as torch.nn.utils.clip_grad_norm_(all params, max_norm, norm_type) before
        step() would (the norm and factor of optim.torch.clip_grad_norm_; the gradient tensors are not
        written). None turns it off."""
        where = "MuonWithAuxAdam.set_clip_grad_norm"
        clip = _groups.parse_clip(None if max_norm is None else (max_norm, norm_type), where)
        if clip is not None and self._clipv is not None:
            raise ValueError("%s: clip_grad_value = %r is on: norm and value clipping cannot both be on (turn it "
                             "off with set_clip_grad_value(None) first)" % (where, self._clipv))
        self._clip = clip

    def set_clip_grad_value(self, clip_value):
        """Clamp every gradient element to [-clip_value, clip_value] in every step (fused into both inner
        steps, see optim.torch.Adam.set_clip_grad_value). None turns it off."""
        where = "MuonWithAuxAdam.set_clip_grad_value"
        cv = _groups.parse_clip_value(clip_value, where)
        if cv is not None and self._clip is not None:
            raise ValueError("%s: clip_grad_norm = %s is on: norm and value clipping cannot both be on (turn it "
                             "off with set_clip_grad_norm(None) first)" % (where, _groups.clip_text(self._clip)))
        for opt in self._inners():
            opt.set_clip_grad_value(cv)
        self._clipv = cv

    @property
    def nonfinite(self):
        """The non-finite policy: 'propagate', 'skip' or 'error' (see set_nonfinite)."""
        return self._nonfinite

    @property
    def clip_grad_norm(self):
        """None, or (max_norm, norm_type) of the clipping by the total norm (see set_clip_grad_norm)."""
        return self._clip

    @property
    def clip_grad_value(self):
        """None, or the clip_value of the value clipping (see set_clip_grad_value)."""
        return self._clipv

    def set_threads(self, threads):
        """Threads each inner step may use (see optim.torch.Adam.set_threads): 0 follows OpenMP /
        torch.set_num_threads, k > 0 at most k. Results are bit-identical for any value. Not saved."""
        if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads < 2 ** 31:
            raise ValueError("MuonWithAuxAdam.set_threads: threads = %r must be an int >= 0 (0: follow "
                             "torch.set_num_threads / OpenMP)" % (threads,))
        for opt in self._inners():
            opt.set_threads(threads)
        self._threads = threads

    @property
    def threads(self):
        """The thread setting of set_threads (0: follow OpenMP / torch.set_num_threads)."""
        return self._threads

    @property
    def last_step_skipped(self):
        """True if the last step() skipped its update for a NaN or Inf gradient."""
        return self._last_skipped

    @property
    def skipped_steps(self):
        """Steps skipped for NaN or Inf gradients (under 'skip' or 'error'); kept by save_checkpoint,
        not by state_dict()."""
        return self._skipped

    @property
    def last_grad_norm(self):
        """The total norm of every gradient measured by the last step() (of clip_grad_norm's norm_type,
        else the 2-norm under 'skip' or 'error'); NaN when it measured none or a gradient held NaN."""
        return self._last_norm

    # ---- checkpoints (one file, both inner objects: _muon_ckpt) ------------------------------------

    def save_checkpoint(self, path):
        """Save the whole state to `path`: both inner optimizers' liboptim checkpoints (every group's
        hyperparameters, step counters, state, shapes, value clipping) and this optimizer's settings
        (which groups are Muon's, the non-finite policy, norm clipping, skipped_steps), in one file
        written to a temporary file, flushed and renamed over `path` (a crash leaves the old file or the
        new one). The parameters are the model's: save them too. OptimError on failure, nothing changed
        at `path`."""
        self._sync()
        _muon_ckpt.save(self, path)

    def load_checkpoint(self, path, match="name"):
        """Load a file of save_checkpoint into this optimizer, which must have the same groups (the same
        use_muon in the same order) and parameters of the same shapes (match as for
        optim.torch.Adam.load_checkpoint, within each inner optimizer). Everything is checked first; on
        any error (OptimError: a missing, truncated or corrupt file, another optimizer's) this optimizer
        is unchanged. param_groups and the settings become the saved ones."""
        self._sync()
        _muon_ckpt.load(self, path, match)

    def _ckpt_settings(self):
        return {"use_muon": [bool(g["use_muon"]) for g in self.param_groups], "nonfinite": self._nonfinite,
                "clip_grad_norm": None if self._clip is None else list(self._clip), "skipped_steps": self._skipped}

    def _check_settings(self, settings, where):
        """The file's settings, checked as the constructor checks them (ValueError naming the bad one)."""
        try:
            _groups.parse_nonfinite(settings["nonfinite"], where)
            _groups.parse_clip(settings["clip_grad_norm"], where)
            skipped = settings["skipped_steps"]
        except (KeyError, TypeError) as e:
            raise ValueError("%s: the file's settings lack or garble %s" % (where, e)) from None
        if isinstance(skipped, bool) or not isinstance(skipped, int) or skipped < 0:
            raise ValueError("%s: the file's skipped_steps = %r is not a count" % (where, skipped))

    def _apply_settings(self, settings):
        self._nonfinite = settings["nonfinite"]
        self._clip = _groups.parse_clip(settings["clip_grad_norm"], "MuonWithAuxAdam.load_checkpoint")
        self._skipped = settings["skipped_steps"]
        inners = self._inners()
        self._clipv = inners[0].clip_grad_value if inners else None
        # the inner groups' loaded values into the outer groups (the reference's keys)
        for group, (name, gi) in zip(self.param_groups, self._where):
            inner = getattr(self, name).param_groups[gi]
            keys = ("lr", "momentum", "weight_decay") if group["use_muon"] else ("lr", "betas", "eps", "weight_decay")
            for k in keys:
                group[k] = inner[k]

    # ---- step ------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync()
        self._last_skipped = False
        self._last_norm = math.nan
        if self._clip is not None or self._nonfinite != "propagate":
            clipped = self._checks()
            if clipped is None:
                return loss  # skipped ('skip'); 'error' has raised
            saved = [(p, p.grad) for p, _ in clipped]
            try:
                for p, g in clipped:
                    p.grad = g
                self._inner_steps()
            finally:
                for p, g in saved:
                    p.grad = g
            return loss
        self._inner_steps()
        return loss

    def _inner_steps(self):
        if self._muon is not None:
            self._muon.step()
        if self._adam is not None:
            self._adam.step()

    def _checks(self):
        """The whole step's checks over every gradient of both inner optimizers, before either steps: the
        total norm (liboptim's optim_grad_norm / optim_clip_grad_norm, as optim.torch.clip_grad_norm_), a
        skip or NonFiniteGradientError for a NaN or Inf, and with clip_grad_norm the clipped float32 copies
        of the gradients. Returns [(param, gradient to step with)] ([] when nothing is swapped), or None
        for a skipped step."""
        where = "MuonWithAuxAdam: step"
        params = [p for g in self.param_groups for p in g["params"]]
        with_grad = []
        for i, p in enumerate(params):
            g = p.grad
            if g is None:
                continue
            if g.dtype is not torch.float32 or g.layout is not torch.strided or g.device.type != "cpu":
                raise ValueError("%s: parameter %d (%s) has a gradient %s: nonfinite=%r and clip_grad_norm=%s "
                                 "check every gradient together, which needs dense CPU float32 gradients"
                                 % (where, i, describe(p), describe(g), self._nonfinite,
                                    _groups.clip_text(self._clip)))
            with_grad.append((i, p, g))
        if self._clip is not None:
            copies = [g.detach().clone(memory_format=torch.contiguous_format) for _, _, g in with_grad]
            norm = _core.clip_grad_norm([c.data_ptr() for c in copies], [c.numel() for c in copies],
                                        self._clip[0], self._clip[1], False, self._threads)
        else:
            copies = [g.detach() if g.is_contiguous() else g.detach().contiguous() for _, _, g in with_grad]
            norm = _core.grad_norm([c.data_ptr() for c in copies], [c.numel() for c in copies], 2.0, self._threads)
        self._last_norm = norm
        if not math.isfinite(norm) and self._nonfinite != "propagate":
            self._skipped += 1
            self._last_skipped = True
            if self._nonfinite == "error":
                for i, p, g in with_grad:
                    if not bool(torch.isfinite(g).all()):
                        gi = next(k for k, grp in enumerate(self.param_groups) if any(q is p for q in grp["params"]))
                        raise NonFiniteGradientError(
                            "%s: the gradient of parameter %d (%s, param group %d) holds NaN or Inf; nothing was "
                            "updated (nonfinite='error')" % (where, i, describe(g), gi), i, gi, p)
            return None
        if self._clip is None:
            return []
        return [(p, c) for (_, p, _), c in zip(with_grad, copies)]
