"""Envoy (2 workers) + the plugin + the scraper + a simulated vLLM fleet, end to end.

Each simulated pod names itself in the response header `x-sim-pod: ip:port`, so every assertion
about routing reads where a request was actually served."""

from __future__ import annotations

import json
import threading
import time

import pytest

import client
import stack as stack_mod
from names import Header, Snapshot, Stat

SIM_POD_HEADER = Header.SIM_POD
PODS = 3
WORKERS = 2
# Long enough that the prefix covers many cache blocks (16 tokens x 4 chars each): the plugin weighs
# matched length and ignores short common prefixes on purpose.
SYSTEM_PROMPT_CHARS = 3000
# Short answers keep the simulated time per request small.
MAX_TOKENS = 8
# How long a request may wait before we count it as stuck behind a stalled pod.
STALLED_TIMEOUT_S = 5.0


def system_prompt(group: int) -> str:
    words = [f"group{group}-rule{i}: answer carefully and cite section {group}.{i}." for i in range(400)]
    return " ".join(words)[:SYSTEM_PROMPT_CHARS]


def ask(envoy_address: str, group: int, question: str, headers: dict[str, str] | None = None, timeout=None, **extra):
    if timeout is not None:
        try:
            return client.chat(
                envoy_address,
                client.conversation(system_prompt(group), question),
                headers=headers,
                max_tokens=MAX_TOKENS,
                timeout=timeout,
                **extra,
            )
        except OSError as e:
            return e
    return client.chat(
        envoy_address,
        client.conversation(system_prompt(group), question),
        headers=headers,
        max_tokens=MAX_TOKENS,
        **extra,
    )


def served_by(resp: client.Response) -> str:
    pod = resp.header(SIM_POD_HEADER)
    assert pod, f"no {SIM_POD_HEADER} header on a {resp.status} response: {resp.body[:300]!r}"
    return pod


def worker_connections(envoy: stack_mod.Envoy) -> dict[str, int]:
    """Downstream connections accepted per Envoy worker (listener per-worker stats)."""
    stats = envoy.stats(r"worker_\d+\.downstream_cx_total")
    return {name.split(".")[-2]: value for name, value in stats.items() if "listener." in name}


def assert_all_ok(results, pool: list[str]) -> list[str]:
    pods = []
    for r in results:
        assert not isinstance(r, Exception), f"request failed: {r!r}"
        assert r.status == 200, f"HTTP {r.status}: {r.body[:300]!r}"
        pod = served_by(r)
        assert pod in pool, f"served by {pod}, which is not a pool member {pool}"
        pods.append(pod)
    return pods


class Running:
    """A stack of fleet + scraper + Envoy with the plugin."""

    def __init__(self, stack: stack_mod.Stack, wasm, pods: int = PODS, fleet_args=()):
        self.stack = stack
        self.pool = stack.start_fleet(pods, fleet_args)
        self.scraper = stack.start_scraper(self.pool)
        self.scraper_proc = stack.processes[-1]
        self.envoy = stack.start_envoy("plugin", self.pool, scraper=self.scraper, workers=WORKERS, wasm=wasm)

    def wait_for_snapshot(self) -> None:
        """Until the scraper has seen every pod healthy (its snapshot is what the plugin scores)."""

        def healthy() -> bool:
            snap = stack_mod.snapshot(self.scraper)
            return sum(1 for e in snap[Snapshot.ENDPOINTS] if e.get(Snapshot.HEALTHY)) == len(self.pool)

        stack_mod.wait_until("scraper snapshot with every pod healthy", healthy, 15.0, self.scraper_proc.failure_note)


@pytest.fixture(scope="module")
def shared_stack(wasm_path):
    """One stack for the tests that do not break anything (starting one costs a few seconds)."""
    run_dir = stack_mod.RunDir.create("fleet-shared", base=stack_mod.ROOT / ".run" / "tests")
    with stack_mod.Stack(run_dir) as s:
        running = Running(s, wasm_path)
        running.wait_for_snapshot()
        yield running


@pytest.fixture
def own_stack(stack, wasm_path):
    running = Running(stack, wasm_path)
    running.wait_for_snapshot()
    return running


def test_requests_reach_only_pool_members(shared_stack):
    calls = [(shared_stack.envoy.listen, g % 5, f"question {i}") for i, g in enumerate(range(30))]
    results = client.parallel(ask, calls, workers=6)
    pods = assert_all_ok(results, shared_stack.pool)
    assert len(pods) == 30


def test_the_same_shared_prefix_goes_to_the_same_pod_across_envoy_workers(shared_stack):
    envoy = shared_stack.envoy
    before = worker_connections(envoy)
    groups = range(100, 106)
    pods_by_group: dict[int, set[str]] = {g: set() for g in groups}
    # Sequential and one connection per request: the kernel spreads connections over the workers,
    # and no queue builds up that could legitimately move a group elsewhere.
    for round_ in range(6):
        for g in groups:
            resp = ask(envoy.listen, g, f"round {round_}: what does rule {round_} say?")
            assert resp.status == 200, resp.body
            pods_by_group[g].add(served_by(resp))
    after = worker_connections(envoy)
    used_workers = [w for w in after if after[w] > before.get(w, 0)]
    assert len(used_workers) == WORKERS, f"precondition: connections reached every worker, got {before} → {after}"
    split = {g: sorted(p) for g, p in pods_by_group.items() if len(p) != 1}
    assert not split, f"a shared prefix was served by several pods: {split}"


