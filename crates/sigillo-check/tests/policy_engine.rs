//! The policy engine against scripted sources and a clock the test moves: what is looked up
//! when, what is cached for how long, and what is answered meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use sigillo_check::policy::dns::{DaneLookup, TxtLookup};
use sigillo_check::policy::engine::{EngineConfig, PolicyEngine, PolicySources};
use sigillo_check::policy::fetch::FetchError;
use sigillo_policy::decide::{DaneState, Source};
use sigillo_policy::mta_sts::{Policy, StsRecord};
use sigillo_policy::overrides::StaticOverrides;
use sigillo_policy::postfix::{Evidence, PinLevel, PinnedPeer, read_policy_map_file};
use sigillo_policy::socketmap::Reply;

const T0: i64 = 1_700_000_000;

/// Answers from tables the test edits, and counts every query.
#[derive(Default)]
struct Scripted {
    now: Mutex<i64>,
    dane: bool,
    txt: Mutex<HashMap<String, TxtLookup>>,
    policies: Mutex<HashMap<String, Result<Policy, FetchError>>>,
    dane_answers: Mutex<HashMap<String, DaneLookup>>,
    fetch_delay: Mutex<Duration>,
    txt_queries: AtomicUsize,
    fetches: AtomicUsize,
    dane_queries: AtomicUsize,
}

impl Scripted {
    fn new(dane: bool) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(T0),
            dane,
            ..Self::default()
        })
    }

    fn advance(&self, secs: i64) {
        *self.now.lock().unwrap() += secs;
    }

    fn record(&self, domain: &str, id: &str) {
        let record = StsRecord::parse(&format!("v=STSv1; id={id}")).unwrap();
        self.txt
            .lock()
            .unwrap()
            .insert(domain.into(), TxtLookup::Record(record));
    }

    fn txt(&self, domain: &str, answer: TxtLookup) {
        self.txt.lock().unwrap().insert(domain.into(), answer);
    }

    fn policy(&self, domain: &str, mode: &str, max_age: u32) {
        let text = format!("version: STSv1\nmode: {mode}\nmx: *.{domain}\nmax_age: {max_age}\n");
        self.policies
            .lock()
            .unwrap()
            .insert(domain.into(), Ok(Policy::parse(text.as_bytes()).unwrap()));
    }

    fn fetch_fails(&self, domain: &str) {
        self.policies.lock().unwrap().insert(
            domain.into(),
            Err(FetchError::Status {
                url: format!("https://mta-sts.{domain}/.well-known/mta-sts.txt"),
                status: 503,
            }),
        );
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.txt_queries.load(Ordering::SeqCst),
            self.fetches.load(Ordering::SeqCst),
            self.dane_queries.load(Ordering::SeqCst),
        )
    }
}

/// The engine's handle on the script (the test keeps another).
#[derive(Clone)]
struct Src(Arc<Scripted>);

impl std::ops::Deref for Src {
    type Target = Scripted;

    fn deref(&self) -> &Scripted {
        &self.0
    }
}

impl PolicySources for Src {
    fn now(&self) -> Timestamp {
        Timestamp::from_second(*self.now.lock().unwrap()).unwrap()
    }

    fn dane_enabled(&self) -> bool {
        self.dane
    }

    async fn sts_record(&self, domain: &str) -> TxtLookup {
        self.txt_queries.fetch_add(1, Ordering::SeqCst);
        self.txt
            .lock()
            .unwrap()
            .get(domain)
            .cloned()
            .unwrap_or(TxtLookup::NoRecord {
                negative_ttl: Some(300),
                note: None,
            })
    }

    async fn fetch_policy(&self, domain: &str) -> Result<Policy, FetchError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let delay = *self.fetch_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.policies
            .lock()
            .unwrap()
            .get(domain)
            .cloned()
            .unwrap_or(Err(FetchError::Status {
                url: domain.into(),
                status: 404,
            }))
    }

    async fn dane(&self, domain: &str) -> DaneLookup {
        self.dane_queries.fetch_add(1, Ordering::SeqCst);
        self.dane_answers
            .lock()
            .unwrap()
            .get(domain)
            .cloned()
            .unwrap_or(DaneLookup {
                state: DaneState::NoTlsa,
                ttl: Some(600),
                detail: "MX RRset not DNSSEC-signed".into(),
            })
    }
}

