//! The `sigillo report --html` page in a real browser: headless Chromium renders a realistic
//! page to a PNG and dumps its DOM, which must hold the charts and the headline shares.
//!
//! The renderer is a private module of the binary, so it is compiled into this test by path
//! (its own unit tests then run here a second time; they are quick).
//!
//! Set `SIGILLO_HTML_SCREENSHOT=/some/dir` to keep the page and its screenshot there.

#[allow(dead_code)]
#[path = "../src/report_html.rs"]
mod report_html;

use report_html::{HtmlMeta, InputSummary, render, sample};
use sigillo_testkit::require_tools;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium's own limit; a hang fails the test instead of stalling CI.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

fn meta() -> HtmlMeta {
    HtmlMeta {
        title: "Mail TLS report for mx.example.org".into(),
        generated_at: "2026-11-23T08:00:00Z".into(),
        inputs: vec![
            InputSummary {
                path: "/var/log/mail.log".into(),
                lines: 1_204_332,
                bad_lines: 0,
            },
            InputSummary {
                path: "/var/log/mail.log.1.gz".into(),
                lines: 1_876_001,
                bad_lines: 2,
            },
        ],
        advice: vec![],
        input_notes: vec![],
    }
}

/// Runs headless Chromium (as Debian packages it, as root) with `args` then `url`; returns
/// its stdout.
fn chromium(profile: &Path, args: &[String], url: &str) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(_) => break,
            None if started.elapsed() > CHROMIUM_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let output = child.wait_with_output().expect("chromium output");
    assert!(
        output.status.success(),
        "chromium failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A share as the page shows it: one decimal, none for whole numbers (`69.1%`, `75%`).
fn shown(share: f64) -> String {
    let text = format!("{:.1}", share * 100.0);
    format!("{}%", text.strip_suffix(".0").unwrap_or(&text))
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(..8)? != b"\x89PNG\r\n\x1a\n" || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |r: std::ops::Range<usize>| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(r)?.try_into().ok()?))
    };
    Some((be(16..20)?, be(20..24)?))
}

struct Rendered {
    png: Vec<u8>,
    dom: String,
    _dir: tempfile::TempDir,
}

fn render_in_chromium(page: &str, name: &str, height: u32) -> Rendered {
    let dir = tempfile::tempdir().expect("temp dir");
    let html = dir.path().join(format!("{name}.html"));
    let png = dir.path().join(format!("{name}.png"));
    std::fs::write(&html, page).expect("write page");
    let url = format!("file://{}", html.display());
    chromium(
        &dir.path().join("profile-shot"),
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size=1280,{height}"),
        ],
        &url,
    );
    let dom = chromium(
        &dir.path().join("profile-dom"),
        &["--dump-dom".to_owned()],
        &url,
    );
    let png_bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    if let Some(keep) = std::env::var_os("SIGILLO_HTML_SCREENSHOT") {
        let keep = PathBuf::from(keep);
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&html, keep.join(format!("{name}.html")));
        let _ = std::fs::copy(&png, keep.join(format!("{name}.png")));
    }
    Rendered {
        png: png_bytes,
        dom,
        _dir: dir,
    }
}

#[test]
fn realistic_report_renders_in_headless_chromium() {
    require_tools!("chromium");
    let figures = sample::figures();
    let page = render(&figures, &meta());
    let r = render_in_chromium(&page, "week", 2000);

    assert_eq!(png_size(&r.png), Some((1280, 2000)), "a 1280×2000 PNG");
    assert!(
        r.png.len() > 60 * 1024,
        "the screenshot is not a blank page: {} bytes",
        r.png.len()
    );

    // The browser parsed our charts as SVG elements, with their data.
    for needle in [
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"chart-share\"",
        "id=\"series-inbound\"",
        "id=\"series-outbound\"",
        "id=\"chart-versions\"",
        "id=\"chart-trust\"",
        "id=\"chart-kx\"",
        "id=\"chart-ciphers\"",
        "id=\"chart-plaintext-inbound\"",
        "<circle",
        "<rect",
        "<path",
    ] {
        assert!(r.dom.contains(needle), "DOM lacks {needle}");
    }
    let svgs = r.dom.matches("<svg").count();
    assert!(svgs >= 7, "{svgs} SVG charts in the DOM");

    // The headline shares, as computed by the aggregator.
    let inbound = format!("id=\"inbound-share\">{}<", shown(figures.inbound.tls_share));
    let outbound = format!(
        "id=\"outbound-share\">{}<",
        shown(figures.outbound.tls_share)
    );
    assert!(r.dom.contains(&inbound), "DOM lacks {inbound}");
    assert!(r.dom.contains(&outbound), "DOM lacks {outbound}");

    // Hostile input stayed text: no element was made from it.
    assert!(!r.dom.contains("<script"), "a script element appeared");
    assert!(!r.dom.contains("<img"), "an img element appeared");
    assert!(r.dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn empty_report_renders_in_headless_chromium() {
    require_tools!("chromium");
    let page = render(&sample::empty(), &meta());
    let r = render_in_chromium(&page, "empty", 900);
    assert_eq!(png_size(&r.png), Some((1280, 900)));
    assert!(r.png.len() > 10 * 1024, "{} bytes", r.png.len());
    assert!(r.dom.contains("No mail found in these logs"));
    assert!(r.dom.contains("id=\"inbound-share\">–<"));
}

#[test]
fn short_report_charts_hours_in_headless_chromium() {
    require_tools!("chromium");
    let figures = sample::two_days();
    let page = render(&figures, &meta());
    let r = render_in_chromium(&page, "hours", 1400);
    assert_eq!(png_size(&r.png), Some((1280, 1400)));
    assert!(r.png.len() > 40 * 1024, "{} bytes", r.png.len());
    assert!(r.dom.contains("TLS share per hour"));
    assert!(r.dom.contains("id=\"series-inbound\""));
    let dots = r.dom.matches("<circle").count();
    assert!(
        dots >= figures.hourly.len(),
        "{dots} points for {} hours",
        figures.hourly.len()
    );
    let inbound = format!("id=\"inbound-share\">{}<", shown(figures.inbound.tls_share));
    assert!(r.dom.contains(&inbound), "DOM lacks {inbound}");
}
