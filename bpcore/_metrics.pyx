# Training metrics as states of counts and sums, updated batch by batch.
#
# A metric's running value over an epoch (what Keras reports for the training set) needs only a
# small state that each batch adds to; the value is read from the state at the end (bp/metrics.py):
#
#   confusion_update  C[t, p] += w_i        argmax classes (a softmax output: t = argmax y_i,
#                                           p = argmax f_out_i), or every output of a sigmoid
#                                           layer as a two-class problem (t = y >= 0.5,
#                                           p = f_out >= threshold): accuracy, precision,
#                                           recall and F1 (binary, macro, micro) are ratios of C
#   top_k_update      hits += w_i           when fewer than k classes score above the true one
#   error_update      S[0, j] += w_i |e_ij|  e = f_out - y, per output j: MAE, MSE, RMSE and R2
#                     S[1, j] += w_i e_ij^2  (R2_j = 1 - S[1, j] / (S[3, j] - S[2, j]^2 / S[4, j]),
#                     S[2, j] += w_i y_ij    averaged over the outputs as scikit-learn's
#                     S[3, j] += w_i y_ij^2  "uniform_average")
#                     S[4, j] += w_i
#   auc_update        H[c, t, b] += w_i     a histogram of the scores of class c in n_bins equal
#                                           bins of [0, 1], for the rows with label t (0 or 1;
#                                           one-vs-rest for a softmax output): the ROC area is
#                                           then the trapezoids between the ROC points at the
#                                           bin edges, i.e. scores in one bin count as ties
#                                           (Keras 3's AUC does the same with num_thresholds
#                                           thresholds; validation's AUC is exact, bp/metrics.py)
#
# Each update is O(rows x outputs) and runs serial: it is a few percent of the forward pass it
# follows (the engine's epilogues are serial for the reason given in _network.pyx's header).
# The cores are `noexcept nogil` so that the compiled epoch can call them after each micro-batch's
# forward pass, on the f_out it caches, without returning to Python; the def wrappers serve
# bp/metrics.py today and the tests (bp/_reference.py has the NumPy twins); _metrics.pxd declares
# the cores for the engine.
# The states are float64 whatever the model's dtype: they are sums over a whole epoch.

from cython cimport floating


cdef void confusion_core(const floating* f_out, const floating* Y, const floating* w,
                         Py_ssize_t n, Py_ssize_t m, bint binary, double threshold,
                         double* C) noexcept nogil:
    """C (m x m, or 2 x 2 when binary) += the batch's weighted confusion counts; row t, column p."""
    cdef Py_ssize_t i, j, t, p
    cdef double wi
    for i in range(n):
        wi = <double>w[i] if w != NULL else 1.0
        if binary:
            for j in range(m):
                t = 1 if Y[i * m + j] >= 0.5 else 0
                p = 1 if f_out[i * m + j] >= threshold else 0
                C[t * 2 + p] += wi
        else:
            t = 0
            p = 0
            for j in range(1, m):   # the first maximum, like np.argmax
                if f_out[i * m + j] > f_out[i * m + p]:
                    p = j
                if Y[i * m + j] > Y[i * m + t]:
                    t = j
            C[t * m + p] += wi


cdef void top_k_core(const floating* f_out, const floating* Y, const floating* w,
                     Py_ssize_t n, Py_ssize_t m, Py_ssize_t k, double* hits) noexcept nogil:
    """hits[0] += w_i for each row whose true class (argmax y_i) has fewer than k classes scored
    strictly above it; hits[1] += w_i for every row."""
    cdef Py_ssize_t i, j, t, above
    cdef double wi
    for i in range(n):
        wi = <double>w[i] if w != NULL else 1.0
        t = 0
        for j in range(1, m):
            if Y[i * m + j] > Y[i * m + t]:
                t = j
        above = 0
        for j in range(m):
            if f_out[i * m + j] > f_out[i * m + t]:
                above += 1
        if above < k:
            hits[0] += wi
        hits[1] += wi


