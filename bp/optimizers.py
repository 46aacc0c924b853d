"""Optimizers: small classes around the fused update kernels in bpcore/_param_update.pyx.

An optimizer owns only its hyperparameters and its state (flat buffers laid out like the model's
flat parameter vector). It does not know about layers, batches or the loss: ``apply(params,
grads)`` takes two flat buffers. That separation is what a data-parallel step needs: compute the
gradients on a shard, sum them across ranks, then ``apply`` the same update everywhere.

The update rules are torch.optim's (see bpcore/_param_update.pyx for the formulas). SGD's momentum
is PyTorch's form: v = mu v + g; p -= lr v (Nesterov: p -= lr (g + mu v)).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from bpcore import _param_update

from . import _threads
from ._validation import FLOAT_DTYPES, check_number, check_output, check_shape


def _check_buffers(params, grads):
    """O(1) checks that keep the kernels in bounds: the update reads len(params) gradients."""
    if not isinstance(params, np.ndarray) or params.dtype not in FLOAT_DTYPES:
        got = type(params).__name__ + (f" with dtype {params.dtype}"
                                       if isinstance(params, np.ndarray) else "")
        raise TypeError(f"params must be a float32 or float64 numpy.ndarray (it is updated in "
                        f"place). Received: {got}")
    if params.ndim != 1:
        raise ValueError(f"params must be 1-D (the flat parameter vector). Received: params with "
                         f"shape {params.shape}")
    check_output("params", params, params.dtype, params.shape)
    grads = np.asarray(grads)
    if grads.dtype != params.dtype:
        raise TypeError(f"grads must have the dtype of params ({params.dtype}). Received: grads "
                        f"with dtype {grads.dtype}")
    check_shape("grads", grads, params.shape)
    return np.ascontiguousarray(grads)


def _check_learning_rate(learning_rate):
    if callable(learning_rate):
        return learning_rate
    return check_number("learning_rate", learning_rate, low=0.0, low_open=True)


# bp's former argument names and Keras 3's, which bp now spells everywhere. clip_norm clipped the
# global norm of all the gradients together: that is Keras' global_clipnorm (Keras' clipnorm
# clips each weight array's gradient on its own, which bp does not offer).
RENAMED = {"beta1": "beta_1", "beta2": "beta_2", "eps": "epsilon", "clip_norm": "global_clipnorm"}


def _renamed(cls, old, given):
    """`given` (the new names' values) updated from the old names in `old`, each with a
    DeprecationWarning that names its new spelling; TypeError for any other name."""
    for name, value in old.items():
        new = RENAMED.get(name)
        if new is None or new not in given:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        warnings.warn(f"{cls.__name__}({name}=...) is deprecated: use {new}= (Keras' name). "
                      f"Received: {name}={value!r}", DeprecationWarning, stacklevel=3)
        given[new] = value
    return given


class Optimizer:
    """Base class of the optimizers: hyperparameters and state, and one fused update.

    An optimizer owns only its hyperparameters and its state (flat buffers laid out like the model's
    flat parameter vector); ``apply(params, grads)`` takes two flat buffers. Subclasses define
    ``_update(params, grads, lr, grad_scale, n_threads)``.

    Parameters
    ----------
    learning_rate : float or callable, default=required
        A positive number, or a schedule ``f(epoch) -> float`` (see ``StepDecay``, ``CosineDecay``),
        evaluated at the start of each epoch, or a per-step schedule (``per_step = True``:
        ``bp.schedules.WarmupCosine``, ``OneCycle``, ``PerStep``) evaluated at the step count
        before each update.
    global_clipnorm : float or None, default=None
        If set, the gradients are scaled so that their global L2 norm (over all parameters) is at
        most ``global_clipnorm`` (Keras' ``global_clipnorm``, ``torch.nn.utils.clip_grad_norm_``),
        fused into the update. Formerly ``clip_norm`` (still accepted, with a DeprecationWarning).
    **old_names
        ``clip_norm``: the former name of global_clipnorm, with a DeprecationWarning.

    Attributes
    ----------
    iterations : int
        The number of updates applied.

    See Also
    --------
    SGD, Adam, AdamW, RMSprop, Adagrad, Nadam

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> opt = bp.SGD(learning_rate=0.5)
    >>> params, grads = np.ones(3), np.full(3, 0.2)
    >>> opt.apply(params, grads)
    >>> params
    array([0.9, 0.9, 0.9])
    """

    # attribute types for the type checker (set in __init__)
    _state: dict[str, np.ndarray]
    _saved: dict[str, Any]
    _lr: float | None
    _epoch: int | None

    _state_names: tuple[str, ...] = ()

    def __init__(self, learning_rate: float | Callable[[int], float],
                 global_clipnorm: float | None = None, **old_names: Any) -> None:
        if old_names:
            global_clipnorm = _renamed(type(self), old_names,
                                       {"global_clipnorm": global_clipnorm})["global_clipnorm"]
        self.learning_rate = _check_learning_rate(learning_rate)
        self.global_clipnorm = None if global_clipnorm is None else check_number(
            "global_clipnorm", global_clipnorm, low=0.0, low_open=True)
        self.iterations = 0
        self._epoch = None  # the epoch of the rate in force (partial_fit goes on from it)
        self._state = {}
        self._lr = None  # the learning rate in force (a schedule's value for this epoch)
        self._saved = {}  # fit's copy of the state before the step in flight (see _checkpoint)
        self._saved_iterations = 0

    # -- learning rate -------------------------------------------------------------------------
    def current_learning_rate(self, epoch: int = 0) -> float:
        """Compute the learning rate for `epoch` (the constant, or the schedule's value).

        Parameters
        ----------
        epoch : int, default=0
            The epoch, counted from 0 (a per-step schedule reads the step count instead).

        Returns
        -------
        float
            The learning rate.

        Examples
        --------
        >>> import bp
        >>> bp.SGD(learning_rate=bp.StepDecay(0.1, step_size=2)).current_learning_rate(2)
        0.01
        """
        if per_step(self):
            return self.step_rate()
        if callable(self.learning_rate):
            lr = self.learning_rate(epoch)
            return check_number("learning_rate (from the schedule)", lr, low=0.0, low_open=True)
        return self.learning_rate

    def set_epoch(self, epoch: int) -> None:
        """Fix the learning rate in force for the updates of `epoch` (fit calls it every epoch).

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        """
        self._lr = self.current_learning_rate(epoch)
        self._epoch = epoch

    def step_rate(self):
        """Compute the rate of the next update under a per-step schedule.

        A per-step schedule (``bp.schedules.WarmupCosine``, ``OneCycle``, ``PerStep``) is read at
        the optimizer's step count, which goes on across fits.

        Returns
        -------
        float
            The learning rate.

        Examples
        --------
        >>> import bp
        >>> opt = bp.SGD(bp.schedules.PerStep(lambda step: 0.1 / (1 + step)))
        >>> opt.iterations = 4
        >>> opt.step_rate()
        0.02
        """
        lr = self.learning_rate(self.iterations)
        return check_number("learning_rate (from the schedule)", lr, low=0.0, low_open=True)

    # -- state ---------------------------------------------------------------------------------
    def _ensure_state(self, params):
        for name in self._state_names:
            buf = self._state.get(name)
            if buf is None or buf.shape != params.shape or buf.dtype != params.dtype:
                self._state[name] = np.zeros_like(params)

    def state_dict(self) -> dict[str, Any]:
        """Return the step count and copies of the state buffers, for saving.

        Returns
        -------
        dict
            ``{"iterations": int}`` and one array per state buffer (momenta).

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> opt = bp.Adam()
        >>> opt.apply(np.ones(2), np.ones(2))
        >>> sorted(opt.state_dict())
        ['iterations', 'm', 'v']
        """
        return {"iterations": self.iterations,
                **{name: buf.copy() for name, buf in self._state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count and state buffers from ``state_dict``'s output.

        Parameters
        ----------
        state : dict
            What ``state_dict`` returned.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> opt = bp.SGD(learning_rate=0.1, momentum=0.9)
        >>> opt.apply(np.ones(2), np.ones(2))
        >>> fresh = bp.SGD(learning_rate=0.1, momentum=0.9)
        >>> fresh.load_state_dict(opt.state_dict())
        >>> fresh.iterations
        1
        """
        self.iterations = int(state["iterations"])
        self._state = {name: np.array(state[name]) for name in self._state_names if name in state}

    def reset(self) -> None:
        """Forget the state (momenta, step count, schedule epoch)."""
        self.iterations = 0
        self._epoch = None
        self._state = {}

    # -- undoing a step (fit's divergence guard) ---------------------------------------------
    def _checkpoint(self, params, copy=True):
        """Remember what one ``apply`` changes (the step count and the state buffers), in buffers
        reused from step to step, so that a step whose update goes non-finite can be undone.
        copy=False only allocates them: the compiled engine copies the state itself, before the
        updates that need it (a run of one step, as metrics ask, would copy it every step)."""
        self._ensure_state(params)
        saved = self._saved
        for name, buf in self._state.items():
            if (saved.get(name) is None or saved[name].shape != buf.shape
                    or saved[name].dtype != buf.dtype):
                saved[name] = np.empty_like(buf)
            if copy:
                np.copyto(saved[name], buf)
        self._saved_iterations = self.iterations

    def _rollback(self):
        """Put back the state saved by the last ``_checkpoint``."""
        for name, buf in self._state.items():
            np.copyto(buf, self._saved[name])
        self.iterations = self._saved_iterations

    def _state_is_finite(self, n_threads):
        """True if every state buffer is finite. (Adam's v = b2 v + (1 - b2) g^2 overflows to inf
        in float32 for |g| > 1.8e19 while the parameters stay finite: v = inf makes that
        parameter's step 0 for ever, a silent freeze, so fit checks the state too.)"""
        return all(math.isfinite(_param_update.sum_of_squares(buf, n_threads))
                   for buf in self._state.values())

    # -- the step ------------------------------------------------------------------------------
    def grad_scale(self, grads: np.ndarray, n_threads: int) -> float:
        """Compute the clipping factor for global-norm clipping (1 when not clipping or under the bound).

        Parameters
        ----------
        grads : numpy.ndarray
            The flat gradient.
        n_threads : int
            Threads for the sum of squares.

        Returns
        -------
        float
            ``min(1, global_clipnorm / (||grads|| + 1e-6))``, or 1.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> bp.SGD(learning_rate=0.1, global_clipnorm=1.0).grad_scale(np.array([3.0, 4.0]), 1)
        0.19999996
        """
        if self.global_clipnorm is None:
            return 1.0
        norm = math.sqrt(_param_update.sum_of_squares(grads, n_threads))
        if not math.isfinite(norm):
            return 1.0  # let the non-finite gradient show; clipping cannot repair it
        return min(1.0, self.global_clipnorm / (norm + 1e-6))

    def apply(self, params: np.ndarray, grads: np.ndarray,
              n_threads: int | None = None) -> None:
        """Apply one update to the flat parameter vector `params`, in place, from the flat gradient.

        Parameters
        ----------
        params : numpy.ndarray
            The flat parameter vector (updated in place): writeable, C-contiguous, 1-D, float32 or
            float64.
        grads : numpy.ndarray
            The flat gradient, of the same shape and dtype.
        n_threads : int, optional
            Threads for the update; default bp's setting.

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> params = np.zeros(2)
        >>> bp.SGD(learning_rate=0.1).apply(params, np.array([1.0, -1.0]))
        >>> params
        array([-0.1,  0.1])
        """
        grads = _check_buffers(params, grads)
        nt = _threads.get_num_threads() if n_threads is None else n_threads
        if self._lr is None:
            self.set_epoch(0)
        if per_step(self):
            self._lr = self.step_rate()
        self._ensure_state(params)
        self.iterations += 1
        self._update(params, grads, self._lr, self.grad_scale(grads, nt), nt)

    def _update(self, params, grads, lr, grad_scale, n_threads):
        raise NotImplementedError

    def _engine_spec(self):
        """What the compiled engine (bpcore/_network.pyx) needs to run this optimizer's update:
        a dict of plain values (kind, clip_norm: the global norm bound, hyperparameters) and the
        state buffers with their saved copies (see _checkpoint). Called after _ensure_state, for the optimizers that
        ``runs_in_engine`` accepts; the engine reads nothing else of the object."""
        raise NotImplementedError

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_saved"] = {}  # scratch space, not state
        state["_owner"] = None  # a copy trains the model it is copied with, or another
        return state

    # -- one model per optimizer ---------------------------------------------------------------
    def _check_owner(self, model):
        """ValueError if this optimizer already trains another model (alive): its state (step
        count, moments) is laid out for that model's parameters and would carry over silently."""
        owner = None if getattr(self, "_owner", None) is None else self._owner()
        if owner is not None and owner is not model:
            raise ValueError(f"this optimizer already trains another model: its step count and "
                             f"state belong to that model. Give each model its own optimizer "
                             f"(a new one, or copy.deepcopy of this one). Received: optimizer="
                             f"{self!r}, in use by a model at {id(owner):#x}")

    def _bind(self, model):
        self._check_owner(model)
        self._owner = weakref.ref(model)

    def get_config(self):
        """Return the hyperparameters as plain data (the constructor's arguments).

        Returns
        -------
        dict
            The keyword arguments that rebuild this optimizer.

        Examples
        --------
        >>> import bp
        >>> bp.SGD(learning_rate=0.1, momentum=0.9).get_config()["momentum"]
        0.9
        """
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum and Nesterov's variant (torch.optim.SGD's rule).

    ``p -= lr * g``; with momentum ``v = mu v + g; p -= lr v`` (Nesterov: ``p -= lr (g + mu v)``).

    Parameters
    ----------
    learning_rate : float or callable, default=0.01
        A positive number, or a schedule ``f(epoch) -> float`` (see ``StepDecay``, ``CosineDecay``),
        evaluated at the start of each epoch.
    momentum : float, default=0.0
        The momentum mu, in [0, 1).
    nesterov : bool, default=False
        Nesterov momentum (needs a momentum > 0).
    weight_decay : float, default=0.0
        An L2 term ``weight_decay * p`` added to the gradient (as torch.optim.SGD).
    global_clipnorm : float or None, default=None
        If set, the gradients are scaled so that their global L2 norm (over all parameters) is at
        most ``global_clipnorm`` (Keras' ``global_clipnorm``, ``torch.nn.utils.clip_grad_norm_``),
        fused into the update. Formerly ``clip_norm`` (still accepted, with a DeprecationWarning).
    **old_names
        ``clip_norm``: the former name of global_clipnorm, with a DeprecationWarning.

    See Also
    --------
    Adam, AdamW, RMSprop

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> opt = bp.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((50, 3)), rng.standard_normal(50)
    >>> model = bp.Sequential([bp.Dense(1)], seed=0)
    >>> _ = model.fit(X, y, optimizer=opt, epochs=2, verbose=0)
    >>> opt.iterations
    4
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 global_clipnorm=None, **old_names):
        if old_names:
            global_clipnorm = _renamed(type(self), old_names,
                                       {"global_clipnorm": global_clipnorm})["global_clipnorm"]
        super().__init__(learning_rate, global_clipnorm)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0. Received: momentum=0")
        self.nesterov = bool(nesterov)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        self._state_names = ("velocity",) if self.momentum else ()

    def _engine_spec(self):
        return {"kind": "sgd", "clip_norm": self.global_clipnorm, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "nesterov": self.nesterov,
                "state1": self._state.get("velocity"), "saved1": self._saved.get("velocity")}

    def _update(self, params, grads, lr, grad_scale, n_threads):
        _param_update.sgd_update(grads, lr, self.momentum, self.nesterov, self.weight_decay,
                                 grad_scale, params, self._state.get("velocity"), n_threads)

    def get_config(self):
        """Return the hyperparameters as plain data (the constructor's arguments).

        Returns
        -------
        dict
            The keyword arguments that rebuild this optimizer.

        Examples
        --------
        >>> import bp
        >>> bp.SGD(learning_rate=0.1, momentum=0.9).get_config()["momentum"]
        0.9
        """
        return {"learning_rate": self.learning_rate, "momentum": self.momentum,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay,
                "global_clipnorm": self.global_clipnorm}


class Adam(Optimizer):
    """Adam (Kingma and Ba), torch.optim.Adam's rule.

    ``m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr m_hat / (sqrt(v_hat) + eps)`` with
    the bias corrections ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``; ``weight_decay`` is
    an L2 term in the gradient.

    Parameters
    ----------
    learning_rate : float or callable, default=1e-3
        A positive number, or a schedule ``f(epoch) -> float`` (see ``StepDecay``, ``CosineDecay``),
        evaluated at the start of each epoch.
    beta_1 : float, default=0.9
        The decay of the first moment, in [0, 1) (formerly ``beta1``).
    beta_2 : float, default=0.999
        The decay of the second moment, in [0, 1) (formerly ``beta2``).
    epsilon : float, default=1e-8
        Added to the denominator (> 0; formerly ``eps``; torch's default, Keras' is 1e-7).
    weight_decay : float, default=0.0
        An L2 term ``weight_decay * p`` added to the gradient.
    global_clipnorm : float or None, default=None
        If set, the gradients are scaled so that their global L2 norm (over all parameters) is at
        most ``global_clipnorm`` (Keras' ``global_clipnorm``, ``torch.nn.utils.clip_grad_norm_``),
        fused into the update. Formerly ``clip_norm`` (still accepted, with a DeprecationWarning).
    **old_names
        ``beta1``, ``beta2``, ``eps``, ``clip_norm``: the former names, with a DeprecationWarning.

    See Also
    --------
    AdamW : Decoupled weight decay.
    Nadam : Nesterov momentum.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> opt = bp.Adam(learning_rate=1e-2, global_clipnorm=1.0)
    >>> params = np.zeros(2)
    >>> opt.apply(params, np.array([1.0, -1.0]))
    >>> params.round(6)
    array([-0.01,  0.01])
    """

    _decoupled = False
    _state_names = ("m", "v")

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 weight_decay=0.0, global_clipnorm=None, **old_names):
        if old_names:
            given = _renamed(type(self), old_names, {
                "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon,
                "global_clipnorm": global_clipnorm})
            beta_1, beta_2, epsilon, global_clipnorm = (
                given["beta_1"], given["beta_2"], given["epsilon"], given["global_clipnorm"])
        super().__init__(learning_rate, global_clipnorm)
        self.beta_1 = check_number("beta_1", beta_1, low=0.0, high=1.0, high_open=True)
        self.beta_2 = check_number("beta_2", beta_2, low=0.0, high=1.0, high_open=True)
        self.epsilon = check_number("epsilon", epsilon, low=0.0, low_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0.0)

    def _engine_spec(self):
        return {"kind": "adam", "clip_norm": self.global_clipnorm,
                "weight_decay": self.weight_decay,
                "beta1": self.beta_1, "beta2": self.beta_2, "eps": self.epsilon,
                "decoupled": self._decoupled, "state1": self._state["m"],
                "state2": self._state["v"], "saved1": self._saved.get("m"),
                "saved2": self._saved.get("v")}

    def _update(self, params, grads, lr, grad_scale, n_threads):
        _param_update.adam_update(grads, lr, self.beta_1, self.beta_2, self.epsilon,
                                  self.weight_decay, self._decoupled, self.iterations, grad_scale,
                                  params, self._state["m"], self._state["v"], n_threads)

    def get_config(self):
        """Return the hyperparameters as plain data (the constructor's arguments).

        Returns
        -------
        dict
            The keyword arguments that rebuild this optimizer.

        Examples
        --------
        >>> import bp
        >>> bp.Adam(beta_1=0.8).get_config()["beta_1"]
        0.8
        """
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_decay": self.weight_decay,
                "global_clipnorm": self.global_clipnorm}


