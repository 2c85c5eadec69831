"""optim.torch.SGDScheduleFree and AdamWScheduleFree against a float64
transcription of the authors' reference step, train() and eval()
(facebookresearch/schedule_free at 59ed9b662d5ec5799aded7390b2482758423653c:
schedulefree/sgd_schedulefree.py and schedulefree/adamw_schedulefree.py, the
foreach branches; the transcription below follows their operations in
order, in float64, on plain tensors). Hundreds of steps, every option, an lr
changed between steps (lr_max depends on it), train/eval switches mid-run,
a parameter group of other options, and state_dict round trips both ways
(ours into the reference's keys and the reference's into ours)."""
import copy
import math

import pytest
import torch

import optim.torch as ot


class RefSF:
    """The reference's step, train() and eval(), in float64 (group scalars
    per group as it keeps them). kind: 'sgd' or 'adamw'."""

    def __init__(self, kind, params, groups):
        self.kind = kind
        self.groups = []
        for ps, g in zip(params, groups):
            g = dict(g)
            g.update(k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)
            g["params"] = [p.detach().clone().double() for p in ps]
            self.groups.append(g)
        self.state = {}

    def _c(self, g):
        return g["momentum"] if self.kind == "sgd" else g["betas"][0]

    def eval(self):
        for g in self.groups:
            if g["train_mode"]:
                for i, p in enumerate(g["params"]):
                    if "z" in self.state.get((id(g), i), {}):
                        p.lerp_(self.state[(id(g), i)]["z"], 1 - 1 / self._c(g))
                g["train_mode"] = False

    def train(self):
        for g in self.groups:
            if not g["train_mode"]:
                for i, p in enumerate(g["params"]):
                    if "z" in self.state.get((id(g), i), {}):
                        p.lerp_(self.state[(id(g), i)]["z"], 1 - self._c(g))
                g["train_mode"] = True

    def step(self, grads):
        assert self.groups[0]["train_mode"]
        for g, gs in zip(self.groups, grads):
            k = g["k"]
            warmup = g["warmup_steps"]
            sched = (k + 1) / warmup if k < warmup else 1.0
            lr = g["lr"] * sched
            g["scheduled_lr"] = lr
            lr_max = g["lr_max"] = max(lr, g["lr_max"])
            weight = ((k + 1) ** g["r"]) * (lr_max ** g["weight_lr_power"])
            weight_sum = g["weight_sum"] = g["weight_sum"] + weight
            try:
                ckp1 = weight / weight_sum
            except ZeroDivisionError:
                ckp1 = 0
            for i, (y, grad) in enumerate(zip(g["params"], gs)):
                grad = grad.double().clone()
                st = self.state.setdefault((id(g), i), {})
                if "z" not in st:
                    st["z"] = y.clone()
                    if self.kind == "adamw":
                        st["exp_avg_sq"] = torch.zeros_like(y)
                z = st["z"]
                if self.kind == "sgd":
                    if g["weight_decay"] != 0:
                        grad.add_(y, alpha=g["weight_decay"])
                    y.lerp_(z, ckp1)
                    y.add_(grad, alpha=lr * (g["momentum"] * (1 - ckp1) - 1))
                    z.sub_(grad, alpha=lr)
                else:
                    beta1, beta2 = g["betas"]
                    v = st["exp_avg_sq"]
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denom = v.div(1 - beta2 ** (k + 1)).sqrt_().add_(g["eps"])
                    grad.div_(denom)
                    if g["weight_decay"] != 0:
                        grad.add_(y, alpha=g["weight_decay"])
                    y.lerp_(z, ckp1)
                    y.add_(grad, alpha=lr * (beta1 * (1 - ckp1) - 1))
                    z.sub_(grad, alpha=lr)
            g["k"] = k + 1


SGD_OPTS = [dict(momentum=0.9), dict(momentum=0.3, weight_decay=0.05, warmup_steps=20, r=1.5, weight_lr_power=0),
            dict(momentum=0.6, weight_decay=0.01, warmup_steps=7, r=0.5, weight_lr_power=1)]
ADAMW_OPTS = [dict(), dict(betas=(0.4, 0.95), eps=1e-3, weight_decay=0.1, warmup_steps=20, r=1.5, weight_lr_power=3),
              dict(betas=(0.7, 0.99), eps=1e-6, weight_decay=0.02, warmup_steps=7, r=0.5, weight_lr_power=0)]
DEFAULTS = {"sgd": dict(lr=1.0, momentum=0.9, weight_decay=0, warmup_steps=0, r=0.0, weight_lr_power=2),
            "adamw": dict(lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0, r=0.0,
                          weight_lr_power=2.0)}
CASES = [("sgd", o) for o in SGD_OPTS] + [("adamw", o) for o in ADAMW_OPTS]
STEPS = 240


