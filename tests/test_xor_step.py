"""One full training step of the XOR network, worked by hand, against the kernels (float64).

Network: 2 inputs -> 2 sigmoid hidden units -> 1 sigmoid output, MSE with mean reduction
(L = 1/4 sum_i (f_i - y_i)^2 over the 4 samples), plain SGD with learning rate 0.5.

    W1 = [[0.1, 0.2],      b1 = [0.0, 0.1]      W2 = [[ 0.5],      b2 = [0.2]
          [0.3, 0.4]]                                 [-0.5]]

Weights are (n_in, n_out), so z_in = x @ W + b: unit j of the hidden layer gets x0 W1[0, j] +
x1 W1[1, j] + b1[j]. The numbers below were computed once with the scalar code in
`scalar_step` (plain Python floats, math.exp, no NumPy, no bp) and are written out as literals;
`test_literals_are_the_scalar_calculation` keeps the two in step.
"""

import math

import numpy as np

from bp import kernels as K

X = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
Y = [0.0, 1.0, 1.0, 0.0]
W1 = [[0.1, 0.2], [0.3, 0.4]]
B1 = [0.0, 0.1]
W2 = [[0.5], [-0.5]]
B2 = [0.2]
LR = 0.5

# ---- forward -----------------------------------------------------------------------------------
# Hidden pre-activations z_in1 = x @ W1 + b1, by hand:
#   (0,0): [0 + 0 + 0.0,        0 + 0 + 0.1]        = [0.0, 0.1]
#   (0,1): [0.3 + 0.0,          0.4 + 0.1]          = [0.3, 0.5]
#   (1,0): [0.1 + 0.0,          0.2 + 0.1]          = [0.1, 0.3]
#   (1,1): [0.1 + 0.3 + 0.0,    0.2 + 0.4 + 0.1]    = [0.4, 0.7]
Z_IN1 = [[0.0, 0.1], [0.3, 0.5], [0.1, 0.3], [0.4, 0.7]]
# Hidden outputs h = sigmoid(z_in1) = 1 / (1 + e^-z). For sample (0,1):
#   e^-0.3 = 0.7408182207,  h0 = 1 / 1.7408182207 = 0.574442516812
#   e^-0.5 = 0.6065306597,  h1 = 1 / 1.6065306597 = 0.622459331202
# and sigmoid(0) = 0.5, e^-0.1 = 0.9048374180, e^-0.4 = 0.6703200460, e^-0.7 = 0.4965853038.
H = [[0.500000000000, 0.524979187479],
     [0.574442516812, 0.622459331202],
     [0.524979187479, 0.574442516812],
     [0.598687660112, 0.668187772168]]
# Output pre-activation f_in = 0.5 h0 - 0.5 h1 + 0.2. For (0,1):
#   0.287221258406 - 0.311229665601 + 0.2 = 0.175991592805
F_IN = [0.187510406261, 0.175991592805, 0.175268335334, 0.165249943972]
# f = sigmoid(f_in). For (0,1): e^-0.175991592805 = 0.8386250338, f = 1 / 1.8386250338
F = [0.546740730816, 0.543884686448, 0.543705259290, 0.541218730132]
# L = 1/4 [0.5467^2 + (0.5439 - 1)^2 + (0.5437 - 1)^2 + 0.5412^2]
LOSS = 0.252022302559

# ---- backward ----------------------------------------------------------------------------------
# delta2_i = dL/df_in_i = (2/4) (f_i - y_i) * f_i (1 - f_i)           (MSE mean, sigmoid')
#   (0,1): 0.5 * (0.543884686448 - 1) * 0.248074134295 = 0.5 * -0.456115313552 * 0.248074134295
#        = -0.0565752057741
DELTA2 = [6.774536023085e-02, -5.657520577408e-02, -5.660104696006e-02, 6.719258036244e-02]
# delta1_ij = delta2_i * W2[j] * h_ij (1 - h_ij)
#   (0,1), j=0: -0.0565752057741 *  0.5 * 0.244458311691 = -0.00691513964354
#   (0,1), j=1: -0.0565752057741 * -0.5 * 0.235003712202 = +0.00664769168774
DELTA1 = [[8.468170028857e-03, -8.447034837906e-03],
          [-6.915139643544e-03, 6.647691687738e-03],
          [-7.057472480836e-03, 6.918298189892e-03],
          [8.071869733088e-03, -7.448730028067e-03]]
# Gradients: grad_W2[j] = sum_i h_ij delta2_i, grad_b2 = sum_i delta2_i,
#            grad_W1[k, j] = sum_i x_ik delta1_ij (only the samples with x_k = 1 count),
#            grad_b1[j] = sum_i delta1_ij.
#   grad_W1[0, 0] = delta1[(1,0), 0] + delta1[(1,1), 0] = -0.007057472481 + 0.008071869733
#                 = 0.001014397252
GRAD_W2 = [[1.188647359199e-02], [1.273235212942e-02]]
GRAD_B2 = [2.176168785916e-02]
GRAD_W1 = [[1.014397252253e-03, -5.304318381750e-04], [1.156730089545e-03, -8.010383403287e-04]]
GRAD_B1 = [2.567427637566e-03, -2.329774988342e-03]

# ---- update: w <- w - 0.5 grad -------------------------------------------------------------------
#   W1[0, 0] = 0.1 - 0.5 * 0.001014397252 = 0.099492801374
NEW_W1 = [[0.099492801374, 0.200265215919], [0.299421634955, 0.400400519170]]
NEW_B1 = [-0.001283713819, 0.101164887494]
NEW_W2 = [[0.494056763204], [-0.506366176065]]
NEW_B2 = [0.189119156070]
# the step lowers the loss: 0.252022302559 -> 0.251646650645
LOSS_AFTER = 0.251646650645