class AdamW(Adam):
    """AdamW (Loshchilov and Hutter): Adam with decoupled weight decay, torch.optim.AdamW's rule.

    Each update first multiplies the parameters by ``1 - lr * weight_decay``, then applies Adam's
    update without an L2 term in the gradient.

    Parameters
    ----------
    learning_rate : float or callable, default=1e-3
        A positive number, or a schedule ``f(epoch) -> float`` (see ``StepDecay``, ``CosineDecay``),
        evaluated at the start of each epoch.
    beta_1 : float, default=0.9
        The decay of the first moment, in [0, 1) (formerly ``beta1``).
    beta_2 : float, default=0.999
        The decay of the second moment, in [0, 1) (formerly ``beta2``).
    epsilon : float, default=1e-8
        Added to the denominator (> 0; formerly ``eps``).
    weight_decay : float, default=0.01
        The decoupled decay rate (0.01, as in torch.optim.AdamW).
    global_clipnorm : float or None, default=None
        If set, the gradients are scaled so that their global L2 norm (over all parameters) is at
        most ``global_clipnorm`` (Keras' ``global_clipnorm``), fused into the update. Formerly
        ``clip_norm`` (still accepted, with a DeprecationWarning).
    **old_names
        ``beta1``, ``beta2``, ``eps``, ``clip_norm``: the former names, with a DeprecationWarning.

    See Also
    --------
    Adam

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> opt = bp.AdamW(learning_rate=0.1, weight_decay=0.5)
    >>> params = np.ones(2)
    >>> opt.apply(params, np.zeros(2))           # no gradient: only the decay
    >>> params
    array([0.95, 0.95])
    """

    _decoupled = True

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 weight_decay=0.01, global_clipnorm=None, **old_names):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay, global_clipnorm,
                         **old_names)


