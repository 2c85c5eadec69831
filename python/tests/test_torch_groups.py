"""optim.torch used as torch.optim is used: parameter groups with their own
hyperparameters, values changed between steps (by hand and by torch's lr
schedulers), parameters without gradients, add_param_group mid-run, step
with a closure, zero_grad, and a real model trained with the class swapped.
Comparisons are against torch.optim in float32 with the harness's tolerance
(torch_ref64.rel_err <= 1e-5, robust near zero)."""
import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_harness import Grads, Pair, assert_close, leaves, make_params

SHAPES = [(), (7,), (10, 100), (32771,)]


def _groups(params, specs):
    return [dict(spec, params=[params[i] for i in idx]) for idx, spec in specs]


GROUP_CASES = [
    (ot.SGD, torch.optim.SGD, dict(lr=0.01),
     [([0, 3], dict(momentum=0.9, nesterov=True)), ([1], dict(lr=0.1, weight_decay=0.125)),
      ([2], dict(momentum=0.5, dampening=0.5, maximize=True))], {}),
    (ot.Adagrad, torch.optim.Adagrad, dict(lr=0.05),
     [([0, 1], dict(lr_decay=0.01)), ([2, 3], dict(initial_accumulator_value=0.5, weight_decay=2 ** -7))], {}),
    (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01),
     [([3], dict(centered=True, momentum=0.9)), ([0, 1, 2], dict(alpha=0.9))], {}),
    (ot.Adadelta, torch.optim.Adadelta, {},
     [([0, 2], dict(rho=0.5)), ([1, 3], dict(lr=0.3, weight_decay=0.125))], {}),
    (ot.Adam, torch.optim.Adam, dict(lr=1e-2),
     [([0, 3], dict(amsgrad=True)), ([1], dict(betas=(0.8, 0.99), weight_decay=0.125)), ([2], dict(lr=1e-3))], {}),
    (ot.AdamW, torch.optim.AdamW, dict(lr=1e-2),
     [([0, 1], dict(weight_decay=0.5)), ([2, 3], dict(amsgrad=True, maximize=True))], {}),
    (ot.RAdam, torch.optim.RAdam, dict(lr=1e-2),
     [([0, 1], dict(betas=(0.8, 0.99))), ([2, 3], dict(weight_decay=0.125))], dict(foreach=False)),
    (ot.NAdam, torch.optim.NAdam, dict(lr=1e-2),
     [([0, 1], dict(momentum_decay=0.02)), ([2, 3], dict(weight_decay=0.125, lr=3e-3))], dict(foreach=True)),
]


@pytest.mark.parametrize("ours,theirs,defaults,specs,torch_extra", GROUP_CASES,
                         ids=[c[0].__name__ for c in GROUP_CASES])
def test_param_groups_with_different_hyperparameters(rng, seed, ours, theirs, defaults, specs, torch_extra):
    p0 = make_params(rng, SHAPES)
    po, pt = leaves(p0), leaves(p0)
    pair = Pair(ours(_groups(po, specs), **defaults), po,
                theirs(_groups(pt, specs), **dict(defaults, **torch_extra)), pt)
    grads = Grads(rng, SHAPES)
    for t in range(1, 201):
        pair.step(grads.next())
        if t in (1, 100, 200):
            pair.check("%s groups seed %d step %d" % (ours.__name__, seed, t))
    pair.verify()


SCHEDULED = [
    (ot.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9), {}),
    (ot.Adagrad, torch.optim.Adagrad, dict(lr=0.1), {}),
    (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01, centered=True), {}),
    (ot.Adadelta, torch.optim.Adadelta, dict(lr=1.0), {}),
    (ot.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True), {}),
    (ot.AdamW, torch.optim.AdamW, dict(lr=0.01), {}),
    (ot.RAdam, torch.optim.RAdam, dict(lr=0.01), dict(foreach=False)),
    (ot.NAdam, torch.optim.NAdam, dict(lr=0.01), dict(foreach=True)),
]


@pytest.mark.parametrize("ours,theirs,kw,torch_extra", SCHEDULED, ids=[c[0].__name__ for c in SCHEDULED])
def test_lr_changed_between_steps(rng, seed, ours, theirs, kw, torch_extra):
    """By hand for some steps, then by torch.optim.lr_scheduler (which only
    writes group['lr']): the C optimizer must see every change."""
    p0 = make_params(rng, SHAPES)
    po, pt = leaves(p0), leaves(p0)
    oo = ours(po, **kw)
    otorch = theirs(pt, **dict(kw, **torch_extra))
    so = torch.optim.lr_scheduler.CosineAnnealingLR(oo, T_max=50)
    st = torch.optim.lr_scheduler.CosineAnnealingLR(otorch, T_max=50)
    pair = Pair(oo, po, otorch, pt)
    grads = Grads(rng, SHAPES)
    lrs = []
    for t in range(1, 201):
        if t <= 30:
            for opt in (oo, otorch):
                opt.param_groups[0]["lr"] = kw["lr"] * (1 + (t % 3)) / 2
        pair.step(grads.next())
        lrs.append(oo.param_groups[0]["lr"])
        if t > 30:
            so.step()
            st.step()
        if t in (1, 30, 100, 200):
            pair.check("%s lr changes seed %d step %d" % (ours.__name__, seed, t))
    pair.verify()
    assert len(set(lrs)) > 100  # the schedule did change the lr at (nearly) every step


