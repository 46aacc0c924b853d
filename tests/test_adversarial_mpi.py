"""Ranks of a data-parallel fit whose settings disagree (issue 22): one collective check at the
start of fit fails on every rank, naming the setting and each rank's value; a rank whose own
arguments are refused takes the others down with it. The script is tests/mpi/settings_disagree.py."""

from pathlib import Path

import pytest

from tests.test_distributed import needs_mpi, run_ranks

HERE = Path(__file__).resolve().parent


@needs_mpi
@pytest.mark.parametrize("n_ranks", [2, 3])
def test_ranks_that_disagree_fail_together_before_any_change(n_ranks):
    assert f"ok p={n_ranks}" in run_ranks(n_ranks, HERE / "mpi" / "settings_disagree.py")
