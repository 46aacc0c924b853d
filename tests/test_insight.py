"""bp.insight: the three ways to every gradient agree, their counts are exact, and what the
cached deltas tell (per-sample gradient norms, diagnostics) matches a plain recomputation."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bp
from bp import _reference as R
from bp import _ways as W
from bp import insight as I
from bp import losses as _losses

ROOT = Path(__file__).resolve().parents[1]

# (widths n_0..n_L, activations, loss, use_bias per layer)
NETWORKS = [
    ([2, 2, 1], ["sigmoid", "sigmoid"], "mse", [True, True]),
    ([3, 2], ["softmax"], "cross_entropy", [True]),  # one layer: only the output's T_k
    ([5, 4, 3, 3], ["tanh", "relu", "softmax"], "cross_entropy", [True, False, True]),
    ([3, 4, 2], ["gelu", "sigmoid"], "binary_cross_entropy", [False, True]),
    ([3, 4, 3, 2, 2], ["leaky_relu", "identity", "tanh", "softmax"], "mse", [True] * 4),
]


def _model(widths, acts, bias, dtype="float64", seed=1):
    layers = [bp.Dense(w, activation=a, use_bias=b) for w, a, b in zip(widths[1:], acts, bias)]
    model = bp.Sequential(layers, dtype=dtype, seed=seed, input_dim=widths[0])
    return model.build()


def _data(widths, loss, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, widths[0]))
    if loss == "cross_entropy":
        y = rng.integers(0, widths[-1], n)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (n, widths[-1])).astype(float)
    else:
        y = rng.standard_normal((n, widths[-1]))
    return X, y


def _setup(widths, acts, loss, bias, n=5):
    model = _model(widths, acts, bias)
    X, y = _data(widths, loss, n)
    Xm, Y, loss = I._inputs(model, X, y, loss)
    net = W._Net(model, loss)
    return model, X, y, net, Xm.astype(np.float64), Y, _losses.default_scale(loss, n, widths[-1])


# ---- counts --------------------------------------------------------------------------------------


def test_counts_of_the_xor_network_by_hand():
    # 2-2-1 with biases, N = 4. Parameters: layer 0 (2+1)*2 = 6, layer 1 (2+1)*1 = 3, P = 9.
    # forward pass F = N P = 36.
    # backprop: F + gradients N P = 36 + delta[0] = (delta[1] @ W[1].T) * sigma': N*2*1 + N*2
    #   = 16, so 36 + 36 + 16 = 88.
    # forward caching: F + per parameter T_k; output layer T_1 = N = 4 (one contraction with
    #   delta[O]); hidden T_0 = N (sigma') + N*1 (row of W[1]) + N*1 (contraction) = 12:
    #   36 + 6*12 + 3*4 = 120.
    # naive: every parameter redoes the forward pass: 6*(36 + 12) + 3*(36 + 4) = 408.
    assert I.operation_counts([2, 2, 1], 4) == {
        "forward_pass": 36, "backprop": 88, "forward": 120, "naive": 408, "n_params": 9}


@pytest.mark.parametrize("widths, acts, loss, bias", NETWORKS)
def test_counts_are_the_operations_performed(widths, acts, loss, bias):
    model, X, y, net, X64, Y, scale = _setup(widths, acts, loss, bias)
    counts = I.operation_counts(widths, X.shape[0], bias)
    assert counts["n_params"] == model.n_params
    for way, fn in (("naive", I.naive_gradients), ("forward", I.forward_gradients),
                    ("backprop", I.backprop_gradients)):
        counter = W._Counter()
        fn(net, X64, Y, scale, counter)
        assert counter.n == counts[way], way
    counter = W._Counter()
    W._forward_pass(net, X64, counter)
    assert counter.n == counts["forward_pass"] == X.shape[0] * model.n_params


def test_counts_do_not_depend_on_the_chunking(monkeypatch):
    model, X, y, net, X64, Y, scale = _setup(*NETWORKS[2])
    monkeypatch.setattr(W, "_CHUNK_ELEMENTS", 7)  # a few parameters per chunk
    counter = W._Counter()
    g_small = I.naive_gradients(net, X64, Y, scale, counter)
    assert counter.n == I.operation_counts(NETWORKS[2][0], 5, NETWORKS[2][3])["naive"]
    monkeypatch.undo()
    np.testing.assert_allclose(g_small, I.naive_gradients(net, X64, Y, scale), rtol=1e-12,
                               atol=1e-15)


def test_backprop_is_a_constant_times_the_forward_pass_and_the_others_grow():
    small, large = I.operation_counts([8] * 4, 16), I.operation_counts([64] * 4, 16)
    for c in (small, large):
        assert 2 < c["backprop"] / c["forward_pass"] < 3
    assert (large["naive"] / large["backprop"]) > 30 * (small["naive"] / small["backprop"])
    assert (large["forward"] / large["backprop"]) > 5 * (small["forward"] / small["backprop"])


# ---- the three ways agree ------------------------------------------------------------------------


@pytest.mark.parametrize("widths, acts, loss, bias", NETWORKS)
def test_three_ways_give_the_same_gradients(widths, acts, loss, bias):
    model, X, y, net, X64, Y, scale = _setup(widths, acts, loss, bias)
    g = {name: fn(net, X64, Y, scale) for name, fn in (
        ("naive", I.naive_gradients), ("forward", I.forward_gradients),
        ("backprop", I.backprop_gradients))}
    # the NumPy oracle of bp._reference, flattened in bp's layout (W row-major, then b)
    _, _, gW, gb = R.backward(X64, Y, net.Ws, [L.b if L.use_bias else None for L in model],
                              acts, loss)
    ref = np.concatenate([np.concatenate([w.ravel()] + ([b] if b is not None else []))
                          for w, b in zip(gW, gb)])
    kernels = np.concatenate([np.concatenate([w.ravel()] + ([b] if b is not None else []))
                              for w, b in model.gradients(X, y, loss=loss)])
    for name, grad in g.items():
        np.testing.assert_allclose(grad, ref, rtol=1e-10, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(kernels, ref, rtol=1e-10, atol=1e-14)


def test_three_ways_match_central_differences():
    widths, acts, loss, bias = NETWORKS[2]  # cross-entropy: evaluate() reports exactly L
    model, X, y, net, X64, Y, scale = _setup(widths, acts, loss, bias)
    theta = model.get_flat_params()

    def L(t):
        model.set_flat_params(t)
        return model.evaluate(X, y, loss=loss)["loss"]

    h = 1e-6
    fd = np.array([(L(theta + h * e) - L(theta - h * e)) / (2 * h) for e in np.eye(theta.size)])
    model.set_flat_params(theta)
    for fn in (I.naive_gradients, I.forward_gradients, I.backprop_gradients):
        np.testing.assert_allclose(fn(net, X64, Y, scale), fd, rtol=1e-5, atol=1e-8)


# ---- bp.explain ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_explain_reports_counts_times_and_agreement(dtype):
    widths, acts, loss, bias = NETWORKS[2]
    model = _model(widths, acts, bias, dtype=dtype)
    X, y = _data(widths, loss, 6)
    result = bp.explain(model, X, y, loss=loss, budget=0.002)
    assert result.agree
    assert result.counts == I.operation_counts(widths, 6, bias)
    assert result.widths == widths and result.n_params == model.n_params
    assert set(result.times) == {"forward_pass", "naive", "forward", "backprop", "bp_forward_pass",
                                 "bp_backprop"}
    assert all(np.isfinite(t) and t >= 0 for t in result.times.values())
    t = result.times  # time_ratios are the measured times' ratios (their values are never asserted)
    assert result.time_ratios == {"backprop/forward_pass": t["backprop"] / t["forward_pass"],
                                  "bp_backprop/bp_forward_pass": t["bp_backprop"] / t["bp_forward_pass"],
                                  "naive/backprop": t["naive"] / t["backprop"],
                                  "forward/backprop": t["forward"] / t["backprop"]}
    for way in ("naive", "forward", "bp"):
        assert result.max_abs_diff[way] < (1e-6 if dtype == "float32" else 1e-12)
    ratios = result.count_ratios
    assert ratios["naive/backprop"] > ratios["forward/backprop"] > 1
    text = str(result)
    for needle in ("(1) naive chain rule", "(2) forward caching", "(3) backpropagation",
                   "The three ways give the same gradients", f"{result.counts['naive']:,}"):
        assert needle in text
    assert repr(result).startswith("Explanation(")


def test_explain_builds_an_unbuilt_model_and_uses_its_default_loss():
    model = bp.Sequential([bp.Dense(3, activation="relu"), bp.Dense(2, activation="sigmoid")])
    X, y = _data([4, 3, 2], "binary_cross_entropy", 5)
    result = bp.explain(model, X, y, budget=0.001)
    assert model.built and result.loss == "binary_cross_entropy" and result.agree


def test_explain_refuses_networks_too_large_for_the_naive_way():
    model = bp.Sequential([bp.Dense(64, activation="tanh"), bp.Dense(64, activation="tanh"),
                           bp.Dense(10, activation="softmax")], input_dim=64)
    X, y = _data([64, 64, 64, 10], "cross_entropy", 64)
    with pytest.raises(ValueError, match=r"at most 1e\+09 multiply-adds.*P = 8,970 parameters, batch N = 64"):
        bp.explain(model, X, y)


def test_explain_refuses_a_hidden_softmax():
    model = bp.Sequential([bp.Dense(3, activation="softmax"), bp.Dense(1)], input_dim=2)
    with pytest.raises(ValueError, match="hidden softmax"):
        bp.explain(model, np.ones((2, 2)), np.ones(2), loss="mse")


def test_explain_rejects_bad_input():
    model = _model([3, 2], ["softmax"], [True])
    with pytest.raises(ValueError, match="3 features"):
        bp.explain(model, np.ones((4, 5)), np.zeros(4, int))
    with pytest.raises(ValueError, match="needs an output activation"):
        bp.explain(model, np.ones((4, 3)), np.zeros(4), loss="binary_cross_entropy")


# ---- per-sample gradient norms -------------------------------------------------------------------


def _one_at_a_time(model, X, y, loss, bias):
    """||dl_s/d(W, b)|| per layer from a separate backward pass on each sample alone."""
    rows = []
    for s in range(X.shape[0]):
        grads = model.gradients(X[s:s + 1], y[s:s + 1], loss=loss)
        rows.append([np.sqrt(np.sum(gW.astype(np.float64) ** 2)
                             + (np.sum(gb.astype(np.float64) ** 2) if bias and gb is not None
                                else 0.0)) for gW, gb in grads])
    return np.array(rows)


@pytest.mark.parametrize("widths, acts, loss, layer_bias", NETWORKS)
@pytest.mark.parametrize("bias", [True, False])
def test_per_sample_gradient_norms_match_one_sample_at_a_time(widths, acts, loss, layer_bias,
                                                              bias):
    model = _model(widths, acts, layer_bias)
    X, y = _data(widths, loss, 7)
    norms = model.per_sample_gradient_norms(X, y, loss=loss, bias=bias)
    assert norms.shape == (7, len(widths) - 1)
    np.testing.assert_allclose(norms, _one_at_a_time(model, X, y, loss, bias), rtol=1e-10)
    # "mean": each sample's share of the mean loss's gradient is 1/N of its own
    np.testing.assert_allclose(model.per_sample_gradient_norms(X, y, loss=loss, bias=bias,
                                                               reduction="mean"), norms / 7)


def test_per_sample_gradient_norms_in_float32():
    widths, acts, loss, bias = NETWORKS[2]
    model = _model(widths, acts, bias, dtype="float32")
    X, y = _data(widths, loss, 6)
    np.testing.assert_allclose(model.per_sample_gradient_norms(X, y, loss=loss),
                               _one_at_a_time(model, X, y, loss, True), rtol=1e-4)


def test_per_sample_gradient_norms_reject_an_unknown_reduction():
    model = _model([2, 1], ["identity"], [True])
    with pytest.raises(ValueError, match="reduction"):
        model.per_sample_gradient_norms(np.ones((2, 2)), np.ones(2), reduction="sum")


# ---- diagnostics ---------------------------------------------------------------------------------


def test_diagnose_measures_the_deltas_and_finds_dead_relu_units():
    model = _model([3, 4, 2], ["relu", "softmax"], [True, True])
    X, y = _data([3, 4, 2], "cross_entropy", 8)
    b = model.layers[0].b.copy()
    b[:2] = -100.0  # units 0 and 1 never fire on this data: dead
    model.layers[0].b = b
    d = model.diagnose(X, y, loss="cross_entropy")
    assert len(d) == 2 and d[0]["dead_fraction"] == 0.5
    assert d[1]["dead_fraction"] is None and d[1]["saturated_fraction"] is None  # fused output
    model.gradients(X, y, loss="cross_entropy")
    for i, delta in enumerate(model.error_signals):
        # per-sample scale: N times the mean-loss delta, so the batch size does not shrink it
        assert d[i]["mean_abs_delta"] == pytest.approx(8 * np.mean(np.abs(delta)))
    assert d[1]["delta_ratio"] == 1
    assert any("50% of its relu units are dead" in w for w in d.warnings)
    assert "dead" in str(d) and "50%" in str(d)


def test_diagnose_finds_saturated_tanh_and_a_vanishing_signal():
    model = _model([4, 6, 6, 1], ["tanh", "tanh", "identity"], [True] * 3)
    model.layers[0].W = model.layers[0].W * 200  # every hidden unit driven into |tanh| ~ 1
    X, y = _data([4, 6, 6, 1], "mse", 10)
    d = model.diagnose(X, y, loss="mse")
    assert d[0]["saturated_fraction"] > 0.9
    assert d[0]["delta_ratio"] < I.VANISHING
    assert any("vanishing" in w for w in d.warnings)
    assert any("saturated" in w for w in d.warnings)


def test_diagnostics_logger_records_every_epoch_in_history():
    model = _model([3, 5, 2], ["relu", "softmax"], [True, True])
    X, y = _data([3, 5, 2], "cross_entropy", 20)
    logger = bp.DiagnosticsLogger(X[:8], y[:8])
    history = model.fit(X, y, loss="cross_entropy", epochs=3, batch_size=5, verbose=0,
                        callbacks=[logger])
    assert len(logger.diagnoses) == 3 and len(history.history["diagnostics"]) == 3
    for key in ("mean_abs_delta_0", "dead_fraction_0", "mean_abs_delta_1"):
        assert len(history.history[key]) == len(history.history["loss"]) == 3
    assert np.isnan(history.history["saturated_fraction_0"]).all()  # relu: not applicable


# ---- the command line and the bench --------------------------------------------------------------


def test_cli_explain(capsys):
    from bp.__main__ import main

    code = main(["explain", "--inputs", "3", "--layers", "4", "--outputs", "2",
                 "--batch-size", "4", "--diagnose"])
    out = capsys.readouterr().out
    assert code == 0
    assert "network 3-4-2" in out and "The three ways give the same gradients" in out
    assert "per-sample gradient norms" in out


def test_cli_explain_refuses_a_large_network(capsys):
    from bp.__main__ import main

    code = main(["explain", "--layers", "128,128", "--batch-size", "64"])
    assert code == 2
    assert re.search(r"at most 1e\+09 multiply-adds", capsys.readouterr().err)


def test_cli_xor_explain(capsys):
    from bp.__main__ import main

    assert main(["xor", "--explain", "--epochs", "20"]) == 0
    out = capsys.readouterr().out
    for needle in ("z_in[1] = x @ W[1] + b[1]", "delta[O] = dL/df_in", "delta[1] = (delta[O] @ W[O].T)",
                   "dL/dW[1][1,1] = sum_s x[s,1] delta[1][s,1]", "dL/db[O][0]"):
        assert needle in out
    diff = float(re.search(r"max \|difference\| (\S+)", out).group(1))
    assert diff < 1e-12


def test_explain_xor_numbers_are_the_kernels():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    y = np.array([0, 1, 1, 0], float)
    model = bp.Sequential([bp.Dense(2, activation="sigmoid"), bp.Dense(1, activation="sigmoid")],
                          dtype="float64", seed=3)
    model.build(2)
    import io

    steps = I.explain_xor(model, X, y, file=io.StringIO())
    grads = model.gradients(X, y, loss="mse")
    np.testing.assert_allclose(steps["grad_W"][0], grads[0][0], rtol=1e-12)
    np.testing.assert_allclose(steps["grad_b"][1], grads[1][1], rtol=1e-12)
    with pytest.raises(ValueError, match="XOR network"):
        I.explain_xor(_model([2, 3, 2], ["tanh", "softmax"], [True, True]), X, y)


@pytest.mark.slow
def test_bench_caching_quick_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "caching.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "caching.csv").exists() and (tmp_path / "caching.md").exists()
    assert "| sweep | width |" in proc.stdout
