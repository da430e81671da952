//! Pickers: turn weighted totals into an ordered choice, primary first, then fallbacks.
//!
//! - `max-score-picker` (llm-d's default): the highest total wins. Near-ties (within
//!   `tieTolerance` × the profile's total weight) are broken by **rendezvous hashing** of the
//!   request's affinity key with each endpoint's address, so independent gateway replicas, each
//!   with its own memory, send a new conversation to the same pod. Among the near-tied, endpoints
//!   whose in-flight count exceeds (1 + `maxLoadImbalance`) × the average + 1 are skipped while
//!   another remains (**bounded load**): a popular key cannot pile onto one pod.
//! - `random-picker`: uniform, from the request's seed.
//! - `weighted-random-picker`: probability proportional to the total score.
//!
//! Fallbacks are the remaining candidates by total, ties by the same rendezvous rank.

use super::{Candidate, fnv1a, mix64};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MaxScoreParams {
    pub tie_tolerance: f64,
    pub max_load_imbalance: f64,
}

impl Default for MaxScoreParams {
    fn default() -> Self {
        Self { tie_tolerance: 0.02, max_load_imbalance: 0.25 }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Picker {
    MaxScore(MaxScoreParams),
    Random,
    WeightedRandom,
}

impl Picker {
    pub fn name(&self) -> &'static str {
        match self {
            Self::MaxScore(_) => "max-score-picker",
            Self::Random => "random-picker",
            Self::WeightedRandom => "weighted-random-picker",
        }
    }

    /// Candidate indices in order of preference.
    pub fn order(
        &self,
        totals: &[f64],
        candidates: &[Candidate],
        key: u64,
        seed: u64,
        total_weight: f64,
    ) -> Vec<usize> {
        let rank: Vec<u64> = candidates.iter().map(|c| mix64(key ^ fnv1a(&c.endpoint.address))).collect();
        let mut by_score: Vec<usize> = (0..candidates.len()).collect();
        by_score.sort_by(|&a, &b| totals[b].total_cmp(&totals[a]).then(rank[b].cmp(&rank[a])));
        let primary = match self {
            Self::MaxScore(params) => {
                let Some(&best_index) = by_score.first() else { return Vec::new() };
                let tolerance = params.tie_tolerance * total_weight.max(f64::EPSILON);
                let near: Vec<usize> =
                    by_score.iter().copied().filter(|&i| totals[i] >= totals[best_index] - tolerance).collect();
                let average =
                    candidates.iter().map(|c| f64::from(c.in_flight.requests)).sum::<f64>() / candidates.len() as f64;
                let bound = (1.0 + params.max_load_imbalance) * average + 1.0;
                let eligible: Vec<usize> =
                    near.iter().copied().filter(|&i| f64::from(candidates[i].in_flight.requests) <= bound).collect();
                let pool = if eligible.is_empty() { &near } else { &eligible };
                pool.iter().copied().max_by_key(|&i| rank[i]).unwrap_or(best_index)
            }
            Self::Random => (mix64(seed) % candidates.len().max(1) as u64) as usize,
            Self::WeightedRandom => {
                let sum: f64 = totals.iter().map(|t| t.max(0.0)).sum();
                let unit = (mix64(seed) >> 11) as f64 / (1u64 << 53) as f64;
                if sum <= 0.0 {
                    (mix64(seed) % candidates.len().max(1) as u64) as usize
                } else {
                    let mut target = unit * sum;
                    let mut chosen = candidates.len().saturating_sub(1);
                    for (i, t) in totals.iter().enumerate() {
                        target -= t.max(0.0);
                        if target <= 0.0 {
                            chosen = i;
                            break;
                        }
                    }
                    chosen
                }
            }
        };
        let mut order = Vec::with_capacity(candidates.len());
        if primary < candidates.len() {
            order.push(primary);
        }
        order.extend(by_score.into_iter().filter(|&i| i != primary));
        order
    }
}

#[cfg(test)]
mod tests {
    use super::super::scorers::test_support::*;
    use super::*;

    fn pool(n: usize) -> Vec<crate::pool::Endpoint> {
        (0..n).map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0, 0.0)).collect()
    }

    #[test]
    fn highest_total_wins_and_fallbacks_follow_by_score() {
        let c = candidates(&pool(3), &[], &[]);
        let order = Picker::MaxScore(MaxScoreParams::default()).order(&[1.0, 5.0, 3.0], &c, 7, 0, 7.0);
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn ties_are_broken_by_the_key_the_same_way_everywhere() {
        let c = candidates(&pool(4), &[], &[]);
        let picker = Picker::MaxScore(MaxScoreParams::default());
        for key in 0..50u64 {
            let a = picker.order(&[1.0; 4], &c, key, 1, 7.0);
            let b = picker.order(&[1.0; 4], &c, key, 999, 7.0);
            assert_eq!(a[0], b[0], "same key, same primary, whatever the seed");
        }
    }

    #[test]
    fn different_keys_spread_across_endpoints() {
        let c = candidates(&pool(4), &[], &[]);
        let picker = Picker::MaxScore(MaxScoreParams::default());
        let mut counts = [0usize; 4];
        for key in 0..200u64 {
            counts[picker.order(&[1.0; 4], &c, mix64(key), 0, 7.0)[0]] += 1;
        }
        assert!(counts.iter().all(|&n| n >= 25), "rendezvous spreads new prefixes: {counts:?}");
    }

    #[test]
    fn bounded_load_skips_an_overloaded_tie() {
        let picker = Picker::MaxScore(MaxScoreParams::default());
        let key = (0..1000u64)
            .find(|&k| picker.order(&[1.0; 2], &candidates(&pool(2), &[], &[]), k, 0, 7.0)[0] == 0)
            .unwrap_or(0);
        let loaded = candidates(&pool(2), &[10, 0], &[]);
        assert_eq!(picker.order(&[1.0; 2], &loaded, key, 0, 7.0)[0], 1);
    }

    #[test]
    fn random_pickers_follow_the_seed() {
        let c = candidates(&pool(5), &[], &[]);
        let mut seen = std::collections::HashSet::new();
        for seed in 0..100 {
            let order = Picker::Random.order(&[1.0; 5], &c, 0, seed, 1.0);
            assert_eq!(order.len(), 5);
            seen.insert(order[0]);
        }
        assert_eq!(seen.len(), 5);
        let mut first = 0;
        for seed in 0..200 {
            if Picker::WeightedRandom.order(&[9.0, 1.0], &candidates(&pool(2), &[], &[]), 0, seed, 1.0)[0] == 0 {
                first += 1;
            }
        }
        assert!(first > 150, "weight 9:1 → mostly the first: {first}");
    }
}
