"""Checkpoints of an optim.torch optimizer: the whole C state written to and
read from a file in liboptim's format (include/optim_checkpoint.h,
docs/CHECKPOINT.md). A path is str, bytes or os.PathLike; one holding a NUL
byte is refused (optim._core.c_path)."""
from .. import _core
from . import _ema, _groups, _members
from . import _tensors
from ._quantized import QuantizedState
from ._step import sam_guard, with_live_params

__all__ = ["save", "load"]


def _relayout(c, to_file):
    """The file holds every parameter's float state in the parameter's own
    layout (CObject.layout_for: the one a fresh optimizer over it assumes),
    whatever layout the live state has (SGD's momentum buffer takes its first
    gradient's, as torch's clone(d_p)). to_file: rewrite the C memory of each
    state kept in another layout into the parameter's (before h.save);
    else back into the live layout (after h.save, or after h.load, whose data
    is in the parameter's). By logical index: the values are unchanged, and
    the user's views of the state stay valid. int8_block state is never in
    another layout here (_int8_layouts)."""
    for i, p in enumerate(c.params):
        live = c.layouts[i]
        canon = c.layout_for(p)
        if not c.numels[i] or _tensors.same_layout(c.shapes[i], live, canon):
            continue
        if to_file:  # the EMA of the weights too (docs/EMA.md)
            _ema.relayout(c, i, live, canon)
        else:
            _ema.relayout(c, i, canon, live)
        tensors = [c.slot_tensor(i, s) for s in range(len(c.rule.slot_kinds))] + [c.master_tensor(i)]
        for t in tensors:
            if t is None or isinstance(t, QuantizedState):
                continue
            file_view = t.as_strided(c.shapes[i], canon)
            src, dst = (t, file_view) if to_file else (file_view, t)
            dst.copy_(src.clone())


def _int8_layouts(c, to_file):
    """int8_block state cannot be permuted without requantizing (its blocks
    follow the memory order): a checkpoint holds it in its parameter's layout
    or not at all. to_file: ValueError naming the first parameter whose int8
    state is kept in another layout (loaded by load_state_dict in another
    layout, or a parameter whose layout changed after its state was made);
    nothing is written. Else (after a load, whose int8 state is in each
    parameter's layout) each such parameter's state layout becomes its
    parameter's: the load replaced all of its state, so no value moves."""
    for i, p in enumerate(c.params):
        live = c.layouts[i]
        canon = c.layout_for(p)
        if not c.numels[i] or _tensors.same_layout(c.shapes[i], live, canon):
            continue
        for s in range(len(c.rule.slot_kinds)):
            if isinstance(c.slot_tensor(i, s), QuantizedState):
                if not to_file:
                    c.layouts[i] = canon
                    break
                raise ValueError(
                    "%s.save_checkpoint: parameter %d (%s): its int8 state '%s' is kept in the layout of strides %s, "
                    "not the parameter's %s; a checkpoint holds state in its parameter's layout, and 8-bit blocks "
                    "cannot be reordered without requantizing (state_dict() keeps the layout; or load the state "
                    "in the parameter's layout); nothing was written"
                    % (c.owner, i, _tensors.describe(p), c.rule.slot_names[s], tuple(live), tuple(canon)))


def save(opt, path):
    c = opt._c
    raw = _core.c_path(path, "%s.save_checkpoint" % c.owner)
    with c.lock:
        sam_guard(c, "save_checkpoint")
        c = _members.sync(opt)
        _groups.sync(c, opt.param_groups)
        _int8_layouts(c, True)
        _relayout(c, True)
        try:
            c.h.save(raw)
        finally:
            _relayout(c, False)


def load(opt, path, match):
    c = opt._c
    where = "%s.load_checkpoint" % c.owner
    if match not in _core.MATCH:
        raise ValueError("%s: match = %r must be 'name' or 'position'" % (where, match))
    raw = _core.c_path(path, where)
    with c.lock:
        sam_guard(c, "load_checkpoint")
        c = _members.sync(opt)
        if any(c.masters):  # a master the file lacks is re-made from its parameter's memory: live, held
            with_live_params(c, lambda: c.h.load(raw, match))
        else:
            c.h.load(raw, match)
        _int8_layouts(c, False)  # the file's int8 state is in each parameter's layout: so is the live state now
        _relayout(c, False)  # the file's state is in each parameter's layout
        c.pending.clear()  # the checkpoint replaced every state
        _groups.pull_groups(c, opt.param_groups)
        c.refresh_scalars()
