"""Bad input to bp.kernels: a ValueError or TypeError whose message names what was expected and
what was received, raised before any kernel runs, so every buffer passed in is left untouched."""

import re

import numpy as np
import pytest

from bp import kernels as K

F64, F32 = np.float64, np.float32
N, N_IN, N_OUT = 4, 3, 2


def arr(shape, dtype=F64, fill=None):
    a = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) / 7 - 0.3
    if fill is not None:
        a[...] = fill
    return a.astype(dtype)


def with_nan(a, idx, value=np.nan):
    a = a.copy()
    a[idx] = value
    return a


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def sentinel(shape, dtype=F64):
    """An output buffer with a recognisable content: any write shows."""
    return arr(shape, dtype, fill=-123.0)


# Each case builds fresh arguments and returns (call, buffers). `buffers` are every array passed in
# (outputs and inputs): after the rejected call each must hold exactly what it held before.

def forward(x=None, W=None, b=None, activation="tanh", alpha=0.01, z_in=None, z_out=None,
            n_threads=None):
    x = arr((N, N_IN)) if x is None else x
    W = arr((N_IN, N_OUT)) if W is None else W
    b = arr((N_OUT,)) if b is None else b
    z_in = sentinel((N, N_OUT)) if z_in is None else z_in
    z_out = sentinel((N, N_OUT)) if z_out is None else z_out
    def call():
        return K.dense_forward(x, W, b, activation, alpha, z_in=z_in, z_out=z_out,
                                       n_threads=n_threads)
    return call, [x, W, b, z_in, z_out]


def out_delta(f_in=None, f_out=None, y=None, loss="mse", tau="sigmoid", alpha=0.01,
              sample_weight=None, scale=None, out=None, n_threads=None):
    f_in = arr((N, 3)) if f_in is None else f_in
    f_out = arr((N, 3)) if f_out is None else f_out
    y = arr((N, 3)) if y is None else y
    out = sentinel((N, 3)) if out is None else out
    def call():
        return K.output_delta(f_in, f_out, y, loss, tau, alpha, sample_weight, scale, out=out,
                                      n_threads=n_threads)
    return call, [f_in, f_out, y, out] + ([] if sample_weight is None else [sample_weight])


MISSING = "missing"  # passed as None


def hid_delta(delta_next=None, W_next=None, z_in=None, z_out=None, activation="gelu", alpha=0.01,
              out=None):
    delta_next = arr((N, 3)) if delta_next is None else delta_next
    W_next = arr((5, 3)) if W_next is None else W_next
    z_in = arr((N, 5)) if z_in is None else None if z_in is MISSING else z_in
    z_out = arr((N, 5)) if z_out is None else z_out
    out = sentinel((N, 5)) if out is None else out
    def call():
        return K.hidden_delta(delta_next, W_next, z_in, z_out, activation, alpha, out=out)
    return call, [delta_next, W_next, out] + [a for a in (z_in, z_out) if isinstance(a, np.ndarray)]


def grads(x=None, delta=None, beta=0.0, grad_W=None, grad_b=None, use_bias=True, missing=()):
    x = arr((N, N_IN)) if x is None else x
    delta = arr((N, N_OUT)) if delta is None else delta
    grad_W = sentinel((N_IN, N_OUT)) if grad_W is None and "grad_W" not in missing else grad_W
    grad_b = sentinel((N_OUT,)) if grad_b is None and "grad_b" not in missing else grad_b
    def call():
        return K.gradients(x, delta, beta, grad_W, grad_b, use_bias)
    return call, [a for a in (x, delta, grad_W, grad_b) if a is not None]


def loss(f_in=None, f_out=None, y=None, name="mse", sample_weight=None, scale=None,
         per_sample=None):
    f_in = arr((N, 3)) if f_in is None else f_in
    f_out = arr((N, 3)) if f_out is None else f_out
    y = arr((N, 3)) if y is None else y
    per_sample = sentinel((N,)) if per_sample is None else per_sample
    def call():
        return K.loss_value(f_in, f_out, y, name, sample_weight, scale, per_sample=per_sample)
    return call, [f_in, f_out, y, per_sample]


