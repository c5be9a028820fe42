//! Command-line arguments and the `check` command's flow: read targets, run checks with
//! bounded concurrency, print reports in input order, and choose the exit code.

use crate::render;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use sigillo_check::policy::dns::DnsConfig;
use sigillo_check::policy::fetch::FetchConfig;
use sigillo_check::summary::Summary;
use sigillo_check::target::TargetSpec;
use sigillo_check::{
    CheckConfig, Checker, DiscoveryConfig, Dns, Families, PolicyDiscovery, Severity, Target,
    TargetReport, Timeouts, TrustAnchors, Verdict,
};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// sigillo: is your mail really encrypted between servers?
#[derive(Debug, Parser)]
#[command(name = "sigillo", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe every MX of a domain for STARTTLS, TLS and certificate, detect STARTTLS stripping,
    /// and check the domain's MTA-STS, TLS-RPT, DNSSEC and DANE records against its MX hosts.
    Check(CheckArgs),
    /// Measure from MTA logs (Postfix, Exim, Sendmail, OpenSMTPD) what share of mail travelled
    /// over TLS, per direction, day, hour, peer and TLS version, and flag downgrades.
    Report(ReportArgs),
    /// Imitate a Cisco PIX/ASA that strips STARTTLS (`inspect esmtp`): relay SMTP from a
    /// loopback port to a server, masking the banner and STARTTLS, to test what your MTA
    /// does when STARTTLS is stripped.
    StripProxy(StripProxyArgs),
    /// TLS policy for your MTA: `policy serve` answers Postfix's smtp_tls_policy_maps from
    /// DANE, MTA-STS, pins and overrides; `policy build` pins peers from the logs.
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
    /// Run `check` against three local demo servers (STARTTLS, plaintext, and STARTTLS behind a
    /// PIX/ASA-style stripping rewriter), all on 127.0.0.1: no internet needed.
    Demo(DemoArgs),
}

/// Exit status 1 is returned when a finding at or above this level exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Any finding, even "inconclusive".
    Low,
    /// Certificate and policy problems (a failing MTA-STS or DANE policy) and worse.
    Medium,
    /// Plaintext (STARTTLS not supported), and what makes policy-following senders refuse
    /// or defer mail (an MX outside an enforced MTA-STS policy, TLSA mismatch, DNSSEC
    /// failure), and worse.
    High,
    /// Only STARTTLS stripping.
    Critical,
    /// Never exit 1 for findings.
    Never,
}

