# The training engine: a whole network's step, or a whole epoch of steps, in one nogil call.
#
# A model is a table of operations, built once per model (Network(params, grads, ops)) and bound
# to a workspace once per batch size (bind). Each operation reads the output of one before it
# (`src`, -1 for the batch X) and is one file of bpcore with a forward and a backward nogil core
# under a header stating its mathematics:
#
#     dense        _dense_forward / _dense    z_in = z_out_prev @ W + b;  z_out = sigma(z_in)
#     activation   _activation                z_out = sigma(z_in)
#     dropout      _dropout                   z_out = z_in * mask / (1 - rate)   (training only)
#     layer_norm   _layer_norm                per row:    (z_in - mu) / sqrt(var + eps) * gamma + beta
#     batch_norm   _batch_norm                per column, batch statistics (training) or running
#     fork, add    _residual                  a residual block's start (identity) and end (+ skip)
#
# A step walks the table forwards (each op's forward core, its output left in `cur`), computes the
# loss and the output error signal (_loss, _error_signal.output_delta_core), walks it backwards
# (each op's backward core: from g = dL/d its output, held in its `delta` buffer, the gradients of
# its parameters and g for its src, written into src's delta buffer), adds the penalties
# (_regularize) and updates the flat parameter vector (_param_update).
#
# Adding an operation: write bpcore/_<op>.pyx (+ .pxd) with <op>_forward_core and
# <op>_backward_core (inputs first, outputs last, `acc` for gradient accumulation, nothing
# allocated, no GIL), give it an OP_ code below and a case in _forward_op and _backward_op, and
# have bp/_ops.py describe it (its parameters' offsets in the flat buffer, its workspace buffers)
# and run its Python twin. An activation is not an operation: a new code in _activations.pxd
# (sigma beside sigma') is at once a Dense's activation and an Activation layer's. A new optimizer
# is an OPT_ kind with a case in _update (and in _update_is_safe if its growth can be bounded).
# Every matrix product goes through _blas.gemm, the one place to route a product elsewhere.
#
# Why one call: a Python loop over layers costs ~1-2 us per kernel call (argument parsing,
# memoryview acquisition, releasing and re-taking the GIL). For the XOR network that is 10 us
# against well under 1 us of arithmetic; for any network the cost grows with the depth. Here a
# step is one C loop over a table of raw pointers, set up once per batch size.
#
# Ownership: the engine owns nothing but that table. The parameters and gradients are the model's
# flat buffers, the cached z_in, z_out and delta of every operation are the model's workspace
# arrays (so model.z_out, model.error_signals and the divergence report read the same memory), a
# BatchNormalization's running statistics are the model's state array, and the optimizer's
# hyperparameters and state buffers belong to the bp.optimizers object and are passed in per call
# as plain values (Optimizer._engine_spec()): like scikit-learn's _sgd_fast.pyx, which never
# imports its estimator, the engine imports nothing from bp. Gradients, optimizer state and the
# loop therefore stay separable (a data-parallel step sums the flat gradient between `backward`
# and `update`).
#
# Threads: BLAS threads the products (its pool is held to bp's thread count by bp._threads); the
# elementwise passes of a step run serial by default. Measured on 2 cores (bench/README.md): an
# OpenMP team between BLAS calls leaves libgomp's threads spinning while OpenBLAS's threads want
# the same cores, and the mnist step with 2 threads took 19-140 ms instead of 0.8 ms; with the
# epilogues serial and BLAS on 2 threads it is 1.7x faster than 1 thread. (OMP_WAIT_POLICY=passive
# also cures it, but bp must not set a process-wide variable for the user.) The epilogues are a
# few percent of a step whose products are large enough for threads to pay.
# Network(..., parallel_elementwise=True) restores OpenMP for them (for measurements).

from cython cimport floating
from libc.math cimport fabs, isfinite, pow, sqrt
from libc.string cimport memcpy, memset
from libc.stdlib cimport calloc, free
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from bpcore._activation cimport activation_forward_core, activation_backward_core
from bpcore._batch_norm cimport batch_norm_forward_core, batch_norm_backward_core
from bpcore._dense cimport dense_backward_core
from bpcore._dense_forward cimport dense_forward_core
from bpcore._dropout cimport u64, dropout_forward_core, dropout_backward_into_core
from bpcore._error_signal cimport output_delta_core
from bpcore._layer_norm cimport layer_norm_forward_core, layer_norm_backward_core
from bpcore._loss cimport loss_core, clipped_log_loss_core, MSE, CROSS_ENTROPY
from bpcore._param_update cimport (sgd_core, adam_core, sum_of_squares_core, sums_of_squares_core,
                                   sklearn_update_core, SKLEARN_SGD, SKLEARN_ADAM)
from bpcore._regularize cimport penalty_core
from bpcore._residual cimport add_core

import numpy as np
cimport numpy as cnp

cnp.import_array()

# PyErr_CheckSignals runs the Python signal handlers; declared here without `except` so that a
# raised KeyboardInterrupt stays pending while the loop winds down and records where it stopped
# (the def method then lets it propagate).
cdef extern from "Python.h":
    int PyErr_CheckSignals()
    void* PyErr_Occurred()

# How often the epoch loop looks for Ctrl-C: at most every SIGNAL_NS nanoseconds (between steps),
# so that a tiny network does not pay for taking the GIL on every one of its ~1 us steps.
cdef long long SIGNAL_NS = 2000000

# Optimizer kinds
cdef enum:
    OPT_SGD = 1
    OPT_ADAM = 2
    OPT_SKLEARN_SGD = 3     # scikit-learn's MLP rules, for bp.sklearn (_update_sklearn)
    OPT_SKLEARN_ADAM = 4

# Status of an epoch run
cdef enum:
    DONE = 0
    DIVERGED = 1              # a non-finite loss or gradient: the update was not applied
    DIVERGED_IN_UPDATE = 2    # the update made a parameter non-finite: undone from the backup
    INTERRUPTED = 3           # Ctrl-C between steps

STATUS = {"done": DONE, "diverged": DIVERGED, "diverged_in_update": DIVERGED_IN_UPDATE,
          "interrupted": INTERRUPTED}


# Operation kinds (bp/_ops.py names them: OP_KINDS)
cdef enum:
    OP_DENSE = 1
    OP_ACTIVATION = 2
    OP_DROPOUT = 3
    OP_LAYER_NORM = 4
    OP_BATCH_NORM = 5
    OP_FORK = 6        # where a residual block begins: the identity, and the skip's delta added
    OP_ADD = 7         # where it ends: the block's output + the fork's


cdef struct Op:
    int kind
    Py_ssize_t src                # the operation whose output this one reads (-1: the batch X)
    Py_ssize_t link               # fork <-> add: the other end of the residual block
    Py_ssize_t n_in, n_out
    Py_ssize_t w_off, b_off       # W and b (dense), gamma and beta (norms); < 0: none
    bint send_back                # backward writes g for src (something before has parameters)
    int act                       # dense, activation: sigma's code (_activations.pxd)
    double alpha
    double kernel_l1, kernel_l2, bias_l1, bias_l2   # dense: the penalties (0: none)
    u64 drop_seed, drop_threshold
    double drop_scale             # dropout: 1 / (1 - rate)
    double eps, momentum          # norms
    void* running                 # batch_norm: running mean and var (2 n_out, model dtype)
    void* z_in                    # dense: z_in; norms: xhat
    void* z_out
    void* delta                   # g = dL/dz_out (dense: dL/dz_in once its backward ran)
    void* mask                    # dropout: (rows, n_out) bytes
    void* stats                   # norms: the statistics (double)
    void* cur                     # set by the forward pass: the output the next ones read


