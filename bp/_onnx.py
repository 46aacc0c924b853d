"""ONNX export: a built bp.Sequential, or a fitted scikit-learn MLP, as an onnx.ModelProto.

Each Dense layer becomes one product and its activation, in the order the forward pass runs:

    z_in  = Gemm(z_out_prev, W, b)      (MatMul without a bias; W stays (n_in, n_out): no transpose)
    z_out = sigma(z_in)                 (the nodes below, one formula per activation)

    identity    z                               sigmoid   Sigmoid(z)        tanh   Tanh(z)
    relu        Relu(z)                         softmax   Softmax(z, axis=-1): row-wise
    leaky_relu  Where(z > 0, z, alpha * z)      (bp's formula; ONNX Runtime has no float64 LeakyRelu)
    gelu        z * Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2  (exact, PyTorch's default)

ONNX Runtime's Erf is float32 only, so in float64 Phi is computed from erfc, which it needs only
for a = |z| / sqrt 2 >= 0: erfc(a) = t exp(p(2t - 1) - a^2), t = 2 / (2 + a), with p a Chebyshev
series of log(erfcx(a) / t) (the form of Numerical Recipes' erfccheb, its coefficients fitted here
with scipy), evaluated by Clenshaw's recurrence; Phi(z) = 1 - erfc(a)/2 for z >= 0, else erfc(a)/2.
It agrees with scipy's erfc to ~1e-15 relative, up to the rounding of a^2 for large a.

The graph's input is "X" (batch, n_in), dynamic batch axis; a Sequential's output is "f_out".
A scikit-learn MLP (anything with coefs_, intercepts_, activation, out_activation_; classes_ for a
classifier) gets the outputs skl2onnx gives it with zipmap off: "label" (batch,) and
"probabilities" (batch, n_classes) for a classifier, "variable" (batch, n_outputs) for a regressor.
onnx is imported only when an export runs: it is the optional extra ``bp[onnx]``.
"""

import os

import numpy as np

from ._config import __version__
from ._ops import refuse_beyond_dense

DEFAULT_OPSET = 17  # ONNX Runtime runs it from 1.14 on
MIN_OPSET = 14  # Relu on float64 (14); Softmax over the last axis alone (13)
INPUT = "X"
_ERFC_DEGREE = 28  # the Chebyshev series of log(erfcx(a) / t): ~1e-15 relative from degree 24
_SKLEARN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh",
                        "relu": "relu", "softmax": "softmax"}


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('bp.to_onnx needs the onnx package: pip install "bp[onnx]"') from None
    return onnx


def to_onnx(model, path=None, *, opset=None):
    """Convert a trained network to an ONNX graph.

    The graph computes ``f_out = tau(sigma(X @ W_1 + b_1) @ ... @ W_L + b_L)``.
    Every activation (gelu is the exact erf form), float32 and float64, a dynamic batch axis. For a
    fitted scikit-learn MLP the outputs are those skl2onnx gives. Needs ``pip install "bp[onnx]"``.

    Parameters
    ----------
    model : Sequential or MLPClassifier or MLPRegressor
        A built ``bp.Sequential`` of Dense layers, or a fitted scikit-learn MLPClassifier /
        MLPRegressor (or any estimator with their attributes, such as bp.sklearn's).
    path : str or path-like, optional
        Also write the model there (its directory must exist).
    opset : int, optional
        The ONNX opset, from 14 to the installed onnx's newest; default 17.

    Returns
    -------
    onnx.ModelProto
        Input "X" ``(batch, n_in)`` of the model's dtype; output "f_out" ``(batch, n_outputs)``
        for a Sequential, "label" and "probabilities" for a classifier, "variable" for a
        regressor.

    See Also
    --------
    to_torch : The hand-over to PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> import os, tempfile
    >>> import onnxruntime
    >>> model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(3, activation="softmax")],
    ...                       seed=0).build(4)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> proto = bp.to_onnx(model, path)
    >>> X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    >>> session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    >>> f_out = session.run(None, {"X": X})[0]
    >>> bool(np.allclose(f_out, model.predict(X), atol=1e-6))
    True
    """
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike. Received: {path!r}")
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"cannot write {os.fspath(path)!r}: the directory {folder!r} "
                                    "does not exist")
    if hasattr(model, "coefs_") or hasattr(model, "hidden_layer_sizes"):
        spec = _sklearn_spec(model)
    else:
        spec = _sequential_spec(model)
    onnx = _import_onnx()
    max_opset = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset:
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {max_opset}. "
                         f"Received: opset={opset!r}")
    proto = _build(onnx, spec, opset)
    onnx.checker.check_model(proto)
    if path is not None:
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
    return proto


# ---- what to export: the layers as plain data --------------------------------------------------


