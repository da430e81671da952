//! Stories of degrading without going dark and leaking nothing (issue 12), and of the prefix model
//! calibrating itself (issue 16): unknown metrics stay candidates, a pool that looks all unhealthy
//! still routes, a model nobody serves is 404, session tokens are opaque, authenticated, expiring and
//! only issued with the session scorer, no response header reveals a pod, bytes per token is learned.

use super::*;

/// `session-affinity-scorer` (weight 10, with `parameters`) over `queue-scorer` (weight 1).
fn session_profile(parameters: Value) -> Value {
    json!({"endpointPickerConfig": {
        "plugins": [{"type": "session-affinity-scorer", "parameters": parameters}, {"type": "queue-scorer"}],
        "schedulingProfiles": [{"name": "s", "plugins": [
            {"pluginRef": "session-affinity-scorer", "weight": 10},
            {"pluginRef": "queue-scorer", "weight": 1}]}]}})
}

/// A request pinned to `pod` (subset hint) whose response carries the session token.
fn session_token_for(envoy: &Envoy, pod: &str) -> String {
    let mut r = envoy.worker(0).request(CHAT).header(&wis::headers().subset, pod).json(&chat("mint", "a token")).send();
    r.assert_destination(pod);
    let client = r.respond(200).body("{}").finish();
    client.header(&wis::headers().session).expect("a session token on the response").to_string()
}

fn with_token(envoy: &Envoy, worker: usize, token: &str, topic: &str) -> Exchange {
    envoy.worker(worker).request(CHAT).header(&wis::headers().session, token).json(&chat(topic, "next turn")).send()
}

#[test]
fn an_endpoint_with_unknown_metrics_stays_a_candidate_scored_on_the_plugins_own_counts() {
    let (known, unknown) = ("10.0.0.1:8000", "10.0.0.2:8000");
    let envoy = fleet(1, &[pod(known), pod(unknown).stale()], json!({}));
    // Two requests in flight on the pod with known metrics: by the plugin's own counts the other
    // one is idler, whatever its scrape said.
    let _held = pin(&envoy, 0, known, 2);
    send_chat(&envoy, 0, "a new conversation", "q").assert_destination(unknown);
    assert!(stat(&envoy, "wis.endpoints.unknown_metrics") >= 1);
}

#[test]
fn a_pool_whose_every_endpoint_looks_unhealthy_still_routes_among_its_members() {
    let pool = vec![pod("10.0.0.1:8000").unhealthy(), pod("10.0.0.2:8000").unhealthy()];
    let envoy = fleet(2, &pool, json!({}));
    for worker in 0..2 {
        let r = send_chat(&envoy, worker, "sys", "hi");
        assert!(pool.iter().any(|p| p.address == r.primary()), "a pool member, not a 503: {:?}", r.destinations());
    }
    assert_eq!(stat(&envoy, "wis.decisions.no_healthy_endpoint"), 2);
    // 503 stays for a subset hint naming none of the members (and for a pool with none).
    let outside =
        envoy.worker(0).request(CHAT).header(&wis::headers().subset, "10.9.9.9:8000").json(&chat("s", "hi")).send();
    assert_eq!(error_code(&outside.assert_local_reply(503)), "no_ready_endpoint");
}

#[test]
fn a_model_no_endpoint_serves_gets_404_without_a_configured_model_list() {
    let envoy = fleet(1, &pods(2), json!({}));
    let r = envoy.worker(0).request(CHAT).json(&wis::chat("gpt-4o", "sys", "hi")).send();
    let body = r.assert_local_reply(404);
    assert_eq!(error_code(&body), "model_not_found");
    send_chat(&envoy, 0, "sys", "the served model still routes").primary();
}

#[test]
fn no_session_token_unless_the_profile_scores_session_affinity() {
    let envoy = fleet(1, &pods(3), json!({}));
    let mut r = send_chat(&envoy, 0, "sys", "hi");
    let client = r.respond(200).body("{}").finish();
    assert_eq!(client.header(&wis::headers().session), None, "{:?}", client.headers);
}

