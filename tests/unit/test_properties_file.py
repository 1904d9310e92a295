"""--config: librdkafka properties files, as Confluent's examples write them."""

import pytest

from kafka_project.cli import load_properties
from kafka_project.cluster import redacted
from kafka_project.errors import UserError


def test_key_value_lines_comments_and_blanks(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text(
        "# Confluent Cloud\nbootstrap.servers = pkc-1.example:9092\n\nsecurity.protocol=SASL_SSL\n"
        "sasl.password=a=b==\n  sasl.mechanisms=PLAIN  \n"
    )
    assert load_properties(path) == {
        "bootstrap.servers": "pkc-1.example:9092",
        "security.protocol": "SASL_SSL",
        "sasl.password": "a=b==",  # only the first '=' separates
        "sasl.mechanisms": "PLAIN",
    }


@pytest.mark.parametrize(("text", "message"), [("just words\n", ":1: expected key=value"), ("=x\n", ":1:")])
def test_malformed_lines_are_named(tmp_path, text, message):
    path = tmp_path / "bad.properties"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_properties(path)


def test_secret_values_are_hidden_wherever_they_appear():
    properties = {"sasl.password": "abc", "ssl.key.password": "abcdef", "client.id": "abc-client"}
    # The longer secret goes first: hiding "abc" first would leave "def" of the other one behind.
    assert redacted("abcdef, abc, abc-client", properties) == "[hidden], [hidden], [hidden]-client"
    assert redacted("client.id=abc-client", {"client.id": "abc-client"}) == "client.id=abc-client"
