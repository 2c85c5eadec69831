"""Errors: what optim.torch refuses and how it says so. Tensors that are not
CPU, dense (strided), non-overlapping float or complex (at construction for parameters, at step() for
gradients), invalid hyperparameters (at construction, and set in a group
between steps: the step then changes nothing), torch flags that cannot apply."""
import pytest
import torch
from torch.optim.optimizer import required

import optim.torch as ot

CLASSES = [ot.SGD, ot.Adagrad, ot.RMSprop, ot.Adadelta, ot.Adam, ot.AdamW, ot.RAdam, ot.NAdam, ot.AdaBound, ot.Lion,
           ot.Adamax, ot.ASGD, ot.Rprop, ot.LAMB, ot.LARS, ot.Adafactor]
IDS = [c.__name__ for c in CLASSES]


def _make(cls, params, **kw):
    if cls is ot.SGD:
        kw.setdefault("lr", 0.1)
    return cls(params, **kw)


def _ok(n=3):
    return torch.zeros(n, requires_grad=True)


# ---- parameters -------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_integer_parameter(cls):
    bad = torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(TypeError, match=r"parameter 1 \(shape \(2, 3\), dtype torch.int32, device cpu\) "
                                        r"is not of a type optim.torch updates \(float32, float64, bfloat16, "
                                        r"float16\)"):
        _make(cls, [_ok(), bad])


def test_other_parameter_kinds():
    base = torch.zeros(4, 6)
    cases = [
        (torch.zeros(6, 4).t().requires_grad_(), None, None),  # layouts: test_torch_layouts.py
        (base[:, ::2].requires_grad_(), None, None),
        (torch.zeros(1, 6).expand(4, 6).requires_grad_(), ValueError,
         r"parameter 0 \(shape \(4, 6\).*strides \(0, 1\), overlaps itself"),
        (torch.zeros(4, 6).to_sparse().requires_grad_(), TypeError, "is not dense"),
        (torch.zeros(3, device="meta", requires_grad=True), TypeError, "device meta.* is not on the CPU"),
        (torch.zeros(3, dtype=torch.complex64, requires_grad=True), None, None),  # test_torch_complex.py
        (torch.zeros(3, dtype=torch.int64), TypeError, "dtype torch.int64.*is not of a type"),
        (torch.zeros(3, requires_grad=True) * 2, ValueError, "non-leaf"),
        ([1.0, 2.0], TypeError, "can only optimize Tensors"),
    ]
    for p, exc, msg in cases:
        if exc is None:
            ot.Adam([p])
            continue
        with pytest.raises(exc, match=msg):
            ot.Adam([p])
    with pytest.raises(TypeError, match="iterable of Tensors"):
        ot.Adam(torch.zeros(3))  # torch's own check
    with pytest.raises(ValueError, match="empty parameter list"):
        ot.Adam([])


