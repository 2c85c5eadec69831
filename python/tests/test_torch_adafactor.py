"""optim.torch.Adafactor against a float64 transcription of torch 2.x's
_single_tensor_adafactor (pytorch/pytorch, torch/optim/_adafactor.py, torch
>= 2.5; torch 1.13 here has no Adafactor), written below from that source:
every step's parameter and state against the reference's step from the same
values (the library's float32 values copied into the reference before each
step, so that a wrong step shows at once and not as drift), hundreds of
steps, 0-D/1-D/2-D/3-D and odd shapes, every option; float64 parameters;
state_dict keys and shapes as torch's, round trips through state_dict and
checkpoints, a transposed parameter."""
import os
import tempfile

import pytest
import torch

import optim.torch as ot

STEPS = 200
# eps1 is used squared, as torch's clamp_(min=eps1 * eps1): in a float32 tensor a value below ~1e-23 rounds
# to 0 there (torch's clamp takes the scalar as float32, as liboptim does), and a zero gradient then gives
# 0 * inf = NaN in both; the float64 reference would not, so the cases keep eps1 >= 1e-5.
SHAPES = [(), (7,), (5, 9), (1, 300), (13, 1), (3, 4, 5)]


def ref_step(p, g, state, *, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize):
    """One step of torch 2.x's _single_tensor_adafactor on one tensor, in the
    dtype of p (float64 here); eps1 as the caller resolves None (the machine
    epsilon of the optimizer's parameter dtype). Transcribed from
    torch/optim/_adafactor.py (pytorch/pytorch main, 2025): the same
    operations in the same order."""
    grad = -g if maximize else g
    state["step"] += 1
    step_float = state["step"]
    one_minus_beta2_t = step_float ** beta2_decay
    rho_t = min(lr, 1 / (step_float ** 0.5))
    alpha = max(eps2, p.norm(2).item() / (p.numel() ** 0.5)) * rho_t
    if weight_decay != 0:
        p.mul_(1 - lr * weight_decay)
    if grad.dim() > 1:
        row_var, col_var = state["row_var"], state["col_var"]
        row_mean = torch.linalg.vector_norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))
        row_var.lerp_(row_mean, one_minus_beta2_t)
        col_mean = torch.linalg.vector_norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))
        col_var.lerp_(col_mean, one_minus_beta2_t)
        var_estimate = row_var @ col_var
        var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
    else:
        variance = state["variance"]
        variance.lerp_(grad * grad, one_minus_beta2_t)
        var_estimate = variance.clone()
    update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_()
    update.mul_(grad)
    denom = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * d))
    p.add_(update, alpha=-alpha / denom)


def options(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, maximize=False):
    return dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay, maximize=maximize)


# The defaults, each option changed alone, and all changed together.
CASES = [options(), options(lr=0.3), options(beta2_decay=-0.5), options(eps=(1e-5, 0.05)), options(d=2.5),
         options(weight_decay=0.2), options(maximize=True),
         options(lr=0.05, beta2_decay=-0.6, eps=(1e-4, 1e-2), d=1.5, weight_decay=0.05, maximize=True)]


