"""bp.sklearn trains the same model as scikit-learn: in float64 with the same random_state, the
same coefs_, intercepts_, loss_curve_ (or loss_) and n_iter_, for every solver, activation and
task type, on small data.

How close (measured on these problems, 15 epochs / iterations, networks (8, 6)):
  sgd, adam     coefs_ within 3e-16, loss_curve_ within 4e-15: the same operations in the same
                order, only the products' and sums' rounding differs (BLAS blocks vs NumPy).
  lbfgs         coefs_ within 1e-11 (logistic hidden units: 3e-12, others 1e-14), loss within
                2e-13: L-BFGS-B's line search amplifies the rounding differences of the gradient.
The tolerances below leave a margin of ~100x over those figures.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import neural_network as skn
from sklearn.datasets import make_classification, make_regression

import bp.sklearn as bps

STOCHASTIC_TOL = {"coefs": 1e-13, "loss": 1e-12}
LBFGS_TOL = {"coefs": 1e-9, "loss": 1e-10}


def _data():
    X, y = make_classification(120, 10, n_informative=5, n_classes=3, random_state=0)
    Xr, yr = make_regression(120, 10, n_targets=2, random_state=0)
    return X, y, Xr, yr / 100


X, y, Xr, yr = _data()


def _fit_both(ours, theirs, X, y, sample_weight=None, **params):
    params = {"random_state": 1, "max_iter": 15, "hidden_layer_sizes": (8, 6), **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning after 15 epochs, from both alike
        a = ours(**params).fit(X, y, sample_weight=sample_weight)
        b = theirs(**params).fit(X, y, sample_weight=sample_weight)
    return a, b


def _assert_same_model(a, b, tol):
    assert a.n_iter_ == b.n_iter_
    assert a.out_activation_ == b.out_activation_ and a.n_layers_ == b.n_layers_
    for mine, theirs in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=tol["coefs"])
    if b.loss_curve_ if hasattr(b, "loss_curve_") else False:
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=0, atol=tol["loss"])
        assert a.best_loss_ == pytest.approx(b.best_loss_, abs=tol["loss"])
    assert a.loss_ == pytest.approx(b.loss_, abs=tol["loss"])


def _tol(solver):
    return LBFGS_TOL if solver == "lbfgs" else STOCHASTIC_TOL


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_multiclass_classifier_equals_sklearn(solver, activation):
    a, b = _fit_both(bps.MLPClassifier, skn.MLPClassifier, X, y, solver=solver,
                     activation=activation)
    _assert_same_model(a, b, _tol(solver))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("target", ["binary", "multilabel", "strings"])
def test_other_targets_equal_sklearn(solver, target):
    labels = {"binary": y > 0, "multilabel": np.c_[y > 0, y > 1, y == 1],
              "strings": np.array(["ant", "bee", "cat"])[y]}[target]
    a, b = _fit_both(bps.MLPClassifier, skn.MLPClassifier, X, labels, solver=solver)
    _assert_same_model(a, b, _tol(solver))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_regressor_equals_sklearn(solver, loss):
    target = yr if loss == "squared_error" else np.exp(yr[:, 0] / 2)
    a, b = _fit_both(bps.MLPRegressor, skn.MLPRegressor, Xr, target, solver=solver, loss=loss)
    _assert_same_model(a, b, _tol(solver))


@pytest.mark.parametrize("params", [
    {"solver": "sgd", "learning_rate": "invscaling", "nesterovs_momentum": False},
    {"solver": "sgd", "learning_rate": "adaptive", "tol": 0.05, "n_iter_no_change": 2},
    {"solver": "sgd", "early_stopping": True, "learning_rate": "adaptive"},
    {"solver": "adam", "early_stopping": True, "validation_fraction": 0.2},
    {"solver": "adam", "tol": 0.05, "n_iter_no_change": 2},
    {"solver": "adam", "batch_size": 7, "alpha": 0.5},
    {"solver": "sgd", "shuffle": False, "momentum": 0.5},
])
def test_schedules_and_stopping_rules_equal_sklearn(params):
    a, b = _fit_both(bps.MLPClassifier, skn.MLPClassifier, X, y, max_iter=30, **params)
    _assert_same_model(a, b, STOCHASTIC_TOL)
    if params.get("early_stopping"):
        np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, atol=1e-12)
        assert a.best_validation_score_ == b.best_validation_score_


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sample_weight_equals_sklearn(solver):
    w = np.random.default_rng(0).uniform(0.2, 3, len(y))
    a, b = _fit_both(bps.MLPClassifier, skn.MLPClassifier, X, y, sample_weight=w, solver=solver)
    _assert_same_model(a, b, _tol(solver))


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sparse_input_equals_sklearn(solver):
    Xs = sp.random(120, 40, density=0.1, random_state=0, format="csr")
    a, b = _fit_both(bps.MLPClassifier, skn.MLPClassifier, Xs, y, solver=solver)
    _assert_same_model(a, b, _tol(solver))


def test_warm_start_and_partial_fit_equal_sklearn():
    models = []
    for cls in (bps.MLPClassifier, skn.MLPClassifier):
        m = cls(hidden_layer_sizes=(8,), random_state=0, max_iter=5, warm_start=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X, y).fit(X, y)
        p = cls(hidden_layer_sizes=(8,), random_state=0, solver="sgd")
        for chunk in np.array_split(np.arange(len(y)), 4):
            p.partial_fit(X[chunk], y[chunk], classes=np.unique(y))
        models.append((m, p))
    (m_ours, p_ours), (m_theirs, p_theirs) = models
    _assert_same_model(m_ours, m_theirs, STOCHASTIC_TOL)
    _assert_same_model(p_ours, p_theirs, STOCHASTIC_TOL)
    assert p_ours.t_ == p_theirs.t_ == len(y)


@pytest.mark.parametrize("binary", [False, True])
def test_saturated_outputs_report_sklearns_clipped_log_loss(binary):
    # a large step on well separated data drives probabilities below float64's eps: scikit-learn
    # then clips them (its loss_curve_ and stopping rule see the clipped loss), and so must bp
    Xs, ys = make_classification(120, 10, n_informative=5, n_classes=3, random_state=0,
                                 class_sep=3)
    a, b = _fit_both(bps.MLPClassifier, skn.MLPClassifier, Xs * 5, ys > 0 if binary else ys,
                     solver="adam", learning_rate_init=0.1, max_iter=30, alpha=0, tol=0,
                     hidden_layer_sizes=(8,))
    assert a.predict_proba(Xs * 5).min() < np.finfo(np.float64).eps
    _assert_same_model(a, b, {"coefs": 1e-12, "loss": 1e-10})
