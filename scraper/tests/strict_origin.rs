//! The scraper against model-server pods it did not write: Python's stdlib `http.server`
//! routing on the raw request target (`tests/strict_origin_server.py`), which answers the
//! absolute form `GET http://host:port/metrics` with 404 as uvicorn's `h11` parser does.

mod common;

use common::{start, wait_for};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Python pods in one child process; killed (by its handle) when dropped.
struct PythonPods {
    child: Child,
    addrs: Vec<String>,
    /// What the pods logged: one "PORT METHOD TARGET" line per request.
    requests: Arc<Mutex<String>>,
}

impl PythonPods {
    /// One pod per route, each serving the realistic vLLM exposition at its route only.
    fn start(routes: &[&str]) -> Self {
        let dir = env!("CARGO_MANIFEST_DIR");
        let mut child = Command::new("python3")
            .arg(format!("{dir}/tests/strict_origin_server.py"))
            .arg(format!("{dir}/tests/fixtures/vllm_single.prom"))
            .args(routes)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (it is on every machine the project supports)");
        // Drain the request log so a full pipe never stalls the server.
        let requests = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let log = requests.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The script prints its addresses then "ready" at once; a dead script ends the stream.
        let mut addrs = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.expect("the script's standard output");
            if line == "ready" {
                break;
            }
            addrs.push(line);
        }
        assert_eq!(addrs.len(), routes.len(), "the script started one pod per route: {addrs:?}");
        Self { child, addrs, requests }
    }
}

impl Drop for PythonPods {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_route_on_the_raw_target_come_out_healthy_with_their_metrics() {
    let pods = PythonPods::start(&["/metrics", "/metrics"]);
    let scraper = start(pods.addrs.join(","), |_| {}).await;
    let s = wait_for(scraper.listen_addr, "both pods read", |s| {
        s.endpoints.len() == 2 && s.endpoints.iter().all(|e| e.healthy && !e.stale)
    })
    .await;
    for e in &s.endpoints {
        assert_eq!((e.metrics.waiting_requests, e.metrics.running_requests), (3, 12), "{e:?}");
        assert_eq!(e.metrics.kv_cache_usage, 0.4375);
        assert_eq!(e.metrics.cache_num_blocks, Some(27_345));
        assert_eq!(e.models, vec!["meta-llama/Llama-3.1-8B-Instruct".to_string()]);
        assert!(e.last_error.is_none(), "{e:?}");
    }
    // The pods' request log arrives through a pipe: wait (bounded) for it to show the scrapes.
    let start = std::time::Instant::now();
    let requests = loop {
        let log = pods.requests.lock().unwrap().clone();
        // Complete lines only; the pipe may hold the rest of the last one.
        let complete: Vec<String> = log.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(String::from).collect();
        if complete.len() >= 2 || start.elapsed() > common::DEADLINE {
            break complete;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(requests.len() >= 2, "{requests:?}");
    assert!(requests.iter().all(|l| l.ends_with(" GET /metrics\n")), "origin-form targets only: {requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_answering_404_stays_healthy_with_unknown_metrics_and_the_reason() {
    // The pod serves its metrics elsewhere: GET /metrics gets FastAPI's 404 body.
    let pods = PythonPods::start(&["/metrics", "/v1/metrics"]);
    let scraper = start(pods.addrs.join(","), |_| {}).await;
    let s = wait_for(scraper.listen_addr, "one pod read, the other failing", |s| {
        s.endpoint(&pods.addrs[0]).is_some_and(|e| !e.stale)
            && s.endpoint(&pods.addrs[1]).is_some_and(|e| e.consecutive_failures >= 3)
    })
    .await;
    let e = s.endpoint(&pods.addrs[1]).unwrap();
    assert!(e.healthy && e.stale, "reachable, metrics unknown: {e:?}");
    assert_eq!(e.last_scrape_ms, 0);
    let error = e.last_error.as_ref().unwrap();
    assert_eq!(error.reason, "http_status");
    assert_eq!(error.message, r#"answered HTTP 404, expected 200: "{\"detail\":\"Not Found\"}""#);
}

/// The scraper binary's log names the reason, the status and the body of the first failure.
#[test]
fn the_log_says_why_a_pod_cannot_be_read() {
    use std::sync::mpsc;
    use std::time::Duration;
    let pods = PythonPods::start(&["/v1/metrics"]);
    let mut scraper = Command::new(env!("CARGO_BIN_EXE_wis-scraper"))
        .args(["--static", &pods.addrs[0], "--listen", "127.0.0.1:0", "--interval-ms", "50"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = scraper.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains("GET /metrics on") && line.contains("failed") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = scraper.kill();
    let _ = scraper.wait();
    let line = found.unwrap_or_else(|| panic!("no failure line in the log: {seen:#?}"));
    for needle in
        ["WARN", &pods.addrs[0], "http_status", "HTTP 404", "Not Found", "stays in the pool with unknown metrics"]
    {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
}
