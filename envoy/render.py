#!/usr/bin/env python3
"""Render every Envoy configuration this project runs, from one source.

Scenarios (one per proxy setup the tests, the demo, the benchmark and the manifests need) are the
rows of `SCENARIO_TABLE` below: each names its HTTP filter, its load-balancing policy, its pool kind
(STATIC members or a STRICT_DNS name) and whether it needs the plugin .wasm and the scraper. A new
scenario is one row (and its filter builder, if the filter is new):

  plugin         the product: the wasm endpoint picker (V8, one VM per worker) in front of the pool
                 cluster, whose `override_host` load-balancing policy routes to the endpoint the plugin
                 names in its destination header; retries walk the header's fallback list;
                 a `scraper` cluster the plugin fetches pool snapshots from.
  round-robin    plain Envoy, pool cluster with the ROUND_ROBIN policy (benchmark peer).
  least-request  plain Envoy, pool cluster with the LEAST_REQUEST policy (benchmark peer).
  ext-proc       Envoy calling an external-processing (gRPC) picker that sets the same header, then the
                 same override_host cluster: the way GAIE's Endpoint Picker is wired (benchmark peer).
  no-filter      the override_host cluster with no filter at all: the floor of the overhead run.
  kubernetes     the plugin scenario for a pod: STRICT_DNS pool on a headless Service name, the scraper
                 as a sidecar on 127.0.0.1, the .wasm from a mounted file, listening on 0.0.0.0, and a
                 listener on 0.0.0.0:9091 serving only /stats/prometheus (the admin stays on loopback).

The generic Envoy pieces (clusters, listeners, policies) are in bootstrap.py; this file decides
what each scenario is made of.

The plugin configuration rendered for the wasm filter carries the header names (`headers`), and the
override_host policy and the access logs read the same names from it: an operator who renames
`headers.destination` in a plugin config renames it for Envoy too.

Usage:
  python3 envoy/render.py --scenario plugin --listen 127.0.0.1:10000 --admin 127.0.0.1:9901 \\
      --pool 127.0.0.1:9001,127.0.0.1:9002 --scraper 127.0.0.1:9090 [--wasm PATH] \\
      [--plugin-config FILE.json] [--workers N] [--access-log PATH] [--out FILE.yaml|FILE.json]

Output is YAML (or JSON when --format json or --out ends in .json); Envoy picks the parser from the
file extension. Standard library plus PyYAML only, so the manifests and the benchmark can import it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bootstrap import (  # noqa: E402  (sibling modules; envoy/ is not a package)
    RenderError,
    circuit_breakers,
    deep_merge,
    file_access_log,
    http_connection_manager,
    least_request_policy,
    lb_endpoints,
    listener as hcm_listener,
    override_host_policy,
    parse_host_port,
    round_robin_policy,
    router_filter,
    socket_address,
    static_cluster,
    typed,
)
from bootstrap import ext_proc_filter as ext_proc_http_filter  # noqa: E402
from names import PLUGIN_HEADERS, Header  # noqa: E402

__all__ = ["RenderError", "RenderOptions", "parse_host_port", "render", "scenario", "to_text"]

# Kept for importers: the defaults; a rendered config reads the names from its plugin configuration.
DESTINATION_HEADER = Header.DESTINATION
DEBUG_HEADER = Header.DEBUG

POOL_CLUSTER = "inference-pool"
SCRAPER_CLUSTER = "scraper"
EXT_PROC_CLUSTER = "ext-proc"
ADMIN_CLUSTER = "envoy-admin"
# The admin path the stats listener exposes (Prometheus text of every stat, the plugin's included).
PROMETHEUS_STATS_PATH = "/stats/prometheus"
WASM_VM_ID = "wasm-inference-scheduler"
WASM_PLUGIN_NAME = "wasm-inference-scheduler"

# Kubernetes defaults: where the gateway pod mounts the .wasm, where the scraper sidecar listens and
# where the gateway listens.
KUBERNETES_WASM_PATH = "/etc/envoy/wasm/plugin.wasm"
KUBERNETES_SCRAPER = "127.0.0.1:9090"
KUBERNETES_LISTEN = "0.0.0.0:8081"
KUBERNETES_STATS_LISTEN = "0.0.0.0:9091"
LOCAL_LISTEN = "127.0.0.1:10000"

# Pool kinds: a fixed list of ip:port members, or a DNS name (a headless Service) whose every address
# is a member. The values are Envoy's cluster types.
STATIC = "STATIC"
STRICT_DNS = "STRICT_DNS"

# Attempts after the first: the plugin names a primary and a few fallbacks, and each retry moves to
# the next one; three covers a primary and two fallbacks dying together.
NUM_RETRIES = 3
# Connection failures, refused HTTP/2 streams and resets before a response: all safe to replay
# because Envoy still holds the (buffered) request body. Plus a 500 answered before any byte of a
# response: what vLLM's server sends for every in-flight request when its engine dies
# (EngineDeadError) just before the pod goes away; a bad request is a 400, never retried.
RETRY_ON = "connect-failure,refused-stream,reset,retriable-status-codes"
RETRIABLE_STATUS_CODES = [500]
# A pod that is gone answers connect() with RST at once; a pod whose host vanished must not hold a
# request for long before the fallback is tried.
POOL_CONNECT_TIMEOUT = "1s"
SIDECAR_CONNECT_TIMEOUT = "0.25s"
# LLM responses stream for minutes; the route must not cut a long generation.
ROUTE_TIMEOUT = "600s"
# Envoy's default circuit breakers (1024 pending / 1024 active) turn benchmark load into 503s, an
# effect reported against GAIE's ext_proc cluster; the proxy is not the thing under test here.
CIRCUIT_BREAKER_LIMIT = 100_000
# Per-connection buffer: bounds what a buffering filter (wasm, ext_proc) and the router's retry
# buffer may hold of one request; long prompts (a few hundred KB) must fit, gigabytes must not.
CONNECTION_BUFFER_LIMIT_BYTES = 4 * 1024 * 1024
# How long ext_proc may take to answer one message before the request fails.
EXT_PROC_MESSAGE_TIMEOUT = "2s"


@dataclass
class RenderOptions:
    scenario: str
    listen: str = "127.0.0.1:10000"
    admin: str = "127.0.0.1:9901"
    pool: list[str] = field(default_factory=list)
    pool_dns: str | None = None
    scraper: str | None = None
    ext_proc: str | None = None
    wasm: str | None = None
    plugin_config: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None
    access_log: str | None = None
    # JSON lines, one per request, with the plugin's debug header (the decision view reads it).
    decision_log: str | None = None
    # A listener serving only /stats/prometheus (proxied to the admin interface), for scrapers such
    # as GKE's PodMonitoring that must not reach the rest of the admin API.
    stats_listen: str | None = None
    # Environment variables of Envoy's process the wasm VM may read, besides those the plugin
    # configuration names (a session-affinity-scorer's `secretEnv`).
    wasm_env_keys: list[str] = field(default_factory=list)


def pool_cluster(opts: RenderOptions) -> dict[str, Any]:
    sc = scenario(opts.scenario)
    cluster: dict[str, Any] = {
        "name": POOL_CLUSTER,
        "connect_timeout": POOL_CONNECT_TIMEOUT,
        "load_balancing_policy": {"policies": [sc.lb.build(opts)]},
        "circuit_breakers": circuit_breakers(CIRCUIT_BREAKER_LIMIT),
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_LIMIT_BYTES,
        "type": sc.pool_kind,
    }
    if sc.pool_kind == STRICT_DNS:
        # A headless Service resolves to every ready pod; STRICT_DNS makes each address a member.
        cluster["dns_lookup_family"] = "V4_ONLY"
        endpoints = lb_endpoints([opts.pool_dns or ""], "--pool-dns", need_ip=False)
    else:
        endpoints = lb_endpoints(opts.pool, "--pool")
    cluster["load_assignment"] = {"cluster_name": POOL_CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]}
    return cluster


# RFC 9110 field-name: a token.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# The plugin's header names Envoy itself reads: override_host and the access logs read the
# destination, the decision log reads the debug header.
ENVOY_READ_HEADERS = ("destination", "debug")


def header_name(opts: RenderOptions, key: str) -> str:
    """The header the plugin uses for `key` ("destination", "debug", ...): the user's plugin
    configuration's `headers.<key>` in a scenario with the plugin, else the default."""
    default = PLUGIN_HEADERS[key]
    if not scenario(opts.scenario).needs_wasm:
        return default
    headers = opts.plugin_config.get("headers", {})
    if not isinstance(headers, dict):
        raise RenderError(f"plugin configuration: headers must be a JSON object, got {headers!r}")
    name = headers.get(key, default)
    if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
        raise RenderError(f"plugin configuration: headers.{key} must be an HTTP header name, got {name!r}")
    return name.lower()  # HTTP header names are case-insensitive; Envoy matches them in lower case


