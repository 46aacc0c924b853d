"""
The XOR network and its error signals
=====================================

XOR is the smallest problem a network without a hidden layer cannot solve. A 2-2-1 sigmoid
network learns it; this example trains one and looks at its error signals
``delta[i] = dL/dz_in[i]``, the quantities backpropagation computes once per layer and reuses for
every weight (see :ref:`mathematics`).
"""

# %%
# Four points, two classes, mean squared error, plain SGD with momentum on the whole batch.
import matplotlib.pyplot as plt
import numpy as np

import bp

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
y = np.array([0, 1, 1, 0], dtype=np.float64)
model = bp.Sequential([bp.Dense(2, activation="sigmoid"), bp.Dense(1, activation="sigmoid")],
                      dtype="float64", seed=0)
history = model.fit(X, y, loss="mse", optimizer=bp.SGD(learning_rate=2.0, momentum=0.9),
                    epochs=300, batch_size=4, shuffle=False, verbose=0)
print("f_out =", model.predict(X).ravel().round(3), " targets", y)

# %%
# The error signals during training. ``model.gradients`` runs one backward pass without an
# update; ``model.error_signals`` then holds delta for each layer (one row per sample). Replay
# the training with a callback that records them after every epoch.
record = {"loss": [], "delta_1": [], "delta_O": []}


def keep(epoch, logs):
    model.gradients(X, y, loss="mse")
    delta_1, delta_O = model.error_signals
    record["loss"].append(logs["loss"])
    record["delta_1"].append(np.abs(delta_1).mean())
    record["delta_O"].append(np.abs(delta_O).mean())


model = bp.Sequential([bp.Dense(2, activation="sigmoid"), bp.Dense(1, activation="sigmoid")],
                      dtype="float64", seed=0)
model.fit(X, y, loss="mse", optimizer=bp.SGD(learning_rate=2.0, momentum=0.9), epochs=300,
          batch_size=4, shuffle=False, verbose=0,
          callbacks=[bp.LambdaCallback(on_epoch_end=keep)])

fig, (ax_loss, ax_delta) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_loss.plot(record["loss"])
ax_loss.set(xlabel="epoch", ylabel="mse", yscale="log", title="loss")
ax_delta.plot(record["delta_O"], label="mean |delta[O]| (output)")
ax_delta.plot(record["delta_1"], label="mean |delta[1]| (hidden)")
ax_delta.set(xlabel="epoch", yscale="log", title="error signals")
ax_delta.legend()
fig.tight_layout()

# %%
# The last backward pass, written out: each gradient is a cached delta times the input it
# multiplies, ``dL/dW[i] = z_out[i-1].T @ delta[i]``. ``python -m bp xor --explain`` prints the
# same walk-through.
from bp.insight import explain_xor

explain_xor(model, X, y)

# %%
# What the hidden layer learned: each hidden unit draws a line in the input plane, and the output
# combines the two half-planes into the XOR regions.
grid = np.stack(np.meshgrid(np.linspace(-0.5, 1.5, 120), np.linspace(-0.5, 1.5, 120)), -1)
f = model.predict(grid.reshape(-1, 2)).reshape(grid.shape[:2])
fig, ax = plt.subplots(figsize=(4, 3.6))
im = ax.contourf(grid[..., 0], grid[..., 1], f, levels=20, cmap="RdBu_r")
ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=80)
ax.set(xlabel="x1", ylabel="x2", title="f_out over the input plane")
fig.colorbar(im)
fig.tight_layout()
