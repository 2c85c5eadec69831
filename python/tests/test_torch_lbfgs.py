"""optim.torch.LBFGS against torch.optim.LBFGS 1.13 itself.

LBFGS's vector work runs in liboptim (include/optim_vec.h): dot products and sums of |g| in double in a fixed
order, rounded once to the dtype; torch sums float32 dot products in BLAS's order in float32. So:

- bits: with torch's reductions made exact too (Tensor.dot and the argument-less Tensor.sum accumulated in
  float64 and rounded once, in both runs), every other operation is torch's own, and optim.torch's runs are
  torch's bit for bit over whole runs (trajectory, losses, func_evals, n_iter), float32, with and without
  strong_wolfe, a small history that wraps, max_eval and tolerance exits;
- against unmodified torch: float32 to float32 precision and float64 to 1e-9 over whole runs, with the same
  numbers of evaluations and iterations on well-conditioned problems;
- state_dict: saved mid-run and loaded into a new optim.torch.LBFGS, or into torch.optim.LBFGS (and torch's
  into ours), the run continues as if uninterrupted;
- errors where torch errs (complex parameters, more than one group), and what optim.torch refuses.
"""
import copy
import io

import pytest
import torch

import optim.torch as ot


@pytest.fixture
def exact_reductions(monkeypatch):
    """torch's dot and argument-less sum of float32 tensors computed in float64 and rounded once."""
    dot, tsum = torch.Tensor.dot, torch.Tensor.sum

    def dot64(a, b):
        return dot(a.double(), b.double()).to(a.dtype)

    def sum64(a, *args, **kwargs):
        if args or kwargs or a.dtype != torch.float32:
            return tsum(a, *args, **kwargs)
        return tsum(a.double()).to(a.dtype)

    monkeypatch.setattr(torch.Tensor, "dot", dot64)
    monkeypatch.setattr(torch.Tensor, "sum", sum64)


def _rosenbrock(x):
    return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def _rosen_problem(dim, dtype):
    start = torch.tensor([-1.2, 1.0, -0.5, 0.8, 0.3, -0.9, 1.1, 0.1][:dim], dtype=dtype)

    def make():
        x = torch.nn.Parameter(start.clone())
        return [x], lambda: _rosenbrock(x)

    return make


