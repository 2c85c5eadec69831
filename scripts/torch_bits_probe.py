#!/usr/bin/python3
"""torch_bits_probe.py: what torch 1.13's CPU optimizers compute, operation by
operation and rounding by rounding, checked bit for bit against torch itself.

docs/FIDELITY.md writes down, per rule and option, the sequence of float
operations torch.optim performs and where each one rounds. This script is the
evidence: it re-computes every step of every optimizer with numpy (one
correctly rounded operation at a time; fused multiply-adds through libm's
fmaf/fma, correctly rounded, in a small C helper compiled here) and compares
the parameters and every state tensor with torch's, bit for bit, after every
step. It needs no liboptim: it checks our reading of torch, not our code.

    /usr/bin/python3 scripts/torch_bits_probe.py              # everything, float32 and float64, 1 and 2 threads
    /usr/bin/python3 scripts/torch_bits_probe.py --quick      # fewer options and steps
    ATEN_CPU_CAPABILITY=default /usr/bin/python3 scripts/torch_bits_probe.py --quick
        # torch's kernels without AVX2: the probe then expects no fused operation

First the single operations the optimizers use (add with alpha, addcmul,
addcdiv, mul, div by a Python number, sqrt, a Python number divided by a
tensor, maximum) on sizes 1..40, 1000, 65537 and 100003; then each optimizer
over --steps steps on one tensor of each of those sizes (so that every vector
body, scalar tail and, with 2 threads, the split of large tensors across
threads is exercised), under every combination of its options.

Exit status 0 when every comparison is bit-identical, 1 otherwise.
"""
import argparse
import ctypes
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

SIZES = list(range(1, 41)) + [1000, 65537, 100003]

_HELPER = r"""
#include <math.h>
#include <stddef.h>
void probe_fmaf(size_t n, const float *a, const float *b, const float *c, float *o)
{ for (size_t i = 0; i < n; i++) o[i] = fmaf(a[i], b[i], c[i]); }
void probe_fma(size_t n, const double *a, const double *b, const double *c, double *o)
{ for (size_t i = 0; i < n; i++) o[i] = fma(a[i], b[i], c[i]); }
"""


def _build_helper():
    """libm's fmaf and fma are correctly rounded (one rounding of the exact
    a*b+c); -fno-builtin and -ffp-contract=off keep the compiler from doing
    anything else."""
    d = tempfile.mkdtemp(prefix="torch_bits_probe.")
    src, lib = os.path.join(d, "fma.c"), os.path.join(d, "libfma.so")
    with open(src, "w") as f:
        f.write(_HELPER)
    cc = os.environ.get("CC", "cc")
    subprocess.check_call([cc, "-O2", "-fno-builtin", "-ffp-contract=off", "-shared", "-fPIC", src, "-o", lib,
                           "-lm"])
    h = ctypes.CDLL(lib)
    shutil.rmtree(d)
    return h


_LIB = None
FUSED = True  # set from torch's CPU capability in main()


def fma(a, b, c):
    """a*b + c rounded once (torch's AVX2/AVX-512 kernels), or twice when the
    probe models the kernels without FMA (ATEN_CPU_CAPABILITY=default)."""
    a, b, c = np.broadcast_arrays(a, b, c)
    dt = np.result_type(a, b, c)
    if not FUSED:
        return (a.astype(dt) * b.astype(dt) + c.astype(dt)).astype(dt)
    a, b, c = (np.ascontiguousarray(x, dtype=dt) for x in (a, b, c))
    o = np.empty_like(a)
    fn = _LIB.probe_fmaf if dt == np.float32 else _LIB.probe_fma
    p = ctypes.c_void_p
    fn(ctypes.c_size_t(a.size), p(a.ctypes.data), p(b.ctypes.data), p(c.ctypes.data), p(o.ctypes.data))
    return o


def bits(x):
    x = np.ascontiguousarray(x)
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


def same(t, x):
    t = t.detach().numpy() if torch.is_tensor(t) else np.asarray(t)
    return t.dtype == x.dtype and np.array_equal(bits(t.ravel()), bits(x.ravel()))


# ---- single operations --------------------------------------------------------------

