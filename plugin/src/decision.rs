//! A scheduling decision: the primary endpoint, the fallbacks, and, when asked for, why.
//!
//! On the hot path a decision is a handful of integers (pool positions and counts); addresses are
//! looked up only to write the destination header. The per-endpoint rows (every scorer's score, why
//! an endpoint was filtered out) are built only when the caller asks for the detail: the debug header
//! and the decision view.

use crate::endpoints::Pool;
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
    /// Whether its metrics were believed; false = scored on the gateway's own counts.
    pub metrics_known: bool,
    pub scores: Vec<ScorerScore>,
    /// Σ weight × score.
    pub total: f64,
    pub prefix_matched_blocks: u32,
    pub in_flight: u32,
    pub effective_queue: u32,
    pub kv_cache_usage: f64,
}

/// The per-endpoint story of a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionDetail {
    pub profile: String,
    pub picker: String,
    /// Every pool endpoint, in pool order.
    pub scores: Vec<EndpointScores>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Pool position of the chosen endpoint.
    pub primary: u32,
    /// Next-best distinct endpoints (pool positions), for Envoy's retries.
    pub fallbacks: Vec<u32>,
    /// Prompt blocks the index predicts the primary holds.
    pub predicted_cached_blocks: u32,
    pub total_blocks: u32,
    /// The saturation filter removed every endpoint, so all were used.
    pub fell_back_to_all: bool,
    /// No member was reachable, so the request was routed among all of them.
    pub no_healthy_endpoint: bool,
    /// The primary's metrics were believed (false: chosen on the gateway's own counts).
    pub primary_metrics_known: bool,
    /// Candidates whose metrics were unknown.
    pub unknown_metrics: u32,
    /// No candidate was known to hold any of the prompt, and the picker placed it by the
    /// conversation's key (rendezvous rank) rather than by the load scores.
    pub placed_by_key: bool,
    /// Present when the caller asked for it (`SchedulingContext::detail`).
    pub detail: Option<Box<DecisionDetail>>,
}

