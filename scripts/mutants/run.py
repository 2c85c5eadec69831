#!/usr/bin/env python3
"""make mutate: standing mutation testing. Each mutant of scripts/mutants/mutants.txt
is applied to a copy of the source tree, built incrementally, and checked by the
tests listed with it; the table says which test killed it, or SURVIVED.

    scripts/mutants/run.py [--build-dir DIR] [--only ID[,ID...]] [--full] [--list] [--check]

The copy lives in DIR/src (default build-mutate/src), refreshed from the checkout
(tracked and untracked files, .gitignore respected) at each run, writing only the
files that changed so that the build in DIR/build stays incremental. The checkout
itself is never modified.

Before any mutant, every listed test runs once on the unmutated copy and must
pass: a test failing on its own would otherwise "kill" every mutant.

Statuses (the last column of the table):
  killed by T   T, the first of the mutant's tests to fail, failed;
  SURVIVED      every listed test passed: a test is missing (write it; never delete the mutant);
  STALE         the old text is not in the file exactly once (the code moved: re-anchor the mutant);
  BROKEN        the mutated tree does not build (fix the mutant).
The exit status is 0 only when every mutant is killed.

--full runs, for each mutant, the whole C label (every C suite) when a C test is
listed, every listed Python file in full (on the listed CPU path), and any other
listed CTest test, and lists every test that failed: a check that the per-mutant
lists are honest (the listed killer is among them, and no other test of the C
suites kills a mutant said to survive them). It is slow (minutes per mutant).

Test names in the list:
  c.NAME            a CTest test (any CTest name: examples.quickstart, python.path.avx2, ...)
  py:FILE::NODE     pytest on the file or node (FILE relative to the repository root)
  py@PATH:FILE...   the same with OPTIM_ISA=PATH (scalar, avx2, avx512)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIST = os.path.join(ROOT, "scripts", "mutants", "mutants.txt")
PYTHON = "/usr/bin/python3"
TEST_TIMEOUT = 900


class Mutant:
    def __init__(self, mid, line):
        self.id = mid
        self.line = line
        self.file = None
        self.what = None
        self.tests = []
        self.old = None
        self.new = None


def parse(path):
    """The mutants of `path`: blocks that start with '=== ID', then 'file:',
    'what:', 'tests:' (one or more lines), then '--- old' and '+++ new' blocks
    taken verbatim up to the next marker ('--- old', '+++ new', '=== ID', or a
    '### ' section heading; trailing blank lines dropped). Lines starting
    with '#' are comments outside the old and new blocks only."""
    mutants, cur, block = [], None, None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        if line.startswith("=== "):
            cur = Mutant(line[4:].strip(), n)
            mutants.append(cur)
            block = None
            continue
        if line.startswith("### "):  # a section heading ends the mutant before it
            cur, block = None, None
            continue
        if cur is None:
            if line.strip() and not line.startswith("#"):
                raise SystemExit("%s:%d: text outside a mutant (a mutant starts with '=== ID')" % (path, n))
            continue
        if line == "--- old":
            cur.old, block = [], "old"
            continue
        if line == "+++ new":
            cur.new, block = [], "new"
            continue
        if block:
            getattr(cur, block).append(line)
            continue
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        if key == "file":
            cur.file = value.strip()
        elif key == "what":
            cur.what = value.strip()
        elif key == "tests":
            cur.tests.extend(value.split())
        else:
            raise SystemExit("%s:%d: unknown line %r in mutant %s" % (path, n, line, cur.id))
    seen = set()
    for m in mutants:
        for attr in ("old", "new"):
            v = getattr(m, attr)
            if v is None:
                raise SystemExit("%s:%d: mutant %s has no '%s' block" % (path, m.line, m.id,
                                                                        "--- old" if attr == "old" else "+++ new"))
            while v and not v[-1].strip():
                v.pop()
            setattr(m, attr, "\n".join(v))
        if not (m.file and m.what and m.tests and m.old):
            raise SystemExit("%s:%d: mutant %s needs file, what, tests and old text" % (path, m.line, m.id))
        if m.old == m.new:
            raise SystemExit("%s:%d: mutant %s changes nothing" % (path, m.line, m.id))
        if m.id in seen:
            raise SystemExit("%s:%d: mutant id %s used twice" % (path, m.line, m.id))
        seen.add(m.id)
    return mutants


# ---- the copy and its build ----------------------------------------------------------------------

def sync_copy(src):
    """Bring src up to date with the checkout, writing changed files only."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    wrote = 0
    for rel in filter(None, out.split("\0")):
        a = os.path.join(ROOT, rel)
        if not os.path.isfile(a) or os.path.islink(a):
            continue
        b = os.path.join(src, rel)
        with open(a, "rb") as f:
            data = f.read()
        try:
            with open(b, "rb") as f:
                same = f.read() == data
        except OSError:
            same = False
        if not same:
            os.makedirs(os.path.dirname(b), exist_ok=True)
            with open(b, "wb") as f:
                f.write(data)
            shutil.copymode(a, b)
            wrote += 1
    return wrote


