"""The chart's Argo CD health checks, run in a real Lua 5.1 interpreter (Argo CD's
dialect) on the fixtures listed in each kind's health_test.yaml, the layout Argo CD's own
resource_customizations use."""

from __future__ import annotations

import datetime
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.delivery.helm import CHART

CUSTOMIZATIONS = CHART / "argocd" / "mlplane.io"
KINDS = ("TrainingJob", "ModelVersion", "InferenceService")


def lua_literal(value: Any) -> str:
    """A Lua expression for a YAML value, shaped as Argo CD hands objects to Lua: maps are
    tables keyed by string, lists are 1-based array tables, timestamps are strings."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value), value
        return repr(value)
    if isinstance(value, datetime.date):
        value = value.isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        # Byte escapes (\ddd) keep the program ASCII; Lua strings are byte strings.
        escaped = "".join(
            chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}"
            for b in value.encode()
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        items = (f"[{lua_literal(str(k))}] = {lua_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def run_health_check(lua: str, script: Path, obj: dict[str, Any]) -> dict[str, str]:
    """Evaluate `script` with the global `obj`, as Argo CD does; return its status table."""
    program = "\n".join(
        [
            f"obj = {lua_literal(obj)}",
            f"local hs = dofile({lua_literal(str(script))})",
            'assert(type(hs) == "table", "the health check must return a table")',
            'io.write(tostring(hs.status), "\\0", tostring(hs.message or ""))',
        ]
    )
    result = subprocess.run([lua, "-"], input=program, text=True, capture_output=True)
    assert result.returncode == 0, f"{script}: {result.stderr}"
    status, _, message = result.stdout.partition("\0")
    return {"status": status, "message": message}


def cases() -> list[Any]:
    found = []
    for kind in KINDS:
        spec = yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())
        for case in spec["tests"]:
            found.append(pytest.param(kind, case, id=f"{kind}-{Path(case['inputPath']).stem}"))
    return found


@pytest.mark.parametrize(("kind", "case"), cases())
def test_health_check_on_fixture(lua: str, kind: str, case: dict[str, Any]) -> None:
    directory = CUSTOMIZATIONS / kind
    obj = yaml.safe_load((directory / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    assert run_health_check(lua, directory / "health.lua", obj) == case["healthStatus"]


@pytest.mark.parametrize("kind", KINDS)
def test_fixtures_cover_every_health_status(kind: str) -> None:
    spec = yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())
    statuses = {case["healthStatus"]["status"] for case in spec["tests"]}
    expected = {"Healthy", "Progressing", "Degraded"} | (
        {"Suspended"} if kind == "TrainingJob" else set()
    )
    assert statuses == expected
    listed = {case["inputPath"] for case in spec["tests"]}
    on_disk = {f"testdata/{p.name}" for p in (CUSTOMIZATIONS / kind / "testdata").glob("*.yaml")}
    assert listed == on_disk, "every fixture is tested and every test has its fixture"


def test_lua_literal_round_trips_awkward_strings(lua: str) -> None:
    text = 'quote " backslash \\ newline \n tab \t unicode é'
    program = f"io.write(({lua_literal({'m': text, 'l': [1, 2]})}).m)"
    result = subprocess.run([lua, "-"], input=program.encode(), capture_output=True)
    assert result.stdout.decode() == text


def test_health_checks_use_only_argo_cds_sandboxed_libraries() -> None:
    for kind in KINDS:
        source = (CUSTOMIZATIONS / kind / "health.lua").read_text()
        for forbidden in ("io.", "os.", "require", "dofile", "loadstring", "debug."):
            assert forbidden not in source, f"{kind}/health.lua uses {forbidden}"
