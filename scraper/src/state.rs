//! The pool as the scraper last saw it, and the snapshot documents made from it.
//!
//! Two facts per endpoint, kept apart (their wire meaning is `plugin/src/pool.rs`'s), because a
//! pod whose metrics cannot be read says nothing about whether it can serve:
//! - **reachable** (`healthy`): an endpoint starts not healthy and turns healthy with the first
//!   answer of any kind (a 404 too: something is listening). Only connection failures and
//!   timeouts clear it, after `unhealthy_after` of them in a row (default 3, i.e. 150 ms at the
//!   default 50 ms interval: one lost scrape is a blip, three are a pod that is gone); any
//!   answer resets that count. So an endpoint whose first attempts cannot connect is not healthy,
//!   and one that connects but answers 404 is;
//! - **metrics known** (`!stale`): any failed scrape (an HTTP error status, an unreadable body, a
//!   missing gauge, a body over the limit, an unreachable pod) sets `stale` and keeps the last
//!   good values (zeros when there never were any); a successful scrape stores its reading,
//!   sets `last_scrape_ms` and clears it.
//!
//! A failed scrape also records `last_error` (its reason, a message of at most
//! `MAX_ERROR_MESSAGE_BYTES`, and the Unix ms of the first failure of the current streak), and
//! `consecutive_failures` counts failed scrapes of any kind in a row; a successful scrape clears
//! both. An endpoint that leaves discovery is dropped at once, with its history.
//!
//! Every generated snapshot carries the next `sequence` (monotonic for the process).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use wasm_inference_scheduler::pool::{
    Endpoint, EndpointMetrics, Engine, FORMAT_VERSION, MAX_ENDPOINTS, MAX_ERROR_MESSAGE_BYTES, PoolSnapshot,
    ScrapeFailure, truncate_utf8,
};

use crate::scrape::ScrapeError;
use crate::vocab::Reading;

/// Default number of consecutive connection failures or timeouts after which a reachable
/// endpoint is reported unhealthy.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;

/// The plugin refuses a snapshot larger than this; the one definition is the wire format's.
pub const SNAPSHOT_BUDGET_BYTES: usize = wasm_inference_scheduler::pool::MAX_SNAPSHOT_BYTES;

/// Error messages are cut to this when the full ones would push the snapshot over the budget
/// (a large pool failing with long messages): the reason and the start of each message stay,
/// and the pool stays visible to the plugin instead of being refused whole.
const TRIMMED_ERROR_MESSAGE_BYTES: usize = 96;

/// Counts of endpoints by state, for the scraper's own metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointCounts {
    pub total: usize,
    /// Reachable (`healthy` in the snapshot), metrics known or not.
    pub healthy: usize,
    /// The latest scrape gave no reading, reachable or not.
    pub stale: usize,
    /// Reachable, but the latest scrape could not be read: scheduled on what the proxy knows.
    pub unknown_metrics: usize,
    /// Not healthy: never reached, or connection failures/timeouts in a row.
    pub unreachable: usize,
    /// Endpoints whose latest scrape failed, by reason (in [`ScrapeError::REASONS`] order).
    pub failing: [usize; ScrapeError::REASONS.len()],
}

#[derive(Debug, Clone)]
struct Record {
    endpoint: Endpoint,
    /// At least one scrape finished (either way).
    attempted: bool,
    /// Connection failures and timeouts in a row; an answer of any kind resets it.
    unreachable_streak: u32,
}

/// Every discovered endpoint's latest state.
#[derive(Debug)]
pub struct PoolState {
    engine: Engine,
    unhealthy_after: u32,
    records: BTreeMap<SocketAddr, Record>,
    sequence: u64,
    discovered: bool,
}

impl PoolState {
    pub fn new(engine: Engine, unhealthy_after: u32) -> Self {
        Self {
            engine,
            unhealthy_after: unhealthy_after.max(1),
            records: BTreeMap::new(),
            sequence: 0,
            discovered: false,
        }
    }

