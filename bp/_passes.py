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
from bpcore import _infer, _loss, _network, _param_update, _regularize

from . import _ops, _threads
from ._ops import flat_layout, parametric, split, walk
from . import losses as _losses
from . import regularizers as _regularizers
from ._validation import as_float_array, check_finite


# ---- input checks shared by every entry point ----------------------------------------------------


def check_layers(layers):
    """ValueError for a model with no layer, or one whose output is not a Dense or an
    Activation (the loss meets an output activation): the one place these rules are written."""
    if not layers:
        raise ValueError("a Sequential needs at least one layer. Received: no layers")
    if layers[-1].dropout is not None:
        raise ValueError(f"a Dropout must be followed by a Dense layer; the output layer "
                         f"{layers[-1]!r} has one after it")
    if layers[-1]._kind not in ("dense", "activation"):
        raise ValueError(f"the output layer must be a Dense or an Activation (the loss meets its "
                         f"activation). Received: {layers[-1]!r}")
    if not any(layer._kind == "dense" for layer in walk(layers)):
        raise ValueError("a Sequential needs a Dense layer. Received: "
                         + ", ".join(map(repr, layers)))


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
    Y = _losses.prepare_targets(loss, y, X.shape[0], _ops.output_width(model.layers, X.shape[1]),
                                model.dtype)
    w = check_sample_weight(sample_weight, X.shape[0], model.dtype)
    return loss, X, Y, w


def _prepare_quickly(model, X, y, loss, sample_weight):
    """prepare's answer in a few microseconds for the common batch (a finite C-ordered X of the
    model's dtype and width, int64 class labels, cross-entropy, no weights), else None: then
    prepare's full checks run and name what is wrong. Nothing is cached: each call checks the
    arrays it is given (partial_fit and backward on a 32-row batch paid ~8 us for the checks)."""
    layers = model.layers
    if (sample_weight is not None or type(X) is not np.ndarray or type(y) is not np.ndarray
            or X.dtype != model.dtype or X.ndim != 2 or not X.flags.c_contiguous
            or y.dtype != np.int64 or y.ndim != 1 or not y.flags.c_contiguous or not layers
            or layers[-1].dropout is not None or layers[-1].units is None):
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


def readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


def all_finite(flat, n_threads):
    """True if every entry of flat is finite (its sum of squares is; overflow counts as not)."""
    return math.isfinite(_param_update.sum_of_squares(flat, n_threads))


# The update and the scans around it run on one thread outside the engine too, as inside it
# (bpcore/_network.pyx's header): an OpenMP team right after threaded BLAS calls fights
# OpenBLAS's still-spinning threads for the cores (digits at 2 threads: 13 ms a step through
# zero_grad/backward/step, 0.36 ms through fit with a custom optimizer, against ~0.05 ms).
# Their results do not depend on the thread count.
ELEMENTWISE_THREADS = 1

# predict runs the layers over blocks of rows whose activations (two buffers of the widest hidden
# layer) stay in cache: PREDICT_BLOCK_BYTES for both (half of this machine's 1 MiB L2 per core).
PREDICT_BLOCK_BYTES = 512 * 1024

# Threads lose on a training step below this many FLOPs (2 threads against 1 on an AMD EPYC,
# bench/README.md: digits at batch 32, 2.7 MFLOP a step, is no faster and slower when the
# other core is busy; from ~10 MFLOP on 2 threads win): such steps run BLAS on one thread.
MIN_PARALLEL_STEP_FLOPS = 8_000_000


