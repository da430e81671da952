//! The pool snapshot: fetched once per interval whatever the workers, failures of every kind
//! keep the last pool, stale snapshots, the static pool until the first one.

use super::*;

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
fn a_worker_routes_on_the_first_snapshot_before_its_own_tick_reads_it() {
    // One worker wins the fetch lease on the first tick; the others ticked before the answer came
    // back. A request reaching one of them before its next tick must not see an empty pool.
    let pool = pods(2);
    let envoy = wis::envoy().workers(3).plugin_config(wis::config_with_scraper(json!({}))).build().unwrap();
    envoy.scraper_replies(wis::snapshot(1, envoy.now_ms(), &pool));
    let ticked = TICK_MS + 5;
    envoy.advance_ms(ticked);
    assert_eq!(envoy.http_calls().len(), 1, "one worker fetched on the first tick");
    for worker in 0..3 {
        let r = send_chat(&envoy, worker, "sys", "hi");
        assert!(
            pool.iter().any(|p| p.address == r.primary()),
            "worker {worker}, {ticked} ms in, routes on the snapshot another worker fetched: {:?}",
            r.destinations()
        );
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
    let envoy = wis::envoy()
        .plugin_config(json!({"pool": {"endpoints": ["10.2.0.1:8000"], "snapshotCluster": SCRAPER}}))
        .build()
        .unwrap();
    send_chat(&envoy, 0, "sys", "hi").assert_destination("10.2.0.1:8000");
    publish(&envoy, 1, &[pod("10.3.0.1:8000")]);
    send_chat(&envoy, 0, "sys", "hi").assert_destination("10.3.0.1:8000");
}