TOL = dict(rtol=1e-6, atol=1e-9)  # the literals carry 12 significant digits


def scalar_step():
    """The same step in plain Python scalars (no NumPy, no bp): where the literals come from."""
    def s(z):
        return 1 / (1 + math.exp(-z))

    z1 = [[x[0] * W1[0][j] + x[1] * W1[1][j] + B1[j] for j in range(2)] for x in X]
    h = [[s(z) for z in row] for row in z1]
    f_in = [hh[0] * W2[0][0] + hh[1] * W2[1][0] + B2[0] for hh in h]
    f = [s(z) for z in f_in]
    loss = sum((fi - yi) ** 2 for fi, yi in zip(f, Y)) / 4
    d2 = [2 / 4 * (fi - yi) * fi * (1 - fi) for fi, yi in zip(f, Y)]
    d1 = [[d2[i] * W2[j][0] * h[i][j] * (1 - h[i][j]) for j in range(2)] for i in range(4)]
    gW2 = [[sum(h[i][j] * d2[i] for i in range(4))] for j in range(2)]
    gb2 = [sum(d2)]
    gW1 = [[sum(X[i][k] * d1[i][j] for i in range(4)) for j in range(2)] for k in range(2)]
    gb1 = [sum(d1[i][j] for i in range(4)) for j in range(2)]
    return dict(z1=z1, h=h, f_in=f_in, f=f, loss=loss, d2=d2, d1=d1, gW2=gW2, gb2=gb2, gW1=gW1,
                gb1=gb1)


def test_literals_are_the_scalar_calculation():
    r = scalar_step()
    for got, want in [(r["z1"], Z_IN1), (r["h"], H), (r["f_in"], F_IN), (r["f"], F),
                      (r["loss"], LOSS), (r["d2"], DELTA2), (r["d1"], DELTA1), (r["gW2"], GRAD_W2),
                      (r["gb2"], GRAD_B2), (r["gW1"], GRAD_W1), (r["gb1"], GRAD_B1)]:
        np.testing.assert_allclose(got, want, **TOL)


def test_one_training_step():
    X_ = np.array(X)
    y = np.array(Y)[:, None]
    w1, b1 = np.array(W1), np.array(B1)
    w2, b2 = np.array(W2), np.array(B2)

    z_in1, h = K.dense_forward(X_, w1, b1, "sigmoid")
    np.testing.assert_allclose(z_in1, Z_IN1, **TOL)
    np.testing.assert_allclose(h, H, **TOL)
    f_in, f = K.dense_forward(h, w2, b2, "sigmoid")
    np.testing.assert_allclose(f_in[:, 0], F_IN, **TOL)
    np.testing.assert_allclose(f[:, 0], F, **TOL)
    np.testing.assert_allclose(K.loss_value(f_in, f, y, "mse"), LOSS, **TOL)

    delta2 = K.output_delta(f_in, f, y, "mse", "sigmoid")
    np.testing.assert_allclose(delta2[:, 0], DELTA2, **TOL)
    delta1 = K.hidden_delta(delta2, w2, z_in1, h, "sigmoid")
    np.testing.assert_allclose(delta1, DELTA1, **TOL)
    gW2, gb2 = K.gradients(h, delta2)
    gW1, gb1 = K.gradients(X_, delta1)
    np.testing.assert_allclose(gW2, GRAD_W2, **TOL)
    np.testing.assert_allclose(gb2, GRAD_B2, **TOL)
    np.testing.assert_allclose(gW1, GRAD_W1, **TOL)
    np.testing.assert_allclose(gb1, GRAD_B1, **TOL)

    for p, g in ((w1, gW1), (b1, gb1), (w2, gW2), (b2, gb2)):
        K.sgd_update(p, g, learning_rate=LR)
    np.testing.assert_allclose(w1, NEW_W1, **TOL)
    np.testing.assert_allclose(b1, NEW_B1, **TOL)
    np.testing.assert_allclose(w2, NEW_W2, **TOL)
    np.testing.assert_allclose(b2, NEW_B2, **TOL)

    _, h = K.dense_forward(X_, w1, b1, "sigmoid")
    f_in, f = K.dense_forward(h, w2, b2, "sigmoid")
    np.testing.assert_allclose(K.loss_value(f_in, f, y, "mse"), LOSS_AFTER, **TOL)


def test_one_sample_by_hand():
    # The step for sample (0,1) alone (then L = (f - 1)^2, delta2 = 2 (f - 1) f (1 - f)): every
    # number is twice/four times the per-sample share of the batch step above.
    x = np.array([[0.0, 1.0]])
    z_in1, h = K.dense_forward(x, np.array(W1), np.array(B1), "sigmoid")
    f_in, f = K.dense_forward(h, np.array(W2), np.array(B2), "sigmoid")
    delta2 = K.output_delta(f_in, f, np.array([[1.0]]), "mse", "sigmoid")
    np.testing.assert_allclose(delta2, [[4 * DELTA2[1]]], **TOL)  # 2 (f - 1) f (1 - f) = -0.22630
    delta1 = K.hidden_delta(delta2, np.array(W2), z_in1, h, "sigmoid")
    np.testing.assert_allclose(delta1, [[4 * DELTA1[1][0], 4 * DELTA1[1][1]]], **TOL)
    gW1, gb1 = K.gradients(x, delta1)
    # x = (0, 1): the first input row of grad_W1 is zero, the second is delta1
    np.testing.assert_allclose(gW1, [[0.0, 0.0], [4 * DELTA1[1][0], 4 * DELTA1[1][1]]], **TOL)
    np.testing.assert_allclose(gb1, gW1[1], **TOL)
