//! `sigillo check` against real peers on loopback: private Postfix and Exim instances with
//! certificates from a test CA, a PIX/ASA-style stripping proxy, a local DNS server, and
//! misbehaving servers. Each test runs the real binary and reads its JSON.

mod run;

use run::sigillo;
use serde_json::Value;
use sigillo_testkit::{
    DnsServer, Exim, Postfix, PostfixOptions, RecordType, Script, ScriptedServer, SilentServer,
    StripProxy, TestCa, ZoneBuilder, require_tools, self_signed,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAST: &[&str] = &[
    "--ehlo",
    "probe.sigillo.test",
    "--connect-timeout",
    "5",
    "--greeting-timeout",
    "10",
    "--command-timeout",
    "10",
    "--handshake-timeout",
    "10",
];

/// `check --json` with fast timeouts; returns the exit code and one document per target.
fn check(extra: &[&str]) -> (i32, Vec<Value>, String) {
    let mut args = vec!["check", "--json"];
    // A flag given in `extra` replaces the FAST default (clap refuses a repeated flag).
    for pair in FAST.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    let (code, out, err) = sigillo(&args, None);
    let docs = out
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\nstderr: {err}"))
        })
        .collect();
    (code, docs, err)
}

fn bracket(addr: SocketAddr) -> String {
    format!("[{}]:{}", addr.ip(), addr.port())
}

fn findings(doc: &Value) -> Vec<(String, String)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The first finding with this id, and its evidence lines.
fn finding<'a>(doc: &'a Value, id: &str) -> (&'a Value, Vec<&'a str>) {
    let f = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} finding in {doc:#}"));
    let evidence = f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    (f, evidence)
}

/// `openssl s_client -starttls smtp` on the same server: (protocol, cipher).
fn openssl_view(addr: SocketAddr) -> (String, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-brief",
            "-connect",
            &addr.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name:?} in openssl output:\n{text}"))
    };
    (field("Protocol version:"), field("Ciphersuite:"))
}

