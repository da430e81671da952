//! `saturation-filter`: drops endpoints that are saturated, after GAIE/llm-d's saturation detector.
//!
//! An endpoint is saturated when its waiting queue ≥ `queueThreshold` (5), or its KV-cache usage ≥
//! `kvCacheThreshold` (0.8), or its metrics are older than `metricsStalenessThresholdMs` (200 ms) or
//! unreadable. If every candidate is saturated, the filter keeps them all (and the decision says so):
//! an overloaded pool still serves, it just stops preferring. The queue used is the gateway's
//! effective queue (see `Candidate::effective_queue`).
//!
//! Not in the default profile: on a busy pool it sends a prefix away from the pod holding it (see
//! `plugin/CONFIG.md` and `bench/results/REPORT.md`).
//!
//! Shedding (429 for priority < 0) uses the same thresholds whether or not the filter is in the
//! profile, and only fresh, known signals (queue and KV), never staleness: a dead scraper must not
//! turn into refused requests.

use super::{CandidateSet, Filter};
use crate::request::SchedulingRequest;
use crate::scheduler::{Candidate, Exclusion, ScheduleError};
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
    /// Saturated by fresh load signals (what shedding looks at); unknown metrics never are.
    pub fn overloaded(&self, c: &Candidate) -> bool {
        c.metrics_known
            && (c.effective_queue() >= self.queue_threshold
                || c.endpoint.metrics.kv_cache_usage >= self.kv_cache_threshold)
    }

    /// Why the filter drops this endpoint, if it does.
    pub fn exclusion(&self, c: &Candidate) -> Option<Exclusion> {
        if c.metrics_age_ms == u64::MAX {
            return Some(Exclusion::NeverScraped);
        }
        if c.metrics_age_ms > self.metrics_staleness_threshold_ms || c.endpoint.stale {
            return Some(Exclusion::MetricsTooOld { age_ms: c.metrics_age_ms });
        }
        let queue = c.effective_queue();
        if queue >= self.queue_threshold {
            return Some(Exclusion::QueueSaturated { queue, threshold: self.queue_threshold });
        }
        let usage = c.endpoint.metrics.kv_cache_usage;
        if usage >= self.kv_cache_threshold {
            return Some(Exclusion::KvCacheSaturated { usage, threshold: self.kv_cache_threshold });
        }
        None
    }
}

pub struct SaturationFilter {
    pub params: SaturationParams,
}

impl Filter for SaturationFilter {
    fn name(&self) -> &'static str {
        "saturation-filter"
    }

    fn filter(&self, _request: &SchedulingRequest, set: &mut CandidateSet) -> Result<(), ScheduleError> {
        if !set.retain_unless_none_pass(|c| self.params.exclusion(c)) {
            set.flags.fell_back_to_all = true;
        }
        Ok(())
    }
}
