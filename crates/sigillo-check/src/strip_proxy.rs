//! A TCP proxy that rewrites SMTP like a Cisco PIX/ASA with `inspect esmtp` (masked banner,
//! STARTTLS masked as `XXXXXXXA` both ways), to see what an MTA or a check does when
//! STARTTLS is stripped. The rewriting is [`sigillo_smtp::asa`]; this is only the sockets.
//!
//! Every connection is bounded: the upstream connect has a timeout, a connection with no
//! byte in either direction for [`ProxyOptions::idle_timeout`] is closed (a byte counts when
//! it is read from a side and when a side's socket takes it), and at most
//! [`ProxyOptions::max_connections`] are relayed at once (more are accepted and closed at
//! once). [`serve_until`] stops on a shutdown signal and reports every connection as it ends.
//!
//! A side that closes (end of file) is half-closed on the other side, so a client that sends
//! `QUIT` and shuts down its writing half still gets the reply. Once the client has closed
//! its side and the server has answered all it sent (the greeting, each command, each
//! message's end: [`AsaRewriter::replies_owed`]), the server has
//! [`ProxyOptions::client_gone_grace`] (from the last byte either way) to close; a server
//! that stays silent and open is then closed with the client, so a client that has gone
//! does not hold its connection slot until the idle timeout. A server still owing a reply
//! (a content filter scanning the message) has the idle timeout, as before the client
//! left; so has a session in TLS, whose commands the proxy cannot see.
//!
//! The other way round: once the server has closed its side and all it sent reached the
//! client, whose side was then half-closed, the client has
//! [`ProxyOptions::server_gone_grace`] (from the last byte either way) to close; a client
//! that stays open and silent is then closed with the server
//! ([`ConnectionEnd::ServerGone`]). Nothing more can come from a server that closed, so
//! nothing is waited for.
//!
//! Either grace counts only while no bytes wait to be written: a side whose bytes the other
//! has not taken yet (a client's message stuck behind a half-closed server that reads
//! slowly or not at all, a reply stuck behind a client that does not read) is not silent, so
//! the connection then has the idle timeout, counted from the last byte read or written.

use crate::accept_log::{AcceptLog, AcceptReport};
use sigillo_smtp::asa::AsaRewriter;
pub use sigillo_smtp::asa::{AsaConfig, AsaStats, DEFAULT_MAX_LINE};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Limits and rewriting policy of a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    /// What to rewrite (the ASA's defaults: mask the banner, strip STARTTLS).
    pub asa: AsaConfig,
    /// How long a connection to the upstream may take.
    pub connect_timeout: Duration,
    /// A connection with no byte in either direction for this long is closed (a byte read
    /// from a side, or taken by a side's socket).
    pub idle_timeout: Duration,
    /// Most connections relayed at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Once the client has closed its side and the server has answered everything it sent,
    /// a server that sends nothing for this long (e.g. after its reply to `QUIT`) and does
    /// not close is closed with the client ([`ConnectionEnd::ClientGone`]). At most
    /// `idle_timeout`. It does not count while bytes wait to be written either way.
    pub client_gone_grace: Duration,
    /// Once the server has closed its side and all it sent reached the client, a client that
    /// sends nothing for this long and does not close is closed with the server
    /// ([`ConnectionEnd::ServerGone`]). At most `idle_timeout`. It does not count while bytes
    /// wait to be written either way (the client's, stuck behind a server that does not read).
    pub server_gone_grace: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            asa: AsaConfig::default(),
            connect_timeout: Duration::from_secs(10),
            // Postfix and Exim wait 300 s for a command or reply by default.
            idle_timeout: Duration::from_secs(300),
            max_connections: 256,
            client_gone_grace: Duration::from_secs(5),
            server_gone_grace: Duration::from_secs(5),
        }
    }
}

/// One side of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client that connected to the proxy.
    Client,
    /// The upstream server.
    Server,
}

impl Side {
    /// `client` or `server`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Why a relayed connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEnd {
    /// Both sides closed; this one closed first.
    Closed { first: Side },
    /// No byte in either direction for the idle timeout.
    IdleTimeout,
    /// The proxy was shutting down.
    Shutdown,
    /// The upstream could not be reached (refused, unreachable, or the connect timed out).
    UpstreamUnreachable { message: String },
    /// Reading from or writing to one side failed (e.g. a reset).
    Failed { side: Side, message: String },
    /// The client closed its side, and then the server sent nothing for `grace`
    /// ([`ProxyOptions::client_gone_grace`]) and did not close: the proxy closed both.
    ClientGone { grace: Duration },
    /// The server closed its side (passed on to the client as a half-close once all it sent
    /// was forwarded), and then the client sent nothing for `grace`
    /// ([`ProxyOptions::server_gone_grace`]) and did not close: the proxy closed both.
    ServerGone { grace: Duration },
}