#[test]
fn postfix_with_starttls_is_encrypted_like_openssl_sees_it() {
    require_tools!("postfix", "openssl");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let postfix = Postfix::start_with_tls(&cert).unwrap();
    let ca_file = ca.ca_pem().to_str().unwrap().to_owned();
    let (code, docs, err) = check(&["--ca-file", &ca_file, &bracket(postfix.addr())]);
    assert_eq!(docs.len(), 1, "{err}");
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "encrypted", "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
    let host = &doc["hosts"][0];
    assert_eq!(host["starttls"]["offered"], true);
    assert!(
        host["banner"]
            .as_str()
            .unwrap()
            .starts_with("220 mx.sigillo.test ESMTP"),
        "{host:#}"
    );
    assert!(
        host["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "STARTTLS")
    );
    let tls = &host["tls"];
    let (protocol, cipher) = openssl_view(postfix.addr());
    assert_eq!(tls["version"], protocol.as_str(), "{tls:#}");
    assert_eq!(tls["cipher"], cipher.as_str(), "{tls:#}");
    assert!(tls["key_exchange"].is_string());
    assert_eq!(tls["certificate"]["verified"], true, "{tls:#}");
    assert_eq!(tls["certificate"]["error"], Value::Null);
    let leaf = &tls["certificate"]["chain"][0];
    assert_eq!(leaf["sans"][0], "mx.sigillo.test");
    assert_eq!(leaf["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(leaf["spki_sha256"].as_str().unwrap().len(), 64);
    // EHLO again inside TLS: Postfix no longer offers STARTTLS there.
    let inside: Vec<&str> = tls["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        !inside.is_empty() && !inside.contains(&"STARTTLS"),
        "{inside:?}"
    );
    assert!(findings(doc).is_empty(), "{:?}", findings(doc));
}

#[test]
fn postfix_without_starttls_is_plaintext_not_stripped() {
    require_tools!("postfix");
    let postfix = Postfix::start_plain().unwrap();
    let (code, docs, _) = check(&[&bracket(postfix.addr())]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "plaintext", "{doc:#}");
    assert_eq!(code, 1);
    let ids = findings(doc);
    assert!(
        ids.contains(&("starttls-not-supported".into(), "not-offered".into())),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|(id, _)| id == "starttls-stripped"),
        "{ids:?}"
    );
    assert_eq!(doc["hosts"][0]["starttls"]["offered"], false);
    assert_eq!(doc["hosts"][0]["tls"], Value::Null);
    // --fail-on high still fails; --fail-on critical does not (nothing is stripped).
    assert_eq!(check(&["--fail-on", "high", &bracket(postfix.addr())]).0, 1);
    assert_eq!(
        check(&["--fail-on", "critical", &bracket(postfix.addr())]).0,
        0
    );
}

#[test]
fn exim_with_starttls_is_encrypted() {
    require_tools!("exim4", "openssl");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let exim = Exim::start_with_tls(&cert).unwrap();
    let ca_file = ca.ca_pem().to_str().unwrap().to_owned();
    let (code, docs, _) = check(&["--ca-file", &ca_file, &bracket(exim.addr())]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "encrypted", "{doc:#}");
    assert_eq!(code, 0);
    let tls = &doc["hosts"][0]["tls"];
    let (protocol, cipher) = openssl_view(exim.addr());
    assert_eq!(tls["version"], protocol.as_str());
    assert_eq!(tls["cipher"], cipher.as_str());
    assert_eq!(tls["certificate"]["verified"], true, "{tls:#}");
    assert!(
        doc["hosts"][0]["banner"]
            .as_str()
            .unwrap()
            .starts_with("220 exim.sigillo.test"),
        "{doc:#}"
    );
}

#[test]
fn untrusted_and_expired_certificates_are_reported_not_fatal() {
    require_tools!("postfix");
    // Self-signed: TLS still works (opportunistic), the certificate is not verified.
    let cert = self_signed(&["mx.sigillo.test"]).unwrap();
    let postfix = Postfix::start_with_tls(&cert).unwrap();
    let (code, docs, _) = check(&[&format!("[{}]:{}", "127.0.0.1", postfix.port())]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "encrypted", "{doc:#}");
    let certificate = &doc["hosts"][0]["tls"]["certificate"];
    assert_eq!(certificate["verified"], false);
    assert!(
        certificate["error"]
            .as_str()
            .unwrap()
            .contains("not trusted"),
        "{certificate:#}"
    );
    assert!(
        findings(doc)
            .iter()
            .any(|(id, _)| id == "certificate-not-trusted")
    );
    assert_eq!(code, 1, "a certificate finding is a finding");
    assert_eq!(check(&["--fail-on", "high", &bracket(postfix.addr())]).0, 0);

    // Expired, from a trusted CA.
    let ca = TestCa::new().unwrap();
    let expired = ca.issue_expired(&["mx.sigillo.test"]).unwrap();
    let postfix = Postfix::start_with_tls(&expired).unwrap();
    let ca_file = ca.ca_pem().to_str().unwrap().to_owned();
    let (_, docs, _) = check(&["--ca-file", &ca_file, &bracket(postfix.addr())]);
    let certificate = &docs[0]["hosts"][0]["tls"]["certificate"];
    assert_eq!(certificate["verified"], false);
    assert_eq!(
        certificate["problems"][0], "certificate-expired",
        "{certificate:#}"
    );
    assert!(
        findings(&docs[0])
            .iter()
            .any(|(id, _)| id == "certificate-expired")
    );
}

#[test]
fn pix_asa_rewriting_in_front_of_postfix_is_stripped_with_evidence() {
    require_tools!("postfix");
    let cert = self_signed(&["mx.sigillo.test"]).unwrap();
    let postfix = Postfix::start_with_tls(&cert).unwrap();
    let proxy = StripProxy::start(postfix.addr()).unwrap();
    let (code, docs, _) = check(&["--transcript", &bracket(proxy.addr())]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "stripped", "{doc:#}");
    assert_eq!(code, 1);
    let host = &doc["hosts"][0];
    assert!(
        host["banner"].as_str().unwrap().starts_with("220 ***"),
        "{host:#}"
    );
    assert_eq!(host["starttls"]["offered"], false);
    let (stripped, evidence) = finding(doc, "starttls-stripped");
    assert_eq!(stripped["kind"], "masked-capability");
    assert_eq!(stripped["severity"], "critical");
    assert!(
        evidence.iter().any(|l| l.starts_with("S: 220 ***")),
        "{evidence:?}"
    );
    assert!(evidence.contains(&"S: 250-XXXXXXXA"), "{evidence:?}");
    // The other direction: our STARTTLS reached Postfix as XXXXXXXA, and Postfix said so.
    assert!(evidence.contains(&"C: STARTTLS"), "{evidence:?}");
    assert!(
        evidence.contains(&"S: 500 5.5.2 Error: command not recognized"),
        "{evidence:?}"
    );
    postfix
        .wait_for_log("unknown=0/1", Duration::from_secs(10))
        .unwrap();
    // Without the proxy the same Postfix is encrypted.
    let (_, direct, _) = check(&[&bracket(postfix.addr())]);
    assert_eq!(direct[0]["verdict"], "encrypted");
}

#[test]
fn starttls_command_rewritten_answered_500_is_stripped() {
    // The client's STARTTLS reaches the server as XXXXXXXA; Postfix answers 500 5.5.2.
    let server = ScriptedServer::start(
        Script::new("220 mx.sigillo.test ESMTP Postfix\r\n")
            .reply(
                "EHLO",
                "250-mx.sigillo.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            )
            .reply("STARTTLS", "500 5.5.2 Error: command not recognized\r\n")
            .reply_then_close("QUIT", "221 2.0.0 Bye\r\n"),
    )
    .unwrap();
    let (_, docs, _) = check(&[&bracket(server.addr())]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "stripped", "{doc:#}");
    let (f, evidence) = finding(doc, "starttls-stripped");
    assert_eq!(f["kind"], "starttls-rejected");
    assert_eq!(
        evidence,
        [
            "S: 250 STARTTLS",
            "C: STARTTLS",
            "S: 500 5.5.2 Error: command not recognized"
        ]
    );
}

#[test]
fn connection_dropped_after_ready_is_stripped() {
    let server = ScriptedServer::start(
        Script::new("220 mx.sigillo.test ESMTP\r\n")
            .reply("EHLO", "250-mx.sigillo.test\r\n250 STARTTLS\r\n")
            .reply_then_close("STARTTLS", "220 2.0.0 Ready to start TLS\r\n"),
    )
    .unwrap();
    let (_, docs, _) = check(&[&bracket(server.addr())]);
    assert_eq!(docs[0]["verdict"], "stripped", "{:#}", docs[0]);
    assert!(findings(&docs[0]).contains(&("starttls-stripped".into(), "handshake-broken".into())));
}

#[test]
fn silent_server_is_inconclusive_within_the_timeout() {
    let tarpit = SilentServer::start().unwrap();
    let (code, docs, _) = check(&["--greeting-timeout", "1", &bracket(tarpit.addr())]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "inconclusive", "{doc:#}");
    assert_eq!(code, 1);
    let host = &doc["hosts"][0];
    assert_eq!(
        host["failure"],
        serde_json::json!({"kind": "reply-timeout", "phase": "greeting"}),
        "nothing came, so no partial_reply: {host:#}"
    );
    assert!(findings(doc).contains(&("inconclusive".into(), "timeout".into())));
    assert!(
        !findings(doc)
            .iter()
            .any(|(id, _)| id == "starttls-not-supported")
    );
}

#[test]
fn a_trickled_ehlo_reply_ends_at_the_session_timeout_with_the_step() {
    // 40 lines, one every 300 ms: each far within --command-timeout, the whole 12 s.
    let mut ehlo: String = (1..40).map(|n| format!("250-X-TRICKLE-{n}\r\n")).collect();
    ehlo.push_str("250 STARTTLS\r\n");
    let server = ScriptedServer::start(
        Script::new("220 mx.sigillo.test ESMTP trickle\r\n")
            .reply_trickled("EHLO", ehlo, Duration::from_millis(300))
            .reply_then_close("QUIT", "221 bye\r\n"),
    )
    .unwrap();
    let (code, docs, err) = check(&["--session-timeout", "1.5", &bracket(server.addr())]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "inconclusive", "{doc:#}");
    assert_eq!(code, 1, "a low finding: {err}");
    let host = &doc["hosts"][0];
    // The lines of the EHLO reply that had come (escaped) are in the failure and the error.
    let partial = host["failure"]["partial_reply"]
        .as_str()
        .unwrap_or_default();
    assert!(
        partial.starts_with("250-X-TRICKLE-1\\r\\n250-X-TRICKLE-2\\r\\n"),
        "{host:#}"
    );
    assert_eq!(
        host["failure"],
        serde_json::json!({
            "kind": "session-timeout",
            "phase": "ehlo",
            "limit_ms": 1500,
            "partial_reply": partial
        }),
        "{host:#}"
    );
    assert_eq!(
        host["error"],
        format!(
            "session timed out after 1.5 s (the limit for the whole session), during the EHLO \
             reply; partial reply received: \"{partial}\""
        )
    );
    assert_eq!(host["banner"], "220 mx.sigillo.test ESMTP trickle");
    assert_eq!(findings(doc), [("inconclusive".into(), "timeout".into())]);
    // FAST's per-step limits were raised from the defaults above the session limit: a note.
    assert!(
        err.contains(
            "note: --session-timeout (1.5 s) ends a probe before --connect-timeout (5 s), \
             --greeting-timeout (10 s), --command-timeout (10 s), --handshake-timeout (10 s) can"
        ),
        "{err}"
    );
}

#[test]
fn session_timeout_must_be_sane() {
    for value in ["0", "-1", "nan", "inf", "3601", "1e9"] {
        let flag = format!("--session-timeout={value}");
        let (code, out, err) = sigillo(&["check", &flag, "[127.0.0.1]:9"], None);
        assert_eq!(code, 2, "{value}: {out}{err}");
        assert!(
            err.contains("--session-timeout must be more than 0 and at most 3600 seconds"),
            "{value}: {err}"
        );
    }
    let (_, out, _) = sigillo(&["check", "--help"], None);
    assert!(out.contains("--session-timeout <SECS>"), "{out}");
    assert!(out.contains("[default: 60]"), "{out}");
}

#[test]
fn rate_limited_greeting_is_inconclusive() {
    let server = ScriptedServer::start(
        Script::new("421 4.7.0 mx.sigillo.test Too many connections\r\n").close_after_greeting(),
    )
    .unwrap();
    let (_, docs, _) = check(&[&bracket(server.addr())]);
    assert_eq!(docs[0]["verdict"], "inconclusive");
    assert!(findings(&docs[0]).contains(&("inconclusive".into(), "service-unavailable".into())));
}

#[test]
fn malformed_replies_give_a_clear_error() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            "expected a 3-digit code",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
            "expected a 3-digit code",
        ),
        (
            b"220_mx ESMTP\r\n".to_vec(),
            "expected ' ' or '-' after the code",
        ),
        (b"220-mx\r\n250 ESMTP\r\n".to_vec(), "reply code changed"),
        (
            [b"220 ".to_vec(), vec![b'a'; 100_000]].concat(),
            "longer than",
        ),
        (vec![0xff; 64], "expected a 3-digit code"),
    ];
    for (greeting, expected) in cases {
        let server = ScriptedServer::greeting_then_hold(greeting.clone()).unwrap();
        let (_, docs, err) = check(&["--greeting-timeout", "5", &bracket(server.addr())]);
        let host = &docs[0]["hosts"][0];
        let error = host["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error for {greeting:?}: {host:#} {err}"));
        assert!(error.starts_with("malformed SMTP reply from"), "{error}");
        assert!(
            error.contains(expected),
            "{error} should contain {expected:?}"
        );
        assert_eq!(docs[0]["verdict"], "inconclusive");
        assert!(findings(&docs[0]).contains(&("inconclusive".into(), "protocol-error".into())));
    }
}

