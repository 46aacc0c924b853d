"""fit's default, interactive path: verbose=1 on a terminal draws a progress bar, and to redraw it
the compiled loop runs each epoch in about 50 chunks, resuming mid-epoch. pytest's own output is
no terminal, so the other tests never take this path.

The weights must be those of a quiet run, bit for bit (SGD and Adam, accumulate 1 and 3), and the
bar must say which epoch, how many batches and what loss. One test runs fit in a subprocess whose
stdout is a real pseudo-terminal; the others give fit a stdout whose isatty() is True, which
reaches the same code (bp._progress.Progress asks sys.stdout.isatty()), and watch the chunks.
"""

import io
import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bp
from bp import _training

pty = pytest.importorskip("pty", reason="pseudo-terminals are POSIX")

ROOT = Path(__file__).resolve().parents[1]
N_ROWS, BATCH, EPOCHS = 600, 2, 2  # 300 batches an epoch: chunks of several steps
OPTIMIZERS = {"sgd": lambda: bp.SGD(0.05, momentum=0.9), "adam": lambda: bp.Adam(1e-3)}
STEP = r"\d+(?:us|ms|\.\d\ds)/step"  # the time per step: 312us, 12ms, 1.52s
# the bar is at most 30 wide, narrower when the terminal is (bp/_progress.py)
BAR = re.compile(r"Epoch (\d+)/(\d+) \[([=>.]{10,30})\] (\d+)/(\d+)(?: - ETA: [\d:]+s?)? - "
                 + STEP + r" - loss: (\d+\.\d{4})")
LINE = re.compile(r"Epoch (\d+)/(\d+) - \d+\.\d\ds - " + STEP
                  + r" - loss: (\d+\.\d{4}) - accuracy: (\d\.\d{4})")


def data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N_ROWS, 6))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def train(optimizer, accumulate, verbose):
    X, y = data()
    model = bp.Sequential([bp.Dense(12, activation="relu"), bp.Dense(3, activation="softmax")],
                          seed=1)
    history = model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, accumulate=accumulate,
                        optimizer=OPTIMIZERS[optimizer](), verbose=verbose)
    return model, history


class Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self):
        return True


def check_bar_text(text, history, accumulate):
    """Every bar and every epoch line in `text` (a terminal's output) is consistent with history."""
    n_batches = N_ROWS // BATCH
    bars = [m.groups() for m in BAR.finditer(text)]
    lines = [m.groups() for m in LINE.finditer(text)]
    assert len(lines) == EPOCHS, text
    for epoch, (e, total, loss, accuracy) in enumerate(lines):
        assert (int(e), int(total)) == (epoch + 1, EPOCHS)
        assert loss == f"{history['loss'][epoch]:.4f}"
        assert accuracy == f"{history['accuracy'][epoch]:.4f}"
        # the epoch's bar ends full, and its loss is the epoch's loss
        last = [b for b in bars if int(b[0]) == epoch + 1][-1]
        assert set(last[2]) == {"="} and (int(last[3]), int(last[4])) == (n_batches, n_batches)
        assert last[5] == loss
    for _e, total, bar, done, of, _ in bars:
        done, of = int(done), int(of)
        assert int(total) == EPOCHS and of == n_batches and 0 < done <= n_batches
        assert done % accumulate == 0 or done == n_batches  # whole steps of `accumulate` batches
        width = len(bar)
        filled = width * done // n_batches
        assert bar == "=" * filled + (">" if filled < width else "") + "." * max(0, width - 1 - filled)
    # a bar is redrawn in place: every bar starts after a carriage return
    assert all(text[m.start() - 1] == "\r" for m in BAR.finditer(text))


@pytest.mark.parametrize("accumulate", [1, 3])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_bar_path_gives_the_quiet_weights_bit_for_bit(optimizer, accumulate, monkeypatch):
    quiet, quiet_history = train(optimizer, accumulate, verbose=0)
    calls = []
    run = _training.CompiledSteps.run

    def recording_run(self, first_step, count):
        calls.append((first_step, count, self.n_steps))
        return run(self, first_step, count)

    monkeypatch.setattr(_training.CompiledSteps, "run", recording_run)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    shown, history = train(optimizer, accumulate, verbose=1)
    monkeypatch.undo()

    assert shown.get_flat_params().tobytes() == quiet.get_flat_params().tobytes()
    assert shown.optimizer.iterations == quiet.optimizer.iterations
    for k, v in quiet.optimizer.state_dict().items():
        assert np.asarray(shown.optimizer.state_dict()[k]).tobytes() == np.asarray(v).tobytes(), k
    assert history.history == quiet_history.history
    # the compiled loop ran in chunks of n_steps // 50 steps, each epoch from step 0 to its end
    n_steps = -(-N_ROWS // (BATCH * accumulate))
    chunk = max(1, n_steps // 50)
    expected = [(first, chunk, n_steps) for first in range(0, n_steps, chunk)] * EPOCHS
    assert calls == expected
    assert 50 <= len(calls) // EPOCHS <= 100
    check_bar_text(terminal.getvalue(), history, accumulate)


def test_verbose_2_draws_no_bar_on_a_terminal(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    _, history = train("sgd", 1, verbose=2)
    monkeypatch.undo()
    text = terminal.getvalue()
    assert "\r" not in text and not BAR.search(text)
    assert len(LINE.findall(text)) == EPOCHS


CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_progress as T
assert sys.stdout.isatty()
out = {{}}
for optimizer in T.OPTIMIZERS:
    for accumulate in (1, 3):
        model, history = T.train(optimizer, accumulate, verbose=1)
        sys.stdout.write("\\n<<end>>\\n")
        sys.stdout.flush()
        out[optimizer + str(accumulate)] = dict(params=model.get_flat_params().tobytes().hex(),
                                                history=history.history)
with open({result!r}, "w") as f:
    json.dump(out, f)
"""


@pytest.mark.slow
@pytest.mark.timeout(120)  # the child runs four short fits (~2 s idle)
def test_under_a_real_terminal(tmp_path):
    result = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COLUMNS="120", TERM="xterm")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c",
                             CHILD.format(tests=str(ROOT / "tests"), result=str(result))],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:  # read the terminal until the child closes it
            ready, _, _ = select.select([master], [], [], 100)
            assert ready, "no output from the child for 100 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, stderr
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stderr == ""
    text = b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal's newline translation
    runs = text.split("\n<<end>>\n")
    assert len(runs) == 5 and runs[-1] == ""
    got = json.loads(result.read_text())
    for text_of_run, key in zip(runs, ["sgd1", "sgd3", "adam1", "adam3"]):
        optimizer, accumulate = key[:-1], int(key[-1])
        quiet, quiet_history = train(optimizer, accumulate, verbose=0)
        assert bytes.fromhex(got[key]["params"]) == quiet.get_flat_params().tobytes(), key
        assert got[key]["history"] == json.loads(json.dumps(quiet_history.history))
        check_bar_text(text_of_run, quiet_history, accumulate)
