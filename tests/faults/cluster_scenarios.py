"""Fault scenarios that need more than one broker: a leader or a transaction coordinator killed,
a rolling restart, two of three brokers down, the KRaft quorum's active controller killed.

Orders stream in over STREAM_S seconds while a consumer takes them; a broker dies partway.
Topics have three partitions, replicated on all three brokers, min.insync.replicas=2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from subprocess import Popen

from bench.progress import ProgressWatch
from kafka_project.cluster import read_topic

from .harness import FaultBroker, Row, Run, Scenario
from .probes import (
    active_controller,
    busiest_partition,
    leader_of,
    transaction_coordinator,
    wait_until_in_sync,
)

STREAM_S = 20.0  # how long the producer takes to send its orders
PARTITIONS = 3
# The broker stamps each record as it appends it: the gaps in a partition are the producer's stalls.
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def streaming_run(
    broker: FaultBroker,
    scenario: str,
    mode: str,
    orders: int,
    workdir: Path,
    stream_s: float = STREAM_S,
    idle_timeout: float = 10,
) -> tuple[Run, Popen, Popen, ProgressWatch]:
    """idle_timeout: longer than the scenario's time without a new order, or the consumer ends early."""
    run = Run(broker, scenario, mode, workdir, partitions=PARTITIONS, orders_config=APPEND_TIME)
    watch = ProgressWatch(run.workdir)
    consumer = run.start_consumer("--idle-timeout", str(idle_timeout))
    # Shorter for a small run (CI), never so short that the fault misses the stream.
    stream_s *= max(0.5, min(1.0, orders / 1000))
    producer = run.start_producer(orders, interval=stream_s / orders)
    return run, consumer, producer, watch


def finish(run: Run, consumer: Popen, producer: Popen, watch: ProgressWatch) -> None:
    """Wait for both; a consumer that gave up is started again, as a supervisor would."""
    if producer.wait(600) != 0:
        run.notes.append(run.exited(producer, "producer"))
    if consumer.wait(600) != 0:
        run.notes.append(run.exited(consumer, "consumer"))
        run.run_consumer_to_end()
    watch.stop()


def restore(broker: FaultBroker, run: Run) -> None:
    """Every broker back and in sync, for the next scenario."""
    broker.start()
    waited = wait_until_in_sync(run.bootstrap)
    run.figures.append(f"replicas in sync {waited:.1f} s after kafka-local start returned")


def stalls(run: Run, watch: ProgressWatch, partition: int | None, since: float, since_wall: float) -> str:
    """The longest time without a new order after `since`, for one partition (None: for all), as the
    consumer saw it (first log line per order, read every 50 ms) and as the broker appended
    (LogAppendTime). Up to the last order of any partition: one that never recovered shows."""
    every = read_topic(run.bootstrap, run.orders)
    records = [m for m in every if partition is None or m.partition() == partition]
    ids = [m.key().decode() for m in records]
    last_seen = max(watch.first_seen.values(), default=since)
    consumer_gap = watch.longest_gap(ids, after=since, until=max(last_seen, since))
    last_appended = max((m.timestamp()[1] / 1000 for m in every), default=since_wall)
    appended = sorted(t for m in records if (t := m.timestamp()[1] / 1000) >= since_wall)
    edges = [since_wall, *appended, max(last_appended, since_wall)]
    append_gap = max(later - earlier for earlier, later in pairwise(edges))
    where = "all partitions" if partition is None else f"partition {partition}"
    return f"{where}: no new order for the consumer {consumer_gap:.1f} s, none appended {append_gap:.1f} s"


