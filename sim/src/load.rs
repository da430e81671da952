//! `sim load`: an OpenAI-API load generator that measures what users feel (TTFT, inter-token
//! latency, end-to-end latency, errors) and what the fleet did (prefix-cache hit rate from the pods'
//! counters, which pod served each request).
//!
//! Workloads:
//! - `shared-prefix`: G groups each with a system prompt of S tokens; each request is one group's
//!   prompt plus a fresh question of Q tokens, asking for O output tokens.
//! - `multi-turn`: conversations that start like shared-prefix and then resend the whole history
//!   plus their own previous replies and a new question, for T turns.
//! - `lora-mix`: shared-prefix requests spread uniformly over LoRA adapters (from --loras, or the
//!   adapters the target lists in /v1/models).
//!
//! Arrivals are Poisson at --rate, or a fixed number of requests in flight (--concurrency). Every
//! run is bounded by --duration (and --requests), every request by --timeout-s.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Flags of `sim load`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct LoadArgs {
    /// Base URL(s) to load, comma-separated (several = client-side round-robin, the no-router baseline).
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<String>,
    /// How several targets share the load: round-robin, random, or group (group g → target g mod N:
    /// client-side prefix affinity, an ideal-router reference).
    #[arg(long, default_value = "round-robin")]
    pub spread: String,
    /// shared-prefix, multi-turn or lora-mix.
    #[arg(long, default_value = "shared-prefix")]
    pub workload: String,
    /// chat (/v1/chat/completions) or completions (/v1/completions).
    #[arg(long, default_value = "chat")]
    pub api: String,
    /// Model name sent in requests (the base model; lora-mix sends adapter names).
    #[arg(long, default_value = "qwen3-0.6b")]
    pub model: String,
    /// Poisson arrival rate in requests per second (exclusive with --concurrency).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Fixed number of requests in flight.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long to send requests: 90, 90s, 2m, 500ms.
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Number of distinct system prompts (G).
    #[arg(long, default_value_t = 8)]
    pub groups: usize,
    /// System prompt length in tokens (S).
    #[arg(long, default_value_t = 1000)]
    pub system_tokens: usize,
    /// Question length in tokens (Q).
    #[arg(long, default_value_t = 100)]
    pub question_tokens: usize,
    /// Output tokens per request (O, sent as max_tokens).
    #[arg(long, default_value_t = 128)]
    pub output_tokens: u32,
    /// Turns per conversation (multi-turn).
    #[arg(long, default_value_t = 5)]
    pub turns: usize,
    /// LoRA adapters for lora-mix (default: the adapters in the first target's /v1/models).
    #[arg(long, value_delimiter = ',')]
    pub loras: Vec<String>,
    /// lora-mix: share of requests sent to the base model instead of an adapter (0..=1).
    #[arg(long, default_value_t = 0.0)]
    pub base_share: f64,
    /// Send non-streaming requests (default: streaming with include_usage).
    #[arg(long)]
    pub no_stream: bool,
    /// Response header naming the serving pod.
    #[arg(long, default_value = "x-sim-pod")]
    pub served_by_header: String,
    /// Pod addresses (ip:port) whose /metrics give the fleet-wide prefix-cache hit rate.
    #[arg(long, value_delimiter = ',')]
    pub fleet: Vec<String>,
    /// Explicit metrics URLs (override --fleet; default: the targets' /metrics).
    #[arg(long, value_delimiter = ',')]
    pub metrics_urls: Vec<String>,
    /// Write the summary and every request's record to this JSON file.
    #[arg(long)]
    pub out: Option<String>,
    /// Seed of every random choice (groups, questions, arrivals).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Cap on requests in flight in --rate mode (arrivals beyond it are counted as dropped).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Longest run or request timeout accepted: a week; anything longer is a typo.
const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

