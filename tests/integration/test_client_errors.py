"""Errors the Kafka clients report, caused for real on the broker: a consumer fenced by another
with its group.instance.id (fatal), a topic deleted under a running consumer (not fatal), and
records the broker refuses to a producer."""

from __future__ import annotations

import subprocess
import time

from confluent_kafka.admin import AdminClient, NewTopic

from kafka_project.consumer.processor import JOIN_GRACE_S

from ..topics import set_topic_config
from .conftest import (
    committed_offset,
    consumer_args,
    produce_orders,
    records,
    run_script,
    start_script,
    summary,
    wait_until,
)


def output_of(process: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """stdout and stderr of a script started with pipes, once it has exited."""
    out, err = process.communicate(timeout=timeout)
    return out.decode(), err.decode()


def test_a_consumer_fenced_by_another_with_its_instance_id_stops_with_one_line(
    bootstrap_servers, topics, tmp_path
):
    """A static member (group.instance.id in --config) whose id a second consumer takes: librdkafka
    reports the first one fenced, and it can neither read nor commit any more. It must stop with
    one error line and exit 1 (not run on idle until --idle-timeout and exit 0); the second goes on
    from the first one's last commit."""
    settings = tmp_path / "static.properties"
    settings.write_text("group.instance.id=orders-consumer-1\n")
    args = consumer_args(topics, "--failure-rate", "0", "--quiet", "--config", str(settings))
    produce_orders(topics.orders, 100)
    first = start_script(
        "consumer", *args, "--idle-timeout", "120", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_until(
        lambda: committed_offset(bootstrap_servers, topics.group, topics.orders) == 100,
        60,
        "the first consumer's commit of the 100 orders",
    )
    second = start_script(
        "consumer", *args, "--idle-timeout", "8", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    fenced_at = time.monotonic()
    out, err = output_of(first)
    assert time.monotonic() - fenced_at < 30  # at once, not at its idle timeout
    assert first.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    [line] = errors  # librdkafka's words, as it gives them
    assert line.startswith(
        "error: Kafka consumer failed: Fatal error: Broker: Static consumer fenced by other consumer "
        "with same group.instance.id"
    ), err
    assert "Traceback" not in err
    assert summary(out)["processed"] == "100"

    produce_orders(topics.orders, 50, "--seed", "2")
    out, err = output_of(second)
    assert second.returncode == 0, err
    assert summary(out)["processed"] == "50"  # the first one's 100 were committed
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 150


def test_orders_the_broker_refuses_are_counted_as_failed_and_exit_1(bootstrap_servers, topics):
    """The topic takes no record as large as an order (max.message.bytes=10): every delivery fails
    for good, each with a line naming the order's key, and the summary says so."""
    set_topic_config(
        AdminClient({"bootstrap.servers": bootstrap_servers}), topics.orders, "max.message.bytes", "10"
    )
    result = run_script("producer", "--topic", topics.orders, "--count", "5", "--quiet", timeout=120)
    assert result.returncode == 1, result.stderr
    assert summary(result) == {"sent": "5", "delivered": "0", "failed": "5"}
    failures = [
        line for line in result.stderr.splitlines() if line.startswith("Delivery failed for the order keyed ")
    ]
    assert len(failures) == 5 and all(
        line.endswith(": Broker: Message size too large") for line in failures
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert records(bootstrap_servers, topics.orders) == []


def test_a_topic_deleted_under_the_consumer_is_one_line_and_idle_timeout_still_ends_it(
    bootstrap_servers, topics, tmp_path
):
    """librdkafka reports the subscribed topic gone (a consumer error that is not fatal) and the
    classic protocol then joins no group at all: --idle-timeout must still end the consumer, after
    the grace it gives a join (JOIN_GRACE_S), with the orders it counted."""
    settings = tmp_path / "client.properties"
    settings.write_text("topic.metadata.refresh.interval.ms=1000\n")  # notice the deletion at once
    produce_orders(topics.orders, 20)
    args = consumer_args(topics, "--failure-rate", "0", "--quiet", "--config", str(settings))
    running = start_script(
        "consumer", *args, "--idle-timeout", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_until(
        lambda: committed_offset(bootstrap_servers, topics.group, topics.orders) == 20, 60, "the 20 orders"
    )
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.delete_topics([topics.orders])[topics.orders].result(30)
    deleted_at = time.monotonic()
    out, err = output_of(running, timeout=120)
    assert time.monotonic() - deleted_at < JOIN_GRACE_S + 30
    assert running.returncode == 0, err
    assert err.splitlines() == [
        f"kafka: Subscribed topic not available: {topics.orders}: Broker: Unknown topic or partition"
    ]
    assert (summary(out)["processed"], summary(out)["dlq"]) == ("20", "0")
    admin.create_topics([NewTopic(topics.orders, 1)])[topics.orders].result(30)  # the fixture deletes it
