"""Layouts: parameters and gradients that are not contiguous, against torch.optim 1.13, bit for bit.

A dense parameter in any order of its dimensions (channels_last conv weights, a transposed view, a permuted
tensor) is stepped in place in its storage order with its state in the same order; a parameter with gaps (a
slice with a step) through a working copy written back; gradients of other strides (contiguous for a
channels_last parameter, transposed, expanded with stride 0) are matched by logical index. Whatever the
layout, the bits are the ones torch computes (docs/FIDELITY.md claims float32 and float64 bit-identity for
every rule; that holds on every layout), and the state tensors have the strides torch gives its own
(zeros_like(p, memory_format=torch.preserve_format); SGD's momentum buffer is a clone of the first d_p).

 - every rule with every option combination of test_torch_bits (each a parameter group), each group holding
   one parameter of every layout, gradients cycling through four layouts, 200 steps in float32, 100 in float64;
   half-way two parameters per group change layout (`p.data = p.data.contiguous()`, and the other way), as
   torch allows: its state keeps its strides, the math is by logical index;
 - a layout changed before the first step (the state is made in the new layout, as torch makes it then);
 - state_dict from torch into optim.torch and back, mid-training, with such layouts; checkpoints;
 - Lion (not in torch) and SAM: every layout gives the bits of the same run on contiguous tensors;
 - parameters edited into param_groups by hand keep their state's layout;
 - what is refused: expanded and overlapping parameters (torch's in-place operations refuse them too),
   slices that share elements; interleaved slices of one tensor are two parameters.
"""
import io

import pytest
import torch

import optim.torch as ot
from test_torch_bits import RULES, STATE_AT, _differ, _groups, _int_view

STEPS = 100  # float32; float64 50 (two parameters of each group change layout half-way)

# (name, logical shape, how a tensor of that layout holding `values` is made). Each returns (parameter,
# base): base is the tensor whose memory the parameter views (itself, or the larger tensor it slices).


def _plain(v):
    return v.clone(), None


def _channels_last(v):
    return v.clone(memory_format=torch.channels_last), None


def _transposed(v):
    return v.t().contiguous().t(), None


def _permuted(v):
    return v.permute(1, 2, 0).contiguous().permute(2, 0, 1), None


def _sliced(v):
    base = torch.zeros(v.shape[0], v.shape[1] * 3, dtype=v.dtype)
    base[:, 1::3] = v
    return base[:, 1::3], base


def _sliced_channels_last(v):
    base = torch.zeros(v.shape[0], v.shape[1] * 2, *v.shape[2:], dtype=v.dtype).to(memory_format=torch.channels_last)
    base[:, ::2] = v
    return base[:, ::2], base


KINDS = [
    ("contiguous", (3, 5), _plain),
    ("channels_last", (2, 3, 4, 5), _channels_last),
    ("channels_last_big", (4, 32, 17, 17), _channels_last),  # split between threads
    ("transposed", (5, 7), _transposed),
    ("permuted", (3, 4, 5), _permuted),
    ("sliced", (6, 4), _sliced),
    ("sliced_channels_last", (2, 3, 4, 5), _sliced_channels_last),
    ("zero_dim", (), _plain),
    ("tail", (33,), _plain),
]


def _grad_of(kind, values):
    """A gradient of `values`' logical shape in one of four layouts; 'expanded' repeats values[0] along
    the first dimension (stride 0), so the values of the result are what it holds, not `values`."""
    if values.dim() == 0:
        return values.clone()
    if kind == 0:
        return values.clone()
    if kind == 1:  # every dimension reversed
        rev = list(reversed(range(values.dim())))
        return values.permute(rev).contiguous().permute(rev)
    if kind == 2:
        return values[:1].expand(values.shape)
    return values.clone(memory_format=torch.channels_last) if values.dim() == 4 else values.t().contiguous().t() \
        if values.dim() == 2 else values.clone()