    /// Replaces the endpoint set with what discovery reports: new addresses start unscraped,
    /// known ones keep their state, missing ones are dropped. Returns (added, removed).
    pub fn set_targets(&mut self, targets: &[SocketAddr]) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        self.discovered = true;
        let wanted: std::collections::BTreeSet<SocketAddr> = targets.iter().copied().take(MAX_ENDPOINTS).collect();
        let removed: Vec<SocketAddr> = self.records.keys().filter(|a| !wanted.contains(a)).copied().collect();
        for addr in &removed {
            self.records.remove(addr);
        }
        let mut added = Vec::new();
        for addr in wanted {
            self.records.entry(addr).or_insert_with(|| {
                added.push(addr);
                Record {
                    endpoint: Endpoint {
                        address: addr.to_string(),
                        healthy: false,
                        stale: true,
                        last_scrape_ms: 0,
                        consecutive_failures: 0,
                        models: Vec::new(),
                        metrics: EndpointMetrics::default(),
                        last_error: None,
                    },
                    attempted: false,
                    unreachable_streak: 0,
                }
            });
        }
        (added, removed)
    }

    /// Stores a successful reading. Ignored for an address discovery no longer lists.
    pub fn record_success(&mut self, addr: SocketAddr, reading: Reading, now_ms: u64) {
        if let Some(r) = self.records.get_mut(&addr) {
            r.endpoint.metrics = reading.metrics;
            r.endpoint.models = reading.models;
            r.endpoint.last_scrape_ms = now_ms;
            r.endpoint.stale = false;
            r.endpoint.healthy = true;
            r.endpoint.consecutive_failures = 0;
            r.endpoint.last_error = None;
            r.attempted = true;
            r.unreachable_streak = 0;
        }
    }

    /// Records a failed scrape at `now_ms`, with its message for people (cut to
    /// `MAX_ERROR_MESSAGE_BYTES`). Returns whether the endpoint is healthy afterwards (None for an
    /// address discovery no longer lists).
    pub fn record_failure(
        &mut self,
        addr: SocketAddr,
        error: &ScrapeError,
        mut message: String,
        now_ms: u64,
    ) -> Option<bool> {
        let unhealthy_after = self.unhealthy_after;
        let r = self.records.get_mut(&addr)?;
        r.attempted = true;
        let e = &mut r.endpoint;
        e.stale = true;
        e.consecutive_failures = e.consecutive_failures.saturating_add(1);
        if error.is_unreachable() {
            r.unreachable_streak = r.unreachable_streak.saturating_add(1);
            if r.unreachable_streak >= unhealthy_after {
                e.healthy = false;
            }
        } else {
            // It answered: reachable, whatever the answer was.
            r.unreachable_streak = 0;
            e.healthy = true;
        }
        truncate_utf8(&mut message, MAX_ERROR_MESSAGE_BYTES);
        let since_ms = e.last_error.as_ref().map_or(now_ms, |previous| previous.since_ms);
        e.last_error = Some(ScrapeFailure { reason: error.reason().to_string(), message, since_ms });
        Some(e.healthy)
    }

    /// Why the latest scrape of an endpoint failed, if it did.
    pub fn last_error(&self, addr: &SocketAddr) -> Option<&ScrapeFailure> {
        self.records.get(addr).and_then(|r| r.endpoint.last_error.as_ref())
    }

    /// Discovery has answered once and every endpoint it listed has been scraped once: the first
    /// snapshot worth serving (before it, every endpoint would read as never reached).
    pub fn first_round_done(&self) -> bool {
        self.discovered && self.records.values().all(|r| r.attempted)
    }

    pub fn discovered(&self) -> bool {
        self.discovered
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.records.contains_key(addr)
    }

    pub fn counts(&self) -> EndpointCounts {
        let mut c = EndpointCounts { total: self.records.len(), ..Default::default() };
        for e in self.records.values().map(|r| &r.endpoint) {
            c.healthy += usize::from(e.healthy);
            c.stale += usize::from(e.stale);
            c.unknown_metrics += usize::from(e.healthy && e.stale);
            c.unreachable += usize::from(!e.healthy);
            if let Some(i) =
                e.last_error.as_ref().and_then(|f| ScrapeError::REASONS.iter().position(|r| *r == f.reason))
            {
                c.failing[i] += 1;
            }
        }
        c
    }

    /// Generates the next snapshot and serialises it within [`SNAPSHOT_BUDGET_BYTES`] (cutting
    /// error messages if need be). Returns its sequence and its JSON.
    pub fn snapshot_json(&mut self, now_ms: u64) -> (u64, Vec<u8>) {
        let mut snapshot = self.snapshot(now_ms);
        let json = snapshot.to_json();
        if json.len() <= SNAPSHOT_BUDGET_BYTES {
            return (snapshot.sequence, json);
        }
        for failure in snapshot.endpoints.iter_mut().filter_map(|e| e.last_error.as_mut()) {
            truncate_utf8(&mut failure.message, TRIMMED_ERROR_MESSAGE_BYTES);
        }
        (snapshot.sequence, snapshot.to_json())
    }

    /// Generates the next snapshot (sequence + 1).
    pub fn snapshot(&mut self, now_ms: u64) -> PoolSnapshot {
        self.sequence += 1;
        PoolSnapshot {
            format_version: FORMAT_VERSION,
            sequence: self.sequence,
            generated_at_ms: now_ms,
            engine: self.engine,
            endpoints: self.records.values().map(|r| r.endpoint.clone()).collect(),
        }
    }
}

