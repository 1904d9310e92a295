"""The fault suite's cluster, one shape at a time: they share the suite's ports, so asking for
another shape stops the running one. Kept for the session, so that test files run one after the
other on the same shape (test_cluster_faults.py, then test_cluster_share_groups.py) start it once."""

from collections.abc import Callable, Iterator

import pytest

from .harness import FaultBroker


@pytest.fixture(scope="session")
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


@pytest.fixture
def fault_broker(cluster: Callable[[str], FaultBroker]) -> FaultBroker:
    """The single ZooKeeper-mode broker most scenarios run on."""
    return cluster("zookeeper")
