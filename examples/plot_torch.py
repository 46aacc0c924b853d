"""
Handing a model over to PyTorch, and back
=========================================

:meth:`bp.Sequential.to_torch` gives a ``torch.nn.Sequential`` with the same weights
(``Linear.weight`` is ``W.T``: bp stores ``W`` as ``(n_in, n_out)``), and
:meth:`bp.Sequential.from_torch` reads such a module back, bit for bit. Train in bp, fine-tune or
deploy in PyTorch, or the other way round. Needs ``pip install "bp[torch]"``.
"""

# %%
# Train in bp.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits

import bp

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
model = bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(10, activation="softmax")],
                      seed=0)
history = model.fit(X, y, optimizer=bp.SGD(0.1, momentum=0.9), epochs=10, verbose=0)

# %%
# Hand it over: the module computes what bp computes.
module = model.to_torch()
print(module)
with torch.no_grad():
    f_torch = module(torch.from_numpy(X)).numpy()
print("max |torch - bp|:", np.abs(f_torch - model.predict(X)).max())

# %%
# Keep training in PyTorch with its own loop (its ``CrossEntropyLoss`` wants the logits, so the
# softmax at the end of the module is left out of the loss), then bring the result back.
logits = module[:-1]
opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
torch_losses = []
torch.manual_seed(0)
for epoch in range(10):
    perm = torch.randperm(len(Xt))
    total = 0.0
    for start in range(0, len(Xt), 32):
        idx = perm[start:start + 32]
        loss = torch.nn.functional.cross_entropy(logits(Xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    torch_losses.append(total / len(Xt))

back = bp.Sequential.from_torch(module)
print("weights bit for bit:", all(np.array_equal(layer.W, lin.weight.detach().numpy().T)
                                  for layer, lin in zip(back.layers, module[::2])))
print("after PyTorch's epochs:", back.evaluate(X, y))

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(range(1, 11), history.history["loss"], "o-", label="bp.fit")
ax.plot(range(11, 21), torch_losses, "s-", label="then PyTorch")
ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="one model, two trainers")
ax.legend()
fig.tight_layout()
