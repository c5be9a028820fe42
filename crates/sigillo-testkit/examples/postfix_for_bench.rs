//! A private real Postfix with STARTTLS on loopback, for `bench/check.sh`.
//!
//! Prints `port=N`, `ca=PATH` and `config_dir=PATH` lines to stdout, then stays up until stdin
//! closes or SIGINT/SIGTERM arrives; the instance is stopped on the way out (testkit `Drop`).
//! The certificate is issued by a fresh test CA for `127.0.0.1`, so `--ca-file PATH` makes it
//! verify. Arguments `key=value` are extra `main.cf` settings (applied last), e.g.
//! `smtpd_tls_session_cache_timeout=0`. Needs root, like every private Postfix instance.
#![forbid(unsafe_code)]

use std::io::Write as _;

use anyhow::Result;
use sigillo_testkit::{Postfix, PostfixOptions, TestCa};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> Result<()> {
    let ca = TestCa::new()?;
    let cert = ca.issue(&["127.0.0.1", "mx.sigillo.test"])?;
    let mut options = PostfixOptions::default().tls(&cert);
    for arg in std::env::args().skip(1) {
        let Some((key, value)) = arg.split_once('=') else {
            anyhow::bail!("expected main.cf settings as key=value, got {arg:?}");
        };
        options = options.main_cf(key.trim(), value.trim());
    }
    let postfix = Postfix::start(options)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "port={}", postfix.port())?;
        writeln!(out, "ca={}", ca.ca_pem().display())?;
        writeln!(out, "config_dir={}", postfix.config_dir().display())?;
        out.flush()?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reason = runtime.block_on(wait_for_end())?;
    runtime.shutdown_background();
    eprintln!("postfix_for_bench: {reason}, stopping Postfix");
    drop(postfix);
    drop(cert);
    drop(ca);
    Ok(())
}

/// Returns when stdin reaches end of file or a termination signal arrives.
async fn wait_for_end() -> Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // A plain thread reads stdin (tokio's stdin needs the io-std feature, not enabled here).
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let eof = async {
        let _ = rx.await;
    };
    Ok(tokio::select! {
        () = eof => "stdin closed",
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    })
}
