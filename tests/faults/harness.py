"""The fault suite's tools: a cluster of its own that can be killed, the scripts run as processes, and
the check that counts produced, processed, dead-lettered, lost and counted-twice orders.

The suite's cluster is another bin/kafka-local instance, so killing it never disturbs the broker the
other tests use: for `python -m tests.faults.run` on ports 19092 and up (ZooKeeper 12181, data in
.local-kafka/faults-SHAPE); under pytest-xdist one per worker and shape, on the worker's own ports
(tests/workers.py) with data in .local-kafka/test-gwN/faults-SHAPE.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_project.cluster import partitions_with_open_transactions, read_topic
from kafka_project.consumer.state import combined, read_consumer_states, read_states
from kafka_project.order_codec import Order, OrderCodec, OrderDecodeError

from ..environment import clean_env
from ..poison import POISON
from ..topics import create_order_topics
from ..workers import cluster_ports, worker_number

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "producer": REPO / "kafka_project/producer/producer.py",
    "consumer": REPO / "kafka_project/consumer/consumer.py",
    "share_consumer": REPO / "kafka_project/consumer/share_consumer.py",
}
# The fault suite's CLI (no xdist worker): one shape at a time, on these ports.
CLI_PORTS = {"KAFKA_PORT": "19092", "ZOOKEEPER_PORT": "12181", "KAFKA_SASL_PORT": "19094"}
# Each run makes its own topics.
NO_TOPICS = {"KAFKA_TOPICS": "", "KAFKA_DLQ_TOPICS": "", "KAFKA_COMPACTED_TOPICS": ""}
# The JIT's first tier only: a node starts on half the CPU (4 s -> 2 s each), which counts when a
# three-node cluster starts beside five busy test workers on two cores.
QUICK_START_JVM = {"KAFKA_LOCAL_JVM_OPTS": "-XX:TieredStopAtLevel=1"}
MODES = ("at-least-once", "exactly-once")
codec = OrderCodec()


@dataclass(frozen=True)
class Shape:
    """A cluster shape of bin/kafka-local: how many brokers, ZooKeeper or KRaft."""

    brokers: int
    kraft: bool

    @property
    def nodes(self) -> list[str]:
        return ["kafka"] if self.brokers == 1 else [f"kafka-{i}" for i in range(self.brokers)]


SHAPES = {
    "zookeeper": Shape(1, kraft=False),
    "three-brokers": Shape(3, kraft=False),
    "kraft": Shape(1, kraft=True),
    "kraft-three": Shape(3, kraft=True),
}


class FaultBroker:
    """bin/kafka-local in one shape, with the suite's own ports and a data directory per shape (and
    per pytest-xdist worker: workers run side by side)."""

    def __init__(self, shape_name: str = "zookeeper") -> None:
        self.shape_name, self.shape = shape_name, SHAPES[shape_name]
        self.killable = True
        worker = worker_number()
        folder = "faults" if shape_name == "zookeeper" else f"faults-{shape_name}"
        if worker is None:
            ports, home = CLI_PORTS, REPO / ".local-kafka" / folder
        else:
            ports = cluster_ports(worker, list(SHAPES).index(shape_name))
            home = REPO / ".local-kafka" / f"test-gw{worker}" / f"faults-{shape_name}"
        self.env = {
            **clean_env(),
            **ports,
            **NO_TOPICS,
            **QUICK_START_JVM,
            "KAFKA_LOCAL_DIR": str(home),
            "KAFKA_BROKERS": str(self.shape.brokers),
            "KAFKA_KRAFT": str(int(self.shape.kraft)),
        }
        port = int(ports["KAFKA_PORT"])
        self.bootstrap = ",".join(f"localhost:{port + 100 * i}" for i in range(self.shape.brokers))

    @classmethod
    def shared(cls, bootstrap: str) -> FaultBroker:
        """The broker every test shares (one ZooKeeper-mode broker, as bin/kafka-local starts): for
        the scenarios that kill no broker, which then run on any worker, side by side."""
        broker = cls("zookeeper")
        broker.bootstrap, broker.killable = bootstrap, False
        return broker

    def status(self) -> str:
        return subprocess.run(
            [REPO / "bin/kafka-local", "status"], env=self.env, capture_output=True, text=True
        ).stdout

    def run(self, *command: str) -> None:
        if not self.killable:
            raise RuntimeError(f"bin/kafka-local {' '.join(command)}: the shared broker is no test's to stop")
        result = subprocess.run(
            [REPO / "bin/kafka-local", *command], env=self.env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"bin/kafka-local {' '.join(command)} ({self.shape_name}): {result.stderr.strip()}"
            )

    def start(self, node: str | None = None) -> None:
        """Starts the node, or whatever is not running (after kill or stop_node too), and waits
        until the cluster's metadata lists it (a topic with three replicas needs all three)."""
        self.run("start", *([node] if node else []))
        # kafka-local start reuses a broker that answers on the port, and kill then kills nothing: a
        # broker-kill scenario must run on nodes this directory started (another checkout's tests
        # may hold the same ports).
        status = self.status()
        for name in [node] if node else self.shape.nodes:
            if f"{name}: running" not in status:
                raise RuntimeError(f"{self.shape_name}: {name} is not this suite's own node:\n{status}")
        expected = {self.shape.nodes.index(node)} if node else set(range(self.shape.brokers))
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + 60
        while not expected <= set(admin.list_topics(timeout=10).brokers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.shape_name}: brokers {expected} not all listed after 60 s")
            time.sleep(0.2)

    def kill(self, node: str) -> None:
        """SIGKILL: "kafka" or "zookeeper" with one broker, "kafka-N" in a cluster."""
        self.run("kill", node)

    def stop_node(self, node: str) -> None:
        """SIGTERM: the broker's controlled shutdown, as an operator's restart does."""
        self.run("stop", node)

    def stop(self) -> None:
        self.run("stop")

    def node_of(self, broker_id: int) -> str:
        return self.shape.nodes[broker_id]

    def bootstrap_without(self, broker_id: int) -> str:
        return ",".join(a for i, a in enumerate(self.bootstrap.split(",")) if i != broker_id)


