//! `sigillo policy build`: pins the next-hop domains that used TLS for every message over the
//! logged window (a Postfix `smtp_tls_policy_maps` file, an Exim domain list), and a dry run
//! that says which logged messages such a policy would have deferred.
//!
//! The figures are `report`'s per-next-hop table ([`NextHopFigures`]) and per-relay table
//! ([`RelayHostFigures`]), from logs or from a saved `report --json`; choosing pins
//! ([`select_pins`]) and the dry run ([`dry_run`]) are pure functions of them.

use crate::cli::{LogArgs, emit};
use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use sigillo_check::policy::sigillo_policy::domain;
use sigillo_check::policy::sigillo_policy::postfix::{
    Evidence, PinKeyError, PinLevel, PinnedPeer, RelayKey, SMTP_PORT, exim_domain_list,
    policy_map_file, read_policy_map_file,
};
use sigillo_logs::aggregate::{
    MailFigures, MessageRef, MessageSample, NEXT_HOP_SAMPLE, NextHopFigures, NextHopsOmitted,
    RelayHostFigures,
};
use sigillo_logs::next_hop_relays::{RelayCount, RelayFigures};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sigillo policy build /var/log/mail.log* --postfix /etc/postfix/tls_pins
  sigillo report --json /var/log/mail.log* > week.json
  sigillo policy build --from-report week.json --min-tls-share 0.95 --dry-run
  sigillo policy build /var/log/mail.log --dry-run --pins /etc/postfix/tls_pins

Exit status: 0 done (a dry run found no message that would have been deferred), 1 a dry run \
found messages that would have been deferred, 2 the inputs could not be read or an output \
not written. See docs/policy-build.md.")]
pub struct BuildArgs {
    /// Log files, directories (rotated files read oldest first), `.gz`/`.zst`, or `-` for
    /// stdin, as for `sigillo report`.
    #[arg(required_unless_present = "from_report")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub logs: LogArgs,
    /// Take the figures from `sigillo report --json` output instead of reading logs.
    #[arg(long, value_name = "FILE",
          conflicts_with_all = ["inputs", "format", "year", "since", "until", "internal"])]
    pub from_report: Option<PathBuf>,
    /// Pin a domain only when this many messages were delivered to it in the window (a
    /// smarthost: this many delivery transactions went to it).
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub min_messages: u64,
    /// Pin a domain when at least this share of its messages went over TLS (1: every one).
    #[arg(long, default_value_t = 1.0, value_name = "SHARE", value_parser = parse_share)]
    pub min_tls_share: f64,
    /// Pin at `verify` (not only `encrypt`) the domains whose messages had a certificate the
    /// MTA trusted, in the same share. Postfix then needs smtp_tls_CAfile or
    /// smtp_tls_CApath, and checks the MX host name.
    #[arg(long)]
    pub verify: bool,
    /// Write the pins as a Postfix smtp_tls_policy_maps file (`-`: stdout). It may not be an
    /// input, inside an input directory, or the --exim file.
    #[arg(long, value_name = "FILE")]
    pub postfix: Option<PathBuf>,
    /// Write the pinned domains as an Exim domain list for hosts_require_tls (`-`: stdout).
    /// It may not be an input, inside an input directory, or the --postfix file.
    #[arg(long, value_name = "FILE")]
    pub exim: Option<PathBuf>,
    /// List the logged messages the pins would have deferred, per domain.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: check these pins (`domain  encrypt|verify` lines, as --postfix
    /// writes them) instead of the ones the rule picks.
    #[arg(long, value_name = "FILE", requires = "dry_run", conflicts_with_all = ["postfix", "exim"])]
    pub pins: Option<PathBuf>,
    /// Print one JSON document (pins, counts, dry run) instead of the summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 1.0 => Ok(s),
        _ => Err(format!(
            "{text:?}: expected a share above 0 and at most 1, like 0.95"
        )),
    }
}

/// When a next-hop domain is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PinRule {
    /// Delivered messages needed in the window.
    pub min_messages: u64,
    /// Share of them over TLS (and, for `verify`, with a trusted certificate).
    pub min_tls_share: f64,
    /// Whether `verify` pins may be made.
    pub verify: bool,
}

/// Domains with mail in the window that the rule did not pin, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotPinned {
    /// Fewer messages than `min_messages`.
    pub few_messages: u64,
    /// Enough messages, but too few over TLS (in clear, or of unknown transport).
    pub below_tls_share: u64,
    /// Not a DNS name a policy map can hold (an address literal, a non-ASCII name); also a
    /// smarthost whose logged name cannot be a relay key.
    pub not_a_domain: u64,
    /// Every message went to a smarthost: Postfix looks up the relay (`[relay]`), not the
    /// domain, so the relay is judged instead ([`Routes`]).
    pub via_relay: u64,
    /// Some messages went to a smarthost and some elsewhere: which next hop Postfix looks up
    /// cannot be told, so the domain is skipped.
    pub partly_via_relay: u64,
    /// Smarthosts whose mail did not meet the rule (too few messages, or below the share).
    pub relays_below_rule: u64,
}

/// The pins a rule makes from the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Sorted by key (relays, `[host]`, first).
    pub pins: Vec<PinnedPeer>,
    pub not_pinned: NotPinned,
    /// The smarthosts found, with their figures.
    pub smarthosts: Vec<Smarthost>,
}

/// A smarthost must have taken the mail of at least this many next-hop domains its name is
/// not part of ([`Routes::find`]).
pub const SMARTHOST_MIN_DOMAINS: usize = 3;
/// … and of at least this share (90 %) of the next-hop domains whose relays are known: a
/// `relayhost` takes essentially all of them, a provider's shared MX only its customers'.
pub const SMARTHOST_MIN_SHARE: f64 = 0.9;

/// A relay host judged a smarthost, and the mail that went to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Smarthost {
    /// As logged (lowercase; an IPv6 relayhost given as an address: the address as written
    /// in main.cf). A relay the log spells several ways: the spelling of `key`.
    pub host: String,
    /// The port, when it is not 25 (`None`: 25, or the log does not say).
    pub port: Option<u16>,
    /// Whether the figures give the relay's port: Postfix logs always do; Exim's only with
    /// `+outgoing_port`, Sendmail's and OpenSMTPD's never, and nor does a report written by
    /// an older sigillo. When they do not, `key` assumes port 25.
    pub port_logged: bool,
    /// The `smtp_tls_policy_maps` key of `relayhost = [host]` or `[host]:port`
    /// ([`RelayKey::new`]): `[host]`, `[host]:587`, `[2001:db8::25]`. A relay the log spells
    /// several ways (an IPv6 address written differently by two transports): the first key
    /// in sorted order.
    pub key: String,
    /// The keys of the relay's other spellings, sorted: each is what Postfix looks up for a
    /// next hop written so, and each gets a pin with the same level and evidence. Empty for a
    /// relay the log spells one way.
    pub other_keys: Vec<String>,
    /// Next-hop domains with mail to it.
    pub domains: u64,
    /// Delivery transactions to it, each once however many domains it carried (from the
    /// report's [`RelayHostFigures`]); see `summed_over_domains`.
    pub messages: u64,
    pub tls_messages: u64,
    pub trusted_tls_messages: u64,
    /// The report had no figures of this relay's own (written by an older sigillo, or the
    /// relay came after the report's cap): the figures are the sums of the domains behind
    /// it, which count a transaction that carried several domains once for each.
    pub summed_over_domains: bool,
}

/// A relay as the figures name it: the host as logged (an IPv6 address in its canonical
/// form, RFC 5952) and the port, `None` for 25 (or not logged), so that a relay is one
/// whether or not its log gives the port, and however its address is spelled (two
/// transports may write one IPv6 relay differently, and Postfix logs it as written): its
/// mail is judged together. Its keys are the spellings as logged ([`relay_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relay {
    pub host: String,
    pub port: Option<u16>,
}

impl Relay {
    fn of(r: &RelayCount) -> Relay {
        Relay {
            host: relay_host(&r.host),
            port: r.port.filter(|p| *p != SMTP_PORT),
        }
    }

    fn is(&self, r: &RelayCount) -> bool {
        self.is_at(&r.host, r.port)
    }

    /// Whether this is the relay `host` on `port` (as the figures name them).
    fn is_at(&self, host: &str, port: Option<u16>) -> bool {
        self.port == port.filter(|p| *p != SMTP_PORT) && self.host == relay_host(host)
    }
}

/// A relay host as [`Relay`] keeps it: an IPv6 address in RFC 5952 form
/// (`2001:0db8:0:0::25` is `2001:db8::25`), anything else as logged.
fn relay_host(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_owned(),
    }
}

/// The keys of `relay` as Postfix looks it up ([`RelayKey::new`]), paired with the host as
/// logged, sorted by key: one for each spelling the figures give it (the domains' relays and
/// the report's per-relay figures), since Postfix looks a next hop up as written, and logs a
/// relay given as an address as written. One for a relay named by a host name.
fn relay_keys(
    hops: &[NextHopFigures],
    relays: Option<&[RelayHostFigures]>,
    relay: &Relay,
) -> Result<Vec<(String, String)>, PinKeyError> {
    let mut spellings: Vec<String> = Vec::new();
    let logged = hops
        .iter()
        .filter_map(|h| h.relays.as_ref())
        .flat_map(|r| r.hosts.iter().map(|r| (r.host.as_str(), r.port)))
        .chain(
            relays
                .unwrap_or_default()
                .iter()
                .map(|r| (r.host.as_str(), r.port)),
        );
    for (host, port) in logged {
        if relay.is_at(host, port) && !spellings.iter().any(|s| s == host) {
            spellings.push(host.to_owned());
        }
    }
    if spellings.is_empty() {
        spellings.push(relay.host.clone());
    }
    let mut keys = spellings
        .into_iter()
        .map(|host| Ok((RelayKey::new(&host, relay.port)?.to_string(), host)))
        .collect::<Result<Vec<_>, PinKeyError>>()?;
    keys.sort();
    // Hashed and `texthash:` maps fold keys to lowercase: spellings that differ in case only
    // are one key.
    keys.dedup_by(|b, a| a.0 == b.0);
    Ok(keys)
}

/// Whether the relay `host` on `port` of the figures is the one `key` names: the same host
/// (an IPv6 address in any spelling) on the same port (25 when not logged).
fn relay_matches(key: &RelayKey, host: &str, port: Option<u16>) -> bool {
    let same_host = match key.ipv6() {
        Some(ip) => host.parse::<std::net::Ipv6Addr>().is_ok_and(|h| h == ip),
        None => host == key.name(),
    };
    same_host && port.unwrap_or(SMTP_PORT) == key.port()
}

/// How a next-hop domain's mail left, as far as the figures tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The figures name no relay hosts (a report from an older sigillo).
    Unknown,
    /// No message went to a smarthost: routed by MX (or by a transport to its own host).
    Direct,
    /// Every message went to smarthosts.
    Smarthost,
    /// Some did.
    Partly,
}

/// The smarthosts among the relay hosts of the next hops.
///
/// Postfix keys `smtp_tls_policy_maps` by the next hop: the recipient domain when mail is
/// routed by MX, the relay (`[smtp.isp.example]`) with a `relayhost` or a transport's
/// `smtp:[host]`. The log names only the host a delivery went to, so the rule is: a relay
/// host is a **smarthost** when it took the mail of at least [`SMARTHOST_MIN_DOMAINS`]
/// next-hop domains that its name is not part of (`mx.example.com` is part of `example.com`,
/// and of `mail.example.com`'s registered domain) and of at least [`SMARTHOST_MIN_SHARE`]
/// (90 %) of all next-hop domains whose relays are known. With a `relayhost` essentially every
/// Internet next hop goes through it, a few `transport_maps` exceptions aside; an MX host,
/// even one shared by many domains (a mail provider's, `aspmx.l.google.com`), takes only its
/// customers' mail, which may well be a third or half of the domains a server writes to, but
/// not nine in ten. The rule errs only on a server that writes almost only to one
/// provider's customers (at least 90 % of its next-hop domains, and 3 or more of them): it
/// takes that MX for a smarthost, and pins `[host]`, which Postfix never looks up for mail
/// routed by MX. It also errs on a relay host that takes fewer than
/// [`SMARTHOST_MIN_DOMAINS`] domains or under 90 % of them (a transport for some domains):
/// those are judged as routed by MX, as before.
///
/// A relay is a host on a port ([`Relay`]): `relayhost = [smtp.isp.example]:587` is keyed
/// `[smtp.isp.example]:587`, and the same host on port 25 is another next hop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    /// Whether the figures name relay hosts at all (a report from an older sigillo does not).
    pub known: bool,
    /// The smarthosts, sorted.
    pub smarthosts: Vec<Relay>,
}

