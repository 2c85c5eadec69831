"""Bits, not tolerances: optim.torch against torch.optim (torch 1.13, its
default CPU path) on float32 tensors, every element of every parameter after
every step and of every state tensor at several steps compared as integers.

docs/FIDELITY.md says, per rule and option, which float operations torch
performs and where they round; scripts/torch_bits_probe.py checks that
account against torch itself. Here the library is checked against torch:

 - every rule, every option torch has, as parameter groups of one optimizer
   (each group one combination; the numeric values cycle across groups), 300
   steps, on tensors of shapes (), (7,), (17,), (33,), (10, 100) in every
   group and (100003,) in two (vector bodies, tails of 8- and 16-wide
   vectors, and a tensor both libraries split across threads); the groups'
   learning rates change half-way, as a scheduler would change them;
 - torch and optim with 1 thread here, on the library's default CPU path;
   then, in a subprocess per path (OPTIM_ISA=scalar, avx2, avx512), with 2
   threads. A path this CPU or build lacks is reported as not exercised.
 - NAdam against foreach=True: torch 1.13's default single-tensor NAdam
   multiplies mu into the next product twice (fixed in torch 2.0); optim
   computes the correct formula, which 1.13's multi-tensor path computes.
 - Adamax, ASGD (with an average that starts within the run) and Rprop
   against torch 1.13's default single-tensor path.
 - AdaBound (not in torch) against its authors' algorithm restated with the
   torch operations of their reference implementation, in its order.
 - float64 tensors, the same comparisons on the default path with 1 thread:
   optim's float64 kernels stepped through the C API (optim.torch takes
   float32 only); tests/test_paths.c holds every other path and thread
   count to the same float64 bits.

Gradients are fresh random numbers each step (a fixed offset per element plus
noise, at a scale per tensor), from a generator seeded with the test's seed.
"""
import math
import os
import subprocess
import sys

import ctypes

import numpy as np
import pytest
import torch

import optim.torch as ot
from optim import _capi, _constants, _core
from optim.torch import _groups as _ot_groups

SHAPES = [(), (7,), (17,), (33,), (10, 100)]
BIG = (100003,)
STEPS = 300
STATE_AT = (1, 2, 3, 10, 150, STEPS)
# Steps of each rule in the per-path runs (test_bits_every_path_two_threads): the C suite compares every path
# with the scalar one bit for bit over every variant (c.paths_bit_identical); these runs show that each path,
# driven by the binding on 2 threads, gives torch's bits, which 100 steps of every rule do as well as 300.
PATH_STEPS = 100
SCALES = (1.0, 0.05, 4.0, 0.5)


def _cycle(values, i):
    return values[i % len(values)]


def _product(**axes):
    out = [{}]
    for name, values in axes.items():
        out = [dict(o, **{name: v}) for o in out for v in values]
    return out


