"""fit(class_weight=...): the same training as the matching sample_weight, bit for bit."""

import numpy as np
import pytest

import bp

from ._reliability import assert_unchanged, classifier, data, snapshot


def _trained(seed=0, **kw):
    X, y = data(60)
    model = classifier(seed=seed, trained=False)
    h = model.fit(X, y, optimizer=bp.Adam(1e-2), epochs=3, batch_size=8, verbose=0, **kw)
    return model, h


def test_class_weight_equals_the_matching_sample_weight(compiled):
    X, y = data(60)
    cw = {0: 0.5, 1: 2.0, 2: 1.25}
    a, ha = _trained(class_weight=cw)
    b, hb = _trained(sample_weight=np.array([cw[k] for k in y]))
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())
    assert ha.history == hb.history
    c, _ = _trained()
    assert not np.array_equal(a.get_flat_params(), c.get_flat_params())


def test_balanced_is_n_over_k_n_c_and_multiplies_sample_weight():
    X, y = data(60)
    counts = np.bincount(y, minlength=3)
    balanced = 60 / (3 * counts)
    sw = np.linspace(0.5, 1.5, 60)
    a, _ = _trained(class_weight="balanced", sample_weight=sw)
    # the model's dtype (float32) rounds sample_weight first, then the product
    b, _ = _trained(sample_weight=(sw.astype(np.float32) * balanced[y]).astype(np.float32))
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())


def test_labels_absent_from_the_dict_weigh_one():
    X, y = data(60)
    a, _ = _trained(class_weight={2: 3.0})
    b, _ = _trained(sample_weight=np.where(y == 2, 3.0, 1.0))
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())


def test_binary_labels_are_the_side_of_one_half():
    X, _ = data(60)
    y = (X[:, 0] > 0).astype(float)
    models = []
    for kw in ({"class_weight": {0: 1.0, 1: 4.0}}, {"sample_weight": np.where(y == 1, 4.0, 1.0)}):
        m = bp.Sequential([bp.Dense(5, activation="relu"), bp.Dense(1, activation="sigmoid")],
                          seed=0)
        m.fit(X, y, epochs=2, batch_size=8, verbose=0, **kw)
        models.append(m.get_flat_params())
    np.testing.assert_array_equal(*models)


def test_a_validation_split_is_not_class_weighted():
    X, y = data(60)
    model, h = _trained(class_weight={0: 10.0, 1: 0.1, 2: 1.0}, validation_split=0.25)
    perm = np.random.default_rng(0).permutation(60)  # the split classifier(seed=0) draws
    val = perm[:15]
    ev = model.evaluate(X[val], y[val])
    assert h.history["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-6)


@pytest.mark.parametrize("class_weight, loss, match", [
    ({0: -1.0}, None, "non-negative"),
    ({0: float("nan")}, None, "non-negative"),
    ({3: 1.0}, None, r"integers in \[0, 3\)"),
    ({"cat": 1.0}, None, r"integers in \[0, 3\)"),
    ([1, 2, 3], None, "a dict"),
    ("weighted", None, "a dict"),
    ({0: 1.0}, "mse", "needs class labels"),
])
def test_bad_class_weight_is_refused_and_changes_nothing(class_weight, loss, match):
    model = classifier()
    before = snapshot(model)
    X, y = data(60)
    with pytest.raises((ValueError, TypeError), match=match):
        model.fit(X, y if loss is None else np.eye(3)[y], loss=loss, class_weight=class_weight,
                  verbose=0)
    assert_unchanged(before, snapshot(model))
