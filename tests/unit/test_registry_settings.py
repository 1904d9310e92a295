"""Registry settings from --config, and URLs as they may be printed."""

import pytest

from kafka_project.errors import InvalidInputError
from kafka_project.registry import split_registry_properties, without_credentials


def test_registry_properties_leave_the_kafka_settings_and_lose_their_prefix():
    properties = {
        "bootstrap.servers": "broker:9092",
        "sasl.username": "alice",
        "schema.registry.url": "https://registry:8081",
        "schema.registry.timeout": "5",
        "basic.auth.credentials.source": "USER_INFO",
        "basic.auth.user.info": "key:secret",
    }
    taken = split_registry_properties(properties)
    assert properties == {"bootstrap.servers": "broker:9092", "sasl.username": "alice"}
    assert taken == {"url": "https://registry:8081", "timeout": 5, "basic.auth.user.info": "key:secret"}


def test_only_user_info_credentials_are_accepted():
    with pytest.raises(InvalidInputError, match="only USER_INFO"):
        split_registry_properties({"basic.auth.credentials.source": "SASL_INHERIT"})


@pytest.mark.parametrize(
    ("url", "printable"),
    [
        ("http://alice:S3cret@registry:8081/apis", "http://registry:8081/apis"),
        ("https://key@registry", "https://registry"),
        ("http://registry:8081", "http://registry:8081"),
    ],
)
def test_urls_are_printed_without_credentials(url, printable):
    assert without_credentials(url) == printable