def test_parameters_sharing_memory():
    p = _ok(10)
    with pytest.raises(ValueError, match="parameter 1 is the same tensor as parameter 0"):
        ot.Adam([p, p])
    w = torch.zeros(10)
    a, b = w[:6].requires_grad_(), w[4:].requires_grad_()
    with pytest.raises(ValueError, match="parameter 1 shares memory with parameter 0"):
        ot.Adam([a, b])
    opt = ot.Adam([p])
    with pytest.raises(ValueError, match="parameter 1 is the same tensor as parameter 0"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1  # nothing was added
    q = _ok()
    opt.add_param_group({"params": [q], "lr": 0.5})
    assert len(opt.param_groups) == 2 and opt.state[q] is not None


def test_parameter_reassigned_between_steps():
    p = _ok(4)
    opt = ot.SGD([p], lr=0.1)
    p.data = torch.zeros(5)
    p.grad = None
    with pytest.raises(ValueError, match=r"parameter 0 changed shape from \(4,\) to \(5,\)"):
        opt.step()
    p.data = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(TypeError, match="parameter 0 changed dtype from torch.float32 to torch.float64"):
        opt.step()
    p.data = torch.zeros(1).expand(4)
    with pytest.raises(ValueError, match="parameter 0 .*overlaps itself"):
        opt.step()
    p.data = torch.ones(4)  # new memory of the right kind: followed
    p.grad = torch.ones(4)
    opt.step()
    assert torch.allclose(p, torch.full((4,), 0.9))


# ---- gradients -------------------------------------------------------------------


def _grad_cases():
    def negview(p):
        p.grad = torch._neg_view(torch.zeros(4, 3))

    def sparse(p):
        p.grad = torch.zeros(4, 3).to_sparse()

    def shape(p):
        p.grad = torch.zeros(4, 3)
        p.grad.data = torch.zeros(12)  # torch refuses p.grad = <wrong shape>; .data does not

    def float64(p):
        p.grad = torch.zeros(4, 3)
        p.grad.data = torch.zeros(4, 3, dtype=torch.float64)

    def same_memory(p):
        p.grad = p.detach()

    return [(negview, ValueError, r"gradient of parameter 1 \(shape \(4, 3\).*is a lazy negation view"),
            (sparse, RuntimeError, "gradient of parameter 1 .*layout torch.sparse_coo.* is sparse"),
            (shape, ValueError, r"gradient of parameter 1 \(shape \(12,\).*does not have the parameter's "
                                r"shape \(4, 3\)"),
            (float64, TypeError, "gradient of parameter 1 .*dtype torch.float64.* is not of the parameter's dtype "
                                 "torch.float32"),
            (same_memory, ValueError, "overlaps")]


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("case", range(5), ids=["negview", "sparse", "shape", "float64", "overlap"])
def test_bad_gradient_at_step_changes_nothing(cls, case):
    mutate, exc, msg = _grad_cases()[case]
    if case == 1 and cls in (ot.SGD, ot.Adagrad):
        # They take sparse gradients (test_torch_sparse.py): a sparse one of another dtype is bad.
        def mutate(p):
            p.grad = torch.zeros(4, 3).to_sparse()
            p.grad.data = torch.zeros(4, 3, dtype=torch.float64).to_sparse()
        exc, msg = TypeError, "gradient of parameter 1 .*layout torch.sparse_coo.* is not of the parameter's dtype"
    a = torch.ones(5, requires_grad=True)
    p = torch.ones(4, 3, requires_grad=True)
    opt = _make(cls, [a, p])
    a.grad = torch.ones(5)
    mutate(p)
    with pytest.raises(exc, match=msg):
        opt.step()
    assert torch.equal(a, torch.ones(5)) and len(opt.state[a]) == (2 if cls is ot.Adagrad else 0)
    p.grad = torch.ones(4, 3)
    opt.step()  # fixed: steps again
    assert not torch.equal(a, torch.ones(5))


# ---- hyperparameters ----------------------------------------------------------------

BAD_CONSTRUCTION = [
    (ot.SGD, dict(lr=-0.1), "lr = -0.1 must be >= 0"),
    (ot.SGD, dict(lr=0.1, nesterov=True), "nesterov = 1 requires momentum > 0"),
    (ot.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "requires dampening = 0"),
    (ot.SGD, dict(lr=0.1, momentum=-1), "momentum = -1 must be >= 0"),
    (ot.SGD, dict(lr=0.1, dampening=2), r"dampening = 2 is outside \[0, 1\]"),
    (ot.SGD, dict(lr=0.1, maximize="yes"), "maximize = 'yes' must be True or False"),
    (ot.Adagrad, dict(eps=-1), "eps = -1 must be >= 0"),
    (ot.Adagrad, dict(lr_decay=-1), "lr_decay = -1 must be >= 0"),
    (ot.Adagrad, dict(initial_accumulator_value=-0.5), "initial_accumulator_value = -0.5 must be >= 0"),
    (ot.RMSprop, dict(alpha=1.5), r"alpha = 1.5 is outside \[0, 1\]"),
    (ot.RMSprop, dict(eps_placement="middle"), "eps_placement = 'middle' must be 'outside'"),
    (ot.Adadelta, dict(rho=1.1), r"rho = 1.1 is outside \[0, 1\]"),
    (ot.Adadelta, dict(momentum=-0.1), "momentum = -0.1 must be >= 0"),
    (ot.Adam, dict(betas=(1.0, 0.999)), r"beta1 = 1 is outside \[0, 1\)"),
    (ot.Adam, dict(betas=(0.9, -0.1)), r"beta2 = -0.1 is outside \[0, 1\)"),
    (ot.Adam, dict(betas=0.9), "betas = 0.9 must be a pair"),
    (ot.Adam, dict(lr=float("nan")), "lr = nan is not a finite number"),
    (ot.Adam, dict(lr="fast"), "lr = 'fast' is not a number"),
    (ot.AdamW, dict(weight_decay=-1e-2), "weight_decay = -0.01 must be >= 0"),
    (ot.AdamW, dict(eps=-1e-8), "eps = -1e-08 must be >= 0"),
    (ot.RAdam, dict(decoupled_weight_decay=2), "decoupled_weight_decay = 2 must be True or False"),
    (ot.NAdam, dict(momentum_decay=-1), "momentum_decay = -1 must be >= 0"),
    (ot.AdaBound, dict(gamma=1.0), r"gamma = 1 is outside \[0, 1\)"),
    (ot.AdaBound, dict(final_lr=-0.1), "final_lr = -0.1 must be >= 0"),
]


@pytest.mark.parametrize("cls,kw,msg", BAD_CONSTRUCTION,
                         ids=["%s-%s" % (c.__name__, "-".join(kw)) for c, kw, _ in BAD_CONSTRUCTION])
def test_bad_hyperparameter_at_construction(cls, kw, msg):
    with pytest.raises(ValueError, match=msg):
        cls([_ok()], **kw)


def test_lr_is_required_for_sgd_as_in_torch():
    with pytest.raises(ValueError, match="required 'lr'"):
        ot.SGD([_ok()])
    with pytest.raises(ValueError, match="required 'lr'"):
        ot.SGD([{"params": [_ok()]}], lr=required)


FUSED = (ot.SGD, ot.Adagrad, ot.Adam, ot.AdamW)  # the classes whose torch 2.x counterpart has fused=True


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_torch_flags(cls):
    alternative = {"capturable": "use torch.optim \\(capturable=True\\)",
                   "differentiable": "use torch.optim \\(differentiable=True\\)",
                   "fused": "torch 2.x has fused=True for SGD, Adagrad, Adam and AdamW"}
    for flag in ("capturable", "differentiable", "fused"):
        if flag == "fused" and cls in FUSED:
            continue
        with pytest.raises(ValueError, match="%s = True is not supported: .*%s" % (flag, alternative[flag])):
            _make(cls, [_ok()], **{flag: True})
        _make(cls, [_ok()], **{flag: False})
    for foreach in (None, True, False):
        _make(cls, [_ok()], foreach=foreach)
    with pytest.raises(ValueError, match="foreach = 'yes' must be None, True or False"):
        _make(cls, [_ok()], foreach="yes")


BAD_BETWEEN = [
    (ot.SGD, dict(lr=0.1), "lr", -1.0, "param group 1: sgd: lr = -1 must be >= 0"),
    (ot.SGD, dict(lr=0.1), "nesterov", True, "param group 1: sgd: nesterov = 1 requires momentum > 0"),
    (ot.Adam, {}, "betas", (0.9, 1.0), r"param group 1: adam: beta2 = 1 is outside \[0, 1\)"),
    (ot.Adam, {}, "betas", (0.9,), "param group 1: betas = \\(0.9,\\) must be a pair"),
    (ot.Adam, {}, "eps", -0.5, "param group 1: adam: eps = -0.5 must be >= 0"),
    (ot.Adam, {}, "amsgrad", None, "param group 1: amsgrad = None must be True or False"),
    (ot.RMSprop, {}, "alpha", -0.5, "param group 1: rmsprop: alpha = -0.5"),
    (ot.Adadelta, {}, "rho", 2.0, "param group 1: adadelta: rho = 2"),
    (ot.NAdam, {}, "momentum_decay", float("inf"), "momentum_decay = inf is not a finite number"),
    (ot.AdaBound, {}, "final_lr", -1.0, "final_lr = -1 must be >= 0"),
    (ot.Adam, {}, "fused", "yes", "param group 1: fused = 'yes' must be None, True or False"),
    (ot.Adam, {}, "eps_placement", "In", "eps_placement = 'In' must be 'outside'"),
]


@pytest.mark.parametrize("cls,kw,key,value,msg", BAD_BETWEEN,
                         ids=["%s-%s" % (c[0].__name__, c[2]) for c in BAD_BETWEEN])
def test_bad_hyperparameter_between_steps_changes_nothing(cls, kw, key, value, msg):
    a, b = torch.ones(5, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = cls([{"params": [a]}, {"params": [b]}], **kw)
    for p in (a, b):
        p.grad = torch.full_like(p, 0.5)
    opt.step()
    before = [a.detach().clone(), b.detach().clone()]
    state_before = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()} for p in (a, b)]
    opt.param_groups[0]["lr"] = 0.25  # a valid change in another group must not be applied either
    good = opt.param_groups[1][key]
    opt.param_groups[1][key] = value
    with pytest.raises(ValueError, match=msg):
        opt.step()
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    for p, st in zip((a, b), state_before):
        now = opt.state[p]
        assert sorted(now) == sorted(st)
        for k, v in st.items():
            assert torch.equal(now[k], v) if torch.is_tensor(v) else now[k] == v
    assert opt._h.group_get_hparam(0, 1) != 0.25  # OPTIM_HP_LR of group 0 was not pushed
    opt.param_groups[1][key] = good
    opt.step()
    assert opt._h.group_get_hparam(0, 1) == 0.25
    assert not torch.equal(b, before[1])


