//! The session limit (`Timeouts::session`) against scripted servers on 127.0.0.1 that answer
//! every step within its own limit but never finish: a multi-line EHLO reply trickled a line
//! every 300 ms, a 220 to STARTTLS with no TLS after it, a greeting that never comes. The
//! per-step limits stay at their defaults (30 s for a reply, 20 s for the handshake), so only
//! the 1.5 s session limit can end these probes; what the session showed before it is kept.
//! Then the per-step reply limits against servers that send half a reply and stall, and
//! servers that send half a reply and close: what they sent is in the failure, the error and
//! the finding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sigillo_check::probe::{ProbeFailure, ProbeStep};
use sigillo_check::{
    CheckConfig, Checker, Dns, HostReport, TargetReport, Timeouts, TrustAnchors, Verdict,
};
use sigillo_check::{Finding, Target};
use sigillo_smtp::dialogue::Phase;
use sigillo_testkit::{Script, ScriptedServer, SilentServer};

const LIMIT: Duration = Duration::from_millis(1500);
const BANNER: &str = "220 mx.sigillo.test ESMTP trickle";

fn checker(timeouts: Timeouts) -> Arc<Checker> {
    let config = CheckConfig {
        ehlo_name: "probe.sigillo.test".to_owned(),
        timeouts,
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
    check_with(addr, Timeouts::default().with_session(LIMIT)).await
}

async fn check_with(addr: SocketAddr, timeouts: Timeouts) -> TargetReport {
    let target = Target::parse(&format!("[{}]:{}", addr.ip(), addr.port())).unwrap();
    tokio::time::timeout(Duration::from_secs(120), checker(timeouts).check(&target))
        .await
        .expect("the check ended")
}

/// The one host of an address target, checked against the common shape of a session cut
/// short by its limit: inconclusive, the `timeout` finding, never "no STARTTLS". Returns the
/// host and the partial reply its failure kept.
fn cut_short(report: &TargetReport, step: ProbeStep) -> (&HostReport, Option<&str>) {
    assert_eq!(report.hosts.len(), 1, "{report:#?}");
    let host = &report.hosts[0];
    let Some(ProbeFailure::SessionTimeout {
        phase,
        limit_ms,
        partial_reply,
    }) = &host.failure
    else {
        panic!("not a session timeout: {host:#?}");
    };
    assert_eq!((*phase, *limit_ms), (step, 1500), "{host:#?}");
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
    (host, partial_reply.as_deref())
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
    let (host, partial) = cut_short(&report, ProbeStep::Ehlo);
    // The lines of the reply that had come are kept, escaped, in the failure and the error.
    let partial = partial.unwrap_or_default();
    assert!(
        partial.starts_with("250-X-TRICKLE-1\\r\\n250-X-TRICKLE-2\\r\\n"),
        "{partial}"
    );
    assert!(
        host.error
            .as_deref()
            .unwrap_or_default()
            .ends_with(&format!("; partial reply received: \"{partial}\"")),
        "{host:#?}"
    );
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
    let (host, partial) = cut_short(&report, ProbeStep::Handshake);
    assert_eq!(partial, None, "no reply was awaited in the handshake");
    assert_eq!(host.extensions, ["STARTTLS"]);
    assert!(host.starttls.offered && host.starttls.attempted);
    assert_eq!(host.starttls.reply.as_deref(), Some("220 2.0.0 go ahead"));
    assert!(host.tls.is_none());
}

#[tokio::test]
async fn a_greeting_that_never_comes_ends_at_the_session_limit() {
    let tarpit = SilentServer::start().unwrap();
    let report = check(tarpit.addr()).await;
    let (host, partial) = cut_short(&report, ProbeStep::Greeting);
    assert_eq!(partial, None);
    assert!(host.connect_ms.is_some());
    assert_eq!(host.banner, None);
    assert!(host.transcript.is_empty());
}

/// A server (a middlebox masking the banner) that sends part of a reply and stalls: the
/// reply's own limit ends the probe, and what had come is in the failure (escaped), the
/// error and the `timeout` finding's evidence, so an admin sees who went silent where.
#[tokio::test]
async fn a_reply_timeout_keeps_the_partial_reply() {
    const STEP: Duration = Duration::from_millis(800);
    // (name, script, phase, the partial reply as kept)
    let cases = [
        (
            "half a greeting line",
            Script::new("220 *******").hold_after_greeting(),
            Phase::Greeting,
            "220 *******",
        ),
        (
            "the EHLO reply stops mid-line, with a quote and a control byte",
            Script::new(format!("{BANNER}\r\n"))
                .reply_then_hold("EHLO", "250-mx.sigillo.test\r\n250-X-\"Q\"\x01"),
            Phase::Ehlo,
            "250-mx.sigillo.test\\r\\n250-X-\\\"Q\\\"\\x01",
        ),
    ];
    for (name, script, phase, want) in cases {
        let server = ScriptedServer::start(script).unwrap();
        let timeouts = Timeouts::default().with_greeting(STEP).with_command(STEP);
        let report = check_with(server.addr(), timeouts).await;
        let host = &report.hosts[0];
        assert_eq!(
            host.failure,
            Some(ProbeFailure::ReplyTimeout {
                phase,
                partial_reply: Some(want.to_owned()),
            }),
            "{name}: {host:#?}"
        );
        assert_eq!(host.status, Verdict::Inconclusive, "{name}");
        let error = host.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("timed out waiting for the")
                && error.ends_with(&format!("; partial reply received: \"{want}\"")),
            "{name}: {error}"
        );
        let json = serde_json::to_value(host.failure.as_ref().unwrap()).unwrap();
        assert_eq!(json["partial_reply"], want, "{name}");
        let finding = report
            .findings
            .iter()
            .find(|f| f.id == "inconclusive" && f.kind == "timeout")
            .unwrap_or_else(|| panic!("{name}: {:#?}", report.findings));
        assert!(
            finding.evidence.iter().any(|e| e.contains(want)),
            "{name}: {finding:#?}"
        );
    }
}

