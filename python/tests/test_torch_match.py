"""Each optim.torch class against the same torch.optim class (float32), with
the same arguments, for every combination of the options both support, over
200 steps on tensors of sizes 1, 7, 1000 and 32771 with random gradients.

Every element of every parameter and of every state tensor is compared at
steps 1, 2, 3, 7, 50 and 200 with torch_ref64.rel_err <= 1e-5: the relative
error, robust near zero (each element's difference is divided by its own
magnitude plus the mean magnitude of that quantity; torch_ref64.rel_err says
why). 'step' must be equal and of torch's type. Weight decays are powers of
two, as everywhere the harness is used (torch_harness says why). These
comparisons check the binding's behaviour to a tolerance (state keys and
types, defaults, options); test_torch_bits.py compares the same updates bit
for bit.

Known differences of torch 1.13 that the comparisons avoid on purpose:
 - NAdam is compared with foreach=True: 1.13's default single-tensor path
   multiplies mu into the next product twice (fixed in torch 2.0); optim
   implements the correct formula, which 1.13's multi-tensor path computes.
 - RAdam is compared with foreach=False: 1.13's multi-tensor path drops eps
   from the denominator; optim follows the single-tensor path (and torch 2.x).
"""
import itertools

import pytest
import torch

import optim.torch as ot
from torch_harness import run_vs_torch


