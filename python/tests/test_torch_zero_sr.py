"""Stochastic rounding under torch's ZeroRedundancyOptimizer is one process's bits (docs/PRECISION.md,
"Sharded in Python"), in one process and fast: each rank's local optimizer is built here over its shard
(ZeroRedundancyOptimizer's partition: per group, largest tensor first, to the least loaded rank) and given
the role by hand (_distributed.attach, as ZeroRedundancyOptimizer._init_local_optimizer's call does) with a
stand-in for the ZeroRedundancyOptimizer that holds the whole model's param_groups. Every shard's
parameters and state must end bit for bit equal to one optim.torch optimizer stepping the whole model:
each tensor's random stream is keyed by its index in the whole model (optim__ext_set_sr_origin), not in
its shard. python/tests/test_distributed.py runs the real ZeroRedundancyOptimizer on 2 and 3 gloo ranks
(add_param_group, consolidate_state_dict, resuming)."""
import pytest
import torch
from torch.distributed.optim import ZeroRedundancyOptimizer  # its static _sync_param_groups (SyncingZero)

import optim.torch as ot
from optim._capi import OptimError
from optim.torch import _distributed

SEED = 4411
STEPS = 300
# Odd sizes, two of them over more than one 512-element chunk of random numbers, in two groups.
SHAPES = [[(37,), (5, 13), (1030,)], [(3, 3, 3), (1,), (700,)]]
CONFIGS = {
    # bfloat16 parameters and state, no master: both rounded stochastically
    "bf16": dict(cls=ot.AdamW, kw=dict(lr=3e-3, weight_decay=0.1)),
    # fp32 masters, bfloat16 state: the state rounded stochastically
    "master-bf16-state": dict(cls=ot.Adam, kw=dict(lr=3e-3, master_weights=True, state_dtype=torch.bfloat16)),
    # bfloat16 parameters, int8 state: the parameters and the codes rounded stochastically
    "int8": dict(cls=ot.AdamW, kw=dict(lr=3e-3, state_dtype="int8")),
    # a rule with one slot (momentum), bfloat16
    "sgd": dict(cls=ot.SGD, kw=dict(lr=1e-2, momentum=0.9)),
}


class Zero:
    """What the local optimizers read of a ZeroRedundancyOptimizer: its param_groups (the whole model, in the
    global order) and its number of ranks (one here: the role's refusals and collectives are not tested)."""

    world_size = 1
    rank = 0

    def __init__(self, groups):
        self.param_groups = [dict(params=list(g)) for g in groups]


def partition(groups, world):
    """ZeroRedundancyOptimizer's (torch 1.13, _partition_parameters): per group, largest tensor first, each to
    the rank holding the fewest elements so far (the lowest rank on ties)."""
    sizes = [0] * world
    out = [[[] for _ in groups] for _ in range(world)]
    for gi, params in enumerate(groups):
        for p in sorted(params, key=lambda t: t.numel(), reverse=True):
            r = sizes.index(min(sizes))
            out[r][gi].append(p)
            sizes[r] += p.numel()
    return out


def bits(t):
    t = t.detach().contiguous()
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32) if t.element_size() == 4 else t


def state_bits(opt, p):
    out = {}
    for k, v in opt.state[p].items():
        if isinstance(v, ot.QuantizedState):
            out[k + ".codes"], out[k + ".scales"] = bits(v.codes), bits(v.scales)
        elif torch.is_tensor(v):
            out[k] = bits(v)
    return out


def model(seed, shapes):
    g = torch.Generator().manual_seed(seed)
    return [[(torch.randn(s, generator=g) * 0.3).to(torch.bfloat16).requires_grad_() for s in group]
            for group in shapes]


def grads(seed, t, groups):
    g = torch.Generator().manual_seed(seed * 1000 + t)
    for params in groups:
        for p in params:
            p.grad = (torch.randn(p.shape, generator=g) * 0.05).to(p.dtype)


