"""Errors the Kafka clients report, caused for real on the broker: a consumer fenced by another
with its group.instance.id (fatal), a topic deleted under a running consumer (not fatal), and
records the broker refuses to a producer."""

from __future__ import annotations

import subprocess
import time

from confluent_kafka import OFFSET_INVALID as OFFSET_NONE
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_project.consumer.processor import JOIN_GRACE_S
from kafka_project.dlq.headers import DLQ_TOPIC_CONFIG

from ..topics import set_topic_config
from .conftest import (
    committed_offset,
    consumer_args,
    headers_of,
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
    # The grace is counted from the revoke the deletion causes, then --idle-timeout (3 s).
    assert JOIN_GRACE_S <= time.monotonic() - deleted_at < JOIN_GRACE_S + 30
    assert running.returncode == 0, err
    assert err.splitlines() == [
        f"kafka: Subscribed topic not available: {topics.orders}: Broker: Unknown topic or partition"
    ]
    assert (summary(out)["processed"], summary(out)["dlq"]) == ("20", "0")
    admin.create_topics([NewTopic(topics.orders, 1)])[topics.orders].result(30)  # the fixture deletes it


def test_dlq_copies_to_a_dlq_topic_deleted_meanwhile_are_sent_again_until_it_is_back(
    bootstrap_servers, topics, tmp_path
):
    """At-least-once: the DLQ topic is deleted under a running consumer. librdkafka fails each copy
    (the topic is unknown); the publisher sends it again, with a line, and holds its offset until
    the recreated topic acknowledges it: every original in the DLQ once, all committed."""
    settings = tmp_path / "client.properties"
    settings.write_text("topic.metadata.propagation.max.ms=2000\ntopic.metadata.refresh.interval.ms=1000\n")
    log = tmp_path / "consumer.log"
    flags = ("--failure-rate", "1", "--max-attempts", "1", "--config", str(settings))
    running = start_script("consumer", *consumer_args(topics, *flags, "--idle-timeout", "5"), stdout_path=log)
    wait_until(lambda: "Listening for orders" in log.read_text(), 60, "the consumer's start")
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.delete_topics([topics.dlq])[topics.dlq].result(30)
    produce_orders(topics.orders, 5)
    wait_until(lambda: "; retrying" in log.read_text(), 60, "a DLQ write failed and sent again")
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) in (OFFSET_NONE, 0)  # held
    admin.create_topics([NewTopic(topics.dlq, 1, config=DLQ_TOPIC_CONFIG)])[topics.dlq].result(30)
    assert running.wait(120) == 0, log.read_text()
    text = log.read_text()
    assert f"DLQ write for {topics.orders} [0] offset 0 failed (" in text
    copies = records(bootstrap_servers, topics.dlq)
    by_offset = {int(headers_of(m)["dlq.original.offset"]): m.value() for m in copies}
    assert len(copies) == 5, text
    assert by_offset == {m.offset(): m.value() for m in records(bootstrap_servers, topics.orders)}
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 5
    assert summary(text)["dlq"] == "5"


def test_a_join_the_broker_refuses_for_good_is_one_line_not_a_retry_loop(bootstrap_servers, topics, tmp_path):
    """session.timeout.ms below the broker's group.min.session.timeout.ms (6 s): every join is
    refused. One error line and exit 1, before --idle-timeout, not a line every few seconds."""
    settings = tmp_path / "client.properties"
    settings.write_text("session.timeout.ms=1000\n")
    produce_orders(topics.orders, 5)
    args = consumer_args(topics, "--quiet", "--config", str(settings), "--idle-timeout", "60")
    started = time.monotonic()
    result = run_script("consumer", *args, timeout=120)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "error: the group refused this consumer: JoinGroup failed: Broker: Invalid session timeout "
        "(see --config)"
    ]
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == OFFSET_NONE
