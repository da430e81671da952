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
use std::fmt;

/// Requests and prompt tokens this gateway has sent to an endpoint and not yet seen finish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    pub requests: u32,
    pub prompt_tokens: u64,
}

/// What a pod reported on a response, with what the gateway predicted for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub endpoint: String,
    pub model: String,
    /// The prompt's block hashes, carried only when the report may reveal a cache reset (nothing
    /// cached after a long prediction): then the pod holds this prompt and nothing else.
    pub hashes: Vec<u64>,
    pub predicted_blocks: u32,
    /// UTF-8 bytes of prompt text the plugin read.
    pub prompt_bytes: u32,
    /// `usage.prompt_tokens`, when reported.
    pub prompt_tokens: Option<u32>,
    /// `usage.prompt_tokens_details.cached_tokens`, when reported.
    pub cached_tokens: Option<u32>,
}

/// A change to the routing memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingEvent {
    /// A request was sent to `endpoint`: count it in flight, record its prefix there.
    Routed { endpoint: String, hashes: Vec<u64>, prompt_tokens: u32 },
    /// A retry served it on `to` instead of `from`: move the in-flight count and the prefix.
    Moved { from: String, to: String, hashes: Vec<u64>, prompt_tokens: u32 },
    /// The request finished (or was reset).
    Released { endpoint: String, prompt_tokens: u32 },
    /// The pod's usage report: calibrates bytes per token and corrects the prefix index.
    Reported(Report),
}

/// Bytes that are not an encoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed routing event: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

const TAG_ROUTED: u8 = 1;
const TAG_MOVED: u8 = 2;
const TAG_RELEASED: u8 = 3;
/// Several events in one log record (one append instead of one per event).
const TAG_BATCH: u8 = 5;
const TAG_REPORTED: u8 = 6;

/// Largest encoded log record: one shared-data slot ([`crate::shared_log::MAX_EVENT_BYTES`]).
pub const MAX_RECORD_BYTES: usize = crate::shared_log::MAX_EVENT_BYTES;

/// Most block hashes one event carries: a record of [`MAX_RECORD_BYTES`] holds one event with this
/// many hashes, its addresses and counters. `maxPrefixBlocksToMatch` is capped at it, so every
/// event the scheduler produces fits, and every worker applies exactly what was routed.
pub const MAX_EVENT_HASHES: usize = 480;

/// Longest address an event carries (an IPv6 `[addr]:port` is at most 47 bytes).
const MAX_ADDRESS_BYTES: usize = 64;

