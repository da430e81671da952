//! Discovery sources against loopback stand-ins: an injected resolver and the system resolver
//! for DNS, a fake Kubernetes API server (list + watch of EndpointSlices) for Kubernetes.
//! Discovery runs alone here (no scraping), and every address is a loopback address.

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::{Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use wis_scraper::discovery::{self, K8sSettings, PortRef, ResolveFuture, Resolver, SystemResolver};

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until the discovery channel holds `want`.
async fn wait_for(rx: &mut watch::Receiver<Vec<SocketAddr>>, want: &[&str]) {
    let want: Vec<SocketAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
    let ok = tokio::time::timeout(DEADLINE, rx.wait_for(|v| *v == want)).await.is_ok_and(|r| r.is_ok());
    assert!(ok, "timed out waiting for {want:?}; have {:?}", *rx.borrow());
}

struct ScriptedResolver(Arc<Mutex<std::io::Result<Vec<SocketAddr>>>>);

impl Resolver for ScriptedResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        assert_eq!((host, port), ("vllm-headless.llm.svc.cluster.local", 8000));
        let answer = match &*self.0.lock().unwrap() {
            Ok(v) => Ok(v.clone()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn dns_follows_the_records_and_keeps_the_list_when_a_lookup_fails() {
    let addrs = |list: &[&str]| list.iter().map(|a| a.parse().unwrap()).collect::<Vec<SocketAddr>>();
    let answer = Arc::new(Mutex::new(Ok(addrs(&["127.0.2.2:8000", "127.0.2.1:8000"]))));
    let (tx, mut rx) = watch::channel(Vec::new());
    let errors = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(discovery::run_dns(
        Arc::new(ScriptedResolver(answer.clone())),
        "vllm-headless.llm.svc.cluster.local".into(),
        8000,
        Duration::from_millis(10),
        tx,
        errors.clone(),
    ));
    wait_for(&mut rx, &["127.0.2.1:8000", "127.0.2.2:8000"]).await;
    *answer.lock().unwrap() = Err(std::io::Error::other("SERVFAIL"));
    let start = Instant::now();
    while errors.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        assert!(start.elapsed() < DEADLINE, "resolver never called again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rx.borrow().len(), 2, "a failed lookup keeps the previous list");
    *answer.lock().unwrap() = Ok(addrs(&["127.0.2.3:8000"]));
    wait_for(&mut rx, &["127.0.2.3:8000"]).await;
    task.abort();
}

#[tokio::test]
async fn dns_with_the_system_resolver_reads_localhost() {
    let (tx, mut rx) = watch::channel(Vec::new());
    let task = tokio::spawn(discovery::run_dns(
        Arc::new(SystemResolver),
        "localhost".into(),
        8000,
        Duration::from_millis(50),
        tx,
        Arc::new(AtomicU64::new(0)),
    ));
    let found: Vec<SocketAddr> = match tokio::time::timeout(DEADLINE, rx.wait_for(|v| !v.is_empty())).await {
        Ok(Ok(v)) => v.clone(),
        _ => panic!("localhost never resolved"),
    };
    assert!(found.iter().all(|a| a.ip().is_loopback() && a.port() == 8000), "{found:?}");
    task.abort();
}

// ------------------------------------------------------------ fake Kubernetes API server

fn slice(name: &str, version: &str, endpoints: &[(&str, Option<bool>)]) -> serde_json::Value {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, ready)| {
            let mut conditions = serde_json::json!({});
            if let Some(r) = ready {
                conditions["ready"] = serde_json::json!(r);
            }
            serde_json::json!({"addresses": [ip], "conditions": conditions})
        })
        .collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "llm", "resourceVersion": version,
                     "labels": {"kubernetes.io/service-name": "vllm"}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "metrics", "port": 9000, "protocol": "TCP"}, {"name": "http", "port": 8000, "protocol": "TCP"}]
    })
}

type Body = BoxBody<Bytes, Infallible>;

struct FakeApi {
    addr: SocketAddr,
    /// Requests seen: (request target as sent: path and query in origin form, the whole URI in
    /// absolute form; authorization header).
    seen: Arc<Mutex<Vec<(String, String)>>>,
    /// Lines to stream to the open watch.
    events: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_api(list: serde_json::Value) -> FakeApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (events, rx) = mpsc::unbounded_channel::<String>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let list = Arc::new(list.to_string());
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (seen, rx, list) = (seen2.clone(), rx.clone(), list.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, rx, list) = (seen.clone(), rx.clone(), list.clone());
                    async move {
                        let pq = match req.uri().authority() {
                            Some(_) => req.uri().to_string(),
                            None => req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                        };
                        let auth =
                            req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        seen.lock().unwrap().push((pq.clone(), auth));
                        let body: Body = if pq.contains("watch=true") {
                            // Stream one JSON event per line for as long as the test sends them.
                            let stream = futures_util::stream::unfold(rx, |rx| async move {
                                let line = rx.lock().await.recv().await?;
                                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line + "\n"))), rx))
                            });
                            BodyExt::boxed(StreamBody::new(stream))
                        } else {
                            BodyExt::boxed(Full::new(Bytes::from(list.to_string())))
                        };
                        let mut resp = Response::new(body);
                        resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    FakeApi { addr, seen, events, task }
}