#[test]
fn mx_resolution_through_local_dns_probes_each_address_once() {
    require_tools!("postfix");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx1.lab.test", "mx2.lab.test"]).unwrap();
    let postfix = Postfix::start(
        PostfixOptions::default()
            .tls(&cert)
            .ipv6(true)
            .hostname("mx1.lab.test"),
    )
    .unwrap();
    let port = postfix.port().to_string();
    let dns = DnsServer::start(
        ZoneBuilder::new("lab.test")
            .mx("lab.test", 20, "mx2.lab.test")
            .mx("lab.test", 10, "mx1.lab.test")
            .a("mx1.lab.test", Ipv4Addr::LOCALHOST)
            .aaaa("mx1.lab.test", Ipv6Addr::LOCALHOST)
            .a("mx2.lab.test", Ipv4Addr::LOCALHOST)
            .aaaa("mx2.lab.test", Ipv6Addr::LOCALHOST)
            .a("nomx.lab.test", Ipv4Addr::LOCALHOST)
            .null_mx("null.lab.test")
            .a("null.lab.test", Ipv4Addr::LOCALHOST)
            .mx("sfmx.lab.test", 10, "sf.lab.test")
            .servfail("sf.lab.test")
            .mx("half.lab.test", 10, "v4.lab.test")
            .a("v4.lab.test", Ipv4Addr::LOCALHOST)
            .servfail_type("v4.lab.test", RecordType::AAAA)
            .null_mx("mixed.lab.test")
            .mx("mixed.lab.test", 10, "v4.lab.test"),
    )
    .unwrap();
    let resolver = dns.addr().to_string();
    let ca_file = ca.ca_pem().to_str().unwrap().to_owned();
    // Our probes are the sessions that used STARTTLS (the harness's readiness check does not).
    let sessions = |log: String| {
        log.lines()
            .filter(|l| l.contains("disconnect from") && l.contains("starttls=1"))
            .count()
    };
    let (code, docs, err) = check(&[
        "--resolver",
        &resolver,
        "--port",
        &port,
        "--ca-file",
        &ca_file,
        "lab.test",
    ]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "encrypted", "{doc:#} {err}");
    assert_eq!(code, 0, "{doc:#}");
    let mx: Vec<(&str, u64)> = doc["mx"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["host"].as_str().unwrap(),
                m["preference"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(mx, [("mx1.lab.test", 10), ("mx2.lab.test", 20)]);
    let hosts: Vec<(String, String)> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["mx"].as_str().unwrap().to_owned(),
                h["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            ("mx1.lab.test".to_owned(), "127.0.0.1".to_owned()),
            ("mx1.lab.test".to_owned(), "::1".to_owned()),
            ("mx2.lab.test".to_owned(), "127.0.0.1".to_owned()),
            ("mx2.lab.test".to_owned(), "::1".to_owned()),
        ]
    );
    // Each MX name is checked against the certificate, over both families.
    for h in doc["hosts"].as_array().unwrap() {
        assert_eq!(h["tls"]["certificate"]["verified"], true, "{h:#}");
        assert_eq!(h["tls"]["certificate"]["name"], h["mx"]);
    }
    // Four host reports, two addresses: Postfix saw two sessions, not four.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions(postfix.log()) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sessions(postfix.log()), 2, "{}", postfix.log());

    // No MX: the domain's own address (RFC 5321 §5.1). Null MX (RFC 7505): an error verdict.
    let (code, docs, _) = check(&[
        "--resolver",
        &resolver,
        "--port",
        &port,
        "nomx.lab.test",
        "null.lab.test",
        "nxdomain.lab.test",
    ]);
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["implicit_mx"], true);
    assert_eq!(docs[0]["hosts"][0]["address"], "127.0.0.1");
    assert_eq!(docs[1]["null_mx"], true);
    assert_eq!(docs[1]["verdict"], "error");
    assert!(docs[1]["error"].as_str().unwrap().contains("null MX"));
    assert_eq!(docs[2]["verdict"], "error");
    assert!(
        docs[2]["error"].as_str().unwrap().contains("NXDOMAIN"),
        "{:#}",
        docs[2]
    );
    assert_eq!(code, 2, "a DNS failure is an operational error");

    // The only MX does not resolve: the error says which and why, with a finding.
    let (_, docs, _) = check(&["--resolver", &resolver, "--port", &port, "sfmx.lab.test"]);
    let error = docs[0]["error"].as_str().unwrap();
    assert!(
        error.contains("sf.lab.test") && error.contains("Server Failure"),
        "{error}"
    );
    assert!(findings(&docs[0]).contains(&("inconclusive".into(), "mx-unresolvable".into())));

    // SERVFAIL on AAAA only: the A address is still probed, and the failure is a finding.
    let (_, docs, _) = check(&["--resolver", &resolver, "--port", &port, "half.lab.test"]);
    assert_eq!(docs[0]["verdict"], "encrypted", "{:#}", docs[0]);
    assert_eq!(docs[0]["mx"][0]["addresses"][0], "127.0.0.1");
    assert!(
        findings(&docs[0]).contains(&("inconclusive".into(), "address-lookup-failed".into())),
        "{:#}",
        docs[0]
    );

    // A null MX beside another MX (RFC 7505 §3 forbids it): the other is checked, and the
    // mix is a finding.
    let (_, docs, _) = check(&["--resolver", &resolver, "--port", &port, "mixed.lab.test"]);
    assert_eq!(docs[0]["null_mx"], false, "{:#}", docs[0]);
    assert_eq!(docs[0]["mx"][0]["host"], "v4.lab.test");
    assert!(
        findings(&docs[0]).contains(&("inconclusive".into(), "null-mx-beside-others".into())),
        "{:#}",
        docs[0]
    );

    // An address target and a name for the same address: each its own probe, the address
    // without SNI, the name with its own (never the other's).
    let (_, docs, _) = check(&[
        "--resolver",
        &resolver,
        "--port",
        &port,
        "--ca-file",
        &ca_file,
        "[127.0.0.1]",
        "[mx1.lab.test]",
    ]);
    assert_eq!(
        docs[0]["hosts"][0]["tls"]["sni"],
        Value::Null,
        "{:#}",
        docs[0]
    );
    assert_eq!(docs[1]["hosts"][0]["tls"]["sni"], "mx1.lab.test");
    assert_eq!(
        docs[1]["hosts"][0]["tls"]["certificate"]["verified"], true,
        "{:#}",
        docs[1]
    );
}

