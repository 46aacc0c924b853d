"""The vectorised tanh in bpcore/_activations.pxd against an accurate reference, in ulps.

Its documented bound (measured): 1.30 ulp in float32, 1.45 ulp in float64. The test allows 2."""

import numpy as np
import pytest

from bp import kernels as K


def _tanh_via_kernel(x, dtype):
    # z_in = x @ I is x exactly (each entry is x * 1 plus exact zeros), then z_out = tanh(z_in)
    width = 256
    X = x.astype(dtype).reshape(-1, width)
    _, z_out = K.dense_forward(X, np.eye(width, dtype=dtype), np.zeros(width, dtype), "tanh",
                               n_threads=1)
    return X.ravel(), z_out.ravel()


def _ulp_error(got, exact, dtype):
    rounded = exact.astype(dtype)
    ulp = np.spacing(np.abs(rounded)).astype(exact.dtype)
    return np.abs(got.astype(exact.dtype) - exact) / ulp


@pytest.mark.parametrize("dtype,ref_dtype", [("float32", np.float64), ("float64", np.longdouble)])
@pytest.mark.parametrize("scale", [0.7, 3.0, 25.0])
def test_tanh_within_two_ulps(dtype, ref_dtype, scale):
    if dtype == "float64" and np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps:
        pytest.skip("no extended precision to check float64 tanh against")
    rng = np.random.default_rng(0)
    x = rng.uniform(-scale, scale, 256 * 2048)
    x[:6] = [0.0, -0.0, 0.625, -0.625, 1e-30, 0.62499999]
    xs, got = _tanh_via_kernel(x, dtype)
    exact = np.tanh(xs.astype(ref_dtype))
    err = _ulp_error(got, exact, dtype)
    assert err.max() <= 2.0, (err.max(), xs[np.argmax(err)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tanh_special_values(dtype):
    # one value per call through a 1x1 unit weight (x * 1 is x; a wider identity would turn inf
    # into nan through inf * 0)
    import bpcore
    from bpcore import _dense_forward

    big = np.finfo(dtype).max
    values = [np.inf, -np.inf, big, -big, np.nan, 0.0]
    expected = [1.0, -1.0, 1.0, -1.0, np.nan, 0.0]
    for x, want in zip(values, expected):
        z_in, z_out = np.empty((1, 1), dtype), np.empty((1, 1), dtype)
        _dense_forward.dense_forward(np.full((1, 1), x, dtype), np.ones((1, 1), dtype), None,
                                     z_in, z_out, bpcore.ACTIVATIONS["tanh"], 0.0, 1)
        np.testing.assert_equal(z_out[0, 0], np.asarray(want, dtype))
