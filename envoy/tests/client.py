"""A small OpenAI-style HTTP client for the end-to-end tests (standard library only)."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from names import MODEL, Header

# Kept short for the tests: the one definition is names.Header.
DESTINATION_HEADER = Header.DESTINATION
# Bound on one request: the simulator answers in well under this; a hang fails the request.
REQUEST_TIMEOUT_S = 30.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    # Every header line as received (names lower-cased), repeated names included.
    header_lines: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def request(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> Response:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        lines = [(k.lower(), v) for k, v in resp.getheaders()]
        return Response(resp.status, dict(lines), data, lines)
    finally:
        conn.close()


def chat_body(messages: Sequence[dict[str, Any]], model: str = MODEL, **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": list(messages), **extra}).encode()


def chat(
    address: str,
    messages: Sequence[dict[str, Any]],
    *,
    model: str = MODEL,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
    **extra: Any,
) -> Response:
    return request(
        address,
        "POST",
        "/v1/chat/completions",
        chat_body(messages, model, **extra),
        {"content-type": "application/json", **(headers or {})},
        timeout=timeout,
    )


def conversation(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def sse_events(body: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    events = []
    for block in body.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data:"):
                events.append(line[len("data:") :].strip())
    return events


def parallel(fn: Callable[..., Response], calls: Iterable[tuple], workers: int = 8) -> list[Response | Exception]:
    """Runs calls concurrently (each on its own connection); exceptions are returned, not raised."""

    def run(args: tuple) -> Response | Exception:
        try:
            return fn(*args)
        except Exception as e:  # a failed request is a result the test asserts on
            return e

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, list(calls)))
