//! A small authoritative DNS server on 127.0.0.1 (UDP and TCP, same free port) serving a zone
//! built in code, for MX/A/AAAA/TXT lookups in tests — with SERVFAIL, silent and null-MX names.
//!
//! Answers: matching records → NOERROR + answers (AA set); the name exists but has no record
//! of that type → NODATA (NOERROR, SOA in authority); unknown name → NXDOMAIN (SOA in
//! authority). Messages are encoded with `hickory-proto`; no recursion, no DNSSEC.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::scripted::ServerCore;

/// Builds the zone a [`DnsServer`] serves. Names may be given with or without the final dot;
/// they are all absolute (`"mx.lab.test"` = `mx.lab.test.`), compared case-insensitively.
#[derive(Clone, Debug)]
pub struct ZoneBuilder {
    origin: Name,
    ttl: u32,
    records: Vec<Record>,
    servfail: HashSet<Name>,
    silent: HashSet<Name>,
    error: Option<String>,
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
            silent: HashSet::new(),
            error,
        }
    }

    /// TTL of the records added after this call.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// Add any record (e.g. a TLSA built with hickory-proto).
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

    /// Every query for `name` (any type) gets SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Self {
        match fqdn(name) {
            Ok(n) => {
                self.servfail.insert(n);
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        self
    }

    /// Queries for `name` are never answered (the client times out).
    pub fn no_answer(mut self, name: &str) -> Self {
        match fqdn(name) {
            Ok(n) => {
                self.silent.insert(n);
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

#[derive(Debug)]
struct Zone {
    origin: Name,
    soa: Record,
    records: Vec<Record>,
    servfail: HashSet<Name>,
    silent: HashSet<Name>,
}

impl Zone {
    fn name_exists(&self, name: &Name) -> bool {
        *name == self.origin || self.records.iter().any(|r| name.zone_of(&r.name))
    }

    /// The response to `query`, or `None` to stay silent.
    fn respond(&self, query: &Message) -> Option<Message> {
        let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
        resp.metadata.message_type = MessageType::Response;
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.queries = query.queries.clone();
        if query.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
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
        if self.servfail.contains(&name) {
            resp.metadata.response_code = ResponseCode::ServFail;
            return Some(resp);
        }
        resp.metadata.authoritative = true;
        let qtype = q.query_type();
        let at_name = self.records.iter().filter(|r| r.name == name);
        let mut answers: Vec<Record> = at_name
            .clone()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if name == self.origin && qtype == RecordType::SOA {
            answers.push(self.soa.clone());
        }
        if answers.is_empty() && qtype != RecordType::CNAME {
            answers.extend(
                at_name
                    .filter(|r| r.record_type() == RecordType::CNAME)
                    .cloned(),
            );
        }
        if !answers.is_empty() {
            resp.answers = answers;
        } else {
            resp.authorities.push(self.soa.clone());
            if !self.name_exists(&name) {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
        }
        Some(resp)
    }

    /// Encode the response for `request_bytes`; for UDP, truncate past the client's size.
    fn handle(&self, request_bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
        let query = match Message::from_vec(request_bytes) {
            Ok(q) => q,
            Err(_) => {
                // Answer FORMERR when at least the id can be read.
                if request_bytes.len() < 2 {
                    return None;
                }
                let id = u16::from_be_bytes([request_bytes[0], request_bytes[1]]);
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

/// A running DNS server on 127.0.0.1 (UDP + TCP on the same port). Stops on drop.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    udp: Option<JoinHandle<()>>,
    queries: Arc<AtomicUsize>,
    _tcp: ServerCore,
}

impl DnsServer {
    /// Serve `zone` on 127.0.0.1:free port.
    pub fn start(zone: ZoneBuilder) -> Result<Self> {
        if let Some(e) = zone.error {
            bail!("invalid zone: {e}");
        }
        let soa_rdata = SOA::new(
            fqdn(&format!("ns.{}", zone.origin))?,
            fqdn(&format!("hostmaster.{}", zone.origin))?,
            1,
            3600,
            600,
            86400,
            5,
        );
        let zone = Arc::new(Zone {
            soa: Record::from_rdata(zone.origin.clone(), 5, RData::SOA(soa_rdata)),
            origin: zone.origin,
            records: zone.records,
            servfail: zone.servfail,
            silent: zone.silent,
        });
        // Same port for UDP and TCP: bind TCP on any free port, then UDP on it; retry if taken.
        let (listener, socket) = (0..50)
            .find_map(|_| {
                let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
                let port = l.local_addr().ok()?.port();
                let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
                Some((l, u))
            })
            .context("could not bind UDP and TCP on the same free port on 127.0.0.1")?;
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
                        if let Some(reply) = zone.handle(&buf[..n], true) {
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
            _tcp: tcp,
        })
    }

    /// `127.0.0.1:port` (UDP and TCP).
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
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.udp.take() {
            let _ = h.join();
        }
    }
}
