"""The whole single-broker fault suite at a small size, both modes. Scenarios that kill the broker
run on a broker of this worker's own (a bin/kafka-local on the worker's ports); the others on the
broker every test shares, side by side with the rest of the suite.

The full-size run with its table is `python -m tests.faults.run`.
"""

import pytest

from .harness import MODES, FaultBroker, Run
from .scenarios import KILLS_THE_BROKER, PAUSED, SCENARIOS, modes_of

ORDERS = 200
CASES = [(name, mode) for name in SCENARIOS for mode in modes_of(name, MODES)]


def check_row(broker: FaultBroker, scenario: str, mode: str, tmp_path) -> None:
    row = SCENARIOS[scenario](broker, mode, ORDERS, tmp_path)
    assert row.produced >= ORDERS
    assert row.lost == 0, str(row)
    if mode == "exactly-once":
        assert row.counted_twice == 0, str(row)
    assert row.exact, str(row)


def case_ids(cases: list[tuple[str, str]]) -> list[str]:
    return [f"{scenario}-{mode}" for scenario, mode in cases]


SHARED = [case for case in CASES if case[0] not in KILLS_THE_BROKER | PAUSED]
PRIVATE = [case for case in CASES if case[0] in KILLS_THE_BROKER]
PAUSED_CASES = [case for case in CASES if case[0] in PAUSED]


@pytest.mark.parametrize(("scenario", "mode"), SHARED, ids=case_ids(SHARED))
def test_scenario_is_exact(shared_fault_broker, scenario, mode, tmp_path):
    check_row(shared_fault_broker, scenario, mode, tmp_path)


@pytest.mark.parametrize(("scenario", "mode"), PRIVATE, ids=case_ids(PRIVATE))
def test_scenario_killing_the_broker_is_exact(fault_broker, scenario, mode, tmp_path):
    check_row(fault_broker, scenario, mode, tmp_path)


@pytest.mark.quiet_machine  # bin/test runs these after the rest: see scenarios.PAUSED
@pytest.mark.parametrize(("scenario", "mode"), PAUSED_CASES, ids=case_ids(PAUSED_CASES))
def test_paused_consumer_scenario_is_exact(fault_broker, scenario, mode, tmp_path):
    """On a broker of this worker's own: see scenarios.PAUSED."""
    check_row(fault_broker, scenario, mode, tmp_path)


# The two refusals need a Kafka 3.9 broker, whatever the shared one is (KAFKA_KRAFT=1 ./bin/test).
def test_kip848_on_a_broker_without_it_is_one_clear_line(fault_broker, tmp_path):
    """librdkafka keeps this refusal to its debug log and retries for ever: the consumer must say it."""
    run = Run(fault_broker, "kip848-refused", "at-least-once", tmp_path, group_protocol="consumer")
    consumer = run.start_consumer("--idle-timeout", "60")  # Kafka 3.9 serves only the classic protocol
    assert consumer.wait(60) == 1
    output = run.read("consumer-*.log")
    assert f"error: the broker at {run.bootstrap} does not support --group-protocol consumer" in output
    assert "Traceback" not in output


def test_share_groups_on_a_broker_without_them_is_one_clear_line(fault_broker, tmp_path):
    run = Run(fault_broker, "share-refused", "at-least-once", tmp_path, share=True)
    consumer = run.start_consumer("--idle-timeout", "10")  # Kafka 3.9 has no share groups
    assert consumer.wait(60) == 1
    output = run.read("consumer-*.log")
    assert f"error: the broker at {run.bootstrap} does not serve share groups" in output
    assert "Traceback" not in output
