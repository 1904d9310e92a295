"""The fault suite's scenarios at a small size, on the suite's own broker (bin/kafka-local on 19092).

The full-size run with its table is `python -m tests.faults.run`.
"""

import pytest

from .harness import MODES, FaultBroker
from .scenarios import SCENARIOS, modes_of

ORDERS = 200


@pytest.fixture(scope="module")
def fault_broker():
    broker = FaultBroker()
    broker.start()
    yield broker
    broker.stop()


# Every single-broker scenario with the default group protocol; the other protocols' variants are
# in test_cluster_faults.py in one mode each, for time.
CASES = [
    (name, mode) for name in SCENARIOS if not name.endswith("-cooperative") for mode in modes_of(name, MODES)
]


@pytest.mark.parametrize(("scenario", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_scenario_is_exact(fault_broker, scenario, mode, tmp_path):
    row = SCENARIOS[scenario](fault_broker, mode, ORDERS, tmp_path)
    assert row.produced >= ORDERS
    assert row.lost == 0, row
    if mode == "exactly-once":
        assert row.counted_twice == 0, row
    assert row.exact, row
