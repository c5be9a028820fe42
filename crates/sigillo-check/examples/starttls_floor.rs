//! The floor for a bulk check: the least a STARTTLS probe has to do, with nothing else.
//!
//! For every `[IP]:PORT` line of a targets file: TCP connect, read the greeting, `EHLO`,
//! `STARTTLS`, the rustls handshake with sigillo's own client configuration
//! (`sigillo_check::tls::client_config()`, same provider, versions and suites), `EHLO` again
//! inside TLS, `QUIT`: the same packets as a `sigillo check` probe, but no reply parsing
//! beyond the final line, no certificate analysis, no findings, no JSON. Comparing its CPU time
//! with `sigillo check` on the same targets shows what sigillo adds on top of TLS.
//!
//! ```text
//! cargo run --release -p sigillo-check --example starttls_floor -- \
//!     --targets-from targets.txt [--concurrency 64]
//! ```
//!
//! Prints one line: targets, handshakes completed, failures, wall seconds, checks/s.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut file: Option<PathBuf> = None;
    let mut concurrency = 64usize;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--targets-from" => file = Some(value()?.into()),
            "--concurrency" => concurrency = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let file = file.ok_or("--targets-from FILE is required")?;
    let targets = parse_targets(&std::fs::read_to_string(&file)?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(targets, concurrency.max(1)))
}

/// `[IP]:PORT` lines; blank lines and `#` comments skipped.
fn parse_targets(text: &str) -> Result<Vec<SocketAddr>, Error> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (host, port) = l
                .strip_prefix('[')
                .and_then(|r| r.split_once("]:"))
                .ok_or_else(|| format!("not an [IP]:PORT target: {l}"))?;
            Ok(SocketAddr::new(host.parse()?, port.parse()?))
        })
        .collect()
}

async fn run(targets: Vec<SocketAddr>, concurrency: usize) -> Result<(), Error> {
    let config = sigillo_check::tls::client_config();
    let start = Instant::now();
    let total = targets.len();
    let results: Vec<Result<(), Error>> = futures::stream::iter(targets)
        .map(|addr| probe(addr, config.clone()))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let secs = start.elapsed().as_secs_f64();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e}");
    }
    println!(
        "targets={total} ok={ok} failed={} wall_s={secs:.3} checks_per_s={:.1}",
        total - ok,
        total as f64 / secs
    );
    Ok(())
}

async fn probe(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<(), Error> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    expect(&mut tcp, &mut buf, "220").await?;
    tcp.write_all(b"EHLO bench.sigillo.test\r\n").await?;
    expect(&mut tcp, &mut buf, "250").await?;
    tcp.write_all(b"STARTTLS\r\n").await?;
    expect(&mut tcp, &mut buf, "220").await?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    tls.write_all(b"EHLO bench.sigillo.test\r\n").await?;
    tls.flush().await?;
    expect(&mut tls, &mut buf, "250").await?;
    tls.write_all(b"QUIT\r\n").await?;
    tls.flush().await?;
    expect(&mut tls, &mut buf, "221").await?;
    let _ = tls.shutdown().await;
    Ok(())
}

/// Reads until a final reply line (`CODE ` + text + CRLF) arrives; checks its code.
async fn expect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    code: &str,
) -> Result<(), Error> {
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(last) = final_line(buf) {
            return if last.starts_with(code.as_bytes()) {
                Ok(())
            } else {
                Err(format!("expected {code}, got {}", String::from_utf8_lossy(last)).into())
            };
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The last complete line of `buf` if it is a final reply line (`NNN ` rather than `NNN-`).
fn final_line(buf: &[u8]) -> Option<&[u8]> {
    if !buf.ends_with(b"\r\n") {
        return None;
    }
    let body = &buf[..buf.len() - 2];
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = &body[start..];
    (line.len() >= 4 && line[3] == b' ').then_some(line)
}
