"""User mistakes give one clear line and a non-zero exit code, never a stack trace."""

import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import REPO, consumer_args, run_script, start_script


@pytest.mark.parametrize("script", ["producer", "consumer"])
def test_unreachable_broker_is_one_line_within_seconds(script):
    started = time.monotonic()
    result = run_script(
        script,
        "--bootstrap-servers",
        "localhost:1",
        "--count" if script == "producer" else "--idle-timeout",
        "1",
        timeout=60,
    )
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    assert "error: cannot reach Kafka at localhost:1" in result.stderr
    assert "bin/kafka-local start" in result.stderr
    assert "Traceback" not in result.stderr


def test_producer_names_a_missing_topic(bootstrap_servers):
    result = run_script("producer", "--topic", "no-such-topic", "--count", "1")
    assert result.returncode == 1
    assert "error: topic 'no-such-topic' does not exist" in result.stderr


def test_consumer_waits_for_a_missing_topic_then_gives_up_at_idle_timeout(bootstrap_servers):
    result = run_script("consumer", "--topic", "no-such-topic", "--idle-timeout", "3")
    assert result.returncode == 1
    assert "Waiting: topic 'no-such-topic' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_wait_for_topics_0_makes_the_consumer_exit_at_once(bootstrap_servers):
    result = run_script("consumer", "--topic", "no-such-topic", "--wait-for-topics", "0", timeout=30)
    assert result.returncode == 1
    assert "Waiting" not in result.stderr
    assert result.stderr.strip() == (
        f"error: topic 'no-such-topic' does not exist on {bootstrap_servers}; create it with "
        f"'bin/kafka-topics --bootstrap-server {bootstrap_servers} --create --topic no-such-topic'"
    )


def test_producer_waits_for_a_topic_created_meanwhile(bootstrap_servers, tmp_path):
    topic = f"created-later-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "producer.log"
    producer = start_script(
        "producer",
        "--topic",
        topic,
        "--count",
        "5",
        "--interval",
        "0",
        "--wait-for-topics",
        "60",
        stdout_path=log,
    )
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        deadline = time.monotonic() + 30
        while f"Waiting: topic '{topic}' does not exist" not in log.read_text():
            assert time.monotonic() < deadline and producer.poll() is None, log.read_text()
            time.sleep(0.2)
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        assert producer.wait(60) == 0, log.read_text()
        assert "Summary: sent=5 delivered=5 failed=0" in log.read_text()
    finally:
        producer.kill()
        admin.delete_topics([topic])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-port", "70000"], "70000 is not a port number (1-65535)"),
        (["--wait-for-topics", "-5"], "-5 is negative"),
        (["--failure-rate", "1.5"], "1.5 is not between 0 and 1"),
        (["--max-attempts", "0"], "0 is not a positive whole number"),
        (["--retry-backoff", "-1"], "-1 is negative"),
        (["--schema", "/no/such/order.avsc"], "cannot read schema file /no/such/order.avsc"),
        (["--max-attempts", "20", "--retry-backoff", "1"], "waits over 10 s per order"),
    ],
)
def test_invalid_input_exits_2(args, message):
    result = run_script("consumer", *args, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", ["producer", "consumer", "dlq"])
def test_every_script_has_help(script):
    result = run_script(script, "--help", timeout=30)
    assert result.returncode == 0
    assert "--bootstrap-servers" in result.stdout or "list" in result.stdout


@pytest.mark.parametrize("module", ["producer", "consumer"])
def test_scripts_also_run_as_modules(module):
    result = subprocess.run(
        [sys.executable, "-m", f"kafka_project.{module}.{module}", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 0
    assert "--bootstrap-servers" in result.stdout


def test_sigterm_stops_the_consumer_cleanly_with_a_summary(bootstrap_servers, topics, tmp_path):
    log = tmp_path / "consumer.log"
    consumer = start_script("consumer", *consumer_args(topics), stdout_path=log)
    deadline = time.monotonic() + 30
    while "Listening for orders" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(30) == 0
    assert "Summary: processed=0 dlq=0 retries=0 total=0.00 avg=0.00" in log.read_text()
