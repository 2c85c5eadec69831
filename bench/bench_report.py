#!/usr/bin/python3
"""Markdown tables from the JSON of `optim bench --json` and `optim bench --torch --json`.

    optim bench --json > bench.json
    optim bench --torch --json > torch.json
    /usr/bin/python3 bench/bench_report.py bench.json [--torch torch.json] > tables.md
    /usr/bin/python3 bench/bench_report.py --summary bench.json        (ratios only)

docs/PERFORMANCE.md's tables are this script's output for the runs it names:
every number in them comes from those two commands; nothing is edited by hand.
"""
import argparse
import json
import sys

BIG = 64 << 20  # the "far out of cache" threshold
IN_CACHE = 1 << 20  # at most this many elements: a case that fits in the caches


def thr(t):
    return "all" if t == "all" else str(t)


def fmt_time(s):
    if s < 1e-6:
        return "%.0f ns" % (s * 1e9)
    if s < 1e-3:
        return "%.1f us" % (s * 1e6)
    if s < 1:
        return "%.2f ms" % (s * 1e3)
    return "%.3f s" % s


def spread(st):
    return 100.0 * (st["max"] - st["min"]) / st["median"]


def gib(b):
    return "%.2f GiB" % (b / 2 ** 30) if b >= 2 ** 30 else "%.1f MiB" % (b / 2 ** 20)


def ordered(seq):
    out = []
    for x in seq:
        if x not in out:
            out.append(x)
    return out


def bench_tables(d, out):
    w = out.write
    res = d["results"]
    threads = ordered(r["threads"] for r in res)
    sizes = ordered(r["size"] for r in res)
    cases = ordered(r["case"] for r in res)
    by = {(r["case"], r["size"], r["threads"]): r for r in res}
    w("Run: optim %s, CPU path **%s** (library default %s), %s, %d logical CPUs, all threads = %d; "
      "%d runs per number after a warm-up, each run repeating the step for >= %g s; load average %s at the "
      "start, %s at the end; %.0f s.\n\n"
      % (d["optim_version"], d["isa"], d["isa_default"], d["cpu"], d["cpus"], d["threads_all"], d["reps"],
         d["min_time_s"], " ".join("%.2f" % x for x in d["load_start"]),
         " ".join("%.2f" % x for x in d["load_end"]), d["duration_s"]))

    if d["context"]:
        w("#### Context: copy and triad (GB/s, STREAM's byte counts: 8 and 12 B per element)\n\n")
        w("| size | " + " | ".join("copy, %s thr | triad, %s thr" % (thr(t), thr(t)) for t in threads) + " |\n")
        w("|---|" + "---:|---:|" * len(threads) + "\n")
        ctx = {(c["size"], c["threads"]): c for c in d["context"]}
        for s in ordered(c["size"] for c in d["context"]):
            cells = []
            for t in threads:
                c = ctx.get((s, t))
                if c:
                    cells += ["%.1f" % c["copy"]["gbs"], "%.1f" % c["triad"]["gbs"]]
                else:
                    cells += ["-", "-"]
            w("| %s | %s |\n" % (s, " | ".join(cells)))
        w("\n")

    for s in sizes:
        any_r = next(r for r in res if r["size"] == s)
        title = ("GPT-2 small: %d tensors, %d elements" % (any_r["tensors"], any_r["elements"]) if s == "gpt2"
                 else "%s: one tensor of %d elements" % (s, any_r["elements"]))
        w("#### %s\n\n" % title)
        w("| case | B/el | " + " | ".join(
            "%s thr: step | G el/s | GB/s | ceiling GB/s | **ratio** | spread rule/ceil" % thr(t)
            for t in threads) + " |\n")
        w("|---|---:|" + "---:|---:|---:|---:|---:|---:|" * len(threads) + "\n")
        for c in cases:
            rows = [by.get((c, s, t)) for t in threads]
            if not any(rows):
                continue
            first = next(r for r in rows if r)
            cells = [c, "%d" % first["bytes_per_element"]]
            for r in rows:
                if not r:
                    cells += ["-"] * 6
                    continue
                cells += [fmt_time(r["step_s"]["median"]), "%.3f" % (r["elements_per_s"] / 1e9), "%.1f" % r["gbs"],
                          "%.1f" % r["ceiling"]["gbs"], "**%.2f**" % r["ratio"],
                          "%.0f%% / %.0f%%" % (spread(r["step_s"]), spread(r["ceiling"]["step_s"]))]
            w("| " + " | ".join(cells) + " |\n")
        w("\n")

    if d["skipped"]:
        w("Skipped:\n\n")
        for k in d["skipped"]:
            w("- %s%s: %s\n" % (k["size"], " " + k["case"] if k["case"] else "", k["reason"]))
        w("\n")

    w("#### Targets in this run\n\n")
    w("| target | verdict | worst case |\n|---|---|---|\n")
    for t in d["targets"]:
        if not t["measured"]:
            w("| %s | not measured | |\n" % t["name"])
            continue
        wr = t["worst"]
        w("| %s | %s (%d below) | %s, %s, %s threads: %.2f |\n"
          % (t["name"], "met" if t["met"] else "**missed**", t["misses"], wr["case"], wr["size"], thr(wr["threads"]),
             wr["ratio"]))
    m = d["memory"]
    if m:
        w("| peak RSS growth <= 1.01 x (params + grads + state) + 1 MiB, largest case | %s | %s, %s: the resident "
          "set grew by %d B for %d B of params + grads + state (%+.1f MiB, %+.3f%%); the process's peak was %s, of "
          "which %.1f MiB were resident before the case's arrays%s |\n"
          % ("met" if m["met"] else "**missed**", m["case"], m["size"], m["growth_bytes"], m["min_bytes"],
             (m["growth_bytes"] - m["min_bytes"]) / 2 ** 20, 100.0 * (m["growth_bytes"] / m["min_bytes"] - 1),
             gib(m["peak_rss_bytes"]), m["rss_base_bytes"] / 2 ** 20,
             "" if m["per_case"] else " (process-wide peak)"))
    w("\n")
    below = [r for r in res if r["size"] == "gpt2" and r["ratio"] < 0.85
             or r["size"] != "gpt2" and r["elements"] >= BIG and r["ratio"] < 0.90]
    if below:
        w("Below target: " + "; ".join("%s %s %s thr %.2f" % (r["case"], r["size"], thr(r["threads"]), r["ratio"])
                                       for r in below) + ".\n\n")