/// An event that cannot be encoded without changing its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    TooManyHashes(usize),
    AddressTooLong(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyHashes(n) => write!(f, "routing event carries {n} hashes, more than {MAX_EVENT_HASHES}"),
            Self::AddressTooLong(n) => {
                write!(f, "routing event address of {n} bytes is longer than {MAX_ADDRESS_BYTES}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

impl RoutingEvent {
    /// Compact binary form: a tag byte, then fields; strings as u16 length + UTF-8, hash lists as
    /// u16 count + u64 LE each, integers LE, optional integers as a flag byte + u32. Refuses (rather
    /// than truncates) an event that does not fit, so no worker ever applies less than the writer.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        match self {
            Self::Routed { endpoint, hashes, prompt_tokens } => {
                out.push(TAG_ROUTED);
                put_str(&mut out, endpoint, MAX_ADDRESS_BYTES)?;
                put_hashes(&mut out, hashes)?;
                out.extend_from_slice(&prompt_tokens.to_le_bytes());
            }
            Self::Moved { from, to, hashes, prompt_tokens } => {
                out.push(TAG_MOVED);
                put_str(&mut out, from, MAX_ADDRESS_BYTES)?;
                put_str(&mut out, to, MAX_ADDRESS_BYTES)?;
                put_hashes(&mut out, hashes)?;
                out.extend_from_slice(&prompt_tokens.to_le_bytes());
            }
            Self::Released { endpoint, prompt_tokens } => {
                out.push(TAG_RELEASED);
                put_str(&mut out, endpoint, MAX_ADDRESS_BYTES)?;
                out.extend_from_slice(&prompt_tokens.to_le_bytes());
            }
            Self::Reported(r) => {
                out.push(TAG_REPORTED);
                put_str(&mut out, &r.endpoint, MAX_ADDRESS_BYTES)?;
                put_str(&mut out, &r.model, crate::calibration::MAX_MODEL_NAME_BYTES)?;
                put_hashes(&mut out, &r.hashes)?;
                out.extend_from_slice(&r.predicted_blocks.to_le_bytes());
                out.extend_from_slice(&r.prompt_bytes.to_le_bytes());
                put_opt(&mut out, r.prompt_tokens);
                put_opt(&mut out, r.cached_tokens);
            }
        }
        Ok(out)
    }

    /// Log records holding `events` in order, each at most [`MAX_RECORD_BYTES`]: a single event as
    /// [`encode`](Self::encode) writes it; several as a batch tag, a u8 count, then each event as
    /// u16 length + bytes. Events that cannot be encoded are returned apart (the caller applies
    /// nothing of them anywhere and counts them).
    pub fn encode_records(events: &[RoutingEvent]) -> (Vec<Vec<u8>>, usize) {
        let mut records = Vec::new();
        let mut refused = 0;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 2;
        let flush = |batch: &mut Vec<Vec<u8>>, records: &mut Vec<Vec<u8>>| match batch.len() {
            0 => {}
            1 => records.append(batch),
            n => {
                let mut out = vec![TAG_BATCH, n as u8];
                for event in batch.drain(..) {
                    out.extend_from_slice(&(event.len() as u16).to_le_bytes());
                    out.extend_from_slice(&event);
                }
                records.push(out);
            }
        };
        for event in events {
            let Ok(bytes) = event.encode() else {
                refused += 1;
                continue;
            };
            if bytes.len() > MAX_RECORD_BYTES {
                refused += 1;
                continue;
            }
            if !batch.is_empty() && (batch_bytes + 2 + bytes.len() > MAX_RECORD_BYTES || batch.len() == 255) {
                flush(&mut batch, &mut records);
                batch_bytes = 2;
            }
            batch_bytes += 2 + bytes.len();
            batch.push(bytes);
        }
        flush(&mut batch, &mut records);
        (records, refused)
    }

    /// The events of a log record written by [`encode_records`](Self::encode_records).
    pub fn decode_record(bytes: &[u8]) -> Result<Vec<Self>, DecodeError> {
        if bytes.first() != Some(&TAG_BATCH) {
            return Self::decode(bytes).map(|event| vec![event]);
        }
        let mut r = Reader { bytes, at: 1 };
        let count = r.u8()?;
        let mut events = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = r.u16()? as usize;
            events.push(Self::decode(r.take(len)?)?);
        }
        if r.at != bytes.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(events)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let event = match r.u8()? {
            TAG_ROUTED => Self::Routed { endpoint: r.string()?, hashes: r.hashes()?, prompt_tokens: r.u32()? },
            TAG_MOVED => {
                Self::Moved { from: r.string()?, to: r.string()?, hashes: r.hashes()?, prompt_tokens: r.u32()? }
            }
            TAG_RELEASED => Self::Released { endpoint: r.string()?, prompt_tokens: r.u32()? },
            TAG_REPORTED => Self::Reported(Report {
                endpoint: r.string()?,
                model: r.string()?,
                hashes: r.hashes()?,
                predicted_blocks: r.u32()?,
                prompt_bytes: r.u32()?,
                prompt_tokens: r.opt()?,
                cached_tokens: r.opt()?,
            }),
            _ => return Err(DecodeError("unknown tag")),
        };
        if r.at != bytes.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(event)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str, max: usize) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError::AddressTooLong(s.len()));
    }
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[u64]) -> Result<(), EncodeError> {
    if hashes.len() > MAX_EVENT_HASHES {
        return Err(EncodeError::TooManyHashes(hashes.len()));
    }
    out.extend_from_slice(&(hashes.len() as u16).to_le_bytes());
    for h in hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

fn put_opt(out: &mut Vec<u8>, value: Option<u32>) {
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let slice = self.bytes.get(self.at..self.at + n).ok_or(DecodeError("truncated"))?;
        self.at += n;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| DecodeError("truncated"))?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| DecodeError("truncated"))?))
    }
    fn opt(&mut self) -> Result<Option<u32>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u32()?)),
            _ => Err(DecodeError("bad option flag")),
        }
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }
    fn hashes(&mut self) -> Result<Vec<u64>, DecodeError> {
        let count = self.u16()? as usize;
        if count > MAX_EVENT_HASHES {
            return Err(DecodeError("too many hashes"));
        }
        let raw = self.take(count * 8)?;
        Ok(raw.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
    }
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
            RoutingEvent::Routed { endpoint, hashes, prompt_tokens } => {
                if let Some(id) = self.intern(endpoint) {
                    self.charge(id, *prompt_tokens);
                    let bpt = self.bytes_per_token_of(id);
                    self.prefix.record(id, hashes, bpt);
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
            RoutingEvent::Routed { endpoint: A.into(), hashes: vec![1, 2, 3], prompt_tokens: 40 },
            RoutingEvent::Routed { endpoint: B.into(), hashes: vec![9], prompt_tokens: 10 },
            RoutingEvent::Moved { from: B.into(), to: C.into(), hashes: vec![9], prompt_tokens: 10 },
            report(A, 3, Some(48)),
            RoutingEvent::Released { endpoint: A.into(), prompt_tokens: 40 },
        ]
    }

    fn endpoint(address: &str, blocks: Option<u64>) -> Endpoint {
        Endpoint {
            address: address.into(),
            healthy: true,
            stale: false,
            last_scrape_ms: 1,
            consecutive_failures: 0,
            models: vec!["m".into()],
            metrics: EndpointMetrics { cache_block_size: Some(16), cache_num_blocks: blocks, ..Default::default() },
            last_error: None,
        }
    }

    fn snapshot(endpoints: Vec<Endpoint>) -> PoolSnapshot {
        let mut s = PoolSnapshot::empty();
        s.endpoints = endpoints;
        s
    }

    #[test]
    fn events_round_trip_through_bytes() {
        for event in events() {
            assert_eq!(RoutingEvent::decode(&event.encode().unwrap()), Ok(event));
        }
    }

    #[test]
    fn records_carry_one_event_as_itself_or_several_in_order() {
        let all = events();
        let (single, _) = RoutingEvent::encode_records(&all[..1]);
        assert_eq!(single, vec![all[0].encode().unwrap()], "a one-event record is the event");
        let (batch, refused) = RoutingEvent::encode_records(&all);
        assert_eq!((batch.len(), refused), (1, 0));
        assert_eq!(RoutingEvent::decode_record(&batch[0]), Ok(all.clone()));
        for cut in 0..batch[0].len() {
            assert!(RoutingEvent::decode_record(&batch[0][..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = batch[0].clone();
        longer.push(0);
        assert_eq!(RoutingEvent::decode_record(&longer), Err(DecodeError("trailing bytes")));
    }

    #[test]
    fn records_split_rather_than_exceed_a_slot_and_refuse_what_cannot_fit() {
        let big = |e: &str| RoutingEvent::Routed {
            endpoint: e.into(),
            hashes: (0..MAX_EVENT_HASHES as u64).collect(),
            prompt_tokens: 1,
        };
        let (records, refused) = RoutingEvent::encode_records(&[big(A), big(B), events()[4].clone()]);
        assert_eq!(refused, 0);
        assert!(records.len() >= 2);
        assert!(records.iter().all(|r| r.len() <= MAX_RECORD_BYTES));
        let decoded: Vec<RoutingEvent> = records.iter().flat_map(|r| RoutingEvent::decode_record(r).unwrap()).collect();
        assert_eq!(decoded, vec![big(A), big(B), events()[4].clone()]);
        let too_many =
            RoutingEvent::Routed { endpoint: A.into(), hashes: vec![0; MAX_EVENT_HASHES + 1], prompt_tokens: 1 };
        assert_eq!(too_many.encode(), Err(EncodeError::TooManyHashes(MAX_EVENT_HASHES + 1)));
        assert_eq!(RoutingEvent::encode_records(&[too_many]).1, 1);
    }

    #[test]
    fn truncated_and_garbage_bytes_are_rejected() {
        for event in events() {
            let bytes = event.encode().unwrap();
            for cut in 0..bytes.len() {
                assert!(RoutingEvent::decode(&bytes[..cut]).is_err(), "cut at {cut} of {event:?}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(RoutingEvent::decode(&longer), Err(DecodeError("trailing bytes")));
        }
        assert_eq!(RoutingEvent::decode(&[99]), Err(DecodeError("unknown tag")));
        assert_eq!(RoutingEvent::decode(&[TAG_ROUTED, 0xff, 0xff]), Err(DecodeError("truncated")));
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
        a.apply(&RoutingEvent::Routed { endpoint: A.into(), hashes: vec![7], prompt_tokens: 1 });
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
        m.apply(&RoutingEvent::Routed { endpoint: A.into(), hashes: vec![1, 2, 3], prompt_tokens: 1 });
        m.apply(&RoutingEvent::Routed { endpoint: B.into(), hashes: vec![1], prompt_tokens: 1 });
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
        m.apply(&RoutingEvent::Routed { endpoint: A.into(), hashes: vec![1, 2, 3, 4, 5, 6], prompt_tokens: 1 });
        m.apply(&RoutingEvent::Routed { endpoint: A.into(), hashes: vec![50], prompt_tokens: 1 });
        let mut reset = report(A, 6, Some(0));
        if let RoutingEvent::Reported(r) = &mut reset {
            r.hashes = vec![1, 2, 3, 4, 5, 6];
        }
        assert_eq!(m.apply(&reset), Correction::Reset);
        assert_eq!(m.prefix.endpoint_len(m.id_of(A).unwrap()), 6);
    }
}
