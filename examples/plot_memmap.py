"""
Training on a memory-mapped data set larger than the cache
==========================================================

``fit`` on a memory-mapped array (``np.load(path, mmap_mode="r")`` or ``np.memmap``) reads X in
blocks of about 32 MB instead of loading the file: resident memory is a few blocks, not the
file. Each epoch visits the blocks in a seeded random order and shuffles the rows inside each.
This example writes a 48 MB file (larger than the CPU's caches, small enough for a docs build),
trains on it, and compares with the same fit on the array in memory.
"""

# %%
# A synthetic classification set written to disk as ``.npy``: 100000 rows of 120 float32
# features, the class a linear function of the features plus noise.
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import bp

rng = np.random.default_rng(0)
n, d, k = 100_000, 120, 4
directory = tempfile.mkdtemp()
path = os.path.join(directory, "X.npy")
X_file = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
W_true = rng.standard_normal((d, k))
y = np.empty(n, dtype=np.int64)
for start in range(0, n, 20_000):  # written block by block, as a real pipeline would
    block = rng.standard_normal((20_000, d)).astype(np.float32)
    X_file[start:start + 20_000] = block
    y[start:start + 20_000] = (block @ W_true + rng.standard_normal((20_000, k))).argmax(1)
X_file.flush()
del X_file
print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB")

# %%
# Train on the file. ``y`` stays in memory; X is read in blocks.
X = np.load(path, mmap_mode="r")


def model():
    return bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(k, activation="softmax")],
                         seed=0)


t0 = time.perf_counter()
streamed = model().fit(X, y, epochs=3, batch_size=256, verbose=0)
t_stream = time.perf_counter() - t0

# %%
# The same fit on the array in memory shuffles all rows together, so its row order (and the
# model it reaches) differs; the curves are what to compare.
X_mem = np.array(X)
t0 = time.perf_counter()
in_memory = model().fit(X_mem, y, epochs=3, batch_size=256, verbose=0)
t_mem = time.perf_counter() - t0
print(f"memory-mapped: {t_stream:.2f} s, in memory: {t_mem:.2f} s (3 epochs each)")

fig, ax = plt.subplots(figsize=(5, 3.4))
ax.plot(np.arange(1, 4), streamed.history["accuracy"], "o-", label="memory-mapped, by blocks")
ax.plot(np.arange(1, 4), in_memory.history["accuracy"], "s--", label="in memory")
ax.set(xlabel="epoch", ylabel="training accuracy", title="the same training, two sources",
       xticks=[1, 2, 3])
ax.legend()
fig.tight_layout()
del X
os.remove(path)
os.rmdir(directory)
