"""The passes of one built model over its flat buffers.

    forward      z_in[i] = z_out[i-1] @ W[i] + b[i];  z_out[i] = sigma(z_in[i])
    error signal delta[O] = dL/df_in;  delta[i] = (delta[i+1] @ W[i+1].T) * sigma'(z_in[i])
    gradients    grad_W[i] = z_out[i-1].T @ delta[i];  grad_b[i] = sum_batch delta[i]

All of a model's parameters live in one flat buffer, each layer's W (n_in x n_out, row-major)
then its b; the gradients live in a second buffer with the same layout (``flat_layout``). A
``Passes`` object holds the views into both, the per-batch-size workspaces (the cached z_in, z_out
and delta of every layer), and runs the backward pass either through the compiled engine
(bpcore/_network.pyx: the whole network in one nogil call) or through its readable twin, one
validated-free kernel call per layer and pass (``backward_layers``). That choice is made here and
nowhere else: ``Passes.compiled``. The input checks every entry point shares live here too, so
that the model, the training loop and insight check alike.

The functions take the model as an argument (its ``layers``, ``dtype``, ``input_dim``, ``loss``)
and never import it: the model imports this module, not the other way round.
"""

import math

import numpy as np

import bpcore
from bpcore import _dense_forward, _error_signal, _gradients, _loss, _network, _param_update

from . import losses as _losses
from ._validation import as_float_array, check_finite


# ---- input checks shared by every entry point ----------------------------------------------------


def check_layers(layers):
    """ValueError for a model with no layer: the one place this rule is written."""
    if not layers:
        raise ValueError("a Sequential needs at least one layer. Received: no layers")


def check_X(model, X, name="X"):
    """X as a 2-D float array of the model's dtype, with the model's input width, all finite."""
    X = as_float_array(name, X, model.dtype, ndim=2)
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one sample. Received: shape {X.shape}")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has no features. Received: shape {X.shape}")
    expected = model.input_dim if model.input_dim is not None else (
        model.layers[0].input_dim if model.layers else None)
    if expected is not None and X.shape[1] != expected:
        raise ValueError(f"{name} must have {expected} features (the model's input width). "
                         f"Received: {name} with shape {X.shape}")
    check_finite(name, X)
    return X


def check_loss(model, loss):
    """The canonical loss: `loss`, else the model's, else the output activation's default;
    checked against the output activation."""
    if loss is None:
        loss = model.loss
    if loss is None:
        loss = _losses.default_loss(model.layers[-1].activation if model.layers else "identity")
    loss = _losses.get(loss)
    check_layers(model.layers)
    _losses.check_pair(loss, model.layers[-1].activation)
    return loss


def check_sample_weight(sample_weight, n, dtype):
    """None, or one finite non-negative weight per sample as a 1-D array of `dtype`."""
    if sample_weight is None:
        return None
    w = as_float_array("sample_weight", sample_weight, dtype, ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"sample_weight must have one entry per sample ({n}). "
                         f"Received: shape {w.shape}")
    check_finite("sample_weight", w)
    if (w < 0).any():
        i = int(np.argwhere(w < 0)[0, 0])
        raise ValueError(f"sample_weight must be non-negative. Received: {w[i]} at index {i}")
    return w


def prepare(model, X, y, loss, sample_weight=None):
    """(loss, X, Y, w) checked for a backward pass or an evaluation: Y as (n, n_outputs) rows."""
    check_layers(model.layers)
    loss = check_loss(model, loss)
    X = check_X(model, X)
    Y = _losses.prepare_targets(loss, y, X.shape[0], model.layers[-1].units, model.dtype)
    w = check_sample_weight(sample_weight, X.shape[0], model.dtype)
    return loss, X, Y, w


# ---- the flat layout -----------------------------------------------------------------------------


def flat_layout(layers, input_dims):
    """Where each layer's W (n_in x n_out, row-major) and b live in the flat buffers: a list of
    (n_in, n_out, offset of W, offset of b or -1), and the total size."""
    layout, offset = [], 0
    for layer, n_in in zip(layers, input_dims):
        w_off, offset = offset, offset + n_in * layer.units
        b_off = -1
        if layer.use_bias:
            b_off, offset = offset, offset + layer.units
        layout.append((n_in, layer.units, w_off, b_off))
    return layout, offset


def split(flat, layout):
    """(W, b) views into a flat buffer, one pair per layer of the layout (b None without bias)."""
    return [(flat[w_off:w_off + n_in * n_out].reshape(n_in, n_out),
             None if b_off < 0 else flat[b_off:b_off + n_out])
            for n_in, n_out, w_off, b_off in layout]


def initial_params(layers, input_dims, initial_W, dtype):
    """A new flat parameter buffer: each layer's W from initial_W, every bias zero."""
    layout, size = flat_layout(layers, input_dims)
    params = np.empty(size, dtype)
    for (W, b), W0 in zip(split(params, layout), initial_W):
        W[...] = W0
        if b is not None:
            b[...] = 0
    return params


def readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


def all_finite(flat, n_threads):
    """True if every entry of flat is finite (its sum of squares is; overflow counts as not)."""
    return math.isfinite(_param_update.sum_of_squares(flat, n_threads))


class Workspace:
    """Per-batch-size buffers of one model: the cached z_in, z_out and delta of every layer,
    and room to gather a shuffled batch (X, Y, w) into.

    Allocated once for each batch size a model meets and reused for every batch of that size,
    so a steady-state training step allocates nothing.
    """

    def __init__(self, layers, dtype, n_in, n_rows):
        self.n_rows = n_rows
        self.z_in = [np.empty((n_rows, layer.units), dtype) for layer in layers]
        self.z_out = [np.empty((n_rows, layer.units), dtype) for layer in layers]
        self.delta = [np.empty((n_rows, layer.units), dtype) for layer in layers]
        self.per_sample = np.empty(n_rows, dtype)
        self.X = np.empty((n_rows, n_in), dtype)
        self.Y = np.empty((n_rows, layers[-1].units), dtype)
        self.w = np.empty(n_rows, dtype)


# Threads lose on a training step below this many FLOPs (2 threads against 1 on an AMD EPYC,
# bench/README.md: digits at batch 32, 2.7 MFLOP a step, is no faster and slower when the
# other core is busy; from ~10 MFLOP on 2 threads win): such steps run BLAS on one thread.
MIN_PARALLEL_STEP_FLOPS = 8_000_000


