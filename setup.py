"""Build bpcore, bp's Cython kernels.

Everything about how the kernels are compiled is decided here, in one place:

* OpenMP is probed by compiling, linking and running a tiny program with ``-fopenmp``.
  If that fails the kernels are built serially, with a loud warning (``BP_OPENMP=0`` forces it).
  ``BP_REQUIRE_OPENMP=1`` makes a failed probe a build error instead (CI sets it, so that the
  thread tests never pass vacuously on a serial build).
* Cython directives: language_level 3, no bounds/wraparound/initialization checks, C division.
  ``BP_DEBUG_CYTHON=1`` turns the checks back on for debugging (scikit-learn's
  ``SKLEARN_ENABLE_DEBUG_CYTHON_DIRECTIVES`` idea).
* ``-O3`` but never ``-ffast-math`` (it sets flush-to-zero for the whole process and deletes
  ``isnan`` checks) and never ``-march=native`` (a wheel must run on other CPUs).
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n);
        return n > 0 ? 0 : 1;
    }
    """
)


def _openmp_flags(compiler):
    """Return the (compile, link) flags for OpenMP, or None if the toolchain cannot do it."""
    if os.environ.get("BP_OPENMP", "1") == "0":
        return None
    if sys.platform == "win32":
        flags = (["/openmp"], [])
    elif sys.platform == "darwin":
        flags = (["-Xpreprocessor", "-fopenmp"], ["-lomp"])
    else:
        flags = (["-fopenmp"], ["-fopenmp"])
    tmp = tempfile.mkdtemp(prefix="bp-openmp-probe-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags[0])
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objs, exe, extra_postargs=flags[1])
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        if out.returncode != 0 or int(out.stdout.strip() or 0) < 1:
            return None
    except Exception:  # any failure to compile, link or run means: no OpenMP
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return flags


class BuildExt(build_ext):
    def run(self):
        super().run()
        # Also leave the compiled modules next to their sources. `python -m bp` and pytest run
        # from the checkout put the checkout first on sys.path, so its bp/ and bpcore/ shadow the
        # installed ones; with the extensions copied in, the checkout is importable too (the
        # same code and the same binaries as the installed package). Build outputs are ignored
        # by git.
        if not self.inplace:
            self.copy_extensions_to_source()

    def build_extensions(self):
        flags = _openmp_flags(self.compiler)
        if flags is None and os.environ.get("BP_REQUIRE_OPENMP", "0") == "1":
            raise RuntimeError(
                "BP_REQUIRE_OPENMP=1: bpcore must be built with OpenMP, but "
                + ("BP_OPENMP=0 turns it off" if os.environ.get("BP_OPENMP", "1") == "0" else
                   "the compiler could not build, link and run an OpenMP program (-fopenmp)"))
        if flags is None:
            bar = "*" * 78
            print(
                f"\n{bar}\n* bp: OpenMP is off (BP_OPENMP=0, or the compiler cannot build, link "
                "and run"
                f"\n* an OpenMP program): bpcore is built SERIAL."
                f"\n* Kernels will use one thread (BLAS may still use more).\n{bar}\n",
                file=sys.stderr,
            )
        for ext in self.extensions:
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
        super().build_extensions()


def extensions():
    import numpy
    from Cython.Build import cythonize

    debug = os.environ.get("BP_DEBUG_CYTHON", "0") == "1"
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "nonecheck": debug,
        "cdivision": True,
        "cpow": True,
    }
    # -fno-trapping-math: lets gcc vectorise loops with selects (tanh's two branches, relu) by
    # assuming no FP exception *traps* are enabled (NumPy enables none). -fno-math-errno: sqrt
    # need not set errno for a negative argument, so it becomes one instruction and Adam's update
    # loop vectorises. Unlike -ffast-math neither changes a result, NaN and inf keep their
    # semantics, and no flush-to-zero mode is set.
    compile_args = (["-O0", "-g"] if debug
                    else ["-O3", "-fno-trapping-math", "-fno-math-errno"])
    if sys.platform == "win32":
        compile_args = ["/O2"]
    exts = [
        Extension(
            "bpcore." + os.path.splitext(os.path.basename(path))[0],
            [path],
            extra_compile_args=list(compile_args),
            extra_link_args=[],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            # _network reads array pointers through NumPy's C API (cheaper than a memoryview;
            # measured: see bench/README.md, Python call costs)
            include_dirs=[numpy.get_include()],
        )
        for path in sorted(glob.glob(os.path.join("bpcore", "*.pyx")))
    ]
    # The generated .c files are reused when they are newer than every source they come from
    # (bpcore's .pyx, .pxd and this file, which holds the directives). cythonize alone would
    # regenerate them in every fresh build environment (pip's build isolation), because it also
    # compares them with Cython's and NumPy's .pxd files, which each environment installs anew;
    # and a regenerated .c makes setuptools compile the extension again. So a second
    # `pip install .` (the README's second command) or `python -m build --wheel` after it reuses
    # the compiled extensions in build/. BP_FORCE_CYTHONIZE=1 regenerates them anyway.
    sources = glob.glob(os.path.join("bpcore", "*.p[yx]*")) + [os.path.abspath(__file__)]
    newest = max(os.path.getmtime(p) for p in sources)
    generated = [ext.sources[0][:-len(".pyx")] + ".c" for ext in exts]
    if (os.environ.get("BP_FORCE_CYTHONIZE", "0") != "1" and not debug
            and all(os.path.exists(c) and os.path.getmtime(c) >= newest for c in generated)):
        for ext, c in zip(exts, generated, strict=True):
            ext.sources = [c]
        return exts
    return cythonize(exts, compiler_directives=directives, annotate=debug)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
