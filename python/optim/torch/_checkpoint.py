"""Checkpoints of an optim.torch optimizer: the whole C state written to and
read from a file in liboptim's format (include/optim_checkpoint.h,
docs/CHECKPOINT.md). A path is str, bytes or os.PathLike; one holding a NUL
byte is refused (optim._core.c_path)."""
from .. import _core
from . import _groups, _members
from ._step import sam_guard, with_live_params

__all__ = ["save", "load"]


def save(opt, path):
    c = opt._c
    raw = _core.c_path(path, "%s.save_checkpoint" % c.owner)
    with c.lock:
        sam_guard(c, "save_checkpoint")
        c = _members.sync(opt)
        _groups.sync(c, opt.param_groups)
        c.h.save(raw)


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
        c.pending.clear()  # the checkpoint replaced every state
        _groups.pull_groups(c, opt.param_groups)
        c.refresh_scalars()
