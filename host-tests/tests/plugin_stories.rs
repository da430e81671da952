//! The built plugin (`./build.sh` output) driven through whole request lifecycles, the way Envoy
//! drives it. Each test is a story: a pool, a request, what went upstream or what the client got.

use host_tests::wis::{self, CHAT, COMPLETIONS, DESTINATION, MODEL, Pod, pod, pods};
use host_tests::{Envoy, Exchange, UpstreamReply};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const SCRAPER: &str = "wis-scraper";

/// Enough shared prefix to span many prefix blocks (16 tokens × 4 chars = 64 chars a block).
fn system_prompt(topic: &str) -> String {
    format!("You are a careful assistant for {topic}. ").repeat(40)
}

/// An Envoy whose plugin has fetched a snapshot of `pods` and shared it with every worker.
fn fleet(workers: usize, pool: &[Pod], extra: Value) -> Envoy {
    let envoy = Envoy::new().workers(workers).plugin_config(wis::config_with_scraper(extra)).build().unwrap();
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

#[test]
fn a_conversation_returns_to_the_pod_holding_its_prefix_even_on_another_worker() {
    let pool = pods(4);
    let envoy = fleet(2, &pool, json!({}));
    let system = system_prompt("the billing team");
    let mut first = send_chat(&envoy, 0, &system, "How do I read my invoice?");
    let holder = first.primary();
    finish(&mut first);
    // The holder now looks busier than the others: without the prefix memory the next turn
    // would go elsewhere.
    let busier: Vec<Pod> =
        pool.iter().map(|p| if p.address == holder { p.clone().waiting(2) } else { p.clone() }).collect();
    publish(&envoy, 2, &busier);
    let second = send_chat(&envoy, 1, &system, "How do I read my invoice? And the tax line?");
    assert_eq!(second.primary(), holder, "the second turn, on worker 1, follows the prefix to {holder}");
    // Control: a new conversation on the same pool avoids the busier pod.
    let other = send_chat(&envoy, 1, &system_prompt("a different product"), "Hello");
    assert_ne!(other.primary(), holder, "without a shared prefix the busier pod is avoided");
}

#[test]
fn requests_in_flight_spread_over_the_pool_across_workers() {
    let pool = pods(4);
    let envoy = fleet(2, &pool, json!({}));
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    let mut held = Vec::new();
    // Six arrive on worker 0, then two on worker 1, which must see worker 0's six.
    for i in 0..8 {
        let r = send_chat(&envoy, usize::from(i >= 6), &format!("Topic number {i}."), &format!("Question {i}"));
        *per_pod.entry(r.primary()).or_default() += 1;
        held.push(r);
    }
    assert_eq!(per_pod.len(), 4, "every pod got work: {per_pod:?}");
    assert!(per_pod.values().all(|&n| n == 2), "8 requests in flight on 4 equal pods: 2 each, got {per_pod:?}");
}

#[test]
fn a_lora_request_goes_to_the_pod_running_its_adapter() {
    let pool = vec![
        pod("10.0.0.1:8000").lora(&["sql-lora"], 4).kv(0.3),
        pod("10.0.0.2:8000").lora(&[], 4).kv(0.1),
        pod("10.0.0.3:8000").lora(&["a", "b"], 2).kv(0.1),
    ];
    let profile = json!({
        "models": {"served": [MODEL], "adapters": ["sql-lora"]},
        "endpointPickerConfig": {
            "plugins": [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}, {"type": "lora-affinity-scorer"}],
            "schedulingProfiles": [{"name": "default", "plugins": [
                {"pluginRef": "queue-scorer", "weight": 2},
                {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
                {"pluginRef": "lora-affinity-scorer", "weight": 5}]}]
        }
    });
    let envoy = fleet(1, &pool, profile);
    let lora = envoy.worker(0).request(CHAT).json(&wis::chat("sql-lora", "sys", "select 1")).send();
    lora.assert_destination("10.0.0.1:8000");
    // Control: a base-model request prefers the emptier KV cache.
    let base = envoy.worker(0).request(CHAT).json(&wis::chat(MODEL, "sys", "hello")).send();
    assert_ne!(base.primary(), "10.0.0.1:8000");
}

#[test]
fn the_subset_hint_restricts_the_primary_and_the_fallbacks() {
    let envoy = fleet(1, &pods(6), json!({}));
    let subset = ["10.0.0.3:8000", "10.0.0.5:8000"];
    for i in 0..4 {
        let r = envoy
            .worker(0)
            .request(CHAT)
            .header(wis::SUBSET, &subset.join(","))
            .json(&chat(&format!("topic {i}"), "hi"))
            .send();
        let destinations = r.destinations();
        assert!(!destinations.is_empty());
        assert!(destinations.iter().all(|d| subset.contains(&d.as_str())), "{destinations:?} outside {subset:?}");
    }
    let outside = envoy.worker(0).request(CHAT).header(wis::SUBSET, "10.9.9.9:8000").json(&chat("s", "hi")).send();
    assert_eq!(error_code(&outside.assert_local_reply(503)), "no_ready_endpoint");
}

#[test]
fn the_destination_lists_distinct_fallbacks_after_the_primary() {
    let pool = pods(5);
    let envoy = fleet(1, &pool, json!({}));
    let r = send_chat(&envoy, 0, "sys", "hello");
    let destinations = r.destinations();
    assert_eq!(destinations.len(), 3, "primary + 2 fallbacks by default: {destinations:?}");
    let distinct: std::collections::BTreeSet<_> = destinations.iter().collect();
    assert_eq!(distinct.len(), 3, "{destinations:?}");
    assert!(destinations.iter().all(|d| pool.iter().any(|p| &p.address == d)));

    let one = fleet(1, &pool, json!({"limits": {"fallbackCount": 1}}));
    assert_eq!(send_chat(&one, 0, "sys", "hello").destinations().len(), 2);
}

#[test]
fn a_body_that_is_not_json_gets_400() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request(CHAT).body("this is not json").send();
    assert_eq!(error_code(&r.assert_local_reply(400)), "invalid_json");
    assert!(!r.forwarded());
    assert_eq!(stat(&envoy, "wis.local_replies.400"), 1);
    let reply = r.client_response().expect("the client got the reply");
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[test]
fn an_inference_request_without_a_body_gets_400() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request(CHAT).send();
    assert_eq!(error_code(&r.assert_local_reply(400)), "missing_body");
}

