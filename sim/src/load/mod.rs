//! `sim load`: an OpenAI-API load generator that measures what users feel (TTFT, inter-token
//! latency, end-to-end latency, errors) and what the fleet did (prefix-cache hit rate from the pods'
//! counters, which pod served each request).
//!
//! Workloads:
//! - `shared-prefix`: G groups each with a system prompt of S tokens; each request is one group's
//!   prompt plus a fresh question of Q tokens, asking for O output tokens.
//! - `multi-turn`: conversations that start like shared-prefix and then resend the whole history
//!   plus the replies the pod really sent and a new question, for T turns.
//! - `lora-mix`: shared-prefix requests spread uniformly over LoRA adapters (from --loras, or the
//!   adapters the target lists in /v1/models).
//! - `code-assistant`: multi-turn, with system prompts of tool schemas (JSON) and Python code, and
//!   code questions.
//! - `cjk-chat`: multi-turn chat written in Chinese.
//!
//! Texts are English prose, code and JSON, or Chinese (`text.rs`), sized in tokens of the load's
//! own tokenizer (cl100k_base by default). The summary adds `turn_affinity`: the share of follow-up
//! turns served by the pod that served the conversation's previous turn.
//!
//! Arrivals are Poisson at --rate, or a fixed number of requests in flight (--concurrency). Every
//! run is bounded by --duration (and --requests), every request by --timeout-s.

mod args;
mod client;
mod report;
mod text;
mod workload;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

pub use args::{LoadArgs, parse_duration};
pub use client::{http_get_text, metric_sum};
pub use report::{Percentiles, Report, RequestRecord, Summary, render_table};

/// A workload's system-prompt text of about `tokens` tokens (`sim tokenize --sample`).
pub fn sample_text(workload: &str, tokenizer: &Tokenizer, tokens: usize, seed: u64) -> Result<String, String> {
    let w = args::parse_workload(workload)?;
    Ok(workload::sample_text(w, tokenizer, tokens, seed))
}

use args::{Arrivals, Plan, Spread, Workload};
use client::{Target, body_for, discover_loras, exchange, parse_target, prefix_counters};
use report::summarize;
use workload::{Generator, Next};

use crate::tokenizer::Tokenizer;

/// What every sender shares.
struct Shared {
    args: LoadArgs,
    plan: Plan,
    targets: Vec<Target>,
    next_target: AtomicUsize,
    generator: Mutex<Generator>,
    t0: Instant,
}

/// How long a sender waits before asking again for a conversation's next turn (`--conversations`).
const WAIT_FOR_A_TURN: std::time::Duration = std::time::Duration::from_millis(2);

/// Sends one request and measures it; `None` when every conversation allowed has ended.
async fn one_request(shared: &Shared) -> Option<RequestRecord> {
    let (conv, model) = loop {
        let next = shared.generator.lock().unwrap_or_else(|p| p.into_inner()).next();
        match next {
            Next::Send(conv, model) => break (conv, model),
            Next::Wait => tokio::time::sleep(WAIT_FOR_A_TURN).await,
            Next::Done => return None,
        }
    };
    let n = shared.targets.len();
    let i = match shared.plan.spread {
        Spread::RoundRobin => shared.next_target.fetch_add(1, Ordering::Relaxed) % n,
        Spread::Group => conv.group % n,
        Spread::Random => shared.generator.lock().unwrap_or_else(|p| p.into_inner()).rng.random_range(0..n),
    };
    let target = &shared.targets[i];
    let stream = !shared.args.no_stream;
    let body = body_for(shared.plan.api, &conv, &model, shared.args.output_tokens, stream);
    let path = format!(
        "{}/v1/{}",
        target.base_path,
        if shared.plan.api == "chat" { "chat/completions" } else { "completions" }
    );
    let start = Instant::now();
    let mut rec = RequestRecord {
        start_s: start.duration_since(shared.t0).as_secs_f64(),
        target: target.label.clone(),
        model,
        group: conv.group,
        conversation: conv.id,
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
    let timeout = shared.plan.timeout;
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
    Some(rec)
}

/// Runs a load test; prints nothing (see [`render_table`]).
pub async fn run(args: LoadArgs) -> Result<Report, String> {
    let plan = args.plan()?;
    let targets: Vec<Target> = args.target.iter().map(|t| parse_target(t)).collect::<Result<_, _>>()?;
    let models = if plan.workload == Workload::LoraMix {
        if args.loras.is_empty() { discover_loras(&targets[0]).await? } else { args.loras.clone() }
    } else {
        vec![args.model.clone()]
    };
    let metrics_urls: Vec<String> = if !args.metrics_urls.is_empty() {
        args.metrics_urls.clone()
    } else if !args.fleet.is_empty() {
        args.fleet.iter().map(|a| format!("http://{a}/metrics")).collect()
    } else {
        targets.iter().map(|t| t.url("/metrics")).collect()
    };
    let tokenizer = Arc::new(Tokenizer::from_flags(&args.tokenizer, args.vocab.as_deref())?);
    let before = prefix_counters(&metrics_urls).await;
    let shared = Arc::new(Shared {
        generator: Mutex::new(Generator::new(&args, plan.workload, models, tokenizer)),
        args: args.clone(),
        plan,
        targets,
        next_target: AtomicUsize::new(0),
        t0: Instant::now(),
    });
    let (mut tasks, dropped) = match shared.plan.arrivals {
        Arrivals::Poisson(rate) => send_poisson(&shared, rate).await,
        Arrivals::Closed(workers) => (send_closed_loop(&shared, workers), 0),
    };
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

/// Open loop: Poisson arrivals until the deadline; arrivals beyond `--max-in-flight` are dropped.
/// Returns the request tasks and the number dropped.
async fn send_poisson(shared: &Arc<Shared>, rate: f64) -> (JoinSet<Vec<RequestRecord>>, usize) {
    let mut tasks = JoinSet::new();
    let max_requests = shared.args.requests.unwrap_or(usize::MAX);
    let deadline = shared.t0 + shared.plan.duration;
    let mut rng = SmallRng::seed_from_u64(shared.args.seed ^ 0xa5a5_a5a5);
    let mut next_at = shared.t0;
    let (mut sent, mut dropped) = (0usize, 0usize);
    let in_flight = Arc::new(AtomicUsize::new(0));
    while sent < max_requests {
        let u: f64 = rng.random();
        next_at += std::time::Duration::from_secs_f64(-(1.0 - u).ln() / rate);
        if next_at >= deadline {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(next_at)).await;
        sent += 1;
        if in_flight.load(Ordering::Relaxed) >= shared.args.max_in_flight {
            dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (s, f) = (shared.clone(), in_flight.clone());
        tasks.spawn(async move {
            let r = one_request(&s).await;
            f.fetch_sub(1, Ordering::Relaxed);
            r.into_iter().collect()
        });
    }
    (tasks, dropped)
}

/// Closed loop: `workers` senders, each sending its next request when the previous one ended.
fn send_closed_loop(shared: &Arc<Shared>, workers: usize) -> JoinSet<Vec<RequestRecord>> {
    let mut tasks = JoinSet::new();
    let max_requests = shared.args.requests.unwrap_or(usize::MAX);
    let deadline = shared.t0 + shared.plan.duration;
    let issued = Arc::new(AtomicUsize::new(0));
    for _ in 0..workers {
        let (s, issued) = (shared.clone(), issued.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
                let Some(record) = one_request(&s).await else { break };
                out.push(record);
            }
            out
        });
    }
    tasks
}
