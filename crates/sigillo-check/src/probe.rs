//! The network side of one probe: connect to one address and port, drive the sans-IO
//! [`ClientDialogue`] over the socket, perform the TLS handshake after `220` to STARTTLS
//! (or first, for implicit TLS), and record what happened. Every phase has a timeout, the
//! whole session a deadline ([`Timeouts::session`]), and every buffer a hard cap.

use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use sigillo_smtp::dialogue::Phase;
use sigillo_smtp::{
    ClientDialogue, DialogueConfig, ReplyError, ReplyLimits, Step, Transcript, parse_reply,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Time limits per phase, and for the whole session with one address. Build one from
/// [`Timeouts::default`] and the `with_*` methods (more limits may come).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Waiting for the 220 greeting (tarpits delay it on purpose).
    pub greeting: Duration,
    /// Waiting for the reply to any other command.
    pub command: Duration,
    /// The TLS handshake.
    pub handshake: Duration,
    /// The whole probe of one address, from the start of the TCP connect to the reply to
    /// QUIT (connect, greeting, EHLO or HELO, STARTTLS, handshake, EHLO in TLS, QUIT). The
    /// per-phase limits still apply inside it; whichever ends first stops the probe. Time
    /// spent waiting for a concurrency slot and DNS lookups are not part of it, and neither is
    /// the wait (at most 1 s) for the connection's shutdown once the dialogue is over: a
    /// deadline that passes then is no failure.
    ///
    /// The default, 60 s, cuts the worst case of the per-phase limits (10 + 30 + 4 × 30 + 20
    /// = 180 s with the defaults above: connect, greeting, four command replies, handshake,
    /// each answered just before its limit) to a third, yet never cuts short a tarpit that
    /// holds its greeting for the whole 30 s greeting limit: that still leaves 30 s for the
    /// connect, the handshake and four round trips, which a healthy server does in well
    /// under a second.
    pub session: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            greeting: Duration::from_secs(30),
            command: Duration::from_secs(30),
            handshake: Duration::from_secs(20),
            session: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// With this TCP connect limit ([`Timeouts::connect`]).
    #[must_use]
    pub fn with_connect(mut self, limit: Duration) -> Self {
        self.connect = limit;
        self
    }

    /// With this greeting limit ([`Timeouts::greeting`]).
    #[must_use]
    pub fn with_greeting(mut self, limit: Duration) -> Self {
        self.greeting = limit;
        self
    }

    /// With this limit for each other reply ([`Timeouts::command`]).
    #[must_use]
    pub fn with_command(mut self, limit: Duration) -> Self {
        self.command = limit;
        self
    }

    /// With this TLS handshake limit ([`Timeouts::handshake`]).
    #[must_use]
    pub fn with_handshake(mut self, limit: Duration) -> Self {
        self.handshake = limit;
        self
    }

    /// With this limit for the whole session ([`Timeouts::session`]).
    #[must_use]
    pub fn with_session(mut self, limit: Duration) -> Self {
        self.session = limit;
        self
    }
}

/// The most bytes of a partly received reply kept in a [`ProbeFailure::ReplyTimeout`],
/// [`ProbeFailure::SessionTimeout`] or [`ProbeFailure::Closed`] (before escaping).
pub const PARTIAL_REPLY_MAX: usize = 256;

