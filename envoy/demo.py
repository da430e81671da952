#!/usr/bin/env python3
"""The demo (`./build.sh demo`): a simulated vLLM fleet, the scraper and a real Envoy with the plugin
serve a chat workload with shared system prompts; then the same workload goes through plain Envoy
round-robin on a fresh fleet, and the two are compared.

    envoy/demo.sh [--pods 4] [--groups 32] [--concurrency 96] [--duration 25] [--no-ui] [--with-ui]

The load saturates round-robin (96 requests in flight on 4 pods): its uncached prefills queue up
behind each other, which is where users feel the difference.
The fleet tokenizes with a real BPE (Qwen's vocabulary when scripts/common.sh could fetch it, else
cl100k_base), not the 4 characters per token the plugin starts from; the report shows the bytes per
token the plugin learned, turn-to-turn affinity and the prefix-cache hit rate. Numbers from a full,
longer run live in bench/results/REPORT.md.

While the plugin phase runs, the Gradio chat and the decision view are served on localhost (their
URLs are printed): the view plots the routing and the prefix-cache hit rate live. At the end, on
a terminal (or with --with-ui), a fresh stack keeps both up until Ctrl-C.

The demo's table (one row per measure, one column per router) is `DEMO_TABLE` in
envoy/experiment.py, which also defines the workloads, the routers and how a load run is measured.

envoy/demo.sh builds everything first; this script expects the binaries and .venv to exist.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import experiment  # noqa: E402
import stack as stack_mod  # noqa: E402
import ui as ui_mod  # noqa: E402
from experiment import ms, pct, say  # noqa: E402

# Groups listed per pod before "+N more" (a line stays readable on an 80-column terminal).
GROUPS_SHOWN = 8
BOLD, DIM, GREEN, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("",) * 4


def workloads(args: argparse.Namespace) -> list[experiment.Workload]:
    fleet = ("--num-gpu-blocks", str(args.kv_blocks), *experiment.PROMPT_DETAILS, *args.fleet_arg)
    tokenizer = experiment.real_bpe()[0]
    return [
        experiment.shared_prefix(args.groups, args.concurrency, args.duration, fleet, tokenizer),
        experiment.multi_turn(max(1, args.groups // 2), args.concurrency, args.duration, fleet, tokenizer),
    ]


@dataclass
class Phase:
    """One router's run of every workload on its own fleet."""

    name: str
    pool: list[str]
    results: dict[str, experiment.Result]  # workload name -> result
    run_dir: Path


def step(text: str) -> None:
    say(f"{BOLD}==>{RESET} {text}")


def run_phase(name: str, router_name: str, args: argparse.Namespace, base: Path) -> Phase:
    run_dir = stack_mod.RunDir(base / name)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    plan = workloads(args)
    with stack_mod.Stack(run_dir) as stack:
        step(f"[{name}] starting a fleet of {args.pods} simulated vLLM pods ({args.kv_blocks} KV blocks each, "
             f"{experiment.real_bpe()[1]} tokenizer)")
        pool = stack.start_fleet(args.pods, plan[0].fleet_argv)
        with_plugin = router_name == "envoy-plugin"
        if with_plugin:
            step(f"[{name}] starting the scraper (reads every pod's /metrics every 50 ms) and Envoy "
                 f"({args.workers} workers, with the plugin)")
        else:
            step(f"[{name}] starting Envoy ({args.workers} workers)")
        starter = None
        if with_plugin and not args.no_ui:
            def starter(stack: stack_mod.Stack, _scenario: str, pool: list[str], scraper: str | None) -> stack_mod.Envoy:
                envoy = ui_mod.ui_envoy(stack, pool, scraper, args.workers)
                start_phase_ui(stack, envoy, scraper, pool, args)
                return envoy
        router = experiment.start_router(stack, router_name, pool, workers=args.workers, access_log=True,
                                         envoy_starter=starter)
        step(f"[{name}] sending the chat workloads through {router.targets[0]}")
        results: dict[str, experiment.Result] = {}
        for w in plan:
            results[w.name] = experiment.measure(stack, router, pool, w, run_dir.file(f"load-{w.name}.json"),
                                                 progress=experiment.progress_line(name, w))
            if sys.stdout.isatty():
                sys.stdout.write("\n")
        stats = results[plan[-1].name].plugin_stats
        run_dir.file("envoy-stats.json").write_text(json.dumps(stats, indent=1))
    return Phase(name, pool, results, run_dir.path)


def pod_label(pool: list[str], address: str | None) -> str:
    if address in pool:
        return f"pod-{pool.index(address) + 1}"
    return address or "?"


