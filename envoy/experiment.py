#!/usr/bin/env python3
"""The experiments behind `./build.sh demo` and `./build.sh bench`, defined once.

An experiment sends one workload (`sim load`, on a `sim fleet` started for it) through one router
(Envoy with one of render.py's scenarios, two Envoys side by side, vllm-router, or the ideal
reference with no proxy at all) and keeps a `Result`: `sim load`'s summary, the proxy's CPU and what
the plugin learned (its Envoy stats). The demo and the bench are thin scripts over this module.

Where to change what:
  - what a workload sends and the fleet it runs on:  the workload builders (`shared_prefix`,
    `multi_turn`, `text_profile`, `kv_pressure`) and TEXT_PROFILES
  - which routers exist and how each starts:          envoy/routers.py (ROUTERS, `start_router`)
  - the demo's table:                                 DEMO_TABLE
  - the bench's tables:                               PROFILE_TABLE, SATURATION_TABLE, QUALITY_TABLE
  - how a number is printed:                          `ms`, `pct`, `ratio`, `fixed`

Nothing here asserts a number; results are measured and reported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stack as stack_mod  # noqa: E402
from names import MODEL, Stat, envoy_stat  # noqa: E402
from routers import BY_KEY_PROFILE, ROUTERS, EnvoyStarter, Router, cpu_seconds, needs_scraper, start_router  # noqa: E402,F401

# A load run may take this long beyond its --duration (draining the requests still in flight).
LOAD_DRAIN_S = 90
# The plugin's learned bytes per token over the pool (a gauge, x100), as Envoy names it.
BYTES_PER_TOKEN_STAT = envoy_stat(Stat.BYTES_PER_TOKEN_X100)


# --- output ------------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f} ms"


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def fixed(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


# --- workloads ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One `sim load` run and the `sim fleet` it runs on."""

    name: str
    # `sim load` flags: what is sent and how much is in flight.
    load_args: tuple[str, ...]
    duration_s: int
    # `sim fleet` flags: the KV cache, the batch size.
    fleet_args: tuple[str, ...] = ()
    # One line for the report: what the workload is.
    note: str = ""
    # `--tokenizer`/`--vocab`: how the fleet tokenizes, and how `sim load` sizes its texts.
    tokenizer: tuple[str, ...] = ()

    @property
    def fleet_argv(self) -> list[str]:
        return [*self.tokenizer, *self.fleet_args]

    @property
    def load_argv(self) -> list[str]:
        return [*self.load_args, *self.tokenizer]

    def flag(self, name: str) -> str | None:
        """The value of one `sim load` flag of this workload."""
        args = list(self.load_args)
        return args[args.index(name) + 1] if name in args[:-1] else None


# Prompt-token details on, as our manifests run vLLM: the plugin then corrects its prefix index
# from the cached_tokens each pod reports.
PROMPT_DETAILS = ("--enable-prompt-tokens-details",)


def real_bpe() -> tuple[tuple[str, ...], str]:
    """`--tokenizer`/`--vocab` flags (the same for `sim fleet` and `sim load`) for a real BPE, and
    its name: Qwen's own vocabulary when scripts/common.sh's ensure_qwen_vocab found it
    (WIS_QWEN_VOCAB), else tiktoken's cl100k_base, embedded in the simulator, from which Qwen's was
    built."""
    vocab = os.environ.get("WIS_QWEN_VOCAB", "")
    if vocab and Path(vocab).is_file():
        return ("--tokenizer", "bpe", "--vocab", vocab), "Qwen BPE (qwen.tiktoken)"
    return ("--tokenizer", "bpe"), "cl100k_base BPE"


def shared_prefix(groups: int, concurrency: int, duration_s: int, fleet_args: Sequence[str] = (),
                  tokenizer: Sequence[str] = ()) -> Workload:
    """G system prompts of ~1,000 tokens, each request one of them plus a fresh question.
    `tokenizer`: the fleet's `--tokenizer`/`--vocab`, which `sim load` sizes its texts with too."""
    return Workload(
        "shared-prefix",
        ("--workload", "shared-prefix", "--groups", str(groups), "--system-tokens", "1000",
         "--question-tokens", "100", "--output-tokens", "32", "--concurrency", str(concurrency)),
        duration_s,
        tuple(fleet_args),
        f"{groups} system prompts of ~1,000 tokens, a fresh question of ~100 tokens per request",
        tuple(tokenizer),
    )


def multi_turn(groups: int, concurrency: int, duration_s: int, fleet_args: Sequence[str] = (),
               tokenizer: Sequence[str] = ()) -> Workload:
    """Conversations of 5 turns that resend their history with the pod's replies."""
    return Workload(
        "multi-turn",
        ("--workload", "multi-turn", "--groups", str(groups), "--system-tokens", "600",
         "--question-tokens", "80", "--output-tokens", "48", "--turns", "5", "--concurrency", str(concurrency)),
        duration_s,
        tuple(fleet_args),
        f"{groups} system prompts of ~600 tokens, conversations of 5 turns that append the pod's replies",
        tuple(tokenizer),
    )


