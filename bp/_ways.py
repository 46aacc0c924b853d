"""The three ways to get every gradient, and their cost model: the backpropagation argument in
plain float64 NumPy, with every multiply-add counted (bp.explain times and prints them).

Every parameter's gradient dL/dw can be had three ways. They give the same numbers; they differ
in how much work they share between parameters:

1. **naive chain rule**: for each parameter, everything from scratch: a forward pass of the batch
   (the chain-rule factors sigma'(z_in) need the values), then the product of the Jacobians from
   that parameter to the loss. Nothing is cached, nothing is shared.
2. **forward caching** (forward mode): one forward pass caches z_in, z_out and sigma'(z_in); then,
   for each parameter, its tangent dz_in/dw is carried forward from its layer to the loss through
   the cached factors. Nothing is shared between parameters.
3. **backpropagation**: one forward pass, then the error signals delta[i] = dL/dz_in[i] once each,
   from the output backwards; every parameter's gradient is its delta times the input it
   multiplies (z_out[i-1].T @ delta[i]).

The cost model counts multiply-adds: one per scalar product in a matrix product (z @ W, the
delta recursion, z_out.T @ delta, the tangent propagation) and one per product with a diagonal
Jacobian factor sigma'(z_in). A bias is a weight on a constant input 1 (one multiply-add per
sample). Evaluating sigma, sigma' and the loss derivative delta[O] = dL/df_in is not counted:
ways (2) and (3) do it once; the naive way does it again for every parameter, so its count is a
lower bound of its work. With widths n_0 (input) .. n_L (output), layer k mapping n_k -> n_{k+1}
with P_k = (n_k + 1) n_{k+1} parameters (n_k n_{k+1} without bias), P = sum P_k, batch N:

    forward pass        F = N P
    backpropagation     F + N P + sum_{k=0}^{L-2} N n_{k+1} (n_{k+2} + 1)   (about 3 F)
    forward caching     F + sum_k P_k T_k
    naive               sum_k P_k (F + T_k)

where T_k, the tangent propagation of one parameter of layer k, is N for the output layer
(k = L-1, one contraction with delta[O]) and otherwise

    T_k = N + N n_{k+2} + sum_{j=k+1}^{L-2} N n_{j+1} (1 + n_{j+2}) + N n_L

(times sigma'_k of its one unit, outer product with that unit's row of W[k+1], then through each
later layer: times sigma', times W; finally contracted with delta[O]). Both per-parameter ways
grow as P times a pass; backpropagation stays a constant times one forward pass.

Layers are numbered from 0 here, as in ``model.layers``; the mathematics' notation
(``python -m bp xor --explain``) numbers the hidden layer 1 and calls the output layer O.
"""

import numpy as np

from . import _reference as R
from ._validation import check_positive_int

# The naive way costs about N P^2 multiply-adds (a forward pass per parameter): at a few
# 1e8 multiply-adds a second in NumPy, beyond this it takes more than a few seconds, so explain()
# refuses such networks (e.g. P = 5,000 parameters at N = 32 is 8e8: accepted).
MAX_NAIVE_MULTIPLY_ADDS = 10**9
# Numbers per temporary array of a chunk of parameters (parameters x samples x width): 32K
# float64 = 256 KB stays in a core's L2 cache; measured 2-5x faster than 8 MB chunks, and the
# loop over chunks still costs little next to the arithmetic.
_CHUNK_ELEMENTS = 1 << 15


# ---- the cost model ------------------------------------------------------------------------------


def operation_counts(widths, batch_size, use_bias=True):
    """Exact multiply-adds of the forward pass and of the three ways to get every gradient.

    Parameters
    ----------
    widths : sequence of int  n_0 (inputs), n_1, ..., n_L (outputs)
    batch_size : int          N
    use_bias : bool or sequence of bool (one per layer)

    Returns
    -------
    dict with "forward_pass", "naive", "forward", "backprop" and "n_params" (see the module
    docstring for the formulas).
    """
    n = [check_positive_int("width", w) for w in widths]
    N = check_positive_int("batch_size", batch_size)
    n_layers = len(n) - 1
    if n_layers < 1:
        raise ValueError(f"widths needs an input and at least one layer. Received: {list(widths)}")
    bias = [bool(use_bias)] * n_layers if isinstance(use_bias, (bool, np.bool_)) else list(use_bias)
    P_k = [(n[k] + bias[k]) * n[k + 1] for k in range(n_layers)]
    P = sum(P_k)
    F = N * P
    T = [_tangent_count(n, k, N) for k in range(n_layers)]
    backprop = F + N * P + sum(N * n[k + 1] * (n[k + 2] + 1) for k in range(n_layers - 1))
    forward = F + sum(p * t for p, t in zip(P_k, T))
    naive = sum(p * (F + t) for p, t in zip(P_k, T))
    return {"forward_pass": F, "naive": naive, "forward": forward, "backprop": backprop,
            "n_params": P}


