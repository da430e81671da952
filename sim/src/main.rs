//! `sim fleet` and `sim load` (see sim/README.md).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vllm_sim::fleet::{Fleet, FleetArgs};
use vllm_sim::load::{self, LoadArgs};
use vllm_sim::tokenizer::Tokenizer;

#[derive(Parser)]
#[command(name = "sim", about = "A simulated vLLM fleet and an LLM load generator.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start N simulated vLLM servers in this process (one port each).
    Fleet(FleetArgs),
    /// Load an OpenAI-compatible endpoint and report latencies, throughput and cache hits.
    Load(LoadArgs),
    /// Count tokens of files or of the workloads' texts: characters and bytes per token.
    Tokenize(TokenizeArgs),
}

#[derive(Args)]
struct TokenizeArgs {
    /// bpe or chars:N (as `sim fleet`).
    #[arg(long, default_value = "bpe")]
    tokenizer: String,
    /// A .tiktoken ranks file (as `sim fleet`).
    #[arg(long)]
    vocab: Option<String>,
    /// Workloads whose system prompt to measure, comma-separated (e.g. multi-turn,code-assistant,cjk-chat).
    #[arg(long, value_delimiter = ',')]
    sample: Vec<String>,
    /// Tokens per sample.
    #[arg(long, default_value_t = 20_000)]
    sample_tokens: usize,
    /// Text files to measure.
    files: Vec<String>,
}

fn tokenize_cmd(args: TokenizeArgs) -> Result<(), String> {
    let t = Tokenizer::from_flags(&args.tokenizer, args.vocab.as_deref())?;
    println!("tokenizer {}", t.name());
    let mut inputs: Vec<(String, String)> = Vec::new();
    for w in &args.sample {
        inputs.push((format!("sample {w}"), load::sample_text(w, &t, args.sample_tokens, 1)?));
    }
    for f in &args.files {
        inputs.push((f.clone(), std::fs::read_to_string(f).map_err(|e| format!("cannot read {f}: {e}"))?));
    }
    for (name, text) in inputs {
        let tokens = t.count(&text).max(1) as f64;
        let (chars, bytes) = (text.chars().count(), text.len());
        println!(
            "{name}: {chars} characters, {bytes} bytes, {tokens} tokens: {:.2} characters/token, {:.2} bytes/token",
            chars as f64 / tokens,
            bytes as f64 / tokens
        );
    }
    Ok(())
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, 64))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
}

fn fleet(args: FleetArgs) -> Result<(), String> {
    let addresses = args.addresses()?;
    let config = args.pod_config()?;
    let faults = args.faults(&addresses)?;
    runtime(args.threads)?.block_on(async move {
        let fleet = Fleet::start(&addresses, &config, &faults).await?;
        for (i, a) in fleet.addresses().iter().enumerate() {
            println!("sim pod {i} listening on {a}");
        }
        println!(
            "sim fleet ready: {} pods, model {} ({}), {} KV blocks of {} tokens, tokenizer {}, time scale {}",
            fleet.pods.len(),
            config.served_model_name,
            args.profile,
            config.engine.num_gpu_blocks,
            config.engine.block_size,
            config.tokenizer.name(),
            config.time_scale
        );
        tokio::select! {
            _ = fleet.all_exited() => println!("sim fleet: every pod exited"),
            _ = shutdown_signal() => println!("sim fleet: shutting down"),
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

fn load_cmd(args: LoadArgs) -> Result<(), String> {
    let out = args.out.clone();
    let report = runtime(args.threads)?.block_on(load::run(args))?;
    print!("{}", load::render_table(&report));
    if let Some(path) = out {
        let json = serde_json::to_string_pretty(&report).map_err(|e| format!("cannot serialise the report: {e}"))?;
        std::fs::write(&path, json).map_err(|e| format!("cannot write {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fleet(a) => fleet(a),
        Command::Load(a) => load_cmd(a),
        Command::Tokenize(a) => tokenize_cmd(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sim: {e}");
            ExitCode::from(2)
        }
    }
}
