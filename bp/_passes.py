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
nowhere else: ``Passes.compiled``. predict and evaluate run the forward pass alone through
bpcore/_infer.pyx (the whole network in one call, over cache-sized blocks of rows, shared with
helper threads). The input checks every entry point shares live here too, so that the model,
the training loop and insight check alike.

The functions take the model as an argument (its ``layers``, ``dtype``, ``input_dim``, ``loss``)
and never import it: the model imports this module, not the other way round.
"""

import math
import threading

import numpy as np

import bpcore
from bpcore import _dense_forward, _dropout, _error_signal, _gradients, _infer, _loss

# isort: split
from bpcore import _network, _param_update, _regularize

from . import _threads
from . import losses as _losses
from . import regularizers as _regularizers
from ._validation import as_float_array, check_finite

# ---- input checks shared by every entry point ----------------------------------------------------


def check_layers(layers):
    """ValueError for a model with no layer: the one place this rule is written."""
    if not layers:
        raise ValueError("a Sequential needs at least one layer. Received: no layers")
    if layers[-1].dropout is not None:
        raise ValueError(f"a Dropout must be followed by a Dense layer; the output layer "
                         f"{layers[-1]!r} has one after it")


def layer_widths(layers, n_in):
    """[n_in, units of each layer], after checking that each layer's own input_dim (if it
    has one) is the width it receives."""
    widths = [n_in] + [layer.units for layer in layers]
    for i, layer in enumerate(layers):
        if layer.input_dim is not None and layer.input_dim != widths[i]:
            raise ValueError(f"layer {i} ({layer!r}) expects input_dim={layer.input_dim} but "
                             f"receives {widths[i]} features")
    return widths


def attach_dropout(layers, dropout):
    """Fold a Dropout into the Dense layer before it (its output is what gets dropped); rate 0
    attaches nothing, so the model is the one without the layer, bit for bit."""
    if not layers:
        raise ValueError("a Dropout needs a Dense layer before it. Received: Dropout first")
    layer = layers[-1]
    if layer.dropout is not None:
        raise ValueError(f"{layer!r} has a Dropout already; two in a row are one of rate "
                         f"1 - (1 - a)(1 - b)")
    if layer.activation == "softmax":
        raise ValueError("a Dropout after a softmax layer is refused: softmax's derivative is "
                         "not elementwise, so the mask cannot be applied to its error signal")
    if dropout.rate > 0:
        layer.dropout = dropout


def draw_dropout_seeds(layers, rng):
    """Give each Dropout without a seed one from the model's generator (at build, after the
    weights: a model without dropout draws what it always drew)."""
    for layer in layers:
        if layer.dropout is not None and layer.dropout._key is None:
            layer.dropout._key = int(rng.integers(2**63))


def check_X(model, X, name="X"):
    """X as a 2-D float array of the model's dtype, with the model's input width, all finite."""
    X = as_float_array(name, X, model.dtype, ndim=2)
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one sample. Received: shape "
                         f"{X.shape}")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has no features. Received: shape {X.shape}")
    expected = model.input_dim if model.input_dim is not None else (
        model.layers[0].input_dim if model.layers else None)
    if expected is not None and X.shape[1] != expected:
        raise ValueError(f"{name} must have {expected} features (the model's input width). "
                         f"Received: {name} with shape {X.shape}")
    check_finite(name, X)
    return X


def check_out(out, X, n_out, dtype):
    """predict's out=: a writeable C-contiguous (len(X), n_out) array of the model's dtype that
    shares no memory with X (the pass reads X while it writes out)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array. Received: {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must have the model's dtype {dtype}. Received: out with dtype "
                        f"{out.dtype}")
    if out.shape != (X.shape[0], n_out):
        raise ValueError(f"out must have shape {(X.shape[0], n_out)}. Received: out with shape "
                         f"{out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous. Received: a Fortran-ordered or strided array")
    if not out.flags.writeable:
        raise ValueError("out must be writeable. Received: a read-only array")
    if np.may_share_memory(out, X):
        raise ValueError("out must not overlap X: the forward pass reads X while it writes out")


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
    quick = _prepare_quickly(model, X, y, loss, sample_weight)
    if quick is not None:
        return quick
    check_layers(model.layers)
    loss = check_loss(model, loss)
    X = check_X(model, X)
    Y = _losses.prepare_targets(loss, y, X.shape[0], model.layers[-1].units, model.dtype)
    w = check_sample_weight(sample_weight, X.shape[0], model.dtype)
    return loss, X, Y, w


