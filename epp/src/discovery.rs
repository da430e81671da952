//! Which pods make up the pool: an InferencePool v1 read through the Kubernetes API, or a static list.
//!
//! From the InferencePool (`--pool-name`, `--pool-namespace`, group `--pool-group`, version `v1`):
//! `spec.selector.matchLabels` selects the pods of its namespace and every `spec.targetPorts[].number`
//! is a distinct endpoint `podIP:port` (the CRD's own words). A pod counts when it is Ready, has a
//! pod IP and is not being deleted, as GAIE's EPP counts it. Pods are listed, then watched from
//! that list's version; the InferencePool is read again every [`POOL_RECHECK`], and a changed
//! selector or port list starts a fresh list. A failing API call keeps the last endpoint list (an
//! API server restart must not empty the pool) and is retried after [`RETRY`].
//!
//! The endpoint list goes out on a `watch` channel that feeds the scraper (`DiscoverySettings::Watch`).

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchEvent, WatchParams};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Pause after a failed list, get or watch before trying again: long enough not to hammer the API
/// server, short enough to recover quickly from its restart or an RBAC fix.
pub const RETRY: Duration = Duration::from_secs(2);

/// How often the InferencePool itself is read again while pods are watched: a selector change is
/// rare and a few seconds late is harmless.
pub const POOL_RECHECK: Duration = Duration::from_secs(10);

/// Server-side timeout of a pod watch; it is re-opened from the last resourceVersion.
const WATCH_TIMEOUT_S: u32 = 290;

/// The part of an InferencePool that says which endpoints belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTarget {
    pub match_labels: BTreeMap<String, String>,
    pub ports: Vec<u16>,
}

impl PoolTarget {
    /// Reads `spec.selector.matchLabels` and `spec.targetPorts[].number` of an InferencePool object
    /// (JSON as the API serves it). The CRD requires both; an object without them is an error that
    /// says what was expected.
    pub fn from_inference_pool(object: &serde_json::Value) -> Result<Self, String> {
        let spec = object.get("spec").ok_or("InferencePool has no spec")?;
        let labels = spec
            .pointer("/selector/matchLabels")
            .and_then(|v| v.as_object())
            .ok_or("InferencePool spec.selector.matchLabels: expected a map of labels")?;
        if labels.is_empty() {
            return Err("InferencePool spec.selector.matchLabels: expected at least one label".into());
        }
        let mut match_labels = BTreeMap::new();
        for (key, value) in labels {
            let value = value
                .as_str()
                .ok_or_else(|| format!("InferencePool spec.selector.matchLabels.{key}: expected a string"))?;
            match_labels.insert(key.clone(), value.to_string());
        }
        let ports_json = spec
            .get("targetPorts")
            .and_then(|v| v.as_array())
            .ok_or("InferencePool spec.targetPorts: expected a list of {number: port}")?;
        let mut ports = Vec::with_capacity(ports_json.len());
        for (i, port) in ports_json.iter().enumerate() {
            let number = port
                .get("number")
                .and_then(|n| n.as_u64())
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("InferencePool spec.targetPorts[{i}].number: expected a port in 1..=65535"))?;
            if !ports.contains(&number) {
                ports.push(number);
            }
        }
        if ports.is_empty() {
            return Err("InferencePool spec.targetPorts: expected at least one port".into());
        }
        Ok(Self { match_labels, ports })
    }

    /// The label selector of the pod list: `key=value,key=value`.
    pub fn label_selector(&self) -> String {
        self.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    fn selects(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        self.match_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// Whether a pod can take requests: Ready, with a pod IP, not being deleted.
fn ready_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// Every `podIP:port` of the selected ready pods, sorted and unique.
pub fn endpoints_from_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>, target: &PoolTarget) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = pods
        .into_iter()
        .filter(|pod| target.selects(pod))
        .filter_map(ready_ip)
        .flat_map(|ip| target.ports.iter().map(move |port| SocketAddr::new(ip, *port)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Where the InferencePool is.
#[derive(Debug, Clone)]
pub struct PoolRef {
    pub name: String,
    pub namespace: String,
    pub group: String,
    /// The API server without credentials (a test's stand-in, `kubectl proxy`); `None`: the
    /// in-cluster service account, else `$KUBECONFIG` / `~/.kube/config`.
    pub api_url: Option<String>,
}

impl PoolRef {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&self.group, "v1", "InferencePool"), "inferencepools")
    }
}

