"""Fidelity of optim.torch.Adafactor and optim.torch.Muon to torch 2.x's torch.optim.Adafactor
(torch/optim/_adafactor.py) and torch.optim.Muon (torch/optim/_muon.py), as tests written from torch's
behaviour would check it: constructor signatures (positional order, tensor lr), state layout and dtypes,
state_dict loading (a float 'step' as torch's __setstate__ converts it), zero_grad, closures, and a
free-running float64 trajectory of Adafactor against our own float64 transcription of the reference's step
(no resynchronisation between steps). torch 1.13 here has neither class; the reference below is written
from reading torch's source, not copied."""
import itertools
import math

import pytest
import torch

import optim.torch as ot


# ---- Adafactor: our float64 transcription of _single_tensor_adafactor ---------------------------------


def _ada_ref_step(params, grads, states, *, lr, beta2_decay, eps, d, weight_decay, maximize):
    """One step of a whole group (eps1 None: the machine epsilon of the first stepped parameter's dtype,
    kept for the rest of the group)."""
    eps1, eps2 = eps
    for p, g, st in zip(params, grads, states):
        if g is None:
            continue
        if maximize:
            g = -g
        if eps1 is None:
            eps1 = torch.finfo(p.dtype).eps
        if not st:
            st["step"] = 0.0
            if g.dim() > 1:
                st["row_var"] = torch.zeros(g.shape[:-1] + (1,), dtype=g.dtype)
                st["col_var"] = torch.zeros(g.shape[:-2] + (1, g.shape[-1]), dtype=g.dtype)
            else:
                st["variance"] = torch.zeros_like(g)
        st["step"] += 1.0
        t = st["step"]
        w = t ** beta2_decay
        rho = min(lr, 1.0 / math.sqrt(t))
        alpha = max(eps2, p.norm().item() / math.sqrt(p.numel())) * rho
        if weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        if g.dim() > 1:
            row_mean = (g * g).mean(dim=-1, keepdim=True)
            col_mean = (g * g).mean(dim=-2, keepdim=True)
            st["row_var"].add_(w * (row_mean - st["row_var"]))
            st["col_var"].add_(w * (col_mean - st["col_var"]))
            v = st["row_var"] @ st["col_var"]
            v = v / st["row_var"].mean(dim=-2, keepdim=True).clamp(min=eps1)
        else:
            st["variance"].add_(w * (g * g - st["variance"]))
            v = st["variance"].clone()
        u = v.clamp(min=eps1 * eps1).rsqrt() * g
        denom = max(1.0, u.norm().item() / (math.sqrt(u.numel()) * d))
        p.add_(u, alpha=-alpha / denom)


ADA_SHAPES = [(), (1,), (9,), (6, 5), (1, 7), (7, 1), (3, 4, 5), (2, 3, 4, 5)]
ADA_CASES = [dict(lr=lr, beta2_decay=b, eps=e, d=dd, weight_decay=wd, maximize=m)
             for lr, b, e, dd, wd, m in [
                 (1e-2, -0.8, (None, 1e-3), 1.0, 0.0, False),
                 (0.3, -0.5, (1e-6, 1e-2), 2.0, 0.05, True),
                 (0.05, -1.0, (None, 0.5), 1.5, 0.1, False),
                 (1.0, -0.8, (1e-3, 0.0), 4.0, 0.0, True)]]


@pytest.mark.parametrize("case", range(len(ADA_CASES)))
def test_adafactor_free_running_float64_trajectory(case):
    """150 steps with no resynchronisation: our float64 parameters and state stay on the reference's
    trajectory (float64 rounding; optim sums in double in another order) for 0-D to 4-D shapes."""
    opts = ADA_CASES[case]
    gen = torch.Generator().manual_seed(100 + case)
    ps = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in ADA_SHAPES]
    refs = [p.detach().clone() for p in ps]
    states = [{} for _ in ps]
    opt = ot.Adafactor(ps, **opts)
    for t in range(150):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) * (0.1 + t % 3) for p in ps]
        if t % 7 == 3:
            grads[2] = None  # a parameter without a gradient is not stepped (its step count stays)
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
        _ada_ref_step(refs, grads, states, **opts)
        for i, (p, r) in enumerate(zip(ps, refs)):
            assert torch.allclose(p.detach(), r, rtol=1e-9, atol=1e-12), (opts, ADA_SHAPES[i], t)
    for p, st in zip(ps, states):
        mine = opt.state[p]
        assert float(mine["step"]) == st["step"]
        for k in ("row_var", "col_var", "variance"):
            assert (k in mine) == (k in st)
            if k in st:
                assert mine[k].shape == st[k].shape and mine[k].dtype == torch.float64
                assert torch.allclose(mine[k], st[k], rtol=1e-9, atol=1e-15)


