//! The control experiment for the memory test: `notary` with its memory
//! wiping switched off (the system allocator, no stack wipes). The test must
//! find secrets in this process's memory, proving that its scanner works and
//! that the wiping in the real binary is what removes them. Never deploy it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    notary::memory::disable_stack_wiping_for_control_experiment();
    let cli = notary::cli::Cli::parse();
    match notary::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notary-unwiped: {e:#}");
            ExitCode::FAILURE
        }
    }
}
