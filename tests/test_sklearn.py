"""bp.sklearn as a scikit-learn estimator: scikit-learn's estimator checks, pipelines, grid
search in joblib's processes, pickling, partial_fit streams, sparse input, labels, dtypes and
scikit-learn's errors for bad input."""

import io
import pickle
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import joblib
import scipy.sparse as sp
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from bp.sklearn import MLPClassifier, MLPRegressor

X, y = make_classification(150, 8, n_informative=5, n_classes=3, random_state=0)
Xr, yr = make_regression(150, 8, n_targets=2, noise=0.1, random_state=0)
SMALL = {"hidden_layer_sizes": (10,), "max_iter": 50, "random_state": 0, "learning_rate_init": 0.01}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Maximum iterations.*")
        warnings.filterwarnings("ignore", message=".*lbfgs failed to converge.*")
        yield


@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_parameters_are_sklearns_plus_the_extras():
    from sklearn import neural_network as skn
    for ours, theirs in ((MLPClassifier(), skn.MLPClassifier()),
                         (MLPRegressor(), skn.MLPRegressor())):
        expected = theirs.get_params()
        params = ours.get_params()
        assert {k: params[k] for k in expected} == expected
        assert set(params) - set(expected) == {"n_threads", "dtype"}


def test_pipeline_with_standard_scaler():
    pipe = make_pipeline(StandardScaler(), MLPClassifier(**SMALL)).fit(X * 100 + 5, y)
    assert pipe.score(X * 100 + 5, y) > 0.8
    assert pipe.predict_proba(X[:3] * 100 + 5).shape == (3, 3)


def test_grid_search_and_cross_val_score_in_joblib_processes():
    grid = GridSearchCV(MLPClassifier(**SMALL), {"alpha": [1e-4, 1e-1]}, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_params_["alpha"] in (1e-4, 1e-1) and grid.best_score_ > 0.5
    scores = cross_val_score(MLPRegressor(**SMALL, solver="lbfgs"), Xr, yr[:, 0], cv=2,
                             n_jobs=2)
    assert scores.shape == (2,) and np.all(scores > 0.5)


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_and_joblib_round_trips(dump):
    clf = MLPClassifier(**SMALL).fit(X, np.array(["no", "yes", "maybe"])[y])
    if dump == "pickle":
        back = pickle.loads(pickle.dumps(clf))
    else:
        buf = io.BytesIO()
        joblib.dump(clf, buf)
        buf.seek(0)
        back = joblib.load(buf)
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    back.partial_fit(X, np.array(["no", "yes", "maybe"])[y])  # training goes on after loading
    assert back.t_ == clf.t_ + len(y) and back.loss_ < clf.loss_curve_[0]


def test_partial_fit_stream_learns_and_needs_classes_first():
    clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0, learning_rate_init=0.01)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X[:10], y[:10])
    losses = []
    for _ in range(20):
        for chunk in np.array_split(np.arange(len(y)), 5):
            clf.partial_fit(X[chunk], y[chunk], classes=np.unique(y))
        losses.append(clf.loss_)
    assert losses[-1] < losses[0] and clf.score(X, y) > 0.8
    assert clf.t_ == 20 * len(y)


def test_partial_fit_is_not_offered_for_lbfgs():
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit(X, y, classes=np.unique(y))


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_and_dense_give_the_same_model(solver, fmt):
    Xs = sp.random(150, 300, density=0.02, random_state=1, format=fmt)
    a = MLPClassifier(**SMALL, solver=solver).fit(Xs, y)
    b = MLPClassifier(**SMALL, solver=solver).fit(Xs.toarray(), y)
    tol = 1e-9 if solver == "lbfgs" else 1e-12
    for ca, cb in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(ca, cb, rtol=0, atol=tol)
    np.testing.assert_allclose(a.predict_proba(Xs), b.predict_proba(Xs.toarray()), atol=tol)


def test_sparse_regression_with_poisson_matches_dense():
    Xs = sp.random(150, 50, density=0.1, random_state=2, format="csr")
    target = np.exp(np.random.default_rng(0).normal(size=150) / 3)
    a = MLPRegressor(**SMALL, loss="poisson").fit(Xs, target)
    b = MLPRegressor(**SMALL, loss="poisson").fit(Xs.toarray(), target)
    np.testing.assert_allclose(a.coefs_[0], b.coefs_[0], atol=1e-12)
    assert np.all(a.predict(Xs) > 0)


