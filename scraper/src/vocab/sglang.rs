//! SGLang's vocabulary (reference §4): its scheduler gauges, read as idle on a cold pod through the
//! `sglang:` cold-start namespace (see the module docs of [`super`]).

use super::{CacheInfo, Selector, Vocabulary};
use wasm_inference_scheduler::pool::Engine;

pub(super) fn vocabulary() -> Vocabulary {
    Vocabulary {
        engine: Engine::Sglang,
        waiting: vec![Selector::new("sglang:num_queue_reqs")],
        running: vec![Selector::new("sglang:num_running_reqs")],
        kv_usage: vec![Selector::new("sglang:token_usage")],
        kv_used_and_max: None,
        lora_info: None,
        cache_info: Some(CacheInfo {
            name: "sglang:cache_config_info".into(),
            block_size_label: "page_size".into(),
            num_blocks_label: "num_pages".into(),
        }),
        block_size_value: vec![],
        num_blocks_value: vec![],
        // Prompt tokens vs cached prompt tokens (reference §4). Every series of
        // `cached_tokens_total` is summed: SGLang counts each finished request's cached
        // tokens either per source (`device`, `host`, `storage_<backend>`) or, when the
        // request has no per-source breakdown, once under `cache_source="total"`
        // (`TokenizerMetricsCollector.observe_one_finished_request`, reference S19), so
        // `total` is the fallback share, never the sum of the others. Older SGLang has
        // one series without `cache_source`.
        prefix_queries: vec![Selector::new("sglang:prompt_tokens_total")],
        prefix_hits: vec![Selector::new("sglang:cached_tokens_total")],
        model_labels: vec!["model_name".into()],
        active_split: None,
        cold_start_namespace: Some("sglang:".into()),
        hint: Some("SGLang serves /metrics only when started with --enable-metrics"),
    }
}
