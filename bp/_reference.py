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
from scipy.special import erf, expit

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

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
    if activation == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if activation == "selu":
        return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0)))
    if activation == "silu":
        return z * expit(z)
    if activation == "softplus":  # PyTorch's threshold: z itself above 20
        return np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, 20))))
    if activation == "mish":
        with np.errstate(over="ignore"):
            return z * np.tanh(np.log1p(np.exp(z)))
    if activation == "hard_sigmoid":
        return np.clip(z + 3, 0, 6) / 6
    if activation == "exponential":
        return np.exp(z)
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
    if activation == "elu":
        return g * np.where(z_in > 0, 1, np.exp(np.minimum(z_in, 0)))
    if activation == "selu":
        return g * SELU_SCALE * np.where(z_in > 0, 1, SELU_ALPHA * np.exp(np.minimum(z_in, 0)))
    if activation == "silu":
        s = expit(z_in)
        return g * s * (1 + z_in * (1 - s))
    if activation == "softplus":
        return g * np.where(z_in > 20, 1, expit(z_in))
    if activation == "mish":
        with np.errstate(over="ignore"):
            t = np.tanh(np.log1p(np.exp(z_in)))
        return g * (t + z_in * expit(z_in) * (1 - t * t))
    if activation == "hard_sigmoid":
        return g * ((z_in > -3) & (z_in < 3)) / 6
    if activation == "exponential":
        return g * z_out
    raise ValueError(f"unknown activation {activation!r}")


# ---- losses --------------------------------------------------------------------------------------


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
    if loss == "mae":
        return np.abs(f_out - y).sum(axis=1)
    if loss == "huber":  # delta = 1
        d = np.abs(f_out - y)
        return np.where(d <= 1, 0.5 * d * d, d - 0.5).sum(axis=1)
    if loss == "poisson":  # f_out = e^f_in (exponential output)
        return (f_out - y * f_in).sum(axis=1)
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


# ---- the three passes, one layer at a time -------------------------------------------------------


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
    if (loss, tau) in (("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid"),
                       ("poisson", "exponential")):
        return _into(out, w * (f_out - y))
    if (loss, tau) == ("cross_entropy", "identity"):  # from the logits
        return _into(out, w * (sigma("softmax", f_in) - y))
    if (loss, tau) == ("binary_cross_entropy", "identity"):
        return _into(out, w * (expit(f_in) - y))
    grad_f_out = {"mse": lambda d: 2 * d, "mae": np.sign,
                  "huber": lambda d: np.clip(d, -1, 1)}.get(loss)
    if grad_f_out is not None:
        return _into(out, sigma_backward(tau, f_in, f_out, w * grad_f_out(f_out - y), alpha))
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


# ---- bfloat16 products ("mixed_bfloat16": operands rounded to bf16, sums in float32) -----


def round_bf16(x):
    """bf16(x) as float32: x's float32 bit pattern rounded to its top 16 bits, to nearest even.

    As the hardware does it (vcvtne2ps2bf16, and bpcore's fallback): zero and denormal inputs give
    a zero of the same sign, NaN stays NaN (quiet), overflow rounds to infinity.
    """
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    rounded = np.where((u & 0x7F800000) == 0, u & 0x80000000, rounded)   # denormals -> +-0
    rounded = np.where((u & 0x7FFFFFFF) > 0x7F800000,                    # NaN -> quiet NaN
                       (u | 0x00400000) & 0xFFFF0000, rounded)
    return rounded.astype(np.uint32).view(np.float32)


def gemm_bf16(A, B, C, alpha=1.0, beta=0.0, bias=None, activation="identity"):
    """alpha * bf16(A) @ bf16(B) + beta * C (+ bias, then the activation), in float64.

    A and B are op(A) and op(B) (pass A.T for a transposed operand); the products of bf16 values
    are exact, so this is the oracle of bpcore._bf16 up to its float32 sums.
    """
    out = alpha * (round_bf16(A).astype(np.float64) @ round_bf16(B).astype(np.float64))
    if beta != 0:
        out = out + beta * np.asarray(C, dtype=np.float64)
    if bias is not None:
        out = out + bias
    return sigma(activation, out)


# ---- parameter updates (torch.optim's rules) -----------------------------------------------------


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


def rmsprop_update(param, grad, square_avg, grad_avg=None, momentum_buffer=None,
                   learning_rate=0.01, rho=0.99, epsilon=1e-8, weight_decay=0.0, momentum=0.0,
                   grad_scale=1.0, *, n_threads=None):
    """One RMSprop step in place (torch.optim.RMSprop; centered when grad_avg is given)."""
    g = grad_scale * grad + weight_decay * param
    square_avg[...] = rho * square_avg + (1 - rho) * g * g
    avg = square_avg
    if grad_avg is not None:
        grad_avg[...] = rho * grad_avg + (1 - rho) * g
        avg = square_avg - grad_avg * grad_avg
    r = g / (np.sqrt(avg) + epsilon)
    if momentum_buffer is not None:
        momentum_buffer[...] = momentum * momentum_buffer + r
        r = momentum_buffer
    param -= learning_rate * r
    return param


def adagrad_update(param, grad, accumulator, learning_rate=0.01, epsilon=1e-10, weight_decay=0.0,
                   grad_scale=1.0, *, n_threads=None):
    """One Adagrad step in place (torch.optim.Adagrad, lr_decay 0)."""
    g = grad_scale * grad + weight_decay * param
    accumulator += g * g
    param -= learning_rate * g / (np.sqrt(accumulator) + epsilon)
    return param


def nadam_mu(step, beta_1=0.9, momentum_decay=4e-3):
    """Dozat's momentum schedule mu_t = beta_1 (1 - 0.96^(t psi) / 2)."""
    return beta_1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_update(param, grad, m, v, step, mu_product, learning_rate=2e-3, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 grad_scale=1.0, *, n_threads=None):
    """One Nadam step in place (torch.optim.NAdam); mu_product = prod_{k<t} mu_k; returns the
    product through step t."""
    g = grad_scale * grad + weight_decay * param
    mu, mu_next = nadam_mu(step, beta_1, momentum_decay), nadam_mu(step + 1, beta_1, momentum_decay)
    mu_product = mu_product * mu
    m[...] = beta_1 * m + (1 - beta_1) * g
    v[...] = beta_2 * v + (1 - beta_2) * g * g
    d = np.sqrt(v / (1 - beta_2**step)) + epsilon
    param -= learning_rate * (1 - mu) / (1 - mu_product) * g / d
    param -= learning_rate * mu_next / (1 - mu_product * mu_next) * m / d
    return mu_product


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


# ---- a whole network -----------------------------------------------------------------------------


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
