//! Helpers shared by the scraper's end-to-end tests: start a scraper on loopback, read its
//! endpoints, and poll the snapshot until it shows what a test waits for (a deadline, no fixed
//! sleeps).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_inference_scheduler::pool::PoolSnapshot;
use wis_scraper::config::Options;
use wis_scraper::discovery::SystemResolver;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// One `GET path` on a fresh connection: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The snapshot, or None while the scraper still withholds it (503 before the first round).
pub async fn snapshot(addr: SocketAddr) -> Option<PoolSnapshot> {
    let (status, body) = get(addr, "/snapshot").await;
    match status {
        200 => Some(PoolSnapshot::from_json(body.as_bytes()).expect("a valid snapshot")),
        503 => None,
        other => panic!("/snapshot answered {other}: {body}"),
    }
}

/// Polls the snapshot until `ok` holds or the deadline passes.
pub async fn wait_for(addr: SocketAddr, what: &str, ok: impl Fn(&PoolSnapshot) -> bool) -> PoolSnapshot {
    let start = Instant::now();
    loop {
        let s = snapshot(addr).await;
        if let Some(s) = s.as_ref().filter(|s| ok(s)) {
            return s.clone();
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; last snapshot: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scraper of `static_list` on loopback, scraping every 20 ms.
pub async fn start(static_list: String, extra: impl FnOnce(&mut Options)) -> wis_scraper::Running {
    let mut o = Options {
        static_endpoints: Some(static_list),
        listen: Some("127.0.0.1:0".into()),
        interval_ms: Some(20),
        scrape_timeout_ms: Some(200),
        ..Default::default()
    };
    extra(&mut o);
    wis_scraper::start(o.settings().unwrap(), Arc::new(SystemResolver)).await.unwrap()
}
