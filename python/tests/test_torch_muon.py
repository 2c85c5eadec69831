"""optim.torch.Muon against torch.optim.Muon (torch >= 2.9; the installed torch 1.13 has none), transcribed
here in float64 from torch/optim/_muon.py (_single_tensor_muon, _zeropower_via_newtonschulz, _adjust_lr),
and its Newton-Schulz iteration also as Keller Jordan's zeropower_via_newtonschulz5 (github.com/KellerJordan/
Muon, muon.py: X / (||X|| + eps) where torch clamps). Both run without bfloat16 (in float64): ours runs in
float32, theirs in bfloat16; the float64 iteration is the one both approximate.

Step by step: before each step the reference takes our float32 parameters and momentum buffers, so that one
step of float32 arithmetic is compared with the same step in float64, over hundreds of steps. The error of a
parameter is measured against the size of its update (lr * max |X|): the iteration's float32 roundings grow
by at most the polynomial's slope at zero, a = 3.4445, per iteration (3.4445^5 ~ 490 ulps, ~5e-5), so 2e-4
of the update (tests/test_muon.c gives the same bound), plus the roundings of p itself.
"""
import copy
import io
import itertools
import math
import pickle

import pytest
import torch

import optim.torch as ot

SHAPES = [(16, 16), (24, 8), (8, 24), (7, 13), (1, 5)]
STEPS = 200


# ---- the reference: torch 2.9's _single_tensor_muon, transcribed in float64 ----------------------------


