//! Load generator for socketmap TLS policy daemons (`bench/policy.sh`): opens connections to
//! one daemon, keeps a fixed number of requests in flight on each (pipelined, replies come in
//! order), and prints one JSON line with lookups/s, latency percentiles, the replies by
//! status, and CPU time, its own and that of watched processes, over the same window.
//!
//! One OS thread drives every connection: a plain event loop on mio (one `epoll_wait` for all
//! connections, non-blocking sockets, no tasks). Per round trip a connection costs exactly
//! one `write` and one `read`: a read that does not fill the buffer has emptied the socket,
//! and mio's edge-triggered registration reports the next reply, so no read ends in
//! `WouldBlock`. The generator thus stays cheap next to the daemon it measures (on loopback
//! TCP most of its CPU is the kernel's, sending and receiving); its CPU share is printed to
//! show it.
//!
//! ```text
//! socketmap_load --addr 127.0.0.1:8461 --map sts --connections 16 --in-flight 1 \
//!     --keys 'h{}.bench.test' --count 1000 --order cycle --warmup 2 --duration 10 \
//!     --watch daemon=1234 --stats /run/lab.stats --label hits
//! ```
//!
//! `--addr unix:/path` connects to a unix socket instead (Postfix's `socketmap:unix:`).
//!
//! Keys are `--keys` with `{}` replaced by an index below `--count`, in one of three orders:
//! - `cycle`: every connection walks all keys from its own offset, round and round (cache
//!   hits once warmed up, or NOTFOUND domains);
//! - `unique`: each request takes the next unused index, shared by all connections: every
//!   lookup is a domain never asked before (the run ends early when they run out);
//! - `burst`: every connection walks the same sequence, so each new domain is asked by all
//!   connections at about the same time (a queue of mail for a new domain being flushed).
//!
//! `--stats FILE` (repeatable) names `key=value` counter files (the bench lab's DNS queries,
//! HTTPS connections and requests); their growth over the window is printed too.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write as _};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpStream as MioTcpStream, UnixStream as MioUnixStream};
use mio::{Events, Interest, Poll, Registry, Token};

use sigillo_policy::socketmap::{Reply, decode_reply, encode_request};

/// How a connection picks its next key index.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Cycle,
    Unique,
    Burst,
}

/// Where the daemon listens: loopback TCP, or a unix socket (`--addr unix:/path`), which
/// Postfix reaches as `socketmap:unix:/path:NAME`.
#[derive(Clone, Debug)]
enum Addr {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected socket of either kind, read, written and registered the same way.
enum Stream {
    Tcp(MioTcpStream),
    Unix(MioUnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

#[derive(Clone, Debug)]
struct Options {
    addr: Addr,
    map: String,
    connections: usize,
    in_flight: usize,
    keys: String,
    count: usize,
    order: Order,
    warmup: Duration,
    duration: Duration,
    watch: Vec<(String, u32)>,
    stats: Vec<String>,
    label: String,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "socketmap_load: {why}\nusage: socketmap_load --addr IP:PORT|unix:PATH [--map NAME] \
         [--connections N] [--in-flight K] --keys PATTERN_WITH_{{}} --count N \
         [--order cycle|unique|burst] [--warmup SECS] [--duration SECS] \
         [--watch NAME=PID]... [--stats FILE]... [--label TEXT]"
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        addr: Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8461))),
        map: "sts".into(),
        connections: 16,
        in_flight: 1,
        keys: String::new(),
        count: 0,
        order: Order::Cycle,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(10),
        watch: Vec::new(),
        stats: Vec::new(),
        label: String::new(),
    };
    let secs = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| usage(&format!("bad seconds {v:?}")))
    };
    let number = |v: &str| {
        v.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| usage(&format!("bad number {v:?}")))
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--addr" => {
                o.addr = match value.strip_prefix("unix:") {
                    Some(path) if !path.is_empty() => Addr::Unix(path.into()),
                    _ => Addr::Tcp(
                        value
                            .parse()
                            .unwrap_or_else(|_| usage(&format!("bad --addr {value:?}"))),
                    ),
                }
            }
            "--map" => o.map = value,
            "--connections" => o.connections = number(&value),
            "--in-flight" => o.in_flight = number(&value),
            "--keys" => o.keys = value,
            "--count" => o.count = number(&value),
            "--order" => {
                o.order = match value.as_str() {
                    "cycle" => Order::Cycle,
                    "unique" => Order::Unique,
                    "burst" => Order::Burst,
                    _ => usage(&format!("bad --order {value:?}")),
                }
            }
            "--warmup" => o.warmup = secs(&value),
            "--duration" => o.duration = secs(&value),
            "--watch" => {
                let (name, pid) = value
                    .split_once('=')
                    .and_then(|(n, p)| Some((n.to_owned(), p.parse().ok()?)))
                    .unwrap_or_else(|| usage(&format!("bad --watch {value:?}")));
                o.watch.push((name, pid));
            }
            "--stats" => o.stats.push(value),
            "--label" => o.label = value,
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if !o.keys.contains("{}") || o.count == 0 {
        usage("--keys with {} and --count are required");
    }
    o
}

