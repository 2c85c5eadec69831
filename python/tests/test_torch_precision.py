"""optim.torch's reduced-precision keywords (docs/PRECISION.md): master_weights=,
stochastic_rounding=, loss_scale=, and what state_dict(), pickling, checkpoints
and param_groups edits carry of them.

References: a float32 optim.torch optimizer fed the widened gradients (its
float32 steps are torch.optim's bits, test_torch_bits.py) for the master;
torch.cuda.amp.GradScaler's update transcribed (torch 1.13's
grad_scaler.py and _amp_update_scale_; GradScaler itself needs CUDA in
1.13) for the loss scale; the uninterrupted run for every resume."""
import copy
import math
import pickle

import pytest
import torch

import optim.torch as ot

CLASSES = [ot.SGD, ot.Adagrad, ot.RMSprop, ot.Adadelta, ot.Adam, ot.AdamW, ot.RAdam, ot.NAdam, ot.AdaBound, ot.Lion,
           ot.Adamax, ot.ASGD, ot.Rprop, ot.LAMB, ot.LARS]


def _kw(cls):
    return {"lr": 1e-2} if cls is ot.SGD else {}


def _model(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(37, 11, generator=g).to(dtype).requires_grad_(), torch.randn(600, generator=g).to(dtype)
            .requires_grad_()]


def _grads(params, t, scale=1.0):
    g = torch.Generator().manual_seed(1000 + t)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * scale).to(p.dtype)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_master_weights_are_a_float32_run(cls, dtype):
    """master_weights=True: state[p]['master'] is exactly a float32 optimizer's
    parameter fed the widened gradients, p is it rounded to nearest even, and
    the state is float32, at every step."""
    half = _model(dtype)
    ref = [p.detach().float().requires_grad_() for p in half]
    opt = cls(half, master_weights=True, **_kw(cls))
    opt_ref = cls(ref, **_kw(cls))
    for t in range(25):
        _grads(half, t)
        for r, h in zip(ref, half):
            r.grad = h.grad.float()
        opt.step()
        opt_ref.step()
        for r, h in zip(ref, half):
            st = opt.state[h]
            assert st["master"].dtype is torch.float32
            assert torch.equal(st["master"], r.detach()), (cls.__name__, t)
            assert torch.equal(h.detach(), r.detach().to(dtype)), (cls.__name__, t)
            for key, v in opt_ref.state[r].items():
                if torch.is_tensor(v) and v.dim() > 0:
                    assert st[key].dtype is torch.float32 and torch.equal(st[key], v), (key, t)


def test_master_rebind_and_sync():
    """Replacing p.data keeps the master (the truth: the next step writes p
    from it); master_sync(p) re-initialises it from p."""
    p = torch.full((64,), 1.0, dtype=torch.bfloat16, requires_grad=True)
    opt = ot.SGD([p], lr=1e-3, master_weights=True)
    p.grad = torch.full((64,), 0.5, dtype=torch.bfloat16)
    opt.step()
    master = opt.state[p]["master"]
    assert torch.all(master == 1.0 - 5e-4) and torch.all(p.detach() == 1.0)  # below half an ulp: p stays
    p.data = torch.full((64,), -7.0, dtype=torch.bfloat16)
    opt.step()
    assert torch.equal(p.detach(), master.to(torch.bfloat16)) and torch.all(master > 0.99)
    with torch.no_grad():
        p.fill_(-7.0)
    opt.master_sync(p)
    assert torch.all(opt.state[p]["master"] == -7.0)
    q = torch.zeros(3, requires_grad=True)
    opt.add_param_group({"params": [q]})
    with pytest.raises(ValueError, match="no.*master|not a parameter with an fp32 master"):
        opt.master_sync(q)


def test_stochastic_rounding_moves_where_nearest_stalls():
    """bfloat16 SGD with updates of 1e-4 at 1.0 (an ulp is 2^-7): nearest
    rounding never moves; stochastic rounding moves by the updates' sum."""
    moved = {}
    for sr in (False, True):
        p = torch.ones(4096, dtype=torch.bfloat16, requires_grad=True)
        opt = ot.SGD([p], lr=1e-3, stochastic_rounding=sr)
        for _ in range(1000):
            p.grad = torch.full_like(p, 0.1)
            opt.step()
        moved[sr] = 1.0 - p.detach().double().mean().item()
    want = 1000 * 1e-3 * torch.tensor(0.1, dtype=torch.bfloat16).double().item()
    assert moved[False] == 0.0
    assert abs(moved[True] - want) < 0.01, (moved, want)


