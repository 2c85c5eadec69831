"""optim.torch inside torch.distributed (gloo, CPU): under DistributedDataParallel
and as the optimizer_class of torch's ZeroRedundancyOptimizer, on 2 and 3
processes (docs/DISTRIBUTED.md, "Python: torch.distributed").

Each job is N processes of this file run as a script
(`python3 test_distributed.py <job> <rank> <world> <dir>`), joined by gloo over a
file:// rendezvous with a 120-second process-group timeout, one thread each; every
rank writes what it saw to <dir>/rank<r>.pt and the tests compare. The launcher
stops the job at the first rank that fails and names it. Two jobs carry most
checks, one on 2 ranks and one on 3 (which resumes the 2-rank job's checkpoints);
two small jobs check failures; one runs examples/ddp_zero.py.

What is compared, for every rule (SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW,
RAdam, NAdam with torch.optim; AdaBound, which torch lacks, in the sharded roles
only), two parameter groups, an lr scheduler, gradient clipping, 12 steps of a
small MLP whose batch the ranks split:
  - four roles side by side in one job: DDP + torch.optim, DDP + optim.torch, DDP +
    ZeroRedundancyOptimizer(torch.optim), DDP + ZeroRedundancyOptimizer(optim.torch);
    every rank ends with the same parameters (bits);
  - ZeRO changes nothing: ZeRO(optim.torch) equals DDP + optim.torch bit for bit,
    parameters and the consolidated state (and ZeRO(torch.optim) equals DDP +
    torch.optim, which checks the harness);
  - a role is one process given the same gradients: the gradients each role's
    optimizer saw are recorded and replayed into a fresh optimizer in this
    process, which must end with the role's parameters, bit for bit;
  - against torch.optim in the same role: bit for bit when optim.torch is
    bit-identical to torch.optim in one process on this build (decided by
    replaying torch's own gradients through optim.torch here, and printed; see
    docs/FIDELITY.md where the tree has it), else within TOL;
  - ZeroRedundancyOptimizer's calls on its local optimizer: constructor with
    groups empty on some ranks (3 ranks), step(closure), add_param_group after
    steps, parameters_as_bucket_view (param.data moved into buckets after the
    optimizer was built), consolidate_state_dict / state_dict, load_state_dict
    (the rank's states assigned before the groups: a ZeRO built with other
    hyperparameters than the checkpoint's, amsgrad off, takes them all);
  - DDP's gradient_as_bucket_view (gradients that are views of DDP's buckets);
  - fused value clipping (element-wise: fine sharded); fused norm clipping and
    nonfinite='skip' under DDP (every rank sees the whole gradient) against the
    recipe ZeRO needs (optim.torch.clip_grad_norm_ over the model, skip when the
    norm is not finite), bit for bit, with a NaN on one rank's batch;
  - ZeRO refuses fused norm clipping, nonfinite='skip' and SAM (each sees the
    shard only), nothing changed; overlap_with_ddp is not available on CPU in
    torch 1.13 (its hooks require NCCL; optim.torch has no functional form);
  - SAM and ASAM under DDP (the reference's no_sync first pass too) against the
    reference algorithm, and bit for bit against one process;
  - checkpoints: consolidate_state_dict() on 2 ranks, resumed on 2 ranks, on 3
    ranks and in a plain optimizer in one process, bit for bit with the
    uninterrupted run; a torch.optim ZeRO checkpoint resumed by optim.torch on 3
    ranks; the consolidated state of 3 ranks equal to one process's;
  - failures: a rank raising inside step (nonfinite='error' on its shard) ends a
    torch.multiprocessing.spawn job naming the rank; a rank stuck outside the
    collective makes the others fail after the process group's timeout.
"""
import copy
import datetime
import math
import os
import subprocess
import sys
import time
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STEPS = 12
LATE = 4          # add_param_group after this many steps (in the configs that ask)
BATCH = 12        # rows per step, split across the ranks (2 and 3 divide it)
TOL = 1e-5
RESUME_AT, RESUME_MORE = 6, 6
JOB_TIMEOUT = 300  # seconds before a job is declared hung (a loaded 2-core machine is slow to start ranks)
RANK_TIMEOUT = 120  # the process groups' timeout: a rank waits this long for the others in a collective

# ---- the configurations ------------------------------------------------------------------------
# Each: the rule, its arguments (torch's), torch-only arguments (torch_kw), the first group's weight
# decay (wd), gradient clipping ('norm': torch's clip_grad_norm_ before step in every role; 'value':
# optim.torch's fused clip_grad_value, torch's clip_grad_value_ for torch.optim), the scheduler
# (torch's StepLR unless sched), ZeroRedundancyOptimizer's parameters_as_bucket_view (pbv), DDP's
# gradient_as_bucket_view (gbv), step(closure) (closure), the bias group added after LATE steps
# (late), and torch=False for a rule torch lacks.

CONFIGS = [
    dict(name="sgd", rule="SGD", kw=dict(lr=0.05, momentum=0.9, nesterov=True), wd=0.125, clip="norm",
         pbv=False, gbv=True),
    dict(name="adagrad", rule="Adagrad", kw=dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1), wd=0.125,
         clip="value", pbv=True, gbv=False),
    dict(name="rmsprop", rule="RMSprop", kw=dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True), wd=0.0,
         clip="norm", pbv=False, gbv=False),
    dict(name="adadelta", rule="Adadelta", kw=dict(lr=1.0, rho=0.9), wd=0.125, clip=None, pbv=True, gbv=True,
         closure=True),
    dict(name="adam", rule="Adam", kw=dict(lr=0.01, betas=(0.8, 0.99), amsgrad=True), wd=0.0, clip="norm",
         pbv=False, gbv=True),
    dict(name="adamw", rule="AdamW", kw=dict(lr=0.01), wd=0.125, clip=None, pbv=True, gbv=False, late=True),
    dict(name="radam", rule="RAdam", kw=dict(lr=0.01), wd=0.0, clip="norm", pbv=False, gbv=True,
         sched="warmup_cosine"),
    dict(name="nadam", rule="NAdam", kw=dict(lr=0.01), torch_kw=dict(foreach=True), wd=0.0, clip=None, pbv=True,
         gbv=False),
    dict(name="adabound", rule="AdaBound", kw=dict(lr=0.01, final_lr=0.1), wd=0.125, clip="norm", pbv=False,
         gbv=True, torch=False),
]
CLIP_NORM, CLIP_VALUE = 0.5, 0.05
SAM_CONFIGS = [dict(name="sam", adaptive=False, no_sync=False), dict(name="asam_no_sync", adaptive=True, no_sync=True)]


def _seed():
    from conftest import BASE_SEED
    return (BASE_SEED + zlib.crc32(b"test_distributed")) % 2 ** 32


# =================================================================================================
# The ranks' side (this file run as a script)
# =================================================================================================


def _model(seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
                            torch.nn.Linear(8, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def _batch(seed, step):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 3, generator=g)


def _classes(cfg):
    """(optim.torch class, torch class or None) of a configuration."""
    import optim.torch as ot
    ours = getattr(ot, cfg["rule"])
    theirs = getattr(torch.optim, cfg["rule"]) if cfg.get("torch", True) else None
    return ours, theirs


def _groups(params, cfg, late):
    """Weights (with weight decay) and biases (half the lr); only the weights when late."""
    weights, biases = params[0::2], params[1::2]
    groups = [dict(params=weights, weight_decay=cfg["wd"])]
    bias_group = dict(params=biases, lr=cfg["kw"]["lr"] * 0.5)
    if late:
        return groups, bias_group
    return groups + [bias_group], None


def _kwargs(cfg, lib):
    kw = dict(cfg["kw"])
    if lib == "optim":
        if cfg["clip"] == "value":
            kw["clip_grad_value"] = CLIP_VALUE   # fused: element-wise, so the shard is enough
    else:
        kw.update(cfg.get("torch_kw", {}))
    return kw


def _scheduler(cfg, opt):
    import optim.torch.lr_scheduler as ols
    if cfg.get("sched") == "warmup_cosine":
        return ols.WarmupCosine(opt, warmup_steps=3, total_steps=STEPS, eta_min=1e-4)
    return torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)


