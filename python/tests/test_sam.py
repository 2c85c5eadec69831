"""optim.torch.SAM: SAM and ASAM around optim.torch optimizers.

Two references:
  - an independent float64 implementation of the formulas (the perturbation
    e_hat for any p and ASAM's T_w = |w| + eta, here; the base rules from
    torch_ref64, themselves checked against torch.optim in test_torch_extras),
    with its own float64 gradients of the same loss, run side by side with
    optim.torch for 120 steps on a tiny MLP;
  - the reference PyTorch SAM's algorithm (github.com/davda54/sam), written out
    below in float32 torch over torch.optim, driven through the same interface.

Why 120 free-running steps can be compared: the settings (SGD lr 0.02 with
momentum 0.9, Adam lr 0.01) keep the trajectory stable, so float32 rounding
does not grow: over 8 seeds the largest difference from float64 was 5e-6
(torch_ref64.rel_err with run-wide scales), while a 1% change of rho, eta =
0.01 against 0, or p = 3 against 2.9 each give 2e-3 or more. The tolerance,
5e-5, sits between.
"""
import math

import numpy as np
import pytest
import torch

import optim.torch as ot
from torch_ref64 import Ref64

STEPS = 120
TOL64 = 5e-5
TOL32 = 3e-5
TOL_STEP = 1e-5

# ---- a small real loss -----------------------------------------------------------------

SHAPES = [(3, 16), (16,), (16, 1), (1,)]


class MLP:
    """A 3-16-1 tanh network fitted to 64 points of a smooth function (mean
    squared error): weights of several shapes, a 1-element bias, a loss whose
    curvature changes along the path."""

    def __init__(self, rng):
        self.x = rng.standard_normal((64, 3))
        self.y = np.sin(self.x @ np.array([1.0, -2.0, 0.5]))[:, None]
        self.w0 = [np.asarray(rng.standard_normal(s) * 0.5, dtype=np.float32) for s in SHAPES]

    def loss(self, ps):
        dt = ps[0].dtype
        x = torch.tensor(self.x, dtype=dt)
        y = torch.tensor(self.y, dtype=dt)
        h = torch.tanh(x @ ps[0] + ps[1])
        return ((h @ ps[2] + ps[3] - y) ** 2).mean()

    def params(self):
        return [torch.tensor(w, requires_grad=True) for w in self.w0]

    def backward(self, ps):
        """loss(ps).backward(): accumulates into .grad, as a training loop does."""
        loss = self.loss(ps)
        loss.backward()
        return loss

    def grad64(self, ws):
        """The float64 gradient at the float64 weights ws (numpy arrays)."""
        ps = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in ws]
        self.loss(ps).backward()
        return [p.grad.numpy() for p in ps]


# ---- the float64 reference ---------------------------------------------------------------


def e_hat64(ws, gs, rho, p, adaptive, eta):
    """The first-order solution of max_{||e||_p <= rho} L(w + e), in the
    scaled space of ASAM: with T = |w| + eta (ASAM) or 1 (SAM), h = T g and
    1/p + 1/q = 1, e = rho T sign(h) |h|^(q-1) / ||h||_q^(q-1), ||.||_q over all
    tensors as one vector; p = inf: e = rho T sign(h); p = 2 with 1e-12 added
    to the norm, as the reference does."""
    ts = [np.abs(w) + eta if adaptive else np.ones_like(w) for w in ws]
    hs = [t * g for t, g in zip(ts, gs)]
    if math.isinf(p):
        return [rho * t * np.sign(h) for t, h in zip(ts, hs)]
    q = p / (p - 1.0)
    norm = sum(float(np.sum(np.abs(h) ** q)) for h in hs) ** (1.0 / q)
    if p == 2:
        return [rho * t * h / (norm + 1e-12) for t, h in zip(ts, hs)]
    return [rho * t * np.sign(h) * np.abs(h) ** (q - 1.0) / norm ** (q - 1.0) for t, h in zip(ts, hs)]


