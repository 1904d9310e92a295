"""Retries on a schedule: orders of other keys go on while one waits for its next try; orders of one
key are processed one after the other, in offset order; nothing is lost or counted twice."""

import itertools
import signal
import time
from collections import defaultdict
from decimal import Decimal

import pytest

from kafka_project.consumer import consumer
from kafka_project.consumer.processor import OrderProcessor
from kafka_project.consumer.schedule import Work
from kafka_project.consumer.state import aggregate_from_metadata
from kafka_project.order_codec import OrderCodec, record_size
from tests.faults.harness import successful_order_ids
from tests.faults.share_scenarios import MOVED as MOVED_TO_DLQ

from .conftest import (
    committed_offset,
    committed_offset_reader,
    consume_in_process,
    consumer_args,
    expected_aggregate,
    kafka_offsets,
    orders_to_count,
    produce_orders,
    records,
    run_script,
    start_script,
    summary,
    wait_until,
)

codec = OrderCodec()
MODES = {"at-least-once": [], "exactly-once": ["--exactly-once"]}


def produce_for_customers(topics, count: int, customers: int, seed: int) -> None:
    produce_orders(topics.orders, count, "--customers", str(customers), "--seed", str(seed))


@pytest.mark.parametrize("mode", MODES)
def test_5000_orders_of_10_customers_keep_per_key_order_and_backoff(bootstrap_servers, topics, mode):
    produce_for_customers(topics, 5000, customers=10, seed=11)
    flags = [*MODES[mode], "--failure-rate", "0.3", "--seed", "5", "--idle-timeout", "3", "--quiet"]
    args = consumer.parse_args([*consumer_args(topics, *flags), "--bootstrap-servers", bootstrap_servers])
    tries: list[tuple[float, bytes, int, int]] = []  # (when, key, offset, try number), as they ran
    finished = []

    def record_tries_and_the_final_aggregate(processor: OrderProcessor) -> None:
        try_once, finish = processor.try_once, processor.finish

        def recorded(work: Work) -> None:
            tries.append((time.monotonic(), work.msg.key(), work.offset, work.tries))
            try_once(work)

        def finish_and_keep_the_aggregate(clean: bool) -> None:  # close() forgets the revoked partitions
            finish(clean)
            finished.append(processor.running_average())

        processor.try_once = recorded  # type: ignore[method-assign]
        processor.finish = finish_and_keep_the_aggregate  # type: ignore[method-assign]

    processor = consume_in_process(args, record_tries_and_the_final_aggregate)

    # Every order counted or dead-lettered, once.
    expected = expected_aggregate(orders_to_count(bootstrap_servers, topics))
    dead = records(bootstrap_servers, topics.dlq)
    assert dead, "with a 30 % failure rate some orders reach the DLQ"
    (average,) = finished
    assert average == expected
    assert processor.dead_lettered == len(dead) and average.count + len(dead) == 5000
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 5000
    if mode == "exactly-once":  # the state committed with the offset is the same figure
        (committed,) = kafka_offsets(bootstrap_servers, topics)
        assert aggregate_from_metadata(committed.metadata) == average

    # Per key, tries run in offset order: no try of an order before the last try of the one before.
    by_key: dict[bytes, list[int]] = defaultdict(list)
    by_order: dict[int, list[float]] = defaultdict(list)
    for when, key, offset, _try in tries:
        by_key[key].append(offset)
        by_order[offset].append(when)
    assert len(by_key) == 10
    for key, offsets in by_key.items():
        assert offsets == sorted(offsets), f"{key!r} was processed out of offset order"
    # Each order's tries are spaced by at least its backoff: 0.1 s after try 1, 0.2 s after try 2.
    gaps = [
        (later - earlier, processor.policy.delay_after(k))
        for times in by_order.values()
        for k, (earlier, later) in enumerate(itertools.pairwise(times), start=1)
    ]
    assert gaps and all(gap >= backoff for gap, backoff in gaps), min(g - b for g, b in gaps)
    # And keys overlap: other keys' tries ran while an order waited for its next one.
    positions = {(key, offset, n): i for i, (_, key, offset, n) in enumerate(tries)}
    waits = [
        positions[(k, o, n + 1)] - positions[(k, o, n)]
        for (k, o, n) in positions
        if (k, o, n + 1) in positions
    ]
    assert max(waits) > 1, "no order's retry ever let another order through"


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_with_many_orders_waiting_loses_nothing(bootstrap_servers, topics, mode, tmp_path):
    """Half the tries fail and retries wait 0.5 s and 1 s: when the kill lands, thousands of orders
    are waiting for their next try, above and below orders already done."""
    count = 10_000
    produce_orders(topics.orders, count, "--seed", "8")
    args = consumer_args(
        topics, *MODES[mode], "--failure-rate", "0.5", "--retry-backoff", "0.5", "--seed", "2"
    )
    first_log = tmp_path / "first.log"
    with committed_offset_reader(bootstrap_servers, topics.group) as committed:
        first = start_script("consumer", *args, stdout_path=first_log)
        try:
            wait_until(lambda: committed(topics.orders) > 0, 60, "the first consumer's first commit")
            received = first_log.read_text().count("Received order")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            first.kill()
        at_kill = committed(topics.orders)
        assert 0 < at_kill < count, "the kill should land mid-stream, after some commits"
        assert received - at_kill > 500, f"only {received - at_kill} orders past the commit position"

        second = run_script("consumer", *args, "--idle-timeout", "5")
        (tmp_path / "second.log").write_text(second.stdout + second.stderr)
        assert second.returncode == 0, second.stderr
        assert committed(topics.orders) >= count  # exactly-once: a transaction marker may follow

    at_least_once = mode == "at-least-once"
    to_count = orders_to_count(bootstrap_servers, topics, dlq_copies_may_repeat=at_least_once)
    if at_least_once:
        first_counted = set(successful_order_ids(first_log.read_text()))
        second_counted = set(successful_order_ids(second.stdout))
        lost = {o.order_id for o in to_count} - first_counted - second_counted
        assert lost == set(), f"orders lost; logs in {tmp_path}"
        # What may repeat is what was past the commit position at the kill, and nothing else: the
        # second consumer starts there and counts every order from there on that it does not
        # dead-letter itself, so its own figure is exact.
        source = records(bootstrap_servers, topics.orders)
        offset_of = {codec.decode(m.value()).order_id: m.offset() for m in source}
        assert all(offset_of[order_id] >= at_kill for order_id in first_counted & second_counted)
        second_dead = set(MOVED_TO_DLQ.findall(second.stdout))
        after_kill = [codec.decode(m.value()) for m in source if m.offset() >= at_kill]
        second_expected = expected_aggregate([o for o in after_kill if o.order_id not in second_dead])
        result = summary(second)
        assert (int(result["processed"]), Decimal(result["total"])) == (
            second_expected.count,
            second_expected.total_price,
        )
    else:  # the committed aggregate is exact, and each failed order is in the DLQ once
        (offset,) = kafka_offsets(bootstrap_servers, topics)
        assert aggregate_from_metadata(offset.metadata) == expected_aggregate(to_count)