def test_stochastic_rounding_seeded_and_resumed():
    """The same seed gives the same bits, another seed other bits; a run
    resumed from state_dict() (seed and step counters in it) is bit for bit
    the uninterrupted run, also through pickle and a checkpoint file."""
    def run(seed, steps, opt=None, params=None, start=0):
        if params is None:
            params = _model(torch.bfloat16, 3)
            opt = ot.Adam(params, lr=1e-2, stochastic_rounding=True)
            opt.set_seed(seed)
        for t in range(start, steps):
            _grads(params, t)
            opt.step()
        return params, opt

    a, oa = run(5, 30)
    b, _ = run(5, 30)
    c, _ = run(6, 30)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert oa.state[a[0]]["exp_avg"].dtype is torch.bfloat16  # state in the parameter's dtype, rounded stochastically
    half, oh = run(5, 15)
    sd = copy.deepcopy(oh.state_dict())
    assert sd["optim_precision"]["seed"] == 5 and sd["optim_precision"]["stochastic_rounding"]
    pickled = pickle.loads(pickle.dumps((half, oh)))
    for way in ("state_dict", "pickle", "checkpoint"):
        if way == "pickle":
            params, opt = pickled
        else:
            params = [p.detach().clone().requires_grad_() for p in half]
            opt = ot.Adam(params, lr=1e-2, stochastic_rounding=True)  # seed 0 until the load
            if way == "state_dict":
                opt.load_state_dict(sd)
        if way == "checkpoint":
            import tempfile, os
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "ck")
                oh.save_checkpoint(path)
                opt.load_checkpoint(path)
        assert opt.seed == 5
        params, _ = run(5, 30, opt, params, 15)
        assert all(torch.equal(x, y) for x, y in zip(a, params)), way


def _gradscaler_update(scale, tracker, found_inf, growth, backoff, interval):
    """torch.cuda.amp.GradScaler.update (1.13): the float32 scale times a
    double factor; growth only to a finite scale."""
    if found_inf:
        return float(torch.tensor(scale * backoff, dtype=torch.float32)), 0
    if tracker + 1 == interval:
        grown = float(torch.tensor(scale * growth, dtype=torch.float32))
        return (grown if math.isfinite(grown) else scale), 0
    return scale, tracker + 1


@pytest.mark.parametrize("settings", [{}, {"init_scale": 1000.0, "growth_factor": 1.5, "backoff_factor": 0.25,
                                           "growth_interval": 2}], ids=["gradscaler", "custom"])
def test_dynamic_loss_scale_follows_gradscaler(settings):
    """float16 model with master weights and loss_scale: the scale follows
    GradScaler's update; an overflowing step leaves every byte (parameters,
    masters, state, 'step'); other steps equal an unscaled float32 run of the
    same gradients."""
    conf = dict({"growth_interval": 3}, **settings)
    params = _model(torch.float16, 9)
    opt = ot.Adam(params, lr=1e-3, master_weights=True, loss_scale=conf)
    ref = [p.detach().float().requires_grad_() for p in params]
    opt_ref = ot.Adam(ref, lr=1e-3)
    full = dict(ot._precision.GRADSCALER, **conf)  # noqa: the module's table of GradScaler's defaults
    scale, tracker = float(full["init_scale"]), 0
    assert opt.loss_scale == scale
    g = torch.Generator().manual_seed(4)
    skipped = 0
    for t in range(40):
        overflow = t % 5 == 2
        before = [p.detach().clone() for p in params]
        before_state = copy.deepcopy({i: dict(opt.state[p]) for i, p in enumerate(params) if p in opt.state})
        for p, r in zip(params, ref):
            true_grad = torch.randn(p.shape, generator=g) * 1e-3
            p.grad = (true_grad * opt.loss_scale).to(torch.float16)  # backward of loss * opt.loss_scale
            r.grad = p.grad.float() / opt.loss_scale if conf.get("init_scale", 65536.0) != 1000.0 else None
        if overflow:
            params[1].grad[7] = float("inf")
        opt.step()
        if overflow:
            skipped += 1
            assert opt.last_step_skipped
            assert all(torch.equal(x, y.detach()) for x, y in zip(before, params))
            for i, p in enumerate(params):
                if i in before_state:
                    for k, v in before_state[i].items():
                        assert torch.equal(v, opt.state[p][k]), k
        elif ref[0].grad is not None:
            opt_ref.step()  # a power-of-two scale: the unscale is exact, the same bits as unscaled gradients
            for p, r in zip(params, ref):
                assert torch.equal(opt.state[p]["master"], r.detach()), t
        scale, tracker = _gradscaler_update(scale, tracker, overflow, full["growth_factor"], full["backoff_factor"],
                                            full["growth_interval"])
        assert opt.loss_scale == scale, (t, opt.loss_scale, scale)
        assert opt.state_dict()["optim_precision"]["loss_scale"]["growth_tracker"] == tracker
    assert opt.skipped_steps == skipped