def _cases(**axes):
    names = sorted(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def _id(kw):
    return ",".join("%s=%s" % (k, v) for k, v in sorted(kw.items()))


def _params(cases):
    cases = list(cases)
    return pytest.mark.parametrize("kw", cases, ids=[_id(c) for c in cases])


SGD_CASES = [dict(c, **m) for c in _cases(lr=[0.05], weight_decay=[0, 2 ** -7], maximize=[False, True])
             for m in (dict(momentum=0, dampening=0, nesterov=False),
                       dict(momentum=0.9, dampening=0, nesterov=False),
                       dict(momentum=0.9, dampening=0.5, nesterov=False),
                       dict(momentum=0.9, dampening=0, nesterov=True))]


@_params(SGD_CASES)
def test_sgd(rng, seed, kw):
    run_vs_torch(rng, seed, ot.SGD, torch.optim.SGD, kw)


@_params(_cases(lr=[0.05], lr_decay=[0, 0.01], weight_decay=[0, 2 ** -7], initial_accumulator_value=[0, 0.1],
                maximize=[False, True]))
def test_adagrad(rng, seed, kw):
    run_vs_torch(rng, seed, ot.Adagrad, torch.optim.Adagrad, kw)


@_params(_cases(lr=[0.05], eps=[1e-3, 0.1], weight_decay=[0, 2 ** -7]))
def test_adagrad_eps(rng, seed, kw):
    """A non-default eps in the default (outside) placement: g / (sqrt(sum) + eps), as torch."""
    run_vs_torch(rng, seed, ot.Adagrad, torch.optim.Adagrad, kw)


@_params(_cases(lr=[0.01], momentum=[0, 0.9], centered=[False, True], weight_decay=[0, 2 ** -7],
                maximize=[False, True]) + [dict(lr=0.01, alpha=0.9, eps=1e-6)])
def test_rmsprop(rng, seed, kw):
    run_vs_torch(rng, seed, ot.RMSprop, torch.optim.RMSprop, kw)


@_params(_cases(lr=[1.0, 0.5], rho=[0.9, 0.5], weight_decay=[0, 2 ** -7], maximize=[False, True])
         + [dict(eps=1e-4)])
def test_adadelta(rng, seed, kw):
    run_vs_torch(rng, seed, ot.Adadelta, torch.optim.Adadelta, kw)


ADAM_CASES = list(_cases(lr=[1e-2], betas=[(0.9, 0.999), (0.8, 0.99)], weight_decay=[0, 0.125],
                         amsgrad=[False, True], maximize=[False, True])) + [dict(), dict(eps=1e-3)]


@_params(ADAM_CASES)
def test_adam(rng, seed, kw):
    run_vs_torch(rng, seed, ot.Adam, torch.optim.Adam, kw)


@_params(ADAM_CASES)
def test_adamw(rng, seed, kw):
    run_vs_torch(rng, seed, ot.AdamW, torch.optim.AdamW, kw)


@_params(list(_cases(lr=[1e-2], betas=[(0.9, 0.999), (0.8, 0.99)], weight_decay=[0, 0.125])) + [dict(eps=1e-3)])
def test_radam(rng, seed, kw):
    run_vs_torch(rng, seed, ot.RAdam, torch.optim.RAdam, kw, dict(kw, foreach=False))


@_params(list(_cases(lr=[1e-2], betas=[(0.9, 0.999), (0.8, 0.99)], weight_decay=[0, 0.125],
                     momentum_decay=[4e-3, 2e-2])) + [dict(), dict(eps=1e-3)])
def test_nadam(rng, seed, kw):
    run_vs_torch(rng, seed, ot.NAdam, torch.optim.NAdam, kw, dict(kw, foreach=True))


@pytest.mark.parametrize("foreach", [None, False, True])
def test_foreach_is_accepted_and_irrelevant(rng, seed, foreach):
    run_vs_torch(rng, seed, ot.Adam, torch.optim.Adam, dict(lr=1e-2, foreach=foreach), dict(lr=1e-2), steps=20)


def test_default_arguments_match_torch():
    """Same positional order, names and defaults as torch.optim (extras only
    as keyword-only arguments after them)."""
    import inspect
    pairs = [(ot.SGD, torch.optim.SGD), (ot.Adagrad, torch.optim.Adagrad), (ot.RMSprop, torch.optim.RMSprop),
             (ot.Adadelta, torch.optim.Adadelta), (ot.Adam, torch.optim.Adam), (ot.AdamW, torch.optim.AdamW),
             (ot.RAdam, torch.optim.RAdam), (ot.NAdam, torch.optim.NAdam)]
    for ours, theirs in pairs:
        so = inspect.signature(ours.__init__).parameters
        st = inspect.signature(theirs.__init__).parameters
        for name, prm in st.items():
            assert name in so, "%s lacks torch's argument %s" % (ours.__name__, name)
            assert so[name].default == prm.default or (so[name].default is prm.default), \
                "%s: default of %s is %r, torch's %r" % (ours.__name__, name, so[name].default, prm.default)
            assert so[name].kind == prm.kind, "%s: %s is %s, torch's %s" % (ours.__name__, name, so[name].kind,
                                                                           prm.kind)
        positional_o = [n for n, p in so.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
        positional_t = [n for n, p in st.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert positional_o == positional_t, "%s: positional %s, torch %s" % (ours.__name__, positional_o,
                                                                              positional_t)
        assert issubclass(ours, torch.optim.Optimizer)
        assert ours.__doc__ and "Args:" in ours.__doc__


def test_adabound_signature():
    import inspect
    so = inspect.signature(ot.AdaBound.__init__).parameters
    expected = dict(lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0,
                    amsbound=False)
    positional = [n for n, p in so.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == ["self", "params"] + list(expected)
    for name, value in expected.items():
        assert so[name].default == value


def test_comparison_detects_a_small_difference(rng, seed):
    """The harness is sharp enough: torch with lr 1e-3 higher (relative) must fail."""
    with pytest.raises(AssertionError, match="relative error"):
        run_vs_torch(rng, seed, ot.Adam, torch.optim.Adam, dict(lr=1e-2), dict(lr=1e-2 * (1 + 1e-3)), steps=50)


EPS0 = [(ot.Adam, {}), (ot.AdamW, {}), (ot.Adagrad, {}), (ot.RMSprop, dict(centered=True)), (ot.Adadelta, {}),
        (ot.NAdam, dict(foreach=True)), (ot.RAdam, dict(foreach=False)), (ot.Adamax, {})]


@pytest.mark.parametrize("cls,extra", EPS0, ids=[c.__name__ for c, _ in EPS0])
def test_eps_zero_as_torch(rng, seed, cls, extra):
    """eps = 0 is accepted as torch accepts it, and steps as torch does: over random gradients the
    comparison of every test here; where an element's gradient is exactly 0 from the first step (so its
    denominator is 0), NaN (or the same value) where torch has it."""
    ours = {k: v for k, v in extra.items() if k != "foreach"}
    kw = dict(lr=0.01 if cls is not ot.Adadelta else 1.0, eps=0.0)
    run_vs_torch(rng, seed, cls, getattr(torch.optim, cls.__name__), dict(kw, **ours), dict(kw, **extra), steps=50)
    p0 = torch.randn(64, generator=torch.Generator().manual_seed(seed))
    po, pt = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    oo, tt = cls([po], **dict(kw, **ours)), getattr(torch.optim, cls.__name__)([pt], **dict(kw, **extra))
    for step in range(8):  # RAdam divides from its sixth step on
        g = torch.randn(64, generator=torch.Generator().manual_seed(seed + step))
        g[::4] = 0.0  # denominators of 0 at every fourth element
        po.grad, pt.grad = g.clone(), g.clone()
        oo.step()
        tt.step()
        assert torch.equal(torch.isnan(po.detach()), torch.isnan(pt.detach())), (cls.__name__, step)
        torch.testing.assert_close(po.detach(), pt.detach(), equal_nan=True, rtol=1e-5, atol=1e-6)
    assert torch.isnan(pt.detach()[::4]).all()  # torch's 0 / 0 was reached, so the comparison saw it
