//! `max-score-picker` (llm-d's default): the highest total wins. Near-ties (within `tieTolerance` ×
//! the profile's total weight) that hold as much of the prompt as the best one does are broken by
//! **rendezvous hashing** of the request's affinity key with each endpoint's address, so
//! independent gateway replicas, each with its own memory, send a new conversation to the same pod.
//! Among those, endpoints whose in-flight count exceeds (1 + `maxLoadImbalance`) × the average + 1
//! are skipped while another remains (**bounded load**): a popular key cannot pile onto one pod.
//! A near-tie that holds less of the prompt is not a tie: the scorers already weighed its lighter
//! load against the prefix it lacks, and breaking the tie for it would move a conversation off its
//! pod for a rounding difference. Fallbacks are the remaining candidates by total, ties by the same
//! rendezvous rank.
//!
//! **A prompt no candidate is known to hold** (a new conversation, or one another gateway replica
//! placed) is placed by its key when `unseenPlacement` says so (`key`; `load` never; `auto`, the
//! default, when the pods report running and waiting at least [`AUTO_MIN_REPORTED_REQUESTS`]
//! requests and this gateway has in flight less than [`AUTO_OWN_SHARE`] of them, i.e. other
//! replicas send to the pool too), among the endpoints whose scores that do not measure load
//! (adapter, session) are within the tolerance of the best:
//! - a first turn takes the best rendezvous rank within the load bound, the load being the pod's
//!   reported running + waiting requests, which every replica scrapes alike (this gateway's
//!   in-flight count when the metrics are unknown);
//! - a turn that continues a conversation (its messages carry an earlier reply) takes the best
//!   rank outright: where the first turn most likely went, whatever the load is now.
//!
//! Placed by the load scores instead, its pod would depend on this replica's moment and history,
//! and a second replica, seeing the next turn first, would pick another pod: with two gateways
//! taking turns, the conversation would alternate between two pods.

use super::{PickInput, Picker, push_fallbacks, ranks};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MaxScoreParams {
    pub tie_tolerance: f64,
    pub max_load_imbalance: f64,
    pub unseen_placement: UnseenPlacement,
}

impl Default for MaxScoreParams {
    fn default() -> Self {
        Self { tie_tolerance: 0.02, max_load_imbalance: 0.25, unseen_placement: UnseenPlacement::Auto }
    }
}

/// How a prompt no candidate is known to hold is placed (`unseenPlacement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnseenPlacement {
    /// By the conversation's key, so gateway replicas agree.
    Key,
    /// By the highest total, as llm-d does: the best placement for a gateway that is alone.
    Load,
    /// By the key when the pool is busier than this gateway's own traffic explains (other replicas
    /// send to it too), by load otherwise.
    Auto,
}

/// `auto` needs the pods to report at least this many requests before it judges who sends them.
pub const AUTO_MIN_REPORTED_REQUESTS: u32 = 4;
/// `auto` places by key when this gateway's in-flight requests are below this share of what the
/// pods report running and waiting (one of two replicas sends about half).
pub const AUTO_OWN_SHARE: f64 = 0.75;

pub struct MaxScorePicker {
    pub params: MaxScoreParams,
}

impl Picker for MaxScorePicker {
    fn name(&self) -> &'static str {
        "max-score-picker"
    }

    fn pick(&self, input: &PickInput, fallbacks: usize, out: &mut Vec<usize>) -> bool {
        if input.candidates.is_empty() {
            return false;
        }
        let ranks = ranks(input);
        let by_key = self.places_by_key(input);
        let primary = if by_key { self.unseen(input, &ranks) } else { self.best(input, &ranks) };
        let Some(primary) = primary else { return false };
        out.push(primary);
        push_fallbacks(input, &ranks, primary, fallbacks, out);
        by_key
    }
}

impl MaxScorePicker {
    /// Whether this request is placed by its key: a prompt no candidate is known to hold, and
    /// `unseenPlacement` says so.
    fn places_by_key(&self, input: &PickInput) -> bool {
        unseen(input.candidates)
            && match self.params.unseen_placement {
                UnseenPlacement::Key => true,
                UnseenPlacement::Load => false,
                UnseenPlacement::Auto => others_send(input.candidates),
            }
    }

    /// The load bound over `load`: (1 + `maxLoadImbalance`) × the candidates' average + 1.
    fn bound(&self, input: &PickInput, load: impl Fn(usize) -> u32) -> f64 {
        let n = input.candidates.len();
        let average = (0..n).map(|i| f64::from(load(i))).sum::<f64>() / n as f64;
        (1.0 + self.params.max_load_imbalance) * average + 1.0
    }

