//! Writes a realistic Postfix 3.7 `maillog_file` log of a chosen size for the `sigillo report`
//! benchmark, and a JSON sidecar with the true counts, so the bench checks the answer too.
//!
//! ```sh
//! cargo run --release -p sigillo-logs --example gen_postfix_log -- \
//!     --size 1G --out /tmp/maillog [--seed 1] [--start 2026-11-01] [--truth FILE]
//! ```
//!
//! What it simulates (line shapes as captured from Debian 12's Postfix 3.7.11):
//! - an MX receiving on port 25 from a few thousand peers (big providers with several
//!   addresses, small organisations, spam bots as `unknown[IP]`), with a popularity skew, a
//!   day/night rhythm and weekends. Each peer has its own TLS habit (always, never, mixed) and
//!   TLS version (TLSv1.3 with the `key-exchange` suffix, TLSv1.2 and TLSv1 without); some
//!   plaintext senders switch to TLS on a given day, so the share drifts;
//! - `smtpd` processes taken from a pool, each serving up to 100 sessions in a row, so the
//!   lines of concurrent sessions interleave across pids;
//! - sessions with several messages, rejected recipients (`NOQUEUE: reject`), lost
//!   connections, failed handshakes (`SSL_accept error`), and one stripping incident: for one
//!   hour every STARTTLS is rewritten on the way in (`unknown=0/1`, mail in clear);
//! - authenticated submission (`postfix/submission/smtpd`, always TLS), a local application
//!   injecting over SMTP from `localhost[127.0.0.1]`, and `pickup` (both internal);
//! - `cleanup` message-id lines, qmgr `from=` and `removed` lines, `virtual` and LMTP
//!   deliveries, outbound `smtp` deliveries with their TLS lines, cached connections
//!   (`conn_use=N`), greylisting (deferred, then sent on a retry), connection time-outs,
//!   bounces with their non-delivery notices; anvil statistics.
//!
//! The sidecar (`--truth`, default `OUT.truth.json`) holds what was generated, counted by the
//! rules of docs/report-json.md: inbound messages (one per queue id received over SMTP from
//! a non-local peer, submission included), those over TLS, outbound delivery transactions
//! with `status=sent` per relay and those over TLS, the same per recipient domain
//! (`next_hops`, with those over a `Verified`/`Trusted` TLS connection), and the rest.
//! Deterministic for a seed.
//! The file's mtime is set to its last line, so the year of its syslog timestamps is inferred
//! right.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

const DAY_MS: u64 = 86_400_000;
const HOST: &[u8] = b"mx";
const LOCAL_DOMAIN: &[u8] = b"example.net";
/// Sessions per `smtpd` process before it exits (Postfix `max_use`).
const MAX_USE: u16 = 100;
/// The stripping incident: day index (0 = `--start`) and hour (UTC).
const INCIDENT_DAY: u64 = 1;
const INCIDENT_HOUR: u64 = 10;

// ------------------------------------------------------------------------------ arguments

struct Args {
    size: u64,
    out: String,
    truth: Option<String>,
    seed: u64,
    start: (i64, u32, u32),
    peers: u32,
    sessions_per_day: u32,
}

fn usage() -> &'static str {
    "usage: gen_postfix_log --size SIZE[K|M|G] --out FILE [--seed N] [--start YYYY-MM-DD] \
     [--truth FILE] [--peers N] [--sessions-per-day N]"
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let mut it = s.split('-');
    let y = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    let d = it.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d) && it.next().is_none()).then_some((y, m, d))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        size: 0,
        out: String::new(),
        truth: None,
        seed: 1,
        start: (2026, 11, 1),
        peers: 4000,
        sessions_per_day: 150_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .ok_or_else(|| format!("{k} needs a value\n{}", usage()))
        };
        match k.as_str() {
            "--size" => a.size = parse_size(&v()?).ok_or("bad --size")?,
            "--out" => a.out = v()?,
            "--truth" => a.truth = Some(v()?),
            "--seed" => a.seed = v()?.parse().map_err(|_| "bad --seed")?,
            "--start" => a.start = parse_date(&v()?).ok_or("bad --start (YYYY-MM-DD)")?,
            "--peers" => a.peers = v()?.parse().map_err(|_| "bad --peers")?,
            "--sessions-per-day" => {
                a.sessions_per_day = v()?.parse().map_err(|_| "bad --sessions-per-day")?
            }
            "-h" | "--help" => return Err(usage().into()),
            _ => return Err(format!("unknown argument {k}\n{}", usage())),
        }
    }
    if a.size == 0 || a.out.is_empty() {
        return Err(usage().into());
    }
    a.peers = a.peers.max(100);
    a.sessions_per_day = a.sessions_per_day.max(100);
    Ok(a)
}

// ------------------------------------------------------------------------------ randomness

/// xoshiro256** seeded by splitmix64.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }
    fn u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.u64()) * u128::from(n.max(1))) >> 64) as u64
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn f(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }
    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f()).ln()
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const SYL: &[&str] = &[
    "al", "ber", "ca", "dor", "en", "fa", "gil", "ho", "ir", "ju", "ka", "lo", "mar", "ne", "or",
    "pa", "qui", "ro", "sa", "ti", "ul", "ve", "wi", "xa", "yo", "zen", "tor", "lin", "mes",
    "nova",
];
const TLDS: &[&str] = &[
    "com", "com", "com", "net", "org", "de", "fr", "it", "co.uk", "nl", "es", "ch", "at", "se",
    "com.br", "pl", "eu", "io",
];
const FIRST: &[&str] = &[
    "anna", "marco", "giulia", "luca", "sara", "paolo", "elena", "andrea", "chiara", "davide",
    "info", "sales", "noreply", "billing", "support", "news", "hr", "team", "admin", "office",
];

fn word(rng: &mut Rng, syllables: u64) -> String {
    let mut s = String::new();
    for _ in 0..syllables {
        s.push_str(rng.pick(SYL));
    }
    s
}

fn public_ipv4(rng: &mut Rng) -> [u8; 4] {
    loop {
        let a = rng.range(1, 223) as u8;
        if matches!(a, 10 | 127 | 100 | 169 | 172 | 192 | 198 | 203) {
            continue;
        }
        return [
            a,
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.range(1, 254) as u8,
        ];
    }
}

fn ipv4_text(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

// ------------------------------------------------------------------------------ TLS shapes

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Ver {
    V13,
    V12,
    V10,
}

impl Ver {
    fn name(self) -> &'static str {
        match self {
            Ver::V13 => "TLSv1.3",
            Ver::V12 => "TLSv1.2",
            Ver::V10 => "TLSv1",
        }
    }
}

/// `TLSv1.3 with cipher …` up to the end of the line, per version.
const TLS13: &[&str] = &[
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
    "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
    "TLSv1.3 with cipher TLS_CHACHA20_POLY1305_SHA256 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange secp256r1 server-signature RSA-PSS (2048 bits) server-digest SHA256",
];
const TLS13_OUT: &[&str] = &[
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256",
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
    "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature RSA-PSS (4096 bits) server-digest SHA256",
];
const TLS12: &[&str] = &[
    "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
    "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)",
    "TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)",
    "TLSv1.2 with cipher DHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
];
const TLS10: &[&str] = &[
    "TLSv1 with cipher ECDHE-RSA-AES256-SHA (256/256 bits)",
    "TLSv1 with cipher DHE-RSA-AES256-SHA (256/256 bits)",
];

fn tls_text(rng: &mut Rng, v: Ver, outbound: bool) -> &'static str {
    match v {
        Ver::V13 if outbound => rng.pick(TLS13_OUT),
        Ver::V13 => rng.pick(TLS13),
        Ver::V12 => rng.pick(TLS12),
        Ver::V10 => rng.pick(TLS10),
    }
}

// ------------------------------------------------------------------------------ world

#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    Provider,
    Org,
    Bot,
}

/// An inbound peer (one host name and address).
struct Peer {
    kind: PeerKind,
    /// `host[ip]` as logged (`unknown[ip]` without reverse DNS).
    hp: String,
    ip: String,
    /// Logged as `unknown` though it has a name that does not resolve back: a warning first.
    name_mismatch: Option<String>,
    helo: String,
    /// The sender domain in `from=`.
    domain: String,
    p_tls: f64,
    /// From this day on, a plaintext peer uses TLS.
    upgrade_day: u64,
    ver: Ver,
    tls: &'static str,
    /// Untrusted (presents a client certificate) instead of Anonymous.
    client_cert: bool,
}

