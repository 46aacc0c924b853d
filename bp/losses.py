"""Losses, with PyTorch's default reductions so that the numbers compare directly.

========================  ========================================  =============================
name                      L (sample weights w_i, default 1)         output activation tau
========================  ========================================  =============================
``mse``                   sum_i w_i sum_j (f_out - y)^2 / (N m)     any
``mae``                   sum_i w_i sum_j abs(f_out - y) / (N m)    any
``huber``                 sum_i w_i sum_j h(f_out - y) / (N m)      any
``poisson``               sum_i w_i sum_j (f_out - y f_in) / (N m)  exponential (fused: f_out - y)
``binary_cross_entropy``  sum_i w_i sum_j bce(f_in, y) / (N m)      sigmoid (fused: f_out - y)
``cross_entropy``         sum_i w_i sum_j -y log f_out / N          softmax (fused: f_out - y),
                                                                    or identity (from the logits:
                                                                    softmax(f_in) - y)
========================  ========================================  =============================

h(d) = d^2 / 2 for abs(d) <= 1, abs(d) - 1/2 beyond (Huber with delta = 1). Without weights these
are
torch.nn.MSELoss(), L1Loss(), HuberLoss() (= SmoothL1Loss()), PoissonNLLLoss(log_input=True) on
f_in, BCELoss() (BCEWithLogitsLoss() on f_in) and CrossEntropyLoss() on f_in, all with
reduction="mean". With weights, the weighted sum is divided by N (Keras' "sum_over_batch_size"),
not by the sum of the weights.
The cross-entropies are computed from the logits f_in, so they stay finite where f_out rounds to
0 or 1. Cross-entropy takes integer class labels (n,) or one-hot / probability rows (n, m).
An identity output layer with cross-entropy is Keras' ``from_logits=True``: the model's outputs are
the logits (predict returns them) and the softmax lives in the loss.
poisson is scikit-learn's MLPRegressor(loss="poisson") pairing (the exp output, the log link): its
half Poisson deviance differs from this by y log y - y, a constant, so the gradients are equal.

Aliases (each means exactly the loss it names; names whose meaning differs are not taken):

=====================================  ====================  ================================
alias                                  loss                  whose, and why it is the same
=====================================  ====================  ================================
``mean_squared_error``                 mse                   Keras
``mean_absolute_error``, ``l1``        mae                   Keras; torch.nn.L1Loss
``smooth_l1``                          huber                 torch.nn.SmoothL1Loss(beta=1),
                                                             = HuberLoss(delta=1)
``binary_crossentropy``, ``bce``       binary_cross_entropy  Keras; torch.nn.BCELoss (on
                                                             probabilities)
``categorical_crossentropy``           cross_entropy         Keras: one-hot or probabilities
``sparse_categorical_crossentropy``    cross_entropy         Keras: integer labels (bp takes
                                                             both)
``categorical_cross_entropy``, ``ce``  cross_entropy         torch.nn.CrossEntropyLoss: labels
                                                             or probabilities, softmax inside
=====================================  ====================  ================================

``huber``, ``poisson``, ``mse`` and ``mae`` are also Keras' own short names. Keras' huber and
poisson take y_pred = f_out: poisson's y log(f_out + eps) is y f_in here (no eps).
"""

from __future__ import annotations

import numpy as np

import bpcore

from ._validation import as_float_array, check_choice, check_finite
from .kernels import check_loss_pair

LOSSES = tuple(bpcore.LOSSES)
ALIASES = {"mean_squared_error": "mse", "mean_absolute_error": "mae", "l1": "mae",
           "smooth_l1": "huber", "binary_crossentropy": "binary_cross_entropy",
           "bce": "binary_cross_entropy", "categorical_crossentropy": "cross_entropy",
           "sparse_categorical_crossentropy": "cross_entropy",
           "categorical_cross_entropy": "cross_entropy", "ce": "cross_entropy"}
# the losses whose targets are classes (accuracy is reported, class_weight applies)
CLASSIFICATION = ("binary_cross_entropy", "cross_entropy")


