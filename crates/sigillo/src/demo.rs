//! `sigillo demo`: the main job on a shipped example, with no internet. It starts three
//! small SMTP servers on 127.0.0.1 (STARTTLS with the demo certificate from
//! `examples/demo/`, plaintext, and STARTTLS behind a PIX/ASA-style stripping proxy), runs
//! a real check of each, prints the reports, and exits 0 only if each verdict is the
//! expected one.

use crate::cli::DemoArgs;
use crate::render;
use anyhow::Context;
use sigillo_check::summary::Summary;
use sigillo_check::{CheckConfig, Checker, Dns, Target, Timeouts, TrustAnchors, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const CA_PEM: &[u8] = include_bytes!("../../../examples/demo/ca.pem");
const MX_PEM: &[u8] = include_bytes!("../../../examples/demo/mx.pem");
const MX_KEY: &[u8] = include_bytes!("../../../examples/demo/mx.key");
const NAME: &str = "mx.demo.sigillo.test";
/// Longest command line the demo server reads.
const MAX_LINE: u64 = 1024;

pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let tls = server_config()?;
    let encrypted = spawn_server(Some(tls.clone())).await?;
    let plaintext = spawn_server(None).await?;
    let upstream = spawn_server(Some(tls)).await?;
    let proxy = TcpListener::bind("127.0.0.1:0").await?;
    let stripped = proxy.local_addr()?;
    tokio::spawn(sigillo_check::strip_proxy::serve(
        proxy,
        upstream,
        Default::default(),
    ));

    let mut anchors = TrustAnchors::mozilla();
    anchors.add_pem(CA_PEM, "examples/demo/ca.pem")?;
    let config = CheckConfig {
        ehlo_name: "demo-client.sigillo.test".to_owned(),
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            greeting: Duration::from_secs(5),
            command: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
        },
        ..CheckConfig::default()
    };
    // Address targets need no DNS; the resolver is never asked.
    let dns = Dns::with_server(
        SocketAddr::from(([127, 0, 0, 1], 53)),
        Duration::from_secs(1),
    )?;
    let checker = Checker::new(config, dns, anchors);
    let cases = [
        (encrypted, Verdict::Encrypted, "a server offering STARTTLS"),
        (plaintext, Verdict::Plaintext, "a server without STARTTLS"),
        (
            stripped,
            Verdict::Stripped,
            "the first server behind a PIX/ASA-style rewriter",
        ),
    ];
    let mut reports = Vec::new();
    let mut all_as_expected = true;
    for (addr, expected, what) in cases {
        let target = Target::parse(&format!("[{}]:{}", addr.ip(), addr.port()))?;
        let report = checker.check(&target).await;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("# {what} (expected: {})", expected.as_str());
            print!("{}", render::target(&report, false, false));
        }
        all_as_expected &= report.verdict == expected;
        reports.push(report);
    }
    if !args.json {
        print!(
            "{}",
            render::summary(&Summary::from_reports(&reports), false)
        );
    }
    if all_as_expected {
        Ok(0)
    } else {
        eprintln!("sigillo demo: a verdict differs from the expected one");
        Ok(1)
    }
}

fn server_config() -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut &MX_PEM[..])
        .collect::<Result<Vec<_>, _>>()
        .context("demo certificate")?;
    let key = rustls_pemfile::private_key(&mut &MX_KEY[..])
        .context("demo key")?
        .context("no key in the demo key file")?;
    let config = rustls::ServerConfig::builder_with_provider(sigillo_check::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

async fn spawn_server(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = serve(socket, tls).await;
            });
        }
    });
    Ok(addr)
}

enum Next {
    Quit,
    StartTls,
}

/// A minimal SMTP server: greeting, EHLO/HELO, STARTTLS (when it has a certificate), QUIT.
async fn serve(
    mut socket: tokio::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    socket
        .write_all(format!("220 {NAME} ESMTP sigillo-demo\r\n").as_bytes())
        .await?;
    let offer = tls.is_some();
    match dialogue(&mut socket, offer).await? {
        Next::Quit => Ok(()),
        Next::StartTls => {
            let Some(config) = tls else { return Ok(()) };
            let mut stream = tokio_rustls::TlsAcceptor::from(config)
                .accept(socket)
                .await?;
            dialogue(&mut stream, false).await.map(|_| ())
        }
    }
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    offer_starttls: bool,
) -> std::io::Result<Next> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(Next::Quit);
        }
        let text = String::from_utf8_lossy(&line);
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" if offer_starttls => {
                format!(
                    "250-{NAME}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
                )
            }
            "EHLO" => {
                format!("250-{NAME}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n")
            }
            "HELO" => format!("250 {NAME}\r\n"),
            "STARTTLS" if offer_starttls => {
                reader
                    .get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await?;
                return Ok(Next::StartTls);
            }
            "QUIT" => {
                reader.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(Next::Quit);
            }
            _ => "500 5.5.2 Error: command not recognized\r\n".to_owned(),
        };
        reader.get_mut().write_all(reply.as_bytes()).await?;
    }
}
