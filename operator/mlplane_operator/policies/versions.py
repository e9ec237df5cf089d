"""Version numbers of a model: never reused, one per run (pure).

`<model>-v<N>` names a registry record that people, dashboards and GitOps repositories
refer to, so a number once given must never name a different model, even after the
ModelVersion (or the TrainingJob that registered it) is deleted. The operator keeps, per
model and namespace, a ledger (a ConfigMap it owns and nothing garbage-collects): the
highest number ever given, and which run was given which recent number. Writers update
it with a resourceVersion precondition, so of two concurrent allocations (two replicas,
two TrainingJobs of one model) exactly one wins and the other allocates again; the run
entry makes the allocation of one run the same number every time it is asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]
HIGHEST_KEY, RUNS_KEY = "highest", "runs"
RECENT_RUNS = 50  # allocations remembered; a run registers seconds after its number


def run_key(training_job_uid: str, run: str) -> str:
    """A run's identity for all time: the TrainingJob's uid and the run's name."""
    return f"{training_job_uid}/{run}"


@dataclass(frozen=True)
class Ledger:
    highest: int = 0
    runs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_config_map(cls, config_map: Manifest | None) -> Ledger:
        """The ledger in a ConfigMap; a damaged entry counts as absent (the existing
        ModelVersions still bound the next number from below)."""
        data = (config_map or {}).get("data") or {}
        try:
            highest = max(0, int(data.get(HIGHEST_KEY, "0")))
        except ValueError:
            highest = 0
        try:
            parsed = json.loads(data.get(RUNS_KEY) or "{}")
        except ValueError:
            parsed = {}
        runs = (
            {str(k): v for k, v in parsed.items() if isinstance(v, int) and v > 0}
            if isinstance(parsed, dict)
            else {}
        )
        return cls(highest, runs)

    def data(self) -> dict[str, str]:
        return {
            HIGHEST_KEY: str(self.highest),
            RUNS_KEY: json.dumps(self.runs, sort_keys=True, separators=(",", ":")),
        }


@dataclass(frozen=True)
class Allocation:
    version: int
    ledger: Ledger
    changed: bool  # whether the ledger must be written before the version is created


def allocate(ledger: Ledger, key: str, existing: set[int]) -> Allocation:
    """The number for run `key`, given the versions of the model that exist now (none of
    them the run's own). The run keeps a number it was given unless that name has been
    taken meanwhile (by a ModelVersion applied by hand); a new number is above every
    number ever given and every existing version."""
    given = ledger.runs.get(key)
    if given is not None and given not in existing:
        return Allocation(given, ledger, changed=False)
    version = max([ledger.highest, *existing]) + 1
    runs = {**ledger.runs, key: version}
    recent = dict(sorted(runs.items(), key=lambda item: item[1])[-RECENT_RUNS:])
    return Allocation(version, Ledger(version, recent), changed=True)


def raise_floor(ledger: Ledger, version: int) -> Ledger | None:
    """The ledger once `version` is known to be used (a ModelVersion applied by hand);
    None when it records that already."""
    return None if version <= ledger.highest else Ledger(version, dict(ledger.runs))
