//! The picker's own metrics, rendered in Prometheus text on the metrics port (`GET /metrics`).
//!
//! Counters are atomics, written on the request path without a lock; the per-endpoint decision
//! counts sit behind a mutex taken once per decision (the pool is a few hundred endpoints at most,
//! and departed endpoints are dropped when the page is rendered).

use crate::core::PoolCounts;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the scheduling-time histogram, in microseconds: a decision takes tens of µs,
/// a long prompt's hashing a few hundred.
const SCHEDULING_BOUNDS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// Statuses of the local replies the core sends (anything else is counted as `other`).
const REPLY_STATUSES: [u16; 6] = [400, 404, 413, 429, 500, 503];

#[derive(Debug, Default)]
pub struct Stats {
    streams: AtomicU64,
    decisions: AtomicU64,
    fell_back_to_all: AtomicU64,
    passthrough: AtomicU64,
    fail_open: AtomicU64,
    replies: [AtomicU64; REPLY_STATUSES.len()],
    replies_other: AtomicU64,
    released: AtomicU64,
    served_elsewhere: AtomicU64,
    scheduling_buckets: [AtomicU64; SCHEDULING_BOUNDS_US.len()],
    scheduling_count: AtomicU64,
    scheduling_sum_us: AtomicU64,
    prefix_feedback: AtomicU64,
    prefix_no_feedback: AtomicU64,
    prefix_predicted_blocks: AtomicU64,
    prefix_observed_blocks: AtomicU64,
    prefix_prompt_blocks: AtomicU64,
    prefix_confirmed: AtomicU64,
    prefix_wrong: AtomicU64,
    endpoint_decisions: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn stream(&self) {
        self.streams.fetch_add(1, Relaxed);
    }

