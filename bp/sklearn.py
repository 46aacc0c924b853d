"""scikit-learn's MLPClassifier and MLPRegressor, trained by bp's compiled passes.

    from bp.sklearn import MLPClassifier      # instead of sklearn.neural_network

The same estimators (they subclass scikit-learn's, so the parameters, input checks, label
handling, early-stopping split, stopping rules, attributes and errors are scikit-learn's own) and
the same algorithm: scikit-learn's Glorot initialisation from its RandomState, its batch order,
its losses, its L2 penalty alpha ||W||^2 / (2 sum(w)), its SGD and Adam updates and its L-BFGS
route (scipy.optimize.minimize, method="L-BFGS-B"). What bp replaces is the arithmetic: an epoch
of SGD or Adam runs in bp's compiled epoch loop (forward, error signals, gradients and
scikit-learn's update, fused, over a flat parameter buffer: bp._sklearn_net), and L-BFGS gets
the loss and gradient from bp's compiled full-batch pass. In float64 with the same random_state
the fitted ``coefs_`` equal scikit-learn's to rounding (tests/test_sklearn_equivalence.py says how
close); how much faster is in bench/README.md.

Extras beyond scikit-learn's parameters: ``n_threads`` (bp's thread count for the kernels and
BLAS; None: bp's default, which honours OMP_NUM_THREADS, as joblib's workers set it) and
``dtype`` (None: X's, float32 or float64 as scikit-learn; or force one).
"""

import warnings
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import scipy.optimize
import scipy.sparse as sp

try:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as _MLPClassifier
    from sklearn.neural_network import MLPRegressor as _MLPRegressor
    from sklearn.utils import gen_batches
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    from sklearn.utils.optimize import _check_optimize_result
    from sklearn.utils.validation import validate_data
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError('bp.sklearn needs scikit-learn: pip install "bp[sklearn]"') from e

from . import _sklearn_net, _threads

__all__ = ["MLPClassifier", "MLPRegressor"]

_EXTRA_CONSTRAINTS = {
    "n_threads": [Interval(Integral, 1, None, closed="left"), Options(Integral, {-1}), None],
    "dtype": [StrOptions({"float32", "float64"}), type, None],
}


@contextmanager
def _blas_threads(n):
    """Hold BLAS to n threads for a fit or a prediction (the kernels get n as an argument), then
    give bp's count back; through bp's cached threadpoolctl controller (~10 us, where a fresh
    threadpool_limits costs ~5 ms, much of a small fit in a grid search)."""
    previous = _threads.get_num_threads()
    _threads.hold_blas(n)
    try:
        yield
    finally:
        _threads.hold_blas(previous)


