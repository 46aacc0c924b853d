"""
Exporting to ONNX and serving with ONNX Runtime
===============================================

:func:`bp.to_onnx` writes a trained model as an ONNX graph (input ``"X"``, output ``"f_out"``,
a dynamic batch axis), which ONNX Runtime and the other ONNX runtimes serve without bp.
Needs ``pip install "bp[onnx]" onnxruntime``.
"""

# %%
# Train a model on the digits, export it.
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime
from sklearn.datasets import load_digits

import bp

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
model = bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(10, activation="softmax")],
                      seed=0)
model.fit(X, y, epochs=10, verbose=0)

path = os.path.join(tempfile.mkdtemp(), "digits.onnx")
proto = bp.to_onnx(model, path)
print([node.op_type for node in proto.graph.node])

# %%
# Serve it: a session, and the same predictions.
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
f_onnx = session.run(None, {"X": X})[0]
f_bp = model.predict(X)
print("max |ONNX Runtime - bp|:", np.abs(f_onnx - f_bp).max())
print("same classes:", np.array_equal(f_onnx.argmax(1), f_bp.argmax(1)))

# %%
# The batch axis is dynamic: one row at a time works too, as a server would call it. The
# differences are float32 rounding.
single = np.concatenate([session.run(None, {"X": X[i:i + 1]})[0] for i in range(200)])
diff = np.abs(single - f_bp[:200]).max(axis=1)
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.hist(diff, bins=30)
ax.set(xlabel="max |ONNX Runtime (one row) - bp.predict| per row", ylabel="rows",
       title="the exported graph gives bp's answers")
fig.tight_layout()
os.remove(path)
