//! One simulated vLLM server: an HTTP front end (hyper 1) over an [`Engine`] driven by a timer task.
//!
//! The engine task sleeps until the planned end of each step (model time × `--time-scale`), applies
//! it and hands every token to its request's channel; with nothing to do it waits for a request. No
//! busy loop: an idle pod costs nothing, a busy one one wake-up per engine step.
//!
//! Every response carries `x-sim-pod: <ip:port>` so routing can be observed through a proxy.
//! Faults (`POST /admin/fault {"mode": ...}` or `--fault` at start-up) act on everything but `/admin`:
//! `stall` (requests and the engine hang until the mode changes), `error500`, `close` (the connection
//! is closed without a response), `exit` (the pod stops listening and drops its connections; the other
//! pods of the fleet keep running), `none`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

use crate::api::{self, Api, ApiError};
use crate::engine::{Engine, EngineConfig, EngineRequest, FinishReason, Output, generation_seed};
use crate::metrics::Exposition;
use crate::tokenizer;

/// Header naming the pod that answered.
pub const POD_HEADER: &str = "x-sim-pod";
/// Largest request body accepted (a 40,960-token prompt is ~160 KB of text; JSON overhead on top).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Bound on persisted `vllm:lora_requests_info` label sets (vLLM keeps every one; we cap memory).
pub const MAX_LORA_INFO_SERIES: usize = 256;
/// Output length when a request sets no `max_tokens`: drawn per prompt in this range, as a model
/// stopping at EOS would (finish reason `stop`).
pub const DEFAULT_OUTPUT_TOKENS: (u32, u32) = (16, 256);

/// A fault a pod can be told to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    None,
    Stall,
    Error500,
    Close,
    Exit,
}

impl FaultMode {
    pub fn parse(s: &str) -> Result<FaultMode, String> {
        match s {
            "none" => Ok(FaultMode::None),
            "stall" => Ok(FaultMode::Stall),
            "error500" => Ok(FaultMode::Error500),
            "close" => Ok(FaultMode::Close),
            "exit" => Ok(FaultMode::Exit),
            other => Err(format!("unknown fault mode {other:?}; expected none, stall, error500, close or exit")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultMode::None => "none",
            FaultMode::Stall => "stall",
            FaultMode::Error500 => "error500",
            FaultMode::Close => "close",
            FaultMode::Exit => "exit",
        }
    }
}

/// How `vllm:lora_requests_info` lists adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraInfoStyle {
    /// Recent vLLM: every adapter with a waiting *or* running request appears in both labels.
    Recent,
    /// Older vLLM (~0.8-0.10): an adapter appears in a label only when its count there is > 0.
    Split,
}

/// Everything one pod needs to know.
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub engine: EngineConfig,
    /// `--model` (the `root` in /v1/models).
    pub model: String,
    /// `--served-model-name`: the name clients must send.
    pub served_model_name: String,
    /// `--lora-modules name=path`; LoRA is enabled when non-empty or `enable_lora`.
    pub lora_modules: Vec<(String, String)>,
    pub enable_lora: bool,
    pub enable_prompt_tokens_details: bool,
    pub time_scale: f64,
    pub lora_info_style: LoraInfoStyle,
    pub gpu_memory_utilization: f64,
    pub fault: FaultMode,
}

impl PodConfig {
    fn lora_enabled(&self) -> bool {
        self.enable_lora || !self.lora_modules.is_empty()
    }
}

type RespBody = BoxBody<Bytes, std::io::Error>;

struct Core {
    engine: Engine,
    sinks: HashMap<u64, mpsc::UnboundedSender<Output>>,
    /// `vllm:lora_requests_info` label sets (max, running, waiting) with their last Unix time.
    lora_series: Vec<((String, String, String), f64)>,
}

