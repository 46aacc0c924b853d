"""Weight penalties per layer (Keras' regularisers): ``bp.Dense(64, kernel_regularizer=bp.l2())``.

    R(W) = l1 sum |W| + l2 sum W^2        dR/dW = l1 sign(W) + 2 l2 W

fit adds R of every regularised W and b to each step's loss and dR/dW to its gradient, inside the
compiled step (bpcore/_regularize.pyx, once per optimizer step, not scaled by the batch size:
Keras' ``model.losses``); ``evaluate`` and ``gradients`` include it too. Unlike an optimizer's
``weight_decay`` (one rate for every parameter) a penalty belongs to a layer and is saved with it.
"""

import numpy as np

from bpcore import _regularize

from ._validation import FLOAT_DTYPES, check_number


class L1L2:
    """A weight penalty ``R(W) = l1 sum|W| + l2 sum W^2``.

    Parameters
    ----------
    l1 : float, default=0.0
        The L1 coefficient (>= 0).
    l2 : float, default=0.0
        The L2 coefficient (>= 0).

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> reg = bp.l1_l2(l1=1e-5, l2=1e-4)
    >>> reg(np.ones((2, 3)))  # 6e-5 + 6e-4
    0.00066
    """

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = check_number("l1", l1, low=0.0)
        self.l2 = check_number("l2", l2, low=0.0)

    @staticmethod
    def _flat(W):
        W = np.asarray(W)
        if W.dtype not in FLOAT_DTYPES:
            W = W.astype(np.float64)
        return np.ascontiguousarray(W).reshape(-1)

    def __call__(self, W):
        """R(W), a float."""
        return _regularize.penalty(self._flat(W), self.l1, self.l2, None, 1)

    def gradient(self, W):
        """dR/dW = l1 sign(W) + 2 l2 W, an array shaped like W."""
        flat = self._flat(W)
        grad = np.zeros_like(flat)
        _regularize.penalty(flat, self.l1, self.l2, grad, 1)
        return grad.reshape(np.shape(W))

    def get_config(self):
        """Return the coefficients as plain data.

        Returns
        -------
        dict
            ``{"l1": float, "l2": float}``.
        """
        return {"l1": self.l1, "l2": self.l2}

    def __eq__(self, other):
        return isinstance(other, L1L2) and self.get_config() == other.get_config()

    def __repr__(self):
        if not self.l1:
            return f"bp.l2({self.l2})"
        if not self.l2:
            return f"bp.l1({self.l1})"
        return f"bp.l1_l2(l1={self.l1}, l2={self.l2})"


def l1(l1=0.01):
    """An L1 penalty ``R(W) = l1 sum |W|`` (Keras' default coefficient 0.01).

    Parameters
    ----------
    l1 : float, default=0.01
        The coefficient (>= 0).

    Returns
    -------
    bp.regularizers.L1L2
        The penalty, for a Dense layer's ``kernel_regularizer`` or ``bias_regularizer``.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> layer = bp.Dense(64, activation="relu", kernel_regularizer=bp.l1(1e-4))
    >>> bp.l1(0.5)(np.array([1.0, -2.0]))
    1.5
    """
    return L1L2(l1=l1)


def l2(l2=0.01):
    """An L2 penalty ``R(W) = l2 sum W^2`` (Keras' default coefficient 0.01).

    Parameters
    ----------
    l2 : float, default=0.01
        The coefficient (>= 0).

    Returns
    -------
    bp.regularizers.L1L2
        The penalty, for a Dense layer's ``kernel_regularizer`` or ``bias_regularizer``.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> layer = bp.Dense(64, activation="relu", kernel_regularizer=bp.l2(1e-4))
    >>> bp.l2(0.5)(np.array([1.0, -2.0]))
    2.5
    """
    return L1L2(l2=l2)


def l1_l2(l1=0.01, l2=0.01):
    """Both penalties: ``R(W) = l1 sum |W| + l2 sum W^2``.

    Parameters
    ----------
    l1 : float, default=0.01
        The L1 coefficient (>= 0).
    l2 : float, default=0.01
        The L2 coefficient (>= 0).

    Returns
    -------
    bp.regularizers.L1L2
        The penalty, for a Dense layer's ``kernel_regularizer`` or ``bias_regularizer``.

    Examples
    --------
    >>> import numpy as np
    >>> import bp
    >>> bp.l1_l2(l1=0.5, l2=0.5)(np.array([1.0, -2.0]))
    4.0
    """
    return L1L2(l1=l1, l2=l2)


_NAMES = {"l1": l1, "l2": l2, "l1_l2": l1_l2}


def get(identifier, name="regularizer"):
    """An L1L2 (or None) from None, an L1L2, its config, or "l1" / "l2" / "l1_l2" (Keras')."""
    if identifier is None or isinstance(identifier, L1L2):
        return identifier
    if isinstance(identifier, dict) and set(identifier) <= {"l1", "l2"}:
        return L1L2(**identifier)
    if isinstance(identifier, str) and identifier in _NAMES:
        return _NAMES[identifier]()
    raise TypeError(f"{name} must be bp.l1(...), bp.l2(...), bp.l1_l2(...), one of "
                    f"{', '.join(map(repr, _NAMES))} or None. Received: {identifier!r}")


def coefficients(regularizer):
    """(l1, l2) of a regulariser, (0, 0) for None: what the compiled step reads."""
    return (0.0, 0.0) if regularizer is None else (regularizer.l1, regularizer.l2)
