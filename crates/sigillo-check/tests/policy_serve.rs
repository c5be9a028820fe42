//! `sigillo policy serve`'s engine and socketmap server, in process, against real peers on
//! 127.0.0.1: the testkit's DNSSEC-signed DNS server, its HTTPS server for MTA-STS policies
//! (valid, broken, redirected, oversized, slow, with expired and wrongly named certificates),
//! and raw socketmap clients (pipelining, map names, broken framing, a unix socket, a client
//! trickling a request, idle clients holding every connection slot).
//! Postfix's `postmap -q` as the client is in the binary's tests
//! (`crates/sigillo/tests/policy_serve.rs`).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sigillo_check::TrustAnchors;
use sigillo_check::policy::dns::{DnsConfig, PolicyDns, TxtLookup};
use sigillo_check::policy::engine::{EngineConfig, NetSources, PolicyEngine};
use sigillo_check::policy::fetch::{FetchConfig, FetchError, PolicyFetcher};
use sigillo_check::policy::serve::{
    ConnectionEnd, ListenAddr, PolicyListener, ServeEvent, ServeOptions, serve_until,
};
use sigillo_policy::decide::{DaneState, Source};
use sigillo_policy::socketmap::{Reply, decode_reply, encode_request};
use sigillo_policy::tlsrpt::ResultType;
use sigillo_testkit::{DnsServer, HttpResponse, HttpsServer, TestCa, ZoneBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

fn policy_text(mx: &str, max_age: u32) -> String {
    format!("version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: {max_age}\n")
}

/// The DNS zone, the policy host and the CA that signs its certificates.
struct Lab {
    _ca: TestCa,
    ca_pem: std::path::PathBuf,
    dns: DnsServer,
    https: HttpsServer,
}

/// A domain of lab.test with an MX, an `_mta-sts` record and a policy host name.
fn sts_domain(zone: ZoneBuilder, domain: &str) -> ZoneBuilder {
    zone.mx(domain, 10, &format!("mx.{domain}"))
        .a(&format!("mx.{domain}"), Ipv4Addr::LOCALHOST)
        .txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=20240101;")
        .a(&format!("mta-sts.{domain}"), Ipv4Addr::LOCALHOST)
}

fn lab() -> Lab {
    let mut zone = ZoneBuilder::new("lab.test").signed();
    for domain in [
        "sts.lab.test",
        "redirect.lab.test",
        "big.lab.test",
        "slow.lab.test",
        "expired.lab.test",
        "wrongname.lab.test",
        "broken.lab.test",
        "missing.lab.test",
        "html.lab.test",
        "both.lab.test",
        "trickle.lab.test",
        "endless.lab.test",
        "bighead.lab.test",
    ] {
        zone = sts_domain(zone, domain);
    }
    let zone = zone
        // DANE: usable TLSA for both.lab.test's MX; a bogus signature on bogus.lab.test's.
        .tlsa("_25._tcp.mx.both.lab.test", 3, 1, 1, &[0x11; 32])
        .mx("bogus.lab.test", 10, "mx.bogus.lab.test")
        .tlsa("_25._tcp.mx.bogus.lab.test", 3, 1, 1, &[0x22; 32])
        .bogus("_25._tcp.mx.bogus.lab.test")
        .mx("unusable.lab.test", 10, "mx.unusable.lab.test")
        .tlsa("_25._tcp.mx.unusable.lab.test", 1, 1, 1, &[0x33; 32])
        // A TLSA record with no data is there but unusable, not absent.
        .mx("empty-tlsa.lab.test", 10, "mx.empty-tlsa.lab.test")
        .tlsa("_25._tcp.mx.empty-tlsa.lab.test", 3, 1, 1, &[])
        // TLSA lookups that fail (SERVFAIL) for one MX host beside a usable one, beside one
        // with no TLSA, and for the only MX host.
        .mx("halfdane.lab.test", 10, "mx1.halfdane.lab.test")
        .mx("halfdane.lab.test", 20, "mx2.halfdane.lab.test")
        .tlsa("_25._tcp.mx1.halfdane.lab.test", 3, 1, 1, &[0x44; 32])
        .servfail("_25._tcp.mx2.halfdane.lab.test")
        .mx("halffail.lab.test", 10, "mx1.halffail.lab.test")
        .mx("halffail.lab.test", 20, "mx2.halffail.lab.test")
        .servfail("_25._tcp.mx2.halffail.lab.test")
        .mx("allfail.lab.test", 10, "mx.allfail.lab.test")
        .servfail("_25._tcp.mx.allfail.lab.test")
        // A domain whose _mta-sts lookup fails.
        .mx("servfail.lab.test", 10, "mx.servfail.lab.test")
        .servfail("_mta-sts.servfail.lab.test")
        // An unsigned child zone: DANE does not apply, MTA-STS does.
        .unsigned_child("plain.lab.test")
        .mx("plain.lab.test", 10, "mx.plain.lab.test")
        .txt("_mta-sts.plain.lab.test", "v=STSv1; id=1;")
        .a("mta-sts.plain.lab.test", Ipv4Addr::LOCALHOST)
        // No MTA-STS at all.
        .mx("nosts.lab.test", 10, "mx.nosts.lab.test");
    let dns = zone.start().expect("dns");
    let ca = TestCa::new().expect("ca");
    let names = [
        "mta-sts.sts.lab.test",
        "mta-sts.redirect.lab.test",
        "mta-sts.big.lab.test",
        "mta-sts.slow.lab.test",
        "mta-sts.broken.lab.test",
        "mta-sts.missing.lab.test",
        "mta-sts.html.lab.test",
        "mta-sts.both.lab.test",
        "mta-sts.plain.lab.test",
        "mta-sts.trickle.lab.test",
        "mta-sts.endless.lab.test",
        "mta-sts.bighead.lab.test",
    ];
    let cert = ca.issue(&names).expect("cert");
    let https = HttpsServer::start(&cert).expect("https");
    https
        .add_cert(&ca.issue_expired(&["mta-sts.expired.lab.test"]).unwrap())
        .unwrap();
    https
        .add_cert_for(
            "mta-sts.wrongname.lab.test",
            &ca.issue(&["www.wrongname.lab.test"]).unwrap(),
        )
        .unwrap();
    let route = |host: &str, response: HttpResponse| https.route_host(host, POLICY_PATH, response);
    // Valid policies (the certificates of expired and wrongname are not).
    for (domain, mx) in [
        ("sts", "*.sts.lab.test"),
        ("plain", "mx.plain.lab.test"),
        ("both", "mx.both.lab.test"),
        ("expired", "mx.expired.lab.test"),
        ("wrongname", "mx.wrongname.lab.test"),
    ] {
        route(
            &format!("mta-sts.{domain}.lab.test"),
            HttpResponse::ok(policy_text(mx, 86_400)),
        );
    }
    route(
        "mta-sts.redirect.lab.test",
        HttpResponse::redirect(301, "https://mta-sts.sts.lab.test/.well-known/mta-sts.txt"),
    );
    route("mta-sts.big.lab.test", HttpResponse::oversized(200_000));
    route(
        "mta-sts.slow.lab.test",
        HttpResponse::ok(policy_text("mx.slow.lab.test", 86_400)).delay(Duration::from_secs(5)),
    );
    route(
        "mta-sts.broken.lab.test",
        HttpResponse::ok("version: STSv1\nmode: sometimes\nmx: mx.broken.lab.test\nmax_age: 60\n"),
    );
    route(
        "mta-sts.html.lab.test",
        HttpResponse::ok(policy_text("mx.html.lab.test", 86_400))
            .header("Content-Type", "text/html"),
    );
    // Policy hosts that never finish: a body trickled a byte per 100 ms (over the fetch
    // limit), a chunked body that never ends, a response head of 2 MB.
    route(
        "mta-sts.trickle.lab.test",
        HttpResponse::ok(policy_text("mx.trickle.lab.test", 86_400))
            .trickle(Duration::from_millis(100)),
    );
    route("mta-sts.endless.lab.test", HttpResponse::endless());
    route(
        "mta-sts.bighead.lab.test",
        HttpResponse::ok(policy_text("mx.bighead.lab.test", 86_400))
            .header("X-Filler", &"x".repeat(2 << 20)),
    );
    // mta-sts.missing.lab.test: the server's default 404.
    Lab {
        ca_pem: ca.ca_pem().to_owned(),
        _ca: ca,
        dns,
        https,
    }
}

impl Lab {
    fn policy_dns(&self) -> PolicyDns {
        PolicyDns::new(&DnsConfig {
            server: Some(self.dns.addr()),
            trust_anchor: self.dns.trust_anchor_file(),
            timeout: Duration::from_secs(2),
            ..DnsConfig::default()
        })
        .expect("resolvers")
    }

    fn fetcher(&self, dns: PolicyDns) -> PolicyFetcher {
        let mut roots = TrustAnchors::mozilla();
        roots.add_pem_file(&self.ca_pem).expect("test CA");
        let config = FetchConfig {
            timeout: Duration::from_secs(2),
            roots,
            https_port: self.https.port(),
            ..FetchConfig::default()
        };
        PolicyFetcher::new(&config, dns).expect("fetcher")
    }

    fn engine(&self) -> Arc<PolicyEngine<NetSources>> {
        let dns = self.policy_dns();
        let fetcher = self.fetcher(dns.clone());
        Arc::new(PolicyEngine::new(
            NetSources { dns, fetcher },
            EngineConfig::default(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_dns_and_policy_hosts() {
    let lab = lab();
    let engine = lab.engine();
    let secure = |mx: &str| format!("OK secure match={mx} servername=hostname");
    // (key, reply, source)
    let cases: Vec<(&str, String, Source)> = vec![
        ("sts.lab.test", secure(".sts.lab.test"), Source::MtaSts),
        (
            "plain.lab.test",
            secure("mx.plain.lab.test"),
            Source::MtaSts,
        ),
        // DANE first: MTA-STS never overrides it.
        ("both.lab.test", "OK dane-only".into(), Source::Dane),
        ("unusable.lab.test", "OK dane".into(), Source::Dane),
        ("empty-tlsa.lab.test", "OK dane".into(), Source::Dane),
        // A failed TLSA lookup rules out its host only (Postfix skips it under `dane`).
        ("halfdane.lab.test", "OK dane-only".into(), Source::Dane),
        ("halffail.lab.test", "OK dane".into(), Source::Dane),
        // No policy can be had: no policy applies (RFC 8461 §5.1), NOTFOUND.
        ("redirect.lab.test", "NOTFOUND ".into(), Source::None),
        ("big.lab.test", "NOTFOUND ".into(), Source::None),
        ("slow.lab.test", "NOTFOUND ".into(), Source::None),
        ("expired.lab.test", "NOTFOUND ".into(), Source::None),
        ("wrongname.lab.test", "NOTFOUND ".into(), Source::None),
        ("broken.lab.test", "NOTFOUND ".into(), Source::None),
        ("missing.lab.test", "NOTFOUND ".into(), Source::None),
        ("html.lab.test", "NOTFOUND ".into(), Source::None),
        ("nosts.lab.test", "NOTFOUND ".into(), Source::None),
        ("nowhere.lab.test", "NOTFOUND ".into(), Source::None),
    ];
    for (key, reply, source) in &cases {
        let e = engine.explain(key).await;
        assert_eq!(
            (&e.reply, e.decision.source),
            (reply, *source),
            "{key}: {e:#?}"
        );
    }
    // DNS failures are TEMP: SERVFAIL on the TXT record, a bogus TLSA RRset, SERVFAIL on the
    // TLSA RRset of the only MX host.
    for key in ["servfail.lab.test", "bogus.lab.test", "allfail.lab.test"] {
        let e = engine.explain(key).await;
        assert!(e.reply.starts_with("TEMP "), "{key}: {e:#?}");
    }
    let e = engine.explain("bogus.lab.test").await;
    assert!(
        e.dane.as_deref().is_some_and(|d| d.contains("bogus")),
        "{e:#?}"
    );
    assert!(engine.explain("both.lab.test").await.sts_policy.is_none());
    assert_eq!(
        lab.https
            .request_log()
            .iter()
            .filter(|r| r.host.as_deref() == Some("mta-sts.both.lab.test"))
            .count(),
        0,
        "no fetch for a domain DANE decides"
    );

    // Why each fetch failed, as TLS-RPT result types.
    let expected = [
        (
            "redirect.lab.test",
            "HTTP 301",
            ResultType::StsPolicyFetchError,
        ),
        (
            "big.lab.test",
            "larger than 65536",
            ResultType::StsPolicyFetchError,
        ),
        (
            "slow.lab.test",
            "no complete answer within 2 s",
            ResultType::StsPolicyFetchError,
        ),
        (
            "expired.lab.test",
            "certificate-expired",
            ResultType::StsWebpkiInvalid,
        ),
        (
            "wrongname.lab.test",
            "certificate-host-mismatch",
            ResultType::StsWebpkiInvalid,
        ),
        ("broken.lab.test", "mode", ResultType::StsPolicyInvalid),
        (
            "missing.lab.test",
            "got 404",
            ResultType::StsPolicyFetchError,
        ),
        ("html.lab.test", "text/html", ResultType::StsPolicyInvalid),
    ];
    let fetcher = lab.fetcher(lab.policy_dns());
    for (domain, text, result_type) in expected {
        let e = engine.explain(domain).await;
        let error = e.fetch_error.unwrap_or_default();
        assert!(error.contains(text), "{domain}: {error}");
        let err: FetchError = fetcher.fetch(domain).await.unwrap_err();
        assert_eq!(err.result_type(), result_type, "{domain}: {err}");
    }
}

/// A policy host that trickles its body, sends an endless body or an oversized head is given
/// up on within the fetch limit (2 s here), with a clear error and bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_trickled_policy_answers_are_cut_off() {
    let lab = lab();
    let fetcher = lab.fetcher(lab.policy_dns());
    for (domain, text) in [
        ("trickle.lab.test", "no complete answer within 2 s"),
        ("endless.lab.test", "policy larger than 65536 bytes"),
        ("bighead.lab.test", "mta-sts.bighead.lab.test"),
    ] {
        let started = std::time::Instant::now();
        let fetched = tokio::time::timeout(Duration::from_secs(10), fetcher.fetch(domain)).await;
        let err = fetched.expect("gave up in time").unwrap_err();
        assert!(err.to_string().contains(text), "{domain}: {err}");
        assert_eq!(
            err.result_type(),
            ResultType::StsPolicyFetchError,
            "{domain}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{domain}: {:?}",
            started.elapsed()
        );
        eprintln!("{domain}: {err} after {:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_cached_and_tls_sessions_resumed() {
    let lab = lab();
    let engine = lab.engine();
    assert!(
        engine
            .answer("sts.lab.test")
            .await
            .text()
            .starts_with("secure")
    );
    assert_eq!(engine.answer("nosts.lab.test").await, Reply::NotFound);
    let (queries, requests) = (lab.dns.queries(), lab.https.requests());
    for _ in 0..200 {
        let mut out = Vec::new();
        assert!(engine.answer_cached("sts.lab.test", &mut out));
        assert!(engine.answer_cached("nosts.lab.test", &mut out));
    }
    assert_eq!(lab.dns.queries(), queries, "cache hits make no DNS query");
    assert_eq!(lab.https.requests(), requests, "nor a fetch");

    // No connection is kept between two fetches from one policy host, but the second
    // resumes the first's TLS session.
    let fetcher = lab.fetcher(lab.policy_dns());
    let (handshakes, resumed) = (lab.https.handshakes(), lab.https.resumed_handshakes());
    for _ in 0..2 {
        let policy = fetcher.fetch("sts.lab.test").await.expect("policy");
        assert_eq!(policy.max_age, 86_400);
    }
    assert_eq!(lab.https.handshakes(), handshakes + 2);
    assert_eq!(lab.https.resumed_handshakes(), resumed + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_seen_by_the_daemon() {
    let lab = lab();
    let dns = lab.policy_dns();
    let cases = [
        ("both.lab.test", DaneState::Usable),
        ("unusable.lab.test", DaneState::AllUnusable),
        ("empty-tlsa.lab.test", DaneState::AllUnusable),
        ("bogus.lab.test", DaneState::Bogus),
        ("halfdane.lab.test", DaneState::Usable),
        ("halffail.lab.test", DaneState::TlsaPartlyFailed),
        ("allfail.lab.test", DaneState::TlsaLookupFailed),
        ("sts.lab.test", DaneState::NoTlsa),
        ("plain.lab.test", DaneState::NoTlsa),
        ("nowhere.lab.test", DaneState::NoTlsa),
    ];
    for (domain, state) in cases {
        let lookup = dns.dane(domain).await;
        assert_eq!(lookup.state, state, "{domain}: {lookup:?}");
    }
    // Negative answers carry the zone's negative TTL (SOA minimum 5 s), DNSSEC or not.
    assert_eq!(dns.dane("sts.lab.test").await.ttl, Some(5));
    assert_eq!(dns.dane("nowhere.lab.test").await.ttl, Some(5));
    match dns.sts_record("sts.lab.test").await {
        TxtLookup::Record(r) => assert_eq!(r.id, "20240101"),
        other => panic!("{other:?}"),
    }
    // The zone's SOA minimum (5 s) is the negative TTL.
    assert_eq!(
        dns.sts_record("nosts.lab.test").await,
        TxtLookup::NoRecord {
            negative_ttl: Some(5),
            note: None
        }
    );
    assert!(matches!(
        dns.sts_record("servfail.lab.test").await,
        TxtLookup::Failed { .. }
    ));
}

/// A server on 127.0.0.1:free port; dropping the sender stops it.
async fn start_server(
    engine: Arc<PolicyEngine<NetSources>>,
    addr: ListenAddr,
    options: ServeOptions,
) -> (
    ListenAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<ServeEvent>>,
) {
    let listener = PolicyListener::bind(&addr, 0o600).await.expect("bind");
    let local = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut events = Vec::new();
        serve_until(
            listener,
            engine,
            options,
            async {
                let _ = stopped.await;
            },
            |e| events.push(e),
        )
        .await;
        events
    });
    (local, stop, task)
}

fn requests(map: &str, keys: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for key in keys {
        encode_request(map, key, &mut out).unwrap();
    }
    out
}

/// Reads `n` replies (or fewer if the server closes first).
async fn read_replies<R: AsyncReadExt + Unpin>(stream: &mut R, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    while replies.len() < n {
        while let Ok(Some((reply, used))) = decode_reply(&buf) {
            replies.push(reply.to_string());
            buf.drain(..used);
        }
        if replies.len() >= n {
            break;
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("reply in time")
            .expect("read");
        if read == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let lab = lab();
    let engine = lab.engine();
    let addr = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
    let (local, stop, task) = start_server(engine, addr, ServeOptions::default()).await;
    let ListenAddr::Tcp(local) = local else {
        panic!("tcp")
    };
    let mut stream = tokio::net::TcpStream::connect(local).await.unwrap();
    // Misses (one slow: the policy host answers after 5 s, over the 2 s fetch limit) and
    // hits, all in one write.
    let keys = [
        "slow.lab.test",
        "sts.lab.test",
        "nosts.lab.test",
        "sts.lab.test",
        "[mx.sts.lab.test]:587",
        "both.lab.test",
        "sts.lab.test",
    ];
    stream.write_all(&requests("sts", &keys)).await.unwrap();
    let secure = "OK secure match=.sts.lab.test servername=hostname";
    assert_eq!(
        read_replies(&mut stream, keys.len()).await,
        [
            "NOTFOUND ",
            secure,
            "NOTFOUND ",
            secure,
            "NOTFOUND ",
            "OK dane-only",
            secure
        ]
    );
    // The same connection goes on serving.
    stream
        .write_all(&requests("sts", &["sts.lab.test"]))
        .await
        .unwrap();
    assert_eq!(read_replies(&mut stream, 1).await, [secure]);
    // Closing our side: the server closes too (end of file for us) before we stop it.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    drop(stop);
    let events = task.await.unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            ServeEvent::Closed {
                requests: 8,
                end: ConnectionEnd::ClientClosed,
                ..
            }
        )),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_names_broken_framing_and_a_unix_socket() {
    let lab = lab();
    let engine = lab.engine();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.sock");
    let options = ServeOptions {
        map_name: Some("sts".into()),
        ..ServeOptions::default()
    };
    let (_, stop, task) = start_server(engine, ListenAddr::Unix(path.clone()), options).await;
    let mode = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    // A second server cannot take the socket of a running one.
    let taken = PolicyListener::bind(&ListenAddr::Unix(path.clone()), 0o600).await;
    assert_eq!(
        taken.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );

    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let mut bytes = requests("postfix", &["sts.lab.test"]);
    bytes.extend(requests("sts", &["sts.lab.test"]));
    bytes.extend_from_slice(b"5:sts x;");
    stream.write_all(&bytes).await.unwrap();
    let replies = read_replies(&mut stream, 3).await;
    assert_eq!(
        replies.len(),
        2,
        "framing error: answered what came before, then closed"
    );
    assert!(
        replies[0].starts_with("PERM unknown map name \"postfix\""),
        "{replies:?}"
    );
    assert!(replies[1].starts_with("OK secure"), "{replies:?}");
    drop(stop);
    let events = task.await.unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            ServeEvent::Closed {
                end: ConnectionEnd::Protocol(_),
                requests: 2,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(!path.exists(), "the socket file is removed on shutdown");
    // A stale socket file (no server behind it) is replaced; a regular file is not.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = PolicyListener::bind(&ListenAddr::Unix(path.clone()), 0o600).await;
    drop(listener.expect("stale socket replaced"));
    std::fs::write(&path, "not a socket").unwrap();
    let refused = PolicyListener::bind(&ListenAddr::Unix(path.clone()), 0o600).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_shutdown_finishes_lookups() {
    let lab = lab();
    let engine = lab.engine();
    let options = ServeOptions {
        idle_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let addr = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
    let (ListenAddr::Tcp(local), stop, task) = start_server(engine, addr, options).await else {
        panic!("tcp")
    };
    let mut idle = tokio::net::TcpStream::connect(local).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed after the idle timeout: {read:?}"
    );

    // A lookup in flight when the stop comes is still answered.
    let mut busy = tokio::net::TcpStream::connect(local).await.unwrap();
    busy.write_all(&requests("sts", &["plain.lab.test"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.send(()).unwrap();
    assert_eq!(
        read_replies(&mut busy, 1).await,
        ["OK secure match=mx.plain.lab.test servername=hostname"]
    );
    let events = task.await.unwrap();
    let ends: Vec<&ConnectionEnd> = events
        .iter()
        .filter_map(|e| match e {
            ServeEvent::Closed { end, .. } => Some(end),
            _ => None,
        })
        .collect();
    assert!(ends.contains(&&ConnectionEnd::IdleTimeout), "{ends:?}");
    assert!(ends.contains(&&ConnectionEnd::Shutdown), "{ends:?}");
    assert!(
        tokio::net::TcpStream::connect(local).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_lookup_is_answered_temp_and_finishes_in_the_background() {
    let lab = lab();
    let engine = lab.engine();
    let options = ServeOptions {
        lookup_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let addr = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
    let (ListenAddr::Tcp(local), stop, task) = start_server(engine.clone(), addr, options).await
    else {
        panic!("tcp")
    };
    let mut stream = tokio::net::TcpStream::connect(local).await.unwrap();
    // The policy host answers after 5 s; the fetch gives up after 2 s.
    stream
        .write_all(&requests("sts", &["slow.lab.test", "sts.lab.test"]))
        .await
        .unwrap();
    let replies = read_replies(&mut stream, 2).await;
    assert_eq!(
        replies[0], "TEMP policy lookup for slow.lab.test took more than 0.5 s",
        "{replies:?}"
    );
    assert!(replies[1].starts_with("OK secure"), "{replies:?}");
    // The lookup went on: once the fetch has failed, the answer is cached.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut out = Vec::new();
    assert!(engine.answer_cached("slow.lab.test", &mut out));
    assert_eq!(out, b"9:NOTFOUND ,");
    drop(stop);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trickled_slower_than_the_read_timeout_is_cut_off() {
    let lab = lab();
    let engine = lab.engine();
    let options = ServeOptions {
        read_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let addr = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
    let (ListenAddr::Tcp(local), stop, task) = start_server(engine, addr, options).await else {
        panic!("tcp")
    };
    // One byte every 250 ms: every read comes well within the read timeout, the whole
    // request (20 bytes, about 5 s) does not.
    let request = requests("sts", &["sts.lab.test"]);
    let (mut reader, mut writer) = tokio::net::TcpStream::connect(local)
        .await
        .unwrap()
        .into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let trickle = tokio::spawn({
        let (sent, request) = (sent.clone(), request.clone());
        async move {
            for byte in request {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            writer
        }
    });

    // Meanwhile a client that sends its request at once is answered.
    let mut normal = tokio::net::TcpStream::connect(local).await.unwrap();
    normal.write_all(&request).await.unwrap();
    let secure = "OK secure match=.sts.lab.test servername=hostname";
    assert_eq!(read_replies(&mut normal, 1).await, [secure]);

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), reader.read(&mut buf))
        .await
        .expect("the server closes the connection");
    let sent_then = sent.load(Ordering::SeqCst);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "closed, not answered: {read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(
        sent_then < request.len(),
        "closed before the request was complete ({sent_then} of {} bytes sent)",
        request.len()
    );
    trickle.abort();
    // The normal client is still served after that.
    normal.write_all(&request).await.unwrap();
    assert_eq!(read_replies(&mut normal, 1).await, [secure]);
    drop(normal);
    drop(stop);
    let events = task.await.unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            ServeEvent::Closed {
                requests: 0,
                end: ConnectionEnd::Timeout,
                ..
            }
        )),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_make_room_for_a_waiting_client() {
    let lab = lab();
    let engine = lab.engine();
    let options = ServeOptions {
        max_connections: 4,
        idle_timeout: Duration::from_secs(300),
        ..ServeOptions::default()
    };
    let addr = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
    let (ListenAddr::Tcp(local), stop, task) = start_server(engine, addr, options).await else {
        panic!("tcp")
    };
    let secure = "OK secure match=.sts.lab.test servername=hostname";
    let request = requests("sts", &["sts.lab.test"]);
    // Four clients take every slot (each is answered, so each is being served), then idle.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(local).await.unwrap();
        stream.write_all(&request).await.unwrap();
        assert_eq!(read_replies(&mut stream, 1).await, [secure]);
        idle.push(stream);
    }
    // A fifth is answered long before the idle timeout (read_replies gives up after 10 s).
    let mut fifth = tokio::net::TcpStream::connect(local).await.unwrap();
    fifth.write_all(&request).await.unwrap();
    assert_eq!(read_replies(&mut fifth, 1).await, [secure]);
    // The idle ones were closed to make room.
    for stream in &mut idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "an idle connection is closed: {read:?}"
        );
    }
    // The fifth goes on being served.
    fifth.write_all(&request).await.unwrap();
    assert_eq!(read_replies(&mut fifth, 1).await, [secure]);
    drop(stop);
    let events = task.await.unwrap();
    let evicted = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ServeEvent::Closed {
                    requests: 1,
                    end: ConnectionEnd::IdleEvicted,
                    ..
                }
            )
        })
        .count();
    assert_eq!(evicted, 4, "{events:?}");
}
