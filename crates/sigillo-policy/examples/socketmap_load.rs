//! Load generator for socketmap TLS policy daemons (`bench/policy.sh`): opens connections to
//! one daemon, keeps a fixed number of requests in flight on each (pipelined, replies come in
//! order), and prints one JSON line with lookups/s, latency percentiles, the replies by
//! status, and CPU time, its own and that of watched processes, over the same window.
//!
//! One OS thread drives every connection: a tokio `current_thread` runtime with one task per
//! connection on non-blocking sockets. Per round trip a connection costs one `write` and one
//! `read` (fewer when replies arrive together), and the thread sleeps in one `epoll_wait` for
//! all connections instead of switching between a thread per connection, so the generator
//! stays cheap next to the daemon it measures; its CPU share is printed to show it.
//!
//! ```text
//! socketmap_load --addr 127.0.0.1:8461 --map sts --connections 16 --in-flight 1 \
//!     --keys 'h{}.bench.test' --count 1000 --order cycle --warmup 2 --duration 10 \
//!     --watch daemon=1234 --stats /run/lab.stats --label hits
//! ```
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
use std::net::SocketAddr;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use sigillo_policy::socketmap::{Reply, decode_reply, encode_request};

/// How a connection picks its next key index.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Cycle,
    Unique,
    Burst,
}

#[derive(Clone, Debug)]
struct Options {
    addr: SocketAddr,
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
        "socketmap_load: {why}\nusage: socketmap_load --addr IP:PORT [--map NAME] \
         [--connections N] [--in-flight K] --keys PATTERN_WITH_{{}} --count N \
         [--order cycle|unique|burst] [--warmup SECS] [--duration SECS] \
         [--watch NAME=PID]... [--stats FILE]... [--label TEXT]"
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 8461)),
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
                o.addr = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("bad --addr {value:?}")))
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
    /// The next unused index of `Order::Unique`, shared by the tasks of the one thread.
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

/// One connection's task: keeps `--in-flight` requests outstanding until the window ends or
/// the keys run out, then waits for the replies still due.
async fn run_connection(
    o: Rc<Options>,
    conn: usize,
    keys: Rc<Keys>,
    window: Window,
) -> Result<ConnResult, String> {
    let mut stream = TcpStream::connect(o.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", o.addr))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut key = String::with_capacity(o.keys.len() + 20);
    let mut result = ConnResult::default();
    let mut pending: VecDeque<Instant> = VecDeque::with_capacity(o.in_flight);
    let mut out = Vec::with_capacity(o.in_flight * 64);
    let mut buf = vec![0u8; 256 * 1024];
    let (mut have, mut n, mut exhausted) = (0usize, 0usize, false);
    loop {
        // Top up to K in flight, unless the window is over or the keys ran out.
        out.clear();
        let now = Instant::now();
        while pending.len() < o.in_flight && !exhausted && now < window.end {
            let Some(index) = keys.index(conn, n, o.connections) else {
                exhausted = true;
                break;
            };
            n += 1;
            keys.write_key(index, &mut key);
            encode_request(&o.map, &key, &mut out).map_err(|e| e.to_string())?;
            pending.push_back(now);
        }
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        if pending.is_empty() {
            return Ok(result);
        }
        let got = stream
            .read(&mut buf[have..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if got == 0 {
            return Err("the daemon closed the connection".into());
        }
        have += got;
        let now = Instant::now();
        let mut used = 0;
        while let Some((reply, len)) = decode_reply(&buf[used..have]).map_err(|e| e.to_string())? {
            used += len;
            let sent = pending.pop_front().ok_or("a reply nobody asked for")?;
            if sent >= window.start && now <= window.end {
                result
                    .latencies
                    .push(u64::try_from((now - sent).as_nanos()).unwrap_or(u64::MAX));
                let status = reply.status().to_owned();
                *result.statuses.entry(status.clone()).or_default() += 1;
                result
                    .examples
                    .entry(status)
                    .or_insert_with(|| example(&reply));
                result.last = Some(now);
            }
        }
        buf.copy_within(used..have, 0);
        have -= used;
        if have == buf.len() {
            return Err("a reply larger than the read buffer".into());
        }
    }
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("cannot start the runtime: {e}")));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(o));
}

/// Runs the connections on this thread, measures the window and prints the JSON line.
async fn run(o: Options) {
    let keys = Rc::new(Keys::new(&o));
    let begin = Instant::now();
    let window = Window {
        start: begin + o.warmup,
        end: begin + o.warmup + o.duration,
    };
    let o = Rc::new(o);
    let tasks: Vec<JoinHandle<Result<ConnResult, String>>> = (0..o.connections)
        .map(|conn| tokio::task::spawn_local(run_connection(o.clone(), conn, keys.clone(), window)))
        .collect();

    tokio::time::sleep_until(window.start.into()).await;
    let me = std::process::id().to_string();
    let load_before = loadavg();
    let cpu_before: Vec<Option<u64>> = std::iter::once(me.clone())
        .chain(o.watch.iter().map(|(_, pid)| pid.to_string()))
        .map(|pid| cpu_ticks(&pid))
        .collect();
    let stats_before: Vec<_> = o.stats.iter().map(|p| read_stats(p)).collect();
    // Until the window ends, or every connection is done (the keys ran out).
    while Instant::now() < window.end && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after: Vec<Option<u64>> = std::iter::once(me)
        .chain(o.watch.iter().map(|(_, pid)| pid.to_string()))
        .map(|pid| cpu_ticks(&pid))
        .collect();
    let stats_after: Vec<_> = o.stats.iter().map(|p| read_stats(p)).collect();
    let measured_until = Instant::now().min(window.end);
    let load_after = loadavg();

    let drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut results = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        let result = match tokio::time::timeout_at(drain_until, &mut task).await {
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(e))) => ConnResult {
                error: Some(e),
                ..ConnResult::default()
            },
            Ok(Err(e)) => ConnResult {
                error: Some(format!("the connection's task failed: {e}")),
                ..ConnResult::default()
            },
            Err(_) => {
                task.abort();
                ConnResult {
                    error: Some(format!(
                        "no reply within {} s after the window",
                        DRAIN_TIMEOUT.as_secs()
                    )),
                    ..ConnResult::default()
                }
            }
        };
        results.push(result);
    }

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
            cpu_before.get(i).copied().flatten(),
            cpu_after.get(i).copied().flatten(),
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
    for (before, after) in stats_before.iter().zip(&stats_after) {
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
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "errors": errors,
    });
    println!("{doc}");
}
