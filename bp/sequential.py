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

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _evaluate, _io, _model_file, _mpi, _online, _ops, _passes, _threads, _torch, _training
from . import insight as _insight
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from ._ops import layer_config, layers_from_config, refuse_beyond_dense
from ._training import TrainingDivergedError  # noqa: F401  (bp.sequential.TrainingDivergedError)
from ._validation import (
    as_float_array,
    as_policy,
    check_finite,
    check_positive_int,
    check_seed,
    check_size,
)

if TYPE_CHECKING:  # annotations only (bp.callbacks imports nothing from here)
    from .callbacks import Callback, History
    from .layers import Dense, Dropout
    from .optimizers import Optimizer

_BUILD_LOCK = threading.Lock()


class Sequential:
    """A multilayer perceptron: layers applied in order, trained by backpropagation.

    ``z_out[i] = sigma(z_out[i-1] @ W[i] + b[i])`` layer by layer; the last layer's activation is
    the output activation tau, and ``f_out = tau(f_in)`` is the prediction. ``Sequential`` behaves
    like a list of its layers (``len``, iteration, indexing; a slice gives a new model).

    Parameters
    ----------
    layers : list of layers, optional
        Dense, Activation, Dropout, LayerNormalization, BatchNormalization, Residual or Input, in
        order; a Dropout right after a Dense acts on its output. The last layer is a Dense or an
        Activation: its activation is the output activation tau.
    dtype : {"float32", "float64", "mixed_bfloat16"}, default="float32"
        The dtype of the weights and of every computation; inputs are cast to it.
        ``"mixed_bfloat16"`` (Keras 3's policy name): float32 weights, gradients, optimizer
        state and elementwise passes, and the Dense layers' matrix products in bfloat16 with
        float32 sums (each operand rounded to bf16, to nearest even); inputs are float32.
    seed : int or None, default=None
        Seeds weight initialisation, shuffling, dropout masks and the validation split: the same
        seed gives bit-identical training.
    input_dim : int, optional
        The input width; if omitted, taken from the first layer's ``input_dim`` or from the data
        at first use.
    input_shape : tuple of one int, optional
        Keras' spelling of ``input_dim``: ``input_shape=(n,)``.

    Attributes
    ----------
    layers : list of layers
        The layers (a Dropout right after a Dense is attached to it).
    loss : str or None
        The loss of the last ``fit`` or ``compile``.
    optimizer : Optimizer or None
        The optimizer of the last ``fit``, ``step`` or ``compile``, with its state.
    history : History
        The record of the last ``fit``.
    dtype_policy : str
        ``"float32"``, ``"float64"`` or ``"mixed_bfloat16"`` (then ``dtype`` is float32).

    See Also
    --------
    Dense : The fully connected layer.
    Sequential.fit : Train by mini-batch backpropagation.
    load : Read a model written by ``save``.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
    >>> model = bp.Sequential([bp.Dense(16, activation="relu"), bp.Dense(3, activation="softmax")],
    ...                       seed=0)
    >>> history = model.fit(X, y, loss="cross_entropy", epochs=5, verbose=0)
    >>> model.predict(X).shape
    (60, 3)
    >>> len(model), model.n_params
    (2, 131)
    """

    def __init__(self, layers: Iterable[Any] | None = None, *, dtype: DTypeLike = "float32",
                 seed: int | None = None, input_dim: int | None = None,
                 input_shape: tuple[int, ...] | None = None) -> None:
        input_dim = _ops.input_dim_of(input_shape, input_dim)
        self.dtype, self.dtype_policy = as_policy(dtype)
        self.seed = check_seed(seed)
        self.layers: list[Any] = []
        self.input_dim = check_positive_int("input_dim", input_dim, allow_none=True)
        self.loss: str | None = None
        self.optimizer: Any = None
        self._metrics: list[Any] = []
        self.stop_training = False
        self._stop_reason = None
        self._params: Any = None
        self._grads: Any = None
        self._passes: Any = None  # bp._passes.Passes over _params and _grads, once built
        self._comm = None  # the communicator of the last fit (data-parallel), for save
        self._rng = np.random.default_rng(self.seed)
        self._fit_lock = _threads.FitLock()
        for layer in layers or ():
            self.add(layer)

    # ---- a list of layers ----------------------------------------------------------------------
    def add(self, layer: Dense | Dropout) -> None:
        """Append a layer (before the model is built).

        A Dropout right after a Dense is folded into it (``layer.dropout``); ``bp.Input(n)``,
        first, sets the input width.

        Parameters
        ----------
        layer : layer
            A new, unbuilt Dense, Activation, Dropout, LayerNormalization, BatchNormalization,
            Residual, or an Input first.

        Examples
        --------
        >>> import bp
        >>> model = bp.Sequential()
        >>> model.add(bp.Dense(8, activation="tanh"))
        >>> model.add(bp.Dense(1))
        >>> len(model)
        2
        """
        self.input_dim = _ops.append_layer(self.layers, layer, self, self.input_dim, self.built)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Dense]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        """An int gives the layer; a slice a new Sequential of copies of those (built: weights too)."""
        if not isinstance(index, slice):
            return self.layers[index]
        picked = self.layers[index]
        if not picked:
            raise IndexError("a slice of a Sequential must keep at least one layer")
        refuse_beyond_dense(picked, "a slice of a Sequential")  # (copies W and b below)
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
    def built(self) -> bool:
        """Whether the parameters are allocated (after ``build``, ``fit`` or ``predict``).

        Examples
        --------
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(2)])
        >>> model.built
        False
        >>> model.build(3).built
        True
        """
        return self._params is not None

    def build(self, input_dim: int | None = None) -> Sequential:
        """Allocate the flat parameter buffer and initialise every layer (seeded).

        Parameters
        ----------
        input_dim : int, optional
            The input width; default the model's ``input_dim`` or the first layer's.

        Returns
        -------
        Sequential
            The model itself.

        Examples
        --------
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(2)], seed=0).build(3)
        >>> model.layers[0].W.shape
        (3, 4)
        """
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
        dense_inputs = _ops.dense_inputs(self.layers, n_in)  # checks every width first
        check_size(_model_file.parameter_count(self.layers, n_in), n_in, self.dtype)
        # Draw every layer's weights before binding any: a kernel_initializer that fails on a later
        # layer then leaves no layer half-built, and the seeded generator as it was.
        rng = self._rng
        rng_state = rng.bit_generator.state
        try:
            initial = [layer._initial_weights(n, rng, self.dtype) for layer, n in dense_inputs]
        except BaseException:
            rng.bit_generator.state = rng_state
            raise
        _ops.set_widths(self.layers, n_in)
        params = _ops.initial_params(self.layers, [n for _, n in dense_inputs], initial,
                                        self.dtype)
        _ops.draw_dropout_seeds(self.layers, rng)  # after the weights
        _ops.new_running_statistics(self.layers, self.dtype)
        self.input_dim = n_in
        self._rebind(params)

    def _build_from(self, X):
        if not self.built:
            self.build(X.shape[1])

    def _rebind(self, params, grads=None):
        """Adopt a flat parameter vector (and gradient buffer) and point the layers into it."""
        self._passes = _passes.Passes(self.layers, params, grads,
                                      mixed=self.dtype_policy == "mixed_bfloat16")
        self._params, self._grads = params, self._passes.grads
        for layer, (W, b) in zip(_ops.parametric(self.layers), self._passes.param_views):
            layer._bind(W, b)

    # ---- parameters ----------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """The number of parameters (weights and biases), 0 before the model is built.

        Examples
        --------
        >>> import bp
        >>> bp.Sequential([bp.Dense(4), bp.Dense(2)]).build(3).n_params
        26
        """
        return 0 if not self.built else int(self._params.size)

    def get_flat_params(self) -> np.ndarray:
        """A copy of all parameters, layer by layer (W row-major, then b).

        Returns
        -------
        numpy.ndarray
            Shape ``(n_params,)``, the model's dtype.

        Examples
        --------
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(2)], seed=0).build(3)
        >>> model.get_flat_params().shape
        (8,)
        """
        self._require_built()
        return self._params.copy()

    def set_flat_params(self, flat: ArrayLike) -> None:
        """Set all parameters from a flat vector laid out as ``get_flat_params`` (checked first).

        Parameters
        ----------
        flat : array-like of shape (n_params,)
            The new parameters; finite values, cast to the model's dtype.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(2)], seed=0).build(3)
        >>> model.set_flat_params(np.zeros(model.n_params))
        >>> float(np.abs(model.layers[0].W).sum())
        0.0
        """
        self._require_built()
        arr = as_float_array("params", flat, self.dtype, ndim=1)
        if arr.shape != self._params.shape:
            raise ValueError(f"params must have shape {self._params.shape}. Received: shape "
                             f"{arr.shape}")
        check_finite("params", arr)
        self._params[...] = arr

    def get_flat_grads(self) -> np.ndarray:
        """The gradient buffer (a read-only view), laid out as ``get_flat_params``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_params,)``: what the last ``backward`` calls accumulated.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(1)], seed=0)
        >>> loss = model.backward(np.ones((4, 3)), np.zeros(4))
        >>> model.get_flat_grads().shape
        (4,)
        """
        self._require_built()
        return _passes.readonly(self._grads)

    def _require_built(self):
        if not self.built:
            raise ValueError("the model is not built yet: call fit, predict or build(input_dim) "
                             "first")

    # ---- prediction and evaluation -------------------------------------------------------------
    def predict(self, X: ArrayLike, batch_size: int | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
        """Predict ``f_out = tau(f_in)`` for every row of X.

        Runs the whole network in one compiled call over cache-sized blocks of rows. Safe to call from
        several threads at once (each call uses its own buffers).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        batch_size : int, optional
            Accepted for Keras compatibility; rows go in cache-sized blocks anyway.
        out : numpy.ndarray, optional
            Where to write the result: C-contiguous, writeable, the model's dtype and shape
            ``(n_samples, n_outputs)``, not overlapping X.

        Returns
        -------
        numpy.ndarray of shape (n_samples, n_outputs)
            The predictions (``out`` when given).

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
        >>> model = bp.Sequential([bp.Dense(3, activation="softmax")], seed=0)
        >>> proba = model.predict(X)
        >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1, atol=1e-6))
        ((60, 3), True)
        """
        check_positive_int("batch_size", batch_size, allow_none=True)
        self._fit_lock.check_reader()
        if self._passes is None:
            self._build_from(_passes.check_X(self, X))
        return self._passes.predict(self, X, _threads.get_num_threads(), out)

    def evaluate(self, X: ArrayLike, y: ArrayLike, loss: str | None = None,
                 sample_weight: ArrayLike | None = None, batch_size: int | None = None,
                 metrics: Any = None) -> dict[str, float]:
        """Compute the loss (with the regularisers, as fit's), the accuracy and the metrics on (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like
            The targets, as for ``fit``.
        loss : str, optional
            Default: the model's loss, else the output activation's natural one.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the rows.
        batch_size : int, optional
            Accepted for Keras compatibility; the whole of X is one pass.
        metrics : list of str or bp.metrics.Metric, optional
            Default: the model's (``compile(metrics=...)``). Each is exact over the rows, as
            ``sklearn.metrics`` on the same predictions.

        Returns
        -------
        dict
            ``{"loss": float}``, ``"accuracy"`` for classification losses, and one entry per
            metric.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
        >>> model = bp.Sequential([bp.Dense(3, activation="softmax")], seed=0)
        >>> sorted(model.evaluate(X, y))
        ['accuracy', 'loss']
        """
        check_positive_int("batch_size", batch_size, allow_none=True)
        self._fit_lock.check_reader()
        return _evaluate.evaluate_model(self, X, y, loss, sample_weight,
                                        self._metrics if metrics is None else metrics)

    # ---- gradients without an update -----------------------------------------------------------
    def gradients(self, X: ArrayLike, y: ArrayLike, loss: str | None = None,
                  sample_weight: ArrayLike | None = None) -> list[tuple[np.ndarray, ...]]:
        """Compute dL/dW and dL/db of each layer on (X, y), without an update.

        Inference mode (no dropout mask), with the regularisers. The error signals of this pass are
        then in ``error_signals``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like
            The targets, as for ``fit``.
        loss : str, optional
            Default: the model's loss, else the output activation's natural one.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the rows.

        Returns
        -------
        list of tuple
            ``(grad_W, grad_b)`` per Dense layer (``grad_b`` None without a bias).

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
        >>> model = bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
        ...                       seed=0)
        >>> [gW.shape for gW, gb in model.gradients(X, y)]
        [(4, 8), (8, 3)]
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
    def error_signals(self) -> list[np.ndarray] | None:
        """The error signals ``delta = dL/dz_in`` of the last backward pass, one per layer.

        Read-only arrays of shape ``(n_samples, units)`` (fit's: training mode, through the dropout
        masks), or None before any pass. Each access returns a snapshot: later passes, which reuse the
        buffers, do not change arrays already handed out.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
        >>> model = bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
        ...                       seed=0)
        >>> _ = model.gradients(X, y)
        >>> [d.shape for d in model.error_signals]
        [(60, 8), (60, 3)]
        """
        return None if self._passes is None else self._passes.cached("delta")

    @property
    def z_in(self) -> list[np.ndarray] | None:
        """The cached ``z_in`` of the last backward pass, per layer (read-only; ``f_in`` is the last).

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(2), bp.Dense(1)], seed=0)
        >>> _ = model.gradients(np.ones((5, 3)), np.zeros(5))
        >>> [z.shape for z in model.z_in]
        [(5, 2), (5, 1)]
        """
        return None if self._passes is None else self._passes.cached("z_in")

    @property
    def z_out(self) -> list[np.ndarray] | None:
        """The cached ``z_out`` of the last backward pass, per layer (read-only; ``f_out`` is the last).

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(2), bp.Dense(1)], seed=0)
        >>> _ = model.gradients(np.ones((5, 3)), np.zeros(5))
        >>> [z.shape for z in model.z_out]
        [(5, 2), (5, 1)]
        """
        return None if self._passes is None else self._passes.cached("z_out")

    # ---- explicit steps: zero_grad / backward / step -------------------------------------------
    def zero_grad(self) -> None:
        """Set the gradient buffer to zero (start accumulating).

        On an unbuilt model there is nothing to zero: the buffer starts at zero when the first
        ``backward`` builds it.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(1)], seed=0)
        >>> _ = model.backward(np.ones((4, 3)), np.ones(4))
        >>> model.zero_grad()
        >>> float(np.abs(model.get_flat_grads()).sum())
        0.0
        """
        if self.built:
            self._grads[...] = 0

    def backward(self, X: Any, y: ArrayLike, loss: str | None = None,
                 sample_weight: ArrayLike | None = None,
                 total_samples: int | None = None) -> float:
        """Add this batch's gradient to the gradient buffer and return its loss.

        Inference mode (no dropout mask), data loss (no regulariser penalty: ``step`` adds none
        either). Together with ``zero_grad`` and ``step`` it makes PyTorch's explicit loop.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs of this (micro-)batch.
        y : array-like
            Its targets, as for ``fit``.
        loss : str, optional
            Default: the model's loss, else the output activation's natural one.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the rows.
        total_samples : int, optional
            The size of the whole batch this one is part of (default ``len(X)``). With it,
            micro-batches accumulated by repeated calls give exactly the gradient of the whole batch
            (the mean is taken over ``total_samples``, not over each micro-batch).

        Returns
        -------
        float
            The batch's loss.

        See Also
        --------
        Sequential.zero_grad, Sequential.step

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((64, 4)), np.arange(64) % 3
        >>> model = bp.Sequential([bp.Dense(3, activation="softmax")], seed=0)
        >>> model.zero_grad()
        >>> for start in (0, 32):              # two micro-batches: the gradient of all 64 rows
        ...     _ = model.backward(X[start:start + 32], y[start:start + 32], total_samples=64)
        >>> model.step(bp.SGD(learning_rate=0.1))
        """
        loss, X, Y, w = _passes.prepare(self, X, y, loss, sample_weight)
        n_total = (X.shape[0] if total_samples is None
                   else check_positive_int("total_samples", total_samples))
        self._build_from(X)
        nt = _threads.ensure_blas_limit()
        ws = self._passes.workspace(X.shape[0])
        return float(self._passes.backward(X, Y, w, ws, loss,
                                           _losses.default_scale(loss, n_total, Y.shape[1]), 1.0,
                                           self._grads, nt))

    def step(self, optimizer: Optimizer | str | None = None) -> None:
        """Apply one optimizer update from the gradient buffer.

        Parameters
        ----------
        optimizer : Optimizer or str, optional
            Default: the model's optimizer, else ``Adam()``. The optimizer keeps its state (momenta,
            step count) from call to call.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(1)], seed=0)
        >>> _ = model.backward(np.ones((4, 3)), np.ones(4))
        >>> model.step(bp.SGD(learning_rate=0.1))
        >>> model.optimizer.iterations
        1
        """
        self._require_built()
        if optimizer is not None:
            self.optimizer = _optimizers.get(optimizer)
        elif self.optimizer is None:
            self.optimizer = _optimizers.get(None)
        # no BLAS here, so no thread count to settle: the update runs serial (_passes)
        self.optimizer.apply(self._params, self._grads, _passes.ELEMENTWISE_THREADS)

    def compile(self, loss: str | None = None, optimizer: Optimizer | str | None = None,
                metrics: Any = None) -> Sequential:
        """Set the default loss, optimizer and metrics for fit, partial_fit and evaluate (Keras style).

        Parameters
        ----------
        loss : str, optional
            "mse", "binary_cross_entropy" or "cross_entropy"; None keeps the current one.
        optimizer : Optimizer or str, optional
            An optimizer or its name ("sgd", "adam", "adamw"); None keeps the current one.
        metrics : list of str or bp.metrics.Metric, optional
            Names ("auc", "f1", "mae", "r2"...) or ``bp.metrics`` objects; None keeps the
            current ones.

        Returns
        -------
        Sequential
            The model itself.

        Examples
        --------
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(3, activation="softmax")]).compile(
        ...     loss="cross_entropy", optimizer=bp.SGD(learning_rate=0.05))
        >>> model.loss
        'cross_entropy'
        """
        new_loss = _passes.check_loss(self, loss) if loss is not None else self.loss
        new_opt = _optimizers.get(optimizer) if optimizer is not None else self.optimizer
        new_metrics = _metrics.check(metrics) if metrics is not None else self._metrics
        new_opt is None or new_opt._bind(self)
        self.loss, self.optimizer, self._metrics = new_loss, new_opt, new_metrics
        return self

    # ---- training: bp/_training.py -------------------------------------------------------------
    def fit(self, X: Any, y: ArrayLike | None = None, *, loss: str | None = None,
            optimizer: Optimizer | str | None = None, epochs: int = 1, batch_size: int = 32,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            sample_weight: ArrayLike | None = None, class_weight: dict | str | None = None,
            callbacks: Sequence[Callback] | None = None, accumulate: int = 1, verbose: int = 1,
            on_nan: str = "raise", steps_per_epoch: int | None = None,
            validation_steps: int | None = None, comm: Any = None, metrics: Any = None,
            initial_epoch: int | None = None) -> History:
        """Train by mini-batch backpropagation.

        Each epoch shuffles the rows (seeded), and each batch is one step: forward pass, loss, error
        signals, gradients and the optimizer's update, all in one compiled loop. A step whose loss,
        gradient or update is not finite is undone before training stops.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), numpy.memmap, or iterable
            The inputs. A memory-mapped array is streamed in blocks of about 32 MB. An iterable of
            ``(X_batch, y_batch)`` or ``(X_batch, y_batch, w_batch)`` (y then None) makes each batch
            one step, in the order given.
        y : array-like, optional
            The targets: class labels ``(n_samples,)`` or one-hot rows for cross-entropy, values in
            [0, 1] for binary cross-entropy, any finite values for mse. None when X is an iterable.
        loss : {"mse", "binary_cross_entropy", "cross_entropy"}, optional
            Default: the model's loss, else the output activation's natural one (softmax ->
            cross_entropy, sigmoid -> binary_cross_entropy, anything else -> mse).
        optimizer : Optimizer or str, optional
            Default: the model's optimizer, else ``Adam()``.
        epochs : int, default=1
            The number of passes over the data.
        batch_size : int, default=32
            Rows per step (a batch larger than the data is the data). Per rank with ``comm``.
        validation_split : float, default=0.0
            The fraction of the rows held out for validation, after a seeded shuffle.
        validation_data : tuple or iterable, optional
            ``(X_val, y_val)`` or ``(X_val, y_val, w_val)`` evaluated after every epoch (X_val may be
            memory-mapped), or an iterable of such batches.
        shuffle : bool, default=True
            Reshuffle the rows every epoch (seeded).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the rows.
        class_weight : dict or "balanced", optional
            ``{label: weight}``, or "balanced" (``n / (k n_c)``); multiplies ``sample_weight``.
        callbacks : list of Callback, optional
            For example ``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau``.
        accumulate : int, default=1
            Micro-batches of ``batch_size`` rows per update: each update is exactly that of one batch
            of ``accumulate * batch_size`` rows.
        verbose : {0, 1, 2}, default=1
            0 silent, 1 a progress bar (a line per epoch when not a terminal), 2 a line per epoch.
        on_nan : {"raise", "stop"}, default="raise"
            When a step goes non-finite: raise ``TrainingDivergedError``, or end quietly with
            ``History.stopped == "diverged"``. Either way the model keeps the last finite weights.
        steps_per_epoch : int, optional
            For an iterable X: batches per epoch (needed for a generator that runs once when
            ``epochs > 1``).
        validation_steps : int, optional
            For an iterable ``validation_data``: batches per evaluation.
        comm : mpi4py communicator, optional
            Data-parallel training: each rank passes its own rows, and each update is the one a
            single process makes on the union of the ranks' micro-batches.
        metrics : list of str or bp.metrics.Metric, optional
            Default: the model's (``compile(metrics=...)``). Names ("accuracy", "auc", "f1",
            "precision", "recall", "mae", "mse", "rmse", "r2"...) or ``bp.metrics`` objects:
            running values over each epoch's batches in training, exact on validation rows.
        initial_epoch : int, optional
            Run epochs ``initial_epoch .. epochs - 1`` (Keras' meaning; a schedule reads these
            numbers). By default a schedule goes on from the optimizer's last epoch.

        Returns
        -------
        History
            The per-epoch metrics. On Ctrl-C, training stops after the current step with
            ``History.stopped == "interrupted"`` and the model usable.

        Raises
        ------
        TrainingDivergedError
            When a step goes non-finite and ``on_nan="raise"``.

        See Also
        --------
        Sequential.partial_fit : One more pass, keeping the optimizer's state.
        EarlyStopping : Stop when a monitored value stops improving.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((200, 4))
        >>> y = (X[:, 0] + X[:, 1] > 0).astype(int)
        >>> model = bp.Sequential([bp.Dense(16, activation="relu"), bp.Dense(2, activation="softmax")],
        ...                       seed=0)
        >>> history = model.fit(X, y, optimizer=bp.Adam(1e-2), epochs=20, batch_size=32,
        ...                     validation_split=0.2, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'learning_rate', 'loss', 'val_accuracy', 'val_loss']
        >>> history.history["accuracy"][-1] > 0.9
        True
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "X", "y")}
        return _training.fit(self, X, y, **arguments)  # every keyword, as given

    def partial_fit(self, X: ArrayLike, y: ArrayLike, *, loss: str | None = None,
                    optimizer: Optimizer | str | None = None, batch_size: int = 32,
                    sample_weight: ArrayLike | None = None, shuffle: bool = True,
                    accumulate: int = 1, verbose: int = 0, comm: Any = None) -> History:
        """Train one pass over (X, y), keeping the optimizer's state across calls.

        The optimizer's moments, step count and a learning-rate schedule's epoch carry over (each pass
        is the epoch after the last one the optimizer ran), so k calls train as ``fit(epochs=k)`` does.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like
            The targets, as for ``fit``.
        loss : str, optional
            Default: the model's loss, else the output activation's natural one.
        optimizer : Optimizer or str, optional
            Default: the model's optimizer, else ``Adam()``.
        batch_size : int, default=32
            Rows per step.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the rows.
        shuffle : bool, default=True
            Shuffle the rows (seeded).
        accumulate : int, default=1
            Micro-batches per update, as for ``fit``.
        verbose : {0, 1, 2}, default=0
            As for ``fit``.
        comm : mpi4py communicator, optional
            Data-parallel training, as for ``fit``.

        Returns
        -------
        History
            The record of this pass.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
        >>> model = bp.Sequential([bp.Dense(3, activation="softmax")], seed=0)
        >>> for chunk in range(3):
        ...     _ = model.partial_fit(X[chunk * 20:(chunk + 1) * 20], y[chunk * 20:(chunk + 1) * 20])
        >>> model.optimizer.iterations
        3
        """
        return _online.partial_fit(self, X, y, loss=loss, optimizer=optimizer,
                                   batch_size=batch_size, sample_weight=sample_weight,
                                   shuffle=shuffle, accumulate=accumulate, verbose=verbose,
                                   comm=comm)

    # ---- insight: what the cached deltas tell (bp/insight.py) ----------------------------------
    def per_sample_gradient_norms(self, X: ArrayLike, y: ArrayLike, loss: str | None = None, *,
                                  reduction: str = "none", bias: bool = True) -> Any:
        """Compute each sample's gradient norm per layer, from one batched pass.

        ``||dl_s/d(W[i], b[i])|| = ||delta_s[i]|| * ||z_out_s[i-1]||`` per sample s and layer i
        (inference mode, data loss).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like
            The targets, as for ``fit``.
        loss : str, optional
            Default: the model's loss, else the output activation's natural one.
        reduction : {"none", "mean"}, default="none"
            "none": each sample's own loss; "mean": its share of the batch mean.
        bias : bool, default=True
            Include the bias in each layer's norm.

        Returns
        -------
        numpy.ndarray of shape (n_samples, n_layers)
            The norms.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((10, 4)), np.arange(10) % 3
        >>> model = bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
        ...                       seed=0)
        >>> model.per_sample_gradient_norms(X, y).shape
        (10, 2)
        """
        return _insight.per_sample_gradient_norms(self, X, y, loss, reduction=reduction, bias=bias)

    def diagnose(self, X: ArrayLike, y: ArrayLike, loss: str | None = None) -> Any:
        """Diagnose the error signals of each layer on (X, y), without an update.

        Per layer: the mean absolute error signal delta (and its ratio to the output layer's), the
        fraction of dead relu units and of saturated sigmoid/tanh units, with plain-language warnings.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of inputs (a few hundred rows suffice).
        y : array-like
            Its targets, as for ``fit``.
        loss : str, optional
            Default: the model's loss, else the output activation's natural one.

        Returns
        -------
        bp.insight.Diagnosis
            Print it for a table; ``layers`` holds the numbers.

        See Also
        --------
        DiagnosticsLogger : The same after every epoch of fit.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((50, 4)), np.arange(50) % 3
        >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(3, activation="softmax")],
        ...                       seed=0)
        >>> diagnosis = model.diagnose(X, y)
        >>> len(diagnosis), sorted(diagnosis[0])[:3]
        (2, ['activation', 'dead_fraction', 'delta_ratio'])
        """
        return _insight.diagnose(self, X, y, loss)

    # ---- description ---------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Describe the architecture as plain data: dtype, seed, input_dim, the layers' configs, loss.

        Returns
        -------
        dict
            What ``from_config`` rebuilds the (unbuilt) model from.

        Examples
        --------
        >>> import bp
        >>> config = bp.Sequential([bp.Dense(4, activation="relu")], seed=1).get_config()
        >>> config["seed"], config["layers"][0]["units"]
        (1, 4)
        """
        return {"dtype": self.dtype_policy, "seed": self.seed, "input_dim": self.input_dim,
                "layers": [layer_config(layer) for layer in self.layers], "loss": self.loss}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """Build a new, unbuilt model with the architecture ``get_config`` described.

        Slicing, unpickling and ``bp.load`` all rebuild through here.

        Parameters
        ----------
        config : dict
            A dict from ``get_config``.

        Returns
        -------
        Sequential
            The new model (weights not drawn yet).

        Examples
        --------
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(1)], seed=1)
        >>> copy = bp.Sequential.from_config(model.get_config())
        >>> [layer.units for layer in copy]
        [4, 1]
        """
        model = cls(layers_from_config(config["layers"]), dtype=config["dtype"],
                    seed=config["seed"], input_dim=config["input_dim"])
        model.loss = config.get("loss")
        return model

    def to_torch(self) -> Any:
        """Convert the model to a ``torch.nn.Sequential`` of Linear and activation modules.

        ``Linear.weight`` is ``W.T`` (bp stores W as ``(n_in, n_out)``). Needs
        ``pip install "bp[torch]"``.

        Returns
        -------
        torch.nn.Sequential
            A module with the same weights.

        See Also
        --------
        Sequential.from_torch : And back.

        Examples
        --------
        >>> import bp
        >>> model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(2)], seed=0).build(3)
        >>> model.to_torch()
        Sequential(
          (0): Linear(in_features=3, out_features=4, bias=True)
          (1): ReLU()
          (2): Linear(in_features=4, out_features=2, bias=True)
        )
        """
        return _torch.to_torch(self)

    @classmethod
    def from_torch(cls, module: Any, dtype: DTypeLike | None = None) -> Sequential:
        """Build a model from a torch module, with its weights exactly.

        Reads an ``nn.Sequential`` of what ``bp.from_torch`` reads: ``Linear`` layers with their
        activation modules, ``Dropout``, ``LayerNorm``, ``BatchNorm1d`` and ``bp._torch.Residual``
        blocks; it refuses anything else by name.

        Parameters
        ----------
        module : torch.nn.Sequential
            The module to read.
        dtype : {"float32", "float64"}, optional
            Default: the module's parameter dtype.

        Returns
        -------
        Sequential
            A built model.

        Examples
        --------
        >>> import bp
        >>> import torch
        >>> module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())
        >>> bp.Sequential.from_torch(module).layers[0].W.shape
        (3, 4)
        """
        return _torch.from_torch(cls, module, dtype)

    def __repr__(self) -> str:
        lines = [f"Sequential(dtype={self.dtype_policy!r}" + (
            f", input_dim={self.input_dim}" if self.input_dim else "") + ") ["]
        for i, layer in enumerate(self.layers):
            lines.append(f"  ({i}) {layer!r}")
        lines.append("]")
        return "\n".join(lines)

    def summary(self, print_fn: Any = None, file: TextIO | None = None,
                to_string: bool = False) -> str | None:
        """Print a table of the layers, their output shapes and parameter counts.

        Returns None, as Keras' does (a notebook shows the table once); ``to_string=True``
        returns the text instead of printing it.

        Parameters
        ----------
        print_fn : callable, optional
            Called with the table's text instead of ``print``.
        file : file-like, optional
            Where to print; default ``sys.stdout``.
        to_string : bool, default=False
            Return the text, print nothing.

        Returns
        -------
        str or None
            The table with ``to_string=True``, else None.

        Examples
        --------
        >>> import bp
        >>> bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(2)]).build(3).summary()
        Layer    Output shape  Activation  Params
        -----------------------------------------
        dense_0  (None, 4)     relu        16
        dense_1  (None, 2)     identity    10
        -----------------------------------------
        Total params: 26  (float32)
        """
        out = _summary_table(self.layers, self.input_dim, self.dtype)
        if to_string:
            return out
        if print_fn is not None:
            print_fn(out)
        else:
            print(out, file=file)
        return None

    # ---- files and pickling --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to an .npz file, atomically.

        The architecture, the weights, the loss, the optimizer and its state, with a format version and
        a checksum. After a data-parallel fit only rank 0 writes; on the other ranks ``save`` does
        nothing.

        Parameters
        ----------
        path : str or path-like
            The file to write (replaced atomically: a crash leaves the old file whole).

        See Also
        --------
        load : Read it back.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> model = bp.Sequential([bp.Dense(2)], seed=0).build(3)
        >>> model.save(path)
        >>> bool(np.array_equal(bp.load(path).get_flat_params(), model.get_flat_params()))
        True
        """
        self._require_built()
        if not _mpi.writes_files(self):
            return
        config = self.get_config()
        config["optimizer"] = _optimizers.serialize(self.optimizer)
        # the generator that shuffles each epoch: without it a loaded model restarts it from the
        # seed, and its shuffles differ from those the interrupted run would have drawn next
        config["rng_state"] = self._rng.bit_generator.state
        arrays = {"params": self._params}
        for k, layer in enumerate(_ops.running_layers(self.layers)):
            arrays[f"running_{k}"] = layer.running
        if self.optimizer is not None:
            arrays.update({"opt_" + name: buf for name, buf in self.optimizer._state.items()})
        _io.write(path, config, arrays)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fit_lock"] = None
        state["_comm"] = None  # a communicator belongs to its process
        state["_passes"] = None
        state["layers"] = [layer_config(layer) for layer in self.layers]
        state["_running"] = [layer.running.copy() for layer in _ops.running_layers(self.layers)]
        state["_params"] = None if self._params is None else self._params.copy()
        state["_grads"] = None if self._grads is None else self._grads.copy()
        return state

    def __setstate__(self, state):
        layer_cfgs = state.pop("layers")
        params, grads = state.pop("_params"), state.pop("_grads")
        running = state.pop("_running", [])
        self.__dict__.update({"_metrics": [], **state})  # (a pickle from before metrics)
        self._fit_lock = _threads.FitLock()
        self.layers = []
        self._params = self._grads = self._passes = None
        for layer in layers_from_config(layer_cfgs):
            self.add(layer)
        for layer, values in zip(_ops.running_layers(self.layers), running):
            layer.running = values
        if params is not None:
            _ops.set_widths(self.layers, self.input_dim)
            self._rebind(params, grads)


def load(path: str | os.PathLike[str]) -> Sequential:
    """Read a model written by ``Sequential.save``.

    Never unpickles anything (zip archives only, ``allow_pickle=False``).

    Parameters
    ----------
    path : str or path-like
        The .npz file.

    Returns
    -------
    Sequential
        The built model, with its optimizer's state.

    Raises
    ------
    ValueError
        Naming the file, for a file that is not a bp model, is truncated or corrupted
        (checksum), has another format version, or holds what makes no model: checked before
        anything is built or inflated (bp/_model_file.py: sizes, names, shapes, dtypes,
        finiteness, ranges, known losses and optimizers).

    See Also
    --------
    Sequential.save

    Examples
    --------
    >>> import bp
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> bp.Sequential([bp.Dense(2)], seed=0).build(3).save(path)
    >>> bp.load(path).n_params
    8
    """
    path = os.fspath(path)
    shapes = {}

    def expected(config):
        shapes.update(_model_file.expected(Sequential.from_config(config), config))
        return _model_file.budget(shapes)

    config, arrays = _io.read(path, expected)
    try:
        _model_file.check_arrays(shapes, arrays)
        model = Sequential.from_config(config)
        model.build()
        # shapes, dtypes and finiteness were checked by check_arrays, from the same config
        model._params[...] = arrays["params"]
        for k, layer in enumerate(_ops.running_layers(model.layers)):
            layer.running[...] = arrays[f"running_{k}"]
        if config.get("rng_state") is not None:
            model._rng.bit_generator.state = config["rng_state"]
        if config.get("optimizer") is not None:
            state = {name[4:]: buf for name, buf in arrays.items() if name.startswith("opt_")}
            model.optimizer = _optimizers.deserialize(config["optimizer"], state, arrays["params"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError,
            OverflowError) as exc:
        raise ValueError(f"{path!r} holds an invalid bp model: {exc}") from None
    return model


def _summary_table(layers, input_dim, dtype):
    """Sequential.summary's table: a row per layer (a Residual's block indented under it, a
    folded Dropout on a row of its own), the total (unknown until the input width is)."""
    rows = [("Layer", "Output shape", "Activation", "Params")]
    total = [0]

    def add(layers, n_in, indent):
        for i, layer in enumerate(layers):
            kind = layer._kind
            n_out = layer.units if kind == "dense" else n_in
            if kind == "dense":
                count = None if n_in is None else n_in * n_out + (n_out if layer.use_bias else 0)
            elif kind in ("layer_norm", "batch_norm"):
                count = None if n_in is None else n_in * (int(layer.scale) + int(layer.center))
            else:
                count = 0
            default = "dense" if kind == "dense" else type(layer).__name__.lower()
            rows.append((indent + (layer.name or f"{default}_{i}"),
                         f"(None, {'?' if n_out is None else n_out})",
                         layer.activation if kind in ("dense", "activation") else "",
                         "?" if count is None else f"{count:,}"))
            if kind == "residual":
                add(layer.layers, n_in, indent + "  ")
            else:
                total[0] = None if (total[0] is None or count is None) else total[0] + count
            if kind == "dense" and layer.dropout is not None:
                rows.append((indent + f"dropout_{i}", f"(None, {n_out})", "", "0"))
            n_in = n_out

    add(layers, input_dim or (layers[0].input_dim if layers else None), "")
    total = total[0]
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
