"""fit's progress display: a bar on a terminal, a live line in a notebook, lines otherwise."""

import shutil
import sys
import time


class Progress:
    """fit's display. verbose=1: a bar redrawn in place on a terminal, a live line in a Jupyter
    notebook, else a line per epoch; verbose=2: a line per epoch.

    The bar (``Epoch 3/10 [=====>....] 120/313 - ETA: 2s - 4ms/step - loss: 0.2143 - auc: 0.9712``)
    is cut to the terminal's width, read at each epoch, less one column, so it never wraps; each
    redraw pads over the longer text before it, and the epoch's line clears the bar first.

    In a notebook the bar is an IPython display handle updated in place (``display(...,
    display_id=True)``, then ``handle.update``): IPython is there whenever a kernel is, so this
    needs nothing installed and draws the terminal's text; tqdm.auto would need tqdm and
    ipywidgets (without them it prints a warning and a static bar). `display` is that function
    (tests pass a fake one).
    """

    BAR = 30

    def __init__(self, verbose, epochs, n_batches, file=None, display=None):
        self.verbose = verbose
        self.epochs = epochs
        self.n_batches = n_batches
        self.file = file or sys.stdout
        if display is None and verbose == 1:
            display = _notebook_display()
        self.display = display if verbose == 1 else None
        terminal = hasattr(self.file, "isatty") and self.file.isatty()
        self.bar = verbose == 1 and (terminal or self.display is not None)
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._shown = 0  # the length of the bar's text on the terminal's line
        self._handle = None
        self._width = 80

    def epoch_begin(self, epoch):
        self._t0 = self._last = time.perf_counter()
        self._last -= 1.0  # the first redraw of an epoch is never held back
        if self.bar:  # the terminal may have been resized since the last epoch
            self._width = 120 if self.display is not None else shutil.get_terminal_size().columns

    def batch(self, epoch, done, loss, metrics=None):
        if not self.bar:
            return
        now = time.perf_counter()
        if done < self.n_batches and now - self._last < 0.1:
            return
        self._last = now
        per_step = (now - self._t0) / max(done, 1)
        head = f"Epoch {epoch + 1}/{self.epochs} "
        tail = f" {done}/{self.n_batches}"
        if done < self.n_batches:
            tail += f" - ETA: {_duration(per_step * (self.n_batches - done))}"
        tail += f" - {_per_step(per_step)}/step - loss: {loss:.4f}"
        tail += "".join(f" - {k}: {v:.4f}" for k, v in (metrics or {}).items())
        room = max(1, self._width - 1)  # the last column would wrap on some terminals
        width = max(10, min(self.BAR, room - len(head) - len(tail) - 2))
        filled = int(width * done / max(1, self.n_batches))
        bar = "=" * filled + (">" if filled < width else "") + "." * max(0, width - filled - 1)
        self._show((head + f"[{bar}]" + tail)[:room])

    def _show(self, text):
        if self.display is not None:
            if self._handle is None:
                self._handle = self.display(_Text(text), display_id=True)
            else:
                self._handle.update(_Text(text))
            return
        self.file.write("\r" + text + " " * max(0, self._shown - len(text)))
        self._shown = len(text)
        self.file.flush()

    def _clear(self):
        """Wipe the bar off the terminal's line (and leave the cursor at its start)."""
        if self._shown:
            self.file.write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def epoch_end(self, epoch, logs, seconds, steps=1):
        """The epoch's line; steps: its batches (a step in Keras' sense, as the bar counts)."""
        if not self.verbose:
            return
        parts = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "learning_rate")
        line = (f"Epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - "
                f"{_per_step(seconds / max(steps, 1))}/step - {parts}")
        if self.display is not None and self.bar:
            self._show(line)
            self._handle = None  # the next epoch draws a line of its own
            return
        if self.bar:
            self._clear()
        self.file.write(line + "\n")
        self.file.flush()

    def message(self, text):
        if self.verbose:
            if self.bar and self._shown:
                self.file.write("\n")
                self._shown = 0
            self.file.write(text + "\n")
            self.file.flush()


    def interrupted(self, stopped_at, accumulate=1):
        """The Ctrl-C message, counted from 1 as the bar counts (stopped_at counts from 0)."""
        self.message("interrupted: " + (
            "before the first step completed" if stopped_at is None else
            f"stopped after epoch {stopped_at['epoch'] + 1} of {self.epochs}, batch "
            f"{min((stopped_at['batch'] + 1) * accumulate, self.n_batches)} of "
            f"{self.n_batches}") + "; the model keeps the last completed step")


class _Text:
    """Plain text for IPython's display (its repr is the text, without quotes)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _notebook_display():
    """IPython's display function when running in a Jupyter kernel, else None. Never imports
    IPython: only a session that runs it has it in sys.modules."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    if shell is None or not hasattr(shell, "kernel"):  # a terminal IPython draws the bar
        return None
    from IPython.display import display
    return display


def _per_step(seconds):
    """A time per step: 312us, 12ms, 1.52s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.0f}ms"
    return f"{seconds:.2f}s"


def _duration(seconds):
    """An ETA: 42s, 3:07, 1:02:05."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
