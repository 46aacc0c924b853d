"""EarlyStopping: the direction of improvement (min, max, and "auto" reading the monitored name),
min_delta, the fall-back from val_loss to loss without validation data, non-finite values, and
which weights the model keeps (restore_best_weights True or False).

Most cases drive the callback by hand over a made-up sequence of monitored values, with distinct
weights set on a real model at each epoch, so that the best epoch, the stopping epoch and the
weights kept are known exactly. Two cases run it inside fit. (The single end-to-end case of
val_loss with restored weights is in test_api_training.py.)
"""

import numpy as np
import pytest

import bp

NAN, INF = float("nan"), float("inf")


def weights_of(epoch):
    """The model's (W, b) during `epoch`: distinct for every epoch."""
    return np.array([epoch + 1.0, -0.5 * epoch])


def drive(stop, values, key="val_loss"):
    """Run `stop` over one monitored value per epoch, as fit would; return (model, epochs run)."""
    model = bp.Sequential([bp.Dense(1)], dtype="float64", input_dim=1).build()
    stop.set_model(model)
    stop.on_train_begin()
    ran = 0
    for epoch, value in enumerate(values):
        model.set_flat_params(weights_of(epoch))
        stop.on_epoch_end(epoch, {"loss": 1.0, key: value} if key != "loss" else {"loss": value})
        ran += 1
        if model.stop_training:
            break
    stop.on_train_end()
    return model, ran


def assert_kept(model, epoch):
    np.testing.assert_array_equal(model.get_flat_params(), weights_of(epoch))


@pytest.mark.parametrize("mode, key, values, best_epoch", [
    # min: the lowest value; 3.0 again at epoch 4 is no improvement
    ("min", "val_loss", [5.0, 4.0, 3.0, 3.5, 3.0, 3.1], 2),
    ("max", "val_accuracy", [0.5, 0.6, 0.7, 0.65, 0.7, 0.69], 2),
    # "auto" maximises what it names accuracy, and minimises the rest
    ("auto", "val_accuracy", [0.5, 0.6, 0.7, 0.65, 0.7, 0.69], 2),
    ("auto", "accuracy", [0.5, 0.6, 0.7, 0.65, 0.7, 0.69], 2),
    ("auto", "val_loss", [5.0, 4.0, 3.0, 3.5, 3.0, 3.1], 2),
    # max on a falling quantity: the first epoch stays the best
    ("max", "val_loss", [5.0, 4.0, 3.0, 2.0], 0),
])
def test_the_direction_of_improvement(mode, key, values, best_epoch):
    stop = bp.EarlyStopping(monitor=key, patience=3, mode=mode)
    model, ran = drive(stop, values, key)
    assert stop.best_epoch == best_epoch and stop.best == values[best_epoch]
    assert ran == best_epoch + 1 + 3  # stopped after `patience` epochs without improvement
    assert model.stop_training and model._stop_reason == "early_stopping"
    assert_kept(model, best_epoch)


@pytest.mark.parametrize("min_delta", [0.1, -0.1])  # its sign is ignored, as in Keras
def test_min_delta_is_the_smallest_improvement(min_delta):
    values = [1.0, 0.95, 0.85, 0.8, 0.78]
    # 0.95 improves by 0.05 (not enough), 0.85 by 0.15 (enough); then 0.8 and 0.78 by less than 0.1
    stop = bp.EarlyStopping(patience=2, min_delta=min_delta)
    model, ran = drive(stop, values)
    assert (stop.best_epoch, stop.best, ran) == (2, 0.85, 5)
    assert_kept(model, 2)
    # without min_delta every decrease counts: no stop, and the last epoch is the best
    plain = bp.EarlyStopping(patience=2)
    model, ran = drive(plain, values)
    assert (plain.best_epoch, ran, model.stop_training) == (4, 5, False)
    assert_kept(model, 4)


@pytest.mark.parametrize("restore", [True, False])
def test_restore_best_weights(restore):
    values = [3.0, 1.0, 2.0, 2.5]
    stop = bp.EarlyStopping(patience=2, restore_best_weights=restore)
    model, ran = drive(stop, values)
    assert ran == 4 and stop.best_epoch == 1
    assert_kept(model, 1 if restore else 3)
    assert (stop.best_params is not None) == restore


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_values_never_become_the_best_and_use_up_patience(bad):
    # Keras compares with NaN (always False): a non-finite value is no improvement. -inf would
    # otherwise be the best loss ever seen.
    stop = bp.EarlyStopping(patience=2)
    model, ran = drive(stop, [2.0, 1.0, bad, bad, 0.5])
    assert (stop.best_epoch, stop.best, ran) == (1, 1.0, 4)
    assert_kept(model, 1)


def test_non_finite_from_the_first_epoch_keeps_the_last_weights():
    stop = bp.EarlyStopping(patience=2)
    model, ran = drive(stop, [NAN, INF, NAN])
    assert ran == 2 and stop.best is None and stop.best_epoch is None
    assert_kept(model, 1)  # nothing to restore


def test_a_second_fit_starts_afresh():
    stop = bp.EarlyStopping(patience=1)
    drive(stop, [1.0, 2.0])
    model, ran = drive(stop, [5.0, 4.0, 4.5])
    assert (stop.best_epoch, stop.best, ran) == (1, 4.0, 3)
    assert_kept(model, 1)


# ---- inside fit --------------------------------------------------------------------------------


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return np.array([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5]])[y] + rng.standard_normal((n, 2)), y


def test_without_validation_data_val_loss_falls_back_to_loss():
    X, y = blobs(60, seed=0)
    model = bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
                          dtype="float64", seed=0)
    stop = bp.EarlyStopping(patience=2)  # monitor="val_loss", the default
    history = model.fit(X, y, epochs=8, batch_size=60, optimizer=bp.SGD(0.5), verbose=0,
                        callbacks=[stop])
    assert "val_loss" not in history.history
    losses = history["loss"]
    assert stop.best == min(losses) and stop.best_epoch == int(np.argmin(losses))
    # asking for a validation quantity other than val_loss has no fall-back
    with pytest.raises(ValueError, match=r"EarlyStopping monitors 'val_accuracy', which fit does "
                                         r"not report\. Available: loss, accuracy, learning_rate"):
        model.fit(X, y, epochs=2, verbose=0, callbacks=[bp.EarlyStopping(monitor="val_accuracy")])


def test_val_accuracy_is_maximised_and_its_best_weights_restored():
    X, y = blobs(60, seed=1)
    Xv, yv = blobs(40, seed=2)
    model = bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(3, activation="softmax")],
                          dtype="float64", seed=3)
    stop = bp.EarlyStopping(monitor="val_accuracy", patience=3)
    history = model.fit(X, y, epochs=40, batch_size=10, optimizer=bp.SGD(0.05), verbose=0,
                        validation_data=(Xv, yv), callbacks=[stop])
    accuracies = history["val_accuracy"]
    assert stop.best == max(accuracies) and stop.best_epoch == int(np.argmax(accuracies))
    assert stop.best > accuracies[0]  # it did improve: the case is not vacuous
    assert model.evaluate(Xv, yv)["accuracy"] == stop.best
    # equal accuracies are no improvement: it stops `patience` epochs after the first best one
    assert history.stopped == "early_stopping" and len(history.epoch) == stop.best_epoch + 1 + 3
