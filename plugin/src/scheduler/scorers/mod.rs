//! Scorers: each a pure function of (request, candidates) → a score in [0, 1] per candidate.

mod active_request;
mod kv_cache;
mod load_aware;
mod lora_affinity;
mod prefix_cache;
mod queue;
mod session_affinity;

use super::Candidate;
use crate::config::{ConfigError, parse_parameters};
use crate::request::SchedulingRequest;

pub trait Scorer {
    /// Writes one score in [0, 1] per candidate into `out` (same order, same length).
    fn score(&self, request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]);
}

/// Every scorer type this build knows.
pub const SCORER_TYPES: &[&str] = &[
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "prefix-cache-scorer",
    "lora-affinity-scorer",
    "active-request-scorer",
    "load-aware-scorer",
    "session-affinity-scorer",
];

/// Builds the scorer of `plugin_type`, `None` if it is not a scorer type.
pub fn build(
    plugin_type: &str,
    parameters: &serde_json::Value,
    path: &str,
) -> Result<Option<Box<dyn Scorer>>, ConfigError> {
    Ok(Some(match plugin_type {
        "queue-scorer" => Box::new(queue::QueueScorer),
        "kv-cache-utilization-scorer" => Box::new(kv_cache::KvCacheScorer),
        "prefix-cache-scorer" => Box::new(prefix_cache::PrefixCacheScorer::new(parse_parameters(parameters, path)?)),
        "lora-affinity-scorer" => Box::new(lora_affinity::LoraAffinityScorer),
        "active-request-scorer" => Box::new(active_request::ActiveRequestScorer),
        "load-aware-scorer" => Box::new(load_aware::LoadAwareScorer::new(parse_parameters(parameters, path)?)),
        "session-affinity-scorer" => Box::new(session_affinity::SessionAffinityScorer),
        _ => return Ok(None),
    }))
}

/// (max − x) / (max − min) over the candidates; all equal → 1 for everyone.
pub(crate) fn normalised_low_is_better(values: &[f64], out: &mut [f64]) {
    let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    for (o, &v) in out.iter_mut().zip(values) {
        *o = if max > min { (max - v) / (max - min) } else { 1.0 };
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Candidate;
    use crate::memory::InFlight;
    use crate::pool::{Endpoint, EndpointMetrics, LoraState};

    pub fn endpoint(address: &str, waiting: u32, running: u32, kv: f64) -> Endpoint {
        Endpoint {
            address: address.into(),
            healthy: true,
            stale: false,
            last_scrape_ms: 1,
            consecutive_failures: 0,
            models: vec![],
            metrics: EndpointMetrics {
                waiting_requests: waiting,
                running_requests: running,
                kv_cache_usage: kv,
                ..Default::default()
            },
            last_error: None,
        }
    }

    pub fn with_lora(mut e: Endpoint, running: &[&str], waiting: &[&str], max: u32) -> Endpoint {
        e.metrics.lora = Some(LoraState {
            running: running.iter().map(|s| s.to_string()).collect(),
            waiting: waiting.iter().map(|s| s.to_string()).collect(),
            max_loras: max,
        });
        e
    }

    pub fn candidates(endpoints: &[Endpoint], in_flight: &[u32], matched: &[u32]) -> Vec<Candidate<'static>> {
        endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Candidate {
                endpoint: Box::leak(Box::new(e.clone())),
                in_flight: InFlight { requests: in_flight.get(i).copied().unwrap_or(0), prompt_tokens: 0 },
                prefix_matched: matched.get(i).copied().unwrap_or(0),
                metrics_age_ms: 0,
            })
            .collect()
    }

    pub fn request() -> crate::request::SchedulingRequest {
        let config = crate::config::PluginConfig::default();
        crate::request::parse_request(
            crate::request::ApiKind::Completions,
            br#"{"model":"m","prompt":"hello"}"#,
            &Default::default(),
            &config,
        )
        .unwrap_or_else(|e| panic!("test request: {e}"))
    }
}