class RMSprop(Optimizer):
    """RMSprop (Hinton), torch.optim.RMSprop's rule.

    ``a = rho a + (1 - rho) g^2``, ``p -= lr g / (sqrt(a) + epsilon)``; centered subtracts the
    squared running mean of g from a; momentum accumulates the step,
    ``u = momentum u + g / (sqrt(a) + epsilon)``, ``p -= lr u``. epsilon is added outside the
    square root, as torch does (Keras adds it inside), and the defaults are torch's; Keras'
    ``RMSprop()`` uses learning_rate 1e-3, rho 0.9, epsilon 1e-7.

    Parameters
    ----------
    learning_rate : float or callable, default=0.01
        A positive number, or a schedule ``f(epoch) -> float`` (see ``StepDecay``, ``CosineDecay``),
        evaluated at the start of each epoch.
    rho : float, default=0.99
        The decay of the running mean of g^2, in [0, 1) (torch's alpha).
    momentum : float, default=0.0
        The momentum of the step, in [0, 1).
    epsilon : float, default=1e-8
        Added to the denominator (> 0).
    centered : bool, default=False
        Divide by the running variance of g instead of its running mean square.
    weight_decay : float, default=0.0
        An L2 term ``weight_decay * p`` added to the gradient.
    global_clipnorm : float or None, default=None
        If set, the gradients are scaled so that their global L2 norm is at most this, fused
        into the update.

    See Also
    --------
    Adagrad, Adam

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> opt = bp.RMSprop(learning_rate=0.01, rho=0.75)
    >>> params = np.zeros(2)
    >>> opt.apply(params, np.array([1.0, -1.0]))
    >>> params.round(6)
    array([-0.02,  0.02])
    """

    def __init__(self, learning_rate=0.01, rho=0.99, momentum=0.0, epsilon=1e-8, centered=False,
                 weight_decay=0.0, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        self.rho = check_number("rho", rho, low=0.0, high=1.0, high_open=True)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.epsilon = check_number("epsilon", epsilon, low=0.0, low_open=True)
        self.centered = bool(centered)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        self._state_names = (("square_avg",) + (("grad_avg",) if self.centered else ())
                             + (("momentum_buffer",) if self.momentum else ()))

    def _update(self, params, grads, lr, grad_scale, n_threads):
        _param_update.rmsprop_update(grads, lr, self.rho, self.epsilon, self.weight_decay,
                                     self.momentum, grad_scale, params,
                                     self._state["square_avg"], self._state.get("grad_avg"),
                                     self._state.get("momentum_buffer"), n_threads)

    def get_config(self):
        """Return the hyperparameters as plain data (the constructor's arguments).

        Returns
        -------
        dict
            The keyword arguments that rebuild this optimizer.

        Examples
        --------
        >>> import bp
        >>> bp.RMSprop().get_config()["epsilon"] > 0
        True
        """
        return {"learning_rate": self.learning_rate, "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered,
                "weight_decay": self.weight_decay, "global_clipnorm": self.global_clipnorm}


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan and Singer), torch.optim.Adagrad's rule with lr_decay 0.

    ``a += g^2``, ``p -= lr g / (sqrt(a) + epsilon)``, a starting at initial_accumulator_value.
    The defaults are torch's; Keras' ``Adagrad()`` uses learning_rate 1e-3,
    initial_accumulator_value 0.1 and epsilon 1e-7 inside the square root.

    Parameters
    ----------
    learning_rate : float or callable, default=0.01
        A positive number, or a schedule ``f(epoch) -> float`` (see ``StepDecay``, ``CosineDecay``),
        evaluated at the start of each epoch.
    initial_accumulator_value : float, default=0.0
        The starting value of the sum of squares (>= 0).
    epsilon : float, default=1e-10
        Added to the denominator (> 0).
    weight_decay : float, default=0.0
        An L2 term ``weight_decay * p`` added to the gradient.
    global_clipnorm : float or None, default=None
        If set, the gradients are scaled so that their global L2 norm is at most this, fused
        into the update.

    See Also
    --------
    RMSprop

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> opt = bp.Adagrad(learning_rate=0.1)
    >>> params = np.zeros(2)
    >>> opt.apply(params, np.array([2.0, -2.0]))
    >>> params
    array([-0.1,  0.1])
    """

    _state_names = ("accumulator",)

    def __init__(self, learning_rate=0.01, initial_accumulator_value=0.0, epsilon=1e-10,
                 weight_decay=0.0, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        self.initial_accumulator_value = check_number(
            "initial_accumulator_value", initial_accumulator_value, low=0.0)
        self.epsilon = check_number("epsilon", epsilon, low=0.0, low_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0.0)

    def _ensure_state(self, params):
        buf = self._state.get("accumulator")
        if buf is None or buf.shape != params.shape or buf.dtype != params.dtype:
            self._state["accumulator"] = np.full_like(params, self.initial_accumulator_value)

    def _update(self, params, grads, lr, grad_scale, n_threads):
        _param_update.adagrad_update(grads, lr, self.epsilon, self.weight_decay, grad_scale,
                                     params, self._state["accumulator"], n_threads)

    def get_config(self):
        """Return the hyperparameters as plain data (the constructor's arguments).

        Returns
        -------
        dict
            The keyword arguments that rebuild this optimizer.

        Examples
        --------
        >>> import bp
        >>> bp.Adagrad().get_config()["epsilon"] > 0
        True
        """
        return {"learning_rate": self.learning_rate,
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon, "weight_decay": self.weight_decay,
                "global_clipnorm": self.global_clipnorm}


def nadam_mu(step, beta_1, momentum_decay):
    """Dozat's momentum schedule mu_t = beta_1 (1 - 0.96^(t psi) / 2) (torch.optim.NAdam)."""
    return beta_1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))