class Runs:
    """Snapshots of two runs, compared at the end with run-wide scales: a
    difference is measured against the largest mean magnitude the same
    quantity had during the run (torch_harness's rule, see torch_ref64.rel_err),
    less `allowance` (an array of the same shape: what rounding the result
    to float32 alone explains)."""

    def __init__(self):
        self.snaps = []
        self.floor = {}

    def scale(self, name, value):
        value = np.asarray(value, dtype=np.float64)
        m = float(np.mean(np.abs(value))) if value.size else 0.0
        self.floor[name] = max(self.floor.get(name, 0.0), m)

    def record(self, t, name, ours, theirs, allowance=None, scale_of=None):
        a = _f64(ours)
        b = _f64(theirs)
        self.scale(name, b if scale_of is None else scale_of)
        self.snaps.append((t, name, a, b, allowance))

    def worst(self):
        """(largest error, step, name)."""
        out = (0.0, None, None)
        for t, name, a, b, allowance in self.snaps:
            diff = np.abs(a - b)
            if allowance is not None:
                diff = np.maximum(diff - allowance, 0.0)
            denom = np.abs(b) + max(self.floor[name], 1e-30)
            err = float(np.max(diff / denom)) if diff.size else 0.0
            if not np.all(np.isfinite(a) == np.isfinite(b)):
                err = math.inf
            out = max(out, (err, t, name), key=lambda x: x[0])
        return out


def _f64(x):
    if torch.is_tensor(x):
        return x.detach().double().numpy().copy()
    return np.array(x, dtype=np.float64)


def _half_ulp(x):
    """Half the float32 spacing at x: the error of rounding x to float32."""
    return 0.5 * np.spacing(np.abs(np.asarray(x, dtype=np.float64)).astype(np.float32)).astype(np.float64)


BASES = [("SGD", dict(lr=0.01, momentum=0.9)), ("Adam", dict(lr=0.005))]
VARIANTS = [
    dict(p=2, adaptive=False, eta=0.0),
    dict(p=math.inf, adaptive=False, eta=0.0),
    dict(p=3, adaptive=False, eta=0.0),
    dict(p=2, adaptive=True, eta=0.0),
    dict(p=2, adaptive=True, eta=0.05),
    dict(p=math.inf, adaptive=True, eta=0.1),
    dict(p=3, adaptive=True, eta=0.01),
]
VARIANT_IDS = ["p=%s,adaptive=%s,eta=%s" % (v["p"], v["adaptive"], v["eta"]) for v in VARIANTS]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("base,kw", BASES, ids=[b for b, _ in BASES])
def test_each_step_against_float64_formulas(rng, seed, base, kw, variant):
    """120 steps on the MLP; at each, the float64 reference starts from
    optim's weights and state and takes optim's float32 gradients, and must
    land where optim did: the perturbed weights w + e_hat after first_step,
    the weights and state after second_step. Only rounding separates them, so
    the sign of every element of h (p = inf) and |h|^(q-1) (p = 3) are
    compared, not the chaos of two trajectories (see the next test)."""
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM(ps, getattr(ot, base), rho=0.05, **variant, **kw)
    ref = Ref64(base, mlp.w0, [dict(kw, params=list(range(len(ps))))], float32_constants=True)
    runs = Runs()
    for t in range(1, STEPS + 1):
        ws = [_f64(p) for p in ps]
        ref.params = [w.copy() for w in ws]
        ref.state = [{k: (float(v) if k == "step" else _f64(v)) for k, v in sam.state[p].items() if v is not None}
                     for p in ps]
        mlp.backward(ps)
        gs = [_f64(p.grad) for p in ps]
        sam.first_step(zero_grad=True)
        for i, (p, w, e) in enumerate(zip(ps, ws, e_hat64(ws, gs, 0.05, **variant))):
            runs.record(t, ("w + e_hat", i), p, w + e, _half_ulp(w + e), scale_of=e)
        mlp.backward(ps)
        ref.step([_f64(p.grad) for p in ps])
        sam.second_step(zero_grad=True)
        for i, (p, w) in enumerate(zip(ps, ws)):
            runs.record(t, ("w", i), p, ref.params[i], _half_ulp(ref.params[i]), scale_of=ref.params[i] - w)
            for key, value in ref.state[i].items():
                if key != "step":
                    runs.record(t, (key, i), sam.state[p][key], value)
                else:
                    assert float(sam.state[p][key]) == value
    err, t, name = runs.worst()
    assert err <= TOL_STEP, "%s %s seed %d: %s differs from float64 by %.3g at step %d" % (
        base, variant, seed, name, err, t)
    assert float(mlp.loss(ps)) < float(mlp.loss([torch.tensor(w) for w in mlp.w0])), "the loss did not go down"