def _prepare_quickly(model, X, y, loss, sample_weight):
    """prepare's answer in a few microseconds for the common batch (a finite C-ordered X of the
    model's dtype and width, int64 class labels, cross-entropy, no weights), else None: then
    prepare's full checks run and name what is wrong. Nothing is cached: each call checks the
    arrays it is given (measured: see bench/README.md, Python call costs)."""
    layers = model.layers
    if (sample_weight is not None or type(X) is not np.ndarray or type(y) is not np.ndarray
            or X.dtype != model.dtype or X.ndim != 2 or not X.flags.c_contiguous
            or y.dtype != np.int64 or y.ndim != 1 or not y.flags.c_contiguous or not layers
            or layers[-1].dropout is not None):
        return None
    n, width = X.shape
    expected = model.input_dim if model.input_dim is not None else layers[0].input_dim
    if n == 0 or width == 0 or width != expected or y.shape[0] != n:
        return None
    loss = check_loss(model, loss)
    if loss != "cross_entropy" or not all_finite(X.reshape(-1), 1):
        return None
    Y = np.empty((n, layers[-1].units), model.dtype)
    if _loss.one_hot(y, Y) >= 0:  # a label out of range: losses.prepare_targets says which
        return None
    return loss, X, Y, None


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
        # a Dropout's mask (bytes) and the dropped output z_out * mask / (1 - rate) the next
        # layer reads in training; None for the layers without one
        self.mask = [None if layer.dropout is None else np.empty((n_rows, layer.units), np.uint8)
                     for layer in layers]
        self.z_drop = [None if layer.dropout is None else np.empty((n_rows, layer.units), dtype)
                       for layer in layers]
        self.per_sample = np.empty(n_rows, dtype)
        self.X = np.empty((n_rows, n_in), dtype)
        self.Y = np.empty((n_rows, layers[-1].units), dtype)
        self.w = np.empty(n_rows, dtype)


# The update and the scans around it run on one thread outside the engine too, as inside it
# (bpcore/_network.pyx's header): an OpenMP team right after threaded BLAS calls fights
# OpenBLAS's still-spinning threads for the cores (measured: see bench/README.md, OpenMP teams
# after BLAS calls).
# Their results do not depend on the thread count.
ELEMENTWISE_THREADS = 1

# predict runs the layers over blocks of rows whose activations (two buffers of the widest hidden
# layer) stay in L2: PREDICT_BLOCK_BYTES for both (measured: see bench/README.md, predict's blocks).
PREDICT_BLOCK_BYTES = 512 * 1024

# Threads lose on a training step below this many FLOPs (a digits step at batch 32 is no faster
# on 2 threads; measured: see bench/README.md, Threads on a whole step): such steps run BLAS on
# one thread.
MIN_PARALLEL_STEP_FLOPS = 8_000_000


_pools: dict = {}  # helper threads for predict, by count: {n - 1: ThreadPoolExecutor}


