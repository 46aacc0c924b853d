"""scikit-learn's MLP, as bp passes: the network, its loss, and scikit-learn's two optimizers.

bp.sklearn's estimators keep scikit-learn's coefs_ and intercepts_ as views into one bp flat
parameter buffer (W0, b0, W1, b1, ...), and a dense epoch of SGD or Adam is one compiled call
(bpcore/_network.pyx's epoch loop, optimizer kinds sklearn_sgd / sklearn_adam) that runs, batch
by batch in scikit-learn's shuffled order,

    forward      z_in[i] = z_out[i-1] @ W[i] + b[i];  z_out[i] = sigma(z_in[i])
    error signal delta[O] = w_i (f_out - y) / sum(w);  delta[i] = (delta[i+1] @ W[i+1].T) sigma'
    gradients    grad_W[i] = z_out[i-1].T @ delta[i];  grad_b[i] = sum_batch delta[i]
    update       g = grad + alpha W / sum(w) on the weights; scikit-learn's SGD or Adam step

(bpcore._param_update.sklearn_update_core). That is scikit-learn's _backprop and
_stochastic_optimizers term by term: its losses are means over the samples, so the error-signal
scale is 1 / sum(w); its squared error halves the square and its gradient is (f_out - y) / sum(w),
not the mean over the outputs that its reported loss takes. L-BFGS uses the same pass on the
whole data.

Two cases leave the compiled loop for a per-layer pass through the same kernels, one batch per
Python iteration: a sparse X (the first layer's X @ W0 and X.T @ delta0 through scipy.sparse, so
the matrix is never densified; a Cython kernel of the same loops, written into the caller's
arrays, was no faster and no better on 2 threads: the random rows of W0 it touches bound it by
memory; measured: see bench/README.md, Sparse X in bp.sklearn) and the Poisson loss (an
exponential output, which bp's engine does not have: delta[O] = w_i (exp(f_in) - y) / sum(w),
as scikit-learn).
"""

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, xlogy

import bpcore
from bpcore import _dense_forward, _error_signal, _gradients, _loss, _param_update

from ._passes import MIN_PARALLEL_STEP_FLOPS, Passes
from .layers import Dense

HIDDEN = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
# scikit-learn's out_activation_ -> (bp's output activation, bp's loss, loss factor): the factor
# turns bp's batch loss (with the error-signal scale) into scikit-learn's reported one.
OUTPUT = {"softmax": ("softmax", "cross_entropy"), "logistic": ("sigmoid", "binary_cross_entropy"),
          "identity": ("identity", "mse"), "exp": ("identity", None)}


def _activate(name, z_in, z_out):
    """z_out = sigma(z_in) in NumPy, for the sparse first layer (its product is scipy's)."""
    if name == "identity":
        z_out[...] = z_in
    elif name == "sigmoid":
        expit(z_in, out=z_out)
    elif name == "tanh":
        np.tanh(z_in, out=z_out)
    else:
        np.maximum(z_in, 0, out=z_out)


