"""python -m bp: bp's main job.

    python -m bp [digits] [options]   train an MLP on scikit-learn's handwritten digits
    mpiexec -n 2 python -m mpi4py -m bp --distributed
                                      the same, data-parallel over MPI ranks (bp.distributed)
    python -m bp xor                  train the XOR network (2-2-1, sigmoid) and show its deltas
    python -m bp config               show how bp was built (OpenMP, BLAS, threads)
    python -m bp explain              count and time naive, forward and backprop gradients
"""

import argparse
import os
import sys
import textwrap
import time

import numpy as np

# The CLI sits on top of the package and is imported by nothing; it may import anything below it.
from .layers import ACTIVATIONS
from .losses import NATURAL_OUTPUT
from .optimizers import OPTIMIZERS


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, received {text!r}")
    return value


def _widths(text):
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 128,64, received {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 128,64, received {text!r}")
    return widths


def _threads(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer (-1 for all cores), received {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("expected a nonzero integer (-1 for all cores), received 0")
    return value


def _make_optimizer(name, lr):
    import bp

    if name == "sgd":
        return bp.SGD(learning_rate=lr or 0.1, momentum=0.9)
    if name == "adamw":
        return bp.AdamW(learning_rate=lr or 1e-3)
    return bp.Adam(learning_rate=lr or 1e-3)


def digits(args):
    """Train on the 8x8 digits that scikit-learn ships (1797 images, 10 classes, no download)."""
    import bp

    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        print("the digits job needs scikit-learn: pip install 'bp[sklearn]'", file=sys.stderr)
        return 2
    started = time.perf_counter()
    comm, say = None, print
    if args.distributed:
        from ._mpi import local_threads, mpi, shard

        try:
            comm = mpi().COMM_WORLD
        except ImportError as err:
            print(f"python -m bp --distributed: {err}", file=sys.stderr)
            return 2
        if comm.Get_rank() != 0:  # every rank trains; rank 0 speaks
            say = lambda *a, **k: None  # noqa: E731
        if args.threads is None:  # its share of the node's cores, not all of them
            bp.set_num_threads(local_threads(comm))
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixel intensities 0..16 -> 0..1
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=args.seed)
    n_train = len(X_train)
    if comm is not None:  # each rank its own contiguous block of the (already shuffled) rows
        mine = shard(n_train, comm)
        X_train, y_train = X_train[mine], y_train[mine]
    layers = [bp.Dense(w, activation="relu") for w in args.layers]
    layers.append(bp.Dense(10, activation="softmax"))
    model = bp.Sequential(layers, dtype=args.dtype, seed=args.seed)
    say(f"digits: {n_train} training and {len(X_test)} test images, 64 features, 10 classes")
    say(f"network 64-{'-'.join(map(str, args.layers))}-10 ({args.dtype}), "
        f"optimizer {args.optimizer}, batch {args.batch_size}, {bp.get_num_threads()} thread(s)")
    if comm is not None:
        say(f"data-parallel over {comm.Get_size()} MPI ranks: batch {args.batch_size} per rank "
            f"(global {args.batch_size * comm.Get_size()})")
    history = model.fit(X_train, y_train, loss="cross_entropy",
                        optimizer=_make_optimizer(args.optimizer, args.learning_rate),
                        epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
                        verbose=args.verbose, comm=comm)
    result = model.evaluate(X_test, y_test)
    per_epoch = np.median(history.epoch_times) if history.epoch_times else float("nan")
    model.save(args.output)  # after a data-parallel fit, rank 0 writes and the others skip
    say(f"test accuracy {result['accuracy']:.4f}  (test loss {result['loss']:.4f})")
    say(f"time per epoch {per_epoch * 1e3:.1f} ms (median over {len(history.epoch_times)} epochs)")
    say(f"model saved to {os.path.abspath(args.output)}")
    if args.plot and (comm is None or comm.Get_rank() == 0):
        try:
            history.plot(args.plot)
        except ImportError as exc:
            print(exc, file=sys.stderr)
            return 2
        say(f"training curves drawn in {os.path.abspath(args.plot)}")
    say(f"total {time.perf_counter() - started:.1f} s")
    return 0


def xor(args):
    """The XOR network: 2 inputs, 2 sigmoid hidden units, 1 sigmoid output."""
    import bp

    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0], dtype=np.float64)
    model = bp.Sequential([bp.Dense(2, activation="sigmoid"), bp.Dense(1, activation="sigmoid")],
                          dtype="float64", seed=args.seed)
    history = model.fit(X, y, loss="mse", optimizer=bp.SGD(learning_rate=2.0, momentum=0.9),
                        epochs=args.epochs, batch_size=4, shuffle=False, verbose=0)
    if getattr(args, "explain", False):
        from .insight import explain_xor

        explain_xor(model, X, y)
        return 0
    f_out = model.predict(X).ravel()
    print(f"XOR 2-2-1 sigmoid, mse, SGD: loss {history.history['loss'][0]:.4f} -> "
          f"{history.history['loss'][-1]:.6f} in {len(history.epoch)} steps")
    for x, p, t in zip(X, f_out, y):
        print(f"  x = {x.astype(int)}  f_out = {p:.4f}  -> {int(p >= 0.5)}  (target {int(t)})")
    print("error signals delta = dL/dz_in of the final step:")
    for i, d in enumerate(model.error_signals):
        name = "delta[O]" if i == len(model) - 1 else f"delta[{i + 1}]"
        print(f"  {name} =\n{textwrap.indent(np.array2string(d, precision=6), '    ')}")
    acc = float(np.mean((f_out >= 0.5) == (y >= 0.5)))
    print(f"accuracy {acc:.0%}")
    return 0


