"""Run under mpiexec by tests/test_distributed.py: the explicit zero_grad / backward /
allreduce_gradients / step loop on p ranks against one process on the union batches.

Each rank holds a contiguous block of the rows (bp.distributed.shard: uneven when p does not
divide n). Step t's union batch is the ranks' t-th micro-batches side by side, and its global
count is the sum of their lengths (a rank that ran out of rows contributes zero). Rank 0 trains
the same model on the union batches in one process and compares; every rank's parameters must be
bit for bit rank 0's. Any failure raises, and ``python -m mpi4py`` turns that into an abort of the
whole job (a non-zero exit), not a deadlock.
"""

import numpy as np
from mpi4py import MPI

import bp
from bp import distributed

comm = MPI.COMM_WORLD
rank, p = comm.Get_rank(), comm.Get_size()
n, n_features, b, steps = 61, 5, 4, 6  # n not a multiple of p: uneven shards, a short last step
rng = np.random.default_rng(7)
X = rng.standard_normal((n, n_features))
y = rng.integers(0, 3, n)
sample_weight = rng.uniform(0.5, 2.0, n)

mine = distributed.shard(n, comm)
all_shards = [distributed.shard(n, type("C", (), {"Get_rank": lambda s, r=r: r,
                                                  "Get_size": lambda s: p})()) for r in range(p)]
assert mine == all_shards[rank]
assert sum(s.stop - s.start for s in all_shards) == n and all_shards[0].start == 0
X_mine, y_mine, w_mine = (distributed.shard_rows(a, comm) for a in (X, y, sample_weight))
assert np.shares_memory(X_mine, X), "shard_rows must return a view"


def model_for(seed):
    return bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
                         dtype="float64", seed=seed, input_dim=n_features).build()


def micro_batch(s, t):
    """Rows of shard s in step t's micro-batch (empty once the shard ran out)."""
    start = min(s.start + t * b, s.stop)
    return slice(start, min(start + b, s.stop))


def check_identical(name, array):
    everyone = comm.gather(np.ascontiguousarray(array), root=0)
    if rank == 0:
        for r, other in enumerate(everyone):
            assert np.array_equal(other, everyone[0]), f"{name}: rank {r} differs from rank 0"


OPTIMIZERS = {
    "sgd_momentum": lambda: bp.SGD(0.1, momentum=0.9, clip_norm=0.5),
    "adam": lambda: bp.Adam(0.01),
    "adamw": lambda: bp.AdamW(0.01, weight_decay=0.1),
}
for name, make_opt in OPTIMIZERS.items():
    # each rank draws its own initial weights (seed = rank); the broadcast makes them rank 0's
    model = model_for(seed=100 + rank)
    model.optimizer = make_opt()
    if rank == 0:
        # rank 0 resumes from a step already taken: its optimizer state must reach the others
        model.zero_grad()
        model.backward(X[:3], y[:3])
        model.step()
    distributed.broadcast_parameters(model, comm)
    check_identical(name + " broadcast params", model.get_flat_params())
    for key, buf in model.optimizer.state_dict().items():
        check_identical(f"{name} broadcast optimizer state {key}", np.asarray(buf))
    reference = model_for(seed=0)
    if rank == 0:
        reference.set_flat_params(model.get_flat_params())
        reference.optimizer = make_opt()
        reference.optimizer.load_state_dict(model.optimizer.state_dict())

    for t in range(steps):
        rows = [micro_batch(s, t) for s in all_shards]
        count = sum(r.stop - r.start for r in rows)
        if count == 0:
            break
        model.zero_grad()
        local = micro_batch(mine, t)
        if local.stop > local.start:
            model.backward(X[local], y[local], sample_weight=sample_weight[local],
                           total_samples=count)
        distributed.allreduce_gradients(model, comm)
        model.step()
        check_identical(f"{name} step {t} grads", model.get_flat_grads())
        if rank == 0:  # one process, the union batch
            union = np.concatenate([np.arange(r.start, r.stop) for r in rows])
            reference.zero_grad()
            reference.backward(X[union], y[union], sample_weight=sample_weight[union])
            reference.step()
    check_identical(name + " params", model.get_flat_params())
    if rank == 0:
        np.testing.assert_allclose(model.get_flat_params(), reference.get_flat_params(),
                                   rtol=1e-12, atol=1e-12, err_msg=name)

# misuse: a rank with another architecture is named in the error, raised on every rank
odd = bp.Sequential([bp.Dense(9 if rank == p - 1 else 8, activation="tanh"),
                     bp.Dense(3, activation="softmax")], dtype="float64", input_dim=n_features)
odd.build()
try:
    distributed.broadcast_parameters(odd, comm)
except ValueError as exc:
    assert f"rank {p - 1}: float64" in str(exc) and "rank 0" in str(exc), str(exc)
else:
    raise AssertionError("a rank with another architecture was not detected")
odd = bp.Sequential([bp.Dense(3, activation="softmax")], dtype="float32" if rank == 1 else "float64",
                    input_dim=n_features).build()
try:
    distributed.check_same_model(odd, comm)
except ValueError as exc:
    assert "rank 1: float32" in str(exc), str(exc)
else:
    raise AssertionError("a rank with another dtype was not detected")
same = bp.Sequential([bp.Dense(3, activation="softmax")], dtype="float64",
                     input_dim=n_features).build()
same.optimizer = bp.Adam(0.01 if rank == 0 else 0.02)
try:
    distributed.broadcast_parameters(same, comm)
except ValueError as exc:
    assert f"rank {p - 1}: Adam(learning_rate=0.02" in str(exc), str(exc)
else:
    raise AssertionError("ranks with different optimizers were not detected")
assert distributed.check_world(comm) == p
# all ranks of this job share one node: each gets its share of the cores
assert distributed.local_threads(comm) == max(1, bp.effective_n_threads() // p)
if rank == 0:
    print(f"ok p={p}")
