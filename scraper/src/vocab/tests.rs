//! Unit tests of the vocabularies: selectors, LoRA, bad values, fallbacks.

use super::*;

fn read(engine: Engine, text: &str) -> Result<Reading, ExtractError> {
    let v = Vocabulary::for_engine(engine);
    v.extract(&v.parse(text))
}

#[test]
fn selector_parses_and_prints() {
    let s: Selector = "nv_trt_llm_request_metrics{request_type=\"waiting\"}".parse().unwrap();
    assert_eq!(s, Selector::with("nv_trt_llm_request_metrics", "request_type", "waiting"));
    assert_eq!(s.to_string(), "nv_trt_llm_request_metrics{request_type=\"waiting\"}");
    assert!("9bad".parse::<Selector>().is_err());
    assert!("x{a}".parse::<Selector>().is_err());
}

#[test]
fn lora_newest_series_wins_and_lists_are_trimmed() {
    let text = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n\
        vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"old\",waiting_lora_adapters=\"\"} 1.7556102e+09\n\
        vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\" a , b,,\",waiting_lora_adapters=\"c\"} 1.7556103e+09\n\
        vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"older\",waiting_lora_adapters=\"\"} 1.7556101e+09\n";
    let lora = read(Engine::Vllm, text).unwrap().metrics.lora.unwrap();
    assert_eq!(lora, LoraState { running: vec!["a".into(), "b".into()], waiting: vec!["c".into()], max_loras: 4 });
}

#[test]
fn negative_or_nan_queue_fails_the_reading() {
    let err =
        read(Engine::Vllm, "vllm:num_requests_waiting -1\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n")
            .unwrap_err();
    assert!(err.to_string().contains("non-negative"), "{err}");
    let err =
        read(Engine::Vllm, "vllm:num_requests_waiting 1\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc NaN\n")
            .unwrap_err();
    assert!(matches!(err, ExtractError::BadValue { .. }), "{err}");
}

#[test]
fn kv_usage_in_percent_is_rejected() {
    let err =
        read(Engine::Vllm, "vllm:num_requests_waiting 1\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 43\n")
            .unwrap_err();
    assert!(err.to_string().contains("fraction"), "{err}");
}

#[test]
fn missing_required_metric_names_what_was_looked_for() {
    let err = read(Engine::Sglang, "vllm:num_requests_waiting 1\n").unwrap_err();
    assert!(err.to_string().contains("sglang:num_queue_reqs"), "{err}");
}

#[test]
fn trtllm_usage_falls_back_to_used_over_max() {
    let text = "nv_trt_llm_request_metrics{request_type=\"waiting\"} 2\n\
        nv_trt_llm_request_metrics{request_type=\"scheduled\"} 3\n\
        nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\"} 25\n\
        nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\"} 100\n";
    let m = read(Engine::Trtllm, text).unwrap().metrics;
    assert_eq!((m.waiting_requests, m.running_requests, m.kv_cache_usage), (2, 3, 0.25));
    assert_eq!(m.cache_num_blocks, Some(100));
}
