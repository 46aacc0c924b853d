"""RMSprop, Adagrad and Nadam against torch.optim itself: 50 steps of bp's fused update (through
Optimizer.apply) and of torch's optimizer on the same parameters and gradients, float64 to 1e-12
relative; the kernels against their NumPy twins in both dtypes; Keras' spelling and the old names'
DeprecationWarning; the new optimizers through fit, save and load."""

import warnings

import numpy as np
import pytest

import bp
from bp import _reference as R
from bp import kernels as K

from .conftest import assert_close

torch = pytest.importorskip("torch")

STEPS = 50
N = 37

# bp optimizer, the same rule in torch.optim (non-default hyperparameters where they exist)
CASES = {
    "rmsprop": (lambda: bp.RMSprop(0.01),
                lambda p: torch.optim.RMSprop([p], lr=0.01)),
    "rmsprop momentum centered wd": (
        lambda: bp.RMSprop(0.005, rho=0.9, momentum=0.8, epsilon=1e-6, centered=True,
                           weight_decay=0.03),
        lambda p: torch.optim.RMSprop([p], lr=0.005, alpha=0.9, momentum=0.8, eps=1e-6,
                                      centered=True, weight_decay=0.03)),
    "rmsprop momentum": (lambda: bp.RMSprop(0.002, momentum=0.5),
                         lambda p: torch.optim.RMSprop([p], lr=0.002, momentum=0.5)),
    "rmsprop centered": (lambda: bp.RMSprop(0.002, centered=True),
                         lambda p: torch.optim.RMSprop([p], lr=0.002, centered=True)),
    "adagrad": (lambda: bp.Adagrad(0.05),
                lambda p: torch.optim.Adagrad([p], lr=0.05)),
    "adagrad initial wd": (
        lambda: bp.Adagrad(0.05, initial_accumulator_value=0.3, epsilon=1e-7, weight_decay=0.02),
        lambda p: torch.optim.Adagrad([p], lr=0.05, initial_accumulator_value=0.3, eps=1e-7,
                                      weight_decay=0.02)),
    "nadam": (lambda: bp.Nadam(), lambda p: torch.optim.NAdam([p])),
    "nadam custom": (
        lambda: bp.Nadam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.05,
                         momentum_decay=0.01),
        lambda p: torch.optim.NAdam([p], lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                    weight_decay=0.05, momentum_decay=0.01)),
}


def _gradients(seed=0):
    rng = np.random.default_rng(seed)
    scales = rng.choice([0.01, 0.3, 1.0, 4.0], STEPS)
    return [rng.standard_normal(N) * s for s in scales]


