"""Benchmarks of the trainer and of hyperparameter search (figures, not timed tests).

1. Trainer overhead: the wall time of `mlplane-train` (a process: imports, csv parsing,
   split, fit, hold-out metrics, ONNX conversion, parity gate, profile, atomic publish)
   divided by a bare fit + predict of the same estimator on the same rows, in this
   process, on arrays already in memory. Goal: <= 1.5.
2. Search: N trials at parallelism P, each an `mlplane-train trial` process as an
   Indexed Job's pod runs it (P at a time), divided by the same N fits run one after
   another in one process with the data loaded once. Goal: <= 0.7 at P = 2 on 2 cores.

Both are measured in the same run, on data generated here: the median of --repeat runs
of each side, the two sides alternating.

    .venv/bin/python hack/bench-search.py [--rows 100000] [--trials 16] [--parallelism 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mlplane_runtime.trainer.estimators import build_estimator
from mlplane_runtime.trainer.search import trial_params
from mlplane_runtime.trainer.spec import TrainingSpec, parse_spec
from mlplane_runtime.trainer.train import prepare
from mlplane_runtime.trainer.trials import score_trial

BIN = Path(sys.executable).parent
FEATURES = 10
COLORS, SIZES = ("red", "green", "blue", "black"), ("S", "M", "L", "XL")


def write_numeric_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).round(4)
    y = ((x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + rng.normal(0, 0.5, rows)) > 0).astype(int)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"f{i}" for i in range(FEATURES)), "y"])
        writer.writerows([*row, label] for row, label in zip(x.tolist(), y.tolist(), strict=True))


def write_categorical_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "color", "income", "size", "churned"])
        for _ in range(rows):
            age, income = int(rng.integers(18, 80)), round(float(rng.normal(50, 15)), 2)
            color, size = str(rng.choice(COLORS)), str(rng.choice(SIZES))
            noisy = rng.random() < 0.1
            churned = int(
                ((color == "red") != (income > 55) or (size == "XL" and age > 60)) ^ noisy
            )
            writer.writerow([age, color, income, size, churned])


def paired_medians(
    first: Callable[[], None], second: Callable[[], None], repeat: int
) -> tuple[float, float]:
    """Median seconds of each, run alternately, so that a change in the machine's load
    (it is shared) weighs on both sides of the ratio alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for action, spent in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            action()
            spent.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} exited {done.returncode}:\n{done.stderr[-2000:]}")


def trainer_overhead(work: Path, rows: int, estimator: dict[str, Any], repeat: int) -> None:
    data = work / "numeric.csv"
    if not data.exists():
        write_numeric_csv(data, rows)
    raw = {"model": "bench", "dataset": {"uri": str(data), "target": "y"}, "estimator": estimator}
    spec = parse_spec(raw)
    prepared = prepare(spec)  # the same split the trainer makes
    features = prepared.data.feature_names

    def bare() -> None:
        model = build_estimator(spec.estimator, 0, features)
        model.fit(prepared.x_train, prepared.y_train)
        model.predict(prepared.x_test)

    counter = iter(range(1_000_000))
    name = str(estimator["class"]).lower()

    def trainer() -> None:  # a new run id each time: a published run is not trained again
        run(
            [
                str(BIN / "mlplane-train"),
                "--run",
                f"{name}-{next(counter)}",
                "--output",
                str(work / "out"),
            ],
            {"MLPLANE_TRAINING_SPEC": json.dumps(raw), "MLPLANE_TERMINATION_LOG": os.devnull},
        )

    bare_s, trainer_s = paired_medians(bare, trainer, repeat)
    print(
        f"trainer overhead, {estimator['class']} {estimator.get('params', {})}, {rows} rows: "
        f"mlplane-train {trainer_s:.2f} s / bare fit+predict {bare_s:.2f} s = "
        f"{trainer_s / bare_s:.2f} (goal <= 1.5)"
    )


def search_speedup(work: Path, rows: int, trials: int, parallelism: int, repeat: int) -> None:
    data = work / "categorical.csv"
    if not data.exists():
        write_categorical_csv(data, rows)
    raw = {
        "model": "churn",
        "dataset": {"uri": str(data), "target": "churned"},
        "estimator": {
            "class": "XGBClassifier",
            "params": {"n_estimators": 100},
            "categorical": {"columns": ["color", "size"]},
        },
        "search": {
            "strategy": "random",
            "seed": 7,
            "maxTrials": trials,
            "parallelism": parallelism,
            "cvFolds": 3,
            "objective": {"metric": "accuracy"},
            "parameters": {
                "max_depth": [3, 4, 6],
                "learning_rate": {"min": 0.03, "max": 0.3, "scale": "log"},
            },
        },
    }
    spec: TrainingSpec = parse_spec(raw)
    search = spec.search
    assert search is not None

    def sequential() -> None:
        prepared = prepare(spec)
        for index in range(trials):
            score_trial(spec, prepared, trial_params(search, index))

    counter = iter(range(1_000_000))

    def parallel() -> None:
        run_id = f"s{next(counter)}"
        env = {
            "MLPLANE_TRAINING_SPEC": json.dumps(raw),
            "MLPLANE_RUN": run_id,
            "MLPLANE_OUTPUT_URI": str(work / "out"),
            "MLPLANE_TERMINATION_LOG": os.devnull,
        }

        def trial(index: int) -> None:  # one pod of the Indexed Job
            run([str(BIN / "mlplane-train"), "trial", "--index", str(index)], env)

        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(trial, range(trials)))

    sequential_s, parallel_s = paired_medians(sequential, parallel, repeat)
    print(
        f"search, {trials} trials (XGBClassifier, 3-fold CV, {rows} rows, {os.cpu_count()} "
        f"cores): parallelism {parallelism} as trial processes {parallel_s:.2f} s / "
        f"{trials} fits in one process {sequential_s:.2f} s = {parallel_s / sequential_s:.2f} "
        "(goal <= 0.7)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the overhead")
    parser.add_argument("--search-rows", type=int, default=20_000, help="rows for the search")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlplane-bench-search-") as scratch:
        work = Path(scratch)
        for estimator in (
            {"class": "XGBClassifier", "params": {"n_estimators": 100}},
            {"class": "RandomForestClassifier", "params": {"n_estimators": 50, "max_depth": 12}},
        ):
            trainer_overhead(work, args.rows, estimator, args.repeat)
        search_speedup(work, args.search_rows, args.trials, args.parallelism, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
