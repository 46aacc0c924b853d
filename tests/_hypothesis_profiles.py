"""Hypothesis settings profiles for bp's property-based tests.

    ci        (the default)  50 examples per property, derandomized: the same examples every run,
                             so CI is fast and never flaky; deadline off (first calls build kernels'
                             workspaces and BLAS buffers, and the machine is shared).
    thorough                 1000 examples per property, random: the long hunt.
                             BP_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_property.py

BP_HYPOTHESIS_PROFILE may name any registered profile. The tests apply it with the decorator
``PROPERTY_SETTINGS`` rather than settings.load_profile, so importing this module changes nothing
for other test files.
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

settings.register_profile("ci", max_examples=50, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)

PROFILE = os.environ.get("BP_HYPOTHESIS_PROFILE", "ci")
PROPERTY_SETTINGS = settings(settings.get_profile(PROFILE))
