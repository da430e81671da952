#!/usr/bin/env python3
"""Start and stop the local serving stack: a simulated vLLM fleet, the scraper and Envoy.

Used by the end-to-end tests, the demo and the benchmark, from Python:

    with Stack(run_dir=RunDir.create("demo")) as stack:
        pool = stack.start_fleet(pods=4)                     # `sim fleet`, one port per pod
        scraper = stack.start_scraper(pool)                  # `wis-scraper --static ...`
        envoy = stack.start_envoy("plugin", pool, scraper=scraper, workers=2)
        ...requests to envoy.url...
        epp = stack.start_epp(pool)                          # `wis-epp --static-endpoints ...`
        envoy2 = stack.start_envoy("wis-epp", pool, ext_proc=epp.grpc, name="envoy-epp")
    # every process is gone here, also after an exception or Ctrl-C

or from the shell (prints one JSON line with the addresses, then holds until Ctrl-C/SIGTERM):

    python3 envoy/stack.py up --pods 4 --scenario plugin --workers 2

Each process runs in its own process group, so stopping it also stops anything it spawned. Ports are
picked free at run time; readiness is polled with deadlines; every log goes to the run folder
(default `.run/<name>-<time>/`), which is kept for reading afterwards.

This file is the `Stack` (which component starts with which command line, and in which order they
stop) and the `up` command. What it is built from lives beside it, and every name is importable
from here as well: binaries.py (where the programs are), probes.py (free ports, HTTP GET, waits with
deadlines, the pods' and the scraper's probes, `StackError`) and procs.py (`RunDir`, `Process`,
and the `Envoy` and `Epp` handles).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import render  # noqa: E402  (sibling modules; envoy/ is not a package, to keep the `envoy` wheel importable)
from names import MODEL, Snapshot, SimMetric, envoy_stat  # noqa: E402,F401

# The pieces the Stack is made of, each importable from here as before the split (the tests, the
# demo, the benchmark and the browser tests import them as `stack.X`).
from binaries import (  # noqa: E402,F401
    EPP_BINARY,
    ROOT,
    SCRAPER_BINARY,
    SIM_BINARY,
    envoy_binary,
    epp_binary,
    fleet_kind,
    native_binary,
    plugin_wasm,
    scraper_binary,
    sim_binary,
    target_dir,
)
from probes import (  # noqa: E402,F401
    POLL_INTERVAL_S,
    StackError,
    free_port,
    free_ports,
    http_get,
    sim_fault,
    sim_metric,
    sim_waiting,
    snapshot,
    wait_until,
)
from probes import accepts as _accepts  # noqa: E402
from procs import LOG_TAIL_LINES, STOP_GRACE_S, Envoy, Epp, Process, RunDir  # noqa: E402,F401

# How long a component may take to become ready before we give up with its log tail. Envoy compiles
# the .wasm with V8 once per worker, which takes a few seconds on a slow 2-core machine.
ENVOY_READY_TIMEOUT_S = 60.0
SERVICE_READY_TIMEOUT_S = 30.0


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

    def start_epp(
        self,
        pool: Sequence[str],
        *,
        plugin_config: dict[str, Any] | None = None,
        secure: bool = True,
        interval_ms: int = 50,
        name: str = "wis-epp",
    ) -> Epp:
        """`wis-epp --static-endpoints`: the plugin's core as an Endpoint Picker; returns once its
        /readyz says the pool is known and scraped."""
        grpc_port, health_port, metrics_port = free_ports(3)
        argv: list[Any] = [
            epp_binary(),
            "--static-endpoints",
            ",".join(pool),
            "--bind-address",
            "127.0.0.1",
            "--grpc-port",
            grpc_port,
            "--grpc-health-port",
            health_port,
            "--metrics-port",
            metrics_port,
            "--scrape-interval-ms",
            interval_ms,
            f"--secure-serving={'true' if secure else 'false'}",
        ]
        if plugin_config:
            config_path = self.run_dir.file(f"{name}-config.json")
            config_path.write_text(json.dumps(plugin_config))
            argv += ["--config-file", config_path]
        proc = self.spawn(name, argv)
        metrics = f"127.0.0.1:{metrics_port}"
        wait_until(
            f"wis-epp {metrics}/readyz",
            lambda: proc.alive() and http_get(metrics, "/readyz")[0] == 200,
            SERVICE_READY_TIMEOUT_S,
            proc.failure_note,
        )
        return Epp(proc, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{health_port}", metrics, secure)

    def start_envoy(
        self,
        scenario: str,
        pool: Sequence[str],
        *,
        scraper: str | None = None,
        ext_proc: str | None = None,
        ext_proc_tls: bool = True,
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
            ext_proc_tls=ext_proc_tls,
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
    up.add_argument("--ext-proc", help="ext-proc scenario: the running gRPC picker IP:PORT (wis-epp: started if absent)")
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
            ext_proc = a.ext_proc
            if a.scenario == "wis-epp" and not ext_proc:
                ext_proc = stack.start_epp(pool, plugin_config=plugin_config).grpc
            envoy = stack.start_envoy(
                a.scenario, pool, scraper=scraper, ext_proc=ext_proc, workers=a.workers, plugin_config=plugin_config
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