def _ns_torch(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz (use_addmm=False), in float64 (torch: bfloat16)."""
    a, b, c = ns_coefficients
    ortho = grad.clone()
    if grad.size(0) > grad.size(1):
        ortho = ortho.T
    ortho = ortho / ortho.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = ortho @ ortho.T
        upd = b * gram + c * gram @ gram
        ortho = a * ortho + upd @ ortho
    if grad.size(0) > grad.size(1):
        ortho = ortho.T
    return ortho


def _ns_keller(G, steps, coef=(3.4445, -4.7750, 2.0315), eps=1e-7):
    """KellerJordan/Muon muon.py zeropower_via_newtonschulz5, in float64 (the reference: bfloat16)."""
    a, b, c = coef
    X = G.clone()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


def _adjust_lr(lr, adjust_lr_fn, shape):
    A, B = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, A / B))
    return lr * 0.2 * math.sqrt(max(A, B))


def ref_step(param, grad, buf, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
             ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None, ns="torch"):
    """torch.optim._muon._single_tensor_muon for one parameter, float64 tensors, in place."""
    buf.lerp_(grad, 1 - momentum)
    update = grad.lerp(buf, momentum) if nesterov else buf
    if ns == "torch":
        update = _ns_torch(update, ns_coefficients, ns_steps, eps)
    else:
        update = _ns_keller(update, ns_steps, ns_coefficients, eps)
    adjusted_lr = _adjust_lr(lr, adjust_lr_fn, param.shape)
    param.mul_(1 - lr * weight_decay)
    param.add_(update, alpha=-adjusted_lr)
    return adjusted_lr * update.abs().max().item()


# ---- helpers ------------------------------------------------------------------------------------------


def _params(seed, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.5).requires_grad_() for s in shapes]


def _grads(params, gen):
    for p in params:
        p.grad = (p.detach() - 0.3) + 0.1 * torch.randn(p.shape, generator=gen)


CASES = [dict(nesterov=n, momentum=m, weight_decay=w, adjust_lr_fn=a, ns_steps=k)
         for n, m, w, a, k in itertools.product([True, False], [0.95, 0.3], [0.1, 0.0],
                                                [None, "match_rms_adamw"], [5, 2])]


def _ids(cases):
    return [",".join("%s=%s" % kv for kv in sorted(c.items())) for c in cases]


def _run_vs_reference(opts, steps, seed, ns="torch"):
    params = _params(seed)
    opt = ot.Muon(params, lr=0.02, **opts)
    kw = dict(opts, lr=0.02)
    gen = torch.Generator().manual_seed(seed + 1)
    worst = 0.0
    for t in range(steps):
        _grads(params, gen)
        before = [(p.detach().double().clone(), (opt.state[p]["momentum_buffer"].double().clone()
                                                 if p in opt.state and "momentum_buffer" in opt.state[p]
                                                 else torch.zeros(p.shape, dtype=torch.float64)))
                  for p in params]
        opt.step()
        for p, (p64, b64) in zip(params, before):
            bold = b64.abs()  # before ref_step moves it
            big = ref_step(p64, p.grad.double(), b64, ns=ns, **kw)
            err = (p.detach().double() - p64).abs()
            tol = 2e-4 * big + 2.5e-7 * p64.abs()
            bad = err > tol
            assert not bad.any(), ("%s, shape %s, step %d: worst error %.3g where the update is %.3g"
                                   % (opts, tuple(p.shape), t, err.max().item(), big))
            worst = max(worst, (err / tol).max().item())
            buf = opt.state[p]["momentum_buffer"].double()
            scale = bold + p.grad.double().abs() + 1e-30
            assert ((buf - b64).abs() <= 3e-7 * scale).all(), "%s: momentum_buffer at step %d" % (opts, t)
    return worst


# ---- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", CASES, ids=_ids(CASES))
def test_muon_vs_torch_muon_float64(opts):
    """Every option combination; the first runs STEPS steps, the others 12 (the same code paths)."""
    steps = STEPS if opts == CASES[0] else 12
    worst = _run_vs_reference(opts, steps, seed=11)
    print("worst error %.2f of the tolerance" % worst)


def test_muon_vs_keller_reference():
    """Keller Jordan's iteration (norm + eps where torch clamps: the same when ||U|| >> eps)."""
    _run_vs_reference(dict(nesterov=True, momentum=0.95, weight_decay=0.0, adjust_lr_fn=None, ns_steps=5),
                      STEPS, seed=5, ns="keller")


def test_defaults_and_group_keys_are_torch_2_9s():
    opt = ot.Muon([torch.zeros(3, 4, requires_grad=True)])
    g = opt.param_groups[0]
    assert (g["lr"], g["weight_decay"], g["momentum"], g["nesterov"], g["eps"], g["ns_steps"], g["adjust_lr_fn"]) \
        == (1e-3, 0.1, 0.95, True, 1e-7, 5, None)
    assert tuple(g["ns_coefficients"]) == (3.4445, -4.7750, 2.0315)


def test_refusals():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters whereas we found a parameter with "
                                         r"size: torch.Size\(\[3\]\)"):
        ot.Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        ot.Muon([torch.zeros(2, 3, 4, requires_grad=True)])
    opt = ot.Muon([torch.zeros(3, 4, requires_grad=True)])
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        opt.add_param_group({"params": [torch.zeros(5, requires_grad=True)]})
    with pytest.raises(TypeError, match="float32 parameters only"):
        ot.Muon([torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)])
    with pytest.raises(TypeError, match="Muon does not support complex"):
        ot.Muon([torch.zeros(3, 4, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(ValueError, match="Adjust learning rate function bogus is not supported"):
        ot.Muon([torch.zeros(3, 4, requires_grad=True)], adjust_lr_fn="bogus")
    with pytest.raises(ValueError, match="momentum should be >= 0"):
        ot.Muon([torch.zeros(3, 4, requires_grad=True)], momentum=-1)
    p = torch.zeros(3, 4, requires_grad=True)
    p.grad = torch.ones(3, 4)
    with pytest.raises(ValueError, match="ns_steps = 100"):  # torch: at the step; liboptim checks at once
        ot.Muon([p], ns_steps=100)
    opt = ot.Muon([p])
    opt.param_groups[0]["ns_steps"] = 100
    with pytest.raises(ValueError, match="ns_steps = 100"):
        opt.step()
    opt.param_groups[0]["ns_steps"] = 5
    opt.param_groups[0]["ns_coefficients"] = (1.0, 2.0)
    with pytest.raises(ValueError, match="ns_coefficients"):
        opt.step()
    assert (p == 0).all()
    # state in another dtype: liboptim's Muon keeps float32 state (named in the message)
    q = torch.zeros(3, 4, requires_grad=True)
    q.grad = torch.ones(3, 4)
    with pytest.raises((TypeError, ValueError, RuntimeError), match="muon steps float32 parameters"):
        ot.Muon([q], state_dtype=torch.bfloat16).step()


def _train(opt, params, gen, steps):
    for _ in range(steps):
        _grads(params, gen)
        opt.step()


def test_state_dict_and_checkpoint_round_trip():
    """state_dict (key momentum_buffer, torch's format), load_state_dict into a new optimizer, pickle and
    optim.torch's checkpoint: each resumes bit for bit."""
    params = _params(3)
    opt = ot.Muon(params, lr=0.02, adjust_lr_fn="match_rms_adamw")
    gen = torch.Generator().manual_seed(4)
    _train(opt, params, gen, 40)
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"momentum_buffer"}
    assert sd["param_groups"][0]["adjust_lr_fn"] == "match_rms_adamw"
    saved = [p.detach().clone() for p in params]
    gen_state = gen.get_state()
    buf = io.BytesIO()
    torch.save(sd, buf)
    _train(opt, params, gen, 40)
    want = [p.detach().clone() for p in params]

    # load_state_dict into a new optimizer (through torch.save's bytes)
    params2 = [s.clone().requires_grad_() for s in saved]
    opt2 = ot.Muon(params2, lr=0.5)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf))
    assert opt2.param_groups[0]["lr"] == 0.02
    gen.set_state(gen_state)
    _train(opt2, params2, gen, 40)
    for a, b in zip(want, params2):
        assert torch.equal(a, b.detach())

    # a deep copy (pickle) of the optimizer at step 40
    params3 = [s.clone().requires_grad_() for s in saved]
    opt3 = ot.Muon(params3, lr=0.02, adjust_lr_fn="match_rms_adamw")
    buf.seek(0)
    opt3.load_state_dict(torch.load(buf))  # (sd's tensors are views, as torch's: they moved on since)
    blob = pickle.dumps((params3, opt3))
    params4, opt4 = pickle.loads(blob)
    gen.set_state(gen_state)
    _train(opt4, params4, gen, 40)
    for a, b in zip(want, params4):
        assert torch.equal(a, b.detach())
    opt5 = copy.deepcopy(opt3)
    assert torch.equal(opt5.state[opt5.param_groups[0]["params"][0]]["momentum_buffer"],
                       opt3.state[params3[0]]["momentum_buffer"])


