"""The numbers of a model on labelled rows: evaluate's, and fit's validation after each epoch.

The loss and (for a classifier) the accuracy, then the metrics, each exact over all the rows at
once (bp/metrics.py: ``Tracker.exact``); data-parallel, the loss and accuracy summed over ranks.
"""

import numpy as np

from . import _mpi, _passes, _threads
from . import losses as _losses
from . import metrics as _metrics


def evaluate_model(model, X, y, loss, sample_weight, metrics):
    """Sequential.evaluate: everything checked (the metrics fit the model, AUC's classes are
    present in y) before the model is built."""
    loss, X, Y, w = _passes.prepare(model, X, y, loss, sample_weight)
    tracker = _metrics.Tracker(_metrics.check(metrics), loss, Y.shape[1])
    tracker.check_targets(Y, "y")
    model._build_from(X)
    return evaluate(model, X, Y, w, loss, tracker)


def evaluate(model, X, Y, w, loss, tracker=None, n_threads=None):
    """{"loss", "accuracy" (a classifier), each metric of `tracker`} on the checked (X, Y, w)."""
    nt = _threads.get_num_threads() if n_threads is None else n_threads
    value, f_out = model._passes.evaluate(X, Y, w, loss, nt)
    acc = _losses.accuracy(loss, f_out, Y, w)
    ev = {"loss": float(value), **({} if acc is None else {"accuracy": acc})}
    if tracker is not None:
        ev.update(tracker.exact(f_out, Y, w))
    return ev


def validate(model, val, loss, comm, tracker=None):
    """val_loss (and val_accuracy, and the metrics) on the validation rows; data-parallel, over
    all ranks' rows: the loss is a mean over rows and the accuracy one over rows (or weights), so
    each rank's value is weighted by its count before the sum. Validation in parts (batches,
    blocks): the same sums over the parts, with the layers' penalty added once, and the metrics
    over all the parts' rows."""
    nt = _threads.get_num_threads()
    if not isinstance(val, tuple):
        seen = [] if tracker is not None and tracker.metrics else None
        total, rows, hits, weight = val.sums(model._passes, loss, nt, seen)
        ev = {"loss": float(total / rows + model._passes.penalty(None, nt))}
        if loss != "mse":
            ev["accuracy"] = float(hits / weight) if weight else 0.0
        if seen:
            f_out, Y, w = (np.concatenate(part) if part[0] is not None else None
                           for part in zip(*seen))
            ev.update(tracker.exact(f_out, Y, w))
        return {"val_" + k: v for k, v in ev.items()}
    ev = evaluate(model, *val, loss, tracker, nt)
    if comm is not None:
        n = len(val[0])
        weight = n if val[2] is None else float(np.sum(val[2]))
        sums = _mpi.sum_over_ranks(comm, [ev["loss"] * n, n, ev.get("accuracy", 0.0) * weight,
                                          weight])
        ev["loss"] = float(sums[0] / sums[1])
        if "accuracy" in ev:
            ev["accuracy"] = float(sums[2] / (sums[3] or 1.0))
    return {"val_" + k: v for k, v in ev.items()}