/// What happened on one relayed connection, reported when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionReport {
    /// Sequence number of the connection since the proxy started, from 1.
    pub id: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The upstream it was relayed to.
    pub upstream: SocketAddr,
    /// From accept to close.
    pub duration: Duration,
    /// Bytes read from the client (before rewriting).
    pub bytes_from_client: u64,
    /// Bytes read from the server (before rewriting).
    pub bytes_from_server: u64,
    /// What the rewriter changed.
    pub rewrites: AsaStats,
    /// STARTTLS was let through and accepted: the rest of the connection was TLS.
    pub tls_started: bool,
    /// Why it ended.
    pub end: ConnectionEnd,
}

/// Something the serving loop reports, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyEvent {
    /// A relayed connection ended.
    Closed(ConnectionReport),
    /// A client was turned away because `open` connections were already being relayed.
    Refused { client: SocketAddr, open: usize },
    /// `accept` failed (e.g. out of file descriptors; the loop pauses briefly and goes on),
    /// is still failing, or works again: rate-limited by [`AcceptLog`].
    Accept(AcceptReport),
}

/// Counts over a whole run of [`serve_until`]: each connection it reports is in exactly one
/// of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Connections relayed to the upstream (whatever their end after the upstream connect).
    pub relayed: u64,
    /// Connections whose upstream could not be reached ([`ConnectionEnd::UpstreamUnreachable`]):
    /// accepted, but nothing was relayed.
    pub upstream_unreachable: u64,
    /// Connections refused because of `max_connections`.
    pub refused: u64,
}

impl ServeSummary {
    /// Counts one connection that has ended, by how it ended.
    fn count(&mut self, report: &ConnectionReport) {
        match report.end {
            ConnectionEnd::UpstreamUnreachable { .. } => self.upstream_unreachable += 1,
            _ => self.relayed += 1,
        }
    }
}

/// Serves connections on `listener` forever with the default limits, each relayed to
/// `upstream` through its own rewriter.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, config: AsaConfig) {
    let options = ProxyOptions {
        asa: config,
        ..ProxyOptions::default()
    };
    serve_until(
        listener,
        upstream,
        options,
        std::future::pending::<()>(),
        |_| {},
    )
    .await;
}

