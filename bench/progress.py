"""When each order first shows up in the consumers' output: the time a partition, or all of them,
made no progress (a broker failing over, a group rebalancing)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

RECEIVED = re.compile(r"^Received order: \{'orderId': '([^']+)'", flags=re.MULTILINE)


class ProgressWatch:
    """Notes when each order first shows up in the consumers' logs (every 50 ms by default), so that
    the longest time without a new order can be told per partition once the run is over."""

    def __init__(self, folder: Path, every_s: float = 0.05) -> None:
        self.folder, self.every_s = folder, every_s
        self.first_seen: dict[str, float] = {}
        self.offsets: dict[Path, int] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.stop_event.wait(self.every_s):
            self.read_new()

    def read_new(self) -> None:
        now = time.monotonic()
        for log in sorted(self.folder.glob("consumer-*.log")):
            with open(log, "rb") as file:
                file.seek(self.offsets.get(log, 0))
                data = file.read()
            # Only whole lines: a line being written is read again next time.
            end = data.rfind(b"\n") + 1
            self.offsets[log] = self.offsets.get(log, 0) + end
            for order_id in RECEIVED.findall(data[:end].decode(errors="replace")):
                self.first_seen.setdefault(order_id, now)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()
        self.read_new()

    def longest_gap(self, order_ids: Iterable[str], after: float, until: float | None = None) -> float:
        """The longest time between `after` and `until` (or the last order) without a new order of
        these (all of one partition's orders, say), the wait for the first one included."""
        end = float("inf") if until is None else until
        seen = (self.first_seen.get(order_id) for order_id in order_ids)
        times = sorted(t for t in seen if t is not None and after <= t <= end)
        edges = [after, *times, *([] if until is None else [until])]
        return max((later - earlier for earlier, later in pairwise(edges)), default=0.0)
