"""Canary arithmetic and analysis, on the metrics text `mlplane-serve` really exposes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlplane_operator.policies.rollout import (
    Traffic,
    analyse,
    canary_split,
    parse_traffic,
    past_deadline,
)

# As in runtimes/mlplane_runtime/server/metrics.py.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Server:
    """The server's collectors on a fresh registry: one pod's /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlplane_requests", "HTTP requests.", ["protocol", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "mlplane_request_duration_seconds",
            "Time to handle an inference request.",
            ["protocol"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def serve(self, protocol: str, code: int, seconds: float, count: int = 1) -> Server:
        for _ in range(count):
            self.requests.labels(protocol, str(code)).inc()
            if protocol in ("v1", "v2", "grpc"):
                self.latency.labels(protocol).observe(seconds)
        return self

    def metrics(self) -> str:
        return generate_latest(self.registry).decode()


# canary_split


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [(10, 10, (9, 1)), (10, 50, (5, 5)), (4, 25, (3, 1)), (5, 60, (2, 3)), (20, 10, (18, 2))],
)
def test_canary_gets_its_share_of_the_replicas(
    total: int, weight: int, expected: tuple[int, int]
) -> None:
    assert canary_split(total, weight) == expected


@pytest.mark.parametrize("total", [0, 1, 2, 3, 7, 25])
@pytest.mark.parametrize("weight", [1, 5, 10, 25, 50, 75, 90, 99])
def test_canary_and_stable_always_keep_at_least_one_replica(total: int, weight: int) -> None:
    stable, canary = canary_split(total, weight)
    assert stable >= 1
    assert canary >= 1


def test_canary_share_grows_with_its_weight() -> None:
    shares = [canary_split(10, weight)[1] for weight in (10, 25, 50, 75, 90)]
    assert shares == sorted(shares)


# parse_traffic


def test_inference_requests_and_their_errors_are_counted() -> None:
    text = (
        Server()
        .serve("v2", 200, 0.003, count=90)
        .serve("v1", 200, 0.004, count=10)
        .serve("v2", 500, 0.002, count=3)
        .serve("v1", 503, 0.002, count=1)
        .serve("v2", 400, 0.001, count=4)
        .metrics()
    )
    traffic = parse_traffic(text)
    assert traffic.requests == 108
    assert traffic.errors == 8  # every non-2xx answer to an inference request
    assert traffic.error_rate == pytest.approx(8 / 108)


def test_grpc_requests_count_with_rest_ones_in_one_analysis() -> None:
    """A canary served over both protocols: its gRPC errors and latency count as its
    REST ones do (the server labels them protocol="grpc", code = the HTTP status)."""
    text = (
        Server()
        .serve("v2", 200, 0.003, count=50)
        .serve("grpc", 200, 0.3, count=48)
        .serve("grpc", 500, 0.001, count=2)
        .metrics()
    )
    traffic = parse_traffic(text)
    assert traffic.requests == 100
    assert traffic.errors == 2
    assert traffic.quantile_ms(0.99) == pytest.approx(250 + 750 * (99 - 52) / 48)
    verdict = analyse([traffic], max_error_rate=0.01, max_latency_p99_ms=None, min_requests=10)
    assert verdict.outcome == "fail"


def test_health_and_metrics_requests_are_not_inference_traffic() -> None:
    text = (
        Server()
        .serve("v2", 200, 0.003, count=20)
        .serve("health", 503, 0.0, count=50)
        .serve("metrics", 200, 0.0, count=30)
        .serve("other", 404, 0.0, count=5)
        .metrics()
    )
    traffic = parse_traffic(text)
    assert traffic.requests == 20
    assert traffic.errors == 0


def test_latency_buckets_are_read_cumulatively_including_inf() -> None:
    traffic = parse_traffic(Server().serve("v2", 200, 0.003, count=4).metrics())
    bounds = dict(traffic.buckets)
    assert bounds[0.0025] == 0
    assert bounds[0.005] == 4
    assert bounds[float("inf")] == 4
    assert [b for b, _ in traffic.buckets] == sorted(bounds)


def test_a_server_that_served_nothing_has_no_traffic() -> None:
    traffic = parse_traffic(Server().metrics())
    assert traffic.requests == 0
    assert traffic.error_rate == 0.0
    assert traffic.quantile_ms(0.99) is None


