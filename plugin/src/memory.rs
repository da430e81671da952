//! The routing memory: what the gateway itself knows about the pool, beyond the pod's metrics.
//!
//! - the approximate prefix index (which pod holds which prompt prefixes), and
//! - in-flight requests and prompt tokens per endpoint, counted on the request path, so load the
//!   gateway just dispatched is visible before the next scrape shows it.
//!
//! It changes only through [`RoutingEvent`]s, applied deterministically. The host adapter
//! replicates events through a shared log so that every Envoy worker applies the same events in
//! the same order and holds the same memory.

use crate::config::{PluginConfig, PrefixSettings};
use crate::pool::PoolSnapshot;
use crate::prefix::PrefixIndex;
use hashbrown::HashMap;
use std::fmt;

/// Requests and prompt tokens this gateway has sent to an endpoint and not yet seen finish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    pub requests: u32,
    pub prompt_tokens: u64,
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
    /// The pod reported `observed_blocks` cached where the index predicted `predicted_blocks`.
    CacheObserved { endpoint: String, hashes: Vec<u64>, predicted_blocks: u32, observed_blocks: u32 },
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
const TAG_CACHE_OBSERVED: u8 = 4;
/// Several events in one log record (one append instead of one per event).
const TAG_BATCH: u8 = 5;

/// Most hashes an event carries (the prefix index never hashes more than this per request).
const MAX_EVENT_HASHES: usize = 480;

impl RoutingEvent {
    /// Compact binary form: a tag byte, then fields; strings as u16 length + UTF-8, hash lists as
    /// u16 count + u64 LE each, integers LE.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Self::Routed { endpoint, hashes, prompt_tokens } => {
                out.push(TAG_ROUTED);
                put_str(&mut out, endpoint);
                put_hashes(&mut out, hashes);
                out.extend_from_slice(&prompt_tokens.to_le_bytes());
            }
            Self::Moved { from, to, hashes, prompt_tokens } => {
                out.push(TAG_MOVED);
                put_str(&mut out, from);
                put_str(&mut out, to);
                put_hashes(&mut out, hashes);
                out.extend_from_slice(&prompt_tokens.to_le_bytes());
            }
            Self::Released { endpoint, prompt_tokens } => {
                out.push(TAG_RELEASED);
                put_str(&mut out, endpoint);
                out.extend_from_slice(&prompt_tokens.to_le_bytes());
            }
            Self::CacheObserved { endpoint, hashes, predicted_blocks, observed_blocks } => {
                out.push(TAG_CACHE_OBSERVED);
                put_str(&mut out, endpoint);
                put_hashes(&mut out, hashes);
                out.extend_from_slice(&predicted_blocks.to_le_bytes());
                out.extend_from_slice(&observed_blocks.to_le_bytes());
            }
        }
        out
    }

    /// One log record holding `events`, applied in order: a single event as [`encode`](Self::encode)
    /// writes it; several as a batch tag, a u8 count, then each event as u16 length + bytes.
    /// At most 255 events; more are not written.
    pub fn encode_record(events: &[RoutingEvent]) -> Vec<u8> {
        if let [event] = events {
            return event.encode();
        }
        let events = &events[..events.len().min(u8::MAX as usize)];
        let mut out = vec![TAG_BATCH, events.len() as u8];
        for event in events {
            let bytes = event.encode();
            out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// The events of a log record written by [`encode_record`](Self::encode_record).
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
            TAG_CACHE_OBSERVED => Self::CacheObserved {
                endpoint: r.string()?,
                hashes: r.hashes()?,
                predicted_blocks: r.u32()?,
                observed_blocks: r.u32()?,
            },
            _ => return Err(DecodeError("unknown tag")),
        };
        if r.at != bytes.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(event)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[u64]) {
    let hashes = &hashes[..hashes.len().min(MAX_EVENT_HASHES)];
    out.extend_from_slice(&(hashes.len() as u16).to_le_bytes());
    for h in hashes {
        out.extend_from_slice(&h.to_le_bytes());
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
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError("address is not UTF-8"))
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

/// The gateway's own memory of the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingMemory {
    pub prefix: PrefixIndex,
    in_flight: HashMap<String, InFlight>,
    block_size_tokens: u32,
}

