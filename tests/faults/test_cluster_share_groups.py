"""Share groups (KIP-932) on three Kafka 4 KRaft nodes: several share consumers on one partition,
one of them killed, poison and orders that always fail. Named to run right after
test_cluster_faults.py, on the same cluster. The full table: `python -m tests.faults.run
--shape kraft-three --only share-3-consumers-1-partition ...`."""

import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient

from kafka_project.consumer.share_group import set_group_configs

from .harness import REPO, Run
from .share_scenarios import SHARE_SCENARIOS

SHAPE = "kraft-three"
ORDERS = {
    "share-3-consumers-1-partition": 2000,
    "share-consumer-sigkill": 1000,
    "share-consumer-killed-at-its-last-try": 1000,
    "share-3-consumers-sigint": 600,
    "share-poison-always-failing": 40,
}


@pytest.mark.parametrize("scenario", list(SHARE_SCENARIOS))
def test_share_scenario_loses_nothing(cluster, scenario, tmp_path):
    row = SHARE_SCENARIOS[scenario](cluster(SHAPE), "at-least-once", ORDERS[scenario], tmp_path)
    assert row.produced >= ORDERS[scenario]
    assert row.lost == 0, str(row)
    assert row.exact, str(row)


def test_a_delivery_limit_or_backoff_the_retries_do_not_fit_is_refused(cluster, tmp_path):
    """The broker drops a record whose last delivery ends unanswered, so that one is dead-lettered
    untried: with a limit of 2 deliveries, one consumer's death would send an order to the DLQ
    untried. An order's tries share one delivery, so their backoffs must fit in half the lock.
    One line each, exit 2, before any record is taken."""
    run = Run(cluster(SHAPE), "share-limit-refused", "at-least-once", tmp_path, share=True)
    set_group_configs(
        AdminClient({"bootstrap.servers": run.bootstrap}), run.group, {"share.delivery.count.limit": "2"}
    )
    script = REPO / "kafka_project/consumer/share_consumer.py"
    command = [sys.executable, script, "--bootstrap-servers", run.bootstrap, "--topic", run.orders]
    result = subprocess.run(
        [*command, "--share-group", run.group], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"error: share group {run.group} delivers a record at most 2 times"), (
        result.stderr
    )
    assert "--add-config share.delivery.count.limit=3" in result.stderr
    # Kafka's 30 s lock: tries 10 s and 20 s apart need 30 s of the 15 s allowed.
    result = subprocess.run(
        [*command, "--share-group", f"{run.group}-backoff", "--retry-backoff", "10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: --retry-backoff 10.0 holds a failing order 30 s"), result.stderr
    assert result.stderr.count("\n") == 1
