//! `wis-scraper`: the metrics sidecar of the wasm inference scheduler.
//!
//! It discovers an inference pool ([`discovery`]), scrapes each model server's Prometheus
//! `/metrics` on its own timer ([`scrape`], [`expo`], [`vocab`]), keeps the pool's state, with
//! reachability and metric staleness apart ([`state`]), logs each endpoint's scrape failures
//! when they change ([`failure_log`]), and serves one snapshot document in the plugin's wire
//! format (`wasm_inference_scheduler::pool`) on a localhost address ([`server`]).
//!
//! Tasks: one discovery task, one supervisor that starts and stops one scrape task per endpoint
//! (so a slow pod delays nobody else), one publisher that turns the state into a serialised
//! snapshot every interval, and the HTTP server that hands out the latest serialised bytes.

pub mod config;
pub mod discovery;
pub mod expo;
pub mod failure_log;
pub mod fixture;
pub mod scrape;
pub mod selfmetrics;
pub mod server;
pub mod state;
pub mod vocab;

use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use discovery::{K8sSettings, Resolver};
use failure_log::{FailureLog, Outcome};
use scrape::ScrapeSettings;
use selfmetrics::SelfMetrics;
use state::PoolState;
use vocab::Vocabulary;

/// Where the endpoints come from.
#[derive(Debug, Clone)]
pub enum DiscoverySettings {
    Static(Vec<SocketAddr>),
    Dns { host: String, port: u16, refresh: Duration },
    Kubernetes(K8sSettings),
}

/// Everything the scraper needs to run (built from flags and the config file by [`config`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub discovery: DiscoverySettings,
    pub vocabulary: Vocabulary,
    pub scrape: ScrapeSettings,
    pub interval: Duration,
    pub unhealthy_after: u32,
    pub listen: SocketAddr,
}

/// State shared by the tasks and the HTTP server.
pub struct Shared {
    pub state: Mutex<PoolState>,
    /// The latest snapshot, serialised once per interval and handed out as is.
    pub snapshot: RwLock<Bytes>,
    pub metrics: SelfMetrics,
    pub interval: Duration,
    /// When the publisher last ran; `/healthz` fails when it stops.
    pub last_publish: Mutex<Instant>,
    /// `/snapshot` answers 503 until the first round of scrapes is done (or timed out), so the
    /// plugin keeps its configured endpoints instead of adopting an all-unscraped pool.
    pub ready: AtomicBool,
    /// How long after discovery's first answer the first round may take at most.
    pub first_round_deadline: Duration,
}

/// A running scraper; dropping it stops every task.
pub struct Running {
    pub listen_addr: SocketAddr,
    pub shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Waits until a task ends (they only end on a fatal server error).
    pub async fn join_any(&mut self) {
        self.tasks.join_next().await;
    }
}

/// Starts discovery, scraping, publishing and the HTTP server.
pub async fn start(settings: Settings, resolver: Arc<dyn Resolver>) -> Result<Running, String> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let listen_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        state: Mutex::new(PoolState::new(settings.vocabulary.engine, settings.unhealthy_after)),
        snapshot: RwLock::new(Bytes::new()),
        metrics: SelfMetrics::default(),
        interval: settings.interval,
        last_publish: Mutex::new(Instant::now()),
        ready: AtomicBool::new(false),
        first_round_deadline: settings.scrape.timeout + settings.interval * 2,
    });
    tracing::info!(vocabulary = %settings.vocabulary.describe(), "metric vocabulary");

    let (tx, rx) = watch::channel(Vec::new());
    let mut tasks = JoinSet::new();
    let errors = shared.metrics.discovery_errors.clone();
    match settings.discovery.clone() {
        DiscoverySettings::Static(list) => {
            tx.send_replace(list);
            // Keep the sender alive so the supervisor does not see a closed channel.
            tasks.spawn(async move {
                tx.closed().await;
            });
        }
        DiscoverySettings::Dns { host, port, refresh } => {
            tasks.spawn(discovery::run_dns(resolver, host, port, refresh, tx, errors));
        }
        DiscoverySettings::Kubernetes(k8s) => {
            tasks.spawn(discovery::run_k8s(k8s, tx, errors));
        }
    }
    tasks.spawn(supervise(rx, shared.clone(), settings.vocabulary.clone(), settings.scrape.clone()));
    tasks.spawn(publish(shared.clone()));
    tasks.spawn(server::serve(listener, shared.clone()));
    Ok(Running { listen_addr, shared, tasks })
}

