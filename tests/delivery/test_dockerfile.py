"""The Dockerfile, read as text: its final stages start what the distributions declare,
it passes hadolint, and it builds from lock files that are current. (hack/build-images.sh
builds it with buildah; tests/node runs the images on the local node.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.kube import REPO

DOCKERFILE = REPO / "Dockerfile"
HADOLINT = REPO / ".venv" / "bin" / "hadolint"


@dataclass
class Stage:
    name: str
    parent: str
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def logical_lines(text: str) -> list[str]:
    """Instructions with line continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return lines


def parse_stages(text: str) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
            assert match, f"cannot parse FROM {rest!r}"
            parent, name = match.group(1), match.group(2) or f"stage{len(stages)}"
            current = Stage(name=name, parent=parent)
            if parent in stages:  # inherit what the parent stage set
                base = stages[parent]
                current.entrypoint, current.cmd, current.user = base.entrypoint, base.cmd, base.user
            stages[name] = current
        elif current is not None:
            current.instructions.append((keyword, rest))
            if keyword in ("ENTRYPOINT", "CMD"):
                value = json.loads(rest)  # exec form only: shell form would break signals
                assert isinstance(value, list), f"{keyword} must use the exec (JSON) form"
                if keyword == "ENTRYPOINT":
                    current.entrypoint, current.cmd = value, None  # ENTRYPOINT resets CMD
                else:
                    current.cmd = value
            elif keyword == "USER":
                current.user = rest.strip()
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_stages(DOCKERFILE.read_text())


def runtime_console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "runtimes" / "pyproject.toml").read_text())["project"]
    scripts: dict[str, str] = project["scripts"]
    return scripts


def test_operator_image_runs_python_m_mlplane_operator(stages: dict[str, Stage]) -> None:
    operator = stages["operator"]
    assert operator.entrypoint == ["python", "-m", "mlplane_operator"]
    assert operator.cmd is None
    assert (REPO / "operator" / "mlplane_operator" / "__main__.py").exists(), (
        "the operator image runs `python -m mlplane_operator`: mlplane_operator/__main__.py"
    )


def test_runtime_image_defaults_to_serving_and_has_no_entrypoint(
    stages: dict[str, Stage],
) -> None:
    runtime = stages["runtime"]
    assert runtime.entrypoint is None, "pods pick mlplane-train/serve/monitor as `command`"
    assert runtime.cmd == ["mlplane-serve"]


def test_runtime_commands_are_the_declared_console_scripts(stages: dict[str, Stage]) -> None:
    scripts = runtime_console_scripts()
    assert set(scripts) == {"mlplane-train", "mlplane-serve", "mlplane-monitor"}
    cmd = stages["runtime"].cmd
    assert cmd is not None
    assert cmd[0] in scripts
    # The console scripts land in the venv the final stage puts first on PATH.
    env = " ".join(rest for keyword, rest in stages["runtime"].instructions if keyword == "ENV")
    env += " ".join(rest for keyword, rest in stages["final-base"].instructions if keyword == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env


@pytest.mark.parametrize("target", ["operator", "runtime"])
def test_final_images_run_as_uid_65532_without_pip(stages: dict[str, Stage], target: str) -> None:
    stage = stages[target]
    assert stage.user == "65532:65532", "the chart's runAsUser relies on this UID"
    chain = [stage]
    while chain[-1].parent in stages:
        chain.append(stages[chain[-1].parent])
    instructions = [(k, r) for s in chain for k, r in s.instructions]
    assert not [r for k, r in instructions if k == "RUN" and re.search(r"pip\S* install", r)], (
        "final stages copy a built venv; they install nothing"
    )
    assert any(k == "RUN" and "pip uninstall" in r for k, r in instructions)
    assert not [k for k, _ in instructions if k == "HEALTHCHECK"], "Kubernetes probes instead"
    labels = " ".join(r for k, r in stage.instructions if k == "LABEL")
    for label in ("source", "version", "title", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels


def test_images_install_from_the_lock_files(stages: dict[str, Stage]) -> None:
    for builder, lock in (("operator-builder", "operator"), ("runtime-builder", "runtime")):
        runs = [r for k, r in stages[builder].instructions if k == "RUN"]
        assert any(f"-r requirements/{lock}.txt" in r for r in runs)
        assert any("--no-deps" in r for r in runs), "the project itself adds no unpinned deps"


def test_lock_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "lock-requirements.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copies = [
        rest.split()[0].rstrip("/")
        for line in logical_lines(DOCKERFILE.read_text())
        for keyword, _, rest in [line.partition(" ")]
        if keyword.upper() == "COPY" and not rest.startswith("--from")
    ]
    assert copies
    for source in copies:
        assert any(source == a or a.startswith(source + "/") for a in allowed), source


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
