//! Filters: each decides which candidates go on to scoring. The profile runs the built-in ones
//! (`subset`, `model`, `health`, `metrics`), then the configured ones, in order.
//!
//! A filter sees the whole candidate set, so it can say what happens when nobody passes: fail the
//! request with a clear error (`subset`, `model`), or keep everyone and flag the decision (`health`,
//! `saturation-filter`): an overloaded or unobservable pool still serves.
//!
//! To add one: a file here with the filter and its doc comment (formula and inputs), and, if
//! operators configure it, one line in [`super::registry::REGISTRY`].

pub mod health;
pub mod metrics;
pub mod model;
pub mod saturation;
pub mod subset;

use super::{Candidate, Exclusion, ScheduleError};
use crate::request::SchedulingRequest;

/// What the filters found, for the decision and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// Every member was unreachable, so all were kept.
    pub no_healthy_endpoint: bool,
    /// The saturation filter would have removed every candidate, so all were kept.
    pub fell_back_to_all: bool,
    /// Candidates whose metrics are unknown (scored on the gateway's own counts).
    pub unknown_metrics: u32,
}

/// The candidates a filter works on, with the bookkeeping every filter needs.
pub struct CandidateSet<'a, 'b> {
    pub candidates: &'b mut Vec<Candidate<'a>>,
    /// Where exclusions are written, when the decision's detail was asked for.
    excluded: Option<&'b mut Vec<(u32, Exclusion)>>,
    pub flags: &'b mut Flags,
}

impl<'a, 'b> CandidateSet<'a, 'b> {
    pub fn new(
        candidates: &'b mut Vec<Candidate<'a>>,
        excluded: Option<&'b mut Vec<(u32, Exclusion)>>,
        flags: &'b mut Flags,
    ) -> Self {
        Self { candidates, excluded, flags }
    }

    /// Removes the candidates `exclude` gives a reason for; returns how many remain.
    pub fn retain(&mut self, exclude: impl Fn(&Candidate) -> Option<Exclusion>) -> usize {
        let excluded = &mut self.excluded;
        self.candidates.retain(|c| match exclude(c) {
            None => true,
            Some(reason) => {
                if let Some(out) = excluded.as_deref_mut() {
                    out.push((c.position, reason));
                }
                false
            }
        });
        self.candidates.len()
    }

    /// Like [`retain`](Self::retain), unless no candidate would remain: then nothing is removed and
    /// false is returned.
    pub fn retain_unless_none_pass(&mut self, exclude: impl Fn(&Candidate) -> Option<Exclusion>) -> bool {
        if self.candidates.iter().all(|c| exclude(c).is_some()) {
            return false;
        }
        self.retain(exclude);
        true
    }
}

/// A filter: keeps or removes candidates, or fails the request.
pub trait Filter {
    fn name(&self) -> &'static str;
    fn filter(&self, request: &SchedulingRequest, set: &mut CandidateSet) -> Result<(), ScheduleError>;
}
