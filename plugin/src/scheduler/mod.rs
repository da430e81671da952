//! The scheduler, in llm-d's vocabulary: a **profile** runs **filters**, then weighted **scorers**
//! (each a pure function of the request and an endpoint's state, giving a score in [0, 1]), then a
//! **picker** that chooses the primary endpoint and orders the fallbacks.
//!
//! Every plugin type is one line of [`registry::REGISTRY`]; each lives in its own file under
//! `filters/`, `scorers/` or `pickers/`, with its formula in its doc comment. A profile always
//! starts with three built-in filters, then runs the configured ones:
//! - `subset`: a subset hint restricts the candidates (a hint naming no member → 503);
//! - `model`: endpoints that report their served models and serve neither the requested model nor
//!   the requested adapter are skipped (no member serves it → 404 `model_not_found`);
//! - `health`: endpoints the scraper cannot reach are skipped, unless none can be reached, in which
//!   case the request is still routed among all members and Envoy's retries walk the fallbacks
//!   (counted as `no_healthy_endpoint`, never a 503).
//!
//! A pod whose metrics could not be read is not unreachable: it stays a candidate with **unknown
//! metrics** ([`Candidate::metrics_known`]) and the scorers judge it on what the gateway knows itself
//! (its in-flight count, its prefix memory). A sheddable request (priority below zero) is refused
//! with 429 when every candidate is saturated by fresh metrics.

pub mod filters;
pub mod pickers;
mod profile;
pub mod registry;
pub mod scorers;

pub use filters::saturation::SaturationParams;
pub use profile::Scheduler;

use crate::endpoints::{EndpointId, Pool};
use crate::memory::{InFlight, RoutingMemory};
use crate::pool::Endpoint;
use std::fmt;

/// What a decision is made on.
pub struct SchedulingContext<'a> {
    /// Wall clock, Unix milliseconds (metrics staleness is measured against it).
    pub now_ms: u64,
    pub pool: &'a Pool,
    pub memory: &'a RoutingMemory,
    /// Seed for random pickers; the host passes a fresh one per request.
    pub random_seed: u64,
    /// Build the per-endpoint rows of the decision (debug header, decision view). Off on the hot
    /// path: nothing per endpoint is formatted or allocated then.
    pub detail: bool,
}

/// One endpoint as the filters, scorers and pickers see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Position in the pool snapshot.
    pub position: u32,
    pub id: EndpointId,
    pub endpoint: &'a Endpoint,
    /// This gateway's own in-flight requests to it.
    pub in_flight: InFlight,
    /// Leading prompt blocks the prefix index believes it holds.
    pub prefix_matched: u32,
    pub metrics_age_ms: u64,
    /// The pod's metrics were read and are recent; when false they are unknown and scorers rely on
    /// the gateway's own counts.
    pub metrics_known: bool,
    /// A hash of the address, for rendezvous placement (computed once per snapshot).
    pub address_hash: u64,
    /// A hash of the first model the pod reports serving (0: none), so the model filter compares
    /// strings only when the hashes differ (computed once per snapshot).
    pub model_hash: u64,
}

impl Candidate<'_> {
    /// Waiting requests as the gateway best knows them: the pod's reported queue, or what the
    /// gateway has in flight beyond the pod's running batch if that is larger (the pod's metrics lag
    /// what this gateway just dispatched; they include other gateways' traffic, ours does not).
    /// With unknown metrics, everything in flight counts as queued.
    pub fn effective_queue(&self) -> u32 {
        if !self.metrics_known {
            return self.in_flight.requests;
        }
        let m = &self.endpoint.metrics;
        m.waiting_requests.max(self.in_flight.requests.saturating_sub(m.running_requests))
    }

    /// Requests at the pod as every gateway replica sees it alike: its reported running + waiting
    /// (this gateway's in-flight count when the metrics are unknown). What this replica dispatched
    /// since the last scrape is left out on purpose: another replica cannot see it.
    pub fn reported_load(&self) -> u32 {
        if !self.metrics_known {
            return self.in_flight.requests;
        }
        let m = &self.endpoint.metrics;
        m.running_requests.saturating_add(m.waiting_requests)
    }
}

/// Why an endpoint was not a candidate. Formatted only for output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exclusion {
    OutsideSubset,
    WrongModel,
    Unreachable,
    QueueSaturated { queue: u32, threshold: u32 },
    KvCacheSaturated { usage: f64, threshold: f64 },
    MetricsTooOld { age_ms: u64 },
    NeverScraped,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideSubset => f.write_str("not in the subset hint"),
            Self::WrongModel => f.write_str("does not serve the requested model"),
            Self::Unreachable => f.write_str("unhealthy: the scraper cannot reach it"),
            Self::QueueSaturated { queue, threshold } => write!(f, "saturated: queue {queue} ≥ {threshold}"),
            Self::KvCacheSaturated { usage, threshold } => write!(f, "saturated: kv-cache {usage:.2} ≥ {threshold}"),
            Self::MetricsTooOld { age_ms } => write!(f, "saturated: metrics {age_ms} ms old"),
            Self::NeverScraped => f.write_str("saturated: metrics never scraped"),
        }
    }
}

/// Why no endpoint was chosen. Each maps to one reply (see `error.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// The pool has no members at all (503).
    EmptyPool,
    /// The subset hint names no member of the pool (503).
    SubsetNamesNoMember,
    /// No member serves the requested model (404 `model_not_found`).
    ModelNotServed(String),
    /// A sheddable request on a saturated pool (429).
    Shed { priority: i32 },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyPool => f.write_str(
                "the inference pool has no endpoints (no snapshot from the scraper and no static endpoints)",
            ),
            Self::SubsetNamesNoMember => f.write_str("the subset hint names no endpoint of the pool"),
            Self::ModelNotServed(model) => write!(f, "the model '{model}' does not exist in this pool"),
            Self::Shed { priority } => {
                write!(f, "the pool is saturated and this request is sheddable (priority {priority} < 0); retry later")
            }
        }
    }
}

impl std::error::Error for ScheduleError {}

/// A 64-bit mix (splitmix64's finaliser): fast, deterministic everywhere, well spread.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a of a string, for rendezvous hashing of addresses (every replica computes the same).
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