    pub fn decision(&self, endpoint: &str, fell_back_to_all: bool, took: Duration) {
        self.decisions.fetch_add(1, Relaxed);
        if fell_back_to_all {
            self.fell_back_to_all.fetch_add(1, Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.scheduling_count.fetch_add(1, Relaxed);
        self.scheduling_sum_us.fetch_add(us, Relaxed);
        for (bucket, bound) in self.scheduling_buckets.iter().zip(SCHEDULING_BOUNDS_US) {
            if us <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        let mut per_endpoint = self.endpoint_decisions.lock().unwrap_or_else(|p| p.into_inner());
        match per_endpoint.get_mut(endpoint) {
            Some(n) => *n += 1,
            None => {
                per_endpoint.insert(endpoint.to_string(), 1);
            }
        }
    }

    pub fn passthrough(&self) {
        self.passthrough.fetch_add(1, Relaxed);
    }

    pub fn fail_open(&self) {
        self.fail_open.fetch_add(1, Relaxed);
    }

    pub fn local_reply(&self, status: u16) {
        match REPLY_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.replies[i].fetch_add(1, Relaxed),
            None => self.replies_other.fetch_add(1, Relaxed),
        };
    }

    pub fn released(&self) {
        self.released.fetch_add(1, Relaxed);
    }

    pub fn served_elsewhere(&self) {
        self.served_elsewhere.fetch_add(1, Relaxed);
    }

    pub fn no_feedback(&self) {
        self.prefix_no_feedback.fetch_add(1, Relaxed);
    }

    pub fn feedback(&self, predicted: u32, observed: u32, prompt_blocks: usize) {
        self.prefix_feedback.fetch_add(1, Relaxed);
        self.prefix_predicted_blocks.fetch_add(u64::from(predicted), Relaxed);
        self.prefix_observed_blocks.fetch_add(u64::from(observed), Relaxed);
        self.prefix_prompt_blocks.fetch_add(prompt_blocks as u64, Relaxed);
        if predicted > 0 {
            if observed > 0 { &self.prefix_confirmed } else { &self.prefix_wrong }.fetch_add(1, Relaxed);
        }
    }

    pub fn decisions(&self) -> u64 {
        self.decisions.load(Relaxed)
    }

    /// The Prometheus text page: these counters, the pool's state, then the scraper's own metrics.
    pub fn render(&self, pool: &PoolCounts, members: &[String], ready: bool) -> String {
        let mut o = String::with_capacity(4096);
        let counter = |o: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        let gauge = |o: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        counter(&mut o, "wis_epp_streams_total", "ext_proc streams opened by the proxy.", self.streams.load(Relaxed));
        counter(&mut o, "wis_epp_decisions_total", "Requests routed by the scheduler.", self.decisions.load(Relaxed));
        counter(
            &mut o,
            "wis_epp_decisions_fell_back_to_all_total",
            "Decisions where every endpoint was filtered out, so all were used.",
            self.fell_back_to_all.load(Relaxed),
        );
        counter(
            &mut o,
            "wis_epp_passthrough_total",
            "Requests on paths that are not scheduled (left to the proxy's fallback policy).",
            self.passthrough.load(Relaxed),
        );
        counter(
            &mut o,
            "wis_epp_fail_open_total",
            "Inference requests continued without a decision (the proxy's fallback policy picks).",
            self.fail_open.load(Relaxed),
        );
        let _ =
            writeln!(o, "# HELP wis_epp_local_replies_total Immediate responses sent instead of routing, by status.");
        let _ = writeln!(o, "# TYPE wis_epp_local_replies_total counter");
        for (status, n) in REPLY_STATUSES.iter().zip(&self.replies) {
            let _ = writeln!(o, "wis_epp_local_replies_total{{status=\"{status}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(o, "wis_epp_local_replies_total{{status=\"other\"}} {}", self.replies_other.load(Relaxed));
        counter(
            &mut o,
            "wis_epp_released_total",
            "Routed requests whose in-flight count was released (stream ended or reset).",
            self.released.load(Relaxed),
        );
        counter(
            &mut o,
            "wis_epp_served_elsewhere_total",
            "Requests the proxy served on another endpoint than the primary (a retry).",
            self.served_elsewhere.load(Relaxed),
        );
        let _ = writeln!(o, "# HELP wis_epp_scheduling_duration_microseconds Time to parse and schedule one request.");
        let _ = writeln!(o, "# TYPE wis_epp_scheduling_duration_microseconds histogram");
        for (bound, n) in SCHEDULING_BOUNDS_US.iter().zip(&self.scheduling_buckets) {
            let _ =
                writeln!(o, "wis_epp_scheduling_duration_microseconds_bucket{{le=\"{bound}\"}} {}", n.load(Relaxed));
        }
        let count = self.scheduling_count.load(Relaxed);
        let _ = writeln!(o, "wis_epp_scheduling_duration_microseconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "wis_epp_scheduling_duration_microseconds_sum {}", self.scheduling_sum_us.load(Relaxed));
        let _ = writeln!(o, "wis_epp_scheduling_duration_microseconds_count {count}");
        counter(
            &mut o,
            "wis_epp_prefix_feedback_total",
            "Responses that reported cached_tokens.",
            self.prefix_feedback.load(Relaxed),
        );
        counter(
            &mut o,
            "wis_epp_prefix_no_feedback_total",
            "Responses without cached_tokens (pods without --enable-prompt-tokens-details: open loop).",
            self.prefix_no_feedback.load(Relaxed),
        );
        counter(
            &mut o,
            "wis_epp_prefix_predicted_blocks_total",
            "Prompt blocks the prefix index predicted cached on the serving pod.",
            self.prefix_predicted_blocks.load(Relaxed),
        );
        counter(
            &mut o,
            "wis_epp_prefix_observed_blocks_total",
            "Prompt blocks the pods reported cached.",
            self.prefix_observed_blocks.load(Relaxed),
        );
        counter(
            &mut o,
            "wis_epp_prefix_prompt_blocks_total",
            "Prompt blocks of the requests with feedback.",
            self.prefix_prompt_blocks.load(Relaxed),
        );
        let _ = writeln!(o, "# HELP wis_epp_prefix_predictions_total Predicted hits the pod confirmed or denied.");
        let _ = writeln!(o, "# TYPE wis_epp_prefix_predictions_total counter");
        let _ = writeln!(
            o,
            "wis_epp_prefix_predictions_total{{outcome=\"confirmed\"}} {}",
            self.prefix_confirmed.load(Relaxed)
        );
        let _ =
            writeln!(o, "wis_epp_prefix_predictions_total{{outcome=\"wrong\"}} {}", self.prefix_wrong.load(Relaxed));
        let _ = writeln!(o, "# HELP wis_epp_endpoints Pool endpoints by state.");
        let _ = writeln!(o, "# TYPE wis_epp_endpoints gauge");
        let unhealthy = pool.total - pool.healthy;
        let known = pool.healthy - pool.unknown_metrics;
        let _ = writeln!(o, "wis_epp_endpoints{{state=\"healthy\"}} {known}");
        let _ = writeln!(o, "wis_epp_endpoints{{state=\"unknown_metrics\"}} {}", pool.unknown_metrics);
        let _ = writeln!(o, "wis_epp_endpoints{{state=\"unhealthy\"}} {unhealthy}");
        gauge(&mut o, "wis_epp_in_flight_requests", "Routed requests not yet released.", pool.in_flight);
        if let Some(age) = pool.snapshot_age_ms {
            gauge(&mut o, "wis_epp_snapshot_age_milliseconds", "Age of the pool snapshot in use.", age);
        }
        gauge(&mut o, "wis_epp_ready", "1 once the pool is known (readiness).", u64::from(ready));
        let _ = writeln!(o, "# HELP wis_epp_endpoint_decisions_total Decisions per pool endpoint (primary).");
        let _ = writeln!(o, "# TYPE wis_epp_endpoint_decisions_total counter");
        let mut per_endpoint = self.endpoint_decisions.lock().unwrap_or_else(|p| p.into_inner());
        per_endpoint.retain(|e, _| members.iter().any(|m| m == e));
        for (endpoint, n) in per_endpoint.iter() {
            let _ = writeln!(o, "wis_epp_endpoint_decisions_total{{endpoint=\"{endpoint}\"}} {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_counts_decisions_replies_and_the_histogram() {
        let stats = Stats::default();
        stats.decision("10.0.0.1:8000", false, Duration::from_micros(30));
        stats.decision("10.0.0.1:8000", true, Duration::from_micros(3_000));
        stats.local_reply(429);
        stats.local_reply(418);
        let pool = PoolCounts { total: 3, healthy: 2, unknown_metrics: 1, in_flight: 4, snapshot_age_ms: Some(20) };
        let page = stats.render(&pool, &["10.0.0.1:8000".to_string()], true);
        for line in [
            "wis_epp_decisions_total 2",
            "wis_epp_decisions_fell_back_to_all_total 1",
            "wis_epp_local_replies_total{status=\"429\"} 1",
            "wis_epp_local_replies_total{status=\"other\"} 1",
            "wis_epp_scheduling_duration_microseconds_bucket{le=\"50\"} 1",
            "wis_epp_scheduling_duration_microseconds_bucket{le=\"5000\"} 2",
            "wis_epp_scheduling_duration_microseconds_count 2",
            "wis_epp_endpoints{state=\"healthy\"} 1",
            "wis_epp_endpoints{state=\"unknown_metrics\"} 1",
            "wis_epp_endpoints{state=\"unhealthy\"} 1",
            "wis_epp_endpoint_decisions_total{endpoint=\"10.0.0.1:8000\"} 2",
            "wis_epp_ready 1",
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line:?} in\n{page}");
        }
        let page = stats.render(&pool, &[], true);
        assert!(!page.contains("endpoint=\"10.0.0.1:8000\""), "a departed endpoint is dropped");
    }
}
