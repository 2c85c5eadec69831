"""optim.torch.LAMB and LARS against the reference they follow, timm's Lamb
and Lars (timm/optim/lamb.py, lars.py), transcribed here from its step with
torch operations: once in float64 from our float32 state, step by step (so
that one step of float arithmetic is compared with the same step in exact
arithmetic; every option), and once in float32 alongside ours for 300 steps.
The trust ratios are per-tensor norms computed by liboptim inside the step;
a tensor of 9001 elements spans two of its reduction blocks.
"""
import io
import itertools

import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_harness import Grads, leaves, make_params, set_grads
from torch_ref64 import rel_err

SHAPES = [(), (7,), (3, 5), (40, 25), (9001,)]
SHAPES_SMALL = [(), (7,), (3, 5), (40, 25), (300,)]  # the step-by-step tests: many cases, kept quick
STEPS = 200
STEPS_BY_STEP = 60


def _cases(**axes):
    names = sorted(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def _ids(cases):
    return [",".join("%s=%s" % kv for kv in sorted(c.items())) for c in cases]


# ---- the references: timm's steps, transcribed -----------------------------------------


@torch.no_grad()
def lamb_reference_step(params, states, group_state, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6,
                        weight_decay=0.01, grad_averaging=True, max_grad_norm=1.0, trust_clip=False,
                        always_adapt=False, maximize=False):
    """timm.optim.Lamb.step (single-tensor path), transcribed with torch ops; maximize (an optim
    extra) negates the gradient first."""
    grads = [(-p.grad if maximize else p.grad) for p in params if p.grad is not None]
    clip = None
    if max_grad_norm is not None:
        norms = [torch.linalg.vector_norm(g) for g in grads]
        global_norm = torch.linalg.vector_norm(torch.stack(norms))
        clip = (global_norm / max_grad_norm).clamp_(min=1.0)
    beta1, beta2 = betas
    beta3 = 1 - beta1 if grad_averaging else 1.0
    group_state["step"] = group_state.get("step", 0) + 1
    step = group_state["step"]
    if bias_correction:
        bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    else:
        bias_correction1, bias_correction2 = 1.0, 1.0
    k = 0
    for p in params:
        if p.grad is None:
            continue
        grad = grads[k]
        k += 1
        if clip is not None:
            grad = grad / clip
        state = states.setdefault(p, {})
        if len(state) == 0:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=beta3)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / (bias_correction2 ** 0.5)).add_(eps)
        update = (exp_avg / bias_correction1).div_(denom)
        if weight_decay != 0:
            update.add_(p, alpha=weight_decay)
        if weight_decay != 0 or always_adapt:
            w_norm = p.norm(2.0)
            g_norm = update.norm(2.0)
            one = torch.ones((), dtype=p.dtype)
            trust_ratio = torch.where(w_norm > 0, torch.where(g_norm > 0, w_norm / g_norm, one), one)
            if trust_clip:
                trust_ratio = torch.clamp(trust_ratio, max=1.0)
            update.mul_(trust_ratio)
        p.add_(update, alpha=-lr)


@torch.no_grad()
def lars_reference_step(params, states, lr=1.0, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                        trust_coeff=0.001, eps=1e-8, trust_clip=False, always_adapt=False, maximize=False):
    """timm.optim.Lars.step, transcribed with torch ops; maximize negates the gradient first."""
    for p in params:
        if p.grad is None:
            continue
        grad = -p.grad if maximize else p.grad
        if weight_decay != 0 or always_adapt:
            w_norm = p.norm(2.0)
            g_norm = grad.norm(2.0)
            trust_ratio = trust_coeff * w_norm / (g_norm + w_norm * weight_decay + eps)
            one = torch.ones((), dtype=p.dtype)
            trust_ratio = torch.where(w_norm > 0, torch.where(g_norm > 0, trust_ratio, one), one)
            if trust_clip:
                trust_ratio = torch.clamp(trust_ratio / lr, max=1.0)
            grad = grad.add(p, alpha=weight_decay).mul_(trust_ratio)
        if momentum != 0:
            param_state = states.setdefault(p, {})
            if "momentum_buffer" not in param_state:
                buf = param_state["momentum_buffer"] = torch.clone(grad).detach()
            else:
                buf = param_state["momentum_buffer"]
                buf.mul_(momentum).add_(grad, alpha=1. - dampening)
            if nesterov:
                grad = grad.add(buf, alpha=momentum)
            else:
                grad = buf
        p.add_(grad, alpha=-lr)


