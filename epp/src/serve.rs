//! The process: discovery, the in-process scraper, the ext_proc and health gRPC servers and the
//! metrics page, started from the flags.
//!
//! Ports (GAIE's EPP layout): `--grpc-port` serves ext_proc (TLS with a self-signed certificate by
//! default) and `grpc.health.v1`; `--grpc-health-port` serves `grpc.health.v1` in plaintext for
//! kubelet probes; `--metrics-port` serves `/metrics`, `/healthz` and `/readyz` over HTTP.
//! Health: `liveness` is always SERVING; `readiness`, `""` and
//! `envoy.service.ext_proc.v3.ExternalProcessor` turn SERVING once the pool is known (the
//! InferencePool read and its pods listed, or the static list given) and its first scrape round
//! is done.

use crate::config::Cli;
use crate::core::{self, CoreHandle, unix_ms};
use crate::discovery::{self, PoolRef};
use crate::service::Picker;
use crate::stats::Stats;
use bytes::Bytes;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use wis_scraper::Shared;

/// The ext_proc service's name in `grpc.health.v1` (what Envoy's `grpc_health_check` asks for).
pub const EXT_PROC_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

/// Room for an ext_proc message's headers, metadata and attributes around a body at the limit.
const MESSAGE_FRAMING_BYTES: usize = 256 * 1024;

/// What the metrics page and the health checks read.
#[derive(Clone)]
pub struct Observed {
    pub core: CoreHandle,
    pub stats: Arc<Stats>,
    pub scraper: Arc<Shared>,
    pub ready: Arc<AtomicBool>,
}

/// Runs until SIGINT/SIGTERM, or returns the error that stopped it.
pub async fn run(cli: Cli) -> Result<(), String> {
    cli.check_discovery()?;
    let config = match &cli.config_file {
        Some(path) => std::fs::read(path).map_err(|e| format!("--config-file {}: {e}", path.display()))?,
        None => b"{}".to_vec(),
    };
    let static_list = match &cli.static_endpoints {
        Some(list) => {
            let addrs = wis_scraper::discovery::parse_static(list).map_err(|e| format!("--static-endpoints: {e}"))?;
            if addrs.is_empty() {
                return Err("--static-endpoints: expected at least one ip:port".into());
            }
            Some(addrs)
        }
        None => None,
    };
    let stats = Arc::new(Stats::default());
    let statics: Vec<String> = static_list.iter().flatten().map(|a| a.to_string()).collect();
    let core = CoreHandle::spawn(core::read_config(&config, &statics)?, stats.clone())?;

    let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
    let (tx, rx) = watch::channel(Vec::<SocketAddr>::new());
    let known = Arc::new(AtomicBool::new(false));
    match static_list {
        Some(list) => {
            tx.send_replace(list);
            known.store(true, Ordering::Relaxed);
            tasks.spawn(async move {
                tx.closed().await;
                Ok(())
            });
        }
        None => {
            let pool = PoolRef {
                name: cli.pool_name.clone().unwrap_or_default(),
                namespace: cli.namespace(),
                group: cli.pool_group.clone(),
                api_url: cli.kube_api_url.clone(),
            };
            tracing::info!(pool = %pool.name, namespace = %pool.namespace, group = %pool.group, "discovering the InferencePool");
            let known = known.clone();
            tasks.spawn(async move {
                discovery::run_inference_pool(pool, tx, known).await;
                Ok(())
            });
        }
    }
    let settings = scraper_settings(&cli, rx)?;
    let (scraper, scrape_tasks) =
        wis_scraper::start_in_process(&settings, Arc::new(wis_scraper::discovery::SystemResolver));
    let ready = Arc::new(AtomicBool::new(false));
    let observed = Observed { core: core.clone(), stats: stats.clone(), scraper, ready };

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("liveness", ServingStatus::Serving).await;
    for name in ["", "readiness", EXT_PROC_SERVICE] {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
    tasks.spawn(follow_pool(observed.clone(), known, settings.interval, reporter));

    let grpc_addr = SocketAddr::new(cli.bind_address, cli.grpc_port);
    let mut grpc = Server::builder();
    if cli.secure_serving {
        grpc = grpc.tls_config(self_signed_tls()?).map_err(|e| format!("TLS set-up: {e}"))?;
    }
    let picker = ext_proc_service(core, stats);
    let grpc = grpc.add_service(health.clone()).add_service(picker);
    let grpc_listener = bind(grpc_addr).await?;
    tasks.spawn(async move {
        grpc.serve_with_incoming(incoming(grpc_listener))
            .await
            .map_err(|e| format!("ext_proc server on {grpc_addr}: {e}"))
    });
    let health_addr = SocketAddr::new(cli.bind_address, cli.grpc_health_port);
    let health_listener = bind(health_addr).await?;
    tasks.spawn(async move {
        Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming(health_listener))
            .await
            .map_err(|e| format!("health server on {health_addr}: {e}"))
    });
    let metrics_addr = SocketAddr::new(cli.bind_address, cli.metrics_port);
    let metrics_listener = bind(metrics_addr).await?;
    tasks.spawn(serve_metrics(metrics_listener, observed));
    tracing::info!(grpc = %grpc_addr, health = %health_addr, metrics = %metrics_addr, tls = cli.secure_serving, "wis-epp started");

    let _scrape_tasks = scrape_tasks;
    tokio::select! {
        ended = tasks.join_next() => match ended {
            Some(Ok(Err(e))) => Err(e),
            _ => Err("a wis-epp task ended unexpectedly".into()),
        },
        _ = wis_scraper::process::shutdown_signal() => Ok(()),
    }
}

