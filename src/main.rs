//! The `notary` binary: parses arguments and hands over to `notary::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = notary::cli::Cli::parse();
    match notary::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("notary: {e:#}");
            ExitCode::FAILURE
        }
    }
}
