//! Discovery: which model-server endpoints make up the pool.
//!
//! Three sources, one output (a sorted, de-duplicated `ip:port` list on a watch channel):
//! - **static**: a fixed list (ranges `ip:first-last` allowed, for benchmarks);
//! - **DNS**: the A/AAAA records of a headless Service, re-resolved every `refresh`; a failed
//!   lookup keeps the previous list (a resolver blip must not empty the pool);
//! - **Kubernetes**: EndpointSlices of a Service (`kubernetes.io/service-name=<svc>`) or of a
//!   label selector, read with the pod's service account; list, then watch (or poll), ready
//!   endpoints only (`conditions.ready` true or unset, as the API defines), port by name or number.

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use wasm_inference_scheduler::pool::MAX_ENDPOINTS;

/// Pause after a failed Kubernetes list or watch before trying again (API server restarts, RBAC
/// fixes): long enough not to hammer the API server, short enough to recover quickly.
const K8S_RETRY: Duration = Duration::from_secs(2);

/// Server-side watch timeout; the watch is re-opened from the last resourceVersion after it.
const K8S_WATCH_TIMEOUT_S: u32 = 290;

/// Parses `ip:port`, `ip:first-last` (a port range) and comma-separated lists of them.
pub fn parse_static(list: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(addr) = item.parse::<SocketAddr>() {
            out.push(addr);
            continue;
        }
        let bad = || format!("static endpoint {item:?}: expected ip:port or ip:first-last (e.g. 10.0.0.7:8000)");
        let (ip, ports) = item.rsplit_once(':').ok_or_else(bad)?;
        let (first, last) = ports.split_once('-').ok_or_else(bad)?;
        let ip: IpAddr = ip.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| bad())?;
        let (first, last): (u16, u16) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
        if first > last || usize::from(last - first) >= MAX_ENDPOINTS {
            return Err(format!(
                "static endpoint range {item:?}: expected first <= last and at most {MAX_ENDPOINTS} ports"
            ));
        }
        out.extend((first..=last).map(|p| SocketAddr::new(ip, p)));
    }
    Ok(normalise(out))
}

/// Sorted, unique, at most [`MAX_ENDPOINTS`].
pub fn normalise(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let set: BTreeSet<SocketAddr> = addrs.into_iter().collect();
    set.into_iter().take(MAX_ENDPOINTS).collect()
}

/// Publishes only real changes, so the scrape supervisor is not woken for nothing.
fn publish(tx: &watch::Sender<Vec<SocketAddr>>, addrs: Vec<SocketAddr>) {
    tx.send_if_modified(|current| {
        if *current == addrs {
            false
        } else {
            *current = addrs;
            true
        }
    });
}

// ---------------------------------------------------------------- DNS

pub type ResolveFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// Name resolution, injectable so tests need no DNS server.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture;
}

/// The system resolver (`getaddrinfo` through tokio): honours `/etc/hosts` and the pod's
/// `resolv.conf`, which is where a headless Service's records come from.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// Re-resolves `host` every `refresh` until the receiver side is gone.
pub async fn run_dns(
    resolver: Arc<dyn Resolver>,
    host: String,
    port: u16,
    refresh: Duration,
    tx: watch::Sender<Vec<SocketAddr>>,
    errors: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        if tx.is_closed() {
            return;
        }
        match resolver.resolve(&host, port).await {
            Ok(addrs) => {
                if failing {
                    tracing::info!(%host, "DNS discovery recovered");
                    failing = false;
                }
                publish(&tx, normalise(addrs));
            }
            Err(e) => {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !failing {
                    tracing::warn!(%host, error = %e, "DNS lookup failed; keeping the previous endpoint list");
                    failing = true;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- Kubernetes

/// The standard in-cluster service-account mount.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Which port of the EndpointSlice to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Name(String),
    Number(u16),
}

impl std::str::FromStr for PortRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("port: expected a port name (e.g. http) or number".into());
        }
        Ok(s.parse::<u16>().map(PortRef::Number).unwrap_or_else(|_| PortRef::Name(s.to_string())))
    }
}

#[derive(Debug, Clone)]
pub struct K8sSettings {
    /// `kubernetes.io/service-name=<svc>` when a Service is given, else the user's selector.
    pub label_selector: String,
    pub namespace: Option<String>,
    pub port: PortRef,
    /// API server URL; default `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub api_url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// `None`: list then watch; `Some(d)`: list every `d` instead.
    pub poll: Option<Duration>,
}

impl K8sSettings {
    pub fn selector_for_service(service: &str) -> String {
        format!("kubernetes.io/service-name={service}")
    }