/// Watches the InferencePool's pods until the receiver side is gone; `known` turns true once the
/// pool was read and its pods listed (readiness).
pub async fn run_inference_pool(pool: PoolRef, tx: watch::Sender<Vec<SocketAddr>>, known: Arc<AtomicBool>) {
    let client = loop {
        let config = match &pool.api_url {
            Some(url) => url.parse().map(kube::Config::new).map_err(|e| format!("API server URL {url:?}: {e}")),
            None => kube::Config::infer().await.map_err(|e| e.to_string()),
        };
        match config.and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string())) {
            Ok(client) => break client,
            Err(e) => tracing::warn!(error = %e, "Kubernetes client set-up failed; retrying"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    };
    let pools: Api<DynamicObject> = Api::namespaced_with(client.clone(), &pool.namespace, &pool.api_resource());
    let pods: Api<Pod> = Api::namespaced(client, &pool.namespace);
    while !tx.is_closed() {
        let target = match read_pool(&pools, &pool).await {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(pool = %pool.name, namespace = %pool.namespace, error = %e, "cannot read the InferencePool; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let selector = target.label_selector();
        let list = match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(%selector, error = %e, "cannot list the pool's pods; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        let mut current: BTreeMap<String, Pod> =
            list.items.into_iter().map(|p| (p.metadata.name.clone().unwrap_or_default(), p)).collect();
        publish(&tx, endpoints_from_pods(current.values(), &target));
        if !known.swap(true, Ordering::Relaxed) {
            tracing::info!(pool = %pool.name, %selector, ports = ?target.ports, "InferencePool known");
        }
        // Watch until the pool changes or the watch breaks; then list again.
        'watch: loop {
            let params = WatchParams::default().labels(&selector).timeout(WATCH_TIMEOUT_S);
            let mut stream = match pods.watch(&params, &version).await {
                Ok(s) => s.boxed(),
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; listing again");
                    tokio::time::sleep(RETRY).await;
                    break 'watch;
                }
            };
            let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + POOL_RECHECK, POOL_RECHECK);
            loop {
                tokio::select! {
                    event = stream.next() => match event {
                        Some(Ok(WatchEvent::Added(p))) | Some(Ok(WatchEvent::Modified(p))) => {
                            version = p.metadata.resource_version.clone().unwrap_or(version);
                            current.insert(p.metadata.name.clone().unwrap_or_default(), p);
                        }
                        Some(Ok(WatchEvent::Deleted(p))) => {
                            version = p.metadata.resource_version.clone().unwrap_or(version);
                            current.remove(p.metadata.name.as_deref().unwrap_or_default());
                        }
                        Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                        Some(Ok(WatchEvent::Error(e))) => {
                            tracing::info!(code = e.code, message = %e.message, "pod watch ended; listing again");
                            break 'watch;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "pod watch stream failed; listing again");
                            tokio::time::sleep(RETRY).await;
                            break 'watch;
                        }
                        // Server-side timeout: watch again from the same version.
                        None => continue 'watch,
                    },
                    _ = recheck.tick() => match read_pool(&pools, &pool).await {
                        Ok(now) if now != target => {
                            tracing::info!(pool = %pool.name, "InferencePool changed; listing its pods again");
                            break 'watch;
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot re-read the InferencePool; keeping its last spec");
                            continue;
                        }
                    },
                }
                publish(&tx, endpoints_from_pods(current.values(), &target));
            }
        }
    }
}

async fn read_pool(pools: &Api<DynamicObject>, pool: &PoolRef) -> Result<PoolTarget, String> {
    let object = pools.get(&pool.name).await.map_err(|e| e.to_string())?;
    PoolTarget::from_inference_pool(&object.data)
}

