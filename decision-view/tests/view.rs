//! The decision view's engine, natively: the same scheduling the filter does, on a pool snapshot in
//! the scraper's format, with the page's own routing memory.

use decision_view::View;
use serde_json::{Value, json};

const NOW_MS: u64 = 1_764_000_000_000;
const POD_A: &str = "10.0.0.1:8000";
const POD_B: &str = "10.0.0.2:8000";
const POD_C: &str = "10.0.0.3:8000";

fn snapshot(queues: [u32; 3]) -> String {
    let endpoint = |address: &str, waiting: u32| {
        json!({"address": address, "healthy": true, "stale": false, "last_scrape_ms": NOW_MS - 20,
               "models": ["Qwen/Qwen3-0.6B"],
               "metrics": {"waiting_requests": waiting, "running_requests": 1, "kv_cache_usage": 0.25,
                           "lora": {"running": ["sql-lora"], "waiting": [], "max_loras": 2},
                           "prefix_cache_queries_total": 200.0, "prefix_cache_hits_total": 50.0}})
    };
    json!({"format_version": 1, "sequence": 7, "generated_at_ms": NOW_MS - 10, "engine": "vllm",
           "endpoints": [endpoint(POD_A, queues[0]), endpoint(POD_B, queues[1]), endpoint(POD_C, queues[2])]})
    .to_string()
}

fn chat(turns: &[&str]) -> String {
    let system = "You are the support assistant of a company that sells garden tools. ".repeat(12);
    let mut messages = vec![json!({"role": "system", "content": system})];
    for turn in turns {
        messages.push(json!({"role": "user", "content": turn}));
    }
    json!({"model": "Qwen/Qwen3-0.6B", "messages": messages, "stream": true}).to_string()
}

fn view() -> View {
    let mut view = View::new("{}").unwrap();
    assert_eq!(view.set_snapshot(&snapshot([0, 0, 0])).unwrap(), 3);
    view
}

fn schedule(view: &mut View, body: &str, remember: bool) -> Value {
    serde_json::from_str(&view.schedule("/v1/chat/completions", body, "", NOW_MS, remember).unwrap()).unwrap()
}

#[test]
fn a_decision_shows_every_scorer_for_every_endpoint_with_the_default_weights() {
    let mut view = view();
    let out = schedule(&mut view, &chat(&["How do I sharpen shears?"]), false);
    let decision = &out["decision"];
    let rows = decision["scores"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let scorers: Vec<&str> =
            row["scores"].as_array().unwrap().iter().map(|s| s["scorer"].as_str().unwrap()).collect();
        assert!(scorers.contains(&"prefix-cache-scorer") && scorers.contains(&"queue-scorer"), "{scorers:?}");
    }
    let weights: Vec<(String, f64)> = serde_json::from_value(out["weights"].clone()).unwrap();
    assert!(weights.contains(&("prefix-cache-scorer".into(), 3.0)), "{weights:?}");
    assert!(weights.contains(&("queue-scorer".into(), 2.0)), "{weights:?}");
    assert_eq!(decision["fallbacks"].as_array().unwrap().len(), 2);
    assert_eq!(out["request"]["api"], "chat-completions");
    assert!(out["request"]["prefix_blocks"].as_u64().unwrap() > 4);
}

#[test]
fn a_new_conversation_is_placed_by_its_key_and_keeps_off_busy_pods() {
    let mut view = View::new("{}").unwrap();
    view.set_snapshot(&snapshot([8, 0, 8])).unwrap();
    let out = schedule(&mut view, &chat(&["hello"]), false);
    assert_eq!(out["decision"]["primary"], POD_B, "the only pod within the load bound");
    assert_eq!(out["decision"]["placed_by_key"], true);
}

#[test]
fn a_remembered_conversation_keeps_its_pod_and_shows_the_matched_prefix() {
    let mut view = view();
    let first = schedule(&mut view, &chat(&["How do I sharpen shears?"]), true);
    let pod = first["decision"]["primary"].as_str().unwrap().to_string();
    assert_eq!(first["decision"]["predicted_cached_blocks"], 0);

    let second = schedule(&mut view, &chat(&["How do I sharpen shears?", "And a lawn mower blade?"]), true);
    assert_eq!(second["decision"]["primary"], pod.as_str());
    assert!(second["decision"]["predicted_cached_blocks"].as_u64().unwrap() > 4, "{second}");
    let pool: Value = serde_json::from_str(&view.pool_json(NOW_MS)).unwrap();
    let remembered: Vec<u64> =
        pool["endpoints"].as_array().unwrap().iter().map(|e| e["remembered_blocks"].as_u64().unwrap()).collect();
    assert_eq!(remembered.iter().filter(|&&b| b > 0).count(), 1, "{remembered:?}");

    view.forget();
    let again = schedule(&mut view, &chat(&["How do I sharpen shears?"]), false);
    assert_eq!(again["decision"]["predicted_cached_blocks"], 0);
}

#[test]
fn without_remember_the_memory_is_unchanged() {
    let mut view = view();
    schedule(&mut view, &chat(&["one"]), false);
    let out = schedule(&mut view, &chat(&["one"]), false);
    assert_eq!(out["decision"]["predicted_cached_blocks"], 0);
}