/// Parses 90, 90s, 2m, 500ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("bad duration {s:?}; expected e.g. 90s, 2m, 500ms"))?;
    if !(v >= 0.0 && v * mult <= MAX_DURATION_S) {
        return Err(format!("bad duration {s:?}; expected 0 to {MAX_DURATION_S} seconds"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// One request's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Seconds since the run started.
    pub start_s: f64,
    pub target: String,
    pub model: String,
    pub group: usize,
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
}

/// A run's full result (what --out writes).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub args: LoadArgs,
    pub summary: Summary,
    pub records: Vec<RequestRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    SharedPrefix,
    MultiTurn,
    LoraMix,
}

/// A conversation in progress (multi-turn) or a one-shot request's context.
#[derive(Debug, Clone)]
struct Conversation {
    group: usize,
    turn: usize,
    messages: Vec<(String, String)>,
}

/// The request generator (shared by every sender; a mutex around it is cheap next to a request).
struct Generator {
    workload: Workload,
    rng: SmallRng,
    system_prompts: Vec<String>,
    question_tokens: usize,
    turns: usize,
    models: Vec<String>,
    base_model: String,
    base_share: f64,
    idle: VecDeque<Conversation>,
}

/// A text of exactly `n` simulator tokens: words of three letters with a leading space.
fn words(rng: &mut SmallRng, n: usize) -> String {
    let mut s = String::with_capacity(n * 4);
    for _ in 0..n {
        s.push(' ');
        for _ in 0..3 {
            s.push((b'a' + rng.random_range(0..26u8)) as char);
        }
    }
    s
}

impl Generator {
    fn new(args: &LoadArgs, workload: Workload, models: Vec<String>) -> Self {
        let system_prompts = (0..args.groups.max(1))
            .map(|g| {
                let mut r = SmallRng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(g as u64));
                format!("You are assistant {g}.{}", words(&mut r, args.system_tokens.saturating_sub(4)))
            })
            .collect();
        Generator {
            workload,
            rng: SmallRng::seed_from_u64(args.seed),
            system_prompts,
            question_tokens: args.question_tokens.max(1),
            turns: args.turns.max(1),
            models,
            base_model: args.model.clone(),
            base_share: if workload == Workload::LoraMix { args.base_share.clamp(0.0, 1.0) } else { 0.0 },
            idle: VecDeque::new(),
        }
    }

    /// The next request: a conversation with a new user question appended, and the model to ask.
    fn next(&mut self) -> (Conversation, String) {
        let mut conv = match self.workload {
            Workload::MultiTurn => self.idle.pop_front(),
            _ => None,
        }
        .unwrap_or_else(|| {
            let group = self.rng.random_range(0..self.system_prompts.len());
            Conversation { group, turn: 0, messages: vec![("system".into(), self.system_prompts[group].clone())] }
        });
        let question = format!("Question:{}", words(&mut self.rng, self.question_tokens.saturating_sub(2)));
        conv.messages.push(("user".into(), question));
        conv.turn += 1;
        let model = if self.base_share > 0.0 && self.rng.random::<f64>() < self.base_share {
            self.base_model.clone()
        } else {
            self.models[self.rng.random_range(0..self.models.len())].clone()
        };
        (conv, model)
    }

    /// Returns a conversation after its reply (multi-turn keeps it for its next turn).
    fn done(&mut self, mut conv: Conversation, reply: Option<String>) {
        if self.workload != Workload::MultiTurn {
            return;
        }
        match reply {
            Some(r) if conv.turn < self.turns => {
                conv.messages.push(("assistant".into(), r));
                self.idle.push_back(conv);
            }
            _ => {} // finished or failed: a new conversation takes its place
        }
    }
}

/// A parsed `http://host:port/path` base URL.
#[derive(Debug, Clone)]
struct Target {
    authority: String,
    base_path: String,
    label: String,
}

fn parse_target(url: &str) -> Result<Target, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("bad URL {url:?}: only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| format!("bad URL {url:?}: no host:port"))?.to_string();
    let authority = if authority.contains(':') { authority } else { format!("{authority}:80") };
    Ok(Target { authority, base_path: uri.path().trim_end_matches('/').to_string(), label: url.to_string() })
}

/// A plain HTTP/1.1 exchange on a fresh connection. Returns the status, headers and body stream.
async fn http_request(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let stream = TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = Request::builder().method(method).uri(path).header("host", authority);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| format!("request: {e}"))?;
    sender.send_request(req).await.map_err(|e| format!("send: {e}"))
}

/// GET a URL's body as text (for /metrics and /v1/models).
pub async fn http_get_text(url: &str, timeout: Duration) -> Result<String, String> {
    let t = parse_target(url)?;
    let path = if t.base_path.is_empty() { "/".to_string() } else { t.base_path.clone() };
    let fut = async {
        let resp = http_request(&t.authority, "GET", &path, None).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| format!("GET {url}: timed out"))?
}

