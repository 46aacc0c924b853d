"""Metrics: what fit, evaluate and the callbacks report beside the loss.

Each metric is a small state of counts and sums that batches add to (the compiled update cores of
bpcore/_metrics.pyx; bp/_reference.py has their NumPy twins), and a value read from the state:

=================================  =======================  =========================  =======
metric (name)                      state                    value                      mode
=================================  =======================  =========================  =======
Accuracy ("accuracy")              confusion matrix C       trace C / sum C            max
BinaryAccuracy, CategoricalAcc.    C (2 x 2 / m x m)        trace C / sum C            max
TopKCategoricalAccuracy            hits, rows               hits / rows                max
Precision, Recall, F1Score         C                        binary / macro / micro     max
AUC ("auc")                        score histograms         ROC area (see below)       max
MeanAbsoluteError ("mae")          sums of |e|, weights     mean |e|                   min
MeanSquaredError ("mse")           sums of e^2, weights     mean e^2                   min
RootMeanSquaredError ("rmse")      sums of e^2 per output   mean over outputs of       min
                                                            sqrt(mean e^2) (sklearn)
R2Score ("r2")                     sums of e^2, y, y^2      1 - SSE / SST per output,  max
                                                            averaged (sklearn)
=================================  =======================  =========================  =======

Training metrics are running values over the epoch's batches, each batch's f_out taken before its
update (as Keras reports them). Validation metrics (and ``evaluate``'s) are exact over all the
rows: they equal ``sklearn.metrics`` on the same predictions (``exact``). The one metric whose
running value is not exact is AUC: its state is a histogram of the scores in ``n_bins`` equal
bins of [0, 1] per class and label, and its running value is the trapezoidal area under the ROC
points at the bin edges (scores in one bin count as ties), as Keras 3's AUC does with
``num_thresholds`` thresholds; the exact AUC sorts the scores.
"""

import copy
import math

import numpy as np

from bpcore import _metrics

from ._validation import check_positive_int

# The losses whose targets are classes, and how f_out names a class: the argmax of a softmax row,
# or each sigmoid output on its own side of the threshold.
CLASS_KINDS = {"cross_entropy": "argmax", "binary_cross_entropy": "binary"}


_PLACEHOLDER = {"f": np.ones(1, np.float32), "d": np.ones(1, np.float64)}  # w when unweighted


