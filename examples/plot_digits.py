"""
Classifying handwritten digits, with learning curves
=====================================================

Train a 64-64-10 network on the 8x8 digits scikit-learn ships (no download), watch the training
and validation curves that :class:`bp.History` records, and read the test accuracy.
"""

# %%
# The data: 1797 images of 8x8 pixels (intensities 0..16), ten classes. Scale the pixels to
# [0, 1] and keep a quarter of the images for the test.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import bp

X, y = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                    random_state=0)

# %%
# The network: one relu hidden layer and a softmax output. The input width is taken from the data
# when ``fit`` first sees it. ``validation_split`` holds out 10% of the training rows (after a
# seeded shuffle) and evaluates them after every epoch.
model = bp.Sequential([
    bp.Dense(64, activation="relu"),
    bp.Dense(10, activation="softmax"),
], seed=0)
history = model.fit(X_train, y_train, loss="cross_entropy", optimizer=bp.Adam(1e-3),
                    epochs=40, batch_size=32, validation_split=0.1, verbose=0)
model.summary()
print("test:", model.evaluate(X_test, y_test))

# %%
# The learning curves: ``history.history`` holds one number per epoch for each logged name.
h = history.history
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_loss.plot(history.epoch, h["loss"], label="training")
ax_loss.plot(history.epoch, h["val_loss"], label="validation")
ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
ax_acc.plot(history.epoch, h["accuracy"], label="training")
ax_acc.plot(history.epoch, h["val_accuracy"], label="validation")
ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0.8, 1.0))
for ax in (ax_loss, ax_acc):
    ax.legend()
fig.tight_layout()

# %%
# Where the model errs: the test images it gets wrong, with its guess.
pred = model.predict(X_test).argmax(axis=1)
wrong = np.flatnonzero(pred != y_test)[:8]
fig, axes = plt.subplots(1, max(len(wrong), 1), figsize=(9, 1.6))
for ax, i in zip(np.atleast_1d(axes), wrong):
    ax.imshow(X_test[i].reshape(8, 8), cmap="gray_r")
    ax.set(title=f"{y_test[i]} -> {pred[i]}", xticks=[], yticks=[])
fig.tight_layout()
