"""optim.torch.MuonWithAuxAdam's settings of the whole step (non-finite policy, norm and value clipping,
threads) and its checkpoint file (both inner objects in one file), against the references: the same optimizer
stepped after optim.torch.clip_grad_norm_ / torch.nn.utils.clip_grad_norm_ over every gradient, a run without
the NaN step, and the uninterrupted run."""
import copy
import math
import pickle
import struct

import pytest
import torch

import optim
import optim.torch as ot

SHAPES = [(12, 9), (5, 20), (9,), (20,)]  # two Muon matrices, two AdamW vectors


def _params(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.5).requires_grad_() for s in SHAPES]


def _groups(params, **kw):
    return [dict(params=params[:2], use_muon=True, lr=0.02),
            dict(params=params[2:], use_muon=False, lr=1e-2, **kw)]


def _grads(params, gen, scale=1.0):
    for p in params:
        p.grad = scale * ((p.detach() - 0.3) + 0.1 * torch.randn(p.shape, generator=gen))


def _train(opt, params, gen, steps, scale=1.0):
    for _ in range(steps):
        _grads(params, gen, scale)
        opt.step()


def _state_bits(opt):
    """Every state tensor and group value, as (key, value) pairs comparable bit for bit."""
    sd = opt.state_dict()
    out = [("groups", [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]])]
    for i, st in sorted(sd["state"].items()):
        for k, v in sorted(st.items()):
            out.append((i, k, v.clone() if torch.is_tensor(v) else v))
    return out