/// An outbound destination (MX host).
struct Relay {
    /// `host[ip]:25`
    hp: String,
    domain: String,
    tls: bool,
    trust: &'static str,
    ver: Ver,
    tls_text: &'static str,
    down: bool,
}

struct World {
    peers: Vec<Peer>,
    /// Cumulative popularity weights of `peers` (bots separate: they vary by day).
    cum_legit: Vec<(f64, u32)>,
    bots: Vec<u32>,
    relays: Vec<Relay>,
    cum_relays: Vec<f64>,
    users: Vec<String>,
    /// Submission clients: `host[ip]`.
    sub_clients: Vec<String>,
}

fn cumulative(ws: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    ws.map(|w| {
        acc += w;
        acc
    })
    .collect()
}

fn pick_cum(rng: &mut Rng, cum: &[f64]) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.f() * total;
    cum.partition_point(|&c| c <= x).min(cum.len() - 1)
}

fn build_world(rng: &mut Rng, n_peers: u32) -> World {
    let mut peers = Vec::new();
    let mut weights = Vec::new();
    // Big providers: few names, several addresses each, nearly always TLS.
    let providers: &[(&str, &str, Ver, f64)] = &[
        ("google.com", "mail-{}.google.com", Ver::V13, 30.0),
        (
            "outlook.com",
            "mail-{}.outbound.protection.outlook.com",
            Ver::V12,
            22.0,
        ),
        ("yahoo.com", "sonic{}.mail.bf2.yahoo.com", Ver::V13, 6.0),
        (
            "amazonses.com",
            "a{}.smtp-out.amazonses.com",
            Ver::V13,
            12.0,
        ),
        ("sendgrid.net", "o{}.ptr1234.sendgrid.net", Ver::V12, 8.0),
        ("mailchimp.com", "mail{}.atl11.rsgsv.net", Ver::V12, 6.0),
        ("gmx.net", "mout-{}.gmx.net", Ver::V13, 4.0),
        ("libero.it", "smtp-{}.libero.it", Ver::V12, 3.0),
        ("aruba.it", "smtpdh{}.aruba.it", Ver::V12, 3.0),
        ("ovh.net", "{}.mo.ovh.net", Ver::V13, 2.0),
    ];
    let n_provider_hosts = (n_peers / 40).max(10);
    for i in 0..n_provider_hosts {
        let (dom, pat, ver, w) = providers[i as usize % providers.len()];
        let host = pat.replace("{}", &format!("{}{}", word(rng, 1), rng.below(100)));
        let ip = ipv4_text(public_ipv4(rng));
        peers.push(Peer {
            kind: PeerKind::Provider,
            hp: format!("{host}[{ip}]"),
            ip,
            name_mismatch: None,
            helo: host.clone(),
            domain: dom.to_owned(),
            p_tls: 0.995,
            upgrade_day: u64::MAX,
            ver,
            tls: tls_text(rng, ver, false),
            client_cert: rng.chance(0.1),
        });
        weights.push(w / f64::from(n_provider_hosts) * providers.len() as f64);
    }
    // Organisations' own servers: one or two addresses each, their own habit.
    let n_org = n_peers * 2 / 5;
    for _ in 0..n_org {
        let syl = rng.range(2, 3);
        let dom = format!("{}.{}", word(rng, syl), rng.pick(TLDS));
        let host = format!(
            "{}.{dom}",
            rng.pick(&["mail", "mx", "smtp", "mx1", "relay"])
        );
        let v6 = rng.chance(0.08);
        let ip = if v6 {
            format!(
                "2a0{}:{:x}:{:x}::{:x}",
                rng.below(10),
                rng.below(0xffff),
                rng.below(0xffff),
                rng.range(1, 0xfff)
            )
        } else {
            ipv4_text(public_ipv4(rng))
        };
        let habit = rng.f();
        let (p_tls, upgrade_day) = if habit < 0.55 {
            (0.97, u64::MAX)
        } else if habit < 0.85 {
            (
                0.02,
                if rng.chance(0.4) {
                    rng.below(60)
                } else {
                    u64::MAX
                },
            )
        } else {
            (0.5, u64::MAX)
        };
        let r = rng.f();
        let ver = if r < 0.70 {
            Ver::V13
        } else if r < 0.97 {
            Ver::V12
        } else {
            Ver::V10
        };
        let unknown = rng.chance(0.05);
        let hp = if unknown {
            format!("unknown[{ip}]")
        } else {
            format!("{host}[{ip}]")
        };
        peers.push(Peer {
            kind: PeerKind::Org,
            hp,
            ip,
            name_mismatch: unknown.then(|| host.clone()),
            helo: host,
            domain: dom,
            p_tls,
            upgrade_day,
            ver,
            tls: tls_text(rng, ver, false),
            client_cert: rng.chance(0.03),
        });
        // A few busy ones, many quiet ones.
        weights.push(0.2 + rng.exp(1.0) * rng.exp(1.0));
    }
    // Bots and dynamic addresses: many, one or two sessions each, rarely TLS.
    let bots_start = peers.len();
    while peers.len() < n_peers as usize {
        let ipb = public_ipv4(rng);
        let ip = ipv4_text(ipb);
        let named = rng.chance(0.4);
        let hp = if named {
            format!(
                "{}-{}-{}-{}.dyn.{}.{}[{ip}]",
                ipb[0],
                ipb[1],
                ipb[2],
                ipb[3],
                word(rng, 2),
                rng.pick(TLDS)
            )
        } else {
            format!("unknown[{ip}]")
        };
        let ver = if rng.chance(0.8) { Ver::V12 } else { Ver::V13 };
        peers.push(Peer {
            kind: PeerKind::Bot,
            hp,
            ip: ip.clone(),
            name_mismatch: None,
            helo: format!("[{ip}]"),
            domain: format!("{}.{}", word(rng, 2), rng.pick(TLDS)),
            p_tls: 0.1,
            upgrade_day: u64::MAX,
            ver,
            tls: tls_text(rng, ver, false),
            client_cert: false,
        });
    }
    let legit_w = cumulative(weights.iter().copied());
    let cum_legit = legit_w.into_iter().zip(0u32..).collect::<Vec<_>>();
    let bots = (bots_start as u32..peers.len() as u32).collect();

    let mut relays = Vec::new();
    let mut rw = Vec::new();
    let big_out: &[(&str, &str, f64)] = &[
        ("gmail.com", "gmail-smtp-in.l.google.com", 30.0),
        (
            "outlook.com",
            "outlook-com.olc.protection.outlook.com",
            15.0,
        ),
        ("yahoo.com", "mta7.am0.yahoodns.net", 5.0),
        ("libero.it", "smtp-in.libero.it", 4.0),
        ("icloud.com", "mx01.mail.icloud.com", 4.0),
    ];
    for (dom, host, w) in big_out {
        let ip = ipv4_text(public_ipv4(rng));
        relays.push(Relay {
            hp: format!("{host}[{ip}]:25"),
            domain: (*dom).to_owned(),
            tls: true,
            trust: "Trusted",
            ver: Ver::V13,
            tls_text: tls_text(rng, Ver::V13, true),
            down: false,
        });
        rw.push(*w);
    }
    for _ in 0..600 {
        let syl = rng.range(2, 3);
        let dom = format!("{}.{}", word(rng, syl), rng.pick(TLDS));
        let ip = ipv4_text(public_ipv4(rng));
        let ver = if rng.chance(0.75) { Ver::V13 } else { Ver::V12 };
        let t = rng.f();
        relays.push(Relay {
            hp: format!("mx.{dom}[{ip}]:25"),
            domain: dom,
            tls: rng.chance(0.9),
            trust: if t < 0.05 {
                "Verified"
            } else if t < 0.6 {
                "Trusted"
            } else {
                "Untrusted"
            },
            ver,
            tls_text: tls_text(rng, ver, true),
            down: rng.chance(0.02),
        });
        rw.push(0.1 + rng.exp(0.3));
    }
    let users = (0..400)
        .map(|i| {
            format!(
                "{}{}",
                rng.pick(FIRST),
                if i < 20 { String::new() } else { i.to_string() }
            )
        })
        .collect();
    let sub_clients = (0..300)
        .map(|_| {
            let ip = public_ipv4(rng);
            format!(
                "host-{}-{}-{}-{}.{}.{}[{}]",
                ip[0],
                ip[1],
                ip[2],
                ip[3],
                rng.pick(&["dsl", "cable", "fiber", "mobile"]),
                rng.pick(&["isp-one.it", "fastnet.de", "telco.fr", "provider.net"]),
                ipv4_text(ip)
            )
        })
        .collect();
    World {
        peers,
        cum_legit,
        bots,
        relays,
        cum_relays: cumulative(rw.into_iter()),
        users,
        sub_clients,
    }
}