#[test]
fn a_request_without_a_model_gets_400() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request(CHAT).json(&json!({"messages": [{"role": "user", "content": "hi"}]})).send();
    let body = r.assert_local_reply(400);
    assert_eq!(error_code(&body), "missing_model");
    assert_eq!(body["error"]["param"], "model");
}

#[test]
fn a_model_the_pool_does_not_serve_gets_404() {
    let envoy = fleet(1, &pods(2), json!({"models": {"served": [MODEL]}}));
    let r = envoy.worker(0).request(CHAT).json(&wis::chat("gpt-4o", "sys", "hi")).send();
    let body = r.assert_local_reply(404);
    assert_eq!(error_code(&body), "model_not_found");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("gpt-4o"));
    assert_eq!(stat(&envoy, "wis.local_replies.404"), 1);
}

#[test]
fn an_empty_pool_gets_503_but_a_pool_the_scraper_cannot_reach_still_routes() {
    let envoy = Envoy::new().plugin_config(json!({})).build().unwrap();
    let r = envoy.worker(0).request(CHAT).json(&chat("sys", "hi")).send();
    assert_eq!(error_code(&r.assert_local_reply(503)), "no_ready_endpoint");
    // Every pod unreachable to the scraper: the scraper may be the one in trouble, so the request
    // still goes to a member, with the others as fallbacks for Envoy's retries. Counted, not refused.
    let sick = fleet(1, &[pod("10.0.0.1:8000").unhealthy(), pod("10.0.0.2:8000").unhealthy()], json!({}));
    let r = send_chat(&sick, 0, "sys", "hi");
    assert_eq!(r.destinations().len(), 2, "{:?}", r.destinations());
    assert_eq!(stat(&sick, "wis.decisions.no_healthy_endpoint"), 1);
    assert_eq!(stat(&sick, "wis.local_replies.503"), 0);
}

