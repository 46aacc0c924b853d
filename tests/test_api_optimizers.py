"""Optimizers and learning-rate schedules against an independent NumPy transcription of the
published update rules: torch.optim.SGD, Adam and AdamW (the rules in the header of
bpcore/_param_update.pyx), torch.nn.utils.clip_grad_norm_, StepLR and CosineAnnealingLR.
Several steps each, on flat buffers through Optimizer.apply and on a model through step(), and
the schedules evaluated per epoch inside fit."""

import math

import numpy as np
import pytest

import bp

# The kernels update in the buffer's dtype; the transcription below runs in float64.
TOL = {
    np.float32: dict(rtol=2e-5, atol=2e-6),
    np.float64: dict(rtol=1e-12, atol=1e-14),
}
DTYPES = [np.float32, np.float64]


# ---- the published rules, transcribed from torch.optim (single tensor, no foreach) ---------------


class TorchSGD:
    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay
        self.buf = None

    def step(self, p, grad):
        d_p = grad
        if self.weight_decay != 0:
            d_p = d_p + self.weight_decay * p
        if self.momentum != 0:
            if self.buf is None:
                self.buf = d_p.copy()  # torch.clone(d_p).detach()
            else:
                self.buf = self.momentum * self.buf + (1 - self.dampening) * d_p
            d_p = d_p + self.momentum * self.buf if self.nesterov else self.buf
        return p - self.lr * d_p


class TorchAdam:
    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.step_t = 0
        self.exp_avg = self.exp_avg_sq = None

    def step(self, p, grad):
        if self.exp_avg is None:
            self.exp_avg, self.exp_avg_sq = np.zeros_like(p), np.zeros_like(p)
        self.step_t += 1
        if self.decoupled:  # AdamW: param.mul_(1 - lr * weight_decay)
            p = p * (1 - self.lr * self.weight_decay)
        elif self.weight_decay != 0:  # Adam: grad = grad.add(param, alpha=weight_decay)
            grad = grad + self.weight_decay * p
        self.exp_avg = self.exp_avg + (1 - self.beta1) * (grad - self.exp_avg)  # lerp_
        self.exp_avg_sq = self.beta2 * self.exp_avg_sq + (1 - self.beta2) * grad * grad
        bias_correction1 = 1 - self.beta1 ** self.step_t
        bias_correction2 = 1 - self.beta2 ** self.step_t
        step_size = self.lr / bias_correction1
        denom = np.sqrt(self.exp_avg_sq) / math.sqrt(bias_correction2) + self.eps
        return p - step_size * self.exp_avg / denom


def clip_grad_norm(grad, max_norm):
    """torch.nn.utils.clip_grad_norm_ on one flat gradient (returns the clipped copy)."""
    total_norm = np.linalg.norm(grad)
    clip_coef = max_norm / (total_norm + 1e-6)
    return grad * min(clip_coef, 1.0)