impl RoutingMemory {
    pub fn new(config: &PluginConfig) -> Self {
        Self::with_settings(config.prefix)
    }

    pub fn with_settings(settings: PrefixSettings) -> Self {
        Self {
            prefix: PrefixIndex::new(settings),
            in_flight: HashMap::new(),
            block_size_tokens: settings.block_size_tokens.max(1),
        }
    }

    pub fn in_flight(&self, endpoint: &str) -> InFlight {
        self.in_flight.get(endpoint).copied().unwrap_or_default()
    }

    /// Applies one event. Deterministic: the same events in the same order give the same memory.
    pub fn apply(&mut self, event: &RoutingEvent) {
        match event {
            RoutingEvent::Routed { endpoint, hashes, prompt_tokens } => {
                self.charge(endpoint, *prompt_tokens);
                self.prefix.record(endpoint, hashes);
            }
            RoutingEvent::Moved { from, to, hashes, prompt_tokens } => {
                self.release(from, *prompt_tokens);
                self.charge(to, *prompt_tokens);
                self.prefix.record(to, hashes);
            }
            RoutingEvent::Released { endpoint, prompt_tokens } => self.release(endpoint, *prompt_tokens),
            RoutingEvent::CacheObserved { endpoint, hashes, predicted_blocks, observed_blocks } => {
                self.prefix.correct(endpoint, hashes, *predicted_blocks, *observed_blocks);
            }
        }
    }

    /// Follows the pool: forgets endpoints that left it, sizes each pod's prefix capacity from its
    /// reported KV block count (converted to our block size).
    pub fn observe_pool(&mut self, snapshot: &PoolSnapshot) {
        let members: Vec<&str> = snapshot.endpoints.iter().map(|e| e.address.as_str()).collect();
        self.retain_endpoints(&members);
        for endpoint in &snapshot.endpoints {
            if let Some(blocks) = endpoint.metrics.cache_num_blocks {
                let pod_block = u64::from(endpoint.metrics.cache_block_size.unwrap_or(16).max(1));
                let ours = blocks.saturating_mul(pod_block) / u64::from(self.block_size_tokens);
                self.prefix.set_capacity(&endpoint.address, usize::try_from(ours).unwrap_or(usize::MAX));
            }
        }
    }

    /// Forgets endpoints not in `keep`.
    pub fn retain_endpoints(&mut self, keep: &[&str]) {
        self.in_flight.retain(|e, _| keep.contains(&e.as_str()));
        self.prefix.retain_endpoints(keep);
    }

    fn charge(&mut self, endpoint: &str, prompt_tokens: u32) {
        let entry = self.in_flight.entry(endpoint.to_string()).or_default();
        entry.requests = entry.requests.saturating_add(1);
        entry.prompt_tokens = entry.prompt_tokens.saturating_add(u64::from(prompt_tokens));
    }

