"""Share-group scenarios (Kafka 4, KIP-932): share_consumer.py, several consumers on one partition.

At-least-once only (share groups have no transactions). Besides the suite's check (every order
counted or dead-lettered, none lost), each scenario checks what share groups promise: every
consumer got work, a killed consumer's records go to the others, the DLQ holds each failed record
once, byte for byte, with the delivery count as its attempts.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

from confluent_kafka.admin import AdminClient

from kafka_project.cluster import read_topic
from kafka_project.consumer.retry import SimulatedFailures
from kafka_project.consumer.share_group import set_group_configs
from kafka_project.consumer.state import combined, read_consumer_states

from .harness import (
    FaultBroker,
    Row,
    Run,
    Scenario,
    all_in_dlq,
    codec,
    produce_with_poison,
    successful_order_ids,
)

SEED = 7  # every consumer draws the same failures for an order: the DLQ's content is known
# A share consumer that keeps up alone gets every record, and the broker hands out whole producer
# batches: the orders stream in one or two per batch, faster than one consumer whose tries take
# 5 ms can process them, so that all three have work.
WORK = ("--seed", str(SEED), "--work-time", "0.005")
RECEIVED = re.compile(r"^Received order: \{'orderId': '([^']+)'", flags=re.MULTILINE)
MOVED = re.compile(r"^Moved to DLQ: orderId (\S+)", flags=re.MULTILINE)
# Delivered again: after a consumer's death or a release.
REDELIVERED = re.compile(r"^Received order: \{'orderId': '([^']+)'.*\(delivery [2-9]\)$", flags=re.MULTILINE)
# Holding an order for its last try: between its second failed try and its third (or, when the
# broker's delivery count is the try number, at its third delivery).
AT_LAST_TRY = re.compile(r"^  Attempt 2/3 failed|\(delivery 3\)$", flags=re.MULTILINE)
LOCK_5_S = {"share.record.lock.duration.ms": "5000"}
SUMMARY = re.compile(r"^Summary: processed=(\d+) dlq=(\d+)", flags=re.MULTILINE)


def dead_letters(run: Run) -> list:
    return list(read_topic(run.bootstrap, run.dlq, timeout_s=120))


def check_dlq_copies(run: Run, row: Row, orders_attempts: bytes) -> None:
    """Each DLQ record is its original's key and value, byte for byte; orders carry
    `orders_attempts` deliveries, poison 0."""
    originals = {(m.partition(), m.offset()): m for m in read_topic(run.bootstrap, run.orders, timeout_s=120)}
    for copy in dead_letters(run):
        headers = dict(copy.headers())
        original = originals[(int(headers["dlq.original.partition"]), int(headers["dlq.original.offset"]))]
        if (copy.key(), copy.value()) != (original.key(), original.value()):
            row.notes.append(f"DLQ copy of offset {original.offset()} differs from the original")
        poison = headers["dlq.error.type"] != b"TemporaryProcessingError"
        if headers["dlq.attempts"] != (b"0" if poison else orders_attempts):
            row.notes.append(f"offset {original.offset()}: dlq.attempts {headers['dlq.attempts']!r}")
    if row.notes:
        row.exact = False


def check_dead_lettered_exactly_the_failing(run: Run, row: Row) -> None:
    """The orders moved to the DLQ are those whose three tries all fail under SEED."""
    sent = re.findall(r"^Sent order: \{'orderId': '([^']+)'", run.read("producer-*.log"), flags=re.MULTILINE)
    failures = SimulatedFailures(0.3, SEED)
    expected_dead = {i for i in sent if all(failures.draw(i, k) < 0.3 for k in (1, 2, 3))}
    dead = set(MOVED.findall(run.read("consumer-*.log")))
    if dead != expected_dead:
        row.notes.append(
            f"dead-lettered {len(dead)} orders, expected {len(expected_dead)} "
            f"({len(dead - expected_dead)} that had tries left)"
        )


def wait_for_match(log: Path, pattern: re.Pattern, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pattern.search(log.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {pattern.pattern!r} in {log}")
        time.sleep(0.01)


def check_combined_figure(run: Run, row: Row, may_repeat: int = 0) -> None:
    """stats.py's figure (the consumers' snapshots added up) against the orders that were counted:
    exact, or over by at most `may_repeat` orders (and then the total is not checked)."""
    states = read_consumer_states(run.bootstrap, run.stats, run.group)
    total = combined([state.aggregate() for state in states])
    row.figures.append(f"combined figure: {total.count} orders over {len(states)} consumers")
    dead = {int(dict(m.headers())["dlq.original.offset"]) for m in dead_letters(run)}
    counted = [
        codec.decode(m.value()) for m in read_topic(run.bootstrap, run.orders) if m.offset() not in dead
    ]
    expected = sum((order.price for order in counted), Decimal("0.00"))
    if not len(counted) <= total.count <= len(counted) + may_repeat or (
        not may_repeat and total.total_price != expected
    ):
        row.notes.append(
            f"combined {total.count} orders, {total.total_price}; expected {len(counted)}, {expected}"
            + (f" (at most {may_repeat} more)" if may_repeat else "")
        )
        row.exact = False


def share_three_consumers(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Three share consumers on one partition: all three do work, the DLQ holds exactly the orders
    that failed three times."""
    run = Run(broker, "share-3-consumers-1-partition", mode, workdir, share=True)
    consumers = [run.start_consumer("--idle-timeout", "8", *WORK) for _ in range(3)]
    producer = run.start_producer(orders, interval=0.002)
    for process in [producer, *consumers]:
        if process.wait(300) != 0:
            run.notes.append(run.exited(process, process.args[2]))
    row = run.check()
    work = [sum(map(int, SUMMARY.findall(log.read_text())[-1])) for log in run.consumer_logs]
    row.figures.append(f"records done per consumer: {work}")
    if not all(work):
        row.notes.append(f"a consumer did no work: {work}")
    check_dead_lettered_exactly_the_failing(run, row)
    row.exact = row.exact and not row.notes and row.counted_twice == 0
    check_dlq_copies(run, row, orders_attempts=b"3")
    check_combined_figure(run, row)
    return row


