//! The decision table of `decide`: every source alone, their order, DNS failures, expired
//! and non-enforcing MTA-STS policies, and the reply-size fallbacks.

use jiff::Timestamp;
use sigillo_policy::cache::CachedPolicy;
use sigillo_policy::decide::{
    Answer, DaneAnswer, DaneState, DecideConfig, Inputs, Source, StsState, decide,
};
use sigillo_policy::mta_sts::{MxPattern, Policy};
use sigillo_policy::postfix::{Evidence, NextHop, PinLevel, PinnedPeer, PolicyAnswer};
use sigillo_policy::socketmap::MAX_REPLY_LEN;

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn cached(body: &str, fetched_secs_ago: i64) -> CachedPolicy {
    let policy = Policy::parse(body.as_bytes()).unwrap();
    let fetched = Timestamp::from_second(now().as_second() - fetched_secs_ago).unwrap();
    CachedPolicy::new("id1".into(), policy, fetched)
}

const ENFORCE: &str =
    "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 86400\n";
const TESTING: &str = "version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n";
const SECURE: &str = "OK secure match=mx1.example.com:.example.net servername=hostname";

/// The sources a case switches on.
#[derive(Clone, Copy, Default)]
struct Case {
    key: &'static str,
    over: bool,
    dane: Option<DaneState>,
    sts: Option<(&'static str, i64)>,
    sts_failed: bool,
    pin: Option<PinLevel>,
}

fn run(case: Case, config: &DecideConfig) -> (String, Source) {
    let next_hop = NextHop::parse(case.key);
    let override_answer: PolicyAnswer = "encrypt protocols=>=TLSv1.2".parse().unwrap();
    let cached_policy = case.sts.map(|(body, ago)| cached(body, ago));
    let pin = case.pin.map(|level| {
        PinnedPeer::new(
            "example.com",
            level,
            Evidence {
                messages: 40,
                tls: 40,
                verified: 40,
            },
        )
        .unwrap()
    });
    let inputs = Inputs {
        next_hop: &next_hop,
        static_override: case.over.then_some(&override_answer),
        dane: case.dane.unwrap_or(DaneState::NotChecked),
        sts: StsState {
            cached: cached_policy.as_ref(),
            lookup_failed: case.sts_failed,
        },
        pinned: pin.as_ref(),
    };
    let d = decide(&inputs, now(), config);
    assert!(!d.reason.is_empty());
    (d.reply().to_string(), d.source)
}

#[test]
fn decision_table() {
    let base = Case {
        key: "example.com",
        ..Case::default()
    };
    let all = Case {
        over: true,
        dane: Some(DaneState::Usable),
        sts: Some((ENFORCE, 10)),
        pin: Some(PinLevel::Verify),
        ..base
    };
    let config = DecideConfig::default();
    let cases: Vec<(&str, Case, &str, Source)> = vec![
        // 1. Static overrides win over everything, for any kind of key.
        (
            "override first",
            all,
            "OK encrypt protocols=>=TLSv1.2",
            Source::Override,
        ),
        (
            "override for [host]:port",
            Case {
                key: "[mx.example.com]:587",
                ..all
            },
            "OK encrypt protocols=>=TLSv1.2",
            Source::Override,
        ),
        (
            "parent key without override",
            Case {
                key: ".example.com",
                over: false,
                ..all
            },
            "NOTFOUND ",
            Source::None,
        ),
        // 2. DANE before MTA-STS and pins.
        (
            "dane usable beats sts",
            Case { over: false, ..all },
            "OK dane-only",
            Source::Dane,
        ),
        (
            "dane all unusable, a pin: dane",
            Case {
                over: false,
                dane: Some(DaneState::AllUnusable),
                sts: None,
                ..all
            },
            "OK dane",
            Source::Dane,
        ),
        (
            "dane all unusable, sts enforce: the stricter secure",
            Case {
                over: false,
                dane: Some(DaneState::AllUnusable),
                ..all
            },
            SECURE,
            Source::MtaSts,
        ),
        (
            "tlsa lookup failed for some hosts, a pin: dane, never the pin",
            Case {
                over: false,
                dane: Some(DaneState::TlsaPartlyFailed),
                sts: None,
                ..all
            },
            "OK dane",
            Source::Dane,
        ),
        (
            "tlsa lookup failed for some hosts, sts enforce: secure, never weaker",
            Case {
                over: false,
                dane: Some(DaneState::TlsaPartlyFailed),
                ..all
            },
            SECURE,
            Source::MtaSts,
        ),
        (
            "tlsa lookup failed for every host: defer, never sts or a pin",
            Case {
                over: false,
                dane: Some(DaneState::TlsaLookupFailed),
                ..all
            },
            "TEMP TLSA lookups failed for every MX host of example.com",
            Source::Dane,
        ),
        (
            "dane bogus defers even with sts and pin",
            Case {
                over: false,
                dane: Some(DaneState::Bogus),
                ..all
            },
            "TEMP DNSSEC validation failed for example.com",
            Source::Dane,
        ),
        (
            "dane lookup failed, cached sts applies",
            Case {
                dane: Some(DaneState::LookupFailed),
                sts: Some((ENFORCE, 10)),
                ..base
            },
            SECURE,
            Source::MtaSts,
        ),
        (
            "dane lookup failed, pin applies",
            Case {
                dane: Some(DaneState::LookupFailed),
                pin: Some(PinLevel::Encrypt),
                ..base
            },
            "OK encrypt",
            Source::Pinned,
        ),
        (
            "dane lookup failed, nothing else",
            Case {
                dane: Some(DaneState::LookupFailed),
                ..base
            },
            "TEMP DANE (MX) lookup failed for example.com",
            Source::None,
        ),
        // 3. MTA-STS.
        (
            "sts enforce",
            Case {
                dane: Some(DaneState::NoTlsa),
                sts: Some((ENFORCE, 10)),
                pin: Some(PinLevel::Encrypt),
                ..base
            },
            SECURE,
            Source::MtaSts,
        ),
        (
            "sts enforce, TXT lookup failing: cached policy still applies",
            Case {
                sts: Some((ENFORCE, 86_399)),
                sts_failed: true,
                ..base
            },
            SECURE,
            Source::MtaSts,
        ),
        (
            "sts testing cached, TXT lookup failing: the cached policy applies, not TEMP",
            Case {
                sts: Some((TESTING, 10)),
                sts_failed: true,
                ..base
            },
            "NOTFOUND ",
            Source::None,
        ),
        (
            "sts expired, TXT lookup failing",
            Case {
                sts: Some((ENFORCE, 86_400)),
                sts_failed: true,
                ..base
            },
            "TEMP MTA-STS TXT lookup failed for example.com",
            Source::None,
        ),
        (
            "sts expired",
            Case {
                sts: Some((ENFORCE, 90_000)),
                ..base
            },
            "NOTFOUND ",
            Source::None,
        ),
        (
            "sts testing is not enforced",
            Case {
                sts: Some((TESTING, 10)),
                ..base
            },
            "NOTFOUND ",
            Source::None,
        ),
        (
            "sts testing, pin applies",
            Case {
                sts: Some((TESTING, 10)),
                pin: Some(PinLevel::Verify),
                ..base
            },
            "OK verify",
            Source::Pinned,
        ),
        (
            "sts lookup failed, nothing cached",
            Case {
                sts_failed: true,
                ..base
            },
            "TEMP MTA-STS TXT lookup failed for example.com",
            Source::None,
        ),
        // 4. Pins.
        (
            "pin encrypt",
            Case {
                pin: Some(PinLevel::Encrypt),
                ..base
            },
            "OK encrypt",
            Source::Pinned,
        ),
        ("nothing", base, "NOTFOUND ", Source::None),
        (
            "address literal",
            Case {
                key: "[192.0.2.1]",
                ..base
            },
            "NOTFOUND ",
            Source::None,
        ),
    ];
    for (name, case, want_reply, want_source) in cases {
        assert_eq!(
            run(case, &config),
            (want_reply.to_owned(), want_source),
            "{name}"
        );
    }
}

#[test]
fn dane_answer_is_configurable() {
    let config = DecideConfig {
        dane_answer: DaneAnswer::Dane,
        ..DecideConfig::default()
    };
    let case = Case {
        key: "example.com",
        dane: Some(DaneState::Usable),
        ..Case::default()
    };
    assert_eq!(run(case, &config), ("OK dane".to_owned(), Source::Dane));
}

#[test]
fn tlsrpt_attributes_when_asked() {
    let config = DecideConfig {
        tlsrpt_attributes: true,
        ..DecideConfig::default()
    };
    let case = Case {
        key: "Example.COM.",
        sts: Some((ENFORCE, 10)),
        ..Case::default()
    };
    let (reply, source) = run(case, &config);
    assert_eq!(source, Source::MtaSts);
    assert!(reply.starts_with(SECURE), "{reply}");
    assert!(
        reply.contains(
            " policy_type=sts policy_domain=example.com policy_ttl=86400 \
             mx_host_pattern=mx1.example.com mx_host_pattern=*.example.net"
        ),
        "{reply}"
    );
}

/// A policy with `n` patterns of about 60 bytes each (not from a file: files are capped at
/// 64 KiB, which keeps a plain answer under the reply limit).
fn big_policy(n: usize) -> CachedPolicy {
    let mx = (0..n)
        .map(|i| MxPattern::parse(&format!("mx{i:05}.{}.example.com", "a".repeat(40))).unwrap())
        .collect();
    let policy = Policy {
        mode: sigillo_policy::mta_sts::Mode::Enforce,
        mx,
        max_age: 86_400,
        extensions: Vec::new(),
    };
    CachedPolicy::new("big".into(), policy, now())
}

#[test]
fn oversized_answers_shrink_or_defer() {
    let config = DecideConfig {
        tlsrpt_attributes: true,
        ..DecideConfig::default()
    };
    let next_hop = NextHop::parse("example.com");
    for (n, want_attributes, want_temp) in
        [(10, true, false), (1000, false, false), (2000, false, true)]
    {
        let big = big_policy(n);
        let mut inputs = Inputs::new(&next_hop);
        inputs.sts.cached = Some(&big);
        let d = decide(&inputs, now(), &config);
        let bytes = d.reply().to_bytes().expect("every decision encodes");
        assert!(bytes.len() <= MAX_REPLY_LEN + 10, "{n}");
        match &d.answer {
            Answer::Policy(p) => {
                assert!(!want_temp, "{n}: {}", d.reason);
                assert_eq!(p.tlsrpt.is_some(), want_attributes, "{n}");
            }
            Answer::Temp(_) => assert!(want_temp, "{n}"),
            Answer::NotFound => panic!("{n}: NOTFOUND"),
        }
    }
}

#[test]
fn tlsrpt_policy_strings_skip_lines_a_reply_cannot_hold() {
    // Found by the mta_sts_policy fuzzer: an unknown field whose value holds a tab.
    let body = std::fs::read("testdata/policies/extension-with-tab.txt").unwrap();
    let start = body.windows(4).position(|w| w == b"---\n").unwrap() + 4;
    let policy = Policy::parse(&body[start..]).unwrap();
    let cached = CachedPolicy::new("id1".into(), policy, now());
    let next_hop = NextHop::parse("example.com");
    let mut inputs = Inputs::new(&next_hop);
    inputs.sts.cached = Some(&cached);
    let config = DecideConfig {
        tlsrpt_attributes: true,
        ..DecideConfig::default()
    };
    let d = decide(&inputs, now(), &config);
    let Answer::Policy(answer) = &d.answer else {
        panic!("{d:?}");
    };
    let attributes = answer.tlsrpt.as_ref().expect("attributes kept");
    assert_eq!(attributes.policy_strings.len(), 4, "{attributes:?}");
    assert!(d.reply().to_bytes().is_ok());
}

#[test]
fn unencodable_answers_become_temp() {
    // A hand-built answer with a newline (the parser refuses these).
    let mut answer: PolicyAnswer = "encrypt".parse().unwrap();
    answer.extra.push(("protocols".into(), "a\nb".into()));
    let next_hop = NextHop::parse("example.com");
    let mut inputs = Inputs::new(&next_hop);
    inputs.static_override = Some(&answer);
    let d = decide(&inputs, now(), &DecideConfig::default());
    assert_eq!(d.source, Source::Override);
    assert_eq!(
        d.answer,
        Answer::Temp("policy answer cannot be encoded".into())
    );
}

#[test]
fn values_cross_threads() {
    // The daemon shares these between tokio tasks.
    fn send_sync<T: Send + Sync>() {}
    send_sync::<sigillo_policy::decide::Decision>();
    send_sync::<CachedPolicy>();
    send_sync::<sigillo_policy::overrides::StaticOverrides>();
    send_sync::<PinnedPeer>();
    send_sync::<sigillo_policy::socketmap::Request>();
    send_sync::<sigillo_policy::dane::DaneOutcome>();
}

#[test]
fn a_relay_pin_answers_its_bracketed_key_only() {
    let relay = |host: &str, port| {
        PinnedPeer::relay(host, port, PinLevel::Encrypt, Evidence::default()).unwrap()
    };
    let pin = relay("smtp.isp.example", None);
    let submission = relay("smtp.isp.example", Some(587));
    let v6 = relay("2001:db8::25", Some(25));
    let domain_pin =
        PinnedPeer::new("isp.example", PinLevel::Encrypt, Evidence::default()).unwrap();
    // (key, pin given) → reply
    let cases = [
        ("[smtp.isp.example]", &pin, "OK encrypt", Source::Pinned),
        ("[smtp.isp.example]:25", &pin, "OK encrypt", Source::Pinned),
        ("[other.example]", &pin, "NOTFOUND ", Source::None),
        ("[smtp.isp.example]:587", &pin, "NOTFOUND ", Source::None),
        (
            "[smtp.isp.example]:587",
            &submission,
            "OK encrypt",
            Source::Pinned,
        ),
        ("[smtp.isp.example]", &submission, "NOTFOUND ", Source::None),
        // An IPv6 relay, however main.cf spells it.
        ("[2001:db8::25]", &v6, "OK encrypt", Source::Pinned),
        ("[ipv6:2001:DB8:0::25]", &v6, "OK encrypt", Source::Pinned),
        ("[2001:db8::26]", &v6, "NOTFOUND ", Source::None),
        ("[2001:db8::25]:587", &v6, "NOTFOUND ", Source::None),
        (".isp.example", &pin, "NOTFOUND ", Source::None),
        // A domain pin never answers a relay key.
        ("[isp.example]", &domain_pin, "NOTFOUND ", Source::None),
    ];
    for (key, pin, want, source) in cases {
        let next_hop = NextHop::parse(key);
        let mut inputs = Inputs::new(&next_hop);
        inputs.pinned = Some(pin);
        let d = decide(&inputs, now(), &DecideConfig::default());
        assert_eq!(
            (d.reply().to_string(), d.source),
            (want.to_owned(), source),
            "{key}"
        );
    }
}
