"""Sparse gradients (nn.Embedding(sparse=True)) against torch 1.13 itself:
optim.torch's SGD, Adagrad and SparseAdam step them as torch.optim does.

Bits (float32 and float64, every step, parameters and state): SparseAdam and
Adagrad (torch coalesces their gradients: so does the binding, with torch's own
coalesce), SGD without momentum (torch adds an uncoalesced gradient entry by
entry: liboptim applies repeated rows in the same order). torch's ops here are
deterministic on one thread (the dense += sparse kernel walks the entries in
order). SGD with momentum: torch keeps a sparse momentum buffer, liboptim a
dense one (the step densifies the gradient): the same values within rounding.
"""
import copy

import pytest
import torch

import optim.torch as ot

STEPS = 200
ROWS, DIM = 60, 5


def _bits(a, b):
    if a.dtype is torch.float64:
        return torch.equal(a.contiguous().view(torch.int64), b.contiguous().view(torch.int64))
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def _grad(gen, t, dtype, rows=ROWS, dim=DIM, nnz_max=20, empty_ok=True):
    """An uncoalesced sparse gradient: random rows with repeats, among rows 2.. (rows 0 and 1 are
    never present but at step 0, row 1 then: touched once, then never); every 40th step empty."""
    if empty_ok and t % 40 == 39:
        return torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, dim, dtype=dtype),
                                       (rows, dim))
    k = int(torch.randint(1, nnz_max, (1,), generator=gen))
    idx = torch.randint(2, rows, (k,), generator=gen)
    if t == 0:
        idx[0] = 1
    vals = torch.randn(k, dim, generator=gen, dtype=torch.float64).to(dtype)
    return torch.sparse_coo_tensor(idx[None], vals, (rows, dim))


CASES = [
    ("SparseAdam", dict(lr=0.01)),
    ("SparseAdam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-8, maximize=True)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name,kw", CASES, ids=lambda x: x if isinstance(x, str) else ",".join(sorted(x)))
def test_sparse_steps_are_torch_bits(name, kw, dtype, seed):
    """Every step, a parameter stepped with uncoalesced sparse gradients (repeats, rows touched once
    then never, empty gradients) gives torch's bits, and so does its state; rows never present keep
    their values. SparseAdam: torch 1.13 fails on an empty gradient of a 2-D parameter (a shape
    error in its sparse_mask), so its run has none (test_empty_gradients)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(ROWS, DIM, generator=gen, dtype=torch.float64).to(dtype)
    pt = torch.nn.Parameter(w.clone())
    po = torch.nn.Parameter(w.clone())
    tt = getattr(torch.optim, name)([pt], **kw)
    oo = getattr(ot, name)([po], **kw)
    for t in range(STEPS):
        g = _grad(gen, t, dtype, empty_ok=name == "SGD")
        pt.grad = g.clone()
        po.grad = g.clone()
        tt.step()
        oo.step()
        assert _bits(pt.detach(), po.detach()), "%s %s step %d: largest difference %.3g" % (
            name, kw, t, float((pt - po).abs().max()))
        for key, v in tt.state[pt].items():
            mine = oo.state[po][key]
            if torch.is_tensor(v) and v.dim() > 0:
                assert _bits(v, mine), (key, t)
            elif key == "step":
                assert float(v) == float(mine), (key, t)
    assert torch.equal(po.detach()[0], w[0])  # never present


def test_sgd_momentum_sparse_matches_torch_values(seed):
    """SGD with momentum and sparse gradients: torch keeps a sparse buffer, optim.torch a dense one
    (the step densifies the gradient): the same values to rounding, also after a state_dict from
    torch (its sparse buffer) is loaded."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(ROWS, DIM, generator=gen)
    pt, po = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    kw = dict(lr=0.05, momentum=0.9, dampening=0.1)
    tt, oo = torch.optim.SGD([pt], **kw), ot.SGD([po], **kw)
    for t in range(100):
        g = _grad(gen, t, torch.float32, empty_ok=False)
        pt.grad, po.grad = g.clone(), g.clone()
        tt.step()
        oo.step()
    assert torch.allclose(pt.detach(), po.detach(), rtol=1e-5, atol=1e-5)
    buf = tt.state[pt]["momentum_buffer"]
    assert buf.is_sparse  # torch's
    assert torch.allclose(buf.to_dense(), oo.state[po]["momentum_buffer"], rtol=1e-5, atol=1e-5)
    q = torch.nn.Parameter(pt.detach().clone())
    resumed = ot.SGD([q], **kw)
    resumed.load_state_dict(tt.state_dict())  # torch's sparse buffer, densified
    for t in range(100, 130):
        g = _grad(gen, t, torch.float32, empty_ok=False)
        pt.grad, q.grad = g.clone(), g.clone()
        tt.step()
        resumed.step()
    assert torch.allclose(pt.detach(), q.detach(), rtol=1e-5, atol=1e-5)


def test_sparse_weight_decay_refused_as_torch():
    """weight_decay with a sparse gradient: torch raises RuntimeError (SGD: add(sparse, dense); Adagrad:
    "weight_decay option is not compatible with sparse gradients"); so does optim.torch, before changing
    anything."""
    for name in ("SGD", "Adagrad"):
        g = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), torch.ones(2, DIM), (ROWS, DIM))
        pt = torch.nn.Parameter(torch.ones(ROWS, DIM))
        po = torch.nn.Parameter(torch.ones(ROWS, DIM))
        tt = getattr(torch.optim, name)([pt], lr=0.1, weight_decay=0.01)
        oo = getattr(ot, name)([po], lr=0.1, weight_decay=0.01)
        pt.grad, po.grad = g.clone(), g.clone()
        with pytest.raises(RuntimeError) as et:
            tt.step()
        with pytest.raises(RuntimeError) as eo:
            oo.step()
        assert str(et.value).split(".")[0] in str(eo.value)
        assert torch.equal(po.detach(), torch.ones(ROWS, DIM))


