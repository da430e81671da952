//! The pod's Prometheus families: one table row per family (name, HELP text, how to read it),
//! written in table order by [`exposition`]. Add a metric by adding a row.
//!
//! Names, types, labels and HELP texts are vLLM's (see ../shared/reference/model-server-metrics.md);
//! every family carries the common labels `engine="0"` and `model_name=<served name>`, except the two
//! info gauges written after the table.

use crate::engine::Engine;
use crate::metrics::{EngineStats, Exposition, Histogram};

use super::{Core, PodConfig};

/// How a family is read from the engine.
pub enum Read {
    /// A gauge with one sample.
    Gauge(fn(&Engine) -> f64),
    /// A gauge with one sample per value of an extra label.
    GaugeBy(&'static str, fn(&Engine) -> Vec<(&'static str, f64)>),
    /// A counter (exposed as `<name>_total` plus `<name>_created`) with one sample.
    Counter(fn(&EngineStats) -> f64),
    /// A counter with one sample per value of an extra label.
    CounterBy(&'static str, fn(&EngineStats) -> Vec<(&'static str, f64)>),
    /// A histogram (buckets, count, sum, plus `<name>_created`).
    Histogram(fn(&EngineStats) -> &Histogram),
}

/// One metric family of the exposition.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub read: Read,
}

const fn family(name: &'static str, help: &'static str, read: Read) -> Family {
    Family { name, help, read }
}

/// `vllm:request_success_total`'s `finished_reason` values, pre-created as vLLM does.
const FINISHED_REASONS: [&str; 5] = ["stop", "length", "abort", "error", "repetition"];

/// Every family with the common labels, in exposition order.
pub const FAMILIES: &[Family] = &[
    family(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        Read::Gauge(|e| e.num_running() as f64),
    ),
    family(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        Read::Gauge(|e| e.num_waiting() as f64),
    ),
    family(
        "vllm:num_requests_waiting_by_reason",
        "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
        Read::GaugeBy("reason", |e| {
            let deferred = e.num_deferred();
            vec![("capacity", (e.num_waiting() - deferred) as f64), ("deferred", deferred as f64)]
        }),
    ),
    family(
        "vllm:engine_sleep_state",
        "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
        Read::GaugeBy("sleep_state", |_| vec![("awake", 1.0), ("weights_offloaded", 0.0), ("discard_all", 0.0)]),
    ),
    family("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", Read::Gauge(Engine::kv_usage)),
    family(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        Read::Counter(|s| s.prefix_cache_queries as f64),
    ),
    family(
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        Read::Counter(|s| s.prefix_cache_hits as f64),
    ),
    family(
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        Read::Counter(|s| s.num_preemptions as f64),
    ),
    family("vllm:prompt_tokens", "Number of prefill tokens processed.", Read::Counter(|s| s.prompt_tokens as f64)),
    family(
        "vllm:prompt_tokens_by_source",
        "Number of prompt tokens by source.",
        Read::CounterBy("source", |s| {
            vec![
                ("local_compute", s.prompt_tokens_computed as f64),
                ("local_cache_hit", s.prompt_tokens_cached as f64),
                ("external_kv_transfer", 0.0),
            ]
        }),
    ),
    family(
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        Read::Counter(|s| s.prompt_tokens_cached as f64),
    ),
    family(
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        Read::Counter(|s| s.generation_tokens as f64),
    ),
    family(
        "vllm:request_success",
        "Count of successfully processed requests.",
        Read::CounterBy("finished_reason", |s| {
            FINISHED_REASONS.iter().map(|r| (*r, s.request_success.get(r).copied().unwrap_or(0) as f64)).collect()
        }),
    ),
    family(
        "vllm:iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        Read::Histogram(|s| &s.iteration_tokens),
    ),
    family(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        Read::Histogram(|s| &s.ttft),
    ),
    family(
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        Read::Histogram(|s| &s.itl),
    ),
    family(
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        Read::Histogram(|s| &s.time_per_output_token),
    ),
    family(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        Read::Histogram(|s| &s.e2e),
    ),
    family(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        Read::Histogram(|s| &s.queue_time),
    ),
    family(
        "vllm:request_inference_time_seconds",
        "Histogram of time spent in RUNNING phase for request.",
        Read::Histogram(|s| &s.inference_time),
    ),
    family(
        "vllm:request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
        Read::Histogram(|s| &s.prefill_time),
    ),
    family(
        "vllm:request_decode_time_seconds",
        "Histogram of time spent in DECODE phase for request.",
        Read::Histogram(|s| &s.decode_time),
    ),
    family(
        "vllm:request_prompt_tokens",
        "Number of prefill tokens processed.",
        Read::Histogram(|s| &s.request_prompt_tokens),
    ),
    family(
        "vllm:request_generation_tokens",
        "Number of generation tokens processed.",
        Read::Histogram(|s| &s.request_generation_tokens),
    ),
    family(
        "vllm:request_max_num_generation_tokens",
        "Histogram of maximum number of requested generation tokens.",
        Read::Histogram(|s| &s.request_max_num_generation_tokens),
    ),
    family(
        "vllm:request_params_max_tokens",
        "Histogram of the max_tokens request parameter.",
        Read::Histogram(|s| &s.request_params_max_tokens),
    ),
    family("vllm:request_params_n", "Histogram of the n request parameter.", Read::Histogram(|s| &s.request_params_n)),
    family(
        "vllm:request_prefill_kv_computed_tokens",
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
        Read::Histogram(|s| &s.request_prefill_kv_computed_tokens),
    ),
];

