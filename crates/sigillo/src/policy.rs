//! `sigillo policy …`: TLS policy for a sending MTA. `policy serve` runs the Postfix
//! socketmap daemon (`sigillo_check::policy`) or, with `--check DOMAIN`, prints the answer it
//! would give and why. This file is its arguments, log lines and signal handling;
//! `policy build` lives in `policy_build.rs`.

use crate::cli::{parse_resolver, seconds};
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use sigillo_check::TrustAnchors;
use sigillo_check::policy::dns::{DnsConfig, PolicyDns};
use sigillo_check::policy::engine::{EngineConfig, EngineEvent, NetSources, PolicyEngine};
use sigillo_check::policy::fetch::{FetchConfig, PolicyFetcher};
use sigillo_check::policy::serve::{
    ConnectionEnd, ListenAddr, PolicyListener, ServeEvent, ServeOptions, serve_until,
};
use sigillo_check::policy::sigillo_policy::decide::{DaneAnswer, DecideConfig};
use sigillo_check::policy::sigillo_policy::overrides::StaticOverrides;
use sigillo_check::policy::sigillo_policy::postfix::read_policy_map_file;
use sigillo_check::policy::store::PolicyStore;
use sigillo_check::policy::{Explanation, engine::EngineStats};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Answer Postfix's `smtp_tls_policy_maps` over the socketmap protocol, from static
    /// overrides, DANE, MTA-STS and pinned peers (in that order), with RFC 8461 caching.
    Serve(ServeArgs),
    /// Pin the next-hop domains that used TLS for every message in the logs (a Postfix
    /// smtp_tls_policy_maps file, an Exim domain list), and dry-run a policy against the logs.
    Build(crate::policy_build::BuildArgs),
}

/// The level answered when a domain's MX hosts have usable DNSSEC-validated TLSA records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DaneLevel {
    /// `dane-only`: never deliver without DANE authentication.
    DaneOnly,
    /// `dane`: opportunistic DANE (hosts without TLSA get `may`).
    Dane,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: `IP:PORT`, `[IPv6]:PORT` or `unix:/path/to/socket`. Postfix:
    /// `smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:sts`.
    #[arg(long, default_value = "127.0.0.1:8461", value_name = "ADDR")]
    pub listen: String,
    /// Answer only this socketmap name (the last field of Postfix's `socketmap:…:NAME`);
    /// other names get PERM. Default: any name.
    #[arg(long, value_name = "NAME")]
    pub map_name: Option<String>,
    /// Static overrides, `key  policy` lines as in a Postfix policy map; they win over
    /// everything else.
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
    /// Pinned peers, `domain  encrypt|verify` lines (what `policy build` writes); used when
    /// neither DANE nor MTA-STS applies.
    #[arg(long, value_name = "FILE")]
    pub pins: Option<PathBuf>,
    /// SQLite file that keeps fetched MTA-STS policies across restarts (created if missing).
    /// Without it policies are kept in memory only.
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// DNS server to ask instead of the system's (/etc/resolv.conf): IP or IP:PORT.
    #[arg(long, value_name = "IP[:PORT]")]
    pub resolver: Option<String>,
    /// DNSSEC trust anchors (DNSKEY records, zone file syntax) instead of the IANA root keys.
    #[arg(long, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    /// Do not look DANE up (no DNSSEC-validating lookups).
    #[arg(long)]
    pub no_dane: bool,
    /// Level answered for usable DANE TLSA records.
    #[arg(long, value_enum, default_value = "dane-only", value_name = "LEVEL")]
    pub dane_answer: DaneLevel,
    /// PEM file of extra CA certificates trusted for MTA-STS policy hosts (repeatable);
    /// Mozilla's roots are always used.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Vec<PathBuf>,
    /// Add TLSRPT attributes to MTA-STS answers (Postfix 3.10 and later only: older
    /// versions reject the whole answer).
    #[arg(long)]
    pub tlsrpt_attributes: bool,
    /// Per-query DNS timeout.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub dns_timeout: f64,
    /// A policy fetch (connect, TLS, request, body) must finish within this.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub fetch_timeout: f64,
    /// A lookup that takes longer is answered TEMP (it goes on, and its result is cached).
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub lookup_timeout: f64,
    /// Close a client connection idle this long.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub idle_timeout: f64,
    /// A request must arrive whole within this of its first byte (and a reply be written
    /// within this).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub read_timeout: f64,
    /// Most client connections served at once (more wait to be accepted; when one waits,
    /// connections idle for a second or more are closed to make room).
    #[arg(long, default_value_t = 512, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Most pipelined requests of one connection answered at once.
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_in_flight: u32,
    /// Permissions of a unix socket, in octal, at most 777.
    #[arg(long, default_value = "660", value_name = "OCTAL")]
    pub socket_mode: String,
    /// How often cached policies are checked for a due TXT recheck or proactive refresh.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub refresh_interval: f64,
    /// Log every lookup that was not answered from the cache, with its answer and reason.
    #[arg(long)]
    pub verbose: bool,
    /// Print the answer for DOMAIN (a next-hop as Postfix would ask: `example.com`,
    /// `[mx.example.com]:587`) with its source and reason, and exit. The --store is only
    /// read.
    #[arg(long, value_name = "DOMAIN")]
    pub check: Option<String>,
    /// With --check: print JSON.
    #[arg(long, requires = "check")]
    pub json: bool,
    /// Port policy hosts are fetched from (tests only; MTA-STS always uses 443).
    #[arg(long, default_value_t = 443, hide = true)]
    pub mta_sts_port: u16,
}

