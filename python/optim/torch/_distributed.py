"""optim.torch inside torch.distributed: what an optimizer needs to know when
torch's ZeroRedundancyOptimizer builds it as the local optimizer of a rank.

ZeroRedundancyOptimizer (torch/distributed/optim/zero_redundancy_optimizer.py)
gives each rank's local optimizer only that rank's shard of the parameters.
Everything element-wise is then the same as unsharded, but a setting that looks
at all the gradients at once would look at the shard only: fused norm
clipping (the shard's norm, not the model's), nonfinite='skip' (this rank
would skip its shard while the others step theirs) and SAM (its norm, and a
perturbation the other ranks never see before the second forward pass).
The classes refuse those settings there, naming what to do instead
(docs/DISTRIBUTED.md, "Python: torch.distributed").

Dynamic loss scaling is the exception made to work: its overflow decision
must be the model's, so the local step agrees with the other ranks on it
(OverflowAgreement): the C step's pre-pass finds the shard's non-finite
gradients and calls liboptim's combine hook (src/optim_ext.h, the entry
point liboptim_mpi feeds its global decision through), which all-reduces
one flag (MAX) over ZeroRedundancyOptimizer's process group; every rank then
skips, backs off and grows together, as one process stepping the whole model
would. The scaler's state rides in every param group (publish/adopt below),
because ZeroRedundancyOptimizer's consolidated state_dict keeps only 'state'
and 'param_groups'. The ranks also agree on the loss scale mode and scale
(in the same all-reduce, and by one all-reduce of the others at their
first step): a rank in another mode makes every rank raise, instead of
hanging.

Stochastic rounding draws one process's numbers: each tensor of the local
optimizer is keyed by its index in the whole model (sr_origins), through
liboptim's optim__ext_set_sr_origin, as liboptim_mpi keys its slices.

ZeroRedundancyOptimizer gives its local optimizer no sign of the role, so the
role is recognised from the call: the local optimizer is constructed by
ZeroRedundancyOptimizer._init_local_optimizer. Nothing is imported for this;
without torch.distributed's ZeRO module loaded nothing is looked at.
"""
import copy
import ctypes
import struct
import sys
import weakref

import torch

from .. import _constants as C
from .. import _core
from . import _precision

__all__ = []

_ZERO_MODULE = "torch.distributed.optim.zero_redundancy_optimizer"
# Frames between ZeroRedundancyOptimizer._init_local_optimizer and the check:
# a class's __init__, the base's __init__, SAM's base optimizer's __init__...
_DEPTH = 8


def zero_local_rank():
    """The global rank whose ZeroRedundancyOptimizer is constructing the
    calling optimizer as its local optimizer, or None when the caller is not
    being built by a ZeroRedundancyOptimizer of two ranks or more."""
    zero = _constructing(sys._getframe(1))
    return None if zero is None or _world(zero) == 1 else _rank(zero)


def zero_constructing(up=1):
    """The ZeroRedundancyOptimizer constructing the caller (`up` frames above
    this function) as its local optimizer, whatever its number of ranks, or
    None."""
    return _constructing(sys._getframe(up))


def attach(c, zero):
    """Give CObject c the role of `zero`'s local optimizer: the refusals and
    the loss scale's agreement on two ranks or more (zero_rank, zero_group),
    and on any number of ranks the global numbering of stochastic rounding
    (sr_origins) and the precision state in the groups (publish)."""
    c.zero_ref = weakref.ref(zero)
    if _world(zero) > 1:
        c.zero_rank, c.zero_group = _rank(zero), getattr(zero, "process_group", None)


def _world(zero):
    return getattr(zero, "world_size", 2)


def _rank(zero):
    return int(getattr(zero, "global_rank", getattr(zero, "rank", 0)))


def _constructing(frame):
    module = sys.modules.get(_ZERO_MODULE)
    cls = getattr(module, "ZeroRedundancyOptimizer", None) if module is not None else None
    code = getattr(getattr(cls, "_init_local_optimizer", None), "__code__", None)
    if code is None:
        return None
    for _ in range(_DEPTH):
        if frame is None:
            return None
        if frame.f_code is code:
            return frame.f_locals.get("self")
        frame = frame.f_back
    return None


def in_zero(c):
    """True for the local optimizer of a ZeroRedundancyOptimizer (or one given that role by hand)."""
    return c.zero_rank is not None or c.zero_ref is not None