/// The pod's whole exposition: the table, then `vllm:lora_requests_info` and `vllm:cache_config_info`.
pub fn exposition(core: &Core, config: &PodConfig, created_unix: f64) -> String {
    let e = &core.engine;
    let base: Vec<(&str, &str)> = vec![("engine", "0"), ("model_name", config.served_model_name.as_str())];
    let with = |label: &'static str, value: &'static str| {
        let mut l = base.clone();
        l.push((label, value));
        l
    };
    let mut x = Exposition::new(created_unix);
    for f in FAMILIES {
        match &f.read {
            Read::Gauge(read) => x.gauge(f.name, f.help, &[(base.clone(), read(e))]),
            Read::GaugeBy(label, read) => {
                let series: Vec<_> = read(e).into_iter().map(|(v, n)| (with(label, v), n)).collect();
                x.gauge(f.name, f.help, &series);
            }
            Read::Counter(read) => x.counter(f.name, f.help, &[(base.clone(), read(&e.stats))]),
            Read::CounterBy(label, read) => {
                let series: Vec<_> = read(&e.stats).into_iter().map(|(v, n)| (with(label, v), n)).collect();
                x.counter(f.name, f.help, &series);
            }
            Read::Histogram(read) => x.histogram(f.name, f.help, &base, read(&e.stats)),
        }
    }
    lora_requests_info(&mut x, core, config);
    cache_config_info(&mut x, config);
    x.finish()
}

/// `vllm:lora_requests_info` (no common labels; valued with the Unix time of each label set's last
/// update), only when LoRA is enabled and after the first engine step.
fn lora_requests_info(x: &mut Exposition, core: &Core, config: &PodConfig) {
    if !config.lora_enabled() || core.lora_series.is_empty() {
        return;
    }
    let series: Vec<_> = core
        .lora_series
        .iter()
        .map(|((m, r, w), t)| {
            (
                vec![
                    ("max_lora", m.as_str()),
                    ("running_lora_adapters", r.as_str()),
                    ("waiting_lora_adapters", w.as_str()),
                ],
                *t,
            )
        })
        .collect();
    x.gauge("vllm:lora_requests_info", "Running stats on lora requests.", &series);
}

/// `vllm:cache_config_info`: the v0.11-era CacheConfig fields (S12 in the reference) as labels, the
/// Python `str()` of each value, valued 1.
fn cache_config_info(x: &mut Exposition, c: &PodConfig) {
    let block_size = c.engine.block_size.to_string();
    let num_blocks = c.engine.num_gpu_blocks.to_string();
    let gmu = format!("{:?}", c.gpu_memory_utilization);
    let prefix = if c.engine.enable_prefix_caching { "True" } else { "False" };
    let info: Vec<(&str, &str)> = vec![
        ("block_size", &block_size),
        ("cache_dtype", "auto"),
        ("calculate_kv_scales", "False"),
        ("cpu_kvcache_space_bytes", "None"),
        ("cpu_offload_gb", "0"),
        ("enable_prefix_caching", prefix),
        ("engine", "0"),
        ("gpu_memory_utilization", &gmu),
        ("is_attention_free", "False"),
        ("kv_cache_memory_bytes", "None"),
        ("kv_offloading_backend", "None"),
        ("kv_offloading_size", "None"),
        ("kv_sharing_fast_prefill", "False"),
        ("mamba_block_size", "None"),
        ("mamba_cache_dtype", "auto"),
        ("mamba_page_size_padded", "None"),
        ("mamba_ssm_cache_dtype", "auto"),
        ("num_cpu_blocks", "None"),
        ("num_gpu_blocks", &num_blocks),
        ("num_gpu_blocks_override", "None"),
        ("prefix_caching_hash_algo", "sha256"),
        ("sliding_window", "None"),
        ("swap_space", "4"),
    ];
    x.gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", &[(info, 1.0)]);
}
