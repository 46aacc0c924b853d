"""bp: backpropagation, compiled.

Multilayer perceptrons trained by backpropagation on the CPU, with the three passes (dense forward,
error signal, gradients) and the parameter updates in Cython kernels (package ``bpcore``).

Examples
--------
>>> import bp
>>> from sklearn.datasets import load_digits
>>> X, y = load_digits(return_X_y=True)
>>> model = bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(10, activation="softmax")],
...                       seed=0)
>>> history = model.fit(X / 16.0, y, loss="cross_entropy", optimizer=bp.Adam(1e-3), epochs=10,
...                     verbose=0)
>>> model.evaluate(X / 16.0, y)["accuracy"] > 0.95
True
"""

from . import kernels, losses, metrics, regularizers, schedules
from ._config import __version__, show_config
from ._threads import effective_n_threads, get_num_threads, num_threads, set_num_threads
from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from .export import from_torch, to_onnx, to_torch
from .insight import DiagnosticsLogger, explain
from .layers import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    Input,
    LayerNormalization,
    Residual,
)
from .optimizers import SGD, Adagrad, Adam, AdamW, Nadam, Optimizer, RMSprop
from .regularizers import l1, l1_l2, l2
from .schedules import CosineDecay, StepDecay
from .sequential import Sequential, TrainingDivergedError, load

__all__ = [
    "__version__",
    "Sequential", "Dense", "Dropout", "Activation", "LayerNormalization", "BatchNormalization",
    "Residual", "Input", "load", "l1", "l2", "l1_l2",
    "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Nadam", "Optimizer", "StepDecay", "CosineDecay",
    "Callback", "EarlyStopping", "History", "TerminateOnNaN", "TrainingDivergedError",
    "ModelCheckpoint", "ReduceLROnPlateau", "CSVLogger", "LambdaCallback",
    "explain", "DiagnosticsLogger", "to_onnx", "to_torch", "from_torch",
    "kernels", "losses", "metrics", "regularizers", "schedules",
    "show_config", "effective_n_threads", "get_num_threads", "num_threads", "set_num_threads",
]
