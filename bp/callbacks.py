"""Training history, callbacks, early stopping and the progress display of ``fit``."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from typing import Any

from . import _io
from . import metrics as _metrics
from ._validation import check_number


class History:
    """What ``fit`` did: per-epoch metrics and how training ended.

    ``fit`` returns it, and ``model.history`` keeps the last one.

    Attributes
    ----------
    history : dict of list
        ``loss`` (and ``accuracy`` for classification), ``val_loss``, ``val_accuracy`` when there
        is validation data, ``learning_rate``; one entry per completed epoch (Keras' layout).
    epoch : list of int
        The completed epochs.
    stopped : str or None
        None if every epoch ran; "early_stopping", "interrupted", "diverged" or "callback"
        otherwise.
    stopped_at : dict or None
        Where training stopped: ``{"epoch": e, "batch": b}`` (the last completed batch), for
        interruptions.
    diverged : dict or None
        When the loss, a gradient or an update went non-finite: epoch, batch, layer, sample (in
        the batch), row (of X) and where; the model kept the last finite step.
    epoch_times : list of float
        Seconds of training (without validation) per epoch.
    best_epoch, best_value : int or None, float or None
        The epoch with the best ``val_loss`` (``loss`` without validation data) and its value;
        ``best(monitor)`` for another quantity.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> history = model.fit(X, y, epochs=3, verbose=0)
    >>> history.epoch, len(history.history["loss"]), history.stopped
    ([0, 1, 2], 3, None)
    """

    # attribute types for the type checker (set in __init__)
    history: dict[str, list[float]]
    epoch: list[int]
    epoch_times: list[float]

    def __init__(self) -> None:
        self.history = {}
        self.epoch = []
        self.epoch_times = []
        self.stopped = None
        self.stopped_at = None
        self.diverged = None
        self._modes: dict[str, str] = {}  # fit's {key: "max" or "min"} for its metrics

    def best(self, monitor=None, mode="auto"):
        """Find the epoch with the best finite value of a logged quantity.

        Parameters
        ----------
        monitor : str, optional
            The logged name; default "val_loss", or "loss" without validation data.
        mode : {"auto", "min", "max"}, default="auto"
            "auto" maximises accuracies, AUC, R2, precision, recall and F1 and minimises the
            rest (losses, errors).

        Returns
        -------
        tuple
            (epoch, value); (None, None) before any epoch.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
        >>> model = bp.Sequential([bp.Dense(2, activation="softmax")], seed=0)
        >>> history = model.fit(X, y, validation_split=0.2, epochs=3, verbose=0)
        >>> epoch, value = history.best("val_accuracy")
        >>> value == max(history["val_accuracy"])
        True
        """
        mode = _check_mode(mode)
        key = monitor or ("val_loss" if "val_loss" in self.history else "loss")
        if key not in self.history:
            if not self.epoch:
                return None, None
            raise ValueError(f"History has no {key!r}. Available: {', '.join(self.history)}")
        best_epoch = best = None
        for epoch, value in zip(self.epoch, self.history[key]):
            if math.isfinite(value) and _improves(value, best, mode, key, modes=self._modes):
                best_epoch, best = epoch, value
        return best_epoch, best

    @property
    def best_epoch(self):
        """The epoch with the best ``val_loss`` (``loss`` without validation data), or None."""
        return self.best()[0]

    @property
    def best_value(self):
        """The best ``val_loss`` (``loss`` without validation data), or None."""
        return self.best()[1]

    def _record(self, epoch, logs, seconds):
        self.epoch.append(epoch)
        self.epoch_times.append(seconds)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Draw the training curves: loss, accuracy and the other metrics with their validation values, and the learning rate, per epoch.

        Needs matplotlib (``pip install "bp[plot]"``).

        Parameters
        ----------
        path : str or path-like, optional
            Where to write the picture (PNG, or the format matplotlib infers from the suffix).

        Returns
        -------
        matplotlib.figure.Figure
            The figure.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> import os, tempfile
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
        >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
        ...                       seed=0)
        >>> history = model.fit(X, y, validation_split=0.2, epochs=3, verbose=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
        >>> figure = history.plot(path)
        >>> os.path.exists(path)
        True
        """
        return _plot_history(self, path)

    def __repr__(self):
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}], stopped={self.stopped!r})"


