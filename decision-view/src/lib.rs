//! The scheduling core for the browser: the decision view's engine.
//!
//! The same `wasm-inference-scheduler` crate that runs inside Envoy is compiled here for
//! `wasm32-unknown-unknown` and driven by [`View`]: the page gives it the plugin's configuration
//! and the scraper's live pool snapshot, and asks it to schedule a request typed or pasted by the
//! user. Scores, weights, winner and fallbacks come from the same `Scheduler::schedule` the filter
//! calls, so what the page shows is what the gateway would compute on the same pool and memory.
//!
//! The one thing the page cannot see is the gateway's routing memory (it lives in Envoy's shared
//! data). The view keeps its own: every request it schedules with `remember` is recorded where it
//! was routed, exactly as the filter records it, so follow-up turns of a conversation typed into
//! the page show their prefix affinity. Decisions the gateway really made arrive separately, as
//! the JSON debug header in Envoy's access log, and need no recomputation.
//!
//! [`View`] is plain Rust (tested natively); [`DecisionView`] is its thin `wasm-bindgen` face.

use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_inference_scheduler::config::PluginConfig;
use wasm_inference_scheduler::decision::Decision;
use wasm_inference_scheduler::memory::{RoutingEvent, RoutingMemory};
use wasm_inference_scheduler::pool::PoolSnapshot;
use wasm_inference_scheduler::request::{self, ApiKind, RequestHeaders};
use wasm_inference_scheduler::scheduler::{Scheduler, SchedulingContext};

/// The scheduler, its configuration, the latest pool and the page's own routing memory.
pub struct View {
    config: PluginConfig,
    scheduler: Scheduler,
    memory: RoutingMemory,
    snapshot: Option<PoolSnapshot>,
    static_pool: PoolSnapshot,
    decisions: u64,
}

/// One pool row for the page.
#[derive(Debug, Serialize)]
struct PoolRow<'a> {
    address: &'a str,
    healthy: bool,
    stale: bool,
    /// Milliseconds since the last successful scrape; `None` when never scraped.
    metrics_age_ms: Option<u64>,
    consecutive_failures: u32,
    waiting_requests: u32,
    running_requests: u32,
    kv_cache_usage: f64,
    models: &'a [String],
    lora_running: &'a [String],
    lora_waiting: &'a [String],
    max_loras: Option<u32>,
    /// The engine's own prefix-cache hit ratio since it started (hits / queries).
    prefix_cache_hit_ratio: Option<f64>,
    /// Prefix blocks the page's memory holds for this endpoint.
    remembered_blocks: usize,
}

#[derive(Debug, Serialize)]
struct PoolView<'a> {
    /// "scraper" when a snapshot was given, "static" when the configured endpoints are used.
    source: &'static str,
    sequence: u64,
    generated_at_ms: u64,
    endpoints: Vec<PoolRow<'a>>,
}

#[derive(Debug, Serialize)]
struct RequestView<'a> {
    api: &'static str,
    model: &'a str,
    lora_adapter: Option<&'a str>,
    estimated_prompt_tokens: u32,
    prompt_chars: usize,
    prefix_blocks: usize,
    stream: bool,
    include_usage: bool,
    session_endpoint: Option<&'a str>,
    subset: Option<&'a [String]>,
    priority: i32,
}

#[derive(Debug, Serialize)]
struct Scheduled<'a> {
    request: RequestView<'a>,
    decision: &'a Decision,
    /// The profile's scorers and weights, in configuration order.
    weights: Vec<(String, f64)>,
    /// Whether the decision was recorded in the page's memory.
    remembered: bool,
}

impl View {
    /// A view on the plugin configuration `config_json` (the same JSON Envoy hands the filter).
    pub fn new(config_json: &str) -> Result<Self, String> {
        let config = PluginConfig::from_json(config_json.as_bytes()).map_err(|e| format!("configuration: {e}"))?;
        let scheduler = Scheduler::new(&config).map_err(|e| format!("configuration: {e}"))?;
        Ok(Self {
            memory: RoutingMemory::new(&config),
            static_pool: PoolSnapshot::from_static(&config.pool.endpoints),
            config,
            scheduler,
            snapshot: None,
            decisions: 0,
        })
    }

