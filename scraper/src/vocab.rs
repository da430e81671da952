//! Metric vocabularies: which series of an engine's `/metrics` fill [`EndpointMetrics`].
//!
//! Each field is read through a *fallback chain* of selectors (`name` or `name{label="value"}`):
//! the first selector that matches at least one series is used, so one vocabulary reads several
//! versions of an engine (vLLM's `kv_cache_usage_perc`, then the deprecated
//! `gpu_cache_usage_perc`; Triton's TRT-LLM families, then `trtllm-serve`'s plain gauges).
//!
//! **Several series of one selector** (data parallelism: vLLM exports one series per `engine`,
//! SGLang one per `dp_rank`; a multi-model server one per `model_name`): the queue gauges
//! (waiting, running) and the prefix counters are **summed**, because a request sent to the pod
//! competes with the work of all its engines; KV-cache usage takes the **maximum**, because the
//! fullest engine is the one that preempts, and vLLM's internal DP balancer keeps engines close
//! so the maximum rarely differs from the mean by much. `cache_config_info` block counts are
//! summed over distinct `engine` labels (the pod's total prefix capacity); the block size is
//! the first one read.
//!
//! **Bad values**: a required gauge (waiting, running, KV usage) that is missing, NaN, infinite
//! or negative fails the scrape (the endpoint keeps its last values and turns stale); optional
//! fields (LoRA, cache config, prefix counters) that are missing or bad are left empty.
//!
//! **A cold SGLang pod** (reference §4): SGLang sets its scheduler gauges (`num_queue_reqs`,
//! `num_running_reqs`, `token_usage`) only when it logs stats (a prefill batch, the decode log
//! interval), and in prometheus_client's multiprocess mode, which SGLang always uses, a family
//! without a value is not exported at all. Until the first stats log the three are simply
//! absent. A vocabulary with a `cold_start_namespace` reads a pod whose waiting, running and KV
//! gauges are *all* absent, while the exposition does carry samples of that namespace
//! (`sglang:cache_config_info` is written at start-up), as idle: zeros, not `missing_metric`.
//! A pod that exports none of the namespace (a wrong `--engine`) still fails.
//!
//! **Two meanings of "running"** (reference §5, §6): Triton's TensorRT-LLM backend reports
//! `request_type="scheduled"` (in this iteration's batch) and `waiting` = active − scheduled.
//! trtllm-serve's `trtllm_num_requests_running` is `numActiveRequests`, every request the
//! executor holds, scheduled or not, and its `trtllm_num_requests_waiting` is
//! `numQueuedRequests`, those not yet admitted (NVIDIA/TensorRT-LLM
//! `tensorrt_llm/metrics/collector.py` `log_iteration_stats`, read at 050f80de). trtllm-serve
//! exports these iteration gauges only with `enable_iter_perf_stats: true`, and serves
//! Prometheus text only with `return_perf_metrics: true`, on `/prometheus/metrics` (its
//! `/metrics` is JSON; `tensorrt_llm/serve/openai_server.py`). So for trtllm-serve an
//! `active_split` reads running as `trtllm_num_scheduled_requests` and adds active − scheduled
//! to waiting, which gives both servers the same meaning; without the scheduled gauge (older
//! releases) running stays the active count.

use crate::expo::{Exposition, Sample};
use std::fmt;
use std::str::FromStr;
use wasm_inference_scheduler::pool::{EndpointMetrics, Engine, LoraState, MAX_ADAPTERS_PER_LIST};

/// At most this many distinct model names are reported per endpoint (a server serves a few).
pub const MAX_MODELS_PER_ENDPOINT: usize = 16;

/// KV usage a little above 1 is rounding in the engine; far above it is a wrong metric (percent?).
const KV_USAGE_TOLERANCE: f64 = 0.05;

/// A metric name with optional exact label matchers: `name` or `name{k="v",k2="v2"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<(String, String)>,
}

