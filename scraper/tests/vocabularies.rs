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
    assert_eq!(
        m.prefix_cache_hits_total,
        Some(520_000.0),
        "the cache_source=\"total\" series, not a double-counting sum"
    );
    assert_eq!(r.models, vec!["qwen2.5-7b".to_string()]);
}

#[test]
fn trtllm_vocabulary() {
    let r = read(Engine::Trtllm, &fixture("trtllm.prom")).expect("reads");
    let m = &r.metrics;
    assert_eq!((m.waiting_requests, m.running_requests), (2, 12));
    assert_eq!(m.kv_cache_usage, 0.487418);
    assert_eq!((m.cache_block_size, m.cache_num_blocks), (Some(64), Some(6239)));
    assert_eq!(r.models, vec!["tensorrt_llm".to_string()]);
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

#[test]
fn fixtures_name_created_series_as_prometheus_client_does() {
    // Reference §0: a counter's family drops `_total`, so its `_created` is `<name without
    // _total>_created`; a histogram's family keeps its name, so it is `<histogram>_created`.
    for name in ["vllm_single.prom", "vllm_dp.prom", "vllm_old.prom", "sglang.prom", "trtllm.prom"] {
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
