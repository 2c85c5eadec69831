"""optim.torch's overflow agreement under torch's ZeroRedundancyOptimizer (_distributed.OverflowAgreement:
liboptim's combine hook answered by one all_reduce), in one process and fast: the local optimizer's role is
set by hand (as ZeroRedundancyOptimizer._init_local_optimizer would) and torch.distributed.all_reduce is
replaced by a scripted stand-in for the other ranks (did another rank's shard overflow at this step? did the
collective fail?). python/tests/test_distributed.py runs the real thing on 2 and 3 gloo ranks (slow); these
check what it does not: the hook with Muon (whole matrices), a failing collective, the precision state in the
param groups edited by hand or in place, and a refused loaded value changing nothing."""
import copy
import math
import struct

import pytest
import torch
import torch.distributed as dist

import optim.torch as ot
from optim.torch import _distributed

WHERE = "param_groups[0]['optim_precision']"


class Others:
    """The other ranks, as seen through all_reduce(MAX) of [overflow flag, loss scale mode, -mode, scale, -scale]
    (the scale as its float32 bits): by default they overflow at the calls `overflow_at` and share this rank's
    mode and scale; modes, scales: {call: the mode (0 off, 1 static, 2 dynamic) or scale another rank has then}."""

    def __init__(self, overflow_at=(), fail=None, modes=None, scales=None, failed_at=()):
        self.overflow_at = set(overflow_at)
        self.failed_at = set(failed_at)  # calls at which another rank's step failed (its flag FAILED)
        self.fail = fail
        self.other_modes = dict(modes or {})
        self.other_scales = dict(scales or {})
        self.calls = []
        self.modes = []
        self.scales = []

    def __call__(self, t, op=None, group=None):
        assert op == dist.ReduceOp.MAX and t.dtype == torch.int32 and t.numel() == 5
        if int(t[0]) == _distributed.FAILED:  # this rank's step failed: the other values leave the others' alone
            assert t.tolist()[1:] == [-2 ** 31] * 4, t
            self.calls.append(int(t[0]))
            return
        assert int(t[1]) == -int(t[2]) and int(t[3]) == -int(t[4]), t
        step = len(self.calls)
        self.calls.append(int(t[0]))
        self.modes.append(int(t[1]))
        self.scales.append(struct.unpack("<f", struct.pack("<i", int(t[3])))[0])
        if self.fail is not None:
            raise self.fail
        if step in self.overflow_at:
            t[0] = 1
        if step in self.failed_at:
            t[0] = _distributed.FAILED
        other = self.other_modes.get(step)
        if other is not None:
            t[1], t[2] = max(int(t[1]), other), max(int(t[2]), -other)
        other = self.other_scales.get(step)
        if other is not None:
            b = struct.unpack("<i", struct.pack("<f", other))[0]
            t[3], t[4] = max(int(t[3]), b), max(int(t[4]), -b)


@pytest.fixture
def others(monkeypatch):
    def install(**kw):
        o = Others(**kw)
        monkeypatch.setattr(dist, "all_reduce", o)
        return o
    return install


def as_zero_local(opt, rank=1):
    """Give opt the role ZeroRedundancyOptimizer's constructor gives its local optimizer."""
    opt._c.zero_rank, opt._c.zero_group = rank, None
    return opt


def bits(t):
    t = t.detach().contiguous()
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