def shards(cfg, groups, world, zero):
    """One local optimizer per rank over its shard, in the role ZeroRedundancyOptimizer gives it."""
    out = []
    for r, parts in enumerate(partition(groups, world)):
        opt = cfg["cls"]([dict(params=ps) for ps in parts], stochastic_rounding=True, **cfg["kw"])
        _distributed.attach(opt._c, zero)
        opt.set_seed(SEED)
        out.append(opt)
    return out


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shards_round_as_one_process(name, world):
    """Every rank's parameters and state equal one process's, bit for bit, over 300 steps (two and three
    ranks, two groups, tensors of odd sizes)."""
    cfg = CONFIGS[name]
    print("seed", SEED)
    ref = model(SEED, SHAPES)
    mine = model(SEED, SHAPES)
    alone = cfg["cls"]([dict(params=ps) for ps in ref], stochastic_rounding=True, **cfg["kw"])
    alone.set_seed(SEED)
    zero = Zero(mine)
    local = shards(cfg, mine, world, zero)
    assert all(o.param_groups[0]["params"] for o in local), "every rank owns a tensor"
    for t in range(STEPS):
        grads(SEED, t, ref)
        grads(SEED, t, mine)
        alone.step()
        for o in local:
            o.step()
    owner = {p: o for o in local for g in o.param_groups for p in g["params"]}
    for gi, (ps, qs) in enumerate(zip(mine, ref)):
        for j, (p, q) in enumerate(zip(ps, qs)):
            assert torch.equal(bits(p), bits(q)), (name, world, gi, j)
            a, b = state_bits(owner[p], p), state_bits(alone, q)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (name, world, gi, j)


def test_added_group_and_rebuilt_optimizer_keep_the_numbering():
    """A group added after some steps (ZeroRedundancyOptimizer.add_param_group: the new tensors come after
    the model's, the old ones keep their owners) and a local optimizer rebuilt by an edit of its groups
    (its C object replaced) draw one process's numbers too."""
    cfg = CONFIGS["bf16"]
    ref = model(SEED + 1, SHAPES)
    mine = model(SEED + 1, SHAPES)
    late_ref = model(SEED + 2, [[(513,), (9, 7)]])[0]
    late_mine = model(SEED + 2, [[(513,), (9, 7)]])[0]
    alone = cfg["cls"]([dict(params=ref[0])], stochastic_rounding=True, **cfg["kw"])
    alone.set_seed(SEED)
    zero = Zero(mine[:1])
    local = shards(cfg, mine[:1], 2, zero)
    for t in range(60):
        if t == 20:  # a second group, as ZeroRedundancyOptimizer.add_param_group gives it
            alone.add_param_group(dict(params=ref[1]))
            zero.param_groups.append(dict(params=list(mine[1])))
            for o, part in zip(local, partition([mine[0], mine[1]], 2)):
                o.add_param_group(dict(params=part[1]))
        if t == 40:  # and a third, one tensor only, on one rank
            alone.add_param_group(dict(params=late_ref))
            zero.param_groups.append(dict(params=list(late_mine)))
            local[1].add_param_group(dict(params=late_mine))
        if t == 50:  # an edit of the groups by hand: the optimizers are rebuilt (same tensors, other order)
            for o in local:
                for g in o.param_groups:
                    g["params"].reverse()
        done = [ref[0]] + ([ref[1]] if t >= 20 else []) + ([late_ref] if t >= 40 else [])
        grads(SEED, t, done)
        grads(SEED, t, [mine[0]] + ([mine[1]] if t >= 20 else []) + ([late_mine] if t >= 40 else []))
        alone.step()
        for o in local:
            o.step()
    for p, q in zip([p for g in mine for p in g] + late_mine, [q for g in ref for q in g] + late_ref):
        assert torch.equal(bits(p), bits(q))


def test_without_the_role_the_shard_numbering_differs():
    """The control: the same shards without the role number their tensors within the shard, and then some
    tensor ends with other bits (so the test above sees the numbering)."""
    cfg = CONFIGS["bf16"]
    ref = model(SEED, SHAPES)
    mine = model(SEED, SHAPES)
    alone = cfg["cls"]([dict(params=ps) for ps in ref], stochastic_rounding=True, **cfg["kw"])
    alone.set_seed(SEED)
    local = []
    for parts in partition(mine, 2):
        o = cfg["cls"]([dict(params=ps) for ps in parts], stochastic_rounding=True, **cfg["kw"])
        o.set_seed(SEED)
        local.append(o)
    for t in range(30):
        grads(SEED, t, ref)
        grads(SEED, t, mine)
        alone.step()
        for o in local:
            o.step()
    same = [torch.equal(bits(p), bits(q)) for ps, qs in zip(mine, ref) for p, q in zip(ps, qs)]
    assert not all(same), same


