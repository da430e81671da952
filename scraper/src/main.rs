//! `wis-scraper`: see the crate docs and `scraper/README.md`.

use clap::Parser;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wis_scraper::config::{Cli, Command, FixtureArgs, Options};
use wis_scraper::fixture::{self, FixtureResponse};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (level, threads) = (cli.log_level.clone(), cli.threads);
    wis_scraper::process::run("wis-scraper", &level, threads, || async move {
        match cli.command {
            Some(Command::FixtureServer(args)) => fixture_server(args).await,
            None => run(cli.options, cli.config, cli.exit_after_ms).await,
        }
    })
}

async fn run(flags: Options, config: Option<std::path::PathBuf>, exit_after_ms: Option<u64>) -> Result<(), String> {
    let file = match &config {
        Some(path) => Options::from_file(path)?,
        None => Options::default(),
    };
    let settings = flags.over(file).settings()?;
    let mut running = wis_scraper::start(settings, Arc::new(wis_scraper::discovery::SystemResolver)).await?;
    tracing::info!(listen = %running.listen_addr, "wis-scraper started");
    tokio::select! {
        _ = running.join_any() => Err("a scraper task ended unexpectedly".to_string()),
        _ = wis_scraper::process::shutdown_signal() => Ok(()),
        _ = sleep_opt(exit_after_ms) => Ok(()),
    }
}

async fn fixture_server(args: FixtureArgs) -> Result<(), String> {
    let body = match (&args.file, args.engine.as_str()) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|e| format!("--file {}: {e}", path.display()))?,
        (None, "vllm") => fixture::VLLM_SINGLE.to_string(),
        (None, "sglang") => fixture::SGLANG.to_string(),
        (None, "trtllm") => fixture::TRTLLM.to_string(),
        (None, other) => return Err(format!("--engine {other:?}: expected vllm, sglang or trtllm")),
    };
    let mut body = body;
    for i in 0..args.pad_lines {
        use std::fmt::Write;
        let _ = writeln!(
            body,
            "vllm:request_prefill_time_seconds_bucket{{engine=\"0\",le=\"{}.0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} {}.0",
            i + 1,
            i * 7
        );
    }
    let handle = Arc::new(RwLock::new(FixtureResponse::prometheus(body)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        let port = args.base_port.checked_add(i).ok_or("--base-port + --count exceeds 65535")?;
        let addr = std::net::SocketAddr::new(args.bind, port);
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tasks.spawn(fixture::serve(listener, handle.clone()));
    }
    tracing::info!(count = args.count, base_port = args.base_port, "fixture pods serving /metrics");
    tokio::select! {
        _ = wis_scraper::process::shutdown_signal() => {},
        _ = sleep_opt(args.exit_after_ms) => {},
    }
    Ok(())
}

async fn sleep_opt(ms: Option<u64>) {
    match ms {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}
