"""The Schema Registry and its wire format, as Confluent's serializers, Kafka Connect and ksqlDB use:

    00 | 4-byte big-endian schema id | Avro binary body

The id names a schema kept by the registry (Confluent's, or a compatible one such as Apicurio's
`/apis/ccompat/v7`). Ids are looked up once and cached; the registry is asked again only for an
id this process has not seen.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import fastavro
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.types import Schema

from kafka_project.errors import UserError

MAGIC_BYTE = b"\x00"
HEADER_SIZE = 5
SCHEMA_ID = struct.Struct(">I")
NOT_FOUND = 404
# Settings of a --config file meant for the registry client, not for librdkafka: Confluent's
# client.properties templates name them so (the prefix is dropped for the client).
REGISTRY_PREFIX = "schema.registry."
REGISTRY_PROPERTIES = ("basic.auth.user.info", "basic.auth.credentials.source")
P = ParamSpec("P")
R = TypeVar("R")


class SchemaNotUsable(LookupError):
    """The registry has no such schema id, or what it holds is not an Avro schema."""


class RegistryUnavailableError(Exception):
    """The registry could not answer (down, unreachable, overloaded): the record is not poison,
    it is to be decoded again once the registry is back."""


def header(schema_id: int) -> bytes:
    return MAGIC_BYTE + SCHEMA_ID.pack(schema_id)


def schema_id_of(value: bytes) -> int:
    return SCHEMA_ID.unpack_from(value, 1)[0]


def subject_of(topic: str) -> str:
    """The registry's default subject for a topic's values (TopicNameStrategy)."""
    return f"{topic}-value"


def split_registry_properties(properties: dict[str, str]) -> dict[str, str]:
    """Take the registry's settings out of a --config file's properties (they would be unknown to
    librdkafka), as the registry client's own names."""
    taken = {}
    for name in list(properties):
        if name.startswith(REGISTRY_PREFIX):
            taken[name.removeprefix(REGISTRY_PREFIX)] = properties.pop(name)
        elif name in REGISTRY_PROPERTIES:
            taken[name] = properties.pop(name)
    return taken


class SchemaRegistry:
    """The few registry calls the scripts need, with errors a user can act on."""

    def __init__(self, url: str, settings: dict[str, str]) -> None:
        self.url = url
        # One retry inside the client: the consumer retries an outage itself, with a message.
        self.client = SchemaRegistryClient({**settings, "url": url, "max.retries": 1})
        self.cache: dict[int, Schema] = {}

    def schema(self, schema_id: int) -> Schema:
        """The Avro schema registered under this id. SchemaNotUsable: no such id, or not an Avro
        schema (the record is poison); RegistryUnavailableError: ask again later."""
        if (known := self.cache.get(schema_id)) is not None:
            return known
        try:
            registered = self.call(self.client.get_schema, schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == NOT_FOUND:
                raise SchemaNotUsable(
                    f"schema id {schema_id} is not in the Schema Registry at {self.url}"
                ) from None
            raise UserError(f"the Schema Registry at {self.url}: {exc}") from None  # e.g. credentials
        parsed = self.parsed(registered, f"schema id {schema_id}")
        self.cache[schema_id] = parsed
        return parsed

    def register(self, subject: str, schema: Schema) -> int:
        """Register (or find) `schema` under `subject`; a version the subject's compatibility rule
        refuses is a UserError naming the subject and the rule."""
        try:
            return self.call(self.client.register_schema, subject, RegistrySchema(json.dumps(schema), "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                rule = self.compatibility(subject)
                raise UserError(
                    f"the Schema Registry at {self.url} refused this order schema for subject '{subject}': "
                    f"it breaks the subject's {rule} compatibility rule ({exc.error_message})"
                ) from None
            raise UserError(
                f"the Schema Registry at {self.url} refused to register '{subject}': {exc}"
            ) from None

    def latest(self, subject: str) -> tuple[int, Schema]:
        """The latest version registered under `subject`: its id and its schema."""
        try:
            registered = self.call(self.client.get_latest_version, subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code == NOT_FOUND:
                raise UserError(f"no schema is registered under '{subject}' at {self.url}") from None
            raise UserError(f"the Schema Registry at {self.url}: {exc}") from None
        try:
            parsed = self.parsed(registered.schema, f"the latest schema of '{subject}'")
        except SchemaNotUsable as exc:
            raise UserError(str(exc)) from None
        assert registered.schema_id is not None  # a registered version always has one
        self.cache[registered.schema_id] = parsed
        return registered.schema_id, parsed

    def parsed(self, registered: RegistrySchema, name: str) -> Schema:
        if registered.schema_type not in (None, "AVRO") or registered.schema_str is None:
            raise SchemaNotUsable(
                f"{name} in the Schema Registry is a {registered.schema_type} schema, not Avro"
            )
        try:
            return fastavro.parse_schema(json.loads(registered.schema_str))
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise SchemaNotUsable(
                f"{name} in the Schema Registry is not a valid Avro schema: {exc}"
            ) from None

    def compatibility(self, subject: str) -> str:
        for ask in (lambda: self.client.get_compatibility(subject), self.client.get_compatibility):
            try:
                return str(ask())
            except Exception:  # only for the wording of an error already being raised
                continue
        return "unknown"

    def call(self, method: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """A client call; an answer that says the registry is down or unreachable becomes
        RegistryUnavailableError, anything else (404, 409, 401...) stays SchemaRegistryError."""
        try:
            return method(*args, **kwargs)
        except SchemaRegistryError as exc:
            if exc.http_status_code >= 500 or exc.http_status_code in (408, 429):
                raise RegistryUnavailableError(f"the Schema Registry at {self.url} answered {exc}") from None
            raise
        except Exception as exc:  # the client's HTTP library (httpx or httpx2) raises its own errors
            raise RegistryUnavailableError(
                f"cannot reach the Schema Registry at {self.url} ({exc})"
            ) from None