def _clip(cfg, lib, params):
    """The clipping done before step: torch's utility in every role, so that torch.optim and
    optim.torch see the same gradients (optim.torch's fused value clipping instead for 'value')."""
    if cfg["clip"] == "norm":
        torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
    elif cfg["clip"] == "value" and lib == "torch":
        torch.nn.utils.clip_grad_value_(params, CLIP_VALUE)


def _plain_state(sd):
    """A state_dict detached from the optimizer's memory (optim.torch's tensors are views of C memory)."""
    out = {"state": {}, "param_groups": copy.deepcopy(sd["param_groups"])}
    for k, st in sd["state"].items():
        out["state"][k] = {key: (v.detach().clone() if torch.is_tensor(v) else v) for key, v in st.items()}
    return out


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _run_role(cfg, lib, zero, seed, rank, world):
    """One configuration in one role: DDP over the model, lib's optimizer plain or under
    ZeroRedundancyOptimizer. Returns the final parameters, the gradients each step's optimizer saw
    (rank 0) and the state (consolidated on rank 0 under ZeRO)."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    ours, theirs = _classes(cfg)
    cls = ours if lib == "optim" else theirs
    model = _model(seed)
    params = list(model.parameters())
    ddp = DistributedDataParallel(model, gradient_as_bucket_view=cfg["gbv"])
    groups, late = _groups(params, cfg, cfg.get("late", False))
    kw = _kwargs(cfg, lib)
    if zero:
        opt = ZeroRedundancyOptimizer(groups, optimizer_class=cls, parameters_as_bucket_view=cfg["pbv"], **kw)
    else:
        opt = cls(groups, **kw)
    sched = _scheduler(cfg, opt)
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    grads = []
    losses = []

    for t in range(STEPS):
        x, y = _batch(seed, t)

        def closure():
            ddp.zero_grad()
            loss = torch.nn.functional.mse_loss(ddp(x[rows]), y[rows])
            loss.backward()
            _clip(cfg, lib, params)
            if rank == 0:
                grads.append(_snapshot([p.grad for p in params]))
            return loss

        if cfg.get("closure"):
            loss = opt.step(closure)
            losses.append(float(loss))
        else:
            closure()
            opt.step()
        sched.step()
        if late is not None and t + 1 == LATE:
            opt.add_param_group(dict(late))
    if zero:
        opt.consolidate_state_dict(to=0)
        state = _plain_state(opt.state_dict()) if rank == 0 else None
        local = [len(g["params"]) for g in opt.optim.param_groups]
    else:
        state = _plain_state(opt.state_dict())
        local = None
    dist.barrier()
    return dict(params=_snapshot(params), grads=grads, state=state, local=local, losses=losses)


def _run_fused(seed, rank, world):
    """Fused norm clipping and nonfinite='skip' under DDP against the recipe ZeRO needs, with a NaN
    in one rank's batch at step 5 (DDP's all-reduce spreads it to every rank's gradient)."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel
    import optim.torch as ot

    out = {}
    for role in ("fused", "recipe", "zero_recipe", "torch_recipe"):
        model = _model(seed)
        params = list(model.parameters())
        ddp = DistributedDataParallel(model)
        if role == "fused":
            opt = ot.Adam(params, lr=0.01, clip_grad_norm=CLIP_NORM, nonfinite="skip")
        elif role == "recipe":
            opt = ot.Adam(params, lr=0.01)
        elif role == "zero_recipe":
            opt = ZeroRedundancyOptimizer(params, optimizer_class=ot.Adam, lr=0.01)
        else:
            opt = torch.optim.Adam(params, lr=0.01)
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        skipped = 0
        for t in range(STEPS):
            x, y = _batch(seed, t)
            if t == 5 and rank == world - 1:
                x[rows.start, 0] = float("nan")
            ddp.zero_grad()
            torch.nn.functional.mse_loss(ddp(x[rows]), y[rows]).backward()
            if role == "fused":
                opt.step()
                continue
            clip = torch.nn.utils.clip_grad_norm_ if role == "torch_recipe" else ot.clip_grad_norm_
            norm = clip(params, CLIP_NORM)
            if torch.isfinite(norm):
                opt.step()
            else:
                skipped += 1
        if role == "zero_recipe":
            opt.consolidate_state_dict(to=0)
        state = _plain_state(opt.state_dict()) if rank == 0 else None
        out[role] = dict(params=_snapshot(params), state=state,
                         skipped=opt.skipped_steps if role == "fused" else skipped)
    dist.barrier()
    return out


def _run_sam(cfg, lib, seed, rank, world):
    """SAM (or ASAM) under DDP: optim.torch.SAM or the reference algorithm (test_sam.ReferenceSAM)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    import optim.torch as ot
    from test_sam import ReferenceSAM

    model = _model(seed)
    params = list(model.parameters())
    ddp = DistributedDataParallel(model)
    kw = dict(rho=0.05, adaptive=cfg["adaptive"], lr=0.05, momentum=0.9)
    opt = ot.SAM(params, ot.SGD, **kw) if lib == "optim" else ReferenceSAM(params, torch.optim.SGD, **kw)
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    g1, g2 = [], []
    for t in range(STEPS):
        x, y = _batch(seed, t)
        loss = torch.nn.functional.mse_loss(ddp(x[rows]), y[rows])
        if cfg["no_sync"]:       # the reference's DDP recipe: the ascent step from this rank's gradient
            with ddp.no_sync():
                loss.backward()
        else:
            loss.backward()
        g1.append(_snapshot([p.grad for p in params]))
        opt.first_step(zero_grad=True)
        torch.nn.functional.mse_loss(ddp(x[rows]), y[rows]).backward()
        g2.append(_snapshot([p.grad for p in params]))
        opt.second_step(zero_grad=True)
    dist.barrier()
    return dict(params=_snapshot(params), g1=g1 if rank == 0 else None, g2=g2 if rank == 0 else None)


def _capture(fn):
    """(exception type name, message) of fn(), or None if it returned."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 -- the test reads what was raised
        return type(e).__name__, str(e)
    return None