class _BpMLP:
    """What bp replaces in scikit-learn's BaseMultilayerPerceptron: the two solvers' loops and
    the forward pass. Everything else (validation, labels, stopping bookkeeping) is inherited."""

    # ---- the extras ------------------------------------------------------------------------
    def _validate_input(self, X, y, incremental, reset):
        X, y = super()._validate_input(X, y, incremental, reset)
        dtype = self._param_dtype(X.dtype)
        if X.dtype != dtype:
            X = X.astype(dtype)
        # batches are row slices: CSR's, or C-ordered rows
        X = X.tocsr() if sp.issparse(X) else np.ascontiguousarray(X)
        return X, y

    def _param_dtype(self, X_dtype):
        if self.dtype is None:
            return np.dtype(X_dtype)
        dtype = np.dtype(self.dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64 (or None: X's). "
                             f"Received: dtype={self.dtype!r}")
        return dtype

    def _n_threads(self):
        return _threads.effective_n_threads(self.n_threads)

    # ---- the forward pass (predict, predict_proba, score, early stopping's validation) --------
    def _forward_pass_fast(self, X, check_input=True):
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        dtype = self.coefs_[0].dtype
        X = X.tocsr().astype(dtype) if sp.issparse(X) else np.ascontiguousarray(X, dtype)
        coefs = [np.ascontiguousarray(W) for W in self.coefs_]
        intercepts = [np.ascontiguousarray(b) for b in self.intercepts_]
        nt = _sklearn_net.predict_threads(coefs, X.shape[0], self._n_threads())
        with _blas_threads(nt):
            return _sklearn_net.predict(coefs, intercepts, self.activation, self.out_activation_,
                                        X, nt)

    def _network(self, dtype):
        """A bp network over a copy of coefs_/intercepts_, which then become views into it."""
        net = _sklearn_net.Network(self.coefs_, self.intercepts_, self.activation,
                                   self.out_activation_, dtype)
        self.coefs_, self.intercepts_ = net.coefs, net.intercepts
        return net

    # ---- SGD and Adam: scikit-learn's _fit_stochastic, with bp's batch ----------------------
    def _fit_stochastic(self, X, y, sample_weight, activations, deltas, coef_grads,
                        intercept_grads, layer_units, incremental):
        net = self._network(X.dtype)
        n_params = net.passes.params.size
        opt = getattr(self, "_optimizer", None)
        if (not incremental or not isinstance(opt, _sklearn_net.Optimizer)
                or opt.state1.size != n_params or opt.state1.dtype != X.dtype):
            self._optimizer = _sklearn_net.Optimizer(
                self.solver, n_params, X.dtype, self.learning_rate_init, self.learning_rate,
                self.momentum, self.nesterovs_momentum, self.power_t, self.beta_1, self.beta_2,
                self.epsilon)
        opt = self._optimizer

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        Y = np.ascontiguousarray(y, X.dtype)
        w = None if sample_weight is None else np.ascontiguousarray(sample_weight, X.dtype)
        if early_stopping:
            # scikit-learn's split, drawn from the same RandomState at the same point
            stratify = y if (self._is_classifier() and self.n_outputs_ == 1) else None
            arrays = (X, Y) if w is None else (X, Y, w)
            parts = train_test_split(*arrays, random_state=self._random_state,
                                     test_size=self.validation_fraction, stratify=stratify)
            X_train, X_val, Y_train, Y_val = parts[:4]
            w_train, w_val = (None, None) if w is None else parts[4:]
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            y_val = (self._label_binarizer.inverse_transform(Y_val.astype(bool))
                     if self._is_classifier() else Y_val)
        else:
            X_train, Y_train, w_train = X, Y, w
            X_val = y_val = w_val = None

        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=np.int64)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than "
                              "sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        X_train = X_train if sp.issparse(X_train) else np.ascontiguousarray(X_train)
        Y_train = np.ascontiguousarray(Y_train)

        # threads lose on small batches (bp's measured crossover): one below it
        nt = net.passes.step_threads(batch_size, self._n_threads())
        try:
            with _blas_threads(nt):
                self.n_iter_ = 0
                for it in range(self.max_iter):
                    if self.shuffle:   # sklearn.utils.shuffle's draw, without its checks
                        perm = np.arange(n_samples)
                        self._random_state.shuffle(perm)
                        sample_idx = sample_idx[perm]
                    accumulated_loss = self._epoch(net, opt, X_train, Y_train, w_train,
                                                   sample_idx, batch_size, nt)
                    self.n_iter_ += 1
                    self.loss_ = accumulated_loss / n_samples
                    self.t_ += n_samples
                    self.loss_curve_.append(self.loss_)
                    if self.verbose:
                        print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                    self._update_no_improvement_count(early_stopping, X_val, y_val, w_val)
                    opt.iteration_ends(self.t_)
                    if self._no_improvement_count > self.n_iter_no_change:
                        if early_stopping:
                            msg = ("Validation score did not improve more than tol=%f for %d "
                                   "consecutive epochs." % (self.tol, self.n_iter_no_change))
                        else:
                            msg = ("Training loss did not improve more than tol=%f for %d "
                                   "consecutive epochs." % (self.tol, self.n_iter_no_change))
                        if opt.trigger_stopping(msg, self.verbose):
                            break
                        self._no_improvement_count = 0
                    if incremental:
                        break
                    if self.n_iter_ == self.max_iter:
                        warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached "
                                      "and the optimization hasn't converged yet."
                                      % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early_stopping:
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts

    def _epoch(self, net, opt, X, Y, w, sample_idx, batch_size, nt):
        """One pass over the data in scikit-learn's batches; returns sum_b rows_b * loss_b."""
        if not (sp.issparse(X) or net.poisson):   # the whole epoch in one compiled call
            return opt.run_epoch(net, X, Y, w, sample_idx if self.shuffle else None, batch_size,
                                 self.alpha, nt)
        accumulated_loss = 0.0
        for batch in gen_batches(X.shape[0], batch_size):
            rows = batch.stop - batch.start
            if self.shuffle:
                idx = sample_idx[batch]
                if sp.issparse(X):
                    Xb = X[idx]
                else:
                    Xb = net.passes.workspace(rows).X
                    np.take(X, idx, axis=0, out=Xb)
                Yb = np.take(Y, idx, axis=0)
                wb = None if w is None else np.take(w, idx)
            else:
                Xb, Yb, wb = X[batch], Y[batch], (None if w is None else w[batch])
            sw_sum = rows if wb is None else float(wb.sum())
            data_loss = net.backward(Xb, Yb, wb, sw_sum, nt)
            sumsq = opt.step(net, self.alpha / sw_sum, nt)
            accumulated_loss += (data_loss + 0.5 * self.alpha * sumsq / sw_sum) * rows
        return accumulated_loss

    # ---- L-BFGS: scikit-learn's route, with bp's full-batch pass --------------------------
    def _fit_lbfgs(self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads,
                   layer_units):
        net = self._network(X.dtype)
        to_bp = net.sklearn_order()   # scipy sees scikit-learn's packed vector, entry for entry
        Y = np.ascontiguousarray(y, X.dtype)
        w = None if sample_weight is None else np.ascontiguousarray(sample_weight, X.dtype)
        sw_sum = X.shape[0] if w is None else float(w.sum())
        params, grads = net.passes.params, net.passes.grads
        packed_grad = np.empty(params.size)
        nt = net.passes.step_threads(X.shape[0], self._n_threads())

        def loss_grad(packed):
            params[...] = packed[to_bp]
            loss = net.backward(X, Y, w, sw_sum, nt)
            l2 = self.alpha / sw_sum
            for (W, _), (grad_W, _) in zip(net.passes.param_views, net.passes.grad_views):
                grad_W += l2 * W
            loss += 0.5 * self.alpha * _sklearn_net.weights_sumsq(net) / sw_sum
            packed_grad[to_bp] = grads
            return loss, packed_grad

        packed = np.empty(params.size)
        packed[to_bp] = params
        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                   **_get_additional_lbfgs_options_dict("iprint", iprint)}
        with _blas_threads(nt):
            opt_res = scipy.optimize.minimize(loss_grad, packed, method="L-BFGS-B", jac=True,
                                              options=options)
        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = opt_res.fun
        params[...] = opt_res.x[to_bp]

    def _is_classifier(self):
        return isinstance(self, _MLPClassifier)


