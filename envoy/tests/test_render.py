"""render.py: every scenario renders the structure it promises, bad options are refused with a
message, and Envoy itself accepts each rendered config (`envoy --mode validate`, which also loads
the plugin .wasm and hands it its configuration)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import render
from names import Header

POOL = ["127.0.0.1:9001", "127.0.0.1:9002"]
RENDER = [sys.executable, str(Path(render.__file__))]


def options(scenario: str, **kw) -> render.RenderOptions:
    base = dict(
        scenario=scenario,
        listen="127.0.0.1:10000",
        admin="127.0.0.1:9901",
        pool=list(POOL),
        wasm="/tmp/plugin.wasm",
    )
    if scenario == "kubernetes":
        base.update(pool=[], pool_dns="vllm-pool.default.svc.cluster.local:8000", listen="0.0.0.0:8081",
                    scraper="127.0.0.1:9090", wasm=render.KUBERNETES_WASM_PATH, stats_listen="0.0.0.0:9091")
    if scenario == "ext-proc":
        base.update(ext_proc="127.0.0.1:9100")
    base.update(kw)
    return render.RenderOptions(**base)


def hcm(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def filter_names(config: dict) -> list[str]:
    return [f["name"] for f in hcm(config)["http_filters"]]


def cluster(config: dict, name: str) -> dict:
    found = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    assert len(found) == 1, f"expected one cluster {name}, got {[c['name'] for c in config['static_resources']['clusters']]}"
    return found[0]


def lb_policy_name(c: dict) -> str:
    return c["load_balancing_policy"]["policies"][0]["typed_extension_config"]["name"]


def route(config: dict) -> dict:
    return hcm(config)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]


def member_addresses(c: dict) -> list[str]:
    eps = c["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [f"{e['endpoint']['address']['socket_address']['address']}:"
            f"{e['endpoint']['address']['socket_address']['port_value']}" for e in eps]


def test_plugin_scenario_has_the_wasm_filter_before_the_router_with_body_access_and_fail_closed():
    config = render.render(options("plugin", scraper="127.0.0.1:9090"))
    assert filter_names(config) == ["envoy.filters.http.wasm", "envoy.filters.http.router"]
    wasm = hcm(config)["http_filters"][0]["typed_config"]["config"]
    assert wasm["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert wasm["vm_config"]["code"]["local"]["filename"] == "/tmp/plugin.wasm"
    assert wasm["allow_on_headers_stop_iteration"] is True
    assert wasm["fail_open"] is False


def test_plugin_configuration_names_the_pool_and_the_scraper_cluster_and_merges_the_users_file():
    config = render.render(options("plugin", scraper="127.0.0.1:9090",
                                   plugin_config={"pool": {"refreshIntervalMs": 100}, "debugHeader": True}))
    wasm = hcm(config)["http_filters"][0]["typed_config"]["config"]
    plugin = json.loads(wasm["configuration"]["value"])
    assert plugin["pool"] == {"endpoints": POOL, "snapshotCluster": "scraper", "refreshIntervalMs": 100}
    assert plugin["debugHeader"] is True
    assert member_addresses(cluster(config, "scraper")) == ["127.0.0.1:9090"]


def test_plugin_configuration_carries_the_header_names_envoy_reads():
    config = render.render(options("plugin", decision_log="/tmp/decisions.jsonl"))
    wasm = hcm(config)["http_filters"][0]["typed_config"]["config"]
    plugin = json.loads(wasm["configuration"]["value"])
    assert plugin["headers"] == {"destination": Header.DESTINATION, "debug": Header.DEBUG}


def test_a_renamed_destination_header_is_what_override_host_and_the_logs_read():
    config = render.render(options("plugin", access_log="/tmp/access.log", decision_log="/tmp/decisions.jsonl",
                                   plugin_config={"headers": {"destination": "X-Picked-Endpoint",
                                                              "debug": "x-why"}}))
    plugin = json.loads(hcm(config)["http_filters"][0]["typed_config"]["config"]["configuration"]["value"])
    assert plugin["headers"] == {"destination": "X-Picked-Endpoint", "debug": "x-why"}
    lb = cluster(config, render.POOL_CLUSTER)["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert lb["typed_config"]["override_host_sources"] == [{"header": "x-picked-endpoint"}]
    text_log, json_log = hcm(config)["access_log"]
    assert "%REQ(x-picked-endpoint)%" in text_log["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    fields = json_log["typed_config"]["log_format"]["json_format"]
    assert fields["picked"] == "%REQ(x-picked-endpoint)%" and fields["decision"] == "%REQ(x-why)%"
    assert Header.DESTINATION not in json.dumps(config)


@pytest.mark.parametrize("headers", [{"destination": ""}, {"destination": "two words"}, {"debug": 7}, ["x"]])
def test_a_bad_header_name_in_the_plugin_configuration_is_refused(headers):
    with pytest.raises(render.RenderError, match="headers"):
        render.render(options("plugin", plugin_config={"headers": headers}))


def test_scenarios_without_the_plugin_keep_the_protocols_header():
    config = render.render(options("ext-proc", plugin_config={"headers": {"destination": "x-other"}}))
    lb = cluster(config, render.POOL_CLUSTER)["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert lb["typed_config"]["override_host_sources"] == [{"header": Header.DESTINATION}]


@pytest.mark.parametrize("name", render.SCENARIOS)
def test_each_scenario_renders_what_its_table_row_says(name):
    row = render.scenario(name)
    config = render.render(options(name, scraper="127.0.0.1:9090"))
    filters = filter_names(config)
    assert filters[-1] == "envoy.filters.http.router"
    assert len(filters) == (2 if row.http_filter else 1)
    assert ("envoy.filters.http.wasm" in filters) == row.needs_wasm
    assert ("envoy.filters.http.ext_proc" in filters) == row.needs_ext_proc
    pool = cluster(config, render.POOL_CLUSTER)
    assert pool["type"] == row.pool_kind
    assert lb_policy_name(pool) == f"envoy.load_balancing_policies.{row.lb.name}"
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert (render.SCRAPER_CLUSTER in clusters) == row.needs_scraper
    assert (render.EXT_PROC_CLUSTER in clusters) == row.needs_ext_proc
    assert ("retry_host_predicate" in route(config)["retry_policy"]) == (not row.lb.walks_fallbacks)
    if row.needs_wasm:
        with pytest.raises(render.RenderError, match="needs --wasm"):
            render.render(options(name, wasm=None))


def test_an_unknown_scenario_name_is_an_error_listing_the_table():
    with pytest.raises(render.RenderError, match="expected one of plugin, round-robin"):
        render.scenario("weighted")


def test_cli_defaults_come_from_the_scenario_row():
    opts, _, _ = render.options_from_args(["--scenario", "kubernetes", "--pool-dns", "svc:8000"])
    assert (opts.listen, opts.scraper, opts.wasm) == ("0.0.0.0:8081", "127.0.0.1:9090", render.KUBERNETES_WASM_PATH)
    opts, _, _ = render.options_from_args(["--scenario", "round-robin", "--pool", POOL[0]])
    assert (opts.listen, opts.scraper, opts.wasm) == ("127.0.0.1:10000", None, None)


def test_plugin_without_scraper_has_no_snapshot_cluster():
    config = render.render(options("plugin"))
    assert [c["name"] for c in config["static_resources"]["clusters"]] == [render.POOL_CLUSTER]
    wasm = hcm(config)["http_filters"][0]["typed_config"]["config"]
    assert "snapshotCluster" not in json.loads(wasm["configuration"]["value"])["pool"]


@pytest.mark.parametrize("scenario", ["plugin", "ext-proc", "no-filter", "kubernetes"])
def test_picker_scenarios_route_by_the_destination_header_with_round_robin_fallback(scenario):
    config = render.render(options(scenario))
    pool = cluster(config, render.POOL_CLUSTER)
    lb = pool["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert lb["name"] == "envoy.load_balancing_policies.override_host"
    assert lb["typed_config"]["override_host_sources"] == [{"header": Header.DESTINATION}]
    fallback = lb["typed_config"]["fallback_policy"]["policies"][0]["typed_extension_config"]["name"]
    assert fallback == "envoy.load_balancing_policies.round_robin"
    retry = route(config)["retry_policy"]
    assert set(retry["retry_on"].split(",")) >= {"connect-failure", "reset"}
    assert retry["num_retries"] >= 1
    # A dying pod's 500 (vLLM's EngineDeadError) moves to the fallback; a 4xx never does.
    assert "retriable-status-codes" in retry["retry_on"].split(",") and retry["retriable_status_codes"] == [500]
    assert "retry_host_predicate" not in retry  # override_host walks the fallback list itself


@pytest.mark.parametrize("scenario,policy", [("round-robin", "round_robin"), ("least-request", "least_request")])
def test_plain_scenarios_have_no_filter_and_the_named_policy(scenario, policy):
    config = render.render(options(scenario))
    assert filter_names(config) == ["envoy.filters.http.router"]
    pool = cluster(config, render.POOL_CLUSTER)
    assert lb_policy_name(pool) == f"envoy.load_balancing_policies.{policy}"
    assert member_addresses(pool) == POOL
    assert route(config)["retry_policy"]["retry_host_predicate"][0]["name"] == \
        "envoy.retry_host_predicates.previous_hosts"


@pytest.mark.parametrize("scenario", render.SCENARIOS)
def test_circuit_breakers_let_every_in_flight_request_retry(scenario):
    config = render.render(options(scenario))
    limits = cluster(config, render.POOL_CLUSTER)["circuit_breakers"]["thresholds"][0]
    assert limits["max_retries"] >= 1000 and limits["max_requests"] >= 1000 and limits["max_pending_requests"] >= 1000


def test_no_filter_scenario_is_the_override_host_cluster_alone():
    config = render.render(options("no-filter"))
    assert filter_names(config) == ["envoy.filters.http.router"]
    assert [c["name"] for c in config["static_resources"]["clusters"]] == [render.POOL_CLUSTER]


def test_ext_proc_scenario_sends_headers_and_buffered_body_over_grpc():
    config = render.render(options("ext-proc"))
    assert filter_names(config) == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    ext = hcm(config)["http_filters"][0]["typed_config"]
    assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == render.EXT_PROC_CLUSTER
    assert ext["processing_mode"]["request_header_mode"] == "SEND"
    assert ext["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert ext["failure_mode_allow"] is False
    picker = cluster(config, render.EXT_PROC_CLUSTER)
    assert member_addresses(picker) == ["127.0.0.1:9100"]
    protocol = picker["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in protocol["explicit_http_config"]


def test_kubernetes_scenario_resolves_the_headless_service_and_uses_the_sidecar():
    config = render.render(options("kubernetes"))
    pool = cluster(config, render.POOL_CLUSTER)
    assert pool["type"] == "STRICT_DNS"
    assert member_addresses(pool) == ["vllm-pool.default.svc.cluster.local:8000"]
    assert member_addresses(cluster(config, "scraper")) == ["127.0.0.1:9090"]
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["address"] == "0.0.0.0"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    wasm = hcm(config)["http_filters"][0]["typed_config"]["config"]
    assert wasm["vm_config"]["code"]["local"]["filename"] == render.KUBERNETES_WASM_PATH
    plugin = json.loads(wasm["configuration"]["value"])
    assert plugin["pool"] == {"endpoints": [], "snapshotCluster": "scraper"}


SESSION_SECRET_ENV = {
    "endpointPickerConfig": {
        "plugins": [{"type": "session-affinity-scorer", "parameters": {"secretEnv": "WIS_SESSION_SECRET"}},
                    {"type": "prefix-cache-scorer"}, {"type": "max-score-picker"}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "session-affinity-scorer", "weight": 1}, {"pluginRef": "prefix-cache-scorer", "weight": 3},
            {"pluginRef": "max-score-picker"}]}],
    }
}


def listener_named(config: dict, name: str) -> dict:
    found = [l for l in config["static_resources"]["listeners"] if l["name"] == name]
    assert len(found) == 1, [l["name"] for l in config["static_resources"]["listeners"]]
    return found[0]


def test_kubernetes_stats_listener_serves_only_prometheus_stats_from_the_loopback_admin():
    config = render.render(options("kubernetes"))
    stats = listener_named(config, "prometheus-stats")
    assert stats["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9091}
    routes = stats["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"]["path"] == "/stats/prometheus"
    assert routes[0]["route"]["cluster"] == render.ADMIN_CLUSTER
    assert routes[-1] == {"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "not found"}}}
    assert member_addresses(cluster(config, render.ADMIN_CLUSTER)) == ["127.0.0.1:9901"]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1", "admin itself stays on loopback"


def test_the_cli_gives_kubernetes_its_stats_listener_and_other_scenarios_none():
    opts, _, _ = render.options_from_args(["--scenario", "kubernetes", "--pool-dns", "svc:8000"])
    assert opts.stats_listen == "0.0.0.0:9091"
    opts, _, _ = render.options_from_args(["--scenario", "kubernetes", "--pool-dns", "svc:8000", "--stats-listen", "none"])
    assert opts.stats_listen is None
    opts, _, _ = render.options_from_args(["--scenario", "plugin", "--pool", POOL[0]])
    assert opts.stats_listen is None
    config = render.render(options("plugin"))
    assert [l["name"] for l in config["static_resources"]["listeners"]] == ["inference"]


@pytest.mark.parametrize("scenario", ["plugin", "kubernetes"])
def test_a_session_secret_from_the_environment_reaches_the_wasm_vm(scenario):
    config = render.render(options(scenario, plugin_config=SESSION_SECRET_ENV, wasm_env_keys=["WIS_EXTRA"]))
    vm = hcm(config)["http_filters"][0]["typed_config"]["config"]["vm_config"]
    assert vm["environment_variables"] == {"host_env_keys": ["WIS_EXTRA", "WIS_SESSION_SECRET"]}


def test_without_secret_env_the_wasm_vm_sees_no_environment():
    vm = hcm(render.render(options("plugin")))["http_filters"][0]["typed_config"]["config"]["vm_config"]
    assert "environment_variables" not in vm


@pytest.mark.parametrize("secret_env", [7, "WIS SECRET", ""])
def test_a_bad_secret_env_is_refused(secret_env):
    bad = {"endpointPickerConfig": {"plugins": [{"type": "session-affinity-scorer",
                                                 "parameters": {"secretEnv": secret_env}}]}}
    with pytest.raises(render.RenderError, match="secretEnv|environment variable"):
        render.render(options("plugin", plugin_config=bad))


def test_access_log_records_the_pick_and_the_upstream():
    config = render.render(options("plugin", access_log="/tmp/access.log"))
    log = hcm(config)["access_log"][0]["typed_config"]
    assert log["path"] == "/tmp/access.log"
    line = log["log_format"]["text_format_source"]["inline_string"]
    assert f"%REQ({Header.DESTINATION})%" in line and "%UPSTREAM_HOST%" in line


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(pool=[]), "needs --pool"),
        (dict(pool=["127.0.0.1"]), "expected HOST:PORT"),
        (dict(pool=["127.0.0.1:http"]), "not a number"),
        (dict(pool=["127.0.0.1:70000"]), "outside 1..65535"),
        (dict(pool=["pod-a:8000"]), "not an IP address"),
        (dict(admin="0.0.0.0:9901"), "must listen on loopback"),
        (dict(wasm=None), "needs --wasm"),
        (dict(scenario="weighted"), "unknown scenario"),
        (dict(workers=0), "at least 1"),
    ],
)
def test_bad_options_are_refused_with_a_message_that_says_what_was_expected(kw, message):
    with pytest.raises(render.RenderError, match=message):
        render.render(options(kw.pop("scenario", "plugin"), **kw))


def test_ext_proc_needs_the_picker_address_and_kubernetes_the_service_name():
    with pytest.raises(render.RenderError, match="--ext-proc"):
        render.render(options("ext-proc", ext_proc=None))
    with pytest.raises(render.RenderError, match="--pool-dns"):
        render.render(options("kubernetes", pool_dns=None))


def test_cli_writes_yaml_or_json_by_extension_and_fails_with_a_message(tmp_path):
    base = ["--scenario", "round-robin", "--listen", "127.0.0.1:10001", "--admin", "127.0.0.1:10002",
            "--pool", ",".join(POOL)]
    out_yaml, out_json = tmp_path / "rr.yaml", tmp_path / "rr.json"
    subprocess.run(RENDER + base + ["--out", str(out_yaml)], check=True)
    subprocess.run(RENDER + base + ["--out", str(out_json)], check=True)
    assert yaml.safe_load(out_yaml.read_text()) == json.loads(out_json.read_text())
    stdout = subprocess.run(RENDER + base, check=True, capture_output=True, text=True).stdout
    assert yaml.safe_load(stdout) == json.loads(out_json.read_text())

    bad = subprocess.run(RENDER + ["--scenario", "plugin", "--pool", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "expected HOST:PORT" in bad.stderr


def test_cli_reads_the_plugin_config_file(tmp_path):
    cfg = tmp_path / "plugin.json"
    cfg.write_text(json.dumps({"limits": {"maxBodyBytes": 1234}}))
    out = subprocess.run(RENDER + ["--scenario", "plugin", "--pool", POOL[0], "--wasm", "/x.wasm",
                                   "--plugin-config", str(cfg), "--format", "json"],
                         check=True, capture_output=True, text=True).stdout
    wasm = hcm(json.loads(out))["http_filters"][0]["typed_config"]["config"]
    assert json.loads(wasm["configuration"]["value"])["limits"] == {"maxBodyBytes": 1234}
    cfg.write_text("[1, 2]")
    bad = subprocess.run(RENDER + ["--scenario", "plugin", "--pool", POOL[0], "--plugin-config", str(cfg)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "JSON object" in bad.stderr


@pytest.mark.parametrize(
    "scenario,plugin_config",
    [(s, {}) for s in render.SCENARIOS]
    + [("plugin", SESSION_SECRET_ENV), ("kubernetes", SESSION_SECRET_ENV), ("plugin", {"headers": {"destination": "x-picked"}})],
    ids=list(render.SCENARIOS) + ["plugin-secret-env", "kubernetes-secret-env", "plugin-renamed-header"],
)
def test_envoy_accepts_the_rendered_config(scenario, plugin_config, envoy_bin, wasm_path, tmp_path):
    opts = options(scenario, scraper="127.0.0.1:9090", plugin_config=plugin_config)
    if render.scenario(scenario).needs_wasm:
        opts.wasm = str(wasm_path)  # validate mode loads the .wasm and configures the plugin
    path = tmp_path / f"{scenario}.yaml"
    path.write_text(render.to_text(render.render(opts), "yaml"))
    # The plugin refuses a secretEnv the VM cannot read, so Envoy's process has it, as in a pod.
    env = {**os.environ, "WIS_SESSION_SECRET": "validate-only-secret-0123456789"}
    result = subprocess.run([str(envoy_bin), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, f"envoy refused {scenario}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    output = result.stdout + result.stderr
    assert "OK" in output
    assert "Deprecated field" not in output, f"{scenario} uses a field Envoy will remove:\n{output[-3000:]}"
