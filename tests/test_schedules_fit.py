"""Learning-rate schedules in fit: they go on across fits, initial_epoch numbers the epochs as
Keras does, per-step schedules set every update's rate; History.best and EarlyStopping(verbose)."""

import re

import numpy as np
import pytest

import bp
from bp import schedules


def blobs(n=48, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.7)


def mlp():
    return bp.Sequential([bp.Dense(6, activation="tanh"), bp.Dense(3, activation="softmax")],
                         seed=5, dtype="float64")


def test_a_second_fit_goes_on_with_the_schedule():
    X, y = blobs()
    once, twice = mlp(), mlp()
    step = schedules.StepDecay(0.1, step_size=1, gamma=0.5)
    h = once.fit(X, y, epochs=4, batch_size=8, optimizer=bp.SGD(step), verbose=0)
    h1 = twice.fit(X, y, epochs=2, batch_size=8, optimizer=bp.SGD(step), verbose=0)
    h2 = twice.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert h1["learning_rate"] + h2["learning_rate"] == h["learning_rate"] == [
        0.1, 0.05, 0.025, 0.0125]
    assert h2.epoch == [0, 1]  # each fit counts its own epochs, as Keras without initial_epoch
    assert twice.get_flat_params().tobytes() == once.get_flat_params().tobytes()
    # a new optimizer starts its schedule again
    h3 = twice.fit(X, y, epochs=1, batch_size=8, optimizer=bp.SGD(step), verbose=0)
    assert h3["learning_rate"] == [0.1]


def test_initial_epoch_numbers_the_epochs_as_keras(capsys):
    X, y = blobs()
    model = mlp()
    step = schedules.StepDecay(0.1, step_size=1, gamma=0.5)
    h = model.fit(X, y, epochs=5, initial_epoch=3, optimizer=bp.SGD(step), verbose=2)
    assert h.epoch == [3, 4]
    assert h["learning_rate"] == [step(3), step(4)]
    out = capsys.readouterr().out
    assert re.findall(r"^Epoch (\d)/5", out, re.MULTILINE) == ["4", "5"]


@pytest.mark.parametrize("bad", [-1, 5, 7, 1.0, "2", True])
def test_a_bad_initial_epoch_is_refused(bad):
    X, y = blobs()
    model = mlp()
    with pytest.raises(ValueError, match=r"initial_epoch must be an integer in \[0, epochs\).*"
                                         rf"Received: initial_epoch={re.escape(repr(bad))}, "
                                         r"epochs=5"):
        model.fit(X, y, epochs=5, initial_epoch=bad, verbose=0)
    assert not model.built


def test_warmup_cosine_and_one_cycle_values():
    torch = pytest.importorskip("torch")
    s = schedules.WarmupCosine(0.2, warmup_steps=4, total_steps=20, final=0.01)
    assert [s(t) for t in range(4)] == pytest.approx([0.05, 0.1, 0.15, 0.2], rel=1e-15)
    assert s(12) == pytest.approx(0.01 + 0.19 * 0.5, rel=1e-15) and s(25) == 0.01
    # OneCycle is torch's OneCycleLR (cos, two phases), step by step
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=37, pct_start=0.25,
                                                cycle_momentum=False)
    ours = schedules.OneCycle(0.3, total_steps=37, pct_start=0.25)
    for t in range(37):
        assert ours(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), t
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match=r"total_steps must exceed warmup_steps\. Received: "
                                         r"total_steps=4, warmup_steps=4"):
        schedules.WarmupCosine(0.1, 4, 4)
    with pytest.raises(TypeError, match=r"Received: 3"):
        schedules.PerStep(3)


def _manual(X, y, rates, batch_size, epochs):
    """The same training as fit(shuffle=False), step by step, with rates[t] at step t."""
    model = mlp()
    model.build(X.shape[1])
    t = 0
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            model.zero_grad()
            model.backward(X[start:start + batch_size], y[start:start + batch_size])
            model.step(bp.SGD(rates(t)))
            t += 1
    return model


