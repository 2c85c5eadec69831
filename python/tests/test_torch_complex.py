"""Complex parameters (complex64, complex128) against torch.optim 1.13.

torch 1.13 steps torch.view_as_real of the parameter, gradient and state in Adam, AdamW, Adagrad and RMSprop
(after the weight decay, which Adam, Adagrad and RMSprop add in complex arithmetic), and in Adadelta between
a complex weight decay and a complex update of p; SGD computes on the complex tensors directly, which for its
real coefficients is the same arithmetic with each multiply-add rounded in two steps. optim.torch steps the
real view in liboptim, with the state exposed as complex tensors of torch's strides. Where torch's whole step
runs on the real view (Adam, Adagrad, RMSprop without weight decay; AdamW), the bits are torch's; elsewhere
the numbers agree to rounding (docs/FIDELITY.md says why). RAdam and NAdam compute genuinely complex
arithmetic in torch (the complex square of the gradient, its complex square root, complex divisions): so does
liboptim (OPTIM_PARAM_COMPLEX), the same numbers to rounding (RAdam against torch's default single-tensor form,
NAdam against its multi-tensor form, as for real parameters). AdaBound, Lion, LAMB and LARS are refused (no torch
counterpart for complex numbers).

Every option combination of test_torch_bits, each a parameter group of tensors of several shapes and
layouts, 120 steps, both complex types; state_dict between torch and optim.torch; checkpoints.
"""
import io

import pytest
import torch

import optim.torch as ot
from test_torch_bits import _groups

STEPS = 120
CLASSES = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Adamax", "ASGD", "Rprop", "RAdam", "NAdam"]
REFUSED = ["AdaBound", "Lion", "LAMB", "LARS", "SparseAdam"]
TOL = {torch.complex64: 2e-5, torch.complex128: 1e-13}


def _bits_claimed(rule, opts):
    """docs/FIDELITY.md: torch's whole step runs on the real view."""
    # Rprop: the same values, but the sign of some zeros of 'prev' differs from torch's on complex
    # parameters under maximize (not understood yet: docs/TORCH.md), so values, not bits, are claimed.
    return rule == "AdamW" or (rule in ("Adam", "Adagrad", "RMSprop", "Adamax", "ASGD")
                                          and not opts.get("weight_decay"))


def _complex_randn(shape, gen, dtype):
    """Complex values with random real and imaginary parts (a float64 randn .to(complex) has none:
    its imaginary parts are 0, on which complex and real-view arithmetic agree)."""
    real = torch.randn(tuple(shape) + (2,), generator=gen, dtype=torch.float64)
    return torch.view_as_complex(real).to(dtype)


def _params(dtype, gen):
    def value(shape):
        return _complex_randn(shape, gen, dtype)

    return [value(()), value((7,)), value((17,)), value((7, 5)).t(), value((2, 3, 4, 5)).contiguous(
        memory_format=torch.channels_last), value((33,))]


def _real(t):
    return torch.view_as_real(t.detach().resolve_conj())


def _compare(what, a, b, exact, dtype):
    ra, rb = _real(a), _real(b)
    if exact:
        bits = torch.int32 if dtype is torch.complex64 else torch.int64
        same = torch.equal(ra.contiguous().view(bits), rb.contiguous().view(bits))
        assert same, "%s: bits differ (largest difference %.3g)" % (what, float((ra - rb).abs().max()))
    else:
        err = float(((ra - rb).abs() / (1 + rb.abs())).max()) if ra.numel() else 0.0
        assert err <= TOL[dtype], "%s: relative difference %.3g > %.3g" % (what, err, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["complex64", "complex128"])