def test_param_groups_appended_by_hand():
    opt = ot.Adam([_ok()])
    opt.param_groups.append({"params": [_ok()], **opt.defaults})
    with pytest.raises(RuntimeError, match="add_param_group"):
        opt.step()


def test_zero_parameters_and_empty_tensors():
    opt = ot.SGD([{"params": []}], lr=0.1)
    opt.step()
    e = torch.zeros(0, requires_grad=True)
    p = _ok()
    opt = ot.Adam([e, p])
    e.grad, p.grad = torch.zeros(0), torch.ones(3)
    opt.step()
    assert opt.state[e]["exp_avg"].shape == (0,) and float(opt.state[e]["step"]) == 1.0


def test_messages_name_the_python_keys():
    """liboptim's field names are replaced by the class's group keys where they differ (AdaBound keeps C's
    initial_lr as base_lr), at construction and when set in a group between steps."""
    with pytest.raises(ValueError, match=r"AdaBound: param group 0: adabound: lr = 0 with base_lr = 0") as e:
        ot.AdaBound([_ok()], lr=0)
    assert "initial_lr" not in str(e.value)
    opt = ot.AdaBound([_ok()], lr=1e-3)
    opt.param_groups[0]["base_lr"] = -1.0
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"base_lr = -1") as e:
        opt.step()
    assert "initial_lr" not in str(e.value)