class Nadam(Optimizer):
    """Nadam (Dozat): Adam with Nesterov momentum, torch.optim.NAdam's rule.

    The momentum follows the schedule ``mu_t = beta_1 (1 - 0.96^(t psi) / 2)``; the update is in
    bpcore/_param_update.pyx's header.

    Parameters
    ----------
    learning_rate : float or callable, default=2e-3
        A positive number, or a schedule ``f(epoch) -> float`` (see ``StepDecay``, ``CosineDecay``),
        evaluated at the start of each epoch.
    beta_1 : float, default=0.9
        The decay of the first moment, in [0, 1).
    beta_2 : float, default=0.999
        The decay of the second moment, in [0, 1).
    epsilon : float, default=1e-8
        Added to the denominator (> 0).
    weight_decay : float, default=0.0
        An L2 term ``weight_decay * p`` added to the gradient.
    momentum_decay : float, default=4e-3
        psi in the momentum schedule (Keras' fixed 0.004).
    global_clipnorm : float or None, default=None
        If set, the gradients are scaled so that their global L2 norm is at most this, fused
        into the update.

    See Also
    --------
    Adam

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> opt = bp.Nadam(learning_rate=1e-3)
    >>> params = np.zeros(2)
    >>> opt.apply(params, np.array([1.0, -1.0]))
    >>> bool(params[0] < 0 < params[1])
    True
    """

    _state_names = ("m", "v")

    def __init__(self, learning_rate=2e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 weight_decay=0.0, momentum_decay=4e-3, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        self.beta_1 = check_number("beta_1", beta_1, low=0.0, high=1.0, high_open=True)
        self.beta_2 = check_number("beta_2", beta_2, low=0.0, high=1.0, high_open=True)
        self.epsilon = check_number("epsilon", epsilon, low=0.0, low_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        self.momentum_decay = check_number("momentum_decay", momentum_decay, low=0.0)
        self._mu_product = (0, 1.0)  # (t, prod_{k<=t} mu_k), the product in torch's order

    def _mu_product_through(self, t):
        step, product = self._mu_product
        if step != t - 1:  # after a load or an undone step: recompute from the start
            step, product = 0, 1.0
            for k in range(1, t):
                product *= nadam_mu(k, self.beta_1, self.momentum_decay)
        return product * nadam_mu(t, self.beta_1, self.momentum_decay)

    def _update(self, params, grads, lr, grad_scale, n_threads):
        t = self.iterations
        product = self._mu_product_through(t)
        mu = nadam_mu(t, self.beta_1, self.momentum_decay)
        mu_next = nadam_mu(t + 1, self.beta_1, self.momentum_decay)
        c_grad = lr * (1 - mu) / (1 - product)
        c_m = lr * mu_next / (1 - product * mu_next)
        _param_update.nadam_update(grads, self.beta_1, self.beta_2, self.epsilon,
                                   self.weight_decay, c_grad, c_m, t, grad_scale, params,
                                   self._state["m"], self._state["v"], n_threads)
        self._mu_product = (t, product)

    def get_config(self):
        """Return the hyperparameters as plain data (the constructor's arguments).

        Returns
        -------
        dict
            The keyword arguments that rebuild this optimizer.

        Examples
        --------
        >>> import bp
        >>> bp.Nadam().get_config()["epsilon"] > 0
        True
        """
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_decay": self.weight_decay,
                "momentum_decay": self.momentum_decay, "global_clipnorm": self.global_clipnorm}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
              "nadam": Nadam}


