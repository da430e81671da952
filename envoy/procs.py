"""The local stack's processes: the run folder their logs and configs go to (`RunDir`), one child
process in its own process group (`Process`: start, log tail, signal, stop with a grace period),
and the handles of a running Envoy (`Envoy`: addresses, admin stats) and wis-epp (`Epp`: its
ports and metrics page). `Stack` in stack.py starts them; this file knows no component's
command line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import prom
from binaries import ROOT
from names import envoy_stat
from probes import StackError, http_get

# A process asked to stop (SIGTERM) gets this long before SIGKILL.
STOP_GRACE_S = 5.0
# How much of a log to quote in an error.
LOG_TAIL_LINES = 40


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, name: str, base: Path | None = None) -> "RunDir":
        base = base or ROOT / ".run"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = base / f"{name}-{stamp}-{os.getpid()}"
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass
class Process:
    """One child process in its own process group, its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> "Process":
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: killpg reaches its children too
                env={**os.environ, **(env or {})},
                cwd=ROOT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def running(self) -> bool:
        """True while the process runs; raises StackError with its log tail once it has exited, so
        a readiness wait fails at once instead of at its deadline."""
        if not self.alive():
            raise StackError(f"{self.name} exited{self.failure_note()}")
        return True

    def failure_note(self) -> str:
        state = "running" if self.alive() else f"exited with {self.popen.returncode if self.popen else '?'}"
        return f" ({self.name} {state}; log {self.log}):\n{self.log_tail()}"

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # Children that outlived the leader still sit in the group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Envoy:
    process: Process
    listen: str
    admin: str
    config_path: Path
    scenario: str
    workers: int
    # JSON lines with each request's decision (start_envoy(decision_log=True)).
    decision_log: Path | None = None
    # The listener serving only /stats/prometheus (start_envoy(stats_listen=True)).
    stats_listen: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges from the admin interface, by name."""
        path = "/stats?format=json"
        if filter_regex:
            path += "&filter=" + filter_regex
        status, body = http_get(self.admin, path)
        if status != 200:
            raise StackError(f"envoy admin {path}: HTTP {status}")
        out: dict[str, int] = {}
        for stat in json.loads(body).get("stats", []):
            if "value" in stat:
                out[stat["name"]] = stat["value"]
        return out

    def plugin_stat(self, name: str) -> int:
        """One of the plugin's stats (names.Stat), summed over what the admin reports under that
        name; 0 when the plugin has not recorded it yet."""
        full = envoy_stat(name)
        return sum(v for k, v in self.stats("^" + re.escape(full) + "$").items() if k == full)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self.process.log_tail(lines)


@dataclass
class Epp:
    """A running wis-epp: its ext_proc port, its gRPC health port and its metrics page."""

    process: Process
    grpc: str
    health: str
    metrics: str
    secure: bool

    def metrics_text(self) -> str:
        status, body = http_get(self.metrics, "/metrics")
        if status != 200:
            raise StackError(f"wis-epp {self.metrics}/metrics: HTTP {status}")
        return body.decode(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """One metric of its page (the samples whose labels include `labels`, summed); 0 when absent."""
        return prom.value(self.metrics_text(), name, **labels) or 0.0