def plugin_configuration(opts: RenderOptions) -> dict[str, Any]:
    """The plugin's JSON configuration: the pool wiring and the header names Envoy reads rendered
    here, then the user's file on top."""
    pool: dict[str, Any] = {"endpoints": list(opts.pool)}
    if opts.scraper:
        pool["snapshotCluster"] = SCRAPER_CLUSTER
    headers = {key: header_name(opts, key) for key in ENVOY_READ_HEADERS}
    return deep_merge({"pool": pool, "headers": headers}, opts.plugin_config)


# The scorer whose key may come from an environment variable of the VM (`secretEnv`).
SESSION_SCORER = "session-affinity-scorer"
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def wasm_env_keys(opts: RenderOptions) -> list[str]:
    """The environment variables the wasm VM gets from Envoy's process: the explicit ones and every
    session-affinity-scorer's `secretEnv` in the plugin configuration."""
    keys = list(opts.wasm_env_keys)
    epc = opts.plugin_config.get("endpointPickerConfig") or {}
    plugins = epc.get("plugins") if isinstance(epc, dict) else None
    for i, plugin in enumerate(plugins if isinstance(plugins, list) else []):
        if not isinstance(plugin, dict) or plugin.get("type") != SESSION_SCORER:
            continue
        params = plugin.get("parameters") or {}
        if isinstance(params, dict) and "secretEnv" in params:
            keys.append(params["secretEnv"])
            where = f"plugin configuration: endpointPickerConfig.plugins[{i}].parameters.secretEnv"
            if not isinstance(params["secretEnv"], str):
                raise RenderError(f"{where}: expected an environment variable name, got {params['secretEnv']!r}")
    for key in keys:
        if not ENV_KEY.fullmatch(key):
            raise RenderError(f"wasm environment variable {key!r}: expected a name like WIS_SESSION_SECRET")
    return sorted(set(keys))


