"""Clipping by the global norm (``global_clipnorm=``, formerly ``clip_norm=``) inside fit, against PyTorch itself: the same
network, weights and batches trained by torch with ``torch.nn.utils.clip_grad_norm_`` before each
``torch.optim`` step. On the compiled engine and on the Python twin, float64, with steps on both
sides of the bound (tests/test_api_optimizers.py checks Optimizer.apply against a NumPy
transcription of the same rule)."""

import numpy as np
import pytest

import bp

from ._reliability import data
from .conftest import assert_close

CLIP = 1.0
OPTIMIZERS = {  # (bp, torch.optim) with the same rule
    "sgd": (lambda: bp.SGD(0.5, global_clipnorm=CLIP), lambda p, torch: torch.optim.SGD(p, lr=0.5)),
    "sgd momentum": (lambda: bp.SGD(0.2, momentum=0.9, global_clipnorm=CLIP),
                     lambda p, torch: torch.optim.SGD(p, lr=0.2, momentum=0.9)),
    "adam": (lambda: bp.Adam(0.05, global_clipnorm=CLIP), lambda p, torch: torch.optim.Adam(p, lr=0.05)),
}


def _torch_fit(torch, Ws, bs, X, y, make_opt, batch_size, epochs):
    """tanh hidden layer, softmax output, mean cross-entropy; unshuffled batches in order."""
    params = [torch.tensor(a, requires_grad=True) for pair in zip(Ws, bs) for a in pair]
    opt = make_opt(params, torch)
    X, y = torch.tensor(X), torch.tensor(y)
    norms = []
    for _ in range(epochs):
        for start in range(0, X.shape[0], batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            opt.zero_grad()
            logits = torch.tanh(xb @ params[0] + params[1]) @ params[2] + params[3]
            torch.nn.functional.cross_entropy(logits, yb).backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
            opt.step()
    return [p.detach().numpy() for p in params], norms


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fit_clips_as_torch_clip_grad_norm(name, compiled):
    torch = pytest.importorskip("torch", reason='the reference is PyTorch: pip install "bp[torch]"')
    make_bp, make_torch = OPTIMIZERS[name]
    X, y = data(40)
    model = bp.Sequential([bp.Dense(6, activation="tanh"), bp.Dense(3, activation="softmax")],
                          dtype="float64", seed=2).build(X.shape[1])
    Ws, bs = [L.W.copy() for L in model.layers], [L.b.copy() for L in model.layers]
    model.fit(X * 3, y, loss="cross_entropy", optimizer=make_bp(), batch_size=8, epochs=3,
              shuffle=False, verbose=0)
    theirs, norms = _torch_fit(torch, Ws, bs, X * 3, y, make_torch, batch_size=8, epochs=3)
    assert min(norms) < CLIP < max(norms)  # steps on both sides of the bound
    ours = [a for L in model.layers for a in (L.W, L.b)]
    for a, b in zip(ours, theirs):
        assert_close(a, b, np.float64, k=8 * 15, err_msg=name)
    # and clipping changed the training: without it the weights differ
    unclipped = bp.Sequential([bp.Dense(6, activation="tanh"), bp.Dense(3, activation="softmax")],
                              dtype="float64", seed=2).build(X.shape[1])
    opt = make_bp()
    opt.global_clipnorm = None
    unclipped.fit(X * 3, y, loss="cross_entropy", optimizer=opt, batch_size=8, epochs=3,
                  shuffle=False, verbose=0)
    assert not np.allclose(unclipped.get_flat_params(), model.get_flat_params())
