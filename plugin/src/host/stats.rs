//! Envoy stats through proxy-wasm metrics, as typed handles defined once (after the proxy-wasm SDK's
//! `examples/metrics`). Envoy exposes them with the `wasmcustom.` prefix, e.g.
//! `wasmcustom.wis.decisions`.
//!
//! Nothing here calls the host on the request path: counters and histograms accumulate inside the
//! VM and [`Stats::flush`] hands them to Envoy on the tick (every `pool.refreshIntervalMs`), so a
//! request costs no metric host calls at all; gauges are written on the tick only when they changed.
//! In Service Extensions mode the host has no custom metrics, so no `Stats` exists there.

use super::abi::{self, MetricKind};
use hashbrown::HashMap;

/// Upper bound on per-endpoint stats: an InferencePool is a few hundred pods; the bound keeps pod
/// churn (new IPs) from defining stats forever.
const MAX_ENDPOINT_STATS: usize = 1024;
/// Upper bound on per-model stats.
const MAX_MODEL_STATS: usize = 16;
/// Histogram samples kept per tick; beyond it later samples overwrite earlier ones spread over the
/// buffer (the distribution of a tick of more than this many requests is still well sampled).
const MAX_SAMPLES_PER_TICK: usize = 512;

/// A counter accumulated in the VM.
#[derive(Debug, Default)]
pub struct Counter {
    id: Option<u32>,
    pending: u64,
}

impl Counter {
    fn define(name: &str) -> Self {
        Self { id: abi::define_metric(MetricKind::Counter, name).ok(), pending: 0 }
    }

    pub fn inc(&mut self) {
        self.pending += 1;
    }

    pub fn add(&mut self, n: u64) {
        self.pending = self.pending.saturating_add(n);
    }