def _run_refusals(seed, rank, world):
    """What ZeRO's local optimizer refuses, and that a refused step changes nothing."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer as ZeRO
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.distributed.algorithms.ddp_comm_hooks.ddp_zero_hook import hook_with_zero_step
    from torch.nn.parallel import DistributedDataParallel
    import optim.torch as ot

    params = list(_model(seed).parameters())
    out = {
        "clip_grad_norm": _capture(lambda: ZeRO(params, optimizer_class=ot.Adam, lr=0.01, clip_grad_norm=1.0)),
        "skip": _capture(lambda: ZeRO(params, optimizer_class=ot.Adam, lr=0.01, nonfinite="skip")),
        "sam": _capture(lambda: ZeRO(params, optimizer_class=ot.SAM, base_optimizer=ot.SGD, lr=0.1)),
        "allowed": _capture(lambda: ZeRO(params, optimizer_class=ot.Adam, lr=0.01, nonfinite="error",
                                         clip_grad_value=0.1)),
        "overlap_optim": _capture(lambda: ZeRO(params, optimizer_class=ot.Adam, overlap_with_ddp=True, lr=0.01)),
    }
    # A ZeroRedundancyOptimizer over a group of one rank holds the whole model: nothing to refuse.
    singles = [dist.new_group([r]) for r in range(world)]
    out["one_rank"] = _capture(lambda: ZeRO(params, optimizer_class=ot.Adam, process_group=singles[rank], lr=0.01,
                                            clip_grad_norm=1.0, nonfinite="skip"))
    model = _model(seed)
    ddp = DistributedDataParallel(model)
    zero = ZeRO(model.parameters(), optimizer_class=torch.optim.Adam, overlap_with_ddp=True, lr=0.01)
    out["overlap_gloo"] = _capture(lambda: ddp.register_comm_hook(None, hook_with_zero_step(allreduce_hook, ddp, zero)))

    # Switched on between steps through ZeRO's groups (synced into the local optimizer by
    # step()), or on the local optimizer: refused before anything moves, on every rank.
    model = _model(seed)
    params = list(model.parameters())
    zero = ZeRO(params, optimizer_class=ot.Adam, lr=0.01)
    for p in params:
        p.grad = torch.ones_like(p)
    zero.step()
    before = _snapshot(params)
    zero.param_groups[0]["clip_grad_norm"] = 1.0
    out["step_clip"] = _capture(zero.step)
    out["step_clip_unchanged"] = all(torch.equal(a, b) for a, b in zip(before, params))
    zero.param_groups[0]["clip_grad_norm"] = None
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in zero.optim.param_groups])
    out["set_skip"] = _capture(lambda: zero.optim.set_nonfinite("skip"))
    out["set_clip"] = _capture(lambda: zero.optim.set_clip_grad_norm(1.0))
    out["groups_unchanged"] = groups_before == [{k: v for k, v in g.items() if k != "params"}
                                                for g in zero.optim.param_groups]
    zero.step()  # and the optimizer goes on
    out["stepped_after"] = not all(torch.equal(a, b) for a, b in zip(before, params))
    dist.barrier()
    return out


def _full_batch_step(model, seed, t):
    """The whole batch's gradient, computed by every rank alike (no DDP): a gradient that does not
    depend on the number of ranks, so that runs on 2 and 3 ranks can be compared bit for bit."""
    x, y = _batch(seed, t)
    model.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    return _snapshot([p.grad for p in model.parameters()])


def _resume_groups(params):
    weights, biases = params[0::2], params[1::2]
    return [dict(params=weights, weight_decay=0.125), dict(params=biases, lr=0.005)]


def _resume_scheduler(opt):
    import optim.torch.lr_scheduler as ols
    return ols.WarmupCosine(opt, warmup_steps=3, total_steps=RESUME_AT + RESUME_MORE, eta_min=1e-4)


# beta2 = 0.5: v falls as often as it rises, so AMSGrad's max_exp_avg_sq matters and a resumed run
# that lost it would show.
RESUME_KW = dict(lr=0.01, amsgrad=True, betas=(0.9, 0.5))
OTHER_KW = dict(lr=0.5, amsgrad=False)  # what a resuming ZeRO is built with: the checkpoint's values win


def _save(path, model, opt, sched, step):
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step}
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def _resume_train(cls, seed, path, steps_from, steps_to, rank, save=None, kw=RESUME_KW):
    """AdamW (cls) under ZeroRedundancyOptimizer on full-batch gradients: from scratch, or loaded
    from `path`; optionally saves a consolidated checkpoint at `save` = (step, path)."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = _model(seed)
    params = list(model.parameters())
    zero = ZeroRedundancyOptimizer(_resume_groups(params), optimizer_class=cls, **kw)
    sched = _resume_scheduler(zero)
    if path is not None:
        ckpt = torch.load(path)
        model.load_state_dict(ckpt["model"])
        zero.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        assert ckpt["step"] == steps_from
    grads = []
    for t in range(steps_from, steps_to):
        grads.append(_full_batch_step(model, seed, t))
        zero.step()
        sched.step()
        if save is not None and t + 1 == save[0]:
            zero.consolidate_state_dict(to=0)
            if rank == 0:
                _save(save[1], model, zero, sched, t + 1)
            dist.barrier()
    zero.consolidate_state_dict(to=0)
    state = _plain_state(zero.state_dict()) if rank == 0 else None
    dist.barrier()
    return dict(params=_snapshot(params), grads=grads if rank == 0 else None, state=state)


def _job_main(rank, world, directory, seed):
    """The 2-rank or 3-rank job: every check of this file that runs inside the ranks."""
    import optim.torch as ot

    out = {"roles": {}, "sam": {}}
    for cfg in CONFIGS:
        roles = {}
        for lib in (("optim", "torch") if cfg.get("torch", True) else ("optim",)):
            for zero in (False, True):
                roles[(lib, zero)] = _run_role(cfg, lib, zero, seed, rank, world)
        out["roles"][cfg["name"]] = roles
    out["fused"] = _run_fused(seed, rank, world)
    out["loss_scale"] = _ls_job(rank, world, directory, seed)
    out["ls_modes"] = _ls_modes(rank, world)
    import zero_sr_job  # stochastic rounding under ZeRO: one process's bits
    out["sr"] = zero_sr_job.rank_job(rank, world, directory, seed)
    for cfg in SAM_CONFIGS:
        out["sam"][cfg["name"]] = {lib: _run_sam(cfg, lib, seed, rank, world) for lib in ("optim", "reference")}
    ck2 = os.path.join(directory, "..", "ckpt2.pt")
    ckt = os.path.join(directory, "..", "ckpt_torch.pt")
    total = RESUME_AT + RESUME_MORE
    if world == 2:
        out["refusals"] = _run_refusals(seed, rank, world)
        # The run, saved half-way (optim.torch and torch.optim), then resumed on the same ranks by
        # a ZeRO built with other arguments.
        out["uninterrupted"] = _resume_train(ot.AdamW, seed, None, 0, total, rank, save=(RESUME_AT, ck2))
        out["torch_first_half"] = _resume_train(torch.optim.AdamW, seed, None, 0, RESUME_AT, rank,
                                                save=(RESUME_AT, ckt))
        out["resumed_same"] = _resume_train(ot.AdamW, seed, ck2, RESUME_AT, total, rank, kw=OTHER_KW)
    else:
        out["resumed_other"] = _resume_train(ot.AdamW, seed, ck2, RESUME_AT, total, rank, kw=OTHER_KW)
        out["resumed_from_torch"] = _resume_train(ot.AdamW, seed, ckt, RESUME_AT, total, rank)
    return out


# ---- dynamic loss scaling under ZeroRedundancyOptimizer -----------------------------------------
# A float16 model with fp32 masters, Adam with a dynamic loss scale (growth every 3 good steps), fed
# gradients made from (seed, step, tensor) times the current scale on every rank alike (as DDP's
# average would be); at LS_EVENTS' steps one element of a tensor owned by one rank is made Inf or NaN.
# 'few' is a 2-tensor model: on 3 ranks one rank owns nothing and must still agree at every step.
# 'lamb': LAMB, whose per-tensor trust ratios the hook must leave to each tensor's owner.
# (LAMB's gradient clipping, max_grad_norm=1.0 by default as in timm, is off: it would need the model's norm.)
LS_CASES = {"main": ("Adam", False), "few": ("Adam", True), "lamb": ("LAMB", False)}
LS_RULE_KW = {"LAMB": dict(max_grad_norm=None)}

LS_STEPS, LS_SAVE_AT = 10, 5
LS_KW = dict(lr=0.01, master_weights=True, loss_scale=dict(init_scale=2.0 ** 10, growth_interval=3))
LS_EVENTS = ((2, "last", float("inf")), (3, 0, float("nan")), (7, "last", float("-inf")))  # (step, owner, value)


def _ls_params(seed, few):
    g = torch.Generator().manual_seed(seed + 7)
    shapes = [(33,), (5, 4)] if few else [(40, 30), (17,), (9, 5), (300,), (3,)]
    return [(torch.randn(s, generator=g) * 0.5).half().requires_grad_() for s in shapes]


def _ls_grads(seed, t, params, scale, poison):
    """Step t's float16 gradients of a loss scaled by `scale`; poison: {tensor index: value of its element 0}."""
    for i, p in enumerate(params):
        g = torch.Generator().manual_seed(seed * 1000 + 17 * t + i)
        p.grad = (torch.randn(p.shape, generator=g) * 0.01 * scale).half()
        if i in poison:
            p.grad.view(-1)[0] = poison[i]


def _ls_poison(t, victims):
    return {victims[k]: value for step, k, value in LS_EVENTS if step == t}


