"""Exactly-once state: snapshot format, the snapshot/offset agreement check, the global average."""

from decimal import Decimal

import pytest

from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.exactly_once import snapshot_matches
from kafka_project.consumer.state import PartitionState, combined

STATE = PartitionState("order-consumer", "orders", 3, 12, Decimal("8342.17"), 15)


def test_snapshot_round_trips_exactly_and_is_keyed_by_group_topic_partition():
    assert PartitionState.from_json(STATE.to_json()) == STATE
    assert STATE.key == b"order-consumer:orders:3"
    assert b'"total": "8342.17"' in STATE.to_json()  # money as a decimal string, never a float


@pytest.mark.parametrize(
    ("state", "committed", "matches"),
    [
        (None, -1001, True),  # fresh partition: no snapshot, no committed offset
        (STATE, 15, True),
        (STATE, 16, False),  # the snapshot is behind (its transaction not visible yet)
        (None, 15, False),
        (STATE, -1001, False),
    ],
)
def test_a_snapshot_is_used_only_when_it_matches_the_committed_offset(state, committed, matches):
    assert snapshot_matches(state, committed) is matches


def test_global_average_is_sum_of_totals_over_sum_of_counts():
    partitions = [RunningAverage(1, Decimal("100.00")), RunningAverage(3, Decimal("30.00"))]
    total = combined(partitions)
    assert (total.count, total.total_price, total.avg) == (4, Decimal("130.00"), Decimal("32.50"))
    assert combined([]).avg == Decimal("0.00")
