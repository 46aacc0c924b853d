"""The kernels and their NumPy twins expose the same functions with the same parameters, and the
name -> code tables in bpcore agree with the Cython enums (thinc's test_ops checks the first)."""

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import bpcore
from bp import _reference as R
from bp import kernels as K
from bpcore import _dense_forward, _loss

from .conftest import assert_close

# check_loss_pair is validation, not a computation: it has no twin.
KERNELS = [name for name in K.__all__ if callable(getattr(K, name)) and name != "check_loss_pair"]


def test_kernel_list():
    assert set(KERNELS) == {"dense_forward", "output_delta", "hidden_delta", "gradients",
                            "loss_value", "sgd_update", "adam_update", "rmsprop_update",
                            "adagrad_update", "nadam_update", "sum_of_squares"}


@pytest.mark.parametrize("name", KERNELS)
def test_same_signature_as_reference(name):
    assert hasattr(R, name), f"bp._reference has no twin for bp.kernels.{name}"
    kernel = inspect.signature(getattr(K, name))
    twin = inspect.signature(getattr(R, name))
    # names, order, kind (positional or keyword-only) and defaults
    assert [(p.name, p.kind, p.default) for p in kernel.parameters.values()] == \
           [(p.name, p.kind, p.default) for p in twin.parameters.values()]


def _cython_enum(pxd):
    """{name: code} of the first `cdef enum:` block of a bpcore .pxd file, read from its source."""
    text = (Path(bpcore.__file__).parent / pxd).read_text()
    block = text[text.index("cdef enum:"):].split("\n\n")[0]
    return {name.lower(): int(code) for name, code in re.findall(r"^\s+(\w+) = (\d+)$", block, re.M)}


def test_public_tables():
    # the Python name -> code tables are written separately from the Cython enums: compare them
    # with the enums' source (test_*_code_matches_cython_enum below checks what the codes compute)
    assert bpcore.ACTIVATIONS == _cython_enum("_activations.pxd")
    assert bpcore.LOSSES == _cython_enum("_loss.pxd")
    # the public lists are those tables, in code order, and the NumPy twin knows every name
    assert list(K.ACTIVATIONS) == sorted(bpcore.ACTIVATIONS, key=bpcore.ACTIVATIONS.get)
    assert list(K.LOSSES) == sorted(bpcore.LOSSES, key=bpcore.LOSSES.get)
    z = np.linspace(-2, 2, 6).reshape(2, 3)
    for name in K.ACTIVATIONS:
        assert R.sigma(name, z).shape == z.shape
    with pytest.raises(ValueError):
        R.sigma("swish", z)


@pytest.mark.parametrize("name", list(bpcore.ACTIVATIONS))
def test_activation_code_matches_cython_enum(rng, name):
    # Call the compiled entry point with the raw code: if the Python table and the Cython enum
    # disagreed, the kernel would compute some other activation than the reference of that name.
    z_out_prev = rng.standard_normal((5, 4))
    W = rng.standard_normal((4, 6))
    b = rng.standard_normal(6)
    z_in, z_out = np.empty((5, 6)), np.empty((5, 6))
    _dense_forward.dense_forward(z_out_prev, W, b, z_in, z_out, bpcore.ACTIVATIONS[name], 0.2, 1)
    assert_close(z_out, R.sigma(name, z_out_prev @ W + b, 0.2), np.float64, k=4)


@pytest.mark.parametrize("name", list(bpcore.LOSSES))
def test_loss_code_matches_cython_enum(rng, name):
    f_in = rng.standard_normal((5, 3))
    f_out = R.sigma("softmax" if name == "cross_entropy" else "sigmoid", f_in)
    y = rng.dirichlet(np.ones(3), 5)
    per = np.empty(5)
    _loss.loss_value(f_in, f_out, y, None, bpcore.LOSSES[name], 1.0, per, 1)
    assert_close(per, R.per_sample_loss(name, f_in, f_out, y), np.float64)