#[test]
fn a_sheddable_request_on_a_saturated_pool_gets_429_and_a_normal_one_still_routes() {
    let saturated: Vec<Pod> = pods(3).into_iter().map(|p| p.waiting(10)).collect();
    let envoy = fleet(1, &saturated, json!({"objectives": {"batch": -1, "interactive": 10}}));
    let shed = envoy.worker(0).request(CHAT).header(wis::OBJECTIVE, "batch").json(&chat("sys", "hi")).send();
    assert_eq!(error_code(&shed.assert_local_reply(429)), "pool_saturated");
    assert_eq!(stat(&envoy, "wis.local_replies.429"), 1);
    let normal = envoy.worker(0).request(CHAT).header(wis::OBJECTIVE, "interactive").json(&chat("sys", "hi")).send();
    normal.primary();
    // Shedding needs no saturation filter in the profile (the default has none): only the decision
    // path differs. With the filter, every pod saturated means the decision used them all.
    assert_eq!(stat(&envoy, "wis.decisions.fell_back_to_all"), 0);
    let guarded = fleet(1, &saturated, guarded_profile(json!({"batch": -1, "interactive": 10})));
    let shed = guarded.worker(0).request(CHAT).header(wis::OBJECTIVE, "batch").json(&chat("sys", "hi")).send();
    assert_eq!(error_code(&shed.assert_local_reply(429)), "pool_saturated");
    guarded.worker(0).request(CHAT).header(wis::OBJECTIVE, "interactive").json(&chat("sys", "hi")).send().primary();
    assert!(stat(&guarded, "wis.decisions.fell_back_to_all") >= 1, "every pod saturated: the decision used them all");
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

#[test]
fn a_body_over_the_limit_gets_413_before_it_is_all_buffered() {
    let envoy = fleet(1, &pods(2), json!({"limits": {"maxBodyBytes": 1000}}));
    let big = chat("sys", &"x".repeat(5000)).to_string();
    let r = envoy.worker(0).request(CHAT).body(big).chunked(500).send();
    assert_eq!(error_code(&r.assert_local_reply(413)), "request_too_large");
    let body_calls = r.callbacks().iter().filter(|c| *c == "proxy_on_request_body").count();
    assert!(
        body_calls <= 3,
        "the plugin stopped at the first buffer over 1000 bytes, not after all 11 chunks: {body_calls}"
    );
    assert!(!r.forwarded());
    assert_eq!(stat(&envoy, "wis.local_replies.413"), 1);
}

#[test]
fn a_client_supplied_destination_is_removed() {
    let pool = pods(2);
    let envoy = fleet(1, &pool, json!({}));
    let r = envoy.worker(0).request(CHAT).header(DESTINATION, "6.6.6.6:443").json(&chat("sys", "hi")).send();
    assert_eq!(r.upstream_header_values(DESTINATION).len(), 1, "exactly one destination header goes upstream");
    assert!(pool.iter().any(|p| p.address == r.primary()), "{:?}", r.destinations());
    assert!(!r.destinations().iter().any(|d| d.starts_with("6.6.6.6")));
    // Also on a path the plugin does not schedule.
    let models = envoy.worker(0).request("/v1/models").method("GET").header(DESTINATION, "6.6.6.6:443").send();
    models.assert_forwarded();
    assert!(models.upstream_header_values(DESTINATION).is_empty(), "{:?}", models.upstream_headers());
}

#[test]
fn a_path_that_is_not_an_inference_api_passes_through_untouched() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request("/healthz").method("GET").send();
    r.assert_forwarded();
    assert!(r.upstream_header_values(DESTINATION).is_empty());
    assert_eq!(stat(&envoy, "wis.passthrough"), 1);
    assert_eq!(stat(&envoy, "wis.decisions"), 0);
}

#[test]
fn completions_are_scheduled_too() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request(COMPLETIONS).json(&json!({"model": MODEL, "prompt": "Once upon a time"})).send();
    r.primary();
    assert_eq!(stat(&envoy, "wis.decisions"), 1);
}