/// The scraper's settings from its own option set (so its defaults and checks stay its own), fed
/// by our discovery.
fn scraper_settings(cli: &Cli, endpoints: watch::Receiver<Vec<SocketAddr>>) -> Result<wis_scraper::Settings, String> {
    let options = wis_scraper::config::Options {
        // Satisfies the option set's "one discovery source" check; replaced by the watch below.
        static_endpoints: Some("127.0.0.1:9".into()),
        engine: Some(cli.engine.clone()),
        interval_ms: Some(cli.scrape_interval_ms),
        ..Default::default()
    };
    let mut settings = options.settings().map_err(|e| format!("scraper: {e}"))?;
    settings.discovery = wis_scraper::DiscoverySettings::Watch(endpoints);
    Ok(settings)
}

/// The ext_proc service. A BUFFERED request body arrives as one message, so it admits messages of
/// the configured body limit plus their framing (tonic's default of 4 MiB would refuse a body the
/// configuration accepts).
pub fn ext_proc_service(core: CoreHandle, stats: Arc<Stats>) -> ExternalProcessorServer<Picker> {
    let max_message = core::max_body_bytes(core.config()).saturating_add(MESSAGE_FRAMING_BYTES);
    ExternalProcessorServer::new(Picker::new(core, stats)).max_decoding_message_size(max_message)
}

/// Adopts every new scraper snapshot and keeps readiness current.
async fn follow_pool(
    observed: Observed,
    known: Arc<AtomicBool>,
    interval: Duration,
    reporter: tonic_health::server::HealthReporter,
) -> Result<(), String> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ready = false;
    loop {
        ticker.tick().await;
        let latest = observed.scraper.latest.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(snapshot) = latest.clone() {
            observed.core.tell(move |core| core.adopt_pool(&snapshot));
        }
        let ready = known.load(Ordering::Relaxed) && latest.is_some();
        observed.ready.store(ready, Ordering::Relaxed);
        if ready != was_ready {
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            for name in ["", "readiness", EXT_PROC_SERVICE] {
                reporter.set_service_status(name, status).await;
            }
            tracing::info!(ready, "readiness changed");
            was_ready = ready;
        }
    }
}

/// A fresh self-signed certificate for the ext_proc port, as GAIE's EPP makes at start: proxies
/// that call a picker (Envoy's reference wiring, GKE's gateway) encrypt but do not verify it.
fn self_signed_tls() -> Result<ServerTlsConfig, String> {
    let names = vec!["wis-epp".to_string(), "localhost".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| format!("self-signed certificate: {e}"))?;
    let identity = Identity::from_pem(certified.cert.pem(), certified.signing_key.serialize_pem());
    Ok(ServerTlsConfig::new().identity(identity))
}

/// Accepted connections with TCP_NODELAY: every ext_proc message is small and answered at once, and
/// Nagle's algorithm against the proxy's delayed ACKs adds about 40 ms to each exchange.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// `/metrics`, `/healthz`, `/readyz` over HTTP/1.1.
pub async fn serve_metrics(listener: tokio::net::TcpListener, observed: Observed) -> Result<(), String> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let observed = observed.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let observed = observed.clone();
                async move { Ok::<_, Infallible>(route(&req, &observed).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn route<B>(req: &Request<B>, observed: &Observed) -> Response<Full<Bytes>> {
    let ready = observed.ready.load(Ordering::Relaxed);
    match req.uri().path() {
        "/metrics" => {
            let pool = observed
                .core
                .call(|core| {
                    let members: Vec<String> = core.pool().endpoints.iter().map(|e| e.address.clone()).collect();
                    (core.pool_counts(unix_ms()), members)
                })
                .await;
            let (counts, members) = pool.unwrap_or_default();
            let mut page = observed.stats.render(&counts, &members, ready);
            page.push_str(&observed.scraper.metrics.render());
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", page)
        }
        "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/readyz" if ready => respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n".into()),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "not ready: the pool is not known yet (InferencePool, pods, first scrapes)\n".into(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}