class Metric:
    """Base class: a state that ``update_state(y_true, y_pred, sample_weight)`` adds a batch to
    (Keras' and scikit-learn's order), ``result()`` reads; ``bind(loss, n_outputs)`` first.

    Subclasses set ``name``, ``mode`` ("max" or "min": what the monitors of EarlyStopping,
    ReduceLROnPlateau and ModelCheckpoint take under mode="auto") and ``needs_classes``, and
    define ``_reset(m)``, ``_update(f_out, Y, w, weighted)`` and ``result()``.
    """

    name: str | None = None
    mode = "max"
    needs_classes = False

    def bind(self, loss, n_outputs):
        """A fresh copy of this metric for a model with this loss and output width, its state
        zeroed; ValueError if it cannot measure such a model."""
        if self.needs_classes and loss not in CLASS_KINDS:
            raise ValueError(f"the metric {self.name!r} needs class targets (a cross_entropy or "
                             f"binary_cross_entropy model). Received: loss={loss!r}")
        bound = copy.copy(self)
        bound.kind = CLASS_KINDS.get(loss)
        bound.m = n_outputs
        bound._check(loss, n_outputs)
        bound.reset_state()
        return bound

    def _check(self, loss, n_outputs):
        pass

    def reset_state(self):
        self._reset(self.m)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: the targets y_true and the outputs y_pred (f_out), (n, m) float arrays
        (m the bound model's outputs), sample_weight (n,) or None. Checked here, so that the
        compiled update cannot read out of bounds."""
        if not hasattr(self, "m"):
            raise ValueError(f"bind the metric to a model's loss and width first: "
                             f"{type(self).__name__}(...).bind(loss, n_outputs). Received: an "
                             f"unbound {self!r}")
        Y, f_out, w = y_true, np.ascontiguousarray(y_pred), sample_weight
        if f_out.dtype.char not in _PLACEHOLDER:
            f_out = f_out.astype(np.float64)
        Y = np.ascontiguousarray(Y, f_out.dtype)
        if f_out.ndim != 2 or f_out.shape[1] != self.m or Y.shape != f_out.shape or (
                w is not None and np.shape(w) != (f_out.shape[0],)) or not f_out.shape[0]:
            raise ValueError(f"update_state needs y_true and y_pred of shape (n >= 1, {self.m}) "
                             f"and sample_weight (n,) or None. Received: y_true {Y.shape}, "
                             f"y_pred {f_out.shape}, sample_weight "
                             f"{None if w is None else np.shape(w)}")
        weighted = w is not None
        w = np.ascontiguousarray(w, f_out.dtype) if weighted else _PLACEHOLDER[f_out.dtype.char]
        self._update(f_out, Y, w, weighted)

    def exact(self, y_true, y_pred, sample_weight=None):
        """The metric over all the rows at once (validation, evaluate)."""
        fresh = copy.copy(self)
        fresh.reset_state()
        fresh.update_state(y_true, y_pred, sample_weight)
        return fresh.result()

    def check_targets(self, Y, what):
        """ValueError if the targets Y cannot give this metric a value (AUC: both labels)."""

    def _reset(self, m):
        raise NotImplementedError

    def _update(self, f_out, Y, w, weighted):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# ---- classes: ratios of a confusion matrix -------------------------------------------------------


class _Confusion(Metric):
    """A metric read from the confusion matrix C (row: true class, column: predicted)."""

    needs_classes = True
    force: str | None = None  # "binary" or "argmax": how to read classes whatever the loss

    def __init__(self, name=None, threshold=0.5):
        self.name = name or self.name
        self.threshold = float(threshold)

    def _reset(self, m):
        binary = (self.force or self.kind) == "binary"
        self._binary = binary
        self.C = np.zeros((2, 2) if binary else (m, m))

    def _update(self, f_out, Y, w, weighted):
        _metrics.confusion_update(f_out, Y, w, weighted, self._binary, self.threshold, self.C)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


class Accuracy(_Confusion):
    """The share of rows classified right (weighted): argmax agreement for a softmax output, the
    share of outputs on the right side of 0.5 for sigmoid outputs (``bp.losses.accuracy``)."""

    name = "accuracy"

    def result(self):
        total = self.C.sum()
        return float(np.trace(self.C) / total) if total else 0.0


class BinaryAccuracy(Accuracy):
    """Accuracy of each output against `threshold` (Keras' binary_accuracy)."""

    name, force = "binary_accuracy", "binary"


class CategoricalAccuracy(Accuracy):
    """Argmax agreement of f_out and y (Keras' categorical_accuracy)."""

    name, force = "categorical_accuracy", "argmax"


class _Averaged(_Confusion):
    """Precision, recall and F1 from C: "binary" (class 1; a sigmoid output's outputs pooled),
    "macro" (the mean over the classes that occur in y or the prediction, as scikit-learn) or
    "micro" (from the summed counts); None picks "binary" for two classes, else "macro"."""

    def __init__(self, average=None, name=None, threshold=0.5):
        if average not in (None, "binary", "macro", "micro"):
            raise ValueError(f"average must be None, 'binary', 'macro' or 'micro'. Received: "
                             f"average={average!r}")
        super().__init__(name, threshold)
        self.average = average

    def _check(self, loss, n_outputs):
        two = (self.force or self.kind) == "binary" or n_outputs == 2
        if self.average is None:
            self._average = "binary" if two else "macro"
        elif self.average == "binary" and not two:
            raise ValueError(f"the metric {self.name!r} with average='binary' needs two classes; "
                             f"use 'macro' or 'micro'. Received: {n_outputs} classes (softmax)")
        else:
            self._average = self.average

    def result(self):
        C = self.C
        tp = np.diag(C)
        predicted, actual = C.sum(axis=0), C.sum(axis=1)
        if self._average == "binary":
            return self._score(tp[1], predicted[1], actual[1])
        if self._average == "micro":
            return self._score(tp.sum(), predicted.sum(), actual.sum())
        present = (predicted + actual) > 0
        scores = [self._score(t, p, a) for t, p, a in
                  zip(tp[present], predicted[present], actual[present])]
        return float(np.mean(scores)) if scores else 0.0

    @staticmethod
    def _ratio(a, b):
        return float(a / b) if b else 0.0  # scikit-learn's zero_division=0 (less its warning)

    def get_config(self):
        return {"average": self.average, "name": self.name, "threshold": self.threshold}


class Precision(_Averaged):
    """tp / (tp + fp)."""

    name = "precision"

    def _score(self, tp, predicted, actual):
        return self._ratio(tp, predicted)


class Recall(_Averaged):
    """tp / (tp + fn)."""

    name = "recall"

    def _score(self, tp, predicted, actual):
        return self._ratio(tp, actual)


class F1Score(_Averaged):
    """2 tp / (2 tp + fp + fn), the harmonic mean of precision and recall.

    Examples
    --------
    >>> import numpy as np
    >>> f1 = F1Score("macro").bind("cross_entropy", 3)
    >>> f_out = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    >>> y = np.eye(3)[[0, 1, 2, 2]]
    >>> round(f1.exact(y, f_out), 6)        # sklearn.metrics.f1_score(..., average="macro")
    0.777778
    """

    name = "f1"

    def _score(self, tp, predicted, actual):
        return self._ratio(2 * tp, predicted + actual)


class TopKCategoricalAccuracy(Metric):
    """The share of rows whose true class is among the k highest scores (fewer than k classes
    scored strictly above it; scikit-learn's top_k_accuracy_score without ties)."""

    name, needs_classes = "top_k_categorical_accuracy", True

    def __init__(self, k=5, name=None):
        self.k = check_positive_int("k", k)
        self.name = name or self.name

    def _check(self, loss, n_outputs):
        if self.kind != "argmax":
            raise ValueError(f"the metric {self.name!r} needs a softmax output (cross_entropy). "
                             f"Received: loss={loss!r}")

    def _reset(self, m):
        self.hits = np.zeros(2)

    def _update(self, f_out, Y, w, weighted):
        _metrics.top_k_update(f_out, Y, w, weighted, self.k, self.hits)

    def result(self):
        return float(self.hits[0] / self.hits[1]) if self.hits[1] else 0.0

    def get_config(self):
        return {"k": self.k, "name": self.name}


# ---- AUC: histograms of the scores ---------------------------------------------------------------


class AUC(Metric):
    """The area under the ROC curve: one sigmoid output, or the mean over classes one-vs-rest (a
    softmax output; scikit-learn's multi_class="ovr", average="macro"), or over sigmoid outputs.
    (Keras' AUC on one-hot targets pools the scores of every class into one curve, a micro
    average; bp follows scikit-learn.)

    Parameters
    ----------
    n_bins : int, default=200
        The bins of [0, 1] of the running (training) value's score histograms; validation and
        evaluate are exact whatever it is.
    name : str, default="auc"

    See Also
    --------
    sklearn.metrics.roc_auc_score : what ``exact`` equals.

    Examples
    --------
    >>> import numpy as np
    >>> auc = AUC().bind("binary_cross_entropy", 1)
    >>> f_out, y = np.array([[0.1], [0.4], [0.35], [0.8]]), np.array([[0.], [0.], [1.], [1.]])
    >>> auc.exact(y, f_out)
    0.75
    >>> auc.update_state(y, f_out); auc.result()   # the running value, from the histogram
    0.75
    """

    name, needs_classes = "auc", True

    def __init__(self, n_bins=200, name=None):
        self.n_bins = check_positive_int("n_bins", n_bins)
        self.name = name or self.name

    def _columns(self):
        """The classes whose AUC is averaged: a two-class softmax is one AUC, that of class 1."""
        return [1] if self.kind == "argmax" and self.m == 2 else list(range(self.m))

    def _reset(self, m):
        self.H = np.zeros((m, 2, self.n_bins))

    def _update(self, f_out, Y, w, weighted):
        _metrics.auc_update(f_out, Y, w, weighted, self.kind == "argmax", self.H)

    def result(self):
        """The trapezoids between the ROC points at the bin edges, averaged over the classes
        (NaN for a class without both labels yet)."""
        H = self.H[self._columns()]
        neg, pos = H[:, 0], H[:, 1]
        P, N = pos.sum(axis=1), neg.sum(axis=1)
        if not ((P > 0) & (N > 0)).all():
            return math.nan
        above = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1] - pos  # positives in higher bins
        return float(np.mean(np.sum(neg * (above + 0.5 * pos), axis=1) / (P * N)))

    def _labels(self, Y):
        if self.kind == "argmax":
            return np.argmax(Y, axis=1)[:, None] == np.arange(Y.shape[1])
        return Y >= 0.5

    def exact(self, y_true, y_pred, sample_weight=None):
        """Exact over all the rows: for each class, the pairs (positive, negative) ordered right,
        tied scores counting one half (the area under the exact ROC curve, scikit-learn's
        roc_auc_score), averaged over the classes."""
        f_out, labels, w = np.asarray(y_pred), self._labels(np.asarray(y_true)), sample_weight
        w = np.ones(len(labels)) if w is None else np.asarray(w, dtype=np.float64)
        values = []
        for c in self._columns():
            score = f_out[:, c].astype(np.float64)
            order = np.argsort(score, kind="mergesort")
            s, pos = score[order], labels[order, c]
            ws = w[order]
            edges = np.flatnonzero(np.diff(s)) + 1  # the groups of equal scores
            pos_w = np.add.reduceat(np.where(pos, ws, 0.0), np.r_[0, edges])
            neg_w = np.add.reduceat(np.where(pos, 0.0, ws), np.r_[0, edges])
            P, N = pos_w.sum(), neg_w.sum()
            if not (P > 0 and N > 0):
                return math.nan
            below = np.cumsum(neg_w) - neg_w  # negatives scored strictly lower
            values.append(float(np.sum(pos_w * (below + 0.5 * neg_w)) / (P * N)))
        return float(np.mean(values))

    def check_targets(self, Y, what):
        labels = self._labels(Y)
        for c in self._columns():
            some = labels[:, c].any()
            if not some or labels[:, c].all():
                cls = f"class {c} one-vs-rest" if self.kind == "argmax" else f"output {c}"
                raise ValueError(f"the metric {self.name!r} needs both positive and negative rows "
                                 f"for {cls} in the {what}. Received: only "
                                 f"{'positive' if some else 'negative'} rows")

    def get_config(self):
        return {"n_bins": self.n_bins, "name": self.name}


# ---- errors: sums per output ---------------------------------------------------------------------


class _Errors(Metric):
    """A metric read from S (5 x m): sums of w|e|, w e^2, w y, w y^2 and w per output."""

    mode = "min"

    def __init__(self, name=None):
        self.name = name or self.name

    def _reset(self, m):
        self.S = np.zeros((5, m))

    def _update(self, f_out, Y, w, weighted):
        _metrics.error_update(f_out, Y, w, weighted, self.S)

    def _weight(self):
        return self.S[4, 0] if self.S[4, 0] else 1.0


class MeanAbsoluteError(_Errors):
    """mean |f_out - y| over rows (weighted) and outputs."""

    name = "mae"

    def result(self):
        return float(self.S[0].sum() / (self._weight() * self.m))


class MeanSquaredError(_Errors):
    """mean (f_out - y)^2 over rows (weighted) and outputs."""

    name = "mse"

    def result(self):
        return float(self.S[1].sum() / (self._weight() * self.m))


class RootMeanSquaredError(_Errors):
    """sqrt(mean (f_out - y)^2) per output, averaged over the outputs (scikit-learn's
    root_mean_squared_error; for one output, Keras' RootMeanSquaredError)."""

    name = "rmse"

    def result(self):
        return float(np.mean(np.sqrt(self.S[1] / self._weight())))


class R2Score(_Errors):
    """1 - SSE / SST per output (SST: the weighted squares about the weighted mean of y),
    averaged over the outputs; 1 for a constant y predicted exactly, else 0 where SST = 0
    (scikit-learn's r2_score, force_finite)."""

    name, mode = "r2", "max"

    def result(self):
        S, W = self.S, self._weight()
        return _r2(S[1], S[3] - S[2] ** 2 / W)

    def exact(self, y_true, y_pred, sample_weight=None):
        # the two-pass SST (a single pass loses digits when |mean y| >> its spread)
        f, y = np.asarray(y_pred, np.float64), np.asarray(y_true, np.float64)
        w = (np.ones(len(y)) if sample_weight is None
             else np.asarray(sample_weight, dtype=np.float64))
        mean = (w[:, None] * y).sum(axis=0) / w.sum()
        return _r2((w[:, None] * (f - y) ** 2).sum(axis=0),
                   (w[:, None] * (y - mean) ** 2).sum(axis=0))


def _r2(sse, sst):
    safe = sst > 0
    r2 = np.where(safe, 1 - sse / np.where(safe, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
    return float(np.mean(r2))


# ---- names ---------------------------------------------------------------------------------------

NAMES = {
    "accuracy": Accuracy, "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "precision": Precision, "recall": Recall, "f1": F1Score,
    "f1_macro": lambda: F1Score("macro", name="f1_macro"),
    "f1_micro": lambda: F1Score("micro", name="f1_micro"),
    "auc": AUC, "mae": MeanAbsoluteError, "mse": MeanSquaredError,
    "rmse": RootMeanSquaredError, "r2": R2Score,
}
ALIASES = {"acc": "accuracy", "f1_score": "f1", "mean_absolute_error": "mae",
           "mean_squared_error": "mse", "root_mean_squared_error": "rmse", "r2_score": "r2",
           "roc_auc": "auc"}


def get(metric):
    """A Metric for a name (or alias) or a Metric object; ValueError listing the valid names.

    Examples
    --------
    >>> get("mean_absolute_error")
    MeanAbsoluteError(name='mae')
    >>> get("auc").mode
    'max'
    """
    if isinstance(metric, Metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"a metric must be a name or a bp.metrics.Metric. Received: {metric!r}")
    name = ALIASES.get(metric, metric)
    if name not in NAMES:
        raise ValueError(f"unknown metric; expected one of: {', '.join(NAMES)} (or "
                         f"{', '.join(ALIASES)}). Received: {metric!r}")
    made = NAMES[name]()
    if name != made.name:  # "acc" logs as "accuracy"; "f1_macro" as itself
        made.name = name
    return made


def check(metrics):
    """The list of Metric objects for fit/compile's metrics= (names or objects), checked: a
    list, known names, no two with the same name. Not yet bound to a model."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(f"metrics must be a list of names or bp.metrics.Metric objects. "
                        f"Received: {type(metrics).__name__}")
    made = [get(m) for m in metrics]
    names = [m.name for m in made]
    for name in names:
        if names.count(name) > 1 or name in ("loss", "learning_rate") or name.startswith("val_"):
            raise ValueError(f"metric names must be unique and not 'loss', 'learning_rate' or "
                             f"'val_...'. Received: metrics={names}")
    return made


class Tracker:
    """The metrics of one fit: bound to the model, their running training state, and their
    exact values on validation rows.

    The built-in accuracy ("accuracy" on a classifier) is already counted by the training step
    (the engine's hits): it is not tracked twice in training.
    """

    def __init__(self, metrics, loss, n_outputs, comm=None):
        self.metrics = [m.bind(loss, n_outputs) for m in metrics]
        if comm is not None and self.metrics:
            raise ValueError(f"fit(comm=...) reports the loss and accuracy; other metrics are not "
                             f"computed data-parallel yet. Received: metrics="
                             f"{[m.name for m in self.metrics]}")
        builtin = loss in CLASS_KINDS
        self.running = [m for m in self.metrics
                        if not (builtin and type(m) is Accuracy and m.name == "accuracy")]

    def check_targets(self, Y, what):
        for m in self.metrics:
            m.check_targets(Y, what)

    def modes(self):
        """{log key: "max" or "min"} for the monitors' mode="auto"."""
        modes = {}
        for m in self.metrics:
            modes[m.name] = modes["val_" + m.name] = m.mode
        return modes

    def reset(self):
        for m in self.running:
            m.reset_state()

    def update(self, f_out, Y, w):
        """Add a training batch: fit's own arrays (C-contiguous, one dtype, checked shapes), so
        straight to the compiled updates, without update_state's checks."""
        weighted = w is not None
        if not weighted:
            w = _PLACEHOLDER[f_out.dtype.char]
        for m in self.running:
            m._update(f_out, Y, w, weighted)

    def results(self):
        return {m.name: m.result() for m in self.running}

    def exact(self, f_out, Y, w):
        return {m.name: m.exact(Y, f_out, w) for m in self.metrics}


def mode_of(key):
    """A logged key's direction for mode="auto" when fit did not say: "max" for the names of
    bp's maximised metrics (accuracies, AUC, R2, precision, recall, F1), else "min"."""
    base = key.removeprefix("val_")
    base = ALIASES.get(base, base)
    if base in NAMES and base not in ("mae", "mse", "rmse"):
        return "max"
    return "max" if any(word in base for word in ("acc", "auc", "f1", "precision", "recall")) \
        else "min"
