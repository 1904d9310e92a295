"""The fault suite's scenarios at a small size, on the suite's own broker (bin/kafka-local on 19092).

The full-size run with its table is `python -m tests.faults.run`.
"""

import pytest

from .harness import MODES, Run
from .scenarios import SCENARIOS, modes_of

ORDERS = 200


# Every single-broker scenario with the default group protocol, both modes; of the cooperative
# variants, the rebalance in exactly-once mode; not the rows an integration test already runs on the
# same broker (test_dlq_limits: the oversized record in both modes; test_poison_and_crash: poison
# and a killed consumer, test_interruptions: a closed stdout and a second Ctrl-C, at least once).
# For time: the full suite runs them all.
COVERED_ELSEWHERE = {
    ("oversized-record", "at-least-once"),
    ("oversized-record", "exactly-once"),
    ("poison-8-kinds", "at-least-once"),
    ("stdout-closed", "at-least-once"),
    ("consumer-sigkill-x5", "at-least-once"),
    ("double-sigint-during-retry", "at-least-once"),
}
CASES = [
    (name, mode)
    for name in SCENARIOS
    if not name.endswith("-cooperative")
    for mode in modes_of(name, MODES)
    if (name, mode) not in COVERED_ELSEWHERE
] + [("rebalance-during-retries-cooperative", "exactly-once")]


@pytest.mark.parametrize(("scenario", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_scenario_is_exact(fault_broker, scenario, mode, tmp_path):
    row = SCENARIOS[scenario](fault_broker, mode, ORDERS, tmp_path)
    assert row.produced >= ORDERS
    assert row.lost == 0, row
    if mode == "exactly-once":
        assert row.counted_twice == 0, row
    assert row.exact, row


def test_kip848_on_a_broker_without_it_is_one_clear_line(fault_broker, tmp_path):
    """librdkafka keeps this refusal to its debug log and retries for ever: the consumer must say it."""
    run = Run(fault_broker, "kip848-refused", "at-least-once", tmp_path, group_protocol="consumer")
    consumer = run.start_consumer("--idle-timeout", "60")  # Kafka 3.9 serves only the classic protocol
    assert consumer.wait(60) == 1
    output = run.read("consumer-*.log")
    assert "error: the broker at localhost:19092 does not support --group-protocol consumer" in output
    assert "Traceback" not in output


def test_share_groups_on_a_broker_without_them_is_one_clear_line(fault_broker, tmp_path):
    run = Run(fault_broker, "share-refused", "at-least-once", tmp_path, share=True)
    consumer = run.start_consumer("--idle-timeout", "10")  # Kafka 3.9 has no share groups
    assert consumer.wait(60) == 1
    output = run.read("consumer-*.log")
    assert "error: the broker at localhost:19092 does not serve share groups" in output
    assert "Traceback" not in output