    /// Takes the scraper's latest snapshot (`GET /snapshot`), read by the filter's own parser.
    pub fn set_snapshot(&mut self, snapshot_json: &str) -> Result<usize, String> {
        let snapshot = PoolSnapshot::from_json(snapshot_json.as_bytes()).map_err(|e| format!("pool snapshot: {e}"))?;
        self.memory.observe_pool(&snapshot);
        let endpoints = snapshot.endpoints.len();
        self.snapshot = Some(snapshot);
        Ok(endpoints)
    }

    fn pool(&self) -> &PoolSnapshot {
        self.snapshot.as_ref().unwrap_or(&self.static_pool)
    }

    /// The pool as the scheduler sees it at `now_ms`, as JSON.
    pub fn pool_json(&self, now_ms: u64) -> String {
        let pool = self.pool();
        let rows = pool
            .endpoints
            .iter()
            .map(|e| {
                let m = &e.metrics;
                let ratio = match (m.prefix_cache_hits_total, m.prefix_cache_queries_total) {
                    (Some(hits), Some(queries)) if queries > 0.0 => Some(hits / queries),
                    _ => None,
                };
                PoolRow {
                    address: &e.address,
                    healthy: e.healthy,
                    stale: e.stale,
                    metrics_age_ms: (e.last_scrape_ms > 0).then(|| e.metrics_age_ms(now_ms)),
                    consecutive_failures: e.consecutive_failures,
                    waiting_requests: m.waiting_requests,
                    running_requests: m.running_requests,
                    kv_cache_usage: m.kv_cache_usage,
                    models: &e.models,
                    lora_running: m.lora.as_ref().map_or(&[], |l| &l.running),
                    lora_waiting: m.lora.as_ref().map_or(&[], |l| &l.waiting),
                    max_loras: m.lora.as_ref().map(|l| l.max_loras),
                    prefix_cache_hit_ratio: ratio,
                    remembered_blocks: self.memory.prefix.endpoint_len(&e.address),
                }
            })
            .collect();
        let view = PoolView {
            source: if self.snapshot.is_some() { "scraper" } else { "static" },
            sequence: pool.sequence,
            generated_at_ms: pool.generated_at_ms,
            endpoints: rows,
        };
        serde_json::to_string(&view).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The profile's scorers and weights as JSON `[["queue-scorer", 2.0], ...]`.
    pub fn weights_json(&self) -> String {
        serde_json::to_string(&self.scheduler.weights()).unwrap_or_default()
    }

    /// Schedules one request exactly as the filter would: `path` picks the API (and must be an
    /// inference path), `body` is the OpenAI request body, `headers_json` an object of request
    /// headers (session token, subset hint, objective; names from the configuration). With
    /// `remember`, the decision is recorded in the page's routing memory like the filter records
    /// it (the prefix at the winner; the request counted as finished at once).
    pub fn schedule(
        &mut self,
        path: &str,
        body: &str,
        headers_json: &str,
        now_ms: u64,
        remember: bool,
    ) -> Result<String, String> {
        let api = ApiKind::from_path(path, &self.config).ok_or_else(|| {
            format!(
                "'{path}' is not an inference path of this configuration ({}); the filter passes it through",
                self.config.inference_paths.join(", ")
            )
        })?;
        let headers = self.headers(headers_json)?;
        let request =
            request::parse_request(api, body.as_bytes(), &headers, &self.config).map_err(|e| e.to_string())?;
        self.decisions += 1;
        let context = SchedulingContext {
            now_ms,
            snapshot: self.snapshot.as_ref().unwrap_or(&self.static_pool),
            memory: &self.memory,
            random_seed: self.decisions.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_ms,
        };
        let decision = self.scheduler.schedule(&request, &context).map_err(|e| e.to_string())?;
        if remember {
            self.memory.apply(&RoutingEvent::Routed {
                endpoint: decision.primary.clone(),
                hashes: request.block_hashes.clone(),
                prompt_tokens: request.estimated_prompt_tokens,
            });
            self.memory.apply(&RoutingEvent::Released {
                endpoint: decision.primary.clone(),
                prompt_tokens: request.estimated_prompt_tokens,
            });
        }
        let view = Scheduled {
            request: RequestView {
                api: match api {
                    ApiKind::Completions => "completions",
                    ApiKind::ChatCompletions => "chat-completions",
                },
                model: &request.model,
                lora_adapter: request.lora_adapter.as_deref(),
                estimated_prompt_tokens: request.estimated_prompt_tokens,
                prompt_chars: request.prompt_chars,
                prefix_blocks: request.block_hashes.len(),
                stream: request.stream,
                include_usage: request.include_usage,
                session_endpoint: request.session_endpoint.as_deref(),
                subset: request.subset.as_deref(),
                priority: request.priority,
            },
            decision: &decision,
            weights: self.scheduler.weights(),
            remembered: remember,
        };
        serde_json::to_string(&view).map_err(|e| e.to_string())
    }

    /// Forgets everything the page's memory recorded.
    pub fn forget(&mut self) {
        self.memory = RoutingMemory::new(&self.config);
        if let Some(snapshot) = &self.snapshot {
            self.memory.observe_pool(snapshot);
        }
    }

    fn headers(&self, headers_json: &str) -> Result<RequestHeaders, String> {
        let trimmed = headers_json.trim();
        if trimmed.is_empty() {
            return Ok(RequestHeaders::default());
        }
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("headers must be a JSON object of strings: {e}"))?;
        let names = &self.config.headers;
        let mut headers = RequestHeaders::default();
        for (name, value) in map {
            let value = value.as_str().ok_or_else(|| format!("header '{name}' must be a string"))?.to_string();
            let name = name.to_ascii_lowercase();
            if name == names.subset {
                headers.subset = Some(value);
            } else if name == names.objective {
                headers.objective = Some(value);
            } else if name == names.session {
                headers.session_token = Some(value);
            }
        }
        Ok(headers)
    }
}