impl FailOn {
    fn threshold(self) -> Option<Severity> {
        match self {
            FailOn::Low => Some(Severity::Low),
            FailOn::Medium => Some(Severity::Medium),
            FailOn::High => Some(Severity::High),
            FailOn::Critical => Some(Severity::Critical),
            FailOn::Never => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Domains (MX lookup), or `[host]`, `[192.0.2.1]:2525`, `[2001:db8::1]:25` to skip the MX lookup.
    pub targets: Vec<String>,
    /// Read more targets from FILE, one per line (`-` for stdin; blank lines and `#` comments skipped).
    #[arg(long, value_name = "FILE")]
    pub targets_from: Option<PathBuf>,
    /// Port to probe when a target gives none. 587 works with STARTTLS; 465 is implicit TLS.
    #[arg(long, default_value_t = 25)]
    pub port: u16,
    /// TLS from the first byte (as on port 465, RFC 8314) whatever the port.
    #[arg(long)]
    pub implicit_tls: bool,
    /// Name to send with EHLO (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub ehlo: Option<String>,
    /// Print one JSON document per target (newline-delimited); see docs/check-json.md.
    #[arg(long)]
    pub json: bool,
    /// Most probes in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// DNS resolver to use, `IP` or `IP:PORT` (`[IPv6]:PORT`); default: the system's.
    #[arg(long, value_name = "IP[:PORT]")]
    pub resolver: Option<String>,
    /// PEM file of extra trusted CA certificates (repeatable), for MX hosts and MTA-STS
    /// policy hosts; Mozilla's roots are always used.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Vec<PathBuf>,
    /// DNSSEC trust anchors (DNSKEY records, zone file syntax) for the DNSSEC and DANE
    /// checks, instead of the IANA root keys.
    #[arg(long, value_name = "FILE", conflicts_with = "no_policy")]
    pub trust_anchor: Option<PathBuf>,
    /// Skip policy discovery (MTA-STS, TLS-RPT, DNSSEC, DANE) for domain targets.
    #[arg(long)]
    pub no_policy: bool,
    /// Seconds allowed for the MTA-STS policy fetch (connect, TLS, request and body).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub fetch_timeout: f64,
    /// Port MTA-STS policy hosts are fetched from (tests only; MTA-STS always uses 443).
    #[arg(long, default_value_t = 443, hide = true)]
    pub mta_sts_port: u16,
    /// Exit 1 when a finding of this severity or worse exists.
    #[arg(long, value_enum, default_value_t = FailOn::Low)]
    pub fail_on: FailOn,
    /// Only IPv4 addresses.
    #[arg(short = '4', long = "ipv4-only", conflicts_with = "ipv6_only")]
    pub ipv4_only: bool,
    /// Only IPv6 addresses.
    #[arg(short = '6', long = "ipv6-only")]
    pub ipv6_only: bool,
    /// Seconds allowed for the TCP connection.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds allowed for the 220 greeting (tarpits delay it on purpose).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub greeting_timeout: f64,
    /// Seconds allowed for each other reply.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub command_timeout: f64,
    /// Seconds allowed for the TLS handshake.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub handshake_timeout: f64,
    /// Seconds allowed for the whole session with one address, from connect to QUIT, even
    /// when each step keeps within its own limit (the default step limits add up to 180 s).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub session_timeout: f64,
    /// Seconds allowed for each DNS query.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub dns_timeout: f64,
    /// Show the SMTP session of each host in the terminal report.
    #[arg(long)]
    pub transcript: bool,
    /// Colour in the terminal report.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Log files, directories (rotated files read oldest first), `.gz`/`.zst`, or `-` for stdin.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub logs: LogArgs,
    /// Print one JSON document (see docs/report-json.md).
    #[arg(long)]
    pub json: bool,
    /// Write `daily.csv`, `hourly.csv`, `peers.csv` and `next_hops.csv` into this directory.
    #[arg(long, value_name = "DIR")]
    pub csv: Option<PathBuf>,
    /// Write a self-contained HTML page with charts to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// How many plaintext peer domains to list, per direction (0: none).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// How log inputs are read and which of their mail counts: shared by `report` and
/// `policy build`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The log format for every input, instead of detecting it per file.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<sigillo_logs::input::Format>,
    /// The year (1970-9999) of the first syslog line without one; later lines and files go
    /// on from it across new year (default: from each file's modification time).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1970..=9999))]
    pub year: Option<i32>,
    /// Only mail at or after this time (`2026-11-01`, `2026-11-01T08:00:00`,
    /// `2026-11-01T08:00:00+01:00`); a time without a zone is UTC, as log times without one are.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only mail before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// An address range whose peers are internal hops, not Internet mail (repeatable;
    /// 127.0.0.1 and ::1 always are).
    #[arg(long, value_name = "CIDR")]
    pub internal: Vec<sigillo_logs::aggregate::Cidr>,
}

impl LogArgs {
    /// Refuses settings that cannot select any mail: a window that ends before it starts.
    pub fn check(&self) -> anyhow::Result<()> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until <= since
        {
            bail!(
                "--until ({}) must be later than --since ({}): no mail can fall in that window",
                time_for_message(until),
                time_for_message(since)
            );
        }
        Ok(())
    }

    /// Reads `inputs` (files, directories, `-`) and counts their mail.
    pub fn analyze(&self, inputs: &[PathBuf], top: usize) -> sigillo_logs::analysis::Analysis {
        let input_options = sigillo_logs::input::InputOptions {
            format: self.format,
            year: self.year,
            ..Default::default()
        };
        let options = sigillo_logs::aggregate::AggregateOptions {
            internal: self.internal.clone(),
            since: self.since,
            until: self.until,
            top,
        };
        sigillo_logs::analysis::analyze(inputs, &input_options, options)
    }
}

fn parse_format(text: &str) -> Result<sigillo_logs::input::Format, String> {
    text.parse()
        .map_err(|e: sigillo_logs::input::UnknownFormatName| e.to_string())
}

/// `YYYY-MM-DD` (midnight UTC), `YYYY-MM-DDThh:mm[:ss]` (UTC, like a log time without a
/// zone), or RFC 3339 with a zone.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts.as_second());
    }
    // A civil date-time before a date: jiff's `Date` parser also takes a date-time and drops
    // its time, which would silently move the window to midnight.
    if let Ok(time) = text.parse::<jiff::civil::DateTime>() {
        return time
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_second())
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "{text:?}: expected YYYY-MM-DD, YYYY-MM-DDThh:mm:ss (UTC) or an RFC 3339 time \
         (2026-11-01T08:00:00+01:00)"
    ))
}

