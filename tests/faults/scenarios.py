"""The fault scenarios. Each takes (broker, mode, orders, workdir) and returns a checked Row.

`orders` sets the size: the suite runs a few thousand, the pytest versions a few hundred.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_project.cluster import read_topic

from .cluster_scenarios import CLUSTER_SCENARIOS
from .harness import (
    REPO,
    FaultBroker,
    Row,
    Run,
    Scenario,
    all_in_dlq,
    produce_with_poison,
    sent_order_ids,
)
from .share_scenarios import SHARE_SCENARIOS

# Scenario names for the consumers' --group-protocol
SUFFIX = {"classic": "", "classic-cooperative": "-cooperative", "consumer": "-kip848"}


def consumer_killed_5_times(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    run = Run(broker, "consumer-sigkill-x5", mode, workdir)
    run.produce(orders)
    rng = random.Random(5)
    for _ in range(5):
        consumer = run.start_consumer(backoff=0.01)
        # Kill at a random point once this consumer is working: after 1 to 40 more orders.
        run.wait_for_output(
            "Received order", run.read("consumer-*.log").count("Received order") + rng.randint(1, 40)
        )
        run.kill(consumer)
    run.run_consumer_to_end()
    return run.check()


def broker_killed(which: str) -> Scenario:
    def scenario(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
        run = Run(broker, f"{which}-sigkill", mode, workdir)
        consumer = run.start_consumer("--idle-timeout", "20")
        producer = run.start_producer(orders, interval=0.002)
        run.wait_for_output("Received order", max(10, orders // 5))
        run.mark_fault()
        broker.kill(which)
        time.sleep(3)
        broker.start()
        if producer.wait(300) != 0:
            run.notes.append("producer exited non-zero")
        if consumer.wait(300) != 0:
            run.notes.append("consumer exited non-zero")
            run.run_consumer_to_end()  # what a supervisor would do: start it again
        return run.check()

    return scenario


HISTORY_TOPICS = 30  # of 10 partitions each: what the restarted broker recovers before it serves


def give_the_broker_history(broker: FaultBroker) -> None:
    """Topics to recover after a SIGKILL: while the restarted broker loads them, it briefly
    answers that a topic does not exist (on a nearly empty broker the window rarely opens)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    wanted = [NewTopic(f"history-{n:02d}", 10) for n in range(HISTORY_TOPICS)]
    created = []
    for topic, future in admin.create_topics(wanted).items():
        with contextlib.suppress(KafkaException):  # there from an earlier row on this broker
            future.result(60)
            created.append(topic)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
    for topic in created:  # segments to recover, as on a broker that has served for a while
        for n in range(500):
            producer.produce(topic, key=str(n).encode(), value=bytes(500))
            producer.poll(0)
    assert producer.flush(120) == 0