def check_ops(dt, rng, report):
    ok = True
    al = 0.1234567
    c_al = dt(al)
    T = lambda x: torch.from_numpy(x.copy())
    for n in SIZES:
        a, b, c = (rng.standard_normal(n).astype(dt) for _ in range(3))
        pos = np.abs(c) + dt(0.5)
        cases = {
            "x.add(y, alpha=s) = fma(y, s, x)": (torch.add(T(a), T(b), alpha=al), fma(b, c_al, a)),
            "x.mul(s)": (T(a).mul_(al), a * c_al),
            "x.div(s) (a division, not x * (1/s))": (T(a).div_(al), a / c_al),
            "x.add(s)": (T(a).add_(al), a + c_al),
            "x.addcmul(y, z, value=s) = fma(s*y, z, x)": (torch.addcmul(T(a), T(b), T(c), value=al),
                                                          fma(c_al * b, c, a)),
            "x.addcmul(y, y, value=-1) = fma(-y, y, x)": (torch.addcmul(T(a), T(b), T(b), value=-1), fma(-b, b, a)),
            "x.addcdiv(y, z, value=s) = x + (s*y)/z": (torch.addcdiv(T(a), T(b), T(pos), value=al),
                                                      a + (c_al * b) / pos),
            "x.sqrt()": (T(pos).sqrt(), np.sqrt(pos)),
            "s / x = x.reciprocal() * s": (al / T(pos), (dt(1) / pos) * c_al),
            "torch.maximum": (torch.maximum(T(a), T(b)), np.maximum(a, b)),
        }
        for name, (t, x) in cases.items():
            if not same(t, x):
                ok = False
                report("  op %-44s size %6d: differs in %d elements" % (name, n, int(np.sum(bits(t.numpy()) != bits(x)))))
    # A 0-dim float32 tensor (NAdam's mu_product, whatever the parameters' dtype) times a Python float.
    for mu in (0.9 * (1 - 0.5 * 0.96 ** 0.004), 0.123456789, 0.87654321):
        t = torch.tensor(0.7654321).mul_(mu)
        x = np.float32(0.7654321) * np.float32(mu)
        if not same(t, np.asarray(x)):
            ok = False
            report("  op float32 0-dim tensor * Python float: %r vs %r" % (float(t), float(x)))
    return ok


# ---- the optimizers, as torch 1.13 computes them ------------------------------------
# Each emulator holds flat arrays (all parameters concatenated: every operation
# is element-wise) and performs torch's operations in torch's order, one
# rounding each; c(x) is a Python float converted to the tensors' dtype, as
# torch converts a Scalar when its kernel runs. Python-side arithmetic
# (bias corrections, step sizes) is done in Python floats, as torch does.

class Emu:
    def __init__(self, p, dt, kw):
        self.p, self.dt, self.kw, self.t = p.copy(), dt, kw, 0
        self.st = {}

    def c(self, x):
        return self.dt(x)

    def grad(self, g):
        kw = self.kw
        d = -g if kw.get("maximize") else g
        if kw.get("weight_decay", 0) != 0:
            d = fma(self.p, self.c(kw["weight_decay"]), d)  # grad.add(param, alpha=weight_decay)
        return d


class SGD(Emu):
    def step(self, g):
        kw, c = self.kw, self.c
        d = self.grad(g)
        mom = kw.get("momentum", 0)
        if mom != 0:
            if "momentum_buffer" not in self.st:
                b = d.copy()
            else:  # buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                b = fma(d, c(1 - kw.get("dampening", 0)), self.st["momentum_buffer"] * c(mom))
            self.st["momentum_buffer"] = b
            d = fma(b, c(mom), d) if kw.get("nesterov") else b
        self.p = fma(d, c(-kw["lr"]), self.p)  # param.add_(d_p, alpha=-lr)


class Adagrad(Emu):
    def __init__(self, p, dt, kw):
        super().__init__(p, dt, kw)
        self.st["sum"] = np.full_like(p, self.c(kw.get("initial_accumulator_value", 0)))

    def step(self, g):
        kw, c = self.kw, self.c
        self.t += 1
        d = self.grad(g)
        clr = kw["lr"] / (1 + (self.t - 1) * kw.get("lr_decay", 0))
        s = fma(d, d, self.st["sum"])  # state_sum.addcmul_(grad, grad, value=1): (1*g)*g + sum
        self.st["sum"] = s
        std = np.sqrt(s) + c(kw.get("eps", 1e-10))
        self.p = self.p + (c(-clr) * d) / std  # param.addcdiv_(grad, std, value=-clr)


