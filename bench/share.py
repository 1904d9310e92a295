"""Orders per second on one partition: 1, 2 and 3 share consumers next to the classic consumer.

Kafka 4.2+ only. Each row consumes a fresh one-partition topic holding the same orders (written in
small producer batches, ~30 orders each: the broker hands a share consumer whole batches) with the
default failure rate (0.3, three tries) and the consumers' default backoff (0.1 s times the try).
The rate is the orders done (counted or dead-lettered) over the time from the first order received
to the last one done, read from the consumers' per-order lines as they print them. Each column is
another time per try (--work-time): share groups are for processing that one consumer cannot keep up with.

  python -m bench.share --bootstrap-servers localhost:39092
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.common import CONSUMER, REPO, Broker, Command, machine
from kafka_project.dlq.headers import DLQ_TOPIC_CONFIG

SHARE_CONSUMER = REPO / "kafka_project/consumer/share_consumer.py"
DONE = ("✓ Processing successful", "Moved to DLQ: ")
SEED = "7"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap-servers", default="localhost:39092")
    parser.add_argument("--orders", type=int, default=1000, help="orders per row (default %(default)s)")
    parser.add_argument(
        "--work-time",
        type=float,
        action="append",
        metavar="SECONDS",
        help="time per try, one column each (default: 0 and 0.005)",
    )
    return parser.parse_args(argv)


class Bench:
    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.broker = Broker(bootstrap, scale=1.0)
        self.bootstrap = bootstrap
        # ~30 orders per producer batch, instead of one batch per 5 ms (linger.ms) of orders
        self.small_batches = workdir / "small-batches.properties"
        self.small_batches.write_text("batch.size=2048\n")

    def topic(self, name: str, config: dict[str, str] | None = None) -> str:
        return self.broker.topic(f"share-{name}", config)

    def orders_topic(self, count: int) -> str:
        topic = self.topic("orders")
        command = [*self.broker.producer_command(topic, count), "--config", str(self.small_batches)]
        subprocess.run(command, check=True, cwd=REPO, capture_output=True)
        return topic

    def rate(self, orders: int, work_s: float, consumers: int, *flags: str, share: bool) -> float:
        """Orders done per second by `consumers` processes of one group on a fresh copy of the orders."""
        topic, group = self.orders_topic(orders), f"bench-{uuid.uuid4().hex[:6]}"
        script, group_flag = (SHARE_CONSUMER, "--share-group") if share else (CONSUMER, "--group-id")
        command: Command = [
            sys.executable,
            "-u",
            script,
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            topic,
            "--dlq-topic",
            self.topic("dlq", DLQ_TOPIC_CONFIG),
            "--stats-topic",
            self.topic("stats", {"cleanup.policy": "compact"}),
            group_flag,
            group,
            "--seed",
            SEED,
            "--work-time",
            str(work_s),
            "--idle-timeout",
            "5",
            *flags,
        ]
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(consumers)]
        watch = LineWatch(processes)
        return watch.done / (watch.last_done - watch.first_received)


class LineWatch:
    """Reads the consumers' output as they print it: when the first order arrived, when the last
    one was done, and how many were done."""

    def __init__(self, processes: list[subprocess.Popen]) -> None:
        self.first_received, self.last_done, self.done = float("inf"), 0.0, 0
        self.lock = threading.Lock()
        threads = [threading.Thread(target=self.read, args=(p,)) for p in processes]
        for thread in threads:
            thread.start()
        for thread, process in zip(threads, processes, strict=True):
            thread.join()
            process.wait()

    def read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.perf_counter()
            with self.lock:
                if line.startswith("Received order"):
                    self.first_received = min(self.first_received, now)
                elif line.startswith(DONE):
                    self.last_done, self.done = now, self.done + 1


ROWS = [
    ("classic consumer, one order at a time (--max-in-flight 1)", 1, ("--max-in-flight", "1"), False),
    ("classic consumer, non-blocking retries (default)", 1, (), False),
    ("1 share consumer", 1, (), True),
    ("2 share consumers", 2, (), True),
    ("3 share consumers", 3, (), True),
]


def main(args: argparse.Namespace) -> int:
    work_times = args.work_time or [0.0, 0.005]
    header = ["consumers on one partition", *(f"work {w * 1000:g} ms/try" for w in work_times)]
    table = [header]
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(args.bootstrap_servers, Path(folder))
        for name, consumers, flags, share in ROWS:
            rates = [bench.rate(args.orders, w, consumers, *flags, share=share) for w in work_times]
            table.append([name, *(f"{rate:,.0f}/s" for rate in rates)])
            print(f"measured: {name}", file=sys.stderr)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print(f"{args.orders} orders per row, failure rate 0.3, backoff 0.1 s; {machine()}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
