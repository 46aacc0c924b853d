"""Threads, from the user's side.

* predict from several Python threads at once on one model: every answer is the serial answer,
  bit for bit, also when the first calls race to build the model;
* fit on two models in two threads at once: each ends exactly where it would alone;
* a second fit (or partial_fit) of a model that is already fitting in another thread: refused
  with a RuntimeError, nothing changed;
* 1 vs 2 threads: bp's own kernels fix their reduction order (rows are independent; column sums,
  loss sums and sums of squares run in a fixed order), so with BLAS held to one thread training
  is bit-identical for 1 and 2 bp threads. The gemms belong to BLAS (OpenBLAS here): with BLAS
  threads too, bp promises equality to within float rounding only (see README, "What bp
  promises").
"""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import bp
from bp import kernels as K

try:  # tests/ as a package (it has an __init__.py) or as a plain directory on sys.path
    from ._reliability import assert_unchanged, params_equal, snapshot
except ImportError:
    from _reliability import assert_unchanged, params_equal, snapshot



def run_threads(n, target):
    """Run target(i) in n threads started together; re-raise the first failure."""
    barrier = threading.Barrier(n)
    errors = []

    def body(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def big_model(seed=0, dtype="float32"):
    return bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(64, activation="tanh"),
                          bp.Dense(10, activation="softmax")], dtype=dtype, seed=seed)


def make_data(n=512, d=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 10, n)


# ---- predict ----------------------------------------------------------------------------------


def test_concurrent_predict_on_one_model():
    X, y = make_data()
    model = big_model()
    model.fit(X, y, epochs=1, verbose=0)
    expected = model.predict(X)
    small = model.predict(X[:7], batch_size=3)
    results = {}

    def work(i):
        out = []
        for k in range(20):
            out.append(model.predict(X) if k % 2 == 0 else model.predict(X[:7], batch_size=3))
        results[i] = out

    run_threads(6, work)
    for out in results.values():
        for k, r in enumerate(out):
            assert r.tobytes() == (expected if k % 2 == 0 else small).tobytes()


def test_concurrent_first_predict_builds_once():
    """The first predict builds the model; six threads racing to do it must agree, and the
    layers must all point into the one parameter buffer the model kept."""
    X, _ = make_data()
    for trial in range(5):
        model = big_model(seed=trial)
        results = [None] * 6
        run_threads(6, lambda i, model=model, results=results:
                    results.__setitem__(i, model.predict(X)))
        final = model.predict(X)
        assert all(r.tobytes() == final.tobytes() for r in results)
        assert all(np.shares_memory(L.W, model._params) for L in model.layers)
        reference = big_model(seed=trial)
        reference.build(X.shape[1])
        assert params_equal(model, reference)  # one draw from the seeded generator, not two


# ---- fit --------------------------------------------------------------------------------------


def test_two_models_fit_in_two_threads():
    X, y = make_data()
    alone = []
    for seed in (0, 1):
        m = big_model(seed)
        m.fit(X, y, epochs=2, batch_size=32, verbose=0)
        alone.append(m)
    together = [big_model(0), big_model(1)]
    histories = [None, None]

    def work(i):
        histories[i] = together[i].fit(X, y, epochs=2, batch_size=32, verbose=0)

    run_threads(2, work)
    for a, b, h in zip(alone, together, histories):
        assert h.stopped is None
        assert params_equal(a, b)


def test_predict_on_one_model_while_another_fits():
    X, y = make_data()
    fixed = big_model(1)
    fixed.build(X.shape[1])
    expected = fixed.predict(X)
    trainee = big_model(0)
    out = {}

    def work(i):
        if i == 0:
            trainee.fit(X, y, epochs=2, batch_size=16, verbose=0)
        else:
            out["predictions"] = [fixed.predict(X) for _ in range(30)]

    run_threads(2, work)
    assert all(p.tobytes() == expected.tobytes() for p in out["predictions"])


