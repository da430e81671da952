#!/usr/bin/env python3
"""A minimal stand-in for `sim fleet`: OpenAI-style pods on the given ports, in one process.

Used by the end-to-end tests when the Rust simulator is not built (WIS_FLEET=mini), and as a
reference for the interface stack.py expects from a fleet:
  POST /v1/chat/completions, /v1/completions   (stream or not; header `x-sim-pod: ip:port`)
  GET  /health, /metrics                       (vLLM metric names: queue, running, KV usage, prefix cache)
  POST /admin/fault {"mode": "stall"|"exit"|"metrics404"|"none"}
        stall: hold requests (they queue) until "none"; exit: the pod closes its socket and stops
        answering; metrics404: /metrics answers 404 while serving goes on (`--fault MODE` at start-up)
It models no KV cache or timing beyond a fixed per-token delay; routing tests need only the interface.

    python3 envoy/minifleet.py --listen 127.0.0.1:9001,127.0.0.1:9002 [--served-model-name NAME]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from names import MODEL, Header

POD_HEADER = Header.SIM_POD
TOKEN_DELAY_S = 0.002  # per generated token: small, the tests only need ordering, not realism
DEFAULT_MAX_TOKENS = 8
STALL_LIMIT_S = 60.0  # a stalled request never waits longer than this
FAULTS = ("none", "stall", "exit", "metrics404")


class Pod:
    def __init__(self, host: str, port: int, model: str = MODEL):
        self.address = f"{host}:{port}"
        self.model = model
        self.lock = threading.Condition()
        self.waiting = 0
        self.running = 0
        self.stalled = False
        self.metrics_404 = False
        self.requests = 0
        self.exited = False
        self.server = ThreadingHTTPServer((host, port), self.handler())
        self.server.daemon_threads = True

    def handler(self):
        pod = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.send_header(POD_HEADER, pod.address)
                self.end_headers()
                self.wfile.write(body)

            def gone(self) -> bool:
                """After an exit fault, kept-alive connections die without an answer, as a crashed pod's would."""
                if pod.exited:
                    self.close_connection = True
                return pod.exited

            def do_GET(self) -> None:
                if self.gone():
                    return
                if self.path == "/health":
                    self.send(200, b"", "text/plain")
                elif self.path == "/metrics" and pod.metrics_404:
                    self.send(404, b"Not Found", "text/plain")
                elif self.path == "/metrics":
                    self.send(200, pod.metrics().encode(), "text/plain; version=0.0.4")
                else:
                    self.send(404, b'{"error":"not found"}')

            def do_POST(self) -> None:
                if self.gone():
                    return
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if self.path == "/admin/fault":
                    kind = json.loads(raw or b"{}").get("mode", "none")
                    if kind not in FAULTS:
                        self.send(400, json.dumps({"error": f"unknown fault mode {kind!r}"}).encode())
                        return
                    pod.fault(kind)
                    self.send(200, json.dumps({"mode": kind}).encode())
                    return
                try:
                    body = json.loads(raw)
                    assert isinstance(body, dict) and "model" in body
                except (ValueError, AssertionError):
                    self.send(400, b'{"error":{"message":"bad body","type":"invalid_request_error"}}')
                    return
                pod.admit()
                try:
                    tokens = int(body.get("max_tokens") or DEFAULT_MAX_TOKENS)
                    chat = self.path.startswith("/v1/chat")
                    if body.get("stream"):
                        self.stream(body, tokens, chat)
                    else:
                        time.sleep(TOKEN_DELAY_S * tokens)
                        self.send(200, json.dumps(completion(body, tokens, chat)).encode())
                finally:
                    pod.finish()

            def stream(self, body: dict, tokens: int, chat: bool) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.send_header(POD_HEADER, pod.address)
                self.end_headers()

                def event(payload: str) -> None:
                    data = f"data: {payload}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                for i in range(tokens):
                    time.sleep(TOKEN_DELAY_S)
                    delta = {"content": f"tok{i} "}
                    choice = {"index": 0, "delta": delta, "finish_reason": "length" if i == tokens - 1 else None}
                    if not chat:
                        choice = {"index": 0, "text": f"tok{i} ", "finish_reason": choice["finish_reason"]}
                    event(json.dumps({"id": "sim", "object": "chat.completion.chunk" if chat else "text_completion",
                                      "model": body["model"], "choices": [choice]}))
                if (body.get("stream_options") or {}).get("include_usage"):
                    event(json.dumps({"id": "sim", "object": "chat.completion.chunk", "model": body["model"],
                                      "choices": [], "usage": usage(body, tokens)}))
                event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler

    def admit(self) -> None:
        with self.lock:
            self.requests += 1
            self.waiting += 1
            deadline = time.monotonic() + STALL_LIMIT_S
            while self.stalled and time.monotonic() < deadline:
                self.lock.wait(timeout=0.1)
            self.waiting -= 1
            self.running += 1

    def finish(self) -> None:
        with self.lock:
            self.running -= 1

    def fault(self, kind: str) -> None:
        with self.lock:
            self.stalled = kind == "stall"
            self.metrics_404 = kind == "metrics404"
            self.lock.notify_all()
        if kind == "exit":
            self.exited = True
            threading.Thread(target=self.close, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def metrics(self) -> str:
        with self.lock:
            waiting, running, requests = self.waiting, self.running, self.requests
        label = f'{{model_name="{self.model}"}}'
        return (
            f"vllm:num_requests_waiting{label} {waiting}\n"
            f"vllm:num_requests_running{label} {running}\n"
            f"vllm:kv_cache_usage_perc{label} {min(1.0, running / 64):.4f}\n"
            f"vllm:prefix_cache_queries_total{label} {requests * 100}\n"
            f"vllm:prefix_cache_hits_total{label} 0\n"
            'vllm:cache_config_info{block_size="16",num_gpu_blocks="4096"} 1\n'
        )


def usage(body: dict, tokens: int) -> dict:
    prompt = len(json.dumps(body.get("messages") or body.get("prompt") or "")) // 4
    return {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}


def completion(body: dict, tokens: int, chat: bool) -> dict:
    text = "".join(f"tok{i} " for i in range(tokens))
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
    if not chat:
        choice = {"index": 0, "text": text, "finish_reason": "length"}
    return {"id": "sim", "object": "chat.completion" if chat else "text_completion", "model": body["model"],
            "choices": [choice], "usage": usage(body, tokens)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="IP:PORT,IP:PORT,... one pod per address")
    p.add_argument("--served-model-name", default=MODEL, help=f"the model name in the metrics (default {MODEL})")
    p.add_argument("--fault", choices=FAULTS, default="none", help="fault of every pod at start-up")
    a = p.parse_args()
    pods = []
    for address in a.listen.split(","):
        host, _, port = address.rpartition(":")
        pods.append(Pod(host, int(port), a.served_model_name))
        pods[-1].fault(a.fault)
    for pod in pods:
        threading.Thread(target=pod.server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"minifleet: {len(pods)} pods on {a.listen}", flush=True)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