/// A running pod.
pub struct Pod {
    pub address: SocketAddr,
    config: PodConfig,
    core: Mutex<Core>,
    wake: Notify,
    fault: watch::Sender<FaultMode>,
    t0: Instant,
    created_unix: f64,
    next_id: AtomicU64,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Pod {
    /// Model time now: real time since start divided by the time scale.
    fn vnow(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() / self.config.time_scale
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock would be a bug; keep serving with the state as it is.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fault(&self) -> FaultMode {
        *self.fault.borrow()
    }

    pub fn set_fault(&self, mode: FaultMode) {
        self.fault.send_replace(mode);
        self.wake.notify_one();
    }

    fn abort(&self, id: u64) {
        let now = self.vnow();
        let mut core = self.lock();
        core.sinks.remove(&id);
        core.engine.abort(id, now);
    }

    /// Binds the listener and starts the pod's tasks on the current tokio runtime.
    pub async fn start(address: SocketAddr, config: PodConfig) -> std::io::Result<Arc<Pod>> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (fault, _) = watch::channel(config.fault);
        let engine = Engine::new(config.engine.clone());
        let pod = Arc::new(Pod {
            address,
            config,
            core: Mutex::new(Core { engine, sinks: HashMap::new(), lora_series: Vec::new() }),
            wake: Notify::new(),
            fault,
            t0: Instant::now(),
            created_unix: unix_now(),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(run_engine(pod.clone()));
        tokio::spawn(accept_loop(pod.clone(), listener));
        Ok(pod)
    }

    /// Resolves when the pod has exited (fault `exit`).
    pub async fn exited(&self) {
        let mut rx = self.fault.subscribe();
        let _ = rx.wait_for(|m| *m == FaultMode::Exit).await;
    }

    fn record_lora_info(core: &mut Core, config: &PodConfig) {
        if !config.lora_enabled() {
            return;
        }
        let (running, waiting) = core.engine.lora_adapters();
        let (running, waiting) = match config.lora_info_style {
            LoraInfoStyle::Split => (running.join(","), waiting.join(",")),
            LoraInfoStyle::Recent => {
                let mut all = running;
                for w in waiting {
                    if !all.contains(&w) {
                        all.push(w);
                    }
                }
                let s = all.join(",");
                (s.clone(), s)
            }
        };
        let key = (config.engine.max_loras.to_string(), running, waiting);
        let now = unix_now();
        if let Some(entry) = core.lora_series.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = now;
        } else {
            if core.lora_series.len() >= MAX_LORA_INFO_SERIES {
                core.lora_series.remove(0);
            }
            core.lora_series.push((key, now));
        }
    }

    /// The Prometheus exposition of this pod.
    pub fn metrics_text(&self) -> String {
        let core = self.lock();
        let e = &core.engine;
        let s = &e.stats;
        let model = self.config.served_model_name.as_str();
        let base: Vec<(&str, &str)> = vec![("engine", "0"), ("model_name", model)];
        let mut x = Exposition::new(self.created_unix);
        let g = |v: f64| vec![(base.clone(), v)];
        x.gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            &g(e.num_running() as f64),
        );
        x.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", &g(e.num_waiting() as f64));
        let deferred = e.num_deferred();
        let by_reason = |r: &'static str, v: usize| {
            let mut l = base.clone();
            l.push(("reason", r));
            (l, v as f64)
        };
        x.gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
            &[by_reason("capacity", e.num_waiting() - deferred), by_reason("deferred", deferred)],
        );
        let sleep = |st: &'static str, v: f64| {
            let mut l = base.clone();
            l.push(("sleep_state", st));
            (l, v)
        };
        x.gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            &[sleep("awake", 1.0), sleep("weights_offloaded", 0.0), sleep("discard_all", 0.0)],
        );
        x.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", &g(e.kv_usage()));
        x.counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            &g(s.prefix_cache_queries as f64),
        );
        x.counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            &g(s.prefix_cache_hits as f64),
        );
        x.counter(
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            &g(s.num_preemptions as f64),
        );
        x.counter("vllm:prompt_tokens", "Number of prefill tokens processed.", &g(s.prompt_tokens as f64));
        let by_source = |src: &'static str, v: u64| {
            let mut l = base.clone();
            l.push(("source", src));
            (l, v as f64)
        };
        x.counter(
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            &[
                by_source("local_compute", s.prompt_tokens_computed),
                by_source("local_cache_hit", s.prompt_tokens_cached),
                by_source("external_kv_transfer", 0),
            ],
        );
        x.counter(
            "vllm:prompt_tokens_cached",
            "Number of cached prompt tokens (local + external).",
            &g(s.prompt_tokens_cached as f64),
        );
        x.counter("vllm:generation_tokens", "Number of generation tokens processed.", &g(s.generation_tokens as f64));
        let success: Vec<_> = ["stop", "length", "abort", "error", "repetition"]
            .iter()
            .map(|r| {
                let mut l = base.clone();
                l.push(("finished_reason", r));
                (l, s.request_success.get(r).copied().unwrap_or(0) as f64)
            })
            .collect();
        x.counter("vllm:request_success", "Count of successfully processed requests.", &success);
        let hists: [(&str, &str, &crate::metrics::Histogram); 15] = [
            ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", &s.iteration_tokens),
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", &s.ttft),
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", &s.itl),
            (
                "vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.",
                &s.time_per_output_token,
            ),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", &s.e2e),
            ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", &s.queue_time),
            (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
                &s.inference_time,
            ),
            (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
                &s.prefill_time,
            ),
            (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
                &s.decode_time,
            ),
            ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", &s.request_prompt_tokens),
            ("vllm:request_generation_tokens", "Number of generation tokens processed.", &s.request_generation_tokens),
            (
                "vllm:request_max_num_generation_tokens",
                "Histogram of maximum number of requested generation tokens.",
                &s.request_max_num_generation_tokens,
            ),
            (
                "vllm:request_params_max_tokens",
                "Histogram of the max_tokens request parameter.",
                &s.request_params_max_tokens,
            ),
            ("vllm:request_params_n", "Histogram of the n request parameter.", &s.request_params_n),
            (
                "vllm:request_prefill_kv_computed_tokens",
                "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
                &s.request_prefill_kv_computed_tokens,
            ),
        ];
        for (name, help, h) in hists {
            x.histogram(name, help, &base, h);
        }
        if self.config.lora_enabled() && !core.lora_series.is_empty() {
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
        let c = &self.config;
        let block_size = c.engine.block_size.to_string();
        let num_blocks = c.engine.num_gpu_blocks.to_string();
        let gmu = format!("{:?}", c.gpu_memory_utilization);
        let prefix = if c.engine.enable_prefix_caching { "True" } else { "False" };
        // CacheConfig fields of the v0.11-era (S12 in the reference), Python str() of each value.
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
        x.finish()
    }

    fn models_json(&self) -> Value {
        let created = self.created_unix as u64;
        let c = &self.config;
        let mut data = vec![json!({
            "id": c.served_model_name, "object": "model", "created": created, "owned_by": "vllm",
            "root": c.model, "parent": null, "max_model_len": c.engine.max_model_len,
        })];
        for (name, path) in &c.lora_modules {
            data.push(json!({
                "id": name, "object": "model", "created": created, "owned_by": "vllm",
                "root": path, "parent": c.served_model_name, "max_model_len": null,
            }));
        }
        json!({"object": "list", "data": data})
    }

    /// Validates a parsed request and turns it into an engine request.
    fn admit(&self, req: &api::ParsedRequest) -> Result<EngineRequest, ApiError> {
        let c = &self.config;
        let lora = if req.model == c.served_model_name {
            None
        } else if c.lora_modules.iter().any(|(n, _)| *n == req.model) {
            Some(req.model.clone())
        } else {
            return Err(ApiError::not_found(format!("The model `{}` does not exist.", req.model)));
        };
        let prompt = match &req.prompt_ids {
            Some(ids) => ids.clone(),
            None => tokenizer::encode(&req.prompt_text),
        };
        if prompt.is_empty() {
            return Err(ApiError::bad_request("The prompt is empty; expected at least one token."));
        }
        let max_len = c.engine.max_model_len;
        if prompt.len() >= max_len {
            return Err(ApiError::bad_request(format!(
                "This model's maximum context length is {max_len} tokens. However, your request has {} input tokens. Please reduce the length of the input messages.",
                prompt.len()
            )));
        }
        let seed = generation_seed(&prompt);
        let room = (max_len - prompt.len()) as u32;
        let (output_len, finish) = match req.max_tokens {
            Some(m) if m > room => {
                return Err(ApiError::bad_request(format!(
                    "'max_tokens' or 'max_completion_tokens' is too large: {m}. This model's maximum context length is {max_len} tokens and your request has {} input tokens ({m} > {max_len} - {}).",
                    prompt.len(),
                    prompt.len()
                )));
            }
            Some(m) => (m, FinishReason::Length),
            None => {
                let (lo, hi) = DEFAULT_OUTPUT_TOKENS;
                ((lo + (seed % u64::from(hi - lo + 1)) as u32).min(room), FinishReason::Stop)
            }
        };
        // A request that can never fit the KV pool would block the queue forever.
        let blocks = (prompt.len() + output_len as usize).div_ceil(c.engine.block_size);
        if blocks > c.engine.num_gpu_blocks.saturating_sub(1) {
            return Err(ApiError::bad_request(format!(
                "The request needs {blocks} KV blocks (prompt {} + output {output_len} tokens) but the cache has only {}.",
                prompt.len(),
                c.engine.num_gpu_blocks.saturating_sub(1)
            )));
        }
        Ok(EngineRequest {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            gen_seed: seed,
            prompt,
            output_len,
            finish,
            max_tokens_param: req.max_tokens,
            lora,
        })
    }

    fn submit(&self, req: EngineRequest) -> mpsc::UnboundedReceiver<Output> {
        let (tx, rx) = mpsc::unbounded_channel();
        let now = self.vnow();
        {
            let mut core = self.lock();
            core.sinks.insert(req.id, tx);
            core.engine.add_request(req, now);
        }
        self.wake.notify_one();
        rx
    }
}