/// The bytes of a reply that never completed, for display: at most [`PARTIAL_REPLY_MAX`]
/// of them, printable ASCII as it is, `\\`, `\"`, `\r`, `\n`, `\t`, and `\xNN` for any other
/// byte, then `…(N more bytes)` for the rest. `None` when nothing arrived.
pub fn partial_reply(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let shown = bytes.get(..PARTIAL_REPLY_MAX).unwrap_or(bytes);
    let mut text = String::with_capacity(shown.len() + 16);
    for &b in shown {
        match b {
            b'\\' => text.push_str("\\\\"),
            b'"' => text.push_str("\\\""),
            b'\r' => text.push_str("\\r"),
            b'\n' => text.push_str("\\n"),
            b'\t' => text.push_str("\\t"),
            0x20..=0x7e => text.push(char::from(b)),
            _ => text.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > shown.len() {
        text.push_str(&format!("…({} more bytes)", bytes.len() - shown.len()));
    }
    Some(text)
}

/// How to probe.
#[derive(Clone)]
pub struct ProbeConfig {
    pub ehlo_name: String,
    pub timeouts: Timeouts,
    pub limits: ReplyLimits,
    pub tls: Arc<rustls::ClientConfig>,
    /// TLS from the first byte (port 465), no STARTTLS.
    pub implicit_tls: bool,
}

/// How the TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeFailure {
    /// The server answered with a TLS alert: it speaks TLS but we could not agree.
    Alert,
    /// What came back was not TLS (e.g. SMTP text): something in the path is not
    /// passing TLS through.
    NotTls,
    /// The connection was closed or reset during the handshake.
    Closed,
    /// The handshake did not finish in time.
    Timeout,
    /// Any other TLS error.
    Other,
}

/// Why a probe stopped before the dialogue ended normally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProbeFailure {
    /// TCP connect failed (refused, unreachable).
    ConnectFailed { message: String },
    /// The local network cannot reach this address family at all.
    NetworkUnreachable { message: String },
    /// TCP connect took longer than the limit.
    ConnectTimeout,
    /// No complete reply within the limit.
    ReplyTimeout {
        phase: Phase,
        /// What the server had sent of the reply when time ran out (e.g. `220 ****` from a
        /// middlebox that then went silent), escaped and cut ([`partial_reply`]); absent
        /// when it had sent nothing.
        #[serde(skip_serializing_if = "Option::is_none")]
        partial_reply: Option<String>,
    },
    /// The server closed the connection while a reply was awaited.
    Closed {
        phase: Phase,
        /// What the server had sent of the reply before it closed (e.g. `220 ****` from a
        /// middlebox that then hung up), as in [`ProbeFailure::ReplyTimeout`]; absent when
        /// it had sent nothing of it.
        #[serde(skip_serializing_if = "Option::is_none")]
        partial_reply: Option<String>,
    },
    /// The server sent something that is not an SMTP reply.
    Malformed { phase: Phase, error: String },
    /// The TLS handshake failed.
    Handshake {
        failure: HandshakeFailure,
        message: String,
    },
    /// Another I/O error.
    Io { phase: Phase, message: String },
    /// The whole session took longer than [`Timeouts::session`], though no single phase hit
    /// its own limit: stopped in `phase`.
    SessionTimeout {
        /// The step under way when time ran out.
        phase: ProbeStep,
        /// The limit that passed, in milliseconds.
        limit_ms: u64,
        /// What the server had sent of a reply not complete when time ran out, as in
        /// [`ProbeFailure::ReplyTimeout`].
        #[serde(skip_serializing_if = "Option::is_none")]
        partial_reply: Option<String>,
    },
}

/// A step of the probe, for [`ProbeFailure::SessionTimeout`]: the dialogue's [`Phase`]s
/// (the reply awaited), the TCP connect before them, and the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProbeStep {
    /// The TCP connect.
    Connect,
    /// Waiting for the greeting.
    Greeting,
    /// Waiting for the reply to EHLO.
    Ehlo,
    /// Waiting for the reply to HELO.
    Helo,
    /// Waiting for the reply to STARTTLS.
    StartTls,
    /// The TLS handshake (after STARTTLS, or on connect with implicit TLS).
    Handshake,
    /// Waiting for the reply to EHLO inside TLS.
    TlsEhlo,
    /// Waiting for the reply to QUIT (once it came, a deadline is no failure: see
    /// [`Timeouts::session`]).
    Quit,
}

impl ProbeStep {
    fn from_phase(phase: Phase) -> Self {
        match phase {
            Phase::Greeting => Self::Greeting,
            Phase::Ehlo => Self::Ehlo,
            Phase::Helo => Self::Helo,
            Phase::StartTls => Self::StartTls,
            Phase::Handshake => Self::Handshake,
            Phase::TlsEhlo => Self::TlsEhlo,
            Phase::Quit | Phase::Done => Self::Quit,
        }
    }