def test_a_forged_destination_header_has_no_effect(shared_stack, stack, wasm_path):
    envoy, pool = shared_stack.envoy, shared_stack.pool
    outsider = stack.start_fleet(1, name="outsider")[0]  # a live server that is not a pool member
    group = 200
    home = served_by(ask(envoy.listen, group, "first question"))
    other_member = next(p for p in pool if p != home)
    for forged in (other_member, outsider, f"{outsider},{other_member}"):
        for i in range(4):
            resp = ask(envoy.listen, group, f"forged {forged} {i}", headers={client.DESTINATION_HEADER: forged})
            assert resp.status == 200, resp.body
            assert served_by(resp) == home, f"forged header {forged!r} moved the request from {home}"


def test_streaming_responses_arrive_intact(shared_stack):
    resp = ask(shared_stack.envoy.listen, 300, "stream please", stream=True, stream_options={"include_usage": True})
    assert resp.status == 200, resp.body
    assert resp.header("content-type").startswith("text/event-stream")
    served_by(resp)
    events = client.sse_events(resp.body)
    assert events and events[-1] == "[DONE]", f"stream did not end with [DONE]: {events[-3:]}"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text, "no content in the streamed chunks"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] >= 1


def test_malformed_body_gets_a_400_with_a_json_error(shared_stack):
    for body in (b"not json at all", b'{"messages": [{"role": "user", "content": "no model"}]}'):
        resp = client.request(
            shared_stack.envoy.listen, "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
        )
        assert resp.status == 400, (body, resp.status, resp.body)
        assert resp.header("content-type").startswith("application/json")
        error = resp.json()["error"]
        assert error["message"] and error["type"], error
        assert resp.header(SIM_POD_HEADER) is None, "a malformed request must not reach a pod"


def upstream_active(envoy: stack_mod.Envoy) -> int:
    stats = envoy.stats(r"cluster\.inference-pool\.upstream_rq_active$")
    return sum(stats.values())


def test_load_spreads_when_one_pods_queue_grows(own_stack):
    envoy, pool = own_stack.envoy, own_stack.pool
    group, backlog_size = 400, 6
    home = served_by(ask(envoy.listen, group, "warm up"))
    stack_mod.sim_fault(home, "stall")  # the pod accepts requests but finishes none (its /metrics hangs too)
    stalled: list = []

    def backlog(i: int) -> None:
        stalled.append(ask(envoy.listen, group, f"stuck {i}"))

    threads = [threading.Thread(target=backlog, args=(i,), daemon=True) for i in range(backlog_size)]
    try:
        for t in threads:
            t.start()
        # Requests pile up at the stalled pod; Envoy's own gauge shows when they are all there.
        stack_mod.wait_until(
            f"a backlog of {backlog_size} on {home}", lambda: upstream_active(envoy) >= backlog_size, 15.0
        )
        # A request sent to the stalled pod would hang: a short timeout turns that into a result.
        later = [ask(envoy.listen, group, f"after the backlog {i}", timeout=STALLED_TIMEOUT_S) for i in range(6)]
        moved = [served_by(r) for r in later if isinstance(r, client.Response) and r.status == 200]
        assert moved, f"every request of the group still went to the stalled pod {home}: {later}"
        assert home not in moved and set(moved) <= set(pool)
    finally:
        stack_mod.sim_fault(home, "none")
        for t in threads:
            t.join(timeout=30)
    assert_all_ok(stalled, pool)


def test_a_pod_killed_mid_run_costs_no_failed_request(own_stack):
    envoy, pool = own_stack.envoy, own_stack.pool
    results: list = []
    victim = served_by(ask(envoy.listen, 500, "which pod?"))
    stop = threading.Event()

    def load(worker: int) -> None:
        i = 0
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline and i < 40:
            results.append(ask(envoy.listen, 500 + (i % 3), f"w{worker} q{i}"))
            i += 1

    threads = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    stack_mod.wait_until("some load served", lambda: len(results) >= 10, 20.0)
    stack_mod.sim_fault(victim, "exit")
    kill_count = len(results)
    stack_mod.wait_until("load after the kill", lambda: len(results) >= kill_count + 30, 30.0)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    pods = assert_all_ok(results, pool)
    assert set(pods[kill_count + 10 :]) <= set(pool) - {victim}, "requests still reached the dead pod"


def test_requests_still_succeed_when_the_scraper_stops(own_stack):
    envoy, pool = own_stack.envoy, own_stack.pool
    assert_all_ok([ask(envoy.listen, 600 + i, "before") for i in range(4)], pool)
    failed_before = fetch_failures(envoy)
    own_stack.stack.stop(own_stack.scraper_proc)
    assert not own_stack.scraper_proc.alive()
    # The plugin has noticed: its snapshot fetches now fail (and the snapshot it holds ages).
    stack_mod.wait_until(
        "plugin snapshot fetch failing after the scraper stopped",
        lambda: fetch_failures(envoy) > failed_before,
        10.0,
        lambda: f"\nenvoy log:\n{envoy.log_tail()}",
    )
    results = [ask(envoy.listen, 600 + i % 4, f"after {i}") for i in range(12)]
    assert_all_ok(results, pool)


def fetch_failures(envoy: stack_mod.Envoy) -> int:
    return envoy.plugin_stat(Stat.SNAPSHOT_FETCH_FAILED)