/// The engine loop of one pod (see the module comment).
async fn run_engine(pod: Arc<Pod>) {
    let mut fault = pod.fault.subscribe();
    let mut clock = 0.0f64;
    let mut busy = false;
    loop {
        let mode = *fault.borrow_and_update();
        match mode {
            FaultMode::Exit => break,
            FaultMode::Stall => {
                if fault.changed().await.is_err() {
                    break;
                }
                busy = false;
                continue;
            }
            _ => {}
        }
        let now = if busy { clock } else { clock.max(pod.vnow()) };
        let step = pod.lock().engine.schedule(now);
        let Some(step) = step else {
            busy = false;
            tokio::select! {
                _ = pod.wake.notified() => {}
                r = fault.changed() => if r.is_err() { break },
            }
            continue;
        };
        busy = true;
        let end = step.start + step.duration;
        let wake_at = pod.t0 + Duration::from_secs_f64((end * pod.config.time_scale).max(0.0));
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)).await;
        clock = end;
        let mut core = pod.lock();
        let outputs = core.engine.complete(step, end);
        Pod::record_lora_info(&mut core, &pod.config);
        let mut gone = Vec::new();
        for out in outputs {
            let (id, done) = match &out {
                Output::Token { id, .. } => (*id, false),
                Output::Finished { id, .. } => (*id, true),
            };
            let delivered = core.sinks.get(&id).is_some_and(|tx| tx.send(out).is_ok());
            if done {
                core.sinks.remove(&id);
            } else if !delivered {
                gone.push(id);
            }
        }
        for id in gone {
            core.sinks.remove(&id);
            core.engine.abort(id, end);
        }
    }
    // Exit: drop every sink so streams in flight end.
    pod.lock().sinks.clear();
}

