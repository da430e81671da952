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

/// Whether the candidate serves `model` (whose 64-bit hash is `model_hash`). The first model is
/// compared by hash, computed once per snapshot (a collision would send one request to a pod that
/// answers 404, at odds of 2⁻⁶⁴); further models and adapters by name.
fn serves(c: &Candidate, model: &str, model_hash: u64) -> bool {
    let e = c.endpoint;
    e.models.is_empty()
        || c.model_hash == model_hash
        || e.models.iter().skip(1).any(|m| m == model)
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
        let model_hash = crate::scheduler::fnv1a(model);
        let left = set.retain(|c| (!serves(c, model, model_hash)).then_some(Exclusion::WrongModel));
        if left == 0 { Err(ScheduleError::ModelNotServed(request.model.clone())) } else { Ok(()) }
    }
}