cdef struct Opt:
    int kind
    double lr, momentum, weight_decay, beta1, beta2, eps, clip_norm   # clip_norm <= 0: none
    bint nesterov, decoupled
    void* state1          # SGD velocity (NULL without momentum) / Adam m
    void* state2          # Adam v
    void* saved1          # where the guard keeps state1 / state2 during a step (NULL: none)
    void* saved2
    long iterations       # the optimizer's step count before this call
    # scikit-learn's kinds only: its L2 penalty alpha ||W||^2 / (2 sum(w)) and its loss
    # conventions (a batch's loss is a mean over the sum of its weights, sw)
    double alpha, loss_scale, loss_factor   # scale = loss_scale / sw; reported = factor * L
    double sw, wsumsq                       # this step's sum(w); ||W||^2 before its update
    const Op* ops                           # the dense weight segments the penalty applies to
    Py_ssize_t n_ops


cdef inline long long _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline const floating* _input(const Op* ops, const Op* O, const floating* X) noexcept nogil:
    return X if O.src < 0 else <const floating*>ops[O.src].cur


cdef void _forward_op(Op* ops, Op* O, const floating* params, const floating* X, Py_ssize_t n,
                      long long draw, int nt) noexcept nogil:
    """One operation's forward pass (draw < 0: inference mode)."""
    cdef const floating* x = _input(ops, O, X)
    cdef const floating* w = (params + O.w_off) if O.w_off >= 0 else NULL
    cdef const floating* b = (params + O.b_off) if O.b_off >= 0 else NULL
    O.cur = O.z_out
    if O.kind == OP_DENSE:
        dense_forward_core(x, n, O.n_in, O.n_in, w, b, O.n_out, O.act, <floating>O.alpha,
                           <floating*>O.z_in, <floating*>O.z_out, nt)
    elif O.kind == OP_ACTIVATION:
        activation_forward_core(x, n, O.n_out, O.act, <floating>O.alpha, <floating*>O.z_out, nt)
    elif O.kind == OP_DROPOUT:
        if draw >= 0:
            dropout_forward_core(x, n, O.n_out, O.drop_seed, <u64>draw, O.drop_threshold,
                                 <floating>O.drop_scale, <unsigned char*>O.mask,
                                 <floating*>O.z_out, nt)
        else:
            O.cur = <void*>x
    elif O.kind == OP_LAYER_NORM:
        layer_norm_forward_core(x, n, O.n_out, w, b, O.eps, <floating*>O.z_in,
                                <double*>O.stats, <floating*>O.z_out, nt)
    elif O.kind == OP_BATCH_NORM:
        batch_norm_forward_core(x, n, O.n_out, w, b, O.eps, draw >= 0, O.momentum,
                                <floating*>O.running, <floating*>O.z_in, <double*>O.stats,
                                <floating*>O.z_out)
    elif O.kind == OP_FORK:
        O.cur = <void*>x
    elif O.kind == OP_ADD:
        add_core(x, <const floating*>ops[O.link].cur, n * O.n_out, <floating*>O.z_out)


cdef void _backward_op(Op* ops, Op* O, bint last, const floating* params, floating* grads,
                       const floating* X, Py_ssize_t n, floating acc, long long draw,
                       int nt) noexcept nogil:
    """One operation's backward pass: from g in O.delta, its parameters' gradients
    (grad = acc grad + this batch's) and, with send_back, g for its src in src's delta."""
    cdef const floating* x = _input(ops, O, X)
    cdef floating* gp = <floating*>ops[O.src].delta if O.send_back else NULL
    cdef const floating* w = (params + O.w_off) if O.w_off >= 0 else NULL
    cdef floating* gw = (grads + O.w_off) if O.w_off >= 0 else NULL
    cdef floating* gb = (grads + O.b_off) if O.b_off >= 0 else NULL
    cdef Py_ssize_t count = n * O.n_out
    if O.kind == OP_DENSE:
        dense_backward_core(x, n, O.n_in, w, <floating*>O.z_in, <floating*>O.z_out, O.n_out,
                            O.act, <floating>O.alpha, last, acc, <floating*>O.delta, gw, gb, gp,
                            nt)
    elif gp == NULL or (last and O.kind == OP_ACTIVATION):
        # nothing to send back (an output Activation's g for src came from the loss)
        if O.kind == OP_LAYER_NORM:
            layer_norm_backward_core(<floating*>O.z_in, <double*>O.stats, <floating*>O.delta, n,
                                     O.n_out, w, acc, gw, gb, NULL, nt)
        elif O.kind == OP_BATCH_NORM:
            batch_norm_backward_core(<floating*>O.z_in, <double*>O.stats, <floating*>O.delta,
                                     n, O.n_out, w, draw >= 0, acc, gw, gb, NULL)
    elif O.kind == OP_ACTIVATION:
        activation_backward_core(x, <floating*>O.z_out, <floating*>O.delta, n, O.n_out, O.act,
                                 <floating>O.alpha, gp, nt)
    elif O.kind == OP_DROPOUT:
        if draw >= 0:
            dropout_backward_into_core(<unsigned char*>O.mask, <floating*>O.delta, count,
                                       <floating>O.drop_scale, gp, nt)
        else:
            memcpy(gp, O.delta, count * sizeof(floating))
    elif O.kind == OP_LAYER_NORM:
        layer_norm_backward_core(<floating*>O.z_in, <double*>O.stats, <floating*>O.delta, n,
                                 O.n_out, w, acc, gw, gb, gp, nt)
    elif O.kind == OP_BATCH_NORM:
        batch_norm_backward_core(<floating*>O.z_in, <double*>O.stats, <floating*>O.delta, n,
                                 O.n_out, w, draw >= 0, acc, gw, gb, gp)
    elif O.kind == OP_FORK:   # the block's g plus the skip's (the add's g, unchanged)
        add_core(<floating*>O.delta, <floating*>ops[O.link].delta, count, gp)
    elif O.kind == OP_ADD:    # the block's last operation receives g unchanged
        memcpy(gp, O.delta, count * sizeof(floating))


