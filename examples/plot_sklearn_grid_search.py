"""
The scikit-learn drop-in in a grid search
=========================================

:class:`bp.sklearn.MLPClassifier` is scikit-learn's ``MLPClassifier`` (the same parameters,
defaults, attributes and algorithm) with bp's compiled passes underneath: change the import and
the rest of the code (pipelines, ``GridSearchCV``, ``cross_val_score``) stays as it is.
"""

# %%
# A pipeline and a small grid over the hidden width and the L2 penalty, cross-validated.
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

# was: from sklearn.neural_network import MLPClassifier
from bp.sklearn import MLPClassifier

X, y = load_digits(return_X_y=True)
grid = {"mlpclassifier__hidden_layer_sizes": [(16,), (32,), (64,)],
        "mlpclassifier__alpha": [1e-4, 1e-2, 1.0]}


def search(estimator):
    pipe = make_pipeline(MinMaxScaler(), estimator)
    with warnings.catch_warnings():  # 20 iterations are too few to converge: on purpose, fast
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        gs = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    return gs, time.perf_counter() - t0


gs_bp, t_bp = search(MLPClassifier(max_iter=20, random_state=0))
gs_sk, t_sk = search(SkMLPClassifier(max_iter=20, random_state=0))
print("bp.sklearn:  ", gs_bp.best_params_, f"score {gs_bp.best_score_:.3f}, {t_bp:.1f} s")
print("scikit-learn:", gs_sk.best_params_, f"score {gs_sk.best_score_:.3f}, {t_sk:.1f} s")

# %%
# The same algorithm from the same ``random_state``: the cross-validated scores of the two
# searches agree cell by cell (to rounding), so the grids look the same.
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
for ax, (name, gs) in zip(axes, (("bp.sklearn", gs_bp), ("scikit-learn", gs_sk))):
    scores = gs.cv_results_["mean_test_score"].reshape(3, 3)  # alpha x width (sorted keys)
    im = ax.imshow(scores, vmin=0.5, vmax=1.0, cmap="viridis")
    for (i, j), s in np.ndenumerate(scores):
        ax.text(j, i, f"{s:.3f}", ha="center", va="center", color="w")
    ax.set(xticks=range(3), xticklabels=["16", "32", "64"], yticks=range(3),
           yticklabels=["1e-4", "1e-2", "1"], xlabel="hidden width", title=name)
axes[0].set_ylabel("alpha")
fig.colorbar(im, ax=axes)
print("largest difference of the mean scores:",
      np.abs(gs_bp.cv_results_["mean_test_score"] - gs_sk.cv_results_["mean_test_score"]).max())
