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
async fn two_pods_appear_in_the_snapshot_then_one_goes_stale_and_unhealthy() {
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

    // Pod b starts answering HTML: stale at once with its last values, unhealthy after 3 failures.
    {
        let mut r = b.response.write().unwrap();
        r.content_type = "text/html".into();
        r.body = "<html><body>upstream error</body></html>".into();
    }
    let s = wait_for(scraper.listen_addr, "pod b unhealthy", |s| {
        s.endpoint(&b.addr.to_string()).is_some_and(|e| e.stale && !e.healthy)
    })
    .await;
    let eb = s.endpoint(&b.addr.to_string()).unwrap();
    assert_eq!(eb.metrics.waiting_requests, 9, "last good values are kept");
    assert!(eb.consecutive_failures >= 3);
    assert!(s.endpoint(&a.addr.to_string()).unwrap().healthy, "pod a is unaffected");
    assert!(s.sequence > seq, "sequence grows");

    // It recovers when it serves metrics again.
    *b.response.write().unwrap() = FixtureResponse::prometheus(fixture::VLLM_SINGLE);
    wait_for(scraper.listen_addr, "pod b healthy again", |s| {
        s.endpoint(&b.addr.to_string()).is_some_and(|e| e.healthy && !e.stale && e.metrics.waiting_requests == 3)
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
async fn slow_huge_and_dead_pods_are_stale_never_fatal() {
    let slow = pod(fixture::VLLM_SINGLE).await;
    let huge = pod(fixture::VLLM_SINGLE).await;
    let good = pod(fixture::VLLM_SINGLE).await;
    // A port with nothing listening: bind, note, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    slow.response.write().unwrap().delay = Duration::from_millis(1_000);
    huge.response.write().unwrap().body = format!("{}{}", fixture::VLLM_SINGLE, "# padding\n".repeat(20_000)).into();
    let list = format!("{},{},{},{}", slow.addr, huge.addr, good.addr, dead);
    let scraper = start(list, |o| o.max_response_bytes = Some(64 * 1024)).await;
    let s = wait_for(scraper.listen_addr, "three bad pods unhealthy, one good", |s| {
        s.endpoints.len() == 4
            && s.endpoint(&good.addr.to_string()).is_some_and(|e| e.healthy)
            && [slow.addr, huge.addr, dead].iter().all(|a| {
                s.endpoint(&a.to_string()).is_some_and(|e| !e.healthy && e.stale && e.consecutive_failures >= 3)
            })
    })
    .await;
    assert!(s.endpoint(&dead.to_string()).unwrap().last_scrape_ms == 0);
    let (_, metrics) = get(scraper.listen_addr, "/metrics").await;
    for reason in ["timeout", "too_large", "connect"] {
        let zero = format!("wis_scraper_scrape_failures_total{{reason=\"{reason}\"}} 0\n");
        assert!(!metrics.contains(&zero), "expected {reason} failures counted: {metrics}");
    }
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
