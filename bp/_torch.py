"""The PyTorch hand-over: a bp model as a torch.nn.Sequential of Linear and activation modules,
and back.

    bp Dense(n_out, sigma) with W (n_in, n_out), b   <->   nn.Linear(n_in, n_out), weight = W.T, bias = b
                                                          followed by sigma's module (none for identity)

    sigmoid nn.Sigmoid   tanh nn.Tanh   relu nn.ReLU   leaky_relu nn.LeakyReLU(alpha)
    gelu nn.GELU() (exact: approximate="none")   softmax nn.Softmax(dim=-1)

Weights are copied, never shared, and copied exactly: bp -> torch -> bp gives the same bits.
This module sits below bp.sequential: it reads a model through its layers and builds one through
the class it is handed (``Sequential.from_torch`` passes itself), so it never imports the model.
torch is imported only when a hand-over runs: it is the optional extra ``bp[torch]``.
"""

import numpy as np

from ._validation import as_dtype
from ._ops import refuse_beyond_dense
from .layers import Dense


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError('the PyTorch hand-over needs torch: pip install "bp[torch]"') from None
    return torch


def _activation_modules(nn):
    """bp activation -> a new torch module (identity has none)."""
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU,
            "leaky_relu": None, "softmax": lambda: nn.Softmax(dim=-1)}


def to_torch(model):
    """Convert a built model to a ``torch.nn.Sequential`` computing the same ``f_out`` as ``predict``.

    Each Dense becomes an ``nn.Linear`` (``weight = W.T``, ``bias = b``, the model's dtype) followed
    by its activation module; the weights are copies. Needs ``pip install "bp[torch]"``.

    Parameters
    ----------
    model : Sequential
        A built model.

    Returns
    -------
    torch.nn.Sequential
        The module.

    See Also
    --------
    from_torch : And back.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> import torch
    >>> model = bp.Sequential([bp.Dense(4, activation="tanh"), bp.Dense(2)], seed=0).build(3)
    >>> module = bp.to_torch(model)
    >>> X = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    >>> f_out = module(torch.from_numpy(X)).detach().numpy()
    >>> bool(np.allclose(f_out, model.predict(X), atol=1e-6))
    True
    """
    refuse_beyond_dense(getattr(model, "layers", []), "to_torch")
    layers = getattr(model, "layers", None)
    if not hasattr(model, "built") or not isinstance(layers, list):
        raise TypeError(f"to_torch takes a bp.Sequential. Received: {type(model).__name__}")
    if not model.built:
        raise ValueError("the model is not built yet: call fit, predict or build(input_dim) "
                         "before to_torch")
    torch = _import_torch()
    nn = torch.nn
    dtype = {np.float32: torch.float32, np.float64: torch.float64}[model.dtype.type]
    modules = []
    for layer in layers:
        n_in, n_out = layer.W.shape
        linear = nn.Linear(n_in, n_out, bias=layer.use_bias, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.W.T)))
            if layer.use_bias:
                linear.bias.copy_(torch.from_numpy(layer.b.copy()))
        modules.append(linear)
        if layer.activation == "leaky_relu":
            modules.append(nn.LeakyReLU(layer.alpha))
        elif layer.activation != "identity":
            modules.append(_activation_modules(nn)[layer.activation]())
    return nn.Sequential(*modules).eval()