# ---- stochastic rounding: one process's random numbers ------------------------------------------
# liboptim keys a parameter's random stream by (seed, its index, its step, the element's index in it).
# A local optimizer's index counts its shard, so it is set to the index the parameter has in ZeRO's
# whole model (its global order, the order in which one optimizer over ZeRO's param_groups holds
# them, and ZeRO's state_dict() numbers them) through optim__ext_set_sr_origin (src/optim_ext.h):
# every rank then rounds each of its tensors with the numbers one process draws for it.


def global_index(zero):
    """{parameter: its index in zero's global order} (ZeRO's own table when it has one: it is
    rebuilt when add_param_group re-partitions)."""
    try:
        return zero._param_to_index
    except AttributeError:
        return {p: i for i, p in enumerate(p for g in zero.param_groups for p in g["params"])}


def sr_origins(c):
    """Before a C call over the parameters of CObject c (_step.bind: a step,
    schedule-free's train() and eval(), which round too) as a
    ZeroRedundancyOptimizer's local optimizer with stochastic rounding: key
    every parameter's random numbers by its index in the whole model (set
    again whenever that changes: parameters added, ZeRO re-partitioned, c
    rebuilt). A parameter ZeRO does not hold (added to the local optimizer
    by hand) is keyed past the model's, so that it never draws another
    tensor's numbers."""
    ref = c.zero_ref
    if ref is None or not c.stochastic_rounding:
        return
    zero = ref()
    if zero is None:
        return  # the local optimizer outlived its ZeroRedundancyOptimizer: the origins stay
    index = global_index(zero)
    beyond = len(index)
    want = [index.get(p, beyond + i) for i, p in enumerate(c.params)]
    if want == c.sr_origins:
        return
    for i, g in enumerate(want):
        c.h.set_sr_origin(i, g, 0)
    c.sr_origins = want


# ---- dynamic loss scaling: one overflow decision for the whole model ----------------------------
# A dynamic scale makes one collective at every step, which the ranks must all make: so they first agree
# on the loss scale mode, and on the scale itself (each rank's loss is multiplied by its own). The
# all-reduce (MAX) of a step carries [overflow, mode, -mode, scale, -scale] (the scale as the bits of its
# float32 value, which order positive numbers as their values): a rank whose mode or scale is not another's
# sees a maximum that is not the minimum, and every rank raises ValueError naming them, nothing changed
# (instead of waiting in mismatched collectives for the process group's timeout, or training on gradients
# scaled differently on each rank). A dynamic rank agrees inside its step (OverflowAgreement); any other
# rank makes the same all-reduce before its step at its first step and while the ranks last agreed on
# 'dynamic' (Agreed), and not otherwise: ranks that agreed on 'off' or 'static' make no collective of ours
# (a rank switching to 'dynamic' on its own after that cannot be noticed by the others, docs/DISTRIBUTED.md).
# A rank whose step fails before it made a step's all-reduce that the others make makes it with the flag
# FAILED (step_failed), so that they raise too instead of waiting in it.

MODE_NAMES = {C.OPTIM_LOSS_SCALE_OFF: "off", C.OPTIM_LOSS_SCALE_STATIC: "static",
              C.OPTIM_LOSS_SCALE_DYNAMIC: "dynamic"}


class Agreed:
    """The loss scale mode the ranks last agreed on (None before the first
    step), shared by a CObject and its OverflowAgreement; `made`: this
    rank made the step's all-reduce (begin_step clears it)."""

    __slots__ = ("mode", "made")

    def __init__(self):
        self.mode = None
        self.made = False


# The overflow flag of a rank whose step failed before the all-reduce it owed the others (step_failed): its
# other values are the smallest int32, which MAX leaves out of the others' comparison of modes and scales.
FAILED = 2
_NEUTRAL = -2 ** 31


def failed_error(rank):
    return RuntimeError(
        "rank %d: another rank of ZeroRedundancyOptimizer's process group failed its step before the loss "
        "scale's all-reduce (its own exception says why): every rank raises, nothing changed on this rank"
        % rank)


def _f32_bits(x):
    return struct.unpack("<i", struct.pack("<f", x))[0]


def _f32_value(bits):
    return struct.unpack("<f", struct.pack("<i", bits))[0]


def agreement(overflow, mode, scale):
    """The values a rank all-reduces (MAX): [overflow, mode, -mode, scale, -scale]."""
    b = _f32_bits(scale)
    return overflow, mode, -mode, b, -b