def _for_torch(p, g):
    """The gradient torch steps with: g's values in the parameter's layout. optim.torch steps every
    gradient so (a copy in the parameter's storage order when its strides differ); torch 1.13's own
    elementwise loops round some multiply-adds apart when the gradient's layout differs from the state's
    (a transposed parameter with an expanded gradient: its add_(g, alpha=a) then differs by an ulp from the
    same values in the parameter's layout), docs/FIDELITY.md. A copy also because torch's foreach NAdam
    adds weight decay into its gradients."""
    return torch.empty_like(p, memory_format=torch.preserve_format).copy_(g)


class Side:
    """One optimizer's parameters: per group, one tensor of every kind (the big one in the first and last
    group only), from one generator's values; kinds[k] and groups_of[k] name parameter k."""

    def __init__(self, groups, dtype, seed):
        gen = torch.Generator().manual_seed(seed)
        self.params, self.bases, self.group_dicts, self.kinds, self.groups_of = [], [], [], [], []
        for gi, opts in enumerate(groups):
            ps = []
            for kind, shape, make in KINDS:
                if kind == "channels_last_big" and gi not in (0, len(groups) - 1):
                    continue
                p, base = make(torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype))
                p.requires_grad_()
                ps.append(p)
                self.params.append(p)
                self.bases.append(base)
                self.kinds.append(kind)
                self.groups_of.append(gi)
            self.group_dicts.append(dict(opts, params=ps))


def _same_bits(what, ours, theirs):
    d = _differ(what, ours, theirs)
    assert d is None, d


def _check_state(where, st_o, st_t):
    assert set(st_o) == set(st_t), "%s: state keys %s, torch's %s" % (where, sorted(st_o), sorted(st_t))
    for key, b in st_t.items():
        a = st_o[key]
        if key in ("step", "mu_product"):
            assert float(a) == float(b), "%s, state[%r]: %r vs torch's %r" % (where, key, a, b)
            continue
        _same_bits("%s, state[%r]" % (where, key), a, b)
        # Rprop's step_size: torch makes it with grad.new().resize_as_(grad) (contiguous whatever p's
        # layout), optim.torch in p's layout, as every other slot (the kernel steps every slot in p's
        # storage order): a documented difference (docs/TORCH.md); its values are compared above.
        if b is not None and not (key == "step_size" and where.startswith("Rprop")):
            assert a.stride() == b.stride(), "%s, state[%r]: strides %s, torch's %s" % (
                where, key, a.stride(), b.stride())


