"""Issue #3's check: the plugin loaded into a real Envoy in front of a static pool of two local
HTTP servers (no simulator, no scraper). A chat request gets `x-gateway-destination-endpoint` set
to a pool member and is served by that member."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import client
import stack as stack_mod
from backends import SERVED_BY_HEADER, start_backend
from names import Header, Stat


@pytest.fixture
def pool():
    backends = [start_backend(), start_backend()]
    yield backends
    for b in backends:
        b.stop()


@pytest.fixture
def envoy(stack, pool, wasm_path):
    return stack.start_envoy("plugin", [b.address for b in pool], workers=2, wasm=wasm_path)


def picked(header: str | None) -> list[str]:
    return [h.strip() for h in (header or "").split(",") if h.strip()]


def test_chat_request_is_served_by_the_pool_member_the_plugin_named(envoy, pool):
    members = {b.address for b in pool}
    resp = client.chat(envoy.listen, client.conversation("You are terse.", "Say hi."))
    assert resp.status == 200, resp.body
    served_by = resp.header(SERVED_BY_HEADER)
    assert served_by in members
    assert resp.json()["served_by"] == served_by

    seen = [r for b in pool for r in b.seen if r.path == "/v1/chat/completions"]
    assert len(seen) == 1, "exactly one pool member saw the request"
    destination = picked(seen[0].headers.get(client.DESTINATION_HEADER))
    assert destination, f"the plugin set no {client.DESTINATION_HEADER}; upstream saw headers {seen[0].headers}"
    assert set(destination) <= members, f"destination {destination} names a host outside the pool {members}"
    assert destination[0] == served_by, "the primary the plugin named is the member that served"
    assert json.loads(seen[0].body)["messages"][1]["content"] == "Say hi.", "the body reached the pod unchanged"


def test_forged_destination_outside_the_pool_never_reaches_the_upstream(envoy, pool):
    members = {b.address for b in pool}
    for _ in range(4):
        resp = client.chat(
            envoy.listen,
            client.conversation("You are terse.", "Say hi."),
            headers={client.DESTINATION_HEADER: "10.255.0.1:80"},
        )
        assert resp.status == 200, resp.body
        assert resp.header(SERVED_BY_HEADER) in members
    for b in pool:
        for r in b.seen:
            assert "10.255.0.1:80" not in r.headers.get(client.DESTINATION_HEADER, "")
            assert set(picked(r.headers.get(client.DESTINATION_HEADER))) <= members


def test_requests_outside_the_inference_paths_pass_through_without_a_pick(envoy, pool):
    resp = client.request(envoy.listen, "GET", "/health")
    assert resp.status == 200
    seen = [r for b in pool for r in b.seen if r.path == "/health"]
    assert len(seen) == 1
    assert client.DESTINATION_HEADER not in seen[0].headers


def test_malformed_body_gets_a_400_with_an_openai_error_and_reaches_no_pod(envoy, pool):
    resp = client.request(
        envoy.listen, "POST", "/v1/chat/completions", b'{"model": "x", "messages": [', {"content-type": "application/json"}
    )
    assert resp.status == 400, resp.body
    error = resp.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"]
    assert not [r for b in pool for r in b.seen if r.path == "/v1/chat/completions"]


def test_a_renamed_destination_header_still_routes_to_the_member_the_plugin_named(stack, pool, wasm_path):
    """An operator sets `headers.destination` in the plugin configuration: the plugin writes that
    header and Envoy's override_host reads the same one. With the protocol's name left in
    override_host, Envoy's round-robin fallback would serve about half of these elsewhere."""
    renamed = "x-picked-endpoint"
    members = {b.address for b in pool}
    envoy = stack.start_envoy(
        "plugin", sorted(members), workers=2, wasm=wasm_path, plugin_config={"headers": {"destination": renamed}}
    )
    for i in range(8):
        resp = client.chat(envoy.listen, client.conversation("You are terse.", f"Question {i}?"))
        assert resp.status == 200, resp.body
    seen = [r for b in pool for r in b.seen if r.path == "/v1/chat/completions"]
    assert len(seen) == 8
    for b in pool:
        for r in b.seen:
            destination = picked(r.headers.get(renamed))
            assert destination, f"the plugin set no {renamed}; upstream saw headers {r.headers}"
            assert destination[0] == b.address, f"named {destination[0]}, served by {b.address}"
            assert client.DESTINATION_HEADER not in r.headers
    # The plugin hands its stats to Envoy on its tick: wait for the count, then pin it.
    stack_mod.wait_until("8 decisions counted", lambda: envoy.plugin_stat(Stat.DECISIONS) >= 8, 10.0)
    assert envoy.plugin_stat(Stat.DECISIONS) == 8


def test_json_debug_header_and_decision_log_carry_the_whole_decision(stack, pool, wasm_path):
    """What the decision view reads: with `debugHeader: "json"`, the response names the decision
    and Envoy's JSON decision log holds one line per request with every endpoint's scores."""
    members = {b.address for b in pool}
    envoy = stack.start_envoy(
        "plugin",
        sorted(members),
        workers=2,
        wasm=wasm_path,
        plugin_config={"debugHeader": "json"},
        decision_log=True,
    )
    resp = client.chat(envoy.listen, client.conversation("You are terse.", "Say hi."))
    assert resp.status == 200, resp.body
    decision = json.loads(resp.header(Header.DEBUG))
    assert decision["primary"] == resp.header(SERVED_BY_HEADER)
    assert {row["address"] for row in decision["scores"]} == members
    for row in decision["scores"]:
        assert {s["scorer"] for s in row["scores"]} >= {"prefix-cache-scorer", "queue-scorer"}, row

    bad = client.request(
        envoy.listen, "POST", "/v1/chat/completions", b"{not json", {"content-type": "application/json"}
    )
    assert bad.status == 400

    # Envoy writes access logs asynchronously; both requests' lines must arrive.
    lines = wait_for_lines(envoy.decision_log, 2)
    ok, rejected = lines
    assert ok["status"] == 200 and ok["path"] == "/v1/chat/completions"
    assert json.loads(ok["decision"]) == decision
    assert ok["upstream"] == decision["primary"]
    assert picked(ok["picked"])[0] == decision["primary"]
    assert rejected["status"] == 400 and rejected["decision"] in (None, "-")


def wait_for_lines(path: Path, count: int) -> list[dict]:
    def ready() -> bool:
        return path.is_file() and len(path.read_text().splitlines()) >= count

    stack_mod.wait_until(f"{count} lines in {path}", ready, 10.0)
    return [json.loads(line) for line in path.read_text().splitlines()]
