"""Insight: the backpropagation argument, counted and timed on the user's own network.

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

Layers are numbered from 0 here, as in ``model.layers``; the seed's notation (``python -m bp xor
--explain``) numbers the hidden layer 1 and calls the output layer O.
"""

import math
import time

import numpy as np

import bpcore

from . import _reference as R
from . import losses as _losses
from ._validation import check_choice, check_positive_int
from .callbacks import Callback

# The naive way costs about N P^2 multiply-adds (a forward pass per parameter): at a few
# 1e8 multiply-adds a second in NumPy, beyond this it takes more than a few seconds, so explain()
# refuses such networks (e.g. P = 5,000 parameters at N = 32 is 8e8: accepted).
MAX_NAIVE_MULTIPLY_ADDS = 10**9
# Numbers per temporary array of a chunk of parameters (parameters x samples x width): 32K
# float64 = 256 KB stays in a core's L2 cache; measured 2-5x faster than 8 MB chunks, and the
# loop over chunks still costs little next to the arithmetic.
_CHUNK_ELEMENTS = 1 << 15
WAYS = ("naive", "forward", "backprop")
_WAY_NAMES = {
    "naive": "(1) naive chain rule, per parameter",
    "forward": "(2) forward caching, per parameter",
    "backprop": "(3) backpropagation, cached deltas",
}


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
    L = len(n) - 1
    if L < 1:
        raise ValueError(f"widths needs an input and at least one layer. Received: {list(widths)}")
    bias = [bool(use_bias)] * L if isinstance(use_bias, (bool, np.bool_)) else list(use_bias)
    P_k = [(n[k] + bias[k]) * n[k + 1] for k in range(L)]
    P = sum(P_k)
    F = N * P
    T = [_tangent_count(n, k, N) for k in range(L)]
    backprop = F + N * P + sum(N * n[k + 1] * (n[k + 2] + 1) for k in range(L - 1))
    forward = F + sum(p * t for p, t in zip(P_k, T))
    naive = sum(p * (F + t) for p, t in zip(P_k, T))
    return {"forward_pass": F, "naive": naive, "forward": forward, "backprop": backprop,
            "n_params": P}


def _tangent_count(n, k, N):
    """T_k: multiply-adds to carry one parameter of layer k from its layer to the loss."""
    L = len(n) - 1
    if k == L - 1:
        return N  # sum_s delta[O][s, q] * a[s, p]
    return (N + N * n[k + 2]
            + sum(N * n[j + 1] * (1 + n[j + 2]) for j in range(k + 1, L - 1))
            + N * n[L])


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
        self.acts = [L.activation for L in model.layers]
        self.alphas = [L.alpha for L in model.layers]
        self.bias = [L.use_bias for L in model.layers]
        self.loss = loss
        self.Ws = [np.asarray(L.W, np.float64) for L in model.layers]
        self.Wa = [np.vstack([W, np.asarray(L.b, np.float64)[None, :]]) if L.use_bias else W.copy()
                   for W, L in zip(self.Ws, model.layers)]
        self.widths = [model.layers[0].W.shape[0]] + [L.units for L in model.layers]
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
    L = net.n_layers
    if k == L - 1:
        d = delta_O[c, :, q] if per_param else delta_O[:, q].T
        return counter.dot_rows(t, d, axes=1)
    s = sp[k][c, :, q] if per_param else sp[k][:, q].T
    u = counter.mul(t, s)  # (C, N): through sigma'(z_in[k]) of unit q
    T = counter.mul(u[:, :, None], net.Ws[k + 1][q][:, None, :])  # (C, N, n_{k+2}) = dz_in[k+1]
    for j in range(k + 1, L - 1):
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
    L = net.n_layers
    delta = [None] * L
    delta[-1] = net.output_delta(z_in[-1], z_out[-1], Y, scale)
    for k in range(L - 2, -1, -1):
        sp = net.sigma_prime(k, z_in[k], z_out[k])
        delta[k] = counter.mul(counter.matmul(delta[k + 1], net.Ws[k + 1].T), sp)
    return np.concatenate([counter.matmul(a[k].T, delta[k]).ravel() for k in range(L)])


def _forward_pass(net, X, counter=None):
    return net.forward(X, counter or _Counter())[2][-1]


# ---- bp's compiled kernels, called directly (no validation in the timed loop) --------------------