def _lr(base, t):
    """Up, down, up again: lr_max moves, then holds."""
    return base * (0.5 + t / 60 if t < 60 else (1.5 - (t - 60) / 120 if t < 180 else 0.5 + (t - 180) / 60))


def _make(kind, opts, dtype, seed):
    torch.manual_seed(seed)
    shapes = [(7, 5), (13,)], [(3, 4)]
    params = [[torch.randn(s, dtype=dtype) for s in shapes[0]], [torch.randn(s, dtype=dtype) for s in shapes[1]]]
    base = dict(DEFAULTS[kind])
    base.update(opts)
    base["lr"] = 0.05 if kind == "sgd" else 0.01
    other = dict(base, weight_decay=0, warmup_steps=0)  # a second group of other options
    groups = [base, other]
    cls = ot.SGDScheduleFree if kind == "sgd" else ot.AdamWScheduleFree
    ours = cls([dict(params=[p.clone().requires_grad_(True) for p in params[0]]),
                dict(params=[p.clone().requires_grad_(True) for p in params[1]], weight_decay=0, warmup_steps=0)],
               **{k: v for k, v in base.items()})
    ref = RefSF(kind, params, groups)
    return ours, ref


def _check(ours, ref, tol, where):
    for go, gr in zip(ours.param_groups, ref.groups):
        for p, q in zip(go["params"], gr["params"]):
            err = (p.detach().double() - q).abs().max().item() / max(1e-3, q.abs().max().item())
            assert err <= tol, "%s: error %.3g" % (where, err)
        assert go["train_mode"] == gr["train_mode"], where
        if gr["k"]:
            assert go["k"] == gr["k"] and go["lr_max"] == gr["lr_max"], where
            assert math.isclose(go["weight_sum"], gr["weight_sum"], rel_tol=1e-14), where
            assert math.isclose(go["scheduled_lr"], gr["scheduled_lr"], rel_tol=1e-15), where


def _sync(ours, ref):
    """The reference continues from our parameters and state (one step compared with one step)."""
    for go, gr in zip(ours.param_groups, ref.groups):
        for i, p in enumerate(go["params"]):
            gr["params"][i].copy_(p.detach().double())
            st = ours.state[p]
            for key in ("z", "exp_avg_sq"):
                if key in st:
                    ref.state[(id(gr), i)][key].copy_(st[key].double())


@pytest.mark.parametrize("kind,opts", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vs_reference(kind, opts, dtype):
    ours, ref = _make(kind, opts, dtype, 1)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    gen = torch.Generator().manual_seed(2)
    with pytest.raises(RuntimeError, match="train mode"):
        for g in ours.param_groups:
            for p in g["params"]:
                p.grad = torch.zeros_like(p)
        ours.step()  # the reference refuses a step before train(), so do we
    ours.train()
    ref.train()
    for t in range(1, STEPS + 1):
        if t in (90, 150):
            if dtype == torch.float32:
                _sync(ours, ref)
            ours.eval()
            ref.eval()
            _check(ours, ref, tol, "eval before step %d" % t)
            ours.eval()  # idempotent
            _check(ours, ref, tol, "second eval before step %d" % t)
            ours.train()
            ref.train()
            _check(ours, ref, tol, "train before step %d" % t)
        for go, gr in zip(ours.param_groups, ref.groups):
            go["lr"] = gr["lr"] = _lr(0.05 if kind == "sgd" else 0.01, t) if go is ours.param_groups[0] else go["lr"]
        grads = []
        for go in ours.param_groups:
            gs = []
            for p in go["params"]:
                g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype) * 0.3 + 0.05 * p.detach()
                p.grad = g.clone()
                gs.append(g)
            grads.append(gs)
        if dtype == torch.float32 and t > 1:
            _sync(ours, ref)
        ours.step()
        ref.step(grads)
        _check(ours, ref, tol, "step %d" % t)
    ours.eval()
    ref.eval()
    _check(ours, ref, tol, "final eval")
    # Our state_dict has the reference's keys: the reference (its transcription) can continue from it.
    sd = ours.state_dict()
    g0 = sd["param_groups"][0]
    for key in ("k", "train_mode", "weight_sum", "lr_max", "scheduled_lr", "warmup_steps", "r", "weight_lr_power"):
        assert key in g0, key
    for i in g0["params"]:
        assert set(sd["state"][i]) == ({"z"} if kind == "sgd" else {"z", "exp_avg_sq"})