class SyncingZero(Zero):
    """A stand-in that also copies the group keys as torch 1.13's ZeroRedundancyOptimizer does (its
    _sync_param_groups, called here): local -> global when the local optimizer is built and after each of its
    steps, global -> local before each step (and before consolidate_state_dict). One per rank, as each rank's
    process has its own ZeroRedundancyOptimizer."""

    def __init__(self, groups, local_groups, cfg, sr=True, **kw):
        super().__init__(groups)
        self.optim = cfg["cls"]([dict(params=ps) for ps in local_groups], stochastic_rounding=sr, **kw)
        _distributed.attach(self.optim._c, self)
        _distributed.publish(self.optim._c, self.optim.param_groups)  # as __init__ does in the role
        self.sync = ZeroRedundancyOptimizer._sync_param_groups
        self.sync(self.optim.param_groups, self.param_groups)

    def step(self):
        self.sync(self.param_groups, self.optim.param_groups)
        self.optim.step()
        self.sync(self.optim.param_groups, self.param_groups)


@pytest.mark.parametrize("loss_scale", [None, 4.0])
def test_a_seed_set_between_steps_is_kept(loss_scale):
    """set_seed on every rank's local optimizer after some steps: the next steps round with the new seed, as
    one process does, and ZeroRedundancyOptimizer's groups (its consolidated state_dict) and the local
    state_dict's groups say it at once, a seed set back to 0 too. (Its
    copy of the groups made before the change was taken for a loaded state at the next step, and set the old
    seed back: with a loss scale, even the first set_seed never took effect.)"""
    cfg = CONFIGS["bf16"]
    kw = dict(cfg["kw"], loss_scale=loss_scale)
    ref = model(SEED + 3, SHAPES)
    mine = model(SEED + 3, SHAPES)
    alone = cfg["cls"]([dict(params=ps) for ps in ref], stochastic_rounding=True, **kw)
    ranks = [SyncingZero(mine, parts, cfg, **kw) for parts in partition(mine, 2)]
    seeds = {0: SEED, 20: SEED + 20, 30: 0}  # (0 and no loss scale: nothing else to publish, yet the groups held 4431)
    for t in range(40):
        if t in seeds:
            alone.set_seed(seeds[t])
            for z in ranks:
                z.optim.set_seed(seeds[t])
                assert z.param_groups[0]["optim_precision"]["seed"] == seeds[t], t
                assert z.optim.state_dict()["param_groups"][0]["optim_precision"]["seed"] == seeds[t], t
        grads(SEED, t, ref)
        grads(SEED, t, mine)
        alone.step()
        for z in ranks:
            z.step()
    assert [z.optim.seed for z in ranks] == [0] * 2
    for p, q in zip([p for g in mine for p in g], [q for g in ref for q in g]):
        assert torch.equal(bits(p), bits(q))


def test_schedule_free_switches_of_a_rebuilt_optimizer_keep_the_numbering():
    """Schedule-free's train() and eval() round bfloat16 parameters stochastically too (keyed apart from the
    steps): a local optimizer rebuilt by an edit of its groups (a new C object, default numbering) that
    switches before its next step must key them by the whole model's numbering as well."""
    kw = dict(lr=1e-2, warmup_steps=3)
    ref = model(SEED + 4, SHAPES)
    mine = model(SEED + 4, SHAPES)
    alone = ot.AdamWScheduleFree([dict(params=ps) for ps in ref], stochastic_rounding=True, **kw)
    alone.set_seed(SEED)
    zero = Zero(mine)
    local = shards(dict(cls=ot.AdamWScheduleFree, kw=kw), mine, 2, zero)
    for o in [alone] + local:
        o.train()
    for t in range(30):
        if t in (10, 20):  # an edit of the groups by hand (the optimizers rebuilt), then a switch to eval
            for o in local:
                for g in o.param_groups:
                    g["params"].reverse()
            for o in [alone] + local:
                o.eval()
            for p, q in zip([p for g in mine for p in g], [q for g in ref for q in g]):
                assert torch.equal(bits(p), bits(q)), t
            for o in [alone] + local:
                o.train()
        grads(SEED, t, ref)
        grads(SEED, t, mine)
        alone.step()
        for o in local:
            o.step()
    for p, q in zip([p for g in mine for p in g], [q for g in ref for q in g]):
        assert torch.equal(bits(p), bits(q))


