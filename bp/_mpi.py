"""The MPI mechanism under bp.distributed and fit(comm=...): mpi4py on NumPy buffers.

Everything MPI in bp is here, below the training loop (bp/_training.py) and the public door
(bp/distributed.py), so that both use one implementation. mpi4py is imported on first use:
``import bp`` never needs it, and bp's compiled code never links MPI.

One data-parallel step (every rank, the same step; N the step's rows over all ranks):

    gradient on this rank's rows, scaled by 1 / N      (backward(..., total_samples=N), or the
                                                        engine's global_rows)
    Allreduce(SUM) of the flat gradient buffer          -> the global batch's mean gradient
    the same update on every rank                       -> the same parameters, bit for bit

In fit, StepReducer is that allreduce: the compiled epoch loop calls it once per step, between
the gradient and the update (bpcore/_network.pyx, "Handing the gradient to an allreduce"). With
the gradient it sums a 2-number control vector: the step's loss (so that every rank logs the
global loss, and a non-finite loss on any rank makes it non-finite on all: the divergence guard
stops every rank at the same step) and a Ctrl-C flag (so that all ranks stop after the same step).
"""

import os
import sys

import re

import numpy as np

from . import _threads

# Environment variables by which launchers tell a process how many ranks they started:
# MPICH's Hydra (and Intel MPI), Open MPI's mpirun, and PMIx launchers (Open MPI 5, Slurm).
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")


def mpi():
    """mpi4py's MPI module, imported on first use, with an error that says what to install."""
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        raise ImportError('bp.distributed needs mpi4py: pip install "bp[mpi]" (and, without an MPI '
                          'on the machine, pip install mpich)') from exc
    try:
        from mpi4py import MPI
    except RuntimeError as exc:
        # mpi4py is there but found no MPI library to load: that is a RuntimeError, not an
        # ImportError, which a caller's "except ImportError" would not expect
        raise ImportError(f"mpi4py is installed but could not load an MPI library ({exc}); "
                          f"pip install mpich, or load your cluster's MPI module") from exc
    return MPI