class Network:
    """A scikit-learn MLP's parameters in a bp flat buffer, and its passes.

    Parameters
    ----------
    coefs, intercepts : scikit-learn's lists of W (n_in, n_out) and b (n_out,)
    activation : scikit-learn's hidden activation name
    out_activation : scikit-learn's out_activation_ (softmax, logistic, identity, exp)
    dtype : the parameters' dtype (float32 or float64)
    """

    def __init__(self, coefs, intercepts, activation, out_activation, dtype):
        self.loss = OUTPUT[out_activation][1]
        self.poisson = out_activation == "exp"
        self.layers = _layers(coefs, activation, out_activation)
        self.passes = Passes(self.layers, np.empty(sum(W.size + b.size for W, b in
                                                       zip(coefs, intercepts)), dtype))
        for (W, b), W0, b0 in zip(self.passes.param_views, coefs, intercepts):
            W[...] = W0
            b[...] = b0
        # even segments weights (the L2 penalty's), odd ones biases, for sklearn_update
        self.bounds = np.array([0] + [off for _, n_out, _, b_off in self.passes.layout
                                      for off in (b_off, b_off + n_out)], dtype=np.intp)
        self.n_outputs = coefs[-1].shape[1]
        self._buffers = {}

    @property
    def coefs(self):
        return [W for W, _ in self.passes.param_views]

    @property
    def intercepts(self):
        return [b for _, b in self.passes.param_views]

    def sklearn_order(self):
        """to_bp: the index into scikit-learn's packed vector (all W, then all b) of each entry
        of bp's flat buffer, so that params = packed[to_bp]."""
        sizes = [(n_in * n_out, n_out) for n_in, n_out, _, _ in self.passes.layout]
        starts_W = np.cumsum([0] + [s for s, _ in sizes])
        starts_b = starts_W[-1] + np.cumsum([0] + [s for _, s in sizes])
        return np.concatenate([np.r_[np.arange(starts_W[i], starts_W[i] + s),
                                     np.arange(starts_b[i], starts_b[i] + m)]
                               for i, (s, m) in enumerate(sizes)])

    # ---- one batch -------------------------------------------------------------------------
    def backward(self, X, Y, w, sw_sum, n_threads):
        """Forward, loss and gradients (into passes.grads, without the L2 term) of one batch;
        returns scikit-learn's data loss (without the L2 term). X dense rows, or sparse CSR."""
        passes = self.passes
        if not (sp.issparse(X) or self.poisson):
            ws = passes.workspace(X.shape[0])
            scale = (0.5 if self.loss == "mse" else 1.0) / sw_sum
            value = passes.backward(X, Y, w, ws, self.loss, scale, 0.0, passes.grads, n_threads)
            if self.loss == "mse":
                return value / self.n_outputs
            return _clipped_log_loss(self.loss, ws.z_out[-1], Y, w, value)
        return self._backward_layers(X, Y, w, self.buffers(X.shape[0]), sw_sum, n_threads)

    def buffers(self, rows):
        """z_in, z_out, delta and per-sample losses for batches of `rows` rows (a Workspace
        without its dense X, which a sparse X with 100k columns must not get)."""
        ws = self._buffers.get(rows)
        if ws is None:
            dtype = self.passes.dtype
            ws = self._buffers[rows] = SimpleNamespace(
                **{name: [np.empty((rows, layer.units), dtype) for layer in self.layers]
                   for name in ("z_in", "z_out", "delta")}, per_sample=np.empty(rows, dtype))
        return ws

    def _backward_layers(self, X, Y, w, ws, sw_sum, nt):
        layers, views, grads = self.layers, self.passes.param_views, self.passes.grad_views
        z = self._forward(X, ws.z_in, ws.z_out, nt)
        out = layers[-1]
        f_in, delta = ws.z_in[-1], ws.delta[-1]
        if self.poisson:
            np.exp(f_in, out=z)
            value = _poisson_loss(Y, z, w)
            np.subtract(z, Y, out=delta)
            delta *= (1.0 / sw_sum) if w is None else (w / sw_sum)[:, None]
        else:
            scale = (0.5 if self.loss == "mse" else 1.0) / sw_sum
            code = bpcore.LOSSES[self.loss]
            value = _loss.loss_value(f_in, z, Y, w, code, scale, ws.per_sample, nt)
            _error_signal.output_delta(f_in, z, Y, w, code, bpcore.ACTIVATIONS[out.activation],
                                       out.alpha, scale, delta, nt)
            value = (value / self.n_outputs if self.loss == "mse" else
                     _clipped_log_loss(self.loss, z, Y, w, value))
        for i in range(len(layers) - 1, -1, -1):
            grad_W, grad_b = grads[i]
            if i == 0 and sp.issparse(X):
                grad_W[...] = X.T @ ws.delta[0]
                np.sum(ws.delta[0], axis=0, out=grad_b)
            else:
                _gradients.gradients(X if i == 0 else ws.z_out[i - 1], ws.delta[i], 0.0,
                                     grad_W, grad_b, nt)
            if i > 0:
                prev = layers[i - 1]
                _error_signal.hidden_delta(ws.delta[i], views[i][0], ws.z_in[i - 1],
                                           ws.z_out[i - 1], bpcore.ACTIVATIONS[prev.activation],
                                           prev.alpha, ws.delta[i - 1], nt)
        return value

    def _forward(self, X, z_in, z_out, nt):
        return _forward(self.layers, self.passes.param_views, X, z_in, z_out, nt)


def _layers(coefs, activation, out_activation):
    acts = [HIDDEN[activation]] * (len(coefs) - 1) + [OUTPUT[out_activation][0]]
    return [Dense(W.shape[1], activation=a, input_dim=W.shape[0]) for W, a in zip(coefs, acts)]


def _forward(layers, views, X, z_in, z_out, nt):
    """The forward pass through bp's kernels; a sparse X's product is scipy's."""
    z = X
    for i, (layer, (W, b)) in enumerate(zip(layers, views)):
        if sp.issparse(z):
            z_in[i][...] = z @ W
            z_in[i] += b
            _activate(layer.activation, z_in[i], z_out[i])
        else:
            _dense_forward.dense_forward(z, W, b, z_in[i], z_out[i],
                                         bpcore.ACTIVATIONS[layer.activation], layer.alpha, nt)
        z = z_out[i]
    return z


def predict(coefs, intercepts, activation, out_activation, X, n_threads):
    """f_out of X (dense rows or sparse CSR of the parameters' dtype) with scikit-learn's
    output activation, straight from its coefs_ and intercepts_."""
    layers = _layers(coefs, activation, out_activation)
    rows, dtype = X.shape[0], coefs[0].dtype
    z_in = [np.empty((rows, layer.units), dtype) for layer in layers]
    z_out = [np.empty((rows, layer.units), dtype) for layer in layers]
    f_out = _forward(layers, list(zip(coefs, intercepts)), X, z_in, z_out, n_threads)
    return np.exp(f_out, out=f_out) if out_activation == "exp" else f_out


