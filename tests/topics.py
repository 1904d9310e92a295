"""The topics a test run needs, created as the project's setup creates them (bin/kafka-local,
kafka-init in docker-compose.yml): orders, a DLQ with its limits, a compacted stats topic."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from kafka_project.consumer.state import STATS_TOPIC_CONFIG
from kafka_project.dlq.headers import DLQ_TOPIC_CONFIG


def create_order_topics(
    admin: AdminClient,
    orders: str,
    dlq: str,
    stats: str,
    partitions: int = 1,
    orders_config: dict | None = None,
) -> None:
    topics = [
        NewTopic(orders, partitions, config=orders_config or {}),
        NewTopic(dlq, 1, config=DLQ_TOPIC_CONFIG),
        NewTopic(stats, 1, config=STATS_TOPIC_CONFIG),
    ]
    for future in admin.create_topics(topics).values():
        future.result(30)


def set_topic_config(admin: AdminClient, topic: str, name: str, value: str) -> None:
    """Change one setting of an existing topic (kafka-configs --alter)."""
    entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(30)
