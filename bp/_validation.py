"""Input checks shared by bp's public functions.

Every check runs before any kernel or any state change, so a rejected call leaves outputs, weights
and optimizer state exactly as they were. Messages name what was expected and what was received.
"""

import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype):
    """np.dtype for 'float32'/'float64' (or the numpy types); anything else is an error."""
    # `dt in FLOAT_DTYPES` alone is not enough: numpy compares None equal to float64, and
    # np.dtype(None) is float64, so both an unknown name and None would pass as float64.
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64. Received: dtype={dtype!r}")
    return dt


def _kind_error(name, arr):
    return TypeError(
        f"{name} must be an array of real numbers (float32 or float64; integers are cast). "
        f"Received: {name} with dtype {arr.dtype}"
    )


def as_float_array(name, x, dtype, ndim=None, cast_ints=True):
    """np.asarray(x) as a C-contiguous array of `dtype`.

    Integers (and, with cast_ints, floats of the other precision) are cast; booleans, complex,
    strings and objects are rejected. Fortran-ordered, strided and read-only inputs are accepted
    (copied to C order where needed). `ndim` may be an int or a tuple of allowed ints.
    """
    if hasattr(x, "nnz") and hasattr(x, "toarray"):  # scipy.sparse
        raise TypeError(f"{name} must be a dense array; bp.Sequential does not take sparse "
                        f"matrices (bp.sklearn's estimators do). Received: a scipy.sparse "
                        f"{type(x).__name__} of shape {x.shape} (call {name}.toarray())")
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):  # pandas-like
        x = _pandas_to_numpy(x)
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be read as an array: {exc}") from None
    if arr.dtype.kind in "biu":
        if arr.dtype.kind == "b":
            raise _kind_error(name, arr)
        if not cast_ints:
            raise _kind_error(name, arr)
    elif arr.dtype.kind != "f":
        raise _kind_error(name, arr)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}. Received: {name} with shape {arr.shape}")
    try:
        with np.errstate(over="raise"):  # costs nothing unless a value overflows the cast
            return np.ascontiguousarray(arr, dtype=dtype)
    except FloatingPointError:
        big = np.isfinite(arr) & (np.abs(arr) > np.finfo(dtype).max)
        bad = np.argwhere(big)[0] if arr.ndim else ()
        where = ", ".join(str(int(i)) for i in bad)
        label = {1: "index", 2: "row, column"}.get(arr.ndim, "index")
        raise ValueError(
            f"{name} must fit in {np.dtype(dtype).name} (largest {np.finfo(dtype).max:.4g}). "
            f"Received: {arr[tuple(bad)]} at {label} ({where})") from None


def _pandas_to_numpy(x):
    """A pandas object as an array: its nullable numeric columns (Float64, Int64: object arrays
    through a plain to_numpy) as floats with NaN for <NA>, which is then reported by position;
    any other object column stays object and is refused."""
    arr = np.asarray(x.to_numpy())
    if arr.dtype != object:
        return arr
    dtypes = (list(getattr(x, "dtypes", [])) if hasattr(x, "columns")
              else [getattr(x, "dtype", None)])
    if dtypes and all(getattr(d, "kind", "O") in "fiu" for d in dtypes):
        return x.to_numpy(dtype=np.float64, na_value=np.nan)
    return arr


def column_names(X):
    """A DataFrame's column names (all strings) as a list, else None (as scikit-learn's
    feature_names_in_)."""
    columns = getattr(X, "columns", None)
    if columns is None or isinstance(X, np.ndarray):
        return None
    names = list(columns)
    return names if names and all(isinstance(c, str) for c in names) else None


def check_column_names(expected, X, name="X"):
    """ValueError if X is a DataFrame whose column names differ from those the model was
    fitted on (same names in another order included: the columns would be used by position)."""
    names = column_names(X)
    if expected is None or names is None or names == expected:
        return
    raise ValueError(f"{name}'s columns must be the ones the model was fitted on, in that order: "
                     f"{expected}. Received: {names} (reorder with {name}[{expected!r}])")


def check_kernel_input(name, x, dtype=None, ndim=2, shape=None):
    """For bp.kernels: a floating array of `dtype` (no casting between precisions), C-ordered copy
    if needed, with the given shape (None entries match anything), all finite."""
    arr = np.asarray(x)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64. Received: {name} with dtype "
                        f"{arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{name} must have the same dtype as the other inputs ({np.dtype(dtype)}). "
            f"Received: {name} with dtype {arr.dtype}"
        )
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D. Received: {name} with shape {arr.shape}")
    check_shape(name, arr, shape)
    check_finite(name, arr)
    return np.ascontiguousarray(arr)