def wasm_filter(opts: RenderOptions) -> dict[str, Any]:
    if not opts.wasm:
        raise RenderError(f"scenario {opts.scenario} needs --wasm PATH (the plugin .wasm)")
    vm_config: dict[str, Any] = {
        # The same vm_id on every worker: Envoy clones one VM per worker thread from it.
        "vm_id": WASM_VM_ID,
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": opts.wasm}},
    }
    env_keys = wasm_env_keys(opts)
    if env_keys:
        # Only these variables of Envoy's own environment are visible to the VM (WASI environ).
        vm_config["environment_variables"] = {"host_env_keys": env_keys}
    config = {
        "name": WASM_PLUGIN_NAME,
        "vm_config": vm_config,
        "configuration": typed(
            "google.protobuf.StringValue", value=json.dumps(plugin_configuration(opts), separators=(",", ":"))
        ),
        # A broken plugin must not turn into unscheduled traffic silently: fail closed.
        "fail_open": False,
        # Without this, Envoy turns the filter's Pause on request headers into stop-all and never
        # delivers the body the picker needs (Envoy >= 1.35).
        "allow_on_headers_stop_iteration": True,
    }
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": typed("envoy.extensions.filters.http.wasm.v3.Wasm", config=config),
    }


def ext_proc_filter(_opts: RenderOptions) -> dict[str, Any]:
    """The GAIE Endpoint Picker wiring: headers and the buffered body go to the picker over gRPC,
    which answers with a header mutation setting the destination header."""
    return ext_proc_http_filter(EXT_PROC_CLUSTER, EXT_PROC_MESSAGE_TIMEOUT)


def sidecar_cluster(name: str, address: str, what: str, *, http2: bool = False) -> dict[str, Any]:
    return static_cluster(
        name, address, what, connect_timeout=SIDECAR_CONNECT_TIMEOUT, limit=CIRCUIT_BREAKER_LIMIT, http2=http2
    )


