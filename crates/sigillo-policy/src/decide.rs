//! The TLS policy decision for one lookup key, from what the daemon has gathered (static
//! overrides, DANE state, MTA-STS cache, pins), as a pure function of those inputs and `now`.
//!
//! Sources are tried in this order, the first that applies answers:
//!
//! 1. a static override for the exact key;
//! 2. DANE, for a domain whose MX hosts have DNSSEC-validated TLSA records:
//!    - usable records → `dane-only` by default ([`DaneAnswer`]): the MTA must authenticate
//!      with DANE and never falls back to plaintext, and MTA-STS never overrides DANE;
//!    - only unusable records → `dane`, with which Postfix applies RFC 7672 §2.2 itself
//!      (mandatory but unauthenticated TLS), or the MTA-STS answer when an `enforce` policy
//!      is cached (authenticated TLS, which satisfies both);
//!    - TLSA lookups that failed for some MX hosts (and no usable records elsewhere) →
//!      `dane`, so that Postfix skips those hosts itself, or the MTA-STS answer when an
//!      `enforce` policy is cached (it authenticates the other hosts); failed for every
//!      host → `TEMP`.
//!      A failed TLSA lookup never falls through to MTA-STS or a pin, which an attacker who
//!      drops TLSA queries could otherwise turn into unauthenticated TLS;
//!    - a DNSSEC-bogus answer → `TEMP`: RFC 7672 §2.1.1 forbids delivery to such a host, and
//!      falling through to weaker sources would hand an attacker who can break DNSSEC a
//!      downgrade;
//! 3. a valid cached MTA-STS policy in `enforce` mode → `secure match=<mx patterns>
//!    servername=hostname` (a cached policy applies even while DNS or the policy host fail,
//!    RFC 8461 §5.1); `testing` and `none` policies are not enforced;
//! 4. a pin from history → `encrypt` or `verify`.
//!
//! Otherwise the answer is `NOTFOUND` (Postfix uses its default level), or `TEMP` when a
//! DNS lookup failed, since then a policy may exist that could not be seen.
//! Keys other than plain domains (`.parent`, `[host]:port`) get only static overrides, and a
//! relay key (`[host]` or `[host]:port`, a bracketed next hop such as `relayhost =
//! [smtp.isp.example]:587`) also a pin made for that relay (`sigillo policy build`), matched
//! by [`crate::postfix::RelayKey::match_key`]: DANE and MTA-STS are domain policies.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cache::CachedPolicy;
use crate::mta_sts::Mode;
use crate::postfix::{
    NextHop, PinnedPeer, PolicyAnswer, TlsPolicy, TlsRptAttributes, next_hop_match_key,
};
use crate::socketmap::Reply;

/// What DANE lookups found for the domain's MX hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaneState {
    /// DANE is not looked at (disabled, or not yet known).
    NotChecked,
    /// No DNSSEC-validated TLSA records (insecure zone, or a secure denial).
    NoTlsa,
    /// DNSSEC-validated TLSA records, at least one usable ([`crate::dane::Tlsa::usability`]).
    Usable,
    /// DNSSEC-validated TLSA records, none usable.
    AllUnusable,
    /// DNSSEC validation failed: a bogus MX answer, or bogus TLSA answers for every MX host.
    Bogus,
    /// The MX lookup failed (SERVFAIL, timeout): DANE may or may not apply.
    LookupFailed,
    /// The TLSA lookup failed (or was DNSSEC-bogus) for every MX host looked at: none of them
    /// may be used (RFC 7672 §2.2), so nothing weaker may be answered either.
    TlsaLookupFailed,
    /// The TLSA lookup failed (or was bogus) for some MX hosts, and the others have no usable
    /// TLSA records: `dane`, so that Postfix looks TLSA up itself and skips the hosts whose
    /// lookup fails (RFC 7672 §2.2).
    TlsaPartlyFailed,
}

/// The MTA-STS side of the inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StsState<'a> {
    /// The cached policy for the domain, if any (expired ones are ignored).
    pub cached: Option<&'a CachedPolicy>,
    /// The `_mta-sts` TXT lookup failed at DNS level (not "no record").
    pub lookup_failed: bool,
}

/// Everything [`decide`] looks at for one key.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The key Postfix asked for.
    pub next_hop: &'a NextHop,
    /// The static override for this key ([`crate::overrides::StaticOverrides::lookup`]).
    pub static_override: Option<&'a PolicyAnswer>,
    /// DANE.
    pub dane: DaneState,
    /// MTA-STS.
    pub sts: StsState<'a>,
    /// The pin for this domain, if any.
    pub pinned: Option<&'a PinnedPeer>,
}

