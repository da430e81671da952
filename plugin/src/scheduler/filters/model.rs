//! `model` (built in): an endpoint that reports the models it serves (the `model_name` label of its
//! metrics) and lists neither the requested model nor, for an adapter, the adapter among its running
//! or waiting LoRA adapters, is skipped. Endpoints that report nothing (metrics unreadable, or an
//! engine without the label) are assumed to serve it. When no member serves the model the request
//! fails with 404 `model_not_found`, as vLLM answers, which is what clients' retry logic expects.
//! Requests for an adapter configured in `models.adapters` are not filtered: adapters load on demand.

use super::{CandidateSet, Filter};
use crate::request::SchedulingRequest;
use crate::scheduler::{Candidate, Exclusion, ScheduleError};

pub struct ModelFilter;

fn serves(c: &Candidate, model: &str) -> bool {
    let e = c.endpoint;
    e.models.is_empty()
        || e.models.iter().any(|m| m == model)
        || e.metrics.lora.as_ref().is_some_and(|l| l.running.iter().chain(&l.waiting).any(|a| a == model))
}

impl Filter for ModelFilter {
    fn name(&self) -> &'static str {
        "model"
    }

    fn filter(&self, request: &SchedulingRequest, set: &mut CandidateSet) -> Result<(), ScheduleError> {
        if request.lora_adapter.is_some() {
            return Ok(());
        }
        let model = request.model.as_str();
        let left = set.retain(|c| (!serves(c, model)).then_some(Exclusion::WrongModel));
        if left == 0 { Err(ScheduleError::ModelNotServed(request.model.clone())) } else { Ok(()) }
    }
}
