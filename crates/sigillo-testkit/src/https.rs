//! An HTTPS/1.1 server on loopback for MTA-STS policy fetches in tests: certificates from a
//! [`crate::TestCa`] chosen by SNI, a canned [`HttpResponse`] per path (and optionally per host),
//! and the misbehaviours a fetcher must survive (slow answers, redirects, oversized and
//! endless bodies), with counts of connections and requests to assert caching and reuse.
//!
//! Plain std threads and rustls (ring). Connections are kept alive (HTTP/1.1) until the
//! client closes, asks `Connection: close`, or sits idle for 10 s; request heads are capped
//! at 16 KiB.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::CertPair;
use crate::scripted::{Conn, ServerCore};

/// Longest request head (request line and headers) read before answering 431.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Longest request body read (and discarded).
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// A kept-alive connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of each chunk of an endless body.
const ENDLESS_CHUNK: usize = 16 * 1024;

/// What the server answers to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    delay: Duration,
    trickle: Option<Duration>,
    close: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Body {
    Fixed(Vec<u8>),
    /// Chunked, never ending.
    Endless,
}

impl HttpResponse {
    /// `200 OK`, `Content-Type: text/plain` (what RFC 8461 asks of a policy), this body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self::status(200, body)
    }

    /// This status, `Content-Type: text/plain`, this body.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: Body::Fixed(body.into()),
            delay: Duration::ZERO,
            trickle: None,
            close: false,
        }
    }

    /// A redirect (`301`, `302`, `307`, …) to `location`, which RFC 8461 says not to follow.
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::status(status, format!("moved to {location}\n")).header("Location", location)
    }

    /// `200 OK` with a body of `len` bytes (`Content-Length` announced): a policy file far
    /// larger than any fetcher should accept.
    pub fn oversized(len: usize) -> Self {
        let mut body = b"version: STSv1\nmode: enforce\nmax_age: 86400\n".to_vec();
        body.resize(len.max(body.len()), b'#');
        Self::ok(body)
    }

    /// `200 OK` with a chunked body that never ends (the connection is closed when the
    /// client goes away or the server stops).
    pub fn endless() -> Self {
        Self {
            body: Body::Endless,
            ..Self::ok(Vec::new())
        }
    }

    /// Set a header, replacing one of the same name (`Content-Type`, `Location`, …).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Wait this long after reading the request before answering anything.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Send the body one byte at a time, this long apart (the head comes at once).
    pub fn trickle(mut self, interval: Duration) -> Self {
        self.trickle = Some(interval);
        self
    }

    /// Close the connection after this response (`Connection: close`).
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The TLS connection it came on, numbered from 1 in order of handshakes.
    pub connection: usize,
    /// The SNI name the client sent, if any.
    pub sni: Option<String>,
    /// The `Host` header, lower-case, without a port.
    pub host: Option<String>,
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target's path (no query string).
    pub path: String,
}

#[derive(Clone, Debug)]
struct Route {
    host: Option<String>,
    path: String,
    response: HttpResponse,
}

/// Certificates by SNI name, with a default for unknown names and for no SNI.
#[derive(Debug)]
struct SniCerts {
    default: Arc<CertifiedKey>,
    by_name: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        let chosen = client_hello
            .server_name()
            .and_then(|name| by_name.get(&name.to_ascii_lowercase()));
        Some(Arc::clone(chosen.unwrap_or(&self.default)))
    }
}

#[derive(Debug)]
struct Shared {
    tls: Arc<ServerConfig>,
    certs: Arc<SniCerts>,
    routes: Mutex<Vec<Route>>,
    not_found: HttpResponse,
    log: Mutex<Vec<HttpRequest>>,
    handshakes: AtomicUsize,
    resumed_handshakes: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

/// A running HTTPS server on 127.0.0.1 (or a given loopback address). Stops on drop, cutting
/// every connection.
///
/// ```no_run
/// use sigillo_testkit::{HttpsServer, HttpResponse, TestCa};
/// use std::time::Duration;
///
/// let ca = TestCa::new().unwrap();
/// let cert = ca.issue(&["mta-sts.lab.test"]).unwrap();
/// let https = HttpsServer::start(&cert).unwrap();
/// https.route(
///     "/.well-known/mta-sts.txt",
///     HttpResponse::ok("version: STSv1\nmode: enforce\nmx: mx.lab.test\nmax_age: 86400\n"),
/// );
/// https.route_host("mta-sts.slow.test", "/.well-known/mta-sts.txt",
///     HttpResponse::ok("…").delay(Duration::from_secs(30)));
/// // fetch https://mta-sts.lab.test:{https.port()}/.well-known/mta-sts.txt trusting ca.ca_pem()
/// assert_eq!(https.requests_for("/.well-known/mta-sts.txt"), 0);
/// ```
#[derive(Debug)]
pub struct HttpsServer {
    core: ServerCore,
    shared: Arc<Shared>,
}

impl HttpsServer {
    /// Serve on 127.0.0.1:free port with `cert` (its chain: leaf then CA) for every name.
    pub fn start(cert: &CertPair) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("https: binding")?;
        Self::start_on(listener, cert)
    }

