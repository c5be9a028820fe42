//! Misbehaving fake SMTP servers on 127.0.0.1: a tarpit that accepts and never speaks
//! ([`SilentServer`]), and a server that writes exactly the bytes it is given ([`ScriptedServer`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// Accept loop on 127.0.0.1:free port; every accepted connection goes to `handler` on its own
/// thread. Dropping it stops accepting and shuts every connection down.
pub(crate) struct ServerCore {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    count: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCore")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A connection handed to a handler, with the server's stop flag.
pub(crate) struct Conn {
    pub stream: TcpStream,
    pub stop: Arc<AtomicBool>,
    /// Streams shut down when the server stops; add any extra ones (e.g. a proxy's upstream).
    pub conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl ServerCore {
    pub fn start<F>(name: &str, handler: F) -> Result<Self>
    where
        F: Fn(Conn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .with_context(|| format!("{name}: binding 127.0.0.1:0"))?;
        Self::start_on(name, listener, handler)
    }

    /// Like [`ServerCore::start`] on an already bound listener.
    pub fn start_on<F>(name: &str, listener: TcpListener, handler: F) -> Result<Self>
    where
        F: Fn(Conn) + Send + Sync + 'static,
    {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let accept = {
            let (stop, conns, count) = (stop.clone(), conns.clone(), count.clone());
            std::thread::Builder::new()
                .name(format!("{name}-accept"))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        if let Ok(clone) = stream.try_clone() {
                            conns.lock().unwrap_or_else(|e| e.into_inner()).push(clone);
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        let handler = handler.clone();
                        let conn = Conn {
                            stream,
                            stop: stop.clone(),
                            conns: conns.clone(),
                        };
                        let _ = std::thread::Builder::new()
                            .name("testkit-conn".into())
                            .spawn(move || handler(conn));
                    }
                })
                .context("spawning the accept thread")?
        };
        Ok(Self {
            addr,
            stop,
            conns,
            count,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for ServerCore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Conn {
    /// Register another stream to shut down when the server stops (e.g. a proxy's upstream).
    pub fn track(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            self.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(clone);
        }
    }
}

/// Read and discard input until EOF, an error, or the server stops.
fn drain_until_stop(conn: &mut Conn) {
    let _ = conn
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while !conn.stop.load(Ordering::SeqCst) {
        match conn.stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A tarpit: accepts TCP connections on 127.0.0.1 and never writes a byte (reads and discards
/// whatever the client sends). For "server stalls → inconclusive within the timeout" tests.
#[derive(Debug)]
pub struct SilentServer {
    core: ServerCore,
}

impl SilentServer {
    /// Start on a free port.
    pub fn start() -> Result<Self> {
        let core = ServerCore::start("silent", |mut conn| drain_until_stop(&mut conn))?;
        Ok(Self { core })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// How many connections it accepted so far.
    pub fn connections(&self) -> usize {
        self.core.connections()
    }
}

/// What a [`ScriptedServer`] does after writing something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Keep reading commands.
    Continue,
    /// Close the connection.
    Close,
    /// Stop answering but keep the connection open (reads are discarded).
    Hold,
}

#[derive(Clone, Debug)]
struct Rule {
    prefix: String,
    reply: Vec<u8>,
    then: Then,
    /// Pause between the reply's lines (zero: the reply in one write).
    pace: Duration,
}

/// What a [`ScriptedServer`] says. Raw bytes are written as given (no CRLF added), so a script
/// can send malformed replies, lines without CRLF, or binary junk.
///
/// ```
/// use sigillo_testkit::Script;
/// let script = Script::new("220 mx.test ESMTP\r\n")
///     .reply("EHLO", "250-mx.test\r\n250 STARTTLS\r\n")
///     .reply_then_hold("STARTTLS", "220 go ahead\r\n") // …and never start TLS
///     .reply_then_close("QUIT", "221 bye\r\n");
/// ```
#[derive(Clone, Debug)]
pub struct Script {
    greeting: Vec<u8>,
    greeting_delay: Duration,
    after_greeting: Then,
    rules: Vec<Rule>,
    unknown: Vec<u8>,
    max_line: usize,
}

impl Script {
    /// Write `greeting` on connect (may be empty, or malformed), then answer commands.
    pub fn new(greeting: impl Into<Vec<u8>>) -> Self {
        Self {
            greeting: greeting.into(),
            greeting_delay: Duration::ZERO,
            after_greeting: Then::Continue,
            rules: Vec::new(),
            unknown: b"502 5.5.2 command not recognised by script\r\n".to_vec(),
            max_line: 64 * 1024,
        }
    }

    /// Wait this long after accepting before writing the greeting.
    pub fn greeting_delay(mut self, delay: Duration) -> Self {
        self.greeting_delay = delay;
        self
    }

    /// After the greeting, close at once.
    pub fn close_after_greeting(mut self) -> Self {
        self.after_greeting = Then::Close;
        self
    }

    /// After the greeting, go silent but keep the connection open (e.g. a greeting line with
    /// no CRLF that never ends).
    pub fn hold_after_greeting(mut self) -> Self {
        self.after_greeting = Then::Hold;
        self
    }

    /// Answer a command line starting with `prefix` (ASCII case-insensitive) with `reply`.
    /// Rules are tried in order; the first match wins.
    pub fn reply(self, prefix: &str, reply: impl Into<Vec<u8>>) -> Self {
        self.rule(prefix, reply, Then::Continue)
    }

    /// Like [`Script::reply`], then close the connection.
    pub fn reply_then_close(self, prefix: &str, reply: impl Into<Vec<u8>>) -> Self {
        self.rule(prefix, reply, Then::Close)
    }

    /// Like [`Script::reply`], then hold the connection open without answering.
    pub fn reply_then_hold(self, prefix: &str, reply: impl Into<Vec<u8>>) -> Self {
        self.rule(prefix, reply, Then::Hold)
    }

    /// Like [`Script::reply`], but write the reply a line at a time with `pace` between lines
    /// (a server that trickles a multi-line reply, each line well within any per-reply
    /// limit, the whole reply slowly).
    pub fn reply_trickled(
        mut self,
        prefix: &str,
        reply: impl Into<Vec<u8>>,
        pace: Duration,
    ) -> Self {
        self = self.rule(prefix, reply, Then::Continue);
        if let Some(rule) = self.rules.last_mut() {
            rule.pace = pace;
        }
        self
    }

    /// The reply to commands no rule matches (default `502 …`).
    pub fn unknown(mut self, reply: impl Into<Vec<u8>>) -> Self {
        self.unknown = reply.into();
        self
    }

    fn rule(mut self, prefix: &str, reply: impl Into<Vec<u8>>, then: Then) -> Self {
        self.rules.push(Rule {
            prefix: prefix.to_string(),
            reply: reply.into(),
            then,
            pace: Duration::ZERO,
        });
        self
    }
}

/// A fake server on 127.0.0.1:free port that plays a [`Script`] on every connection, and
/// records the command lines it received.
#[derive(Debug)]
pub struct ScriptedServer {
    core: ServerCore,
    received: Arc<Mutex<Vec<String>>>,
}

impl ScriptedServer {
    /// Start on a free port.
    pub fn start(script: Script) -> Result<Self> {
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let rec = received.clone();
        let core = ServerCore::start("scripted", move |mut conn| {
            let _ = play(&script, &mut conn, &rec);
        })?;
        Ok(Self { core, received })
    }

    /// Start on a given loopback address and port (e.g. `[::1]` with the port another
    /// server uses on 127.0.0.1, to give one host name different servers per family).
    pub fn start_at(addr: SocketAddr, script: Script) -> Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("scripted: binding {addr}"))?;
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let rec = received.clone();
        let core = ServerCore::start_on("scripted", listener, move |mut conn| {
            let _ = play(&script, &mut conn, &rec);
        })?;
        Ok(Self { core, received })
    }

    /// A server that writes `bytes` on connect and then holds the connection open silently.
    pub fn greeting_then_hold(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        Self::start(Script::new(bytes).hold_after_greeting())
    }

    /// Its port (on 127.0.0.1 unless started with [`ScriptedServer::start_at`]).
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// The address it listens on (`127.0.0.1:port` unless started with `start_at`).
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// How many connections it accepted so far.
    pub fn connections(&self) -> usize {
        self.core.connections()
    }

    /// The command lines received so far, over all connections (without line endings).
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn play(script: &Script, conn: &mut Conn, received: &Mutex<Vec<String>>) -> std::io::Result<()> {
    if !script.greeting_delay.is_zero() {
        std::thread::sleep(script.greeting_delay);
    }
    conn.stream.write_all(&script.greeting)?;
    match script.after_greeting {
        Then::Close => return conn.stream.shutdown(std::net::Shutdown::Both),
        Then::Hold => {
            drain_until_stop(conn);
            return Ok(());
        }
        Then::Continue => {}
    }
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    while !conn.stop.load(Ordering::SeqCst) {
        let n = match conn.stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        for &b in &buf[..n] {
            line.push(b);
            if b != b'\n' && line.len() < script.max_line {
                continue;
            }
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            line.clear();
            received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(text.clone());
            let rule = script.rules.iter().find(|r| {
                text.len() >= r.prefix.len()
                    && text.as_bytes()[..r.prefix.len()].eq_ignore_ascii_case(r.prefix.as_bytes())
            });
            let (reply, then, pace) = match rule {
                Some(r) => (&r.reply, r.then, r.pace),
                None => (&script.unknown, Then::Continue, Duration::ZERO),
            };
            if pace.is_zero() {
                conn.stream.write_all(reply)?;
            } else {
                for (n, line) in reply.split_inclusive(|&b| b == b'\n').enumerate() {
                    if n > 0 {
                        std::thread::sleep(pace);
                    }
                    if conn.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    conn.stream.write_all(line)?;
                }
            }
            match then {
                Then::Continue => {}
                Then::Close => return conn.stream.shutdown(std::net::Shutdown::Both),
                Then::Hold => {
                    drain_until_stop(conn);
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
