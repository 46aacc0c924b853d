"""Sequential: a stack of Dense layers trained by backpropagation.

The model is the container: its layers, the flat parameter buffer they live in, building,
prediction, evaluation, gradients, the explicit zero_grad / backward / step trio, its
description and its files. The rest is handed off, each to one module:

    bp/_passes.py     the flat layout, the workspaces, the input checks, the forward and
                      backward passes (the compiled engine or its Python twin)
    bp/_training.py   fit and partial_fit: the epoch loop and its two step runners
    bp/_online.py     partial_fit's straight line when nothing listens (else _training's)
    bp/insight.py     explain, per-sample gradient norms, diagnose

All of a model's parameters live in one flat buffer (``get_flat_params``); each layer's W and b
are views into it. Gradients live in a second buffer with the same layout. So the optimizer is
one call, clipping is one norm, and gradients, optimizer state and the training loop stay
separable: a data-parallel step is ``backward`` on a shard, a sum of the flat gradient across
ranks, then ``step``.
"""

import os
import threading

import numpy as np

from . import _evaluate, _io, _mpi, _online, _passes, _threads, _torch, _training
from . import insight as _insight
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from ._training import TrainingDivergedError  # noqa: F401  (bp.sequential.TrainingDivergedError)
from ._validation import as_dtype, as_float_array, check_finite, check_positive_int
from .layers import Dense, Dropout

