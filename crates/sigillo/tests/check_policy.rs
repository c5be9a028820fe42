//! `sigillo check` policy discovery against real peers on loopback: a DNSSEC-signed zone
//! from the testkit's DNS server (MX, TLSA, `_mta-sts`, `_smtp._tls`), its HTTPS server for
//! the MTA-STS policies (valid, broken, missing, slow, wrong-name certificate), and a real
//! Postfix whose certificate comes from the test CA. Every MX name resolves to 127.0.0.1 and
//! is probed on Postfix's port (`--port`); policy hosts are fetched on the HTTPS server's
//! port (the hidden `--mta-sts-port`, for tests only). Each test asserts the exact findings.

mod run;

use serde_json::Value;
use sigillo_testkit::{
    DnsServer, HttpResponse, HttpsServer, Postfix, PostfixOptions, TestCa, ZoneBuilder,
    require_tools,
};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// MX names in the Postfix certificate (`mxbad` is not: its certificate check fails).
const CERT_NAMES: [&str; 4] = [
    "mx.lab.test",
    "mx2.lab.test",
    "mx3.lab.test",
    "mxta.lab.test",
];

/// The servers of one test: Postfix, the signed zone and the policy host.
struct Lab {
    ca: TestCa,
    postfix: Postfix,
    dns: DnsServer,
    https: HttpsServer,
}

/// `openssl ARGS` with `input` on stdin; its stdout.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// SHA-256 of a PEM certificate's SubjectPublicKeyInfo (`selector` 1) or of the whole DER
/// certificate (`selector` 0), computed by openssl, independently of sigillo.
fn cert_sha256(pem: &Path, selector: u8) -> Vec<u8> {
    let pem = std::fs::read(pem).unwrap();
    let der = if selector == 1 {
        let key = openssl(&["x509", "-pubkey", "-noout"], &pem);
        openssl(&["pkey", "-pubin", "-outform", "DER"], &key)
    } else {
        openssl(&["x509", "-outform", "DER"], &pem)
    };
    openssl(&["dgst", "-sha256", "-binary"], &der)
}

/// The zone: one domain per case, MX hosts on 127.0.0.1, policy hosts on 127.0.0.1.
fn zone(leaf_spki: &[u8], ca_sha256: &[u8]) -> ZoneBuilder {
    let mut zone = ZoneBuilder::new("lab.test").signed();
    for host in CERT_NAMES.iter().chain(&["mxbad.lab.test"]) {
        zone = zone.a(host, Ipv4Addr::LOCALHOST);
    }
    // mx.lab.test: DANE-EE 3 1 1 of Postfix's key; mx3: a wrong digest; mxta: DANE-TA 2 0 1
    // of the test CA; mx2 and mxbad: none.
    zone = zone
        .tlsa("_25._tcp.mx.lab.test", 3, 1, 1, leaf_spki)
        .tlsa("_25._tcp.mx3.lab.test", 3, 1, 1, &[0x11; 32])
        .tlsa("_25._tcp.mxta.lab.test", 2, 0, 1, ca_sha256);
    let mx = [
        ("good", "mx.lab.test"),
        ("broken", "mx2.lab.test"),
        ("missing", "mx2.lab.test"),
        ("slow", "mx2.lab.test"),
        ("misnamed", "mx2.lab.test"),
        ("othermx", "mx2.lab.test"),
        ("badcert", "mxbad.lab.test"),
        ("wrongtlsa", "mx3.lab.test"),
        ("ta", "mxta.lab.test"),
        ("bogus", "mx2.lab.test"),
        ("partial", "mx.lab.test"),
    ];
    for (name, host) in mx {
        zone = zone.mx(&format!("{name}.lab.test"), 10, host);
    }
    for name in [
        "good", "broken", "missing", "slow", "misnamed", "othermx", "badcert",
    ] {
        zone = zone
            .txt(
                &format!("_mta-sts.{name}.lab.test"),
                "v=STSv1; id=20240101;",
            )
            .a(&format!("mta-sts.{name}.lab.test"), Ipv4Addr::LOCALHOST);
    }
    zone.mx("partial.lab.test", 20, "mx2.lab.test")
        .txt(
            "_smtp._tls.good.lab.test",
            "v=TLSRPTv1; rua=mailto:tlsrpt@lab.test",
        )
        .bogus("bogus.lab.test")
        .unsigned_child("plain.lab.test")
        .mx("plain.lab.test", 10, "mx2.lab.test")
}

