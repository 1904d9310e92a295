"""What every test gets, whichever worker runs it: the broker all workers share, the processes it
started reaped when it ends (pass or fail), and the tests that need the same private broker run
on one worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .environment import shared_broker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    """The broker every worker shares: bin/test starts it and exports KAFKA_BOOTSTRAP_SERVERS."""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # a plain `pytest`: start or reuse bin/kafka-local's
        # In the shell's environment: KAFKA_KRAFT, KAFKA_PORT, KAFKA_LOCAL_DIR choose which broker.
        subprocess.run([REPO / "bin/kafka-local", "start"], check=True)
        bootstrap = subprocess.run(
            [REPO / "bin/kafka-local", "bootstrap"], check=True, capture_output=True, text=True
        ).stdout.strip()
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap  # what clean_env gives every script
    return shared_broker()


# Tests that need the same private broker run as one unit of work, on one worker, which starts it
# once (a three-node cluster costs about 20 s of both cores): by test id, as the xdist controller
# sees only ids. (xdist's own xdist_group marker does not group under pytest 9: it rewrites
# item._nodeid, which pytest 9 no longer reads.) Any test may still run anywhere: each worker
# starts its brokers on ports of its own (tests/workers.py), so a group is economy, not safety.
BROKER_GROUPS = {  # test id prefix -> group (the first prefix that matches)
    # The longest rows that kill the broker, on a worker (and broker) of their own if one is free:
    # in one group with the others they make that worker the suite's critical path.
    "tests/faults/test_faults.py::test_scenario_killing_the_broker_is_exact[kafka-sigkill": "faults-outage",
    "tests/faults/test_faults.py::test_scenario_killing_the_broker_is_exact": "faults-zookeeper",
    "tests/faults/test_faults.py::test_kip848_on_a_broker_without_it": "faults-zookeeper",
    "tests/faults/test_faults.py::test_share_groups_on_a_broker_without_them": "faults-zookeeper",
    "tests/faults/test_cluster_faults.py::test_scenario_is_exact_on_a_cluster[three-brokers": "three-brokers",
    "tests/faults/test_cluster_faults.py::test_scenario_is_exact_on_a_cluster[kraft-three": "kraft-three",
    "tests/faults/test_cluster_share_groups.py::": "kraft-three",
    "tests/integration/test_schema_registry.py::": "schema-registry",
}
# Slowest first, so that no long test starts last (xdist hands work out in this order, and the
# groups before single tests): the modules whose tests take 20 s or more (`--durations`).
SLOW_MODULES = ("test_bench", "test_readme_walkthrough", "test_faults", "test_concurrent_retries")


def broker_group(nodeid: str) -> str | None:
    return next((group for prefix, group in BROKER_GROUPS.items() if nodeid.startswith(prefix)), None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        return SLOW_MODULES.index(module) if module in SLOW_MODULES else len(SLOW_MODULES)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # pytest -p no:xdist knows no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class BrokerGroupScheduling(LoadScopeScheduling):
        """Each broker group is one unit of work (the largest first); every other test is its own."""

        def _split_scope(self, nodeid: str) -> str:
            return broker_group(nodeid) or nodeid

    return BrokerGroupScheduling(config, log)


def children() -> list[int]:
    """The live child processes of this process (what a test started, and did not wait for)."""
    mine = os.getpid()
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields["PPid"]) == mine and not fields["State"].startswith("Z"):
                found.append(int(status.parent.name))
    return found


@pytest.fixture(autouse=True)
def reap_processes() -> Iterator[None]:
    """A failed test can leave a consumer running; once bin/test stops the broker it would retry
    for ever. Each child still alive after the test is SIGKILLed, with its process group when it
    leads one (a terminal's bash and what runs in it)."""
    before = set(children())  # the worker's own (none today), never this test's to kill
    yield
    for pid in set(children()) - before:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