def _run_against_torch(rule, seed, dtype, steps=STEPS):
    groups, torch_cls, extra = _groups(rule)
    ours_side, torch_side = Side(groups, dtype, seed), Side(groups, dtype, seed)
    ours = getattr(ot, rule)(ours_side.group_dicts)
    theirs = torch_cls(torch_side.group_dicts, **extra)
    gen = torch.Generator().manual_seed(seed + 1)
    where = "%s seed %d %s" % (rule, seed, str(dtype).replace("torch.", ""))
    for t in range(1, steps + 1):
        if t == steps // 2:  # as torch allows: the data replaced by a tensor of another layout
            for side in (ours_side, torch_side):
                for p, kind in zip(side.params, side.kinds):
                    if kind == "transposed":
                        p.data = p.data.contiguous()
                    elif kind == "contiguous":
                        p.data = p.data.t().contiguous().t()
        for k, (po, pt) in enumerate(zip(ours_side.params, torch_side.params)):
            values = torch.randn(po.shape, generator=gen, dtype=torch.float64).to(dtype)
            g = _grad_of((t + k) % 4, values)
            if t == 1:  # the first in the parameter's layout: SGD's buffer takes it (tested below)
                g = _for_torch(po, g)
            po.grad = g
            pt.grad = _for_torch(pt, g)
        ours.step()
        theirs.step()
        for k, (po, pt) in enumerate(zip(ours_side.params, torch_side.params)):
            name = "%s: step %d, group %d, %s" % (where, t, ours_side.groups_of[k], ours_side.kinds[k])
            if not torch.equal(_int_view(po), _int_view(pt)):
                _same_bits(name, po, pt)
            bo, bt = ours_side.bases[k], torch_side.bases[k]
            if bo is not None:  # the gaps of a sliced parameter are never written
                assert torch.equal(_int_view(bo), _int_view(bt)), "%s: the tensor it slices" % name
            if t in STATE_AT or t == steps:
                _check_state(name, ours.state[po], theirs.state[pt])
    return ours, theirs, ours_side, torch_side


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("rule", RULES)
def test_every_layout_gives_torchs_bits(rule, dtype, seed):
    # float64: half the steps (the binding's paths are the dtype's; test_torch_bits runs float64 300 steps)
    _run_against_torch(rule, seed, dtype, STEPS if dtype is torch.float32 else STEPS // 2)


def _one(kind, seed, dtype=torch.float32):
    name, shape, make = next(k for k in KINDS if k[0] == kind)
    gen = torch.Generator().manual_seed(seed)
    return make(torch.randn(shape, generator=gen).to(dtype))[0].requires_grad_()


@pytest.mark.parametrize("rule", RULES[:-1])  # AdaBound: not in torch (its reference is in test_torch_bits)
def test_layout_changed_before_the_first_step(rule, seed):
    """torch makes the state at the first step, in the layout the parameter has then."""
    groups, torch_cls, extra = _groups(rule)
    opts = {k: v for k, v in groups[-1].items()}
    po, pt = _one("contiguous", seed), _one("contiguous", seed)
    ours, theirs = getattr(ot, rule)([po], **opts), torch_cls([pt], **dict(opts, **extra))
    for p in (po, pt):
        p.data = p.data.t().contiguous().t()
    gen = torch.Generator().manual_seed(seed)
    for t in range(1, 21):
        g = torch.randn(po.shape, generator=gen)
        po.grad, pt.grad = g, g.clone()
        ours.step()
        theirs.step()
        _same_bits("%s step %d" % (rule, t), po, pt)
    _check_state(rule, ours.state[po], theirs.state[pt])


def _cnn_like(seed):
    return [_one("channels_last", seed), _one("transposed", seed + 1), _one("sliced", seed + 2),
            _one("sliced_channels_last", seed + 3), _one("zero_dim", seed + 4)]


def _steps(opts_params, steps, seed, start=0):
    """Step each (optimizer, params) with the same gradients (seeded by step), in mixed layouts (torch's
    optimizers get them in the parameter's layout: _for_torch)."""
    for t in range(start, start + steps):
        for opt, params in opts_params:
            gen = torch.Generator().manual_seed(seed * 1000 + t)
            for k, p in enumerate(params):
                g = _grad_of((t + k) % 4, torch.randn(p.shape, generator=gen))
                p.grad = g if t and type(opt).__module__.startswith("optim.") else _for_torch(p, g)
            opt.step()


@pytest.mark.parametrize("rule", ["SGD", "Adam", "Adagrad", "RMSprop", "Adadelta", "AdamW", "RAdam", "NAdam"])
@pytest.mark.parametrize("direction", ["torch_to_optim", "optim_to_torch"])
def test_state_dict_moves_between_torch_and_optim(rule, direction, seed):
    """Mid-training, the state_dict of one library loads into the other with the same layouts; both then
    continue with torch's bits, and the state has torch's strides."""
    groups, torch_cls, extra = _groups(rule)
    opts = dict(groups[-1], **extra) if "foreach" in extra else dict(groups[-1])
    ours_cls = getattr(ot, rule)
    src_cls, dst_cls = (torch_cls, ours_cls) if direction == "torch_to_optim" else (ours_cls, torch_cls)
    src_params, dst_params, ref_params = _cnn_like(seed), _cnn_like(seed), _cnn_like(seed)
    src = src_cls(src_params, **(opts if src_cls is torch_cls else groups[-1]))
    ref = torch_cls(ref_params, **opts)  # torch throughout: the run both must follow
    _steps([(src, src_params), (ref, ref_params)], 30, seed)
    for a, b in zip(dst_params, src_params):
        a.data.copy_(b.data)
    dst = dst_cls(dst_params, **(opts if dst_cls is torch_cls else groups[-1]))
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst.load_state_dict(torch.load(buf))
    _steps([(dst, dst_params), (ref, ref_params)], 30, seed, start=30)
    for k, (a, b) in enumerate(zip(dst_params, ref_params)):
        what = "%s %s param %d" % (rule, direction, k)
        if rule == "NAdam" and dst_cls is torch_cls:
            # optim's mu_product is float64 and the correct product (docs/TORCH.md); torch 1.13's foreach
            # NAdam keeps its own differently: after a load into torch, the same numbers, not the same bits.
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), what
            for key, x in dst.state[a].items():
                assert x.stride() == ref.state[b][key].stride(), (what, key)
            continue
        _same_bits(what, a, b)
        _check_state(what, dst.state[a], ref.state[b])


