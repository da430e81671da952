"""The overhead run of `./build.sh bench`: what each proxy adds per request, against an instant backend.

The backend is `floor-server` (bench/floor-server): one native thread answering every request at
once with a fixed one-token completion, so "req/s against the floor" measures the proxy, not the
pods. Proxies, each an Envoy with 2 workers routing to the same pods:

  no-filter         the floor: the pool cluster and no filter at all
  passthrough-wasm  a proxy-wasm filter that does nothing (bench/passthrough-filter): the price of any
                    wasm filter in V8. It runs in render.py's `plugin` scenario with its own module in
                    place of the plugin's, so the two rows differ in the .wasm and nothing else
  passthrough-body  the same module configured to pause for the whole request body, copy it into
                    the VM and set one header: what any picker that reads the body pays before it
                    schedules anything (Envoy buffering the body, the copy into V8)
  plugin            this project's filter with the scraper, as deployed
  ext-proc          an out-of-process ext_proc picker (bench/ext-proc-picker, round-robin, buffered
                    body): the bare hop, wired like GAIE's EPP
  wis-epp           this project's core behind that hop (epp/: FULL_DUPLEX_STREAMED both ways, TLS),
                    the same algorithm as `plugin` out of proxy

`wrk` drives each with 1 connection (no queueing: the difference to the floor is what the proxy adds
on the request path) and with N connections (the machine saturates: throughput), in rounds that
interleave the proxies; each row is the median of its rounds. CPU per request is the proxy
processes' utime + stime over each wrk run (from /proc) divided by the requests wrk completed.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))
import experiment  # noqa: E402
import stack as stack_mod  # noqa: E402
from experiment import say  # noqa: E402

# Rows in report order: the floor first.
PROXIES = ("no-filter", "passthrough-wasm", "passthrough-body", "plugin", "plugin-compare", "ext-proc", "wis-epp")
# Another build of the plugin to measure against this one in the same rounds (an A/B of a change
# on one machine): its .wasm path. Without it there is no `plugin-compare` row.
COMPARE_WASM_ENV = "WIS_OVERHEAD_COMPARE_WASM"
# Seconds of wrk per proxy and setting before the measured rounds (V8 tiers up, connections open).
WARM_UP_S = 3


@dataclass
class OverheadRow:
    proxy: str
    connections: int
    p50_us: float
    p90_us: float
    p99_us: float
    rps: float
    errors: int = 0
    requests: int = 0
    # CPU of the Envoy process per request completed, and of the ext_proc picker (ext-proc and
    # wis-epp rows only).
    envoy_cpu_us: float | None = None
    ext_proc_cpu_us: float | None = None
    # Interleaved rounds this row is the median of.
    rounds: int = 1


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local bodies = {}
for i = 1, 64 do
  bodies[i] = '{"model":"%(model)s","max_tokens":1,"messages":[{"role":"system","content":"You are a helpful assistant for request ' .. i .. ', answering briefly and precisely."},{"role":"user","content":"Say hello number ' .. i .. '."}]}'
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/chat/completions", nil, bodies[(n %% 64) + 1])
end
"""


