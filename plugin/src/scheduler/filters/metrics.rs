//! `metrics` (built in): decides whose metrics are believed. A candidate's metrics are **unknown**
//! when the scraper's latest scrape of it failed (`stale`: an HTTP error, an unreadable body, a
//! missing gauge) or they are older than `pool.metricsStalenessMs` (a dead scraper, a snapshot that
//! stopped arriving). Nobody is removed: an endpoint with unknown metrics stays a candidate, the
//! scorers judge it on the gateway's own in-flight counts and prefix memory, and the decision and
//! stats count it.

use super::{CandidateSet, Filter};
use crate::request::SchedulingRequest;
use crate::scheduler::ScheduleError;

pub struct MetricsFilter {
    /// Metrics older than this are unknown.
    pub max_age_ms: u64,
}

impl Filter for MetricsFilter {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn filter(&self, _request: &SchedulingRequest, set: &mut CandidateSet) -> Result<(), ScheduleError> {
        let mut unknown = 0;
        for c in set.candidates.iter_mut() {
            c.metrics_known = !c.endpoint.stale && c.metrics_age_ms <= self.max_age_ms;
            unknown += u32::from(!c.metrics_known);
        }
        set.flags.unknown_metrics = unknown;
        Ok(())
    }
}
