"""Unit tests of the operator's pure parts: no cluster, no network, no environment leaks."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, never from MLPLANE_* variables of the shell."""
    for name in list(os.environ):
        if name.startswith("MLPLANE_"):
            monkeypatch.delenv(name)