# The classes whose update the compiled engine runs (through _engine_spec). Exact classes, not
# their subclasses: a user's subclass may change the update in Python, so it runs in fit's
# Python step. Another bp module adds its optimizers with ``engine_runs``. RMSprop, Adagrad and
# Nadam have fused kernels but the engine (bpcore/_network.pyx) does not dispatch to them yet:
# fit runs them in its Python step, which calls the same kernels through ``apply``.
_ENGINE_CLASSES = {SGD, Adam, AdamW}
_BUILTIN = {cls.__name__: cls for cls in OPTIMIZERS.values()}  # the names files use


def per_step(optimizer):
    """True if the optimizer's learning rate is a per-step schedule (bp.schedules), which fit
    evaluates before every update instead of once an epoch."""
    return bool(getattr(optimizer.learning_rate, "per_step", False))


def engine_runs(cls):
    """Class decorator: the compiled engine runs this Optimizer class (it defines
    _engine_spec with a kind that bpcore._network.OPTIMIZER_KINDS knows)."""
    _ENGINE_CLASSES.add(cls)
    return cls


def runs_in_engine(optimizer):
    """True when the compiled engine can run this optimizer's update."""
    return type(optimizer) in _ENGINE_CLASSES


# A user's Optimizer subclasses that model files may name, by name (Keras' custom objects).
_REGISTERED: dict[str, type] = {}


