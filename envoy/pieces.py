"""The pieces of this project's Envoy configs that do not depend on the scenario: every cluster name,
timeout and limit the rendered configs use (in one place, each with its reason), the render options
(`RenderOptions`), and the builders that read only those: the ext_proc filters of the baseline
picker and of wis-epp, the clusters of the sidecars and of the pickers (wis-epp's over TLS and
health-checked), the filter stripping a client's destination header, the override_host policy
reading the picker's `envoy.lb` metadata, the Prometheus stats listener and the wasm VM's
environment keys.

The generic Envoy building blocks are in bootstrap.py; what reads the scenario table (the plugin's
header names and configuration, the wasm filter, the pool cluster, the retry policy, the access and
decision logs, the inference listener) is in render.py, which re-exports every name here.
Standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bootstrap import (
    RenderError,
    http_connection_manager,
    listener as hcm_listener,
    policy,
    round_robin_policy,
    router_filter,
    static_cluster,
    tls_without_verification,
    typed,
)
from bootstrap import ext_proc_filter as ext_proc_http_filter
from names import Header

POOL_CLUSTER = "inference-pool"
SCRAPER_CLUSTER = "scraper"
EXT_PROC_CLUSTER = "ext-proc"
ADMIN_CLUSTER = "envoy-admin"
# The admin path the stats listener exposes (Prometheus text of every stat, the plugin's included).
PROMETHEUS_STATS_PATH = "/stats/prometheus"
WASM_VM_ID = "wasm-inference-scheduler"
WASM_PLUGIN_NAME = "wasm-inference-scheduler"

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

# wis-epp (the Endpoint Picker Protocol). The decision under envoy.lb, the subset hint under its own
# namespace, both forwarded to the picker; the served endpoint reported back as Envoy's attribute.
LB_METADATA_NAMESPACE = "envoy.lb"
SUBSET_METADATA_NAMESPACE = "envoy.lb.subset_hint"
UPSTREAM_ADDRESS_ATTRIBUTE = "upstream.address"
# How long wis-epp may take to answer one message (a decision, or echoing one body chunk) before
# the request continues on the fallback policy (fail-open).
EPP_MESSAGE_TIMEOUT = "2s"
# Envoy's ext_proc fails open in FULL_DUPLEX_STREAMED mode only if the stream fails before the first
# body chunk is sent, which a connection refused by a dead picker does not (Envoy PR 41276): such
# requests get 500. Fail-open therefore rests on Envoy knowing the picker is down: an active gRPC
# health check (GAIE's reference wiring has one) marks it unhealthy, and with the panic threshold at
# 0 a cluster without a healthy picker fails the stream at once, which ext_proc does fail open.
EPP_HEALTH_INTERVAL = "1s"
EPP_HEALTH_TIMEOUT = "0.5s"
EPP_HEALTH_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


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
    # wis-epp: whether its gRPC port serves TLS (its --secure-serving, default true).
    ext_proc_tls: bool = True


def override_host_metadata_policy(_opts: RenderOptions) -> dict[str, Any]:
    """Routes to the pool member an ext_proc picker named in the `envoy.lb` dynamic metadata (the
    Endpoint Picker Protocol's copy of the destination, which a client cannot forge); none or a
    non-member falls back to round robin."""
    source = {"metadata": {"key": LB_METADATA_NAMESPACE, "path": [{"key": Header.DESTINATION}]}}
    return policy(
        "envoy.load_balancing_policies.override_host",
        "envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
        override_host_sources=[source],
        fallback_policy={"policies": [round_robin_policy()]},
    )


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


def ext_proc_filter(_opts: RenderOptions) -> dict[str, Any]:
    """The GAIE Endpoint Picker wiring: headers and the buffered body go to the picker over gRPC,
    which answers with a header mutation setting the destination header."""
    return ext_proc_http_filter(EXT_PROC_CLUSTER, EXT_PROC_MESSAGE_TIMEOUT)


def sidecar_cluster(name: str, address: str, what: str, *, http2: bool = False) -> dict[str, Any]:
    return static_cluster(
        name, address, what, connect_timeout=SIDECAR_CONNECT_TIMEOUT, limit=CIRCUIT_BREAKER_LIMIT, http2=http2
    )


def strip_destination_filter(_opts: RenderOptions) -> dict[str, Any]:
    """Removes a client-supplied destination header before anything reads it, so that even when the
    picker is down (fail-open) a client cannot choose its pod."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": typed(
            "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            mutations={"request_mutations": [{"remove": Header.DESTINATION}]},
        ),
    }


def epp_filter(_opts: RenderOptions) -> dict[str, Any]:
    """ext_proc to wis-epp the way GAIE's reference gateway drives an Endpoint Picker."""
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": typed(
            "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            grpc_service={"envoy_grpc": {"cluster_name": EXT_PROC_CLUSTER}},
            # The picker down or slow: the request goes on, and the fallback policy picks a member.
            failure_mode_allow=True,
            message_timeout=EPP_MESSAGE_TIMEOUT,
            processing_mode={
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "FULL_DUPLEX_STREAMED",
                "response_body_mode": "FULL_DUPLEX_STREAMED",
                "request_trailer_mode": "SEND",
                "response_trailer_mode": "SEND",
            },
            metadata_options={
                "forwarding_namespaces": {"untyped": [SUBSET_METADATA_NAMESPACE, LB_METADATA_NAMESPACE]},
                "receiving_namespaces": {"untyped": [LB_METADATA_NAMESPACE]},
            },
            response_attributes=[UPSTREAM_ADDRESS_ATTRIBUTE],
        ),
    }


def ext_proc_cluster(opts: RenderOptions) -> dict[str, Any]:
    """The baseline ext_proc picker's cluster: HTTP/2, plaintext."""
    return sidecar_cluster(EXT_PROC_CLUSTER, opts.ext_proc or "", "--ext-proc", http2=True)


def epp_cluster(opts: RenderOptions) -> dict[str, Any]:
    """wis-epp's cluster: HTTP/2 over TLS (unless --ext-proc-plaintext), health-checked over gRPC."""
    cluster = sidecar_cluster(EXT_PROC_CLUSTER, opts.ext_proc or "", "--ext-proc", http2=True)
    if opts.ext_proc_tls:
        cluster["transport_socket"] = tls_without_verification()
    cluster["health_checks"] = [
        {
            "timeout": EPP_HEALTH_TIMEOUT,
            "interval": EPP_HEALTH_INTERVAL,
            # Envoy's default 60 s between checks of a cluster without traffic would leave a dead
            # picker unnoticed for a minute after a quiet spell.
            "no_traffic_interval": EPP_HEALTH_INTERVAL,
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "reuse_connection": True,
            "grpc_health_check": {"service_name": EPP_HEALTH_SERVICE},
            "tls_options": {"alpn_protocols": ["h2"]},
        }
    ]
    # No panic routing to a picker known to be down: the stream fails at once and fails open.
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    return cluster


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