cdef void error_core(const floating* f_out, const floating* Y, const floating* w,
                     Py_ssize_t n, Py_ssize_t m, double* S) noexcept nogil:
    """S (5 x m) += the batch's weighted sums of |e|, e^2, y, y^2 and of the weights, per output."""
    cdef Py_ssize_t i, j
    cdef double wi, e, y
    for i in range(n):
        wi = <double>w[i] if w != NULL else 1.0
        for j in range(m):
            y = <double>Y[i * m + j]
            e = <double>f_out[i * m + j] - y
            S[j] += wi * (e if e >= 0 else -e)
            S[m + j] += wi * e * e
            S[2 * m + j] += wi * y
            S[3 * m + j] += wi * y * y
            S[4 * m + j] += wi


cdef void auc_core(const floating* f_out, const floating* Y, const floating* w,
                   Py_ssize_t n, Py_ssize_t m, bint one_vs_rest, Py_ssize_t n_bins,
                   double* H) noexcept nogil:
    """H (classes x 2 x n_bins) += the batch's weighted score histograms: for a sigmoid output
    (one_vs_rest False) class c is output c with label y >= 0.5; for a softmax output class c's
    label is argmax y == c, and its score f_out[:, c]. Scores outside [0, 1] go to the end bins."""
    cdef Py_ssize_t i, j, t, b
    cdef double wi, s
    for i in range(n):
        wi = <double>w[i] if w != NULL else 1.0
        t = 0
        if one_vs_rest:
            for j in range(1, m):
                if Y[i * m + j] > Y[i * m + t]:
                    t = j
        for j in range(m):
            s = <double>f_out[i * m + j] * n_bins
            b = 0 if not s > 0 else (n_bins - 1 if s >= n_bins else <Py_ssize_t>s)
            if one_vs_rest:
                H[(j * 2 + (1 if j == t else 0)) * n_bins + b] += wi
            else:
                H[(j * 2 + (1 if Y[i * m + j] >= 0.5 else 0)) * n_bins + b] += wi


# ---- the wrappers: arrays validated by bp/metrics.py (shapes, dtypes, contiguity, n >= 1) --------
# w is always an array of the batch's dtype (one fused type for all three inputs); weighted=False
# ignores it (bp/metrics.py passes a one-element placeholder then).


def confusion_update(const floating[:, ::1] f_out,       # IN  (n, m)
                     const floating[:, ::1] Y,           # IN  (n, m)
                     const floating[::1] w,              # IN  (n,)
                     bint weighted, bint binary, double threshold,
                     double[:, ::1] C):                  # OUT (m, m), or (2, 2) when binary
    with nogil:
        confusion_core(&f_out[0, 0], &Y[0, 0], &w[0] if weighted else NULL,
                       f_out.shape[0], f_out.shape[1], binary, threshold, &C[0, 0])


def top_k_update(const floating[:, ::1] f_out,           # IN  (n, m)
                 const floating[:, ::1] Y,               # IN  (n, m)
                 const floating[::1] w,                  # IN  (n,)
                 bint weighted, Py_ssize_t k,
                 double[::1] hits):                      # OUT (2,)
    with nogil:
        top_k_core(&f_out[0, 0], &Y[0, 0], &w[0] if weighted else NULL,
                   f_out.shape[0], f_out.shape[1], k, &hits[0])


def error_update(const floating[:, ::1] f_out,           # IN  (n, m)
                 const floating[:, ::1] Y,               # IN  (n, m)
                 const floating[::1] w,                  # IN  (n,)
                 bint weighted,
                 double[:, ::1] S):                      # OUT (5, m)
    with nogil:
        error_core(&f_out[0, 0], &Y[0, 0], &w[0] if weighted else NULL,
                   f_out.shape[0], f_out.shape[1], &S[0, 0])


def auc_update(const floating[:, ::1] f_out,             # IN  (n, m)
               const floating[:, ::1] Y,                 # IN  (n, m)
               const floating[::1] w,                    # IN  (n,)
               bint weighted, bint one_vs_rest,
               double[:, :, ::1] H):                     # OUT (m, 2, n_bins)
    with nogil:
        auc_core(&f_out[0, 0], &Y[0, 0], &w[0] if weighted else NULL,
                 f_out.shape[0], f_out.shape[1], one_vs_rest, H.shape[2], &H[0, 0, 0])