#[test]
fn when_the_scraper_fails_routing_continues_on_the_last_snapshot() {
    let pool = pods(3);
    let envoy = fleet(2, &pool, json!({}));
    let failed_before = stat(&envoy, "wis.snapshot.fetch_failed");
    envoy.upstream(SCRAPER).always(UpstreamReply::status(503));
    envoy.advance_ms(200);
    assert!(stat(&envoy, "wis.snapshot.fetch_failed") > failed_before, "a 503 counts as a failed fetch");
    assert!(!envoy.logs_containing("503").is_empty(), "the plugin says why: {:?}", envoy.logs());
    let r = send_chat(&envoy, 1, "sys", "hi");
    assert!(pool.iter().any(|p| p.address == r.primary()), "routed on the last snapshot: {:?}", r.destinations());
}

#[test]
fn a_scraper_that_never_answers_times_out_and_routing_continues() {
    let pool = pods(3);
    let envoy = fleet(1, &pool, json!({"pool": {"fetchTimeoutMs": 200}}));
    let failed_before = stat(&envoy, "wis.snapshot.fetch_failed");
    envoy.upstream(SCRAPER).always(UpstreamReply::Hang);
    envoy.advance_ms(400);
    assert!(stat(&envoy, "wis.snapshot.fetch_failed") > failed_before, "a timed-out fetch counts as failed");
    let calls = envoy.http_calls();
    assert!(calls.iter().all(|c| c.timeout_ms == 200), "the call carries fetchTimeoutMs");
    let r = send_chat(&envoy, 0, "sys", "hi");
    assert!(pool.iter().any(|p| p.address == r.primary()));
}

#[test]
fn a_malformed_or_reset_snapshot_answer_is_rejected_and_the_old_pool_kept() {
    let pool = pods(2);
    let envoy = fleet(1, &pool, json!({}));
    for reply in [UpstreamReply::json(200, "{not json"), UpstreamReply::Reset { after_ms: 1 }] {
        let failed_before = stat(&envoy, "wis.snapshot.fetch_failed");
        envoy.upstream(SCRAPER).always(reply);
        envoy.advance_ms(120);
        assert!(stat(&envoy, "wis.snapshot.fetch_failed") > failed_before);
        let r = send_chat(&envoy, 0, "sys", "hi");
        assert!(pool.iter().any(|p| p.address == r.primary()));
    }
}

#[test]
fn the_scraper_is_asked_about_once_per_interval_whatever_the_number_of_workers() {
    let envoy = fleet(4, &pods(2), json!({}));
    let before = envoy.http_calls().len();
    envoy.advance_ms(1000);
    let calls = &envoy.http_calls()[before..];
    // 1000 ms at a 50 ms interval: about 20 fetches, not 4 workers × 20.
    assert!((15..=25).contains(&calls.len()), "{} fetches in 1 s", calls.len());
    let call = &calls[0];
    assert_eq!(call.cluster, SCRAPER);
    assert_eq!(call.header(":method"), Some("GET"));
    assert_eq!(call.header(":path"), Some("/snapshot"));
    assert_eq!(call.header(":authority"), Some("scraper"));
}

#[test]
fn a_stale_snapshot_still_routes_and_a_new_one_replaces_it() {
    let envoy = fleet(2, &pods(2), guarded_profile(json!({})));
    // The scraper keeps serving the same (now old) snapshot: metrics go stale, routing goes on.
    envoy.advance_ms(1000);
    let r = send_chat(&envoy, 0, "sys", "hi");
    assert!(r.primary().starts_with("10.0.0."));
    assert!(stat(&envoy, "wis.decisions.fell_back_to_all") >= 1, "stale metrics saturate every pod");
    // A new pool replaces it on every worker.
    let new_pool = vec![pod("10.1.0.1:8000"), pod("10.1.0.2:8000")];
    publish(&envoy, 2, &new_pool);
    for worker in 0..2 {
        let r = send_chat(&envoy, worker, "sys", "hi");
        assert!(r.primary().starts_with("10.1.0."), "worker {worker} routes on the new pool: {:?}", r.destinations());
    }
}

