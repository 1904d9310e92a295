"""A share group's settings on the broker (Kafka 4.2+): where a new group starts, what it reads,
and the limits the share consumer must fit in.

Share groups keep these settings on the broker, per group (kafka-configs --entity-type groups),
falling back to the broker's group.share.* settings; a client cannot set them in its own config.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from kafka_project.cluster import client_config
from kafka_project.consumer.retry import RetryPolicy
from kafka_project.errors import InvalidInputError, UserError

# What the classic consumer sets in its own config (auto.offset.reset=earliest, read_committed), set
# on the group when the group has not chosen otherwise: Kafka's defaults are latest, read_uncommitted.
GROUP_SETTINGS = {"share.auto.offset.reset": "earliest", "share.isolation.level": "read_committed"}
DELIVERY_LIMIT = "share.delivery.count.limit"
LOCK_DURATION = "share.record.lock.duration.ms"
HEARTBEAT_INTERVAL = "share.heartbeat.interval.ms"
ADMIN_TIMEOUT_S = 30.0
# Deliveries a record needs: one cut short by its consumer's death, one to try it again, the last
# (dead-lettered untried) for a record that kills every consumer that takes it.
MIN_DELIVERY_LIMIT = 3
NO_SHARE_GROUPS = (
    "the broker at {} does not serve share groups: they need Kafka 4.2 or later "
    "(bin/kafka-local --kraft start)"
)


@dataclass(frozen=True)
class ShareGroupLimits:
    delivery_limit: int  # deliveries of a record; one that ends unanswered after the last archives it
    lock_duration_s: float  # how long a consumer holds a delivered record before it goes elsewhere
    heartbeat_s: float  # a member learns of its partitions in a heartbeat: joining takes one or two


def prepare_share_group(bootstrap_servers: str, group: str, policy: RetryPolicy) -> ShareGroupLimits:
    """Set GROUP_SETTINGS where the group has none of its own, and refuse limits the retries do not fit in."""
    admin = AdminClient(client_config(bootstrap_servers))
    configs = describe_group(admin, bootstrap_servers, group)
    unset = {
        name: value
        for name, value in GROUP_SETTINGS.items()
        if name in configs and configs[name].source != ConfigSource.GROUP_CONFIG.value
    }
    if unset:
        set_group_configs(admin, group, unset)
    limits = ShareGroupLimits(
        int(configs[DELIVERY_LIMIT].value),
        int(configs[LOCK_DURATION].value) / 1000,
        int(configs[HEARTBEAT_INTERVAL].value) / 1000,
    )
    check_limits(limits, policy, group, bootstrap_servers)
    return limits


def describe_group(admin: AdminClient, bootstrap_servers: str, group: str) -> dict:
    resource = ConfigResource(ResourceType.GROUP, group)
    try:
        configs = admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)[resource].result()
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError.INVALID_REQUEST, KafkaError.UNSUPPORTED_VERSION):
            raise UserError(NO_SHARE_GROUPS.format(bootstrap_servers)) from None
        raise UserError(
            f"cannot read share group {group}'s settings from {bootstrap_servers}: {exc.args[0].str()}"
        ) from None
    if not {DELIVERY_LIMIT, LOCK_DURATION, HEARTBEAT_INTERVAL} <= set(configs):
        raise UserError(
            f"the broker at {bootstrap_servers} does not serve share groups (Kafka 4.2 or later does)"
        )
    return configs


def set_group_configs(admin: AdminClient, group: str, settings: dict[str, str]) -> None:
    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in settings.items()
    ]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    try:
        admin.incremental_alter_configs([resource], request_timeout=ADMIN_TIMEOUT_S)[resource].result()
    except KafkaException as exc:
        wanted = ",".join(f"{name}={value}" for name, value in settings.items())
        raise UserError(
            f"cannot set {wanted} on share group {group} ({exc.args[0].str()}); set them with "
            f"'KAFKA_TOOLS=4 bin/kafka-configs --alter --entity-type groups --entity-name {group} "
            f"--add-config {wanted}'"
        ) from None


def check_limits(limits: ShareGroupLimits, policy: RetryPolicy, group: str, bootstrap_servers: str) -> None:
    """The broker archives (drops, keeping no copy) a record whose last allowed delivery ends without
    an answer: released, or its lock expired because its consumer died. The consumer therefore does
    not try a record at its last delivery but dead-letters it (TriesUsedUp), and needs two
    deliveries before it: one cut short by a death, and one to try the order again. An order's
    tries happen within one delivery, so their backoffs must fit in half the lock."""
    if limits.delivery_limit < MIN_DELIVERY_LIMIT:
        fix = (
            f"'KAFKA_TOOLS=4 bin/kafka-configs --bootstrap-server {bootstrap_servers} --alter "
            f"--entity-type groups --entity-name {group} --add-config {DELIVERY_LIMIT}={MIN_DELIVERY_LIMIT}'"
        )
        raise InvalidInputError(
            f"share group {group} delivers a record at most {limits.delivery_limit} times "
            f"({DELIVERY_LIMIT}); the share consumer needs at least {MIN_DELIVERY_LIMIT}: one whose "
            "consumer dies, one to try the order again, and the last for the DLQ (untried, or the "
            f"broker would drop it): raise the limit (at most group.share.max.delivery.count.limit, "
            f"10 by default) with {fix}"
        )
    if policy.worst_case_s() > limits.lock_duration_s / 2:
        raise InvalidInputError(
            f"--retry-backoff {policy.backoff_s} holds a failing order {policy.worst_case_s():g} s "
            f"between its {policy.max_attempts} tries; share group {group} locks a record for "
            f"{limits.lock_duration_s:g} s ({LOCK_DURATION}): keep the holds under half of that"
        )
