//! The pool as the scraper last saw it, and the snapshot documents made from it.
//!
//! Per endpoint:
//! - a scrape that succeeds stores its reading, sets `last_scrape_ms`, clears `stale` and the
//!   failure count, and makes the endpoint `healthy`;
//! - a scrape that fails keeps the last reading, sets `stale`, counts `consecutive_failures`, and
//!   after `unhealthy_after` failures in a row (default 3, i.e. 150 ms at the default 50 ms
//!   interval: one lost scrape is a blip, three are a pod in trouble) sets `healthy` to false;
//! - an endpoint never scraped successfully is `stale` and not `healthy`;
//! - an endpoint that leaves discovery is dropped at once, with its history.
//!
//! Every generated snapshot carries the next `sequence` (monotonic for the process).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use wasm_inference_scheduler::pool::{Endpoint, EndpointMetrics, Engine, FORMAT_VERSION, MAX_ENDPOINTS, PoolSnapshot};

use crate::vocab::Reading;

/// Default number of consecutive failed scrapes after which an endpoint is reported unhealthy.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;

/// Counts of endpoints by state, for the scraper's own metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointCounts {
    pub total: usize,
    pub healthy: usize,
    pub stale: usize,
}

#[derive(Debug, Clone)]
struct Record {
    endpoint: Endpoint,
    last_error: Option<String>,
    /// At least one scrape finished (either way).
    attempted: bool,
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
                    last_error: None,
                    attempted: false,
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
            r.last_error = None;
            r.attempted = true;
        }
    }

    /// Marks a failed scrape. Returns true when this failure turned the endpoint unhealthy
    /// (so the caller logs transitions, not every failure).
    pub fn record_failure(&mut self, addr: SocketAddr, error: String) -> bool {
        let Some(r) = self.records.get_mut(&addr) else { return false };
        r.attempted = true;
        r.endpoint.stale = true;
        r.endpoint.consecutive_failures = r.endpoint.consecutive_failures.saturating_add(1);
        let was_healthy = r.endpoint.healthy;
        if r.endpoint.consecutive_failures >= self.unhealthy_after {
            r.endpoint.healthy = false;
        }
        r.last_error = Some(error);
        was_healthy && !r.endpoint.healthy
    }

    /// The last scrape error of an endpoint, if its latest scrape failed.
    pub fn last_error(&self, addr: &SocketAddr) -> Option<&str> {
        self.records.get(addr).and_then(|r| r.last_error.as_deref())
    }

    /// Discovery has answered once and every endpoint it listed has been scraped once: the first
    /// snapshot worth serving (before it, every endpoint would read as unscraped and unhealthy).
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
        for r in self.records.values() {
            c.healthy += usize::from(r.endpoint.healthy);
            c.stale += usize::from(r.endpoint.stale);
        }
        c
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

    #[test]
    fn failed_scrape_keeps_last_values_and_marks_stale_then_unhealthy() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        s.set_targets(&[addr(1)]);
        s.record_success(addr(1), reading(7), 1_000);
        assert!(!s.record_failure(addr(1), "timeout".into()));
        let e = s.snapshot(1_050).endpoints[0].clone();
        assert!(e.stale && e.healthy, "one failure: stale but still healthy");
        assert_eq!((e.metrics.waiting_requests, e.last_scrape_ms, e.consecutive_failures), (7, 1_000, 1));
        assert!(!s.record_failure(addr(1), "timeout".into()));
        assert!(s.record_failure(addr(1), "timeout".into()), "third failure is the transition");
        let e = s.snapshot(1_150).endpoints[0].clone();
        assert!(e.stale && !e.healthy);
        assert_eq!(e.metrics.waiting_requests, 7);
        assert_eq!(s.last_error(&addr(1)), Some("timeout"));
        s.record_success(addr(1), reading(2), 1_200);
        let e = s.snapshot(1_200).endpoints[0].clone();
        assert!(!e.stale && e.healthy && e.consecutive_failures == 0);
    }

    #[test]
    fn never_scraped_endpoint_is_stale_and_unhealthy() {
        let mut s = PoolState::new(Engine::Vllm, 3);
        s.set_targets(&[addr(1)]);
        let e = &s.snapshot(5).endpoints[0];
        assert!(e.stale && !e.healthy && e.last_scrape_ms == 0);
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
        s.record_failure(addr(2), "refused".into());
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
        // Discovery beyond the format's cap is cut, not passed on for the plugin to reject.
        let many: Vec<SocketAddr> = (0..MAX_ENDPOINTS + 10).map(addr).collect();
        s.set_targets(&many);
        assert_eq!(s.counts().total, MAX_ENDPOINTS);
    }
}
