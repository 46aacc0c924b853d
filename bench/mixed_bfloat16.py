"""dtype="mixed_bfloat16" (issue 24): the fit step and predict against float32 and the peers.

Step (one optimizer step of plain SGD on one batch, the engine's train_step as bench/train_step.py
times it), per network and thread count, candidates timed interleaved (one sample of each in
turn, the order rotating), medians of wall time and of process CPU time:

    bp f32        bp's float32 step
    bp bf16       the same model in mixed_bfloat16 on the CPU's bf16 path
    bp fallback   mixed_bfloat16 forced onto the portable fallback (sgemm on bf16-rounded copies)
    torch bf16    PyTorch's step with forward and loss under torch.autocast("cpu", torch.bfloat16),
                  backward and optimizer step outside it (as its autocast docs write it)

and the bf16 limit: the step's matrix products (2 for the first layer, 3 for the others) at the
measured vdpbf16ps peak times the thread count; bp bf16's % of it is limit time / step time.

Predict: 4096 rows in mixed_bfloat16 against bp float32 and ONNX Runtime's float32 session of the
same network, and one row in mixed_bfloat16 against one row in float32.

Usage: python bench/mixed_bfloat16.py [--repeat 7] [--threads 1 2] [--nets mnist deep wide]
Writes a markdown report on stdout (the figures in bench/README.md come from it).
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _harness import machine, machine_line  # noqa: E402
from api import compiled_step  # noqa: E402
from bf16_gemm import dot_peak  # noqa: E402

import bp  # noqa: E402
from bpcore import _bf16  # noqa: E402

NETS = {
    "mnist": ([784, 256, 128, 10], 128, "relu", "cross_entropy"),
    "deep": ([256] + [256] * 16 + [10], 64, "tanh", "cross_entropy"),
    "wide": ([1024, 4096, 4096, 1024], 256, "relu", "mse"),
}
LR = 0.01


def step_flops(widths, batch):
    return sum((2 if i == 0 else 3) * 2 * batch * widths[i] * widths[i + 1]
               for i in range(len(widths) - 1))


def data(shape, rows=None, seed=0):
    widths, batch, _, loss = shape
    rows = rows or batch
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, widths[0])).astype(np.float32)
    if loss == "cross_entropy":
        return X, rng.integers(0, widths[-1], rows)
    return X, rng.uniform(0, 1, (rows, widths[-1])).astype(np.float32)


def bp_model(shape, dtype):
    widths, _, act, loss = shape
    out = "softmax" if loss == "cross_entropy" else act
    layers = [bp.Dense(u, activation=act) for u in widths[1:-1]]
    layers.append(bp.Dense(widths[-1], activation=out))
    model = bp.Sequential(layers, dtype=dtype, seed=0, input_dim=widths[0]).build()
    model.compile(loss=loss)
    return model


def bp_step(shape, dtype, path="auto"):
    _bf16.set_path(path)   # the engine keeps the path it was built on
    try:
        X, y = data(shape)
        return compiled_step(bp_model(shape, dtype), X, y, LR)
    finally:
        _bf16.set_path("auto")


def torch_autocast_step(shape, threads):
    import torch

    torch.set_num_threads(threads)
    widths, _, act, loss = shape
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    mods = []
    for i in range(len(widths) - 1):
        mods.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2 or loss == "mse":
            mods.append(acts[act]())
    net = torch.nn.Sequential(*mods)
    X, y = data(shape)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(y)
    crit = torch.nn.CrossEntropyLoss() if loss == "cross_entropy" else torch.nn.MSELoss()
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = crit(net(Xt), Yt)
        value.backward()
        opt.step()

    return step


def interleaved(candidates, repeat, target_s=0.2):
    """{name: (median wall s, median process CPU s)} per call, one sample of each in turn."""
    number = {}
    for name, fn in candidates.items():
        fn()
        fn()
        t0 = time.perf_counter()
        fn()
        number[name] = max(1, int(target_s / max(time.perf_counter() - t0, 1e-7)))
    wall = {name: [] for name in candidates}
    cpu = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, k = candidates[name], number[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(k):
                fn()
            wall[name].append((time.perf_counter() - w0) / k)
            cpu[name].append((time.process_time() - c0) / k)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]))
            for name in names}


def ms(s):
    return f"{s * 1e3:.3f}"


def step_table(nets, threads_list, repeat, peak, have_torch):
    lines = ["| network | threads | bp f32 ms | bp bf16 ms | bp fallback ms | torch bf16 ms | "
             "bf16 limit ms | bf16 / f32 (wall, cpu) | bf16 / torch (wall, cpu) | "
             "fallback cost vs f32 (wall, cpu) | bp bf16 % of limit (wall, cpu) |",
             "|---" * 11 + "|"]
    for threads in threads_list:
        bp.set_num_threads(threads)
        for name in nets:
            shape = NETS[name]
            cands = {"f32": bp_step(shape, "float32"), "bf16": bp_step(shape, "mixed_bfloat16"),
                     "fallback": bp_step(shape, "mixed_bfloat16", "fallback")}
            if have_torch:
                cands["torch"] = torch_autocast_step(shape, threads)
            t = interleaved(cands, repeat)
            limit = step_flops(*shape[:2]) / (peak * 1e9 * threads) if peak else float("nan")
            tw = t.get("torch", (float("nan"),) * 2)

            def pair(a, b):
                return f"{a[0] / b[0]:.2f}x, {a[1] / b[1]:.2f}x"

            lines.append(
                f"| {name} | {threads} | {ms(t['f32'][0])} | {ms(t['bf16'][0])} | "
                f"{ms(t['fallback'][0])} | {ms(tw[0])} | {ms(limit)} | "
                f"{pair(t['f32'], t['bf16'])} | {pair(tw, t['bf16'])} | "
                f"{pair(t['fallback'], t['f32'])} | "
                f"{100 * limit / t['bf16'][0]:.0f}%, {100 * limit * threads / t['bf16'][1]:.0f}% |")
            print(lines[-1], flush=True)
    return lines


def predict_table(nets, threads_list, repeat, have_ort):
    lines = ["| network | threads | rows | bp f32 ms | bp bf16 ms | onnxrt f32 ms | "
             "bf16 / f32 | bf16 / onnxrt |", "|---" * 8 + "|"]
    for threads in threads_list:
        bp.set_num_threads(threads)
        for name in nets:
            shape = NETS[name]
            f32, mixed = bp_model(shape, "float32"), bp_model(shape, "mixed_bfloat16")
            for rows in (4096, 1):
                X, _ = data(shape, rows)
                cands = {"f32": lambda m=f32, x=X: m.predict(x),
                         "bf16": lambda m=mixed, x=X: m.predict(x)}
                if have_ort and rows > 1:
                    import onnxruntime as ort
                    options = ort.SessionOptions()
                    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                    session = ort.InferenceSession(bp.to_onnx(f32).SerializeToString(), options,
                                                   providers=["CPUExecutionProvider"])
                    cands["ort"] = lambda s=session, x=X: s.run(None, {"X": x})[0]
                t = interleaved(cands, repeat, 0.1)
                o = t.get("ort", (float("nan"),) * 2)
                lines.append(f"| {name} | {threads} | {rows} | {ms(t['f32'][0])} | "
                             f"{ms(t['bf16'][0])} | {ms(o[0])} | "
                             f"{t['f32'][0] / t['bf16'][0]:.2f}x | {o[0] / t['bf16'][0]:.2f}x |")
                print(lines[-1], flush=True)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--no-predict", action="store_true")
    args = parser.parse_args(argv)
    have_torch = importlib.util.find_spec("torch") is not None
    have_ort = importlib.util.find_spec("onnxruntime") is not None
    print(machine_line(machine()))
    print(f"\nbf16 path: {_bf16.kernel_path()}; load average {os.getloadavg()}")
    peak = dot_peak()
    print(f"vdpbf16ps peak, 1 thread: {peak:.0f} GFLOP/s\n" if peak else "no vdpbf16ps\n")
    print("\n".join(step_table(args.nets, args.threads, args.repeat, peak, have_torch)))
    if not args.no_predict:
        print()
        print("\n".join(predict_table(args.nets, args.threads, args.repeat, have_ort)))


if __name__ == "__main__":
    main()
