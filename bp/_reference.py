"""The NumPy reference: the plainest possible backpropagation, the oracle for tests and benchmarks.

Each function here is the twin of one function in :mod:`bp.kernels` (same name, same signature,
same results to rounding); the tests run the same assertions on both. Like the kernels, the twins
write into the output buffers when they are given (``z_in=``, ``out=``, ``grad_W=`` ...) and return
them. Nothing here is clever: every line is the formula it implements.

Notation (the layer i maps z_out[i-1] to z_out[i]; the output layer's activation is tau):
    z_in[i]  = z_out[i-1] @ W[i] + b[i]        z_out[i] = sigma(z_in[i])
    delta[O] = dL/df_out * tau'(f_in)           (= f_out - y, scaled, for the fused pairs)
    delta[i] = (delta[i+1] @ W[i+1].T) * sigma'(z_in[i])
    grad_W[i] = z_out[i-1].T @ delta[i]         grad_b[i] = delta[i].sum(axis=0)
"""

import numpy as np
from scipy.special import erf

# ---- activations: sigma beside sigma' ------------------------------------------------------------


def sigma(activation, z, alpha=0.01):
    """z_out = sigma(z_in)."""
    if activation == "identity":
        return z.copy()
    if activation == "sigmoid":
        # 1 / (1 + e^-z) written so that e^-z cannot overflow
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    if activation == "tanh":
        return np.tanh(z)
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if activation == "gelu":
        return 0.5 * z * (1 + erf(z / np.sqrt(2)))
    if activation == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown activation {activation!r}")


def sigma_backward(activation, z_in, z_out, g, alpha=0.01):
    """J_sigma^T g: g * sigma'(z_in) elementwise, or the softmax Jacobian-vector product."""
    if activation == "identity":
        return g.copy()
    if activation == "sigmoid":
        return g * z_out * (1 - z_out)
    if activation == "tanh":
        return g * (1 - z_out**2)
    if activation == "relu":
        return g * (z_in > 0)
    if activation == "leaky_relu":
        return g * np.where(z_in > 0, 1, alpha)
    if activation == "gelu":
        phi = np.exp(-0.5 * z_in**2) / np.sqrt(2 * np.pi)
        return g * (0.5 * (1 + erf(z_in / np.sqrt(2))) + z_in * phi)
    if activation == "softmax":
        return z_out * (g - (g * z_out).sum(axis=1, keepdims=True))
    raise ValueError(f"unknown activation {activation!r}")


# ---- losses ----------------------------------------------------------------------------------------


def default_scale(loss, n_samples, n_outputs):
    """PyTorch's default reductions: mean over samples for cross-entropy, over all elements else."""
    if n_samples * n_outputs == 0:
        return 1.0  # an empty batch: nothing to average
    if loss == "cross_entropy":
        return 1.0 / n_samples
    return 1.0 / (n_samples * n_outputs)


def per_sample_loss(loss, f_in, f_out, y):
    """l_i, summed over the outputs (default_scale then makes L the mean)."""
    if loss == "mse":
        return ((f_out - y) ** 2).sum(axis=1)
    if loss == "binary_cross_entropy":  # from the logits f_in of a sigmoid output
        x = f_in
        return (np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).sum(axis=1)
    if loss == "cross_entropy":  # from the logits f_in of a softmax output
        m = f_in.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(f_in - m).sum(axis=1, keepdims=True))
        return (y * (lse - f_in)).sum(axis=1)
    raise ValueError(f"unknown loss {loss!r}")


def _into(out, value):
    """value, written into the buffer `out` when one is given (as the kernels do)."""
    if out is None:
        return value
    out[...] = value
    return out


def loss_value(f_in, f_out, y, loss, sample_weight=None, scale=None, *, per_sample=None,
               n_threads=None):
    """L = scale * sum_i w_i l_i (scale defaults to the mean reduction)."""
    n, m = f_out.shape
    scale = default_scale(loss, n, m) if scale is None else scale
    per = _into(per_sample, per_sample_loss(loss, f_in, f_out, y))
    w = np.ones(n) if sample_weight is None else sample_weight
    return float(scale * np.sum(w * per))


# ---- the three passes, one layer at a time ---------------------------------------------------------


def dense_forward(z_out_prev, W, b, activation, alpha=0.01, *, z_in=None, z_out=None,
                  n_threads=None):
    """(z_in, z_out) with z_in = z_out_prev @ W + b, z_out = sigma(z_in)."""
    pre = z_out_prev @ W
    if b is not None:
        pre = pre + b
    post = sigma(activation, pre, alpha)
    return _into(z_in, pre), _into(z_out, post)