def one_broker_killed(
    broker: FaultBroker,
    scenario: str,
    mode: str,
    orders: int,
    workdir: Path,
    pick: Callable[[Run], tuple[int, int | None]],
    role: str,
) -> Row:
    """SIGKILL the broker `pick` names mid-stream (and the partition to time, None: all); it stays
    down until both clients are done, then comes back for the next scenario."""
    run, consumer, producer, watch = streaming_run(broker, scenario, mode, orders, workdir)
    run.wait_for_output("Received order", max(10, orders // 4))
    victim, partition = pick(run)
    since, since_wall = time.monotonic(), time.time()
    run.mark_fault()
    broker.kill(broker.node_of(victim))
    finish(run, consumer, producer, watch)
    run.figures.append(f"killed broker {victim}, {role}" + stalls(run, watch, partition, since, since_wall))
    row = run.check()
    restore(broker, run)
    return row


def leader_of_busiest(run: Run) -> tuple[int, int | None]:
    partition = busiest_partition(run.bootstrap, run.orders)
    return leader_of(run.bootstrap, run.orders, partition), partition


def leader_killed(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """SIGKILL the broker leading the busiest partition mid-stream; both clients move to the new leader."""
    return one_broker_killed(broker, "leader-sigkill", mode, orders, workdir, leader_of_busiest, "leader of ")


def rolling_restart(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Each broker in turn: controlled shutdown (SIGTERM), start, wait until every replica is in sync."""
    run, consumer, producer, watch = streaming_run(
        broker, "rolling-restart", mode, orders, workdir, 3 * STREAM_S
    )
    run.wait_for_output("Received order", max(10, orders // 10))
    since, since_wall = time.monotonic(), time.time()
    for node in broker.shape.nodes:
        run.mark_fault()
        broker.stop_node(node)
        broker.start(node)
        waited = wait_until_in_sync(run.bootstrap)
        run.figures.append(f"{node}: in sync {waited:.1f} s after kafka-local start returned")
    if producer.poll() is not None:
        run.notes.append("the producer finished before the last restart: stream longer")
    finish(run, consumer, producer, watch)
    run.figures.append(stalls(run, watch, None, since, since_wall))
    return run.check()


def below_min_insync(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Two of three brokers die: acks=all cannot be met (min.insync.replicas=2), so writes wait;
    one broker back, and everything goes through."""
    run, consumer, producer, watch = streaming_run(
        broker, "below-min-isr", mode, orders, workdir, 2 * STREAM_S, idle_timeout=40
    )
    run.wait_for_output("Received order", max(10, orders // 5))
    first, second = broker.shape.nodes[1:]
    since, since_wall = time.monotonic(), time.time()
    run.mark_fault()
    broker.kill(first)
    broker.kill(second)
    time.sleep(10)
    broker.start(first)
    finish(run, consumer, producer, watch)
    run.figures.append(stalls(run, watch, None, since, since_wall))
    row = run.check()
    restore(broker, run)
    return row


def transaction_coordinator_killed(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """Exactly-once: SIGKILL the broker coordinating the consumer's transactions mid-stream."""
    return one_broker_killed(
        broker,
        "transaction-coordinator-sigkill",
        mode,
        orders,
        workdir,
        lambda run: (transaction_coordinator(run.bootstrap, run.group), None),
        "the coordinator; ",
    )


def active_controller_killed(broker: FaultBroker, mode: str, orders: int, workdir: Path) -> Row:
    """KRaft, three nodes that are brokers and controllers: SIGKILL the quorum's active controller."""
    run, consumer, producer, watch = streaming_run(broker, "active-controller-sigkill", mode, orders, workdir)
    run.wait_for_output("Received order", max(10, orders // 4))
    controller = active_controller(run.bootstrap)
    since, since_wall = time.monotonic(), time.time()
    run.mark_fault()
    broker.kill(broker.node_of(controller))
    while (new := active_controller(broker.bootstrap_without(controller))) == controller:
        if time.monotonic() - since > 60:  # KRaft elects in seconds; this bounds only a failure
            raise TimeoutError(f"no controller but the killed {controller} 60 s after the kill")
        time.sleep(0.2)
    run.figures.append(
        f"controller {controller} killed; node {new} active {time.monotonic() - since:.1f} s later"
    )
    finish(run, consumer, producer, watch)
    run.figures.append(stalls(run, watch, None, since, since_wall))
    row = run.check()
    restore(broker, run)
    return row


CLUSTER_SCENARIOS: dict[str, Scenario] = {
    "leader-sigkill": leader_killed,
    "rolling-restart": rolling_restart,
    "below-min-isr": below_min_insync,
    "transaction-coordinator-sigkill": transaction_coordinator_killed,
    "active-controller-sigkill": active_controller_killed,
}
