"""Sequential: a stack of Dense layers trained by backpropagation.

One training step, in the order the mathematics runs (each line one bpcore kernel per layer):

    forward      z_in[i] = z_out[i-1] @ W[i] + b[i];  z_out[i] = sigma(z_in[i])
    error signal delta[O] = dL/df_in;  delta[i] = (delta[i+1] @ W[i+1].T) * sigma'(z_in[i])
    gradients    grad_W[i] = z_out[i-1].T @ delta[i];  grad_b[i] = sum_batch delta[i]
    update       the optimizer's fused kernel on the flat parameter vector

All of a model's parameters live in one flat buffer (``get_flat_params``); each layer's W and b
are views into it. Gradients live in a second buffer with the same layout. So the optimizer is
one call, clipping is one norm, and gradients, optimizer state and the training loop stay
separable: a data-parallel step is ``backward`` on a shard, a sum of the flat gradient across
ranks, then ``step``.
"""

import contextlib
import math
import threading
import time

import numpy as np

import bpcore
from bpcore import _dense_forward, _error_signal, _gradients, _loss, _network, _param_update

from . import _interrupt, _threads
from . import losses as _losses
from . import optimizers as _optimizers
from ._validation import as_dtype, as_float_array, check_finite, check_number, check_positive_int
from .callbacks import Callback, History, TerminateOnNaN, _Progress
from .layers import Dense

