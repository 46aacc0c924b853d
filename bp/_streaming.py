"""Data that comes in parts: fit on a memory-mapped X reads it in blocks of rows; fit on an
iterable of batches takes a step a batch; validation_data may come in blocks or batches too
(validation_set: each evaluation sums over the parts, the numbers evaluate gives at once).

An ``np.memmap`` (or ``np.load(path, mmap_mode="r")``) of C-ordered rows is read with plain file
reads, one block of rows at a time, into a buffer of the model's dtype: the pages go through
the page cache but never into the process's resident memory, which stays a few blocks (the
block, its converted copy, the workspace) plus the targets y, which are kept in memory.

Shuffling is by blocks: each epoch takes the full blocks in a seeded random order, then the
short tail block, and shuffles the rows inside each block. So every epoch reads the file once,
each block with one sequential read, and the model is the one an in-memory fit reaches on the
rows in that order (blocks are whole optimizer steps, so no step straddles two blocks). What it
costs: rows only mix with the rows of their own block within an epoch (a file sorted by label
needs blocks holding many labels, or a shuffled file). Before training, X is checked block by
block (finite values), which is one more read of the file per fit.
"""

import mmap

import numpy as np

from . import _ops, _passes
from . import losses as _losses
from ._validation import as_float_array, check_positive_int

# The block budget: about this many bytes of X are read (and converted) at a time.
BLOCK_BYTES = 32 << 20


def streamable(X):
    """True for an np.memmap over a whole file of C-ordered rows (np.load(mmap_mode="r") gives
    one): the arrays fit reads block by block instead of taking in whole."""
    return (isinstance(X, np.memmap) and isinstance(X.base, mmap.mmap) and X.ndim == 2
            and X.flags.c_contiguous and X.dtype.kind in "fiu" and X.dtype.isnative
            and X.filename is not None)


