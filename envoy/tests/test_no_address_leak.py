"""No response header to a client names or encodes a pool address (ip:port, hex, base64, in any
token of any header) unless the operator turned `debugHeader` on; then only the debug header does.
Every response header of real-Envoy runs is checked: chat, streamed chat, completions, a pass-through
path, a malformed body, forged headers, and with session affinity on, its token sent back."""

from __future__ import annotations

import base64
import json

import pytest

import client
import stack as stack_mod
from leaks import leaking_headers, reveals
from names import Header, Stat

PODS = 3
# The simulated pods' own marker header (set by the pod, not by the gateway; a real vLLM sends none).
POD_OWN_HEADERS = {Header.SIM_POD}
SESSION_SECRET = "test-only-session-secret-0123456789abcdef"

SECRET_ENV = "WIS_SESSION_SECRET"


def session_profile(parameters: dict) -> dict:
    """A profile with session-affinity-scorer (with these parameters) besides the default scorers."""
    plugins = [("session-affinity-scorer", 1), ("prefix-cache-scorer", 3), ("queue-scorer", 2)]
    return {
        "endpointPickerConfig": {
            "plugins": [
                {"type": "session-affinity-scorer", "parameters": parameters},
                {"type": "prefix-cache-scorer"},
                {"type": "queue-scorer"},
                {"type": "max-score-picker"},
            ],
            "schedulingProfiles": [
                {
                    "name": "default",
                    "plugins": [{"pluginRef": p, "weight": w} for p, w in plugins] + [{"pluginRef": "max-score-picker"}],
                }
            ],
        }
    }


def exchanges(envoy_address: str, pool: list[str], session: str | None = None) -> list[tuple[str, client.Response]]:
    """One of every kind of exchange a client can have with the gateway."""
    conv = client.conversation("You are terse. " * 40, "Say hi.")
    forged_token = base64.b64encode(pool[0].encode()).decode()
    out = [
        ("chat", client.chat(envoy_address, conv, max_tokens=4)),
        ("stream", client.chat(envoy_address, conv, max_tokens=4, stream=True, stream_options={"include_usage": True})),
        ("completion", client.request(envoy_address, "POST", "/v1/completions",
                                      json.dumps({"model": client.MODEL, "prompt": "Hello", "max_tokens": 4}).encode(),
                                      {"content-type": "application/json"})),
        ("pass-through", client.request(envoy_address, "GET", "/v1/models")),
        ("malformed", client.request(envoy_address, "POST", "/v1/chat/completions", b"{not json",
                                     {"content-type": "application/json"})),
        ("forged destination", client.chat(envoy_address, conv, max_tokens=4,
                                           headers={Header.DESTINATION: pool[-1]})),
        ("forged session", client.chat(envoy_address, conv, max_tokens=4, headers={Header.SESSION: forged_token})),
    ]
    if session:
        out.append(("session sent back", client.chat(envoy_address, conv, max_tokens=4, headers={Header.SESSION: session})))
        tampered = session[:-1] + ("A" if session[-1] != "A" else "B")
        out.append(("session tampered", client.chat(envoy_address, conv, max_tokens=4, headers={Header.SESSION: tampered})))
    return out


def leaks(resp: client.Response, pool: list[str]) -> dict[str, list[str]]:
    return leaking_headers([(k, v) for k, v in resp.header_lines if k not in POD_OWN_HEADERS], pool)


@pytest.fixture(scope="module")
def fleet_stack(wasm_path):
    run_dir = stack_mod.RunDir.create("no-address-leak", base=stack_mod.ROOT / ".run" / "tests")
    with stack_mod.Stack(run_dir) as s:
        pool = s.start_fleet(PODS)
        scraper = s.start_scraper(pool)
        yield s, pool, scraper


def start(fleet_stack, wasm_path, plugin_config, name, env=None):
    s, pool, scraper = fleet_stack
    return s.start_envoy("plugin", pool, scraper=scraper, workers=2, wasm=wasm_path, plugin_config=plugin_config,
                         name=name, env=env)


