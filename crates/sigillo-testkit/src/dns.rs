//! A small authoritative DNS server on 127.0.0.1 (UDP and TCP, same free port) serving a zone
//! built in code, for MX/A/AAAA/TXT/TLSA lookups in tests — with SERVFAIL, silent and null-MX
//! names, and optionally DNSSEC: a signed zone, bogus names, and unsigned delegated children.
//!
//! Answers: matching records → NOERROR + answers (AA set); the name exists but has no record
//! of that type → NODATA (NOERROR, SOA in authority); unknown name → NXDOMAIN (SOA in
//! authority). Messages are encoded with `hickory-proto`; no recursion.
//!
//! DNSSEC ([`ZoneBuilder::signed`]): one ECDSA P-256 key (flags 257, both KSK and ZSK) signs
//! every RRset; the DNSKEY is served at the apex and given to resolvers as the trust anchor
//! ([`DnsServer::trust_anchor`]). When a query has the DO bit, answers carry their RRSIGs and
//! negative answers an NSEC proof (the NSEC at the name, or the NSEC covering it and, for
//! NXDOMAIN, the one covering the wildcard at the closest encloser), all signed. Without DO
//! the answers are the same as for an unsigned zone.
//! - [`ZoneBuilder::bogus`]: the signatures in every answer for a name are damaged, so a
//!   validating resolver must reject its answers.
//! - [`ZoneBuilder::unsigned_child`]: a delegated child zone served unsigned, with no DS in
//!   the signed parent (an NSEC proves it): its answers validate as insecure.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, NSEC, RRSIG};
use hickory_proto::dnssec::{Algorithm, DigestType, DnssecSigner, SigningKey, TrustAnchors};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TLSA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::scripted::ServerCore;

/// How long the signatures of a signed zone are valid: from an hour ago for this long.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(31 * 24 * 3600);

/// Name of the trust anchor file in the server's temp dir.
const TRUST_ANCHOR_FILE: &str = "trust-anchor.keys";

/// TTL of SOA and NSEC records (also the SOA minimum, so negative answers are cached 5 s).
const NEGATIVE_TTL: u32 = 5;

/// Builds the zone a [`DnsServer`] serves. Names may be given with or without the final dot;
/// they are all absolute (`"mx.lab.test"` = `mx.lab.test.`), compared case-insensitively.
///
/// ```no_run
/// use sigillo_testkit::ZoneBuilder;
/// use std::net::Ipv4Addr;
///
/// let dns = ZoneBuilder::new("lab.test")
///     .signed() // DNSKEY, RRSIGs, NSEC; trust anchor: dns.trust_anchor()
///     .mx("lab.test", 10, "mx.lab.test")
///     .a("mx.lab.test", Ipv4Addr::LOCALHOST)
///     .tlsa("_25._tcp.mx.lab.test", 3, 1, 1, &[0xab; 32])
///     .bogus("_25._tcp.mx.lab.test") // …with a broken signature
///     .unsigned_child("plain.lab.test") // an insecure delegation
///     .mx("plain.lab.test", 10, "mx.lab.test")
///     .start()
///     .expect("dns");
/// ```
#[derive(Clone, Debug)]
pub struct ZoneBuilder {
    origin: Name,
    ttl: u32,
    records: Vec<Record>,
    servfail: HashSet<Name>,
    servfail_types: HashSet<(Name, RecordType)>,
    silent: HashSet<Name>,
    error: Option<String>,
    /// The zone key (PKCS#8 DER) when the zone is signed.
    signing_key: Option<Vec<u8>>,
    bogus: HashSet<Name>,
    unsigned_children: Vec<Name>,
}

fn fqdn(name: &str) -> Result<Name> {
    let text = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let parsed = Name::from_ascii(&text).with_context(|| format!("bad DNS name {name:?}"))?;
    Ok(parsed.to_lowercase())
}

impl ZoneBuilder {
    /// A zone with apex `origin` (its SOA is used in negative answers). TTL 60 s.
    pub fn new(origin: &str) -> Self {
        let (origin, error) = match fqdn(origin) {
            Ok(n) => (n, None),
            Err(e) => (Name::root(), Some(format!("{e:#}"))),
        };
        Self {
            origin,
            ttl: 60,
            records: Vec::new(),
            servfail: HashSet::new(),
            servfail_types: HashSet::new(),
            silent: HashSet::new(),
            error,
            signing_key: None,
            bogus: HashSet::new(),
            unsigned_children: Vec::new(),
        }
    }