def _f64(ps):
    return [torch.tensor(np.asarray(p.detach().numpy(), dtype=np.float64), requires_grad=True) for p in ps]


# ---- defaults ---------------------------------------------------------------------------


def test_defaults_are_timms():
    opt = ot.LAMB([torch.zeros(3, requires_grad=True)])
    g = opt.param_groups[0]
    assert (g["lr"], g["bias_correction"], g["betas"], g["eps"], g["weight_decay"], g["trust_clip"],
            g["always_adapt"], g["clip_grad_norm"]) == (1e-3, True, (0.9, 0.999), 1e-6, 0.01, False, False,
                                                         (1.0, 2.0))
    opt = ot.LARS([torch.zeros(3, requires_grad=True)])
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"], g["trust_coeff"], g["eps"],
            g["trust_clip"], g["always_adapt"]) == (1.0, 0, 0, 0, False, 0.001, 1e-8, False, False)


def test_refusals_name_the_argument():
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match="grad_averaging"):
        ot.LAMB(p, grad_averaging=False)
    with pytest.raises(ValueError, match="max_grad_norm"):
        ot.LAMB(p, clip_grad_norm=2.0)
    with pytest.raises(ValueError, match="nesterov"):
        ot.LARS(p, nesterov=True)
    with pytest.raises(ValueError, match="trust_coeff"):
        ot.LARS(p, trust_coeff=-1.0)
    with pytest.raises(TypeError):
        ot.LAMB([torch.zeros(3, dtype=torch.complex64, requires_grad=True)])


# ---- float64 transcription, step by step, every option -----------------------------------


def _step_by_step(rng, seed, make, ref_step, slots, kw, steps=STEPS, tol=2e-5):
    """Each step: copy our float32 parameters and state to float64, run the
    reference's step there on the same gradients, compare with our step."""
    p0 = make_params(rng, SHAPES_SMALL)
    po = leaves(p0)
    groups = [dict(params=po[:3]), dict(params=po[3:])]
    opt = make(groups)
    grads = Grads(rng, SHAPES_SMALL)
    group_steps = [dict(), dict()]
    worst = 0.0
    for t in range(steps):
        g = grads.next()
        set_grads(po, g)
        pr = _f64(po)
        states = {}
        floors = [float(np.abs(b.detach().numpy()).mean()) for b in pr]
        for a, b in zip(po, pr):
            b.grad = torch.tensor(np.asarray(a.grad.numpy(), dtype=np.float64))
            if a in opt.state:
                states[b] = {k: torch.tensor(np.asarray(opt.state[a][k].numpy(), dtype=np.float64))
                             for k in slots if opt.state[a].get(k) is not None}
        sfloors = {(b, k): float(v.abs().mean()) for b, st in states.items() for k, v in st.items()}
        for gi, (lo, hi) in enumerate(((0, 3), (3, len(po)))):
            gk = dict(kw)
            if gi == 1:
                gk.update(ref_group1(kw))
            if "max_grad_norm" in gk:
                # timm clips by the norm over every group: done once, by hand, over all of them
                gk.pop("max_grad_norm")
            if ref_step is lamb_reference_step:
                ref_step(pr[lo:hi], states, group_steps[gi], max_grad_norm=None, **gk)
            else:
                ref_step(pr[lo:hi], states, **gk)
        opt.step()
        for i, (a, b) in enumerate(zip(po, pr)):
            # floors: an element's error is judged against the tensor's magnitude before the step too
            # (a value that cancels to near 0 carries the rounding of the terms it came from)
            e = rel_err(a.detach().numpy(), b.detach().numpy(), floors[i])
            worst = max(worst, e)
            assert e <= tol, "seed %d, step %d, tensor %d: param error %.3g" % (seed, t, i, e)
            for k in slots:
                if b in states and k in states[b]:
                    e = rel_err(opt.state[a][k].numpy(), states[b][k].numpy(), sfloors.get((b, k), 0.0))
                    assert e <= tol, "seed %d, step %d, tensor %d: %s error %.3g" % (seed, t, i, k, e)
    return worst


