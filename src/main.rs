//! The `notary` binary: parses arguments and hands over to `notary::cli`.

use std::process::ExitCode;

use clap::Parser;

/// Every freed heap block is zeroed first, so buffers that libraries own
/// (TLS, HTTP, JSON) keep no copy of a code or PIN. See `notary::memory`.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> ExitCode {
    let cli = notary::cli::Cli::parse();
    match notary::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("notary: {e:#}");
            ExitCode::from(notary::cli::exit_status(&e))
        }
    }
}
