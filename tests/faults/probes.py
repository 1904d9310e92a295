"""What the cluster scenarios ask the cluster: who leads a partition, who coordinates a transaction,
which controller is active, whether every replica is back in sync."""

from __future__ import annotations

import re
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from .harness import REPO

# The probes ask while brokers are down: librdkafka's connection errors are expected, not news.
QUIET = {"log_level": 0}


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **QUIET})


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    metadata = admin(bootstrap).list_topics(topic, timeout=30)
    return metadata.topics[topic].partitions[partition].leader


def busiest_partition(bootstrap: str, topic: str) -> int:
    """The partition with the most records so far."""
    partitions = admin(bootstrap).list_topics(topic, timeout=30).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-probe", **QUIET})
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions
        }
    finally:
        consumer.close()
    return max(ends, key=lambda p: ends[p])


def out_of_sync(bootstrap: str) -> list[str]:
    """Partitions (internal topics too) whose in-sync replicas are fewer than their replicas."""
    metadata = admin(bootstrap).list_topics(timeout=30)
    return [
        f"{name}-{p.id}"
        for name, topic in metadata.topics.items()
        for p in topic.partitions.values()
        if set(p.isrs) != set(p.replicas)
    ]


def wait_until_in_sync(bootstrap: str, timeout_s: float = 120) -> float:
    """What an operator waits for between two broker restarts; returns the seconds waited."""
    started = time.monotonic()
    while lagging := out_of_sync(bootstrap):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"replicas still out of sync after {timeout_s:.0f} s: {lagging[:5]}")
        time.sleep(0.5)
    return time.monotonic() - started


def kafka_tool(tool_class: str, *args: str) -> str:
    result = subprocess.run(
        [REPO / "bin/kafka-run-class", tool_class, *args], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"{tool_class} {' '.join(args)}: {result.stderr.strip()[-500:]}")
    return result.stdout


def transaction_coordinator(bootstrap: str, transactional_id_prefix: str, timeout_s: float = 60) -> int:
    """The broker id coordinating the open transactions of a transactional.id starting with the
    prefix (the consumer's is its group id and a uuid), as `kafka-transactions list` shows it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listing = kafka_tool(
            "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bootstrap, "list"
        )
        for line in listing.splitlines()[1:]:
            columns = line.split()
            if columns and columns[0].startswith(transactional_id_prefix):
                return int(columns[1])
        time.sleep(0.5)
    raise TimeoutError(f"no transactional.id {transactional_id_prefix}* listed within {timeout_s:.0f} s")


def active_controller(bootstrap: str) -> int:
    """KRaft: the node id of the quorum's leader, as `kafka-metadata-quorum describe --status` shows it."""
    status = kafka_tool(
        "org.apache.kafka.tools.MetadataQuorumCommand",
        "--bootstrap-server",
        bootstrap,
        "describe",
        "--status",
    )
    match = re.search(r"^LeaderId:\s+(\d+)", status, flags=re.MULTILINE)
    if not match:
        raise RuntimeError(f"no LeaderId in: {status}")
    return int(match.group(1))