def _explain_options(p):
    """The options of ``python -m bp explain``."""
    p.add_argument("--inputs", type=_positive_int, default=16, help="input width (default 16)")
    p.add_argument("--layers", type=_widths, default=[32, 32],
                   help="hidden widths, comma-separated (default 32,32)")
    p.add_argument("--outputs", type=_positive_int, default=10, help="output width (default 10)")
    p.add_argument("--activation", choices=[a for a in ACTIVATIONS if a != "softmax"],
                   default="tanh", help="hidden activation (default tanh)")
    p.add_argument("--loss", choices=tuple(NATURAL_OUTPUT), default="cross_entropy",
                   help="cross_entropy (softmax output, default), binary_cross_entropy "
                        "(sigmoid), mse (identity)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="samples N (default 16)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the network's dtype (default float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights (default 0)")
    p.add_argument("--diagnose", action="store_true",
                   help="also print the per-layer diagnosis and per-sample gradient norms")


def explain(args):
    """python -m bp explain: bp.explain on a random batch through a small network."""
    import bp

    rng = np.random.default_rng(args.seed)
    N = args.batch_size
    X = rng.standard_normal((N, args.inputs))
    if args.loss == "cross_entropy":
        y = rng.integers(0, args.outputs, N)
    elif args.loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (N, args.outputs)).astype(float)
    else:
        y = rng.standard_normal((N, args.outputs))
    layers = [bp.Dense(w, activation=args.activation) for w in args.layers]
    layers.append(bp.Dense(args.outputs, activation=NATURAL_OUTPUT[args.loss]))
    model = bp.Sequential(layers, dtype=args.dtype, seed=args.seed)
    try:
        result = bp.explain(model, X, y, loss=args.loss)
    except ValueError as err:
        print(f"python -m bp explain: {err}", file=sys.stderr)
        return 2
    print(result)
    if args.diagnose:
        print()
        print("Diagnosis (model.diagnose):")
        print(model.diagnose(X, y, loss=args.loss))
        norms = model.per_sample_gradient_norms(X, y, loss=args.loss)
        total = np.sqrt((norms ** 2).sum(axis=1))
        print(f"per-sample gradient norms (model.per_sample_gradient_norms): "
              f"min {total.min():.3g}, median {np.median(total):.3g}, max {total.max():.3g}")
    return 0 if result.agree else 1