@pytest.mark.parametrize("wd", [0, 0.1])
@pytest.mark.parametrize("maximize", [False, True])
def test_sgd_momentum_buffer_takes_the_layout_of_the_first_gradient(wd, maximize, seed):
    """torch's SGD makes its buffer as torch.clone(d_p): the layout of the first step's d_p (the gradient's,
    through -g and g + weight_decay * p), whatever the parameter's."""
    for kind in range(4):
        po, pt = _cnn_like(seed), _cnn_like(seed)
        ours = ot.SGD(po, lr=0.1, momentum=0.9, weight_decay=wd, maximize=maximize)
        theirs = torch.optim.SGD(pt, lr=0.1, momentum=0.9, weight_decay=wd, maximize=maximize)
        gen = torch.Generator().manual_seed(seed)
        for a, b in zip(po, pt):
            g = _grad_of(kind, torch.randn(a.shape, generator=gen))
            a.grad, b.grad = g, g
        ours.step()
        theirs.step()
        for k, (a, b) in enumerate(zip(po, pt)):
            x, y = ours.state[a]["momentum_buffer"], theirs.state[b]["momentum_buffer"]
            assert x.stride() == y.stride(), "gradient kind %d, param %d: strides %s, torch's %s" % (
                kind, k, x.stride(), y.stride())
            _same_bits("gradient kind %d, param %d: momentum_buffer" % (kind, k), x, y)
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_loaded_state_keeps_its_strides(seed):
    """torch's load_state_dict keeps the state tensors it is given, with their strides: a state_dict whose
    SGD buffer is contiguous (made from a contiguous first gradient) for a channels_last parameter loads so
    into optim.torch too, and both continue with the same bits (the parameter through a working copy)."""
    pt, po, pr = _one("channels_last", seed), _one("channels_last", seed), _one("channels_last", seed)
    src = torch.optim.SGD([pt], lr=0.1, momentum=0.9)
    ref = torch.optim.SGD([pr], lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(pt.shape, generator=gen) for _ in range(12)]
    for t in range(4):
        pt.grad, pr.grad = grads[t].clone(), grads[t].clone()  # contiguous: the buffer is made contiguous
        src.step()
        ref.step()
    assert src.state[pt]["momentum_buffer"].is_contiguous()
    po.data.copy_(pt.data)
    ours = ot.SGD([po], lr=0.1, momentum=0.9)
    ours.load_state_dict(src.state_dict())
    for t in range(4, 12):
        po.grad = _for_torch(po, grads[t])
        pr.grad = _for_torch(pr, grads[t])
        ours.step()
        ref.step()
        _same_bits("step %d" % t, po, pr)
    _check_state("loaded", ours.state[po], ref.state[pr])