def sgd(param=None, grad=None, velocity=None, **kw):
    param = arr((3, 2)) if param is None else param
    grad = arr((3, 2)) if grad is None else grad
    velocity = sentinel((3, 2)) if velocity is None else velocity
    kw.setdefault("momentum", 0.9)
    if isinstance(velocity, str):  # "none": no velocity passed
        velocity = None
    def call():
        return K.sgd_update(param, grad, velocity, **kw)
    return call, [a for a in (param, grad, velocity) if isinstance(a, np.ndarray)]


def adam(param=None, grad=None, m=None, v=None, step=3, **kw):
    param = arr((3, 2)) if param is None else param
    grad = arr((3, 2)) if grad is None else grad
    m = sentinel((3, 2)) if m is None else m
    v = arr((3, 2), fill=0.5) if v is None else v
    def call():
        return K.adam_update(param, grad, m, v, step, **kw)
    return call, [a for a in (param, grad, m, v) if isinstance(a, np.ndarray)]


def e(text):
    return re.escape(text)


VALID_ACTS = e(", ".join(repr(a) for a in K.ACTIVATIONS))

CASES = {
    # ---- dense_forward: shapes
    "forward: x has the wrong n_in": (
        lambda: forward(x=arr((N, 5))), ValueError,
        e("z_out_prev must have shape (*, 3). Received: z_out_prev with shape (4, 5)")),
    "forward: x is 1-D": (
        lambda: forward(x=arr((N_IN,))), ValueError,
        e("z_out_prev must be 2-D. Received: z_out_prev with shape (3,)")),
    "forward: W is 3-D": (
        lambda: forward(W=arr((N_IN, N_OUT, 1))), ValueError,
        e("W must be 2-D. Received: W with shape (3, 2, 1)")),
    "forward: b has the wrong length": (
        lambda: forward(b=arr((3,))), ValueError,
        e("b must have shape (2,). Received: b with shape (3,)")),
    # ---- dtypes
    "forward: x float32, W float64": (
        lambda: forward(x=arr((N, N_IN), F32)), TypeError,
        e("z_out_prev must have the same dtype as the other inputs (float64). Received: "
          "z_out_prev with dtype float32")),
    "forward: b float32, W float64": (
        lambda: forward(b=arr((N_OUT,), F32)), TypeError,
        e("b must have the same dtype as the other inputs (float64). Received: b with dtype "
          "float32")),
    "forward: integer W": (
        lambda: forward(W=np.ones((N_IN, N_OUT), np.int64)), TypeError,
        e("W must be float32 or float64. Received: W with dtype int64")),
    "forward: boolean x": (
        lambda: forward(x=np.ones((N, N_IN), bool)), TypeError,
        e("z_out_prev must be float32 or float64. Received: z_out_prev with dtype bool")),
    "forward: complex W": (
        lambda: forward(W=np.ones((N_IN, N_OUT), complex)), TypeError,
        e("W must be float32 or float64. Received: W with dtype complex128")),
    "forward: float16 W": (
        lambda: forward(W=np.ones((N_IN, N_OUT), np.float16)), TypeError,
        e("W must be float32 or float64. Received: W with dtype float16")),
    # ---- non-finite values
    "forward: NaN in x": (
        lambda: forward(x=with_nan(arr((N, N_IN)), (1, 2))), ValueError,
        e("z_out_prev must contain only finite values. Received: nan at row, column (1, 2)")),
    "forward: inf in W": (
        lambda: forward(W=with_nan(arr((N_IN, N_OUT)), (2, 0), np.inf)), ValueError,
        e("W must contain only finite values. Received: inf at row, column (2, 0)")),
    "forward: -inf in b": (
        lambda: forward(b=with_nan(arr((N_OUT,)), 1, -np.inf)), ValueError,
        e("b must contain only finite values. Received: -inf at index (1)")),
    # ---- output buffers
    "forward: z_in of the wrong dtype": (
        lambda: forward(z_in=sentinel((N, N_OUT), F32)), TypeError,
        e("z_in must have dtype float64. Received: z_in with dtype float32")),
    "forward: z_out of the wrong shape": (
        lambda: forward(z_out=sentinel((N, 3))), ValueError,
        e("z_out must have shape (4, 2). Received: z_out with shape (4, 3)")),
    "forward: z_out not C-contiguous": (
        lambda: forward(z_out=np.asfortranarray(sentinel((N, N_OUT)))), ValueError,
        e("z_out must be C-contiguous (it is written in place). Received: a non-contiguous "
          "array with strides (8, 32)")),
    "forward: z_in read-only": (
        lambda: forward(z_in=read_only(sentinel((N, N_OUT)))), ValueError,
        e("z_in must be writeable (it is written in place). Received: a read-only array")),
    "forward: z_out a list": (
        lambda: forward(z_out=[[0.0] * N_OUT] * N), TypeError,
        e("z_out must be a numpy.ndarray. Received: list")),
    # ---- names and scalars
    "forward: unknown activation": (
        lambda: forward(activation="swishy"), ValueError,
        e("Unknown activation 'swishy'. Valid values: ") + VALID_ACTS),
    "forward: alpha < 0": (
        lambda: forward(activation="leaky_relu", alpha=-0.1), ValueError,
        e("alpha must be a finite number in [0.0, inf). Received: alpha=-0.1")),
    "forward: alpha NaN": (
        lambda: forward(alpha=float("nan")), ValueError,
        e("alpha must be a finite number in [0.0, inf). Received: alpha=nan")),
    "forward: alpha a string": (
        lambda: forward(alpha="0.1"), TypeError,
        e("alpha must be a real number. Received: alpha='0.1'")),
    "forward: n_threads=0": (
        lambda: forward(n_threads=0), ValueError,
        r"n_threads == 0 is invalid: expected None, -1 \(all cores\) or a nonzero int\. "
        r"Received: n_threads=0"),
    "forward: n_threads a float": (
        lambda: forward(n_threads=2.0), TypeError,
        e("n_threads must be None or an int, got float: 2.0")),

    # ---- output_delta
    "output_delta: invalid pair": (
        lambda: out_delta(loss="cross_entropy", tau="sigmoid"), ValueError,
        e("loss 'cross_entropy' needs an output activation in ('softmax', 'identity'). Received: output "
          "activation 'sigmoid'")),
    "output_delta: binary cross-entropy after identity": (
        lambda: out_delta(loss="binary_cross_entropy", tau="identity"), ValueError,
        e("loss 'binary_cross_entropy' needs an output activation in ('sigmoid'). Received: "
          "output activation 'identity'")),
    "output_delta: unknown loss": (
        lambda: out_delta(loss="hinge"), ValueError,
        e("Unknown loss 'hinge'. Valid values: 'mse', 'binary_cross_entropy', 'cross_entropy', 'mae', 'huber', 'poisson'")),
    "output_delta: unknown output activation": (
        lambda: out_delta(tau="Sigmoid"), ValueError,
        e("Unknown output activation 'Sigmoid'. Valid values: ") + VALID_ACTS),
    "output_delta: y of another shape": (
        lambda: out_delta(y=arr((N, 2))), ValueError,
        e("y must have shape (4, 3). Received: y with shape (4, 2)")),
    "output_delta: f_in float32": (
        lambda: out_delta(f_in=arr((N, 3), F32)), TypeError,
        e("f_in must have the same dtype as the other inputs (float64). Received: f_in with "
          "dtype float32")),
    "output_delta: NaN in y": (
        lambda: out_delta(y=with_nan(arr((N, 3)), (3, 0))), ValueError,
        e("y must contain only finite values. Received: nan at row, column (3, 0)")),
    "output_delta: sample_weight of the wrong length": (
        lambda: out_delta(sample_weight=arr((N + 1,))), ValueError,
        e("sample_weight must have shape (4,). Received: sample_weight with shape (5,)")),
    "output_delta: sample_weight 2-D": (
        lambda: out_delta(sample_weight=arr((N, 1))), ValueError,
        e("sample_weight must be 1-D. Received: sample_weight with shape (4, 1)")),
    "output_delta: inf in sample_weight": (
        lambda: out_delta(sample_weight=with_nan(arr((N,)), 2, np.inf)), ValueError,
        e("sample_weight must contain only finite values. Received: inf at index (2)")),
    "output_delta: scale inf": (
        lambda: out_delta(scale=float("inf")), ValueError,
        e("scale must be a finite number in (-inf, inf). Received: scale=inf")),
    "output_delta: out float32": (
        lambda: out_delta(out=sentinel((N, 3), F32)), TypeError,
        e("out must have dtype float64. Received: out with dtype float32")),
    "output_delta: out a strided view": (
        lambda: out_delta(out=sentinel((N, 6))[:, ::2]), ValueError,
        e("out must be C-contiguous (it is written in place). Received: a non-contiguous array "
          "with strides (48, 16)")),

    # ---- hidden_delta
    "hidden_delta: delta_next does not match W_next": (
        lambda: hid_delta(delta_next=arr((N, 4))), ValueError,
        e("delta_next must have shape (*, 3). Received: delta_next with shape (4, 4)")),
    "hidden_delta: z_out of another shape": (
        lambda: hid_delta(z_out=arr((N, 4))), ValueError,
        e("z_out must have shape (4, 5). Received: z_out with shape (4, 4)")),
    "hidden_delta: z_in None": (
        lambda: hid_delta(z_in=MISSING), TypeError,
        e("z_in must be float32 or float64. Received: z_in with dtype object")),
    "hidden_delta: NaN in W_next": (
        lambda: hid_delta(W_next=with_nan(arr((5, 3)), (4, 2))), ValueError,
        e("W_next must contain only finite values. Received: nan at row, column (4, 2)")),
    "hidden_delta: out read-only": (
        lambda: hid_delta(out=read_only(sentinel((N, 5)))), ValueError,
        e("out must be writeable (it is written in place). Received: a read-only array")),
    "hidden_delta: leaky_relu alpha < 0": (
        lambda: hid_delta(activation="leaky_relu", alpha=-1), ValueError,
        e("alpha must be a finite number in [0.0, inf). Received: alpha=-1")),

    # ---- gradients
    "gradients: batch sizes differ": (
        lambda: grads(x=arr((N + 1, N_IN))), ValueError,
        e("z_out_prev must have shape (4, *). Received: z_out_prev with shape (5, 3)")),
    "gradients: delta float32": (
        lambda: grads(delta=arr((N, N_OUT), F32)), TypeError,
        e("z_out_prev must have the same dtype as the other inputs (float32). Received: "
          "z_out_prev with dtype float64")),
    "gradients: grad_W of the wrong shape": (
        lambda: grads(grad_W=sentinel((N_OUT, N_IN))), ValueError,
        e("grad_W must have shape (3, 2). Received: grad_W with shape (2, 3)")),
    "gradients: grad_b of the wrong dtype (grad_W valid)": (
        lambda: grads(grad_b=sentinel((N_OUT,), F32)), TypeError,
        e("grad_b must have dtype float64. Received: grad_b with dtype float32")),
    "gradients: beta=1 without grad_W": (
        lambda: grads(beta=1.0, missing=("grad_W",)), ValueError,
        e("beta=1.0 accumulates into grad_W, so grad_W must be given. Received: grad_W=None")),
    "gradients: beta=1 without grad_b": (
        lambda: grads(beta=1.0, missing=("grad_b",)), ValueError,
        e("beta=1.0 accumulates into grad_b, so grad_b must be given. Received: grad_b=None")),
    "gradients: beta=1 into a NaN grad_W": (
        lambda: grads(beta=1.0, grad_W=with_nan(sentinel((N_IN, N_OUT)), (0, 1))), ValueError,
        e("grad_W must contain only finite values. Received: nan at row, column (0, 1)")),
    "gradients: beta NaN": (
        lambda: grads(beta=float("nan")), ValueError,
        e("beta must be a finite number in (-inf, inf). Received: beta=nan")),
    "gradients: NaN in delta": (
        lambda: grads(delta=with_nan(arr((N, N_OUT)), (0, 0))), ValueError,
        e("delta must contain only finite values. Received: nan at row, column (0, 0)")),

    # ---- loss_value
    "loss_value: unknown loss": (
        lambda: loss(name="MSE"), ValueError,
        e("Unknown loss 'MSE'. Valid values: 'mse', 'binary_cross_entropy', 'cross_entropy', 'mae', 'huber', 'poisson'")),
    "loss_value: per_sample of the wrong shape": (
        lambda: loss(per_sample=sentinel((N, 1))), ValueError,
        e("per_sample must have shape (4,). Received: per_sample with shape (4, 1)")),
    "loss_value: f_out integer": (
        lambda: loss(f_out=np.zeros((N, 3), np.int32)), TypeError,
        e("f_out must be float32 or float64. Received: f_out with dtype int32")),
    "loss_value: inf in f_in": (
        lambda: loss(f_in=with_nan(arr((N, 3)), (2, 2), np.inf)), ValueError,
        e("f_in must contain only finite values. Received: inf at row, column (2, 2)")),

    # ---- sgd_update
    "sgd: integer param": (
        lambda: sgd(param=np.ones((3, 2), np.int64)), TypeError,
        e("param must be a float32 or float64 numpy.ndarray (updated in place). Received: int64")),
    "sgd: param a list": (
        lambda: sgd(param=[1.0, 2.0]), TypeError,
        e("param must be a float32 or float64 numpy.ndarray (updated in place). Received: list")),
    "sgd: param read-only": (
        lambda: sgd(param=read_only(arr((3, 2)))), ValueError,
        e("param must be writeable (it is written in place). Received: a read-only array")),
    "sgd: param a strided view": (
        lambda: sgd(param=arr((3, 4))[:, ::2]), ValueError,
        e("param must be C-contiguous (it is written in place). Received: a non-contiguous "
          "array with strides (32, 16)")),
    "sgd: grad of another shape": (
        lambda: sgd(grad=arr((2, 3))), ValueError,
        e("grad must have shape (3, 2). Received: grad with shape (2, 3)")),
    "sgd: grad float32": (
        lambda: sgd(grad=arr((3, 2), F32)), TypeError,
        e("grad must have the same dtype as the other inputs (float64). Received: grad with "
          "dtype float32")),
    "sgd: NaN in grad": (
        lambda: sgd(grad=with_nan(arr((3, 2)), (1, 1))), ValueError,
        e("grad must contain only finite values. Received: nan at row, column (1, 1)")),
    "sgd: learning_rate 0": (
        lambda: sgd(learning_rate=0), ValueError,
        e("learning_rate must be a finite number in (0.0, inf). Received: learning_rate=0")),
    "sgd: momentum < 0": (
        lambda: sgd(momentum=-0.5), ValueError,
        e("momentum must be a finite number in [0.0, inf). Received: momentum=-0.5")),
    "sgd: nesterov without momentum": (
        lambda: sgd(momentum=0.0, nesterov=True), ValueError,
        e("nesterov=True needs a momentum > 0. Received: momentum=0")),
    "sgd: momentum without velocity": (
        lambda: sgd(velocity="none"), ValueError,
        e("momentum=0.9 needs a velocity buffer. Received: velocity=None")),
    "sgd: velocity of the wrong size": (
        lambda: sgd(velocity=sentinel((7,))), ValueError,
        e("velocity must have 6 elements like param. Received: velocity with shape (7,)")),
    "sgd: velocity float32": (
        lambda: sgd(velocity=sentinel((3, 2), F32)), TypeError,
        e("velocity must have dtype float64. Received: velocity with dtype float32")),
    "sgd: n_threads=0": (
        lambda: sgd(n_threads=0), ValueError, r"n_threads == 0 is invalid.*Received: n_threads=0"),

    # ---- adam_update
    "adam: step 0": (
        lambda: adam(step=0), ValueError, e("step must be an integer >= 1. Received: step=0")),
    "adam: step a float": (
        lambda: adam(step=1.5), ValueError, e("step must be an integer >= 1. Received: step=1.5")),
    "adam: step True": (
        lambda: adam(step=True), ValueError, e("step must be an integer >= 1. Received: step=True")),
    "adam: beta1 = 1": (
        lambda: adam(beta1=1.0), ValueError,
        e("beta1 must be a finite number in [0.0, 1.0). Received: beta1=1.0")),
    "adam: eps 0": (
        lambda: adam(eps=0.0), ValueError,
        e("eps must be a finite number in (0.0, inf). Received: eps=0.0")),
    "adam: m float32": (
        lambda: adam(m=sentinel((3, 2), F32)), TypeError,
        e("m must have dtype float64. Received: m with dtype float32")),
    "adam: v of the wrong size": (
        lambda: adam(v=arr((2, 2), fill=0.5)), ValueError,
        e("v must have 6 elements like param. Received: v with shape (2, 2)")),
    "adam: weight_decay < 0": (
        lambda: adam(weight_decay=-1e-3), ValueError,
        e("weight_decay must be a finite number in [0.0, inf). Received: weight_decay=-0.001")),
}


