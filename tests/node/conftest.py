"""Make hack/localnode importable for the unit tests (it is dev tooling, not installed)."""

from __future__ import annotations

import sys

from tests.kube import REPO

if str(REPO / "hack") not in sys.path:
    sys.path.insert(0, str(REPO / "hack"))
