//! The scraper's own Prometheus metrics (`GET /metrics` on the listen address).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scrape::ScrapeError;
use crate::state::EndpointCounts;

/// Scrape duration histogram bounds in seconds: 50 ms scrapes live in the low buckets.
const DURATION_BOUNDS_S: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Default)]
pub struct SelfMetrics {
    scrapes: AtomicU64,
    failures: [AtomicU64; ScrapeError::REASONS.len()],
    duration_buckets: [AtomicU64; DURATION_BOUNDS_S.len()],
    duration_sum_us: AtomicU64,
    pub discovery_errors: Arc<AtomicU64>,
    snapshots: AtomicU64,
    snapshot_bytes: AtomicU64,
    snapshot_sequence: AtomicU64,
    endpoints: Mutex<EndpointCounts>,
}

impl SelfMetrics {
    pub fn observe_scrape(&self, took: Duration, failure: Option<&'static str>) {
        self.scrapes.fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.duration_buckets.iter().zip(DURATION_BOUNDS_S) {
            if secs <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.duration_sum_us.fetch_add(took.as_micros() as u64, Relaxed);
        if let Some(reason) = failure
            && let Some(i) = ScrapeError::REASONS.iter().position(|r| *r == reason)
        {
            self.failures[i].fetch_add(1, Relaxed);
        }
    }

    pub fn observe_snapshot(&self, sequence: u64, bytes: usize, counts: EndpointCounts) {
        self.snapshots.fetch_add(1, Relaxed);
        self.snapshot_sequence.store(sequence, Relaxed);
        self.snapshot_bytes.store(bytes as u64, Relaxed);
        *crate::lock(&self.endpoints) = counts;
    }

    pub fn render(&self) -> String {
        let mut o = String::with_capacity(2048);
        let scrapes = self.scrapes.load(Relaxed);
        let _ = writeln!(o, "# HELP wis_scraper_scrapes_total Scrapes of model-server /metrics, successful or not.");
        let _ = writeln!(o, "# TYPE wis_scraper_scrapes_total counter\nwis_scraper_scrapes_total {scrapes}");
        let _ = writeln!(o, "# HELP wis_scraper_scrape_failures_total Failed scrapes by reason.");
        let _ = writeln!(o, "# TYPE wis_scraper_scrape_failures_total counter");
        for (reason, n) in ScrapeError::REASONS.iter().zip(&self.failures) {
            let _ = writeln!(o, "wis_scraper_scrape_failures_total{{reason=\"{reason}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(o, "# HELP wis_scraper_scrape_duration_seconds Time from request to parsed reading.");
        let _ = writeln!(o, "# TYPE wis_scraper_scrape_duration_seconds histogram");
        for (bound, n) in DURATION_BOUNDS_S.iter().zip(&self.duration_buckets) {
            let _ = writeln!(o, "wis_scraper_scrape_duration_seconds_bucket{{le=\"{bound}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(o, "wis_scraper_scrape_duration_seconds_bucket{{le=\"+Inf\"}} {scrapes}");
        let sum = self.duration_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            o,
            "wis_scraper_scrape_duration_seconds_sum {sum}\nwis_scraper_scrape_duration_seconds_count {scrapes}"
        );
        let _ = writeln!(o, "# HELP wis_scraper_discovery_errors_total Failed DNS lookups or Kubernetes API calls.");
        let _ = writeln!(o, "# TYPE wis_scraper_discovery_errors_total counter");
        let _ = writeln!(o, "wis_scraper_discovery_errors_total {}", self.discovery_errors.load(Relaxed));
        let _ = writeln!(o, "# HELP wis_scraper_snapshots_total Snapshots generated.");
        let _ = writeln!(
            o,
            "# TYPE wis_scraper_snapshots_total counter\nwis_scraper_snapshots_total {}",
            self.snapshots.load(Relaxed)
        );
        let _ = writeln!(o, "# HELP wis_scraper_snapshot_sequence Sequence number of the latest snapshot.");
        let _ = writeln!(o, "# TYPE wis_scraper_snapshot_sequence gauge");
        let _ = writeln!(o, "wis_scraper_snapshot_sequence {}", self.snapshot_sequence.load(Relaxed));
        let _ = writeln!(o, "# HELP wis_scraper_snapshot_bytes Size of the latest snapshot document.");
        let _ = writeln!(
            o,
            "# TYPE wis_scraper_snapshot_bytes gauge\nwis_scraper_snapshot_bytes {}",
            self.snapshot_bytes.load(Relaxed)
        );
        let c = *crate::lock(&self.endpoints);
        let _ = writeln!(
            o,
            "# HELP wis_scraper_endpoints Endpoints in the latest snapshot by state: discovered (all), healthy \
             (reachable, whether or not its metrics are known), unknown_metrics (reachable, but the latest scrape \
             could not be read), unreachable (never reached, or consecutive connection failures/timeouts), stale \
             (the latest scrape gave no reading)."
        );
        let _ = writeln!(o, "# TYPE wis_scraper_endpoints gauge");
        for (state, n) in [
            ("discovered", c.total),
            ("healthy", c.healthy),
            ("unknown_metrics", c.unknown_metrics),
            ("unreachable", c.unreachable),
            ("stale", c.stale),
        ] {
            let _ = writeln!(o, "wis_scraper_endpoints{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP wis_scraper_endpoints_failing Endpoints whose latest scrape failed, by reason.");
        let _ = writeln!(o, "# TYPE wis_scraper_endpoints_failing gauge");
        for (reason, n) in ScrapeError::REASONS.iter().zip(c.failing) {
            let _ = writeln!(o, "wis_scraper_endpoints_failing{{reason=\"{reason}\"}} {n}");
        }
        o
    }
}
