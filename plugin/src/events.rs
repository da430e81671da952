//! Routing events: the only way the routing memory changes, and their compact binary form in the
//! shared routing log (one record per shared-data slot, see `crate::replication`).

use std::fmt;

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
    ///
    /// `held`: how many leading blocks of the prompt the writer's memory already had at the
    /// endpoint. Then `hashes` starts at the last of them (the anchor) and carries only the blocks
    /// after it; the chain up to the anchor is refreshed from the index itself (each entry knows its
    /// parent). A follow-up turn of a long conversation thus carries a few hashes, not hundreds.
    /// `held == 0`: `hashes` is the whole prompt's.
    Routed { endpoint: String, held: u32, hashes: Vec<u64>, prompt_tokens: u32 },
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
    /// The `Routed` event for a prompt whose `hashes` the endpoint was believed to hold the first
    /// `held` of (see [`RoutingEvent::Routed`]).
    pub fn routed(endpoint: &str, hashes: &[u64], held: u32, prompt_tokens: u32) -> Self {
        let held = held.min(hashes.len() as u32);
        let from = (held as usize).saturating_sub(1);
        Self::Routed { endpoint: endpoint.to_string(), held, hashes: hashes[from..].to_vec(), prompt_tokens }
    }

    /// Compact binary form: a tag byte, then fields; strings as u16 length + UTF-8, hash lists as
    /// u16 count + u64 LE each, integers LE, optional integers as a flag byte + u32. Refuses (rather
    /// than truncates) an event that does not fit, so no worker ever applies less than the writer.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        match self {
            Self::Routed { endpoint, held, hashes, prompt_tokens } => {
                out.push(TAG_ROUTED);
                put_str(&mut out, endpoint, MAX_ADDRESS_BYTES)?;
                out.extend_from_slice(&held.to_le_bytes());
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
            TAG_ROUTED => {
                Self::Routed { endpoint: r.string()?, held: r.u32()?, hashes: r.hashes()?, prompt_tokens: r.u32()? }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "10.0.0.1:8000";
    const B: &str = "10.0.0.2:8000";
    const C: &str = "10.0.0.3:8000";

    pub(crate) fn events() -> Vec<RoutingEvent> {
        vec![
            RoutingEvent::Routed { endpoint: A.into(), held: 0, hashes: vec![1, 2, 3], prompt_tokens: 40 },
            RoutingEvent::Routed { endpoint: B.into(), held: 0, hashes: vec![9], prompt_tokens: 10 },
            RoutingEvent::Moved { from: B.into(), to: C.into(), hashes: vec![9], prompt_tokens: 10 },
            RoutingEvent::Reported(Report {
                endpoint: A.into(),
                model: "m".into(),
                hashes: vec![1, 2, 3],
                predicted_blocks: 3,
                prompt_bytes: 5_000,
                prompt_tokens: Some(1_000),
                cached_tokens: Some(48),
            }),
            RoutingEvent::Released { endpoint: A.into(), prompt_tokens: 40 },
        ]
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
            held: 0,
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
        let too_many = RoutingEvent::Routed {
            endpoint: A.into(),
            held: 0,
            hashes: vec![0; MAX_EVENT_HASHES + 1],
            prompt_tokens: 1,
        };
        assert_eq!(too_many.encode(), Err(EncodeError::TooManyHashes(MAX_EVENT_HASHES + 1)));
        assert_eq!(RoutingEvent::encode_records(&[too_many]).1, 1);
    }

    #[test]
    fn a_routed_event_names_the_held_prefix_by_its_last_block() {
        let hashes: Vec<u64> = (1..=300).collect();
        let RoutingEvent::Routed { held, hashes: carried, .. } = RoutingEvent::routed(A, &hashes, 298, 7) else {
            panic!("not a routed event")
        };
        assert_eq!((held, carried), (298, vec![298, 299, 300]));
        let fresh = RoutingEvent::routed(A, &hashes, 0, 7);
        assert!(matches!(fresh, RoutingEvent::Routed { held: 0, ref hashes, .. } if hashes.len() == 300));
        assert!(matches!(RoutingEvent::routed(A, &[5], 9, 7), RoutingEvent::Routed { held: 1, .. }), "bounded");
        assert!(RoutingEvent::routed(A, &hashes, 298, 7).encode().unwrap().len() < 64, "a few bytes, not 2.4 KB");
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
}