# quantile_ms


def known_distribution() -> Traffic:
    """98 requests at 3 ms (bucket 2.5-5 ms) and 2 at 200 ms (bucket 100-250 ms)."""
    return parse_traffic(
        Server().serve("v2", 200, 0.003, count=98).serve("v2", 200, 0.2, count=2).metrics()
    )


def test_p99_interpolates_within_its_bucket_as_histogram_quantile_does() -> None:
    # rank 99 of 100 lies halfway between the 98th and 100th request of bucket 0.1-0.25 s
    assert known_distribution().quantile_ms(0.99) == pytest.approx(175.0)


def test_median_lies_in_the_bucket_of_most_requests() -> None:
    # rank 50 of the 98 requests in bucket 2.5-5 ms
    assert known_distribution().quantile_ms(0.5) == pytest.approx(2.5 + 2.5 * 50 / 98)


def test_quantile_beyond_the_last_bucket_is_its_upper_bound() -> None:
    traffic = parse_traffic(Server().serve("v2", 200, 3.0, count=10).metrics())
    assert traffic.quantile_ms(0.99) == pytest.approx(1000.0)


def test_traffic_of_several_pods_adds_up() -> None:
    fast = parse_traffic(Server().serve("v2", 200, 0.003, count=98).metrics())
    slow = parse_traffic(Server().serve("v2", 200, 0.2, count=2).serve("v2", 500, 0.2).metrics())
    total = fast + slow
    assert total.requests == 101
    assert total.errors == 1
    assert dict(total.buckets)[float("inf")] == 101


# analyse


def test_analysis_waits_for_enough_requests() -> None:
    traffic = [parse_traffic(Server().serve("v2", 200, 0.003, count=9).metrics())]
    verdict = analyse(traffic, 0.01, 50.0, min_requests=10)
    assert verdict.outcome == "wait"
    assert verdict.message == "9 of 10 requests needed for analysis"


def test_analysis_counts_the_requests_of_every_canary_pod() -> None:
    pod = parse_traffic(Server().serve("v2", 200, 0.003, count=6).metrics())
    assert analyse([pod, pod], 0.01, 50.0, min_requests=10).outcome == "pass"


def test_analysis_fails_on_too_many_errors() -> None:
    text = Server().serve("v2", 200, 0.003, count=95).serve("v2", 500, 0.003, count=5).metrics()
    verdict = analyse([parse_traffic(text)], 0.01, 50.0, min_requests=10)
    assert verdict.outcome == "fail"
    assert verdict.message == "error rate 5.0% over 100 requests exceeds the maximum 1.0%"


def test_analysis_fails_on_a_slow_p99() -> None:
    verdict = analyse([known_distribution()], 0.01, 50.0, min_requests=10)
    assert verdict.outcome == "fail"
    assert verdict.message == "p99 latency 175.0 ms exceeds the maximum 50.0 ms"


def test_analysis_passes_within_the_thresholds() -> None:
    verdict = analyse([known_distribution()], 0.01, 200.0, min_requests=100)
    assert verdict.outcome == "pass"
    assert verdict.message == "error rate 0.0%, p99 175.0 ms over 100 requests"


def test_analysis_without_thresholds_passes_once_enough_requests_arrived() -> None:
    text = Server().serve("v2", 500, 5.0, count=20).metrics()
    assert analyse([parse_traffic(text)], None, None, min_requests=10).outcome == "pass"


def test_analysis_fails_closed_without_the_metrics_of_every_canary_pod() -> None:
    pod = parse_traffic(Server().serve("v2", 200, 0.003, count=50).metrics())
    verdict = analyse([pod], 0.01, 50.0, min_requests=10, unreadable=1)
    assert verdict.outcome == "wait"
    assert verdict.message.startswith("could not read /metrics of 1 canary pod(s)")


def test_analysis_with_no_readings_at_all_never_passes_even_with_min_requests_zero() -> None:
    assert analyse([], None, None, min_requests=0).outcome == "wait"


def test_a_rollout_is_past_its_deadline_only_after_it() -> None:
    started = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
    assert not past_deadline(started, 600, started + timedelta(seconds=600))
    assert past_deadline(started, 600, started + timedelta(seconds=601))
    assert not past_deadline(None, 600, started)
