//! vLLM's vocabulary (reference §1): the V1 engine's gauges, with the deprecated
//! `gpu_cache_usage_perc` as the fallback of `kv_cache_usage_perc`.

use super::{CacheInfo, Selector, Vocabulary};
use wasm_inference_scheduler::pool::Engine;

pub(super) fn vocabulary() -> Vocabulary {
    Vocabulary {
        engine: Engine::Vllm,
        waiting: vec![Selector::new("vllm:num_requests_waiting")],
        running: vec![Selector::new("vllm:num_requests_running")],
        kv_usage: vec![Selector::new("vllm:kv_cache_usage_perc"), Selector::new("vllm:gpu_cache_usage_perc")],
        kv_used_and_max: None,
        lora_info: Some("vllm:lora_requests_info".into()),
        cache_info: Some(CacheInfo {
            name: "vllm:cache_config_info".into(),
            block_size_label: "block_size".into(),
            num_blocks_label: "num_gpu_blocks".into(),
        }),
        block_size_value: vec![],
        num_blocks_value: vec![],
        // Counters are exposed with `_total` (reference §0, §1.2).
        prefix_queries: vec![Selector::new("vllm:prefix_cache_queries_total")],
        prefix_hits: vec![Selector::new("vllm:prefix_cache_hits_total")],
        model_labels: vec!["model_name".into()],
        active_split: None,
        cold_start_namespace: None,
        hint: None,
    }
}