def test_sparse_refusals_as_torch():
    """Dense gradients on SparseAdam, sparse ones on Adam, sparse parameters and bad hyperparameters
    for SparseAdam: torch's exception types and messages."""
    p = torch.nn.Parameter(torch.ones(ROWS, DIM))
    opt = ot.SparseAdam([p])
    p.grad = torch.ones(ROWS, DIM)
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients, please consider Adam"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(ROWS, DIM)) and len(opt.state[p]) == 0
    q = torch.nn.Parameter(torch.ones(ROWS, DIM))
    adam = ot.Adam([q])
    q.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, DIM), (ROWS, DIM))
    with pytest.raises(RuntimeError, match="does not support sparse gradients, please consider SparseAdam"):
        adam.step()
    for kw, msg in [(dict(lr=0), "Invalid learning rate: 0"), (dict(eps=0.0), "Invalid epsilon value: 0.0"),
                    (dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
                    (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1")]:
        with pytest.raises(ValueError, match=msg):
            torch.optim.SparseAdam([p], **kw)
        with pytest.raises(ValueError, match=msg):
            ot.SparseAdam([p], **kw)
    sp = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1), (4,))
    with pytest.raises(ValueError, match=r"Sparse params at indices \[0\]: SparseAdam requires dense"):
        ot.SparseAdam([sp])
    with pytest.raises(ValueError, match=r"Sparse params at indices \[\[0, 1\]\]"):
        ot.SparseAdam([{"params": [p, sp]}])


def test_empty_gradients():
    """An empty sparse gradient (nnz = 0) counts a step and changes no value: as torch's SGD; torch
    1.13's Adagrad and SparseAdam raise a shape error there on a 2-D parameter (after counting the
    step), optim.torch steps it (docs/TORCH.md)."""
    for name in ("SGD", "Adagrad", "SparseAdam"):
        w = torch.randn(ROWS, DIM)
        po = torch.nn.Parameter(w.clone())
        oo = getattr(ot, name)([po], lr=0.1)
        po.grad = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, DIM), (ROWS, DIM))
        oo.step()
        assert torch.equal(po.detach(), w)
        if name != "SGD":
            assert int(oo.state[po]["step"]) == 1
    for cls in (torch.optim.Adagrad, torch.optim.SparseAdam):
        pt = torch.nn.Parameter(torch.randn(ROWS, DIM))
        pt.grad = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, DIM), (ROWS, DIM))
        with pytest.raises(RuntimeError, match="must match the size"):
            cls([pt]).step()