def parse_wrk(text: str) -> OverheadRow:
    def to_us(value: str, unit: str) -> float:
        return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]

    pct = {m.group(1): to_us(m.group(2), m.group(3))
           for m in re.finditer(r"^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errs = int(errors.group(1)) if errors else 0
    if socket:
        errs += sum(int(g) for g in socket.groups())
    if not (pct.get("50") and rps and total):
        raise RuntimeError(f"could not read wrk's output:\n{text}")
    return OverheadRow("", 0, pct["50"], pct.get("90", float("nan")), pct.get("99", float("nan")),
                       float(rps.group(1)), errs, int(total.group(1)))


def median_row(proxy: str, connections: int, runs: list[OverheadRow]) -> OverheadRow:
    """Each measure's median over the rounds (errors and requests add up)."""
    med = statistics.median

    def med_opt(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return med(known) if known else None

    return OverheadRow(proxy, connections, med([r.p50_us for r in runs]), med([r.p90_us for r in runs]),
                       med([r.p99_us for r in runs]), med([r.rps for r in runs]), sum(r.errors for r in runs),
                       sum(r.requests for r in runs), med_opt([r.envoy_cpu_us for r in runs]),
                       med_opt([r.ext_proc_cpu_us for r in runs]), len(runs))


@dataclass
class Proxy:
    envoy: stack_mod.Envoy
    ext_proc_pid: int | None = None


def start_proxies(stack: stack_mod.Stack, pool: list[str]) -> dict[str, Proxy]:
    proxies: dict[str, Proxy] = {}
    compare_wasm = os.environ.get(COMPARE_WASM_ENV)
    for proxy in PROXIES:
        if proxy == "plugin-compare" and not compare_wasm:
            continue
        ext_proc, ext_proc_pid, scraper, wasm = None, None, None, None
        if proxy == "ext-proc":
            ext_proc = f"127.0.0.1:{stack_mod.free_port()}"
            picker = stack.spawn("ext-proc-picker", [os.environ["WIS_EXT_PROC_BIN"], "--listen", ext_proc,
                                                     "--pool", ",".join(pool)])
            stack_mod.wait_until("ext-proc-picker", lambda: picker.alive() and stack_mod._accepts(ext_proc), 20.0,
                                 picker.failure_note)
            ext_proc_pid = picker.pid
        if proxy == "wis-epp":
            epp = stack.start_epp(pool)
            ext_proc, ext_proc_pid = epp.grpc, epp.process.pid
        if proxy in ("plugin", "plugin-compare"):
            scraper = stack.start_scraper(pool)
        if proxy == "plugin-compare":
            wasm = Path(compare_wasm)
        plugin_config = None
        if proxy.startswith("passthrough-"):
            wasm = Path(os.environ["WIS_PASSTHROUGH_WASM"])
            if proxy == "passthrough-body":
                plugin_config = {"passthrough": {"readBody": True}}
        # The pass-through module takes the plugin's place in the same scenario (it ignores the
        # plugin's configuration but for its own mode), so only the .wasm differs between the rows.
        scenario = "plugin" if proxy.startswith(("passthrough-", "plugin-")) else proxy
        envoy = stack.start_envoy(scenario, pool, scraper=scraper, ext_proc=ext_proc, wasm=wasm, workers=2,
                                  plugin_config=plugin_config, access_log=False, name=f"envoy-{proxy}")
        proxies[proxy] = Proxy(envoy, ext_proc_pid)
    return proxies


def per_request_us(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return 1e6 * (after - before) / requests


def run(base: Path, pods: int, duration_s: int, connections: int, rounds: int) -> list[OverheadRow]:
    wrk = shutil.which("wrk")
    if not wrk:
        raise RuntimeError("wrk is not installed (bench/run.sh installs it from Debian)")
    floor_bin = os.environ.get("WIS_FLOOR_SERVER_BIN")
    if not floor_bin:
        raise RuntimeError("WIS_FLOOR_SERVER_BIN is not set (bench/run.sh builds bench/floor-server)")
    run_dir = stack_mod.RunDir(base / "overhead")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    script = run_dir.file("post.lua")
    script.write_text(WRK_SCRIPT % {"model": experiment.MODEL})
    settings = (1, connections)
    seconds = max(3, round(duration_s / rounds))
    with stack_mod.Stack(run_dir) as stack:
        pool = [f"127.0.0.1:{p}" for p in stack_mod.free_ports(pods)]
        backend = stack.spawn("floor-server", [floor_bin, "--listen", ",".join(pool), "--model", experiment.MODEL])
        for address in pool:
            stack_mod.wait_until(f"floor-server {address}",
                                 lambda a=address: backend.alive() and stack_mod.http_get(a, "/health")[0] == 200,
                                 stack_mod.SERVICE_READY_TIMEOUT_S, backend.failure_note)
        proxies = start_proxies(stack, pool)

        def wrk_run(url: str, conns: int, secs: int, latency: bool) -> str:
            cmd = [wrk, f"-t{min(2, conns)}", f"-c{conns}", "-s", str(script), f"-d{secs}s"]
            out = subprocess.run([*cmd, *(["--latency"] if latency else []), url],
                                 capture_output=True, text=True, timeout=secs + 60)
            return out.stdout + out.stderr

        for p in proxies.values():
            for conns in settings:
                wrk_run(p.envoy.url, conns, WARM_UP_S, latency=False)
        # The proxies take turns, round after round, so drift on a shared machine (a noisy
        # neighbour, CPU frequency) falls on all of them alike.
        samples: dict[tuple[str, int], list[OverheadRow]] = {}
        for round_no in range(1, rounds + 1):
            for name, p in proxies.items():
                for conns in settings:
                    envoy_before = experiment.cpu_seconds(p.envoy.process.pid)
                    ext_before = experiment.cpu_seconds(p.ext_proc_pid) if p.ext_proc_pid else None
                    text = wrk_run(p.envoy.url, conns, seconds, latency=True)
                    envoy_after = experiment.cpu_seconds(p.envoy.process.pid)
                    ext_after = experiment.cpu_seconds(p.ext_proc_pid) if p.ext_proc_pid else None
                    run_dir.file(f"wrk-{name}-c{conns}-round{round_no}.txt").write_text(text)
                    row = parse_wrk(text)
                    row.envoy_cpu_us = per_request_us(envoy_before, envoy_after, row.requests)
                    row.ext_proc_cpu_us = per_request_us(ext_before, ext_after, row.requests)
                    samples.setdefault((name, conns), []).append(row)
        rows = []
        for (name, conns), runs in samples.items():
            row = median_row(name, conns, runs)
            rows.append(row)
            say(f"  {name:16s} c={conns:<3d} p50 {row.p50_us:7.0f} µs  p99 {row.p99_us:7.0f} µs  {row.rps:7.0f} req/s  "
                f"Envoy CPU {experiment.fixed(row.envoy_cpu_us, 0)} µs/req  errors {row.errors}  "
                f"(median of {row.rounds}; req/s {min(r.rps for r in runs):.0f}..{max(r.rps for r in runs):.0f})")
    return rows


def floor_of(rows: list[OverheadRow], connections: int) -> OverheadRow | None:
    return next((f for f in rows if f.proxy == "no-filter" and f.connections == connections), None)


def table(rows: list[OverheadRow]) -> list[str]:
    lines = ["| proxy | connections | p50 µs | p99 µs | added p50 µs | added p99 µs | req/s | req/s vs floor "
             "| Envoy CPU µs / req | ext_proc CPU µs / req | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.connections, PROXIES.index(r.proxy))):
        floor = floor_of(rows, r.connections)
        added50 = r.p50_us - floor.p50_us if floor else float("nan")
        added99 = r.p99_us - floor.p99_us if floor else float("nan")
        vs = r.rps / floor.rps if floor and floor.rps else float("nan")
        ext = experiment.fixed(r.ext_proc_cpu_us, 0) if r.proxy in ("ext-proc", "wis-epp") else ""
        lines.append(f"| {r.proxy} | {r.connections} | {r.p50_us:.0f} | {r.p99_us:.0f} | {added50:+.0f} | {added99:+.0f} | "
                     f"{r.rps:.0f} | {vs:.2f}x | {experiment.fixed(r.envoy_cpu_us, 0)} | {ext} | {r.errors} |")
    return lines
