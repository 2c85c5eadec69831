"""optim.torch.LBFGS's memory under attack (rev11a): parameters and gradients changed between liboptim calls.

The closure runs between C calls, and the user may edit parameters between steps: .data replaced by a tensor of
another size or dtype, a gradient of another dtype, state loaded from another model. Every address LBFGS hands to
liboptim must then be refused with an error naming what changed, never read or written past its storage (run under
ASan by scripts/sanitize_python.sh). Where torch.optim.LBFGS itself fails (a size mismatch), ours fails too, with
the same error type; where torch copes (frozen parameters, 0-element, channels_last), ours gives torch's results.
"""
import pytest
import torch

import optim.torch as ot


def _quad(params):
    def f():
        return sum(((p.double() - 0.5) ** 2).sum() * (i + 1) for i, p in enumerate(params)).to(params[0].dtype)
    return f


def _closure(opt, f):
    def c():
        opt.zero_grad()
        v = f()
        v.backward()
        return v
    return c


@pytest.mark.parametrize("cls", [torch.optim.LBFGS, ot.LBFGS])
@pytest.mark.parametrize("new_size", [3, 40])
def test_data_replaced_by_another_size_between_steps(cls, new_size):
    # the history (prev_flat_grad, d, old_dirs) holds 8 elements, the parameters now new_size
    p = torch.nn.Parameter(torch.linspace(-1, 1, 8))
    opt = cls([p], max_iter=3)
    f = lambda: ((p - 0.3) ** 4).sum()
    opt.step(_closure(opt, f))
    p.data = torch.randn(new_size)
    p.grad = None
    # torch: a size mismatch in its arithmetic; ours names the state vector
    with pytest.raises(RuntimeError, match=None if cls is torch.optim.LBFGS else
                       "state d holds 8 elements but the parameters %d" % new_size):
        opt.step(_closure(opt, f))


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("change", ["float32", "bigger", "smaller"])
def test_data_replaced_inside_the_closure(line_search, change):
    # the closure runs between the C calls of one step: the step's direction and the parameters' addresses
    # were taken before it
    p = torch.nn.Parameter(torch.linspace(-1, 1, 4096, dtype=torch.float64))
    opt = ot.LBFGS([p], max_iter=5, line_search_fn=line_search)
    calls = [0]

    def closure():
        calls[0] += 1
        if calls[0] == 2:
            if change == "float32":
                p.data = p.data.float()  # 4 bytes an element where the step writes 8
            elif change == "bigger":
                p.data = torch.zeros(8192, dtype=torch.float64)
            else:
                p.data = torch.zeros(16, dtype=torch.float64)
        # the gradient by hand (autograd refuses a .data of another shape)
        x = p.detach().double()
        p.grad = (4 * (x - 0.25) ** 3).to(p.dtype)
        return ((x - 0.25) ** 4).sum()

    err = TypeError if change == "float32" else RuntimeError
    with pytest.raises(err, match="parameter 0.*(changed during the step|when the step began)"):
        opt.step(closure)


def test_gradient_of_another_dtype_is_refused_by_name():
    # p float64 with a float32 gradient (p.data replaced after the gradient was made): the flat gradient
    # would be float32, read as float64 (twice its bytes)
    p = torch.nn.Parameter(torch.ones(1000))
    p.grad = torch.ones(1000)
    p.data = p.data.double()
    opt = ot.LBFGS([p])

    def closure():
        return (p.detach() ** 2).sum()  # keeps the float32 gradient

    with pytest.raises(TypeError, match="parameter 0.*gradient.*float32"):
        opt.step(closure)


def test_gradient_of_another_size_is_refused_by_name():
    p = torch.nn.Parameter(torch.ones(10))
    q = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(10)
    p.data = torch.ones(20)  # the gradient still holds 10 elements
    q.grad = torch.ones(4)
    opt = ot.LBFGS([p, q])
    with pytest.raises(RuntimeError, match="parameter 0.*20,.*gradient of 10 elements"):
        opt.step(lambda: (p.detach() ** 2).sum())


@pytest.mark.parametrize("key", ["d", "prev_flat_grad", "old_dirs", "old_stps"])
def test_state_of_another_model_is_refused(key):
    # a state_dict saved with 6 parameters' elements, loaded for 64: torch fails on the sizes, ours must not
    # read 64 elements of a 6-element tensor
    small = torch.nn.Parameter(torch.linspace(-1, 1, 6))
    o1 = ot.LBFGS([small], max_iter=4)
    f1 = lambda: ((small - 0.2) ** 4).sum()
    o1.step(_closure(o1, f1))
    sd = o1.state_dict()
    big = torch.nn.Parameter(torch.linspace(-1, 1, 64))
    o2 = ot.LBFGS([big], max_iter=4)
    o2.load_state_dict(sd)
    st = o2.state[big]
    for k in ("d", "prev_flat_grad", "old_dirs", "old_stps"):
        if k != key:  # only `key` is of the wrong size: the others are resized to 64
            if isinstance(st[k], list):
                st[k] = [torch.zeros(64) + 1e-3 * (j + 1) for j in range(len(st[k]))]
            else:
                st[k] = torch.full((64,), 0.01)
    with pytest.raises(RuntimeError, match=r"state %s(\[0\])? holds 6 elements but the parameters 64" % key):
        f2 = lambda: ((big - 0.2) ** 4).sum()
        o2.step(_closure(o2, f2))


