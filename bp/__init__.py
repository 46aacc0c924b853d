"""bp: backpropagation, compiled.

Multilayer perceptrons trained by backpropagation on the CPU, with the three passes (dense forward,
error signal, gradients) and the parameter updates in Cython kernels (package ``bpcore``).
"""

from . import kernels
from ._config import show_config
from ._threads import effective_n_threads, get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "kernels",
    "show_config",
    "effective_n_threads",
    "get_num_threads",
    "num_threads",
    "set_num_threads",
]