class _Compiled:
    """One forward pass, and one backpropagation (forward, loss, delta[O], hidden deltas,
    gradients), through the per-layer kernel calls of Sequential._forward and
    Sequential._backward_layers, into buffers of its own."""

    def __init__(self, model, X, Y, loss, n_threads):
        from .sequential import _Workspace

        self.model, self.loss, self.nt = model, loss, n_threads
        self.X = np.ascontiguousarray(X, model.dtype)
        self.Y = np.ascontiguousarray(Y, model.dtype)
        self.scale = _losses.default_scale(loss, *self.Y.shape)
        self.ws = _Workspace(model, self.X.shape[0])
        self.grads = np.zeros_like(model.get_flat_grads())
        self.views = model._views_into(self.grads)

    def forward(self):
        return self.model._forward(self.X, self.ws.z_in, self.ws.z_out, self.nt)

    def backprop(self):
        self.model._backward_layers(self.X, self.Y, None, self.ws, self.loss, self.scale, 0.0,
                                    self.views, self.nt)

    def flat_gradient(self):
        return self.grads.astype(np.float64)


def measure(fn, budget=0.1, repeat=3, first=None):
    """Seconds per call of fn(): the best of `repeat` runs of a loop sized to fill `budget`
    seconds (one call only when a single call already takes longer than the budget).
    `first`: the time of a call already made (skips the warm-up call)."""
    if first is None:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    if first >= budget:
        return first
    number = max(1, int(budget / repeat / max(first, 1e-7)))
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


# ---- bp.explain ----------------------------------------------------------------------------------


def _inputs(model, X, y, loss):
    """X in the model's dtype (built from it if needed) and the targets as (N, m) float64."""
    if not len(model.layers):
        raise ValueError("a Sequential needs at least one layer. Received: no layers")
    loss = model._check_loss(loss)
    X = model._check_X(X)
    model._build_from(X)
    Y = _losses.prepare_targets(loss, y, X.shape[0], model.layers[-1].units, np.float64)
    return X, Y, loss


