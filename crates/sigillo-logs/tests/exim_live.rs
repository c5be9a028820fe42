use sigillo_testkit::{Exim, EximOptions, StripProxy, TestCa, require_tools};
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

fn swaks(port: u16, from_ip: &str, tls: bool, n: u32) {
    let mut c = Command::new("swaks");
    c.args([
        "--server",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--local-interface",
        from_ip,
        "--to",
        &format!("user{n}@sigillo.test"),
        "--from",
        "sender@peer.test",
        "--helo",
        &format!("client-{from_ip}"),
        "--silent",
        "2",
    ]);
    if tls {
        c.arg("--tls");
    }
    let st = c.status().unwrap();
    assert!(st.success());
}

#[test]
fn dump() {
    require_tools!("exim4", "swaks");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["exim.sigillo.test"]).unwrap();
    let exim = Exim::start(EximOptions::default().tls(&cert)).unwrap();
    swaks(exim.port(), "127.0.0.2", true, 1);
    swaks(exim.port(), "127.0.0.3", false, 2);
    let proxy = StripProxy::start(exim.addr()).unwrap();
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"EHLO probe.test\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let n = s.read(&mut buf).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"STARTTLS\r\n").unwrap();
    let n = s.read(&mut buf).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"QUIT\r\n").unwrap();
    let n = s.read(&mut buf).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&buf[..n]));
    // TLS then no mail
    let st = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &exim.port().to_string(),
            "--local-interface",
            "127.0.0.4",
            "--tls",
            "--quit-after",
            "TLS",
        ])
        .status()
        .unwrap();
    eprintln!("{st}");
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("{}", exim.log());
}