def _sequential_spec(model):
    """{dtype, n_in, layers: [(name, W, b or None, activation, alpha)], kind} of a bp model."""
    layers = getattr(model, "layers", None)
    if not hasattr(model, "built") or not isinstance(layers, list):
        raise TypeError("to_onnx exports a bp.Sequential or a fitted scikit-learn MLP. "
                        f"Received: {type(model).__name__}")
    if not model.built:
        raise ValueError("the model is not built yet: call fit, predict or build(input_dim) "
                         "before to_onnx")
    refuse_beyond_dense(layers, "to_onnx")
    return {"dtype": model.dtype, "n_in": layers[0].W.shape[0], "kind": "sequential",
            "doc": repr(model),
            "layers": [(layer.name or f"dense_{i}", layer.W, layer.b, layer.activation,
                        layer.alpha) for i, layer in enumerate(layers)]}


def _sklearn_spec(est):
    """The same for a scikit-learn MLP, plus what its outputs need (classes, binary, multilabel)."""
    if not hasattr(est, "coefs_"):
        raise ValueError(f"this {type(est).__name__} is not fitted yet: call fit before to_onnx")
    coefs, intercepts = list(est.coefs_), list(est.intercepts_)
    hidden, out = est.activation, est.out_activation_
    for name in (hidden, out):
        if name not in _SKLEARN_ACTIVATIONS:
            raise ValueError(f"cannot export the activation {name!r}. Expected one of "
                             f"{', '.join(map(repr, _SKLEARN_ACTIVATIONS))}")
    dtype = np.dtype(coefs[0].dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"the MLP's weights must be float32 or float64. Received: {dtype}")
    acts = [_SKLEARN_ACTIVATIONS[hidden]] * (len(coefs) - 1) + [_SKLEARN_ACTIVATIONS[out]]
    spec = {"dtype": dtype, "n_in": coefs[0].shape[0], "doc": repr(est),
            "layers": [(f"dense_{i}", np.asarray(W, dtype), np.asarray(b, dtype), act, 0.0)
                       for i, (W, b, act) in enumerate(zip(coefs, intercepts, acts))]}
    if not hasattr(est, "classes_"):
        spec["kind"] = "regressor"
        return spec
    classes = np.asarray(est.classes_)
    n_out = coefs[-1].shape[1]
    if out == "logistic" and n_out > 1:
        spec["kind"] = "multilabel"
    elif classes.dtype.kind in "iub" or classes.dtype.kind in "US":
        spec["kind"] = "binary" if out == "logistic" else "multiclass"
        spec["classes"] = classes.astype(np.int64) if classes.dtype.kind in "iub" else classes
    else:
        raise TypeError(f"classes_ must be integers or strings to export. Received: dtype "
                        f"{classes.dtype}")
    return spec


# ---- the graph -----------------------------------------------------------------------------


class _Graph:
    """Nodes and constants, each output named once (prefix plus a counter)."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.nodes, self.constants, self._count = [], [], 0

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, name=None):
        name = name or self.name("c")
        arr = np.asarray(value, None if np.asarray(value).dtype.kind in "iUS" else self.dtype)
        self.constants.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type, inputs, output=None, **attrs):
        output = output or self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], **attrs))
        return output


def _dense(g, z, prefix, W, b, activation, alpha, output=None):
    """z_out = sigma(z @ W + b): the product's node, then the activation's (named output last)."""
    W_name = g.const(W, f"{prefix}.W")
    if b is None:
        z_in = g.op("MatMul", [z, W_name], f"{prefix}.z_in")
    else:
        z_in = g.op("Gemm", [z, W_name, g.const(b, f"{prefix}.b")], f"{prefix}.z_in")
    z_out = _sigma(g, activation, z_in, alpha)
    if output is not None:
        z_out = g.op("Identity", [z_out], output)
    return z_out


def _sigma(g, activation, z, alpha):
    """The nodes of z_out = sigma(z); returns the name of z_out."""
    if activation == "identity":
        return z
    if activation in ("sigmoid", "tanh", "relu"):
        return g.op({"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}[activation], [z])
    if activation == "softmax":
        return g.op("Softmax", [z], axis=-1)
    if activation == "leaky_relu":
        positive = g.op("Greater", [z, g.const(0.0)])
        return g.op("Where", [positive, z, g.op("Mul", [z, g.const(alpha)])])
    if activation == "gelu":
        return g.op("Mul", [z, _phi(g, z)])
    raise ValueError(f"cannot export the activation {activation!r}")


def _phi(g, z):
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2, the normal CDF: Erf in float32, erfc's series in float64."""
    if g.dtype == np.float32:
        erf = g.op("Erf", [g.op("Mul", [z, g.const(1 / np.sqrt(2))])])
        return g.op("Mul", [g.op("Add", [erf, g.const(1.0)]), g.const(0.5)])
    a = g.op("Mul", [g.op("Abs", [z]), g.const(1 / np.sqrt(2))])
    t = g.op("Div", [g.const(2.0), g.op("Add", [a, g.const(2.0)])])
    y = g.op("Sub", [g.op("Mul", [t, g.const(2.0)]), g.const(1.0)])
    c = _erfc_coefficients()
    # Clenshaw: b_k = c_k + 2y b_{k+1} - b_{k+2} down to k = 1; the series is c_0 + y b_1 - b_2
    two_y = g.op("Mul", [y, g.const(2.0)])
    b1, b2 = g.const(c[-1]), g.const(0.0)
    for ck in c[-2:0:-1]:
        b1, b2 = g.op("Add", [g.op("Sub", [g.op("Mul", [two_y, b1]), b2]), g.const(ck)]), b1
    series = g.op("Add", [g.op("Sub", [g.op("Mul", [y, b1]), b2]), g.const(c[0])])
    exponent = g.op("Sub", [series, g.op("Mul", [a, a])])
    half_erfc = g.op("Mul", [g.op("Mul", [t, g.op("Exp", [exponent])]), g.const(0.5)])
    upper = g.op("Sub", [g.const(1.0), half_erfc])
    return g.op("Where", [g.op("GreaterOrEqual", [z, g.const(0.0)]), upper, half_erfc])