// ------------------------------------------------------------------------------ output

/// Builds lines into a big buffer and writes it in large chunks; caches the timestamp text.
struct Out {
    file: File,
    buf: Vec<u8>,
    bytes: u64,
    lines: u64,
    start_unix: i64,
    ts_sec: i64,
    ts: [u8; 15],
    last_unix: i64,
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

impl Out {
    fn begin(&mut self, t_ms: u64, prog: &[u8], pid: u32) {
        let sec = self.start_unix + (t_ms / 1000) as i64;
        if sec != self.ts_sec {
            self.ts_sec = sec;
            let (_, m, d) = civil_from_days(sec.div_euclid(86_400));
            let s = sec.rem_euclid(86_400);
            let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
            self.ts[..3].copy_from_slice(MONTHS[(m - 1) as usize]);
            let two = |x: i64| [b'0' + (x / 10) as u8, b'0' + (x % 10) as u8];
            self.ts[3] = b' ';
            self.ts[4..6].copy_from_slice(&two(i64::from(d)));
            self.ts[6] = b' ';
            self.ts[7..9].copy_from_slice(&two(h));
            self.ts[9] = b':';
            self.ts[10..12].copy_from_slice(&two(mi));
            self.ts[12] = b':';
            self.ts[13..15].copy_from_slice(&two(se));
        }
        self.last_unix = sec;
        self.buf.extend_from_slice(&self.ts);
        self.buf.push(b' ');
        self.buf.extend_from_slice(HOST);
        self.buf.push(b' ');
        self.buf.extend_from_slice(prog);
        self.buf.push(b'[');
        self.u(u64::from(pid));
        self.buf.extend_from_slice(b"]: ");
    }
    fn s(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn b(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
    }
    fn u(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&tmp[i..]);
    }
    /// Hundredths as `12.34` (Postfix delays).
    fn centi(&mut self, v: u64) {
        self.u(v / 100);
        self.buf.push(b'.');
        self.buf.push(b'0' + (v / 10 % 10) as u8);
        self.buf.push(b'0' + (v % 10) as u8);
    }
    fn qid(&mut self, q: Qid) {
        self.buf.extend_from_slice(&q.0);
    }
    fn end(&mut self) -> std::io::Result<()> {
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= 4 << 20 {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
    fn written(&self) -> u64 {
        self.bytes + self.buf.len() as u64
    }
}

/// Days since 1970-01-01 of a date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// ------------------------------------------------------------------------------ truth

#[derive(Default)]
struct Dir {
    messages: u64,
    tls_messages: u64,
    plain_messages: u64,
    recipients: u64,
    tls_recipients: u64,
    connections: u64,
    tls_connections: u64,
    deferred: u64,
    bounced: u64,
    versions: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
struct Truth {
    inbound: Dir,
    outbound: Dir,
    internal_inbound_messages: u64,
    internal_outbound_messages: u64,
    submission_messages: u64,
    stripped_sessions: u64,
    stripped_messages: u64,
    starttls_failures: u64,
    rejected_sessions: u64,
    bounce_notices: u64,
    outbound_conn_reuse: u64,
    daily: BTreeMap<u64, [u64; 4]>,
    peers_seen: Vec<bool>,
    /// Delivered outbound messages per recipient domain: [messages, over TLS, over TLS with
    /// a `Verified` or `Trusted` certificate].
    next_hops: BTreeMap<String, [u64; 3]>,
}

impl Truth {
    fn message(&mut self, outbound: bool, day: u64, tls: Option<Ver>, rcpts: u64) {
        let d = if outbound {
            &mut self.outbound
        } else {
            &mut self.inbound
        };
        d.messages += 1;
        d.recipients += rcpts;
        match tls {
            Some(v) => {
                d.tls_messages += 1;
                d.tls_recipients += rcpts;
                *d.versions.entry(v.name()).or_default() += 1;
            }
            None => d.plain_messages += 1,
        }
        let e = self.daily.entry(day).or_default();
        let o = if outbound { 2 } else { 0 };
        e[o] += 1;
        e[o + 1] += u64::from(tls.is_some());
    }

    fn next_hop(&mut self, relay: &Relay) {
        let e = match self.next_hops.get_mut(&relay.domain) {
            Some(e) => e,
            None => self.next_hops.entry(relay.domain.clone()).or_default(),
        };
        e[0] += 1;
        e[1] += u64::from(relay.tls);
        e[2] += u64::from(relay.tls && matches!(relay.trust, "Verified" | "Trusted"));
    }
}

fn dir_json(d: &Dir) -> String {
    let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let vers = d
        .versions
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{{\"messages\": {}, \"tls_messages\": {}, \"plain_messages\": {}, \"tls_share\": {:.4}, \
         \"recipients\": {}, \"tls_recipients\": {}, \"connections\": {}, \"tls_connections\": {}, \
         \"deferred\": {}, \"bounced\": {}, \"versions\": {{{vers}}}}}",
        d.messages,
        d.tls_messages,
        d.plain_messages,
        share(d.tls_messages, d.messages),
        d.recipients,
        d.tls_recipients,
        d.connections,
        d.tls_connections,
        d.deferred,
        d.bounced,
    )
}

// ------------------------------------------------------------------------------ processes

#[derive(Clone, Copy, PartialEq, Eq)]
struct Qid([u8; 11]);

struct Pids {
    next: u32,
}

impl Pids {
    fn alloc(&mut self, rng: &mut Rng) -> u32 {
        self.next += 1 + rng.below(6) as u32;
        if self.next > 4_194_000 {
            self.next = 300;
        }
        self.next
    }
}

/// Idle processes of one service; the last one freed serves next.
struct Pool {
    idle: Vec<(u32, u16)>,
    max_use: u16,
}

impl Pool {
    fn new(max_use: u16) -> Self {
        Pool {
            idle: Vec::new(),
            max_use,
        }
    }
    fn take(&mut self, pids: &mut Pids, rng: &mut Rng) -> (u32, u16) {
        self.idle.pop().unwrap_or_else(|| (pids.alloc(rng), 0))
    }
    fn give(&mut self, p: (u32, u16)) {
        if p.1 + 1 < self.max_use {
            self.idle.push((p.0, p.1 + 1));
        }
    }
}

/// A few long-lived processes (cleanup, virtual, …): one is picked per use; each is
/// replaced after a while.
struct Rotating {
    pids: Vec<u32>,
    uses: u32,
}

impl Rotating {
    fn get(&mut self, pids: &mut Pids, rng: &mut Rng, n: usize) -> u32 {
        self.uses += 1;
        if self.pids.len() < n || self.uses.is_multiple_of(5000) {
            let p = pids.alloc(rng);
            if self.pids.len() < n {
                self.pids.push(p);
            } else {
                let i = rng.below(n as u64) as usize;
                self.pids[i] = p;
            }
        }
        rng.pick(&self.pids)
    }
}

// ------------------------------------------------------------------------------ actors

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Port 25 from an Internet peer.
    Mx(u32),
    /// `postfix/submission/smtpd` from a user's address.
    Submission(u32),
    /// A local application over SMTP from localhost[127.0.0.1] (internal).
    Localhost,
    /// `pickup` (internal, not SMTP).
    Pickup,
}

#[derive(Clone, Copy)]
enum Dest {
    Local(u8),
    Relay(u32, u8),
}

impl Dest {
    fn rcpts(self) -> u8 {
        match self {
            Dest::Local(n) | Dest::Relay(_, n) => n,
        }
    }
}

struct Session {
    kind: Kind,
    proc: (u32, u16),
    stage: u8,
    tls: Option<Ver>,
    tls_text: &'static str,
    stripped: bool,
    tls_fails: bool,
    lost: bool,
    lost_at_connect: bool,
    rejected: bool,
    msgs: Vec<Dest>,
    i: usize,
    qid: Qid,
    sender: usize,
    /// Messages queued for one relay, delivered over one cached connection.
    batch: Vec<(Qid, u8)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Sent,
    Deferred,
    Bounced,
}

struct OutJob {
    relay: u32,
    msgs: Vec<(Qid, u8, Fate)>,
    proc: (u32, u16),
    stage: u8,
    i: usize,
    j: u8,
    attempt: u8,
    queued_ms: u64,
}

struct LocalJob {
    qid: Qid,
    rcpts: u8,
    j: u8,
    /// 0 virtual, 1 LMTP, 2 local.
    agent: u8,
    /// A non-delivery notice to write first (cleanup + qmgr lines).
    notice: bool,
    stage: u8,
    pid: u32,
    uses: u16,
}

enum Actor {
    Arrivals,
    Stats,
    Session(Box<Session>),
    Out(Box<OutJob>),
    Local(Box<LocalJob>),
}

struct Gen {
    rng: Rng,
    world: Rc<World>,
    out: Out,
    truth: Truth,
    pids: Pids,
    smtpd: Pool,
    submission: Pool,
    smtp: Pool,
    cleanup: Rotating,
    virt: Pool,
    lmtp: Pool,
    local: Pool,
    bounce: Rotating,
    qmgr: u32,
    pickup: u32,
    anvil: u32,
    qid_counter: u32,
    sessions_per_day: f64,
    stopping: bool,
    /// (time, sequence, slot)
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    slots: Vec<Option<Actor>>,
    free: Vec<u32>,
    seq: u64,
    now: u64,
}

/// Relative arrival rate per hour of the day (UTC).
const DIURNAL: [f64; 24] = [
    0.35, 0.3, 0.28, 0.28, 0.3, 0.4, 0.6, 0.9, 1.3, 1.5, 1.6, 1.6, 1.4, 1.4, 1.5, 1.5, 1.4, 1.3,
    1.1, 0.9, 0.8, 0.7, 0.55, 0.45,
];

impl Gen {
    fn schedule(&mut self, at: u64, a: Actor) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(a);
                s
            }
            None => {
                self.slots.push(Some(a));
                (self.slots.len() - 1) as u32
            }
        };
        self.seq += 1;
        self.heap
            .push(Reverse((at, (self.seq << 24) | u64::from(slot))));
    }

