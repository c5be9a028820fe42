//! The tarpit and the scripted server.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::T;
use sigillo_testkit::{Script, ScriptedServer, SilentServer, read_reply};

#[test]
fn silent_server_accepts_and_never_speaks() {
    let srv = SilentServer::start().unwrap();
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    let started = Instant::now();
    let err = read_reply(&mut s, Duration::from_millis(300)).unwrap_err();
    assert!(format!("{err}").contains("timed out"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.write_all(b"EHLO x\r\n").unwrap();
    assert_eq!(srv.connections(), 1);
    let addr = srv.addr();
    drop(srv);
    // After drop the connection is cut and nothing listens.
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}

#[test]
fn scripted_server_endless_line_then_hold() {
    let srv = ScriptedServer::greeting_then_hold(vec![b'2'; 100_000]).unwrap();
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut total = 0;
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == b'2'));
        total += n;
    }
    assert_eq!(total, 100_000);
}

#[test]
fn scripted_server_replies_and_records() {
    let srv = ScriptedServer::start(
        Script::new("220-first\r\n220 second\r\n")
            .reply("ehlo", "250 only-one-line\r\n")
            .reply_then_close("QUIT", "221 bye\r\n"),
    )
    .unwrap();
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    assert_eq!(
        read_reply(&mut s, T).unwrap(),
        "220-first\r\n220 second\r\n"
    );
    s.write_all(b"EHLO me\r\nNOOP\r\n").unwrap();
    assert_eq!(read_reply(&mut s, T).unwrap(), "250 only-one-line\r\n");
    assert!(read_reply(&mut s, T).unwrap().starts_with("502"));
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_reply(&mut s, T).unwrap(), "221 bye\r\n");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(srv.received(), ["EHLO me", "NOOP", "QUIT"]);
}

#[test]
fn scripted_server_malformed_greeting_and_close() {
    let srv = ScriptedServer::start(Script::new("22O bad\r\n").close_after_greeting()).unwrap();
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"22O bad\r\n");
}

#[test]
fn scripted_server_trickles_a_reply_a_line_at_a_time() {
    let srv = ScriptedServer::start(
        Script::new("220 mx\r\n")
            .reply_trickled(
                "EHLO",
                "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                Duration::from_millis(300),
            )
            .reply_then_close("QUIT", "221 bye\r\n"),
    )
    .unwrap();
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    assert_eq!(read_reply(&mut s, T).unwrap(), "220 mx\r\n");
    s.write_all(b"EHLO me\r\n").unwrap();
    // Read as the bytes come: the reply arrives whole, but not in one piece.
    s.set_read_timeout(Some(T)).unwrap();
    let (mut got, mut reads) = (Vec::new(), 0);
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"250 STARTTLS\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    assert_eq!(got, b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    assert!(reads >= 2, "the three lines came in {reads} read");
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_reply(&mut s, T).unwrap(), "221 bye\r\n");
}