def _helpers(n_threads):
    """The submit of a pool of n_threads - 1 threads (None for one thread), made on first use."""
    if n_threads <= 1:
        return None
    pool = _pools.get(n_threads - 1)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor
        pool = _pools.setdefault(n_threads - 1, ThreadPoolExecutor(n_threads - 1, "bp-predict"))
    return pool.submit


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
        # per layer (kernel l1, l2, bias l1, l2): the weight penalties of bp.regularizers
        self.penalties = [(*_regularizers.coefficients(getattr(layer, "kernel_regularizer", None)),
                           *_regularizers.coefficients(getattr(layer, "bias_regularizer", None)))
                          for layer in layers]
        self.penalized = any(any(p) for p in self.penalties)
        self.last = None  # (workspace, rows) of the last backward pass
        self._workspaces = {}
        self._engine = None
        self._backup = None
        # private (engine, workspace) pairs for calls that may run beside others, by rows
        self._free = {}
        self._held = None  # the pair the last private pass used: kept out of the pool
        self._lock = threading.Lock()
        self._step_flops_per_row = sum((2 if i == 0 else 3) * 2 * n_in * n_out
                                       for i, (n_in, n_out, _, _) in enumerate(self.layout))
        self._inference = None  # bpcore._infer.Inference, for predict
        # the bytes of one row in predict's two block buffers (the widest hidden layer's)
        self._row_bytes = 2 * max([L.units for L in layers[:-1]] or [1]) * self.dtype.itemsize

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

    def backup(self):
        """A buffer like params that the training guard saves them in before a risky update
        (made on first use; one per model is enough, as only one fit runs at a time)."""
        if self._backup is None:
            self._backup = np.empty_like(self.params)
        return self._backup

    def engine(self, shared=True):
        """The compiled engine over the flat buffers; shared=False gives a private one, for
        calls that must not disturb another's binding."""
        if shared and self._engine is not None:
            return self._engine
        net = _network.Network(self.params, self.grads, self._table())
        if self.penalized:
            net.set_penalties(self.penalties)
        if any(layer.dropout is not None for layer in self.layers):
            net.set_dropout([None if layer.dropout is None else
                             (layer.dropout._key, _dropout.threshold(layer.dropout.rate),
                              1.0 / (1.0 - layer.dropout.rate)) for layer in self.layers])
        if shared:
            self._engine = net
        return net

    def step_threads(self, rows, n_threads):
        """The thread count for training steps of `rows` rows: n_threads, or 1 below the
        crossover (the step's FLOPs: 2 * rows * n_in * n_out per product, 3 products a layer
        but the first)."""
        return n_threads if rows * self._step_flops_per_row >= MIN_PARALLEL_STEP_FLOPS else 1

    # ---- the passes ------------------------------------------------------------------------
    def forward(self, X, z_in, z_out, n_threads, dropout=None):
        """The forward pass of every layer into the given buffers; returns f_out. Inference
        unless dropout = (workspace, draw): then the Dropouts draw training batch `draw`'s masks
        into the workspace and the next layer reads the dropped output."""
        z = X
        layers = zip(self.layers, self.param_views, z_in, z_out)
        for i, (layer, (W, b), zi, zo) in enumerate(layers):
            _dense_forward.dense_forward(z, W, b, zi, zo, bpcore.ACTIVATIONS[layer.activation],
                                         layer.alpha, n_threads)
            z = zo
            if dropout is not None and layer.dropout is not None:
                ws, draw = dropout
                rows = zo.shape[0]
                z = ws.z_drop[i][:rows]
                _dropout.dropout_forward(zo, layer.dropout._key, draw, layer.dropout.rate,
                                         ws.mask[i][:rows], z, n_threads)
        return z

    def predict(self, model, X, n_threads, out=None):
        """f_out of X through bpcore/_infer.pyx: the whole network in one call, over blocks of
        rows, its buffers per call (so several threads may call it at once). X is checked here:
        in C when it is already a finite C-contiguous array of the dtype and width, else by
        check_X, which converts it or names what is wrong."""
        inference = self._get_inference()
        if not inference.ready(X):
            X = check_X(model, X)
        n_threads = self._predict_threads(X.shape[0], n_threads)
        if out is not None:
            check_out(out, X, self.layers[-1].units, self.dtype)
        f_out = inference.run(X, out, self._block_rows(), n_threads, None,
                              _helpers(n_threads))
        if f_out is None:
            check_X(model, X)  # X holds a NaN or an infinity: say where (nothing was written)
        return f_out

    def _get_inference(self):
        inference = self._inference
        if inference is None:
            inference = self._inference = _infer.Inference(self.params, self._table())
        return inference

    def _block_rows(self):
        """Rows per block: the two buffers in PREDICT_BLOCK_BYTES. Not a share of the rows per
        thread: a gemm's rounding depends on its number of rows, and predict gives the same bits
        whatever the thread count (threads help from two blocks on)."""
        return max(8, PREDICT_BLOCK_BYTES // self._row_bytes)

    def _predict_threads(self, rows, n_threads):
        """The threads for a forward pass of `rows` rows, one below the training step's
        crossover (step_threads: a forward pass runs the same products), and the BLAS pools held
        to one: the threads share out blocks of rows (bpcore/_infer.pyx)."""
        _threads.hold_blas(1)
        return self.step_threads(rows, n_threads)

    def evaluate(self, X, Y, w, loss, n_threads, penalty=True):
        """The loss L of the checked batch (X, Y, w) and f_out: predict's pass, which also keeps
        f_in, then the loss on one thread (an OpenMP team after BLAS's products fights BLAS's
        spinning threads: see bench/README.md, OpenMP teams after BLAS calls). penalty=False
        leaves the layers' regularisers out (fit's validation in parts adds them once)."""
        rows, n_out = X.shape[0], self.layers[-1].units
        n_threads = self._predict_threads(rows, n_threads)
        f_in, f_out = np.empty((rows, n_out), self.dtype), np.empty((rows, n_out), self.dtype)
        self._get_inference().run(X, f_out, self._block_rows(), n_threads, f_in,
                                  _helpers(n_threads))
        value = self.loss_value(f_in, f_out, Y, w, loss, np.empty(rows, self.dtype), 1, penalty)
        return value, f_out

    def _table(self):
        """Per layer: (n_in, n_out, activation code, alpha, offset of W, offset of b or -1)."""
        return [(n_in, n_out, bpcore.ACTIVATIONS[layer.activation], layer.alpha, w_off, b_off)
                for layer, (n_in, n_out, w_off, b_off) in zip(self.layers, self.layout)]

    def loss_value(self, f_in, f_out, Y, w, loss, per_sample, n_threads, penalty=True):
        """L = scale * sum_i w_i l_i of one batch with bp.losses' mean reduction (the per-sample
        losses into per_sample), plus (unless penalty=False) the layers' regularisers as a
        training step adds them."""
        value = _loss.loss_value(f_in, f_out, Y, w, bpcore.LOSSES[loss],
                                 _losses.default_scale(loss, *Y.shape), per_sample, n_threads)
        return value + self.penalty(None, n_threads) if penalty else value

    def backward(self, X, Y, w, ws, loss, scale, beta, grads, n_threads, draw=None):
        """Forward, loss, error signals and gradients of one batch held in workspace ws
        (grads = beta * grads + this batch's, grads a flat buffer laid out as the parameters);
        returns the batch loss. One compiled call, or with compiled off the per-layer twin.
        Through the model's shared engine: calls that may run beside others use
        private_gradients. draw=None is inference mode (Dropout the identity); an int >= 0 is
        training batch `draw` (fit's: optimizer step x accumulate + micro-batch), whose dropout
        masks it uses."""
        if self.compiled:
            net = self.engine()
            net.bind(ws)
            value = net.backward(X, Y, w, bpcore.LOSSES[loss], scale, beta, n_threads, grads,
                                 -1 if draw is None else draw)
        else:
            views = self.grad_views if grads is self.grads else self.views(grads)
            value = self.backward_layers(X, Y, w, ws, loss, scale, beta, views, n_threads, draw)
        self.last = (ws, X.shape[0])
        return value

    def private_gradients(self, X, Y, w, loss, scale, n_threads):
        """Forward, loss, error signals and gradients of one batch, plus the layers'
        regularisers (inference mode: no dropout), into a new flat buffer laid out as the
        parameters, with an engine and a workspace no other call is using (so that it may run
        beside training or another such call); returns (grads, loss of the data).

        The pair comes from a pool: building one costs more than the pass on a small batch.
        It goes back to the pool only when a later private pass replaces it as the last one,
        so ``cached`` (error_signals, z_in, z_out) never reads a workspace being rewritten."""
        rows = X.shape[0]
        with self._lock:
            free = self._free.get(rows)
            net, ws = free.pop() if free else (None, None)
        if ws is None:
            ws = self.new_workspace(rows)
        if self.compiled and net is None:
            net = self.engine(shared=False)
            net.bind(ws)
        grads = np.empty_like(self.params)  # beta = 0: every entry is written
        try:
            if self.compiled:
                value = net.backward(X, Y, w, bpcore.LOSSES[loss], scale, 0.0, n_threads, grads)
            else:
                value = self.backward_layers(X, Y, w, ws, loss, scale, 0.0, self.views(grads),
                                             n_threads)
        except BaseException:
            with self._lock:
                self._free.setdefault(rows, []).append((net, ws))
            raise
        self.penalty(grads, n_threads)
        with self._lock:
            held, self._held = self._held, (net, ws)
            self.last = (ws, rows)
            if held is not None:
                self._free.setdefault(held[1].n_rows, []).append(held)
        return grads, value

    def backward_layers(self, X, Y, w, ws, loss, scale, beta, grad_views, n_threads, draw=None):
        """The backward pass as a Python loop of one kernel call per layer and pass: the
        readable version, and the twin the engine is tested against."""
        layers = self.layers
        rows = X.shape[0]
        f_out = self.forward(X, ws.z_in, ws.z_out, n_threads,
                             None if draw is None else (ws, draw))
        out = layers[-1]
        loss_value = _loss.loss_value(ws.z_in[-1], f_out, Y, w, bpcore.LOSSES[loss], scale,
                                      ws.per_sample, n_threads)
        # delta[O], then the recursion from the output backwards; each delta is computed once and
        # used twice: for this layer's gradient and for the previous layer's delta.
        _error_signal.output_delta(ws.z_in[-1], f_out, Y, w, bpcore.LOSSES[loss],
                                   bpcore.ACTIVATIONS[out.activation], out.alpha, scale,
                                   ws.delta[-1], n_threads)
        for i in range(len(layers) - 1, -1, -1):
            dropped = i > 0 and draw is not None and layers[i - 1].dropout is not None
            z_prev = X if i == 0 else (ws.z_drop if dropped else ws.z_out)[i - 1][:rows]
            grad_W, grad_b = grad_views[i]
            _gradients.gradients(z_prev, ws.delta[i], beta, grad_W, grad_b, n_threads)
            if i > 0:
                prev = layers[i - 1]
                _error_signal.hidden_delta(ws.delta[i], self.param_views[i][0], ws.z_in[i - 1],
                                           ws.z_out[i - 1], bpcore.ACTIVATIONS[prev.activation],
                                           prev.alpha, ws.delta[i - 1], n_threads)
                if dropped:  # the error signal through the forward pass's mask
                    _dropout.dropout_backward(ws.mask[i - 1][:rows], prev.dropout.rate,
                                              ws.delta[i - 1], n_threads)
        return loss_value

    def penalty(self, grads, n_threads):
        """The layers' weight penalties R(W) + R(b), with dR/dW, dR/db added to the flat
        buffer `grads` (None: the value only). Once per optimizer step: the compiled step's
        _penalties, as a Python loop."""
        value = 0.0
        views = None if grads is None else (
            self.grad_views if grads is self.grads else self.views(grads))
        for i, (kl1, kl2, bl1, bl2) in enumerate(self.penalties):
            W, b = self.param_views[i]
            for x, g, l1, l2 in ((W, None if views is None else views[i][0], kl1, kl2),
                                 (b, None if views is None else views[i][1], bl1, bl2)):
                if x is not None and (l1 or l2):
                    value += _regularize.penalty(x.reshape(-1), l1, l2,
                                                 None if g is None else g.reshape(-1), n_threads)
        return value

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
