//! The scheduling core for the browser: the decision view's engine.
//!
//! The same `wasm-inference-scheduler` crate that runs inside Envoy is compiled here for
//! `wasm32-unknown-unknown` and driven by [`View`]: the page gives it the plugin's configuration
//! and the scraper's live pool snapshot, and asks it to schedule a request typed or pasted by the
//! user. Scores, weights, winner and fallbacks come from the same `Director::route` the filter
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
use serde_json::value::RawValue;
use wasm_bindgen::prelude::*;
use wasm_inference_scheduler::config::PluginConfig;
use wasm_inference_scheduler::director::Director;
use wasm_inference_scheduler::endpoints::Pool;
use wasm_inference_scheduler::memory::RoutingMemory;
use wasm_inference_scheduler::pool::{PoolSnapshot, ScrapeFailure};
use wasm_inference_scheduler::request::{self, ApiKind, RequestHeaders};
use wasm_inference_scheduler::scheduler::SchedulingContext;
use wasm_inference_scheduler::scheduler::registry::REGISTRY;

/// The director (configuration and scheduler), the latest pool and the page's own routing memory.
pub struct View {
    director: Director,
    memory: RoutingMemory,
    pool: Pool,
    /// A scraper snapshot was given (else the configured static endpoints are in use).
    scraped: bool,
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
    /// Why the scraper's latest scrape failed, when it did.
    last_error: Option<&'a ScrapeFailure>,
    /// Prefix blocks the page's memory holds for this endpoint.
    remembered_blocks: usize,
    /// The prefix index's capacity for it in the page's memory (the pod's KV cache at the page's
    /// bytes per token; the gateway's own figure is the Envoy stat `index_capacity_blocks`).
    index_capacity_blocks: usize,
}

#[derive(Debug, Serialize)]
struct PoolView<'a> {
    /// "scraper" when a snapshot was given, "static" when the configured endpoints are used.
    source: &'static str,
    sequence: u64,
    generated_at_ms: u64,
    /// Bytes per token the page's memory converts with (the configuration's starting guess: the
    /// page sees no usage reports; the gateway's learned ratio is the stat `bytes_per_token_x100`).
    bytes_per_token: f64,
    endpoints: Vec<PoolRow<'a>>,
}

#[derive(Debug, Serialize)]
struct RequestView<'a> {
    api: &'static str,
    model: &'a str,
    lora_adapter: Option<&'a str>,
    estimated_prompt_tokens: u32,
    prompt_bytes: usize,
    prefix_blocks: usize,
    stream: bool,
    include_usage: bool,
    /// What the session token came to: none, accepted, invalid, expired, endpoint gone.
    session: &'a str,
    subset: Option<&'a [String]>,
    priority: i32,
}

#[derive(Debug, Serialize)]
struct Scheduled<'a> {
    request: RequestView<'a>,
    decision: &'a RawValue,
    /// The profile's scorers and weights, in configuration order.
    weights: Vec<(String, f64)>,
    /// Whether the decision was recorded in the page's memory.
    remembered: bool,
}

impl View {
    /// A view on the plugin configuration `config_json` (the same JSON Envoy hands the filter).
    pub fn new(config_json: &str) -> Result<Self, String> {
        let config = PluginConfig::from_json(config_json.as_bytes()).map_err(|e| format!("configuration: {e}"))?;
        let director = Director::new(config).map_err(|e| format!("configuration: {e}"))?;
        let mut memory = RoutingMemory::new(director.config());
        let pool = director.install(&mut memory, PoolSnapshot::from_static(&director.config().pool.endpoints));
        Ok(Self { director, memory, pool, scraped: false, decisions: 0 })
    }

    /// Takes the scraper's latest snapshot (`GET /snapshot`), read by the filter's own parser.
    pub fn set_snapshot(&mut self, snapshot_json: &str) -> Result<usize, String> {
        let snapshot = PoolSnapshot::from_json(snapshot_json.as_bytes()).map_err(|e| format!("pool snapshot: {e}"))?;
        self.pool = self.director.install(&mut self.memory, snapshot);
        self.scraped = true;
        Ok(self.pool.len())
    }