TRAJECTORIES = [("SGD", dict(p=2, adaptive=False, eta=0.0)), ("SGD", dict(p=2, adaptive=True, eta=0.05)),
                ("Adam", dict(p=2, adaptive=False, eta=0.0))]


@pytest.mark.parametrize("base,variant", TRAJECTORIES,
                         ids=["%s-adaptive=%s" % (b, v["adaptive"]) for b, v in TRAJECTORIES])
def test_trajectory_against_float64(rng, seed, base, variant):
    """The whole run: optim.torch and the float64 reference each on its own
    (float64 gradients at its float64 weights) for 120 steps. With p = 2 the
    perturbation is smooth in the gradient and these settings keep the path
    stable, so float32 rounding does not grow (p = inf and p = 3 are not: a
    sign that flips, or |h|^(q-1) near h = 0, sends two correct runs apart)."""
    kw = dict(BASES)[base]
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM(ps, getattr(ot, base), rho=0.05, **variant, **kw)
    ref = Ref64(base, mlp.w0, [dict(kw, params=list(range(len(ps))))], float32_constants=True)
    runs = Runs()
    for t in range(1, STEPS + 1):
        mlp.backward(ps)
        sam.first_step(zero_grad=True)
        mlp.backward(ps)
        sam.second_step(zero_grad=True)

        ws = ref.params
        e = e_hat64(ws, mlp.grad64(ws), 0.05, **variant)
        ref.step(mlp.grad64([w + d for w, d in zip(ws, e)]))
        for i, p in enumerate(ps):
            runs.record(t, i, p, ref.params[i])
    err, t, i = runs.worst()
    assert err <= TOL64, "%s %s seed %d: parameter %d differs from float64 by %.3g at step %d" % (
        base, variant, seed, i, err, t)


def test_the_dual_norm_is_reported(rng, seed):
    """last_grad_norm is ||T_w g||_q of the first step's gradient."""
    mlp = MLP(rng)
    for variant in VARIANTS:
        ps = mlp.params()
        sam = ot.SAM(ps, ot.SGD, rho=0.05, lr=0.02, **variant)
        assert math.isnan(sam.last_grad_norm)
        mlp.backward(ps)
        ws = [p.detach().double().numpy() for p in ps]
        gs = [p.grad.double().numpy() for p in ps]
        ts = [np.abs(w) + variant["eta"] if variant["adaptive"] else 1.0 for w in ws]
        hs = np.concatenate([(t * g).ravel() for t, g in zip(ts, gs)])
        p = variant["p"]
        q = 1.0 if math.isinf(p) else p / (p - 1.0)
        want = float(np.sum(np.abs(hs) ** q) ** (1.0 / q))
        sam.first_step()
        assert abs(sam.last_grad_norm - want) <= 1e-6 * want, "%s seed %d" % (variant, seed)
        sam.restore()


# ---- the reference PyTorch SAM's algorithm, in float32 torch -------------------------------


