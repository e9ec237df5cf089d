"""Rollout arithmetic and canary analysis (pure).

Without a service mesh the canary's share of traffic is its share of the ready pods
behind the one Service (as Argo Rollouts does without a traffic router), so weights are
approximated by replica counts: the canary always has at least one pod and so does the
stable version.

A step is judged on the canary's traffic (error rate, p99) and, with a quality gate, on
its live quality from the evaluation Jobs (spec.monitoring.quality): only an evaluation
whose window ends after the step's stepSeconds counts, and only once minLabeled of the
canary's predictions have feedback. Both fail closed: what cannot be judged waits, and
a wait past the step's deadline fails (for missing labels, unless failWithoutLabels is
false).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from mlplane_operator.api.v1alpha1.inferenceservice import Analysis, Quality, QualityReading

INFERENCE_PROTOCOLS = frozenset({"v1", "v2", "grpc"})  # the server's `protocol` label


def canary_split(total: int, weight: int) -> tuple[int, int]:
    """(stable replicas, canary replicas) for a canary `weight` percent of `total`."""
    total = max(total, 1)
    canary = max(1, round(total * weight / 100))
    stable = max(1, total - canary)
    return stable, canary


@dataclass(frozen=True)
class Traffic:
    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound in seconds, cumulative count)

    def __add__(self, other: Traffic) -> Traffic:
        merged: dict[float, float] = dict(self.buckets)
        for bound, count in other.buckets:
            merged[bound] = merged.get(bound, 0.0) + count
        return Traffic(
            self.requests + other.requests,
            self.errors + other.errors,
            tuple(sorted(merged.items())),
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile latency from the cumulative histogram, as Prometheus'
        histogram_quantile does (linear within the bucket)."""
        if not self.buckets or self.buckets[-1][1] == 0:
            return None
        total = self.buckets[-1][1]
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in self.buckets:
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound * 1000
                share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
                return (lower_bound + (bound - lower_bound) * share) * 1000
            lower_bound, lower_count = bound, count
        return lower_bound * 1000


def parse_traffic(metrics_text: str) -> Traffic:
    """Inference requests, errors (any non-2xx answer) and latency buckets from a
    server's /metrics."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            protocol = sample.labels.get("protocol")
            if protocol not in INFERENCE_PROTOCOLS:
                continue
            if sample.name == "mlplane_requests_total":
                requests += sample.value
                if not sample.labels.get("code", "").startswith("2"):
                    errors += sample.value
            elif sample.name == "mlplane_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Traffic(requests, errors, tuple(sorted(buckets.items())))


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "pass", "fail" or "wait"
    message: str
    reason: str = ""  # of the CanaryAnalysis condition; by outcome when empty


def analyse(
    traffic: Iterable[Traffic],
    max_error_rate: float | None,
    max_latency_p99_ms: float | None,
    min_requests: int,
    unreadable: int = 0,
) -> Verdict:
    """The verdict on a canary step. It fails closed: without the metrics of every
    canary pod (`unreadable` pods did not answer /metrics), or with none at all, it
    never passes; it waits, and the rollout's progress deadline ends the wait."""
    readings = list(traffic)
    if unreadable or not readings:
        return Verdict(
            "wait",
            f"could not read /metrics of {unreadable or 'any'} canary pod(s); "
            "no verdict without them",
        )
    total = sum(readings, Traffic())
    if total.requests < min_requests:
        return Verdict(
            "wait", f"{total.requests:.0f} of {min_requests} requests needed for analysis"
        )
    if max_error_rate is not None and total.error_rate > max_error_rate:
        return Verdict(
            "fail",
            f"error rate {total.error_rate:.1%} over {total.requests:.0f} requests "
            f"exceeds the maximum {max_error_rate:.1%}",
        )
    p99 = total.quantile_ms(0.99)
    if max_latency_p99_ms is not None and p99 is not None and p99 > max_latency_p99_ms:
        return Verdict(
            "fail", f"p99 latency {p99:.1f} ms exceeds the maximum {max_latency_p99_ms} ms"
        )
    p99_text = f"{p99:.1f} ms" if p99 is not None else "n/a"
    return Verdict(
        "pass",
        f"error rate {total.error_rate:.1%}, p99 {p99_text} over {total.requests:.0f} requests",
    )


