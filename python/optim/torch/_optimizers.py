"""optim.torch's nine optimizers: torch.optim's classes, stepped by liboptim."""
import torch
from torch.optim.optimizer import required

from ._base import _Optimizer, _check_flags
from ._quantized import QuantizedState

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "RAdam", "NAdam", "AdaBound"]

_BOOLS = {"maximize", "nesterov", "amsgrad", "amsbound", "centered", "bias_correction", "decoupled_weight_decay",
          "trust_clip", "always_adapt"}


def _spec(*keys):
    """_hp_spec from group keys: the C field has the key's name except for
    betas (beta1, beta2) and amsbound (amsgrad)."""
    out = []
    for key in keys:
        if key == "betas":
            out.append((key, "pair", ("beta1", "beta2")))
        elif key == "eps_placement":
            out.append((key, "placement", (key,)))
        elif key == "amsbound":
            out.append((key, "bool", ("amsgrad",)))
        elif key == "etas":
            out.append((key, "pair", ("etaminus", "etaplus")))
        elif key == "step_sizes":
            out.append((key, "pair", ("step_size_min", "step_size_max")))
        elif key in _BOOLS:
            out.append((key, "bool", (key,)))
        else:
            out.append((key, "real", (key,)))
    return tuple(out)


_COMMON_DOC = """
    Common to every optim.torch optimizer:
      - Parameters must be CPU, dense (strided) float32, float64, bfloat16 or
        float16 tensors (complex64, complex128 where torch.optim steps them)
        over memory that holds them, and gradients the same (with the
        parameter's shape and dtype), in any layout: channels_last, transposed
        and other dense layouts are stepped in place in storage order, with
        the state in the same layout (torch's zeros_like(p, memory_format=
        torch.preserve_format)); slices with a step through a working copy;
        gradients of other strides are matched by logical index (docs/TORCH.md,
        "Layouts"). Expanded or overlapping parameters are refused, as torch's
        in-place operations refuse them. The state is kept in the
        parameter's dtype, as torch.optim keeps it, unless state_dtype says
        otherwise (docs/PRECISION.md);
        anything else (a storage freed or shrunk by storage().resize_(), too)
        raises TypeError or ValueError naming the parameter's index, shape, dtype
        and device (parameters when the optimizer is made and at every step,
        gradients at step()), with nothing changed.
      - Hyperparameters are checked by liboptim: an invalid value raises
        ValueError with the library's message, which names the field and value
        (at construction, or at step() if set in a param group between steps;
        a failed step changes nothing). eps = 0 is accepted, as by torch.optim
        (IEEE arithmetic: 0 / 0 is NaN where torch's is). liboptim's field names appear in its messages (beta1
        and beta2 for betas[0] and betas[1]).
      - param_group values (lr and every other key) may be changed between steps,
        by the user or by an lr scheduler; they are pushed to C before the step.
      - state[p] holds torch.optim's keys; its tensors are views of the C
        optimizer's memory. state_dict()/load_state_dict() use torch.optim's
        format, so a run can move between torch.optim and optim.torch mid-training.
      - foreach is accepted and has no effect (the C library always updates every
        tensor in one fused pass); capturable, differentiable and fused must stay
        False (ValueError otherwise).
      - Threads: calls on one optimizer take turns (it holds a lock); different
        optimizers step in parallel. A step updates the memory it checked when it
        began, kept alive until it returns, even if another thread replaces
        p.data or p.grad.data meanwhile (docs/BINDING.md).
      - Lifetime: the C state is freed when the last reference to the optimizer
        goes (a state view keeps only the C memory alive); copy.deepcopy, pickle
        and torch.save work as in torch, and the copy steps as the original.

    Gradient checks fused into the step (optim extras, keyword-only, on every class):
        nonfinite (str, optional): what a step does when a gradient holds NaN
            or Inf. 'propagate' (default): IEEE arithmetic as in torch.optim, only
            the elements concerned become non-finite. 'skip': skip the whole step
            (every parameter, state tensor and step counter keeps every byte) and
            count it. 'error': the same, then raise NonFiniteGradientError (a
            RuntimeError) naming the parameter's index, shape and group.
        clip_grad_norm (optional): None (default), max_norm, or (max_norm,
            norm_type): clip the gradients to that total norm (norm_type > 0 or
            inf; 2 if not given) before each update, as calling
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type) before
            step() would, but in the same pass over memory and without writing
            the gradient tensors. The norm is taken over the gradients of every
            group. Under 'propagate' a NaN norm makes every update NaN, as torch
            does; 'skip' and 'error' check first.
        clip_grad_value (optional): None (default) or a number > 0: clamp every
            gradient element to [-clip_grad_value, clip_grad_value] before each
            update, as torch.nn.utils.clip_grad_value_(params, clip_grad_value)
            before step() would, in the same pass and without writing the
            gradient tensors (a NaN stays NaN; 'skip' and 'error' look at the
            gradients before the clamp). Not together with clip_grad_norm.
      Change them later with set_nonfinite(policy), set_clip_grad_norm(max_norm,
      norm_type=2.0) and set_clip_grad_value(clip_value) (None turns clipping
      off); read them as the properties nonfinite, clip_grad_norm and
      clip_grad_value. They apply to the whole optimizer (one C object) and are
      kept in every param group under the keys 'nonfinite', 'clip_grad_norm'
      (None or (max_norm, norm_type)) and 'clip_grad_value', so state_dict() saves
      them and load_state_dict() restores them; groups that disagree raise
      ValueError at the next step. A state saved without them (by torch.optim)
      keeps the current settings.
    Reduced precision (optim extras, keyword-only, on every class; docs/PRECISION.md):
        master_weights (bool, optional): give every bfloat16/float16 parameter
            an fp32 master copy, updated by the step, which writes the
            parameter as the master rounded to nearest even in the same pass;
            its state is then float32. state[p]['master'] is the master (a
            float32 tensor); master_sync(p) re-makes it from p after you write
            p yourself (default: False).
        stochastic_rounding (bool, optional): store bfloat16 parameters without a
            master, bfloat16 state and the codes of int8 state with unbiased
            stochastic rounding keyed by (seed, parameter, step, element): the same
            bits on every CPU path and thread count, and after a resume;
            set_seed(s) / seed (default: False). With int8 state it keeps the
            second moments following a falling gradient scale, where codes
            rounded to nearest stall (docs/PRECISION.md).
        loss_scale (optional): None (default), a number (a static scale), 'dynamic'
            (torch.cuda.amp.GradScaler's defaults) or a dict of init_scale,
            growth_factor, backoff_factor, growth_interval: multiply the loss by
            optimizer.loss_scale; the step unscales the gradients and, when
            dynamic, skips a step with Inf/NaN gradients (everything untouched)
            and updates the scale as GradScaler.update.
        state_dtype (optional): the state's type. None (default): the
            parameter's dtype, as torch.optim (float32 with master_weights);
            torch.float32, torch.bfloat16 (stochastically rounded with
            stochastic_rounding=True), torch.float16, or "int8": 8-bit
            block-quantized state (its codes stochastically rounded with
            stochastic_rounding=True), where state[p][key] is an
            optim.torch.QuantizedState (codes, scales, dequantize()).
            float64 parameters keep float64 state (another value is refused).
            torch.optim cannot load an int8 state_dict:
            optim.torch.dequantize_state_dict converts it.
      The master, the seed and the scaler are in state_dict() (state[p]['master'],
      state_dict()['optim_precision']), pickles and checkpoints.
      Named parameters: params may be (name, tensor) pairs, as
      model.named_parameters() gives them (torch 2.6's named parameters); each
      group then holds their names under 'param_names', liboptim's messages
      name them, and load_checkpoint(match="name") finds each one by name.
      Threads: a step uses as many threads as torch's own operators
      (torch.set_num_threads, which sets OpenMP's count) unless set_threads(k)
      limits it (1: the calling thread only); the property threads reads it.
      Results are the same bits for any thread count.
      Read-only properties about the last step:
        last_step_skipped (bool): the last step() skipped its update for a NaN or Inf.
        skipped_steps (int): steps skipped so far ('skip' and 'error'); not saved
            by state_dict().
        last_grad_norm (float): the total gradient norm the last step measured,
            before clipping (of norm_type with clipping, else the 2-norm under
            'skip'/'error'; NaN if neither is on, or if a gradient was NaN).
"""


