"""The engine's table of operations: what the layers beyond Dense cost, and the ResNet-MLP.

    python bench/layers.py plain --threads 1          fit step of mnist / deep (seconds per step)
    python bench/layers.py norm --threads 1           a 256-wide Dense, alone / + LayerNorm / + BatchNorm
    python bench/layers.py resnet --threads 1         ResNet-MLP (Gorishniy et al. 2021): bp vs PyTorch

Each mode prints one JSON line of medians over interleaved rounds (every variant once per round,
so a drift of the machine's speed touches them alike). ``plain`` runs whatever bp is first on
sys.path: run it once with this checkout and once with the previous one (PYTHONPATH=<checkout>)
side by side to compare engines; bench/README.md, "Layers as operations", has the figures.

The timed call is fit's own: one epoch of the compiled loop (Network.train_epoch) over `steps`
batches, divided by the steps.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def _steps_time(model, X, y, batch, steps):
    t0 = time.perf_counter()
    model.fit(X[:batch * steps], y[:batch * steps], batch_size=batch, epochs=1, shuffle=False,
              verbose=0)
    return (time.perf_counter() - t0) / steps


def _model(bp, layers, n_in, dtype, seed=0):
    model = bp.Sequential(layers, dtype=dtype, seed=seed)
    model.build(n_in)
    return model


def _data(n, d, n_out, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, n_out, n)


def plain(bp, dtype, rounds, steps):
    shapes = {"mnist": ([784, 256, 128, 10], 128, "relu"),
              "deep": ([256] + [256] * 16 + [10], 64, "tanh")}
    models, times = {}, {k: [] for k in shapes}
    for name, (widths, batch, act) in shapes.items():
        layers = [bp.Dense(w, activation=act) for w in widths[1:-1]]
        layers.append(bp.Dense(widths[-1], activation="softmax"))
        models[name] = (_model(bp, layers, widths[0], dtype), batch,
                        *_data(batch * steps, widths[0], widths[-1]))
        _steps_time(models[name][0], models[name][2], models[name][3], batch, 2)  # warm-up
    for _ in range(rounds):
        for name, (model, batch, X, y) in models.items():
            times[name].append(_steps_time(model, X, y, batch, steps))
    return {k: statistics.median(v) for k, v in times.items()}


def norm(bp, dtype, rounds, steps, batch=128):
    variants = {"dense": [], "layer_norm": [bp.LayerNormalization()],
                "batch_norm": [bp.BatchNormalization()]}
    models, times = {}, {k: [] for k in variants}
    X, y = _data(batch * steps, 256, 10)
    for name, extra in variants.items():
        layers = [bp.Dense(256, activation="relu"), *extra, bp.Dense(10, activation="softmax")]
        models[name] = _model(bp, layers, 256, dtype)
        _steps_time(models[name], X, y, batch, 2)
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(_steps_time(model, X, y, batch, steps))
    out = {k: statistics.median(v) for k, v in times.items()}
    out["layer_norm_overhead"] = out["layer_norm"] / out["dense"] - 1
    out["batch_norm_overhead"] = out["batch_norm"] / out["dense"] - 1
    return out


def _resnet_bp(bp, dtype, d=256, d_hidden=512, blocks=3, n_in=64, n_out=10):
    layers = [bp.Dense(d)]
    for _ in range(blocks):
        layers.append(bp.Residual([bp.BatchNormalization(), bp.Dense(d_hidden, "relu"),
                                   bp.Dropout(0.1), bp.Dense(d), bp.Dropout(0.1)]))
    layers += [bp.BatchNormalization(), bp.Activation("relu"), bp.Dense(n_out, "softmax")]
    return _model(bp, layers, n_in, dtype)


def _resnet_torch(torch, d=256, d_hidden=512, blocks=3, n_in=64, n_out=10):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.BatchNorm1d(d), nn.Linear(d, d_hidden), nn.ReLU(),
                                   nn.Dropout(0.1), nn.Linear(d_hidden, d), nn.Dropout(0.1))

        def forward(self, x):
            return x + self.f(x)

    return nn.Sequential(nn.Linear(n_in, d), *[Block() for _ in range(blocks)],
                         nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, n_out))


def resnet(bp, dtype, rounds, steps, batch=256):
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    X, y = _data(batch * steps, 64, 10)
    model = _resnet_bp(bp, dtype)
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    net = _resnet_torch(torch).to(tdtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X).to(tdtype), torch.from_numpy(y)

    def torch_steps():
        t0 = time.perf_counter()
        for s in range(steps):
            opt.zero_grad()
            loss_fn(net(Xt[s * batch:(s + 1) * batch]), yt[s * batch:(s + 1) * batch]).backward()
            opt.step()
        return (time.perf_counter() - t0) / steps

    _steps_time(model, X, y, batch, 2)
    torch_steps()
    t_bp, t_torch = [], []
    for _ in range(rounds):
        t_bp.append(_steps_time(model, X, y, batch, steps))
        t_torch.append(torch_steps())
    # the BLAS limit: the step's products alone (3 per Dense but the first, which has 2), timed
    # as plain float gemms of the same shapes through NumPy's BLAS
    shapes = [(batch, 64, 256)] + [(batch, 256, 512), (batch, 512, 256)] * 3 + [(batch, 256, 10)]
    mats = [(np.ones((m, k), dtype), np.ones((k, n), dtype)) for m, k, n in shapes]

    def products():
        t0 = time.perf_counter()
        for _ in range(steps):
            for i, (A, B) in enumerate(mats):
                A @ B
                A.T @ (A @ B)           # grad_W's shape (k, n) from (m, k).T @ (m, n)
                if i:
                    (A @ B) @ B.T       # g_prev's shape (m, k)
        return (time.perf_counter() - t0) / steps

    limit = statistics.median(products() for _ in range(rounds))
    bp_s, torch_s = statistics.median(t_bp), statistics.median(t_torch)
    return {"bp": bp_s, "torch": torch_s, "speedup_vs_torch": torch_s / bp_s,
            "blas_products": limit, "share_of_blas_limit": limit / bp_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["plain", "norm", "resnet"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import bp

    bp.set_num_threads(args.threads)
    result = {"plain": plain, "norm": norm, "resnet": resnet}[args.mode](
        bp, args.dtype, args.rounds, args.steps)
    print(json.dumps({"mode": args.mode, "dtype": args.dtype, "threads": args.threads,
                      "bp": os.path.dirname(bp.__file__), **result}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