class ReferenceSAM(torch.optim.Optimizer):
    """The algorithm of the reference PyTorch SAM (github.com/davda54/sam,
    sam.py), written out for these tests: groups carry rho and adaptive; the
    base optimizer is built over the same groups; first_step saves each
    parameter with a gradient and adds e_w = (w^2 if adaptive else 1) * g *
    rho / (||(|w| if adaptive else 1) * g||_2 + 1e-12), the norm in float32
    over all parameters; second_step puts the saved w back and steps the base;
    step(closure) runs first_step(zero_grad=True), the closure with gradients
    enabled, second_step()."""

    def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kwargs):
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        per_tensor = [((p.abs() if group["adaptive"] else 1.0) * p.grad).norm(p=2)
                      for group in self.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.stack(per_tensor).norm(p=2)
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["saved_w"] = p.detach().clone()
                p.add_((p * p if group["adaptive"] else 1.0) * p.grad * scale)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.copy_(self.state[p]["saved_w"])
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        closure()
        self.second_step()


def _groups(ps, lr2, **second):
    """Two groups (the second with its own lr, and `second`'s keys) and a frozen tensor: a model
    whose last parameter never gets a gradient."""
    return [{"params": ps[:2]}, dict({"params": ps[2:], "lr": lr2}, **second)]


@pytest.mark.parametrize("adaptive", [False, True], ids=["SAM", "ASAM"])
@pytest.mark.parametrize("base,kw", [(torch.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
                                     (torch.optim.Adam, dict(lr=0.005, weight_decay=0.125))],
                         ids=["SGD", "Adam"])
@pytest.mark.parametrize("drive", ["two-steps", "closure"])
def test_sam_follows_the_reference_algorithm(rng, seed, base, kw, adaptive, drive):
    """Same interface, same trajectory as the reference algorithm over
    torch.optim in float32: optim.torch.SAM is given the torch.optim class and
    replaces it by optim.torch's."""
    mlp = MLP(rng)
    frozen = [torch.tensor(rng.standard_normal(5), dtype=torch.float32, requires_grad=True) for _ in range(2)]
    po, pr = mlp.params(), mlp.params()
    fo, fr = [f.detach().clone().requires_grad_() for f in frozen], [f.detach().clone().requires_grad_()
                                                                       for f in frozen]
    # The second group has its own rho and the other adaptive setting, as the reference allows.
    second = dict(rho=0.1, adaptive=not adaptive)
    ours = ot.SAM(_groups(po, 0.005, **second) + [{"params": fo}], base, rho=0.05, adaptive=adaptive, **kw)
    theirs = ReferenceSAM(_groups(pr, 0.005, **second) + [{"params": fr}], base, rho=0.05, adaptive=adaptive, **kw)
    assert type(ours.base_optimizer) is getattr(ot, base.__name__)
    assert ours.param_groups is ours.base_optimizer.param_groups
    assert [g["rho"] for g in ours.param_groups] == [0.05, 0.1, 0.05]
    assert [g["adaptive"] for g in ours.param_groups] == [adaptive, not adaptive, adaptive]
    runs = Runs()
    for t in range(1, 101):
        for sam, ps in ((ours, po), (theirs, pr)):
            if drive == "closure":
                mlp.backward(ps)
                sam.step(lambda ps=ps: mlp.backward(ps))
                sam.zero_grad()
            else:
                mlp.backward(ps)
                sam.first_step(zero_grad=True)
                mlp.backward(ps)
                sam.second_step(zero_grad=True)
        for i, (a, b) in enumerate(zip(po, pr)):
            runs.record(t, ("w", i), a, b)
            for key, value in theirs.base_optimizer.state[b].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    runs.record(t, (key, i), ours.state[a][key], value)
    err, t, name = runs.worst()
    assert err <= TOL32, "seed %d: %s differs from the reference by %.3g at step %d" % (seed, name, err, t)
    for a, b in zip(fo + frozen, fr + frozen):
        assert torch.equal(a, b), "a parameter without gradient moved"
    assert all(ours.state[a]["step"] == theirs.base_optimizer.state[b]["step"] for a, b in zip(po, pr)
               if "step" in ours.state[a])


def test_step_returns_the_loss_and_restores_when_the_closure_fails(rng):
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM(ps, ot.SGD, lr=0.02)
    mlp.backward(ps)
    w0 = [p.detach().clone() for p in ps]
    loss = sam.step(lambda: mlp.backward(ps))
    assert torch.is_tensor(loss) and loss.dim() == 0
    assert not all(torch.equal(a, b) for a, b in zip(w0, ps))

    def failing():
        raise KeyError("data loader ran out")

    mlp.backward(ps)
    w1 = [p.detach().clone() for p in ps]
    with pytest.raises(KeyError, match="data loader"):
        sam.step(failing)
    assert all(torch.equal(a, b) for a, b in zip(w1, ps)) and not sam.perturbed


def test_gradients_rebound_between_the_halves(rng):
    """zero_grad(set_to_none=True) between the halves: backward() makes new
    gradient tensors, which second_step finds (the C object is rebound)."""
    mlp = MLP(rng)
    pa, pb = mlp.params(), mlp.params()
    a = ot.SAM(pa, ot.Adam, lr=0.01)
    b = ot.SAM(pb, ot.Adam, lr=0.01)
    for _ in range(5):
        mlp.backward(pa)
        a.first_step()
        a.zero_grad(set_to_none=True)
        mlp.backward(pa)
        a.second_step()
        a.zero_grad(set_to_none=True)
        mlp.backward(pb)
        b.first_step(zero_grad=True)
        mlp.backward(pb)
        b.second_step(zero_grad=True)
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))


