"""docker-compose.yml and the Dockerfile, checked with real tools (no Docker engine runs in CI)."""

import subprocess
from pathlib import Path

import yaml

from kafka_project.dlq.headers import DLQ_MAX_MESSAGE_BYTES

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_is_valid_against_the_compose_spec():
    result = subprocess.run(
        [
            "check-jsonschema",
            "--schemafile",
            REPO / "tests/vendor/compose-spec.json",
            REPO / "docker-compose.yml",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint():
    result = subprocess.run(["hadolint", REPO / "Dockerfile"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_zookeeper_mode_confluent_79_with_a_container_named_kafka():
    services = COMPOSE["services"]
    assert services["zookeeper"]["image"].startswith("confluentinc/cp-zookeeper:7.9.")
    assert services["kafka"]["image"].startswith("confluentinc/cp-kafka:7.9.")
    assert services["kafka"]["container_name"] == "kafka"
    assert "healthcheck" in services["zookeeper"] and "healthcheck" in services["kafka"]
    env = services["kafka"]["environment"]
    assert "HOST://localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
    init = services["kafka-init"]["command"][0]
    assert "--topic orders " in init
    dlq_limit = f"--config max.message.bytes={DLQ_MAX_MESSAGE_BYTES}"
    assert f"--topic orders-dlq --partitions 1 --replication-factor 1 {dlq_limit}" in init
    assert "--topic orders-stats --partitions 1 --replication-factor 1 --config cleanup.policy=compact" in (
        init
    )


def test_compose_runs_confluent_s_schema_registry_on_the_internal_listener():
    registry = COMPOSE["services"]["schema-registry"]
    assert registry["image"].startswith("confluentinc/cp-schema-registry:7.9.")
    assert registry["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == "kafka:29092"
    assert registry["ports"] == ["8081:8081"] and "healthcheck" in registry
    assert registry["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_app_services_sit_behind_a_profile_and_use_the_internal_listener():
    for name in ("producer", "consumer"):
        service = COMPOSE["services"][name]
        assert service["profiles"] == ["app"]
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
        assert service["command"][1] == f"kafka_project/{name}/{name}.py"
