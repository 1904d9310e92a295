"""What one pytest-xdist worker owns, so that workers never share a broker they may kill or a port.

Every worker uses the one broker on 9092 that bin/test starts (each test has its own topics and
group). What a test may stop or kill (the fault suite's clusters, the Schema Registry) each worker
starts for itself, when a test first asks for it, on ports of its own below Linux's ephemeral
range (32768 and up), so that no client connection can hold one first.
"""

from __future__ import annotations

import os

WORKER_PORTS_FROM = 20000
PORTS_PER_WORKER = 1000
PORTS_PER_SHAPE = 250  # a cluster of kafka-local takes base + 0..210 (three brokers, ZooKeeper)
EPHEMERAL_PORTS_FROM = 32768  # Linux's default ip_local_port_range


def worker_number() -> int | None:
    """0 for pytest-xdist's gw0, and so on; None outside xdist (a plain pytest, or the fault suite's CLI)."""
    name = os.environ.get("PYTEST_XDIST_WORKER")
    return int(name.removeprefix("gw")) if name else None


def cluster_ports(worker: int, shape_index: int) -> dict[str, str]:
    """bin/kafka-local's port settings for one cluster shape of one worker: broker N on KAFKA_PORT +
    100*N, its controller one above, SASL on KAFKA_SASL_PORT + 100*N, ZooKeeper on ZOOKEEPER_PORT."""
    base = WORKER_PORTS_FROM + PORTS_PER_WORKER * worker + PORTS_PER_SHAPE * shape_index
    if base + PORTS_PER_SHAPE > EPHEMERAL_PORTS_FROM:
        raise RuntimeError(
            f"worker gw{worker}: its brokers' ports would reach {base + 220}; run at most 12 workers"
        )
    return {"KAFKA_PORT": str(base), "KAFKA_SASL_PORT": str(base + 10), "ZOOKEEPER_PORT": str(base + 20)}


def registry_port(worker: int | None) -> int:
    """The tests' Schema Registry: 18081 outside xdist, two ports a worker (its health endpoints
    take the next one)."""
    return 18081 + 2 * (worker or 0)