def register(cls=None, *, name=None):
    """Class decorator: let model files saved with this Optimizer subclass be loaded.

    A file names its optimizer's class; ``bp.load`` rebuilds only the classes it knows: bp's own
    and those registered here (under `name`, default the class name), as Keras' custom objects.
    The class's ``get_config()`` must return the keyword arguments of its ``__init__``. Saving a
    model whose optimizer class is neither is refused (a file nothing could load).

    Parameters
    ----------
    cls : type, optional
        The Optimizer subclass (when used as ``@register``).
    name : str, optional
        The name files use for it (when used as ``@register(name=...)``).

    Returns
    -------
    type or callable
        The class itself, or a decorator that registers it.

    Examples
    --------
    >>> import bp
    >>> @bp.optimizers.register
    ... class HalfRateSGD(bp.SGD):
    ...     def _update(self, params, grads, lr, grad_scale, n_threads):
    ...         super()._update(params, grads, lr / 2, grad_scale, n_threads)
    """
    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise TypeError(f"register takes a subclass of bp.Optimizer. Received: {cls!r}")
        key = cls.__name__ if name is None else name
        if not isinstance(key, str) or not key:
            raise TypeError(f"name must be a non-empty str. Received: name={key!r}")
        known = _REGISTERED.get(key) or _BUILTIN.get(key)
        if known is not None and known is not cls:
            raise ValueError(f"the optimizer name {key!r} is taken by {known!r}; pass name=")
        _REGISTERED[key] = cls
        return cls
    return add if cls is None else add(cls)