def test_other_hyperparameters_changed_between_steps(rng, seed):
    """Momentum switched on mid-run (torch then starts the buffer from the
    gradient; so does the C object), betas, eps and weight_decay changed."""
    p0 = make_params(rng, SHAPES)
    cases = [(ot.SGD, torch.optim.SGD, dict(lr=0.05), [(20, "momentum", 0.9), (40, "weight_decay", 0.125),
                                                        (60, "nesterov", True), (80, "maximize", True)]),
             (ot.Adam, torch.optim.Adam, dict(lr=0.01), [(20, "betas", (0.5, 0.9)), (40, "eps", 1e-3),
                                                          (60, "weight_decay", 0.125), (80, "maximize", True)]),
             (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01), [(20, "alpha", 0.5), (40, "eps", 1e-3)])]
    for ours, theirs, kw, changes in cases:
        po, pt = leaves(p0), leaves(p0)
        pair = Pair(ours(po, **kw), po, theirs(pt, **kw), pt)
        grads = Grads(rng, SHAPES)
        for t in range(1, 101):
            for when, key, value in changes:
                if t == when:
                    pair.oo.param_groups[0][key] = value
                    pair.ot.param_groups[0][key] = value
            pair.step(grads.next())
            if t % 20 == 1 or t == 100:
                pair.check("%s changes seed %d step %d" % (ours.__name__, seed, t))
        pair.verify()


@pytest.mark.parametrize("ours,theirs,kw", [(ot.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
                                            (ot.Adam, torch.optim.Adam, dict(lr=0.01)),
                                            (ot.RMSprop, torch.optim.RMSprop, dict(lr=0.01)),
                                            (ot.Adadelta, torch.optim.Adadelta, {}),
                                            (ot.AdamW, torch.optim.AdamW, {})],
                         ids=["SGD", "Adam", "RMSprop", "Adadelta", "AdamW"])
def test_parameters_without_gradient_are_skipped(rng, seed, ours, theirs, kw):
    """p.grad None: the parameter is left alone and its step does not advance,
    as torch does; other parameters step."""
    p0 = make_params(rng, SHAPES)
    po, pt = leaves(p0), leaves(p0)
    oo, otorch = ours(po, **kw), theirs(pt, **kw)
    pair = Pair(oo, po, otorch, pt)
    grads = Grads(rng, SHAPES)
    for t in range(1, 61):
        g = grads.next()
        g = [None if (i == 1 and t < 10) or (i == 2 and t % 3 == 0) or i == 3 and t > 50 else x
             for i, x in enumerate(g)]
        pair.step(g)
        if t in (5, 20, 60):
            with_state = [i for i in range(len(pt)) if len(otorch.state[pt[i]])]
            assert [i for i in range(len(po)) if po[i] in oo.state] == with_state
            pair.check("%s sparse steps seed %d step %d" % (ours.__name__, seed, t), with_state)
    # Steps taken over the 60: tensor 0 every step, 1 from step 10 on, 2 all but every third, 3 up to step 50.
    # (torch.optim.SGD keeps no step count; the others do, and ours must equal it.)
    for i, steps in enumerate((60, 51, 40, 50)):
        assert i in with_state
        assert ("step" in otorch.state[pt[i]]) == (ours is not ot.SGD)
        if ours is not ot.SGD:
            assert float(otorch.state[pt[i]]["step"]) == steps, (i, otorch.state[pt[i]]["step"])
            assert float(oo.state[po[i]]["step"]) == steps, (i, oo.state[po[i]]["step"])
    pair.verify()


def test_add_param_group_mid_run(rng, seed):
    p0 = make_params(rng, SHAPES)
    po, pt = leaves(p0), leaves(p0)
    oo = ot.Adam(po[:2], lr=0.01)
    otorch = torch.optim.Adam(pt[:2], lr=0.01)
    pair = Pair(oo, po, otorch, pt)
    grads = Grads(rng, SHAPES)
    for t in range(1, 101):
        if t == 30:
            oo.add_param_group({"params": po[2:], "lr": 0.003, "amsgrad": True})
            otorch.add_param_group({"params": pt[2:], "lr": 0.003, "amsgrad": True})
        pair.step(grads.next())
    pair.check("add_param_group seed %d" % seed)
    pair.verify()
    assert [len(g["params"]) for g in oo.param_groups] == [2, 2]
    assert oo.param_groups[1]["amsgrad"] is True and oo.param_groups[1]["betas"] == (0.9, 0.999)
    assert float(oo.state[po[3]]["step"]) == 71.0


def test_adagrad_group_added_later_starts_at_its_own_accumulator():
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    opt = ot.Adagrad([{"params": [a], "initial_accumulator_value": 0.5}], initial_accumulator_value=0.25)
    assert torch.equal(opt.state[a]["sum"], torch.full((3,), 0.25))  # as torch: the constructor's value
    opt.add_param_group({"params": [b], "initial_accumulator_value": 2.0})
    assert torch.equal(opt.state[b]["sum"], torch.full((3,), 2.0))
    assert float(opt.state[b]["step"]) == 0.0


def test_adabound_add_param_group_keeps_its_base_lr(rng, seed):
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    opt = ot.AdaBound([a], lr=1e-3)
    opt.add_param_group({"params": [b], "lr": 1e-2})
    assert opt.base_lrs == [1e-3, 1e-2]


def _mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


@pytest.mark.parametrize("ours,theirs,kw,lr_moves", [(ot.Adam, torch.optim.Adam, dict(lr=1e-2), 0),
                                                     (ot.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9), 0),
                                                     (ot.RMSprop, torch.optim.RMSprop, dict(lr=1e-3), 2)],
                         ids=["Adam", "SGD", "RMSprop"])
