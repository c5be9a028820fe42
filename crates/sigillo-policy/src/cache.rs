//! MTA-STS caching rules (RFC 8461 §3.3, §5.1) as pure functions of the current time: when a
//! cached policy is still valid, when to look again or fetch again, what a fetch result does
//! to the cache, and how long a negative answer is remembered.
//!
//! The rules, in short:
//! - a policy is valid until `fetched_at + max_age`; a valid cached policy applies even when
//!   the TXT record has disappeared or DNS fails;
//! - the TXT id is looked up again every [`CacheRules::txt_recheck`]; a different id means
//!   fetching again now;
//! - a policy is fetched again proactively once less than `min(max_age / refresh_divisor,
//!   refresh_margin_cap)` of its life remains (defaults: a quarter of `max_age`, at most a
//!   day), so a policy host that is briefly down at expiry costs nothing;
//! - an unchanged TXT id does not extend a policy's life: only a successful fetch does;
//! - a failed fetch never drops a cached policy that is still valid ([`after_fetch`]);
//! - a negative answer (no `_mta-sts` record) is remembered for its DNS negative TTL,
//!   clamped to [`CacheRules::negative_ttl_min`]..=[`CacheRules::negative_ttl_max`].

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::mta_sts::Policy;

/// `ts + d`, saturating at the largest timestamp.
fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// Tunables of the caching rules (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRules {
    /// How often to look the `_mta-sts` TXT id up again while a cached policy is valid.
    pub txt_recheck: Duration,
    /// Refresh once less than `max_age / refresh_divisor` of a policy's life remains…
    pub refresh_divisor: u32,
    /// …or less than this, whichever is smaller.
    pub refresh_margin_cap: Duration,
    /// After a failed fetch, wait this long before fetching that domain again.
    pub fetch_retry: Duration,
    /// Shortest time a negative answer is remembered.
    pub negative_ttl_min: Duration,
    /// Longest time a negative answer is remembered.
    pub negative_ttl_max: Duration,
    /// How long a negative answer without a TTL (e.g. no SOA in the answer) is remembered,
    /// before clamping.
    pub negative_ttl_default: Duration,
}

impl Default for CacheRules {
    fn default() -> Self {
        Self {
            txt_recheck: Duration::from_secs(3600),
            refresh_divisor: 4,
            refresh_margin_cap: Duration::from_secs(86_400),
            fetch_retry: Duration::from_secs(300),
            negative_ttl_min: Duration::from_secs(60),
            negative_ttl_max: Duration::from_secs(3600),
            negative_ttl_default: Duration::from_secs(300),
        }
    }
}

/// A cached MTA-STS policy with the TXT id it was fetched under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// The `id=` of the `_mta-sts` record when the policy was fetched.
    pub id: String,
    /// The policy.
    pub policy: Policy,
    /// When it was fetched: its life of `max_age` seconds starts here.
    pub fetched_at: Timestamp,
    /// When the TXT id was last seen unchanged (or `fetched_at`).
    pub checked_at: Timestamp,
}

/// Why a cached policy should be fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshReason {
    /// Its life is over.
    Expired,
    /// The TXT record now carries another id.
    IdChanged,
    /// Little of its life remains.
    Proactive,
}

impl CachedPolicy {
    /// A policy fetched at `now` under TXT id `id`.
    pub fn new(id: String, policy: Policy, now: Timestamp) -> Self {
        Self {
            id,
            policy,
            fetched_at: now,
            checked_at: now,
        }
    }

    /// When the policy stops being valid: `fetched_at + max_age`.
    pub fn expires_at(&self) -> Timestamp {
        add(
            self.fetched_at,
            Duration::from_secs(u64::from(self.policy.max_age)),
        )
    }