CASES = {
    "adam-f16-master": (ot.Adam, dict(lr=1e-2, master_weights=True), [(7, 5), (13,)], torch.float16),
    "lamb": (ot.LAMB, dict(lr=1e-2, max_grad_norm=None), [(6, 4), (9,)], torch.float32),  # per-tensor trust ratios
    "muon": (ot.Muon, dict(lr=2e-2), [(8, 6), (5, 7)], torch.float32),  # orthogonalises whole matrices
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_agreement_is_one_process_stepping_the_model(others, name):
    """A local optimizer that sees no overflow in its shard skips and backs off when another rank's shard
    overflowed (all_reduce says so), and otherwise steps and grows as one process stepping the whole
    model: the same parameters (bits), scales and skipped steps as a plain optimizer whose own gradients
    hold the overflow. Its own overflow (an Inf in its shard) is skipped too, and the flag it sends says so."""
    cls, kw, shapes, dtype = CASES[name]
    seed = 2207
    print("seed", seed)
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    ls = dict(init_scale=2.0 ** 8, growth_interval=2)
    mine = [p.clone().requires_grad_() for p in init]
    ref = [p.clone().requires_grad_() for p in init]
    local = as_zero_local(cls(mine, loss_scale=ls, **kw))
    alone = cls(ref, loss_scale=ls, **kw)
    other_overflow, own_overflow = (2, 5), (4,)
    agree = others(overflow_at=other_overflow)
    scales, skips = [], []
    for t in range(8):
        assert local.loss_scale == alone.loss_scale, t
        scale = alone.loss_scale
        for i, (p, q) in enumerate(zip(mine, ref)):
            grad = (torch.randn(p.shape, generator=g) * 0.1 * scale).to(dtype)
            p.grad, q.grad = grad.clone(), grad.clone()
            if i == 0 and t in own_overflow:
                p.grad.view(-1)[3] = float("inf")
                q.grad.view(-1)[3] = float("inf")
            if i == 1 and t in other_overflow:
                q.grad.view(-1)[0] = float("nan")  # in the whole model, not in this rank's shard
        local.step()
        alone.step()
        scales.append(scale)
        skips.append(local.last_step_skipped)
        assert local.last_step_skipped == alone.last_step_skipped, (name, t)
        for p, q in zip(mine, ref):
            assert torch.equal(bits(p), bits(q)), (name, t)
    assert skips == [t in other_overflow + own_overflow for t in range(8)], skips
    assert len(set(scales)) >= 3, scales  # backed off and grown
    assert agree.calls == [int(t in own_overflow) for t in range(8)], agree.calls  # one collective per step
    assert local.skipped_steps == alone.skipped_steps == 3


def test_rank_without_tensors_takes_part(others):
    """A rank owning no tensor makes the collective at every step and follows the others' scale."""
    agree = others(overflow_at=(1,))
    opt = as_zero_local(ot.Adam([{"params": []}], lr=0.1, loss_scale=dict(init_scale=64.0, growth_interval=1)))
    got = []
    for _ in range(3):
        opt.step()
        got.append(opt.loss_scale)
    assert agree.calls == [0, 0, 0]
    assert got == [128.0, 64.0, 128.0] and opt.skipped_steps == 1, (got, opt.skipped_steps)


def test_failed_collective_raises_its_exception_and_changes_nothing(others):
    """The collective's exception comes out of step() itself (not a message about it); parameters, state,
    scale and counters are untouched, and the next step goes on."""
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale="dynamic"))
    p.grad = torch.ones(10)
    others()
    opt.step()
    before = (p.detach().clone(), opt.state[p]["exp_avg"].clone(), opt.loss_scale, opt._c.h.get_loss_scale())
    boom = RuntimeError("[gloo] Connection closed by peer")
    others(fail=boom)
    with pytest.raises(RuntimeError) as e:
        opt.step()
    assert e.value is boom
    assert torch.equal(p, before[0]) and torch.equal(opt.state[p]["exp_avg"], before[1])
    assert opt._c.h.get_loss_scale() == before[3]
    others()
    opt.step()
    assert not torch.equal(p, before[0])


BAD = [
    ("growth_factor", float("nan")), ("growth_factor", -1.0), ("backoff_factor", 2.0), ("growth_interval", 0),
    ("init_scale", float("nan")), ("init_scale", 1e300), ("scale", 1e300), ("scale", -1.0), ("scale", float("nan")),
    ("growth_factor", "abc"), ("growth_interval", None), ("growth_interval", 2.5), ("growth_tracker", False),
]