def shard(n_rows, comm):
    """Return this rank's contiguous range of rows.

    Rank r of p gets rows [start, stop) with ``start = r q + min(r, s)``,
    ``q, s = divmod(n_rows, p)``: the first s ranks get one extra row, as numpy.array_split splits.

    Parameters
    ----------
    n_rows : int
        The number of rows to split (>= 0).
    comm : mpi4py communicator
        The ranks that train together (``MPI.COMM_WORLD``, or anything with ``Get_rank()`` and
        ``Get_size()`` where only those are used).

    Returns
    -------
    slice
        ``slice(start, stop)``: ``X[shard(len(X), comm)]`` is this rank's block (a view).

    See Also
    --------
    shard_rows : The block itself.

    Examples
    --------
    >>> from bp import distributed
    >>> class Rank:                                  # stands in for a communicator here
    ...     def __init__(self, rank, size):
    ...         self.Get_rank, self.Get_size = (lambda: rank), (lambda: size)
    >>> [distributed.shard(10, Rank(r, 4)) for r in range(4)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 8, None), slice(8, 10, None)]
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
        raise ValueError(f"n_rows must be a non-negative int. Received: n_rows={n_rows!r}")
    rank, size = comm.Get_rank(), comm.Get_size()
    q, s = divmod(int(n_rows), size)
    start = rank * q + min(rank, s)
    return slice(start, start + q + (rank < s))


def shard_rows(X, comm):
    """Return this rank's block of rows of X, ``X[shard(len(X), comm)]``.

    A view, never a copy: for an array from ``np.load(path, mmap_mode="r")`` only this rank's rows
    are ever read from disk.

    Parameters
    ----------
    X : numpy.ndarray or numpy.memmap
        The whole data set (every rank passes the same one).
    comm : mpi4py communicator
        The ranks that train together (``MPI.COMM_WORLD``, or anything with ``Get_rank()`` and
        ``Get_size()`` where only those are used).

    Returns
    -------
    numpy.ndarray
        A view of this rank's rows.

    Examples
    --------
    >>> import numpy as np
    >>> from bp import distributed
    >>> from mpi4py import MPI
    >>> comm = MPI.COMM_WORLD                        # one rank when not under mpiexec
    >>> X = np.arange(20.0).reshape(10, 2)
    >>> distributed.shard_rows(X, comm).shape            # all 10 rows on a world of one
    (10, 2)
    """
    if not hasattr(X, "shape") or len(X.shape) < 1:
        raise TypeError(f"X must be an array with rows. Received: {type(X).__name__}")
    return X[shard(X.shape[0], comm)]


def check_world(comm=None):
    """Raise if the launcher started more ranks than MPI's world holds.

    An ``mpiexec`` from another MPI than the one mpi4py loads (Open MPI's mpirun around an MPICH
    mpi4py, say) starts n processes that each see a world of size 1: each would train alone on
    all of its data, silently. The launcher's own variables (PMI_SIZE, OMPI_COMM_WORLD_SIZE,
    PMIX_SIZE) tell how many it started.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        Only used to reach mpi4py's ``COMM_WORLD``.

    Returns
    -------
    int
        The size of MPI's world.

    Raises
    ------
    RuntimeError
        When the launcher's count and the world's size differ.

    Examples
    --------
    >>> from bp import distributed
    >>> from mpi4py import MPI
    >>> distributed.check_world(MPI.COMM_WORLD)          # no launcher: a world of one
    1
    """
    MPI = mpi()
    world = MPI.COMM_WORLD.Get_size()
    for var in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) != world:
            raise RuntimeError(
                f"the launcher started {value} processes ({var}={value}) but MPI's world has "
                f"{world}: mpiexec belongs to another MPI than the one mpi4py loaded "
                f"({MPI.Get_library_version().splitlines()[0].strip()}). Launch with that MPI's "
                f"mpiexec (for the PyPI mpich: the mpiexec beside this python, "
                f"{os.path.dirname(os.path.realpath(sys.executable))})")
    return world


def _signature(model):
    """What must agree across ranks: dtype, input width and each layer's width, activation and
    bias."""
    layers = ", ".join(f"{layer.units} {layer.activation}" + ("" if layer.use_bias else " no-bias")
                       for layer in model.layers)
    return f"{model.dtype.name} input {model.input_dim}: [{layers}]"


def check_same_model(model, comm):
    """Raise, on every rank, if the ranks' models differ in architecture or dtype (or are not all built).

    The error names the ranks that differ from rank 0 and what each holds.

    Parameters
    ----------
    model : Sequential
        This rank's model.
    comm : mpi4py communicator
        The ranks that train together (``MPI.COMM_WORLD``, or anything with ``Get_rank()`` and
        ``Get_size()`` where only those are used).

    Raises
    ------
    ValueError
        When the ranks' models differ.

    Examples
    --------
    >>> import bp
    >>> from bp import distributed
    >>> from mpi4py import MPI
    >>> comm = MPI.COMM_WORLD                        # one rank when not under mpiexec
    >>> model = bp.Sequential([bp.Dense(2)], seed=0).build(3)
    >>> distributed.check_same_model(model, comm)
    """
    mine = _signature(model) if model.built else "not built"
    everyone = comm.allgather(mine)
    bad = [r for r, s in enumerate(everyone) if s != everyone[0]]
    if everyone[0] == "not built":
        bad = [r for r, s in enumerate(everyone) if s == "not built"]
    if bad:
        held = "; ".join(f"rank {r}: {everyone[r]}" for r in bad)
        raise ValueError(f"every rank must hold the same built model (architecture and dtype). "
                         f"Expected rank 0's {everyone[0]}. Received: {held}")


def _gradient_buffer(model):
    """The one place bp.distributed touches a private of the model: its flat gradient buffer,
    which ``backward`` accumulates into and ``step`` reads (``get_flat_grads`` hands out only a
    read-only view of it). The allreduce writes the ranks' sum into it, in place."""
    model._require_built()
    return model._passes.grads