@dataclass(frozen=True)
class TextProfile:
    """A kind of text and the tokenizer that reads it: what the simulator does not share with the
    plugin's assumptions (the plugin cuts prompts into blocks of bytes and learns bytes per token)."""

    name: str
    # `sim load --workload`
    workload: str
    # `--tokenizer ...` of the fleet and the load (None: the real BPE of `real_bpe()`)
    tokenizer: tuple[str, ...] | None
    note: str

    def tokenizer_args(self) -> tuple[tuple[str, ...], str]:
        """The flags and a name for the report."""
        return (self.tokenizer, " ".join(self.tokenizer)) if self.tokenizer else real_bpe()


TEXT_PROFILES: tuple[TextProfile, ...] = (
    TextProfile("english", "multi-turn", None, "English prose"),
    TextProfile("code", "code-assistant", None, "code and JSON tool prompts"),
    TextProfile("cjk", "cjk-chat", None, "Chinese chat"),
    TextProfile("chars-1.5", "multi-turn", ("--tokenizer", "chars:1.5"), "fixed 1.5 characters per token (CJK-like)"),
    TextProfile("chars-3", "multi-turn", ("--tokenizer", "chars:3"), "fixed 3 characters per token (code-like)"),
)


@dataclass(frozen=True)
class FleetShape:
    """The fleet and the conversations of the text-profile runs (issue 16's setting by default:
    4 pods of 800 blocks, 8 running sequences each, 32 system prompts, conversations of 6 turns)."""

    kv_blocks: int = 800
    # None: the simulator profile's own (256 on the L4 profile)
    max_num_seqs: int | None = 8
    # System prompts (`sim load --groups`); every conversation starts from one of them.
    groups: int = 32
    turns: int = 6
    concurrency: int = 16
    duration_s: int = 30


def text_profile(profile: TextProfile, shape: FleetShape, name: str | None = None) -> Workload:
    """Multi-turn conversations in one kind of text (system prompts of 500 tokens, about 2,500
    characters of English, growing by the pod's own replies)."""
    tokenizer, tok_name = profile.tokenizer_args()
    return Workload(
        name or profile.name,
        ("--workload", profile.workload, "--groups", str(shape.groups), "--system-tokens", "500",
         "--question-tokens", "40", "--output-tokens", "48", "--turns", str(shape.turns),
         "--concurrency", str(shape.concurrency)),
        shape.duration_s,
        ("--num-gpu-blocks", str(shape.kv_blocks),
         *(("--max-num-seqs", str(shape.max_num_seqs)) if shape.max_num_seqs else ()), *PROMPT_DETAILS),
        f"{profile.note}, {tok_name}: {shape.groups} system prompts of 500 tokens, conversations of "
        f"{shape.turns} turns, concurrency {shape.concurrency}, pods of {shape.kv_blocks} KV blocks"
        + (f" and {shape.max_num_seqs} running sequences" if shape.max_num_seqs else ""),
        tokenizer,
    )


def kv_pressure(shape: FleetShape) -> Workload:
    """English conversations whose KV demand exceeds the fleet's cache: 64 system prompts at
    concurrency 24 on pods of 700 blocks (the regime where only a precise index keeps its hits)."""
    pressure = FleetShape(kv_blocks=700, max_num_seqs=shape.max_num_seqs, groups=64, turns=shape.turns,
                          concurrency=24, duration_s=shape.duration_s)
    w = text_profile(TEXT_PROFILES[0], pressure, name="kv-pressure")
    return Workload(w.name, w.load_args, w.duration_s, w.fleet_args, "KV pressure: " + w.note, w.tokenizer)


def text_bytes_per_token(workload: Workload) -> float | None:
    """The true UTF-8 bytes per token of a workload's text on its fleet's tokenizer
    (`sim tokenize --sample`, over the workload's system-prompt text): what the plugin should learn."""
    kind = workload.flag("--workload") or "multi-turn"
    try:
        out = subprocess.run([str(stack_mod.sim_binary()), "tokenize", *workload.tokenizer, "--sample", kind],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired, stack_mod.StackError):
        return None
    m = re.search(r"([\d.]+) bytes/token", out.stdout)
    return float(m.group(1)) if out.returncode == 0 and m else None


# --- runs --------------------------------------------------------------------------------------


