//! The simulator over real HTTP on ephemeral loopback ports: API shapes, streaming, metrics,
//! faults and a small bounded load. Every pod lives in the test's own runtime and dies with it.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpStream;
use vllm_sim::load::{self, metric_sum};

use common::*;
#[tokio::test]
async fn streaming_sends_role_tokens_finish_usage_then_done() {
    let f = fleet(1, true).await;
    let a = &f.addresses()[0];
    let r = call(a, "POST", "/v1/chat/completions", Some(chat("Be brief.", 5, true))).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.pod.as_deref(), Some(a.as_str()));
    let events = sse_events(&r.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let tokens: Vec<&Value> = chunks[1..].iter().filter(|c| !c["choices"].as_array().unwrap().is_empty()).collect();
    assert_eq!(tokens.len(), 5);
    assert!(tokens[..4].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(tokens[4]["choices"][0]["finish_reason"], "length");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    // Without include_usage there is no usage chunk.
    let mut body = chat("Be brief.", 3, true);
    body["stream_options"] = json!({"include_usage": false});
    let r = call(a, "POST", "/v1/chat/completions", Some(body)).await.unwrap();
    assert!(!r.body.contains("\"usage\""));
    assert!(r.body.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_repeated_prompt_reports_block_aligned_cached_tokens_and_metrics_agree() {
    let f = fleet(1, true).await;
    let a = &f.addresses()[0];
    let system = long_text("rule", 300);
    let mut prompts = 0u64;
    let mut cached = Vec::new();
    for _ in 0..2 {
        let r = call(a, "POST", "/v1/chat/completions", Some(chat(&system, 4, false))).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let u = &v["usage"];
        prompts += u["prompt_tokens"].as_u64().unwrap();
        cached.push(u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap());
        let prompt_len = u["prompt_tokens"].as_u64().unwrap();
        let c = *cached.last().unwrap();
        assert!(
            c.is_multiple_of(16) && c < prompt_len,
            "cached {c} of {prompt_len}: block-aligned, at most prompt - 1"
        );
    }
    assert_eq!(cached[0], 0);
    assert!(cached[1] > 0);
    let m = metrics(a).await;
    assert_eq!(metric_sum(&m, "vllm:prefix_cache_queries_total"), Some(prompts as f64));
    assert_eq!(metric_sum(&m, "vllm:prefix_cache_hits_total"), Some(cached[1] as f64));
    assert_eq!(metric_sum(&m, "vllm:prompt_tokens_total"), Some(prompts as f64));
    assert_eq!(metric_sum(&m, "vllm:generation_tokens_total"), Some(8.0));
    assert_eq!(metric_sum(&m, "vllm:num_requests_running"), Some(0.0));
    assert_eq!(
        metric_sum(&m, "vllm:kv_cache_usage_perc"),
        Some(0.0),
        "finished requests leave only free (cached) blocks"
    );
    assert!(m.contains(
        "vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"Qwen/Qwen3-0.6B\"} 2.0\n"
    ));
    assert_eq!(metric_sum(&m, "vllm:time_to_first_token_seconds_count"), Some(2.0));
}

#[tokio::test]
async fn metrics_use_vllm_names_labels_total_and_created() {
    let f = fleet(1, false).await;
    let a = &f.addresses()[0];
    let r = call(
        a,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "sql-lora", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let m = metrics(a).await;
    for gauge in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"] {
        assert!(
            m.contains(&format!("# TYPE {gauge} gauge\n{gauge}{{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"}} ")),
            "{gauge}"
        );
    }
    for counter in
        ["prefix_cache_queries", "prefix_cache_hits", "prompt_tokens", "generation_tokens", "request_success"]
    {
        assert!(m.contains(&format!("# TYPE vllm:{counter}_total counter\n")), "{counter}");
        assert!(m.contains(&format!("# TYPE vllm:{counter}_created gauge\n")), "{counter}");
        assert!(!m.contains(&format!("vllm:{counter}_total_total")));
    }
    for hist in ["time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds"] {
        assert!(m.contains(&format!("# TYPE vllm:{hist} histogram\n")), "{hist}");
        assert!(m.contains(&format!("vllm:{hist}_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"Qwen/Qwen3-0.6B\"}} ")));
    }
    assert!(m.contains("# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"));
    assert!(
        m.contains("# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.\n")
    );
    // cache_config_info: block_size and num_gpu_blocks as labels, value 1, no model_name.
    let info = m.lines().find(|l| l.starts_with("vllm:cache_config_info{")).unwrap();
    assert!(info.contains("block_size=\"16\"") && info.contains("num_gpu_blocks=\"2000\"") && info.ends_with("} 1.0"));
    assert!(!info.contains("model_name"));
    // lora_requests_info: no model_name, valued with a Unix time.
    let lora: Vec<&str> = m.lines().filter(|l| l.starts_with("vllm:lora_requests_info{")).collect();
    assert!(!lora.is_empty());
    for l in &lora {
        assert!(l.starts_with("vllm:lora_requests_info{max_lora=\"1\",running_lora_adapters=\""), "{l}");
        assert!(!l.contains("model_name"));
        let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v > 1.6e9, "a Unix time, got {v}");
    }
    assert!(lora.iter().any(|l| l.contains("running_lora_adapters=\"sql-lora\",waiting_lora_adapters=\"sql-lora\"")));
}

#[tokio::test]
async fn prompt_tokens_details_only_with_the_flag() {
    let f = fleet(1, false).await;
    let a = &f.addresses()[0];
    let r = call(a, "POST", "/v1/completions", Some(json!({"model": MODEL, "prompt": "hello there", "max_tokens": 2})))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["usage"]["prompt_tokens_details"].is_null());
    let r = call(
        a,
        "POST",
        "/v1/completions",
        Some(json!({"model": MODEL, "prompt": "hello there", "max_tokens": 2, "stream": true, "stream_options": {"include_usage": true}})),
    )
    .await
    .unwrap();
    assert!(r.body.contains("\"usage\"") && !r.body.contains("prompt_tokens_details"));
}

#[tokio::test]
async fn errors_have_vllm_shapes() {
    let f = fleet(1, false).await;
    let a = &f.addresses()[0];
    let cases = [
        (json!({"model": "nope", "prompt": "x"}), 404, "NotFoundError"),
        (json!({"prompt": "x"}), 400, "BadRequestError"),
        (json!({"model": MODEL, "prompt": long_text("w", 3_000)}), 400, "BadRequestError"),
        (json!({"model": MODEL, "prompt": "x", "max_tokens": 5_000}), 400, "BadRequestError"),
    ];
    for (body, status, kind) in cases {
        let r = call(a, "POST", "/v1/completions", Some(body)).await.unwrap();
        assert_eq!(r.status, status, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["type"], kind);
        assert_eq!(v["error"]["code"], status);
        assert!(v["error"]["message"].as_str().unwrap().len() > 10);
    }
    let r = call(a, "POST", "/v1/chat/completions", None).await.unwrap();
    assert_eq!(r.status, 400);
    let over = call(a, "POST", "/v1/completions", Some(json!({"model": MODEL, "prompt": long_text("w", 3_000)})))
        .await
        .unwrap();
    assert!(over.body.contains("maximum context length is 4096 tokens"), "{}", over.body);
}

#[tokio::test]
async fn models_list_the_base_model_and_adapters() {
    let f = fleet(1, false).await;
    let r = call(&f.addresses()[0], "GET", "/v1/models", None).await.unwrap();
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![MODEL, "sql-lora"]);
    assert_eq!(v["data"][1]["parent"], MODEL);
    assert_eq!(call(&f.addresses()[0], "GET", "/health", None).await.unwrap().status, 200);
}

