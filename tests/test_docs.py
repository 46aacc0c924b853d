"""The public API's docstrings: numpydoc's validation and an example for every public name.

The checks are the ones the docs build applies (``numpydoc_validation_checks`` in docs/conf.py,
read from there so the two cannot drift); this test runs them without Sphinx, over every name in
the ``__all__`` of bp, bp.sklearn, bp.distributed and bp.kernels and over each public class's own
methods and properties. On top, every public class and function has an Examples section (EX01),
and the examples run as doctests: ``python -m pytest --doctest-modules bp`` (.ci/docs).
"""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

try:  # the docs extra; without it the numpydoc tests skip and the others still run
    import numpydoc.validate as numpydoc_validate
except ImportError:
    numpydoc_validate = None
needs_numpydoc = pytest.mark.skipif(numpydoc_validate is None, reason="needs numpydoc (docs extra)")
pytest.importorskip("sklearn")  # bp.sklearn is part of the public API

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("bp", "bp.sklearn", "bp.distributed", "bp.kernels")


def _configured_checks():
    """The codes numpydoc_validation_checks in docs/conf.py selects: a literal set of codes, or
    numpydoc's {"all", <codes left out>}."""
    tree = ast.parse((ROOT / "docs" / "conf.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "numpydoc_validation_checks"):
            codes = set(ast.literal_eval(node.value))
            if "all" in codes and numpydoc_validate is not None:
                return set(numpydoc_validate.ERROR_MSGS) - codes
            return codes
    raise AssertionError("docs/conf.py sets no numpydoc_validation_checks")


def _public_objects():
    """(qualified name, object, is_top_level) for every public callable of the API."""
    found = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj):
                continue
            qualified = f"{module_name}.{name}"
            found.append((qualified, True))
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if inspect.isfunction(value) or isinstance(
                            value, (property, classmethod, staticmethod)):
                        found.append((f"{qualified}.{attr}", False))
    return found


PUBLIC = _public_objects()
CHECKS = _configured_checks()


def test_the_api_has_the_names_the_docs_promise():
    names = {name for name, _ in PUBLIC}
    for expected in ("bp.Sequential", "bp.Sequential.fit", "bp.Callback.on_epoch_end",
                     "bp.sklearn.MLPClassifier", "bp.distributed.allreduce_gradients",
                     "bp.kernels.dense_forward"):
        assert expected in names


@needs_numpydoc
@pytest.mark.parametrize("name", [name for name, _ in PUBLIC])
def test_numpydoc_validation(name):
    errors = [f"{code}: {message}" for code, message in numpydoc_validate.validate(name)["errors"]
              if code in CHECKS]
    assert not errors, f"{name}:\n" + "\n".join(errors)


@needs_numpydoc
@pytest.mark.parametrize("name", [name for name, top in PUBLIC if top])
def test_every_public_class_and_function_has_an_example(name):
    result = numpydoc_validate.validate(name)
    assert "EX01" not in {code for code, _ in result["errors"]}, f"{name} has no Examples section"


def test_every_command_line_option_has_a_help_text():
    import argparse

    from bp.__main__ import build_parser

    parser = build_parser()
    parsers = [("python -m bp", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += [(f"python -m bp {name}", sub) for name, sub in action.choices.items()]
    missing = [f"{name} {action.option_strings[-1]}" for name, p in parsers
               for action in p._actions if action.option_strings and not action.help]
    assert not missing, f"options without a help text: {missing}"


def test_the_readme_quick_start_runs_as_written(tmp_path, monkeypatch):
    """The README's quick start, extracted and run as a new user would: its own data, no setup."""
    import re

    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Quick start\n\n```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert match, "README.md has no '## Quick start' section with a python code block"
    code = match.group(1)
    assert "fit(" in code and "evaluate(" in code
    monkeypatch.chdir(tmp_path)  # it saves a file
    namespace = {}
    exec(compile(code, "README.md (quick start)", "exec"), namespace)  # noqa: S102 (the point)
    model = namespace["model"]
    assert model.evaluate(namespace["X_test"], namespace["y_test"])["accuracy"] > 0.9
    assert (tmp_path / "digits.npz").exists()