pub async fn run(command: PolicyCommand) -> anyhow::Result<u8> {
    match command {
        PolicyCommand::Serve(args) => serve(args).await,
        PolicyCommand::Build(args) => crate::policy_build::run(args),
    }
}

type Engine = PolicyEngine<NetSources>;

async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let listen: ListenAddr = args.listen.parse()?;
    let options = ServeOptions {
        map_name: args.map_name.clone(),
        max_connections: args.max_connections as usize,
        max_in_flight: args.max_in_flight as usize,
        idle_timeout: seconds("idle-timeout", args.idle_timeout)?,
        read_timeout: seconds("read-timeout", args.read_timeout)?,
        lookup_timeout: seconds("lookup-timeout", args.lookup_timeout)?,
        ..ServeOptions::default()
    };
    let socket_mode = parse_socket_mode(&args.socket_mode)?;
    let refresh_interval = seconds("refresh-interval", args.refresh_interval)?;
    let verbose = args.verbose;
    let engine = Arc::new(build_engine(&args)?.with_events(move |event| {
        if let Some(line) = event_line(event, verbose) {
            log(&line);
        }
    }));
    if let Some(key) = &args.check {
        let explanation = engine.explain(key).await;
        engine.flush().await?;
        print_explanation(&explanation, args.json)?;
        return Ok(0);
    }
    let listener = PolicyListener::bind(&listen, socket_mode)
        .await
        .with_context(|| format!("--listen {listen}"))?;
    let local = listener.local_addr()?;
    log(&format!(
        "listening on {local}{}; {} cached MTA-STS policies; Ctrl-C to stop",
        options
            .map_name
            .as_deref()
            .map(|n| format!(" (map name {n})"))
            .unwrap_or_default(),
        engine.cached_policies()
    ));
    let refresher = tokio::spawn(engine.clone().run_refresher(refresh_interval));
    let summary = serve_until(
        listener,
        engine.clone(),
        options,
        crate::strip_proxy::shutdown_signal(),
        |event| {
            if let Some(line) = serve_line(&event) {
                log(&line);
            }
        },
    )
    .await;
    refresher.abort();
    let flushed = engine.flush().await;
    let stats = engine.stats();
    log(&format!(
        "stopped: {} connection(s), {} request(s); {}",
        summary.connections,
        summary.requests,
        stats_text(&stats)
    ));
    flushed?;
    Ok(0)
}

/// The unix socket permissions `--socket-mode` gives: octal digits for at most `777`, since
/// the setuid, setgid and sticky bits mean nothing for a socket.
fn parse_socket_mode(text: &str) -> anyhow::Result<u32> {
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        bail!("--socket-mode: expected octal digits (0-7) like 660, got {text:?}");
    }
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => bail!(
            "--socket-mode: {text} is more than 777: only permission bits are allowed (no \
             setuid, setgid or sticky bit)"
        ),
    }
}