def check_shape(name, arr, shape):
    if shape is None:
        return
    if len(shape) != arr.ndim or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = ("(" + ", ".join("*" if s is None else str(s) for s in shape)
                + ("," if len(shape) == 1 else "") + ")")
        raise ValueError(f"{name} must have shape {want}. Received: {name} with shape {arr.shape}")


def check_output(name, out, dtype, shape):
    """A preallocated output: an ndarray of exactly `dtype` and `shape`, C-contiguous, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray. Received: {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}. Received: {name} with dtype "
                        f"{out.dtype}")
    check_shape(name, out, shape)
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (it is written in place). Received: a "
                         f"non-contiguous array with strides {out.strides}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable (it is written in place). Received: a "
                         "read-only array")
    return out


def check_no_overlap(name, out, **inputs):
    """ValueError if the output buffer `out` shares memory with one of the named inputs.

    The kernels read their inputs while they write their outputs (BLAS reads the whole operand
    while it writes C; the row sweeps read sigma' from z_out after writing delta), so an output
    laid over an input gives wrong numbers without any error. np.may_share_memory compares the
    memory bounds only: cheap, and exact for the C-contiguous outputs we accept.
    """
    for in_name, arr in inputs.items():
        if arr is not None and np.may_share_memory(out, arr):
            raise ValueError(
                f"{name} must not share memory with {in_name} (it is written while {in_name} is "
                f"read). Received: {name} overlapping {in_name}"
            )


def check_finite(name, arr):
    """ValueError naming the first non-finite entry (row and column for 2-D arrays)."""
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = ", ".join(str(int(i)) for i in bad)
        label = {1: "index", 2: "row, column"}.get(arr.ndim, "index")
        raise ValueError(
            f"{name} must contain only finite values. Received: {arr[tuple(bad)]} at "
            f"{label} ({where})"
        )


# The largest count the compiled code takes (a C int's range: rows, micro-batches, steps).
MAX_COUNT = 2**31 - 1


def check_positive_int(name, value, allow_none=False, high=None):
    """A positive int (numpy integers accepted, booleans not), at most `high` when given."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be a positive integer of at most {high}. "
                         f"Received: {name}={value!r}")
    return int(value)


def check_bytes(what, n_bytes):
    """ValueError if allocating n_bytes can never succeed on this machine (more than its
    physical memory): a request that cannot fit is an argument error, named with its size,
    not a MemoryError after part of the work."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 2**63 - 1
    if n_bytes > total:
        raise ValueError(f"{what} would need {n_bytes:,} bytes ({n_bytes / 2**30:.1f} GiB); this "
                         f"machine has {total:,} bytes of memory")


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real scalar within [low, high] (open ends where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number. Received: {name}={value!r}")
    v = float(value)
    ok = np.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = (f"{'(' if low_open or low is None else '['}{lo}, "
                    f"{hi}{')' if high_open or high is None else ']'}")
        raise ValueError(f"{name} must be a finite number in {interval}. Received: "
                         f"{name}={value!r}")
    return v


def check_choice(name, value, choices):
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Unknown {name} {value!r}. Valid values: {valid}. "
                         f"Received: {name}={value!r}")
    return value


def check_size(count, n_in, dtype):
    """ValueError, before anything is allocated or drawn, if `count` parameters on n_in inputs
    (and their gradients, as many again) can never fit in this machine's memory; returns count.
    The count comes from the flat layout (bp/_passes.py), which knows every kind of layer."""
    check_bytes(f"a model of {count:,} parameters on {n_in:,} inputs (its parameters and their "
                f"gradients, {np.dtype(dtype).name})", 2 * count * np.dtype(dtype).itemsize)
    return count


def check_seed(seed):
    """A seed for numpy's generator: None or a non-negative int (numpy integers accepted)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None. Received: seed={seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None. Received: seed={seed!r}")
    return int(seed)


def check_some_weight(w, name):
    """ValueError if every training sample has the weight 0 (the loss is 0, yet Adam's moments
    would still move the weights; scikit-learn refuses too). w None: unweighted, fine."""
    if w is not None and w.size and not np.any(w):
        raise ValueError(f"{name} gives every training sample the weight 0: there is nothing to "
                         f"learn from. Received: all-zero {name}")
