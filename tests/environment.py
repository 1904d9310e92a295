"""The environment every script a test starts runs in: the developer's shell must not change a result.

The scripts read defaults from the environment (FAILURE_RATE, METRICS_PORT, KAFKA_CONFIG, ...), and
bin/demo and bin/kafka-local read more. A test sets what it needs explicitly; everything else of the
project's is taken out.
"""

from __future__ import annotations

import os

DEFAULT_BROKER = "localhost:9092"  # the broker bin/test starts (bin/kafka-local's default)
# Variables the project reads, by name and by prefix: kafka_project's env_default and add_env_flag,
# bin/demo (DEMO_*), bin/kafka-local and bin/schema-registry-local.
PROJECT_VARIABLES = {"FAILURE_RATE", "METRICS_PORT", "ORDER_SCHEMA", "WAIT_FOR_TOPICS", "NO_COLOR"}
PROJECT_PREFIXES = ("KAFKA_", "ORDERS_", "DLQ_", "STATS_", "SCHEMA_REGISTRY", "DEMO_", "ZOOKEEPER_")
# pytest-xdist's workers run with COLUMNS=80 and LINES=24, which rich prefers to the size of the
# pseudo-terminal a live-view test gives a script.
TERMINAL_SIZE = {"COLUMNS", "LINES"}


def shared_broker() -> str:
    """The broker the tests share: KAFKA_BOOTSTRAP_SERVERS of the shell running the tests, if set."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BROKER


def clean_env(**settings: str) -> dict[str, str]:
    """os.environ without the project's variables, pointed at the tests' broker, plus `settings`."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if name not in PROJECT_VARIABLES | TERMINAL_SIZE and not name.startswith(PROJECT_PREFIXES)
    }
    return {**kept, "KAFKA_BOOTSTRAP_SERVERS": shared_broker(), **settings}
