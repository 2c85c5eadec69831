#!/usr/bin/python3
"""optim.torch against torch.optim, step by step, on the same tensors.

    optim bench --torch [options]          (finds this script, Python and the library)
    PYTHONPATH=python OPTIM_LIBRARY=build/liboptim.so /usr/bin/python3 bench/torch_compare.py [options]

For each case (a rule and options both libraries have), each size (one tensor
of 32M elements; the 148 tensors of GPT-2 small) and each thread setting, three
optimizers step the same parameter tensors with the same gradients in one
process: optim.torch.X, torch.optim.X(foreach=True) and torch.optim.X with its
default (foreach=None: the per-tensor loop in torch 1.13). Their runs alternate
(each a batch of steps lasting at least --min-time), after a warm-up that also
creates torch's lazy state; the median of --reps runs per optimizer is
reported, with the spread, and each speed-up is the median over the rounds of
torch's time over optim.torch's in that round. Before timing, each case is checked on small
tensors: three steps of optim.torch and of torch.optim from the same start
must agree to float32 rounding, so that the two sides time the same math.

Each thread setting runs in its own worker process started with
OMP_NUM_THREADS set (torch and liboptim share Debian's libgomp), so that both
libraries see the same number of threads.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

# name, torch.optim class, constructor arguments (torch's defaults otherwise).
CASES = [
    ("sgd", "SGD", {"lr": 1e-3}),
    ("sgd:momentum=0.9", "SGD", {"lr": 1e-3, "momentum": 0.9}),
    ("sgd:momentum=0.9:nesterov", "SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    ("adagrad", "Adagrad", {}),
    ("rmsprop", "RMSprop", {}),
    ("rmsprop:momentum=0.9", "RMSprop", {"momentum": 0.9}),
    ("rmsprop:centered", "RMSprop", {"centered": True}),
    ("rmsprop:centered:momentum=0.9", "RMSprop", {"centered": True, "momentum": 0.9}),
    ("adadelta", "Adadelta", {}),
    ("adam", "Adam", {}),
    ("adam:amsgrad", "Adam", {"amsgrad": True}),
    ("adamw", "AdamW", {}),
    ("adamw:amsgrad", "AdamW", {"amsgrad": True}),
    ("radam", "RAdam", {}),
    ("nadam", "NAdam", {}),
]
# Cases of `optim bench` that torch.optim cannot run.
NO_TORCH = {
    "adabound": "torch.optim has no AdaBound",
    "adabound:amsbound": "torch.optim has no AdaBound",
    "adadelta:momentum=0.9": "AdaDelta's momentum is an optim extension",
}

GPT2_LAYER = [
    ("ln_1.weight", (768,)), ("ln_1.bias", (768,)),
    ("attn.c_attn.weight", (768, 2304)), ("attn.c_attn.bias", (2304,)),
    ("attn.c_proj.weight", (768, 768)), ("attn.c_proj.bias", (768,)),
    ("ln_2.weight", (768,)), ("ln_2.bias", (768,)),
    ("mlp.c_fc.weight", (768, 3072)), ("mlp.c_fc.bias", (3072,)),
    ("mlp.c_proj.weight", (3072, 768)), ("mlp.c_proj.bias", (768,)),
]


def gpt2_shapes():
    """The parameter shapes of GPT-2 small (124M), as `optim bench --list` shows them."""
    shapes = [("wte.weight", (50257, 768)), ("wpe.weight", (1024, 768))]
    for layer in range(12):
        shapes += [("h.%d.%s" % (layer, name), shape) for name, shape in GPT2_LAYER]
    return shapes + [("ln_f.weight", (768,)), ("ln_f.bias", (768,))]


def parse_size(item):
    """'32M' -> (label, [shapes]); 'gpt2' -> the GPT-2 list. K, M, G are 2^10, 2^20, 2^30."""
    if item.lower() == "gpt2":
        return "gpt2", [shape for _, shape in gpt2_shapes()]
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(item[-1:].lower(), 1)
    digits = item[:-1] if mult != 1 else item
    try:
        n = float(digits) * mult
    except ValueError:
        n = -1.0
    if not (n >= 1 and n == math.floor(n) and n <= (1 << 34)):
        raise argparse.ArgumentTypeError("size %r: expected a whole number of elements in [1, 16G] "
                                         "(K, M, G = 2^10, 2^20, 2^30) or gpt2" % item)
    return item, [(int(n),)]


def parse_cases(text, warn=False):
    """The CASES picked by --rules; `warn`: say on stderr which asked-for cases torch lacks."""
    out = []
    for item in [s for s in text.split(",") if s]:
        if item == "all":
            picked = [c for c in CASES]
        elif ":" in item:
            picked = [c for c in CASES if c[0] == item]
            if not picked and item not in NO_TORCH:
                raise argparse.ArgumentTypeError(
                    "case %r: not one of %s" % (item, ", ".join(c[0] for c in CASES)))
        else:
            picked = [c for c in CASES if c[0].split(":")[0] == item]
            if not picked and item not in NO_TORCH:
                raise argparse.ArgumentTypeError(
                    "rule %r: expected one of %s (or all)"
                    % (item, ", ".join(sorted({c[0].split(':')[0] for c in CASES}))))
        if item in NO_TORCH and warn:
            print("torch_compare: skipping %s: %s" % (item, NO_TORCH[item]), file=sys.stderr)
        for c in picked:
            if c not in out:
                out.append(c)
    if not out:
        raise argparse.ArgumentTypeError("no case to run in %r" % text)
    return out


def parse_threads(text):
    out = []
    for item in [s for s in text.split(",") if s]:
        if item == "all":
            value = "all"
        else:
            try:
                value = int(item)
            except ValueError:
                value = 0
            if not 1 <= value <= 1024:
                raise argparse.ArgumentTypeError("threads %r: expected 1..1024 or all" % item)
        if value not in out:
            out.append(value)
    if not out:
        raise argparse.ArgumentTypeError("--threads needs a comma-separated list")
    return out


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v <= 1000:
        raise argparse.ArgumentTypeError("%r: expected an integer in [1, 1000]" % text)
    return v


def seconds(text):
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v <= 60:
        raise argparse.ArgumentTypeError("%r: expected seconds in [0, 60]" % text)
    return v


def build_parser():
    p = argparse.ArgumentParser(
        prog="optim bench --torch",
        description="Time optim.torch against torch.optim (foreach=True and the default) on the same tensors "
                    "in one process, for every rule and option set both have. See docs/PERFORMANCE.md.")
    p.add_argument("--rules", default="all",
                   help="comma-separated: all, a rule name (its cases) or a case as `optim bench --list` "
                        "names it, e.g. adam:amsgrad (default all)")
    p.add_argument("--sizes", default="32M,gpt2",
                   help="one tensor of N elements (K, M, G suffixes) or gpt2 (the 148 tensors of GPT-2 small) "
                        "(default 32M,gpt2)")
    p.add_argument("--threads", default="all", help="1, N or all, comma-separated (default all)")
    p.add_argument("--reps", type=positive_int, default=5, help="timed runs per optimizer (default 5)")
    p.add_argument("--min-time", type=seconds, default=0.1,
                   help="a run repeats the step for at least this many seconds (default 0.1)")
    p.add_argument("--no-check", action="store_true", help="skip the agreement check on small tensors")
    p.add_argument("--json", action="store_true", help="results as JSON on stdout instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # a thread setting, in the worker process
    return p


# ---- The worker: one thread setting, in its own process ----------------------------------------


def median_stats(times):
    s = sorted(times)
    n = len(s)
    med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return {"median": med, "min": s[0], "max": s[-1]}


def check_agreement(torch, optim_torch, torch_name, kwargs, seed):
    """Three steps of optim.torch and torch.optim (foreach) from the same start
    on small tensors; the largest difference relative to the parameters' scale."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(1000,), (37, 29), (513,)]
    start = [torch.rand(s, generator=g) * 2 - 1 for s in shapes]
    grads = [[torch.rand(s, generator=g) * 2 - 1 for s in shapes] for _ in range(3)]
    results = []
    for make in (lambda ps: getattr(optim_torch, torch_name)(ps, **kwargs),
                 lambda ps: getattr(torch.optim, torch_name)(ps, foreach=True, **kwargs)):
        ps = [t.clone().requires_grad_(True) for t in start]
        opt = make(ps)
        for step in range(3):
            for p, gr in zip(ps, grads[step]):
                p.grad = gr.clone()
            opt.step()
        results.append([p.detach() for p in ps])
    scale = max(float(t.abs().max()) for t in start)
    return max(float((a - b).abs().max()) for a, b in zip(*results)) / scale


