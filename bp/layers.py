"""Dense: the one layer of a multilayer perceptron (and Dropout, folded into the Dense before it).

    z_in = z_out_prev @ W + b        z_out = sigma(z_in)

Weights are stored (n_in, n_out), as in Keras and scikit-learn, so the product is row-major
``z_out_prev @ W`` with no transpose.
"""

import numbers

import numpy as np

import bpcore

from . import kernels
from . import regularizers as _regularizers
from ._validation import (FLOAT_DTYPES, as_dtype, as_float_array, check_choice, check_finite,
                          check_number, check_positive_int)

ACTIVATIONS = tuple(bpcore.ACTIVATIONS)
# He initialisation for the relu family, Glorot for the rest (Keras and PyTorch practice).
_RELU_LIKE = ("relu", "leaky_relu", "gelu")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "zeros")


def initialize(name, shape, rng, dtype):
    """Draw a weight matrix of `shape` = (fan_in, fan_out) with initializer `name`.

    glorot_uniform  U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    glorot_normal   N(0, 2 / (fan_in + fan_out))
    he_uniform      U(-a, a), a = sqrt(6 / fan_in)
    he_normal       N(0, 2 / fan_in)
    """
    fan_in, fan_out = shape
    if name == "glorot_uniform":
        a = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-a, a, shape)
    elif name == "glorot_normal":
        w = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)
    elif name == "he_uniform":
        a = np.sqrt(6.0 / fan_in)
        w = rng.uniform(-a, a, shape)
    elif name == "he_normal":
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif name == "zeros":
        w = np.zeros(shape)
    else:
        raise ValueError(f"Unknown kernel_initializer {name!r}. Valid values: "
                         f"{', '.join(repr(i) for i in INITIALIZERS)} or a callable")
    return w.astype(dtype)


