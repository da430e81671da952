//! Scorers: each a pure function of (request, candidates) → a score in [0, 1] per candidate, its
//! formula in its file's doc comment. A candidate whose metrics are unknown
//! ([`Candidate::metrics_known`]) is scored on what the gateway knows itself: its in-flight count
//! (through [`Candidate::effective_queue`]) and its prefix memory; a scorer that only has the pod's
//! metrics to go on gives it the known candidates' average, so it is neither favoured nor punished.
//! To add one: a file here and one line in [`super::registry::REGISTRY`].

pub mod active_request;
pub mod kv_cache;
pub mod load_aware;
pub mod lora_affinity;
pub mod prefix_cache;
pub mod queue;
pub mod session_affinity;

use super::Candidate;
use crate::request::SchedulingRequest;

pub trait Scorer {
    /// Writes one score in [0, 1] per candidate into `out` (same order, same length).
    fn score(&self, request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]);

    /// Whether the score measures load (queues, KV usage, requests in flight): a reading of this
    /// moment that differs between gateway replicas, rather than where the request belongs. The
    /// picker places a prompt no endpoint is known to hold without these scores.
    fn measures_load(&self) -> bool {
        false
    }
}

/// Known candidates' average of `score`, for those whose metrics are unknown (1 when none is known:
/// then the scorer cannot tell them apart at all).
pub(crate) fn known_average(candidates: &[Candidate], score: impl Fn(&Candidate) -> f64) -> f64 {
    let (sum, n) = candidates.iter().filter(|c| c.metrics_known).fold((0.0, 0u32), |(s, n), c| (s + score(c), n + 1));
    if n == 0 { 1.0 } else { sum / f64::from(n) }
}

/// (max − x) / (max − min) over the candidates; all equal → 1 for everyone.
pub(crate) fn normalised_low_is_better(candidates: &[Candidate], value: impl Fn(&Candidate) -> f64, out: &mut [f64]) {
    let (min, max) =
        candidates.iter().map(&value).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    for (o, c) in out.iter_mut().zip(candidates) {
        let v = value(c);
        *o = if max > min { (max - v) / (max - min) } else { 1.0 };
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Candidate;
    use crate::endpoints::EndpointId;
    use crate::memory::InFlight;
    use crate::pool::{Endpoint, EndpointMetrics, LoraState};

    pub fn endpoint(address: &str, waiting: u32, running: u32, kv: f64) -> Endpoint {
        Endpoint {
            stale: false,
            last_scrape_ms: 1,
            metrics: EndpointMetrics {
                waiting_requests: waiting,
                running_requests: running,
                kv_cache_usage: kv,
                ..Default::default()
            },
            ..Endpoint::new(address)
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
                position: i as u32,
                id: EndpointId(i as u32),
                endpoint: Box::leak(Box::new(e.clone())),
                in_flight: InFlight { requests: in_flight.get(i).copied().unwrap_or(0), prompt_tokens: 0 },
                prefix_matched: matched.get(i).copied().unwrap_or(0),
                metrics_age_ms: 0,
                metrics_known: true,
                address_hash: crate::scheduler::fnv1a(&e.address),
                model_hash: e.models.first().map_or(0, |m| crate::scheduler::fnv1a(m)),
            })
            .collect()
    }

    /// The same candidates with the metrics of those at `unknown` marked unknown.
    pub fn with_unknown(mut c: Vec<Candidate<'static>>, unknown: &[usize]) -> Vec<Candidate<'static>> {
        for &i in unknown {
            c[i].metrics_known = false;
        }
        c
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