def test_state_of_another_dtype_or_layout_is_refused():
    p = torch.nn.Parameter(torch.linspace(-1, 1, 32, dtype=torch.float64))
    opt = ot.LBFGS([p], max_iter=3)
    f = lambda: ((p - 0.2) ** 4).sum()
    opt.step(_closure(opt, f))
    st = opt.state[p]
    st["old_dirs"] = [y.float() for y in st["old_dirs"]]  # half the bytes the float64 recursion reads
    with pytest.raises(TypeError, match="float32"):
        opt.step(_closure(opt, f))
    opt2 = ot.LBFGS([p], max_iter=3)
    opt2.step(_closure(opt2, f))
    st = opt2.state[p]
    st["prev_flat_grad"] = torch.stack([st["prev_flat_grad"], st["prev_flat_grad"]], 1)[:, 0]  # stride 2
    opt2.step(_closure(opt2, f))  # a strided vector of the right size is used (as torch uses it)


def _pair(make, opts, steps, mid=None):
    """The parameters after `steps` steps of torch's LBFGS (on contiguous copies of the parameters: torch 1.13
    flattens gradients with view(-1), which fails on channels_last) and of ours."""
    out = []
    for cls in (torch.optim.LBFGS, ot.LBFGS):
        params, f = make()
        if cls is torch.optim.LBFGS:
            for p in params:
                p.data = p.data.contiguous()
        opt = cls(params, **opts)
        c = _closure(opt, f)
        for k in range(steps):
            if mid is not None:
                mid(k, params)
            opt.step(c)
        out.append(torch.cat([p.detach().reshape(-1).double() for p in params]))
    return out


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_frozen_and_unfrozen_mid_run_as_torch(line_search):
    def make():
        gen = torch.Generator().manual_seed(3)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in (5, 0, 7)]
        return params, _quad(params)

    def mid(k, params):
        params[2].requires_grad_(k % 3 != 1)  # frozen every third step: its gradient None, zeros in the vector
        if k % 3 == 1:
            params[2].grad = None

    a, b = _pair(make, dict(max_iter=4, history_size=2, line_search_fn=line_search), 6, mid)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_layouts_as_torch():
    # channels_last, transposed, 0-element and one large with many tiny parameters
    def make():
        gen = torch.Generator().manual_seed(5)
        cl = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64).to(memory_format=torch.channels_last)
        params = [torch.nn.Parameter(cl), torch.nn.Parameter(torch.randn(6, 3, generator=gen,
                                                                           dtype=torch.float64).t()),
                  torch.nn.Parameter(torch.zeros(0, 3, dtype=torch.float64)),
                  torch.nn.Parameter(torch.randn(20000, generator=gen, dtype=torch.float64))]
        params += [torch.nn.Parameter(torch.randn(1, generator=gen, dtype=torch.float64)) for _ in range(200)]
        return params, _quad(params)

    a, b = _pair(make, dict(max_iter=5, line_search_fn="strong_wolfe"), 2)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_expanded_parameter_fails_as_torch():
    for cls in (torch.optim.LBFGS, ot.LBFGS):
        p = torch.nn.Parameter(torch.ones(1, 3).expand(4, 3))
        opt = cls([p])
        with pytest.raises(RuntimeError):
            opt.step(_closure(opt, lambda: ((p - 2) ** 2).sum()))


def test_flat_refuses_vectors_that_do_not_fit():
    # the last guard before C: every operand of the vector operations is a contiguous CPU vector of the
    # parameters' dtype and total size (step() checks the state and gradients first, naming them)
    from optim.torch._lbfgs import _Flat
    flat = _Flat(torch.float64, [3, 2])
    good = torch.ones(5, dtype=torch.float64)
    assert float(flat.dot(good, good)) == 5.0
    bad = [torch.ones(4, dtype=torch.float64), torch.ones(6, dtype=torch.float64), torch.ones(5),
           torch.ones(10, dtype=torch.float64)[::2], torch.ones(5, dtype=torch.float64).to_sparse(), None]
    for b in bad:
        with pytest.raises(RuntimeError, match="not a contiguous CPU torch.float64 vector of 5 elements"):
            flat.dot(good, b)
        with pytest.raises(RuntimeError, match="5 elements"):
            flat.sub(good, b)
        with pytest.raises(RuntimeError, match="5 elements"):
            flat.direction(good, [b], [good], [1.0], 1.0)
