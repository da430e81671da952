#!/usr/bin/env python3
"""The routers an experiment can send through (envoy/experiment.py's runs), and how each starts:
Envoy with one of render.py's scenarios, two Envoys side by side, Envoy + wis-epp, vllm-router, or
the ideal reference with no proxy at all.

Where to change what:
  - which routers exist (in report order) and what each is:  ROUTERS
  - how each starts and whose CPU is the proxy's:             `start_router`, `Router`
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import render  # noqa: E402
import stack as stack_mod  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


# Every router an experiment can run, in report order, with what it is.
ROUTERS: dict[str, str] = {
    "ideal-pinned": "no proxy: the load generator pins each system-prompt group (so each conversation) to one pod",
    "envoy-round-robin": "Envoy, ROUND_ROBIN",
    "envoy-least-request": "Envoy, LEAST_REQUEST",
    "vllm-router-cache_aware": "vllm-router --policy cache_aware",
    "vllm-router-power_of_two": "vllm-router --policy power_of_two",
    "envoy-plugin": "Envoy + this plugin (default profile)",
    "envoy-wis-epp": "Envoy + wis-epp: the same core and profile out of proxy, over ext_proc as GAIE wires an Endpoint Picker "
                     "(its CPU is added to Envoy's)",
    "two-gateways": "two Envoys + plugin (own scraper each) on one fleet, the client alternating request by request",
    "two-gateways-by-key": "the same two gateways with `max-score-picker`'s `unseenPlacement: key` (what an operator "
                           "running several replicas sets; the default `auto` decides from what the pods report)",
}

# The default profile with unseen prompts always placed by their conversation key.
BY_KEY_PROFILE: dict = {"endpointPickerConfig": {
    "plugins": [{"type": "prefix-cache-scorer"}, {"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"},
                {"type": "max-score-picker", "parameters": {"unseenPlacement": "key"}}],
    "schedulingProfiles": [{"name": "default", "plugins": [
        {"pluginRef": "prefix-cache-scorer", "weight": 3}, {"pluginRef": "queue-scorer", "weight": 2},
        {"pluginRef": "kv-cache-utilization-scorer", "weight": 2}, {"pluginRef": "max-score-picker"}]}]}}


@dataclass
class Router:
    """A running router: where `sim load` sends, how it spreads, and whose CPU is the proxy's."""

    name: str
    targets: list[str]
    # `sim load --spread` (None: its default)
    spread: str | None = None
    pids: list[int] = field(default_factory=list)
    envoys: list[stack_mod.Envoy] = field(default_factory=list)

    def cpu_seconds(self) -> float | None:
        if not self.pids:
            return None
        values = [cpu_seconds(pid) for pid in self.pids]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    def plugin_stats(self) -> dict[str, float]:
        """The plugin's non-zero stats (Envoy `wasmcustom.wis.*`); with several gateways, the mean."""
        per_envoy: list[dict[str, float]] = []
        for envoy in self.envoys:
            try:
                per_envoy.append({k: v for k, v in envoy.stats("wasm").items() if "wis." in k and v})
            except (stack_mod.StackError, OSError, ValueError):
                continue
        keys = sorted({k for s in per_envoy for k in s})
        return {k: sum(s.get(k, 0) for s in per_envoy) / len(per_envoy) for k in keys}


# Starts an Envoy for a scenario: (stack, scenario, pool, scraper) -> Envoy. The demo passes its own
# for the plugin (with the chat and the decision view attached).
EnvoyStarter = Callable[[stack_mod.Stack, str, list[str], "str | None"], stack_mod.Envoy]


def start_router(
    stack: stack_mod.Stack,
    name: str,
    pool: list[str],
    *,
    plugin_config: dict | None = None,
    workers: int = 2,
    access_log: bool = False,
    envoy_starter: EnvoyStarter | None = None,
) -> Router:
    """Starts the router `name` (a key of ROUTERS) in front of `pool`, with what it needs (the
    scraper for the plugin)."""

    def envoy(scenario: str, scraper: str | None, label: str = "envoy", config: dict | None = plugin_config
              ) -> stack_mod.Envoy:
        if envoy_starter is not None and label == "envoy":
            return envoy_starter(stack, scenario, pool, scraper)
        return stack.start_envoy(scenario, pool, scraper=scraper, workers=workers, access_log=access_log,
                                 plugin_config=config if render.scenario(scenario).needs_wasm else None, name=label)

    if name == "ideal-pinned":
        return Router(name, [f"http://{p}" for p in pool], spread="group")
    if name in ("two-gateways", "two-gateways-by-key"):
        config = BY_KEY_PROFILE if name == "two-gateways-by-key" else plugin_config
        gateways = [envoy("plugin", stack.start_scraper(pool), label=f"envoy-gw{i}", config=config) for i in (1, 2)]
        return Router(name, [g.url for g in gateways], "round-robin", [g.process.pid for g in gateways], gateways)
    if name == "envoy-wis-epp":
        # wis-epp scrapes the pods itself and takes the plugin's configuration.
        epp = stack.start_epp(pool, plugin_config=plugin_config)
        e = stack.start_envoy("wis-epp", pool, ext_proc=epp.grpc, workers=workers, access_log=access_log)
        return Router(name, [e.url], None, [e.process.pid, epp.process.pid], [e])
    if name.startswith("envoy-"):
        scenario = name.removeprefix("envoy-")
        scraper = stack.start_scraper(pool) if needs_scraper(scenario) else None
        e = envoy(scenario, scraper)
        return Router(name, [e.url], None, [e.process.pid], [e])
    if name.startswith("vllm-router-"):
        policy = name.removeprefix("vllm-router-")
        port, metrics_port = stack_mod.free_ports(2)
        binary = Path(sys.executable).parent / "vllm-router"
        argv = [binary, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
                "--log-level", "warning", "--worker-urls", *[f"http://{p}" for p in pool]]
        proc = stack.spawn(name, argv)
        address = f"127.0.0.1:{port}"
        stack_mod.wait_until(f"{name} {address}",
                             lambda: proc.alive() and stack_mod.http_get(address, "/health")[0] == 200,
                             60.0, proc.failure_note)
        return Router(name, [f"http://{address}"], None, [proc.pid])
    raise ValueError(f"unknown router {name!r}; expected one of {', '.join(ROUTERS)}")


def needs_scraper(scenario: str) -> bool:
    """Whether an Envoy scenario runs the plugin, which reads pool snapshots from the scraper."""
    return render.scenario(scenario).needs_scraper
