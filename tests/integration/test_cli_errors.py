"""User mistakes give one clear line and a non-zero exit code, never a stack trace."""

import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import REPO, SCRIPTS, consumer_args, records, run_script, start_script, summary

FRESH_GROUP = f"cli-errors-{uuid.uuid4().hex[:8]}"  # never the default group of a broker we did not start


def missing_topic_line(topic: str, bootstrap_servers: str, settings: str = "") -> str:
    create = f"kafka-topics --bootstrap-server {bootstrap_servers} --create --topic {topic}{settings}"
    return (
        f"error: topic '{topic}' does not exist on {bootstrap_servers}; create it with "
        f"'bin/{create}' (with Docker: 'docker exec kafka {create}')\n"
    )


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("producer", ["--count", "1"]),
        ("consumer", ["--idle-timeout", "1"]),
        ("consumer_stats", []),
    ],
)
def test_unreachable_broker_is_one_line_within_seconds(script, args):
    started = time.monotonic()
    result = run_script(script, "--bootstrap-servers", "localhost:1", *args, timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr  # never a silent wait, then one error line
    waiting, error = lines
    assert waiting == "Waiting: no answer from Kafka at localhost:1 yet (giving up after 10 s)"
    assert error.startswith("error: cannot reach Kafka at localhost:1 (")
    assert error.endswith("; start one with 'docker compose up -d' or 'bin/kafka-local start'")


def test_producer_names_a_missing_topic(bootstrap_servers):
    result = run_script("producer", "--topic", "no-such-topic", "--count", "1")
    assert result.returncode == 1
    assert result.stderr == missing_topic_line("no-such-topic", bootstrap_servers)


def test_stats_names_a_missing_stats_topic(bootstrap_servers):
    result = run_script("consumer_stats", "--stats-topic", "no-such-stats-topic", timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == missing_topic_line(
        "no-such-stats-topic", bootstrap_servers, " --config cleanup.policy=compact"
    )


def test_replay_names_a_missing_dlq_topic_with_the_setting_it_needs(bootstrap_servers):
    result = run_script("dlq", "replay", "--topic", "no-such-dlq", "--group-id", FRESH_GROUP, timeout=30)
    assert result.returncode == 1
    assert result.stderr == missing_topic_line(
        "no-such-dlq", bootstrap_servers, " --config max.message.bytes=2097152"
    )


def test_consumer_waits_for_a_missing_topic_then_gives_up_at_idle_timeout(bootstrap_servers):
    started = time.monotonic()
    result = run_script(
        "consumer", "--topic", "no-such-topic", "--group-id", FRESH_GROUP, "--idle-timeout", "3"
    )
    waited = time.monotonic() - started
    assert result.returncode == 1
    error = missing_topic_line("no-such-topic", bootstrap_servers)
    assert result.stderr == error.replace("error: ", "Waiting: ", 1) + error  # one line each
    assert 3 <= waited < 30, waited  # it waited its idle timeout, then gave up


def test_wait_for_topics_0_makes_the_consumer_exit_at_once(bootstrap_servers):
    result = run_script(
        "consumer",
        "--topic",
        "no-such-topic",
        "--group-id",
        FRESH_GROUP,
        "--wait-for-topics",
        "0",
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr == missing_topic_line("no-such-topic", bootstrap_servers)


def test_a_missing_dlq_topic_is_named_with_the_setting_it_needs(bootstrap_servers, topics):
    args = consumer_args(topics, "--dlq-topic", "no-such-dlq", "--wait-for-topics", "0")
    result = run_script("consumer", *args, timeout=30)
    assert result.returncode == 1
    assert result.stderr == missing_topic_line(
        "no-such-dlq", bootstrap_servers, " --config max.message.bytes=2097152"
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
        admin.create_topics([NewTopic(topic, 1)])[topic].result(30)
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
        (["--max-attempts", "0"], "0 is not a whole number from 1 to 1000"),
        # From a hostile review: each was a traceback, or a start that never came.
        (["--max-attempts", "99999999999999999999"], "is not a whole number from 1 to 1000"),
        (["--work-time", "inf"], "inf is not a time of at most 86400 s (a day)"),
        (["--work-time", "1e10"], "1e10 is not a time of at most 86400 s (a day)"),
        (["--idle-timeout", "nan"], "nan is not a number"),
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


def test_an_invalid_group_protocol_from_the_environment_exits_2():
    """argparse checks a flag's choices but not a default from the environment: it was a KeyError."""
    result = run_script("consumer", timeout=30, KAFKA_GROUP_PROTOCOL="bogus")
    assert result.returncode == 2
    refusal = "KAFKA_GROUP_PROTOCOL='bogus' is not one of classic, classic-cooperative, consumer"
    assert refusal in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", ["consumer", "share_consumer"])
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--dlq-topic", "orders"], {}, "--topic and --dlq-topic are both 'orders'"),
        ([], {"ORDERS_TOPIC": "orders-dlq"}, "--topic and --dlq-topic are both 'orders-dlq'"),
        (["--stats-topic", "orders-dlq"], {}, "--dlq-topic and --stats-topic are both 'orders-dlq'"),
    ],
    ids=["dlq-flag", "topic-env", "stats-flag"],
)
def test_a_dlq_that_would_be_its_own_source_is_refused_at_start(script, args, env, message):
    """Accepted, one poison record was copied into its own topic 802 times in 8 s (107 MB)."""
    result = run_script(script, *args, timeout=30, **env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(f"error: {message}; they must be different topics")


# Each script's --help: its usage line, the first line of its docstring and flags only it has.
HELP = {
    "producer": (
        "producer.py",
        "Stream random orders to Kafka, one Avro",
        ["--count", "--interval", "--seed"],
    ),
    "consumer": (
        "consumer.py",
        "Consume orders, keep a running average",
        ["--failure-rate", "--exactly-once"],
    ),
    "dlq": (
        "dlq_producer.py",
        "The dead-letter queue: forward failed records",
        ["print every DLQ record, decoded", "send DLQ records back to their original topic"],
    ),
    "consumer_stats": ("stats.py", "Show the aggregate kept in orders-stats", ["--stats-topic", "--json"]),
    "share_consumer": (
        "share_consumer.py",
        "Consume orders in a share group (Kafka 4.2+, KIP-932)",
        ["--share-group", "--max-attempts", "--work-time"],
    ),
}


@pytest.mark.parametrize("script", HELP)
def test_every_script_has_help(script):
    result = run_script(script, "--help", timeout=30)
    assert result.returncode == 0
    name, summary_line, flags = HELP[script]
    assert result.stdout.startswith(f"usage: {name} [-h]")
    assert f"\n{summary_line}" in result.stdout
    assert all(flag in result.stdout for flag in flags), result.stdout


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("list", ["usage: dlq_producer.py list", "--json", "--timeout", "--bootstrap-servers"]),
        ("replay", ["usage: dlq_producer.py replay", "Replaying DLQ records", "--max-replays", "--dry-run"]),
    ],
)
def test_each_dlq_command_has_help(command, expected):
    result = run_script("dlq", command, "--help", timeout=30)
    assert result.returncode == 0
    assert all(text in result.stdout for text in expected), result.stdout


@pytest.mark.parametrize("script", ["producer", "consumer", "consumer_stats", "share_consumer"])
def test_scripts_also_run_as_modules(script):
    module = ".".join(SCRIPTS[script].relative_to(REPO).with_suffix("").parts)
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert result.returncode == 0
    name, summary_line, _flags = HELP[script]
    assert result.stdout.startswith(f"usage: {name} [-h]")
    assert f"\n{summary_line}" in result.stdout


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


@pytest.mark.parametrize(
    ("python_flags", "interval"),
    [(["-u"], "0"), ([], "0"), (["-u"], "0.05")],
    ids=["unbuffered", "block-buffered", "with-an-interval"],
)
def test_a_closed_stdout_stops_a_script_like_a_unix_tool(bootstrap_servers, topics, python_flags, interval):
    """`producer.py | head -1`: exit 141 (128 + SIGPIPE), as `yes | head` gives, after flushing what
    was handed to librdkafka: the summary (on stderr now) is true, every order it counts is in the
    topic. Before, the exit skipped flush() and the topic stayed empty. Block-buffered stdout (no
    -u, as the README runs the scripts) breaks in Python's last flush too. With an interval the
    closed pipe is met first by a delivery line: that run never ended."""
    # Far more orders than the pipe's buffer holds, so the producer is still writing when head leaves.
    args = ["--topic", topics.orders, "--interval", interval, "--count", "1000000"]
    process = start_script(
        "producer", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, python_flags=python_flags
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        while not process.stdout.readline().startswith(b"Sent order"):  # orders on their way
            pass
        process.stdout.close()
        assert process.wait(60) == 141, process.stderr.read().decode()
        report, stopped = process.stderr.read().decode().splitlines()
    finally:
        process.kill()
    assert stopped == "stopped: stdout was closed"
    figures = summary(report)
    assert int(figures["sent"]) > 0 and figures["delivered"] == figures["sent"] and figures["failed"] == "0"
    assert len(records(bootstrap_servers, topics.orders)) == int(figures["sent"])
