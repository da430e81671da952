//! Where requests go: prefix affinity across workers, load, LoRA, the subset hint, fallbacks,
//! what the destination header may and may not carry, paths the plugin leaves alone, Service
//! Extensions mode.

use super::*;

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
    // New prompts placed by the load scores, which read the in-flight counts.
    let envoy = fleet(2, &pool, placed_by_load());
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
fn placed_by_key_new_conversations_in_flight_stay_within_the_load_bound() {
    // Each pod already runs 4 requests; one has 8 waiting. New conversations go by their keys,
    // but never to the pod above (1 + 0.25) × the average + 1.
    let pool: Vec<Pod> = pods(4)
        .into_iter()
        .enumerate()
        .map(|(i, p)| if i == 2 { p.running(4).waiting(8) } else { p.running(4) })
        .collect();
    let envoy = fleet(2, &pool, placed_by("key"));
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    let mut held = Vec::new();
    for i in 0..24 {
        let r = send_chat(&envoy, i % 2, &format!("Topic number {i}."), &format!("Question {i}"));
        *per_pod.entry(r.primary()).or_default() += 1;
        held.push(r);
    }
    assert!(!per_pod.contains_key(&pool[2].address), "the overloaded pod got none: {per_pod:?}");
    assert_eq!(per_pod.len(), 3, "the others all got some: {per_pod:?}");
    assert!(stat(&envoy, "wis.decisions.placed_by_key") >= 24);
}

/// A chat request for turn `turn` (0-based) of conversation `c`: its system prompt, the earlier
/// exchanges, a new question.
fn turn_of(c: usize, turn: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system_prompt(&format!("conversation {c}"))})];
    for t in 0..=turn {
        messages.push(json!({"role": "user", "content": format!("Question {t} of conversation {c}?")}));
        if t < turn {
            messages.push(json!({"role": "assistant", "content": format!("Answer {t}: {}", "because. ".repeat(30))}));
        }
    }
    json!({"model": MODEL, "messages": messages})
}

/// Two gateways with their own memories, each seeing different queues on the same four pods,
/// take a conversation's turns in alternation: where does each turn go?
fn two_gateways_alternating(extra: Value) -> Vec<Vec<String>> {
    let base = pods(4);
    let views = [[1, 0, 2, 0], [0, 2, 0, 1]];
    let gateways: Vec<Envoy> = views
        .iter()
        .map(|waiting| {
            let pool: Vec<Pod> = base.iter().zip(waiting).map(|(p, &w)| p.clone().running(2).waiting(w)).collect();
            fleet(1, &pool, extra.clone())
        })
        .collect();
    (0..8)
        .map(|c| {
            (0..4)
                .map(|turn| {
                    let mut r = gateways[(c + turn) % 2].worker(0).request(CHAT).json(&turn_of(c, turn)).send();
                    let pod = r.primary();
                    finish(&mut r);
                    pod
                })
                .collect()
        })
        .collect()
}

#[test]
fn two_gateways_taking_turns_keep_a_conversation_on_one_pod() {
    for (c, pods) in two_gateways_alternating(json!({})).iter().enumerate() {
        assert!(pods.iter().all(|p| *p == pods[0]), "conversation {c}: {pods:?}");
    }
    // Control: placed by each gateway's own view of the queues, some conversation is split.
    let split =
        two_gateways_alternating(placed_by_load()).iter().filter(|pods| pods.iter().any(|p| *p != pods[0])).count();
    assert!(split > 0, "placed by load, every conversation still stayed on one pod");
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
            "plugins": [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}, {"type": "lora-affinity-scorer"},
                        {"type": "max-score-picker", "parameters": {"unseenPlacement": "load"}}],
            "schedulingProfiles": [{"name": "default", "plugins": [
                {"pluginRef": "queue-scorer", "weight": 2},
                {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
                {"pluginRef": "lora-affinity-scorer", "weight": 5},
                {"pluginRef": "max-score-picker"}]}]
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
            .header(&wis::headers().subset, &subset.join(","))
            .json(&chat(&format!("topic {i}"), "hi"))
            .send();
        let destinations = r.destinations();
        assert!(!destinations.is_empty());
        assert!(destinations.iter().all(|d| subset.contains(&d.as_str())), "{destinations:?} outside {subset:?}");
    }
    let outside =
        envoy.worker(0).request(CHAT).header(&wis::headers().subset, "10.9.9.9:8000").json(&chat("s", "hi")).send();
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
fn completions_are_scheduled_too() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request(COMPLETIONS).json(&json!({"model": MODEL, "prompt": "Once upon a time"})).send();
    r.primary();
    assert_eq!(stat(&envoy, "wis.decisions"), 1);
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
fn a_client_supplied_destination_is_removed() {
    let pool = pods(2);
    let envoy = fleet(1, &pool, json!({}));
    let r = envoy
        .worker(0)
        .request(CHAT)
        .header(&wis::headers().destination, "6.6.6.6:443")
        .json(&chat("sys", "hi"))
        .send();
    assert_eq!(
        r.upstream_header_values(&wis::headers().destination).len(),
        1,
        "exactly one destination header goes upstream"
    );
    assert!(pool.iter().any(|p| p.address == r.primary()), "{:?}", r.destinations());
    assert!(!r.destinations().iter().any(|d| d.starts_with("6.6.6.6")));
    // Also on a path the plugin does not schedule.
    let models =
        envoy.worker(0).request("/v1/models").method("GET").header(&wis::headers().destination, "6.6.6.6:443").send();
    models.assert_forwarded();
    assert!(models.upstream_header_values(&wis::headers().destination).is_empty(), "{:?}", models.upstream_headers());
}

#[test]
fn a_path_that_is_not_an_inference_api_passes_through_untouched() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request("/healthz").method("GET").send();
    r.assert_forwarded();
    assert!(r.upstream_header_values(&wis::headers().destination).is_empty());
    assert_eq!(stat(&envoy, "wis.passthrough"), 1);
    assert_eq!(stat(&envoy, "wis.decisions"), 0);
}

#[test]
fn service_extensions_mode_routes_statelessly_without_refused_calls() {
    let envoy = wis::envoy().service_extensions().plugin_config(json!({"mode": "service-extensions"})).build().unwrap();
    let system = system_prompt("stateless");
    let first = envoy.worker(0).request(CHAT).json(&chat(&system, "first turn")).send();
    first.assert_forwarded();
    assert_eq!(first.upstream_header(&wis::headers().model).as_deref(), Some(MODEL));
    let key = first.upstream_header(&wis::headers().affinity_key).expect("an affinity key");
    let second = envoy.worker(0).request(CHAT).json(&chat(&system, "first turn, and a second")).send();
    assert_eq!(second.upstream_header(&wis::headers().affinity_key), Some(key), "one conversation, one key");
    assert!(first.upstream_header_values(&wis::headers().destination).is_empty(), "no pool view, no destination");
    let bad = envoy.worker(0).request(CHAT).body("nope").send();
    assert_eq!(error_code(&bad.assert_local_reply(400)), "invalid_json");
    envoy.advance_ms(1000);
    assert!(envoy.http_calls().is_empty());
}
