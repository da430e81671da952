//! vLLM's Prometheus exposition, as `prometheus_client` writes it for a single API server.
//!
//! Facts kept (see ../shared/reference/model-server-metrics.md, §0 and §1):
//! - counters are exposed as `<name>_total`, and each counter and histogram family is followed by a
//!   `<name>_created` gauge block (Unix time of the series' creation);
//! - labels are sorted by name; the common labels are `model_name` and `engine`;
//! - values are Python `repr(float)` with Go's switch to exponent form above six integer digits;
//! - `vllm:lora_requests_info` has only `max_lora`, `running_lora_adapters`, `waiting_lora_adapters`
//!   and is valued with the Unix time of its last update; old label sets persist;
//! - `vllm:cache_config_info` carries every CacheConfig field as a label, value 1.

use std::collections::BTreeMap;
use std::fmt::Write;

/// vLLM's TTFT buckets (`vllm/v1/metrics/loggers.py`).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];
/// Inter-token latency and time-per-output-token buckets.
pub const ITL_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
/// End-to-end and phase latency buckets.
pub const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];
/// Tokens per engine step.
pub const ITERATION_TOKENS_BUCKETS: &[f64] =
    &[1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0];
/// The `n` parameter.
pub const PARAMS_N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];

/// vLLM's `build_1_2_5_buckets(max_value)`: 1, 2, 5, 10, 20, 50, … up to `max`.
pub fn buckets_1_2_5(max: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut exp = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let v = m * exp;
            if v > max {
                return out;
            }
            out.push(v);
        }
        exp *= 10.0;
    }
}

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// Per-bucket (non-cumulative) counts; the last is +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Histogram { bounds: bounds.to_vec(), counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            return; // a default-constructed histogram has no buckets; EngineStats::default sets them
        }
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Everything an engine counts, fed by [`crate::engine::Engine`].
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub num_preemptions: u64,
    pub prompt_tokens: u64,
    pub prompt_tokens_cached: u64,
    pub prompt_tokens_computed: u64,
    pub generation_tokens: u64,
    pub lora_loads: u64,
    pub request_success: BTreeMap<&'static str, u64>,
    pub iteration_tokens: Histogram,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub time_per_output_token: Histogram,
    pub e2e: Histogram,
    pub queue_time: Histogram,
    pub inference_time: Histogram,
    pub prefill_time: Histogram,
    pub decode_time: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub request_max_num_generation_tokens: Histogram,
    pub request_params_max_tokens: Histogram,
    pub request_params_n: Histogram,
    pub request_prefill_kv_computed_tokens: Histogram,
}

/// Default `max_model_len` for the 1-2-5 token histograms before the engine config is known.
const DEFAULT_MAX_MODEL_LEN: f64 = 40_960.0;

impl Default for EngineStats {
    fn default() -> Self {
        EngineStats::new(DEFAULT_MAX_MODEL_LEN as usize)
    }
}

impl EngineStats {
    pub fn new(max_model_len: usize) -> Self {
        let tokens = buckets_1_2_5(max_model_len as f64);
        EngineStats {
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            num_preemptions: 0,
            prompt_tokens: 0,
            prompt_tokens_cached: 0,
            prompt_tokens_computed: 0,
            generation_tokens: 0,
            lora_loads: 0,
            request_success: BTreeMap::new(),
            iteration_tokens: Histogram::new(ITERATION_TOKENS_BUCKETS),
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            time_per_output_token: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(REQUEST_LATENCY_BUCKETS),
            queue_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            inference_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            prefill_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            decode_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            request_prompt_tokens: Histogram::new(&tokens),
            request_generation_tokens: Histogram::new(&tokens),
            request_max_num_generation_tokens: Histogram::new(&tokens),
            request_params_max_tokens: Histogram::new(&tokens),
            request_params_n: Histogram::new(PARAMS_N_BUCKETS),
            request_prefill_kv_computed_tokens: Histogram::new(&tokens),
        }
    }
}

/// `prometheus_client`'s `floatToGoString`: Python `repr(float)`, exponent form past 6 integer digits.
pub fn go_float(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d == f64::INFINITY {
        return "+Inf".into();
    }
    if d == f64::NEG_INFINITY {
        return "-Inf".into();
    }
    let s = python_repr(d);
    if let Some(dot) = s.find('.')
        && d > 0.0
        && dot > 6
        && !s.contains('e')
    {
        let digits = format!("{}{}", &s[1..dot], &s[dot + 1..]);
        let mantissa = format!("{}.{}", &s[..1], digits);
        let mantissa = mantissa.trim_end_matches(['0', '.']);
        return format!("{mantissa}e+0{}", dot - 1);
    }
    s
}

