//! `health` (built in): endpoints the scraper cannot reach (`healthy: false`: connection failures or
//! timeouts on consecutive scrapes) are skipped. If that would leave none, every candidate is kept
//! and the decision is flagged `no_healthy_endpoint`: the pool's own members are the only possible
//! destinations anyway, a scraper that cannot reach them may be the one in trouble, and Envoy's
//! retries walk the fallback list. Users of the anchors report "all stale, so every request fails"
//! as an outage; here it is a counted, routed request.

use super::{CandidateSet, Filter};
use crate::request::SchedulingRequest;
use crate::scheduler::{Exclusion, ScheduleError};

pub struct HealthFilter;

impl Filter for HealthFilter {
    fn name(&self) -> &'static str {
        "health"
    }

    fn filter(&self, _request: &SchedulingRequest, set: &mut CandidateSet) -> Result<(), ScheduleError> {
        if !set.retain_unless_none_pass(|c| (!c.endpoint.healthy).then_some(Exclusion::Unreachable)) {
            set.flags.no_healthy_endpoint = true;
        }
        Ok(())
    }
}