async fn accept_loop(pod: Arc<Pod>, listener: TcpListener) {
    let mut fault = pod.fault.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = fault.wait_for(|m| *m == FaultMode::Exit) => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let pod = pod.clone();
        tokio::spawn(async move {
            let mut fault = pod.fault.subscribe();
            let svc_pod = pod.clone();
            let service = hyper::service::service_fn(move |req| handle(svc_pod.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = fault.wait_for(|m| *m == FaultMode::Exit) => {}
            }
        });
    }
}

/// Error returned to hyper to close a connection without answering (fault `close`).
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injection: closing the connection")
    }
}

impl std::error::Error for CloseConnection {}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<RespBody> {
    let body = Full::new(body.into()).map_err(|never: Infallible| match never {}).boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn error_response(e: &ApiError) -> Response<RespBody> {
    full(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), "application/json", e.body())
}

async fn handle(pod: Arc<Pod>, req: Request<Incoming>) -> Result<Response<RespBody>, CloseConnection> {
    let path = req.uri().path().to_string();
    let mut resp = if path.starts_with("/admin/") {
        admin(&pod, req).await
    } else {
        let mut fault = pod.fault.subscribe();
        let _ = fault.wait_for(|m| *m != FaultMode::Stall).await;
        match pod.fault() {
            FaultMode::Close | FaultMode::Exit => return Err(CloseConnection),
            FaultMode::Error500 => error_response(&ApiError::internal("fault injection: error500")),
            _ => route(&pod, req, &path).await,
        }
    };
    if let Ok(v) = pod.address.to_string().parse() {
        resp.headers_mut().insert(POD_HEADER, v);
    }
    Ok(resp)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(ApiError::bad_request(format!("could not read the body (limit {MAX_BODY_BYTES} bytes): {e}"))),
    }
}