def test_checkpoint_round_trip_with_layouts(tmp_path, seed):
    """save_checkpoint / load_checkpoint with non-contiguous parameters: the resumed run has the bits of
    the uninterrupted one."""
    path = str(tmp_path / "run.ckpt")
    pa, pb = _cnn_like(seed), _cnn_like(seed)
    a = ot.Adam(pa, lr=1e-2, amsgrad=True)
    _steps([(a, pa)], 20, seed)
    a.save_checkpoint(path)
    for x, y in zip(pb, pa):
        x.data.copy_(y.data)
    b = ot.Adam(pb, lr=1e-2, amsgrad=True)
    b.load_checkpoint(path)
    _steps([(a, pa), (b, pb)], 20, seed, start=20)
    for k, (x, y) in enumerate(zip(pb, pa)):
        _same_bits("param %d" % k, x, y)
        _check_state("param %d" % k, b.state[x], a.state[y])


def _contiguous_twin(params):
    return [p.detach().contiguous().requires_grad_() for p in params]


@pytest.mark.parametrize("make", [
    lambda ps: ot.Lion(ps, lr=1e-3, weight_decay=0.1),
    lambda ps: ot.SAM(ps, ot.Adam, rho=0.05, lr=1e-2),
], ids=["Lion", "SAM"])
def test_every_layout_gives_the_contiguous_bits(make, seed):
    """Classes without a torch counterpart: each layout gives the bits of the same run on contiguous
    tensors (SAM's first and second steps write the parameters through the same paths)."""
    pa = _cnn_like(seed)
    pb = _contiguous_twin(pa)
    a, b = make(pa), make(pb)
    for t in range(40):
        gen = torch.Generator().manual_seed(seed + t)
        values = [torch.randn(p.shape, generator=gen) for p in pa]
        for k, (x, y, v) in enumerate(zip(pa, pb, values)):
            x.grad, y.grad = _grad_of((t + k) % 4, v), _grad_of(0, _grad_of((t + k) % 4, v))
        if isinstance(a, ot.SAM):
            a.first_step()
            b.first_step()
            for k, (x, y) in enumerate(zip(pa, pb)):
                _same_bits("SAM first_step %d param %d" % (t, k), x, y)
            a.second_step()
            b.second_step()
        else:
            a.step()
            b.step()
        for k, (x, y) in enumerate(zip(pa, pb)):
            _same_bits("step %d param %d" % (t, k), x, y)
    opt_a = a.base_optimizer if isinstance(a, ot.SAM) else a
    for x in pa:
        for key, v in opt_a.state[x].items():
            if torch.is_tensor(v) and v.dim():
                assert v.stride() == torch.zeros_like(x, memory_format=torch.preserve_format).stride(), key


def test_sam_restore_writes_w_back_through_the_working_copy():
    p = _one("sliced", 3)
    w = p.detach().clone()
    sam = ot.SAM([p], ot.SGD, rho=0.5, lr=0.1)
    p.grad = torch.ones(p.shape)
    sam.first_step()
    assert not torch.equal(p.detach(), w)
    sam.restore()
    assert torch.equal(p.detach(), w)


def test_param_groups_edited_by_hand_keep_the_state_layout(seed):
    pa, pb = _cnn_like(seed), _cnn_like(seed)
    a = ot.Adam(pa[:2], lr=1e-2)
    b = torch.optim.Adam(pb[:2], lr=1e-2)
    _steps([(a, pa[:2]), (b, pb[:2])], 5, seed)
    a.param_groups[0]["params"].extend(pa[2:])  # progressive unfreezing: appended by hand
    b.param_groups[0]["params"].extend(pb[2:])
    _steps([(a, pa), (b, pb)], 10, seed, start=5)
    for k, (x, y) in enumerate(zip(pa, pb)):
        _same_bits("param %d" % k, x, y)
        _check_state("param %d" % k, a.state[x], b.state[y])