def class_named(name):
    """The Optimizer class a model file names (bp's own or a registered one); ValueError else."""
    cls = _BUILTIN.get(name) or _REGISTERED.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer class {name!r}: bp's are {', '.join(_BUILTIN)}; a "
                         f"subclass of your own must be registered (bp.optimizers.register) "
                         f"before load")
    return cls


def _name_of(cls):
    for table in (_BUILTIN, _REGISTERED):
        for key, known in table.items():
            if known is cls:
                return key
    raise ValueError(f"the model's optimizer is a {cls.__name__}, which bp.load could not rebuild: "
                     f"register the class first (@bp.optimizers.register), so that a file can "
                     f"name it")


def serialize(optimizer):
    """The optimizer as JSON-able data for a model file: class, config, step count.
    A learning-rate schedule is code, not data: the rate in force is stored, and said so.
    ValueError for a class load could not rebuild (neither bp's nor registered)."""
    if optimizer is None:
        return None
    name = _name_of(type(optimizer))
    cfg = optimizer.get_config()
    if callable(cfg.get("learning_rate")):
        cfg["learning_rate"] = (optimizer.current_learning_rate(0) if optimizer._lr is None
                                else optimizer._lr)
        cfg["schedule_dropped"] = True
    return {"class": name, "config": cfg, "iterations": optimizer.iterations}


