//! A scheduling decision: the primary endpoint, the fallbacks, and why.

use crate::scheduler::Candidate;
use serde::Serialize;

/// One scorer's verdict on one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScorerScore {
    pub scorer: String,
    /// In [0, 1].
    pub score: f64,
    pub weight: f64,
}

/// How one pool endpoint fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointScores {
    pub address: String,
    /// Why it was not a candidate (unhealthy, outside the subset, saturated...), if it was not.
    pub filtered_out: Option<String>,
    pub scores: Vec<ScorerScore>,
    /// Σ weight × score.
    pub total: f64,
    pub prefix_matched_blocks: u32,
    pub in_flight: u32,
    pub effective_queue: u32,
    pub kv_cache_usage: f64,
}

impl EndpointScores {
    pub(crate) fn new(candidate: &Candidate, filtered_out: Option<String>) -> Self {
        Self {
            address: candidate.endpoint.address.clone(),
            filtered_out,
            scores: Vec::new(),
            total: 0.0,
            prefix_matched_blocks: candidate.prefix_matched,
            in_flight: candidate.in_flight.requests,
            effective_queue: candidate.effective_queue(),
            kv_cache_usage: candidate.endpoint.metrics.kv_cache_usage,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub primary: String,
    /// Next-best distinct endpoints, for Envoy's retries.
    pub fallbacks: Vec<String>,
    pub profile: String,
    pub picker: String,
    /// Every pool endpoint, in pool order.
    pub scores: Vec<EndpointScores>,
    /// Prompt blocks the index predicts the primary holds.
    pub predicted_cached_blocks: u32,
    pub total_blocks: u32,
    /// The saturation filter removed every endpoint, so all were used.
    pub fell_back_to_all: bool,
}

impl Decision {
    /// `x-gateway-destination-endpoint`: primary, then fallbacks, comma-separated.
    pub fn header_value(&self) -> String {
        let mut value = self.primary.clone();
        for fallback in &self.fallbacks {
            value.push(',');
            value.push_str(fallback);
        }
        value
    }

    /// One line for the debug header: the winner and each scorer's score for it.
    pub fn debug_summary(&self) -> String {
        let mut out = format!("endpoint={} profile={}", self.primary, self.profile);
        if let Some(row) = self.scores.iter().find(|r| r.address == self.primary) {
            out.push_str(&format!(" total={:.3}", row.total));
            for s in &row.scores {
                out.push_str(&format!(" {}={:.3}x{}", s.scorer, s.score, s.weight));
            }
        }
        out.push_str(&format!(" prefix={}/{}", self.predicted_cached_blocks, self.total_blocks));
        if self.fell_back_to_all {
            out.push_str(" all-saturated");
        }
        if !self.fallbacks.is_empty() {
            out.push_str(&format!(" fallbacks={}", self.fallbacks.join(",")));
        }
        out
    }

    /// The whole decision as JSON (for the decision view).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