/// A server (a middlebox masking the banner) that sends part of a reply and closes: what had
/// come of the reply awaited is in the `closed` failure (escaped), the error and the
/// `connection-closed` finding's evidence, as for a timeout; an earlier, complete reply is
/// not (nothing of the EHLO reply came before the close).
#[tokio::test]
async fn a_close_keeps_the_partial_reply() {
    // (name, script, phase, the partial reply as kept)
    let cases = [
        (
            "half a greeting line",
            Script::new("220 *******").close_after_greeting(),
            Phase::Greeting,
            Some("220 *******"),
        ),
        (
            "the EHLO reply stops mid-line, with a quote and a control byte",
            Script::new(format!("{BANNER}\r\n"))
                .reply_then_close("EHLO", "250-mx.sigillo.test\r\n250-X-\"Q\"\x01"),
            Phase::Ehlo,
            Some("250-mx.sigillo.test\\r\\n250-X-\\\"Q\\\"\\x01"),
        ),
        (
            "a close before any of the EHLO reply",
            Script::new(format!("{BANNER}\r\n")).reply_then_close("EHLO", ""),
            Phase::Ehlo,
            None,
        ),
    ];
    for (name, script, phase, want) in cases {
        let server = ScriptedServer::start(script).unwrap();
        let report = check(server.addr()).await;
        let host = &report.hosts[0];
        assert_eq!(
            host.failure,
            Some(ProbeFailure::Closed {
                phase,
                partial_reply: want.map(str::to_owned),
            }),
            "{name}: {host:#?}"
        );
        assert_eq!(host.status, Verdict::Inconclusive, "{name}");
        let error = host.error.as_deref().unwrap_or_default();
        let tail = want
            .map(|want| format!("; partial reply received: \"{want}\""))
            .unwrap_or_default();
        assert_eq!(
            error,
            format!(
                "connection closed while waiting for the {} reply{tail}",
                sigillo_check::probe::phase_name(phase)
            ),
            "{name}"
        );
        let json = serde_json::to_value(host.failure.as_ref().unwrap()).unwrap();
        assert_eq!(
            json.get("partial_reply").and_then(|p| p.as_str()),
            want,
            "{name}"
        );
        let finding = report
            .findings
            .iter()
            .find(|f| f.id == "inconclusive" && f.kind == "connection-closed")
            .unwrap_or_else(|| panic!("{name}: {:#?}", report.findings));
        assert!(
            finding.evidence.iter().any(|e| e.ends_with(error)),
            "{name}: {finding:#?}"
        );
    }
}

/// Bytes a server sends after its `221` to QUIT are awaited by no one: the session is
/// complete, with no failure and no partial reply, however the close goes. (A session deadline
/// during the close that follows is no failure either: `probe`'s unit test
/// `a_deadline_after_the_dialogue_ended_is_no_failure`; a scripted server cannot hold that
/// wait, a shutdown of our write side, open.)
#[tokio::test]
async fn bytes_after_the_221_to_quit_are_no_partial_reply() {
    let server = ScriptedServer::start(
        Script::new(format!("{BANNER}\r\n"))
            .reply("EHLO", "250 mx.sigillo.test\r\n")
            .reply_then_hold("QUIT", "221 bye\r\n250 late"),
    )
    .unwrap();
    let report = check(server.addr()).await;
    let host = &report.hosts[0];
    assert_eq!(host.failure, None, "{host:#?}");
    assert_eq!(host.error, None, "{host:#?}");
    assert_eq!(
        host.transcript.last().map(String::as_str),
        Some("S: 221 bye")
    );
    assert_eq!(server.received(), ["EHLO probe.sigillo.test", "QUIT"]);
}