    /// Words for messages: "the TCP connect", "the EHLO reply", …
    fn describe(self) -> &'static str {
        match self {
            Self::Connect => "the TCP connect",
            Self::Handshake => "the TLS handshake",
            Self::Greeting => "the greeting",
            Self::Ehlo => "the EHLO reply",
            Self::Helo => "the HELO reply",
            Self::StartTls => "the STARTTLS reply",
            Self::TlsEhlo => "the EHLO reply in TLS",
            Self::Quit => "the QUIT reply",
        }
    }
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::ConnectFailed { message } => write!(f, "connect failed: {message}"),
            ProbeFailure::NetworkUnreachable { message } => {
                write!(f, "network unreachable: {message}")
            }
            ProbeFailure::ConnectTimeout => write!(f, "connect timed out"),
            ProbeFailure::ReplyTimeout {
                phase,
                partial_reply,
            } => {
                write!(f, "timed out waiting for the {} reply", phase_name(*phase))?;
                write_partial(f, partial_reply.as_deref())
            }
            ProbeFailure::Closed {
                phase,
                partial_reply,
            } => {
                write!(
                    f,
                    "connection closed while waiting for the {} reply",
                    phase_name(*phase)
                )?;
                write_partial(f, partial_reply.as_deref())
            }
            ProbeFailure::Malformed { phase, error } => {
                write!(f, "malformed SMTP {} reply: {error}", phase_name(*phase))
            }
            ProbeFailure::Handshake { message, .. } => write!(f, "TLS handshake failed: {message}"),
            ProbeFailure::Io { phase, message } => {
                write!(f, "I/O error in {}: {message}", phase_name(*phase))
            }
            ProbeFailure::SessionTimeout {
                phase,
                limit_ms,
                partial_reply,
            } => {
                write!(
                    f,
                    "session timed out after {} s (the limit for the whole session), during {}",
                    *limit_ms as f64 / 1000.0,
                    phase.describe()
                )?;
                write_partial(f, partial_reply.as_deref())
            }
        }
    }
}

/// `; partial reply received: "220 ****"` after a timeout's or a close's words, when bytes
/// had come.
fn write_partial(f: &mut std::fmt::Formatter<'_>, partial: Option<&str>) -> std::fmt::Result {
    match partial {
        Some(text) => write!(f, "; partial reply received: \"{text}\""),
        None => Ok(()),
    }
}

/// A human name for a phase ("greeting", "EHLO", …).
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Greeting => "greeting",
        Phase::Ehlo => "EHLO",
        Phase::Helo => "HELO",
        Phase::StartTls => "STARTTLS",
        Phase::Handshake => "TLS handshake",
        Phase::TlsEhlo => "EHLO (in TLS)",
        Phase::Quit => "QUIT",
        Phase::Done => "end of session",
    }
}

/// The negotiated TLS session.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFacts {
    pub version: String,
    pub cipher: String,
    pub key_exchange: Option<String>,
    pub handshake_ms: f64,
    /// The chain as presented, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
}

/// Everything seen in one session with one address.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub address: SocketAddr,
    /// The name sent as SNI.
    pub sni: Option<String>,
    pub connect_ms: Option<f64>,
    /// From connection to complete greeting.
    pub greeting_ms: Option<f64>,
    pub total_ms: f64,
    pub transcript: Transcript,
    pub tls: Option<TlsFacts>,
    pub failure: Option<ProbeFailure>,
    /// Bytes the server sent after `220` to STARTTLS and before the handshake (discarded;
    /// a sign of command injection or a broken middlebox).
    pub bytes_before_handshake: usize,
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Probes one address. Never fails: what went wrong is in [`ProbeResult::failure`].
pub async fn probe(address: SocketAddr, sni: Option<&str>, config: &ProbeConfig) -> ProbeResult {
    let start = Instant::now();
    let mut result = ProbeResult {
        address,
        sni: sni.map(str::to_owned),
        connect_ms: None,
        greeting_ms: None,
        total_ms: 0.0,
        transcript: Transcript::default(),
        tls: None,
        failure: None,
        bytes_before_handshake: 0,
    };
    let mut dialogue = ClientDialogue::new(DialogueConfig {
        ehlo_name: config.ehlo_name.clone(),
        starttls: !config.implicit_tls,
        implicit_tls: config.implicit_tls,
    });
    let session = config.timeouts.session;
    // The bytes read and not yet parsed as a reply; outside `run`, so a session deadline
    // that drops it can still say what had arrived of the reply awaited.
    let mut buf = Vec::new();
    let outcome = timeout(
        session,
        run(
            address,
            sni,
            config,
            &mut dialogue,
            &mut result,
            &mut buf,
            start,
        ),
    )
    .await;
    result.failure = match outcome {
        Ok(done) => done.err(),
        // What the dropped `run` learned stays: the transcript so far, the connect and
        // greeting times, the TLS session. Where it stood tells the step.
        Err(_) => deadline_failure(&result, &dialogue, config.implicit_tls, session, &buf),
    };
    result.transcript = dialogue.into_transcript();
    result.total_ms = ms(start);
    result
}

