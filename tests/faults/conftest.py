"""The fault suite's cluster of this worker, one shape at a time: asking for another shape stops the
running one (a three-node cluster holds 3 GiB of heap). Kept for the worker's session, so that the
tests of one shape, grouped on one worker (tests/conftest.py), start it once."""

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


@pytest.fixture
def shared_fault_broker(bootstrap_servers: str) -> FaultBroker:
    """The broker every test shares, for the scenarios that kill no broker."""
    return FaultBroker.shared(bootstrap_servers)