class SGD(_Optimizer):
    __doc__ = """Stochastic gradient descent (optionally with momentum), as torch.optim.SGD.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float): learning rate (required, as in torch).
        momentum (float, optional): momentum factor (default: 0).
        dampening (float, optional): dampening for momentum, in [0, 1] (default: 0).
        weight_decay (float, optional): L2 penalty (default: 0).
        nesterov (bool, optional): Nesterov momentum; needs momentum > 0 and
            dampening = 0 (default: False).
        maximize (bool, optional): maximize the objective (default: False).
        foreach, differentiable (and capturable, fused): see below.

    state[p] is {'momentum_buffer': tensor or None} after p's first step, as in
    torch (no 'step').
    """ + _COMMON_DOC

    _rule_name = "sgd"
    _state_from_grad = True  # the momentum buffer is torch.clone(d_p) of its first step: d_p's layout
    _complex = "rounding"  # torch 1.13 computes on the complex tensors: the same arithmetic, rounded apart
    _hp_spec = _spec("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _step_kind = None
    _required_slots = ()

    def __init__(self, params, lr=required, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, capturable=False, fused=False,
                 nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("SGD", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                 fused=fused))
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class Adagrad(_Optimizer):
    __doc__ = """AdaGrad, as torch.optim.Adagrad.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-2).
        lr_decay (float, optional): learning rate decay (default: 0).
        weight_decay (float, optional): L2 penalty (default: 0).
        initial_accumulator_value (float, optional): starting value of the sum
            of squared gradients (default: 0).
        eps (float, optional): term added to the denominator; must be >= 0
            (default: 1e-10).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional): maximize the objective (default: False).
        eps_placement (str, optional, optim extra): 'outside' for torch's
            g / (sqrt(sum) + eps) (default), 'inside' for g / sqrt(sum + eps),
            the seeds' AdaGrad.

    As torch's, the state (step and sum) exists from construction on, and the
    sums of the parameters given to the constructor start at the constructor's
    initial_accumulator_value even in groups that set their own (torch.optim
    reads only the constructor's). A group added later with add_param_group
    starts at its own value (torch 1.13 cannot step such a group).
    """ + _COMMON_DOC

    _rule_name = "adagrad"
    _complex = "real"  # torch 1.13 steps torch.view_as_real of parameter, gradient and state (weight decay aside)
    _hp_spec = _spec("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value", "maximize",
                     "eps_placement")
    _step_kind = "tensor"
    _required_slots = ("sum",)
    _eager_state = True

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, eps_placement="outside", capturable=False, differentiable=False,
                 fused=False, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("Adagrad", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                     fused=fused))
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                        eps_placement=eps_placement)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)
        c = self._c
        for i, group_index in enumerate(c.group_of):
            if self.param_groups[group_index]["initial_accumulator_value"] != initial_accumulator_value:
                t = c.slot_tensor(i, 0)  # a complex parameter's: complex(value, value), as torch's
                if isinstance(t, QuantizedState):  # int8 state: quantized as a step stores it
                    c.slot_write(i, 0, torch.full(c.shapes[i], float(initial_accumulator_value)))
                else:
                    (torch.view_as_real(t) if t.is_complex() else t).fill_(float(initial_accumulator_value))


