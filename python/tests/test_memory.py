"""The binding never touches memory it does not own (issue 10's Python side).

- A tensor whose storage cannot hold its shape (storage().resize_(0) or a
  smaller size: numel unchanged, memory gone) is refused before C or torch
  reads it, in every entry point: the step, clipping, SAM's three calls,
  state_dict/load_state_dict and the state views, add_param_group.
- Memory handed to C stays alive for the whole call although another thread
  replaces p.data or p.grad meanwhile (run under AddressSanitizer by the
  robustness test python.asan, where a use after free stops the process).
- SAM: memory replaced between first_step and second_step/restore gets w,
  the old memory is never written; a base optimizer refuses what would lose
  the way back to w (add_param_group, step, checkpoints) while perturbed;
  the C SAM object and its base are freed in either order.
- Paths: NUL bytes refused, bytes and os.PathLike accepted.

Every test here failed (or crashed under ASan) before its fix.
"""
import gc
import os
import pathlib
import threading

import pytest
import torch

import optim
import optim.torch as ot

ALL = [(ot.SGD, dict(lr=0.1, momentum=0.9)), (ot.Adagrad, {}), (ot.RMSprop, dict(centered=True)), (ot.Adadelta, {}),
       (ot.Adam, dict(amsgrad=True)), (ot.AdamW, {}), (ot.RAdam, {}), (ot.NAdam, {}), (ot.AdaBound, {}),
       (ot.Lion, {}), (ot.Adamax, {}), (ot.ASGD, {}), (ot.Rprop, {}), (ot.LAMB, {}),
       (ot.LARS, dict(momentum=0.9, weight_decay=1e-3))]
IDS = [c.__name__ for c, _ in ALL]
FREED = "freed or shrunk"


def _leaf(n=1000, value=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, generator=g) if value is None else torch.full((n,), float(value))
    return t.requires_grad_()


def _free(t):
    """The ways a tensor's memory goes while its shape stays."""
    t.storage().resize_(0)


