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

from __future__ import annotations

from typing import Any

from numpy.typing import DTypeLike

from ._onnx import to_onnx
from ._torch import to_torch
from .sequential import Sequential

__all__ = ["to_onnx", "to_torch", "from_torch"]


def from_torch(module: Any, dtype: DTypeLike | None = None) -> Sequential:
    """``bp.Sequential.from_torch(module, dtype)``: a built model with the module's layers and
    weights (see bp._torch.from_torch for what it reads and what it refuses)."""
    return Sequential.from_torch(module, dtype=dtype)