    /// The highest total; near-ties that hold as much of the prompt go by rank, within the bound.
    fn best(&self, input: &PickInput, ranks: &[u64]) -> Option<usize> {
        let n = input.candidates.len();
        let top = (0..n).max_by(|&a, &b| input.totals[a].total_cmp(&input.totals[b]).then(ranks[a].cmp(&ranks[b])))?;
        let floor = input.totals[top] - self.params.tie_tolerance * input.total_weight.max(f64::EPSILON);
        let held = input.candidates[top].prefix_matched;
        let bound = self.bound(input, |i| input.candidates[i].in_flight.requests);
        let near = (0..n).filter(|&i| input.totals[i] >= floor && input.candidates[i].prefix_matched >= held);
        best_rank(near, ranks, |i| f64::from(input.candidates[i].in_flight.requests) <= bound)
    }

    /// A prompt nobody is known to hold: among the endpoints whose affinity total (the scores
    /// that do not measure load) is within the tolerance of the best, the best rank, within the
    /// bound of the load every replica sees alike unless the request continues a conversation.
    fn unseen(&self, input: &PickInput, ranks: &[u64]) -> Option<usize> {
        let best = input.affinity.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let floor = best - self.params.tie_tolerance * input.total_weight.max(f64::EPSILON);
        let near = (0..input.candidates.len()).filter(|&i| input.affinity[i] >= floor);
        if input.continues {
            // Where its first turn most likely went: the load then is not the load now.
            return best_rank(near, ranks, |_| true);
        }
        let load = |i: usize| input.candidates[i].reported_load();
        let bound = self.bound(input, load);
        best_rank(near, ranks, |i| f64::from(load(i)) <= bound)
    }
}

/// The pods report clearly more requests than this gateway has in flight to them: other gateway
/// replicas (or clients) send to the pool too.
fn others_send(candidates: &[super::super::Candidate]) -> bool {
    let (mut reported, mut own) = (0u32, 0u32);
    for c in candidates.iter().filter(|c| c.metrics_known) {
        reported = reported.saturating_add(c.reported_load());
        own = own.saturating_add(c.in_flight.requests);
    }
    reported >= AUTO_MIN_REPORTED_REQUESTS && f64::from(own) < AUTO_OWN_SHARE * f64::from(reported)
}

/// No candidate is known to hold any of the prompt.
fn unseen(candidates: &[super::super::Candidate]) -> bool {
    candidates.iter().all(|c| c.prefix_matched == 0)
}

