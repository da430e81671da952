//! `prefix-cache-scorer` (llm-d): score = matched blocks / prompt blocks, where matched is the
//! number of leading prompt blocks the approximate index believes the endpoint holds.
//!
//! Two guards against one shared system prompt pulling all traffic to one pod (a failure llm-d
//! users report), both parameters:
//! - **matched-length weighting**: the ratio is scaled by min(1, matched / `fullCreditBlocks`)
//!   (default 16 blocks ≈ 256 tokens), so a short common prefix counts for little and a long
//!   conversation counts fully; a match below `minMatchBlocks` (default 1) scores 0.
//!   `fullCreditBlocks: 0` gives llm-d's plain ratio.
//! - **bounded load**: an endpoint with more than `maxLoadFactor` × the candidates' average
//!   in-flight requests (+ `loadSlack`) gets 0, so load wins once affinity would overload it.
//!
//! Index parameters (`blockSizeTokens` 16, `maxPrefixBlocksToMatch` 256 (at most
//! [`crate::memory::MAX_EVENT_HASHES`], what a routing event carries), `lruCapacityPerServer` 31,250,
//! `maxTotalBlocks` 1,000,000) are in the same parameters type; the configuration reads them to size
//! the routing memory every worker shares (`crate::config::PrefixSettings`).

use super::{Candidate, Scorer};
use crate::request::SchedulingRequest;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PrefixCacheParams {
    pub min_match_blocks: u32,
    pub full_credit_blocks: u32,
    pub max_load_factor: f64,
    pub load_slack: f64,
    // Index sizing, read by `config::PluginConfig` into `PrefixSettings`.
    pub block_size_tokens: u32,
    pub max_prefix_blocks_to_match: usize,
    pub lru_capacity_per_server: usize,
    pub max_total_blocks: usize,
}

impl Default for PrefixCacheParams {
    fn default() -> Self {
        let index = crate::config::PrefixSettings::default();
        Self {
            min_match_blocks: 1,
            full_credit_blocks: 16,
            max_load_factor: 2.0,
            load_slack: 4.0,
            block_size_tokens: index.block_size_tokens,
            max_prefix_blocks_to_match: index.max_prefix_blocks,
            lru_capacity_per_server: index.lru_capacity_per_server,
            max_total_blocks: index.max_total_blocks,
        }
    }
}

pub struct PrefixCacheScorer {
    params: PrefixCacheParams,
}

impl PrefixCacheScorer {
    pub fn new(params: PrefixCacheParams) -> Self {
        Self { params }
    }
}

impl Scorer for PrefixCacheScorer {
    fn score(&self, request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]) {
        let total = request.block_hashes.len();
        if total == 0 || candidates.is_empty() {
            out.fill(0.0);
            return;
        }
        let average = candidates.iter().map(|c| f64::from(c.in_flight.requests)).sum::<f64>() / candidates.len() as f64;
        let load_bound = self.params.max_load_factor * average + self.params.load_slack;
        for (o, c) in out.iter_mut().zip(candidates) {
            let matched = c.prefix_matched.min(total as u32);
            if matched == 0 || matched < self.params.min_match_blocks || f64::from(c.in_flight.requests) > load_bound {
                *o = 0.0;
                continue;
            }
            let ratio = f64::from(matched) / total as f64;
            let credit = match self.params.full_credit_blocks {
                0 => 1.0,
                full => (f64::from(matched) / f64::from(full)).min(1.0),
            };
            *o = ratio * credit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn request_with_blocks(n: usize) -> SchedulingRequest {
        let mut r = request();
        r.block_hashes = (0..n as u64).collect();
        r
    }

    #[test]
    fn plain_ratio_when_full_credit_is_off() {
        let scorer = PrefixCacheScorer::new(PrefixCacheParams { full_credit_blocks: 0, ..Default::default() });
        let c = candidates(&[endpoint("a:1", 0, 0, 0.0), endpoint("b:1", 0, 0, 0.0)], &[], &[8, 2]);
        let mut out = vec![0.0; 2];
        scorer.score(&request_with_blocks(10), &c, &mut out);
        assert_eq!(out, vec![0.8, 0.2]);
    }

    #[test]
    fn a_short_shared_prefix_counts_for_little() {
        let scorer = PrefixCacheScorer::new(PrefixCacheParams::default());
        // 4 of 5 blocks match (a shared system prompt) versus 32 of 40 (a conversation).
        let c = candidates(&[endpoint("a:1", 0, 0, 0.0)], &[], &[4]);
        let mut short = vec![0.0];
        scorer.score(&request_with_blocks(5), &c, &mut short);
        let c = candidates(&[endpoint("a:1", 0, 0, 0.0)], &[], &[32]);
        let mut long = vec![0.0];
        scorer.score(&request_with_blocks(40), &c, &mut long);
        assert!((short[0] - 0.8 * 0.25).abs() < 1e-9, "{short:?}");
        assert!((long[0] - 0.8).abs() < 1e-9, "{long:?}");
    }

    #[test]
    fn an_overloaded_holder_loses_its_affinity() {
        let scorer = PrefixCacheScorer::new(PrefixCacheParams::default());
        let c = candidates(
            &[endpoint("a:1", 0, 0, 0.0), endpoint("b:1", 0, 0, 0.0), endpoint("c:1", 0, 0, 0.0)],
            &[30, 1, 1],
            &[20, 20, 0],
        );
        let mut out = vec![0.0; 3];
        scorer.score(&request_with_blocks(20), &c, &mut out);
        assert_eq!(out[0], 0.0, "30 in flight > 2 × 10.7 + 4");
        assert_eq!(out[1], 1.0);
        assert_eq!(out[2], 0.0);
    }

    #[test]
    fn below_the_minimum_match_scores_zero() {
        let scorer = PrefixCacheScorer::new(PrefixCacheParams {
            min_match_blocks: 3,
            full_credit_blocks: 0,
            ..Default::default()
        });
        let c = candidates(&[endpoint("a:1", 0, 0, 0.0)], &[], &[2]);
        let mut out = vec![1.0];
        scorer.score(&request_with_blocks(4), &c, &mut out);
        assert_eq!(out, vec![0.0]);
    }
}