def _logistic_problem(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    w_true = torch.randn(5, generator=gen, dtype=torch.float64)
    y = (X @ w_true + 0.5 * torch.randn(64, generator=gen, dtype=torch.float64) > 0).to(dtype)
    X = X.to(dtype)

    def make():
        w = torch.nn.Parameter(torch.zeros(5, dtype=dtype))
        b = torch.nn.Parameter(torch.zeros((), dtype=dtype))

        def loss():
            z = X @ w + b
            return torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-2 * (w * w).sum()

        return [w, b], loss

    return make


def _mlp_problem(dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(48, 4, generator=gen, dtype=torch.float64).to(dtype)
    Y = torch.sin(X.sum(1, keepdim=True).double()).to(dtype)
    W1 = (0.5 * torch.randn(4, 8, generator=gen, dtype=torch.float64)).to(dtype)
    W2 = (0.5 * torch.randn(8, 1, generator=gen, dtype=torch.float64)).to(dtype)

    def make():
        # w1 registered transposed (not contiguous): the step goes through a copy written back
        w1 = torch.nn.Parameter(W1.t().clone().t())
        b1 = torch.nn.Parameter(torch.zeros(8, dtype=dtype))
        w2 = torch.nn.Parameter(W2.clone())
        unused = torch.nn.Parameter(torch.ones(3, dtype=dtype))  # never gets a gradient: zeros in the flat vector

        def loss():
            h = torch.tanh(X @ w1 + b1)
            return ((h @ w2 - Y) ** 2).mean()

        return [w1, b1, unused, w2], loss

    return make


def _run(cls, make, steps, load=None, **kw):
    params, f = make()
    opt = cls(params, **kw)
    if load is not None:
        opt.load_state_dict(load)

    def closure():
        opt.zero_grad()
        value = f()
        value.backward()
        return value

    traj, losses = [], []
    for _ in range(steps):
        losses.append(float(opt.step(closure)))
        traj.append(torch.cat([p.detach().reshape(-1).clone() for p in params]))
    st = opt.state[params[0]]
    return dict(traj=torch.stack(traj), losses=losses, evals=st.get("func_evals"), iters=st.get("n_iter"),
                opt=opt, params=params, closure=closure)


def _same_bits(a, b):
    return torch.equal(a, b) and a.dtype == b.dtype


CASES = [
    # (problem, options, steps)
    ("rosen2", dict(lr=0.1), 8),
    ("rosen4", dict(lr=0.1, history_size=3), 8),
    ("rosen4", dict(line_search_fn="strong_wolfe"), 6),
    ("rosen8", dict(line_search_fn="strong_wolfe", history_size=2), 6),
    ("rosen4", dict(lr=0.5, line_search_fn="strong_wolfe", max_iter=7, max_eval=9), 6),
    ("rosen4", dict(lr=0.1, max_iter=50, max_eval=13), 4),
    ("logistic", dict(), 4),
    ("logistic", dict(line_search_fn="strong_wolfe", history_size=4), 4),
    ("logistic", dict(tolerance_grad=1e-3, tolerance_change=1e-4), 3),
    ("mlp", dict(line_search_fn="strong_wolfe", history_size=5), 5),
    ("mlp", dict(lr=0.5, history_size=3), 5),
]


def _problem(name, dtype):
    if name.startswith("rosen"):
        return _rosen_problem(int(name[5:]), dtype)
    return _logistic_problem(dtype) if name == "logistic" else _mlp_problem(dtype)


def _id(case):
    name, opts, _ = case
    return name + "-" + ",".join("%s=%s" % kv for kv in sorted(opts.items()))


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bits_as_torch_with_exact_reductions(case, exact_reductions):
    name, opts, steps = case
    make = _problem(name, torch.float32)
    ref = _run(torch.optim.LBFGS, make, steps, **opts)
    got = _run(ot.LBFGS, make, steps, **opts)
    assert (got["evals"], got["iters"]) == (ref["evals"], ref["iters"])
    assert got["losses"] == ref["losses"]
    for k in range(steps):
        assert _same_bits(got["traj"][k], ref["traj"][k]), "step %d: largest difference %.3g" % (
            k, float((got["traj"][k] - ref["traj"][k]).abs().max()))
    # the state torch keeps, key by key
    sg, sr = got["opt"].state[got["params"][0]], ref["opt"].state[ref["params"][0]]
    assert set(sg) == set(sr)
    for key in ("d", "prev_flat_grad"):
        assert _same_bits(sg[key], sr[key]), key
    for key in ("old_dirs", "old_stps", "ro"):
        assert len(sg[key]) == len(sr[key]) and all(_same_bits(a, b) for a, b in zip(sg[key], sr[key])), key
    assert [a is None for a in sg.get("al", [])] == [a is None for a in sr.get("al", [])]
    assert all(a is None or _same_bits(a, b) for a, b in zip(sg.get("al", []), sr.get("al", [])))
    assert float(sg["t"]) == float(sr["t"]) and float(sg["H_diag"]) == float(sr["H_diag"])
    assert sg["prev_loss"] == sr["prev_loss"]


# Runs that stop before float32 noise decides an exit (a converged loss whose g.d hovers at
# -tolerance_change exits one iteration apart) and before a non-convex run's rounding differences grow.
WELL = [
    ("logistic", dict(max_iter=5), 2),
    ("logistic", dict(line_search_fn="strong_wolfe", history_size=4, max_iter=5), 2),
    ("logistic", dict(tolerance_grad=1e-3, tolerance_change=1e-4), 3),
    ("mlp", dict(line_search_fn="strong_wolfe", history_size=5, max_iter=5), 5),
    ("mlp", dict(lr=0.5, history_size=3, max_iter=5), 5),
]


@pytest.mark.parametrize("case", WELL, ids=[_id(c) for c in WELL])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_as_unmodified_torch(case, dtype):
    name, opts, steps = case
    make = _problem(name, dtype)
    ref = _run(torch.optim.LBFGS, make, steps, **opts)
    got = _run(ot.LBFGS, make, steps, **opts)
    assert (got["evals"], got["iters"]) == (ref["evals"], ref["iters"])
    tol = 2e-4 if dtype is torch.float32 else 1e-9
    err = float(((got["traj"] - ref["traj"]).abs() / (1 + ref["traj"].abs())).max())
    assert err <= tol, "relative difference %.3g > %.3g" % (err, tol)


@pytest.mark.parametrize("opts", [dict(lr=0.1), dict(line_search_fn="strong_wolfe", history_size=3)])
def test_rosenbrock_float64_as_unmodified_torch(opts):
    make = _rosen_problem(4, torch.float64)
    ref = _run(torch.optim.LBFGS, make, 8, **opts)
    got = _run(ot.LBFGS, make, 8, **opts)
    assert (got["evals"], got["iters"]) == (ref["evals"], ref["iters"])
    assert float((got["traj"] - ref["traj"]).abs().max()) <= 1e-8


def test_exits_as_torch(exact_reductions):
    """Each exit of torch's loop, seen through func_evals and n_iter after one step."""
    cases = [dict(max_iter=5), dict(max_iter=50, max_eval=6), dict(tolerance_grad=10.0),
             dict(max_iter=100, tolerance_change=1e-2), dict(max_iter=100, line_search_fn="strong_wolfe",
                                                            tolerance_change=1e-3)]
    for opts in cases:
        make = _rosen_problem(2, torch.float32)
        ref = _run(torch.optim.LBFGS, make, 1, lr=0.05, **opts)
        got = _run(ot.LBFGS, make, 1, lr=0.05, **opts)
        assert (got["evals"], got["iters"]) == (ref["evals"], ref["iters"]), opts
        assert _same_bits(got["traj"], ref["traj"]), opts
    # converged at the first evaluation: nothing but the counter is kept, as torch
    got = _run(ot.LBFGS, _rosen_problem(2, torch.float32), 1, tolerance_grad=1e9)
    assert set(got["opt"].state[got["params"][0]]) == {"func_evals", "n_iter"}


@pytest.mark.parametrize("into", ["optim", "torch"])
@pytest.mark.parametrize("opts", [dict(lr=0.2, history_size=3), dict(line_search_fn="strong_wolfe", history_size=2)])
def test_state_dict_resume(into, opts, exact_reductions):
    make = _rosen_problem(4, torch.float32)
    whole = _run(ot.LBFGS, make, 6, **opts)
    first = _run(ot.LBFGS, make, 3, **opts)
    buf = io.BytesIO()
    torch.save(first["opt"].state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf)
    params, f = make()
    with torch.no_grad():
        for p, v in zip(params, first["params"]):
            p.copy_(v)
    cls = ot.LBFGS if into == "optim" else torch.optim.LBFGS
    opt = cls(params, **opts)
    opt.load_state_dict(saved)

    def closure():
        opt.zero_grad()
        value = f()
        value.backward()
        return value

    for k in range(3, 6):
        opt.step(closure)
        assert _same_bits(params[0].detach(), whole["traj"][k]), "step %d after the load" % k
    st = opt.state[params[0]]
    ws = whole["opt"].state[whole["params"][0]]
    assert (st["func_evals"], st["n_iter"]) == (ws["func_evals"], ws["n_iter"])


def test_torch_state_dict_into_optim(exact_reductions):
    make = _rosen_problem(4, torch.float32)
    opts = dict(line_search_fn="strong_wolfe", history_size=3)
    whole = _run(torch.optim.LBFGS, make, 5, **opts)
    first = _run(torch.optim.LBFGS, make, 2, **opts)
    params, f = make()
    with torch.no_grad():
        params[0].copy_(first["params"][0])
    opt = ot.LBFGS(params, **opts)
    opt.load_state_dict(copy.deepcopy(first["opt"].state_dict()))

    def closure():
        opt.zero_grad()
        value = f()
        value.backward()
        return value

    for k in range(2, 5):
        opt.step(closure)
        assert _same_bits(params[0].detach(), whole["traj"][k])


def test_defaults_and_signature_as_torch():
    x = torch.nn.Parameter(torch.zeros(3))
    ours, theirs = ot.LBFGS([x]).defaults, torch.optim.LBFGS([x]).defaults
    assert ours == theirs
    assert ot.LBFGS([x], max_iter=8).defaults["max_eval"] == 10
    assert isinstance(ot.LBFGS([x]), torch.optim.Optimizer)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_as_torch(dtype):
    """torch 1.13 evaluates, tests convergence (a zero gradient returns), then fails comparing the complex
    g.d with a real tolerance: optim.torch does the same, with the same state left behind."""
    for start in (torch.zeros(3, dtype=dtype), torch.tensor([1 + 2j, -1j, 0.5], dtype=dtype)):
        outcomes = []
        for cls in (torch.optim.LBFGS, ot.LBFGS):
            z = torch.nn.Parameter(start.clone())
            opt = cls([z])

            def closure():
                opt.zero_grad()
                value = (z.abs() ** 2).sum()
                value.backward()
                return value

            try:
                opt.step(closure)
                outcome = "returned"
            except RuntimeError as e:
                outcome = "RuntimeError"
                if cls is ot.LBFGS:
                    assert "complex" in str(e) and "view_as_real" in str(e)
            outcomes.append((outcome, dict(opt.state[z]), z.detach().clone()))
        assert outcomes[0][0] == outcomes[1][0]
        assert outcomes[0][1] == outcomes[1][1]
        assert torch.equal(outcomes[0][2], outcomes[1][2])


def test_errors():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="parameter groups"):
        ot.LBFGS([{"params": [a]}, {"params": [b]}])
    two = ot.LBFGS([a])
    two.add_param_group({"params": [b]})  # torch allows it, and its step then fails (an assert)
    with pytest.raises(ValueError, match="2 groups"):
        two.step(lambda: a.sum() + b.sum())
    with pytest.raises(RuntimeError, match="strong_wolfe"):
        ot.LBFGS([a], line_search_fn="backtracking")
    h = torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="parameter 0.*bfloat16"):
        ot.LBFGS([h]).step(lambda: h.float().sum())
    d = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="parameter 1.*one dtype"):
        ot.LBFGS([a, d]).step(lambda: a.sum() + d.sum())
    with pytest.raises(RuntimeError, match="closure"):
        ot.LBFGS([a]).step(None)