def test_restore_abandons_the_step(rng):
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM(ps, ot.Adam, lr=0.01)
    w0 = [p.detach().clone() for p in ps]
    mlp.backward(ps)
    sam.first_step()
    assert sam.perturbed and not all(torch.equal(a, b) for a, b in zip(w0, ps))
    sam.restore()
    assert not sam.perturbed and all(torch.equal(a, b) for a, b in zip(w0, ps))
    assert len(sam.state) == 0  # the base never stepped
    with pytest.raises(RuntimeError, match="no first_step to complete"):
        sam.second_step()


# ---- groups, schedules, state ------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_lr_scheduler_and_group_changes_reach_the_base(rng):
    mlp = MLP(rng)
    pa, pb = mlp.params(), mlp.params()
    a = ot.SAM(pa, ot.SGD, rho=0.05, lr=0.05, momentum=0.9)
    b = ot.SAM(pb, ot.SGD, rho=0.05, lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(a, step_size=3, gamma=0.5)
    for t in range(10):
        for sam, ps in ((a, pa), (b, pb)):
            mlp.backward(ps)
            sam.first_step(zero_grad=True)
            mlp.backward(ps)
            sam.second_step(zero_grad=True)
        sched.step()
        b.base_optimizer.param_groups[0]["lr"] = 0.05 * 0.5 ** ((t + 1) // 3)
        if t == 5:
            for sam in (a, b):
                sam.param_groups[0]["rho"] = 0.1  # rho is read from the groups at each first_step
    assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"] == 0.05 * 0.5 ** 3
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))