_BUILD_LOCK = threading.Lock()


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
        self.loss, self.optimizer, self._metrics = None, None, []
        self.stop_training = False
        self._stop_reason = None
        self._params = None
        self._grads = None
        self._passes = None  # bp._passes.Passes over _params and _grads, once built
        self._comm = None  # the communicator of the last fit (data-parallel), for save
        self._rng = np.random.default_rng(self.seed)
        self._fit_lock = threading.Lock()
        for layer in layers or ():
            self.add(layer)

    # ---- a list of layers ----------------------------------------------------------------------
    def add(self, layer):
        """Append a Dense layer, or a Dropout of the last one's output (before building)."""
        if not isinstance(layer, (Dense, Dropout)):
            raise TypeError(f"Sequential holds bp.Dense and bp.Dropout layers. Received: {type(layer).__name__}")
        if self.built:
            raise ValueError("cannot add a layer to a built model (its parameters are allocated); "
                             "build a new Sequential")
        if isinstance(layer, Dropout):
            return _passes.attach_dropout(self.layers, layer)
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
        if not isinstance(index, slice):
            return self.layers[index]
        picked = self.layers[index]
        if not picked:
            raise IndexError("a slice of a Sequential must keep at least one layer")
        # a slice that starts at the input keeps the model's input width; it has no loss yet
        new = Sequential.from_config({
            **self.get_config(), "loss": None, "layers": [_layer_config(layer) for layer in picked],
            "input_dim": self.input_dim if picked[0] is self.layers[0] else None})
        if self.built:
            new.build(picked[0].W.shape[0])
            for src, dst in zip(picked, new.layers):
                dst.W = src.W
                if src.use_bias:
                    dst.b = src.b
        return new

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
        _passes.check_layers(self.layers)
        n_in = input_dim or self.input_dim or self.layers[0].input_dim
        if n_in is None:
            raise ValueError("the input width is unknown: give input_dim or call fit/predict")
        n_in = check_positive_int("input_dim", n_in)
        widths = _passes.layer_widths(self.layers, n_in)
        # Draw every layer's weights before binding any: a kernel_initializer that fails on a later
        # layer then leaves no layer half-built, and the seeded generator as it was.
        rng = self._rng
        rng_state = rng.bit_generator.state
        try:
            initial = [layer._initial_weights(widths[i], rng, self.dtype)
                       for i, layer in enumerate(self.layers)]
        except BaseException:
            rng.bit_generator.state = rng_state
            raise
        params = _passes.initial_params(self.layers, widths[:-1], initial, self.dtype)
        _passes.draw_dropout_seeds(self.layers, rng)  # after the weights
        for layer, n in zip(self.layers, widths):
            layer.input_dim = n
        self.input_dim = n_in
        self._rebind(params)

    def _build_from(self, X):
        if not self.built:
            self.build(X.shape[1])

    def _rebind(self, params, grads=None):
        """Adopt a flat parameter vector (and gradient buffer) and point the layers into it."""
        self._passes = _passes.Passes(self.layers, params, grads)
        self._params, self._grads = params, self._passes.grads
        for layer, (W, b) in zip(self.layers, self._passes.param_views):
            layer._bind(W, b)

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
        return _passes.readonly(self._grads)

    def _require_built(self):
        if not self.built:
            raise ValueError("the model is not built yet: call fit, predict or build(input_dim) first")

    # ---- prediction and evaluation -------------------------------------------------------------
    def predict(self, X, batch_size=None, out=None):
        """f_out = tau(f_in) for every row of X, shape (n_samples, n_outputs), written into `out`
        when given (C-contiguous, writeable, the model's dtype and that shape, not overlapping X).
        batch_size is accepted for Keras compatibility (rows go in cache-sized blocks anyway).
        Safe to call from several threads at once (each call uses its own buffers)."""
        check_positive_int("batch_size", batch_size, allow_none=True)
        if self._passes is None:
            self._build_from(_passes.check_X(self, X))
        return self._passes.predict(self, X, _threads.get_num_threads(), out)

    def evaluate(self, X, y, loss=None, sample_weight=None, batch_size=None, metrics=None):
        """A dict with the loss (with the regularisers, as fit's), the accuracy (a classifier)
        and the metrics (compile's, or these: bp.metrics) on (X, y), each exact over the rows.
        (batch_size is accepted for Keras compatibility; the whole of X is one pass.)"""
        check_positive_int("batch_size", batch_size, allow_none=True)
        return _evaluate.evaluate_model(self, X, y, loss, sample_weight,
                                        self._metrics if metrics is None else metrics)

    # ---- gradients without an update -----------------------------------------------------------
    def gradients(self, X, y, loss=None, sample_weight=None):
        """dL/dW and dL/db of each layer on (X, y), no update (inference mode, with regularisers).

        Returns a list of (grad_W, grad_b) per Dense layer (grad_b None without bias). The error
        signals of this pass are then in ``model.error_signals``.
        """
        loss, X, Y, w = _passes.prepare(self, X, y, loss, sample_weight)
        self._build_from(X)
        nt = _threads.ensure_blas_limit()
        # a buffer, workspace and engine of its own: gradients() may run beside other calls;
        # with the layers' regularisers, as a training step adds them
        grads, _ = self._passes.private_gradients(X, Y, w, loss,
                                                  _losses.default_scale(loss, *Y.shape), nt)
        return self._passes.views(grads)

    @property
    def error_signals(self):
        """The deltas dL/dz_in of the last backward pass (fit's: training mode, through the masks),
        one read-only array per layer (None before any). Each access returns a snapshot: later
        passes, which reuse the buffers, do not change arrays already handed out."""
        return None if self._passes is None else self._passes.cached("delta")

    @property
    def z_in(self):
        """The cached z_in of the last backward pass, per layer (read-only; f_in is the last)."""
        return None if self._passes is None else self._passes.cached("z_in")

    @property
    def z_out(self):
        """The cached z_out of the last backward pass, per layer (read-only; f_out is the last)."""
        return None if self._passes is None else self._passes.cached("z_out")

    # ---- explicit steps: zero_grad / backward / step -------------------------------------------
    def zero_grad(self):
        """Set the gradient buffer to zero (start accumulating). On an unbuilt model there is
        nothing to zero: the buffer starts at zero when the first backward builds it."""
        if self.built:
            self._grads[...] = 0

    def backward(self, X, y, loss=None, sample_weight=None, total_samples=None):
        """Add this batch's gradient (inference mode, data loss) to the gradient buffer; returns L.

        total_samples : the size of the whole batch this one is part of (default: len(X)).
            With it, micro-batches accumulated by repeated calls give exactly the gradient of
            the whole batch (the mean is taken over total_samples, not over each micro-batch).
        """
        loss, X, Y, w = _passes.prepare(self, X, y, loss, sample_weight)
        n_total = X.shape[0] if total_samples is None else check_positive_int("total_samples", total_samples)
        self._build_from(X)
        nt = _threads.ensure_blas_limit()
        ws = self._passes.workspace(X.shape[0])
        return float(self._passes.backward(X, Y, w, ws, loss,
                                           _losses.default_scale(loss, n_total, Y.shape[1]), 1.0,
                                           self._grads, nt))

    def step(self, optimizer=None):
        """Apply one optimizer update from the gradient buffer."""
        self._require_built()
        if optimizer is not None:
            self.optimizer = _optimizers.get(optimizer)
        elif self.optimizer is None:
            self.optimizer = _optimizers.get(None)
        # no BLAS here, so no thread count to settle: the update runs serial (_passes)
        self.optimizer.apply(self._params, self._grads, _passes.ELEMENTWISE_THREADS)

    def compile(self, loss=None, optimizer=None, metrics=None):
        """Set the default loss, optimizer and metrics (names or bp.metrics objects) for
        fit/partial_fit/evaluate (Keras style)."""
        new_loss = _passes.check_loss(self, loss) if loss is not None else self.loss
        new_opt = _optimizers.get(optimizer) if optimizer is not None else self.optimizer
        new_metrics = _metrics.check(metrics) if metrics is not None else self._metrics
        self.loss, self.optimizer, self._metrics = new_loss, new_opt, new_metrics
        return self

    # ---- training: bp/_training.py -------------------------------------------------------------
    def fit(self, X, y=None, *, loss=None, optimizer=None, epochs=1, batch_size=32,
            validation_split=0.0, validation_data=None, shuffle=True, sample_weight=None,
            class_weight=None, callbacks=None, accumulate=1, verbose=1, on_nan="raise",
            steps_per_epoch=None, validation_steps=None, comm=None, metrics=None,
            initial_epoch=None):
        """Train by mini-batch backpropagation.

        Parameters
        ----------
        X : array (n_samples, n_features) or np.memmap (streamed in blocks);  y : targets; or X
            an iterable of (X_batch, y_batch[, w_batch]), y None: a step a batch, steps_per_epoch
        loss : "mse", "binary_cross_entropy" or "cross_entropy"; default from the output
            activation (softmax -> cross_entropy, sigmoid -> binary_cross_entropy, else mse)
        optimizer : bp.Optimizer or name; default the model's, else Adam()
        epochs : int >= 1;  batch_size : int >= 1 (a batch larger than the data is the data)
        validation_split : held-out fraction (seeded);  validation_data : (X_val, y_val[, w_val])
            (X_val may be an np.memmap, read in blocks) or an iterable of such batches,
            validation_steps of them per evaluation (needed for a generator when epochs > 1)
        shuffle : reshuffle every epoch (seeded);  sample_weight : (n_samples,) weights >= 0
        class_weight : {label: weight} or "balanced" (n / (k n_c)), times sample_weight
        callbacks : list of bp.Callback (e.g. bp.EarlyStopping)
        metrics : names or bp.metrics ("auc", "f1", "mae", "r2"...; compile's if None)
        initial_epoch : run epochs initial_epoch .. epochs - 1 (Keras; schedules read them)
        accumulate : int >= 1; each update uses `accumulate` micro-batches of batch_size rows,
            exactly the update of one batch of accumulate * batch_size rows
        verbose : 0 silent, 1 progress bar (a line per epoch when not a terminal), 2 line/epoch
        on_nan : "raise" (TrainingDivergedError) or "stop" (end quietly, History.stopped set);
            either way the model keeps the last finite weights
        comm : an mpi4py communicator for data-parallel training (README "Training on many
            processes"): each rank its own rows and batch_size, updates as on the union of them

        Returns
        -------
        History (on Ctrl-C: after the current step, ``stopped == "interrupted"``, model usable).
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "X", "y")}
        return _training.fit(self, X, y, **arguments)  # every keyword, as given

    def partial_fit(self, X, y, *, loss=None, optimizer=None, batch_size=32, sample_weight=None,
                    shuffle=True, accumulate=1, verbose=0, comm=None):
        """One pass over (X, y), keeping the optimizer's state across calls: its moments, its
        step count and a learning-rate schedule's epoch (each pass is the epoch after the last
        one the optimizer ran), so k calls train as fit(epochs=k) does."""
        return _online.partial_fit(self, X, y, loss=loss, optimizer=optimizer,
                                   batch_size=batch_size, sample_weight=sample_weight,
                                   shuffle=shuffle, accumulate=accumulate, verbose=verbose,
                                   comm=comm)

    # ---- insight: what the cached deltas tell (bp/insight.py) ----------------------------------
    def per_sample_gradient_norms(self, X, y, loss=None, *, reduction="none", bias=True):
        """||dl_s/d(W[i], b[i])|| per sample s and layer i, shape (n_samples, n_layers), from one
        batched pass: ||delta_s[i]|| * ||z_out_s[i-1]|| (see bp.insight.per_sample_gradient_norms;
        reduction "none" is each sample's own loss, "mean" its share; inference mode, data loss)."""
        return _insight.per_sample_gradient_norms(self, X, y, loss, reduction=reduction, bias=bias)

    def diagnose(self, X, y, loss=None):
        """Per-layer mean |delta|, dead relu and saturated sigmoid/tanh fractions on (X, y);
        returns a bp.insight.Diagnosis (print it for a table). No update is made."""
        return _insight.diagnose(self, X, y, loss)

    # ---- description ---------------------------------------------------------------------------
    def get_config(self):
        """The architecture as plain data: dtype, seed, input_dim, the layers' configs, loss."""
        return {"dtype": self.dtype.name, "seed": self.seed, "input_dim": self.input_dim,
                "layers": [layer.get_config() for layer in self.layers], "loss": self.loss}

    @classmethod
    def from_config(cls, config):
        """A new, unbuilt model with the architecture ``get_config`` described (slicing,
        unpickling and bp.load all rebuild through here)."""
        model = cls(_dense_layers(config["layers"]), dtype=config["dtype"],
                    seed=config["seed"], input_dim=config["input_dim"])
        model.loss = config.get("loss")
        return model

    def to_torch(self):
        """The model as a torch.nn.Sequential of Linear and activation modules (bp/_torch.py)."""
        return _torch.to_torch(self)

    @classmethod
    def from_torch(cls, module, dtype=None):
        """A built model from such a torch module, weights exact (bp/_torch.py)."""
        return _torch.from_torch(cls, module, dtype)

    def __repr__(self):
        lines = [f"Sequential(dtype={self.dtype.name!r}" + (
            f", input_dim={self.input_dim}" if self.input_dim else "") + ") ["]
        for i, layer in enumerate(self.layers):
            lines.append(f"  ({i}) {layer!r}")
        lines.append("]")
        return "\n".join(lines)

    def summary(self, print_fn=None, file=None, to_string=False):
        """Print a table of the layers, output shapes and parameter counts; return None (Keras),
        or with to_string=True the text, not printed; print_fn(text) prints it instead."""
        out = _summary_table(self.layers, self.input_dim, self.dtype)
        if to_string:
            return out
        print_fn(out) if print_fn is not None else print(out, file=file)

    # ---- files and pickling --------------------------------------------------------------------
    def save(self, path):
        """Write the model (architecture, weights, loss, optimizer and its state) to an .npz file,
        atomically, with a format version and a checksum. Load with bp.load(path).
        After a data-parallel fit only rank 0 writes; on the other ranks save does nothing."""
        self._require_built()
        if not _mpi.writes_files(self):
            return
        config = self.get_config()
        config["optimizer"] = _optimizers.serialize(self.optimizer)
        # the generator that shuffles each epoch: without it a loaded model restarts it from the
        # seed, and its shuffles differ from those the interrupted run would have drawn next
        config["rng_state"] = self._rng.bit_generator.state
        arrays = {"params": self._params}
        if self.optimizer is not None:
            arrays.update({"opt_" + name: buf for name, buf in self.optimizer._state.items()})
        _io.write(path, config, arrays)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fit_lock"] = None
        state["_comm"] = None  # a communicator belongs to its process
        state["_passes"] = None
        state["layers"] = [layer.get_config() for layer in self.layers]
        state["_params"] = None if self._params is None else self._params.copy()
        state["_grads"] = None if self._grads is None else self._grads.copy()
        return state

    def __setstate__(self, state):
        layer_cfgs = state.pop("layers")
        params, grads = state.pop("_params"), state.pop("_grads")
        self.__dict__.update({"_metrics": [], **state})  # (a pickle from before metrics)
        self._fit_lock = threading.Lock()
        self.layers = []
        self._params = self._grads = self._passes = None
        for layer in _dense_layers(layer_cfgs):
            self.add(layer)
        if params is not None:
            self._rebind(params, grads)


def load(path):
    """Read a model written by ``Sequential.save``.

    Raises ValueError for a file that is not a bp model, is truncated or corrupted (checksum), or
    has another format version; never unpickles anything.
    """
    config, arrays = _io.read(path)
    path = os.fspath(path)
    try:
        model = Sequential.from_config(config)
        model.build()
        params = arrays["params"]
        if params.shape != model._params.shape or params.dtype != model.dtype:
            raise ValueError(f"params have shape {params.shape} and dtype {params.dtype}; the "
                             f"architecture needs {model._params.shape} {model.dtype}")
        model._params[...] = params
        if config.get("rng_state") is not None:
            model._rng.bit_generator.state = config["rng_state"]
        if config.get("optimizer") is not None:
            state = {name[4:]: buf for name, buf in arrays.items() if name.startswith("opt_")}
            model.optimizer = _optimizers.deserialize(config["optimizer"], state, params)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path!r} holds an invalid bp model: {exc}") from None
    return model


