"""Envoy (2 workers) + wis-epp over ext_proc + a simulated vLLM fleet, end to end.

The scenario `wis-epp` wires Envoy the way GAIE's reference gateway drives an Endpoint Picker:
ext_proc with FULL_DUPLEX_STREAMED bodies and `failure_mode_allow` (fail-open), TLS to the picker's
self-signed certificate, the pool cluster's override_host policy reading the decision from the
`envoy.lb` dynamic metadata, retries walking its fallback list. Each simulated pod names itself in
`x-sim-pod`, so every routing assertion reads where a request was really served."""

from __future__ import annotations

import json
import threading

import pytest

import client
import render
import stack as stack_mod
from load import SteadyLoad, assert_all_ok, served_by
from names import Header

SIM_POD_HEADER = Header.SIM_POD
PODS = 3
WORKERS = 2
# Long enough that a conversation's prefix covers many cache blocks (16 tokens x 4 chars each).
SYSTEM_PROMPT_CHARS = 3000
MAX_TOKENS = 8


def system_prompt(group: int) -> str:
    words = [f"group{group}-rule{i}: answer carefully and cite section {group}.{i}." for i in range(400)]
    return " ".join(words)[:SYSTEM_PROMPT_CHARS]


def ask(address: str, group: int, question: str, headers: dict[str, str] | None = None, **extra) -> client.Response:
    messages = client.conversation(system_prompt(group), question)
    return client.chat(address, messages, headers=headers, max_tokens=extra.pop("max_tokens", MAX_TOKENS), **extra)


class Running:
    """A fleet, wis-epp scraping it in-process, and Envoy calling wis-epp."""

    def __init__(self, stack: stack_mod.Stack, pods: int = PODS, fleet_args=(), plugin_config=None):
        self.stack = stack
        self.pool = stack.start_fleet(pods, ["--enable-prompt-tokens-details", *fleet_args])
        self.epp = stack.start_epp(self.pool, plugin_config=plugin_config)
        self.envoy = stack.start_envoy("wis-epp", self.pool, ext_proc=self.epp.grpc, workers=WORKERS)

    def wait_for_healthy_pool(self) -> None:
        """Until wis-epp has scraped every pod healthy."""
        stack_mod.wait_until(
            "wis-epp sees every pod healthy",
            lambda: self.epp.metric("wis_epp_endpoints", state="healthy") == len(self.pool),
            15.0,
            self.epp.process.failure_note,
        )


@pytest.fixture(scope="module")
def shared_stack():
    """One stack for the stories that break nothing (starting one costs a few seconds)."""
    run_dir = stack_mod.RunDir.create("epp-shared", base=stack_mod.ROOT / ".run" / "tests")
    with stack_mod.Stack(run_dir) as s:
        running = Running(s)
        running.wait_for_healthy_pool()
        yield running


@pytest.fixture
def own_stack(stack):
    running = Running(stack)
    running.wait_for_healthy_pool()
    return running