/// Publishes only real changes, so the scrape supervisor is not woken for nothing.
pub fn publish(tx: &watch::Sender<Vec<SocketAddr>>, endpoints: Vec<SocketAddr>) {
    tx.send_if_modified(|current| {
        if *current == endpoints {
            false
        } else {
            tracing::info!(endpoints = endpoints.len(), "pool endpoints changed");
            *current = endpoints;
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An InferencePool as `kubectl get -o json` serves it (fields of the v1 CRD in shared/crds).
    fn inference_pool() -> serde_json::Value {
        json!({
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": {"name": "qwen-pool", "namespace": "llm"},
            "spec": {
                "selector": {"matchLabels": {"app": "vllm-qwen", "tier": "serving"}},
                "targetPorts": [{"number": 8000}, {"number": 8001}],
                "appProtocol": "http",
                "endpointPickerRef": {"name": "wis-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}
            }
        })
    }

    fn pod(name: &str, ip: Option<&str>, ready: &str, labels: serde_json::Value) -> Pod {
        let mut status =
            json!({"conditions": [{"type": "Ready", "status": ready}, {"type": "PodScheduled", "status": "True"}]});
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
        }
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "llm", "labels": labels},
            "status": status
        }))
        .expect("a Pod")
    }

    #[test]
    fn an_inference_pool_gives_its_selector_and_ports() {
        let target = PoolTarget::from_inference_pool(&inference_pool()).unwrap();
        assert_eq!(target.label_selector(), "app=vllm-qwen,tier=serving");
        assert_eq!(target.ports, vec![8000, 8001]);
    }

    #[test]
    fn an_inference_pool_without_selector_or_ports_is_a_clear_error() {
        let mut pool = inference_pool();
        pool["spec"]["targetPorts"] = json!([]);
        assert!(PoolTarget::from_inference_pool(&pool).unwrap_err().contains("targetPorts"));
        pool["spec"]["targetPorts"] = json!([{"number": 70000}]);
        assert!(PoolTarget::from_inference_pool(&pool).unwrap_err().contains("targetPorts[0].number"));
        let mut pool = inference_pool();
        pool["spec"]["selector"] = json!({});
        assert!(PoolTarget::from_inference_pool(&pool).unwrap_err().contains("matchLabels"));
        assert!(PoolTarget::from_inference_pool(&json!({"metadata": {}})).unwrap_err().contains("spec"));
    }

    #[test]
    fn ready_selected_pods_become_one_endpoint_per_target_port() {
        let target = PoolTarget::from_inference_pool(&inference_pool()).unwrap();
        let labels = json!({"app": "vllm-qwen", "tier": "serving", "pod-template-hash": "abc"});
        let mut deleting = pod("d", Some("10.0.0.9"), "True", labels.clone());
        deleting.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-01-01T00:00:00Z")).expect("a timestamp");
        let pods = vec![
            pod("b", Some("10.0.0.2"), "True", labels.clone()),
            pod("a", Some("10.0.0.1"), "True", labels.clone()),
            pod("not-ready", Some("10.0.0.3"), "False", labels.clone()),
            pod("no-ip", None, "True", labels.clone()),
            pod("other-app", Some("10.0.0.4"), "True", json!({"app": "chat"})),
            deleting,
        ];
        let endpoints: Vec<String> = endpoints_from_pods(&pods, &target).iter().map(|a| a.to_string()).collect();
        assert_eq!(endpoints, vec!["10.0.0.1:8000", "10.0.0.1:8001", "10.0.0.2:8000", "10.0.0.2:8001"]);
    }

    #[test]
    fn publishing_the_same_list_wakes_nobody() {
        let (tx, mut rx) = watch::channel(Vec::new());
        rx.borrow_and_update();
        let list = vec!["10.0.0.1:8000".parse().unwrap()];
        publish(&tx, list.clone());
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        publish(&tx, list);
        assert!(!rx.has_changed().unwrap());
    }
}
