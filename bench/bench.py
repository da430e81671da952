#!/usr/bin/env python3
"""`./build.sh bench`: in-proxy scheduling against what users would otherwise pick, measured side by
side in one run, on the same simulated vLLM fleet and workload.

Quality: for each router a fresh fleet, then `sim load` with the shared-prefix and multi-turn chat
workloads at a load that saturates round-robin. Routers: Envoy round-robin, Envoy least-request,
vllm-router (cache_aware, power_of_two), Envoy + this plugin (llm-d default profile), Envoy + wis-epp
(the same core out of proxy, over ext_proc as GAIE's gateways call an Endpoint Picker), and the ideal
reference: every system-prompt group pinned to one pod by the load generator itself, no proxy.
Reports TTFT p50/p90/p99, output tokens/s, the fleet's prefix-cache hit rate (from the pods'
counters), errors, and the proxy's CPU seconds per 1,000 requests (from /proc).

Overhead: pods that answer at once (simulator time scale 0.001, one output token), the same
concurrency, four proxies: Envoy without a filter (the floor), Envoy + plugin, Envoy + an ext_proc
picker (bench/ext-proc-picker, round-robin, buffered body: the bare hop), Envoy + wis-epp (the
plugin's algorithm behind the hop, FULL_DUPLEX_STREAMED both ways as GAIE wires it). `wrk` measures
latency percentiles in microseconds and requests/s; each is reported against the floor.

Writes bench/results/REPORT.md, quality.svg, overhead.svg and results.json; prints the tables.
Nothing here is a test: numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))
import stack as stack_mod  # noqa: E402
from names import MODEL  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(text: str = "") -> None:
    print(text, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return float("nan")


@dataclass
class Router:
    """A running router: where to send requests and which process to charge CPU to."""

    name: str
    url: str
    pid: int | None
    # Further processes the router's CPU is charged with (wis-epp next to its Envoy).
    extra_pids: tuple[int, ...] = ()

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in (self.pid, *self.extra_pids) if p)


@dataclass
class QualityRow:
    router: str
    workload: str
    summary: dict
    proxy_cpu_s: float | None
    requests: int

    @property
    def cpu_per_1000(self) -> float | None:
        if self.proxy_cpu_s is None or not self.requests:
            return None
        return 1000 * self.proxy_cpu_s / self.requests


@dataclass
class OverheadRow:
    proxy: str
    connections: int
    p50_us: float
    p90_us: float
    p99_us: float
    rps: float
    errors: int = 0
    # Interleaved rounds this row is the median of.
    rounds: int = 1


@dataclass
class Args:
    pods: int
    groups: int
    concurrency: int
    duration: int
    kv_blocks: int
    overhead_duration: int
    overhead_connections: int
    overhead_rounds: int
    quick: bool
    routers: list[str] = field(default_factory=list)
    # Merged over the plugin's rendered configuration (--plugin-config): to measure another profile.
    plugin_config: dict | None = None


QUALITY_ROUTERS = ["envoy-round-robin", "envoy-least-request", "vllm-router-cache_aware",
                   "vllm-router-power_of_two", "envoy-plugin", "envoy-wis-epp", "ideal-pinned"]
# The overhead run: the floor (Envoy without a filter), Envoy + plugin, Envoy + an ext_proc picker,
# Envoy + wis-epp (the plugin's core behind the ext_proc hop).
OVERHEAD_PROXIES = ("no-filter", "plugin", "ext-proc", "wis-epp")
# How the report names the rows that are not plain scenario names.
LABELS = {"envoy-wis-epp": "Envoy + wis-epp (ext_proc)", "wis-epp": "Envoy + wis-epp (ext_proc)"}


def workloads(a: Args) -> list[tuple[str, list[str]]]:
    return [
        ("shared-prefix", ["--workload", "shared-prefix", "--groups", str(a.groups), "--system-tokens", "1000",
                           "--question-tokens", "100", "--output-tokens", "32"]),
        ("multi-turn", ["--workload", "multi-turn", "--groups", str(max(1, a.groups // 2)), "--system-tokens", "600",
                        "--question-tokens", "80", "--output-tokens", "48", "--turns", "5"]),
    ]


def start_router(stack: stack_mod.Stack, name: str, pool: list[str], plugin_config: dict | None = None) -> Router:
    if name == "envoy-wis-epp":
        # The plugin's configuration (the same profile as envoy-plugin) goes to wis-epp, which scrapes
        # the pods itself; its CPU is charged to the router with Envoy's.
        epp = stack.start_epp(pool, plugin_config=plugin_config)
        envoy = stack.start_envoy("wis-epp", pool, ext_proc=epp.grpc, workers=2, access_log=False)
        return Router(name, envoy.url, envoy.process.pid, (epp.process.pid,))
    if name.startswith("envoy-"):
        scenario = name.removeprefix("envoy-")
        scraper = stack.start_scraper(pool) if scenario == "plugin" else None
        config = plugin_config if scenario == "plugin" else None
        envoy = stack.start_envoy(scenario, pool, scraper=scraper, workers=2, access_log=False, plugin_config=config)
        return Router(name, envoy.url, envoy.process.pid)
    if name.startswith("vllm-router-"):
        policy = name.removeprefix("vllm-router-")
        port, metrics_port = stack_mod.free_ports(2)
        binary = Path(sys.executable).parent / "vllm-router"
        argv = [binary, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
                "--log-level", "warning", "--worker-urls", *[f"http://{p}" for p in pool]]
        proc = stack.spawn(name, argv)
        address = f"127.0.0.1:{port}"
        stack_mod.wait_until(f"{name} {address}", lambda: proc.alive() and stack_mod.http_get(address, "/health")[0] == 200,
                             60.0, proc.failure_note)
        return Router(name, f"http://{address}", proc.pid)
    raise ValueError(name)


def run_load(stack: stack_mod.Stack, target: list[str], extra: list[str], a: Args, out: Path, pool: list[str]) -> dict:
    # The fleet serves names.MODEL (stack.start_fleet); the load asks for it by that name.
    argv = [stack_mod.sim_binary(), "load", "--target", ",".join(target), "--model", MODEL, *extra,
            "--concurrency", str(a.concurrency), "--duration", f"{a.duration}s",
            "--fleet", ",".join(pool), "--out", out, "--seed", "7"]
    proc = stack.spawn(f"load-{out.stem}", argv)
    deadline = time.monotonic() + a.duration + 90
    while proc.alive():
        if time.monotonic() > deadline:
            proc.stop()
            raise stack_mod.StackError(f"sim load did not finish{proc.failure_note()}")
        time.sleep(0.5)
    if proc.popen is None or proc.popen.returncode != 0 or not out.is_file():
        raise stack_mod.StackError(f"sim load failed{proc.failure_note()}")
    return json.loads(out.read_text())


def quality(a: Args, base: Path) -> list[QualityRow]:
    rows: list[QualityRow] = []
    for router_name in a.routers:
        for wname, wargs in workloads(a):
            run_dir = stack_mod.RunDir(base / f"{router_name}-{wname}")
            run_dir.path.mkdir(parents=True, exist_ok=True)
            with stack_mod.Stack(run_dir) as stack:
                pool = stack.start_fleet(a.pods, ["--num-gpu-blocks", str(a.kv_blocks), "--enable-prompt-tokens-details"])
                out = run_dir.file("load.json")
                say(f"  {router_name:26s} {wname:13s} ...")
                if router_name == "ideal-pinned":
                    report = run_load(stack, [f"http://{p}" for p in pool], [*wargs, "--spread", "group"], a, out, pool)
                    cpu = None
                else:
                    router = start_router(stack, router_name, pool, a.plugin_config)
                    before = router.cpu_seconds() if router.pid else float("nan")
                    report = run_load(stack, [router.url], wargs, a, out, pool)
                    cpu = router.cpu_seconds() - before if router.pid else None
            s = report["summary"]
            rows.append(QualityRow(router_name, wname, s, cpu, int(s.get("ok", 0)) + int(s.get("errors", 0))))
            say(f"      TTFT p90 {fmt_ms(s['ttft_s'].get('p90'))}, hit rate {fmt_pct(s.get('prefix_cache_hit_rate'))}, "
                f"errors {s.get('errors', 0)}")
    return rows


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local bodies = {}
for i = 1, 64 do
  bodies[i] = '{"model":"MODEL","max_tokens":1,"messages":[{"role":"system","content":"You are a helpful assistant for request ' .. i .. ', answering briefly and precisely."},{"role":"user","content":"Say hello number ' .. i .. '."}]}'
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/chat/completions", nil, bodies[(n % 64) + 1])
end
"""