class RMSprop(_Optimizer):
    __doc__ = """RMSProp, plain or centered, with optional momentum, as torch.optim.RMSprop.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-2).
        alpha (float, optional): smoothing constant, in [0, 1] (default: 0.99).
        eps (float, optional): term added to the denominator; must be >= 0 (default: 1e-8).
        weight_decay (float, optional): L2 penalty (default: 0).
        momentum (float, optional): momentum factor (default: 0).
        centered (bool, optional): normalise by the estimated variance (default: False).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional): maximize the objective (default: False).
        differentiable (bool, optional): must be False.
        eps_placement (str, optional, optim extra): 'outside' for torch's
            sqrt(v) + eps (default), 'inside' for sqrt(v + eps), the seeds' and
            TensorFlow's RMSProp.

    state[p]['step'] is a Python int, as in torch 1.13's RMSprop.
    """ + _COMMON_DOC

    _rule_name = "rmsprop"
    _complex = "real"  # torch 1.13 steps torch.view_as_real of parameter, gradient and state (weight decay aside)
    _hp_spec = _spec("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize", "eps_placement")
    _step_kind = "int"
    _required_slots = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 foreach=None, maximize=False, differentiable=False, *, eps_placement="outside", capturable=False,
                 fused=False, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("RMSprop", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                     fused=fused))
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, eps_placement=eps_placement)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class Adadelta(_Optimizer):
    __doc__ = """AdaDelta, as torch.optim.Adadelta, with optional heavy-ball momentum.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): coefficient of the delta (default: 1.0).
        rho (float, optional): running-average coefficient, in [0, 1] (default: 0.9).
        eps (float, optional): term added inside the square roots; must be >= 0
            (default: 1e-6).
        weight_decay (float, optional): L2 penalty (default: 0).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional): maximize the objective (default: False).
        momentum (float, optional, optim extra): heavy-ball momentum on the
            update, b = momentum * b + delta, p -= lr * b (default: 0, torch's AdaDelta).
            Adds 'momentum_buffer' to the state.
        eps_placement (str, optional, optim extra): 'inside' for torch's and the
            seeds' sqrt(x + eps) (default), 'outside' for sqrt(x) + eps.

    state[p]['step'] is a Python int, as in torch 1.13's Adadelta.
    """ + _COMMON_DOC

    _rule_name = "adadelta"
    _complex = "rounding"  # real view, but weight decay and the update of p in complex arithmetic
    _hp_spec = _spec("lr", "rho", "eps", "weight_decay", "maximize", "momentum", "eps_placement")
    _step_kind = "int"
    _required_slots = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, maximize=False,
                 momentum=0, eps_placement="inside", capturable=False, differentiable=False, fused=False,
                 nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("Adadelta", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                      fused=fused))
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach,
                        momentum=momentum, eps_placement=eps_placement)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