def groups_table(phase: Phase, workload: str) -> list[str]:
    """Which pod served which system-prompt group (g<N>), with the share of the group's requests."""
    result = phase.results[workload]
    records = [r for r in result.records if r["status"] == 200 and not r.get("error")]
    by_group: dict[int, Counter] = defaultdict(Counter)
    for r in records:
        by_group[r["group"]][pod_label(phase.pool, r.get("served_by"))] += 1
    by_pod: dict[str, list[str]] = defaultdict(list)
    for g, pods in sorted(by_group.items()):
        total = sum(pods.values())
        for pod, n in pods.most_common():
            share = n / total
            if share >= 0.1:
                by_pod[pod].append(f"g{g}" + ("" if share > 0.9 else f"({share:.0%})"))
    lines = []
    for i, address in enumerate(phase.pool):
        label = f"pod-{i + 1}"
        per_pod = result.summary["per_pod"].get(address, 0)
        names = by_pod.get(label, [])
        shown = " ".join(names[:GROUPS_SHOWN]) + (f" +{len(names) - GROUPS_SHOWN} more" if len(names) > GROUPS_SHOWN else "")
        lines.append(f"    {label} {address:>21s} {per_pod:5d} requests, {len(names):2d} groups: {DIM}{shown}{RESET}")
    spread = sum(len(p) for p in by_group.values()) / max(1, len(by_group))
    lines.append(f"    pods per group (1.00 = every system prompt stays on one pod): {spread:.2f}")
    return lines


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    names = [w.name for w in workloads(args)]
    say()
    say(f"{BOLD}Which pod served which system prompt{RESET} (shared-prefix workload, {args.groups} prompts "
        "of ~1,000 tokens; gN(x%) = part of a group)")
    for phase in phases:
        say(f"  {BOLD}{phase.name}{RESET}")
        for line in groups_table(phase, "shared-prefix"):
            say(line)
    say()
    say(f"{BOLD}Side by side{RESET} (same fleet size and workload, a fresh fleet per proxy)")
    for w in names:
        for line in experiment.side_by_side([p.results[w] for p in phases], experiment.DEMO_TABLE, w,
                                            [p.name for p in phases]):
            say(line)

    if len(phases) == 2:
        ours, rr = phases
        say()
        say(f"{BOLD}What the scheduler gained{RESET}")
        for w in names:
            a, b = ours.results[w], rr.results[w]
            parts = []
            if a.turn_affinity is not None and b.turn_affinity is not None:
                parts.append(f"turn affinity {a.turn_affinity:.2f} vs {b.turn_affinity:.2f}")
            if a.hit_rate is not None and b.hit_rate is not None:
                parts.append(f"prefix-cache hits {pct(a.hit_rate)} vs {pct(b.hit_rate)}")
            for q in ("p50", "p90"):
                ta, tb = a.ttft(q), b.ttft(q)
                if ta and tb:
                    gain = f"{GREEN}{tb / ta:.1f}x lower{RESET}" if tb > ta else "no gain"
                    parts.append(f"TTFT {q} {ms(ta)} vs {ms(tb)} ({gain})")
            say(f"    {w}: " + "; ".join(parts))
        say("    Round-robin prefills every system prompt on every pod and evicts them from each other's KV")
        say("    cache; the plugin keeps each prompt on one pod (and moves it only when that pod is busy).")
    plan = workloads(args)
    learned = phases[0].results[plan[-1].name].bytes_per_token
    truth = experiment.text_bytes_per_token(plan[-1])
    say()
    say(f"{BOLD}What the plugin learned{RESET} (it starts from limits.charsPerToken = 4 and learns from the pods' "
        "usage.prompt_tokens)")
    stat = experiment.BYTES_PER_TOKEN_STAT
    if learned is None:
        say(f"    {stat}: not reported by this build of the plugin")
    else:
        say(f"    {stat}: {learned:.2f} UTF-8 bytes per token")
    say(f"    the {plan[-1].name} text on this fleet's tokenizer ({experiment.real_bpe()[1]}): "
        f"{experiment.fixed(truth)} bytes per token (sim tokenize)")
    plugin_stats = phases[0].results[names[-1]].plugin_stats
    if plugin_stats:
        say()
        say(f"{BOLD}Plugin stats from Envoy{RESET} (admin /stats?filter=wasm, non-zero)")
        for k, v in sorted(plugin_stats.items())[:25]:
            say(f"    {k} = {v:g}")


