"""Timing helpers for bp's benchmarks: in-process, time.perf_counter_ns, warm-up, repeats, and the
median and the minimum of the per-call times.

Shared machines are noisy, so candidates that are compared are timed *interleaved* (one sample of
each in turn, the order rotating every round) so that a burst of load hits both alike, and the
median, not the mean, is reported. The minimum is the best case the machine allowed.
"""

import json
import os
import platform
import statistics
import time

_perf_ns = time.perf_counter_ns


def calls_per_sample(fn, target_ns=200_000, max_calls=100_000):
    """How many back-to-back calls make one sample last about target_ns (timer noise << sample)."""
    fn()
    n = 1
    while True:
        t0 = _perf_ns()
        for _ in range(n):
            fn()
        elapsed = _perf_ns() - t0
        if elapsed >= target_ns or n >= max_calls:
            return n
        n = min(max_calls, max(2 * n, int(n * 1.2 * target_ns / max(elapsed, 1))))


def sample(fn, number):
    """One sample: the time per call (ns) of `number` back-to-back calls."""
    t0 = _perf_ns()
    for _ in range(number):
        fn()
    return (_perf_ns() - t0) / number


def compare(candidates, repeat=7, warmup=2, target_ns=200_000, settle_s=0.0):
    """Time several callables interleaved.

    Returns {name: {"median": ns, "min": ns, "samples": [..]}}.

    candidates: {name: zero-argument callable}. Each gets `warmup` untimed calls, then `repeat`
    rounds; in each round every candidate takes one sample, in an order that rotates.
    settle_s: a pause before each sample (after an untimed warm-up call). NumPy and scipy each load
    their own OpenBLAS, whose idle workers spin for ~0.1 s after a call before they sleep: without
    the pause, one library's spinning pool steals the cores the other one's threads are timed on.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    number = {name: calls_per_sample(candidates[name], target_ns) for name in names}
    samples = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if settle_s:
                time.sleep(settle_s)
                candidates[name]()
            samples[name].append(sample(candidates[name], number[name]))
    return {name: {"median": statistics.median(s), "min": min(s), "samples": s}
            for name, s in samples.items()}


def markdown_table(header, rows):
    """A GitHub markdown table from a header and rows of cells (already formatted)."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    def line(row):
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def us(ns):
    """ns -> a compact microsecond string."""
    v = ns / 1000
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


VECTOR_FLAGS = ("avx2", "fma", "avx512f")


def machine():
    """What a timing depends on, as a dict: CPU model, its vector extensions (from /proc/cpuinfo's
    flags), logical CPUs, the load average when asked, and the BLAS kernel threadpoolctl sees in
    this process (internal_api, version, architecture, threads)."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{d['internal_api']} {d.get('version')} {d.get('architecture')} "
                f"({os.path.basename(d['filepath']).split('-')[0]})"
                for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        blas = ["threadpoolctl not installed"]
    return {"cpu": cpu, "vector": [f for f in VECTOR_FLAGS if f in flags] or ["none of " +
                                                                             "/".join(VECTOR_FLAGS)],
            "logical_cpus": os.cpu_count(), "blas": "; ".join(blas) or "none loaded",
            "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def machine_line(info):
    """One line for the top of a table: CPU, vector extensions, BLAS kernel, load average."""
    load = "" if info.get("load") is None else (
        "; load average " + " ".join(f"{x:.2f}" for x in info["load"]))
    return (f"{info['cpu']} ({'/'.join(info['vector'])}), {info['logical_cpus']} logical CPUs; "
            f"BLAS: {info['blas']}{load}; {info['date']}")


def write_outputs(out, stem, table, results):
    """Print the markdown table and write it and the raw results to out/stem.md and .json."""
    os.makedirs(out, exist_ok=True)
    print(table)
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(results, f, indent=1)
