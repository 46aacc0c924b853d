"""Run under mpiexec by tests/test_adversarial_mpi.py: ranks whose fit settings disagree.

Every setting that must agree across the ranks of a data-parallel fit is compared in one
collective check before anything changes (bp/_mpi.Agreement): a mismatch fails on every rank with
a ValueError naming the setting and each rank's value, and a rank whose own checks refuse its
arguments makes every other rank fail too (instead of "Message truncated" or a hang). The models
are untouched on every rank. Any failure raises, and ``python -m mpi4py`` aborts the job.
"""

import re
import sys

import numpy as np
from mpi4py import MPI

import bp

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))
from _reliability import assert_unchanged, classifier, data, snapshot  # noqa: E402

comm = MPI.COMM_WORLD
rank, p = comm.Get_rank(), comm.Get_size()
X, y = data(12, seed=rank)
odd = rank == p - 1  # the last rank disagrees

CASES = [  # (setting named in the message, fit's keyword arguments on the odd rank)
    ("batch_size", {"batch_size": 5}),
    ("accumulate", {"accumulate": 2}),
    ("epochs", {"epochs": 3}),
    ("loss", {"loss": "mse"}),
    ("callbacks", {"callbacks": [bp.EarlyStopping(monitor="loss")]}),
    ("validation", {"validation_data": data(4, seed=9)}),
    ("shuffle", {"shuffle": False}),
]
for setting, changes in CASES:
    model = classifier()
    before = snapshot(model)
    kwargs = {"epochs": 1, "batch_size": 4, "verbose": 0, "loss": "cross_entropy",
              **(changes if odd else {})}
    if setting == "loss" and odd:
        kwargs["y"] = np.eye(3)[y]
    try:
        model.fit(X, kwargs.pop("y", y), comm=comm, **kwargs)
    except ValueError as exc:
        assert re.search(rf"every rank of a data-parallel fit must use the same {setting}\. "
                         rf"Received: rank 0: .*, rank {p - 1}: ", str(exc)), str(exc)
    else:
        raise AssertionError(f"rank {rank}: a fit whose {setting} differs across ranks ran")
    assert_unchanged(before, snapshot(model))

# a rank whose own arguments are refused: the others fail too, naming it
model = classifier()
before = snapshot(model)
try:
    model.fit(X, y, comm=comm, epochs=1, batch_size=0 if odd else 4, verbose=0)
except (TypeError, ValueError) as exc:
    message = str(exc)
    if odd:
        assert "batch_size must be a positive integer" in message, message
    else:
        assert re.search(rf"fit was refused on rank {p - 1}: ValueError: batch_size must be a "
                         rf"positive integer", message), message
else:
    raise AssertionError("one rank's refused argument let the others train")
assert_unchanged(before, snapshot(model))

# and agreeing ranks still train
model = classifier()
model.fit(X, y, comm=comm, epochs=1, batch_size=4, verbose=0)
comm.Barrier()
if rank == 0:
    print(f"ok p={p}")
