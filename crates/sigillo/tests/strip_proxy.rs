//! `sigillo strip-proxy` as a real process in front of real peers on loopback: a private
//! Postfix with STARTTLS, `sigillo check` and swaks as clients, and fake servers for the
//! limits (idle timeout, connection cap, a client that leaves) and the shutdown on SIGTERM.

mod support;

use serde_json::Value;
use sigillo_testkit::{Postfix, Script, ScriptedServer, SilentServer, TestCa, require_tools};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::Sigillo;

/// A running `sigillo strip-proxy` whose stderr lines are collected as they come.
struct Proxy {
    process: Sigillo,
    addr: SocketAddr,
}

impl Proxy {
    /// Starts the proxy on 127.0.0.1:free port in front of `upstream` and waits for its
    /// "listening on" line.
    fn start(upstream: SocketAddr, extra: &[&str]) -> Proxy {
        let mut args = vec![
            "strip-proxy".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--upstream".into(),
            upstream.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut process = Sigillo::spawn(&args);
        let addr = process.listening_addr();
        Proxy { process, addr }
    }

    fn target(&self) -> String {
        format!("[{}]:{}", self.addr.ip(), self.addr.port())
    }

    fn lines(&self) -> Vec<String> {
        self.process.lines()
    }

    /// The first stderr line containing `needle`, waiting for it up to `timeout`.
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.process.wait_for_line(needle, timeout)
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&mut self) -> ExitStatus {
        self.process.terminate(Duration::from_secs(10))
    }
}

/// Runs `sigillo check --json` on one target; returns its document.
fn check(target: &str, ca_file: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .args(["check", "--json", "--ehlo", "probe.sigillo.test"])
        .args(["--greeting-timeout", "10", "--command-timeout", "10"])
        .args(["--ca-file", ca_file, target])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run sigillo check");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "bad JSON from check ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Sends one message with swaks; returns (success, transcript).
fn swaks(addr: SocketAddr, subject: &str, tls: &str) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["60", "swaks", "--server"])
        .arg(addr.ip().to_string())
        .args(["--port", &addr.port().to_string()])
        .args(["--to", "user@sigillo.test", "--from", "sender@client.test"])
        .args(["--helo", "client.test", "--timeout", "20", tls])
        .args(["--header", &format!("Subject: {subject}")])
        .stdin(Stdio::null())
        .output()
        .expect("run swaks");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The delivered message with this subject, waiting for Postfix's delivery.