/// A `--since`/`--until` value as the user would write it back.
fn time_for_message(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| seconds.to_string())
}

/// `sigillo strip-proxy`: where to listen, where to relay, what to rewrite, and limits.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sigillo strip-proxy --upstream 127.0.0.1:25
  sigillo strip-proxy --listen 127.0.0.1:2526 --upstream mx.example.org --allow-tls

Point an MTA (or `sigillo check '[127.0.0.1]:2525'`, or swaks) at the listen address. \
One line per connection goes to stderr when it ends: duration, bytes each way, what was \
rewritten, and lines too long to inspect. Ctrl-C or SIGTERM stops the proxy and closes open connections.")]
pub struct StripProxyArgs {
    /// Address to listen on. A non-loopback address also needs --allow-public.
    #[arg(long, default_value = "127.0.0.1:2525", value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// The SMTP server to relay to: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT`, or an IP or host
    /// alone for port 25.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub upstream: String,
    /// Allow a non-loopback --listen address: anyone who can reach it gets STARTTLS stripped.
    #[arg(long)]
    pub allow_public: bool,
    /// Keep the greeting's text (default: replaced by asterisks, as with `mask-banner`).
    #[arg(long)]
    pub no_mask_banner: bool,
    /// Let STARTTLS through, as with `parameters allow-tls` (default: `XXXXXXXA` in EHLO
    /// replies and in the client's STARTTLS command).
    #[arg(long)]
    pub allow_tls: bool,
    /// Longest line, in bytes, the rewriter holds back to inspect; longer lines pass unchanged
    /// (counted in the connection's log line).
    #[arg(long, value_name = "BYTES", default_value_t = sigillo_check::strip_proxy::DEFAULT_MAX_LINE as u32,
          value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub max_line: u32,
    /// Seconds allowed to connect to the upstream.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Close a connection after this many seconds with no byte either way (read from a side,
    /// or taken by its socket).
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub idle_timeout: f64,
    /// Once one side has closed (the client, and the server has answered all it sent; or
    /// the server, and all it sent reached the client), close both if the other side stays
    /// open and silent this many seconds. Not while bytes wait for a side to take them (a
    /// message stuck behind a server that does not read): the idle timeout counts then. More
    /// than 0; at most --idle-timeout (a longer value acts as --idle-timeout).
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub close_grace: f64,
    /// Most connections relayed at once; more are accepted and closed at once.
    #[arg(long, default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print JSON instead of the terminal report.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Check(args) => check(args).await,
        Command::Report(args) => report(args),
        Command::StripProxy(args) => crate::strip_proxy::run(args).await,
        Command::Policy(command) => crate::policy::run(command).await,
        Command::Demo(args) => crate::demo::run(args).await,
    }
}

/// A timeout or interval option in seconds: more than 0, at most an hour.
pub fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 3600.0) {
        bail!("--{name} must be more than 0 and at most 3600 seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

pub fn parse_resolver(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    bail!("--resolver: expected IP or IP:PORT ([IPv6]:PORT), got {text:?}")
}

/// The targets from the command line and `--targets-from`, parsed; the first bad one is an error.
pub fn read_targets(args: &CheckArgs) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for text in &args.targets {
        targets.push(Target::parse(text).with_context(|| format!("bad target {text:?}"))?);
    }
    if let Some(path) = &args.targets_from {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("--targets-from {}", path.display()))?;
            Box::new(std::io::BufReader::new(file))
        };
        for (n, line) in reader.lines().enumerate() {
            let line =
                line.with_context(|| format!("reading {} line {}", path.display(), n + 1))?;
            let text = line.split('#').next().unwrap_or("").trim();
            if text.is_empty() {
                continue;
            }
            targets.push(
                Target::parse(text)
                    .with_context(|| format!("{} line {}", path.display(), n + 1))?,
            );
        }
    }
    if targets.is_empty() {
        bail!("no targets: give domains or [hosts] as arguments, or --targets-from FILE");
    }
    Ok(targets)
}

