//! What a run measured: per-request records, the summary and the printed table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::args::LoadArgs;

/// One request's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Seconds since the run started.
    pub start_s: f64,
    pub target: String,
    pub model: String,
    pub group: usize,
    /// The conversation this turn belongs to (numbered in the order conversations started).
    pub conversation: usize,
    pub turn: usize,
    /// HTTP status; 0 = no response (connect error, reset, timeout).
    pub status: u16,
    pub served_by: Option<String>,
    pub ttft_s: Option<f64>,
    pub e2e_s: f64,
    /// Mean inter-token gap of this request.
    pub itl_mean_s: Option<f64>,
    #[serde(skip)]
    pub itl_s: Vec<f64>,
    pub output_tokens: usize,
    pub prompt_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub error: Option<String>,
    #[serde(skip)]
    pub reply: String,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }
}

/// Percentiles of one latency.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
    Percentiles {
        p50: Some(q(0.5)),
        p90: Some(q(0.9)),
        p99: Some(q(0.99)),
        mean: Some(v.iter().sum::<f64>() / v.len() as f64),
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub ok: usize,
    pub errors: usize,
    pub dropped: usize,
    pub errors_by_kind: BTreeMap<String, usize>,
    pub wall_s: f64,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub ttft_s: Percentiles,
    pub itl_s: Percentiles,
    pub e2e_s: Percentiles,
    /// Fleet-wide prefix-cache hit rate from the pods' counters over the run (hits / queries).
    pub prefix_cache_hit_rate: Option<f64>,
    pub prefix_cache_hits: Option<f64>,
    pub prefix_cache_queries: Option<f64>,
    /// Client-side: sum of usage cached_tokens / prompt_tokens (needs --enable-prompt-tokens-details).
    pub reported_cached_fraction: Option<f64>,
    pub per_pod: BTreeMap<String, usize>,
    /// Share of the answered turns after the first that the pod of the conversation's previous
    /// turn served; null when the run had no follow-up turns.
    pub turn_affinity: Option<f64>,
    /// How many follow-up turns `turn_affinity` counts.
    pub follow_up_turns: usize,
}

/// A run's full result (what --out writes).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub args: LoadArgs,
    pub summary: Summary,
    pub records: Vec<RequestRecord>,
}

pub(super) fn summarize(
    records: &[RequestRecord],
    wall_s: f64,
    dropped: usize,
    before: Option<(f64, f64)>,
    after: Option<(f64, f64)>,
) -> Summary {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
    let mut errors_by_kind = BTreeMap::new();
    for r in records.iter().filter(|r| !r.ok()) {
        let kind = if r.status == 0 { "no response".to_string() } else { format!("HTTP {}", r.status) };
        *errors_by_kind.entry(kind).or_insert(0) += 1;
    }
    let mut per_pod = BTreeMap::new();
    for r in records {
        *per_pod.entry(r.served_by.clone().unwrap_or_else(|| "(unknown)".into())).or_insert(0) += 1;
    }
    let out_tokens: usize = ok.iter().map(|r| r.output_tokens).sum();
    let (hits, queries) = match (before, after) {
        (Some((h0, q0)), Some((h1, q1))) => (Some(h1 - h0), Some(q1 - q0)),
        _ => (None, None),
    };
    let prompt: u64 = ok.iter().filter_map(|r| r.prompt_tokens).sum();
    let (follow_ups, same) = turn_affinity(records);
    let cached: Option<u64> = ok.iter().map(|r| r.cached_tokens).sum();
    Summary {
        requests: records.len(),
        ok: ok.len(),
        errors: records.len() - ok.len(),
        dropped,
        errors_by_kind,
        wall_s,
        requests_per_s: ok.len() as f64 / wall_s.max(1e-9),
        output_tokens_per_s: out_tokens as f64 / wall_s.max(1e-9),
        ttft_s: percentiles(ok.iter().filter_map(|r| r.ttft_s).collect()),
        itl_s: percentiles(ok.iter().flat_map(|r| r.itl_s.iter().copied()).collect()),
        e2e_s: percentiles(ok.iter().map(|r| r.e2e_s).collect()),
        prefix_cache_hit_rate: match (hits, queries) {
            (Some(h), Some(q)) if q > 0.0 => Some(h / q),
            _ => None,
        },
        prefix_cache_hits: hits,
        prefix_cache_queries: queries,
        reported_cached_fraction: match cached {
            Some(c) if prompt > 0 && !ok.is_empty() => Some(c as f64 / prompt as f64),
            _ => None,
        },
        per_pod,
        turn_affinity: (follow_ups > 0).then(|| same as f64 / follow_ups as f64),
        follow_up_turns: follow_ups,
    }
}

