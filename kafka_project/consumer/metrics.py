"""Prometheus metrics for --metrics-port, read from the consumer's latest Status at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kafka_project.consumer.status import Status
from kafka_project.errors import UserError

PREFIX = "order_consumer"


class StatusCollector(Collector):
    """Counters and gauges made from one Status per scrape, so they always agree with each other."""

    def __init__(self, latest: Callable[[], Status]) -> None:
        self.latest = latest

    def collect(self) -> Iterator[Metric]:
        status = self.latest()
        yield CounterMetricFamily(f"{PREFIX}_processed", "Orders processed successfully", status.processed)
        yield CounterMetricFamily(f"{PREFIX}_retries", "Failed tries that were retried", status.retries)
        yield CounterMetricFamily(
            f"{PREFIX}_dead_lettered", "Records moved to the DLQ (acknowledged)", status.dead_lettered
        )
        yield CounterMetricFamily(
            f"{PREFIX}_errors", "Kafka client errors, consume errors, aborted transactions", status.errors
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_running_average_price", "Average price of the processed orders", float(status.average)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_total_price", "Sum of the prices of the processed orders", float(status.total_price)
        )
        if status.lag is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_lag_records", "Records in the assigned partitions not yet consumed", status.lag
            )


def serve_metrics(port: int, latest: Callable[[], Status]) -> Callable[[], None]:
    """Serve /metrics on every interface at `port`; returns the function that stops the server."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(latest))
    try:
        server, _thread = start_http_server(port, registry=registry)
    except OSError as exc:
        raise UserError(f"cannot serve metrics on port {port}: {exc.strerror}") from None
    return server.shutdown