/// This machine's host name, for EHLO.
pub fn local_hostname() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let host = read("/proc/sys/kernel/hostname")
        .or_else(|| read("/etc/hostname"))
        .unwrap_or_else(|| "localhost".to_owned());
    if host.contains('.') {
        return host;
    }
    match read("/proc/sys/kernel/domainname").filter(|d| d != "(none)") {
        Some(domain) => format!("{host}.{domain}"),
        None => host,
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let targets = read_targets(&args)?;
    let timeouts = Timeouts::default()
        .with_connect(seconds("connect-timeout", args.connect_timeout)?)
        .with_greeting(seconds("greeting-timeout", args.greeting_timeout)?)
        .with_command(seconds("command-timeout", args.command_timeout)?)
        .with_handshake(seconds("handshake-timeout", args.handshake_timeout)?)
        .with_session(seconds("session-timeout", args.session_timeout)?);
    let dns_timeout = seconds("dns-timeout", args.dns_timeout)?;
    let resolver = args.resolver.as_deref().map(parse_resolver).transpose()?;
    let dns = match resolver {
        Some(server) => Dns::with_server(server, dns_timeout)?,
        None => Dns::system(dns_timeout),
    };
    let mut anchors = TrustAnchors::mozilla();
    for path in &args.ca_file {
        anchors.add_pem_file(path)?;
    }
    let any_domain = targets
        .iter()
        .any(|t| matches!(t.spec, TargetSpec::Domain(_)));
    let discovery = if args.no_policy || !any_domain {
        None
    } else {
        let fetch_timeout = seconds("fetch-timeout", args.fetch_timeout)?;
        let config = DiscoveryConfig {
            dns: DnsConfig {
                server: resolver,
                trust_anchor: args.trust_anchor.clone(),
                timeout: dns_timeout,
                ..DnsConfig::default()
            },
            fetch: FetchConfig {
                timeout: fetch_timeout,
                connect_timeout: timeouts.connect.min(fetch_timeout),
                roots: anchors.clone(),
                https_port: args.mta_sts_port,
            },
        };
        Some(PolicyDiscovery::new(&config)?)
    };
    let config = CheckConfig {
        port: args.port,
        ehlo_name: args.ehlo.clone().unwrap_or_else(local_hostname),
        timeouts,
        concurrency: args.concurrency as usize,
        implicit_tls: args.implicit_tls,
        families: Families {
            ipv4: !args.ipv6_only,
            ipv6: !args.ipv4_only,
        },
        ..CheckConfig::default()
    };
    // A per-step limit raised above the session limit is cut short by it: say so, once.
    // Untouched defaults under a short --session-timeout are what the user asked for.
    let defaults = Timeouts::default();
    let raised: Vec<String> = [
        ("connect", timeouts.connect, defaults.connect),
        ("greeting", timeouts.greeting, defaults.greeting),
        ("command", timeouts.command, defaults.command),
        ("handshake", timeouts.handshake, defaults.handshake),
    ]
    .into_iter()
    .filter(|(_, limit, default)| limit != default && *limit > timeouts.session)
    .map(|(name, limit, _)| format!("--{name}-timeout ({} s)", limit.as_secs_f64()))
    .collect();
    if !raised.is_empty() {
        eprintln!(
            "sigillo check: note: --session-timeout ({} s) ends a probe before {} can",
            timeouts.session.as_secs_f64(),
            raised.join(", ")
        );
    }
    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let checker = Checker::with_discovery(config, dns, anchors, discovery);
    let outcome = run_checks(&checker, targets, &args, color).await?;
    Ok(outcome.exit_code(args.fail_on))
}

/// What the exit code needs to know about the reports seen so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub any_error: bool,
    pub worst: Option<Severity>,
}

impl Outcome {
    pub fn add(&mut self, report: &TargetReport) {
        self.any_error |= report.verdict == Verdict::Error;
        self.worst = self.worst.max(report.worst_severity());
    }

    /// 2 if a target could not be checked, 1 if a finding reaches the `--fail-on` level, else 0.
    pub fn exit_code(&self, fail_on: FailOn) -> u8 {
        if self.any_error {
            return 2;
        }
        match (fail_on.threshold(), self.worst) {
            (Some(level), Some(worst)) if worst >= level => 1,
            _ => 0,
        }
    }
}

