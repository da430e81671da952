//! `max-score-picker` (llm-d's default): the highest total wins. Near-ties (within `tieTolerance` ×
//! the profile's total weight) are broken by **rendezvous hashing** of the request's affinity key
//! with each endpoint's address, so independent gateway replicas, each with its own memory, send a
//! new conversation to the same pod. Among the near-tied, endpoints whose in-flight count exceeds
//! (1 + `maxLoadImbalance`) × the average + 1 are skipped while another remains (**bounded load**):
//! a popular key cannot pile onto one pod. Fallbacks are the remaining candidates by total, ties by
//! the same rendezvous rank.

use super::{PickInput, Picker, push_fallbacks, rank};
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

pub struct MaxScorePicker {
    pub params: MaxScoreParams,
}

impl Picker for MaxScorePicker {
    fn name(&self) -> &'static str {
        "max-score-picker"
    }

    fn pick(&self, input: &PickInput, fallbacks: usize, out: &mut Vec<usize>) {
        let n = input.candidates.len();
        if n == 0 {
            return;
        }
        let best = input.totals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let floor = best - self.params.tie_tolerance * input.total_weight.max(f64::EPSILON);
        let average = input.candidates.iter().map(|c| f64::from(c.in_flight.requests)).sum::<f64>() / n as f64;
        let bound = (1.0 + self.params.max_load_imbalance) * average + 1.0;
        // Best rank among the near-tied within the load bound, else among all the near-tied.
        // (rank, index) of the best-ranked near-tie, within the bound and overall.
        let mut within: Option<(u64, usize)> = None;
        let mut any: Option<(u64, usize)> = None;
        for i in (0..n).filter(|&i| input.totals[i] >= floor) {
            let r = (rank(input, i), i);
            any = any.max(Some(r));
            if f64::from(input.candidates[i].in_flight.requests) <= bound {
                within = within.max(Some(r));
            }
        }
        let Some((_, primary)) = within.or(any) else { return };
        out.push(primary);
        push_fallbacks(input, primary, fallbacks, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::pick;
    use super::*;
    use crate::scheduler::mix64;
    use crate::scheduler::scorers::test_support::*;

    fn picker() -> MaxScorePicker {
        MaxScorePicker { params: MaxScoreParams::default() }
    }

    fn pool(n: usize) -> Vec<crate::pool::Endpoint> {
        (0..n).map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0, 0.0)).collect()
    }

    #[test]
    fn highest_total_wins_and_fallbacks_follow_by_score() {
        let c = candidates(&pool(3), &[], &[]);
        assert_eq!(pick(&picker(), &[1.0, 5.0, 3.0], &c, 7, 0), vec![1, 2, 0]);
        let input = PickInput { totals: &[1.0, 5.0, 3.0], candidates: &c, key: 7, seed: 0, total_weight: 7.0 };
        let mut out = Vec::new();
        picker().pick(&input, 1, &mut out);
        assert_eq!(out, vec![1, 2], "only as many fallbacks as asked");
    }

    #[test]
    fn ties_are_broken_by_the_key_the_same_way_everywhere() {
        let c = candidates(&pool(4), &[], &[]);
        for key in 0..50u64 {
            let a = pick(&picker(), &[1.0; 4], &c, key, 1);
            let b = pick(&picker(), &[1.0; 4], &c, key, 999);
            assert_eq!(a[0], b[0], "same key, same primary, whatever the seed");
        }
    }

    #[test]
    fn different_keys_spread_across_endpoints() {
        let c = candidates(&pool(4), &[], &[]);
        let mut counts = [0usize; 4];
        for key in 0..200u64 {
            counts[pick(&picker(), &[1.0; 4], &c, mix64(key), 0)[0]] += 1;
        }
        assert!(counts.iter().all(|&n| n >= 25), "rendezvous spreads new prefixes: {counts:?}");
    }

    #[test]
    fn bounded_load_skips_an_overloaded_tie() {
        let key = (0..1000u64)
            .find(|&k| pick(&picker(), &[1.0; 2], &candidates(&pool(2), &[], &[]), k, 0)[0] == 0)
            .unwrap_or(0);
        let loaded = candidates(&pool(2), &[10, 0], &[]);
        assert_eq!(pick(&picker(), &[1.0; 2], &loaded, key, 0)[0], 1);
    }
}