class Explanation:
    """What bp.explain measured: counts, times and the gradients of the three ways.

    Attributes
    ----------
    widths : list of int            n_0 (inputs) .. n_L (outputs)
    activations : list of str;  loss : str;  batch_size : int;  n_params : int
    counts : dict                   exact multiply-adds: "forward_pass", "naive", "forward",
                                    "backprop" (see bp.insight.operation_counts)
    times : dict                    seconds, NumPy float64: "forward_pass", "naive", "forward",
                                    "backprop"; bp's compiled kernels in the model's dtype:
                                    "bp_forward_pass", "bp_backprop"
    gradients : dict                flat gradients (bp's layout) of "naive", "forward",
                                    "backprop" (float64) and "bp" (the compiled kernels)
    max_abs_diff : dict             max |g - g_backprop| for "naive", "forward", "bp"
    agree : bool                    every way matched backpropagation within tolerance
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    @property
    def count_ratios(self):
        """Exact ratios: backprop/forward pass, naive/backprop, forward/backprop."""
        c = self.counts
        return {"backprop/forward_pass": c["backprop"] / c["forward_pass"],
                "naive/backprop": c["naive"] / c["backprop"],
                "forward/backprop": c["forward"] / c["backprop"]}

    @property
    def time_ratios(self):
        """Measured ratios (NumPy ways against NumPy backprop; bp's kernels against their own
        forward pass)."""
        t = self.times
        return {"backprop/forward_pass": t["backprop"] / t["forward_pass"],
                "bp_backprop/bp_forward_pass": t["bp_backprop"] / t["bp_forward_pass"],
                "naive/backprop": t["naive"] / t["backprop"],
                "forward/backprop": t["forward"] / t["backprop"]}

    def layer_norms(self, way):
        """||dL/d(W, b)|| of each layer for one way's gradient."""
        g, out, offset = self.gradients[way], [], 0
        for k in range(len(self.widths) - 1):
            size = (self.widths[k] + self.use_bias[k]) * self.widths[k + 1]
            out.append(float(np.linalg.norm(g[offset:offset + size])))
            offset += size
        return out

    def __repr__(self):
        return (f"Explanation(widths={self.widths}, batch_size={self.batch_size}, "
                f"n_params={self.n_params}, agree={self.agree})")

    def __str__(self):
        c, t = self.counts, self.times
        arch = "-".join(map(str, self.widths))
        lines = [
            f"bp.explain: network {arch} ({', '.join(self.activations)}), loss {self.loss}, "
            f"batch N = {self.batch_size}",
            f"P = {self.n_params:,} parameters (weights and biases); one forward pass costs "
            f"N x P = {c['forward_pass']:,} multiply-adds",
            "",
            f"{'way to get every gradient':<38}{'multiply-adds':>16}{'/ fwd pass':>12}"
            f"{'time':>12}{'/ backprop':>12}",
        ]
        for way in WAYS:
            lines.append(f"{_WAY_NAMES[way]:<38}{c[way]:>16,}{c[way] / c['forward_pass']:>12.1f}"
                         f"{_fmt_time(t[way]):>12}{t[way] / t['backprop']:>12.1f}")
        lines.append(f"{'    the forward pass alone':<38}{c['forward_pass']:>16,}{1.0:>12.1f}"
                     f"{_fmt_time(t['forward_pass']):>12}{t['forward_pass'] / t['backprop']:>12.2f}")
        lines += [
            "(counts exact; times: NumPy in float64, the best of repeated runs, including NumPy's",
            " few microseconds per call, which weigh most on small networks)",
            f"bp's compiled kernels ({self.dtype}): forward pass {_fmt_time(t['bp_forward_pass'])}, "
            f"backpropagation {_fmt_time(t['bp_backprop'])} = "
            f"{t['bp_backprop'] / t['bp_forward_pass']:.1f} x the forward pass "
            f"(counted: {c['backprop'] / c['forward_pass']:.2f} x)",
            "",
            ("The three ways give the same gradients" if self.agree else
             "WARNING: the ways DISAGREE") + " (max |difference| from backpropagation: "
            f"naive {self.max_abs_diff['naive']:.1e}, forward {self.max_abs_diff['forward']:.1e}, "
            f"bp's kernels {self.max_abs_diff['bp']:.1e}; largest |gradient| "
            f"{np.max(np.abs(self.gradients['backprop'])):.2e})",
            f"{'layer':<7}{'W + b':<14}{'params':>8}{'|dL/dW| naive':>16}{'forward':>12}"
            f"{'backprop':>12}{'bp kernels':>12}",
        ]
        norms = {w: self.layer_norms(w) for w in (*WAYS, "bp")}
        for k in range(len(self.widths) - 1):
            shape = f"{self.widths[k]}x{self.widths[k + 1]}" + (
                f"+{self.widths[k + 1]}" if self.use_bias[k] else "")
            size = (self.widths[k] + self.use_bias[k]) * self.widths[k + 1]
            lines.append(f"{k:<7}{shape:<14}{size:>8}{norms['naive'][k]:>16.6g}"
                         f"{norms['forward'][k]:>12.6g}{norms['backprop'][k]:>12.6g}"
                         f"{norms['bp'][k]:>12.6g}")
        return "\n".join(lines)