class Blocks:
    """The rows of a memory-mapped X in blocks of `block_rows` (a multiple of the rows of an
    optimizer step), read from its file into the model's dtype."""

    def __init__(self, X, dtype, per_step):
        self.X, self.dtype = X, dtype
        self.n, self.d = X.shape
        row_bytes = self.d * X.dtype.itemsize
        self.block_rows = max(per_step, BLOCK_BYTES // row_bytes // per_step * per_step)
        self.n_blocks = -(-self.n // self.block_rows)
        self.path, self.offset, self.row_bytes = X.filename, X.offset, row_bytes

    def read(self, b, f):
        """Block b of X, as a C-contiguous array of the model's dtype (one sequential read)."""
        start = b * self.block_rows
        rows = min(self.block_rows, self.n - start)
        raw = np.empty((rows, self.d), self.X.dtype)
        f.seek(self.offset + start * self.row_bytes)
        if f.readinto(memoryview(raw).cast("B")) != raw.nbytes:
            raise ValueError(f"X's file {self.path} is shorter than its {self.n} rows")
        return raw if raw.dtype == self.dtype else raw.astype(self.dtype)

    def check(self, name="X"):
        """ValueError for a non-finite value, naming its row of X (one pass over the file); a
        value that became inf in the cast (1e300 in a float64 X of a float32 model) is reported
        as that value, read back from X."""
        with open(self.path, "rb") as f:
            for b in range(self.n_blocks):
                with np.errstate(over="ignore"):  # an overflow is found and named below
                    block = self.read(b, f)
                if np.isfinite(block).all():
                    continue
                r, c = np.argwhere(~np.isfinite(block))[0]
                row = b * self.block_rows + r
                value = self.X[row, c]
                what = ("must contain only finite values" if not np.isfinite(value) else
                        f"must fit in {self.dtype.name} (largest {np.finfo(self.dtype).max:.4g})")
                raise ValueError(f"{name} {what}. Received: {value} at row, column ({row}, {c})")

    def parts(self, rng, shuffle):
        """Per block, in the epoch's order: (X_block, first row, order within the block)."""
        full = self.n // self.block_rows
        order = list(rng.permutation(full)) if shuffle else list(range(full))
        if full < self.n_blocks:
            order.append(full)  # the short tail block last: only the epoch's last step is short
        with open(self.path, "rb") as f:
            for b in order:
                Xb = self.read(b, f)
                yield Xb, b * self.block_rows, rng.permutation(len(Xb)) if shuffle else None


def prepare(model, X, y, loss, sample_weight):
    """_passes.prepare for a memory-mapped X: the shape checks now, the values block by block
    (Blocks.check), y and the weights in memory."""
    _passes.check_layers(model.layers)
    loss = _passes.check_loss(model, loss)
    _passes.check_X(model, X[:1])  # dtype, width (the first row stands for the shape)
    Y = _losses.prepare_targets(loss, y, X.shape[0], _ops.output_width(model.layers, X.shape[1]),
                                model.dtype)
    w = _passes.check_sample_weight(sample_weight, X.shape[0], model.dtype)
    return loss, X, Y, w


def is_batches(X, y):
    """True when fit is given an iterable of batches (a generator, an iterator, a loader
    object) and no y: not an array, a list, a tuple or a table."""
    return (y is None and hasattr(X, "__iter__") and not hasattr(X, "__array__")
            and not hasattr(X, "to_numpy") and not isinstance(X, (list, tuple, str, bytes, dict)))


class Batches:
    """fit's data as an iterable of (X_batch, y_batch) or (X_batch, y_batch, w_batch): each batch
    is one optimizer step, in the order given (no shuffling). The first batch is read at once (it
    sets the batch size and is checked with the rest of fit's arguments); each later one is
    checked as it comes. steps_per_epoch batches make an epoch (needed for an iterator that only
    runs once when there is more than one epoch); without it, an epoch is one pass."""

    def __init__(self, model, data, loss, class_weight, steps_per_epoch, epochs, accumulate):
        steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch, allow_none=True)
        self.restarts = iter(data) is not data  # a list or a loader; a generator runs once
        if not self.restarts and steps_per_epoch is None and epochs > 1:
            raise ValueError(f"a generator runs once: give steps_per_epoch for epochs={epochs}")
        if accumulate != 1:
            raise ValueError(f"with an iterable of batches each batch is one step: accumulate "
                             f"must be 1. Received: accumulate={accumulate}")
        if isinstance(class_weight, str):
            raise ValueError("class_weight='balanced' needs every label at once; with batches "
                             "give a dict {label: weight}")
        self.model, self.data, self.loss, self.class_weight = model, data, loss, class_weight
        self.steps = steps_per_epoch
        self.it = iter(data)
        try:
            self.first = self._prepare(next(self.it), 0)
        except StopIteration:
            raise ValueError("the iterable of batches gave no batch") from None
        self.loss = self.first[0]
        self.rows = self.first[1].shape[0]
        self._pending = self.first

    def _prepare(self, batch, k):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError(f"batch {k} must be (X_batch, y_batch) or (X_batch, y_batch, "
                            f"w_batch). Received: {type(batch).__name__}")
        loss, X, Y, w = _passes.prepare(self.model, batch[0], batch[1], self.loss,
                                        batch[2] if len(batch) == 3 else None)
        if k and X.shape[0] > self.rows:
            raise ValueError(f"batch {k} has {X.shape[0]} rows; the first had {self.rows}, and "
                             f"no batch may be larger than the first")
        if self.class_weight is not None:
            cw = _losses.class_weights(loss, Y, self.class_weight)
            w = as_float_array("class_weight", cw if w is None else w * cw, self.model.dtype)
        return loss, X, Y, w

    def _next(self, k):
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        try:
            return self._prepare(next(self.it), k)
        except StopIteration:
            if self.steps is None or not self.restarts:
                raise
        self.it = iter(self.data)  # a list or a loader starts again
        return self._prepare(next(self.it), k)

    def parts(self):
        """The epoch's batches as fit's parts: (X, Y, w, order None, rows None)."""
        if self.steps is None and self._pending is None:
            self.it = iter(self.data)  # one pass of a list or a loader per epoch
        k = 0
        while self.steps is None or k < self.steps:
            try:
                _, X, Y, w = self._next(k)
            except StopIteration:
                if self.steps is not None:
                    raise ValueError(f"the batches ran out after {k} of steps_per_epoch="
                                     f"{self.steps}") from None
                return
            yield X, Y, w, None, None
            k += 1


class _ValidationParts:
    """Validation data evaluated part by part after each epoch. sums() gives the sample-weighted
    loss of the data over all the parts' rows and the weighted hits, so that the validation loss
    and accuracy are those ``evaluate`` gives on the rows at once (to rounding)."""

    def sums(self, passes, loss, n_threads, seen=None):
        """(sum over the parts of their data loss x rows, rows, weighted hits, weight): the
        data loss of all the rows is the first over the second (the layers' penalty not in).
        seen: a list that each part's (f_out, Y, w) is appended to (for the metrics), or None."""
        total, rows, hits, weight = 0.0, 0, 0.0, 0.0
        for X, Y, w in self.parts():
            value, f_out = passes.evaluate(X, Y, w, loss, n_threads, penalty=False)
            if seen is not None:
                seen.append((f_out, Y, w))
            total += value * X.shape[0]  # the mean reduction: value is a mean over the rows
            rows += X.shape[0]
            hits += _losses.accuracy(loss, f_out, Y, w, count=True) or 0.0
            weight += X.shape[0] if w is None else float(np.sum(w, dtype=np.float64))
        if rows == 0:
            raise ValueError("validation_data gave no batch")
        return total, rows, hits, weight


class ValidationBlocks(_ValidationParts):
    """validation_data (X_val, y_val[, w_val]) with a memory-mapped X_val: read in blocks of
    rows, as fit's X is (Blocks), y_val and w_val in memory; checked (finite) once, up front."""

    def __init__(self, model, data, loss, width):
        X = data[0]
        _passes.check_X(model, X[:1], "X_val")  # dtype (the first row stands for the shape)
        self.Y, self.w = _targets(model, X, data, loss, width)
        self.blocks = Blocks(X, model.dtype, 1)
        self.blocks.check("X_val")

    def parts(self):
        blocks = self.blocks
        with open(blocks.path, "rb") as f:
            for b in range(blocks.n_blocks):
                Xb = blocks.read(b, f)
                start, end = b * blocks.block_rows, b * blocks.block_rows + Xb.shape[0]
                yield Xb, self.Y[start:end], None if self.w is None else self.w[start:end]


class ValidationBatches(_ValidationParts):
    """validation_data as an iterable of (X_val, y_val) or (X_val, y_val, w_val) batches (a
    generator, a loader object), as Keras takes it: each evaluation is one pass, or `steps`
    batches (validation_steps). A loader (iter(data) is not data) starts again at each
    evaluation; a generator goes on where the last one stopped, so with more than one epoch it
    needs validation_steps. The first batch is read and checked with fit's arguments; each
    later one is checked as it comes."""

    def __init__(self, model, data, loss, width, steps, epochs):
        steps = check_positive_int("validation_steps", steps, allow_none=True)
        self.restarts = iter(data) is not data
        if not self.restarts and steps is None and epochs > 1:
            raise ValueError(f"validation_data is a generator, which runs once: give "
                             f"validation_steps (batches per evaluation) for epochs={epochs}, "
                             f"or a re-iterable loader")
        self.model, self.data, self.loss, self.width, self.steps = model, data, loss, width, steps
        self.it = iter(data)
        try:
            first = next(self.it)
        except StopIteration:
            raise ValueError("validation_data gave no batch") from None
        self._pending = self._prepare(first, 0)

    def _prepare(self, batch, k):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError(f"validation batch {k} must be (X_val, y_val) or (X_val, y_val, "
                            f"w_val). Received: {type(batch).__name__}")
        model = self.model
        try:
            X = _passes.check_X(model, batch[0], "X_val")
            Y, w = _targets(model, X, batch, self.loss, self.width)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"validation batch {k}: {exc}") from None
        return X, Y, w

    def parts(self):
        """One evaluation's batches, checked: (X_val, Y_val, w_val)."""
        if self.restarts and self._pending is None:
            self.it = iter(self.data)
        k = 0
        while self.steps is None or k < self.steps:
            if self._pending is not None:
                batch, self._pending = self._pending, None
            else:
                try:
                    batch = self._prepare(next(self.it), k)
                except StopIteration:
                    if self.steps is not None:
                        raise ValueError(f"the validation batches ran out after {k} of "
                                         f"validation_steps={self.steps}") from None
                    return
            yield batch
            k += 1


