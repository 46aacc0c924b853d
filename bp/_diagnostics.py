"""What the cached error signals tell about training: per-sample gradient norms from one
batched backward pass, and per-layer diagnostics (vanishing or exploding deltas, dead relu units,
saturated sigmoid and tanh units), once or after every epoch as a callback.

Built on the model's public passes (``model.gradients`` and the cached ``error_signals``,
``z_in``, ``z_out``) and bp._passes' input checks; it never imports the model's class.
"""

import numpy as np

from . import _ops, _passes
from . import losses as _losses
from ._validation import check_choice
from ._ops import refuse_beyond_dense
from .callbacks import Callback


def _inputs(model, X, y, loss):
    """X in the model's dtype (built from it if needed), the targets as (N, m) float64 and the
    canonical loss."""
    _passes.check_layers(model.layers)
    refuse_beyond_dense(model.layers, "diagnose and per_sample_gradient_norms")
    loss = _passes.check_loss(model, loss)
    X = _passes.check_X(model, X)
    if not model.built:
        model.build(X.shape[1])
    Y = _losses.prepare_targets(loss, y, X.shape[0], _ops.output_width(model.layers, X.shape[1]),
                                np.float64)
    return X, Y, loss


def _batch_pass(model, X, y, loss):
    """One backpropagation through bp's kernels (model.gradients, no update); returns
    (X in the model's dtype, loss, gradients, deltas, z_ins, z_outs), the last three the pass's
    cached arrays in float64."""
    X, Y, loss = _inputs(model, X, y, loss)
    grads = model.gradients(X, y, loss=loss)
    deltas = [np.asarray(d, np.float64) for d in model.error_signals]
    z_in = [np.asarray(z, np.float64) for z in model.z_in]
    z_out = [np.asarray(z, np.float64) for z in model.z_out]
    return X, loss, grads, deltas, z_in, z_out


def per_sample_gradient_norms(model, X, y, loss=None, *, reduction="none", bias=True):
    """||dl_s/d(W[i], b[i])|| for every sample s and layer i, from one batched backward pass.

    The gradient of sample s at layer i is the outer product z_out_s[i-1] delta_s[i]^T (plus
    delta_s[i] for the bias, whose input is 1), and the Frobenius norm of an outer product is
    the product of the norms:

        ||dl_s/dW[i]|| = ||delta_s[i]|| * ||z_out_s[i-1]||
        ||dl_s/d(W[i], b[i])|| = ||delta_s[i]|| * sqrt(||z_out_s[i-1]||^2 + 1)

    so no per-sample gradient is ever formed (O(N * units) work instead of O(N * P)).

    Parameters
    ----------
    reduction : "none" (default) or "mean"
        "none": the gradient of the sample's own loss l_s (the loss of a batch of that one
        sample, as PyTorch's reduction="none" gives l_s); what per-sample clipping wants.
        "mean": the sample's contribution to the gradient of the batch's mean loss,
        L = (1/N) sum_s l_s, i.e. the "none" norms divided by N.
    bias : bool, default True
        Include each layer's bias in its norm (layers without a bias ignore it).

    Returns
    -------
    array (n_samples, n_layers). The whole-model norm of sample s is
    ``np.sqrt((norms[s] ** 2).sum())``.
    """
    check_choice("reduction", reduction, ("none", "mean"))
    X, loss, _, deltas, _, z_out = _batch_pass(model, X, y, loss)
    N = X.shape[0]
    # model.gradients uses the mean reduction: row s of each delta is (1/N) dl_s/dz_in
    factor = N if reduction == "none" else 1.0
    norms = np.empty((N, len(model.layers)))
    for i, layer in enumerate(model.layers):
        z_prev = X.astype(np.float64) if i == 0 else z_out[i - 1]
        sq_in = np.einsum("ij,ij->i", z_prev, z_prev)
        if bias and layer.use_bias:
            sq_in = sq_in + 1.0
        norms[:, i] = factor * np.linalg.norm(deltas[i], axis=1) * np.sqrt(sq_in)
    return norms


# ---- diagnostics ---------------------------------------------------------------------------------

# Saturated: sigma'(z_in) has fallen below ~4% of its maximum.
SATURATION = {"sigmoid": 0.01, "tanh": 0.99}  # sigmoid outside [0.01, 0.99], tanh |z_out| > 0.99
VANISHING, EXPLODING = 1e-3, 1e3


class Diagnosis:
    """Per-layer health of the error signals on one batch (from Sequential.diagnose).

    Attributes
    ----------
    layers : list of dict, one per layer, with
        ``layer``, ``units``, ``activation``;
        ``mean_abs_delta``: mean over samples and units of |dl_s/dz_in| (per-sample loss, so it
        does not shrink with the batch size);
        ``delta_ratio``: mean_abs_delta relative to the output layer's (vanishing << 1,
        exploding >> 1);
        ``grad_norm``: ||dL/d(W, b)|| of the batch's mean loss;
        ``dead_fraction`` (relu layers, else None): the fraction of units with z_in <= 0 for every
        sample of the batch (their delta, and so their gradient, is exactly 0);
        ``saturated_fraction`` (sigmoid and tanh layers whose sigma' enters the delta, else
        None): the fraction of (sample, unit) entries in the flat tails (sigmoid z_out outside
        [0.01, 0.99], tanh |z_out| > 0.99, where sigma' is under ~4% of its maximum).
    warnings : list of str      plain-language flags (empty when nothing stands out)
    loss : float                the batch loss
    """

    def __init__(self, layers, warnings, loss):
        self.layers, self.warnings, self.loss = layers, warnings, loss

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        return f"Diagnosis(layers={len(self.layers)}, warnings={len(self.warnings)})"

    def __str__(self):
        head = (f"{'layer':<6}{'units':>6}  {'activation':<11}{'mean|delta|':>12}{'/ output':>10}"
                f"{'|grad|':>11}{'dead':>7}{'saturated':>11}")
        rows = [head]
        for d in self.layers:
            dead = "-" if d["dead_fraction"] is None else f"{d['dead_fraction']:.0%}"
            sat = "-" if d["saturated_fraction"] is None else f"{d['saturated_fraction']:.0%}"
            rows.append(f"{d['layer']:<6}{d['units']:>6}  {d['activation']:<11}"
                        f"{d['mean_abs_delta']:>12.3e}{d['delta_ratio']:>10.3g}"
                        f"{d['grad_norm']:>11.3e}{dead:>7}{sat:>11}")
        rows += [f"warning: {w}" for w in self.warnings] or ["no warnings"]
        return "\n".join(rows)