impl Routes {
    pub fn find(hops: &[NextHopFigures]) -> Routes {
        let known: Vec<(&NextHopFigures, &RelayFigures)> = hops
            .iter()
            .filter_map(|h| Some((h, h.relays.as_ref()?)))
            .collect();
        // Per relay: domains, and domains its name is not part of.
        let mut served: HashMap<Relay, (usize, usize)> = HashMap::new();
        for (hop, relays) in &known {
            let mut seen: Vec<Relay> = Vec::with_capacity(relays.hosts.len());
            for r in &relays.hosts {
                let relay = Relay::of(r);
                if seen.contains(&relay) {
                    continue;
                }
                seen.push(relay.clone());
                let e = served.entry(relay).or_default();
                e.0 += 1;
                e.1 += usize::from(!related(&r.host, &hop.domain));
            }
        }
        let mut smarthosts: Vec<Relay> = served
            .into_iter()
            .filter(|&(_, (domains, unrelated))| {
                unrelated >= SMARTHOST_MIN_DOMAINS
                    && domains as f64 >= SMARTHOST_MIN_SHARE * known.len() as f64
            })
            .map(|(relay, _)| relay)
            .collect();
        smarthosts.sort();
        Routes {
            known: !known.is_empty(),
            smarthosts,
        }
    }

    fn is_smarthost(&self, r: &RelayCount) -> bool {
        self.smarthosts.binary_search(&Relay::of(r)).is_ok()
    }

    fn route(&self, hop: &NextHopFigures) -> Route {
        let Some(relays) = &hop.relays else {
            return Route::Unknown;
        };
        let via: u64 = relays
            .hosts
            .iter()
            .filter(|r| self.is_smarthost(r))
            .fold(0u64, |a, r| a.saturating_add(r.messages));
        match via {
            0 => Route::Direct,
            v if v >= hop.mail.messages => Route::Smarthost,
            _ => Route::Partly,
        }
    }
}

/// Whether the relay `host` is part of `domain`: the domain itself, a name under it, or a name
/// with the same registered domain (Public Suffix List).
fn related(host: &str, domain: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if host == domain || host.ends_with(&format!(".{domain}")) {
        return true;
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    let registered = |name: &str| sigillo_logs::aggregate::registered_domain(Some(name), None);
    registered(&host) == registered(&domain)
}

/// The figures of the mail that went to the relay (host on port) that `is` picks, named `key`,
/// and whether they are sums over the domains behind it; `None` when no mail went to it.
///
/// From the report's per-relay figures (`relays`: each delivery transaction once, however
/// many domains it carried) when they name the relay; else, for a report from an older
/// sigillo (`relays` is `None`) or a relay past the report's cap, summed over the domains
/// ([`relay_figures_by_domain`]), which count such a transaction once for each domain.
fn relay_mail(
    hops: &[NextHopFigures],
    relays: Option<&[RelayHostFigures]>,
    key: &str,
    is: impl Fn(&str, Option<u16>) -> bool,
) -> Option<(NextHopFigures, bool)> {
    let mut out: Option<NextHopFigures> = None;
    for r in relays.unwrap_or_default() {
        if !is(&r.host, r.port) {
            continue;
        }
        let part = NextHopFigures {
            domain: key.to_owned(),
            mail: r.mail.clone(),
            relays: None,
        };
        // A host logged without a port and on port 25 is one relay: two entries.
        match &mut out {
            None => out = Some(part),
            Some(sum) => add_figures(&mut sum.mail, &part.mail),
        }
    }
    match out {
        Some(figures) => Some((figures, false)),
        None => relay_figures_by_domain(hops, key, |r| is(&r.host, r.port)).map(|f| (f, true)),
    }
}

/// The figures of the mail that went to the relays `is` picks, named `key`, summed over the
/// next-hop domains (a transaction that carried several domains counts once for each), or
/// `None` when none did: what a report without per-relay figures allows. A domain whose
/// every message went to them adds all its figures; a domain that split its mail between them
/// and other hosts adds its messages to them as TLS when all its mail went over TLS (trusted
/// when all of it was), else as of unknown transport.
fn relay_figures_by_domain(
    hops: &[NextHopFigures],
    key: &str,
    is: impl Fn(&RelayCount) -> bool,
) -> Option<NextHopFigures> {
    let mut out: Option<NextHopFigures> = None;
    for hop in hops {
        let Some(relays) = &hop.relays else {
            continue;
        };
        let n = relays
            .hosts
            .iter()
            .filter(|r| is(r))
            .fold(0u64, |a, r| a.saturating_add(r.messages));
        if n == 0 {
            continue;
        }
        let part = if n >= hop.mail.messages {
            let mut whole = hop.clone();
            whole.relays = None;
            whole
        } else {
            let all_tls = hop.mail.tls_messages == hop.mail.messages;
            let trusted = all_tls && hop.mail.trusted_tls_messages == hop.mail.tls_messages;
            NextHopFigures {
                mail: MailFigures {
                    messages: n,
                    tls_messages: if all_tls { n } else { 0 },
                    trusted_tls_messages: if trusted { n } else { 0 },
                    plain_messages: 0,
                    unknown_messages: if all_tls { 0 } else { n },
                    plain: None,
                    untrusted_tls: None,
                    ..hop.mail.clone()
                },
                relays: None,
                ..hop.clone()
            }
        };
        match &mut out {
            None => {
                out = Some(NextHopFigures {
                    domain: key.to_owned(),
                    ..part
                })
            }
            Some(sum) => add_figures(&mut sum.mail, &part.mail),
        }
    }
    out
}

/// Adds `theirs` to `m` (counts, times, samples).
fn add_figures(m: &mut MailFigures, theirs: &MailFigures) {
    m.messages = m.messages.saturating_add(theirs.messages);
    m.tls_messages = m.tls_messages.saturating_add(theirs.tls_messages);
    m.trusted_tls_messages = m
        .trusted_tls_messages
        .saturating_add(theirs.trusted_tls_messages);
    m.plain_messages = m.plain_messages.saturating_add(theirs.plain_messages);
    m.unknown_messages = m.unknown_messages.saturating_add(theirs.unknown_messages);
    m.tls_share = sigillo_logs::aggregate::share(m.tls_messages, m.messages);
    m.first_seen = m.first_seen.clone().min(theirs.first_seen.clone());
    m.last_seen = m.last_seen.clone().max(theirs.last_seen.clone());
    for (mine, theirs) in [
        (&mut m.plain, &theirs.plain),
        (&mut m.untrusted_tls, &theirs.untrusted_tls),
    ] {
        if let Some(theirs) = theirs {
            *mine = Some(match mine.take() {
                Some(ours) => {
                    let (first, last, sample) = merge_samples(&[&ours, theirs]);
                    MessageSample {
                        first: first.unwrap_or(ours.first),
                        last: last.unwrap_or(ours.last),
                        sample,
                    }
                }
                None => theirs.clone(),
            });
        }
    }
}

/// `part` is at least `share` of `whole` (and `whole` is not 0).
fn reaches(part: u64, whole: u64, share: f64) -> bool {
    // The tolerance keeps 19 of 20 at 0.95 from failing on the rounding of 0.95 × 20.
    whole > 0 && part as f64 / whole as f64 >= share - 1e-9
}

/// Why figures were not pinned.
enum Short {
    FewMessages,
    BelowTlsShare,
}

/// The level `rule` pins `hop` at: it needs at least `min_messages` delivered messages of
/// which at least `min_tls_share` went over TLS; `verify` when `rule.verify` and that share
/// also had a trusted certificate, else `encrypt`.
fn judge(hop: &NextHopFigures, rule: &PinRule) -> Result<PinLevel, Short> {
    if hop.mail.messages < rule.min_messages {
        return Err(Short::FewMessages);
    }
    if !reaches(hop.mail.tls_messages, hop.mail.messages, rule.min_tls_share) {
        return Err(Short::BelowTlsShare);
    }
    Ok(
        if rule.verify
            && reaches(
                hop.mail.trusted_tls_messages,
                hop.mail.messages,
                rule.min_tls_share,
            )
        {
            PinLevel::Verify
        } else {
            PinLevel::Encrypt
        },
    )
}

/// Pins every domain the rule passes ([`judge`]), except those whose mail went to a smarthost
/// ([`Routes`], found from the domains' relays), for which the smarthost is judged, on the
/// delivery transactions that went to it ([`relay_mail`]: from `relays`, the report's
/// per-relay figures, when it has them), and pinned as `[host]`, or `[host]:port` on a port
/// other than 25 ([`RelayKey::new`]). A smarthost the log spells several ways (one IPv6
/// address written differently by two transports) is judged once, on all its mail, and
/// pinned under each spelling's key with that one level and evidence ([`relay_keys`]).
pub fn select_pins(
    hops: &[NextHopFigures],
    relays: Option<&[RelayHostFigures]>,
    rule: &PinRule,
) -> Selection {
    let routes = Routes::find(hops);
    let mut pins = Vec::new();
    let mut not_pinned = NotPinned::default();
    for hop in hops {
        match routes.route(hop) {
            Route::Smarthost => {
                not_pinned.via_relay += 1;
                continue;
            }
            Route::Partly => {
                not_pinned.partly_via_relay += 1;
                continue;
            }
            Route::Unknown | Route::Direct => {}
        }
        match judge(hop, rule) {
            Err(Short::FewMessages) => not_pinned.few_messages += 1,
            Err(Short::BelowTlsShare) => not_pinned.below_tls_share += 1,
            Ok(level) => match PinnedPeer::new(&hop.domain, level, evidence(hop)) {
                Ok(pin) => pins.push(pin),
                Err(_) => not_pinned.not_a_domain += 1,
            },
        }
    }
    let mut smarthosts = Vec::with_capacity(routes.smarthosts.len());
    for relay in &routes.smarthosts {
        let keys = relay_keys(hops, relays, relay);
        let name = match (keys.as_deref().map(<[_]>::first), relay.port) {
            (Ok(Some((key, _))), _) => key.clone(),
            (_, None) => format!("[{}]", relay.host),
            (_, Some(port)) => format!("[{}]:{port}", relay.host),
        };
        let Some((figures, summed_over_domains)) =
            relay_mail(hops, relays, &name, |host, port| relay.is_at(host, port))
        else {
            continue;
        };
        let domains = hops
            .iter()
            .filter(|h| {
                h.relays
                    .as_ref()
                    .is_some_and(|r| r.hosts.iter().any(|r| relay.is(r)))
            })
            .count() as u64;
        let port_logged = hops.iter().any(|h| {
            h.relays
                .as_ref()
                .is_some_and(|r| r.hosts.iter().any(|r| r.port.is_some() && relay.is(r)))
        });
        match (judge(&figures, rule), &keys) {
            (Err(_), _) => not_pinned.relays_below_rule += 1,
            (Ok(level), Ok(keys)) => pins.extend(keys.iter().map(|(key, _)| PinnedPeer {
                domain: key.clone(),
                level,
                evidence: evidence(&figures),
            })),
            (Ok(_), Err(_)) => not_pinned.not_a_domain += 1,
        }
        let (host, other_keys) = match &keys {
            Ok(keys) => (
                keys.first()
                    .map_or_else(|| relay.host.clone(), |(_, host)| host.clone()),
                keys.iter().skip(1).map(|(key, _)| key.clone()).collect(),
            ),
            Err(_) => (relay.host.clone(), Vec::new()),
        };
        smarthosts.push(Smarthost {
            host,
            port: relay.port,
            port_logged,
            key: figures.domain.clone(),
            other_keys,
            domains,
            messages: figures.mail.messages,
            tls_messages: figures.mail.tls_messages,
            trusted_tls_messages: figures.mail.trusted_tls_messages,
            summed_over_domains,
        });
    }
    pins.sort_by(|a, b| a.domain.cmp(&b.domain));
    // Spellings of one domain are merged before ([`merge_spellings`]); a caller that did not
    // still gets one pin each.
    pins.dedup_by(|b, a| a.domain == b.domain);
    Selection {
        pins,
        not_pinned,
        smarthosts,
    }
}

fn evidence(hop: &NextHopFigures) -> Evidence {
    Evidence {
        messages: hop.mail.messages,
        tls: hop.mail.tls_messages,
        verified: hop.mail.trusted_tls_messages,
    }
}

/// What a set of pins would have done to the logged mail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    /// `rule`, or the pin file given with `--pins`.
    pub pins_from: String,
    /// Pinned domains and relays: a relay pinned under several spellings of its key (a line
    /// each) counts once, and so does its mail, under its first spelling.
    pub pinned_domains: usize,
    /// Pinned domains with delivered mail in the window (a relay pin: with mail to it).
    pub pinned_domains_seen: usize,
    /// Pinned domains whose every message went to a smarthost ([`Routes`]): Postfix looks up
    /// the relay, not the domain, so the pin would not have applied (not counted as seen).
    pub pins_via_relay: usize,
    /// Messages delivered to pinned domains.
    pub messages_to_pinned: u64,
    /// Of those, the ones the pins would have deferred: sent in clear (and, under `verify`,
    /// over TLS without a trusted certificate).
    pub deferred_messages: u64,
    /// Of those, the ones whose transport the log does not tell: they may have been deferred.
    pub unknown_messages: u64,
    /// Relay pins checked against the sums of the domains behind the relay, for want of
    /// figures of the relay's own (a report from an older sigillo): these count a
    /// transaction that carried several domains once for each.
    pub relay_pins_summed_over_domains: usize,
    /// The pinned domains with deferred or unknown messages, most deferred first.
    pub domains: Vec<DeferredDomain>,
}