/// Checks all targets concurrently and prints each report in input order. A slow target
/// (a tarpit) holds back only the printing of the reports after it, never the checks: up to
/// `--concurrency` targets are always under way. Reports are not kept: the summary and the
/// exit code are counted as they come.
async fn run_checks(
    checker: &Arc<Checker>,
    targets: Vec<Target>,
    args: &CheckArgs,
    color: bool,
) -> anyhow::Result<Outcome> {
    let several = targets.len() > 1;
    let progress = (several && !args.no_progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(targets.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} targets, {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let in_flight = (args.concurrency as usize).clamp(1, 4096);
    let mut stream = futures::stream::iter(targets.into_iter().enumerate())
        .map(|(index, target)| {
            let checker = Arc::clone(checker);
            async move { (index, checker.check(&target).await) }
        })
        .buffer_unordered(in_flight);
    let mut outcome = Outcome::default();
    let mut summary = Summary::default();
    // Rendered reports that finished before an earlier one, by input position.
    let mut waiting: BTreeMap<usize, String> = BTreeMap::new();
    let mut next = 0;
    while let Some((index, report)) = stream.next().await {
        outcome.add(&report);
        summary.add(&report);
        let text = if args.json {
            let mut line = serde_json::to_string(&report)?;
            line.push('\n');
            line
        } else {
            render::target(&report, color, args.transcript)
        };
        drop(report);
        if let Some(bar) = &progress {
            bar.inc(1);
        }
        waiting.insert(index, text);
        while let Some(text) = waiting.remove(&next) {
            match &progress {
                Some(bar) => bar.suspend(|| emit(&text)),
                None => emit(&text),
            }?;
            next += 1;
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if several {
        let text = render::summary(&summary, color);
        if args.json {
            // Keep stdout one JSON document per target.
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            emit(&text)?;
        }
    }
    Ok(outcome)
}

/// Writes `value` to stdout as one line of JSON, streamed (a report with a million peers
/// is hundreds of MB of JSON, not worth holding whole); a reader that went away is not an
/// error.
pub fn emit_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let written = serde_json::to_writer(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `sigillo report`: 0 when the logs were read (bad lines are reported on stderr and
/// skipped), 2 when nothing could be read or an output could not be written.
fn report(args: ReportArgs) -> anyhow::Result<u8> {
    args.logs.check()?;
    let analysis = args.logs.analyze(&args.inputs, args.top);
    let _ = std::io::stderr().write_all(crate::report_text::input_problems(&analysis).as_bytes());
    if let Some(dir) = &args.csv {
        std::fs::create_dir_all(dir).with_context(|| format!("--csv {}", dir.display()))?;
        for (name, text) in [
            ("daily.csv", crate::report_csv::daily(&analysis.figures)),
            ("hourly.csv", crate::report_csv::hourly(&analysis.figures)),
            ("peers.csv", crate::report_csv::peers(&analysis.figures)),
            (
                "next_hops.csv",
                crate::report_csv::next_hops(&analysis.figures),
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.html {
        let meta = crate::report_html::HtmlMeta {
            title: "sigillo report: mail over TLS".to_owned(),
            generated_at: jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            inputs: analysis
                .inputs
                .iter()
                .map(|i| crate::report_html::InputSummary {
                    path: i.source.clone(),
                    lines: i.lines,
                    bad_lines: i.bad_lines + i.skipped_long_lines,
                })
                .collect(),
            advice: analysis.advice.clone(),
            input_notes: analysis.input_errors.clone(),
        };
        let page = crate::report_html::render(&analysis.figures, &meta);
        std::fs::write(path, page).with_context(|| format!("--html {}", path.display()))?;
    }
    if args.json {
        emit_json(&analysis)?;
    } else {
        emit(&crate::report_text::render(&analysis))?;
    }
    let nothing_read = analysis.nothing_read();
    // The process ends right after: freeing the figures (every peer, domain and relay, one
    // allocation at a time) would cost about 1 % of a report's instructions for nothing.
    std::mem::forget(analysis);
    if nothing_read {
        eprintln!("sigillo report: no log line could be read from the inputs");
        return Ok(2);
    }
    Ok(0)
}
