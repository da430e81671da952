//! `wis-epp`: see the crate docs and `epp/README.md`.

use clap::Parser;
use std::process::ExitCode;
use wis_epp::config::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (level, threads) = (cli.log_level.clone(), cli.threads);
    wis_scraper::process::run("wis-epp", &level, threads, || wis_epp::serve::run(cli))
}