_pools = {}  # helper threads for predict, by count: {n - 1: ThreadPoolExecutor}


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
        self.layout = flat_layout(layers)[0]
        self.ops = _ops.operations(layers, self.layout)  # the engine's table (bp/_ops.py)
        # per layer with parameters: its operation's index
        self.param_ops = [i for i, op in enumerate(self.ops) if "param_index" in op]
        # predict and evaluate run in bpcore/_infer.pyx when there are only Dense layers (and
        # Dropouts, the identity there); otherwise the operations' forward pass
        self.n_out = self.ops[-1]["n_out"]
        self.dense_only = all(op["kind"] in ("dense", "dropout") for op in self.ops)
        self.param_views = split(params, self.layout)
        self.grad_views = split(self.grads, self.layout)
        self.compiled = compiled
        # per layer (kernel l1, l2, bias l1, l2): the weight penalties of bp.regularizers
        self.penalties = [(*_regularizers.coefficients(getattr(layer, "kernel_regularizer", None)),
                           *_regularizers.coefficients(getattr(layer, "bias_regularizer", None)))
                          for layer in parametric(layers)]
        self.penalized = any(any(p) for p in self.penalties)
        self.last = None  # (workspace, rows, training) of the last backward pass
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
        self._row_bytes = 2 * max([layer.units for layer in layers[:-1]] or [1]) * self.dtype.itemsize

    # ---- buffers ---------------------------------------------------------------------------
    def views(self, flat):
        """(W, b)-shaped views, per layer, into a flat buffer laid out like the parameters."""
        return split(flat, self.layout)

    def new_workspace(self, n_rows):
        return _ops.Workspace(self.ops, self.dtype, self.n_in, n_rows)

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
        net = _network.Network(self.params, self.grads, self.ops)
        if shared:
            self._engine = net
        return net

    def step_threads(self, rows, n_threads):
        """The thread count for training steps of `rows` rows: n_threads, or 1 below the
        crossover (the step's FLOPs: 2 * rows * n_in * n_out per product, 3 products a layer
        but the first)."""
        return n_threads if rows * self._step_flops_per_row >= MIN_PARALLEL_STEP_FLOPS else 1

    # ---- the passes ------------------------------------------------------------------------
    def forward(self, X, ws, n_threads, draw=None):
        """The forward pass of every operation into workspace ws (bp/_ops.py's twin of the
        engine's); returns f_out. Inference unless draw (training batch `draw`: dropout masks
        and batch statistics)."""
        return _ops.forward(self.ops, self.param_views, X, ws, n_threads, draw)[-1]

    def predict(self, model, X, n_threads, out=None):
        """f_out of X through bpcore/_infer.pyx: the whole network in one call, over blocks of
        rows, its buffers per call (so several threads may call it at once). X is checked here:
        in C when it is already a finite C-contiguous array of the dtype and width, else by
        check_X, which converts it or names what is wrong."""
        if not self.dense_only:
            return self._predict_by_operations(model, X, n_threads, out)
        inference = self._get_inference()
        if not inference.ready(X):
            X = check_X(model, X)
        n_threads = self._predict_threads(X.shape[0], n_threads)
        if out is not None:
            check_out(out, X, self.n_out, self.dtype)
        f_out = inference.run(X, out, self._block_rows(), n_threads, None,
                              _helpers(n_threads))
        if f_out is None:
            check_X(model, X)  # X holds a NaN or an infinity: say where (nothing was written)
        return f_out

    def _predict_by_operations(self, model, X, n_threads, out=None, f_in=None):
        """predict for a model with operations bpcore/_infer.pyx does not run (normalisations,
        activation layers, residual blocks): the operations' forward pass in inference mode
        (bp/_ops.py), into a workspace of its own."""
        if model is not None:  # (evaluate's X is checked already)
            X = check_X(model, X)
        if out is not None:
            check_out(out, X, self.n_out, self.dtype)
        ws = self.new_workspace(X.shape[0])
        cur = _ops.forward(self.ops, self.param_views, X, ws, 1)
        last = self.ops[-1]
        if f_in is not None:
            f_in[...] = ws.z_in[-1] if last["kind"] == "dense" else (
                X if last["src"] < 0 else cur[last["src"]])
        if out is None:
            return cur[-1]
        out[...] = cur[-1]
        return out

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
        f_in, then the loss on one thread (an OpenMP team right after BLAS's products fights
        BLAS's spinning threads: evaluate on 2 threads was ~2x slower than on 1). penalty=False
        leaves the layers' regularisers out (fit's validation in parts adds them once)."""
        rows, n_out = X.shape[0], self.n_out
        n_threads = self._predict_threads(rows, n_threads)
        f_in, f_out = np.empty((rows, n_out), self.dtype), np.empty((rows, n_out), self.dtype)
        if not self.dense_only:
            self._predict_by_operations(None, X, n_threads, f_out, f_in)
        else:
            self._get_inference().run(X, f_out, self._block_rows(), n_threads, f_in,
                                      _helpers(n_threads))
        value = self.loss_value(f_in, f_out, Y, w, loss, np.empty(rows, self.dtype), 1, penalty)
        return value, f_out

    def _table(self):
        """Per Dense: (n_in, n_out, activation code, alpha, offset of W, offset of b or -1), for
        bpcore/_infer.pyx (a model of Dense and Dropout layers: dense_only)."""
        return [(op["n_in"], op["n_out"], op["act"], op["alpha"], op["w_off"], op["b_off"])
                for op in self.ops if op["kind"] == "dense"]

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
        if draw is not None:
            _ops.check_training_rows(self.layers, X.shape[0], X.shape[0])
        if self.compiled:
            net = self.engine()
            net.bind(ws)
            value = net.backward(X, Y, w, bpcore.LOSSES[loss], scale, beta, n_threads, grads,
                                 -1 if draw is None else draw)
        else:
            views = self.grad_views if grads is self.grads else self.views(grads)
            value = self.backward_layers(X, Y, w, ws, loss, scale, beta, views, n_threads, draw)
        self.last = (ws, X.shape[0], draw is not None)
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
            self.last = (ws, rows, False)
            if held is not None:
                self._free.setdefault(held[1].n_rows, []).append(held)
        return grads, value

    def backward_layers(self, X, Y, w, ws, loss, scale, beta, grad_views, n_threads, draw=None):
        """The backward pass as a Python loop of one kernel call per operation and pass
        (bp/_ops.py): the readable version, and the twin the engine is tested against."""
        return _ops.backward(self.ops, self.param_views, grad_views, X, Y, w, ws, loss, scale,
                             beta, n_threads, draw)

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
        """Snapshots of the last backward pass's z_in, z_out or delta, per operation (read-only
        copies, not views of the reused workspace: a view would change under the user's feet
        at the next step, and its writeable flag could be turned back on). An operation without
        the buffer gives None (z_in of all but dense and the norms); the z_out of one that
        passed its input on (a fork, a dropout in inference) is its input's."""
        if self.last is None:
            return None
        ws, rows, training = self.last
        snapshots = []
        for i, op in enumerate(self.ops):
            a = self._output(ws, i, None, training) if name == "z_out" else getattr(ws, name)[i]
            a = None if a is None else a[:rows].copy()
            if a is not None:
                a.flags.writeable = False
            snapshots.append(a)
        return tuple(snapshots)

    def _output(self, ws, i, X, training):
        """What operation i left for the next ones in the last pass (X for the batch)."""
        while i >= 0 and (self.ops[i]["kind"] == "fork"
                          or (self.ops[i]["kind"] == "dropout" and not training)):
            i = self.ops[i]["src"]
        return X if i < 0 else ws.z_out[i]

    def _layer_of(self, i):
        """The index in model.layers of the layer operation i belongs to."""
        return self.ops[i]["top"]

    def first_non_finite(self, X_batch):
        """(layer, sample, where) of the first non-finite value of the last backward pass, in
        the order the step computes them: the forward pass, the loss, the error signals from
        the output back, the gradients. X_batch is that pass's input."""
        ws, rows, training = self.last
        for i, z in enumerate(ws.z_out):
            bad = ~np.isfinite(z[:rows]) if z is not None else None
            if bad is not None and bad.any():
                return self._layer_of(i), int(np.argwhere(bad)[0, 0]), "forward (z_out)"
        bad = ~np.isfinite(ws.per_sample[:rows])
        if bad.any():  # e.g. (f_out - y)^2 overflows while f_out - y does not
            return None, int(np.argwhere(bad)[0, 0]), "loss"
        for i in range(len(ws.delta) - 1, -1, -1):
            bad = ~np.isfinite(ws.delta[i][:rows])
            if bad.any():
                return self._layer_of(i), int(np.argwhere(bad)[0, 0]), "error signal (delta)"
        for k in range(len(self.grad_views) - 1, -1, -1):
            grad_W, grad_b = self.grad_views[k]
            if np.isfinite(grad_W).all() and (grad_b is None or np.isfinite(grad_b).all()):
                continue
            # Every delta and input is finite, so a product overflowed: sample r's own term of
            # grad_W is outer(z_out_prev[r], delta[r]), non-finite iff max|z| * max|delta| is.
            i = self.param_ops[k]
            z_prev = self._output(ws, self.ops[i]["src"], X_batch, training)[:rows]
            with np.errstate(over="ignore"):
                term = np.abs(z_prev).max(axis=1) * np.abs(ws.delta[i][:rows]).max(axis=1)
            bad = np.argwhere(~np.isfinite(term))
            return self._layer_of(i), (int(bad[0, 0]) if bad.size else None), "gradients"
        return None, None, "gradients"