class Callback:
    """Base class of fit's callbacks: override the hooks you need.

    ``self.model`` is the model being fitted. Set ``self.model.stop_training = True`` in a hook to end
    training after this epoch. The epoch hooks keep the whole epoch in one compiled call; a callback
    that overrides ``on_batch_end`` makes fit return to Python after every batch.

    Attributes
    ----------
    model : Sequential or None
        The model being fitted (set by ``set_model`` when fit starts).

    See Also
    --------
    LambdaCallback : A callback from functions.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> class PrintLoss(bp.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(f"epoch {epoch}: loss {logs['loss']:.2f}")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> _ = model.fit(X, y, epochs=2, verbose=0, callbacks=[PrintLoss()])
    epoch 0: loss ...
    epoch 1: loss ...
    """

    model: Any = None

    def set_model(self, model: Any) -> None:
        """Set the model being fitted (fit calls it before ``on_train_begin``).

        Parameters
        ----------
        model : Sequential
            The model being fitted.
        """
        self.model = model

    def check_before_fit(self, model, optimizer, keys):
        """Refuse a fit before it changes anything (the base class accepts every fit).

        fit calls it for every callback after its own checks and before the first change:
        raise ValueError or TypeError here for what the callback could only find out later
        (a path that cannot be written, a monitored name that fit will not log).

        Parameters
        ----------
        model : Sequential
            The model about to be fitted.
        optimizer : Optimizer
            The optimizer it will train with.
        keys : list of str
            The names fit will log each epoch (``loss``, ``accuracy``, ``val_...``,
            ``learning_rate``).

        Raises
        ------
        ValueError
            In a subclass, for settings this fit cannot honour.

        See Also
        --------
        on_train_begin : Called next, once the fit has started.

        Examples
        --------
        >>> import bp
        >>> class NeedsValidation(bp.Callback):
        ...     def check_before_fit(self, model, optimizer, keys):
        ...         if "val_loss" not in keys:
        ...             raise ValueError("NeedsValidation needs validation data")
        """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Run at the start of fit, before the first epoch.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        pass

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Run at the start of every epoch.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Run at the end of every epoch, after validation.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        pass

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Run after every batch (only if overridden: fit then returns to Python every batch).

        Parameters
        ----------
        batch : int
            The batch within the epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        pass

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Run at the end of fit, however it ended.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        pass