class RMSprop(Emu):
    def step(self, g):
        kw, c = self.kw, self.c
        alpha = kw.get("alpha", 0.99)
        d = self.grad(g)
        sq = fma(c(1 - alpha) * d, d, self.st.get("square_avg", np.zeros_like(d)) * c(alpha))
        self.st["square_avg"] = sq
        if kw.get("centered"):
            ga = fma(d, c(1 - alpha), self.st.get("grad_avg", np.zeros_like(d)) * c(alpha))
            self.st["grad_avg"] = ga
            avg = np.sqrt(fma(-ga, ga, sq))  # square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = np.sqrt(sq)
        avg = avg + c(kw.get("eps", 1e-8))
        mom = kw.get("momentum", 0)
        if mom > 0:  # buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
            b = self.st.get("momentum_buffer", np.zeros_like(d)) * c(mom) + d / avg
            self.st["momentum_buffer"] = b
            self.p = fma(b, c(-kw["lr"]), self.p)
        else:
            self.p = self.p + (c(-kw["lr"]) * d) / avg


class Adadelta(Emu):
    def step(self, g):
        kw, c = self.kw, self.c
        rho, eps = kw.get("rho", 0.9), c(kw.get("eps", 1e-6))
        d = self.grad(g)
        sq = fma(c(1 - rho) * d, d, self.st.get("square_avg", np.zeros_like(d)) * c(rho))
        acc = self.st.get("acc_delta", np.zeros_like(d))
        std = np.sqrt(sq + eps)
        delta = (np.sqrt(acc + eps) / std) * d
        self.st["square_avg"] = sq
        self.st["acc_delta"] = fma(c(1 - rho) * delta, delta, acc * c(rho))
        self.p = fma(delta, c(-kw.get("lr", 1.0)), self.p)


class Adam(Emu):
    decoupled = False

    def step(self, g):
        kw, c = self.kw, self.c
        self.t += 1
        b1, b2 = kw.get("betas", (0.9, 0.999))
        lr, wd = kw.get("lr", 1e-3), kw.get("weight_decay", 0)
        if self.decoupled:
            self.p = self.p * c(1 - lr * wd)  # param.mul_(1 - lr * weight_decay)
            d = -g if kw.get("maximize") else g
        else:
            d = self.grad(g)
        m = fma(d, c(1 - b1), self.st.get("exp_avg", np.zeros_like(d)) * c(b1))
        v = fma(c(1 - b2) * d, d, self.st.get("exp_avg_sq", np.zeros_like(d)) * c(b2))
        self.st["exp_avg"], self.st["exp_avg_sq"] = m, v
        step_size = lr / (1 - b1 ** self.t)
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)
        if kw.get("amsgrad"):
            v = np.maximum(self.st.get("max_exp_avg_sq", np.zeros_like(d)), v)
            self.st["max_exp_avg_sq"] = v
        denom = np.sqrt(v) / c(bc2_sqrt) + c(kw.get("eps", 1e-8))
        self.p = self.p + (c(-step_size) * m) / denom  # param.addcdiv_(exp_avg, denom, value=-step_size)


class AdamW(Adam):
    decoupled = True

    def __init__(self, p, dt, kw):
        kw = dict(kw)
        kw.setdefault("weight_decay", 1e-2)
        super().__init__(p, dt, kw)


class RAdam(Emu):
    def step(self, g):
        kw, c = self.kw, self.c
        self.t += 1
        t = self.t
        b1, b2 = kw.get("betas", (0.9, 0.999))
        lr = kw.get("lr", 1e-3)
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        d = self.grad(g)
        m = fma(d, c(1 - b1), self.st.get("exp_avg", np.zeros_like(d)) * c(b1))
        v = fma(c(1 - b2) * d, d, self.st.get("exp_avg_sq", np.zeros_like(d)) * c(b2))
        self.st["exp_avg"], self.st["exp_avg_sq"] = m, v
        mhat = m / c(bc1)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2 ** t) / bc2
        if rho_t > 5.:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            adaptive = (self.dt(1) / (np.sqrt(v) + c(kw.get("eps", 1e-8)))) * c(math.sqrt(bc2))
            self.p = self.p - ((mhat * c(lr)) * adaptive) * c(rect)  # add_(x, alpha=-1.0): one rounding
        else:
            self.p = self.p - mhat * c(lr)