@pytest.fixture
def float64_scalars():
    # torch keeps NAdam's mu_product and every optimizer's step count in the default dtype:
    # float64 so that torch's own arithmetic is the float64 rule
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("name", list(CASES))
def test_equals_torch_optim_over_50_steps(name, clip, float64_scalars):
    make_bp, make_torch = CASES[name]
    opt = make_bp()
    if clip is not None:
        opt = type(opt)(**{**opt.get_config(), "global_clipnorm": clip})
    start = np.random.default_rng(1).standard_normal(N)
    params = start.copy()
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    rule = make_torch(p)
    clipped = 0
    for g in _gradients():
        opt.apply(params, g)
        p.grad = torch.tensor(g)
        if clip is not None:
            clipped += torch.nn.utils.clip_grad_norm_([p], clip) > clip
        rule.step()
        np.testing.assert_allclose(params, p.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert opt.iterations == STEPS
    if clip is not None:
        assert 0 < clipped < STEPS  # both sides of the bound


STATE_OF = {"RMSprop": {"square_avg": "square_avg", "grad_avg": "grad_avg",
                        "momentum_buffer": "momentum_buffer"},
            "Adagrad": {"accumulator": "sum"},
            "Nadam": {"m": "exp_avg", "v": "exp_avg_sq"}}


@pytest.mark.parametrize("name", ["rmsprop momentum centered wd", "adagrad initial wd",
                                  "nadam custom"])
def test_state_equals_torch_state(name, float64_scalars):
    make_bp, make_torch = CASES[name]
    opt = make_bp()
    params = np.random.default_rng(2).standard_normal(N)
    p = torch.tensor(params.copy(), requires_grad=True)
    rule = make_torch(p)
    for g in _gradients(3)[:10]:
        opt.apply(params, g)
        p.grad = torch.tensor(g)
        rule.step()
    state = opt.state_dict()
    for ours, theirs in STATE_OF[type(opt).__name__].items():
        np.testing.assert_allclose(state[ours], rule.state[p][theirs].numpy(), rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("name", list(CASES))
def test_float32_follows_the_float64_rule(name):
    # float32 parameters and gradients: the same rule, rounded in float32 (dtype tolerance)
    make_bp, _ = CASES[name]
    a, b = make_bp(), make_bp()
    start = np.random.default_rng(4).standard_normal(N)
    p64, p32 = start.copy(), start.astype(np.float32)
    for g in _gradients(5)[:5]:
        a.apply(p64, g)
        b.apply(p32, g.astype(np.float32))
    assert_close(p32, p64, np.float32, k=5)


# ---- the kernels and their NumPy twins ----------------------------------------------------------


def _buffers(rng, dtype, n=N):
    return (rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype),
            rng.uniform(0, 1, n).astype(dtype), rng.standard_normal(n).astype(dtype) * 0.1,
            rng.standard_normal(n).astype(dtype))


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_rmsprop_kernel_matches_twin(rng, dtype, centered, momentum):
    p, g, sq, gavg, buf = _buffers(rng, dtype)
    kw = dict(learning_rate=0.03, rho=0.8, epsilon=1e-5, weight_decay=0.1, momentum=momentum,
              grad_scale=0.7)
    sq = sq + gavg * gavg  # a - c^2 >= 0, as the rule keeps it
    pr, sqr, gr, br = p.copy(), sq.copy(), gavg.copy(), buf.copy()
    K.rmsprop_update(p, g, sq, gavg if centered else None, buf if momentum else None, **kw)
    R.rmsprop_update(pr, g, sqr, gr if centered else None, br if momentum else None, **kw)
    assert_close(p, pr, dtype)
    assert_close(sq, sqr, dtype)
    if centered:
        assert_close(gavg, gr, dtype)
    if momentum:
        assert_close(buf, br, dtype)


def test_adagrad_kernel_matches_twin(rng, dtype):
    p, g, acc, _, _ = _buffers(rng, dtype)
    pr, accr = p.copy(), acc.copy()
    kw = dict(learning_rate=0.2, epsilon=1e-6, weight_decay=0.05, grad_scale=2.5)
    K.adagrad_update(p, g, acc, **kw)
    R.adagrad_update(pr, g, accr, **kw)
    assert_close(p, pr, dtype)
    assert_close(acc, accr, dtype)


def test_nadam_kernel_matches_twin(rng, dtype):
    p, g, v, m, _ = _buffers(rng, dtype)
    pr, mr, vr = p.copy(), m.copy(), v.copy()
    kw = dict(learning_rate=0.01, beta_1=0.85, beta_2=0.95, epsilon=1e-6, weight_decay=0.05,
              momentum_decay=0.02, grad_scale=0.5)
    prod = K.nadam_update(p, g, m, v, 3, 0.7, **kw)
    prod_r = R.nadam_update(pr, g, mr, vr, 3, 0.7, **kw)
    assert prod == prod_r
    assert_close(p, pr, dtype)
    assert_close(m, mr, dtype)
    assert_close(v, vr, dtype)


def test_new_updates_are_bit_identical_on_1_and_2_threads(rng, dtype):
    n = 200_003  # above the parallel threshold
    results = []
    for nt in (1, 2):
        r = np.random.default_rng(0)
        p, g, a, c, u = (r.standard_normal(n).astype(dtype) for _ in range(5))
        a = np.abs(a) + c * c
        K.rmsprop_update(p, g, a, c, u, momentum=0.5, n_threads=nt)
        K.adagrad_update(p, g, np.abs(u), n_threads=nt)
        K.nadam_update(p, g, c, np.abs(u), 2, 0.9, n_threads=nt)
        results.append(p)
    assert results[0].tobytes() == results[1].tobytes()


def test_kernel_arguments_are_checked():
    p = np.zeros(4)
    with pytest.raises(ValueError, match=r"momentum=0\.5 needs a momentum_buffer\. Received: "
                                         r"momentum_buffer=None"):
        K.rmsprop_update(p, np.ones(4), np.zeros(4), momentum=0.5)
    with pytest.raises(ValueError, match=r"rho must be a finite number in \[0\.0, 1\.0\)\. "
                                         r"Received: rho=1\.0"):
        K.rmsprop_update(p, np.ones(4), np.zeros(4), rho=1.0)
    with pytest.raises(ValueError, match=r"accumulator must have 4 elements like param\. "
                                         r"Received: accumulator with shape \(3,\)"):
        K.adagrad_update(p, np.ones(4), np.zeros(3))
    with pytest.raises(ValueError, match=r"step must be an integer >= 1\. Received: step=0"):
        K.nadam_update(p, np.ones(4), np.zeros(4), np.zeros(4), 0, 1.0)
    with pytest.raises(ValueError, match=r"must not share memory"):
        K.nadam_update(p, np.ones(4), p, np.zeros(4), 1, 1.0)
    assert not p.any()  # nothing was written


# ---- Keras' spelling, and the old names ---------------------------------------------------------


@pytest.mark.parametrize("cls, old, new, value", [
    (bp.Adam, "beta1", "beta_1", 0.8), (bp.Adam, "beta2", "beta_2", 0.99),
    (bp.AdamW, "eps", "epsilon", 1e-6), (bp.SGD, "clip_norm", "global_clipnorm", 2.0),
    (bp.Adam, "clip_norm", "global_clipnorm", 2.0),
])
def test_old_names_warn_and_mean_the_new_ones(cls, old, new, value):
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\({old}=\.\.\.\) is deprecated: "
                                                rf"use {new}= \(Keras' name\)\. Received: {old}="):
        opt = cls(**{old: value})
    assert getattr(opt, new) == value
    assert opt.get_config()[new] == value and old not in opt.get_config()