def _erfc_coefficients():
    """Chebyshev coefficients, in y = 2t - 1, of log(erfcx(a) / t) with t = 2 / (2 + a)."""
    from numpy.polynomial import chebyshev
    from scipy.special import erfcx

    def log_erfcx_over_t(y):
        t = np.maximum((y + 1) / 2, 1e-300)  # y = -1 is a = infinity, never a node
        return np.log(erfcx(2 / t - 2) / t)

    return chebyshev.chebinterpolate(log_erfcx_over_t, _ERFC_DEGREE)


def _build(onnx, spec, opset):
    helper, TensorProto = onnx.helper, onnx.TensorProto
    elem = TensorProto.FLOAT if spec["dtype"] == np.float32 else TensorProto.DOUBLE
    g = _Graph(onnx, spec["dtype"])
    kind, layers = spec["kind"], spec["layers"]
    last_output = "f_out" if kind == "sequential" else ("variable" if kind == "regressor" else None)
    z = INPUT
    for i, (prefix, W, b, activation, alpha) in enumerate(layers):
        z = _dense(g, z, prefix, W, b, activation, alpha,
                   last_output if i == len(layers) - 1 else None)
    n_out = layers[-1][1].shape[1]
    if last_output is not None:
        outputs = [helper.make_tensor_value_info(last_output, elem, ["batch", n_out])]
    else:
        outputs = _classifier_outputs(g, spec, z, helper, TensorProto, elem)
    graph = helper.make_graph(
        g.nodes, f"bp_{kind}",
        [helper.make_tensor_value_info(INPUT, elem, ["batch", spec["n_in"]])], outputs,
        initializer=g.constants)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="bp",
                              producer_version=__version__, doc_string=spec["doc"])
    proto.ir_version = helper.find_min_ir_version_for(opsets)  # what older runtimes can read
    return proto


def _classifier_outputs(g, spec, p, helper, TensorProto, elem):
    """label and probabilities from the output activation p, as scikit-learn's predict and
    predict_proba give them: binary [1 - p, p], multiclass the softmax, multilabel p > 0.5."""
    kind = spec["kind"]
    if kind == "multilabel":
        n = spec["layers"][-1][1].shape[1]
        g.op("Identity", [p], "probabilities")
        g.op("Cast", [g.op("Greater", [p, g.const(0.5)])], "label", to=TensorProto.INT64)
        label_type = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch", n])
        return [label_type, helper.make_tensor_value_info("probabilities", elem, ["batch", n])]
    if kind == "binary":
        g.op("Concat", [g.op("Sub", [g.const(1.0), p]), p], "probabilities", axis=1)
    else:
        g.op("Identity", [p], "probabilities")
    # argmax takes the first of tied classes, as numpy's does; sklearn's binary threshold p > 0.5
    # agrees: 1 - p < p exactly when p > 0.5 (1 - p is exact for p >= 0.5)
    index = g.op("ArgMax", ["probabilities"], axis=1, keepdims=0)
    classes = spec["classes"]
    g.op("Gather", [g.const(classes, "classes"), index], "label", axis=0)
    label_elem = TensorProto.INT64 if classes.dtype.kind == "i" else TensorProto.STRING
    return [helper.make_tensor_value_info("label", label_elem, ["batch"]),
            helper.make_tensor_value_info("probabilities", elem, ["batch", len(classes)])]
