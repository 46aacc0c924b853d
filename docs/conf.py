"""Sphinx configuration for bp's documentation.

Built offline: no intersphinx, no remote images or fonts, alabaster (which ships with Sphinx).
``.ci/docs`` builds it with warnings as errors::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference is generated from the package (autosummary over each module's ``__all__``), so
a public name added to ``bp.__all__`` gets its page on the next build; numpydoc checks every
docstring it renders (``numpydoc_validation_checks`` below).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The docs document the checkout when it is built in place (python setup.py build_ext --inplace),
# else the installed bp.
if list((ROOT / "bpcore").glob("_network*.so")) or list((ROOT / "bpcore").glob("_network*.pyd")):
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
# The gallery's examples run on one thread each: the docs build must fit in a few CI minutes on
# two cores, and threads only pay on large layers.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import _generate

import bp

project = "bp"
author = "the bp developers"
copyright = "the bp developers"
release = version = bp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"bp {release}"
html_theme_options = {
    "description": "backpropagation, compiled",
    "fixed_sidebar": True,
    "font_family": "sans-serif",
    "head_font_family": "sans-serif",
    "code_font_family": "monospace",
    "font_size": "16px",
    "page_width": "1100px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
pygments_style = "sphinx"

# --- API reference -----------------------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters section says the types
numpydoc_show_class_members = False  # the class template lists the members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
# numpydoc's validation, for every docstring the API reference renders (a failure is a warning,
# which -W turns into an error): every check numpydoc has, but these seven:
#   SA01  a See Also section: the classes and functions have one, most methods need none
#   ES01  an extended summary: a one-line summary is enough for many methods
#   EX01  an Examples section: required of every public class and function by
#         tests/test_docs.py; most methods have one too, the callback hooks do not
#   SS02, PR08, RT04  a summary or description must start with a capital letter: many start with
#         a name written in lower case ("scikit-learn's MLPClassifier", "leaky_relu's slope")
#   SA04  a description for each See Also entry: a plain list of related names is enough
# tests/test_docs.py runs the same validation without Sphinx (it reads this set from here).
numpydoc_validation_checks = {"all", "SA01", "ES01", "EX01", "SS02", "PR08", "RT04", "SA04"}
numpydoc_validation_exclude = {
    r"\.__init__$",  # the class docstring documents the constructor (numpydoc's convention)
}

# --- the gallery -------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every example runs when the docs build
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    # no execution-times pages: they load their table scripts from CDNs (the docs stay offline)
    "write_computation_times": False,
    "plot_gallery": "True",
}

# --- generated pages (the CLI's --help text) ---------------------------------------------------
_generate.cli_help(HERE / "api" / "_generated")
_generate.api_pages(HERE / "api" / "_generated")
