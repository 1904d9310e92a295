"""A bad --config or --schema file is one line on stderr and exit code 2 in every script, checked at
start-up before any client exists; secret values never reach the output."""

import pytest

from .conftest import run_script, summary

SECRET = "hunter2-Xq9"
MISSING_TOPIC = "no-such-topic-config-check"
# Each script as a user runs it, aimed at a missing topic: should a bad file get past the start-up
# check, the script fails fast on the topic (exit 1) instead of waiting or sending anything.
SCRIPTS = {
    "producer": ["--topic", MISSING_TOPIC, "--count", "1"],
    "consumer": ["--topic", MISSING_TOPIC, "--wait-for-topics", "0"],
    "dlq": ["list", "--topic", MISSING_TOPIC, "--timeout", "5"],
    "consumer_stats": ["--stats-topic", MISSING_TOPIC],
}
# (property the error must name, the file's lines after `sasl.password=SECRET`)
BAD_CONFIGS = {
    "unknown property": ("sasl.usrname", b"sasl.usrname=x\n"),
    "invalid enum value": ("acks", b"acks=banana\n"),
    "invalid number": ("socket.timeout.ms", b"socket.timeout.ms=abc\n"),
    "unreadable CA file": (
        "ssl.ca.location",
        b"security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\n",
    ),
    "acks=1 against idempotence": ("acks", b"acks=1\n"),
    "Java JAAS config": (
        "sasl.jaas.config",
        b"sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        b'username="alice" password="' + SECRET.encode() + b'";\n',
    ),
    # librdkafka quotes an invalid enum value in its message: here that value is also the password.
    "secret echoed by librdkafka": ("security.protocol", b"security.protocol=" + SECRET.encode() + b"\n"),
    "not UTF-8": ("client.id", b"client.id=caf\xe9\n"),
}


def config_file(tmp_path, lines: bytes):
    path = tmp_path / "client.properties"
    path.write_bytes(b"sasl.password=" + SECRET.encode() + b"\n" + lines)
    return path


def assert_one_line_exit_2(result, *named: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in named:
        assert text in lines[0], lines[0]
    assert SECRET not in result.stdout + result.stderr
    return lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_file_is_one_line_naming_file_and_property(tmp_path, script, case):
    prop, lines = BAD_CONFIGS[case]
    path = config_file(tmp_path, lines)
    result = run_script(script, *SCRIPTS[script], "--config", str(path), timeout=30)
    assert_one_line_exit_2(result, str(path), prop)


def test_the_utf8_error_names_the_line_and_its_property(tmp_path):
    path = tmp_path / "client.properties"
    path.write_bytes(b"client.id=x\nsasl.password=caf\xe9-" + SECRET.encode() + b"\n")
    result = run_script("producer", *SCRIPTS["producer"], "--config", str(path), timeout=30)
    line = assert_one_line_exit_2(result, str(path), "not UTF-8", "line 2", "sasl.password")
    assert "caf" not in line


@pytest.mark.parametrize("script", ["producer", "consumer", "dlq"])  # stats.py decodes no orders
def test_schema_file_that_is_not_utf8_is_one_line(tmp_path, script):
    path = tmp_path / "order.avsc"
    path.write_bytes(b'{"type": "record",\n "name": "Ord\xe9r", "fields": []}')
    result = run_script(script, *SCRIPTS[script], "--schema", str(path), timeout=30)
    assert_one_line_exit_2(result, str(path), "not UTF-8", "line 2")


def test_a_valid_config_mixing_producer_and_consumer_settings_passes(bootstrap_servers, topics, tmp_path):
    path = tmp_path / "client.properties"
    path.write_text(
        f"acks=all\nlinger.ms=1\nfetch.min.bytes=1\nclient.id=config-check\nsasl.password={SECRET}\n"
    )
    result = run_script(
        "producer", "--topic", topics.orders, "--count", "3", "--interval", "0", "--config", str(path)
    )
    assert result.returncode == 0, result.stderr
    assert summary(result) == {"sent": "3", "delivered": "3", "failed": "0"}
    assert result.stderr == ""


def test_a_setting_the_group_protocol_does_not_take_is_one_line(tmp_path):
    """--config passes session.timeout.ms, which KIP-848 leaves to the broker: librdkafka refuses
    to build that consumer, and the user gets the reason, not a traceback."""
    path = config_file(tmp_path, b"session.timeout.ms=30000\n")
    result = run_script(
        "consumer", *SCRIPTS["consumer"], "--config", str(path), "--group-protocol", "consumer"
    )
    line = assert_one_line_exit_2(result, "cannot create the consumer", "session.timeout.ms")
    assert "not supported for `group.protocol=consumer`" in line
