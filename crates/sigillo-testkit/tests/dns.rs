//! The test DNS server, queried with hickory-resolver (the project's resolver) over UDP and
//! TCP; its DNSSEC signing checked by hickory's validator and by BIND's `delv`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use sigillo_testkit::{DnsServer, ZoneBuilder, require_tools};

fn zone() -> DnsServer {
    ZoneBuilder::new("lab.test")
        .mx("lab.test", 10, "mx1.lab.test")
        .mx("lab.test", 20, "mx2.lab.test.")
        .a("mx1.lab.test", Ipv4Addr::new(127, 0, 0, 1))
        .aaaa("mx1.lab.test", Ipv6Addr::LOCALHOST)
        .a("mx2.lab.test", Ipv4Addr::new(127, 0, 0, 2))
        .txt("_mta-sts.lab.test", "v=STSv1; id=20240101T000000;")
        .txt("long.lab.test", &"x".repeat(600))
        .null_mx("nomail.lab.test")
        .servfail("broken.lab.test")
        .a("deep.sub.lab.test", Ipv4Addr::new(127, 0, 0, 3))
        .start()
        .unwrap()
}

fn resolver(dns: &DnsServer, tcp: bool) -> TokioResolver {
    let mut conn = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = dns.port();
    let ns = NameServerConfig::new(dns.addr().ip(), true, vec![conn]);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.options_mut().attempts = 1;
    builder.options_mut().cache_size = 0;
    builder.build().unwrap()
}

async fn checks(r: &TokioResolver) {
    let mx = r.mx_lookup("lab.test.").await.unwrap();
    let mut mxs: Vec<(u16, String)> = mx
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            hickory_resolver::proto::rr::RData::MX(m) => {
                Some((m.preference, m.exchange.to_string()))
            }
            _ => None,
        })
        .collect();
    mxs.sort();
    assert_eq!(
        mxs,
        [
            (10, "mx1.lab.test.".to_string()),
            (20, "mx2.lab.test.".to_string())
        ]
    );

    let ips: Vec<_> = r.lookup_ip("mx1.lab.test.").await.unwrap().iter().collect();
    assert!(ips.contains(&"127.0.0.1".parse().unwrap()), "{ips:?}");
    assert!(ips.contains(&"::1".parse().unwrap()), "{ips:?}");

    // A name with only A: AAAA is NODATA (NOERROR, no records), lookup_ip still works.
    let err = r.ipv6_lookup("mx2.lab.test.").await.unwrap_err();
    assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err:?}");
    let ips: Vec<_> = r.lookup_ip("mx2.lab.test.").await.unwrap().iter().collect();
    assert_eq!(ips, ["127.0.0.2".parse::<std::net::IpAddr>().unwrap()]);

    // Unknown name: NXDOMAIN. Empty non-terminal: NODATA.
    let err = r.ipv4_lookup("nope.lab.test.").await.unwrap_err();
    assert!(err.is_nx_domain(), "{err:?}");
    let err = r.ipv4_lookup("sub.lab.test.").await.unwrap_err();
    assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err:?}");

    let txt = r.txt_lookup("_mta-sts.lab.test.").await.unwrap();
    let texts: Vec<String> = txt
        .answers()
        .iter()
        .map(|rec| rec.data.to_string())
        .collect();
    assert_eq!(texts.len(), 1);
    assert!(
        texts[0].contains("v=STSv1; id=20240101T000000;"),
        "{texts:?}"
    );
    let long = r.txt_lookup("long.lab.test.").await.unwrap();
    assert_eq!(long.answers().len(), 1);

    let null = r.mx_lookup("nomail.lab.test.").await.unwrap();
    match &null.answers()[0].data {
        hickory_resolver::proto::rr::RData::MX(m) => {
            assert_eq!(m.preference, 0);
            assert!(m.exchange.is_root());
        }
        other => panic!("{other:?}"),
    }

    let err = r.mx_lookup("broken.lab.test.").await.unwrap_err();
    assert!(
        !err.is_no_records_found(),
        "SERVFAIL must not look like NODATA: {err:?}"
    );
    assert!(
        format!("{err:?}").contains("ServFail") || format!("{err}").to_lowercase().contains("serv"),
        "{err:?}"
    );
    let _ = ResponseCode::ServFail;
    let _ = RecordType::MX;
}