def _ls_victims(zero, params, world):
    """{owner key in LS_EVENTS: the index of a tensor that rank steps} (the last rank owning one)."""
    owner = [zero._param_to_rank[p] for p in params]
    owning = sorted(set(owner))
    return {0: owner.index(owning[0]), "last": owner.index(owning[-1])}, owner


def _ls_train(zero, params, seed, steps, victims):
    scales, skipped = [], []
    for t in steps:
        scale = zero.optim.loss_scale
        _ls_grads(seed, t, params, scale, _ls_poison(t, victims))
        zero.step()
        scales.append(scale)
        skipped.append(zero.optim.last_step_skipped)
    return scales, skipped


def _ls_job(rank, world, directory, seed):
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer as ZeRO
    import optim.torch as ot

    out = {}
    for key, (rule, few) in LS_CASES.items():
        cls = getattr(ot, rule)
        params = _ls_params(seed, few)
        zero = ZeRO(params, optimizer_class=cls, **LS_KW, **LS_RULE_KW.get(rule, {}))
        victims, owner = _ls_victims(zero, params, world)
        saved = os.path.join(directory, "ls_%s.pt" % key)
        scales, skipped = _ls_train(zero, params, seed, range(LS_SAVE_AT), victims)
        zero.consolidate_state_dict(to=0)
        if rank == 0:
            torch.save({"optimizer": zero.state_dict(), "params": _snapshot(params)}, saved)
        dist.barrier()
        more = _ls_train(zero, params, seed, range(LS_SAVE_AT, LS_STEPS), victims)
        zero.consolidate_state_dict(to=0)
        r = dict(params=_snapshot(params), scales=scales + more[0], skipped=skipped + more[1], owner=owner,
                 victims=victims, scale=zero.optim.loss_scale, skipped_steps=zero.optim.skipped_steps,
                 local=len(zero.optim._c.params),
                 state=_plain_state(zero.state_dict()) if rank == 0 else None)
        # Resumed from the consolidated state_dict by a ZeRO built with GradScaler's defaults: the
        # checkpoint's scale and growth tracker win (they ride in the param groups).
        ckpt = torch.load(saved)
        params = _ls_params(seed, few)
        with torch.no_grad():
            for p, q in zip(params, ckpt["params"]):
                p.copy_(q)
        zero = ZeRO(params, optimizer_class=cls, lr=0.01, master_weights=True, loss_scale="dynamic",
                    **LS_RULE_KW.get(rule, {}))
        zero.load_state_dict(ckpt["optimizer"])
        resumed = _ls_train(zero, params, seed, range(LS_SAVE_AT, LS_STEPS), victims)
        r.update(resumed_params=_snapshot(params), resumed_scales=resumed[0], resumed_skipped=resumed[1])
        # Resumed from one process's state_dict (the same run, stepped here alone to step 5).
        params = _ls_params(seed, few)
        alone = cls(params, **LS_KW, **LS_RULE_KW.get(rule, {}))
        for t in range(LS_SAVE_AT):
            scale = alone.loss_scale
            _ls_grads(seed, t, params, scale, _ls_poison(t, victims))
            alone.step()
        zero = ZeRO(params, optimizer_class=cls, lr=0.01, master_weights=True, loss_scale="dynamic",
                    **LS_RULE_KW.get(rule, {}))
        zero.load_state_dict(alone.state_dict())
        resumed = _ls_train(zero, params, seed, range(LS_SAVE_AT, LS_STEPS), victims)
        r.update(single_params=_snapshot(params), single_scales=resumed[0], single_skipped=resumed[1])
        out[key] = r
    dist.barrier()
    return out


# Ranks with different loss scale modes (rank 0 dynamic, rank 1 off, rank 2 static): built so, or one rank's
# edited by hand after the ranks agreed on 'dynamic'; then dynamic ranks with different initial scales. Every rank raises ValueError at that step, at once
# (not the process group's timeout, which a collective made by some ranks only would end in), nothing
# changed, and the process group still works (a barrier after).
LS_MODES = ("dynamic", None, 64.0)


def _ls_modes(rank, world):
    from torch.distributed.optim import ZeroRedundancyOptimizer as ZeRO
    import torch.distributed as dist
    import optim.torch as ot

    def attempt(zero, params, fail=False):
        before = _snapshot(params)
        for p in params:
            p.grad = torch.full_like(p, 0.01)
        if fail:  # a gradient of another dtype on this rank's first tensor: its step raises before ours
            q = zero.optim.param_groups[0]["params"][0]
            q.grad.data = q.grad.data.float()  # (torch refuses p.grad = a tensor of another dtype)
        try:
            zero.step()
            error = None
        except ValueError as e:
            error = str(e)
        except (TypeError, RuntimeError) as e:
            error = "%s: %s" % (type(e).__name__, e)
        return error, all(torch.equal(a, b) for a, b in zip(before, _snapshot(params)))  # (float16: no NaN here)

    out = {}
    params = _ls_params(0, False)
    zero = ZeRO(params, optimizer_class=ot.Adam, lr=0.01, master_weights=True, loss_scale=LS_MODES[rank])
    out["built"] = attempt(zero, params)
    dist.barrier()
    zero = ZeRO(params, optimizer_class=ot.Adam, lr=0.01, master_weights=True, loss_scale="dynamic")
    out["agreed"] = [attempt(zero, params) for _ in range(2)]
    if rank == world - 1:
        prec = copy.deepcopy(zero.param_groups[0]["optim_precision"])
        prec["loss_scale"].update(mode="static", growth_tracker=0)
        zero.param_groups[0]["optim_precision"] = prec
    out["edited"] = attempt(zero, params)
    dist.barrier()
    zero = ZeRO(params, optimizer_class=ot.Adam, lr=0.01, master_weights=True,
                loss_scale=dict(init_scale=2048.0 if rank == world - 1 else 1024.0))
    out["scales"] = attempt(zero, params)
    dist.barrier()
    # The last rank's step fails before the all-reduce the others make (after agreeing on 'dynamic'; at the
    # first step of ranks without a loss scale): every rank raises, the others at once, then steps go on.
    for key, ls in (("failed", "dynamic"), ("failed_first", None)):
        zero = ZeRO(params, optimizer_class=ot.Adam, lr=0.01, master_weights=True, loss_scale=ls)
        if ls is not None:
            attempt(zero, params)
        out[key] = [attempt(zero, params, fail=rank == world - 1), attempt(zero, params)]
        dist.barrier()
    return out


