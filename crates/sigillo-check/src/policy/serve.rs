//! The socketmap server: Postfix connects over TCP or a unix socket, sends netstring
//! requests (possibly pipelined, on connections it keeps open), and gets the engine's answers
//! back in order.
//!
//! Limits: at most [`ServeOptions::max_connections`] connections are served at once (one more
//! is accepted and waits for a slot, the rest wait in the listen backlog), at most
//! [`ServeOptions::max_in_flight`] requests of one connection are being answered at once
//! (reading pauses until one is answered), a request must arrive whole within
//! [`ServeOptions::read_timeout`] of its first byte, a connection with nothing to do for
//! [`ServeOptions::idle_timeout`] is closed, and a lookup that takes longer than
//! [`ServeOptions::lookup_timeout`] is answered `TEMP` (it goes on in the background and its
//! result is cached). Broken framing closes the connection, as `socketmap_table(5)` expects.
//!
//! Idle connections do not lock other clients out: when every connection slot is taken and
//! another client connects, the server accepts it, then closes every connection that has been
//! idle (no request being answered, no partial request read) for at least [`EVICT_IDLE_AFTER`],
//! and asks again each [`EVICT_IDLE_AFTER`] until a slot is free for it. Postfix's socketmap
//! client (`dict_sockmap`, through `auto_clnt`) reconnects by itself when it finds the server
//! has closed the connection (end of file) and sends the lookup again, so this costs it a
//! reconnect, not a failed lookup. The same happens when `accept` fails for want of a file
//! descriptor (the process's limit is below [`ServeOptions::max_connections`]).
//!
//! On shutdown, [`serve_until`] stops accepting, lets every connection answer the requests it
//! has read, closes them (waiting at most [`ServeOptions::shutdown_grace`]), and returns.
//!
//! Threads: the listener and every connection are served on one thread of their own, a
//! `current_thread` runtime. Reading, decoding, hot-cache answers and writing never cross
//! threads, which is what a cache hit costs. Lookups that miss the hot cache, and the
//! refreshes that hits start, are spawned on the runtime [`serve_until`] is called in. That
//! runtime is multi-threaded in the daemon, so the DNSSEC and TLS work still uses every core.
//! The shutdown future and the event callback also stay on the caller's runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use sigillo_policy::socketmap::{
    MAX_REQUEST_LEN, Reply, SocketmapError, decode_request, sanitize_text,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::engine::{PolicyEngine, PolicySources};
use crate::accept_log::{AcceptLog, AcceptReport};

/// Where to listen: `127.0.0.1:8461`, `[::1]:8461`, or `unix:/path/to/socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

/// A listen address that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listen address: expected IP:PORT, [IPv6]:PORT or unix:/path, got {got:?}")]
pub struct ListenAddrError {
    /// The text given.
    pub got: String,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ListenAddrError { got: text.into() });
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| ListenAddrError { got: text.into() })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum PolicyListener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket, removed again when the listener is dropped.
    Unix(UnixListener, SocketFile),
}

/// The path of a bound unix socket; the socket file is removed when this is dropped.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = remove_stale_socket(&self.0);
    }
}

impl PolicyListener {
    /// Binds `addr`. For a unix socket, a stale socket file at the path is replaced (one
    /// that a server still answers on, or any other kind of file, is an error) and the
    /// socket gets permissions `mode`.
    pub async fn bind(addr: &ListenAddr, mode: u32) -> std::io::Result<Self> {
        match addr {
            ListenAddr::Tcp(addr) => Ok(PolicyListener::Tcp(TcpListener::bind(addr).await?)),
            ListenAddr::Unix(path) => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("{} is in use by a running server", path.display()),
                    ));
                }
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Ok(PolicyListener::Unix(listener, SocketFile(path.clone())))
            }
        }
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<ListenAddr> {
        match self {
            PolicyListener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            PolicyListener::Unix(_, file) => Ok(ListenAddr::Unix(file.0.clone())),
        }
    }

    async fn accept(&self) -> std::io::Result<(Connection, String)> {
        match self {
            PolicyListener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Connection::Tcp(stream), peer.to_string()))
            }
            PolicyListener::Unix(l, file) => {
                let (stream, _) = l.accept().await?;
                Ok((
                    Connection::Unix(stream),
                    format!("unix:{}", file.0.display()),
                ))
            }
        }
    }

    /// The same socket, registered with the runtime this is called in instead of the one
    /// it was bound in.
    fn move_to_this_runtime(self) -> std::io::Result<Self> {
        match self {
            PolicyListener::Tcp(l) => {
                Ok(PolicyListener::Tcp(TcpListener::from_std(l.into_std()?)?))
            }
            PolicyListener::Unix(l, file) => Ok(PolicyListener::Unix(
                UnixListener::from_std(l.into_std()?)?,
                file,
            )),
        }
    }
}

