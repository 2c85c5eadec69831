"""Checkpoints and state_dicts of state whose layout is not the parameter's
(SGD's momentum buffer takes d_p's layout, as torch's clone(d_p)): a resumed
run must equal the uninterrupted one bit for bit, and state_dict round-trips."""
import copy

import pytest
import torch

import optim.torch as ot

SEED = 11


def _param(kind):
    if kind == "transposed":
        return torch.nn.Parameter(torch.randn(5, 7).t())
    if kind == "channels_last":
        return torch.nn.Parameter(torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    return torch.nn.Parameter(torch.randn(4, 6))


def _grad(p, kind, step):
    g = torch.randn(p.shape, generator=torch.Generator().manual_seed(step * 31 + 7))
    if kind == "transposed_grad":  # a contiguous parameter, a transposed gradient
        return g.t().contiguous().t()
    return g.contiguous()  # contiguous: not the layout of a transposed or channels_last parameter


CASES = [("SGD", dict(lr=0.1, momentum=0.9)), ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
         ("SGD", dict(lr=0.1, momentum=0.9, maximize=True)), ("Adam", dict(lr=0.01))]


def _run(cls, kw, p0, gkind, steps, opt=None):
    p = torch.nn.Parameter(p0.detach().clone(memory_format=torch.preserve_format))
    opt = opt or getattr(ot, cls)([p], **kw)
    for k in range(steps):
        p.grad = _grad(p, gkind, k)
        opt.step()
    return p, opt


@pytest.mark.parametrize("pkind,gkind", [("transposed", "contiguous"), ("channels_last", "contiguous"),
                                         ("contiguous", "transposed_grad")])
@pytest.mark.parametrize("cls,kw", CASES)
def test_checkpoint_resume_equals_uninterrupted(tmp_path, pkind, gkind, cls, kw):
    print("seed", SEED)
    torch.manual_seed(SEED)
    p0 = _param(pkind)
    whole, _ = _run(cls, kw, p0, gkind, 6)
    half, opt = _run(cls, kw, p0, gkind, 3)
    path = tmp_path / "ck.optim"
    before = {k: v.clone() for k, v in opt.state[half].items() if torch.is_tensor(v)}
    opt.save_checkpoint(path)
    after = {k: v.clone() for k, v in opt.state[half].items() if torch.is_tensor(v)}
    for k in before:  # saving changes nothing in the live state
        assert torch.equal(before[k], after[k]), k
    p = torch.nn.Parameter(half.detach().clone(memory_format=torch.preserve_format))
    fresh = getattr(ot, cls)([p], **kw)
    fresh.load_checkpoint(path)
    for k in range(3, 6):
        p.grad = _grad(p, gkind, k)
        fresh.step()
    assert torch.equal(p, whole)
    # into an optimizer that already has state in the saved layout
    opt.load_checkpoint(path)
    for k in range(3, 6):
        half.grad = _grad(half, gkind, k)
        opt.step()
    assert torch.equal(half, whole)


@pytest.mark.parametrize("pkind,gkind", [("transposed", "contiguous"), ("channels_last", "contiguous"),
                                         ("contiguous", "transposed_grad")])
@pytest.mark.parametrize("cls,kw", CASES)
def test_state_dict_round_trip_equals_torch(pkind, gkind, cls, kw):
    torch.manual_seed(SEED)
    p0 = _param(pkind)
    whole, _ = _run(cls, kw, p0, gkind, 6)
    half, opt = _run(cls, kw, p0, gkind, 3)
    sd = copy.deepcopy(opt.state_dict())
    # torch's own optimizer stepped alike: the same state values and strides
    tp = torch.nn.Parameter(p0.detach().clone(memory_format=torch.preserve_format))
    topt = getattr(torch.optim, cls)([tp], **kw)
    for k in range(3):
        tp.grad = _grad(tp, gkind, k)
        topt.step()
    tsd = topt.state_dict()
    for key, v in tsd["state"][0].items():
        if key != "step":
            assert torch.equal(sd["state"][0][key], v), key
            assert sd["state"][0][key].stride() == v.stride(), key
    for src in (sd, tsd):
        p = torch.nn.Parameter(half.detach().clone(memory_format=torch.preserve_format))
        fresh = getattr(ot, cls)([p], **kw)
        fresh.load_state_dict(copy.deepcopy(src))
        for k in range(3, 6):
            p.grad = _grad(p, gkind, k)
            fresh.step()
        assert torch.equal(p, whole)


# int8 state (state_dtype="int8"): its blocks follow the memory order, so it is kept in the parameter's
# layout (SGD's momentum too, whatever its gradient's layout) and a checkpoint resumes it exactly; int8
# state in another layout (loaded so by load_state_dict) cannot be reordered without requantizing: a save
# refuses it by name, a load into it puts the state back in the parameter's layout.
INT8_CASES = [("SGD", dict(lr=0.1, momentum=0.9, state_dtype="int8")),
              ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01, maximize=True, state_dtype="int8")),
              ("Adam", dict(lr=0.01, state_dtype="int8"))]
