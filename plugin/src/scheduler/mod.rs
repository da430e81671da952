//! The scheduler, in llm-d's vocabulary: a **profile** runs **filters**, then weighted **scorers**
//! (each a pure function of the request and an endpoint's state, giving a score in [0, 1]), then a
//! **picker** that chooses the primary endpoint and orders the fallbacks.
//!
//! Before the profile, three rules always apply: unhealthy endpoints are never candidates; a subset
//! hint restricts the candidates; endpoints that report their served models and do not serve the
//! requested base model are skipped. A sheddable request (priority below zero) is refused with 429
//! when every candidate is saturated by fresh metrics.

mod pickers;
mod profile;
mod saturation;
mod scorers;

pub use profile::Scheduler;
pub use saturation::SaturationParams;

use crate::memory::{InFlight, RoutingMemory};
use crate::pool::{Endpoint, PoolSnapshot};
use std::fmt;

/// What a decision is made on.
pub struct SchedulingContext<'a> {
    /// Wall clock, Unix milliseconds (metrics staleness is measured against it).
    pub now_ms: u64,
    pub snapshot: &'a PoolSnapshot,
    pub memory: &'a RoutingMemory,
    /// Seed for random pickers; the host passes a fresh one per request.
    pub random_seed: u64,
}

/// One endpoint as the scorers see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub endpoint: &'a Endpoint,
    /// This gateway's own in-flight requests to it.
    pub in_flight: InFlight,
    /// Leading prompt blocks the prefix index believes it holds.
    pub prefix_matched: u32,
    pub metrics_age_ms: u64,
}

impl Candidate<'_> {
    /// Waiting requests as the gateway best knows them: the pod's reported queue, or what the
    /// gateway has in flight beyond the pod's running batch if that is larger (the pod's metrics lag
    /// what this gateway just dispatched; they include other gateways' traffic, ours does not).
    pub fn effective_queue(&self) -> u32 {
        let m = &self.endpoint.metrics;
        m.waiting_requests.max(self.in_flight.requests.saturating_sub(m.running_requests))
    }
}

/// Why no endpoint was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// No ready endpoint can take the request (503).
    NoEndpoints(String),
    /// A sheddable request on a saturated pool (429).
    Shed(String),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEndpoints(why) | Self::Shed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ScheduleError {}

const SESSION_TOKEN_PREFIX: &str = "wis1.";

/// The session token returned on responses: opaque, URL-safe, names the serving endpoint.
pub fn encode_session_token(address: &str) -> String {
    let mut token = String::with_capacity(SESSION_TOKEN_PREFIX.len() + address.len() * 2);
    token.push_str(SESSION_TOKEN_PREFIX);
    for b in address.bytes() {
        token.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        token.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    token
}

/// The endpoint a session token names, if the token is one of ours and names an address.
pub fn decode_session_token(token: &str) -> Option<String> {
    let hex = token.trim().strip_prefix(SESSION_TOKEN_PREFIX)?;
    if hex.len() % 2 != 0 || hex.len() > 128 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    let address = String::from_utf8(bytes?).ok()?;
    address.parse::<std::net::SocketAddr>().ok()?;
    Some(address)
}

/// A 64-bit mix (splitmix64's finaliser): fast, deterministic everywhere, well spread.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a of a string, for rendezvous hashing of addresses.
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_round_trip_and_reject_forgeries() {
        let token = encode_session_token("10.0.0.7:8000");
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
        assert_eq!(decode_session_token(&token).as_deref(), Some("10.0.0.7:8000"));
        assert_eq!(decode_session_token("10.0.0.7:8000"), None);
        assert_eq!(decode_session_token("wis1.zz"), None);
        assert_eq!(decode_session_token(&encode_session_token("not-an-address")), None);
    }
}
