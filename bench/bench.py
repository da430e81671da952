#!/usr/bin/env python3
"""`./build.sh bench`: in-proxy scheduling against what users would otherwise pick, measured side by
side in one run. Nothing here is a test: numbers are measured and reported, never asserted.

Parts (`--only` runs some of them):
  profiles   quality where the simulator does not fit the plugin's assumptions: multi-turn
             conversations in English (real BPE), code, Chinese, fixed 1.5 and 3 characters per token,
             and under KV pressure; routers: ideal pinning, round-robin, vllm-router cache_aware, the
             plugin, and two gateways with the plugin (envoy/experiment.py: TEXT_PROFILES, kv_pressure)
  saturation the same text profiles at a load that saturates round-robin (ideal, round-robin, plugin)
  quality    every peer on shared-prefix and multi-turn chat at that load, wis-epp (the same core out
             of proxy, over ext_proc) beside the in-proxy plugin
  overhead   what each proxy adds per request against an instant backend (bench/overhead.py)
  host       the plugin's own per-request cost in wasmtime (host-tests' Criterion benchmark, short mode)
  scraper    the scraper sidecar's CPU and memory scraping 256 pods (scraper/bench.sh)

Writes bench/results/REPORT.md (with a "Goals" section: issues 14's, 15's and 16's targets against what
this run measured), the SVG charts and results.json; a --quick, --only or --plugin-config run writes
to bench/results/quick/ and leaves the committed results alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))
sys.path.insert(0, str(ROOT / "bench"))
import experiment  # noqa: E402
import overhead  # noqa: E402
import stack as stack_mod  # noqa: E402
from experiment import Result, fixed, ms, pct, say  # noqa: E402
from goals import (  # noqa: E402
    HOST_NOT_MEASURED,
    TEXT_BYTES_PER_TOKEN,
    goals_table,
    host_goals,
    in_and_out_of_proxy,
    overhead_goals,
    quality_goals,
)

RESULTS = ROOT / "bench" / "results"
PARTS = ("profiles", "saturation", "quality", "overhead", "host", "scraper")
QUALITY_ROUTERS = ("envoy-round-robin", "envoy-least-request", "vllm-router-cache_aware", "vllm-router-power_of_two",
                   "envoy-plugin", "envoy-wis-epp", "ideal-pinned")
PROFILE_ROUTERS = ("ideal-pinned", "envoy-round-robin", "vllm-router-cache_aware", "envoy-plugin", "two-gateways",
                   "two-gateways-by-key")
SATURATION_ROUTERS = ("ideal-pinned", "envoy-round-robin", "envoy-plugin")
# --quick: two text profiles and the routers the goals compare, short runs.
QUICK_PROFILES = ("english", "cjk")
QUICK_SATURATION_PROFILES = ("english",)
QUICK_PROFILE_ROUTERS = ("ideal-pinned", "envoy-round-robin", "envoy-plugin", "two-gateways", "two-gateways-by-key")
# The seed of every load run: the same requests for every router.
SEED = 7


def quality_workloads(a: argparse.Namespace) -> list[experiment.Workload]:
    fleet = ("--num-gpu-blocks", str(a.kv_blocks), *experiment.PROMPT_DETAILS)
    tokenizer = experiment.real_bpe()[0]
    return [experiment.shared_prefix(a.groups, a.concurrency, a.duration, fleet, tokenizer),
            experiment.multi_turn(max(1, a.groups // 2), a.concurrency, a.duration, fleet, tokenizer)]


def profile_workloads(a: argparse.Namespace) -> list[experiment.Workload]:
    shape = experiment.FleetShape(concurrency=a.profile_concurrency, duration_s=a.profile_duration)
    chosen = [p for p in experiment.TEXT_PROFILES if p.name in a.profiles]
    out = [experiment.text_profile(p, shape) for p in chosen]
    if "kv-pressure" in a.profiles:
        out.append(experiment.kv_pressure(shape))
    return out


def saturation_workloads(a: argparse.Namespace) -> list[experiment.Workload]:
    """Each text profile at the quality part's saturating load: no cap on running sequences (the
    simulator profile's 256), so round-robin's uncached prefills queue and TTFT shows it."""
    shape = experiment.FleetShape(kv_blocks=a.kv_blocks, max_num_seqs=None, groups=a.groups,
                                  concurrency=a.concurrency, duration_s=a.duration)
    return [experiment.text_profile(p, shape, name=f"{p.name}-saturating") for p in experiment.TEXT_PROFILES
            if p.name in a.saturation_profiles]


def run_matrix(a: argparse.Namespace, base: Path, routers: list[str], plan: list[experiment.Workload]) -> list[Result]:
    """Every workload through every router, a fresh fleet each; a failed run is reported and skipped."""
    results: list[Result] = []
    for w in plan:
        say(f"  {w.name}: {w.note}; the text has {fixed(TEXT_BYTES_PER_TOKEN.setdefault(w.name, experiment.text_bytes_per_token(w)))} "
            "bytes/token")
        for router in routers:
            say(f"    {router:26s} ...")
            try:
                r = experiment.run_fresh(base, router, w, a.pods, plugin_config=a.plugin_config, seed=SEED)
            except (stack_mod.StackError, OSError) as e:  # OSError: e.g. the disk is full
                say(f"      failed: {str(e)[:2000]}")
                continue
            results.append(r)
            say(f"      TTFT p90 {ms(r.ttft('p90'))}, hit rate {pct(r.hit_rate)}, turn affinity "
                f"{fixed(r.turn_affinity)}, learned bytes/token {fixed(r.bytes_per_token)}, errors {r.errors}")
    return results


# --- host-tests ----------------------------------------------------------------------------------


def host_bench(a: argparse.Namespace, base: Path) -> list[dict] | None:
    """host-tests' Criterion benchmark in short mode; its rows from the JSON it writes."""
    out = base / "host-bench.json"
    env = {**os.environ, "WIS_HOST_BENCH_JSON": str(out), "WIS_HOST_BENCH_QUICK": "1"}
    log = base / "host-bench.log"
    with open(log, "wb") as f:
        proc = subprocess.run(["cargo", "bench", "--locked", "-p", "host-tests", "--bench", "per_request"],
                              cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=3600)
    if proc.returncode != 0 or not out.is_file():
        tail = log.read_text(errors="replace").splitlines()[-15:]
        say(f"  host-tests benchmark failed (exit {proc.returncode}, log {log}):\n    " + "\n    ".join(tail))
        return None
    rows = json.loads(out.read_text())
    # Cases the plugin could not be set up for are left out of the JSON and said on stderr.
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("per_request: ") and " not measured: " in line:
            case, why = line.removeprefix("per_request: ").split(" not measured: ", 1)
            HOST_NOT_MEASURED.append((case, why))
            say(f"  {case}: not measured ({why})")
    for r in rows:
        say(f"  {r['endpoints']:5d} endpoints, {r['prompt_chars']:7d} chars: {r['us_per_request']:8.1f} µs/request, "
            f"shared data {r['shared_bytes']} bytes")
    return rows