def _shrink(t):
    t.storage().resize_(t.numel() // 2)


def _set_smaller(t):
    """torch accepts set_() onto a storage smaller than the size it is given."""
    with torch.no_grad():
        t.set_(torch.zeros(t.numel() // 2).storage(), 0, t.shape, t.stride())


BREAK = {"freed": _free, "shrunk": _shrink, "set_smaller": _set_smaller}


# ---- tensors whose storage cannot hold their shape -------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(BREAK))
@pytest.mark.parametrize("cls,kw", ALL, ids=IDS)
def test_step_refuses_a_gradient_without_memory(cls, kw, how):
    """Before: the kernel read n floats from a 4-byte placeholder (freed) or
    past the end of the storage (shrunk), and the parameter filled with
    garbage. Now: ValueError naming the gradient, nothing updated."""
    p, q = _leaf(1000), _leaf(7, seed=1)
    opt = cls([p, q], **kw)
    p.grad, q.grad = torch.ones(1000), torch.ones(7)
    opt.step()
    before = [t.detach().clone() for t in (p, q)]
    steps = [opt.state[t].get("step") for t in (p, q)]
    BREAK[how](p.grad)
    assert p.grad.numel() == 1000
    with pytest.raises(ValueError, match="gradient of parameter 0 .*" + FREED):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, (p, q)))
    assert [opt.state[t].get("step") for t in (p, q)] == steps
    p.grad = torch.ones(1000)
    opt.step()  # usable again


@pytest.mark.parametrize("how", sorted(BREAK))
def test_step_refuses_a_parameter_without_memory(how):
    p, q = _leaf(1000), _leaf(7, seed=1)
    opt = ot.Adam([p, q])
    p.grad, q.grad = torch.ones(1000), torch.ones(7)
    BREAK[how](p)
    with pytest.raises(ValueError, match=r"parameter 0 \(shape \(1000,\).*" + FREED):
        opt.step()
    assert float(opt.state[q].get("step", 0)) == 0  # nothing stepped, not even q


def test_a_view_whose_base_storage_shrank_is_refused():
    """A parameter that is a view (offset 500) of a storage shrunk to 600
    floats: its data_ptr() is not 0, but it reaches byte 4000 of 2400."""
    base = torch.zeros(1000)
    p = base[500:].requires_grad_()
    assert p.is_leaf
    opt = ot.SGD([p], lr=0.1)
    p.grad = torch.ones(500)
    base.storage().resize_(600)
    assert p.data_ptr() != 0
    with pytest.raises(ValueError, match=r"reaches 4000 bytes of its storage \(offset 500.*holds 2400"):
        opt.step()


def test_new_parameters_without_memory_are_refused():
    p = _leaf(10)
    _free(p)
    with pytest.raises(ValueError, match="parameter 0 .*" + FREED):
        ot.SGD([p], lr=0.1)
    opt = ot.SGD([_leaf(3)], lr=0.1)
    with pytest.raises(ValueError, match="parameter 1 .*" + FREED):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("how", sorted(BREAK))
@pytest.mark.parametrize("fn", ["clip_grad_norm_", "clip_grad_value_"])
def test_clipping_refuses_a_gradient_without_memory(fn, how):
    a, b = _leaf(5), _leaf(1000, seed=1)
    a.grad, b.grad = torch.full((5,), 100.0), torch.full((1000,), 100.0)
    BREAK[how](b.grad)
    with pytest.raises(ValueError, match="gradient of parameter 1 .*" + FREED):
        getattr(ot, fn)([a, b], 1.0)
    assert torch.equal(a.grad, torch.full((5,), 100.0))


def test_sam_refuses_tensors_without_memory_in_each_half():
    p, q = _leaf(1000), _leaf(7, seed=1)
    sam = ot.SAM([p, q], ot.SGD, lr=0.1)
    w = [t.detach().clone() for t in (p, q)]
    p.grad, q.grad = torch.ones(1000), torch.ones(7)
    g = p.grad
    _free(g)
    with pytest.raises(ValueError, match="gradient of parameter 0 .*" + FREED):
        sam.first_step()
    assert not sam.perturbed and torch.equal(p, w[0])
    p.grad = torch.ones(1000)
    sam.first_step()
    _free(p.grad)
    with pytest.raises(ValueError, match="gradient of parameter 0 .*" + FREED):
        sam.second_step()
    assert sam.perturbed  # nothing changed: still at w + e
    p.grad = torch.ones(1000)
    sam.second_step()
    # A parameter without memory between the halves: refused by second_step and restore.
    sam.first_step()
    keep = p.data
    _free(p)
    for call in (sam.second_step, sam.restore):
        with pytest.raises(ValueError, match="parameter 0 .*" + FREED):
            call()
        assert sam.perturbed
    p.data = torch.empty(1000)  # memory again: restore writes w into it
    sam.restore()
    assert not sam.perturbed and torch.equal(q, w[1] - 0.1 * torch.ones(7))
    assert keep.numel() == 1000  # the old tensor object (memory gone) was never written: no crash


def test_state_tensors_without_memory_are_refused():
    """load_state_dict and assignments to state copy the user's tensors with
    torch, which would read freed memory: refused first."""
    p = _leaf(1000)
    opt = ot.Adam([p])
    p.grad = torch.ones(1000)
    opt.step()
    sd = opt.state_dict()
    bad = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in sd["state"][0].items()}
    _free(bad["exp_avg"])
    with pytest.raises(ValueError, match=r"\['exp_avg'\] .*" + FREED):
        opt.load_state_dict({"state": {0: bad}, "param_groups": sd["param_groups"]})
    with pytest.raises(ValueError, match=FREED):
        opt.state[p]["exp_avg_sq"] = bad["exp_avg"]
    with pytest.raises(ValueError, match=FREED):
        opt.state[p] = bad
    step = torch.tensor(5.0)
    _free(step)
    with pytest.raises(ValueError, match=r"\['step'\].*" + FREED):
        opt.state[p]["step"] = step
    assert float(opt.state[p]["step"]) == 1.0
    lr = torch.tensor(0.5)
    _free(lr)
    opt.param_groups[0]["lr"] = lr
    with pytest.raises(ValueError, match="param group 0: lr.*" + FREED):
        opt.step()
    # The views themselves cannot lose their memory (torch refuses to resize them).
    opt.param_groups[0]["lr"] = 1e-3
    with pytest.raises(RuntimeError, match="not resizable"):
        opt.state[p]["exp_avg"].storage().resize_(0)


