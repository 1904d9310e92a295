"""The Schema Registry and its wire format, as Confluent's serializers, Kafka Connect and ksqlDB use:

    00 | 4-byte big-endian schema id | Avro binary body

The id names a schema kept by the registry (Confluent's, or a compatible one such as Apicurio's
`/apis/ccompat/v7`). Ids are looked up once and cached; the registry is asked again only for an
id this process has not seen.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import fastavro
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.types import Schema

from kafka_project.errors import InvalidInputError, UserError

try:  # the HTTP library confluent-kafka's registry client uses: httpx2 on Python 3.10+
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older Pythons
    import httpx  # type: ignore[no-redef,import-not-found]

MAGIC_BYTE = b"\x00"
HEADER_SIZE = 5
SCHEMA_ID = struct.Struct(">I")
NOT_FOUND, FORBIDDEN, UNAUTHORIZED = 404, 403, 401
SCHEMA_NOT_FOUND = 40403  # Confluent's error code; any other 404 means the URL is not a registry
# The client's default is no timeout at all: a registry that accepts and never answers would
# hang the consumer, Ctrl-C included. Overridable with schema.registry.timeout in --config.
TIMEOUT_S = 10
# Settings of a --config file meant for the registry client, not for librdkafka: Confluent's
# client.properties templates name them so (the prefix is dropped for the client).
REGISTRY_PREFIX = "schema.registry."
USER_INFO = "basic.auth.user.info"
CREDENTIALS_SOURCE = "basic.auth.credentials.source"  # only USER_INFO, which the client implies
P = ParamSpec("P")
R = TypeVar("R")


class SchemaNotUsable(LookupError):
    """The registry has no such schema id, may not show it, or holds no Avro schema under it:
    the record is poison."""


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


def without_credentials(url: str) -> str:
    """The URL as it may be printed: `http://user:secret@host` loses its user and secret."""
    return re.sub(r"(?<=//)[^/@]*@", "", url)


def split_registry_properties(properties: dict[str, str]) -> dict[str, str | int]:
    """Take the registry's settings out of a --config file's properties (they would be unknown to
    librdkafka), as the registry client's own names and types."""
    taken: dict[str, str] = {}
    for name in list(properties):
        if name.startswith(REGISTRY_PREFIX):
            taken[name.removeprefix(REGISTRY_PREFIX)] = properties.pop(name)
        elif name in (USER_INFO, CREDENTIALS_SOURCE):
            taken[name] = properties.pop(name)
    if (source := taken.pop(CREDENTIALS_SOURCE, "USER_INFO")) != "USER_INFO":
        raise InvalidInputError(
            f"{CREDENTIALS_SOURCE}={source}: only USER_INFO ({USER_INFO}=key:secret) is supported"
        )
    return {name: int(value) if value.isdigit() else value for name, value in taken.items()}


class SchemaRegistry:
    """The few registry calls the scripts need, with errors a user can act on."""

    def __init__(self, url: str, settings: dict[str, str | int]) -> None:
        self.raw_url, self.url = url, without_credentials(url)
        try:
            # One retry inside the client: the consumer retries an outage itself, with a message.
            self.client = SchemaRegistryClient(
                {"timeout": TIMEOUT_S, **settings, "url": url, "max.retries": 1}
            )
        except (ValueError, TypeError, OSError) as exc:
            raise InvalidInputError(self.safe(f"Schema Registry {url}: {exc}")) from None
        self.cache: dict[int, Schema] = {}

    def safe(self, text: str) -> str:
        """`text` without the URL's credentials, wherever they occur."""
        return text.replace(self.raw_url, self.url)

    def check(self) -> None:
        """At start-up: the URL serves a registry's API. A registry that cannot be reached is not
        an error here (the consumer waits for it); one that answers something else is."""
        try:
            self.call(self.client.get_subjects)
        except RegistryUnavailableError:
            return
        except SchemaRegistryError as exc:
            raise UserError(
                self.safe(
                    f"no Schema Registry API at {self.url} ({exc}); Apicurio serves it under /apis/ccompat/v7"
                )
            ) from None

    def schema(self, schema_id: int) -> Schema:
        """The Avro schema registered under this id. SchemaNotUsable: no such id, not ours to
        read, or not an Avro schema (the record is poison); RegistryUnavailableError: ask again
        later; UserError: the registry refuses this client (credentials, wrong URL)."""
        if (known := self.cache.get(schema_id)) is not None:
            return known
        try:
            registered = self.call(self.client.get_schema, schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == NOT_FOUND and exc.error_code == SCHEMA_NOT_FOUND:
                raise SchemaNotUsable(
                    f"schema id {schema_id} is not in the Schema Registry at {self.url}"
                ) from None
            if exc.http_status_code == FORBIDDEN:  # access control per subject: this id only
                raise SchemaNotUsable(self.safe(f"schema id {schema_id}: access denied ({exc})")) from None
            raise UserError(self.safe(f"the Schema Registry at {self.url}: {exc}")) from None
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
                self.safe(f"the Schema Registry at {self.url} refused to register '{subject}': {exc}")
            ) from None

    def latest(self, subject: str) -> tuple[int, Schema]:
        """The latest version registered under `subject`: its id and its schema."""
        try:
            registered = self.call(self.client.get_latest_version, subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code == NOT_FOUND:
                raise UserError(f"no schema is registered under '{subject}' at {self.url}") from None
            raise UserError(self.safe(f"the Schema Registry at {self.url}: {exc}")) from None
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
            except (SchemaRegistryError, httpx.HTTPError):  # only the wording of an error being raised
                continue
        return "unknown"

    def call(self, method: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """A client call. No answer (down, unreachable, timed out) or an overloaded answer becomes
        RegistryUnavailableError; the registry's other answers (404, 409, 401...) stay
        SchemaRegistryError; a client setting it cannot use is a UserError."""
        try:
            return method(*args, **kwargs)
        except SchemaRegistryError as exc:
            if exc.http_status_code >= 500 or exc.http_status_code in (408, 429):
                raise RegistryUnavailableError(
                    self.safe(f"the Schema Registry at {self.url} answered {exc}")
                ) from None
            raise
        except httpx.TransportError as exc:
            problem = str(exc) or type(exc).__name__
            raise RegistryUnavailableError(
                self.safe(f"cannot reach the Schema Registry at {self.url} ({problem})")
            ) from None
        except (ValueError, TypeError, OSError, httpx.HTTPError) as exc:
            raise UserError(self.safe(f"the Schema Registry client at {self.url}: {exc}")) from None