/// Keeps one scrape task per discovered endpoint.
async fn supervise(
    mut rx: watch::Receiver<Vec<SocketAddr>>,
    shared: Arc<Shared>,
    vocab: Vocabulary,
    settings: ScrapeSettings,
) {
    let vocab = Arc::new(vocab);
    let settings = Arc::new(settings);
    let mut scrapers: JoinSet<()> = JoinSet::new();
    let mut handles: HashMap<SocketAddr, AbortHandle> = HashMap::new();
    loop {
        let targets = rx.borrow_and_update().clone();
        let (added, removed) = lock(&shared.state).set_targets(&targets);
        for addr in &removed {
            if let Some(h) = handles.remove(addr) {
                h.abort();
            }
        }
        for addr in added {
            let task = scrape_loop(addr, shared.clone(), vocab.clone(), settings.clone());
            handles.insert(addr, scrapers.spawn(task));
        }
        if !removed.is_empty() || !handles.is_empty() {
            tracing::info!(endpoints = handles.len(), removed = removed.len(), "discovery update");
        }
        // Reap finished (aborted) tasks so the set does not grow.
        while scrapers.try_join_next().is_some() {}
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Scrapes one endpoint every interval until aborted.
async fn scrape_loop(addr: SocketAddr, shared: Arc<Shared>, vocab: Arc<Vocabulary>, settings: Arc<ScrapeSettings>) {
    // Spread endpoints over the interval so 1,000 scrapes do not leave in one burst.
    let interval = shared.interval;
    let offset = Duration::from_micros(spread(addr) % (interval.as_micros().max(1) as u64));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    // A slow pod gets its next scrape one interval after the last one ends, not a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut log = FailureLog::default();
    let mut connection = match scrape::Connection::new(addr, &settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot scrape this endpoint");
            lock(&shared.state).record_failure(addr, &e, e.to_string(), state::unix_ms());
            return;
        }
    };
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let result = match connection.fetch(&settings).await {
            Ok(body) => scrape::read_bytes(&body, &vocab),
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        let now = state::unix_ms();
        let line = match result {
            Ok(reading) => {
                shared.metrics.observe_scrape(took, None);
                lock(&shared.state).record_success(addr, reading, now);
                log.observe(Outcome::Succeeded, Instant::now())
            }
            Err(e) => {
                let reason = e.reason();
                shared.metrics.observe_scrape(took, Some(reason));
                let message = vocab.failure_message(&e);
                let Some(healthy) = lock(&shared.state).record_failure(addr, &e, message.clone(), now) else {
                    continue;
                };
                log.observe(Outcome::Failed { reason, message: &message, healthy }, Instant::now())
            }
        };
        if let Some(line) = line {
            line.emit(addr, &settings.path);
        }
    }
}

/// Serialises a snapshot every interval.
async fn publish(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut discovered_at: Option<Instant> = None;
    loop {
        ticker.tick().await;
        *lock(&shared.last_publish) = Instant::now();
        let ((sequence, json), counts) = {
            let mut state = lock(&shared.state);
            if !shared.ready.load(Ordering::Relaxed) {
                if !state.discovered() {
                    continue;
                }
                let since = *discovered_at.get_or_insert_with(Instant::now);
                if !state.first_round_done() && since.elapsed() < shared.first_round_deadline {
                    continue;
                }
            }
            (state.snapshot_json(state::unix_ms()), state.counts())
        };
        let json = Bytes::from(json);
        shared.metrics.observe_snapshot(sequence, json.len(), counts);
        *shared.snapshot.write().unwrap_or_else(|p| p.into_inner()) = json;
        shared.ready.store(true, Ordering::Relaxed);
    }
}

/// A poisoned lock only means another task panicked mid-update; the data is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn spread(addr: SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.hash(&mut h);
    h.finish()
}