    fn flush(&mut self) {
        if let (Some(id), n) = (self.id, std::mem::take(&mut self.pending))
            && n > 0
        {
            let _ = abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// A gauge, written to the host only when its value changed.
#[derive(Debug, Default)]
pub struct Gauge {
    id: Option<u32>,
    value: u64,
    flushed: Option<u64>,
}

impl Gauge {
    fn define(name: &str) -> Self {
        Self { id: abi::define_metric(MetricKind::Gauge, name).ok(), value: 0, flushed: None }
    }

    pub fn set(&mut self, value: u64) {
        self.value = value;
    }

    fn flush(&mut self) {
        if let Some(id) = self.id
            && self.flushed != Some(self.value)
        {
            let _ = abi::record_metric(id, self.value);
            self.flushed = Some(self.value);
        }
    }
}

/// A histogram whose samples wait in the VM for the tick.
#[derive(Debug, Default)]
pub struct Histogram {
    id: Option<u32>,
    samples: Vec<u64>,
    seen: u64,
}

impl Histogram {
    fn define(name: &str) -> Self {
        Self { id: abi::define_metric(MetricKind::Histogram, name).ok(), samples: Vec::new(), seen: 0 }
    }

    pub fn record(&mut self, value: u64) {
        self.seen += 1;
        if self.samples.len() < MAX_SAMPLES_PER_TICK {
            self.samples.push(value);
        } else {
            // A busy tick keeps a spread of its samples rather than only the first ones.
            self.samples[(self.seen as usize).wrapping_mul(7919) % MAX_SAMPLES_PER_TICK] = value;
        }
    }

    fn flush(&mut self) {
        if let Some(id) = self.id {
            for value in self.samples.drain(..) {
                let _ = abi::record_metric(id, value);
            }
        }
        self.seen = 0;
    }
}

/// Declares every fixed stat once: field, kind, Envoy name, and what it means.
macro_rules! stats {
    ($( $(#[doc = $doc:literal])* $field:ident: $kind:ident = $name:literal, )*) => {
        /// Every fixed metric of one VM.
        #[derive(Debug)]
        pub struct Fixed {
            $( $(#[doc = $doc])* pub $field: $kind, )*
        }

        impl Fixed {
            fn define() -> Self {
                Self { $( $field: $kind::define($name), )* }
            }

            fn flush(&mut self) {
                $( self.$field.flush(); )*
            }

            /// (name, kind) of every fixed metric, for docs and tests.
            #[allow(dead_code)]
            pub const NAMES: &'static [(&'static str, &'static str)] = &[ $( ($name, stringify!($kind)), )* ];
        }
    };
}

stats! {
    /// Requests on an inference path that got a routing decision.
    decisions: Counter = "wis.decisions",
    /// Requests not on an inference path, passed through untouched.
    passthrough: Counter = "wis.passthrough",
    /// Decisions where the saturation filter removed every endpoint and all were used instead.
    fell_back_to_all: Counter = "wis.decisions.fell_back_to_all",
    /// Decisions where no member was reachable and the request was routed among all of them.
    no_healthy_endpoint: Counter = "wis.decisions.no_healthy_endpoint",
    /// Decisions whose chosen endpoint's metrics were unknown (chosen on the gateway's own counts).
    unknown_metrics_decisions: Counter = "wis.decisions.unknown_metrics",
    /// Decisions for a prompt no endpoint was known to hold, placed by the conversation's key.
    placed_by_key: Counter = "wis.decisions.placed_by_key",
    /// Local replies by status.
    replies_400: Counter = "wis.local_replies.400",
    replies_404: Counter = "wis.local_replies.404",
    replies_413: Counter = "wis.local_replies.413",
    replies_429: Counter = "wis.local_replies.429",
    replies_500: Counter = "wis.local_replies.500",
    replies_503: Counter = "wis.local_replies.503",
    /// A host call failed on the data path and the request continued without a decision (Envoy's
    /// fallback load balancing, still only pool members).
    fail_open: Counter = "wis.fail_open",
    /// Microseconds from body complete to header set.
    scheduling_us: Histogram = "wis.scheduling_us",
    /// Snapshot hand-off from the scraper.
    snapshot_fetch_ok: Counter = "wis.snapshot.fetch_ok",
    snapshot_fetch_failed: Counter = "wis.snapshot.fetch_failed",
    snapshot_endpoints: Gauge = "wis.snapshot.endpoints",
    snapshot_age_ms: Gauge = "wis.snapshot.age_ms",
    /// Pool members whose metrics are unknown right now (unreadable, or older than the limit).
    endpoints_unknown_metrics: Gauge = "wis.endpoints.unknown_metrics",
    /// Pool members the scraper cannot reach right now.
    endpoints_unhealthy: Gauge = "wis.endpoints.unhealthy",
    /// Routing log replication: records lost (overwritten before read), appends that failed, events
    /// that could not be encoded (never applied anywhere).
    log_lost: Counter = "wis.log.lost",
    log_append_failed: Counter = "wis.log.append_failed",
    log_refused: Counter = "wis.log.refused",
    /// A retry served the request on another endpoint than the primary.
    served_elsewhere: Counter = "wis.served_elsewhere",
    /// Prefix prediction versus what the pod reported (cached_tokens, in index blocks at the learned
    /// bytes per token).
    prefix_predicted_blocks: Counter = "wis.prefix.predicted_blocks",
    prefix_observed_blocks: Counter = "wis.prefix.observed_blocks",
    prefix_prompt_blocks: Counter = "wis.prefix.prompt_blocks",
    /// Responses that reported cached_tokens (closed loop) or did not (open loop: the pod runs
    /// without --enable-prompt-tokens-details, so the index is never corrected).
    prefix_feedback: Counter = "wis.prefix.feedback",
    prefix_no_feedback: Counter = "wis.prefix.no_feedback",
    /// Predicted a hit and the pod had one / predicted a hit and the pod had none.
    prediction_confirmed: Counter = "wis.prefix.prediction_confirmed",
    prediction_wrong: Counter = "wis.prefix.prediction_wrong",
    /// Learned bytes per token × 100 (the pool's, over every model).
    bytes_per_token_x100: Gauge = "wis.prefix.bytes_per_token_x100",
    /// Session tokens issued on responses, and what came back on requests.
    session_issued: Counter = "wis.session.issued",
    session_accepted: Counter = "wis.session.accepted",
    session_invalid: Counter = "wis.session.invalid",
    session_expired: Counter = "wis.session.expired",
    session_endpoint_gone: Counter = "wis.session.endpoint_gone",
}

#[derive(Debug)]
struct EndpointStat {
    decisions: Counter,
    capacity: Gauge,
}

/// Counters and histograms of one VM.
#[derive(Debug)]
pub struct Stats {
    pub fixed: Fixed,
    endpoints: HashMap<Box<str>, EndpointStat>,
    models: HashMap<Box<str>, Gauge>,
}

impl Stats {
    pub fn define() -> Self {
        Self { fixed: Fixed::define(), endpoints: HashMap::new(), models: HashMap::new() }
    }

    pub fn local_reply(&mut self, status: u16) {
        let f = &mut self.fixed;
        match status {
            400 => f.replies_400.inc(),
            404 => f.replies_404.inc(),
            413 => f.replies_413.inc(),
            429 => f.replies_429.inc(),
            503 => f.replies_503.inc(),
            _ => f.replies_500.inc(),
        }
    }

    /// `wis.endpoint.<ip:port>.decisions`: how many requests this VM sent to each endpoint.
    pub fn endpoint_decision(&mut self, address: &str) {
        if let Some(stat) = self.endpoint(address) {
            stat.decisions.inc();
        }
    }

    /// `wis.endpoint.<ip:port>.index_capacity_blocks`: the prefix index's capacity for it.
    pub fn endpoint_capacity(&mut self, address: &str, blocks: u64) {
        if let Some(stat) = self.endpoint(address) {
            stat.capacity.set(blocks);
        }
    }

    /// `wis.model.<name>.bytes_per_token_x100`, the name's non-alphanumerics as `_`.
    pub fn model_bytes_per_token(&mut self, model: &str, x100: u64) {
        if !self.models.contains_key(model) {
            if self.models.len() >= MAX_MODEL_STATS {
                return;
            }
            let name: String = model.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            self.models.insert(model.into(), Gauge::define(&format!("wis.model.{name}.bytes_per_token_x100")));
        }
        if let Some(gauge) = self.models.get_mut(model) {
            gauge.set(x100);
        }
    }

    fn endpoint(&mut self, address: &str) -> Option<&mut EndpointStat> {
        if !self.endpoints.contains_key(address) {
            if self.endpoints.len() >= MAX_ENDPOINT_STATS {
                return None;
            }
            let stat = EndpointStat {
                decisions: Counter::define(&format!("wis.endpoint.{address}.decisions")),
                capacity: Gauge::define(&format!("wis.endpoint.{address}.index_capacity_blocks")),
            };
            self.endpoints.insert(address.into(), stat);
        }
        self.endpoints.get_mut(address)
    }

    /// Hands everything accumulated since the last tick to the host.
    pub fn flush(&mut self) {
        self.fixed.flush();
        for stat in self.endpoints.values_mut() {
            stat.decisions.flush();
            stat.capacity.flush();
        }
        for gauge in self.models.values_mut() {
            gauge.flush();
        }
    }
}