def test_loss_scale_static_and_errors():
    p = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    opt = ot.SGD([p], lr=1.0, loss_scale=8.0)
    assert opt.loss_scale == 8.0
    p.grad = torch.full((4,), 4.0, dtype=torch.float16)
    opt.step()
    assert torch.all(p.detach() == -0.5)  # the gradient 4 of loss * 8 is 0.5
    assert opt.state_dict()["optim_precision"]["loss_scale"] == {"mode": "static", "init_scale": 8.0, "scale": 8.0,
                                                                  "growth_tracker": 0}
    assert ot.SGD([torch.zeros(1, requires_grad=True)], lr=1.0).loss_scale == 1.0
    for bad, exc, needle in [(-1.0, ValueError, "loss_scale = -1.0"), ("fast", ValueError, "'fast'"),
                             ({"growth": 2}, ValueError, "unknown settings"), (True, ValueError, "loss_scale = True"),
                             ([1], TypeError, "list"), ({"backoff_factor": 1.5}, ValueError, "backoff_factor = 1.5")]:
        with pytest.raises(exc, match=needle):
            ot.Adam([torch.zeros(2, requires_grad=True)], loss_scale=bad)
    with pytest.raises(TypeError, match="master_weights must be True or False"):
        ot.Adam([torch.zeros(2, requires_grad=True)], master_weights=1)


def test_loss_scale_with_value_clipping_clamps_the_unscaled_gradients():
    """clip_grad_value= with loss_scale= is GradScaler's recipe: unscale_,
    then torch.nn.utils.clip_grad_value_, then step: torch.optim.Adam on the
    unscaled gradients clipped so, bit for bit (a power-of-two scale), not
    the scaled gradients clamped at the value."""
    gen = torch.Generator().manual_seed(22)
    p = torch.randn(300, generator=gen).requires_grad_()
    ref = p.detach().clone().requires_grad_()
    opt = ot.Adam([p], lr=0.01, loss_scale=1024.0, clip_grad_value=0.5)
    tref = torch.optim.Adam([ref], lr=0.01)
    for _ in range(5):
        g = torch.randn(300, generator=gen)  # about 60% of it above 0.5 in size
        p.grad = g * 1024.0  # the gradient of loss * scale
        ref.grad = g.clone()
        torch.nn.utils.clip_grad_value_([ref], 0.5)
        opt.step()
        tref.step()
        assert torch.equal(p.detach(), ref.detach())


def test_state_dict_master_round_trip_and_refusal():
    """state_dict() carries each master; load_state_dict puts it back (not
    re-made from the parameter); a master in a state for an optimizer made
    without master_weights is refused, naming it; torch.optim loads the
    state_dict (it keeps the extra keys)."""
    params = _model(torch.bfloat16, 1)
    opt = ot.AdamW(params, master_weights=True)
    for t in range(3):
        _grads(params, t)
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert sd["state"][0]["master"].dtype is torch.float32
    other = [p.detach().clone().requires_grad_() for p in params]
    o2 = ot.AdamW(other, master_weights=True)
    o2.load_state_dict(sd)
    assert torch.equal(o2.state[other[0]]["master"], sd["state"][0]["master"])
    assert not torch.equal(o2.state[other[0]]["master"], other[0].detach().float())  # the master, not p widened
    o3 = ot.AdamW([p.detach().clone().requires_grad_() for p in params])
    with pytest.raises(ValueError, match="'master'.*master_weights=True"):
        o3.load_state_dict(sd)
    torch.optim.AdamW([p.detach().float().requires_grad_() for p in params]).load_state_dict(sd)