type Engine = Arc<PolicyEngine<Src>>;

fn engine(sources: &Arc<Scripted>) -> Engine {
    Arc::new(PolicyEngine::new(
        Src(sources.clone()),
        EngineConfig::default(),
    ))
}

/// The reply as sent, e.g. `OK secure match=… servername=hostname`.
async fn ask(engine: &Engine, key: &str) -> String {
    engine.answer(key).await.to_string()
}

const SECURE: &str = "OK secure match=.sts.example servername=hostname";

#[tokio::test]
async fn an_enforced_policy_is_fetched_once_then_answered_from_memory() {
    let src = Scripted::new(false);
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 86_400);
    let engine = engine(&src);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    assert_eq!(src.counts(), (1, 1, 0));
    for _ in 0..100 {
        let mut out = Vec::new();
        assert!(engine.answer_cached("sts.example", &mut out));
        assert_eq!(out, format!("{}:{SECURE},", SECURE.len()).as_bytes());
    }
    src.advance(3599);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    assert_eq!(src.counts(), (1, 1, 0), "no lookup within the TXT recheck");
    let stats = engine.stats();
    assert_eq!((stats.hits, stats.misses, stats.fetches), (101, 1, 1));
}

#[tokio::test]
async fn a_domain_without_mta_sts_is_remembered_for_its_negative_ttl() {
    let src = Scripted::new(true);
    src.txt(
        "plain.example",
        TxtLookup::NoRecord {
            negative_ttl: Some(900),
            note: None,
        },
    );
    let engine = engine(&src);
    assert_eq!(ask(&engine, "plain.example").await, "NOTFOUND ");
    assert_eq!(src.counts(), (1, 0, 1));
    // DANE's answer (TTL 600) expires first: only DANE is looked up again.
    src.advance(599);
    assert_eq!(ask(&engine, "plain.example").await, "NOTFOUND ");
    assert_eq!(src.counts(), (1, 0, 1));
    src.advance(1);
    assert_eq!(ask(&engine, "plain.example").await, "NOTFOUND ");
    assert_eq!(src.counts(), (1, 0, 2));
    // At 900 s the negative TXT answer has expired.
    src.advance(300);
    assert_eq!(ask(&engine, "plain.example").await, "NOTFOUND ");
    assert_eq!(src.counts(), (2, 0, 2));
}

#[tokio::test]
async fn negative_ttls_are_clamped_to_the_rules() {
    let src = Scripted::new(false);
    src.txt(
        "zero.example",
        TxtLookup::NoRecord {
            negative_ttl: Some(0),
            note: None,
        },
    );
    let engine = engine(&src);
    assert_eq!(ask(&engine, "zero.example").await, "NOTFOUND ");
    src.advance(59);
    assert_eq!(ask(&engine, "zero.example").await, "NOTFOUND ");
    assert_eq!(src.counts().0, 1, "a TTL of 0 still counts as 60 s");
    src.advance(1);
    assert_eq!(ask(&engine, "zero.example").await, "NOTFOUND ");
    assert_eq!(src.counts().0, 2);
}

#[tokio::test]
async fn a_dns_failure_is_temp_unless_a_cached_policy_applies() {
    let src = Scripted::new(false);
    src.txt(
        "broken.example",
        TxtLookup::Failed {
            message: "SERVFAIL".into(),
        },
    );
    let engine = engine(&src);
    let reply = engine.answer("broken.example").await;
    assert_eq!(reply.status(), "TEMP", "{reply}");
    // The failure is reused for 30 s, then looked up again.
    src.advance(29);
    assert_eq!(engine.answer("broken.example").await.status(), "TEMP");
    assert_eq!(src.counts().0, 1);
    src.advance(1);
    engine.answer("broken.example").await;
    assert_eq!(src.counts().0, 2);

    // A domain with a cached policy keeps it through DNS failures.
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 86_400);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    src.txt(
        "sts.example",
        TxtLookup::Failed {
            message: "timeout".into(),
        },
    );
    src.advance(3600);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    tokio::task::yield_now().await;
    engine.refresh_once("sts.example").await;
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
}