/// The best-ranked of `among` that passes `within`, else the best-ranked of all of them.
fn best_rank(among: impl Iterator<Item = usize>, ranks: &[u64], within: impl Fn(usize) -> bool) -> Option<usize> {
    // (rank, index) of the best so far, within the bound and overall.
    let mut inside: Option<(u64, usize)> = None;
    let mut any: Option<(u64, usize)> = None;
    for i in among {
        let r = Some((ranks[i], i));
        any = any.max(r);
        if within(i) {
            inside = inside.max(r);
        }
    }
    inside.or(any).map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::pick;
    use super::*;
    use crate::scheduler::mix64;
    use crate::scheduler::scorers::test_support::*;

    /// Unseen prompts placed by key (the default `auto` would need the pods' reports to say so).
    fn picker() -> MaxScorePicker {
        MaxScorePicker {
            params: MaxScoreParams { unseen_placement: UnseenPlacement::Key, ..MaxScoreParams::default() },
        }
    }

    fn pool(n: usize) -> Vec<crate::pool::Endpoint> {
        (0..n).map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0, 0.0)).collect()
    }

    #[test]
    fn highest_total_wins_and_fallbacks_follow_by_score() {
        let c = candidates(&pool(3), &[], &[1, 1, 1]);
        assert_eq!(pick(&picker(), &[1.0, 5.0, 3.0], &c, 7, 0), vec![1, 2, 0]);
        let input = PickInput {
            totals: &[1.0, 5.0, 3.0],
            affinity: &[0.0; 3],
            candidates: &c,
            key: 7,
            continues: false,
            seed: 0,
            total_weight: 7.0,
        };
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
    fn a_near_tie_that_holds_less_of_the_prompt_does_not_take_it_from_the_holder() {
        // The holder's total is a little higher; an idler pod without the prefix is within the
        // tolerance, and the holder is above the load bound: the holder still wins.
        let c = candidates(&pool(3), &[9, 3, 3], &[55, 0, 0]);
        assert_eq!(pick(&picker(), &[3.93, 3.85, 3.68], &c, 1, 0)[0], 0);
        for key in 0..50u64 {
            assert_eq!(pick(&picker(), &[3.93, 3.85, 3.68], &c, key, 0)[0], 0, "whatever the key");
        }
    }

    /// The primary for `key` among `pool(n)` with no load and no memory.
    fn rendezvous_primary(n: usize, key: u64) -> usize {
        pick(&picker(), &vec![1.0; n], &candidates(&pool(n), &[], &[]), key, 0)[0]
    }

    #[test]
    fn an_unseen_prompt_goes_by_its_key_whatever_this_replica_scores() {
        let c = candidates(&pool(4), &[], &[]);
        for key in 0..50u64 {
            let expected = rendezvous_primary(4, key);
            for totals in [[1.0, 5.0, 3.0, 2.0], [4.0, 0.5, 6.9, 2.0], [0.0; 4]] {
                assert_eq!(pick(&picker(), &totals, &c, key, 3)[0], expected, "key {key}, totals {totals:?}");
            }
        }
    }

    #[test]
    fn an_unseen_prompt_skips_a_pod_whose_reported_load_is_over_the_bound() {
        let key = (0..1000u64).find(|&k| rendezvous_primary(4, k) == 2).unwrap_or(0);
        let mut endpoints = pool(4);
        endpoints[2].metrics.running_requests = 6;
        endpoints[2].metrics.waiting_requests = 6;
        // Average load 3, bound 4.75: the pod the key ranks first is skipped, for the next rank.
        let primary = pick(&picker(), &[1.0; 4], &candidates(&endpoints, &[], &[]), key, 0)[0];
        assert_ne!(primary, 2);
        // Every replica scrapes the same load, so every replica skips it alike.
        for in_flight in [[0, 0, 0, 0], [1, 2, 0, 1], [3, 0, 0, 0]] {
            let c = candidates(&endpoints, &in_flight, &[]);
            assert_eq!(pick(&picker(), &[1.0; 4], &c, key, 0)[0], primary, "in flight {in_flight:?}");
        }
    }

    #[test]
    fn an_unseen_turn_that_continues_a_conversation_goes_to_its_rank_whatever_the_load() {
        let key = (0..1000u64).find(|&k| rendezvous_primary(4, k) == 2).unwrap_or(0);
        let mut endpoints = pool(4);
        endpoints[2].metrics.waiting_requests = 12;
        let c = candidates(&endpoints, &[], &[]);
        let input = |continues| PickInput {
            totals: &[1.0; 4],
            affinity: &[0.0; 4],
            candidates: &c,
            key,
            continues,
            seed: 0,
            total_weight: 7.0,
        };
        let primary = |continues| {
            let mut out = Vec::new();
            picker().pick(&input(continues), 0, &mut out);
            out[0]
        };
        assert_ne!(primary(false), 2, "a first turn keeps out of the loaded pod");
        assert_eq!(primary(true), 2, "a later turn goes where the first one most likely went");
    }

    #[test]
    fn placed_by_load_the_highest_total_places_an_unseen_prompt() {
        let off = MaxScorePicker {
            params: MaxScoreParams { unseen_placement: UnseenPlacement::Load, ..MaxScoreParams::default() },
        };
        let c = candidates(&pool(3), &[], &[]);
        for key in 0..20u64 {
            assert_eq!(pick(&off, &[1.0, 5.0, 3.0], &c, key, 0), vec![1, 2, 0]);
        }
    }

    #[test]
    fn auto_places_by_key_only_when_the_pods_report_more_than_this_gateway_sends() {
        let auto = MaxScorePicker { params: MaxScoreParams::default() };
        let busy = |running: u32| {
            let mut e = pool(4);
            for p in &mut e {
                p.metrics.running_requests = running;
            }
            e
        };
        let key = (0..1000u64).find(|&k| rendezvous_primary(4, k) == 0).unwrap_or(0);
        let totals = [1.0, 5.0, 3.0, 2.0];
        // Alone: the pods run what this gateway has in flight (3 each), so by load.
        assert_eq!(pick(&auto, &totals, &candidates(&busy(3), &[3, 3, 3, 3], &[]), key, 0)[0], 1);
        // One of two: the pods run twice what this gateway sends, so by key.
        assert_eq!(pick(&auto, &totals, &candidates(&busy(6), &[3, 3, 3, 3], &[]), key, 0)[0], 0);
        // Too little reported to tell: by load.
        assert_eq!(pick(&auto, &totals, &candidates(&busy(0), &[], &[]), key, 0)[0], 1);
    }

    #[test]
    fn bounded_load_skips_an_overloaded_tie() {
        let key = (0..1000u64)
            .find(|&k| pick(&picker(), &[1.0; 2], &candidates(&pool(2), &[], &[]), k, 0)[0] == 0)
            .unwrap_or(0);
        let loaded = candidates(&pool(2), &[10, 0], &[1, 1]);
        assert_eq!(pick(&picker(), &[1.0; 2], &loaded, key, 0)[0], 1);
    }
}
