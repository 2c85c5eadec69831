"""Adversarial tests of int8 (and bfloat16) state in optim.torch (review
rev12): loads of QuantizedState values that a user edited (NaN, infinite,
zero or negative scales; codes or scales replaced by tensors of the wrong
dtype or length; non-contiguous codes), lifetimes of QuantizedState views
across del, loads, resets and copies, two optimizers loading one state_dict,
and the same bits on every CPU path and thread count for odd sizes, offsets
inside a storage, and NaN/Inf gradients. The lifetime tests run under ASan
(scripts/sanitize_python.sh)."""
import copy
import gc
import json
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

import optim.torch as ot

N = 300  # two blocks, the second one partial


def make(n=N, sdt="int8", cls=ot.Adam, seed=0, steps=1, **kw):
    g = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(n, generator=g))
    opt = cls([p], state_dtype=sdt, **kw)
    for _ in range(steps):
        p.grad = torch.randn(n, generator=g)
        opt.step()
    return p, opt


def snapshot(p, opt):
    st = opt.state[p]
    return {k: (v.codes.clone(), v.scales.clone()) if isinstance(v, ot.QuantizedState)
            else v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in st.items()}


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if not torch.is_tensor(a[k]) and not isinstance(a[k], tuple):
            assert a[k] == b[k], k
        elif isinstance(a[k], tuple):
            assert torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1].view(torch.int32), b[k][1].view(torch.int32)), k
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -1.0, 0.0, 1e-40])
def test_int8_load_refuses_scales_the_library_never_stores(bad):
    """A scale is max(largest finite |x|, FLT_MIN): a NaN, infinite, zero,
    negative or subnormal one is refused naming the key and the value, and
    nothing changes (before the fix: loaded, and the next step made the
    block NaN, infinite or sign-flipped)."""
    _, src = make(seed=1, steps=2)
    sd = copy.deepcopy(src.state_dict())
    sd["state"][0]["exp_avg_sq"].scales[1] = bad
    p, opt = make(seed=2)
    before = snapshot(p, opt)
    stored = float(torch.tensor(bad, dtype=torch.float32))  # the float32 the scales tensor holds
    with pytest.raises(ValueError, match=r"\['exp_avg_sq'\]\.scales has scale %s at block 1" % re.escape(repr(stored))):
        opt.load_state_dict(sd)
    same(before, snapshot(p, opt))
    # The good scale loads bit for bit.
    sd["state"][0]["exp_avg_sq"].scales[1] = src.state_dict()["state"][0]["exp_avg_sq"].scales[1]
    opt.load_state_dict(sd)
    same(snapshot(p, opt), {k: v for k, v in snapshot(src.param_groups[0]["params"][0], src).items()})


def test_int8_load_rechecks_codes_and_scales_replaced_after_making():
    """QuantizedState's codes and scales are attributes a user can replace:
    a load checks them again, naming the key (before: a message from
    QuantizedState's constructor that named no key)."""
    _, src = make(seed=3)
    p, opt = make(seed=4)
    before = snapshot(p, opt)
    for part, value, text in (("codes", lambda q: q.codes.to(torch.int16), "codes must be a dense CPU uint8"),
                              ("scales", lambda q: torch.ones(5), r"scales must be .* shape \(2,\)"),
                              ("scales", lambda q: q.scales.double(), r"scales must be .* float32")):
        sd = copy.deepcopy(src.state_dict())
        q = sd["state"][0]["exp_avg"]
        setattr(q, part, value(q))
        with pytest.raises(ValueError, match=r"Adam: .*\['exp_avg'\]: QuantizedState: " + text):
            opt.load_state_dict(sd)
        same(before, snapshot(p, opt))


def test_int8_non_contiguous_codes_load_bit_for_bit():
    """Codes that are a strided view (every other byte of a buffer) load
    as their values, bit for bit, and the next step matches a load of
    contiguous codes."""
    _, src = make(seed=5, steps=3)
    sd = src.state_dict()
    strided = copy.deepcopy(sd)
    for key in ("exp_avg", "exp_avg_sq"):
        q = strided["state"][0][key]
        buf = torch.full((2 * N,), 0x55, dtype=torch.uint8)
        buf[::2].copy_(q.codes)
        q.codes = buf[::2]
    pa, a = make(seed=6)
    pb, b = make(seed=6)
    a.load_state_dict(sd)
    b.load_state_dict(strided)  # the load copies the codes' values (never reads the buffer as if contiguous)
    same(snapshot(pa, a), snapshot(pb, b))