def test_set_sr_origin_refuses_bad_arguments_by_value():
    """optim__ext_set_sr_origin (through Handle.set_sr_origin): a parameter that does not exist, a first element
    off the 512-element chunks or so large that the tensor's elements would pass 2^64 (their indices would wrap
    onto the first ones' numbers), and negative or non-int values (which ctypes would wrap into huge ones) are
    refused naming the value; a refused call changes nothing, an accepted one keys the stream."""
    p = torch.zeros(1030, dtype=torch.bfloat16, requires_grad=True)
    opt = ot.SGD([p], lr=0.1, stochastic_rounding=True)
    h = opt._c.h
    for args, text in [((1, 0, 0), "param 1 does not exist (1 params)"),
                       ((0, 0, 100), "first = 100 is not a multiple of 512"),
                       ((0, 0, 2 ** 64 - 1024), "first = 18446744073709550592: param 0's 1030 elements"),
                       ((-1, 0, 0), "i = -1 must be an int"),
                       ((0, -3, 0), "param = -3 must be an int"),
                       ((0, 0, 2 ** 64), "first = 18446744073709551616 must be an int"),
                       ((0, 1.0, 0), "param = 1.0 must be an int")]:
        with pytest.raises((ValueError, OptimError)) as e:
            h.set_sr_origin(*args)
        assert text in str(e.value), (args, str(e.value))
    h.set_sr_origin(0, 7, 2 ** 64 - 2048)  # room for 1030 elements: accepted

    def run(origin):
        q = torch.full((1030,), 1.0, dtype=torch.bfloat16, requires_grad=True)
        o = ot.SGD([q], lr=1e-3, stochastic_rounding=True)
        if origin is not None:
            o._c.h.set_sr_origin(0, *origin)
        q.grad = torch.full_like(q, 0.3)
        o.step()
        return bits(q)
    assert torch.equal(run(None), run((0, 0))) and not torch.equal(run(None), run((5, 0)))


def test_a_loaded_seed_of_zero_is_taken():
    """A state_dict of an optimizer with stochastic rounding and seed 0 (no loss scale), loaded by
    ZeroRedundancyOptimizer (its groups replaced by the loaded ones, whose keys it then copies into the local
    groups; its top-level 'optim_precision' dropped) into ranks seeded otherwise: they take seed 0, as a plain
    optimizer loading it does (the groups carried no seed of 0, and the ranks kept theirs)."""
    import copy
    cfg = CONFIGS["bf16"]
    ref = model(SEED + 5, SHAPES)
    mine = model(SEED + 5, SHAPES)
    alone = cfg["cls"]([dict(params=ps) for ps in ref], stochastic_rounding=True, **cfg["kw"])
    grads(SEED, 0, ref)
    alone.step()
    sd = alone.state_dict()
    plain = cfg["cls"]([dict(params=ps) for ps in model(SEED + 5, SHAPES)], stochastic_rounding=True, **cfg["kw"])
    plain.set_seed(42)
    plain.load_state_dict(sd)
    ranks = [SyncingZero(mine, parts, cfg, **cfg["kw"]) for parts in partition(mine, 2)]
    for z in ranks:
        z.optim.set_seed(42)
        grads(SEED, 0, mine)
        z.step()
        # ZeroRedundancyOptimizer.load_state_dict: torch's Optimizer.load_state_dict makes the saved groups its
        # own (the parameters kept), then _sync_param_groups(global -> local)
        saved = copy.deepcopy(sd["param_groups"])
        z.param_groups = [dict(s, params=g["params"]) for g, s in zip(z.param_groups, saved)]
        z.sync(z.param_groups, z.optim.param_groups)
    assert plain.seed == 0 and [z.optim.seed for z in ranks] == [0, 0]


def test_a_loss_scale_turned_off_is_published():
    """Without stochastic rounding: a local optimizer with a loss scale that loads a state without one (and seed
    0) writes that into the groups too, ZeroRedundancyOptimizer's included: its consolidated state_dict would
    otherwise keep the old scale (and a run resumed from it scale its loss again)."""
    cfg = CONFIGS["sgd"]
    mine = model(SEED + 6, SHAPES)
    for parts in partition(mine, 2):
        z = SyncingZero(mine, parts, cfg, sr=False, loss_scale=64.0, **cfg["kw"])
        grads(SEED, 0, mine)
        z.step()
        assert z.param_groups[0]["optim_precision"]["loss_scale"]["scale"] == 64.0
        sd = z.optim.state_dict()  # its own state, saved without a loss scale
        sd = dict(sd, optim_precision=dict(sd["optim_precision"], loss_scale=None),
                  param_groups=[{k: v for k, v in g.items() if k != "optim_precision"} for g in sd["param_groups"]])
        z.optim.load_state_dict(sd)
        assert z.optim.loss_scale == 1.0 and z.param_groups[0]["optim_precision"]["loss_scale"] is None
        z.step()
        assert z.optim.loss_scale == 1.0 and z.param_groups[0]["optim_precision"]["loss_scale"] is None
