//! The scraper end to end on loopback: two fixture pods, the scraper's HTTP server, and the
//! snapshot polled until it shows what the pods serve (deadline, no fixed sleeps).

mod common;

use common::{get, start, wait_for};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use wasm_inference_scheduler::pool::Engine;
use wis_scraper::fixture::{self, FixtureHandle, FixtureResponse};

struct Pod {
    addr: SocketAddr,
    response: FixtureHandle,
    task: JoinHandle<()>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pod(body: &str) -> Pod {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let response = Arc::new(RwLock::new(FixtureResponse::prometheus(body.to_string())));
    let task = tokio::spawn(fixture::serve(listener, response.clone()));
    Pod { addr, response, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_appear_in_the_snapshot_then_one_serves_html_and_keeps_serving_with_unknown_metrics() {
    let a = pod(fixture::VLLM_SINGLE).await;
    let b = pod(&fixture::VLLM_SINGLE.replace("} 3.0\n", "} 9.0\n")).await;
    let scraper = start(format!("{},{}", a.addr, b.addr), |_| {}).await;
    let s = wait_for(scraper.listen_addr, "both pods healthy", |s| {
        s.endpoints.len() == 2 && s.endpoints.iter().all(|e| e.healthy && !e.stale)
    })
    .await;
    assert_eq!(s.engine, Engine::Vllm);
    let ea = s.endpoint(&a.addr.to_string()).unwrap();
    let eb = s.endpoint(&b.addr.to_string()).unwrap();
    assert_eq!((ea.metrics.waiting_requests, eb.metrics.waiting_requests), (3, 9));
    assert_eq!(ea.metrics.cache_num_blocks, Some(27_345));
    assert_eq!(ea.models, vec!["meta-llama/Llama-3.1-8B-Instruct".to_string()]);
    let seq = s.sequence;

    // Pod b starts answering an HTML error page: stale with its last values and the reason,
    // but still healthy (it answers), however long it goes on.
    {
        let mut r = b.response.write().unwrap();
        r.content_type = "text/html".into();
        r.body = "<html><body>upstream error</body></html>".into();
    }
    let s = wait_for(scraper.listen_addr, "pod b failing five times", |s| {
        s.endpoint(&b.addr.to_string()).is_some_and(|e| e.stale && e.consecutive_failures >= 5)
    })
    .await;
    let eb = s.endpoint(&b.addr.to_string()).unwrap();
    assert!(eb.healthy, "unreadable metrics are not pod death: {eb:?}");
    assert_eq!(eb.metrics.waiting_requests, 9, "last good values are kept");
    let error = eb.last_error.as_ref().expect("the reason travels in the snapshot");
    assert_eq!(error.reason, "not_text");
    assert!(error.message.contains("text/html") && error.message.contains("upstream error"), "{error:?}");
    assert!(error.since_ms > 0 && error.since_ms <= s.generated_at_ms);
    assert!(s.endpoint(&a.addr.to_string()).is_some_and(|e| e.healthy && !e.stale), "pod a is unaffected");
    assert!(s.sequence > seq, "sequence grows");
    let (_, metrics) = get(scraper.listen_addr, "/metrics").await;
    for line in [
        "wis_scraper_endpoints{state=\"healthy\"} 2",
        "wis_scraper_endpoints{state=\"unknown_metrics\"} 1",
        "wis_scraper_endpoints{state=\"unreachable\"} 0",
        "wis_scraper_endpoints_failing{reason=\"not_text\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "expected {line}: {metrics}");
    }

    // It recovers when it serves metrics again.
    *b.response.write().unwrap() = FixtureResponse::prometheus(fixture::VLLM_SINGLE);
    wait_for(scraper.listen_addr, "pod b healthy again", |s| {
        s.endpoint(&b.addr.to_string())
            .is_some_and(|e| e.healthy && !e.stale && e.metrics.waiting_requests == 3 && e.last_error.is_none())
    })
    .await;

    let (status, metrics) = get(scraper.listen_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("wis_scraper_scrape_failures_total{reason=\"not_text\"}"), "{metrics}");
    assert!(!metrics.contains("wis_scraper_scrape_failures_total{reason=\"not_text\"} 0\n"), "{metrics}");
    assert!(metrics.contains("wis_scraper_endpoints{state=\"discovered\"} 2"), "{metrics}");
    let (status, body) = get(scraper.listen_addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(scraper.listen_addr, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_dead_pods_leave_the_pool_while_an_oversized_one_stays_with_unknown_metrics() {
    let slow = pod(fixture::VLLM_SINGLE).await;
    let huge = pod(fixture::VLLM_SINGLE).await;
    let good = pod(fixture::VLLM_SINGLE).await;
    // A port with nothing listening: bind, note, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let list = format!("{},{},{},{dead}", slow.addr, huge.addr, good.addr);
    let scraper = start(list, |o| o.max_response_bytes = Some(64 * 1024)).await;
    // All three answer at first.
    wait_for(scraper.listen_addr, "three pods read", |s| {
        [slow.addr, huge.addr, good.addr].iter().all(|a| s.endpoint(&a.to_string()).is_some_and(|e| !e.stale))
    })
    .await;
    slow.response.write().unwrap().delay = Duration::from_millis(1_000);
    huge.response.write().unwrap().body = format!("{}{}", fixture::VLLM_SINGLE, "# padding\n".repeat(20_000)).into();
    let failing = |s: &wasm_inference_scheduler::pool::PoolSnapshot, a: SocketAddr, reason: &str| {
        s.endpoint(&a.to_string()).is_some_and(|e| {
            e.stale && e.consecutive_failures >= 3 && e.last_error.as_ref().is_some_and(|f| f.reason == reason)
        })
    };
    let s = wait_for(scraper.listen_addr, "slow, oversized and dead pods failing three times", |s| {
        failing(s, slow.addr, "timeout") && failing(s, huge.addr, "too_large") && failing(s, dead, "connect")
    })
    .await;
    let health = |a: SocketAddr| s.endpoint(&a.to_string()).map(|e| e.healthy);
    assert_eq!(health(slow.addr), Some(false), "timeouts in a row: unreachable");
    assert_eq!(health(dead), Some(false), "never reached");
    assert_eq!(health(huge.addr), Some(true), "an oversized answer is still an answer");
    assert_eq!(health(good.addr), Some(true));
    assert!(s.endpoint(&dead.to_string()).unwrap().last_scrape_ms == 0);
    let (_, metrics) = get(scraper.listen_addr, "/metrics").await;
    for reason in ["timeout", "too_large", "connect"] {
        let zero = format!("wis_scraper_scrape_failures_total{{reason=\"{reason}\"}} 0\n");
        assert!(!metrics.contains(&zero), "expected {reason} failures counted: {metrics}");
    }
    assert!(metrics.contains("wis_scraper_endpoints{state=\"unreachable\"} 2\n"), "{metrics}");
    assert!(metrics.contains("wis_scraper_endpoints{state=\"unknown_metrics\"} 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_withheld_until_the_first_round_of_scrapes() {
    // The pod answers after 3 s, the scrape gives up after 2 s: the first round cannot be over
    // before then, so the first answer is 503 (the plugin keeps its configured endpoints).
    let slow = pod(fixture::VLLM_SINGLE).await;
    slow.response.write().unwrap().delay = Duration::from_secs(3);
    let scraper = start(slow.addr.to_string(), |o| o.scrape_timeout_ms = Some(2_000)).await;
    let (status, body) = get(scraper.listen_addr, "/snapshot").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("first scrapes"), "{body}");
    // Once the round is over (here: timed out), the snapshot appears with the endpoint stale.
    let s = wait_for(scraper.listen_addr, "the first snapshot", |s| s.endpoints.len() == 1).await;
    assert!(s.endpoints[0].stale && !s.endpoints[0].healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_sglang_pod_is_read_as_idle_until_its_gauges_appear() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let cold = std::fs::read_to_string(format!("{dir}/tests/fixtures/sglang_cold.prom")).unwrap();
    let pod = pod(&cold).await;
    let scraper = start(pod.addr.to_string(), |o| o.engine = Some("sglang".into())).await;
    let s =
        wait_for(scraper.listen_addr, "the cold pod read", |s| s.endpoints.iter().any(|e| e.last_scrape_ms > 0)).await;
    let e = &s.endpoints[0];
    assert!(e.healthy && !e.stale && e.last_error.is_none(), "{e:?}");
    assert_eq!((e.metrics.waiting_requests, e.metrics.running_requests, e.metrics.kv_cache_usage), (0, 0, 0.0));
    assert_eq!(e.metrics.cache_num_blocks, Some(412_345));
    // The first stats log: the gauges appear and are read.
    *pod.response.write().unwrap() = FixtureResponse::prometheus(fixture::SGLANG);
    wait_for(scraper.listen_addr, "the warm pod's queue", |s| s.endpoints[0].metrics.waiting_requests == 5).await;
}
