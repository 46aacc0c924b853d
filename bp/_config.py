"""bp.show_config(): how this bp was built and how it will run."""

import sys
from typing import Any, TextIO

import numpy as np
import scipy

import bpcore
from bpcore import _blas, _cpu
from bpcore._openmp import omp_max_threads, openmp_enabled

from . import _threads

__version__ = "0.1.0"


def build_info() -> dict[str, Any]:
    """A dict: versions, OpenMP on or off, the BLAS that gemm calls and its threads, thread count,
    and the instruction-set path each kernel with run-time-chosen bodies takes on this CPU."""
    blas = []
    for lib in _threads.blas_info():
        blas.append({
            "library": lib.get("internal_api"),
            "version": lib.get("version"),
            "threading_layer": lib.get("threading_layer"),
            "num_threads": lib.get("num_threads"),
            "architecture": lib.get("architecture"),
            "filepath": lib.get("filepath"),
        })
    return {
        "bp": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "openmp": openmp_enabled(),
        "omp_max_threads": omp_max_threads(),
        "bp_num_threads": _threads.get_num_threads(),
        "small_gemm_threshold": _blas.SMALL_GEMM_THRESHOLD,
        "gemm": "scipy.linalg.cython_blas (sgemm/dgemm), own loops below the threshold",
        "blas": blas,
        "cpu_x86_64_v3": _cpu.x86_64_v3(),
        "kernel_paths": dict(bpcore.KERNEL_PATHS),
        "bpcore": bpcore.__file__,
    }


def show_config(file: TextIO | None = None) -> None:
    """Print how bp was built and how it will run: OpenMP, BLAS, threads, kernel paths.

    A kernel path is the instruction-set body a kernel with run-time-chosen bodies takes on this
    CPU (``bpcore.KERNEL_PATHS``).

    Parameters
    ----------
    file : file-like, optional
        Where to print; default ``sys.stdout``.

    Examples
    --------
    >>> import bp
    >>> import io
    >>> text = io.StringIO()
    >>> bp.show_config(file=text)
    >>> "OpenMP" in text.getvalue()
    True
    """
    info = build_info()
    out = file or sys.stdout
    print(f"bp {info['bp']}  (python {info['python']}, numpy {info['numpy']}, "
          f"scipy {info['scipy']})", file=out)
    print(f"  OpenMP kernels      : {'on' if info['openmp'] else 'OFF (serial build)'}", file=out)
    print(f"  threads (bp)        : {info['bp_num_threads']}  "
          f"(omp_get_max_threads: {info['omp_max_threads']})", file=out)
    print(f"  gemm                : {info['gemm']}", file=out)
    print(f"  own-loop threshold  : m*n*k <= {info['small_gemm_threshold']}", file=out)
    for lib in info["blas"]:
        print(f"  BLAS                : {lib['library']} {lib['version']} ({lib['architecture']}, "
              f"{lib['threading_layer']}, {lib['num_threads']} threads) {lib['filepath']}",
              file=out)
    for kernel, path in info["kernel_paths"].items():
        print(f"  kernel path         : {kernel}: {path}", file=out)