    /// The pool as the scheduler sees it at `now_ms`, as JSON.
    pub fn pool_json(&self, now_ms: u64) -> String {
        let rows = self
            .pool
            .endpoints()
            .iter()
            .zip(self.pool.ids())
            .map(|(e, &id)| {
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
                    last_error: e.last_error.as_ref(),
                    remembered_blocks: self.memory.prefix.endpoint_len(id),
                    index_capacity_blocks: self.memory.capacity_blocks(id),
                }
            })
            .collect();
        let view = PoolView {
            source: if self.scraped { "scraper" } else { "static" },
            sequence: self.pool.snapshot.sequence,
            generated_at_ms: self.pool.snapshot.generated_at_ms,
            bytes_per_token: self.memory.calibration().pool_bytes_per_token(),
            endpoints: rows,
        };
        serde_json::to_string(&view).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The profile's scorers and weights as JSON `[["queue-scorer", 2.0], ...]`.
    pub fn weights_json(&self) -> String {
        serde_json::to_string(&self.director.scheduler().weights()).unwrap_or_default()
    }

    /// Every plugin type this build knows (the registry the configuration is read with), as JSON
    /// `[{"name": ..., "kind": ..., "parameters": ...}]`.
    pub fn plugin_types_json(&self) -> String {
        serde_json::to_string(REGISTRY).unwrap_or_default()
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
        let config = self.director.config();
        let api = ApiKind::from_path(path, config).ok_or_else(|| {
            format!(
                "'{path}' is not an inference path of this configuration ({}); the filter passes it through",
                config.inference_paths.join(", ")
            )
        })?;
        let headers = self.headers(headers_json)?;
        // Parsed here too only to show the request; the decision below parses it itself.
        let request = request::parse_request(api, body.as_bytes(), &headers, config).map_err(|e| e.to_string())?;
        self.decisions += 1;
        let ctx = SchedulingContext {
            now_ms,
            pool: &self.pool,
            memory: &self.memory,
            random_seed: self.decisions.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_ms,
            detail: true,
        };
        let mut routed = self.director.route(api, body.as_bytes(), &headers, &ctx).map_err(|reply| {
            let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            let message = body["error"]["message"].as_str().unwrap_or("rejected").to_string();
            format!("{} {}: {message}", reply.status, reply.code)
        })?;
        let decision = routed.decision.to_json(&self.pool);
        let decision = RawValue::from_string(decision).map_err(|e| e.to_string())?;
        let view = Scheduled {
            request: RequestView {
                api: match api {
                    ApiKind::Completions => "completions",
                    ApiKind::ChatCompletions => "chat-completions",
                },
                model: &request.model,
                lora_adapter: request.lora_adapter.as_deref(),
                estimated_prompt_tokens: routed.flight.prompt_tokens(),
                prompt_bytes: request.prompt_bytes,
                prefix_blocks: request.block_hashes.len(),
                stream: request.stream,
                include_usage: request.include_usage,
                subset: request.subset.as_deref(),
                priority: request.priority,
                session: match routed.session {
                    wasm_inference_scheduler::director::SessionOutcome::None => "none",
                    wasm_inference_scheduler::director::SessionOutcome::Accepted => "accepted",
                    wasm_inference_scheduler::director::SessionOutcome::Invalid => "invalid",
                    wasm_inference_scheduler::director::SessionOutcome::Expired => "expired",
                    wasm_inference_scheduler::director::SessionOutcome::EndpointGone => "endpoint gone",
                },
            },
            decision: &decision,
            weights: self.director.scheduler().weights(),
            remembered: remember,
        };
        let json = serde_json::to_string(&view).map_err(|e| e.to_string())?;
        if remember {
            self.memory.apply(&routed.flight.routed_event());
            for event in routed.flight.finish() {
                self.memory.apply(&event);
            }
        }
        Ok(json)
    }

    /// Forgets everything the page's memory recorded.
    pub fn forget(&mut self) {
        self.memory = RoutingMemory::new(self.director.config());
        let snapshot = self.pool.snapshot.clone();
        self.pool = self.director.install(&mut self.memory, snapshot);
    }

    fn headers(&self, headers_json: &str) -> Result<RequestHeaders, String> {
        let trimmed = headers_json.trim();
        if trimmed.is_empty() {
            return Ok(RequestHeaders::default());
        }
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("headers must be a JSON object of strings: {e}"))?;
        let names = &self.director.config().headers;
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

    #[wasm_bindgen(js_name = pluginTypesJson)]
    pub fn plugin_types_json(&self) -> String {
        self.inner.plugin_types_json()
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