def test_int8_views_outlive_del_reset_and_loads_and_writes_stay_apart():
    """A QuantizedState (and its .codes/.scales) kept after load_state_dict,
    add_param_group, a param_groups edit, state reset, deepcopy, pickling
    and del opt: reading and writing it is safe (ASan) and never reaches the
    optimizer's live state once the optimizer has let it go."""
    p, opt = make(seed=7, steps=2)
    kept = opt.state[p]["exp_avg"]
    codes, scales = kept.codes, kept.scales
    then = (codes.clone(), scales.clone())
    sd = copy.deepcopy(opt.state_dict())  # the state of now (a plain state_dict follows the training, as torch's)
    p.grad = torch.randn(N)
    opt.step()
    opt.load_state_dict(sd)
    assert torch.equal(opt.state[p]["exp_avg"].codes, then[0])
    live = opt.state[p]["exp_avg"]
    codes.fill_(7)
    scales.fill_(3.0)
    # the user's old object either is the live state again (written through) or has memory of its own
    if live is kept:
        assert torch.equal(live.codes, torch.full((N,), 7, dtype=torch.uint8))
        live.codes.copy_(then[0])
        live.scales.copy_(then[1])
    else:
        assert torch.equal(live.codes, then[0])
    q2 = torch.nn.Parameter(torch.randn(17))
    opt.add_param_group({"params": [q2]})
    q2.grad = torch.randn(17)
    p.grad = torch.randn(N)
    opt.step()
    view2 = opt.state[q2]["exp_avg_sq"]
    dc = copy.deepcopy(view2)
    pk = pickle.loads(pickle.dumps(view2))
    opt.param_groups[1]["params"] = []  # q2 leaves (a param_groups edit)
    p.grad = torch.randn(N)
    opt.step()
    view2.codes.fill_(1)
    view2.scales.fill_(2.0)
    assert torch.equal(dc.codes, pk.codes) and not torch.equal(dc.codes, view2.codes)
    held = opt.state[p]["exp_avg"]
    held_codes, held_scales = held.codes, held.scales
    opt.state.clear() if hasattr(opt.state, "clear") else None
    del opt, held
    gc.collect()
    held_codes.add_(1)
    held_scales.mul_(2)
    assert held_codes.numel() == N and held_scales.numel() == 2


def test_two_optimizers_load_one_state_dict_and_stay_apart():
    """Two optimizers loading the same (in-memory) state_dict get equal
    state; stepping or writing one leaves the other and the (copied)
    state_dict as they were, and a later load of it gives the state of when
    it was made."""
    _, src = make(seed=8, steps=2)
    sd = copy.deepcopy(src.state_dict())
    frozen = copy.deepcopy(sd)
    pa, a = make(seed=9)
    pb, b = make(seed=10)
    a.load_state_dict(sd)
    b.load_state_dict(sd)
    same(snapshot(pa, a), snapshot(pb, b))
    a.state[pa]["exp_avg"].codes.fill_(0)
    pb.grad = torch.randn(N)
    b.step()
    src.param_groups[0]["params"][0].grad = torch.randn(N)
    src.step()
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(sd["state"][0][key].codes, frozen["state"][0][key].codes)
        assert torch.equal(sd["state"][0][key].scales, frozen["state"][0][key].scales)
    pc, c = make(seed=11)
    c.load_state_dict(sd)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(c.state[pc][key].codes, frozen["state"][0][key].codes)


@pytest.mark.parametrize("cls,kw", [(ot.Adam, {}), (ot.Lion, dict(lr=1e-4)), (ot.AdaBound, {}),
                                    (ot.RMSprop, dict(centered=True, momentum=0.9))])
def test_int8_round_trip_through_float32_and_into_bfloat16(cls, kw):
    """int8 -> float32 -> int8 gives the same codes and scales (dequantized
    values requantize to themselves); int8 loaded into bfloat16 state is
    the dequantized values rounded once."""
    p, src = make(cls=cls, seed=12, steps=3, **kw)
    sd = src.state_dict()
    _, f32 = make(cls=cls, sdt=torch.float32, seed=13, **kw)
    f32.load_state_dict(sd)
    p8, back = make(cls=cls, seed=14, **kw)
    back.load_state_dict(f32.state_dict())
    same(snapshot(p, src), snapshot(p8, back))
    pb, bf = make(cls=cls, sdt=torch.bfloat16, seed=15, **kw)
    bf.load_state_dict(sd)
    for key, v in src.state[p].items():
        if isinstance(v, ot.QuantizedState):
            assert torch.equal(bf.state[pb][key], v.dequantize().to(torch.bfloat16)), key


