//! `sigillo strip-proxy`: a PIX/ASA-style STARTTLS stripping proxy, on loopback unless told
//! otherwise, so an admin can see what their MTA does when STARTTLS is stripped. The relaying
//! is `sigillo_check::strip_proxy`; this is its arguments, log lines and signal handling.

use crate::cli::{StripProxyArgs, seconds};
use anyhow::{Context, bail};
use sigillo_check::strip_proxy::{
    AsaConfig, ConnectionEnd, ConnectionReport, ProxyEvent, ProxyOptions, ServeSummary, serve_until,
};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpListener;

/// SMTP's port, for an upstream given without one.
const SMTP_PORT: u16 = 25;

/// How long resolving an `--upstream` host name may take.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(args: StripProxyArgs) -> anyhow::Result<u8> {
    if !args.listen.ip().is_loopback() && !args.allow_public {
        bail!(
            "--listen {}: not a loopback address. A stripping proxy reachable from the network \
             downgrades the mail of anyone who connects to it; pass --allow-public if that is \
             what you want",
            args.listen
        );
    }
    let options = ProxyOptions {
        asa: AsaConfig {
            mask_banner: !args.no_mask_banner,
            strip_starttls: !args.allow_tls,
            max_line: args.max_line as usize,
        },
        connect_timeout: seconds("connect-timeout", args.connect_timeout)?,
        idle_timeout: seconds("idle-timeout", args.idle_timeout)?,
        max_connections: args.max_connections as usize,
        // One option for both ways: how long a side that stays open after the other left
        // keeps its slot.
        client_gone_grace: seconds("close-grace", args.close_grace)?,
        server_gone_grace: seconds("close-grace", args.close_grace)?,
    };
    let upstream = resolve_upstream(&args.upstream).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let local = listener.local_addr()?;
    if upstream == local {
        bail!("--upstream {upstream} is the proxy's own listen address: it would relay to itself");
    }
    log(&format!(
        "listening on {local}, relaying to {upstream} ({}); Ctrl-C to stop",
        policy(&options.asa)
    ));
    let summary = serve_until(listener, upstream, options, shutdown_signal(), |event| {
        log(&event_line(&event));
    })
    .await;
    log(&stopped_line(&summary));
    Ok(0)
}

/// `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT`, or an IP or host alone (port 25); a host name is
/// resolved once, here, and its first address used.
async fn resolve_upstream(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, SMTP_PORT));
    }
    let expected = || {
        anyhow::anyhow!(
            "--upstream {text:?}: expected IP:PORT, [IPv6]:PORT, HOST:PORT, or an IP or host alone"
        )
    };
    if text.contains(['[', ']']) || text.matches(':').count() > 1 {
        return Err(expected());
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) if port > 0 => (host, port),
            _ => bail!("--upstream {text:?}: bad port {port:?}"),
        },
        None => (text, SMTP_PORT),
    };
    let is_name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !is_name {
        return Err(expected());
    }
    let lookup = tokio::net::lookup_host((host, port));
    let mut addrs = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| anyhow::anyhow!("--upstream {text:?}: name lookup timed out"))?
        .with_context(|| format!("--upstream {text:?}: cannot resolve"))?;
    addrs
        .next()
        .with_context(|| format!("--upstream {text:?}: the name has no address"))
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn policy(asa: &AsaConfig) -> String {
    let banner = if asa.mask_banner {
        "banner masked"
    } else {
        "banner kept"
    };
    let starttls = if asa.strip_starttls {
        "STARTTLS stripped"
    } else {
        "STARTTLS allowed"
    };
    format!("{banner}, {starttls}")
}

/// One stderr line, prefixed with the time and the command's name. A closed stderr is not
/// an error worth stopping for.
fn log(text: &str) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let _ = writeln!(
        std::io::stderr().lock(),
        "{now} sigillo strip-proxy: {text}"
    );
}

fn event_line(event: &ProxyEvent) -> String {
    match event {
        ProxyEvent::Closed(report) => connection_line(report),
        ProxyEvent::Refused { client, open } => {
            format!("{client}: refused, {open} connections already open (--max-connections)")
        }
        ProxyEvent::Accept(report) => report.to_string(),
        other => format!("{other:?}"),
    }
}

