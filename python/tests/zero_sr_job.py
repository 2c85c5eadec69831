"""Stochastic rounding under a real ZeroRedundancyOptimizer (gloo ranks), for test_distributed.py's 2- and
3-rank jobs: the ranks' side (rank_job, run inside the job) and one process's side (one_process, run by
the tests), sharing the model, the gradients and the schedule of the run.

A model of odd-sized tensors in two groups (the second added after SR_LATE steps, which makes
ZeroRedundancyOptimizer re-partition), every rank fed the same gradients (as DistributedDataParallel's
average would be), SR_STEPS steps with stochastic rounding under one seed, per configuration: bfloat16
parameters and state (AdamW), fp32 masters with bfloat16 state (Adam), bfloat16 parameters with int8 state
(AdamW). The state is consolidated and saved at SR_SAVE, and the run resumed from it by a new
ZeroRedundancyOptimizer (on the same ranks; on 3 ranks from the 2-rank job's checkpoint), from one
process's state_dict, and (by the tests) by a plain optimizer in one process. Rank 0 also runs the first
configuration under a ZeroRedundancyOptimizer of one rank (its local optimizer holds the tensors sorted by
size, not in the model's order). Every one must end with one process's bits."""
import os

import torch

SR_STEPS, SR_LATE, SR_SAVE = 150, 50, 110
SR_SEED = 4411  # stochastic rounding's seed (set_seed), beside the job's seed of the gradients
SR_SHAPES = [[(37,), (5, 13), (1030,)], [(3, 3, 3), (1,), (700,)]]
# (rule, the parameters' dtype, keywords). torch 1.13's gloo cannot broadcast bfloat16 tensors ("Invalid
# scalar type"), which ZeroRedundancyOptimizer does with every parameter at every step: bfloat16 parameters
# are tested in one process (test_torch_zero_sr.py); here the state is what rounds stochastically.
SR_CONFIGS = {
    "bf16_state": ("AdamW", torch.float32, dict(lr=3e-3, weight_decay=0.1, state_dtype=torch.bfloat16)),
    "f16_master": ("Adam", torch.float16, dict(lr=3e-3, master_weights=True, state_dtype=torch.bfloat16)),
    "int8": ("AdamW", torch.float32, dict(lr=3e-3, state_dtype="int8")),
}


def model(name, seed):
    g = torch.Generator().manual_seed(seed + 91)
    dtype = SR_CONFIGS[name][1]
    return [[(torch.randn(s, generator=g) * 0.3).to(dtype).requires_grad_() for s in group] for group in SR_SHAPES]


def _grads(seed, t, groups):
    g = torch.Generator().manual_seed(seed * 7919 + t)
    for params in groups:
        for p in params:
            p.grad = (torch.randn(p.shape, generator=g) * 0.05).to(p.dtype)


def train(opt, groups, seed, steps):
    """Steps `steps` of the run: the second group joins at SR_LATE (if not there yet)."""
    for t in steps:
        if t == SR_LATE and len(opt.param_groups) == 1:
            opt.add_param_group(dict(params=groups[1]))
        _grads(seed, t, groups[:len(opt.param_groups)])
        opt.step()


def flat(groups):
    return [p.detach().clone() for g in groups for p in g]


def state_of(sd):
    """{index: {key: tensor}} of a state_dict's state, detached (int8 slots as their codes and scales)."""
    import optim.torch as ot
    out = {}
    for k, st in sd["state"].items():
        row = {}
        for key, v in st.items():
            if isinstance(v, ot.QuantizedState):
                row[key + ".codes"], row[key + ".scales"] = v.codes.clone(), v.scales.clone()
            elif torch.is_tensor(v):
                row[key] = v.detach().clone()
        out[k] = row
    return out


def _cls(name):
    import optim.torch as ot
    return getattr(ot, SR_CONFIGS[name][0])


def _zero(name, groups, process_group=None):
    from torch.distributed.optim import ZeroRedundancyOptimizer as ZeRO
    return ZeRO([dict(params=g) for g in groups], optimizer_class=_cls(name), process_group=process_group,
                stochastic_rounding=True, **SR_CONFIGS[name][2])


def one_process(name, seed, steps, groups=None, opt=None):
    """A plain optimizer over the model in this process: (its groups, the optimizer) after `steps`."""
    if groups is None:
        groups = model(name, seed)
    if opt is None:
        opt = _cls(name)([dict(params=groups[0])], stochastic_rounding=True, **SR_CONFIGS[name][2])
        opt.set_seed(SR_SEED)
    train(opt, groups, seed, steps)
    return groups, opt


def checkpoint_path(directory, name, world):
    return os.path.join(directory, "..", "sr_%s_w%d.pt" % (name, world))


def rank_job(rank, world, directory, seed):
    import torch.distributed as dist
    out = {}
    for name in SR_CONFIGS:
        groups = model(name, seed)
        zero = _zero(name, groups[:1])
        zero.optim.set_seed(SR_SEED)  # every rank's local optimizer
        train(zero, groups, seed, range(SR_SAVE))
        zero.consolidate_state_dict(to=0)
        if rank == 0:
            torch.save({"optimizer": zero.state_dict(), "params": flat(groups)},
                       checkpoint_path(directory, name, world))
        dist.barrier()
        train(zero, groups, seed, range(SR_SAVE, SR_STEPS))
        zero.consolidate_state_dict(to=0)
        r = dict(params=flat(groups), state=state_of(zero.state_dict()) if rank == 0 else None,
                 local=[zero._param_to_index[p] for g in zero.optim.param_groups for p in g["params"]])
        # Resumed from the consolidated state_dict by a new ZeroRedundancyOptimizer (built without a seed:
        # the checkpoint's, in its groups, wins); on 3 ranks from the 2-rank job's checkpoint.
        ckpt = torch.load(checkpoint_path(directory, name, 2))
        groups = model(name, seed)
        with torch.no_grad():
            for p, q in zip((p for g in groups for p in g), ckpt["params"]):
                p.copy_(q)
        zero = _zero(name, groups)
        zero.load_state_dict(ckpt["optimizer"])
        train(zero, groups, seed, range(SR_SAVE, SR_STEPS))
        r["resumed"] = flat(groups)
        # Resumed from one process's state_dict at SR_SAVE.
        if name == "bf16_state":
            groups, alone = one_process(name, seed, range(SR_SAVE))
            zero = _zero(name, groups)
            zero.load_state_dict(alone.state_dict())
            train(zero, groups, seed, range(SR_SAVE, SR_STEPS))
            r["from_one_process"] = flat(groups)
        out[name] = r
    # A ZeroRedundancyOptimizer of one rank (rank 0's own group).
    solo = dist.new_group([0])
    if rank == 0:
        groups = model("bf16_state", seed)
        zero = _zero("bf16_state", groups[:1], process_group=solo)
        zero.optim.set_seed(SR_SEED)
        train(zero, groups, seed, range(SR_STEPS))
        out["one_rank"] = dict(params=flat(groups),
                               order=[tuple(p.shape) for p in zero.optim.param_groups[0]["params"]])
    dist.barrier()
    return out
