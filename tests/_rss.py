"""Shared by the streaming tests: the peak resident memory of a fit on a large memory-mapped file,
measured in a fresh process (a test process's own peak would hide it)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# argv: path n d. Writes an (n, d) float32 .npy a few MB at a time (never whole in memory),
# streams in 4 MB blocks, and defines peak_mb(); the caller's part fits and prints
# "peak-before peak-after".
_PREAMBLE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import bp
    from bp import _streaming

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    path, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _streaming.BLOCK_BYTES = 4 << 20
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:  # the file, written a few MB at a time
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for start in range(0, n, 8192):
            f.write(rng.standard_normal((min(8192, n - start), d)).astype(np.float32).tobytes())
""")


def peak_growth_mb(path, n, d, fit_part):
    """(peak MB before, peak MB after) that `fit_part` (dedented source that may use path, n, d,
    rng, peak_mb and np, bp) prints, run after the file is written."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    script = _PREAMBLE + textwrap.dedent(fit_part)
    result = subprocess.run([sys.executable, "-c", script, str(path), str(n), str(d)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    before, after = map(float, result.stdout.split())
    return before, after
