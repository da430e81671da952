"""Envoy v3 bootstrap building blocks: typed configs, addresses, load-balancing policies, clusters,
HTTP connection managers and listeners. It knows nothing of scenarios or of the plugin: render.py
composes these into each scenario's configuration. Standard library only."""

from __future__ import annotations

import ipaddress
from typing import Any


class RenderError(ValueError):
    """A render option that is wrong, with a message saying what was expected."""


def parse_host_port(text: str, what: str, *, need_ip: bool = True) -> tuple[str, int]:
    """Splits "host:port"; with need_ip the host must be an IPv4/IPv6 literal (STATIC clusters)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise RenderError(f"{what}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise RenderError(f"{what}: port in {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise RenderError(f"{what}: port {port} in {text!r} is outside 1..65535")
    if need_ip:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise RenderError(f"{what}: {host!r} in {text!r} is not an IP address") from None
    return host, port


def socket_address(text: str, what: str, *, need_ip: bool = True) -> dict[str, Any]:
    host, port = parse_host_port(text, what, need_ip=need_ip)
    return {"socket_address": {"address": host, "port_value": port}}


def lb_endpoints(addresses: list[str], what: str, *, need_ip: bool = True) -> list[dict[str, Any]]:
    return [{"endpoint": {"address": socket_address(a, what, need_ip=need_ip)}} for a in addresses]


def typed(type_name: str, **body: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **body}


def policy(name: str, type_name: str, **body: Any) -> dict[str, Any]:
    return {"typed_extension_config": {"name": name, "typed_config": typed(type_name, **body)}}


def round_robin_policy() -> dict[str, Any]:
    return policy(
        "envoy.load_balancing_policies.round_robin",
        "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
    )


def least_request_policy() -> dict[str, Any]:
    return policy(
        "envoy.load_balancing_policies.least_request",
        "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
    )


def override_host_policy(header: str) -> dict[str, Any]:
    """Routes to the pool member named in `header`; no header or a non-member falls back to round
    robin. Only cluster members can ever be chosen, so a forged value cannot leave the pool."""
    return policy(
        "envoy.load_balancing_policies.override_host",
        "envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
        override_host_sources=[{"header": header}],
        fallback_policy={"policies": [round_robin_policy()]},
    )


def circuit_breakers(limit: int) -> dict[str, Any]:
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": limit,
                "max_pending_requests": limit,
                "max_requests": limit,
                # Default 3: with a pod gone, every in-flight request retries at once and the 4th
                # would fail with UO (overflow) instead of moving to its fallback.
                "max_retries": limit,
            }
        ]
    }


def http2_protocol_options() -> dict[str, Any]:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            explicit_http_config={"http2_protocol_options": {}},
        )
    }


def static_cluster(
    name: str, address: str, what: str, *, connect_timeout: str, limit: int, http2: bool = False
) -> dict[str, Any]:
    """A cluster of one fixed ip:port (a sidecar, the admin interface)."""
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "circuit_breakers": circuit_breakers(limit),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints([address], what)}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = http2_protocol_options()
    return cluster


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def ext_proc_filter(cluster: str, message_timeout: str) -> dict[str, Any]:
    """The GAIE Endpoint Picker wiring: headers and the buffered body go to the picker over gRPC,
    which answers with a header mutation setting the destination header."""
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": typed(
            "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            grpc_service={"envoy_grpc": {"cluster_name": cluster}},
            failure_mode_allow=False,
            message_timeout=message_timeout,
            processing_mode={
                "request_header_mode": "SEND",
                "response_header_mode": "SKIP",
                "request_body_mode": "BUFFERED",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
        ),
    }


def router_filter() -> dict[str, Any]:
    return {"name": "envoy.filters.http.router", "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")}


def http_connection_manager(stat_prefix: str, routes: list[dict[str, Any]], filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
        },
        "http_filters": filters,
    }


def listener(name: str, address: str, what: str, hcm: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A listener whose one filter chain is the HTTP connection manager `hcm`."""
    manager = typed("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", **hcm)
    return {
        "name": name,
        "address": socket_address(address, what),
        **extra,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}],
    }


def file_access_log(path: str, log_format: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": typed("envoy.extensions.access_loggers.file.v3.FileAccessLog", path=path, log_format=log_format),
    }
