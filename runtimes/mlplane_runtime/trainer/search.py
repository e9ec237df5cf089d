"""Hyperparameter search: the space (`spec.search`), and the parameters of trial i.

A parameter's space is a list of values (`{values: [...]}` in the TrainingJob API, or
a bare list) or a range `{min, max, scale: linear|log, type: float|int}`.

Pure and deterministic: a trial knows its parameters from its index alone (an Indexed
Job's completion index), so trials can run in any order, on any node, and again.
Grid trials walk the Cartesian product of the value lists (parameters in name order,
values in the order given); random trials draw each parameter from a generator seeded
by (seed, index), independent of every other trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplane_runtime.errors import UserError

STRATEGIES = ("grid", "random")
GOALS = ("maximize", "minimize")
SCALES = ("linear", "log")
TYPES = ("float", "int")
MAX_TRIALS = 100
MAX_PARALLELISM = 32
CV_FOLDS = (2, 10)
DEFAULT_RANDOM_TRIALS = 10
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Range:
    """A numeric range: values drawn between `low` and `high` (inclusive for ints)."""

    low: float
    high: float
    scale: str = "linear"
    type: str = "float"


@dataclass(frozen=True)
class Objective:
    metric: str
    goal: str

    def better(self, a: float, b: float) -> bool:
        """Whether `a` beats `b` under this goal."""
        return a > b if self.goal == "maximize" else a < b


@dataclass(frozen=True)
class SearchSpec:
    parameters: dict[str, tuple[Scalar, ...] | Range]
    strategy: str
    seed: int
    trials: int  # how many trials run: maxTrials, or the grid's size when smaller
    parallelism: int
    cv_folds: int | None
    objective: Objective

    def summary(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "trials": self.trials,
            "cvFolds": self.cv_folds,
            "objective": {"metric": self.objective.metric, "goal": self.objective.goal},
        }


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{where} must be an integer from {low} to {high}, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _space(name: str, raw: Any) -> tuple[Scalar, ...] | Range:
    where = f"spec.search.parameters.{name}"
    if isinstance(raw, dict) and "values" in raw:  # the TrainingJob API's {values: [...]}
        if len(raw) != 1:
            raise UserError(f"{where}: give either values or min/max (with scale, type)")
        raw = raw["values"]
        where = f"{where}.values"
    if isinstance(raw, list):
        if not raw:
            raise UserError(f"{where} is an empty list; give at least one value")
        for value in raw:
            if value is not None and not isinstance(value, str | int | float | bool):
                raise UserError(f"{where}: values must be numbers, strings, booleans or null")
        return tuple(raw)
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be {{values: [...]}} or {{min, max, scale, type}}")
    unknown = sorted(set(raw) - {"min", "max", "scale", "type"})
    if unknown:
        raise UserError(
            f"{where}: unknown field(s) {unknown}; allowed: values, or min, max, scale, type"
        )
    low, high = _number(raw.get("min"), f"{where}.min"), _number(raw.get("max"), f"{where}.max")
    scale, kind = raw.get("scale") or "linear", raw.get("type") or "float"
    if scale not in SCALES:
        raise UserError(f"{where}.scale {scale!r} is unknown; allowed: {', '.join(SCALES)}")
    if kind not in TYPES:
        raise UserError(f"{where}.type {kind!r} is unknown; allowed: {', '.join(TYPES)}")
    if not low < high:
        raise UserError(f"{where}: min ({low:g}) must be less than max ({high:g})")
    if scale == "log" and low <= 0:
        raise UserError(f"{where}: a log scale needs min > 0, got {low:g}")
    if kind == "int" and math.ceil(low) > math.floor(high):
        raise UserError(f"{where}: no integer lies between min {low:g} and max {high:g}")
    return Range(low, high, scale, kind)


def _objective(raw: Any) -> Objective:
    if not isinstance(raw, dict) or not isinstance(raw.get("metric"), str):
        raise UserError("spec.search.objective.metric is required (the metric to optimise)")
    metric = raw["metric"]
    goal = raw.get("goal") or ("minimize" if metric in LOWER_IS_BETTER else "maximize")
    if goal not in GOALS:
        raise UserError(
            f"spec.search.objective.goal {goal!r} is unknown; allowed: maximize, minimize"
        )
    return Objective(metric, goal)


def grid_size(parameters: dict[str, tuple[Scalar, ...] | Range]) -> int:
    return math.prod(len(space) for space in parameters.values() if isinstance(space, tuple))


def parse_search(raw: Any) -> SearchSpec | None:
    """`spec.search` checked, each error naming its field; None when there is no search."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UserError("spec.search must be an object")
    raw_parameters = raw.get("parameters")
    if not isinstance(raw_parameters, dict) or not raw_parameters:
        raise UserError("spec.search.parameters must map at least one estimator parameter")
    parameters = {name: _space(name, raw_parameters[name]) for name in sorted(raw_parameters)}
    strategy = raw.get("strategy") or "random"
    if strategy not in STRATEGIES:
        raise UserError(f"spec.search.strategy {strategy!r} is unknown; allowed: grid, random")
    seed = _integer(raw.get("seed", 0), "spec.search.seed", 0, 2**32 - 1)
    default = grid_size(parameters) if strategy == "grid" else DEFAULT_RANDOM_TRIALS
    max_trials = _integer(raw.get("maxTrials", default), "spec.search.maxTrials", 1, MAX_TRIALS)
    if strategy == "grid":
        ranges = [name for name, space in parameters.items() if isinstance(space, Range)]
        if ranges:
            raise UserError(
                f"spec.search.parameters {ranges}: the grid strategy needs a list of values "
                "for every parameter; use strategy random for ranges"
            )
        max_trials = min(max_trials, grid_size(parameters))
    parallelism = _integer(raw.get("parallelism", 1), "spec.search.parallelism", 1, MAX_PARALLELISM)
    folds = raw.get("cvFolds")
    cv_folds = None if folds is None else _integer(folds, "spec.search.cvFolds", *CV_FOLDS)
    return SearchSpec(
        parameters=parameters,
        strategy=strategy,
        seed=seed,
        trials=max_trials,
        parallelism=min(parallelism, max_trials),
        cv_folds=cv_folds,
        objective=_objective(raw.get("objective")),
    )