#[tokio::test]
async fn a_failed_fetch_never_drops_a_valid_policy() {
    let src = Scripted::new(false);
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 7200);
    let engine = engine(&src);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    // A new id asks for a fetch; the fetch fails; the old policy still holds.
    src.record("sts.example", "id2");
    src.fetch_fails("sts.example");
    src.advance(3600);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    engine.refresh_once("sts.example").await;
    assert_eq!(src.counts(), (2, 2, 0));
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    // Retries wait fetch_retry (300 s).
    src.advance(299);
    engine.refresh_due().await;
    assert_eq!(src.counts().1, 2);
    src.advance(1);
    engine.refresh_due().await;
    assert_eq!(src.counts().1, 3);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    // Once max_age is over, the policy is gone: no policy, NOTFOUND (RFC 8461 §5.1).
    src.advance(7200 - 3600 - 300);
    let explanation = engine.explain("sts.example").await;
    assert_eq!(explanation.reply, "NOTFOUND ");
    assert_eq!(explanation.sts_policy, None);
    assert!(
        explanation
            .fetch_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{explanation:?}"
    );
}

#[tokio::test]
async fn a_new_id_fetches_again_and_testing_mode_is_not_enforced() {
    let src = Scripted::new(false);
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 86_400);
    let engine = engine(&src);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    src.record("sts.example", "id2");
    src.policy("sts.example", "testing", 86_400);
    src.advance(3600);
    // The TXT recheck is due: the hit answers at once and refreshes in the background.
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    engine.refresh_once("sts.example").await;
    assert_eq!(src.counts(), (2, 2, 0));
    let explanation = engine.explain("sts.example").await;
    assert_eq!(explanation.reply, "NOTFOUND ");
    assert_eq!(
        explanation.decision.reason,
        "MTA-STS policy in testing mode: not enforced"
    );
    assert_eq!(explanation.sts_policy.map(|c| c.id), Some("id2".into()));
}

#[tokio::test]
async fn policies_are_refreshed_before_they_expire() {
    let src = Scripted::new(false);
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 86_400);
    let engine = engine(&src);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    // Each hour the TXT id is confirmed, without a fetch.
    for hour in 1..=17 {
        src.advance(3600);
        assert_eq!(engine.refresh_due().await, 1, "hour {hour}");
    }
    assert_eq!(src.counts(), (18, 1, 0));
    // 18 h in, a quarter of the day is left: the proactive refresh fetches.
    src.advance(3600);
    assert_eq!(engine.refresh_due().await, 1);
    assert_eq!(src.counts(), (19, 2, 0));
    assert_eq!(engine.refresh_due().await, 0);
    // The refreshed policy lives a full day from now.
    src.advance(86_399);
    let explanation = engine.explain("sts.example").await;
    assert_eq!(explanation.reply, SECURE);
}

#[tokio::test]
async fn concurrent_misses_for_one_domain_share_one_lookup() {
    let src = Scripted::new(true);
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 86_400);
    *src.fetch_delay.lock().unwrap() = Duration::from_millis(200);
    let engine = engine(&src);
    let asks: Vec<_> = (0..64)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.answer("sts.example").await })
        })
        .collect();
    for ask in asks {
        assert_eq!(ask.await.unwrap().to_string(), SECURE);
    }
    assert_eq!(src.counts(), (1, 1, 1));
}

#[tokio::test]
async fn dane_comes_before_mta_sts_and_skips_the_fetch() {
    let src = Scripted::new(true);
    src.record("both.example", "id1");
    src.policy("both.example", "enforce", 86_400);
    let usable = |detail: &str| DaneLookup {
        state: DaneState::Usable,
        ttl: Some(120),
        detail: detail.into(),
    };
    src.dane_answers
        .lock()
        .unwrap()
        .insert("both.example".into(), usable("usable TLSA"));
    let bogus = DaneLookup {
        state: DaneState::Bogus,
        ttl: None,
        detail: "bogus".into(),
    };
    src.dane_answers
        .lock()
        .unwrap()
        .insert("bogus.example".into(), bogus);
    let engine = engine(&src);
    let explanation = engine.explain("both.example").await;
    assert_eq!(explanation.reply, "OK dane-only");
    assert_eq!(explanation.decision.source, Source::Dane);
    assert_eq!(src.counts(), (1, 0, 1), "no fetch while DANE decides");
    assert_eq!(engine.answer("bogus.example").await.status(), "TEMP");
    // When the TLSA records go away, MTA-STS applies.
    src.dane_answers.lock().unwrap().clear();
    src.advance(120);
    assert_eq!(
        ask(&engine, "both.example").await,
        "OK secure match=.both.example servername=hostname"
    );
}