#[test]
fn the_static_pool_serves_until_the_first_snapshot() {
    let envoy = Envoy::new()
        .plugin_config(json!({"pool": {"endpoints": ["10.2.0.1:8000"], "snapshotCluster": SCRAPER}}))
        .build()
        .unwrap();
    send_chat(&envoy, 0, "sys", "hi").assert_destination("10.2.0.1:8000");
    publish(&envoy, 1, &[pod("10.3.0.1:8000")]);
    send_chat(&envoy, 0, "sys", "hi").assert_destination("10.3.0.1:8000");
}

/// Pins `n` requests to `pod` with the subset hint and leaves them in flight.
fn pin(envoy: &Envoy, worker: usize, pod: &str, n: usize) -> Vec<Exchange> {
    (0..n)
        .map(|i| {
            let r = envoy
                .worker(worker)
                .request(CHAT)
                .header(wis::SUBSET, pod)
                .json(&chat(&format!("pinned {i}"), "q"))
                .send();
            r.assert_destination(pod);
            r
        })
        .collect()
}

#[test]
fn in_flight_requests_are_released_when_their_response_ends() {
    let envoy = fleet(2, &pods(2), json!({}));
    let (a, b) = ("10.0.0.1:8000", "10.0.0.2:8000");
    let mut pinned = pin(&envoy, 0, a, 3);
    // While they run, new work avoids the busy pod, on either worker.
    send_chat(&envoy, 1, "while busy", "q").assert_destination(b);
    for r in &mut pinned {
        r.respond(200).body_chunks(["data: {}\n\n", "data: [DONE]\n\n"]).finish();
        assert!(r.ended());
    }
    // Released, and within one tick every worker knows: pod a is idle again, b still has one.
    envoy.advance_ms(TICK_MS);
    send_chat(&envoy, 1, "after release", "q").assert_destination(a);
}

#[test]
fn in_flight_requests_are_released_when_their_stream_is_reset() {
    let envoy = fleet(2, &pods(2), json!({}));
    let (a, b) = ("10.0.0.1:8000", "10.0.0.2:8000");
    let mut pinned = pin(&envoy, 0, a, 3);
    send_chat(&envoy, 1, "while busy", "q").assert_destination(b);
    for r in &mut pinned {
        r.reset();
        assert!(r.was_reset() && r.ended());
        assert!(!r.callbacks().iter().any(|c| c.starts_with("proxy_on_response")), "{:?}", r.callbacks());
    }
    envoy.advance_ms(TICK_MS);
    send_chat(&envoy, 1, "after reset", "q").assert_destination(a);
}

#[test]
fn a_streamed_request_body_in_many_small_chunks_is_routed_like_a_whole_one() {
    let pool = pods(4);
    let envoy = fleet(1, &pool, json!({}));
    let body = chat(&system_prompt("streaming"), "Tell me about chunked transfer encoding.").to_string();
    let mut whole = envoy.worker(0).request(CHAT).body(body.clone()).send();
    let primary = whole.primary();
    finish(&mut whole);
    let chunked = envoy.worker(0).request(CHAT).body(body.clone()).chunked(7).send();
    chunked.assert_destination(&primary);
    assert_eq!(chunked.upstream_body(), body.as_bytes(), "the body went upstream intact");
    let calls = chunked.callbacks().iter().filter(|c| *c == "proxy_on_request_body").count();
    assert_eq!(calls, body.len().div_ceil(7));
}