class FlowRecord:
    """What a consumer's flow control did, wrapped into its processor by `prepare`."""

    def __init__(self) -> None:
        self.in_progress: list[int] = []  # orders in progress after each record received
        self.flow: list[tuple[bool, int]] = []  # (paused, orders in progress) after each flow-control step

    def prepare(self, processor: OrderProcessor) -> None:
        receive, pause_or_resume = processor.receive, processor.pause_or_resume

        def receive_and_count(*received) -> None:
            receive(*received)
            self.in_progress.append(processor.schedule.size)

        def pause_or_resume_and_note() -> None:
            pause_or_resume()
            self.flow.append((processor.paused, processor.schedule.size))

        processor.receive = receive_and_count  # type: ignore[method-assign]
        processor.pause_or_resume = pause_or_resume_and_note  # type: ignore[method-assign]


def bounded_consumer_args(bootstrap_servers, topics, backoff: str, limit: int, *extra: str):
    """Every try fails and an order has two: every order waits `backoff` seconds in progress."""
    flags = ["--failure-rate", "1", "--max-attempts", "2", "--retry-backoff", backoff]
    flags += ["--max-in-flight", str(limit), "--idle-timeout", "3", "--quiet", *extra]
    return consumer.parse_args([*consumer_args(topics, *flags), "--bootstrap-servers", bootstrap_servers])