#[test]
fn the_pool_view_reports_metrics_staleness_and_adapters() {
    let view = view();
    let pool: Value = serde_json::from_str(&view.pool_json(NOW_MS)).unwrap();
    assert_eq!(pool["source"], "scraper");
    assert_eq!(pool["sequence"], 7);
    let a = &pool["endpoints"][0];
    assert_eq!(a["address"], POD_A);
    assert_eq!(a["metrics_age_ms"], 20);
    assert_eq!(a["lora_running"][0], "sql-lora");
    assert_eq!(a["max_loras"], 2);
    assert_eq!(a["prefix_cache_hit_ratio"], 0.25);
}

#[test]
fn static_endpoints_are_the_pool_until_a_snapshot_arrives() {
    let view = View::new(&json!({"pool": {"endpoints": [POD_A, POD_B]}}).to_string()).unwrap();
    let pool: Value = serde_json::from_str(&view.pool_json(NOW_MS)).unwrap();
    assert_eq!(pool["source"], "static");
    assert_eq!(pool["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(pool["endpoints"][0]["metrics_age_ms"], Value::Null);
}

#[test]
fn headers_carry_the_subset_hint() {
    let mut view = view();
    let headers = json!({"X-Gateway-Destination-Endpoint-Subset": POD_C}).to_string();
    let out: Value =
        serde_json::from_str(&view.schedule("/v1/chat/completions", &chat(&["hi"]), &headers, NOW_MS, false).unwrap())
            .unwrap();
    assert_eq!(out["decision"]["primary"], POD_C);
    assert_eq!(out["request"]["subset"][0], POD_C);
}

#[test]
fn bad_input_gets_the_filters_own_message() {
    let mut view = view();
    let err = view.schedule("/v1/chat/completions", "{\"model\": ", "", NOW_MS, true).unwrap_err();
    assert!(err.contains("not valid JSON"), "{err}");
    let err = view.schedule("/v1/chat/completions", r#"{"messages": []}"#, "", NOW_MS, true).unwrap_err();
    assert!(err.contains("no 'model'"), "{err}");
    let err = view.schedule("/v1/embeddings", &chat(&["x"]), "", NOW_MS, true).unwrap_err();
    assert!(err.contains("not an inference path"), "{err}");
    let err = view.schedule("/v1/chat/completions", &chat(&["x"]), "[1]", NOW_MS, true).unwrap_err();
    assert!(err.contains("headers must be a JSON object"), "{err}");
    let err = view.set_snapshot(r#"{"format_version": 9, "sequence": 1, "generated_at_ms": 1, "endpoints": []}"#);
    assert!(err.unwrap_err().contains("pool snapshot"));
    let err = View::new(r#"{"debugHeader": "yaml"}"#).err().unwrap();
    assert!(err.contains("debugHeader"), "{err}");
}

#[test]
fn an_empty_pool_is_an_error_not_a_decision() {
    let mut view = View::new("{}").unwrap();
    let err = view.schedule("/v1/chat/completions", &chat(&["x"]), "", NOW_MS, false).unwrap_err();
    assert!(err.contains("no endpoints"), "{err}");
}

#[test]
fn the_pool_view_shows_why_metrics_are_unknown_and_the_index_capacity() {
    let mut view = view();
    let mut snap: Value = serde_json::from_str(&snapshot([0, 0, 0])).unwrap();
    snap["endpoints"][1]["stale"] = json!(true);
    snap["endpoints"][1]["last_error"] = json!({"reason": "http_status", "message": "answered HTTP 404, expected 200: \"Not Found\"", "since_ms": NOW_MS - 500});
    snap["endpoints"][0]["metrics"]["cache_block_size"] = json!(16);
    snap["endpoints"][0]["metrics"]["cache_num_blocks"] = json!(800);
    view.set_snapshot(&snap.to_string()).unwrap();
    let pool: Value = serde_json::from_str(&view.pool_json(NOW_MS)).unwrap();
    assert_eq!(pool["endpoints"][1]["last_error"]["reason"], "http_status");
    assert!(pool["endpoints"][1]["last_error"]["message"].as_str().unwrap().contains("404"));
    assert_eq!(pool["endpoints"][0]["last_error"], Value::Null);
    // 800 KV blocks of 16 tokens at the starting guess of 4 bytes a token: 800 blocks of 64 bytes.
    assert_eq!(pool["endpoints"][0]["index_capacity_blocks"], 800);
    assert_eq!(pool["bytes_per_token"], 4.0);
    // A pod with unreadable metrics is still scheduled, and the decision says its metrics were unknown.
    let out = schedule(&mut view, &chat(&["hello"]), false);
    let rows = out["decision"]["scores"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["filtered_out"].is_null()), "{out}");
    assert_eq!(rows.iter().filter(|r| r["metrics_known"] == false).count(), 1);
}

#[test]
fn the_plugin_types_are_the_registry() {
    let types: Value = serde_json::from_str(&view().plugin_types_json()).unwrap();
    let names: Vec<&str> = types.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"prefix-cache-scorer") && names.contains(&"saturation-filter"), "{names:?}");
    assert!(types.as_array().unwrap().iter().all(|t| t["kind"].is_string()));
}