def broker_outage_with_history(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """The broker SIGKILLed for 20 s under a streaming producer (200 orders/s) and consumer, on a
    broker with 300 partitions to recover. librdkafka fails the queued orders of a topic the
    restarted broker does not know yet: before, thousands were lost and the producer died with a
    traceback and no summary. Every order it reports delivered must be in the topic, and counted."""
    give_the_broker_history(broker)
    run = Run(broker, "broker-outage-20s", mode, workdir, partitions=6)
    consumer = run.start_consumer("--idle-timeout", "40")
    producer = run.start_producer(4000, interval=0.005)
    run.wait_for_output("Received order", 500)
    run.mark_fault()
    broker.kill("kafka")
    time.sleep(20)
    broker.start()
    if producer.wait(600) != 0:
        run.notes.append(run.exited(producer, "producer"))
    if consumer.wait(300) != 0:
        run.notes.append("consumer exited non-zero")
    # Its --idle-timeout may end it while the broker recovers (no record for 40 s is its rule): a
    # supervisor starts it again; the check judges both runs together.
    run.run_consumer_to_end()
    row = run.check()
    log = run.read("producer-*.log")
    if f"Summary: sent=4000 delivered={row.produced} failed=0" not in log:
        row.notes.append(f"the producer's summary is not sent=4000 delivered={row.produced} failed=0")
        row.exact = False
    row.figures.append(
        f"unknown-topic window hit: {'yes' if 'unknown to the broker (restarting?)' in log else 'no'}"
    )
    return row


# Exit code 130, or killed by the SIGINT itself (a Ctrl-C that lands while Python is shutting down
# and has given the signal back its default action): the shell reports both as 130.
INTERRUPTED = (130, -signal.SIGINT)


def dlq_write_during_outage(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Every order fails for good, and the broker dies while their DLQ copies are being written."""
    run = Run(broker, "dlq-write-broker-down", mode, workdir)
    run.produce(orders)
    consumer = run.start_consumer("--idle-timeout", "20", failure_rate=1.0, backoff=0.001)
    run.wait_for_output("Permanent failure", max(5, orders // 10))
    run.mark_fault()
    broker.kill("kafka")
    # Longer than transaction.timeout.ms (10 s): in exactly-once mode the restarted broker aborts
    # the open transaction and fences its producer, which the consumer must survive.
    time.sleep(12)
    broker.start()
    if consumer.wait(300) != 0:
        run.notes.append("consumer exited non-zero")
        run.run_consumer_to_end(failure_rate=1.0)
    return all_in_dlq(run)


def poison_records(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    run = Run(broker, "poison-8-kinds", mode, workdir)
    poison = produce_with_poison(run, orders)
    run.run_consumer_to_end()
    row = run.check()
    headers = [dict(msg.headers()) for msg in read_topic(run.bootstrap, run.dlq)]
    attempts = Counter(
        h["dlq.attempts"] for h in headers if h["dlq.error.type"] != b"TemporaryProcessingError"
    )
    if attempts != Counter({b"0": poison}):
        row.notes.append(f"poison DLQ records by attempts: {dict(attempts)}")
        row.exact = False
    return row


def rebalance_during_retries(group_protocol: str = "classic") -> Scenario:
    def scenario(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
        """Six partitions; a second consumer joins while the first has orders waiting for their next
        try (orders stream in for about 20 s, retries wait 0.5 s and 1 s), then leaves."""
        run = Run(
            broker,
            f"rebalance-during-retries{SUFFIX[group_protocol]}",
            mode,
            workdir,
            6,
            None,
            group_protocol,
        )
        producer = run.start_producer(orders, interval=20 / orders)
        first = run.start_consumer("--idle-timeout", "15", backoff=0.5)
        run.wait_for_output("Attempt 1/3 failed", 3)
        # A join is a fault too: an eager rebalance takes the partitions away, and orders counted
        # above one waiting for its retry (the commit position stays at that one) are read again.
        run.mark_fault()
        second = run.start_consumer(backoff=0.5)
        try:  # partitions must move to it, and back when it leaves (KIP-848 takes a heartbeat or two)
            run.wait_for_output("Received order", 3, timeout=60, logs="consumer-1.log")
        except TimeoutError:
            run.notes.append("the joining consumer was given no partition")
        failed_so_far = run.read("consumer-*.log").count("Attempt 1/3 failed")
        run.wait_for_output("Attempt 1/3 failed", failed_so_far + 10)
        run.kill(second, signal.SIGTERM)  # leaves the group cleanly: a second rebalance
        if second.returncode != 0:
            run.notes.append(f"joining consumer exited {second.returncode} on SIGTERM")
        if producer.wait(300) != 0:
            run.notes.append("producer exited non-zero")
        if first.wait(600) != 0:
            run.notes.append("first consumer exited non-zero")
        return run.check()

    return scenario


def scale_out_one_killed(group_protocol: str = "classic") -> Scenario:
    def scenario(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
        """Six partitions, three consumers in one group; one is SIGKILLed mid-stream."""
        name = f"scale-out-3-consumers-1-killed{SUFFIX[group_protocol]}"
        run = Run(broker, name, mode, workdir, 6, None, group_protocol)
        run.produce(orders)
        consumers = [run.start_consumer("--idle-timeout", "20", backoff=0.01)]
        for _ in range(2):
            run.mark_fault()  # each join rebalances (see rebalance_during_retries)
            consumers.append(run.start_consumer("--idle-timeout", "20", backoff=0.01))
        run.wait_for_output("Received order", max(10, orders // 4))
        run.kill(consumers[0])
        for consumer in consumers[1:]:
            if consumer.wait(600) != 0:
                run.notes.append("a surviving consumer exited non-zero")
        return run.check()

    return scenario


def producer_interrupted(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """SIGINT mid-run: every order the producer reported as sent is in the topic, none twice."""
    run = Run(broker, "producer-sigint", mode, workdir)
    producer = run.start_producer(orders * 100, interval=0.0005)
    deadline = time.monotonic() + 60
    while run.read("producer-*.log").count("Sent order") < orders and time.monotonic() < deadline:
        time.sleep(0.05)
    run.kill(producer, signal.SIGINT)
    sent = sent_order_ids(run.read("producer-*.log"))
    in_topic = Counter(msg.key().decode() for msg in read_topic(run.bootstrap, run.orders))
    lost = len(set(sent) - set(in_topic))
    twice = sum(n - 1 for n in in_topic.values())
    if producer.returncode != 0:
        run.notes.append(run.exited(producer, "producer"))
    return Row(
        run.scenario,
        "-",
        sum(in_topic.values()),
        None,
        None,
        lost,
        twice,
        lost == 0 and twice == 0 and not run.notes and len(sent) >= orders,
        run.notes,
    )


def double_sigint_during_retry(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Ctrl-C twice while an order waits for its next try; a restart must pick that order up."""
    run = Run(broker, "double-sigint-during-retry", mode, workdir)
    run.produce(orders)
    consumer = run.start_consumer(failure_rate=1.0, backoff=0.5)
    run.wait_for_output("Attempt 1/3 failed", 3)  # the third order waits 0.5 s for its second try
    run.mark_fault()
    consumer.send_signal(signal.SIGINT)
    run.wait_for_output("SIGINT: finishing up")  # else the two signals can reach Python as one
    run.kill(consumer, signal.SIGINT)
    if consumer.returncode not in INTERRUPTED:
        run.notes.append(f"interrupted consumer exited {consumer.returncode}, not 130")
    run.run_consumer_to_end(failure_rate=1.0, backoff=0.0)
    return all_in_dlq(run)


def stdout_closed(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """`consumer.py | head`: the reader goes away while orders are on their way to the DLQ."""
    run = Run(broker, "stdout-closed", mode, workdir)
    run.produce(orders)
    consumer = run.start_consumer(failure_rate=1.0, backoff=0.0, stdout=subprocess.PIPE)
    assert consumer.stdout is not None
    moved = 0
    while moved < max(5, orders // 20) and (line := consumer.stdout.readline()):
        moved += line.startswith(b"Moved to DLQ")
    consumer.stdout.close()
    if consumer.wait(60) != 141:
        run.notes.append(f"consumer with a closed stdout exited {consumer.returncode}, not 141")
    run.run_consumer_to_end(failure_rate=1.0, backoff=0.0)
    return all_in_dlq(run)


def oversized_record(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """A 999,700-byte record (the source topic's default limit is about 1 MB) in mid-stream."""
    run = Run(broker, "oversized-record", mode, workdir)
    big = b"\x8f" * 999_700
    run.produce(orders // 2, seed=1)
    producer = Producer({"bootstrap.servers": run.bootstrap})
    producer.produce(run.orders, key=b"big", value=big)
    assert producer.flush(30) == 0
    run.produce(orders - orders // 2, seed=2)
    run.run_consumer_to_end()
    row = run.check()
    if sum(msg.value() == big for msg in read_topic(run.bootstrap, run.dlq)) != 1:
        row.notes.append("the large record is not in the DLQ exactly once, unchanged")
        row.exact = False
    return row


def switch_to_exactly_once(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """A group consumed at-least-once, then restarted with --exactly-once on the same group."""
    run = Run(broker, "switch-to-exactly-once", "exactly-once", workdir)
    run.produce(orders // 2, seed=1)
    run.run_consumer_to_end(idle_timeout=3, mode="at-least-once")
    run.produce(orders - orders // 2, seed=2)
    started = time.monotonic()
    run.run_consumer_to_end(idle_timeout=3)
    if time.monotonic() - started > 30:
        run.notes.append(f"the exactly-once consumer took {time.monotonic() - started:.0f} s")
    if "committed without an aggregate" not in run.read("consumer-1.log"):
        run.notes.append("the switch was not announced")
    row = run.check(exactly_once_from=orders // 2)
    row.mode = "at-least-once → exactly-once"
    return row


def offsets_reset(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """kafka-consumer-groups --reset-offsets --to-earliest between two exactly-once runs: the
    second run counts every order again from zero, once."""
    run = Run(broker, "offsets-reset", mode, workdir)
    run.produce(orders)
    run.run_consumer_to_end(idle_timeout=3, failure_rate=0.0)
    reset = [
        *("--bootstrap-server", run.bootstrap, "--group", run.group, "--topic", run.orders),
        *("--reset-offsets", "--to-earliest", "--execute"),
    ]
    subprocess.run([REPO / "bin/kafka-consumer-groups", *reset], check=True, capture_output=True, timeout=120)
    run.run_consumer_to_end(idle_timeout=3, failure_rate=0.0)
    return run.check()


def consumer_paused(group_protocol: str = "classic") -> Scenario:
    def scenario(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
        """SIGSTOP for 13 s, three times, mid-stream (a suspended laptop, a stopped terminal): longer
        than session.timeout.ms (10 s) and transaction.timeout.ms (10 s), so on waking up the consumer
        has lost its partitions and, under exactly-once, its open transaction and its producer."""
        name = f"consumer-paused-13s-x3{SUFFIX[group_protocol]}"
        run = Run(broker, name, mode, workdir, 3 if group_protocol != "classic" else 1, None, group_protocol)
        run.produce(orders)
        consumer = run.start_consumer("--idle-timeout", "20", backoff=0.02)
        for third in range(1, 4):
            run.wait_for_output("Received order", orders * third // 4)
            run.mark_fault()
            consumer.send_signal(signal.SIGSTOP)
            time.sleep(13)
            consumer.send_signal(signal.SIGCONT)
        if consumer.wait(600) != 0:
            run.notes.append("consumer exited non-zero")
            run.run_consumer_to_end()
        return run.check()

    return scenario


def ctrl_c_three_times_broker_down(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """The broker dies under the consumer, and the user presses Ctrl-C three times: the consumer
    quits at once (it cannot commit anything anyway); a restart, broker back, loses nothing."""
    run = Run(broker, "ctrl-c-x3-broker-down", mode, workdir)
    run.produce(orders)
    # Every order fails for good after 1 s and 2 s of waiting: the orders are all in progress when
    # the broker dies, and the first Ctrl-C has retries to finish.
    consumer = run.start_consumer(failure_rate=1.0, backoff=1.0)
    run.wait_for_output("Attempt 2/3 failed", max(5, orders // 10))
    run.mark_fault()
    broker.kill("kafka")
    consumer.send_signal(signal.SIGINT)
    run.wait_for_output("SIGINT: finishing up")  # else the first two signals can reach Python as one
    for _ in range(2):
        consumer.send_signal(signal.SIGINT)
        time.sleep(0.3)
    started = time.monotonic()
    try:
        code = consumer.wait(10)
    except subprocess.TimeoutExpired:
        run.notes.append("still running 10 s after the third Ctrl-C")
        run.kill(consumer)
        code = 130
    if code not in INTERRUPTED:
        run.notes.append(f"exited {code} after three Ctrl-Cs, not 130")
    waited = time.monotonic() - started
    broker.start()
    run.run_consumer_to_end(failure_rate=1.0, backoff=0.0)
    if waited > 3:
        run.notes.append(f"exited {waited:.1f} s after the third Ctrl-C")
    return all_in_dlq(run)


SCENARIOS: dict[str, Scenario] = {
    "consumer-sigkill-x5": consumer_killed_5_times,
    "kafka-sigkill": broker_killed("kafka"),
    "zookeeper-sigkill": broker_killed("zookeeper"),
    "dlq-write-broker-down": dlq_write_during_outage,
    "poison-8-kinds": poison_records,
    "rebalance-during-retries": rebalance_during_retries(),
    "rebalance-during-retries-cooperative": rebalance_during_retries("classic-cooperative"),
    "scale-out-3-consumers-1-killed": scale_out_one_killed(),
    "scale-out-3-consumers-1-killed-cooperative": scale_out_one_killed("classic-cooperative"),
    "producer-sigint": producer_interrupted,
    "double-sigint-during-retry": double_sigint_during_retry,
    "stdout-closed": stdout_closed,
    "oversized-record": oversized_record,
    "switch-to-exactly-once": switch_to_exactly_once,
    "offsets-reset": offsets_reset,
    "consumer-paused-13s-x3": consumer_paused(),
    "consumer-paused-13s-x3-cooperative": consumer_paused("classic-cooperative"),
    "ctrl-c-x3-broker-down": ctrl_c_three_times_broker_down,
}
# The single-broker scenarios that kill or stop the broker: the others run on the broker every test
# shares (test_faults.py), and need no broker of their own.
KILLS_THE_BROKER = {
    "kafka-sigkill",
    "zookeeper-sigkill",
    "dlq-write-broker-down",
    "ctrl-c-x3-broker-down",
}
# Run on a broker of their own, after the rest of the suite (bin/test's second pytest run): beside
# the parallel suite, on the shared broker and on a private one, the at-least-once consumer woke
# from its third SIGSTOP and exited at --idle-timeout with orders neither counted nor dead-lettered
# (3, 10, 11 and 42 of 200; not committed, so a restart gets them). An open defect of the consumer
# under load (see the issue notes), not reproduced on a machine that is not loaded.
PAUSED = {"consumer-paused-13s-x3", "consumer-paused-13s-x3-cooperative"}
# Run by hand (python -m tests.faults.run --only broker-outage-20s-300-partitions), not by
# bin/test: it shows an open defect of the producer. In the restarted broker's unknown-topic
# window, librdkafka fails queued orders and they are sent again, some of them already written
# (a review run: 28 of 300,000 twice, the summary saying 300,000 delivered); and beside the
# parallel suite the window lasted minutes (with a 30 s flush bound the producer exited 1 with 517
# of 4,000 delivered). See the issue notes.
BY_HAND = {"broker-outage-20s-300-partitions": broker_outage_with_history}

# The scenarios of each cluster shape (harness.SHAPES): every single-broker scenario on ZooKeeper.
SUITES: dict[str, dict[str, Scenario]] = {
    "zookeeper": {**SCENARIOS, **BY_HAND},
    "three-brokers": {
        name: CLUSTER_SCENARIOS[name]
        for name in ("leader-sigkill", "rolling-restart", "below-min-isr", "transaction-coordinator-sigkill")
    },
    "kraft": {name: SCENARIOS[name] for name in ("kafka-sigkill", "consumer-sigkill-x5")},
    "kraft-three": {
        **{name: CLUSTER_SCENARIOS[name] for name in ("active-controller-sigkill", "leader-sigkill")},
        "rebalance-during-retries-kip848": rebalance_during_retries("consumer"),
        "scale-out-3-consumers-1-killed-kip848": scale_out_one_killed("consumer"),
        "consumer-paused-13s-x3-kip848": consumer_paused("consumer"),
        **SHARE_SCENARIOS,
    },
}
# Scenarios that set their modes themselves, and the one mode a scenario applies to.
MODE_INDEPENDENT = {"producer-sigint", "switch-to-exactly-once"}
ONLY_MODE = {
    "offsets-reset": "exactly-once",
    # The producer's path, which the delivery mode does not change; one mode keeps bin/test in budget.
    "broker-outage-20s-300-partitions": "at-least-once",
    "transaction-coordinator-sigkill": "exactly-once",
    **{name: "at-least-once" for name in SHARE_SCENARIOS},  # share groups have no transactions
}


def modes_of(name: str, modes: Sequence[str]) -> list[str]:
    """The delivery modes a scenario runs in, out of those asked for."""
    if name in MODE_INDEPENDENT:
        return ["-"]
    return [mode for mode in modes if ONLY_MODE.get(name, mode) == mode]