def ref_group1(kw):
    """Group 1's options in the step-by-step tests: another lr and decay, and
    the decay off where the case has one (the usual exclusion of biases)."""
    return dict(lr=kw.get("lr", 1e-3) * 0.5, weight_decay=0.0 if kw.get("weight_decay", 0) else 0.125)


# Every option's values, alone and with the trust ratio on and off (the C suite runs every
# combination against its own float64 reference: rules_vs_reference).
_LAMB_AXES = ("weight_decay", "always_adapt", "trust_clip", "bias_correction", "maximize")
LAMB_CASES = [dict(zip(_LAMB_AXES, v)) for v in [
    (0.125, False, False, True, False), (0.125, False, True, True, True), (0.125, True, False, False, False),
    (0.0, True, True, True, False), (0.0, True, False, False, True), (0.0, False, False, True, False),
    (0.125, True, True, False, True), (0.0, False, True, False, False)]]
@pytest.mark.parametrize("kw", LAMB_CASES, ids=_ids(LAMB_CASES))
def test_lamb_vs_timm_float64_step_by_step(rng, seed, kw):
    kw = dict(kw, lr=1e-2)
    g1 = ref_group1(kw)

    def make(groups):
        groups[1].update(g1)
        return ot.LAMB(groups, max_grad_norm=None, **kw)

    _step_by_step(rng, seed, make, lamb_reference_step, ("exp_avg", "exp_avg_sq"), kw, steps=STEPS_BY_STEP)


_LARS_AXES = ("weight_decay", "always_adapt", "trust_clip", "momentum", "nesterov", "maximize", "dampening")
LARS_CASES = [dict(zip(_LARS_AXES, v)) for v in [
    (0.125, False, False, 0.9, False, False, 0.0), (0.125, False, True, 0.9, True, False, 0.0),
    (0.0, True, False, 0.9, True, True, 0.0), (0.0, True, True, 0.0, False, False, 0.0),
    (0.0, False, False, 0.9, False, False, 0.0), (0.125, True, True, 0.9, False, True, 0.3),
    (0.125, False, False, 0.0, False, True, 0.0), (0.0, False, True, 0.0, False, False, 0.0)]]


@pytest.mark.parametrize("kw", LARS_CASES, ids=_ids(LARS_CASES))
def test_lars_vs_timm_float64_step_by_step(rng, seed, kw):
    kw = dict(kw, lr=0.5, trust_coeff=0.02)
    g1 = ref_group1(kw)

    def make(groups):
        groups[1].update(g1)
        return ot.LARS(groups, **kw)

    _step_by_step(rng, seed, make, lars_reference_step, ("momentum_buffer",), kw, steps=STEPS_BY_STEP)


# ---- float32, alongside timm's code for 300 steps -------------------------------------------


def _alongside(rng, seed, ours, ref_step, kw, slots, tol):
    p0 = make_params(rng, SHAPES)
    pt, po = leaves(p0), leaves(p0)
    opt = ours(po)
    states, group_state = {}, {}
    grads = Grads(rng, SHAPES)
    worst = 0.0
    for t in range(STEPS):
        g = grads.next()
        set_grads(pt, g)
        set_grads(po, g)
        if ref_step is lamb_reference_step:
            ref_step(pt, states, group_state, **kw)
        else:
            ref_step(pt, states, **kw)
        opt.step()
        for a, b in zip(po, pt):
            worst = max(worst, rel_err(a.detach().numpy(), b.detach().numpy()))
    for a, b in zip(po, pt):
        for k in slots:
            if k in states.get(b, {}):
                assert rel_err(opt.state[a][k].numpy(), states[b][k].numpy()) <= tol
    assert worst <= tol, "seed %d: vs timm's code in float32, worst %.3g" % (seed, worst)
    return worst


def test_lamb_vs_timm_code_float32_with_its_defaults(rng, seed):
    """timm's defaults, max_grad_norm=1.0 included (its factor 1 / max(1, norm) against torch's
    clip_grad_norm_ factor, 1 / (norm + 1e-6): the difference stays within the tolerance)."""
    kw = dict(lr=1e-3, weight_decay=0.01)
    _alongside(rng, seed, lambda ps: ot.LAMB(ps, **kw), lamb_reference_step, dict(kw, max_grad_norm=1.0),
               ("exp_avg", "exp_avg_sq"), 2e-5)


