"""Serving and interchange: the doors out of bp (and back in from PyTorch).

    bp.to_onnx(model, path=None, *, opset=None)  an onnx.ModelProto for ONNX Runtime and the
                                                 other ONNX runtimes (bp/_onnx.py); also for a
                                                 fitted scikit-learn MLP
    bp.to_torch(model)                           a torch.nn.Sequential with the same weights
    bp.from_torch(module, dtype=None)            a built bp.Sequential from such a module
                                                 (bp/_torch.py)

onnx and torch are optional (``pip install "bp[onnx]"``, ``"bp[torch]"``) and imported only when
one of these runs.
"""

from ._onnx import to_onnx
from ._torch import to_torch
from .sequential import Sequential

__all__ = ["to_onnx", "to_torch", "from_torch"]


def from_torch(module, dtype=None):
    """Build a bp model from a ``torch.nn.Sequential``, its weights exactly.

    ``bp.Sequential.from_torch(module, dtype)``: reads ``Linear`` layers each followed by at most one
    of ``Sigmoid``, ``Tanh``, ``ReLU``, ``LeakyReLU``, ``GELU()`` and ``Softmax(dim=-1)``, and refuses
    anything else by name.

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

    See Also
    --------
    to_torch : The other way.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> import torch
    >>> module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> model = bp.from_torch(module)
    >>> [layer.activation for layer in model]
    ['relu', 'identity']
    >>> bool(np.array_equal(model.layers[0].W, module[0].weight.detach().numpy().T))
    True
    """
    return Sequential.from_torch(module, dtype=dtype)