_BUILD_LOCK = threading.Lock()


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became non-finite during fit; the model keeps the last finite
    weights and optimizer state. Attributes: epoch, batch, layer, sample (in the batch), row (of
    X), where ("forward (z_out)", "loss", "error signal (delta)", "gradients" or "update")."""

    def __init__(self, message, epoch=None, batch=None, layer=None, sample=None, where=None,
                 row=None):
        super().__init__(message)
        self.epoch, self.batch, self.layer, self.sample, self.where = epoch, batch, layer, sample, where
        self.row = row  # the sample's row in the X given to fit


class _Workspace:
    """Per-batch-size buffers of one model: the cached z_in, z_out and delta of every layer.

    Allocated once for each batch size a model meets and reused for every batch of that size,
    so a steady-state training step allocates nothing.
    """

    def __init__(self, model, n_rows):
        dt = model.dtype
        self.n_rows = n_rows
        self.z_in = [np.empty((n_rows, L.units), dt) for L in model.layers]
        self.z_out = [np.empty((n_rows, L.units), dt) for L in model.layers]
        self.delta = [np.empty((n_rows, L.units), dt) for L in model.layers]
        self.per_sample = np.empty(n_rows, dt)
        self.X = np.empty((n_rows, model.input_dim), dt)
        self.Y = np.empty((n_rows, model.layers[-1].units), dt)
        self.w = np.empty(n_rows, dt)


class Sequential:
    """A multilayer perceptron: Dense layers applied in order, trained by backpropagation.

    Parameters
    ----------
    layers : list of Dense, optional
        The last layer's activation is the output activation tau.
    dtype : "float32" or "float64", default "float32"
        The dtype of the weights and of every computation; inputs are cast to it.
    seed : int or None
        Seeds weight initialisation, shuffling and the validation split: the same seed gives
        bit-identical training (see README for what threads change).
    input_dim : int, optional
        The input width; if omitted, taken from the first layer's input_dim or from the data.

    Examples
    --------
    >>> model = bp.Sequential([bp.Dense(16, activation="relu"), bp.Dense(3, activation="softmax")],
    ...                       seed=0)
    >>> history = model.fit(X, y, loss="cross_entropy", epochs=5, verbose=0)
    >>> model.predict(X).shape
    (n_samples, 3)
    """

    def __init__(self, layers=None, *, dtype="float32", seed=None, input_dim=None):
        self.dtype = as_dtype(dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.layers = []
        self.input_dim = check_positive_int("input_dim", input_dim, allow_none=True)
        self.loss = None
        self.optimizer = None
        self.stop_training = False
        self._stop_reason = None
        self._params = None
        self._grads = None
        self._grad_views = None
        self._workspaces = {}
        self._last = None  # the workspace and row count of the last backward pass
        self._net = None  # the compiled engine (bpcore._network.Network) over _params and _grads
        self._rng = np.random.default_rng(self.seed)
        self._fit_lock = threading.Lock()
        for layer in layers or ():
            self.add(layer)

    # ---- a list of layers ----------------------------------------------------------------------
    def add(self, layer):
        """Append a Dense layer (before the model is built)."""
        if not isinstance(layer, Dense):
            raise TypeError(f"Sequential holds bp.Dense layers. Received: {type(layer).__name__}")
        if self.built:
            raise ValueError("cannot add a layer to a built model (its parameters are allocated); "
                             "build a new Sequential")
        if layer._owner is not None:
            raise ValueError(f"{layer!r} already belongs to another model; use a new Dense")
        if layer.built:
            raise ValueError(f"{layer!r} was built on its own; add an unbuilt layer")
        self.layers.append(layer)
        layer._owner = self

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        """An int gives the layer; a slice gives a new Sequential of copies of those layers
        (with their weights, when built): each model owns its own parameter buffer."""
        if isinstance(index, slice):
            picked = self.layers[index]
            if not picked:
                raise IndexError("a slice of a Sequential must keep at least one layer")
            # a slice that starts at the input keeps the model's input width
            new = Sequential(dtype=self.dtype, seed=self.seed,
                             input_dim=self.input_dim if picked[0] is self.layers[0] else None)
            for layer in picked:
                cfg = layer.get_config()
                if layer.built:
                    cfg["input_dim"] = layer.W.shape[0]
                # get_config drops a callable initializer (it is not data); a copy keeps it
                cfg["kernel_initializer"] = layer.kernel_initializer
                new.add(Dense(**cfg))
            if self.built:
                new.build(picked[0].W.shape[0])
                for src, dst in zip(picked, new.layers):
                    dst.W = src.W
                    if src.use_bias:
                        dst.b = src.b
            return new
        return self.layers[index]

    # ---- building ------------------------------------------------------------------------------
    @property
    def built(self):
        return self._params is not None

    def build(self, input_dim=None):
        """Allocate the flat parameter buffer and initialise every layer (seeded)."""
        # One build at a time: two threads calling predict on an unbuilt model must not both
        # draw weights and bind the layers to two different buffers.
        with _BUILD_LOCK:
            if not self.built:
                self._build(input_dim)
        return self

    def _build(self, input_dim):
        if not self.layers:
            raise ValueError("a Sequential needs at least one layer. Received: no layers")
        n_in = input_dim or self.input_dim or self.layers[0].input_dim
        if n_in is None:
            raise ValueError("the input width is unknown: give input_dim or call fit/predict")
        n_in = check_positive_int("input_dim", n_in)
        widths = [n_in] + [L.units for L in self.layers]
        for i, L in enumerate(self.layers):
            if L.input_dim is not None and L.input_dim != widths[i]:
                raise ValueError(f"layer {i} ({L!r}) expects input_dim={L.input_dim} but receives "
                                 f"{widths[i]} features")
        # Draw every layer's weights before binding any: a kernel_initializer that fails on a later
        # layer then leaves no layer half-built, and the seeded generator as it was.
        rng = self._rng
        rng_state = rng.bit_generator.state
        try:
            initial = [L._initial_weights(widths[i], rng, self.dtype)
                       for i, L in enumerate(self.layers)]
        except BaseException:
            rng.bit_generator.state = rng_state
            raise
        layout, size = _flat_layout(self.layers, widths[:-1])
        params = np.empty(size, self.dtype)
        for (W, b), W0 in zip(_split(params, layout), initial):
            W[...] = W0
            if b is not None:
                b[...] = 0
        for L, n in zip(self.layers, widths):
            L.input_dim = n
        self.input_dim = n_in
        self._rebind(params)

    def _build_from(self, X):
        if not self.built:
            self.build(X.shape[1])

    # ---- parameters ----------------------------------------------------------------------------
    @property
    def n_params(self):
        return 0 if not self.built else int(self._params.size)

    def get_flat_params(self):
        """A copy of all parameters, layer by layer (W row-major, then b)."""
        self._require_built()
        return self._params.copy()

    def set_flat_params(self, flat):
        """Set all parameters from a flat vector laid out as get_flat_params (checked first)."""
        self._require_built()
        arr = as_float_array("params", flat, self.dtype, ndim=1)
        if arr.shape != self._params.shape:
            raise ValueError(f"params must have shape {self._params.shape}. Received: shape {arr.shape}")
        check_finite("params", arr)
        self._params[...] = arr

    def get_flat_grads(self):
        """The gradient buffer (a read-only view), laid out as get_flat_params."""
        self._require_built()
        return _readonly(self._grads)

    def _require_built(self):
        if not self.built:
            raise ValueError("the model is not built yet: call fit, predict or build(input_dim) first")

    # ---- input checks --------------------------------------------------------------------------
    def _check_X(self, X, name="X"):
        X = as_float_array(name, X, self.dtype, ndim=2)
        if X.shape[0] == 0:
            raise ValueError(f"{name} is empty: expected at least one sample. Received: shape {X.shape}")
        if X.shape[1] == 0:
            raise ValueError(f"{name} has no features. Received: shape {X.shape}")
        expected = self.input_dim if self.input_dim is not None else (
            self.layers[0].input_dim if self.layers else None)
        if expected is not None and X.shape[1] != expected:
            raise ValueError(f"{name} must have {expected} features (the model's input width). "
                             f"Received: {name} with shape {X.shape}")
        check_finite(name, X)
        return X

    def _check_loss(self, loss):
        if loss is None:
            loss = self.loss
        if loss is None:
            tau = self.layers[-1].activation if self.layers else "identity"
            loss = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(tau, "mse")
        loss = _losses.get(loss)
        if not self.layers:
            raise ValueError("a Sequential needs at least one layer. Received: no layers")
        _losses.check_pair(loss, self.layers[-1].activation)
        return loss

    def _check_sample_weight(self, sample_weight, n):
        if sample_weight is None:
            return None
        w = as_float_array("sample_weight", sample_weight, self.dtype, ndim=1)
        if w.shape[0] != n:
            raise ValueError(f"sample_weight must have one entry per sample ({n}). "
                             f"Received: shape {w.shape}")
        check_finite("sample_weight", w)
        if (w < 0).any():
            i = int(np.argwhere(w < 0)[0, 0])
            raise ValueError(f"sample_weight must be non-negative. Received: {w[i]} at index {i}")
        return w

    def _prepare(self, X, y, loss, sample_weight=None):
        if not self.layers:
            raise ValueError("a Sequential needs at least one layer. Received: no layers")
        loss = self._check_loss(loss)
        X = self._check_X(X)
        Y = _losses.prepare_targets(loss, y, X.shape[0], self.layers[-1].units, self.dtype)
        w = self._check_sample_weight(sample_weight, X.shape[0])
        return loss, X, Y, w

    # ---- the passes ----------------------------------------------------------------------------
    def _workspace(self, n_rows):
        ws = self._workspaces.get(n_rows)
        if ws is None:
            ws = self._workspaces[n_rows] = _Workspace(self, n_rows)
        return ws

    def _forward(self, X, z_in, z_out, n_threads):
        """The forward pass of every layer into the given buffers; returns f_out."""
        z = X
        for L, zi, zo in zip(self.layers, z_in, z_out):
            _dense_forward.dense_forward(z, L._W, L._b, zi, zo, bpcore.ACTIVATIONS[L.activation],
                                         L.alpha, n_threads)
            z = zo
        return z

    # The compiled engine runs what _forward and _backward_layers spell out, for the whole network
    # in one nogil call (and fit's mini-batch loop with it). Class switch for tests and benchmarks.
    _use_engine = True

    def _engine(self, shared=True):
        """The compiled engine over this model's flat buffers (rebuilt if they were replaced).
        shared=False gives a private one, for calls that must not disturb another's binding."""
        net = self._net
        if (not shared or net is None or net.params is not self._params
                or net.grads is not self._grads):
            layout = [(n_in, n_out, bpcore.ACTIVATIONS[L.activation], L.alpha, w_off, b_off)
                      for L, (n_in, n_out, w_off, b_off) in zip(self.layers, self._layout())]
            net = _network.Network(self._params, self._grads, layout)
            if shared:
                self._net = net
        return net

    # Threads lose on a training step below this many FLOPs (2 threads against 1 on an AMD EPYC,
    # bench/README.md: digits at batch 32, 2.7 MFLOP a step, is no faster and slower when the
    # other core is busy; from ~10 MFLOP on 2 threads win): such steps run BLAS on one thread.
    MIN_PARALLEL_STEP_FLOPS = 8_000_000

    def _step_threads(self, rows, n_threads):
        """The thread count for training steps of `rows` rows: n_threads, or 1 below the
        crossover (the step's FLOPs: 2 * rows * n_in * n_out per product, 3 products a layer
        but the first)."""
        flops = sum((2 if i == 0 else 3) * 2 * rows * L.W.shape[0] * L.units
                    for i, L in enumerate(self.layers))
        return n_threads if flops >= self.MIN_PARALLEL_STEP_FLOPS else 1

    def _backward(self, X, Y, w, ws, loss, scale, beta, grads, n_threads, net=None):
        """Forward, loss, error signals and gradients (grads = beta * grads + this batch's, grads
        a flat buffer laid out as the parameters) for one batch held in workspace ws; returns the
        batch loss. One compiled call (or, with _use_engine off, the per-layer path)."""
        if not self._use_engine:
            views = self._grad_views if grads is self._grads else self._views_into(grads)
            return self._backward_layers(X, Y, w, ws, loss, scale, beta, views, n_threads)
        net = net or self._engine()
        net.bind(ws)
        value = net.backward(X, Y, w, bpcore.LOSSES[loss], scale, beta, n_threads, grads)
        self._last = (ws, X.shape[0])
        return value

    def _backward_layers(self, X, Y, w, ws, loss, scale, beta, grad_views, n_threads):
        """_backward as a Python loop of one kernel call per layer and pass (the readable
        version, and the twin the engine is tested against)."""
        layers = self.layers
        f_out = self._forward(X, ws.z_in, ws.z_out, n_threads)
        out = layers[-1]
        L = _loss.loss_value(ws.z_in[-1], f_out, Y, w, bpcore.LOSSES[loss], scale,
                             ws.per_sample, n_threads)
        # delta[O], then the recursion from the output backwards; each delta is computed once and
        # used twice: for this layer's gradient and for the previous layer's delta.
        _error_signal.output_delta(ws.z_in[-1], f_out, Y, w, bpcore.LOSSES[loss],
                                   bpcore.ACTIVATIONS[out.activation], out.alpha, scale,
                                   ws.delta[-1], n_threads)
        for i in range(len(layers) - 1, -1, -1):
            z_prev = X if i == 0 else ws.z_out[i - 1]
            gW, gb = grad_views[i]
            _gradients.gradients(z_prev, ws.delta[i], beta, gW, gb, n_threads)
            if i > 0:
                prev = layers[i - 1]
                _error_signal.hidden_delta(ws.delta[i], layers[i]._W, ws.z_in[i - 1],
                                           ws.z_out[i - 1], bpcore.ACTIVATIONS[prev.activation],
                                           prev.alpha, ws.delta[i - 1], n_threads)
        self._last = (ws, X.shape[0])
        return L

    # ---- prediction and evaluation -------------------------------------------------------------
    def predict(self, X, batch_size=None):
        """f_out = tau(f_in) for every row of X, shape (n_samples, n_outputs).

        Safe to call from several threads at once (each call uses its own buffers).
        """
        X = self._check_X(X)
        n = X.shape[0]
        bs = n if batch_size is None else check_positive_int("batch_size", batch_size)
        self._build_from(X)
        nt = _threads.ensure_blas_limit()
        out = np.empty((n, self.layers[-1].units), self.dtype)
        for start in range(0, n, bs):
            Xb = X[start:start + bs]
            rows = Xb.shape[0]
            z_in = [np.empty((rows, L.units), self.dtype) for L in self.layers]
            # the last layer writes f_out straight into the result
            z_out = [np.empty((rows, L.units), self.dtype) for L in self.layers[:-1]]
            z_out.append(out[start:start + rows])
            self._forward(Xb, z_in, z_out, nt)
        return out

    def evaluate(self, X, y, loss=None, sample_weight=None, batch_size=None):
        """A dict with the loss (and accuracy for classification) on (X, y); no update.
        (batch_size is accepted for Keras compatibility; the whole of X is one pass.)"""
        check_positive_int("batch_size", batch_size, allow_none=True)
        loss, X, Y, w = self._prepare(X, y, loss, sample_weight)
        self._build_from(X)
        nt = _threads.ensure_blas_limit()
        n, m = Y.shape
        z_in = [np.empty((n, L.units), self.dtype) for L in self.layers]
        z_out = [np.empty((n, L.units), self.dtype) for L in self.layers]
        f_out = self._forward(X, z_in, z_out, nt)
        per = np.empty(n, self.dtype)
        value = _loss.loss_value(z_in[-1], f_out, Y, w, bpcore.LOSSES[loss],
                                 _losses.default_scale(loss, n, m), per, nt)
        result = {"loss": float(value)}
        acc = _accuracy(loss, f_out, Y, w)
        if acc is not None:
            result["accuracy"] = acc
        return result

    # ---- gradients without an update -----------------------------------------------------------
    def gradients(self, X, y, loss=None, sample_weight=None):
        """dL/dW and dL/db of every layer on the batch (X, y), with no update.

        Returns a list of (grad_W, grad_b) per Dense layer (grad_b None without bias). The error
        signals of this pass are then in ``model.error_signals``.
        """
        loss, X, Y, w = self._prepare(X, y, loss, sample_weight)
        self._build_from(X)
        nt = _threads.ensure_blas_limit()
        ws = _Workspace(self, X.shape[0])
        grads = np.zeros_like(self._params)
        views = self._views_into(grads)
        # a private engine: gradients() uses only its own buffers, so it may run beside other calls
        net = self._engine(shared=False) if self._use_engine else None
        self._backward(X, Y, w, ws, loss, _losses.default_scale(loss, *Y.shape), 0.0, grads, nt,
                       net)
        return [(gW.copy(), None if gb is None else gb.copy()) for gW, gb in views]

    def _layout(self):
        """(n_in, n_out, offset of W, offset of b or -1) per layer in the flat buffers."""
        return _flat_layout(self.layers, [L.input_dim for L in self.layers])[0]

    def _views_into(self, flat):
        """(W, b)-shaped views, per layer, into a flat buffer laid out like the parameters."""
        return _split(flat, self._layout())

    @property
    def error_signals(self):
        """The deltas dL/dz_in of the last backward pass, one read-only array per layer
        (None before any backward pass). Each access returns a snapshot: later passes, which
        reuse the buffers, do not change arrays already handed out."""
        return self._cached("delta")

    @property
    def z_in(self):
        """The cached z_in of the last backward pass, per layer (read-only; f_in is the last)."""
        return self._cached("z_in")

    @property
    def z_out(self):
        """The cached z_out of the last backward pass, per layer (read-only; f_out is the last)."""
        return self._cached("z_out")

    def _cached(self, name):
        if self._last is None:
            return None
        ws, rows = self._last
        # copies, not views of the reused workspace: a view would change under the user's feet
        # at the next step, and its writeable flag could be turned back on
        snapshots = tuple(a[:rows].copy() for a in getattr(ws, name))
        for a in snapshots:
            a.flags.writeable = False
        return snapshots

    # ---- explicit steps: zero_grad / backward / step -------------------------------------------
    def zero_grad(self):
        """Set the gradient buffer to zero (start accumulating). On an unbuilt model there is
        nothing to zero: the buffer starts at zero when the first backward builds it."""
        if self.built:
            self._grads[...] = 0

    def backward(self, X, y, loss=None, sample_weight=None, total_samples=None):
        """Add this batch's gradient to the gradient buffer; returns the batch loss.

        total_samples : the size of the whole batch this one is part of (default: len(X)).
            With it, micro-batches accumulated by repeated calls give exactly the gradient of
            the whole batch (the mean is taken over total_samples, not over each micro-batch).
        """
        loss, X, Y, w = self._prepare(X, y, loss, sample_weight)
        n_total = X.shape[0] if total_samples is None else check_positive_int("total_samples", total_samples)
        self._build_from(X)
        nt = _threads.ensure_blas_limit()
        ws = self._workspace(X.shape[0])
        return float(self._backward(X, Y, w, ws, loss,
                                    _losses.default_scale(loss, n_total, Y.shape[1]), 1.0,
                                    self._grads, nt))

    def step(self, optimizer=None):
        """Apply one optimizer update from the gradient buffer."""
        self._require_built()
        opt = self._optimizer(optimizer)
        opt.apply(self._params, self._grads, _threads.ensure_blas_limit())

    def _optimizer(self, optimizer):
        if optimizer is not None:
            self.optimizer = _optimizers.get(optimizer)
        elif self.optimizer is None:
            self.optimizer = _optimizers.get(None)
        return self.optimizer

    def compile(self, loss=None, optimizer=None):
        """Set the default loss and optimizer for fit/partial_fit/evaluate (Keras style)."""
        new_loss = self._check_loss(loss) if loss is not None else self.loss
        new_opt = _optimizers.get(optimizer) if optimizer is not None else self.optimizer
        self.loss, self.optimizer = new_loss, new_opt
        return self

    # ---- training ------------------------------------------------------------------------------
    def fit(self, X, y, *, loss=None, optimizer=None, epochs=1, batch_size=32,
            validation_split=0.0, validation_data=None, shuffle=True, sample_weight=None,
            callbacks=None, accumulate=1, verbose=1, on_nan="raise"):
        """Train by mini-batch backpropagation.

        Parameters
        ----------
        X : array (n_samples, n_features);  y : targets (see bp.losses)
        loss : "mse", "binary_cross_entropy" or "cross_entropy"; default from the output
            activation (softmax -> cross_entropy, sigmoid -> binary_cross_entropy, else mse)
        optimizer : bp.Optimizer or name; default the model's, else Adam()
        epochs : int >= 1;  batch_size : int >= 1 (a batch larger than the data is the data)
        validation_split : fraction held out for validation, after a seeded shuffle
        validation_data : (X_val, y_val) instead of validation_split
        shuffle : reshuffle the training rows every epoch (seeded)
        sample_weight : array (n_samples,) of non-negative weights
        callbacks : list of bp.Callback (e.g. bp.EarlyStopping)
        accumulate : int >= 1; each update uses `accumulate` micro-batches of batch_size rows,
            exactly the update of one batch of accumulate * batch_size rows
        verbose : 0 silent, 1 progress bar (a line per epoch when not a terminal), 2 line/epoch
        on_nan : "raise" (TrainingDivergedError) or "stop" (end quietly, History.stopped set);
            either way the model keeps the last finite weights

        Returns
        -------
        History. On Ctrl-C, fit stops after the current step and returns the History with
        ``stopped == "interrupted"``; the model is usable and savable.
        """
        with self._exclusive():
            return self._fit(X, y, loss, optimizer, epochs, batch_size, validation_split,
                             validation_data, shuffle, sample_weight, callbacks, accumulate,
                             verbose, on_nan)

    def partial_fit(self, X, y, *, loss=None, optimizer=None, batch_size=32, sample_weight=None,
                    shuffle=True, accumulate=1, verbose=0):
        """One pass over (X, y), keeping the optimizer's state across calls: its moments, its
        step count and a learning-rate schedule's epoch (each pass is the epoch after the last
        one the optimizer ran), so k calls train as fit(epochs=k) does."""
        # fit starts a schedule at epoch 0; a pass goes on after the optimizer's last epoch
        last = getattr(self.optimizer if optimizer is None else optimizer, "_epoch", None)
        with self._exclusive():
            return self._fit(X, y, loss, optimizer, 1, batch_size, 0.0, None, shuffle,
                             sample_weight, None, accumulate, verbose, "raise",
                             first_epoch=0 if last is None else last + 1)

    @contextlib.contextmanager
    def _exclusive(self):
        if not self._fit_lock.acquire(blocking=False):
            raise RuntimeError("this model is already being fitted in another thread; "
                               "wait for that fit to finish (or fit a copy)")
        try:
            yield
        finally:
            self._fit_lock.release()

    def _fit(self, X, y, loss, optimizer, epochs, batch_size, validation_split, validation_data,
             shuffle, sample_weight, callbacks, accumulate, verbose, on_nan, first_epoch=0):
        # -- everything is checked before anything changes --
        loss, X, Y, w = self._prepare(X, y, loss, sample_weight)
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        accumulate = check_positive_int("accumulate", accumulate)
        if verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
        if on_nan not in ("raise", "stop"):
            raise ValueError(f"on_nan must be 'raise' or 'stop'. Received: on_nan={on_nan!r}")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be bp.Callback instances. Received: {type(cb).__name__}")
        if any(isinstance(cb, TerminateOnNaN) for cb in callbacks):
            on_nan = "stop"
        opt = _optimizers.get(optimizer) if optimizer is not None else (
            self.optimizer or _optimizers.get(None))
        opt.current_learning_rate(0)  # a schedule that fails at once is rejected before any change
        val = None
        if validation_data is not None:
            if validation_split:
                raise ValueError("give validation_data or validation_split, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise TypeError("validation_data must be (X_val, y_val) or (X_val, y_val, sample_weight_val)")
            Xv = self._check_X(validation_data[0], "X_val")
            if Xv.shape[1] != X.shape[1]:  # an unbuilt model has no width to check X_val against
                raise ValueError(f"X_val must have {X.shape[1]} features, as X has. "
                                 f"Received: X_val with shape {Xv.shape}")
            Yv = _losses.prepare_targets(loss, validation_data[1], Xv.shape[0],
                                         self.layers[-1].units, self.dtype, name="y_val")
            wv = self._check_sample_weight(validation_data[2], Xv.shape[0]) if len(validation_data) == 3 else None
            val = (Xv, Yv, wv)
        else:
            validation_split = check_number("validation_split", validation_split, low=0.0,
                                            high=1.0, high_open=True)
        rng = self._rng
        train_rows = None  # row i of the training set is row train_rows[i] of X (None: row i)
        if val is None and validation_split > 0:
            n_val = int(math.floor(X.shape[0] * validation_split))
            if n_val < 1 or n_val >= X.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves {n_val} validation and "
                                 f"{X.shape[0] - n_val} training samples; both need at least one")
            perm = rng.permutation(X.shape[0])
            vi, ti = perm[:n_val], perm[n_val:]
            train_rows = ti
            val = (X[vi], Y[vi], None if w is None else w[vi])
            X, Y, w = X[ti], Y[ti], (None if w is None else w[ti])
        # -- from here on the model changes --
        self._build_from(X)
        self.loss, self.optimizer = loss, opt
        nt = _threads.ensure_blas_limit()
        n = X.shape[0]
        batch_size = min(batch_size, n)
        n_batches = -(-n // batch_size)
        history = History()
        self.history = history
        self.stop_training, self._stop_reason = False, None
        for cb in callbacks:
            cb.set_model(self)
            cb.on_train_begin()
        progress = _Progress(verbose, epochs, n_batches)
        per_batch_callbacks = [cb for cb in callbacks
                               if type(cb).on_batch_end is not Callback.on_batch_end]
        backup = np.empty_like(self._params)
        m = Y.shape[1]
        # The whole mini-batch loop runs compiled unless a callback asks for every batch.
        use_engine = (self._use_engine and not per_batch_callbacks
                      and type(opt) in (_optimizers.SGD, _optimizers.Adam, _optimizers.AdamW))
        epoch = -1
        sigint = _interrupt.defer_sigint()  # Ctrl-C sets a flag, read between steps
        try:
            for epoch in range(epochs):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch)
                opt.set_epoch(first_epoch + epoch)
                t0 = time.perf_counter()
                order = rng.permutation(n) if shuffle else None
                total, correct, seen = 0.0, 0.0, 0
                batch = 0
                if use_engine:
                    total, correct, seen, batch, ok = self._engine_epoch(
                        X, Y, w, order, batch_size, accumulate, loss, opt, nt, epoch, backup,
                        progress, n_batches, on_nan, sigint, train_rows)
                    if not ok:
                        return history
                # the per-batch Python loop: when a callback wants every batch (or no engine)
                steps = () if use_engine else range(0, n, batch_size * accumulate)
                for step_start in steps:
                    step_rows = min(batch_size * accumulate, n - step_start)
                    scale = _losses.default_scale(loss, step_rows, m)
                    beta = 0.0
                    step_loss = 0.0
                    for mb_start in range(step_start, step_start + step_rows, batch_size):
                        rows = min(batch_size, step_start + step_rows - mb_start)
                        ws = self._workspace(rows)
                        Xb, Yb, wb = _gather(ws, X, Y, w, order, mb_start, rows)
                        Lb = self._backward(Xb, Yb, wb, ws, loss, scale, beta, self._grads, nt)
                        beta = 1.0
                        step_loss += Lb
                        if not math.isfinite(Lb):
                            break
                        acc = _accuracy(loss, ws.z_out[-1][:rows], Yb, wb, count=True)
                        if acc is not None:
                            correct += acc
                    if not math.isfinite(step_loss) or not _finite_sum(self._grads, nt):
                        self._diverged(epoch, batch, on_nan, progress, Xb,
                                       _rows_of(order, train_rows, mb_start, rows))
                        return history
                    # the update is undone, parameters and optimizer state alike, if it goes
                    # non-finite: the model keeps the last finite step, nothing half-changed
                    np.copyto(backup, self._params)
                    opt._checkpoint(self._params)
                    opt.apply(self._params, self._grads, nt)
                    if not (_finite_sum(self._params, nt) and opt._state_is_finite(nt)):
                        np.copyto(self._params, backup)
                        opt._rollback()
                        self._diverged(epoch, batch, on_nan, progress, in_update=True)
                        return history
                    # the mean reduction makes step_loss a mean over step_rows samples
                    total += step_loss * step_rows
                    seen += step_rows
                    batch += 1
                    history.stopped_at = {"epoch": epoch, "batch": batch - 1}
                    progress.batch(epoch, min(batch * accumulate, n_batches), total / seen)
                    for cb in per_batch_callbacks:
                        cb.on_batch_end(batch - 1, {"loss": step_loss})
                    if sigint.requested:
                        raise KeyboardInterrupt
                seconds = time.perf_counter() - t0
                logs = {"loss": total / seen}
                if loss != "mse":  # accuracy of each batch before its update, as Keras reports
                    logs["accuracy"] = correct / ((n if w is None else float(np.sum(w))) or 1.0)
                if val is not None:
                    ev = self.evaluate(val[0], val[1], loss=loss, sample_weight=val[2])
                    logs.update({"val_" + k: v for k, v in ev.items()})
                logs["learning_rate"] = opt._lr
                history._record(epoch, logs, seconds)
                progress.epoch_end(epoch, logs, seconds)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if sigint.requested:
                    raise KeyboardInterrupt
                if self.stop_training:
                    history.stopped = self._stop_reason or "callback"
                    break
        except KeyboardInterrupt:
            # Raised between steps (see bp/_interrupt.py), so the step in flight finished: the
            # parameters and optimizer state are those of the last completed step.
            history.stopped = "interrupted"
            progress.message(f"interrupted: stopped after {history.stopped_at}")
        finally:
            sigint.restore()
            for cb in callbacks:
                cb.on_train_end()
        return history

    def _engine_epoch(self, X, Y, w, order, batch_size, accumulate, loss, opt, nt, epoch, backup,
                      progress, n_batches, on_nan, sigint, train_rows):
        """One epoch of fit's steps in the compiled loop (bpcore._network.Network.train_epoch),
        with the semantics of the Python loop in _fit. Returns (total, correct, seen, batches,
        ok); ok is False if training diverged (reported by _diverged)."""
        n = X.shape[0]
        ws = self._workspace(batch_size)  # the last, smaller micro-batch uses its first rows
        net = self._engine()
        net.bind(ws)
        opt._checkpoint(self._params)  # allocates the buffers the engine saves the state in
        total_steps = -(-n // (batch_size * accumulate))
        # With a progress bar, come back to Python about 50 times an epoch to draw it.
        chunk = max(1, total_steps // 50) if progress.bar else total_steps
        total, correct, seen, batch, first = 0.0, 0.0, 0, 0, 0
        status = _network.STATUS["done"]
        step_nt = self._step_threads(batch_size, nt)
        _threads.hold_blas(step_nt)  # one BLAS thread for small steps; given back below
        try:
            while first < total_steps:
                try:
                    status = net.train_epoch(X, Y, w, order, batch_size, accumulate,
                                             bpcore.LOSSES[loss], opt, opt._lr, step_nt, first,
                                             chunk, loss != "mse", True, backup, sigint)
                finally:  # also on Ctrl-C: account for the steps that completed
                    done = net.steps_done
                    total, correct = total + net.total, correct + net.correct
                    seen += net.seen
                    batch += done
                    first += done
                    self._last = (ws, net.last_rows) if net.last_rows else self._last
                    if done:
                        self.history.stopped_at = {"epoch": epoch, "batch": batch - 1}
                if status == _network.STATUS["diverged"]:
                    start, rows = net.last_start, net.last_rows
                    X_batch = X[start:start + rows] if order is None else ws.X[:rows]
                    self._diverged(epoch, batch, on_nan, progress, X_batch,
                                   _rows_of(order, train_rows, start, rows))
                    return total, correct, seen, batch, False
                if status == _network.STATUS["diverged_in_update"]:
                    self._diverged(epoch, batch, on_nan, progress, in_update=True)
                    return total, correct, seen, batch, False
                progress.batch(epoch, min(batch * accumulate, n_batches), total / max(seen, 1))
        finally:
            _threads.hold_blas(nt)
        return total, correct, seen, batch, True

    def _diverged(self, epoch, batch, on_nan, progress, X_batch=None, batch_rows=None,
                  in_update=False):
        """Name where the values went non-finite; the parameters are the last finite ones.

        X_batch is the last micro-batch's input and batch_rows maps its positions to rows of X.
        """
        layer, sample, where = None, None, "update"
        if not in_update and self._last is not None:
            layer, sample, where = self._first_non_finite(X_batch, *self._last)
        row = None
        if sample is not None and batch_rows is not None:
            row = int(batch_rows[sample])
        msg = (f"training diverged at epoch {epoch}, batch {batch}: non-finite values in the "
               f"{where}" + (f" of layer {layer}" if layer is not None else "")
               + (f", first at sample {sample} of the batch" if sample is not None else "")
               + (f" (row {row} of X)" if row is not None else "")
               + "; the model keeps the last finite weights (lower the learning rate, clip "
               "gradients with clip_norm, or check the data)")
        self.history.stopped = "diverged"
        self.history.diverged = {"epoch": epoch, "batch": batch, "layer": layer,
                                 "sample": sample, "row": row, "where": where}
        if on_nan == "raise":
            raise TrainingDivergedError(msg, epoch, batch, layer, sample, where, row)
        progress.message(msg)

    def _first_non_finite(self, X_batch, ws, rows):
        """(layer, sample, where) of the first non-finite value in the order the step computes
        them: the forward pass, the loss, the error signals from the output back, the gradients."""
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
        for i in range(len(self._grad_views) - 1, -1, -1):
            gW, gb = self._grad_views[i]
            if np.isfinite(gW).all() and (gb is None or np.isfinite(gb).all()):
                continue
            # Every delta and input is finite, so a product overflowed: sample r's own term of
            # grad_W is outer(z_out_prev[r], delta[r]), non-finite iff max|z| * max|delta| is.
            z_prev = X_batch if i == 0 else ws.z_out[i - 1][:rows]
            with np.errstate(over="ignore"):
                term = np.abs(z_prev).max(axis=1) * np.abs(ws.delta[i][:rows]).max(axis=1)
            bad = np.argwhere(~np.isfinite(term))
            return i, (int(bad[0, 0]) if bad.size else None), "gradients"
        return None, None, "gradients"

    # ---- description ---------------------------------------------------------------------------
    def get_config(self):
        return {"dtype": self.dtype.name, "seed": self.seed, "input_dim": self.input_dim,
                "layers": [L.get_config() for L in self.layers], "loss": self.loss}

    def __repr__(self):
        lines = [f"Sequential(dtype={self.dtype.name!r}" + (
            f", input_dim={self.input_dim}" if self.input_dim else "") + ") ["]
        for i, L in enumerate(self.layers):
            lines.append(f"  ({i}) {L!r}")
        lines.append("]")
        return "\n".join(lines)

    def summary(self, file=None):
        """Print (and return) a table of the layers, their output shapes and parameter counts."""
        rows = [("Layer", "Output shape", "Activation", "Params")]
        n_in = self.input_dim or (self.layers[0].input_dim if self.layers else None)
        total = 0
        for i, L in enumerate(self.layers):
            count = None if n_in is None else n_in * L.units + (L.units if L.use_bias else 0)
            total = None if (total is None or count is None) else total + count
            rows.append((f"dense_{i}" if not L.name else L.name, f"(None, {L.units})",
                         L.activation, "?" if count is None else f"{count:,}"))
            n_in = L.units
        widths = [max(len(r[k]) for r in rows) for k in range(4)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        text = [fmt.format(*rows[0]), "-" * (sum(widths) + 6)]
        text += [fmt.format(*r) for r in rows[1:]]
        text.append("-" * (sum(widths) + 6))
        text.append(f"Total params: {'? (not built)' if total is None else f'{total:,}'}"
                    f"  ({self.dtype.name})")
        out = "\n".join(text)
        print(out, file=file)
        return out

    # ---- files and pickling --------------------------------------------------------------------
    def save(self, path):
        """Write the model (architecture, weights, loss, optimizer and its state) to an .npz file,
        atomically, with a format version and a checksum. Load with bp.load(path)."""
        from ._io import save

        save(self, path)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fit_lock"] = None
        state["_workspaces"] = {}
        state["_last"] = None
        state["_net"] = None
        state["_grad_views"] = None
        state["layers"] = [L.get_config() for L in self.layers]
        state["_params"] = None if self._params is None else self._params.copy()
        state["_grads"] = None if self._grads is None else self._grads.copy()
        return state

    def __setstate__(self, state):
        layer_cfgs = state.pop("layers")
        params, grads = state.pop("_params"), state.pop("_grads")
        self.__dict__.update(state)
        self._fit_lock = threading.Lock()
        self.layers = []
        self._params = None
        for cfg in layer_cfgs:
            self.add(Dense(**cfg))
        if params is not None:
            self._rebind(params, grads)

    def _rebind(self, params, grads=None):
        """Adopt a flat parameter vector (and gradient buffer) and point the layers into it."""
        self._params = params
        self._grads = np.zeros_like(params) if grads is None else grads
        for L, (W, b) in zip(self.layers, self._views_into(params)):
            L._bind(W, b)
        self._grad_views = self._views_into(self._grads)

    # ---- insight: what the cached deltas tell (bp/insight.py) ----------------------------------
    def per_sample_gradient_norms(self, X, y, loss=None, *, reduction="none", bias=True):
        """||dl_s/d(W[i], b[i])|| per sample s and layer i, shape (n_samples, n_layers), from one
        batched pass: ||delta_s[i]|| * ||z_out_s[i-1]|| (see bp.insight.per_sample_gradient_norms;
        reduction "none" is each sample's own loss, "mean" its share of the batch mean)."""
        from .insight import per_sample_gradient_norms

        return per_sample_gradient_norms(self, X, y, loss, reduction=reduction, bias=bias)

    def diagnose(self, X, y, loss=None):
        """Per-layer mean |delta|, dead relu and saturated sigmoid/tanh fractions on (X, y);
        returns a bp.insight.Diagnosis (print it for a table). No update is made."""
        from .insight import diagnose

        return diagnose(self, X, y, loss)


# ---- helpers ---------------------------------------------------------------------------------------


def _flat_layout(layers, input_dims):
    """Where each layer's W (n_in x n_out, row-major) and b live in the flat buffers: a list of
    (n_in, n_out, offset of W, offset of b or -1), and the total size."""
    layout, offset = [], 0
    for L, n_in in zip(layers, input_dims):
        w_off, offset = offset, offset + n_in * L.units
        b_off = -1
        if L.use_bias:
            b_off, offset = offset, offset + L.units
        layout.append((n_in, L.units, w_off, b_off))
    return layout, offset


def _split(flat, layout):
    """(W, b) views into a flat buffer, one pair per layer of the layout (b None without bias)."""
    return [(flat[w_off:w_off + n_in * n_out].reshape(n_in, n_out),
             None if b_off < 0 else flat[b_off:b_off + n_out])
            for n_in, n_out, w_off, b_off in layout]


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


def _finite_sum(flat, n_threads):
    """True if every entry of flat is finite (its sum of squares is; overflow counts as not)."""
    return math.isfinite(_param_update.sum_of_squares(flat, n_threads))


def _rows_of(order, train_rows, start, rows):
    """The rows of X that positions start .. start + rows of an epoch's batches come from."""
    idx = np.arange(start, start + rows) if order is None else order[start:start + rows]
    return idx if train_rows is None else train_rows[idx]


def _gather(ws, X, Y, w, order, start, rows):
    """The batch's rows, copied into the workspace (no allocation: np.take with out=)."""
    if order is None:
        return X[start:start + rows], Y[start:start + rows], (None if w is None else w[start:start + rows])
    idx = order[start:start + rows]
    Xb, Yb = ws.X[:rows], ws.Y[:rows]
    np.take(X, idx, axis=0, out=Xb)
    np.take(Y, idx, axis=0, out=Yb)
    wb = None
    if w is not None:
        wb = ws.w[:rows]
        np.take(w, idx, out=wb)
    return Xb, Yb, wb


def _accuracy(loss, f_out, Y, w, count=False):
    """Classification accuracy (weighted), or None for mse. count=True returns the weighted
    number of correct rows instead of the fraction."""
    if loss == "mse":
        return None
    if loss == "cross_entropy":
        hit = (np.argmax(f_out, axis=1) == np.argmax(Y, axis=1)).astype(np.float64)
    else:
        hit = ((f_out >= 0.5) == (Y >= 0.5)).mean(axis=1)
    if w is not None:
        hit = hit * w
    if count:
        return float(hit.sum())
    denom = float(len(hit) if w is None else np.sum(w))
    return float(hit.sum() / denom) if denom else 0.0