@pytest.mark.parametrize("name", CASES)
def test_rejected_and_untouched(name):
    build, exc, pattern = CASES[name]
    call, buffers = build()
    before = [b.copy() for b in buffers]
    with pytest.raises(exc, match=pattern):
        call()
    for b, c in zip(buffers, before):
        np.testing.assert_array_equal(b, c, err_msg=f"{name}: a buffer was written")


def test_cases_call_valid_baselines():
    # Each builder with no changes is a valid call: the cases above differ from a working call by
    # exactly the one thing they name.
    for build in (forward, out_delta, hid_delta, grads, loss, sgd, adam):
        call, buffers = build()
        outputs = [b for b in buffers if (b == -123.0).all()]  # the sentinels: outputs, or state
        assert outputs, build.__name__
        call()
        for b in outputs:  # each was written, with finite values
            assert np.isfinite(b).all() and not (b == -123.0).any(), build.__name__


@pytest.mark.parametrize("bad", [[1, 2], "x", None])
def test_sum_of_squares_rejects_non_floats(bad):
    with pytest.raises(TypeError, match=r"x must be float32 or float64\. Received: x with dtype"):
        K.sum_of_squares(bad)


def test_sum_of_squares_rejects_nan():
    with pytest.raises(ValueError, match=e("x must contain only finite values. Received: nan at "
                                           "index (1)")):
        K.sum_of_squares(np.array([1.0, np.nan]))


