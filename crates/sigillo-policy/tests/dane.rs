//! DANE matching against real certificate chains made with rcgen: root CA → intermediate →
//! leaf, each with its own ECDSA key, plus an expired leaf for another name.

use rcgen::{
    BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PublicKeyData, date_time_ymd,
};
use sha2::{Digest, Sha256, Sha512};
use sigillo_policy::dane::{CertUsage, DaneMatch, DaneOutcome, Tlsa, match_chain};
use sigillo_policy::tlsrpt::ResultType;

struct Cert {
    der: Vec<u8>,
    spki: Vec<u8>,
}

struct Chain {
    leaf: Cert,
    intermediate: Cert,
    root: Cert,
    /// An expired leaf for another name, issued by the intermediate.
    expired_other: Cert,
    /// A key that is in no certificate.
    stranger_spki: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

fn chain() -> Chain {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("test root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::from_params(&root_params, &root_key);

    let int_key = KeyPair::generate().unwrap();
    let int_params = ca_params("test intermediate");
    let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap();
    let int_issuer = Issuer::from_params(&int_params, &int_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["mx.example.com".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &int_issuer)
        .unwrap();

    let old_key = KeyPair::generate().unwrap();
    let mut old_params = CertificateParams::new(vec!["other.example".to_owned()]).unwrap();
    old_params.not_before = date_time_ymd(2000, 1, 1);
    old_params.not_after = date_time_ymd(2001, 1, 1);
    let old = old_params.signed_by(&old_key, &int_issuer).unwrap();

    let cert = |c: &rcgen::Certificate, k: &KeyPair| Cert {
        der: c.der().to_vec(),
        spki: k.subject_public_key_info(),
    };
    Chain {
        leaf: cert(&leaf, &leaf_key),
        intermediate: cert(&intermediate, &int_key),
        root: cert(&root, &root_key),
        expired_other: cert(&old, &old_key),
        stranger_spki: KeyPair::generate().unwrap().subject_public_key_info(),
    }
}

/// A TLSA record for `cert`, with data computed here independently of the crate.
fn tlsa(usage: u8, selector: u8, matching_type: u8, cert: &Cert) -> Tlsa {
    let selected = if selector == 0 { &cert.der } else { &cert.spki };
    let data = match matching_type {
        0 => selected.clone(),
        1 => Sha256::digest(selected).to_vec(),
        _ => Sha512::digest(selected).to_vec(),
    };
    Tlsa {
        usage,
        selector,
        matching_type,
        data,
    }
}

fn ee(record: usize) -> DaneMatch {
    DaneMatch {
        record,
        usage: CertUsage::DaneEe,
        cert_index: 0,
    }
}

fn ta(record: usize, cert_index: usize) -> DaneMatch {
    DaneMatch {
        record,
        usage: CertUsage::DaneTa,
        cert_index,
    }
}

fn matched(matches: Vec<DaneMatch>) -> DaneOutcome {
    DaneOutcome::Matched { matches }
}

#[test]
fn chains_against_records() {
    let c = chain();
    let full = vec![
        c.leaf.der.clone(),
        c.intermediate.der.clone(),
        c.root.der.clone(),
    ];
    let stranger = Cert {
        der: b"not a certificate".to_vec(),
        spki: c.stranger_spki.clone(),
    };
    let cases: Vec<(&str, Vec<Tlsa>, DaneOutcome)> = vec![
        (
            "3 1 1 leaf",
            vec![tlsa(3, 1, 1, &c.leaf)],
            matched(vec![ee(0)]),
        ),
        (
            "3 0 1 leaf",
            vec![tlsa(3, 0, 1, &c.leaf)],
            matched(vec![ee(0)]),
        ),
        (
            "3 0 0 leaf",
            vec![tlsa(3, 0, 0, &c.leaf)],
            matched(vec![ee(0)]),
        ),
        (
            "3 1 0 leaf",
            vec![tlsa(3, 1, 0, &c.leaf)],
            matched(vec![ee(0)]),
        ),
        (
            "3 1 2 leaf",
            vec![tlsa(3, 1, 2, &c.leaf)],
            matched(vec![ee(0)]),
        ),
        (
            "2 0 1 intermediate",
            vec![tlsa(2, 0, 1, &c.intermediate)],
            matched(vec![ta(0, 1)]),
        ),
        (
            "2 1 1 root",
            vec![tlsa(2, 1, 1, &c.root)],
            matched(vec![ta(0, 2)]),
        ),
        // DANE-TA never matches the leaf, DANE-EE never a CA certificate.
        (
            "2 1 1 leaf",
            vec![tlsa(2, 1, 1, &c.leaf)],
            DaneOutcome::NoMatch { usable: 1 },
        ),
        (
            "3 1 1 intermediate",
            vec![tlsa(3, 1, 1, &c.intermediate)],
            DaneOutcome::NoMatch { usable: 1 },
        ),
        (
            "3 1 1 unrelated key",
            vec![tlsa(3, 1, 1, &stranger)],
            DaneOutcome::NoMatch { usable: 1 },
        ),
        // PKIX usages are unusable in SMTP even when they would match.
        (
            "0 0 1 root + 1 1 1 leaf",
            vec![tlsa(0, 0, 1, &c.root), tlsa(1, 1, 1, &c.leaf)],
            DaneOutcome::AllUnusable {
                unusable: vec![
                    (0, sigillo_policy::dane::Unusable::PkixUsage { usage: 0 }),
                    (1, sigillo_policy::dane::Unusable::PkixUsage { usage: 1 }),
                ],
            },
        ),
        (
            "unusable + matching",
            vec![tlsa(1, 1, 1, &c.leaf), tlsa(3, 1, 1, &c.leaf)],
            matched(vec![ee(1)]),
        ),
        // Digest agility: a SHA-512 record for (3, 1) hides the SHA-256 ones.
        (
            "wrong 3 1 2 + right 3 1 1",
            vec![tlsa(3, 1, 2, &c.intermediate), tlsa(3, 1, 1, &c.leaf)],
            DaneOutcome::NoMatch { usable: 2 },
        ),
        (
            "right 3 1 2 + wrong 3 1 1",
            vec![tlsa(3, 1, 2, &c.leaf), tlsa(3, 1, 1, &c.intermediate)],
            matched(vec![ee(0)]),
        ),
        // ... but not those of another selector.
        (
            "wrong 3 1 2 + right 3 0 1",
            vec![tlsa(3, 1, 2, &c.intermediate), tlsa(3, 0, 1, &c.leaf)],
            matched(vec![ee(1)]),
        ),
        // Several matches: EE first, then TA from the leaf upwards.
        (
            "2 1 1 root + 2 0 1 intermediate + 3 1 1 leaf",
            vec![
                tlsa(2, 1, 1, &c.root),
                tlsa(2, 0, 1, &c.intermediate),
                tlsa(3, 1, 1, &c.leaf),
            ],
            matched(vec![ee(2), ta(1, 1), ta(0, 2)]),
        ),
    ];
    for (name, records, want) in cases {
        assert_eq!(match_chain(&records, &full), want, "{name}");
    }
}

#[test]
fn spki_selector_reads_the_key_rcgen_generated() {
    // Selector 1 with matching type 0 is the raw SubjectPublicKeyInfo: what x509-parser
    // extracts from the certificate must be byte-equal to the key rcgen made.
    let c = chain();
    let record = tlsa(3, 1, 0, &c.leaf);
    assert_eq!(record.data, c.leaf.spki);
    assert_eq!(
        match_chain(&[record], std::slice::from_ref(&c.leaf.der)),
        matched(vec![ee(0)])
    );
}

#[test]
fn dane_ee_ignores_expiry_and_names() {
    // RFC 7672 §3.1.1: a DANE-EE match authenticates; the certificate's dates and names do
    // not matter. This leaf expired in 2001 and names another host.
    let c = chain();
    let outcome = match_chain(
        &[tlsa(3, 1, 1, &c.expired_other)],
        &[c.expired_other.der.clone(), c.intermediate.der.clone()],
    );
    let DaneOutcome::Matched { matches } = &outcome else {
        panic!("expected a match, got {outcome:?}");
    };
    assert!(!matches[0].needs_chain_and_name_check());
    assert_eq!(outcome.failure_result_type(), None);
}

#[test]
fn dane_ta_matches_ask_for_chain_and_name_checks() {
    let c = chain();
    let outcome = match_chain(
        &[tlsa(2, 0, 2, &c.intermediate)],
        &[c.leaf.der.clone(), c.intermediate.der.clone()],
    );
    assert_eq!(outcome, matched(vec![ta(0, 1)]));
    let DaneOutcome::Matched { matches } = outcome else {
        unreachable!()
    };
    assert!(matches[0].needs_chain_and_name_check());
}

#[test]
fn unparsable_certificates_only_match_by_full_bytes() {
    let junk = Cert {
        der: b"\x30\x03garbage".to_vec(),
        spki: Vec::new(),
    };
    let chain = [junk.der.clone()];
    assert_eq!(
        match_chain(&[tlsa(3, 0, 1, &junk)], &chain),
        matched(vec![ee(0)])
    );
    let spki_record = Tlsa {
        usage: 3,
        selector: 1,
        matching_type: 1,
        data: Sha256::digest(b"").to_vec(),
    };
    assert_eq!(
        match_chain(&[spki_record], &chain),
        DaneOutcome::NoMatch { usable: 1 }
    );
}

#[test]
fn failure_result_types() {
    let c = chain();
    let leaf = [c.leaf.der.clone()];
    assert_eq!(
        match_chain(&[tlsa(0, 0, 1, &c.leaf)], &leaf).failure_result_type(),
        Some(ResultType::TlsaInvalid)
    );
    assert_eq!(
        match_chain(&[tlsa(3, 1, 1, &c.root)], &leaf).failure_result_type(),
        Some(ResultType::ValidationFailure)
    );
}
