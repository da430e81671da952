//! Everything the harness knows about this project's plugin, and only here: where its `.wasm` is,
//! how an Envoy runs it ([`envoy`]), its header names (the plugin's own `HeaderNames::default()`),
//! pool snapshots in the scraper's wire format (the plugin's `pool` types), OpenAI-style request
//! bodies. The generic host (`Envoy`, the stories) knows nothing of it.

use crate::story::Exchange;
use crate::{Envoy, EnvoyBuilder, HostError, HostResult, UpstreamReply};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasm_inference_scheduler::config::HeaderNames;
use wasm_inference_scheduler::pool::{self, EndpointMetrics, LoraState, PoolSnapshot};

pub const CHAT: &str = "/v1/chat/completions";
pub const COMPLETIONS: &str = "/v1/completions";
pub const MODEL: &str = "Qwen/Qwen3-0.6B";
/// The scraper cluster [`config_with_scraper`] configures.
pub const SCRAPER_CLUSTER: &str = "wis-scraper";
/// `plugin_name` of the plugin's stories: it scopes the plugin's shared-data keys.
pub const PLUGIN_NAME: &str = "wis";

/// The plugin's header names (destination, subset hint, objective, session token, ...), from the
/// plugin's own definition.
pub fn headers() -> &'static HeaderNames {
    static HEADERS: OnceLock<HeaderNames> = OnceLock::new();
    HEADERS.get_or_init(HeaderNames::default)
}