def start_phase_ui(
    stack: stack_mod.Stack, envoy: stack_mod.Envoy, scraper: str | None, pool: list[str], args: argparse.Namespace
) -> None:
    """The chat and the decision view on the plugin phase's stack: watch the workload live."""
    try:
        ui = ui_mod.start_ui(stack, envoy, scraper, pool, chat_port=args.chat_port, view_port=args.view_port)
    except stack_mod.StackError as e:
        say(f"    (the chat and the decision view did not start, the demo goes on without them: {e})")
        return
    say(f"    {BOLD}decision view{RESET} {ui.view_url}  (open it now: routing and prefix hits, live)")
    say(f"    {BOLD}chat{RESET}          {ui.chat_url}")


def hold_ui(args: argparse.Namespace, base: Path) -> None:
    """A fresh stack with the chat and the decision view, up until Ctrl-C."""
    run_dir = stack_mod.RunDir(base / "ui")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    with stack_mod.Stack(run_dir) as stack:
        step("starting a fresh fleet, scraper and Envoy for the chat and the decision view")
        pool = stack.start_fleet(args.pods, [*experiment.real_bpe()[0], *experiment.PROMPT_DETAILS, *args.fleet_arg])
        scraper = stack.start_scraper(pool)
        envoy = ui_mod.ui_envoy(stack, pool, scraper, args.workers)
        ui = ui_mod.start_ui(stack, envoy, scraper, pool, chat_port=args.chat_port, view_port=args.view_port)
        say()
        say(f"    {BOLD}chat{RESET}          {ui.chat_url}   (each turn shows the pod that served it)")
        say(f"    {BOLD}decision view{RESET} {ui.view_url}   (every decision, every scorer, live)")
        say(f"    gateway       {ui.gateway_url}   (OpenAI API: /v1/chat/completions)")
        say(f"    logs          {run_dir.path}")
        say("    Ctrl-C stops everything.")
        while all(p.alive() for p in stack.processes):
            time.sleep(0.5)
        dead = next(p for p in stack.processes if not p.alive())
        say(f"{dead.name} exited{dead.failure_note()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="In-proxy LLM scheduling vs round-robin, on a simulated fleet.")
    p.add_argument("--pods", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="Envoy worker threads")
    p.add_argument("--groups", type=int, default=32, help="distinct shared system prompts")
    p.add_argument("--concurrency", type=int, default=96, help="requests in flight (96 saturates round-robin)")
    p.add_argument("--duration", type=int, default=25, help="seconds per workload run")
    p.add_argument("--kv-blocks", type=int, default=1200,
                   help="KV blocks per pod (16 tokens each): small enough that no pod can cache every prompt")
    p.add_argument("--fleet-arg", action="append", default=[], help="extra argument for `sim fleet` (repeatable)")
    p.add_argument("--skip-round-robin", action="store_true", help="run only the plugin phase")
    p.add_argument("--no-ui", action="store_true", help="no chat and no decision view (workloads and report only)")
    p.add_argument("--with-ui", action="store_true",
                   help="afterwards keep the chat and the decision view up until Ctrl-C (the default on a terminal)")
    p.add_argument("--chat-port", type=int, default=ui_mod.DEFAULT_CHAT_PORT)
    p.add_argument("--view-port", type=int, default=ui_mod.DEFAULT_VIEW_PORT)
    args = p.parse_args(argv)

    base = stack_mod.RunDir.create("demo").path

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C must work even when the parent shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    started = time.monotonic()
    try:
        phases = [run_phase("plugin", "envoy-plugin", args, base)]
        if not args.skip_round_robin:
            phases.append(run_phase("round-robin", "envoy-round-robin", args, base))
        report(phases, args)
        say()
        say(f"{BOLD}Where to look next{RESET}")
        say(f"    logs and configs of this run: {base}/<phase>/ (envoy.log, envoy-access.log, envoy.yaml, fleet.log, scraper.log)")
        say(f"    every request of a run: {base}/<phase>/load-<workload>.json; plugin stats: {base}/plugin/envoy-stats.json")
        say("    live stats while a stack runs: curl 'http://<admin>/stats?filter=wasm' "
            "(python3 envoy/stack.py up prints the admin address)")
        if args.no_ui or not (args.with_ui or sys.stdin.isatty()):
            say("    the chat and the decision view on a live stack: ./build.sh ui (or ./build.sh demo --with-ui)")
        say("    README: 'How it works', 'Envoy configuration that matters', 'Configuration'; envoy/render.py for every config")
        say(f"    total demo time: {time.monotonic() - started:.0f} s")
        if not args.no_ui and (args.with_ui or sys.stdin.isatty()):
            hold_ui(args, base)
    except KeyboardInterrupt:
        say("\ninterrupted: every process of the demo has been stopped")
        return 130
    except stack_mod.StackError as e:
        say(f"demo failed: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