@pytest.mark.parametrize("rule", CLASSES)
def test_complex_parameters_follow_torch(rule, dtype, seed):
    groups, torch_cls, extra = _groups(rule)
    groups = [g for g in groups if not g.get("amsgrad")]  # torch fails: test_amsgrad_with_complex_fails_as_in_torch
    gen_o, gen_t = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    go = [dict(opts, params=[p.requires_grad_() for p in _params(dtype, gen_o)]) for opts in groups]
    gt = [dict(opts, params=[p.requires_grad_() for p in _params(dtype, gen_t)]) for opts in groups]
    ours, theirs = getattr(ot, rule)(go), torch_cls(gt, **extra)
    gen = torch.Generator().manual_seed(seed + 1)
    for t in range(1, STEPS + 1):
        for a, b in zip((p for g in go for p in g["params"]), (p for g in gt for p in g["params"])):
            g = _complex_randn(a.shape, gen, dtype)
            a.grad, b.grad = g, g.clone()
        ours.step()
        theirs.step()
        for gi, (ga, gb) in enumerate(zip(go, gt)):
            exact = _bits_claimed(rule, groups[gi])
            for k, (a, b) in enumerate(zip(ga["params"], gb["params"])):
                what = "%s %s seed %d step %d group %d %s tensor %d" % (rule, dtype, seed, t, gi, groups[gi], k)
                _compare(what, a, b, exact, dtype)
                if t in (1, 2, 10, STEPS):
                    st_o, st_t = ours.state[a], theirs.state[b]
                    assert set(st_o) == set(st_t), what
                    for key, y in st_t.items():
                        x = st_o[key]
                        if key == "step" or y is None or not y.is_complex():  # ASGD's eta, mu: real scalars
                            if torch.is_tensor(y) and y.dim() == 0:
                                # NAdam's mu_product: a float64 tensor of torch's float32 value (docs/TORCH.md)
                                assert x.dtype == y.dtype or key == "mu_product", (what, key, x, y)
                                assert float(x) == float(y), (what, key, x, y)
                                continue
                            assert (x is None) == (y is None) and (y is None or float(x) == float(y)), (what, key)
                            continue
                        # Rprop's step_size: torch makes it with grad.new().resize_as_(grad), contiguous
                        # whatever p's layout; optim.torch keeps it in p's layout (docs/TORCH.md). Values
                        # by logical index are compared below either way.
                        strided_as_torch = not (rule == "Rprop" and key == "step_size")
                        assert x.dtype == y.dtype == dtype and (x.stride() == y.stride() or not strided_as_torch), (
                            what, key, x.dtype, y.dtype, x.stride(), y.stride())
                        _compare("%s state[%r]" % (what, key), x, y, exact, dtype)


@pytest.mark.parametrize("rule", REFUSED)
def test_complex_parameters_are_refused_where_torch_computes_complex_arithmetic(rule):
    p = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(TypeError, match=r"parameter 0 \(shape \(3,\), dtype torch.complex64.* is complex: "):
        getattr(ot, rule)([p], lr=1e-3)
    q = torch.zeros(3, requires_grad=True)
    opt = getattr(ot, rule)([q], lr=1e-3)
    with pytest.raises(TypeError, match="is complex"):
        opt.add_param_group({"params": [p]})


@pytest.mark.parametrize("rule", ["Adam", "AdamW"])
def test_amsgrad_with_complex_fails_as_in_torch(rule):
    """torch 1.13's Adam and AdamW fail their step with amsgrad on complex parameters (RuntimeError:
    torch.maximum of the complex max_exp_avg_sq and the real view); so does optim.torch, before changing
    anything, naming the parameter, the group and the option. Real parameters of other groups step."""
    pt = torch.ones(3, dtype=torch.complex64, requires_grad=True)
    theirs = getattr(torch.optim, rule)([pt], amsgrad=True)
    pt.grad = torch.ones(3, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="maximum not implemented for complex tensors"):
        theirs.step()
    real = torch.ones(2, requires_grad=True)
    p = torch.ones(3, dtype=torch.complex64, requires_grad=True)
    ours = getattr(ot, rule)([{"params": [real]}, {"params": [p], "amsgrad": True}])
    real.grad, p.grad = torch.ones(2), torch.ones(3, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match=r"parameter 1 .*complex64.* is complex and param group 1 has "
                                           r"amsgrad=True: torch.optim.%s 1.13 fails there too" % rule):
        ours.step()
    assert torch.equal(p, torch.ones(3, dtype=torch.complex64)) and torch.equal(real, torch.ones(2))
    ours.param_groups[1]["amsgrad"] = False
    ours.step()
    assert not torch.equal(p, torch.ones(3, dtype=torch.complex64))


