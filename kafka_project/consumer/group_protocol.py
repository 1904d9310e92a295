"""--group-protocol: each group protocol's consumer settings, and the one refusal librdkafka keeps
to its debug log (a broker without KIP-848), made a clear error instead of a silent consumer."""

from __future__ import annotations

import logging

from kafka_project.errors import UserError

# Under the classic protocols a killed consumer's partitions go to another one after
# session.timeout.ms (Kafka's default is 45 s); heartbeats come from a background thread, so slow
# retries do not count. Under KIP-848 the broker sets it (group.consumer.session.timeout.ms;
# bin/kafka-local sets 10 s as here). A tuning: --config may set its own.
CLASSIC_SESSION_TIMEOUT = {"session.timeout.ms": 10000}
GROUP_PROTOCOLS: dict[str, dict[str, object]] = {
    "classic": {"group.protocol": "classic", "partition.assignment.strategy": "range,roundrobin"},
    "classic-cooperative": {
        "group.protocol": "classic",
        "partition.assignment.strategy": "cooperative-sticky",
    },
    "consumer": {"group.protocol": "consumer"},
}


class RefusedProtocolWatch(logging.Handler):
    """A broker without KIP-848 refuses ConsumerGroupHeartbeat; librdkafka says so only in its
    `cgrp` debug log and then retries for ever, so the consumer would sit there without a word."""

    def __init__(self) -> None:
        super().__init__()
        self.refusal: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "ConsumerGroupHeartbeat" in message and "not supported" in message:
            self.refusal = message

    def check(self, bootstrap_servers: str) -> None:
        if self.refusal:
            raise UserError(
                f"the broker at {bootstrap_servers} does not support --group-protocol consumer "
                "(KIP-848 needs Kafka 4, e.g. bin/kafka-local --kraft start); use --group-protocol "
                "classic or classic-cooperative"
            )


refused_protocol = RefusedProtocolWatch()
_group_log = logging.getLogger("librdkafka.cgrp")
_group_log.addHandler(refused_protocol)
_group_log.propagate = False
_group_log.setLevel(logging.DEBUG)


def group_tuning(protocol: str) -> dict[str, object]:
    """The settings of a group protocol that --config may override."""
    return {} if protocol == "consumer" else dict(CLASSIC_SESSION_TIMEOUT)


def group_settings(protocol: str) -> dict[str, object]:
    """The consumer settings of a group protocol; KIP-848's with the group log watched."""
    settings = dict(GROUP_PROTOCOLS[protocol])
    if protocol == "consumer":
        settings.update({"debug": "cgrp", "logger": _group_log})
    return settings