#[test]
fn a_streamed_response_reports_cached_tokens_back_to_the_prefix_index() {
    let envoy = fleet(1, &pods(2), json!({}));
    let mut r = send_chat(&envoy, 0, &system_prompt("feedback"), "hi");
    let mut chunks: Vec<String> =
        (0..50).map(|i| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n")).collect();
    chunks.push(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":700,\"completion_tokens\":50,\"prompt_tokens_details\":{\"cached_tokens\":512}}}\n\n"
            .into(),
    );
    chunks.push("data: [DONE]\n\n".into());
    let client = r.respond(200).header("content-type", "text/event-stream").body_chunks(chunks.clone()).finish();
    assert!(client.complete);
    assert_eq!(client.body, chunks.concat().into_bytes(), "the stream reached the client unchanged");
    assert_eq!(stat(&envoy, "wis.prefix.feedback"), 1);
    assert_eq!(stat(&envoy, "wis.prefix.observed_blocks"), 512 / 16);
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
    let decision: Value = serde_json::from_str(&exchange.upstream_header("x-wis-decision").unwrap_or_default())
        .expect("the JSON decision header");
    let rows = decision["scores"].as_array().cloned().unwrap_or_default();
    let row = rows.iter().find(|row| row["address"] == pod).expect("a score row for the pod");
    row["prefix_matched_blocks"].as_u64().unwrap_or(0)
}

#[test]
fn a_pod_that_lost_its_cache_is_forgotten_on_every_worker() {
    let envoy = fleet(2, &pods(2), json!({"debugHeader": "json"}));
    let pod = "10.0.0.1:8000";
    let (x, y) = (system_prompt("gardening"), system_prompt("sailing"));
    let pinned = |worker: usize, system: &str| {
        let r = envoy.worker(worker).request(CHAT).header(wis::SUBSET, pod).json(&chat(system, "q")).send();
        r.assert_destination(pod);
        r
    };
    for system in [&x, &y] {
        respond_with_cached(&mut pinned(0, system), 0);
    }
    let mut probe = pinned(1, &y);
    assert!(matched_blocks_at(&probe, pod) > 4, "worker 1 knows the pod holds y");
    respond_with_cached(&mut probe, 512);
    // x again: the index predicts its blocks at the pod, and the pod reports none cached (it
    // restarted, or evicted everything): the index keeps only x there, on every worker.
    let mut again = pinned(0, &x);
    assert!(matched_blocks_at(&again, pod) > 4);
    respond_with_cached(&mut again, 0);
    // (`stat` waits one tick, by which every worker has applied the report.)
    assert_eq!(stat(&envoy, "wis.prefix.prediction_confirmed"), 1);
    assert_eq!(stat(&envoy, "wis.prefix.prediction_wrong"), 1);
    let probe = pinned(1, &y);
    assert_eq!(matched_blocks_at(&probe, pod), 0, "worker 1 forgot what the pod lost");
    assert!(matched_blocks_at(&pinned(1, &x), pod) > 4, "and still knows the prompt it just served");
}

#[test]
fn no_session_token_is_sent_without_the_session_scorer() {
    let envoy = fleet(1, &pods(3), json!({}));
    let mut r = send_chat(&envoy, 0, "sys", "hi");
    r.primary();
    let client = r.respond(200).body("{}").finish();
    assert_eq!(client.header(wis::SESSION), None, "the default profile has no session affinity: no token");
}

#[test]
fn a_session_token_is_opaque_authenticated_and_brings_the_session_back() {
    let affinity = fleet(1, &pods(3), session_affinity_profile());
    let mut first = send_chat(&affinity, 0, "a", "b");
    let pod = first.primary();
    let token = first.respond(200).body("{}").finish().header(wis::SESSION).expect("a session token").to_string();
    let hex: String = pod.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!token.contains(&pod) && !token.contains(&hex), "the token names no address: {token}");
    for i in 0..3 {
        let again = affinity
            .worker(0)
            .request(CHAT)
            .header(wis::SESSION, &token)
            .json(&chat(&format!("other {i}"), "c"))
            .send();
        again.assert_destination(&pod);
    }
    // A forged token (the old address-in-hex form, naming another pod) and a tampered one are
    // ignored and counted.
    let other = pods(3).into_iter().map(|p| p.address).find(|a| *a != pod).unwrap_or_default();
    let forged: String = format!("wis1.{}", other.bytes().map(|b| format!("{b:02x}")).collect::<String>());
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [forged, tampered] {
        let r = affinity.worker(0).request(CHAT).header(wis::SESSION, &bad).json(&chat("forged", "c")).send();
        r.primary();
    }
    assert_eq!(stat(&affinity, "wis.session.invalid"), 2);
    assert_eq!(stat(&affinity, "wis.session.accepted"), 3);
}