#[test]
fn starttls_on_one_address_family_only_is_flagged() {
    require_tools!("postfix");
    let cert = self_signed(&["mx.mixed.test"]).unwrap();
    let postfix = Postfix::start_with_tls(&cert).unwrap();
    // A plaintext server on [::1] with the same port as Postfix on 127.0.0.1.
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, postfix.port()));
    let plain = ScriptedServer::start_at(
        v6,
        Script::new("220 mx.mixed.test ESMTP\r\n")
            .reply("EHLO", "250-mx.mixed.test\r\n250 8BITMIME\r\n")
            .reply_then_close("QUIT", "221 Bye\r\n"),
    )
    .unwrap();
    let dns = DnsServer::start(
        ZoneBuilder::new("mixed.test")
            .mx("mixed.test", 10, "mx.mixed.test")
            .a("mx.mixed.test", Ipv4Addr::LOCALHOST)
            .aaaa("mx.mixed.test", Ipv6Addr::LOCALHOST),
    )
    .unwrap();
    let (_, docs, _) = check(&[
        "--resolver",
        &dns.addr().to_string(),
        "--port",
        &postfix.port().to_string(),
        "mixed.test",
    ]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "plaintext", "{doc:#}");
    let f = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "starttls-inconsistent")
        .expect("inconsistent");
    let evidence = f["evidence"].to_string();
    assert!(
        evidence.contains("127.0.0.1 (IPv4)") && evidence.contains("::1 (IPv6)"),
        "{evidence}"
    );
    drop(plain);
}

