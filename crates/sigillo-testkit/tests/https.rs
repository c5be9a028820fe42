//! The HTTPS test server, fetched with curl (a real client, OpenSSL underneath): policies by
//! path and host, keep-alive, certificates chosen by SNI (valid, expired, wrong name), and
//! the knobs for fetchers' limits (delay, redirect, oversized, endless and trickled bodies).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sigillo_testkit::{HttpResponse, HttpsServer, TestCa, require_tools};

const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
const POLICY: &str = "version: STSv1\nmode: enforce\nmx: mx.lab.test\nmax_age: 86400\n";

/// What one curl run gave: exit code, stdout, stderr, and how long it took.
struct Curl {
    code: Option<i32>,
    out: String,
    err: String,
    took: Duration,
}

/// `curl -sS` against `host` resolved to the server, trusting `ca`; `urls` are paths.
fn curl(https: &HttpsServer, ca: &Path, host: &str, paths: &[&str], extra: &[&str]) -> Curl {
    let port = https.port();
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "curl", "-sS", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra);
    for path in paths {
        cmd.arg(format!("https://{host}:{port}{path}"));
    }
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("run curl");
    Curl {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// `-o /dev/null -w FORMAT` for each of `n` URLs.
fn discard_and_write(n: usize, format: &str) -> Vec<String> {
    let mut args = vec!["-w".to_string(), format.to_string()];
    for _ in 0..n {
        args.extend(["-o".to_string(), "/dev/null".to_string()]);
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn serves_policies_by_path_and_host_over_kept_alive_connections() {
    require_tools!("curl");
    let ca = TestCa::new().unwrap();
    let cert = ca
        .issue(&["mta-sts.lab.test", "mta-sts.other.test"])
        .unwrap();
    let https = HttpsServer::start(&cert).unwrap();
    https.route(POLICY_PATH, HttpResponse::ok(POLICY));
    https.route_host(
        "mta-sts.other.test",
        POLICY_PATH,
        HttpResponse::ok("version: STSv1\nmode: testing\nmx: *.other.test\nmax_age: 600\n"),
    );

    let got = curl(&https, ca.ca_pem(), "mta-sts.lab.test", &[POLICY_PATH], &[]);
    assert_eq!(got.code, Some(0), "{}", got.err);
    assert_eq!(got.out, POLICY);
    let got = curl(
        &https,
        ca.ca_pem(),
        "mta-sts.other.test",
        &[POLICY_PATH],
        &[],
    );
    assert!(got.out.contains("mode: testing"), "{}{}", got.out, got.err);

    // Three URLs in one curl run: one connection, one handshake, three requests.
    let fmt = discard_and_write(3, "%{http_code} %{num_connects} %{content_type}\n");
    let got = curl(
        &https,
        ca.ca_pem(),
        "mta-sts.lab.test",
        &[POLICY_PATH, POLICY_PATH, "/nope"],
        &strs(&fmt),
    );
    assert_eq!(
        got.out, "200 1 text/plain\n200 0 text/plain\n404 0 text/plain\n",
        "{}",
        got.err
    );
    assert_eq!(https.handshakes(), 3);
    assert_eq!(https.requests(), 5);
    assert_eq!(https.requests_for(POLICY_PATH), 4);
    let log = https.request_log();
    let last: Vec<(usize, &str, &str)> = log[2..]
        .iter()
        .map(|r| (r.connection, r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        last,
        [
            (3, "GET", POLICY_PATH),
            (3, "GET", POLICY_PATH),
            (3, "GET", "/nope")
        ]
    );
    assert!(
        log.iter().all(|r| r.sni == r.host && r.sni.is_some()),
        "SNI and Host: {log:?}"
    );
    assert_eq!(log[1].host.as_deref(), Some("mta-sts.other.test"));

    // The client asks to close: a new connection per request.
    let fmt = discard_and_write(2, "%{num_connects}\n");
    let mut args = strs(&fmt);
    args.extend(["-H", "Connection: close"]);
    let got = curl(
        &https,
        ca.ca_pem(),
        "mta-sts.lab.test",
        &[POLICY_PATH, POLICY_PATH],
        &args,
    );
    assert_eq!(got.out, "1\n1\n", "{}", got.err);
    assert_eq!(https.handshakes(), 5);

    // A request head over 16 KiB gets 431.
    let big = format!("X-Big: {}", "a".repeat(20_000));
    let fmt = discard_and_write(1, "%{http_code}");
    let mut args = strs(&fmt);
    args.extend(["-H", &big]);
    let got = curl(
        &https,
        ca.ca_pem(),
        "mta-sts.lab.test",
        &[POLICY_PATH],
        &args,
    );
    assert_eq!(got.out, "431", "{}", got.err);
}

#[test]
fn certificates_by_sni_valid_expired_and_wrong_name() {
    require_tools!("curl");
    let ca = TestCa::new().unwrap();
    let good = ca.issue(&["mta-sts.good.test"]).unwrap();
    let https = HttpsServer::start(&good).unwrap();
    https
        .add_cert(&ca.issue_expired(&["mta-sts.expired.test"]).unwrap())
        .unwrap();
    https
        .add_cert_for(
            "mta-sts.wrong.test",
            &ca.issue(&["mta-sts.elsewhere.test"]).unwrap(),
        )
        .unwrap();
    https.route(POLICY_PATH, HttpResponse::ok(POLICY));

    let ok = curl(
        &https,
        ca.ca_pem(),
        "mta-sts.good.test",
        &[POLICY_PATH],
        &[],
    );
    assert_eq!((ok.code, ok.out.as_str()), (Some(0), POLICY), "{}", ok.err);
    let expired = curl(
        &https,
        ca.ca_pem(),
        "mta-sts.expired.test",
        &[POLICY_PATH],
        &[],
    );
    assert_eq!(expired.code, Some(60), "{}", expired.err);
    assert!(expired.err.contains("expired"), "{}", expired.err);
    let wrong = curl(
        &https,
        ca.ca_pem(),
        "mta-sts.wrong.test",
        &[POLICY_PATH],
        &[],
    );
    assert_eq!(wrong.code, Some(60), "{}", wrong.err);
    assert!(
        wrong.err.contains("subject name") || wrong.err.contains("does not match"),
        "{}",
        wrong.err
    );
    // An untrusted CA fails too; without verification the same server answers.
    let other_ca = TestCa::new().unwrap();
    let untrusted = curl(
        &https,
        other_ca.ca_pem(),
        "mta-sts.good.test",
        &[POLICY_PATH],
        &[],
    );
    assert_eq!(untrusted.code, Some(60), "{}", untrusted.err);
    let insecure = curl(
        &https,
        other_ca.ca_pem(),
        "mta-sts.expired.test",
        &[POLICY_PATH],
        &["-k"],
    );
    assert_eq!(insecure.out, POLICY, "{}", insecure.err);

    // The expired and untrusted certificates were refused during the handshake. curl checks
    // the name after it, so that handshake completed; no request came through any of them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while https.failed_handshakes() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(https.failed_handshakes(), 2);
    assert_eq!(https.requests(), 2);
    assert!(
        https
            .request_log()
            .iter()
            .all(|r| r.sni.as_deref() != Some("mta-sts.wrong.test"))
    );
}

#[test]
fn delays_redirects_and_bodies_that_are_too_big_or_never_end() {
    require_tools!("curl");
    let ca = TestCa::new().unwrap();
    let https = HttpsServer::start(&ca.issue(&["mta-sts.lab.test"]).unwrap()).unwrap();
    let host = "mta-sts.lab.test";
    https.route(
        "/slow",
        HttpResponse::ok(POLICY).delay(Duration::from_secs(2)),
    );
    https.route(
        "/moved",
        HttpResponse::redirect(301, "https://elsewhere.test/policy"),
    );
    https.route("/big", HttpResponse::oversized(1 << 20));
    https.route("/endless", HttpResponse::endless());
    https.route(
        "/trickle",
        HttpResponse::ok("0123456789").trickle(Duration::from_millis(100)),
    );
    https.route(
        "/html",
        HttpResponse::ok("<html></html>").header("Content-Type", "text/html"),
    );

    // A client with a 1 s limit gives up on the 2 s delay; a patient one gets the policy.
    let impatient = curl(&https, ca.ca_pem(), host, &["/slow"], &["--max-time", "1"]);
    assert_eq!(impatient.code, Some(28), "{}", impatient.err);
    assert!(
        impatient.took < Duration::from_millis(1900),
        "{:?}",
        impatient.took
    );
    let patient = curl(&https, ca.ca_pem(), host, &["/slow"], &[]);
    assert_eq!(patient.out, POLICY);
    assert!(patient.took >= Duration::from_secs(2), "{:?}", patient.took);

    let fmt = discard_and_write(1, "%{http_code} %{redirect_url}");
    let moved = curl(&https, ca.ca_pem(), host, &["/moved"], &strs(&fmt));
    assert_eq!(
        moved.out, "301 https://elsewhere.test/policy",
        "{}",
        moved.err
    );

    let fmt = discard_and_write(1, "%{size_download} %{content_type}");
    let big = curl(&https, ca.ca_pem(), host, &["/big"], &strs(&fmt));
    assert_eq!(big.out, format!("{} text/plain", 1 << 20), "{}", big.err);
    let html = curl(&https, ca.ca_pem(), host, &["/html"], &strs(&fmt));
    assert_eq!(html.out, "13 text/html");

    let fmt = discard_and_write(1, "%{size_download}");
    let mut args = strs(&fmt);
    args.extend(["--max-time", "1"]);
    let endless = curl(&https, ca.ca_pem(), host, &["/endless"], &args);
    assert_eq!(endless.code, Some(28), "{}", endless.err);
    let size: u64 = endless.out.trim().parse().unwrap();
    assert!(
        size > 1 << 20,
        "an endless body keeps coming: {size} bytes in 1 s"
    );

    // Ten bytes 100 ms apart: cut off at 0.5 s with part of it, complete in about 1 s.
    let mut args = strs(&fmt);
    args.extend(["--max-time", "0.5"]);
    let cut = curl(&https, ca.ca_pem(), host, &["/trickle"], &args);
    assert_eq!(cut.code, Some(28), "{}", cut.err);
    let size: u64 = cut.out.trim().parse().unwrap();
    assert!((1..10).contains(&size), "{size}");
    let whole = curl(&https, ca.ca_pem(), host, &["/trickle"], &[]);
    assert_eq!(whole.out, "0123456789");
    assert!(whole.took >= Duration::from_millis(900), "{:?}", whole.took);
}
