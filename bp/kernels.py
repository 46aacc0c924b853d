"""The bpcore kernels with their inputs checked: the public, validated face of the three passes.

Each function has a twin of the same name and signature in :mod:`bp._reference` (plain NumPy),
and the tests hold the two to the same results. Every argument is checked before any kernel runs
(dtype, shape, finiteness, the output buffers), so a rejected call writes nothing.

Inputs may be Fortran-ordered, strided or read-only: they are read as they are where the kernel
can, and copied to C order where it cannot. Outputs (``out=``, ``grad_W=`` ...) are optional; when
given they must be C-contiguous, writeable and of the inputs' dtype, and must not overlap an input
(the kernels read the inputs while they write; only z_in and z_out of dense_forward may be one and
the same buffer). They are written in place.
``n_threads`` follows :func:`bp.effective_n_threads` (None: bp's current setting).
"""

import numpy as np

import bpcore
from bpcore import _dense_forward, _error_signal, _gradients, _loss, _param_update

from . import _threads
from ._validation import (
    check_choice,
    check_kernel_input,
    check_no_overlap,
    check_number,
    check_output,
    check_shape,
)

ACTIVATIONS = tuple(bpcore.ACTIVATIONS)
# Other names for the same activation (Keras' "linear" and "swish"); None means identity too.
ACTIVATION_ALIASES = {"linear": "identity", "swish": "silu"}
LOSSES = tuple(bpcore.LOSSES)
# The output activation tau that each loss accepts. The cross-entropies are fused with their
# natural output (delta = f_out - y); mean squared error goes through any tau's Jacobian.
# The identity output with cross-entropy is Keras' from_logits=True: the loss is computed from
# the logits (as it always is) and delta[O] = softmax(f_in) - y. (bpcore also has sigmoid(f_in) - y
# for binary cross-entropy from logits, but accuracy would then be cut at 0.5 on a logit: the pair
# stays refused until accuracy knows the output activation.) poisson wants the log link
# (scikit-learn's MLPRegressor(loss="poisson") pairs it with exp).
LOSS_OUTPUTS = {
    "mse": ACTIVATIONS,
    "binary_cross_entropy": ("sigmoid",),
    "cross_entropy": ("softmax", "identity"),
    "mae": ACTIVATIONS,
    "huber": ACTIVATIONS,
    "poisson": ("exponential",),
}