def _tangent_count(n, k, N):
    """T_k: multiply-adds to carry one parameter of layer k from its layer to the loss."""
    n_layers = len(n) - 1
    if k == n_layers - 1:
        return N  # sum_s delta[O][s, q] * a[s, p]
    return (N + N * n[k + 2]
            + sum(N * n[j + 1] * (1 + n[j + 2]) for j in range(k + 1, n_layers - 1))
            + N * n[n_layers])


class _Counter:
    """Adds up multiply-adds as the ways perform them (the tests hold it to operation_counts)."""

    def __init__(self):
        self.n = 0

    def matmul(self, A, B):
        """A (..., m) @ B (m, n): prod(A.shape[:-1]) * m * n multiply-adds."""
        self.n += (A.size // A.shape[-1]) * A.shape[-1] * B.shape[-1]
        if A.ndim > 2:  # one gemm over all the leading axes, not one per leading index
            return (A.reshape(-1, A.shape[-1]) @ B).reshape(A.shape[:-1] + (B.shape[-1],))
        return A @ B

    def mul(self, a, b):
        """Elementwise product: one multiply per entry of the result."""
        out = a * b
        self.n += out.size
        return out

    def dot_rows(self, a, b, axes):
        """sum(a * b) over `axes`: one multiply-add per entry of the product."""
        prod = a * b
        self.n += prod.size
        return prod.sum(axis=axes)


# ---- the network as plain float64 arrays ---------------------------------------------------------


class _Net:
    """A Sequential's parameters in float64, each layer's W and b stacked as Wa = [W; b]
    (n_in + 1, n_out): the bias is the weight of a constant input 1. Wa flattened row-major is
    bp's flat layout (W row-major, then b), so flat gradients compare directly."""

    def __init__(self, model, loss):
        self.acts = [layer.activation for layer in model.layers]
        self.alphas = [layer.alpha for layer in model.layers]
        self.bias = [layer.use_bias for layer in model.layers]
        self.loss = loss
        self.Ws = [np.asarray(layer.W, np.float64) for layer in model.layers]
        self.Wa = [np.vstack([W, np.asarray(layer.b, np.float64)[None, :]]) if layer.use_bias
                   else W.copy()
                   for W, layer in zip(self.Ws, model.layers)]
        self.widths = [model.layers[0].W.shape[0]] + [layer.units for layer in model.layers]
        for k, act in enumerate(self.acts[:-1]):
            if act == "softmax":
                raise ValueError(f"explain needs elementwise hidden activations; layer {k} is a "
                                 "hidden softmax, whose Jacobian is not diagonal. Received: "
                                 f"activations {self.acts}")

    @property
    def n_layers(self):
        return len(self.Ws)

    def augment(self, z, k):
        """The input a of layer k: z with a column of ones appended when the layer has a bias."""
        if not self.bias[k]:
            return z
        return np.concatenate([z, np.ones(z.shape[:-1] + (1,))], axis=-1)

    def forward(self, X, counter):
        """Lists (a, z_in, z_out) per layer for the rows of X (any leading axes); a is the
        layer's input with the bias column of ones."""
        a_list, z_ins, z_outs = [], [], []
        z = X
        for k in range(self.n_layers):
            a = self.augment(z, k)
            z_in = counter.matmul(a, self.Wa[k])
            z = R.sigma(self.acts[k], z_in.reshape(-1, z_in.shape[-1]),
                        self.alphas[k]).reshape(z_in.shape)
            a_list.append(a)
            z_ins.append(z_in)
            z_outs.append(z)
        return a_list, z_ins, z_outs

    def sigma_prime(self, k, z_in, z_out):
        return R.sigma_backward(self.acts[k], z_in, z_out, np.ones_like(z_in), self.alphas[k])

    def output_delta(self, z_in, z_out, Y, scale):
        """delta[O] = dL/df_in (the loss derivative; evaluated, not counted)."""
        shape = z_in.shape
        f_in, f_out = z_in.reshape(-1, shape[-1]), z_out.reshape(-1, shape[-1])
        Yr = np.broadcast_to(Y, shape).reshape(-1, shape[-1])
        d = R.output_delta(f_in, f_out, Yr, self.loss, self.acts[-1], self.alphas[-1],
                           scale=scale)
        return d.reshape(shape)

    def param_indices(self, k):
        """(p, q) of every parameter of layer k in flat order (p == n_k is the bias row)."""
        rows, cols = self.Wa[k].shape
        p, q = np.divmod(np.arange(rows * cols), cols)
        return p, q


# ---- the three ways ------------------------------------------------------------------------------


def _tangent(net, k, a, sp, delta_O, p, q, counter):
    """dL/dw for the parameters (p[c], q[c]) of layer k, each carried forward on its own.

    a, sp[j], delta_O are the forward values, either cached (N, width) and read by every
    parameter, or recomputed per parameter (C, N, width). The tangent of z_in[k] for parameter
    (p, q) is a[:, p] in unit q and 0 elsewhere; from there it goes through sigma'_k and W[k+1],
    each later layer's sigma' and W, and is contracted with delta[O].
    """
    C = p.shape[0]
    per_param = a.ndim == 3
    c = np.arange(C)
    t = a[c, :, p] if per_param else a[:, p].T  # (C, N) = dz_in[k][:, q] / dw
    n_layers = net.n_layers
    if k == n_layers - 1:
        d = delta_O[c, :, q] if per_param else delta_O[:, q].T
        return counter.dot_rows(t, d, axes=1)
    s = sp[k][c, :, q] if per_param else sp[k][:, q].T
    u = counter.mul(t, s)  # (C, N): through sigma'(z_in[k]) of unit q
    T = counter.mul(u[:, :, None], net.Ws[k + 1][q][:, None, :])  # (C, N, n_{k+2}) = dz_in[k+1]
    for j in range(k + 1, n_layers - 1):
        T = counter.matmul(counter.mul(T, sp[j]), net.Ws[j + 1])
    return counter.dot_rows(T, delta_O, axes=(1, 2))


def _chunks(n_items, per_item):
    step = max(1, _CHUNK_ELEMENTS // max(1, per_item))
    for start in range(0, n_items, step):
        yield slice(start, min(n_items, start + step))


def forward_gradients(net, X, Y, scale, counter=None):
    """Way (2): one cached forward pass, then each parameter's tangent carried to the loss.

    Returns the flat gradient (bp's layout). The loop runs over chunks of parameters so that
    the time measures the arithmetic, not the interpreter; each parameter's tangent is its own
    rows of the chunk, so nothing is shared between parameters.
    """
    counter = counter or _Counter()
    a, z_in, z_out = net.forward(X, counter)
    sp = [net.sigma_prime(k, z_in[k], z_out[k]) for k in range(net.n_layers - 1)]
    delta_O = net.output_delta(z_in[-1], z_out[-1], Y, scale)
    out = []
    N = X.shape[0]
    for k in range(net.n_layers):
        p, q = net.param_indices(k)
        for sl in _chunks(p.size, N * max(net.widths[k + 1:])):
            out.append(_tangent(net, k, a[k], sp, delta_O, p[sl], q[sl], counter))
    return np.concatenate(out)


def naive_gradients(net, X, Y, scale, counter=None):
    """Way (1): for each parameter, a fresh forward pass of the batch, then the chain-rule
    product from that parameter to the loss. Returns the flat gradient.

    The forward pass is really recomputed for every parameter (the batch is repeated once per
    parameter of the chunk), so the time includes it, as the count does.
    """
    counter = counter or _Counter()
    out = []
    N = X.shape[0]
    for k in range(net.n_layers):
        p, q = net.param_indices(k)
        for sl in _chunks(p.size, N * (sum(net.widths) + net.n_layers)):
            C = p[sl].size
            Xc = np.broadcast_to(X, (C,) + X.shape)  # read-only view; forward copies nothing back
            a, z_in, z_out = net.forward(Xc, counter)
            sp = [net.sigma_prime(j, z_in[j], z_out[j]) for j in range(net.n_layers - 1)]
            delta_O = net.output_delta(z_in[-1], z_out[-1], Y, scale)
            out.append(_tangent(net, k, a[k], sp, delta_O, p[sl], q[sl], counter))
    return np.concatenate(out)


def backprop_gradients(net, X, Y, scale, counter=None):
    """Way (3): one forward pass, the deltas once each from the output backwards, and every
    gradient as input times delta: grad_Wa[k] = a[k].T @ delta[k]. Returns the flat gradient."""
    counter = counter or _Counter()
    a, z_in, z_out = net.forward(X, counter)
    n_layers = net.n_layers
    delta = [None] * n_layers
    delta[-1] = net.output_delta(z_in[-1], z_out[-1], Y, scale)
    for k in range(n_layers - 2, -1, -1):
        sp = net.sigma_prime(k, z_in[k], z_out[k])
        delta[k] = counter.mul(counter.matmul(delta[k + 1], net.Ws[k + 1].T), sp)
    return np.concatenate([counter.matmul(a[k].T, delta[k]).ravel() for k in range(n_layers)])


def _forward_pass(net, X, counter=None):
    return net.forward(X, counter or _Counter())[2][-1]