impl Selector {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), matchers: Vec::new() }
    }

    pub fn with(name: &str, label: &str, value: &str) -> Self {
        Self { name: name.to_string(), matchers: vec![(label.to_string(), value.to_string())] }
    }

    pub fn matches(&self, s: &Sample) -> bool {
        s.name == self.name && self.matchers.iter().all(|(k, v)| s.label(k) == Some(v.as_str()))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.matchers.is_empty() {
            let inner: Vec<String> = self.matchers.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            write!(f, "{{{}}}", inner.join(","))?;
        }
        Ok(())
    }
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!("metric selector {s:?}: expected a metric name like vllm:num_requests_waiting"));
        }
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| format!("metric selector {s:?}: expected name{{label=\"value\",...}}"))?;
            for part in inner.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("metric selector {s:?}: matcher {part:?} is not label=\"value\""))?;
                let v = v.trim().trim_matches('"');
                matchers.push((k.trim().to_string(), v.to_string()));
            }
        }
        Ok(Self { name: name.to_string(), matchers })
    }
}

/// `*_info` gauge whose labels carry the KV-cache geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    pub name: String,
    pub block_size_label: String,
    pub num_blocks_label: String,
}

/// Where each field of [`EndpointMetrics`] comes from for one engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    pub engine: Engine,
    pub waiting: Vec<Selector>,
    pub running: Vec<Selector>,
    pub kv_usage: Vec<Selector>,
    /// Fallback when no `kv_usage` selector matches: usage = used / max (block counts).
    pub kv_used_and_max: Option<(Selector, Selector)>,
    /// LoRA info gauge (vLLM): labels `max_lora`, `running_lora_adapters`, `waiting_lora_adapters`.
    pub lora_info: Option<String>,
    pub cache_info: Option<CacheInfo>,
    /// Block geometry exported as plain values (TRT-LLM), used when `cache_info` gives nothing.
    pub block_size_value: Vec<Selector>,
    pub num_blocks_value: Vec<Selector>,
    pub prefix_queries: Vec<Selector>,
    pub prefix_hits: Vec<Selector>,
    /// Labels whose values name the served model.
    pub model_labels: Vec<String>,
    /// An engine whose running gauge counts every active request, scheduled or not (see the
    /// module docs).
    pub active_split: Option<ActiveSplit>,
    /// The metric-name prefix whose presence, with every scheduler gauge absent, marks a cold
    /// pod that reads as idle (see the module docs).
    pub cold_start_namespace: Option<String>,
    /// Appended to the message of a failure that usually means the engine is not exporting
    /// metrics where the scraper looks (`http_status`, `not_text`, `missing_metric`).
    pub hint: Option<&'static str>,
}

/// `running` is `active` (every request the engine holds); `scheduled` are those in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSplit {
    pub active: Selector,
    pub scheduled: Selector,
}

/// Model-label values that name no model: trtllm-serve labels every series
/// `model_name="undefined"` (`openai_server.py` builds its `MetricsCollector` with that).
const PLACEHOLDER_MODEL_NAMES: [&str; 1] = ["undefined"];

