//! The routing memory: what the gateway itself knows about the pool, beyond the pod's metrics.
//!
//! - the approximate prefix index (which pod holds which prompt prefixes);
//! - in-flight requests and prompt tokens per endpoint, counted on the request path, so load the
//!   gateway just dispatched is visible before the next scrape shows it;
//! - the learned bytes-per-token ratio of each model ([`crate::calibration`]), which converts
//!   between the index's blocks of bytes and the pod's tokens.
//!
//! It changes only through [`RoutingEvent`]s, applied deterministically, plus [`RoutingMemory::install`]
//! when a new pool snapshot arrives. The host adapter replicates events through a shared log so that
//! every Envoy worker applies the same events in the same order and holds the same memory. Events
//! name endpoints by address (ids are local to one memory, see [`crate::endpoints`]).

use crate::calibration::Calibration;
use crate::config::{PluginConfig, PrefixSettings};
use crate::endpoints::{EndpointId, EndpointTable, Pool};
use crate::pool::PoolSnapshot;
use crate::prefix::{Correction, PrefixIndex};

pub use crate::events::{DecodeError, EncodeError, MAX_EVENT_HASHES, MAX_RECORD_BYTES, Report, RoutingEvent};

/// Requests and prompt tokens this gateway has sent to an endpoint and not yet seen finish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    pub requests: u32,
    pub prompt_tokens: u64,
}

/// Per-endpoint facts besides the prefix index.
#[derive(Debug, Clone, Default, PartialEq)]
struct EndpointState {
    in_flight: InFlight,
    /// The model the pod serves (its first reported model), for its bytes-per-token ratio.
    model: Option<String>,
}

/// The gateway's own memory of the pool.
#[derive(Debug, Clone)]
pub struct RoutingMemory {
    table: EndpointTable,
    pub prefix: PrefixIndex,
    states: Vec<EndpointState>,
    calibration: Calibration,
    /// Events naming an address the table had no room for (never expected: the table holds twice
    /// the snapshot's bound).
    pub dropped_events: u64,
}

impl RoutingMemory {
    pub fn new(config: &PluginConfig) -> Self {
        Self::with_settings(config.prefix, f64::from(config.limits.chars_per_token.max(1)))
    }

    /// A memory with these prefix settings, starting from `bytes_per_token_guess`.
    pub fn with_settings(settings: PrefixSettings, bytes_per_token_guess: f64) -> Self {
        Self {
            table: EndpointTable::default(),
            prefix: PrefixIndex::new(settings),
            states: Vec::new(),
            calibration: Calibration::new(bytes_per_token_guess),
            dropped_events: 0,
        }
    }

    pub fn table(&self) -> &EndpointTable {
        &self.table
    }

    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    pub fn in_flight(&self, id: EndpointId) -> InFlight {
        self.states.get(id.index()).map(|s| s.in_flight).unwrap_or_default()
    }

    /// In-flight counts of an address (for tests and the decision view).
    pub fn in_flight_of(&self, address: &str) -> InFlight {
        self.table.get(address).map(|id| self.in_flight(id)).unwrap_or_default()
    }

    /// The id of an address, if this memory knows it.
    pub fn id_of(&self, address: &str) -> Option<EndpointId> {
        self.table.get(address)
    }

    /// Bytes per token of the model endpoint `id` serves (learned, else the pool's, else the guess).
    pub fn bytes_per_token_of(&self, id: EndpointId) -> f64 {
        match self.states.get(id.index()).and_then(|s| s.model.as_deref()) {
            Some(model) => self.calibration.bytes_per_token(model),
            None => self.calibration.pool_bytes_per_token(),
        }
    }

    /// Prompt tokens of `prompt_bytes` bytes of text for `model`, at the learned ratio.
    pub fn estimate_tokens(&self, model: &str, prompt_bytes: usize) -> u32 {
        let tokens = prompt_bytes as f64 / self.calibration.bytes_per_token(model);
        if tokens.is_finite() { tokens.ceil().min(f64::from(u32::MAX)) as u32 } else { 0 }
    }