def broadcast_parameters(model, comm, root=0):
    """Give every rank rank `root`'s parameters and optimizer state, so that all ranks start bit for bit the same.

    Call it once after building the model on every rank (``model.build(n_features)``), before the
    first step. It first checks the launch (``check_world``) and that the ranks hold the same
    architecture and dtype (``check_same_model``). The optimizer is ``model.optimizer``; its
    state (step count, moments, learning-rate schedule's epoch) is broadcast too, so that a model
    resumed from a file on rank 0 resumes everywhere.

    Parameters
    ----------
    model : Sequential
        Built, the same architecture and dtype on every rank; updated in place.
    comm : mpi4py communicator
        The ranks that train together (``MPI.COMM_WORLD``, or anything with ``Get_rank()`` and
        ``Get_size()`` where only those are used).
    root : int, default=0
        The rank whose model the others receive.

    Examples
    --------
    >>> import bp
    >>> from bp import distributed
    >>> from mpi4py import MPI
    >>> comm = MPI.COMM_WORLD                        # one rank when not under mpiexec
    >>> model = bp.Sequential([bp.Dense(2)], seed=0).build(3)
    >>> distributed.broadcast_parameters(model, comm)
    """
    check_world(comm)
    check_same_model(model, comm)
    params = model._passes.params  # written in place: the layers' W and b are views into it
    comm.Bcast(params, root=root)
    opt = model.optimizer
    # (a schedule without its own repr shows its address, which differs between processes)
    described = comm.allgather(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(opt)))
    bad = [r for r, d in enumerate(described) if d != described[root]]
    if bad:
        held = "; ".join(f"rank {r}: {described[r]}" for r in bad)
        raise ValueError(f"every rank must hold the same model.optimizer. Expected rank {root}'s "
                         f"{described[root]}. Received: {held}")
    if opt is None:
        return  # the first step() makes the same default optimizer, zero state, everywhere
    # the scalars and the buffers' names by pickle (small), the buffers by Bcast (no copy)
    state = opt.state_dict() if comm.Get_rank() == root else None
    meta = comm.bcast({"epoch": opt._epoch, "iterations": opt.iterations,
                       "names": sorted(k for k in state if k != "iterations")}
                      if state is not None else None, root=root)
    if state is None:
        state = {name: np.zeros_like(params) for name in meta["names"]}
    for name in meta["names"]:
        comm.Bcast(state[name], root=root)
    state["iterations"] = meta["iterations"]
    opt.load_state_dict(state)
    if meta["epoch"] is not None:
        opt.set_epoch(meta["epoch"])


def allreduce_gradients(model, comm):
    """Replace the model's gradient buffer by its sum over the ranks (``MPI_Allreduce``, in place).

    ``g <- sum_r g_r`` over one flat buffer. The sum is the global batch's mean gradient when each
    rank's ``backward`` was told the global count,
    ``model.backward(X_part, y_part, total_samples=N_global)`` (the default, the rank's own row
    count, would give p times the mean over equal shards). With it, the step that follows is the
    step one process makes on the union of the ranks' rows, and gradient clipping (``clip_norm``)
    clips by the global norm.

    Parameters
    ----------
    model : Sequential
        Built, the same on every rank.
    comm : mpi4py communicator
        The ranks that train together (``MPI.COMM_WORLD``, or anything with ``Get_rank()`` and
        ``Get_size()`` where only those are used).

    Returns
    -------
    numpy.ndarray
        The model's gradient buffer as a read-only view (``model.get_flat_grads()``).

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> from bp import distributed
    >>> from mpi4py import MPI
    >>> comm = MPI.COMM_WORLD                        # one rank when not under mpiexec
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((8, 3)), rng.standard_normal(8)
    >>> model = bp.Sequential([bp.Dense(1)], seed=0).build(3)
    >>> distributed.broadcast_parameters(model, comm)
    >>> model.zero_grad()
    >>> _ = model.backward(X, y, total_samples=8 * comm.Get_size())
    >>> grads = distributed.allreduce_gradients(model, comm)
    >>> model.step(bp.SGD(learning_rate=0.1))
    """
    MPI = mpi()
    comm.Allreduce(MPI.IN_PLACE, _gradient_buffer(model), op=MPI.SUM)
    return model.get_flat_grads()