/// The window in which replies are counted, shared by all connections.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What one connection saw.
#[derive(Default)]
struct ConnResult {
    /// Latency in nanoseconds of each request sent and answered within the window.
    latencies: Vec<u64>,
    /// Replies by status, within the window.
    statuses: BTreeMap<String, u64>,
    /// One reply per status, as an example.
    examples: BTreeMap<String, String>,
    /// When its last counted reply arrived.
    last: Option<Instant>,
    error: Option<String>,
}

/// How long the connections may take to answer what is still in flight when the window ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The key indices handed out to connections, and the keys made from them.
struct Keys {
    order: Order,
    count: usize,
    /// The next unused index of `Order::Unique`, shared by the connections.
    next_unique: Cell<usize>,
    /// `--keys` split at each `{}`.
    parts: Vec<String>,
}

impl Keys {
    fn new(o: &Options) -> Keys {
        Keys {
            order: o.order,
            count: o.count,
            next_unique: Cell::new(0),
            parts: o.keys.split("{}").map(str::to_owned).collect(),
        }
    }

    /// Writes the key for `index` into `key`: the pattern with every `{}` replaced by it.
    fn write_key(&self, index: usize, key: &mut String) {
        key.clear();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                let _ = write!(key, "{index}");
            }
            key.push_str(part);
        }
    }

    /// The index for connection `conn`'s `n`-th request, or `None` when the keys ran out.
    fn index(&self, conn: usize, n: usize, connections: usize) -> Option<usize> {
        match self.order {
            Order::Cycle => Some((conn * self.count / connections + n) % self.count),
            Order::Burst => (n < self.count).then_some(n),
            Order::Unique => {
                let i = self.next_unique.get();
                self.next_unique.set(i.saturating_add(1));
                (i < self.count).then_some(i)
            }
        }
    }
}

/// Token of the poll registration of connection `i`.
fn token(i: usize) -> Token {
    Token(i)
}

/// One connection: its socket, the requests it has in flight and what it saw.
struct Conn {
    /// `None` once the connection is done (or never connected).
    stream: Option<Stream>,
    /// When each request in flight was sent, oldest first.
    pending: VecDeque<Instant>,
    /// Encoded requests; `out[sent..]` is not written yet.
    out: Vec<u8>,
    sent: usize,
    /// Whether the registration asks for writability (only while `out` is not all written).
    wants_write: bool,
    /// Replies read, `buf[..have]` not decoded yet.
    buf: Vec<u8>,
    have: usize,
    /// Requests made so far, and whether the keys ran out.
    n: usize,
    exhausted: bool,
    result: ConnResult,
}

impl Conn {
    fn new(stream: Stream, o: &Options) -> Conn {
        Conn {
            stream: Some(stream),
            pending: VecDeque::with_capacity(o.in_flight),
            out: Vec::with_capacity(o.in_flight * 64),
            sent: 0,
            wants_write: false,
            buf: vec![0u8; 256 * 1024],
            have: 0,
            n: 0,
            exhausted: false,
            result: ConnResult::default(),
        }
    }