    /// The pod's `cached_tokens` in the index's blocks of bytes, at `model`'s learned ratio.
    pub fn cached_blocks(&self, model: &str, cached_tokens: u32) -> u32 {
        let bytes = f64::from(cached_tokens) * self.calibration.bytes_per_token(model);
        (bytes / self.prefix.settings().block_bytes.max(1) as f64).floor().min(f64::from(u32::MAX)) as u32
    }

    /// The index capacity of an endpoint in blocks, at its current ratio.
    pub fn capacity_blocks(&self, id: EndpointId) -> usize {
        self.prefix.capacity_blocks(id, self.bytes_per_token_of(id))
    }

    /// Applies one event. Deterministic: the same events in the same order give the same memory.
    /// Returns what a report did to the prefix index.
    pub fn apply(&mut self, event: &RoutingEvent) -> Correction {
        match event {
            RoutingEvent::Routed { endpoint, held, hashes, prompt_tokens } => {
                if let Some(id) = self.intern(endpoint) {
                    self.charge(id, *prompt_tokens);
                    let bpt = self.bytes_per_token_of(id);
                    self.prefix.record_held(id, *held, hashes, bpt);
                }
            }
            RoutingEvent::Moved { from, to, hashes, prompt_tokens } => {
                if let Some(id) = self.table.get(from) {
                    self.release(id, *prompt_tokens);
                }
                if let Some(id) = self.intern(to) {
                    self.charge(id, *prompt_tokens);
                    let bpt = self.bytes_per_token_of(id);
                    self.prefix.record(id, hashes, bpt);
                }
            }
            RoutingEvent::Released { endpoint, prompt_tokens } => {
                if let Some(id) = self.table.get(endpoint) {
                    self.release(id, *prompt_tokens);
                }
            }
            RoutingEvent::Reported(report) => return self.apply_report(report),
        }
        Correction::None
    }

    fn apply_report(&mut self, r: &Report) -> Correction {
        if let Some(tokens) = r.prompt_tokens {
            self.calibration.observe(&r.model, r.prompt_bytes, tokens);
        }
        let (Some(cached), Some(id)) = (r.cached_tokens, self.table.get(&r.endpoint)) else {
            return Correction::None;
        };
        let observed = self.cached_blocks(&r.model, cached);
        let bpt = self.bytes_per_token_of(id);
        self.prefix.correct(id, &r.hashes, r.predicted_blocks, observed, bpt)
    }

    /// Follows the pool: forgets endpoints that left it, learns each member's model and sizes its
    /// prefix capacity from its reported KV cache (`num_gpu_blocks × block_size` tokens). Returns the
    /// pool to schedule on, with this memory's ids.
    pub fn install(&mut self, mut snapshot: PoolSnapshot) -> Pool {
        let departed: Vec<EndpointId> = {
            let members: hashbrown::HashSet<&str> = snapshot.endpoints.iter().map(|e| e.address.as_str()).collect();
            self.table.ids().filter(|id| !members.contains(self.table.address(*id))).collect()
        };
        for id in departed {
            self.forget_id(id);
        }
        let mut ids = Vec::with_capacity(snapshot.endpoints.len());
        snapshot.endpoints.retain(|endpoint| match self.intern(&endpoint.address) {
            Some(id) => {
                ids.push(id);
                true
            }
            None => false,
        });
        for (endpoint, &id) in snapshot.endpoints.iter().zip(&ids) {
            self.states[id.index()].model = endpoint.models.first().cloned();
            let tokens = endpoint
                .metrics
                .cache_num_blocks
                .map(|blocks| blocks.saturating_mul(u64::from(endpoint.metrics.cache_block_size.unwrap_or(16).max(1))));
            let bpt = self.bytes_per_token_of(id);
            self.prefix.set_capacity_tokens(id, tokens, bpt);
        }
        Pool::new(snapshot, ids)
    }