def test_layouts_other_than_row_major_step_as_their_values():
    """Muon reads a parameter as a row-major matrix: a transposed parameter, a parameter whose data is
    replaced by a transposed tensor, a gradient in another layout, a loaded transposed momentum buffer, a
    checkpoint and a param_groups edit each step bit for bit as the same values held contiguously."""
    gen = torch.Generator().manual_seed(21)
    w0 = [torch.randn(s, generator=gen) for s in [(6, 4), (5, 9), (7, 7)]]
    a = [w.clone().requires_grad_() for w in w0]
    b = [w.t().contiguous().t().requires_grad_() for w in w0]  # column-major leaves
    assert not b[0].is_contiguous()
    oa, ob = ot.Muon(a, lr=0.02), ot.Muon(b, lr=0.02)

    def step(t):
        for x, y in zip(a, b):
            g = torch.randn(x.shape, generator=gen)
            x.grad = g.clone()
            y.grad = g.t().contiguous().t() if t % 2 else g.clone()
        oa.step()
        ob.step()
        for x, y in zip(a, b):
            assert torch.equal(x.detach(), y.detach()), "step %d" % t
            assert torch.equal(oa.state[x]["momentum_buffer"], ob.state[y]["momentum_buffer"]), "step %d" % t

    for t in range(4):
        step(t)
    b[1].data = b[1].detach().t().contiguous().t()  # p.data = a tensor of the same values, transposed
    b[0].data = b[0].detach().contiguous()
    for t in range(4, 8):
        step(t)
    # torch's Muon keeps the gradient's strides: its state_dict may hold transposed buffers
    sd = copy.deepcopy(ob.state_dict())
    for st in sd["state"].values():
        st["momentum_buffer"] = st["momentum_buffer"].t().contiguous().t()
    ob.load_state_dict(sd)
    for t in range(8, 11):
        step(t)
    ob.param_groups[0]["params"] = list(reversed(b))  # a hand edit rebuilds the C object
    oa.param_groups[0]["params"] = list(reversed(a))
    for t in range(11, 13):
        step(t)


