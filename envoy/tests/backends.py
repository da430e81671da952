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


# --- a model server as a Python origin server writes it ------------------------------------------

# What the stand-in pods report: distinctive, so a test can find them again in the scraper's snapshot.
MODEL_SERVER_KV_USAGE = 0.25
MODEL_SERVER_NUM_GPU_BLOCKS = 4096


@dataclass
class ModelServer:
    """An OpenAI-style model server on Python's stdlib `http.server`, written the way small Python
    servers are: it routes on the raw request target (`self.path`). An absolute-form target
    (`GET http://host:port/metrics`) therefore matches no route and gets 404, exactly what uvicorn
    with its h11 parser answers. It exports vLLM's metric names on `/metrics`."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    model: str
    seen: list[SeenRequest] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def targets(self, method: str) -> list[str]:
        """The raw request targets of every `method` request this server saw."""
        with self.lock:
            return [r.path for r in self.seen if r.method == method]

    def metrics(self) -> str:
        label = f'model_name="{self.model}"'
        with self.lock:
            running = self.in_flight
        return (
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{{{label}}} 0.0\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{{{label}}} {float(running)}\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{{{label}}} {MODEL_SERVER_KV_USAGE}\n"
            "# TYPE vllm:cache_config_info gauge\n"
            f'vllm:cache_config_info{{block_size="16",num_gpu_blocks="{MODEL_SERVER_NUM_GPU_BLOCKS}"}} 1.0\n'
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_model_server(model: str) -> ModelServer:
    pod: ModelServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.send_header(SERVED_BY_HEADER, pod.address)
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            with pod.lock:
                pod.seen.append(SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            return body

        def do_GET(self) -> None:
            self._record()
            if self.path == "/metrics":
                self._send(200, pod.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path == "/health":
                self._send(200, b"", "text/plain")
            else:
                self._send(404, b'{"detail":"Not Found"}')

        def do_POST(self) -> None:
            body = self._record()
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                self._send(404, b'{"detail":"Not Found"}')
                return
            try:
                request = json.loads(body)
            except ValueError:
                self._send(400, b'{"error":{"message":"bad body","type":"BadRequestError"}}')
                return
            with pod.lock:
                pod.in_flight += 1
            try:
                self._send(200, json.dumps(_completion(request, pod.address)).encode())
            finally:
                with pod.lock:
                    pod.in_flight -= 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="model-server", daemon=True)
    pod = ModelServer(server, thread, model)
    thread.start()
    return pod


def _completion(request: dict, served_by: str) -> dict:
    chat = "messages" in request
    choice = (
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        if chat
        else {"index": 0, "text": "ok", "finish_reason": "stop"}
    )
    prompt = len(json.dumps(request.get("messages") or request.get("prompt") or "")) // 4
    return {
        "id": "cmpl-stdlib",
        "object": "chat.completion" if chat else "text_completion",
        "model": request.get("model"),
        "served_by": served_by,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1},
    }


# --- a stand-in for the scraper whose snapshot is garbage -----------------------------------------

@dataclass
class GarbageSnapshots:
    """Listens where the scraper did and answers `/snapshot` with one broken answer after another
    (cycling through `ANSWERS`), counting what it served."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    served: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# (label, status, content type, body): each is a way a snapshot can be unusable.
GARBAGE_ANSWERS: list[tuple[str, int, str, bytes]] = [
    ("not json", 200, "application/json", b"<html>upstream connect error</html>"),
    ("truncated json", 200, "application/json", b'{"format_version":1,"sequence":9,"endpoints":[{"addre'),
    ("wrong shape", 200, "application/json", b'{"format_version":1,"endpoints":"everything is fine"}'),
    ("future format", 200, "application/json", b'{"format_version":99,"sequence":1,"generated_at_ms":1,"endpoints":[]}'),
    ("binary", 200, "application/octet-stream", bytes(range(256)) * 16),
    ("empty", 200, "application/json", b""),
    ("server error", 500, "text/plain", b"internal error"),
    ("oversized", 200, "application/json", b'{"endpoints":[' + b'{"address":"10.0.0.1:1"},' * 100_000 + b"{}]}"),
]


def start_garbage_snapshots(address: str) -> GarbageSnapshots:
    stand_in: GarbageSnapshots
    lock = threading.Lock()
    turn = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                label, status, ctype, body = GARBAGE_ANSWERS[turn[0] % len(GARBAGE_ANSWERS)]
                turn[0] += 1
                stand_in.served[label] = stand_in.served.get(label, 0) + 1
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    host, _, port = address.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="garbage-snapshots", daemon=True)
    stand_in = GarbageSnapshots(server, thread)
    thread.start()
    return stand_in
