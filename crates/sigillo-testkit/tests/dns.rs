//! The test DNS server, queried with hickory-resolver (the project's resolver) over UDP and TCP.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Resolver, TokioResolver};
use sigillo_testkit::{DnsServer, ZoneBuilder};

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