/// TLSA records that are all unusable ask for TLS without authentication; a cached
/// `enforce` policy asks for more, so it is fetched and answered. A TLSA lookup that failed
/// for every MX host defers, and is never answered from MTA-STS or a pin.
#[tokio::test]
async fn unusable_tlsa_yields_to_enforce_and_failed_tlsa_lookups_defer() {
    let src = Scripted::new(true);
    src.record("unusable.example", "id1");
    src.policy("unusable.example", "enforce", 86_400);
    src.record("failing.example", "id1");
    src.policy("failing.example", "enforce", 86_400);
    for (domain, state) in [
        ("unusable.example", DaneState::AllUnusable),
        ("failing.example", DaneState::TlsaLookupFailed),
    ] {
        src.dane_answers.lock().unwrap().insert(
            domain.into(),
            DaneLookup {
                state,
                ttl: Some(120),
                detail: "scripted".into(),
            },
        );
    }
    let engine = engine(&src);
    assert_eq!(
        ask(&engine, "unusable.example").await,
        "OK secure match=.unusable.example servername=hostname"
    );
    let failing = engine.explain("failing.example").await;
    assert!(failing.reply.starts_with("TEMP "), "{}", failing.reply);
    assert_eq!(failing.decision.source, Source::Dane);
    // One fetch, for the unusable domain; none for the failing one.
    assert_eq!(src.counts().1, 1);
}

/// A valid cached `testing` policy applies while the TXT lookup fails (RFC 8461 §3.3): mail
/// is delivered as without a policy, not deferred.
#[tokio::test]
async fn a_txt_failure_with_a_cached_testing_policy_is_not_temp() {
    let src = Scripted::new(false);
    src.record("t.example", "id1");
    src.policy("t.example", "testing", 86_400);
    let engine = engine(&src);
    assert_eq!(ask(&engine, "t.example").await, "NOTFOUND ");
    src.txt(
        "t.example",
        TxtLookup::Failed {
            message: "SERVFAIL".into(),
        },
    );
    src.advance(3600);
    engine.refresh_due().await;
    assert_eq!(ask(&engine, "t.example").await, "NOTFOUND ");
}

/// In the proactive-refresh window, a TXT record that is gone is looked up again after its
/// negative TTL, not on every lookup.
#[tokio::test]
async fn a_withdrawn_txt_record_is_not_looked_up_on_every_hit_before_expiry() {
    let src = Scripted::new(false);
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 86_400);
    let engine = engine(&src);
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    assert_eq!(src.counts(), (1, 1, 0));
    src.txt(
        "sts.example",
        TxtLookup::NoRecord {
            negative_ttl: Some(3600),
            note: None,
        },
    );
    // Into the last quarter of the policy's life (the proactive window).
    src.advance(86_400 - 21_600 + 10);
    for _ in 0..20 {
        let mut out = Vec::new();
        assert!(engine.answer_cached("sts.example", &mut out));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (txt, fetches, _) = src.counts();
    assert_eq!(
        (txt, fetches),
        (2, 1),
        "one TXT lookup for the window, no fetch"
    );
    // The cached policy still answers until it expires.
    assert_eq!(ask(&engine, "sts.example").await, SECURE);
    // After the negative TTL, one more lookup.
    src.advance(3600);
    engine.refresh_due().await;
    assert_eq!(src.counts().0, 3);
}