def build(src, bld, log):
    if not os.path.exists(os.path.join(bld, "CMakeCache.txt")):
        r = subprocess.run(["cmake", "-S", src, "-B", bld, "-DCMAKE_BUILD_TYPE=Release"], stdout=log, stderr=log)
        if r.returncode:
            return False
    # Re-run CMake: test lists are read when configuring.
    r = subprocess.run(["cmake", "-S", src, "-B", bld], stdout=log, stderr=log)
    if r.returncode:
        return False
    return subprocess.run(["cmake", "--build", bld, "-j", "2"], stdout=log, stderr=log).returncode == 0


def env_for(src, bld, isa=None):
    e = dict(os.environ)
    e.update(OPTIM_LIBRARY=os.path.join(bld, "liboptim.so"), PYTHONPATH=os.path.join(src, "python"),
             OPTIM_LAB_EXE=os.path.join(bld, "tools", "optim"), OPTIM_BENCH_EXE=os.path.join(bld, "tools", "optim"),
             PYTHONDONTWRITEBYTECODE="1")
    e.pop("OPTIM_ISA", None)
    if isa:
        e["OPTIM_ISA"] = isa
    return e


def run_test(name, src, bld, log):
    """Run one listed test; True if it passed. Output goes to log."""
    log.write("\n---- %s\n" % name)
    log.flush()
    m = re.match(r"^py(?:@(\w+))?:(.+)$", name)
    try:
        if m:
            cmd = [PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", os.path.join(src, m.group(2))]
            r = subprocess.run(cmd, cwd=src, env=env_for(src, bld, m.group(1)), stdout=log, stderr=log,
                               timeout=TEST_TIMEOUT)
        else:
            cmd = ["ctest", "--output-on-failure", "-R", "^%s$" % re.escape(name)]
            r = subprocess.run(cmd, cwd=bld, env=env_for(src, bld), stdout=log, stderr=log, timeout=TEST_TIMEOUT)
            listed = subprocess.run(["ctest", "-N", "-R", "^%s$" % re.escape(name)], cwd=bld, capture_output=True,
                                    text=True).stdout
            if "Total Tests: 0" in listed:
                raise SystemExit("no CTest test named %s (see ctest -N in %s)" % (name, bld))
    except subprocess.TimeoutExpired:
        log.write("timed out after %d s\n" % TEST_TIMEOUT)
        return False
    return r.returncode == 0


def full_run(tests, src, bld, log):
    """Every test of the labels of `tests`; returns the names that failed."""
    failed = []
    labels = set()
    files = {}
    for t in tests:
        m = re.match(r"^py(?:@(\w+))?:([^:]+)", t)
        if m:
            lab = "py@" + m.group(1) if m.group(1) else "py"
            labels.add(lab)
            files.setdefault(lab, set()).add(m.group(2))
        elif t.startswith("c."):
            labels.add("c")
        else:
            labels.add("ctest:" + t)
    for lab in sorted(labels):
        if lab == "c":
            r = subprocess.run(["ctest", "-L", "^c$", "-j", "2"], cwd=bld, env=env_for(src, bld),
                               capture_output=True, text=True)
            log.write(r.stdout + r.stderr)
            tail = r.stdout.split("The following tests FAILED:")[-1] if "tests FAILED" in r.stdout else ""
            failed += re.findall(r"^\s*\d+ - (\S+) \(", tail, re.M)
        elif lab.startswith("py"):
            isa = lab[3:] if lab.startswith("py@") else None
            r = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf"]
                               + [os.path.join(src, f) for f in sorted(files[lab])], cwd=src,
                               env=env_for(src, bld, isa), capture_output=True, text=True)
            log.write(r.stdout + r.stderr)
            failed += ["%s:%s" % (lab, x) for x in re.findall(r"^FAILED (\S+)", r.stdout, re.M)]
            if r.returncode not in (0, 1):  # not a test failure: the whole run of these files failed
                failed += ["%s:%s (pytest exit %d)" % (lab, f, r.returncode) for f in sorted(files[lab])]
        else:
            name = lab[len("ctest:"):]
            if not run_test(name, src, bld, log):
                failed.append(name)
    return sorted(set(failed))


# ---- one mutant ----------------------------------------------------------------------------------

def apply(m, src):
    """Apply m in the copy; returns (original bytes, None) or (None, why it is stale)."""
    path = os.path.join(src, m.file)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        return None, "file %s: %s" % (m.file, e.strerror)
    n = text.count(m.old)
    if n != 1:
        return None, "old text found %d times in %s" % (n, m.file)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(m.old, m.new))
    return text, None


