"""Training history, callbacks, early stopping and the progress display of ``fit``."""

import math
import sys
import time

from ._validation import check_number


class History:
    """What ``fit`` did: per-epoch metrics and how training ended.

    Attributes
    ----------
    history : dict of lists
        ``loss`` (and ``accuracy`` for classification), ``val_loss``, ``val_accuracy`` when there
        is validation data, ``learning_rate``; one entry per completed epoch (Keras' layout).
    epoch : list of int
        The completed epochs.
    stopped : str or None
        None if every epoch ran; "early_stopping", "interrupted", "callback" otherwise.
    stopped_at : dict or None
        Where training stopped: {"epoch": e, "batch": b} (the last completed batch), for
        interruptions.
    diverged : dict or None
        When the loss, a gradient or an update went non-finite: epoch, batch, layer, sample (in
        the batch), row (of X) and where; the model kept the last finite step.
    epoch_times : list of float
        Seconds of training (without validation) per epoch.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.epoch_times = []
        self.stopped = None
        self.stopped_at = None
        self.diverged = None

    def _record(self, epoch, logs, seconds):
        self.epoch.append(epoch)
        self.epoch_times.append(seconds)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}], stopped={self.stopped!r})"


class Callback:
    """Base class: override the hooks you need. ``self.model`` is the model being fitted.

    Set ``self.model.stop_training = True`` in a hook to end training after this epoch.
    A callback that overrides ``on_batch_end`` makes fit return to Python after every batch.
    """

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class EarlyStopping(Callback):
    """Stop when the monitored quantity has not improved for `patience` epochs.

    Parameters
    ----------
    monitor : str, default "val_loss"   (falls back to "loss" when there is no validation data)
    patience : int, default 5
    min_delta : float, default 0        an improvement must exceed it
    mode : "min" or "max", default "min" ("max" for names containing "accuracy" if left "auto")
        A non-finite value (NaN, inf) counts as no improvement.
    restore_best_weights : bool, default True
        At the end, put back the weights of the best epoch (Keras' default is False; bp's is True
        because that is what one wants almost always).
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer. Received: patience={patience!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(check_number("min_delta", min_delta))
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        self.best = None
        self.best_epoch = None
        self.best_params = None
        self.wait = 0

    def on_train_begin(self, logs=None):
        self.best = None
        self.best_epoch = None
        self.best_params = None
        self.wait = 0

    def _better(self, value):
        if self.best is None:
            return True
        maximize = self.mode == "max" or (self.mode == "auto" and "acc" in self._key)
        if maximize:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
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

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_params is not None:
            self.model.set_flat_params(self.best_params)


class TerminateOnNaN(Callback):
    """Marker for ``fit(on_nan=...)``: kept for Keras users. bp checks every step anyway; this
    callback makes a non-finite loss stop training quietly instead of raising."""


class _Progress:
    """verbose=1: a bar on a terminal (one line per epoch otherwise); verbose=2: a line per epoch."""

    def __init__(self, verbose, epochs, n_batches, file=None):
        self.verbose = verbose
        self.epochs = epochs
        self.n_batches = n_batches
        self.file = file or sys.stdout
        self.bar = verbose == 1 and hasattr(self.file, "isatty") and self.file.isatty()
        self._last = 0.0

    def batch(self, epoch, done, loss):
        if not self.bar:
            return
        now = time.perf_counter()
        if done < self.n_batches and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * done / max(1, self.n_batches))
        bar = "=" * filled + (">" if filled < width else "") + "." * max(0, width - filled - 1)
        self.file.write(f"\rEpoch {epoch + 1}/{self.epochs} [{bar}] {done}/{self.n_batches}"
                        f" - loss: {loss:.4f}")
        self.file.flush()

    def epoch_end(self, epoch, logs, seconds):
        if not self.verbose:
            return
        parts = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "learning_rate")
        line = f"Epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {parts}"
        if self.bar:
            self.file.write("\r" + line + " " * 10 + "\n")
        else:
            self.file.write(line + "\n")
        self.file.flush()

    def message(self, text):
        if self.verbose:
            if self.bar:
                self.file.write("\n")
            self.file.write(text + "\n")
            self.file.flush()