def predict_threads(coefs, rows, n_threads):
    """n_threads, or 1 for a forward pass below bp's crossover (bp._passes)."""
    flops = sum(2 * rows * W.size for W in coefs)
    return n_threads if flops >= MIN_PARALLEL_STEP_FLOPS else 1


def _clipped_log_loss(loss, f_out, Y, w, value):
    """scikit-learn's log loss, which clips the probabilities to [eps, 1 - eps]: bp's value
    (exact, from the logits) unless an output has saturated, then scikit-learn's formula. It
    matters beyond the report: L-BFGS's line search compares these values."""
    eps = np.finfo(f_out.dtype).eps
    if f_out.min() >= eps and f_out.max() <= 1 - eps:
        return value
    p = np.clip(f_out, eps, 1 - eps)
    per = xlogy(Y, p)
    if loss == "binary_cross_entropy":
        per += xlogy(1 - Y, 1 - p)
    return float(-np.average(per, weights=w, axis=0).sum())


def _poisson_loss(Y, f_out, w):
    """scikit-learn's poisson_loss: mean over samples (weighted) of sum_j y log(y / f) - y + f."""
    per = xlogy(Y, Y / f_out) - Y + f_out
    return float(np.average(per, weights=w, axis=0).sum())


def weights_sumsq(network):
    """||W||^2 over every layer's weights, in double."""
    return sum(float(np.dot(W.ravel(), W.ravel())) for W in network.coefs)


class Optimizer:
    """scikit-learn's SGDOptimizer / AdamOptimizer over a flat buffer (state buffers alike).

    The step itself is bpcore._param_update.sklearn_update (fused with the L2 term); the
    learning-rate bookkeeping (invscaling, adaptive, Adam's lr_t) is scikit-learn's, here.
    """

    def __init__(self, solver, n_params, dtype, learning_rate_init, lr_schedule="constant",
                 momentum=0.9, nesterov=True, power_t=0.5, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8):
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule, self.momentum, self.nesterov, self.power_t = (
            lr_schedule, momentum, nesterov, power_t)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.t = 0
        self.state1 = np.zeros(n_params, dtype)   # SGD velocity / Adam m
        self.state2 = np.zeros(n_params, dtype) if solver == "adam" else None   # Adam v

    def step(self, network, l2, n_threads):
        """One update of the network's parameters from its gradients; returns ||W||^2 before."""
        lr = self.learning_rate
        if self.solver == "adam":
            self.t += 1
            lr = self.learning_rate = (self.learning_rate_init * np.sqrt(1 - self.beta_2 ** self.t)
                                       / (1 - self.beta_1 ** self.t))
        passes = network.passes
        return _param_update.sklearn_update(passes.grads, network.bounds, self.solver, l2, lr,
                                            self.momentum, self.nesterov, self.beta_1,
                                            self.beta_2, self.epsilon, passes.params, self.state1,
                                            self.state2, n_threads)

    def engine_spec(self, alpha, network):
        """The plain values bpcore._network's epoch loop runs this optimizer from (its kinds
        sklearn_sgd / sklearn_adam), with scikit-learn's loss conventions for the network's loss:
        scale = loss_scale / sum(w) (squared error: 0.5), reported loss = loss_factor * L."""
        mse = network.loss == "mse"
        return {"kind": "sklearn_" + self.solver, "clip_norm": None, "weight_decay": 0.0,
                "alpha": alpha, "loss_scale": 0.5 if mse else 1.0,
                "loss_factor": 1.0 / network.n_outputs if mse else 1.0,
                "momentum": self.momentum, "nesterov": self.nesterov, "beta1": self.beta_1,
                "beta2": self.beta_2, "eps": self.epsilon, "decoupled": False,
                "state1": self.state1, "state2": self.state2, "saved1": None, "saved2": None}

    def run_epoch(self, network, X, Y, w, order, batch_size, alpha, n_threads):
        """One epoch of scikit-learn's batches (rows in `order`, or as they are for None) in one
        compiled call; returns sum_b rows_b * loss_b, as _fit_stochastic accumulates it."""
        passes = network.passes
        engine = passes.engine()
        engine.bind(passes.workspace(min(batch_size, X.shape[0])))
        engine.train_epoch(X, Y, w, order, batch_size, 1, bpcore.LOSSES[network.loss], 1,
                           self.engine_spec(alpha, network), self.learning_rate_init
                           if self.solver == "adam" else self.learning_rate, self.t,
                           n_threads, guard=False)
        self.t = engine.iterations
        if self.solver == "adam" and self.t:
            self.learning_rate = (self.learning_rate_init * np.sqrt(1 - self.beta_2 ** self.t)
                                  / (1 - self.beta_1 ** self.t))
        return engine.total

    def iteration_ends(self, time_step):
        if self.solver == "sgd" and self.lr_schedule == "invscaling":
            self.learning_rate = float(self.learning_rate_init) / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        if self.solver == "adam" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + f" Setting learning rate to {self.learning_rate:f}")
        return False
