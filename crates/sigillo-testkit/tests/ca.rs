//! Certificates from TestCa / self_signed, checked with `openssl verify`, and require_tool.

use std::process::Command;

use sigillo_testkit::{TestCa, require_tool, require_tools, self_signed};

fn verify(ca: &std::path::Path, cert: &std::path::Path, name: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .args(["-verify_hostname", name, "-purpose", "sslserver"])
        .arg(cert)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn issued_certificates_verify_and_expired_ones_dont() {
    require_tools!("openssl");
    let ca = TestCa::new().unwrap();
    let good = ca.issue(&["mx.lab.test", "127.0.0.1"]).unwrap();
    let (ok, out) = verify(ca.ca_pem(), &good.cert_pem, "mx.lab.test");
    assert!(ok, "{out}");
    let (ok, out) = verify(ca.ca_pem(), &good.cert_pem, "other.lab.test");
    assert!(!ok, "wrong name must fail: {out}");
    let chain = std::fs::read_to_string(&good.chain_pem).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(
        std::fs::read_to_string(&good.key_pem)
            .unwrap()
            .contains("PRIVATE KEY")
    );

    let expired = ca.issue_expired(&["mx.lab.test"]).unwrap();
    let (ok, out) = verify(ca.ca_pem(), &expired.cert_pem, "mx.lab.test");
    assert!(!ok && out.contains("expired"), "{out}");

    let future = ca.issue_with_validity(&["mx.lab.test"], 1, 30).unwrap();
    let (ok, out) = verify(ca.ca_pem(), &future.cert_pem, "mx.lab.test");
    assert!(!ok && out.contains("not yet valid"), "{out}");

    let ss = self_signed(&["self.lab.test"]).unwrap();
    let (ok, out) = verify(&ss.ca_pem, &ss.cert_pem, "self.lab.test");
    assert!(ok, "{out}");
    let (ok, _) = verify(ca.ca_pem(), &ss.cert_pem, "self.lab.test");
    assert!(!ok, "self-signed must not verify against the test CA");
}

#[test]
fn require_tool_finds_and_misses() {
    assert!(require_tool("sh"));
    // A missing tool returns false locally, and panics under CI.
    let missing = std::panic::catch_unwind(|| require_tool("sigillo-no-such-tool-xyz"));
    let under_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    match missing {
        Ok(found) => {
            assert!(!under_ci, "must panic under CI");
            assert!(!found);
        }
        Err(_) => assert!(under_ci, "must not panic outside CI"),
    }
}
