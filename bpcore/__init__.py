"""bpcore: the compiled kernels of bp (Cython, typed memoryviews, nogil, OpenMP prange).

One module per step of training, in the order the mathematics runs:

    _dense_forward   z_in = z_out_prev @ W + b, z_out = sigma(z_in)
    _loss            L and per-sample losses
    _error_signal    delta[O] = grad L * tau'(f_in); delta[i] = (delta[i+1] @ W[i+1].T) * sigma'
    _gradients       grad_W = z_out_prev.T @ delta, grad_b = sum of delta over the batch
    _param_update    fused SGD / Adam / AdamW / RMSprop / Adagrad / Nadam steps on the flat
                     parameter vector

with _blas (gemm through scipy.linalg.cython_blas), _activations (sigma beside sigma') and
_openmp (guarded OpenMP helpers); _network runs a whole training step or epoch in one call and
_infer the whole forward pass of predict. The entry points here trust their arguments; bp.kernels is the
validated public face of the same functions.
"""

# Codes shared with the Cython enums in _activations.pxd and _loss.pxd (tests check they agree).
ACTIVATIONS = {
    "identity": 0,
    "sigmoid": 1,
    "tanh": 2,
    "relu": 3,
    "leaky_relu": 4,
    "gelu": 5,
    "softmax": 6,
    "elu": 7,
    "selu": 8,
    "silu": 9,
    "softplus": 10,
    "mish": 11,
    "hard_sigmoid": 12,
    "exponential": 13,
}
LOSSES = {"mse": 0, "binary_cross_entropy": 1, "cross_entropy": 2, "mae": 3, "huber": 4,
          "poisson": 5}


# Kernels with bodies for several instruction sets pick one at run time (never -march=native: one
# build runs on any x86-64 CPU). Each such module registers, when it is imported, which body this
# CPU runs: {kernel: path}. bp.show_config() prints them. _cpu registers the activation rows'.
KERNEL_PATHS = {}


def register_kernel_path(kernel, path):
    """Record which instruction-set path `kernel` takes on this CPU (a short description)."""
    KERNEL_PATHS[str(kernel)] = str(path)
