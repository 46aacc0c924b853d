"""Learning-rate schedules: plain callables ``schedule(epoch) -> learning_rate`` (epoch from 0).

Pass one as an optimizer's ``learning_rate``; bp evaluates it at the start of every epoch.
Any function of the epoch works the same way. The epochs go on across fits: a second ``fit``
continues at the epoch after the optimizer's last (``fit(initial_epoch=k)`` numbers them from k,
Keras' meaning), so a schedule does not restart.

Per-step schedules (``per_step = True``) take the optimizer's step count instead (its
``iterations``, from 0, going on across fits) and are evaluated before every update:
:class:`WarmupCosine`, :class:`OneCycle`, or any callable of the step wrapped in :class:`PerStep`.
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


class PerStep:
    """Any callable ``f(step) -> learning_rate``, evaluated before every update (step from 0:
    the optimizer's update count, going on across fits).

    Examples
    --------
    >>> PerStep(lambda step: 0.1 / (1 + step))(9)
    0.01
    """

    per_step = True

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"PerStep needs a callable of the step. Received: {fn!r}")
        self.fn = fn

    def __call__(self, step):
        return self.fn(step)

    def __repr__(self):
        return f"PerStep({self.fn!r})"


class WarmupCosine:
    """A linear warm-up from 0 to `peak` over `warmup_steps` steps, then a cosine decay to
    `final` at `total_steps` (and `final` after it), per step:

        lr(t) = peak (t + 1) / warmup_steps                                  t < warmup_steps
        lr(t) = final + (peak - final) (1 + cos(pi min(1, u))) / 2,
                u = (t - warmup_steps) / (total_steps - warmup_steps)        otherwise

    (the warm-up's first step is peak / warmup_steps, never 0). For a number of epochs, take
    total_steps = epochs * ceil(n_samples / batch_size). From step total_steps on the rate is
    `final`; an optimizer refuses a rate of 0, so with final=0 train at most total_steps steps
    (or give final > 0).

    Examples
    --------
    >>> s = WarmupCosine(0.1, warmup_steps=10, total_steps=110)
    >>> round(s(4), 6), s(10), s(110)
    (0.05, 0.1, 0.0)
    """

    per_step = True

    def __init__(self, peak, warmup_steps, total_steps, final=0.0):
        self.peak = check_number("peak", peak, low=0.0, low_open=True)
        self.warmup_steps = check_positive_int("warmup_steps", warmup_steps)
        self.total_steps = check_positive_int("total_steps", total_steps)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"total_steps must exceed warmup_steps. Received: total_steps="
                             f"{total_steps}, warmup_steps={warmup_steps}")
        self.final = check_number("final", final, low=0.0)

    def __call__(self, step):
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        u = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.final + (self.peak - self.final) * (1 + math.cos(math.pi * u)) / 2

    def __repr__(self):
        return (f"WarmupCosine({self.peak}, warmup_steps={self.warmup_steps}, "
                f"total_steps={self.total_steps}, final={self.final})")


class OneCycle:
    """The one-cycle policy (torch.optim.lr_scheduler.OneCycleLR, anneal_strategy="cos",
    three_phase=False), per step: from max_lr / div_factor up to max_lr over the first
    pct_start of total_steps, then down to max_lr / (div_factor * final_div_factor) at the last
    step, both by cosine annealing.

    Examples
    --------
    >>> s = OneCycle(0.1, total_steps=100)
    >>> round(s(0), 6), round(s(29), 6), round(s(99), 9)
    (0.004, 0.1, 4e-07)
    """

    per_step = True

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4):
        self.max_lr = check_number("max_lr", max_lr, low=0.0, low_open=True)
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.pct_start = check_number("pct_start", pct_start, low=0.0, high=1.0, low_open=True,
                                      high_open=True)
        self.div_factor = check_number("div_factor", div_factor, low=0.0, low_open=True)
        self.final_div_factor = check_number("final_div_factor", final_div_factor, low=0.0,
                                             low_open=True)

    def __call__(self, step):
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        # torch's phase ends: step pct_start * total - 1 reaches max_lr, total - 1 the end
        up_end = float(self.pct_start * self.total_steps) - 1
        down_end = float(self.total_steps - 1)
        step = min(step, self.total_steps - 1)
        if step <= up_end:
            start, end, pct = initial, self.max_lr, step / up_end if up_end > 0 else 1.0
        else:
            start, end, pct = self.max_lr, final, (step - up_end) / (down_end - up_end)
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def __repr__(self):
        return (f"OneCycle({self.max_lr}, total_steps={self.total_steps}, pct_start="
                f"{self.pct_start}, div_factor={self.div_factor}, final_div_factor="
                f"{self.final_div_factor})")
