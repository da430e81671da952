//! Every fixture exposition read through its engine's vocabulary.

use wasm_inference_scheduler::pool::{Engine, LoraState};
use wis_scraper::scrape::{self, ScrapeError};
use wis_scraper::vocab::{Reading, Vocabulary};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn read(engine: Engine, text: &str) -> Result<Reading, ScrapeError> {
    scrape::read(text, &Vocabulary::for_engine(engine))
}

#[test]
fn vllm_single_server_with_created_series_lora_and_cache_config() {
    let r = read(Engine::Vllm, &fixture("vllm_single.prom")).expect("reads");
    let m = &r.metrics;
    assert_eq!((m.waiting_requests, m.running_requests), (3, 12));
    assert_eq!(m.kv_cache_usage, 0.4375);
    assert_eq!(m.cache_block_size, Some(16));
    assert_eq!(m.cache_num_blocks, Some(27_345));
    assert_eq!(m.prefix_cache_queries_total, Some(482_113.0));
    assert_eq!(m.prefix_cache_hits_total, Some(301_056.0));
    // Three series; the one with the highest timestamp value is current.
    assert_eq!(
        m.lora,
        Some(LoraState {
            running: vec!["sql-lora".into(), "chat-lora".into()],
            waiting: vec!["sql-lora".into(), "chat-lora".into()],
            max_loras: 4
        })
    );
    assert_eq!(r.models, vec!["meta-llama/Llama-3.1-8B-Instruct".to_string()]);
}

#[test]
fn vllm_data_parallel_sums_queues_and_takes_the_fullest_engine() {
    let m = read(Engine::Vllm, &fixture("vllm_dp.prom")).expect("reads").metrics;
    assert_eq!((m.waiting_requests, m.running_requests), (7, 16));
    assert_eq!(m.kv_cache_usage, 0.81);
    assert_eq!(m.cache_num_blocks, Some(16_000), "blocks of both engines");
    assert_eq!(m.cache_block_size, Some(16));
    assert_eq!(m.prefix_cache_queries_total, Some(3.5e6));
    assert_eq!(m.prefix_cache_hits_total, Some(1.5e6));
    assert_eq!(m.lora, None, "no LoRA family, no LoRA state");
}

#[test]
fn old_vllm_falls_back_to_gpu_cache_usage_and_tolerates_unknown_blocks() {
    let m = read(Engine::Vllm, &fixture("vllm_old.prom")).expect("reads").metrics;
    assert_eq!(m.kv_cache_usage, 0.125);
    assert_eq!(m.cache_block_size, Some(16));
    assert_eq!(m.cache_num_blocks, None, "num_gpu_blocks=\"None\" is not a number");
    assert_eq!(m.prefix_cache_queries_total, None);
}

#[test]
fn sglang_vocabulary() {
    let r = read(Engine::Sglang, &fixture("sglang.prom")).expect("reads");
    let m = &r.metrics;
    assert_eq!((m.waiting_requests, m.running_requests, m.kv_cache_usage), (5, 24, 0.61));
    assert_eq!((m.cache_block_size, m.cache_num_blocks), (Some(1), Some(412_345)));
    assert_eq!(m.prefix_cache_queries_total, Some(903_112.0));
    // device + host + storage_hf3fs + the "total" fallback share: each request is counted once,
    // either per source or under "total", so reading "total" alone would count 1,500.
    assert_eq!(m.prefix_cache_hits_total, Some(512_000.0 + 8_000.0 + 2_000.0 + 1_500.0));
    assert_eq!(r.models, vec!["qwen2.5-7b".to_string()]);
}

#[test]
fn sglang_cached_tokens_without_a_source_label_are_read_too() {
    // Older SGLang: one series, no cache_source.
    let old = fixture("sglang.prom")
        .lines()
        .filter(|l| !l.starts_with("sglang:cached_tokens_total{cache_source"))
        .chain(["sglang:cached_tokens_total{engine_type=\"unified\",model_name=\"qwen2.5-7b\"} 77.0"])
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(read(Engine::Sglang, &old).unwrap().metrics.prefix_cache_hits_total, Some(77.0));
}

#[test]
fn a_cold_sglang_pod_without_scheduler_gauges_reads_as_idle() {
    let r = read(Engine::Sglang, &fixture("sglang_cold.prom")).expect("a cold pod is idle, not missing_metric");
    let m = &r.metrics;
    assert_eq!((m.waiting_requests, m.running_requests, m.kv_cache_usage), (0, 0, 0.0));
    assert_eq!((m.cache_block_size, m.cache_num_blocks), (Some(1), Some(412_345)), "what it does export is read");
    assert_eq!((m.prefix_cache_queries_total, m.prefix_cache_hits_total), (None, None));
    assert!(r.models.is_empty());
}

#[test]
fn only_an_sglang_exposition_without_any_scheduler_gauge_counts_as_cold() {
    // Nothing of SGLang's namespace: a wrong --engine or not SGLang at all.
    for text in ["", "vllm:num_requests_waiting 1\n", "# HELP sglang:num_queue_reqs x\n"] {
        let err = read(Engine::Sglang, text).unwrap_err();
        assert_eq!(err.reason(), "missing_metric", "{text:?}: {err}");
    }
    // Some gauges logged, one missing: a renamed or broken metric, not a cold pod.
    let partial: String = fixture("sglang.prom")
        .lines()
        .filter(|l| !l.starts_with("sglang:token_usage"))
        .map(|l| format!("{l}\n"))
        .collect();
    let err = read(Engine::Sglang, &partial).unwrap_err();
    assert_eq!(err.reason(), "missing_metric");
    assert!(err.to_string().contains("sglang:token_usage"), "{err}");
}