def test_param_group_edit_keeps_masters_and_scaler():
    """An edit of param_groups by hand rebuilds the C object: masters, seed
    and the loss scaler come along."""
    params = _model(torch.float16, 2)
    opt = ot.Adam(params, master_weights=True, loss_scale="dynamic")
    opt.set_seed(11)
    for t in range(3):
        _grads(params, t)
        opt.step()
    master0 = opt.state[params[0]]["master"].clone()
    extra = torch.zeros(5, dtype=torch.float16, requires_grad=True)
    opt.param_groups[0]["params"].append(extra)
    _grads(params + [extra], 3)
    before = opt.state_dict()["optim_precision"]
    opt.step()
    after = opt.state_dict()["optim_precision"]
    assert after["seed"] == 11 and after["loss_scale"]["growth_tracker"] == before["loss_scale"]["growth_tracker"] + 1
    assert "master" in opt.state[extra]
    assert not torch.equal(opt.state[params[0]]["master"], master0)  # stepped from the carried master


@pytest.mark.parametrize("shape_of", ["sliced", "channels_last", "transposed"])
def test_master_of_a_parameter_in_any_layout(shape_of, tmp_path):
    """A bfloat16 parameter stepped through a working copy (a slice with a
    step) or in place in another layout: its master starts as its values
    (by logical index) and is re-made from live memory by master_sync and by
    load_state_dict without a master, also after p.data was replaced and the
    old memory freed. Reference: the same float32 values, torch's widening."""
    torch.manual_seed(3)
    base = torch.randn(6, 5, 4, 3).to(torch.bfloat16)
    if shape_of == "sliced":
        w = base[:, ::2]
    elif shape_of == "channels_last":
        w = base.contiguous(memory_format=torch.channels_last)
    else:
        w = base[0, 0].t()
    p = torch.nn.Parameter(w)
    want = p.detach().float().clone()
    opt = ot.Adam([p], lr=0.0, master_weights=True)
    sd = copy.deepcopy(opt.state_dict())
    p.grad = torch.randn_like(p)
    opt.step()  # lr 0: the master is still the values it was made from (state[p] is empty before a step)
    assert torch.equal(opt.state[p]["master"], want)
    opt.param_groups[0]["lr"] = 1e-2
    p.grad = torch.randn_like(p)
    opt.step()
    stepped = opt.state[p]["master"].clone()
    assert torch.equal(p.detach(), stepped.to(torch.bfloat16))
    # New memory of other values, the old freed (torch.empty reuses it, filled with garbage).
    p.data = (w.float() * 3).to(torch.bfloat16)
    junk = [torch.full((4096,), 1e30) for _ in range(8)]
    opt.master_sync(p)
    assert torch.equal(opt.state[p]["master"], p.detach().float())
    del junk
    p.data = (w.float() * -2).to(torch.bfloat16)
    sd["state"].clear()
    opt.load_state_dict(sd)  # no state: reset, and the master re-made from p as when added
    assert opt.param_groups[0]["lr"] == 0.0
    opt.step()
    assert torch.equal(opt.state[p]["master"], p.detach().float())
    # A checkpoint without masters (written by an optimizer without them): each master re-made from p.
    other = ot.Adam([torch.nn.Parameter(w.clone())], lr=0.0)
    other.param_groups[0]["params"][0].grad = torch.randn_like(p)
    other.step()
    path = str(tmp_path / "no_master.ckpt")
    other.save_checkpoint(path)
    p.data = (w.float() * 5).to(torch.bfloat16)
    junk = [torch.full((4096,), 1e30) for _ in range(8)]
    opt.load_checkpoint(path)
    del junk
    assert torch.equal(opt.state[p]["master"], p.detach().float())