def test_checkpoint_file_round_trip(tmp_path):
    params = _params(8, [(12, 9), (5, 20)])
    opt = ot.Muon(params, lr=0.01, nesterov=False)
    gen = torch.Generator().manual_seed(9)
    _train(opt, params, gen, 20)
    path = str(tmp_path / "muon.ckpt")
    opt.save_checkpoint(path)
    saved = [p.detach().clone() for p in params]
    gen_state = gen.get_state()
    _train(opt, params, gen, 20)
    params2 = [s.clone().requires_grad_() for s in saved]
    opt2 = ot.Muon(params2)
    opt2.load_checkpoint(path)
    assert opt2.param_groups[0]["nesterov"] is False and opt2.param_groups[0]["lr"] == 0.01
    gen.set_state(gen_state)
    _train(opt2, params2, gen, 20)
    for a, b in zip(params, params2):
        assert torch.equal(a.detach(), b.detach())


# ---- MuonWithAuxAdam against Keller Jordan's, transcribed in float64 ---------------------------------


def _keller_aux_step(groups, params64, state64):
    """KellerJordan/Muon muon.py MuonWithAuxAdam.step (non-distributed), transcribed in float64:
    muon_update (nesterov, 5 steps, lr * max(1, rows / cols) ** 0.5) and adam_update."""
    for group in groups:
        for p in group["params"]:
            p64, g = params64[p], p.grad.double()
            st = state64[p]
            if group["use_muon"]:
                buf = st["momentum_buffer"]
                buf.lerp_(g, 1 - group["momentum"])
                update = g.lerp(buf, group["momentum"])
                update = _ns_keller(update, 5)
                update = update * max(1, g.size(-2) / g.size(-1)) ** 0.5
                p64.mul_(1 - group["lr"] * group["weight_decay"])
                p64.add_(update, alpha=-group["lr"])
                st["big"] = group["lr"] * update.abs().max().item()
            else:
                st["step"] += 1
                b1, b2 = group["betas"]
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].lerp_(g.square(), 1 - b2)
                m = st["exp_avg"] / (1 - b1 ** st["step"])
                v = st["exp_avg_sq"] / (1 - b2 ** st["step"])
                update = m / (v.sqrt() + group["eps"])
                p64.mul_(1 - group["lr"] * group["weight_decay"])
                p64.add_(update, alpha=-group["lr"])
                st["big"] = group["lr"] * update.abs().max().item()


