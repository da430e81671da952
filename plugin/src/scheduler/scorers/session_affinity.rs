//! `session-affinity-scorer` (llm-d): 1.0 for the endpoint named by the request's session token
//! (which this filter returned on an earlier response of the session), 0.0 for the others.
//! Stateless, so every gateway replica given the same key honours the same session.
//!
//! Tokens are opaque and authenticated (HMAC-SHA256, see [`crate::session`]); only with this scorer
//! in the profile does the filter issue them. Parameters: `secretEnv` (name of an environment
//! variable of the wasm VM holding the key: Envoy `vm_config.environment_variables.host_env_keys`,
//! filled from a Kubernetes Secret) or `secret` (the key inline); one of them is required, at least
//! 16 bytes. `ttlSeconds` (3600): how long a token is honoured.

use super::{Candidate, Scorer};
use crate::request::SchedulingRequest;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SessionAffinityParams {
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub ttl_seconds: u64,
}

impl Default for SessionAffinityParams {
    fn default() -> Self {
        Self { secret: None, secret_env: None, ttl_seconds: 3600 }
    }
}

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