@pytest.mark.parametrize(
    "variant,plugin_config,env",
    [
        ("default", {}, None),
        ("session-affinity", session_profile({"secret": SESSION_SECRET, "ttlSeconds": 600}), None),
        # The key from Envoy's environment, passed into the VM (render.py: vm_config host_env_keys).
        ("session-affinity-secret-env", session_profile({"secretEnv": SECRET_ENV}), {SECRET_ENV: SESSION_SECRET}),
    ],
    ids=["default", "session-affinity", "session-affinity-secret-env"],
)
def test_no_response_header_reveals_a_pool_address_without_the_debug_header(
    fleet_stack, wasm_path, variant, plugin_config, env
):
    _, pool, _ = fleet_stack
    envoy = start(fleet_stack, wasm_path, plugin_config, f"envoy-{variant}", env)
    first = client.chat(envoy.listen, client.conversation("You are terse.", "Hi."), max_tokens=4)
    assert first.status == 200, first.body
    token = first.header(Header.SESSION)
    if variant == "default":
        assert token is None, "no session token without session-affinity-scorer in the profile"
    else:
        assert token, "session-affinity-scorer in the profile: the response carries a session token"
    for kind, resp in [("first", first), *exchanges(envoy.listen, pool, token)]:
        assert resp.status in (200, 400), (kind, resp.status, resp.body[:300])
        assert not leaks(resp, pool), f"{variant}/{kind}: headers reveal pool addresses: {leaks(resp, pool)}"
        if variant == "default":
            assert resp.header(Header.SESSION) is None, f"{kind}: a session token without session affinity"
    if variant != "default":
        # The token sent back was accepted; the forged and the tampered ones were ignored and counted.
        stack_mod.wait_until(
            "session tokens counted",
            lambda: envoy.plugin_stat(Stat.SESSION_ACCEPTED) >= 1 and envoy.plugin_stat(Stat.SESSION_INVALID) >= 2,
            10.0,
            lambda: f"\n{envoy.stats('wis.session')}",
        )


@pytest.mark.parametrize("debug", [True, "json"], ids=["summary", "json"])
def test_with_the_debug_header_on_only_the_debug_header_names_the_pod(fleet_stack, wasm_path, debug):
    _, pool, _ = fleet_stack
    envoy = start(fleet_stack, wasm_path, {"debugHeader": debug}, f"envoy-debug-{debug}")
    for kind, resp in exchanges(envoy.listen, pool):
        found = leaks(resp, pool)
        if kind in ("pass-through", "malformed"):
            assert not found, f"{kind}: {found}"
        else:
            assert resp.status == 200, (kind, resp.body[:300])
            assert set(found) == {Header.DEBUG}, f"{kind}: expected only {Header.DEBUG} to name the pod, got {found}"
            assert resp.header(Header.SIM_POD) in found[Header.DEBUG], "the debug header names the pod that served"


ADDRESS = "10.1.2.3:8000"


@pytest.mark.parametrize(
    "value",
    [
        ADDRESS,
        f"endpoint={ADDRESS}; cached=3",
        "10.1.2.3%3A8000",
        ADDRESS.encode().hex(),
        ADDRESS.encode().hex().upper(),
        "v1." + base64.b64encode(ADDRESS.encode() + b"|1764000000").decode(),
        base64.urlsafe_b64encode(b"\x00\xff" + ADDRESS.encode()).decode().rstrip("="),
        bytes([10, 1, 2, 3, 0x1F, 0x40]).hex(),
        base64.b64encode(bytes([10, 1, 2, 3, 0x1F, 0x40]) + b"expiry-and-mac-follow").decode(),
    ],
)
def test_the_leak_check_finds_every_encoding_of_an_address(value):
    assert reveals(value, ADDRESS)


@pytest.mark.parametrize(
    "value",
    ["10.1.2.3:8001", "10.1.2.30:8000", "v1.Zm9vYmFyYmF6cXV4", "0123456789abcdef" * 4, "max-age=3600", "8000"],
)
def test_the_leak_check_ignores_what_does_not_reveal_the_address(value):
    assert not reveals(value, ADDRESS)