def test_save_load_continues_with_the_same_bits(rng, seed):
    """Split versus whole: 30 + 30 steps through state_dict equal 60 steps."""
    mlp = MLP(rng)
    pw, p1 = mlp.params(), mlp.params()
    kw = dict(rho=0.1, adaptive=True, eta=0.01, p=3, lr=0.01, betas=(0.8, 0.99))
    whole, first = ot.SAM(pw, ot.Adam, **kw), ot.SAM(p1, ot.Adam, **kw)

    def steps(sam, ps, n):
        for _ in range(n):
            mlp.backward(ps)
            sam.first_step(zero_grad=True)
            mlp.backward(ps)
            sam.second_step(zero_grad=True)

    steps(whole, pw, 60)
    steps(first, p1, 30)
    sd = first.state_dict()
    assert sd["param_groups"][0]["rho"] == 0.1 and sd["param_groups"][0]["p"] == 3
    assert sd["param_groups"][0]["adaptive"] is True and sd["param_groups"][0]["eta"] == 0.01
    p2 = [p.detach().clone().requires_grad_() for p in p1]
    second = ot.SAM(p2, ot.Adam, lr=0.5)  # SAM's settings and the lr come from the state
    second.load_state_dict(sd)
    assert second.param_groups is second.base_optimizer.param_groups
    assert second.param_groups[0]["lr"] == 0.01 and second.param_groups[0]["p"] == 3
    steps(second, p2, 30)
    for a, b in zip(pw, p2):
        assert torch.equal(a, b), "seed %d" % seed


def test_loads_the_reference_format_and_a_base_state(rng):
    """The reference's state_dict (SAM's groups, per-parameter 'old_p') and a
    base optimizer's (no SAM keys: they keep their values) both load."""
    mlp = MLP(rng)
    pr = mlp.params()
    ref = ReferenceSAM(pr, torch.optim.SGD, rho=0.2, adaptive=True, lr=0.02, momentum=0.9)
    mlp.backward(pr)
    ref.first_step(zero_grad=True)
    mlp.backward(pr)
    ref.second_step(zero_grad=True)
    sd = ref.state_dict()
    for st in sd["state"].values():
        st["old_p"] = st.pop("saved_w")  # the reference's key
    ps = mlp.params()
    sam = ot.SAM(ps, ot.SGD, lr=0.1)
    sam.load_state_dict(sd)
    g = sam.param_groups[0]
    assert (g["rho"], g["adaptive"], g["lr"], g["momentum"]) == (0.2, True, 0.02, 0.9)
    assert len(sam.state) == 0  # the reference saves no momentum buffers

    base = ot.SGD(mlp.params(), lr=0.03, momentum=0.5)
    sam.load_state_dict(base.state_dict())
    g = sam.param_groups[0]
    assert (g["rho"], g["adaptive"], g["lr"], g["momentum"]) == (0.2, True, 0.03, 0.5)


def test_add_param_group_after_steps(rng):
    mlp = MLP(rng)
    ps = mlp.params()
    extra = torch.zeros(4, requires_grad=True)
    sam = ot.SAM(ps, ot.SGD, rho=0.05, lr=0.02)
    mlp.backward(ps)
    sam.step(lambda: mlp.backward(ps))
    sam.add_param_group({"params": [extra], "lr": 0.1})
    assert sam.param_groups[1]["rho"] == 0.05 and len(sam.base_optimizer.param_groups) == 2
    sam.zero_grad()
    mlp.backward(ps)
    extra.grad = torch.ones(4)
    sam.first_step()
    assert torch.all(extra != 0)  # perturbed along with the rest
    extra.grad = torch.ones(4)
    mlp.backward(ps)
    sam.second_step()
    assert torch.allclose(extra, torch.full((4,), -0.1))


def test_around_adadelta_sams_rho_has_its_own_key(rng):
    """Adadelta's own hyperparameter is called rho: SAM's is kept as 'sam_rho'."""
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM(ps, ot.Adadelta, rho=0.05, lr=1.0)
    g = sam.param_groups[0]
    assert g["sam_rho"] == 0.05 and g["rho"] == 0.9
    ref = Ref64("Adadelta", mlp.w0, [dict(lr=1.0, rho=0.9, params=list(range(4)))], float32_constants=True)
    runs = Runs()
    for t in range(30):
        mlp.backward(ps)
        sam.first_step(zero_grad=True)
        mlp.backward(ps)
        sam.second_step(zero_grad=True)
        ws = ref.params
        e = e_hat64(ws, mlp.grad64(ws), 0.05, 2, False, 0.0)
        ref.step(mlp.grad64([w + d for w, d in zip(ws, e)]))
        for i, p in enumerate(ps):
            runs.record(t, i, p, ref.params[i])
    assert runs.worst()[0] <= TOL64


