//! `lora-affinity-scorer` (llm-d): for a request naming a LoRA adapter, 1.0 where the adapter is
//! running, 0.8 where a slot is free to load it (running adapters < `max_lora`), 0.6 where it is
//! waiting to load, 0.0 where every slot is taken by others. A base-model request scores 1.0
//! everywhere; an endpoint that reports no LoRA state, or whose metrics are unknown, scores 0.8
//! (assumed to have room).

use super::{Candidate, Scorer};
use crate::request::SchedulingRequest;

pub struct LoraAffinityScorer;

impl Scorer for LoraAffinityScorer {
    fn score(&self, request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]) {
        let Some(adapter) = request.lora_adapter.as_deref() else {
            out.fill(1.0);
            return;
        };
        for (o, c) in out.iter_mut().zip(candidates) {
            let lora = if c.metrics_known { c.endpoint.metrics.lora.as_ref() } else { None };
            *o = match lora {
                None => 0.8,
                Some(lora) if lora.running.iter().any(|a| a == adapter) => 1.0,
                Some(lora) if (lora.running.len() as u32) < lora.max_loras => 0.8,
                Some(lora) if lora.waiting.iter().any(|a| a == adapter) => 0.6,
                Some(_) => 0.0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn prefers_running_then_free_slot_then_waiting() {
        let mut req = request();
        req.lora_adapter = Some("sql".into());
        let c = candidates(
            &[
                with_lora(endpoint("a:1", 0, 0, 0.0), &["sql"], &[], 2),
                with_lora(endpoint("b:1", 0, 0, 0.0), &["x"], &[], 2),
                with_lora(endpoint("c:1", 0, 0, 0.0), &["x", "y"], &["sql"], 2),
                with_lora(endpoint("d:1", 0, 0, 0.0), &["x", "y"], &[], 2),
                endpoint("e:1", 0, 0, 0.0),
            ],
            &[],
            &[],
        );
        let mut out = vec![0.0; 5];
        LoraAffinityScorer.score(&req, &c, &mut out);
        assert_eq!(out, vec![1.0, 0.8, 0.6, 0.0, 0.8]);
        let mut base = vec![0.0; 5];
        LoraAffinityScorer.score(&request(), &c, &mut base);
        assert_eq!(base, vec![1.0; 5]);
    }
}
