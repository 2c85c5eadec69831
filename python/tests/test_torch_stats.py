"""optim.torch's step statistics (enable_stats / step_stats; docs/STATS.md):
the values against a float64 computation from the parameters before and after
each step and the gradients, and turning them on changes no bit. The exact
bits (lane order, every path and thread count) are tests/test_stats.c's."""
import math

import pytest
import torch

import optim.torch as ot

SEED = 1234


def _model(dtype):
    g = torch.Generator().manual_seed(SEED)
    return [torch.nn.Parameter(torch.randn(300, generator=g).to(dtype)),
            torch.nn.Parameter(torch.randn(7, 5, generator=g).to(dtype)),
            torch.nn.Parameter(torch.randn(4, generator=g).to(dtype))]


def _grads(params, step):
    g = torch.Generator().manual_seed(SEED + step)
    for i, p in enumerate(params):
        p.grad = None if i == 2 and step % 2 else torch.randn(p.shape, generator=g).to(p.dtype)


CASES = [
    (ot.SGD, dict(lr=0.1, momentum=0.9), torch.float32),
    (ot.Adam, dict(lr=1e-2), torch.float64),
    (ot.AdamW, dict(lr=1e-2), torch.bfloat16),
    (ot.RAdam, dict(lr=1e-2), torch.float32),
    (ot.LAMB, dict(lr=1e-2, max_grad_norm=None), torch.float32),
    (ot.LARS, dict(lr=1e-2, momentum=0.9), torch.float32),
    (ot.Rprop, dict(lr=1e-2), torch.float32),
]


def _run(cls, kw, dtype, stats, steps=7, clip=None):
    params = _model(dtype)
    opt = cls(params, **kw)
    if clip is not None:
        opt.set_clip_grad_value(clip)
    if stats:
        opt.enable_stats()
    seen = []
    stepped = [0] * len(params)  # each parameter's own step count
    for t in range(1, steps + 1):
        _grads(params, t)
        before = [p.detach().double().clone() for p in params]
        grads = [None if p.grad is None else p.grad.double().clone() for p in params]
        opt.step()
        after = [p.detach().double().clone() for p in params]
        stepped = [c + (p.grad is not None) for c, p in zip(stepped, params)]
        counts = list(stepped)
        seen.append((before, grads, after, opt.step_stats() if stats else None, counts))
    return params, opt, seen


@pytest.mark.parametrize("cls,kw,dtype", CASES, ids=[c[0].__name__ + "-" + str(c[2])[6:] for c in CASES])
def test_stats_values_and_no_bit_changed(cls, kw, dtype):
    print("seed", SEED)
    clip = 0.5 if cls in (ot.SGD, ot.RAdam) else None
    off, _, _ = _run(cls, kw, dtype, False, clip=clip)
    on, opt, seen = _run(cls, kw, dtype, True, clip=clip)
    bits = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}[dtype]
    for a, b in zip(off, on):
        assert torch.equal(a.detach().view(bits), b.detach().view(bits))
    for t, (before, grads, after, st, counts) in enumerate(seen, 1):
        assert len(st) == 3
        for i in range(3):
            if grads[i] is None:
                assert st[i] is None
                continue
            s = st[i]
            assert s["step"] == counts[i] and s["numel"] == before[i].numel()
            g = grads[i] if clip is None else grads[i].clamp(-clip, clip)
            u = after[i] - before[i]
            n = before[i].numel()
            # Sums in lanes of the compute type per chunk, then double (docs/STATS.md): float within 1e-5.
            rel = 1e-12 if dtype == torch.float64 else 1e-5
            assert s["grad_norm"] == pytest.approx(g.norm().item(), rel=rel)
            assert s["update_rms"] == pytest.approx(math.sqrt((u * u).sum().item() / n), rel=rel, abs=1e-300)
            assert s["param_rms"] == pytest.approx(math.sqrt((before[i] ** 2).sum().item() / n), rel=rel)
            assert s["update_ratio"] == pytest.approx(s["update_rms"] / s["param_rms"], rel=1e-15)
            if dtype == torch.float64:  # the difference in double: exact
                assert s["update_max"] == u.abs().max().item()
            else:  # the difference rounded to float once
                assert s["update_max"] == pytest.approx(u.abs().max().item(), rel=1e-7, abs=0)
            want_clamped = 0.0 if clip is None else (grads[i].abs() > clip).double().mean().item()
            assert s["clamped_fraction"] == pytest.approx(want_clamped, abs=1e-15)
            k = counts[i]  # the parameter's own step (the third one misses every other step)
            if cls is ot.RAdam:
                assert s["rectified"] == (k > 5)
            else:
                assert s["rectified"] is None
            if cls in (ot.LAMB, ot.LARS):
                assert s["trust_ratio"] > 0
            else:
                assert s["trust_ratio"] is None
            if cls is ot.Rprop:
                assert math.isnan(s["effective_lr"])
            elif cls is ot.SGD:
                assert s["effective_lr"] == kw["lr"]
            elif cls in (ot.Adam, ot.AdamW):
                assert s["effective_lr"] == pytest.approx(kw["lr"] * math.sqrt(1 - 0.999 ** k) / (1 - 0.9 ** k),
                                                          rel=1e-15)


def test_grad_norm_after_norm_clipping():
    """The gradient norm is of the gradient the rule receives: after LAMB's global-norm clipping."""
    _, opt, seen = _run(ot.LAMB, dict(lr=1e-2, max_grad_norm=1.0), torch.float32, True, steps=2)
    for before, grads, after, st, counts in seen:
        total = math.sqrt(sum(g.norm().item() ** 2 for g in grads if g is not None))
        for g, s in zip(grads, st):
            if g is not None:
                assert s["grad_norm"] == pytest.approx(g.norm().item() / max(total, 1.0), rel=1e-5)


def test_stats_switch_and_errors():
    params = _model(torch.float32)
    opt = ot.Adam(params, lr=1e-3)
    assert opt.stats_enabled is False
    _grads(params, 1)
    opt.step()
    assert opt.step_stats() == [None, None, None]
    opt.enable_stats()
    assert opt.stats_enabled is True
    opt.step()
    assert opt.step_stats()[0]["step"] == 2
    with pytest.raises(ValueError, match="on = 1 must be True or False"):
        opt.enable_stats(1)
    # An edit of param_groups rebuilds the C object: statistics stay on.
    opt.param_groups[0]["params"] = params[:2]
    opt.step()
    st = opt.step_stats()
    assert len(st) == 2 and st[0]["step"] == 3
    opt.enable_stats(False)
    opt.step()
    assert opt.step_stats()[0]["step"] == 3  # the last step with statistics on