#[test]
fn several_targets_keep_order_and_read_from_stdin() {
    let a = ScriptedServer::start(
        Script::new("220 a ESMTP\r\n")
            .reply("EHLO", "250 a\r\n")
            .reply_then_close("QUIT", "221 bye\r\n"),
    )
    .unwrap();
    let b = ScriptedServer::start(Script::new("421 busy\r\n").close_after_greeting()).unwrap();
    let list = format!(
        "# a comment\n{}\n\n{}  # trailing comment\n",
        bracket(a.addr()),
        bracket(b.addr())
    );
    let mut args = vec!["check", "--json", "--targets-from", "-"];
    args.extend_from_slice(FAST);
    let (code, out, err) = sigillo(&args, Some(&list));
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{out}");
    assert_eq!(docs[0]["target"], bracket(a.addr()));
    assert_eq!(docs[0]["verdict"], "plaintext");
    assert_eq!(docs[1]["verdict"], "inconclusive");
    assert_eq!(code, 1);
    assert!(
        err.contains("targets: 2"),
        "summary on stderr with --json: {err}"
    );
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let (code, _, err) = sigillo(&["check", "[mx.example.com"], None);
    assert_eq!(code, 2);
    assert!(err.contains("missing ']'"), "{err}");
    let (code, _, err) = sigillo(&["check", "--resolver", "not-an-ip", "example.com"], None);
    assert_eq!(code, 2);
    assert!(err.contains("--resolver"), "{err}");
    let (code, _, err) = sigillo(&["check"], None);
    assert_eq!(code, 2);
    assert!(err.contains("no targets"), "{err}");
    let (code, _, err) = sigillo(
        &["check", "--ca-file", "/nonexistent.pem", "example.com"],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.pem"), "{err}");
    // The cause is printed once, not once per link of the error chain.
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    let (code, _, err) = sigillo(
        &[
            "check",
            "--trust-anchor",
            "/nonexistent.keys",
            "example.com",
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.keys"), "{err}");
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}

#[test]
fn terminal_report_has_a_table_and_the_evidence() {
    require_tools!("postfix");
    let postfix = Postfix::start_plain().unwrap();
    let proxy = StripProxy::start(postfix.addr()).unwrap();
    let mut args = vec!["check"];
    args.extend_from_slice(FAST);
    let target = bracket(proxy.addr());
    args.push(&target);
    let (code, out, _) = sigillo(&args, None);
    assert_eq!(code, 1);
    assert!(out.contains("stripped"), "{out}");
    assert!(out.contains("STARTTLS"), "{out}");
    assert!(out.contains("critical starttls-stripped"), "{out}");
    assert!(!out.contains("\x1b["), "no colour when not a terminal");
}

/// A middlebox that sends a masked banner without its line end and goes silent: the table
/// cuts the error, and the whole of it, with what the box sent, follows the table.
#[test]
fn terminal_report_gives_a_cut_error_in_full() {
    let banner = "220 ****************************************";
    let server = ScriptedServer::greeting_then_hold(banner).unwrap();
    let mut args = vec!["check", "--greeting-timeout", "1"];
    for pair in FAST.chunks(2).filter(|p| p[0] != "--greeting-timeout") {
        args.extend_from_slice(pair);
    }
    let target = bracket(server.addr());
    args.push(&target);
    let (code, out, err) = sigillo(&args, None);
    assert_eq!(code, 1, "{out}{err}");
    let line = format!(
        "\n  {}: inconclusive: timed out waiting for the greeting reply; partial reply \
         received: \"{banner}\"\n",
        server.addr()
    );
    let (table, after) = out.split_once("┘\n").unwrap_or_default();
    assert!(format!("\n{after}").starts_with(&line), "{out}");
    assert!(
        table
            .contains("inconclusive: timed out waiting for the greeting reply; partial reply rec…"),
        "{out}"
    );
}

#[test]
fn demo_runs_offline_and_gets_the_expected_verdicts() {
    let (code, out, err) = sigillo(&["demo", "--json"], None);
    assert_eq!(code, 0, "{out}{err}");
    let verdicts: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["verdict"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(verdicts, ["encrypted", "plaintext", "stripped"]);
}

#[test]
fn implicit_tls_postfix_wrapper_mode() {
    require_tools!("postfix");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let postfix = Postfix::start(PostfixOptions::default().tls(&cert).wrapper_mode(true)).unwrap();
    let ca_file = ca.ca_pem().to_str().unwrap().to_owned();
    let (code, docs, _) = check(&[
        "--implicit-tls",
        "--ca-file",
        &ca_file,
        &bracket(postfix.addr()),
    ]);
    let doc = &docs[0];
    assert_eq!(doc["verdict"], "encrypted", "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
    let host = &doc["hosts"][0];
    assert_eq!(
        host["starttls"]["attempted"], false,
        "no STARTTLS inside implicit TLS"
    );
    assert!(
        host["banner"]
            .as_str()
            .unwrap()
            .starts_with("220 mx.sigillo.test")
    );
    assert_eq!(host["tls"]["version"], "TLSv1.3");
    assert!(
        host["transcript"][0]
            .as_str()
            .unwrap()
            .starts_with("S (TLS): 220"),
        "{host:#}"
    );
    // Without --implicit-tls, a STARTTLS probe of a TLS port gets no greeting: inconclusive.
    let (_, docs, _) = check(&["--greeting-timeout", "2", &bracket(postfix.addr())]);
    assert_eq!(docs[0]["verdict"], "inconclusive", "{:#}", docs[0]);
}

#[test]
fn a_stalled_target_does_not_hold_back_the_others() {
    // With two slots, a tarpit first in the list must not keep targets 3 and 4 from being
    // checked while it stalls: they are contacted while sigillo still waits for the tarpit.
    let tarpit = SilentServer::start().unwrap();
    let quick = || {
        ScriptedServer::start(
            Script::new("220 q ESMTP\r\n")
                .reply("EHLO", "250 q\r\n")
                .reply_then_close("QUIT", "221 bye\r\n"),
        )
        .unwrap()
    };
    let (a, b, c) = (quick(), quick(), quick());
    let targets = [tarpit.addr(), a.addr(), b.addr(), c.addr()].map(bracket);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .args([
            "check",
            "--json",
            "--concurrency",
            "2",
            "--greeting-timeout",
            "60",
        ])
        .args(&targets)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while c.connections() == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "sigillo finished before the last target was contacted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the tarpit is still stalling, yet the last target was checked"
    );
    // Output stays in input order: drop the tarpit so its check ends, then read.
    drop(tarpit);
    let out = child.wait_with_output().unwrap();
    let docs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let order: Vec<&str> = docs.iter().map(|d| d["target"].as_str().unwrap()).collect();
    assert_eq!(
        order,
        targets.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(docs[0]["verdict"], "inconclusive");
}
