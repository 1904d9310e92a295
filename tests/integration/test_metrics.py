"""--metrics-port: Prometheus metrics scraped from a running consumer agree with what reached Kafka."""

from __future__ import annotations

import socket
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .conftest import consumer_args, expected_aggregate, orders_to_count, run_script, start_script, summary

ORDERS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_until_done(port: int, orders: int, timeout: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            metrics = scrape(port)
        except OSError:  # not serving yet
            metrics = {}
        done = metrics.get("order_consumer_processed_total", 0) + metrics.get(
            "order_consumer_dead_lettered_total", 0
        )
        if done == orders and metrics.get("order_consumer_lag_records") == 0:
            return metrics
        assert time.monotonic() < deadline, f"consumer never finished: {metrics}"
        time.sleep(0.5)


def test_metrics_match_the_topics(bootstrap_servers, topics, tmp_path):
    produced = run_script(
        "producer", "--topic", topics.orders, "--count", str(ORDERS), "--interval", "0", "--seed", "11"
    )
    assert produced.returncode == 0, produced.stderr
    port = free_port()
    log = tmp_path / "consumer.log"
    consumer = start_script(
        "consumer",
        *consumer_args(topics, "--metrics-port", str(port), "--seed", "4", "--retry-backoff", "0"),
        stdout_path=log,
    )
    try:
        metrics = scrape_until_done(port, ORDERS)
    finally:
        consumer.terminate()
        assert consumer.wait(30) == 0

    expected = expected_aggregate(orders_to_count(bootstrap_servers, topics))
    dead_lettered = ORDERS - expected.count
    assert dead_lettered, "with a 30 % failure rate some of 300 orders reach the DLQ"
    assert metrics["order_consumer_processed_total"] == expected.count
    assert metrics["order_consumer_dead_lettered_total"] == dead_lettered
    assert metrics["order_consumer_running_average_price"] == float(expected.avg)
    assert metrics["order_consumer_total_price"] == float(expected.total_price)
    assert metrics["order_consumer_errors_total"] == 0
    final = summary(log.read_text())
    assert metrics["order_consumer_retries_total"] == int(final["retries"]) > 0


def test_metrics_port_in_use_is_one_line(bootstrap_servers, topics):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script("consumer", *consumer_args(topics, "--metrics-port", str(port)), timeout=60)
    assert result.returncode == 1
    assert f"error: cannot serve metrics on port {port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
