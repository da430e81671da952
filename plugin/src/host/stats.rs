//! Envoy stats through proxy-wasm metrics. Envoy exposes them with the `wasmcustom.` prefix, e.g.
//! `wasmcustom.wis.decisions`. Defined once per VM at configuration; in Service Extensions mode the
//! host has no custom metrics, so nothing here is defined or called there.

use super::abi::{self, MetricKind};
use hashbrown::HashMap;

/// Upper bound on per-endpoint decision counters: an InferencePool is a few hundred pods; the bound
/// keeps pod churn (new IPs) from defining stats forever.
const MAX_ENDPOINT_STATS: usize = 1024;

/// Counters and histograms of one VM. A metric the host refused to define is simply not recorded.
#[derive(Debug, Default)]
pub struct Stats {
    ids: HashMap<&'static str, u32>,
    endpoint_ids: HashMap<String, u32>,
}

/// Every fixed metric: name, kind, meaning.
const METRICS: &[(&str, MetricKind)] = &[
    // Requests on an inference path that got a routing decision.
    ("wis.decisions", MetricKind::Counter),
    // Requests not on an inference path, passed through untouched.
    ("wis.passthrough", MetricKind::Counter),
    // Decisions where the saturation filter removed every endpoint and all were used instead.
    ("wis.decisions.fell_back_to_all", MetricKind::Counter),
    // Local replies by status.
    ("wis.local_replies.400", MetricKind::Counter),
    ("wis.local_replies.404", MetricKind::Counter),
    ("wis.local_replies.413", MetricKind::Counter),
    ("wis.local_replies.429", MetricKind::Counter),
    ("wis.local_replies.500", MetricKind::Counter),
    ("wis.local_replies.503", MetricKind::Counter),
    // A host call failed on the data path and the request continued without a decision
    // (Envoy's fallback load balancing, still only pool members).
    ("wis.fail_open", MetricKind::Counter),
    // Microseconds from body complete to header set.
    ("wis.scheduling_us", MetricKind::Histogram),
    // Snapshot hand-off from the scraper.
    ("wis.snapshot.fetch_ok", MetricKind::Counter),
    ("wis.snapshot.fetch_failed", MetricKind::Counter),
    ("wis.snapshot.endpoints", MetricKind::Gauge),
    ("wis.snapshot.age_ms", MetricKind::Gauge),
    // Routing log replication.
    ("wis.log.lost", MetricKind::Counter),
    ("wis.log.append_failed", MetricKind::Counter),
    // A retry served the request on another endpoint than the primary.
    ("wis.served_elsewhere", MetricKind::Counter),
    // Prefix prediction versus what the pod reported (cached_tokens, in blocks).
    ("wis.prefix.predicted_blocks", MetricKind::Counter),
    ("wis.prefix.observed_blocks", MetricKind::Counter),
    ("wis.prefix.prompt_blocks", MetricKind::Counter),
    // Responses that reported cached_tokens (closed loop) or did not (open loop: the pod runs
    // without --enable-prompt-tokens-details, so the index is never corrected).
    ("wis.prefix.feedback", MetricKind::Counter),
    ("wis.prefix.no_feedback", MetricKind::Counter),
    // Predicted a hit and the pod had one / predicted a hit and the pod had none.
    ("wis.prefix.prediction_confirmed", MetricKind::Counter),
    ("wis.prefix.prediction_wrong", MetricKind::Counter),
];

impl Stats {
    pub fn define() -> Self {
        let mut ids = HashMap::with_capacity(METRICS.len());
        for &(name, kind) in METRICS {
            if let Ok(id) = abi::define_metric(kind, name) {
                ids.insert(name, id);
            }
        }
        Self { ids, endpoint_ids: HashMap::new() }
    }

    pub fn add(&self, name: &'static str, by: u64) {
        if let Some(&id) = self.ids.get(name) {
            let _ = abi::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    pub fn inc(&self, name: &'static str) {
        self.add(name, 1);
    }

    /// Sets a gauge or records a histogram sample.
    pub fn record(&self, name: &'static str, value: u64) {
        if let Some(&id) = self.ids.get(name) {
            let _ = abi::record_metric(id, value);
        }
    }

    pub fn local_reply(&self, status: u16) {
        let name = match status {
            400 => "wis.local_replies.400",
            404 => "wis.local_replies.404",
            413 => "wis.local_replies.413",
            429 => "wis.local_replies.429",
            503 => "wis.local_replies.503",
            _ => "wis.local_replies.500",
        };
        self.inc(name);
    }

    /// `wis.endpoint.<ip:port>.decisions`: how many requests this VM sent to each endpoint.
    pub fn endpoint_decision(&mut self, address: &str) {
        let id = match self.endpoint_ids.get(address) {
            Some(&id) => Some(id),
            None if self.endpoint_ids.len() < MAX_ENDPOINT_STATS => {
                let name = format!("wis.endpoint.{address}.decisions");
                abi::define_metric(MetricKind::Counter, &name).ok().inspect(|&id| {
                    self.endpoint_ids.insert(address.to_string(), id);
                })
            }
            None => None,
        };
        if let Some(id) = id {
            let _ = abi::increment_metric(id, 1);
        }
    }
}
