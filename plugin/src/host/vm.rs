//! What one VM (one Envoy worker, or the main thread) keeps between callbacks.
//!
//! The routing memory follows every worker's events through a [`Replica`] of the shared routing
//! log (see `crate::replication`: one append per request, everything applied within one tick).

use super::abi::{self, LogLevel};
use super::shared::{self, HostStore, Keys, SnapshotVersion};
use super::stats::Stats;
use crate::config::{Mode, PluginConfig};
use crate::director::Director;
use crate::endpoints::Pool;
use crate::memory::{RoutingEvent, RoutingMemory};
use crate::pool::PoolSnapshot;
use crate::replication::{FlushOutcome, Replica};
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

pub struct Vm {
    pub director: Director,
    pub memory: RoutingMemory,
    /// The pool decisions are made on: the scraper's latest snapshot, else the static endpoints.
    pub pool: Pool,
    /// `None` in Service Extensions mode, where the host has no custom metrics.
    pub stats: Option<Stats>,
    pub keys: Keys,
    /// Random identity of this VM for the fetch lease.
    pub holder: u32,
    /// A fetch this VM started and whose answer has not come back: (token, started at).
    pub fetch_in_flight: Option<(u32, u64)>,
    replica: Replica,
    scraped: Option<SnapshotVersion>,
    last_warning_ms: HashMap<&'static str, u64>,
}

impl Vm {
    pub fn new(director: Director, plugin_name: &str, holder: u32) -> Self {
        let config = director.config();
        let keys = Keys::new(plugin_name);
        let replica =
            Replica::new(&keys.log, config.shared_state.log_slots, STUCK_READS_BEFORE_SKIP, MAX_RECORDS_PER_SYNC);
        let stats = if config.mode == Mode::Envoy { Some(Stats::define()) } else { None };
        let mut memory = RoutingMemory::new(config);
        let pool = director.install(&mut memory, PoolSnapshot::from_static(&config.pool.endpoints));
        Self {
            director,
            memory,
            pool,
            stats,
            keys,
            holder,
            fetch_in_flight: None,
            replica,
            scraped: None,
            last_warning_ms: HashMap::new(),
        }
    }

    pub fn config(&self) -> &PluginConfig {
        self.director.config()
    }

    /// Opens the routing log (Envoy mode only: it lives in shared data).
    pub fn open_log(&mut self) {
        if let Err(e) = self.replica.open(&HostStore) {
            abi::log(LogLevel::Warn, &format!("wis: routing log unavailable, routing memory stays per worker: {e}"));
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

    /// Runs `f` on the stats, when this host has them.
    pub fn stats(&mut self, f: impl FnOnce(&mut Stats)) {
        if let Some(stats) = &mut self.stats {
            f(stats);
        }
    }

    /// Applies every routing event other workers (and this one) logged since the last sync.
    pub fn sync_log(&mut self) {
        if self.config().mode != Mode::Envoy {
            return;
        }
        match self.replica.sync(&HostStore, &mut self.memory) {
            Ok(outcome) => self.stats(|s| s.fixed.log_lost.add(outcome.read.lost + outcome.undecodable)),
            Err(e) => {
                let now = abi::now_ms().unwrap_or(0);
                self.warn("log-read", now, &format!("wis: routing log unreadable, memory not synced: {e}"));
            }
        }
    }

    /// Records an event now, together with every deferred one: one append.
    pub fn record_now(&mut self, event: RoutingEvent) {
        if self.config().mode != Mode::Envoy {
            return;
        }
        let outcome = self.replica.record_now(&HostStore, &mut self.memory, event);
        self.account(outcome);
    }

    /// Keeps events for the next append (the next decision's, or the tick's).
    pub fn defer(&mut self, events: Vec<RoutingEvent>) {
        if self.config().mode == Mode::Envoy && self.replica.defer(events) {
            self.flush_events();
        }
    }

    /// Appends every waiting event (on the tick).
    pub fn flush_events(&mut self) {
        if self.replica.pending() > 0 {
            let outcome = self.replica.flush(&HostStore, &mut self.memory);
            self.account(outcome);
        }
    }

    fn account(&mut self, outcome: FlushOutcome) {
        self.stats(|s| {
            s.fixed.log_refused.add(outcome.refused as u64);
            s.fixed.log_lost.add(outcome.read.lost);
        });
        if let Some(e) = outcome.failed.as_ref().map(ToString::to_string).or(outcome.read_error.map(|e| e.to_string()))
        {
            self.stats(|s| s.fixed.log_append_failed.inc());
            let now = abi::now_ms().unwrap_or(0);
            self.warn("log-append", now, &format!("wis: routing log: {e}; the events applied on this worker only"));
        }
    }

    /// Re-reads the shared snapshot when its version changed since this VM last parsed it.
    pub fn refresh_snapshot(&mut self, now_ms: u64) {
        let version = match abi::get_shared_data(&self.keys.snapshot_version) {
            Ok(Some((bytes, _))) => shared::decode_version(&bytes),
            _ => None,
        };
        if let Some(version) = version
            && self.scraped != Some(version)
            && let Ok(Some((body, _))) = abi::get_shared_data(&self.keys.snapshot)
            && let Err(e) = self.install_snapshot(&body, version)
        {
            self.warn("snapshot-shared", now_ms, &format!("wis: shared pool snapshot unusable: {e}"));
        }
    }

    /// Until this VM holds a snapshot, a request looks for one itself: the worker that won the
    /// first fetch shares it at once, but the others would only read it on their next tick, and
    /// meanwhile answer 503 on an empty pool. One shared-data read per request, only while no
    /// snapshot has ever arrived.
    pub fn refresh_before_first_snapshot(&mut self, now_ms: u64) {
        if self.scraped.is_none() && self.config().pool.snapshot_cluster.is_some() {
            self.refresh_snapshot(now_ms);
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
        self.pool = self.director.install(&mut self.memory, snapshot);
        self.scraped = Some(version);
    }

    /// The tick's stats: gauges from the current pool and memory, then everything to the host.
    pub fn flush_stats(&mut self, now_ms: u64) {
        let Some(stats) = &mut self.stats else { return };
        let max_age = self.director.config().pool.metrics_staleness_ms;
        let f = &mut stats.fixed;
        let endpoints = self.pool.endpoints();
        f.snapshot_endpoints.set(endpoints.len() as u64);
        if self.scraped.is_some() {
            f.snapshot_age_ms.set(now_ms.saturating_sub(self.pool.snapshot.generated_at_ms));
        }
        f.endpoints_unknown_metrics.set(endpoints.iter().filter(|e| !e.metrics_known(now_ms, max_age)).count() as u64);
        f.endpoints_unhealthy.set(endpoints.iter().filter(|e| !e.healthy).count() as u64);
        let calibration = self.memory.calibration();
        f.bytes_per_token_x100.set((calibration.pool_bytes_per_token() * 100.0).round() as u64);
        for (model, ratio, _) in calibration.learned() {
            stats.model_bytes_per_token(model, (ratio * 100.0).round() as u64);
        }
        for (endpoint, &id) in endpoints.iter().zip(self.pool.ids()) {
            stats.endpoint_capacity(&endpoint.address, self.memory.capacity_blocks(id) as u64);
        }
        stats.flush();
    }
}
