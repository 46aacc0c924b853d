"""pytest configuration for the doctests: ``python -m pytest --doctest-modules bp``.

Every docstring example may use ``np`` and ``bp`` without importing them (as numpy's and
scikit-learn's do with ``np``); everything else it uses, it makes itself. The tests in tests/ have
their own conftest.py.
"""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import bp

    doctest_namespace["np"] = np
    doctest_namespace["bp"] = bp