/// `#3 127.0.0.1:40312 -> 127.0.0.1:25: closed by server after 0.41 s; 93 B from client,
/// 412 B from server; rewrote: banner (1 line), STARTTLS in 1 EHLO reply line and 1 command`.
pub fn connection_line(report: &ConnectionReport) -> String {
    let end = match &report.end {
        ConnectionEnd::Closed { first } => format!("closed by {}", first.as_str()),
        ConnectionEnd::IdleTimeout => "closed: idle timeout".to_owned(),
        ConnectionEnd::Shutdown => "closed: proxy stopping".to_owned(),
        ConnectionEnd::UpstreamUnreachable { message } => {
            format!("upstream unreachable ({message})")
        }
        ConnectionEnd::Failed { side, message } => {
            format!("{} side failed ({message})", side.as_str())
        }
        ConnectionEnd::ClientGone { grace } => format!(
            "closed by client; server silent {} s after, closed by the proxy",
            grace.as_secs_f64()
        ),
        ConnectionEnd::ServerGone { grace } => format!(
            "closed by server; client silent {} s after, closed by the proxy",
            grace.as_secs_f64()
        ),
        other => format!("{other:?}"),
    };
    let stats = report.rewrites;
    let mut rewrote = Vec::new();
    if stats.banner_lines_masked > 0 {
        rewrote.push(format!(
            "banner ({} line{})",
            stats.banner_lines_masked,
            plural(stats.banner_lines_masked.into())
        ));
    }
    if stats.capabilities_masked > 0 || stats.commands_masked > 0 {
        rewrote.push(format!(
            "STARTTLS in {} EHLO reply line{} and {} command{}",
            stats.capabilities_masked,
            plural(stats.capabilities_masked.into()),
            stats.commands_masked,
            plural(stats.commands_masked.into())
        ));
    }
    let rewrote = if rewrote.is_empty() {
        "nothing rewritten".to_owned()
    } else {
        format!("rewrote: {}", rewrote.join(", "))
    };
    let overlong = if stats.overlong_command_lines > 0 || stats.overlong_reply_lines > 0 {
        format!(
            "; not inspected (over --max-line): {} command line{}, {} reply line{}",
            stats.overlong_command_lines,
            plural(stats.overlong_command_lines.into()),
            stats.overlong_reply_lines,
            plural(stats.overlong_reply_lines.into())
        )
    } else {
        String::new()
    };
    let tls = if report.tls_started {
        "; STARTTLS let through, TLS started"
    } else {
        ""
    };
    format!(
        "#{} {} -> {}: {end} after {:.2} s; {} B from client, {} B from server; \
         {rewrote}{overlong}{tls}",
        report.id,
        report.client,
        report.upstream,
        report.duration.as_secs_f64(),
        report.bytes_from_client,
        report.bytes_from_server,
    )
}

/// The last line: how many connections were relayed, refused for the connection cap, and
/// given up because the upstream could not be reached (those relayed nothing, so they are
/// not counted as relayed).
fn stopped_line(summary: &ServeSummary) -> String {
    format!(
        "stopped: {} connection{} relayed, {} refused, {} upstream unreachable",
        summary.relayed,
        plural(summary.relayed),
        summary.refused,
        summary.upstream_unreachable,
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigillo_check::strip_proxy::AsaStats;
    use std::time::Duration;

    /// The log line of a connection: how it ended, and the lines too long to inspect.
    #[test]
    fn connection_lines() {
        let report = |end, rewrites| ConnectionReport {
            id: 7,
            client: "127.0.0.1:40312".parse().unwrap(),
            upstream: "127.0.0.1:25".parse().unwrap(),
            duration: Duration::from_millis(5_410),
            bytes_from_client: 93,
            bytes_from_server: 412,
            rewrites,
            tls_started: false,
            end,
        };
        let stats = |banner: u32, commands: u32, replies: u32| {
            let mut s = AsaStats::default();
            s.banner_lines_masked = banner;
            s.overlong_command_lines = commands;
            s.overlong_reply_lines = replies;
            s
        };
        let banner = stats(1, 0, 0);
        let cases = [
            (
                report(
                    ConnectionEnd::ServerGone {
                        grace: Duration::from_secs(5),
                    },
                    banner,
                ),
                "#7 127.0.0.1:40312 -> 127.0.0.1:25: closed by server; client silent 5 s after, \
                 closed by the proxy after 5.41 s; 93 B from client, 412 B from server; rewrote: \
                 banner (1 line)",
            ),
            (
                report(
                    ConnectionEnd::Closed {
                        first: sigillo_check::strip_proxy::Side::Client,
                    },
                    stats(1, 1, 2),
                ),
                "#7 127.0.0.1:40312 -> 127.0.0.1:25: closed by client after 5.41 s; 93 B from \
                 client, 412 B from server; rewrote: banner (1 line); not inspected (over \
                 --max-line): 1 command line, 2 reply lines",
            ),
            (
                report(ConnectionEnd::IdleTimeout, stats(0, 0, 1)),
                "#7 127.0.0.1:40312 -> 127.0.0.1:25: closed: idle timeout after 5.41 s; 93 B from \
                 client, 412 B from server; nothing rewritten; not inspected (over --max-line): 0 \
                 command lines, 1 reply line",
            ),
        ];
        for (report, want) in cases {
            assert_eq!(connection_line(&report), want);
        }
    }
}