# (bp optimizer factory, torch-rule factory); each applied with and without clipping
CASES = {
    "sgd": (lambda: bp.SGD(0.1), lambda: TorchSGD(0.1)),
    "sgd momentum": (lambda: bp.SGD(0.1, momentum=0.9), lambda: TorchSGD(0.1, momentum=0.9)),
    "sgd nesterov": (lambda: bp.SGD(0.05, momentum=0.8, nesterov=True),
                     lambda: TorchSGD(0.05, momentum=0.8, nesterov=True)),
    "sgd weight decay": (lambda: bp.SGD(0.1, weight_decay=0.05), lambda: TorchSGD(0.1, weight_decay=0.05)),
    "sgd momentum weight decay": (lambda: bp.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                                  lambda: TorchSGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "adam": (lambda: bp.Adam(), lambda: TorchAdam()),
    "adam custom": (lambda: bp.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
                    lambda: TorchAdam(0.01, betas=(0.8, 0.99), eps=1e-6)),
    "adam l2": (lambda: bp.Adam(0.01, weight_decay=0.1), lambda: TorchAdam(0.01, weight_decay=0.1)),
    "adamw": (lambda: bp.AdamW(0.01, weight_decay=0.1), lambda: TorchAdam(0.01, weight_decay=0.1, decoupled=True)),
    "adamw default": (lambda: bp.AdamW(), lambda: TorchAdam(1e-3, weight_decay=0.01, decoupled=True)),
}
STATE = {"SGD": {"velocity": "buf"}, "Adam": {"m": "exp_avg", "v": "exp_avg_sq"},
         "AdamW": {"m": "exp_avg", "v": "exp_avg_sq"}}


def _gradients(n, steps, seed=0):
    """Gradients of mixed sizes: some steps have a global norm above 1 and some below."""
    rng = np.random.default_rng(seed)
    scales = [3.0, 0.05, 1.5, 0.2, 4.0, 0.01][:steps]
    return [rng.standard_normal(n) * s / np.sqrt(n) * 2 for s in scales]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip_norm", [None, 1.0])
@pytest.mark.parametrize("name", list(CASES))
def test_apply_follows_the_published_rule(name, clip_norm, dtype):
    make_bp, make_torch = CASES[name]
    opt = make_bp()
    if clip_norm is not None:
        opt = type(opt)(**{**opt.get_config(), "global_clipnorm": clip_norm})
    rule = make_torch()
    rng = np.random.default_rng(1)
    p_ref = rng.standard_normal(50)
    params = p_ref.astype(dtype)
    norms = []
    for grad in _gradients(50, 6):
        g = grad.astype(dtype)
        g_before = g.copy()
        norms.append(np.linalg.norm(g))
        opt.apply(params, g)
        np.testing.assert_array_equal(g, g_before)  # clipping scales as it reads, never in place
        g_ref = g.astype(np.float64)
        p_ref = rule.step(p_ref, clip_grad_norm(g_ref, clip_norm) if clip_norm else g_ref)
        np.testing.assert_allclose(params, p_ref, **TOL[dtype])
    if clip_norm:
        assert min(norms) < clip_norm < max(norms)  # both sides of the bound were exercised
    assert opt.iterations == 6
    for ours, theirs in STATE[type(opt).__name__].items():
        if ours == "velocity" and not opt.momentum:
            assert opt.state_dict().keys() == {"iterations"}
            continue
        np.testing.assert_allclose(opt.state_dict()[ours], getattr(rule, theirs), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sgd momentum weight decay", "adam l2", "adamw"])
def test_model_step_follows_the_published_rule(name, dtype):
    # the same rules through the model: backward fills the flat gradient, step applies it
    make_bp, make_torch = CASES[name]
    opt = type(make_bp())(**{**make_bp().get_config(), "global_clipnorm": 0.5})
    rule = make_torch()
    model = bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(2, activation="softmax")],
                          dtype=dtype, seed=0).build(3)
    p_ref = model.get_flat_params().astype(np.float64)
    rng = np.random.default_rng(2)
    for _ in range(5):
        X, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
        model.zero_grad()
        model.backward(X, y)
        g = model.get_flat_grads().astype(np.float64)
        np.testing.assert_allclose(g, np.concatenate([np.r_[gW.ravel(), gb] for gW, gb in model.gradients(X, y)]),
                                   **TOL[dtype])
        model.step(opt)
        p_ref = rule.step(p_ref, clip_grad_norm(g, 0.5))
        np.testing.assert_allclose(model.get_flat_params(), p_ref, **TOL[dtype])
    assert model.optimizer is opt and opt.iterations == 5
    # W and b are views of the updated flat vector
    np.testing.assert_array_equal(model[0].W.ravel(), model.get_flat_params()[:15])


def test_nesterov_and_heavy_ball_differ_from_plain_sgd():
    # guards against a rule that ignores its momentum or nesterov flag (all agree on step 1)
    results = {}
    for name in ("sgd", "sgd momentum", "sgd nesterov"):
        opt = CASES[name][0]()
        p = np.ones(4)
        for g in _gradients(4, 3):
            opt.apply(p, g)
        results[name] = p
    assert not np.allclose(results["sgd"], results["sgd momentum"])
    assert not np.allclose(results["sgd momentum"], results["sgd nesterov"])


def test_state_dict_round_trip_continues_identically():
    grads = _gradients(20, 6)
    a, b = bp.Adam(0.01, global_clipnorm=1.0), bp.Adam(0.01, global_clipnorm=1.0)
    pa = np.linspace(-1, 1, 20)
    for g in grads[:3]:
        a.apply(pa, g)
    pb = pa.copy()
    b.load_state_dict(a.state_dict())
    assert b.iterations == 3
    for g in grads[3:]:
        a.apply(pa, g)
        b.apply(pb, g)
    np.testing.assert_array_equal(pa, pb)
    a.reset()
    assert a.iterations == 0 and a.state_dict() == {"iterations": 0}


