//! The policy daemon's engine: answers one lookup key with what the sans-IO decision
//! ([`sigillo_policy::decide`]) makes of the static overrides, pins, DANE and the MTA-STS
//! cache, and keeps that information fresh.
//!
//! Two levels of cache:
//! - a hot map from lookup key to the encoded reply and the instant it stops being valid: a
//!   hit is one read-locked map lookup and a copy of the reply bytes, with no DNS, no SQLite
//!   and no lock held across an await;
//! - per domain, what DANE and MTA-STS lookups found (with their TTLs, negative answers
//!   included) and the cached MTA-STS policy, mirrored in the SQLite store.
//!
//! A miss brings the domain's state up to date, once per domain however many lookups wait
//! for it (single flight, in a spawned task that finishes even if the asker goes away), then
//! decides. A hit whose TXT recheck or proactive refresh is due is answered at once and the
//! refresh runs in the background; [`PolicyEngine::run_refresher`] also refreshes policies
//! nobody asked for before they expire.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use jiff::Timestamp;
use serde::Serialize;
use sigillo_policy::cache::{
    CacheRules, CachedPolicy, FetchResult, NegativeEntry, after_fetch, retry_after_failure,
};
use sigillo_policy::decide::{DaneState, DecideConfig, Decision, Inputs, decide};
use sigillo_policy::mta_sts::Policy;
use sigillo_policy::overrides::StaticOverrides;
use sigillo_policy::postfix::{NextHop, PinnedPeer, next_hop_match_key};
use sigillo_policy::socketmap::Reply;
use tokio::runtime::Handle;

use super::dns::{DaneLookup, PolicyDns, TxtLookup};
use super::fetch::{FetchError, PolicyFetcher};
use super::store::{Loaded, PolicyStore};

/// Where the engine gets DNS answers, policies and the time: the network
/// ([`NetSources`]) or, in tests, anything else.
pub trait PolicySources: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// Whether DANE is looked up at all.
    fn dane_enabled(&self) -> bool;

    /// The `_mta-sts.<domain>` TXT record.
    fn sts_record(&self, domain: &str) -> impl Future<Output = TxtLookup> + Send;

    /// The policy at `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
    fn fetch_policy(&self, domain: &str)
    -> impl Future<Output = Result<Policy, FetchError>> + Send;

    /// DANE for the domain's MX hosts.
    fn dane(&self, domain: &str) -> impl Future<Output = DaneLookup> + Send;
}

/// The real sources: DNS through [`PolicyDns`], policies through [`PolicyFetcher`].
#[derive(Debug, Clone)]
pub struct NetSources {
    /// The resolvers.
    pub dns: PolicyDns,
    /// The HTTPS client.
    pub fetcher: PolicyFetcher,
}

impl PolicySources for NetSources {
    fn dane_enabled(&self) -> bool {
        self.dns.dane_enabled()
    }

    fn sts_record(&self, domain: &str) -> impl Future<Output = TxtLookup> + Send {
        self.dns.sts_record(domain)
    }

    fn fetch_policy(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Policy, FetchError>> + Send {
        self.fetcher.fetch(domain)
    }

    fn dane(&self, domain: &str) -> impl Future<Output = DaneLookup> + Send {
        self.dns.dane(domain)
    }
}

/// Settings of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How decisions are made (DANE level, TLSRPT attributes).
    pub decide: DecideConfig,
    /// MTA-STS caching rules (TXT recheck, proactive refresh, fetch retry, negative TTLs).
    pub rules: CacheRules,
    /// How long a failed DNS lookup (and so a `TEMP` answer) is reused before trying again.
    pub dns_failure_ttl: Duration,
    /// DANE answers are reused for their DNS TTL, clamped to this range.
    pub dane_ttl_min: Duration,
    /// See [`EngineConfig::dane_ttl_min`].
    pub dane_ttl_max: Duration,
    /// Most keys in the hot cache (past it, expired entries are dropped, then all).
    pub hot_capacity: usize,
    /// Most proactive refreshes [`PolicyEngine::run_refresher`] runs at once.
    pub refresh_concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            decide: DecideConfig::default(),
            rules: CacheRules::default(),
            dns_failure_ttl: Duration::from_secs(30),
            dane_ttl_min: Duration::from_secs(60),
            dane_ttl_max: Duration::from_secs(3600),
            hot_capacity: 200_000,
            refresh_concurrency: 8,
        }
    }
}