class Dense:
    """A fully connected layer: ``z_out = sigma(z_out_prev @ W + b)``.

    Shape: input ``(n_samples, n_in)`` -> output ``(n_samples, units)``; ``W`` is
    ``(n_in, units)`` (the transpose of PyTorch's ``Linear.weight``) and ``b`` is ``(units,)``.

    Parameters
    ----------
    units : int
        The output width n_out (> 0).
    activation : str or None, default="identity"
        sigma: one of "identity", "sigmoid", "tanh", "relu", "leaky_relu", "gelu" (the exact erf
        form), "softmax" (output layer only); None and "linear" (Keras' names) mean identity.
    use_bias : bool, default=True
        Whether the layer adds a bias b.
    kernel_initializer : str or callable, optional
        "glorot_uniform" (default for sigmoid, tanh, softmax, identity), "he_normal" (default
        for relu, leaky_relu, gelu), "glorot_normal", "he_uniform", "zeros", or a callable
        ``f((n_in, n_out), rng) -> array``. Biases start at zero.
    alpha : float, default=0.01
        leaky_relu's negative slope (>= 0).
    kernel_regularizer : L1L2, optional
        A penalty on W (``bp.l1``, ``bp.l2``, ``bp.l1_l2``) added to the training loss and its
        gradient.
    bias_regularizer : L1L2, optional
        The same for b.
    input_dim : int, optional
        n_in. If omitted, it is taken from the data at first use (lazy build).
    name : str, optional
        A name for ``summary``.

    See Also
    --------
    Dropout : Inverted dropout on this layer's output.
    Sequential : The stack of layers.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> layer = bp.Dense(64, activation="relu")
    >>> layer
    Dense(64, activation='relu')
    >>> layer.build(3, seed=0).W.shape
    (3, 64)
    >>> layer(np.ones((5, 3))).shape
    (5, 64)
    """

    _kind = "dense"

    def __init__(self, units, activation="identity", *, use_bias=True, kernel_initializer=None,
                 alpha=0.01, kernel_regularizer=None, bias_regularizer=None, input_dim=None,
                 name=None):
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
            raise ValueError(f"Dense units must be a positive integer. Received: units={units!r}")
        if activation is None or activation == "linear":  # Keras' names for the identity
            activation = "identity"
        if not isinstance(activation, str):
            raise TypeError(f"activation must be a string. Received: {activation!r}")
        check_choice("activation", activation, ACTIVATIONS)
        if kernel_initializer is not None and not callable(kernel_initializer):
            check_choice("kernel_initializer", kernel_initializer, INITIALIZERS)
        self.units = int(units)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer or (
            "he_normal" if activation in _RELU_LIKE else "glorot_uniform")
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer, "kernel_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, "bias_regularizer")
        self.input_dim = check_positive_int("input_dim", input_dim, allow_none=True)
        self.name = name
        self._W = None
        self._b = None
        self._owner = None  # the Sequential whose flat buffer holds W and b
        self.dropout = None  # a Dropout on this layer's output (a Sequential sets it)

    # -- building --------------------------------------------------------------------------------
    @property
    def built(self):
        """Whether W and b are allocated.

        Examples
        --------
        >>> import bp
        >>> bp.Dense(2).built
        False
        """
        return self._W is not None

    @property
    def n_params(self):
        """The number of parameters (weights and bias), None while the input width is unknown.

        Examples
        --------
        >>> import bp
        >>> bp.Dense(2, input_dim=3).n_params
        8
        """
        if self.input_dim is None:
            return None
        return self.input_dim * self.units + (self.units if self.use_bias else 0)

    def _initial_weights(self, n_in, rng, dtype):
        if callable(self.kernel_initializer):
            W = np.asarray(self.kernel_initializer((n_in, self.units), rng))
            if W.shape != (n_in, self.units):
                raise ValueError(f"kernel_initializer must return shape {(n_in, self.units)}. "
                                 f"Received: shape {W.shape}")
            W = W.astype(dtype)
        else:
            W = initialize(self.kernel_initializer, (n_in, self.units), rng, dtype)
        check_finite("initial W", W)
        return W

    def _bind(self, W_view, b_view):
        """Point W and b at views into a model's flat parameter buffer."""
        self._W = W_view
        self._b = b_view

    def build(self, input_dim, dtype="float32", seed=None):
        """Allocate and initialise W and b of a layer used on its own (not in a model).

        Parameters
        ----------
        input_dim : int
            The input width n_in.
        dtype : {"float32", "float64"}, default="float32"
            The dtype of W and b.
        seed : int, optional
            Seeds the initialisation.

        Returns
        -------
        Dense
            The layer itself.

        Examples
        --------
        >>> import bp
        >>> bp.Dense(4).build(3, dtype="float64", seed=0).W.dtype
        dtype('float64')
        """
        if self._owner is not None:
            raise ValueError("this layer belongs to a Sequential; build the model instead")
        dtype = as_dtype(dtype)
        self.input_dim = check_positive_int("input_dim", input_dim)
        rng = np.random.default_rng(seed)
        self._bind(self._initial_weights(self.input_dim, rng, dtype),
                   np.zeros(self.units, dtype) if self.use_bias else None)
        return self

    # -- parameters ------------------------------------------------------------------------------
    def _require_built(self):
        if not self.built:
            raise ValueError(f"{self!r} is not built yet: its input width is taken from the data "
                             "at first use (or give input_dim=...).")

    @property
    def W(self):
        """The weights, shape ``(n_in, units)``: a view into the model's parameters.

        Assigning writes into them (shape checked).

        Examples
        --------
        >>> import numpy as np
        >>> import bp
        >>> layer = bp.Dense(2).build(3, seed=0)
        >>> layer.W = np.zeros((3, 2))
        >>> float(layer.W.sum())
        0.0
        """
        self._require_built()
        return self._W

    @W.setter
    def W(self, value):
        self._require_built()
        self._W[...] = self._checked(value, "W", self._W)

    @property
    def b(self):
        """The bias, shape ``(units,)``, or None when ``use_bias=False`` (assignable).

        Examples
        --------
        >>> import bp
        >>> bp.Dense(2).build(3).b
        array([0., 0.], dtype=float32)
        """
        self._require_built()
        return self._b

    @b.setter
    def b(self, value):
        self._require_built()
        if self._b is None:
            raise ValueError("this layer has no bias (use_bias=False)")
        self._b[...] = self._checked(value, "b", self._b)

    @staticmethod
    def _checked(value, name, target):
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
            raise TypeError(f"{name} must be real numbers. Received: dtype {arr.dtype}")
        if arr.shape != target.shape:
            raise ValueError(f"{name} must have shape {target.shape}. Received: shape {arr.shape}")
        arr = arr.astype(target.dtype)
        check_finite(name, arr)
        return arr

    # -- forward on its own ----------------------------------------------------------------------
    def __call__(self, X):
        """z_out for input X (builds the layer on first use when it is not part of a model)."""
        # every check before the first-use build, so a rejected X leaves the layer unbuilt
        X = as_float_array("X", X, self._W.dtype if self.built else None, ndim=2)
        if X.dtype not in FLOAT_DTYPES:
            X = X.astype(np.float32)  # integers; a float32 or float64 X sets an unbuilt layer's dtype
        n_in = self._W.shape[0] if self.built else self.input_dim
        if n_in is not None and X.shape[1] != n_in:
            raise ValueError(f"X must have {n_in} features (the layer's input width). "
                             f"Received: X with shape {X.shape}")
        check_finite("X", X)
        if not self.built:
            self.build(X.shape[1], dtype=X.dtype)
        return kernels.dense_forward(X, self._W, self._b, self.activation, self.alpha)[1]

    # -- description -----------------------------------------------------------------------------
    def get_config(self):
        """Describe the layer as plain data (a callable initializer is left out: it is code).

        Returns
        -------
        dict
            The keyword arguments that rebuild the layer (and its dropout, if any).

        Examples
        --------
        >>> import bp
        >>> config = bp.Dense(8, activation="tanh").get_config()
        >>> config["units"], config["activation"]
        (8, 'tanh')
        """
        init = self.kernel_initializer
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": init if isinstance(init, str) else None,
                "alpha": self.alpha, "input_dim": self.input_dim, "name": self.name,
                **{key: reg.get_config() for key, reg in (
                    ("kernel_regularizer", self.kernel_regularizer),
                    ("bias_regularizer", self.bias_regularizer),
                    ("dropout", self.dropout)) if reg is not None}}

    def __repr__(self):
        args = [str(self.units), f"activation={self.activation!r}"]
        if not self.use_bias:
            args.append("use_bias=False")
        if self.activation == "leaky_relu":
            args.append(f"alpha={self.alpha}")
        for key in ("kernel_regularizer", "bias_regularizer"):
            if getattr(self, key) is not None:
                args.append(f"{key}={getattr(self, key)!r}")
        if self.input_dim is not None:
            args.append(f"input_dim={self.input_dim}")
        if self.name:
            args.append(f"name={self.name!r}")
        if self.dropout is not None:
            args.append(f"dropout={self.dropout.rate}")
        return f"Dense({', '.join(args)})"