class NAdam(Emu):
    """foreach=True (torch 1.13's multi-tensor path, the correct formula)."""
    single_tensor = False

    def __init__(self, p, dt, kw):
        super().__init__(p, dt, kw)
        self.mu_product = np.float32(1.0)  # torch.tensor(1.): float32 whatever the parameters' dtype

    def step(self, g):
        kw, c = self.kw, self.c
        self.t += 1
        t = self.t
        b1, b2 = kw.get("betas", (0.9, 0.999))
        lr, md = kw.get("lr", 2e-3), kw.get("momentum_decay", 4e-3)
        bc2 = 1 - b2 ** t
        mu = b1 * (1. - 0.5 * (0.96 ** (t * md)))
        mu_next = b1 * (1. - 0.5 * (0.96 ** ((t + 1) * md)))
        self.mu_product = np.float32(self.mu_product * np.float32(mu))  # mu_product.mul_(mu), float32
        d = self.grad(g)
        m = fma(d, c(1 - b1), self.st.get("exp_avg", np.zeros_like(d)) * c(b1))
        v = fma(c(1 - b2) * d, d, self.st.get("exp_avg_sq", np.zeros_like(d)) * c(b2))
        self.st["exp_avg"], self.st["exp_avg_sq"] = m, v
        mup = float(self.mu_product)
        if self.single_tensor:
            mup_next = float(np.float32(np.float32(self.mu_product * np.float32(mu)) * np.float32(mu_next)))
            denom = np.sqrt(v / c(bc2)) + c(kw.get("eps", 1e-8))
            self.p = self.p + (c(-lr * (1. - mu) / (1. - mup)) * d) / denom
            self.p = self.p + (c(-lr * mu_next / (1. - mup_next)) * m) / denom
        else:
            denom = np.sqrt(v) / c(math.sqrt(bc2)) + c(kw.get("eps", 1e-8))
            self.p = self.p + (c((lr * (1. - mu) / (1. - mup)) * -1) * d) / denom
            self.p = self.p + (c((lr * mu_next / (1. - mup * mu_next)) * -1) * m) / denom


class NAdamSingle(NAdam):
    """foreach=False, torch 1.13's default: mu multiplied into the next product twice."""
    single_tensor = True


# ---- configurations ---------------------------------------------------------------

def _grid(**axes):
    names = sorted(axes)
    return [dict(zip(names, vals)) for vals in itertools.product(*(axes[n] for n in names))]


def configs(quick):
    wds = [0, 1e-2] if quick else [0, 1e-2, 3e-4]
    out = []
    sgd_mom = [dict(momentum=0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.3),
               dict(momentum=0.9, nesterov=True)]
    for m in sgd_mom:
        for c in _grid(lr=[0.0123], weight_decay=wds, maximize=[False, True]):
            out.append(("SGD", SGD, torch.optim.SGD, dict(c, **m), {}))
    for c in _grid(lr=[0.05], lr_decay=[0, 0.01], weight_decay=wds, initial_accumulator_value=[0, 0.1],
                   eps=[1e-10, 1e-3], maximize=[False, True]):
        out.append(("Adagrad", Adagrad, torch.optim.Adagrad, c, {}))
    for c in _grid(lr=[0.01], alpha=[0.99, 0.9], eps=[1e-8, 1e-3], momentum=[0, 0.9], centered=[False, True],
                   weight_decay=wds, maximize=[False, True]):
        out.append(("RMSprop", RMSprop, torch.optim.RMSprop, c, {}))
    for c in _grid(lr=[1.0, 0.3], rho=[0.9, 0.5], eps=[1e-6, 1e-4], weight_decay=wds, maximize=[False, True]):
        out.append(("Adadelta", Adadelta, torch.optim.Adadelta, c, {}))
    for name, emu, cls in (("Adam", Adam, torch.optim.Adam), ("AdamW", AdamW, torch.optim.AdamW)):
        for c in _grid(lr=[1e-2], betas=[(0.9, 0.999), (0.8, 0.99)], eps=[1e-8, 1e-3],
                       weight_decay=wds if name == "Adam" else [1e-2, 0.1], amsgrad=[False, True],
                       maximize=[False, True]):
            out.append((name, emu, cls, c, {}))
    for c in _grid(lr=[1e-2], betas=[(0.9, 0.999), (0.8, 0.99)], eps=[1e-8, 1e-3], weight_decay=wds):
        out.append(("RAdam", RAdam, torch.optim.RAdam, c, {}))
    for c in _grid(lr=[1e-2], betas=[(0.9, 0.999), (0.8, 0.99)], eps=[1e-8, 1e-3], weight_decay=wds,
                   momentum_decay=[4e-3, 2e-2]):
        out.append(("NAdam(foreach=True)", NAdam, torch.optim.NAdam, c, dict(foreach=True)))
        out.append(("NAdam(foreach=False)", NAdamSingle, torch.optim.NAdam, c, dict(foreach=False)))
    if quick:  # every option still appears, on fewer combinations
        out = [o for o in out if not o[0].startswith("NAdam")][::5] + [o for o in out if o[0].startswith("NAdam")][::5]
    return out


