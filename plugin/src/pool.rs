//! The pool snapshot: the one wire format between the scraper (which writes it) and the plugin
//! (which schedules on it). The scraper depends on this module as a library, so the format has a
//! single owner.
//!
//! A snapshot is a JSON document:
//! ```json
//! {"format_version":1,"sequence":42,"generated_at_ms":1764000000000,"engine":"vllm",
//!  "endpoints":[{"address":"10.0.0.7:8000","healthy":true,"stale":false,
//!    "last_scrape_ms":1764000000000,"consecutive_failures":0,"models":["Qwen/Qwen3-0.6B"],
//!    "metrics":{"waiting_requests":2,"running_requests":5,"kv_cache_usage":0.41,
//!      "lora":{"running":["sql-lora"],"waiting":[],"max_loras":4},
//!      "cache_block_size":16,"cache_num_blocks":12000,
//!      "prefix_cache_queries_total":1200,"prefix_cache_hits_total":800}}]}
//! ```
//! An endpoint whose latest scrape failed also carries
//! `"last_error":{"reason":"http_status","message":"answered HTTP 404, expected 200: \"Not Found\"","since_ms":...}`.
//!
//! **Reachability and metrics are separate facts.** `healthy` says whether the pod can be sent
//! requests: discovery lists it ready and the scraper could connect to it (only connection failures
//! and timeouts on consecutive scrapes clear it). `stale` says whether its metrics are current: any
//! failed scrape (an HTTP error status, an unreadable body, a missing gauge, a body over the limit)
//! sets it and leaves `healthy` alone, because unreadable metrics say nothing about serving. A
//! consumer schedules a healthy endpoint with stale metrics on what it knows itself.
//!
//! Times are Unix milliseconds from the scraper's wall clock; the plugin compares them with the
//! proxy's wall clock (the scraper is a sidecar on the same node, so the clocks agree).
//! `sequence` grows by one with every snapshot the scraper generates; consumers use it to skip
//! re-parsing a snapshot they already have.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// The format this build reads and writes. A consumer rejects any other version with a clear error.
pub const FORMAT_VERSION: u32 = 1;

/// Upper bound on endpoints in one snapshot: an InferencePool is at most a few hundred pods; the
/// bound keeps a corrupt or hostile snapshot from costing unbounded memory in every proxy worker.
pub const MAX_ENDPOINTS: usize = 2048;

/// Upper bound on the LoRA adapter names kept per list per endpoint (vLLM's `max_loras` is small).
pub const MAX_ADAPTERS_PER_LIST: usize = 64;

/// Largest snapshot document a consumer accepts: [`MAX_ENDPOINTS`] endpoints at well under 1 KiB
/// each. The scraper keeps what it serves within it (cutting error messages first).
pub const MAX_SNAPSHOT_BYTES: usize = 2 * 1024 * 1024;

/// Upper bound on a scrape error's message in bytes: enough for the reason, the status and a short
/// excerpt of the body, small enough that a pool of failing pods keeps the snapshot small.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

/// Which engine's metric vocabulary the scraper read. Informational for the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Vllm,
    Sglang,
    Trtllm,
}

/// One consistent view of an inference pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    pub format_version: u32,
    /// Monotonic per scraper process; a restart may start again from 1.
    pub sequence: u64,
    pub generated_at_ms: u64,
    #[serde(default)]
    pub engine: Engine,
    pub endpoints: Vec<Endpoint>,
}

/// One model-server pod as the scraper last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `ip:port` of the model server, exactly what goes into `x-gateway-destination-endpoint`.
    pub address: String,
    /// Reachable: discovery says ready, and fewer than the scraper's `--unhealthy-after` scrapes in
    /// a row failed to connect or timed out (an endpoint never reached is healthy only once a
    /// connection succeeded). Unreadable metrics do not clear it.
    pub healthy: bool,
    /// The latest scrape gave no reading; `metrics` are the last good values (or zeros when there
    /// never was one), so consumers treat them as unknown.
    #[serde(default)]
    pub stale: bool,
    /// Unix ms of the last successful scrape; 0 when it never succeeded.
    pub last_scrape_ms: u64,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Served model names seen in the pod's metrics (`model_name` label); may be empty.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub metrics: EndpointMetrics,
    /// Why the latest scrape failed; absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ScrapeFailure>,
}