/// Sum of every sample of `name` in an exposition.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(name)
            && (rest.starts_with('{') || rest.starts_with(' '))
            && let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// Fleet-wide (hits, queries) of the prefix cache, or None when a pod did not answer.
async fn prefix_counters(urls: &[String]) -> Option<(f64, f64)> {
    if urls.is_empty() {
        return None;
    }
    let (mut hits, mut queries) = (0.0, 0.0);
    for u in urls {
        let text = http_get_text(u, Duration::from_secs(5)).await.ok()?;
        hits += metric_sum(&text, "vllm:prefix_cache_hits_total")?;
        queries += metric_sum(&text, "vllm:prefix_cache_queries_total")?;
    }
    Some((hits, queries))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spread {
    RoundRobin,
    Random,
    Group,
}

struct Shared {
    args: LoadArgs,
    spread: Spread,
    api: &'static str,
    targets: Vec<Target>,
    next_target: AtomicUsize,
    generator: Mutex<Generator>,
    t0: Instant,
}

fn body_for(api: &str, conv: &Conversation, model: &str, max_tokens: u32, stream: bool) -> String {
    let mut b = if api == "chat" {
        let messages: Vec<Value> = conv.messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
        json!({"model": model, "messages": messages, "max_tokens": max_tokens})
    } else {
        let prompt: String = conv.messages.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join("\n");
        json!({"model": model, "prompt": prompt, "max_tokens": max_tokens})
    };
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b.to_string()
}

/// Sends one request and measures it.
async fn one_request(shared: &Shared) -> RequestRecord {
    let (conv, model) = shared.generator.lock().unwrap_or_else(|p| p.into_inner()).next();
    let n = shared.targets.len();
    let i = match shared.spread {
        Spread::RoundRobin => shared.next_target.fetch_add(1, Ordering::Relaxed) % n,
        Spread::Group => conv.group % n,
        Spread::Random => shared.generator.lock().unwrap_or_else(|p| p.into_inner()).rng.random_range(0..n),
    };
    let target = &shared.targets[i];
    let stream = !shared.args.no_stream;
    let body = body_for(shared.api, &conv, &model, shared.args.output_tokens, stream);
    let path =
        format!("{}/v1/{}", target.base_path, if shared.api == "chat" { "chat/completions" } else { "completions" });
    let start = Instant::now();
    let mut rec = RequestRecord {
        start_s: start.duration_since(shared.t0).as_secs_f64(),
        target: target.label.clone(),
        model,
        group: conv.group,
        turn: conv.turn,
        status: 0,
        served_by: None,
        ttft_s: None,
        e2e_s: 0.0,
        itl_mean_s: None,
        itl_s: Vec::new(),
        output_tokens: 0,
        prompt_tokens: None,
        cached_tokens: None,
        error: None,
        reply: String::new(),
    };
    let timeout = Duration::from_secs_f64(shared.args.timeout_s);
    let outcome =
        tokio::time::timeout(timeout, exchange(&target.authority, &path, body, stream, &shared.args, start, &mut rec))
            .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => rec.error = Some(e),
        Err(_) => rec.error = Some(format!("timeout after {:.1}s", timeout.as_secs_f64())),
    }
    rec.e2e_s = start.elapsed().as_secs_f64();
    if !rec.itl_s.is_empty() {
        rec.itl_mean_s = Some(rec.itl_s.iter().sum::<f64>() / rec.itl_s.len() as f64);
    }
    let reply = rec.ok().then(|| rec.reply.clone());
    shared.generator.lock().unwrap_or_else(|p| p.into_inner()).done(conv, reply);
    rec
}

