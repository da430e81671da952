"""A steady chat load through Envoy for the fault runs: a few client threads, each sending one
request at a time (each on its own connection, so Envoy's workers all get some) until stopped.
Every request's outcome is kept, so a test can assert that none failed across a fault.

    with SteadyLoad(envoy.listen) as load:
        load.wait_for(10, "load before the fault")
        ...inject the fault...
        load.wait_for(30, "load during the fault")
    assert load.failures() == []
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import client
import stack as stack_mod
from names import Header

# Requests of one conversation share a long system prompt, so the plugin's prefix memory matters.
SYSTEM_PROMPT_CHARS = 3000
# Short answers keep each request short on a slow machine.
MAX_TOKENS = 8
# A request slower than this counts as failed (a hang behind a fault is a failure too).
REQUEST_TIMEOUT_S = 30.0
# How long the load may take to serve the requests a test waits for.
PROGRESS_TIMEOUT_S = 60.0


def system_prompt(group: int) -> str:
    words = [f"group{group}-rule{i}: answer carefully and cite section {group}.{i}." for i in range(400)]
    return " ".join(words)[:SYSTEM_PROMPT_CHARS]


@dataclass
class Outcome:
    worker: int
    index: int
    status: int  # 0: no response (connection error or timeout)
    served_by: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class SteadyLoad:
    def __init__(self, address: str, *, workers: int = 4, groups: int = 6, served_by_header: str = Header.SIM_POD):
        self.address = address
        self.workers = workers
        self.groups = groups
        self.served_by_header = served_by_header
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(workers)]

    def __enter__(self) -> "SteadyLoad":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 5)

    def _run(self, worker: int) -> None:
        i = 0
        while not self._stop.is_set():
            group = (worker + i) % self.groups
            messages = client.conversation(system_prompt(group), f"worker {worker} question {i}: what does rule {i} say?")
            try:
                resp = client.chat(self.address, messages, max_tokens=MAX_TOKENS, timeout=REQUEST_TIMEOUT_S)
                error = None if resp.status == 200 else resp.body[:300].decode(errors="replace")
                outcome = Outcome(worker, i, resp.status, resp.header(self.served_by_header), error)
            except OSError as e:
                outcome = Outcome(worker, i, 0, None, repr(e))
            with self._lock:
                self.outcomes.append(outcome)
            i += 1

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def wait_for(self, more: int, what: str, timeout: float = PROGRESS_TIMEOUT_S) -> int:
        """Waits until `more` further requests have finished; returns the count reached."""
        goal = self.count() + more
        stack_mod.wait_until(
            f"{what}: {more} more requests", lambda: self.count() >= goal, timeout, lambda: f"\n{self.report()}"
        )
        return self.count()

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if not o.ok]

    def served(self, since: int = 0) -> list[str | None]:
        """The serving pod of each successful request from the `since`-th on."""
        with self._lock:
            return [o.served_by for o in self.outcomes[since:] if o.ok]

    def report(self) -> str:
        failed = self.failures()
        lines = [f"{self.count()} requests, {len(failed)} failed"]
        lines += [f"  worker {o.worker} #{o.index}: HTTP {o.status} {o.error}" for o in failed[:10]]
        return "\n".join(lines)