def trial_params(search: SearchSpec, index: int) -> dict[str, Any]:
    """The estimator parameters of trial `index` (0-based), the same on every call."""
    if not 0 <= index < search.trials:
        raise UserError(f"trial index {index} is out of range: the search has {search.trials}")
    if search.strategy == "grid":
        return _grid_point(search.parameters, index)
    rng = np.random.default_rng([search.seed, index])
    return {name: _draw(space, rng) for name, space in search.parameters.items()}


def _grid_point(parameters: dict[str, tuple[Scalar, ...] | Range], index: int) -> dict[str, Any]:
    """The index-th point of the product, the last parameter varying fastest."""
    point: dict[str, Any] = {}
    for name in reversed(list(parameters)):
        values = parameters[name]
        assert isinstance(values, tuple)  # parse_search refuses ranges in a grid
        index, position = divmod(index, len(values))
        point[name] = values[position]
    return dict(sorted(point.items()))


def _draw(space: tuple[Scalar, ...] | Range, rng: np.random.Generator) -> Any:
    if isinstance(space, tuple):
        return space[int(rng.integers(len(space)))]
    if space.type == "int":
        low, high = math.ceil(space.low), math.floor(space.high)
        if space.scale == "linear":
            return int(rng.integers(low, high + 1))
        # Log-uniform over [low, high + 1), then floor: integer k gets the mass of [k, k+1).
        value = math.exp(rng.uniform(math.log(low), math.log(high + 1)))
        return int(min(max(math.floor(value), low), high))
    if space.scale == "log":
        value = math.exp(rng.uniform(math.log(space.low), math.log(space.high)))
    else:
        value = rng.uniform(space.low, space.high)
    return float(f"{min(max(value, space.low), space.high):.6g}")