def _fail_worker(rank, world, init, mode):
    """A ZeRO(optim.torch.Adam, nonfinite='error') run in which one rank cannot go on at step 1:
    mode 'raise': a NaN in the gradient of a parameter only rank 1 steps (its step raises);
    mode 'stuck': rank 1 sleeps instead of stepping (the others wait in the broadcast)."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    import optim.torch as ot

    torch.set_num_threads(1)
    # Joining may take long on a loaded machine; the steps' collectives then run in a group whose
    # timeout is short in mode 'stuck'.
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=RANK_TIMEOUT))
    group = dist.new_group(list(range(world)), timeout=datetime.timedelta(seconds=3 if mode == "stuck" else 60))
    try:
        params = list(_model(0).parameters())
        zero = ZeroRedundancyOptimizer(params, optimizer_class=ot.Adam, process_group=group, lr=0.01,
                                       nonfinite="error")
        victim = zero._partition_parameters()[1][0]["params"][0]  # a parameter rank 1 steps
        for t in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.1)
            if t == 1:
                victim.grad.view(-1)[0] = float("nan")
                if mode == "stuck" and rank == 1:
                    time.sleep(120)
            zero.step()
    except Exception as e:
        # Every rank says why it stopped: the launcher reports one rank, maybe not the first.
        print("rank %d of %d failed: %s: %s" % (rank, world, type(e).__name__, e), file=sys.stderr, flush=True)
        raise
    dist.destroy_process_group()


def _rank_entry(job, rank, world, directory):
    sys.path.insert(0, HERE)
    torch.set_num_threads(1)
    seed = int(os.environ["OPTIM_DIST_SEED"])
    if job == "stuck":
        _fail_worker(rank, world, "file://" + os.path.join(directory, "rendezvous"), "stuck")
        return
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method="file://" + os.path.join(directory, "rendezvous"), rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=RANK_TIMEOUT))
    out = _job_main(rank, world, directory, seed)
    torch.save(out, os.path.join(directory, "rank%d.pt" % rank))
    dist.destroy_process_group()


def _spawn_entry(directory):
    """torch.multiprocessing.spawn of _fail_worker('raise') on 2 ranks; prints what spawn raised."""
    import torch.multiprocessing as mp
    init = "file://" + os.path.join(directory, "rendezvous")
    try:
        mp.spawn(_fail_worker, args=(2, init, "raise"), nprocs=2, join=True)
    except mp.ProcessRaisedException as e:
        print("spawn raised ProcessRaisedException:%s" % e, flush=True)
        sys.exit(3)
    sys.exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "spawn-fail":
        _spawn_entry(sys.argv[2])
    else:
        _rank_entry(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    sys.exit(0)


# =================================================================================================
# The tests' side
# =================================================================================================

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from torch_ref64 import rel_err  # noqa: E402


def _env():
    # GLOO_SOCKET_IFNAME: gloo's TCP pairs on the loopback interface, whatever the host name resolves to.
    env = dict(os.environ, OMP_NUM_THREADS="1", OPTIM_DIST_SEED=str(_seed()), PYTHONDONTWRITEBYTECODE="1",
               GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "python"), HERE] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def launch(job, world, directory, raise_on_failure=True, timeout=JOB_TIMEOUT):
    """Run `job` on `world` ranks (processes of this file) until they all finish, one fails or
    `timeout` seconds pass; the ranks still running then are killed. Returns ([(exit status,
    output)] per rank, [ranks that were still running]); with raise_on_failure, a failure or a
    rank still running is raised, naming the rank."""
    os.makedirs(directory, exist_ok=True)
    procs, errs = [], []
    for r in range(world):
        err = open(os.path.join(directory, "rank%d.err" % r), "w+")
        errs.append(err)
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), job, str(r), str(world), directory],
                                      env=_env(), stdout=err, stderr=subprocess.STDOUT, cwd=directory))
    deadline = time.monotonic() + timeout
    failed = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                failed = bad[0]
                break
            if all(c is not None for c in codes):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        hung = [r for r, p in enumerate(procs) if p.poll() is None]
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
    out = []
    for r, err in enumerate(errs):
        err.seek(0)
        out.append((procs[r].returncode, err.read()))
        err.close()
    if raise_on_failure:
        if failed is not None:
            raise AssertionError("job %s: rank %d of %d failed (exit %d):\n%s"
                                 % (job, failed, world, out[failed][0], out[failed][1][-4000:]))
        if hung:
            raise AssertionError("job %s: ranks %s did not finish within %d s:\n%s"
                                 % (job, hung, timeout, "\n".join(o[1][-1500:] for o in out)))
    return out, hung


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """The 2-rank job, then the 3-rank job (which resumes the 2-rank job's checkpoints): every
    rank's results."""
    base = tmp_path_factory.mktemp("distributed")
    print("distributed jobs: seed %d (base seed from OPTIM_TEST_SEED), in %s" % (_seed(), base))
    results = {"dir": str(base)}
    for world in (2, 3):
        d = str(base / ("world%d" % world))
        launch("main", world, d)
        results[world] = [torch.load(os.path.join(d, "rank%d.pt" % r)) for r in range(world)]
    return results


# ---- comparing ---------------------------------------------------------------------------------


def _bits(t):
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.detach().contiguous().view(torch.int16)
    return t.detach().contiguous().view(torch.int32) if t.dtype == torch.float32 else t.detach()


def same_bits(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(_bits(x), _bits(y)) for x, y in zip(a, b))


def _first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if not torch.equal(_bits(x), _bits(y)):
            d = (x - y).abs().max()
            return "tensor %d %s: %d elements differ, largest |difference| %.3g" % (
                i, tuple(x.shape), int((_bits(x) != _bits(y)).sum()), float(d))
    return "lengths %d vs %d" % (len(a), len(b))


def assert_same(a, b, what):
    assert same_bits(a, b), "%s: not bit-identical: %s" % (what, _first_difference(a, b))


def assert_state_same(sa, sb, what, scalar_only_values=False):
    """Two state_dicts' states, key by key: tensors bit for bit, 'step' and 'mu_product' by value."""
    assert sorted(sa["state"]) == sorted(sb["state"]), "%s: state indices %s vs %s" % (
        what, sorted(sa["state"]), sorted(sb["state"]))
    for k in sa["state"]:
        x, y = sa["state"][k], sb["state"][k]
        assert sorted(x) == sorted(y), "%s: state[%d] keys %s vs %s" % (what, k, sorted(x), sorted(y))
        for key in x:
            u, v = x[key], y[key]
            if u is None or v is None:  # SGD's momentum_buffer before momentum
                assert u is None and v is None, "%s: state[%d][%r] %r vs %r" % (what, k, key, u, v)
            elif key in ("step", "mu_product") or not torch.is_tensor(u) or u.dim() == 0 and v.dim() == 0:
                assert float(u) == float(v), "%s: state[%d][%r] %r vs %r" % (what, k, key, u, v)
            else:
                assert_same([u], [v], "%s: state[%d][%r]" % (what, k, key))


def assert_state_close(sa, sb, what, tol=TOL):
    assert sorted(sa["state"]) == sorted(sb["state"]), what
    for k in sa["state"]:
        for key, u in sb["state"][k].items():
            v = sa["state"][k][key]
            if torch.is_tensor(u) and u.dim() > 0:
                err = rel_err(v.double().numpy(), u.double().numpy())
                assert err <= tol, "%s: state[%d][%r] relative error %.3g" % (what, k, key, err)
            else:
                assert math.isclose(float(v), float(u), rel_tol=1e-6), "%s: state[%d][%r]" % (what, k, key)


def assert_close(a, b, what, tol=TOL):
    for i, (x, y) in enumerate(zip(a, b)):
        err = rel_err(x.double().numpy(), y.double().numpy())
        assert err <= tol, "%s: tensor %d %s: relative error %.3g > %.3g" % (what, i, tuple(x.shape), err, tol)


# ---- replaying a role in this process ----------------------------------------------------------


def replay(cfg, lib, grads):
    """cfg's optimizer in one process, fed `grads` step by step: (parameters, state_dict)."""
    ours, theirs = _classes(cfg)
    cls = ours if lib == "optim" else theirs
    seed = _seed()
    params = list(_model(seed).parameters())
    groups, late = _groups(params, cfg, cfg.get("late", False))
    opt = cls(groups, **_kwargs(cfg, lib))
    sched = _scheduler(cfg, opt)
    for t, gs in enumerate(grads):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        sched.step()
        if late is not None and t + 1 == LATE:
            opt.add_param_group(dict(late))
    return _snapshot(params), _plain_state(opt.state_dict())


_BITS_REPORT = {}


def optim_bit_identical_to_torch(cfg, torch_role):
    """Whether optim.torch, fed the gradients torch.optim saw in a role, ends with torch.optim's
    parameters and state, bit for bit, in this process: what this build claims (docs/FIDELITY.md)."""
    params, state = replay(cfg, "optim", torch_role["grads"])
    try:
        assert same_bits(params, torch_role["params"])
        assert_state_same(state, torch_role["state"], "")
        bits = True
    except AssertionError:
        bits = False
    _BITS_REPORT[cfg["name"]] = bits
    return bits


# ---- the tests ---------------------------------------------------------------------------------


def _rank0(results, *path):
    x = results[0]
    for key in path:
        x = x[key]
    return x


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_ends_with_the_same_parameters(jobs, world):
    """DDP and ZeRO keep the replicas identical: every role, SAM and the fused checks."""
    res = jobs[world]
    for name, roles in res[0]["roles"].items():
        for key in roles:
            for r in range(1, world):
                assert_same(res[r]["roles"][name][key]["params"], roles[key]["params"],
                            "%s %s: rank %d vs rank 0" % (name, key, r))
    for name in res[0]["sam"]:
        for lib in ("optim", "reference"):
            for r in range(1, world):
                assert_same(res[r]["sam"][name][lib]["params"], res[0]["sam"][name][lib]["params"],
                            "%s %s: rank %d vs rank 0" % (name, lib, r))
    for role in res[0]["fused"]:
        for r in range(1, world):
            assert_same(res[r]["fused"][role]["params"], res[0]["fused"][role]["params"], role)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_zero_changes_nothing_and_a_role_is_one_process(jobs, world, cfg):
    """ZeRO(optim.torch) equals DDP + optim.torch bit for bit (parameters and consolidated state),
    and DDP + optim.torch equals optim.torch in one process fed the same gradients."""
    roles = jobs[world][0]["roles"][cfg["name"]]
    plain, zero = roles[("optim", False)], roles[("optim", True)]
    what = "%s on %d ranks" % (cfg["name"], world)
    assert_same(zero["params"], plain["params"], what + ": ZeRO(optim.torch) vs DDP + optim.torch")
    assert_state_same(zero["state"], plain["state"], what + ": consolidated state vs DDP + optim.torch's")
    assert_same(zero["grads"][-1], plain["grads"][-1], what + ": last gradients")
    params, state = replay(cfg, "optim", plain["grads"])
    assert_same(plain["params"], params, what + ": DDP + optim.torch vs one process on its gradients")
    assert_state_same(plain["state"], state, what + ": state vs one process's")
    if cfg.get("torch", True):  # the harness: torch's own ZeRO and DDP are the same as one process
        tplain, tzero = roles[("torch", False)], roles[("torch", True)]
        assert_same(tzero["params"], tplain["params"], what + ": ZeRO(torch.optim) vs DDP + torch.optim")
        tparams, _ = replay(cfg, "torch", tplain["grads"])
        assert_same(tplain["params"], tparams, what + ": DDP + torch.optim vs one process")
    if world == 3:
        # 3 ranks: ZeRO's partition leaves the bias group empty on two ranks (local group sizes).
        local = [jobs[3][r]["roles"][cfg["name"]][("optim", True)]["local"] for r in range(3)]
        assert sum(1 for sizes in local if sizes[1] == 0) == 2, local


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.get("torch", True)], ids=[c["name"] for c in CONFIGS
                                                                                   if c.get("torch", True)])