/// (follow-up turns answered, how many of them the previous turn's pod served).
fn turn_affinity(records: &[RequestRecord]) -> (usize, usize) {
    let served: BTreeMap<(usize, usize), &str> = records
        .iter()
        .filter(|r| r.ok())
        .filter_map(|r| Some(((r.conversation, r.turn), r.served_by.as_deref()?)))
        .collect();
    let mut follow_ups = 0;
    let mut same = 0;
    for ((conversation, turn), pod) in &served {
        if *turn < 2 {
            continue;
        }
        if let Some(prev) = served.get(&(*conversation, turn - 1)) {
            follow_ups += 1;
            same += usize::from(prev == pod);
        }
    }
    (follow_ups, same)
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}", x * 1000.0)).unwrap_or_else(|| "-".into())
}

/// The first line: what ran.
fn header(r: &Report) -> String {
    let (s, a) = (&r.summary, &r.args);
    let mode = match (a.rate, a.concurrency) {
        (Some(rate), _) => format!("Poisson {rate} req/s"),
        (_, Some(c)) => format!("concurrency {c}"),
        _ => "concurrency 1".into(),
    };
    let turns = if s.follow_up_turns > 0 || !matches!(a.workload.as_str(), "shared-prefix" | "lora-mix") {
        format!(" turns={}", a.turns)
    } else {
        String::new()
    };
    format!(
        "workload {} ({}), {mode}, {} target(s) ({}), G={} S={} Q={} O={}{turns}\n",
        a.workload,
        a.api,
        a.target.len(),
        a.spread,
        a.groups,
        a.system_tokens,
        a.question_tokens,
        a.output_tokens,
    )
}

/// The human-readable result table.
pub fn render_table(r: &Report) -> String {
    let s = &r.summary;
    let mut t = header(r);
    t.push_str(&format!(
        "requests {} ok {} errors {} dropped {}   wall {:.1}s\n",
        s.requests, s.ok, s.errors, s.dropped, s.wall_s
    ));
    for (k, n) in &s.errors_by_kind {
        t.push_str(&format!("  error {k}: {n}\n"));
    }
    t.push_str(&format!("throughput {:.2} req/s, {:.1} output tok/s\n", s.requests_per_s, s.output_tokens_per_s));
    t.push_str("latency (ms)      p50       p90       p99      mean\n");
    for (name, p) in [("TTFT", &s.ttft_s), ("ITL", &s.itl_s), ("e2e", &s.e2e_s)] {
        t.push_str(&format!("  {name:<8} {:>9} {:>9} {:>9} {:>9}\n", ms(p.p50), ms(p.p90), ms(p.p99), ms(p.mean)));
    }
    match (s.prefix_cache_hit_rate, s.prefix_cache_hits, s.prefix_cache_queries) {
        (Some(rate), Some(h), Some(q)) => t.push_str(&format!(
            "prefix cache hit rate (fleet counters) {:.1}%  ({h:.0} of {q:.0} prompt tokens)\n",
            rate * 100.0
        )),
        _ => t.push_str("prefix cache hit rate (fleet counters) n/a (metrics not reachable)\n"),
    }
    if let Some(f) = s.reported_cached_fraction {
        t.push_str(&format!("cached_tokens / prompt_tokens (usage) {:.1}%\n", f * 100.0));
    }
    match s.turn_affinity {
        Some(a) => t.push_str(&format!(
            "turn affinity {:.1}%  ({:.0} of {} follow-up turns on the previous turn's pod)\n",
            a * 100.0,
            a * s.follow_up_turns as f64,
            s.follow_up_turns
        )),
        None => t.push_str("turn affinity n/a (no follow-up turns)\n"),
    }
    t.push_str("requests per pod:\n");
    for (pod, n) in &s.per_pod {
        t.push_str(&format!("  {pod:<24} {n}\n"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranked_values() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99), (Some(51.0), Some(90.0), Some(99.0)));
    }
}
