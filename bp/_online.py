"""partial_fit's straight line: one epoch of in-memory rows, with nothing listening.

``partial_fit`` is ``fit(epochs=1)`` going on from the optimizer's last epoch (bp/_training.py).
Online learning calls it once per batch, so on a small batch fit's set-up costs as much as the
step itself (measured: see bench/README.md, Python call costs). When there is
nothing for that set-up to serve (no communicator, no progress display, no callbacks, no
validation, no streaming, a built model whose own optimizer runs in the compiled engine) this
module runs the same epoch as one ``CompiledSteps.run`` over all its steps, the run fit makes
then:

    checks  ->  model.loss, optimizer, History  ->  shuffle  ->  runner.run(0, n_steps)  ->  record

Everything else goes to ``_training.partial_fit``, and so does any call whose arguments are not
plainly valid, so that every error is fit's own, raised before anything changes. The results are
fit's bit for bit: the same runner, the same shuffle drawn from the model's generator, the same
History (tests/test_lean_partial_fit.py compares the two paths).
"""

import time

import numpy as np

from . import _interrupt, _ops, _passes, _streaming, _threads, _training
from . import optimizers as _optimizers
from ._validation import MAX_COUNT, check_some_weight
from .callbacks import History


def partial_fit(model, X, y, *, loss=None, optimizer=None, batch_size=32, sample_weight=None,
                shuffle=True, accumulate=1, verbose=0, comm=None):
    """Sequential.partial_fit: one epoch that goes on from the optimizer's last epoch."""
    opt = model.optimizer if optimizer is None else None
    passes = model._passes
    lock = model._fit_lock
    if (comm is not None or verbose != 0 or opt is None or passes is None
            or _training.runner_for(passes, opt) is not _training.CompiledSteps
            or model._metrics or _optimizers.per_step(opt)  # (a step at a time: fit's loop)
            or type(batch_size) is not int
            or type(accumulate) is not int or batch_size < 1 or not 1 <= accumulate <= MAX_COUNT
            or y is None or _streaming.streamable(X)  # (y None: an iterable of batches)
            or not lock.acquire(blocking=False)):  # (a fit in another thread: fit refuses)
        return _training.partial_fit(model, X, y, loss=loss, optimizer=optimizer,
                                     batch_size=batch_size, sample_weight=sample_weight,
                                     shuffle=shuffle, accumulate=accumulate, verbose=verbose,
                                     comm=comm)
    try:  # one fit of a model at a time (_training.exclusive)
        # fit's checks, in fit's order; a schedule that fails at once is rejected here too
        loss, X, Y, w = _passes.prepare(model, X, y, loss, sample_weight)
        check_some_weight(w, "sample_weight")
        _ops.check_training_rows(model.layers, X.shape[0], batch_size, accumulate)
        opt.current_learning_rate(0 if opt._epoch is None else opt._epoch + 1)  # this pass's
        # -- from here on the model changes --
        model.loss, model._comm = loss, None
        nt = _threads.ensure_blas_limit()
        n = X.shape[0]
        history = model.history = History()
        model.stop_training, model._stop_reason = False, None
        sigint = _interrupt.defer_sigint()
        try:
            runner = _training.CompiledSteps(passes, X, Y, w, min(batch_size, n), accumulate,
                                             loss, opt, nt, sigint)
            _run_epoch(model, runner, opt, history, shuffle, sigint)
        except KeyboardInterrupt:  # between steps: the model is at the last completed one
            history.stopped = "interrupted"
        finally:
            sigint.restore()
    finally:
        lock.release()
    return history


def _run_epoch(model, runner, opt, history, shuffle, sigint):
    """The epoch _training._fit runs for one in-memory part and no listener, as one run."""
    last = opt._epoch  # each pass is the epoch after the optimizer's last one
    opt.set_epoch(0 if last is None else last + 1)
    t0 = time.perf_counter()
    X, w = runner.X, runner.w
    weight = X.shape[0] if w is None else float(np.sum(w))
    runner.start_epoch(model._rng.permutation(X.shape[0]) if shuffle else None)
    report = runner.run(0, runner.n_steps)
    if report.steps:
        history.stopped_at = {"epoch": 0, "batch": report.steps - 1}
    _training.stop_if_diverged(model, runner, report, 0, report.steps, "raise", None)
    if report.status == _training.INTERRUPTED or sigint.requested:
        raise KeyboardInterrupt
    logs = _training.epoch_logs(runner.loss, report.total, report.seen, report.correct, weight)
    logs["learning_rate"] = opt._lr
    history._record(0, logs, time.perf_counter() - t0)
    if sigint.requested:  # Ctrl-C while the epoch was recorded: fit looks once more, so do we
        raise KeyboardInterrupt