_ADAM_EXTRAS = """
        bias_correction (bool, optional, optim extra): divide the moments by
            (1 - beta^t) (default: True, torch's Adam).
        eps_placement (str, optional, optim extra): 'outside' for torch's
            m / (sqrt(v) + eps) (default), 'inside' for m / sqrt(v + eps)."""


class Adam(_Optimizer):
    __doc__ = """Adam, as torch.optim.Adam.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-3).
        betas (Tuple[float, float], optional): coefficients of the running
            averages of the gradient and its square, each in [0, 1) (default: (0.9, 0.999)).
        eps (float, optional): term added to the denominator; must be >= 0 (default: 1e-8).
        weight_decay (float, optional): L2 penalty added to the gradient (default: 0).
        amsgrad (bool, optional): use the running maximum of v (default: False).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional): maximize the objective (default: False).
        capturable, differentiable, fused (bool, optional): must be False.""" + _ADAM_EXTRAS + """
        decoupled_weight_decay (bool, optional, optim extra): decay the
            parameter, p *= 1 - lr * weight_decay, instead of adding an L2 term to
            the gradient: AdamW (default: False).
    """ + _COMMON_DOC

    _rule_name = "adam"
    # torch 1.13 fails there (torch.maximum of the complex max_exp_avg_sq and the real view): the same error,
    # before anything changes
    _complex_refuse = {"amsgrad": "torch.optim.Adam 1.13 fails there too (RuntimeError: maximum not "
                                  "implemented for complex tensors)"}
    _complex = "real"  # torch 1.13 steps torch.view_as_real of parameter, gradient and state (weight decay aside)
    _hp_spec = _spec("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "bias_correction",
                     "eps_placement", "decoupled_weight_decay")
    _step_kind = "tensor"
    _required_slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=False,
                 bias_correction=True, eps_placement="outside", decoupled_weight_decay=False,
                 nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("Adam", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                  fused=fused))
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused, bias_correction=bias_correction, eps_placement=eps_placement,
                        decoupled_weight_decay=decoupled_weight_decay)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class AdamW(_Optimizer):
    __doc__ = """AdamW (Adam with decoupled weight decay), as torch.optim.AdamW.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-3).
        betas (Tuple[float, float], optional): coefficients of the running
            averages, each in [0, 1) (default: (0.9, 0.999)).
        eps (float, optional): term added to the denominator; must be >= 0 (default: 1e-8).
        weight_decay (float, optional): decoupled decay, p *= 1 - lr * weight_decay
            (default: 1e-2).
        amsgrad (bool, optional): use the running maximum of v (default: False).
        maximize (bool, optional): maximize the objective (default: False).
        foreach (bool, optional): accepted, no effect.
        capturable, differentiable, fused (bool, optional): must be False.""" + _ADAM_EXTRAS + """

    The decay is always decoupled (use Adam for an L2 term).
    """ + _COMMON_DOC

    _rule_name = "adamw"
    # torch 1.13 fails there (torch.maximum of the complex max_exp_avg_sq and the real view): the same error,
    # before anything changes
    _complex_refuse = {"amsgrad": "torch.optim.AdamW 1.13 fails there too (RuntimeError: maximum not "
                                  "implemented for complex tensors)"}
    _complex = "real"  # torch 1.13 steps torch.view_as_real of parameter, gradient and state (weight decay aside)
    _hp_spec = _spec("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "bias_correction",
                     "eps_placement")
    _fixed = {"decoupled_weight_decay": 1}
    _step_kind = "tensor"
    _required_slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=False,
                 bias_correction=True, eps_placement="outside", nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("AdamW", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                   fused=fused))
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, foreach=foreach,
                        maximize=maximize, capturable=capturable, bias_correction=bias_correction,
                        eps_placement=eps_placement)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class RAdam(_Optimizer):
    __doc__ = """Rectified Adam, as torch.optim.RAdam.

    Follows torch 1.13's default (single-tensor) RAdam, which adds eps to sqrt(v)
    (torch 1.13's foreach=True path drops eps; torch 2.x adds it).

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-3).
        betas (Tuple[float, float], optional): coefficients of the running
            averages, each in [0, 1) (default: (0.9, 0.999)).
        eps (float, optional): term added to the denominator; must be >= 0 (default: 1e-8).
        weight_decay (float, optional): weight decay, an L2 term unless decoupled (default: 0).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional, optim extra): maximize the objective (default: False).
        decoupled_weight_decay (bool, optional, optim extra): p *= 1 - lr * weight_decay
            instead of an L2 term, as torch 2.x's RAdam(decoupled_weight_decay=True)
            (default: False).
        eps_placement (str, optional, optim extra): 'outside' (default, torch) or 'inside'.
    """ + _COMMON_DOC

    _rule_name = "radam"
    # torch 1.13 computes on the complex values themselves (grad * grad the complex square, its square
    # root and the division complex): so does liboptim (OPTIM_PARAM_COMPLEX), to rounding.
    _complex = "complex"
    _hp_spec = _spec("lr", "betas", "eps", "weight_decay", "maximize", "decoupled_weight_decay", "eps_placement")
    _step_kind = "tensor"
    _required_slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, decoupled_weight_decay=False, eps_placement="outside", capturable=False,
                 differentiable=False, fused=False, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("RAdam", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                   fused=fused))
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                        eps_placement=eps_placement)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class NAdam(_Optimizer):
    __doc__ = """NAdam (Adam with Nesterov momentum and a momentum schedule), as torch.optim.NAdam.

    Follows the formula of torch 1.13's foreach=True path, which is torch 2.x's:
    torch 1.13's default single-tensor path multiplies mu into the product of
    the next step twice (a bug fixed in torch 2.0), so its results differ.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 2e-3).
        betas (Tuple[float, float], optional): coefficients of the running
            averages, each in [0, 1) (default: (0.9, 0.999)).
        eps (float, optional): term added to the denominator; must be >= 0 (default: 1e-8).
        weight_decay (float, optional): weight decay, an L2 term unless decoupled (default: 0).
        momentum_decay (float, optional): momentum decay psi (default: 4e-3).
        foreach (bool, optional): accepted, no effect.
        maximize (bool, optional, optim extra): maximize the objective (default: False).
        decoupled_weight_decay (bool, optional, optim extra): p *= 1 - lr * weight_decay
            instead of an L2 term, as torch 2.x's NAdam(decoupled_weight_decay=True)
            (default: False).
        eps_placement (str, optional, optim extra): 'outside' (default, torch) or 'inside'.

    state[p] has 'step' (a 0-dim float32 tensor, as torch), 'mu_product', 'exp_avg'
    and 'exp_avg_sq'. liboptim rounds mu_product to float32 at every step, as
    torch's float32 tensor does, and state[p]['mu_product'] is a 0-dim float64
    tensor holding that float32 value exactly (torch's is float32);
    torch.optim.NAdam's load_state_dict casts it to the parameters' dtype.
    The steps are torch 1.13's multi-tensor (foreach=True) formula, bit for
    bit on float32 (docs/FIDELITY.md): 1.13's default single-tensor path
    multiplies mu into the next product twice, a bug fixed in torch 2.0.
    """ + _COMMON_DOC

    _rule_name = "nadam"
    # torch 1.13 computes on the complex values themselves (grad * grad the complex square, its square
    # root and the divisions complex): so does liboptim (OPTIM_PARAM_COMPLEX), to rounding, following
    # torch's multi-tensor form as for real parameters.
    _complex = "complex"
    _hp_spec = _spec("lr", "betas", "eps", "weight_decay", "momentum_decay", "maximize", "decoupled_weight_decay",
                     "eps_placement")
    _step_kind = "tensor"
    _required_slots = ("exp_avg", "exp_avg_sq")
    _scalar_keys = ("mu_product",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 foreach=None, *, maximize=False, decoupled_weight_decay=False, eps_placement="outside",
                 capturable=False, differentiable=False, fused=False, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("NAdam", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                   fused=fused))
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        foreach=foreach, maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                        eps_placement=eps_placement)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)