/// A failed scrape as the snapshot reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeFailure {
    /// Short label, the scraper's failure-counter reason: `connect`, `timeout`, `http_status`,
    /// `not_text`, `too_large`, `body`, `parse`, `missing_metric`, `bad_value`.
    pub reason: String,
    /// What went wrong, for people: the status and a short excerpt of the body where there was one.
    /// At most [`MAX_ERROR_MESSAGE_BYTES`].
    pub message: String,
    /// Unix ms of the first failure of the current streak.
    #[serde(default)]
    pub since_ms: u64,
}

impl ScrapeFailure {
    /// Whether this failure says the pod cannot be reached (as opposed to its metrics being unreadable).
    pub fn is_unreachable(&self) -> bool {
        matches!(self.reason.as_str(), "connect" | "timeout")
    }
}

/// What only the pod knows, normalised across engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EndpointMetrics {
    /// Requests queued in the engine (`vllm:num_requests_waiting`).
    pub waiting_requests: u32,
    /// Requests in the running batch (`vllm:num_requests_running`).
    pub running_requests: u32,
    /// KV-cache usage as a fraction in [0, 1] (`vllm:kv_cache_usage_perc`).
    pub kv_cache_usage: f64,
    /// LoRA adapters, when the engine serves LoRA (`vllm:lora_requests_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraState>,
    /// Tokens per KV block (`vllm:cache_config_info{block_size}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_block_size: Option<u32>,
    /// KV blocks on the GPU (`vllm:cache_config_info{num_gpu_blocks}`): the prefix capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_num_blocks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_queries_total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hits_total: Option<f64>,
}

/// LoRA adapter residency as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LoraState {
    pub running: Vec<String>,
    pub waiting: Vec<String>,
    pub max_loras: u32,
}

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotError {
    /// Not JSON, or not the shape documented above.
    Malformed(String),
    /// A format this build does not understand.
    UnsupportedVersion { found: u32, expected: u32 },
    /// More endpoints than [`MAX_ENDPOINTS`].
    TooManyEndpoints { found: usize, max: usize },
    /// An address that is not `ip:port`.
    BadAddress(String),
    /// The same address listed twice.
    DuplicateAddress(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "pool snapshot is not valid JSON of the expected shape: {why}"),
            Self::UnsupportedVersion { found, expected } => {
                write!(f, "pool snapshot format_version {found} is not supported (expected {expected})")
            }
            Self::TooManyEndpoints { found, max } => {
                write!(f, "pool snapshot lists {found} endpoints, more than the limit of {max}")
            }
            Self::BadAddress(a) => write!(f, "pool snapshot endpoint address {a:?} is not ip:port"),
            Self::DuplicateAddress(a) => write!(f, "pool snapshot lists endpoint {a} twice"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl PoolSnapshot {
    /// An empty snapshot of the current format.
    pub fn empty() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            sequence: 0,
            generated_at_ms: 0,
            engine: Engine::Vllm,
            endpoints: Vec::new(),
        }
    }

    /// The configured static endpoints as a snapshot: healthy, never scraped (so stale), no metrics.
    pub fn from_static(endpoints: &[String]) -> Self {
        let mut snapshot = Self::empty();
        snapshot.endpoints = endpoints.iter().map(Endpoint::new).collect();
        snapshot
    }

    /// Parses and validates a snapshot. Metric values are sanitised (KV usage clamped to [0, 1],
    /// non-finite values to 0) rather than rejected: one odd gauge must not blind the scheduler
    /// to the whole pool.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut snapshot: PoolSnapshot =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        snapshot.validate()?;
        Ok(snapshot)
    }

    /// Serialises the snapshot (the scraper's side).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail; fall back to an empty body
        // rather than panic if it ever did.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the invariants consumers rely on and sanitises metric values in place.
    pub fn validate(&mut self) -> Result<(), SnapshotError> {
        if self.format_version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: self.format_version, expected: FORMAT_VERSION });
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(SnapshotError::TooManyEndpoints { found: self.endpoints.len(), max: MAX_ENDPOINTS });
        }
        let mut seen: hashbrown::HashSet<SocketAddr> = hashbrown::HashSet::with_capacity(self.endpoints.len());
        for endpoint in &mut self.endpoints {
            let addr: SocketAddr =
                endpoint.address.parse().map_err(|_| SnapshotError::BadAddress(endpoint.address.clone()))?;
            if !seen.insert(addr) {
                return Err(SnapshotError::DuplicateAddress(endpoint.address.clone()));
            }
            endpoint.metrics.sanitize();
            if let Some(error) = &mut endpoint.last_error {
                truncate_utf8(&mut error.message, MAX_ERROR_MESSAGE_BYTES);
                truncate_utf8(&mut error.reason, 32);
            }
        }
        Ok(())
    }

    /// The endpoint with this address, if listed.
    pub fn endpoint(&self, address: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.address == address)
    }
}

