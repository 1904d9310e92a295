"""The README's first command, ./bin/demo, as a user runs it (no Docker engine here: local broker)."""

import subprocess

from ..environment import DEFAULT_BROKER, clean_env, shared_broker
from .conftest import REPO


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_demo_runs_producer_consumer_and_shows_the_dlq(topics):
    """On fresh topics and group: a test never touches the user's orders, orders-dlq or group."""
    names = {"ORDERS_TOPIC": topics.orders, "DLQ_TOPIC": topics.dlq, "KAFKA_GROUP_ID": topics.group}
    env = clean_env(**names, DEMO_ORDERS="5", DEMO_INTERVAL="0.2", DEMO_FAILURE_RATE="1")
    # As the README runs it (no KAFKA_BOOTSTRAP_SERVERS: bin/kafka-local's broker, here the one the
    # tests share) where that is the tests' broker and no Docker engine answers; else pointed at it.
    as_readme = shared_broker() == DEFAULT_BROKER and not docker_answers()
    if as_readme:
        del env["KAFKA_BOOTSTRAP_SERVERS"]
    result = subprocess.run(
        [REPO / "bin/demo"], capture_output=True, text=True, errors="replace", cwd=REPO, env=env, timeout=300
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    if as_readme:
        assert "== No Docker engine: starting the local broker (bin/kafka-local)" in out
    else:
        assert f"== Using the broker at {shared_broker()} (KAFKA_BOOTSTRAP_SERVERS)" in out
    assert out.count("producer | Sent order: {'orderId': 'ORD-") == 5
    assert f"consumer | Listening for orders on '{topics.orders}' topic" in out
    assert out.count("consumer | Permanent failure") >= 5  # failure rate 1: every order is dead-lettered
    assert "consumer | Summary: processed=0 dlq=" in out
    assert "== The DLQ, as kafka-console-consumer shows it" in out
    assert "dlq.error.type:TemporaryProcessingError" in out  # the console consumer printed headers
    assert "No order failed all its tries" not in out


def test_a_demo_whose_dlq_stays_empty_says_why(topics):
    """At failure rate 0 no order reaches the DLQ: the demo says so, and how to see one."""
    names = {"ORDERS_TOPIC": topics.orders, "DLQ_TOPIC": topics.dlq, "KAFKA_GROUP_ID": topics.group}
    env = clean_env(**names, DEMO_ORDERS="2", DEMO_INTERVAL="0.1", DEMO_FAILURE_RATE="0")
    result = subprocess.run(
        [REPO / "bin/demo"], capture_output=True, text=True, errors="replace", cwd=REPO, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("consumer | ✓ Processing successful") == 2
    assert "== No order failed all its tries this time: run bin/demo again" in result.stdout