/// Serves connections on `listener` until `shutdown` completes, each relayed to `upstream`
/// through its own rewriter, and calls `on_event` as connections end or are refused. On
/// shutdown it stops accepting, closes the open connections (each reported with
/// [`ConnectionEnd::Shutdown`]) and returns.
pub async fn serve_until(
    listener: TcpListener,
    upstream: SocketAddr,
    options: ProxyOptions,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(ProxyEvent),
) -> ServeSummary {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut relays: JoinSet<ConnectionReport> = JoinSet::new();
    let mut summary = ServeSummary::default();
    // Connections handed to a relay so far, which numbers them. Each is counted in
    // `summary` when it ends, as relayed or upstream unreachable.
    let mut started: u64 = 0;
    let mut accept_log = AcceptLog::default();
    tokio::pin!(shutdown);
    loop {
        let accept_tick = accept_log.next_tick();
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = relays.join_next(), if !relays.is_empty() => {
                if let Ok(report) = done {
                    summary.count(&report);
                    on_event(ProxyEvent::Closed(report));
                }
            }
            () = crate::accept_log::timer(accept_tick) => {
                if let Some(report) = accept_log.tick(Instant::now()) {
                    on_event(ProxyEvent::Accept(report));
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, client_addr)) => {
                    if let Some(report) = accept_log.accepted(Instant::now()) {
                        on_event(ProxyEvent::Accept(report));
                    }
                    if relays.len() >= options.max_connections {
                        summary.refused += 1;
                        drop(client);
                        on_event(ProxyEvent::Refused {
                            client: client_addr,
                            open: relays.len(),
                        });
                        continue;
                    }
                    started += 1;
                    let id = started;
                    let stop = stop_rx.clone();
                    relays.spawn(async move {
                        relay(client, client_addr, upstream, options, id, stop).await
                    });
                }
                Err(e) => {
                    for report in accept_log.failed(Instant::now(), e.to_string()) {
                        on_event(ProxyEvent::Accept(report));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if let Some(report) = accept_log.finish() {
        on_event(ProxyEvent::Accept(report));
    }
    let _ = stop_tx.send(true);
    while let Some(done) = relays.join_next().await {
        if let Ok(report) = done {
            summary.count(&report);
            on_event(ProxyEvent::Closed(report));
        }
    }
    summary
}

/// Relays one client connection to `upstream` until both sides close, the connection is
/// idle too long, a side fails, or `stop` turns true.
pub async fn relay(
    client: TcpStream,
    client_addr: SocketAddr,
    upstream: SocketAddr,
    options: ProxyOptions,
    id: u64,
    mut stop: watch::Receiver<bool>,
) -> ConnectionReport {
    let started = Instant::now();
    let rewriter = Mutex::new(AsaRewriter::new(options.asa));
    let traffic = Traffic::default();
    let end =
        match tokio::time::timeout(options.connect_timeout, TcpStream::connect(upstream)).await {
            Err(_) => ConnectionEnd::UpstreamUnreachable {
                message: format!(
                    "connect timed out after {} s",
                    options.connect_timeout.as_secs_f64()
                ),
            },
            Ok(Err(e)) => ConnectionEnd::UpstreamUnreachable {
                message: e.to_string(),
            },
            Ok(Ok(server)) => {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let down = pump(
                    server_read,
                    client_write,
                    Side::Server,
                    &rewriter,
                    &traffic,
                    started,
                );
                let up = pump(
                    client_read,
                    server_write,
                    Side::Client,
                    &rewriter,
                    &traffic,
                    started,
                );
                tokio::select! {
                    both = async { tokio::try_join!(down, up) } => match both {
                        Ok(_) => ConnectionEnd::Closed {
                            first: traffic.first_closed().unwrap_or(Side::Client),
                        },
                        Err((side, e)) => ConnectionEnd::Failed {
                            side,
                            message: e.to_string(),
                        },
                    },
                    end = idle(&traffic, &rewriter, started, &options) => end,
                    _ = stop.wait_for(|stopping| *stopping) => ConnectionEnd::Shutdown,
                }
            }
        };
    let (rewrites, tls_started) = {
        let rw = lock(&rewriter);
        (rw.stats(), rw.is_transparent())
    };
    ConnectionReport {
        id,
        client: client_addr,
        upstream,
        duration: started.elapsed(),
        bytes_from_client: traffic.from_client.load(Ordering::Relaxed),
        bytes_from_server: traffic.from_server.load(Ordering::Relaxed),
        rewrites,
        tls_started,
        end,
    }
}

/// Byte counts and activity of one connection, shared by its two directions.
#[derive(Debug, Default)]
struct Traffic {
    /// The client closed its side and everything it sent was forwarded.
    client_done: AtomicBool,
    /// The server closed its side and everything it sent was forwarded.
    server_done: AtomicBool,
    /// Wakes [`idle`] when `client_done` or `server_done` is set, when the server sends
    /// something after the client's close (it may have answered the last command), and when
    /// a write ends after either closed (a grace may count again).
    side_gone: Notify,
    from_client: AtomicU64,
    from_server: AtomicU64,
    /// Milliseconds from the connection's start to the last byte read or written in either
    /// direction.
    last_activity_ms: AtomicU64,
    /// Directions with bytes read but not yet all taken by the other side's socket (0, 1 or
    /// 2): while any are, no grace counts, only the idle timeout ([`idle`]).
    writing: AtomicU8,
    /// 0 while both sides are open, then 1 (client) or 2 (server): which closed first.
    first_closed: AtomicU8,
}

impl Traffic {
    fn record(&self, side: Side, bytes: usize, started: Instant) {
        let counter = match side {
            Side::Client => &self.from_client,
            Side::Server => &self.from_server,
        };
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
        self.last_activity_ms
            .store(millis_since(started), Ordering::Relaxed);
    }

    /// Bytes were taken by a side's socket: the connection is moving.
    fn wrote(&self, started: Instant) {
        self.last_activity_ms
            .store(millis_since(started), Ordering::Relaxed);
    }

    /// A direction starts writing what it read.
    fn write_started(&self) {
        self.writing.fetch_add(1, Ordering::Relaxed);
    }

    /// A direction wrote all it read (or failed): a grace may count again, so [`idle`] looks.
    fn write_ended(&self, started: Instant) {
        self.wrote(started);
        self.writing.fetch_sub(1, Ordering::Relaxed);
        if self.client_done.load(Ordering::Relaxed) || self.server_done.load(Ordering::Relaxed) {
            self.side_gone.notify_one();
        }
    }

    /// Whether bytes read from one side wait to be taken by the other.
    fn is_writing(&self) -> bool {
        self.writing.load(Ordering::Relaxed) > 0
    }

    fn closed(&self, side: Side) {
        let code = match side {
            Side::Client => 1,
            Side::Server => 2,
        };
        let _ = self
            .first_closed
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// `side` closed and all it sent was forwarded: the other side's grace may start now
    /// ([`idle`]).
    fn finished(&self, side: Side, started: Instant) {
        self.last_activity_ms
            .store(millis_since(started), Ordering::Relaxed);
        let done = match side {
            Side::Client => &self.client_done,
            Side::Server => &self.server_done,
        };
        done.store(true, Ordering::Relaxed);
        self.side_gone.notify_one();
    }

    fn first_closed(&self) -> Option<Side> {
        match self.first_closed.load(Ordering::Relaxed) {
            1 => Some(Side::Client),
            2 => Some(Side::Server),
            _ => None,
        }
    }
}

fn millis_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Completes once no byte has moved for the idle timeout ([`ConnectionEnd::IdleTimeout`]);
/// or, after the client closed its side and the server answered all it sent, for the
/// client-gone grace ([`ConnectionEnd::ClientGone`]); or, after the server closed its side
/// and all it sent was forwarded, for the server-gone grace ([`ConnectionEnd::ServerGone`]).
/// A grace counts only while no bytes wait to be written ([`Traffic::is_writing`]): until
/// then the idle timeout does. (Once both have closed, the relay ends as
/// [`ConnectionEnd::Closed`] before this.)
async fn idle(
    traffic: &Traffic,
    rewriter: &Mutex<AsaRewriter>,
    started: Instant,
    options: &ProxyOptions,
) -> ConnectionEnd {
    loop {
        let end = if traffic.is_writing() {
            // Bytes on their way: neither side is silent, whatever has closed.
            ConnectionEnd::IdleTimeout
        } else if traffic.server_done.load(Ordering::Relaxed) {
            ConnectionEnd::ServerGone {
                grace: options.server_gone_grace.min(options.idle_timeout),
            }
        } else if traffic.client_done.load(Ordering::Relaxed)
            && lock(rewriter).replies_owed().is_some_and(|owed| owed == 0)
        {
            ConnectionEnd::ClientGone {
                grace: options.client_gone_grace.min(options.idle_timeout),
            }
        } else {
            ConnectionEnd::IdleTimeout
        };
        let limit = match end {
            ConnectionEnd::ServerGone { grace } | ConnectionEnd::ClientGone { grace } => grace,
            _ => options.idle_timeout,
        };
        let last = Duration::from_millis(traffic.last_activity_ms.load(Ordering::Relaxed));
        let deadline = started + last + limit;
        if Instant::now() >= deadline {
            return end;
        }
        // A server gone stays gone: nothing is left to wait for but the deadline. The client
        // may still send, and a write may start meanwhile, but it only moves the deadline
        // later (its bytes are activity, and a write under way has the idle timeout, at least
        // the grace): the next turn, at this deadline, counts from them.
        let waiting = !matches!(end, ConnectionEnd::ServerGone { .. });
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = traffic.side_gone.notified(), if waiting => {}
        }
    }
}

/// Copies `from` → `to` through the rewriter until `from` closes, then forwards any
/// unfinished line unchanged, half-closes `to` and marks `side` finished
/// ([`Traffic::finished`]).
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    side: Side,
    rewriter: &Mutex<AsaRewriter>,
    traffic: &Traffic,
    started: Instant,
) -> Result<(), (Side, std::io::Error)> {
    let other = match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.map_err(|e| (side, e))?;
        if n == 0 {
            traffic.closed(side);
            let rest = {
                let mut rw = lock(rewriter);
                match side {
                    Side::Client => rw.take_pending_client(),
                    Side::Server => rw.take_pending_server(),
                }
            };
            write_counted(&mut to, &rest, traffic, started)
                .await
                .map_err(|e| (other, e))?;
            // The other side may already be gone: a failed half-close is not an error.
            let _ = to.shutdown().await;
            // All `side` sent reached the other side, which was half-closed.
            traffic.finished(side, started);
            return Ok(());
        }
        traffic.record(side, n, started);
        let out = {
            let mut rw = lock(rewriter);
            let chunk = buf.get(..n).unwrap_or_default();
            match side {
                Side::Client => rw.client_to_server(chunk),
                Side::Server => rw.server_to_client(chunk),
            }
        };
        write_counted(&mut to, &out, traffic, started)
            .await
            .map_err(|e| (other, e))?;
        if side == Side::Server && traffic.client_done.load(Ordering::Relaxed) {
            // The client has gone: this may have been the last reply it was owed.
            traffic.side_gone.notify_one();
        }
    }
}

/// Writes all of `bytes` to `to`, each part the socket takes counted as activity, and marked
/// as writing ([`Traffic::is_writing`]) until done, so that no grace cuts a connection whose
/// bytes are still on their way.
async fn write_counted(
    to: &mut (impl AsyncWrite + Unpin),
    mut bytes: &[u8],
    traffic: &Traffic,
    started: Instant,
) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    traffic.write_started();
    let written = async {
        while !bytes.is_empty() {
            let n = to.write(bytes).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            traffic.wrote(started);
            bytes = bytes.get(n..).unwrap_or_default();
        }
        Ok(())
    }
    .await;
    traffic.write_ended(started);
    written
}