/// Removes `path` if it is a socket; fails if it is anything else.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

enum Connection {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Limits of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Answer only this map name (`socketmap:…:NAME`); others get `PERM`. `None`: any.
    pub map_name: Option<String>,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most requests of one connection being answered at once.
    pub max_in_flight: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A started request must arrive whole (counted from its first byte), and a reply be
    /// written, within this.
    pub read_timeout: Duration,
    /// A lookup taking longer is answered `TEMP`.
    pub lookup_timeout: Duration,
    /// On shutdown, connections get this long to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            map_name: None,
            max_connections: 512,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(10),
            lookup_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEnd {
    /// The client closed it (after every request read was answered).
    ClientClosed,
    /// No request for the idle timeout.
    IdleTimeout,
    /// A request started but did not arrive whole in time, or a reply could not be written
    /// in time.
    Timeout,
    /// The bytes were not socketmap netstrings.
    Protocol(SocketmapError),
    /// Reading or writing failed.
    Io(String),
    /// The server is shutting down.
    Shutdown,
    /// Idle while every connection slot was taken and another client waited for one: closed
    /// to make room (see the module docs).
    IdleEvicted,
}

/// What the server reports as it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeEvent {
    /// A connection ended.
    Closed {
        /// Sequence number since start, from 1.
        id: u64,
        /// The client (`IP:port`, or the unix socket path).
        peer: String,
        /// Requests answered on it.
        requests: u64,
        /// Why it ended.
        end: ConnectionEnd,
    },
    /// `accept` failed (e.g. out of file descriptors; the loop pauses briefly and tries
    /// again), is still failing, or works again: rate-limited by [`AcceptLog`].
    Accept(AcceptReport),
}

/// Counts over a run of [`serve_until`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Connections accepted.
    pub connections: u64,
    /// Requests answered.
    pub requests: u64,
}

/// Serves `listener` until `shutdown` completes (see the module docs).
///
/// The connections are served on a thread of their own (a `current_thread` runtime), and
/// lookups that miss the hot cache are spawned on the runtime this is called in; `shutdown`
/// and `on_event` stay here. If that thread cannot be started, everything is served on the
/// runtime this is called in.
pub async fn serve_until<S: PolicySources>(
    listener: PolicyListener,
    engine: Arc<PolicyEngine<S>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(ServeEvent),
) -> ServeSummary {
    let lookups = Handle::current();
    let connection_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(connection_runtime) = connection_runtime else {
        return serve_here(listener, engine, options, shutdown, on_event, lookups).await;
    };
    // The work goes to the thread once it runs, so that it is still here if it cannot start.
    let (job_tx, job_rx) = std::sync::mpsc::channel::<ServeJob<S>>();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread_lookups = lookups.clone();
    let thread = std::thread::Builder::new()
        .name("policy-serve".into())
        .spawn(move || {
            let Ok(job) = job_rx.recv() else { return };
            let summary = connection_runtime.block_on(async move {
                let on_event = |event| {
                    let _ = event_tx.send(event);
                };
                let stopped = async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                };
                match job.listener.move_to_this_runtime() {
                    Ok(listener) => {
                        let (engine, options) = (job.engine, job.options);
                        serve_here(listener, engine, options, stopped, on_event, thread_lookups)
                            .await
                    }
                    Err(e) => {
                        on_event(ServeEvent::Accept(AcceptReport::Failed {
                            message: format!("cannot serve the listener on its thread: {e}"),
                        }));
                        ServeSummary::default()
                    }
                }
            });
            let _ = done_tx.send(summary);
        });
    if thread.is_err() {
        return serve_here(listener, engine, options, shutdown, on_event, lookups).await;
    }
    let _ = job_tx.send(ServeJob {
        listener,
        engine,
        options,
    });
    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
            }
            event = event_rx.recv() => match event {
                Some(event) => on_event(event),
                None => break,
            },
        }
    }
    done_rx.await.unwrap_or_default()
}