def _fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def explain(model, X, y, loss=None, *, budget=0.1, n_threads=None):
    """Count and time the three ways to get every gradient of `model` on the batch (X, y).

    (1) the naive chain rule, (2) forward caching, (3) backpropagation (see bp.insight): exact
    multiply-add counts from the architecture, measured times (NumPy in float64 for all three,
    and bp's compiled kernels for backpropagation and the forward pass), and the gradients of
    all three checked against each other and against bp's kernels.

    Parameters
    ----------
    model : bp.Sequential (built from X if it is not yet)
    X : array (N, n_features);  y : targets, as for fit
    loss : str, optional        default: the model's loss, else the output activation's natural one
    budget : float              seconds of timing per measured way (a slow way runs once)
    n_threads : int, optional   threads of bp's kernels (default bp's setting)

    Limits: the naive way costs about N P^2 multiply-adds, so explain refuses a network and
    batch whose naive count exceeds ``bp.insight.MAX_NAIVE_MULTIPLY_ADDS`` (1e9, a few seconds;
    e.g. P = 5,000 parameters at N = 32 is accepted), and hidden activations must act
    elementwise (no hidden softmax).

    Returns
    -------
    Explanation (print it for the table; the numbers are attributes)

    Examples
    --------
    >>> model = bp.Sequential([bp.Dense(16, activation="tanh"), bp.Dense(3, activation="softmax")])
    >>> print(bp.explain(model, X[:16], y[:16]))
    """
    from . import _threads

    X, Y, loss = _inputs(model, X, y, loss)
    net = _Net(model, loss)
    N = X.shape[0]
    counts = operation_counts(net.widths, N, net.bias)
    P = counts["n_params"]
    if counts["naive"] > MAX_NAIVE_MULTIPLY_ADDS:
        raise ValueError(
            f"explain runs the naive chain rule (a forward pass per parameter, about N P^2 "
            f"multiply-adds), so it accepts networks and batches whose naive way costs at most "
            f"{MAX_NAIVE_MULTIPLY_ADDS:.0e} multiply-adds. Received: a "
            f"{'-'.join(map(str, net.widths))} network, P = {P:,} parameters, batch N = {N}: "
            f"{counts['naive']:.2e} multiply-adds. Use fewer samples (X[:16]) or narrower "
            "layers; bench/caching.py shows the growth")
    nt = _threads.get_num_threads() if n_threads is None else _threads.effective_n_threads(n_threads)
    X64 = X.astype(np.float64)
    scale = _losses.default_scale(loss, N, Y.shape[1])
    ways = {"naive": naive_gradients, "forward": forward_gradients,
            "backprop": backprop_gradients}
    grads, times = {}, {}
    for name, fn in ways.items():
        t0 = time.perf_counter()
        grads[name] = fn(net, X64, Y, scale)
        # the first run is a measurement too: a slow way (the naive one) then runs only once
        times[name] = measure(lambda fn=fn: fn(net, X64, Y, scale), budget,
                              first=time.perf_counter() - t0)
    compiled = _Compiled(model, X, Y, loss, nt)
    compiled.backprop()
    grads["bp"] = compiled.flat_gradient()
    times["forward_pass"] = measure(lambda: _forward_pass(net, X64), budget)
    times["bp_forward_pass"] = measure(compiled.forward, budget)
    times["bp_backprop"] = measure(compiled.backprop, budget)

    ref = grads["backprop"]
    size = max(1.0, float(np.max(np.abs(ref))))
    diffs = {w: float(np.max(np.abs(grads[w] - ref))) for w in ("naive", "forward", "bp")}
    # float64 ways differ only by summation order; bp's kernels run in the model's dtype
    tol_bp = 1e-4 if model.dtype == np.float32 else 1e-10
    agree = (diffs["naive"] <= 1e-10 * size and diffs["forward"] <= 1e-10 * size
             and diffs["bp"] <= tol_bp * size)
    return Explanation(widths=net.widths, activations=net.acts, loss=loss, batch_size=N,
                       n_params=P, use_bias=net.bias, dtype=model.dtype.name, counts=counts,
                       times=times, gradients=grads, max_abs_diff=diffs, agree=agree)


# ---- per-sample gradient norms -------------------------------------------------------------------


def _batch_pass(model, X, y, loss):
    """One backpropagation through bp's kernels (model.gradients, no update); returns
    (X in the model's dtype, loss, gradients, deltas, z_ins, z_outs), the last three the pass's
    cached arrays in float64."""
    X, Y, loss = _inputs(model, X, y, loss)
    grads = model.gradients(X, y, loss=loss)
    deltas = [np.asarray(d, np.float64) for d in model.error_signals]
    z_in = [np.asarray(z, np.float64) for z in model.z_in]
    z_out = [np.asarray(z, np.float64) for z in model.z_out]
    return X, loss, grads, deltas, z_in, z_out


def per_sample_gradient_norms(model, X, y, loss=None, *, reduction="none", bias=True):
    """||dl_s/d(W[i], b[i])|| for every sample s and layer i, from one batched backward pass.

    The gradient of sample s at layer i is the outer product z_out_s[i-1] delta_s[i]^T (plus
    delta_s[i] for the bias, whose input is 1), and the Frobenius norm of an outer product is
    the product of the norms:

        ||dl_s/dW[i]|| = ||delta_s[i]|| * ||z_out_s[i-1]||
        ||dl_s/d(W[i], b[i])|| = ||delta_s[i]|| * sqrt(||z_out_s[i-1]||^2 + 1)

    so no per-sample gradient is ever formed (O(N * units) work instead of O(N * P)).

    Parameters
    ----------
    reduction : "none" (default) or "mean"
        "none": the gradient of the sample's own loss l_s (the loss of a batch of that one
        sample, as PyTorch's reduction="none" gives l_s); what per-sample clipping wants.
        "mean": the sample's contribution to the gradient of the batch's mean loss,
        L = (1/N) sum_s l_s, i.e. the "none" norms divided by N.
    bias : bool, default True
        Include each layer's bias in its norm (layers without a bias ignore it).

    Returns
    -------
    array (n_samples, n_layers). The whole-model norm of sample s is
    ``np.sqrt((norms[s] ** 2).sum())``.
    """
    check_choice("reduction", reduction, ("none", "mean"))
    X, loss, _, deltas, _, z_out = _batch_pass(model, X, y, loss)
    N = X.shape[0]
    # model.gradients uses the mean reduction: row s of each delta is (1/N) dl_s/dz_in
    factor = N if reduction == "none" else 1.0
    norms = np.empty((N, len(model.layers)))
    for i, layer in enumerate(model.layers):
        z_prev = X.astype(np.float64) if i == 0 else z_out[i - 1]
        sq_in = np.einsum("ij,ij->i", z_prev, z_prev)
        if bias and layer.use_bias:
            sq_in = sq_in + 1.0
        norms[:, i] = factor * np.linalg.norm(deltas[i], axis=1) * np.sqrt(sq_in)
    return norms