def counted_by_the_victim_and_the_others(run: Run) -> int:
    """Orders the killed consumer (consumer-0) and another one both counted: all that the combined
    figure may count twice, as only a counted order can be in a snapshot."""
    victim = set(successful_order_ids(run.consumer_logs[0].read_text()))
    return len(victim & set(successful_order_ids(run.read("consumer-[12].log"))))


def share_consumer_killed(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """SIGKILL one of three share consumers in the middle of a batch (answered only once the whole
    batch is decided): the records it held come back when their lock expires (5 s here), to the others."""
    run = Run(broker, "share-consumer-sigkill", mode, workdir, share=True)
    set_group_configs(AdminClient({"bootstrap.servers": run.bootstrap}), run.group, LOCK_5_S)
    victim = run.start_consumer("--idle-timeout", "12", *WORK)
    others = [run.start_consumer("--idle-timeout", "12", *WORK) for _ in range(2)]
    producer = run.start_producer(orders, interval=0.002)
    run.wait_for_output("Received order", 20, logs="consumer-0.log")
    run.kill(victim)
    killed_at = time.monotonic()
    for process in [producer, *others]:
        if process.wait(300) != 0:
            run.notes.append(run.exited(process, process.args[2]))
    row = run.check()
    victim_log = run.consumer_logs[0].read_text()
    unanswered = set(RECEIVED.findall(victim_log)) - set(successful_order_ids(victim_log))
    others_done = set(successful_order_ids(run.read("consumer-[12].log"))) | set(
        MOVED.findall(run.read("consumer-[12].log"))
    )
    taken_over = unanswered & others_done
    row.figures.append(
        f"held by the killed consumer and done by the others: {len(taken_over)}; "
        f"the others exited {time.monotonic() - killed_at:.1f} s after the kill (12 s idle timeout)"
    )
    if not taken_over:
        row.notes.append("none of the killed consumer's records was done by the others")
        row.exact = False
    check_combined_figure(run, row, may_repeat=counted_by_the_victim_and_the_others(run))
    return row


def share_consumer_killed_at_its_last_try(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """SIGKILL one of three share consumers while it holds an order at its last try: the records it
    held come back with a delivery used up, and each still gets every try it was promised. Nothing
    is dead-lettered as TriesUsedUp after one death, and the DLQ holds exactly the orders whose three
    (seeded) tries fail."""
    run = Run(broker, "share-consumer-killed-at-its-last-try", mode, workdir, share=True)
    set_group_configs(AdminClient({"bootstrap.servers": run.bootstrap}), run.group, LOCK_5_S)
    victim = run.start_consumer("--idle-timeout", "12", *WORK, backoff=0.2)
    others = [run.start_consumer("--idle-timeout", "12", *WORK, backoff=0.2) for _ in range(2)]
    producer = run.start_producer(orders, interval=0.002)
    wait_for_match(run.consumer_logs[0], AT_LAST_TRY, timeout_s=120)
    run.kill(victim)
    for process in [producer, *others]:
        if process.wait(300) != 0:
            run.notes.append(run.exited(process, process.args[2]))
    row = run.check()
    held = set(RECEIVED.findall(run.consumer_logs[0].read_text())) & set(
        REDELIVERED.findall(run.read("consumer-[12].log"))
    )
    row.figures.append(f"records the killed consumer held, delivered again to the others: {len(held)}")
    if not held:
        row.notes.append("none of the killed consumer's records came back to the others")
    used_up = sum(dict(m.headers())["dlq.error.type"] == b"TriesUsedUp" for m in dead_letters(run))
    if used_up:
        row.notes.append(f"{used_up} records dead-lettered as TriesUsedUp after one death")
    check_dead_lettered_exactly_the_failing(run, row)
    row.exact = row.exact and not row.notes
    check_combined_figure(run, row, may_repeat=counted_by_the_victim_and_the_others(run))
    return row


def share_poison_and_failing(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Poison and orders that fail every try, two share consumers: each in the DLQ once."""
    run = Run(broker, "share-poison-always-failing", mode, workdir, share=True)
    poison = produce_with_poison(run, orders)
    consumers = [run.start_consumer("--idle-timeout", "10", failure_rate=1.0) for _ in range(2)]
    for process in consumers:
        if process.wait(300) != 0:
            run.notes.append(run.exited(process, "a consumer"))
    row = all_in_dlq(run)
    kinds = Counter(dict(m.headers())["dlq.error.type"] for m in dead_letters(run))
    row.figures.append(f"DLQ by error type: { {k.decode(): n for k, n in kinds.items()} }")
    if kinds.total() - kinds[b"TemporaryProcessingError"] != poison:
        row.notes.append(f"DLQ by error type {dict(kinds)}, expected {poison} poison records")
    check_dlq_copies(run, row, orders_attempts=b"3")
    return row


def share_consumers_interrupted(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Ctrl-C (SIGINT) to all three share consumers at once, mid-stream, then one consumer to the
    end: a clean stop finishes the batch in hand, so nothing is counted twice and no record is
    dead-lettered for deliveries it never had a try in."""
    run = Run(broker, "share-3-consumers-sigint", mode, workdir, share=True)
    consumers = [run.start_consumer(*WORK) for _ in range(3)]
    producer = run.start_producer(orders, interval=0.002)
    run.wait_for_output("Received order", orders // 3)
    for process in consumers:
        process.send_signal(signal.SIGINT)
    for process in consumers:
        if process.wait(120) != 0:
            run.notes.append(f"an interrupted consumer exited {process.returncode}")
    if producer.wait(300) != 0:
        run.notes.append("producer exited non-zero")
    run.run_consumer_to_end(idle_timeout=10)
    row = run.check()
    used_up = sum(dict(m.headers())["dlq.error.type"] == b"TriesUsedUp" for m in dead_letters(run))
    if used_up:
        row.notes.append(f"{used_up} records dead-lettered as TriesUsedUp after a clean stop")
    row.exact = row.exact and not row.notes and row.counted_twice == 0
    check_combined_figure(run, row)
    return row


SHARE_SCENARIOS: dict[str, Scenario] = {
    "share-3-consumers-1-partition": share_three_consumers,
    "share-consumer-sigkill": share_consumer_killed,
    "share-consumer-killed-at-its-last-try": share_consumer_killed_at_its_last_try,
    "share-3-consumers-sigint": share_consumers_interrupted,
    "share-poison-always-failing": share_poison_and_failing,
}