impl Vocabulary {
    /// The built-in vocabulary of an engine (names from `shared/reference/model-server-metrics.md`).
    pub fn for_engine(engine: Engine) -> Self {
        match engine {
            Engine::Vllm => Self {
                engine,
                waiting: vec![Selector::new("vllm:num_requests_waiting")],
                running: vec![Selector::new("vllm:num_requests_running")],
                kv_usage: vec![Selector::new("vllm:kv_cache_usage_perc"), Selector::new("vllm:gpu_cache_usage_perc")],
                kv_used_and_max: None,
                lora_info: Some("vllm:lora_requests_info".into()),
                cache_info: Some(CacheInfo {
                    name: "vllm:cache_config_info".into(),
                    block_size_label: "block_size".into(),
                    num_blocks_label: "num_gpu_blocks".into(),
                }),
                block_size_value: vec![],
                num_blocks_value: vec![],
                // Counters are exposed with `_total` (reference §0, §1.2).
                prefix_queries: vec![Selector::new("vllm:prefix_cache_queries_total")],
                prefix_hits: vec![Selector::new("vllm:prefix_cache_hits_total")],
                model_labels: vec!["model_name".into()],
                active_split: None,
                cold_start_namespace: None,
                hint: None,
            },
            Engine::Sglang => Self {
                engine,
                waiting: vec![Selector::new("sglang:num_queue_reqs")],
                running: vec![Selector::new("sglang:num_running_reqs")],
                kv_usage: vec![Selector::new("sglang:token_usage")],
                kv_used_and_max: None,
                lora_info: None,
                cache_info: Some(CacheInfo {
                    name: "sglang:cache_config_info".into(),
                    block_size_label: "page_size".into(),
                    num_blocks_label: "num_pages".into(),
                }),
                block_size_value: vec![],
                num_blocks_value: vec![],
                // Prompt tokens vs cached prompt tokens (reference §4). Every series of
                // `cached_tokens_total` is summed: SGLang counts each finished request's cached
                // tokens either per source (`device`, `host`, `storage_<backend>`) or, when the
                // request has no per-source breakdown, once under `cache_source="total"`
                // (`TokenizerMetricsCollector.observe_one_finished_request`, reference S19), so
                // `total` is the fallback share, never the sum of the others. Older SGLang has
                // one series without `cache_source`.
                prefix_queries: vec![Selector::new("sglang:prompt_tokens_total")],
                prefix_hits: vec![Selector::new("sglang:cached_tokens_total")],
                model_labels: vec!["model_name".into()],
                active_split: None,
                cold_start_namespace: Some("sglang:".into()),
                hint: Some("SGLang serves /metrics only when started with --enable-metrics"),
            },
            Engine::Trtllm => {
                let req = "nv_trt_llm_request_metrics";
                let kv = "nv_trt_llm_kv_cache_block_metrics";
                let kvt = "kv_cache_block_type";
                // Triton's TensorRT-LLM backend first (reference §5), then trtllm-serve's plain
                // gauges (§6; their meaning checked in TensorRT-LLM's metrics collector).
                Self {
                    engine,
                    waiting: vec![
                        Selector::with(req, "request_type", "waiting"),
                        Selector::new("trtllm_num_requests_waiting"),
                    ],
                    running: vec![
                        Selector::with(req, "request_type", "scheduled"),
                        Selector::new("trtllm_num_requests_running"),
                    ],
                    kv_usage: vec![Selector::with(kv, kvt, "fraction"), Selector::new("trtllm_kv_cache_utilization")],
                    kv_used_and_max: Some((Selector::with(kv, kvt, "used"), Selector::with(kv, kvt, "max"))),
                    lora_info: None,
                    cache_info: None,
                    block_size_value: vec![
                        Selector::with(kv, kvt, "tokens_per"),
                        Selector::new("trtllm_kv_cache_tokens_per_block"),
                    ],
                    num_blocks_value: vec![Selector::with(kv, kvt, "max"), Selector::new("trtllm_kv_cache_max_blocks")],
                    // trtllm-serve only (Triton's backend exports no prefix counters).
                    prefix_queries: vec![Selector::new("trtllm_prompt_tokens_total")],
                    prefix_hits: vec![Selector::new("trtllm_prompt_cached_tokens_total")],
                    // Not Triton's `model` label: it names the backend model (`tensorrt_llm`),
                    // while clients ask for the ensemble or BLS model, and the plugin drops an
                    // endpoint that does not list the requested model.
                    model_labels: vec!["model_name".into()],
                    active_split: Some(ActiveSplit {
                        active: Selector::new("trtllm_num_requests_running"),
                        scheduled: Selector::new("trtllm_num_scheduled_requests"),
                    }),
                    cold_start_namespace: None,
                    hint: Some(
                        "trtllm-serve: Prometheus text is on /prometheus/metrics with return_perf_metrics: true, \
                         queue and KV gauges need enable_iter_perf_stats: true; Triton: its metrics port, 8002",
                    ),
                }
            }
        }
    }

    /// Whether a sample of this metric name can contribute to any field.
    pub fn wants(&self, name: &str) -> bool {
        let chains = [
            &self.waiting,
            &self.running,
            &self.kv_usage,
            &self.block_size_value,
            &self.num_blocks_value,
            &self.prefix_queries,
            &self.prefix_hits,
        ];
        chains.iter().any(|c| c.iter().any(|s| s.name == name))
            || self.kv_used_and_max.as_ref().is_some_and(|(u, m)| u.name == name || m.name == name)
            || self.active_split.as_ref().is_some_and(|a| a.active.name == name || a.scheduled.name == name)
            || self.lora_info.as_deref() == Some(name)
            || self.cache_info.as_ref().is_some_and(|c| c.name == name)
    }

    /// Parses an exposition, keeping the samples this vocabulary wants and noting whether the
    /// cold-start namespace appeared.
    pub fn parse(&self, text: &str) -> Exposition {
        let namespace_seen = std::cell::Cell::new(false);
        let mut expo = crate::expo::parse(text, |name| {
            if let Some(ns) = &self.cold_start_namespace
                && !namespace_seen.get()
                && name.starts_with(ns.as_str())
            {
                namespace_seen.set(true);
            }
            self.wants(name)
        });
        expo.namespace_seen = namespace_seen.get();
        expo
    }