impl<'a> Inputs<'a> {
    /// Inputs with no information beyond the key: nothing checked, nothing cached.
    pub fn new(next_hop: &'a NextHop) -> Self {
        Self {
            next_hop,
            static_override: None,
            dane: DaneState::NotChecked,
            sts: StsState::default(),
            pinned: None,
        }
    }
}

/// The level answered for usable DANE records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaneAnswer {
    /// `dane-only` (default): an MX host without usable TLSA is skipped, never used in
    /// plaintext.
    #[default]
    DaneOnly,
    /// `dane`: opportunistic DANE; an MX host without TLSA is used with `may`.
    Dane,
}

/// Settings of the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecideConfig {
    /// The level for usable DANE records.
    pub dane_answer: DaneAnswer,
    /// Add TLSRPT attributes to MTA-STS answers (Postfix ≥ 3.10 only; see
    /// [`TlsRptAttributes`]).
    pub tlsrpt_attributes: bool,
}

/// Which source gave the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A static override.
    Override,
    /// DANE.
    Dane,
    /// MTA-STS.
    MtaSts,
    /// A pin from history.
    Pinned,
    /// No source applied.
    None,
}

/// The answer to give Postfix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Answer {
    /// `OK <policy>`.
    Policy(PolicyAnswer),
    /// `NOTFOUND `.
    NotFound,
    /// `TEMP <reason>`: Postfix defers the delivery.
    Temp(String),
}

/// A decision: the answer, where it came from, and a one-line reason for logs and `--check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What to answer.
    pub answer: Answer,
    /// Which source it came from.
    pub source: Source,
    /// Why, in words.
    pub reason: String,
}

impl Decision {
    fn new(answer: Answer, source: Source, reason: impl Into<String>) -> Self {
        Self {
            answer,
            source,
            reason: reason.into(),
        }
    }

    /// The socketmap reply for this decision (always encodable: see [`decide`]).
    pub fn reply(&self) -> Reply {
        match &self.answer {
            Answer::Policy(p) => Reply::Ok(p.to_string()),
            Answer::NotFound => Reply::NotFound,
            Answer::Temp(reason) => Reply::Temp(crate::socketmap::sanitize_text(reason)),
        }
    }
}

/// The answer for `inputs` at `now` (see the module docs for the order).
///
/// The answer always encodes as a socketmap reply: if an MTA-STS answer with TLSRPT
/// attributes would exceed [`MAX_REPLY_LEN`](crate::socketmap::MAX_REPLY_LEN) the attributes
/// are dropped, and any answer that still cannot be encoded becomes `TEMP`.
pub fn decide(inputs: &Inputs<'_>, now: Timestamp, config: &DecideConfig) -> Decision {
    let decision = decide_unchecked(inputs, now, config);
    if decision.reply().to_bytes().is_ok() {
        return decision;
    }
    // Only reachable with hand-built inputs (e.g. a PolicyAnswer holding a control
    // character): never hand Postfix something it would misread.
    Decision::new(
        Answer::Temp("policy answer cannot be encoded".to_owned()),
        decision.source,
        format!("{} (answer not encodable)", decision.reason),
    )
}