def worker(args):
    import ctypes
    import gc

    import torch
    import optim.torch as optim_torch
    from optim import _capi

    setting = args.worker
    # torch picks its own default thread count at import (1 on the 2-CPU
    # machine of docs/PERFORMANCE.md) and sets OpenMP's to it, which liboptim's
    # "all threads" then follows. "all" here means every CPU this process may
    # run on, for both libraries.
    torch_default_threads = torch.get_num_threads()
    threads = len(os.sched_getaffinity(0)) if setting == "all" else int(setting)
    torch.set_num_threads(threads)
    # liboptim's threads = 0 uses omp_get_max_threads() of the calling thread;
    # torch.set_num_threads sets it too when both use the same libgomp.
    gomp = ctypes.CDLL("libgomp.so.1")
    omp_threads = gomp.omp_get_max_threads()
    if omp_threads != threads:
        print("torch_compare: warning: liboptim will use %d OpenMP threads, torch %d" % (omp_threads, threads),
              file=sys.stderr)
    isa = _capi.optim_isa_name(_capi.optim_isa_default()).decode()
    cases = parse_cases(args.rules)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    progress = not args.quiet
    out = {"threads": setting, "threads_used": threads, "omp_max_threads": omp_threads,
           "torch_default_threads": torch_default_threads, "isa": isa,
           "torch_version": torch.__version__, "optim_version": _capi.version, "library": _capi.path,
           "results": []}
    total = len(cases) * len(sizes)
    done = 0
    t_start = time.perf_counter()
    for label, shapes in sizes:
        gen = torch.Generator().manual_seed(1)
        params = [torch.empty(s).uniform_(-1, 1, generator=gen).requires_grad_(True) for s in shapes]
        for p in params:
            p.grad = torch.empty(p.shape).uniform_(-1, 1, generator=gen)
        nelem = sum(p.numel() for p in params)
        for name, torch_name, kwargs in cases:
            done += 1
            if progress:
                print("torch_compare: [%d/%d %.0fs] %s, %s, %s thread%s" % (
                    done, total, time.perf_counter() - t_start, name, label, threads, "" if threads == 1 else "s"),
                    file=sys.stderr, flush=True)
            agree = None if args.no_check else check_agreement(torch, optim_torch, torch_name, kwargs, done)
            opts = {
                "optim.torch": getattr(optim_torch, torch_name)(params, **kwargs),
                "torch foreach": getattr(torch.optim, torch_name)(params, foreach=True, **kwargs),
                "torch default": getattr(torch.optim, torch_name)(params, **kwargs),
            }
            # Warm-up (torch creates its state at the first step), then one
            # timed step each to size the batches.
            iters = {}
            for key, opt in opts.items():
                opt.step()
                t0 = time.perf_counter()
                opt.step()
                one = time.perf_counter() - t0
                iters[key] = max(1, int(math.ceil(args.min_time / one))) if one > 0 else 1
            times = {key: [] for key in opts}
            for _ in range(args.reps):
                for key, opt in opts.items():
                    t0 = time.perf_counter()
                    for _ in range(iters[key]):
                        opt.step()
                    times[key].append((time.perf_counter() - t0) / iters[key])
            stats = {key: median_stats(v) for key, v in times.items()}
            res = {"case": name, "torch_class": torch_name, "size": label, "elements": nelem, "tensors": len(params),
                   "agreement_max_rel_diff": agree}
            for key, st in stats.items():
                res[key] = {"step_s": st, "runs_s": times[key], "elements_per_s": nelem / st["median"],
                            "iters": iters[key]}
            # Speed-ups: the median over rounds of (torch's time / optim.torch's
            # time), the three runs of a round being adjacent in time.
            o = times["optim.torch"]
            fe, de = times["torch foreach"], times["torch default"]
            res["speedup_vs_foreach"] = median_stats([f / x for f, x in zip(fe, o)])["median"]
            res["speedup_vs_default"] = median_stats([d / x for d, x in zip(de, o)])["median"]
            res["speedup_vs_best_torch"] = median_stats([min(f, d) / x for f, d, x in zip(fe, de, o)])["median"]
            out["results"].append(res)
            del opts
            gc.collect()
        del params
        gc.collect()
    json.dump(out, sys.stdout)
    return 0