fn policy(mode: &str, mx: &str) -> HttpResponse {
    HttpResponse::ok(format!(
        "version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n"
    ))
}

fn lab() -> Lab {
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&CERT_NAMES).unwrap();
    let postfix = Postfix::start(PostfixOptions::default().tls(&cert).hostname("mx.lab.test"))
        .expect("postfix");
    let dns = zone(
        &cert_sha256(&cert.cert_pem, 1),
        &cert_sha256(ca.ca_pem(), 0),
    )
    .start()
    .expect("dns");
    let https = HttpsServer::start(
        &ca.issue(&[
            "mta-sts.good.lab.test",
            "mta-sts.broken.lab.test",
            "mta-sts.missing.lab.test",
            "mta-sts.slow.lab.test",
            "mta-sts.othermx.lab.test",
            "mta-sts.badcert.lab.test",
        ])
        .unwrap(),
    )
    .unwrap();
    https
        .add_cert_for(
            "mta-sts.misnamed.lab.test",
            &ca.issue(&["www.lab.test"]).unwrap(),
        )
        .unwrap();
    let routes = [
        ("good", policy("enforce", "mx.lab.test")),
        (
            "broken",
            HttpResponse::ok("version: STSv1\nmode: enforce\nmx: mx2.lab.test\n"),
        ),
        (
            "slow",
            policy("enforce", "mx2.lab.test").delay(Duration::from_secs(5)),
        ),
        ("misnamed", policy("enforce", "mx2.lab.test")),
        ("othermx", policy("enforce", "mail.elsewhere.test")),
        ("badcert", policy("enforce", "*.lab.test")),
    ];
    for (name, response) in routes {
        https.route_host(&format!("mta-sts.{name}.lab.test"), POLICY_PATH, response);
    }
    Lab {
        ca,
        postfix,
        dns,
        https,
    }
}

impl Lab {
    /// Runs `check` against this lab: (exit code, stdout, stderr).
    fn check(&self, extra: &[&str]) -> (i32, String, String) {
        let anchor = self.dns.trust_anchor_file().expect("signed zone");
        let mut args = vec!["--trust-anchor".to_owned(), anchor.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.check_without_anchor(&args)
    }

    /// Runs `check` against this lab with no `--trust-anchor`.
    fn check_without_anchor<S: AsRef<str>>(&self, extra: &[S]) -> (i32, String, String) {
        let mut args: Vec<String> = [
            "check",
            "--ehlo",
            "probe.sigillo.test",
            "--resolver",
            &self.dns.addr().to_string(),
            "--ca-file",
            &self.ca.ca_pem().display().to_string(),
            "--port",
            &self.postfix.port().to_string(),
            "--mta-sts-port",
            &self.https.port().to_string(),
            "--fetch-timeout",
            "1",
            "--connect-timeout",
            "5",
            "--command-timeout",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.as_ref().to_owned()));
        run::sigillo(&args, None)
    }

    /// `check --json`: (exit code, one document per target).
    fn check_json(&self, targets: &[&str]) -> (i32, Vec<Value>) {
        let mut extra = vec!["--json"];
        extra.extend_from_slice(targets);
        let (code, out, err) = self.check(&extra);
        let docs: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{err}")))
            .collect();
        assert_eq!(docs.len(), targets.len(), "{out}\n{err}");
        (code, docs)
    }
}

/// Every finding as (id, kind, severity, mx).
fn findings(doc: &Value) -> Vec<(String, String, String, String)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or("-").to_owned();
            (text("id"), text("kind"), text("severity"), text("mx"))
        })
        .collect()
}

fn f(id: &str, kind: &str, severity: &str, mx: &str) -> (String, String, String, String) {
    (id.into(), kind.into(), severity.into(), mx.into())
}

