"""Run bp's tests against the installed bp (a wheel), from outside the source tree.

    python .ci/test_installed.py PROJECT_DIR [pytest arguments...]

tests/, bench/ and benchmarks/ (the tests run the benchmarks' --quick configurations and every
asv benchmark once), README.md and docs/conf.py (tests/test_docs.py runs the README's quick start
and reads numpydoc's checks from the docs' configuration) and pyproject.toml (pytest's settings
only) are copied into a fresh temporary directory and pytest runs there, with
PYTHONPATH unset: no checkout is on sys.path, so `import bp` can only find the installed package,
which is asserted before the tests start. Used by .ci/run and by cibuildwheel's test-command.
"""

import os
import shutil
import subprocess
import sys
import tempfile

CHECK = """
import os, sysconfig
import bp, bpcore
paths = sysconfig.get_paths()
for module in (bp, bpcore):
    where = os.path.realpath(module.__file__)
    roots = [os.path.realpath(paths[k]) for k in ("purelib", "platlib")]
    assert any(where.startswith(r + os.sep) for r in roots) and "site-packages" in where, (
        f"expected {module.__name__} from site-packages. Received: {where}")
print("bp imported from", os.path.dirname(os.path.realpath(bp.__file__)))
bp.show_config()
"""


def main(argv):
    project, pytest_args = os.path.abspath(argv[0]), argv[1:]
    work = tempfile.mkdtemp(prefix="bp-installed-tests-")
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.npz", ".pytest_cache")
    for folder in ("tests", "bench", "benchmarks"):
        shutil.copytree(os.path.join(project, folder), os.path.join(work, folder), ignore=ignore)
    os.mkdir(os.path.join(work, "docs"))
    for name in ("pyproject.toml", "README.md", os.path.join("docs", "conf.py")):
        shutil.copy(os.path.join(project, name), os.path.join(work, name))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", CHECK], cwd=work, env=env, check=True)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args,
                            "tests"], cwd=work, env=env)
    shutil.rmtree(work, ignore_errors=True)
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