#[test]
fn dns_over_udp_and_tcp() {
    let dns = zone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        checks(&resolver(&dns, false)).await;
        checks(&resolver(&dns, true)).await;
    });
    assert!(dns.queries() >= 20);
}

// ---- DNSSEC ----

const SPKI_MX1: [u8; 32] = [0x11; 32];

/// lab.test, signed: MX, A, TLSA, the MTA-STS and TLS-RPT TXT records; a bogus TLSA for
/// mx2; and plain.lab.test, an unsigned child.
fn signed_zone() -> DnsServer {
    ZoneBuilder::new("lab.test")
        .signed()
        .mx("lab.test", 10, "mx1.lab.test")
        .mx("lab.test", 20, "mx2.lab.test")
        .a("mx1.lab.test", Ipv4Addr::new(127, 0, 0, 1))
        .a("mx2.lab.test", Ipv4Addr::new(127, 0, 0, 2))
        .tlsa("_25._tcp.mx1.lab.test", 3, 1, 1, &SPKI_MX1)
        .tlsa("_25._tcp.mx2.lab.test", 3, 1, 1, &[0x22; 32])
        .bogus("_25._tcp.mx2.lab.test")
        .txt("_mta-sts.lab.test", "v=STSv1; id=20240101T000000;")
        .txt(
            "_smtp._tls.lab.test",
            "v=TLSRPTv1; rua=mailto:tlsrpt@lab.test",
        )
        .unsigned_child("plain.lab.test")
        .mx("plain.lab.test", 10, "mx.plain.lab.test")
        .a("mx.plain.lab.test", Ipv4Addr::new(127, 0, 0, 3))
        .start()
        .unwrap()
}

/// A validating resolver (DO bit, hickory's DNSSEC handle) trusting `anchors`.
fn validating(dns: &DnsServer, anchors: TrustAnchors) -> TokioResolver {
    let mut ns = NameServerConfig::udp_and_tcp(dns.addr().ip());
    for c in &mut ns.connections {
        c.port = dns.port();
    }
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_trust_anchor(Arc::new(anchors));
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.options_mut().attempts = 1;
    builder.options_mut().cache_size = 0;
    builder.build().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The records of the asked type in a successful lookup, with their proofs.
fn typed(records: &[Record], rtype: RecordType) -> Vec<(String, Proof)> {
    records
        .iter()
        .filter(|r| r.record_type() == rtype)
        .map(|r| (r.data.to_string(), r.proof))
        .collect()
}

/// The proof on the SOA of a negative answer (secure or insecure denial).
fn denial_proof(err: &NetError) -> Option<Proof> {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(no)) => no
            .authorities
            .as_ref()?
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.proof),
        _ => None,
    }
}

fn is_bogus(err: &NetError) -> bool {
    matches!(err, NetError::Dns(DnsError::DnssecBogus))
}

