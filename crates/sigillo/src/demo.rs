//! `sigillo demo`: the main job on a shipped example, with no internet. It starts three
//! small SMTP servers on 127.0.0.1 (STARTTLS with the demo certificate from
//! `examples/demo/`, plaintext, and STARTTLS behind a PIX/ASA-style stripping proxy), runs
//! a real check of each, prints the reports, and exits 0 only if each verdict is the
//! expected one.

use crate::cli::{DemoArgs, emit};
use crate::render;
use sigillo_check::lab;
use sigillo_check::summary::Summary;
use sigillo_check::{CheckConfig, Checker, Dns, Target, Timeouts, TrustAnchors, Verdict};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

const CA_PEM: &[u8] = include_bytes!("../../../examples/demo/ca.pem");
const MX_PEM: &[u8] = include_bytes!("../../../examples/demo/mx.pem");
const MX_KEY: &[u8] = include_bytes!("../../../examples/demo/mx.key");
const NAME: &str = "mx.demo.sigillo.test";

pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let tls = lab::server_config(MX_PEM, MX_KEY)?;
    let encrypted = lab::spawn_server(
        TcpListener::bind("127.0.0.1:0").await?,
        NAME,
        Some(tls.clone()),
    )?;
    let plaintext = lab::spawn_server(TcpListener::bind("127.0.0.1:0").await?, NAME, None)?;
    let upstream = lab::spawn_server(TcpListener::bind("127.0.0.1:0").await?, NAME, Some(tls))?;
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
        timeouts: Timeouts::default()
            .with_connect(Duration::from_secs(5))
            .with_greeting(Duration::from_secs(5))
            .with_command(Duration::from_secs(5))
            .with_handshake(Duration::from_secs(5))
            .with_session(Duration::from_secs(10)),
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
            emit(&format!("{}\n", serde_json::to_string(&report)?))?;
        } else {
            emit(&format!("# {what} (expected: {})\n", expected.as_str()))?;
            emit(&render::target(&report, false, false))?;
        }
        all_as_expected &= report.verdict == expected;
        reports.push(report);
    }
    if !args.json {
        emit(&render::summary(&Summary::from_reports(&reports), false))?;
    }
    if all_as_expected {
        Ok(0)
    } else {
        eprintln!("sigillo demo: a verdict differs from the expected one");
        Ok(1)
    }
}