cdef double _backward(Op* ops, Py_ssize_t n_ops, const floating* params,
                      floating* grads, const floating* X, const floating* Y,
                      const floating* w, Py_ssize_t n, int loss, double scale, floating acc,
                      floating* per_sample, long long draw, int nt) noexcept nogil:
    """Forward, loss, error signals and gradients of one batch; returns the batch loss.
    draw < 0: inference mode (no dropout, running statistics); else training batch `draw`
    (its dropout masks). The output operation is a dense or an activation: its (f_in, f_out,
    tau) meet the loss, and output_delta_core writes dL/df_in (the dense's delta, or the
    activation's src's g)."""
    cdef Py_ssize_t i
    cdef Op* O
    cdef const floating* f_in
    cdef floating* target
    cdef double value
    for i in range(n_ops):
        _forward_op(ops, &ops[i], params, X, n, draw, nt)
    O = &ops[n_ops - 1]
    if O.kind == OP_DENSE:
        f_in, target = <floating*>O.z_in, <floating*>O.delta
    else:
        f_in = _input(ops, O, X)
        target = <floating*>ops[O.src].delta if O.send_back else NULL
    value = loss_core(f_in, <floating*>O.z_out, Y, w, n, O.n_out, loss, scale, per_sample, nt)
    if target != NULL:
        output_delta_core(f_in, <floating*>O.z_out, Y, w, n, O.n_out, loss, O.act,
                          <floating>O.alpha, <floating>scale, target, nt)
    # Each g is computed once and used twice: this operation's gradients, the previous g.
    for i in range(n_ops - 1, -1, -1):
        _backward_op(ops, &ops[i], i == n_ops - 1, params, grads, X, n, acc, draw, nt)
    return value


cdef double _penalties(const Op* ops, Py_ssize_t n_ops, const floating* params,
                       floating* grads, int nt) noexcept nogil:
    """sum of the dense operations' R(W) + R(b), with their gradients added to grads (once per
    step)."""
    cdef Py_ssize_t i
    cdef const Op* L
    cdef double value = 0
    for i in range(n_ops):
        L = &ops[i]
        if L.kind != OP_DENSE:
            continue
        if L.kernel_l1 != 0 or L.kernel_l2 != 0:
            value += penalty_core(params + L.w_off, L.n_in * L.n_out, L.kernel_l1, L.kernel_l2,
                                  grads + L.w_off, nt)
        if L.b_off >= 0 and (L.bias_l1 != 0 or L.bias_l2 != 0):
            value += penalty_core(params + L.b_off, L.n_out, L.bias_l1, L.bias_l2,
                                  grads + L.b_off, nt)
    return value


cdef void _update(Opt* o, floating* params, const floating* grads, Py_ssize_t n_params,
                  double grad_sumsq, int nt) noexcept nogil:
    """One optimizer step (bp.optimizers.Optimizer.apply without the Python): global-norm
    clipping from the gradient's sum of squares, then the fused update."""
    cdef double grad_scale = 1.0, norm
    if o.kind == OPT_SKLEARN_SGD or o.kind == OPT_SKLEARN_ADAM:
        _update_sklearn(o, params, grads, nt)
        return
    if o.clip_norm > 0:
        if grad_sumsq < 0:
            grad_sumsq = sum_of_squares_core(grads, n_params, nt)
        norm = sqrt(grad_sumsq)
        if isfinite(norm):
            grad_scale = min(1.0, o.clip_norm / (norm + 1e-6))
    o.iterations += 1
    if o.kind == OPT_SGD:
        sgd_core(grads, n_params, <floating>o.lr, <floating>o.momentum, o.nesterov,
                 <floating>o.weight_decay, <floating>grad_scale, params,
                 <floating*>o.state1, nt)
    else:
        adam_core(grads, n_params, <floating>o.lr, <floating>o.beta1, <floating>o.beta2,
                  <floating>o.eps, <floating>o.weight_decay, o.decoupled, o.iterations,
                  <floating>grad_scale, params, <floating*>o.state1, <floating*>o.state2, nt)


cdef void _update_sklearn(Opt* o, floating* params, const floating* grads, int nt) noexcept nogil:
    """scikit-learn's SGD or Adam step (sklearn_update_core) with the L2 term alpha W / sw on
    each layer's weights, not its biases; leaves ||W||^2 before the step in o.wsumsq."""
    cdef Py_ssize_t i
    cdef Py_ssize_t bounds[3]
    cdef const Op* L
    cdef double lr = o.lr
    cdef int rule = SKLEARN_ADAM if o.kind == OPT_SKLEARN_ADAM else SKLEARN_SGD
    o.iterations += 1
    if o.kind == OPT_SKLEARN_ADAM:   # lr_t, as AdamOptimizer._get_updates computes it
        lr = (o.lr * sqrt(1 - pow(o.beta2, <double>o.iterations))
              / (1 - pow(o.beta1, <double>o.iterations)))
    o.wsumsq = 0
    for i in range(o.n_ops):
        L = &o.ops[i]
        if L.kind != OP_DENSE:
            continue
        bounds[0], bounds[1], bounds[2] = L.w_off, L.b_off, L.b_off + L.n_out
        o.wsumsq += sklearn_update_core(rule, grads, bounds, 3, <floating>(o.alpha / o.sw),
                                        <floating>lr, <floating>o.momentum, o.nesterov,
                                        <floating>o.beta1, <floating>o.beta2, <floating>o.eps,
                                        params, <floating*>o.state1, <floating*>o.state2, nt)


cdef double _weight_sum(const floating* w, const long long* order, Py_ssize_t start,
                        Py_ssize_t rows) noexcept nogil:
    """sum(w) over a step's rows (rows itself without weights), in double."""
    cdef Py_ssize_t r
    cdef double sw = 0
    if w == NULL:
        return rows
    for r in range(start, start + rows):
        sw += w[order[r] if order != NULL else r]
    return sw


cdef inline void _save_state(Opt* o, size_t nbytes, bint restore) noexcept nogil:
    """Copy the optimizer state into its saved buffers (or back, with restore)."""
    if o.state1 != NULL and o.saved1 != NULL:
        if restore:
            memcpy(o.state1, o.saved1, nbytes)
        else:
            memcpy(o.saved1, o.state1, nbytes)
    if o.state2 != NULL and o.saved2 != NULL:
        if restore:
            memcpy(o.state2, o.saved2, nbytes)
        else:
            memcpy(o.saved2, o.state2, nbytes)


cdef inline bint _state_is_finite(Opt* o, floating* kind, Py_ssize_t n, int nt) noexcept nogil:
    """True if the optimizer state is finite (Adam's v overflowing to inf would freeze its
    parameter silently). `kind` only selects the dtype."""
    if o.state1 != NULL and not isfinite(sum_of_squares_core(<floating*>o.state1, n, nt)):
        return False
    if o.state2 != NULL and not isfinite(sum_of_squares_core(<floating*>o.state2, n, nt)):
        return False
    return True


cdef double _batch_hits(const floating* f_out, const floating* Y, const floating* w,
                        Py_ssize_t n, Py_ssize_t m, int loss) noexcept nogil:
    """The (weighted) number of correctly classified rows, as bp.losses.accuracy(count=True):
    argmax agreement (first maximum, like np.argmax) for cross-entropy, the fraction of outputs on
    the right side of 0.5 for binary cross-entropy."""
    cdef Py_ssize_t i, j, a, b
    cdef double hit, total = 0
    for i in range(n):
        if loss == CROSS_ENTROPY:
            a = 0
            b = 0
            for j in range(1, m):
                if f_out[i * m + j] > f_out[i * m + a]:
                    a = j
                if Y[i * m + j] > Y[i * m + b]:
                    b = j
            hit = 1.0 if a == b else 0.0
        else:
            hit = 0
            for j in range(m):
                if (f_out[i * m + j] >= 0.5) == (Y[i * m + j] >= 0.5):
                    hit += 1
            hit = hit / m
        total += hit * (<double>w[i] if w != NULL else 1.0)
    return total


