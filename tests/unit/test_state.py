"""Exactly-once state: the aggregate in offset metadata, the published snapshot, the global average."""

from decimal import Decimal

import pytest

from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.state import (
    PartitionState,
    aggregate_from_metadata,
    aggregate_to_metadata,
    combined,
    snapshot_from_json,
)

STATE = PartitionState("order-consumer", "orders", 3, 12, Decimal("8342.17"), 15)


def test_snapshot_round_trips_exactly_and_is_keyed_by_group_topic_partition():
    assert snapshot_from_json(STATE.to_json()) == STATE
    assert STATE.key == b"order-consumer:orders:3"
    assert b'"total": "8342.17"' in STATE.to_json()  # money as a decimal string, never a float


def test_the_aggregate_round_trips_through_offset_metadata_exactly():
    aggregate = RunningAverage(12, Decimal("8342.17"))
    metadata = aggregate_to_metadata(aggregate)
    assert metadata == '{"count": 12, "total": "8342.17"}'  # money as a decimal string, never a float
    assert aggregate_from_metadata(metadata) == aggregate
    assert len(metadata.encode()) < 4096  # the broker's offset.metadata.max.bytes


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "",  # an offset committed without --exactly-once, or by kafka-consumer-groups --reset-offsets
        "not json",
        '{"count": 3}',
        '{"count": "x", "total": "1.00"}',
        '{"count": -1, "total": "1.00"}',
        '{"count": 1, "total": "NaN"}',
        "[1, 2]",
    ],
)
def test_an_offset_without_an_aggregate_restores_none(metadata):
    assert aggregate_from_metadata(metadata) is None


def test_global_average_is_sum_of_totals_over_sum_of_counts():
    partitions = [RunningAverage(1, Decimal("100.00")), RunningAverage(3, Decimal("30.00"))]
    total = combined(partitions)
    assert (total.count, total.total_price, total.avg) == (4, Decimal("130.00"), Decimal("32.50"))
    assert combined([]).avg == Decimal("0.00")
