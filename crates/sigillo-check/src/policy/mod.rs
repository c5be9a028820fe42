//! `sigillo policy serve`: a Postfix TLS policy daemon (`smtp_tls_policy_maps =
//! socketmap:inet:127.0.0.1:8461:sts`) that answers from static overrides, DANE, MTA-STS
//! and pins, in that order, through the decision in [`sigillo_policy::decide`].
//!
//! | module | what it does |
//! |---|---|
//! | [`serve`] | the socketmap server: TCP or unix socket, pipelining, limits, shutdown |
//! | [`engine`] | hot cache of replies, per-domain state, single-flight refreshes, RFC 8461 caching |
//! | [`dns`] | `_mta-sts` TXT (with negative TTLs), DNSSEC-validated MX and TLSA for DANE |
//! | [`fetch`] | the HTTPS policy fetch: no redirects, size and time limits, WebPKI for `mta-sts.<domain>` |
//! | [`store`] | the SQLite file that keeps policies across restarts |
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use sigillo_check::policy::{dns, engine, fetch, serve};
//!
//! let dns = dns::PolicyDns::new(&dns::DnsConfig::default())?;
//! let fetcher = fetch::PolicyFetcher::new(&fetch::FetchConfig::default(), dns.clone())?;
//! let sources = engine::NetSources { dns, fetcher };
//! let engine = Arc::new(engine::PolicyEngine::new(sources, engine::EngineConfig::default()));
//! let listener = serve::PolicyListener::bind(&"127.0.0.1:8461".parse()?, 0o660).await?;
//! serve::serve_until(listener, engine, serve::ServeOptions::default(),
//!                    std::future::pending(), |_| {}).await;
//! # Ok(())
//! # }
//! ```

pub mod dns;
pub mod engine;
pub mod fetch;
pub mod serve;
pub mod store;

/// The sans-IO policy core this module drives, for callers that build its inputs
/// (overrides, pins, decision settings).
pub use sigillo_policy;

pub use engine::{EngineConfig, Explanation, NetSources, PolicyEngine, PolicySources};
pub use serve::{ListenAddr, PolicyListener, ServeOptions, serve_until};