@dataclass
class Result:
    """What one workload through one router measured."""

    router: str
    workload: str
    # `sim load --out`'s summary
    summary: dict
    # CPU seconds of the proxy's processes over the run (None: no proxy, or unreadable)
    proxy_cpu_s: float | None = None
    # The plugin's non-zero Envoy stats after the run (empty without the plugin)
    plugin_stats: dict[str, float] = field(default_factory=dict)
    # Every request's record (kept in memory only: the run folder has the file)
    records: list[dict] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> int:
        return int(self.summary.get("ok", 0))

    @property
    def errors(self) -> int:
        return int(self.summary.get("errors", 0))

    @property
    def requests(self) -> int:
        return self.ok + self.errors

    def ttft(self, q: str) -> float | None:
        return (self.summary.get("ttft_s") or {}).get(q)

    @property
    def hit_rate(self) -> float | None:
        return self.summary.get("prefix_cache_hit_rate")

    @property
    def turn_affinity(self) -> float | None:
        return self.summary.get("turn_affinity")

    @property
    def output_tokens_per_s(self) -> float | None:
        return self.summary.get("output_tokens_per_s")

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.proxy_cpu_s is None or not self.requests:
            return None
        return 1000 * self.proxy_cpu_s / self.requests

    @property
    def bytes_per_token(self) -> float | None:
        """The plugin's learned UTF-8 bytes per token over the pool (mean over gateways)."""
        value = self.plugin_stats.get(BYTES_PER_TOKEN_STAT)
        return value / 100 if value else None

    def to_json(self) -> dict:
        return {"router": self.router, "workload": self.workload, "summary": self.summary,
                "proxy_cpu_s": self.proxy_cpu_s, "plugin_stats": self.plugin_stats}


# Called about twice a second while a load runs, with the seconds elapsed.
Progress = Callable[[float], None]


