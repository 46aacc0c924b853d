"""bp: backpropagation, compiled.

Multilayer perceptrons trained by backpropagation on the CPU, with the three passes (dense forward,
error signal, gradients) and the parameter updates in Cython kernels (package ``bpcore``).

>>> import bp
>>> model = bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(10, activation="softmax")])
>>> history = model.fit(X, y, loss="cross_entropy", optimizer=bp.Adam(1e-3), epochs=10)
"""

from . import kernels, losses, schedules
from ._config import __version__, show_config
from ._threads import effective_n_threads, get_num_threads, num_threads, set_num_threads
from .callbacks import Callback, EarlyStopping, History, TerminateOnNaN
from .layers import Dense
from .optimizers import SGD, Adam, AdamW, Optimizer
from .schedules import CosineDecay, StepDecay
from .sequential import Sequential, TrainingDivergedError, load
from .insight import DiagnosticsLogger, explain

__all__ = [
    "Sequential", "Dense", "load",
    "SGD", "Adam", "AdamW", "Optimizer", "StepDecay", "CosineDecay",
    "Callback", "EarlyStopping", "History", "TerminateOnNaN", "TrainingDivergedError",
    "explain", "DiagnosticsLogger",
    "kernels", "losses", "schedules",
    "show_config", "effective_n_threads", "get_num_threads", "num_threads", "set_num_threads",
]
