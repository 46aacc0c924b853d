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