    /// Serve on a given address, e.g. `127.0.0.5:443` for a client that cannot be told a
    /// port (binding below 1024 needs root).
    pub fn start_at(addr: SocketAddr, cert: &CertPair) -> Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("https: binding {addr}"))?;
        Self::start_on(listener, cert)
    }

    fn start_on(listener: TcpListener, cert: &CertPair) -> Result<Self> {
        let certs = Arc::new(SniCerts {
            default: load_cert(cert)?,
            by_name: Mutex::new(HashMap::new()),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let shared = Arc::new(Shared {
            tls: Arc::new(tls),
            certs,
            routes: Mutex::new(Vec::new()),
            not_found: HttpResponse::status(404, "not found\n"),
            log: Mutex::new(Vec::new()),
            handshakes: AtomicUsize::new(0),
            resumed_handshakes: AtomicUsize::new(0),
            failed_handshakes: AtomicUsize::new(0),
        });
        let handler_shared = Arc::clone(&shared);
        let core = ServerCore::start_on("https", listener, move |conn| {
            serve_connection(&handler_shared, conn);
        })?;
        Ok(Self { core, shared })
    }

    /// Also present `cert` to clients whose SNI is one of its names (e.g. an expired or a
    /// wrong-name certificate for one test domain, a valid one for the others).
    pub fn add_cert(&self, cert: &CertPair) -> Result<()> {
        let key = load_cert(cert)?;
        let mut by_name = lock(&self.shared.certs.by_name);
        for name in &cert.names {
            by_name.insert(name.to_ascii_lowercase(), Arc::clone(&key));
        }
        Ok(())
    }

    /// Present `cert` to clients whose SNI is `name`, whatever names the certificate holds
    /// (to serve a wrong-name certificate for `name`).
    pub fn add_cert_for(&self, name: &str, cert: &CertPair) -> Result<()> {
        let key = load_cert(cert)?;
        lock(&self.shared.certs.by_name).insert(name.to_ascii_lowercase(), key);
        Ok(())
    }

    /// Answer requests for `path` (any host) with `response`, replacing an earlier route.
    pub fn route(&self, path: &str, response: HttpResponse) {
        self.set_route(None, path, response);
    }

    /// Answer requests for `path` whose `Host` is `host` with `response`; these routes win
    /// over host-less ones.
    pub fn route_host(&self, host: &str, path: &str, response: HttpResponse) {
        self.set_route(Some(host.to_ascii_lowercase()), path, response);
    }

    fn set_route(&self, host: Option<String>, path: &str, response: HttpResponse) {
        let mut routes = lock(&self.shared.routes);
        routes.retain(|r| !(r.host == host && r.path == path));
        routes.push(Route {
            host,
            path: path.to_string(),
            response,
        });
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.core.connections()
    }

    /// TLS handshakes completed so far (one per kept-alive connection, however many
    /// requests it carried).
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// Of [`HttpsServer::handshakes`], those that resumed an earlier TLS session (no
    /// certificate sent).
    pub fn resumed_handshakes(&self) -> usize {
        self.shared.resumed_handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (e.g. the client refused the certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.shared.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Requests received so far, all paths.
    pub fn requests(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Requests received so far for `path`.
    pub fn requests_for(&self, path: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Every request received so far, in order.
    pub fn request_log(&self) -> Vec<HttpRequest> {
        lock(&self.shared.log).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The certificate chain and key of `cert`, for rustls.
fn load_cert(cert: &CertPair) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(&cert.chain_pem)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("reading {}: {e}", cert.chain_pem.display()))?;
    let key = PrivateKeyDer::from_pem_file(&cert.key_pem)
        .map_err(|e| anyhow!("reading {}: {e}", cert.key_pem.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| anyhow!("certificate {:?}: {e}", cert.names))?;
    Ok(Arc::new(key))
}

/// A parsed request head.
struct Request {
    method: String,
    path: String,
    host: Option<String>,
    keep_alive: bool,
    content_length: usize,
}

enum Head {
    Request(Request),
    /// Closed, timed out or failed before a complete head.
    Gone,
    /// Longer than [`MAX_REQUEST_HEAD`] or not HTTP.
    Bad,
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn serve_connection(shared: &Shared, conn: Conn) {
    let Conn { stream, stop, .. } = conn;
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(server) = ServerConnection::new(Arc::clone(&shared.tls)) else {
        return;
    };
    let mut tls = StreamOwned::new(server, stream);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            shared.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    if tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        shared.resumed_handshakes.fetch_add(1, Ordering::SeqCst);
    }
    let connection = shared.handshakes.fetch_add(1, Ordering::SeqCst) + 1;
    let sni = tls.conn.server_name().map(str::to_owned);
    let mut pending = Vec::new();
    loop {
        let request = match read_head(&mut tls, &mut pending) {
            Head::Request(r) => r,
            Head::Gone => return,
            Head::Bad => {
                let bad =
                    HttpResponse::status(431, "request head too large or malformed\n").close();
                let _ = write_response(&mut tls, &bad, false, &stop);
                return;
            }
        };
        if !discard_body(&mut tls, &mut pending, request.content_length) {
            return;
        }
        lock(&shared.log).push(HttpRequest {
            connection,
            sni: sni.clone(),
            host: request.host.clone(),
            method: request.method.clone(),
            path: request.path.clone(),
        });
        let response = {
            let routes = lock(&shared.routes);
            let by_host = routes
                .iter()
                .find(|r| r.path == request.path && r.host.is_some() && r.host == request.host);
            let any_host = routes
                .iter()
                .find(|r| r.path == request.path && r.host.is_none());
            by_host
                .or(any_host)
                .map_or_else(|| shared.not_found.clone(), |r| r.response.clone())
        };
        let keep_alive = request.keep_alive && !response.close && response.body != Body::Endless;
        let head_only = request.method == "HEAD";
        if write_response(&mut tls, &response, head_only, &stop).is_err() || !keep_alive {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}

/// Read one request head; bytes after it stay in `pending` (pipelined requests).
fn read_head(tls: &mut Tls, pending: &mut Vec<u8>) -> Head {
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            if i + 4 > MAX_REQUEST_HEAD {
                return Head::Bad;
            }
            break i + 4;
        }
        if pending.len() > MAX_REQUEST_HEAD {
            return Head::Bad;
        }
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return Head::Gone,
            Ok(n) => pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    };
    let head: Vec<u8> = pending.drain(..end).collect();
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Head::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Head::Bad;
    }
    let mut request = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        host: None,
        keep_alive: version == "HTTP/1.1",
        content_length: 0,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("host") {
            let host = value.rsplit_once(':').map_or(value, |(h, _)| h);
            request.host = Some(host.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                request.keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                request.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            request.content_length = value.parse().unwrap_or(0);
        }
    }
    Head::Request(request)
}

/// Read and drop a request body; false when the connection should end instead.
fn discard_body(tls: &mut Tls, pending: &mut Vec<u8>, len: usize) -> bool {
    if len > MAX_REQUEST_BODY {
        return false;
    }
    let mut buf = [0u8; 4096];
    while pending.len() < len {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    pending.drain(..len);
    true
}

/// Sleep `total`, waking early when the server stops; false if it stopped.
fn pause(total: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + total;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    !stop.load(Ordering::SeqCst)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(
    tls: &mut Tls,
    response: &HttpResponse,
    head_only: bool,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let stopped = || std::io::Error::new(ErrorKind::ConnectionAborted, "server stopping");
    if !pause(response.delay, stop) {
        return Err(stopped());
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &response.body {
        Body::Fixed(body) => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
        Body::Endless => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    if response.close || response.body == Body::Endless {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes())?;
    tls.flush()?;
    if head_only {
        return Ok(());
    }
    match &response.body {
        Body::Fixed(body) => match response.trickle {
            Some(interval) => {
                for byte in body {
                    tls.write_all(std::slice::from_ref(byte))?;
                    tls.flush()?;
                    if !pause(interval, stop) {
                        return Err(stopped());
                    }
                }
            }
            None => tls.write_all(body)?,
        },
        Body::Endless => {
            let chunk = format!("{ENDLESS_CHUNK:x}\r\n{}\r\n", "#".repeat(ENDLESS_CHUNK));
            loop {
                if stop.load(Ordering::SeqCst) {
                    return Err(stopped());
                }
                tls.write_all(chunk.as_bytes())?;
                if let Some(interval) = response.trickle
                    && !pause(interval, stop)
                {
                    return Err(stopped());
                }
            }
        }
    }
    tls.flush()
}
