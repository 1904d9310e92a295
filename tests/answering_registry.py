"""A local HTTP server speaking the Schema Registry API's few calls, answering what a test tells it.

The integration tests use a real registry (Apicurio); this one exists for the answers a real
registry gives only in a bad moment: 401, 403, 429, 503, an unknown id. The project's registry
client (confluent-kafka's, over real HTTP) is what is under test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = tuple[int, object]  # HTTP status, JSON body


def error(status: int, code: int, message: str) -> Answer:
    """An error as Confluent's registry words it."""
    return status, {"error_code": code, "message": message}


class AnsweringRegistry:
    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}  # id -> schema text, answered with 200
        self.answers: dict[int, list[Answer]] = {}  # id -> answers given first, one per request
        self.registered: list[tuple[str, str]] = []  # (subject, schema text) as POSTed
        self.requests: list[str] = []
        self.url = ""

    def answer(self, method: str, path: str, body: object) -> Answer:
        self.requests.append(f"{method} {path}")
        if method == "GET" and path == "/subjects":
            return 200, []
        if method == "GET" and (found := re.fullmatch(r"/schemas/ids/(\d+)", path)):
            schema_id = int(found[1])
            if queued := self.answers.get(schema_id):
                return queued.pop(0)
            if schema_id in self.schemas:
                return 200, {"schema": self.schemas[schema_id]}
            return error(404, 40403, f"Schema {schema_id} not found")
        if method == "POST" and (found := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            assert isinstance(body, dict)
            self.registered.append((found[1], body["schema"]))
            self.schemas[len(self.schemas) + 1] = body["schema"]
            return 200, {"id": len(self.schemas)}
        if method == "GET" and (found := re.fullmatch(r"/subjects/([^/]+)/versions/latest", path)):
            if not self.schemas:
                return error(404, 40401, f"Subject '{found[1]}' not found")
            latest = max(self.schemas)
            return 200, {"subject": found[1], "id": latest, "version": latest, "schema": self.schemas[latest]}
        return error(404, 404, f"no such call in this test registry: {method} {path}")


@contextmanager
def answering_registry() -> Iterator[AnsweringRegistry]:
    registry = AnsweringRegistry()

    class Handler(BaseHTTPRequestHandler):
        def reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = registry.answer(self.command, self.path.split("?")[0], body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = reply

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    registry.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
