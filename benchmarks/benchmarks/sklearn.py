"""bp.sklearn: the estimators' fits on digits and a regression, each solver."""

import warnings

import numpy as np

from .common import digits


class MLPClassifierFit:
    """bp.sklearn.MLPClassifier on digits (100 hidden relu units), 10 iterations of each solver."""

    params = (["adam", "sgd", "lbfgs"],)
    param_names = ["solver"]

    def setup(self, solver):
        self.X, self.y = digits("float64")

    def time_fit(self, solver):
        from bp.sklearn import MLPClassifier

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: 10 iterations on purpose
            MLPClassifier(solver=solver, max_iter=10, random_state=0).fit(self.X, self.y)


class MLPRegressorFit:
    """bp.sklearn.MLPRegressor, 2000 x 20 rows of a smooth target, 10 iterations of adam."""

    def setup(self):
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((2000, 20))
        self.y = np.sin(self.X[:, 0]) + 0.5 * self.X[:, 1] ** 2

    def time_fit(self):
        from bp.sklearn import MLPRegressor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPRegressor(max_iter=10, random_state=0).fit(self.X, self.y)