def output_delta(f_in, f_out, y, loss, tau, alpha=0.01, sample_weight=None, scale=None, *,
                 out=None, n_threads=None):
    """delta[O] = dL/df_in."""
    n, m = f_out.shape
    scale = default_scale(loss, n, m) if scale is None else scale
    w = (np.ones(n) if sample_weight is None else sample_weight)[:, None] * scale
    if (loss, tau) in (("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")):
        return _into(out, w * (f_out - y))
    if loss == "mse":
        return _into(out, sigma_backward(tau, f_in, f_out, 2 * w * (f_out - y), alpha))
    raise ValueError(f"unsupported pair loss={loss!r}, tau={tau!r}")


def hidden_delta(delta_next, W_next, z_in, z_out, activation, alpha=0.01, *, out=None,
                 n_threads=None):
    """delta[i] = (delta[i+1] @ W[i+1].T) * sigma'(z_in[i])."""
    return _into(out, sigma_backward(activation, z_in, z_out, delta_next @ W_next.T, alpha))


def gradients(z_out_prev, delta, beta=0.0, grad_W=None, grad_b=None, use_bias=True, *,
              n_threads=None):
    """(grad_W, grad_b) = beta * (grad_W, grad_b) + (z_out_prev.T @ delta, delta.sum(axis=0))."""
    gW = z_out_prev.T @ delta
    gb = delta.sum(axis=0) if use_bias else None
    if beta != 0:
        gW = beta * grad_W + gW
        if use_bias:
            gb = beta * grad_b + gb
    return _into(grad_W, gW), (_into(grad_b, gb) if use_bias else None)


# ---- parameter updates (torch.optim's rules) -------------------------------------------------------


def sgd_update(param, grad, velocity=None, learning_rate=0.01, momentum=0.0, nesterov=False,
               weight_decay=0.0, grad_scale=1.0, *, n_threads=None):
    """One SGD step in place; returns param."""
    g = grad_scale * grad + weight_decay * param
    if momentum != 0:
        velocity[...] = momentum * velocity + g
        g = g + momentum * velocity if nesterov else velocity
    param -= learning_rate * g
    return param


def adam_update(param, grad, m, v, step, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, decoupled=False, grad_scale=1.0, *, n_threads=None):
    """One Adam (or, decoupled, AdamW) step in place; `step` counts from 1; returns param."""
    if decoupled:
        param *= 1 - learning_rate * weight_decay
        g = grad_scale * grad
    else:
        g = grad_scale * grad + weight_decay * param
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    param -= learning_rate * m_hat / (np.sqrt(v_hat) + eps)
    return param


def sum_of_squares(x, *, n_threads=None):
    """sum(x**2) in double precision."""
    x = np.asarray(x, dtype=np.float64).ravel()
    return float(x @ x)


