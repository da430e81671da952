"""Every name the Python side shares with the plugin, the scraper and the simulator, defined once.

Rust owns the other side of each name: header names are `plugin/src/config.rs`
`HeaderNames::default()`, stat names are the plugin's stats (`plugin/src/host/`), snapshot keys are
`plugin/src/pool.rs` (the scraper → plugin wire format). `envoy/tests/test_names.py` checks each
name here against the Rust source, so the two cannot drift apart silently.

Standard library only; render.py, stack.py, the tests, the demo and the bench import it.
"""

from __future__ import annotations

import re

# vLLM's default served-model-name: the Hugging Face id of the model the project serves.
MODEL = "Qwen/Qwen3-0.6B"


class Header:
    """HTTP header names (lower case, as Envoy and http.client report them)."""

    # The Endpoint Picker Protocol: primary endpoint first, then fallbacks, "ip:port,ip:port".
    DESTINATION = "x-gateway-destination-endpoint"
    # Subset hint: comma-separated ip:port the choice is restricted to.
    SUBSET = "x-gateway-destination-endpoint-subset"
    # The request's objective (priority).
    OBJECTIVE = "x-gateway-inference-objective"
    # The session-affinity token (only with session-affinity-scorer in the profile).
    SESSION = "x-session-token"
    # The plugin's decision, only when the plugin configuration's `debugHeader` is on.
    DEBUG = "x-wis-decision"
    # Set by every simulated pod (sim fleet, minifleet.py): the pod's own ip:port.
    SIM_POD = "x-sim-pod"


# The plugin configuration's "headers" object with the plugin's defaults, by configuration key.
PLUGIN_HEADERS = {
    "destination": Header.DESTINATION,
    "subset": Header.SUBSET,
    "objective": Header.OBJECTIVE,
    "session": Header.SESSION,
    "debug": Header.DEBUG,
}

# Envoy prefixes every stat a wasm plugin defines with this.
ENVOY_WASM_STAT_PREFIX = "wasmcustom."


class Stat:
    """The plugin's stat names, without Envoy's `wasmcustom.` prefix (see `envoy_stat`)."""

    DECISIONS = "wis.decisions"
    PASSTHROUGH = "wis.passthrough"
    SNAPSHOT_FETCH_OK = "wis.snapshot.fetch_ok"
    SNAPSHOT_FETCH_FAILED = "wis.snapshot.fetch_failed"
    SNAPSHOT_ENDPOINTS = "wis.snapshot.endpoints"
    SERVED_ELSEWHERE = "wis.served_elsewhere"
    # Endpoints scored with unknown metrics (a failed scrape that is not a connect failure).
    UNKNOWN_METRICS = "wis.endpoints.unknown_metrics"
    # Decisions where every endpoint would have been excluded and all pool members were used.
    NO_HEALTHY_ENDPOINT = "wis.decisions.no_healthy_endpoint"
    # The learned prompt bytes per token (x100), a gauge.
    BYTES_PER_TOKEN_X100 = "wis.prefix.bytes_per_token_x100"
    # Session-affinity tokens: issued on responses; on requests, accepted or ignored as invalid
    # (forged or tampered).
    SESSION_ISSUED = "wis.session.issued"
    SESSION_ACCEPTED = "wis.session.accepted"
    SESSION_INVALID = "wis.session.invalid"

    @staticmethod
    def endpoint_decisions(address: str) -> str:
        """Requests one VM sent to the endpoint `ip:port`."""
        return f"wis.endpoint.{address}.decisions"

    @staticmethod
    def index_capacity_blocks(address: str) -> str:
        """The prefix index's capacity for the endpoint `ip:port`, a gauge."""
        return f"wis.endpoint.{address}.index_capacity_blocks"


def envoy_stat(name: str) -> str:
    """The name Envoy's admin interface reports a plugin stat under (`/stats`)."""
    return ENVOY_WASM_STAT_PREFIX + name


def envoy_prometheus_name(name: str) -> str:
    """The metric name of a plugin stat in Envoy's `/stats/prometheus`: Envoy drops the
    `wasmcustom.` prefix there and turns every character Prometheus does not allow into `_`."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


class Snapshot:
    """Keys of the scraper's pool snapshot (`GET /snapshot`, `plugin/src/pool.rs`)."""

    FORMAT_VERSION = "format_version"
    SEQUENCE = "sequence"
    ENDPOINTS = "endpoints"
    # One endpoint's keys.
    ADDRESS = "address"
    HEALTHY = "healthy"
    STALE = "stale"
    LAST_SCRAPE_MS = "last_scrape_ms"
    MODELS = "models"
    METRICS = "metrics"
    LAST_ERROR = "last_error"
    # Its metrics' keys.
    WAITING_REQUESTS = "waiting_requests"
    RUNNING_REQUESTS = "running_requests"
    KV_CACHE_USAGE = "kv_cache_usage"
    # last_error's keys.
    REASON = "reason"
    MESSAGE = "message"


class SimMetric:
    """vLLM metric names the tests read from a simulated pod's /metrics."""

    WAITING = "vllm:num_requests_waiting"
    RUNNING = "vllm:num_requests_running"
    KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