@pytest.mark.parametrize("cls", FUSED, ids=[c.__name__ for c in FUSED])
def test_fused_true_is_accepted_where_torch_2_has_it(cls):
    """fused=True (torch 2.x's fused kernels) is accepted and steps exactly as
    fused=False and fused=None: every optim.torch step is one fused pass. torch
    1.13 refuses it on the CPU (its fused Adam is CUDA-only); optim.torch
    follows 2.x. A subclass keeps the acceptance, and a group may set it."""
    kw = dict(lr=0.1) if cls is ot.SGD else {}
    out = []
    for fused in (True, False, None):
        p = torch.linspace(-1, 1, 17).requires_grad_()
        opt = cls([p], fused=fused, **kw)
        assert opt.param_groups[0].get("fused", fused) == fused or cls in (ot.SGD, ot.Adagrad, ot.AdamW)
        for t in range(5):
            p.grad = torch.sin(p.detach() * (t + 1))
            opt.step()
        out.append(p.detach().clone())
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    sub = type("My" + cls.__name__, (cls,), {})
    q = torch.zeros(3, requires_grad=True)
    opt = sub([{"params": [q], "fused": True}], **kw)
    q.grad = torch.ones(3)
    opt.step()
    assert not torch.equal(q.detach(), torch.zeros(3))


def test_fused_true_in_a_group_of_a_class_without_it():
    a = torch.ones(3, requires_grad=True)
    opt = ot.RAdam([{"params": [a]}])
    opt.param_groups[0]["fused"] = True
    a.grad = torch.ones(3)
    with pytest.raises(ValueError, match="RAdam param group 0: fused = True is not supported: this class has no "
                                         "fused implementation in torch"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_sparse_gradient_raises_what_torch_raises(cls):
    """torch 1.13 raises RuntimeError ("<class> does not support sparse
    gradients") for every class but SGD and Adagrad, which accept them;
    optim.torch raises it for the same classes, and steps SGD and Adagrad as
    torch does (python/tests/test_torch_sparse.py)."""
    a = torch.ones(4, 3, requires_grad=True)
    opt = _make(cls, [a])
    a.grad = torch.ones(4, 3).to_sparse()
    ref = getattr(torch.optim, cls.__name__, None)
    if cls in (ot.SGD, ot.Adagrad):
        b = torch.ones(4, 3, requires_grad=True)
        theirs = ref([b], **({"lr": 0.1} if cls is ot.SGD else {}))
        b.grad = torch.ones(4, 3).to_sparse()
        theirs.step()
        opt.step()
        assert torch.equal(a.detach(), b.detach())
        return
    if ref is not None:
        b = torch.ones(4, 3, requires_grad=True)
        theirs = ref([b])
        b.grad = torch.ones(4, 3).to_sparse()
        with pytest.raises(RuntimeError, match="does not support sparse gradients"):
            theirs.step()
    with pytest.raises(RuntimeError, match="%s does not support sparse gradients" % cls.__name__):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(4, 3))