/// What a session deadline that dropped `run` means. Once the dialogue is over
/// ([`Phase::Done`]: the reply to QUIT came, or a `421` ended the session), `run` only waits
/// (at most 1 s) for the connection's shutdown, whose own timeout and errors `converse`
/// ignores: the session limit runs to the reply to QUIT, so a deadline during that wait is no
/// failure either, and bytes in `buf` then came after the last reply, awaited by no one (no
/// `partial_reply` of a QUIT reply already complete). Before that, a
/// [`ProbeFailure::SessionTimeout`] in the step `run` stood in, with what had come of the
/// reply awaited.
fn deadline_failure(
    result: &ProbeResult,
    dialogue: &ClientDialogue,
    implicit: bool,
    session: Duration,
    buf: &[u8],
) -> Option<ProbeFailure> {
    if dialogue.phase() == Phase::Done {
        return None;
    }
    Some(ProbeFailure::SessionTimeout {
        phase: step_at_deadline(result, dialogue, implicit),
        limit_ms: u64::try_from(session.as_millis()).unwrap_or(u64::MAX),
        partial_reply: partial_reply(buf),
    })
}

/// The step a probe stopped by the session deadline was in. `run` sets `connect_ms` right
/// after the TCP connect and `tls` right after the handshake, with no await in between.
fn step_at_deadline(result: &ProbeResult, dialogue: &ClientDialogue, implicit: bool) -> ProbeStep {
    if result.connect_ms.is_none() {
        ProbeStep::Connect
    } else if implicit && result.tls.is_none() {
        ProbeStep::Handshake
    } else {
        ProbeStep::from_phase(dialogue.phase())
    }
}

async fn run(
    address: SocketAddr,
    sni: Option<&str>,
    config: &ProbeConfig,
    dialogue: &mut ClientDialogue,
    result: &mut ProbeResult,
    buf: &mut Vec<u8>,
    start: Instant,
) -> Result<(), ProbeFailure> {
    let tcp = match timeout(config.timeouts.connect, TcpStream::connect(address)).await {
        Err(_) => return Err(ProbeFailure::ConnectTimeout),
        Ok(Err(e)) => return Err(connect_failure(&e)),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    result.connect_ms = Some(ms(start));
    let connected = Instant::now();
    let server_name = server_name(sni, address.ip());
    if config.implicit_tls {
        let (tls, facts) = handshake(tcp, server_name, config).await?;
        result.tls = Some(facts);
        let mut tls = tls;
        converse(&mut tls, dialogue, config, buf, Some((result, connected))).await?;
        return Ok(());
    }
    let mut tcp = tcp;
    let step = converse(&mut tcp, dialogue, config, buf, Some((result, connected))).await?;
    if step != Step::StartTls {
        return Ok(());
    }
    result.bytes_before_handshake = buf.len();
    // Those bytes are discarded: what TLS brings is another stream.
    buf.clear();
    let (mut tls, facts) = handshake(tcp, server_name, config).await?;
    result.tls = Some(facts);
    let Step::Send(command) = dialogue.on_tls_established() else {
        return Ok(());
    };
    write(&mut tls, &command.to_bytes(), dialogue.phase()).await?;
    converse(&mut tls, dialogue, config, buf, None).await?;
    Ok(())
}

/// A connection the dialogue runs over, plain or TLS.
trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// Called before waiting for a reply.
    fn before_read(&self) {}
}

impl Socket for TcpStream {}

impl Socket for tokio_rustls::client::TlsStream<TcpStream> {
    /// Acknowledge at once instead of after Linux's 40 ms delayed-ACK timer. After a TLS 1.3
    /// handshake, OpenSSL servers (Postfix) send session tickets that cross our EHLO; the
    /// server's Nagle algorithm then holds its EHLO reply until the tickets are acknowledged,
    /// which cost about 40 ms in half the checks (docs/benchmarks.md). Setting TCP_QUICKACK
    /// sends a pending ACK now and leaves delayed-ACK mode for the reads that follow.
    fn before_read(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(self.get_ref().0).set_tcp_quickack(true);
    }
}