LAYOUT_CASES = [("transposed", "contiguous"), ("channels_last", "contiguous"), ("contiguous", "transposed_grad")]


@pytest.mark.parametrize("pkind,gkind", LAYOUT_CASES)
@pytest.mark.parametrize("cls,kw", INT8_CASES)
def test_int8_checkpoint_resume_equals_uninterrupted(tmp_path, pkind, gkind, cls, kw):
    print("seed", SEED)
    torch.manual_seed(SEED)
    p0 = _param(pkind)
    whole, _ = _run(cls, kw, p0, gkind, 6)
    half, opt = _run(cls, kw, p0, gkind, 3)
    for v in opt.state[half].values():
        if isinstance(v, ot.QuantizedState):  # the parameter's layout, whatever the gradient's
            assert v.stride() == half.stride()
    path = tmp_path / "ck.optim"
    opt.save_checkpoint(path)
    p = torch.nn.Parameter(half.detach().clone(memory_format=torch.preserve_format))
    fresh = getattr(ot, cls)([p], **kw)
    fresh.load_checkpoint(path)
    for k in range(3, 6):
        p.grad = _grad(p, gkind, k)
        fresh.step()
    assert torch.equal(p, whole)


@pytest.mark.parametrize("cls,kw", INT8_CASES)
def test_int8_state_in_another_layout(tmp_path, cls, kw):
    print("seed", SEED)
    torch.manual_seed(SEED)
    p0 = _param("transposed")
    whole, _ = _run(cls, kw, p0, "contiguous", 6)
    half, opt = _run(cls, kw, p0, "contiguous", 3)
    good = tmp_path / "good.optim"
    opt.save_checkpoint(good)
    # an optimizer whose int8 state was loaded in another layout (a contiguous parameter's state_dict)
    other, oopt = _run(cls, kw, p0.contiguous(), "contiguous", 3)
    sd = copy.deepcopy(oopt.state_dict())
    p = torch.nn.Parameter(half.detach().clone(memory_format=torch.preserve_format))
    moved = getattr(ot, cls)([p], **kw)
    moved.load_state_dict(sd)
    key = next(k for k, v in moved.state[p].items() if isinstance(v, ot.QuantizedState))
    assert moved.state[p][key].stride() != p.stride()
    bad = tmp_path / "bad.optim"
    with pytest.raises(ValueError, match=r"parameter 0 \(.*\): its int8 state '%s' is kept in the layout of "
                                         r"strides \(5, 1\), not the parameter's \(1, 7\).*nothing was written" % key):
        moved.save_checkpoint(bad)
    assert not bad.exists()
    # a load puts it back in the parameter's layout: the run resumes exactly
    moved.load_checkpoint(good)
    assert moved.state[p][key].stride() == p.stride()
    for k in range(3, 6):
        p.grad = _grad(p, "contiguous", k)
        moved.step()
    assert torch.equal(p, whole)