def agreement_error(rank, mode, scale, reduced):
    """ValueError when the all-reduced agreement() shows that the ranks'
    modes or scales differ, else None."""
    hi, lo = int(reduced[1]), -int(reduced[2])
    if hi == lo:
        top, bottom = _f32_value(int(reduced[3])), _f32_value(-int(reduced[4]))
        if top == bottom:
            return None
        scale = _f32_value(_f32_bits(scale))  # as compared
        other = bottom if top == scale else top
        return ValueError(
            "rank %d: the ranks of ZeroRedundancyOptimizer's process group use different loss scales (%s): this "
            "rank's is %r, another's is %r (scales from %r to %r): each rank's loss would be multiplied by its own "
            "and the averaged gradients mixed. Give every rank the same loss_scale= settings (and the same "
            "state_dict to load); nothing changed, on any rank"
            % (rank, MODE_NAMES.get(mode, mode), scale, other, bottom, top))
    name = lambda m: MODE_NAMES.get(m, str(m))  # noqa: E731
    others = sorted({name(lo), name(hi)} - {name(mode)})
    return ValueError(
        "rank %d: the ranks of ZeroRedundancyOptimizer's process group use different loss scale modes: this "
        "rank's is %r, another's is %s (modes from %r to %r): a dynamic scale agrees on overflows with one "
        "collective at every step, which ranks without it would never join. Give every rank the same loss_scale= "
        "(and the same state_dict to load); nothing changed, on any rank"
        % (rank, name(mode), " or ".join(repr(m) for m in others), name(lo), name(hi)))


class OverflowAgreement:
    """liboptim's combine hook (src/optim_ext.h) for a ZeroRedundancyOptimizer's
    local optimizer under dynamic loss scaling. The C step's pre-pass flags
    the shard's blocks holding NaN or Inf and calls combine(): it
    all-reduces five int32 (this shard overflowed: 0 or 1; the mode, the
    scale and their negations, above) with MAX over the process group, and
    answers with this rank's blocks, all marked bad when another rank's shard overflowed. The
    C step then skips and backs off, or steps and grows, exactly as on every
    other rank. A rank owning no tensor steps too (the C object allows it
    under hooks), so that every rank makes the collective at every step.

    The local optimizer's parameters are whole tensors, so the per-tensor
    reductions (LAMB, LARS, Adafactor) are the unsharded ones
    (whole_tensors). The gradient norm the pre-pass computes is the shard's
    (last_grad_norm under ZeRO). A failure of the collective (a rank gone, a
    timeout) fails the step with OPTIM_ECOMM, ranks with other modes or
    scales with OPTIM_EINVAL, nothing changed; the exception is kept in
    `error` for the step to raise."""

    def __init__(self, rank, group, agreed):
        self.rank = rank
        self.group = group
        self.agreed = agreed
        self.error = None
        self.scale = 1.0  # this rank's scale for the step about to run (set by prepare_step)
        self._flag = torch.zeros(5, dtype=torch.int32)
        self._bad = (ctypes.c_ubyte * 1)(1)
        self._zero = (ctypes.c_double * 1)(0.0)
        self._name = ctypes.c_char_p(b"(another rank's shard)")
        # The callbacks close over this object only (no reference back to the optimizer).
        self.hooks = _core.ExtHooks(None, _core.EXT_COMBINE(self._combine), _core.EXT_NAME_BLOCK(self._name_block), 1)

    def _ones(self, n):
        if len(self._bad) < n:
            self._bad = (ctypes.c_ubyte * n)(*([1] * n))
        return self._bad

    def _combine(self, ctx, partials, bad, nblocks, all_partials, all_bad, all_nblocks, err):
        code, what = C.OPTIM_ECOMM, "the all-reduce of the loss scale's overflow flag failed"
        try:
            # One pass of C over the blocks' flags (bytes), never over the elements.
            local = 1 if nblocks and ctypes.string_at(bad, nblocks).count(0) != nblocks else 0
            flag = self._flag
            mode = C.OPTIM_LOSS_SCALE_DYNAMIC
            for k, v in enumerate(agreement(local, mode, self.scale)):
                flag[k] = v
            self.agreed.made = True
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self.group)
            if int(flag[0]) >= FAILED:
                raise failed_error(self.rank)
            code, what = C.OPTIM_EINVAL, "the loss scale settings"
            e = agreement_error(self.rank, mode, self.scale, flag)
            if e is not None:
                raise e
            self.agreed.mode = mode
            if int(flag[0]) and not local:
                n = max(int(nblocks), 1)
                all_partials[0] = partials if nblocks else ctypes.cast(self._zero, ctypes.POINTER(ctypes.c_double))
                all_bad[0] = ctypes.cast(self._ones(n), ctypes.POINTER(ctypes.c_ubyte))
                all_nblocks[0] = n
            else:
                all_partials[0] = partials
                all_bad[0] = bad
                all_nblocks[0] = nblocks
            return C.OPTIM_OK
        except BaseException as e:  # noqa: B902 (kept, raised again by the step)
            self.error = e
            msg = ("rank %d: %s: %s: %s" % (self.rank, what, type(e).__name__, e)).encode(errors="replace")
            err[0].message = msg[:C.OPTIM_ERRMSG_MAX - 1]
            return code

    def _name_block(self, ctx, block, param, name):
        param[0] = 0
        name[0] = self._name

    def take_error(self):
        e, self.error = self.error, None
        return e


