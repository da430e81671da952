//! What one VM (one Envoy worker, or the main thread) keeps between callbacks.

use super::abi::{self, LogLevel};
use super::shared::{self, HostStore, Keys, SnapshotVersion};
use super::stats::Stats;
use crate::config::{Mode, PluginConfig};
use crate::memory::{RoutingEvent, RoutingMemory};
use crate::pool::PoolSnapshot;
use crate::scheduler::Scheduler;
use crate::shared_log::SharedLog;
use hashbrown::HashMap;
use std::cell::RefCell;
use std::rc::Rc;

pub type VmRef = Rc<RefCell<Vm>>;

/// Log records applied per sync. A VM that fell far behind catches up over several requests
/// instead of stalling one of them.
const MAX_RECORDS_PER_SYNC: u64 = 512;

/// Reads that may find a claimed log slot unwritten before it is skipped: the writer claims and
/// writes within one callback, so a slot still empty several syncs later belongs to a dead VM.
const STUCK_READS_BEFORE_SKIP: u32 = 8;

/// Minimum interval between two identical warnings in the log, so a dead scraper does not flood
/// Envoy's log at the tick rate.
const WARNING_INTERVAL_MS: u64 = 10_000;

/// Largest snapshot accepted from the scraper: [`crate::pool::MAX_ENDPOINTS`] endpoints at well
/// under 1 KiB each.
pub const MAX_SNAPSHOT_BYTES: usize = 2 * 1024 * 1024;

pub struct Vm {
    pub config: PluginConfig,
    pub scheduler: Scheduler,
    pub keys: Keys,
    pub memory: RoutingMemory,
    /// `None` in Service Extensions mode, where the host has no custom metrics.
    pub stats: Option<Stats>,
    /// Random identity of this VM for the fetch lease.
    pub holder: u32,
    /// A fetch this VM started and whose answer has not come back: (token, started at).
    pub fetch_in_flight: Option<(u32, u64)>,
    log: SharedLog,
    scraped: Option<(PoolSnapshot, SnapshotVersion)>,
    static_pool: PoolSnapshot,
    last_warning_ms: HashMap<&'static str, u64>,
}

impl Vm {
    pub fn new(config: PluginConfig, scheduler: Scheduler, plugin_name: &str, holder: u32) -> Self {
        let keys = Keys::new(plugin_name);
        let log = SharedLog::new(&keys.log, config.shared_state.log_slots, STUCK_READS_BEFORE_SKIP);
        let static_pool = PoolSnapshot::from_static(&config.pool.endpoints);
        let stats = if config.mode == Mode::Envoy { Some(Stats::define()) } else { None };
        Self {
            memory: RoutingMemory::new(&config),
            config,
            scheduler,
            keys,
            stats,
            holder,
            fetch_in_flight: None,
            log,
            scraped: None,
            static_pool,
            last_warning_ms: HashMap::new(),
        }
    }

    /// Opens the routing log (Envoy mode only: it lives in shared data).
    pub fn open_log(&mut self) {
        if let Err(e) = self.log.open(&HostStore) {
            abi::log(LogLevel::Warn, &format!("wis: routing log unavailable, routing memory stays per worker: {e}"));
        }
    }

    /// The pool to schedule on: the scraper's latest snapshot, else the configured static endpoints.
    pub fn pool(&self) -> &PoolSnapshot {
        match &self.scraped {
            Some((snapshot, _)) => snapshot,
            None => &self.static_pool,
        }
    }

    /// Logs a warning at most once per [`WARNING_INTERVAL_MS`] per kind.
    pub fn warn(&mut self, kind: &'static str, now_ms: u64, message: &str) {
        let last = self.last_warning_ms.get(kind).copied();
        if last.is_none_or(|at| now_ms.saturating_sub(at) >= WARNING_INTERVAL_MS) {
            self.last_warning_ms.insert(kind, now_ms);
            abi::log(LogLevel::Warn, message);
        }
    }

    pub fn stat(&self, name: &'static str) {
        if let Some(stats) = &self.stats {
            stats.inc(name);
        }
    }

    pub fn stat_add(&self, name: &'static str, by: u64) {
        if let Some(stats) = &self.stats {
            stats.add(name, by);
        }
    }

    pub fn stat_record(&self, name: &'static str, value: u64) {
        if let Some(stats) = &self.stats {
            stats.record(name, value);
        }
    }