    /// Whether the policy still applies at `now` (strictly before [`Self::expires_at`]).
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at()
    }

    /// How much life remains at `now` (zero once expired).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        now.duration_until(self.expires_at())
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the TXT id is due to be looked up again at `now`.
    pub fn txt_recheck_due(&self, now: Timestamp, rules: &CacheRules) -> bool {
        now >= add(self.checked_at, rules.txt_recheck)
    }

    /// Whether to fetch the policy again at `now`, given the TXT id just seen (`None`: not
    /// looked up, or no record: neither is a reason to fetch while the policy is valid).
    pub fn refresh_needed(
        &self,
        now: Timestamp,
        seen_id: Option<&str>,
        rules: &CacheRules,
    ) -> Option<RefreshReason> {
        if !self.is_valid_at(now) {
            return Some(RefreshReason::Expired);
        }
        if seen_id.is_some_and(|id| id != self.id) {
            return Some(RefreshReason::IdChanged);
        }
        (now >= self.proactive_refresh_at(rules)).then_some(RefreshReason::Proactive)
    }

    /// From when on the policy is due for a proactive refresh: `expires_at` minus
    /// `min(max_age / refresh_divisor, refresh_margin_cap)`.
    pub fn proactive_refresh_at(&self, rules: &CacheRules) -> Timestamp {
        let life = Duration::from_secs(u64::from(self.policy.max_age));
        let margin = (life / rules.refresh_divisor.max(1)).min(rules.refresh_margin_cap);
        self.expires_at()
            .checked_sub(margin)
            .unwrap_or(self.fetched_at)
    }

    /// Records that the TXT id was seen unchanged at `now` (does not extend the life).
    pub fn confirm_id(&mut self, now: Timestamp) {
        self.checked_at = now;
    }
}

/// The result of fetching a policy over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResult {
    /// A valid policy, with the TXT id it was fetched under.
    Fetched { id: String, policy: Policy },
    /// No valid policy could be had (HTTP error, timeout, bad certificate, invalid policy).
    Failed,
}

/// The cache entry after a fetch at `now`: the new policy on success; on failure the old
/// one if it is still valid, else none. A failed fetch never drops a valid cached policy.
pub fn after_fetch(
    cached: Option<CachedPolicy>,
    result: FetchResult,
    now: Timestamp,
) -> Option<CachedPolicy> {
    match result {
        FetchResult::Fetched { id, policy } => Some(CachedPolicy::new(id, policy, now)),
        FetchResult::Failed => cached.filter(|c| c.is_valid_at(now)),
    }
}

/// When to try fetching again after a failed fetch at `now`.
pub fn retry_after_failure(now: Timestamp, rules: &CacheRules) -> Timestamp {
    add(now, rules.fetch_retry)
}

/// How long to remember a negative answer whose DNS negative TTL is `dns_ttl` seconds
/// (RFC 2308: the smaller of the SOA's TTL and MINIMUM), clamped to the rules' bounds.
pub fn negative_ttl(dns_ttl: Option<u32>, rules: &CacheRules) -> Duration {
    let ttl = dns_ttl
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(rules.negative_ttl_default);
    ttl.clamp(
        rules.negative_ttl_min,
        rules.negative_ttl_max.max(rules.negative_ttl_min),
    )
}

/// A remembered negative answer (e.g. "no `_mta-sts` record").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeEntry {
    /// Until when it holds.
    pub until: Timestamp,
}

impl NegativeEntry {
    /// A negative answer seen at `now` with DNS negative TTL `dns_ttl`.
    pub fn new(now: Timestamp, dns_ttl: Option<u32>, rules: &CacheRules) -> Self {
        Self {
            until: add(now, negative_ttl(dns_ttl, rules)),
        }
    }

    /// Whether it still holds at `now`.
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::Mode;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn cached(max_age: u32) -> CachedPolicy {
        let policy = Policy {
            mode: Mode::Enforce,
            mx: vec!["mx.example.com".parse().unwrap()],
            max_age,
            extensions: Vec::new(),
        };
        CachedPolicy::new("id1".into(), policy, at(0))
    }

    #[test]
    fn validity_ends_at_max_age() {
        let c = cached(86_400);
        assert_eq!(c.expires_at(), at(86_400));
        assert!(c.is_valid_at(at(0)));
        assert!(c.is_valid_at(at(86_399)));
        assert!(!c.is_valid_at(at(86_400)));
        assert_eq!(c.remaining(at(86_000)), Duration::from_secs(400));
        assert_eq!(c.remaining(at(90_000)), Duration::ZERO);
        assert!(!cached(0).is_valid_at(at(0)));
    }