def test_against_torch_optim_in_the_same_role(jobs, world, cfg):
    """optim.torch against torch.optim in each role: bits where optim.torch is bit-identical to
    torch.optim in one process on this build, else TOL."""
    roles = jobs[world][0]["roles"][cfg["name"]]
    bits = optim_bit_identical_to_torch(cfg, roles[("torch", False)])
    print("%s: optim.torch %s torch.optim in one process on this build; compared in %s" % (
        cfg["name"], "is bit-identical to" if bits else "is not bit-identical to", "bits" if bits else "TOL"))
    for zero in (False, True):
        ours, theirs = roles[("optim", zero)], roles[("torch", zero)]
        what = "%s, %s, %d ranks" % (cfg["name"], "ZeRO" if zero else "DDP", world)
        if bits:
            assert_same(ours["params"], theirs["params"], what)
            assert_state_same(ours["state"], theirs["state"], what)
        else:
            assert_close(ours["params"], theirs["params"], what)
            assert_state_close(ours["state"], theirs["state"], what)
        if cfg.get("closure"):
            assert np.allclose(ours["losses"], theirs["losses"], rtol=1e-5), what + ": step(closure)'s losses"


@pytest.mark.parametrize("world", [2, 3])
def test_fused_checks_under_ddp_equal_the_recipe_zero_needs(jobs, world):
    """Under DDP the fused clip_grad_norm and nonfinite='skip' see the whole averaged gradient: they
    equal optim.torch.clip_grad_norm_ over the model + a skip when the norm is not finite, which is
    what ZeroRedundancyOptimizer needs, bit for bit; a NaN in one rank's batch skips one step on
    every rank."""
    res = jobs[world]
    f = res[0]["fused"]
    assert_same(f["recipe"]["params"], f["fused"]["params"], "fused vs recipe, %d ranks" % world)
    assert_same(f["zero_recipe"]["params"], f["fused"]["params"], "ZeRO recipe vs fused, %d ranks" % world)
    assert_state_same(f["zero_recipe"]["state"], f["fused"]["state"], "ZeRO recipe's consolidated state")
    assert_close(f["torch_recipe"]["params"], f["recipe"]["params"], "torch.optim with torch's recipe")
    for r in range(world):
        for role in f:
            assert res[r]["fused"][role]["skipped"] == 1, (r, role, res[r]["fused"][role]["skipped"])


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("cfg", SAM_CONFIGS, ids=[c["name"] for c in SAM_CONFIGS])
def test_sam_under_ddp(jobs, world, cfg):
    """optim.torch.SAM under DDP: bit for bit one process fed the same two gradients per step (for
    no_sync, rank 0's own ascent gradient), and within TOL of the reference algorithm in the same
    role."""
    import optim.torch as ot
    res = jobs[world][0]["sam"][cfg["name"]]
    ours = res["optim"]
    params = list(_model(_seed()).parameters())
    sam = ot.SAM(params, ot.SGD, rho=0.05, adaptive=cfg["adaptive"], lr=0.05, momentum=0.9)
    for g1, g2 in zip(ours["g1"], ours["g2"]):
        for p, g in zip(params, g1):
            p.grad = g.clone()
        sam.first_step(zero_grad=True)
        for p, g in zip(params, g2):
            p.grad = g.clone()
        sam.second_step(zero_grad=True)
    assert_same(ours["params"], _snapshot(params), "SAM under DDP vs one process, %d ranks" % world)
    assert_close(ours["params"], res["reference"]["params"], "SAM vs the reference in the same role", tol=1e-4)


def test_zero_refuses_what_needs_every_gradient(jobs):
    r = jobs[2][0]["refusals"]
    for key, words in (("clip_grad_norm", "shard's norm"), ("skip", "skip this rank's shard"),
                       ("sam", "SAM cannot be the optimizer_class")):
        assert r[key] is not None and r[key][0] == "ValueError", (key, r[key])
        assert words in r[key][1] and "rank 0" in r[key][1] and "docs/DISTRIBUTED.md" in r[key][1], r[key][1]
    assert r["allowed"] is None, r["allowed"]
    assert r["one_rank"] is None, r["one_rank"]
    assert r["step_clip"][0] == "ValueError" and "shard's norm" in r["step_clip"][1], r["step_clip"]
    assert r["step_clip_unchanged"]
    assert r["set_skip"][0] == "ValueError" and r["set_clip"][0] == "ValueError", (r["set_skip"], r["set_clip"])
    assert r["groups_unchanged"] and r["stepped_after"]
    # torch 1.13 on the CPU: overlap_with_ddp needs a functional optimizer, and its DDP hooks NCCL.
    assert r["overlap_optim"][0] == "ValueError" and "functional optimizer" in r["overlap_optim"][1], \
        r["overlap_optim"]
    assert r["overlap_gloo"][0] == "RuntimeError" and "NCCL" in r["overlap_gloo"][1], r["overlap_gloo"]


