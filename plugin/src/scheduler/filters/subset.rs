//! `subset` (built in): a subset hint (the Endpoint Picker Protocol's
//! `x-gateway-destination-endpoint-subset`, comma-separated `ip:port`) restricts the candidates to
//! the pool members it names. A hint naming no member fails the request (503): the gateway asked for
//! pods this pool does not have.

use super::{CandidateSet, Filter};
use crate::request::SchedulingRequest;
use crate::scheduler::{Exclusion, ScheduleError};

pub struct SubsetFilter;

impl Filter for SubsetFilter {
    fn name(&self) -> &'static str {
        "subset"
    }

    fn filter(&self, request: &SchedulingRequest, set: &mut CandidateSet) -> Result<(), ScheduleError> {
        let Some(subset) = &request.subset else { return Ok(()) };
        let left = set.retain(|c| (!subset.contains(&c.endpoint.address)).then_some(Exclusion::OutsideSubset));
        if left == 0 { Err(ScheduleError::SubsetNamesNoMember) } else { Ok(()) }
    }
}
