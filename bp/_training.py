"""Training: the body of ``fit`` and ``partial_fit``, with one epoch loop.

    for each epoch:
        shuffle (seeded), then run the epoch's steps in chunks:
            runner.run(first_step, count) -> Report     forward, loss, deltas, gradients, update
        record the epoch (loss, accuracy, validation, learning rate); callbacks; stop?

A step is `accumulate` micro-batches of batch_size rows, then one optimizer update. Two step
runners do the same work behind one interface (Keras' ``steps_per_execution`` idea):

    CompiledSteps   bpcore._network.Network.train_epoch: `count` whole steps in one nogil call
    PythonSteps     the same steps as a Python loop over Passes.backward and Optimizer.apply,
                    for optimizers the engine cannot run (a user's Optimizer subclass)

The loop never knows which one runs. A chunk is the whole epoch, a fiftieth of it when a
progress bar is drawn, or one step when a callback wants every batch, a running metric reads
each batch's f_out (``observe``) or a per-step schedule sets each step's rate (bench/README.md,
"Training metrics and per-step schedules", has what the engine should take instead). Both
runners stop before the update at the first non-finite loss or gradient, undo an update that
made a parameter or the optimizer's state non-finite, and stop after a completed step on Ctrl-C;
they give the same bits (tests/test_network_engine.py).

The model comes in as an argument: this module never imports ``bp.sequential``.
"""

import contextlib
import math
import time

import numpy as np

import bpcore
from bpcore import _network

from . import _evaluate, _interrupt, _model_file, _mpi, _ops, _passes, _streaming, _threads
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from ._progress import Progress
from ._validation import (
    MAX_COUNT,
    as_float_array,
    check_number,
    check_positive_int,
    check_size,
    check_some_weight,
    column_names,
)
from .callbacks import Callback, CSVLogger, History, TerminateOnNaN, wants_every_batch

DONE = _network.STATUS["done"]
DIVERGED = _network.STATUS["diverged"]
DIVERGED_IN_UPDATE = _network.STATUS["diverged_in_update"]
INTERRUPTED = _network.STATUS["interrupted"]


class TrainingDivergedError(FloatingPointError):
    """The loss, a gradient or an update became non-finite during fit.

    The step is undone: the model keeps the last finite weights and optimizer state.

    Parameters
    ----------
    message : str
        What went wrong, where.
    epoch : int, optional
        The epoch of the step.
    batch : int, optional
        The batch within the epoch.
    layer : int, optional
        The layer where the first non-finite value appeared.
    sample : int, optional
        The sample, within the batch.
    where : str, optional
        "forward (z_out)", "loss", "error signal (delta)", "gradients" or "update".
    row : int, optional
        The sample's row in the X given to fit.

    See Also
    --------
    TerminateOnNaN : End quietly instead.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> X, y = np.ones((4, 2)), np.full(4, 1e30)
    >>> model = bp.Sequential([bp.Dense(1)], dtype="float32", seed=0)
    >>> try:
    ...     model.fit(X, y, optimizer=bp.SGD(1e10), epochs=3, verbose=0)
    ... except bp.TrainingDivergedError as err:
    ...     print(err.where is not None, err.epoch)
    True 0
    """

    def __init__(self, message, epoch=None, batch=None, layer=None, sample=None, where=None,
                 row=None):
        super().__init__(message)
        self.epoch, self.batch, self.layer = epoch, batch, layer
        self.sample, self.where = sample, where
        self.row = row  # the sample's row in the X given to fit


class Report:
    """What one ``run(first_step, count)`` did: steps completed, the sum of step loss x rows,
    rows seen, weighted correct rows, the last step's loss, the last micro-batch's position
    (start, rows) in the epoch's order, and the status (DONE, DIVERGED, DIVERGED_IN_UPDATE,
    INTERRUPTED)."""

    __slots__ = ("steps", "total", "seen", "correct", "last_loss", "last_start", "last_rows",
                 "status")

    def __init__(self, steps=0, total=0.0, seen=0, correct=0.0, last_loss=0.0, last_start=0,
                 last_rows=0, status=DONE):
        self.steps, self.total, self.seen, self.correct = steps, total, seen, correct
        self.last_loss, self.last_start, self.last_rows, self.status = (
            last_loss, last_start, last_rows, status)