def test_consolidated_checkpoints_resume_bit_for_bit(jobs):
    """consolidate_state_dict() on 2 ranks at step 6; resumed by ZeRO on 2 and on 3 ranks (built
    with another lr and amsgrad off: the checkpoint's win) and by a plain optimizer in this process:
    each ends with the uninterrupted run's bits, which are one process's."""
    import optim.torch as ot
    two, three = jobs[2][0], jobs[3][0]
    full = two["uninterrupted"]
    seed = _seed()
    # The uninterrupted 2-rank run is one process fed its gradients.
    params = list(_model(seed).parameters())
    opt = ot.AdamW(_resume_groups(params), **RESUME_KW)
    sched = _resume_scheduler(opt)
    for t, gs in enumerate(full["grads"]):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        sched.step()
        if t + 1 == RESUME_AT:
            half = _plain_state(opt.state_dict())
    assert_same(full["params"], _snapshot(params), "ZeRO on 2 ranks vs one process")
    assert_state_same(full["state"], _plain_state(opt.state_dict()), "consolidated state on 2 ranks")
    ckpt = torch.load(os.path.join(jobs["dir"], "ckpt2.pt"))
    assert_state_same(ckpt["optimizer"], half, "the checkpoint's consolidated state at step %d" % RESUME_AT)
    # Resumed on 2 and on 3 ranks.
    assert_same(two["resumed_same"]["params"], full["params"], "resumed on 2 ranks")
    assert_same(three["resumed_other"]["params"], full["params"], "resumed on 3 ranks")
    assert_state_same(three["resumed_other"]["state"], full["state"], "state consolidated on 3 ranks")
    for r in range(3):
        assert_same(jobs[3][r]["resumed_other"]["params"], full["params"], "rank %d of 3" % r)
    # Resumed in one process by a plain optim.torch.AdamW built with default arguments.
    model = _model(seed)
    model.load_state_dict(ckpt["model"])
    params = list(model.parameters())
    opt = ot.AdamW(_resume_groups(params))
    sched = _resume_scheduler(opt)  # before the load, whose lr then replaces the one it writes
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    for gs in full["grads"][RESUME_AT:]:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        sched.step()
    assert_same(_snapshot(params), full["params"], "resumed in one process")


def test_a_torch_optim_zero_checkpoint_resumes_in_optim_torch(jobs):
    """torch.optim.AdamW under ZeRO on 2 ranks for 6 steps, consolidated; optim.torch.AdamW under
    ZeRO on 3 ranks goes on from it: one process doing the same (torch.optim for 6 steps on the same
    gradients, then optim.torch from its state_dict) gives the same bits."""
    import optim.torch as ot
    first, second = jobs[2][0]["torch_first_half"], jobs[3][0]["resumed_from_torch"]
    params = list(_model(_seed()).parameters())
    opt = torch.optim.AdamW(_resume_groups(params), **RESUME_KW)
    sched = _resume_scheduler(opt)
    for gs in first["grads"]:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        sched.step()
    assert_same(first["params"], _snapshot(params), "torch.optim under ZeRO vs one process")
    assert_state_same(first["state"], _plain_state(opt.state_dict()), "torch.optim's consolidated state")
    ours = ot.AdamW(_resume_groups(params))
    sched = _resume_scheduler(ours)
    ours.load_state_dict(opt.state_dict())
    sched.load_state_dict(torch.load(os.path.join(jobs["dir"], "ckpt_torch.pt"))["scheduler"])
    for gs in second["grads"]:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        ours.step()
        sched.step()
    assert_same(second["params"], _snapshot(params), "optim.torch on 3 ranks from torch.optim's checkpoint")


def test_a_rank_raising_in_step_ends_the_job_naming_it(tmp_path):
    """Rank 1's step raises (NaN in its shard, nonfinite='error'); rank 0 waits in ZeRO's broadcast.
    torch.multiprocessing.spawn ends the job and names rank 1 and the parameter."""
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "spawn-fail", str(tmp_path)], env=_env(),
                       capture_output=True, text=True, timeout=JOB_TIMEOUT, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 3, out[-3000:]
    assert "terminated with the following error" in out, out[-3000:]
    assert "rank 1 of 2 failed: NonFiniteGradientError" in out and "of rank 1's shard" in out, out[-3000:]


def test_a_stuck_rank_makes_the_others_fail_after_the_timeout(tmp_path):
    """Rank 1 sleeps instead of stepping; rank 0, waiting in the broadcast of rank 1's shard, fails
    after the process group's 3-second timeout instead of hanging (nothing kills it here)."""
    out, hung = launch("stuck", 2, str(tmp_path), raise_on_failure=False, timeout=120)
    code0, err0 = out[0]
    assert code0 not in (0, None), err0[-3000:]
    # gloo says "Timed out waiting ...ms" or "Application timeout caused pair closure".
    assert "rank 0 of 2 failed: RuntimeError" in err0 and ("timed out" in err0.lower() or "timeout" in err0.lower()), \
        err0[-3000:]
    assert hung == [1], (hung, out[1][1][-2000:])


def test_example_ddp_zero(tmp_path):
    """examples/ddp_zero.py on 3 ranks with a checkpoint, then resumed on 2 ranks."""
    example = os.path.join(ROOT, "examples", "ddp_zero.py")
    ckpt = str(tmp_path / "run.pt")
    env = _env()
    r = subprocess.run([sys.executable, example, "--ranks", "3", "--steps", "8", "--save", ckpt, "--save-every",
                        "4", "--compare"], env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "saved %s at step 4" % ckpt in r.stdout and "saved %s at step 8" % ckpt in r.stdout, r.stdout
    assert "optimizer state per rank: " in r.stdout and "in the same role" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, example, "--ranks", "2", "--steps", "12", "--resume", ckpt], env=env,
                       capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "at step 8 (written by 3 ranks) on 2 ranks" in r.stdout and "step   12" in r.stdout, r.stdout


def teardown_module(module):
    if _BITS_REPORT:
        print("compared with torch.optim in bits: %s; within TOL: %s" % (
            sorted(k for k, v in _BITS_REPORT.items() if v), sorted(k for k, v in _BITS_REPORT.items() if not v)))


# ---- dynamic loss scaling under ZeroRedundancyOptimizer -----------------------------------------


def _ls_reference(key, victims, steps, opt=None, params=None):
    """One process stepping the whole model with the ranks' gradients: (params, optimizer, scales, skips)."""
    import optim.torch as ot
    seed = _seed()
    if params is None:
        rule, few = LS_CASES[key]
        params = _ls_params(seed, few)
        opt = getattr(ot, rule)(params, **LS_KW, **LS_RULE_KW.get(rule, {}))
    scales, skipped = [], []
    for t in steps:
        scale = opt.loss_scale
        _ls_grads(seed, t, params, scale, _ls_poison(t, victims))
        opt.step()
        scales.append(scale)
        skipped.append(opt.last_step_skipped)
    return params, opt, scales, skipped