    /// Whether two memories hold the same state, endpoint by endpoint (ids may differ between them).
    pub fn same_state_as(&self, other: &RoutingMemory) -> bool {
        if self.calibration != other.calibration || self.table.len() != other.table.len() {
            return false;
        }
        self.table.ids().all(|id| {
            let address = self.table.address(id);
            let Some(theirs) = other.table.get(address) else { return false };
            self.in_flight(id) == other.in_flight(theirs)
                && self.prefix.held(id) == other.prefix.held(theirs)
                && self.prefix.scale(id) == other.prefix.scale(theirs)
        })
    }

    fn intern(&mut self, address: &str) -> Option<EndpointId> {
        match self.table.intern(address) {
            Some(id) => {
                if self.states.len() <= id.index() {
                    self.states.resize_with(id.index() + 1, EndpointState::default);
                }
                Some(id)
            }
            None => {
                self.dropped_events += 1;
                None
            }
        }
    }

    fn forget_id(&mut self, id: EndpointId) {
        self.prefix.remove(id);
        if let Some(state) = self.states.get_mut(id.index()) {
            *state = EndpointState::default();
        }
        self.table.remove(id);
    }

    fn charge(&mut self, id: EndpointId, prompt_tokens: u32) {
        let entry = &mut self.states[id.index()].in_flight;
        entry.requests = entry.requests.saturating_add(1);
        entry.prompt_tokens = entry.prompt_tokens.saturating_add(u64::from(prompt_tokens));
    }