def deserialize(data, state, params):
    """The optimizer ``serialize`` described, with its state buffers taken from `state` (a dict
    name -> array, each checked against the flat parameters `params`)."""
    cls = class_named(data["class"])
    # files written before the Keras spelling carry the old names: read them without a warning
    kwargs = {RENAMED.get(k, k): v for k, v in data["config"].items() if k != "schedule_dropped"}
    optimizer = cls(**kwargs)
    optimizer.iterations = int(data["iterations"])
    for name in optimizer._state_names:
        if name in state:
            buf = state[name]
            if buf.shape != params.shape or buf.dtype != params.dtype:
                raise ValueError(f"optimizer state {name!r} has shape {buf.shape} and dtype "
                                 f"{buf.dtype}; the parameters {params.shape} {params.dtype}")
            optimizer._state[name] = np.array(buf)
    return optimizer


def get(optimizer):
    """An Optimizer from an instance, a name (a key of OPTIMIZERS) or None (Adam())."""
    if optimizer is None:
        return Adam()
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {optimizer!r}. Valid values: "
                             f"{', '.join(repr(k) for k in OPTIMIZERS)} or a bp.Optimizer. "
                             f"Received: optimizer={optimizer!r}")
        return OPTIMIZERS[key]()
    raise TypeError(f"optimizer must be a bp.Optimizer or one of {', '.join(OPTIMIZERS)}. "
                    f"Received: {type(optimizer).__name__}")


