//! `wis-epp`: see the crate docs and `epp/README.md`.

use clap::Parser;
use std::process::ExitCode;
use wis_epp::config::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.log_level.as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt().with_max_level(level).with_ansi(false).with_writer(std::io::stderr).init();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads.max(1)).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("wis-epp: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(wis_epp::serve::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wis-epp: {e}");
            ExitCode::FAILURE
        }
    }
}
