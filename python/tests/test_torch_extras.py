"""Options torch 1.13 lacks, against the independent float64 references of
torch_ref64 (decoupled RAdam/NAdam, bias_correction=False, eps inside,
Adadelta momentum, maximize on RAdam/NAdam, AdaBound/AMSBound).

The references are first checked against torch.optim in float64 on the
options torch has (to 1e-9: float64 on both sides, but torch keeps NAdam's
mu_product in float32), so that a wrong reference cannot hide a
wrong binding. optim.torch (float32) is then compared with the float64
reference using torch_ref64.rel_err <= 1e-5 on every element of parameters
and state at steps 1, 2, 3, 7, 50 and 200: float32 against exact arithmetic,
which after 200 steps differs by about 1e-7 to 1e-6 (the same order as
torch.optim's own float32 error).
"""
import itertools

import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_harness import (Grads, assert_close, leaves, make_params, run_vs_ref, run_vs_torch, set_grads)
from torch_ref64 import Ref64, rel_err


def _cases(**axes):
    names = sorted(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def _params(cases):
    return pytest.mark.parametrize("kw", cases, ids=[",".join("%s=%s" % kv for kv in sorted(c.items()))
                                                     for c in cases])


# ---- the references against torch.optim in float64 ---------------------------------

REF_CHECKS = [
    ("SGD", torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.1, maximize=True), {}),
    ("SGD", torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True), {}),
    ("Adagrad", torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.2,
                                          maximize=True), {}),
    ("RMSprop", torch.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1,
                                          maximize=True), {}),
    ("RMSprop", torch.optim.RMSprop, dict(lr=0.01, alpha=0.9), {}),
    ("Adadelta", torch.optim.Adadelta, dict(lr=0.7, rho=0.8, weight_decay=0.1, maximize=True), {}),
    ("Adam", torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True, maximize=True),
     {}),
    ("AdamW", torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True), {}),
    ("RAdam", torch.optim.RAdam, dict(lr=0.01, weight_decay=0.1), dict(foreach=False)),
    ("NAdam", torch.optim.NAdam, dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01), dict(foreach=True)),
    # AdaBound with eps = 0 and bounds that never bind (gamma tiny: lower ~ 0,
    # upper huge) is Adam with eps = 0; amsbound is amsgrad.
    ("AdaBound", torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, amsbound=True, eps=0.0, gamma=1e-12),
     dict(amsgrad=True)),
]


@pytest.mark.parametrize("name,torch_cls,kw,torch_extra", REF_CHECKS,
                         ids=["%s-%d" % (c[0], i) for i, c in enumerate(REF_CHECKS)])
def test_reference_matches_torch_in_float64(rng, seed, name, torch_cls, kw, torch_extra):
    shapes = [(), (7,), (3, 5)]
    p0 = make_params(rng, shapes)
    pt = leaves(p0, torch.float64)
    tkw = {k: v for k, v in kw.items() if k not in ("amsbound", "gamma")}
    opt = torch_cls(pt, **dict(tkw, **torch_extra))
    ref = Ref64(name, p0, [dict(kw, params=[0, 1, 2])])
    grads = Grads(rng, shapes)
    for t in range(1, 101):
        g = grads.next()
        set_grads(pt, g, torch.float64)
        opt.step()
        ref.step(g)
    for i in range(len(shapes)):
        err = rel_err(ref.params[i], pt[i].detach().numpy())
        assert err <= 1e-9, "%s reference vs torch float64, seed %d, tensor %d: %.3g" % (name, seed, i, err)


def test_adabound_reference_clips_to_its_bounds():
    """One step by hand: with gamma = 0.5 at t = 1 the bounds are
    [final_lr / 3, 3 final_lr], and Adam's per-element rate lies outside them
    for both elements chosen here."""
    lr, final_lr, g = 1e-3, 0.1, np.array([1.0, 1e-9])
    p = np.zeros(2)
    out = Ref64("AdaBound", [p], [dict(params=[0], lr=lr, final_lr=final_lr, gamma=0.5)])
    out.step([g])
    m = 0.1 * g
    denom = np.sqrt(0.001 * g * g) + 1e-8
    rate = lr * np.sqrt(1 - 0.999) / (1 - 0.9) / denom
    assert rate[0] < final_lr / 3 and rate[1] > 3 * final_lr
    expected = -np.array([final_lr / 3, 3 * final_lr]) * m
    assert np.allclose(out.params[0], expected, rtol=1e-14, atol=0)


# ---- optim.torch against the references -------------------------------------------

ADAM_EXTRA = [c for c in _cases(lr=[1e-2], weight_decay=[0.125], bias_correction=[True, False],
                                eps_placement=["outside", "inside"], decoupled_weight_decay=[False, True],
                                amsgrad=[False, True])
              if not c["bias_correction"] or c["eps_placement"] == "inside" or c["decoupled_weight_decay"]]


@_params(ADAM_EXTRA + [dict(lr=1e-2, maximize=True, bias_correction=False, eps=1e-3)])
def test_adam_extras(rng, seed, kw):
    run_vs_ref(rng, seed, ot.Adam, kw)


@_params(_cases(lr=[1e-2], bias_correction=[True, False], eps_placement=["outside", "inside"], amsgrad=[False])[1:]
         + [dict(lr=1e-2, bias_correction=False, amsgrad=True, maximize=True)])
def test_adamw_extras(rng, seed, kw):
    run_vs_ref(rng, seed, ot.AdamW, kw)


@_params([dict(lr=1e-2, weight_decay=0.125, amsgrad=False), dict(lr=1e-2, weight_decay=0.125, amsgrad=True,
                                                                maximize=True)])
