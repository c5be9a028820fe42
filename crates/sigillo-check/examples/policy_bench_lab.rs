//! The peers of `bench/policy.sh`: a DNSSEC-signed authoritative DNS server (the testkit's)
//! and a small HTTPS server for MTA-STS policies, both on 127.0.0.1 inside the benchmark's
//! network namespace, serving many domains the same way to every daemon measured.
//!
//! Zone `bench.test` (signed; `mx.bench.test` is every domain's MX host):
//! - `hN.bench.test` (`--hits`): MX, `_mta-sts` TXT, `mta-sts.hN` A: a policy in `enforce`;
//! - `nN.bench.test` (`--notfound`): MX only, no MTA-STS (the TXT name does not exist);
//! - `mN.bench.test` (`--misses`) and `bN.bench.test` (`--bursts`): like `hN`, for lookups
//!   that each need a TXT lookup and a policy fetch.
//!
//! The HTTPS server answers `GET /.well-known/mta-sts.txt` for any `mta-sts.*` name with the
//! same policy (keep-alive honoured), picking one of the test CA's certificates by SNI (100
//! names per certificate). Every 100 ms it writes `key=value` counters to `--stats FILE`
//! (DNS queries, HTTPS connections, handshakes, requests). When ready it prints
//! `ready trust_anchor=PATH ca=PATH` and runs until stdin closes or SIGTERM/SIGINT.
//! Needs root (ports 53 and 443).

use std::collections::HashMap;
use std::error::Error;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sigillo_testkit::{CertPair, DnsServer, TestCa, ZoneBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx.bench.test\r\nmax_age: 86400\r\n";
/// Names per certificate.
const NAMES_PER_CERT: usize = 100;
/// A connection with no request for this long is closed.
const IDLE: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    handshakes: AtomicU64,
    requests: AtomicU64,
}

#[derive(Debug)]
struct SniCerts {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()));
        Some(Arc::clone(chosen.unwrap_or(&self.default)))
    }
}

fn load(cert: &CertPair) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(&cert.chain_pem)?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&cert.key_pem)?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

fn count_arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()?),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hits = count_arg(&args, "--hits", 1000)?;
    let notfound = count_arg(&args, "--notfound", 1000)?;
    let misses = count_arg(&args, "--misses", 20000)?;
    let bursts = count_arg(&args, "--bursts", 2000)?;
    let stats_path = args
        .iter()
        .position(|a| a == "--stats")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or("--stats FILE is required")?;

    let local = Ipv4Addr::LOCALHOST;
    let mut zone = ZoneBuilder::new("bench.test")
        .signed()
        .ttl(3600)
        .a("mx.bench.test", local);
    let mut sts_domains = Vec::new();
    for (prefix, n) in [("h", hits), ("m", misses), ("b", bursts)] {
        for i in 0..n {
            let domain = format!("{prefix}{i}.bench.test");
            zone = zone
                .mx(&domain, 10, "mx.bench.test")
                .txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=20250101;")
                .a(&format!("mta-sts.{domain}"), local);
            sts_domains.push(domain);
        }
    }
    for i in 0..notfound {
        zone = zone.mx(&format!("n{i}.bench.test"), 10, "mx.bench.test");
    }
    let dns = DnsServer::start_at(SocketAddr::from((local, 53)), zone)
        .map_err(|e| format!("DNS server: {e:#}"))?;
    let anchor = dns.trust_anchor_file().ok_or("the zone is not signed")?;

    let ca = TestCa::new().map_err(|e| format!("test CA: {e:#}"))?;
    let mut by_name = HashMap::new();
    let mut pairs = Vec::new();
    for group in sts_domains.chunks(NAMES_PER_CERT) {
        let names: Vec<String> = group.iter().map(|d| format!("mta-sts.{d}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let pair = ca.issue(&refs).map_err(|e| format!("certificate: {e:#}"))?;
        let key = load(&pair)?;
        for name in names {
            by_name.insert(name, Arc::clone(&key));
        }
        pairs.push(pair);
    }
    let default = by_name
        .values()
        .next()
        .cloned()
        .ok_or("no MTA-STS domains")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniCerts { by_name, default }));
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((local, 443))).await?;
        let counters = Arc::new(Counters::default());
        {
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let (acceptor, counters) = (acceptor.clone(), Arc::clone(&counters));
                    tokio::spawn(async move {
                        let _ = serve(acceptor, stream, &counters).await;
                    });
                }
            });
        }
        {
            let counters = Arc::clone(&counters);
            std::thread::spawn(move || {
                loop {
                    let text = format!(
                        "dns_queries={}\nhttps_connections={}\nhttps_handshakes={}\nhttps_requests={}\n",
                        dns.queries(),
                        counters.connections.load(Ordering::Relaxed),
                        counters.handshakes.load(Ordering::Relaxed),
                        counters.requests.load(Ordering::Relaxed),
                    );
                    let tmp = format!("{stats_path}.tmp");
                    if std::fs::write(&tmp, text).is_ok() {
                        let _ = std::fs::rename(&tmp, &stats_path);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "ready trust_anchor={} ca={}",
                anchor.display(),
                ca.ca_pem().display()
            )?;
            out.flush()?;
        }
        wait_for_end().await?;
        drop(pairs);
        Ok::<(), Box<dyn Error + Send + Sync>>(())
    })?;
    runtime.shutdown_background();
    Ok(())
}

/// One HTTPS connection: the handshake, then requests until close or idle.
async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    counters: &Counters,
) -> Result<()> {
    let _ = stream.set_nodelay(true);
    let mut tls = acceptor.accept(stream).await?;
    counters.handshakes.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // A request head: up to the blank line (GETs have no body).
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err("request head too long".into());
            }
            let n = tokio::time::timeout(IDLE, tls.read(&mut chunk)).await??;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(chunk.get(..n).ok_or("read past the buffer")?);
        };
        let head =
            String::from_utf8_lossy(buf.get(..head_end).unwrap_or_default()).to_ascii_lowercase();
        buf.drain(..head_end);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let close = head.contains("\r\nconnection: close");
        let (status, body) = if head.starts_with("get /.well-known/mta-sts.txt ") {
            ("200 OK", POLICY)
        } else {
            ("404 Not Found", "not found\r\n")
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        tls.write_all(response.as_bytes()).await?;
        tls.flush().await?;
        if close {
            let _ = tls.shutdown().await;
            return Ok(());
        }
    }
}

/// Returns when stdin reaches its end or a termination signal arrives.
async fn wait_for_end() -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    tokio::select! {
        _ = rx => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
