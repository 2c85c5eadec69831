"""Checkpoints of an optim.torch optimizer: the whole C state written to and
read from a file in liboptim's format (include/optim_checkpoint.h,
docs/CHECKPOINT.md). A path is str, bytes or os.PathLike; one holding a NUL
byte is refused (optim._core.c_path)."""
from .. import _core
from . import _groups, _members
from . import _tensors
from ._quantized import QuantizedState
from ._step import sam_guard, with_live_params

__all__ = ["save", "load"]


def _relayout(c, to_file):
    """The file holds every parameter's float state in the parameter's own
    layout (_tensors.layout_of: the one a fresh optimizer over it assumes),
    whatever layout the live state has (SGD's momentum buffer takes its first
    gradient's, as torch's clone(d_p)). to_file: rewrite the C memory of each
    state kept in another layout into the parameter's (before h.save);
    else back into the live layout (after h.save, or after h.load, whose data
    is in the parameter's). By logical index: the values are unchanged, and
    the user's views of the state stay valid. int8_block state is left as it
    is (its blocks follow the memory order; re-blocking would requantize)."""
    for i, p in enumerate(c.params):
        live = c.layouts[i]
        canon = _tensors.layout_of(p)
        if not c.numels[i] or _tensors.same_layout(c.shapes[i], live, canon):
            continue
        tensors = [c.slot_tensor(i, s) for s in range(len(c.rule.slot_kinds))] + [c.master_tensor(i)]
        for t in tensors:
            if t is None or isinstance(t, QuantizedState):
                continue
            file_view = t.as_strided(c.shapes[i], canon)
            src, dst = (t, file_view) if to_file else (file_view, t)
            dst.copy_(src.clone())


def save(opt, path):
    c = opt._c
    raw = _core.c_path(path, "%s.save_checkpoint" % c.owner)
    with c.lock:
        sam_guard(c, "save_checkpoint")
        c = _members.sync(opt)
        _groups.sync(c, opt.param_groups)
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
        _relayout(c, False)  # the file's state is in each parameter's layout
        c.pending.clear()  # the checkpoint replaced every state
        _groups.pull_groups(c, opt.param_groups)
        c.refresh_scalars()