class EarlyStopping(Callback):
    """Stop training when the monitored value has not improved for `patience` epochs.

    A non-finite value (NaN, inf) counts as no improvement.

    Parameters
    ----------
    monitor : str, default="val_loss"
        The logged value to watch; falls back to "loss" when there is no validation data.
    patience : int, default=5
        Epochs without improvement before training stops.
    min_delta : float, default=0.0
        An improvement must exceed it.
    mode : {"auto", "min", "max"}, default="auto"
        Whether smaller or larger is better; "auto" takes the metric's own: "max" for
        accuracies, AUC, R2, precision, recall and F1, "min" for losses and errors.
    restore_best_weights : bool, default=True
        At the end, put back the weights of the best epoch (Keras' default is False; bp's is
        True because that is what one wants almost always). The optimizer's state stays the
        last step's, as in Keras. When fit ends by divergence or Ctrl-C nothing is restored: the
        model is the last completed step, weights and optimizer state together (``best_params``
        holds the best epoch's weights for ``set_flat_params``).
    verbose : {0, 1}, default=0
        1 prints the epoch it stopped at and the epoch whose weights it restored.

    Attributes
    ----------
    best : float or None
        The best value seen.
    best_epoch : int or None
        Its epoch.
    stopped_epoch : int or None
        The epoch after which it stopped training (None if it did not).

    See Also
    --------
    ReduceLROnPlateau : Lower the learning rate instead.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> stop = bp.EarlyStopping(patience=2)
    >>> history = model.fit(X, y, validation_split=0.2, epochs=200, verbose=0, callbacks=[stop])
    >>> history.stopped, len(history.epoch) < 200
    ('early_stopping', True)
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True, verbose: int = 0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError("patience must be a non-negative integer. Received: "
                             f"patience={patience!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(check_number("min_delta", min_delta))
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        if verbose not in (0, 1, False, True):
            raise ValueError(f"verbose must be 0 or 1. Received: verbose={verbose!r}")
        self.verbose = int(verbose)
        self.best = None
        self.best_epoch = None
        self.best_params = None
        self.stopped_epoch = None
        self.wait = 0

    def check_before_fit(self, model, optimizer, keys):
        """Refuse a monitored name that fit will not log.

        Parameters
        ----------
        model : Sequential
            The model about to be fitted.
        optimizer : Optimizer
            The optimizer it will train with.
        keys : list of str
            The names fit will log each epoch (``loss``, ``accuracy``, ``val_...``,
            ``learning_rate``).

        Raises
        ------
        ValueError
            Naming what cannot be done.
        """
        _monitored("EarlyStopping", self.monitor, dict.fromkeys(keys))

    def on_train_begin(self, logs=None):
        """Forget the best value and the patience count of a previous fit.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        self.best = None
        self.best_epoch = None
        self.best_params = None
        self.stopped_epoch = None
        self.wait = 0

    def _better(self, value):
        return _improves(value, self.best, self.mode, self._key, self.min_delta,
                         getattr(self.model, "_monitor_modes", None))

    def on_epoch_end(self, epoch, logs=None):
        """Compare the monitored value with the best; stop after `patience` epochs without improvement.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        logs = logs or {}
        self._key = self.monitor if self.monitor in logs else (
            "loss" if self.monitor == "val_loss" else self.monitor)
        if self._key not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which fit does not report. "
                             f"Available: {', '.join(logs)}")
        value = logs[self._key]
        # a non-finite value is no improvement (Keras' comparisons with NaN are False too): it
        # never becomes the best and it uses up patience
        if math.isfinite(value) and self._better(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_params = self.model.get_flat_params()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
                self.model._stop_reason = "early_stopping"
                self.stopped_epoch = epoch

    def on_train_end(self, logs=None):
        """Put back the best epoch's weights (with ``restore_best_weights``).

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        # After a divergence or Ctrl-C the model stays the last completed step, with its
        # optimizer state (README, "Divergence", "Interruption"): best-epoch weights with a later
        # step's momenta and step count would be neither. best_params still holds them.
        history = getattr(self.model, "history", None)
        if getattr(history, "stopped", None) in ("diverged", "interrupted"):
            return
        restore = self.restore_best_weights and self.best_params is not None
        if self.verbose and self.stopped_epoch is not None:
            # epochs counted from 1, as the progress line shows them
            print(f"Epoch {self.stopped_epoch + 1}: early stopping: {self._key} did not improve "
                  f"for {self.patience} epochs; the best was {self.best:.6g} at epoch "
                  f"{self.best_epoch + 1}", flush=True)
        if restore:
            self.model.set_flat_params(self.best_params)
            if self.verbose:
                print(f"Restored the model's weights from the end of the best epoch: "
                      f"{self.best_epoch + 1} ({self._key} {self.best:.6g})", flush=True)


class TerminateOnNaN(Callback):
    """Stop training quietly when a step goes non-finite (kept for Keras users).

    bp checks every step anyway: without this callback ``fit`` raises ``TrainingDivergedError``;
    with it, ``fit`` returns a History with ``stopped == "diverged"`` (as ``on_nan="stop"`` does).
    Either way the model keeps the last finite weights.

    See Also
    --------
    TrainingDivergedError : What fit raises otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> history = model.fit(X, y, epochs=2, verbose=0, callbacks=[bp.TerminateOnNaN()])
    >>> history.stopped is None
    True
    """


# ---- History.plot -------------------------------------------------------------------------------