@pytest.mark.parametrize("world", [2, 3])
def test_dynamic_loss_scale_under_zero_is_one_process(jobs, world):
    """Every rank of ZeroRedundancyOptimizer(optim.torch.Adam, float16 with masters, dynamic loss
    scale) skips, backs off and grows with the others when one rank's shard overflows: every rank's
    parameters, scale sequence and skipped steps, and the consolidated state (masters, moments, steps)
    equal one process stepping the whole model with the same gradients, bit for bit; a consolidated
    state_dict carries the scale (resumed by a ZeRO built with other settings, and by a plain
    optimizer in this process)."""
    d = os.path.join(jobs["dir"], "world%d" % world)
    import optim.torch as ot
    for key, (rule, few) in LS_CASES.items():
        res = [r["loss_scale"][key] for r in jobs[world]]
        victims = res[0]["victims"]
        owner = res[0]["owner"]
        # The poisoned tensors belong to different ranks, and only their owners see the Inf/NaN in their shard.
        assert owner[victims[0]] != owner[victims["last"]], (owner, victims)
        if few and world == 3:
            assert sorted(r["local"] for r in res) == [0, 1, 1], [r["local"] for r in res]  # a rank owns nothing
        params, opt, scales, skipped = _ls_reference(key, victims, range(LS_STEPS))
        want_skips = [t in (2, 3, 7) for t in range(LS_STEPS)]
        assert skipped == want_skips, skipped  # the reference itself skips exactly the poisoned steps
        assert len(set(scales)) >= 3, scales    # and its scale backs off and grows
        sd = opt.state_dict()
        for r, got in enumerate(res):
            where = "%s, rank %d of %d" % (key, r, world)
            assert got["scales"] == scales, (where, got["scales"], scales)
            assert got["skipped"] == skipped, (where, got["skipped"], skipped)
            assert got["scale"] == opt.loss_scale and got["skipped_steps"] == opt.skipped_steps == 3, where
            assert_same(got["params"], [p.detach() for p in params], where + ": parameters")
        assert_state_same(res[0]["state"], _plain_state(sd), "%s: consolidated state" % key)
        for k in sd["state"]:
            assert "master" in sd["state"][k] and sd["state"][k]["master"].dtype == torch.float32
        # Resumed from the step-5 consolidated state_dict: by ZeRO on the same ranks...
        for r, got in enumerate(res):
            assert got["resumed_scales"] == scales[LS_SAVE_AT:], (key, r, got["resumed_scales"], scales)
            assert got["resumed_skipped"] == skipped[LS_SAVE_AT:], (key, r)
            assert_same(got["resumed_params"], [p.detach() for p in params], "%s: rank %d resumed" % (key, r))
            # ... and from one process's state_dict (its scaler rides in the groups too)
            assert got["single_scales"] == scales[LS_SAVE_AT:], (key, r, got["single_scales"], scales)
            assert got["single_skipped"] == skipped[LS_SAVE_AT:], (key, r)
            assert_same(got["single_params"], [p.detach() for p in params], "%s: rank %d from one process" % (key, r))
        # ... and by a plain optimizer in this process (the scale from the groups of ZeRO's state_dict).
        ckpt = torch.load(os.path.join(d, "ls_%s.pt" % key))
        ls = ckpt["optimizer"]["param_groups"][0]["optim_precision"]["loss_scale"]
        assert ls["scale"] == scales[LS_SAVE_AT], (ls, scales)
        mine = _ls_params(_seed(), few)
        with torch.no_grad():
            for p, q in zip(mine, ckpt["params"]):
                p.copy_(q)
        plain = getattr(ot, rule)(mine, lr=0.01, master_weights=True, loss_scale="dynamic",
                                  **LS_RULE_KW.get(rule, {}))
        plain.load_state_dict(ckpt["optimizer"])
        assert "optim_precision" not in plain.param_groups[0]
        _, plain, more, more_skipped = _ls_reference(key, victims, range(LS_SAVE_AT, LS_STEPS), plain, mine)
        assert more == scales[LS_SAVE_AT:] and more_skipped == skipped[LS_SAVE_AT:], (more, scales)
        assert_same([p.detach() for p in mine], [p.detach() for p in params], "%s: resumed in one process" % key)


@pytest.mark.parametrize("world", [2, 3])
def test_stochastic_rounding_under_zero_is_one_process(jobs, world):
    """Stochastic rounding of the state (float32 parameters with bfloat16 state, float16 ones with fp32
    masters and bfloat16 state, int8 state; torch 1.13's gloo cannot broadcast bfloat16 parameters), 150
    steps, a group added after 50 (ZeRO re-partitions): every rank's parameters and the consolidated state
    equal one optim.torch optimizer's over the whole model, bit for bit (each tensor draws the numbers of
    its index in the whole model; python/tests/zero_sr_job.py); so do the runs resumed from the state
    consolidated at step 110 (by ZeRO on these ranks, on 3 ranks from 2 ranks' checkpoint, and by a plain
    optimizer in this process), the run resumed from one process's state_dict, and a ZeRO of one rank,
    whose local optimizer holds the tensors in another order."""
    import zero_sr_job as sr
    seed = _seed()
    for name in sr.SR_CONFIGS:
        groups, alone = sr.one_process(name, seed, range(sr.SR_STEPS))
        ref = sr.flat(groups)
        ref_state = sr.state_of(alone.state_dict())
        # The global indices of each rank's tensors, in its local order: numbering a shard from 0 would differ.
        local = [jobs[world][r]["sr"][name]["local"] for r in range(world)]
        assert all(idx != list(range(len(idx))) for idx in local), local
        for r in range(world):
            res = jobs[world][r]["sr"][name]
            assert_same(res["params"], ref, "%s: rank %d of %d vs one process" % (name, r, world))
            assert_same(res["resumed"], ref, "%s: rank %d of %d, resumed from the checkpoint of 2 ranks"
                        % (name, r, world))
            if "from_one_process" in res:
                assert_same(res["from_one_process"], ref, "%s: rank %d of %d, resumed from one process's "
                            "state_dict" % (name, r, world))
        state = jobs[world][0]["sr"][name]["state"]
        assert sorted(state) == sorted(ref_state), name
        for k in state:
            assert sorted(state[k]) == sorted(ref_state[k]), (name, k)
            for key in state[k]:
                assert_same([state[k][key]], [ref_state[k][key]], "%s: consolidated state[%d][%r] on %d ranks"
                            % (name, k, key, world))
        # The consolidated checkpoint resumed in one process (seed from its groups).
        ckpt = torch.load(sr.checkpoint_path(os.path.join(jobs["dir"], "world%d" % world), name, world))
        groups = sr.model(name, seed)
        with torch.no_grad():
            for p, q in zip((p for g in groups for p in g), ckpt["params"]):
                p.copy_(q)
        opt = sr._cls(name)([dict(params=g) for g in groups], stochastic_rounding=True, **sr.SR_CONFIGS[name][2])
        opt.load_state_dict(ckpt["optimizer"])
        sr.train(opt, groups, seed, range(sr.SR_SAVE, sr.SR_STEPS))
        assert_same(sr.flat(groups), ref, "%s: %d ranks' checkpoint resumed in one process" % (name, world))
        if name == "bf16_state":
            solo = jobs[world][0]["sr"]["one_rank"]
            assert solo["order"] != [tuple(p.shape) for p in groups[0]], solo["order"]
            assert_same(solo["params"], ref, "bf16_state: ZeroRedundancyOptimizer of one rank")


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_with_other_loss_scale_modes_raise_at_once(jobs, world):
    """A ZeroRedundancyOptimizer whose ranks were built with different loss scale modes (dynamic, off,
    static), or whose last rank's mode was edited by hand after the ranks agreed on 'dynamic', or whose last
    rank's dynamic scale starts at another value: every rank's step raises ValueError naming its mode (its
    scale) and another's (the same all-reduce on every rank, not the
    process group's timeout), with nothing changed; before the edit the steps went on. A rank whose step
    fails before that all-reduce (a gradient of another dtype) makes it with a failure flag: the others raise
    RuntimeError at once (they waited in it for the timeout, 120 s here), nothing changed, and the next step
    runs on every rank."""
    names = ["dynamic", "off", "static"]
    for r in range(world):
        res = jobs[world][r]["ls_modes"]
        msg, unchanged = res["built"]
        assert msg is not None and unchanged, (r, res["built"])
        assert "rank %d:" % r in msg and "this rank's is %r" % names[r] in msg, msg
        assert all(m is None and not same for m, same in res["agreed"]), res["agreed"]
        msg, unchanged = res["edited"]
        mine = "static" if r == world - 1 else "dynamic"
        assert msg is not None and unchanged, (r, res["edited"])
        assert "this rank's is %r, another's is %r" % (mine, "dynamic" if mine == "static" else "static") in msg, msg
        msg, unchanged = res["scales"]
        mine, other = (2048.0, 1024.0) if r == world - 1 else (1024.0, 2048.0)
        assert msg is not None and unchanged, (r, res["scales"])
        assert "different loss scales (dynamic): this rank's is %r, another's is %r" % (mine, other) in msg, msg
        for key in ("failed", "failed_first"):
            (msg, unchanged), after = res[key]
            assert msg is not None and unchanged, (r, key, res[key])
            if r == world - 1:
                assert msg.startswith("TypeError") and "float32" in msg, (key, msg)
            else:
                assert msg.startswith("RuntimeError: rank %d: another rank" % r) and "failed its step" in msg, \
                    (key, msg)
            assert after[0] is None and not after[1], (r, key, after)