def run_against_ref(case, dtype, seed, steps=STEPS, transposed=False):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in SHAPES:
        p = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        if transposed and len(shape) == 2:
            p = p.t().contiguous().t()  # the same logical matrix, column-major memory
        params.append(p.requires_grad_())
    opt = ot.Adafactor(params, **case)
    eps1 = case["eps"][0] if case["eps"][0] is not None else torch.finfo(dtype).eps
    kw = dict(lr=case["lr"], beta2_decay=case["beta2_decay"], eps1=eps1, eps2=case["eps"][1], d=case["d"],
              weight_decay=case["weight_decay"], maximize=case["maximize"])
    tol = 1e-12 if dtype is torch.float64 else 3e-6
    worst = 0.0
    for t in range(steps):
        refs = []
        for p in params:
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * (1 + 0.1 * t % 3)
            if p.numel() > 2:
                g.view(-1)[1] = 0.0  # an element with no gradient: the floors
            p.grad = g.to(dtype)
            st = opt.state.get(p, {})
            rs = {"step": float(st["step"]) if st else 0.0}
            if p.dim() > 1:
                rs["row_var"] = st["row_var"].double().clone() if st else torch.zeros(p.shape[:-1] + (1,),
                                                                                    dtype=torch.float64)
                rs["col_var"] = st["col_var"].double().clone() if st else torch.zeros(
                    p.shape[:-2] + (1, p.shape[-1]), dtype=torch.float64)
            else:
                rs["variance"] = st["variance"].double().clone() if st else torch.zeros(p.shape, dtype=torch.float64)
            rp = p.detach().double().clone()
            ref_step(rp, p.grad.double(), rs, **kw)
            refs.append((rp, rs))
        opt.step()
        for i, (p, (rp, rs)) in enumerate(zip(params, refs)):
            st = opt.state[p]
            assert float(st["step"]) == rs["step"]
            pairs = [("param", p.detach(), rp)] + [(k, st[k], rs[k]) for k in rs if k != "step"]
            for key, got, want in pairs:
                assert got.shape == want.shape, (key, got.shape, want.shape)
                scale = want.abs().max().item() if want.numel() else 0.0
                err = (got.double() - want).abs().max().item() / max(scale, 1e-30) if want.numel() else 0.0
                worst = max(worst, err)
                assert err <= tol, "case %r %s step %d tensor %d shape %s %s: relative error %.3g (seed %d)" % (
                    case, dtype, t + 1, i, tuple(p.shape), key, err, seed)
    return opt, params, worst


@pytest.mark.parametrize("ci", range(len(CASES)))
def test_adafactor_float32_against_reference(ci):
    # The defaults and the all-options case over STEPS steps, each single option over 40 (the suite's time).
    seed = 1000 + ci
    print("seed", seed)
    run_against_ref(CASES[ci], torch.float32, seed, steps=STEPS if ci in (0, len(CASES) - 1) else 40)


def test_adafactor_float64_and_transposed():
    for ci in (0, len(CASES) - 1):
        print("seed", 77 + ci)
        run_against_ref(CASES[ci], torch.float64, 77 + ci, steps=60)
        run_against_ref(CASES[ci], torch.float32, 77 + ci, steps=60, transposed=True)


def test_adafactor_defaults_and_checks():
    p = torch.zeros(3, 4, requires_grad=True)
    opt = ot.Adafactor([p])
    g = opt.param_groups[0]
    assert (g["lr"], g["beta2_decay"], g["eps"], g["d"], g["weight_decay"], g["foreach"], g["maximize"]) == \
        (1e-2, -0.8, (None, 1e-3), 1.0, 0.0, None, False)
    for kw, msg in [(dict(lr=-1), "Learning rate"), (dict(beta2_decay=0.5), "beta2_decay"),
                    (dict(eps=(-1, 1e-3)), "epsilon1"), (dict(eps=(None, -1)), "epsilon2"),
                    (dict(d=0.5), "Clipping threshold"), (dict(weight_decay=-1), "weight_decay")]:
        with pytest.raises(ValueError, match=msg):
            ot.Adafactor([p], **kw)
    # Types and options the C passes do not take are refused by name.
    with pytest.raises(Exception, match="bfloat16"):
        ot.Adafactor([torch.zeros(4, 4, dtype=torch.bfloat16, requires_grad=True)])