# ---- diagnostics ---------------------------------------------------------------------------------

# Saturated: sigma'(z_in) has fallen below ~4% of its maximum.
SATURATION = {"sigmoid": 0.01, "tanh": 0.99}  # sigmoid outside [0.01, 0.99], tanh |z_out| > 0.99
VANISHING, EXPLODING = 1e-3, 1e3


class Diagnosis:
    """Per-layer health of the error signals on one batch (from Sequential.diagnose).

    Attributes
    ----------
    layers : list of dict, one per layer, with
        ``layer``, ``units``, ``activation``;
        ``mean_abs_delta``: mean over samples and units of |dl_s/dz_in| (per-sample loss, so it
        does not shrink with the batch size);
        ``delta_ratio``: mean_abs_delta relative to the output layer's (vanishing << 1,
        exploding >> 1);
        ``grad_norm``: ||dL/d(W, b)|| of the batch's mean loss;
        ``dead_fraction`` (relu layers, else None): the fraction of units with z_in <= 0 for every
        sample of the batch (their delta, and so their gradient, is exactly 0);
        ``saturated_fraction`` (sigmoid and tanh layers whose sigma' enters the delta, else
        None): the fraction of (sample, unit) entries in the flat tails (sigmoid z_out outside
        [0.01, 0.99], tanh |z_out| > 0.99, where sigma' is under ~4% of its maximum).
    warnings : list of str      plain-language flags (empty when nothing stands out)
    loss : float                the batch loss
    """

    def __init__(self, layers, warnings, loss):
        self.layers, self.warnings, self.loss = layers, warnings, loss

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        return f"Diagnosis(layers={len(self.layers)}, warnings={len(self.warnings)})"

    def __str__(self):
        head = (f"{'layer':<6}{'units':>6}  {'activation':<11}{'mean|delta|':>12}{'/ output':>10}"
                f"{'|grad|':>11}{'dead':>7}{'saturated':>11}")
        rows = [head]
        for d in self.layers:
            dead = "-" if d["dead_fraction"] is None else f"{d['dead_fraction']:.0%}"
            sat = "-" if d["saturated_fraction"] is None else f"{d['saturated_fraction']:.0%}"
            rows.append(f"{d['layer']:<6}{d['units']:>6}  {d['activation']:<11}"
                        f"{d['mean_abs_delta']:>12.3e}{d['delta_ratio']:>10.3g}"
                        f"{d['grad_norm']:>11.3e}{dead:>7}{sat:>11}")
        rows += [f"warning: {w}" for w in self.warnings] or ["no warnings"]
        return "\n".join(rows)