    /// Applies every routing event other workers (and this one) logged since the last sync.
    pub fn sync_log(&mut self) {
        if self.config.mode != Mode::Envoy {
            return;
        }
        let memory = &mut self.memory;
        let mut undecodable = 0u64;
        let outcome =
            self.log.read_new(&HostStore, MAX_RECORDS_PER_SYNC, |_, bytes| match RoutingEvent::decode_record(bytes) {
                Ok(events) => events.iter().for_each(|event| memory.apply(event)),
                Err(_) => undecodable += 1,
            });
        match outcome {
            Ok(outcome) => self.stat_add("wis.log.lost", outcome.lost + undecodable),
            Err(e) => {
                let now = abi::now_ms().unwrap_or(0);
                self.warn("log-read", now, &format!("wis: routing log unreadable, memory not synced: {e}"));
            }
        }
    }

    /// Records a routing event for every worker. If the log cannot take it, the event still
    /// applies here, so this worker's own accounting stays right.
    pub fn record(&mut self, event: RoutingEvent) {
        self.record_all(&[event]);
    }

    /// Records events for every worker in one log record: one append (three shared-data calls,
    /// the costly part of a routing event in Envoy) whatever their number.
    pub fn record_all(&mut self, events: &[RoutingEvent]) {
        if self.config.mode != Mode::Envoy || events.is_empty() {
            return;
        }
        match self.log.append(&HostStore, &RoutingEvent::encode_record(events)) {
            Ok(seq) if self.log.advance_past_own(seq) => events.iter().for_each(|event| self.memory.apply(event)),
            Ok(_) => self.sync_log(),
            Err(e) => {
                self.stat("wis.log.append_failed");
                let now = abi::now_ms().unwrap_or(0);
                self.warn("log-append", now, &format!("wis: {e}; applying the events on this worker only"));
                events.iter().for_each(|event| self.memory.apply(event));
            }
        }
    }

    /// Re-reads the shared snapshot when its version changed since this VM last parsed it.
    pub fn refresh_snapshot(&mut self, now_ms: u64) {
        let version = match abi::get_shared_data(&self.keys.snapshot_version) {
            Ok(Some((bytes, _))) => shared::decode_version(&bytes),
            _ => None,
        };
        if let Some(version) = version
            && self.scraped.as_ref().map(|(_, v)| *v) != Some(version)
            && let Ok(Some((body, _))) = abi::get_shared_data(&self.keys.snapshot)
            && let Err(e) = self.install_snapshot(&body, version)
        {
            self.warn("snapshot-shared", now_ms, &format!("wis: shared pool snapshot unusable: {e}"));
        }
        if let Some((snapshot, _)) = &self.scraped {
            self.stat_record("wis.snapshot.endpoints", snapshot.endpoints.len() as u64);
            self.stat_record("wis.snapshot.age_ms", now_ms.saturating_sub(snapshot.generated_at_ms));
        }
    }

    /// Validates a snapshot the scraper served, shares it with every VM and installs it here.
    pub fn accept_fetched_snapshot(&mut self, body: &[u8]) -> Result<(), String> {
        let snapshot = PoolSnapshot::from_json(body).map_err(|e| e.to_string())?;
        let version = (snapshot.sequence, snapshot.generated_at_ms);
        // Body first, version second: a VM that sees the new version finds the new body.
        abi::set_shared_data(&self.keys.snapshot, body, None).map_err(|e| e.to_string())?;
        abi::set_shared_data(&self.keys.snapshot_version, &shared::encode_version(version), None)
            .map_err(|e| e.to_string())?;
        self.adopt(snapshot, version);
        Ok(())
    }

    fn install_snapshot(&mut self, body: &[u8], version: SnapshotVersion) -> Result<(), String> {
        let snapshot = PoolSnapshot::from_json(body).map_err(|e| e.to_string())?;
        self.adopt(snapshot, version);
        Ok(())
    }

    fn adopt(&mut self, snapshot: PoolSnapshot, version: SnapshotVersion) {
        self.memory.observe_pool(&snapshot);
        self.scraped = Some((snapshot, version));
    }

    /// Folds a pod's ORCA load report into this VM's view of it: fresher than the last scrape.
    pub fn apply_orca(&mut self, address: &str, load: &crate::feedback::OrcaLoad, now_ms: u64) {
        let Some((snapshot, _)) = &mut self.scraped else { return };
        let Some(endpoint) = snapshot.endpoints.iter_mut().find(|e| e.address == address) else { return };
        if let Some(kv) = load.kv_cache_usage {
            endpoint.metrics.kv_cache_usage = kv;
        }
        if let Some(waiting) = load.waiting_requests {
            endpoint.metrics.waiting_requests = waiting;
        }
        if let Some(running) = load.running_requests {
            endpoint.metrics.running_requests = running;
        }
        endpoint.last_scrape_ms = endpoint.last_scrape_ms.max(now_ms);
    }
}