@dataclass(frozen=True)
class LbPolicy:
    """A pool load-balancing policy. `walks_fallbacks`: retries move along the destination header's
    fallback list by attempt number (override_host); otherwise the retry predicate has to keep Envoy
    from picking the host that just failed."""

    name: str
    build: Callable[[RenderOptions], dict[str, Any]]
    walks_fallbacks: bool


OVERRIDE_HOST = LbPolicy(
    "override_host", lambda opts: override_host_policy(header_name(opts, "destination")), walks_fallbacks=True
)
ROUND_ROBIN = LbPolicy("round_robin", lambda _opts: round_robin_policy(), walks_fallbacks=False)
LEAST_REQUEST = LbPolicy("least_request", lambda _opts: least_request_policy(), walks_fallbacks=False)


@dataclass(frozen=True)
class Scenario:
    """One proxy setup. Everything render.py and stack.py decide per scenario is read from here."""

    name: str
    # The HTTP filter before the router (None: the router alone).
    http_filter: Callable[[RenderOptions], dict[str, Any]] | None
    lb: LbPolicy
    # STATIC: the members are --pool; STRICT_DNS: every address --pool-dns resolves to.
    pool_kind: str
    # Loads the plugin .wasm (the wasm filter).
    needs_wasm: bool
    # The plugin fetches pool snapshots from the scraper: the config has a `scraper` cluster when an
    # address is given, and stack.py starts one unless told not to.
    needs_scraper: bool
    # The filter calls an external gRPC picker (--ext-proc).
    needs_ext_proc: bool = False
    default_listen: str = LOCAL_LISTEN
    default_scraper: str | None = None
    # The Prometheus stats listener when none is given (None: no such listener).
    default_stats_listen: str | None = None
    # The .wasm path when none is given (None: --wasm is required when needs_wasm).
    default_wasm: Callable[[], str] | None = None


def default_wasm() -> str:
    env = os.environ.get("WIS_PLUGIN_WASM")
    if env:
        return env
    root = Path(__file__).resolve().parent.parent
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    return str(target / "wasm32-wasip1" / "wasm-release" / "wasm_inference_scheduler.wasm")


SCENARIO_TABLE: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("plugin", wasm_filter, OVERRIDE_HOST, STATIC, needs_wasm=True, needs_scraper=True,
                 default_wasm=default_wasm),
        Scenario("round-robin", None, ROUND_ROBIN, STATIC, needs_wasm=False, needs_scraper=False),
        Scenario("least-request", None, LEAST_REQUEST, STATIC, needs_wasm=False, needs_scraper=False),
        Scenario("ext-proc", ext_proc_filter, OVERRIDE_HOST, STATIC, needs_wasm=False, needs_scraper=False,
                 needs_ext_proc=True),
        Scenario("no-filter", None, OVERRIDE_HOST, STATIC, needs_wasm=False, needs_scraper=False),
        Scenario("kubernetes", wasm_filter, OVERRIDE_HOST, STRICT_DNS, needs_wasm=True, needs_scraper=True,
                 default_listen=KUBERNETES_LISTEN, default_scraper=KUBERNETES_SCRAPER,
                 default_stats_listen=KUBERNETES_STATS_LISTEN,
                 default_wasm=lambda: KUBERNETES_WASM_PATH),
    )
}
SCENARIOS = tuple(SCENARIO_TABLE)


def scenario(name: str) -> Scenario:
    """The table row of a scenario; RenderError for a name that is not in the table."""
    try:
        return SCENARIO_TABLE[name]
    except KeyError:
        raise RenderError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}") from None


def retry_policy(opts: RenderOptions) -> dict[str, Any]:
    retry: dict[str, Any] = {
        "retry_on": RETRY_ON,
        "retriable_status_codes": RETRIABLE_STATUS_CODES,
        "num_retries": NUM_RETRIES,
    }
    if not scenario(opts.scenario).lb.walks_fallbacks:
        # Plain load balancers could pick the host that just failed; override_host instead walks
        # the header's fallback list by attempt number.
        retry["retry_host_predicate"] = [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
            }
        ]
        retry["host_selection_retry_max_attempts"] = 3
    return retry