class Dropout:
    """Inverted dropout: on the output of the Dense layer before it, or as a layer of its own.

    In training each unit of its input is kept with probability 1 - rate and scaled by
    1 / (1 - rate); in ``predict`` and ``evaluate`` the layer is the identity. The error signal
    goes back through the same mask:
    ``delta[i] = ((delta[i+1] @ W[i+1].T) * mask[i] / (1 - rate)) * sigma'(z_in[i])``.

    The masks are drawn inside the compiled step by a counter-based generator keyed by (seed,
    training batch, row, unit): the same seed gives the same masks for any thread count. A
    Sequential folds a Dropout that follows a Dense into it (``layer.dropout`` is this object,
    the form of files of format 1); first in the model (input dropout) or after another kind of
    layer it is a layer of its own, with the error signal ``g_prev = g * mask / (1 - rate)``.

    Parameters
    ----------
    rate : float
        The probability of dropping a unit, in [0, 1) (rate 0: no dropout, the same bits as no
        layer).
    seed : int, optional
        An integer in [0, 2**64); None draws it from the model's seeded generator when the model is
        built.

    See Also
    --------
    Dense

    Examples
    --------
    >>> import bp
    >>> model = bp.Sequential([bp.Dense(256, activation="relu"), bp.Dropout(0.5),
    ...                        bp.Dense(10, activation="softmax")], seed=0)
    >>> len(model), model.layers[0].dropout
    (2, Dropout(0.5))
    """

    _kind = "dropout"
    dropout = None      # as a layer of its own (first, or after another kind of layer)
    input_dim = None    # its width, set when the model is built
    use_bias = False
    name = None
    activation = "identity"
    n_params = 0
    _owner = None

    @property
    def units(self):
        """int or None: the width, as a layer of its own (its input's, once built)."""
        return self.input_dim

    def __init__(self, rate, seed=None):
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"Dropout rate must be a number in [0, 1). Received: {rate!r}")
        if not 0.0 <= float(rate) < 1.0:  # also refuses NaN
            raise ValueError(f"Dropout rate must be in [0, 1). Received: rate={rate!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or not 0 <= seed < 2**64):
            raise ValueError(f"Dropout seed must be an integer in [0, 2**64) or None. "
                             f"Received: seed={seed!r}")
        self.rate = float(rate)
        self.seed = None if seed is None else int(seed)
        self._key = self.seed  # the seed in use (drawn at build when seed is None)

    def get_config(self):
        """Describe the layer as plain data: its rate and the seed in use.

        Returns
        -------
        dict
            ``{"rate": float, "seed": int or None}``.

        Examples
        --------
        >>> import bp
        >>> bp.Dropout(0.25, seed=3).get_config()
        {'rate': 0.25, 'seed': 3}
        """
        return {"rate": self.rate, "seed": self._key}

    def __repr__(self):
        return f"Dropout({self.rate}" + ("" if self.seed is None else f", seed={self.seed}") + ")"


class _WidthPreserving:
    """The layers that keep their input's width (taken at build)."""

    dropout = None      # a Dropout after such a layer is a layer of its own
    use_bias = False
    input_dim = None
    n_params = 0
    _owner = None

    @property
    def units(self):
        return self.input_dim

    @property
    def built(self):
        return self.input_dim is not None and self._owner is not None and self._owner.built


class Activation(_WidthPreserving):
    """An activation as a layer of its own: ``z_out = sigma(z_in)``, the width unchanged.

    Its error signal is ``g_prev = g * sigma'(z_in)`` (softmax: its Jacobian-vector product),
    the same rows of code as a Dense's activation (bpcore/_activations.pxd).

    Parameters
    ----------
    activation : str
        sigma: one of "identity" (also "linear"), "sigmoid", "tanh", "relu", "leaky_relu",
        "gelu", "softmax".
    alpha : float, default=0.01
        leaky_relu's negative slope (>= 0).
    name : str, optional
        A name for summary().

    Examples
    --------
    >>> import bp
    >>> model = bp.Sequential([bp.Dense(16), bp.Activation("relu"), bp.Dense(3)])
    >>> model[1]
    Activation('relu')
    """

    _kind = "activation"

    def __init__(self, activation, *, alpha=0.01, name=None):
        if not isinstance(activation, str):
            raise TypeError(f"activation must be a string. Received: activation={activation!r}")
        activation = "identity" if activation == "linear" else activation
        check_choice("activation", activation, ACTIVATIONS)
        self.activation = activation
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.name = name

    def get_config(self):
        """Describe the layer as plain data.

        Returns
        -------
        dict
            The keyword arguments that rebuild the layer.

        Examples
        --------
        >>> import bp
        >>> bp.Activation("tanh").get_config()["activation"]
        'tanh'
        """
        return {"activation": self.activation, "alpha": self.alpha, "name": self.name}

    def __repr__(self):
        extra = f", alpha={self.alpha}" if self.activation == "leaky_relu" else ""
        return f"Activation({self.activation!r}{extra})"


class _Normalization(_WidthPreserving):
    """gamma and beta, views into the model's flat parameters (gamma starts at 1, beta at 0)."""

    activation = "identity"
    _gamma = None
    _beta = None

    def _check(self, epsilon, center, scale):
        self.epsilon = check_number("epsilon", epsilon, low=0.0)
        if self.epsilon <= 0:
            raise ValueError(f"epsilon must be positive. Received: epsilon={epsilon!r}")
        for key, value in (("center", center), ("scale", scale)):
            if not isinstance(value, bool):
                raise TypeError(f"{key} must be True or False. Received: {key}={value!r}")
        self.center, self.scale = center, scale

    @property
    def n_params(self):
        if self.input_dim is None:
            return None
        return self.input_dim * (int(self.scale) + int(self.center))

    def _bind(self, gamma, beta):
        self._gamma, self._beta = gamma, beta

    @property
    def gamma(self):
        """The scale, shape (width,) (None with scale=False): a view into the model's
        parameters."""
        return self._gamma

    @property
    def beta(self):
        """The offset, shape (width,) (None with center=False)."""
        return self._beta


class LayerNormalization(_Normalization):
    """Normalise each row (sample) over its features, then scale and shift.

    ``z_out = gamma (z_in - mu) / sqrt(var + epsilon) + beta``, mu and var over the row's features.

    The biased variance, the same in training and inference (no running statistics). Keras'
    name and default epsilon (1e-3; PyTorch's nn.LayerNorm uses 1e-5: pass epsilon=1e-5 for its
    numbers). The error signal through it (bpcore/_layer_norm.pyx), with gg = g gamma and
    xhat = (z_in - mu) / sqrt(var + eps):

        g_prev = (gg - mean_row(gg) - xhat mean_row(gg xhat)) / sqrt(var + eps)

    Parameters
    ----------
    epsilon : float, default=1e-3
        Added to the variance (> 0).
    center : bool, default=True
        Learn beta (False: beta = 0).
    scale : bool, default=True
        Learn gamma (False: gamma = 1).
    name : str, optional
        A name for summary().

    Examples
    --------
    >>> import bp
    >>> model = bp.Sequential([bp.Dense(16), bp.LayerNormalization(), bp.Dense(3)])
    >>> model[1]
    LayerNormalization(epsilon=0.001)
    """

    _kind = "layer_norm"

    def __init__(self, epsilon=1e-3, *, center=True, scale=True, name=None):
        self._check(epsilon, center, scale)
        self.name = name

    def get_config(self):
        """Describe the layer as plain data.

        Returns
        -------
        dict
            The keyword arguments that rebuild the layer.

        Examples
        --------
        >>> import bp
        >>> bp.LayerNormalization().get_config()["epsilon"]
        0.001
        """
        return {"epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "name": self.name}

    def __repr__(self):
        return f"LayerNormalization(epsilon={self.epsilon})"


class BatchNormalization(_Normalization):
    """Normalise each feature by batch statistics in training, running ones in inference.

    Then scale and shift::

        training   z_out = gamma (z_in - mu_B) / sqrt(var_B + epsilon) + beta
                   running_mean = momentum running_mean + (1 - momentum) mu_B
                   running_var  = momentum running_var + (1 - momentum) var_B n / (n - 1)
        inference  z_out = gamma (z_in - running_mean) / sqrt(running_var + epsilon) + beta

    Keras' names and defaults (momentum 0.99: the share of the running value kept; PyTorch's
    nn.BatchNorm1d(momentum=m) is momentum = 1 - m here, its eps=1e-5 is epsilon=1e-5), with
    PyTorch's unbiased running variance. fit, train_on_batch and backward run it in training
    mode; predict, evaluate and gradients in inference mode. A training batch of one row has no
    variance: fit refuses it, as PyTorch does. With data-parallel fit each rank normalises by its
    own batch's statistics (PyTorch DDP without SyncBatchNorm). The error signal in training
    (bpcore/_batch_norm.pyx), gg = g gamma, per feature over the batch:

        g_prev = (gg - mean_batch(gg) - xhat mean_batch(gg xhat)) / sqrt(var_B + eps)

    Parameters
    ----------
    momentum : float, default=0.99
        The share of the running statistics kept at each training batch, in [0, 1).
    epsilon : float, default=1e-3
        Added to the variance (> 0).
    center : bool, default=True
        Learn beta (False: beta = 0).
    scale : bool, default=True
        Learn gamma (False: gamma = 1).
    name : str, optional
        A name for summary().

    Examples
    --------
    >>> import bp
    >>> model = bp.Sequential([bp.Dense(16), bp.BatchNormalization(), bp.Dense(3)])
    >>> model[1]
    BatchNormalization(momentum=0.99, epsilon=0.001)
    """

    _kind = "batch_norm"

    def __init__(self, momentum=0.99, epsilon=1e-3, *, center=True, scale=True, name=None):
        self.momentum = check_number("momentum", momentum, low=0.0)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1). Received: momentum={momentum!r}")
        self._check(epsilon, center, scale)
        self.name = name
        self.running = None  # [mean, var] (2 width,): a view into the model's state, once built

    @property
    def moving_mean(self):
        """ndarray or None: the running mean, a view (None until the model is built)."""
        return None if self.running is None else self.running[:self.input_dim]

    @property
    def moving_variance(self):
        """ndarray or None: the running (unbiased) variance, a view."""
        return None if self.running is None else self.running[self.input_dim:]

    def get_config(self):
        """Describe the layer as plain data.

        Returns
        -------
        dict
            The keyword arguments that rebuild the layer.

        Examples
        --------
        >>> import bp
        >>> bp.BatchNormalization().get_config()["epsilon"]
        0.001
        """
        return {"momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "name": self.name}

    def __repr__(self):
        return f"BatchNormalization(momentum={self.momentum}, epsilon={self.epsilon})"


class Residual(_WidthPreserving):
    """A residual block: ``z_out = block(z_in) + z_in``, the block keeping the width.

    The skip carries the error signal back unchanged and the block's own error signal is added
    to it where the block begins: ``g_prev = g_block + g``.

    Parameters
    ----------
    layers : list of layers
        Dense, Activation, Dropout, LayerNormalization, BatchNormalization or Residual layers;
        the block's output must be as wide as its input.
    name : str, optional
        A name for summary().

    Examples
    --------
    >>> import bp
    >>> block = bp.Residual([bp.LayerNormalization(), bp.Dense(64, activation="relu"),
    ...                      bp.Dense(16)])
    >>> model = bp.Sequential([bp.Dense(16), block, bp.Dense(3)])
    """

    _kind = "residual"

    def __init__(self, layers, *, name=None):
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError(f"Residual takes a list of layers. Received: {layers!r}")
        layers = list(layers)
        if not layers:
            raise ValueError("a Residual block needs at least one layer. Received: []")
        for layer in layers:
            if not isinstance(layer, LAYER_TYPES):
                raise TypeError(f"a Residual block holds bp layers. Received: {layer!r}")
        self.layers = layers
        self.name = name

    def get_config(self):
        """Describe the block as plain data.

        Returns
        -------
        dict
            ``{"layers": [{"class_name", "config"} per layer], "name"}``.

        Examples
        --------
        >>> import bp
        >>> bp.Residual([bp.Dense(4)]).get_config()["layers"][0]["class_name"]
        'Dense'
        """
        return {"layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers], "name": self.name}

    @property
    def n_params(self):
        """int or None: the block's parameter count (None until the width is known)."""
        return sum(layer.n_params or 0 for layer in self.layers) if self.input_dim else None

    def __repr__(self):
        return f"Residual([{', '.join(map(repr, self.layers))}])"


class Input:
    """The model's input width, as Keras' ``Input(shape=(n,))``.

    ``bp.Input(n)`` first in a Sequential is ``Sequential(..., input_dim=n)``.

    Parameters
    ----------
    n : int, optional
        The number of input features (> 0).
    shape : tuple of one int, optional
        Keras' spelling: ``shape=(n,)`` instead of n.

    Examples
    --------
    >>> import bp
    >>> model = bp.Sequential([bp.Input(4), bp.Dense(3)])
    >>> model.input_dim
    4
    """

    def __init__(self, n=None, *, shape=None):
        if shape is not None:
            if n is not None or not isinstance(shape, tuple) or len(shape) != 1:
                raise ValueError(f"Input shape must be a 1-tuple (n_features,), without n. "
                                 f"Received: n={n!r}, shape={shape!r}")
            n = shape[0]
        self.n = check_positive_int("n", n)

    def __repr__(self):
        return f"Input({self.n})"


LAYER_TYPES = (Dense, Dropout, Activation, LayerNormalization, BatchNormalization, Residual)