    /// Reads one endpoint's metrics from a parsed exposition.
    pub fn extract(&self, expo: &Exposition) -> Result<Reading, ExtractError> {
        let samples = &expo.samples;
        let waiting = required(samples, &self.waiting, "waiting requests");
        let running = required(samples, &self.running, "running requests");
        let kv = self.kv_usage(samples);
        let cold = self.cold_start_namespace.is_some()
            && expo.namespace_seen
            && matches!(waiting, Err(ExtractError::Missing { .. }))
            && matches!(running, Err(ExtractError::Missing { .. }))
            && matches!(kv, Err(ExtractError::Missing { .. }));
        let ((waiting, _), (running, running_sel), (kv_usage, kv_samples)) =
            if cold { ((vec![], None), (vec![], None), (0.0, vec![])) } else { (waiting?, running?, kv?) };
        let mut waiting_sum: f64 = waiting.iter().map(|s| s.value).sum();
        let mut running_sum: f64 = running.iter().map(|s| s.value).sum();
        if let Some(split) = &self.active_split
            && running_sel == Some(&split.active)
            && let Some((scheduled, _)) = first_match(samples, std::slice::from_ref(&split.scheduled))
            && scheduled.iter().all(|s| s.value.is_finite() && s.value >= 0.0)
        {
            let scheduled_sum: f64 = scheduled.iter().map(|s| s.value).sum();
            waiting_sum += (running_sum - scheduled_sum).max(0.0);
            running_sum = scheduled_sum;
        }

        let mut models: Vec<String> = Vec::new();
        for s in waiting.iter().chain(running.iter()).chain(kv_samples.iter()) {
            for label in &self.model_labels {
                if let Some(m) = s.label(label)
                    && !m.is_empty()
                    && !PLACEHOLDER_MODEL_NAMES.contains(&m)
                    && !models.iter().any(|x| x == m)
                    && models.len() < MAX_MODELS_PER_ENDPOINT
                {
                    models.push(m.to_string());
                }
            }
        }

        let (cache_block_size, cache_num_blocks) = self.cache_geometry(samples);
        let metrics = EndpointMetrics {
            waiting_requests: to_u32(waiting_sum),
            running_requests: to_u32(running_sum),
            kv_cache_usage: kv_usage,
            lora: self.lora_info.as_deref().and_then(|name| newest_lora(samples, name)),
            cache_block_size,
            cache_num_blocks,
            prefix_cache_queries_total: optional_sum(samples, &self.prefix_queries),
            prefix_cache_hits_total: optional_sum(samples, &self.prefix_hits),
        };
        Ok(Reading { metrics, models })
    }

    /// The failure's message for the log and the snapshot, with this engine's hint where the
    /// failure usually means the engine does not export metrics where the scraper looks.
    pub fn failure_message(&self, error: &crate::scrape::ScrapeError) -> String {
        match (self.hint, error.reason()) {
            (Some(hint), "http_status" | "not_text" | "missing_metric") => format!("{error} ({hint})"),
            _ => error.to_string(),
        }
    }