def test_fused_clipping_clips_the_base_steps_gradient(rng):
    """clip_grad_norm= on the base: the gradient at w + e_hat is clipped (the
    ascent step normalises its own), the same bits as clip_grad_norm_ before
    second_step."""
    mlp = MLP(rng)
    pa, pb = mlp.params(), mlp.params()
    a = ot.SAM(pa, ot.SGD, rho=0.05, lr=0.01, momentum=0.9, clip_grad_norm=(0.05, 2.0))
    b = ot.SAM(pb, ot.SGD, rho=0.05, lr=0.01, momentum=0.9)
    clipped = 0
    for _ in range(20):
        mlp.backward(pa)
        a.first_step(zero_grad=True)
        mlp.backward(pa)
        a.second_step(zero_grad=True)
        mlp.backward(pb)
        b.first_step(zero_grad=True)
        mlp.backward(pb)
        norm = ot.clip_grad_norm_(pb, 0.05)
        clipped += float(norm) > 0.05
        b.second_step(zero_grad=True)
        assert np.float32(a.base_optimizer.last_grad_norm) == float(norm)
    assert clipped > 0
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))


# ---- non-finite gradients ------------------------------------------------------------------


def _bytes(sam, ps):
    out = [p.detach().numpy().tobytes() for p in ps]
    for p in ps:
        for k, v in sorted(sam.state[p].items()):
            out.append((k, v.numpy().tobytes() if torch.is_tensor(v) else v))
    return out


def test_nonfinite_skip_skips_the_whole_sam_step(rng):
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM(ps, ot.Adam, lr=0.01, nonfinite="skip")
    for _ in range(3):
        mlp.backward(ps)
        sam.step(lambda: mlp.backward(ps))
        sam.zero_grad()
    before = _bytes(sam, ps)
    mlp.backward(ps)
    ps[2].grad[5, 0] = float("nan")
    sam.first_step(zero_grad=True)
    assert not sam.perturbed and _bytes(sam, ps) == before
    mlp.backward(ps)
    sam.second_step(zero_grad=True)
    assert _bytes(sam, ps) == before
    assert sam.last_step_skipped and sam.skipped_steps == 1
    mlp.backward(ps)
    sam.step(lambda: mlp.backward(ps))
    assert not sam.last_step_skipped and _bytes(sam, ps) != before


def test_nonfinite_error_names_the_parameter(rng):
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM(ps, ot.SGD, lr=0.02, nonfinite="error")
    mlp.backward(ps)
    ps[1].grad[3] = float("inf")
    before = _bytes(sam, ps)
    with pytest.raises(ot.NonFiniteGradientError, match=r"SAM\(SGD\): first_step: the gradient of parameter 1 "
                                                        r"\(shape \(16,\).*holds NaN or Inf; nothing moved") as exc:
        sam.first_step()
    assert exc.value.index == 1 and exc.value.param is ps[1] and exc.value.group == 0
    assert _bytes(sam, ps) == before and not sam.perturbed
    # The gradient at w + e_hat is checked by the base step: w comes back, nothing is updated.
    sam.zero_grad()
    mlp.backward(ps)
    sam.first_step(zero_grad=True)
    mlp.backward(ps)
    ps[0].grad[0, 0] = float("nan")
    with pytest.raises(ot.NonFiniteGradientError, match="second_step: the gradient of parameter 0 .*w was restored"):
        sam.second_step()
    assert _bytes(sam, ps) == before and not sam.perturbed