def test_adafactor_state_layout_as_torch():
    ps = [torch.zeros(s, requires_grad=True) for s in [(), (4,), (3, 5), (2, 3, 4, 5)]]
    spare = torch.zeros(3, requires_grad=True)
    opt = ot.Adafactor([{"params": ps}, {"params": [spare]}])
    for p in ps:
        p.grad = torch.ones(p.shape)
    opt.step()
    assert spare not in opt.state or len(opt.state[spare]) == 0  # no gradient: no state, as torch
    expect = [{"variance": ()}, {"variance": (4,)}, {"row_var": (3, 1), "col_var": (1, 5)},
              {"row_var": (2, 3, 4, 1), "col_var": (2, 3, 1, 5)}]
    for p, e in zip(ps, expect):
        st = opt.state[p]
        assert set(st) == {"step"} | set(e)
        assert torch.is_tensor(st["step"]) and st["step"].dim() == 0 and st["step"].dtype == torch.float32
        assert float(st["step"]) == 1.0
        for k, shape in e.items():
            assert tuple(st[k].shape) == shape and st[k].dtype == torch.float32
    sd = opt.state_dict()
    assert set(sd["param_groups"][0]) >= {"params", "lr", "beta2_decay", "eps", "d", "weight_decay", "foreach",
                                          "maximize"}


def test_adafactor_tensor_lr_as_torch():
    """torch 2.x: lr may be a one-element tensor; another tensor is ValueError('Tensor lr must be 1-element')."""
    a = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    b = a.detach().clone().requires_grad_()
    oa = ot.Adafactor([a], lr=0.1, weight_decay=0.1)
    ob = ot.Adafactor([b], lr=torch.tensor(0.1), weight_decay=0.1)
    for _ in range(3):
        a.grad = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
        b.grad = a.grad.clone()
        oa.step()
        ob.step()
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ot.Adafactor([a], lr=torch.tensor([0.1, 0.2]))


def test_adafactor_loads_float_step_as_torch():
    """torch's Adafactor.__setstate__ (run by load_state_dict) turns a Python-number 'step' into a tensor;
    the next step then continues from that count."""
    p = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    opt = ot.Adafactor([p])
    p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["step"] = 3.0
    q = p.detach().clone().requires_grad_()
    opt2 = ot.Adafactor([q])
    opt2.load_state_dict(sd)
    assert torch.is_tensor(opt2.state[q]["step"]) and float(opt2.state[q]["step"]) == 3.0
    q.grad = torch.ones_like(q)
    opt2.step()
    assert float(opt2.state[q]["step"]) == 4.0


def test_adafactor_refuses_sparse_gradients_with_runtime_error():
    p = torch.zeros(4, requires_grad=True)
    opt = ot.Adafactor([p])
    p.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([1.0]), (4,))
    with pytest.raises(RuntimeError):
        opt.step()


# ---- common torch 2.x Optimizer behaviour -----------------------------------------------------------


@pytest.mark.parametrize("cls", ["Adafactor", "Muon"])
def test_closure_and_zero_grad(cls):
    p = torch.randn(3, 4, requires_grad=True)
    opt = getattr(ot, cls)([p])

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and p.grad is not None
    # zero_grad is the installed torch's own Optimizer.zero_grad (docs/TORCH.md): torch 2.x sets the
    # gradients to None by default, torch 1.13 zeroes them; the same as a torch.optim optimizer here.
    q = p.detach().clone().requires_grad_()
    q.grad = torch.ones_like(q)
    torch.optim.SGD([q], lr=0.1).zero_grad()
    opt.zero_grad()
    assert (p.grad is None) == (q.grad is None)
    if p.grad is not None:
        assert (p.grad == 0).all()


# ---- Muon --------------------------------------------------------------------------------------------


def test_muon_tensor_lr_as_torch():
    a = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    b = a.detach().clone().requires_grad_()
    oa = ot.Muon([a], lr=0.02)
    ob = ot.Muon([b], lr=torch.tensor(0.02))
    for _ in range(3):
        a.grad = torch.randn(4, 6)
        b.grad = a.grad.clone()
        oa.step()
        ob.step()
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ot.Muon([a], lr=torch.tensor([0.1, 0.2]))


