"""examples/ddp_zero.py: data-parallel training on the CPU with optim.torch
inside torch.distributed: DistributedDataParallel averages the gradients, and
torch's ZeroRedundancyOptimizer shards the optimizer state across the ranks,
each rank's shard stepped by optim.torch.AdamW.

No torchrun: the script starts its ranks itself (torch.multiprocessing.spawn,
gloo over TCP on the loopback interface, a file:// rendezvous).

    PYTHONPATH=python /usr/bin/python3 examples/ddp_zero.py                      # 2 ranks, ZeRO + DDP
    ... examples/ddp_zero.py --ranks 3 --save run.pt --save-every 100          # sharded checkpoints
    ... examples/ddp_zero.py --ranks 2 --steps 400 --resume run.pt             # resume on 2 ranks
    ... examples/ddp_zero.py --mode ddp                                         # DDP alone: every rank steps all
    ... examples/ddp_zero.py --compare                                          # torch.optim.AdamW in the same role
    ... examples/ddp_zero.py --bytes --width 1024 --steps 20                   # loopback bytes per step

The task: a synthetic 10-class problem (Gaussian inputs labelled by a fixed
random teacher network), an MLP of 20 -> width -> width -> 10, weights with
weight decay and biases without (two parameter groups), warm-up + cosine lr
(optim.torch.lr_scheduler.WarmupCosine), the gradient clipped to norm 1.0.
Every rank draws the same batch of 96 examples each step and takes its
slice (rows r*96/K to (r+1)*96/K): the batch is the same whatever the number
of ranks, so a run resumed on another number of ranks sees the same data.

What each piece does (docs/DISTRIBUTED.md, "Python: torch.distributed"):
  - Clipping and non-finite checks are done before zero.step() on the whole
    model, with optim.torch.clip_grad_norm_(model.parameters(), 1.0): after
    DDP's all-reduce every rank holds the same averaged gradient, so every
    rank computes the same norm and skips (a NaN or Inf norm) or steps alike.
    The fused clip_grad_norm= and nonfinite='skip' would see one rank's shard
    only; the optimizers refuse them inside ZeroRedundancyOptimizer.
  - Checkpoints: zero.consolidate_state_dict(to=0) on every rank gathers the
    shards on rank 0, whose zero.state_dict() is then the whole optimizer's
    state in torch's format; rank 0 writes it with the model and the
    scheduler (to a temporary file, then renamed). It loads into a
    ZeroRedundancyOptimizer on any number of ranks, or into a plain
    optim.torch.AdamW (or torch.optim.AdamW) in one process.
  - A rank that raises ends the job: spawn stops the other ranks and this
    script prints the failing rank's traceback ("process R terminated with
    the following error"); ranks left waiting in a collective without such a
    launcher fail after the process group's timeout (--timeout).
"""
import argparse
import datetime
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import optim.torch as ot
from optim.torch.lr_scheduler import WarmupCosine

BATCH = 96          # divisible by 1, 2, 3, 4, 6, 8, 12 ranks
N_EXAMPLES = 4096
N_IN, N_OUT = 20, 10
SEED = 1234


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2, help="processes to start (default 2)")
    ap.add_argument("--mode", choices=("zero", "ddp"), default="zero",
                    help="zero: DDP + ZeroRedundancyOptimizer (state sharded); ddp: DDP + a plain optimizer per rank")
    ap.add_argument("--bucket-view", action="store_true",
                    help="ZeroRedundancyOptimizer(parameters_as_bucket_view=True): "
                         "one broadcast per rank, not one per tensor")
    ap.add_argument("--steps", type=int, default=300, help="the run's total steps (default 300)")
    ap.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (default 1e-2)")
    ap.add_argument("--width", type=int, default=64, help="hidden layer width (default 64)")
    ap.add_argument("--save", metavar="PATH", help="write a consolidated checkpoint here (and at the end)")
    ap.add_argument("--save-every", type=int, default=0, metavar="N", help="also every N steps")
    ap.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save")
    ap.add_argument("--compare", action="store_true",
                    help="then train again with torch.optim.AdamW in the same role and print the difference")
    ap.add_argument("--bytes", action="store_true",
                    help="count the loopback interface's bytes per step (/proc/net/dev; all ranks' traffic)")
    ap.add_argument("--timeout", type=float, default=60.0, help="process group timeout in seconds (default 60)")
    args = ap.parse_args(argv)
    if args.ranks < 1 or BATCH % args.ranks:
        ap.error("--ranks %d must divide the batch of %d" % (args.ranks, BATCH))
    if args.bucket_view and args.mode != "zero":
        ap.error("--bucket-view is an option of --mode zero")
    if args.compare and args.resume:
        ap.error("--compare compares two runs from the same start; leave out --resume")
    return args