def _train(opt, params, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()


def _clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def test_adafactor_state_dict_torch_format_and_round_trip():
    torch.manual_seed(3)
    params = [torch.randn(s).requires_grad_() for s in SHAPES]
    opt = ot.Adafactor(params, weight_decay=0.05, d=1.5)
    _train(opt, params, 7, 1)
    sd = opt.state_dict()
    for i, s in enumerate(SHAPES):
        st = sd["state"][i]
        if len(s) >= 2:
            assert set(st) == {"step", "row_var", "col_var"}
            assert st["row_var"].shape == s[:-1] + (1,) and st["col_var"].shape == s[:-2] + (1, s[-1])
        else:
            assert set(st) == {"step", "variance"} and st["variance"].shape == s
        assert st["step"].dtype is torch.float32 and st["step"].dim() == 0 and float(st["step"]) == 7
    assert sd["param_groups"][0]["eps"] == (None, 1e-3)
    # A state_dict as torch 2.x's Adafactor writes it (plain tensors, its keys and shapes) continues the run.
    plain = {"state": {i: {k: v.clone() for k, v in st.items()} for i, st in sd["state"].items()},
             "param_groups": [dict(g) for g in sd["param_groups"]]}
    twin = _clone_params(params)
    opt2 = ot.Adafactor(twin)
    opt2.load_state_dict(plain)
    _train(opt, params, 5, 2)
    _train(opt2, twin, 5, 2)
    for a, b in zip(params, twin):
        assert torch.equal(a, b)
    # Wrong shapes and keys are refused by name.
    bad = {"state": {2: {"step": torch.tensor(1.0), "row_var": torch.zeros(9, 1), "col_var": torch.zeros(1, 5)}},
           "param_groups": plain["param_groups"]}
    with pytest.raises(ValueError, match="row_var"):
        ot.Adafactor(_clone_params(params)).load_state_dict(bad)
    bad = {"state": {2: {"step": torch.tensor(1.0), "row_var": torch.zeros(5, 1), "col_var": torch.zeros(1, 9),
                         "variance": torch.zeros(5, 9)}},
           "param_groups": plain["param_groups"]}
    with pytest.raises(ValueError, match="variance"):
        ot.Adafactor(_clone_params(params)).load_state_dict(bad)


def test_adafactor_checkpoint_round_trip():
    torch.manual_seed(4)
    params = [torch.randn(s).requires_grad_() for s in SHAPES]
    params.append(torch.randn(6, 4).t().requires_grad_())  # transposed memory: stepped through a row-major copy
    opt = ot.Adafactor(params, weight_decay=0.1, eps=(1e-20, 1e-3))
    _train(opt, params, 6, 5)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "af.ckpt")
        opt.save_checkpoint(path)
        twin = _clone_params(params)
        twin[-1] = params[-1].detach().clone().t().contiguous().t().requires_grad_()
        opt2 = ot.Adafactor(twin)
        opt2.load_checkpoint(path)
        assert opt2.param_groups[0]["eps"] == (1e-20, 1e-3)
        _train(opt, params, 6, 6)
        _train(opt2, twin, 6, 6)
        for a, b in zip(params, twin):
            assert torch.equal(a, b)
        for i in range(len(params)):
            for k, v in opt.state[params[i]].items():
                assert torch.equal(v, opt2.state[twin[i]][k]), k
        # A parameter of another shape (same numel) refuses the checkpoint, naming it.
        other = _clone_params(params)
        other[2] = torch.zeros(9, 5, requires_grad=True)
        with pytest.raises(Exception, match="param 2"):
            ot.Adafactor(other).load_checkpoint(path)


@pytest.mark.parametrize("kw,dtype,what", [
    (dict(), torch.float16, "float16 parameters"),
    (dict(), torch.bfloat16, "bfloat16 parameters"),
    (dict(master_weights=True), torch.bfloat16, "flags 0x1"),
    (dict(stochastic_rounding=True), torch.bfloat16, "flags 0x2"),
    (dict(state_dtype=torch.bfloat16), torch.float32, "bfloat16 state"),
    (dict(state_dtype="int8"), torch.float32, "int8_block state"),
    (dict(), torch.complex64, "complex"),
], ids=["float16", "bfloat16", "master", "sr", "state_bf16", "state_int8", "complex"])
def test_adafactor_refuses_other_storage_by_name(kw, dtype, what):
    """The reductions run on float32/float64 memory of the parameter's own type (docs/rules/adafactor.md):
    the generic precision and state_dtype suites leave Adafactor out for this refusal."""
    p = torch.zeros(4, 4, dtype=dtype, requires_grad=True)
    with pytest.raises(Exception, match="adafactor|Adafactor") as e:
        ot.Adafactor([p], **kw)
    assert what in str(e.value)


