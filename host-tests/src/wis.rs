//! Helpers for stories about this project's plugin: its header names, pool snapshots in the
//! scraper's wire format (`plugin/src/pool.rs`), OpenAI-style request bodies.

use crate::story::Exchange;
use crate::{Envoy, UpstreamReply};
use serde_json::{Value, json};

/// The header the plugin sets: primary endpoint, then fallbacks.
pub const DESTINATION: &str = "x-gateway-destination-endpoint";
/// The subset hint a client (or the gateway) may send.
pub const SUBSET: &str = "x-gateway-destination-endpoint-subset";
pub const OBJECTIVE: &str = "x-gateway-inference-objective";
pub const SESSION: &str = "x-session-token";
pub const CHAT: &str = "/v1/chat/completions";
pub const COMPLETIONS: &str = "/v1/completions";
pub const MODEL: &str = "Qwen/Qwen3-0.6B";
/// The scraper cluster [`config_with_scraper`] configures.
pub const SCRAPER_CLUSTER: &str = "wis-scraper";

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

    fn to_json(&self, generated_at_ms: u64) -> Value {
        let mut metrics = json!({
            "waiting_requests": self.waiting,
            "running_requests": self.running,
            "kv_cache_usage": self.kv_cache_usage,
        });
        if let Some(max) = self.max_loras {
            metrics["lora"] = json!({"running": self.lora_running, "waiting": self.lora_waiting, "max_loras": max});
        }
        json!({
            "address": self.address,
            "healthy": self.healthy,
            "stale": self.stale,
            "last_scrape_ms": generated_at_ms.saturating_sub(self.scraped_ms_ago),
            "consecutive_failures": 0,
            "models": self.models,
            "metrics": metrics,
        })
    }
}

/// A pool snapshot as the scraper serves it.
pub fn snapshot(sequence: u64, generated_at_ms: u64, pods: &[Pod]) -> String {
    json!({
        "format_version": 1,
        "sequence": sequence,
        "generated_at_ms": generated_at_ms,
        "engine": "vllm",
        "endpoints": pods.iter().map(|p| p.to_json(generated_at_ms)).collect::<Vec<_>>(),
    })
    .to_string()
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
        let values = self.upstream_header_values(DESTINATION);
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
            panic!("the request went upstream without {DESTINATION}; upstream headers: {:?}", self.upstream_headers())
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