fn delivered(postfix: &Postfix, subject: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for path in postfix.delivered() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains(&format!("Subject: {subject}")) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no message {subject:?} delivered; log:\n{}",
            postfix.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `with ...` protocol of the Received header Postfix added (ESMTP, ESMTPS, …).
fn received_with(message: &str) -> String {
    let received = message
        .split("\nReceived: ")
        .nth(1)
        .or_else(|| message.strip_prefix("Received: "))
        .unwrap_or_else(|| panic!("no Received header in {message}"));
    received
        .split_whitespace()
        .skip_while(|w| *w != "with")
        .nth(1)
        .unwrap_or_else(|| panic!("no `with` in Received: {received}"))
        .to_owned()
}

#[test]
fn postfix_behind_the_proxy_is_stripped_and_mail_goes_in_clear() {
    require_tools!("postfix", "swaks");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let postfix = Postfix::start_with_tls(&cert).unwrap();
    let ca_file = ca.ca_pem().to_str().unwrap().to_owned();
    let mut proxy = Proxy::start(postfix.addr(), &[]);
    assert!(
        proxy.lines()[0].contains("(banner masked, STARTTLS stripped)"),
        "{:?}",
        proxy.lines()
    );

    // (a) sigillo check through the proxy sees the stripping, with the rewritten lines.
    let doc = check(&proxy.target(), &ca_file);
    assert_eq!(doc["verdict"], "stripped", "{doc:#}");
    let stripped = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "starttls-stripped")
        .unwrap_or_else(|| panic!("no starttls-stripped finding: {doc:#}"));
    assert_eq!(stripped["kind"], "masked-capability", "{stripped:#}");
    assert_eq!(stripped["severity"], "critical");
    let evidence = stripped["evidence"].to_string();
    assert!(evidence.contains("S: 250-XXXXXXXA"), "{evidence}");
    assert!(evidence.contains("S: 220 ***"), "{evidence}");
    let line = proxy.wait_for_line("#1 ", Duration::from_secs(10));
    assert!(
        line.contains("rewrote: banner (1 line), STARTTLS in 1 EHLO reply line and 1 command"),
        "{line}"
    );
    assert!(line.contains(&format!("-> {}:", postfix.addr())), "{line}");
    // Directly, the same Postfix is encrypted.
    assert_eq!(
        check(&format!("[127.0.0.1]:{}", postfix.port()), &ca_file)["verdict"],
        "encrypted"
    );

    // (b) swaks with opportunistic TLS: through the proxy the message goes in clear ...
    let (ok, transcript) = swaks(proxy.addr, "through the proxy", "--tls-optional");
    assert!(ok, "{transcript}");
    assert!(!transcript.contains("TLS started"), "{transcript}");
    assert!(
        transcript.contains("<-  220 ****"),
        "masked banner: {transcript}"
    );
    let message = delivered(&postfix, "through the proxy");
    assert_eq!(received_with(&message), "ESMTP", "{message}");
    proxy.wait_for_line("#2 ", Duration::from_secs(10));
    // ... directly it uses TLS ...
    let (ok, transcript) = swaks(postfix.addr(), "directly", "--tls-optional");
    assert!(ok, "{transcript}");
    assert!(transcript.contains("TLS started"), "{transcript}");
    let message = delivered(&postfix, "directly");
    assert_eq!(received_with(&message), "ESMTPS", "{message}");
    // ... and a client that requires TLS refuses to send through the proxy.
    let (ok, transcript) = swaks(proxy.addr, "tls required", "--tls");
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains("STARTTLS") && !transcript.contains("TLS started"),
        "{transcript}"
    );

    // With --allow-tls the same proxy lets STARTTLS through (banner still masked).
    let mut allow = Proxy::start(postfix.addr(), &["--allow-tls"]);
    let (ok, transcript) = swaks(allow.addr, "allow-tls", "--tls");
    assert!(ok, "{transcript}");
    assert!(transcript.contains("TLS started"), "{transcript}");
    assert!(transcript.contains("<-  220 ****"), "{transcript}");
    assert_eq!(
        received_with(&delivered(&postfix, "allow-tls")),
        "ESMTPS",
        "allow-tls"
    );
    let line = allow.wait_for_line("#1 ", Duration::from_secs(10));
    assert!(line.contains("STARTTLS let through, TLS started"), "{line}");
    assert!(line.contains("rewrote: banner (1 line);"), "{line}");

    assert!(proxy.terminate().success());
    let last = proxy.lines().last().cloned().unwrap_or_default();
    assert!(
        last.contains("stopped: 3 connections relayed, 0 refused"),
        "{last}"
    );
}

