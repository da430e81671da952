//! TensorRT-LLM's vocabulary: Triton's TensorRT-LLM backend (reference §5) first, then
//! trtllm-serve's plain gauges (§6), whose running count is split into scheduled and waiting
//! (see the module docs of [`super`]).

use super::{ActiveSplit, Selector, Vocabulary};
use wasm_inference_scheduler::pool::Engine;

pub(super) fn vocabulary() -> Vocabulary {
    let req = "nv_trt_llm_request_metrics";
    let kv = "nv_trt_llm_kv_cache_block_metrics";
    let kvt = "kv_cache_block_type";
    // Triton's TensorRT-LLM backend first (reference §5), then trtllm-serve's plain
    // gauges (§6; their meaning checked in TensorRT-LLM's metrics collector).
    Vocabulary {
        engine: Engine::Trtllm,
        waiting: vec![Selector::with(req, "request_type", "waiting"), Selector::new("trtllm_num_requests_waiting")],
        running: vec![Selector::with(req, "request_type", "scheduled"), Selector::new("trtllm_num_requests_running")],
        kv_usage: vec![Selector::with(kv, kvt, "fraction"), Selector::new("trtllm_kv_cache_utilization")],
        kv_used_and_max: Some((Selector::with(kv, kvt, "used"), Selector::with(kv, kvt, "max"))),
        lora_info: None,
        cache_info: None,
        block_size_value: vec![
            Selector::with(kv, kvt, "tokens_per"),
            Selector::new("trtllm_kv_cache_tokens_per_block"),
        ],
        num_blocks_value: vec![Selector::with(kv, kvt, "max"), Selector::new("trtllm_kv_cache_max_blocks")],
        // trtllm-serve only (Triton's backend exports no prefix counters).
        prefix_queries: vec![Selector::new("trtllm_prompt_tokens_total")],
        prefix_hits: vec![Selector::new("trtllm_prompt_cached_tokens_total")],
        // Not Triton's `model` label: it names the backend model (`tensorrt_llm`),
        // while clients ask for the ensemble or BLS model, and the plugin drops an
        // endpoint that does not list the requested model.
        model_labels: vec!["model_name".into()],
        active_split: Some(ActiveSplit {
            active: Selector::new("trtllm_num_requests_running"),
            scheduled: Selector::new("trtllm_num_scheduled_requests"),
        }),
        cold_start_namespace: None,
        hint: Some(
            "trtllm-serve: Prometheus text is on /prometheus/metrics with return_perf_metrics: true, \
             queue and KV gauges need enable_iter_perf_stats: true; Triton: its metrics port, 8002",
        ),
    }
}