/// Python's `repr` of a float for the values we expose (no exponent below 1e16).
fn python_repr(d: f64) -> String {
    if d.fract() == 0.0 && d.abs() < 1e16 {
        format!("{d:.1}")
    } else {
        let s = format!("{d:?}");
        if s.contains('e') {
            // Rust writes 1e-7, Python 1e-07.
            if let Some((m, e)) = s.split_once('e') {
                let (sign, digits) = e.strip_prefix('-').map(|x| ("-", x)).unwrap_or(("+", e));
                return format!("{m}e{sign}{digits:0>2}");
            }
        }
        s
    }
}

/// Escapes a label value (backslash, quote, newline) as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders a label set sorted by name.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// A text exposition being written.
pub struct Exposition {
    out: String,
    created: f64,
}

impl Exposition {
    /// `created` is the Unix time reported by every `_created` sample.
    pub fn new(created: f64) -> Self {
        Exposition { out: String::with_capacity(32 * 1024), created }
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn created_block(&mut self, name: &str, help: &str, series: &[Vec<(&str, &str)>]) {
        self.header(&format!("{name}_created"), help, "gauge");
        for l in series {
            let _ = writeln!(self.out, "{name}_created{} {}", labels(l), go_float(self.created));
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, series: &[(Vec<(&str, &str)>, f64)]) {
        self.header(name, help, "gauge");
        for (l, v) in series {
            let _ = writeln!(self.out, "{name}{} {}", labels(l), go_float(*v));
        }
    }

    /// A counter defined as `name` and exposed as `name_total` (plus `name_created`).
    pub fn counter(&mut self, name: &str, help: &str, series: &[(Vec<(&str, &str)>, f64)]) {
        let total = format!("{name}_total");
        self.header(&total, help, "counter");
        for (l, v) in series {
            let _ = writeln!(self.out, "{total}{} {}", labels(l), go_float(*v));
        }
        let ls: Vec<_> = series.iter().map(|(l, _)| l.clone()).collect();
        self.created_block(name, help, &ls);
    }

    pub fn histogram(&mut self, name: &str, help: &str, l: &[(&str, &str)], h: &Histogram) {
        self.header(name, help, "histogram");
        let mut cumulative = 0u64;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c;
            let le = h.bounds.get(i).map(|b| go_float(*b)).unwrap_or_else(|| "+Inf".into());
            let mut with_le = l.to_vec();
            with_le.push(("le", &le));
            let _ = writeln!(self.out, "{name}_bucket{} {}", labels(&with_le), go_float(cumulative as f64));
        }
        let _ = writeln!(self.out, "{name}_count{} {}", labels(l), go_float(h.count as f64));
        let _ = writeln!(self.out, "{name}_sum{} {}", labels(l), go_float(h.sum));
        self.created_block(name, help, &[l.to_vec()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_like_prometheus_client() {
        assert_eq!(go_float(12.0), "12.0");
        assert_eq!(go_float(0.4375), "0.4375");
        assert_eq!(go_float(1_204_551.0), "1.204551e+06");
        assert_eq!(go_float(1_755_610_123.456_7), "1.7556101234567e+09");
        assert_eq!(go_float(1e-7), "1e-07");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(0.0), "0.0");
    }

    #[test]
    fn token_buckets_follow_1_2_5_up_to_max_model_len() {
        assert_eq!(buckets_1_2_5(100.0), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(*buckets_1_2_5(40_960.0).last().unwrap(), 20_000.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_sorted() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(3.0);
        let mut e = Exposition::new(1_700_000_000.0);
        e.histogram("x", "X.", &[("model_name", "m"), ("engine", "0")], &h);
        let text = e.finish();
        assert!(text.contains("x_bucket{engine=\"0\",le=\"0.1\",model_name=\"m\"} 1.0\n"), "{text}");
        assert!(text.contains("x_bucket{engine=\"0\",le=\"1.0\",model_name=\"m\"} 2.0\n"));
        assert!(text.contains("x_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 3.0\n"));
        assert!(text.contains("x_count{engine=\"0\",model_name=\"m\"} 3.0\n"));
        assert!(text.contains("# TYPE x_created gauge\nx_created{engine=\"0\",model_name=\"m\"} 1.7e+09\n"));
    }
}