fn server_name(sni: Option<&str>, ip: IpAddr) -> ServerName<'static> {
    sni.and_then(|name| ServerName::try_from(name.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
}

fn connect_failure(e: &std::io::Error) -> ProbeFailure {
    use std::io::ErrorKind;
    let message = e.to_string();
    match e.kind() {
        ErrorKind::NetworkUnreachable
        | ErrorKind::HostUnreachable
        | ErrorKind::AddrNotAvailable => ProbeFailure::NetworkUnreachable { message },
        _ => ProbeFailure::ConnectFailed { message },
    }
}

/// Reads replies and sends commands until the dialogue asks for TLS or closes.
/// `greeting` receives the time the greeting took, when measuring it.
async fn converse<S: Socket>(
    stream: &mut S,
    dialogue: &mut ClientDialogue,
    config: &ProbeConfig,
    buf: &mut Vec<u8>,
    mut greeting: Option<(&mut ProbeResult, Instant)>,
) -> Result<Step, ProbeFailure> {
    loop {
        let phase = dialogue.phase();
        let limit = if phase == Phase::Greeting {
            config.timeouts.greeting
        } else {
            config.timeouts.command
        };
        let reply = match timeout(limit, read_reply(stream, buf, &config.limits, phase)).await {
            Err(_) => {
                return Err(ProbeFailure::ReplyTimeout {
                    phase,
                    partial_reply: partial_reply(buf),
                });
            }
            Ok(reply) => reply?,
        };
        if phase == Phase::Greeting
            && let Some((result, since)) = greeting.take()
        {
            result.greeting_ms = Some(ms(since));
        }
        let step = dialogue
            .on_reply(reply)
            .map_err(|e| ProbeFailure::Malformed {
                phase,
                error: e.to_string(),
            })?;
        match step {
            Step::Send(command) => write(stream, &command.to_bytes(), phase).await?,
            Step::StartTls | Step::Close => {
                if step == Step::Close {
                    let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
                }
                return Ok(step);
            }
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    phase: Phase,
) -> Result<(), ProbeFailure> {
    let io = |e: std::io::Error| ProbeFailure::Io {
        phase,
        message: e.to_string(),
    };
    stream.write_all(bytes).await.map_err(io)?;
    stream.flush().await.map_err(io)
}

/// Reads until `buf` holds one complete reply; leaves any following bytes in `buf`.
async fn read_reply<S: Socket>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    limits: &ReplyLimits,
    phase: Phase,
) -> Result<sigillo_smtp::Reply, ProbeFailure> {
    let malformed = |e: ReplyError| ProbeFailure::Malformed {
        phase,
        error: e.to_string(),
    };
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((reply, used)) = parse_reply(buf, limits).map_err(malformed)? {
            buf.drain(..used);
            return Ok(reply);
        }
        if buf.len() >= limits.max_reply_bytes() {
            return Err(ProbeFailure::Malformed {
                phase,
                error: format!("reply larger than {} bytes", limits.max_reply_bytes()),
            });
        }
        stream.before_read();
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return Err(closed(phase, buf)),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(closed(phase, buf));
            }
            Err(e) => {
                return Err(ProbeFailure::Io {
                    phase,
                    message: e.to_string(),
                });
            }
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The server closed the connection in `phase`, after sending `buf` of the reply awaited.
fn closed(phase: Phase, buf: &[u8]) -> ProbeFailure {
    ProbeFailure::Closed {
        phase,
        partial_reply: partial_reply(buf),
    }
}

async fn handshake(
    tcp: TcpStream,
    server_name: ServerName<'static>,
    config: &ProbeConfig,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, TlsFacts), ProbeFailure> {
    let start = Instant::now();
    let connector = tokio_rustls::TlsConnector::from(config.tls.clone());
    let tls = match timeout(
        config.timeouts.handshake,
        connector.connect(server_name, tcp),
    )
    .await
    {
        Err(_) => {
            return Err(ProbeFailure::Handshake {
                failure: HandshakeFailure::Timeout,
                message: format!("no TLS handshake within {:?}", config.timeouts.handshake),
            });
        }
        Ok(Err(e)) => return Err(handshake_failure(&e)),
        Ok(Ok(tls)) => tls,
    };
    let (_, conn) = tls.get_ref();
    let facts = TlsFacts {
        version: conn
            .protocol_version()
            .map(crate::tls::version_name)
            .unwrap_or_default(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| crate::tls::cipher_name(s.suite()))
            .unwrap_or_default(),
        key_exchange: conn
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name())),
        handshake_ms: ms(start),
        chain: conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default(),
    };
    Ok((tls, facts))
}