def test_odd_tensors_are_refused_cleanly():
    """0-dim and empty tensors step; expanded ones are refused (ValueError,
    not a crash), a huge storage offset too."""
    a, e = torch.zeros((), requires_grad=True), torch.zeros(0, requires_grad=True)
    opt = ot.Adam([a, e], lr=0.5)
    a.grad, e.grad = torch.ones(()), torch.zeros(0)
    opt.step()
    assert abs(float(a) + 0.5) < 1e-6 and float(opt.state[e]["step"]) == 1.0
    t = torch.zeros(8, 1).expand(8, 8).requires_grad_()
    with pytest.raises(ValueError, match="overlaps itself"):
        ot.SGD([t], lr=0.1)
    big = torch.zeros(1 << 20)
    far = big[(1 << 20) - 3:].requires_grad_()  # offset 1048573
    opt = ot.SGD([far], lr=1.0)
    far.grad = torch.ones(3)
    opt.step()
    assert torch.equal(big[-3:], -torch.ones(3))
    big.storage().resize_(1 << 19)
    with pytest.raises(ValueError, match="offset 1048573"):
        opt.step()
    # torch's lazy negation bit: the memory holds the values negated.
    p = torch.ones(3, requires_grad=True)
    opt = ot.SGD([p], lr=1.0)
    p.grad = torch.ones(3)._neg_view()
    for call in (opt.step, lambda: ot.clip_grad_norm_([p], 1.0), lambda: ot.clip_grad_value_([p], 0.5)):
        with pytest.raises(ValueError, match="lazy negation view"):
            call()
    assert torch.equal(p, torch.ones(3))
    with pytest.raises(ValueError, match="parameter 0 .*lazy negation view"):
        ot.SGD([torch.ones(3)._neg_view().requires_grad_()], lr=1.0)
    p.grad = torch.ones(3)
    p.data = torch.ones(3)._neg_view()
    with pytest.raises(ValueError, match="parameter 0 .*lazy negation view"):
        opt.step()


# ---- storages replaced by another thread during a call -----------------------------------------------------------


def _race(work, replace, seconds_of_work=60):
    """Run replace() in a loop in a thread while work() runs; raise what either raised."""
    stop = threading.Event()
    errors = []

    def loop():
        try:
            while not stop.is_set():
                replace()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=loop)
    t.start()
    try:
        work()
    finally:
        stop.set()
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("cls,kw", [(ot.SGD, dict(lr=1e-3, momentum=0.9)), (ot.Adam, {})], ids=["SGD", "Adam"])
def test_steps_while_another_thread_replaces_the_tensors(cls, kw):
    """ctypes releases the GIL during a step: another thread replaces the data
    of p and of p.grad meanwhile (freeing the old memory). The step keeps the
    storages it passed alive: under ASan a step wrote freed memory before.
    Each step updates the memory it checked; values stay finite. (Not
    `p.grad = None` from the thread: that crashes torch 1.13 itself, with
    torch.optim as well, in its tensor deallocation.)"""
    n = 1 << 18
    p = _leaf(n)
    opt = cls([p], **kw)
    p.grad = torch.ones(n)

    def replace():
        p.data = torch.zeros(n)
        p.grad.data = torch.ones(n)

    def work():
        for _ in range(200):
            try:
                opt.step()
            except ValueError:  # pragma: no cover - never: a replaced tensor is as valid as the old one
                raise

    _race(work, replace)
    assert bool(torch.isfinite(p).all())