class Plain(bp.SGD):
    """A user's optimizer class: fit runs it in its Python steps."""


@pytest.mark.parametrize("make", [bp.SGD, Plain])
def test_a_per_step_schedule_sets_every_update_s_rate(make):
    X, y = blobs()
    rates = schedules.WarmupCosine(0.3, warmup_steps=5, total_steps=24)
    model = mlp()
    h = model.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=make(rates), verbose=0)
    model2 = mlp()  # and it goes on across fits: two fits of one epoch are the same
    model2.fit(X, y, epochs=1, batch_size=8, shuffle=False, optimizer=make(rates), verbose=0)
    model2.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    manual = _manual(X, y, rates, 8, 2)
    np.testing.assert_allclose(model.get_flat_params(), manual.get_flat_params(), rtol=1e-12,
                               atol=1e-14)
    assert model2.get_flat_params().tobytes() == model.get_flat_params().tobytes()
    assert h["learning_rate"] == [rates(5), rates(11)]  # the rate of each epoch's last step
    assert model.optimizer.iterations == 12


def test_any_callable_of_the_step_through_per_step():
    X, y = blobs()
    rates = schedules.PerStep(lambda step: 0.2 / (1 + step))
    model = mlp()
    model.fit(X, y, epochs=1, batch_size=16, shuffle=False, optimizer=bp.SGD(rates), verbose=0)
    np.testing.assert_allclose(model.get_flat_params(),
                               _manual(X, y, rates, 16, 1).get_flat_params(), rtol=1e-12,
                               atol=1e-14)


def test_early_stopping_verbose_says_what_it_did(capsys):
    X, y = blobs()
    model = mlp()
    stop = bp.EarlyStopping(monitor="val_loss", patience=1, verbose=1)
    # a rate that makes the validation loss go up after the first epochs
    h = model.fit(X, y, epochs=30, optimizer=bp.SGD(3.0), validation_split=0.25, verbose=0,
                  callbacks=[stop])
    out = capsys.readouterr().out
    assert h.stopped == "early_stopping"
    best = int(np.argmin(h["val_loss"]))
    assert (stop.best_epoch, stop.stopped_epoch) == (best, h.epoch[-1])
    assert re.search(rf"Epoch {h.epoch[-1] + 1}: early stopping: val_loss did not improve for 1 "
                     rf"epochs; the best was [\d.e-]+ at epoch {best + 1}", out), out
    assert f"Restored the model's weights from the end of the best epoch: {best + 1}" in out
    quiet = bp.EarlyStopping(monitor="val_loss", patience=1)
    mlp().fit(X, y, epochs=30, optimizer=bp.SGD(3.0), validation_split=0.25, verbose=0,
              callbacks=[quiet])
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"verbose must be 0 or 1\. Received: verbose=2"):
        bp.EarlyStopping(verbose=2)


def test_history_best_without_epochs_and_with_an_unknown_key():
    h = bp.History()
    assert h.best() == (None, None) and h.best_epoch is None
    X, y = blobs()
    h = mlp().fit(X, y, epochs=2, verbose=0)
    assert h.best_epoch == int(np.argmin(h["loss"]))
    assert h.best("accuracy")[1] == max(h["accuracy"])
    with pytest.raises(ValueError, match=r"History has no 'val_auc'\. Available: loss"):
        h.best("val_auc")


@pytest.mark.parametrize("make", [lambda lr: bp.SGD(lr, momentum=0.9), lambda lr: bp.Adam(lr)])
def test_a_constant_per_step_schedule_trains_as_the_constant(make):
    # the step-at-a-time runs a per-step schedule takes give the same bits as one run an epoch
    X, y = blobs()
    const, stepped = mlp(), mlp()
    const.fit(X, y, epochs=2, batch_size=8, optimizer=make(0.05), verbose=0)
    stepped.fit(X, y, epochs=2, batch_size=8, verbose=0,
                optimizer=make(schedules.PerStep(lambda step: 0.05)))
    assert stepped.get_flat_params().tobytes() == const.get_flat_params().tobytes()