#[tokio::test]
async fn endpointslices_list_then_watch_ready_endpoints_by_port_name() {
    let initial = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": "100"},
        "items": [slice("vllm-a", "99", &[("127.0.3.1", Some(true)), ("127.0.3.2", Some(false)), ("127.0.3.3", None)])]
    });
    let api = fake_api(initial).await;
    let token = std::env::temp_dir().join(format!("wis-scraper-test-token-{}", std::process::id()));
    std::fs::write(&token, "test-token\n").unwrap();
    let settings = K8sSettings {
        label_selector: K8sSettings::selector_for_service("vllm"),
        namespace: Some("llm".into()),
        port: PortRef::Name("http".into()),
        api_url: Some(format!("http://{}", api.addr)),
        token_file: Some(token.clone()),
        ca_file: None,
        poll: None,
    };
    let (tx, mut rx) = watch::channel(Vec::new());
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let task = tokio::spawn(discovery::run_k8s(settings, tx, Arc::new(AtomicU64::new(0))));

    // The list: ready and unset-ready endpoints, on the port named "http".
    wait_for(&mut rx, &["127.0.3.1:8000", "127.0.3.3:8000"]).await;

    // A second slice appears, then the first one's pod turns ready: both through the watch.
    let event = |kind: &str, obj: serde_json::Value| serde_json::json!({"type": kind, "object": obj}).to_string();
    api.events.send(event("ADDED", slice("vllm-b", "101", &[("127.0.3.9", Some(true))]))).unwrap();
    wait_for(&mut rx, &["127.0.3.1:8000", "127.0.3.3:8000", "127.0.3.9:8000"]).await;
    api.events
        .send(event("MODIFIED", slice("vllm-a", "102", &[("127.0.3.1", Some(true)), ("127.0.3.2", Some(true))])))
        .unwrap();
    wait_for(&mut rx, &["127.0.3.1:8000", "127.0.3.2:8000", "127.0.3.9:8000"]).await;
    api.events.send(event("DELETED", slice("vllm-a", "103", &[]))).unwrap();
    wait_for(&mut rx, &["127.0.3.9:8000"]).await;

    let seen = api.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(_, auth)| auth == "Bearer test-token"), "service-account token sent: {seen:?}");
    // kube's client speaks to the API server in origin form, as every client here must.
    assert!(seen.iter().all(|(pq, _)| pq.starts_with("/apis/")), "origin-form targets: {seen:?}");
    let list = &seen[0].0;
    assert!(list.starts_with("/apis/discovery.k8s.io/v1/namespaces/llm/endpointslices?"), "{list}");
    assert!(list.contains("labelSelector=kubernetes.io%2Fservice-name%3Dvllm"), "{list}");
    assert!(seen.iter().any(|(pq, _)| pq.contains("watch=true") && pq.contains("resourceVersion=100")), "{seen:?}");
    task.abort();
    let _ = std::fs::remove_file(token);
}

#[tokio::test]
async fn endpointslices_poll_mode_and_port_by_number() {
    let initial = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": "7"},
        "items": [slice("vllm-a", "7", &[("127.0.4.1", Some(true))])]
    });
    let api = fake_api(initial).await;
    let token = std::env::temp_dir().join(format!("wis-scraper-test-token-poll-{}", std::process::id()));
    std::fs::write(&token, "t").unwrap();
    let settings = K8sSettings {
        label_selector: "app=vllm".into(),
        namespace: Some("llm".into()),
        port: PortRef::Number(8080),
        api_url: Some(format!("http://{}", api.addr)),
        token_file: Some(token.clone()),
        ca_file: None,
        poll: Some(Duration::from_millis(100)),
    };
    let (tx, mut rx) = watch::channel(Vec::new());
    let task = tokio::spawn(discovery::run_k8s(settings, tx, Arc::new(AtomicU64::new(0))));
    wait_for(&mut rx, &["127.0.4.1:8080"]).await;
    let start = Instant::now();
    while api.seen.lock().unwrap().len() < 2 {
        assert!(start.elapsed() < DEADLINE, "no second list in poll mode");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = api.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(pq, _)| !pq.contains("watch=true") && pq.contains("labelSelector=app%3Dvllm")),
        "{seen:?}"
    );
    task.abort();
    let _ = std::fs::remove_file(token);
}