# ---- The parent: one worker per thread setting, then the table -----------------------------------


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def fmt_time(s):
    if s < 1e-3:
        return "%.1f us" % (s * 1e6)
    if s < 1:
        return "%.2f ms" % (s * 1e3)
    return "%.3f s" % s


AGREE_TOL = 1e-5  # relative to the parameters' scale: float32 rounding over three steps


def print_table(report):
    print("optim.torch vs torch.optim: torch %s, optim %s (CPU path %s), library %s"
          % (report["torch_version"], report["optim_version"], report["isa"], report["library"]))
    print("load average at start %s, at end %s; median of %d runs after a warm-up (runs >= %g s); "
          "spread = (max - min) / median" % (report["load_start"], report["load_end"], report["reps"],
                                             report["min_time_s"]))
    for run in report["runs"]:
        print("\n== threads: %s (%d used by torch; %d by liboptim; torch's own default here: %d)"
              % (run["threads"], run["threads_used"], run["omp_max_threads"], run["torch_default_threads"]))
        size = None
        for r in run["results"]:
            if r["size"] != size:
                size = r["size"]
                print("\n  %s: %d elements in %d tensor%s" % (size, r["elements"], r["tensors"],
                                                             "" if r["tensors"] == 1 else "s"))
                print("  %-30s %22s %22s %22s %9s %9s %8s" % ("case", "optim.torch", "torch foreach",
                                                              "torch default", "x foreach", "x default",
                                                              "agree"))
            cells = []
            for key in ("optim.torch", "torch foreach", "torch default"):
                st = r[key]["step_s"]
                cells.append("%9s %5.2fG/s %4.0f%%" % (fmt_time(st["median"]), r[key]["elements_per_s"] / 1e9,
                                                       100 * (st["max"] - st["min"]) / st["median"]))
            agree = r["agreement_max_rel_diff"]
            print("  %-30s %22s %22s %22s %8.2fx %8.2fx %8s" % (
                r["case"], cells[0], cells[1], cells[2], r["speedup_vs_foreach"], r["speedup_vs_default"],
                "-" if agree is None else "%.0e" % agree))
    print("\ntargets (issue 4)")
    for t in report["targets"]:
        print("  %-60s %s" % (t["name"], t["verdict"]))
    for item, why in sorted(NO_TORCH.items()):
        print("  (not compared: %s: %s)" % (item, why))