#[test]
fn signed_zone_validates_secure_bogus_and_insecure() {
    let dns = signed_zone();
    let anchor = dns.trust_anchor().unwrap().to_owned();
    assert!(
        anchor.starts_with("lab.test. 3600 IN DNSKEY 257 3 13 "),
        "{anchor}"
    );
    let ds = dns.ds_record().unwrap();
    let fields: Vec<&str> = ds.split_whitespace().collect();
    assert_eq!(fields[..4], ["lab.test.", "3600", "IN", "DS"], "{ds}");
    assert_eq!(fields[5..7], ["13", "2"], "{ds}");
    assert_eq!(fields[7].len(), 64, "SHA-256 digest: {ds}");
    let file = dns.trust_anchor_file().unwrap();
    let from_file = TrustAnchors::from_file(&file).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), anchor);
    let r = validating(&dns, from_file);
    runtime().block_on(async {
        let secure = |what: &str, got: Vec<(String, Proof)>, n: usize| {
            assert_eq!(got.len(), n, "{what}: {got:?}");
            assert!(
                got.iter().all(|(_, p)| *p == Proof::Secure),
                "{what}: {got:?}"
            );
        };
        let mx = r.lookup("lab.test.", RecordType::MX).await.unwrap();
        secure("MX", typed(mx.answers(), RecordType::MX), 2);
        let a = r.lookup("mx1.lab.test.", RecordType::A).await.unwrap();
        secure("A", typed(a.answers(), RecordType::A), 1);
        let tlsa = r
            .lookup("_25._tcp.mx1.lab.test.", RecordType::TLSA)
            .await
            .unwrap();
        let got = typed(tlsa.answers(), RecordType::TLSA);
        secure("TLSA", got.clone(), 1);
        assert_eq!(got[0].0, format!("3 1 1 {}", "11".repeat(32)));
        for name in ["_mta-sts.lab.test.", "_smtp._tls.lab.test."] {
            let txt = r.lookup(name, RecordType::TXT).await.unwrap();
            secure(name, typed(txt.answers(), RecordType::TXT), 1);
        }

        // Authenticated denial: NXDOMAIN, NODATA, and an empty non-terminal.
        for (name, rtype, nxdomain) in [
            ("nope.lab.test.", RecordType::A, true),
            ("_25._tcp.nope.lab.test.", RecordType::TLSA, true),
            ("mx1.lab.test.", RecordType::AAAA, false),
            ("mx1.lab.test.", RecordType::TLSA, false),
            ("_tcp.mx1.lab.test.", RecordType::TLSA, false),
            ("lab.test.", RecordType::TLSA, false),
        ] {
            let err = r.lookup(name, rtype).await.unwrap_err();
            assert!(err.is_no_records_found(), "{name} {rtype}: {err:?}");
            assert_eq!(err.is_nx_domain(), nxdomain, "{name} {rtype}: {err:?}");
            assert_eq!(denial_proof(&err), Some(Proof::Secure), "{name} {rtype}");
        }

        // Bogus: the TLSA of mx2 has a corrupted signature; mx2's A is fine.
        let err = r
            .lookup("_25._tcp.mx2.lab.test.", RecordType::TLSA)
            .await
            .unwrap_err();
        assert!(is_bogus(&err), "{err:?}");
        let err = r
            .lookup("_25._tcp.mx2.lab.test.", RecordType::A)
            .await
            .unwrap_err();
        assert!(is_bogus(&err), "a denial for the bogus name too: {err:?}");
        let a = r.lookup("mx2.lab.test.", RecordType::A).await.unwrap();
        secure("mx2 A", typed(a.answers(), RecordType::A), 1);

        // The unsigned child: answers and denials are insecure, not bogus.
        let mx = r.lookup("plain.lab.test.", RecordType::MX).await.unwrap();
        let got = typed(mx.answers(), RecordType::MX);
        assert_eq!(got, [("10 mx.plain.lab.test.".to_owned(), Proof::Insecure)]);
        let a = r.lookup("mx.plain.lab.test.", RecordType::A).await.unwrap();
        assert_eq!(
            typed(a.answers(), RecordType::A),
            [("127.0.0.3".to_owned(), Proof::Insecure)]
        );
        let err = r
            .lookup("_25._tcp.mx.plain.lab.test.", RecordType::TLSA)
            .await
            .unwrap_err();
        assert!(err.is_nx_domain(), "{err:?}");
        assert_eq!(denial_proof(&err), Some(Proof::Insecure));
    });

    // Without the DO bit the same zone answers like an unsigned one: no RRSIGs.
    let plain = resolver(&dns, false);
    runtime().block_on(async {
        let mx = plain.lookup("lab.test.", RecordType::MX).await.unwrap();
        assert_eq!(mx.answers().len(), 2, "{:?}", mx.answers());
        assert!(
            mx.answers()
                .iter()
                .all(|r| r.record_type() == RecordType::MX && r.proof == Proof::Indeterminate)
        );
    });
}