    fn new_qid(&mut self) -> Qid {
        // Postfix short ids: microseconds in the first 5 hex digits, the queue file's inode
        // after; a bijection of a counter keeps them unique (up to 16 M messages).
        self.qid_counter = self.qid_counter.wrapping_add(1);
        let usec = ((self.now % 1000) * 1000 + self.rng.below(1000)) as u32 & 0xF_FFFF;
        let mut ino = self.qid_counter.wrapping_mul(0x9E_3779) & 0xFF_FFFF;
        ino ^= ino >> 11;
        ino = ino.wrapping_mul(0x2F_A4B5) & 0xFF_FFFF;
        let v = (u64::from(usec) << 24) | u64::from(ino);
        let mut q = [0u8; 11];
        for (k, c) in q.iter_mut().enumerate() {
            let nib = (v >> (4 * (10 - k))) & 0xF;
            *c = b"0123456789ABCDEF"[nib as usize];
        }
        Qid(q)
    }

    fn day(&self) -> u64 {
        self.now / DAY_MS
    }

    fn run(&mut self, target: u64) -> std::io::Result<()> {
        self.schedule(0, Actor::Arrivals);
        self.schedule(600_000, Actor::Stats);
        while let Some(Reverse((at, key))) = self.heap.pop() {
            self.now = at;
            let slot = (key & 0xFF_FFFF) as usize;
            let Some(actor) = self.slots[slot].take() else {
                continue;
            };
            self.free.push(slot as u32);
            if !self.stopping && self.out.written() >= target {
                self.stopping = true;
            }
            match actor {
                Actor::Arrivals => {
                    if !self.stopping {
                        self.arrive();
                        let h = (self.now % DAY_MS / 3_600_000) as usize;
                        let wd = (self.day() + 3) % 7; // 2026-11-01 is a Sunday: 0 = Thursday…
                        let weekend = if wd == 2 || wd == 3 { 0.55 } else { 1.0 };
                        let rate = self.sessions_per_day * DIURNAL[h] * weekend / DAY_MS as f64;
                        let dt = self.rng.exp(1.0 / rate).max(1.0) as u64;
                        self.schedule(self.now + dt, Actor::Arrivals);
                    }
                }
                Actor::Stats => {
                    if !self.stopping {
                        self.stats()?;
                        self.schedule(self.now + 600_000, Actor::Stats);
                    }
                }
                Actor::Session(mut s) => {
                    if let Some(dt) = self.session(&mut s)? {
                        self.schedule(self.now + dt, Actor::Session(s));
                    }
                }
                Actor::Out(mut j) => {
                    if let Some(dt) = self.outjob(&mut j)? {
                        self.schedule(self.now + dt, Actor::Out(j));
                    }
                }
                Actor::Local(mut j) => {
                    if let Some(dt) = self.localjob(&mut j)? {
                        self.schedule(self.now + dt, Actor::Local(j));
                    }
                }
            }
        }
        self.out.flush()
    }

    fn stats(&mut self) -> std::io::Result<()> {
        let world = Rc::clone(&self.world);
        let w = &world;
        let p = &w.peers[self.rng.below(w.peers.len() as u64) as usize];
        let ip = p.ip.clone();
        let (n, cnt) = (self.rng.range(2, 30), self.rng.range(2, 40));
        let t = self.now;
        let anvil = self.anvil;
        for (what, v) in [("max connection rate ", n), ("max connection count ", cnt)] {
            self.out.begin(t, b"postfix/anvil", anvil);
            self.out.s("statistics: ");
            self.out.s(what);
            self.out.u(v);
            if what.ends_with("rate ") {
                self.out.s("/60s");
            }
            self.out.s(" for (smtp:");
            self.out.s(&ip);
            self.out.s(") at ");
            let ts = self.out.ts;
            self.out.b(&ts);
            self.out.end()?;
        }
        self.out.begin(t, b"postfix/anvil", anvil);
        self.out.s("statistics: max cache size ");
        self.out.u(self.rng.range(3, 60));
        self.out.s(" at ");
        let ts = self.out.ts;
        self.out.b(&ts);
        self.out.end()
    }