def restore(m, src, text):
    with open(os.path.join(src, m.file), "w", encoding="utf-8") as f:
        f.write(text)


def table(rows):
    w = [max(len(r[i]) for r in rows + [("mutant", "what", "result")]) for i in range(3)]
    w[1] = min(w[1], 70)
    out = ["| %s | %s | %s |" % ("mutant".ljust(w[0]), "what".ljust(w[1]), "result".ljust(w[2])),
           "|%s|%s|%s|" % ("-" * (w[0] + 2), "-" * (w[1] + 2), "-" * (w[2] + 2))]
    for mid, what, res in rows:
        out.append("| %s | %s | %s |" % (mid.ljust(w[0]), what.ljust(w[1]), res.ljust(w[2])))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-mutate"))
    ap.add_argument("--only", default="", help="comma-separated mutant ids")
    ap.add_argument("--full", action="store_true", help="run whole labels and list every killing test")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true",
                    help="only check that every mutant's old text occurs once in the checkout (no build)")
    args = ap.parse_args()
    mutants = parse(LIST)
    if args.only:
        want = set(args.only.split(","))
        unknown = want - {m.id for m in mutants}
        if unknown:
            raise SystemExit("unknown mutant ids: %s" % ", ".join(sorted(unknown)))
        mutants = [m for m in mutants if m.id in want]
    if args.list:
        for m in mutants:
            print("%-36s %-28s %s" % (m.id, m.file, m.what))
        return 0
    if args.check:
        stale = 0
        for m in mutants:
            try:
                with open(os.path.join(ROOT, m.file), encoding="utf-8") as f:
                    n = f.read().count(m.old)
            except OSError:
                n = 0
            if n != 1:
                stale += 1
                print("STALE %s: old text found %d times in %s" % (m.id, n, m.file))
        print("%d mutants, %d stale" % (len(mutants), stale))
        return 1 if stale else 0
    src = os.path.join(args.build_dir, "src")
    bld = os.path.join(args.build_dir, "build")
    os.makedirs(src, exist_ok=True)
    logpath = os.path.join(args.build_dir, "mutate.log")
    log = open(logpath, "w")
    t0 = time.time()
    print("make mutate: %d mutants; copy of the tree in %s (refreshed: %d files), build in %s, log %s"
          % (len(mutants), src, sync_copy(src), bld, logpath))
    sys.stdout.flush()
    if not build(src, bld, log):
        print("make mutate: the unmutated tree does not build; see %s" % logpath)
        return 2
    # The listed tests must pass without any mutant.
    baseline = []
    for m in mutants:
        for t in m.tests:
            if t not in baseline:
                baseline.append(t)
    print("make mutate: %d listed tests on the unmutated tree first" % len(baseline))
    sys.stdout.flush()
    bad = [t for t in baseline if not run_test(t, src, bld, log)]
    if bad:
        print("make mutate: these tests fail without any mutant, so they cannot judge one: %s (see %s)"
              % (", ".join(bad), logpath))
        return 2
    rows, failed = [], 0
    for k, m in enumerate(mutants, 1):
        t1 = time.time()
        text, why = apply(m, src)
        if text is None:
            res = "STALE (%s)" % why
        else:
            try:
                if not build(src, bld, log):
                    res = "BROKEN (does not build)"
                elif args.full:
                    killers = full_run(m.tests, src, bld, log)
                    listed = [t for t in m.tests if t in killers or any(
                        t.split(":", 1)[-1] in x or (t.split(":", 1)[-1].split("::")[0] in x and "pytest exit" in x)
                        for x in killers)]
                    res = ("killed by %s" % ", ".join(killers)) if killers else "SURVIVED"
                    if killers and not listed:
                        res += " (none of the listed tests: %s)" % " ".join(m.tests)
                else:
                    res = "SURVIVED"
                    for t in m.tests:
                        if not run_test(t, src, bld, log):
                            res = "killed by %s" % t
                            break
            finally:
                restore(m, src, text)
        if not res.startswith("killed"):
            failed += 1
        rows.append((m.id, m.what, res))
        print("[%2d/%d] %-36s %s (%.0f s)" % (k, len(mutants), m.id, res, time.time() - t1))
        sys.stdout.flush()
    # Leave the copy's build matching the unmutated sources.
    build(src, bld, log)
    out = table(rows)
    with open(os.path.join(args.build_dir, "mutate-table.md"), "w") as f:
        f.write(out + "\n")
    print()
    print(out)
    print()
    print("make mutate: %d of %d mutants killed%s in %.0f s (table in %s)"
          % (len(rows) - failed, len(rows), "" if not failed else "; %d not killed" % failed, time.time() - t0,
             os.path.join(args.build_dir, "mutate-table.md")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
