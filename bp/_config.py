"""bp.show_config(): how this bp was built and how it will run."""

import sys

import numpy as np
import scipy

import bpcore
from bpcore import _blas
from bpcore._openmp import omp_max_threads, openmp_enabled

from . import _threads

__version__ = "0.1.0"


def build_info():
    """A dict: versions, OpenMP on or off, the BLAS that gemm calls and its threads, thread count."""
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
        "bpcore": bpcore.__file__,
    }


def show_config(file=None):
    """Print how bp was built and how it will run (OpenMP, BLAS, threads).

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
    print(f"bp {info['bp']}  (python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']})", file=out)
    print(f"  OpenMP kernels      : {'on' if info['openmp'] else 'OFF (serial build)'}", file=out)
    print(f"  threads (bp)        : {info['bp_num_threads']}  (omp_get_max_threads: {info['omp_max_threads']})", file=out)
    print(f"  gemm                : {info['gemm']}", file=out)
    print(f"  own-loop threshold  : m*n*k <= {info['small_gemm_threshold']}", file=out)
    for lib in info["blas"]:
        print(f"  BLAS                : {lib['library']} {lib['version']} ({lib['architecture']}, "
              f"{lib['threading_layer']}, {lib['num_threads']} threads) {lib['filepath']}", file=out)