/// Where the built plugin is: `$WIS_PLUGIN_WASM` (exported by `scripts/common.sh`), else
/// `$CARGO_TARGET_DIR/...`, else the workspace's `target/...`.
pub fn plugin_wasm_path() -> HostResult<PathBuf> {
    const RELATIVE: &str = "wasm32-wasip1/wasm-release/wasm_inference_scheduler.wasm";
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("WIS_PLUGIN_WASM") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join(RELATIVE));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(RELATIVE));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        HostError(format!(
            "the plugin .wasm is missing (looked at {}): run ./build.sh first",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// An Envoy that runs the built plugin as our Envoy configuration does: the `.wasm` from
/// [`plugin_wasm_path`] (a missing one fails `build()`), and a pool cluster whose override_host
/// policy reads the destination header.
pub fn envoy() -> EnvoyBuilder {
    Envoy::new().wasm_located_by(plugin_wasm_path).plugin_name(PLUGIN_NAME).override_host_header(&headers().destination)
}

/// One pod in a snapshot, with the scraper's fields.
#[derive(Debug, Clone)]
pub struct Pod {
    pub address: String,
    pub healthy: bool,
    pub stale: bool,
    pub waiting: u32,
    pub running: u32,
    pub kv_cache_usage: f64,
    pub models: Vec<String>,
    pub lora_running: Vec<String>,
    pub lora_waiting: Vec<String>,
    pub max_loras: Option<u32>,
    /// Tokens per KV block and KV blocks on the GPU (`vllm:cache_config_info`), when reported.
    pub cache_blocks: Option<(u32, u64)>,
    /// Milliseconds before the snapshot's time that the pod was last scraped.
    pub scraped_ms_ago: u64,
}

pub fn pod(address: &str) -> Pod {
    Pod {
        address: address.to_string(),
        healthy: true,
        stale: false,
        waiting: 0,
        running: 0,
        kv_cache_usage: 0.1,
        models: vec![MODEL.to_string()],
        lora_running: Vec::new(),
        lora_waiting: Vec::new(),
        max_loras: None,
        cache_blocks: None,
        scraped_ms_ago: 0,
    }
}

impl Pod {
    pub fn waiting(mut self, n: u32) -> Self {
        self.waiting = n;
        self
    }
    pub fn running(mut self, n: u32) -> Self {
        self.running = n;
        self
    }
    pub fn kv(mut self, usage: f64) -> Self {
        self.kv_cache_usage = usage;
        self
    }
    pub fn unhealthy(mut self) -> Self {
        self.healthy = false;
        self
    }
    /// The latest scrape gave no reading: the metrics are unknown.
    pub fn stale(mut self) -> Self {
        self.stale = true;
        self
    }
    /// The pod's KV cache: `block_size` tokens per block, `blocks` blocks.
    pub fn cache_blocks(mut self, block_size: u32, blocks: u64) -> Self {
        self.cache_blocks = Some((block_size, blocks));
        self
    }
    pub fn models(mut self, models: &[&str]) -> Self {
        self.models = models.iter().map(|m| m.to_string()).collect();
        self
    }
    /// LoRA adapters running on the pod, with `max` slots.
    pub fn lora(mut self, running: &[&str], max: u32) -> Self {
        self.lora_running = running.iter().map(|m| m.to_string()).collect();
        self.max_loras = Some(max);
        self
    }
    pub fn scraped_ms_ago(mut self, ms: u64) -> Self {
        self.scraped_ms_ago = ms;
        self
    }

    fn endpoint(&self, generated_at_ms: u64) -> pool::Endpoint {
        let lora = self.max_loras.map(|max_loras| LoraState {
            running: self.lora_running.clone(),
            waiting: self.lora_waiting.clone(),
            max_loras,
        });
        pool::Endpoint {
            address: self.address.clone(),
            healthy: self.healthy,
            stale: self.stale,
            last_scrape_ms: generated_at_ms.saturating_sub(self.scraped_ms_ago),
            consecutive_failures: 0,
            models: self.models.clone(),
            metrics: EndpointMetrics {
                waiting_requests: self.waiting,
                running_requests: self.running,
                kv_cache_usage: self.kv_cache_usage,
                lora,
                cache_block_size: self.cache_blocks.map(|(size, _)| size),
                cache_num_blocks: self.cache_blocks.map(|(_, blocks)| blocks),
                ..EndpointMetrics::default()
            },
            last_error: None,
        }
    }
}

/// A pool snapshot as the scraper serves it.
pub fn snapshot(sequence: u64, generated_at_ms: u64, pods: &[Pod]) -> String {
    let snapshot = PoolSnapshot {
        format_version: pool::FORMAT_VERSION,
        sequence,
        generated_at_ms,
        engine: pool::Engine::Vllm,
        endpoints: pods.iter().map(|p| p.endpoint(generated_at_ms)).collect(),
    };
    serde_json::to_string(&snapshot).unwrap_or_else(|e| panic!("a snapshot always serializes: {e}"))
}

/// `n` pods `10.0.<i/250>.<i%250+1>:8000`.
pub fn pods(n: usize) -> Vec<Pod> {
    (0..n).map(|i| pod(&format!("10.0.{}.{}:8000", i / 250, i % 250 + 1))).collect()
}

/// A chat completion body.
pub fn chat(model: &str, system: &str, user: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
}

/// The plugin's configuration with a scraper cluster and the given extras merged at top level.
pub fn config_with_scraper(extra: Value) -> Value {
    let mut config = json!({
        "pool": {"snapshotCluster": SCRAPER_CLUSTER, "refreshIntervalMs": 50, "fetchTimeoutMs": 200},
    });
    merge(&mut config, extra);
    config
}

/// Deep-merges `extra` into `base` (objects merge, anything else replaces).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

impl Exchange {
    /// The destination header's addresses (primary first); empty if the plugin set none.
    pub fn destinations(&self) -> Vec<String> {
        let values = self.upstream_header_values(&headers().destination);
        assert!(values.len() <= 1, "the destination header appears {} times upstream: {values:?}", values.len());
        values
            .first()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The primary destination; panics (with the request's fate) if there is none.
    pub fn primary(&self) -> String {
        if let Some(reply) = self.local_reply() {
            panic!(
                "expected a routing decision, got a local reply {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        self.assert_forwarded();
        self.destinations().into_iter().next().unwrap_or_else(|| {
            panic!(
                "the request went upstream without {}; upstream headers: {:?}",
                headers().destination,
                self.upstream_headers()
            )
        })
    }

    pub fn assert_destination(&self, expected_primary: &str) -> &Self {
        assert_eq!(self.primary(), expected_primary, "primary destination; full header: {:?}", self.destinations());
        self
    }
}

impl Envoy {
    /// From now on the scraper cluster answers every snapshot fetch with this body (200, 1 ms).
    pub fn scraper_replies(&self, snapshot_json: impl Into<Vec<u8>>) {
        self.upstream(SCRAPER_CLUSTER).always(UpstreamReply::json(200, snapshot_json));
    }
}