def from_torch(model_class, module, dtype=None):
    """A built ``model_class`` (bp.Sequential) with the layers and weights of a torch module.

    Parameters
    ----------
    module : torch.nn.Sequential (nested ones are flattened) of nn.Linear, each followed by at
        most one of nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU (slope >= 0), nn.GELU (exact),
        nn.Softmax (over the last axis); nn.Identity anywhere. A single nn.Linear also works.
    dtype : "float32" or "float64", optional
        Default: the module's (which must then be one of these).

    Anything else (a custom forward, dropout, normalisation, a tanh-approximate GELU, a softmax
    over another axis, two activations in a row) is refused with a ValueError naming the module.
    """
    torch = _import_torch()
    nn = torch.nn
    if not isinstance(module, (nn.Sequential, nn.Linear)):
        raise TypeError("from_torch reads a torch.nn.Sequential of Linear and activation modules "
                        f"(a custom forward cannot be read). Received: {type(module).__name__}")
    steps = _flatten(nn, module)
    dtype = _module_dtype(steps, dtype)
    specs, linears = [], []  # one Dense config per Linear, its activation from the next module
    for position, step in enumerate(steps):
        where = f"module [{position}] ({step!r})"
        if isinstance(step, nn.Identity):
            continue
        if isinstance(step, nn.Linear):
            if specs and specs[-1]["units"] != step.in_features:
                raise ValueError(f"{where} takes {step.in_features} features but the layer before "
                                 f"gives {specs[-1]['units']}")
            specs.append({"units": step.out_features, "use_bias": step.bias is not None,
                          "input_dim": step.in_features})
            linears.append(step)
            continue
        activation, alpha = _activation_of(nn, step, where)
        if _follows_activation(steps, position, nn):
            raise ValueError(f"{where} does not follow a Linear: bp's Dense layer is a Linear and "
                             "at most one activation")
        specs[-1].update(activation=activation, alpha=alpha)
    if not specs:
        raise ValueError("the module has no Linear layer: bp needs at least one")
    layers = [Dense(**spec) for spec in specs]
    model = model_class(layers, dtype=dtype)
    model.build()
    for layer, linear in zip(model.layers, linears):
        layer.W = linear.weight.detach().cpu().numpy().T
        if linear.bias is not None:
            layer.b = linear.bias.detach().cpu().numpy()
    return model


def _flatten(nn, module):
    if isinstance(module, nn.Sequential):
        return [step for child in module for step in _flatten(nn, child)]
    return [module]


def _follows_activation(steps, position, nn):
    """True if the nearest non-Identity module before `position` is not a Linear."""
    for step in reversed(steps[:position]):
        if not isinstance(step, nn.Identity):
            return not isinstance(step, nn.Linear)
    return True


def _activation_of(nn, step, where):
    """(bp activation, alpha) for a torch activation module; ValueError for anything else."""
    simple = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu"}
    if type(step) in simple:
        return simple[type(step)], 0.01
    if isinstance(step, nn.LeakyReLU):
        if step.negative_slope < 0:
            raise ValueError(f"{where}: bp's leaky_relu needs a slope >= 0. Received: "
                             f"negative_slope={step.negative_slope}")
        return "leaky_relu", float(step.negative_slope)
    if isinstance(step, nn.GELU):
        if step.approximate != "none":
            raise ValueError(f"{where}: bp's gelu is the exact erf form (approximate='none'). "
                             f"Received: approximate={step.approximate!r}")
        return "gelu", 0.01
    if isinstance(step, nn.Softmax):
        if step.dim not in (1, -1):
            raise ValueError(f"{where}: bp's softmax runs over each row (dim=-1 or 1). "
                             f"Received: dim={step.dim!r}")
        return "softmax", 0.01
    raise ValueError(f"{where} has no bp equivalent. Expected nn.Linear, nn.Identity or one of "
                     "nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Softmax")


def _module_dtype(steps, dtype):
    """The bp dtype: the one asked for, else the parameters' (all of one float32/float64 dtype)."""
    if dtype is not None:
        return as_dtype(dtype)
    found = {str(p.dtype).replace("torch.", "") for step in steps for p in step.parameters()}
    if len(found) > 1:
        raise TypeError(f"the module's parameters mix dtypes {sorted(found)}: pass dtype=")
    if not found:
        return np.dtype(np.float32)
    name = found.pop()
    if name not in ("float32", "float64"):
        raise TypeError(f"bp computes in float32 or float64; the module's parameters are {name}: "
                        "pass dtype='float32' or 'float64' to convert them")
    return np.dtype(name)