/// What [`serve_until`] hands to the connections' thread.
struct ServeJob<S> {
    listener: PolicyListener,
    engine: Arc<PolicyEngine<S>>,
    options: ServeOptions,
}

/// [`serve_until`] on the runtime this is called in, lookups that miss the hot cache spawned
/// on `lookups`.
async fn serve_here<S: PolicySources>(
    listener: PolicyListener,
    engine: Arc<PolicyEngine<S>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(ServeEvent),
    lookups: Handle,
) -> ServeSummary {
    let options = Arc::new(options);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (control_tx, control_rx) = watch::channel(Control::default());
    let mut connections: JoinSet<ServeEvent> = JoinSet::new();
    let mut summary = ServeSummary::default();
    let mut accept_log = AcceptLog::default();
    let mut record = |event: ServeEvent, summary: &mut ServeSummary| {
        if let ServeEvent::Closed { requests, .. } = &event {
            summary.requests += requests;
        }
        on_event(event);
    };
    tokio::pin!(shutdown);
    loop {
        let accept_tick = accept_log.next_tick();
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(event) = done {
                    record(event, &mut summary);
                }
            }
            () = crate::accept_log::timer(accept_tick) => {
                if let Some(report) = accept_log.tick(std::time::Instant::now()) {
                    record(ServeEvent::Accept(report), &mut summary);
                }
            }
            accepted = listener.accept() => {
                match accepted {
                    Ok((connection, peer)) => {
                        if let Some(report) = accept_log.accepted(std::time::Instant::now()) {
                            record(ServeEvent::Accept(report), &mut summary);
                        }
                        let permit = match permits.clone().try_acquire_owned() {
                            Ok(permit) => permit,
                            Err(_) => {
                                let slot =
                                    wait_for_slot(&permits, &control_tx, shutdown.as_mut()).await;
                                let Some(permit) = slot else { break };
                                permit
                            }
                        };
                        summary.connections += 1;
                        let id = summary.connections;
                        let context = ConnectionContext {
                            engine: engine.clone(),
                            options: options.clone(),
                            lookups: lookups.clone(),
                        };
                        let control = control_rx.clone();
                        connections.spawn(async move {
                            let (requests, end) = match connection {
                                Connection::Tcp(s) => serve_connection(s, context, control).await,
                                Connection::Unix(s) => serve_connection(s, context, control).await,
                            };
                            drop(permit);
                            ServeEvent::Closed { id, peer, requests, end }
                        });
                    }
                    Err(e) => {
                        if out_of_descriptors(&e) {
                            // The file descriptor limit is below `max_connections`: make
                            // room as when every slot is taken, or idle connections would
                            // lock new clients out until their idle timeout.
                            make_room(&control_tx);
                        }
                        let failed = accept_log.failed(std::time::Instant::now(), e.to_string());
                        for report in failed {
                            record(ServeEvent::Accept(report), &mut summary);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    drop(listener);
    if let Some(report) = accept_log.finish() {
        record(ServeEvent::Accept(report), &mut summary);
    }
    control_tx.send_modify(|control| control.stopping = true);
    let deadline = Instant::now() + options.shutdown_grace;
    loop {
        match tokio::time::timeout_at(deadline, connections.join_next()).await {
            Ok(Some(Ok(event))) => record(event, &mut summary),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                connections.abort_all();
                while let Some(done) = connections.join_next().await {
                    if let Ok(event) = done {
                        record(event, &mut summary);
                    }
                }
                break;
            }
        }
    }
    summary
}

/// How long a connection must have been idle to be closed for a client that waits for a
/// connection slot (see the module docs).
pub const EVICT_IDLE_AFTER: Duration = Duration::from_secs(1);

/// What the accept loop tells every connection, through one `watch` channel.
#[derive(Debug, Clone, Copy, Default)]
struct Control {
    /// The server is stopping: answer what was read, then close.
    stopping: bool,
    /// A client waits for a connection slot: connections idle since this time or earlier
    /// close.
    evict_idle_since: Option<Instant>,
}

/// Waits for a connection slot while every one is taken, asking the connections idle for
/// [`EVICT_IDLE_AFTER`] to close, now and again each [`EVICT_IDLE_AFTER`] (connections busy
/// now may be idle then). `None` if `shutdown` completes first.
async fn wait_for_slot<F: Future<Output = ()>>(
    permits: &Arc<Semaphore>,
    control: &watch::Sender<Control>,
    mut shutdown: Pin<&mut F>,
) -> Option<OwnedSemaphorePermit> {
    let acquire = permits.clone().acquire_owned();
    tokio::pin!(acquire);
    loop {
        make_room(control);
        tokio::select! {
            permit = &mut acquire => return permit.ok(),
            () = &mut shutdown => return None,
            () = tokio::time::sleep(EVICT_IDLE_AFTER) => {}
        }
    }
}

/// Asks every connection idle for [`EVICT_IDLE_AFTER`] to close.
fn make_room(control: &watch::Sender<Control>) {
    if let Some(since) = Instant::now().checked_sub(EVICT_IDLE_AFTER) {
        control.send_modify(|control| control.evict_idle_since = Some(since));
    }
}

/// `accept` failed for want of a file descriptor (`EMFILE`: this process's limit, `ENFILE`:
/// the system's), which closing connections frees.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Waits until the accept loop changes its [`Control`] (or is gone: then `false`), and hands
/// the receiver back for the next wait.
async fn control_changed(
    mut control: watch::Receiver<Control>,
) -> (watch::Receiver<Control>, bool) {
    let open = control.changed().await.is_ok();
    (control, open)
}

/// Largest amount of unanswered input kept per connection: a few maximal requests.
const MAX_INPUT: usize = 4 * (MAX_REQUEST_LEN + 8);

/// What every connection shares.
struct ConnectionContext<S> {
    engine: Arc<PolicyEngine<S>>,
    options: Arc<ServeOptions>,
    /// Where lookups that miss the hot cache run.
    lookups: Handle,
}

/// Serves one connection; returns the requests answered and why it ended.
///
/// Per request this costs a decode, a cache look-up, one `write` and one `read`, and one
/// clock reading: the idle/read timer is one [`Sleep`](tokio::time::Sleep) armed once and
/// moved only when it fires early (the deadline is computed from the last activity then) or
/// when a shorter deadline starts, and the accept loop's signals (stop, make room) come
/// through one future that is renewed only when a signal arrives.
///
/// The idle timeout counts from the last activity (a read, or answers arriving); the read
/// timeout from when the first byte of the partial request now buffered arrived, so a client
/// that trickles a request byte by byte is still cut off.
async fn serve_connection<T, S>(
    mut stream: T,
    context: ConnectionContext<S>,
    mut control: watch::Receiver<Control>,
) -> (u64, ConnectionEnd)
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: PolicySources,
{
    let ConnectionContext {
        engine,
        options,
        lookups,
    } = context;
    let mut input: Vec<u8> = Vec::with_capacity(1024);
    let mut output: Vec<u8> = Vec::with_capacity(1024);
    let mut pending: FuturesOrdered<BoxFuture<'static, Vec<u8>>> = FuturesOrdered::new();
    let mut answered: u64 = 0;
    let mut eof = false;
    let mut stopping = control.borrow_and_update().stopping;
    // Resolves when the accept loop says something (or is gone).
    let signal = control_changed(control);
    tokio::pin!(signal);
    // When something last happened (a read, or answers arriving): the idle timeout counts
    // from it.
    let mut last_activity = Instant::now();
    // When the first byte of the partial request in `input` arrived (`None` when `input` is
    // empty): the read timeout counts from it.
    let mut request_started: Option<Instant> = None;
    let timer = tokio::time::sleep_until(last_activity + options.idle_timeout);
    tokio::pin!(timer);
    loop {
        // Decode every complete request, up to the in-flight limit.
        let mut used = 0;
        let mut protocol_error = None;
        while !stopping && pending.len() < options.max_in_flight {
            match decode_request(&input[used..]) {
                Ok(Some((request, n))) => {
                    used += n;
                    if let Some(expected) = &options.map_name
                        && request.map_name != *expected
                    {
                        let reply = Reply::Perm(sanitize_text(&format!(
                            "unknown map name {:?}: this server answers {expected:?}",
                            request.map_name
                        )));
                        let bytes = reply.to_bytes().unwrap_or_default();
                        if pending.is_empty() {
                            output.extend_from_slice(&bytes);
                            answered += 1;
                        } else {
                            pending.push_back(futures::future::ready(bytes).boxed());
                        }
                    } else if pending.is_empty()
                        && engine.answer_cached_on(&request.key, &mut output, &lookups)
                    {
                        answered += 1;
                    } else {
                        pending.push_back(lookup(
                            engine.clone(),
                            request.key,
                            options.lookup_timeout,
                            &lookups,
                        ));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        if used > 0 {
            input.drain(..used);
            // What is left arrived with the last read at the latest (or before reading
            // paused for answers, which then count as its start).
            request_started = (!input.is_empty()).then_some(last_activity);
        }
        if !output.is_empty() {
            match write_reply(&mut stream, &output, options.read_timeout).await {
                Ok(()) => output.clear(),
                Err(end) => return (answered, end),
            }
        }
        if pending.is_empty() {
            if let Some(e) = protocol_error {
                return (answered, ConnectionEnd::Protocol(e));
            }
            if stopping {
                return (answered, ConnectionEnd::Shutdown);
            }
            if eof {
                return (answered, ConnectionEnd::ClientClosed);
            }
        }
        let can_read = !eof
            && !stopping
            && protocol_error.is_none()
            && pending.len() < options.max_in_flight
            && input.len() < MAX_INPUT;
        let deadline = match (pending.is_empty(), request_started) {
            (true, None) => Some(last_activity + options.idle_timeout),
            (true, Some(started)) => Some(started + options.read_timeout),
            (false, _) => None,
        };
        // The timer may be late (moved on when it fires) but never later than a deadline
        // that starts now and is shorter than the one it was armed for.
        if let Some(deadline) = deadline
            && deadline < timer.deadline()
        {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            (mut control, open) = &mut signal, if !stopping => {
                let said = *control.borrow_and_update();
                if !open || said.stopping {
                    stopping = true;
                } else {
                    let idle = pending.is_empty() && request_started.is_none();
                    if idle && said.evict_idle_since.is_some_and(|since| last_activity <= since) {
                        return (answered, ConnectionEnd::IdleEvicted);
                    }
                    signal.set(control_changed(control));
                }
            }
            Some(reply) = pending.next(), if !pending.is_empty() => {
                output.extend_from_slice(&reply);
                answered += 1;
                // Collect every answer that is ready, so they go out in one write.
                while let Some(Some(reply)) = pending.next().now_or_never() {
                    output.extend_from_slice(&reply);
                    answered += 1;
                }
                last_activity = Instant::now();
            }
            read = read_some(&mut stream, &mut input), if can_read => match read {
                Ok(0) => eof = true,
                Ok(_) => {
                    last_activity = Instant::now();
                    request_started.get_or_insert(last_activity);
                }
                Err(e) => return (answered, ConnectionEnd::Io(e.to_string())),
            },
            () = &mut timer, if deadline.is_some() => {
                let deadline = deadline.unwrap_or_else(Instant::now);
                if Instant::now() < deadline {
                    // Armed for an earlier deadline that activity has since moved on.
                    timer.as_mut().reset(deadline);
                    continue;
                }
                return (
                    answered,
                    if request_started.is_none() {
                        ConnectionEnd::IdleTimeout
                    } else {
                        ConnectionEnd::Timeout
                    },
                );
            }
        }
    }
}

/// Writes `output` whole within `timeout`: first one plain `write` (which takes all of a
/// small reply at once, with no timer), then the rest under the timeout.
async fn write_reply<T: AsyncWrite + Unpin>(
    stream: &mut T,
    output: &[u8],
    timeout: Duration,
) -> Result<(), ConnectionEnd> {
    let written = match stream.write(output).now_or_never() {
        Some(Ok(n)) => n,
        Some(Err(e)) => return Err(ConnectionEnd::Io(e.to_string())),
        None => 0,
    };
    let Some(rest) = output.get(written..).filter(|rest| !rest.is_empty()) else {
        return Ok(());
    };
    match tokio::time::timeout(timeout, stream.write_all(rest)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ConnectionEnd::Io(e.to_string())),
        Err(_) => Err(ConnectionEnd::Timeout),
    }
}

/// Reads what is available into the spare room of `input` (at most [`MAX_INPUT`] in all).
async fn read_some<T: AsyncRead + Unpin>(
    stream: &mut T,
    input: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let room = MAX_INPUT.saturating_sub(input.len()).min(16 * 1024);
    input.reserve(room);
    let mut limited = (&mut *stream).take(room as u64);
    limited.read_buf(input).await
}

/// The encoded reply for a lookup that was not a hot-cache hit, worked out in a task on
/// `runtime`.
fn lookup<S: PolicySources>(
    engine: Arc<PolicyEngine<S>>,
    key: String,
    timeout: Duration,
    runtime: &Handle,
) -> BoxFuture<'static, Vec<u8>> {
    let task = runtime.spawn(lookup_reply(engine, key, timeout));
    async move {
        task.await.unwrap_or_else(|_| {
            let mut out = Vec::new();
            let _ = Reply::Temp("policy lookup failed".into()).encode(&mut out);
            out
        })
    }
    .boxed()
}

/// The encoded reply for `key`, from the cache or after deciding it.
async fn lookup_reply<S: PolicySources>(
    engine: Arc<PolicyEngine<S>>,
    key: String,
    timeout: Duration,
) -> Vec<u8> {
    {
        let mut out = Vec::new();
        // An earlier request in the pipeline may have filled the cache meanwhile.
        if engine.answer_cached(&key, &mut out) {
            return out;
        }
        let reply = match tokio::time::timeout(timeout, engine.decide(&key)).await {
            Ok(decision) => decision.reply(),
            Err(_) => Reply::Temp(sanitize_text(&format!(
                "policy lookup for {key} took more than {} s",
                timeout.as_secs_f64()
            ))),
        };
        if reply.encode(&mut out).is_err() {
            out.clear();
            let _ = Reply::Temp("policy answer cannot be encoded".into()).encode(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let ok = [
            (
                "127.0.0.1:8461",
                ListenAddr::Tcp("127.0.0.1:8461".parse().unwrap()),
            ),
            ("[::1]:0", ListenAddr::Tcp("[::1]:0".parse().unwrap())),
            (
                "unix:/run/sigillo/policy.sock",
                ListenAddr::Unix("/run/sigillo/policy.sock".into()),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(text.parse::<ListenAddr>(), Ok(want.clone()), "{text}");
            assert_eq!(want.to_string(), text);
        }
        for bad in ["unix:", "localhost:8461", "127.0.0.1", "inet:127.0.0.1:1"] {
            assert_eq!(
                bad.parse::<ListenAddr>(),
                Err(ListenAddrError { got: bad.into() })
            );
        }
    }
}