/// One pinned domain's messages that would have been deferred.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeferredDomain {
    pub domain: String,
    pub level: PinLevel,
    /// Delivered messages in the window.
    pub messages: u64,
    /// `plain + untrusted_tls` (the latter under `verify` only).
    pub deferred: u64,
    pub plain: u64,
    pub untrusted_tls: u64,
    pub unknown: u64,
    /// The deferred messages: first and last by time, and up to five, earliest first.
    pub first: Option<MessageRef>,
    pub last: Option<MessageRef>,
    pub sample: Vec<MessageRef>,
}

/// The messages `pins` would have deferred, from the per-domain figures. A `verify` pin
/// counts `Trusted` TLS as passing: the log does not say whether the certificate also
/// matched the MX host name, which `verify` checks. A relay pin (`[host]`, `[host]:port`) is
/// checked against the delivery transactions that went to that host on that port
/// ([`relay_mail`]), once for all the spellings of its key that `pins` holds (the first
/// names it); a domain pin whose domain's mail all went to a smarthost would not have
/// applied.
pub fn dry_run(
    hops: &[NextHopFigures],
    relays: Option<&[RelayHostFigures]>,
    pins: &[PinnedPeer],
    pins_from: &str,
) -> DryRun {
    let routes = Routes::find(hops);
    let mut by_domain: HashMap<String, &NextHopFigures> = HashMap::with_capacity(hops.len());
    for hop in hops {
        if let Ok(d) = domain::normalize(&hop.domain) {
            by_domain.entry(d).or_insert(hop);
        }
    }
    let mut run = DryRun {
        pins_from: pins_from.to_owned(),
        pinned_domains: pins.len(),
        pinned_domains_seen: 0,
        pins_via_relay: 0,
        messages_to_pinned: 0,
        deferred_messages: 0,
        unknown_messages: 0,
        relay_pins_summed_over_domains: 0,
        domains: Vec::new(),
    };
    // The pins counted, by match key: spellings of one relay are one.
    let mut counted: HashSet<String> = HashSet::with_capacity(pins.len());
    for pin in pins {
        if !counted.insert(pin.match_key()) {
            continue;
        }
        let relayed;
        let hop = match pin.relay_key() {
            Some(key) => {
                relayed = relay_mail(hops, relays, &pin.domain, |host, port| {
                    relay_matches(&key, host, port)
                });
                if let Some((_, true)) = relayed {
                    run.relay_pins_summed_over_domains += 1;
                }
                relayed.as_ref().map(|(figures, _)| figures)
            }
            None => by_domain.get(&pin.domain).copied(),
        };
        let Some(hop) = hop else {
            continue;
        };
        if !pin.is_relay() && routes.route(hop) == Route::Smarthost {
            run.pins_via_relay += 1;
            continue;
        }
        run.pinned_domains_seen += 1;
        run.messages_to_pinned = run.messages_to_pinned.saturating_add(hop.mail.messages);
        let untrusted = match pin.level {
            PinLevel::Verify => hop
                .mail
                .tls_messages
                .saturating_sub(hop.mail.trusted_tls_messages),
            PinLevel::Encrypt => 0,
        };
        let deferred = hop.mail.plain_messages.saturating_add(untrusted);
        run.deferred_messages = run.deferred_messages.saturating_add(deferred);
        run.unknown_messages = run
            .unknown_messages
            .saturating_add(hop.mail.unknown_messages);
        if deferred == 0 && hop.mail.unknown_messages == 0 {
            continue;
        }
        let samples: Vec<&MessageSample> = match pin.level {
            PinLevel::Encrypt => hop.mail.plain.iter().collect(),
            PinLevel::Verify => hop
                .mail
                .plain
                .iter()
                .chain(&hop.mail.untrusted_tls)
                .collect(),
        };
        let (first, last, sample) = merge_samples(&samples);
        run.domains.push(DeferredDomain {
            domain: pin.domain.clone(),
            level: pin.level,
            messages: hop.mail.messages,
            deferred,
            plain: hop.mail.plain_messages,
            untrusted_tls: untrusted,
            unknown: hop.mail.unknown_messages,
            first,
            last,
            sample,
        });
    }
    run.pinned_domains = counted.len();
    run.domains.sort_by(|a, b| {
        b.deferred
            .cmp(&a.deferred)
            .then_with(|| b.unknown.cmp(&a.unknown))
            .then_with(|| a.domain.cmp(&b.domain))
    });
    run
}

/// The next hops with the figures of spellings of one domain (`Example.com` from one MTA,
/// `example.com.` from another: [`domain::normalize`]) added up, in first-seen order, so
/// that the rule and the dry run judge each domain on all its mail.
fn merge_spellings(hops: &[NextHopFigures]) -> Vec<NextHopFigures> {
    let mut merged: Vec<NextHopFigures> = Vec::with_capacity(hops.len());
    let mut at: HashMap<String, usize> = HashMap::with_capacity(hops.len());
    for hop in hops {
        let key = domain::normalize(&hop.domain).unwrap_or_else(|_| hop.domain.clone());
        let Some(m) = at.get(&key).and_then(|&i| merged.get_mut(i)) else {
            at.insert(key, merged.len());
            merged.push(hop.clone());
            continue;
        };
        add_figures(&mut m.mail, &hop.mail);
        // Relays are known for the merged domain only when known for every spelling.
        m.relays = match (m.relays.take(), &hop.relays) {
            (Some(mut ours), Some(theirs)) => {
                for r in &theirs.hosts {
                    match ours
                        .hosts
                        .iter_mut()
                        .find(|o| o.host == r.host && o.port == r.port)
                    {
                        Some(o) => o.messages = o.messages.saturating_add(r.messages),
                        None => ours.hosts.push(r.clone()),
                    }
                }
                ours.other_messages = ours.other_messages.saturating_add(theirs.other_messages);
                Some(ours)
            }
            _ => None,
        };
    }
    merged
}

type Merged = (Option<MessageRef>, Option<MessageRef>, Vec<MessageRef>);

/// The earliest first, the latest last, and the earliest few of several samples, each message
/// once: a transaction whose recipients spanned several domains is in the sample of each, so
/// a relay's figures summed over domains ([`relay_figures_by_domain`]) meet it once for every
/// domain it carried.
fn merge_samples(samples: &[&MessageSample]) -> Merged {
    // RFC 3339 UTC times of one width sort as text.
    let key = |m: &MessageRef| (m.time.clone(), m.id.clone());
    let first = samples.iter().map(|s| &s.first).min_by_key(|m| key(m));
    let last = samples.iter().map(|s| &s.last).max_by_key(|m| key(m));
    let mut sample: Vec<MessageRef> = samples
        .iter()
        .flat_map(|s| s.sample.iter().cloned())
        .collect();
    sample.sort_by_key(key);
    sample.dedup();
    sample.truncate(NEXT_HOP_SAMPLE);
    (first.cloned(), last.cloned(), sample)
}

/// The part of `sigillo report --json` that `policy build` reads.
#[derive(Debug, Deserialize)]
struct ReportFigures {
    first: Option<String>,
    last: Option<String>,
    next_hops: Option<Vec<NextHopFigures>>,
    #[serde(default)]
    next_hops_omitted: NextHopsOmitted,
    /// Per relay host and port, each delivery transaction once; absent in a report written
    /// by an older sigillo.
    #[serde(default)]
    relays: Option<Vec<RelayHostFigures>>,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct BuildOutput<'a> {
    first: Option<&'a str>,
    last: Option<&'a str>,
    /// Domains with delivered outbound Internet mail in the window.
    next_hops: usize,
    next_hops_omitted: NextHopsOmitted,
    /// Absent when the pins come from `--pins`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<PinRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_pinned: Option<NotPinned>,
    pins: &'a [PinnedPeer],
    /// Whether the figures name the relay hosts of each next hop (a report written by an
    /// older sigillo does not: then no smarthost can be found).
    relays_known: bool,
    /// Relay hosts judged smarthosts ([`Routes`]).
    smarthosts: &'a [Smarthost],
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<&'a DryRun>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<u8> {
    let to_stdout = [&args.postfix, &args.exim]
        .iter()
        .filter(|p| p.as_deref() == Some(Path::new("-")))
        .count();
    if to_stdout > 1 || (to_stdout == 1 && args.json) {
        bail!("only one of --postfix -, --exim - and --json can use stdout");
    }
    refuse_overwriting_inputs(&args)?;
    args.logs.check()?;
    let figures = match &args.from_report {
        Some(path) => read_report(path)?,
        None => {
            let analysis = args.logs.analyze(&args.inputs, 0);
            let problems = crate::report_text::input_problems(&analysis)
                .replace("sigillo report:", "sigillo policy build:");
            let _ = std::io::stderr().write_all(problems.as_bytes());
            if analysis.nothing_read() {
                eprintln!("sigillo policy build: no log line could be read from the inputs");
                return Ok(2);
            }
            let f = analysis.figures;
            ReportFigures {
                first: f.first,
                last: f.last,
                next_hops: Some(f.next_hops),
                next_hops_omitted: f.next_hops_omitted,
                relays: Some(f.relays),
            }
        }
    };
    let merged = merge_spellings(figures.next_hops.as_deref().unwrap_or_default());
    let hops = merged.as_slice();
    let rule = PinRule {
        min_messages: args.min_messages,
        min_tls_share: args.min_tls_share,
        verify: args.verify,
    };
    let relays = figures.relays.as_deref();
    let selection = select_pins(hops, relays, &rule);
    let smarthosts = selection.smarthosts;
    let (pins, rule, not_pinned, pins_from) = match &args.pins {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--pins {}", path.display()))?;
            let pins = read_policy_map_file(&text)
                .with_context(|| format!("--pins {}", path.display()))?;
            (pins, None, None, path.display().to_string())
        }
        None => (
            selection.pins,
            Some(rule),
            Some(selection.not_pinned),
            "rule".to_owned(),
        ),
    };
    let window = (figures.first.as_deref(), figures.last.as_deref());
    let header = rule.map(|r| file_header(&r, window)).unwrap_or_default();
    let mut notes = String::new();
    if let Some(path) = &args.postfix {
        let text = header.clone() + &policy_map_file(&pins)?;
        write_output(path, &text, "--postfix")?;
        postfix_notes(&mut notes, path, pins.len());
    }
    if let Some(path) = &args.exim {
        let text = header.clone() + &exim_domain_list(&pins)?;
        write_output(path, &text, "--exim")?;
        exim_notes(&mut notes, path, &pins);
    }
    let dry = args
        .dry_run
        .then(|| dry_run(hops, relays, &pins, &pins_from));
    let output = BuildOutput {
        first: window.0,
        last: window.1,
        next_hops: hops.len(),
        next_hops_omitted: figures.next_hops_omitted,
        rule,
        not_pinned,
        pins: &pins,
        relays_known: Routes::find(hops).known || hops.is_empty(),
        smarthosts: &smarthosts,
        dry_run: dry.as_ref(),
    };
    if args.json {
        let mut text = serde_json::to_string(&output)?;
        text.push('\n');
        emit(&text)?;
    } else {
        let summary = summary(&output, hops) + &notes;
        if to_stdout > 0 {
            eprint!("{summary}");
        } else {
            emit(&summary)?;
        }
    }
    Ok(match dry {
        Some(d) if d.deferred_messages > 0 => 1,
        _ => 0,
    })
}