def _plot_history(history, path=None):
    """History.plot: panels of loss, accuracy and learning rate per epoch (matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('History.plot needs matplotlib: pip install "bp[plot]"') from exc
    if not history.epoch:
        raise ValueError("History.plot needs at least one completed epoch. Received: a History "
                         "with no epochs")
    h = history.history
    epochs = [e + 1 for e in history.epoch]
    # loss, accuracy, then the other metrics and what callbacks logged, the learning rate last
    names = [k.removeprefix("val_") for k in h]
    panels = [name for name in dict.fromkeys(["loss", "accuracy", *names, "learning_rate"])
              if name in h or "val_" + name in h]
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    FigureCanvasAgg(fig)  # a canvas of its own: no pyplot, no global figure state
    for k, name in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for key, label in ((name, "training"), ("val_" + name, "validation")):
            if key in h:
                ax.plot(epochs, h[key], marker="o", markersize=3, label=label)
        if name == "learning_rate":
            ax.set_yscale("log")
        elif "val_" + name in h:
            ax.legend()
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig



# ---- monitoring a logged quantity (ModelCheckpoint, ReduceLROnPlateau) -----------------------


def _check_mode(mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
    return mode


def _monitored(who, monitor, logs):
    """The key to read in `logs`: `monitor`, or "loss" for "val_loss" without validation data."""
    key = monitor if monitor in logs else ("loss" if monitor == "val_loss" else monitor)
    if key not in logs:
        raise ValueError(f"{who} monitors {monitor!r}, which fit does not report. "
                         f"Available: {', '.join(logs)}")
    return key


def _improves(value, best, mode, key, min_delta=0.0, modes=None):
    """True if `value` beats `best` by more than min_delta. mode "auto": the metric's direction,
    from fit's metrics (`modes`, {key: "max" or "min"}) or bp.metrics.mode_of(key)."""
    if best is None:
        return True
    if mode == "auto":
        mode = (modes or {}).get(key) or _metrics.mode_of(key)
    if mode == "max":
        return value > best + min_delta
    return value < best - min_delta


def wants_every_batch(callback: Callback) -> bool:
    """True if `callback` has an on_batch_end of its own (a subclass method or, as
    LambdaCallback sets it, an instance attribute): fit then returns to Python every batch."""
    return getattr(callback.on_batch_end, "__func__", None) is not Callback.on_batch_end


class ModelCheckpoint(Callback):
    """Save the model at the end of each epoch, or only when the monitored value improves.

    Each save goes through ``model.save`` (atomic: a crash mid-save leaves the previous file
    whole). ``{epoch}`` (from 1, as Keras counts) and the logged names format the path:
    ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``.

    Parameters
    ----------
    filepath : str or path-like
        Where to save; formatted with ``epoch`` and the logged values.
    monitor : str, default="val_loss"
        The value ``save_best_only`` watches; falls back to "loss" without validation data.
    save_best_only : bool, default=False
        Save only when the monitored value improves.
    mode : {"auto", "min", "max"}, default="auto"
        Whether smaller or larger is better; "auto" maximises names containing "acc".

    Attributes
    ----------
    saved : list of str
        The paths written, in order.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "best.npz")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> checkpoint = bp.ModelCheckpoint(path, save_best_only=True)
    >>> _ = model.fit(X, y, validation_split=0.2, epochs=3, verbose=0, callbacks=[checkpoint])
    >>> bp.load(path).n_params == model.n_params
    True
    """

    saved: list[str]  # the paths written, in order (for the type checker)

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto") -> None:
        self.filepath = os.fspath(filepath)
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a str. Received: {type(monitor).__name__}")
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _check_mode(mode)
        self.best = None
        self.saved = []  # the paths written, in order

    def check_before_fit(self, model, optimizer, keys):
        """Refuse a path that cannot be formatted or written, or an unlogged monitor.

        The monitor is checked with save_best_only only.

        Parameters
        ----------
        model : Sequential
            The model about to be fitted.
        optimizer : Optimizer
            The optimizer it will train with.
        keys : list of str
            The names fit will log each epoch (``loss``, ``accuracy``, ``val_...``,
            ``learning_rate``).

        Raises
        ------
        ValueError
            Naming what cannot be done.
        """
        if self.save_best_only:
            _monitored("ModelCheckpoint", self.monitor, dict.fromkeys(keys))
        _io.check_target(self._path(0, dict.fromkeys(keys, 0.0)), "ModelCheckpoint's filepath")

    def _path(self, epoch, logs):
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint cannot format the path {self.filepath!r} with "
                             f"epoch and {', '.join(logs)}: {exc!r}") from None

    def on_train_begin(self, logs=None):
        """Forget the best value of a previous fit.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        """Save the model (if the monitored value improved, with ``save_best_only``).

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        logs = logs or {}
        if self.save_best_only:
            key = _monitored("ModelCheckpoint", self.monitor, logs)
            value = logs[key]
            if not math.isfinite(value) or not _improves(
                    value, self.best, self.mode, key, modes=getattr(self.model, "_monitor_modes",
                                                                     None)):
                return
            self.best = value
        path = self._path(epoch, logs)
        self.model.save(path)
        self.saved.append(path)