    fn kv_usage<'a>(&self, samples: &'a [Sample]) -> Result<(f64, Vec<&'a Sample>), ExtractError> {
        let usage = match first_match(samples, &self.kv_usage) {
            Some((found, sel)) => {
                validate(&found, sel)?;
                let worst = found.iter().map(|s| s.value).fold(0.0_f64, f64::max);
                (worst, found)
            }
            None => {
                let from_blocks = self.kv_used_and_max.as_ref().and_then(|(used, max)| {
                    let u = first_value(samples, std::slice::from_ref(used))?;
                    let m = first_value(samples, std::slice::from_ref(max))?;
                    (m > 0.0).then_some(u / m)
                });
                match from_blocks {
                    Some(v) => (v, Vec::new()),
                    None => {
                        return Err(ExtractError::Missing {
                            what: "KV-cache usage",
                            tried: chain_names(&self.kv_usage),
                        });
                    }
                }
            }
        };
        let (v, found) = usage;
        if !v.is_finite() || !(0.0..=1.0 + KV_USAGE_TOLERANCE).contains(&v) {
            let metric = chain_names(&self.kv_usage);
            return Err(ExtractError::BadValue { metric, value: v, expected: "a fraction in [0, 1]" });
        }
        Ok((v.min(1.0), found))
    }

    fn cache_geometry(&self, samples: &[Sample]) -> (Option<u32>, Option<u64>) {
        let mut block_size = None;
        let mut num_blocks = None;
        if let Some(info) = &self.cache_info {
            // One series per engine; a stale duplicate of the same engine must not double count.
            let mut per_engine: Vec<(&str, u64)> = Vec::new();
            for s in samples.iter().filter(|s| s.name == info.name) {
                if block_size.is_none() {
                    block_size = s.label(&info.block_size_label).and_then(|v| v.parse::<u32>().ok());
                }
                if let Some(n) = s.label(&info.num_blocks_label).and_then(|v| v.parse::<u64>().ok()) {
                    let engine = s.label("engine").or(s.label("dp_rank")).unwrap_or("");
                    match per_engine.iter_mut().find(|(e, _)| *e == engine) {
                        Some(slot) => slot.1 = n,
                        None => per_engine.push((engine, n)),
                    }
                }
            }
            if !per_engine.is_empty() {
                num_blocks = Some(per_engine.iter().map(|(_, n)| n).sum());
            }
        }
        if block_size.is_none() {
            block_size = first_value(samples, &self.block_size_value).map(|v| v as u32);
        }
        if num_blocks.is_none() {
            num_blocks = first_value(samples, &self.num_blocks_value).map(|v| v as u64);
        }
        (block_size.filter(|b| *b > 0), num_blocks)
    }

    /// Every metric name this vocabulary may read, for the log at start-up.
    pub fn describe(&self) -> String {
        format!(
            "engine={:?} waiting={} running={} kv_usage={} lora={} cache_info={} prefix_queries={} prefix_hits={} \
             active_split={} cold_start={}",
            self.engine,
            chain_names(&self.waiting),
            chain_names(&self.running),
            chain_names(&self.kv_usage),
            self.lora_info.as_deref().unwrap_or("-"),
            self.cache_info.as_ref().map(|c| c.name.as_str()).unwrap_or("-"),
            chain_names(&self.prefix_queries),
            chain_names(&self.prefix_hits),
            self.active_split.as_ref().map(|a| format!("{}-{}", a.active, a.scheduled)).unwrap_or_else(|| "-".into()),
            self.cold_start_namespace.as_deref().unwrap_or("-"),
        )
    }
}

/// What one successful scrape yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub metrics: EndpointMetrics,
    pub models: Vec<String>,
}

/// Why an exposition could not be read as this vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtractError {
    Missing { what: &'static str, tried: String },
    BadValue { metric: String, value: f64, expected: &'static str },
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { what, tried } => {
                write!(f, "no {what} metric in the exposition (looked for {tried}; wrong --engine?)")
            }
            Self::BadValue { metric, value, expected } => write!(f, "{metric} has value {value}, expected {expected}"),
        }
    }
}

impl std::error::Error for ExtractError {}

fn chain_names(chain: &[Selector]) -> String {
    if chain.is_empty() {
        return "-".into();
    }
    chain.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" | ")
}

fn first_match<'a, 'b>(samples: &'a [Sample], chain: &'b [Selector]) -> Option<(Vec<&'a Sample>, &'b Selector)> {
    chain.iter().find_map(|sel| {
        let found: Vec<&Sample> = samples.iter().filter(|s| sel.matches(s)).collect();
        (!found.is_empty()).then_some((found, sel))
    })
}

/// Every series of a required gauge must be finite and non-negative.
fn validate(found: &[&Sample], sel: &Selector) -> Result<(), ExtractError> {
    match found.iter().find(|s| !s.value.is_finite() || s.value < 0.0) {
        Some(bad) => Err(ExtractError::BadValue {
            metric: sel.to_string(),
            value: bad.value,
            expected: "a finite, non-negative number",
        }),
        None => Ok(()),
    }
}

/// The series of the first selector of `chain` that matches, and that selector.
fn required<'a, 'b>(
    samples: &'a [Sample],
    chain: &'b [Selector],
    what: &'static str,
) -> Result<(Vec<&'a Sample>, Option<&'b Selector>), ExtractError> {
    let (found, sel) =
        first_match(samples, chain).ok_or_else(|| ExtractError::Missing { what, tried: chain_names(chain) })?;
    validate(&found, sel)?;
    Ok((found, Some(sel)))
}

