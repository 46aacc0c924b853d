"""The PyTorch hand-over: a bp model as a torch.nn.Sequential, and back.

    bp Dense(n_out, sigma) with W (n_in, n_out), b
        <->   nn.Linear(n_in, n_out), weight = W.T, bias = b,
              followed by sigma's module (none for identity)
    bp Activation(sigma)                  <->   sigma's module
    bp Dropout(rate)                      <->   nn.Dropout(p=rate)
    bp LayerNormalization(epsilon, center, scale)
        <->   nn.LayerNorm(n, eps=epsilon, elementwise_affine=scale or center, bias=center)
    bp BatchNormalization(momentum, epsilon)
        <->   nn.BatchNorm1d(n, eps=epsilon, momentum=1 - momentum), its running_mean and
              running_var (both unbiased variances)
    bp Residual([...])                    <->   bp._torch.Residual(nn.Sequential(...)):
                                                forward(x) = block(x) + x

    sigmoid nn.Sigmoid   tanh nn.Tanh   relu nn.ReLU   leaky_relu nn.LeakyReLU(alpha)
    gelu nn.GELU() (exact: approximate="none")   softmax nn.Softmax(dim=-1)
    elu nn.ELU()   selu nn.SELU()   silu nn.SiLU()   softplus nn.Softplus()   mish nn.Mish()
    hard_sigmoid nn.Hardsigmoid()   exponential a module computing torch.exp (to_torch only)

The momentum conventions differ: Keras' (bp's) momentum is the share of the running value kept,
PyTorch's the share of the new batch's, so torch_momentum = 1 - bp_momentum (exact for bp's
momentum >= 0.5, the default 0.99 included). A norm with scale=False or center=False becomes a
PyTorch norm whose missing gamma is ones or beta zeros (nn.BatchNorm1d has no separate switches),
which reads back as scale=True / center=True with those values: the same forward.
Weights are copied, never shared, and copied exactly: bp -> torch -> bp gives the same bits.
This module sits below bp.sequential: it reads a model through its layers and builds one through
the class it is handed (``Sequential.from_torch`` passes itself), so it never imports the model.
torch is imported only when a hand-over runs: it is the optional extra ``bp[torch]``; the
Residual module class is made on first use (``bp._torch.Residual``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import as_dtype
from .layers import Activation, BatchNormalization, Dense, Dropout, LayerNormalization
from .layers import Residual as _BpResidual

_RESIDUAL: list[type] = []  # the torch Residual class, made once torch is imported


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError('the PyTorch hand-over needs torch: pip install "bp[torch]"') from None
    return torch


def _residual_class():
    """bp._torch.Residual: an nn.Module computing block(x) + x, made on first use (torch is
    optional), named so that pickle finds it here."""
    if not _RESIDUAL:
        nn = _import_torch().nn

        class Residual(nn.Module):
            """A residual block, ``forward(x) = block(x) + x`` (bp.Residual's twin).

            Parameters
            ----------
            block : torch.nn.Module
                The block; its output as wide as its input.

            Examples
            --------
            >>> import torch
            >>> from bp._torch import Residual
            >>> block = Residual(torch.nn.Sequential(torch.nn.Linear(3, 3)))
            >>> block(torch.zeros(2, 3)).shape
            torch.Size([2, 3])
            """

            def __init__(self, block):
                super().__init__()
                self.block = block

            def forward(self, x):
                return self.block(x) + x

        Residual.__module__, Residual.__qualname__ = __name__, "Residual"
        _RESIDUAL.append(Residual)
    return _RESIDUAL[0]


def __getattr__(name):
    if name == "Residual":
        return _residual_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _activation_modules(nn):
    """bp activation -> a new torch module (identity has none)."""
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU,
            "leaky_relu": None, "softmax": lambda: nn.Softmax(dim=-1), "elu": nn.ELU,
            "selu": nn.SELU, "silu": nn.SiLU, "softplus": nn.Softplus, "mish": nn.Mish,
            "hard_sigmoid": nn.Hardsigmoid, "exponential": _Exp}


def _Exp():
    """torch has no exponential module: a small one (its forward is torch.exp)."""
    torch = _import_torch()

    class Exp(torch.nn.Module):
        def forward(self, x):
            return torch.exp(x)

    return Exp()


def to_torch(model: Any) -> Any:
    """Convert a built model to a ``torch.nn.Sequential`` computing the same ``f_out`` as ``predict``.

    Each Dense becomes an ``nn.Linear`` (``weight = W.T``, ``bias = b``, the model's dtype) followed
    by its activation module; Activation, Dropout, LayerNormalization, BatchNormalization and
    Residual become their modules (the table in bp/_torch.py; BatchNorm's
    ``momentum = 1 - bp's momentum``). The weights and running statistics are copies; the module is
    in eval mode. Needs ``pip install "bp[torch]"``.

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
    layers = getattr(model, "layers", None)
    if not hasattr(model, "built") or not isinstance(layers, list):
        raise TypeError(f"to_torch takes a bp.Sequential. Received: {type(model).__name__}")
    if not model.built:
        raise ValueError("the model is not built yet: call fit, predict or build(input_dim) "
                         "before to_torch")
    torch = _import_torch()
    dtype = {np.float32: torch.float32, np.float64: torch.float64}[model.dtype.type]
    return torch.nn.Sequential(*_modules(torch, layers, dtype)).eval()


def _copy(torch, target, value):
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.array(value)))


def _modules(torch, layers, dtype):
    """The torch modules of bp layers, in order."""
    nn, modules = torch.nn, []
    for layer in layers:
        kind = layer._kind
        if kind == "dense":
            n_in, n_out = layer.W.shape
            linear = nn.Linear(n_in, n_out, bias=layer.use_bias, dtype=dtype)
            _copy(torch, linear.weight, layer.W.T)
            if layer.use_bias:
                _copy(torch, linear.bias, layer.b)
            modules.append(linear)
            if layer.dropout is not None:
                modules.append(_activation_module(nn, layer))
                modules.append(nn.Dropout(layer.dropout.rate))
                continue
        elif kind == "dropout":
            modules.append(nn.Dropout(layer.rate))
            continue
        elif kind in ("layer_norm", "batch_norm"):
            n, affine = layer.input_dim, layer.scale or layer.center
            if kind == "layer_norm":
                norm = nn.LayerNorm(n, eps=layer.epsilon, elementwise_affine=affine,
                                    bias=layer.center, dtype=dtype)
            else:
                norm = nn.BatchNorm1d(n, eps=layer.epsilon, momentum=1 - layer.momentum,
                                      affine=affine, dtype=dtype)
                _copy(torch, norm.running_mean, layer.moving_mean)
                _copy(torch, norm.running_var, layer.moving_variance)
            if affine:
                _copy(torch, norm.weight, layer.gamma if layer.scale else np.ones(n))
            if norm.bias is not None:
                _copy(torch, norm.bias, layer.beta if layer.center else np.zeros(n))
            modules.append(norm)
            continue
        elif kind == "residual":
            block = nn.Sequential(*_modules(torch, layer.layers, dtype))
            modules.append(_residual_class()(block))
            continue
        modules.append(_activation_module(nn, layer))
    return [module for module in modules if module is not None]


def _activation_module(nn, layer):
    if layer.activation == "leaky_relu":
        return nn.LeakyReLU(layer.alpha)
    if layer.activation != "identity":
        return _activation_modules(nn)[layer.activation]()
    return None


def from_torch(model_class, module, dtype=None):
    """A built ``model_class`` (bp.Sequential) with the layers and weights of a torch module.

    Parameters
    ----------
    module : torch.nn.Sequential (nested ones are flattened) of nn.Linear, each followed by at
        most one of nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU (slope >= 0), nn.GELU (exact),
        nn.Softmax (over the last axis), which then becomes its activation (elsewhere such a
        module is an Activation layer); nn.Dropout, nn.LayerNorm over the last axis,
        nn.BatchNorm1d (running statistics tracked, a momentum), bp._torch.Residual;
        nn.Identity anywhere. A single nn.Linear also works.
    dtype : "float32" or "float64", optional
        Default: the module's (which must then be one of these).

    Anything else (a custom forward, a tanh-approximate GELU, a softmax over another axis, a
    BatchNorm1d without running statistics) is refused with a ValueError naming the module.
    """
    torch = _import_torch()
    nn = torch.nn
    if not isinstance(module, (nn.Sequential, nn.Linear)):
        raise TypeError("from_torch reads a torch.nn.Sequential of Linear and activation modules "
                        f"(a custom forward cannot be read). Received: {type(module).__name__}")
    steps = _flatten(nn, module)
    dtype = _module_dtype(_all_steps(nn, steps), dtype)
    pairs, linears = [], []  # (bp layer, torch module) for the parameters, after build
    layers, width = _layers_of(nn, steps, None, pairs, linears, "")
    if not linears:
        raise ValueError("the module has no Linear layer: bp needs at least one")
    n_in = next(m.in_features if isinstance(m, nn.Linear) else _norm_width(m)
                for m in _all_steps(nn, steps) if isinstance(m, (nn.Linear, nn.LayerNorm,
                                                                  nn.BatchNorm1d)))
    model = model_class(layers, dtype=dtype, input_dim=n_in)
    model.build()
    for layer, step in pairs:
        _read(layer, step, model.dtype)
    return model


def _norm_width(step):
    return step.num_features if hasattr(step, "num_features") else step.normalized_shape[0]


def _all_steps(nn, steps):
    """Every module, a Residual's block's too, in forward order."""
    Res = _residual_class()
    out = []
    for step in steps:
        out.append(step)
        if isinstance(step, Res):
            out += _all_steps(nn, _flatten(nn, step.block))
    return out


def _read(layer, step, dtype):
    """Copy a torch module's parameters (and running statistics) into a built bp layer."""
    def arr(t):
        return t.detach().cpu().numpy().astype(dtype)
    if layer._kind == "dense":
        layer.W = arr(step.weight).T
        if step.bias is not None:
            layer.b = arr(step.bias)
        return
    if layer.gamma is not None:
        layer.gamma[...] = arr(step.weight)
    if layer.beta is not None:
        layer.beta[...] = arr(step.bias)
    if layer._kind == "batch_norm":
        layer.moving_mean[...] = arr(step.running_mean)
        layer.moving_variance[...] = arr(step.running_var)


def _layers_of(nn, steps, width, pairs, linears, prefix):
    """bp layers from flattened torch modules; returns them and the output width."""
    Res = _residual_class()
    layers = []
    for position, step in enumerate(steps):
        where = f"module [{prefix}{position}] ({step!r})"
        if isinstance(step, nn.Identity):
            continue
        if isinstance(step, nn.Linear):
            if width is not None and width != step.in_features:
                raise ValueError(f"{where} takes {step.in_features} features but the layer before "
                                 f"gives {width}")
            layers.append(Dense(step.out_features, use_bias=step.bias is not None,
                                input_dim=step.in_features))
            pairs.append((layers[-1], step))
            linears.append(step)
            width = step.out_features
        elif isinstance(step, nn.Dropout):
            layers.append(Dropout(float(step.p)))
        elif isinstance(step, (nn.LayerNorm, nn.BatchNorm1d)):
            layers.append(_norm_of(nn, step, where, width))
            pairs.append((layers[-1], step))
            width = _norm_width(step)
        elif isinstance(step, Res):
            block, out = _layers_of(nn, _flatten(nn, step.block), width, pairs, linears,
                                    f"{prefix}{position}].block[")
            if width is not None and out != width:
                raise ValueError(f"{where}: a Residual block must keep its width. Received: "
                                 f"{width} in, {out} out")
            layers.append(_BpResidual(block))
            width = out
        else:
            activation, alpha = _activation_of(nn, step, where)
            last = layers[-1] if layers else None
            if (isinstance(last, Dense) and last.activation == "identity"
                    and _follows_linear(steps, position, nn)):  # the Dense's own activation
                layers[-1] = Dense(last.units, activation, alpha=alpha, use_bias=last.use_bias,
                                   input_dim=last.input_dim)
                pairs[-1] = (layers[-1], pairs[-1][1])
            else:
                layers.append(Activation(activation, alpha=alpha))
    return layers, width


def _norm_of(nn, step, where, width):
    """A bp normalisation for nn.LayerNorm / nn.BatchNorm1d; ValueError naming what differs."""
    n = _norm_width(step)
    if isinstance(step, nn.LayerNorm) and len(step.normalized_shape) != 1:
        raise ValueError(f"{where}: bp normalises each row's features (normalized_shape of one "
                         f"int). Received: normalized_shape={tuple(step.normalized_shape)}")
    if width is not None and n != width:
        raise ValueError(f"{where} takes {n} features but the layer before gives {width}")
    if isinstance(step, nn.LayerNorm):
        affine = step.weight is not None
        return LayerNormalization(float(step.eps), scale=affine, center=step.bias is not None)
    if not step.track_running_stats or step.momentum is None:
        raise ValueError(f"{where}: bp's BatchNormalization keeps running statistics with a "
                         f"momentum. Received: track_running_stats={step.track_running_stats}, "
                         f"momentum={step.momentum}")
    return BatchNormalization(1 - float(step.momentum), float(step.eps), scale=step.affine,
                              center=step.affine)


def _flatten(nn, module):
    if isinstance(module, nn.Sequential):
        return [step for child in module for step in _flatten(nn, child)]
    return [module]


def _follows_linear(steps, position, nn):
    """True if the nearest non-Identity module before `position` is a Linear."""
    for step in reversed(steps[:position]):
        if not isinstance(step, nn.Identity):
            return isinstance(step, nn.Linear)
    return False


def _activation_of(nn, step, where):
    """(bp activation, alpha) for a torch activation module; ValueError for anything else."""
    simple = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu", nn.SELU: "selu",
              nn.SiLU: "silu", nn.Mish: "mish", nn.Hardsigmoid: "hard_sigmoid"}
    if type(step) in simple:
        return simple[type(step)], 0.01
    if isinstance(step, nn.ELU) and step.alpha == 1.0:
        return "elu", 0.01
    if isinstance(step, nn.Softplus) and step.beta == 1.0 and step.threshold == 20.0:
        return "softplus", 0.01
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
    raise ValueError(f"{where} has no bp equivalent. Expected nn.Linear, nn.Identity, "
                     "nn.Dropout, nn.LayerNorm, nn.BatchNorm1d, bp._torch.Residual or one of "
                     "nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Softmax, nn.SELU, "
                     "nn.SiLU, nn.Mish, nn.Hardsigmoid, nn.ELU (alpha=1), nn.Softplus (beta=1, "
                     "threshold=20)")


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