def past_deadline(started: datetime | None, deadline_seconds: int, now: datetime) -> bool:
    """Whether a rollout that started at `started` has run out of time."""
    return started is not None and (now - started).total_seconds() > deadline_seconds


def analyse_quality(
    analysis: Analysis,
    quality: Quality,
    readings: Sequence[QualityReading],
    versions: tuple[int, int],
    step_due: datetime,
    overdue: bool,
) -> Verdict:
    """The quality gate of a canary step: `versions` is (canary, stable), `readings` the
    latest successful evaluation (status.quality, all of one window), and `step_due` the
    end of the step's stepSeconds. `overdue`: the step's deadline passed, so a verdict
    that would wait is final."""
    canary, stable = versions
    evaluated_until = max((r.window_end for r in readings), default=None)
    if evaluated_until is None or evaluated_until < step_due:
        message = f"waiting for an evaluation of v{canary} ending after {_iso(step_due)}"
        if overdue:
            return Verdict("fail", f"no verdict on quality: {message}", "QualityNotEvaluated")
        return Verdict("wait", message, "WaitingForEvaluation")
    by_version = {r.version: r for r in readings}
    needed = [canary, stable] if analysis.quality_tolerance is not None else [canary]
    short = [v for v in needed if _labeled(by_version.get(v)) < quality.min_labeled]
    if short:
        counts = ", ".join(f"v{v} has {_labeled(by_version.get(v))}" for v in short)
        message = f"{quality.min_labeled} labeled predictions needed; {counts}"
        if not overdue:
            return Verdict("wait", message, "WaitingForLabels")
        if analysis.fail_without_labels is False:
            return Verdict(
                "pass", f"quality not judged by the deadline ({message})", "QualityNotJudged"
            )
        return Verdict("fail", f"no verdict on quality by the deadline: {message}", "NoLabels")
    metric = quality.metric
    mine = by_version[canary]
    value = _value(mine)
    what = f"v{canary} live {metric.value} {value:.4g} over {mine.labeled} labeled predictions"
    if analysis.min_quality is not None and value < analysis.min_quality:
        return Verdict(
            "fail", f"{what} is below minQuality {analysis.min_quality:g}", "QualityGateFailed"
        )
    if analysis.max_error is not None and value > analysis.max_error:
        return Verdict(
            "fail", f"{what} is above maxError {analysis.max_error:g}", "QualityGateFailed"
        )
    if analysis.quality_tolerance is None:
        return Verdict("pass", what)
    theirs = _value(by_version[stable])
    worse = value - theirs if metric.lower_is_better else theirs - value
    against = f"stable v{stable}: {theirs:.4g}"
    if worse > analysis.quality_tolerance:
        return Verdict(
            "fail",
            f"{what} is {worse:.4g} worse than {against} (qualityTolerance "
            f"{analysis.quality_tolerance:g})",
            "QualityGateFailed",
        )
    return Verdict("pass", f"{what} ({against})")


def combine(traffic: Verdict, quality: Verdict) -> Verdict:
    """One verdict on a step from its traffic and its quality: a failure of either fails
    it, else a wait of either waits, else it passes with both messages."""
    for outcome in ("fail", "wait"):
        for verdict in (traffic, quality):
            if verdict.outcome == outcome:
                return verdict
    return Verdict("pass", f"{traffic.message}; {quality.message}")


def _labeled(reading: QualityReading | None) -> int:
    return reading.labeled if reading is not None and reading.value is not None else 0


def _value(reading: QualityReading) -> float:
    assert reading.value is not None  # only a reading with a value counts as labeled
    return reading.value


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