def evaluate_targets(report):
    """Adam >= 5x torch.optim.Adam on 32M (against the faster torch variant,
    and foreach); every case faster than its torch counterpart."""
    targets = []
    adam = [(run, r) for run in report["runs"] for r in run["results"] if r["case"] == "adam" and r["size"] == "32M"]
    if adam:
        worst = min(adam, key=lambda x: x[1]["speedup_vs_best_torch"])
        v = worst[1]["speedup_vs_best_torch"]
        targets.append({"name": "optim.torch.Adam >= 5x torch.optim.Adam on 32M parameters", "threshold": 5.0,
                        "measured": True, "met": v >= 5.0, "worst": v,
                        "verdict": "%s: worst %.2fx the faster torch variant (%s threads)"
                                   % ("met" if v >= 5.0 else "MISSED", v, worst[0]["threads"])})
    else:
        targets.append({"name": "optim.torch.Adam >= 5x torch.optim.Adam on 32M parameters", "measured": False,
                        "met": False, "verdict": "not measured in this run (needs --rules adam --sizes 32M)"})
    allr = [(run, r) for run in report["runs"] for r in run["results"]]
    slower = [(run["threads"], r["case"], r["size"], r["speedup_vs_best_torch"]) for run, r in allr
              if r["speedup_vs_best_torch"] <= 1.0]
    if allr:
        worst = min(allr, key=lambda x: x[1]["speedup_vs_best_torch"])
        verdict = "%s: slowest %.2fx (%s, %s, %s threads)" % (
            "met" if not slower else "MISSED", worst[1]["speedup_vs_best_torch"], worst[1]["case"], worst[1]["size"],
            worst[0]["threads"])
        if slower:
            verdict += "; not faster: " + ", ".join("%s %s %s thr %.2fx" % (c, s, t, v) for t, c, s, v in slower)
        targets.append({"name": "every case faster than its torch.optim counterpart", "threshold": 1.0,
                        "measured": True, "met": not slower, "worst": worst[1]["speedup_vs_best_torch"],
                        "verdict": verdict})
    return targets


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        threads = parse_threads(args.threads)
        if not [parse_size(s) for s in args.sizes.split(",") if s]:
            raise argparse.ArgumentTypeError("--sizes needs a comma-separated list")
        parse_cases(args.rules, warn=not args.worker)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if args.worker:
        return worker(args)

    report = {"tool": "optim bench --torch", "reps": args.reps, "min_time_s": args.min_time,
              "load_start": loadavg(), "runs": []}
    for setting in threads:
        env = dict(os.environ)
        if setting != "all":
            env["OMP_NUM_THREADS"] = str(setting)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(setting), "--rules", args.rules,
               "--sizes", args.sizes, "--reps", str(args.reps), "--min-time", str(args.min_time)]
        if args.no_check:
            cmd.append("--no-check")
        if args.quiet:
            cmd.append("--quiet")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE)
        if proc.returncode != 0:
            print("torch_compare: the worker for threads=%s failed (exit %d)" % (setting, proc.returncode),
                  file=sys.stderr)
            return 1
        run = json.loads(proc.stdout)
        report["runs"].append(run)
    report["load_end"] = loadavg()
    first = report["runs"][0]
    for key in ("torch_version", "optim_version", "isa", "library"):
        report[key] = first[key]
    report["targets"] = evaluate_targets(report)
    bad = [(run["threads"], r["case"], r["size"], r["agreement_max_rel_diff"]) for run in report["runs"]
           for r in run["results"] if r["agreement_max_rel_diff"] is not None
           and not r["agreement_max_rel_diff"] <= AGREE_TOL]
    report["agreement_tolerance"] = AGREE_TOL
    report["disagreements"] = [{"threads": t, "case": c, "size": s, "max_rel_diff": d} for t, c, s, d in bad]
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print_table(report)
    if bad:
        for t, c, s, d in bad:
            print("torch_compare: %s (%s, threads %s): optim.torch and torch.optim disagree by %.3g of the "
                  "parameters' scale after three steps: the timings compare different math" % (c, s, t, d),
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
