"""
Regression with validation data and early stopping
==================================================

Fit a noisy one-dimensional function with a small tanh network, give ``fit`` separate validation
data, and let :class:`bp.EarlyStopping` stop training when the validation loss stops improving
and restore the best weights.
"""

# %%
# A curve with noise: 400 training points, 200 validation points.
import matplotlib.pyplot as plt
import numpy as np

import bp

rng = np.random.default_rng(0)


def truth(x):
    return np.sin(3 * x) + 0.3 * x


x_train = rng.uniform(-2, 2, (400, 1))
x_val = rng.uniform(-2, 2, (200, 1))
y_train = truth(x_train) + 0.2 * rng.standard_normal(x_train.shape)
y_val = truth(x_val) + 0.2 * rng.standard_normal(x_val.shape)

# %%
# The identity output and ``mse`` make a regression. ``EarlyStopping`` watches ``val_loss`` and,
# after ``patience`` epochs without improvement, stops and puts back the best epoch's weights.
model = bp.Sequential([
    bp.Dense(32, activation="tanh"),
    bp.Dense(32, activation="tanh"),
    bp.Dense(1, activation="identity"),
], dtype="float64", seed=0)
stop = bp.EarlyStopping(monitor="val_loss", patience=20)
history = model.fit(x_train, y_train, loss="mse", optimizer=bp.Adam(1e-2), epochs=500,
                    batch_size=32, validation_data=(x_val, y_val), callbacks=[stop], verbose=0)
best = int(np.argmin(history.history["val_loss"]))
print(f"stopped after {len(history.epoch)} epochs; best epoch {best}, "
      f"val_loss {history.history['val_loss'][best]:.4f}")

# %%
# The curves, and the fit: the training loss keeps falling after the best epoch, the validation
# loss does not.
fig, (ax_loss, ax_fit) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_loss.plot(history.history["loss"], label="training")
ax_loss.plot(history.history["val_loss"], label="validation")
ax_loss.axvline(best, color="gray", linestyle=":", label="best (restored)")
ax_loss.set(xlabel="epoch", ylabel="mse", yscale="log", title="loss")
ax_loss.legend()
grid = np.linspace(-2, 2, 200)[:, None]
ax_fit.scatter(x_train, y_train, s=4, color="lightgray", label="training data")
ax_fit.plot(grid, truth(grid), "k--", label="truth")
ax_fit.plot(grid, model.predict(grid), label="bp")
ax_fit.set(xlabel="x", ylabel="y", title="the fitted curve")
ax_fit.legend()
fig.tight_layout()
