"""A chat workload for the demo: groups of conversations that share a long system prompt, each
conversation several turns long (every turn resends the whole history, as chat clients do).

Requests stream (SSE), so the client measures time to first token itself; each response names the
pod that served it (`x-sim-pod`), so the demo can show which pod got which conversation.
Standard library only; bounded: a fixed number of requests, each with a timeout.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

SIM_POD_HEADER = "x-sim-pod"
# One request may not take longer than this (the simulator answers in seconds at most).
REQUEST_TIMEOUT_S = 60.0

TOPICS = [
    "billing and refunds", "network outages", "password resets", "shipping delays",
    "API rate limits", "GPU quotas", "invoice disputes", "account security",
]


@dataclass(frozen=True)
class WorkloadSpec:
    groups: int = 4  # distinct system prompts ("tenants" or "apps")
    conversations_per_group: int = 6
    turns: int = 4
    system_prompt_chars: int = 6000  # about 1,500 tokens: a realistic RAG/agent preamble
    max_tokens: int = 24
    concurrency: int = 12  # conversations in flight at once
    model: str = "qwen3-0.6b"
    seed: int = 7


@dataclass
class RequestRecord:
    conversation: str
    group: int
    turn: int
    status: int
    pod: str | None
    ttft_s: float | None
    latency_s: float
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    error: str | None = None


@dataclass
class WorkloadResult:
    records: list[RequestRecord] = field(default_factory=list)
    wall_s: float = 0.0

    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status == 200 and r.error is None]

    def errors(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status != 200 or r.error is not None]


def system_prompt(group: int, chars: int) -> str:
    rng = random.Random(1000 + group)
    topic = TOPICS[group % len(TOPICS)]
    lines = [f"You are the support assistant of company #{group}, specialised in {topic}."]
    i = 0
    while sum(len(x) + 1 for x in lines) < chars:
        i += 1
        lines.append(f"Policy {group}.{i}: when a customer asks about {rng.choice(TOPICS)}, "
                     f"check ticket class {rng.randint(100, 999)} and answer within {rng.randint(2, 48)} hours.")
    return "\n".join(lines)[:chars]


def _stream_chat(address: str, body: dict, timeout: float) -> tuple[int, str | None, float | None, str, dict | None]:
    """POSTs one streaming chat request; returns status, pod, TTFT, the answer text and the usage."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    start = time.monotonic()
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        pod = resp.getheader(SIM_POD_HEADER)
        if resp.status != 200:
            resp.read()
            return resp.status, pod, None, "", None
        ttft, text, usage, buf = None, [], None, b""
        while True:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.decode(errors="replace").splitlines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        continue
                    msg = json.loads(data)
                    if msg.get("usage"):
                        usage = msg["usage"]
                    for choice in msg.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if ttft is None:
                                ttft = time.monotonic() - start
                            text.append(piece)
        return 200, pod, ttft, "".join(text), usage
    finally:
        conn.close()


def run(address: str, spec: WorkloadSpec, on_progress: Callable[[int, int], None] | None = None) -> WorkloadResult:
    """Runs every conversation to the end through `address` (the proxy) and records each request."""
    result = WorkloadResult()
    lock = threading.Lock()
    total = spec.groups * spec.conversations_per_group * spec.turns
    rng = random.Random(spec.seed)
    conversations = [(g, c) for g in range(spec.groups) for c in range(spec.conversations_per_group)]
    rng.shuffle(conversations)  # groups interleave, as independent users would
    prompts = {g: system_prompt(g, spec.system_prompt_chars) for g in range(spec.groups)}

    def converse(group: int, index: int) -> None:
        name = f"g{group}-c{index}"
        messages = [{"role": "system", "content": prompts[group]}]
        for turn in range(spec.turns):
            topic = TOPICS[(group + index + turn) % len(TOPICS)]
            messages.append({"role": "user", "content": f"[{name} turn {turn}] I have a question about {topic}."})
            body = {"model": spec.model, "messages": messages, "max_tokens": spec.max_tokens, "stream": True,
                    "stream_options": {"include_usage": True}}
            start = time.monotonic()
            try:
                status, pod, ttft, answer, usage = _stream_chat(address, body, REQUEST_TIMEOUT_S)
                error = None
            except (OSError, http.client.HTTPException, ValueError) as e:
                status, pod, ttft, answer, usage, error = 0, None, None, "", None, f"{type(e).__name__}: {e}"
            details = (usage or {}).get("prompt_tokens_details") or {}
            record = RequestRecord(name, group, turn, status, pod, ttft, time.monotonic() - start,
                                   (usage or {}).get("prompt_tokens"), details.get("cached_tokens"), error)
            with lock:
                result.records.append(record)
                done = len(result.records)
            if on_progress:
                on_progress(done, total)
            if status != 200:
                return  # a broken conversation stops; the error is recorded
            messages.append({"role": "assistant", "content": answer or "ok"})

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        for f in [pool.submit(converse, g, c) for g, c in conversations]:
            f.result()
    result.wall_s = time.monotonic() - start
    return result


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]