def _same_buffer(a, b):
    """True if a and b are views of exactly the same memory (same start, shape and strides)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)


def _n_threads(n_threads):
    if n_threads is None:
        return _threads.get_num_threads()
    return _threads.effective_n_threads(n_threads)


def activation_name(activation):
    """The canonical name of `activation`: a name of ACTIVATIONS, an alias, or None (identity).
    ValueError listing the valid names for any other string, TypeError for a non-string."""
    if activation is None:
        return "identity"
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a string or None. Received: activation={activation!r}")
    check_choice("activation", activation, ACTIVATIONS + tuple(ACTIVATION_ALIASES))
    return ACTIVATION_ALIASES.get(activation, activation)


def _activation_code(name, alpha):
    name = activation_name(name)
    alpha = check_number("alpha", alpha, low=0.0)
    return bpcore.ACTIVATIONS[name], alpha


def check_loss_pair(loss, tau):
    """ValueError unless the loss and the output activation tau make a valid pair."""
    check_choice("loss", loss, LOSSES)
    check_choice("output activation", tau, ACTIVATIONS)
    if tau not in LOSS_OUTPUTS[loss]:
        allowed = ", ".join(repr(a) for a in LOSS_OUTPUTS[loss])
        raise ValueError(
            f"loss {loss!r} needs an output activation in ({allowed}). Received: output "
            f"activation {tau!r}"
        )


def _sample_weight(sample_weight, n, dtype):
    if sample_weight is None:
        return None
    w = check_kernel_input("sample_weight", sample_weight, dtype=dtype, ndim=1, shape=(n,))
    return w


def _scale(scale, loss, n, m):
    if scale is None:
        if n * m == 0:
            return 1.0  # an empty batch: nothing to average (and no division by zero)
        return 1.0 / n if loss == "cross_entropy" else 1.0 / (n * m)  # bp.losses.default_scale
    return check_number("scale", scale)


def dense_forward(z_out_prev, W, b, activation, alpha=0.01, *, z_in=None, z_out=None,
                  n_threads=None):
    """One layer's forward pass: ``z_in = z_out_prev @ W + b``, ``z_out = sigma(z_in)``.

    Parameters
    ----------
    z_out_prev : array (n_samples, n_in)   the layer's input (x for the first layer)
    W : array (n_in, n_out)
    b : array (n_out,) or None
    activation : str                       one of ``bp.kernels.ACTIVATIONS``
    alpha : float                          leaky_relu's negative slope (>= 0)
    z_in, z_out : arrays (n_samples, n_out), optional, written in place (may be the same array)

    Returns
    -------
    (z_in, z_out)
    """
    code, alpha = _activation_code(activation, alpha)
    W = check_kernel_input("W", W)
    dtype = W.dtype
    n_in, n_out = W.shape
    x = check_kernel_input("z_out_prev", z_out_prev, dtype=dtype, shape=(None, n_in))
    if b is not None:
        b = check_kernel_input("b", b, dtype=dtype, ndim=1, shape=(n_out,))
    n = x.shape[0]
    z_in = np.empty((n, n_out), dtype) if z_in is None else check_output("z_in", z_in, dtype, (n, n_out))
    z_out = np.empty((n, n_out), dtype) if z_out is None else check_output("z_out", z_out, dtype, (n, n_out))
    for name, buf in (("z_in", z_in), ("z_out", z_out)):
        check_no_overlap(name, buf, z_out_prev=x, W=W, b=b)
    if z_in is not z_out and not _same_buffer(z_in, z_out):
        check_no_overlap("z_out", z_out, z_in=z_in)
    _dense_forward.dense_forward(x, W, b, z_in, z_out, code, alpha, _n_threads(n_threads))
    return z_in, z_out


def output_delta(f_in, f_out, y, loss, tau, alpha=0.01, sample_weight=None, scale=None, *,
                 out=None, n_threads=None):
    """The output layer's error signal ``delta[O] = dL/df_in``.

    Fused to ``w_i * scale * (f_out - y)`` for softmax + cross_entropy and sigmoid +
    binary_cross_entropy; ``(2 w_i scale (f_out - y)) * tau'(f_in)`` for mse.

    Parameters
    ----------
    f_in, f_out, y : arrays (n_samples, n_outputs)   (y one-hot or soft targets for cross_entropy)
    loss : str, tau : str                            a valid pair (see ``check_loss_pair``)
    sample_weight : array (n_samples,), optional
    scale : float, optional                          the reduction; default PyTorch's mean
    out : array (n_samples, n_outputs), optional
    """
    check_loss_pair(loss, tau)
    code, alpha = _activation_code(tau, alpha)
    f_out = check_kernel_input("f_out", f_out)
    dtype, shape = f_out.dtype, f_out.shape
    f_in = check_kernel_input("f_in", f_in, dtype=dtype, shape=shape)
    y = check_kernel_input("y", y, dtype=dtype, shape=shape)
    n, m = shape
    w = _sample_weight(sample_weight, n, dtype)
    scale = _scale(scale, loss, n, m)
    out = np.empty(shape, dtype) if out is None else check_output("out", out, dtype, shape)
    check_no_overlap("out", out, f_in=f_in, f_out=f_out, y=y, sample_weight=w)
    _error_signal.output_delta(f_in, f_out, y, w, bpcore.LOSSES[loss], code, alpha, scale, out,
                               _n_threads(n_threads))
    return out


def hidden_delta(delta_next, W_next, z_in, z_out, activation, alpha=0.01, *, out=None,
                 n_threads=None):
    """A hidden layer's error signal ``delta = (delta_next @ W_next.T) * sigma'(z_in)``.

    Parameters
    ----------
    delta_next : array (n_samples, n_next)     the next layer's cached delta
    W_next : array (n_units, n_next)           the next layer's weights
    z_in, z_out : arrays (n_samples, n_units)  this layer's cached forward values
    """
    code, alpha = _activation_code(activation, alpha)
    W_next = check_kernel_input("W_next", W_next)
    dtype = W_next.dtype
    m, m_next = W_next.shape
    delta_next = check_kernel_input("delta_next", delta_next, dtype=dtype, shape=(None, m_next))
    n = delta_next.shape[0]
    z_out = check_kernel_input("z_out", z_out, dtype=dtype, shape=(n, m))
    z_in = check_kernel_input("z_in", z_in, dtype=dtype, shape=(n, m))
    out = np.empty((n, m), dtype) if out is None else check_output("out", out, dtype, (n, m))
    check_no_overlap("out", out, delta_next=delta_next, W_next=W_next, z_in=z_in, z_out=z_out)
    _error_signal.hidden_delta(delta_next, W_next, z_in, z_out, code, alpha, out,
                               _n_threads(n_threads))
    return out


def gradients(z_out_prev, delta, beta=0.0, grad_W=None, grad_b=None, use_bias=True, *,
              n_threads=None):
    """``grad_W = beta grad_W + z_out_prev.T @ delta`` and ``grad_b = beta grad_b + sum_i delta_i``.

    beta = 0 overwrites; beta = 1 accumulates micro-batches into the given buffers.
    Returns (grad_W, grad_b) (grad_b is None when use_bias is False).
    """
    delta = check_kernel_input("delta", delta)
    dtype = delta.dtype
    n, n_out = delta.shape
    x = check_kernel_input("z_out_prev", z_out_prev, dtype=dtype, shape=(n, None))
    n_in = x.shape[1]
    beta = check_number("beta", beta)
    if beta != 0 and grad_W is None:
        raise ValueError(f"beta={beta} accumulates into grad_W, so grad_W must be given. "
                         "Received: grad_W=None")
    if grad_W is None:
        grad_W = np.empty((n_in, n_out), dtype)
    else:
        check_output("grad_W", grad_W, dtype, (n_in, n_out))
    if use_bias:
        if grad_b is None:
            if beta != 0:
                raise ValueError(f"beta={beta} accumulates into grad_b, so grad_b must be given. "
                                 "Received: grad_b=None")
            grad_b = np.empty(n_out, dtype)
        else:
            check_output("grad_b", grad_b, dtype, (n_out,))
    else:
        grad_b = None
    check_no_overlap("grad_W", grad_W, z_out_prev=x, delta=delta, grad_b=grad_b)
    if grad_b is not None:
        check_no_overlap("grad_b", grad_b, z_out_prev=x, delta=delta)
    if beta != 0:
        # accumulating into a non-finite buffer would only spread it: refuse it now
        for name, arr in [("grad_W", grad_W)] + ([("grad_b", grad_b)] if use_bias else []):
            check_kernel_input(name, arr, dtype=dtype, ndim=arr.ndim)
    _gradients.gradients(x, delta, beta, grad_W, grad_b, _n_threads(n_threads))
    return grad_W, grad_b


def loss_value(f_in, f_out, y, loss, sample_weight=None, scale=None, *, per_sample=None,
               n_threads=None):
    """``L = scale * sum_i w_i l_i`` (see :mod:`bp.losses` for each l_i); returns a float.

    l_i is summed over the outputs; the default scale (1/N for cross_entropy, 1/(N m) else)
    makes L PyTorch's mean. f_in is read by the cross-entropies (computed from the logits),
    f_out by mse. per_sample, if given, receives the l_i.
    """
    check_choice("loss", loss, LOSSES)
    f_out = check_kernel_input("f_out", f_out)
    dtype, shape = f_out.dtype, f_out.shape
    f_in = check_kernel_input("f_in", f_in, dtype=dtype, shape=shape)
    y = check_kernel_input("y", y, dtype=dtype, shape=shape)
    n, m = shape
    w = _sample_weight(sample_weight, n, dtype)
    scale = _scale(scale, loss, n, m)
    if per_sample is None:
        per_sample = np.empty(n, dtype)
    else:
        check_output("per_sample", per_sample, dtype, (n,))
    check_no_overlap("per_sample", per_sample, f_in=f_in, f_out=f_out, y=y, sample_weight=w)
    return _loss.loss_value(f_in, f_out, y, w, bpcore.LOSSES[loss], scale, per_sample,
                            _n_threads(n_threads))


def _param_buffer(param):
    if not isinstance(param, np.ndarray) or param.dtype not in (np.float32, np.float64):
        got = param.dtype if isinstance(param, np.ndarray) else type(param).__name__
        raise TypeError(f"param must be a float32 or float64 numpy.ndarray (updated in place). "
                        f"Received: {got}")
    return _flat_state("param", param, param.dtype, param.size)


def _flat_state(name, arr, dtype, n):
    check_output(name, arr, dtype, arr.shape)
    if arr.size != n:
        raise ValueError(f"{name} must have {n} elements like param. Received: {name} with shape {arr.shape}")
    return arr.reshape(-1)


def sgd_update(param, grad, velocity=None, learning_rate=0.01, momentum=0.0, nesterov=False,
               weight_decay=0.0, grad_scale=1.0, *, n_threads=None):
    """One SGD step in place (torch.optim.SGD's rule, see bpcore/_param_update.pyx); returns param.

    param, grad and velocity have one shape; velocity is needed when momentum != 0.
    """
    p = _param_buffer(param)
    g = check_kernel_input("grad", grad, dtype=param.dtype, ndim=param.ndim, shape=param.shape).reshape(-1)
    lr = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    mu = check_number("momentum", momentum, low=0.0)
    wd = check_number("weight_decay", weight_decay, low=0.0)
    gs = check_number("grad_scale", grad_scale)
    if nesterov and mu == 0:
        raise ValueError("nesterov=True needs a momentum > 0. Received: momentum=0")
    v = None
    if mu != 0:
        if velocity is None:
            raise ValueError(f"momentum={mu} needs a velocity buffer. Received: velocity=None")
        v = _flat_state("velocity", velocity, param.dtype, param.size)
        check_no_overlap("velocity", v, param=p)
    _param_update.sgd_update(g, lr, mu, bool(nesterov), wd, gs, p, v, _n_threads(n_threads))
    return param


def adam_update(param, grad, m, v, step, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, decoupled=False, grad_scale=1.0, *, n_threads=None):
    """One Adam (decoupled=False) or AdamW (decoupled=True) step in place; step counts from 1."""
    p = _param_buffer(param)
    g = check_kernel_input("grad", grad, dtype=param.dtype, ndim=param.ndim, shape=param.shape).reshape(-1)
    mm = _flat_state("m", m, param.dtype, param.size)
    vv = _flat_state("v", v, param.dtype, param.size)
    check_no_overlap("m", mm, param=p, v=vv)
    check_no_overlap("v", vv, param=p)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an integer >= 1. Received: step={step!r}")
    lr = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    b1 = check_number("beta1", beta1, low=0.0, high=1.0, high_open=True)
    b2 = check_number("beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_number("eps", eps, low=0.0, low_open=True)
    wd = check_number("weight_decay", weight_decay, low=0.0)
    gs = check_number("grad_scale", grad_scale)
    _param_update.adam_update(g, lr, b1, b2, eps, wd, bool(decoupled), int(step), gs, p, mm, vv,
                              _n_threads(n_threads))
    return param


def _states(param, **buffers):
    """The optimizer state buffers (None stays None) as flat views, each checked against param
    and against every other buffer for overlap."""
    flat = {name: None if buf is None else _flat_state(name, buf, param.dtype, param.size)
            for name, buf in buffers.items()}
    given = {name: buf for name, buf in flat.items() if buf is not None}
    for name, buf in given.items():
        check_no_overlap(name, buf, param=param.reshape(-1),
                         **{k: b for k, b in given.items() if k != name})
    return flat


def rmsprop_update(param, grad, square_avg, grad_avg=None, momentum_buffer=None,
                   learning_rate=0.01, rho=0.99, epsilon=1e-8, weight_decay=0.0, momentum=0.0,
                   grad_scale=1.0, *, n_threads=None):
    """One RMSprop step in place (torch.optim.RMSprop's rule, see bpcore/_param_update.pyx);
    returns param. Centered when grad_avg is given; momentum needs momentum_buffer."""
    p = _param_buffer(param)
    g = check_kernel_input("grad", grad, dtype=param.dtype, ndim=param.ndim, shape=param.shape).reshape(-1)
    lr = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    rho = check_number("rho", rho, low=0.0, high=1.0, high_open=True)
    eps = check_number("epsilon", epsilon, low=0.0, low_open=True)
    wd = check_number("weight_decay", weight_decay, low=0.0)
    mu = check_number("momentum", momentum, low=0.0)
    gs = check_number("grad_scale", grad_scale)
    if mu != 0 and momentum_buffer is None:
        raise ValueError(f"momentum={mu} needs a momentum_buffer. Received: momentum_buffer=None")
    st = _states(param, square_avg=square_avg, grad_avg=grad_avg,
                 momentum_buffer=momentum_buffer if mu != 0 else None)
    _param_update.rmsprop_update(g, lr, rho, eps, wd, mu, gs, p, st["square_avg"],
                                 st["grad_avg"], st["momentum_buffer"], _n_threads(n_threads))
    return param


def adagrad_update(param, grad, accumulator, learning_rate=0.01, epsilon=1e-10, weight_decay=0.0,
                   grad_scale=1.0, *, n_threads=None):
    """One Adagrad step in place (torch.optim.Adagrad's rule, lr_decay 0); returns param."""
    p = _param_buffer(param)
    g = check_kernel_input("grad", grad, dtype=param.dtype, ndim=param.ndim, shape=param.shape).reshape(-1)
    lr = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    eps = check_number("epsilon", epsilon, low=0.0, low_open=True)
    wd = check_number("weight_decay", weight_decay, low=0.0)
    gs = check_number("grad_scale", grad_scale)
    st = _states(param, accumulator=accumulator)
    _param_update.adagrad_update(g, lr, eps, wd, gs, p, st["accumulator"], _n_threads(n_threads))
    return param


def nadam_update(param, grad, m, v, step, mu_product, learning_rate=2e-3, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 grad_scale=1.0, *, n_threads=None):
    """One Nadam step in place (torch.optim.NAdam's rule); `step` counts from 1, mu_product is
    the product of the momentum schedule's mu_k over the steps before it. Returns the product
    through this step (pass it to the next call)."""
    p = _param_buffer(param)
    g = check_kernel_input("grad", grad, dtype=param.dtype, ndim=param.ndim, shape=param.shape).reshape(-1)
    st = _states(param, m=m, v=v)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an integer >= 1. Received: step={step!r}")
    mu_product = check_number("mu_product", mu_product, low=0.0, high=1.0)
    lr = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    b1 = check_number("beta_1", beta_1, low=0.0, high=1.0, high_open=True)
    b2 = check_number("beta_2", beta_2, low=0.0, high=1.0, high_open=True)
    eps = check_number("epsilon", epsilon, low=0.0, low_open=True)
    wd = check_number("weight_decay", weight_decay, low=0.0)
    psi = check_number("momentum_decay", momentum_decay, low=0.0)
    gs = check_number("grad_scale", grad_scale)
    mu, mu_next = nadam_mu(int(step), b1, psi), nadam_mu(int(step) + 1, b1, psi)
    mu_product = mu_product * mu
    c_grad = lr * (1 - mu) / (1 - mu_product)
    c_m = lr * mu_next / (1 - mu_product * mu_next)
    _param_update.nadam_update(g, b1, b2, eps, wd, c_grad, c_m, int(step), gs, p, st["m"],
                               st["v"], _n_threads(n_threads))
    return mu_product


def nadam_mu(step, beta_1=0.9, momentum_decay=4e-3):
    """Dozat's momentum schedule mu_t = beta_1 (1 - 0.96^(t psi) / 2) (torch.optim.NAdam)."""
    return beta_1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))


def sum_of_squares(x, *, n_threads=None):
    """sum(x**2) in double precision, the same bits for any thread count."""
    x = check_kernel_input("x", np.ravel(x), ndim=1)
    return _param_update.sum_of_squares(x, _n_threads(n_threads))


__all__ = [
    "ACTIVATIONS", "LOSSES", "LOSS_OUTPUTS", "check_loss_pair", "dense_forward", "output_delta",
    "hidden_delta", "gradients", "loss_value", "sgd_update", "adam_update", "rmsprop_update",
    "adagrad_update", "nadam_update", "nadam_mu", "sum_of_squares",
]
