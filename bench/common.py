"""What every measure shares: fresh topics, the project's scripts as a user runs them, and the table."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
PRODUCER = REPO / "kafka_project/producer/producer.py"
CONSUMER = REPO / "kafka_project/consumer/consumer.py"
Command = list[str | Path]  # what subprocess runs
Row = tuple[str, str, str, str]  # what, ours, anchor, ratio


class Broker:
    """The broker under test, and fresh topics on it."""

    def __init__(self, bootstrap: str, scale: float) -> None:
        self.bootstrap = bootstrap
        self.scale = scale
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def size(self, full: int) -> int:
        return max(1, int(full * self.scale))

    def topic(self, name: str, config: dict[str, str] | None = None) -> str:
        topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        for future in self.admin.create_topics([NewTopic(topic, 1, config=config or {})]).values():
            future.result(30)
        return topic

    def producer_command(self, topic: str, count: int, interval: float = 0) -> Command:
        """The project's producer as a user runs it, quiet."""
        return [
            sys.executable,
            PRODUCER,
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            topic,
            "--count",
            str(count),
            "--interval",
            str(interval),
            "--quiet",
        ]

    def produce(self, count: int, name: str = "orders") -> str:
        """A fresh topic holding `count` orders."""
        topic = self.topic(name)
        subprocess.run(self.producer_command(topic, count), check=True, cwd=REPO, capture_output=True)
        return topic

    def consumer_command(self, topic: str, *extra: str) -> Command:
        """The project's consumer as a user runs it, quiet, in a group of its own."""
        return [
            sys.executable,
            CONSUMER,
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            topic,
            "--dlq-topic",
            self.topic("dlq"),
            "--stats-topic",
            self.topic("stats"),
            "--group-id",
            f"bench-{uuid.uuid4().hex[:6]}",
            "--quiet",
            *extra,
        ]


def timed(command: Command) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    return time.perf_counter() - started, result.stdout


def median_of_3(measure: Callable[[], float]) -> float:
    """Throughput rows are the median of three runs: a shared 2-core box is noisy."""
    return statistics.median(measure() for _ in range(3))


def percentile(sorted_values: list[float], pct: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


def ratio(ours: float, anchor: float) -> str:
    return f"{ours / anchor:.2f}x"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory_gb:.0f} GiB, Python {platform.python_version()}"


def format_table(rows: list[Row]) -> str:
    cells = [("measure", "ours", "anchor", "ratio"), *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