fn decide_unchecked(inputs: &Inputs<'_>, now: Timestamp, config: &DecideConfig) -> Decision {
    if let Some(answer) = inputs.static_override {
        return Decision::new(
            Answer::Policy(answer.clone()),
            Source::Override,
            "static override",
        );
    }
    let NextHop::Domain(domain) = inputs.next_hop else {
        if let (NextHop::Other(key), Some(pin)) = (inputs.next_hop, inputs.pinned)
            && pin.is_relay()
            && pin.match_key() == next_hop_match_key(key)
        {
            return pinned(pin);
        }
        return Decision::new(
            Answer::NotFound,
            Source::None,
            "not a plain domain: only static overrides apply",
        );
    };

    let mut dns_failure = None;
    match inputs.dane {
        DaneState::Usable => {
            let policy = match config.dane_answer {
                DaneAnswer::DaneOnly => TlsPolicy::DaneOnly,
                DaneAnswer::Dane => TlsPolicy::Dane,
            };
            return Decision::new(
                Answer::Policy(policy.into()),
                Source::Dane,
                "DNSSEC-validated usable TLSA records",
            );
        }
        state @ (DaneState::AllUnusable | DaneState::TlsaPartlyFailed) => {
            // Unusable records: RFC 7672 §2.2 asks for TLS, unauthenticated. Failed lookups:
            // Postfix skips those hosts, and the others have no usable records. Either way a
            // cached `enforce` policy asks for authenticated TLS (RFC 8461 §4.2) on every host,
            // which satisfies both and is never weaker than `dane`.
            let all_unusable = state == DaneState::AllUnusable;
            if let Some(cached) = inputs.sts.cached
                && cached.is_valid_at(now)
                && cached.policy.mode == Mode::Enforce
            {
                let mut d = sts_decision(domain, cached, config);
                d.reason.push_str(if all_unusable {
                    " (TLSA records, none usable: the stricter of the two)"
                } else {
                    " (TLSA lookups failed for some MX hosts: the stricter answer)"
                });
                return d;
            }
            return Decision::new(
                Answer::Policy(TlsPolicy::Dane.into()),
                Source::Dane,
                if all_unusable {
                    "DNSSEC-validated TLSA records, none usable: mandatory unauthenticated TLS"
                } else {
                    "TLSA lookups failed for some MX hosts: Postfix's own DANE lookups skip those hosts (RFC 7672 §2.2)"
                },
            );
        }
        DaneState::TlsaLookupFailed => {
            return Decision::new(
                Answer::Temp(format!("TLSA lookups failed for every MX host of {domain}")),
                Source::Dane,
                "TLSA lookups failed for every MX host: none may be used (RFC 7672 §2.2)",
            );
        }
        DaneState::Bogus => {
            return Decision::new(
                Answer::Temp(format!("DNSSEC validation failed for {domain}")),
                Source::Dane,
                "DNSSEC-bogus answer for the MX or TLSA records",
            );
        }
        DaneState::LookupFailed => dns_failure = Some("DANE (MX)"),
        DaneState::NoTlsa | DaneState::NotChecked => {}
    }

    let mut sts_note = None;
    // A valid cached policy applies while the TXT lookup fails (RFC 8461 §3.3), whatever its
    // mode: `testing` and `none` then mean deliver as without a policy, not defer.
    let cached_valid = inputs.sts.cached.is_some_and(|c| c.is_valid_at(now));
    if let Some(cached) = inputs.sts.cached {
        if !cached.is_valid_at(now) {
            sts_note = Some("cached MTA-STS policy expired");
        } else if cached.policy.mode == Mode::Enforce {
            return sts_decision(domain, cached, config);
        } else {
            sts_note = Some(if cached.policy.mode == Mode::Testing {
                "MTA-STS policy in testing mode: not enforced"
            } else {
                "MTA-STS policy in mode none"
            });
        }
    }
    if inputs.sts.lookup_failed && dns_failure.is_none() && !cached_valid {
        dns_failure = Some("MTA-STS TXT");
    }

    if let Some(pin) = inputs.pinned {
        return pinned(pin);
    }
    if let Some(what) = dns_failure {
        return Decision::new(
            Answer::Temp(format!("{what} lookup failed for {domain}")),
            Source::None,
            format!("{what} lookup failed and no cached policy applies"),
        );
    }
    Decision::new(
        Answer::NotFound,
        Source::None,
        sts_note.unwrap_or("no policy from any source"),
    )
}

/// The answer of a pin from history.
fn pinned(pin: &PinnedPeer) -> Decision {
    Decision::new(
        Answer::Policy(pin.level.policy().into()),
        Source::Pinned,
        format!(
            "pinned from history: {} of {} messages over TLS",
            pin.evidence.tls, pin.evidence.messages
        ),
    )
}

/// Whether `answer` fits an `OK` reply.
fn encodable(answer: &PolicyAnswer) -> bool {
    Reply::Ok(answer.to_string()).to_bytes().is_ok()
}

/// The `secure` answer for an enforced MTA-STS policy, kept within the reply limit.
fn sts_decision(domain: &str, cached: &CachedPolicy, config: &DecideConfig) -> Decision {
    let mut answer = PolicyAnswer::from(TlsPolicy::from_sts(&cached.policy));
    let mut reason = format!("MTA-STS policy id {} in enforce mode", cached.id);
    if config.tlsrpt_attributes {
        answer.tlsrpt = Some(TlsRptAttributes::for_sts(domain, &cached.policy));
        if !encodable(&answer) {
            answer.tlsrpt = None;
            reason.push_str(" (TLSRPT attributes dropped: reply too long)");
        }
    }
    if !encodable(&answer) {
        return Decision::new(
            Answer::Temp(format!("MTA-STS policy of {domain} too long to answer")),
            Source::MtaSts,
            "MTA-STS answer longer than a socketmap reply",
        );
    }
    Decision::new(Answer::Policy(answer), Source::MtaSts, reason)
}
