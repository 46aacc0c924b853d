"""Run under mpiexec by tests/test_mixed_bfloat16.py: a mixed_bfloat16 model's fit(..., comm=comm)
against one process over the same batches. The gradients are summed over the ranks in float32
(the model's flat gradient buffer), so every rank ends with the same parameters bit for bit; the
one process sums the same rows' products in another order, so it agrees to float32 rounding."""

import sys

import numpy as np
from mpi4py import MPI

import bp
from bp import distributed

comm = MPI.COMM_WORLD
rank, p = comm.Get_rank(), comm.Get_size()
n, n_features, b = 64, 9, 4
rng = np.random.default_rng(3)
X = rng.standard_normal((n, n_features)).astype(np.float32)
y = rng.integers(0, 3, n)
mine = distributed.shard(n, comm)


def new_model(seed):
    return bp.Sequential([bp.Dense(16, activation="relu"), bp.Dense(3, activation="softmax")],
                         dtype="mixed_bfloat16", seed=seed)


model = new_model(seed=rank)  # fit broadcasts rank 0's weights
model.fit(X[mine], y[mine], optimizer=bp.Adam(0.01), batch_size=b, epochs=2, shuffle=False,
          verbose=0, comm=comm)
params = model.get_flat_params()
assert params.dtype == np.float32 and model._grads.dtype == np.float32
everyone = comm.allgather(params)
assert all(np.array_equal(other, params) for other in everyone), "ranks differ"
if rank == 0:
    size = n // p   # n divisible by p: equal contiguous shards
    order = np.concatenate([np.concatenate([np.arange(r * size + t * b, r * size + (t + 1) * b)
                                            for r in range(p)]) for t in range(size // b)])
    one = new_model(seed=0)
    one.fit(X[order], y[order], optimizer=bp.Adam(0.01), batch_size=p * b, epochs=2,
            shuffle=False, verbose=0)
    err = np.abs(one.get_flat_params() - params).max()
    assert err <= 1e-3 * np.abs(params).max(), err
    print(f"ok p={p}")
sys.stdout.flush()