def test_names_defaults_and_repr():
    assert isinstance(bp.optimizers.get(None), bp.Adam)
    for name, cls in [("sgd", bp.SGD), ("SGD", bp.SGD), ("adam", bp.Adam), ("AdamW", bp.AdamW)]:
        assert type(bp.optimizers.get(name)) is cls
    opt = bp.SGD(0.1)
    assert bp.optimizers.get(opt) is opt
    assert bp.AdamW().weight_decay == 0.01 and bp.Adam().weight_decay == 0.0  # torch's defaults
    assert repr(bp.SGD(0.1, momentum=0.9)) == ("SGD(learning_rate=0.1, momentum=0.9, nesterov=False, "
                                               "weight_decay=0.0, global_clipnorm=None)")
    assert repr(bp.AdamW(global_clipnorm=2)) == (
        "AdamW(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-08, weight_decay=0.01, "
        "global_clipnorm=2.0)")
    for name, cls in [("rmsprop", bp.RMSprop), ("Adagrad", bp.Adagrad), ("nadam", bp.Nadam)]:
        assert type(bp.optimizers.get(name)) is cls


@pytest.mark.parametrize("make, exc, match", [
    (lambda: bp.SGD(0), ValueError, r"learning_rate must be a finite number in \(0\.0, inf\)\. Received: learning_rate=0"),
    (lambda: bp.SGD(-0.1), ValueError, r"Received: learning_rate=-0\.1"),
    (lambda: bp.SGD(float("inf")), ValueError, r"Received: learning_rate=inf"),
    (lambda: bp.SGD("0.1"), TypeError, r"learning_rate must be a real number\. Received: learning_rate='0\.1'"),
    (lambda: bp.SGD(0.1, momentum=1.0), ValueError, r"momentum must be a finite number in \[0\.0, 1\.0\)\. Received: momentum=1\.0"),
    (lambda: bp.SGD(0.1, momentum=-0.5), ValueError, r"Received: momentum=-0\.5"),
    (lambda: bp.SGD(0.1, nesterov=True), ValueError, r"nesterov=True needs a momentum > 0\. Received: momentum=0"),
    (lambda: bp.SGD(0.1, weight_decay=-1), ValueError, r"weight_decay must be a finite number in \[0\.0, inf\)"),
    (lambda: bp.SGD(0.1, global_clipnorm=0), ValueError, r"global_clipnorm must be a finite number in \(0\.0, inf\)\. Received: global_clipnorm=0"),
    (lambda: bp.Adam(beta_1=1.0), ValueError, r"beta_1 must be a finite number in \[0\.0, 1\.0\)\. Received: beta_1=1\.0"),
    (lambda: bp.Adam(beta_2=-0.1), ValueError, r"Received: beta_2=-0\.1"),
    (lambda: bp.Adam(epsilon=0), ValueError, r"epsilon must be a finite number in \(0\.0, inf\)\. Received: epsilon=0"),
    (lambda: bp.AdamW(weight_decay=float("nan")), ValueError, r"Received: weight_decay=nan"),
    (lambda: bp.optimizers.get("lbfgs"), ValueError, r"Unknown optimizer 'lbfgs'\. Valid values: 'sgd', 'adam', 'adamw', 'rmsprop', 'adagrad', 'nadam' or a bp\.Optimizer\. Received: optimizer='lbfgs'"),
    (lambda: bp.optimizers.get(bp.SGD), TypeError, r"optimizer must be a bp\.Optimizer .* Received: type"),
    (lambda: bp.StepDecay(0, step_size=1), ValueError, r"initial must be a finite number in \(0\.0, inf\)\. Received: initial=0"),
    (lambda: bp.StepDecay(0.1, step_size=0), ValueError, r"step_size must be a positive integer\. Received: step_size=0"),
    (lambda: bp.StepDecay(0.1, step_size=2, gamma=0), ValueError, r"Received: gamma=0"),
    (lambda: bp.CosineDecay(0.1, total_epochs=0), ValueError, r"total_epochs must be a positive integer\. Received: total_epochs=0"),
    (lambda: bp.CosineDecay(0.1, total_epochs=5, final=-1e-3), ValueError, r"final must be a finite number in \[0\.0, inf\)"),
])
def test_optimizer_and_schedule_arguments_are_checked(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# ---- schedules ------------------------------------------------------------------------------------


def test_step_decay_is_steplr():
    schedule = bp.StepDecay(0.1, step_size=3, gamma=0.5)
    for epoch in range(10):
        assert schedule(epoch) == pytest.approx(0.1 * 0.5 ** (epoch // 3), rel=1e-15)
    assert bp.StepDecay(0.1, step_size=10, gamma=0.5)(25) == pytest.approx(0.025)
    assert repr(schedule) == "StepDecay(0.1, step_size=3, gamma=0.5)"


def test_cosine_decay_is_cosine_annealing():
    eta_max, eta_min, T_max = 0.2, 0.01, 8
    schedule = bp.CosineDecay(eta_max, total_epochs=T_max, final=eta_min)
    for epoch in range(12):
        t = min(epoch, T_max)  # no restarts: it stays at eta_min after T_max
        expected = eta_min + (eta_max - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
        assert schedule(epoch) == pytest.approx(expected, rel=1e-15, abs=1e-18)
    assert schedule(0) == pytest.approx(eta_max) and schedule(T_max) == pytest.approx(eta_min)
    assert schedule(T_max // 2) == pytest.approx((eta_max + eta_min) / 2)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("schedule", [bp.StepDecay(0.5, step_size=2, gamma=0.3),
                                      bp.CosineDecay(0.5, total_epochs=4, final=0.05),
                                      lambda epoch: 0.5 / (1 + epoch)],
                         ids=["step", "cosine", "function"])
def test_schedules_are_evaluated_per_epoch_inside_fit(schedule, kind):
    # one full batch per epoch: epoch e must take the rule's step with lr = schedule(e) (as a
    # torch LR scheduler stepped once per epoch sets the group's lr)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 3)), rng.integers(0, 2, 16)

    def make():
        return bp.Sequential([bp.Dense(4, activation="tanh"), bp.Dense(2, activation="softmax")],
                             dtype="float64", seed=0)

    model, probe = make(), make()
    opt, rule = (bp.SGD(schedule, momentum=0.5), TorchSGD(None, momentum=0.5)) if kind == "sgd" else (
        bp.Adam(schedule), TorchAdam(None))
    history = model.fit(X, y, epochs=6, batch_size=16, shuffle=False, optimizer=opt, verbose=0)
    rates = [schedule(e) for e in range(6)]
    assert history.history["learning_rate"] == rates
    probe.build(3)
    for lr in rates:
        grads = np.concatenate([np.r_[gW.ravel(), gb] for gW, gb in probe.gradients(X, y)])
        rule.lr = lr
        probe.set_flat_params(rule.step(probe.get_flat_params(), grads))
    np.testing.assert_allclose(model.get_flat_params(), probe.get_flat_params(), rtol=1e-12, atol=1e-15)


def test_a_bad_schedule_value_is_reported():
    X, y = np.zeros((4, 2)), np.zeros(4, int)
    model = bp.Sequential([bp.Dense(2, activation="softmax")], seed=0)
    with pytest.raises(ValueError, match=r"learning_rate \(from the schedule\) must be a finite number "
                                         r"in \(0\.0, inf\)\. Received: learning_rate \(from the schedule\)=-1"):
        model.fit(X, y, optimizer=bp.SGD(lambda epoch: -1), verbose=0)
    assert not model.built  # rejected before anything changed
    with pytest.raises(ValueError, match=r"Received: learning_rate \(from the schedule\)=0"):
        model.fit(X, y, epochs=3, optimizer=bp.SGD(lambda epoch: 0.1 if epoch < 2 else 0), verbose=0)


# ---- the learning rate in force, and a user's own optimizer -------------------------------------


def test_current_learning_rate_and_set_epoch():
    opt = bp.SGD(bp.StepDecay(0.1, step_size=2, gamma=0.5))
    assert [opt.current_learning_rate(e) for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert opt.current_learning_rate() == 0.1  # epoch 0
    assert bp.SGD(0.3).current_learning_rate(7) == 0.3  # a constant is every epoch's rate
    # set_epoch decides the rate of the next apply: plain SGD moves params by lr * grads
    params, grads = np.zeros(4), np.arange(4.0)
    opt.set_epoch(3)
    opt.apply(params, grads)
    np.testing.assert_allclose(params, -0.05 * grads, rtol=1e-15)
    # a schedule value that is no learning rate is refused, and the rate in force stays
    bad = bp.SGD(lambda epoch: 0.2 if epoch < 2 else float("nan"))
    bad.set_epoch(1)
    with pytest.raises(ValueError, match=r"learning_rate \(from the schedule\) must be a finite "
                                         r"number in \(0\.0, inf\)\. Received: .*=nan"):
        bad.set_epoch(2)
    params = np.zeros(4)
    bad.apply(params, grads)
    np.testing.assert_allclose(params, -0.2 * grads, rtol=1e-15)


class HeavyBall(bp.Optimizer):
    """A user's optimizer: v = beta v + g (g clipped), params -= lr v. The compiled engine cannot
    run its Python update, so fit takes its Python step."""

    _state_names = ("velocity",)

    def __init__(self, learning_rate, beta=0.5, clip_norm=None, explode_at=None):
        super().__init__(learning_rate, global_clipnorm=clip_norm)
        self.beta, self.explode_at = beta, explode_at

    def _update(self, params, grads, lr, grad_scale, n_threads):
        v = self._state["velocity"]
        v *= self.beta
        v += grad_scale * grads
        params -= lr * v
        if self.iterations == self.explode_at:
            params[0] = np.inf


def _replay(model, X, y, epochs, batch_size, lr, beta, clip_norm):
    """fit(shuffle=False) with HeavyBall, step by step in NumPy from the model's gradients."""
    p = model.get_flat_params()
    v = np.zeros_like(p)
    for epoch in range(epochs):
        for start in range(0, len(X), batch_size):
            model.set_flat_params(p)
            g = np.concatenate([np.r_[gW.ravel(), gb]
                                for gW, gb in model.gradients(X[start:start + batch_size],
                                                              y[start:start + batch_size])])
            scale = min(1.0, clip_norm / (np.linalg.norm(g) + 1e-6))
            v = beta * v + scale * g
            p = p - lr(epoch) * v
    return p, v


@pytest.mark.parametrize("schedule", [lambda epoch: 0.3, lambda epoch: 0.3 / (1 + epoch)],
                         ids=["constant", "function"])
def test_fit_with_a_custom_optimizer_subclass(schedule):
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 3, 20)

    def make():
        return bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(3, activation="softmax")],
                             dtype="float64", seed=0)

    opt = HeavyBall(schedule, beta=0.5, clip_norm=0.5)
    assert not bp.optimizers.runs_in_engine(opt)
    model = make()
    history = model.fit(X, y, epochs=3, batch_size=8, shuffle=False, optimizer=opt, verbose=0)
    assert model.optimizer is opt and opt.iterations == 9  # batches of 8, 8, 4
    assert history["learning_rate"] == [schedule(e) for e in range(3)]
    p, v = _replay(make().build(3), X, y, 3, 8, schedule, 0.5, 0.5)
    np.testing.assert_allclose(model.get_flat_params(), p, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(opt.state_dict()["velocity"], v, rtol=1e-12, atol=1e-15)


def test_a_custom_update_that_goes_non_finite_is_undone():
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 3, 20)

    def make():
        return bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(3, activation="softmax")],
                             dtype="float64", seed=0)

    model, probe = make(), make()
    opt = HeavyBall(0.3, explode_at=5)
    with pytest.raises(bp.TrainingDivergedError, match=r"non-finite values in the update") as info:
        model.fit(X, y, epochs=3, batch_size=8, shuffle=False, optimizer=opt, verbose=0)
    assert info.value.where == "update" and (info.value.epoch, info.value.batch) == (1, 1)
    # the model and the optimizer are those after step 4, the last finite one
    probe.fit(X, y, epochs=3, batch_size=8, shuffle=False, optimizer=HeavyBall(0.3), verbose=0,
              callbacks=[StopAfterSteps(4)])
    assert opt.iterations == probe.optimizer.iterations == 4
    assert model.get_flat_params().tobytes() == probe.get_flat_params().tobytes()
    assert (opt.state_dict()["velocity"].tobytes()
            == probe.optimizer.state_dict()["velocity"].tobytes())


class StopAfterSteps(bp.Callback):
    def __init__(self, steps):
        self.steps, self.seen = steps, 0

    def on_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            raise KeyboardInterrupt  # fit stops here, between steps