def test_short_waits_hold_back_without_pausing(bootstrap_servers, topics):
    """Full for a moment, the consumer stops polling but keeps librdkafka's prefetched records:
    never more than --max-in-flight orders in progress, and no pause()."""
    count, limit = 16, 4
    produce_orders(topics.orders, count)
    record = FlowRecord()
    args = bounded_consumer_args(bootstrap_servers, topics, "0.2", limit)
    processor = consume_in_process(args, record.prepare)
    in_progress, flow = record.in_progress, record.flow

    assert len(in_progress) == count and max(in_progress) == limit
    assert processor.dead_lettered == len(records(bootstrap_servers, topics.dlq)) == count
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == count
    assert not any(paused for paused, _ in flow)


def test_long_waits_pause_and_resume_at_half(bootstrap_servers, topics, tmp_path):
    """Orders arrive 0.25 s apart and each waits 2.5 s: the consumer fills up, pauses after
    PAUSE_WHEN_FULL_FOR_S, and resumes while half its orders are still in progress."""
    count, limit = 12, 4
    producing = []

    def start_producing_once_assigned(processor: OrderProcessor) -> None:
        if processor.assigned and not producing:
            steady = ("--topic", topics.orders, "--count", str(count), "--interval", "0.25")
            producing.append(start_script("producer", *steady, stdout_path=tmp_path / "producer.log"))

    record = FlowRecord()
    args = bounded_consumer_args(bootstrap_servers, topics, "2.5", limit)
    try:
        processor = consume_in_process(args, record.prepare, start_producing_once_assigned)
    finally:
        for producer in producing:
            producer.kill()
    in_progress, flow = record.in_progress, record.flow

    assert len(in_progress) == count and max(in_progress) == limit
    assert processor.dead_lettered == len(records(bootstrap_servers, topics.dlq)) == count
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == count
    resumed_with = [size for (was, _), (now, size) in itertools.pairwise(flow) if was and not now]
    assert all(size <= limit // 2 for size in resumed_with), resumed_with
    assert any(size > 0 for size in resumed_with), f"never resumed before running empty: {resumed_with}"


def test_the_byte_budget_bounds_orders_in_progress_as_the_count_does(bootstrap_servers, topics):
    """Orders of any size wait while a payment service is down: a count limit alone let 250
    orders of 900 KB reach 505 MB. Budget: three of the largest records (value, key, headers) and
    a byte: the fourth order fills it, the consumer takes no more and pauses."""
    count = 12
    produce_orders(topics.orders, count, "--seed", "3", interval=0.1)
    largest = max(record_size(m) for m in records(bootstrap_servers, topics.orders))
    budget = ("--max-in-flight-bytes", str(3 * largest + 1))
    record = FlowRecord()
    args = bounded_consumer_args(bootstrap_servers, topics, "2.5", 10_000, *budget)
    processor = consume_in_process(args, record.prepare)
    in_progress, flow = record.in_progress, record.flow
    assert len(in_progress) == count
    assert max(in_progress) == 4
    assert processor.dead_lettered == len(records(bootstrap_servers, topics.dlq)) == count
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == count
    assert any(paused for paused, _ in flow)
