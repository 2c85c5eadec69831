"""The exception every part of optim raises for a failed library call.

Kept apart from _lib so that importing optim (and subpackages that never call
the library, like optim.lab's renderer) does not load liboptim.so."""


class OptimError(RuntimeError):
    """A call into liboptim failed. `code` is the OPTIM_E* status and `name`
    its symbolic name ("OPTIM_EINVAL"); the message is the library's."""

    def __init__(self, code, name, message):
        super().__init__(message or name)
        self.code = code
        self.name = name
