//! `sigillo report` end to end: real Postfix and Exim instances receive a known number of
//! messages from swaks, with and without STARTTLS, from several loopback source addresses;
//! the report over their logs must give exactly those counts and shares, per peer.

use serde_json::Value;
use sigillo_testkit::{Exim, EximOptions, Postfix, PostfixOptions, TestCa, require_tools};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn swaks(port: u16, domain: &str, from_ip: &str, tls: bool, n: u32) {
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &format!("127.0.0.1:{port}"),
        "--local-interface",
        from_ip,
    ])
    .args(["--to", &format!("user@{domain}")])
    .args(["--from", &format!("sender{n}@peer.sender.test")])
    .args(["--helo", "peer.sender.test", "--timeout", "20"])
    .stdin(Stdio::null());
    if tls {
        cmd.arg("--tls");
    }
    let out = cmd.output().expect("run swaks");
    assert!(
        out.status.success(),
        "swaks from {from_ip} (tls={tls}) failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Waits until `count` lines of the log contain `needle`.
fn wait_lines(path: &Path, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let n = log.lines().filter(|l| l.contains(needle)).count();
        if n >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {count} {needle:?} lines in {}:\n{log}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .arg("report")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sigillo report");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), doc, stderr)
}

/// (messages, tls_messages) of the inbound peer with this IP.
fn peer(doc: &Value, ip: &str) -> (u64, u64) {
    let p = doc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ip"] == ip && p["direction"] == "inbound")
        .unwrap_or_else(|| panic!("no inbound peer {ip} in {:#}", doc["peers"]));
    (
        p["messages"].as_u64().unwrap(),
        p["tls_messages"].as_u64().unwrap(),
    )
}

#[test]
fn postfix_and_exim_logs_give_exact_counts_per_peer() {
    require_tools!("postfix", "exim4", "swaks");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let postfix = Postfix::start(PostfixOptions::default().tls(&cert)).unwrap();
    let exim = Exim::start(EximOptions::default().tls(&cert)).unwrap();
    let pf_domain = postfix.options().domain.clone();
    // Postfix: 127.0.0.2 sends 3 over TLS; 127.0.0.3 sends 2 in clear; 127.0.0.4 1 TLS + 1 clear.
    let plan = [
        ("127.0.0.2", true, 3),
        ("127.0.0.3", false, 2),
        ("127.0.0.4", true, 1),
        ("127.0.0.4", false, 1),
    ];
    let mut sent = 0;
    for (ip, tls, n) in plan {
        for i in 0..n {
            swaks(postfix.port(), &pf_domain, ip, tls, i);
            sent += 1;
        }
    }
    // Exim: 127.0.0.5 sends 2 over TLS, 127.0.0.6 sends 1 in clear.
    let exim_domain = "sigillo.test";
    for (ip, tls, n) in [("127.0.0.5", true, 2), ("127.0.0.6", false, 1)] {
        for i in 0..n {
            swaks(exim.port(), exim_domain, ip, tls, i);
        }
    }
    wait_lines(&postfix.log_path(), "from=<sender", sent);
    wait_lines(&exim.log_path(), " <= sender", 3);

    let pf_log = postfix.log_path();
    let exim_log = exim.log_path();
    let (code, doc, stderr) = report(&[
        "--json",
        pf_log.to_str().unwrap(),
        exim_log.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let formats: Vec<&str> = doc["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["postfix", "exim"]);
    assert_eq!(peer(&doc, "127.0.0.2"), (3, 3));
    assert_eq!(peer(&doc, "127.0.0.3"), (2, 0));
    assert_eq!(peer(&doc, "127.0.0.4"), (2, 1));
    assert_eq!(peer(&doc, "127.0.0.5"), (2, 2));
    assert_eq!(peer(&doc, "127.0.0.6"), (1, 0));
    let inbound = &doc["inbound"];
    assert_eq!(inbound["messages"], 10, "{inbound:#}");
    assert_eq!(inbound["tls_messages"], 6);
    assert_eq!(inbound["tls_share"], 0.6);
    assert_eq!(inbound["tls"]["versions"]["TLSv1.3"], 6, "{inbound:#}");
    // The harness's readiness probes (from 127.0.0.1) are internal, never plaintext mail.
    assert!(
        doc["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["ip"] != "127.0.0.1")
    );
    // 127.0.0.4 used TLS, then sent in clear: a downgrade with its first and last message.
    let downgrades = doc["downgrades"].as_array().unwrap();
    assert_eq!(downgrades.len(), 1, "{downgrades:#?}");
    assert_eq!(downgrades[0]["ip"], "127.0.0.4");
    assert_eq!(downgrades[0]["plain_messages"], 1);
    assert_eq!(downgrades[0]["tls_resumed"], false);

    // The same logs through the other outputs.
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let csv = dir.path().join("csv");
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .args([
            "report",
            "--html",
            html.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ])
        .args([&pf_log, &exim_log])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inbound") && text.contains("60.0%"), "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("60"), "html report");
    let peers_csv = std::fs::read_to_string(csv.join("peers.csv")).unwrap();
    assert!(
        peers_csv.lines().any(|l| l.contains("127.0.0.3")),
        "{peers_csv}"
    );
    assert!(csv.join("daily.csv").exists() && csv.join("hourly.csv").exists());
    let hops = std::fs::read_to_string(csv.join("next_hops.csv")).unwrap();
    assert!(
        hops.starts_with("domain,messages,tls_messages,trusted_tls_messages,"),
        "{hops}"
    );
}

#[test]
fn bad_input_is_reported_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let good = "Nov 22 13:24:13 mx postfix/smtpd[27642]: connect from unknown[192.0.2.7]\n\
                Nov 22 13:24:13 mx postfix/smtpd[27642]: Anonymous TLS connection established from unknown[192.0.2.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
                Nov 22 13:24:13 mx postfix/smtpd[27642]: 4B6A19AC1C8: client=unknown[192.0.2.7]\n\
                Nov 22 13:24:13 mx postfix/qmgr[27621]: 4B6A19AC1C8: from=<a@example.org>, size=630, nrcpt=1 (queue active)\n\
                Nov 22 13:24:13 mx postfix/smtpd[27642]: disconnect from unknown[192.0.2.7] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7\n";
    let log = dir.path().join("mail.log");
    let mut bytes = good.as_bytes().to_vec();
    bytes.extend_from_slice(b"\xff\xfe garbage \x00\x01 binary\n");
    bytes.extend_from_slice(b"this is not a log line at all\n");
    std::fs::write(&log, &bytes).unwrap();
    // A truncated .gz of the same good lines.
    let gz = dir.path().join("mail.log.1.gz");
    let mut enc = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(enc.stdin.as_mut().unwrap(), good.repeat(50).as_bytes()).unwrap();
    let full = enc.wait_with_output().unwrap().stdout;
    std::fs::write(&gz, &full[..full.len() / 2]).unwrap();
    let (code, doc, stderr) = report(&[
        "--json",
        "--format",
        "postfix",
        log.to_str().unwrap(),
        gz.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let inputs = doc["inputs"].as_array().unwrap();
    let plain = inputs
        .iter()
        .find(|i| i["source"].as_str().unwrap().ends_with("mail.log"))
        .unwrap();
    assert_eq!(plain["bad_lines"], 2, "{plain:#}");
    assert!(
        stderr.contains("mail.log:6") && stderr.contains("mail.log:7"),
        "{stderr}"
    );
    let truncated = inputs
        .iter()
        .find(|i| i["source"].as_str().unwrap().ends_with(".gz"))
        .unwrap();
    assert!(
        truncated["errors"].to_string().contains("truncated"),
        "{truncated:#}"
    );
    assert!(
        doc["inbound"]["messages"].as_u64().unwrap() >= 1,
        "the good lines still count"
    );
    // A path that is not there and a file that cannot be read (as root, /proc/self/mem
    // opens but fails at its first byte) are reported in the same place, not as inputs.
    let missing = dir.path().join("mail.log.2.gz");
    let (code, doc, stderr) = report(&[
        "--json",
        log.to_str().unwrap(),
        missing.to_str().unwrap(),
        "/proc/self/mem",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let errors = doc["input_errors"].to_string();
    assert!(
        errors.contains("mail.log.2.gz: cannot read")
            && errors.contains("/proc/self/mem: cannot read"),
        "{errors}"
    );
    let sources: Vec<&str> = (doc["inputs"].as_array().unwrap().iter())
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, [log.to_str().unwrap()], "{stderr}");
    assert_eq!(stderr.matches("cannot read").count(), 2, "{stderr}");
    // Nothing readable at all: exit 2.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, [0u8, 159, 146, 150, 0, 0, 1]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .args(["report", "--json"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn iso_and_journald_timestamps_give_the_same_figures() {
    // A log written by a real Postfix 3.7 (RFC 3164 timestamps), rewritten as rsyslog's
    // RFC 3339 format and as journald's short-iso: the figures must not change.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sigillo-logs/testdata/postfix/real-3.7-tls-and-plain.log"
    );
    let original = std::fs::read_to_string(fixture).unwrap();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rewrite = |iso: &dyn Fn(u32, u32, &str) -> String| -> String {
        original
            .lines()
            .map(|line| {
                let (Some(month), Some(day), Some(time)) = (
                    months.iter().position(|m| line.starts_with(m)),
                    line.get(4..6).and_then(|d| d.trim().parse::<u32>().ok()),
                    line.get(7..15),
                ) else {
                    return line.to_owned();
                };
                format!("{}{}\n", iso(month as u32 + 1, day, time), &line[15..])
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let rfc3339 = dir.path().join("rfc3339.log");
    std::fs::write(
        &rfc3339,
        rewrite(&|m, d, t| format!("2026-{m:02}-{d:02}T{t}.123456+00:00")),
    )
    .unwrap();
    let journald = dir.path().join("journald.log");
    std::fs::write(
        &journald,
        rewrite(&|m, d, t| format!("2026-{m:02}-{d:02}T{t}+0000")),
    )
    .unwrap();
    let (_, base, _) = report(&["--json", "--year", "2026", fixture]);
    assert!(
        base["inbound"]["messages"].as_u64().unwrap() > 0,
        "{:#}",
        base["inbound"]
    );
    for path in [&rfc3339, &journald] {
        let (code, doc, stderr) = report(&["--json", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(doc["inputs"][0]["bad_lines"], 0, "{stderr}");
        for key in ["inbound", "outbound", "daily", "peers", "first", "last"] {
            assert_eq!(doc[key], base[key], "{key} differs for {}", path.display());
        }
    }
}

/// A peer's TLS session on one day (`mail.log.1`) and a plaintext one the next (`mail.log`).
fn rotated_downgrade(dir: &Path) {
    let session = |day: u32, qid: &str, tls: bool| {
        let peer = "peer.example[192.0.2.7]";
        let mut s = format!("Nov {day} 10:00:00 mx postfix/smtpd[100]: connect from {peer}\n");
        if tls {
            s += &format!(
                "Nov {day} 10:00:00 mx postfix/smtpd[100]: Anonymous TLS connection established \
                 from {peer}: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
            );
        }
        s += &format!(
            "Nov {day} 10:00:00 mx postfix/smtpd[100]: {qid}: client={peer}\n\
             Nov {day} 10:00:00 mx postfix/qmgr[9]: {qid}: from=<a@peer.example>, size=100, nrcpt=1 (queue active)\n\
             Nov {day} 10:00:01 mx postfix/smtpd[100]: disconnect from {peer} ehlo={} {}mail=1 rcpt=1 data=1 quit=1 commands={}\n",
            if tls { 2 } else { 1 },
            if tls { "starttls=1 " } else { "" },
            if tls { 7 } else { 5 },
        );
        s
    };
    std::fs::write(dir.join("mail.log.1"), session(21, "AAAA1", true)).unwrap();
    std::fs::write(dir.join("mail.log"), session(22, "BBBB1", false)).unwrap();
}

#[test]
fn rotated_files_named_newest_first_are_read_oldest_first() {
    // `sigillo report /var/log/mail.log*`: the shell gives mail.log before mail.log.1. The
    // downgrade (TLS on the 21st, plaintext on the 22nd) must be found as from the directory.
    let dir = tempfile::tempdir().unwrap();
    rotated_downgrade(dir.path());
    let newest_first = [dir.path().join("mail.log"), dir.path().join("mail.log.1")];
    let newest_first: Vec<&str> = newest_first.iter().map(|p| p.to_str().unwrap()).collect();
    let (code, from_dir, stderr) =
        report(&["--json", "--year", "2026", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let downgrades = from_dir["downgrades"].as_array().unwrap();
    assert_eq!(downgrades.len(), 1, "{:#}", from_dir["downgrades"]);
    let mut args = vec!["--json", "--year", "2026"];
    args.extend(&newest_first);
    let (code, named, stderr) = report(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(named["downgrades"], from_dir["downgrades"]);
    assert_eq!(named["inbound"], from_dir["inbound"]);

    // The same file twice (and through a symlink) is read once, with a note.
    // (A name that sorts after the log's: a symlink sorted first would be read first, and
    // the file it points to, met again later, dropped.)
    std::os::unix::fs::symlink(dir.path().join("mail.log"), dir.path().join("zz-link")).unwrap();
    let link = dir.path().join("zz-link");
    args.push(link.to_str().unwrap());
    args.push(newest_first[1]);
    let (code, twice, stderr) = report(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(twice["inbound"], from_dir["inbound"], "{stderr}");
    assert_eq!(
        twice["input_errors"].as_array().unwrap().len(),
        2,
        "{stderr}"
    );
    assert!(stderr.contains("it is the same file as"), "{stderr}");
    assert!(!stderr.contains("time order"), "{stderr}");
    assert_eq!(named["inputs"][0]["first"], "2026-11-21T10:00:00Z");
    assert_eq!(named["inputs"][1]["last"], "2026-11-22T10:00:01Z");

    // Names that do not sort by age, newest first: everything is counted, and a note says
    // the files are out of order. The downgrade is still found here, since the newer file's
    // last messages are held back (two hours of log time) when the older file's arrive; over
    // a longer file it would be found only from those last messages on.
    std::fs::rename(dir.path().join("mail.log"), dir.path().join("today.log")).unwrap();
    std::fs::rename(
        dir.path().join("mail.log.1"),
        dir.path().join("yesterday.log"),
    )
    .unwrap();
    let today = dir.path().join("today.log");
    let yesterday = dir.path().join("yesterday.log");
    let (code, unsorted, stderr) = report(&[
        "--json",
        "--year",
        "2026",
        today.to_str().unwrap(),
        yesterday.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(unsorted["inbound"], from_dir["inbound"]);
    assert_eq!(unsorted["downgrades"], from_dir["downgrades"]);
    let note = format!(
        "{}: starts at 2026-11-21T10:00:00Z, before {} ends (2026-11-22T10:00:01Z)",
        yesterday.display(),
        today.display()
    );
    assert!(stderr.contains(&note), "{stderr}");
    assert_eq!(unsorted["input_errors"].as_array().unwrap().len(), 1);
}

#[test]
fn the_time_window_and_year_are_checked() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sigillo-logs/testdata/postfix/real-3.7-tls-and-plain.log"
    );
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
            .arg("report")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run sigillo report");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A time without a zone is UTC, as log times without one are; it is not cut to midnight.
    let (_, zoned, _) = report(&[
        "--json",
        "--year",
        "2026",
        "--since",
        "2026-11-22T14:50:00Z",
        fixture,
    ]);
    let (_, civil, _) = report(&[
        "--json",
        "--year",
        "2026",
        "--since",
        "2026-11-22T14:50:00",
        fixture,
    ]);
    let (_, day, _) = report(&["--json", "--year", "2026", "--since", "2026-11-22", fixture]);
    assert!(
        zoned["outside_window"].as_u64().unwrap() > 0,
        "{:#}",
        zoned["outside_window"]
    );
    assert_eq!(civil["outside_window"], zoned["outside_window"]);
    assert_eq!(civil["inbound"], zoned["inbound"]);
    assert_ne!(day["inbound"], zoned["inbound"]);

    for (args, needle) in [
        (
            &["--since", "2026-11-22", "--until", "2026-11-21"][..],
            "must be later than --since",
        ),
        (
            &["--since", "2026-11-22", "--until", "2026-11-22"][..],
            "must be later than --since",
        ),
        (&["--year", "99999"][..], "--year"),
        (&["--year=-1"][..], "--year"),
        (&["--since", "yesterday"][..], "expected YYYY-MM-DD"),
    ] {
        let mut all = args.to_vec();
        all.push(fixture);
        let (code, stderr) = run(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn top_zero_lists_no_plaintext_peers() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sigillo-logs/testdata/postfix/real-3.7-tls-and-plain.log"
    );
    let (_, listed, _) = report(&["--json", "--year", "2026", fixture]);
    assert!(!listed["top_plaintext"].as_array().unwrap().is_empty());
    let (code, none, stderr) = report(&["--json", "--year", "2026", "--top", "0", fixture]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(none["top_plaintext"], serde_json::json!([]));
    assert_eq!(none["inbound"], listed["inbound"]);
}

/// (inbound messages, inbound TLS, outbound messages, outbound TLS) of a report.
fn totals(doc: &Value) -> [u64; 4] {
    let n = |dir: &str, key: &str| doc[dir][key].as_u64().unwrap();
    [
        n("inbound", "messages"),
        n("inbound", "tls_messages"),
        n("outbound", "messages"),
        n("outbound", "tls_messages"),
    ]
}

#[test]
fn a_log_written_by_two_mtas_is_read_whole() {
    // The day an MTA replaces another, mail.log holds both: each line goes to the parser of
    // the MTA that tagged it, whatever the file was detected as.
    let dir = tempfile::tempdir().unwrap();
    let fixture = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sigillo-logs/testdata/input")
            .join(name);
        (
            path.to_str().unwrap().to_owned(),
            std::fs::read(&path).unwrap(),
        )
    };
    let mut alone = std::collections::BTreeMap::new();
    for name in [
        "postfix.log",
        "sendmail.log",
        "opensmtpd.log",
        "../exim/mainlog-openssl.log",
    ] {
        let (path, _) = fixture(name);
        let (code, doc, stderr) = report(&["--json", "--year", "2026", &path]);
        assert_eq!(code, 0, "{stderr}");
        let got = totals(&doc);
        assert!(got[0] + got[2] > 0, "{name} alone counts mail: {got:?}");
        alone.insert(name, got);
    }
    let sum = |parts: &[(&str, u64)]| {
        let mut out = [0; 4];
        for (name, times) in parts {
            for (o, n) in out.iter_mut().zip(alone[name]) {
                *o += n * times;
            }
        }
        out
    };
    for (parts, format, others) in [
        (
            &[
                ("postfix.log", 3),
                ("sendmail.log", 1),
                ("opensmtpd.log", 1),
                ("../exim/mainlog-openssl.log", 1),
            ][..],
            "postfix",
            serde_json::json!({"exim": 26, "opensmtpd": 4, "sendmail": 4}),
        ),
        (
            &[("../exim/mainlog-openssl.log", 1), ("postfix.log", 1)][..],
            "exim",
            serde_json::json!({"postfix": 16}),
        ),
    ] {
        let mut data = Vec::new();
        for (name, times) in parts {
            for _ in 0..*times {
                data.extend(fixture(name).1);
            }
        }
        let path = dir.path().join(format!("{format}-and-others.log"));
        std::fs::write(&path, data).unwrap();
        let (code, doc, stderr) = report(&["--json", "--year", "2026", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        let input = &doc["inputs"][0];
        assert_eq!(input["format"], format, "{input:#}");
        assert_eq!(input["other_mta_lines"], others, "{input:#}");
        assert_eq!(totals(&doc), sum(parts), "{parts:?}");
        assert!(
            stderr.contains(&format!("a {format} log with lines of another MTA in it")),
            "{stderr}"
        );
    }
}

/// `tests/testdata/report/relayhost-multi-domain.log` (its README): a relay host takes
/// transactions that carry several next-hop domains, one `to=` line a recipient. Each domain's
/// figures count every transaction that delivered to it, with the relay among its relays;
/// `relays` counts each transaction once for the relay; and `next_hops`, `next_hops_omitted`,
/// `relays` and `relays_omitted` are exactly those of the `.json` beside the log.
#[test]
fn a_transaction_of_several_domains_counts_for_each_with_its_relay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/report");
    let log = dir.join("relayhost-multi-domain.log");
    let (code, doc, stderr) = report(&["--json", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("relayhost-multi-domain.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        doc["next_hops"], want["next_hops"],
        "{:#}",
        doc["next_hops"]
    );
    assert_eq!(doc["next_hops_omitted"], want["next_hops_omitted"]);
    assert_eq!(doc["relays"], want["relays"], "{:#}", doc["relays"]);
    assert_eq!(doc["relays_omitted"], want["relays_omitted"]);
    // The relay's transactions: the five delivered, each once, one in clear.
    assert_eq!(
        (
            &doc["relays"][0]["messages"],
            &doc["relays"][0]["plain_messages"],
            &doc["relays"][0]["domains"]
        ),
        (&Value::from(5), &Value::from(1), &Value::from(5))
    );
    // Five delivered transactions (and one deferred attempt); nine per-domain messages.
    assert_eq!(doc["outbound"]["messages"], 5);
    assert_eq!(doc["outbound"]["deferred"], 1);
    let per_domain: u64 = doc["next_hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(per_domain, 9);
}

/// `tests/testdata/report/mx-many-hosts.log` (its README): a domain whose mail went to five
/// MX hosts counts for each of them in `relays[].domains`, the fifth too, which its own
/// `relays.hosts` (the first 4) leaves out; the figures are exactly those of the `.json`.
#[test]
fn a_domain_with_five_relays_counts_for_each_of_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/report");
    let log = dir.join("mx-many-hosts.log");
    let (code, doc, stderr) = report(&["--json", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mx-many-hosts.json")).unwrap())
            .unwrap();
    for key in ["next_hops", "next_hops_omitted", "relays", "relays_omitted"] {
        assert_eq!(doc[key], want[key], "{key}: {:#}", doc[key]);
    }
    let mx5 = doc["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "mx5.big.example")
        .expect("mx5 is a relay");
    assert_eq!(
        (&mx5["messages"], &mx5["domains"]),
        (&Value::from(2), &Value::from(2))
    );
}

/// A generated Postfix log: wide.example's mail goes to 33 MX hosts, `mx00` to `mx32`, the
/// first under two spellings (`MX00.wide.example`, then `mx00.wide.example`), and
/// narrow.example's to `mx32` alone. Each domain remembers its first 32 relays for
/// `relays[].domains`, spellings of one relay taking one place: every host but `mx32` counts
/// wide.example, `mx32` only narrow.example, and `next_hops_over_relay_cap` says one domain
/// passed the cap.
#[test]
fn a_domain_past_the_relay_cap_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("wide.log");
    let mut text = String::new();
    let mut deliver = |n: usize, domain: &str, host: &str| {
        text.push_str(&format!(
            "2026-12-03T09:{m:02}:{s:02}+00:00 mx postfix/smtp[{pid}]: 7F{n:08X}: \
             to=<u{n}@{domain}>, relay={host}[192.0.2.{ip}]:25, delay=0.5, \
             delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)\n",
            m = n / 60,
            s = n % 60,
            pid = 7000 + n,
            ip = 10 + n,
        ));
    };
    deliver(0, "wide.example", "MX00.wide.example");
    for i in 0..=32 {
        deliver(i + 1, "wide.example", &format!("mx{i:02}.wide.example"));
    }
    deliver(34, "narrow.example", "mx32.wide.example");
    std::fs::write(&log, text).unwrap();
    let (code, doc, stderr) = report(&["--json", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let relay = |host: &str| {
        doc["relays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == host)
            .map(|r| {
                (
                    r["messages"].as_u64().unwrap(),
                    r["domains"].as_u64().unwrap(),
                )
            })
    };
    for (host, want) in [
        ("mx00.wide.example", (2, 1)),
        ("mx31.wide.example", (1, 1)),
        ("mx32.wide.example", (2, 1)),
    ] {
        assert_eq!(relay(host), Some(want), "{host}");
    }
    assert_eq!(doc["next_hops_over_relay_cap"], 1);
}
