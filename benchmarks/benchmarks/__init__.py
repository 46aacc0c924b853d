"""bp's asv suite: the speed of fit, predict, partial_fit and bp.sklearn, tracked per commit.

asv runs these with the venv's own Python (``--python=same``) and never builds or installs bp:
the checkout this file sits in goes first on sys.path, so its in-place build is what is timed.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
