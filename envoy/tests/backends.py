"""Tiny OpenAI-shaped HTTP servers for the static-pool check (no simulator): each records the
requests it saw and answers with its own address in a header and in the body, so a test can tell
which pool member served a request."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVED_BY_HEADER = "x-served-by"


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Backend:
    server: ThreadingHTTPServer
    thread: threading.Thread
    seen: list[SeenRequest] = field(default_factory=list)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_backend() -> Backend:
    backend: Backend

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header(SERVED_BY_HEADER, backend.address)
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> SeenRequest:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            backend.seen.append(seen)
            return seen

        def do_GET(self) -> None:
            self._record()
            self._reply(200, {"status": "ok", "served_by": backend.address})

        def do_POST(self) -> None:
            self._record()
            self._reply(
                200,
                {
                    "id": "chatcmpl-static",
                    "object": "chat.completion",
                    "model": "static",
                    "served_by": backend.address,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="backend", daemon=True)
    backend = Backend(server, thread)
    thread.start()
    return backend