cdef void _gather(const floating* src, const long long* idx, Py_ssize_t rows, Py_ssize_t width,
                  floating* dst) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(rows):
        memcpy(dst + r * width, src + idx[r] * width, width * sizeof(floating))


cdef struct Epoch:
    # inputs
    const void* X
    const void* Y
    const void* w                # NULL: no sample weights
    const long long* order       # NULL: rows in order (no copy, the batch is a slice)
    Py_ssize_t n, n_in, m, batch_size, accumulate, first_step, n_steps
    Py_ssize_t mean_width        # a step's loss is the mean over step_rows * mean_width numbers
    int loss
    bint count_hits, guard
    bint penalized               # a layer has a regulariser: _penalties once a step
    # buffers of the workspace (capacity batch_size rows)
    void* Xb
    void* Yb
    void* wb
    void* per_sample
    void* backup                 # n_params entries, for the guard
    void* stop                   # an object whose .requested says "stop" (Ctrl-C), or NULL
    # data-parallel steps (see "Handing the gradient to an allreduce" below); NULL: one process
    void* reduce                 # a callable reduce() -> 0, or nonzero if it failed
    double* ctl                  # [step loss, stop] that reduce() sums over the ranks
    const long long* global_rows # the rows of step s summed over the ranks
    Py_ssize_t n_global_steps
    # outputs
    Py_ssize_t steps_done, last_rows, last_start
    double total, seen, correct, last_loss
    int status


# ---- the divergence guard without copies --------------------------------------------------------
# fit promises that an update which makes a parameter or the optimizer's state non-finite is undone.
# Copying the parameters and the state before every update (and scanning them after) costs 10-20%
# of an mnist-sized step, so the guard first asks whether the update *can* overflow. It keeps upper
# bounds of max|p| and of each state buffer's max|x| (exact, from sums of squares, at a run's first
# update and after any careful step; the first one's parameter sum rides in the gradient's sweep,
# as nothing changes the parameters before it) and carries them through the update rule with the
# gradient's bound G = sqrt(sum g^2), which the guard computes anyway:
#   SGD   |g'| <= G + wd P;  |v'| <= mu V + |g'|;  |p'| <= P + lr |direction|
#   Adam  |g'| <= G (+ wd P);  |m'| <= b1 M + (1 - b1)|g'|;  v' <= b2 V + (1 - b2) g'^2;
#         |p'| <= P + (lr / (1 - b1^t)) |m'| / eps        (the denominator is >= eps)
# Finite inputs and results below the limit cannot give inf or NaN (no 0/0, no inf - inf), so
# while every bound stays under SAFE_LIMIT (far below the dtype's largest number, so the rounding
# of a float computation cannot reach it) the update runs with no copy and no scan. Otherwise that
# step takes the careful path: copy, update, scan, and undo if anything went non-finite.

cdef struct Bounds:
    double P, S1, S2


cdef inline void _exact_bounds(Bounds* b, Opt* o, floating* params, Py_ssize_t n, int nt,
                               double params_sumsq=-1) noexcept nogil:
    """The bounds from sums of squares (params_sumsq: the parameters', when already known)."""
    b.P = sqrt(sum_of_squares_core(params, n, nt) if params_sumsq < 0 else params_sumsq)
    b.S1 = sqrt(sum_of_squares_core(<floating*>o.state1, n, nt)) if o.state1 != NULL else 0
    b.S2 = sqrt(sum_of_squares_core(<floating*>o.state2, n, nt)) if o.state2 != NULL else 0


cdef inline bint _update_is_safe(Opt* o, double G, const Bounds* b, Bounds* nb,
                                 double limit) noexcept nogil:
    cdef double ge, v, d, m, P0, bias1
    if not isfinite(G) or o.kind == OPT_SKLEARN_SGD or o.kind == OPT_SKLEARN_ADAM:
        return False   # scikit-learn's kinds have no bounds: a guarded step goes the careful way
    if o.kind == OPT_SGD:
        ge = G + o.weight_decay * b.P
        if o.state1 != NULL:
            v = o.momentum * b.S1 + ge
            d = ge + o.momentum * v if o.nesterov else v
            nb.S1 = v
        else:
            d = ge
            nb.S1 = 0
        nb.S2 = 0
        nb.P = b.P + o.lr * d
    else:
        if o.decoupled:
            P0 = b.P * fabs(1 - o.lr * o.weight_decay)
            ge = G
        else:
            P0 = b.P
            ge = G + o.weight_decay * b.P
        m = o.beta1 * b.S1 + (1 - o.beta1) * ge
        nb.S1 = m
        nb.S2 = o.beta2 * b.S2 + (1 - o.beta2) * ge * ge
        bias1 = 1 - pow(o.beta1, <double>(o.iterations + 1))
        nb.P = P0 + (o.lr / bias1) * m / o.eps
    return (ge * ge < limit and nb.P < limit and nb.S1 < limit and nb.S2 < limit
            and isfinite(nb.P))


# ---- handing the gradient to an allreduce (data-parallel fit, bp/_mpi.py) ------------------------
# With e.reduce set, every rank runs the same steps, and step s of every rank is a part of one
# global step of global_rows[s] rows: the scale is 1 / (global_rows[s] * mean_width), so the SUM of
# the ranks' gradient buffers is the global batch's mean gradient. Between the micro-batches and the
# guard the loop takes the GIL once and calls reduce(), which sums the gradient buffer and ctl =
# [this rank's step loss, its Ctrl-C flag] over the ranks, in place. From there on every rank holds
# the same numbers, so the guard, the clipping norm, the update and the stop decision agree bit for
# bit. A rank whose rows ran out contributes a zero gradient. The loop's own Ctrl-C check is off:
# one rank stopping alone would leave the others waiting in the allreduce.

cdef inline bint _hand_to_reduce(Epoch* e, double* step_loss, bint* stop) noexcept nogil:
    """Sum the gradient and ctl over the ranks; False if reduce() failed (its error is kept by the
    caller's reducer object)."""
    cdef int failed
    e.ctl[0] = step_loss[0]
    e.ctl[1] = 0
    with gil:
        failed = (<object>e.reduce)()
    step_loss[0] = e.ctl[0]
    stop[0] = e.ctl[1] != 0
    return failed == 0


