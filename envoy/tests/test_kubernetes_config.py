"""The `kubernetes` scenario (what the gateway pod runs) actually routes: a STRICT_DNS pool resolved
from a name, no static endpoints in the plugin configuration (the pool comes only from the scraper
sidecar's snapshot). Here the "headless Service" is `localhost:<pod port>` and the listener is on
loopback instead of 0.0.0.0."""

from __future__ import annotations

import json

import client
import prom
import stack as stack_mod
from names import Header, Stat, envoy_prometheus_name

SIM_POD_HEADER = Header.SIM_POD
ENDPOINT_STATS = r"wis\.endpoint\."


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
    # Stats reach Envoy on the plugin's tick, so wait for the count rather than read it once.
    stack_mod.wait_until(
        "5 decisions for the pod counted",
        lambda: envoy.plugin_stat(Stat.endpoint_decisions(pod)) >= 5,
        10.0,
        lambda: f"\n{envoy.stats(ENDPOINT_STATS)}",
    )


def _plugin_config(path) -> str:
    import yaml

    config = yaml.safe_load(path.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]


def test_the_stats_listener_serves_prometheus_text_and_nothing_else_of_the_admin(stack, wasm_path):
    """What PodMonitoring scrapes: /stats/prometheus on its own listener (the admin stays on
    loopback); the rest of the admin API is not reachable through it."""
    pod = stack.start_fleet(1)[0]
    scraper = stack.start_scraper([pod])
    port = pod.rsplit(":", 1)[1]
    envoy = stack.start_envoy("kubernetes", [], pool_dns=f"localhost:{port}", scraper=scraper, wasm=wasm_path,
                              stats_listen=True)
    stack_mod.wait_until(
        "a request served through the kubernetes config",
        lambda: client.chat(envoy.listen, client.conversation("sys", "hi"), max_tokens=4).status == 200,
        20.0,
        lambda: f"\nenvoy log:\n{envoy.log_tail()}",
    )
    resp = client.request(envoy.stats_listen, "GET", "/stats/prometheus")
    assert resp.status == 200, resp.body[:300]
    samples = prom.parse(resp.body.decode())
    assert (prom.value(samples, "envoy_cluster_upstream_rq_total", envoy_cluster_name="inference-pool") or 0) >= 1

    def plugin_stats_exported() -> bool:
        text = client.request(envoy.stats_listen, "GET", "/stats/prometheus").body.decode()
        return (prom.value(text, envoy_prometheus_name(Stat.endpoint_decisions(pod))) or 0) >= 1

    stack_mod.wait_until("the plugin's stats in /stats/prometheus", plugin_stats_exported, 10.0)
    for method, path in [("GET", "/config_dump"), ("POST", "/quitquitquit"), ("GET", "/stats"),
                         ("POST", "/stats/prometheus"), ("GET", "/ready")]:
        assert client.request(envoy.stats_listen, method, path).status == 404, f"{method} {path} reached the admin"
    assert stack_mod.http_get(envoy.admin, "/ready")[0] == 200, "Envoy is still up"