#[test]
fn idle_connections_are_closed_extra_ones_refused_and_sigterm_stops_cleanly() {
    let tarpit = SilentServer::start().unwrap();
    let mut proxy = Proxy::start(
        tarpit.addr(),
        &["--idle-timeout", "1", "--max-connections", "1"],
    );
    let read_eof_within = |stream: &mut TcpStream, limit: Duration| -> Duration {
        let started = Instant::now();
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => started.elapsed(),
            Ok(n) => panic!("unexpected {n} bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => started.elapsed(),
            Err(e) => panic!("no close within {limit:?}: {e}"),
        }
    };
    let mut first = TcpStream::connect(proxy.addr).unwrap();
    // Wait until the tarpit sees the relayed connection, so the first one counts as open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tarpit.connections() == 0 {
        assert!(Instant::now() < deadline, "never relayed to the tarpit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut second = TcpStream::connect(proxy.addr).unwrap();
    let refused_after = read_eof_within(&mut second, Duration::from_secs(5));
    assert!(
        refused_after < Duration::from_millis(900),
        "{refused_after:?}"
    );
    let line = proxy.wait_for_line("refused", Duration::from_secs(5));
    assert!(line.contains("1 connections already open"), "{line}");

    // Nothing moves: the first one is closed after the 1 s idle timeout, not much later.
    let idle_after = read_eof_within(&mut first, Duration::from_secs(10));
    assert!(idle_after < Duration::from_secs(5), "{idle_after:?}");
    let line = proxy.wait_for_line("#1 ", Duration::from_secs(5));
    assert!(line.contains("closed: idle timeout after 1."), "{line}");
    assert!(line.contains("0 B from client, 0 B from server"), "{line}");

    // Bytes keep a connection alive past the idle timeout; SIGTERM then closes it.
    let mut third = TcpStream::connect(proxy.addr).unwrap();
    for _ in 0..4 {
        std::io::Write::write_all(&mut third, b"NOOP\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(
        !proxy.lines().iter().any(|l| l.contains("#2 ")),
        "{:?}",
        proxy.lines()
    );
    let status = proxy.terminate();
    assert!(status.success(), "{status}");
    let lines = proxy.lines();
    let closed = lines.iter().find(|l| l.contains("#2 ")).expect("#2 logged");
    assert!(closed.contains("closed: proxy stopping"), "{closed}");
    assert!(closed.contains("24 B from client"), "{closed}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains("stopped: 2 connections relayed, 1 refused"),
        "{lines:?}"
    );
    read_eof_within(&mut third, Duration::from_secs(5));
}

/// With `--max-connections 1`, in front of a server that never closes a connection: a client
/// that leaves (a half-close after `QUIT`, or a plain close) frees the slot a second later
/// (`--close-grace 1`, the grace the server gets to finish), not after the 300 s idle
/// timeout, and the next client is served, not refused. The half-closing client still gets
/// the reply to its `QUIT`.
#[test]
fn a_client_that_leaves_frees_its_slot_though_the_server_stays() {
    use std::io::Write;
    let upstream = ScriptedServer::start(
        Script::new("220 mx.sigillo.test ESMTP\r\n").reply("QUIT", "221 2.0.0 Bye\r\n"),
    )
    .unwrap();
    let mut proxy = Proxy::start(
        upstream.addr(),
        &["--max-connections", "1", "--close-grace", "1"],
    );
    let addr = proxy.addr;
    let connect = || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut greeting = [0u8; 64];
        let n = stream.read(&mut greeting).unwrap_or(0);
        // A refused client gets no greeting: the proxy closes it at once.
        assert!(
            greeting[..n].starts_with(b"220 ****"),
            "not served: {:?}",
            String::from_utf8_lossy(&greeting[..n])
        );
        stream
    };

    let mut first = connect();
    first.write_all(b"QUIT\r\n").unwrap();
    first.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let read = first.read_to_end(&mut rest);
    assert!(read.is_ok(), "the proxy kept the connection open: {read:?}");
    assert_eq!(String::from_utf8_lossy(&rest), "221 2.0.0 Bye\r\n");
    let line = proxy.wait_for_line("#1 ", Duration::from_secs(60));
    assert!(
        line.contains(": closed by client; server silent 1 s after, closed by the proxy after "),
        "{line}"
    );

    let second = connect();
    drop(second);
    proxy.wait_for_line("#2 ", Duration::from_secs(60));
    let _third = connect();
    assert!(
        !proxy.lines().iter().any(|l| l.contains("refused")),
        "{:?}",
        proxy.lines()
    );
    assert!(proxy.terminate().success());
    let last = proxy.lines().last().cloned().unwrap_or_default();
    assert!(
        last.contains("stopped: 3 connections relayed, 0 refused"),
        "{last}"
    );
}

#[test]
fn an_unreachable_upstream_is_counted_apart_from_relayed_connections() {
    // A loopback port nothing listens on: bound, then released.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut proxy = Proxy::start(upstream, &["--connect-timeout", "5"]);
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the proxy did not close the connection: {e}"),
    }
    let line = proxy.wait_for_line("#1 ", Duration::from_secs(10));
    assert!(line.contains(": upstream unreachable ("), "{line}");
    assert!(line.contains("0 B from server"), "{line}");
    assert!(proxy.terminate().success());
    let last = proxy.lines().last().cloned().unwrap_or_default();
    assert!(
        last.contains("stopped: 0 connections relayed, 0 refused, 1 upstream unreachable"),
        "{last}"
    );
}

/// Runs `sigillo ARGS` that must fail fast; returns (exit code, stderr).
fn sigillo_fails(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_sigillo"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:25"],
            &["not a loopback address", "--allow-public"],
        ),
        (
            &["--upstream", "[::1"],
            &["--upstream \"[::1\"", "expected IP:PORT"],
        ),
        (&["--upstream", "mx.example:0"], &["bad port"]),
        (&["--upstream", "mx.example:smtp"], &["bad port"]),
        (&["--upstream", "mx example"], &["expected IP:PORT"]),
        (
            &["--upstream", "127.0.0.1:25", "--idle-timeout", "0"],
            &["--idle-timeout must be more than 0 and at most 3600 seconds, got 0"],
        ),
        (
            &["--upstream", "127.0.0.1:25", "--close-grace", "0"],
            &["--close-grace must be more than 0 and at most 3600 seconds, got 0"],
        ),
    ];
    for (args, wanted) in cases {
        let mut all = vec!["strip-proxy"];
        all.extend_from_slice(args);
        let (code, err) = sigillo_fails(&all);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        for w in *wanted {
            assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
        }
    }
}