/// Symlinks followed by hand when working out where a path that does not exist yet leads.
const MAX_SYMLINKS: usize = 8;

/// Where a path leads, to tell whether two paths name one file.
#[derive(Debug)]
struct FileIdentity {
    /// Device and inode of the file, when it exists (symlinks followed).
    id: Option<(u64, u64)>,
    /// Its canonical path when it exists; else where a write would create it: the canonical
    /// parent joined with the file name (after a dangling symlink, its target's); else the
    /// path made absolute.
    location: PathBuf,
    /// The canonical parent joined with the file name, a symlink at the end not followed: the
    /// entry a directory walk finds.
    entry: PathBuf,
}

impl FileIdentity {
    fn of(path: &Path) -> FileIdentity {
        let id = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let entry = parent_and_name(path);
        let location = path
            .canonicalize()
            .unwrap_or_else(|_| creation_target(path, &entry));
        FileIdentity {
            id,
            location,
            entry,
        }
    }

    fn same_file(&self, other: &FileIdentity) -> bool {
        match (self.id, other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.location == other.location,
        }
    }

    /// Whether the file is, or would be created, under the canonical directory `dir`.
    fn is_under(&self, dir: &Path) -> bool {
        self.location.starts_with(dir) || self.entry.starts_with(dir)
    }
}

/// `path` with its parent canonicalized (a symlink at the end is kept), else `path` made
/// absolute.
fn parent_and_name(path: &Path) -> PathBuf {
    let joined = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent.canonicalize().ok().map(|p| p.join(name))
        }
        _ => None,
    };
    joined
        .or_else(|| std::path::absolute(path).ok())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Where writing a path that does not exist creates the file: through dangling symlinks
/// (at most [`MAX_SYMLINKS`]) to the last target's parent and name. `entry` is
/// [`parent_and_name`] of `path`.
fn creation_target(path: &Path, entry: &Path) -> PathBuf {
    let mut at = entry.to_path_buf();
    let mut link = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        let Ok(target) = std::fs::read_link(&link) else {
            break;
        };
        let dir = at.parent().map(Path::to_path_buf).unwrap_or_default();
        link = dir.join(target);
        at = parent_and_name(&link);
    }
    at
}