impl Decision {
    /// The chosen endpoint's address.
    pub fn primary_address<'p>(&self, pool: &'p Pool) -> &'p str {
        pool.address(self.primary)
    }

    /// Fallback addresses, in order.
    pub fn fallback_addresses<'p>(&self, pool: &'p Pool) -> Vec<&'p str> {
        self.fallbacks.iter().map(|&p| pool.address(p)).collect()
    }

    /// `x-gateway-destination-endpoint`: primary, then fallbacks, comma-separated.
    pub fn header_value(&self, pool: &Pool) -> String {
        let mut value = String::with_capacity(24 * (1 + self.fallbacks.len()));
        value.push_str(pool.address(self.primary));
        for &fallback in &self.fallbacks {
            value.push(',');
            value.push_str(pool.address(fallback));
        }
        value
    }

    /// One line for the debug header: the winner and each scorer's score for it.
    pub fn debug_summary(&self, pool: &Pool) -> String {
        let primary = pool.address(self.primary);
        let mut out = format!("endpoint={primary}");
        if let Some(detail) = &self.detail {
            out.push_str(&format!(" profile={}", detail.profile));
            if let Some(row) = detail.scores.iter().find(|r| r.address == primary) {
                out.push_str(&format!(" total={:.3}", row.total));
                for s in &row.scores {
                    out.push_str(&format!(" {}={:.3}x{}", s.scorer, s.score, s.weight));
                }
            }
        }
        out.push_str(&format!(" prefix={}/{}", self.predicted_cached_blocks, self.total_blocks));
        if !self.primary_metrics_known {
            out.push_str(" metrics-unknown");
        }
        if self.no_healthy_endpoint {
            out.push_str(" no-healthy-endpoint");
        }
        if self.fell_back_to_all {
            out.push_str(" all-saturated");
        }
        if self.placed_by_key {
            out.push_str(" placed-by-key");
        }
        if !self.fallbacks.is_empty() {
            out.push_str(&format!(" fallbacks={}", self.fallback_addresses(pool).join(",")));
        }
        out
    }

    /// The decision as one line of compact JSON for the debug header: like [`Self::to_json`], but
    /// with at most [`MAX_DEBUG_ROWS`] endpoint rows (primary, fallbacks, then by total score) and
    /// `omitted_rows` saying how many were left out.
    pub fn debug_json(&self, pool: &Pool) -> String {
        self.json(pool, Some(MAX_DEBUG_ROWS))
    }

    /// The whole decision as JSON (for the decision view).
    pub fn to_json(&self, pool: &Pool) -> String {
        self.json(pool, None)
    }

    fn json(&self, pool: &Pool, max_rows: Option<usize>) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            primary: &'a str,
            fallbacks: Vec<&'a str>,
            profile: &'a str,
            picker: &'a str,
            predicted_cached_blocks: u32,
            total_blocks: u32,
            fell_back_to_all: bool,
            no_healthy_endpoint: bool,
            primary_metrics_known: bool,
            unknown_metrics: u32,
            placed_by_key: bool,
            scores: Vec<&'a EndpointScores>,
            omitted_rows: usize,
        }
        let primary = pool.address(self.primary);
        let fallbacks = self.fallback_addresses(pool);
        let (profile, picker, mut rows) = match &self.detail {
            Some(d) => (d.profile.as_str(), d.picker.as_str(), d.scores.iter().collect::<Vec<_>>()),
            None => ("", "", Vec::new()),
        };
        let rank = |row: &EndpointScores| {
            if row.address == primary {
                0
            } else if let Some(i) = fallbacks.iter().position(|f| *f == row.address) {
                1 + i
            } else {
                usize::MAX
            }
        };
        let mut omitted_rows = 0;
        if let Some(max) = max_rows {
            rows.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.total.total_cmp(&a.total)));
            omitted_rows = rows.len().saturating_sub(max);
            rows.truncate(max);
        }
        let json = Json {
            primary,
            fallbacks,
            profile,
            picker,
            predicted_cached_blocks: self.predicted_cached_blocks,
            total_blocks: self.total_blocks,
            fell_back_to_all: self.fell_back_to_all,
            no_healthy_endpoint: self.no_healthy_endpoint,
            primary_metrics_known: self.primary_metrics_known,
            unknown_metrics: self.unknown_metrics,
            placed_by_key: self.placed_by_key,
            scores: rows,
            omitted_rows,
        };
        serde_json::to_string(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::memory::RoutingMemory;
    use crate::pool::PoolSnapshot;

    fn row(address: &str, total: f64) -> EndpointScores {
        EndpointScores {
            address: address.into(),
            filtered_out: None,
            metrics_known: true,
            scores: vec![ScorerScore { scorer: "queue-scorer".into(), score: total / 2.0, weight: 2.0 }],
            total,
            prefix_matched_blocks: 0,
            in_flight: 0,
            effective_queue: 0,
            kv_cache_usage: 0.0,
        }
    }

    fn pool(n: usize) -> Pool {
        let addresses: Vec<String> = (0..n).map(|i| format!("10.0.{}.{}:8000", i / 250, i % 250)).collect();
        RoutingMemory::new(&PluginConfig::default()).install(PoolSnapshot::from_static(&addresses))
    }

    fn decision(pool: &Pool) -> Decision {
        Decision {
            primary: 3,
            fallbacks: vec![7],
            predicted_cached_blocks: 4,
            total_blocks: 9,
            fell_back_to_all: false,
            no_healthy_endpoint: false,
            primary_metrics_known: true,
            unknown_metrics: 0,
            placed_by_key: false,
            detail: Some(Box::new(DecisionDetail {
                profile: "default".into(),
                picker: "max-score-picker".into(),
                scores: pool.endpoints().iter().enumerate().map(|(i, e)| row(&e.address, i as f64 / 100.0)).collect(),
            })),
        }
    }

    #[test]
    fn the_header_lists_primary_then_fallbacks() {
        let pool = pool(8);
        assert_eq!(decision(&pool).header_value(&pool), "10.0.0.3:8000,10.0.0.7:8000");
    }

    #[test]
    fn debug_json_keeps_every_row_of_a_small_pool() {
        let pool = pool(8);
        let value: serde_json::Value = serde_json::from_str(&decision(&pool).debug_json(&pool)).unwrap();
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
        let pool = pool(1000);
        let text = decision(&pool).debug_json(&pool);
        assert!(!text.contains('\n') && !text.contains('\r'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows = value["scores"].as_array().unwrap();
        assert_eq!(rows.len(), MAX_DEBUG_ROWS);
        assert_eq!(value["omitted_rows"], 1000 - MAX_DEBUG_ROWS);
        assert_eq!(rows[0]["address"], "10.0.0.3:8000");
        assert_eq!(rows[2]["address"], "10.0.3.249:8000");
    }
}