def prepare_step(c):
    """Before a step of CObject c: under ZeroRedundancyOptimizer with a
    dynamic loss scale, its combine hook installed (removed otherwise); with
    another mode, the ranks' modes and scales compared by one all-reduce
    when the ranks have not yet agreed on one, or last agreed on 'dynamic' (ValueError when
    they differ; the collective's own exception when it fails; nothing
    changed either way). True when the step must run even without
    parameters (the collective)."""
    if c.zero_rank is None:
        return False
    if c.zero_agreed is None:
        c.zero_agreed = Agreed()
    mode = c.h.get_loss_scale()[0]
    dynamic = mode == C.OPTIM_LOSS_SCALE_DYNAMIC
    if dynamic and c.zero_hook is None:
        hook = OverflowAgreement(c.zero_rank, c.zero_group, c.zero_agreed)
        c.h.set_ext_hooks(hook.hooks)
        c.zero_hook = hook
    elif not dynamic and c.zero_hook is not None:
        c.h.set_ext_hooks(None)
        c.zero_hook = None
    scale = 1.0 if mode == C.OPTIM_LOSS_SCALE_OFF else c.h.loss_scale_value()
    if dynamic:
        c.zero_hook.scale = scale
    if not dynamic and c.zero_agreed.mode in (None, C.OPTIM_LOSS_SCALE_DYNAMIC):
        flag = torch.tensor(agreement(0, mode, scale), dtype=torch.int32)
        c.zero_agreed.made = True
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=c.zero_group)
        if int(flag[0]) >= FAILED:
            raise failed_error(c.zero_rank)
        e = agreement_error(c.zero_rank, mode, scale, flag)
        if e is not None:
            raise e
        c.zero_agreed.mode = mode
    return dynamic


def begin_step(c):
    """At the start of a step of CObject c (before anything that can fail): this step's all-reduce not made yet."""
    if c.zero_rank is not None:
        if c.zero_agreed is None:
            c.zero_agreed = Agreed()
        c.zero_agreed.made = False


def step_failed(c):
    """A step of CObject c failed (its exception is being raised). Under
    ZeroRedundancyOptimizer on two ranks or more, when this rank had not
    yet made the step's all-reduce and the other ranks make one at this
    step (the first step, or the ranks last agreed on 'dynamic': the same
    on every rank), make it now with the FAILED flag: the others raise
    failed_error instead of waiting in it for the process group's timeout
    (or meeting this rank's next collective). A failure of that all-reduce
    itself is left behind: the step's own exception is the one raised.
    Ranks that agreed on 'off' or 'static' make no collective of ours: a
    failing rank's exception is its own there (the others go on to
    ZeroRedundancyOptimizer's broadcasts, as with torch.optim's classes)."""
    agreed = c.zero_agreed
    if c.zero_rank is None or agreed is None or agreed.made or \
            agreed.mode not in (None, C.OPTIM_LOSS_SCALE_DYNAMIC):
        return
    agreed.made = True
    flag = torch.tensor([FAILED] + [_NEUTRAL] * 4, dtype=torch.int32)
    try:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=c.zero_group)
    except Exception:  # noqa: B902 (the step's own exception is raised)
        pass