def get(loss: str) -> str:
    """The canonical loss name for `loss` (a name or alias); ValueError listing the valid ones."""
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a string, one of {', '.join(LOSSES)}. Received: {loss!r}")
    check_choice("loss", loss, LOSSES + tuple(ALIASES))
    return ALIASES.get(loss, loss)


def is_classification(loss):
    """True for the losses whose targets are classes (accuracy and class_weight apply)."""
    return loss in CLASSIFICATION


# The output activation each loss is made for: the CLI builds that output layer for a loss, and
# a model whose output layer has it trains with that loss by default (any other output: mse).
NATURAL_OUTPUT = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid",
                  "poisson": "exponential", "mse": "identity"}


def default_loss(tau):
    """The loss fit uses for a model whose output activation is tau, when none is given."""
    for loss, output in NATURAL_OUTPUT.items():
        if output == tau and loss != "mse":
            return loss
    return "mse"


def mean_width(loss, n_outputs):
    """How many outputs of a row the mean divides by: 1 for cross-entropy (a row's loss is one
    number), m for the others (the mean over every output, as PyTorch's reduction="mean")."""
    return 1 if loss == "cross_entropy" else n_outputs


def default_scale(loss, n_samples, n_outputs):
    """The reduction factor: 1/N for cross-entropy, 1/(N m) for the others."""
    return 1.0 / (n_samples * mean_width(loss, n_outputs))


def accuracy(loss, f_out, Y, w=None, count=False):
    """Classification accuracy (weighted by w), or None for mse: the argmax of f_out against
    the argmax of Y for cross-entropy, the share of outputs on the right side of 0.5 for binary
    cross-entropy. count=True returns the weighted number of correct rows instead of the
    fraction. (bpcore/_network.pyx's _batch_hits is the compiled twin fit's loop uses.)"""
    if not is_classification(loss):
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


def class_weights(loss, Y, class_weight):
    """Per-sample weights w_i = class_weight[label_i] for the prepared targets Y (float64).

    The label of a row is argmax(Y) for cross-entropy, Y >= 0.5 for binary cross-entropy with one
    output. class_weight is {label: weight} (labels absent from it weigh 1) or "balanced":
    w_c = n / (k n_c) over the k classes present (scikit-learn's compute_class_weight).
    """
    if loss == "cross_entropy":
        labels, n_classes = np.argmax(Y, axis=1), Y.shape[1]
    elif loss == "binary_cross_entropy" and Y.shape[1] == 1:
        labels, n_classes = (Y[:, 0] >= 0.5).astype(np.int64), 2
    else:
        raise ValueError(f"class_weight needs class labels: cross_entropy, or binary_cross_entropy "
                         f"with one output. Received: loss={loss!r} with {Y.shape[1]} output(s)")
    counts = np.bincount(labels, minlength=n_classes)
    if isinstance(class_weight, str) and class_weight == "balanced":
        present = counts > 0
        table = np.ones(n_classes)
        table[present] = len(labels) / (present.sum() * counts[present])
        return table[labels]
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{label: weight}} or 'balanced'. Received: "
                        f"{type(class_weight).__name__}")
    table = np.ones(n_classes)
    for label, weight in class_weight.items():
        if (isinstance(label, bool) or not isinstance(label, (int, np.integer))
                or not 0 <= label < n_classes):
            raise ValueError(f"class_weight keys must be class labels, integers in [0, "
                             f"{n_classes}). Received: {label!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) or not (
                np.isfinite(weight) and weight >= 0):
            raise ValueError(f"class_weight values must be finite non-negative numbers. "
                             f"Received: {weight!r} for label {label}")
        table[label] = weight
    return table[labels]


