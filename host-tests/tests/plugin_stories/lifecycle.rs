//! After the decision: in-flight counts released, what the response teaches the prefix index,
//! session tokens, a response served by a fallback, Envoy's callback order, bounded shared data.

use super::*;

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
    // New prompts placed by the load scores, which read the in-flight counts.
    let envoy = fleet(2, &pods(2), placed_by_load());
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

#[test]
fn a_pod_that_lost_its_cache_is_forgotten_on_every_worker() {
    let envoy = fleet(2, &pods(2), json!({"debugHeader": "json"}));
    let pod = "10.0.0.1:8000";
    let prompts: Vec<String> = ["gardening", "sailing", "chess", "baking"].iter().map(|t| system_prompt(t)).collect();
    let pinned = |worker: usize, system: &str| {
        let r = envoy.worker(worker).request(CHAT).header(&wis::headers().subset, pod).json(&chat(system, "q")).send();
        r.assert_destination(pod);
        r
    };
    for system in &prompts {
        respond_with_cached(&mut pinned(0, system), 0);
    }
    let mut probe = pinned(1, &prompts[3]);
    assert!(matched_blocks_at(&probe, pod) > 4, "worker 1 knows the pod holds the last prompt");
    respond_with_cached(&mut probe, 512);
    // The first three again: the index predicts their blocks at the pod, and the pod reports none
    // cached for any of them (it restarted, or evicted everything). One such report could be a
    // request racing another's prefill; three different prompts are a reset: the index keeps only
    // the prompt it just served there, on every worker.
    for system in &prompts[..3] {
        let mut again = pinned(0, system);
        assert!(matched_blocks_at(&again, pod) > 4);
        respond_with_cached(&mut again, 0);
    }
    // (`stat` waits one tick, by which every worker has applied the reports.)
    assert_eq!(stat(&envoy, "wis.prefix.prediction_confirmed"), 1);
    assert_eq!(stat(&envoy, "wis.prefix.prediction_wrong"), 3);
    let probe = pinned(1, &prompts[3]);
    assert_eq!(matched_blocks_at(&probe, pod), 0, "worker 1 forgot what the pod lost");
    assert!(matched_blocks_at(&pinned(1, &prompts[2]), pod) > 4, "and still knows the prompt it just served");
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
    let token = client.header(&wis::headers().session).expect("session token").to_string();
    let next = envoy.worker(1).request(CHAT).header(&wis::headers().session, &token).json(&chat("next", "turn")).send();
    next.assert_destination(&fallback);
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