    fn arrive(&mut self) {
        let world = Rc::clone(&self.world);
        let r = self.rng.f();
        let day = self.day();
        let wd = (day + 3) % 7;
        // Spam is steadier than people: a larger part of the traffic at weekends, and it
        // varies from day to day.
        let bot_share = 0.12
            + 0.10 * ((day * 7919 % 13) as f64 / 13.0)
            + if wd == 2 || wd == 3 { 0.1 } else { 0.0 };
        let kind = if r < 0.80 {
            let peer = if self.rng.chance(bot_share) {
                self.rng.pick(&world.bots)
            } else {
                let total = world.cum_legit.last().map_or(0.0, |c| c.0);
                let x = self.rng.f() * total;
                let k = self
                    .world
                    .cum_legit
                    .partition_point(|c| c.0 <= x)
                    .min(world.cum_legit.len() - 1);
                world.cum_legit[k].1
            };
            Kind::Mx(peer)
        } else if r < 0.90 {
            Kind::Submission(self.rng.below(world.sub_clients.len() as u64) as u32)
        } else if r < 0.95 {
            Kind::Localhost
        } else {
            Kind::Pickup
        };
        let mut s = Session {
            kind,
            proc: (0, 0),
            stage: 0,
            tls: None,
            tls_text: "",
            stripped: false,
            tls_fails: false,
            lost: false,
            lost_at_connect: false,
            rejected: false,
            msgs: Vec::new(),
            i: 0,
            qid: Qid([b'0'; 11]),
            sender: self.rng.below(world.users.len() as u64) as usize,
            batch: Vec::new(),
        };
        let rng = &mut self.rng;
        let rcpts = |rng: &mut Rng| -> u8 {
            let x = rng.f();
            if x < 0.75 {
                1
            } else if x < 0.9 {
                2
            } else {
                rng.range(3, 5) as u8
            }
        };
        match kind {
            Kind::Mx(p) => {
                let peer = &world.peers[p as usize];
                self.truth.peers_seen[p as usize] = true;
                let p_tls = if day >= peer.upgrade_day {
                    0.97
                } else {
                    peer.p_tls
                };
                let hour = self.now % DAY_MS / 3_600_000;
                let tls = rng.chance(p_tls);
                if tls && day == INCIDENT_DAY && hour == INCIDENT_HOUR {
                    s.stripped = true;
                } else if tls && peer.kind == PeerKind::Bot && rng.chance(0.15) {
                    s.tls_fails = true;
                } else if tls {
                    s.tls = Some(peer.ver);
                    s.tls_text = peer.tls;
                }
                let is_bot = peer.kind == PeerKind::Bot;
                if s.tls_fails {
                    // The session ends at the failed handshake.
                } else if rng.chance(if is_bot { 0.10 } else { 0.02 }) {
                    // Gone before STARTTLS: no TLS, no mail.
                    s.lost = true;
                    s.lost_at_connect = rng.chance(0.4);
                    s.tls = None;
                    s.stripped = false;
                } else if is_bot && rng.chance(0.4) {
                    s.rejected = true;
                } else {
                    let n = if !is_bot && rng.chance(0.12) {
                        rng.range(2, 4)
                    } else {
                        1
                    };
                    for _ in 0..n {
                        // A few are forwarded outside (aliases to a mailbox elsewhere).
                        let d = if rng.chance(0.03) {
                            Dest::Relay(pick_cum(rng, &world.cum_relays) as u32, 1)
                        } else {
                            Dest::Local(rcpts(rng))
                        };
                        s.msgs.push(d);
                    }
                }
            }
            Kind::Submission(_) => {
                s.tls = Some(Ver::V13);
                s.tls_text = TLS13[0];
                let n = if rng.chance(0.25) { rng.range(2, 4) } else { 1 };
                let mut last = None;
                for _ in 0..n {
                    let d = if rng.chance(0.3) {
                        Dest::Local(rcpts(rng))
                    } else {
                        // Often several messages to the same correspondent in a row.
                        let r = match last {
                            Some(r) if rng.chance(0.6) => r,
                            _ => pick_cum(rng, &world.cum_relays) as u32,
                        };
                        last = Some(r);
                        Dest::Relay(r, if rng.chance(0.85) { 1 } else { 2 })
                    };
                    s.msgs.push(d);
                }
            }
            Kind::Localhost => {
                let n = rng.range(1, 3);
                let r = pick_cum(rng, &world.cum_relays) as u32;
                for _ in 0..n {
                    s.msgs.push(if rng.chance(0.5) {
                        Dest::Relay(r, 1)
                    } else {
                        Dest::Local(1)
                    });
                }
            }
            Kind::Pickup => s.msgs.push(if rng.chance(0.7) {
                Dest::Local(1)
            } else {
                Dest::Relay(pick_cum(rng, &world.cum_relays) as u32, 1)
            }),
        }
        self.schedule(self.now, Actor::Session(Box::new(s)));
    }

    /// `HOST[IP]` of a session's client.
    fn client(world: &World, k: Kind) -> &str {
        match k {
            Kind::Mx(p) => &world.peers[p as usize].hp,
            Kind::Submission(c) => &world.sub_clients[c as usize],
            Kind::Localhost | Kind::Pickup => "localhost[127.0.0.1]",
        }
    }

    fn prog(k: Kind) -> &'static [u8] {
        match k {
            Kind::Submission(_) => b"postfix/submission/smtpd",
            Kind::Pickup => b"postfix/pickup",
            _ => b"postfix/smtpd",
        }
    }