/// The evidence lines of the first finding with this id.
fn evidence(doc: &Value, id: &str) -> Vec<String> {
    let finding = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} finding in {doc:#}"));
    finding["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn good_mta_sts_dane_and_tlsrpt_give_no_findings() {
    require_tools!("postfix", "openssl");
    let lab = lab();
    let (code, docs) = lab.check_json(&["good.lab.test", "ta.lab.test"]);
    let good = &docs[0];
    assert_eq!(good["verdict"], "encrypted", "{good:#}");
    assert_eq!(findings(good), [], "{good:#}");
    let p = &good["policy"];
    assert_eq!(p["status"], "enforced", "{p:#}");
    assert_eq!(p["enforced_by"], serde_json::json!(["dane", "mta-sts"]));
    let sts = &p["mta_sts"];
    assert_eq!(sts["record"], "v=STSv1; id=20240101;");
    assert_eq!(sts["id"], "20240101");
    assert_eq!(
        sts["url"],
        "https://mta-sts.good.lab.test/.well-known/mta-sts.txt"
    );
    assert_eq!(
        sts["policy"],
        serde_json::json!({"version": "STSv1", "mode": "enforce", "mx": ["mx.lab.test"],
                           "max_age": 86400, "extensions": []})
    );
    assert_eq!(sts["fetch_error"], Value::Null);
    assert_eq!(
        sts["mx"],
        serde_json::json!([{"host": "mx.lab.test", "matches_policy": true, "tls": true,
                            "certificate_valid": true}])
    );
    assert_eq!(
        p["tlsrpt"]["record"],
        "v=TLSRPTv1; rua=mailto:tlsrpt@lab.test"
    );
    assert_eq!(
        p["tlsrpt"]["rua"],
        serde_json::json!(["mailto:tlsrpt@lab.test"])
    );
    assert_eq!(p["dnssec"]["mx"], "secure", "{p:#}");
    let dane = &p["dane"];
    assert_eq!(dane["applies"], true);
    let host = &dane["hosts"][0];
    assert_eq!(host["mx"], "mx.lab.test");
    assert_eq!(host["status"], "usable");
    assert_eq!(host["dnssec"], "secure");
    let spki = good["hosts"][0]["tls"]["certificate"]["chain"][0]["spki_sha256"]
        .as_str()
        .unwrap();
    assert_eq!(host["tlsa"], serde_json::json!([format!("3 1 1 {spki}")]));
    let address = &host["addresses"][0];
    assert_eq!(address["address"], "127.0.0.1");
    assert_eq!(address["result"], "matched");
    assert_eq!(address["usage"], "dane-ee");
    assert_eq!(address["certificate"], 0);
    assert_eq!(lab.https.requests_for(POLICY_PATH), 1);

    // DANE-TA 2 0 1 of the CA Postfix presents after its leaf, with the name checked. The
    // domain publishes DANE but no _smtp._tls record: an informational finding, which leaves
    // the policy enforced.
    let ta = &docs[1];
    assert_eq!(
        findings(ta),
        [f("tlsrpt-missing", "no-record", "low", "-")],
        "{ta:#}"
    );
    assert_eq!(
        evidence(ta, "tlsrpt-missing"),
        [
            "_smtp._tls.ta.lab.test: no TXT record",
            "_25._tcp.mxta.lab.test: 1 TLSA record(s), DNSSEC-validated"
        ]
    );
    assert_eq!(ta["policy"]["status"], "enforced");
    assert_eq!(ta["policy"]["enforced_by"], serde_json::json!(["dane"]));
    assert_eq!(ta["policy"]["mta_sts"]["record"], Value::Null);
    assert_eq!(ta["policy"]["tlsrpt"]["record"], Value::Null);
    let address = &ta["policy"]["dane"]["hosts"][0]["addresses"][0];
    assert_eq!(address["result"], "matched", "{ta:#}");
    assert_eq!(address["usage"], "dane-ta");
    assert_eq!(address["certificate"], 1);
    // The low finding fails the default --fail-on low.
    assert_eq!(code, 1);

    // The terminal report's policy section.
    let (code, out, err) = lab.check(&["good.lab.test"]);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "  Policy: enforced (by dane and mta-sts)",
        "    MTA-STS  v=STSv1; id=20240101;",
        "             policy: mode enforce, max_age 86400, mx mx.lab.test",
        "             mx.lab.test: matches, TLS yes, certificate valid",
        "    TLS-RPT  v=TLSRPTv1; rua=mailto:tlsrpt@lab.test",
        "    DNSSEC   MX RRset secure (MX 10 mx.lab.test)",
        "               127.0.0.1: matched (DANE-EE)",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
}

#[test]
fn broken_mta_sts_policies_are_reported() {
    require_tools!("postfix", "openssl");
    let lab = lab();
    let targets = [
        "broken.lab.test",
        "missing.lab.test",
        "slow.lab.test",
        "misnamed.lab.test",
        "othermx.lab.test",
        "badcert.lab.test",
    ];
    let started = Instant::now();
    let (code, docs) = lab.check_json(&targets);
    // The slow policy host (5 s) is cut off by --fetch-timeout 1, concurrently with the rest.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 1);
    for doc in &docs {
        assert_eq!(doc["verdict"], "encrypted", "{doc:#}");
        assert_eq!(doc["policy"]["dnssec"]["mx"], "secure", "{doc:#}");
        assert_eq!(doc["policy"]["dane"]["applies"], false, "{doc:#}");
    }
    let fetch = |doc: &Value| {
        (
            doc["policy"]["status"].as_str().unwrap().to_owned(),
            doc["policy"]["mta_sts"]["fetch_result_type"]
                .as_str()
                .unwrap_or("-")
                .to_owned(),
            doc["policy"]["mta_sts"]["policy"].is_null(),
        )
    };

    let broken = &docs[0];
    assert_eq!(
        findings(broken),
        [
            f("sts-policy-invalid", "policy-syntax", "medium", "-"),
            f("tlsrpt-missing", "no-record", "low", "-")
        ]
    );
    assert_eq!(
        fetch(broken),
        ("failing".into(), "sts-policy-invalid".into(), true)
    );
    let lines = evidence(broken, "sts-policy-invalid");
    assert!(
        lines[0].contains("policy has no max_age field"),
        "{lines:?}"
    );

    let missing = &docs[1];
    assert_eq!(
        findings(missing),
        [
            f("sts-policy-fetch-error", "http-status", "medium", "-"),
            f("tlsrpt-missing", "no-record", "low", "-")
        ]
    );
    // An MTA-STS record without a TLS-RPT record: failures are not reported to the domain.
    assert_eq!(
        evidence(missing, "tlsrpt-missing"),
        [
            "_smtp._tls.missing.lab.test: no TXT record",
            "_mta-sts.missing.lab.test: v=STSv1; id=20240101;"
        ]
    );
    assert!(evidence(missing, "sts-policy-fetch-error")[0].contains("expected HTTP 200, got 404"));

    let slow = &docs[2];
    assert_eq!(
        findings(slow),
        [
            f("sts-policy-fetch-error", "timeout", "medium", "-"),
            f("tlsrpt-missing", "no-record", "low", "-")
        ],
        "{slow:#}"
    );
    assert_eq!(
        fetch(slow),
        ("failing".into(), "sts-policy-fetch-error".into(), true)
    );

    let misnamed = &docs[3];
    assert_eq!(
        findings(misnamed),
        [
            f(
                "sts-webpki-invalid",
                "certificate-host-mismatch",
                "medium",
                "-"
            ),
            f("tlsrpt-missing", "no-record", "low", "-")
        ],
        "{misnamed:#}"
    );

    // An MX outside an enforce policy: compliant senders refuse it.
    let othermx = &docs[4];
    assert_eq!(
        findings(othermx),
        [
            f(
                "validation-failure",
                "sts-mx-mismatch",
                "high",
                "mx2.lab.test"
            ),
            f("tlsrpt-missing", "no-record", "low", "-")
        ]
    );
    assert_eq!(
        evidence(othermx, "validation-failure"),
        ["MX mx2.lab.test", "policy mx: mail.elsewhere.test"]
    );
    assert_eq!(
        othermx["policy"]["mta_sts"]["mx"],
        serde_json::json!([{"host": "mx2.lab.test", "matches_policy": false, "tls": true,
                            "certificate_valid": true}])
    );

    // An MX whose certificate does not name it, under enforce: the probe's finding is
    // raised from medium to high.
    let badcert = &docs[5];
    assert_eq!(
        findings(badcert),
        [
            f(
                "certificate-host-mismatch",
                "name",
                "high",
                "mxbad.lab.test"
            ),
            f("tlsrpt-missing", "no-record", "low", "-")
        ],
        "{badcert:#}"
    );
    assert_eq!(
        evidence(badcert, "certificate-host-mismatch")
            .last()
            .unwrap(),
        "MTA-STS policy id 20240101 mode enforce: senders that apply it refuse this MX"
    );
    assert_eq!(badcert["policy"]["status"], "failing");
    assert_eq!(
        badcert["policy"]["mta_sts"]["mx"][0]["certificate_valid"],
        false
    );
    // The misnamed policy host's handshake failed; no other policy host was asked twice.
    assert_eq!(lab.https.failed_handshakes(), 1);
}

#[test]
fn dane_and_dnssec_failures_are_reported() {
    require_tools!("postfix", "openssl");
    let lab = lab();
    let (code, docs) = lab.check_json(&[
        "wrongtlsa.lab.test",
        "partial.lab.test",
        "bogus.lab.test",
        "plain.lab.test",
    ]);
    assert_eq!(code, 1);

    let wrong = &docs[0];
    assert_eq!(
        findings(wrong),
        [
            f("tlsa-invalid", "tlsa-mismatch", "high", "mx3.lab.test"),
            f("tlsrpt-missing", "no-record", "low", "-")
        ],
        "{wrong:#}"
    );
    let lines = evidence(wrong, "tlsa-invalid");
    assert_eq!(
        lines[0],
        format!("_25._tcp.mx3.lab.test. TLSA 3 1 1 {}", "11".repeat(32))
    );
    let spki = wrong["hosts"][0]["tls"]["certificate"]["chain"][0]["spki_sha256"]
        .as_str()
        .unwrap();
    assert!(
        lines[1].contains(&format!("SPKI SHA-256 {spki}")),
        "{lines:?}"
    );
    assert_eq!(wrong["policy"]["status"], "failing");
    assert_eq!(
        wrong["policy"]["dane"]["hosts"][0]["addresses"][0]["result"],
        "no-match"
    );

    // One MX with TLSA, one without: DANE senders refuse the second.
    let partial = &docs[1];
    assert_eq!(
        findings(partial),
        [
            f("dane-required", "mx-without-tlsa", "medium", "mx2.lab.test"),
            f("tlsrpt-missing", "no-record", "low", "-")
        ],
        "{partial:#}"
    );
    let hosts: Vec<(&str, &str, &str)> = partial["policy"]["dane"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let text = |key: &str| h[key].as_str().unwrap();
            (text("mx"), text("status"), text("dnssec"))
        })
        .collect();
    // mx2's TLSA name does not exist, which the signed zone proves: a secure denial.
    assert_eq!(
        hosts,
        [
            ("mx.lab.test", "usable", "secure"),
            ("mx2.lab.test", "none", "secure")
        ]
    );

    // A bogus MX RRset: validating resolvers cannot resolve it (sigillo's own MX lookup
    // does not validate, so the host is still probed).
    let bogus = &docs[2];
    assert_eq!(
        findings(bogus),
        [f("dnssec-invalid", "mx-bogus", "high", "-")],
        "{bogus:#}"
    );
    assert_eq!(bogus["policy"]["dnssec"]["mx"], "bogus");
    assert_eq!(bogus["verdict"], "encrypted");

    // An unsigned delegation: insecure, so DANE does not apply and nothing is wrong (not even
    // the missing _smtp._tls record, which matters only beside MTA-STS or DANE; the same for
    // the bogus MX RRset above).
    let plain = &docs[3];
    assert_eq!(findings(plain), [], "{plain:#}");
    assert_eq!(plain["policy"]["dnssec"]["mx"], "insecure", "{plain:#}");
    assert_eq!(plain["policy"]["status"], "none");
    assert_eq!(plain["policy"]["dane"]["hosts"], serde_json::json!([]));
}

#[test]
fn no_policy_and_address_targets_skip_discovery() {
    require_tools!("postfix", "openssl");
    let lab = lab();
    let literal = format!("[127.0.0.1]:{}", lab.postfix.port());
    let (code, out, err) = lab.check_without_anchor(&["--json", "--no-policy", "good.lab.test"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["verdict"], "encrypted");
    assert_eq!(doc["policy"], Value::Null);
    let (_, docs) = lab.check_json(&[&literal]);
    assert_eq!(docs[0]["policy"], Value::Null);
    assert_eq!(lab.https.requests(), 0);
    // --trust-anchor only makes sense with discovery.
    let (code, _, err) = lab.check(&["--no-policy", "good.lab.test"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--trust-anchor"), "{err}");
}
