//! `load-aware-scorer` (llm-d): empty queue → 0.5; otherwise 0.5 × (1 − min(q, threshold) /
//! threshold), with `threshold` 128 by default. Scores never exceed 0.5 by design: an idle pod is
//! "good", not "best", leaving room for affinity scorers to decide.

use super::{Candidate, Scorer};
use crate::request::SchedulingRequest;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadAwareParams {
    pub threshold: u32,
}

impl Default for LoadAwareParams {
    fn default() -> Self {
        Self { threshold: 128 }
    }
}

pub struct LoadAwareScorer {
    threshold: f64,
}

impl LoadAwareScorer {
    pub fn new(params: LoadAwareParams) -> Self {
        Self { threshold: f64::from(params.threshold.max(1)) }
    }
}

impl Scorer for LoadAwareScorer {
    fn measures_load(&self) -> bool {
        true
    }

    fn score(&self, _request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]) {
        for (o, c) in out.iter_mut().zip(candidates) {
            let q = f64::from(c.effective_queue());
            *o = if q == 0.0 { 0.5 } else { 0.5 * (1.0 - q.min(self.threshold) / self.threshold) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn follows_the_llm_d_formula() {
        let scorer = LoadAwareScorer::new(LoadAwareParams { threshold: 10 });
        let c = candidates(
            &[endpoint("a:1", 0, 0, 0.0), endpoint("b:1", 5, 0, 0.0), endpoint("c:1", 20, 0, 0.0)],
            &[],
            &[],
        );
        let mut out = vec![0.0; 3];
        scorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![0.5, 0.25, 0.0]);
    }
}