def host_table(rows: list[dict]) -> list[str]:
    lines = ["| endpoints | prompt chars | µs / request | shared data bytes |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['endpoints']:,} | {r['prompt_chars']:,} | {r['us_per_request']:.1f} | {r['shared_bytes']:,} |")
    return lines + [f"\nNot measured: {case} ({why})." for case, why in HOST_NOT_MEASURED]


# --- scraper -------------------------------------------------------------------------------------


def scraper_cost(a: argparse.Namespace) -> dict | None:
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


# --- charts and the report -----------------------------------------------------------------------


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


def results_svg(results: list[Result], routers: list[str], title: str, value, unit: str) -> str:
    workloads = list(dict.fromkeys(r.workload for r in results))
    present = [n for n in routers if any(r.router == n for r in results)]
    nan = float("nan")
    series = [(n, [next((v for r in results if r.router == n and r.workload == w
                         for v in [value(r)] if v is not None), nan) for w in workloads]) for n in present]
    return bar_svg(title, workloads, series, unit)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} vCPUs ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


def router_legend(routers: list[str]) -> list[str]:
    return [f"- `{n}`: {experiment.ROUTERS[n]}" for n in routers]


def write_report(a: argparse.Namespace, base: Path, started: float, profiles: list[Result], saturation: list[Result],
                 quality: list[Result], o_rows: list[overhead.OverheadRow], host: list[dict] | None,
                 scraper: dict | None) -> Path:
    partial = a.quick or a.only_given or a.plugin_config
    results = RESULTS / "quick" if partial else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    command = "./build.sh bench" + (" --quick" if a.quick else "") + (f" --only {a.only_given}" if a.only_given else "")
    report = ["# Benchmark results", "",
              f"Machine: {machine()}. Command: `{command}`; took {time.monotonic() - started:.0f} s. "
              f"Run folder: `{base.relative_to(ROOT)}`. Every figure in the project's docs links here.", ""]
    plan = {w.name: w for w in [*profile_workloads(a), *saturation_workloads(a), *quality_workloads(a)]}
    goals = quality_goals(profiles, saturation, quality, plan) + overhead_goals(o_rows) + host_goals(host or [])
    if goals:
        report += ["## Goals", "",
                   "Issues 14's, 15's and 16's targets against this run (measured, never asserted).", ""]
        report += goals_table(goals) + [""]
    if profiles:
        shape = experiment.FleetShape(concurrency=a.profile_concurrency, duration_s=a.profile_duration)
        routers = [n for n in PROFILE_ROUTERS if any(r.router == n for r in profiles)]
        report += ["## Quality on text the simulator does not fit", "",
                   f"Issue 16's setting: {a.pods} simulated vLLM pods ({shape.kv_blocks} KV blocks of 16 tokens, "
                   f"{shape.max_num_seqs} running sequences each; KV pressure: 700 blocks), a fresh fleet per run, "
                   f"`sim load` for {a.profile_duration} s per run. The plugin runs its default configuration: it cuts prompts "
                   "into blocks of bytes and learns bytes per token from the pods' `usage`, while each fleet "
                   "tokenizes with its own tokenizer. Turn affinity: share of follow-up turns served by the previous "
                   "turn's pod. Learned bytes/token: the plugin's `wis.prefix.bytes_per_token_x100` after the run.", ""]
        report += [f"- `{w.name}`: {w.note}; the text has {fixed(TEXT_BYTES_PER_TOKEN.get(w.name))} UTF-8 bytes per "
                   "token on it (`sim tokenize --sample`)" for w in profile_workloads(a) if any(r.workload == w.name for r in profiles)]
        report += [""] + router_legend(routers) + [""]
        report += experiment.markdown_table(profiles, experiment.PROFILE_TABLE) + ["", "![hit rate](profiles.svg)", ""]
        (results / "profiles.svg").write_text(results_svg(
            profiles, routers, "Fleet prefix-cache hit rate (%, higher is better)",
            lambda r: None if r.hit_rate is None else 100 * r.hit_rate, "%"))
    if saturation:
        routers = [n for n in SATURATION_ROUTERS if any(r.router == n for r in saturation)]
        report += ["## Text profiles at a load that saturates round-robin", "",
                   f"The same texts and tokenizers at the quality part's load: {a.pods} pods of {a.kv_blocks} KV blocks "
                   f"with no cap on running sequences beyond the simulator profile's, concurrency {a.concurrency}, "
                   f"{a.duration} s per run. Here round-robin's uncached prefills queue behind each other.", ""]
        report += [f"- `{w.name}`: {w.note}" for w in saturation_workloads(a) if any(r.workload == w.name for r in saturation)]
        report += [""] + router_legend(routers) + [""]
        report += experiment.markdown_table(saturation, experiment.SATURATION_TABLE) + ["", "![TTFT p90](saturation.svg)", ""]
        (results / "saturation.svg").write_text(results_svg(
            saturation, routers, "TTFT p90 (ms, lower is better)",
            lambda r: None if r.ttft("p90") is None else 1000 * r.ttft("p90"), "ms"))
    if quality:
        routers = [n for n in QUALITY_ROUTERS if any(r.router == n for r in quality)]
        report += ["## Scheduling quality at a load that saturates round-robin", "",
                   f"{a.pods} simulated vLLM pods (Qwen3-0.6B on an L4 time model, {a.kv_blocks} KV blocks of 16 tokens "
                   f"each, tokenizer {experiment.real_bpe()[1]}), `sim load` at concurrency {a.concurrency} for "
                   f"{a.duration} s per run, a fresh fleet per run.", ""]
        report += [f"- `{w.name}`: {w.note}" for w in quality_workloads(a)] + [""] + router_legend(routers) + [""]
        report += experiment.markdown_table(quality, experiment.QUALITY_TABLE) + ["", "![TTFT p90](quality.svg)", ""]
        (results / "quality.svg").write_text(results_svg(
            quality, routers, "TTFT p90 (ms, lower is better)",
            lambda r: None if r.ttft("p90") is None else 1000 * r.ttft("p90"), "ms"))
    if o_rows:
        report += ["## Per-request overhead", "",
                   f"The pods are `floor-server` (bench/floor-server: one native thread answering every request at once "
                   f"with a one-token completion), so the floor measures Envoy, not the backend. `wrk` for "
                   f"{a.overhead_duration} s through each proxy (2 Envoy workers) in {a.overhead_rounds} rounds that "
                   f"interleave the proxies, each row the median of its rounds, with 1 connection (no queueing: the "
                   f"difference to the floor is the time each proxy adds on the request path) and with "
                   f"{a.overhead_connections} (the machine saturates: throughput). `passthrough-wasm` is a proxy-wasm "
                   "filter that does nothing (bench/passthrough-filter): the price of any wasm filter in V8. "
                   "`passthrough-body` is the same module pausing for the whole request body, copying it into the VM "
                   "and setting one header: what any picker that reads the body pays before scheduling anything. So "
                   "`plugin` minus `passthrough-body` is what our parsing and scheduling cost. CPU per request: the Envoy "
                   "process's (and for `ext-proc` and `wis-epp` the picker's) user + system time over each run, divided by the "
                   "requests completed. wrk, the pods and the proxy share the machine's cores.", ""]
        report += overhead.table(o_rows) + ["", "![latency](overhead.svg)", ""]
        single = [r for r in o_rows if r.connections == 1]
        series = [("p50", [r.p50_us for r in single]), ("p99", [r.p99_us for r in single])]
        (results / "overhead.svg").write_text(
            bar_svg("Latency through the proxy, one connection (µs, lower is better)", [r.proxy for r in single], series, "µs"))
    report += in_and_out_of_proxy(quality, o_rows)
    if host:
        report += ["## The plugin's own cost in wasmtime (host-tests)", "",
                   "`cargo bench --locked -p host-tests --bench per_request` in short mode (`WIS_HOST_BENCH_QUICK=1`): "
                   "request headers + body + decision per request, two workers, inside wasmtime; details and the "
                   "method in `host-tests/README.md`.", ""]
        report += host_table(host) + [""]
    if scraper:
        report += ["## Scraper sidecar", "",
                   f"`scraper/bench.sh`: 256 fixture pods (vLLM-like expositions) on loopback, scraped every 50 ms for "
                   f"{scraper['seconds']:.0f} s: {scraper['cpu_percent_of_one_core']:.0f}% of one core, "
                   f"{scraper['rss_kib'] / 1024:.1f} MiB resident (peak {scraper['peak_rss_kib'] / 1024:.1f} MiB), "
                   f"{scraper['scrapes_per_s']:.0f} scrapes/s of {scraper['expected_scrapes_per_s']:.0f} expected, "
                   f"{scraper['failures_in_window']} failures, snapshot {scraper['snapshot_bytes']} bytes.", ""]
    (results / "REPORT.md").write_text("\n".join(report) + "\n")
    (results / "results.json").write_text(json.dumps({
        "profiles": [r.to_json() for r in profiles], "saturation": [r.to_json() for r in saturation],
        "quality": [r.to_json() for r in quality], "text_bytes_per_token": TEXT_BYTES_PER_TOKEN,
        "overhead": [r.__dict__ for r in o_rows], "host": host, "scraper": scraper,
        "goals": [g.__dict__ for g in goals]}, indent=1, default=str))
    say()
    say("\n".join(report))
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--quick", action="store_true", help="short runs of every part (a few minutes)")
    p.add_argument("--only", help=f"comma-separated parts to run: {', '.join(PARTS)}")
    p.add_argument("--pods", type=int, default=4)
    p.add_argument("--plugin-config", help="JSON file merged over the plugin's configuration (another profile)")
    g = p.add_argument_group("profiles")
    names = [t.name for t in experiment.TEXT_PROFILES] + ["kv-pressure"]
    g.add_argument("--profiles", default=",".join(names), help="comma-separated subset of " + ", ".join(names))
    g.add_argument("--profile-routers", default=",".join(PROFILE_ROUTERS), help="comma-separated routers")
    g.add_argument("--profile-concurrency", type=int, default=experiment.FleetShape.concurrency)
    g.add_argument("--profile-duration", type=int, default=experiment.FleetShape.duration_s, help="seconds per run")
    g = p.add_argument_group("saturation and quality (the saturating load)")
    g.add_argument("--saturation-profiles", default=",".join(t.name for t in experiment.TEXT_PROFILES),
                   help="comma-separated text profiles run at the saturating load")
    g.add_argument("--routers", default=",".join(QUALITY_ROUTERS), help="comma-separated subset of " + ", ".join(QUALITY_ROUTERS))
    g.add_argument("--groups", type=int, default=32)
    g.add_argument("--concurrency", type=int, default=96)
    g.add_argument("--duration", type=int, default=40, help="seconds per run")
    g.add_argument("--kv-blocks", type=int, default=1200)
    g = p.add_argument_group("overhead")
    g.add_argument("--overhead-duration", type=int, default=15)
    g.add_argument("--overhead-connections", type=int, default=16)
    g.add_argument("--overhead-rounds", type=int, default=3, help="interleaved rounds per proxy; rows are medians")
    a = p.parse_args(argv)
    a.only_given = a.only
    a.only = [s for s in (a.only or ",".join(PARTS)).split(",") if s]
    a.profiles = [s for s in a.profiles.split(",") if s]
    a.routers = [s for s in a.routers.split(",") if s]
    a.profile_routers = [s for s in a.profile_routers.split(",") if s]
    a.saturation_profiles = [s for s in a.saturation_profiles.split(",") if s]
    for what, chosen, known in (("--only", a.only, PARTS), ("--profiles", a.profiles, names),
                                ("--saturation-profiles", a.saturation_profiles, names[:-1]),
                                ("--routers", a.routers, QUALITY_ROUTERS), ("--profile-routers", a.profile_routers, list(experiment.ROUTERS))):
        unknown = set(chosen) - set(known)
        if unknown:
            p.error(f"{what}: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(known)}")
    if a.plugin_config:
        try:
            a.plugin_config = json.loads(Path(a.plugin_config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            p.error(f"--plugin-config {a.plugin_config}: {e}")
    if a.quick:
        a.duration, a.profile_duration, a.overhead_duration, a.overhead_rounds = 12, 12, 6, 2
        a.profiles = [n for n in a.profiles if n in QUICK_PROFILES]
        a.profile_routers = [n for n in a.profile_routers if n in QUICK_PROFILE_ROUTERS]
        a.saturation_profiles = [n for n in a.saturation_profiles if n in QUICK_SATURATION_PROFILES]
        if "quality" in a.only and a.only == list(PARTS):
            a.only.remove("quality")  # the saturating peers table needs long runs to mean anything
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    base = stack_mod.RunDir.create("bench").path
    started = time.monotonic()
    profiles: list[Result] = []
    saturation: list[Result] = []
    quality: list[Result] = []
    o_rows: list[overhead.OverheadRow] = []
    host, scraper = None, None
    if "profiles" in a.only:
        say(f"profiles: {', '.join(a.profiles)} through {', '.join(a.profile_routers)}")
        profiles = run_matrix(a, base, a.profile_routers, profile_workloads(a))
    if "saturation" in a.only:
        say(f"saturation: {', '.join(a.saturation_profiles)} at concurrency {a.concurrency}, {a.duration} s per run")
        saturation = run_matrix(a, base, list(SATURATION_ROUTERS), saturation_workloads(a))
    if "quality" in a.only:
        say(f"quality: {a.pods} pods ({a.kv_blocks} KV blocks each), concurrency {a.concurrency}, {a.duration} s per run")
        quality = run_matrix(a, base, a.routers, quality_workloads(a))
    if "overhead" in a.only:
        say(f"overhead: instant pods, 1 and {a.overhead_connections} connections, {a.overhead_duration} s per proxy "
            f"in {a.overhead_rounds} interleaved rounds")
        try:
            o_rows = overhead.run(base, a.pods, a.overhead_duration, a.overhead_connections, a.overhead_rounds)
        except (RuntimeError, OSError) as e:  # StackError is a RuntimeError
            say(f"  overhead run failed: {str(e)[:2000]}")
    if "host" in a.only:
        say("host: host-tests' per-request benchmark in wasmtime (short mode)")
        try:
            host = host_bench(a, base)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            say(f"  host-tests benchmark failed: {e}")
    if "scraper" in a.only:
        say("scraper: 256 fixture pods scraped every 50 ms")
        try:
            scraper = scraper_cost(a)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            say(f"  scraper bench failed: {e}")
    results = write_report(a, base, started, profiles, saturation, quality, o_rows, host, scraper)
    say(f"written: {results.relative_to(ROOT)}/REPORT.md")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