def test_keras_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bp.Adam(beta_1=0.8, beta_2=0.99, epsilon=1e-7, global_clipnorm=1.0)
        bp.Nadam(beta_1=0.8)
        bp.RMSprop(rho=0.9, epsilon=1e-7)


def test_an_old_file_with_the_old_names_loads_without_a_warning():
    data = {"class": "Adam", "config": {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99,
                                        "eps": 1e-7, "weight_decay": 0.0, "clip_norm": 1.0},
            "iterations": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = bp.optimizers.deserialize(data, {}, np.zeros(3))
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.global_clipnorm) == (0.8, 0.99, 1e-7, 1.0)


# ---- through fit, save and load ----------------------------------------------------------------


def _digits_like(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((60, 6)), rng.integers(0, 3, 60)


def _model():
    return bp.Sequential([bp.Dense(8, "tanh"), bp.Dense(3, "softmax")], dtype="float64", seed=0)


@pytest.mark.parametrize("make", [lambda: bp.RMSprop(0.01, momentum=0.5, centered=True),
                                  lambda: bp.Adagrad(0.1, initial_accumulator_value=0.1),
                                  lambda: bp.Nadam(0.01)], ids=["rmsprop", "adagrad", "nadam"])
def test_fit_is_the_same_updates_as_apply(make):
    # fit runs these in its Python step: the same kernel, one apply per batch
    X, y = _digits_like()
    model = _model()
    model.fit(X, y, epochs=2, batch_size=20, shuffle=False, optimizer=make(), verbose=0)
    probe, opt = _model().build(6), make()
    for _ in range(2):
        for s in range(0, 60, 20):
            grads = np.concatenate([np.r_[gW.ravel(), gb] for gW, gb in
                                    probe.gradients(X[s:s + 20], y[s:s + 20])])
            p = probe.get_flat_params()
            opt.apply(p, grads)
            probe.set_flat_params(p)
    np.testing.assert_allclose(model.get_flat_params(), probe.get_flat_params(), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("make", [lambda: bp.RMSprop(0.01, momentum=0.5, centered=True),
                                  lambda: bp.Adagrad(0.1, initial_accumulator_value=0.1),
                                  lambda: bp.Nadam(0.01)], ids=["rmsprop", "adagrad", "nadam"])
def test_save_and_load_carry_the_new_optimizers(make, tmp_path):
    X, y = _digits_like(1)
    a = _model()
    a.fit(X, y, epochs=2, batch_size=16, shuffle=False, optimizer=make(), verbose=0)
    a.save(tmp_path / "m.npz")
    b = bp.load(tmp_path / "m.npz")
    assert repr(b.optimizer) == repr(a.optimizer)
    for m in (a, b):
        m.fit(X, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())
