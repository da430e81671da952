"""The `kubernetes` scenario (what the gateway pod runs) actually routes: a STRICT_DNS pool resolved
from a name, no static endpoints in the plugin configuration (the pool comes only from the scraper
sidecar's snapshot). Here the "headless Service" is `localhost:<pod port>` and the listener is on
loopback instead of 0.0.0.0."""

from __future__ import annotations

import json

import client
import stack as stack_mod
from names import Header, Stat

SIM_POD_HEADER = Header.SIM_POD


def test_kubernetes_scenario_routes_to_the_pod_the_dns_name_resolves_to(stack, wasm_path):
    pod = stack.start_fleet(1)[0]
    scraper = stack.start_scraper([pod])
    port = pod.rsplit(":", 1)[1]
    envoy = stack.start_envoy("kubernetes", [], pool_dns=f"localhost:{port}", scraper=scraper, wasm=wasm_path)

    plugin = json.loads(_plugin_config(envoy.config_path))
    assert plugin["pool"]["endpoints"] == [], "the kubernetes config must not carry a static pool"

    # Until the first snapshot reaches the plugin and DNS has resolved, a request may get a 503
    # (no ready endpoint); poll for the first success, then require every request to succeed.
    def served() -> bool:
        return client.chat(envoy.listen, client.conversation("sys", "hi"), max_tokens=4).status == 200

    stack_mod.wait_until("first request served through the kubernetes config", served, 20.0,
                         lambda: f"\nenvoy log:\n{envoy.log_tail()}")
    for i in range(5):
        resp = client.chat(envoy.listen, client.conversation("sys", f"q{i}"), max_tokens=4)
        assert resp.status == 200, resp.body
        assert resp.header(SIM_POD_HEADER) == pod
    # The plugin itself picked the pod (from the scraper's snapshot), not Envoy's fallback policy.
    assert envoy.plugin_stat(Stat.endpoint_decisions(pod)) >= 5, envoy.stats(r"wis\.endpoint\.")


def _plugin_config(path) -> str:
    import yaml

    config = yaml.safe_load(path.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