def access_log(path: str, opts: RenderOptions) -> list[dict[str, Any]]:
    # One line per request: enough to see where each request went and what the picker asked for.
    line = (
        "[%START_TIME%] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% "
        f"picked=%REQ({header_name(opts, 'destination')})% upstream=%UPSTREAM_HOST% "
        "attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% duration_ms=%DURATION%\n"
    )
    return [file_access_log(path, {"text_format_source": {"inline_string": line}})]


def decision_log(path: str, opts: RenderOptions) -> dict[str, Any]:
    """One JSON object per request: where it went and, with the plugin's `debugHeader: "json"`,
    the whole decision (every endpoint's scores) as a JSON string in `decision`."""
    fields = {
        "start_time": "%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "picked": f"%REQ({header_name(opts, 'destination')})%",
        "upstream": "%UPSTREAM_HOST%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "duration_ms": "%DURATION%",
        "first_byte_ms": "%RESPONSE_DURATION%",
        "request_bytes": "%BYTES_RECEIVED%",
        "decision": f"%REQ({header_name(opts, 'debug')})%",
    }
    return file_access_log(path, {"json_format": fields})


def listener(opts: RenderOptions) -> dict[str, Any]:
    sc = scenario(opts.scenario)
    filters = [sc.http_filter(opts)] if sc.http_filter else []
    filters.append(router_filter())
    route = {
        "match": {"prefix": "/"},
        "route": {"cluster": POOL_CLUSTER, "timeout": ROUTE_TIMEOUT, "retry_policy": retry_policy(opts)},
    }
    hcm = http_connection_manager("inference", [route], filters)
    if opts.access_log:
        hcm["access_log"] = access_log(opts.access_log, opts)
    if opts.decision_log:
        hcm.setdefault("access_log", []).append(decision_log(opts.decision_log, opts))
    return hcm_listener(
        "inference", opts.listen, "--listen", hcm, per_connection_buffer_limit_bytes=CONNECTION_BUFFER_LIMIT_BYTES
    )


