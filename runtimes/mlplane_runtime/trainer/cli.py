"""`mlplane-train`: train a model from a TrainingJob spec, or verify an artifact.

Usage::

    mlplane-train --spec spec.yaml --model iris --run run-1 --output pvc://models
    mlplane-train trial [--index I] --spec spec.yaml --model iris --run run-1 --output ...
    mlplane-train verify --artifact-uri URI --sha256 HEX [--signature JSON]
    mlplane-train evaluate --log-uri ROOT --metric M --window-seconds S [--window-end T]

``evaluate`` joins the prediction log under ROOT with its feedback per version over the
window ending at T (epoch seconds, default now) and reports the metric per version.

With ``spec.search``, ``trial`` fits and scores the search's trial I (default: the
Indexed Job's ``JOB_COMPLETION_INDEX``) and publishes its result; the plain command then
refits the best trial of the run and publishes it as the run's model.

The spec comes from ``--spec`` (a JSON or YAML file) or the env var
``MLPLANE_TRAINING_SPEC`` (JSON); ``--model``, ``--run`` and ``--output`` default to
``MLPLANE_MODEL``, ``MLPLANE_RUN`` and ``MLPLANE_OUTPUT_URI``, then to the spec's
``model`` and ``output.storageUri``. Artifacts go to ``<output>/<model>/<run>/``.
With ``spec.dataset.feedback``, ``--feedback-log-uri`` (``MLPLANE_FEEDBACK_LOG_URI``)
is the InferenceService's log root whose labeled rows are added to the data.

The JSON result goes to ``MLPLANE_TERMINATION_LOG`` (default ``/dev/termination-log``)
and to stdout. Failures are reported as ``{"error": ..., "reason": ...}`` there and on
stderr.

Exit codes:
    0  success
    2  user error that retrying cannot fix: bad spec, bad data, unsupported estimator,
       parity failure, or (verify) an artifact that fails verification
    3  transient failure (storage unreachable); retrying may help
    1  internal error (a bug)
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from mlplane_runtime.artifacts import verify_artifact
from mlplane_runtime.cli_support import ArgumentParser, env_default, run_main
from mlplane_runtime.errors import UserError
from mlplane_runtime.quality.evaluate import METRICS, evaluate
from mlplane_runtime.termination import write_result
from mlplane_runtime.trainer.spec import TrainingSpec, load_spec_file, load_spec_text
from mlplane_runtime.trainer.train import RunIdentity, train
from mlplane_runtime.trainer.trials import refit, run_trial


def _train_parser(trial: bool = False) -> ArgumentParser:
    if trial:
        parser = ArgumentParser(prog="mlplane-train trial", description="Run one search trial.")
        parser.add_argument(
            "--index",
            type=int,
            default=env_default("JOB_COMPLETION_INDEX") or None,
            help="the trial index (default: the Indexed Job's JOB_COMPLETION_INDEX)",
        )
    else:
        parser = ArgumentParser(prog="mlplane-train", description="Train, convert and publish.")
    parser.add_argument("--spec", help="TrainingJob spec file (JSON or YAML)")
    parser.add_argument("--model", default=env_default("MLPLANE_MODEL"))
    parser.add_argument("--run", default=env_default("MLPLANE_RUN"), help="run id")
    parser.add_argument(
        "--output", default=env_default("MLPLANE_OUTPUT_URI"), help="storage prefix URI"
    )
    parser.add_argument(
        "--feedback-log-uri",
        default=env_default("MLPLANE_FEEDBACK_LOG_URI"),
        help="the InferenceService's log root that spec.dataset.feedback reads",
    )
    return parser


def _verify_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mlplane-train verify", description="Verify an artifact.")
    parser.add_argument("--artifact-uri", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--signature", help="declared signature as JSON {inputs, outputs}")
    return parser


def _evaluate_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mlplane-train evaluate", description="Score logged predictions against feedback."
    )
    parser.add_argument("--log-uri", required=True, help="the InferenceService's log root")
    parser.add_argument("--metric", required=True, choices=METRICS)
    parser.add_argument("--window-seconds", type=float, required=True)
    parser.add_argument("--window-end", type=float, help="epoch seconds (default: now)")
    return parser


def _spec(path: str | None) -> TrainingSpec:
    if path:
        return load_spec_file(path)
    text = env_default("MLPLANE_TRAINING_SPEC")
    if not text:
        raise UserError("no training spec: pass --spec FILE or set MLPLANE_TRAINING_SPEC")
    return load_spec_text(text, "MLPLANE_TRAINING_SPEC")


def _identity(args: Any, spec: TrainingSpec) -> RunIdentity:
    output = args.output or spec.storage_uri
    if not output:
        raise UserError(
            "no output location: pass --output, set MLPLANE_OUTPUT_URI or spec.output.storageUri"
        )
    return RunIdentity(
        model=args.model or spec.model,
        run=args.run or time.strftime("run-%Y%m%d-%H%M%S", time.gmtime()),
        output_uri=output,
        feedback_log_uri=args.feedback_log_uri or "",
    )


def train_command(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    spec = _spec(args.spec)
    identity = _identity(args, spec)
    write_result(refit(spec, identity) if spec.search else train(spec, identity))
    return 0


def trial_command(argv: list[str]) -> int:
    args = _train_parser(trial=True).parse_args(argv)
    spec = _spec(args.spec)
    if args.index is None:
        raise UserError("no trial index: pass --index or set JOB_COMPLETION_INDEX")
    if not args.run:
        raise UserError("a trial needs the run id of its search: pass --run or set MLPLANE_RUN")
    write_result(run_trial(spec, _identity(args, spec), int(args.index)))
    return 0


def verify_command(argv: list[str]) -> int:
    args = _verify_parser().parse_args(argv)
    signature: dict[str, Any] | None = None
    if args.signature:
        try:
            signature = json.loads(args.signature)
        except json.JSONDecodeError as exc:
            raise UserError(f"--signature is not valid JSON: {exc}") from exc
        if not isinstance(signature, dict):
            raise UserError("--signature must be a JSON object with inputs and outputs")
    try:
        result = verify_artifact(args.artifact_uri, args.sha256, signature)
    except UserError as exc:  # an integrity error is a failed verification too: exit 2
        raise UserError(f"verification failed: {exc}") from exc
    write_result(result)
    return 0


def evaluate_command(argv: list[str]) -> int:
    parser = _evaluate_parser()
    args = parser.parse_args(argv)
    if args.window_seconds <= 0:
        parser.error("--window-seconds must be > 0")
    end = args.window_end if args.window_end is not None else time.time()
    write_result(evaluate(args.log_uri, args.metric, end - args.window_seconds, end))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["verify"]:
        return int(run_main(lambda: verify_command(args[1:])))
    if args[:1] == ["evaluate"]:
        return int(run_main(lambda: evaluate_command(args[1:])))

    if args[:1] == ["trial"]:
        return int(run_main(lambda: trial_command(args[1:])))
    return int(run_main(lambda: train_command(args)))


if __name__ == "__main__":
    sys.exit(main())