@pytest.mark.parametrize("second", ["fit", "partial_fit"])
def test_second_fit_of_a_model_already_fitting_is_refused(second):
    X, y = make_data(n=64)
    model = big_model()
    inside, release = threading.Event(), threading.Event()

    class Pause(bp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                inside.set()
                release.wait(10)

    first = {}
    t = threading.Thread(target=lambda: first.setdefault(
        "h", model.fit(X, y, epochs=2, verbose=0, callbacks=[Pause()])))
    t.start()
    try:
        assert inside.wait(10)
        before = snapshot(model)
        call = (lambda: model.fit(X, y, epochs=1, verbose=0)) if second == "fit" else (
            lambda: model.partial_fit(X, y))
        with pytest.raises(RuntimeError, match=r"this model is already being fitted in another "
                                               r"thread; wait for that fit to finish \(or fit a copy\)"):
            call()
        assert_unchanged(before, snapshot(model))
    finally:
        release.set()
        t.join()
    assert first["h"].stopped is None and first["h"].epoch == [0, 1]
    model.fit(X, y, epochs=1, verbose=0)  # and once the first is done, fitting works again


# ---- 1 vs 2 threads ---------------------------------------------------------------------------


def train(n_threads, blas_threads, dtype, seed=0):
    X, y = make_data(n=1024, d=64, seed=seed)
    model = big_model(seed, dtype)
    with bp.num_threads(n_threads):
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            model.fit(X, y, optimizer=bp.Adam(1e-3), epochs=2, batch_size=512, verbose=0)
    return model.get_flat_params()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bp_kernels_are_bit_identical_for_1_and_2_threads(dtype):
    """Batches of 512 rows x 64 units pass the kernels' threading threshold, so bp's row loops,
    column sums, loss and updates run on 2 threads; BLAS is held to 1 thread in both runs."""
    assert train(1, 1, dtype).tobytes() == train(2, 1, dtype).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_1_and_2_threads_agree_to_rounding_with_blas_threads(dtype):
    one, two = train(1, 1, dtype), train(2, 2, dtype)
    rtol = {"float32": 1e-4, "float64": 1e-10}[dtype]  # two epochs of Adam amplify rounding a little
    np.testing.assert_allclose(two, one, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_ordered_kernel_is_bit_identical_for_1_and_2_threads(dtype):
    """The reductions bp orders itself, one kernel at a time, at sizes where 2 threads are used."""
    rng = np.random.default_rng(0)
    n, m = 1024, 64
    f_in = rng.standard_normal((n, m)).astype(dtype)
    e = np.exp(f_in - f_in.max(axis=1, keepdims=True))
    f_out = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
    Y = np.eye(m, dtype=dtype)[rng.integers(0, m, n)]
    w = rng.random(n).astype(dtype)
    z_prev = rng.standard_normal((n, 3)).astype(dtype)
    flat = rng.standard_normal(200_000).astype(dtype)

    def run(nt):
        out = {"loss": K.loss_value(f_in, f_out, Y, "cross_entropy", sample_weight=w, n_threads=nt),
               "delta": K.output_delta(f_in, f_out, Y, "cross_entropy", "softmax", sample_weight=w, n_threads=nt),
               "sumsq": K.sum_of_squares(flat, n_threads=nt)}
        out["grad_b"] = K.gradients(z_prev, out["delta"], n_threads=nt)[1]
        p, g = flat.copy(), flat[::-1].copy()
        mm, vv = np.zeros_like(p), np.zeros_like(p)
        K.adam_update(p, g, mm, vv, 1, n_threads=nt)
        out["adam"] = (p, mm, vv)
        return out

    a, b = run(1), run(2)
    assert np.asarray(a["loss"]).tobytes() == np.asarray(b["loss"]).tobytes()
    assert a["sumsq"] == b["sumsq"]
    assert a["delta"].tobytes() == b["delta"].tobytes()
    assert a["grad_b"].tobytes() == b["grad_b"].tobytes()
    for x, z in zip(a["adam"], b["adam"]):
        assert x.tobytes() == z.tobytes()