/// [`View`] for JavaScript. Errors become exceptions carrying the message.
#[wasm_bindgen]
pub struct DecisionView {
    inner: View,
}

#[wasm_bindgen]
impl DecisionView {
    #[wasm_bindgen(constructor)]
    pub fn new(config_json: &str) -> Result<DecisionView, JsError> {
        View::new(config_json).map(|inner| Self { inner }).map_err(|e| JsError::new(&e))
    }

    /// Returns the number of endpoints in the snapshot.
    #[wasm_bindgen(js_name = setSnapshot)]
    pub fn set_snapshot(&mut self, snapshot_json: &str) -> Result<usize, JsError> {
        self.inner.set_snapshot(snapshot_json).map_err(|e| JsError::new(&e))
    }

    #[wasm_bindgen(js_name = poolJson)]
    pub fn pool_json(&self, now_ms: f64) -> String {
        self.inner.pool_json(ms(now_ms))
    }

    #[wasm_bindgen(js_name = weightsJson)]
    pub fn weights_json(&self) -> String {
        self.inner.weights_json()
    }

    pub fn schedule(
        &mut self,
        path: &str,
        body: &str,
        headers_json: &str,
        now_ms: f64,
        remember: bool,
    ) -> Result<String, JsError> {
        self.inner.schedule(path, body, headers_json, ms(now_ms), remember).map_err(|e| JsError::new(&e))
    }

    pub fn forget(&mut self) {
        self.inner.forget();
    }
}

/// JavaScript's `Date.now()` as Unix milliseconds (negative or NaN → 0).
fn ms(now_ms: f64) -> u64 {
    if now_ms.is_finite() && now_ms > 0.0 { now_ms as u64 } else { 0 }
}
