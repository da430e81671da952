//! `session-affinity-scorer` (llm-d): 1.0 for the endpoint named by the request's session token
//! (which this filter returned on an earlier response of the session), 0.0 for the others.
//! Stateless, so every gateway replica honours the same session.

use super::{Candidate, Scorer};
use crate::request::SchedulingRequest;

pub struct SessionAffinityScorer;

impl Scorer for SessionAffinityScorer {
    fn score(&self, request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]) {
        for (o, c) in out.iter_mut().zip(candidates) {
            *o = if request.session_endpoint.as_deref() == Some(c.endpoint.address.as_str()) { 1.0 } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn the_session_endpoint_scores_one() {
        let mut req = request();
        req.session_endpoint = Some("10.0.0.2:80".into());
        let c = candidates(&[endpoint("10.0.0.1:80", 0, 0, 0.0), endpoint("10.0.0.2:80", 0, 0, 0.0)], &[], &[]);
        let mut out = vec![0.0; 2];
        SessionAffinityScorer.score(&req, &c, &mut out);
        assert_eq!(out, vec![0.0, 1.0]);
    }
}
