//! `sigillo`: is your mail really encrypted between servers?
//!
//! The binary is thin: argument parsing and rendering. The work is done by `sigillo-check`
//! (the I/O engine of `check`), `sigillo-smtp` (wire formats) and `sigillo-logs` (`report`).
#![forbid(unsafe_code)]

mod cli;
mod demo;
mod policy;
mod policy_build;
mod render;
mod report_csv;
mod report_html;
mod report_text;
mod strip_proxy;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: `report` allocates in its parser thread and frees in its aggregator thread,
/// which glibc's allocator handles slowly (measured in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sigillo: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sigillo: {e:#}");
            ExitCode::from(2)
        }
    }
}