def prepare_targets(loss, y, n_samples, n_outputs, dtype, name="y"):
    """y as a C-contiguous (n_samples, n_outputs) array of `dtype`, checked for this loss.

    Cross-entropy: integer labels in [0, n_outputs) (1-D) become one-hot rows; 2-D rows must be
    non-negative. Binary cross-entropy: targets in [0, 1]. mse: any finite values. A 1-D y is one
    column when n_outputs is 1.
    """
    if hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):
        y = y.to_numpy()
    y_arr = np.asarray(y)
    if y_arr.ndim == 0 or y_arr.ndim > 2:
        raise ValueError(f"{name} must be 1-D or 2-D. Received: {name} with shape {y_arr.shape}")
    if y_arr.shape[0] != n_samples:
        raise ValueError(f"X and {name} must have the same number of samples. Received: "
                         f"{n_samples} samples in X and {y_arr.shape[0]} in {name}")
    if loss == "cross_entropy" and (y_arr.ndim == 1 or (y_arr.ndim == 2 and y_arr.shape[1] == 1
                                                        and n_outputs > 1)):
        return _one_hot(y_arr.reshape(-1), n_outputs, dtype, name)
    Y = as_float_array(name, y_arr, dtype, ndim=(1, 2))
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if Y.shape[1] != n_outputs:
        raise ValueError(f"{name} must have {n_outputs} column(s), one per output of the model. "
                         f"Received: {name} with shape {y_arr.shape}")
    check_finite(name, Y)
    if loss == "binary_cross_entropy" and ((Y < 0).any() or (Y > 1).any()):
        bad = np.argwhere((Y < 0) | (Y > 1))[0]
        raise ValueError(f"binary_cross_entropy targets must lie in [0, 1]. Received: "
                         f"{Y[tuple(bad)]} at row {bad[0]}, column {bad[1]} of {name}")
    if loss == "poisson" and (Y < 0).any():
        bad = np.argwhere(Y < 0)[0]
        raise ValueError(f"poisson targets must be non-negative (counts or rates). Received: "
                         f"{Y[tuple(bad)]} at row {bad[0]}, column {bad[1]} of {name}")
    if loss == "cross_entropy" and (Y < 0).any():
        bad = np.argwhere(Y < 0)[0]
        raise ValueError(f"cross_entropy target rows must be non-negative (one-hot or "
                         f"probabilities). Received: {Y[tuple(bad)]} at row {bad[0]}, "
                         f"column {bad[1]} of {name}")
    if loss == "cross_entropy":
        # The fused error signal delta[O] = f_out - y is the gradient only when each target row
        # sums to 1 (for a row summing to s it is s f_out - y), so other rows are refused.
        tol = 1e-3 if dtype == np.float32 else 1e-9
        sums = Y.sum(axis=1, dtype=np.float64)
        off = np.abs(sums - 1) > tol * Y.shape[1]
        if off.any():
            i = int(np.argwhere(off)[0, 0])
            raise ValueError(f"cross_entropy target rows must sum to 1 (one-hot or "
                             f"probabilities). Received: a row summing to {sums[i]:.6g} at row "
                             f"{i} of {name}")
    return Y


def _one_hot(labels, n_classes, dtype, name):
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            i = int(np.argwhere(~np.isfinite(labels))[0, 0])
            raise ValueError(f"{name} must contain only finite values. Received: {labels[i]} at "
                             f"index {i}")
        if (labels != np.round(labels)).any():
            i = int(np.argwhere(labels != np.round(labels))[0, 0])
            raise ValueError(f"cross_entropy labels must be integers in [0, {n_classes}). "
                             f"Received: {labels[i]} at index {i} of {name}")
    elif labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy labels must be integers in [0, {n_classes}). "
                        f"Received: {name} with dtype {labels.dtype}")
    lab = labels.astype(np.int64)
    out_of_range = (lab < 0) | (lab >= n_classes)
    if out_of_range.any():
        i = int(np.argwhere(out_of_range)[0, 0])
        raise ValueError(f"cross_entropy labels must be integers in [0, {n_classes}) for a model "
                         f"with {n_classes} outputs. Received: {labels[i]} at index {i} of {name}")
    Y = np.zeros((lab.shape[0], n_classes), dtype=dtype)
    Y[np.arange(lab.shape[0]), lab] = 1
    return Y


def check_pair(loss, tau):
    """ValueError unless the loss and the output activation make sense together
    (``LOSS_OUTPUTS[loss]`` lists the output activations each loss accepts)."""
    check_loss_pair(loss, tau)
