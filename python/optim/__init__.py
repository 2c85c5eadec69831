"""optim: deep-learning optimizers in C, exact to torch.optim.

`optim.torch` holds drop-in replacements for torch.optim's classes; the
library itself is loaded from the build tree (see optim._lib).
"""
from ._lib import OptimError, version as __version__, path as library_path

__all__ = ["OptimError", "__version__", "library_path"]