    /// Ends the connection with `error` (what it counted so far is dropped, as a failed
    /// connection's figures are not to be trusted).
    /// A connection that never connected.
    fn new_closed() -> Conn {
        Conn {
            stream: None,
            pending: VecDeque::new(),
            out: Vec::new(),
            sent: 0,
            wants_write: false,
            buf: Vec::new(),
            have: 0,
            n: 0,
            exhausted: false,
            result: ConnResult::default(),
        }
    }

    fn fail(&mut self, poll: &Poll, error: String) {
        self.close(poll);
        self.result = ConnResult {
            error: Some(error),
            ..ConnResult::default()
        };
    }

    fn close(&mut self, poll: &Poll) {
        if let Some(mut stream) = self.stream.take() {
            let _ = poll.registry().deregister(&mut stream);
        }
    }

    /// Reads the replies that arrived (one `read` unless it filled the buffer) and records
    /// those of requests sent within the window.
    fn read_replies(&mut self, now: Instant, window: Window) -> Result<(), String> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        loop {
            let room = self.buf.len() - self.have;
            let got = match stream.read(&mut self.buf[self.have..]) {
                Ok(0) => return Err("the daemon closed the connection".into()),
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            self.have += got;
            let mut used = 0;
            while let Some((reply, len)) =
                decode_reply(&self.buf[used..self.have]).map_err(|e| e.to_string())?
            {
                used += len;
                let sent = self.pending.pop_front().ok_or("a reply nobody asked for")?;
                if sent >= window.start && now <= window.end {
                    let r = &mut self.result;
                    r.latencies
                        .push(u64::try_from((now - sent).as_nanos()).unwrap_or(u64::MAX));
                    if let Some(count) = r.statuses.get_mut(reply.status()) {
                        *count += 1;
                    } else {
                        let status = reply.status().to_owned();
                        r.statuses.insert(status.clone(), 1);
                        r.examples.insert(status, example(&reply));
                    }
                    r.last = Some(now);
                }
            }
            self.buf.copy_within(used..self.have, 0);
            self.have -= used;
            if self.have == self.buf.len() {
                return Err("a reply larger than the read buffer".into());
            }
            // A read that did not fill the room emptied the socket: the poll reports the
            // next arrival (mio registers edge-triggered), so no second read is needed.
            if got < room {
                return Ok(());
            }
        }
    }

    /// Tops up to `--in-flight` requests (unless the window is over or the keys ran out)
    /// and writes what is not written yet. Returns whether the connection is done: nothing
    /// in flight and nothing more to ask.
    #[allow(clippy::too_many_arguments)]
    fn top_up(
        &mut self,
        poll: &Poll,
        i: usize,
        o: &Options,
        keys: &Keys,
        key: &mut String,
        now: Instant,
        window: Window,
    ) -> Result<bool, String> {
        if self.stream.is_none() {
            return Ok(true);
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            while self.pending.len() < o.in_flight && !self.exhausted && now < window.end {
                let Some(index) = keys.index(i, self.n, o.connections) else {
                    self.exhausted = true;
                    break;
                };
                self.n += 1;
                keys.write_key(index, key);
                encode_request(&o.map, key, &mut self.out).map_err(|e| e.to_string())?;
                self.pending.push_back(now);
            }
        }
        self.write_out(poll, i)?;
        Ok(self.pending.is_empty() && self.sent == self.out.len())
    }