def diagnose(model, X, y, loss=None):
    """Per-layer diagnostics from the deltas of one backward pass on (X, y): the mean |delta|
    (vanishing or exploding signals), the dead relu units, the saturated sigmoid/tanh units.
    Returns a Diagnosis (print it for a table). No update is made."""
    X, loss, grads, deltas, z_in, z_out = _batch_pass(model, X, y, loss)
    N = X.shape[0]
    value = model.evaluate(X, y, loss=loss)["loss"]
    fused = (loss, model.layers[-1].activation) in (("cross_entropy", "softmax"),
                                                    ("binary_cross_entropy", "sigmoid"))
    mean_abs = [float(np.mean(np.abs(d))) * N for d in deltas]
    out_level = mean_abs[-1]
    layers, warnings = [], []
    n_layers = len(model.layers)
    for i, layer in enumerate(model.layers):
        gW, gb = grads[i]
        gnorm = float(np.sqrt(np.sum(np.square(gW, dtype=np.float64))
                              + (0.0 if gb is None else np.sum(np.square(gb, dtype=np.float64)))))
        act = layer.activation
        dead = None
        if act == "relu":
            dead = float(np.mean(np.all(z_in[i] <= 0, axis=0)))
        sat = None
        if act in SATURATION and not (i == n_layers - 1 and fused):
            zo, thr = z_out[i], SATURATION[act]
            tails = (zo < thr) | (zo > 1 - thr) if act == "sigmoid" else np.abs(zo) > thr
            sat = float(np.mean(tails))
        ratio = mean_abs[i] / out_level if out_level > 0 else float("nan")
        layers.append({"layer": i, "units": layer.units, "activation": act,
                       "mean_abs_delta": mean_abs[i], "delta_ratio": ratio, "grad_norm": gnorm,
                       "dead_fraction": dead, "saturated_fraction": sat})
        if i < n_layers - 1 and ratio < VANISHING:
            warnings.append(f"layer {i}: mean |delta| is {ratio:.1e} of the output layer's "
                            "(vanishing error signal)")
        if i < n_layers - 1 and ratio > EXPLODING:
            warnings.append(f"layer {i}: mean |delta| is {ratio:.1e} times the output layer's "
                            "(exploding error signal)")
        if dead is not None and dead >= 0.5:
            warnings.append(f"layer {i}: {dead:.0%} of its relu units are dead on this batch")
        if sat is not None and sat >= 0.5:
            warnings.append(f"layer {i}: {sat:.0%} of its {act} outputs are saturated")
    return Diagnosis(layers, warnings, value)


class DiagnosticsLogger(Callback):
    """Record model.diagnose(X, y) after every epoch of fit, in History.

    After fit, ``history.history["diagnostics"]`` holds one Diagnosis per epoch and
    ``history.history["mean_abs_delta_<i>"]``, ``"dead_fraction_<i>"``, ``"saturated_fraction_<i>"``
    one float per epoch for each layer i (NaN where the measure does not apply). fit's loop is
    untouched: this is an ordinary callback.

    Parameters
    ----------
    X, y : a fixed batch to diagnose on (a few hundred rows of the training data suffice)
    loss : str, optional    default: the loss fit is using
    """

    def __init__(self, X, y, loss=None):
        self.X, self.y, self.loss = X, y, loss
        self.diagnoses = []

    def on_train_begin(self, logs=None):
        self.diagnoses = []

    def on_epoch_end(self, epoch, logs=None):
        d = diagnose(self.model, self.X, self.y, loss=self.loss or self.model.loss)
        self.diagnoses.append(d)
        history = getattr(self.model, "history", None)
        if history is None:
            return
        h = history.history
        h.setdefault("diagnostics", []).append(d)
        for row in d.layers:
            i = row["layer"]
            for key in ("mean_abs_delta", "dead_fraction", "saturated_fraction"):
                value = row[key]
                h.setdefault(f"{key}_{i}", []).append(float("nan") if value is None else value)


# ---- python -m bp xor --explain ------------------------------------------------------------------


def _g(v):
    """4 significant digits; a negative number in parentheses, as it stands in a product."""
    return f"{v:.4g}" if v >= 0 else f"({v:.4g})"


def _matrix(name, A, indent):
    rows = np.array2string(np.asarray(A), precision=4).splitlines()
    pad = " " * (indent + len(name) + 3)
    return f"{' ' * indent}{name} = " + ("\n" + pad).join(rows)