    /// One line of a session; the delay to its next line, or `None` when it is over.
    fn session(&mut self, s: &mut Session) -> std::io::Result<Option<u64>> {
        let world = Rc::clone(&self.world);
        const CONNECT: u8 = 0;
        const TLS: u8 = 1;
        const MSG: u8 = 2;
        const CLEANUP: u8 = 3;
        const QMGR: u8 = 4;
        const BYE: u8 = 5;
        const LOST: u8 = 6;
        const TLSFAIL: u8 = 7;
        const TLSFAIL2: u8 = 8;
        const DISCONNECT: u8 = 9;
        const WARN: u8 = 10;
        let t = self.now;
        let k = s.kind;
        loop {
            match s.stage {
                CONNECT => {
                    if k == Kind::Pickup {
                        s.proc = (self.pickup, 0);
                        s.stage = MSG;
                        continue;
                    }
                    s.proc = match k {
                        Kind::Submission(_) => self.submission.take(&mut self.pids, &mut self.rng),
                        _ => self.smtpd.take(&mut self.pids, &mut self.rng),
                    };
                    if let Kind::Mx(p) = k
                        && let Some(name) = &world.peers[p as usize].name_mismatch
                    {
                        let ip = &world.peers[p as usize].ip;
                        self.out.begin(t, Self::prog(k), s.proc.0);
                        self.out.s("warning: hostname ");
                        self.out.s(name);
                        self.out.s(" does not resolve to address ");
                        self.out.s(ip);
                        self.out.s(": Name or service not known");
                        self.out.end()?;
                        s.stage = WARN;
                        return Ok(Some(1));
                    }
                    s.stage = WARN;
                }
                WARN => {
                    self.out.begin(t, Self::prog(k), s.proc.0);
                    self.out.s("connect from ");
                    self.out.s(Self::client(&world, k));
                    self.out.end()?;
                    s.stage = TLS;
                    return Ok(Some(self.rng.range(20, 400)));
                }
                TLS => {
                    if s.tls_fails {
                        s.stage = TLSFAIL;
                        continue;
                    }
                    if s.lost {
                        s.stage = LOST;
                        continue;
                    }
                    s.stage = MSG;
                    if s.tls.is_some() {
                        let client_cert =
                            matches!(k, Kind::Mx(p) if world.peers[p as usize].client_cert);
                        self.out.begin(t, Self::prog(k), s.proc.0);
                        self.out.s(if client_cert {
                            "Untrusted"
                        } else {
                            "Anonymous"
                        });
                        self.out.s(" TLS connection established from ");
                        self.out.s(Self::client(&world, k));
                        self.out.s(": ");
                        self.out.s(s.tls_text);
                        self.out.end()?;
                        return Ok(Some(self.rng.range(30, 500)));
                    }
                }
                MSG => {
                    if s.rejected {
                        let p = match k {
                            Kind::Mx(p) => &world.peers[p as usize],
                            _ => unreachable!("only MX sessions are rejected"),
                        };
                        let user = &world.users[s.sender];
                        self.out.begin(t, Self::prog(k), s.proc.0);
                        self.out.s("NOQUEUE: reject: RCPT from ");
                        self.out.s(&p.hp);
                        self.out.s(": 554 5.7.1 Service unavailable; Client host [");
                        self.out.s(&p.ip);
                        self.out.s("] blocked using zen.spamhaus.org; from=<");
                        self.out.s(rng_local(&p.domain, user));
                        self.out.s("@");
                        self.out.s(&p.domain);
                        self.out.s("> to=<");
                        self.out.s(user);
                        self.out.s("@example.net> proto=ESMTP helo=<");
                        self.out.s(&p.helo);
                        self.out.s(">");
                        self.out.end()?;
                        self.truth.rejected_sessions += 1;
                        s.stage = DISCONNECT;
                        return Ok(Some(self.rng.range(5, 200)));
                    }
                    if s.i >= s.msgs.len() {
                        s.stage = BYE;
                        continue;
                    }
                    s.qid = self.new_qid();
                    self.out.begin(t, Self::prog(k), s.proc.0);
                    self.out.qid(s.qid);
                    if k == Kind::Pickup {
                        self.out.s(": uid=");
                        let uid = if s.sender.is_multiple_of(3) { 0 } else { 33 };
                        self.out.u(uid);
                        self.out.s(if uid == 0 {
                            " from=<root>"
                        } else {
                            " from=<www-data>"
                        });
                    } else {
                        self.out.s(": client=");
                        self.out.s(Self::client(&world, k));
                        if let Kind::Submission(_) = k {
                            self.out.s(", sasl_method=PLAIN, sasl_username=");
                            self.out.s(&world.users[s.sender]);
                            self.out.b(b"@");
                            self.out.b(LOCAL_DOMAIN);
                        }
                    }
                    self.out.end()?;
                    s.stage = CLEANUP;
                    return Ok(Some(self.rng.range(2, 400)));
                }
                CLEANUP => {
                    let pid = self.cleanup.get(&mut self.pids, &mut self.rng, 6);
                    self.out.begin(t, b"postfix/cleanup", pid);
                    self.out.qid(s.qid);
                    self.out.s(": message-id=<");
                    let mid = self.rng.u64();
                    self.hex(mid);
                    self.out.s("@");
                    match k {
                        Kind::Mx(p) => {
                            let d = &world.peers[p as usize].domain;
                            self.out.s(d);
                        }
                        _ => self.out.b(b"mx.example.net"),
                    }
                    self.out.s(">");
                    self.out.end()?;
                    s.stage = QMGR;
                    return Ok(Some(
                        self.rng.range(100, 3000) + self.rng.exp(2000.0) as u64,
                    ));
                }
                QMGR => {
                    let dest = s.msgs[s.i];
                    let n = u64::from(dest.rcpts());
                    let size = 900 + self.rng.exp(20_000.0) as u64;
                    self.out.begin(t, b"postfix/qmgr", self.qmgr);
                    self.out.qid(s.qid);
                    self.out.s(": from=<");
                    match k {
                        Kind::Mx(p) => {
                            let pe = &world.peers[p as usize];
                            self.out.s(rng_local(&pe.domain, &world.users[s.sender]));
                            self.out.s("@");
                            self.out.s(&pe.domain);
                        }
                        Kind::Pickup => {
                            self.out.s(if s.sender.is_multiple_of(3) {
                                "root"
                            } else {
                                "www-data"
                            });
                            self.out.s("@mx.example.net");
                        }
                        _ => {
                            self.out.s(&world.users[s.sender]);
                            self.out.s("@example.net");
                        }
                    }
                    self.out.s(">, size=");
                    self.out.u(size);
                    self.out.s(", nrcpt=");
                    self.out.u(n);
                    self.out.s(" (queue active)");
                    self.out.end()?;
                    let day = self.day();
                    match k {
                        Kind::Mx(_) | Kind::Submission(_) => {
                            self.truth.message(false, day, s.tls, n);
                            if matches!(k, Kind::Submission(_)) {
                                self.truth.submission_messages += 1;
                            }
                            if s.stripped {
                                self.truth.stripped_messages += 1;
                            }
                        }
                        _ => self.truth.internal_inbound_messages += 1,
                    }
                    // Delivery.
                    match dest {
                        Dest::Local(r) => {
                            let agent = if matches!(k, Kind::Pickup) {
                                2
                            } else {
                                self.rng.below(2) as u8
                            };
                            let j = LocalJob {
                                qid: s.qid,
                                rcpts: r,
                                j: 0,
                                agent,
                                notice: false,
                                stage: 0,
                                pid: 0,
                                uses: 0,
                            };
                            let at = self.now + self.rng.range(5, 300);
                            self.schedule(at, Actor::Local(Box::new(j)));
                        }
                        Dest::Relay(r, n) => {
                            s.batch.push((s.qid, n));
                            let next_same =
                                matches!(s.msgs.get(s.i + 1), Some(Dest::Relay(r2, _)) if *r2 == r);
                            if !next_same || s.batch.len() >= 3 {
                                let fate = |rng: &mut Rng| {
                                    let x = rng.f();
                                    if x < 0.04 {
                                        Fate::Deferred
                                    } else if x < 0.05 {
                                        Fate::Bounced
                                    } else {
                                        Fate::Sent
                                    }
                                };
                                let msgs = s
                                    .batch
                                    .drain(..)
                                    .map(|(q, n)| (q, n, fate(&mut self.rng)))
                                    .collect();
                                let j = OutJob {
                                    relay: r,
                                    msgs,
                                    proc: (0, 0),
                                    stage: 0,
                                    i: 0,
                                    j: 0,
                                    attempt: 0,
                                    queued_ms: self.now,
                                };
                                let at = self.now + self.rng.range(10, 400);
                                self.schedule(at, Actor::Out(Box::new(j)));
                            }
                        }
                    }
                    s.i += 1;
                    s.stage = MSG;
                    if k == Kind::Pickup {
                        return Ok(None);
                    }
                    return Ok(Some(self.rng.range(20, 1500)));
                }
                LOST => {
                    self.out.begin(t, Self::prog(k), s.proc.0);
                    self.out.s(if s.lost_at_connect {
                        "lost connection after CONNECT from "
                    } else {
                        "lost connection after EHLO from "
                    });
                    self.out.s(Self::client(&world, k));
                    self.out.end()?;
                    s.stage = DISCONNECT;
                    return Ok(Some(1));
                }
                TLSFAIL => {
                    self.out.begin(t, Self::prog(k), s.proc.0);
                    self.out.s("SSL_accept error from ");
                    self.out.s(Self::client(&world, k));
                    self.out.s(": -1");
                    self.out.end()?;
                    self.truth.starttls_failures += 1;
                    s.stage = TLSFAIL2;
                    return Ok(Some(0));
                }
                TLSFAIL2 => {
                    self.out.begin(t, Self::prog(k), s.proc.0);
                    self.out.s("warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while reading:../ssl/record/rec_layer_s3.c:309:");
                    self.out.end()?;
                    self.out.begin(t, Self::prog(k), s.proc.0);
                    self.out.s("lost connection after STARTTLS from ");
                    self.out.s(Self::client(&world, k));
                    self.out.end()?;
                    s.stage = DISCONNECT;
                    return Ok(Some(1));
                }
                BYE | DISCONNECT => {
                    if k == Kind::Pickup {
                        return Ok(None);
                    }
                    self.disconnect(s)?;
                    return Ok(None);
                }
                _ => unreachable!("no such stage"),
            }
        }
    }

    fn disconnect(&mut self, s: &mut Session) -> std::io::Result<()> {
        let world = Rc::clone(&self.world);
        let k = s.kind;
        let t = self.now;
        self.out.begin(t, Self::prog(k), s.proc.0);
        self.out.s("disconnect from ");
        self.out.s(Self::client(&world, k));
        let mut ok = 0u64;
        let mut all = 0u64;
        let mut counter = |out: &mut Out, name: &str, good: u64, total: u64| {
            if total == 0 {
                return;
            }
            out.s(" ");
            out.s(name);
            out.s("=");
            out.u(good);
            if good != total {
                out.s("/");
                out.u(total);
            }
            ok += good;
            all += total;
        };
        if !s.lost_at_connect {
            let e = if s.tls.is_some() { 2 } else { 1 };
            counter(&mut self.out, "ehlo", e, e);
        }
        if s.tls.is_some() {
            counter(&mut self.out, "starttls", 1, 1);
        }
        if s.tls_fails {
            counter(&mut self.out, "starttls", 0, 1);
        }
        if matches!(k, Kind::Submission(_)) {
            counter(&mut self.out, "auth", 1, 1);
        }
        let n = s.msgs.len() as u64;
        let r: u64 = s.msgs.iter().map(|d| u64::from(d.rcpts())).sum();
        if s.rejected {
            counter(&mut self.out, "mail", 1, 1);
            counter(&mut self.out, "rcpt", 0, 1);
        } else {
            counter(&mut self.out, "mail", n, n);
            counter(&mut self.out, "rcpt", r, r);
            counter(&mut self.out, "data", n, n);
        }
        if !s.lost && !s.tls_fails {
            counter(&mut self.out, "quit", 1, 1);
        }
        if s.stripped {
            counter(&mut self.out, "unknown", 0, 1);
        }
        self.out.s(" commands=");
        self.out.u(ok);
        if ok != all {
            self.out.s("/");
            self.out.u(all);
        }
        self.out.end()?;
        match k {
            Kind::Mx(_) | Kind::Submission(_) => {
                self.truth.inbound.connections += 1;
                self.truth.inbound.tls_connections += u64::from(s.tls.is_some());
                self.truth.stripped_sessions += u64::from(s.stripped);
            }
            _ => {}
        }
        match k {
            Kind::Submission(_) => self.submission.give(s.proc),
            _ => self.smtpd.give(s.proc),
        }
        Ok(())
    }

