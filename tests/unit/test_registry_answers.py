"""What each answer of the Schema Registry makes of a record, through the real client over HTTP:
poison (DLQ) for an id this client may not read, wait and ask again when the registry is overloaded
or down, and one clear error for a registry that refuses the client itself."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from kafka_project import registry
from kafka_project.errors import UserError
from kafka_project.order_codec import HISTORY_DIR, SCHEMA_PATH, Order, OrderCodec, UnknownSchemaError
from kafka_project.registry import RegistryUnavailableError, SchemaRegistry
from tests.answering_registry import AnsweringRegistry, answering_registry, error

ORDER = Order("ORD-1", "Tablet", Decimal("10.00"))


@pytest.fixture
def answering() -> AnsweringRegistry:
    with answering_registry() as server:
        yield server


def codec_reading(server: AnsweringRegistry) -> OrderCodec:
    return OrderCodec(schema_registry=SchemaRegistry(server.url, {}))


def registry_record(schema_id: int) -> bytes:
    """ORDER in the registry's format under `schema_id` (the body is the same in both formats)."""
    return registry.header(schema_id) + OrderCodec().encode(ORDER)[10:]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (error(404, 40403, "Schema 7 not found"), "schema id 7 is not in the Schema Registry at "),
        (error(403, 40301, "User cannot access the resource"), "schema id 7: access denied"),
    ],
)
def test_an_id_the_registry_will_not_show_makes_the_record_poison(answering, answer, reason):
    answering.answers[7] = [answer]
    with pytest.raises(UnknownSchemaError, match=f"^unknown schema: {reason}"):
        codec_reading(answering).decode(registry_record(7))


@pytest.mark.parametrize(
    "answer",
    [
        error(401, 40101, "Unauthorized"),
        error(404, 404, "HTTP 404 Not Found"),  # not Confluent's "no such schema": a wrong URL path
    ],
)
def test_a_registry_refusing_the_client_itself_is_one_clear_error(answering, answer):
    answering.answers[7] = [answer]
    with pytest.raises(UserError, match=f"^the Schema Registry at {answering.url}: {answer[1]['message']}"):
        codec_reading(answering).decode(registry_record(7))


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_an_overloaded_or_failing_registry_is_waited_for_then_read(answering, status):
    codec = codec_reading(answering)
    answering.schemas[7] = SCHEMA_PATH.read_text()
    answering.answers[7] = [error(status, status, "try later")] * 2  # the client itself tries twice
    with pytest.raises(RegistryUnavailableError, match=f"answered .*{status}"):
        codec.decode(registry_record(7))
    assert codec.decode(registry_record(7)) == ORDER  # the same record, once the registry answers
    assert codec.decode(registry_record(7)) == ORDER
    assert answering.requests.count("GET /schemas/ids/7") == 3  # cached once read


def test_the_registry_format_registers_our_schema_and_writes_its_id(answering):
    codec = codec_reading(answering)
    assert codec.write_registry_format("orders") == 1
    [(subject, schema)] = answering.registered
    assert subject == "orders-value" and json.loads(schema) == json.loads(SCHEMA_PATH.read_text())
    value = codec.encode(ORDER)
    assert value[:5] == registry.header(1)
    assert codec_reading(answering).decode(value) == ORDER
    assert codec.writes("customerId")


def test_use_latest_writes_the_subject_s_latest_version(answering):
    answering.schemas[4] = (HISTORY_DIR / "order-v1.avsc").read_text()
    codec = codec_reading(answering)
    assert codec.write_registry_format("orders", use_latest=True) == 4
    assert not codec.writes("customerId")  # version 1 has none
    assert codec.encode(ORDER)[:5] == registry.header(4)
    assert answering.registered == []


def test_a_latest_version_this_program_cannot_write_is_refused_before_anything_is_sent(answering):
    double_price = json.loads(SCHEMA_PATH.read_text())
    double_price["fields"][2]["type"] = "double"
    answering.schemas[2] = json.dumps(double_price)
    with pytest.raises(UserError, match=r"^cannot write orders with schema id 2 of 'orders-value': "):
        codec_reading(answering).write_registry_format("orders", use_latest=True)


def test_the_registry_format_needs_a_registry():
    with pytest.raises(UserError, match=r"^the registry.s format needs --schema-registry$"):
        OrderCodec().write_registry_format("orders")


def test_an_empty_subject_has_no_latest_version(answering):
    with pytest.raises(UserError, match=r"^no schema is registered under 'orders-value' at "):
        codec_reading(answering).write_registry_format("orders", use_latest=True)
