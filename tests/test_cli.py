"""`python -m bp`, run as a user runs it: in a subprocess from the repository root, with small
--epochs and every output file in tmp_path."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import bp

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds; each run takes about one on an idle machine


def run(*args):
    env = dict(os.environ)
    # the bp under test is the one in the repository root, whatever is installed elsewhere
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "bp", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_digits_job(tmp_path):
    out = tmp_path / "digits.npz"
    result = run("--epochs", "2", "--layers", "16", "--verbose", "0", "--seed", "1",
                 "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    text = result.stdout
    assert "digits: 1347 training and 450 test images, 64 features, 10 classes" in text
    assert "network 64-16-10 (float32), optimizer adam, batch 32" in text
    acc = float(re.search(r"test accuracy (\d\.\d{4})  \(test loss \d+\.\d{4}\)", text).group(1))
    assert re.search(r"time per epoch \d+\.\d ms \(median over 2 epochs\)", text)
    assert f"model saved to {out}" in text
    assert re.search(r"total \d+\.\d s", text)
    # the saved model is the one that was tested: it scores the printed accuracy on the same split
    X, y = load_digits(return_X_y=True)
    _, X_test, _, y_test = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=1)
    model = bp.load(out)
    assert [L.units for L in model] == [16, 10] and model.dtype == np.float32
    assert model.evaluate(X_test, y_test)["accuracy"] == pytest.approx(acc, abs=5e-5)


def test_digits_subcommand_with_options_before_and_after_it(tmp_path):
    out = tmp_path / "m64.npz"
    # options before the command count for it, as do those after it
    result = run("--output", str(out), "--dtype", "float64", "digits", "--epochs", "2",
                 "--layers", "8,8", "--optimizer", "sgd", "--verbose", "2", "--batch-size", "64")
    assert result.returncode == 0, result.stderr
    assert "network 64-8-8-10 (float64), optimizer sgd, batch 64" in result.stdout
    epochs = re.findall(r"^Epoch (\d)/2 - .* - loss: .* - val_loss: .*$", result.stdout, re.M)
    assert epochs == ["1", "2"]
    assert f"model saved to {out}" in result.stdout
    assert bp.load(out).dtype == np.float64


def test_digits_job_draws_its_curves(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    result = run("--epochs", "2", "--layers", "8", "--verbose", "0", "--output",
                 str(tmp_path / "m.npz"), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert f"training curves drawn in {png}" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_xor_job_prints_predictions_and_error_signals():
    # its options (which options reach which command is checked in-process below)
    result = run("--threads", "1", "xor", "--epochs", "300", "--seed", "0")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "in 300 steps" in text
    rows = re.findall(r"x = \[(\d) (\d)\]  f_out = (\d\.\d{4})  -> (\d)  \(target (\d)\)", text)
    assert len(rows) == 4
    for a, b, f_out, pred, target in rows:
        assert int(target) == int(a) ^ int(b)
        assert pred == target and (float(f_out) >= 0.5) == (pred == "1")
    assert "error signals delta = dL/dz_in of the final step:" in text
    # delta[1] is the hidden layer's (4 samples x 2 units), delta[O] the output's (4 x 1)
    hidden = re.search(r"delta\[1\] =\n((?:    .*\n){4})", text)
    output = re.search(r"delta\[O\] =\n((?:    .*\n){4})", text)
    assert hidden and output
    assert all(len(line.replace("[", " ").replace("]", " ").split()) == 2
               for line in hidden.group(1).splitlines())
    assert text.rstrip().endswith("accuracy 100%")


def test_config_job():
    result = run("config")
    assert result.returncode == 0, result.stderr
    assert "OpenMP kernels" in result.stdout and "threads (bp)" in result.stdout


# Every bad command line exits with status 2 and names the option and the value it received.
BAD_OPTIONS = {
    "epochs 0": (["--epochs", "0"], r"argument --epochs: expected a positive integer, received '0'"),
    "epochs word": (["--epochs", "ten"], r"argument --epochs: expected a positive integer, received 'ten'"),
    "batch size negative": (["--batch-size", "-5"],
                            r"argument --batch-size: expected a positive integer, received '-5'"),
    "layers": (["--layers", "128,x"], r"argument --layers: expected comma-separated positive integers like 128,64"),
    "layers zero": (["--layers", "128,0"], r"argument --layers: expected comma-separated positive "
                                           r"integers like 128,64, received '128,0'"),
    "optimizer": (["digits", "--optimizer", "lbfgs"],
                  r"argument --optimizer: invalid choice: 'lbfgs' \(choose from '?adagrad'?, '?adam'?, "
                  r"'?adamw'?, '?nadam'?, '?rmsprop'?, '?sgd'?\)"),
    "threads 0": (["--threads", "0", "xor"],
                  r"argument --threads: expected a nonzero integer \(-1 for all cores\), received 0"),
    "threads word": (["--threads", "many"],
                     r"argument --threads: expected an integer \(-1 for all cores\), received 'many'"),
    "learning rate": (["--learning-rate", "-1"],
                      r"argument --learning-rate: expected a finite positive number, received '-1'"),
    "learning rate nan": (["--learning-rate", "nan"],
                          r"argument --learning-rate: expected a finite positive number, received 'nan'"),
    "learning rate word": (["--learning-rate", "fast"],
                           r"argument --learning-rate: expected a positive number, received 'fast'"),
    "dtype": (["--dtype", "float16"],
              r"argument --dtype: invalid choice: 'float16' \(choose from '?float32'?, '?float64'?\)"),
    "verbose": (["digits", "--verbose", "3"], r"argument --verbose: invalid choice: 3"),
    "xor epochs": (["xor", "--epochs", "many"], r"argument --epochs: expected a positive integer, received 'many'"),
    "xor epochs negative": (["xor", "--epochs", "-1"],
                            r"argument --epochs: expected a positive integer, received '-1'"),
    "digits option to xor": (["--layers", "16", "xor"],
                             r"argument --layers: an option of the digits job, which 'xor' does not take"),
    "digits option to config": (["--seed", "1", "config"], r"argument --seed: an option of the digits job"),
    "command": (["train"], r"argument command: invalid choice: 'train'"),
    "unknown": (["xor", "--bogus"], r"unrecognized arguments: --bogus"),
}


def _usage_error(stderr, message):
    # the subcommands' parsers name themselves: "python -m bp digits: error: ..."
    assert stderr.startswith("usage: python -m bp"), stderr
    assert re.search(r"python -m bp( \w+)?: error: " + message, stderr), stderr


@pytest.mark.parametrize("name", ["epochs 0", "digits option to xor"])
def test_bad_options_exit_with_a_usage_error(name):
    args, message = BAD_OPTIONS[name]
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""  # nothing was trained
    _usage_error(result.stderr, message)


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_every_bad_option_is_a_usage_error(name, capsys):
    # the same parser in-process (a subprocess each would cost half a second apiece)
    from bp.__main__ import parse_args

    args, message = BAD_OPTIONS[name]
    with pytest.raises(SystemExit) as exc:
        parse_args(args)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    _usage_error(err, message)


@pytest.mark.parametrize("argv, expected", [
    ([], dict(command=None, epochs=50, layers=[128, 64], seed=0, output="bp_digits_model.npz")),
    (["--epochs", "3", "--output", "m.npz", "digits"], dict(command="digits", epochs=3, output="m.npz")),
    (["--epochs", "3", "digits", "--epochs", "4"], dict(epochs=4, batch_size=32)),
    (["xor"], dict(command="xor", epochs=300, seed=0, explain=False)),
    (["--seed", "5", "xor"], dict(command="xor", seed=5, epochs=300)),
    (["--seed", "4", "explain", "--layers", "8"], dict(command="explain", seed=4, layers=[8])),
    (["--threads", "1", "config"], dict(command="config", threads=1)),
])
def test_options_before_the_command_count_for_it(argv, expected):
    from bp.__main__ import parse_args

    args = vars(parse_args(argv))
    assert {k: args[k] for k in expected} == expected
    if args["command"] == "config":
        assert "epochs" not in args