def run_config(name, emu_cls, torch_cls, kw, extra, dt, steps, rng):
    tdt = torch.float32 if dt == np.float32 else torch.float64
    p0 = [rng.standard_normal(n).astype(dt) for n in SIZES]
    offsets = [rng.standard_normal(n) * 0.5 for n in SIZES]
    scales = [(1.0, 0.05, 4.0)[i % 3] for i in range(len(SIZES))]
    pt = [torch.tensor(x, dtype=tdt, requires_grad=True) for x in p0]
    opt = torch_cls(pt, **kw, **extra)
    emu = emu_cls(np.concatenate(p0), dt, kw)
    for t in range(1, steps + 1):
        gs = [((off + rng.standard_normal(off.shape)) * s).astype(dt) for off, s in zip(offsets, scales)]
        for p, g in zip(pt, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        emu.step(np.concatenate(gs))
        got = np.concatenate([p.detach().numpy() for p in pt])
        if not same(got, emu.p):
            return "step %d: parameters differ in %d of %d elements" % (
                t, int(np.sum(bits(got) != bits(emu.p))), got.size)
        for key, x in emu.st.items():
            st = np.concatenate([opt.state[p][key].numpy() for p in pt])
            if not same(st, x):
                return "step %d: state %r differs in %d elements" % (t, key, int(np.sum(bits(st) != bits(x))))
        if isinstance(emu, NAdam):
            mp = opt.state[pt[0]]["mu_product"]
            if not (mp.dtype == torch.float32 and float(mp) == float(emu.mu_product)):
                return "step %d: mu_product %r vs %r" % (t, mp, emu.mu_product)
    return None


def main():
    global _LIB, FUSED
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of the option combinations, 100 steps")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 300, --quick 100)")
    ap.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated (default 1,2)")
    ap.add_argument("--rule", default=None,
                    help="only optimizers whose name starts with one of these comma-separated prefixes")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    steps = args.steps or (100 if args.quick else 300)
    _LIB = _build_helper()
    cap = torch.__config__.show().split("CPU capability usage:")[1].split("\n")[0].strip()
    FUSED = cap not in ("DEFAULT", "NO AVX")
    print("torch %s, CPU capability %s: expecting %s multiply-adds" % (torch.__version__, cap,
                                                                      "fused" if FUSED else "unfused"))
    dts = {"float32": [np.float32], "float64": [np.float64], "both": [np.float32, np.float64]}[args.dtype]
    failures = 0
    rng = np.random.default_rng(args.seed)
    for th in [int(x) for x in args.threads.split(",")]:
        torch.set_num_threads(th)
        for dt in dts:
            lines = []
            if not check_ops(dt, rng, lines.append):
                failures += 1
            print("ops, %s, %d thread(s): %s" % (dt.__name__, th, "bit-identical" if not lines else "DIFFER"))
            for ln in lines:
                print(ln)
            for name, emu, cls, kw, extra in configs(args.quick):
                if args.rule and not name.startswith(tuple(args.rule.split(","))):
                    continue
                t0 = time.time()
                err = run_config(name, emu, cls, kw, extra, dt, steps, rng)
                tag = "bit-identical" if err is None else "DIFFERS: " + err
                if err is not None:
                    failures += 1
                print("%-20s %s, %d thread(s), %d steps, %s: %s (%.1fs)" % (
                    name, dt.__name__, th, steps, kw, tag, time.time() - t0), flush=True)
    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
