//! A TCP proxy that rewrites SMTP like a Cisco PIX/ASA with `inspect esmtp` (masked banner,
//! STARTTLS masked as `XXXXXXXA` both ways), to see what an MTA or a check does when
//! STARTTLS is stripped. The rewriting is [`sigillo_smtp::asa`]; this is only the sockets.
//!
//! Every connection is bounded: the upstream connect has a timeout, a connection with no
//! byte in either direction for [`ProxyOptions::idle_timeout`] is closed, and at most
//! [`ProxyOptions::max_connections`] are relayed at once (more are accepted and closed at
//! once). [`serve_until`] stops on a shutdown signal and reports every connection as it ends.

use sigillo_smtp::asa::AsaRewriter;
pub use sigillo_smtp::asa::{AsaConfig, AsaStats, DEFAULT_MAX_LINE};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Limits and rewriting policy of a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    /// What to rewrite (the ASA's defaults: mask the banner, strip STARTTLS).
    pub asa: AsaConfig,
    /// How long a connection to the upstream may take.
    pub connect_timeout: Duration,
    /// A connection with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections relayed at once; more are accepted and closed at once.
    pub max_connections: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            asa: AsaConfig::default(),
            connect_timeout: Duration::from_secs(10),
            // Postfix and Exim wait 300 s for a command or reply by default.
            idle_timeout: Duration::from_secs(300),
            max_connections: 256,
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
    /// `accept` failed (e.g. out of file descriptors); the loop pauses briefly and goes on.
    AcceptFailed { message: String },
}

/// Counts over a whole run of [`serve_until`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Connections relayed (whatever their end).
    pub relayed: u64,
    /// Connections refused because of `max_connections`.
    pub refused: u64,
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
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = relays.join_next(), if !relays.is_empty() => {
                if let Ok(report) = done {
                    on_event(ProxyEvent::Closed(report));
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, client_addr)) => {
                    if relays.len() >= options.max_connections {
                        summary.refused += 1;
                        drop(client);
                        on_event(ProxyEvent::Refused {
                            client: client_addr,
                            open: relays.len(),
                        });
                        continue;
                    }
                    summary.relayed += 1;
                    let id = summary.relayed;
                    let stop = stop_rx.clone();
                    relays.spawn(async move {
                        relay(client, client_addr, upstream, options, id, stop).await
                    });
                }
                Err(e) => {
                    on_event(ProxyEvent::AcceptFailed { message: e.to_string() });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while let Some(done) = relays.join_next().await {
        if let Ok(report) = done {
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
    let end = match tokio::time::timeout(options.connect_timeout, TcpStream::connect(upstream))
        .await
    {
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
                () = idle(&traffic, started, options.idle_timeout) => ConnectionEnd::IdleTimeout,
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
    from_client: AtomicU64,
    from_server: AtomicU64,
    /// Milliseconds from the connection's start to the last byte read in either direction.
    last_activity_ms: AtomicU64,
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

    fn closed(&self, side: Side) {
        let code = match side {
            Side::Client => 1,
            Side::Server => 2,
        };
        let _ = self
            .first_closed
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
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

/// Completes once no byte has moved for `limit`.
async fn idle(traffic: &Traffic, started: Instant, limit: Duration) {
    loop {
        let last = Duration::from_millis(traffic.last_activity_ms.load(Ordering::Relaxed));
        let deadline = started + last + limit;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Copies `from` → `to` through the rewriter until `from` closes, then forwards any
/// unfinished line unchanged and half-closes `to`.
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
            if !rest.is_empty() {
                to.write_all(&rest).await.map_err(|e| (other, e))?;
            }
            // The other side may already be gone: a failed half-close is not an error.
            let _ = to.shutdown().await;
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
        if !out.is_empty() {
            to.write_all(&out).await.map_err(|e| (other, e))?;
        }
    }
}

fn lock(rewriter: &Mutex<AsaRewriter>) -> std::sync::MutexGuard<'_, AsaRewriter> {
    rewriter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