@pytest.mark.parametrize("key,value", BAD, ids=["%s=%r" % kv for kv in BAD])
def test_bad_precision_in_the_groups_is_refused_by_name(others, key, value):
    """A hand-edited (or corrupted) scaler in a ZeRO local optimizer's groups: a ValueError naming the
    group key and the bad entry at the next step and loss_scale read, and nothing changed (scale and
    growth tracker included), until the value is put right."""
    others()
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale=dict(init_scale=1024.0, growth_interval=3)))
    p.grad = torch.ones(10)
    opt.step()
    good = opt.param_groups[0]["optim_precision"]
    bad = copy.deepcopy(good)
    bad["loss_scale"][key] = value
    opt.param_groups[0]["optim_precision"] = bad
    before = (p.detach().clone(), opt._c.h.get_loss_scale())
    for attempt in (lambda: opt.step(), lambda: opt.loss_scale):
        with pytest.raises(ValueError) as e:
            attempt()
        msg = str(e.value)
        assert WHERE in msg and ("'%s'" % key in msg or repr(value) in msg), msg
        assert torch.equal(p, before[0]) and opt._c.h.get_loss_scale() == before[1], (key, value)
    opt.param_groups[0]["optim_precision"] = good
    opt.step()
    assert opt._c.h.get_loss_scale()[-1] == 2  # the growth tracker went on from where it was


def test_precision_edited_in_place_is_adopted(others):
    """The dict in the groups is shared with ZeroRedundancyOptimizer's groups and the state_dicts they
    make (torch packs groups shallowly): an edit of it in place is adopted, as a replaced one is."""
    others()
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale="dynamic"))
    p.grad = torch.ones(10)
    opt.step()
    opt.param_groups[0]["optim_precision"]["loss_scale"]["scale"] = 8.0
    assert opt.loss_scale == 8.0
    opt.param_groups[0]["optim_precision"]["seed"] = 77
    assert opt.seed == 77
    # and what the step then publishes is what C holds
    opt.step()
    assert opt.param_groups[0]["optim_precision"]["loss_scale"]["scale"] == opt.loss_scale == 8.0


@pytest.mark.parametrize("key,value", [("scale", 1e300), ("growth_factor", float("nan")), ("init_scale", 1e300),
                                       ("growth_interval", "7")])
def test_load_state_dict_refused_precision_changes_nothing(key, value):
    """load_state_dict of a state_dict whose scaler liboptim refuses: ValueError naming optim_precision
    and the value, before anything changed (state, groups, scale and growth tracker)."""
    p = torch.randn(10, requires_grad=True)
    opt = ot.Adam([p], lr=0.1, loss_scale="dynamic")
    p.grad = torch.ones(10)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["lr"] = 0.5
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"] + 1.0
    sd["optim_precision"]["loss_scale"][key] = value
    before = (opt.state[p]["exp_avg"].clone(), opt._c.h.get_loss_scale())
    with pytest.raises(ValueError) as e:
        opt.load_state_dict(sd)
    assert "optim_precision" in str(e.value) and (repr(value) in str(e.value) or "'%s'" % key in str(e.value))
    assert torch.equal(opt.state[p]["exp_avg"], before[0]) and opt._c.h.get_loss_scale() == before[1]
    assert opt.param_groups[0]["lr"] == 0.1
    assert not math.isnan(opt.loss_scale)


def test_not_in_zero_no_hook(others):
    """Outside ZeroRedundancyOptimizer nothing is all-reduced, and a group's precision key is ignored."""
    agree = others(overflow_at=(0,))
    p = torch.randn(4, requires_grad=True)
    opt = ot.Adam([p], lr=0.1, loss_scale="dynamic")
    p.grad = torch.ones(4)
    opt.step()
    assert agree.calls == [] and not opt.last_step_skipped and _distributed.prepare_step(opt._c) is False


# ---- the ranks agree on the loss scale mode ------------------------------------------------------

SCALES = {"off": None, "static": 128.0, "dynamic": "dynamic"}
CODES = {"off": 0, "static": 1, "dynamic": 2}
PAIRS = [("dynamic", "off"), ("dynamic", "static"), ("off", "dynamic"), ("static", "dynamic"), ("off", "static"),
         ("static", "off")]