def validation_set(model, validation_data, loss, X, steps, epochs, comm):
    """fit's validation_data, checked against fit's X: (X_val, Y_val, w_val) in memory, or for
    a memory-mapped X_val or an iterable of batches an object whose sums() evaluate its parts."""
    batches = is_batches(validation_data, None)
    if steps is not None and not batches:
        raise ValueError("validation_steps is for validation_data given as an iterable of "
                         "batches (a generator or a loader)")
    streamed = (not batches and isinstance(validation_data, (tuple, list))
                and len(validation_data) in (2, 3) and streamable(validation_data[0]))
    if comm is not None and (batches or streamed):
        raise ValueError("fit(comm=...) evaluates in-memory validation arrays (each rank's "
                         "share); an iterable of validation batches or a memory-mapped X_val "
                         "is not distributed. Received: " + (
                             "an iterable of validation batches" if batches else
                             "a memory-mapped X_val (np.asarray(X_val) loads it)"))
    if batches:
        return ValidationBatches(model, validation_data, loss, X.shape[1], steps, epochs)
    if streamed:
        return ValidationBlocks(model, validation_data, loss, X.shape[1])
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        got = type(validation_data).__name__
        raise TypeError("validation_data must be (X_val, y_val) or (X_val, y_val, "
                        "sample_weight_val), or an iterable of such batches (a generator, a "
                        "loader; a list of batches: iter(batches)). Received: " + (
                            f"{got} of {len(validation_data)}"
                            if isinstance(validation_data, (tuple, list)) else got))
    Xv = _passes.check_X(model, validation_data[0], "X_val")
    return (Xv, *_targets(model, Xv, validation_data, loss, X.shape[1]))


def _targets(model, X_val, data, loss, width):
    """(Y_val, w_val) of validation data (X_val, y_val[, w_val]), after checking X_val's width
    against fit's X (an unbuilt model has no width of its own to check it against)."""
    if X_val.shape[1] != width:
        raise ValueError(f"X_val must have {width} features, as X has. Received: X_val "
                         f"with shape {X_val.shape}")
    Y = _losses.prepare_targets(loss, data[1], X_val.shape[0],
                                _ops.output_width(model.layers, X_val.shape[1]),
                                model.dtype, name="y_val")
    w = (_passes.check_sample_weight(data[2], X_val.shape[0], model.dtype)
         if len(data) == 3 else None)
    return Y, w


__all__ = ["BLOCK_BYTES", "Batches", "Blocks", "ValidationBatches", "ValidationBlocks",
           "is_batches", "prepare", "streamable", "validation_set"]
