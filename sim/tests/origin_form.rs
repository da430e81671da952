//! `sim load` speaks HTTP as origin servers expect it (RFC 9112 §3.2.1): `POST /v1/chat/completions`
//! and `GET /metrics` with a `Host` header, never the absolute form `GET http://host/metrics` that
//! uvicorn's h11 parser (and Python's `http.server` routing on `self.path`) answers with 404.
//!
//! The server here is written by hand on a TCP socket, so it sees the request line exactly as sent.

mod common;

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vllm_sim::load;

use common::*;

/// What the server saw: every request line, and whether each carried a Host header.
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// A tiny OpenAI-style server that rejects absolute-form targets with 404.
async fn strict_server() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, log.clone()));
        }
    });
    (address, seen)
}

/// One request per connection (the load generator opens one per request), then close.
async fn serve(mut stream: TcpStream, seen: Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let has_host = head.lines().skip(1).any(|l| l.to_ascii_lowercase().starts_with("host:"));
    seen.lock().unwrap().push((request_line.clone(), has_host));
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, target) {
        (_, t) if !t.starts_with('/') => ("404 Not Found", json!({"detail": "Not Found"}).to_string()),
        ("GET", "/metrics") => (
            "200 OK",
            "# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{engine=\"0\"} 100.0\n\
             # TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{engine=\"0\"} 40.0\n"
                .to_string(),
        ),
        ("POST", "/v1/chat/completions") => (
            "200 OK",
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Fine."}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32},
            })
            .to_string(),
        ),
        _ => ("404 Not Found", json!({"detail": "Not Found"}).to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_load_sends_origin_form_targets_with_a_host_header() {
    let (address, seen) = strict_server().await;
    let mut args = load_args(vec![format!("http://{address}")], vec![address.clone()]);
    (args.requests, args.no_stream, args.workload) = (Some(6), true, "multi-turn".into());
    let report = load::run(args).await.unwrap();
    let s = &report.summary;
    assert_eq!((s.ok, s.errors), (6, 0), "{}", load::render_table(&report));
    // The counters were read before and after the run (through GET /metrics): no change, no rate.
    assert_eq!(s.prefix_cache_queries, Some(0.0));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().filter(|(l, _)| l == "GET /metrics HTTP/1.1").count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|(l, _)| l == "POST /v1/chat/completions HTTP/1.1").count(), 6, "{seen:?}");
    assert!(seen.iter().all(|(_, host)| *host), "every request names its Host: {seen:?}");
}

#[tokio::test]
async fn the_strict_server_does_reject_absolute_form() {
    // The server must be able to fail the test above: an absolute-form request gets 404.
    let (address, seen) = strict_server().await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let request = format!("GET http://{address}/metrics HTTP/1.1\r\nhost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