def test_adagrad_initial_accumulator_of_a_complex_parameter():
    """torch's Adagrad fills a complex parameter's sum with complex(v, v), v the constructor's value (in every
    group: torch 1.13 reads the constructor's argument there)."""
    pt, po = (torch.zeros(4, dtype=torch.complex64, requires_grad=True) for _ in range(2))
    theirs = torch.optim.Adagrad([{"params": [pt], "initial_accumulator_value": 0.5}], initial_accumulator_value=0.25)
    ours = ot.Adagrad([{"params": [po], "initial_accumulator_value": 0.5}], initial_accumulator_value=0.25)
    _compare("sum", ours.state[po]["sum"], theirs.state[pt]["sum"], True, torch.complex64)
    po.grad, pt.grad = torch.ones(4, dtype=torch.complex64), torch.ones(4, dtype=torch.complex64)
    ours.step()
    theirs.step()
    _compare("param", po, pt, True, torch.complex64)


def test_conjugate_views_are_refused_as_torch_refuses_them():
    """torch.view_as_real refuses an unresolved conjugate view: a parameter or gradient with the lazy
    conjugation bit is refused (ValueError), nothing changed."""
    p = torch.zeros(3, dtype=torch.complex64).conj().requires_grad_()
    with pytest.raises(ValueError, match="lazy conjugate view"):
        ot.Adam([p])
    q = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    opt = ot.Adam([q])
    q.grad = torch.ones(3, dtype=torch.complex64).conj()
    with pytest.raises(ValueError, match="gradient of parameter 0 .*lazy conjugate view"):
        opt.step()
    assert torch.equal(q, torch.zeros(3, dtype=torch.complex64)) and len(opt.state[q]) == 0


@pytest.mark.parametrize("direction", ["torch_to_optim", "optim_to_torch"])
def test_complex_state_dict_moves_between_torch_and_optim(direction, seed):
    gen = [torch.Generator().manual_seed(seed) for _ in range(3)]
    src_p, dst_p, ref_p = ([p.requires_grad_() for p in _params(torch.complex64, g)] for g in gen)
    kw = dict(lr=1e-2, weight_decay=0.1, maximize=True)
    src_cls, dst_cls = (torch.optim.AdamW, ot.AdamW) if direction == "torch_to_optim" else (ot.AdamW,
                                                                                            torch.optim.AdamW)
    src, ref = src_cls(src_p, **kw), torch.optim.AdamW(ref_p, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.complex64) for p in src_p] for _ in range(40)]
    for t in range(20):
        for ps in (src_p, ref_p):
            for p, x in zip(ps, grads[t]):
                p.grad = x.clone()
        src.step()
        ref.step()
    for a, b in zip(dst_p, src_p):
        a.data.copy_(b.data)
    dst = dst_cls(dst_p, **kw)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst.load_state_dict(torch.load(buf))
    for t in range(20, 40):
        for ps in (dst_p, ref_p):
            for p, x in zip(ps, grads[t]):
                p.grad = x.clone()
        dst.step()
        ref.step()
    for k, (a, b) in enumerate(zip(dst_p, ref_p)):
        _compare("%s param %d" % (direction, k), a, b, True, torch.complex64)
        for key, y in ref.state[b].items():
            x = dst.state[a][key]
            if key != "step":
                assert x.dtype == y.dtype and x.stride() == y.stride(), (k, key)
                _compare("%s param %d state[%r]" % (direction, k, key), x, y, True, torch.complex64)


