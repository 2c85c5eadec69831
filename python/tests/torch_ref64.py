"""Independent float64 references of optim's update rules, written from the
formulas (the comments at the top of src/rules/*.h, torch.optim's documented
algorithms, and for AdaBound the algorithm of Luo et al. 2019 as its reference
implementation applies it), plus the comparison helpers the tests share.

They are used for the options torch 1.13 lacks (decoupled RAdam/NAdam,
bias_correction=False, eps inside, Adadelta momentum, maximize on RAdam/NAdam,
AdaBound). test_torch_extras.py first checks each reference against
torch.optim in float64 on the options torch has, so the references are
themselves tested.

All state lives in plain dicts of numpy float64 arrays; nothing here calls
liboptim.
"""
import math

import numpy as np

# ---- comparing -------------------------------------------------------------------


def rel_err(x, y, floor=0.0):
    """Largest relative difference of x from y, robust near zero:

        max_i |x_i - y_i| / (|y_i| + max(mean_j |y_j|, floor))

    Why this form: an element computed in float32 carries a rounding error
    proportional to the size of the terms that produced it, not to the element
    itself. A parameter or moment that is a sum of O(s) terms and happens to
    land near 0 still has an absolute error of O(ulp(s)); the tensor's mean
    magnitude stands in for s. For a tensor of one or a few elements that
    mean is the element itself, so the caller passes `floor`: the largest
    mean magnitude the same quantity had at earlier steps (torch_harness.Scales).
    Elements far from 0 are compared relatively to themselves (the denominator
    is then at least |y_i|), so the bound is never looser than 2x a plain
    relative error there."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise AssertionError("shapes differ: %s vs %s" % (x.shape, y.shape))
    if x.size == 0:
        return 0.0
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        # The same NaN, +inf and -inf elements, or nothing else matters. (Comparing the
        # non-finite values with array_equal would call any two NaNs different.)
        same = all(np.array_equal(f(x), f(y)) for f in (np.isnan, np.isposinf, np.isneginf))
        if not same:
            return math.inf
        keep = np.isfinite(x)
        x, y = x[keep], y[keep]
        if x.size == 0:
            return 0.0
    scale = np.abs(y) + max(float(np.mean(np.abs(y))), floor)
    diff = np.abs(x - y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(diff == 0, 0.0, diff / scale)
    return float(np.max(r))


# ---- the rules -------------------------------------------------------------------


def _exact(x):
    return x


def f32(x):
    """x rounded to the nearest float32, as a Python float."""
    return float(np.float32(x))


def _dir(g, p, wd, maximize, decoupled=False):
    """The gradient as the rules see it: negated to maximize, plus an L2 term
    unless the decay is decoupled."""
    d = -g if maximize else g
    if wd != 0 and not decoupled:
        d = d + wd * p
    return d


def _rms(v, eps, inside):
    return np.sqrt(v + eps) if inside else np.sqrt(v) + eps


def sgd(p, g, st, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False, k=_exact):
    d = _dir(g, p, weight_decay, maximize)
    if momentum != 0:
        if "momentum_buffer" not in st:
            b = d.copy()
        else:
            b = k(momentum) * st["momentum_buffer"] + k(1 - dampening) * d
        st["momentum_buffer"] = b
        d = d + k(momentum) * b if nesterov else b
    return p - lr * d


def adagrad(p, g, st, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
            maximize=False, eps_inside=False, k=_exact):
    if "sum" not in st:
        st["sum"] = np.full_like(p, initial_accumulator_value)
        st["step"] = 0
    st["step"] += 1
    t = st["step"]
    d = _dir(g, p, weight_decay, maximize)
    clr = lr / (1 + (t - 1) * lr_decay)
    st["sum"] = st["sum"] + d * d
    return p - clr * d / _rms(st["sum"], eps, eps_inside)


def rmsprop(p, g, st, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False, eps_inside=False, k=_exact):
    if "square_avg" not in st:
        st["step"] = 0
        st["square_avg"] = np.zeros_like(p)
        if momentum > 0:
            st["momentum_buffer"] = np.zeros_like(p)
        if centered:
            st["grad_avg"] = np.zeros_like(p)
    st["step"] += 1
    d = _dir(g, p, weight_decay, maximize)
    st["square_avg"] = k(alpha) * st["square_avg"] + k(1 - alpha) * d * d
    v = st["square_avg"]
    if centered:
        st["grad_avg"] = k(alpha) * st["grad_avg"] + k(1 - alpha) * d
        v = v - st["grad_avg"] ** 2
    avg = _rms(v, eps, eps_inside)
    if momentum > 0:
        st["momentum_buffer"] = k(momentum) * st["momentum_buffer"] + d / avg
        return p - lr * st["momentum_buffer"]
    return p - lr * d / avg


def adadelta(p, g, st, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False, momentum=0.0,
             eps_inside=True, k=_exact):
    if "square_avg" not in st:
        st["step"] = 0
        st["square_avg"] = np.zeros_like(p)
        st["acc_delta"] = np.zeros_like(p)
        if momentum > 0:
            st["momentum_buffer"] = np.zeros_like(p)
    st["step"] += 1
    d = _dir(g, p, weight_decay, maximize)
    st["square_avg"] = k(rho) * st["square_avg"] + k(1 - rho) * d * d
    delta = _rms(st["acc_delta"], eps, eps_inside) / _rms(st["square_avg"], eps, eps_inside) * d
    st["acc_delta"] = k(rho) * st["acc_delta"] + k(1 - rho) * delta * delta
    if momentum > 0:
        st["momentum_buffer"] = k(momentum) * st["momentum_buffer"] + delta
        return p - lr * st["momentum_buffer"]
    return p - lr * delta


def adam(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         bias_correction=True, eps_inside=False, decoupled_weight_decay=False, k=_exact):
    b1, b2 = betas
    if "exp_avg" not in st:
        st["step"] = 0
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
        if amsgrad:
            st["max_exp_avg_sq"] = np.zeros_like(p)
    st["step"] += 1
    t = st["step"]
    if decoupled_weight_decay:
        p = p * k(1 - lr * weight_decay)
    d = _dir(g, p, weight_decay, maximize, decoupled_weight_decay)
    st["exp_avg"] = k(b1) * st["exp_avg"] + k(1 - b1) * d
    st["exp_avg_sq"] = k(b2) * st["exp_avg_sq"] + k(1 - b2) * d * d
    v = st["exp_avg_sq"]
    if amsgrad:
        st["max_exp_avg_sq"] = np.maximum(st["max_exp_avg_sq"], v)
        v = st["max_exp_avg_sq"]
    bc1 = 1 - b1 ** t if bias_correction else 1.0
    bc2 = 1 - b2 ** t if bias_correction else 1.0
    return p - lr * (st["exp_avg"] / bc1) / _rms(v / bc2, eps, eps_inside)


def adamw(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
          bias_correction=True, eps_inside=False, k=_exact):
    return adam(p, g, st, lr, betas, eps, weight_decay, amsgrad, maximize, bias_correction, eps_inside, True, k)


def radam(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
          decoupled_weight_decay=False, eps_inside=False, k=_exact):
    b1, b2 = betas
    if "exp_avg" not in st:
        st["step"] = 0
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
    st["step"] += 1
    t = st["step"]
    if decoupled_weight_decay:
        p = p * k(1 - lr * weight_decay)
    d = _dir(g, p, weight_decay, maximize, decoupled_weight_decay)
    st["exp_avg"] = k(b1) * st["exp_avg"] + k(1 - b1) * d
    st["exp_avg_sq"] = k(b2) * st["exp_avg_sq"] + k(1 - b2) * d * d
    mhat = st["exp_avg"] / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = math.sqrt(1 - b2 ** t) / _rms(st["exp_avg_sq"], eps, eps_inside)
        return p - lr * mhat * adaptive * r
    return p - lr * mhat


def nadam(p, g, st, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          maximize=False, decoupled_weight_decay=False, eps_inside=False, k=_exact):
    b1, b2 = betas
    if "exp_avg" not in st:
        st["step"] = 0
        st["mu_product"] = 1.0
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
    st["step"] += 1
    t = st["step"]
    if decoupled_weight_decay:
        p = p * k(1 - lr * weight_decay)
    d = _dir(g, p, weight_decay, maximize, decoupled_weight_decay)
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    st["mu_product"] *= mu
    prod = st["mu_product"]
    st["exp_avg"] = k(b1) * st["exp_avg"] + k(1 - b1) * d
    st["exp_avg_sq"] = k(b2) * st["exp_avg_sq"] + k(1 - b2) * d * d
    denom = _rms(st["exp_avg_sq"] / (1 - b2 ** t), eps, eps_inside)
    return p - lr * (1 - mu) / (1 - prod) * d / denom - lr * mu_next / (1 - prod * mu_next) * st["exp_avg"] / denom


def adabound(p, g, st, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0.0,
             amsbound=False, maximize=False, bias_correction=True, eps_inside=False, base_lr=None, k=_exact):
    """AdaBound (Luo et al. 2019, Algorithm 2 with the bias-corrected step of
    the authors' code): Adam's step size lr * sqrt(1 - b2^t) / (1 - b1^t) /
    denom per element, clipped to [eta_l(t), eta_u(t)], times m. The bounds
    converge to the final (SGD) rate fl = final_lr * lr / base_lr:
    eta_l = fl (1 - 1/(gamma t + 1)), eta_u = fl (1 + 1/(gamma t))."""
    b1, b2 = betas
    if "exp_avg" not in st:
        st["step"] = 0
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
        if amsbound:
            st["max_exp_avg_sq"] = np.zeros_like(p)
    st["step"] += 1
    t = st["step"]
    d = _dir(g, p, weight_decay, maximize)
    st["exp_avg"] = k(b1) * st["exp_avg"] + k(1 - b1) * d
    st["exp_avg_sq"] = k(b2) * st["exp_avg_sq"] + k(1 - b2) * d * d
    v = st["exp_avg_sq"]
    if amsbound:
        st["max_exp_avg_sq"] = np.maximum(st["max_exp_avg_sq"], v)
        v = st["max_exp_avg_sq"]
    denom = _rms(v, eps, eps_inside)
    step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if bias_correction else lr
    fl = final_lr * lr / (lr if base_lr is None else base_lr)
    lower = fl * (1 - 1 / (gamma * t + 1))
    upper = fl * (1 + 1 / (gamma * t))
    return p - np.clip(step / denom, lower, upper) * st["exp_avg"]


RULES = {"SGD": sgd, "Adagrad": adagrad, "RMSprop": rmsprop, "Adadelta": adadelta, "Adam": adam, "AdamW": adamw,
         "RAdam": radam, "NAdam": nadam, "AdaBound": adabound}


class Ref64:
    """A float64 optimizer over numpy arrays with torch-like param groups:
    groups = [{'params': [index, ...], **hyperparameters}]. eps_placement is
    given as in optim.torch ('inside'/'outside') and translated here.

    float32_constants=True rounds the multipliers of the recurrences (betas
    and 1 - betas, alpha, rho, momentum, 1 - dampening, the decoupled decay
    factor 1 - lr * weight_decay) to float32, as a float32 optimizer (torch's
    or optim's) necessarily holds them. Their rounding error (up to 3e-8)
    compounds over the steps (beta2^200 is off by up to 200 x 3e-8 relative)
    into a systematic drift that is a property of the float32 hyperparameters,
    not of the arithmetic under test; the rest stays exact."""

    def __init__(self, cls_name, params, groups, float32_constants=False):
        self.k = f32 if float32_constants else _exact
        self.rule = RULES[cls_name]
        self.params = [np.asarray(p, dtype=np.float64).copy() for p in params]
        self.groups = groups
        self.state = [dict() for _ in params]

    def step(self, grads):
        for group in self.groups:
            hp = {k: v for k, v in group.items() if k != "params"}
            if "eps_placement" in hp:
                hp["eps_inside"] = hp.pop("eps_placement") == "inside"
            for i in group["params"]:
                if grads[i] is None:
                    continue
                self.params[i] = self.rule(self.params[i], np.asarray(grads[i], dtype=np.float64),
                                           self.state[i], k=self.k, **hp)