#[test]
fn a_session_token_keyed_by_the_vms_secret_brings_the_session_back_and_a_foreign_one_does_not() {
    let pool = pods(3);
    let profile = session_profile(json!({"secretEnv": "WIS_SESSION_SECRET"}));
    let gateway = |secret: &str| {
        let envoy = wis::envoy()
            .workers(2)
            .env("WIS_SESSION_SECRET", secret)
            .plugin_config(wis::config_with_scraper(profile.clone()))
            .build()
            .unwrap();
        publish(&envoy, 1, &pool);
        envoy
    };
    let (envoy, stranger) = (gateway("our gateways' session secret"), gateway("another gateway's secret"));
    let pod = pool[0].address.clone();
    let token = session_token_for(&envoy, &pod);
    let host = pod.split(':').next().unwrap_or_default();
    assert!(!token.contains(host), "the token is opaque: {token}");
    // The pod is busy now: only a token this gateway honours still brings the session to it.
    let _held = pin(&envoy, 0, &pod, 2);
    for worker in 0..2 {
        with_token(&envoy, worker, &token, &format!("turn {worker}")).assert_destination(&pod);
    }
    let foreign = session_token_for(&stranger, &pod);
    assert_ne!(with_token(&envoy, 1, &foreign, "foreign").primary(), pod, "a token under another secret");
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap_or_default();
    assert_ne!(with_token(&envoy, 1, &tampered, "tampered").primary(), pod, "a tampered token");
    assert_eq!(stat(&envoy, "wis.session.invalid"), 2, "both are counted");
    assert_eq!(stat(&envoy, "wis.session.accepted"), 2);
}

#[test]
fn a_session_token_is_not_honoured_after_its_ttl() {
    let pool = pods(3);
    let envoy = fleet(1, &pool, session_profile(json!({"secret": "an inline secret", "ttlSeconds": 60})));
    let pod = pool[0].address.clone();
    let token = session_token_for(&envoy, &pod);
    envoy.advance_ms(61_000);
    publish(&envoy, 2, &pool);
    let _held = pin(&envoy, 0, &pod, 2);
    assert_ne!(with_token(&envoy, 0, &token, "late").primary(), pod, "an expired token is ignored");
}

/// Whether a header value shows `host` plainly, or hex- or base64-encoded in one of its
/// `.`/`,`/`;`/space-separated pieces (how a token would carry it).
fn reveals(value: &str, host: &str) -> bool {
    let found = |bytes: &[u8]| bytes.windows(host.len()).any(|w| w == host.as_bytes());
    value.contains(host)
        || value
            .split(['.', ',', ';', ' '])
            .any(|piece| hex(piece).is_some_and(|b| found(&b)) || base64(piece).is_some_and(|b| found(&b)))
}

fn hex(piece: &str) -> Option<Vec<u8>> {
    let digits: Option<Vec<u8>> = piece.chars().map(|c| c.to_digit(16).map(|d| d as u8)).collect();
    let digits = digits?;
    (digits.len() % 2 == 0).then(|| digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
}

/// Standard or URL-safe alphabet, padded or not.
fn base64(piece: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let values: Option<Vec<u8>> = piece.trim_end_matches('=').bytes().map(sextet).collect();
    let (mut out, mut bits, mut acc) = (Vec::new(), 0u32, 0u32);
    for v in values? {
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[test]
fn no_response_header_names_or_encodes_a_pod_unless_the_debug_header_is_on() {
    let pool = pods(3);
    for profile in [json!({}), session_profile(json!({"secret": "a session key of 16+ bytes"}))] {
        let envoy = fleet(1, &pool, profile);
        let mut r = send_chat(&envoy, 0, "sys", "hi");
        let client = r.respond(200).body("{}").finish();
        for (name, value) in &client.headers {
            let named = pool.iter().find(|p| reveals(value, p.address.split(':').next().unwrap_or_default()));
            assert!(named.is_none(), "response header {name}: {value} reveals {named:?}");
        }
    }
    // With the debug header on, the decision may name them.
    let debug = fleet(1, &pool, json!({"debugHeader": "json"}));
    let r = send_chat(&debug, 0, "sys", "hi");
    assert!(r.upstream_header(&wis::headers().debug).is_some_and(|d| reveals(&d, "10.0.0.")));
}

#[test]
fn the_prefix_model_learns_bytes_per_token_from_the_pods_usage() {
    let address = "10.0.0.1:8000";
    let envoy = fleet(1, &[pod(address).cache_blocks(16, 1000)], json!({}));
    let start = stat(&envoy, "wis.prefix.bytes_per_token_x100");
    assert_eq!(start, 400, "limits.charsPerToken (4) is the starting guess");
    // A tokenizer at about one byte per token (the pod's own count, not ours).
    let system = system_prompt("tokenizers");
    for i in 0..4 {
        let mut r = send_chat(&envoy, 0, &system, &format!("question {i}"));
        let usage = json!({"prompt_tokens": system.len() + 20, "completion_tokens": 1});
        r.respond(200).header("content-type", "application/json").body(json!({"usage": usage}).to_string()).finish();
    }
    assert!(stat(&envoy, "wis.prefix.bytes_per_token_x100") < start, "the ratio moved toward the pod's");
    assert!(stat(&envoy, &format!("wis.endpoint.{address}.index_capacity_blocks")) > 0);
}