    /// Writes `out[sent..]` until done or the socket is full (then asks to be told when it
    /// is writable again).
    fn write_out(&mut self, poll: &Poll, i: usize) -> Result<(), String> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.sent < self.out.len() {
            match stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err("write: the connection is closed".into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        let wants_write = self.sent < self.out.len();
        if wants_write != self.wants_write {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            poll.registry()
                .reregister(stream, token(i), interest)
                .map_err(|e| format!("poll: {e}"))?;
            self.wants_write = wants_write;
        }
        Ok(())
    }
}

/// Opens connection `i` (blocking connect, then non-blocking) and registers it.
fn connect(poll: &Poll, i: usize, o: &Options) -> Result<Stream, String> {
    let failed = |e: std::io::Error| format!("connect {}: {e}", o.addr);
    let mut stream = match &o.addr {
        Addr::Tcp(addr) => {
            let stream = std::net::TcpStream::connect(addr).map_err(failed)?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            Stream::Tcp(MioTcpStream::from_std(stream))
        }
        Addr::Unix(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path).map_err(failed)?;
            stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            Stream::Unix(MioUnixStream::from_std(stream))
        }
    };
    poll.registry()
        .register(&mut stream, token(i), Interest::READABLE)
        .map_err(|e| format!("poll: {e}"))?;
    Ok(stream)
}

fn example(reply: &Reply) -> String {
    reply.to_string().chars().take(120).collect()
}

/// utime + stime of a process in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The counters of a `key=value` stats file.
fn read_stats(path: &str) -> BTreeMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let at = rank.clamp(1, sorted.len()) - 1;
    sorted.get(at).copied().unwrap_or(0) as f64 / 1000.0
}

fn main() {
    let o = parse_options();
    run(o);
}

/// CPU ticks of this process and each watched one, the `--stats` counters and the load
/// average, at one moment.
struct Snapshot {
    at: Instant,
    cpu: Vec<Option<u64>>,
    stats: Vec<BTreeMap<String, u64>>,
    load: String,
}

fn snapshot(o: &Options, at: Instant) -> Snapshot {
    Snapshot {
        at,
        cpu: std::iter::once(std::process::id().to_string())
            .chain(o.watch.iter().map(|(_, pid)| pid.to_string()))
            .map(|pid| cpu_ticks(&pid))
            .collect(),
        stats: o.stats.iter().map(|p| read_stats(p)).collect(),
        load: loadavg(),
    }
}