fn build_engine(args: &ServeArgs) -> anyhow::Result<Engine> {
    let dns_config = DnsConfig {
        server: args.resolver.as_deref().map(parse_resolver).transpose()?,
        trust_anchor: args.trust_anchor.clone(),
        timeout: seconds("dns-timeout", args.dns_timeout)?,
        dane: !args.no_dane,
        ..DnsConfig::default()
    };
    if args.no_dane && args.trust_anchor.is_some() {
        bail!("--trust-anchor is for DANE lookups, which --no-dane turns off");
    }
    let dns = PolicyDns::new(&dns_config)?;
    let mut roots = TrustAnchors::mozilla();
    for path in &args.ca_file {
        roots.add_pem_file(path)?;
    }
    let fetch_config = FetchConfig {
        timeout: seconds("fetch-timeout", args.fetch_timeout)?,
        roots,
        https_port: args.mta_sts_port,
        ..FetchConfig::default()
    };
    let fetcher = PolicyFetcher::new(&fetch_config, dns.clone())?;
    let config = EngineConfig {
        decide: DecideConfig {
            dane_answer: match args.dane_answer {
                DaneLevel::DaneOnly => DaneAnswer::DaneOnly,
                DaneLevel::Dane => DaneAnswer::Dane,
            },
            tlsrpt_attributes: args.tlsrpt_attributes,
        },
        ..EngineConfig::default()
    };
    let mut engine = PolicyEngine::new(NetSources { dns, fetcher }, config);
    if let Some(path) = &args.overrides {
        let text = read_text(path, "--overrides")?;
        let overrides = StaticOverrides::parse(&text)
            .with_context(|| format!("--overrides {}", path.display()))?;
        engine = engine.with_overrides(overrides);
    }
    if let Some(path) = &args.pins {
        let text = read_text(path, "--pins")?;
        let pins =
            read_policy_map_file(&text).with_context(|| format!("--pins {}", path.display()))?;
        engine = engine.with_pins(pins);
    }
    // `--check` only reads the store: a user who may not write the daemon's store can run
    // it, and it leaves a running daemon's store as it is (and makes none: with no store
    // yet, nothing is cached).
    let store = args
        .store
        .as_ref()
        .filter(|path| args.check.is_none() || path.exists());
    if let Some(path) = store {
        let (store, loaded) = if args.check.is_some() {
            PolicyStore::open_read_only(path, jiff::Timestamp::now())?
        } else {
            PolicyStore::open(path, jiff::Timestamp::now())?
        };
        if loaded.expired + loaded.unreadable > 0 {
            log(&format!(
                "store {}: {} {} expired and {} unreadable policies",
                path.display(),
                if store.is_read_only() {
                    "skipped"
                } else {
                    "dropped"
                },
                loaded.expired,
                loaded.unreadable
            ));
        }
        engine = engine.with_store(store, loaded);
    }
    Ok(engine)
}

fn read_text(path: &std::path::Path, option: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{option} {}", path.display()))
}

fn print_explanation(e: &Explanation, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, e)?;
        writeln!(out)?;
        return Ok(());
    }
    let source = serde_json::to_value(e.decision.source)?;
    writeln!(out, "{}: {}", e.key, e.reply.trim_end())?;
    writeln!(out, "  source:  {}", source.as_str().unwrap_or("?"))?;
    writeln!(out, "  reason:  {}", e.decision.reason)?;
    if let Some(dane) = &e.dane {
        writeln!(out, "  dane:    {dane}")?;
    }
    if let Some(record) = &e.sts_record {
        writeln!(out, "  mta-sts: {record}")?;
    }
    if let Some(cached) = &e.sts_policy {
        let mx: Vec<String> = cached.policy.mx.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "  policy:  id {}, mode {}, mx {}, max_age {}; fetched {}, valid until {}",
            cached.id,
            cached.policy.mode,
            mx.join(" "),
            cached.policy.max_age,
            cached.fetched_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            cached.expires_at().strftime("%Y-%m-%dT%H:%M:%SZ"),
        )?;
    }
    if let Some(error) = &e.fetch_error {
        writeln!(out, "  fetch:   {error}")?;
    }
    Ok(())
}

fn stats_text(s: &EngineStats) -> String {
    format!(
        "{} cache hit(s), {} miss(es), {} refresh(es), {} policy fetch(es), {} failed",
        s.hits, s.misses, s.refreshes, s.fetches, s.fetch_failures
    )
}

