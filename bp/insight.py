"""Insight: the backpropagation argument, counted and timed on the user's own network.

``bp.explain`` gets every gradient of a network three ways (the naive chain rule, forward caching,
backpropagation: bp/_ways.py, with their exact multiply-add counts) and times them beside bp's
compiled kernels; ``explain_xor`` walks through one backward pass of the XOR network in the
notation of the user guide's mathematics page; per-sample gradient norms and the per-layer
diagnosis of the error signals are in bp/_diagnostics.py and exported here. All of it takes a
model object and works through bp._passes and the model's public methods.

Layers are numbered from 0 here, as in ``model.layers``; the mathematics' notation
(``python -m bp xor --explain``) numbers the hidden layer 1 and calls the output layer O.
"""

import math
import sys
import time

import numpy as np

from . import _passes, _threads
from . import _reference as R
from . import losses as _losses
from ._ops import refuse_beyond_dense
from ._diagnostics import (EXPLODING, SATURATION, VANISHING, Diagnosis,  # noqa: F401
                           DiagnosticsLogger, _inputs, diagnose, per_sample_gradient_norms)
from ._ways import (MAX_NAIVE_MULTIPLY_ADDS, _Net, backprop_gradients,  # noqa: F401
                    forward_gradients, naive_gradients, operation_counts)
from ._ways import _forward_pass

WAYS = ("naive", "forward", "backprop")
_WAY_NAMES = {
    "naive": "(1) naive chain rule, per parameter",
    "forward": "(2) forward caching, per parameter",
    "backprop": "(3) backpropagation, cached deltas",
}


# ---- bp's compiled kernels, called directly (no validation in the timed loop) --------------------


class _Compiled:
    """One forward pass, and one backpropagation (forward, loss, delta[O], hidden deltas,
    gradients), through bp's per-layer kernel calls (bp._passes.Passes.backward_layers), into
    buffers of its own over a copy of the model's parameters."""

    def __init__(self, model, X, Y, loss, n_threads):
        self.loss, self.nt = loss, n_threads
        self.X = np.ascontiguousarray(X, model.dtype)
        self.Y = np.ascontiguousarray(Y, model.dtype)
        self.scale = _losses.default_scale(loss, *self.Y.shape)
        self.passes = _passes.Passes(model.layers, model.get_flat_params(), compiled=False)
        self.ws = self.passes.new_workspace(self.X.shape[0])

    def forward(self):
        return self.passes.forward(self.X, self.ws, self.nt)

    def backprop(self):
        self.passes.backward_layers(self.X, self.Y, None, self.ws, self.loss, self.scale, 0.0,
                                    self.passes.grad_views, self.nt)

    def flat_gradient(self):
        return self.passes.grads.astype(np.float64)


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

    (1) the naive chain rule, (2) forward caching, (3) backpropagation: exact multiply-add counts
    from the architecture, measured times (NumPy in float64 for all three, and bp's compiled
    kernels for backpropagation and the forward pass), and the gradients of all three checked
    against each other and against bp's kernels. Inference mode (a Dropout is the identity) and
    the data loss (no regulariser penalty).

    The naive way costs about N P^2 multiply-adds, so explain refuses a network and batch whose
    naive count exceeds ``bp.insight.MAX_NAIVE_MULTIPLY_ADDS`` (1e9, a few seconds; e.g. P = 5,000
    parameters at N = 32 is accepted), and hidden activations must act elementwise (no hidden
    softmax).

    Parameters
    ----------
    model : Sequential
        The network (built from X if it is not yet).
    X : array-like of shape (N, n_features)
        The batch.
    y : array-like
        Its targets, as for fit.
    loss : str, optional
        Default: the model's loss, else the output activation's natural one.
    budget : float, default=0.1
        Seconds of timing per measured way (a slow way runs once).
    n_threads : int, optional
        Threads of bp's kernels; default bp's setting.

    Returns
    -------
    bp.insight.Explanation
        Print it for the table; the counts, times, gradients and ``agree`` are attributes.

    See Also
    --------
    Sequential.diagnose : The error signals of each layer.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((16, 5)), np.arange(16) % 3
    >>> model = bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
    ...                       seed=0)
    >>> result = bp.explain(model, X, y, budget=0.01)
    >>> result.agree, result.n_params
    (True, 75)
    >>> result.counts["naive"] > result.counts["forward"] > result.counts["backprop"]
    True
    >>> print(result)                                   # doctest: +ELLIPSIS
    bp.explain: network 5-8-3 (tanh, softmax), loss cross_entropy, batch N = 16
    ...
    """
    refuse_beyond_dense(getattr(model, "layers", []), "explain")
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


# ---- python -m bp xor --explain ------------------------------------------------------------------


def _g(v):
    """4 significant digits; a negative number in parentheses, as it stands in a product."""
    return f"{v:.4g}" if v >= 0 else f"({v:.4g})"


def _matrix(name, A, indent):
    rows = np.array2string(np.asarray(A), precision=4).splitlines()
    pad = " " * (indent + len(name) + 3)
    return f"{' ' * indent}{name} = " + ("\n" + pad).join(rows)


def explain_xor(model, X, y, file=None):
    """The XOR network (2-2-1, sigmoid, mse), one backward pass step by step in the notation of
    the mathematics: the forward values, delta[O], the hidden deltas from the recursion, and
    every gradient as a delta times the input it multiplies; checked against bp's kernels."""
    out = file or sys.stdout

    def say(text=""):
        print(text, file=out)

    hidden, output = model.layers[0], model.layers[-1]
    if (len(model) != 2 or output.units != 1 or hidden.activation != "sigmoid"
            or output.activation != "sigmoid" or not hidden.use_bias or not output.use_bias):
        raise ValueError(f"explain_xor explains the XOR network (Dense(k, sigmoid), "
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
    loss_value = float(np.mean((f_out - y) ** 2))
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
    say("one more backpropagation, step by step, in bp's notation. Layer 1 is hidden, O is")
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
    say(f"  L = {loss_value:.6g}")
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
            "grad_W": [grad_W1, grad_WO], "grad_b": [grad_b1, grad_bO], "loss": loss_value}
