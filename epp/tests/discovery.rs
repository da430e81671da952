//! InferencePool discovery against a loopback stand-in of the Kubernetes API: the InferencePool is
//! read, its pods listed by its selector, then watched; every change reaches the endpoint channel.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use wis_epp::discovery::{PoolRef, run_inference_pool};

const DEADLINE: Duration = Duration::from_secs(10);
const POOL_PATH: &str = "/apis/inference.networking.k8s.io/v1/namespaces/llm/inferencepools/qwen-pool";
const PODS_PATH: &str = "/api/v1/namespaces/llm/pods";

fn pod(name: &str, ip: &str, ready: bool, version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "llm", "resourceVersion": version,
                     "labels": {"app": "vllm-qwen", "pod-template-hash": "5d9f"}},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

type Body = BoxBody<Bytes, Infallible>;

/// Answers the InferencePool GET, the pod list, and streams watch events sent by the test.
struct FakeApi {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    events: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_api(pool: Value, pods: Value) -> FakeApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (events, rx) = mpsc::unbounded_channel::<String>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let (pool, pods) = (Arc::new(pool.to_string()), Arc::new(pods.to_string()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (log, rx, pool, pods) = (log.clone(), rx.clone(), pool.clone(), pods.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (log, rx, pool, pods) = (log.clone(), rx.clone(), pool.clone(), pods.clone());
                    async move {
                        let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        log.lock().unwrap().push(target.clone());
                        let (status, body): (StatusCode, Body) = if req.uri().path() == POOL_PATH {
                            (StatusCode::OK, Full::new(Bytes::from(pool.to_string())).boxed())
                        } else if req.uri().path() == PODS_PATH && target.contains("watch=true") {
                            let stream = futures_util::stream::unfold(rx, |rx| async move {
                                let line = rx.lock().await.recv().await?;
                                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line + "\n"))), rx))
                            });
                            (StatusCode::OK, StreamBody::new(stream).boxed())
                        } else if req.uri().path() == PODS_PATH {
                            (StatusCode::OK, Full::new(Bytes::from(pods.to_string())).boxed())
                        } else {
                            (StatusCode::NOT_FOUND, Full::new(Bytes::from_static(b"{}")).boxed())
                        };
                        let mut resp = Response::new(body);
                        *resp.status_mut() = status;
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

async fn wait_for(rx: &mut watch::Receiver<Vec<SocketAddr>>, want: &[&str]) {
    let want: Vec<SocketAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
    let ok = tokio::time::timeout(DEADLINE, rx.wait_for(|v| *v == want)).await.is_ok_and(|r| r.is_ok());
    assert!(ok, "timed out waiting for {want:?}; have {:?}", *rx.borrow());
}

#[tokio::test]
async fn the_pools_ready_pods_are_listed_then_followed_through_the_watch() {
    let pool = json!({
        "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
        "metadata": {"name": "qwen-pool", "namespace": "llm", "resourceVersion": "7"},
        "spec": {"selector": {"matchLabels": {"app": "vllm-qwen"}}, "targetPorts": [{"number": 8000}],
                 "endpointPickerRef": {"name": "wis-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}}
    });
    let pods = json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "200"},
        "items": [pod("vllm-a", "127.0.4.1", true, "198"), pod("vllm-b", "127.0.4.2", false, "199")]
    });
    let api = fake_api(pool, pods).await;
    let (tx, mut rx) = watch::channel(Vec::new());
    let known = Arc::new(AtomicBool::new(false));
    let pool_ref = PoolRef {
        name: "qwen-pool".into(),
        namespace: "llm".into(),
        group: "inference.networking.k8s.io".into(),
        api_url: Some(format!("http://{}", api.addr)),
    };
    let task = tokio::spawn(run_inference_pool(pool_ref, tx, known.clone()));

    wait_for(&mut rx, &["127.0.4.1:8000"]).await;
    assert!(known.load(Ordering::Relaxed), "the pool is known once its pods are listed");
    let event = |kind: &str, obj: Value| json!({"type": kind, "object": obj}).to_string();
    api.events.send(event("MODIFIED", pod("vllm-b", "127.0.4.2", true, "201"))).unwrap();
    wait_for(&mut rx, &["127.0.4.1:8000", "127.0.4.2:8000"]).await;
    api.events.send(event("DELETED", pod("vllm-a", "127.0.4.1", true, "202"))).unwrap();
    wait_for(&mut rx, &["127.0.4.2:8000"]).await;

    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen[0], POOL_PATH, "the InferencePool is read first");
    let list = seen.iter().find(|t| t.starts_with(PODS_PATH) && !t.contains("watch=true")).expect("a pod list");
    assert!(list.contains("labelSelector=app%3Dvllm-qwen"), "{list}");
    assert!(seen.iter().any(|t| t.contains("watch=true") && t.contains("resourceVersion=200")), "{seen:?}");
    task.abort();
}