    fn release(&mut self, id: EndpointId, prompt_tokens: u32) {
        if let Some(state) = self.states.get_mut(id.index()) {
            let entry = &mut state.in_flight;
            entry.requests = entry.requests.saturating_sub(1);
            entry.prompt_tokens =
                if entry.requests == 0 { 0 } else { entry.prompt_tokens.saturating_sub(u64::from(prompt_tokens)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Endpoint, EndpointMetrics};

    const A: &str = "10.0.0.1:8000";
    const B: &str = "10.0.0.2:8000";
    const C: &str = "10.0.0.3:8000";

    fn report(endpoint: &str, predicted: u32, cached: Option<u32>) -> RoutingEvent {
        RoutingEvent::Reported(Report {
            endpoint: endpoint.into(),
            model: "m".into(),
            hashes: vec![1, 2, 3],
            predicted_blocks: predicted,
            prompt_bytes: 5_000,
            prompt_tokens: Some(1_000),
            cached_tokens: cached,
        })
    }

    fn events() -> Vec<RoutingEvent> {
        vec![
            RoutingEvent::Routed { endpoint: A.into(), held: 0, hashes: vec![1, 2, 3], prompt_tokens: 40 },
            RoutingEvent::Routed { endpoint: B.into(), held: 0, hashes: vec![9], prompt_tokens: 10 },
            RoutingEvent::Moved { from: B.into(), to: C.into(), hashes: vec![9], prompt_tokens: 10 },
            report(A, 3, Some(48)),
            RoutingEvent::Released { endpoint: A.into(), prompt_tokens: 40 },
        ]
    }

    fn endpoint(address: &str, blocks: Option<u64>) -> Endpoint {
        Endpoint {
            stale: false,
            last_scrape_ms: 1,
            models: vec!["m".into()],
            metrics: EndpointMetrics { cache_block_size: Some(16), cache_num_blocks: blocks, ..Default::default() },
            ..Endpoint::new(address)
        }
    }

    fn snapshot(endpoints: Vec<Endpoint>) -> PoolSnapshot {
        let mut s = PoolSnapshot::empty();
        s.endpoints = endpoints;
        s
    }

    #[test]
    fn two_memories_applying_the_same_events_hold_the_same_state() {
        let config = PluginConfig::default();
        let mut a = RoutingMemory::new(&config);
        let mut b = RoutingMemory::new(&config);
        // b knew the pool first, so its ids differ; the state must not.
        b.install(snapshot(vec![endpoint(C, None), endpoint(B, None), endpoint(A, None)]));
        a.install(snapshot(vec![endpoint(A, None), endpoint(B, None), endpoint(C, None)]));
        for event in events() {
            a.apply(&event);
            b.apply(&event);
        }
        assert!(a.same_state_as(&b));
        assert_eq!(a.in_flight_of(A), InFlight::default());
        assert_eq!(a.in_flight_of(B), InFlight::default());
        assert_eq!(a.in_flight_of(C), InFlight { requests: 1, prompt_tokens: 10 });
        assert_eq!(a.prefix.matched_blocks(&[1, 2, 3], a.id_of(A).unwrap()), 3);
        assert_eq!(a.prefix.matched_blocks(&[9], a.id_of(C).unwrap()), 1);
        a.apply(&RoutingEvent::Routed { endpoint: A.into(), held: 0, hashes: vec![7], prompt_tokens: 1 });
        assert!(!a.same_state_as(&b));
    }

    #[test]
    fn release_never_underflows() {
        let mut m = RoutingMemory::new(&PluginConfig::default());
        m.apply(&RoutingEvent::Released { endpoint: "x".into(), prompt_tokens: 5 });
        assert_eq!(m.in_flight_of("x"), InFlight::default());
    }

    #[test]
    fn pool_changes_forget_departed_endpoints_and_size_capacity_in_bytes() {
        let mut m = RoutingMemory::new(&PluginConfig::default());
        m.apply(&RoutingEvent::Routed { endpoint: A.into(), held: 0, hashes: vec![1, 2, 3], prompt_tokens: 1 });
        m.apply(&RoutingEvent::Routed { endpoint: B.into(), held: 0, hashes: vec![1], prompt_tokens: 1 });
        let pool = m.install(snapshot(vec![endpoint(A, Some(2))]));
        assert_eq!(pool.len(), 1);
        assert_eq!(m.in_flight_of(B), InFlight::default());
        assert_eq!(m.id_of(B), None);
        let a = m.id_of(A).unwrap();
        // 2 KV blocks × 16 tokens × 4 bytes a token (the starting guess) = 128 bytes = 2 blocks.
        assert_eq!(m.prefix.endpoint_len(a), 2, "capacity from the pod's 2 KV blocks");
    }

    #[test]
    fn reports_teach_the_ratio_and_convert_cached_tokens_through_it() {
        let mut m = RoutingMemory::new(&PluginConfig::default());
        m.install(snapshot(vec![endpoint(A, Some(800))]));
        let a = m.id_of(A).unwrap();
        assert_eq!(m.capacity_blocks(a), 800, "4 bytes a token: 800 × 16 × 4 / 64");
        assert_eq!(m.cached_blocks("m", 160), 10);
        // The pod counts 1,000 tokens for 5,000 bytes: 5 bytes a token.
        m.apply(&report(A, 0, None));
        assert_eq!(m.calibration().bytes_per_token("m"), 5.0);
        assert_eq!(m.capacity_blocks(a), 1000, "the same 12,800 tokens hold 1,000 blocks of 64 bytes");
        assert_eq!(m.cached_blocks("m", 160), 12, "160 tokens = 800 bytes = 12.5 blocks");
        assert_eq!(m.estimate_tokens("m", 5_000), 1_000);
    }

    #[test]
    fn a_report_of_nothing_cached_after_a_long_prediction_resets_the_pod() {
        let mut m = RoutingMemory::new(&PluginConfig::default());
        m.apply(&RoutingEvent::Routed {
            endpoint: A.into(),
            held: 0,
            hashes: vec![1, 2, 3, 4, 5, 6],
            prompt_tokens: 1,
        });
        m.apply(&RoutingEvent::Routed { endpoint: A.into(), held: 0, hashes: vec![50], prompt_tokens: 1 });
        let mut reset = report(A, 6, Some(0));
        if let RoutingEvent::Reported(r) = &mut reset {
            r.hashes = vec![1, 2, 3, 4, 5, 6];
        }
        assert_eq!(m.apply(&reset), Correction::Reset);
        assert_eq!(m.prefix.endpoint_len(m.id_of(A).unwrap()), 6);
    }
}