def summary_table(d, out):
    """One line per case: the ratio to the ceiling at every out-of-cache size
    (>= 64M elements, and the GPT-2 list) for each thread count, and the
    in-cache rate at the smallest size: the numbers the targets are about."""
    w = out.write
    res = d["results"]
    by = {(r["case"], r["size"], r["threads"]): r for r in res}
    threads = ordered(r["threads"] for r in res)
    big = [s for s in ordered(r["size"] for r in res)
           if s == "gpt2" or next(r for r in res if r["size"] == s)["elements"] >= BIG]
    smallest = min(res, key=lambda r: r["elements"])
    small = smallest["size"] if smallest["elements"] <= IN_CACHE else None
    cols = [(s, t) for s in big for t in threads]
    w("| case | B/el | " + " | ".join("%s, %s thr" % (s, thr(t)) for s, t in cols)
      + (" | %s, 1 thr: G el/s (in cache) |\n" % small if small else " |\n"))
    w("|---|---:|" + "---:|" * (len(cols) + (1 if small else 0)) + "\n")
    for c in ordered(r["case"] for r in res):
        first = next(r for r in res if r["case"] == c)
        cells = [c, "%d" % first["bytes_per_element"]]
        for s, t in cols:
            r = by.get((c, s, t))
            cells.append("-" if not r else ("**%.2f**" % r["ratio"] if r["ratio"] < (0.85 if s == "gpt2" else 0.90)
                                            else "%.2f" % r["ratio"]))
        if small:
            r = by.get((c, small, 1))
            cells.append("-" if not r else "%.2f" % (r["elements_per_s"] / 1e9))
        w("| " + " | ".join(cells) + " |\n")
    w("\n")


def torch_tables(d, out):
    w = out.write
    w("Run: torch %s, optim %s (CPU path **%s**); median of %d runs after a warm-up (runs >= %g s); load average "
      "%s at the start, %s at the end.\n\n"
      % (d["torch_version"], d["optim_version"], d["isa"], d["reps"], d["min_time_s"],
         " ".join("%.2f" % x for x in d["load_start"]), " ".join("%.2f" % x for x in d["load_end"])))
    for run in d["runs"]:
        sizes = ordered(r["size"] for r in run["results"])
        for s in sizes:
            rows = [r for r in run["results"] if r["size"] == s]
            w("#### %s, %s threads (%d used; torch's own default here: %d)\n\n"
              % ("GPT-2 small (%d tensors, %d elements)" % (rows[0]["tensors"], rows[0]["elements"]) if s == "gpt2"
                 else "%s (%d elements, 1 tensor)" % (s, rows[0]["elements"]),
                 thr(run["threads"]), run["threads_used"], run["torch_default_threads"]))
            w("| case | optim.torch | torch foreach | torch default | **speed-up** vs foreach | vs default | "
              "spread o/f/d |\n|---|---:|---:|---:|---:|---:|---:|\n")
            for r in rows:
                cells = ["%s (%.2f G el/s)" % (fmt_time(r[k]["step_s"]["median"]), r[k]["elements_per_s"] / 1e9)
                         for k in ("optim.torch", "torch foreach", "torch default")]
                w("| %s | %s | %s | %s | **%.2fx** | %.2fx | %s |\n"
                  % (r["case"], cells[0], cells[1], cells[2], r["speedup_vs_foreach"], r["speedup_vs_default"],
                     " / ".join("%.0f%%" % spread(r[k]["step_s"])
                                for k in ("optim.torch", "torch foreach", "torch default"))))
            w("\n")
    w("| target | verdict |\n|---|---|\n")
    for t in d["targets"]:
        w("| %s | %s |\n" % (t["name"], t["verdict"]))
    w("\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bench_json", nargs="?", help="output of optim bench --json")
    p.add_argument("--torch", help="output of optim bench --torch --json")
    p.add_argument("--summary", action="store_true",
                   help="only the ratios to the ceiling at the out-of-cache sizes, one line per case")
    args = p.parse_args(argv)
    if not args.bench_json and not args.torch:
        p.error("give optim bench's JSON, --torch's JSON, or both")
    if args.bench_json:
        with open(args.bench_json) as f:
            (summary_table if args.summary else bench_tables)(json.load(f), sys.stdout)
    if args.torch:
        with open(args.torch) as f:
            torch_tables(json.load(f), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
