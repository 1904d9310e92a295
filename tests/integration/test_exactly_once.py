"""--exactly-once: the aggregate survives a restart, and the stats view shows the exact global figures."""

import json
from decimal import Decimal

from kafka_project.order_codec import OrderCodec

from .conftest import consumer_args, headers_of, records, run_script, summary

codec = OrderCodec()


def test_aggregate_is_restored_after_a_restart_and_matches_the_orders(bootstrap_servers, topics):
    args = consumer_args(
        topics, "--exactly-once", "--failure-rate", "0.3", "--retry-backoff", "0", "--idle-timeout", "4"
    )
    run_script(
        "producer", "--topic", topics.orders, "--count", "400", "--interval", "0", "--seed", "1", "--quiet"
    )
    first = run_script("consumer", *args, "--quiet", "--seed", "1")
    assert first.returncode == 0, first.stderr
    run_script(
        "producer", "--topic", topics.orders, "--count", "100", "--interval", "0", "--seed", "2", "--quiet"
    )
    second = run_script("consumer", *args, "--seed", "2")
    assert second.returncode == 0, second.stderr

    first_count = int(summary(first)["processed"])
    assert f"Restored {topics.orders} [0]: Running Average: " in second.stdout
    assert f"Count: {first_count}) at offset " in second.stdout

    dead_offsets = {
        int(headers_of(msg)["dlq.original.offset"]) for msg in records(bootstrap_servers, topics.dlq)
    }
    assert len(dead_offsets) == len(records(bootstrap_servers, topics.dlq))  # each failed order once
    prices = [
        codec.decode(m.value()).price
        for m in records(bootstrap_servers, topics.orders)
        if m.offset() not in dead_offsets
    ]
    expected_total = sum(prices, Decimal("0.00"))

    final = summary(second)
    assert int(final["processed"]) == len(prices)  # cumulative over both runs
    assert Decimal(final["total"]) == expected_total

    view = run_script("consumer_stats", "--stats-topic", topics.stats, "--group-id", topics.group, "--json")
    stats = json.loads(view.stdout)
    assert stats["count"] == len(prices)
    assert Decimal(stats["total"]) == expected_total
    assert stats["partitions"][0]["next_offset"] == 500