def run_load(
    stack: stack_mod.Stack,
    router: Router,
    pool: list[str],
    workload: Workload,
    out: Path,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """`sim load` through the router; returns its `--out` JSON (summary and records)."""
    argv = [str(stack_mod.sim_binary()), "load", "--target", ",".join(router.targets),
            *(["--spread", router.spread] if router.spread else []),
            *([] if "--model" in workload.load_args else ["--model", MODEL]), *workload.load_argv,
            "--duration", f"{workload.duration_s}s", "--fleet", ",".join(pool), "--out", str(out),
            *(["--seed", str(seed)] if seed is not None else [])]
    proc = stack.spawn(f"load-{out.stem}", argv)
    started = time.monotonic()
    deadline = started + workload.duration_s + LOAD_DRAIN_S
    while proc.alive():
        if time.monotonic() > deadline:
            proc.stop()
            raise stack_mod.StackError(f"sim load {workload.name} did not finish{proc.failure_note()}")
        if progress:
            progress(time.monotonic() - started)
        time.sleep(0.5)
    if proc.popen is None or proc.popen.returncode != 0 or not out.is_file():
        raise stack_mod.StackError(f"sim load {workload.name} failed{proc.failure_note()}")
    return json.loads(out.read_text())


def measure(
    stack: stack_mod.Stack,
    router: Router,
    pool: list[str],
    workload: Workload,
    out: Path,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
) -> Result:
    """One workload through a running router: the load report, the proxy's CPU over it, the plugin's stats."""
    before = router.cpu_seconds()
    report = run_load(stack, router, pool, workload, out, seed=seed, progress=progress)
    after = router.cpu_seconds()
    cpu = after - before if before is not None and after is not None else None
    return Result(router.name, workload.name, report["summary"], cpu, router.plugin_stats(), report.get("records", []))


def run_fresh(
    base: Path,
    router_name: str,
    workload: Workload,
    pods: int,
    *,
    plugin_config: dict | None = None,
    seed: int | None = None,
) -> Result:
    """A fresh fleet and router for one workload, stopped afterwards (logs under base/<router>-<workload>/)."""
    run_dir = stack_mod.RunDir(base / f"{router_name}-{workload.name}")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    with stack_mod.Stack(run_dir) as stack:
        pool = stack.start_fleet(pods, workload.fleet_argv)
        router = start_router(stack, router_name, pool, plugin_config=plugin_config)
        result = measure(stack, router, pool, workload, run_dir.file("load.json"), seed=seed)
    # Kept beside the logs: what the run measured, also when a later run of the same bench fails.
    run_dir.file("result.json").write_text(json.dumps(result.to_json(), indent=1))
    return result


def progress_line(label: str, workload: Workload) -> Progress:
    """A progress bar on a terminal, a line every 5 s otherwise."""
    tty = sys.stdout.isatty()
    last = [-5.0]

    def show(elapsed: float) -> None:
        if tty:
            done = min(1.0, elapsed / max(1, workload.duration_s))
            sys.stdout.write(f"\r    {label} {workload.name:13s} [{'#' * int(30 * done):<30}] "
                             f"{elapsed:4.0f}/{workload.duration_s} s")
            sys.stdout.flush()
        elif elapsed - last[0] >= 5:
            last[0] = elapsed
            say(f"    {label} {workload.name}: {elapsed:3.0f}/{workload.duration_s} s")

    return show


# --- tables ------------------------------------------------------------------------------------


# The results of the same workload, by router: what relative columns compare against.
Peers = Mapping[str, Result]


@dataclass(frozen=True)
class Metric:
    """One column (or, in the demo's side-by-side view, one row) of a results table."""

    label: str
    cell: Callable[[Result, Peers], str]


def _vs(peer: str, value: Callable[[Result], float | None], inverse: bool = False) -> Callable[[Result, Peers], str]:
    """This result's value over the peer's (or the peer's over this one's, for "lower is better")."""

    def cell(r: Result, peers: Peers) -> str:
        p = peers.get(peer)
        a, b = value(r), value(p) if p else None
        if a is None or b is None or (b if not inverse else a) == 0:
            return "n/a"
        return ratio(b / a if inverse else a / b)

    return cell


OK_ERRORS = Metric("requests ok / errors", lambda r, _: f"{r.ok} / {r.errors}")
TURN_AFFINITY = Metric("turn affinity", lambda r, _: fixed(r.turn_affinity))
HIT_RATE = Metric("prefix-cache hit rate", lambda r, _: pct(r.hit_rate))
HIT_VS_IDEAL = Metric("hit rate / ideal", _vs("ideal-pinned", lambda r: r.hit_rate))
TTFT_P50 = Metric("TTFT p50", lambda r, _: ms(r.ttft("p50")))
TTFT_P90 = Metric("TTFT p90", lambda r, _: ms(r.ttft("p90")))
TTFT_P99 = Metric("TTFT p99", lambda r, _: ms(r.ttft("p99")))
P90_GAIN_VS_RR = Metric("TTFT p90 gain vs round-robin", _vs("envoy-round-robin", lambda r: r.ttft("p90"), inverse=True))
OUTPUT_TPS = Metric("output tokens/s", lambda r, _: fixed(r.output_tokens_per_s, 0))
ERRORS = Metric("errors", lambda r, _: str(r.errors))
BYTES_PER_TOKEN = Metric("learned bytes/token", lambda r, _: fixed(r.bytes_per_token))
PROXY_CPU = Metric("proxy CPU ms / req", lambda r, _: fixed(r.cpu_ms_per_request))

# The demo's side-by-side comparison (one row each, one column per router).
DEMO_TABLE: tuple[Metric, ...] = (OK_ERRORS, TURN_AFFINITY, HIT_RATE, TTFT_P50, TTFT_P90, TTFT_P99, OUTPUT_TPS,
                                  BYTES_PER_TOKEN)
# The bench's router comparison on the saturating shared-prefix and multi-turn workloads.
QUALITY_TABLE: tuple[Metric, ...] = (TTFT_P50, TTFT_P90, TTFT_P99, OUTPUT_TPS, HIT_RATE, TURN_AFFINITY, ERRORS,
                                     PROXY_CPU)
# The bench's text profiles at the saturating load: what users feel.
SATURATION_TABLE: tuple[Metric, ...] = (HIT_RATE, TURN_AFFINITY, TTFT_P50, TTFT_P90, TTFT_P99, P90_GAIN_VS_RR, ERRORS,
                                        PROXY_CPU)
# The bench's text profiles: quality where the simulator does not fit the plugin's assumptions.
PROFILE_TABLE: tuple[Metric, ...] = (TURN_AFFINITY, HIT_RATE, HIT_VS_IDEAL, TTFT_P50, TTFT_P90, P90_GAIN_VS_RR,
                                     BYTES_PER_TOKEN, ERRORS, PROXY_CPU)


def peers_of(results: Sequence[Result]) -> dict[str, dict[str, Result]]:
    """workload -> router -> result."""
    out: dict[str, dict[str, Result]] = {}
    for r in results:
        out.setdefault(r.workload, {})[r.router] = r
    return out


def markdown_table(results: Sequence[Result], metrics: Sequence[Metric]) -> list[str]:
    """One row per result (workload, router), one column per metric."""
    peers = peers_of(results)
    lines = ["| workload | router | " + " | ".join(m.label for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for r in results:
        cells = [m.cell(r, peers[r.workload]) for m in metrics]
        lines.append(f"| {r.workload} | {r.router} | " + " | ".join(cells) + " |")
    return lines


def side_by_side(results: Sequence[Result], metrics: Sequence[Metric], title: str, names: Sequence[str]) -> list[str]:
    """One column per result (headed by `names`), one row per metric: the demo's terminal view."""
    peers = peers_of(results)
    lines = [f"  {title:26s}" + "".join(f"{n:>16s}" for n in names)]
    for m in metrics:
        lines.append(f"    {m.label:24s}" + "".join(f"{m.cell(r, peers[r.workload]):>16s}" for r in results))
    return lines