def test_nonfinite_propagate_perturbs_with_nan_as_the_reference(rng):
    mlp = MLP(rng)
    po, pr = mlp.params(), mlp.params()
    ours = ot.SAM(po, ot.SGD, lr=0.02)
    theirs = ReferenceSAM(pr, torch.optim.SGD, lr=0.02)
    for sam, ps in ((ours, po), (theirs, pr)):
        mlp.backward(ps)
        ps[3].grad[0] = float("nan")
        sam.first_step()
    for a, b in zip(po, pr):
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and bool(torch.isnan(a).all())


# ---- errors --------------------------------------------------------------------------------


def test_base_optimizer_is_checked():
    p = [torch.zeros(3, requires_grad=True)]
    assert type(ot.SAM(p, torch.optim.Adam).base_optimizer) is ot.Adam
    assert type(ot.SAM([torch.zeros(3, requires_grad=True)], ot.RAdam, lr=0.1).base_optimizer) is ot.RAdam

    class MyAdam(torch.optim.Adam):
        pass

    for bad, msg in [(torch.optim.LBFGS, "torch.optim.lbfgs.LBFGS is not supported"),
                     (MyAdam, "MyAdam is not supported"),
                     (ot.Adam(p), "must be a class, not an instance"),
                     ("Adam", "must be an optim.torch optimizer class")]:
        with pytest.raises(TypeError, match=msg):
            ot.SAM([torch.zeros(3, requires_grad=True)], bad)


def test_settings_are_checked():
    def make(**kw):
        return ot.SAM([torch.zeros(3, requires_grad=True)], ot.SGD, lr=0.1, **kw)

    for kw, msg in [(dict(rho=-0.1), "rho = -0.1 must be a finite number >= 0"),
                    (dict(rho=math.inf), "rho = inf"),
                    (dict(p=1), "p = 1.0 must be > 1 or inf"),
                    (dict(p="two"), "p = 'two' must be a number"),
                    (dict(adaptive="yes"), "adaptive = 'yes' must be True or False"),
                    (dict(adaptive=True, eta=-1), "eta = -1.0 must be a finite number >= 0"),
                    (dict(eta=0.1), "eta = 0.1 applies only to ASAM")]:
        with pytest.raises(ValueError, match=msg):
            make(**kw)
    with pytest.raises(ValueError, match="required 'lr'|required optimization parameter lr"):
        ot.SAM([torch.zeros(3, requires_grad=True)], ot.SGD)


def test_groups_must_agree_on_p_and_steps_must_pair(rng):
    mlp = MLP(rng)
    ps = mlp.params()
    sam = ot.SAM([{"params": ps[:2]}, {"params": ps[2:], "p": 3}], ot.SGD, lr=0.02)
    mlp.backward(ps)
    w0 = [p.detach().clone() for p in ps]
    with pytest.raises(ValueError, match="param group 1 has p = 3.0 but group 0 has 2.0"):
        sam.first_step()
    assert all(torch.equal(a, b) for a, b in zip(w0, ps))
    sam.param_groups[1]["p"] = 2
    sam.param_groups[0]["p"] = 0.5
    with pytest.raises(ValueError, match="param group 0: p = 0.5 must be > 1"):
        sam.first_step()
    sam.param_groups[0]["p"] = 2
    with pytest.raises(RuntimeError, match="no first_step to complete"):
        sam.second_step()
    sam.first_step()
    with pytest.raises(RuntimeError, match="called twice"):
        sam.first_step()
    with pytest.raises(RuntimeError, match="between first_step and second_step"):
        sam.load_state_dict(sam.state_dict())
    sam.second_step()
    with pytest.raises(ValueError, match="needs a closure"):
        sam.step()
    sam.first_step()
    with pytest.raises(RuntimeError, match="cannot be copied or pickled between first_step and second_step"):
        import copy
        copy.deepcopy(sam)
    sam.restore()