_SIMD_CHILD = r"""
import hashlib, json, sys, torch, optim.torch as ot
sizes = json.loads(sys.argv[1])
def digest(t):  # the exact bits of one array
    t = t.detach().contiguous()
    if t.dtype is torch.bfloat16:
        t = t.view(torch.int16)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]
result = {}
for sdt_name in ("int8", "bfloat16"):
    sdt = "int8" if sdt_name == "int8" else torch.bfloat16
    for threads in (1, 2):
        g = torch.Generator().manual_seed(20)
        storage = torch.randn(sum(sizes) + 3 * len(sizes) + 1, generator=g)
        params, off = [], 1  # views at odd offsets inside one storage: misaligned for every vector width
        for n in sizes:
            params.append(torch.nn.Parameter(storage[off:off + n].clone()[0:n]))
            off += n + 3
        for k, p in enumerate(params):  # misaligned parameters: views one float into a bigger storage
            b = torch.empty(p.numel() + 1)
            b[1:].copy_(p.data)
            p.data = b[1:]
        out = []
        for cls, kw in ((ot.Adam, {}), (ot.RMSprop, dict(centered=True, momentum=0.9)), (ot.Lion, dict(lr=1e-3))):
            ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
            opt = cls(ps, state_dtype=sdt, **kw)
            opt.set_threads(threads)
            for t in range(25):
                for i, p in enumerate(ps):
                    gr = torch.randn(p.numel(), generator=g)
                    if t == 7 and i == len(ps) - 1:
                        gr[0], gr[-1] = float("nan"), float("inf")
                    p.grad = gr
                opt.step()
            for i, p in enumerate(ps):
                out.append(("%s param %d" % (cls.__name__, i), digest(p)))
                for key, v in opt.state[p].items():
                    if isinstance(v, ot.QuantizedState):
                        out.append(("%s %s codes %d" % (cls.__name__, key, i), digest(v.codes)))
                        out.append(("%s %s scales %d" % (cls.__name__, key, i), digest(v.scales)))
                    elif torch.is_tensor(v) and v.dtype is torch.bfloat16:
                        out.append(("%s %s %d" % (cls.__name__, key, i), digest(v)))
        result["%s/%d" % (sdt_name, threads)] = out
print(json.dumps(result))
"""


def test_simd_paths_and_threads_give_the_same_bits_for_odd_sizes():
    """int8 and bfloat16 state: every OPTIM_ISA (the ones this CPU has) and
    1 or 2 threads give the scalar path's bits (digests of every parameter,
    code, scale and state array) for sizes 1, 15, 255, 257, 8191, 8193 and
    one ending mid-block, misaligned parameters, and a NaN and an Inf
    gradient in the last tensor. One child process per path."""
    sizes = [1, 15, 255, 257, 8191, 8193, 3 * 256 + 100]
    runs = {}
    for isa in ("scalar", "avx2", "avx512"):
        env = dict(os.environ, OPTIM_ISA=isa)
        r = subprocess.run([sys.executable, "-c", _SIMD_CHILD, json.dumps(sizes)], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0 and isa != "scalar" and "not available" in r.stderr + r.stdout:
            continue
        assert r.returncode == 0, (isa, r.stderr[-2000:])
        for key, got in json.loads(r.stdout).items():
            runs[(isa, key)] = got
    for (isa, key), got in runs.items():
        ref = runs[("scalar", key.split("/")[0] + "/1")]
        assert len(got) == len(ref) and len(ref) > 0
        for (name_a, a), (name_b, b) in zip(ref, got):
            assert name_a == name_b
            assert a == b, "%s %s: %s differs from the scalar path's on one thread" % (isa, key, name_a)
    print("paths:", sorted({isa for isa, _ in runs}))


def test_lamb_lars_and_sparse_adam_take_state_dtype():
    """LAMB, LARS and SparseAdam take state_dtype= as every class does
    (before: a TypeError). LAMB and LARS step int8 and bfloat16 state
    (test_torch_state_dtype checks their int8 bits against the C API);
    SparseAdam's sparse step refuses a state other than the parameter's
    where C refuses it, with C's message, and nothing changes."""
    for cls, kw in ((ot.LAMB, {}), (ot.LARS, dict(lr=0.1, momentum=0.9))):
        p, opt = make(cls=cls, seed=16, steps=2, **kw)
        assert all(isinstance(v, ot.QuantizedState) for k, v in opt.state[p].items() if k != "step")
        assert len([v for v in opt.state[p].values() if isinstance(v, ot.QuantizedState)]) >= 1
        pb, bf = make(cls=cls, sdt=torch.bfloat16, seed=16, steps=2, **kw)
        assert all(v.dtype is torch.bfloat16 for k, v in bf.state[pb].items() if k != "step")
    p = torch.nn.Parameter(torch.randn(40, 3))
    ref = torch.nn.Parameter(p.detach().clone())
    ok = ot.SparseAdam([ref], state_dtype=torch.float32)
    for sdt in ("int8", torch.bfloat16):
        opt = ot.SparseAdam([p], state_dtype=sdt)
        p.grad = torch.randn(40, 3).to_sparse()
        before = p.detach().clone()
        with pytest.raises(ValueError, match=r"SparseAdam: step: optim_step_sparse: .*%s state\): sparse gradients"
                           % ("int8_block" if sdt == "int8" else "bfloat16")):
            opt.step()
        assert torch.equal(p.detach(), before) and len(opt.state) == 0
    ref.grad = p.grad.clone()
    ok.step()
    assert ok.state[ref]["exp_avg"].dtype is torch.float32
