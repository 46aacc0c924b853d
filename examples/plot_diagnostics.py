"""
Per-layer error signals over training
=====================================

:class:`bp.DiagnosticsLogger` runs :meth:`bp.Sequential.diagnose` on a fixed batch after every
epoch: per layer, the mean size of the error signal ``delta`` relative to the output layer's, the
fraction of dead relu units and of saturated sigmoid/tanh units. Vanishing signals (a deep
sigmoid stack) and healthy ones (relu) look very different.
"""

# %%
# The same data and depth twice: six sigmoid hidden layers, and six relu hidden layers.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

import bp

X, y = load_digits(return_X_y=True)
X = X / 16.0


def train(activation):
    layers = [bp.Dense(32, activation=activation) for _ in range(6)]
    model = bp.Sequential(layers + [bp.Dense(10, activation="softmax")], seed=0)
    logger = bp.DiagnosticsLogger(X[:256], y[:256])
    history = model.fit(X, y, optimizer=bp.SGD(0.05, momentum=0.9), epochs=10, batch_size=32,
                        callbacks=[logger], verbose=0)
    return model, history


runs = {act: train(act) for act in ("sigmoid", "relu")}

# %%
# The last epoch's diagnosis of the sigmoid network: the printout flags what stands out.
model, history = runs["sigmoid"]
print(history.history["diagnostics"][-1])

# %%
# Over training: ``history.history["mean_abs_delta_<i>"]`` holds layer i's mean absolute error
# signal after every epoch. Divided by the output layer's, it shows how much of the error signal
# reaches each layer on its way back.
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, (act, (model, history)) in zip(axes, runs.items()):
    h = history.history
    out = np.array(h[f"mean_abs_delta_{len(model) - 1}"])
    for i in range(len(model) - 1):
        ax.plot(np.array(h[f"mean_abs_delta_{i}"]) / out, color=plt.cm.viridis(i / 6),
                label=f"layer {i}")
    ax.set(yscale="log", xlabel="epoch", title=f"{act}: |delta[i]| / |delta[O]|")
axes[0].legend(fontsize=7)
for act, (model, history) in runs.items():
    axes[2].plot(history.history["loss"], label=act)
axes[2].set(yscale="log", xlabel="epoch", title="training loss")
axes[2].legend()
fig.tight_layout()