class AdaBound(_Optimizer):
    __doc__ = """AdaBound / AMSBound (Luo et al. 2019), as the authors' adabound.AdaBound.

    Adam whose per-element step size is clipped to [lower, upper], bounds that
    converge to final_lr: lower = fl (1 - 1 / (gamma t + 1)), upper =
    fl (1 + 1 / (gamma t)), with fl = final_lr * lr / base_lr, so that an lr
    schedule moves the bounds too. base_lr is each group's lr when the group
    was added. The reference keeps it only in the attribute base_lrs, which
    state_dict does not save; here each group also holds it under the key
    'base_lr' (base_lrs reads and writes those), so a saved and reloaded run
    keeps its bounds. Loading the reference's state_dict (no 'base_lr') keeps
    the current groups' base_lr, as the reference does.

    Args:
        params (iterable): parameters to optimize or dicts defining parameter groups.
        lr (float, optional): Adam learning rate (default: 1e-3).
        betas (Tuple[float, float], optional): coefficients of the running
            averages, each in [0, 1) (default: (0.9, 0.999)).
        final_lr (float, optional): final (SGD) learning rate (default: 0.1).
        gamma (float, optional): convergence speed of the bounds, in [0, 1) (default: 1e-3).
        eps (float, optional): term added to the denominator; must be >= 0 (default: 1e-8).
        weight_decay (float, optional): L2 penalty (default: 0).
        amsbound (bool, optional): use the running maximum of v: AMSBound (default: False).
        maximize (bool, optional, optim extra): maximize the objective (default: False).""" + _ADAM_EXTRAS + """
        foreach (bool, optional): accepted, no effect.

    state[p] has 'step' (a Python int, as the reference), 'exp_avg',
    'exp_avg_sq' and, with amsbound, 'max_exp_avg_sq'.
    """ + _COMMON_DOC

    _rule_name = "adabound"
    _complex_reason = "AdaBound is defined for real parameters (torch.optim has no AdaBound to follow)"
    _hp_spec = _spec("lr", "betas", "final_lr", "gamma", "eps", "weight_decay", "amsbound", "maximize",
                     "bias_correction", "eps_placement") + (("base_lr", "real", ("initial_lr",)),)
    _step_kind = "int"
    _required_slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0,
                 amsbound=False, *, maximize=False, bias_correction=True, eps_placement="outside", foreach=None,
                 capturable=False, differentiable=False, fused=False, nonfinite="propagate", clip_grad_norm=None,
                 clip_grad_value=None, master_weights=False, stochastic_rounding=False,
                 loss_scale=None, state_dtype=None):
        _check_flags("AdaBound", dict(foreach=foreach, differentiable=differentiable, capturable=capturable,
                                      fused=fused))
        defaults = dict(lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay,
                        amsbound=amsbound, maximize=maximize, bias_correction=bias_correction,
                        eps_placement=eps_placement)
        defaults.update(nonfinite=nonfinite, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        defaults.update(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        loss_scale=loss_scale, state_dtype=state_dtype)  # taken out by _Optimizer (_precision)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        if isinstance(param_group, dict) and "base_lr" not in param_group:
            param_group["base_lr"] = param_group.get("lr", self.defaults["lr"])
        super().add_param_group(param_group)

    def _fill_loaded_group(self, gi, group):
        group.setdefault("base_lr", self.param_groups[gi]["base_lr"])

    @property
    def base_lrs(self):
        """Each group's base_lr (the reference's attribute)."""
        return [group["base_lr"] for group in self.param_groups]

    @base_lrs.setter
    def base_lrs(self, values):
        values = list(values)
        if len(values) != len(self.param_groups):
            raise ValueError("AdaBound: base_lrs needs %d values (one per group), got %d"
                             % (len(self.param_groups), len(values)))
        for group, value in zip(self.param_groups, values):
            group["base_lr"] = value
