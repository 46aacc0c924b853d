"""Run under mpiexec by tests/test_distributed.py: fit(..., comm=comm) against one process.

The contract (README "Training on many processes"): with shuffle=False, p ranks each holding a
contiguous block of the rows (bp.distributed.shard, so uneven when p does not divide n) and batch
size b train exactly as ONE process fitting the same rows reordered so that its t-th batch of
p * b rows is the ranks' t-th micro-batches side by side, with batch size p * b (and the same
accumulate): equal to float64 rounding, the same History, and bit for bit the same parameters on
every rank. Rank 0 runs the one process itself. Any failure raises, and ``python -m mpi4py``
aborts the whole job with a non-zero exit.
"""

import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import bp
from bp import distributed

comm = MPI.COMM_WORLD
rank, p = comm.Get_rank(), comm.Get_size()
tmp = sys.argv[1]
n, n_features, b = 61, 5, 3
rng = np.random.default_rng(11)
X = rng.standard_normal((n, n_features))
y = rng.integers(0, 3, n)
sample_weight = rng.uniform(0.5, 2.0, n)
X_val, y_val = rng.standard_normal((23, n_features)), rng.integers(0, 3, 23)
shards = [distributed.shard(n, type("C", (), {"Get_rank": lambda s, r=r: r,
                                              "Get_size": lambda s: p})()) for r in range(p)]
mine = shards[rank]
val_mine = distributed.shard(len(X_val), comm)


def union_order(per_step):
    """Row order of the one process: step t takes each rank's t-th step rows, rank by rank."""
    order = []
    for t in range(-(-max(s.stop - s.start for s in shards) // per_step)):
        for s in shards:
            order.extend(range(min(s.start + t * per_step, s.stop),
                               min(s.start + (t + 1) * per_step, s.stop)))
    assert sorted(order) == list(range(n))
    return np.array(order)


def new_model(seed):
    return bp.Sequential([bp.Dense(7, activation="tanh"), bp.Dense(3, activation="softmax")],
                         dtype="float64", seed=seed)


def same_on_every_rank(name, value):
    everyone = comm.allgather(value)
    for r, other in enumerate(everyone):
        if isinstance(value, np.ndarray):
            assert np.array_equal(other, value), f"{name}: rank {r} differs from rank {rank}"
        else:
            assert other == value, f"{name}: rank {r} has {other!r}, rank {rank} {value!r}"


def close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=what)


OPTIMIZERS = {
    "sgd_momentum": lambda: bp.SGD(0.1, momentum=0.9, clip_norm=0.3),  # clipped by the global norm
    "adam": lambda: bp.Adam(0.01),
    "adamw": lambda: bp.AdamW(0.01, weight_decay=0.1),
}
CASES = [(name, acc, compiled) for name in OPTIMIZERS for acc in (1, 2) for compiled in (True,)]
CASES.append(("adam", 2, False))  # the Python step loop (an optimizer the engine cannot run)
for name, accumulate, compiled in CASES:
    what = f"{name} accumulate={accumulate} compiled={compiled}"
    model = new_model(seed=rank)  # different initial weights: fit broadcasts rank 0's
    model.build(n_features)
    model._passes.compiled = compiled
    history = model.fit(X[mine], y[mine], sample_weight=sample_weight[mine], optimizer=OPTIMIZERS[name](),
                        batch_size=b, accumulate=accumulate, epochs=3, shuffle=False, verbose=0,
                        validation_data=(X_val[val_mine], y_val[val_mine]), comm=comm)
    same_on_every_rank(what + " params", model.get_flat_params())
    same_on_every_rank(what + " history", history.history)
    if rank == 0:
        one = new_model(seed=0)
        order = union_order(b * accumulate)
        reference = one.fit(X[order], y[order], sample_weight=sample_weight[order],
                            optimizer=OPTIMIZERS[name](), batch_size=p * b, accumulate=accumulate,
                            epochs=3, shuffle=False, verbose=0, validation_data=(X_val, y_val))
        close(model.get_flat_params(), one.get_flat_params(), what)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            close(history.history[key], reference.history[key], f"{what} {key}")

# shuffled: each rank its own order, still one model everywhere; EarlyStopping decides alike
model = new_model(seed=5)
history = model.fit(X[mine], y[mine], optimizer=bp.Adam(0.05), batch_size=4, epochs=6,
                    validation_data=(X_val[val_mine], y_val[val_mine]), verbose=0, comm=comm,
                    callbacks=[bp.EarlyStopping(patience=1, min_delta=10.0)])
same_on_every_rank("shuffled params", model.get_flat_params())
same_on_every_rank("early stopping", (history.history, history.stopped))
assert history.stopped is not None and len(history.history["loss"]) < 6, history.stopped
# partial_fit goes on from the same state on every rank
model.partial_fit(X[mine], y[mine], batch_size=4, comm=comm)
same_on_every_rank("partial_fit params", model.get_flat_params())

# one rank's rows make the loss non-finite: every rank stops at the same step, same error
X_bad = X[mine].copy()
if rank == p - 1:
    # rows 4 and 5 (batch 2): relu(+-1e200 x W) ~ 1e200 in some hidden unit, so the output is
    # ~1e200 and its squared error overflows: a non-finite loss on this rank only
    X_bad[4], X_bad[5] = 1e200, -1e200
model = bp.Sequential([bp.Dense(7, activation="relu"), bp.Dense(2, activation="identity")],
                      dtype="float64", seed=1)
try:
    model.fit(X_bad, rng.standard_normal((len(X_bad), 2)), loss="mse", batch_size=2, epochs=2,
              shuffle=False, verbose=0, comm=comm)
except bp.TrainingDivergedError as exc:
    same_on_every_rank("divergence", (exc.epoch, exc.batch))
    assert (exc.epoch, exc.batch) == (0, 2), (exc.epoch, exc.batch)
else:
    raise AssertionError("the divergence on one rank was not seen on every rank")
same_on_every_rank("params after divergence", model.get_flat_params())
assert np.isfinite(model.get_flat_params()).all()


# Ctrl-C on one rank (mpiexec forwards it to all; here only the last rank gets it, the worst
# case): every rank stops after the same completed step
class InterruptOnce(bp.Callback):
    def on_batch_end(self, batch, logs=None):
        if rank == p - 1 and batch == 3:
            os.kill(os.getpid(), signal.SIGINT)


model = new_model(seed=2)
history = model.fit(X[mine], y[mine], batch_size=2, epochs=3, verbose=0, comm=comm,
                    callbacks=[InterruptOnce()])
assert history.stopped == "interrupted", history.stopped
same_on_every_rank("interrupted at", history.stopped_at)
same_on_every_rank("params after Ctrl-C", model.get_flat_params())

# save: rank 0 writes; the others' call does nothing
model.save(os.path.join(tmp, f"model_rank{rank}.npz"))
comm.Barrier()
assert sorted(os.listdir(tmp)) == ["model_rank0.npz"], os.listdir(tmp)
if rank == 0:
    assert np.array_equal(bp.load(os.path.join(tmp, "model_rank0.npz")).get_flat_params(),
                          model.get_flat_params())
    print(f"ok p={p}")
