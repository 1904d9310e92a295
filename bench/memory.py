"""The consumer's memory over a long run, at the default failure rate (retries and DLQ copies included)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.common import REPO, Broker


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def consumer_rss(broker: Broker, topic: str, checkpoints: list[int]) -> list[float]:
    """RSS of the consumer script once its committed offset reaches each checkpoint."""
    command = broker.consumer_command(topic, "--idle-timeout", "3")
    group = str(command[command.index("--group-id") + 1])
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    # Never subscribes, so it reads the group's offsets without joining it.
    watcher = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    readings = []
    for checkpoint in checkpoints:
        while (
            watcher.committed([TopicPartition(topic, 0)], timeout=10)[0].offset < checkpoint
            and process.poll() is None
        ):
            time.sleep(0.1)
        readings.append(rss_mb(process.pid))
    process.wait(300)
    watcher.close()
    return readings