async fn admin(pod: &Arc<Pod>, req: Request<Incoming>) -> Response<RespBody> {
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/admin/fault") => {
            full(StatusCode::OK, "application/json", json!({"mode": pod.fault().as_str()}).to_string())
        }
        (Method::POST, "/admin/fault") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let mode = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("mode").and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| "expected a JSON body {\"mode\": \"none|stall|error500|close|exit\"}".to_string())
                .and_then(|m| FaultMode::parse(&m));
            match mode {
                Ok(m) => {
                    pod.set_fault(m);
                    full(StatusCode::OK, "application/json", json!({"mode": m.as_str()}).to_string())
                }
                Err(msg) => error_response(&ApiError::bad_request(msg)),
            }
        }
        _ => error_response(&ApiError::not_found("unknown admin endpoint; expected GET or POST /admin/fault")),
    }
}

async fn route(pod: &Arc<Pod>, req: Request<Incoming>, path: &str) -> Response<RespBody> {
    match (req.method().clone(), path) {
        (Method::GET, "/health") => full(StatusCode::OK, "application/json", Bytes::new()),
        (Method::GET, "/metrics") => {
            full(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", pod.metrics_text())
        }
        (Method::GET, "/v1/models") => full(StatusCode::OK, "application/json", pod.models_json().to_string()),
        (Method::POST, "/v1/completions") => inference(pod, req, Api::Completions).await,
        (Method::POST, "/v1/chat/completions") => inference(pod, req, Api::Chat).await,
        (_, "/v1/completions" | "/v1/chat/completions" | "/health" | "/metrics" | "/v1/models") => full(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            json!({"detail": "Method Not Allowed"}).to_string(),
        ),
        _ => full(StatusCode::NOT_FOUND, "application/json", json!({"detail": "Not Found"}).to_string()),
    }
}

/// Aborts the engine request when the client goes away before it finished.
struct Inflight {
    pod: Arc<Pod>,
    id: u64,
    done: bool,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if !self.done {
            self.pod.abort(self.id);
        }
    }
}