#[test]
fn a_wrong_trust_anchor_or_an_unsigned_zone_is_never_secure() {
    let dns = signed_zone();
    // Another signed zone's key, claimed for lab.test: nothing from lab.test validates.
    let other = ZoneBuilder::new("lab.test").signed().start().unwrap();
    let r = validating(&dns, other.trust_anchors().unwrap());
    let unsigned = zone();
    assert!(unsigned.trust_anchor().is_none() && unsigned.ds_record().is_none());
    assert!(unsigned.trust_anchor_file().is_none() && unsigned.trust_anchors().is_none());
    let r_unsigned = validating(&unsigned, dns.trust_anchors().unwrap());
    runtime().block_on(async {
        // Unsigned under a validating resolver: no DS chain proves it insecure, so bogus.
        for (resolver, name, rtype) in [
            (&r, "lab.test.", RecordType::MX),
            (&r, "mx1.lab.test.", RecordType::A),
            (&r, "nope.lab.test.", RecordType::A),
            (&r_unsigned, "lab.test.", RecordType::MX),
            (&r_unsigned, "mx1.lab.test.", RecordType::A),
        ] {
            let err = resolver.lookup(name, rtype).await.unwrap_err();
            assert!(is_bogus(&err), "{name} {rtype}: {err:?}");
        }
    });
}

#[test]
fn bogus_needs_a_signed_zone_and_children_must_be_below_the_origin() {
    let err = ZoneBuilder::new("lab.test")
        .bogus("x.lab.test")
        .start()
        .unwrap_err();
    assert!(format!("{err:#}").contains("signed()"), "{err:#}");
    let err = ZoneBuilder::new("lab.test")
        .unsigned_child("other.test")
        .start()
        .unwrap_err();
    assert!(format!("{err:#}").contains("not below"), "{err:#}");
    let err = ZoneBuilder::new("lab.test")
        .a("www.other.test", Ipv4Addr::LOCALHOST)
        .start()
        .unwrap_err();
    assert!(format!("{err:#}").contains("outside the zone"), "{err:#}");
}

/// BIND's `delv`, an independent validator, with the zone's key as its trust anchor: the
/// last line of its verdict for one query.
fn delv(dns: &DnsServer, name: &str, rtype: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let anchor = dns.trust_anchor().unwrap();
    let mut fields = anchor.split_whitespace();
    let owner = fields.next().unwrap();
    let key: Vec<&str> = fields.skip(3).collect();
    let conf = format!(
        "trust-anchors {{ {owner} static-key {} {} {} \"{}\"; }};\n",
        key[0],
        key[1],
        key[2],
        key[3..].concat()
    );
    let path = dir.path().join("anchors.conf");
    std::fs::write(&path, conf).unwrap();
    let out = Command::new("timeout")
        .args(["20", "delv", "@127.0.0.1", "-p", &dns.port().to_string()])
        .arg("-a")
        .arg(&path)
        .args(["+root=lab.test", "+nomtrace", name, rtype])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn delv_agrees_secure_bogus_and_insecure() {
    require_tools!("delv");
    let dns = signed_zone();
    for (name, rtype, want) in [
        ("_25._tcp.mx1.lab.test", "TLSA", "; fully validated"),
        ("lab.test", "MX", "; fully validated"),
        ("nope.lab.test", "A", "; negative response, fully validated"),
        (
            "mx1.lab.test",
            "AAAA",
            "; negative response, fully validated",
        ),
        ("_25._tcp.mx2.lab.test", "TLSA", "resolution failed"),
        ("_25._tcp.mx2.lab.test", "A", "resolution failed"),
        (
            "_25._tcp.mx.plain.lab.test",
            "TLSA",
            "; negative response, unsigned answer",
        ),
        ("plain.lab.test", "MX", "; unsigned answer"),
    ] {
        let out = delv(&dns, name, rtype);
        assert!(out.contains(want), "{name} {rtype}: want {want:?}:\n{out}");
    }
}