def stats_listener(opts: RenderOptions) -> dict[str, Any]:
    """Serves GET /stats/prometheus from the admin interface and 404 for everything else, so the
    admin API itself (config dump, quitquitquit, ...) stays on loopback."""
    routes = [
        {
            "match": {"path": PROMETHEUS_STATS_PATH, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
            "route": {"cluster": ADMIN_CLUSTER, "timeout": "5s"},
        },
        {"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "not found"}}},
    ]
    hcm = http_connection_manager("prometheus_stats", routes, [router_filter()])
    return hcm_listener("prometheus-stats", opts.stats_listen or "", "--stats-listen", hcm)


def check(opts: RenderOptions) -> None:
    sc = scenario(opts.scenario)
    if sc.pool_kind == STRICT_DNS:
        if not opts.pool_dns:
            raise RenderError(f"scenario {sc.name} needs --pool-dns NAME:PORT (the headless Service)")
        parse_host_port(opts.pool_dns, "--pool-dns", need_ip=False)
    elif not opts.pool:
        raise RenderError(f"scenario {sc.name} needs --pool IP:PORT[,IP:PORT...]")
    if sc.needs_ext_proc and not opts.ext_proc:
        raise RenderError(f"scenario {sc.name} needs --ext-proc IP:PORT (the gRPC picker)")
    admin_host, _ = parse_host_port(opts.admin, "--admin")
    if not ipaddress.ip_address(admin_host).is_loopback:
        raise RenderError(f"--admin {opts.admin}: the admin interface must listen on loopback")
    if opts.workers is not None and opts.workers < 1:
        raise RenderError(f"--workers {opts.workers}: expected at least 1")
    if opts.stats_listen:
        parse_host_port(opts.stats_listen, "--stats-listen")


def render(opts: RenderOptions) -> dict[str, Any]:
    """The Envoy bootstrap for one scenario, as a dict ready for YAML or JSON."""
    check(opts)
    sc = scenario(opts.scenario)
    clusters = [pool_cluster(opts)]
    if sc.needs_scraper and opts.scraper:
        clusters.append(sidecar_cluster(SCRAPER_CLUSTER, opts.scraper, "--scraper"))
    if sc.needs_ext_proc:
        clusters.append(sidecar_cluster(EXT_PROC_CLUSTER, opts.ext_proc or "", "--ext-proc", http2=True))
    listeners = [listener(opts)]
    if opts.stats_listen:
        listeners.append(stats_listener(opts))
        clusters.append(sidecar_cluster(ADMIN_CLUSTER, opts.admin, "--admin"))
    node: dict[str, Any] = {"id": f"wis-{opts.scenario}", "cluster": "wasm-inference-scheduler"}
    if opts.workers:
        # Bootstrap has no worker count (that is `envoy --concurrency`); recorded for whoever runs it.
        node["metadata"] = {"intended_concurrency": opts.workers}
    return {
        "node": node,
        "admin": {"address": socket_address(opts.admin, "--admin")},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def to_text(config: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(config, indent=2) + "\n"
    import yaml  # PyYAML, pinned in envoy/requirements.txt

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def options_from_args(argv: list[str] | None = None) -> tuple[RenderOptions, str | None, str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--listen", help=f"listener IP:PORT (default {LOCAL_LISTEN}; kubernetes {KUBERNETES_LISTEN})")
    p.add_argument("--admin", default="127.0.0.1:9901", help="admin IP:PORT, loopback only")
    p.add_argument("--pool", default="", help="pool members IP:PORT,IP:PORT,... (STATIC cluster)")
    p.add_argument("--pool-dns", help="kubernetes: headless Service NAME:PORT (STRICT_DNS cluster)")
    p.add_argument("--scraper", help=f"scraper IP:PORT serving /snapshot (kubernetes default {KUBERNETES_SCRAPER})")
    p.add_argument("--ext-proc", help="ext-proc: the gRPC picker IP:PORT")
    p.add_argument("--wasm", help="plugin .wasm path (default $WIS_PLUGIN_WASM or the wasm-release build)")
    p.add_argument("--plugin-config", help="JSON file merged over the rendered plugin configuration")
    p.add_argument("--workers", type=int, help="Envoy worker count the config is meant for (--concurrency)")
    p.add_argument("--access-log", help="write one access-log line per request to this file")
    p.add_argument("--stats-listen", help="listener IP:PORT serving only /stats/prometheus "
                   f"(kubernetes default {KUBERNETES_STATS_LISTEN}; 'none' for no such listener)")
    p.add_argument("--wasm-env", action="append", default=[], metavar="NAME",
                   help="an environment variable of Envoy the wasm VM may read (repeatable; a "
                   "session-affinity-scorer's secretEnv is added by itself)")
    p.add_argument("--format", choices=("yaml", "json"), help="output format (default from --out, else yaml)")
    p.add_argument("--out", help="write here instead of stdout")
    a = p.parse_args(argv)

    plugin_config: dict[str, Any] = {}
    if a.plugin_config:
        try:
            plugin_config = json.loads(Path(a.plugin_config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RenderError(f"--plugin-config {a.plugin_config}: {e}") from None
        if not isinstance(plugin_config, dict):
            raise RenderError(f"--plugin-config {a.plugin_config}: expected a JSON object at the top level")

    sc = scenario(a.scenario)
    wasm = a.wasm
    if wasm is None and sc.default_wasm:
        wasm = sc.default_wasm()
    opts = RenderOptions(
        scenario=a.scenario,
        listen=a.listen or sc.default_listen,
        admin=a.admin,
        pool=[x.strip() for x in a.pool.split(",") if x.strip()],
        pool_dns=a.pool_dns,
        scraper=a.scraper or sc.default_scraper,
        ext_proc=a.ext_proc,
        wasm=wasm,
        plugin_config=plugin_config,
        workers=a.workers,
        access_log=a.access_log,
        stats_listen=None if a.stats_listen == "none" else (a.stats_listen or sc.default_stats_listen),
        wasm_env_keys=a.wasm_env,
    )
    fmt = a.format or ("json" if a.out and a.out.endswith(".json") else "yaml")
    return opts, a.out, fmt


def main(argv: list[str] | None = None) -> int:
    try:
        opts, out, fmt = options_from_args(argv)
        text = to_text(render(opts), fmt)
    except RenderError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    if out:
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