def test_adafactor_eps1_none_is_the_groups():
    """eps=(None, eps2): torch 2.x's _single_tensor_adafactor sets eps1 from the first parameter of the group's
    list at this step (those with a gradient, in the group's order: torch.finfo(param.dtype).eps) and keeps it
    for the group's other parameters; a group mixing float64 and float32 parameters tells. Tiny gradients
    (1e-9: v ~ 1e-18) put the float32 epsilon's floor (eps1^2 ~ 1.4e-14) and the float64 one's (~4.9e-32) on
    either side of v, so another resolution (each parameter's own type, or the first parameter's whatever its
    gradient) misses by far; some steps leave the first parameter without a gradient (the next one sets eps1)."""
    gen = torch.Generator().manual_seed(4321)
    mk = lambda shape, dt: torch.randn(shape, generator=gen, dtype=torch.float64).to(dt).requires_grad_()  # noqa
    a = [mk((5, 9), torch.float64), mk((7,), torch.float32), mk((3, 4), torch.float32)]
    b = [mk((6,), torch.float32), mk((2, 3, 4), torch.float64), mk((4, 5), torch.float64)]
    opt = ot.Adafactor([{"params": a}, {"params": b, "weight_decay": 0.1}])
    refs = {}
    for p in a + b:
        rs = {"step": 0.0}
        if p.dim() > 1:
            rs["row_var"] = torch.zeros(p.shape[:-1] + (1,), dtype=torch.float64)
            rs["col_var"] = torch.zeros(p.shape[:-2] + (1, p.shape[-1]), dtype=torch.float64)
        else:
            rs["variance"] = torch.zeros(p.shape, dtype=torch.float64)
        refs[p] = (p.detach().double().clone(), rs)
    seen = set()
    for t in range(30):
        for group, wd in ((a, 0.0), (b, 0.1)):
            stepped = [p for i, p in enumerate(group) if not (i == 0 and t % 4 == 1)]
            eps1 = torch.finfo(stepped[0].dtype).eps
            seen.add((len(group), eps1))
            for p in group:
                p.grad = None
            for p in stepped:
                g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * (1e-9 * (1 + t % 3))
                p.grad = g.to(p.dtype)
                rp, rs = refs[p]
                ref_step(rp, p.grad.double(), rs, lr=1e-2, beta2_decay=-0.8, eps1=eps1, eps2=1e-3, d=1.0,
                         weight_decay=wd, maximize=False)
        opt.step()
        for p in a + b:
            rp, rs = refs[p]
            tol = 1e-12 if p.dtype is torch.float64 else 3e-6
            err = (p.detach().double() - rp).abs().max().item() / rp.abs().max().item()
            assert err <= tol, "step %d, %s %s: relative error %.3g" % (t + 1, p.dtype, tuple(p.shape), err)
            assert float(opt.state[p]["step"]) == rs["step"]
    # Both resolutions happened in both groups.
    assert seen == {(3, torch.finfo(torch.float64).eps), (3, torch.finfo(torch.float32).eps)}


def test_adafactor_shape_change_after_steps_refused():
    """Through the binding's handle (optim_param_set_shape, as optim.torch calls it when a parameter is added): after
    steps a shape that would reinterpret the state (leading dimensions regrouped, with factors of the same
    lengths) is refused naming both shapes; the same shape again is accepted; the state is untouched."""
    from optim import OptimError
    p = torch.randn(4, 3, 2, 5, requires_grad=True)
    opt = ot.Adafactor([p])
    for _ in range(2):
        p.grad = torch.randn(4, 3, 2, 5)
        opt.step()
    h = opt._c.h
    row, col = opt.state[p]["row_var"].clone(), opt.state[p]["col_var"].clone()
    with pytest.raises(OptimError, match=r"has taken 2 adafactor steps with shape \(4, 3, 2, 5\): its state is laid "
                                         r"out for it, and shape \(3, 4, 2, 5\) would reinterpret it"):
        h.set_param_shape(0, (3, 4, 2, 5))
    h.set_param_shape(0, (4, 3, 2, 5))
    assert torch.equal(opt.state[p]["row_var"], row) and torch.equal(opt.state[p]["col_var"], col)
    p.grad = torch.randn(4, 3, 2, 5)
    opt.step()
    assert float(opt.state[p]["step"]) == 3