def explain_xor(model, X, y, file=None):
    """The seed's XOR network (2-2-1, sigmoid, mse), one backward pass step by step in the seed's
    notation: the forward values, delta[O], the hidden deltas from the recursion, and every
    gradient as a delta times the input it multiplies; checked against bp's kernels."""
    import sys

    out = file or sys.stdout

    def say(text=""):
        print(text, file=out)

    hidden, output = model.layers[0], model.layers[-1]
    if (len(model) != 2 or output.units != 1 or hidden.activation != "sigmoid"
            or output.activation != "sigmoid" or not hidden.use_bias or not output.use_bias):
        raise ValueError(f"explain_xor explains the seed's XOR network (Dense(k, sigmoid), "
                         f"Dense(1, sigmoid), with biases). Received: {model!r}")
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).reshape(-1, 1)
    N = X.shape[0]
    W1, b1 = np.asarray(hidden.W, np.float64), np.asarray(hidden.b, np.float64)
    WO, bO = np.asarray(output.W, np.float64), np.asarray(output.b, np.float64)

    def sigmoid(z):
        return R.sigma("sigmoid", z)

    # ---- the pass, one formula per line ----
    z_in1 = X @ W1 + b1
    z_out1 = sigmoid(z_in1)
    f_in = z_out1 @ WO + bO
    f_out = sigmoid(f_in)
    L = float(np.mean((f_out - y) ** 2))
    tau_prime = f_out * (1 - f_out)
    delta_O = (2 / N) * (f_out - y) * tau_prime
    sigma_prime = z_out1 * (1 - z_out1)
    back = delta_O @ WO.T
    delta_1 = back * sigma_prime
    grad_WO, grad_bO = z_out1.T @ delta_O, delta_O.sum(axis=0)
    grad_W1, grad_b1 = X.T @ delta_1, delta_1.sum(axis=0)

    history = getattr(model, "history", None)
    trained = (f"after {len(history.epoch)} epochs of training" if history is not None
               and history.epoch else "at its current weights")
    k = hidden.units
    say(f"The XOR network 2-{k}-1 (sigmoid hidden, sigmoid output, mse), {trained}:")
    say("one more backpropagation, step by step, in the seed's notation. Layer 1 is hidden, O is")
    say("the output layer, x = z_out[0] is the input, rows s = 0..3 are the four samples.")
    say("  z_in[1] = x @ W[1] + b[1]      z_out[1] = sigma(z_in[1])      sigma = sigmoid")
    say("  f_in = z_out[1] @ W[O] + b[O]  f_out = tau(f_in)              tau = sigmoid")
    say(f"  L = (1/N) sum_s (f_out_s - y_s)^2,  N = {N};  sigma'(z_in) = z_out (1 - z_out)")
    say()
    say("Parameters")
    say(_matrix("W[1]", W1, 2) + "    " + f"b[1] = {np.array2string(b1, precision=4)}")
    say(_matrix("W[O]", WO, 2) + "    " + f"b[O] = {np.array2string(bO, precision=4)}")
    say()
    say("1. Forward pass; every value is cached for steps 2-4")
    cols = 9 * k + 2
    say(f"  {'s':<3}{'x':<6}{'z_in[1]':>{cols}}{'z_out[1]':>{cols}}{'f_in':>10}{'f_out':>9}"
        f"{'y':>4}")
    for s in range(N):
        say(f"  {s:<3}{' '.join(f'{v:g}' for v in X[s]):<6}"
            f"{''.join(f'{v:9.4f}' for v in z_in1[s]):>{cols}}"
            f"{''.join(f'{v:9.4f}' for v in z_out1[s]):>{cols}}"
            f"{f_in[s, 0]:10.4f}{f_out[s, 0]:9.4f}{y[s, 0]:>4g}")
    say(f"  L = {L:.6g}")
    say()
    say("2. Output error signal, once per sample: delta[O] = dL/df_in = (2/N) (f_out - y) tau'(f_in),")
    say("   tau'(f_in) = f_out (1 - f_out)")
    for s in range(N):
        say(f"  s={s}: (2/{N}) * ({_g(f_out[s, 0])} - {_g(y[s, 0])}) * {_g(tau_prime[s, 0])}"
            f" = {delta_O[s, 0]:.4g}")
    say()
    say("3. Hidden error signals from the recursion: delta[1] = (delta[O] @ W[O].T) * sigma'(z_in[1])")
    for s in range(N):
        for q in range(k):
            say(f"  s={s}, unit {q}: ({_g(delta_O[s, 0])} * {_g(WO[q, 0])}) * "
                f"{_g(sigma_prime[s, q])} = {delta_1[s, q]:.4g}")
    say()
    say("4. Every gradient is a delta times the input it multiplies, summed over the samples:")
    say("   dL/dW[i][p,q] = sum_s z_out[i-1][s,p] delta[i][s,q];  dL/db[i][q] = sum_s delta[i][s,q]")

    def line(name, inputs, deltas, input_name, delta_name, total):
        if inputs is None:
            products = " + ".join(_g(d) for d in deltas)
            say(f"  {name} = sum_s {delta_name} = {products} = {total:.4g}")
        else:
            products = " + ".join(f"{_g(a)}*{_g(d)}" for a, d in zip(inputs, deltas))
            say(f"  {name} = sum_s {input_name} {delta_name} = {products} = {total:.4g}")

    for p in range(k):
        line(f"dL/dW[O][{p},0]", z_out1[:, p], delta_O[:, 0], f"z_out[1][s,{p}]", "delta[O][s]",
             grad_WO[p, 0])
    line("dL/db[O][0]  ", None, delta_O[:, 0], None, "delta[O][s]", grad_bO[0])
    for p in range(X.shape[1]):
        for q in range(k):
            line(f"dL/dW[1][{p},{q}]", X[:, p], delta_1[:, q], f"x[s,{p}]", f"delta[1][s,{q}]",
                 grad_W1[p, q])
    for q in range(k):
        line(f"dL/db[1][{q}]  ", None, delta_1[:, q], None, f"delta[1][s,{q}]", grad_b1[q])
    say()
    n_grads = (k + 1) + (X.shape[1] + 1) * k
    say(f"5. Reuse: each delta[O][s] was computed once and used {k + 1} times for W[O], b[O] and")
    say(f"   {k} times for delta[1][s]; each delta[1][s,q] {X.shape[1] + 1} times. The {n_grads} "
        "gradients cost one")
    say("   forward and one backward pass, not one chain-rule product each.")
    # the same numbers from bp's compiled kernels
    kern = model.gradients(X, y, loss="mse")
    diffs = [np.max(np.abs(np.asarray(a, np.float64) - b)) for a, b in zip(
        [kern[0][0], kern[0][1], kern[1][0], kern[1][1]], [grad_W1, grad_b1, grad_WO, grad_bO])]
    dd = [np.max(np.abs(np.asarray(a, np.float64) - b))
          for a, b in zip(model.error_signals, [delta_1, delta_O])]
    say(f"   bp's compiled kernels (model.gradients, model.error_signals) give the same numbers: "
        f"max |difference| {max(diffs + dd):.1e}")
    return {"z_in": [z_in1, f_in], "z_out": [z_out1, f_out], "delta": [delta_1, delta_O],
            "grad_W": [grad_W1, grad_WO], "grad_b": [grad_b1, grad_bO], "loss": L}


