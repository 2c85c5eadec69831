"""Checkpoints of an optim.torch optimizer: the whole C state written to and
read from a file in liboptim's format (include/optim_checkpoint.h,
docs/CHECKPOINT.md). A path is str, bytes or os.PathLike; one holding a NUL
byte is refused (optim._core.c_path)."""
from .. import _core
from . import _groups
from ._step import sam_guard

__all__ = ["save", "load"]


def save(opt, path):
    c = opt._c
    raw = _core.c_path(path, "%s.save_checkpoint" % c.owner)
    with c.lock:
        sam_guard(c, "save_checkpoint")
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
        c.h.load(raw, match)
        _groups.pull_groups(c, opt.param_groups)