def step_error(c, e):
    """The exception a collective inside C's step raised (OPTIM_ECOMM), or the
    ranks' modes or scales found different there (OPTIM_EINVAL); None for
    any other."""
    if c.zero_hook is not None and e.code in (C.OPTIM_ECOMM, C.OPTIM_EINVAL):
        return c.zero_hook.take_error()
    return None


# ---- the scaler's state in the param groups -----------------------------------------------------
# ZeroRedundancyOptimizer's consolidated state_dict() is its own param_groups (synced from the local
# optimizers' after every step) and the ranks' 'state': a top-level key of the local state_dict is
# dropped. So a local optimizer with a loss scale, a seed or stochastic rounding keeps _precision.export()
# in every param group too, under _precision.STATE_KEY; ZeroRedundancyOptimizer.load_state_dict puts the loaded groups'
# value back into the local groups, and the next step adopts it (and a plain optimizer loading a
# consolidated state_dict takes it from there, _state_dict).


def publish(c, groups):
    """Write the precision state into every group (ZeRO's local optimizer only, on any number of ranks),
    and into the ZeroRedundancyOptimizer's own groups: it copies its groups' keys into the local ones
    before every step and consolidate_state_dict (and back only after a step), so that a copy older than
    a change made between steps (set_seed, a local load_state_dict) would come back and be taken for a
    loaded state by adopt(), setting the old seed and scaler back; its consolidated state_dict would
    save the old ones too."""
    if not in_zero(c):
        return
    snap = _precision.export(c)
    if snap["loss_scale"] is None and not snap["seed"] and not snap["stochastic_rounding"] and c.zero_prec is None:
        return  # nothing to carry, and nothing carried yet (a seed set back to 0 is written over the old one)
    zero = c.zero_ref() if c.zero_ref is not None else None
    for group in list(groups) + list(getattr(zero, "param_groups", None) or ()):
        group[_precision.STATE_KEY] = snap
    # A copy of our own: the dict itself is shared with ZeRO's groups and every state_dict() they make
    # (torch packs groups shallowly), where it can be edited in place.
    c.zero_prec = copy.deepcopy(snap)


def adopt(c, groups):
    """Restore the precision state from the groups when it differs from the
    one publish() wrote (ZeroRedundancyOptimizer loaded a state_dict, or
    that very dict was edited in place); a value liboptim refuses raises
    ValueError naming the key, and nothing changes."""
    if not in_zero(c) or not groups:
        return
    saved = groups[0].get(_precision.STATE_KEY)
    if saved is None or saved == c.zero_prec:
        return
    _precision.restore(c, saved, "%s: param_groups[0][%r]" % (c.owner, _precision.STATE_KEY))
    c.zero_prec = copy.deepcopy(saved)


def refusal(owner, rank, nonfinite_skip, clip):
    """The message refusing fused norm clipping or nonfinite='skip' in a
    ZeroRedundancyOptimizer's local optimizer, or None if neither is asked."""
    where = ("%s is the local optimizer of torch's ZeroRedundancyOptimizer on rank %d: it holds this rank's "
             "shard of the parameters only" % (owner, rank))
    if clip is not None:
        return ("%s, so a fused clip_grad_norm = (%r, %r) would clip with the shard's norm, not the model's. Clip "
                "before zero.step() instead: norm = optim.torch.clip_grad_norm_(model.parameters(), max_norm) "
                "(after DistributedDataParallel's all-reduce every rank holds the whole averaged gradient, so "
                "every rank computes the model's norm); see docs/DISTRIBUTED.md" % (where, clip[0], clip[1]))
    if nonfinite_skip:
        return ("%s, so nonfinite='skip' would skip this rank's shard while the other ranks step theirs. Skip the "
                "whole step on every rank instead: norm = optim.torch.clip_grad_norm_(model.parameters(), max_norm) "
                "(or torch.nn.utils.clip_grad_norm_), then zero.step() only if torch.isfinite(norm), which every "
                "rank decides alike; nonfinite='error' and 'propagate' are fine; see docs/DISTRIBUTED.md" % where)
    return None


def sam_refusal(rank):
    return ("SAM cannot be the optimizer_class of torch's ZeroRedundancyOptimizer (rank %d): each rank would "
            "perturb only its shard of the parameters, with the shard's norm, and ZeroRedundancyOptimizer "
            "exchanges parameters only after the whole step, so the second forward pass would run at a point "
            "that is neither w nor w + e. Use SAM with DistributedDataParallel (every rank holds every "
            "parameter); see docs/DISTRIBUTED.md" % rank)