def test_muon_with_aux_adam_vs_keller_reference():
    g = torch.Generator().manual_seed(21)
    hidden = [(torch.randn(s, generator=g) * 0.5).requires_grad_() for s in [(16, 12), (12, 20)]]
    other = [(torch.randn(s, generator=g) * 0.5).requires_grad_() for s in [(20,), (5, 16), ()]]
    groups = [dict(params=hidden, use_muon=True, lr=0.02, weight_decay=0.01),
              dict(params=other, use_muon=False, lr=3e-3, weight_decay=0.01)]
    opt = ot.MuonWithAuxAdam(groups)
    hid = {id(x) for x in hidden}
    assert opt.param_groups[0]["momentum"] == 0.95 and opt.param_groups[1]["betas"] == (0.9, 0.95)
    assert opt.param_groups[1]["eps"] == 1e-10
    gen = torch.Generator().manual_seed(22)
    for t in range(150):
        _grads(hidden + other, gen)
        if t == 100:
            opt.param_groups[0]["lr"] = 0.01  # a scheduler's change reaches the inner Muon
            opt.param_groups[1]["lr"] = 1e-3
        params64, state64 = {}, {}
        for p in hidden + other:
            params64[p] = p.detach().double().clone()
            st = opt.state.get(p, {})
            if id(p) in hid:
                state64[p] = {"momentum_buffer": st["momentum_buffer"].double().clone() if st
                              else torch.zeros(p.shape, dtype=torch.float64)}
            else:
                state64[p] = {"step": int(st["step"]) if st else 0,
                              "exp_avg": st["exp_avg"].double().clone() if st else torch.zeros(p.shape).double(),
                              "exp_avg_sq": st["exp_avg_sq"].double().clone() if st else torch.zeros(p.shape).double()}
        opt.step()
        _keller_aux_step(opt.param_groups, params64, state64)
        for p in hidden + other:
            big = state64[p]["big"]
            rel = 2e-4 if id(p) in hid else 1e-5  # AdamW: a few float32 roundings of the update
            err = (p.detach().double() - params64[p]).abs()
            assert (err <= rel * big + 2.5e-7 * params64[p].abs()).all(), \
                "step %d, shape %s: error %.3g, update %.3g" % (t, tuple(p.shape), err.max().item(), big)
    assert set(opt.state[hidden[0]]) == {"momentum_buffer"}
    assert set(opt.state[other[0]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_muon_with_aux_adam_groups_state_dict_and_pickle():
    with pytest.raises(ValueError, match="use_muon"):
        ot.MuonWithAuxAdam([dict(params=[torch.zeros(3, 4, requires_grad=True)])])
    with pytest.raises(ValueError, match="takes the keys"):
        ot.MuonWithAuxAdam([dict(params=[torch.zeros(3, 4, requires_grad=True)], use_muon=True, nesterov=False)])
    with pytest.raises(ValueError, match="Muon only supports 2D"):
        ot.MuonWithAuxAdam([dict(params=[torch.zeros(3, requires_grad=True)], use_muon=True)])

    def make(seed):
        g = torch.Generator().manual_seed(seed)
        w = [torch.randn(8, 6, generator=g).requires_grad_(), torch.randn(6, generator=g).requires_grad_()]
        return w, ot.MuonWithAuxAdam([dict(params=[w[0]], use_muon=True), dict(params=[w[1]], use_muon=False)])

    w, opt = make(1)
    gen = torch.Generator().manual_seed(2)
    _train(opt, w, gen, 30)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"momentum_buffer"} and set(sd["state"][1]) == {"step", "exp_avg", "exp_avg_sq"}
    assert [g["use_muon"] for g in sd["param_groups"]] == [True, False]
    saved, gen_state = [p.detach().clone() for p in w], gen.get_state()
    blob = pickle.dumps((w, opt))
    _train(opt, w, gen, 30)
    # load_state_dict into a new one
    w2, opt2 = make(7)
    with torch.no_grad():
        for a, b in zip(w2, saved):
            a.copy_(b)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf))
    gen.set_state(gen_state)
    _train(opt2, w2, gen, 30)
    # and the pickled copy
    w3, opt3 = pickle.loads(blob)
    gen.set_state(gen_state)
    _train(opt3, w3, gen, 30)
    for a, b, c in zip(w, w2, w3):
        assert torch.equal(a.detach(), b.detach()) and torch.equal(a.detach(), c.detach())


