"""bpcore._bf16: C = alpha op(A) @ op(B) + beta C (+ bias, activation) in bfloat16 products.

The oracle is bp._reference.gemm_bf16: the float64 product of the bf16-rounded operands, so every
path (the AVX512-BF16 kernel where the CPU has it, and the sgemm fallback everywhere) must agree
with it to float32 summation (conftest.BF16_GEMM_RTOL), for every transpose, odd sizes and
tails of the 8 x 32 tile and of the K block, strided operands, non-default alpha and beta, a
pre-packed B, and 1 and 2 threads.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from bp import _reference as R
from bp._config import build_info
from bpcore import _bf16

from .conftest import assert_close_bf16

AVX512 = _bf16.cpu_path() == "avx512_bf16"
PATHS = ["fallback"] + (["avx512_bf16"] if AVX512 else [])

# (m, n, k): single entries, tails of the 8-row and 32-column tile on both sides, an odd k (a
# half-filled last pair) and k past the 1024-deep K block (a second, odd, block).
SHAPES = [(1, 1, 1), (7, 31, 33), (33, 7, 257), (31, 33, 7), (257, 33, 31), (9, 65, 1031),
          (1, 40, 50), (16, 64, 2)]


@pytest.fixture(params=PATHS)
def path(request):
    _bf16.set_path(request.param)
    yield request.param
    _bf16.set_path("auto")


def _bits(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def _special_values(rng):
    """Ties, denormals, NaN, infinities, the largest floats and random bit patterns."""
    bits = np.array([0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00800000, 0x7F7FFFFF,
                     0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7F800001, 0xFFC00001, 0x7FFFFFFF,
                     0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF, 0x80000000, 0],
                    dtype=np.uint32)
    random = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bits, random]).view(np.float32)


def test_reference_rounding_by_hand():
    # 1 + 2^-8 is halfway between bf16's 1 and 1 + 2^-7: the tie goes to the even one, 1;
    # 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6;
    # just above a tie rounds up; a denormal becomes a zero of its sign; the largest float
    # rounds up to infinity; a NaN stays a NaN.
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -1e-40, 3.4028235e38, np.nan],
                 dtype=np.float32)
    r = R.round_bf16(x)
    np.testing.assert_array_equal(r[:3], [1.0, 1 + 2**-6, 1 + 2**-7])
    assert r[3] == 0 and np.signbit(r[3])
    assert r[4] == np.inf and np.isnan(r[5])
    assert (_bits(r) & 0xFFFF).max() == 0  # always a bf16 value


def test_fallback_rounding_is_the_reference_bit_for_bit(rng):
    x = _special_values(rng)
    np.testing.assert_array_equal(_bits(_bf16._round_c(x)), _bits(R.round_bf16(x)))


@pytest.mark.skipif(not AVX512, reason="this CPU has no AVX512-BF16")
def test_hardware_rounding_is_the_reference_bit_for_bit(rng):
    # vcvtne2ps2bf16 is what the kernel packs with: the fallback and the oracle must match it,
    # denormals (flushed to signed zero) and NaN (quietened) included
    x = _special_values(rng)
    np.testing.assert_array_equal(_bits(_bf16._round_hw(x)), _bits(R.round_bf16(x)))


def _operands(rng, trans_a, trans_b, m, n, k):
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    C = rng.standard_normal((m, n)).astype(np.float32)
    return A, B, C


def _oracle(A, B, C, trans_a, trans_b, alpha, beta, bias=None, activation="identity"):
    opA, opB = (A.T if trans_a else A), (B.T if trans_b else B)
    desired = R.gemm_bf16(opA, opB, C, alpha, beta, bias, activation)
    magnitude = abs(alpha) * (np.abs(R.round_bf16(opA)).astype(np.float64)
                              @ np.abs(R.round_bf16(opB)).astype(np.float64))
    if beta != 0:  # (beta = 0: C may hold NaN, never read)
        magnitude = magnitude + abs(beta) * np.abs(C.astype(np.float64))
    if bias is not None:
        magnitude = magnitude + np.abs(bias)
    return desired, magnitude


@pytest.mark.parametrize("packed", [False, True], ids=["B", "packed B"])
@pytest.mark.parametrize("alpha, beta", [(2.5, -0.5), (1.0, 0.0)])
@pytest.mark.parametrize("trans_a", [False, True], ids=["A", "A.T"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["B", "B.T"])
@pytest.mark.parametrize("mnk", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_matches_the_oracle(rng, path, trans_a, trans_b, alpha, beta, packed, mnk):
    m, n, k = mnk
    A, B, C = _operands(rng, trans_a, trans_b, m, n, k)
    if beta == 0:
        C[...] = np.nan  # beta = 0 overwrites: C is never read
    desired, magnitude = _oracle(A, B, C, trans_a, trans_b, alpha, beta)
    A_before, B_before = A.copy(), B.copy()
    for n_threads in (1, 2):
        operand = _bf16.pack_weight(B, trans_b, n_threads) if packed else B
        out = C.copy()
        _bf16._gemm(trans_a, trans_b, alpha, A, operand, beta, out, n_threads=n_threads)
        assert_close_bf16(out, desired, magnitude, err_msg=f"{path}, {n_threads} threads")
    np.testing.assert_array_equal(A, A_before)
    np.testing.assert_array_equal(B, B_before)


@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize("packed", [False, True], ids=["B", "packed B"])
def test_fused_bias_and_activation(rng, path, activation, packed):
    # the epilogue runs once, after the last K block (k = 1500 spans two)
    m, n, k = 37, 70, 1500
    A, B, C = _operands(rng, False, False, m, n, k)
    bias = rng.standard_normal(n).astype(np.float32) * 10
    desired, magnitude = _oracle(A, B, C, False, False, 0.5, 2.0, bias, activation)
    out = C.copy()
    operand = _bf16.pack_weight(B) if packed else B
    _bf16._gemm(False, False, 0.5, A, operand, 2.0, out, bias, activation, n_threads=2)
    assert_close_bf16(out, desired, magnitude)
    if activation == "relu":
        assert (out == 0).any() and (out >= 0).all()


def test_strided_operands_use_their_leading_dimensions(rng, path):
    # A, B and C are views into larger arrays: row strides (lda, ldb, ldc) beyond their widths
    m, n, k = 19, 45, 70
    big_A = rng.standard_normal((2 * k, m + 5)).astype(np.float32)
    big_B = rng.standard_normal((n + 3, k + 9)).astype(np.float32)
    big_C = rng.standard_normal((2 * m, n + 11)).astype(np.float32)
    A, B, C = big_A[::2, 3:3 + m], big_B[2:2 + n, 5:5 + k], big_C[::2, 1:1 + n]
    assert not (A.flags.c_contiguous or B.flags.c_contiguous or C.flags.c_contiguous)
    desired, magnitude = _oracle(A, B, C, True, True, 2.5, -0.5)
    before = big_C.copy()
    _bf16._gemm(True, True, 2.5, A, B, -0.5, C, n_threads=2)
    assert_close_bf16(C, desired, magnitude)
    untouched = np.ones(big_C.shape, bool)
    untouched[::2, 1:1 + n] = False
    np.testing.assert_array_equal(big_C[untouched], before[untouched])


def test_read_only_operands(rng, path):
    A, B, C = _operands(rng, False, True, 20, 30, 40)
    A.flags.writeable = B.flags.writeable = False
    desired, magnitude = _oracle(A, B, C, False, True, 1.0, 0.0)
    _bf16._gemm(False, True, 1.0, A, B, 0.0, C)
    assert_close_bf16(C, desired, magnitude)


def test_empty_sum_scales_c_and_adds_the_bias(rng, path):
    C = rng.standard_normal((3, 4)).astype(np.float32)
    bias = np.arange(4, dtype=np.float32)
    out = C.copy()
    _bf16._gemm(False, False, 2.0, np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32),
                -0.5, out, bias)
    np.testing.assert_array_equal(out, np.float32(-0.5) * C + bias)


@pytest.mark.skipif(not AVX512, reason="this CPU has no AVX512-BF16")
@pytest.mark.parametrize("mnk", [(300, 200, 1100), (5, 700, 300)], ids=["split M", "split N"])
def test_avx512_results_are_bit_identical_for_any_thread_count(rng, mnk):
    # each C entry is summed by one thread in a fixed order (the thread grid splits C, never K)
    m, n, k = mnk
    A, B, C = _operands(rng, False, False, m, n, k)
    _bf16.set_path("avx512_bf16")
    try:
        outs = []
        for n_threads in (1, 2, 3):
            out = C.copy()
            _bf16._gemm(False, False, 2.5, A, B, -0.5, out, n_threads=n_threads)
            outs.append(out)
    finally:
        _bf16.set_path("auto")
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_packed_weight_keeps_its_path(rng):
    # a weight packed on one path is read in that path's format even if the active path changed
    A, B, C = _operands(rng, False, False, 10, 40, 30)
    desired, magnitude = _oracle(A, B, C, False, False, 1.0, 0.0)
    for first in PATHS:
        _bf16.set_path(first)
        packed = _bf16.pack_weight(B)
        _bf16.set_path("fallback" if first != "fallback" else PATHS[-1])
        out = C.copy()
        _bf16._gemm(False, False, 1.0, A, packed, 0.0, out)
        assert_close_bf16(out, desired, magnitude)
    _bf16.set_path("auto")


def test_the_path_is_reported_and_can_be_forced():
    assert _bf16.kernel_path() == _bf16.cpu_path()
    assert _bf16.kernel_path() in _bf16.PATH_NAMES.values()
    assert build_info()["bf16_gemm"] == _bf16.kernel_path()
    env = dict(os.environ, BP_BF16_PATH="fallback")
    out = subprocess.run([sys.executable, "-c",
                          "from bpcore import _bf16; print(_bf16.kernel_path())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("fallback (sgemm on bf16-rounded inputs: mixed_bfloat16 costs "
                                  "float32's time plus a rounding pass)")


# ---- bad input: checked before anything is written ---------------------------------------------

def _good(rng):
    return _operands(rng, False, False, 4, 5, 6)


@pytest.mark.parametrize("case, error, match", [
    ("A float64", TypeError, r"expected a 2-D float32 array. Received: A=float64"),
    ("B 1-D", TypeError, r"expected a 2-D float32 array. Received: B=float32 array of 1 dim"),
    ("C a list", TypeError, r"expected a 2-D float32 array. Received: C=list"),
    ("A wrong rows", ValueError, r"expected op\(A\) with 4 rows .* Received: A.shape=\(3, 6\)"),
    ("B wrong shape", ValueError, r"expected op\(B\) of shape \(6, 5\). Received: B.shape=\(6, 4\)"),
    ("packed wrong shape", ValueError, r"expected a packed op\(B\) of shape \(6, 5\). Received: PackedB"),
    ("C column-strided", ValueError, r"column stride 4 bytes\)\. Received: C.strides="),
    ("C read-only", ValueError, r"expected a writeable output array. Received: read-only C"),
    ("bias shape", ValueError, r"expected a float32 bias of shape \(5,\). Received: bias=float32 array of shape \(4,\)"),
    ("activation", ValueError, r"expected activation in .* Received: activation='tanh'"),
    ("threads", ValueError, r"expected a positive integer. Received: n_threads=0"),
])
def test_bad_input_is_refused_before_c_changes(rng, case, error, match):
    A, B, C = _good(rng)
    kwargs = {}
    if case == "A float64":
        A = A.astype(np.float64)
    elif case == "B 1-D":
        B = B.ravel()
    elif case == "C a list":
        C = C.tolist()
    elif case == "A wrong rows":
        A = A[:3]
    elif case == "B wrong shape":
        B = B[:, :4]
    elif case == "packed wrong shape":
        B = _bf16.pack_weight(B[:, :4])
    elif case == "C column-strided":
        C = np.zeros((4, 10), np.float32)[:, ::2]
    elif case == "C read-only":
        C.flags.writeable = False
    elif case == "bias shape":
        kwargs["bias"] = np.zeros(4, np.float32)
    elif case == "activation":
        kwargs["activation"] = "tanh"
    elif case == "threads":
        kwargs["n_threads"] = 0
    before = np.array(C, copy=True)
    with pytest.raises(error, match=match):
        _bf16._gemm(False, False, 1.0, A, B, 0.0, C, **kwargs)
    np.testing.assert_array_equal(np.asarray(C), before)


def test_bad_path_names_are_refused():
    with pytest.raises(ValueError, match=r"Received: path='amx'"):
        _bf16.set_path("amx")
    assert _bf16.kernel_path() == _bf16.cpu_path()