fn handshake_failure(e: &std::io::Error) -> ProbeFailure {
    let message = e.to_string();
    let failure = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(_)) => HandshakeFailure::Alert,
        Some(rustls::Error::InvalidMessage(_)) => HandshakeFailure::NotTls,
        Some(rustls::Error::PeerIncompatible(_)) => HandshakeFailure::Alert,
        Some(_) => HandshakeFailure::Other,
        None => match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => HandshakeFailure::Closed,
            _ => HandshakeFailure::Other,
        },
    };
    ProbeFailure::Handshake { failure, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(connected: bool, tls: bool) -> ProbeResult {
        ProbeResult {
            address: "192.0.2.1:25".parse().unwrap(),
            sni: None,
            connect_ms: connected.then_some(1.0),
            greeting_ms: None,
            total_ms: 0.0,
            transcript: Transcript::default(),
            tls: tls.then(|| TlsFacts {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                key_exchange: None,
                handshake_ms: 1.0,
                chain: Vec::new(),
            }),
            failure: None,
            bytes_before_handshake: 0,
        }
    }

    fn dialogue(implicit_tls: bool, replies: &[&str]) -> ClientDialogue {
        let mut d = ClientDialogue::new(DialogueConfig {
            ehlo_name: "probe.test".into(),
            starttls: !implicit_tls,
            implicit_tls,
        });
        for raw in replies {
            let (reply, _) = parse_reply(raw.as_bytes(), &ReplyLimits::default())
                .unwrap()
                .unwrap();
            d.on_reply(reply).unwrap();
        }
        d
    }

    /// The step a session deadline names comes from where the dropped probe stood.
    #[test]
    fn step_at_the_deadline() {
        const BANNER: &str = "220 mx ESMTP\r\n";
        const EHLO: &str = "250-mx\r\n250 STARTTLS\r\n";
        let cases = [
            (
                "not connected",
                result(false, false),
                false,
                vec![],
                ProbeStep::Connect,
            ),
            (
                "no greeting",
                result(true, false),
                false,
                vec![],
                ProbeStep::Greeting,
            ),
            (
                "EHLO",
                result(true, false),
                false,
                vec![BANNER],
                ProbeStep::Ehlo,
            ),
            (
                "STARTTLS",
                result(true, false),
                false,
                vec![BANNER, EHLO],
                ProbeStep::StartTls,
            ),
            (
                "handshake after STARTTLS",
                result(true, false),
                false,
                vec![BANNER, EHLO, "220 go\r\n"],
                ProbeStep::Handshake,
            ),
            (
                "implicit TLS handshake",
                result(true, false),
                true,
                vec![],
                ProbeStep::Handshake,
            ),
            (
                "implicit TLS greeting",
                result(true, true),
                true,
                vec![],
                ProbeStep::Greeting,
            ),
            (
                "closing after QUIT",
                result(true, false),
                false,
                vec![BANNER, "250 mx\r\n", "221 bye\r\n"],
                ProbeStep::Quit,
            ),
        ];
        for (name, result, implicit, replies, step) in cases {
            let d = dialogue(implicit, &replies);
            assert_eq!(step_at_deadline(&result, &d, implicit), step, "{name}");
        }
    }

    /// A session deadline while awaiting the reply to QUIT is a failure with what had come of
    /// that reply; once the reply came (or a `421` ended the dialogue), `run` only waits for
    /// the shutdown: a deadline then is no failure, and bytes the server sent after its last
    /// reply are no partial reply.
    #[test]
    fn a_deadline_after_the_dialogue_ended_is_no_failure() {
        const BANNER: &str = "220 mx ESMTP\r\n";
        let session = Duration::from_millis(1500);
        let cases = [
            (
                "awaiting the reply to QUIT",
                vec![BANNER, "250 mx\r\n"],
                &b"221 by"[..],
                Some(ProbeFailure::SessionTimeout {
                    phase: ProbeStep::Quit,
                    limit_ms: 1500,
                    partial_reply: Some("221 by".into()),
                }),
            ),
            (
                "closing after the reply to QUIT, bytes after it",
                vec![BANNER, "250 mx\r\n", "221 bye\r\n"],
                &b"250 late"[..],
                None,
            ),
            (
                "closing after QUIT, nothing after it",
                vec![BANNER, "250 mx\r\n", "221 bye\r\n"],
                &b""[..],
                None,
            ),
            (
                "closing after a 421 to EHLO",
                vec![BANNER, "421 busy\r\n"],
                &b"x"[..],
                None,
            ),
        ];
        for (name, replies, buf, want) in cases {
            let d = dialogue(false, &replies);
            assert_eq!(
                deadline_failure(&result(true, false), &d, false, session, buf),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn session_timeout_in_words_and_json() {
        let failure = ProbeFailure::SessionTimeout {
            phase: ProbeStep::StartTls,
            limit_ms: 1500,
            partial_reply: None,
        };
        assert_eq!(
            failure.to_string(),
            "session timed out after 1.5 s (the limit for the whole session), during the STARTTLS reply"
        );
        assert_eq!(
            serde_json::to_value(&failure).unwrap(),
            serde_json::json!({"kind": "session-timeout", "phase": "start-tls", "limit_ms": 1500})
        );
    }

    /// What a timeout keeps of a partial reply: escaped, cut at [`PARTIAL_REPLY_MAX`] bytes.
    #[test]
    fn partial_replies_for_display() {
        let long = vec![b'x'; PARTIAL_REPLY_MAX + 10];
        let long_want = format!("{}…(10 more bytes)", "x".repeat(PARTIAL_REPLY_MAX));
        let cases: [(&[u8], Option<&str>); 5] = [
            (b"", None),
            (b"220 ****", Some("220 ****")),
            (
                b"250-a\r\n250-b\"c\\\t\x00\xff",
                Some("250-a\\r\\n250-b\\\"c\\\\\\t\\x00\\xff"),
            ),
            ("220 é".as_bytes(), Some("220 \\xc3\\xa9")),
            (&long, Some(&long_want)),
        ];
        for (bytes, want) in cases {
            assert_eq!(partial_reply(bytes).as_deref(), want, "{bytes:?}");
        }
    }

    #[test]
    fn reply_timeout_in_words_and_json() {
        let cases = [
            (
                None,
                "timed out waiting for the greeting reply",
                serde_json::json!({"kind": "reply-timeout", "phase": "greeting"}),
            ),
            (
                Some("220 ****"),
                "timed out waiting for the greeting reply; partial reply received: \"220 ****\"",
                serde_json::json!({
                    "kind": "reply-timeout",
                    "phase": "greeting",
                    "partial_reply": "220 ****"
                }),
            ),
        ];
        for (partial, words, json) in cases {
            let failure = ProbeFailure::ReplyTimeout {
                phase: Phase::Greeting,
                partial_reply: partial.map(str::to_owned),
            };
            assert_eq!(failure.to_string(), words);
            assert_eq!(serde_json::to_value(&failure).unwrap(), json);
        }
    }

    #[test]
    fn closed_in_words_and_json() {
        let cases = [
            (
                None,
                "connection closed while waiting for the EHLO reply",
                serde_json::json!({"kind": "closed", "phase": "ehlo"}),
            ),
            (
                Some("250-mx\\r\\n250-X"),
                "connection closed while waiting for the EHLO reply; partial reply received: \
                 \"250-mx\\r\\n250-X\"",
                serde_json::json!({
                    "kind": "closed",
                    "phase": "ehlo",
                    "partial_reply": "250-mx\\r\\n250-X"
                }),
            ),
        ];
        for (partial, words, json) in cases {
            let failure = ProbeFailure::Closed {
                phase: Phase::Ehlo,
                partial_reply: partial.map(str::to_owned),
            };
            assert_eq!(failure.to_string(), words);
            assert_eq!(serde_json::to_value(&failure).unwrap(), json);
        }
    }
}
