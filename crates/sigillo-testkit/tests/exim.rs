//! Private Exim instances: TLS (GnuTLS) and no TLS, delivery into the maildir.

mod common;

use common::{T, greet_ehlo, s_client, swaks, swaks_ok};
use sigillo_testkit::{Exim, EximOptions, TestCa, require_tools};

#[test]
fn exim_with_tls_negotiates_starttls() {
    require_tools!("exim4", "openssl");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["exim.sigillo.test"]).unwrap();
    let exim = Exim::start_with_tls(&cert).unwrap();
    let (greeting, ehlo, _s) = greet_ehlo(exim.addr());
    assert!(
        greeting.starts_with("220 exim.sigillo.test ESMTP"),
        "{greeting}"
    );
    assert!(ehlo.contains("250-STARTTLS\r\n"), "{ehlo}");
    let (ok, out) = s_client(exim.addr(), ca.ca_pem(), "exim.sigillo.test");
    assert!(ok, "openssl s_client failed:\n{out}");
    assert!(out.contains("Verification: OK"), "{out}");
    // GnuTLS cipher names in the log, thanks to +tls_cipher / +smtp_no_mail.
    let line = exim.wait_for_log(" X=TLS1.3:", T).unwrap();
    assert!(line.contains("no MAIL in SMTP connection"), "{line}");
}

#[test]
fn exim_without_tls_and_delivery() {
    require_tools!("exim4", "swaks");
    let exim = Exim::start(EximOptions::default().hostname("plain.sigillo.test")).unwrap();
    let (greeting, ehlo, _s) = greet_ehlo(exim.addr());
    assert!(greeting.starts_with("220 plain.sigillo.test"), "{greeting}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    swaks_ok(
        exim.port(),
        &["--to", "someone@sigillo.test", "--from", "a@client.test"],
    );
    exim.wait_for_log("=> someone <someone@sigillo.test>", T)
        .unwrap();
    let new = std::fs::read_dir(exim.mailbox_dir().join("new"))
        .unwrap()
        .count();
    assert_eq!(new, 1);
    let (_, text) = swaks(exim.port(), &["--to", "x@example.com"]);
    assert!(text.contains("<** 550"), "{text}");
}

#[test]
fn two_exims_at_once() {
    require_tools!("exim4");
    let a = Exim::start_plain().unwrap();
    let b = Exim::start_plain().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.config_path(), b.config_path());
    let (ga, _, _s1) = greet_ehlo(a.addr());
    let (gb, _, _s2) = greet_ehlo(b.addr());
    assert!(ga.starts_with("220 ") && gb.starts_with("220 "));
    let slot = a.config_path().unwrap().to_path_buf();
    drop(a);
    assert!(!slot.exists(), "slot released");
}

#[test]
fn exim_relays_along_a_route_and_reuses_the_connection() {
    require_tools!("exim4", "swaks");
    let receiver = Exim::start(EximOptions::default().domain("remote.test")).unwrap();
    let sender = Exim::start(
        EximOptions::default()
            .hostname("sender.sigillo.test")
            .route("remote.test", receiver.addr())
            .queue_interval(std::time::Duration::from_secs(3600))
            .main_line("queue_smtp_domains = *"),
    )
    .unwrap();
    for to in ["one@remote.test", "two@remote.test"] {
        swaks_ok(sender.port(), &["--to", to, "--from", "a@sigillo.test"]);
    }
    // Routed at reception, delivered by the queue run: the second message goes down the
    // first one's connection.
    sender.wait_for_log("== two@remote.test", T).unwrap();
    sender.run_queue().unwrap();
    let reused = sender.wait_for_log("H=127.0.0.1 [127.0.0.1]* ", T).unwrap();
    assert!(reused.contains(" => "), "{reused}");
    let closed = "SMTP connection from (sender.sigillo.test) [127.0.0.1] closed by QUIT";
    receiver.wait_for_log(closed, T).unwrap();
    let sessions = receiver.log().matches(closed).count();
    assert_eq!(sessions, 1, "{}", receiver.log());
}