def test_adam_decoupled_is_torch_adamw(rng, seed, kw):
    run_vs_torch(rng, seed, ot.Adam, torch.optim.AdamW, dict(kw, decoupled_weight_decay=True), kw)


RADAM_NADAM_EXTRA = [c for c in _cases(lr=[1e-2], weight_decay=[0.125], decoupled_weight_decay=[False, True],
                                       maximize=[False, True], eps_placement=["outside", "inside"])
                     if c["decoupled_weight_decay"] or c["maximize"] or c["eps_placement"] == "inside"]


@_params(RADAM_NADAM_EXTRA)
def test_radam_extras(rng, seed, kw):
    run_vs_ref(rng, seed, ot.RAdam, kw)


@_params(RADAM_NADAM_EXTRA)
def test_nadam_extras(rng, seed, kw):
    run_vs_ref(rng, seed, ot.NAdam, kw)


@_params([dict(lr=0.05, eps_placement="inside"), dict(lr=0.05, eps_placement="inside", eps=1e-3,
                                                       weight_decay=2 ** -7, maximize=True, lr_decay=0.01)])
def test_adagrad_eps_inside(rng, seed, kw):
    run_vs_ref(rng, seed, ot.Adagrad, kw)


@_params(_cases(lr=[0.01], eps_placement=["inside"], centered=[False, True], momentum=[0, 0.9]))
def test_rmsprop_eps_inside(rng, seed, kw):
    run_vs_ref(rng, seed, ot.RMSprop, kw)


@_params(_cases(momentum=[0, 0.9], eps_placement=["outside", "inside"])[1:]
         + [dict(lr=0.5, momentum=0.5, weight_decay=2 ** -7, maximize=True)])
def test_adadelta_extras(rng, seed, kw):
    run_vs_ref(rng, seed, ot.Adadelta, kw)


ADABOUND = (_cases(amsbound=[False, True], weight_decay=[0, 0.125], maximize=[False, True])
            + [dict(), dict(bias_correction=False), dict(eps_placement="inside", amsbound=True),
               dict(lr=1e-2, gamma=0.1, final_lr=0.05), dict(lr=1e-2, betas=(0.8, 0.99), gamma=0.5, eps=1e-3)])


@_params(ADABOUND)
def test_adabound(rng, seed, kw):
    run_vs_ref(rng, seed, ot.AdaBound, kw)


def test_adabound_lr_change_moves_the_bounds(rng, seed):
    """The reference scales final_lr by lr / base_lr (base_lr: the lr at
    construction), so a scheduler's lr change moves the bounds too."""
    def between(t, opt, ref):
        if t == 60:
            opt.param_groups[0]["lr"] = 1e-3
            ref.groups[0]["lr"] = 1e-3
        if t == 120:
            opt.param_groups[0]["lr"] = 5e-3
            ref.groups[0]["lr"] = 5e-3

    kw = dict(lr=1e-2, gamma=0.05, final_lr=0.05)
    opt, _, _ = run_vs_ref(rng, seed, ot.AdaBound, kw, dict(kw, base_lr=1e-2), between=between,
                           check_at=(59, 60, 61, 119, 120, 121, 200))
    assert opt.base_lrs == [1e-2]


def test_maximize_is_descent_on_the_negated_gradient(rng, seed):
    """For every class, maximize=True with gradient g moves the parameters
    exactly as maximize=False with gradient -g (and weight decay 0)."""
    ctors = [(ot.SGD, dict(lr=0.1, momentum=0.9)), (ot.Adagrad, {}), (ot.RMSprop, dict(centered=True)),
             (ot.Adadelta, dict(momentum=0.5)), (ot.Adam, dict(amsgrad=True)), (ot.AdamW, {}), (ot.RAdam, {}),
             (ot.NAdam, {}), (ot.AdaBound, dict(amsbound=True))]
    shapes = [(7,), (33,)]
    for cls, kw in ctors:
        p0 = make_params(rng, shapes)
        a, b = leaves(p0), leaves(p0)
        oa, ob = cls(a, maximize=True, **kw), cls(b, **kw)
        grads = Grads(rng, shapes)
        for _ in range(20):
            g = grads.next()
            set_grads(a, g)
            set_grads(b, [-x for x in g])
            oa.step()
            ob.step()
        for x, y in zip(a, b):
            assert torch.equal(x, y), "%s maximize, seed %d" % (cls.__name__, seed)
        assert_close(a[0], b[0], cls.__name__)


def test_threads_setting_changes_speed_not_bits():
    """set_threads: 0 (default) follows OpenMP / torch.set_num_threads; any value gives the same bits."""
    import optim.torch as ot
    g = torch.Generator().manual_seed(5)
    shapes = [(300, 700), (65537,), (3,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(5)]
    results = []
    for threads in (1, 2, 3, 0):
        ps = [t.clone().requires_grad_() for t in start]
        opt = ot.Adam(ps, lr=0.01, amsgrad=True)
        assert opt.threads == 0
        opt.set_threads(threads)
        assert opt.threads == threads
        for step in grads:
            for p, gr in zip(ps, step):
                p.grad = gr.clone()
            opt.step()
        results.append([p.detach().numpy().tobytes() for p in ps]
                       + [v.numpy().tobytes() for p in ps for v in opt.state[p].values() if torch.is_tensor(v)])
    assert all(r == results[0] for r in results[1:])
    for bad in (-1, 1.5, True, "2", 2 ** 31):
        with pytest.raises(ValueError, match=r"Adam.set_threads: threads = .* must be an int >= 0"):
            opt.set_threads(bad)