def test_muon_with_aux_adam_follows_hand_edits_and_gives_stats():
    """A tensor appended to (or removed from) a group's 'params' list by hand is stepped from the next step
    (it was silently never stepped), as by a Muon and an AdamW edited the same way, bit for bit; a tensor
    that is not 2-D appended to a Muon group is refused; enable_stats()/step_stats() give each parameter's
    statistics from the inner optimizer that steps it, in param_groups order."""
    g = torch.Generator().manual_seed(31)
    w0 = [torch.randn(s, generator=g) for s in [(6, 4), (3, 5), (7,), (2, 3)]]
    a = [w.clone().requires_grad_() for w in w0]
    b = [w.clone().requires_grad_() for w in w0]
    opt = ot.MuonWithAuxAdam([dict(params=[a[0]], use_muon=True), dict(params=[a[2]], use_muon=False)])
    opt.enable_stats()
    assert opt.stats_enabled
    mu = ot.Muon([b[0]], lr=0.02, weight_decay=0)
    ad = ot.AdamW([b[2]], lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0)
    for o in (mu, ad):
        o.enable_stats()
    gen = torch.Generator().manual_seed(32)
    for t in range(8):
        if t == 3:
            opt.param_groups[0]["params"].append(a[1])
            opt.param_groups[1]["params"].append(a[3])
            mu.param_groups[0]["params"].append(b[1])
            ad.param_groups[0]["params"].append(b[3])
        if t == 6:
            del opt.param_groups[0]["params"][0]
            del mu.param_groups[0]["params"][0]
        for x, y in zip(a, b):
            x.grad = torch.randn(x.shape, generator=gen)
            y.grad = x.grad.clone()
        opt.step()
        mu.step()
        ad.step()
        for x, y in zip(a, b):
            assert torch.equal(x.detach(), y.detach()), "step %d, shape %s" % (t, tuple(x.shape))
        assert opt.step_stats() == mu.step_stats() + ad.step_stats()
    assert opt.step_stats()[0]["step"] == 5  # a[1]: appended at step 3
    opt.param_groups[0]["params"].append(torch.zeros(4, requires_grad=True))
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        opt.step()
    with pytest.raises(ValueError, match="on = 1 must be True or False"):
        opt.enable_stats(1)


def test_named_parameters_added_and_refused_by_name():
    """add_param_group with (name, tensor) pairs (model.named_parameters()) is accepted (it raised
    AttributeError: the 2-D check read .ndim of the pair); a refused parameter is named by its index
    and name, after torch's own message."""
    w = torch.zeros(4, 6, requires_grad=True)
    opt = ot.Muon([("w", w)])
    v = torch.zeros(3, 3, requires_grad=True)
    opt.add_param_group({"params": [("v", v)]})
    assert opt.param_groups[1]["param_names"] == ["v"] and opt.param_groups[1]["params"] == [v]
    with pytest.raises(TypeError, match=r"Muon: parameter 2 \('u'\) of size \(3, 3\) has dtype torch.float64"):
        opt.add_param_group({"params": [("u", torch.zeros(3, 3, dtype=torch.float64, requires_grad=True))]})
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters whereas we found a parameter with "
                                         r"size: torch.Size\(\[3\]\) \(Muon: parameter 1 \('b'\)\)"):
        ot.Muon([("w", w), ("b", torch.zeros(3, requires_grad=True))])
    aux = ot.MuonWithAuxAdam([dict(params=[torch.zeros(5, requires_grad=True)], use_muon=False),
                              dict(params=[w], use_muon=True)])
    aux.param_groups[1]["params"].append(torch.zeros(2, 2, 2, requires_grad=True))
    with pytest.raises(ValueError, match=r"size: torch.Size\(\[2, 2, 2\]\) \(MuonWithAuxAdam: parameter 2\)"):
        aux.step()
