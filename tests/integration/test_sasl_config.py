"""--config reaches a SASL_PLAINTEXT listener (bin/kafka-local opens one on 9094); bad credentials
give one clear line. The same mechanism carries SASL_SSL settings to a managed cluster."""

import os

from .conftest import consumer_args, records, run_script, summary

SASL_SERVERS = os.environ.get("KAFKA_SASL_BOOTSTRAP_SERVERS", "localhost:9094")


def properties(tmp_path, password: str):
    path = tmp_path / "client.properties"
    path.write_text(
        f"bootstrap.servers={SASL_SERVERS}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanisms=PLAIN\n"
        f"sasl.username=alice\nsasl.password={password}\n"
    )
    return str(path)


def test_producer_and_consumer_through_a_sasl_listener(bootstrap_servers, topics, tmp_path):
    config = properties(tmp_path, "alice-secret")
    # KAFKA_BOOTSTRAP_SERVERS would win over the file; clear it so the file decides.
    env = {"KAFKA_BOOTSTRAP_SERVERS": ""}
    produced = run_script(
        "producer",
        "--config",
        config,
        "--topic",
        topics.orders,
        "--count",
        "20",
        "--interval",
        "0",
        "--quiet",
        **env,
    )
    assert produced.returncode == 0, produced.stderr
    assert summary(produced) == {"sent": "20", "delivered": "20", "failed": "0"}, produced.stderr
    consumed = run_script(
        "consumer",
        "--config",
        config,
        *consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "3", "--quiet"),
        **env,
    )
    assert consumed.returncode == 0, consumed.stderr
    assert summary(consumed)["processed"] == "20", consumed.stderr
    assert len(records(bootstrap_servers, topics.orders)) == 20
    assert "alice-secret" not in produced.stdout + produced.stderr + consumed.stdout + consumed.stderr


def test_wrong_credentials_are_one_clear_line(tmp_path):
    result = run_script(
        "producer",
        "--config",
        properties(tmp_path, "wrong-password"),
        "--count",
        "1",
        KAFKA_BOOTSTRAP_SERVERS="",
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: Kafka at {SASL_SERVERS} rejected the credentials")
    assert "Invalid username or password" in lines[0]
    assert "wrong-password" not in result.stderr


def test_sasl_settings_against_a_plaintext_listener_name_the_likely_cause(bootstrap_servers, tmp_path):
    """KAFKA_BOOTSTRAP_SERVERS, set for step 3 of the README, wins over bootstrap.servers in the
    file: the SASL settings then meet the PLAINTEXT listener. The line says so, not 'credentials'."""
    result = run_script(
        "producer",
        "--config",
        properties(tmp_path, "alice-secret"),
        "--count",
        "1",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap_servers,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: Kafka at {bootstrap_servers} did not take SASL"), lines[0]
    assert "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