/// Unix milliseconds from the wall clock (the plugin compares against the proxy's wall clock).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wasm_inference_scheduler::pool::LoraState;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, (i / 65536) as u8, ((i / 256) % 256) as u8, (i % 256) as u8], 8000))
    }

    fn reading(waiting: u32) -> Reading {
        Reading {
            metrics: EndpointMetrics { waiting_requests: waiting, kv_cache_usage: 0.5, ..Default::default() },
            models: vec!["m".into()],
        }
    }

    fn fail(s: &mut PoolState, addr: SocketAddr, error: &ScrapeError, now_ms: u64) -> Option<bool> {
        s.record_failure(addr, error, error.to_string(), now_ms)
    }

    fn refused() -> ScrapeError {
        ScrapeError::Connect("Connection refused (os error 111)".into())
    }

    fn not_found() -> ScrapeError {
        ScrapeError::Status { status: 404, excerpt: r#"{"detail":"Not Found"}"#.into() }
    }

    #[test]
    fn unreadable_metrics_leave_the_endpoint_healthy_with_unknown_metrics() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        s.set_targets(&[addr(1)]);
        s.record_success(addr(1), reading(7), 1_000);
        for (i, now) in [1_050, 1_100, 1_150, 1_200].into_iter().enumerate() {
            assert_eq!(fail(&mut s, addr(1), &not_found(), now), Some(true));
            let e = s.snapshot(now).endpoints[0].clone();
            assert!(e.healthy && e.stale, "a 404 is metrics trouble, not pod death");
            assert_eq!(
                (e.metrics.waiting_requests, e.last_scrape_ms, e.consecutive_failures),
                (7, 1_000, i as u32 + 1)
            );
            let error = e.last_error.unwrap();
            assert_eq!((error.reason.as_str(), error.since_ms), ("http_status", 1_050), "since the streak began");
            assert_eq!(error.message, r#"answered HTTP 404, expected 200: "{\"detail\":\"Not Found\"}""#);
        }
        let c = s.counts();
        assert_eq!((c.healthy, c.unknown_metrics, c.unreachable, c.stale), (1, 1, 0, 1));
        assert_eq!(c.failing[ScrapeError::REASONS.iter().position(|r| *r == "http_status").unwrap()], 1);
        s.record_success(addr(1), reading(2), 1_250);
        let e = s.snapshot(1_250).endpoints[0].clone();
        assert!(e.healthy && !e.stale && e.consecutive_failures == 0 && e.last_error.is_none());
        assert_eq!(e.metrics.waiting_requests, 2);
    }

    #[test]
    fn only_consecutive_connection_failures_and_timeouts_make_an_endpoint_unhealthy() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        s.set_targets(&[addr(1)]);
        s.record_success(addr(1), reading(7), 1_000);
        assert_eq!(fail(&mut s, addr(1), &refused(), 1_050), Some(true), "one lost scrape is a blip");
        assert_eq!(fail(&mut s, addr(1), &ScrapeError::Timeout(Duration::from_millis(250)), 1_100), Some(true));
        // An answer in between (even an error status) says the pod is there: the count restarts.
        assert_eq!(fail(&mut s, addr(1), &not_found(), 1_150), Some(true));
        assert_eq!(fail(&mut s, addr(1), &refused(), 1_200), Some(true));
        assert_eq!(fail(&mut s, addr(1), &refused(), 1_250), Some(true));
        assert_eq!(fail(&mut s, addr(1), &refused(), 1_300), Some(false), "third in a row");
        let e = s.snapshot(1_300).endpoints[0].clone();
        assert!(!e.healthy && e.stale);
        assert_eq!((e.consecutive_failures, e.metrics.waiting_requests), (6, 7), "last good values are kept");
        let error = s.last_error(&addr(1)).unwrap();
        assert_eq!((error.reason.as_str(), error.since_ms), ("connect", 1_050));
        assert!(error.is_unreachable());
        assert_eq!((s.counts().unreachable, s.counts().unknown_metrics), (1, 0));
        // Any answer brings it back as reachable; metrics stay unknown until a reading.
        assert_eq!(fail(&mut s, addr(1), &not_found(), 1_350), Some(true));
        assert_eq!(s.counts().unknown_metrics, 1);
    }

    #[test]
    fn an_endpoint_is_healthy_only_once_it_answered() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        s.set_targets(&[addr(1), addr(2), addr(3)]);
        let e = &s.snapshot(5).endpoints[0];
        assert!(e.stale && !e.healthy && e.last_scrape_ms == 0 && e.last_error.is_none(), "never attempted");
        assert_eq!(fail(&mut s, addr(1), &refused(), 10), Some(false), "first attempts cannot connect");
        assert_eq!(fail(&mut s, addr(2), &not_found(), 10), Some(true), "connects, answers 404");
        s.record_success(addr(3), reading(0), 10);
        let snap = s.snapshot(10);
        let health: Vec<(bool, bool)> = snap.endpoints.iter().map(|e| (e.healthy, e.stale)).collect();
        assert_eq!(health, vec![(false, true), (true, true), (true, false)]);
        assert_eq!(fail(&mut s, addr(9), &refused(), 10), None, "not discovered");
    }

    #[test]
    fn error_messages_in_the_snapshot_are_bounded() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        s.set_targets(&[addr(1)]);
        let long = ScrapeError::Body("é".repeat(2 * MAX_ERROR_MESSAGE_BYTES));
        fail(&mut s, addr(1), &long, 10);
        let json = s.snapshot(10).to_json();
        let parsed = PoolSnapshot::from_json(&json).unwrap();
        let message = &parsed.endpoints[0].last_error.as_ref().unwrap().message;
        assert!(message.len() <= MAX_ERROR_MESSAGE_BYTES && message.starts_with("reading the response failed: é"));
    }

    #[test]
    fn endpoint_leaving_discovery_is_dropped_and_late_results_ignored() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        s.set_targets(&[addr(1), addr(2)]);
        let (added, removed) = s.set_targets(&[addr(2), addr(3)]);
        assert_eq!((added, removed), (vec![addr(3)], vec![addr(1)]));
        s.record_success(addr(1), reading(1), 10);
        let snap = s.snapshot(10);
        let listed: Vec<&str> = snap.endpoints.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(listed, vec!["10.0.0.2:8000", "10.0.0.3:8000"]);
    }

    #[test]
    fn first_round_waits_for_discovery_and_one_attempt_per_endpoint() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        assert!(!s.first_round_done(), "no discovery yet");
        s.set_targets(&[addr(1), addr(2)]);
        s.record_success(addr(1), reading(1), 10);
        assert!(!s.first_round_done());
        fail(&mut s, addr(2), &refused(), 10);
        assert!(s.first_round_done());
        let mut empty = PoolState::new(Engine::Vllm, 3);
        empty.set_targets(&[]);
        assert!(empty.first_round_done(), "an empty pool is a truthful answer");
    }

    #[test]
    fn sequence_is_monotonic() {
        let mut s = PoolState::new(Engine::Sglang, 3);
        let a = s.snapshot(1).sequence;
        let b = s.snapshot(1).sequence;
        assert!(b > a);
        assert_eq!(s.snapshot(1).engine, Engine::Sglang);
    }

    #[test]
    fn thousand_endpoint_snapshot_stays_bounded_and_valid() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        let addrs: Vec<SocketAddr> = (0..1000).map(addr).collect();
        s.set_targets(&addrs);
        let names: Vec<String> =
            (0..wasm_inference_scheduler::pool::MAX_ADAPTERS_PER_LIST).map(|i| format!("adapter-{i:03}")).collect();
        for (i, a) in addrs.iter().enumerate() {
            let mut r = reading(i as u32);
            r.metrics.lora = Some(LoraState { running: names.clone(), waiting: vec![], max_loras: 64 });
            r.metrics.cache_block_size = Some(16);
            r.metrics.cache_num_blocks = Some(27_345);
            r.metrics.prefix_cache_queries_total = Some(1.2e9);
            r.metrics.prefix_cache_hits_total = Some(8.0e8);
            r.models = (0..crate::vocab::MAX_MODELS_PER_ENDPOINT).map(|m| format!("org/model-name-{m:02}")).collect();
            s.record_success(*a, r, 1_764_000_000_000);
        }
        let json = s.snapshot(1_764_000_000_000).to_json();
        // Worst case per endpoint with every list at its cap: ~1.6 KB; the plugin parses this in
        // every VM, so pin the bound (with a typical endpoint far smaller, see the README).
        assert!(json.len() < 2 * 1024 * 1024, "1,000 endpoints at every cap serialise to {} bytes", json.len());
        let parsed = PoolSnapshot::from_json(&json).expect("the plugin reads it");
        assert_eq!(parsed.endpoints.len(), 1000);
        // Now every endpoint fails, keeping its last values, with a message at the cap full of
        // characters JSON escapes: the full messages would not fit, cut ones do.
        let noisy = ScrapeError::Status { status: 500, excerpt: "\"\\".repeat(300) };
        for a in &addrs {
            s.record_failure(*a, &noisy, noisy.to_string(), 1_764_000_000_050);
        }
        assert!(s.snapshot(1).to_json().len() > SNAPSHOT_BUDGET_BYTES, "the case the budget is for");
        let (_, json) = s.snapshot_json(1_764_000_000_050);
        assert!(json.len() <= SNAPSHOT_BUDGET_BYTES, "{} bytes", json.len());
        let parsed = PoolSnapshot::from_json(&json).expect("the plugin reads it");
        assert!(parsed.endpoints.iter().all(|e| {
            let f = e.last_error.as_ref().unwrap();
            f.reason == "http_status" && f.message.starts_with("answered HTTP 500") && f.message.len() <= 96
        }));
        // A snapshot within the budget keeps its messages whole.
        let mut small = PoolState::new(Engine::Vllm, 3);
        small.set_targets(&[addr(1)]);
        small.record_failure(addr(1), &noisy, noisy.to_string(), 5);
        let (_, json) = small.snapshot_json(5);
        let whole = PoolSnapshot::from_json(&json).unwrap().endpoints[0].last_error.clone().unwrap().message;
        assert_eq!(whole.len(), MAX_ERROR_MESSAGE_BYTES);
        // Discovery beyond the format's cap is cut, not passed on for the plugin to reject.
        let many: Vec<SocketAddr> = (0..MAX_ENDPOINTS + 10).map(addr).collect();
        s.set_targets(&many);
        assert_eq!(s.counts().total, MAX_ENDPOINTS);
    }
}