fn lock(rewriter: &Mutex<AsaRewriter>) -> std::sync::MutexGuard<'_, AsaRewriter> {
    rewriter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a proxy in front of `upstream` for `clients` connections, one after the other,
    /// each reading until the proxy closes it; then stops the proxy. Returns the summary and
    /// the reports of the ended connections.
    async fn run_clients(
        upstream: SocketAddr,
        clients: usize,
    ) -> (ServeSummary, Vec<ConnectionReport>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let options = ProxyOptions {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            ..ProxyOptions::default()
        };
        let connect = async move {
            for _ in 0..clients {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let mut rest = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
                        .await;
                assert!(read.is_ok(), "the proxy did not close the connection");
            }
            let _ = stop_tx.send(());
        };
        let mut reports = Vec::new();
        let stopped = async {
            let _ = stop_rx.await;
        };
        let serve = serve_until(listener, upstream, options, stopped, |event| {
            if let ProxyEvent::Closed(report) = event {
                reports.push(report);
            }
        });
        let (summary, ()) = tokio::join!(serve, connect);
        reports.sort_by_key(|r| r.id);
        (summary, reports)
    }

    /// A loopback address nothing listens on (a port just bound and released).
    async fn refusing_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    /// Reads from `stream` until one of `wants` has arrived (or 10 s pass); returns all read.
    async fn read_until_any(stream: &mut TcpStream, wants: &[&[u8]]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            while !wants
                .iter()
                .any(|want| got.windows(want.len()).any(|w| w == *want))
            {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        got
    }

    async fn read_until(stream: &mut TcpStream, want: &[u8]) -> Vec<u8> {
        read_until_any(stream, &[want]).await
    }

    /// Over real sockets: a message ended by a bare-LF `.` line takes the proxy out of body
    /// mode, so the STARTTLS command after it reaches the server masked (a proxy stuck in
    /// body mode would pass it, and everything after it, unchanged).
    #[tokio::test]
    async fn a_bare_lf_end_of_data_is_followed() {
        // How the client ends the message (the standard ending last, as a control).
        let cases: [&[u8]; 3] = [
            b"Subject: x\n\nbody\n.\n",
            b"Subject: x\r\n\r\nbody\r\n.\n",
            b"Subject: x\r\n\r\nbody\r\n.\r\n",
        ];
        for body in cases {
            let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let upstream_addr = upstream.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut stream, _) = upstream.accept().await.unwrap();
                stream.write_all(b"220 upstream ESMTP\r\n").await.unwrap();
                read_until(&mut stream, b"DATA\r\n").await;
                stream.write_all(b"354 go ahead\r\n").await.unwrap();
                let got = read_until_any(&mut stream, &[b"XXXXXXXA\r\n", b"STARTTLS\r\n"]).await;
                stream.write_all(b"221 bye\r\n").await.unwrap();
                got
            });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let proxy = tokio::spawn(async move {
                let (client, client_addr) = listener.accept().await.unwrap();
                let (_stop_tx, stop_rx) = watch::channel(false);
                relay(
                    client,
                    client_addr,
                    upstream_addr,
                    ProxyOptions::default(),
                    1,
                    stop_rx,
                )
                .await
            });
            let mut client = TcpStream::connect(addr).await.unwrap();
            read_until(&mut client, b"\r\n").await;
            client.write_all(b"DATA\r\n").await.unwrap();
            read_until(&mut client, b"354").await;
            client.write_all(body).await.unwrap();
            client.write_all(b"STARTTLS\r\n").await.unwrap();
            read_until(&mut client, b"221").await;
            drop(client);
            let after_body = server.await.unwrap();
            let report = proxy.await.unwrap();
            // The body unchanged, then the command masked.
            assert_eq!(
                String::from_utf8_lossy(&after_body),
                String::from_utf8_lossy(&[body, b"XXXXXXXA\r\n"].concat()),
            );
            assert_eq!(report.rewrites.commands_masked, 1, "{report:?}");
        }
    }

    /// A proxy with 1 s client-gone and server-gone graces relaying one connection to
    /// `upstream_addr`, and that connection's client, with the greeting read.
    async fn relay_one_after_greeting(
        upstream_addr: SocketAddr,
    ) -> (TcpStream, tokio::task::JoinHandle<ConnectionReport>) {
        let options = ProxyOptions {
            client_gone_grace: Duration::from_secs(1),
            server_gone_grace: Duration::from_secs(1),
            ..ProxyOptions::default()
        };
        relay_one_after_greeting_with(upstream_addr, options).await
    }

    /// [`relay_one_after_greeting`] with the proxy's `options`.
    async fn relay_one_after_greeting_with(
        upstream_addr: SocketAddr,
        options: ProxyOptions,
    ) -> (TcpStream, tokio::task::JoinHandle<ConnectionReport>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            let (client, client_addr) = listener.accept().await.unwrap();
            let (_stop_tx, stop_rx) = watch::channel(false);
            relay(client, client_addr, upstream_addr, options, 1, stop_rx).await
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        read_until(&mut client, b"\r\n").await;
        (client, proxy)
    }

    /// Sends `bytes`, shuts down the client's writing half and reads until the proxy closes
    /// the connection (which it must within 30 s).
    async fn send_half_close_and_read(client: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut rest));
        assert!(
            matches!(read.await, Ok(Ok(_))),
            "the proxy kept the connection open"
        );
        rest
    }

    /// A client that sends QUIT and shuts down its writing half still gets the reply, though
    /// the server sends it only once the client's end of file reached it. The server then
    /// keeps its side open and silent: the proxy closes both after the grace, not the idle
    /// timeout, so the client's read ends.
    #[tokio::test]
    async fn a_half_closed_client_gets_the_reply_and_a_silent_server_is_closed_after_it() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            stream.write_all(b"220 upstream ESMTP\r\n").await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            stream.write_all(b"221 bye\r\n").await.unwrap();
            // The stream is returned, so the server's side stays open.
            (got, stream)
        });
        let (mut client, proxy) = relay_one_after_greeting(upstream_addr).await;
        let rest = send_half_close_and_read(&mut client, b"QUIT\r\n").await;
        assert_eq!(rest, b"221 bye\r\n");
        let report = proxy.await.unwrap();
        assert_eq!(
            report.end,
            ConnectionEnd::ClientGone {
                grace: Duration::from_secs(1)
            }
        );
        assert_eq!(
            (report.bytes_from_client, report.bytes_from_server),
            (6, 29)
        );
        let (got, _open) = server.await.unwrap();
        assert_eq!(got, b"QUIT\r\n");
    }

    /// A pipelining client sends its last commands and half-closes; the server (a content
    /// filter, a tarpit) answers them only after longer than the grace, then stays open. The
    /// grace starts when the replies are all in: the client gets them, then the proxy
    /// closes both.
    #[tokio::test]
    async fn a_slow_reply_after_the_clients_half_close_is_not_cut() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            stream.write_all(b"220 upstream ESMTP\r\n").await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            // Answering takes three times the grace.
            tokio::time::sleep(Duration::from_secs(3)).await;
            stream.write_all(b"250 ok\r\n221 bye\r\n").await.unwrap();
            (got, stream)
        });
        let (mut client, proxy) = relay_one_after_greeting(upstream_addr).await;
        let rest = send_half_close_and_read(&mut client, b"NOOP\r\nQUIT\r\n").await;
        let report = proxy.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "250 ok\r\n221 bye\r\n",
            "{:?}",
            report.end
        );
        assert_eq!(
            report.end,
            ConnectionEnd::ClientGone {
                grace: Duration::from_secs(1)
            }
        );
        let (got, _open) = server.await.unwrap();
        assert_eq!(got, b"NOOP\r\nQUIT\r\n");
    }

    /// A command line too long for the rewriter to inspect still gets its reply: after the
    /// client's half-close, a server that answers the other commands at once and that line
    /// only after longer than the grace is not cut.
    #[tokio::test]
    async fn a_slow_reply_to_an_overlong_line_is_not_cut() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            stream.write_all(b"220 upstream ESMTP\r\n").await.unwrap();
            read_until(&mut stream, b"NOOP\r\n").await;
            stream.write_all(b"250 ok\r\n").await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            stream.write_all(b"500 line too long\r\n").await.unwrap();
            stream
        });
        let (mut client, proxy) = relay_one_after_greeting(upstream_addr).await;
        let mut long = b"NOOP\r\nX".to_vec();
        long.extend(std::iter::repeat_n(
            b'X',
            2 * sigillo_smtp::asa::DEFAULT_MAX_LINE,
        ));
        long.extend_from_slice(b"\r\n");
        let rest = send_half_close_and_read(&mut client, &long).await;
        let report = proxy.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "250 ok\r\n500 line too long\r\n",
            "{:?}",
            report.end
        );
        assert_eq!(report.rewrites.overlong_command_lines, 1, "{report:?}");
        drop(server.await.unwrap());
    }

    /// The server answers QUIT and closes; the client reads the reply and the end of file
    /// (the close passed on as a half-close) but keeps its side open and silent. The proxy
    /// closes both after the grace, not the 300 s idle timeout.
    #[tokio::test]
    async fn a_lingering_client_is_closed_after_the_server_left() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            stream.write_all(b"220 upstream ESMTP\r\n").await.unwrap();
            let got = read_until(&mut stream, b"QUIT\r\n").await;
            stream.write_all(b"221 bye\r\n").await.unwrap();
            got
        });
        let (mut client, proxy) = relay_one_after_greeting(upstream_addr).await;
        client.write_all(b"QUIT\r\n").await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest));
        assert!(
            matches!(read.await, Ok(Ok(_))),
            "the server's close was not passed on"
        );
        assert_eq!(rest, b"221 bye\r\n");
        assert_eq!(server.await.unwrap(), b"QUIT\r\n");
        // The client's side stays open (`client` lives on) and silent.
        let report = tokio::time::timeout(Duration::from_secs(10), proxy)
            .await
            .expect("the proxy waited for the idle timeout")
            .unwrap();
        assert_eq!(
            report.end,
            ConnectionEnd::ServerGone {
                grace: Duration::from_secs(1)
            }
        );
        assert!(report.duration < Duration::from_secs(5), "{report:?}");
        assert_eq!(
            (report.bytes_from_client, report.bytes_from_server),
            (6, 29)
        );
        drop(client);
    }

    /// The server answers `DATA` with 354 and half-closes, then reads nothing for three times
    /// the grace before it reads all. The client's message (far more than the sockets'
    /// buffers hold) is stuck behind it meanwhile: the client is not silent, its bytes are on
    /// their way, so the proxy does not close the connection after the grace, and every byte
    /// reaches the server.
    #[tokio::test]
    async fn a_message_stuck_behind_a_half_closed_server_is_not_cut() {
        const BODY_LINES: usize = 256 * 1024;
        let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abc\r\n";
        let mut body = Vec::with_capacity(BODY_LINES * line.len() + 3);
        for _ in 0..BODY_LINES {
            body.extend_from_slice(line);
        }
        body.extend_from_slice(b".\r\n");

        // Small buffers where the test makes the sockets, so the message cannot all sit in
        // them: only the proxy's socket to the server keeps the system's (at most 4 MiB here).
        let upstream = tokio::net::TcpSocket::new_v4().unwrap();
        upstream.set_recv_buffer_size(64 * 1024).unwrap();
        upstream.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let upstream = upstream.listen(1).unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            stream.write_all(b"220 upstream ESMTP\r\n").await.unwrap();
            read_until(&mut stream, b"DATA\r\n").await;
            stream.write_all(b"354 go ahead\r\n").await.unwrap();
            stream.shutdown().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut got = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut got)).await;
            got.len() as u64
        });
        let listener = tokio::net::TcpSocket::new_v4().unwrap();
        listener.set_recv_buffer_size(64 * 1024).unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listener.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ProxyOptions {
            client_gone_grace: Duration::from_secs(1),
            server_gone_grace: Duration::from_secs(1),
            ..ProxyOptions::default()
        };
        let proxy = tokio::spawn(async move {
            let (client, client_addr) = listener.accept().await.unwrap();
            let (_stop_tx, stop_rx) = watch::channel(false);
            relay(client, client_addr, upstream_addr, options, 1, stop_rx).await
        });
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_send_buffer_size(64 * 1024).unwrap();
        let mut client = client.connect(addr).await.unwrap();
        read_until(&mut client, b"\r\n").await;
        client.write_all(b"DATA\r\n").await.unwrap();
        let mut replies = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut replies));
        assert!(
            matches!(read.await, Ok(Ok(_))),
            "the server's close was not passed on"
        );
        assert_eq!(replies, b"354 go ahead\r\n");
        let written = tokio::time::timeout(Duration::from_secs(60), async {
            client.write_all(&body).await?;
            client.shutdown().await
        })
        .await;
        let report = proxy.await.unwrap();
        assert_eq!(
            report.end,
            ConnectionEnd::Closed {
                first: Side::Server
            }
        );
        assert!(matches!(written, Ok(Ok(()))), "{written:?}");
        // The server read `DATA\r\n` before it half-closed, then the whole message.
        assert_eq!(server.await.unwrap(), body.len() as u64);
        assert_eq!(report.bytes_from_client, 6 + body.len() as u64);
    }

    /// As above, but the half-closed server never reads: the client's bytes wait for good,
    /// and the idle timeout (not a grace, and not never) ends the connection, counted from the
    /// last byte the server's socket took.
    #[tokio::test]
    async fn a_message_stuck_behind_a_server_that_never_reads_ends_at_the_idle_timeout() {
        let body = vec![b'x'; 16 * 1024 * 1024];
        let upstream = tokio::net::TcpSocket::new_v4().unwrap();
        upstream.set_recv_buffer_size(64 * 1024).unwrap();
        upstream.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let upstream = upstream.listen(1).unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            stream.write_all(b"220 upstream ESMTP\r\n").await.unwrap();
            read_until(&mut stream, b"DATA\r\n").await;
            stream.write_all(b"354 go ahead\r\n").await.unwrap();
            stream.shutdown().await.unwrap();
            // Holds the connection open, reading nothing, until the test is done.
            let _ = tokio::time::timeout(Duration::from_secs(60), release_rx).await;
        });
        let options = ProxyOptions {
            idle_timeout: Duration::from_secs(3),
            client_gone_grace: Duration::from_secs(1),
            server_gone_grace: Duration::from_secs(1),
            ..ProxyOptions::default()
        };
        let (mut client, proxy) = relay_one_after_greeting_with(upstream_addr, options).await;
        client.write_all(b"DATA\r\n").await.unwrap();
        let mut replies = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut replies));
        assert!(
            matches!(read.await, Ok(Ok(_))),
            "the server's close was not passed on"
        );
        let (mut _client_read, mut client_write) = client.into_split();
        let writer = tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(30), client_write.write_all(&body)).await;
        });
        let report = tokio::time::timeout(Duration::from_secs(20), proxy)
            .await
            .expect("the connection did not end")
            .unwrap();
        // The end says which rule ended it (the grace would be ServerGone); no clock is
        // asserted.
        assert_eq!(report.end, ConnectionEnd::IdleTimeout);
        let _ = release_tx.send(());
        server.await.unwrap();
        writer.abort();
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_not_counted_as_relayed() {
        let upstream = refusing_addr().await;
        let (summary, reports) = run_clients(upstream, 2).await;
        assert_eq!(
            summary,
            ServeSummary {
                relayed: 0,
                upstream_unreachable: 2,
                refused: 0,
            }
        );
        assert_eq!(reports.len(), 2, "{reports:?}");
        for (report, id) in reports.iter().zip(1..) {
            assert_eq!(report.id, id);
            assert!(
                matches!(report.end, ConnectionEnd::UpstreamUnreachable { .. }),
                "{report:?}"
            );
            assert_eq!(report.bytes_from_server, 0);
        }
    }

    #[tokio::test]
    async fn relayed_and_unreachable_are_counted_apart() {
        // The upstream takes one connection, closes it and goes away: the second client's
        // upstream connect is refused.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            drop(upstream);
            stream.write_all(b"220 upstream\r\n").await.unwrap();
        });
        let (summary, reports) = run_clients(addr, 2).await;
        server.await.unwrap();
        assert_eq!(
            summary,
            ServeSummary {
                relayed: 1,
                upstream_unreachable: 1,
                refused: 0,
            }
        );
        let ends: Vec<(u64, bool)> = reports
            .iter()
            .map(|r| {
                let unreachable = matches!(r.end, ConnectionEnd::UpstreamUnreachable { .. });
                (r.id, unreachable)
            })
            .collect();
        assert_eq!(ends, [(1, false), (2, true)]);
        assert_eq!(reports[0].bytes_from_server, 14);
    }
}