class MLPClassifier(_BpMLP, _MLPClassifier):
    """scikit-learn's MLPClassifier, trained by bp's compiled passes.

    Log loss with a softmax output (logistic for binary and multilabel targets):
    ``min_W  -sum_i w_i log p(y_i | x_i) / sum(w) + alpha ||W||^2 / (2 sum(w))``. The parameters,
    defaults, attributes, label handling and errors are scikit-learn's
    (sklearn.neural_network.MLPClassifier); ``n_threads`` and ``dtype`` are bp's extras. With the
    same ``random_state`` the fitted ``coefs_`` equal scikit-learn's to rounding.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The width of each hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        The hidden layers' activation.
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
        The optimizer: scikit-learn's L-BFGS route, or its SGD and Adam updates in bp's compiled
        epoch loop.
    alpha : float, default=0.0001
        The L2 penalty's strength.
    batch_size : int or "auto", default="auto"
        Rows per step for sgd and adam ("auto": min(200, n_samples)).
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        sgd's learning-rate schedule.
    learning_rate_init : float, default=0.001
        The initial learning rate (sgd, adam).
    power_t : float, default=0.5
        The exponent of the "invscaling" schedule.
    max_iter : int, default=200
        Epochs for sgd and adam; iterations for lbfgs.
    shuffle : bool, default=True
        Shuffle the rows every epoch (sgd, adam).
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffles and the early-stopping split.
    tol : float, default=1e-4
        The tolerance of the stopping rule.
    verbose : bool, default=False
        Print the loss after every iteration.
    warm_start : bool, default=False
        Start from the previous fit's weights.
    momentum : float, default=0.9
        sgd's momentum.
    nesterovs_momentum : bool, default=True
        sgd's Nesterov momentum.
    early_stopping : bool, default=False
        Stop when the score on a held-out split stops improving (sgd, adam).
    validation_fraction : float, default=0.1
        The held-out fraction for early stopping.
    beta_1 : float, default=0.9
        adam's first-moment decay.
    beta_2 : float, default=0.999
        adam's second-moment decay.
    epsilon : float, default=1e-8
        adam's denominator term.
    n_iter_no_change : int, default=10
        Epochs without improvement of more than ``tol`` before stopping (sgd, adam).
    max_fun : int, default=15000
        lbfgs's limit on loss evaluations.
    n_threads : int, optional
        bp's threads for the kernels and BLAS (None: bp's default, OMP_NUM_THREADS if set;
        joblib's workers set it).
    dtype : {"float32", "float64"}, optional
        The parameters' dtype (None: X's, float32 or float64, as scikit-learn).

    Attributes
    ----------
    coefs_ : list of numpy.ndarray
        The weight matrix of each layer, ``(n_in, n_out)``.
    intercepts_ : list of numpy.ndarray
        The bias of each layer.
    loss_ : float
        The loss at the end of training.
    loss_curve_ : list of float
        The loss after every iteration (sgd, adam).
    n_iter_ : int
        The iterations run.
    n_features_in_ : int
        The input width.
    classes_ : numpy.ndarray
        The class labels.

    See Also
    --------
    MLPRegressor : The regressor.

    Examples
    --------
    >>> import bp
    >>> from sklearn.datasets import load_iris
    >>> from bp.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    >>> clf.score(X, y) > 0.9
    True
    """

    _parameter_constraints = {**_MLPClassifier._parameter_constraints, **_EXTRA_CONSTRAINTS}

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 n_threads=None, dtype=None):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun)
        self.n_threads = n_threads
        self.dtype = dtype