@pytest.mark.parametrize("kind,opts", [CASES[1], CASES[4]])
def test_state_dict_round_trips(kind, opts):
    dtype = torch.float32
    ours, _ = _make(kind, opts, dtype, 3)
    gen = torch.Generator().manual_seed(4)

    def grads_for(o):
        return [[torch.randn(p.shape, generator=gen) for p in g["params"]] for g in o.param_groups]

    def apply(o, gs):
        for g, gg in zip(o.param_groups, gs):
            for p, x in zip(g["params"], gg):
                p.grad = x.clone()
        o.step()

    ours.train()
    for _ in range(50):
        apply(ours, grads_for(ours))
    ours.eval()  # saved in eval mode, as the reference advises
    sd = copy.deepcopy(ours.state_dict())
    params_saved = [[p.detach().clone() for p in g["params"]] for g in ours.param_groups]
    # 1. Ours into a new one of ours: the same bits from there on.
    cls = type(ours)
    twin = cls([dict(params=[p.clone().requires_grad_(True) for p in ps]) for ps in params_saved])
    twin.load_state_dict(sd)
    assert twin.param_groups[0]["train_mode"] is False
    more = [grads_for(ours) for _ in range(60)]
    for o in (ours, twin):
        o.train()
        for gs in more:
            apply(o, gs)
        o.eval()
    for go, gt in zip(ours.param_groups, twin.param_groups):
        assert go["k"] == gt["k"] and go["weight_sum"] == gt["weight_sum"]
        for p, q in zip(go["params"], gt["params"]):
            assert torch.equal(p, q)
            assert torch.equal(ours.state[p]["z"], twin.state[q]["z"])
    # 2. The reference's keys into ours: a state_dict as the reference writes it (its group keys, state z and
    #    exp_avg_sq, no per-parameter 'step'), continued by both.
    ref = RefSF(kind, params_saved, [dict(g) for g in sd["param_groups"]])
    for gr, gsd in zip(ref.groups, sd["param_groups"]):
        for key in ("k", "train_mode", "weight_sum", "lr_max", "scheduled_lr"):
            gr[key] = gsd[key]
        for i, pid in enumerate(gsd["params"]):
            ref.state[(id(gr), i)] = {key: v.double().clone() for key, v in sd["state"][pid].items()}
    rsd = {"state": {}, "param_groups": []}
    for gr, gsd in zip(ref.groups, sd["param_groups"]):
        rg = {key: v for key, v in gr.items() if key != "params"}
        rg["params"] = list(gsd["params"])
        rsd["param_groups"].append(rg)
        for i, pid in enumerate(gsd["params"]):
            rsd["state"][pid] = {key: v.float().clone() for key, v in ref.state[(id(gr), i)].items()}
    third = cls([dict(params=[p.clone().requires_grad_(True) for p in ps]) for ps in params_saved])
    third.load_state_dict(rsd)
    third.train()
    ref.train()
    for gs in more:
        for g, gg in zip(third.param_groups, gs):
            for p, x in zip(g["params"], gg):
                p.grad = x.clone()
        third.step()
        ref.step(gs)
    third.eval()
    ref.eval()
    _check(third, ref, 1e-4, "after the reference's state_dict")