fn event_line(event: &EngineEvent, verbose: bool) -> Option<String> {
    Some(match event {
        EngineEvent::Fetched { domain, id, policy } => format!(
            "{domain}: fetched MTA-STS policy id {id} (mode {}, max_age {})",
            policy.mode, policy.max_age
        ),
        EngineEvent::FetchFailed {
            domain,
            error,
            kept,
        } => format!(
            "{domain}: policy fetch failed ({}): {error}{}",
            error.result_type(),
            if *kept {
                "; the cached policy still applies"
            } else {
                ""
            }
        ),
        EngineEvent::Expired { domain, id } => {
            format!("{domain}: cached MTA-STS policy id {id} expired")
        }
        EngineEvent::Decided { key, decision } if verbose => format!(
            "{}: {} ({})",
            log_text(key),
            decision.reply().to_string().trim_end(),
            decision.reason
        ),
        _ => return None,
    })
}

/// Client-supplied text (a lookup key) as it goes into a log line: as is when it is printable
/// ASCII without `"` or `\`, else quoted and escaped like a Rust string (`"a\r\nb"`), so that
/// it can neither split the line nor write control bytes, and a quoted form is never a key.
fn log_text(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\';
    if text.chars().all(plain) {
        text.into()
    } else {
        format!("{text:?}").into()
    }
}

/// A log line for connections that ended badly; normal ends are not logged.
fn serve_line(event: &ServeEvent) -> Option<String> {
    match event {
        ServeEvent::Closed { id, peer, end, .. } => {
            let why = match end {
                ConnectionEnd::Timeout => "a request or reply timed out".to_owned(),
                ConnectionEnd::Protocol(e) => format!("not socketmap: {e}"),
                ConnectionEnd::Io(e) => format!("I/O error: {e}"),
                _ => return None,
            };
            Some(format!("connection #{id} from {peer} closed: {why}"))
        }
        ServeEvent::Accept(report) => Some(report.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// One stderr line, prefixed with the time and the command's name.
fn log(text: &str) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let _ = writeln!(std::io::stderr().lock(), "{now} sigillo policy: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigillo_check::policy::sigillo_policy::decide::{Answer, Decision, Source};

    fn not_found(reason: &str) -> Decision {
        Decision {
            answer: Answer::NotFound,
            source: Source::None,
            reason: reason.into(),
        }
    }

    #[test]
    fn socket_modes() {
        for (text, want) in [("660", 0o660), ("0660", 0o660), ("777", 0o777), ("0", 0)] {
            assert_eq!(parse_socket_mode(text).unwrap(), want, "{text}");
        }
        let errors = [
            ("7777", "7777 is more than 777"),
            ("1660", "1660 is more than 777"),
            ("77777777777777", "is more than 777"),
            ("8", "expected octal digits (0-7) like 660, got \"8\""),
            ("+660", "expected octal digits"),
            ("", "expected octal digits"),
            ("rw-rw----", "expected octal digits"),
        ];
        for (text, want) in errors {
            let message = parse_socket_mode(text).unwrap_err().to_string();
            assert!(message.contains(want), "{text}: {message}");
            assert!(message.starts_with("--socket-mode: "), "{text}: {message}");
        }
    }

    #[test]
    fn logged_keys_are_escaped() {
        let cases = [
            ("example.com", "example.com"),
            ("[mx.example.com]:587", "[mx.example.com]:587"),
            ("a b", "a b"),
            ("evil\r\nfake line", "\"evil\\r\\nfake line\""),
            ("nul\0byte", "\"nul\\0byte\""),
            ("esc\x1b[31m", "\"esc\\u{1b}[31m\""),
            ("tab\there", "\"tab\\there\""),
            ("quote\"", "\"quote\\\"\""),
            ("back\\slash", "\"back\\\\slash\""),
            ("caf\u{e9}", "\"caf\u{e9}\""),
            ("", ""),
        ];
        for (key, want) in cases {
            assert_eq!(log_text(key), want, "{key:?}");
            let event = EngineEvent::Decided {
                key: key.into(),
                decision: not_found("no policy from any source"),
            };
            let line = event_line(&event, true).unwrap();
            assert_eq!(
                line,
                format!("{want}: NOTFOUND (no policy from any source)"),
                "{key:?}"
            );
            assert!(!line.contains(|c: char| c.is_control()), "{line:?}");
        }
        let quiet = EngineEvent::Decided {
            key: "k".into(),
            decision: not_found(""),
        };
        assert_eq!(
            event_line(&quiet, false),
            None,
            "logged with --verbose only"
        );
    }
}