def diagnose(model, X, y, loss=None):
    """Per-layer diagnostics from the deltas of one backward pass on (X, y): the mean |delta|
    (vanishing or exploding signals), the dead relu units, the saturated sigmoid/tanh units.
    Returns a Diagnosis (print it for a table). No update is made."""
    X, loss, grads, deltas, z_in, z_out = _batch_pass(model, X, y, loss)
    N = X.shape[0]
    value = model.evaluate(X, y, loss=loss)["loss"]
    fused = (loss, model.layers[-1].activation) in (("cross_entropy", "softmax"),
                                                    ("binary_cross_entropy", "sigmoid"))
    mean_abs = [float(np.mean(np.abs(d))) * N for d in deltas]
    out_level = mean_abs[-1]
    layers, warnings = [], []
    n_layers = len(model.layers)
    for i, layer in enumerate(model.layers):
        gW, gb = grads[i]
        gnorm = float(np.sqrt(np.sum(np.square(gW, dtype=np.float64))
                              + (0.0 if gb is None else np.sum(np.square(gb, dtype=np.float64)))))
        act = layer.activation
        dead = None
        if act == "relu":
            dead = float(np.mean(np.all(z_in[i] <= 0, axis=0)))
        sat = None
        if act in SATURATION and not (i == n_layers - 1 and fused):
            zo, thr = z_out[i], SATURATION[act]
            tails = (zo < thr) | (zo > 1 - thr) if act == "sigmoid" else np.abs(zo) > thr
            sat = float(np.mean(tails))
        ratio = mean_abs[i] / out_level if out_level > 0 else float("nan")
        layers.append({"layer": i, "units": layer.units, "activation": act,
                       "mean_abs_delta": mean_abs[i], "delta_ratio": ratio, "grad_norm": gnorm,
                       "dead_fraction": dead, "saturated_fraction": sat})
        if i < n_layers - 1 and ratio < VANISHING:
            warnings.append(f"layer {i}: mean |delta| is {ratio:.1e} of the output layer's "
                            "(vanishing error signal)")
        if i < n_layers - 1 and ratio > EXPLODING:
            warnings.append(f"layer {i}: mean |delta| is {ratio:.1e} times the output layer's "
                            "(exploding error signal)")
        if dead is not None and dead >= 0.5:
            warnings.append(f"layer {i}: {dead:.0%} of its relu units are dead on this batch")
        if sat is not None and sat >= 0.5:
            warnings.append(f"layer {i}: {sat:.0%} of its {act} outputs are saturated")
    return Diagnosis(layers, warnings, value)


class DiagnosticsLogger(Callback):
    """Record ``model.diagnose(X, y)`` after every epoch of fit, in History.

    After fit, ``history.history["diagnostics"]`` holds one Diagnosis per epoch and
    ``history.history["mean_abs_delta_<i>"]``, ``"dead_fraction_<i>"``, ``"saturated_fraction_<i>"``
    one float per epoch for each layer i (NaN where the measure does not apply). fit's loop is
    untouched: this is an ordinary callback.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        A fixed batch to diagnose on (a few hundred rows of the training data suffice).
    y : array-like
        Its targets, as for fit.
    loss : str, optional
        Default: the loss fit is using.

    Attributes
    ----------
    diagnoses : list of Diagnosis
        One per epoch of the last fit.

    See Also
    --------
    Sequential.diagnose : One diagnosis.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((100, 4)), np.arange(100) % 3
    >>> model = bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
    ...                       seed=0)
    >>> history = model.fit(X, y, epochs=3, verbose=0, callbacks=[bp.DiagnosticsLogger(X, y)])
    >>> len(history.history["diagnostics"]), len(history.history["mean_abs_delta_0"])
    (3, 3)
    """

    def __init__(self, X, y, loss=None):
        self.X, self.y, self.loss = X, y, loss
        self.diagnoses = []

    def on_train_begin(self, logs=None):
        """Forget the diagnoses of a previous fit.

        Parameters
        ----------
        logs : dict, optional
            The values fit logged (unused).
        """
        self.diagnoses = []

    def on_epoch_end(self, epoch, logs=None):
        """Diagnose the batch and record the numbers in the model's History.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, optional
            The values fit logged (unused).
        """
        d = diagnose(self.model, self.X, self.y, loss=self.loss or self.model.loss)
        self.diagnoses.append(d)
        history = getattr(self.model, "history", None)
        if history is None:
            return
        h = history.history
        h.setdefault("diagnostics", []).append(d)
        for row in d.layers:
            i = row["layer"]
            for key in ("mean_abs_delta", "dead_fraction", "saturated_fraction"):
                value = row[key]
                h.setdefault(f"{key}_{i}", []).append(float("nan") if value is None else value)