class _Steps:
    """What both runners hold: the training data, the step's shape and the optimizer."""

    def __init__(self, passes, X, Y, w, batch_size, accumulate, loss, opt, n_threads, sigint):
        self.passes = passes
        self.X, self.Y, self.w = X, Y, w
        self.batch_size, self.accumulate = batch_size, accumulate
        self.loss, self.opt, self.nt, self.sigint = loss, opt, n_threads, sigint
        self.order = None
        self.n_steps = -(-X.shape[0] // (batch_size * accumulate))
        self.step_nt = passes.step_threads(batch_size, n_threads)
        self.reducer = self.global_rows = None  # data-parallel: see distribute
        # observe(f_out, Y, w): each training micro-batch's f_out (before its update) and its
        # targets, for the running metrics (bp/metrics.py); None when no metric wants them
        self.observe = None

    def distribute(self, reducer, global_rows):
        """Make every step one part of a data-parallel step (bp/_mpi.py): scaled by the step's
        rows over all ranks (global_rows), its gradient summed by reducer before the update;
        every rank runs len(global_rows) steps."""
        self.reducer, self.global_rows = reducer, global_rows
        self.n_steps = len(global_rows)

    def start_epoch(self, order):
        """order: the epoch's row order (int64 indices), or None for the rows as they are."""
        self.order = order

    def set_data(self, X, Y, w):
        """The rows the next runs train on (all of them, or a block of a streamed X)."""
        self.X, self.Y, self.w = X, Y, w
        self.n_steps = (len(self.global_rows) if self.global_rows is not None
                        else -(-X.shape[0] // (self.batch_size * self.accumulate)))

    def batch_input(self, report):
        """The input of the report's last micro-batch, as the backward pass saw it."""
        start, rows = report.last_start, report.last_rows
        return self.X[start:start + rows] if self.order is None else self.passes.last[0].X[:rows]


class CompiledSteps(_Steps):
    """Steps in the compiled engine: one nogil call runs `count` steps."""

    def __init__(self, *args):
        super().__init__(*args)
        self.ws = self.passes.workspace(self.batch_size)  # the last, smaller batch uses its rows
        self.net = self.passes.engine()
        self.backup = self.passes.backup()
        self.mean_width = _losses.mean_width(self.loss, self.Y.shape[1])
        self.count_hits = _losses.is_classification(self.loss)

    def run(self, first_step, count):
        net, opt, reducer = self.net, self.opt, self.reducer
        net.bind(self.ws)
        opt._checkpoint(self.passes.params, copy=False)  # the buffers the engine saves state in
        status = DONE
        _threads.hold_blas(self.step_nt)  # one BLAS thread for small steps; given back below
        try:
            status = net.train_epoch(self.X, self.Y, self.w, self.order, self.batch_size,
                                     self.accumulate, bpcore.LOSSES[self.loss], self.mean_width,
                                     opt._engine_spec(), opt._lr, opt.iterations, self.step_nt,
                                     first_step, count, self.count_hits, True, self.backup,
                                     self.sigint, reducer, reducer and reducer.ctl,
                                     self.global_rows)
        except KeyboardInterrupt:
            status = INTERRUPTED  # the engine stopped after a completed step
        finally:
            _threads.hold_blas(self.nt)
            opt.iterations = net.iterations
        if reducer is not None and reducer.error is not None:
            raise reducer.error
        if net.last_rows:
            self.passes.last = (self.ws, net.last_rows, True)
            if self.observe is not None and net.steps_done:
                self._observe_last(net.last_start, net.last_rows)
        return Report(net.steps_done, net.total, net.seen, net.correct, net.last_loss,
                      net.last_start, net.last_rows, status)

    def _observe_last(self, start, rows):
        # The engine caches the last micro-batch's f_out (its workspace's z_out); fit runs it a
        # step at a time with accumulate=1 when metrics are asked (see fit), so that is every
        # micro-batch. The new engine should call bpcore/_metrics.pyx's cores itself
        # (bench/README.md, "Metrics").
        if self.order is None:
            Yb = self.Y[start:start + rows]
            wb = None if self.w is None else self.w[start:start + rows]
        else:
            Yb, wb = self.ws.Y[:rows], None if self.w is None else self.ws.w[:rows]
        self.observe(self.ws.z_out[-1][:rows], Yb, wb)


class PythonSteps(_Steps):
    """The same steps as a Python loop: Passes.backward per micro-batch, Optimizer.apply."""

    def __init__(self, *args):
        super().__init__(*args)
        self.backup = self.passes.backup()

    def run(self, first_step, count):
        _threads.hold_blas(self.step_nt)  # one BLAS thread for small steps, as CompiledSteps
        try:
            return self._run(first_step, count)
        finally:
            _threads.hold_blas(self.nt)

    def _run(self, first_step, count):
        passes, opt, nt = self.passes, self.opt, self.step_nt
        ew = _passes.ELEMENTWISE_THREADS  # the update and its scans (see there)
        X, Y, w, order = self.X, self.Y, self.w, self.order
        n, m, per_step = X.shape[0], Y.shape[1], self.batch_size * self.accumulate
        report, stop = Report(), False
        for step in range(first_step, min(first_step + count, self.n_steps)):
            step_start = step * per_step
            step_rows = max(0, min(per_step, n - step_start))
            scale = _losses.default_scale(self.loss, step_rows if self.reducer is None
                                          else self.global_rows[step], m)
            if step_rows == 0:  # data-parallel: this rank's rows ran out; it adds nothing
                passes.grads[...] = 0
            beta, step_loss = 0.0, 0.0
            for k, mb_start in enumerate(range(step_start, step_start + step_rows,
                                               self.batch_size)):
                rows = min(self.batch_size, step_start + step_rows - mb_start)
                ws = passes.workspace(rows)
                Xb, Yb, wb = _gather(ws, X, Y, w, order, mb_start, rows)
                # training batch `draw` (the engine counts alike): its dropout masks
                draw = opt.iterations * self.accumulate + k
                batch_loss = passes.backward(Xb, Yb, wb, ws, self.loss, scale, beta,
                                             passes.grads, nt, draw=draw)
                report.last_start, report.last_rows = mb_start, rows
                beta = 1.0
                step_loss += batch_loss
                if not math.isfinite(batch_loss):
                    break
                hits = _losses.accuracy(self.loss, ws.z_out[-1][:rows], Yb, wb, count=True)
                if hits is not None:
                    report.correct += hits
                if self.observe is not None:
                    self.observe(ws.z_out[-1][:rows], Yb, wb)
            if self.reducer is not None:  # the same numbers on every rank from here on
                step_loss, stop = self.reducer.step(step_loss)
                step_rows = int(self.global_rows[step])
            # after the sum over ranks: the penalty belongs to the step once, not once per rank
            if passes.penalized and math.isfinite(step_loss):
                step_loss += passes.penalty(passes.grads, nt)
            report.last_loss = step_loss
            if not math.isfinite(step_loss) or not _passes.all_finite(passes.grads, ew):
                report.status = DIVERGED
                return report
            # the update is undone, parameters and optimizer state alike, if it goes non-finite:
            # the model keeps the last finite step, nothing half-changed
            np.copyto(self.backup, passes.params)
            opt._checkpoint(passes.params)
            opt.apply(passes.params, passes.grads, ew)
            if not (_passes.all_finite(passes.params, ew) and opt._state_is_finite(ew)):
                np.copyto(passes.params, self.backup)
                opt._rollback()
                report.status = DIVERGED_IN_UPDATE
                return report
            # the mean reduction makes step_loss a mean over step_rows samples
            report.total += step_loss * step_rows
            report.seen += step_rows
            report.steps += 1
            if stop or (self.reducer is None and self.sigint.requested):
                report.status = INTERRUPTED
                return report
        return report


def _gather(ws, X, Y, w, order, start, rows):
    """The batch's rows, copied into the workspace (no allocation: np.take with out=)."""
    if order is None:
        stop = start + rows
        return X[start:stop], Y[start:stop], (None if w is None else w[start:stop])
    idx = order[start:start + rows]
    Xb, Yb = ws.X[:rows], ws.Y[:rows]
    np.take(X, idx, axis=0, out=Xb)
    np.take(Y, idx, axis=0, out=Yb)
    wb = None
    if w is not None:
        wb = ws.w[:rows]
        np.take(w, idx, out=wb)
    return Xb, Yb, wb


def _parts(X, Y, w, train_rows, blocks, rng, shuffle):
    """What one epoch trains on, part by part: (X, Y, w, order, rows of X); one part, the whole
    training set in a seeded order, or for a streamed X its blocks (bp/_streaming.py)."""
    if blocks is None:
        yield X, Y, w, (rng.permutation(X.shape[0]) if shuffle else None), train_rows
        return
    for Xb, start, order in blocks.parts(rng, shuffle):
        end = start + Xb.shape[0]
        yield Xb, Y[start:end], None if w is None else w[start:end], order, np.arange(start, end)


def _rows_of(order, train_rows, start, rows):
    """The rows of X that positions start .. start + rows of an epoch's batches come from."""
    idx = np.arange(start, start + rows) if order is None else order[start:start + rows]
    return idx if train_rows is None else train_rows[idx]


@contextlib.contextmanager
def exclusive(model):
    """One fit of a model at a time: a second, from another thread, is refused."""
    if not model._fit_lock.acquire(blocking=False):
        if model._fit_lock.owner == _threads.current_thread():
            raise RuntimeError("fit (or partial_fit) was called while this model is being fitted "
                               "in this same thread (from a callback?): a fit cannot start "
                               "inside another fit of the same model; fit a copy")
        raise RuntimeError("this model is already being fitted in another thread; "
                           "wait for that fit to finish (or fit a copy)")
    try:
        yield
    finally:
        model._fit_lock.release()


def partial_fit(model, X, y, *, loss=None, optimizer=None, batch_size=32, sample_weight=None,
                shuffle=True, accumulate=1, verbose=0, comm=None):
    """Sequential.partial_fit: one epoch that goes on from the optimizer's last epoch (as
    every fit does: see _fit's schedule_base)."""
    return fit(model, X, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch_size,
               shuffle=shuffle, sample_weight=sample_weight, accumulate=accumulate,
               verbose=verbose, comm=comm)


def fit(model, X, y, *, loss=None, optimizer=None, epochs=1, batch_size=32, validation_split=0.0,
        validation_data=None, shuffle=True, sample_weight=None, class_weight=None, callbacks=None,
        accumulate=1, verbose=1, on_nan="raise", steps_per_epoch=None, comm=None,
        validation_steps=None, metrics=None, initial_epoch=None):
    """Sequential.fit (see its docstring for the parameters)."""
    args = (validation_split, validation_data, shuffle, sample_weight, class_weight, callbacks,
            accumulate)
    more = {"validation_steps": validation_steps, "metrics": metrics,
            "initial_epoch": initial_epoch}
    with exclusive(model):
        if comm is None:
            return _fit(model, X, y, loss, optimizer, epochs, batch_size, *args, verbose, on_nan,
                        steps_per_epoch, None, **more)
        _mpi.check_comm(comm)
        _mpi.check_world(comm)  # a foreign mpiexec: an error before anything changes
        share = _mpi.rank_threads(comm)
        agreement = _mpi.Agreement(comm)
        with (_threads.num_threads(share) if share else contextlib.nullcontext()):
            try:
                return _fit(model, X, y, loss, optimizer, epochs, batch_size, *args,
                            verbose if comm.Get_rank() == 0 else 0, on_nan, steps_per_epoch, comm,
                            agreement=agreement, **more)
            except Exception as exc:
                agreement.fail(exc)  # a rank's own refusal reaches the others' collective check
                raise


def _fit(model, X, y, loss, optimizer, epochs, batch_size, validation_split, validation_data,
         shuffle, sample_weight, class_weight, callbacks, accumulate, verbose, on_nan,
         steps_per_epoch, comm, validation_steps=None, metrics=None, initial_epoch=None,
         agreement=None):
    # -- everything is checked before anything changes --
    names = column_names(X)  # a DataFrame's: later ones must have these columns in this order
    epochs = check_positive_int("epochs", epochs)
    # Keras' meaning: this fit runs epochs initial_epoch .. epochs - 1 (a schedule reads them)
    if initial_epoch is not None and (isinstance(initial_epoch, bool) or not isinstance(
            initial_epoch, (int, np.integer)) or not 0 <= initial_epoch < epochs):
        raise ValueError(f"initial_epoch must be an integer in [0, epochs): this fit runs epochs "
                         f"initial_epoch .. epochs - 1. Received: initial_epoch={initial_epoch!r}, "
                         f"epochs={epochs}")
    metrics = _metrics.check(metrics) if metrics is not None else list(
        getattr(model, "_metrics", None) or [])
    batches = None  # an iterable of batches: each is a step (bp/_streaming.py)
    if _streaming.is_batches(X, y):
        if sample_weight is not None or validation_split:
            raise ValueError("with an iterable of batches, give the weights in the batches "
                             "(X_batch, y_batch, w_batch) and validation_data, not "
                             "sample_weight or validation_split")
        batches = _streaming.Batches(model, X, loss, class_weight, steps_per_epoch, epochs,
                                     accumulate)
        (loss, X, Y, w), class_weight = batches.first, None  # the first batch stands for them
        batch_size = X.shape[0]
    elif steps_per_epoch is not None:
        raise ValueError("steps_per_epoch is for an iterable of batches (with y=None)")
    streamed = batches is None and _streaming.streamable(X)  # a memory-mapped X: in blocks
    if comm is not None and (batches is not None or streamed):
        raise ValueError("fit(comm=...) trains on in-memory arrays (each rank's shard); a "
                         "memory-mapped X or an iterable of batches is not distributed. Received: "
                         + ("an iterable of batches" if batches is not None else
                            "a memory-mapped X (np.asarray(X[shard]) loads a shard)"))
    if batches is None:
        loss, X, Y, w = (_streaming if streamed else _passes).prepare(model, X, y, loss,
                                                                      sample_weight)
    # class weights weigh the training rows only (as Keras): a validation split keeps its own
    cw = None if class_weight is None else _losses.class_weights(loss, Y, class_weight)
    batch_size = check_positive_int("batch_size", batch_size, high=MAX_COUNT)
    accumulate = check_positive_int("accumulate", accumulate, high=MAX_COUNT)
    if verbose not in (0, 1, 2, False, True):
        raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
    if on_nan not in ("raise", "stop"):
        raise ValueError(f"on_nan must be 'raise' or 'stop'. Received: on_nan={on_nan!r}")
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError("callbacks must be bp.Callback instances. Received: "
                            f"{type(cb).__name__}")
    if any(isinstance(cb, TerminateOnNaN) for cb in callbacks):
        on_nan = "stop"
    opt = _optimizers.get(optimizer) if optimizer is not None else (  # a schedule: checked below
        model.optimizer or _optimizers.get(None))
    # a schedule is asked now for every epoch this fit will ask it for (a very long fit: its
    # first 10000 and its last), so that one failing at epoch 5 is refused before any change:
    # Keras' initial_epoch numbers them, else they go on from the optimizer's last epoch
    first_epoch = (int(initial_epoch) if initial_epoch is not None
                   else 0 if opt._epoch is None else opt._epoch + 1)
    last = first_epoch + epochs - (0 if initial_epoch is None else int(initial_epoch)) - 1
    for e in [*range(first_epoch, min(last, first_epoch + 9999) + 1), last]:
        opt.current_learning_rate(e)
    tracker = _metrics.Tracker(metrics, loss, Y.shape[1], comm)  # each fits this model
    val = None
    if validation_data is not None:
        if validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        val = _streaming.validation_set(model, validation_data, loss, X, validation_steps,
                                        epochs, comm)
    elif validation_steps is not None:
        raise ValueError("validation_steps needs validation_data (an iterable of batches)")
    else:
        validation_split = check_number("validation_split", validation_split, low=0.0,
                                        high=1.0, high_open=True)
    blocks = None
    if streamed:
        if validation_split:
            raise ValueError("a memory-mapped X is read in blocks: give validation_data, not "
                             f"validation_split. Received: validation_split={validation_split}")
        blocks = _streaming.Blocks(X, model.dtype, min(batch_size, X.shape[0]) * accumulate)
        blocks.check()
    # sample_weight times class_weight: each value must fit the model's dtype, and not all be 0
    # (the loss would be 0, yet Adam's moments would still move the weights; scikit-learn refuses)
    wc = None if cw is None else as_float_array("class_weight", cw if w is None else w * cw,
                                                model.dtype)
    check_some_weight(w if wc is None else wc,
                      "class_weight" if wc is not None else "sample_weight")
    # what the callbacks will read, checked now (paths, monitored names, the optimizer)
    keys = ["loss"] + (["accuracy"] if _losses.is_classification(loss) else [])
    keys += [m.name for m in tracker.metrics if m.name not in keys]
    if val is not None or validation_split > 0:
        keys += ["val_" + k for k in keys]
    opt._check_owner(model)
    for cb in callbacks:
        cb.check_before_fit(model, opt, keys + ["learning_rate"])
    if not model.built:
        # (and each layer's input_dim against its width: build would say it after the split)
        check_size(_model_file.parameter_count(model.layers, X.shape[1]), X.shape[1], model.dtype)
    if agreement is not None:
        agreement.check(_mpi.fit_settings(model, X, Y, loss, opt, epochs, batch_size, accumulate,
                                      shuffle, on_nan, callbacks, val, validation_split,
                                      first_epoch))
    rng = model._rng
    rng_state = rng.bit_generator.state  # (the split below draws; a later refusal puts it back)
    train_rows = None  # row i of the training set is row train_rows[i] of X (None: row i)
    if val is None and validation_split > 0:
        n_val = int(math.floor(X.shape[0] * validation_split))
        if n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves {n_val} validation and "
                             f"{X.shape[0] - n_val} training samples; both need at least one")
        perm = rng.permutation(X.shape[0])
        vi, ti = perm[:n_val], perm[n_val:]
        train_rows = ti
        val = (X[vi], Y[vi], None if w is None else w[vi])
        X, Y, w = X[ti], Y[ti], (None if w is None else w[ti])
        wc = None if wc is None else wc[ti]
    if wc is not None:
        w = wc
    try:  # AUC needs both labels of every class it averages, in the rows it is computed on
        if batches is None and not streamed:
            tracker.check_targets(Y, "training data")
        if isinstance(val, tuple):
            tracker.check_targets(val[1], "validation data")
        elif val is not None and hasattr(val, "Y"):
            tracker.check_targets(val.Y, "validation data")
    except ValueError:
        rng.bit_generator.state = rng_state
        raise
    if hasattr(X, "shape"):  # (an iterable of batches is checked batch by batch)
        _ops.check_training_rows(model.layers, X.shape[0], batch_size, accumulate)
    # -- from here on the model changes --
    if not model.built:
        model.build(X.shape[1])
    model.loss, model.optimizer = loss, opt
    opt._bind(model)
    model._comm = comm
    if names is not None:
        model._column_names = names
    if comm is not None:
        # the same model everywhere (checked), rank 0's parameters and optimizer state; each rank
        # shuffles its own rows from its own stream, drawn from the model's
        _mpi.broadcast_parameters(model, comm)
        rng = np.random.default_rng([int(rng.integers(2**63)), comm.Get_rank()])
    nt = _threads.ensure_blas_limit()
    n = X.shape[0]
    if comm is None:  # (data-parallel, every rank must keep the step's shape: no clamp)
        batch_size = min(batch_size, n)
    n_batches = steps_per_epoch or -(-n // batch_size)
    history = model.history = History()
    model.stop_training, model._stop_reason = False, None
    # mode="auto" of the monitors: the metrics say whether they are maximised
    model._monitor_modes = tracker.modes()
    history._modes = model._monitor_modes
    for cb in callbacks:
        cb.set_model(model)
        cb.on_train_begin()
    first = 0 if initial_epoch is None else initial_epoch
    progress = Progress(verbose, epochs, n_batches)
    per_batch_callbacks = [cb for cb in callbacks if wants_every_batch(cb)]
    # the callbacks that write logs out run after the others, which may add to the logs
    # (History and the progress line come last of all)
    callbacks = ([cb for cb in callbacks if not isinstance(cb, CSVLogger)]
                 + [cb for cb in callbacks if isinstance(cb, CSVLogger)])
    sigint = _interrupt.defer_sigint()  # Ctrl-C sets a flag, read between steps
    passes = model._passes
    runner_class = runner_for(passes, opt)
    observe = tracker.update if tracker.running else None
    if observe is not None and accumulate > 1:
        # the engine caches only a step's last micro-batch; the Python steps see each one
        runner_class = PythonSteps
    try:  # a runner that cannot be made must not leave fit's Ctrl-C handler installed
        runner = runner_class(passes, X, Y, w, batch_size, accumulate, loss, opt, nt, sigint)
        if comm is not None:
            runner.distribute(_mpi.StepReducer(comm, passes.grads, sigint),
                              _mpi.global_step_rows(n, batch_size * accumulate, comm))
    except BaseException:
        sigint.restore()
        raise
    runner.observe = observe
    per_step = _optimizers.per_step(opt)
    # Back in Python after every step when a callback wants every batch, the running metrics
    # read each batch's f_out from the engine's cache, or a per-step schedule sets each step's
    # rate (the engine takes one rate a run); about 50 times an epoch to draw a progress bar;
    # otherwise once an epoch. (What the new engine should take instead: bench/README.md,
    # "Metrics" and "Per-step schedules".)
    chunk = (1 if per_batch_callbacks or observe is not None or per_step else
             max(1, runner.n_steps // 50) if progress.bar else runner.n_steps)
    # A schedule goes on across fits (the optimizer counts its epochs, as Keras' counts its
    # steps): epoch k of this fit is the optimizer's epoch after its last, unless initial_epoch
    # numbers the epochs (Keras), which the schedule then reads.
    schedule_base = (first if initial_epoch is not None
                     else 0 if opt._epoch is None else opt._epoch + 1)
    try:
        for epoch in range(first, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            opt.set_epoch(schedule_base + epoch - first)
            tracker.reset()
            progress.epoch_begin(epoch)
            t0 = time.perf_counter()
            total, correct, seen, done = 0.0, 0.0, 0, 0  # done: the epoch's steps so far
            weight = 0.0  # rows, or their weights: accuracy's denominator
            parts = (batches.parts() if batches is not None
                     else _parts(X, Y, w, train_rows, blocks, rng, shuffle))
            for Xp, Yp, wp, order, rows in parts:
                weight += Xp.shape[0] if wp is None else float(np.sum(wp))
                runner.set_data(Xp, Yp, wp)
                runner.start_epoch(order)
                step = 0
                while step < runner.n_steps:
                    if per_step:
                        opt._lr = opt.step_rate()
                    report = runner.run(step, chunk)
                    total, correct, seen = (total + report.total, correct + report.correct,
                                            seen + report.seen)
                    step += report.steps
                    if report.steps:
                        history.stopped_at = {"epoch": epoch, "batch": done + step - 1}
                    if stop_if_diverged(model, runner, report, epoch, done + step, on_nan,
                                        progress, rows):
                        return history
                    if progress.bar:
                        progress.batch(epoch, min((done + step) * accumulate, n_batches),
                                       total / max(seen, 1), tracker.results())
                    for cb in per_batch_callbacks:
                        cb.on_batch_end(done + step - 1, {"loss": report.last_loss})
                    # data-parallel, only the agreed stop (report.status) counts: a rank that
                    # stopped on its own flag would leave the others waiting in the allreduce
                    if report.status == INTERRUPTED or (sigint.requested and comm is None):
                        raise KeyboardInterrupt
                done += step
            seconds = time.perf_counter() - t0
            logs = epoch_logs(loss, total, seen, correct, weight, comm)
            logs.update(tracker.results())
            if val is not None:
                logs.update(_evaluate.validate(model, val, loss, comm, tracker))
            logs["learning_rate"] = opt._lr
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            history._record(epoch, logs, seconds)  # with what the callbacks added
            progress.epoch_end(epoch, logs, seconds, min(done * accumulate, n_batches) or 1)
            if sigint.requested and comm is None:
                raise KeyboardInterrupt
            if model.stop_training:
                history.stopped = model._stop_reason or "callback"
                break
    except KeyboardInterrupt:
        # Raised between steps (see bp/_interrupt.py), so the step in flight finished: the
        # parameters and optimizer state are those of the last completed step.
        history.stopped = "interrupted"
        progress.interrupted(history.stopped_at, accumulate)
    finally:
        sigint.restore()
        for cb in callbacks:
            cb.on_train_end()
    return history


def runner_for(passes, opt):
    """The step runner for these passes and optimizer: the compiled engine when both can run
    in it (the engine's optimizer kinds), else the Python loop: the one place this is chosen."""
    return CompiledSteps if passes.compiled and _optimizers.runs_in_engine(opt) else PythonSteps


def epoch_logs(loss, total, seen, correct, weight, comm=None):
    """An epoch's loss (the mean of its steps' losses over rows) and, for a classifier, its
    accuracy (of each batch before its update, as Keras reports), over all ranks' rows when
    data-parallel."""
    logs = {"loss": total / seen}
    if _losses.is_classification(loss):
        logs["accuracy"] = _ratio(comm, correct, weight)
    return logs


def stop_if_diverged(model, runner, report, epoch, batch, on_nan, progress, train_rows=None):
    """True if the run's last step diverged, after reporting it (_diverged: raise
    TrainingDivergedError, or for on_nan="stop" record it in the History and say it)."""
    if report.status not in (DIVERGED, DIVERGED_IN_UPDATE):
        return False
    in_update = report.status == DIVERGED_IN_UPDATE
    rows = None if in_update else _rows_of(runner.order, train_rows, report.last_start,
                                           report.last_rows)
    _diverged(model, runner.passes, epoch, batch, on_nan, progress, runner.batch_input(report),
              rows, in_update=in_update)
    return True


def _ratio(comm, numerator, denominator):
    """numerator / denominator (0 if empty), each summed over the ranks when data-parallel."""
    if comm is not None:
        numerator, denominator = _mpi.sum_over_ranks(comm, [numerator, denominator])
    return float(numerator / (denominator or 1.0))


def _diverged(model, passes, epoch, batch, on_nan, progress, X_batch=None, batch_rows=None,
              in_update=False):
    """Name where the values went non-finite; the parameters are the last finite ones.

    X_batch is the last micro-batch's input and batch_rows maps its positions to rows of X.
    """
    layer, sample, where = None, None, "update"
    if not in_update and passes.last is not None:
        layer, sample, where = passes.first_non_finite(X_batch)
    row = None
    if sample is not None and batch_rows is not None:
        row = int(batch_rows[sample])
    msg = (f"training diverged at epoch {epoch}, batch {batch}: non-finite values in the "
           f"{where}" + (f" of layer {layer}" if layer is not None else "")
           + (f", first at sample {sample} of the batch" if sample is not None else "")
           + (f" (row {row} of X)" if row is not None else "")
           + "; the model keeps the last finite weights (lower the learning rate, clip "
           "gradients with global_clipnorm, or check the data)")
    model.history.stopped = "diverged"
    model.history.diverged = {"epoch": epoch, "batch": batch, "layer": layer,
                              "sample": sample, "row": row, "where": where}
    if on_nan == "raise":
        raise TrainingDivergedError(msg, epoch, batch, layer, sample, where, row)
    progress.message(msg)