fn optional_sum(samples: &[Sample], chain: &[Selector]) -> Option<f64> {
    let (found, _) = first_match(samples, chain)?;
    found.iter().all(|s| s.value.is_finite() && s.value >= 0.0).then(|| found.iter().map(|s| s.value).sum())
}

fn first_value(samples: &[Sample], chain: &[Selector]) -> Option<f64> {
    let (found, _) = first_match(samples, chain)?;
    found.first().map(|s| s.value).filter(|v| v.is_finite() && *v >= 0.0)
}

fn to_u32(v: f64) -> u32 {
    v.round().clamp(0.0, u32::MAX as f64) as u32
}

/// vLLM's LoRA gauge: its value is the Unix time of the last change, a new series appears for
/// every new label set and old ones linger, so the series with the highest value is current.
fn newest_lora(samples: &[Sample], name: &str) -> Option<LoraState> {
    let newest =
        samples.iter().filter(|s| s.name == name && s.value.is_finite()).max_by(|a, b| a.value.total_cmp(&b.value))?;
    Some(LoraState {
        running: adapter_list(newest.label("running_lora_adapters")),
        waiting: adapter_list(newest.label("waiting_lora_adapters")),
        max_loras: newest.label("max_lora").and_then(|v| v.trim().parse().ok()).unwrap_or(0),
    })
}

fn adapter_list(csv: Option<&str>) -> Vec<String> {
    csv.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .take(MAX_ADAPTERS_PER_LIST)
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(engine: Engine, text: &str) -> Result<Reading, ExtractError> {
        let v = Vocabulary::for_engine(engine);
        v.extract(&v.parse(text))
    }

    #[test]
    fn selector_parses_and_prints() {
        let s: Selector = "nv_trt_llm_request_metrics{request_type=\"waiting\"}".parse().unwrap();
        assert_eq!(s, Selector::with("nv_trt_llm_request_metrics", "request_type", "waiting"));
        assert_eq!(s.to_string(), "nv_trt_llm_request_metrics{request_type=\"waiting\"}");
        assert!("9bad".parse::<Selector>().is_err());
        assert!("x{a}".parse::<Selector>().is_err());
    }

    #[test]
    fn lora_newest_series_wins_and_lists_are_trimmed() {
        let text = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n\
            vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"old\",waiting_lora_adapters=\"\"} 1.7556102e+09\n\
            vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\" a , b,,\",waiting_lora_adapters=\"c\"} 1.7556103e+09\n\
            vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"older\",waiting_lora_adapters=\"\"} 1.7556101e+09\n";
        let lora = read(Engine::Vllm, text).unwrap().metrics.lora.unwrap();
        assert_eq!(lora, LoraState { running: vec!["a".into(), "b".into()], waiting: vec!["c".into()], max_loras: 4 });
    }

    #[test]
    fn negative_or_nan_queue_fails_the_reading() {
        let err = read(
            Engine::Vllm,
            "vllm:num_requests_waiting -1\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("non-negative"), "{err}");
        let err = read(
            Engine::Vllm,
            "vllm:num_requests_waiting 1\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc NaN\n",
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::BadValue { .. }), "{err}");
    }

    #[test]
    fn kv_usage_in_percent_is_rejected() {
        let err = read(
            Engine::Vllm,
            "vllm:num_requests_waiting 1\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 43\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("fraction"), "{err}");
    }

    #[test]
    fn missing_required_metric_names_what_was_looked_for() {
        let err = read(Engine::Sglang, "vllm:num_requests_waiting 1\n").unwrap_err();
        assert!(err.to_string().contains("sglang:num_queue_reqs"), "{err}");
    }

    #[test]
    fn trtllm_usage_falls_back_to_used_over_max() {
        let text = "nv_trt_llm_request_metrics{request_type=\"waiting\"} 2\n\
            nv_trt_llm_request_metrics{request_type=\"scheduled\"} 3\n\
            nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\"} 25\n\
            nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\"} 100\n";
        let m = read(Engine::Trtllm, text).unwrap().metrics;
        assert_eq!((m.waiting_requests, m.running_requests, m.kv_cache_usage), (2, 3, 0.25));
        assert_eq!(m.cache_num_blocks, Some(100));
    }
}