class AdaBoundRef(torch.optim.Optimizer):
    """AdaBound / AMSBound (Luo et al. 2019) with the torch operations of the
    authors' reference implementation (adabound 0.0.5), in its order, for the
    options optim.torch.AdaBound shares with it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0,
                 amsbound=False):
        super().__init__(params, dict(lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps,
                                      weight_decay=weight_decay, amsbound=amsbound))
        self.base_lrs = [g["lr"] for g in self.param_groups]

    @torch.no_grad()
    def step(self):
        for group, base_lr in zip(self.param_groups, self.base_lrs):
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsbound"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["amsbound"]:
                    torch.max(state["max_exp_avg_sq"], state["exp_avg_sq"], out=state["max_exp_avg_sq"])
                    denom = state["max_exp_avg_sq"].sqrt().add_(group["eps"])
                else:
                    denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                final_lr = group["final_lr"] * group["lr"] / base_lr
                lower = final_lr * (1 - 1 / (group["gamma"] * t + 1))
                upper = final_lr * (1 + 1 / (group["gamma"] * t))
                s = torch.full_like(denom, step_size)
                s.div_(denom).clamp_(lower, upper).mul_(state["exp_avg"])
                p.add_(-s)


def _groups(rule):
    """(group option dicts, torch class, extra torch arguments) of a rule."""
    g = []
    if rule == "SGD":
        mom = [dict(momentum=0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.3),
               dict(momentum=0.9, nesterov=True)]
        for i, c in enumerate(_product(m=mom, weight_decay=[0, 1e-2], maximize=[False, True])):
            m = c.pop("m")
            g.append(dict(c, lr=_cycle([0.0123, 0.05, 0.3], i), **m))
        return g, torch.optim.SGD, {}
    if rule == "Adagrad":
        for i, c in enumerate(_product(lr_decay=[0, 0.01], weight_decay=[0, 1e-2],
                                       initial_accumulator_value=[0, 0.1], maximize=[False, True])):
            g.append(dict(c, lr=_cycle([0.05, 0.01], i), eps=_cycle([1e-10, 1e-3, 0.1], i)))
        return g, torch.optim.Adagrad, {}
    if rule == "RMSprop":
        for i, c in enumerate(_product(momentum=[0, 0.9], centered=[False, True], weight_decay=[0, 1e-2],
                                       maximize=[False, True])):
            g.append(dict(c, lr=_cycle([0.01, 0.003], i), alpha=_cycle([0.99, 0.9, 0.5], i),
                          eps=_cycle([1e-8, 1e-3], i // 2)))
        return g, torch.optim.RMSprop, {}
    if rule == "Adadelta":
        for i, c in enumerate(_product(rho=[0.9, 0.5], weight_decay=[0, 1e-2], maximize=[False, True])):
            g.append(dict(c, lr=_cycle([1.0, 0.3, 2.0], i), eps=_cycle([1e-6, 1e-4, 1e-3], i // 2)))
        return g, torch.optim.Adadelta, {}
    if rule in ("Adam", "AdamW"):
        wds = [0, 1e-2] if rule == "Adam" else [1e-2, 0.1]
        for i, c in enumerate(_product(amsgrad=[False, True], maximize=[False, True], weight_decay=wds)):
            g.append(dict(c, lr=_cycle([1e-2, 1e-3], i), betas=_cycle([(0.9, 0.999), (0.8, 0.99), (0.5, 0.9)], i),
                          eps=_cycle([1e-8, 1e-3], i // 2)))
        return g, getattr(torch.optim, rule), {}
    if rule == "RAdam":
        for i, c in enumerate(_product(weight_decay=[0, 1e-2], betas=[(0.9, 0.999), (0.8, 0.99), (0.5, 0.9)])):
            g.append(dict(c, lr=_cycle([1e-2, 1e-3], i), eps=_cycle([1e-8, 1e-3], i // 2)))
        return g, torch.optim.RAdam, dict(foreach=False)
    if rule == "NAdam":
        for i, c in enumerate(_product(weight_decay=[0, 1e-2], momentum_decay=[4e-3, 2e-2],
                                       betas=[(0.9, 0.999), (0.8, 0.99)])):
            g.append(dict(c, lr=_cycle([2e-3, 1e-2], i), eps=_cycle([1e-8, 1e-3, 0.1], i)))
        return g, torch.optim.NAdam, dict(foreach=True)
    if rule == "AdaBound":
        for i, c in enumerate(_product(weight_decay=[0, 1e-2], amsbound=[False, True],
                                       bounds=[dict(), dict(final_lr=0.05, gamma=0.1)])):
            b = c.pop("bounds")
            g.append(dict(c, lr=_cycle([1e-2, 1e-3], i), betas=_cycle([(0.9, 0.999), (0.8, 0.99)], i // 4), **b))
        return g, AdaBoundRef, {}
    if rule == "Adamax":
        for i, c in enumerate(_product(weight_decay=[0, 1e-2], maximize=[False, True])):
            g.append(dict(c, lr=_cycle([2e-3, 1e-2], i // 2), betas=_cycle([(0.9, 0.999), (0.8, 0.99), (0.5, 0.9)], i),
                          eps=_cycle([1e-8, 1e-3, 0.1], i)))
        return g, torch.optim.Adamax, {}
    if rule == "ASGD":
        # t0 = 20: the average starts within the run (the default 1e6 keeps ax = p).
        for i, c in enumerate(_product(t0=[1e6, 20], weight_decay=[0, 1e-2], maximize=[False, True])):
            g.append(dict(c, lr=_cycle([1e-2, 0.05, 3e-3], i), lambd=_cycle([1e-4, 0.05, 0.3], i),
                          alpha=_cycle([0.75, 1.0, 0.5], i // 2)))
        return g, torch.optim.ASGD, {}
    if rule == "Rprop":
        for i, c in enumerate(_product(etas=[(0.5, 1.2), (0.3, 1.5)], step_sizes=[(1e-6, 50), (1e-3, 0.02)],
                                       maximize=[False, True])):
            g.append(dict(c, lr=_cycle([1e-2, 0.05, 1e-3], i)))
        return g, torch.optim.Rprop, {}
    raise ValueError(rule)


RULES = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "RAdam", "NAdam", "AdaBound", "Adamax", "ASGD",
         "Rprop"]


def _int_view(t):
    t = t.detach()
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _differ(what, ours, theirs):
    """None if the two tensors have the same bits, else a description."""
    if ours is None or theirs is None:  # SGD's momentum_buffer without momentum
        return None if ours is None and theirs is None else "%s: %r vs torch's %r" % (what, ours, theirs)
    a, b = _int_view(ours), _int_view(theirs)
    if ours.dtype == theirs.dtype and ours.shape == theirs.shape and torch.equal(a, b):
        return None
    if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
        return "%s: %s %s vs torch's %s %s" % (what, ours.dtype, tuple(ours.shape), theirs.dtype,
                                               tuple(theirs.shape))
    bad = (a != b).reshape(-1)
    i = int(bad.nonzero()[0])
    x, y = float(ours.reshape(-1)[i]), float(theirs.reshape(-1)[i])
    ulps = int(a.reshape(-1)[i]) - int(b.reshape(-1)[i])
    return "%s: %d of %d elements differ; first at %d: %r vs torch's %r (%+d ulp)" % (
        what, int(bad.sum()), bad.numel(), i, x, y, ulps)


def run_rule(rule, seed, dtype=torch.float32, steps=STEPS, threads=1):
    """Step optim.torch and torch side by side; raise AssertionError at the
    first difference in bits. Each side's parameters are views into one
    buffer (and each side's gradients into another), so that a step's
    comparison is one torch.equal."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    groups, torch_cls, extra = _groups(rule)
    shapes = []
    for gi in range(len(groups)):
        shapes.append(SHAPES + ([BIG] if gi in (0, len(groups) - 1) else []))
    flat_shapes = [s for ss in shapes for s in ss]
    sizes = [math.prod(s) for s in flat_shapes]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    total = sum(sizes)
    p0 = torch.randn(total, generator=gen, dtype=torch.float64).to(dtype)
    offsets = (0.5 * torch.randn(total, generator=gen, dtype=torch.float64)).to(dtype)
    scales = torch.cat([torch.full((n,), _cycle(SCALES, k), dtype=dtype) for k, n in enumerate(sizes)])

    def views(flat):
        return [x.view(s) for x, s in zip(torch.split(flat, sizes), flat_shapes)]

    def side():
        flat = p0.clone()
        params = [v.requires_grad_() for v in views(flat)]
        it = iter(params)
        return flat, params, [dict(opts, params=[next(it) for _ in ss]) for opts, ss in zip(groups, shapes)]

    flat_o, po, go = side()
    flat_t, pt, gt = side()
    # Gradients: views into one buffer per side, assigned once and rewritten
    # in place each step (each side its own: torch's foreach NAdam adds
    # weight decay into them). The noise comes from a pool, scaled anew each step.
    pool = [torch.randn(total, generator=gen, dtype=torch.float64).to(dtype) for _ in range(7)]
    factors = (0.5 + torch.rand(steps + 1, generator=gen, dtype=torch.float64)).tolist()
    grad_o, grad_t = torch.empty_like(p0), torch.empty_like(p0)
    for p, v in zip(po, views(grad_o)):
        p.grad = v
    for p, v in zip(pt, views(grad_t)):
        p.grad = v
    ours = getattr(ot, rule)(go) if dtype == torch.float32 else _CFloat64(rule, go)
    theirs = torch_cls(gt, **extra)
    where = "%s seed %d, %s, %d thread(s), optim path %s" % (rule, seed, str(dtype).replace("torch.", ""), threads,
                                                             optim_path())
    owner = [gi for gi, ss in enumerate(shapes) for _ in ss]

    def name(k):
        return "group %d %s, tensor %s" % (owner[k], groups[owner[k]], flat_shapes[k])

    for t in range(1, steps + 1):
        if t == steps // 2 + 1:  # as a scheduler would: the group's lr, read at the next step
            for a, b in zip(ours.param_groups, theirs.param_groups):
                a["lr"] *= 0.37
                b["lr"] *= 0.37
        torch.add(offsets, pool[t % len(pool)], alpha=factors[t], out=grad_o).mul_(scales)
        grad_t.copy_(grad_o)
        ours.step()
        theirs.step()
        if not torch.equal(_int_view(flat_o), _int_view(flat_t)):
            bad = int((_int_view(flat_o) != _int_view(flat_t)).nonzero()[0])
            k = max(j for j in range(len(starts)) if starts[j] <= bad)
            d = _differ("%s: step %d, %s, param" % (where, t, name(k)), po[k], pt[k])
            assert False, d
        if t in STATE_AT or t == steps:
            for k in range(len(po)):
                st_o, st_t = ours.state[po[k]], theirs.state[pt[k]]
                assert set(st_o) == set(st_t), "%s: step %d, %s: state keys %s, torch's %s" % (
                    where, t, name(k), sorted(st_o), sorted(st_t))
                for key, b in st_t.items():
                    a = st_o[key]
                    if key in ("step", "mu_product", "eta", "mu"):  # scalars (optim's mu_product: float64 of the float32)
                        d = None if float(a) == float(b) else ": %r vs torch's %r" % (a, b)
                    else:
                        d = _differ("", a, b)
                    assert d is None, "%s: step %d, %s, state[%r]%s" % (where, t, name(k), key, d)


class _CFloat64:
    """optim's float64 kernels driven through the C API (optim.torch takes
    float32 tensors only), with what run_rule uses of an optimizer: the
    groups' lr, step() and state[p]. Each group's hyperparameters are the ones
    optim.torch computes for the same options (a float32 twin with one
    placeholder parameter per group builds them); the parameters and
    gradients are the float64 tensors of the groups, kept alive here for as
    long as the C object holds their addresses."""

    def __init__(self, rule, groups):
        twin = getattr(ot, rule)([dict({k: v for k, v in g.items() if k != "params"},
                                       params=[torch.zeros(1, requires_grad=True)]) for g in groups])
        c = twin._c
        self._rule = c.rule
        self._h = _core.Handle(c.rule.rule)
        self._lr_id = (ctypes.c_int * 1)(_core.hparam_id("lr"))
        self.param_groups = [{"lr": g["lr"]} for g in groups]
        self._pushed_lr = [g["lr"] for g in groups]
        self._keep = []
        self._index = {}
        self._slots = []
        self._group_of = []
        for gi, g in enumerate(groups):
            hp = _ot_groups.hparams(c, c.pushed[gi], gi, "param group")
            assert self._h.add_group(hp) == gi
            for p in g["params"]:
                assert p.dtype == torch.float64 and p.is_contiguous() and p.grad.is_contiguous()
                index = ctypes.c_size_t()
                _capi.check(_capi.optim_add_param_typed(self._h.ptr, gi, p.data_ptr(), _constants.OPTIM_FLOAT64,
                                                        p.grad.data_ptr(), _constants.OPTIM_FLOAT64, p.numel(),
                                                        None, ctypes.byref(index)), _capi.optim_errmsg(self._h.ptr))
                self._index[id(p)] = index.value
                self._slots.append(hp.slots())
                self._group_of.append(gi)
                self._keep.append((p, p.grad))
                if c.rule.rule_name == "adagrad":
                    # torch's Adagrad starts every sum at the constructor's
                    # initial_accumulator_value whatever the group says, and
                    # optim.torch writes it into the state: the twin's parameter
                    # of this group holds the value.
                    self._slot_array(index.value, 0, p.numel())[:] = float(c.slot_tensor(gi, 0).reshape(-1)[0])

    def _slot_array(self, i, s, n):
        """Slot s of parameter i as a numpy array over the C memory, None if
        not allocated or not initialized."""
        data, dtype, init = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
        _capi.check(_capi.optim_state_slot_data(self._h.ptr, i, s, ctypes.byref(data), ctypes.byref(dtype),
                                                ctypes.byref(init)), _capi.optim_errmsg(self._h.ptr))
        if not data.value or not init.value:
            return None
        assert dtype.value == _constants.OPTIM_FLOAT64, "%s: state slot %d is not float64" % (self._rule.owner, s)
        return np.ctypeslib.as_array(ctypes.cast(data.value, ctypes.POINTER(ctypes.c_double)), shape=(n,))

    def step(self):
        for gi, g in enumerate(self.param_groups):
            if g["lr"] != self._pushed_lr[gi]:
                self._h.group_set_hparams(gi, self._lr_id, (ctypes.c_double * 1)(g["lr"]))
                self._pushed_lr[gi] = g["lr"]
        _capi.check(_capi.optim_step(self._h.ptr), _capi.optim_errmsg(self._h.ptr))

    @property
    def state(self):
        return _CFloat64State(self)


class _CFloat64State:
    def __init__(self, o):
        self._o = o

    def __getitem__(self, p):
        o, rule = self._o, self._o._rule
        i = o._index[id(p)]
        out = {}
        if rule.step_kind:
            step = o._h.get_step(i)
            out["step"] = torch.tensor(float(step)) if rule.step_kind == "tensor" else step
        if "mu_product" in rule.scalar_keys:
            out["mu_product"] = torch.tensor(o._h.get_mu_product(i), dtype=torch.float64)
        if "eta" in rule.scalar_keys:  # ASGD: eta is held in C's mu_product field; mu follows from step and t0
            out["eta"] = torch.tensor(o._h.get_mu_product(i), dtype=torch.float32)
            t0 = o._h.group_get_hparam(o._group_of[i], _core.hparam_id("t0"))
            step = o._h.get_step(i)
            out["mu"] = torch.tensor(1.0 if step == 0 else 1.0 / max(1.0, step - t0), dtype=torch.float32)
        for s, name in enumerate(rule.slot_names):
            # torch's SGD stores momentum_buffer = None without momentum;
            # other rules have the keys their options use.
            if not (o._slots[i] >> s) & 1 and not (rule.rule_name == "sgd" and name == "momentum_buffer"):
                continue
            arr = o._slot_array(i, s, p.numel())
            out[name] = None if arr is None else torch.from_numpy(arr.copy()).view(p.shape)
        return out


# ---- which CPU path optim runs --------------------------------------------------------

_ISA = {"scalar": _constants.OPTIM_ISA_SCALAR, "avx2": _constants.OPTIM_ISA_AVX2,
        "avx512": _constants.OPTIM_ISA_AVX512}


def _isa_fns():
    return _capi.optim_isa_default, _capi.optim_isa_name, _capi.optim_isa_available


def optim_path():
    default, name, _ = _isa_fns()
    return name(default()).decode()


def optim_has(isa):
    _, name, available = _isa_fns()
    assert name(_ISA[isa]).decode() == isa, "optim_isa values changed: %s is not %d" % (isa, _ISA[isa])
    return bool(available(_ISA[isa]))


# ---- the tests ------------------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_bits_float32(rule, seed):
    run_rule(rule, seed)


@pytest.mark.parametrize("rule", RULES)
def test_bits_float64(rule, seed):
    """torch computes the same operations in double, fused where it fuses on
    float32 (docs/FIDELITY.md); NAdam's mu_product stays a float32 tensor.
    optim.torch takes float32 tensors only: optim's float64 kernels are
    stepped through the C API (_CFloat64) with the same groups."""
    run_rule(rule, seed, dtype=torch.float64)


_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import test_torch_bits as tb
path = tb.optim_path()
if path != sys.argv[2]:
    sys.exit("OPTIM_ISA=%s runs path %s" % (sys.argv[2], path))
for rule in tb.RULES:
    tb.run_rule(rule, int(sys.argv[3]), steps=tb.PATH_STEPS, threads=2)
print("ok", path)
"""


@pytest.mark.parametrize("isa", sorted(_ISA))
def test_bits_every_path_two_threads(isa, seed):
    """Each CPU path of the library, in a fresh process (the path is chosen
    once, from OPTIM_ISA), against torch with 2 threads."""
    if not optim_has(isa):
        pytest.skip("optim path %s not exercised: this CPU or build lacks it" % isa)
    # OMP_WAIT_POLICY=PASSIVE: OpenMP threads that wait for work sleep instead
    # of spinning. It changes no result; on a machine whose cores are busy
    # with other work, spinning threads make every one of torch's parallel
    # operations wait for a time slice (20x the time here).
    env = dict(os.environ, OPTIM_ISA=isa, OMP_WAIT_POLICY="PASSIVE")
    r = subprocess.run([sys.executable, "-c", _CHILD, os.path.dirname(os.path.abspath(__file__)), isa, str(seed)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok " + isa, \
        "OPTIM_ISA=%s (seed %d): exit %d\n%s%s" % (isa, seed, r.returncode, r.stdout, r.stderr[-3000:])
