"""Issue 16's end-to-end check: on a fleet whose tokenizer is not the plugin's starting guess of
4 characters per token (the simulator's real BPE; Qwen's own vocabulary when `WIS_QWEN_VOCAB`
names it, see scripts/common.sh ensure_qwen_vocab), with 2 Envoy workers and the default plugin
configuration, every turn after the first is served by its conversation's pod.

With a fixed 4 characters per token the plugin's feedback loop shrank each pod's index below what
the pod caches and conversations lost their pod; the plugin must learn the ratio from the pods'
`usage.prompt_tokens` instead. Behaviour only: no timings are asserted."""

from __future__ import annotations

import json
import os
import subprocess

import client
import stack as stack_mod
from names import MODEL, Stat

PODS = 4
CONVERSATIONS = 16
TURNS = 5
# KV blocks per pod (16 tokens each): the fleet, where the conversations together need
# more of each pod's cache than a mis-sized index keeps.
KV_BLOCKS = 800
SYSTEM_TOKENS = 500
OUTPUT_TOKENS = 32
# The plugin's starting guess (limits.charsPerToken) and how far from it the fleet must be.
GUESS_CHARS_PER_TOKEN = 4.0
MIN_DISTANCE_FROM_GUESS = 0.15
LOAD_TIMEOUT_S = 180

PROSE = (
    "The committee met on Thursday to review the proposal for the new library. Several members "
    "argued that the building should face the river, while others preferred the quieter street "
    "behind the market. After a long discussion about costs, schedules and the needs of local "
    "schools, they agreed to publish both designs and ask residents for their opinion before the "
    "end of the month. The architect promised to bring a model of each option to the next meeting."
)


def fleet_args() -> list[str]:
    args = ["--tokenizer", "bpe", "--num-gpu-blocks", str(KV_BLOCKS), "--enable-prompt-tokens-details"]
    vocab = os.environ.get("WIS_QWEN_VOCAB")
    if vocab:
        args += ["--vocab", vocab]
    return args


def bytes_per_token(pod: str) -> float:
    """The fleet's real ratio on English prose, asked of one pod directly."""
    body = json.dumps({"model": MODEL, "prompt": PROSE, "max_tokens": 1}).encode()
    resp = client.request(pod, "POST", "/v1/completions", body, {"content-type": "application/json"})
    assert resp.status == 200, resp.body[:300]
    return len(PROSE.encode()) / resp.json()["usage"]["prompt_tokens"]


def test_every_follow_up_turn_is_served_by_its_conversations_pod(stack, wasm_path, run_dir):
    pool = stack.start_fleet(PODS, fleet_args())
    real = bytes_per_token(pool[0])
    assert abs(real - GUESS_CHARS_PER_TOKEN) / GUESS_CHARS_PER_TOKEN > MIN_DISTANCE_FROM_GUESS, (
        f"precondition: the fleet's tokenizer ({real:.2f} bytes per token) must not fit the plugin's guess"
    )
    scraper = stack.start_scraper(pool)
    envoy = stack.start_envoy("plugin", pool, scraper=scraper, workers=2, wasm=wasm_path)
    stack_mod.wait_until(
        "the plugin's snapshot names every pod",
        lambda: envoy.plugin_stat(Stat.SNAPSHOT_ENDPOINTS) == PODS,
        20.0,
        lambda: f"\nenvoy log:\n{envoy.log_tail(15)}",
    )

    out = run_dir.file("multi-turn.json")
    argv = [
        str(stack_mod.sim_binary()), "load", "--target", envoy.url, "--workload", "multi-turn",
        "--model", MODEL, "--groups", str(CONVERSATIONS), "--turns", str(TURNS),
        "--conversations", str(CONVERSATIONS),
        "--requests", str(CONVERSATIONS * TURNS), "--concurrency", str(CONVERSATIONS),
        "--system-tokens", str(SYSTEM_TOKENS), "--output-tokens", str(OUTPUT_TOKENS),
        "--duration", f"{LOAD_TIMEOUT_S}s", "--fleet", ",".join(pool), "--seed", "7", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LOAD_TIMEOUT_S + 60)
    assert done.returncode == 0, f"sim load failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    report = json.loads(out.read_text())
    summary, records = report["summary"], report["records"]

    assert summary["errors"] == 0, summary["errors_by_kind"]
    assert len({r["conversation"] for r in records}) == CONVERSATIONS
    assert summary["follow_up_turns"] == CONVERSATIONS * (TURNS - 1), f"{summary['follow_up_turns']} follow-up turns ran"
    assert summary["turn_affinity"] == 1.0, (
        f"turn affinity {summary['turn_affinity']}: follow-up turns left their conversation's pod "
        f"(per pod: {summary['per_pod']})"
    )

    learned = envoy.plugin_stat(Stat.BYTES_PER_TOKEN_X100) / 100
    assert abs(learned - real) < abs(learned - GUESS_CHARS_PER_TOKEN), (
        f"the plugin's bytes per token ({learned:.2f}) is not closer to the fleet's ({real:.2f}) "
        f"than to its starting guess ({GUESS_CHARS_PER_TOKEN})"
    )