class ReduceLROnPlateau(Callback):
    """Lower the learning rate when the monitored value has stopped improving.

    After `patience` epochs without improvement, ``lr <- max(lr * factor, min_lr)``, then `cooldown`
    epochs without counting (Keras' and torch.optim.lr_scheduler.ReduceLROnPlateau's rule). The new
    rate is the optimizer's ``learning_rate`` from the next epoch on (and is saved with the model);
    an optimizer with a schedule is refused (the schedule owns the rate).

    Parameters
    ----------
    monitor : str, default="val_loss"
        The logged value to watch; falls back to "loss" when there is no validation data.
    factor : float, default=0.1
        The factor in (0, 1) the rate is multiplied by.
    patience : int, default=10
        Epochs without improvement before the rate is lowered.
    min_lr : float, default=0.0
        The rate never goes below it.
    min_delta : float, default=1e-4
        An improvement must exceed it.
    cooldown : int, default=0
        Epochs to wait after a reduction before counting again.
    mode : {"auto", "min", "max"}, default="auto"
        Whether smaller or larger is better; "auto" maximises names containing "acc".

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> reduce = bp.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
    >>> history = model.fit(X, y, optimizer=bp.SGD(0.1), epochs=3, verbose=0, callbacks=[reduce])
    >>> history.history["learning_rate"]
    [0.1, 0.1, 0.05]
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_lr: float = 0.0, min_delta: float = 1e-4, cooldown: int = 0,
                 mode: str = "auto") -> None:
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer. Received: "
                                 f"{name}={value!r}")
        self.monitor = monitor
        self.factor = check_number("factor", factor, low=0.0, high=1.0, low_open=True,
                                   high_open=True)
        self.patience, self.cooldown = patience, cooldown
        self.min_lr = check_number("min_lr", min_lr, low=0.0)
        self.min_delta = check_number("min_delta", min_delta, low=0.0)
        self.mode = _check_mode(mode)
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def check_before_fit(self, model, optimizer, keys):
        """Refuse a scheduled learning rate, and a monitored name that fit will not log.

        Parameters
        ----------
        model : Sequential
            The model about to be fitted.
        optimizer : Optimizer
            The optimizer it will train with.
        keys : list of str
            The names fit will log each epoch (``loss``, ``accuracy``, ``val_...``,
            ``learning_rate``).

        Raises
        ------
        ValueError
            Naming what cannot be done (TypeError for a schedule).
        """
        if callable(optimizer.learning_rate):
            raise TypeError("ReduceLROnPlateau needs an optimizer with a constant learning_rate; "
                            f"this one has the schedule {optimizer.learning_rate!r}")
        _monitored("ReduceLROnPlateau", self.monitor, dict.fromkeys(keys))

    def on_train_begin(self, logs=None):
        """Forget a previous fit's counts (the optimizer was checked by check_before_fit).

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        """Count an epoch without improvement; lower the rate after `patience` of them.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        logs = logs or {}
        key = _monitored("ReduceLROnPlateau", self.monitor, logs)
        value = logs[key]
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if not math.isfinite(value):
            return
        if _improves(value, self.best, self.mode, key, self.min_delta,
                     getattr(self.model, "_monitor_modes", None)):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.model.optimizer
                if opt.learning_rate > self.min_lr:
                    opt.learning_rate = max(opt.learning_rate * self.factor, self.min_lr)
                self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Write one CSV row per epoch: the epoch (from 0, as Keras) and every logged value.

    Parameters
    ----------
    filename : str or path-like
        The CSV file.
    separator : str, default=","
        The field separator.
    append : bool, default=False
        Append to an existing file (no second header) instead of replacing it.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "training.csv")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> _ = model.fit(X, y, epochs=2, verbose=0, callbacks=[bp.CSVLogger(path)])
    >>> open(path).readline().strip()
    'epoch,loss,accuracy,learning_rate'
    """

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False) -> None:
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = bool(append)
        self._file = self._writer = self._keys = None

    def check_before_fit(self, model, optimizer, keys):
        """Refuse a file that cannot be written (a missing folder, a directory).

        Parameters
        ----------
        model : Sequential
            The model about to be fitted.
        optimizer : Optimizer
            The optimizer it will train with.
        keys : list of str
            The names fit will log each epoch (``loss``, ``accuracy``, ``val_...``,
            ``learning_rate``).

        Raises
        ------
        ValueError
            Naming what cannot be done.
        """
        _io.check_target(self.filename, "CSVLogger's filename")

    def on_train_begin(self, logs=None):
        """Open the file (and decide whether it needs a header).

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        has_rows = (self.append and os.path.exists(self.filename)
                    and os.path.getsize(self.filename) > 0)
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = csv.writer(self._file, delimiter=self.separator)
        self._keys = None if not has_rows else ()  # () : the file has a header already

    def on_epoch_end(self, epoch, logs=None):
        """Write the epoch's row and flush it.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        logs = logs or {}
        if not self._keys:
            if self._keys is None:
                self._writer.writerow(["epoch", *logs])
            self._keys = tuple(logs)
        self._writer.writerow([epoch, *(logs.get(k, "") for k in self._keys)])
        self._file.flush()

    def on_train_end(self, logs=None):
        """Close the file.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        if self._file is not None:
            self._file.close()
            self._file = None


class LambdaCallback(Callback):
    """Make a callback from functions.

    Only a given ``on_batch_end`` makes fit return to Python after every batch.

    Parameters
    ----------
    on_epoch_begin : callable, optional
        Called as ``on_epoch_begin(epoch, logs)``.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, logs)``.
    on_train_begin : callable, optional
        Called as ``on_train_begin(logs)``.
    on_train_end : callable, optional
        Called as ``on_train_end(logs)``.
    on_batch_end : callable, optional
        Called as ``on_batch_end(batch, logs)``.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 2
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(2, activation="softmax")],
    ...                       seed=0)
    >>> losses = []
    >>> keep = bp.LambdaCallback(on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]))
    >>> _ = model.fit(X, y, epochs=3, verbose=0, callbacks=[keep])
    >>> len(losses)
    3
    """

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None,
                 on_epoch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None,
                 on_train_end: Callable[..., Any] | None = None,
                 on_batch_end: Callable[..., Any] | None = None) -> None:
        given = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end,
                 "on_train_begin": on_train_begin, "on_train_end": on_train_end,
                 "on_batch_end": on_batch_end}
        for name, fn in given.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None. Received: {type(fn).__name__}")
        self._fns = given
        if on_batch_end is not None:
            # an instance attribute, which wants_every_batch sees
            self.on_batch_end = (  # type: ignore[method-assign]
                lambda batch, logs=None: on_batch_end(batch, logs or {}))

    def _call(self, name, *args):
        fn = self._fns[name]
        if fn is not None:
            fn(*args)

    def on_train_begin(self, logs=None):
        """Call the given ``on_train_begin(logs)``, if any.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        self._call("on_train_begin", logs or {})

    def on_epoch_begin(self, epoch, logs=None):
        """Call the given ``on_epoch_begin(epoch, logs)``, if any.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        self._call("on_epoch_begin", epoch, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        """Call the given ``on_epoch_end(epoch, logs)``, if any.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        self._call("on_epoch_end", epoch, logs or {})

    def on_train_end(self, logs=None):
        """Call the given ``on_train_end(logs)``, if any.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged: ``loss`` (and ``accuracy``), ``val_loss`` and ``val_accuracy`` with
            validation data, ``learning_rate``; at the end of training, the last epoch's.
        """
        self._call("on_train_end", logs or {})