# ---- outputs laid over inputs: the kernels would read half-written values ------------------------


def _overlap_cases():
    x = arr((N, N))  # square, so that a buffer of x's shape is a valid z_in / z_out / out
    W = arr((N, N))
    z_in = arr((N, N))
    z_out = np.tanh(z_in)
    flat = arr((12,))
    return {
        "forward: z_out over z_out_prev": (
            lambda: K.dense_forward(x, W, None, "tanh", z_out=x), [x, W], "z_out", "z_out_prev"),
        "forward: z_in over W": (
            lambda: K.dense_forward(x, W, None, "tanh", z_in=W), [x, W], "z_in", "W"),
        "forward: z_out half over z_in": (
            lambda: K.dense_forward(x[:2], W, None, "tanh", z_in=flat[:8].reshape(2, 4),
                                    z_out=flat[4:].reshape(2, 4)), [x, W, flat], "z_out", "z_in"),
        "hidden_delta: out over z_out": (
            lambda: K.hidden_delta(x, W, z_in, z_out, "tanh", out=z_out), [x, W, z_in, z_out],
            "out", "z_out"),
        "hidden_delta: out over delta_next": (
            lambda: K.hidden_delta(x, W, z_in, z_out, "tanh", out=x), [x, W, z_in, z_out],
            "out", "delta_next"),
        "output_delta: out over f_out": (
            lambda: K.output_delta(z_in, z_out, x, "mse", "tanh", out=z_out), [x, z_in, z_out],
            "out", "f_out"),
        "gradients: grad_W over delta": (
            lambda: K.gradients(x, W, 0.0, W, np.zeros(N)), [x, W], "grad_W", "delta"),
        "loss_value: per_sample over y": (
            lambda: K.loss_value(z_in[:3], z_out[:3], flat.reshape(3, 4), "mse",
                                 per_sample=flat[9:]), [z_in, z_out, flat], "per_sample", "y"),
        "sgd: velocity is param": (
            lambda: K.sgd_update(flat, x.ravel()[:12], flat, momentum=0.9), [flat, x],
            "velocity", "param"),
        "adam: v over m": (
            lambda: K.adam_update(flat[:4], x.ravel()[:4], flat[4:8], flat[6:10], 1),
            [flat, x], "m", "v"),
    }


@pytest.mark.parametrize("name", list(_overlap_cases()))
def test_output_over_input_rejected(name):
    call, buffers, out_name, in_name = _overlap_cases()[name]
    before = [b.copy() for b in buffers]
    with pytest.raises(ValueError, match=e(f"{out_name} must not share memory with {in_name} (it "
                                           f"is written while {in_name} is read). Received: "
                                           f"{out_name} overlapping {in_name}")):
        call()
    for b, c in zip(buffers, before):
        np.testing.assert_array_equal(b, c)


def test_z_in_and_z_out_may_be_one_buffer():
    # z_out = sigma(z_in) overwrites z_in in place: the buffer ends holding z_out
    x, W = arr((N, N_IN)), arr((N_IN, N_OUT))
    expected = np.tanh(x @ W)
    for z_out_view in (lambda buf: buf, lambda buf: buf[:]):
        buf = sentinel((N, N_OUT))
        z_in, z_out = K.dense_forward(x, W, None, "tanh", z_in=buf, z_out=z_out_view(buf))
        np.testing.assert_allclose(buf, expected, rtol=1e-12, atol=1e-15)
        assert np.shares_memory(z_out, buf)