impl Endpoint {
    /// A reachable endpoint with no metrics read yet (how the configured static endpoints start).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            healthy: true,
            stale: true,
            last_scrape_ms: 0,
            consecutive_failures: 0,
            models: Vec::new(),
            metrics: EndpointMetrics::default(),
            last_error: None,
        }
    }

    /// Milliseconds since the last successful scrape at `now_ms`; `u64::MAX` if never scraped.
    pub fn metrics_age_ms(&self, now_ms: u64) -> u64 {
        if self.last_scrape_ms == 0 { u64::MAX } else { now_ms.saturating_sub(self.last_scrape_ms) }
    }

    /// Whether the pod's metrics can be believed at `now_ms`: the latest scrape read them and they
    /// are at most `max_age_ms` old.
    pub fn metrics_known(&self, now_ms: u64, max_age_ms: u64) -> bool {
        !self.stale && self.metrics_age_ms(now_ms) <= max_age_ms
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl EndpointMetrics {
    fn sanitize(&mut self) {
        self.kv_cache_usage = if self.kv_cache_usage.is_finite() { self.kv_cache_usage.clamp(0.0, 1.0) } else { 0.0 };
        for counter in [&mut self.prefix_cache_queries_total, &mut self.prefix_cache_hits_total] {
            if let Some(v) = counter
                && (!v.is_finite() || *v < 0.0)
            {
                *counter = None;
            }
        }
        if let Some(lora) = &mut self.lora {
            lora.running.truncate(MAX_ADAPTERS_PER_LIST);
            lora.waiting.truncate(MAX_ADAPTERS_PER_LIST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(address: &str) -> Endpoint {
        Endpoint {
            address: address.to_string(),
            healthy: true,
            stale: false,
            last_scrape_ms: 1_000,
            consecutive_failures: 0,
            models: vec!["m".into()],
            metrics: EndpointMetrics {
                waiting_requests: 1,
                running_requests: 2,
                kv_cache_usage: 0.5,
                ..Default::default()
            },
            last_error: None,
        }
    }

    fn snapshot(endpoints: Vec<Endpoint>) -> PoolSnapshot {
        PoolSnapshot {
            format_version: FORMAT_VERSION,
            sequence: 7,
            generated_at_ms: 1_000,
            engine: Engine::Vllm,
            endpoints,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let mut original = snapshot(vec![endpoint("10.0.0.1:8000"), endpoint("[::1]:9000")]);
        original.endpoints[0].metrics.lora =
            Some(LoraState { running: vec!["a".into()], waiting: vec![], max_loras: 4 });
        original.endpoints[0].metrics.cache_num_blocks = Some(12_000);
        original.endpoints[1].stale = true;
        original.endpoints[1].last_error = Some(ScrapeFailure {
            reason: "http_status".into(),
            message: "answered HTTP 404, expected 200: \"Not Found\"".into(),
            since_ms: 900,
        });
        let parsed = PoolSnapshot::from_json(&original.to_json()).expect("valid snapshot");
        assert_eq!(parsed, original);
    }

    #[test]
    fn rejects_other_format_versions() {
        let mut s = snapshot(vec![]);
        s.format_version = 99;
        assert_eq!(
            PoolSnapshot::from_json(&s.to_json()),
            Err(SnapshotError::UnsupportedVersion { found: 99, expected: FORMAT_VERSION })
        );
    }

    #[test]
    fn rejects_hostnames_and_duplicates() {
        let s = snapshot(vec![endpoint("vllm-0.vllm:8000")]);
        assert!(matches!(PoolSnapshot::from_json(&s.to_json()), Err(SnapshotError::BadAddress(_))));
        let s = snapshot(vec![endpoint("10.0.0.1:8000"), endpoint("10.0.0.1:8000")]);
        assert!(matches!(PoolSnapshot::from_json(&s.to_json()), Err(SnapshotError::DuplicateAddress(_))));
    }

    #[test]
    fn rejects_non_json_with_a_reason() {
        let err = PoolSnapshot::from_json(b"<html>502</html>").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn sanitises_out_of_range_gauges() {
        let mut s = snapshot(vec![endpoint("10.0.0.1:8000")]);
        s.endpoints[0].metrics.kv_cache_usage = 1.7;
        s.endpoints[0].metrics.prefix_cache_hits_total = Some(-3.0);
        let parsed = PoolSnapshot::from_json(&s.to_json()).unwrap();
        assert_eq!(parsed.endpoints[0].metrics.kv_cache_usage, 1.0);
        assert_eq!(parsed.endpoints[0].metrics.prefix_cache_hits_total, None);
    }

    #[test]
    fn error_messages_are_bounded_and_reachability_is_told_apart() {
        let mut s = snapshot(vec![endpoint("10.0.0.1:8000")]);
        s.endpoints[0].last_error =
            Some(ScrapeFailure { reason: "parse".into(), message: "é".repeat(MAX_ERROR_MESSAGE_BYTES), since_ms: 1 });
        let parsed = PoolSnapshot::from_json(&s.to_json()).unwrap();
        let error = parsed.endpoints[0].last_error.as_ref().unwrap();
        assert!(error.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(!error.is_unreachable());
        assert!(ScrapeFailure { reason: "connect".into(), message: String::new(), since_ms: 0 }.is_unreachable());
    }

    #[test]
    fn metrics_are_known_only_when_fresh_and_read() {
        let mut e = endpoint("10.0.0.1:8000");
        assert!(e.metrics_known(1_100, 200));
        assert!(!e.metrics_known(1_300, 200), "too old");
        e.stale = true;
        assert!(!e.metrics_known(1_100, 200), "the latest scrape failed");
    }

    #[test]
    fn bounds_endpoint_count() {
        let endpoints = (0..=MAX_ENDPOINTS).map(|i| endpoint(&format!("10.0.{}.{}:8000", i / 250, i % 250))).collect();
        assert!(matches!(
            PoolSnapshot::from_json(&snapshot(endpoints).to_json()),
            Err(SnapshotError::TooManyEndpoints { .. })
        ));
    }

    #[test]
    fn metrics_age_of_never_scraped_endpoint_is_infinite() {
        let mut e = endpoint("10.0.0.1:8000");
        e.last_scrape_ms = 0;
        assert_eq!(e.metrics_age_ms(5_000), u64::MAX);
        e.last_scrape_ms = 4_000;
        assert_eq!(e.metrics_age_ms(5_000), 1_000);
    }
}
