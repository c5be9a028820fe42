//! `sigillo`: is your mail really encrypted between servers?
//!
//! The binary is thin: argument parsing, reading targets, and rendering reports. The work
//! is done by `sigillo-check` (I/O engine) and `sigillo-smtp` (wire formats).
#![forbid(unsafe_code)]

mod cli;
mod demo;
mod render;

use clap::Parser;
use std::process::ExitCode;

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