    fn release(&mut self, endpoint: &str, prompt_tokens: u32) {
        if let Some(entry) = self.in_flight.get_mut(endpoint) {
            entry.requests = entry.requests.saturating_sub(1);
            entry.prompt_tokens = entry.prompt_tokens.saturating_sub(u64::from(prompt_tokens));
            if entry.requests == 0 {
                self.in_flight.remove(endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<RoutingEvent> {
        vec![
            RoutingEvent::Routed { endpoint: "10.0.0.1:8000".into(), hashes: vec![1, 2, 3], prompt_tokens: 40 },
            RoutingEvent::Routed { endpoint: "10.0.0.2:8000".into(), hashes: vec![9], prompt_tokens: 10 },
            RoutingEvent::Moved {
                from: "10.0.0.2:8000".into(),
                to: "10.0.0.3:8000".into(),
                hashes: vec![9],
                prompt_tokens: 10,
            },
            RoutingEvent::CacheObserved {
                endpoint: "10.0.0.1:8000".into(),
                hashes: vec![1, 2, 3],
                predicted_blocks: 0,
                observed_blocks: 2,
            },
            RoutingEvent::Released { endpoint: "10.0.0.1:8000".into(), prompt_tokens: 40 },
        ]
    }

    #[test]
    fn events_round_trip_through_bytes() {
        for event in events() {
            assert_eq!(RoutingEvent::decode(&event.encode()), Ok(event));
        }
    }

    #[test]
    fn records_carry_one_event_as_itself_or_several_in_order() {
        let all = events();
        let single = RoutingEvent::encode_record(&all[..1]);
        assert_eq!(single, all[0].encode(), "a one-event record is the event");
        assert_eq!(RoutingEvent::decode_record(&single), Ok(all[..1].to_vec()));
        let batch = RoutingEvent::encode_record(&all);
        assert_eq!(RoutingEvent::decode_record(&batch), Ok(all.clone()));
        for cut in 0..batch.len() {
            assert!(RoutingEvent::decode_record(&batch[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = batch.clone();
        longer.push(0);
        assert_eq!(RoutingEvent::decode_record(&longer), Err(DecodeError("trailing bytes")));
    }

    #[test]
    fn truncated_and_garbage_bytes_are_rejected() {
        for event in events() {
            let bytes = event.encode();
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
    fn two_memories_applying_the_same_events_are_equal() {
        let config = PluginConfig::default();
        let mut a = RoutingMemory::new(&config);
        let mut b = RoutingMemory::new(&config);
        for event in events() {
            a.apply(&event);
            b.apply(&event);
        }
        assert_eq!(a, b);
        assert_eq!(a.in_flight("10.0.0.1:8000"), InFlight::default());
        assert_eq!(a.in_flight("10.0.0.2:8000"), InFlight::default());
        assert_eq!(a.in_flight("10.0.0.3:8000"), InFlight { requests: 1, prompt_tokens: 10 });
        assert_eq!(a.prefix.matched_blocks(&[1, 2, 3], "10.0.0.1:8000"), 3);
        assert_eq!(a.prefix.matched_blocks(&[9], "10.0.0.3:8000"), 1);
    }

    #[test]
    fn release_never_underflows() {
        let mut m = RoutingMemory::new(&PluginConfig::default());
        m.apply(&RoutingEvent::Released { endpoint: "x".into(), prompt_tokens: 5 });
        assert_eq!(m.in_flight("x"), InFlight::default());
    }

    #[test]
    fn pool_changes_forget_departed_endpoints_and_size_capacity() {
        let mut m = RoutingMemory::new(&PluginConfig::default());
        m.apply(&RoutingEvent::Routed { endpoint: "10.0.0.1:8000".into(), hashes: vec![1, 2, 3], prompt_tokens: 1 });
        m.apply(&RoutingEvent::Routed { endpoint: "10.0.0.2:8000".into(), hashes: vec![1], prompt_tokens: 1 });
        let mut snapshot = PoolSnapshot::empty();
        let json = r#"{"address":"10.0.0.1:8000","healthy":true,"last_scrape_ms":1,
            "metrics":{"waiting_requests":0,"running_requests":0,"kv_cache_usage":0,"cache_block_size":16,"cache_num_blocks":2}}"#;
        snapshot.endpoints.push(serde_json::from_str(json).unwrap());
        m.observe_pool(&snapshot);
        assert_eq!(m.in_flight("10.0.0.2:8000"), InFlight::default());
        assert_eq!(m.prefix.endpoint_len("10.0.0.2:8000"), 0);
        assert_eq!(m.prefix.endpoint_len("10.0.0.1:8000"), 2, "capacity from the pod's 2 KV blocks");
    }
}