#[test]
fn trtllm_vocabulary() {
    let r = read(Engine::Trtllm, &fixture("trtllm.prom")).expect("reads");
    let m = &r.metrics;
    assert_eq!((m.waiting_requests, m.running_requests), (2, 12));
    assert_eq!(m.kv_cache_usage, 0.487418);
    assert_eq!((m.cache_block_size, m.cache_num_blocks), (Some(64), Some(6239)));
    // Triton's `model` label names the backend model (tensorrt_llm), not what clients request
    // (the ensemble or BLS model): reporting it would make the plugin drop the endpoint.
    assert!(r.models.is_empty(), "{:?}", r.models);
}

#[test]
fn trtllm_serve_running_counts_only_scheduled_requests_and_the_rest_wait() {
    let r = read(Engine::Trtllm, &fixture("trtllm_serve.prom")).expect("reads");
    let m = &r.metrics;
    // 14 active of which 12 scheduled, and 3 queued before admission: running 12, waiting 3 + 2,
    // the meaning Triton's request_type="scheduled"/"waiting" have.
    assert_eq!((m.waiting_requests, m.running_requests), (5, 12));
    assert_eq!(m.kv_cache_usage, 0.487418);
    assert_eq!((m.cache_block_size, m.cache_num_blocks), (Some(32), Some(6239)));
    assert_eq!((m.prefix_cache_queries_total, m.prefix_cache_hits_total), (Some(903_112.0), Some(524_288.0)));
    assert!(r.models.is_empty(), "model_name=\"undefined\" names no model: {:?}", r.models);
    // A release without the scheduled gauge: running is the active count, as exported.
    let older: String = fixture("trtllm_serve.prom")
        .lines()
        .filter(|l| !l.starts_with("trtllm_num_scheduled_requests"))
        .map(|l| format!("{l}\n"))
        .collect();
    let m = read(Engine::Trtllm, &older).unwrap().metrics;
    assert_eq!((m.waiting_requests, m.running_requests), (3, 14));
}

#[test]
fn trtllm_serve_without_iteration_stats_says_how_to_turn_them_on() {
    // return_perf_metrics on, enable_iter_perf_stats off: per-request metrics only.
    let text: String = fixture("trtllm_serve.prom")
        .lines()
        .filter(|l| l.starts_with('#') || l.starts_with("trtllm_request_") || l.starts_with("trtllm_time_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let vocab = Vocabulary::for_engine(Engine::Trtllm);
    let err = scrape::read(&text, &vocab).unwrap_err();
    assert_eq!(err.reason(), "missing_metric");
    let message = vocab.failure_message(&err);
    assert!(message.contains("enable_iter_perf_stats: true"), "{message}");
    // trtllm-serve's /metrics is JSON: the same hint tells where the Prometheus text is.
    let json =
        ScrapeError::NotText { what: "content-type \"application/json\"".into(), excerpt: "[{\"iter\":1}]".into() };
    assert!(vocab.failure_message(&json).contains("/prometheus/metrics"), "{}", vocab.failure_message(&json));
    // vLLM always serves /metrics: no hint to give.
    assert_eq!(Vocabulary::for_engine(Engine::Vllm).failure_message(&json), json.to_string());
}

#[test]
fn fixtures_name_created_series_as_prometheus_client_does() {
    // Reference §0: a counter's family drops `_total`, so its `_created` is `<name without
    // _total>_created`; a histogram's family keeps its name, so it is `<histogram>_created`.
    for name in
        ["vllm_single.prom", "vllm_dp.prom", "vllm_old.prom", "sglang.prom", "sglang_cold.prom", "trtllm_serve.prom"]
    {
        let text = fixture(name);
        let types: Vec<(&str, &str)> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
        let type_of = |family: &str| types.iter().find(|(n, _)| *n == family).map(|(_, t)| *t);
        for (family, kind) in &types {
            let Some(base) = family.strip_suffix("_created") else { continue };
            assert_eq!(*kind, "gauge", "{name}: {family}");
            let counter = type_of(&format!("{base}_total")) == Some("counter");
            let histogram = type_of(base) == Some("histogram");
            assert!(counter || histogram, "{name}: {family} belongs to no counter {base}_total or histogram {base}");
        }
    }
}

#[test]
fn wrong_engine_is_a_missing_metric_not_zeros() {
    let err = read(Engine::Sglang, &fixture("vllm_single.prom")).unwrap_err();
    assert_eq!(err.reason(), "missing_metric");
    assert!(err.to_string().contains("sglang:num_queue_reqs"), "{err}");
}

#[test]
fn bad_inputs_fail_with_a_reason() {
    let html = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n";
    assert_eq!(read(Engine::Vllm, html).unwrap_err().reason(), "not_text");
    let garbage = "vllm:num_requests_waiting{engine=\"0\" 3\nvllm:num_requests_running{{}} x\n";
    let err = read(Engine::Vllm, garbage).unwrap_err();
    assert_eq!(err.reason(), "parse", "{err}");
    assert!(err.to_string().contains("malformed"), "{err}");
    let empty = read(Engine::Vllm, "").unwrap_err();
    assert_eq!(empty.reason(), "missing_metric");
    let nan = fixture("vllm_single.prom").replace("} 3.0\n", "} NaN\n");
    assert_eq!(read(Engine::Vllm, &nan).unwrap_err().reason(), "bad_value");
    let negative = fixture("vllm_single.prom").replace("} 12.0\n", "} -12.0\n");
    assert_eq!(read(Engine::Vllm, &negative).unwrap_err().reason(), "bad_value");
    let inf_kv = fixture("vllm_single.prom").replace("} 0.4375\n", "} +Inf\n");
    assert_eq!(read(Engine::Vllm, &inf_kv).unwrap_err().reason(), "bad_value");
}