def test_lars_vs_timm_code_float32(rng, seed):
    kw = dict(lr=0.5, momentum=0.9, weight_decay=1e-4, trust_coeff=0.001, nesterov=True)
    _alongside(rng, seed, lambda ps: ot.LARS(ps, **kw), lars_reference_step, kw, ("momentum_buffer",), 2e-5)


# ---- the trust ratio's effect, exactly -------------------------------------------------------


def test_lamb_first_step_moves_each_tensor_by_lr_times_its_norm():
    """With the trust ratio and no decay, the first update of every tensor is u = +-1 / (1 + eps') per
    element scaled to ||p|| / ||u||: each tensor moves by lr * ||p||, whatever its gradient's scale."""
    rng = np.random.default_rng(7)
    ps = [torch.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in ((50,), (9001,))]
    before = [p.detach().clone() for p in ps]
    opt = ot.LAMB(ps, lr=0.01, weight_decay=0.0, always_adapt=True, max_grad_norm=None)
    for p, scale in zip(ps, (1e-3, 1e3)):
        p.grad = torch.tensor(rng.standard_normal(p.shape).astype(np.float32)) * scale
    opt.step()
    for p, b in zip(ps, before):
        moved = float((p.detach().double() - b.double()).norm())
        assert abs(moved - 0.01 * float(b.double().norm())) <= 1e-5 * moved


def test_lars_zero_weights_step_like_sgd():
    """||p|| = 0: the trust ratio is 1 (timm's torch.where), so the step is SGD's."""
    p = torch.zeros(1000, requires_grad=True)
    q = torch.zeros(1000, requires_grad=True)
    g = torch.linspace(-1, 1, 1000)
    opt = ot.LARS([p], lr=0.1, weight_decay=0.5)
    sgd = torch.optim.SGD([q], lr=0.1, weight_decay=0.5)
    p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    sgd.step()
    assert torch.equal(p, q)


# ---- state_dict round trip -----------------------------------------------------------------


@pytest.mark.parametrize("cls,kw,keys", [
    (ot.LAMB, dict(lr=1e-2, weight_decay=0.125), {"step", "exp_avg", "exp_avg_sq"}),
    (ot.LARS, dict(lr=0.5, momentum=0.9, weight_decay=1e-3), {"momentum_buffer"}),
])
def test_state_dict_resumes_bit_for_bit(rng, cls, kw, keys):
    p0 = make_params(rng, SHAPES)
    pa, pb = leaves(p0), leaves(p0)
    groups = lambda ps: [dict(params=ps[:2], weight_decay=0.0), dict(params=ps[2:])]
    a, b = cls(groups(pa), **kw), cls(groups(pb), **kw)
    grads = Grads(rng, SHAPES)
    gs = [grads.next() for _ in range(40)]
    for g in gs[:20]:
        set_grads(pa, g)
        a.step()
        set_grads(pb, g)
        b.step()
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    pc = [p.detach().clone().requires_grad_(True) for p in pb]
    c = cls(groups(pc), **kw)
    c.load_state_dict(torch.load(buf))
    assert set(c.state[pc[3]].keys()) == keys
    for g in gs[20:]:
        set_grads(pa, g)
        a.step()
        set_grads(pc, g)
        c.step()
    for x, y in zip(pa, pc):
        assert torch.equal(x, y)
        for k in keys:
            assert torch.equal(torch.as_tensor(a.state[x][k]), torch.as_tensor(c.state[y][k]))


def test_threads_do_not_change_bits(rng):
    """The norms are fixed-block reductions: one thread and several give the same bits."""
    p0 = make_params(rng, [(40001,), (9000,)])
    runs = []
    for threads in (1, 2):
        ps = leaves(p0)
        opt = ot.LAMB(ps, lr=1e-2, always_adapt=True)
        opt.set_threads(threads)
        grads = Grads(np.random.default_rng(3), [(40001,), (9000,)])
        for _ in range(10):
            set_grads(ps, grads.next())
            opt.step()
        runs.append([p.detach().clone() for p in ps])
    for x, y in zip(*runs):
        assert torch.equal(x, y)