@dataclass
class Row:
    """One line of the suite's table."""

    scenario: str
    mode: str
    produced: int
    processed: int | None
    in_dlq: int | None
    lost: int
    counted_twice: int
    exact: bool
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        """In full, notes first: a failed assertion prints this (pytest cuts a repr short)."""
        counts = f"produced {self.produced}, processed {self.processed}, in DLQ {self.in_dlq}"
        return (
            f"{self.scenario} {self.mode}: {counts}, lost {self.lost}, counted twice {self.counted_twice}"
            f"\nnotes: {self.notes}\nfigures: {self.figures}"
        )


Coords = tuple[int, int]  # (partition, offset) of a record in the orders topic


@dataclass(frozen=True)
class FaultMark:
    """The group's commit position when a fault came. At-least-once may count an order again, or
    write its DLQ copy again, only if it was past this position; after a consumer's SIGKILL, only
    the orders that consumer had counted past it (`victim_counted`; None: any consumer's)."""

    positions: dict[int, int]  # partition -> committed offset (0: none)
    victim_counted: frozenset[str] | None

    def past(self, coords: Coords) -> bool:
        return coords[1] >= self.positions.get(coords[0], 0)

    def may_count_again(self, coords: Coords, order_id: str) -> bool:
        return self.past(coords) and (self.victim_counted is None or order_id in self.victim_counted)


# A scenario: (cluster, delivery mode, orders, folder for its logs) -> its checked row
Scenario = Callable[["FaultBroker", str, int, Path], Row]


