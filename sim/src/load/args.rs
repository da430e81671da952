//! `sim load` flags and their validation.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

#[derive(Debug, Clone, Args, Serialize)]
pub struct LoadArgs {
    /// Base URL(s) to load, comma-separated (several = client-side round-robin, the no-router baseline).
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<String>,
    /// How several targets share the load: round-robin, random, or group (group g → target g mod N:
    /// client-side prefix affinity, an ideal-router reference).
    #[arg(long, default_value = "round-robin")]
    pub spread: String,
    /// shared-prefix, multi-turn, lora-mix, code-assistant or cjk-chat.
    #[arg(long, default_value = "shared-prefix")]
    pub workload: String,
    /// chat (/v1/chat/completions) or completions (/v1/completions).
    #[arg(long, default_value = "chat")]
    pub api: String,
    /// Model name sent in requests (the base model; lora-mix sends adapter names).
    #[arg(long, default_value = "Qwen/Qwen3-0.6B")]
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
    /// Multi-turn: start at most this many conversations. A sender with no conversation waiting
    /// for its next turn then waits for one, and stops when every conversation has ended, so a run
    /// is exactly N conversations of --turns turns however unevenly the pods answer.
    #[arg(long)]
    pub conversations: Option<usize>,
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
    /// The tokenizer that sizes --system-tokens and --question-tokens: bpe or chars:N (as `sim fleet`).
    #[arg(long, default_value = "bpe")]
    pub tokenizer: String,
    /// A .tiktoken ranks file for --tokenizer bpe (as `sim fleet`).
    #[arg(long)]
    pub vocab: Option<String>,
}

/// Longest run or request timeout accepted: a week; anything longer is a typo.
pub const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

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

/// Which requests a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    SharedPrefix,
    MultiTurn,
    LoraMix,
    CodeAssistant,
    CjkChat,
}

/// A workload by name.
pub fn parse_workload(name: &str) -> Result<Workload, String> {
    match name {
        "shared-prefix" => Ok(Workload::SharedPrefix),
        "multi-turn" => Ok(Workload::MultiTurn),
        "lora-mix" => Ok(Workload::LoraMix),
        "code-assistant" => Ok(Workload::CodeAssistant),
        "cjk-chat" => Ok(Workload::CjkChat),
        other => Err(format!(
            "unknown workload {other:?}; expected shared-prefix, multi-turn, lora-mix, code-assistant or cjk-chat"
        )),
    }
}

/// How several targets share the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    RoundRobin,
    Random,
    Group,
}

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// Poisson arrivals at this many requests per second.
    Poisson(f64),
    /// This many requests in flight (closed loop).
    Closed(usize),
}

/// The flags checked and turned into the values a run uses.
#[derive(Debug, Clone)]
pub struct Plan {
    pub workload: Workload,
    /// `chat` or `completions`.
    pub api: &'static str,
    pub spread: Spread,
    pub arrivals: Arrivals,
    pub duration: Duration,
    pub timeout: Duration,
}

impl LoadArgs {
    /// Validates the flags; every bad value is an error naming the flag.
    pub fn plan(&self) -> Result<Plan, String> {
        let workload = parse_workload(&self.workload).map_err(|e| format!("--workload: {e}"))?;
        let api: &'static str = match self.api.as_str() {
            "chat" => "chat",
            "completions" => "completions",
            other => return Err(format!("unknown --api {other:?}; expected chat or completions")),
        };
        let spread = match self.spread.as_str() {
            "round-robin" => Spread::RoundRobin,
            "random" => Spread::Random,
            "group" => Spread::Group,
            other => return Err(format!("unknown --spread {other:?}; expected round-robin, random or group")),
        };
        let duration = parse_duration(&self.duration)?;
        if !(self.timeout_s > 0.0 && self.timeout_s <= MAX_DURATION_S) {
            return Err(format!("--timeout-s must be in (0, {MAX_DURATION_S}], got {}", self.timeout_s));
        }
        if self.target.is_empty() {
            return Err("--target needs at least one URL".into());
        }
        let arrivals = match (self.rate, self.concurrency) {
            (Some(_), Some(_)) => return Err("give --rate or --concurrency, not both".into()),
            (Some(r), None) if !(r > 0.0 && r.is_finite()) => return Err(format!("--rate must be > 0, got {r}")),
            (Some(r), None) => Arrivals::Poisson(r),
            (None, Some(0)) => return Err("--concurrency must be at least 1".into()),
            (None, c) => Arrivals::Closed(c.unwrap_or(1)),
        };
        Ok(Plan { workload, api, spread, arrivals, duration, timeout: Duration::from_secs_f64(self.timeout_s) })
    }
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
}
