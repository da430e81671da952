#!/usr/bin/env python3
"""The demo (`./build.sh demo`): a simulated vLLM fleet, the scraper and a real Envoy with the plugin
serve a chat workload with shared system prompts; then the same workload goes through plain Envoy
round-robin on a fresh fleet, and the two are compared.

    envoy/demo.sh [--pods 4] [--groups 4] [--conversations 6] [--turns 4] [--with-ui]

envoy/demo.sh builds everything first; this script expects the binaries and .venv to exist.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stack as stack_mod  # noqa: E402
import workload  # noqa: E402

BOLD, DIM, GREEN, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("",) * 4
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"


@dataclass
class PhaseResult:
    name: str
    pool: list[str]
    result: workload.WorkloadResult
    hit_rate: float | None  # from the pods' own counters
    envoy_stats: dict[str, int]
    run_dir: Path


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"{BOLD}==>{RESET} {text}")


def progress(label: str):
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.5:
            last[0] = now
            end = "\n" if done == total else ""
            bar = "#" * int(30 * done / total)
            sys.stdout.write(f"\r    {label}: [{bar:<30}] {done}/{total} requests{end}")
            sys.stdout.flush()

    return show


def pool_hit_rate(pool: list[str]) -> float | None:
    hits = queries = 0.0
    for pod in pool:
        try:
            hits += stack_mod.sim_metric(pod, PREFIX_HITS)
            queries += stack_mod.sim_metric(pod, PREFIX_QUERIES)
        except (stack_mod.StackError, OSError):
            return None
    return hits / queries if queries else None


def run_phase(name: str, scenario: str, args: argparse.Namespace, spec: workload.WorkloadSpec, base: Path) -> PhaseResult:
    run_dir = stack_mod.RunDir(base / name)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    with stack_mod.Stack(run_dir) as stack:
        step(f"[{name}] starting a fleet of {args.pods} simulated vLLM pods")
        pool = stack.start_fleet(args.pods, args.fleet_arg)
        scraper = None
        if scenario == "plugin":
            step(f"[{name}] starting the scraper (scrapes /metrics of every pod every 50 ms)")
            scraper = stack.start_scraper(pool)
        step(f"[{name}] starting Envoy ({args.workers} workers, scenario {scenario})")
        envoy = stack.start_envoy(scenario, pool, scraper=scraper, workers=args.workers)
        step(f"[{name}] sending the chat workload through {envoy.url}")
        result = workload.run(envoy.listen, spec, progress(name))
        hit_rate = pool_hit_rate(pool)
        try:
            envoy_stats = envoy.stats("wasm")
        except (stack_mod.StackError, OSError):
            envoy_stats = {}
        (run_dir.path / "envoy-stats.json").write_text(json.dumps(envoy_stats, indent=1))
        (run_dir.path / "requests.json").write_text(json.dumps([r.__dict__ for r in result.records], indent=1))
    return PhaseResult(name, pool, result, hit_rate, envoy_stats, run_dir.path)


def pod_label(pool: list[str], address: str | None) -> str:
    if address in pool:
        return f"pod-{pool.index(address) + 1}"
    return address or "?"


def conversations_table(phase: PhaseResult) -> list[str]:
    by_pod: dict[str, list[str]] = defaultdict(list)
    split = 0
    convs: dict[str, Counter] = defaultdict(Counter)
    for r in phase.result.ok():
        convs[r.conversation][pod_label(phase.pool, r.pod)] += 1
    for conv, pods in sorted(convs.items()):
        main_pod, _ = pods.most_common(1)[0]
        mark = "" if len(pods) == 1 else "*"
        split += len(pods) > 1
        by_pod[main_pod].append(conv + mark)
    lines = []
    for i in range(len(phase.pool)):
        label = f"pod-{i + 1}"
        names = by_pod.get(label, [])
        lines.append(f"    {label} ({phase.pool[i]}): {len(names):2d} conversations  {DIM}{' '.join(names)}{RESET}")
    lines.append(f"    {split} of {len(convs)} conversations moved between pods (marked *)")
    return lines


def group_spread(phase: PhaseResult) -> float:
    """Mean number of pods that served one system-prompt group: 1.0 = every group pinned to one pod."""
    pods: dict[int, set[str]] = defaultdict(set)
    for r in phase.result.ok():
        pods[r.group].add(r.pod or "?")
    return sum(len(p) for p in pods.values()) / max(1, len(pods))


def ttft_ms(phase: PhaseResult, p: float) -> float | None:
    values = [r.ttft_s for r in phase.result.ok() if r.ttft_s is not None]
    v = workload.percentile(values, p)
    return None if v is None else v * 1000


def usage_hit_rate(phase: PhaseResult) -> float | None:
    rows = [r for r in phase.result.ok() if r.prompt_tokens and r.cached_tokens is not None]
    if not rows:
        return None
    return sum(r.cached_tokens for r in rows) / sum(r.prompt_tokens for r in rows)


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:8.1f} ms"


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:5.1f} %"


def report(phases: list[PhaseResult], spec: workload.WorkloadSpec) -> None:
    say()
    say(f"{BOLD}Workload{RESET}: {spec.groups} system prompts (~{spec.system_prompt_chars // 4} tokens each) x "
        f"{spec.conversations_per_group} conversations x {spec.turns} turns, {spec.concurrency} conversations at once")
    for phase in phases:
        say()
        say(f"{BOLD}{phase.name}{RESET}: which pod served which conversation (g<prompt>-c<conversation>)")
        for line in conversations_table(phase):
            say(line)
    say()
    header = f"    {'':28s}" + "".join(f"{p.name:>22s}" for p in phases)
    say(f"{BOLD}Side by side{RESET}")
    say(header)
    rows = [
        ("requests ok / errors", lambda p: f"{len(p.result.ok())} / {len(p.result.errors())}"),
        ("prefix-cache hit rate", lambda p: fmt_pct(p.hit_rate if p.hit_rate is not None else usage_hit_rate(p))),
        ("pods per system prompt", lambda p: f"{group_spread(p):.2f}"),
        ("TTFT p50", lambda p: fmt_ms(ttft_ms(p, 50))),
        ("TTFT p90", lambda p: fmt_ms(ttft_ms(p, 90))),
        ("TTFT p99", lambda p: fmt_ms(ttft_ms(p, 99))),
        ("wall time", lambda p: f"{p.result.wall_s:7.1f} s"),
    ]
    for label, fn in rows:
        say(f"    {label:28s}" + "".join(f"{fn(p):>22s}" for p in phases))

    if len(phases) == 2:
        ours, rr = phases
        say()
        say(f"{BOLD}What the scheduler gained{RESET}")
        h_ours = ours.hit_rate if ours.hit_rate is not None else usage_hit_rate(ours)
        h_rr = rr.hit_rate if rr.hit_rate is not None else usage_hit_rate(rr)
        if h_ours is not None and h_rr is not None:
            say(f"    prefix-cache hits: {fmt_pct(h_ours).strip()} vs {fmt_pct(h_rr).strip()} with round-robin: "
                "each system prompt is prefilled once per pod it lands on, and the plugin keeps it on one.")
        for p in (50, 90):
            a, b = ttft_ms(ours, p), ttft_ms(rr, p)
            if a and b:
                say(f"    TTFT p{p}: {a:.0f} ms vs {b:.0f} ms ({GREEN}{b / a:.1f}x lower{RESET})" if b > a else
                    f"    TTFT p{p}: {a:.0f} ms vs {b:.0f} ms (no gain on this run)")
        say(f"    pods per system prompt: {group_spread(ours):.2f} vs {group_spread(rr):.2f} "
            "(1.00 = every group pinned; load can still move a busy group on purpose)")
    plugin_stats = {k: v for k, v in phases[0].envoy_stats.items() if v}
    if plugin_stats:
        say()
        say(f"{BOLD}Plugin stats from Envoy{RESET} (admin /stats?filter=wasm, non-zero):")
        for k, v in sorted(plugin_stats.items())[:30]:
            say(f"    {k} = {v}")


def start_ui(args: argparse.Namespace, base: Path) -> None:
    """Hook for the chat UI and decision view (chat/serve.sh): a fresh stack that stays up with the UI."""
    serve = stack_mod.ROOT / "chat" / "serve.sh"
    if not (serve.is_file() and os.access(serve, os.X_OK)):
        say(f"--with-ui: {serve} is not there yet; skipping the chat UI")
        return
    run_dir = stack_mod.RunDir(base / "ui")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    with stack_mod.Stack(run_dir) as stack:
        pool = stack.start_fleet(args.pods, args.fleet_arg)
        scraper = stack.start_scraper(pool)
        envoy = stack.start_envoy("plugin", pool, scraper=scraper, workers=args.workers)
        env = {
            "WIS_GATEWAY_URL": envoy.url,
            "WIS_ENVOY_ADMIN": f"http://{envoy.admin}",
            "WIS_SCRAPER_URL": f"http://{scraper}",
            "WIS_POOL": ",".join(pool),
        }
        ui = stack.spawn("chat-ui", [str(serve)], env=env)
        step(f"chat UI started (log {ui.log}); gateway {envoy.url}. Ctrl-C to stop everything.")
        while ui.alive():
            time.sleep(0.5)
        say(f"chat UI exited:\n{ui.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="In-proxy LLM scheduling vs round-robin, on a simulated fleet.")
    p.add_argument("--pods", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="Envoy worker threads")
    p.add_argument("--groups", type=int, default=4, help="distinct shared system prompts")
    p.add_argument("--conversations", type=int, default=6, help="conversations per system prompt")
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=12, help="conversations in flight")
    p.add_argument("--fleet-arg", action="append", default=[], help="extra argument for `sim fleet` (repeatable)")
    p.add_argument("--skip-round-robin", action="store_true", help="run only the plugin phase")
    p.add_argument("--with-ui", action="store_true", help="afterwards, start the chat UI (chat/serve.sh) on a live stack")
    args = p.parse_args(argv)

    spec = workload.WorkloadSpec(groups=args.groups, conversations_per_group=args.conversations, turns=args.turns,
                                 concurrency=args.concurrency)
    base = stack_mod.RunDir.create("demo").path

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    started = time.monotonic()
    try:
        phases = [run_phase("plugin", "plugin", args, spec, base)]
        if not args.skip_round_robin:
            phases.append(run_phase("round-robin", "round-robin", args, spec, base))
        report(phases, spec)
        say()
        say(f"{BOLD}Where to look next{RESET}")
        say(f"    logs and configs of this run: {base}/<phase>/ (envoy.log, envoy-access.log, envoy.yaml, fleet.log, scraper.log)")
        say(f"    per-request records: {base}/plugin/requests.json; plugin stats: {base}/plugin/envoy-stats.json")
        say("    live stats while a stack runs: curl 'http://<admin>/stats?filter=wasm' "
            "(python3 envoy/stack.py up prints the admin address)")
        say("    README: 'How it works', 'Envoy configuration that matters', 'Configuration'; envoy/render.py for every config")
        say(f"    total demo time: {time.monotonic() - started:.0f} s")
        if args.with_ui:
            start_ui(args, base)
    except KeyboardInterrupt:
        say("\ninterrupted: every process of the demo has been stopped")
        return 130
    except stack_mod.StackError as e:
        say(f"demo failed: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