def _summary_table(layers, input_dim, dtype):
    """Sequential.summary's table: a row per layer, the total (unknown until the input width is)."""
    rows = [("Layer", "Output shape", "Activation", "Params")]
    n_in = input_dim or (layers[0].input_dim if layers else None)
    total = 0
    for i, layer in enumerate(layers):
        count = None if n_in is None else n_in * layer.units + (layer.units if layer.use_bias else 0)
        total = None if (total is None or count is None) else total + count
        rows.append((f"dense_{i}" if not layer.name else layer.name, f"(None, {layer.units})",
                     layer.activation, "?" if count is None else f"{count:,}"))
        n_in = layer.units
    return _text_table(rows, f"Total params: {'? (not built)' if total is None else f'{total:,}'}"
                             f"  ({dtype.name})")


def _text_table(rows, footer):
    """Left-aligned columns: a header row, a rule, the rows, a rule, a footer line."""
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([fmt.format(*rows[0]), rule, *(fmt.format(*r) for r in rows[1:]), rule,
                      footer])


def _layer_config(layer):
    """A layer's config for a copy of it: with its input width when built, and a callable
    kernel_initializer kept (get_config drops it: it is code, not data)."""
    cfg = layer.get_config()
    if layer.built:
        cfg["input_dim"] = layer.W.shape[0]
    cfg["kernel_initializer"] = layer.kernel_initializer
    return cfg


def _dense_layers(configs):
    """The layers a config list describes: each Dense, then its Dropout if it has one."""
    layers = []
    for cfg in configs:
        cfg = dict(cfg)
        dropout = cfg.pop("dropout", None)
        layers.append(Dense(**cfg))
        if dropout is not None:
            layers.append(Dropout(**dropout))
    return layers