    fn hex(&mut self, v: u64) {
        let mut q = [0u8; 16];
        for (k, c) in q.iter_mut().enumerate() {
            *c = b"0123456789abcdef"[((v >> (4 * (15 - k))) & 0xF) as usize];
        }
        self.out.b(&q);
    }

    fn removed(&mut self, q: Qid) -> std::io::Result<()> {
        self.out.begin(self.now, b"postfix/qmgr", self.qmgr);
        self.out.qid(q);
        self.out.s(": removed");
        self.out.end()
    }

    fn outjob(&mut self, j: &mut OutJob) -> std::io::Result<Option<u64>> {
        let world = Rc::clone(&self.world);
        let t = self.now;
        let relay = &world.relays[j.relay as usize];
        // A relay that is down answers nothing: time-outs, then a retry that gets through
        // (it came back).
        let down = relay.down && j.attempt == 0;
        match j.stage {
            0 => {
                j.proc = self.smtp.take(&mut self.pids, &mut self.rng);
                j.stage = 1;
                if down {
                    self.out.begin(t, b"postfix/smtp", j.proc.0);
                    self.out.s("connect to ");
                    self.out.s(&relay.hp);
                    self.out.s(": Connection timed out");
                    self.out.end()?;
                    return Ok(Some(1));
                }
                self.truth.outbound.connections += 1;
                if relay.tls {
                    self.truth.outbound.tls_connections += 1;
                    self.out.begin(t, b"postfix/smtp", j.proc.0);
                    self.out.s(relay.trust);
                    self.out.s(" TLS connection established to ");
                    self.out.s(&relay.hp);
                    self.out.s(": ");
                    self.out.s(relay.tls_text);
                    self.out.end()?;
                }
                Ok(Some(self.rng.range(50, 600)))
            }
            _ => {
                let (qid, n, fate) = j.msgs[j.i];
                let fate = if down { Fate::Deferred } else { fate };
                let user = &world.users[(self.rng.below(world.users.len() as u64)) as usize];
                self.out.begin(t, b"postfix/smtp", j.proc.0);
                self.out.qid(qid);
                self.out.s(": to=<");
                self.out.s(user);
                self.out.s("@");
                self.out.s(&relay.domain);
                self.out.s(">, relay=");
                if down {
                    self.out.s("none");
                } else {
                    self.out.s(&relay.hp);
                }
                if j.i > 0 {
                    self.out.s(", conn_use=");
                    self.out.u(j.i as u64 + 1);
                }
                let delay = (t.saturating_sub(j.queued_ms) / 10).max(self.rng.range(20, 300));
                self.out.s(", delay=");
                self.out.centi(delay);
                self.out.s(", delays=");
                self.out.centi(delay / 3);
                self.out.s("/0.01/");
                self.out.centi(delay / 3);
                self.out.s("/");
                self.out.centi(delay / 3);
                match fate {
                    Fate::Sent => {
                        self.out.s(", dsn=2.0.0, status=sent (250 2.0.0 OK ");
                        self.out.u(self.out.last_unix as u64);
                        self.out.s(" ");
                        let id = self.rng.u64();
                        self.hex(id);
                        self.out.s(" - queued)");
                    }
                    Fate::Deferred if down => {
                        self.out.s(", dsn=4.4.1, status=deferred (connect to ");
                        self.out.s(&relay.hp);
                        self.out.s(": Connection timed out)");
                    }
                    Fate::Deferred => {
                        self.out.s(", dsn=4.7.1, status=deferred (host ");
                        let hp = relay.hp.trim_end_matches(":25");
                        self.out.s(hp);
                        self.out.s(" said: 450 4.7.1 <");
                        self.out.s(user);
                        self.out.s("@");
                        self.out.s(&relay.domain);
                        self.out.s(">: Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/help/");
                        self.out.s(&relay.domain);
                        self.out.s(".html (in reply to RCPT TO command))");
                    }
                    Fate::Bounced => {
                        self.out.s(", dsn=5.1.1, status=bounced (host ");
                        let hp = relay.hp.trim_end_matches(":25");
                        self.out.s(hp);
                        self.out.s(" said: 550 5.1.1 <");
                        self.out.s(user);
                        self.out.s("@");
                        self.out.s(&relay.domain);
                        self.out.s(">: Recipient address rejected: User unknown (in reply to RCPT TO command))");
                    }
                }
                self.out.end()?;
                j.j += 1;
                if j.j < n {
                    return Ok(Some(self.rng.range(1, 30)));
                }
                // The transaction is over.
                j.j = 0;
                let ver = relay.tls.then_some(relay.ver);
                match fate {
                    Fate::Sent => {
                        let day = self.day();
                        self.truth.message(true, day, ver, u64::from(n));
                        self.truth.next_hop(relay);
                        if j.i > 0 {
                            self.truth.outbound_conn_reuse += 1;
                        }
                        self.removed(qid)?;
                    }
                    Fate::Deferred => {
                        self.truth.outbound.deferred += 1;
                        let retry = OutJob {
                            relay: j.relay,
                            msgs: vec![(
                                qid,
                                n,
                                if j.attempt < 2 && self.rng.chance(0.2) {
                                    Fate::Deferred
                                } else {
                                    Fate::Sent
                                },
                            )],
                            proc: (0, 0),
                            stage: 0,
                            i: 0,
                            j: 0,
                            attempt: j.attempt + 1,
                            queued_ms: j.queued_ms,
                        };
                        let at = t + self.rng.range(300_000, 1_800_000);
                        self.schedule(at, Actor::Out(Box::new(retry)));
                    }
                    Fate::Bounced => {
                        self.truth.outbound.bounced += 1;
                        let notice = self.new_qid();
                        let pid = self.bounce.get(&mut self.pids, &mut self.rng, 2);
                        self.out.begin(t, b"postfix/bounce", pid);
                        self.out.qid(qid);
                        self.out.s(": sender non-delivery notification: ");
                        self.out.qid(notice);
                        self.out.end()?;
                        self.removed(qid)?;
                        self.truth.bounce_notices += 1;
                        let lj = LocalJob {
                            qid: notice,
                            rcpts: 1,
                            j: 0,
                            agent: 0,
                            notice: true,
                            stage: 0,
                            pid: 0,
                            uses: 0,
                        };
                        self.schedule(t + 1, Actor::Local(Box::new(lj)));
                    }
                }
                j.i += 1;
                if j.i < j.msgs.len() && !down {
                    return Ok(Some(self.rng.range(20, 400)));
                }
                if down {
                    // Every message waits for the retry.
                    for k in j.i..j.msgs.len() {
                        let (q, n, _) = j.msgs[k];
                        self.truth.outbound.deferred += 1;
                        let retry = OutJob {
                            relay: j.relay,
                            msgs: vec![(q, n, Fate::Sent)],
                            proc: (0, 0),
                            stage: 0,
                            i: 0,
                            j: 0,
                            attempt: 1,
                            queued_ms: j.queued_ms,
                        };
                        self.out.begin(t, b"postfix/smtp", j.proc.0);
                        self.out.qid(q);
                        self.out.s(": to=<");
                        self.out.s(&world.users[0]);
                        self.out.s("@");
                        self.out.s(&relay.domain);
                        self.out.s(">, relay=none, delay=30, delays=0.01/0/30/0, dsn=4.4.1, status=deferred (connect to ");
                        self.out.s(&relay.hp);
                        self.out.s(": Connection timed out)");
                        self.out.end()?;
                        let at = t + self.rng.range(300_000, 1_800_000);
                        self.schedule(at, Actor::Out(Box::new(retry)));
                    }
                }
                self.smtp.give(j.proc);
                Ok(None)
            }
        }
    }