def parse_wrk(text: str) -> OverheadRow:
    def to_us(value: str, unit: str) -> float:
        return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]

    pct = {m.group(1): to_us(m.group(2), m.group(3))
           for m in re.finditer(r"^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errs = int(errors.group(1)) if errors else 0
    if socket:
        errs += sum(int(g) for g in socket.groups())
    if not (pct.get("50") and rps):
        raise RuntimeError(f"could not read wrk's output:\n{text}")
    return OverheadRow("", 0, pct["50"], pct.get("90", float("nan")), pct.get("99", float("nan")), float(rps.group(1)), errs)


def overhead(a: Args, base: Path) -> list[OverheadRow]:
    wrk = shutil.which("wrk")
    if not wrk:
        raise RuntimeError("wrk is not installed (bench/run.sh installs it from Debian)")
    run_dir = stack_mod.RunDir(base / "overhead")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    script = run_dir.file("post.lua")
    script.write_text(WRK_SCRIPT.replace("MODEL", MODEL))
    rows: list[OverheadRow] = []
    settings = (1, a.overhead_connections)
    seconds = max(3, round(a.overhead_duration / a.overhead_rounds))
    with stack_mod.Stack(run_dir) as stack:
        pool = stack.start_fleet(a.pods, ["--time-scale", "0.001"])
        envoys: dict[str, stack_mod.Envoy] = {}
        for proxy in OVERHEAD_PROXIES:
            ext_proc = None
            if proxy == "ext-proc":
                ext_proc = f"127.0.0.1:{stack_mod.free_port()}"
                picker = stack.spawn("ext-proc-picker", [os.environ["WIS_EXT_PROC_BIN"], "--listen", ext_proc, "--pool", ",".join(pool)])
                stack_mod.wait_until("ext-proc-picker", lambda: picker.alive() and stack_mod._accepts(ext_proc), 20.0, picker.failure_note)
            if proxy == "wis-epp":
                ext_proc = stack.start_epp(pool).grpc
            envoys[proxy] = stack.start_envoy(proxy, pool, ext_proc=ext_proc, workers=2, access_log=False, name=f"envoy-{proxy}")

        def wrk_run(url: str, connections: int, duration: str, latency: bool) -> str:
            cmd = [wrk, f"-t{min(2, connections)}", f"-c{connections}", "-s", str(script), f"-d{duration}"]
            out = subprocess.run([*cmd, *(["--latency"] if latency else []), url],
                                 capture_output=True, text=True, timeout=a.overhead_duration + 60)
            return out.stdout + out.stderr

        for envoy in envoys.values():
            for connections in settings:
                wrk_run(envoy.url, connections, "3s", latency=False)  # warm-up
        # The proxies take turns, round after round, so drift on a shared machine (a noisy
        # neighbour, CPU frequency) falls on all of them alike; each row is the median of its rounds.
        # One connection: no queueing, so the difference to the floor is the time the proxy adds on
        # the request path. Many connections: the machine saturates, which shows throughput.
        samples: dict[tuple[str, int], list[OverheadRow]] = {}
        for round_no in range(1, a.overhead_rounds + 1):
            for proxy, envoy in envoys.items():
                for connections in settings:
                    text = wrk_run(envoy.url, connections, f"{seconds}s", latency=True)
                    run_dir.file(f"wrk-{proxy}-c{connections}-round{round_no}.txt").write_text(text)
                    samples.setdefault((proxy, connections), []).append(parse_wrk(text))
        for (proxy, connections), runs in samples.items():
            row = median_row(proxy, connections, runs)
            rows.append(row)
            say(f"  {proxy:10s} c={connections:<3d} p50 {row.p50_us:8.0f} µs  p99 {row.p99_us:8.0f} µs  "
                f"{row.rps:8.0f} req/s  errors {row.errors}  (median of {row.rounds}; req/s "
                f"{min(r.rps for r in runs):.0f}..{max(r.rps for r in runs):.0f})")
    return rows


def median_row(proxy: str, connections: int, runs: list[OverheadRow]) -> OverheadRow:
    """Each measure's median over the rounds (errors add up)."""
    med = statistics.median
    return OverheadRow(proxy, connections, med([r.p50_us for r in runs]), med([r.p90_us for r in runs]),
                       med([r.p99_us for r in runs]), med([r.rps for r in runs]), sum(r.errors for r in runs), len(runs))


def scraper_cost(a: Args) -> dict | None:
    """scraper/bench.sh: the sidecar's CPU and resident memory scraping 256 pods every 50 ms."""
    seconds = "8" if a.quick else "20"
    out = subprocess.run(["bash", str(ROOT / "scraper" / "bench.sh"), "256", "50", seconds],
                         capture_output=True, text=True, timeout=180, env={**os.environ})
    line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
    if out.returncode != 0 or line is None:
        say(f"  scraper bench failed: {out.stderr.strip()[-400:]}")
        return None
    result = json.loads(line)
    say(f"  wis-scraper: {result['cpu_percent_of_one_core']:.0f}% of a core, {result['rss_kib'] / 1024:.1f} MiB resident, "
        f"{result['scrapes_per_s']:.0f} scrapes/s of {result['expected_scrapes_per_s']:.0f} expected")
    return result


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f} ms"


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def quality_table(rows: list[QualityRow]) -> list[str]:
    lines = ["| workload | router | TTFT p50 | TTFT p90 | TTFT p99 | output tok/s | prefix-cache hit rate | errors | proxy CPU s / 1k req |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.summary
        cpu = "n/a" if r.cpu_per_1000 is None else f"{r.cpu_per_1000:.2f}"
        lines.append(f"| {r.workload} | {LABELS.get(r.router, r.router)} | {fmt_ms(s['ttft_s'].get('p50'))} | {fmt_ms(s['ttft_s'].get('p90'))} | "
                     f"{fmt_ms(s['ttft_s'].get('p99'))} | {s.get('output_tokens_per_s', 0):.0f} | "
                     f"{fmt_pct(s.get('prefix_cache_hit_rate'))} | {s.get('errors', 0)} | {cpu} |")
    return lines


def overhead_table(rows: list[OverheadRow]) -> list[str]:
    lines = ["| proxy | connections | p50 µs | p99 µs | added p50 µs | added p99 µs | req/s | req/s vs floor | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.connections, r.proxy != "no-filter")):
        floor = next((f for f in rows if f.proxy == "no-filter" and f.connections == r.connections), None)
        added50 = r.p50_us - floor.p50_us if floor else float("nan")
        added99 = r.p99_us - floor.p99_us if floor else float("nan")
        ratio = r.rps / floor.rps if floor and floor.rps else float("nan")
        lines.append(f"| {LABELS.get(r.proxy, r.proxy)} | {r.connections} | {r.p50_us:.0f} | {r.p99_us:.0f} | {added50:+.0f} | {added99:+.0f} | "
                     f"{r.rps:.0f} | {ratio:.2f}x | {r.errors} |")
    return lines


def in_and_out_of_proxy(q_rows: list[QualityRow], o_rows: list[OverheadRow]) -> list[str]:
    """The same algorithm in-proxy (the .wasm) and out-of-proxy (wis-epp): hit rate per workload
    (the goal is within 2 points) and what the ext_proc hop costs per request."""
    lines: list[str] = []
    for workload in dict.fromkeys(r.workload for r in q_rows):
        rows = {r.router: r for r in q_rows if r.workload == workload}
        inside, outside = rows.get("envoy-plugin"), rows.get("envoy-wis-epp")
        if not (inside and outside):
            continue
        hit_in = inside.summary.get("prefix_cache_hit_rate")
        hit_out = outside.summary.get("prefix_cache_hit_rate")
        if hit_in is None or hit_out is None:
            continue
        p90_in, p90_out = inside.summary["ttft_s"].get("p90"), outside.summary["ttft_s"].get("p90")
        lines.append(f"- {workload}: prefix-cache hit rate {fmt_pct(hit_in)} in-proxy, {fmt_pct(hit_out)} "
                     f"out-of-proxy ({100 * (hit_out - hit_in):+.1f} points); TTFT p90 {fmt_ms(p90_in)} vs {fmt_ms(p90_out)}.")
    for connections in sorted({r.connections for r in o_rows}):
        rows = {r.proxy: r for r in o_rows if r.connections == connections}
        floor, inside, outside = rows.get("no-filter"), rows.get("plugin"), rows.get("wis-epp")
        if not (floor and inside and outside):
            continue
        lines.append(f"- {connections} connection{'s' if connections > 1 else ''}: in-proxy adds "
                     f"{inside.p50_us - floor.p50_us:+.0f} µs at p50 ({inside.rps:.0f} req/s), wis-epp adds "
                     f"{outside.p50_us - floor.p50_us:+.0f} µs ({outside.rps:.0f} req/s): the hop costs "
                     f"{outside.p50_us - inside.p50_us:+.0f} µs and {outside.rps / inside.rps:.2f}x the req/s.")
    if not lines:
        return []
    return ["## The same algorithm in-proxy and out-of-proxy", "",
            "`envoy-plugin` runs the scheduling core inside Envoy (the .wasm); `Envoy + wis-epp (ext_proc)` runs the "
            "same core as a GAIE Endpoint Picker (`epp/`) that Envoy calls over ext_proc for every request (bodies "
            "FULL_DUPLEX_STREAMED both ways, TLS), with the same profile, on the same fleet and load. Its CPU column "
            "adds wis-epp's CPU to Envoy's.", "", *lines, ""]


def bar_svg(title: str, groups: list[str], series: list[tuple[str, list[float]]], unit: str) -> str:
    """A grouped horizontal bar chart, written by hand (no plotting dependency)."""
    colors = ["#8c8c8c", "#b0b0b0", "#e69f00", "#f0c36d", "#0072b2", "#009e73", "#cc79a7"]
    bar_h, gap, left, width = 14, 10, 190, 720
    vmax = max([v for _, vals in series for v in vals if v == v] + [1e-9])
    height = 40 + len(groups) * (len(series) * bar_h + gap) + 20 * len(series)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{title}</text>']
    y = 35
    for gi, group in enumerate(groups):
        out.append(f'<text x="10" y="{y + len(series) * bar_h / 2 + 4}" font-weight="bold">{group}</text>')
        for si, (name, vals) in enumerate(series):
            v = vals[gi]
            w = 0 if v != v else width * v / vmax
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{colors[si % len(colors)]}"/>')
            label = "n/a" if v != v else f"{v:.0f} {unit}"
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 4}">{label}</text>')
            y += bar_h
        y += gap
    for si, (name, _) in enumerate(series):
        out.append(f'<rect x="10" y="{y + si * 20}" width="12" height="12" fill="{colors[si % len(colors)]}"/>')
        out.append(f'<text x="28" y="{y + si * 20 + 11}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} vCPUs ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (about 4 minutes in all)")
    p.add_argument("--pods", type=int, default=4)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=96)
    p.add_argument("--duration", type=int, default=40, help="seconds per quality run")
    p.add_argument("--kv-blocks", type=int, default=1200)
    p.add_argument("--overhead-duration", type=int, default=15)
    p.add_argument("--overhead-connections", type=int, default=16)
    p.add_argument("--overhead-rounds", type=int, default=3, help="interleaved rounds per proxy; rows are medians")
    p.add_argument("--only", choices=["quality", "overhead", "scraper"], help="run one part")
    p.add_argument("--routers", default=",".join(QUALITY_ROUTERS), help="comma-separated subset of " + ", ".join(QUALITY_ROUTERS))
    p.add_argument("--plugin-config", help="JSON file merged over the plugin's configuration (another profile)")
    ns = p.parse_args(argv)
    a = Args(ns.pods, ns.groups, ns.concurrency, ns.duration, ns.kv_blocks, ns.overhead_duration, ns.overhead_connections,
             max(1, ns.overhead_rounds),
             ns.quick, [r for r in ns.routers.split(",") if r],
             json.loads(Path(ns.plugin_config).read_text()) if ns.plugin_config else None)
    if a.quick:
        a.duration, a.overhead_duration = 15, 8
    unknown = set(a.routers) - set(QUALITY_ROUTERS)
    if unknown:
        p.error(f"unknown routers: {', '.join(sorted(unknown))}")
    base = stack_mod.RunDir.create("bench").path
    started = time.monotonic()
    q_rows: list[QualityRow] = []
    o_rows: list[OverheadRow] = []
    if ns.only in (None, "quality"):
        say(f"quality: {a.pods} pods ({a.kv_blocks} KV blocks each), {a.groups} system prompts, concurrency {a.concurrency}, {a.duration} s per run")
        q_rows = quality(a, base)
    scraper = None
    if ns.only in (None, "scraper"):
        say("scraper: 256 fixture pods scraped every 50 ms")
        scraper = scraper_cost(a)
    if ns.only in (None, "overhead"):
        say(f"overhead: instant pods, 1 and {a.overhead_connections} connections, {a.overhead_duration} s per proxy "
            f"in {a.overhead_rounds} interleaved rounds")
        o_rows = overhead(a, base)
    # Only a full run replaces the committed results; a quick or partial one goes beside them.
    results = RESULTS if not (a.quick or ns.only or ns.plugin_config) else RESULTS / "quick"
    results.mkdir(parents=True, exist_ok=True)
    report = [f"# Benchmark results", "",
              f"Machine: {machine()}. Command: `./build.sh bench{' --quick' if a.quick else ''}`; "
              f"took {time.monotonic() - started:.0f} s. Run folder: `{base.relative_to(ROOT)}`.", ""]
    if q_rows:
        report += [f"## Scheduling quality", "",
                   f"{a.pods} simulated vLLM pods (Qwen3-0.6B on L4 time model, {a.kv_blocks} KV blocks of 16 tokens each), "
                   f"`sim load` at concurrency {a.concurrency} for {a.duration} s per run, a fresh fleet per run. "
                   f"shared-prefix: {a.groups} system prompts of ~1,000 tokens; multi-turn: {max(1, a.groups // 2)} groups, 5 turns. "
                   "`ideal-pinned` is the reference: the load generator pins every group to one pod, no proxy.", ""]
        report += quality_table(q_rows) + ["", "![TTFT p90](quality.svg)", ""]
        names = sorted({r.router for r in q_rows}, key=lambda n: QUALITY_ROUTERS.index(n))
        wl = [w for w, _ in workloads(a)]
        series = [(n, [next((r.summary["ttft_s"].get("p90", float("nan")) * 1000 for r in q_rows if r.router == n and r.workload == w), float("nan")) for w in wl]) for n in names]
        (results / "quality.svg").write_text(bar_svg("TTFT p90 (ms, lower is better)", wl, series, "ms"))
    if o_rows:
        report += ["## Per-request overhead", "",
                   f"Pods answer at once (simulator time scale 0.001, one output token); `wrk` for {a.overhead_duration} s through each "
                   f"proxy (2 Envoy workers) in {a.overhead_rounds} rounds that interleave the proxies, each row the median of "
                   f"its rounds, with 1 connection (no queueing: the difference to the floor is the time each proxy adds "
                   f"on the request path) and with {a.overhead_connections} (the machine saturates: throughput). The load generator, "
                   "the pods and the proxy share the same 2 vCPUs, so the saturated run measures CPU cost per request.", ""]
        report += overhead_table(o_rows) + ["", "![latency](overhead.svg)", ""]
        single = [r for r in o_rows if r.connections == 1]
        series = [("p50", [r.p50_us for r in single]), ("p99", [r.p99_us for r in single])]
        (results / "overhead.svg").write_text(
            bar_svg("Latency through the proxy, one connection (µs, lower is better)", [r.proxy for r in single], series, "µs"))
    report += in_and_out_of_proxy(q_rows, o_rows)
    if scraper:
        report += ["## Scraper sidecar", "",
                   f"`scraper/bench.sh`: 256 fixture pods (vLLM-like expositions) on loopback, scraped every 50 ms for "
                   f"{scraper['seconds']:.0f} s: {scraper['cpu_percent_of_one_core']:.0f}% of one core, "
                   f"{scraper['rss_kib'] / 1024:.1f} MiB resident (peak {scraper['peak_rss_kib'] / 1024:.1f} MiB), "
                   f"{scraper['scrapes_per_s']:.0f} scrapes/s of {scraper['expected_scrapes_per_s']:.0f} expected, "
                   f"{scraper['failures_in_window']} failures, snapshot {scraper['snapshot_bytes']} bytes.", ""]
    (results / "REPORT.md").write_text("\n".join(report) + "\n")
    (results / "results.json").write_text(json.dumps({
        "quality": [{"router": r.router, "workload": r.workload, "summary": r.summary, "proxy_cpu_s": r.proxy_cpu_s} for r in q_rows],
        "overhead": [r.__dict__ for r in o_rows], "scraper": scraper}, indent=1, default=str))
    say()
    say("\n".join(report))
    say(f"written: {results.relative_to(ROOT)}/REPORT.md")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
