//! The session limit (`Timeouts::session`) against scripted servers on 127.0.0.1 that answer
//! every step within its own limit but never finish: a multi-line EHLO reply trickled a line
//! every 300 ms, a 220 to STARTTLS with no TLS after it, a greeting that never comes. The
//! per-step limits stay at their defaults (30 s for a reply, 20 s for the handshake), so only
//! the 1.5 s session limit can end these probes; what the session showed before it is kept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sigillo_check::probe::{ProbeFailure, ProbeStep};
use sigillo_check::{
    CheckConfig, Checker, Dns, HostReport, TargetReport, Timeouts, TrustAnchors, Verdict,
};
use sigillo_check::{Finding, Target};
use sigillo_testkit::{Script, ScriptedServer, SilentServer};

const LIMIT: Duration = Duration::from_millis(1500);
const BANNER: &str = "220 mx.sigillo.test ESMTP trickle";

fn checker() -> Arc<Checker> {
    let config = CheckConfig {
        ehlo_name: "probe.sigillo.test".to_owned(),
        timeouts: Timeouts {
            session: LIMIT,
            ..Timeouts::default()
        },
        ..CheckConfig::default()
    };
    // Address targets need no DNS: the resolver is never asked.
    let dns = Dns::with_server(
        SocketAddr::from(([127, 0, 0, 1], 53)),
        Duration::from_secs(1),
    )
    .unwrap();
    Checker::new(config, dns, TrustAnchors::mozilla())
}

/// Checks `[addr]` and returns the report; a hang fails the test (the outer limit is far above
/// the session limit, and above no per-step default that would end these probes either).
async fn check(addr: SocketAddr) -> TargetReport {
    let target = Target::parse(&format!("[{}]:{}", addr.ip(), addr.port())).unwrap();
    tokio::time::timeout(Duration::from_secs(120), checker().check(&target))
        .await
        .expect("the check ended")
}

/// The one host of an address target, checked against the common shape of a session cut
/// short by its limit: inconclusive, the `timeout` finding, never "no STARTTLS".
fn cut_short(report: &TargetReport, step: ProbeStep) -> &HostReport {
    assert_eq!(report.hosts.len(), 1, "{report:#?}");
    let host = &report.hosts[0];
    assert_eq!(
        host.failure,
        Some(ProbeFailure::SessionTimeout {
            phase: step,
            limit_ms: 1500
        }),
        "{host:#?}"
    );
    assert_eq!(host.status, Verdict::Inconclusive, "{host:#?}");
    assert_eq!(report.verdict, Verdict::Inconclusive);
    let error = host.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("session timed out after 1.5 s"),
        "{error}"
    );
    let timeouts: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.id == "inconclusive" && f.kind == "timeout")
        .collect();
    assert_eq!(timeouts.len(), 1, "{:#?}", report.findings);
    assert!(
        timeouts[0]
            .evidence
            .iter()
            .any(|e| e.contains("session timed out")),
        "{:#?}",
        timeouts[0]
    );
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.id == "inconclusive" && f.kind == "timeout"),
        "a cut-short session is no sign of plaintext or stripping: {:#?}",
        report.findings
    );
    host
}

#[tokio::test]
async fn an_ehlo_reply_trickled_a_line_at_a_time_ends_at_the_session_limit() {
    // 40 lines at 300 ms: 12 s in all, each line far within the 30 s reply limit.
    let mut ehlo: String = (1..40).map(|n| format!("250-X-TRICKLE-{n}\r\n")).collect();
    ehlo.push_str("250 STARTTLS\r\n");
    let server = ScriptedServer::start(
        Script::new(format!("{BANNER}\r\n"))
            .reply_trickled("EHLO", ehlo, Duration::from_millis(300))
            .reply_then_close("QUIT", "221 bye\r\n"),
    )
    .unwrap();
    let report = check(server.addr()).await;
    let host = cut_short(&report, ProbeStep::Ehlo);
    // What came before the limit is kept: the banner, and the EHLO that was sent.
    assert_eq!(host.banner.as_deref(), Some(BANNER));
    assert!(host.greeting_ms.is_some());
    assert_eq!(
        host.transcript,
        [
            format!("S: {BANNER}"),
            "C: EHLO probe.sigillo.test".to_owned()
        ]
    );
    assert!(host.extensions.is_empty(), "{host:#?}");
    assert!(!host.starttls.attempted);
    // The probe stopped in the middle of the reply: it never got to QUIT.
    assert_eq!(server.received(), ["EHLO probe.sigillo.test"]);
}

#[tokio::test]
async fn no_tls_after_220_to_starttls_ends_at_the_session_limit_in_the_handshake() {
    let server = ScriptedServer::start(
        Script::new(format!("{BANNER}\r\n"))
            .reply("EHLO", "250-mx.sigillo.test\r\n250 STARTTLS\r\n")
            .reply_then_hold("STARTTLS", "220 2.0.0 go ahead\r\n"),
    )
    .unwrap();
    let report = check(server.addr()).await;
    let host = cut_short(&report, ProbeStep::Handshake);
    assert_eq!(host.extensions, ["STARTTLS"]);
    assert!(host.starttls.offered && host.starttls.attempted);
    assert_eq!(host.starttls.reply.as_deref(), Some("220 2.0.0 go ahead"));
    assert!(host.tls.is_none());
}

#[tokio::test]
async fn a_greeting_that_never_comes_ends_at_the_session_limit() {
    let tarpit = SilentServer::start().unwrap();
    let report = check(tarpit.addr()).await;
    let host = cut_short(&report, ProbeStep::Greeting);
    assert!(host.connect_ms.is_some());
    assert_eq!(host.banner, None);
    assert!(host.transcript.is_empty());
}