fn session_affinity_profile() -> Value {
    json!({"endpointPickerConfig": {
        "plugins": [{"type": "session-affinity-scorer", "parameters": {"secret": "host-tests session key 0123"}},
                    {"type": "queue-scorer"}],
        "schedulingProfiles": [{"name": "s", "plugins": [
            {"pluginRef": "session-affinity-scorer", "weight": 10},
            {"pluginRef": "queue-scorer", "weight": 1}]}]}})
}

#[test]
fn a_response_from_a_fallback_moves_the_request_and_the_session_to_it() {
    let envoy = fleet(2, &pods(3), session_affinity_profile());
    let mut r = send_chat(&envoy, 0, "sys", "hi");
    let destinations = r.destinations();
    let (primary, fallback) = (destinations[0].clone(), destinations[1].clone());
    assert_ne!(primary, fallback);
    // Envoy retried past the primary: upstream.address names the fallback.
    let client = r.respond(200).from_upstream(&fallback).body("{}").finish();
    assert_eq!(stat(&envoy, "wis.served_elsewhere"), 1);
    let token = client.header(wis::SESSION).expect("session token").to_string();
    let next = envoy.worker(1).request(CHAT).header(wis::SESSION, &token).json(&chat("next", "turn")).send();
    next.assert_destination(&fallback);
}

#[test]
fn service_extensions_mode_routes_statelessly_without_refused_calls() {
    let envoy = Envoy::new().service_extensions().plugin_config(json!({"mode": "service-extensions"})).build().unwrap();
    let system = system_prompt("stateless");
    let first = envoy.worker(0).request(CHAT).json(&chat(&system, "first turn")).send();
    first.assert_forwarded();
    assert_eq!(first.upstream_header("x-gateway-model-name").as_deref(), Some(MODEL));
    let key = first.upstream_header("x-gateway-prefix-affinity-key").expect("an affinity key");
    let second = envoy.worker(0).request(CHAT).json(&chat(&system, "first turn, and a second")).send();
    assert_eq!(second.upstream_header("x-gateway-prefix-affinity-key"), Some(key), "one conversation, one key");
    assert!(first.upstream_header_values(DESTINATION).is_empty(), "no pool view, no destination");
    let bad = envoy.worker(0).request(CHAT).body("nope").send();
    assert_eq!(error_code(&bad.assert_local_reply(400)), "invalid_json");
    envoy.advance_ms(1000);
    assert!(envoy.http_calls().is_empty());
}

#[test]
fn every_callback_of_a_request_runs_in_envoys_order() {
    let envoy = fleet(1, &pods(2), json!({}));
    let mut r = send_chat(&envoy, 0, "sys", "hi");
    r.respond(200).body_chunks(["a", "b"]).finish();
    assert_eq!(
        r.callbacks(),
        [
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_response_headers",
            "proxy_on_response_body",
            "proxy_on_response_body",
            "proxy_on_log",
            "proxy_on_done",
            "proxy_on_delete"
        ]
    );
    assert_eq!(envoy.live_streams(0), 0);
}

#[test]
fn shared_data_stays_bounded_under_traffic() {
    // 64 log slots: 300 requests (routed + released events) wrap the routing log several times.
    let envoy = fleet(2, &pods(4), json!({"sharedState": {"logSlots": 64}}));
    let run = |n: usize| {
        for i in 0..n {
            let mut r = send_chat(&envoy, i % 2, &format!("conversation {i}"), "hi");
            finish(&mut r);
        }
        (envoy.shared_data().len(), envoy.shared_data_bytes())
    };
    let (keys_100, bytes_100) = run(100);
    let (keys_300, bytes_300) = run(200);
    assert_eq!(keys_300, keys_100, "no key per request, prefix or endpoint: {:?}", envoy.shared_data().keys());
    assert!(keys_300 <= 64 + 8, "{keys_300} keys for 64 log slots");
    assert!(bytes_300 <= bytes_100 * 2, "{bytes_100} bytes after 100 requests, {bytes_300} after 300");
}
