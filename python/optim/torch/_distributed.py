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

ZeroRedundancyOptimizer gives its local optimizer no sign of the role, so the
role is recognised from the call: the local optimizer is constructed by
ZeroRedundancyOptimizer._init_local_optimizer. Nothing is imported for this;
without torch.distributed's ZeRO module loaded nothing is looked at.
"""
import sys

__all__ = []

_ZERO_MODULE = "torch.distributed.optim.zero_redundancy_optimizer"
# Frames between ZeroRedundancyOptimizer._init_local_optimizer and the check:
# a class's __init__, the base's __init__, SAM's base optimizer's __init__...
_DEPTH = 8


def zero_local_rank():
    """The global rank whose ZeroRedundancyOptimizer is constructing the
    calling optimizer as its local optimizer, or None when the caller is not
    being built by a ZeroRedundancyOptimizer of two ranks or more."""
    module = sys.modules.get(_ZERO_MODULE)
    cls = getattr(module, "ZeroRedundancyOptimizer", None) if module is not None else None
    code = getattr(getattr(cls, "_init_local_optimizer", None), "__code__", None)
    if code is None:
        return None
    frame = sys._getframe(1)
    for _ in range(_DEPTH):
        if frame is None:
            return None
        if frame.f_code is code:
            zero = frame.f_locals.get("self")
            if getattr(zero, "world_size", 2) == 1:
                return None  # one rank: its shard is the whole model
            return int(getattr(zero, "global_rank", getattr(zero, "rank", 0)))
        frame = frame.f_back
    return None


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
