"""The transactional producer's settings, shared by the exactly-once consumer and the DLQ replay."""

from __future__ import annotations

from kafka_project.cluster import client_config
from kafka_project.dlq.headers import DLQ_MAX_MESSAGE_BYTES, DLQ_QUEUE_KBYTES

TRANSACTION_TIMEOUT_MS = 10000


def transactional_producer_config(bootstrap_servers: str, transactional_id: str) -> dict:
    # A unique transactional.id per process is safe: since KIP-447 zombies are fenced through the
    # consumer group generation passed to send_offsets_to_transaction.
    # A short transaction.timeout.ms: the open transaction of a crashed process holds back every
    # read_committed reader of the topics it wrote to until the broker aborts it.
    return client_config(
        bootstrap_servers,
        **{
            "transactional.id": transactional_id,
            "linger.ms": 5,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
            "queue.buffering.max.kbytes": DLQ_QUEUE_KBYTES,  # its DLQ copies' bound
        },
    )