# ---- python -m bp explain ------------------------------------------------------------------------

_OUTPUT_FOR_LOSS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "mse": "identity"}


def add_explain_arguments(p):
    """The options of ``python -m bp explain``."""
    from .__main__ import _positive_int, _widths

    p.add_argument("--inputs", type=_positive_int, default=16, help="input width (default 16)")
    p.add_argument("--layers", type=_widths, default=[32, 32],
                   help="hidden widths, comma-separated (default 32,32)")
    p.add_argument("--outputs", type=_positive_int, default=10, help="output width (default 10)")
    p.add_argument("--activation", choices=[a for a in bpcore.ACTIVATIONS if a != "softmax"],
                   default="tanh", help="hidden activation (default tanh)")
    p.add_argument("--loss", choices=tuple(_OUTPUT_FOR_LOSS), default="cross_entropy",
                   help="cross_entropy (softmax output, default), binary_cross_entropy "
                        "(sigmoid), mse (identity)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="samples N (default 16)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--diagnose", action="store_true",
                   help="also print the per-layer diagnosis and per-sample gradient norms")


def explain_command(args):
    """python -m bp explain: bp.explain on a random batch through a small network."""
    import sys

    from .layers import Dense
    from .sequential import Sequential

    rng = np.random.default_rng(args.seed)
    N = args.batch_size
    X = rng.standard_normal((N, args.inputs))
    if args.loss == "cross_entropy":
        y = rng.integers(0, args.outputs, N)
    elif args.loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (N, args.outputs)).astype(float)
    else:
        y = rng.standard_normal((N, args.outputs))
    layers = [Dense(w, activation=args.activation) for w in args.layers]
    layers.append(Dense(args.outputs, activation=_OUTPUT_FOR_LOSS[args.loss]))
    model = Sequential(layers, dtype=args.dtype, seed=args.seed)
    try:
        result = explain(model, X, y, loss=args.loss)
    except ValueError as err:
        print(f"python -m bp explain: {err}", file=sys.stderr)
        return 2
    print(result)
    if args.diagnose:
        print()
        print("Diagnosis (model.diagnose):")
        print(model.diagnose(X, y, loss=args.loss))
        norms = model.per_sample_gradient_norms(X, y, loss=args.loss)
        total = np.sqrt((norms ** 2).sum(axis=1))
        print(f"per-sample gradient norms (model.per_sample_gradient_norms): "
              f"min {total.min():.3g}, median {np.median(total):.3g}, max {total.max():.3g}")
    return 0 if result.agree else 1
