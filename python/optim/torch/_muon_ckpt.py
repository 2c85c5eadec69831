"""The checkpoint file of a MuonWithAuxAdam: its two inner optimizers (an optim.torch.Muon and an
optim.torch.AdamW, each one liboptim object: an object has one rule) in one file.

Layout (little-endian): the 8 bytes b"OPTMWAUX", a uint32 version (1), a uint32 length and that many bytes of
UTF-8 JSON (the outer settings: which groups are Muon's, the non-finite policy, norm clipping, the skipped-step
count), then for the Muon and the AdamW object in turn a uint64 length and that many bytes of the object's own
liboptim checkpoint (docs/CHECKPOINT.md; length 0: the optimizer has no such object). Written to a temporary
file beside the target, flushed to disk, then renamed over it (through a symbolic link, over the file it points
to), as liboptim writes its own: a crash leaves the old file or the new one. A load reads and checks the whole
file first, and restores both objects if the second one's load fails: on any error the optimizer is unchanged."""
import json
import os
import struct
import tempfile

from .. import _core
from .._capi import OptimError

__all__ = ["save", "load"]

MAGIC = b"OPTMWAUX"
VERSION = 1


def _error(code_name, message):
    return OptimError(getattr(_core.C, code_name), code_name, message)


def _object_bytes(opt, where):
    """The liboptim checkpoint of one inner optimizer, as bytes (b"" for None)."""
    if opt is None:
        return b""
    fd, tmp = tempfile.mkstemp(prefix="optim-mwa-")
    os.close(fd)
    try:
        opt.save_checkpoint(tmp)
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


def _load_object(opt, data, match):
    fd, tmp = tempfile.mkstemp(prefix="optim-mwa-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        opt.load_checkpoint(tmp, match)
    finally:
        os.unlink(tmp)


def save(owner, path):
    where = "MuonWithAuxAdam.save_checkpoint"
    raw = _core.c_path(path, where)
    head = json.dumps(owner._ckpt_settings(), sort_keys=True).encode("utf-8")
    parts = [_object_bytes(owner._muon, where), _object_bytes(owner._adam, where)]
    blob = b"".join([MAGIC, struct.pack("<II", VERSION, len(head)), head] +
                    [struct.pack("<Q", len(p)) + p for p in parts])
    target = os.path.realpath(raw)
    directory = os.path.dirname(target) or b"."
    try:
        fd, tmp = tempfile.mkstemp(prefix=b".optim-mwa-", dir=directory)
    except OSError as e:
        raise _error("OPTIM_EOPEN", "%s: cannot create a temporary file in %r: %s" % (where, directory, e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _error("OPTIM_EWRITE", "%s: writing %r failed: %s (nothing was changed there)" % (where, path, e)) \
            from None


def _parse(path, where):
    raw = _core.c_path(path, where)
    try:
        with open(raw, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _error("OPTIM_EOPEN", "%s: cannot read %r: %s" % (where, path, e)) from None
    if data[:8] != MAGIC:
        raise _error("OPTIM_EMAGIC", "%s: %r is not a MuonWithAuxAdam checkpoint (its first bytes are %r, not %r; "
                     "a single optimizer's file loads with that optimizer's load_checkpoint)"
                     % (where, path, data[:8], MAGIC))
    if len(data) < 16:
        raise _error("OPTIM_ETRUNCATED", "%s: %r is truncated (%d bytes)" % (where, path, len(data)))
    version, nhead = struct.unpack_from("<II", data, 8)
    if version != VERSION:
        raise _error("OPTIM_EVERSION", "%s: %r has format version %d; this optim reads version %d"
                     % (where, path, version, VERSION))
    pos = 16 + nhead
    if pos > len(data):
        raise _error("OPTIM_ETRUNCATED", "%s: %r is truncated in its settings" % (where, path))
    try:
        settings = json.loads(data[16:pos].decode("utf-8"))
    except ValueError as e:
        raise _error("OPTIM_EFORMAT", "%s: %r has corrupt settings: %s" % (where, path, e)) from None
    if not isinstance(settings, dict):
        raise _error("OPTIM_EFORMAT", "%s: %r has corrupt settings: a JSON %s, not an object"
                     % (where, path, type(settings).__name__))
    parts = []
    for name in ("Muon", "AdamW"):
        if pos + 8 > len(data):
            raise _error("OPTIM_ETRUNCATED", "%s: %r is truncated before its %s object" % (where, path, name))
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if pos + n > len(data):
            raise _error("OPTIM_ETRUNCATED", "%s: %r is truncated in its %s object (%d of %d bytes)"
                         % (where, path, name, len(data) - pos, n))
        parts.append(data[pos:pos + n])
        pos += n
    if pos != len(data):
        raise _error("OPTIM_EFORMAT", "%s: %r has %d bytes after its last object" % (where, path, len(data) - pos))
    return settings, parts


def load(owner, path, match):
    where = "MuonWithAuxAdam.load_checkpoint"
    if match not in _core.MATCH:
        raise ValueError("%s: match = %r must be 'name' or 'position'" % (where, match))
    settings, parts = _parse(path, where)
    mine = [bool(g["use_muon"]) for g in owner.param_groups]
    if settings.get("use_muon") != mine:
        raise _error("OPTIM_EMISMATCH", "%s: %r holds groups with use_muon %s; this optimizer's are %s"
                     % (where, path, settings.get("use_muon"), mine))
    inner = [owner._muon, owner._adam]
    for opt, data, name in zip(inner, parts, ("Muon", "AdamW")):
        if (opt is None) != (not data):
            raise _error("OPTIM_EMISMATCH", "%s: %r %s a %s object; this optimizer %s"
                         % (where, path, "has" if data else "has no", name, "has none" if opt is None else "has one"))
    try:
        owner._check_settings(settings, where)
    except ValueError as e:
        raise _error("OPTIM_EFORMAT", "%s (in %r)" % (e, path)) from None
    backups = [_object_bytes(opt, where) for opt in inner]
    done = []
    try:
        for opt, data in zip(inner, parts):
            if opt is not None:
                _load_object(opt, data, match)
                done.append(opt)
    except BaseException:
        for opt, data in zip(inner, backups):  # what was loaded goes back: the optimizer is unchanged
            if opt in done:
                _load_object(opt, data, match)
        raise
    owner._apply_settings(settings)