    /// TTL of the records added after this call.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// Add any record built with hickory-proto.
    pub fn record(mut self, name: &str, rdata: RData) -> Self {
        match fqdn(name) {
            Ok(n) => self.records.push(Record::from_rdata(n, self.ttl, rdata)),
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        self
    }

    /// `name MX pref host`.
    pub fn mx(self, name: &str, pref: u16, host: &str) -> Self {
        match fqdn(host) {
            Ok(h) => self.record(name, RData::MX(MX::new(pref, h))),
            Err(e) => self.failed(e),
        }
    }

    /// A null MX (`name MX 0 .`, RFC 7505): the domain accepts no mail.
    pub fn null_mx(self, name: &str) -> Self {
        self.record(name, RData::MX(MX::new(0, Name::root())))
    }

    /// `name A addr`.
    pub fn a(self, name: &str, addr: Ipv4Addr) -> Self {
        self.record(name, RData::A(A(addr)))
    }

    /// `name AAAA addr`.
    pub fn aaaa(self, name: &str, addr: Ipv6Addr) -> Self {
        self.record(name, RData::AAAA(AAAA(addr)))
    }

    /// `name TXT text` (split into 255-byte strings when longer, as in zone files).
    pub fn txt(self, name: &str, text: &str) -> Self {
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(255).collect();
        let chunks = if chunks.is_empty() {
            vec![&b""[..]]
        } else {
            chunks
        };
        self.record(name, RData::TXT(TXT::from_bytes(chunks)))
    }

    /// `name CNAME target`.
    pub fn cname(self, name: &str, target: &str) -> Self {
        match fqdn(target) {
            Ok(t) => self.record(name, RData::CNAME(CNAME(t))),
            Err(e) => self.failed(e),
        }
    }

    /// `name TLSA usage selector matching data` (RFC 6698), e.g. `_25._tcp.mx.lab.test`
    /// `3 1 1` with the SHA-256 of the server's SPKI.
    pub fn tlsa(self, name: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) -> Self {
        let tlsa = TLSA::new(
            CertUsage::from(usage),
            Selector::from(selector),
            Matching::from(matching),
            data.to_vec(),
        );
        self.record(name, RData::TLSA(tlsa))
    }

    /// Sign the zone (DNSSEC, ECDSA P-256 with a fresh key): see the module documentation.
    pub fn signed(mut self) -> Self {
        match EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256) {
            Ok(key) => self.signing_key = Some(key.secret_pkcs8_der().to_vec()),
            Err(e) => self.error = Some(format!("generating the zone key: {e}")),
        }
        self
    }

    /// In a signed zone, damage every signature in the answers to queries for `name`
    /// (records and denials alike): a validating resolver must treat them as bogus.
    pub fn bogus(self, name: &str) -> Self {
        self.mark(name, |zone| &mut zone.bogus)
    }

