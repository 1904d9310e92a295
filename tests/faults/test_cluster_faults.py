"""The riskiest scenarios on the production shapes, at a small size: three replicated ZooKeeper-mode
brokers, three Kafka 4 KRaft nodes; and rebalances under the cooperative and the KIP-848 group
protocols. Each shape is started once, in turn (they share the suite's ports).
The full matrix with its table: `python -m tests.faults.run --shape all`."""

from collections.abc import Callable, Iterator

import pytest

from .harness import FaultBroker, Run
from .scenarios import SUITES

ORDERS = 150
# (shape, scenario, mode), grouped by shape
CASES = [
    ("zookeeper", "rebalance-during-retries-cooperative", "exactly-once"),
    ("three-brokers", "leader-sigkill", "exactly-once"),
    ("three-brokers", "below-min-isr", "at-least-once"),
    ("three-brokers", "transaction-coordinator-sigkill", "exactly-once"),
    ("kraft-three", "active-controller-sigkill", "exactly-once"),
    ("kraft-three", "rebalance-during-retries-kip848", "exactly-once"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Callable[[str], FaultBroker]]:
    running: dict[str, FaultBroker] = {}

    def shape(name: str) -> FaultBroker:
        if name not in running:
            for other in running.values():
                other.stop()
            running.clear()
            running[name] = FaultBroker(name)
            running[name].start()
        return running[name]

    yield shape
    for broker in running.values():
        broker.stop()


def test_kip848_on_a_broker_without_it_is_one_clear_line(cluster, tmp_path):
    """librdkafka keeps this refusal to its debug log and retries for ever: the consumer must say it."""
    broker = cluster("zookeeper")  # Kafka 3.9 serves only the classic protocol
    run = Run(broker, "kip848-refused", "at-least-once", tmp_path, group_protocol="consumer")
    consumer = run.start_consumer("--idle-timeout", "60")
    assert consumer.wait(60) == 1
    output = run.read("consumer-*.log")
    assert "error: the broker at localhost:19092 does not support --group-protocol consumer" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(("shape", "scenario", "mode"), CASES, ids=["-".join(case) for case in CASES])
def test_scenario_is_exact_on_a_cluster(cluster, shape, scenario, mode, tmp_path):
    row = SUITES[shape][scenario](cluster(shape), mode, ORDERS, tmp_path)
    assert row.produced >= ORDERS
    assert row.lost == 0, row
    if mode == "exactly-once":
        assert row.counted_twice == 0, row
    assert row.exact, row
