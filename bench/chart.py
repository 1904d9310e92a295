"""The benchmark's picture: orders/s against failure rate, and the latency percentiles."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file, no display
import matplotlib.pyplot as plt


def draw(
    by_failure_rate: dict[str, dict[str, float]], latencies: dict[str, dict[str, float]], path: Path
) -> None:
    """by_failure_rate: {"concurrent": {"0.3": orders/s, ...}, "one at a time": {...}};
    latencies: {"1,000/s, failure rate 0": {"p50": ms, "p99": ms, "max": ms}, ...}."""
    figure, (rates, delays) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, points in by_failure_rate.items():
        xs = sorted(points, key=float)
        rates.plot([float(x) for x in xs], [points[x] for x in xs], marker="o", label=label)
    rates.set_yscale("log")
    rates.set_xlabel("failure rate per try (3 tries, backoff 0.1 s x try)")
    rates.set_ylabel("orders/s (log scale)")
    rates.set_title("Consumer throughput")
    rates.grid(True, which="both", alpha=0.3)
    rates.legend()

    names = list(latencies)
    width = 0.25
    for i, stat in enumerate(("p50", "p99", "max")):
        positions = [n + (i - 1) * width for n in range(len(names))]
        delays.bar(positions, [latencies[name][stat] for name in names], width, label=stat)
    delays.set_xticks(range(len(names)), [name.replace(", ", "\n") for name in names], fontsize=8)
    delays.set_yscale("log")
    delays.set_ylabel("ms from produce to counted (log scale)")
    delays.set_title("End-to-end latency")
    delays.grid(True, axis="y", which="both", alpha=0.3)
    delays.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