def test_embedding_model_mixed_dense_and_sparse(seed):
    """An nn.Embedding(sparse=True) and a dense linear layer in one optimizer (SGD and Adagrad: both
    kinds in one step), trained by real backward passes: torch's bits; SparseAdam for the embedding
    beside Adam for the rest, as its documentation recommends."""
    torch.manual_seed(seed)

    def model():
        torch.manual_seed(seed)
        return torch.nn.ModuleDict({"emb": torch.nn.Embedding(50, 8, sparse=True), "lin": torch.nn.Linear(8, 3)})

    def loss(m, t):
        g = torch.Generator().manual_seed(seed + t)
        idx = torch.randint(0, 40, (16,), generator=g)  # repeats; rows 40..49 never present
        y = torch.randint(0, 3, (16,), generator=g)
        return torch.nn.functional.cross_entropy(m["lin"](m["emb"](idx)), y)

    for name, kw in [("SGD", dict(lr=0.1)), ("Adagrad", dict(lr=0.1))]:
        mt, mo = model(), model()
        tt = getattr(torch.optim, name)(mt.parameters(), **kw)
        oo = getattr(ot, name)(mo.parameters(), **kw)
        for t in range(60):
            for m, o in ((mt, tt), (mo, oo)):
                o.zero_grad()
                loss(m, t).backward()
                o.step()
            for a, b in zip(mt.parameters(), mo.parameters()):
                assert _bits(a.detach(), b.detach()), (name, t)
    mt, mo = model(), model()
    tt = [torch.optim.SparseAdam([mt["emb"].weight], lr=0.01), torch.optim.Adam(mt["lin"].parameters(), lr=0.01)]
    oo = [ot.SparseAdam([mo["emb"].weight], lr=0.01), ot.Adam(mo["lin"].parameters(), lr=0.01)]
    for t in range(60):
        for m, opts in ((mt, tt), (mo, oo)):
            for o in opts:
                o.zero_grad()
            loss(m, t).backward()
            for o in opts:
                o.step()
        assert _bits(mt["emb"].weight.detach(), mo["emb"].weight.detach()), t
    assert torch.equal(mo["emb"].weight.detach()[45], model()["emb"].weight.detach()[45])


@pytest.mark.parametrize("direction", ["torch_to_optim", "optim_to_torch"])
def test_sparse_adam_state_dict_round_trip(direction, seed):
    """A SparseAdam run moves between torch.optim and optim.torch mid-training through state_dict():
    the rest of the run gives the straight torch run's bits."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(ROWS, DIM, generator=gen)
    grads = [_grad(gen, t, torch.float32, empty_ok=False) for t in range(80)]
    ps = torch.nn.Parameter(w.clone())
    straight = torch.optim.SparseAdam([ps], lr=0.01)
    for g in grads:
        ps.grad = g.clone()
        straight.step()
    first_cls, second_cls = ((torch.optim.SparseAdam, ot.SparseAdam) if direction == "torch_to_optim"
                             else (ot.SparseAdam, torch.optim.SparseAdam))
    p1 = torch.nn.Parameter(w.clone())
    o1 = first_cls([p1], lr=0.01)
    for g in grads[:40]:
        p1.grad = g.clone()
        o1.step()
    sd = copy.deepcopy(o1.state_dict())
    p2 = torch.nn.Parameter(p1.detach().clone())
    o2 = second_cls([p2], lr=0.01)
    o2.load_state_dict(sd)
    for g in grads[40:]:
        p2.grad = g.clone()
        o2.step()
    assert _bits(ps.detach(), p2.detach())
    for key in ("exp_avg", "exp_avg_sq"):
        assert _bits(straight.state[ps][key], o2.state[p2][key]), key
    assert int(o2.state[p2]["step"]) == 80


def test_sparse_steps_refuse_what_they_cannot_step():
    """Sparse steps need row-major float32/float64 state: a bfloat16 embedding, master weights or a
    transposed parameter are refused with a ValueError naming them, nothing changed."""
    p = torch.nn.Parameter(torch.ones(ROWS, DIM, dtype=torch.bfloat16))
    opt = ot.SparseAdam([p])
    p.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, DIM, dtype=torch.bfloat16), (ROWS, DIM))
    with pytest.raises(ValueError, match="bfloat16.*sparse gradients are stepped for float32 or float64"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(ROWS, DIM, dtype=torch.bfloat16))
    q = torch.nn.Parameter(torch.ones(DIM, ROWS).t())  # a transposed parameter: rows are not contiguous
    opt = ot.Adagrad([q], lr=0.1)
    q.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, DIM), (ROWS, DIM))
    with pytest.raises(ValueError, match="row-major"):
        opt.step()
    assert torch.equal(q.detach(), torch.ones(ROWS, DIM))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_sgd_uncoalesced_more_entries_than_rows(dtype, seed):
    """SGD takes an uncoalesced gradient entry by entry: one with more entries than the parameter has
    rows (repeats), hybrid (dense rows of two dims), gives torch's bits."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 2, 4, generator=gen, dtype=torch.float64).to(dtype)
    pt, po = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    tt, oo = torch.optim.SGD([pt], lr=0.1), ot.SGD([po], lr=0.1)
    for t in range(5):
        idx = torch.randint(0, 3, (11,), generator=gen)
        idx[-1] = 2  # the last row
        g = torch.sparse_coo_tensor(idx[None], torch.randn(11, 2, 4, generator=gen, dtype=torch.float64).to(dtype),
                                    (3, 2, 4))
        pt.grad, po.grad = g.clone(), g.clone()
        tt.step()
        oo.step()
        assert _bits(pt.detach(), po.detach()), t