def test_the_scenario_is_gaies_reference_wiring():
    config = render.render(render.RenderOptions(scenario="wis-epp", pool=["127.0.0.1:9001"], ext_proc="127.0.0.1:9002"))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = hcm["http_filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ], "the client's destination header goes before the picker runs"
    ext_proc = filters[1]["typed_config"]
    assert ext_proc["failure_mode_allow"] is True
    assert ext_proc["processing_mode"]["request_body_mode"] == "FULL_DUPLEX_STREAMED"
    assert ext_proc["processing_mode"]["response_body_mode"] == "FULL_DUPLEX_STREAMED"
    assert ext_proc["metadata_options"]["receiving_namespaces"]["untyped"] == ["envoy.lb"]
    assert "envoy.lb.subset_hint" in ext_proc["metadata_options"]["forwarding_namespaces"]["untyped"]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    picker = clusters[render.EXT_PROC_CLUSTER]
    assert picker["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    assert picker["health_checks"][0]["grpc_health_check"]["service_name"] == render.EPP_HEALTH_SERVICE
    lb = clusters["inference-pool"]["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    sources = lb["typed_config"]["override_host_sources"]
    assert sources == [{"metadata": {"key": "envoy.lb", "path": [{"key": Header.DESTINATION}]}}]


def test_requests_reach_only_pool_members(shared_stack):
    calls = [(shared_stack.envoy.listen, i % 5, f"question {i}") for i in range(30)]
    results = client.parallel(ask, calls, workers=6)
    assert len(assert_all_ok(results, shared_stack.pool)) == 30


def test_a_conversations_follow_up_turns_land_on_its_pod(shared_stack):
    envoy = shared_stack.envoy.listen
    homes: dict[int, set[str]] = {}
    for conv in range(4):
        messages = client.conversation(system_prompt(700 + conv), "first question")
        pods = set()
        for turn in range(4):
            resp = client.chat(envoy, messages, max_tokens=MAX_TOKENS)
            assert resp.status == 200, resp.body
            pods.add(served_by(resp))
            reply = resp.json()["choices"][0]["message"]["content"]
            messages = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": f"turn {turn}"}]
        homes[conv] = pods
    split = {c: sorted(p) for c, p in homes.items() if len(p) != 1}
    assert not split, f"a conversation's turns were served by several pods: {split}"


def test_the_pods_cached_tokens_reach_the_picker(shared_stack):
    envoy, epp = shared_stack.envoy.listen, shared_stack.epp
    before = epp.metric("wis_epp_prefix_feedback_total")
    confirmed_before = epp.metric("wis_epp_prefix_predictions_total", outcome="confirmed")
    for i in range(3):
        assert ask(envoy, 800, f"again {i}").status == 200
    streamed = ask(envoy, 800, "stream it", stream=True, stream_options={"include_usage": True})
    assert streamed.status == 200 and client.sse_events(streamed.body)[-1] == "[DONE]"
    stack_mod.wait_until(
        "feedback counted", lambda: epp.metric("wis_epp_prefix_feedback_total") >= before + 4, 5.0
    )
    assert epp.metric("wis_epp_prefix_predictions_total", outcome="confirmed") > confirmed_before, (
        "the follow-ups were predicted cached and the pod confirmed it"
    )
    stack_mod.wait_until("every request released", lambda: epp.metric("wis_epp_in_flight_requests") == 0, 5.0)


def test_a_forged_destination_header_has_no_effect(shared_stack, stack):
    envoy, pool = shared_stack.envoy.listen, shared_stack.pool
    outsider = stack.start_fleet(1, name="outsider")[0]  # a live server that is not a pool member
    home = served_by(ask(envoy, 900, "first question"))
    other_member = next(p for p in pool if p != home)
    for forged in (other_member, outsider, f"{outsider},{other_member}"):
        for i in range(3):
            resp = ask(envoy, 900, f"forged {forged} {i}", headers={Header.DESTINATION: forged})
            assert resp.status == 200, resp.body
            assert served_by(resp) == home, f"forged header {forged!r} moved the request from {home}"


def test_malformed_body_gets_a_400_with_a_json_error(shared_stack):
    for body in (b"not json at all", b'{"messages": [{"role": "user", "content": "no model"}]}'):
        resp = client.request(
            shared_stack.envoy.listen, "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
        )
        assert resp.status == 400, (body, resp.status, resp.body)
        assert resp.header("content-type").startswith("application/json")
        error = resp.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error", error
        assert resp.header(SIM_POD_HEADER) is None, "a malformed request must not reach a pod"


def test_a_pod_killed_mid_run_costs_no_failed_request(own_stack):
    pool = own_stack.pool
    with SteadyLoad(own_stack.envoy.listen) as load:
        load.wait_for(10, "some load served")
        victim = load.served()[0]
        stack_mod.sim_fault(victim, "exit")
        kill_count = load.count()
        load.wait_for(30, "load after the kill")
    assert load.failures() == [], load.report()
    assert set(load.served()) <= set(pool), "every request was served by a pool member"
    assert set(load.served(kill_count + 10)) <= set(pool) - {victim}, "requests still reached the dead pod"
    # Requests whose primary was the dead pod were retried on a fallback, and Envoy's
    # upstream.address attribute told wis-epp so (their in-flight count and prefix moved).
    assert own_stack.epp.metric("wis_epp_served_elsewhere_total") > 0
    stack_mod.wait_until("every request released", lambda: own_stack.epp.metric("wis_epp_in_flight_requests") == 0, 5.0)


def test_requests_fail_open_to_envoys_fallback_when_wis_epp_is_killed(own_stack):
    envoy, pool = own_stack.envoy, own_stack.pool
    healthy = r"cluster\.ext-proc\.membership_healthy$"
    # Envoy's gRPC health check (over TLS, service envoy.service.ext_proc.v3.ExternalProcessor) passes.
    assert envoy.stats(healthy).get("cluster.ext-proc.membership_healthy") == 1
    assert_all_ok([ask(envoy.listen, 1000 + i, "before") for i in range(3)], pool)
    own_stack.stack.stop(own_stack.epp.process)
    assert not own_stack.epp.process.alive()
    # Envoy fails a FULL_DUPLEX_STREAMED stream open only once it knows the picker is down (see
    # render.EPP_HEALTH_INTERVAL): its health check says so within about a second.
    stack_mod.wait_until(
        "Envoy marks wis-epp unhealthy",
        lambda: envoy.stats(healthy).get("cluster.ext-proc.membership_healthy") == 0,
        10.0,
    )
    results = [ask(envoy.listen, 1000 + i % 3, f"after {i}") for i in range(12)]
    pods = assert_all_ok(results, pool)
    assert len(set(pods)) > 1, "with no decision, the fallback policy (round robin) spreads the requests"
    failed_open = sum(envoy.stats(r"ext_proc\.failure_mode_allowed$").values())
    assert failed_open >= len(results), f"Envoy failed every request open ({failed_open} counted)"


def test_a_sheddable_request_on_a_saturated_pool_gets_429(stack):
    # One pod that runs one request at a time, and a profile that calls a queue of 2 saturated: three
    # long generations make the pool saturated by fresh signals (its queue and our in-flight count).
    config = {
        "objectives": {"batch": -1},
        "endpointPickerConfig": {
            "plugins": [
                {"type": "saturation-filter", "parameters": {"queueThreshold": 2}},
                {"type": "queue-scorer"},
                {"type": "max-score-picker"},
            ]
        },
    }
    running = Running(stack, pods=1, fleet_args=["--max-num-seqs", "1"], plugin_config=config)
    running.wait_for_healthy_pool()
    envoy, pod = running.envoy.listen, running.pool[0]
    backlog: list = []

    def long_generation(i: int) -> None:
        backlog.append(ask(envoy, 1100, f"long {i}", max_tokens=500, ignore_eos=True))

    threads = [threading.Thread(target=long_generation, args=(i,), daemon=True) for i in range(3)]
    try:
        for t in threads:
            t.start()
        stack_mod.wait_until("a queue on the pod", lambda: stack_mod.sim_waiting(pod) >= 2, 10.0)
        shed = ask(envoy, 1100, "batch job", headers={Header.OBJECTIVE: "batch"})
        assert shed.status == 429, (shed.status, shed.body[:300])
        assert shed.json()["error"]["code"] == "pool_saturated"
        assert shed.header(SIM_POD_HEADER) is None, "a shed request never reaches a pod"
        normal = ask(envoy, 1100, "interactive", timeout=60)
        assert normal.status == 200 and served_by(normal) == pod, "a request that may not be shed is served"
    finally:
        for t in threads:
            t.join(timeout=60)
    assert_all_ok(backlog, running.pool)
    assert running.epp.metric("wis_epp_local_replies_total", status="429") == 1