fn unix_secs() -> u64 {
    unix_now() as u64
}

async fn inference(pod: &Arc<Pod>, req: Request<Incoming>, api: Api) -> Response<RespBody> {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let parsed = match api::parse_request(api, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let ereq = match pod.admit(&parsed) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let id_num = ereq.id;
    let prefix = if api == Api::Chat { "chatcmpl" } else { "cmpl" };
    let id = format!("{prefix}-{:016x}{:016x}", pod.created_unix.to_bits(), id_num);
    let rx = pod.submit(ereq);
    let guard = Inflight { pod: pod.clone(), id: id_num, done: false };
    let created = unix_secs();
    let details = pod.config.enable_prompt_tokens_details;
    if parsed.stream {
        let body = SseBody {
            rx,
            api,
            id,
            created,
            model: parsed.model,
            include_usage: parsed.include_usage,
            details,
            sent_role: api != Api::Chat,
            finished: false,
            guard,
        };
        let mut r = Response::new(BoxBody::new(body));
        if let Ok(v) = "text/event-stream; charset=utf-8".parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        return r;
    }
    collect_full(rx, guard, api, &id, created, &parsed.model, details).await
}

async fn collect_full(
    mut rx: mpsc::UnboundedReceiver<Output>,
    mut guard: Inflight,
    api: Api,
    id: &str,
    created: u64,
    model: &str,
    details: bool,
) -> Response<RespBody> {
    let mut text = String::new();
    while let Some(out) = rx.recv().await {
        match out {
            Output::Token { token, .. } => text.push_str(&token.text),
            Output::Finished { reason, prompt_tokens, completion_tokens, cached_tokens, .. } => {
                guard.done = true;
                let u = api::usage(prompt_tokens, completion_tokens, cached_tokens, details, false);
                let v = api::full_response(api, id, created, model, &text, reason.as_str(), u);
                return full(StatusCode::OK, "application/json", v.to_string());
            }
        }
    }
    guard.done = true; // the engine is gone (pod exit); nothing left to abort
    error_response(&ApiError::internal("the engine stopped before the request finished"))
}

/// A streaming response: engine outputs turned into SSE frames as they arrive.
struct SseBody {
    rx: mpsc::UnboundedReceiver<Output>,
    api: Api,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    details: bool,
    sent_role: bool,
    finished: bool,
    guard: Inflight,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.sent_role {
            this.sent_role = true;
            let chunk = api::chat_role_chunk(&this.id, this.created, &this.model);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(api::sse(&chunk))))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        // Drain everything ready into one frame: fewer writes when a step emits several outputs.
        let mut buf = String::new();
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Output::Token { token, finish, .. })) => {
                    let chunk = api::stream_chunk(
                        this.api,
                        &this.id,
                        this.created,
                        &this.model,
                        &token.text,
                        finish.map(FinishReason::as_str),
                    );
                    buf.push_str(&api::sse(&chunk));
                }
                Poll::Ready(Some(Output::Finished { prompt_tokens, completion_tokens, cached_tokens, .. })) => {
                    this.guard.done = true;
                    this.finished = true;
                    if this.include_usage {
                        let u = api::usage(prompt_tokens, completion_tokens, cached_tokens, this.details, true);
                        buf.push_str(&api::sse(&api::usage_chunk(this.api, &this.id, this.created, &this.model, u)));
                    }
                    buf.push_str(api::SSE_DONE);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                }
                Poll::Ready(None) => {
                    this.guard.done = true;
                    this.finished = true;
                    if buf.is_empty() {
                        return Poll::Ready(Some(Err(std::io::Error::other("the engine stopped mid-stream"))));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                }
                Poll::Pending => {
                    if buf.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                }
            }
        }
    }
}
