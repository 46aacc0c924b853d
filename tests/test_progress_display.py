"""What the progress display leaves on a screen (bp/_progress.py): read back through a tiny
terminal emulator (carriage return, newline, a fixed width that wraps), and in a notebook through
fake IPython display objects; the Ctrl-C message counts from 1 as the bar."""

import io
import re
import shutil
import sys

import numpy as np
import pytest

import bp
from bp import _progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def screen(text, columns):
    """The lines a terminal of `columns` columns shows after `text`, and how many lines it used:
    \\r moves to column 0, \\n to the next line, a character in the last column wraps."""
    lines, row, col = [[]], 0, 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            lines.append([]) if row == len(lines) else None
        else:
            if col == columns:  # wrap
                row, col = row + 1, 0
                lines.append([]) if row == len(lines) else None
            line = lines[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            col += 1
    return ["".join(line).rstrip() for line in lines]


def fit_on(monkeypatch, columns, **kwargs):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5))
    y = (X[:, 0] > 0).astype(int)
    monkeypatch.setattr(shutil, "get_terminal_size",
                        lambda fallback=(80, 24): shutil.os.terminal_size((columns, 24)))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(1, activation="sigmoid")],
                          seed=0)
    h = model.fit(X, y, epochs=3, batch_size=2, verbose=1, validation_split=0.25,
                  metrics=["auc", "precision"], **kwargs)
    monkeypatch.undo()
    return terminal.getvalue(), h


@pytest.mark.parametrize("columns", [50, 80, 200])
def test_the_bar_never_wraps_and_leaves_no_tail(monkeypatch, columns):
    text, h = fit_on(monkeypatch, columns)
    # what each epoch leaves: the text after the last carriage return before its newline
    lines = [segment.split("\r")[-1] for segment in text.split("\n")[:-1]]
    assert len(lines) == 3
    # the screen is exactly that of printing those lines: the bar's redraws added no line, in 50
    # columns either, and left no tail behind the epoch's line (which wraps like any long print)
    assert screen(text, columns) == screen("\n".join(lines) + "\n", columns)
    for epoch, line in enumerate(lines):
        m = re.fullmatch(rf"Epoch {epoch + 1}/3 - \d+\.\d\ds - \d+(?:us|ms)/step - loss: \S+ - "
                         r"accuracy: \S+ - auc: (\S+) - precision: \S+ - val_loss: \S+ - "
                         r"val_accuracy: \S+ - val_auc: (\S+) - val_precision: \S+", line)
        assert m, line
        assert m.groups() == (f"{h['auc'][epoch]:.4f}", f"{h['val_auc'][epoch]:.4f}")
    # every redraw of the bar fits in columns - 1, with an ETA and the time per step
    bars = [c for c in re.split(r"[\r\n]", text) if c.startswith("Epoch") and "[" in c]
    assert bars and all(len(b.rstrip()) <= columns - 1 for b in bars)
    assert any("ETA: " in b for b in bars) and all(b.startswith("Epoch") for b in bars)
    if columns == 200:  # room for the time per step and the running metrics in the bar
        assert all(re.search(r"\d+(us|ms)/step - loss: \d\.\d{4} - auc: (\d\.\d{4}|nan) - "
                             r"precision: \d\.\d{4}$", b.rstrip()) for b in bars)


class FakeHandle:
    def __init__(self, log, obj):
        self.log = log
        self.texts = [repr(obj)]

    def update(self, obj):
        self.texts.append(repr(obj))


def test_a_notebook_gets_a_live_line_per_epoch(monkeypatch, capsys):
    handles = []

    def display(obj, display_id=False):
        assert display_id is True
        handles.append(FakeHandle(handles, obj))
        return handles[-1]

    monkeypatch.setattr(_progress, "_notebook_display", lambda: display)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 4))
    y = (X[:, 1] > 0).astype(int)
    model = bp.Sequential([bp.Dense(4, activation="tanh"), bp.Dense(1, activation="sigmoid")],
                          seed=0)
    h = model.fit(X, y, epochs=2, batch_size=2, verbose=1, metrics=["auc"])
    assert capsys.readouterr().out == ""  # all of it went to the display
    assert len(handles) == 2  # one live line per epoch
    for epoch, handle in enumerate(handles):
        assert len(handle.texts) >= 2  # drawn, then updated in place
        assert all(t.startswith(f"Epoch {epoch + 1}/2 [") for t in handle.texts[:-1])
        assert re.fullmatch(rf"Epoch {epoch + 1}/2 - .* - loss: {h['loss'][epoch]:.4f} - "
                            rf"accuracy: \S+ - auc: {h['auc'][epoch]:.4f}", handle.texts[-1])


def test_no_notebook_outside_a_kernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert _progress._notebook_display() is None

    class Shell:  # a terminal IPython has no kernel: it draws the terminal's bar
        pass

    class FakeIPython:
        @staticmethod
        def get_ipython():
            return Shell()

    monkeypatch.setitem(sys.modules, "IPython", FakeIPython)
    assert _progress._notebook_display() is None


def test_the_interrupt_message_counts_as_the_bar(capsys):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 3))
    y = (X[:, 0] > 0).astype(int)

    def interrupt(batch, logs):
        if model.history.epoch == [0] and batch == 5:  # epoch 1 (from 0), batch 5 (from 0)
            raise KeyboardInterrupt

    model = bp.Sequential([bp.Dense(2, activation="softmax")], seed=0)
    h = model.fit(X, y, epochs=4, batch_size=10, verbose=2,
                  callbacks=[bp.LambdaCallback(on_batch_end=interrupt)])
    assert h.stopped == "interrupted" and h.stopped_at == {"epoch": 1, "batch": 5}
    out = capsys.readouterr().out
    assert "interrupted: stopped after epoch 2 of 4, batch 6 of 10" in out


@pytest.mark.parametrize("seconds, text", [(3e-6, "3us"), (0.0123, "12ms"), (1.5, "1.50s")])
def test_time_per_step(seconds, text):
    assert _progress._per_step(seconds) == text


@pytest.mark.parametrize("seconds, text", [(4.4, "4s"), (187, "3:07"), (3725, "1:02:05")])
def test_eta(seconds, text):
    assert _progress._duration(seconds) == text