def local_threads(comm):
    """Return this rank's share of its node's cores: cores // (ranks on the node), at least 1.

    Ranks on one node that each run one thread per core would oversubscribe it p-fold; this is
    the default a data-parallel run should give ``bp.set_num_threads``.

    Parameters
    ----------
    comm : mpi4py communicator
        The ranks that train together (``MPI.COMM_WORLD``, or anything with ``Get_rank()`` and
        ``Get_size()`` where only those are used).

    Returns
    -------
    int
        The thread count for this rank.

    Examples
    --------
    >>> from bp import distributed
    >>> from mpi4py import MPI
    >>> comm = MPI.COMM_WORLD                        # one rank when not under mpiexec
    >>> distributed.local_threads(comm) >= 1
    True
    """
    MPI = mpi()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        on_node = node.Get_size()
    finally:
        node.Free()
    return max(1, _threads.effective_n_threads(None) // on_node)


# ---- fit(comm=...) -----------------------------------------------------------------------------
def rank_threads(comm):
    """The thread count a rank of a data-parallel fit uses when the user chose none (neither
    bp.set_num_threads nor OMP_NUM_THREADS): its share of the node's cores. None if they chose."""
    if _threads._n_threads is not None or _threads._omp_num_threads_env() is not None:
        return None
    return local_threads(comm)


def global_step_rows(n_local, per_step, comm):
    """The rows of each step of an epoch summed over the ranks (int64, one entry per step).

    Every rank runs the same number of steps: that of the rank with the most rows. Step s of rank
    r takes its rows s * per_step ... (s + 1) * per_step (after its own shuffle); a rank whose rows
    ran out contributes nothing to that step, and the step's mean is over the rows the ranks did
    contribute (so it is the step one process makes on the union of those rows).
    """
    sizes = np.array(comm.allgather(int(n_local)), dtype=np.int64)
    n_steps = int(-(-sizes.max() // per_step))
    starts = np.arange(n_steps, dtype=np.int64)[:, None] * per_step
    return np.clip(sizes[None, :] - starts, 0, per_step).sum(axis=1)


def sum_over_ranks(comm, values):
    """A few numbers summed over the ranks (float64), the same on every rank."""
    buf = np.array(values, dtype=np.float64)
    comm.Allreduce(mpi().IN_PLACE, buf, op=mpi().SUM)
    return buf


class StepReducer:
    """The allreduce of a data-parallel step: the compiled epoch loop calls it (no arguments)
    between a step's gradient and its update; ``ctl`` = [the step's loss on this rank, 0] comes
    in and [the global step loss, the number of ranks asking to stop] goes out, and the gradient
    buffer comes out summed over the ranks. It never raises into the loop: an exception is kept in
    ``error`` (and 1 returned) for the Python side to raise once the loop has stopped.
    """

    def __init__(self, comm, grads, sigint):
        MPI = mpi()
        self.comm, self.grads, self.sigint = comm, grads, sigint
        self.ctl = np.zeros(2)
        self.error = None
        self._in_place, self._sum = MPI.IN_PLACE, MPI.SUM

    def __call__(self):
        try:
            self.ctl[1] = 1.0 if self.sigint.requested else 0.0
            # the small sum travels beside the large one instead of paying its own latency after
            request = self.comm.Iallreduce(self._in_place, self.ctl, op=self._sum)
            self.comm.Allreduce(self._in_place, self.grads, op=self._sum)
            request.Wait()
            return 0
        except BaseException as exc:  # noqa: BLE001  (handed to the Python side, raised there)
            self.error = exc
            return 1

    def step(self, step_loss):
        """The same, for the Python step loop: (global step loss, stop?)."""
        self.ctl[0] = step_loss
        if self():
            raise self.error
        return float(self.ctl[0]), bool(self.ctl[1])


def writes_files(model):
    """False on the ranks other than 0 of the communicator the model was last fitted over: they
    skip ``save`` (rank 0 writes the one file)."""
    comm = getattr(model, "_comm", None)
    return comm is None or comm.Get_rank() == 0
