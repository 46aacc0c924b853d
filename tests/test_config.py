"""How bp was built and how it will run: bp.show_config and bp._config.build_info.

CI builds with BP_REQUIRE_OPENMP=1 (setup.py then refuses to build without OpenMP) and runs the
tests under the same switch: there, a serial build must fail here, never pass the thread tests
vacuously.
"""

import io
import os
import re

import numpy as np
import scipy

import bp
from bp import _config
from bpcore._openmp import omp_max_threads, openmp_enabled


def test_openmp_is_on_whenever_the_build_requires_it():
    assert _config.build_info()["openmp"] is openmp_enabled()
    if os.environ.get("BP_REQUIRE_OPENMP") == "1":
        assert openmp_enabled(), "BP_REQUIRE_OPENMP=1, but bpcore was built without OpenMP"


def test_build_info():
    info = _config.build_info()
    assert {"bp", "python", "numpy", "scipy", "openmp", "omp_max_threads", "bp_num_threads",
            "small_gemm_threshold", "gemm", "blas", "bpcore"} <= set(info)
    assert info["bp"] == bp.__version__ and info["numpy"] == np.__version__
    assert info["scipy"] == scipy.__version__
    assert info["omp_max_threads"] == omp_max_threads()
    assert info["bp_num_threads"] == bp.get_num_threads()
    with bp.num_threads(1):
        assert _config.build_info()["bp_num_threads"] == 1
    assert os.path.isfile(info["bpcore"])
    assert info["blas"] and all(lib["library"] for lib in info["blas"])  # scipy's BLAS, found


def test_show_config_prints_the_build_info(capsys):
    info = _config.build_info()
    buffer = io.StringIO()
    assert bp.show_config(file=buffer) is None
    text = buffer.getvalue()
    assert capsys.readouterr() == ("", "")  # all of it went to the file
    assert text.startswith(f"bp {bp.__version__}  (python {info['python']}, numpy {np.__version__}")
    on = "on" if info["openmp"] else "OFF (serial build)"
    assert re.search(rf"^  OpenMP kernels +: {re.escape(on)}$", text, re.M)
    assert re.search(rf"^  threads \(bp\) +: {info['bp_num_threads']}  \(omp_get_max_threads: "
                     rf"{info['omp_max_threads']}\)$", text, re.M)
    assert len(re.findall(r"^  BLAS +: ", text, re.M)) == len(info["blas"])
    # and without a file, to stdout
    bp.show_config()
    assert capsys.readouterr().out == text


def test_kernel_paths_name_the_body_this_cpu_runs(monkeypatch):
    import bpcore
    from bpcore import _cpu

    info = _config.build_info()
    rows = info["kernel_paths"]["activation rows (tanh, softmax's exp)"]
    assert rows == _cpu.activation_rows_path()
    if "default clone" in rows or "x86-64-v3 clone" in rows:  # GCC on x86-64 Linux
        assert ("x86-64-v3 clone" in rows) is _cpu.x86_64_v3() is info["cpu_x86_64_v3"]
    # a module with bodies of its own registers them, and show_config prints every entry
    monkeypatch.setitem(bpcore.KERNEL_PATHS, "test kernel", "test path")
    buffer = io.StringIO()
    bp.show_config(file=buffer)
    paths = re.findall(r"^  kernel path +: (.*)$", buffer.getvalue(), re.M)
    assert "test kernel: test path" in paths
    assert len(paths) == len(bpcore.KERNEL_PATHS)