#[tokio::test]
async fn overrides_and_pins() {
    let src = Scripted::new(false);
    src.record("sts.example", "id1");
    src.policy("sts.example", "enforce", 86_400);
    let overrides =
        StaticOverrides::parse("sts.example  encrypt\n.example  may\n[relay.example]:587 verify\n")
            .unwrap();
    let pin = PinnedPeer::new("pinned.example", PinLevel::Verify, Evidence::default()).unwrap();
    let relay = |host: &str, port| {
        PinnedPeer::relay(host, port, PinLevel::Encrypt, Evidence::default()).unwrap()
    };
    let pins = vec![
        pin,
        relay("smarthost.example", None),
        relay("submission.example", Some(587)),
        relay("2001:DB8:0::25", Some(25)),
    ];
    let engine = Arc::new(
        PolicyEngine::new(Src(src.clone()), EngineConfig::default())
            .with_overrides(overrides)
            .with_pins(pins),
    );
    let cases = [
        ("sts.example", "OK encrypt"),
        (".example", "OK may"),
        ("[relay.example]:587", "OK verify"),
        ("[other.example]:587", "NOTFOUND "),
        ("pinned.example", "OK verify"),
        ("Pinned.Example.", "OK verify"),
        ("nothing.example", "NOTFOUND "),
        // A relay pin answers Postfix's key for `relayhost = [smarthost.example]`, and only
        // that key: not the domain, nor the relay on another port.
        ("[smarthost.example]", "OK encrypt"),
        ("[SmartHost.example]", "OK encrypt"),
        ("[smarthost.example]:587", "NOTFOUND "),
        // On another port, the key names it (`relayhost = [submission.example]:587`).
        ("[submission.example]:587", "OK encrypt"),
        ("[submission.example]", "NOTFOUND "),
        // An IPv6 relay, however main.cf spells the address.
        ("[2001:db8:0::25]", "OK encrypt"),
        ("[2001:db8::25]", "OK encrypt"),
        ("[IPv6:2001:db8::25]", "OK encrypt"),
        ("[2001:db8::25]:587", "NOTFOUND "),
    ];
    for (key, want) in cases {
        assert_eq!(ask(&engine, key).await, want, "{key}");
    }
    // Overrides and relay keys need no lookup; the pinned and the unknown domain were looked
    // up once each.
    assert_eq!(src.counts(), (2, 0, 0));
    let mut out = Vec::new();
    assert!(!engine.answer_cached("Pinned.Example.", &mut out));
    assert!(engine.answer_cached("pinned.example", &mut out));
    assert_eq!(out, b"9:OK verify,");
}

/// A pin file may hold one relay under several spellings at one level (what `policy build`
/// writes when two transports spell one IPv6 relay differently): every spelling Postfix may
/// ask for finds the pin, and the relay on another port does not.
#[tokio::test]
async fn a_relay_pinned_under_several_spellings_answers_each() {
    let pins = read_policy_map_file(
        "# 48 messages, 48 over TLS, 0 verified\n[2001:0db8:0:0::25]  encrypt\n\
         # 48 messages, 48 over TLS, 0 verified\n[2001:db8::25]  encrypt\n",
    )
    .unwrap();
    assert_eq!(pins.len(), 2);
    let src = Scripted::new(false);
    let engine =
        Arc::new(PolicyEngine::new(Src(src.clone()), EngineConfig::default()).with_pins(pins));
    for (key, want) in [
        ("[2001:0db8:0:0::25]", "OK encrypt"),
        ("[2001:db8::25]", "OK encrypt"),
        ("[2001:DB8:0::25]:25", "OK encrypt"),
        ("[ipv6:2001:db8::25]", "OK encrypt"),
        ("[2001:db8::25]:587", "NOTFOUND "),
    ] {
        assert_eq!(ask(&engine, key).await, want, "{key}");
    }
    assert_eq!(src.counts(), (0, 0, 0));
}

#[tokio::test]
async fn a_policy_that_cannot_be_fetched_gives_no_policy_and_is_retried_later() {
    let src = Scripted::new(false);
    src.record("down.example", "id1");
    src.fetch_fails("down.example");
    let engine = engine(&src);
    let explanation = engine.explain("down.example").await;
    assert_eq!(explanation.reply, "NOTFOUND ");
    assert!(explanation.fetch_error.is_some());
    assert_eq!(src.counts(), (1, 1, 0));
    src.advance(299);
    assert_eq!(ask(&engine, "down.example").await, "NOTFOUND ");
    assert_eq!(src.counts(), (1, 1, 0), "the retry waits 300 s");
    src.policy("down.example", "enforce", 86_400);
    src.advance(1);
    assert_eq!(
        ask(&engine, "down.example").await,
        "OK secure match=.down.example servername=hostname"
    );
    assert_eq!(src.counts(), (2, 2, 0));
}

#[tokio::test]
async fn replies_are_socketmap_replies() {
    let src = Scripted::new(false);
    let engine = engine(&src);
    assert_eq!(engine.answer("").await, Reply::NotFound);
}
