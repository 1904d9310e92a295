"""The producer's orders that librdkafka gave back for a topic it briefly did not know (a restarted
broker says so while it recovers its partitions): each is sent again only if the topic does not
hold it already, so a record the broker wrote before it died is not written twice."""

import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_project.producer.producer import producer_config
from kafka_project.producer.sender import DeliveryReport, OrderSender, Unsent

from .conftest import records


def given_back(value: bytes, timestamp_ms: int) -> Unsent:
    return Unsent(key=b"key", value=value, since=time.monotonic(), timestamp_ms=timestamp_ms)


def test_a_given_back_order_the_topic_holds_is_not_sent_again(bootstrap_servers, topics):
    before = int(time.time() * 1000) - 1000
    producer = Producer(producer_config(bootstrap_servers))
    for value in (b"order-1", b"order-2", b"order-3"):
        producer.produce(topics.orders, key=b"key", value=value)
    assert producer.flush(30) == 0
    report = DeliveryReport(quiet=True)
    sender = OrderSender(producer, bootstrap_servers, topics.orders, report)
    # As after a broker restart: two of these had been written before it died, two had not.
    given = (b"order-2", b"order-4", b"order-3", b"order-5")
    report.unsent.extend(given_back(value, before) for value in given)

    sender.send_again()

    assert sender.flush(30) == 0
    assert sender.found_written == 2
    values = [msg.value() for msg in records(bootstrap_servers, topics.orders)]
    assert values == [b"order-1", b"order-2", b"order-3", b"order-4", b"order-5"]  # their order kept


def test_orders_given_back_by_librdkafka_wait_until_the_topic_can_be_read(bootstrap_servers):
    """A real give-back: librdkafka fails the queued orders for a topic that does not exist
    (auto-creation is off), the sender keeps them, and sends them once the topic is there."""
    topic = f"orders-appears-later-{uuid.uuid4().hex[:8]}"
    report = DeliveryReport(quiet=True)
    config = {**producer_config(bootstrap_servers), "topic.metadata.propagation.max.ms": 1000}
    producer = Producer({**config, "on_delivery": report})
    sender = OrderSender(producer, bootstrap_servers, topic, report)
    sender.send(b"key", b"order-1")
    sender.send(b"key", b"order-2")
    deadline = time.monotonic() + 30
    while len(report.unsent) < 2 and time.monotonic() < deadline:
        producer.poll(0.2)
    assert [u.value for u in report.unsent] == [b"order-1", b"order-2"]

    sender.send_again()  # the topic cannot be read: nothing is sent, the orders wait
    assert len(report.unsent) == 2 and sender.next_read_back > time.monotonic()

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        assert sender.flush(60) == 0  # flush waits for the next read-back, then sends them
        assert [msg.value() for msg in records(bootstrap_servers, topic)] == [b"order-1", b"order-2"]
        assert sender.found_written == 0 and report.failed == 0
    finally:
        admin.delete_topics([topic])[topic].result(30)