async fn exchange(
    authority: &str,
    path: &str,
    body: String,
    stream: bool,
    args: &LoadArgs,
    start: Instant,
    rec: &mut RequestRecord,
) -> Result<(), String> {
    let resp = http_request(authority, "POST", path, Some(body)).await?;
    rec.status = resp.status().as_u16();
    rec.served_by =
        resp.headers().get(args.served_by_header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = resp.into_body();
    if rec.status != 200 {
        let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(format!("HTTP {}: {msg}", rec.status));
    }
    if !stream {
        let bytes = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("response is not JSON: {e}"))?;
        rec.ttft_s = Some(start.elapsed().as_secs_f64());
        read_usage(&v["usage"], rec);
        let choice = &v["choices"][0];
        rec.reply = choice["message"]["content"].as_str().or(choice["text"].as_str()).unwrap_or_default().to_string();
        return Ok(());
    }
    let mut buf = String::new();
    let mut last_token: Option<Instant> = None;
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("stream broke after {} tokens: {e}", rec.output_tokens))?;
        let Ok(data) = frame.into_data() else { continue };
        buf.push_str(&String::from_utf8_lossy(&data));
        let now = Instant::now();
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(payload) = line.strip_prefix("data: ") else { continue };
                if payload.trim() == "[DONE]" {
                    done = true;
                    continue;
                }
                let v: Value = serde_json::from_str(payload).map_err(|e| format!("bad SSE event {payload:?}: {e}"))?;
                if !v["usage"].is_null() {
                    read_usage(&v["usage"], rec);
                }
                let Some(choice) = v["choices"].get(0) else { continue };
                let text = choice["delta"]["content"].as_str().or(choice["text"].as_str()).unwrap_or_default();
                if text.is_empty() {
                    continue;
                }
                rec.reply.push_str(text);
                rec.output_tokens += 1;
                match last_token {
                    None => rec.ttft_s = Some(now.duration_since(start).as_secs_f64()),
                    Some(prev) => rec.itl_s.push(now.duration_since(prev).as_secs_f64()),
                }
                last_token = Some(now);
            }
        }
    }
    if !done {
        return Err(format!("stream ended without [DONE] after {} tokens", rec.output_tokens));
    }
    Ok(())
}

fn read_usage(u: &Value, rec: &mut RequestRecord) {
    if let Some(p) = u["prompt_tokens"].as_u64() {
        rec.prompt_tokens = Some(p);
    }
    if let Some(c) = u["completion_tokens"].as_u64() {
        rec.output_tokens = c as usize;
    }
    if let Some(c) = u["prompt_tokens_details"]["cached_tokens"].as_u64() {
        rec.cached_tokens = Some(c);
    }
}

/// Runs a load test; prints nothing (see [`render_table`]).
pub async fn run(args: LoadArgs) -> Result<Report, String> {
    let workload = match args.workload.as_str() {
        "shared-prefix" => Workload::SharedPrefix,
        "multi-turn" => Workload::MultiTurn,
        "lora-mix" => Workload::LoraMix,
        other => return Err(format!("unknown --workload {other:?}; expected shared-prefix, multi-turn or lora-mix")),
    };
    let api: &'static str = match args.api.as_str() {
        "chat" => "chat",
        "completions" => "completions",
        other => return Err(format!("unknown --api {other:?}; expected chat or completions")),
    };
    let spread = match args.spread.as_str() {
        "round-robin" => Spread::RoundRobin,
        "random" => Spread::Random,
        "group" => Spread::Group,
        other => return Err(format!("unknown --spread {other:?}; expected round-robin, random or group")),
    };
    let duration = parse_duration(&args.duration)?;
    if !(args.timeout_s > 0.0 && args.timeout_s <= MAX_DURATION_S) {
        return Err(format!("--timeout-s must be in (0, {MAX_DURATION_S}], got {}", args.timeout_s));
    }
    let targets: Vec<Target> = args.target.iter().map(|t| parse_target(t)).collect::<Result<_, _>>()?;
    if targets.is_empty() {
        return Err("--target needs at least one URL".into());
    }
    match (args.rate, args.concurrency) {
        (Some(_), Some(_)) => return Err("give --rate or --concurrency, not both".into()),
        (Some(r), None) if !(r > 0.0 && r.is_finite()) => return Err(format!("--rate must be > 0, got {r}")),
        (None, Some(0)) => return Err("--concurrency must be at least 1".into()),
        _ => {}
    }
    let models = if workload == Workload::LoraMix {
        if args.loras.is_empty() { discover_loras(&targets[0]).await? } else { args.loras.clone() }
    } else {
        vec![args.model.clone()]
    };
    let metrics_urls: Vec<String> = if !args.metrics_urls.is_empty() {
        args.metrics_urls.clone()
    } else if !args.fleet.is_empty() {
        args.fleet.iter().map(|a| format!("http://{a}/metrics")).collect()
    } else {
        targets.iter().map(|t| format!("http://{}{}/metrics", t.authority, t.base_path)).collect()
    };
    let before = prefix_counters(&metrics_urls).await;

    let shared = Arc::new(Shared {
        generator: Mutex::new(Generator::new(&args, workload, models)),
        args: args.clone(),
        spread,
        api,
        targets,
        next_target: AtomicUsize::new(0),
        t0: Instant::now(),
    });
    let max_requests = args.requests.unwrap_or(usize::MAX);
    let deadline = shared.t0 + duration;
    let mut tasks: JoinSet<Vec<RequestRecord>> = JoinSet::new();
    let mut dropped = 0usize;
    if let Some(rate) = args.rate {
        let mut rng = SmallRng::seed_from_u64(args.seed ^ 0xa5a5_a5a5);
        let mut next_at = shared.t0;
        let mut sent = 0usize;
        let in_flight = Arc::new(AtomicUsize::new(0));
        while sent < max_requests {
            let u: f64 = rng.random();
            next_at += Duration::from_secs_f64(-(1.0 - u).ln() / rate);
            if next_at >= deadline {
                break;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(next_at)).await;
            sent += 1;
            if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                dropped += 1;
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (s, f) = (shared.clone(), in_flight.clone());
            tasks.spawn(async move {
                let r = one_request(&s).await;
                f.fetch_sub(1, Ordering::Relaxed);
                vec![r]
            });
        }
    } else {
        let workers = args.concurrency.unwrap_or(1);
        let issued = Arc::new(AtomicUsize::new(0));
        for _ in 0..workers {
            let (s, issued) = (shared.clone(), issued.clone());
            tasks.spawn(async move {
                let mut out = Vec::new();
                while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
                    out.push(one_request(&s).await);
                }
                out
            });
        }
    }
    let mut records = Vec::new();
    while let Some(r) = tasks.join_next().await {
        records.extend(r.map_err(|e| format!("a sender task failed: {e}"))?);
    }
    let wall_s = shared.t0.elapsed().as_secs_f64();
    let after = prefix_counters(&metrics_urls).await;
    records.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let summary = summarize(&records, wall_s, dropped, before, after);
    Ok(Report { args, summary, records })
}