def test_defaults_and_errors():
    p = torch.zeros(3, requires_grad=True)
    s = ot.SGDScheduleFree([p])
    a = ot.AdamWScheduleFree([p])
    for o, kind in ((s, "sgd"), (a, "adamw")):
        for key, v in DEFAULTS[kind].items():
            assert o.defaults[key] == v, key
        assert o.param_groups[0]["train_mode"] is False and o.param_groups[0]["k"] == 0
    with pytest.raises(ValueError, match="Momentum"):
        ot.SGDScheduleFree([p], momentum=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        ot.AdamWScheduleFree([p], warmup_steps=2.5)
    with pytest.raises(ValueError, match="beta1"):
        ot.AdamWScheduleFree([p], betas=(0.0, 0.999))
    # A parameter never stepped has no z: train()/eval() leave it alone, as the reference.
    a.train()
    a.eval()
    assert torch.equal(p.detach(), torch.zeros(3))


def test_param_groups_edited_by_hand_keep_scalars_and_mode():
    """An edit of param_groups rebuilds the C object (_members): the scalars, z and the mode carry over."""
    torch.manual_seed(5)
    w0 = torch.randn(6)
    a = ot.AdamWScheduleFree([w0.clone().requires_grad_(True)], lr=0.01, warmup_steps=3)
    b = ot.AdamWScheduleFree([w0.clone().requires_grad_(True)], lr=0.01, warmup_steps=3)
    gen = torch.Generator().manual_seed(6)
    grads = [torch.randn(6, generator=gen) for _ in range(12)]
    for o in (a, b):
        o.train()
    for t, g in enumerate(grads):
        if t == 6:
            extra = torch.zeros(2, requires_grad=True)  # no gradient: never stepped, never moved
            a.param_groups[0]["params"].append(extra)
        for o in (a, b):
            o.param_groups[0]["params"][0].grad = g.clone()
            o.step()
    for o in (a, b):
        o.eval()
    pa, pb = a.param_groups[0]["params"][0], b.param_groups[0]["params"][0]
    assert torch.equal(pa, pb) and torch.equal(a.state[pa]["z"], b.state[pb]["z"])
    assert a.param_groups[0]["weight_sum"] == b.param_groups[0]["weight_sum"]
    assert torch.equal(a.param_groups[0]["params"][1].detach(), torch.zeros(2))


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "checkpoint"])
@pytest.mark.parametrize("train_at_copy", [True, False])
def test_copies_keep_scalars_and_mode(how, train_at_copy, tmp_path):
    """A copy made by copy.deepcopy, pickle or save_checkpoint/load_checkpoint (into an optimizer left in the
    other mode) holds the original's mode and k, lr_max, weight_sum: train()/eval() and the steps that follow
    give the original's bits, and the group keys show them."""
    import pickle
    for kind, cls in (("sgd", ot.SGDScheduleFree), ("adamw", ot.AdamWScheduleFree)):
        gen = torch.Generator().manual_seed(17)
        w0 = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
        ps = [w.clone().requires_grad_(True) for w in w0]
        o = cls([dict(params=ps[:1]), dict(params=ps[1:], lr=0.02)], lr=0.05, warmup_steps=4)
        grads = [[torch.randn(w.shape, generator=gen) for w in w0] for _ in range(16)]

        def run(opt, params, gs):
            for g in gs:
                for p, x in zip(params, g):
                    p.grad = x.clone()
                opt.step()

        o.train()
        run(o, ps, grads[:6])
        if not train_at_copy:
            o.eval()
        if how == "deepcopy":
            o2 = copy.deepcopy(o)
        elif how == "pickle":
            o2 = pickle.loads(pickle.dumps(o))
        else:
            path = str(tmp_path / ("%s.ckpt" % kind))
            o.save_checkpoint(path)
            o2 = cls([dict(params=[p.detach().clone().requires_grad_(True) for p in ps[:1]]),
                      dict(params=[p.detach().clone().requires_grad_(True) for p in ps[1:]], lr=0.02)],
                     lr=0.05, warmup_steps=4)
            if not train_at_copy:
                o2.train()  # the other mode: nothing has a z yet, nothing moves
            o2.load_checkpoint(path)
        ps2 = [p for g in o2.param_groups for p in g["params"]]
        for g, g2 in zip(o.param_groups, o2.param_groups):
            for key in ("train_mode", "k", "lr_max", "weight_sum", "scheduled_lr"):
                assert g[key] == g2[key], (kind, how, key)
        for opt in (o, o2):
            opt.eval()
            opt.train()
        for p, q in zip(ps, ps2):
            assert torch.equal(p.detach(), q.detach()), (kind, how)
        run(o, ps, grads[6:])
        run(o2, ps2, grads[6:])
        for opt in (o, o2):
            opt.eval()
        for p, q in zip(ps, ps2):
            assert torch.equal(p.detach(), q.detach()), (kind, how)
            assert torch.equal(o.state[p]["z"], o2.state[q]["z"]), (kind, how)
        assert o.param_groups[0]["k"] == o2.param_groups[0]["k"] == 16


@pytest.mark.parametrize("kind,opts", [CASES[1], CASES[4]])
def test_group_scalars_edited_by_hand(kind, opts):
    """k, lr_max and weight_sum set by hand in a group (a warm-up started again: k = 0, lr_max = -1,
    weight_sum = 0) are what the reference's next step reads: ours follows (they were overwritten unseen);
    a group added in train mode says train_mode True (one mode); a bad k is refused naming it."""
    ours, ref = _make(kind, opts, torch.float64, 11)
    gen = torch.Generator().manual_seed(12)
    ours.train()
    ref.train()
    for t in range(40):
        if t == 25:
            for go, gr in zip(ours.param_groups, ref.groups):
                for key, v in (("k", 0), ("lr_max", -1.0), ("weight_sum", 0.0)):
                    go[key] = v
                    gr[key] = v
        gs = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in g["params"]]
              for g in ours.param_groups]
        for g, gg in zip(ours.param_groups, gs):
            for p, x in zip(g["params"], gg):
                p.grad = x.clone()
        ours.step()
        ref.step(gs)
    ours.eval()
    ref.eval()
    _check(ours, ref, 1e-12, "after a warm-up started again")
    ours.train()
    ours.add_param_group(dict(params=[torch.zeros(3, dtype=torch.float64, requires_grad=True)]))
    assert ours.param_groups[-1]["train_mode"] is True
    ours.param_groups[0]["k"] = -1
    with pytest.raises(ValueError, match=r"param group 0: k = -1 must be an int >= 0"):
        ours.step()