def test_complex_checkpoint_round_trip(tmp_path, seed):
    path = str(tmp_path / "c.ckpt")
    pa = [p.requires_grad_() for p in _params(torch.complex128, torch.Generator().manual_seed(seed))]
    pb = [p.detach().clone(memory_format=torch.preserve_format).requires_grad_() for p in pa]
    a = ot.RMSprop(pa, lr=1e-2, momentum=0.9, centered=True)
    g = torch.Generator().manual_seed(seed + 1)
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.complex128) for p in pa] for _ in range(30)]
    for t in range(15):
        for p, x in zip(pa, grads[t]):
            p.grad = x
        a.step()
    a.save_checkpoint(path)
    for x, y in zip(pb, pa):
        x.data.copy_(y.data)
    b = ot.RMSprop(pb, lr=1e-2, momentum=0.9, centered=True)
    b.load_checkpoint(path)
    for t in range(15, 30):
        for ps in (pa, pb):
            for p, x in zip(ps, grads[t]):
                p.grad = x
        a.step()
        b.step()
    for k, (x, y) in enumerate(zip(pb, pa)):
        _compare("param %d" % k, x, y, True, torch.complex128)


@pytest.mark.parametrize("rule", ["RAdam", "NAdam"])
def test_complex_foreach_flag_accepted_without_effect(rule, seed):
    # rev11a: torch 1.13's two paths disagree on these rules (multi-tensor RAdam leaves eps out, single-tensor
    # NAdam multiplies mu twice: docs/FIDELITY.md); optim.torch accepts foreach either way and computes the one
    # formula test_complex_parameters_follow_torch compares with torch, bit for bit the same for every flag
    dtype = torch.complex64
    groups, _, _ = _groups(rule)
    runs = []
    for foreach in (None, False, True):
        gen = torch.Generator().manual_seed(seed)
        go = [dict(opts, params=[p.requires_grad_() for p in _params(dtype, gen)]) for opts in groups]
        opt = getattr(ot, rule)(go, foreach=foreach)
        ggen = torch.Generator().manual_seed(seed + 1)
        for _ in range(20):
            for p in (p for g in go for p in g["params"]):
                p.grad = _complex_randn(p.shape, ggen, dtype)
            opt.step()
        runs.append([_real(p).clone() for g in go for p in g["params"]])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("rule", ["RAdam", "NAdam"])
def test_complex_decoupled_and_maximize_as_torch_built_from_them(rule, seed):
    # rev11a: optim.torch's options beyond torch 1.13 (decoupled_weight_decay and maximize, as torch 2.x
    # defines them) on complex parameters, against torch 1.13's own complex step fed what they mean:
    # p *= 1 - lr wd before a step without weight decay, and the negated gradient
    dtype = torch.complex128
    lr, wd = 1e-2, 0.1
    extra = dict(momentum_decay=2e-2) if rule == "NAdam" else {}
    foreach = rule == "NAdam"  # docs/FIDELITY.md: the torch path optim follows for each rule
    gen = torch.Generator().manual_seed(seed)
    ours = [p.requires_grad_() for p in _params(dtype, gen)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    o = getattr(ot, rule)(ours, lr=lr, weight_decay=wd, decoupled_weight_decay=True, maximize=True, **extra)
    t = getattr(torch.optim, rule)(theirs, lr=lr, weight_decay=0, foreach=foreach, **extra)
    ggen = torch.Generator().manual_seed(seed + 1)
    for step in range(1, 41):
        for a, b in zip(ours, theirs):
            g = _complex_randn(a.shape, ggen, dtype)
            a.grad, b.grad = g, -g
        o.step()
        with torch.no_grad():
            for b in theirs:
                b.mul_(1 - lr * wd)
        t.step()
        for k, (a, b) in enumerate(zip(ours, theirs)):
            _compare("%s seed %d step %d tensor %d" % (rule, seed, step, k), a, b, False, dtype)