def test_clipping_and_sam_while_another_thread_replaces_the_tensors():
    n = 1 << 18
    p = _leaf(n)
    p.grad = torch.ones(n)
    sam = ot.SAM([p], ot.SGD, lr=1e-3)

    def replace():
        p.grad.data = torch.full((n,), 2.0)
        p.data = torch.ones(n)

    def work():
        for _ in range(100):
            ot.clip_grad_norm_([p], 1.0)
            ot.clip_grad_value_([p], 0.5)
            sam.first_step()
            sam.second_step()
        sam.first_step()
        sam.restore()

    _race(work, replace)
    assert not sam.perturbed


def test_one_optimizer_stepped_from_two_threads_steps_in_turn():
    """Calls on one optimizer are serialized (one C object must not run two
    calls at once): 2 x 20 steps of SGD from two threads give the bits of 40
    steps in one. (Steps long enough to overlap if they were not serialized:
    then updates are lost.)"""
    n = 1 << 22
    p, q = _leaf(n, value=1.0), _leaf(n, value=1.0)
    a, b = ot.SGD([p], lr=1e-3), ot.SGD([q], lr=1e-3)
    p.grad, q.grad = torch.full((n,), 0.5), torch.full((n,), 0.5)
    threads = [threading.Thread(target=lambda: [a.step() for _ in range(20)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(40):
        b.step()
    assert torch.equal(p, q)


def test_different_optimizers_step_in_parallel_with_the_same_bits():
    n = 1 << 16
    ps = [_leaf(n, seed=s) for s in range(3)]
    qs = [t.detach().clone().requires_grad_() for t in ps]
    for t in ps + qs:
        t.grad = torch.full((n,), 0.25)
    par, seq = [ot.Adam([t], lr=1e-2) for t in ps], [ot.Adam([t], lr=1e-2) for t in qs]
    threads = [threading.Thread(target=lambda o=o: [o.step() for _ in range(50)]) for o in par]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in seq:
        for _ in range(50):
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(ps, qs))


# ---- SAM: memory replaced between the halves ----------------------------------------------------------------------


def _sam_pair(n=1000, base=ot.SGD, **kw):
    """Two SAMs over equal parameters with equal gradients."""
    out = []
    for _ in range(2):
        ps = [_leaf(n, seed=3), _leaf(5, seed=4)]
        sam = ot.SAM(ps, base, lr=0.1, **kw)
        for t in ps:
            t.grad = torch.ones_like(t)
        out.append((sam, ps))
    return out


@pytest.mark.parametrize("finish", ["second_step", "restore"])
def test_sam_restores_w_into_memory_replaced_between_the_halves(finish):
    """p.data replaced between first_step and second_step/restore: w goes into
    the new memory (as an in-place write between the halves is overwritten),
    the old memory is never written. Before, w was copied into the old,
    freed memory (heap-use-after-free write under ASan)."""
    (s1, p1), (s2, p2) = _sam_pair()
    w = p1[0].detach().clone()
    for sam in (s1, s2):
        sam.first_step()
    old = p1[0].data  # hold the old memory to see that it is not written
    perturbed = old.clone()
    p1[0].data = torch.full((1000,), 7.0)  # replaced
    p2[0].data.fill_(7.0)  # written in place: the reference
    getattr(s1, finish)()
    getattr(s2, finish)()
    assert torch.equal(p1[0], p2[0]) and torch.equal(p1[1], p2[1])
    if finish == "restore":
        assert torch.equal(p1[0], w)
    assert torch.equal(old, perturbed)  # the old memory kept w + e
    # Freed memory: replaced without holding the old tensor (ASan checks the write).
    for sam in (s1, s2):
        sam.first_step()
    p1[0].data = torch.full((1000,), 3.0)
    p2[0].data.fill_(3.0)
    gc.collect()
    getattr(s1, finish)()
    getattr(s2, finish)()
    assert torch.equal(p1[0], p2[0])


def test_sam_step_whose_closure_replaces_memory_and_raises():
    (s1, p1), (s2, p2) = _sam_pair()
    w = [t.detach().clone() for t in p1]

    def closure():
        p1[0].data = torch.zeros(1000)
        raise KeyError("in the closure")

    with pytest.raises(KeyError, match="in the closure"):
        s1.step(closure)
    assert not s1.perturbed and torch.equal(p1[0], w[0]) and torch.equal(p1[1], w[1])

    def breaking():
        p1[0].data = torch.zeros(1000, dtype=torch.float64)
        raise KeyError("again")

    with pytest.raises(RuntimeError, match="closure raised KeyError, and w could not be restored: .*changed dtype from torch.float32 to torch.float64"):
        s1.step(breaking)
    assert s1.perturbed
    p1[0].data = torch.zeros(1000)
    s1.restore()
    assert torch.equal(p1[0], w[0]) and not s1.perturbed


def test_sam_refuses_an_invalid_replacement_and_keeps_the_way_back():
    (sam, ps), _ = _sam_pair()
    w = ps[0].detach().clone()
    sam.first_step()
    for bad, exc, msg in ((torch.zeros(1000, dtype=torch.float64), TypeError, "changed dtype from torch.float32 to torch.float64"),
                          (torch.zeros(10), ValueError, "changed shape"),
                          (torch.zeros(1).expand(1000), ValueError, "overlaps itself")):
        ps[0].data = bad
        for call in (sam.second_step, sam.restore):
            with pytest.raises(exc, match=msg):
                call()
            assert sam.perturbed
    # Another parameter's memory: an overlap, refused with nothing changed.
    shared = torch.zeros(1003)
    ps[0].data, ps[1].data = shared[:1000], shared[998:]
    with pytest.raises(ValueError, match="overlaps"):
        sam.restore()
    assert sam.perturbed
    ps[0].data, ps[1].data = torch.zeros(1000), torch.zeros(5)
    sam.restore()
    assert torch.equal(ps[0], w) and not sam.perturbed


def test_sam_parameters_swapped_between_the_halves():
    """Two parameters of one shape swap memory: both get their own w."""
    a, b = _leaf(100, seed=1), _leaf(100, seed=2)
    sam = ot.SAM([a, b], ot.SGD, lr=0.1)
    w = [a.detach().clone(), b.detach().clone()]
    a.grad, b.grad = torch.ones(100), torch.ones(100)
    sam.first_step()
    a.data, b.data = b.data, a.data
    sam.restore()
    assert torch.equal(a, w[0]) and torch.equal(b, w[1])


def test_base_optimizer_refuses_what_would_lose_the_way_back_to_w():
    """add_param_group, step and checkpoints on the base between SAM's halves
    are refused, nothing changed; second_step then completes. Before,
    add_param_group was accepted and second_step, restore and first_step all
    refused: the weights stayed at w + e."""
    (s1, p1), (s2, p2) = _sam_pair(base=ot.Adam)
    for sam in (s1, s2):
        sam.first_step()
    base = s1.base_optimizer
    new = _leaf(3, seed=9)
    for call, what in ((lambda: base.add_param_group({"params": [new]}), "add_param_group"),
                       (lambda: s1.add_param_group({"params": [new]}), "add_param_group"),
                       (base.step, "step"),
                       (lambda: base.save_checkpoint(os.devnull), "checkpoint"),
                       (lambda: s1.save_checkpoint(os.devnull), "checkpoint")):
        with pytest.raises(RuntimeError, match="between first_step and second_step"):
            call()
    assert len(base.param_groups) == 1 and s1.perturbed
    for sam in (s1, s2):
        sam.second_step()
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    s1.add_param_group({"params": [new]})  # between SAM steps: fine
    new.grad = torch.ones(3)
    for t in p1:
        t.grad = torch.ones_like(t)
    s1.first_step()
    s1.second_step()  # a new C SAM object for the new parameters
    assert float(base.state[new]["step"]) == 1.0


def _handles(sam):
    return sam._c, sam.base_optimizer._h


@pytest.mark.parametrize("order", ["base_first", "sam_first"])
def test_sam_and_its_base_are_freed_in_either_order(order):
    """The garbage collector finalizes a reference cycle's objects in any
    order. A base finalized first is freed by its last SAM object after that
    one is freed (optim_sam_free may touch its base: under ASan, a write to a
    freed base before). Both orders, as gc would call them."""
    p = _leaf(100)
    sam = ot.SAM([p], ot.SGD, lr=0.1)
    p.grad = torch.ones(100)
    sam.first_step()
    sh, bh = _handles(sam)
    assert sh.ptr and bh.ptr and bh.sam_active
    if order == "base_first":
        bh.__del__()
        assert bh.ptr is not None  # kept for its SAM object
        sh.__del__()
        assert sh.ptr is None and bh.ptr is None
    else:
        sh.__del__()
        assert sh.ptr is None and bh.ptr is not None and not bh.sam_active
        bh.__del__()
        assert bh.ptr is None
    del sam, sh, bh  # the finalizers run again: nothing left to free


def test_sam_in_a_reference_cycle_is_collected_between_its_halves():
    import weakref
    for k in range(4):
        p = _leaf(1000)
        sam = ot.SAM([p], ot.Adam, lr=0.1)
        p.grad = torch.ones(1000)
        sam.first_step()
        base = sam.base_optimizer
        # Cycles through the SAM, its base, and both (built in different orders).
        if k == 0:
            sam.me = sam
        elif k == 1:
            base.sam = sam
            sam.me = sam
        elif k == 2:
            holder = [sam, base]
            holder.append(holder)
            sam.holder = holder
            del holder
        else:
            base.cycle = {"sam": sam, "base": base}
        sh, bh = (weakref.ref(h) for h in _handles(sam))
        del sam, base
        gc.collect()
        assert sh() is None and bh() is None
        del p


# ---- paths --------------------------------------------------------------------------------------------------------


def _opt():
    p = _leaf(10)
    opt = ot.Adam([p], lr=0.1)
    p.grad = torch.ones(10)
    opt.step()
    return opt, p


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlike"])
def test_a_path_with_a_nul_byte_is_refused(tmp_path, kind):
    """Before, "run.ckpt\\0.bak" wrote run.ckpt (C reads up to the NUL)."""
    opt, _ = _opt()
    text = str(tmp_path / "run.ckpt") + "\0.bak"
    path = {"str": text, "bytes": os.fsencode(text), "pathlike": pathlib.PurePath(str(tmp_path)) / "r\0n"}[kind]
    for call in (opt.save_checkpoint, opt.load_checkpoint):
        with pytest.raises(ValueError, match="contains a NUL byte"):
            call(path)
    sam = ot.SAM([_leaf(3)], ot.SGD, lr=0.1)
    for call in (sam.save_checkpoint, sam.load_checkpoint):
        with pytest.raises(ValueError, match="contains a NUL byte"):
            call(path)
    assert os.listdir(tmp_path) == []


def test_bytes_and_pathlike_paths_work_as_for_torch_save(tmp_path):
    opt, p = _opt()
    for path in (tmp_path / "a.ckpt", os.fsencode(str(tmp_path / "b.ckpt")), str(tmp_path / "c.ckpt")):
        if not isinstance(path, bytes):
            torch.save(opt.state_dict(), path)  # torch takes the same names (torch 1.13: not bytes)
        opt.save_checkpoint(path)
        other = ot.Adam([_leaf(10)], lr=0.1)
        other.load_checkpoint(path)
        assert torch.equal(other.state_dict()["state"][0]["exp_avg"], opt.state[p]["exp_avg"])
    with open(os.devnull, "wb") as f:
        for bad in (3, None, f):
            with pytest.raises(TypeError, match="str, bytes or os.PathLike"):
                opt.save_checkpoint(bad)
    with pytest.raises(optim.OptimError):
        opt.load_checkpoint(tmp_path / "missing.ckpt")


# ---- the C object's addresses from before ------------------------------------------------------------------------


def test_add_param_group_after_a_gradient_was_freed():
    """The C object keeps the addresses of the last step; a gradient set to
    None and its memory given to a new parameter was refused as an overlap by
    optim_add_param. The binding rebinds the live memory first."""
    p = _leaf(1000)
    opt = ot.Adam([p])
    g = torch.ones(1000)
    p.grad = g
    opt.step()
    p.grad = None  # no longer p's gradient: its memory is the user's again
    q = g.requires_grad_()  # and becomes a parameter
    opt.add_param_group({"params": [q], "lr": 0.5})
    q.grad = torch.ones(1000)
    p.grad = torch.ones(1000)
    opt.step()
    assert float(opt.state[q]["step"]) == 1.0 and float(opt.state[p]["step"]) == 2.0


def test_add_param_group_refuses_while_an_old_parameter_is_broken():
    p = _leaf(10)
    opt = ot.SGD([p], lr=0.1)
    p.data = torch.zeros(10, dtype=torch.float64)
    with pytest.raises(TypeError, match="parameter 0 changed dtype from torch.float32 to torch.float64"):
        opt.add_param_group({"params": [_leaf(3)]})
    assert len(opt.param_groups) == 1
    p.data = torch.zeros(10)
    opt.add_param_group({"params": [_leaf(3)]})


def test_views_hold_the_c_memory_not_the_optimizer():
    import weakref
    p = _leaf(1000)
    opt = ot.Adam([p])
    p.grad = torch.ones(1000)
    opt.step()
    view = opt.state[p]["exp_avg"]
    h, o = weakref.ref(opt._h), weakref.ref(opt)
    gc.disable()
    try:
        del opt
        assert o() is None and h() is not None
        assert torch.allclose(view, torch.full((1000,), 0.1))
        view.mul_(2)  # still the C memory, writable
        del view
        assert h() is None
    finally:
        gc.enable()


def test_a_view_pointed_elsewhere_is_made_again():
    p = _leaf(10)
    opt = ot.Adam([p])
    p.grad = torch.ones(10)
    opt.step()
    v = opt.state[p]["exp_avg"]
    v.data = torch.zeros(10)  # the user's tensor now: not the C memory
    again = opt.state[p]["exp_avg"]
    assert again is not v and torch.allclose(again, torch.full((10,), 0.1))
    opt.state[p]["exp_avg"] = torch.full((10,), 5.0)  # written into the C memory, not into v
    assert torch.equal(v, torch.zeros(10)) and torch.equal(opt.state[p]["exp_avg"], torch.full((10,), 5.0))



# ---- the second adversarial round (issue 10) -------------------------------------------------


def _odd_float32(n, offset=1):
    """A float32 tensor of n elements at an address that is no multiple of 4
    (torch.frombuffer takes any byte offset)."""
    t = torch.frombuffer(bytearray(4 * n + 8), dtype=torch.float32, offset=offset, count=n)
    assert t.data_ptr() % 4 != 0
    return t


@pytest.mark.parametrize("cls,kw", ALL, ids=IDS)
def test_misaligned_memory_is_refused_in_every_entry_point(cls, kw):
    # Before, C loaded floats from the odd address (UBSan: misaligned load, under python.asan).
    p, q = _leaf(64, seed=1), _leaf(64, seed=2)
    opt = cls([p, q], **kw)
    p.grad, q.grad = torch.ones(64), torch.ones(64)
    opt.step()
    want_p, want_q = p.detach().clone(), q.detach().clone()
    p.grad = _odd_float32(64)
    with pytest.raises(ValueError, match="not aligned to 4 bytes"):
        opt.step()
    with pytest.raises(ValueError, match="not aligned to 4 bytes"):
        ot.clip_grad_norm_([q, p], 1.0)
    with pytest.raises(ValueError, match="not aligned to 4 bytes"):
        ot.clip_grad_value_([q, p], 0.5)
    assert torch.equal(q.grad, torch.ones(64))
    p.grad = torch.ones(64)
    keep = p.data
    p.data = _odd_float32(64)
    with pytest.raises(ValueError, match="not aligned to 4 bytes"):
        opt.step()
    p.data = keep
    assert torch.equal(p.detach(), want_p) and torch.equal(q.detach(), want_q)
    opt.step()  # still usable
    with pytest.raises(ValueError, match="not aligned to its element size"):
        cls([_odd_float32(8, 2).requires_grad_()], **kw)
    with pytest.raises(ValueError, match="not aligned to its element size"):
        opt.add_param_group({"params": [_leaf(8), _odd_float32(8, 3).requires_grad_()]})
    assert len(opt.param_groups) == 1 and opt._h.param_count() == 2


def test_sam_refuses_misaligned_memory_and_keeps_the_way_back():
    p, q = _leaf(32, seed=3), _leaf(32, seed=4)
    w = p.detach().clone()
    sam = ot.SAM([p, q], ot.SGD, lr=0.1)
    p.grad, q.grad = _odd_float32(32), torch.ones(32)
    with pytest.raises(ValueError, match="not aligned"):
        sam.first_step()
    assert not sam.perturbed and torch.equal(p.detach(), w)
    p.grad = torch.ones(32)
    sam.first_step()
    keep = p.data
    p.data = _odd_float32(32)
    with pytest.raises(ValueError, match="not aligned"):
        sam.second_step()
    with pytest.raises(ValueError, match="not aligned"):
        sam.restore()
    assert sam.perturbed
    p.data = keep
    sam.restore()
    assert torch.equal(p.detach(), w)


@pytest.mark.parametrize("bad", ["long", "nul", "surrogate", "ndim"])
def test_add_param_group_refuses_what_liboptim_would_before_changing_anything(bad):
    # Before, the group was added and its first tensors registered in C before
    # liboptim refused a later one: param_groups and C disagreed, and every
    # later step failed (IndexError, or a count mismatch).
    first = _leaf(4, seed=5)
    second = torch.zeros([1] * 65, requires_grad=True) if bad == "ndim" else _leaf(4, seed=6)
    name = {"long": "x" * 5000, "nul": "a\0b", "surrogate": "\udc80", "ndim": "deep"}[bad]
    p0 = _leaf(4, seed=7)
    opt = ot.Adam([("p0", p0)], lr=0.1)
    with pytest.raises(ValueError, match="parameter name|dimensions"):
        opt.add_param_group({"params": [("first", first), (name, second)]})
    assert len(opt.param_groups) == 1 and opt._h.param_count() == 1 and opt._h.group_count() == 1
    opt.add_param_group({"params": [("first", first)]})
    for t in (p0, first):
        t.grad = torch.ones_like(t)
    opt.step()
    with pytest.raises(ValueError, match="parameter name|dimensions"):
        ot.Adam([("first", _leaf(4)), (name, second)], lr=0.1)


def test_a_name_with_a_nul_byte_would_have_matched_another():
    # C cut "a\0x" and "a\0y" to "a": both parameters had one name in checkpoints.
    with pytest.raises(ValueError, match="NUL byte"):
        ot.SGD([("a\0x", _leaf(3)), ("a\0y", _leaf(3))], lr=0.1)


def test_schedule_sequential_checks_its_milestones_before_c_reads_them():
    # Before, C read len(schedules) - 1 milestones from a shorter array
    # (heap-buffer-overflow read under python.asan).
    from optim._schedule import Schedule
    parts = [Schedule.constant(0.5, 3) for _ in range(40)]
    with pytest.raises(ValueError, match="40 schedules need 39 milestones, got 3"):
        Schedule.sequential(parts, [1, 2, 3])
    with pytest.raises(TypeError, match=r"schedules\[1\]"):
        Schedule.sequential([parts[0], 5], [2])
    seq = Schedule.sequential(parts[:3], [2, 4])
    assert seq.lr(1.0, 0) == 0.5 and seq.lr(1.0, 5) == 0.5 and seq.lr(1.0, 7) == 1.0
