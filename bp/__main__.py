"""python -m bp: bp's main job (see README.md)."""

import sys


def _xor(argv):
    """Train the seed's XOR network (2-2-1, sigmoid, MSE) through the kernels; print the loss."""
    import numpy as np

    from bp import kernels as K

    rng = np.random.default_rng(0)
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    W1, b1 = rng.normal(0, 1, (2, 2)), np.zeros(2)
    W2, b2 = rng.normal(0, 1, (2, 1)), np.zeros(1)
    lr = 2.0
    for step in range(5001):
        z_in1, z_out1 = K.dense_forward(X, W1, b1, "sigmoid")
        f_in, f_out = K.dense_forward(z_out1, W2, b2, "sigmoid")
        L = K.loss_value(f_in, f_out, y, "mse")
        delta2 = K.output_delta(f_in, f_out, y, "mse", "sigmoid")
        delta1 = K.hidden_delta(delta2, W2, z_in1, z_out1, "sigmoid")
        gW2, gb2 = K.gradients(z_out1, delta2)
        gW1, gb1 = K.gradients(X, delta1)
        for p, g in ((W1, gW1), (b1, gb1), (W2, gW2), (b2, gb2)):
            K.sgd_update(p, g, learning_rate=lr)
        if step % 500 == 0:
            print(f"step {step:5d}  loss {L:.6f}")
    print("predictions:", np.round(f_out.ravel(), 3), " targets:", y.ravel())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    _xor(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