async fn discover_loras(target: &Target) -> Result<Vec<String>, String> {
    let url = format!("http://{}{}/v1/models", target.authority, target.base_path);
    let text = http_get_text(&url, Duration::from_secs(5)).await?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
    let names: Vec<String> = v["data"]
        .as_array()
        .map(|d| {
            d.iter().filter(|m| !m["parent"].is_null()).filter_map(|m| m["id"].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(format!(
            "lora-mix: {url} lists no LoRA adapters; start the fleet with --lora-modules or pass --loras"
        ));
    }
    Ok(names)
}

fn summarize(
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
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}", x * 1000.0)).unwrap_or_else(|| "-".into())
}

/// The human-readable result table.
pub fn render_table(r: &Report) -> String {
    let s = &r.summary;
    let a = &r.args;
    let mode = match (a.rate, a.concurrency) {
        (Some(rate), _) => format!("Poisson {rate} req/s"),
        (_, Some(c)) => format!("concurrency {c}"),
        _ => "concurrency 1".into(),
    };
    let mut t = String::new();
    t.push_str(&format!(
        "workload {} ({}), {mode}, {} target(s) ({}), G={} S={} Q={} O={}{}\n",
        a.workload,
        a.api,
        a.target.len(),
        a.spread,
        a.groups,
        a.system_tokens,
        a.question_tokens,
        a.output_tokens,
        if a.workload == "multi-turn" { format!(" turns={}", a.turns) } else { String::new() },
    ));
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
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e30").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn generated_words_have_exactly_the_requested_tokens() {
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(crate::tokenizer::count(&words(&mut rng, 57)), 57);
    }

    #[test]
    fn metric_sums_cover_every_label_set() {
        let text = "# HELP a x\na_total{x=\"1\"} 2.0\na_total{x=\"2\"} 3.0\na_total_created{x=\"1\"} 1.7e+09\n";
        assert_eq!(metric_sum(text, "a_total"), Some(5.0));
        assert_eq!(metric_sum(text, "b_total"), None);
    }

    #[test]
    fn percentiles_pick_ranked_values() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99), (Some(51.0), Some(90.0), Some(99.0)));
    }
}
