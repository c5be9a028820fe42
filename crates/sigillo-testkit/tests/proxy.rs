//! The stripping proxy in front of a scripted server and in front of a real Postfix.

mod common;

use std::io::Write;

use common::{T, greet_ehlo};
use sigillo_testkit::{
    AsaConfig, Postfix, Script, ScriptedServer, StripProxy, TestCa, read_reply, require_tools,
};

fn scripted_mx() -> ScriptedServer {
    ScriptedServer::start(
        Script::new("220 mx.example ESMTP\r\n")
            .reply("EHLO", "250-mx.example\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
            .reply("STARTTLS", "220 2.0.0 go ahead\r\n")
            .reply_then_close("QUIT", "221 bye\r\n")
            .unknown("500 5.5.1 unknown command\r\n"),
    )
    .unwrap()
}

#[test]
fn proxy_masks_banner_and_strips_starttls() {
    let mx = scripted_mx();
    let proxy = StripProxy::start(mx.addr()).unwrap();
    let (greeting, ehlo, mut s) = greet_ehlo(proxy.addr());
    assert_eq!(greeting, "220 ****************\r\n");
    assert_eq!(ehlo, "250-mx.example\r\n250-XXXXXXXA\r\n250 8BITMIME\r\n");
    s.write_all(b"STARTTLS\r\n").unwrap();
    assert_eq!(
        read_reply(&mut s, T).unwrap(),
        "500 5.5.1 unknown command\r\n"
    );
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_reply(&mut s, T).unwrap(), "221 bye\r\n");
    assert_eq!(
        mx.received(),
        ["EHLO client.sigillo.test", "XXXXXXXA", "QUIT"]
    );
    assert_eq!(proxy.connections(), 1);
}

#[test]
fn proxy_allow_tls_passes_starttls() {
    let mx = scripted_mx();
    let proxy = StripProxy::start_with(
        mx.addr(),
        AsaConfig {
            strip_starttls: false,
            ..AsaConfig::default()
        },
    )
    .unwrap();
    let (greeting, ehlo, mut s) = greet_ehlo(proxy.addr());
    assert!(greeting.starts_with("220 ****"), "{greeting}");
    assert!(ehlo.contains("250-STARTTLS\r\n"), "{ehlo}");
    s.write_all(b"STARTTLS\r\n").unwrap();
    assert_eq!(read_reply(&mut s, T).unwrap(), "220 2.0.0 go ahead\r\n");
}

#[test]
fn proxy_in_front_of_postfix() {
    require_tools!("postfix");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let pf = Postfix::start_with_tls(&cert).unwrap();
    let proxy = StripProxy::start(pf.addr()).unwrap();
    let (greeting, ehlo, mut s) = greet_ehlo(proxy.addr());
    // "220 mx.sigillo.test ESMTP sigillo-test" with the text masked, same length.
    assert_eq!(
        greeting,
        format!(
            "220 {}\r\n",
            "*".repeat("mx.sigillo.test ESMTP sigillo-test".len())
        )
    );
    assert!(ehlo.contains("250-XXXXXXXA\r\n"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    s.write_all(b"STARTTLS\r\n").unwrap();
    let reply = read_reply(&mut s, T).unwrap();
    assert!(reply.starts_with("500 5.5.2"), "{reply}");
    s.write_all(b"QUIT\r\n").unwrap();
    assert!(read_reply(&mut s, T).unwrap().starts_with("221"));
    // Postfix counts the masked command as unknown.
    let line = pf.wait_for_log("unknown=0/1", T).unwrap();
    assert!(line.contains("ehlo=1"), "{line}");
}