/// Refuses, before anything is read, outputs that would overwrite what the run reads: an
/// output (`--postfix`, `--exim`; not `-`) that is the other output, a log file given as
/// input, the `--from-report` file, a file found in an input directory (also
/// through a symlink there), or any path under an input directory, where it would be read
/// as a log on the next run (even under a hidden name the walk skips: simpler to keep
/// outputs out of log directories altogether). Paths are compared by device and inode when
/// the file exists, else by canonical location.
fn refuse_overwriting_inputs(args: &BuildArgs) -> anyhow::Result<()> {
    let outputs: Vec<(&str, &Path, FileIdentity)> =
        [("--postfix", &args.postfix), ("--exim", &args.exim)]
            .into_iter()
            .filter_map(|(option, path)| {
                let path = path.as_deref().filter(|p| *p != Path::new("-"))?;
                Some((option, path, FileIdentity::of(path)))
            })
            .collect();
    if let [(a, a_path, a_id), (b, b_path, b_id)] = outputs.as_slice()
        && a_id.same_file(b_id)
    {
        bail!(
            "{a} {} and {b} {} name the same file: one would overwrite the other",
            a_path.display(),
            b_path.display()
        );
    }
    if outputs.is_empty() {
        return Ok(());
    }
    let clash = |option: &str, output: &Path, input: String| {
        anyhow::anyhow!(
            "{option} {}: the same file as {input}; refusing to overwrite an input, write the \
             output elsewhere",
            output.display()
        )
    };
    // An output that is the file `input` (called `what` in the error).
    let same_as = |input: &Path, what: String| -> anyhow::Result<()> {
        let input_id = FileIdentity::of(input);
        match outputs.iter().find(|(_, _, id)| id.same_file(&input_id)) {
            Some((option, output, _)) => Err(clash(option, output, what)),
            None => Ok(()),
        }
    };
    // (`--pins` cannot be given with an output.)
    if let Some(input) = &args.from_report {
        same_as(input, format!("--from-report {}", input.display()))?;
    }
    for input in &args.inputs {
        if input.as_path() == Path::new("-") {
            continue;
        }
        let dir = std::fs::metadata(input)
            .is_ok_and(|m| m.is_dir())
            .then(|| input.canonicalize().ok())
            .flatten();
        let Some(dir) = dir else {
            same_as(input, format!("the input {}", input.display()))?;
            continue;
        };
        for (option, output, id) in &outputs {
            if id.is_under(&dir) {
                bail!(
                    "{option} {}: inside the input directory {}, whose files are all read as \
                     logs (it would be read as one on the next run); write it elsewhere",
                    output.display(),
                    input.display()
                );
            }
        }
        // A symlink in the directory may lead to an output elsewhere.
        let (found, _) = sigillo_logs::input::discover(std::slice::from_ref(input));
        for file in found {
            let sigillo_logs::input::SourcePath::File(file) = file else {
                continue;
            };
            // Only an existing output can be a file found there: compare inodes (one stat
            // per file; the run reads them all anyway).
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let file_id = Some((meta.dev(), meta.ino()));
            for (option, output, id) in &outputs {
                if id.id.is_some() && id.id == file_id {
                    return Err(clash(
                        option,
                        output,
                        format!(
                            "{}, read from the input directory {}",
                            file.display(),
                            input.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Reads the figures from `report --json` output.
fn read_report(path: &Path) -> anyhow::Result<ReportFigures> {
    let file =
        std::fs::File::open(path).with_context(|| format!("--from-report {}", path.display()))?;
    let figures: ReportFigures = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| {
            format!(
                "--from-report {}: expected the output of sigillo report --json",
                path.display()
            )
        })?;
    let Some(hops) = &figures.next_hops else {
        bail!(
            "--from-report {}: the report has no next_hops (written by an older sigillo?); run sigillo report --json again",
            path.display()
        );
    };
    check_next_hops(hops).with_context(|| format!("--from-report {}", path.display()))?;
    check_relays(figures.relays.as_deref().unwrap_or_default())
        .with_context(|| format!("--from-report {}", path.display()))?;
    Ok(figures)
}

/// Counts `report` can write: they add up. A hand-edited report that breaks this would pin
/// from figures no log gave.
fn check_next_hops(hops: &[NextHopFigures]) -> anyhow::Result<()> {
    for h in hops {
        if let Some(counts) = counts_not_adding_up(&h.mail) {
            bail!("next_hops {:?}: {counts}", h.domain);
        }
        if let Some(relays) = &h.relays
            && relays.messages() != Some(h.mail.messages)
        {
            bail!(
                "next_hops {:?}: the messages per relay host do not add up to its {} messages",
                h.domain,
                h.mail.messages
            );
        }
    }
    Ok(())
}

/// Per-relay counts `report` can write: they add up, as [`check_next_hops`] checks the
/// domains'.
fn check_relays(relays: &[RelayHostFigures]) -> anyhow::Result<()> {
    for r in relays {
        if let Some(counts) = counts_not_adding_up(&r.mail) {
            bail!(
                "relays {:?} (port {}): {counts}",
                r.host,
                r.port
                    .map_or_else(|| "not logged".to_owned(), |p| p.to_string()),
            );
        }
    }
    Ok(())
}

/// What is wrong with `m`'s counts when TLS, plaintext and unknown do not add up to the
/// messages, or more went over trusted TLS than over TLS; `None` when they are sound.
fn counts_not_adding_up(m: &MailFigures) -> Option<String> {
    let parts = [m.tls_messages, m.plain_messages, m.unknown_messages];
    let sum = parts.iter().try_fold(0u64, |a, &b| a.checked_add(b));
    (sum != Some(m.messages) || m.trusted_tls_messages > m.tls_messages).then(|| {
        format!(
            "the counts do not add up (messages {}, TLS {}, plaintext {}, unknown {}, trusted TLS {})",
            m.messages, m.tls_messages, m.plain_messages, m.unknown_messages, m.trusted_tls_messages
        )
    })
}

/// Writes `text` to `path` (`-`: standard output) whole or not at all: into a new file beside
/// it, then renamed over it, so an MTA reading the map meanwhile never sees it half written.
fn write_output(path: &Path, text: &str, option: &str) -> anyhow::Result<()> {
    if path == Path::new("-") {
        emit(text)?;
        return Ok(());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.sigillo-{}", std::process::id()));
    let written = std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.with_context(|| format!("{option} {}", path.display()))
}

/// Comment lines that open a written pin file: the window and the rule.
fn file_header(rule: &PinRule, (first, last): (Option<&str>, Option<&str>)) -> String {
    let share = share_words(rule.min_tls_share);
    let mut out = format!(
        "# From mail logged {} to {}: next-hop domains with at least {} delivered\n\
         # messages, {share} over TLS",
        first.unwrap_or("(none)"),
        last.unwrap_or("(none)"),
        rule.min_messages,
    );
    if rule.verify {
        let _ = write!(out, " (verify: {share} with a trusted certificate)");
    }
    out.push_str(".\n");
    out
}

/// `every one` for 1, else `at least 95%`.
fn share_words(share: f64) -> String {
    if share >= 1.0 {
        "every one".to_owned()
    } else {
        format!("at least {}%", (share * 1e4).round() / 1e2)
    }
}

/// Stands for the file in the usage lines when the output went to stdout (`-`).
const STDOUT_FILE: &str = "FILE";

/// The file name to put in the usage lines for the output `path`, and the line that says
/// what was written where (with a note first when the path is not certain). For stdout the
/// usage lines name [`STDOUT_FILE`], and no path is resolved: there is no file to name.
fn written_to(out: &mut String, path: &Path, written: &str) -> String {
    if path == Path::new("-") {
        let _ = writeln!(
            out,
            "\nWrote {written} to standard output. Once saved to a file, use it as below \
             ({STDOUT_FILE}: the file's absolute path):"
        );
        return STDOUT_FILE.to_owned();
    }
    let (config, note) = config_path(path);
    if let Some(note) = note {
        let _ = writeln!(out, "\n{note}");
    }
    let _ = writeln!(out, "\nWrote {written} to {}.", path.display());
    config.display().to_string()
}

/// The lines that use a written file, after [`written_to`].
fn usage_lines(out: &mut String, usage: &[String]) {
    for line in usage {
        let _ = writeln!(out, "  {line}");
    }
}

/// The path of the written file `path` to name in an MTA's configuration, and a note when it
/// is not certain. Exim takes a list item that does not start with `/` as a domain, not a
/// file, and Postfix resolves a relative table path against its own working directory, so a
/// relative `--exim`/`--postfix` path must not be pasted as given: the file's canonical path
/// (symlinks resolved), else `path` made absolute against the current directory, said so.
fn config_path(path: &Path) -> (PathBuf, Option<String>) {
    match path.canonicalize() {
        Ok(canonical) => (canonical, None),
        Err(e) => match std::path::absolute(path) {
            Ok(absolute) => {
                let note = format!(
                    "Note: cannot resolve {} ({e}); the lines below name {}, the current \
                     directory joined with it: check that it is the file written.",
                    path.display(),
                    absolute.display()
                );
                (absolute, Some(note))
            }
            Err(e) => {
                let note = format!(
                    "Note: cannot make {} absolute ({e}); the lines below name it as given: \
                     use its absolute path in the MTA's configuration.",
                    path.display()
                );
                (path.to_path_buf(), Some(note))
            }
        },
    }
}

fn postfix_notes(out: &mut String, path: &Path, pins: usize) {
    let p = written_to(out, path, &format!("{pins} pin(s) for Postfix"));
    let usage = [
        format!("postmap hash:{p}"),
        format!("main.cf: smtp_tls_policy_maps = hash:{p}   (or texthash:{p}, without postmap)"),
        format!("or serve them after DANE and MTA-STS: sigillo policy serve --pins {p}"),
    ];
    usage_lines(out, &usage);
}

fn exim_notes(out: &mut String, path: &Path, pins: &[PinnedPeer]) {
    // Relays are not domains: Exim's hosts_require_tls names them as hosts. A host list has
    // no ports (the relay's port is the transport's), and an IPv6 address holds colons, the
    // list separator: then the list separator is `;` (`<; ` before the expansion, which
    // leaves it at the start of the list).
    let domains = pins.iter().filter(|p| !p.is_relay()).count();
    let mut relays: Vec<String> = Vec::new();
    // One relay pinned under several spellings (an IPv6 address written two ways) is
    // named once, by its first: Exim matches a host list's addresses by value.
    let mut named: Vec<String> = Vec::new();
    for key in pins.iter().filter_map(PinnedPeer::relay_key) {
        let id = key
            .ipv6()
            .map_or_else(|| key.name().to_owned(), |ip| ip.to_string());
        if !named.contains(&id) {
            named.push(id);
            relays.push(key.name().to_owned());
        }
    }
    let ipv6 = relays.iter().any(|h| h.contains(':'));
    let (list_start, separator) = if ipv6 { ("<; ", " ; ") } else { ("", " : ") };
    let config = written_to(out, path, &format!("{domains} domain(s) for Exim"));
    let usage = [
        format!("domainlist tls_pinned = {config}"),
        "in the smtp transport: multi_domain = false".to_owned(),
        format!(
            "hosts_require_tls = {list_start}${{if match_domain{{$domain}}{{+tls_pinned}}{{*}}{{{}}}}}",
            relays.join(separator)
        ),
    ];
    usage_lines(out, &usage);
    if !relays.is_empty() {
        let _ = writeln!(
            out,
            "  (the relay host(s) {} are required to use TLS for every domain)",
            relays.join(", ")
        );
    }
}

fn summary(o: &BuildOutput<'_>, hops: &[NextHopFigures]) -> String {
    let mut out = String::new();
    let messages: u64 = hops
        .iter()
        .fold(0u64, |a, h| a.saturating_add(h.mail.messages));
    let _ = writeln!(
        out,
        "Next-hop domains with delivered mail: {} ({messages} messages), from {} to {}",
        o.next_hops,
        o.first.unwrap_or("(none)"),
        o.last.unwrap_or("(none)"),
    );
    let omitted = o.next_hops_omitted;
    if omitted.no_domain_messages > messages {
        let _ = writeln!(
            out,
            "Note: {} outbound messages named no recipient domain, so pins by domain do not \
             apply to them (a report from an older sigillo counts there the transactions that \
             carried several domains, as through a relay host, which Postfix looks up as \
             [relay]).",
            omitted.no_domain_messages
        );
    }
    if !o.relays_known {
        let _ = writeln!(
            out,
            "Note: the report names no relay hosts per next hop (written by an older sigillo), \
             so a smarthost cannot be told from MX hosts: every domain is judged as routed by \
             MX, as before. If a relayhost takes your mail, pins by domain do not apply: run \
             sigillo report --json again."
        );
    }
    for h in o.smarthosts {
        let port = h.port.map(|p| format!(" (port {p})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "Smarthost {}{port} took the mail of {} next-hop domain(s) ({} messages, {} over \
             TLS): Postfix looks their TLS policy up as {} (relayhost = {}), not by domain, so \
             the relay is judged instead of them.\n  (Postfix looks the relayhost up as written \
             in main.cf: if it is written otherwise, e.g. with :25 or a service name for the \
             port, an IPv6 address as [ipv6:…], or without brackets, edit the key to match.)",
            h.host, h.domains, h.messages, h.tls_messages, h.key, h.key
        );
        if !h.other_keys.is_empty() {
            let _ = writeln!(
                out,
                "  (The log spells this relay {} ways: {}, {}, as the relayhost or transports \
                 that name it write it. Postfix looks each spelling up as written, so the map \
                 has a line for each, with the one level judged on all the relay's mail.)",
                h.other_keys.len() + 1,
                h.key,
                h.other_keys.join(", ")
            );
        }
        if !h.port_logged {
            let _ = writeln!(
                out,
                "  (The log does not give the port this relay was reached on (Exim without \
                 +outgoing_port in log_selector, Sendmail, OpenSMTPD, or a report from an older \
                 sigillo), so {} assumes port 25: if the relayhost is on another port, the key \
                 is {}:PORT.)",
                h.key, h.key
            );
        }
    }
    let summed: Vec<&str> = o
        .smarthosts
        .iter()
        .filter(|h| h.summed_over_domains)
        .map(|h| h.key.as_str())
        .collect();
    if !summed.is_empty() {
        let _ = writeln!(
            out,
            "Note: the report has no figures of {} of its own (written by an older sigillo?), \
             so the figures above are the sums of the domains behind it, which may count a \
             transaction that carried several domains once for each: --min-messages and the \
             TLS share are judged on those. Run sigillo report --json again for figures that \
             count each transaction once.",
            summed.join(", ")
        );
    }
    if omitted.over_cap_messages > 0 {
        let _ = writeln!(
            out,
            "Note: {} messages went to domains past the report's cap of distinct domains.",
            omitted.over_cap_messages
        );
    }
    if let (Some(rule), Some(np)) = (&o.rule, &o.not_pinned) {
        let share = share_words(rule.min_tls_share);
        let _ = writeln!(
            out,
            "Rule: at least {} messages, {share} over TLS{}",
            rule.min_messages,
            if rule.verify {
                format!("; verify when {share} had a trusted certificate")
            } else {
                String::new()
            }
        );
        // A smarthost pinned under several spellings (a line each) counts once, and so do
        // its messages.
        let mut seen = HashSet::with_capacity(o.pins.len());
        let pinned: Vec<&PinnedPeer> = o
            .pins
            .iter()
            .filter(|p| seen.insert(p.match_key()))
            .collect();
        let verify = pinned
            .iter()
            .filter(|p| p.level == PinLevel::Verify)
            .count();
        let pinned_messages: u64 = pinned
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.evidence.messages));
        let relays = pinned.iter().filter(|p| p.is_relay()).count();
        let _ = writeln!(
            out,
            "Pinned: {} domain(s){} ({} encrypt, {verify} verify), {pinned_messages} messages",
            pinned.len() - relays,
            if relays > 0 {
                format!(" and {relays} smarthost(s)")
            } else {
                String::new()
            },
            pinned.len() - verify,
        );
        let mut why = format!(
            "Not pinned: {} with fewer messages, {} below the TLS share, {} not a domain name",
            np.few_messages, np.below_tls_share, np.not_a_domain
        );
        if np.via_relay > 0 {
            let _ = write!(why, ", {} sent through a smarthost", np.via_relay);
        }
        if np.partly_via_relay > 0 {
            let _ = write!(
                why,
                ", {} partly through a smarthost (skipped: which next hop Postfix looks up \
                 cannot be told)",
                np.partly_via_relay
            );
        }
        if np.relays_below_rule > 0 {
            let _ = write!(
                why,
                "; {} smarthost(s) below the rule",
                np.relays_below_rule
            );
        }
        let _ = writeln!(out, "{why}");
    }
    if let Some(d) = o.dry_run {
        dry_run_text(&mut out, d);
    }
    out
}

fn dry_run_text(out: &mut String, d: &DryRun) {
    let from = if d.pins_from == "rule" {
        "the rule's pins".to_owned()
    } else {
        format!("the pins in {}", d.pins_from)
    };
    let _ = writeln!(
        out,
        "\nDry run with {from}: {} of {} messages to {} pinned domain(s) seen would have been \
         deferred{}",
        d.deferred_messages,
        d.messages_to_pinned,
        d.pinned_domains_seen,
        if d.unknown_messages > 0 {
            format!(
                "; {} more, of unknown transport, might have been",
                d.unknown_messages
            )
        } else {
            String::new()
        }
    );
    if d.pins_via_relay > 0 {
        let _ = writeln!(
            out,
            "{} pinned domain(s) sent all their mail through a smarthost: Postfix looks up the \
             relay for them, so those pins would not have applied.",
            d.pins_via_relay
        );
    }
    if d.relay_pins_summed_over_domains > 0 {
        let _ = writeln!(
            out,
            "Note: {} relay pin(s) were checked against the sums of the domains behind the \
             relay (the report has no figures of the relay's own: written by an older \
             sigillo?), which may count a transaction that carried several domains once for \
             each.",
            d.relay_pins_summed_over_domains
        );
    }
    let unseen = d
        .pinned_domains
        .saturating_sub(d.pinned_domains_seen)
        .saturating_sub(d.pins_via_relay);
    if unseen > 0 {
        let _ = writeln!(
            out,
            "{unseen} pinned domain(s) had no delivered mail in the window."
        );
    }
    if d.domains.is_empty() {
        return;
    }
    let width = d.domains.iter().map(|x| x.domain.len()).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "  {:width$}  level    deferred  unknown  messages  first / last deferred",
        "domain"
    );
    for x in &d.domains {
        let level = match x.level {
            PinLevel::Encrypt => "encrypt",
            PinLevel::Verify => "verify",
        };
        let when = |m: &Option<MessageRef>| {
            m.as_ref()
                .map(|m| format!("{} {}", m.time, m.id))
                .unwrap_or_else(|| "-".to_owned())
        };
        let _ = writeln!(
            out,
            "  {:width$}  {level:7}  {:8}  {:7}  {:8}  {} / {}",
            x.domain,
            x.deferred,
            x.unknown,
            x.messages,
            when(&x.first),
            when(&x.last),
        );
        if !x.sample.is_empty() {
            let ids: Vec<&str> = x.sample.iter().map(|m| m.id.as_str()).collect();
            let _ = writeln!(out, "  {:width$}  e.g. {}", "", ids.join(" "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: u32) -> MessageRef {
        MessageRef {
            time: format!("2026-11-0{i}T00:00:00Z"),
            id: format!("Q{i}"),
        }
    }

    fn sample(ids: &[u32]) -> Option<MessageSample> {
        let refs: Vec<MessageRef> = ids.iter().map(|&i| at(i)).collect();
        Some(MessageSample {
            first: refs.first()?.clone(),
            last: refs.last()?.clone(),
            sample: refs,
        })
    }

    /// (domain, messages, tls, trusted, plain, unknown); samples from the plain and the
    /// untrusted TLS counts.
    fn hop(domain: &str, messages: u64, tls: u64, trusted: u64, plain: u64) -> NextHopFigures {
        let unknown = messages - tls - plain;
        NextHopFigures {
            domain: domain.to_owned(),
            mail: MailFigures {
                messages,
                tls_messages: tls,
                trusted_tls_messages: trusted,
                plain_messages: plain,
                unknown_messages: unknown,
                tls_share: 0.0,
                first_seen: "2026-11-01T00:00:00Z".into(),
                last_seen: "2026-11-08T00:00:00Z".into(),
                plain: sample(&(1..=plain.min(5) as u32).collect::<Vec<_>>()),
                untrusted_tls: sample(&(5..5 + (tls - trusted).min(4) as u32).collect::<Vec<_>>()),
            },
            relays: None,
        }
    }

    /// `hop` whose messages went to `relays` (host, messages).
    fn via(h: NextHopFigures, relays: &[(&str, u64)]) -> NextHopFigures {
        let relays: Vec<(&str, Option<u16>, u64)> =
            relays.iter().map(|&(h, n)| (h, None, n)).collect();
        via_port(h, &relays)
    }

    /// `hop` whose messages went to `relays` (host, port, messages).
    fn via_port(mut h: NextHopFigures, relays: &[(&str, Option<u16>, u64)]) -> NextHopFigures {
        let hosts = relays
            .iter()
            .map(|&(host, port, messages)| RelayCount {
                host: host.to_owned(),
                port,
                messages,
            })
            .collect();
        h.relays = Some(RelayFigures {
            hosts,
            other_messages: 0,
        });
        h
    }

    /// A hand-edited report is checked before anything is pinned from it, and spellings of
    /// one domain are judged together.
    #[test]
    fn figures_no_log_gave_are_refused_and_spellings_merged() {
        assert!(
            check_next_hops(&[hop("a.example", 10, 8, 8, 2), hop("b.example", 3, 3, 0, 0)]).is_ok()
        );
        // Two spellings of one domain are one domain, judged on all its mail.
        let merged = merge_spellings(&[
            hop("Example.com", 10, 10, 10, 0),
            hop("other.example", 1, 1, 1, 0),
            hop("example.com.", 5, 0, 0, 5),
        ]);
        let figures: Vec<(&str, u64, u64, u64)> = merged
            .iter()
            .map(|h| {
                (
                    h.domain.as_str(),
                    h.mail.messages,
                    h.mail.tls_messages,
                    h.mail.plain_messages,
                )
            })
            .collect();
        assert_eq!(
            figures,
            [("Example.com", 15, 10, 5), ("other.example", 1, 1, 0)]
        );
        assert!(merged[0].mail.plain.is_some());
        let rule = PinRule {
            min_messages: 1,
            min_tls_share: 1.0,
            verify: false,
        };
        let pins = select_pins(&merged, None, &rule).pins;
        assert_eq!(pins.len(), 1, "example.com had plaintext mail: not pinned");
        let mut more_tls = hop("big.example", 10, 10, 10, 0);
        more_tls.mail.tls_messages = 25;
        let err = check_next_hops(&[more_tls]).unwrap_err();
        assert!(format!("{err:#}").contains("do not add up"), "{err:#}");
        let mut trusted = hop("t.example", 10, 10, 10, 0);
        trusted.mail.trusted_tls_messages = 11;
        assert!(check_next_hops(&[trusted]).is_err());
        let mut huge = hop("h.example", 0, 0, 0, 0);
        (
            huge.mail.messages,
            huge.mail.tls_messages,
            huge.mail.plain_messages,
        ) = (u64::MAX, u64::MAX, 1);
        assert!(
            check_next_hops(&[huge]).is_err(),
            "an overflowing sum does not add up"
        );
    }

    #[test]
    fn pins_by_rule() {
        let hops = [
            hop("all-trusted.example", 12, 12, 12, 0),
            hop("all-tls.example", 20, 20, 3, 0),
            hop("one-plain.example", 20, 19, 19, 1),
            hop("one-unknown.example", 20, 19, 19, 0),
            hop("few.example", 9, 9, 9, 0),
            hop("[192.0.2.1]", 30, 30, 30, 0),
            hop("Upper.Example", 10, 10, 10, 0),
        ];
        // (min messages, min share, verify) → pins as "domain level"; not pinned (few, below, not a domain)
        type Case = (u64, f64, bool, &'static [&'static str], (u64, u64, u64));
        let cases: &[Case] = &[
            (
                10,
                1.0,
                false,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example encrypt",
                    "upper.example encrypt",
                ],
                (1, 2, 1),
            ),
            (
                10,
                1.0,
                true,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example verify",
                    "upper.example verify",
                ],
                (1, 2, 1),
            ),
            (
                10,
                0.95,
                true,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example verify",
                    "one-plain.example verify",
                    "one-unknown.example verify",
                    "upper.example verify",
                ],
                (1, 0, 1),
            ),
            (
                1,
                1.0,
                false,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example encrypt",
                    "few.example encrypt",
                    "upper.example encrypt",
                ],
                (0, 2, 1),
            ),
            (21, 1.0, false, &[], (6, 0, 1)),
        ];
        for (min_messages, share, verify, want, (few, below, bad)) in cases {
            let rule = PinRule {
                min_messages: *min_messages,
                min_tls_share: *share,
                verify: *verify,
            };
            let s = select_pins(&hops, None, &rule);
            let got: Vec<String> = s
                .pins
                .iter()
                .map(|p| format!("{} {}", p.domain, p.level.policy()))
                .collect();
            assert_eq!(got, *want, "{rule:?}");
            assert_eq!(
                s.not_pinned,
                NotPinned {
                    few_messages: *few,
                    below_tls_share: *below,
                    not_a_domain: *bad,
                    ..NotPinned::default()
                },
                "{rule:?}"
            );
        }
        let s = select_pins(
            &hops,
            None,
            &PinRule {
                min_messages: 10,
                min_tls_share: 1.0,
                verify: false,
            },
        );
        assert_eq!(
            s.pins[0].evidence,
            Evidence {
                messages: 20,
                tls: 20,
                verified: 3
            }
        );
    }

    #[test]
    fn dry_run_counts_what_pins_would_defer() {
        let hops = [
            hop("mixed.example", 10, 7, 5, 2),
            hop("clean.example", 10, 10, 10, 0),
            hop("Untrusted.Example", 4, 4, 0, 0),
        ];
        let pin = |d: &str, level| PinnedPeer::new(d, level, Evidence::default()).unwrap();
        let pins = [
            pin("mixed.example", PinLevel::Encrypt),
            pin("clean.example", PinLevel::Verify),
            pin("untrusted.example", PinLevel::Verify),
            pin("unseen.example", PinLevel::Encrypt),
        ];
        let d = dry_run(&hops, None, &pins, "pins.cf");
        assert_eq!(
            (
                d.pinned_domains,
                d.pinned_domains_seen,
                d.messages_to_pinned,
                d.deferred_messages,
                d.unknown_messages
            ),
            (4, 3, 24, 6, 1)
        );
        let rows: Vec<_> = d
            .domains
            .iter()
            .map(|x| {
                (
                    x.domain.as_str(),
                    x.deferred,
                    x.plain,
                    x.untrusted_tls,
                    x.unknown,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("untrusted.example", 4, 0, 4, 0),
                ("mixed.example", 2, 2, 0, 1)
            ]
        );
        let ids = |x: &DeferredDomain| x.sample.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&d.domains[0]), ["Q5", "Q6", "Q7", "Q8"]);
        // Under encrypt only the plaintext messages count, not the untrusted TLS ones.
        assert_eq!(ids(&d.domains[1]), ["Q1", "Q2"]);
        assert_eq!(d.domains[1].first, Some(at(1)));
        assert_eq!(d.domains[1].last, Some(at(2)));
        // The same domain pinned at verify also defers its untrusted TLS messages.
        let d = dry_run(
            &hops,
            None,
            &[pin("mixed.example", PinLevel::Verify)],
            "rule",
        );
        assert_eq!((d.deferred_messages, d.domains[0].untrusted_tls), (4, 2));
        assert_eq!(ids(&d.domains[0]), ["Q1", "Q2", "Q5", "Q6"]);
        assert_eq!(d.domains[0].last, Some(at(6)));
    }

    /// A relay pin's dry run meets a transaction that carried several domains in the sample
    /// of each: it lists its queue id once.
    #[test]
    fn a_message_of_several_domains_is_sampled_once() {
        let relay = "smtp.isp.example";
        let hops = [
            via(hop("c.example", 2, 1, 1, 1), &[(relay, 2)]),
            via(hop("d.example", 2, 1, 1, 1), &[(relay, 2)]),
        ];
        let pins =
            [PinnedPeer::relay(relay, None, PinLevel::Encrypt, Evidence::default()).unwrap()];
        let d = dry_run(&hops, None, &pins, "pins.cf");
        let ids: Vec<&str> = d.domains[0].sample.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["Q1"]);
        assert_eq!(
            (d.domains[0].first.clone(), d.domains[0].last.clone()),
            (Some(at(1)), Some(at(1)))
        );
    }

    const RULE: PinRule = PinRule {
        min_messages: 10,
        min_tls_share: 1.0,
        verify: false,
    };

    /// The smarthosts' hosts.
    fn hosts(routes: &Routes) -> Vec<&str> {
        routes.smarthosts.iter().map(|r| r.host.as_str()).collect()
    }

    fn keys(pins: &[PinnedPeer]) -> Vec<String> {
        pins.iter()
            .map(|p| format!("{} {}", p.domain, p.level.policy()))
            .collect()
    }

    /// `relayhost = [smtp.isp.example]`: the relay takes every domain's mail, so Postfix
    /// looks up `[smtp.isp.example]`, and that is what is pinned, on all the relay's mail.
    #[test]
    fn a_smarthost_is_pinned_instead_of_the_domains_behind_it() {
        let relay = "smtp.isp.example";
        let hops = [
            via(hop("a.example", 12, 12, 12, 0), &[(relay, 12)]),
            via(hop("b.example", 5, 5, 5, 0), &[(relay, 5)]),
            via(hop("c.example", 3, 3, 3, 0), &[(relay, 3)]),
            // Its own domain's mail too; still a smarthost.
            via(hop("isp.example", 10, 10, 10, 0), &[(relay, 10)]),
            // A transport to the partner's own host: routed past the relay.
            via(
                hop("partner.example", 10, 10, 10, 0),
                &[("mx.partner.example", 10)],
            ),
            // Split between the relay and its own MX: skipped.
            via(
                hop("split.example", 10, 10, 10, 0),
                &[(relay, 4), ("mx.split.example", 6)],
            ),
            // Four domains with one message each: the relay takes 9 of the 10 domains (90 %).
            via(hop("d.example", 1, 1, 1, 0), &[(relay, 1)]),
            via(hop("e.example", 1, 1, 1, 0), &[(relay, 1)]),
            via(hop("f.example", 1, 1, 1, 0), &[(relay, 1)]),
            via(hop("g.example", 1, 1, 1, 0), &[(relay, 1)]),
        ];
        let routes = Routes::find(&hops);
        assert!(routes.known);
        assert_eq!(hosts(&routes), [relay]);
        let s = select_pins(&hops, None, &RULE);
        assert_eq!(
            keys(&s.pins),
            ["[smtp.isp.example] encrypt", "partner.example encrypt"]
        );
        // The relay's evidence: the eight domains' mail, and split.example's 4 messages
        // (all its mail went over TLS, so these did).
        assert_eq!(
            s.pins[0].evidence,
            Evidence {
                messages: 38,
                tls: 38,
                verified: 38
            }
        );
        assert_eq!(
            s.not_pinned,
            NotPinned {
                via_relay: 8,
                partly_via_relay: 1,
                ..NotPinned::default()
            }
        );
        assert_eq!(
            s.smarthosts,
            [Smarthost {
                host: relay.into(),
                port: None,
                port_logged: false,
                key: "[smtp.isp.example]".into(),
                other_keys: Vec::new(),
                domains: 9,
                messages: 38,
                tls_messages: 38,
                trusted_tls_messages: 38,
                summed_over_domains: true
            }]
        );

        // One plaintext message through the relay: the relay is not pinned, nor the domains.
        let mut plain = hops.clone();
        plain[1] = via(hop("b.example", 5, 4, 4, 1), &[(relay, 5)]);
        let s = select_pins(&plain, None, &RULE);
        assert_eq!(keys(&s.pins), ["partner.example encrypt"]);
        assert_eq!(s.not_pinned.relays_below_rule, 1);
        // split.example had no plaintext mail, but hops with it: unknown through the relay.
        let mut unknown = hops.clone();
        unknown[5] = via(
            hop("split.example", 10, 9, 9, 0),
            &[(relay, 4), ("mx.split.example", 6)],
        );
        let s = select_pins(&unknown, None, &RULE);
        assert_eq!(s.smarthosts[0].tls_messages, 34);
        assert_eq!(s.not_pinned.relays_below_rule, 1);

        // A dry run of domain pins: those behind the relay would not have applied; the relay
        // pin is checked against the relay's mail (b.example's plaintext message).
        let pin = |d: &str| PinnedPeer::from_key(d, PinLevel::Encrypt, Evidence::default());
        let pins = [
            pin("a.example"),
            pin("partner.example"),
            pin("[smtp.isp.example]"),
        ]
        .map(Result::unwrap);
        let d = dry_run(&plain, None, &pins, "pins.cf");
        assert_eq!(
            (
                d.pinned_domains,
                d.pinned_domains_seen,
                d.pins_via_relay,
                d.messages_to_pinned,
                d.deferred_messages
            ),
            (3, 2, 1, 48, 1)
        );
        assert_eq!(d.domains[0].domain, "[smtp.isp.example]");
        assert_eq!(d.domains[0].sample, [at(1)]);
    }

    /// A relay's own figures (`host`, `port`, messages, tls, trusted, plain; the rest
    /// unknown), each transaction once; samples as [`hop`]'s, from 11 on.
    fn relay_mail_of(
        host: &str,
        port: Option<u16>,
        messages: u64,
        tls: u64,
        trusted: u64,
        plain: u64,
    ) -> RelayHostFigures {
        RelayHostFigures {
            host: host.to_owned(),
            port,
            mail: MailFigures {
                messages,
                tls_messages: tls,
                trusted_tls_messages: trusted,
                plain_messages: plain,
                unknown_messages: messages - tls - plain,
                tls_share: 0.0,
                first_seen: "2026-11-01T00:00:00Z".into(),
                last_seen: "2026-11-08T00:00:00Z".into(),
                plain: sample(
                    &(1..=plain.min(3) as u32)
                        .map(|i| i + 10)
                        .collect::<Vec<_>>(),
                ),
                untrusted_tls: sample(
                    &(1..=(tls - trusted).min(3) as u32)
                        .map(|i| i + 20)
                        .collect::<Vec<_>>(),
                ),
            },
            domains: 0,
        }
    }

    /// With the report's per-relay figures, a smarthost is judged on them (each transaction
    /// once), not on the sums of the domains behind it, which count a transaction of several
    /// domains for each: `--min-messages`, the TLS share, `verify`, and a relay pin's dry run.
    /// A relay logged without a port and on port 25 is one relay; a relay the figures do not
    /// name (past the report's cap) falls back to the sums, and says so.
    #[test]
    fn a_smarthost_is_judged_on_its_own_figures() {
        let isp = "smtp.isp.example";
        // Four domains, 10 messages each (40), through the relay: 12 transactions.
        let hops: Vec<NextHopFigures> = ["a", "b", "c", "d"]
            .iter()
            .map(|d| via(hop(&format!("{d}.example"), 10, 10, 10, 0), &[(isp, 10)]))
            .collect();
        let own = [relay_mail_of(isp, Some(25), 12, 12, 12, 0)];
        let s = select_pins(&hops, Some(&own), &RULE);
        assert_eq!(keys(&s.pins), ["[smtp.isp.example] encrypt"]);
        assert_eq!(
            s.pins[0].evidence,
            Evidence {
                messages: 12,
                tls: 12,
                verified: 12
            }
        );
        assert_eq!(
            (
                s.smarthosts[0].messages,
                s.smarthosts[0].summed_over_domains
            ),
            (12, false)
        );
        let rule = |min_messages, min_tls_share, verify| PinRule {
            min_messages,
            min_tls_share,
            verify,
        };
        // 12 transactions: too few for 13, though the domains' sums make 40.
        let s = select_pins(&hops, Some(&own), &rule(13, 1.0, false));
        assert!(s.pins.is_empty());
        assert_eq!(s.not_pinned.relays_below_rule, 1);
        assert_eq!(
            select_pins(&hops, None, &rule(13, 1.0, false)).pins.len(),
            1
        );

        // Logged without a port (Exim) and on port 25: one relay, 10 + 10 transactions, 18
        // over TLS (90 %), 15 of them trusted (75 %), 2 in clear.
        let split = [
            relay_mail_of(isp, None, 10, 9, 9, 1),
            relay_mail_of(isp, Some(25), 10, 9, 6, 1),
        ];
        let s = select_pins(&hops, Some(&split), &rule(20, 0.9, true));
        assert_eq!(keys(&s.pins), ["[smtp.isp.example] encrypt"]);
        assert_eq!(
            s.pins[0].evidence,
            Evidence {
                messages: 20,
                tls: 18,
                verified: 15
            }
        );
        assert!(
            select_pins(&hops, Some(&split), &rule(20, 0.95, false))
                .pins
                .is_empty()
        );
        let s = select_pins(&hops, Some(&split), &rule(20, 0.75, true));
        assert_eq!(keys(&s.pins), ["[smtp.isp.example] verify"]);
        // A dry run of a verify pin: the 2 in clear and the 3 untrusted transactions.
        let pin = |level| PinnedPeer::relay(isp, None, level, Evidence::default()).unwrap();
        let d = dry_run(&hops, Some(&split), &[pin(PinLevel::Verify)], "pins.cf");
        assert_eq!(
            (
                d.messages_to_pinned,
                d.deferred_messages,
                d.relay_pins_summed_over_domains
            ),
            (20, 5, 0)
        );
        let ids: Vec<&str> = d.domains[0].sample.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["Q11", "Q21", "Q22", "Q23"]);
        let d = dry_run(&hops, Some(&split), &[pin(PinLevel::Encrypt)], "pins.cf");
        assert_eq!((d.messages_to_pinned, d.deferred_messages), (20, 2));

        // The relay on another port only: this one is not in the figures, so the sums.
        let other = [relay_mail_of(isp, Some(587), 3, 3, 3, 0)];
        let s = select_pins(&hops, Some(&other), &RULE);
        assert_eq!(
            (
                s.smarthosts[0].messages,
                s.smarthosts[0].summed_over_domains
            ),
            (40, true)
        );
        let d = dry_run(&hops, Some(&other), &[pin(PinLevel::Encrypt)], "pins.cf");
        assert_eq!(
            (d.messages_to_pinned, d.relay_pins_summed_over_domains),
            (40, 1)
        );
        // An older report: the sums too.
        let d = dry_run(&hops, None, &[pin(PinLevel::Encrypt)], "pins.cf");
        assert_eq!(d.relay_pins_summed_over_domains, 1);
        // A relay pin whose relay took no domain's mail still meets its transactions.
        let mx = [relay_mail_of("mx.other.example", Some(25), 2, 1, 1, 1)];
        let mx_pin = PinnedPeer::relay(
            "mx.other.example",
            None,
            PinLevel::Encrypt,
            Evidence::default(),
        )
        .unwrap();
        let d = dry_run(&hops, Some(&mx), &[mx_pin], "pins.cf");
        assert_eq!(
            (
                d.pinned_domains_seen,
                d.messages_to_pinned,
                d.deferred_messages
            ),
            (1, 2, 1)
        );
    }

    /// Per-relay figures of a hand-edited report are checked as the domains' are.
    #[test]
    fn relay_figures_no_log_gave_are_refused() {
        assert!(check_relays(&[relay_mail_of("r.example", Some(25), 5, 4, 3, 1)]).is_ok());
        let mut more_tls = relay_mail_of("r.example", Some(25), 5, 4, 3, 1);
        more_tls.mail.tls_messages = 5;
        let err = check_relays(&[more_tls]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "relays \"r.example\" (port 25): the counts do not add up (messages 5, TLS 5, \
             plaintext 1, unknown 0, trusted TLS 3)"
        );
        let mut trusted = relay_mail_of("r.example", None, 5, 4, 3, 1);
        trusted.mail.trusted_tls_messages = 5;
        assert!(check_relays(&[trusted]).is_err());
    }

    /// MX hosts are not smarthosts: a provider's MX shared by a few of the domains, a relay
    /// that serves too few domains, and figures without relays (an older report).
    #[test]
    fn mx_hosts_and_unknown_relays_are_not_smarthosts() {
        let google = "aspmx.l.google.com";
        let mut hops = vec![
            via(hop("one.example", 10, 10, 10, 0), &[(google, 10)]),
            via(hop("two.example", 10, 10, 10, 0), &[(google, 10)]),
            via(hop("three.example", 10, 10, 10, 0), &[(google, 10)]),
            via(
                hop("gmail.com", 10, 10, 10, 0),
                &[("gmail-smtp-in.l.google.com", 10)],
            ),
            via(
                hop("own.example", 10, 10, 10, 0),
                &[("mail.own.example", 10)],
            ),
            via(
                hop("sub.other.example", 10, 10, 10, 0),
                &[("mx.other.example", 10)],
            ),
            via(
                hop("four.example", 10, 10, 10, 0),
                &[("mx.four.example", 10)],
            ),
        ];
        // Three of seven domains: below 90 %.
        assert_eq!(hosts(&Routes::find(&hops)), Vec::<&str>::new());
        assert_eq!(select_pins(&hops, None, &RULE).pins.len(), 7);
        // Four of seven, over half: still an MX, not a smarthost.
        hops[6] = via(hop("four.example", 10, 10, 10, 0), &[(google, 10)]);
        assert_eq!(hosts(&Routes::find(&hops)), Vec::<&str>::new());
        assert_eq!(select_pins(&hops, None, &RULE).pins.len(), 7);
        // Six of seven (86 %): still not.
        hops[3] = via(hop("five.example", 10, 10, 10, 0), &[(google, 10)]);
        hops[4] = via(hop("six.example", 10, 10, 10, 0), &[(google, 10)]);
        assert_eq!(hosts(&Routes::find(&hops)), Vec::<&str>::new());
        // Nine of ten (90 %): taken for a smarthost, the rule's known error (a server that
        // writes almost only to one provider's customers).
        for d in ["seven.example", "eight.example", "nine.example"] {
            hops.push(via(hop(d, 10, 10, 10, 0), &[(google, 10)]));
        }
        assert_eq!(hosts(&Routes::find(&hops)), [google]);
        // Related names do not count: mail.own.example for own.example and its subdomains.
        let own = "mail.own.example";
        let related_hops = [
            via(hop("own.example", 10, 10, 10, 0), &[(own, 10)]),
            via(hop("lists.own.example", 10, 10, 10, 0), &[(own, 10)]),
            via(hop("OWN.example.", 10, 10, 10, 0), &[(own, 10)]),
        ];
        assert!(Routes::find(&related_hops).smarthosts.is_empty());
        // An address as relay (relayhost = [192.0.2.25]) is related to no domain.
        let ip = "192.0.2.25";
        let by_ip = [
            via(hop("a.example", 10, 10, 10, 0), &[(ip, 10)]),
            via(hop("b.example", 10, 10, 10, 0), &[(ip, 10)]),
            via(hop("c.example", 10, 10, 10, 0), &[(ip, 10)]),
        ];
        assert_eq!(
            keys(&select_pins(&by_ip, None, &RULE).pins),
            ["[192.0.2.25] encrypt"]
        );
        // No relays (an older report): every domain judged as before.
        let unknown: Vec<NextHopFigures> = by_ip
            .iter()
            .cloned()
            .map(|mut h| {
                h.relays = None;
                h
            })
            .collect();
        let routes = Routes::find(&unknown);
        assert!(!routes.known && routes.smarthosts.is_empty());
        assert_eq!(select_pins(&unknown, None, &RULE).pins.len(), 3);
    }

    /// A smarthost on a port other than 25 is keyed with it (`relayhost =
    /// [smtp.isp.example]:587` is looked up as `[smtp.isp.example]:587`); the same host on
    /// port 25 is another next hop. An IPv6 relayhost given as an address is keyed by the
    /// address as logged, which is as written in main.cf. Dry runs find each relay's mail by
    /// its key, however the address is spelled.
    #[test]
    fn a_smarthost_is_keyed_with_its_port_and_an_ipv6_address() {
        let isp = "smtp.isp.example";
        let mut hops: Vec<NextHopFigures> = ["a", "b", "c", "d"]
            .iter()
            .map(|d| {
                via_port(
                    hop(&format!("{d}.example"), 10, 10, 10, 0),
                    &[(isp, Some(587), 10)],
                )
            })
            .collect();
        // Logged on port 25 (a transport to the same host): another next hop.
        hops.push(via_port(
            hop("e.example", 10, 10, 10, 0),
            &[(isp, Some(587), 6), (isp, Some(25), 4)],
        ));
        let routes = Routes::find(&hops);
        assert_eq!(
            routes.smarthosts,
            [Relay {
                host: isp.into(),
                port: Some(587)
            }]
        );
        let s = select_pins(&hops, None, &RULE);
        assert_eq!(keys(&s.pins), ["[smtp.isp.example]:587 encrypt"]);
        assert_eq!(s.pins[0].evidence.messages, 46);
        assert_eq!(s.not_pinned.partly_via_relay, 1);
        assert_eq!(
            (s.smarthosts[0].port, s.smarthosts[0].key.as_str()),
            (Some(587), "[smtp.isp.example]:587")
        );
        // A pin for the host on port 25 would not have met that mail.
        let pin =
            |key: &str| PinnedPeer::from_key(key, PinLevel::Encrypt, Evidence::default()).unwrap();
        let d = dry_run(&hops, None, &[pin("[smtp.isp.example]:587")], "pins.cf");
        assert_eq!((d.pinned_domains_seen, d.messages_to_pinned), (1, 46));
        let d = dry_run(&hops, None, &[pin("[smtp.isp.example]")], "pins.cf");
        assert_eq!((d.pinned_domains_seen, d.messages_to_pinned), (1, 4));

        // An IPv6 relayhost (`relayhost = [2001:DB8:0::25]`, logged on port 25).
        let v6 = "2001:db8:0::25";
        let hops: Vec<NextHopFigures> = ["a", "b", "c"]
            .iter()
            .map(|d| {
                via_port(
                    hop(&format!("{d}.example"), 10, 10, 10, 0),
                    &[(v6, Some(25), 10)],
                )
            })
            .collect();
        let s = select_pins(&hops, None, &RULE);
        // Keyed as logged, which is what a `hash:` map is asked for.
        assert_eq!(keys(&s.pins), ["[2001:db8:0::25] encrypt"]);
        assert_eq!(
            (
                s.smarthosts[0].port,
                s.smarthosts[0].host.as_str(),
                s.smarthosts[0].other_keys.len()
            ),
            (None, v6, 0)
        );
        for key in [
            "[2001:db8:0::25]",
            "[2001:db8::25]",
            "[ipv6:2001:db8::25]:25",
        ] {
            let d = dry_run(&hops, None, &[pin(key)], "pins.cf");
            assert_eq!(
                (d.pinned_domains_seen, d.messages_to_pinned),
                (1, 30),
                "{key}"
            );
        }
        let d = dry_run(&hops, None, &[pin("[2001:db8::25]:587")], "pins.cf");
        assert_eq!(d.pinned_domains_seen, 0);
        // The Exim list names the relay as a host; an IPv6 one with `;` as list separator.
        let mut out = String::new();
        exim_notes(&mut out, Path::new("-"), &s.pins);
        assert!(
            out.contains(
                "  hosts_require_tls = <; ${if match_domain{$domain}{+tls_pinned}{*}\
                 {2001:db8:0::25}}\n"
            ),
            "{out}"
        );

        // A smarthost whose logged name cannot be a key is not pinned, and said so.
        let hops: Vec<NextHopFigures> = ["a", "b", "c"]
            .iter()
            .map(|d| {
                via(
                    hop(&format!("{d}.example"), 10, 10, 10, 0),
                    &[("relay_1.isp", 10)],
                )
            })
            .collect();
        let s = select_pins(&hops, None, &RULE);
        assert!(s.pins.is_empty());
        assert_eq!(
            (s.not_pinned.not_a_domain, s.not_pinned.relays_below_rule),
            (1, 0)
        );
    }

    /// Two transports spell one IPv6 relay differently (`smtp:[2001:db8::25]`,
    /// `smtp:[2001:0db8:0:0::25]`, logged as written), each taking part of every domain's
    /// mail: one relay, judged once on all of it, and pinned under each spelling's key (what
    /// Postfix looks up for each transport), sorted, with that one level and evidence; the map
    /// reads back (`--pins` takes spellings of one relay at one level), the dry run counts
    /// the relay's mail once, and the Exim list names it once. On another port the address
    /// is another relay.
    #[test]
    fn ipv6_spellings_of_one_relay_are_judged_once_and_keyed_each() {
        let spellings = ["2001:db8::25", "2001:0db8:0:0::25", "2001:DB8:0::0:25"];
        let hops: Vec<NextHopFigures> = ["a", "b", "c", "d"]
            .iter()
            .map(|d| {
                let relays: Vec<(&str, Option<u16>, u64)> =
                    spellings.iter().map(|&s| (s, Some(25), 4)).collect();
                via_port(hop(&format!("{d}.example"), 12, 12, 12, 0), &relays)
            })
            .collect();
        let relays: Vec<RelayHostFigures> = spellings
            .iter()
            .map(|&s| relay_mail_of(s, Some(25), 16, 16, 16, 0))
            .collect();
        let want = [
            "[2001:0db8:0:0::25] encrypt",
            "[2001:db8:0::0:25] encrypt",
            "[2001:db8::25] encrypt",
        ];
        for relays in [None, Some(relays.as_slice())] {
            let s = select_pins(&hops, relays, &RULE);
            assert_eq!(keys(&s.pins), want, "{relays:?}");
            for pin in &s.pins {
                assert_eq!(pin.evidence.messages, 48, "{relays:?}");
            }
            assert_eq!(s.not_pinned.via_relay, 4);
            assert_eq!(
                s.smarthosts
                    .iter()
                    .map(|h| (h.host.as_str(), h.key.as_str(), &h.other_keys, h.domains))
                    .collect::<Vec<_>>(),
                [(
                    "2001:0db8:0:0::25",
                    "[2001:0db8:0:0::25]",
                    &vec!["[2001:db8:0::0:25]".to_owned(), "[2001:db8::25]".to_owned()],
                    4
                )]
            );
            // The map has a line for each and reads back.
            let map = policy_map_file(&s.pins).unwrap();
            assert_eq!(read_policy_map_file(&map), Ok(s.pins.clone()), "{map}");
            // The dry run counts the relay and its mail once.
            let d = dry_run(&hops, relays, &s.pins, "rule");
            assert_eq!(
                (
                    d.pinned_domains,
                    d.pinned_domains_seen,
                    d.messages_to_pinned
                ),
                (1, 1, 48),
                "{relays:?}"
            );
            let mut out = String::new();
            exim_notes(&mut out, Path::new("-"), &s.pins);
            assert!(out.contains("{2001:0db8:0:0::25}}\n"), "{out}");
        }

        // The same address on port 587 through one of the transports: a relay of its own.
        let hops: Vec<NextHopFigures> = ["a", "b", "c", "d"]
            .iter()
            .map(|d| {
                via_port(
                    hop(&format!("{d}.example"), 12, 12, 12, 0),
                    &[
                        ("2001:db8::25", Some(25), 6),
                        ("2001:0db8::25", Some(587), 6),
                    ],
                )
            })
            .collect();
        let s = select_pins(&hops, None, &RULE);
        assert_eq!(
            keys(&s.pins),
            ["[2001:0db8::25]:587 encrypt", "[2001:db8::25] encrypt"]
        );
        assert!(s.smarthosts.iter().all(|h| h.other_keys.is_empty()));
        let map = policy_map_file(&s.pins).unwrap();
        assert_eq!(read_policy_map_file(&map).unwrap(), s.pins);
    }

    /// The path pasted into an MTA's configuration is absolute: canonical when the file
    /// exists, else made absolute with a note saying so.
    #[test]
    fn configuration_paths_are_absolute() {
        let dir = std::env::temp_dir().canonicalize().unwrap();
        let (p, note) = config_path(&dir);
        assert_eq!((p, note), (dir.clone(), None));
        let missing = Path::new("no-such-dir-sigillo/tls_pinned");
        let (p, note) = config_path(missing);
        assert!(p.is_absolute(), "{}", p.display());
        assert!(p.ends_with(missing), "{}", p.display());
        let note = note.expect("a path that cannot be resolved is said so");
        assert!(
            note.starts_with("Note: cannot resolve no-such-dir-sigillo/tls_pinned ("),
            "{note}"
        );
        // Both usage texts use it.
        let mut out = String::new();
        exim_notes(&mut out, missing, &[]);
        assert!(
            out.contains(&format!("  domainlist tls_pinned = {}\n", p.display())),
            "{out}"
        );
        assert!(out.contains("Note: cannot resolve"), "{out}");
        let mut out = String::new();
        postfix_notes(&mut out, missing, 0);
        assert!(
            out.contains(&format!("  postmap hash:{}\n", p.display())),
            "{out}"
        );
        // Stdout is no file: nothing resolved, and the lines name FILE.
        for notes in [
            |o: &mut String| exim_notes(o, Path::new("-"), &[]),
            |o: &mut String| postfix_notes(o, Path::new("-"), 0),
        ] {
            let mut out = String::new();
            notes(&mut out);
            assert!(!out.contains("Note:") && !out.contains("/-"), "{out}");
            assert!(out.contains("to standard output."), "{out}");
            assert!(out.contains(" FILE\n") || out.contains(":FILE\n"), "{out}");
        }
    }

    #[test]
    fn shares_and_headers() {
        assert_eq!(parse_share("0.95"), Ok(0.95));
        assert_eq!(parse_share("1"), Ok(1.0));
        for bad in ["0", "1.5", "-0.1", "x", "NaN"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert!(reaches(19, 20, 0.95));
        assert!(!reaches(18, 20, 0.95));
        assert!(!reaches(0, 0, 0.5));
        let rule = PinRule {
            min_messages: 10,
            min_tls_share: 0.95,
            verify: true,
        };
        assert_eq!(
            file_header(
                &rule,
                (Some("2026-11-01T00:00:00Z"), Some("2026-11-08T00:00:00Z"))
            ),
            "# From mail logged 2026-11-01T00:00:00Z to 2026-11-08T00:00:00Z: next-hop domains with at least 10 delivered\n\
             # messages, at least 95% over TLS (verify: at least 95% with a trusted certificate).\n"
        );
    }
}