class MLPRegressor(_BpMLP, _MLPRegressor):
    """scikit-learn's MLPRegressor, trained by bp's compiled passes.

    Squared error with an identity output, or Poisson with an exponential one:
    ``min_W  sum_i w_i ||f(x_i) - y_i||^2 / (2 m sum(w)) + alpha ||W||^2 / (2 sum(w))`` for the
    squared error. The parameters, defaults, attributes and errors are scikit-learn's
    (sklearn.neural_network.MLPRegressor); ``n_threads`` and ``dtype`` are bp's extras. With the same
    ``random_state`` the fitted ``coefs_`` equal scikit-learn's to rounding.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        The loss (and the output activation: identity, or exp for poisson).
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The width of each hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        The hidden layers' activation.
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
        The optimizer: scikit-learn's L-BFGS route, or its SGD and Adam updates in bp's compiled
        epoch loop.
    alpha : float, default=0.0001
        The L2 penalty's strength.
    batch_size : int or "auto", default="auto"
        Rows per step for sgd and adam ("auto": min(200, n_samples)).
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        sgd's learning-rate schedule.
    learning_rate_init : float, default=0.001
        The initial learning rate (sgd, adam).
    power_t : float, default=0.5
        The exponent of the "invscaling" schedule.
    max_iter : int, default=200
        Epochs for sgd and adam; iterations for lbfgs.
    shuffle : bool, default=True
        Shuffle the rows every epoch (sgd, adam).
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffles and the early-stopping split.
    tol : float, default=1e-4
        The tolerance of the stopping rule.
    verbose : bool, default=False
        Print the loss after every iteration.
    warm_start : bool, default=False
        Start from the previous fit's weights.
    momentum : float, default=0.9
        sgd's momentum.
    nesterovs_momentum : bool, default=True
        sgd's Nesterov momentum.
    early_stopping : bool, default=False
        Stop when the score on a held-out split stops improving (sgd, adam).
    validation_fraction : float, default=0.1
        The held-out fraction for early stopping.
    beta_1 : float, default=0.9
        adam's first-moment decay.
    beta_2 : float, default=0.999
        adam's second-moment decay.
    epsilon : float, default=1e-8
        adam's denominator term.
    n_iter_no_change : int, default=10
        Epochs without improvement of more than ``tol`` before stopping (sgd, adam).
    max_fun : int, default=15000
        lbfgs's limit on loss evaluations.
    n_threads : int, optional
        bp's threads for the kernels and BLAS (None: bp's default, OMP_NUM_THREADS if set;
        joblib's workers set it).
    dtype : {"float32", "float64"}, optional
        The parameters' dtype (None: X's, float32 or float64, as scikit-learn).

    Attributes
    ----------
    coefs_ : list of numpy.ndarray
        The weight matrix of each layer, ``(n_in, n_out)``.
    intercepts_ : list of numpy.ndarray
        The bias of each layer.
    loss_ : float
        The loss at the end of training.
    loss_curve_ : list of float
        The loss after every iteration (sgd, adam).
    n_iter_ : int
        The iterations run.
    n_features_in_ : int
        The input width.

    See Also
    --------
    MLPClassifier : The classifier.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> from bp.sklearn import MLPRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, (200, 2))
    >>> y = X[:, 0] ** 2 + X[:, 1]
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), solver="lbfgs", random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.9
    True
    """

    _parameter_constraints = {**_MLPRegressor._parameter_constraints, **_EXTRA_CONSTRAINTS}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 n_threads=None, dtype=None):
        super().__init__(
            loss=loss, hidden_layer_sizes=hidden_layer_sizes, activation=activation,
            solver=solver, alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun)
        self.n_threads = n_threads
        self.dtype = dtype
