import numpy as np

import bp
from bp import _reference as R
from bp import kernels as K


def test_import_and_config(capsys):
    bp.show_config()
    assert "OpenMP kernels" in capsys.readouterr().out


def test_forward_matches_reference():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 5))
    W = rng.standard_normal((5, 3))
    b = rng.standard_normal(3)
    np.testing.assert_allclose(K.dense_forward(X, W, b, "tanh")[1],
                               R.dense_forward(X, W, b, "tanh")[1], rtol=1e-12)


def test_loss_values_are_pytorch_means():
    """Independent of the reference: the formulas of torch.nn.MSELoss, BCEWithLogitsLoss and
    CrossEntropyLoss with reduction="mean", written out directly (m = 3 outputs, so a loss that
    averaged over outputs twice would be off by 3)."""
    rng = np.random.default_rng(3)
    f_in = rng.standard_normal((5, 3))
    y = rng.random((5, 3))
    f_out = R.sigma("identity", f_in)
    assert np.isclose(K.loss_value(f_in, f_out, y, "mse"), np.mean((f_in - y) ** 2), rtol=1e-12)
    p = 1 / (1 + np.exp(-f_in))
    bce = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert np.isclose(K.loss_value(f_in, p, y, "binary_cross_entropy"), bce, rtol=1e-12)
    labels = np.array([0, 2, 1, 1, 0])
    s = np.exp(f_in) / np.exp(f_in).sum(axis=1, keepdims=True)
    ce = -np.mean(np.log(s[np.arange(5), labels]))
    assert np.isclose(K.loss_value(f_in, s, np.eye(3)[labels], "cross_entropy"), ce, rtol=1e-12)
