//! MTA-STS policy files and the other text formats of sigillo-policy on arbitrary bytes:
//! `Policy::parse`, then the Postfix answer and decision built from a valid policy; the
//! `_mta-sts` and `_smtp._tls` TXT parsers on the input's lines as records; TLSA records
//! (presentation and wire form, matched against the input as a certificate); the static
//! override file parser.
//!
//! Invariants: never panics; a valid policy keeps `max_age <= 31557600` and has an `mx`
//! unless its mode is `none`; its canonical text parses back to an equal policy; each of its
//! patterns matches its own host form and a wildcard never matches its bare domain; every
//! decision built from it encodes as a socketmap reply.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use sigillo_policy::cache::CachedPolicy;
use sigillo_policy::dane::{Tlsa, match_chain};
use sigillo_policy::decide::{DecideConfig, Inputs, decide};
use sigillo_policy::mta_sts::{MAX_MAX_AGE, Mode, Policy, StsRecord};
use sigillo_policy::overrides::StaticOverrides;
use sigillo_policy::postfix::{NextHop, TlsPolicy};
use sigillo_policy::tlsrpt::TlsRptRecord;

fn check_policy(policy: &Policy) {
    assert!(policy.max_age <= MAX_MAX_AGE);
    assert!(policy.mode == Mode::None || !policy.mx.is_empty());
    let again = Policy::parse_stored(&policy.to_text()).expect("canonical text parses");
    assert_eq!(&again, policy);
    for p in &policy.mx {
        if p.is_wildcard() {
            assert!(p.matches(&format!("mx.{}", p.domain())));
            assert!(!p.matches(p.domain()));
        } else {
            assert!(p.matches(&p.domain().to_ascii_uppercase()));
        }
    }
    let _ = TlsPolicy::from_sts(policy).to_string();
    let now = jiff::Timestamp::UNIX_EPOCH;
    let cached = CachedPolicy::new("fuzz".into(), policy.clone(), now);
    let next_hop = NextHop::parse("example.com");
    for tlsrpt_attributes in [false, true] {
        let mut inputs = Inputs::new(&next_hop);
        inputs.sts.cached = Some(&cached);
        let config = DecideConfig {
            tlsrpt_attributes,
            ..DecideConfig::default()
        };
        decide(&inputs, now, &config)
            .reply()
            .to_bytes()
            .expect("a decision always encodes");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = Policy::parse(data) {
        check_policy(&policy);
    }
    let records: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let _ = StsRecord::from_txt(&records);
    let _ = TlsRptRecord::from_txt(&records);
    let text = String::from_utf8_lossy(data);
    let _ = StaticOverrides::parse(&text);
    for tlsa in [Tlsa::from_presentation(&text), Tlsa::from_rdata(data)]
        .into_iter()
        .flatten()
    {
        let _ = tlsa.usability();
        let _ = match_chain(std::slice::from_ref(&tlsa), &[data]);
    }
});