/// Runs the connections on this thread, measures the window and prints the JSON line.
fn run(o: Options) {
    let keys = Keys::new(&o);
    let begin = Instant::now();
    let window = Window {
        start: begin + o.warmup,
        end: begin + o.warmup + o.duration,
    };
    let mut poll = Poll::new().unwrap_or_else(|e| usage(&format!("cannot poll: {e}")));
    let mut events = Events::with_capacity(o.connections.clamp(16, 1024));
    let mut key = String::with_capacity(o.keys.len() + 20);
    let mut conns: Vec<Conn> = Vec::with_capacity(o.connections);
    let mut done = vec![false; o.connections];
    for (i, finished) in done.iter_mut().enumerate() {
        let mut conn = match connect(&poll, i, &o) {
            Ok(stream) => Conn::new(stream, &o),
            Err(e) => {
                let mut conn = Conn::new_closed();
                conn.result.error = Some(e);
                conn
            }
        };
        match conn.top_up(&poll, i, &o, &keys, &mut key, Instant::now(), window) {
            Ok(false) => {}
            Ok(true) => {
                conn.close(&poll);
                *finished = true;
            }
            Err(e) => {
                conn.fail(&poll, e);
                *finished = true;
            }
        }
        conns.push(conn);
    }
    let mut open = done.iter().filter(|d| !**d).count();

    let mut before: Option<Snapshot> = None;
    let mut after: Option<Snapshot> = None;
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        if before.is_none() && now >= window.start {
            before = Some(snapshot(&o, now));
        }
        // Until the window ends, or every connection is done (the keys ran out).
        if before.is_some() && after.is_none() && (now >= window.end || open == 0) {
            after = Some(snapshot(&o, now.min(window.end)));
            drain_until = Some(now + DRAIN_TIMEOUT);
        }
        if after.is_some() && open == 0 {
            break;
        }
        let next = match (&before, drain_until) {
            (None, _) => window.start,
            (Some(_), None) => window.end,
            (Some(_), Some(until)) => until,
        };
        if let Some(until) = drain_until
            && now >= until
        {
            for (conn, done) in conns.iter_mut().zip(&done) {
                if !done {
                    conn.fail(
                        &poll,
                        format!(
                            "no reply within {} s after the window",
                            DRAIN_TIMEOUT.as_secs()
                        ),
                    );
                }
            }
            break;
        }
        match poll.poll(&mut events, Some(next.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => usage(&format!("poll: {e}")),
        }
        for event in &events {
            let i = event.token().0;
            let (Some(conn), Some(false)) = (conns.get_mut(i), done.get(i).copied()) else {
                continue;
            };
            let now = Instant::now();
            let step = (|| {
                if event.is_writable() {
                    conn.write_out(&poll, i)?;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.read_replies(now, window)?;
                }
                conn.top_up(&poll, i, &o, &keys, &mut key, now, window)
            })();
            let finished = match step {
                Ok(finished) => {
                    if finished {
                        conn.close(&poll);
                    }
                    finished
                }
                Err(e) => {
                    conn.fail(&poll, e);
                    true
                }
            };
            if finished {
                done[i] = true;
                open -= 1;
            }
        }
    }
    // The loop ends only after both snapshots; these fallbacks are never used.
    let before = before.unwrap_or_else(|| snapshot(&o, window.start));
    let after = after.unwrap_or_else(|| snapshot(&o, window.end));
    let measured_until = after.at;
    let results: Vec<ConnResult> = conns.into_iter().map(|c| c.result).collect();

    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut last = None;
    for r in results {
        latencies.extend(r.latencies);
        for (k, v) in r.statuses {
            *statuses.entry(k).or_default() += v;
        }
        for (k, v) in r.examples {
            examples.entry(k).or_insert(v);
        }
        errors.extend(r.error);
        last = last.max(r.last);
    }
    // With the keys run out before the window's end, it ends at the last reply.
    let end = if measured_until < window.end {
        last.unwrap_or(measured_until)
    } else {
        window.end
    };
    let seconds = end.saturating_duration_since(window.start).as_secs_f64();
    latencies.sort_unstable();
    let lookups = latencies.len();
    let ticks = clock_ticks_per_second();
    let cpu = |i: usize| -> serde_json::Value {
        match (
            before.cpu.get(i).copied().flatten(),
            after.cpu.get(i).copied().flatten(),
        ) {
            (Some(a), Some(b)) if seconds > 0.0 => {
                serde_json::json!(
                    ((b.saturating_sub(a)) as f64 / ticks / seconds * 1000.0).round() / 10.0
                )
            }
            _ => serde_json::Value::Null,
        }
    };
    let mut watched = serde_json::Map::new();
    for (i, (name, _)) in o.watch.iter().enumerate() {
        watched.insert(name.clone(), cpu(i + 1));
    }
    let mut counters = serde_json::Map::new();
    for (before, after) in before.stats.iter().zip(&after.stats) {
        for (k, v) in after {
            let grew = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            counters.insert(k.clone(), serde_json::json!(grew));
        }
    }
    let rate = if seconds > 0.0 {
        lookups as f64 / seconds
    } else {
        0.0
    };
    let doc = serde_json::json!({
        "label": o.label,
        "connections": o.connections,
        "in_flight": o.in_flight,
        "order": format!("{:?}", o.order).to_lowercase(),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "lookups": lookups,
        "lookups_per_s": rate.round(),
        "p50_ms": (percentile(&latencies, 50.0)).round() / 1000.0,
        "p99_ms": (percentile(&latencies, 99.0)).round() / 1000.0,
        "p999_ms": (percentile(&latencies, 99.9)).round() / 1000.0,
        "max_ms": (percentile(&latencies, 100.0)).round() / 1000.0,
        "statuses": statuses,
        "examples": examples,
        "generator_cpu_pct": cpu(0),
        "cpu_pct": watched,
        "counters": counters,
        "loadavg_before": before.load,
        "loadavg_after": after.load,
        "errors": errors,
    });
    println!("{doc}");
}
