//! The built plugin (`./build.sh` output) driven through whole request lifecycles, the way Envoy
//! drives it. Each test is a story: a pool, a request, what went upstream or what the client got.

use host_tests::wis::{self, CHAT, COMPLETIONS, MODEL, Pod, pod, pods};
use host_tests::{Envoy, Exchange, UpstreamReply};
use serde_json::{Value, json};
use std::collections::BTreeMap;

mod bad_requests;
mod degrade;
mod lifecycle;
mod routing;
mod snapshots;

const SCRAPER: &str = wis::SCRAPER_CLUSTER;

/// Enough shared prefix to span many prefix blocks (16 tokens × 4 chars = 64 chars a block).
fn system_prompt(topic: &str) -> String {
    format!("You are a careful assistant for {topic}. ").repeat(40)
}

/// An Envoy whose plugin has fetched a snapshot of `pods` and shared it with every worker.
fn fleet(workers: usize, pool: &[Pod], extra: Value) -> Envoy {
    let envoy = wis::envoy().workers(workers).plugin_config(wis::config_with_scraper(extra)).build().unwrap();
    publish(&envoy, 1, pool);
    envoy
}

/// The scraper serves a new snapshot; after two refresh intervals every worker has it.
fn publish(envoy: &Envoy, sequence: u64, pool: &[Pod]) {
    let ok_before = envoy.stats().get("wis.snapshot.fetch_ok").copied().unwrap_or(0);
    envoy.scraper_replies(wis::snapshot(sequence, envoy.now_ms(), pool));
    envoy.advance_ms(101);
    assert!(envoy.stat("wis.snapshot.fetch_ok") > ok_before, "the plugin fetched no snapshot: {:?}", envoy.logs());
}

/// One refresh interval: every VM ticks once, which hands its stats to the host and appends the
/// routing events its finished requests left (so every worker has applied them).
const TICK_MS: u64 = 50;

/// A stat after one tick: the plugin accumulates stats in each VM and flushes them on the tick.
fn stat(envoy: &Envoy, name: &str) -> i64 {
    envoy.advance_ms(TICK_MS);
    envoy.stat(name)
}

fn chat(system: &str, user: &str) -> Value {
    wis::chat(MODEL, system, user)
}

fn send_chat(envoy: &Envoy, worker: usize, system: &str, user: &str) -> Exchange {
    envoy.worker(worker).request(CHAT).json(&chat(system, user)).send()
}

fn finish(exchange: &mut Exchange) {
    exchange.respond(200).header("content-type", "application/json").body(r#"{"choices":[]}"#).finish();
}

/// Asserts the OpenAI error shape and returns the error's code.
fn error_code(body: &Value) -> String {
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "error.message: {body}");
    assert!(error["type"].is_string(), "error.type: {body}");
    assert!(error.get("param").is_some(), "error.param present (may be null): {body}");
    error["code"].as_str().unwrap_or_else(|| panic!("error.code: {body}")).to_string()
}

/// The llm-d guide's profile with its `saturation-filter` in front (the default profile leaves it
/// out), and the given objectives.
fn guarded_profile(objectives: Value) -> Value {
    json!({
        "objectives": objectives,
        "endpointPickerConfig": {
            "plugins": [{"type": "saturation-filter"}, {"type": "prefix-cache-scorer"},
                        {"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}],
            "schedulingProfiles": [{"name": "default", "plugins": [
                {"pluginRef": "saturation-filter"},
                {"pluginRef": "prefix-cache-scorer", "weight": 3},
                {"pluginRef": "queue-scorer", "weight": 2},
                {"pluginRef": "kv-cache-utilization-scorer", "weight": 2}]}]
        }
    })
}

/// The default profile, but a prompt no pod is known to hold is always placed by the load scores
/// (as llm-d does), never by its conversation key: for stories about what those scores see.
fn placed_by_load() -> Value {
    placed_by("load")
}

/// The default profile with `max-score-picker`'s `unseenPlacement` set to `mode`.
fn placed_by(mode: &str) -> Value {
    json!({"endpointPickerConfig": {
        "plugins": [{"type": "prefix-cache-scorer"}, {"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"},
                    {"type": "max-score-picker", "parameters": {"unseenPlacement": mode}}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "prefix-cache-scorer", "weight": 3},
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "max-score-picker"}]}]}})
}

/// Pins `n` requests to `pod` with the subset hint and leaves them in flight.
fn pin(envoy: &Envoy, worker: usize, pod: &str, n: usize) -> Vec<Exchange> {
    (0..n)
        .map(|i| {
            let r = envoy
                .worker(worker)
                .request(CHAT)
                .header(&wis::headers().subset, pod)
                .json(&chat(&format!("pinned {i}"), "q"))
                .send();
            r.assert_destination(pod);
            r
        })
        .collect()
}

/// A non-streamed response whose usage says the pod found `cached` prompt tokens in its cache.
fn respond_with_cached(exchange: &mut Exchange, cached: u32) {
    let usage =
        json!({"prompt_tokens": 700, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": cached}});
    let body = json!({"choices": [], "usage": usage}).to_string();
    exchange.respond(200).header("content-type", "application/json").body(body).finish();
}

/// Prefix blocks the decision (debug header `json`) credited to `pod` for this request.
fn matched_blocks_at(exchange: &Exchange, pod: &str) -> u64 {
    let decision: Value = serde_json::from_str(&exchange.upstream_header(&wis::headers().debug).unwrap_or_default())
        .expect("the JSON decision header");
    let rows = decision["scores"].as_array().cloned().unwrap_or_default();
    let row = rows.iter().find(|row| row["address"] == pod).expect("a score row for the pod");
    row["prefix_matched_blocks"].as_u64().unwrap_or(0)
}

fn session_affinity_profile() -> Value {
    json!({"endpointPickerConfig": {
        "plugins": [{"type": "session-affinity-scorer", "parameters": {"secret": "host-tests session key 0123"}},
                    {"type": "queue-scorer"}],
        "schedulingProfiles": [{"name": "s", "plugins": [
            {"pluginRef": "session-affinity-scorer", "weight": 10},
            {"pluginRef": "queue-scorer", "weight": 1}]}]}})
}
