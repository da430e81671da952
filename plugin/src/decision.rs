//! A scheduling decision: the primary endpoint, the fallbacks, and why.

use crate::scheduler::Candidate;
use serde::Serialize;

/// Most endpoint rows the JSON debug header carries: the primary and fallbacks first, then the
/// best-scored others. Bounds the header (about 300 bytes a row) whatever the pool size.
pub const MAX_DEBUG_ROWS: usize = 32;

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

    /// The decision as one line of compact JSON for the debug header: like [`Self::to_json`], but
    /// with at most [`MAX_DEBUG_ROWS`] endpoint rows (primary, fallbacks, then by total score) and
    /// `omitted_rows` saying how many were left out.
    pub fn debug_json(&self) -> String {
        #[derive(Serialize)]
        struct Bounded<'a> {
            #[serde(flatten)]
            head: Head<'a>,
            scores: Vec<&'a EndpointScores>,
            omitted_rows: usize,
        }
        #[derive(Serialize)]
        struct Head<'a> {
            primary: &'a str,
            fallbacks: &'a [String],
            profile: &'a str,
            picker: &'a str,
            predicted_cached_blocks: u32,
            total_blocks: u32,
            fell_back_to_all: bool,
        }
        let rank = |row: &EndpointScores| {
            if row.address == self.primary {
                0
            } else if let Some(i) = self.fallbacks.iter().position(|f| *f == row.address) {
                1 + i
            } else {
                usize::MAX
            }
        };
        let mut rows: Vec<&EndpointScores> = self.scores.iter().collect();
        rows.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.total.total_cmp(&a.total)));
        let omitted_rows = rows.len().saturating_sub(MAX_DEBUG_ROWS);
        rows.truncate(MAX_DEBUG_ROWS);
        let bounded = Bounded {
            head: Head {
                primary: &self.primary,
                fallbacks: &self.fallbacks,
                profile: &self.profile,
                picker: &self.picker,
                predicted_cached_blocks: self.predicted_cached_blocks,
                total_blocks: self.total_blocks,
                fell_back_to_all: self.fell_back_to_all,
            },
            scores: rows,
            omitted_rows,
        };
        serde_json::to_string(&bounded).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The whole decision as JSON (for the decision view).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(address: &str, total: f64) -> EndpointScores {
        EndpointScores {
            address: address.into(),
            filtered_out: None,
            scores: vec![ScorerScore { scorer: "queue-scorer".into(), score: total / 2.0, weight: 2.0 }],
            total,
            prefix_matched_blocks: 0,
            in_flight: 0,
            effective_queue: 0,
            kv_cache_usage: 0.0,
        }
    }

    fn decision(rows: usize) -> Decision {
        Decision {
            primary: "10.0.0.3:8000".into(),
            fallbacks: vec!["10.0.0.7:8000".into()],
            profile: "default".into(),
            picker: "max-score-picker".into(),
            scores: (0..rows).map(|i| row(&format!("10.0.0.{i}:8000"), i as f64 / 100.0)).collect(),
            predicted_cached_blocks: 4,
            total_blocks: 9,
            fell_back_to_all: false,
        }
    }

    #[test]
    fn debug_json_keeps_every_row_of_a_small_pool() {
        let value: serde_json::Value = serde_json::from_str(&decision(8).debug_json()).unwrap();
        assert_eq!(value["primary"], "10.0.0.3:8000");
        assert_eq!(value["fallbacks"][0], "10.0.0.7:8000");
        assert_eq!(value["omitted_rows"], 0);
        let rows = value["scores"].as_array().unwrap();
        assert_eq!(rows.len(), 8);
        // Primary, then fallbacks, then the others best first.
        let order: Vec<&str> = rows.iter().map(|r| r["address"].as_str().unwrap()).collect();
        assert_eq!(&order[..3], &["10.0.0.3:8000", "10.0.0.7:8000", "10.0.0.6:8000"]);
        assert_eq!(rows[0]["scores"][0]["weight"], 2.0);
    }

    #[test]
    fn debug_json_bounds_a_large_pool_and_stays_one_header_line() {
        let text = decision(1000).debug_json();
        assert!(!text.contains('\n') && !text.contains('\r'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows = value["scores"].as_array().unwrap();
        assert_eq!(rows.len(), MAX_DEBUG_ROWS);
        assert_eq!(value["omitted_rows"], 1000 - MAX_DEBUG_ROWS);
        assert_eq!(rows[0]["address"], "10.0.0.3:8000");
        assert_eq!(rows[2]["address"], "10.0.0.999:8000");
    }
}
