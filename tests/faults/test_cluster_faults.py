"""The riskiest scenarios on the production shapes, at a small size: three replicated ZooKeeper-mode
brokers, three Kafka 4 KRaft nodes (KIP-848 rebalances among them); the cooperative protocol and
the KIP-848 refusal run on the single broker in test_faults.py. Each shape is started once, in
turn (they share the suite's ports; conftest.py's `cluster` fixture switches). The full matrix with its table:
`python -m tests.faults.run --shape all`."""

import pytest

from .scenarios import SUITES

ORDERS = 150
# (shape, scenario, mode), grouped by shape
CASES = [
    ("three-brokers", "leader-sigkill", "exactly-once"),
    ("three-brokers", "transaction-coordinator-sigkill", "exactly-once"),
    ("kraft-three", "active-controller-sigkill", "exactly-once"),
    ("kraft-three", "rebalance-during-retries-kip848", "exactly-once"),
]


@pytest.mark.parametrize(("shape", "scenario", "mode"), CASES, ids=["-".join(case) for case in CASES])
def test_scenario_is_exact_on_a_cluster(cluster, shape, scenario, mode, tmp_path):
    row = SUITES[shape][scenario](cluster(shape), mode, ORDERS, tmp_path)
    assert row.produced >= ORDERS
    assert row.lost == 0, str(row)
    if mode == "exactly-once":
        assert row.counted_twice == 0, str(row)
    assert row.exact, str(row)
