"""The house rules of the import graph (README "Architecture"), read from the source.

Imports inside functions count: they hide a circle from Python, not from a reader.
"""

import ast
from pathlib import Path

import pytest

import bp
import bpcore

# The sources of the bp that is imported: the checkout's, or the installed package's when CI
# tests a wheel from outside the source tree (the wheel ships the .py, .pyx and .pxd files).
BP = Path(bp.__file__).resolve().parent
BPCORE = Path(bpcore.__file__).resolve().parent
MODULES = sorted(p.stem for p in BP.glob("*.py"))


def _bp_imports(path):
    """The bp modules one file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:           # from ._passes import x
                found.add(node.module.split(".")[0])
            elif node.level == 1:                          # from . import _passes, losses
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.split(".")[0] == "bp":
                parts = node.module.split(".")            # from bp._passes import x
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("bp."))      # import bp.losses
    return found & set(MODULES)


GRAPH = {name: _bp_imports(BP / f"{name}.py") - {name} for name in MODULES}


def _reachable(start):
    seen, todo = set(), [start]
    while todo:
        for dep in GRAPH[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_graph_reader_sees_the_imports_it_must():
    # the reader itself could miss a form of import and pass everything: pin three known edges
    assert "_training" in GRAPH["sequential"]
    assert "_passes" in GRAPH["_training"]
    assert "losses" in GRAPH["_passes"]


@pytest.mark.parametrize("name", MODULES)
def test_no_module_of_bp_reaches_itself_through_its_imports(name):
    assert name not in _reachable(name), f"bp/{name}.py is on an import circle"


def test_the_cli_and_the_package_root_are_imported_by_nothing():
    for top in ("__main__", "__init__"):
        users = sorted(m for m, deps in GRAPH.items() if top in deps)
        assert not users, f"bp/{top}.py is imported by {users}: the CLI and the root sit on top"


def test_the_leaf_utilities_import_no_other_part_of_bp():
    for leaf in ("_validation", "_interrupt", "_io", "_reference", "_threads", "_progress"):
        assert not GRAPH[leaf], f"bp/{leaf}.py imports {sorted(GRAPH[leaf])}"


def test_bpcore_imports_nothing_from_bp():
    # the kernels and the engine take arrays, scalars and kind codes (like scikit-learn's
    # _sgd_fast.pyx, which never imports the estimator)
    for path in sorted(BPCORE.glob("*.p[yx]*")):
        text = path.read_text()
        for line in text.splitlines():
            words = line.split()
            assert not (words[:2] in (["import", "bp"], ["from", "bp"])
                        or (len(words) > 1 and words[0] in ("import", "from")
                            and words[1].startswith("bp."))), f"{path.name}: {line.strip()}"


def _docstring_lines(tree):
    """The line numbers the docstrings under `tree` (module, classes, functions) occupy."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def test_no_module_of_bp_over_600_lines_and_sequential_under_400():
    # The caps measure code, the part that splits along seams: docstrings (numpydoc's
    # Parameters, Returns and Examples, which the API reference renders) are not counted.
    for name in MODULES:
        text = (BP / f"{name}.py").read_text()
        n_lines = text.count("\n") - len(_docstring_lines(ast.parse(text)))
        assert n_lines <= 600, f"bp/{name}.py has {n_lines} lines of code: split it along a seam"
    tree = ast.parse((BP / "sequential.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Sequential"]
    size = cls.end_lineno - cls.lineno + 1 - len(_docstring_lines(cls))
    assert size < 400, (f"the Sequential class has {size} lines of code: hand work to the modules "
                        "below it")