# ---- data and model: the same on every rank ---------------------------------------------------


def dataset():
    """Inputs and the labels a fixed random teacher network gives them."""
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(N_EXAMPLES, N_IN, generator=g)
    teacher = torch.randn(N_IN, 32, generator=g), torch.randn(32, N_OUT, generator=g)
    y = (torch.tanh(x @ teacher[0]) @ teacher[1]).argmax(1)
    return x, y


def batch_rows(step):
    """The rows of step's batch: a function of the step alone, so a resumed run
    (on any number of ranks) continues the same sequence."""
    g = torch.Generator().manual_seed(SEED + 1 + step)
    return torch.randint(0, N_EXAMPLES, (BATCH,), generator=g)


def make_model(width):
    torch.manual_seed(SEED + 2)
    return torch.nn.Sequential(torch.nn.Linear(N_IN, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                               torch.nn.Tanh(), torch.nn.Linear(width, N_OUT))


def param_groups(model):
    """Weights with weight decay, biases without."""
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n.endswith("weight")], "weight_decay": 0.05},
            {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}]


def lo_bytes():
    """Bytes sent over the loopback interface so far, by every process of the machine."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    raise RuntimeError("no loopback interface in /proc/net/dev")


def state_bytes(opt):
    """Bytes of optimizer state this rank holds (the local optimizer's, under ZeRO)."""
    local = opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt
    return sum(v.numel() * v.element_size() for st in local.state.values() for v in st.values()
               if torch.is_tensor(v) and v.dim() > 0)


# ---- one rank ---------------------------------------------------------------------------------


def train(rank, args, optimizer_class, say):
    """Train on this rank; return the model's parameters at the end."""
    world = dist.get_world_size()
    x_all, y_all = dataset()
    model = make_model(args.width)
    ddp = DistributedDataParallel(model)   # broadcasts rank 0's initial weights, averages gradients
    if args.mode == "zero":
        opt = ZeroRedundancyOptimizer(param_groups(model), optimizer_class=optimizer_class,
                                      parameters_as_bucket_view=args.bucket_view, lr=args.lr)
    else:
        opt = optimizer_class(param_groups(model), lr=args.lr)
    sched = WarmupCosine(opt, warmup_steps=max(1, args.steps // 10), total_steps=args.steps, eta_min=args.lr / 100)
    start = 0
    if args.resume:
        ckpt = torch.load(args.resume)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])   # ZeRO keeps the states of this rank's parameters
        sched.load_state_dict(ckpt["scheduler"])
        start = ckpt["step"]
        say("resumed %s at step %d (written by %d ranks) on %d ranks" % (args.resume, start, ckpt["ranks"], world))
    lo = per = (start + 3, args.steps) if args.bytes else None   # steps whose bytes are counted
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    skipped = 0
    for step in range(start, args.steps):
        if lo is not None and step == per[0]:
            dist.barrier()
            lo = lo_bytes()
        idx = batch_rows(step)[rows]
        loss = F.cross_entropy(ddp(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()                       # DDP: every rank now holds the averaged gradient
        norm = ot.clip_grad_norm_(model.parameters(), 1.0)  # the model's norm: the same on every rank
        if torch.isfinite(norm):
            opt.step()                        # ZeRO: steps this rank's shard, then broadcasts it
        else:
            skipped += 1                      # every rank skips alike
        sched.step()
        done = step + 1
        if args.save and (done == args.steps or (args.save_every and done % args.save_every == 0)):
            save(rank, world, args.save, model, opt, sched, done, say)
        if not args.bytes and (done % 50 == 0 or done == args.steps):
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            say("step %4d  loss %.4f  lr %.2e  grad norm %.3f" % (done, float(mean) / world, sched.get_last_lr()[0],
                                                                  float(norm)))
    if lo is not None and per[1] > per[0]:
        dist.barrier()
        n = per[1] - per[0]
        say("loopback: %d bytes per step, all ranks (%d steps; %d float32 parameters, %d ranks, %s%s)"
            % ((lo_bytes() - lo) // n, n, sum(p.numel() for p in model.parameters()), world, args.mode,
               ", bucket view" if args.bucket_view else ""))
    held = torch.tensor([state_bytes(opt)], dtype=torch.int64)
    every = [torch.zeros_like(held) for _ in range(world)]
    dist.all_gather(every, held)
    with torch.no_grad():
        full = F.cross_entropy(model(x_all), y_all).item()
        acc = (model(x_all).argmax(1) == y_all).float().mean().item()
    say("%s: loss %.4f, accuracy %.3f on all %d examples; %d steps skipped; optimizer state per rank: %s bytes"
        % (("optim.torch." if optimizer_class.__module__.startswith("optim.") else "torch.optim.")
           + optimizer_class.__name__, full, acc, N_EXAMPLES, skipped,
           ", ".join(str(int(b)) for b in every)))
    return [p.detach().clone() for p in model.parameters()]


def save(rank, world, path, model, opt, sched, step, say):
    """A consolidated checkpoint, written by rank 0 (every rank must call this)."""
    if isinstance(opt, ZeroRedundancyOptimizer):
        opt.consolidate_state_dict(to=0)     # collective: every rank sends its shard's state to rank 0
    if rank == 0:
        ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "ranks": world}
        tmp = "%s.tmp-%d" % (path, os.getpid())
        torch.save(ckpt, tmp)
        os.replace(tmp, path)                # a crash leaves the previous checkpoint whole
        say("saved %s at step %d" % (path, step))
    dist.barrier()                           # nobody goes on before the file is complete


def rank_main(rank, args, init):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.ranks))
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=args.ranks,
                            timeout=datetime.timedelta(seconds=args.timeout))

    def say(text):
        if rank == 0:
            print(text, flush=True)

    try:
        ours = train(rank, args, ot.AdamW, say)
        if args.compare:
            theirs = train(rank, args, torch.optim.AdamW, say)
            diff = max(float(((a - b).abs() / (b.abs() + b.abs().mean())).max()) for a, b in zip(ours, theirs))
            same = all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(ours, theirs))
            say("optim.torch.AdamW vs torch.optim.AdamW in the same role: largest relative difference of the "
                "parameters %.3g (%s)" % (diff, "bit-identical" if same else "not bit-identical"))
    except Exception as e:
        # Every rank says why it stopped: spawn reports the first failure it sees, which may be a
        # rank that lost its connection to the one that failed first.
        print("rank %d of %d failed: %s: %s" % (rank, args.ranks, type(e).__name__, e), file=sys.stderr, flush=True)
        raise
    dist.destroy_process_group()


def main(argv=None):
    args = parse_args(argv)
    # One machine: gloo's TCP pairs on the loopback interface, whatever the host name resolves to.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        try:
            mp.spawn(rank_main, args=(args, init), nprocs=args.ranks, join=True)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            # spawn stopped the other ranks; its message names the one that failed.
            print("ddp_zero.py: the job failed:%s" % e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