@pytest.mark.parametrize("mine,theirs", PAIRS, ids=["%s-vs-%s" % p for p in PAIRS])
def test_ranks_with_other_loss_scale_modes_raise_naming_them(others, mine, theirs):
    """At its first step every rank makes the same all-reduce whatever its mode (a dynamic one inside the
    step, with its overflow flag): a rank whose mode is not another's raises ValueError naming both modes
    (every rank sees the same reduced values, so every rank raises, instead of waiting in collectives the
    others never make), and nothing changed. Once the others agree, the step goes on."""
    agree = others(modes={0: CODES[theirs]})
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale=SCALES[mine]))
    p.grad = torch.ones(10)
    before = (p.detach().clone(), opt._c.h.get_loss_scale())
    with pytest.raises(ValueError) as e:
        opt.step()
    msg = str(e.value)
    assert "rank 1" in msg and "loss scale modes" in msg and "this rank's is %r" % mine in msg, msg
    assert "another's is %r" % theirs in msg, msg
    assert torch.equal(p, before[0]) and opt._c.h.get_loss_scale() == before[1] and opt._c.h.get_step(0) == 0
    assert agree.modes == [CODES[mine]]
    opt.step()  # the others agree now
    assert opt._c.h.get_step(0) == 1 and agree.modes == [CODES[mine]] * 2


@pytest.mark.parametrize("mode", ["off", "static"])
def test_agreed_modes_but_dynamic_make_no_collective_after_the_first_step(others, mode):
    agree = others()
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale=SCALES[mode]))
    for _ in range(3):
        p.grad = torch.ones(10)
        opt.step()
    assert agree.modes == [CODES[mode]] and opt._c.h.get_step(0) == 3


def test_a_rank_leaving_dynamic_scaling_alone_raises(others):
    """After the ranks agreed on 'dynamic', a rank whose mode was changed by hand (its groups' precision
    state edited) still makes the step's all-reduce: the others, still dynamic, and it raise, nothing
    changed; when every rank has changed, they agree on the new mode and stop making the collective."""
    agree = others(modes={2: CODES["dynamic"]})
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale="dynamic"))
    for _ in range(2):
        p.grad = torch.ones(10)
        opt.step()
    prec = copy.deepcopy(opt.param_groups[0]["optim_precision"])
    prec["loss_scale"].update(mode="static", growth_tracker=0)
    opt.param_groups[0]["optim_precision"] = prec
    before = (p.detach().clone(), opt.state[p]["exp_avg"].clone())
    with pytest.raises(ValueError) as e:
        opt.step()
    assert "this rank's is 'static', another's is 'dynamic'" in str(e.value), str(e.value)
    assert torch.equal(p, before[0]) and torch.equal(opt.state[p]["exp_avg"], before[1])
    for _ in range(3):
        opt.step()
    assert agree.modes == [2, 2, 1, 1] and opt._c.h.get_step(0) == 5, agree.modes


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_ranks_with_other_loss_scales_raise_naming_them(others, mode):
    """Ranks in the same mode with different scales (each rank's loss multiplied by its own): every rank
    raises ValueError naming both scales, nothing changed; a dynamic rank compares at every step (a scale
    that drifts apart later, another growth_interval, is found then), a static one at its first step."""
    kw = 128.0 if mode == "static" else dict(init_scale=128.0, growth_interval=2)
    agree = others(scales={0: 256.0} if mode == "static" else {3: 512.0})
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale=kw))
    steps = 0 if mode == "static" else 3
    for _ in range(steps):
        p.grad = torch.ones(10)
        opt.step()
    before = (p.detach().clone(), opt._c.h.get_loss_scale())
    p.grad = torch.ones(10)
    with pytest.raises(ValueError) as e:
        opt.step()
    mine = 128.0 if mode == "static" else 256.0  # grown once after two steps
    other = 256.0 if mode == "static" else 512.0
    assert "different loss scales (%s): this rank's is %r, another's is %r" % (mode, mine, other) in str(e.value), \
        str(e.value)
    assert torch.equal(p, before[0]) and opt._c.h.get_loss_scale() == before[1]
    assert agree.scales[-1] == mine


# ---- a rank whose step fails before the all-reduce -------------------------------------------------