def test_muon_signature_as_torch():
    """torch.optim.Muon(params, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps,
    adjust_lr_fn, use_addmm): every argument positional, use_addmm (a choice of how to multiply, the same
    mathematics) accepted and kept in the group."""
    p = torch.zeros(3, 4, requires_grad=True)
    opt = ot.Muon([p], 0.01, 0.0, 0.9, False, (3.4445, -4.7750, 2.0315), 1e-7, 5, "original", True)
    g = opt.param_groups[0]
    assert (g["lr"], g["weight_decay"], g["momentum"], g["nesterov"], g["adjust_lr_fn"], g["use_addmm"]) == \
        (0.01, 0.0, 0.9, False, "original", True)
    assert ot.Muon([torch.zeros(2, 2, requires_grad=True)]).param_groups[0]["use_addmm"] is False
    a = torch.randn(5, 3, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    oa, ob = ot.Muon([a], lr=0.02), ot.Muon([b], lr=0.02, use_addmm=True)
    for _ in range(2):
        a.grad = torch.randn(5, 3)
        b.grad = a.grad.clone()
        oa.step()
        ob.step()
    assert torch.equal(a, b)


def _ns64(x, coef, steps, eps):
    a, b, c = coef
    tr = x.size(0) > x.size(1)
    if tr:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gm = x @ x.T
        x = a * x + (b * gm + c * gm @ gm) @ x
    return x.T if tr else x


@pytest.mark.parametrize("shape,adjust", list(itertools.product([(6, 4), (4, 6)],
                                                                 [None, "original", "match_rms_adamw"])))
def test_muon_one_step_each_adjustment(shape, adjust):
    """One step from a zero buffer: p (1 - lr wd) - adjusted_lr NS(lerp(g, B, mu)), against float64."""
    gen = torch.Generator().manual_seed(7)
    p = torch.randn(shape, generator=gen).requires_grad_()
    g = torch.randn(shape, generator=gen)
    p64, g64 = p.detach().double(), g.double()
    lr, wd, mu = 0.05, 0.1, 0.9
    opt = ot.Muon([p], lr=lr, weight_decay=wd, momentum=mu, adjust_lr_fn=adjust)
    p.grad = g
    opt.step()
    buf = torch.zeros_like(g64).lerp(g64, 1 - mu)
    upd = _ns64(g64.lerp(buf, mu), (3.4445, -4.7750, 2.0315), 5, 1e-7)
    A, B = shape
    ratio = 0.2 * math.sqrt(max(A, B)) if adjust == "match_rms_adamw" else math.sqrt(max(1, A / B))
    want = p64 * (1 - lr * wd) - lr * ratio * upd
    assert torch.allclose(p.detach().double(), want, atol=2e-4 * lr * ratio * upd.abs().max().item() + 1e-6)
    assert set(opt.state[p]) == {"momentum_buffer"}
    assert torch.allclose(opt.state[p]["momentum_buffer"].double(), buf, rtol=1e-6)


def test_muon_zero_gradient_only_decays():
    p = torch.ones(3, 5, requires_grad=True)
    opt = ot.Muon([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(3, 5)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3, 5), 0.95))


# ---- differences from torch 2.x left as they are (strict xfail: each documents one, and turns red if it
# ---- goes away unnoticed) ------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, raises=TypeError, reason="optim.torch refuses complex parameters when they are "
                   "added, with TypeError (every class, _cobject); torch 2.x's Adafactor and Muon raise "
                   "RuntimeError at step()")
@pytest.mark.parametrize("cls", ["Adafactor", "Muon"])
def test_complex_refused_at_step_with_runtime_error(cls):
    p = torch.zeros(2, 2, dtype=torch.complex64, requires_grad=True)
    opt = getattr(ot, cls)([p])
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="does not support complex"):
        opt.step()


@pytest.mark.xfail(strict=True, raises=ValueError, reason="liboptim's ns_steps is 1..99 (rules.c, "
                   "tests/test_muon.c asserts 0 refused; docs/rules/muon.md); torch runs 0 iterations")
def test_muon_zero_ns_steps_is_the_normalised_update():
    p = torch.zeros(2, 3, requires_grad=True)
    opt = ot.Muon([p], lr=1.0, weight_decay=0.0, momentum=0.0, ns_steps=0)
    p.grad = torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    opt.step()
    assert torch.allclose(p.detach(), -p.grad / 5.0)


def test_muon_eps_zero_accepted():
    """torch accepts eps = 0 (so does optim since 2026-12-07: every rule's eps >= 0)."""
    p = torch.ones(2, 3, requires_grad=True)
    opt = ot.Muon([p], eps=0.0)
    p.grad = torch.ones(2, 3)
    opt.step()
    assert torch.isfinite(p).all() and not torch.equal(p, torch.ones(2, 3))


@pytest.mark.xfail(strict=True, raises=ValueError, reason="liboptim's real hyperparameters are finite "
                   "(rules.c); torch's d = inf turns update clipping off")
def test_adafactor_d_inf_is_no_clipping():
    p = torch.ones(3, 4, requires_grad=True)
    opt = ot.Adafactor([p], d=float("inf"))
    p.grad = torch.ones(3, 4)
    opt.step()


@pytest.mark.xfail(strict=True, reason="optim.torch keeps 'step' float32 whatever the default dtype (every class); "
                   "torch's _get_scalar_dtype() is float64 under torch.set_default_dtype(torch.float64)")
def test_adafactor_step_dtype_follows_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        p = torch.ones(3, dtype=torch.float32, requires_grad=True)
        opt = ot.Adafactor([p])
        p.grad = torch.ones(3, dtype=torch.float32)
        opt.step()
        assert opt.state[p]["step"].dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