    fn localjob(&mut self, j: &mut LocalJob) -> std::io::Result<Option<u64>> {
        let world = Rc::clone(&self.world);
        let t = self.now;
        if j.notice && j.stage == 0 {
            let pid = self.cleanup.get(&mut self.pids, &mut self.rng, 6);
            self.out.begin(t, b"postfix/cleanup", pid);
            self.out.qid(j.qid);
            self.out.s(": message-id=<");
            self.out.u(self.out.last_unix as u64);
            self.out.s(".");
            self.out.qid(j.qid);
            self.out.s("@mx.example.net>");
            self.out.end()?;
            self.out.begin(t, b"postfix/qmgr", self.qmgr);
            self.out.qid(j.qid);
            self.out.s(": from=<>, size=");
            self.out.u(self.rng.range(2500, 9000));
            self.out.s(", nrcpt=1 (queue active)");
            self.out.end()?;
            j.stage = 1;
            return Ok(Some(self.rng.range(5, 100)));
        }
        if j.pid == 0 {
            // A delivery agent process delivers one message at a time.
            let p = match j.agent {
                0 => self.virt.take(&mut self.pids, &mut self.rng),
                1 => self.lmtp.take(&mut self.pids, &mut self.rng),
                _ => self.local.take(&mut self.pids, &mut self.rng),
            };
            j.pid = p.0;
            j.uses = p.1;
        }
        let user = &world.users[self.rng.below(world.users.len() as u64) as usize];
        let prog: &[u8] = match j.agent {
            0 => b"postfix/virtual",
            1 => b"postfix/lmtp",
            _ => b"postfix/local",
        };
        self.out.begin(t, prog, j.pid);
        self.out.qid(j.qid);
        self.out.s(": to=<");
        if j.agent == 2 {
            self.out
                .s("root@mx.example.net>, orig_to=<root>, relay=local");
        } else {
            self.out.s(user);
            self.out.s("@example.net>, relay=");
            self.out.s(if j.agent == 0 {
                "virtual"
            } else {
                "mail.example.net[private/dovecot-lmtp]"
            });
        }
        let d = self.rng.range(2, 90);
        self.out.s(", delay=");
        self.out.centi(d);
        self.out.s(", delays=");
        self.out.centi(d / 2);
        self.out.s("/0/0/");
        self.out.centi(d - d / 2);
        self.out.s(match j.agent {
            0 => ", dsn=2.0.0, status=sent (delivered to maildir)",
            1 => ", dsn=2.0.0, status=sent (250 2.0.0 <x> Saved)",
            _ => ", dsn=2.0.0, status=sent (delivered to mailbox)",
        });
        self.out.end()?;
        j.j += 1;
        if j.j < j.rcpts {
            return Ok(Some(self.rng.range(1, 20)));
        }
        self.truth.internal_outbound_messages += 1;
        let p = (j.pid, j.uses);
        match j.agent {
            0 => self.virt.give(p),
            1 => self.lmtp.give(p),
            _ => self.local.give(p),
        }
        self.removed(j.qid)?;
        Ok(None)
    }
}

/// A sender local part for a peer's domain.
fn rng_local<'a>(domain: &str, user: &'a str) -> &'a str {
    if domain.len().is_multiple_of(3) {
        FIRST[domain.len() % FIRST.len()]
    } else {
        user
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_postfix_log: {}: {e}", args.out);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    let started = Instant::now();
    let mut rng = Rng::new(args.seed);
    let world = build_world(&mut rng, args.peers);
    let (y, m, d) = args.start;
    let start_unix = days_from_civil(y, m, d) * 86_400;
    let file = File::create(&args.out)?;
    let n_peers = world.peers.len();
    let mut g = Gen {
        rng,
        world: Rc::new(world),
        out: Out {
            file,
            buf: Vec::with_capacity(5 << 20),
            bytes: 0,
            lines: 0,
            start_unix,
            ts_sec: i64::MIN,
            ts: [b' '; 15],
            last_unix: start_unix,
        },
        truth: Truth {
            peers_seen: vec![false; n_peers],
            ..Truth::default()
        },
        pids: Pids {
            next: 1000 + (args.seed % 5000) as u32,
        },
        smtpd: Pool::new(MAX_USE),
        submission: Pool::new(MAX_USE),
        smtp: Pool::new(MAX_USE),
        cleanup: Rotating {
            pids: Vec::new(),
            uses: 0,
        },
        virt: Pool::new(MAX_USE),
        lmtp: Pool::new(MAX_USE),
        local: Pool::new(MAX_USE),
        bounce: Rotating {
            pids: Vec::new(),
            uses: 0,
        },
        qmgr: 0,
        pickup: 0,
        anvil: 0,
        qid_counter: 0,
        sessions_per_day: f64::from(args.sessions_per_day),
        stopping: false,
        heap: BinaryHeap::new(),
        slots: Vec::new(),
        free: Vec::new(),
        seq: 0,
        now: 0,
    };
    g.qmgr = g.pids.alloc(&mut g.rng);
    g.pickup = g.pids.alloc(&mut g.rng);
    g.anvil = g.pids.alloc(&mut g.rng);
    g.run(args.size)?;
    let last = g.out.last_unix;
    g.out
        .file
        .set_modified(UNIX_EPOCH + Duration::from_secs(last.max(0) as u64 + 1))?;
    drop(g.out.file);
    let elapsed = started.elapsed().as_secs_f64();

    let t = &g.truth;
    let distinct = t.peers_seen.iter().filter(|&&b| b).count();
    let days = t
        .daily
        .iter()
        .map(|(d, c)| {
            let (y, m, dd) = civil_from_days(start_unix / 86_400 + *d as i64);
            format!(
                "    {{\"period\": \"{y:04}-{m:02}-{dd:02}\", \"inbound_messages\": {}, \"inbound_tls\": {}, \
                 \"outbound_messages\": {}, \"outbound_tls\": {}}}",
                c[0], c[1], c[2], c[3]
            )
        })
        .collect::<Vec<_>>()
        .join(",\n");
    let next_hops = t
        .next_hops
        .iter()
        .map(|(domain, [m, tls, trusted])| {
            format!(
                "    {{\"domain\": \"{domain}\", \"messages\": {m}, \"tls_messages\": {tls}, \
                 \"trusted_tls_messages\": {trusted}}}"
            )
        })
        .collect::<Vec<_>>()
        .join(",\n");
    let fmt_time = |u: i64| {
        let (y, m, d) = civil_from_days(u.div_euclid(86_400));
        let s = u.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    };
    let json = format!(
        "{{\n  \"generator\": \"gen_postfix_log 1\",\n  \"seed\": {},\n  \"size_requested\": {},\n  \
         \"start\": \"{:04}-{:02}-{:02}\",\n  \"peers\": {},\n  \"sessions_per_day\": {},\n  \
         \"bytes\": {},\n  \"lines\": {},\n  \"first\": \"{}\",\n  \"last\": \"{}\",\n  \
         \"generate_seconds\": {:.2},\n  \"inbound\": {},\n  \"outbound\": {},\n  \
         \"internal_inbound_messages\": {},\n  \"internal_outbound_messages\": {},\n  \
         \"submission_messages\": {},\n  \"stripped_sessions\": {},\n  \"stripped_messages\": {},\n  \
         \"starttls_failures\": {},\n  \"rejected_sessions\": {},\n  \"bounce_notices\": {},\n  \
         \"outbound_conn_reuse\": {},\n  \"distinct_inbound_peers\": {},\n  \"daily\": [\n{}\n  ],\n  \
         \"next_hops\": [\n{}\n  ]\n}}\n",
        args.seed,
        args.size,
        y,
        m,
        d,
        args.peers,
        args.sessions_per_day,
        g.out.bytes,
        g.out.lines,
        fmt_time(start_unix),
        fmt_time(last),
        elapsed,
        dir_json(&t.inbound),
        dir_json(&t.outbound),
        t.internal_inbound_messages,
        t.internal_outbound_messages,
        t.submission_messages,
        t.stripped_sessions,
        t.stripped_messages,
        t.starttls_failures,
        t.rejected_sessions,
        t.bounce_notices,
        t.outbound_conn_reuse,
        distinct,
        days,
        next_hops,
    );
    let truth_path = args
        .truth
        .clone()
        .unwrap_or_else(|| format!("{}.truth.json", args.out));
    std::fs::write(&truth_path, json)?;
    eprintln!(
        "gen_postfix_log: {} bytes, {} lines in {:.1} s ({:.0} MB/s); truth in {truth_path}",
        g.out.bytes,
        g.out.lines,
        elapsed,
        g.out.bytes as f64 / elapsed / 1e6
    );
    Ok(())
}