FAILURES = {
    # a gradient the binding refuses (another dtype), found before any collective
    "grad-dtype": lambda opt, p: setattr(p.grad, "data", p.grad.data.double()),  # (p.grad = ... is refused)
    # a precision state in the groups liboptim refuses (read when the step adopts it)
    "bad-precision": lambda opt, p: opt.param_groups[0].__setitem__(
        "optim_precision", dict(copy.deepcopy(opt.param_groups[0].get("optim_precision") or {}), seed=-1)),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("mode", ["off", "static", "dynamic"])
def test_a_rank_failing_before_the_all_reduce_makes_it_with_a_failure_flag(others, mode, failure):
    """At a step where the others make the loss scale's all-reduce (the first step; after agreeing on
    'dynamic', every step), a rank whose step fails before making it makes it with the FAILED flag after all,
    then raises its own exception, nothing changed: the others raise at once instead of waiting in it for
    the process group's timeout. After agreeing on 'off' or 'static' nobody makes it: the failure makes no
    collective."""
    agree = others()
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale=SCALES[mode]))
    steps = 0 if mode != "dynamic" else 2
    for _ in range(steps):
        p.grad = torch.ones(10)
        opt.step()
    p.grad = torch.ones(10)
    FAILURES[failure](opt, p)
    before = (p.detach().clone(), opt._c.h.get_loss_scale(), opt._c.h.get_step(0))
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    assert torch.equal(p, before[0]) and opt._c.h.get_loss_scale() == before[1] and opt._c.h.get_step(0) == steps
    assert agree.calls == [0] * steps + [_distributed.FAILED], agree.calls
    if mode == "dynamic":
        return
    # The same failure once the ranks agreed on 'off' or 'static': no collective.
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale=SCALES[mode]))
    p.grad = torch.ones(10)
    opt.step()
    calls = len(agree.calls)
    FAILURES[failure](opt, p)
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    assert len(agree.calls) == calls, agree.calls


@pytest.mark.parametrize("mode", ["off", "static", "dynamic"])
def test_another_rank_failing_its_step_makes_every_rank_raise(others, mode):
    """The FAILED flag in the reduced values (another rank's step failed before the all-reduce): this rank
    raises RuntimeError saying so, nothing changed (a dynamic rank inside its step, the others before it);
    its next step goes on (the failure and the steps since were alike on every rank)."""
    steps = 0 if mode != "dynamic" else 2
    agree = others(failed_at=(steps,))
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.Adam([p], lr=0.1, loss_scale=SCALES[mode]), rank=2)
    for _ in range(steps):
        p.grad = torch.ones(10)
        opt.step()
    p.grad = torch.ones(10)
    before = (p.detach().clone(), opt.state[p]["exp_avg"].clone() if steps else None, opt._c.h.get_loss_scale())
    with pytest.raises(RuntimeError) as e:
        opt.step()
    assert str(e.value).startswith("rank 2: another rank of ZeroRedundancyOptimizer's process group failed its "
                                   "step before the loss scale's all-reduce"), str(e.value)
    assert torch.equal(p, before[0]) and opt._c.h.get_loss_scale() == before[2]
    assert opt._c.h.get_step(0) == steps and (not steps or torch.equal(opt.state[p]["exp_avg"], before[1]))
    assert agree.calls == [0] * (steps + 1)  # made once, by this rank, at the failed step
    opt.step()
    assert opt._c.h.get_step(0) == steps + 1 and len(agree.calls) == steps + 2


@pytest.mark.parametrize("how", ["eval-mode", "bad-k"])
def test_a_schedule_free_rank_failing_before_its_step_makes_the_all_reduce(others, how):
    """Schedule-free's own checks before the step (train mode; a group's k edited by hand) fail it before the
    all-reduce too: the rank makes it with the FAILED flag, nothing changed."""
    agree = others()
    p = torch.randn(10, requires_grad=True)
    opt = as_zero_local(ot.AdamWScheduleFree([p], lr=0.1))
    opt.train()
    if how == "eval-mode":
        opt.eval()
    else:
        opt.param_groups[0]["k"] = -1
    p.grad = torch.ones(10)
    before = p.detach().clone()
    with pytest.raises((RuntimeError, ValueError)):
        opt.step()
    assert torch.equal(p, before) and agree.calls == [_distributed.FAILED], agree.calls
