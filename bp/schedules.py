"""Learning-rate schedules: plain callables ``schedule(epoch) -> learning_rate`` (epoch from 0).

Pass one as an optimizer's ``learning_rate``; bp evaluates it at the start of every epoch.
Any function of the epoch works the same way.
"""

from __future__ import annotations

import math

from ._validation import check_number, check_positive_int


class StepDecay:
    """Step decay of the learning rate: ``lr(epoch) = initial * gamma ** (epoch // step_size)``.

    torch.optim.lr_scheduler.StepLR's rule, as a plain callable of the epoch (from 0).

    Parameters
    ----------
    initial : float
        The learning rate of the first `step_size` epochs (> 0).
    step_size : int
        Epochs between decays.
    gamma : float, default=0.1
        The factor of each decay (> 0).

    See Also
    --------
    CosineDecay

    Examples
    --------
    >>> import bp
    >>> schedule = bp.StepDecay(0.1, step_size=10, gamma=0.5)
    >>> schedule(25)
    0.025
    >>> opt = bp.SGD(learning_rate=schedule)
    """

    def __init__(self, initial: float, step_size: int, gamma: float = 0.1) -> None:
        self.initial = check_number("initial", initial, low=0.0, low_open=True)
        self.step_size = check_positive_int("step_size", step_size)
        self.gamma = check_number("gamma", gamma, low=0.0, low_open=True)

    def __call__(self, epoch: int) -> float:
        return self.initial * self.gamma ** (epoch // self.step_size)

    def __repr__(self):
        return f"StepDecay({self.initial}, step_size={self.step_size}, gamma={self.gamma})"


class CosineDecay:
    """Cosine decay of the learning rate from `initial` to `final` over `total_epochs`.

    ``lr(epoch) = final + (initial - final) (1 + cos(pi min(epoch, T) / T)) / 2`` with
    ``T = total_epochs`` (torch.optim.lr_scheduler.CosineAnnealingLR without restarts).

    Parameters
    ----------
    initial : float
        The learning rate at epoch 0 (> 0).
    total_epochs : int
        T: the epoch from which the rate stays at `final`.
    final : float, default=0.0
        The last learning rate (>= 0).

    See Also
    --------
    StepDecay

    Examples
    --------
    >>> import bp
    >>> schedule = bp.CosineDecay(0.1, total_epochs=10)
    >>> schedule(0), schedule(5), schedule(10)
    (0.1, 0.05, 0.0)
    """

    def __init__(self, initial: float, total_epochs: int, final: float = 0.0) -> None:
        self.initial = check_number("initial", initial, low=0.0, low_open=True)
        self.total_epochs = check_positive_int("total_epochs", total_epochs)
        self.final = check_number("final", final, low=0.0)

    def __call__(self, epoch: int) -> float:
        t = min(epoch, self.total_epochs) / self.total_epochs
        return self.final + (self.initial - self.final) * (1 + math.cos(math.pi * t)) / 2

    def __repr__(self):
        return f"CosineDecay({self.initial}, total_epochs={self.total_epochs}, final={self.final})"
