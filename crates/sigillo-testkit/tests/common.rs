//! Helpers shared by the testkit's own integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use sigillo_testkit::read_reply;

pub const T: Duration = Duration::from_secs(10);

/// Connect, read the greeting, send EHLO, return (greeting, ehlo reply, stream).
pub fn greet_ehlo(addr: SocketAddr) -> (String, String, TcpStream) {
    let mut s = TcpStream::connect_timeout(&addr, T).expect("connect");
    let greeting = read_reply(&mut s, T).expect("greeting");
    s.write_all(b"EHLO client.sigillo.test\r\n")
        .expect("write EHLO");
    let ehlo = read_reply(&mut s, T).expect("EHLO reply");
    (greeting, ehlo, s)
}

/// `openssl s_client -starttls smtp` against addr; returns (success, combined output).
pub fn s_client(addr: SocketAddr, ca: &std::path::Path, name: &str) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg("openssl")
        .args(["s_client", "-brief", "-starttls", "smtp", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca)
        .args([
            "-verify_return_error",
            "-verify_hostname",
            name,
            "-servername",
            name,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (text.contains("CONNECTION ESTABLISHED"), text)
}

/// Runs swaks against 127.0.0.1:`port` with `args`; returns (success, its output).
pub fn swaks(port: u16, args: &[&str]) -> (bool, String) {
    sigillo_testkit::swaks(([127, 0, 0, 1], port).into(), args).expect("run swaks")
}

/// [`swaks`], which must succeed.
pub fn swaks_ok(port: u16, args: &[&str]) {
    sigillo_testkit::swaks_ok(([127, 0, 0, 1], port).into(), args).expect("swaks");
}
