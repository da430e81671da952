//! `saturation-filter`: drops endpoints that are saturated, after GAIE/llm-d's saturation detector.
//!
//! An endpoint is saturated when its waiting queue ≥ `queueThreshold` (5), or its KV-cache usage ≥
//! `kvCacheThreshold` (0.8), or its metrics are older than `metricsStalenessThreshold` (200 ms).
//! If every candidate is saturated, the filter keeps them all (and the decision says so): an
//! overloaded pool still serves, it just stops preferring. The queue used is the gateway's
//! effective queue (see `Candidate::effective_queue`).
//!
//! Shedding (429 for priority < 0) uses only fresh signals (queue and KV), not staleness: a dead
//! scraper must not turn into refused requests.

use super::Candidate;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SaturationParams {
    pub queue_threshold: u32,
    pub kv_cache_threshold: f64,
    pub metrics_staleness_threshold_ms: u64,
}

impl Default for SaturationParams {
    fn default() -> Self {
        Self { queue_threshold: 5, kv_cache_threshold: 0.8, metrics_staleness_threshold_ms: 200 }
    }
}

impl SaturationParams {
    /// Saturated by fresh load signals (what shedding looks at).
    pub fn overloaded(&self, c: &Candidate) -> bool {
        c.effective_queue() >= self.queue_threshold || c.endpoint.metrics.kv_cache_usage >= self.kv_cache_threshold
    }

    /// Why the filter drops this endpoint, if it does.
    pub fn reason(&self, c: &Candidate) -> Option<String> {
        if c.metrics_age_ms > self.metrics_staleness_threshold_ms {
            return Some(if c.metrics_age_ms == u64::MAX {
                "saturated: metrics never scraped".to_string()
            } else {
                format!("saturated: metrics {} ms old", c.metrics_age_ms)
            });
        }
        if c.effective_queue() >= self.queue_threshold {
            return Some(format!("saturated: queue {} ≥ {}", c.effective_queue(), self.queue_threshold));
        }
        let kv = c.endpoint.metrics.kv_cache_usage;
        if kv >= self.kv_cache_threshold {
            return Some(format!("saturated: kv-cache {kv:.2} ≥ {}", self.kv_cache_threshold));
        }
        None
    }
}
