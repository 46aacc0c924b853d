"""Sequential: a fit step, a small digits fit, predict and partial_fit."""

import bp

from .common import DIGITS, MNIST, digits, mnist_like, net


class FitStep:
    """One epoch of 8 steps of 128 rows on the mnist-like 784-256-128-10 net (plain SGD): the time
    per call / 8 is the training step, shuffling, gathering and checks included."""

    params = (["float32", "float64"], [1, 2])
    param_names = ["dtype", "n_threads"]

    def setup(self, dtype, n_threads):
        self.X, self.y = mnist_like(8 * 128, dtype)
        self.model = net(MNIST, 784, dtype)
        self.opt = bp.SGD(0.01)
        self.model.fit(self.X[:128], self.y[:128], optimizer=self.opt, batch_size=128, epochs=1,
                       verbose=0)  # warm: workspaces, the engine, the thread pool

    def time_fit_epoch(self, dtype, n_threads):
        with bp.num_threads(n_threads):
            self.model.fit(self.X, self.y, optimizer=self.opt, batch_size=128, epochs=1,
                           shuffle=False, verbose=0)


class DigitsFit:
    """A whole small fit: 5 epochs of Adam on digits (1797 rows, batch 32) from fresh weights."""

    params = (["sgd", "adam"],)
    param_names = ["optimizer"]

    def setup(self, optimizer):
        self.X, self.y = digits()

    def time_fit(self, optimizer):
        model = net(DIGITS, 64, "float32")
        opt = bp.Adam(1e-3) if optimizer == "adam" else bp.SGD(0.05, momentum=0.9)
        model.fit(self.X, self.y, optimizer=opt, batch_size=32, epochs=5, verbose=0)


class Predict:
    """predict on the mnist-like net: one row (latency) and 4096 rows (throughput)."""

    params = ([1, 4096], ["float32", "float64"])
    param_names = ["rows", "dtype"]

    def setup(self, rows, dtype):
        self.X, _ = mnist_like(rows, dtype, seed=1)
        self.model = net(MNIST, 784, dtype)
        self.model.predict(self.X)

    def time_predict(self, rows, dtype):
        self.model.predict(self.X)


class PartialFit:
    """One partial_fit call on 32 digits rows: one step through the online entry point."""

    params = (["float32", "float64"],)
    param_names = ["dtype"]

    def setup(self, dtype):
        X, y = digits(dtype)
        self.X, self.y = X[:32], y[:32]
        self.model = net(DIGITS, 64, dtype)
        self.model.compile(optimizer=bp.SGD(0.01), loss="cross_entropy")
        self.model.partial_fit(self.X, self.y)

    def time_partial_fit(self, dtype):
        self.model.partial_fit(self.X, self.y)