def penalty(W, l1=0.0, l2=0.0):
    """(R, dR/dW) of the weight penalty R(W) = l1 sum|W| + l2 sum W^2 (bp.regularizers)."""
    W = np.asarray(W, dtype=np.float64)
    return (float(l1 * np.abs(W).sum() + l2 * (W * W).sum()), l1 * np.sign(W) + 2 * l2 * W)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z):
    """splitmix64's finalizer on uint64 arrays (arithmetic modulo 2^64)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_mask(seed, draw, rows, units, rate):
    """The (rows, units) 0/1 uint8 mask of training batch `draw` (bpcore/_dropout.pyx): with
    h = mix(mix(seed ^ mix((draw+1) G)) + (r+1) G) + (j//2+1) G), unit j is kept when the low
    (j even) or high (j odd) 32 bits of h reach floor(rate 2^32)."""
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed) ^ _mix(np.uint64(draw + 1) * _GOLDEN))
        r = np.arange(1, rows + 1, dtype=np.uint64)[:, None]
        j = np.arange(units, dtype=np.uint64)[None, :]
        h = _mix(_mix(key + r * _GOLDEN) + (j // np.uint64(2) + np.uint64(1)) * _GOLDEN)
    bits = np.where(j % np.uint64(2) == 0, h & np.uint64(0xFFFFFFFF), h >> np.uint64(32))
    return (bits >= np.uint64(int(rate * 2.0**32))).astype(np.uint8)


def dropout_forward(z_out, mask, rate):
    """z_out * mask / (1 - rate) (inverted dropout)."""
    return z_out * mask * (1.0 / (1.0 - rate))


# ---- a whole network -------------------------------------------------------------------------------


def forward(X, Ws, bs, activations, alpha=0.01):
    """Lists (z_in, z_out), one entry per layer; z_out[-1] is f_out."""
    z_ins, z_outs = [], []
    z = X
    for W, b, act in zip(Ws, bs, activations):
        z_in, z = dense_forward(z, W, b, act, alpha)
        z_ins.append(z_in)
        z_outs.append(z)
    return z_ins, z_outs


def backward(X, y, Ws, bs, activations, loss, alpha=0.01, sample_weight=None, scale=None):
    """(loss, deltas, grads_W, grads_b) for the whole network by backpropagation."""
    z_ins, z_outs = forward(X, Ws, bs, activations, alpha)
    value = loss_value(z_ins[-1], z_outs[-1], y, loss, sample_weight, scale)
    n_layers = len(Ws)
    deltas = [None] * n_layers
    deltas[-1] = output_delta(z_ins[-1], z_outs[-1], y, loss, activations[-1], alpha,
                              sample_weight, scale)
    for i in range(n_layers - 2, -1, -1):
        deltas[i] = hidden_delta(deltas[i + 1], Ws[i + 1], z_ins[i], z_outs[i], activations[i],
                                 alpha)
    grads_W, grads_b = [], []
    for i in range(n_layers):
        z_prev = X if i == 0 else z_outs[i - 1]
        gW, gb = gradients(z_prev, deltas[i], use_bias=bs[i] is not None)
        grads_W.append(gW)
        grads_b.append(gb)
    return value, deltas, grads_W, grads_b


def network_loss(X, y, Ws, bs, activations, loss, alpha=0.01, sample_weight=None, scale=None):
    """L for the whole network (for finite differences)."""
    z_ins, z_outs = forward(X, Ws, bs, activations, alpha)
    return loss_value(z_ins[-1], z_outs[-1], y, loss, sample_weight, scale)


# ---- metric states (twins of bpcore/_metrics.pyx's updates; same arguments, C added to) ---------


def _row_weights(w, weighted, n):
    return np.asarray(w, dtype=np.float64) if weighted else np.ones(n)


def confusion_update(f_out, Y, w, weighted, binary, threshold, C):
    """C[t, p] += w_i: argmax classes, or (binary) every output against 0.5 / threshold."""
    wi = _row_weights(w, weighted, len(Y))
    if binary:
        t, p = (Y >= 0.5).astype(int), (f_out >= threshold).astype(int)
        np.add.at(C, (t.ravel(), p.ravel()), np.repeat(wi, Y.shape[1]))
    else:
        np.add.at(C, (np.argmax(Y, axis=1), np.argmax(f_out, axis=1)), wi)
    return C


def top_k_update(f_out, Y, w, weighted, k, hits):
    """hits += [w_i when fewer than k classes score above the true one, w_i]."""
    wi = _row_weights(w, weighted, len(Y))
    true_score = f_out[np.arange(len(Y)), np.argmax(Y, axis=1)]
    above = (f_out > true_score[:, None]).sum(axis=1)
    hits[0] += np.sum(wi * (above < k))
    hits[1] += np.sum(wi)
    return hits


def error_update(f_out, Y, w, weighted, S):
    """S += per output: sums of w|e|, w e^2, w y, w y^2, w (e = f_out - y)."""
    wi = _row_weights(w, weighted, len(Y))[:, None]
    e, y = f_out.astype(np.float64) - Y, Y.astype(np.float64)
    for k, term in enumerate((np.abs(e), e**2, y, y**2, np.ones_like(y))):
        S[k] += (wi * term).sum(axis=0)
    return S


def auc_update(f_out, Y, w, weighted, one_vs_rest, H):
    """H[c, label, bin] += w_i: the scores of class c in H.shape[2] equal bins of [0, 1]."""
    wi = _row_weights(w, weighted, len(Y))
    n_bins = H.shape[2]
    labels = (np.argmax(Y, axis=1)[:, None] == np.arange(Y.shape[1]) if one_vs_rest
              else Y >= 0.5)
    s = f_out.astype(np.float64) * n_bins
    bins = np.where(s > 0, np.minimum(np.floor(np.where(s > 0, s, 0)), n_bins - 1), 0).astype(int)
    for c in range(Y.shape[1]):
        np.add.at(H[c], (labels[:, c].astype(int), bins[:, c]), wi)
    return H
