//! `kv-cache-utilization-scorer` (llm-d): score = 1 − KV-cache usage (`vllm:kv_cache_usage_perc`).

use super::{Candidate, Scorer, known_average};
use crate::request::SchedulingRequest;

pub struct KvCacheScorer;

impl Scorer for KvCacheScorer {
    fn measures_load(&self) -> bool {
        true
    }

    fn score(&self, _request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]) {
        let free = |c: &Candidate| (1.0 - c.endpoint.metrics.kv_cache_usage).clamp(0.0, 1.0);
        let unknown = known_average(candidates, free);
        for (o, c) in out.iter_mut().zip(candidates) {
            *o = if c.metrics_known { free(c) } else { unknown };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn free_cache_scores_high() {
        let c = candidates(&[endpoint("a:1", 0, 0, 0.25), endpoint("b:1", 0, 0, 1.0)], &[], &[]);
        let mut out = vec![0.0; 2];
        KvCacheScorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![0.75, 0.0]);
    }

    #[test]
    fn unknown_usage_scores_the_known_average() {
        let c = with_unknown(
            candidates(
                &[endpoint("a:1", 0, 0, 0.25), endpoint("b:1", 0, 0, 0.75), endpoint("c:1", 0, 0, 0.99)],
                &[],
                &[],
            ),
            &[2],
        );
        let mut out = vec![0.0; 3];
        KvCacheScorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![0.75, 0.25, 0.5]);
    }
}