    /// The client configuration: in-cluster by default, every part overridable for tests.
    pub fn client_config(&self) -> Result<kube::Config, String> {
        let sa = std::path::Path::new(SA_DIR);
        let mut config = match &self.api_url {
            Some(url) => {
                let uri = url.parse().map_err(|e| format!("--k8s-api-url {url:?}: {e}"))?;
                let mut c = kube::Config::new(uri);
                let default_token = sa.join("token");
                if default_token.exists() {
                    c.auth_info.token_file = Some(default_token.to_string_lossy().into_owned());
                }
                let default_ca = sa.join("ca.crt");
                if default_ca.exists() && url.starts_with("https") {
                    c.root_cert_file = Some(default_ca);
                }
                c
            }
            None => kube::Config::incluster().map_err(|e| {
                format!("in-cluster Kubernetes config: {e} (outside a cluster pass --k8s-api-url, --k8s-token-file)")
            })?,
        };
        if let Some(token) = &self.token_file {
            if !token.exists() {
                return Err(format!("--k8s-token-file {}: no such file", token.display()));
            }
            // kube sends the file's bytes as they are; a token written with `echo` ends in a
            // newline, which is not a valid header value. Use the trimmed text then (the file
            // is then read once, so rotation is not followed; mounted tokens have no newline).
            let text =
                std::fs::read_to_string(token).map_err(|e| format!("--k8s-token-file {}: {e}", token.display()))?;
            if text.trim() != text {
                tracing::warn!(file = %token.display(), "token file has surrounding whitespace; using it trimmed, without reloading");
                config.auth_info.token = Some(text.trim().to_string().into());
                config.auth_info.token_file = None;
            } else {
                config.auth_info.token_file = Some(token.to_string_lossy().into_owned());
            }
        }
        if let Some(ca) = &self.ca_file {
            if !ca.exists() {
                return Err(format!("--k8s-ca-file {}: no such file", ca.display()));
            }
            config.root_cert_file = Some(ca.clone());
        }
        config.default_namespace = match &self.namespace {
            Some(ns) => ns.clone(),
            None => std::fs::read_to_string(sa.join("namespace"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| config.default_namespace.clone()),
        };
        Ok(config)
    }
}

/// Ready `ip:port` of a set of EndpointSlices.
pub fn ready_addresses<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, port: &PortRef) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let port_number = match port {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok()),
        };
        let Some(port_number) = port_number else { continue };
        for ep in &slice.endpoints {
            // The API defines an unset `ready` as ready.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            out.extend(
                ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()).map(|ip| SocketAddr::new(ip, port_number)),
            );
        }
    }
    normalise(out)
}

/// Runs Kubernetes discovery until the receiver side is gone.
pub async fn run_k8s(
    settings: K8sSettings,
    tx: watch::Sender<Vec<SocketAddr>>,
    errors: Arc<std::sync::atomic::AtomicU64>,
) {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %e, "Kubernetes {what} failed; retrying in {} s", K8S_RETRY.as_secs());
    };
    let client = loop {
        let made = settings.client_config().and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()));
        match made {
            Ok(c) => break c,
            Err(e) => fail("client set-up", &e),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(K8S_RETRY).await;
    };
    let api: Api<EndpointSlice> = Api::default_namespaced(client);
    let list_params = ListParams::default().labels(&settings.label_selector);
    while !tx.is_closed() {
        // List: the truth at a resourceVersion.
        let list = match api.list(&list_params).await {
            Ok(l) => l,
            Err(e) => {
                fail("EndpointSlice list", &e);
                tokio::time::sleep(K8S_RETRY).await;
                continue;
            }
        };
        let mut slices: BTreeMap<String, EndpointSlice> =
            list.items.into_iter().map(|s| (s.metadata.name.clone().unwrap_or_default(), s)).collect();
        publish(&tx, ready_addresses(slices.values(), &settings.port));
        if let Some(period) = settings.poll {
            tokio::time::sleep(period).await;
            continue;
        }
        // Watch from there, applying events, until the watch ends or the version expires.
        let mut version = list.metadata.resource_version.unwrap_or_default();
        'watch: loop {
            let watch_params = WatchParams::default().labels(&settings.label_selector).timeout(K8S_WATCH_TIMEOUT_S);
            let mut stream = match api.watch(&watch_params, &version).await {
                Ok(s) => s.boxed(),
                Err(e) => {
                    fail("EndpointSlice watch", &e);
                    tokio::time::sleep(K8S_RETRY).await;
                    break 'watch;
                }
            };
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(s)) | Ok(WatchEvent::Modified(s)) => {
                        version = s.metadata.resource_version.clone().unwrap_or(version);
                        slices.insert(s.metadata.name.clone().unwrap_or_default(), s);
                    }
                    Ok(WatchEvent::Deleted(s)) => {
                        version = s.metadata.resource_version.clone().unwrap_or(version);
                        slices.remove(s.metadata.name.as_deref().unwrap_or_default());
                    }
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    Ok(WatchEvent::Error(e)) => {
                        // 410 Gone: our version is too old; anything else: start over as well.
                        tracing::info!(code = e.code, message = %e.message, "EndpointSlice watch ended; listing again");
                        break 'watch;
                    }
                    Err(e) => {
                        fail("EndpointSlice watch stream", &e);
                        tokio::time::sleep(K8S_RETRY).await;
                        break 'watch;
                    }
                }
                publish(&tx, ready_addresses(slices.values(), &settings.port));
            }
            if tx.is_closed() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_list_accepts_ranges_and_rejects_hostnames() {
        let v = parse_static("127.0.0.1:9002, 127.0.0.1:9001,127.0.0.1:9100-9102,[::1]:8000").unwrap();
        assert_eq!(v.len(), 6);
        assert_eq!(v[0], "127.0.0.1:9001".parse().unwrap());
        assert!(parse_static("vllm-0:8000").unwrap_err().contains("expected ip:port"));
        assert!(parse_static("127.0.0.1:9-3").is_err());
    }

    #[test]
    fn port_ref_parses_names_and_numbers() {
        assert_eq!("http".parse::<PortRef>().unwrap(), PortRef::Name("http".into()));
        assert_eq!("8000".parse::<PortRef>().unwrap(), PortRef::Number(8000));
    }
}