def test_clipping_gradients_of_any_layout(seed):
    """optim.torch.clip_grad_norm_ / clip_grad_value_ on gradients in other layouts (read in place in storage
    order, or through a copy written back for a slice with a step) give what they give on contiguous copies
    of the same gradients: the clamp bit for bit, the norm as torch's to rounding (the sum runs in storage
    order)."""
    gen = torch.Generator().manual_seed(seed)
    params = _cnn_like(seed)
    twins = _contiguous_twin(params)
    bases = []
    for k, (p, q) in enumerate(zip(params, twins)):
        values = 3 * torch.randn(p.shape, generator=gen)
        if k == 2:  # a gradient with gaps
            base = torch.zeros(p.shape[0], 2 * p.shape[1]) if p.dim() == 2 else torch.zeros(0)
            base[:, ::2] = values
            p.grad = base[:, ::2]
            bases.append(base)
        else:
            p.grad = _grad_of(1 if k % 2 else 3, values)
        q.grad = p.grad.contiguous()
    ot.clip_grad_value_(params, 1.5)
    ot.clip_grad_value_(twins, 1.5)
    for k, (p, q) in enumerate(zip(params, twins)):
        _same_bits("clip_grad_value_ param %d" % k, p.grad, q.grad)
    assert torch.equal(bases[0][:, 1::2], torch.zeros_like(bases[0][:, 1::2]))  # the gaps untouched
    ref = [x.detach().clone().requires_grad_() for x in twins]
    for r, q in zip(ref, twins):
        r.grad = q.grad.clone()
    n_ours = ot.clip_grad_norm_(params, 2.0)
    n_torch = torch.nn.utils.clip_grad_norm_(ref, 2.0)
    assert abs(float(n_ours) - float(n_torch)) <= 1e-5 * float(n_torch)
    for k, (p, r) in enumerate(zip(params, ref)):
        assert torch.allclose(p.grad, r.grad, rtol=1e-5, atol=1e-7), k
    with pytest.raises(ValueError, match="parameter 0 .*overlaps itself"):
        params[0].grad = torch.ones(1, *params[0].shape[1:]).expand(params[0].shape)
        ot.clip_grad_value_(params, 1.0)


def test_what_is_refused_and_what_is_not():
    with pytest.raises(ValueError, match=r"strides \(0, 1\), overlaps itself"):
        ot.Adam([torch.zeros(1, 6).expand(4, 6).requires_grad_()])
    with pytest.raises(ValueError, match="overlaps itself"):
        ot.Adam([torch.zeros(10).as_strided((4, 3), (2, 1)).requires_grad_()])
    base = torch.zeros(6, 8)
    with pytest.raises(ValueError, match="shares memory with"):
        ot.Adam([base[:, ::2].requires_grad_(), base[:, 2::4].requires_grad_()])
    # Interleaved slices of one tensor share no element: two parameters.
    base = torch.zeros(6, 8)
    even, odd = base[:, ::2].requires_grad_(), base[:, 1::2].requires_grad_()
    opt = ot.SGD([even, odd], lr=1.0)
    even.grad, odd.grad = torch.ones(6, 4), torch.full((6, 4), 2.0)
    opt.step()
    assert torch.equal(base[:, ::2], torch.full((6, 4), -1.0)) and torch.equal(base[:, 1::2], torch.full((6, 4), -2.0))
    # A parameter whose data becomes expanded between steps: refused at the step, nothing changed.
    p = torch.zeros(4, 3, requires_grad=True)
    opt = ot.Adam([p])
    p.data = torch.zeros(1, 3).expand(4, 3)
    p.grad = torch.ones(4, 3)
    with pytest.raises(ValueError, match="parameter 0 .*overlaps itself"):
        opt.step()
    assert len(opt.state[p]) == 0
