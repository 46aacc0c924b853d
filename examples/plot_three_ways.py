"""
Why backpropagation is cheap: the three ways, counted and timed
===============================================================

Every gradient of a network can be had three ways: (1) the naive chain rule, a fresh product of
Jacobians for each parameter; (2) forward caching, which keeps the forward pass's values but still
walks forward once per parameter; (3) backpropagation, which computes each layer's error signal
``delta`` once, from the output back, and reuses it for every weight of the layer.
:func:`bp.explain` counts their multiply-adds exactly, times them on your own network, and checks
that all three (and bp's compiled kernels) give the same gradients.
"""

# %%
# One network, one batch of 16 rows.
import matplotlib.pyplot as plt
import numpy as np

import bp
from bp.insight import operation_counts

rng = np.random.default_rng(0)
X = rng.standard_normal((16, 16))
y = rng.integers(0, 4, 16)
model = bp.Sequential([bp.Dense(24, activation="tanh"), bp.Dense(24, activation="tanh"),
                       bp.Dense(4, activation="softmax")], seed=0)
result = bp.explain(model, X, y, budget=0.02)
print(result)

# %%
# How the counts grow. One forward pass costs N x P multiply-adds for P parameters; the naive way
# about N P^2, forward caching less but still a multiple of P forward passes, backpropagation a
# small constant number of forward passes whatever the width. The counts are exact
# (:func:`bp.insight.operation_counts`), so the study costs no time.
widths = [4, 8, 16, 32, 64, 128, 256]
ways = ("naive", "forward", "backprop")
ratios = {way: [] for way in ways}
params = []
for w in widths:
    c = operation_counts([16, w, w, 4], batch_size=16)
    params.append(c["n_params"])
    for way in ways:
        ratios[way].append(c[way] / c["forward_pass"])

fig, ax_c = plt.subplots(figsize=(5.5, 3.8))
for way, label in zip(ways, ("(1) naive chain rule", "(2) forward caching",
                             "(3) backpropagation")):
    ax_c.plot(params, ratios[way], "o-", label=label)
ax_c.set(xscale="log", yscale="log", xlabel="parameters P (16-w-w-4 network)",
         ylabel="multiply-adds / one forward pass", title="counted")
ax_c.legend()
fig.tight_layout()

# %%
# And measured, on the network above: the NumPy twins of the three ways (float64) and bp's
# compiled backpropagation, each relative to a forward pass.
t = result.times
bars = {"naive": t["naive"] / t["forward_pass"], "forward": t["forward"] / t["forward_pass"],
        "backprop": t["backprop"] / t["forward_pass"],
        "bp kernels": t["bp_backprop"] / t["bp_forward_pass"]}
fig, ax_t = plt.subplots(figsize=(5.5, 3.6))
ax_t.bar(list(bars), list(bars.values()), color=["C0", "C1", "C2", "C3"])
ax_t.set(yscale="log", ylabel="time / one forward pass",
         title=f"measured, P = {result.n_params:,}")
fig.tight_layout()
print("all ways agree:", result.agree)
