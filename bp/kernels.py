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
LOSSES = tuple(bpcore.LOSSES)
# The output activation tau that each loss accepts. The cross-entropies are fused with their
# natural output (delta = f_out - y); mean squared error goes through any tau's Jacobian.
LOSS_OUTPUTS = {
    "mse": ACTIVATIONS,
    "binary_cross_entropy": ("sigmoid",),
    "cross_entropy": ("softmax",),
}


def _same_buffer(a, b):
    """True if a and b are views of exactly the same memory (same start, shape and strides)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)


def _n_threads(n_threads):
    if n_threads is None:
        return _threads.get_num_threads()
    return _threads.effective_n_threads(n_threads)


def _activation_code(name, alpha):
    check_choice("activation", name, ACTIVATIONS)
    alpha = check_number("alpha", alpha, low=0.0)
    return bpcore.ACTIVATIONS[name], alpha


def check_loss_pair(loss, tau):
    """Raise a ValueError unless the loss and the output activation tau make a valid pair.

    Parameters
    ----------
    loss : str
        One of ``LOSSES``.
    tau : str
        The output activation, one of ``LOSS_OUTPUTS[loss]``.

    Raises
    ------
    ValueError
        For an unknown name or a pair the loss does not accept.

    Examples
    --------
    >>> import bp
    >>> bp.kernels.check_loss_pair("cross_entropy", "softmax")
    >>> bp.kernels.check_loss_pair("cross_entropy", "sigmoid")
    Traceback (most recent call last):
    ...
    ValueError: loss 'cross_entropy' needs an output activation in ('softmax'). Received: output activation 'sigmoid'
    """
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
        return 1.0 / n if loss == "cross_entropy" else 1.0 / (n * m)
    return check_number("scale", scale)


def dense_forward(z_out_prev, W, b, activation, alpha=0.01, *, z_in=None, z_out=None,
                  n_threads=None):
    """Run one layer's forward pass: ``z_in = z_out_prev @ W + b``, ``z_out = sigma(z_in)``.

    Parameters
    ----------
    z_out_prev : numpy.ndarray of shape (n_samples, n_in)
        The layer's input (x for the first layer).
    W : numpy.ndarray of shape (n_in, n_out)
        The weights; their dtype (float32 or float64) is the computation's.
    b : numpy.ndarray of shape (n_out,) or None
        The bias.
    activation : str
        sigma, one of ``ACTIVATIONS``.
    alpha : float, default=0.01
        leaky_relu's negative slope (>= 0).
    z_in : numpy.ndarray of shape (n_samples, n_out), optional
        Written in place when given.
    z_out : numpy.ndarray of shape (n_samples, n_out), optional
        Written in place when given (may be the same array as z_in).
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    z_in : numpy.ndarray of shape (n_samples, n_out)
        The pre-activation.
    z_out : numpy.ndarray of shape (n_samples, n_out)
        The output.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> x = np.array([[1.0, -1.0]])
    >>> W = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> z_in, z_out = bp.kernels.dense_forward(x, W, np.zeros(2), "relu")
    >>> z_in, z_out
    (array([[-2., -2.]]), array([[0., 0.]]))
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
    """Compute the output layer's error signal ``delta[O] = dL/df_in``.

    Fused to ``w_i * scale * (f_out - y)`` for softmax + cross_entropy and sigmoid +
    binary_cross_entropy; ``(2 w_i scale (f_out - y)) * tau'(f_in)`` for mse.

    Parameters
    ----------
    f_in : numpy.ndarray of shape (n_samples, n_outputs)
        The output layer's pre-activation.
    f_out : numpy.ndarray of shape (n_samples, n_outputs)
        The prediction ``tau(f_in)``.
    y : numpy.ndarray of shape (n_samples, n_outputs)
        The targets (one-hot or soft targets for cross_entropy).
    loss : str
        One of ``LOSSES``.
    tau : str
        The output activation (a valid pair with the loss: see ``check_loss_pair``).
    alpha : float, default=0.01
        leaky_relu's negative slope (>= 0).
    sample_weight : numpy.ndarray of shape (n_samples,), optional
        Non-negative weights w_i of the rows; default 1.
    scale : float, optional
        The reduction; default PyTorch's mean (1/N for cross_entropy, 1/(N m) otherwise).
    out : numpy.ndarray of shape (n_samples, n_outputs), optional
        Written in place when given.
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    numpy.ndarray of shape (n_samples, n_outputs)
        delta[O].

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> f_in = np.zeros((2, 2))
    >>> f_out = np.full((2, 2), 0.5)                    # softmax(f_in)
    >>> y = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> bp.kernels.output_delta(f_in, f_out, y, "cross_entropy", "softmax")    # (f_out - y) / N
    array([[-0.25,  0.25],
           [ 0.25, -0.25]])
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
    """Compute a hidden layer's error signal ``delta = (delta_next @ W_next.T) * sigma'(z_in)``.

    Parameters
    ----------
    delta_next : numpy.ndarray of shape (n_samples, n_next)
        The next layer's error signal.
    W_next : numpy.ndarray of shape (n_units, n_next)
        The next layer's weights.
    z_in : numpy.ndarray of shape (n_samples, n_units)
        This layer's cached pre-activation.
    z_out : numpy.ndarray of shape (n_samples, n_units)
        This layer's cached output (sigmoid and tanh take sigma' from it).
    activation : str
        This layer's sigma, one of ``ACTIVATIONS`` (not softmax).
    alpha : float, default=0.01
        leaky_relu's negative slope (>= 0).
    out : numpy.ndarray of shape (n_samples, n_units), optional
        Written in place when given.
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    numpy.ndarray of shape (n_samples, n_units)
        delta.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> delta_next = np.array([[1.0]])
    >>> W_next = np.array([[2.0], [3.0]])
    >>> z_in = np.array([[1.0, -1.0]])
    >>> bp.kernels.hidden_delta(delta_next, W_next, z_in, np.maximum(z_in, 0), "relu")
    array([[2., 0.]])
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
    """Compute ``grad_W = beta grad_W + z_out_prev.T @ delta`` and ``grad_b = beta grad_b + sum_i delta_i``.

    ``beta = 0`` overwrites; ``beta = 1`` accumulates micro-batches into the given buffers.

    Parameters
    ----------
    z_out_prev : numpy.ndarray of shape (n_samples, n_in)
        The layer's input.
    delta : numpy.ndarray of shape (n_samples, n_out)
        The layer's error signal.
    beta : float, default=0.0
        The factor of the buffers' previous contents (needs the buffers when nonzero).
    grad_W : numpy.ndarray of shape (n_in, n_out), optional
        Written in place when given.
    grad_b : numpy.ndarray of shape (n_out,), optional
        Written in place when given.
    use_bias : bool, default=True
        Whether to compute grad_b.
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    grad_W : numpy.ndarray of shape (n_in, n_out)
        dL/dW.
    grad_b : numpy.ndarray of shape (n_out,) or None
        dL/db (None when ``use_bias`` is False).

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> delta = np.array([[1.0], [-1.0]])
    >>> grad_W, grad_b = bp.kernels.gradients(x, delta)
    >>> grad_W.ravel(), grad_b
    (array([-2., -2.]), array([0.]))
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
    """Compute the loss ``L = scale * sum_i w_i l_i`` (``bp.losses`` has each l_i).

    l_i is summed over the outputs; the default scale (1/N for cross_entropy, 1/(N m) otherwise)
    makes L PyTorch's mean. f_in is read by the cross-entropies (computed from the logits), f_out
    by mse.

    Parameters
    ----------
    f_in : numpy.ndarray of shape (n_samples, n_outputs)
        The output layer's pre-activation.
    f_out : numpy.ndarray of shape (n_samples, n_outputs)
        The prediction.
    y : numpy.ndarray of shape (n_samples, n_outputs)
        The targets.
    loss : str
        One of ``LOSSES``.
    sample_weight : numpy.ndarray of shape (n_samples,), optional
        Non-negative weights w_i of the rows; default 1.
    scale : float, optional
        The reduction; default PyTorch's mean (1/N for cross_entropy, 1/(N m) otherwise).
    per_sample : numpy.ndarray of shape (n_samples,), optional
        Receives the l_i when given.
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    float
        L.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> f = np.array([[0.5], [1.5]])
    >>> bp.kernels.loss_value(f, f, np.ones((2, 1)), "mse")             # mean of 0.25 and 0.25
    0.25
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
    """Apply one SGD step in place (torch.optim.SGD's rule) and return param.

    ``g = grad_scale * grad + weight_decay * param``; with momentum ``v = momentum v + g`` and
    ``param -= learning_rate v`` (Nesterov: ``param -= learning_rate (g + momentum v)``), else
    ``param -= learning_rate g``.

    Parameters
    ----------
    param : numpy.ndarray
        The parameters, updated in place (float32 or float64, writeable, C-contiguous).
    grad : numpy.ndarray
        Their gradient, of param's shape and dtype.
    velocity : numpy.ndarray, optional
        The momentum buffer, of param's shape (needed when momentum != 0), updated in place.
    learning_rate : float, default=0.01
        The step size (> 0).
    momentum : float, default=0.0
        The momentum (>= 0).
    nesterov : bool, default=False
        Nesterov momentum (needs momentum > 0).
    weight_decay : float, default=0.0
        An L2 term added to the gradient.
    grad_scale : float, default=1.0
        A factor on the gradient (global-norm clipping).
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    numpy.ndarray
        param.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> param, velocity = np.ones(2), np.zeros(2)
    >>> bp.kernels.sgd_update(param, np.array([1.0, 2.0]), velocity, learning_rate=0.1, momentum=0.9)
    array([0.9, 0.8])
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
    """Apply one Adam (``decoupled=False``) or AdamW (``decoupled=True``) step in place.

    Parameters
    ----------
    param : numpy.ndarray
        The parameters, updated in place (float32 or float64, writeable, C-contiguous).
    grad : numpy.ndarray
        Their gradient, of param's shape and dtype.
    m : numpy.ndarray
        The first-moment buffer, updated in place.
    v : numpy.ndarray
        The second-moment buffer, updated in place.
    step : int
        The step number, counted from 1 (for the bias corrections).
    learning_rate : float, default=1e-3
        The step size (> 0).
    beta1 : float, default=0.9
        The decay of m, in [0, 1).
    beta2 : float, default=0.999
        The decay of v, in [0, 1).
    eps : float, default=1e-8
        Added to the denominator (> 0).
    weight_decay : float, default=0.0
        An L2 term in the gradient (Adam) or the decoupled decay (AdamW).
    decoupled : bool, default=False
        AdamW's decoupled weight decay.
    grad_scale : float, default=1.0
        A factor on the gradient (global-norm clipping).
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    numpy.ndarray
        param.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> param, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    >>> bp.kernels.adam_update(param, np.array([1.0, -1.0]), m, v, step=1, learning_rate=0.1)
    array([-0.1,  0.1])
    """
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


def sum_of_squares(x, *, n_threads=None):
    """Compute ``sum(x**2)`` in double precision, the same bits for any thread count.

    Parameters
    ----------
    x : numpy.ndarray
        Any float array (read flat).
    n_threads : int, optional
        Threads, as in ``bp.effective_n_threads``; default bp's current setting.

    Returns
    -------
    float
        The sum.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> bp.kernels.sum_of_squares(np.array([3.0, 4.0]))
    25.0
    """
    x = check_kernel_input("x", np.ravel(x), ndim=1)
    return _param_update.sum_of_squares(x, _n_threads(n_threads))


__all__ = [
    "ACTIVATIONS", "LOSSES", "LOSS_OUTPUTS", "check_loss_pair", "dense_forward", "output_delta",
    "hidden_delta", "gradients", "loss_value", "sgd_update", "adam_update", "sum_of_squares",
]