class Run:
    """One scenario run: its own topics and group, its processes and their logs."""

    def __init__(
        self,
        broker: FaultBroker,
        scenario: str,
        mode: str,
        workdir: Path,
        partitions: int = 1,
        orders_config: dict[str, str] | None = None,
        group_protocol: str = "classic",
        share: bool = False,
    ) -> None:
        self.scenario, self.mode = scenario, mode
        self.share = share  # the consumers are share_consumer.py, in share group self.group
        self.group_protocol = group_protocol  # the consumers' --group-protocol
        self.bootstrap = broker.bootstrap
        suffix = uuid.uuid4().hex[:8]
        self.orders, self.dlq = f"faults-orders-{suffix}", f"faults-dlq-{suffix}"
        self.stats, self.group = f"faults-stats-{suffix}", f"faults-group-{suffix}"
        self.workdir = workdir / f"{scenario}-{mode}-{suffix}"
        self.workdir.mkdir(parents=True)
        self.partitions = partitions
        self.consumer_logs: list[Path] = []
        self.log_of: dict[int, Path] = {}  # pid -> log, every script's
        self.consumers: list[subprocess.Popen] = []
        self.fault_marks: list[FaultMark] = []
        self.notes: list[str] = []
        self.figures: list[str] = []  # measurements worth reporting, not verdicts
        # Replication: the cluster's default (one broker: 1; three: 3, acks=all needing 2).
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        create_order_topics(admin, self.orders, self.dlq, self.stats, partitions, orders_config)
        self.wait_until_every_broker_knows([self.orders, self.dlq, self.stats])

    def wait_until_every_broker_knows(self, topics: list[str], timeout_s: float = 60) -> None:
        """A new topic reaches each broker's metadata a moment after it is created: a consumer found
        one missing for 10 s on a freshly started three-broker cluster. Asked through each address."""
        deadline = time.monotonic() + timeout_s
        for address in self.bootstrap.split(","):
            admin = AdminClient({"bootstrap.servers": address, "log_level": 0})
            while not set(topics) <= set(admin.list_topics(timeout=10).topics):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{address} does not list {topics} after {timeout_s:.0f} s")
                time.sleep(0.2)

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], log: Path, stdout: int | None = None) -> subprocess.Popen:
        """Output to the log; with stdout=subprocess.PIPE only stderr goes there."""
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-u", SCRIPTS[name], "--bootstrap-servers", self.bootstrap, *args],
                stdout=out if stdout is None else stdout,
                stderr=subprocess.STDOUT if stdout is None else out,
                cwd=REPO,
                env=clean_env(),
            )
        self.log_of[process.pid] = log
        return process

    def exited(self, process: subprocess.Popen, who: str) -> str:
        """A note that `who` exited with its code, and the log's last lines: why, when CI fails."""
        lines = self.log_of[process.pid].read_text(errors="replace").strip().splitlines()
        return f"{who} exited {process.returncode}: {' / '.join(lines[-3:])}"

    def start_producer(self, count: int, interval: float = 0, seed: int = 1) -> subprocess.Popen:
        # Not --quiet: the "Sent order" lines say which orders the producer reported as sent.
        args = [
            "--topic",
            self.orders,
            "--count",
            str(count),
            "--interval",
            str(interval),
            "--seed",
            str(seed),
        ]
        return self._spawn("producer", args, self.workdir / f"producer-{seed}.log")

    def produce(self, count: int, seed: int = 1) -> None:
        assert self.start_producer(count, seed=seed).wait(300) == 0, self.read("producer-*.log")

    def start_consumer(
        self,
        *extra: str,
        failure_rate: float = 0.3,
        backoff: float = 0.002,
        mode: str | None = None,
        stdout: int | None = None,
    ) -> subprocess.Popen:
        args = [
            "--topic",
            self.orders,
            "--dlq-topic",
            self.dlq,
            "--stats-topic",
            self.stats,
            "--share-group" if self.share else "--group-id",
            self.group,
            "--failure-rate",
            str(failure_rate),
            "--retry-backoff",
            str(backoff),
            *([] if self.share else ["--group-protocol", self.group_protocol]),
            *extra,
        ]
        if (mode or self.mode) == "exactly-once":
            args.append("--exactly-once")
        log = self.workdir / f"consumer-{len(self.consumer_logs)}.log"
        self.consumer_logs.append(log)
        process = self._spawn("share_consumer" if self.share else "consumer", args, log, stdout)
        self.consumers.append(process)
        return process

    def run_consumer_to_end(self, idle_timeout: float = 8, **kwargs: Any) -> None:
        """A consumer that stays until it has seen nothing new for idle_timeout seconds."""
        process = self.start_consumer("--idle-timeout", str(idle_timeout), **kwargs)
        code = process.wait(600)
        if code != 0:
            self.notes.append(self.exited(process, "final consumer"))

    def wait_for_output(
        self, text: str, count: int = 1, timeout: float = 120, logs: str = "consumer-*.log"
    ) -> None:
        deadline = time.monotonic() + timeout
        while self.read(logs).count(text) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} {text!r} in {logs} of {self.workdir}")
            time.sleep(0.05)

    def read(self, pattern: str) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.workdir.glob(pattern)))

    def kill(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a script and wait for it to exit; a consumer's commit position is marked as a
        fault's, before the signal, or for SIGKILL after it (its last commit is final then)."""
        consumer = process in self.consumers
        if consumer and sig != signal.SIGKILL:
            self.mark_fault()
        process.send_signal(sig)
        process.wait(60)
        if consumer and sig == signal.SIGKILL:
            self.mark_fault(process)
            if self.running_consumers():
                self.mark_fault()  # the kill rebalances the others too (see rebalance_during_retries)

    def running_consumers(self) -> list[subprocess.Popen]:
        return [p for p in self.consumers if p.poll() is None]

    def mark_fault(self, victim: subprocess.Popen | None = None) -> None:
        """A fault comes now (call before it; a broker being down cannot say its position): see
        FaultMark. A share group commits no offsets: nothing to mark."""
        if self.share:
            return
        try:
            positions = self.committed_positions(range(self.partitions))
        except KafkaException:
            return  # the broker is down: the mark taken before it went down covers this fault
        counted = None
        if victim is not None:
            counted = frozenset(successful_order_ids(self.log_of[victim.pid].read_text(errors="replace")))
        self.fault_marks.append(FaultMark({p: max(0, offset) for p, offset in positions.items()}, counted))

    def committed_positions(self, partitions: Iterable[int]) -> dict[int, int]:
        """The group's committed offset of each partition of the orders topic (negative: none)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            committed = consumer.committed([TopicPartition(self.orders, p) for p in partitions], timeout=10)
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in committed}

    # -- the check ---------------------------------------------------------------------------
    def wait_for_open_transactions(self, timeout: float = 60) -> None:
        """A killed consumer's transaction stays open until the broker aborts it (transaction.timeout.ms);
        until then read_committed readers stop short of it."""
        deadline = time.monotonic() + timeout
        while any(
            partitions_with_open_transactions(self.bootstrap, t) for t in (self.orders, self.dlq, self.stats)
        ):
            if time.monotonic() > deadline:
                self.notes.append("a transaction stayed open")
                return
            time.sleep(0.5)

    def check(self, exactly_once_from: int = 0) -> Row:
        """exactly_once_from: in exactly-once mode, orders below this offset (partition 0) were
        processed by at-least-once consumers before the group switched: judged from their logs."""
        self.wait_for_open_transactions()
        records = list(read_topic(self.bootstrap, self.orders, timeout_s=120))
        dead = list(read_topic(self.bootstrap, self.dlq, timeout_s=120))
        dead_coords = Counter(
            (int(h["dlq.original.partition"]), int(h["dlq.original.offset"]))
            for h in ({k: v.decode() for k, v in msg.headers()} for msg in dead)
        )
        orders = {}  # (partition, offset) -> Order, for the records that are valid orders
        for msg in records:
            with contextlib.suppress(OrderDecodeError):
                orders[(msg.partition(), msg.offset())] = codec.decode(msg.value())
        poison = {(m.partition(), m.offset()) for m in records} - set(orders)
        duplicates_in_topic = sum(n - 1 for n in Counter(o.order_id for o in orders.values()).values())
        to_count = {coords: order for coords, order in orders.items() if coords not in dead_coords}
        dlq_repeats = sum(n - 1 for n in dead_coords.values())
        lost_poison = len(poison - set(dead_coords))
        if not self.share and not self.fully_committed(records):  # a share group commits no offsets
            self.notes.append("committed offsets short of the end")
        acknowledged = producer_acknowledged(self.read("producer-*.log"))
        if len(records) < acknowledged:
            self.notes.append(
                f"the producers had {acknowledged} orders acknowledged; the topic holds {len(records)}"
            )

        if self.share:
            successes = Counter(self.share_counted_ids())
        else:
            successes = Counter(successful_order_ids(self.read("consumer-*.log")))
        if self.mode == "exactly-once":
            before = {c: o for c, o in to_count.items() if c[1] < exactly_once_from}
            to_count = {c: o for c, o in to_count.items() if c[1] >= exactly_once_from}
            lost_before_switch = sum(1 for o in before.values() if o.order_id not in successes)
            states = read_states(self.bootstrap, self.stats, self.group)
            total = combined([state.aggregate() for state in states.values()])
            expected_total = sum((o.price for o in to_count.values()), Decimal("0.00"))
            processed = total.count + len(before) - lost_before_switch
            lost = max(0, len(to_count) - total.count) + lost_poison + lost_before_switch
            counted_twice = max(0, total.count - len(to_count)) + dlq_repeats + duplicates_in_topic
            if total.total_price != expected_total:
                self.notes.append(f"total {total.total_price} != {expected_total}")
            exact = lost == 0 and counted_twice == 0 and total.total_price == expected_total
        else:
            processed = len(successes)
            lost = sum(1 for o in to_count.values() if o.order_id not in successes) + lost_poison
            counted_twice = sum(n - 1 for n in successes.values()) + dlq_repeats + duplicates_in_topic
            if not self.share:  # a share group commits no offsets: its scenarios bound their own repeats
                self.bound_repeats(orders, successes, dead_coords)
            exact = lost == 0
        exact = exact and not self.notes
        return Row(
            self.scenario,
            self.mode,
            len(records),
            processed,
            len(dead_coords),
            lost,
            counted_twice,
            exact,
            self.notes,
            self.figures,
        )

    def bound_repeats(self, orders: dict[Coords, Order], successes: Counter, dead_coords: Counter) -> None:
        """At-least-once: what is counted again, or dead-lettered again, was past the commit
        position at a fault (FaultMark), once per fault at most. A figure for the row; a note (so
        a failed row) for each repeat beyond that."""
        coords_of = {order.order_id: coords for coords, order in orders.items()}
        again = beyond = 0
        for order_id, times in successes.items():
            if times > 1 and (coords := coords_of.get(order_id)) is not None:
                again += times - 1
                beyond += max(
                    0, times - 1 - sum(m.may_count_again(coords, order_id) for m in self.fault_marks)
                )
        dlq_again = dlq_beyond = 0
        for coords, copies in dead_coords.items():
            dlq_again += copies - 1
            dlq_beyond += max(0, copies - 1 - sum(m.past(coords) for m in self.fault_marks))
        may = {
            c for c, o in orders.items() if any(m.may_count_again(c, o.order_id) for m in self.fault_marks)
        }
        self.figures.append(
            f"counted again {again}, DLQ copies again {dlq_again}; past the commit position at "
            f"{len(self.fault_marks)} faults: {len(may)} orders"
        )
        if beyond or dlq_beyond:
            self.notes.append(
                f"{beyond} counted again and {dlq_beyond} DLQ copies written again that were not past "
                "the commit position at any fault"
            )

    def share_counted_ids(self) -> list[str]:
        """The orders the share consumers counted in a snapshot the broker holds: a consumer's
        snapshot count N covers the first N orders its log shows as counted (a killed consumer's
        later ones were never accepted, and come back)."""
        published = {
            s.consumer: s.count for s in read_consumer_states(self.bootstrap, self.stats, self.group)
        }
        counted = []
        for log in self.consumer_logs:
            text = log.read_text(errors="replace")
            started = re.search(r"^Starting Kafka share consumer (\S+)\.\.\.", text, flags=re.MULTILINE)
            counted += successful_order_ids(text)[: published.get(started.group(1), 0) if started else 0]
        return counted

    def fully_committed(self, records: list) -> bool:
        """The group's committed offset of every partition with records is past its last record (a
        transaction marker may follow it). No record read is no success: an empty read passed."""
        ends: dict[int, int] = {}
        for msg in records:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)
        committed = self.committed_positions(ends)
        return bool(ends) and all(committed[p] >= end for p, end in ends.items())


def all_in_dlq(run: Run) -> Row:
    """The check for runs where every order fails for good: each one must reach the DLQ."""
    row = run.check()
    if row.in_dlq != row.produced:
        row.notes.append(f"{row.produced - (row.in_dlq or 0)} orders never reached the DLQ")
        row.exact = False
    return row


def poison_values() -> list[bytes | None]:
    """Eight kinds of record that are not valid orders."""
    return [value for value, _ in POISON.values()]


def produce_with_poison(run: Run, orders: int) -> int:
    """Half the orders, the poison, the other half; how many poison records."""
    poison = poison_values()
    producer = Producer({"bootstrap.servers": run.bootstrap})
    run.produce(orders // 2, seed=1)
    for value in poison:
        producer.produce(run.orders, value=value)
    assert producer.flush(30) == 0
    run.produce(orders - orders // 2, seed=2)
    return len(poison)


# "Received order: {'orderId': 'X', ...", or "... (orderId X)" on a line about another order than the last
ORDER_NAMED = re.compile(r"^Received order: \{'orderId': '([^']+)'|\(orderId ([^)]+)\)")


def successful_order_ids(output: str) -> list[str]:
    """orderIds a consumer printed as processed. A line about an order names it unless the line
    before it was about the same order (the seed's format), so the last order named is the one a
    `✓ Processing successful` line without a name is about."""
    done, current = [], None
    for line in output.splitlines():
        if match := ORDER_NAMED.search(line):
            current = match.group(1) or match.group(2)
        elif line.startswith("Moved to DLQ: ") or line.startswith("Poison record at "):
            current = None
        if line.startswith("✓ Processing successful") and current:
            done.append(current)
            current = None
    return done


def producer_acknowledged(output: str) -> int:
    """Orders the producers reported delivered (acknowledged by the broker), from their Summary lines."""
    return sum(int(n) for n in re.findall(r"^Summary: sent=\d+ delivered=(\d+)", output, flags=re.MULTILINE))


def sent_order_ids(output: str) -> list[str]:
    return re.findall(r"^Sent order: \{'orderId': '([^']+)'", output, flags=re.MULTILINE)