    /// Delegate `name` (below the origin) to a child zone served unsigned by the same server:
    /// records added at or below `name` belong to it. A signed parent publishes the
    /// delegation's NS and an NSEC without DS, so the child's answers are provably insecure.
    pub fn unsigned_child(mut self, name: &str) -> Self {
        match fqdn(name) {
            Ok(n) if n != self.origin && self.origin.zone_of(&n) => {
                self.unsigned_children.push(n);
            }
            Ok(n) => {
                self.error = Some(format!(
                    "unsigned child {n} is not below the zone {}",
                    self.origin
                ));
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        self
    }

    /// Every query for `name` (any type) gets SERVFAIL.
    pub fn servfail(self, name: &str) -> Self {
        self.mark(name, |zone| &mut zone.servfail)
    }

    /// Queries for `name` of type `rtype` get SERVFAIL (e.g. AAAA only).
    pub fn servfail_type(mut self, name: &str, rtype: RecordType) -> Self {
        match fqdn(name) {
            Ok(n) => {
                self.servfail_types.insert((n, rtype));
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        self
    }

    /// Queries for `name` are never answered (the client times out).
    pub fn no_answer(self, name: &str) -> Self {
        self.mark(name, |zone| &mut zone.silent)
    }

    /// Put `name` in one of the sets of specially treated names.
    fn mark(mut self, name: &str, set: fn(&mut Self) -> &mut HashSet<Name>) -> Self {
        match fqdn(name) {
            Ok(n) => {
                set(&mut self).insert(n);
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        self
    }

    fn failed(mut self, e: anyhow::Error) -> Self {
        self.error = Some(format!("{e:#}"));
        self
    }

    /// Start serving this zone (same as [`DnsServer::start`]).
    pub fn start(self) -> Result<DnsServer> {
        DnsServer::start(self)
    }
}

/// The trust anchor of a signed zone, in the forms resolvers take.
#[derive(Clone, Debug)]
struct Anchor {
    /// `lab.test. 3600 IN DNSKEY 257 3 13 …`
    dnskey_line: String,
    /// `lab.test. 3600 IN DS <tag> 13 2 <hex>`
    ds_line: String,
}

/// One zone's data, as served: the parent (maybe signed) or an unsigned child.
#[derive(Debug)]
struct Authority {
    origin: Name,
    soa: Record,
    /// Every authoritative record (SOA, and when signed DNSKEY and NSEC too), plus the NS of
    /// delegations.
    records: Vec<Record>,
    /// RRSIGs by owner and covered type, when signed.
    signatures: HashMap<(Name, RecordType), Vec<Record>>,
    /// NSEC owners in canonical order, when signed.
    nsec_owners: Vec<Name>,
    /// Names whose answers carry corrupted signatures.
    bogus: HashSet<Name>,
    /// `records` by owner name, so an answer costs a hash lookup even in a zone of many
    /// thousand names (the policy daemon benchmark serves one).
    by_owner: HashMap<Name, Vec<Record>>,
    /// Every owner name and its ancestors up to the origin (empty non-terminals exist too).
    existing: HashSet<Name>,
}

/// The same record, with its signature damaged if it is an RRSIG.
fn corrupted(record: Record) -> Record {
    let RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) = &record.data else {
        return record;
    };
    let mut sig = rrsig.sig().to_vec();
    if let Some(byte) = sig.get_mut(0) {
        *byte ^= 0xff;
    }
    let broken = RRSIG::from_sig(rrsig.input().clone(), sig);
    Record::from_rdata(
        record.name.clone(),
        record.ttl,
        RData::DNSSEC(DNSSECRData::RRSIG(broken)),
    )
}

fn soa_record(origin: &Name) -> Result<Record> {
    let soa = SOA::new(
        origin.prepend_label("ns")?,
        origin.prepend_label("hostmaster")?,
        1,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    );
    Ok(Record::from_rdata(
        origin.clone(),
        NEGATIVE_TTL,
        RData::SOA(soa),
    ))
}

impl Authority {
    /// An unsigned zone: `records`, its SOA, and `NS ns.<owner>` at each of `ns_owners`.
    fn unsigned(origin: Name, mut records: Vec<Record>, ns_owners: &[Name]) -> Result<Self> {
        let soa = soa_record(&origin)?;
        records.push(soa.clone());
        for owner in ns_owners {
            let ns = NS(owner.prepend_label("ns")?);
            records.push(Record::from_rdata(owner.clone(), 3600, RData::NS(ns)));
        }
        let mut zone = Self {
            origin,
            soa,
            records,
            signatures: HashMap::new(),
            nsec_owners: Vec::new(),
            bogus: HashSet::new(),
            by_owner: HashMap::new(),
            existing: HashSet::new(),
        };
        zone.index();
        Ok(zone)
    }

    /// Rebuild `by_owner` and `existing` from `records`.
    fn index(&mut self) {
        self.by_owner.clear();
        self.existing.clear();
        for r in &self.records {
            self.by_owner
                .entry(r.name.clone())
                .or_default()
                .push(r.clone());
            let mut name = r.name.clone();
            while self.origin.zone_of(&name) && self.existing.insert(name.clone()) {
                name = name.base_name();
            }
        }
    }

    /// The parent zone: its records, the NS of each delegation, and, with a key, DNSKEY,
    /// NSEC and RRSIGs. Returns the trust anchor when signed.
    fn parent(
        origin: Name,
        records: Vec<Record>,
        delegations: &[Name],
        key_der: Option<&[u8]>,
        bogus: &HashSet<Name>,
    ) -> Result<(Self, Option<Anchor>)> {
        let mut zone = Self::unsigned(origin, records, delegations)?;
        let Some(key_der) = key_der else {
            return Ok((zone, None));
        };
        let key = EcdsaSigningKey::from_pkcs8(
            &PrivatePkcs8KeyDer::from(key_der.to_vec()),
            Algorithm::ECDSAP256SHA256,
        )
        .map_err(|e| anyhow!("loading the zone key: {e}"))?;
        let public = key
            .to_public_key()
            .map_err(|e| anyhow!("the zone key's public half: {e}"))?;
        let dnskey = DNSKEY::new(true, true, false, public.clone());
        let ds = DS::from_key(&public, &zone.origin, DigestType::SHA256)
            .map_err(|e| anyhow!("computing the DS: {e}"))?;
        let anchor = Anchor {
            dnskey_line: format!("{} 3600 IN DNSKEY {dnskey}", zone.origin),
            ds_line: format!("{} 3600 IN DS {ds}", zone.origin),
        };
        zone.records.push(Record::from_rdata(
            zone.origin.clone(),
            3600,
            RData::DNSSEC(DNSSECRData::DNSKEY(dnskey.clone())),
        ));
        zone.add_nsec_chain();
        zone.index();
        let signer = DnssecSigner::new(
            dnskey,
            Box::new(key),
            zone.origin.clone(),
            SIGNATURE_VALIDITY,
        );
        zone.sign(&signer, delegations)?;
        zone.bogus = bogus.clone();
        Ok((zone, Some(anchor)))
    }

    /// One NSEC per owner name, in canonical order, the last pointing back to the apex.
    fn add_nsec_chain(&mut self) {
        let mut types: BTreeMap<Name, BTreeSet<RecordType>> = BTreeMap::new();
        for r in &self.records {
            types
                .entry(r.name.clone())
                .or_default()
                .insert(r.record_type());
        }
        let owners: Vec<Name> = types.keys().cloned().collect();
        for (i, owner) in owners.iter().enumerate() {
            let next = owners
                .get(i + 1)
                .cloned()
                .unwrap_or_else(|| self.origin.clone());
            let present = types.get(owner).cloned().unwrap_or_default();
            let nsec = NSEC::new_cover_self(next, present);
            self.records.push(Record::from_rdata(
                owner.clone(),
                NEGATIVE_TTL,
                RData::DNSSEC(DNSSECRData::NSEC(nsec)),
            ));
        }
        self.nsec_owners = owners;
    }

    /// An RRSIG for every authoritative RRset (not the NS of a delegation, RFC 4035 §2.2).
    fn sign(&mut self, signer: &DnssecSigner, delegations: &[Name]) -> Result<()> {
        let mut rrsets: BTreeMap<(Name, RecordType), Vec<Record>> = BTreeMap::new();
        for r in &self.records {
            rrsets
                .entry((r.name.clone(), r.record_type()))
                .or_default()
                .push(r.clone());
        }
        let inception = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        for ((name, rtype), records) in rrsets {
            if rtype == RecordType::NS && delegations.contains(&name) {
                continue;
            }
            let ttl = records.first().map_or(self.soa.ttl, |r| r.ttl);
            let mut rrset = RecordSet::with_ttl(name.clone(), rtype, ttl);
            for r in records {
                rrset.insert(r, 0);
            }
            let rrsig = RRSIG::from_rrset(&rrset, DNSClass::IN, inception, signer)
                .with_context(|| format!("signing {name} {rtype}"))?;
            let record =
                Record::from_rdata(name.clone(), ttl, RData::DNSSEC(DNSSECRData::RRSIG(rrsig)));
            self.signatures
                .entry((name, rtype))
                .or_default()
                .push(record);
        }
        Ok(())
    }

    fn is_signed(&self) -> bool {
        !self.nsec_owners.is_empty()
    }

    fn name_exists(&self, name: &Name) -> bool {
        *name == self.origin || self.existing.contains(name)
    }

    /// The RRSIGs covering `records`' RRsets.
    fn signatures_of(&self, records: &[Record]) -> Vec<Record> {
        let sets: BTreeSet<(Name, RecordType)> = records
            .iter()
            .map(|r| (r.name.clone(), r.record_type()))
            .collect();
        sets.iter()
            .filter_map(|key| self.signatures.get(key))
            .flatten()
            .cloned()
            .collect()
    }

    /// The NSEC record owned by `owner`.
    fn nsec_at(&self, owner: &Name) -> Option<Record> {
        self.by_owner
            .get(owner)?
            .iter()
            .find(|r| r.record_type() == RecordType::NSEC)
            .cloned()
    }

    /// The NSEC whose owner is the last one before `name` in canonical order.
    fn nsec_covering(&self, name: &Name) -> Option<Record> {
        // nsec_owners is sorted (canonical order): the last owner before `name`.
        let before = self.nsec_owners.partition_point(|o| o < name);
        let owner = self.nsec_owners.get(before.checked_sub(1)?)?;
        self.nsec_at(owner)
    }

    /// The NSEC records proving that `name` has no record of the asked type (NODATA) or does
    /// not exist (NXDOMAIN: also no wildcard at the closest encloser).
    fn denial(&self, name: &Name, exists: bool) -> Vec<Record> {
        let mut proof = Vec::new();
        if let Some(nsec) = self.nsec_at(name) {
            proof.push(nsec);
            return proof;
        }
        proof.extend(self.nsec_covering(name));
        if !exists {
            let mut encloser = name.base_name();
            while !self.name_exists(&encloser) && encloser.num_labels() > 0 {
                encloser = encloser.base_name();
            }
            let wildcard = encloser.prepend_label("*").ok();
            if let Some(nsec) = wildcard.and_then(|w| self.nsec_covering(&w))
                && !proof.contains(&nsec)
            {
                proof.push(nsec);
            }
        }
        proof
    }

    /// Fill `resp` with the answer to `name`/`qtype` from this zone; for a bogus name, with
    /// every signature damaged.
    fn answer(&self, name: &Name, qtype: RecordType, dnssec: bool, resp: &mut Message) {
        self.answer_signed(name, qtype, dnssec, resp);
        if self.bogus.contains(name) {
            for section in [&mut resp.answers, &mut resp.authorities] {
                *section = std::mem::take(section).into_iter().map(corrupted).collect();
            }
        }
    }

    fn answer_signed(&self, name: &Name, qtype: RecordType, dnssec: bool, resp: &mut Message) {
        resp.metadata.authoritative = true;
        let dnssec = dnssec && self.is_signed();
        let at_name = self.by_owner.get(name).into_iter().flatten();
        let mut answers: Vec<Record> = at_name
            .clone()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if answers.is_empty() && qtype != RecordType::CNAME {
            answers.extend(
                at_name
                    .filter(|r| r.record_type() == RecordType::CNAME)
                    .cloned(),
            );
        }
        if !answers.is_empty() {
            if dnssec {
                let signatures = self.signatures_of(&answers);
                answers.extend(signatures);
            }
            resp.answers = answers;
            return;
        }
        let exists = self.name_exists(name);
        if !exists {
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        let mut authority = vec![self.soa.clone()];
        if dnssec {
            authority.extend(self.denial(name, exists));
            let signatures = self.signatures_of(&authority);
            authority.extend(signatures);
        }
        resp.authorities = authority;
    }
}

#[derive(Debug)]
struct Zone {
    parent: Authority,
    children: Vec<Authority>,
    servfail: HashSet<Name>,
    servfail_types: HashSet<(Name, RecordType)>,
    silent: HashSet<Name>,
}

impl Zone {
    fn build(zone: ZoneBuilder) -> Result<(Self, Option<Anchor>)> {
        if let Some(e) = zone.error {
            bail!("invalid zone: {e}");
        }
        if !zone.bogus.is_empty() && zone.signing_key.is_none() {
            bail!("invalid zone: bogus() names need a signed() zone");
        }
        let mut parent_records = Vec::new();
        let mut child_records: Vec<Vec<Record>> = vec![Vec::new(); zone.unsigned_children.len()];
        for record in zone.records {
            if !zone.origin.zone_of(&record.name) {
                bail!(
                    "invalid zone: {} is outside the zone {}",
                    record.name,
                    zone.origin
                );
            }
            // The deepest child containing the name owns it.
            let owner = zone
                .unsigned_children
                .iter()
                .enumerate()
                .filter(|(_, c)| c.zone_of(&record.name))
                .max_by_key(|(_, c)| c.num_labels())
                .map(|(i, _)| i);
            match owner.and_then(|i| child_records.get_mut(i)) {
                Some(list) => list.push(record),
                None => parent_records.push(record),
            }
        }
        let (parent, anchor) = Authority::parent(
            zone.origin,
            parent_records,
            &zone.unsigned_children,
            zone.signing_key.as_deref(),
            &zone.bogus,
        )?;
        let children = zone
            .unsigned_children
            .into_iter()
            .zip(child_records)
            .map(|(origin, records)| {
                Authority::unsigned(origin.clone(), records, std::slice::from_ref(&origin))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((
            Self {
                parent,
                children,
                servfail: zone.servfail,
                servfail_types: zone.servfail_types,
                silent: zone.silent,
            },
            anchor,
        ))
    }

    /// The response to `query`, or `None` to stay silent.
    fn respond(&self, query: &Message) -> Option<Message> {
        let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
        resp.metadata.message_type = MessageType::Response;
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.queries = query.queries.clone();
        let dnssec_ok = query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        if query.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_dnssec_ok(dnssec_ok);
            resp.edns = Some(edns);
        }
        if query.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return Some(resp);
        }
        let [q] = query.queries.as_slice() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return Some(resp);
        };
        let name = q.name().to_lowercase();
        if self.silent.contains(&name) {
            return None;
        }
        let qtype = q.query_type();
        if self.servfail.contains(&name) || self.servfail_types.contains(&(name.clone(), qtype)) {
            resp.metadata.response_code = ResponseCode::ServFail;
            return Some(resp);
        }
        // A child answers for its names, except DS at its apex: that is the parent's.
        let authority = self
            .children
            .iter()
            .filter(|c| c.origin.zone_of(&name))
            .filter(|c| !(c.origin == name && qtype == RecordType::DS))
            .max_by_key(|c| c.origin.num_labels())
            .unwrap_or(&self.parent);
        authority.answer(&name, qtype, dnssec_ok, &mut resp);
        Some(resp)
    }

    /// Encode the response for `request_bytes`; for UDP, truncate past the client's size.
    fn handle(&self, request_bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
        let query = match Message::from_vec(request_bytes) {
            Ok(q) => q,
            Err(_) => {
                // Answer FORMERR when at least the id can be read.
                let id = u16::from_be_bytes([*request_bytes.first()?, *request_bytes.get(1)?]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        if query.metadata.message_type != MessageType::Query {
            return None;
        }
        let resp = self.respond(&query)?;
        let bytes = resp.to_vec().ok()?;
        let limit = if udp {
            query
                .edns
                .as_ref()
                .map_or(512, |e| usize::from(e.max_payload().max(512)))
        } else {
            usize::MAX
        };
        if bytes.len() <= limit {
            return Some(bytes);
        }
        let mut truncated = resp;
        truncated.answers.clear();
        truncated.authorities.clear();
        truncated.additionals.clear();
        truncated.metadata.truncation = true;
        truncated.to_vec().ok()
    }
}

/// A running DNS server on 127.0.0.1 (UDP + TCP on the same port; or on the address given to
/// [`DnsServer::start_at`]). Stops on drop.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    udp: Option<JoinHandle<()>>,
    queries: Arc<AtomicUsize>,
    anchor: Option<Anchor>,
    /// Holds `trust-anchor.keys` for a signed zone.
    anchor_dir: Option<tempfile::TempDir>,
    _tcp: ServerCore,
}

impl DnsServer {
    /// Serve `zone` on 127.0.0.1:free port.
    pub fn start(zone: ZoneBuilder) -> Result<Self> {
        // Same port for UDP and TCP: bind TCP on any free port, then UDP on it; retry if taken.
        let (listener, socket) = (0..50)
            .find_map(|_| {
                let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
                let port = l.local_addr().ok()?.port();
                let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
                Some((l, u))
            })
            .context("could not bind UDP and TCP on the same free port on 127.0.0.1")?;
        Self::serve(zone, listener, socket)
    }

    /// Serve `zone` on a given address (UDP and TCP), e.g. `127.0.0.1:53` inside a
    /// [`crate::NetNs`] for clients that read `/etc/resolv.conf`, which has no port (binding
    /// below 1024 needs root).
    pub fn start_at(addr: SocketAddr, zone: ZoneBuilder) -> Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("dns: binding TCP {addr}"))?;
        let socket = UdpSocket::bind(addr).with_context(|| format!("dns: binding UDP {addr}"))?;
        Self::serve(zone, listener, socket)
    }

    fn serve(zone: ZoneBuilder, listener: TcpListener, socket: UdpSocket) -> Result<Self> {
        let (zone, anchor) = Zone::build(zone)?;
        let zone = Arc::new(zone);
        let anchor_dir = match &anchor {
            Some(anchor) => {
                let dir = tempfile::Builder::new()
                    .prefix("sigillo-dns-")
                    .tempdir()
                    .context("creating a temp dir for the trust anchor")?;
                let path = dir.path().join(TRUST_ANCHOR_FILE);
                std::fs::write(&path, format!("{}\n", anchor.dnskey_line))
                    .with_context(|| format!("writing {}", path.display()))?;
                Some(dir)
            }
            None => None,
        };
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let udp = {
            let (zone, stop, queries) = (zone.clone(), stop.clone(), queries.clone());
            std::thread::Builder::new()
                .name("dns-udp".into())
                .spawn(move || {
                    let mut buf = [0u8; 4096];
                    while !stop.load(Ordering::SeqCst) {
                        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                            continue;
                        };
                        queries.fetch_add(1, Ordering::SeqCst);
                        if let Some(reply) = buf.get(..n).and_then(|q| zone.handle(q, true)) {
                            let _ = socket.send_to(&reply, peer);
                        }
                    }
                })
                .context("spawning the DNS UDP thread")?
        };
        let tcp = {
            let queries = queries.clone();
            ServerCore::start_on("dns-tcp", listener, move |mut conn| {
                let _ = conn.stream.set_read_timeout(Some(Duration::from_secs(10)));
                loop {
                    let mut len = [0u8; 2];
                    if conn.stream.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if conn.stream.read_exact(&mut msg).is_err() {
                        return;
                    }
                    queries.fetch_add(1, Ordering::SeqCst);
                    let Some(reply) = zone.handle(&msg, false) else {
                        continue;
                    };
                    let Ok(rlen) = u16::try_from(reply.len()) else {
                        return;
                    };
                    let mut out = rlen.to_be_bytes().to_vec();
                    out.extend_from_slice(&reply);
                    if conn.stream.write_all(&out).is_err() {
                        return;
                    }
                }
            })?
        };
        Ok(Self {
            addr,
            stop,
            udp: Some(udp),
            queries,
            anchor,
            anchor_dir,
            _tcp: tcp,
        })
    }

    /// Its address, `127.0.0.1:port` unless started with [`DnsServer::start_at`] (UDP and
    /// TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many queries arrived so far (UDP + TCP).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// For a signed zone, its key as a trust anchor line in zone-file syntax
    /// (`lab.test. 3600 IN DNSKEY 257 3 13 …`), the format of hickory's
    /// `TrustAnchors::from_str` and of a trust-anchor file; `None` when unsigned.
    pub fn trust_anchor(&self) -> Option<&str> {
        self.anchor.as_ref().map(|a| a.dnskey_line.as_str())
    }

    /// For a signed zone, a file holding [`DnsServer::trust_anchor`]'s line, for programs
    /// that read trust anchors from a file (hickory's `TrustAnchors::from_file`); it lives
    /// as long as the server.
    pub fn trust_anchor_file(&self) -> Option<PathBuf> {
        self.anchor_dir
            .as_ref()
            .map(|dir| dir.path().join(TRUST_ANCHOR_FILE))
    }

    /// For a signed zone, the DS record a parent would publish for it
    /// (`lab.test. 3600 IN DS <tag> 13 2 <SHA-256>`).
    pub fn ds_record(&self) -> Option<&str> {
        self.anchor.as_ref().map(|a| a.ds_line.as_str())
    }

    /// For a signed zone, the trust anchor as hickory's type, for
    /// `ResolverBuilder::with_trust_anchor`.
    pub fn trust_anchors(&self) -> Option<TrustAnchors> {
        self.trust_anchor()?.parse().ok()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.udp.take() {
            let _ = h.join();
        }
    }
}