    #[test]
    fn refresh_reasons() {
        let rules = CacheRules::default();
        let week = cached(604_800);
        let day = cached(86_400);
        // (policy, seconds after fetch, TXT id seen, expected)
        let cases: Vec<(&CachedPolicy, i64, Option<&str>, Option<RefreshReason>)> = vec![
            (&week, 10, None, None),
            (&week, 10, Some("id1"), None),
            (&week, 10, Some("id2"), Some(RefreshReason::IdChanged)),
            // A week's margin is capped at one day.
            (&week, 604_800 - 86_401, None, None),
            (
                &week,
                604_800 - 86_399,
                None,
                Some(RefreshReason::Proactive),
            ),
            (&week, 604_800, Some("id1"), Some(RefreshReason::Expired)),
            // A day's margin is a quarter: 6 hours.
            (&day, 86_400 - 21_601, None, None),
            (&day, 86_400 - 21_599, None, Some(RefreshReason::Proactive)),
            (&day, 90_000, None, Some(RefreshReason::Expired)),
        ];
        for (c, secs, seen, want) in cases {
            assert_eq!(
                c.refresh_needed(at(secs), seen, &rules),
                want,
                "max_age {} at +{secs}s seen {seen:?}",
                c.policy.max_age
            );
        }
    }

    #[test]
    fn proactive_refresh_instants() {
        let rules = CacheRules::default();
        // A week: a day before expiry (the cap); a day: a quarter of it before.
        assert_eq!(
            cached(604_800).proactive_refresh_at(&rules),
            at(604_800 - 86_400)
        );
        assert_eq!(
            cached(86_400).proactive_refresh_at(&rules),
            at(86_400 - 21_600)
        );
        assert_eq!(cached(0).proactive_refresh_at(&rules), at(0));
    }

    #[test]
    fn confirming_the_id_moves_the_recheck_not_the_expiry() {
        let rules = CacheRules::default();
        let mut c = cached(86_400);
        assert!(!c.txt_recheck_due(at(3599), &rules));
        assert!(c.txt_recheck_due(at(3600), &rules));
        c.confirm_id(at(3600));
        assert!(!c.txt_recheck_due(at(7199), &rules));
        assert_eq!(c.expires_at(), at(86_400));
    }

    #[test]
    fn a_failed_fetch_keeps_a_valid_policy_only() {
        let c = cached(1000);
        assert_eq!(
            after_fetch(Some(c.clone()), FetchResult::Failed, at(999)),
            Some(c.clone())
        );
        assert_eq!(
            after_fetch(Some(c.clone()), FetchResult::Failed, at(1000)),
            None
        );
        assert_eq!(after_fetch(None, FetchResult::Failed, at(5)), None);
        let fresh = after_fetch(
            Some(c.clone()),
            FetchResult::Fetched {
                id: "id2".into(),
                policy: c.policy.clone(),
            },
            at(500),
        )
        .unwrap();
        assert_eq!((fresh.id.as_str(), fresh.fetched_at), ("id2", at(500)));
        assert_eq!(fresh.expires_at(), at(1500));
    }

    #[test]
    fn negative_ttls_are_clamped() {
        let rules = CacheRules::default();
        let cases = [
            (Some(0), 60),
            (Some(30), 60),
            (Some(900), 900),
            (Some(86_400), 3600),
            (None, 300),
        ];
        for (ttl, want) in cases {
            assert_eq!(
                negative_ttl(ttl, &rules),
                Duration::from_secs(want),
                "{ttl:?}"
            );
        }
        let n = NegativeEntry::new(at(0), Some(900), &rules);
        assert!(n.is_fresh(at(899)));
        assert!(!n.is_fresh(at(900)));
        assert_eq!(retry_after_failure(at(0), &rules), at(300));
    }

    #[test]
    fn far_future_saturates() {
        let mut c = cached(MAX);
        c.fetched_at = Timestamp::MAX;
        assert_eq!(c.expires_at(), Timestamp::MAX);
        assert!(!c.is_valid_at(Timestamp::MAX));
    }

    const MAX: u32 = crate::mta_sts::MAX_MAX_AGE;
}
