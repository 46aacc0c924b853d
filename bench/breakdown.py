"""Where one training step's time goes, per pass and per layer: each kernel of the step against
its matrix product alone.

    python bench/breakdown.py --shape mnist --dtype float32 --threads 1
    python bench/breakdown.py --quick           a tiny configuration (what the tests run)

The step is the one bench/train_step.py times (same shapes), split into the kernels the engine
runs, in its order: per layer the forward pass (z_out_prev @ W + b, then sigma), the loss and the
output error signal, then from the output back per layer the gradients (z_out_prev.T @ delta,
then the bias sum) and the error signal of the layer below ((delta @ W.T) * sigma'), and the SGD
update of the flat parameters. Each kernel is timed alone, beside its matrix product alone (the
same BLAS call into a preallocated output); the difference is the kernel's elementwise work and
its call. The whole step (the engine's train_step) is timed in the same interleaved rounds, so the
table shows what the step costs beyond the sum of its kernels. All in one process, interleaved,
medians (bench/_harness.py).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bp and bpcore from this tree, not an installed copy

from _harness import compare, machine, machine_line, markdown_table, us  # noqa: E402
from api import compiled_step  # noqa: E402
from train_step import LR, QUICK_SHAPES, SHAPES, make_data, output_activation  # noqa: E402

import bp  # noqa: E402
import bpcore  # noqa: E402
from bpcore import _blas, _dense_forward, _error_signal, _gradients, _loss, _param_update  # noqa: E402


def spec(fused, dtype):
    return fused[{"float32": "float", "float64": "double"}[dtype]]


def candidates(shape, dtype, threads):
    """{name: callable}: the step, then each kernel and each product alone, in the step's order."""
    widths, batch, act, loss = shape
    bp.set_num_threads(threads)
    layers = [bp.Dense(u, activation=act) for u in widths[1:-1]]
    layers.append(bp.Dense(widths[-1], activation=output_activation(shape)))
    model = bp.Sequential(layers, dtype=dtype, seed=0, input_dim=widths[0]).build()
    model.compile(loss=loss)
    X, Y = make_data(shape, dtype)
    step = compiled_step(model, X, Y, LR)  # holds BLAS to fit's thread count for this step
    nt = model._passes.step_threads(batch, threads)
    passes = model._passes
    ws = passes.new_workspace(batch)
    params, grads = passes.params, passes.grads
    Wb = passes.param_views
    gWb = passes.grad_views
    acts = [bpcore.ACTIVATIONS[layer.activation] for layer in layers]
    gemm = spec(_blas._gemm, dtype)
    fwd, gra = spec(_dense_forward.dense_forward, dtype), spec(_gradients.gradients, dtype)
    hid, outd = spec(_error_signal.hidden_delta, dtype), spec(_error_signal.output_delta, dtype)
    lossv, sgd = spec(_loss.loss_value, dtype), spec(_param_update.sgd_update, dtype)
    code = bpcore.LOSSES[loss]
    scale = 1.0 / batch if loss == "cross_entropy" else 1.0 / (batch * widths[-1])
    passes.backward(X, Y, None, ws, loss, scale, 0.0, grads, nt)  # realistic values everywhere
    z_prev = [X] + ws.z_out[:-1]
    tau = bpcore.ACTIVATIONS[layers[-1].activation]
    cands = {"whole step (engine)": step}
    for i, (W, b) in enumerate(Wb):
        cands[f"L{i} forward"] = (lambda i=i, W=W, b=b: fwd(
            z_prev[i], W, b, ws.z_in[i], ws.z_out[i], acts[i], 0.0, nt))
        cands[f"L{i} forward gemm"] = (lambda i=i, W=W: gemm(
            False, False, 1.0, z_prev[i], W, 0.0, ws.z_in[i], "blas"))
    cands["loss + output delta"] = lambda: (
        lossv(ws.z_in[-1], ws.z_out[-1], Y, None, code, scale, ws.per_sample, nt),
        outd(ws.z_in[-1], ws.z_out[-1], Y, None, code, tau, 0.0, scale, ws.delta[-1], nt))
    for i in range(len(Wb) - 1, -1, -1):
        gW, gb = gWb[i]
        cands[f"L{i} gradients"] = (lambda i=i, gW=gW, gb=gb: gra(
            z_prev[i], ws.delta[i], 0.0, gW, gb, nt))
        cands[f"L{i} gradients gemm"] = (lambda i=i, gW=gW: gemm(
            True, False, 1.0, z_prev[i], ws.delta[i], 0.0, gW, "blas"))
        if i > 0:
            W = Wb[i][0]
            cands[f"L{i - 1} error signal"] = (lambda i=i, W=W: hid(
                ws.delta[i], W, ws.z_in[i - 1], ws.z_out[i - 1], acts[i - 1], 0.0,
                ws.delta[i - 1], nt))
            cands[f"L{i - 1} error signal gemm"] = (lambda i=i, W=W: gemm(
                False, True, 1.0, ws.delta[i], W, 0.0, ws.delta[i - 1], "blas"))
    # a tiny rate keeps the parameters where they are over the many timed calls
    cands["SGD update"] = lambda: sgd(grads, 1e-12, 0.0, False, 0.0, 1.0, params, None, nt)
    return cands


def run(args):
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rows = []
    for name in args.shapes:
        shape = shapes[name]
        for dtype in args.dtypes:
            for threads in args.threads:
                cands = candidates(shape, dtype, threads)
                res = compare(cands, repeat=args.repeat, target_ns=2_000_000)
                med = {k: v["median"] for k, v in res.items()}
                kernels = [k for k in med if k != "whole step (engine)" and not k.endswith("gemm")]
                total = sum(med[k] for k in kernels)
                step = med["whole step (engine)"]
                for k in kernels:
                    g = med.get(k + " gemm")
                    rows.append([name, dtype, threads, k, us(med[k]),
                                 "" if g is None else us(g),
                                 "" if g is None else us(med[k] - g),
                                 f"{100 * med[k] / step:.1f}%"])
                gemms = sum(v for k, v in med.items() if k.endswith("gemm"))
                rows.append([name, dtype, threads, "sum of the kernels", us(total), us(gemms),
                             us(total - gemms), f"{100 * total / step:.1f}%"])
                rows.append([name, dtype, threads, "whole step (engine)", us(step), "", "",
                             "100%"])
    table = markdown_table(["shape", "dtype", "thr", "pass", "median us", "its gemm us",
                            "elementwise + call us", "% of the step"], rows)
    return machine_line(machine()) + "\n\n" + table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["mnist", "deep"])
    ap.add_argument("--dtypes", nargs="+", default=["float32"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.shapes, args.repeat = ["tiny"], 3
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