def _same_state(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[:-1] == y[:-1]
        if torch.is_tensor(x[-1]):
            assert torch.equal(x[-1], y[-1]), x[:-1]
        else:
            assert x[-1] == y[-1], x[:-1]


def test_checkpoint_round_trip_and_resume(tmp_path):
    """save_checkpoint / load_checkpoint: the loaded optimizer's state, groups (an lr changed by hand) and
    settings are the saved ones bit for bit, and a run resumed from the file equals the uninterrupted one."""
    params = _params()
    opt = ot.MuonWithAuxAdam(_groups(params), nonfinite="skip", clip_grad_norm=(2.0, 2.0))
    gen = torch.Generator().manual_seed(5)
    _train(opt, params, gen, 12)
    opt.param_groups[0]["lr"] = 0.015
    opt.param_groups[1]["betas"] = (0.8, 0.9)
    p_nan = params[3]
    _grads(params, gen)
    p_nan.grad[0] = float("nan")
    opt.step()  # skipped: counted, and the count is saved
    assert opt.skipped_steps == 1
    path = tmp_path / "mwa.ckpt"
    opt.save_checkpoint(path)
    saved_params = [p.detach().clone() for p in params]
    saved_state = _state_bits(opt)
    gen_state = gen.get_state()
    _train(opt, params, gen, 15)

    params2 = [s.clone().requires_grad_() for s in saved_params]
    opt2 = ot.MuonWithAuxAdam(_groups(params2))
    opt2.load_checkpoint(str(path))
    _same_state(_state_bits(opt2), saved_state)
    assert opt2.param_groups[0]["lr"] == 0.015 and opt2.param_groups[1]["betas"] == (0.8, 0.9)
    assert opt2.nonfinite == "skip" and opt2.clip_grad_norm == (2.0, 2.0) and opt2.skipped_steps == 1
    gen.set_state(gen_state)
    _train(opt2, params2, gen, 15)
    for a, b in zip(params, params2):
        assert torch.equal(a.detach(), b.detach())
    _same_state(_state_bits(opt2), _state_bits(opt))


def test_checkpoint_value_clipping_and_refusals(tmp_path):
    """Value clipping comes back from the inner objects' files; a missing, foreign, truncated or mismatched
    file is refused by name and leaves the optimizer unchanged, including when the Muon object loaded and
    the AdamW object's load then failed (the Muon object is restored)."""
    params = _params()
    opt = ot.MuonWithAuxAdam(_groups(params), clip_grad_value=0.5)
    gen = torch.Generator().manual_seed(6)
    _train(opt, params, gen, 5)
    good = tmp_path / "good.ckpt"
    opt.save_checkpoint(good)
    fresh = ot.MuonWithAuxAdam(_groups([p.detach().clone().requires_grad_() for p in params]))
    fresh.load_checkpoint(good)
    assert fresh.clip_grad_value == 0.5
    assert fresh._muon.clip_grad_value == 0.5 and fresh._adam.clip_grad_value == 0.5

    params2 = _params(2)
    other = ot.MuonWithAuxAdam(_groups(params2, weight_decay=0.1))
    _train(other, params2, torch.Generator().manual_seed(7), 3)
    before = _state_bits(other)
    single = tmp_path / "muon.ckpt"
    ot.Muon(_params()[:2]).save_checkpoint(single)
    with pytest.raises(optim.OptimError, match="not a MuonWithAuxAdam checkpoint"):
        other.load_checkpoint(single)
    with pytest.raises(optim.OptimError, match="cannot read"):
        other.load_checkpoint(tmp_path / "missing.ckpt")
    data = good.read_bytes()
    for n in (12, 40, len(data) - 3):
        cut = tmp_path / ("cut%d.ckpt" % n)
        cut.write_bytes(data[:n])
        with pytest.raises(optim.OptimError, match="truncated"):
            other.load_checkpoint(cut)
    (tmp_path / "long.ckpt").write_bytes(data + b"x")
    with pytest.raises(optim.OptimError, match="after its last object"):
        other.load_checkpoint(tmp_path / "long.ckpt")
    swapped = ot.MuonWithAuxAdam([dict(params=_params()[2:], use_muon=False),
                                  dict(params=_params()[:2], use_muon=True)])
    with pytest.raises(optim.OptimError, match="use_muon"):
        swapped.load_checkpoint(good)
    # The AdamW object's parameters of another size: the Muon object loads, the AdamW one fails, and the
    # Muon object's state is put back.
    p3 = _params(3)
    p3[3] = torch.zeros(21, requires_grad=True)
    third = ot.MuonWithAuxAdam(_groups(p3))
    _train(third, p3, torch.Generator().manual_seed(8), 3)
    third_before = _state_bits(third)
    with pytest.raises(optim.OptimError):
        third.load_checkpoint(good)
    _same_state(_state_bits(third), third_before)
    _same_state(_state_bits(other), before)
    with pytest.raises(ValueError, match="match"):
        other.load_checkpoint(good, match="order")
    # Settings that are JSON but not an object (an AttributeError escaped before the review rev21a).
    nhead = struct.unpack_from("<I", data, 12)[0]
    for head in (b"[]", b"3", b"null", b'"use_muon"'):
        bad = tmp_path / "head.ckpt"
        bad.write_bytes(data[:12] + struct.pack("<I", len(head)) + head + data[16 + nhead:])
        with pytest.raises(optim.OptimError, match="corrupt settings"):
            other.load_checkpoint(bad)
    _same_state(_state_bits(other), before)


def test_nonfinite_skips_or_names_the_whole_step():
    """A NaN in one AdamW gradient: 'skip' steps neither object (the Muon matrices stay too), 'error' raises
    naming that parameter, 'propagate' steps both (the Muon matrices move, the NaN spreads in its own
    parameter only). The run after a skipped step equals a run that never saw it."""
    for policy in ("skip", "error", "propagate"):
        params = _params()
        opt = ot.MuonWithAuxAdam(_groups(params), nonfinite=policy)
        gen = torch.Generator().manual_seed(9)
        _train(opt, params, gen, 3)
        before = [p.detach().clone() for p in params]
        _grads(params, gen)
        params[2].grad[4] = float("inf")
        if policy == "error":
            with pytest.raises(ot.NonFiniteGradientError, match=r"parameter 2 .*param group 1.*NaN or Inf") as e:
                opt.step()
            assert e.value.index == 2 and e.value.group == 1 and e.value.param is params[2]
        else:
            opt.step()
        if policy == "propagate":
            assert not opt.last_step_skipped and opt.skipped_steps == 0
            assert not torch.equal(params[0].detach(), before[0])
            assert not bool(torch.isfinite(params[2]).all()) and bool(torch.isfinite(params[3]).all())
            continue
        assert opt.last_step_skipped and opt.skipped_steps == 1 and math.isinf(opt.last_grad_norm)
        for a, b in zip(params, before):
            assert torch.equal(a.detach(), b)
        _train(opt, params, gen, 4)
        assert not opt.last_step_skipped and math.isfinite(opt.last_grad_norm)
        # the reference saw the same gradients but for the skipped ones
        gref = torch.Generator().manual_seed(9)
        ref_params2 = [p.detach().clone().requires_grad_() for p in _params()]
        ref2 = ot.MuonWithAuxAdam(_groups(ref_params2))
        for k in range(8):
            _grads(ref_params2, gref)
            if k != 3:
                ref2.step()
        for a, b in zip(params, ref_params2):
            assert torch.equal(a.detach(), b.detach())


def test_clip_grad_norm_is_over_every_gradient():
    """clip_grad_norm clips by the total norm of both objects' gradients: the same bits as
    optim.torch.clip_grad_norm_ over all parameters before an unclipped step, close to
    torch.nn.utils.clip_grad_norm_, not the per-object clipping; the gradients are not written."""
    params = _params()
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    opt = ot.MuonWithAuxAdam(_groups(params), clip_grad_norm=1.5)
    ref = ot.MuonWithAuxAdam(_groups(ref_params))
    gen, gref = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(30):
        _grads(params, gen, 3.0)
        _grads(ref_params, gref, 3.0)
        grads = [p.grad.clone() for p in params]
        twins = [q.detach().clone().requires_grad_() for q in params]
        for t, g in zip(twins, grads):
            t.grad = g.clone()
        torch_norm = torch.nn.utils.clip_grad_norm_(twins, 1.5)
        opt.step()
        for p, g in zip(params, grads):
            assert torch.equal(p.grad, g)  # not written
        norm = ot.clip_grad_norm_(ref_params, 1.5)
        ref.step()
        assert torch.tensor(opt.last_grad_norm, dtype=torch.float32) == norm and norm > 1.5  # norm: float32
        assert opt.last_grad_norm == pytest.approx(float(torch_norm), rel=1e-5)
        for a, b in zip(params, ref_params):
            assert torch.equal(a.detach(), b.detach())
    # Each object clipped by its own gradients' norm would be another (larger) step.
    per = _params()
    muon = ot.Muon(per[:2], lr=0.02, weight_decay=0, clip_grad_norm=1.5)
    adam = ot.AdamW(per[2:], lr=1e-2, betas=(0.9, 0.95), eps=1e-10, weight_decay=0, clip_grad_norm=1.5)
    g3 = torch.Generator().manual_seed(11)
    for _ in range(30):
        _grads(per, g3, 3.0)
        muon.step()
        adam.step()
    assert not torch.equal(per[2].detach(), params[2].detach())


def test_clip_value_threads_and_settings():
    """clip_grad_value is fused into both objects (the same bits as clamping the gradients first); the thread
    count changes no bit; the settings are checked by name, survive pickling and deep copies."""
    params = _params()
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    opt = ot.MuonWithAuxAdam(_groups(params), clip_grad_value=0.2)
    ref = ot.MuonWithAuxAdam(_groups(ref_params))
    opt.set_threads(2)
    ref.set_threads(1)
    assert opt.threads == 2 and opt._muon.threads == 2 and opt._adam.threads == 2
    gen, gref = torch.Generator().manual_seed(12), torch.Generator().manual_seed(12)
    for _ in range(20):
        _grads(params, gen)
        _grads(ref_params, gref)
        for p in ref_params:
            p.grad.clamp_(-0.2, 0.2)
        opt.step()
        ref.step()
    for a, b in zip(params, ref_params):
        assert torch.equal(a.detach(), b.detach())
    with pytest.raises(ValueError, match="cannot both be on"):
        opt.set_clip_grad_norm(1.0)
    with pytest.raises(ValueError, match="cannot both be on"):
        ot.MuonWithAuxAdam(_groups(_params()), clip_grad_norm=1.0, clip_grad_value=0.1)
    with pytest.raises(ValueError, match="nonfinite"):
        opt.set_nonfinite("ignore")
    with pytest.raises(ValueError, match="threads = -1"):
        opt.set_threads(-1)
    with pytest.raises(ValueError, match="max_norm"):
        opt.set_clip_grad_value(None) or opt.set_clip_grad_norm(-1.0)
    opt.set_clip_grad_norm(3.0, float("inf"))
    opt.set_nonfinite("error")
    assert opt.clip_grad_norm == (3.0, float("inf")) and opt.nonfinite == "error" and opt.clip_grad_value is None
    for twin in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert twin.clip_grad_norm == (3.0, float("inf")) and twin.nonfinite == "error"
        assert twin.threads == 0 and twin.skipped_steps == 0
    p64 = _params()
    p64[3] = p64[3].detach().double().requires_grad_()
    mixed = ot.MuonWithAuxAdam(_groups(p64), nonfinite="skip")
    _grads(p64, torch.Generator().manual_seed(13))
    with pytest.raises(ValueError, match=r"parameter 3 .*float32 gradients"):
        mixed.step()
    mixed.set_nonfinite("propagate")
    mixed.step()  # no whole-step check: each object steps its own dtypes


def test_muon_alone_has_the_same_settings():
    """optim.torch.Muon (one object) has them fused: norm clipping the same bits as
    optim.torch.clip_grad_norm_ before an unclipped step, value clipping as clamping first, 'skip' leaves
    every matrix and its step count, set_threads changes no bit, and a checkpoint keeps the settings."""
    for kw, prepare in ((dict(clip_grad_norm=(1.0, 2.0)), lambda ps: ot.clip_grad_norm_(ps, 1.0)),
                        (dict(clip_grad_value=0.1), lambda ps: [p.grad.clamp_(-0.1, 0.1) for p in ps])):
        params = _params()[:2]
        ref_params = [p.detach().clone().requires_grad_() for p in params]
        opt = ot.Muon(params, lr=0.02, **kw)
        ref = ot.Muon(ref_params, lr=0.02)
        opt.set_threads(2)
        ref.set_threads(1)
        gen, gref = torch.Generator().manual_seed(14), torch.Generator().manual_seed(14)
        for _ in range(20):
            _grads(params, gen, 3.0)
            _grads(ref_params, gref, 3.0)
            prepare(ref_params)
            opt.step()
            ref.step()
        for a, b in zip(params, ref_params):
            assert torch.equal(a.detach(), b.detach())
    opt = ot.Muon(params, lr=0.02, nonfinite="skip")
    _grads(params, gen)
    opt.step()
    before = [p.detach().clone() for p in params]
    _grads(params, gen)
    params[1].grad[0, 0] = float("nan")
    opt.step()
    assert opt.last_step_skipped and opt.skipped_steps == 1
    for a, b in zip(params, before):
        assert torch.equal(a.detach(), b)
    assert int(opt._c.h.get_step(0)) == 1