class Passes:
    """The forward and backward passes of one built model, over its flat buffers.

    Parameters
    ----------
    layers : the model's Dense layers (built: each knows its input_dim)
    params, grads : the flat parameter and gradient buffers (grads zeros if None)
    compiled : bool, default True
        Run the backward pass in the compiled engine (True) or as the per-layer Python twin.
    """

    def __init__(self, layers, params, grads=None, compiled=True):
        self.layers = layers
        self.dtype = params.dtype
        self.n_in = layers[0].input_dim
        self.params = params
        self.grads = np.zeros_like(params) if grads is None else grads
        self.layout = flat_layout(layers, [layer.input_dim for layer in layers])[0]
        self.param_views = split(params, self.layout)
        self.grad_views = split(self.grads, self.layout)
        self.compiled = compiled
        self.last = None  # (workspace, rows) of the last backward pass
        self._workspaces = {}
        self._engine = None

    # ---- buffers ---------------------------------------------------------------------------
    def views(self, flat):
        """(W, b)-shaped views, per layer, into a flat buffer laid out like the parameters."""
        return split(flat, self.layout)

    def new_workspace(self, n_rows):
        return Workspace(self.layers, self.dtype, self.n_in, n_rows)

    def workspace(self, n_rows):
        """The model's shared workspace for batches of n_rows rows (made on first use)."""
        ws = self._workspaces.get(n_rows)
        if ws is None:
            ws = self._workspaces[n_rows] = self.new_workspace(n_rows)
        return ws

    def engine(self, shared=True):
        """The compiled engine over the flat buffers; shared=False gives a private one, for
        calls that must not disturb another's binding."""
        if shared and self._engine is not None:
            return self._engine
        table = [(n_in, n_out, bpcore.ACTIVATIONS[layer.activation], layer.alpha, w_off, b_off)
                 for layer, (n_in, n_out, w_off, b_off) in zip(self.layers, self.layout)]
        net = _network.Network(self.params, self.grads, table)
        if shared:
            self._engine = net
        return net

    def step_threads(self, rows, n_threads):
        """The thread count for training steps of `rows` rows: n_threads, or 1 below the
        crossover (the step's FLOPs: 2 * rows * n_in * n_out per product, 3 products a layer
        but the first)."""
        flops = sum((2 if i == 0 else 3) * 2 * rows * n_in * n_out
                    for i, (n_in, n_out, _, _) in enumerate(self.layout))
        return n_threads if flops >= MIN_PARALLEL_STEP_FLOPS else 1

    # ---- the passes ------------------------------------------------------------------------
    def forward(self, X, z_in, z_out, n_threads):
        """The forward pass of every layer into the given buffers; returns f_out."""
        z = X
        for layer, (W, b), zi, zo in zip(self.layers, self.param_views, z_in, z_out):
            _dense_forward.dense_forward(z, W, b, zi, zo, bpcore.ACTIVATIONS[layer.activation],
                                         layer.alpha, n_threads)
            z = zo
        return z

    def infer(self, X, n_threads, out=None):
        """The forward pass of X into buffers of its own (so several threads may call it at
        once); f_out goes into `out` when given. Returns (f_in, f_out)."""
        rows = X.shape[0]
        z_in = [np.empty((rows, layer.units), self.dtype) for layer in self.layers]
        z_out = [np.empty((rows, layer.units), self.dtype) for layer in self.layers[:-1]]
        z_out.append(np.empty((rows, self.layers[-1].units), self.dtype) if out is None else out)
        return z_in[-1], self.forward(X, z_in, z_out, n_threads)

    def loss_value(self, f_in, f_out, Y, w, loss, per_sample, n_threads):
        """L = scale * sum_i w_i l_i of one batch with bp.losses' mean reduction (the per-sample
        losses into per_sample)."""
        return _loss.loss_value(f_in, f_out, Y, w, bpcore.LOSSES[loss],
                                _losses.default_scale(loss, *Y.shape), per_sample, n_threads)

    def backward(self, X, Y, w, ws, loss, scale, beta, grads, n_threads, private=False):
        """Forward, loss, error signals and gradients of one batch held in workspace ws
        (grads = beta * grads + this batch's, grads a flat buffer laid out as the parameters);
        returns the batch loss. One compiled call, or with compiled off the per-layer twin.
        private=True uses an engine of its own (for calls that may run beside others)."""
        if self.compiled:
            net = self.engine(shared=not private)
            net.bind(ws)
            value = net.backward(X, Y, w, bpcore.LOSSES[loss], scale, beta, n_threads, grads)
        else:
            views = self.grad_views if grads is self.grads else self.views(grads)
            value = self.backward_layers(X, Y, w, ws, loss, scale, beta, views, n_threads)
        self.last = (ws, X.shape[0])
        return value

    def backward_layers(self, X, Y, w, ws, loss, scale, beta, grad_views, n_threads):
        """The backward pass as a Python loop of one kernel call per layer and pass: the
        readable version, and the twin the engine is tested against."""
        layers = self.layers
        f_out = self.forward(X, ws.z_in, ws.z_out, n_threads)
        out = layers[-1]
        loss_value = _loss.loss_value(ws.z_in[-1], f_out, Y, w, bpcore.LOSSES[loss], scale,
                                      ws.per_sample, n_threads)
        # delta[O], then the recursion from the output backwards; each delta is computed once and
        # used twice: for this layer's gradient and for the previous layer's delta.
        _error_signal.output_delta(ws.z_in[-1], f_out, Y, w, bpcore.LOSSES[loss],
                                   bpcore.ACTIVATIONS[out.activation], out.alpha, scale,
                                   ws.delta[-1], n_threads)
        for i in range(len(layers) - 1, -1, -1):
            z_prev = X if i == 0 else ws.z_out[i - 1]
            grad_W, grad_b = grad_views[i]
            _gradients.gradients(z_prev, ws.delta[i], beta, grad_W, grad_b, n_threads)
            if i > 0:
                prev = layers[i - 1]
                _error_signal.hidden_delta(ws.delta[i], self.param_views[i][0], ws.z_in[i - 1],
                                           ws.z_out[i - 1], bpcore.ACTIVATIONS[prev.activation],
                                           prev.alpha, ws.delta[i - 1], n_threads)
        return loss_value

    # ---- what the last backward pass left --------------------------------------------------
    def cached(self, name):
        """Snapshots of the last backward pass's z_in, z_out or delta, per layer (read-only
        copies, not views of the reused workspace: a view would change under the user's feet
        at the next step, and its writeable flag could be turned back on)."""
        if self.last is None:
            return None
        ws, rows = self.last
        snapshots = tuple(a[:rows].copy() for a in getattr(ws, name))
        for a in snapshots:
            a.flags.writeable = False
        return snapshots

    def first_non_finite(self, X_batch):
        """(layer, sample, where) of the first non-finite value of the last backward pass, in
        the order the step computes them: the forward pass, the loss, the error signals from
        the output back, the gradients. X_batch is that pass's input."""
        ws, rows = self.last
        for i, z in enumerate(ws.z_out):
            bad = ~np.isfinite(z[:rows])
            if bad.any():
                return i, int(np.argwhere(bad)[0, 0]), "forward (z_out)"
        bad = ~np.isfinite(ws.per_sample[:rows])
        if bad.any():  # e.g. (f_out - y)^2 overflows while f_out - y does not
            return None, int(np.argwhere(bad)[0, 0]), "loss"
        for i in range(len(ws.delta) - 1, -1, -1):
            bad = ~np.isfinite(ws.delta[i][:rows])
            if bad.any():
                return i, int(np.argwhere(bad)[0, 0]), "error signal (delta)"
        for i in range(len(self.grad_views) - 1, -1, -1):
            grad_W, grad_b = self.grad_views[i]
            if np.isfinite(grad_W).all() and (grad_b is None or np.isfinite(grad_b).all()):
                continue
            # Every delta and input is finite, so a product overflowed: sample r's own term of
            # grad_W is outer(z_out_prev[r], delta[r]), non-finite iff max|z| * max|delta| is.
            z_prev = X_batch if i == 0 else ws.z_out[i - 1][:rows]
            with np.errstate(over="ignore"):
                term = np.abs(z_prev).max(axis=1) * np.abs(ws.delta[i][:rows]).max(axis=1)
            bad = np.argwhere(~np.isfinite(term))
            return i, (int(bad[0, 0]) if bad.size else None), "gradients"
        return None, None, "gradients"
