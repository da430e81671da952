//! Requests the plugin answers itself: 400, 404, 413, 429 and 503, in the OpenAI error shape.

use super::*;

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
fn an_empty_pool_gets_503() {
    let envoy = wis::envoy().plugin_config(json!({})).build().unwrap();
    let r = envoy.worker(0).request(CHAT).json(&chat("sys", "hi")).send();
    assert_eq!(error_code(&r.assert_local_reply(503)), "no_ready_endpoint");
    // A pool whose pods all look unhealthy is not empty: see `pending`'s story of it.
}

#[test]
fn a_sheddable_request_on_a_saturated_pool_gets_429_and_a_normal_one_still_routes() {
    let saturated: Vec<Pod> = pods(3).into_iter().map(|p| p.waiting(10)).collect();
    let envoy = fleet(1, &saturated, json!({"objectives": {"batch": -1, "interactive": 10}}));
    let shed = envoy.worker(0).request(CHAT).header(&wis::headers().objective, "batch").json(&chat("sys", "hi")).send();
    assert_eq!(error_code(&shed.assert_local_reply(429)), "pool_saturated");
    assert_eq!(stat(&envoy, "wis.local_replies.429"), 1);
    let normal =
        envoy.worker(0).request(CHAT).header(&wis::headers().objective, "interactive").json(&chat("sys", "hi")).send();
    normal.primary();
    // Shedding needs no saturation filter in the profile (the default has none): only the decision
    // path differs. With the filter, every pod saturated means the decision used them all.
    assert_eq!(stat(&envoy, "wis.decisions.fell_back_to_all"), 0);
    let guarded = fleet(1, &saturated, guarded_profile(json!({"batch": -1, "interactive": 10})));
    let shed =
        guarded.worker(0).request(CHAT).header(&wis::headers().objective, "batch").json(&chat("sys", "hi")).send();
    assert_eq!(error_code(&shed.assert_local_reply(429)), "pool_saturated");
    guarded
        .worker(0)
        .request(CHAT)
        .header(&wis::headers().objective, "interactive")
        .json(&chat("sys", "hi"))
        .send()
        .primary();
    assert!(stat(&guarded, "wis.decisions.fell_back_to_all") >= 1, "every pod saturated: the decision used them all");
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
