//! `active-request-scorer` (llm-d): score = (max − n) / max over the candidates, where n is this
//! gateway's in-flight requests to the endpoint; nobody busy → 1 for all.

use super::{Candidate, Scorer};
use crate::request::SchedulingRequest;

pub struct ActiveRequestScorer;

impl Scorer for ActiveRequestScorer {
    fn measures_load(&self) -> bool {
        true
    }

    fn score(&self, _request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]) {
        let max = candidates.iter().map(|c| c.in_flight.requests).max().unwrap_or(0);
        for (o, c) in out.iter_mut().zip(candidates) {
            *o = if max == 0 { 1.0 } else { f64::from(max - c.in_flight.requests) / f64::from(max) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn fewer_in_flight_scores_higher() {
        let c = candidates(
            &[endpoint("a:1", 0, 0, 0.0), endpoint("b:1", 0, 0, 0.0), endpoint("c:1", 0, 0, 0.0)],
            &[0, 2, 4],
            &[],
        );
        let mut out = vec![0.0; 3];
        ActiveRequestScorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![1.0, 0.5, 0.0]);
        let idle = candidates(&[endpoint("a:1", 0, 0, 0.0)], &[0], &[]);
        let mut out = vec![0.0];
        ActiveRequestScorer.score(&request(), &idle, &mut out);
        assert_eq!(out, vec![1.0]);
    }
}