def test_training_a_model_with_a_closure(rng, seed, ours, theirs, kw, lr_moves):
    """A drop-in swap in a real loop: step(closure) evaluates the closure with
    gradients enabled and returns its loss; zero_grad is torch's. The
    gradients depend on the parameters, so any difference would grow.

    RMSprop divides each gradient by its running RMS, so an element whose
    gradient is near zero moves by about lr whatever its size: when torch
    (which fuses multiply-adds) and optim (which does not) round such a
    gradient differently, that element can move by up to ~lr differently, and
    the model then follows. For RMSprop the parameters are therefore allowed
    to differ by `lr_moves` learning rates in absolute terms (a wrong formula
    drifts by far more over 100 steps); the losses must still agree to 1e-4."""
    x = torch.tensor(rng.standard_normal((64, 8)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, 64))
    losses = {}
    models = {}
    for name, cls in (("ours", ours), ("torch", theirs)):
        model = _mlp(seed)
        opt = cls(model.parameters(), **kw)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        out = []
        for _ in range(100):
            with torch.no_grad():  # step must enable gradients for the closure itself
                loss = opt.step(closure)
            out.append(float(loss))
        losses[name] = out
        models[name] = model
    assert losses["ours"][-1] < losses["ours"][0]
    assert_close(np.array(losses["ours"]), np.array(losses["torch"]), "losses seed %d" % seed, tol=1e-4)
    for a, b in zip(models["ours"].parameters(), models["torch"].parameters()):
        if lr_moves:
            diff = float((a.detach() - b.detach()).abs().max())
            assert diff <= lr_moves * kw["lr"], "model parameters seed %d: differ by %.3g > %g lr" % (
                seed, diff, lr_moves)
        else:
            assert_close(a, b, "model parameters seed %d" % seed, tol=1e-4)


def test_zero_grad_is_torchs():
    """zero_grad() and zero_grad(set_to_none=...) leave .grad as torch.optim's
    do: the same None or the same zeros (1.13's default zeroes in place and
    keeps the tensor)."""
    for kwargs in ({}, dict(set_to_none=False), dict(set_to_none=True)):
        grads = []
        for cls in (ot.SGD, torch.optim.SGD):
            p = torch.ones(3, requires_grad=True)
            opt = cls([p], lr=0.1)
            p.grad = g = torch.ones(3)
            opt.zero_grad(**kwargs)
            grads.append((p.grad, p.grad is g))
        (ours, ours_same), (theirs, theirs_same) = grads
        assert (ours is None) == (theirs is None), (kwargs, ours, theirs)
        if theirs is not None:
            assert torch.equal(ours, theirs) and ours_same == theirs_same, (kwargs, ours, theirs)
    p = torch.ones(3, requires_grad=True)
    opt = ot.SGD([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.zero_grad(set_to_none=True)
    assert p.grad is None
    opt.step()  # no gradient: nothing happens
    assert torch.equal(p, torch.ones(3))


def test_unchanged_groups_cost_nothing_and_one_call_steps_all(rng, monkeypatch):
    """Hyperparameters are pushed to C only when a group's values change, and
    a step is one call into the library whatever the number of tensors."""
    params = leaves(make_params(rng, [(3,)] * 6))
    opt = ot.Adam([{"params": params[:3]}, {"params": params[3:], "lr": 0.1}], lr=0.01)
    pushes, steps = [], []
    h = opt._h
    real_push, real_step = h.group_set_hparams, h.step_with
    monkeypatch.setattr(h, "group_set_hparams", lambda *a: (pushes.append(a[0]), real_push(*a)))
    monkeypatch.setattr(h, "step_with", lambda *a: (steps.append(a[0]), real_step(*a)))
    for p in params:
        p.grad = torch.ones(3)
    for _ in range(5):
        opt.step()
    assert pushes == [] and steps == [6] * 5
    opt.param_groups[1]["lr"] = 0.2
    opt.step()
    opt.step()
    assert pushes == [1]
    opt.param_groups[0]["betas"] = (0.5, 0.9)
    opt.param_groups[1]["betas"] = (0.5, 0.9)
    opt.step()
    assert pushes == [1, 0, 1]
    assert h.group_get_hparam(1, 1) == 0.2  # OPTIM_HP_LR