def config(args):
    """python -m bp config: bp.show_config()."""
    import bp

    bp.show_config()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=_threads, default=None,
                        help="threads for bp's kernels and BLAS (default: physical cores or "
                             "OMP_NUM_THREADS; -1 all)")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("digits", help="train on scikit-learn's digits (the default)")
    _digits_options(p)
    p = sub.add_parser("xor", help="train the XOR network and print its error signals")
    p.add_argument("--epochs", type=_positive_int, default=300,
                   help="full-batch SGD steps (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    p.add_argument("--explain", action="store_true",
                   help="show the final step in the notation of the mathematics: z_in, z_out, delta, "
                        "gradients")
    sub.add_parser("config", help="show how bp was built")
    _explain_options(sub.add_parser(
        "explain", help="every gradient three ways (naive, forward caching, backpropagation): "
                        "multiply-adds, times, and the check that they agree"))
    _digits_options(parser)  # `python -m bp --epochs 10` means the digits job
    return parser


def _digits_options(p):
    p.add_argument("--layers", type=_widths, default=[128, 64],
                   help="hidden layer widths, comma-separated (default 128,64)")
    p.add_argument("--epochs", type=_positive_int, default=50, help="epochs (default 50)")
    p.add_argument("--batch-size", type=_positive_int, default=32,
                   help="rows per step (default 32; per rank with --distributed)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="the optimizer (default adam; sgd has momentum 0.9)")
    p.add_argument("--learning-rate", type=_positive_float, default=None,
                   help="the learning rate (default 1e-3 for adam and adamw, 0.1 for sgd)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the network's dtype (default float32)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the train/test split, the weights and the shuffles (default 0)")
    p.add_argument("--output", default="bp_digits_model.npz",
                   help="where to save the model (default bp_digits_model.npz)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 silent, 1 a progress bar, 2 a line per epoch (default 1)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="draw the training curves (History.plot) into this file (needs "
                        "matplotlib: pip install 'bp[plot]')")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: launch with mpiexec -n N python -m mpi4py -m bp "
                        "--distributed (each rank trains on its share of the rows; rank 0 prints "
                        "and saves)")


def parse_args(argv=None):
    """The parsed command line, every default filled in by the command's own parser.

    argparse lets a subcommand's defaults overwrite what was given before the subcommand, so
    `python -m bp --epochs 3 --output m.npz digits` trained 50 epochs into bp_digits_model.npz.
    Here the defaults are taken out of every parser before parsing and filled in after it: an
    option given before the command counts for it when the command takes that option
    (`--seed 3 xor`), and is a usage error when it does not (`--layers 16 xor`).
    """
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    defaults = {}
    for name, p in [(None, parser), *commands.choices.items()]:
        defaults[name] = {}
        for action in p._actions:
            if (action.dest not in ("help", "command", "threads")
                    and action.default is not argparse.SUPPRESS):
                defaults[name][action.dest] = action.default
                action.default = argparse.SUPPRESS
    args = parser.parse_args(argv)
    command = args.command or "digits"
    takes = defaults[command]
    for dest in defaults[None]:
        if hasattr(args, dest) and dest not in takes:
            parser.error(f"argument --{dest.replace('_', '-')}: an option of the digits job, "
                         f"which '{command}' does not take")
    for dest, value in takes.items():
        if not hasattr(args, dest):
            setattr(args, dest, list(value) if isinstance(value, list) else value)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import bp

    if args.threads is not None:
        bp.set_num_threads(args.threads)
    command = {"xor": xor, "config": config, "explain": explain}.get(args.command, digits)
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