/// Something worth a log line, reported through the engine's event sink.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A policy was fetched and cached.
    Fetched {
        domain: String,
        id: String,
        policy: Policy,
    },
    /// A fetch failed; `kept` says whether a still-valid cached policy goes on applying.
    FetchFailed {
        domain: String,
        error: FetchError,
        kept: bool,
    },
    /// A cached policy expired and was dropped.
    Expired { domain: String, id: String },
    /// A lookup that was not a cache hit was decided.
    Decided { key: String, decision: Decision },
}

/// Counters since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Lookups answered from the hot cache.
    pub hits: u64,
    /// Lookups that had to decide (and maybe look things up) first.
    pub misses: u64,
    /// Domain refreshes run (each may do DNS lookups and a fetch).
    pub refreshes: u64,
    /// Policy fetches that succeeded.
    pub fetches: u64,
    /// Policy fetches that failed.
    pub fetch_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    refreshes: AtomicU64,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
}

/// A reply ready to send, and how long it may be.
#[derive(Debug)]
struct HotEntry {
    /// The encoded netstring.
    reply: Box<[u8]>,
    /// Served until this instant (exclusive).
    until: Timestamp,
    /// From this instant a background refresh is due (`Timestamp::MAX`: never).
    refresh_at: Timestamp,
    /// A background refresh was started for this entry.
    refreshing: AtomicBool,
}

/// What DANE lookups found, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DaneEntry {
    state: DaneState,
    until: Timestamp,
    detail: String,
}

/// The last `_mta-sts` TXT lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum TxtStatus {
    #[default]
    Unknown,
    Record {
        id: String,
    },
    Absent {
        note: Option<String>,
    },
    Failed {
        message: String,
    },
}

/// The MTA-STS side of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StsEntry {
    cached: Option<CachedPolicy>,
    txt: TxtStatus,
    /// Look the TXT record up again at or after this.
    txt_next: Timestamp,
    /// The last fetch failure, if the last fetch failed.
    fetch_error: Option<FetchError>,
    /// No fetch before this (set after a failure).
    fetch_next: Timestamp,
}

impl StsEntry {
    /// When the TXT record was last found missing or failing: not before `txt_next` (its
    /// negative TTL, or the failure backoff). A cached policy's proactive refresh waits for
    /// it too, so a removed record or a DNS outage costs one query per TTL, not one per
    /// lookup. `MIN` when the record was found.
    fn txt_backoff(&self) -> Timestamp {
        match self.txt {
            TxtStatus::Absent { .. } | TxtStatus::Failed { .. } => self.txt_next,
            _ => Timestamp::MIN,
        }
    }
}

impl Default for StsEntry {
    fn default() -> Self {
        Self {
            cached: None,
            txt: TxtStatus::Unknown,
            txt_next: Timestamp::MIN,
            fetch_error: None,
            fetch_next: Timestamp::MIN,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DomainState {
    dane: Option<DaneEntry>,
    sts: StsEntry,
}

/// Until when a domain's state answers without lookups, and when a refresh is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Validity {
    until: Timestamp,
    refresh_at: Timestamp,
}

/// Everything `--check` shows about one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The key asked for.
    pub key: String,
    /// The decision.
    pub decision: Decision,
    /// The socketmap reply it gives, as sent (`OK secure …`, `NOTFOUND `, `TEMP …`).
    pub reply: String,
    /// What DANE lookups found, if they were made.
    pub dane: Option<String>,
    /// What the `_mta-sts` TXT lookup found, if it was made.
    pub sts_record: Option<String>,
    /// The cached MTA-STS policy, if any.
    pub sts_policy: Option<CachedPolicy>,
    /// The last policy fetch failure, if the last fetch failed.
    pub fetch_error: Option<String>,
}

type EventSink = Arc<dyn Fn(&EngineEvent) + Send + Sync>;
type Flight = Shared<BoxFuture<'static, ()>>;

/// The engine; share it as `Arc<PolicyEngine<_>>` between connections.
pub struct PolicyEngine<S> {
    sources: S,
    config: EngineConfig,
    overrides: StaticOverrides,
    pins: HashMap<String, PinnedPeer>,
    store: Option<PolicyStore>,
    hot: RwLock<HashMap<Box<str>, HotEntry>>,
    domains: Mutex<HashMap<String, DomainState>>,
    inflight: Mutex<HashMap<String, Flight>>,
    counters: Counters,
    events: Option<EventSink>,
}

impl<S> std::fmt::Debug for PolicyEngine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("config", &self.config)
            .field("overrides", &self.overrides.len())
            .field("pins", &self.pins.len())
            .finish_non_exhaustive()
    }
}

fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// Whether a DANE state decides the answer whatever MTA-STS says.
fn dane_decides(state: DaneState) -> bool {
    matches!(
        state,
        DaneState::Usable | DaneState::Bogus | DaneState::TlsaLookupFailed
    )
}

impl<S: PolicySources> PolicyEngine<S> {
    /// An engine with no overrides, pins or store.
    pub fn new(sources: S, config: EngineConfig) -> Self {
        Self {
            sources,
            config,
            overrides: StaticOverrides::default(),
            pins: HashMap::new(),
            store: None,
            hot: RwLock::new(HashMap::new()),
            domains: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            events: None,
        }
    }

    /// Static overrides, which win over every other source.
    pub fn with_overrides(mut self, overrides: StaticOverrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Pins from history (a later pin for the same domain replaces an earlier one), found by
    /// [`PinnedPeer::match_key`]: a relay pin answers its key however Postfix spells it
    /// (`[ipv6:2001:db8::25]` for `[2001:db8::25]`, `[host]:25` for `[host]`).
    pub fn with_pins(mut self, pins: Vec<PinnedPeer>) -> Self {
        self.pins = pins.into_iter().map(|p| (p.match_key(), p)).collect();
        self
    }

    /// A store to save policies in, and the policies it held when opened.
    pub fn with_store(mut self, store: PolicyStore, loaded: Loaded) -> Self {
        let rules = self.config.rules;
        let domains = self
            .domains
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (domain, cached) in loaded.policies {
            let sts = StsEntry {
                txt: TxtStatus::Record {
                    id: cached.id.clone(),
                },
                txt_next: add(cached.checked_at, rules.txt_recheck),
                cached: Some(cached),
                ..StsEntry::default()
            };
            domains.insert(domain, DomainState { dane: None, sts });
        }
        self.store = Some(store);
        self
    }

    /// Where events (fetches, failures, decided misses) are reported.
    pub fn with_events(mut self, sink: impl Fn(&EngineEvent) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(sink));
        self
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
            fetches: c.fetches.load(Ordering::Relaxed),
            fetch_failures: c.fetch_failures.load(Ordering::Relaxed),
        }
    }

    /// How many MTA-STS policies are cached.
    pub fn cached_policies(&self) -> usize {
        self.lock_domains()
            .values()
            .filter(|d| d.sts.cached.is_some())
            .count()
    }

    fn emit(&self, event: EngineEvent) {
        if let Some(sink) = &self.events {
            sink(&event);
        }
    }

    fn lock_domains(&self) -> std::sync::MutexGuard<'_, HashMap<String, DomainState>> {
        self.domains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the cached reply for `key` to `out` if there is a valid one, and says whether
    /// it did. Never waits: a due refresh is started in the background.
    pub fn answer_cached(self: &Arc<Self>, key: &str, out: &mut Vec<u8>) -> bool {
        self.answer_cached_with(key, out, None)
    }

    /// [`answer_cached`](Self::answer_cached), with the refresh it may start spawned on
    /// `runtime` (the server answers hits on a thread of its own and does the network work
    /// elsewhere).
    pub fn answer_cached_on(
        self: &Arc<Self>,
        key: &str,
        out: &mut Vec<u8>,
        runtime: &Handle,
    ) -> bool {
        self.answer_cached_with(key, out, Some(runtime))
    }

    fn answer_cached_with(
        self: &Arc<Self>,
        key: &str,
        out: &mut Vec<u8>,
        runtime: Option<&Handle>,
    ) -> bool {
        let now = self.sources.now();
        let refresh = {
            let hot = self.hot.read().unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = hot.get(key) else {
                return false;
            };
            if now >= entry.until {
                return false;
            }
            out.extend_from_slice(&entry.reply);
            now >= entry.refresh_at && !entry.refreshing.swap(true, Ordering::Relaxed)
        };
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        if refresh {
            let engine = self.clone();
            let domain = key.to_owned();
            let refresh = async move { engine.refresh_once(&domain).await };
            match runtime {
                Some(runtime) => drop(runtime.spawn(refresh)),
                None => drop(tokio::spawn(refresh)),
            }
        }
        true
    }

    /// The reply for `key`: from the hot cache, or after bringing the domain's state up to
    /// date.
    pub async fn answer(self: &Arc<Self>, key: &str) -> Reply {
        let mut out = Vec::new();
        if self.answer_cached(key, &mut out) {
            return match sigillo_policy::socketmap::decode_reply(&out) {
                Ok(Some((reply, _))) => reply,
                _ => Reply::Temp("internal error: bad cached reply".into()),
            };
        }
        self.decide(key).await.reply()
    }

    /// Decides `key` (the slow path: lookups when the state is not current) and caches the
    /// reply for later hits.
    pub async fn decide(self: &Arc<Self>, key: &str) -> Decision {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let next_hop = NextHop::parse(key);
        let domain = match &next_hop {
            NextHop::Domain(d) if self.overrides.lookup(&next_hop).is_none() => d.clone(),
            _ => {
                // Overrides and keys that are not plain domains need no lookup; a relay key
                // (`[host]`, `[host]:port`) may have a pin.
                let pinned = match &next_hop {
                    NextHop::Other(key) => self.pins.get(&next_hop_match_key(key)),
                    _ => None,
                };
                let decision = decide(
                    &Inputs {
                        static_override: self.overrides.lookup(&next_hop),
                        pinned,
                        ..Inputs::new(&next_hop)
                    },
                    self.sources.now(),
                    &self.config.decide,
                );
                self.remember(
                    key,
                    &next_hop,
                    &decision,
                    Validity {
                        until: Timestamp::MAX,
                        refresh_at: Timestamp::MAX,
                    },
                );
                self.report_decided(key, &decision);
                return decision;
            }
        };
        let now = self.sources.now();
        let current = {
            let domains = self.lock_domains();
            domains
                .get(&domain)
                .is_some_and(|state| now < self.validity(state, now).until)
        };
        if !current {
            self.refresh_once(&domain).await;
        }
        let now = self.sources.now();
        // The domain's state is copied out, and the decision made without the lock: a policy
        // of thousands of patterns does not hold up every other lookup.
        let state = (self.lock_domains().get(&domain).cloned()).unwrap_or_default();
        let decision = self.decide_domain(&next_hop, &domain, &state, now);
        let validity = self.validity(&state, now);
        self.remember(key, &next_hop, &decision, validity);
        self.report_decided(key, &decision);
        decision
    }

    /// [`PolicyEngine::decide`] with what was found on the way, for `--check`.
    pub async fn explain(self: &Arc<Self>, key: &str) -> Explanation {
        let decision = self.decide(key).await;
        let state = match NextHop::parse(key) {
            NextHop::Domain(d) => self.lock_domains().get(&d).cloned(),
            _ => None,
        };
        let state = state.unwrap_or_default();
        let sts_record = match &state.sts.txt {
            TxtStatus::Unknown => None,
            TxtStatus::Record { id } => Some(format!("v=STSv1; id={id}")),
            TxtStatus::Absent { note: None } => Some("no MTA-STS record".to_owned()),
            TxtStatus::Absent { note: Some(note) } => Some(note.clone()),
            TxtStatus::Failed { message } => Some(format!("lookup failed: {message}")),
        };
        Explanation {
            key: key.to_owned(),
            reply: decision.reply().to_string(),
            decision,
            dane: state.dane.map(|d| d.detail),
            sts_record,
            sts_policy: state.sts.cached,
            fetch_error: state.sts.fetch_error.map(|e| e.to_string()),
        }
    }

    fn report_decided(&self, key: &str, decision: &Decision) {
        if self.events.is_some() {
            self.emit(EngineEvent::Decided {
                key: key.to_owned(),
                decision: decision.clone(),
            });
        }
    }

    /// Stores the reply for later hits, when the key is in canonical form (what Postfix
    /// sends); other spellings are decided each time, from the domain state, without lookups.
    fn remember(&self, key: &str, next_hop: &NextHop, decision: &Decision, validity: Validity) {
        if next_hop.canonical_key() != key {
            return;
        }
        let Ok(reply) = decision.reply().to_bytes() else {
            return; // decide() guarantees encodable answers; nothing to cache otherwise
        };
        let entry = HotEntry {
            reply: reply.into_boxed_slice(),
            until: validity.until,
            refresh_at: validity.refresh_at,
            refreshing: AtomicBool::new(false),
        };
        let now = self.sources.now();
        let mut hot = self.hot.write().unwrap_or_else(PoisonError::into_inner);
        if hot.len() >= self.config.hot_capacity && !hot.contains_key(key) {
            hot.retain(|_, e| now < e.until);
            if hot.len() >= self.config.hot_capacity {
                hot.clear();
            }
        }
        hot.insert(key.into(), entry);
    }

    fn decide_domain(
        &self,
        next_hop: &NextHop,
        domain: &str,
        state: &DomainState,
        now: Timestamp,
    ) -> Decision {
        let mut inputs = Inputs::new(next_hop);
        inputs.static_override = self.overrides.lookup(next_hop);
        inputs.dane = match &state.dane {
            Some(d) if self.sources.dane_enabled() => d.state,
            _ => DaneState::NotChecked,
        };
        inputs.sts.cached = state.sts.cached.as_ref();
        inputs.sts.lookup_failed = matches!(state.sts.txt, TxtStatus::Failed { .. });
        inputs.pinned = self.pins.get(domain);
        decide(&inputs, now, &self.config.decide)
    }

    /// Until when the decision from `state` holds, and when to refresh in the background.
    fn validity(&self, state: &DomainState, now: Timestamp) -> Validity {
        let dane_until = if self.sources.dane_enabled() {
            state.dane.as_ref().map_or(Timestamp::MIN, |d| d.until)
        } else {
            Timestamp::MAX
        };
        let sts = &state.sts;
        let (sts_until, refresh_at) = match sts.cached.as_ref().filter(|c| c.is_valid_at(now)) {
            Some(cached) => {
                let proactive = cached
                    .proactive_refresh_at(&self.config.rules)
                    .max(sts.fetch_next)
                    .max(sts.txt_backoff());
                (cached.expires_at(), sts.txt_next.min(proactive))
            }
            None => (sts.txt_next, Timestamp::MAX),
        };
        Validity {
            until: dane_until.min(sts_until),
            refresh_at,
        }
    }

    /// Refreshes `domain`'s state, sharing one refresh among concurrent callers.
    pub async fn refresh_once(self: &Arc<Self>, domain: &str) {
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(domain) {
                Some(flight) => flight.clone(),
                None => {
                    let engine = self.clone();
                    let owned = domain.to_owned();
                    let task = tokio::spawn(async move {
                        engine.refresh(&owned).await;
                        engine
                            .inflight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&owned);
                    });
                    let flight: Flight = async move {
                        let _ = task.await;
                    }
                    .boxed()
                    .shared();
                    inflight.insert(domain.to_owned(), flight.clone());
                    flight
                }
            }
        };
        flight.await;
    }

    /// Brings `domain`'s state up to date: DANE and the TXT record when their answers have
    /// expired (concurrently), then a policy fetch when the RFC 8461 rules ask for one.
    async fn refresh(self: &Arc<Self>, domain: &str) {
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        let rules = self.config.rules;
        let now = self.sources.now();
        let snapshot = self.lock_domains().get(domain).cloned().unwrap_or_default();
        let dane_enabled = self.sources.dane_enabled();
        let need_dane = dane_enabled && snapshot.dane.as_ref().is_none_or(|d| d.until <= now);
        let proactive_due = snapshot
            .sts
            .cached
            .as_ref()
            .filter(|c| c.is_valid_at(now))
            .is_some_and(|c| now >= c.proactive_refresh_at(&rules))
            && snapshot.sts.fetch_next <= now
            && snapshot.sts.txt_backoff() <= now;
        let need_txt = snapshot.sts.txt_next <= now || proactive_due;
        let (dane, txt) = futures::join!(
            async {
                match need_dane {
                    true => Some(self.sources.dane(domain).await),
                    false => None,
                }
            },
            async {
                match need_txt {
                    true => Some(self.sources.sts_record(domain).await),
                    false => None,
                }
            }
        );
        let now = self.sources.now();
        let dane = match dane {
            Some(lookup) => Some(self.dane_entry(lookup, now)),
            None => snapshot.dane,
        };
        let dane_decisive = dane.as_ref().is_some_and(|d| dane_decides(d.state));
        let mut sts = snapshot.sts;
        let had_policy = sts.cached.is_some();
        match txt {
            None => {
                // The id is known but nothing was fetched (DANE decided): once DANE no longer
                // decides, fetch under that id.
                let id = match &sts.txt {
                    TxtStatus::Record { id } => Some(id.clone()),
                    _ => None,
                };
                let valid = sts.cached.as_ref().is_some_and(|c| c.is_valid_at(now));
                if let Some(id) = id.filter(|_| !valid && !dane_decisive) {
                    self.after_record(domain, &mut sts, &id, false).await;
                }
            }
            Some(TxtLookup::Record(record)) => {
                self.after_record(domain, &mut sts, &record.id, dane_decisive)
                    .await;
                sts.txt = TxtStatus::Record { id: record.id };
            }
            Some(TxtLookup::NoRecord { negative_ttl, note }) => {
                sts.txt = TxtStatus::Absent { note };
                sts.txt_next = NegativeEntry::new(now, negative_ttl, &rules).until;
            }
            Some(TxtLookup::Failed { message }) => {
                sts.txt = TxtStatus::Failed { message };
                sts.txt_next = add(now, self.config.dns_failure_ttl);
            }
        }
        let now = self.sources.now();
        if let Some(expired) = sts.cached.take_if(|c| !c.is_valid_at(now)) {
            self.emit(EngineEvent::Expired {
                domain: domain.to_owned(),
                id: expired.id,
            });
        }
        if had_policy
            && sts.cached.is_none()
            && let Some(store) = &self.store
        {
            store.delete(domain);
        }
        let state = DomainState { dane, sts };
        let validity = self.validity(&state, now);
        let next_hop = NextHop::Domain(domain.to_owned());
        let decision = self.decide_domain(&next_hop, domain, &state, now);
        self.lock_domains().insert(domain.to_owned(), state);
        // Replace the hot entry, so a stale answer (and its refresh flag) goes at once.
        self.remember(domain, &next_hop, &decision, validity);
    }

    fn dane_entry(&self, lookup: DaneLookup, now: Timestamp) -> DaneEntry {
        let ttl = match lookup.state {
            DaneState::LookupFailed | DaneState::TlsaLookupFailed | DaneState::TlsaPartlyFailed => {
                self.config.dns_failure_ttl
            }
            _ => lookup
                .ttl
                .map(|s| Duration::from_secs(u64::from(s)))
                .unwrap_or(self.config.rules.negative_ttl_default)
                .clamp(
                    self.config.dane_ttl_min,
                    self.config.dane_ttl_max.max(self.config.dane_ttl_min),
                ),
        };
        DaneEntry {
            state: lookup.state,
            until: add(now, ttl),
            detail: lookup.detail,
        }
    }

    /// The TXT record carries `id`: fetch when the rules say so and no failure backoff
    /// holds, else note that the id was seen.
    async fn after_record(&self, domain: &str, sts: &mut StsEntry, id: &str, dane_decisive: bool) {
        let rules = self.config.rules;
        let now = self.sources.now();
        let valid = sts.cached.as_ref().filter(|c| c.is_valid_at(now));
        let has_valid = valid.is_some();
        let wanted = match valid {
            // Without a policy, fetch unless DANE decides anyway.
            None => !dane_decisive,
            Some(c) => c.refresh_needed(now, Some(id), &rules).is_some(),
        };
        if !wanted || sts.fetch_next > now {
            if let Some(c) = sts.cached.as_mut().filter(|c| c.id == id) {
                c.confirm_id(now);
                if let Some(store) = &self.store {
                    store.put(domain, c);
                }
            }
            sts.txt_next = if wanted && !has_valid {
                sts.fetch_next // a fetch is waiting out its backoff: look again then
            } else {
                add(now, rules.txt_recheck)
            };
            return;
        }
        let result = self.sources.fetch_policy(domain).await;
        let now = self.sources.now();
        match result {
            Ok(policy) => {
                self.counters.fetches.fetch_add(1, Ordering::Relaxed);
                let fetched = FetchResult::Fetched {
                    id: id.to_owned(),
                    policy: policy.clone(),
                };
                sts.cached = after_fetch(sts.cached.take(), fetched, now);
                if let (Some(store), Some(c)) = (&self.store, &sts.cached) {
                    store.put(domain, c);
                }
                sts.fetch_error = None;
                sts.fetch_next = Timestamp::MIN;
                sts.txt_next = add(now, rules.txt_recheck);
                self.emit(EngineEvent::Fetched {
                    domain: domain.to_owned(),
                    id: id.to_owned(),
                    policy,
                });
            }
            Err(error) => {
                self.counters.fetch_failures.fetch_add(1, Ordering::Relaxed);
                sts.cached = after_fetch(sts.cached.take(), FetchResult::Failed, now);
                sts.fetch_next = retry_after_failure(now, &rules);
                sts.txt_next = match &sts.cached {
                    Some(_) => add(now, rules.txt_recheck).min(sts.fetch_next),
                    None => sts.fetch_next,
                };
                self.emit(EngineEvent::FetchFailed {
                    domain: domain.to_owned(),
                    error: error.clone(),
                    kept: sts.cached.is_some(),
                });
                sts.fetch_error = Some(error);
            }
        }
    }

    /// One pass of proactive refreshing: refreshes every cached policy whose TXT recheck or
    /// proactive refresh is due (at most `refresh_concurrency` at once), and forgets domain
    /// states that hold no policy and have expired. Returns how many domains it refreshed.
    pub async fn refresh_due(self: &Arc<Self>) -> usize {
        use futures::StreamExt;
        let now = self.sources.now();
        let due: Vec<String> = {
            let mut domains = self.lock_domains();
            domains.retain(|_, state| {
                state.sts.cached.is_some() || now < self.validity(state, now).until
            });
            domains
                .iter()
                .filter(|(_, state)| state.sts.cached.is_some())
                .filter(|(_, state)| now >= self.validity(state, now).refresh_at)
                .map(|(domain, _)| domain.clone())
                .collect()
        };
        {
            let mut hot = self.hot.write().unwrap_or_else(PoisonError::into_inner);
            hot.retain(|_, e| now < e.until);
        }
        let count = due.len();
        futures::stream::iter(due)
            .for_each_concurrent(
                self.config.refresh_concurrency.max(1),
                |domain| async move {
                    self.refresh_once(&domain).await;
                },
            )
            .await;
        count
    }

    /// Runs [`PolicyEngine::refresh_due`] every `interval`, forever.
    pub async fn run_refresher(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.refresh_due().await;
        }
    }

    /// Waits until the store has written everything queued (a no-op without a store).
    pub async fn flush(&self) -> Result<(), super::store::StoreError> {
        match &self.store {
            Some(store) => store.flush().await,
            None => Ok(()),
        }
    }
}
