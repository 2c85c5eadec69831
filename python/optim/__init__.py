"""optim: deep-learning optimizers in C, exact to torch.optim.

`optim.torch` holds drop-in replacements for torch.optim's classes; the
library itself is loaded from the build tree (see optim._lib) the first time
something needs it, so that parts that never call it (optim.lab's renderer)
import without it.
"""
from ._errors import OptimError

__all__ = ["OptimError", "__version__", "library_path"]


def __getattr__(name):
    # PEP 562: load liboptim only when its version or path is asked for.
    if name in ("__version__", "library_path"):
        from . import _capi
        return _capi.version if name == "__version__" else _capi.path
    raise AttributeError("module 'optim' has no attribute %r" % (name,))