cdef void _run_epoch(Epoch* e, Op* ops, Py_ssize_t n_ops, floating* params,
                     floating* grads, Py_ssize_t n_params, Opt* o, int nt) noexcept nogil:
    """Optimizer steps first_step .. first_step + n_steps - 1 of an epoch, each over `accumulate`
    micro-batches of batch_size rows (fewer at the end), with fit's semantics: stop BEFORE the
    update at the first non-finite loss or gradient, and (guard) undo an update that made a
    parameter non-finite."""
    cdef Py_ssize_t s, step_start, step_rows, mb, rows
    cdef Py_ssize_t per_step = e.batch_size * e.accumulate
    cdef const floating* X = <const floating*>e.X
    cdef const floating* Y = <const floating*>e.Y
    cdef const floating* w = <const floating*>e.w
    cdef const floating* Xb
    cdef const floating* Yb
    cdef const floating* wb
    cdef double scale, step_loss, Lb, sumsq
    cdef floating beta
    cdef long long last_check = _now_ns(), now
    cdef int sig
    cdef long iterations = o.iterations
    cdef Bounds bounds, next_bounds
    cdef double limit = 1e30 if floating is float else 1e300
    cdef bint careful, stop = False, bounded = False
    cdef double params_sumsq
    e.status = DONE
    for s in range(e.first_step, e.first_step + e.n_steps):
        step_start = s * per_step
        step_rows = min(per_step, e.n - step_start)
        if e.reduce != NULL:
            if s >= e.n_global_steps:
                break
            step_rows = max(0, step_rows)
            scale = 1.0 / (e.global_rows[s] * e.mean_width)
            if step_rows == 0:
                memset(grads, 0, n_params * sizeof(floating))
        elif step_rows <= 0:
            break
        elif o.kind == OPT_SKLEARN_SGD or o.kind == OPT_SKLEARN_ADAM:
            # scikit-learn's scale: its loss is a weighted mean over the batch (bp.sklearn
            # takes no comm, so the reduce branch above never meets these kinds)
            o.sw = _weight_sum(w, e.order, step_start, step_rows)
            scale = o.loss_scale / o.sw
        else:
            scale = 1.0 / (step_rows * e.mean_width)   # bp.losses.default_scale
        beta = 0
        step_loss = 0
        mb = step_start
        while mb < step_start + step_rows:
            rows = min(e.batch_size, step_start + step_rows - mb)
            e.last_start = mb
            if e.order == NULL:
                Xb = X + mb * e.n_in
                Yb = Y + mb * e.m
                wb = (w + mb) if w != NULL else NULL
            else:
                _gather(X, e.order + mb, rows, e.n_in, <floating*>e.Xb)
                _gather(Y, e.order + mb, rows, e.m, <floating*>e.Yb)
                Xb = <floating*>e.Xb
                Yb = <floating*>e.Yb
                wb = NULL
                if w != NULL:
                    _gather(w, e.order + mb, rows, 1, <floating*>e.wb)
                    wb = <floating*>e.wb
            # training batch o.iterations * accumulate + k (bp's PythonSteps counts alike)
            Lb = _backward(ops, n_ops, params, grads, Xb, Yb, wb, rows, e.loss, scale,
                           beta, <floating*>e.per_sample,
                           o.iterations * e.accumulate + (mb - step_start) // e.batch_size, nt)
            e.last_rows = rows
            beta = 1
            if (o.kind == OPT_SKLEARN_SGD or o.kind == OPT_SKLEARN_ADAM) and e.loss != MSE:
                Lb = clipped_log_loss_core(<floating*>ops[n_ops - 1].z_out, Yb, wb, rows,
                                            e.m, e.loss, o.sw, Lb)
            step_loss += Lb
            if not isfinite(Lb):
                break
            if e.count_hits:
                e.correct += _batch_hits(<floating*>ops[n_ops - 1].z_out, Yb, wb, rows,
                                         e.m, e.loss)
            mb += rows
        if e.reduce != NULL:
            if not _hand_to_reduce(e, &step_loss, &stop):
                e.status = INTERRUPTED
                return
            step_rows = e.global_rows[s]
        # after the sum over ranks: the penalty belongs to the step once, not once per rank
        if e.penalized and isfinite(step_loss):
            step_loss += _penalties(ops, n_ops, params, grads, nt)
        e.last_loss = step_loss
        sumsq = -1
        if e.guard:
            if bounded:
                sumsq = sum_of_squares_core(grads, n_params, nt)
            else:  # the run's first update: the parameters as they are (one sweep for both)
                sums_of_squares_core(params, grads, n_params, &params_sumsq, &sumsq, nt)
                _exact_bounds(&bounds, o, params, n_params, nt, params_sumsq)
                bounded = True
            if not isfinite(step_loss) or not isfinite(sumsq):
                e.status = DIVERGED
                return
            # the update is undone, parameters and optimizer state alike, if it goes
            # non-finite; where the bounds prove it cannot, nothing needs copying (see above)
            careful = not _update_is_safe(o, sqrt(sumsq), &bounds, &next_bounds, limit)
            if careful:
                memcpy(e.backup, params, n_params * sizeof(floating))
                _save_state(o, n_params * sizeof(floating), False)
                iterations = o.iterations
        _update(o, params, grads, n_params, sumsq, nt)
        if e.guard:
            if not careful:
                bounds = next_bounds
            elif not (isfinite(sum_of_squares_core(params, n_params, nt))
                      and _state_is_finite(o, <floating*>NULL, n_params, nt)):
                memcpy(params, e.backup, n_params * sizeof(floating))
                _save_state(o, n_params * sizeof(floating), True)
                o.iterations = iterations
                e.status = DIVERGED_IN_UPDATE
                return
            else:
                _exact_bounds(&bounds, o, params, n_params, nt)
        if o.kind == OPT_SKLEARN_SGD or o.kind == OPT_SKLEARN_ADAM:   # + the penalty
            step_loss = step_loss * o.loss_factor + 0.5 * o.alpha * o.wsumsq / o.sw
        e.total += step_loss * step_rows
        e.seen += step_rows
        e.steps_done += 1
        if e.reduce != NULL:
            if stop:  # some rank's Ctrl-C: every rank stops after this same step
                e.status = INTERRUPTED
                return
            continue
        # Ctrl-C: between steps, so the model is always at the last completed step.
        now = _now_ns()
        if now - last_check >= SIGNAL_NS:
            last_check = now
            with gil:
                sig = PyErr_CheckSignals()
                # fit installs a SIGINT handler that only sets a flag (bp/_interrupt.py): the
                # handler has run now, and the flag says whether to stop
                if sig == 0 and e.stop != NULL and (<object>e.stop).requested:
                    sig = 1
            if sig != 0:
                e.status = INTERRUPTED
                return


cdef int _raise_pending() except -1:
    # The exception a signal handler raised is already set: returning -1 propagates it.
    return -1


# Below this much work per step (batch rows x parameters) a step takes a few microseconds and
# keeps the GIL: releasing and re-taking it would cost a tenth of the step.
cdef Py_ssize_t KEEP_GIL_WORK = 16384


cdef void* _array(object a, int typenum, int ndim, Py_ssize_t rows, Py_ssize_t cols,
                  bint writeable, str name) except NULL:
    """The data pointer of `a` after checking it is a C-contiguous ndarray of the given type,
    ndim, rows (-1: any) and columns (2-D). Through NumPy's C API: a typed memoryview costs
    ~0.3 us to acquire, a noticeable share of a 1-2 us training step."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy array. Received: {type(a).__name__}")
    arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name} must be {cnp.PyArray_DescrFromType(typenum)}. Received: {arr.dtype}")
    if cnp.PyArray_NDIM(arr) != ndim or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be a C-contiguous {ndim}-D array")
    if (rows >= 0 and arr.shape[0] != rows) or (ndim == 2 and arr.shape[1] != cols):
        raise ValueError(f"{name} has shape {a.shape}; expected ({rows if rows >= 0 else 'n'}"
                         + (f", {cols})" if ndim == 2 else ",)"))
    if writeable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} must be writeable")
    if cnp.PyArray_SIZE(arr) == 0:
        raise ValueError(f"{name} is empty")
    return cnp.PyArray_DATA(arr)


OPTIMIZER_KINDS = {"sgd": OPT_SGD, "adam": OPT_ADAM, "sklearn_sgd": OPT_SKLEARN_SGD,
                   "sklearn_adam": OPT_SKLEARN_ADAM}


OP_KINDS = {"dense": OP_DENSE, "activation": OP_ACTIVATION, "dropout": OP_DROPOUT,
            "layer_norm": OP_LAYER_NORM, "batch_norm": OP_BATCH_NORM, "fork": OP_FORK,
            "add": OP_ADD}
_HAS_Z_IN = (OP_DENSE, OP_LAYER_NORM, OP_BATCH_NORM)


cdef class Network:
    """The compiled training step of one model (see the file header).

    Network(params, grads, ops) with the model's flat parameter and gradient buffers and its
    table of operations: one dict per operation, in the order of the forward pass, with
    ``kind`` (a key of OP_KINDS), ``src`` (the operation it reads, -1 for X), ``n_in``,
    ``n_out``, ``send_back`` and, by kind: dense ``act``, ``alpha``, ``w_off``, ``b_off``
    (-1: no bias), ``penalties`` (kernel l1, l2, bias l1, l2); activation ``act``, ``alpha``;
    dropout ``seed``, ``threshold``, ``scale``; layer_norm / batch_norm ``w_off`` (gamma),
    ``b_off`` (beta), ``eps`` and for batch_norm ``momentum`` and ``running`` (an array of
    2 n_out: the running mean then var); fork / add ``link`` (the other end of the block).
    The per-operation caches come from `bind(workspace)`; the optimizer comes in per call.
    """

    cdef Op* ops
    cdef Py_ssize_t n_ops, n_params, capacity, n_in, n_out
    cdef int typenum
    cdef bint is_double, parallel_elementwise, penalized
    cdef long long draw   # _compute's training batch (-1: inference)
    cdef readonly object params, grads, workspace
    cdef object _keep     # the workspace arrays the raw pointers point into
    cdef object _running  # the batch_norm operations' running statistics (kept alive)
    cdef void* p          # the model's flat parameters and gradients (kept alive by params, grads)
    cdef void* g
    cdef void* per_sample
    cdef void* Xb
    cdef void* Yb
    cdef void* wb
    cdef Opt opt
    cdef Epoch ep
    # what the last epoch run did (kept up to date even when Ctrl-C interrupts it)
    cdef readonly Py_ssize_t steps_done, last_rows, last_start
    cdef readonly double total, seen, correct, last_loss
    cdef readonly int status
    cdef readonly long iterations   # the optimizer's step count after the last call

    def __cinit__(self, params, grads, ops, parallel_elementwise=False):
        self.ops = NULL

    def __init__(self, params, grads, ops, bint parallel_elementwise=False):
        cdef Py_ssize_t i, need = 0
        cdef Op* O
        self.parallel_elementwise = parallel_elementwise
        if not isinstance(params, np.ndarray) or params.dtype not in (np.float32, np.float64):
            raise TypeError("params must be a float32 or float64 numpy array")
        self.is_double = params.dtype == np.float64
        self.typenum = cnp.NPY_FLOAT64 if self.is_double else cnp.NPY_FLOAT32
        self.n_params = params.shape[0] if params.ndim == 1 else -1
        self.p = _array(params, self.typenum, 1, -1, 0, True, "params")
        self.g = _array(grads, self.typenum, 1, self.n_params, 0, True, "grads")
        self.params, self.grads = params, grads
        self.n_ops = len(ops)
        if self.n_ops == 0:
            raise ValueError("a Network needs at least one operation")
        last = ops[self.n_ops - 1]["kind"]
        if last not in ("dense", "activation"):
            raise ValueError(f"the output operation must be a dense or an activation. "
                             f"Received: {last!r}")
        self.ops = <Op*>calloc(self.n_ops, sizeof(Op))
        if self.ops == NULL:
            raise MemoryError()
        self._running = []
        self.penalized = False
        for i, spec in enumerate(ops):
            O = &self.ops[i]
            kind = spec["kind"]
            if kind not in OP_KINDS:
                raise ValueError(f"unknown operation kind. Received: {kind!r}")
            O.kind = OP_KINDS[kind]
            O.src, O.link = spec["src"], spec.get("link", -1)
            O.n_in, O.n_out = spec["n_in"], spec["n_out"]
            O.send_back = spec.get("send_back", O.src >= 0)
            O.w_off, O.b_off = spec.get("w_off", -1), spec.get("b_off", -1)
            O.act, O.alpha = spec.get("act", 0), spec.get("alpha", 0.0)
            O.kernel_l1, O.kernel_l2, O.bias_l1, O.bias_l2 = spec.get("penalties",
                                                                      (0., 0., 0., 0.))
            if min(O.kernel_l1, O.kernel_l2, O.bias_l1, O.bias_l2) < 0:
                raise ValueError(f"operation {i}: penalties must be >= 0")
            self.penalized |= O.kind == OP_DENSE and (O.kernel_l1 != 0 or O.kernel_l2 != 0
                                                      or O.bias_l1 != 0 or O.bias_l2 != 0)
            O.drop_seed, O.drop_threshold = spec.get("seed", 0), spec.get("threshold", 0)
            O.drop_scale = spec.get("scale", 1.0)
            O.eps, O.momentum = spec.get("eps", 0.0), spec.get("momentum", 0.0)
            if O.src >= i or O.src < -1 or (O.send_back and O.src < 0):
                raise ValueError(f"operation {i} reads operation {O.src}")
            width = self.ops[O.src].n_out if O.src >= 0 else O.n_in
            if O.n_in != width or (O.kind != OP_DENSE and O.n_out != O.n_in):
                raise ValueError(f"operation {i} ({kind}) has n_in={O.n_in}, n_out={O.n_out}; "
                                 f"its input is {width} wide")
            if O.kind in (OP_FORK, OP_ADD):
                if not (0 <= O.link < self.n_ops) or (O.kind == OP_ADD) == (O.link > i):
                    raise ValueError(f"operation {i} ({kind}) has link {O.link}")
            if O.kind == OP_DENSE:
                need = max(need, O.w_off + O.n_in * O.n_out, O.b_off + O.n_out)
            elif O.kind in (OP_LAYER_NORM, OP_BATCH_NORM):
                need = max(need, O.w_off + O.n_out, O.b_off + O.n_out)
            if O.kind == OP_BATCH_NORM:
                running = spec["running"]
                O.running = _array(running, self.typenum, 1, 2 * O.n_out, 0, True, "running")
                self._running.append(running)
        if need > self.n_params:
            raise ValueError(f"the layout needs {need} parameters; the buffer has {self.n_params}")
        self.n_in, self.n_out = self.ops[0].n_in, self.ops[self.n_ops - 1].n_out
        self.capacity = 0
        self.workspace = None
        self.draw = -1

    def __dealloc__(self):
        free(self.ops)

    def bind(self, ws):
        """Point the engine at a workspace (bp._ops.Workspace): per operation its z_out, delta
        and by kind z_in, mask, stats (lists indexed like the operations), per_sample, and the
        X, Y, w batch buffers, all of ws.n_rows rows."""
        cdef Py_ssize_t i, rows = ws.n_rows
        cdef Op* O
        if ws is self.workspace:
            return
        tn = self.typenum
        for i in range(self.n_ops):
            O = &self.ops[i]
            n_out = O.n_out
            O.z_in = O.z_out = O.mask = O.stats = NULL
            if O.kind != OP_FORK:
                O.z_out = _array(ws.z_out[i], tn, 2, rows, n_out, True, "z_out")
            O.delta = _array(ws.delta[i], tn, 2, rows, n_out, True, "delta")
            if O.kind in _HAS_Z_IN:
                O.z_in = _array(ws.z_in[i], tn, 2, rows, n_out, True, "z_in")
            if O.kind == OP_DROPOUT:
                O.mask = _array(ws.mask[i], cnp.NPY_UINT8, 2, rows, n_out, True, "mask")
            if O.kind == OP_LAYER_NORM:
                O.stats = _array(ws.stats[i], cnp.NPY_FLOAT64, 1, rows, 0, True, "stats")
            if O.kind == OP_BATCH_NORM:
                O.stats = _array(ws.stats[i], cnp.NPY_FLOAT64, 1, 4 * n_out, 0, True, "stats")
        self.per_sample = _array(ws.per_sample, tn, 1, rows, 0, True, "per_sample")
        self.Xb = _array(ws.X, tn, 2, rows, self.n_in, True, "X buffer")
        self.Yb = _array(ws.Y, tn, 2, rows, self.n_out, True, "Y buffer")
        self.wb = _array(ws.w, tn, 1, rows, 0, True, "w buffer")
        self._keep = (ws.z_in, ws.z_out, ws.delta, ws.mask, ws.stats, ws.per_sample, ws.X, ws.Y,
                      ws.w)
        self.capacity = rows
        self.workspace = ws

    cdef Py_ssize_t _batch(self, X, Y, w, const void** xp, const void** yp,
                           const void** wp) except -1:
        """Check a batch and return its row count and pointers."""
        cdef Py_ssize_t n
        if self.workspace is None:
            raise ValueError("bind a workspace first")
        xp[0] = _array(X, self.typenum, 2, -1, self.n_in, False, "X")
        n = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
        yp[0] = _array(Y, self.typenum, 2, n, self.n_out, False, "Y")
        wp[0] = NULL if w is None else _array(w, self.typenum, 1, n, 0, False, "sample_weight")
        return n

    cdef double _compute(self, const void* X, const void* Y, const void* w, Py_ssize_t n,
                         int loss, double scale, double beta, void* grads, int nt,
                         bint update) noexcept nogil:
        cdef double value
        if self.is_double:
            value = _backward(self.ops, self.n_ops, <double*>self.p, <double*>grads,
                              <double*>X, <double*>Y, <double*>w, n, loss, scale, beta,
                              <double*>self.per_sample, self.draw, nt)
            if update and self.penalized:  # a training step: the layers' penalties
                value += _penalties(self.ops, self.n_ops, <double*>self.p,
                                    <double*>grads, nt)
            if update:
                _update(&self.opt, <double*>self.p, <double*>grads, self.n_params, -1.0, nt)
        else:
            value = _backward(self.ops, self.n_ops, <float*>self.p, <float*>grads,
                              <float*>X, <float*>Y, <float*>w, n, loss, scale, <float>beta,
                              <float*>self.per_sample, self.draw, nt)
            if update and self.penalized:
                value += _penalties(self.ops, self.n_ops, <float*>self.p,
                                    <float*>grads, nt)
            if update:
                _update(&self.opt, <float*>self.p, <float*>grads, self.n_params, -1.0, nt)
        return value

    cdef double _run_backward(self, const void* X, const void* Y, const void* w, Py_ssize_t n,
                              int loss, double scale, double beta, void* grads, int nt,
                              bint update) except? -1:
        cdef double value
        if n > self.capacity:
            raise ValueError(f"batch of {n} rows; the workspace holds {self.capacity}")
        if n * self.n_params <= KEEP_GIL_WORK:
            return self._compute(X, Y, w, n, loss, scale, beta, grads, nt, update)
        with nogil:
            value = self._compute(X, Y, w, n, loss, scale, beta, grads, nt, update)
        return value

    cdef inline int _omp(self, int n_threads):
        """The OpenMP threads for the elementwise passes (see the file header)."""
        return n_threads if self.parallel_elementwise else 1

    # ---- one batch --------------------------------------------------------------------------
    def backward(self, X, Y, w, int loss, double scale, double beta, int n_threads, grads=None,
                 long long draw=-1):
        """Forward, loss, error signals and gradients of the batch (X, Y, w) in one compiled
        call: grads = beta * grads + this batch's (into `grads`, a flat buffer laid out as the
        parameters, default the bound one). draw < 0: inference mode; else training batch
        `draw` (its dropout masks). Returns the batch loss."""
        cdef const void* xp
        cdef const void* yp
        cdef const void* wp
        cdef Py_ssize_t n = self._batch(X, Y, w, &xp, &yp, &wp)
        cdef void* g = self.g if grads is None or grads is self.grads else \
            _array(grads, self.typenum, 1, self.n_params, 0, True, "grads")
        self.draw = draw
        return self._run_backward(xp, yp, wp, n, loss, scale, beta, g, self._omp(n_threads),
                                  False)

    def train_step(self, X, Y, w, int loss, double scale, dict opt, double lr, long iterations,
                   int n_threads):
        """A whole training step in one compiled call: backward (beta 0) then the optimizer's
        update (clipping included), `opt` an Optimizer._engine_spec() and `iterations` its step
        count (the new count is left in self.iterations). Training mode: the dropout masks of
        batch `iterations`, and the layers' penalties. Returns the loss. Unguarded: for
        benchmarks and explicit loops; fit uses train_epoch, which also stops at a non-finite
        loss or gradient."""
        cdef const void* xp
        cdef const void* yp
        cdef const void* wp
        cdef Py_ssize_t n = self._batch(X, Y, w, &xp, &yp, &wp)
        cdef double value
        self._set_opt(opt, lr, iterations)
        self.draw = iterations  # training batch `iterations` (accumulate 1)
        value = self._run_backward(xp, yp, wp, n, loss, scale, 0.0, self.g,
                                   self._omp(n_threads), True)
        self.iterations = self.opt.iterations
        return value

    # ---- the optimizer, passed in ----------------------------------------------------------
    cdef void* _state(self, spec, str key, str name) except? NULL:
        buf = spec.get(key)
        if buf is None:
            return NULL
        return _array(buf, self.typenum, 1, self.n_params, 0, True, name)

    cdef int _set_opt(self, dict spec, double lr, long iterations) except -1:
        """Read an optimizer's hyperparameters and state pointers from its _engine_spec() (the
        optimizer keeps owning the buffers; its state must already exist)."""
        cdef Opt* o = &self.opt
        kind = spec["kind"]
        if kind not in OPTIMIZER_KINDS:
            raise ValueError(f"the engine runs the optimizer kinds {', '.join(OPTIMIZER_KINDS)}. "
                             f"Received: {kind!r}")
        o.kind = OPTIMIZER_KINDS[kind]
        o.lr = lr
        clip = spec["clip_norm"]
        o.clip_norm = -1.0 if clip is None else clip
        o.iterations = iterations
        o.weight_decay = spec["weight_decay"]
        o.state1 = self._state(spec, "state1", "optimizer state1")
        o.state2 = self._state(spec, "state2", "optimizer state2")
        o.saved1 = self._state(spec, "saved1", "saved state1")
        o.saved2 = self._state(spec, "saved2", "saved state2")
        if o.kind == OPT_SKLEARN_SGD or o.kind == OPT_SKLEARN_ADAM:
            o.alpha, o.loss_scale, o.loss_factor = (spec["alpha"], spec["loss_scale"],
                                                    spec["loss_factor"])
            o.momentum, o.nesterov = spec["momentum"], spec["nesterov"]
            o.beta1, o.beta2, o.eps = spec["beta1"], spec["beta2"], spec["eps"]
            o.ops, o.n_ops, o.sw = self.ops, self.n_ops, 1
            if o.state1 == NULL or (o.kind == OPT_SKLEARN_ADAM and o.state2 == NULL):
                raise ValueError("scikit-learn's SGD needs its velocity, its Adam m and v")
        elif o.kind == OPT_ADAM:
            o.beta1, o.beta2, o.eps = spec["beta1"], spec["beta2"], spec["eps"]
            o.decoupled = spec["decoupled"]
            if o.state1 == NULL or o.state2 == NULL:
                raise ValueError("Adam needs its state buffers m and v")
        else:
            o.momentum, o.nesterov = spec["momentum"], spec["nesterov"]
            if o.momentum != 0 and o.state1 == NULL:
                raise ValueError("SGD with momentum needs its velocity buffer")
            if o.momentum == 0:
                o.state1 = o.saved1 = NULL
        return 0

    # ---- an epoch -----------------------------------------------------------------------------
    def train_epoch(self, X, Y, w, order, Py_ssize_t batch_size, Py_ssize_t accumulate,
                    int loss, Py_ssize_t mean_width, dict opt, double lr, long iterations,
                    int n_threads, Py_ssize_t first_step=0, Py_ssize_t n_steps=-1,
                    bint count_hits=False, bint guard=True, backup=None, stop=None,
                    reduce=None, ctl=None, global_rows=None):
        """Run optimizer steps first_step ... of one epoch inside one nogil loop.

        Each step takes `accumulate` micro-batches of batch_size rows in the order `order`
        (int64 row indices, or None for the rows as they are), gathered into the workspace's
        batch buffers; the gradient of the step is that of one accumulate * batch_size batch.
        With guard: stop before the update at the first non-finite loss or gradient
        (status DIVERGED), and restore the parameters from `backup` (an array like params) if
        an update made one non-finite (DIVERGED_IN_UPDATE). Between steps Ctrl-C is honoured: the
        exception propagates after the current step, with steps_done etc. up to date. `stop`
        (bp._interrupt.defer_sigint) is read there too: its flag ends the run the same way.
        With guard, the optimizer's state is saved in the spec's saved1/saved2 buffers
        (Optimizer._checkpoint allocates them) and put back with the parameters when an update
        is undone. `mean_width` is bp.losses.mean_width: a step of r rows has scale
        1 / (r * mean_width). The optimizer's new step count is left in self.iterations.

        Data-parallel (bp/_mpi.py): `reduce` a callable, `ctl` a float64 array of 2, and
        `global_rows` int64, the rows of each step of the epoch summed over the ranks (its length
        is the number of steps every rank runs). Each step calls reduce() after its gradient (see
        "Handing the gradient to an allreduce"); total, seen and last_loss are then global.

        Afterwards: steps_done, total (sum of step loss * rows), seen (rows), correct (weighted
        hits, if count_hits), last_loss, last_rows, status.
        """
        cdef Epoch* e = &self.ep
        cdef int nt
        cdef Py_ssize_t i
        cdef const void* xp
        cdef const void* yp
        cdef const void* wp
        cdef Py_ssize_t n = self._batch(X, Y, w, &xp, &yp, &wp)
        if batch_size < 1 or accumulate < 1:
            raise ValueError("batch_size and accumulate must be >= 1")
        if min(batch_size, n) > self.capacity:
            raise ValueError(f"batch of {batch_size} rows; the workspace holds {self.capacity}")
        e.order = NULL
        if order is not None:
            e.order = <const long long*>_array(order, cnp.NPY_INT64, 1, n, 0, False, "order")
            for i in range(n):  # (order.min() and order.max() took ~2 us of a one-step call)
                if e.order[i] < 0 or e.order[i] >= n:
                    raise ValueError("order holds an index out of range")
        e.backup = NULL
        e.stop = NULL if stop is None else <void*>stop
        e.reduce = NULL
        if reduce is not None:
            e.ctl = <double*>_array(ctl, cnp.NPY_FLOAT64, 1, 2, 0, True, "ctl")
            e.global_rows = <const long long*>_array(global_rows, cnp.NPY_INT64, 1, -1, 0,
                                                     False, "global_rows")
            e.n_global_steps = global_rows.shape[0]
            if e.n_global_steps and global_rows.min() < 1:
                raise ValueError("global_rows must be >= 1")
            e.reduce = <void*>reduce
        if guard:
            e.backup = _array(backup, self.typenum, 1, self.n_params, 0, True, "backup")
        if mean_width < 1:
            raise ValueError("mean_width must be >= 1")
        self._set_opt(opt, lr, iterations)
        per_step = batch_size * accumulate
        total_steps = -(-n // per_step) if reduce is None else e.n_global_steps
        if n_steps < 0 or first_step + n_steps > total_steps:
            n_steps = max(0, total_steps - first_step)
        e.X, e.Y, e.w = xp, yp, wp
        e.penalized = self.penalized
        e.n, e.n_in, e.m = n, self.n_in, self.n_out
        e.batch_size, e.accumulate = batch_size, accumulate
        e.first_step, e.n_steps = first_step, n_steps
        e.loss, e.count_hits, e.guard = loss, count_hits, guard
        e.mean_width = mean_width
        e.Xb, e.Yb, e.wb, e.per_sample = self.Xb, self.Yb, self.wb, self.per_sample
        e.steps_done = e.last_rows = e.last_start = 0
        e.total = e.seen = e.correct = e.last_loss = 0
        e.status = DONE
        nt = self._omp(n_threads)
        with nogil:
            if self.is_double:
                _run_epoch(e, self.ops, self.n_ops, <double*>self.p, <double*>self.g,
                           self.n_params, &self.opt, nt)
            else:
                _run_epoch(e, self.ops, self.n_ops, <float*>self.p, <float*>self.g,
                           self.n_params, &self.opt, nt)
        self.iterations = self.opt.iterations
        self.steps_done, self.last_rows, self.last_start = e.steps_done, e.last_rows, e.last_start
        self.total, self.seen, self.correct = e.total, e.seen, e.correct
        self.last_loss, self.status = e.last_loss, e.status
        if e.status == INTERRUPTED:
            if PyErr_Occurred() == NULL:  # stopped by the flag, not by an exception
                raise KeyboardInterrupt
            _raise_pending()
        return e.status