def test_labels_strings_integers_booleans_and_multilabel():
    for labels in (np.array(["cat", "dog", "eel"])[y], y * 7 - 3, y > 0):
        clf = MLPClassifier(**SMALL).fit(X, labels)
        np.testing.assert_array_equal(clf.classes_, np.unique(labels))
        assert set(clf.predict(X)) <= set(np.unique(labels))
        proba = clf.predict_proba(X)
        assert proba.shape == (len(X), len(clf.classes_))
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    assert MLPClassifier(**SMALL).fit(X, y > 0).out_activation_ == "logistic"
    Y = np.c_[y == 0, y == 1, y > 0].astype(int)
    clf = MLPClassifier(**SMALL).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 3
    assert clf.predict(X).shape == Y.shape and set(np.unique(clf.predict(X))) <= {0, 1}


def test_multi_output_regression_and_sample_weight():
    reg = MLPRegressor(**SMALL, solver="lbfgs").fit(Xr, yr / 100)
    assert reg.predict(Xr).shape == (150, 2) and reg.score(Xr, yr / 100) > 0.9
    w = np.ones(150)
    w[:75] = 0  # zero weight: the first half does not count
    a = MLPClassifier(**SMALL, alpha=0).fit(X, y, sample_weight=w)
    # only relative weights matter (without a penalty: alpha is divided by the weights' sum)
    b = MLPClassifier(**SMALL, alpha=0).fit(X, y, sample_weight=2 * w)
    for ca, cb in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(ca, cb, atol=1e-12)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_float32_input_keeps_float32_and_dtype_extra_forces_one(solver):
    clf = MLPClassifier(**SMALL, solver=solver).fit(X.astype(np.float32), y)
    assert all(c.dtype == np.float32 for c in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X.astype(np.float32)).dtype == np.float32
    ref = MLPClassifier(**SMALL, solver=solver).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X.astype(np.float32)), ref.predict_proba(X),
                               atol=2e-2)
    forced = MLPClassifier(**SMALL, solver=solver, dtype="float32").fit(X, y)
    assert forced.coefs_[0].dtype == np.float32


def test_n_threads_extra_gives_the_same_model():
    a = MLPClassifier(**SMALL, n_threads=1).fit(X, y)
    b = MLPClassifier(**SMALL, n_threads=2).fit(X, y)
    for ca, cb in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(ca, cb, atol=1e-12)


def test_early_stopping_attributes():
    clf = MLPClassifier(**SMALL, early_stopping=True).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        clf.partial_fit(X, y)


@pytest.mark.parametrize("est,params,exc,msg", [
    (MLPClassifier, {"hidden_layer_sizes": (0,)}, ValueError, "hidden_layer_sizes must be > 0"),
    (MLPClassifier, {"solver": "newton"}, ValueError, "'solver' parameter of MLPClassifier"),
    (MLPClassifier, {"alpha": -1.0}, ValueError, "'alpha' parameter"),
    (MLPRegressor, {"loss": "huber"}, ValueError, "'loss' parameter of MLPRegressor"),
    (MLPClassifier, {"n_threads": "two"}, ValueError, "'n_threads' parameter"),
    (MLPClassifier, {"n_threads": 0}, ValueError, "'n_threads' parameter"),
    (MLPClassifier, {"dtype": "float16"}, ValueError, "'dtype' parameter"),
    (MLPClassifier, {"dtype": int}, ValueError, "dtype must be float32 or float64"),
])
def test_bad_parameters_get_sklearns_errors(est, params, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        est(**params).fit(X, y)


def test_bad_input_gets_sklearns_errors():
    clf = MLPClassifier(**SMALL)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, np.linspace(0, 1, len(y)))
    clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 8"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        clf.partial_fit(X, y + 10)


def _worker_threads():
    from bp import _threads
    return _threads.effective_n_threads(None)


def test_joblib_workers_hold_bp_to_their_share_of_the_cores():
    # loky sets OMP_NUM_THREADS to cpu_count // n_jobs in its workers, and bp's thread count
    # (which n_threads=None uses for its kernels and BLAS) honours it: no oversubscription
    from joblib import Parallel, cpu_count, delayed
    counts = Parallel(n_jobs=2, backend="loky")(delayed(_worker_threads)() for _ in range(2))
    assert all(c <= max(1, cpu_count() // 2) for c in counts)


def test_without_scikit_learn_bp_imports_and_bp_sklearn_names_the_extra():
    import subprocess
    import sys
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import bp\n"
            "try:\n    import bp.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "bp[sklearn]"' in out.stdout