async fn set_fault(addr: &str, mode: &str) {
    let r = call(addr, "POST", "/admin/fault", Some(json!({"mode": mode}))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn metrics_faults_break_only_the_metrics_while_serving_goes_on() {
    let f = fleet(2, false).await;
    let (a, b) = (f.addresses()[0].clone(), f.addresses()[1].clone());
    let req = || Some(json!({"model": MODEL, "prompt": "x", "max_tokens": 2}));
    set_fault(&a, "metrics404").await;
    let m = call(&a, "GET", "/metrics", None).await.unwrap();
    assert_eq!(m.status, 404);
    assert_eq!(call(&a, "POST", "/v1/completions", req()).await.unwrap().status, 200);
    assert_eq!(call(&a, "GET", "/health", None).await.unwrap().status, 200);
    assert_eq!(call(&b, "GET", "/metrics", None).await.unwrap().status, 200, "the other pod is untouched");
    set_fault(&a, "metrics-garbage").await;
    let m = call(&a, "GET", "/metrics", None).await.unwrap();
    assert_eq!(m.status, 200);
    assert_eq!(metric_sum(&m.body, "vllm:num_requests_running"), None, "not an exposition: {}", m.body);
    assert!(m.body.lines().all(|l| !l.starts_with("vllm:") || l.contains(" = ")), "{}", m.body);
    assert_eq!(call(&a, "POST", "/v1/chat/completions", Some(chat("Be brief.", 3, true))).await.unwrap().status, 200);
    let r = call(&a, "GET", "/admin/fault", None).await.unwrap();
    assert!(r.body.contains("metrics-garbage"), "{}", r.body);
    set_fault(&a, "none").await;
    assert_eq!(metric_sum(&metrics(&a).await, "vllm:num_requests_running"), Some(0.0));
    let bad = call(&a, "POST", "/admin/fault", Some(json!({"mode": "metrics500"}))).await.unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("metrics404") && bad.body.contains("metrics-garbage"), "{}", bad.body);
}

#[tokio::test]
async fn faults_error_close_stall_and_exit_affect_one_pod_only() {
    let f = fleet(2, false).await;
    let (a, b) = (f.addresses()[0].clone(), f.addresses()[1].clone());
    let req = || Some(json!({"model": MODEL, "prompt": "x", "max_tokens": 2}));
    set_fault(&a, "error500").await;
    assert_eq!(call(&a, "POST", "/v1/completions", req()).await.unwrap().status, 500);
    assert_eq!(call(&b, "POST", "/v1/completions", req()).await.unwrap().status, 200);
    set_fault(&a, "close").await;
    assert!(call(&a, "POST", "/v1/completions", req()).await.is_err(), "closed without a response");
    set_fault(&a, "stall").await;
    let stalled = tokio::time::timeout(Duration::from_millis(300), call(&a, "GET", "/health", None)).await;
    assert!(stalled.is_err(), "a stalled pod does not answer");
    set_fault(&a, "none").await;
    assert_eq!(call(&a, "POST", "/v1/completions", req()).await.unwrap().status, 200);
    set_fault(&a, "exit").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&a).await.is_ok() {
        assert!(Instant::now() < deadline, "the exited pod still accepts connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(call(&b, "POST", "/v1/completions", req()).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_bounded_load_spreads_over_two_pods_and_hits_the_cache() {
    let f = fleet(2, true).await;
    let targets: Vec<String> = f.addresses().iter().map(|a| format!("http://{a}")).collect();
    let args = load_args(targets, f.addresses());
    let report = load::run(args).await.unwrap();
    let s = &report.summary;
    assert_eq!((s.requests, s.ok, s.errors), (40, 40, 0), "{}", load::render_table(&report));
    assert_eq!(s.per_pod.len(), 2);
    assert!(s.per_pod.values().all(|n| *n == 20), "round-robin: {:?}", s.per_pod);
    let rate = s.prefix_cache_hit_rate.unwrap();
    assert!(rate > 0.5, "2 groups on 2 pods: most prompt tokens are cached, got {rate}");
    assert_eq!(s.reported_cached_fraction, Some(rate), "usage agrees with the pods' counters");
    assert!(report.records.iter().all(|r| r.output_tokens == 8 && r.ttft_s.is_some()));
    assert!(s.ttft_s.p50.is_some() && s.itl_s.p50.is_some());
}
