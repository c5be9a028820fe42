//! `sigillo policy build` end to end, on fixture logs with known outbound TLS and plaintext
//! deliveries per domain (tests/testdata/policy-build, described in its README): the exact
//! pin files, dry-run counts, `--from-report` giving what the logs give, and the Postfix map
//! read by Postfix's own `postmap`.

mod run;

use serde_json::{Value, json};
use sigillo_testkit::require_tools;
use std::path::{Path, PathBuf};
use std::process::Command;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/policy-build")
}

/// The two fixture logs, as arguments.
fn logs() -> Vec<String> {
    ["postfix.log", "exim.log"]
        .iter()
        .map(|f| testdata().join(f).display().to_string())
        .collect()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

fn sigillo(args: &[&str], stdin: Option<&str>) -> Run {
    let (code, stdout, stderr) = run::sigillo(args, stdin);
    Run {
        code,
        stdout,
        stderr,
    }
}

/// `policy build LOGS… EXTRA…`.
fn build(extra: &[&str]) -> Run {
    let logs = logs();
    let mut args: Vec<&str> = vec!["policy", "build"];
    args.extend(logs.iter().map(String::as_str));
    args.extend(extra);
    sigillo(&args, None)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn writes_exact_pin_files() {
    let dir = tempfile::tempdir().unwrap();
    let postfix = dir.path().join("tls_pins");
    let run = build(&["--postfix", postfix.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        read(&postfix),
        read(&testdata().join("expected/encrypt.postfix"))
    );
    assert!(
        run.stdout
            .contains("Pinned: 3 domain(s) (3 encrypt, 0 verify), 32 messages"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("postmap hash:{}", postfix.display())),
        "{}",
        run.stdout
    );

    let exim = dir.path().join("tls_pinned");
    let run = build(&[
        "--verify",
        "--postfix",
        postfix.to_str().unwrap(),
        "--exim",
        exim.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        read(&postfix),
        read(&testdata().join("expected/verify.postfix"))
    );
    assert_eq!(read(&exim), read(&testdata().join("expected/verify.exim")));

    // `-` writes the map to stdout, and the summary goes to stderr.
    let run = build(&["--verify", "--postfix", "-"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        read(&testdata().join("expected/verify.postfix"))
    );
    assert!(run.stderr.contains("Pinned: 3 domain(s)"), "{}", run.stderr);
}

/// A relative `--exim`/`--postfix` path is printed absolute in the lines to paste: Exim takes
/// a list item without a leading `/` for a domain, and Postfix resolves table paths against
/// its own directory.
#[test]
fn usage_lines_name_the_written_files_by_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .current_dir(dir.path())
        .args(["policy", "build"])
        .args(logs())
        .args(["--exim", "tls_pinned", "--postfix", "./tls_pins"])
        .output()
        .expect("run sigillo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = dir.path().canonicalize().unwrap();
    let exim = base.join("tls_pinned");
    let postfix = base.join("tls_pins");
    assert!(exim.is_file() && postfix.is_file());
    for want in [
        "Wrote 3 domain(s) for Exim to tls_pinned.".to_owned(),
        format!("  domainlist tls_pinned = {}\n", exim.display()),
        format!("  postmap hash:{}\n", postfix.display()),
        format!("smtp_tls_policy_maps = hash:{} ", postfix.display()),
    ] {
        assert!(stdout.contains(&want), "{want}\n{stdout}");
    }
    assert!(!stdout.contains("Note: cannot"), "{stdout}");
}

#[test]
fn json_lists_pins_and_why_others_were_not() {
    let run = build(&["--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    // The eight domains of the README, and one.example and two.example, which one relay
    // transaction carried together: one message each.
    assert_eq!(doc["next_hops"], 10);
    assert_eq!(
        doc["next_hops_omitted"],
        json!({"no_domain_messages": 0, "over_cap_messages": 0})
    );
    assert_eq!(
        doc["rule"],
        json!({"min_messages": 10, "min_tls_share": 1.0, "verify": false})
    );
    assert_eq!(
        doc["not_pinned"],
        json!({"few_messages": 3, "below_tls_share": 3, "not_a_domain": 1,
               "via_relay": 0, "partly_via_relay": 0, "relays_below_rule": 0})
    );
    // Every domain went to its own MX hosts, but for one.example and two.example, which
    // relay.isp.example took in one transaction: two domains, too few for a smarthost (it is
    // judged as their MX, and they have too few messages to pin): no smarthost.
    assert_eq!(doc["relays_known"], true);
    assert_eq!(doc["smarthosts"], json!([]));
    assert_eq!(
        doc["pins"][1],
        json!({"domain": "tls.example", "level": "encrypt",
               "evidence": {"messages": 10, "tls": 10, "verified": 0}})
    );
    assert!(doc.get("dry_run").is_none(), "{doc}");
}

#[test]
fn dry_run_counts_the_messages_a_policy_would_have_deferred() {
    // The default rule pins only domains that used TLS every time: nothing deferred, exit 0.
    let run = build(&["--dry-run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = &run.json()["dry_run"];
    assert_eq!(
        (
            &d["pinned_domains"],
            &d["messages_to_pinned"],
            &d["deferred_messages"]
        ),
        (&json!(3), &json!(32), &json!(0))
    );

    // At 95 %, mostly.example (19 of 20 over TLS) is pinned, and its one plaintext message
    // would have been deferred: exit 1.
    let run = build(&["--dry-run", "--json", "--min-tls-share", "0.95", "--verify"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let d = &run.json()["dry_run"];
    assert_eq!(
        d,
        &json!({
            "pins_from": "rule",
            "pinned_domains": 4,
            "pinned_domains_seen": 4,
            "pins_via_relay": 0,
            "messages_to_pinned": 52,
            "deferred_messages": 1,
            "unknown_messages": 0,
            "relay_pins_summed_over_domains": 0,
            "domains": [{
                "domain": "mostly.example", "level": "verify", "messages": 20, "deferred": 1,
                "plain": 1, "untrusted_tls": 0, "unknown": 0,
                "first": {"time": "2026-11-23T09:03:31Z", "id": "4A00000023"},
                "last": {"time": "2026-11-23T09:03:31Z", "id": "4A00000023"},
                "sample": [{"time": "2026-11-23T09:03:31Z", "id": "4A00000023"}]
            }]
        })
    );

    // Existing pins: plain.example's 10 messages in clear would have been deferred;
    // cached.example's delivery of unknown transport might have been; gone.example had none.
    let pins = testdata().join("pins.cf");
    let run = build(&["--dry-run", "--pins", pins.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "Dry run with the pins in {}: 10 of 33 messages to 3 pinned domain(s) seen would \
             have been deferred; 1 more, of unknown transport, might have been",
            pins.display()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("1 pinned domain(s) had no delivered mail in the window."),
        "{}",
        run.stdout
    );
    let run = build(&["--dry-run", "--pins", pins.to_str().unwrap(), "--json"]);
    let d = &run.json()["dry_run"];
    let rows: Vec<(String, u64, u64)> = d["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["domain"].as_str().unwrap().to_owned(),
                x["deferred"].as_u64().unwrap(),
                x["unknown"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("plain.example".to_owned(), 10, 0),
            ("cached.example".to_owned(), 0, 1)
        ]
    );
    let sample: Vec<&str> = d["domains"][0]["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        sample,
        [
            "4A00000038",
            "4A00000039",
            "4A0000003A",
            "4A0000003B",
            "4A0000003C"
        ]
    );
    assert_eq!(d["domains"][0]["last"]["id"], "4A00000041");
}

#[test]
fn a_built_map_reads_back_as_pins() {
    let dir = tempfile::tempdir().unwrap();
    let postfix = dir.path().join("tls_pins");
    let run = build(&["--verify", "--postfix", postfix.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let built = build(&["--verify", "--json"]).json()["pins"].clone();
    let run = build(&["--dry-run", "--pins", postfix.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["pins"], built, "evidence comments read back");
    assert_eq!(doc["dry_run"]["deferred_messages"], 0);
}

#[test]
fn from_report_gives_what_the_logs_give() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs();
    let mut args: Vec<&str> = vec!["report", "--json"];
    args.extend(logs.iter().map(String::as_str));
    let report = sigillo(&args, None);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report_path = dir.path().join("report.json");
    std::fs::write(&report_path, &report.stdout).unwrap();

    let options = [
        "--min-tls-share",
        "0.95",
        "--verify",
        "--dry-run",
        "--json",
        "--postfix",
    ];
    let from_logs_map = dir.path().join("logs.map");
    let mut a = options.to_vec();
    a.push(from_logs_map.to_str().unwrap());
    let from_logs = build(&a);

    let from_report_map = dir.path().join("report.map");
    let mut b = vec![
        "policy",
        "build",
        "--from-report",
        report_path.to_str().unwrap(),
    ];
    b.extend(options);
    b.push(from_report_map.to_str().unwrap());
    let from_report = sigillo(&b, None);

    assert_eq!(from_logs.code, 1, "{}", from_logs.stderr);
    assert_eq!(from_report.code, 1, "{}", from_report.stderr);
    assert_eq!(from_report.json(), from_logs.json());
    assert_eq!(read(&from_report_map), read(&from_logs_map));
    assert!(read(&from_logs_map).contains("mostly.example    verify"));

    // Stdin works as for `report`.
    let postfix_log = read(&testdata().join("postfix.log"));
    let run = sigillo(
        &["policy", "build", "-", "--format", "postfix", "--json"],
        Some(&postfix_log),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    let pins: Vec<&str> = doc["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["domain"].as_str().unwrap())
        .collect();
    // Without exim.log, tls.example has 9 messages and exim.example none.
    assert_eq!(pins, ["verified.example"]);
}

/// `relayhost.log`: a relay host took the mail of a to i.example (9 of the 10 next-hop
/// domains), and a transport sent partner.example to its own host. Postfix looks up
/// `[smtp.isp.example]` for the nine, so that, not their domains, is pinned.
fn build_relayhost(extra: &[&str]) -> Run {
    let log = testdata().join("relayhost.log");
    let mut args = vec!["policy", "build", log.to_str().unwrap()];
    args.extend(extra);
    sigillo(&args, None)
}

#[test]
fn a_smarthost_is_pinned_instead_of_the_domains_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let postfix = dir.path().join("tls_pins");
    let exim = dir.path().join("tls_pinned");
    let run = build_relayhost(&[
        "--postfix",
        postfix.to_str().unwrap(),
        "--exim",
        exim.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        read(&postfix),
        read(&testdata().join("expected/relayhost.postfix"))
    );
    for want in [
        "Smarthost smtp.isp.example took the mail of 9 next-hop domain(s) (31 messages, 31 over \
         TLS): Postfix looks their TLS policy up as [smtp.isp.example]",
        "Pinned: 1 domain(s) and 1 smarthost(s) (2 encrypt, 0 verify), 41 messages",
        "9 sent through a smarthost",
        "hosts_require_tls = ${if match_domain{$domain}{+tls_pinned}{*}{smtp.isp.example}}",
    ] {
        assert!(run.stdout.contains(want), "{want}\n{}", run.stdout);
    }
    // The Exim list holds domains only.
    let list = read(&exim);
    assert!(list.contains("\npartner.example\n"), "{list}");
    assert!(!list.contains("isp"), "{list}");

    let doc = build_relayhost(&["--json"]).json();
    assert_eq!(
        doc["smarthosts"],
        json!([{"host": "smtp.isp.example", "port": null, "port_logged": true, "key": "[smtp.isp.example]", "other_keys": [], "domains": 9,
                "messages": 31, "tls_messages": 31, "trusted_tls_messages": 31,
                "summed_over_domains": false}])
    );
    assert_eq!(doc["not_pinned"]["via_relay"], 9);
    assert_eq!(doc["pins"][0]["domain"], "[smtp.isp.example]");

    // The map reads back, relay key and all, for a dry run (and for policy serve --pins).
    let run = build_relayhost(&["--dry-run", "--pins", postfix.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = &run.json()["dry_run"];
    assert_eq!(
        (&d["pinned_domains_seen"], &d["messages_to_pinned"]),
        (&json!(2), &json!(41))
    );
    // Pins on the domains behind the relay would never have applied.
    let old_pins = dir.path().join("old_pins");
    std::fs::write(&old_pins, "a.example encrypt\nb.example encrypt\n").unwrap();
    let run = build_relayhost(&["--dry-run", "--pins", old_pins.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "2 pinned domain(s) sent all their mail through a smarthost: Postfix looks up the \
             relay for them, so those pins would not have applied."
        ),
        "{}",
        run.stdout
    );
}

/// `../report/relayhost-multi-domain.log`: a relay host takes transactions that carry several
/// domains; b.example, c.example and d.example never have one of their own. Each counts with
/// the relay, which therefore takes 5 of 5 domains: a smarthost, judged on its own 5
/// transactions (not the 9 per-domain messages), one in clear (6C00000004, which carried
/// c.example and d.example): below the default rule, and no domain behind it is pinned.
#[test]
fn domains_sent_only_with_others_show_the_smarthost() {
    let log = testdata().join("../report/relayhost-multi-domain.log");
    let run = sigillo(&["policy", "build", log.to_str().unwrap(), "--json"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["next_hops"], 5);
    assert_eq!(
        doc["smarthosts"],
        json!([{"host": "smtp.isp.example", "port": null, "port_logged": true, "key": "[smtp.isp.example]", "other_keys": [], "domains": 5,
                "messages": 5, "tls_messages": 4, "trusted_tls_messages": 4,
                "summed_over_domains": false}])
    );
    assert_eq!(
        doc["not_pinned"],
        json!({"few_messages": 0, "below_tls_share": 0, "not_a_domain": 0,
               "via_relay": 5, "partly_via_relay": 0, "relays_below_rule": 1})
    );
    assert_eq!(doc["pins"], json!([]));
}

/// `policy build LOG EXTRA…` for a log of this directory.
fn build_log(log: &str, extra: &[&str]) -> Run {
    let log = testdata().join(log);
    let mut args = vec!["policy", "build", log.to_str().unwrap()];
    args.extend(extra);
    sigillo(&args, None)
}

/// The `pins[]` of a `--json` run, as `key level messages/tls/verified`.
fn pin_rows(doc: &Value) -> Vec<String> {
    doc["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let e = &p["evidence"];
            format!(
                "{} {} {}/{}/{}",
                p["domain"].as_str().unwrap(),
                p["level"].as_str().unwrap(),
                e["messages"],
                e["tls"],
                e["verified"]
            )
        })
        .collect()
}

/// `relayhost-four-transactions.log`: 4 `Trusted` TLS transactions through the relay, each
/// to a, b and c.example (12 per-domain messages). The smarthost is judged on its 4
/// transactions: not pinned at `--min-messages 10` (nor 5), pinned at 4, at `verify` with
/// `--verify`.
#[test]
fn a_smarthost_is_judged_on_its_transactions_not_on_the_sums_of_its_domains() {
    let log = "relayhost-four-transactions.log";
    let run = build_log(log, &["--postfix", "-"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("isp"), "not pinned:\n{}", run.stdout);
    assert!(
        run.stderr.contains(
            "Smarthost smtp.isp.example took the mail of 3 next-hop domain(s) (4 messages, 4 \
             over TLS)"
        ),
        "{}",
        run.stderr
    );
    let doc = build_log(log, &["--json"]).json();
    assert_eq!(
        doc["smarthosts"],
        json!([{"host": "smtp.isp.example", "port": null, "port_logged": true, "key": "[smtp.isp.example]", "other_keys": [],
                "domains": 3, "messages": 4, "tls_messages": 4, "trusted_tls_messages": 4,
                "summed_over_domains": false}])
    );
    assert_eq!(doc["not_pinned"]["relays_below_rule"], 1);
    assert_eq!(doc["not_pinned"]["via_relay"], 3);
    assert_eq!(doc["pins"], json!([]));
    let doc = build_log(log, &["--json", "--min-messages", "5"]).json();
    assert_eq!(doc["pins"], json!([]));
    let doc = build_log(log, &["--json", "--min-messages", "4"]).json();
    assert_eq!(pin_rows(&doc), ["[smtp.isp.example] encrypt 4/4/4"]);
    let doc = build_log(log, &["--json", "--min-messages", "4", "--verify"]).json();
    assert_eq!(pin_rows(&doc), ["[smtp.isp.example] verify 4/4/4"]);
    let run = build_log(log, &["--min-messages", "4", "--postfix", "-"]);
    assert!(
        run.stdout
            .contains("# 4 messages, 4 over TLS, 4 verified\n[smtp.isp.example]  encrypt\n"),
        "{}",
        run.stdout
    );
}

/// `relayhost-share.log`: 5 transactions through the relay, 4 over TLS (each to a to
/// e.example) and 1 in clear (7E00000009, to a.example): 80 % over TLS, though the domains'
/// sums make 20 of 21 (95.2 %). The smarthost is not pinned at `--min-tls-share 0.95`, is at
/// 0.8, and the dry run of that pin defers 1 of 5 messages.
#[test]
fn a_smarthost_s_tls_share_and_dry_run_count_each_transaction_once() {
    let log = "relayhost-share.log";
    // The reproduction: at the default 10 messages, 5 transactions are too few anyway.
    let run = build_log(log, &["--min-tls-share", "0.95", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("(5 messages, 4 over TLS)")
            && run.stdout.contains("1 smarthost(s) below the rule")
            && run.stdout.contains(
                "Dry run with the rule's pins: 0 of 0 messages to 0 pinned domain(s) seen"
            ),
        "{}",
        run.stdout
    );
    let run = build_log(
        log,
        &["--min-messages", "5", "--min-tls-share", "0.95", "--json"],
    );
    let doc = run.json();
    assert_eq!(doc["pins"], json!([]));
    assert_eq!(doc["not_pinned"]["relays_below_rule"], 1);
    assert_eq!(
        (
            &doc["smarthosts"][0]["messages"],
            &doc["smarthosts"][0]["tls_messages"]
        ),
        (&json!(5), &json!(4))
    );
    let run = build_log(
        log,
        &[
            "--min-messages",
            "5",
            "--min-tls-share",
            "0.8",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(pin_rows(&doc), ["[smtp.isp.example] encrypt 5/4/4"]);
    assert_eq!(
        doc["dry_run"],
        json!({
            "pins_from": "rule",
            "pinned_domains": 1,
            "pinned_domains_seen": 1,
            "pins_via_relay": 0,
            "messages_to_pinned": 5,
            "deferred_messages": 1,
            "unknown_messages": 0,
            "relay_pins_summed_over_domains": 0,
            "domains": [{
                "domain": "[smtp.isp.example]", "level": "encrypt", "messages": 5,
                "deferred": 1, "plain": 1, "untrusted_tls": 0, "unknown": 0,
                "first": {"time": "2026-12-02T08:20:00Z", "id": "7E00000009"},
                "last": {"time": "2026-12-02T08:20:00Z", "id": "7E00000009"},
                "sample": [{"time": "2026-12-02T08:20:00Z", "id": "7E00000009"}]
            }]
        })
    );
}

/// `../report/relayhost-multi-domain.log` dry-run against `[smtp.isp.example] encrypt`: of its
/// 5 transactions only 6C00000004 went in clear (it carried c.example and d.example, so the
/// domains' sums would make it 2 of 9).
#[test]
fn a_relay_pin_s_dry_run_counts_each_transaction_once() {
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("relay.pins");
    std::fs::write(&pins, "[smtp.isp.example] encrypt\n").unwrap();
    let run = build_log(
        "../report/relayhost-multi-domain.log",
        &["--dry-run", "--pins", pins.to_str().unwrap()],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    for want in [
        format!(
            "Dry run with the pins in {}: 1 of 5 messages to 1 pinned domain(s) seen would \
             have been deferred\n",
            pins.display()
        ),
        "  [smtp.isp.example]  encrypt         1        0         5  2026-12-02T08:20:00Z \
         6C00000004 / 2026-12-02T08:20:00Z 6C00000004\n"
            .to_owned(),
        "e.g. 6C00000004\n".to_owned(),
    ] {
        assert!(run.stdout.contains(&want), "{want}\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("Note:"), "{}", run.stdout);
    // The rule's pin at 80 % gives the same.
    let run = build_log(
        "../report/relayhost-multi-domain.log",
        &[
            "--min-messages",
            "5",
            "--min-tls-share",
            "0.8",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let d = &run.json()["dry_run"];
    assert_eq!(
        (&d["messages_to_pinned"], &d["deferred_messages"]),
        (&json!(5), &json!(1))
    );
}

/// `relayhost-four-transactions.old-report.json`: `report --json` of
/// `relayhost-four-transactions.log` written by sigillo before reports had `relays[]`. The
/// smarthost is judged as before, on the sums of its domains (12 messages: pinned at
/// `--min-messages 10`), and the summary and the dry run say the figures may count a
/// transaction once per domain.
#[test]
fn an_older_report_without_relay_figures_sums_the_domains_and_says_so() {
    let report = testdata().join("relayhost-four-transactions.old-report.json");
    let from = |extra: &[&str]| {
        let mut args = vec!["policy", "build", "--from-report", report.to_str().unwrap()];
        args.extend(extra);
        sigillo(&args, None)
    };
    let doc = from(&["--json"]).json();
    assert_eq!(doc["relays_known"], true);
    assert_eq!(
        doc["smarthosts"],
        json!([{"host": "smtp.isp.example", "port": null, "port_logged": true, "key": "[smtp.isp.example]", "other_keys": [],
                "domains": 3, "messages": 12, "tls_messages": 12, "trusted_tls_messages": 12,
                "summed_over_domains": true}])
    );
    assert_eq!(pin_rows(&doc), ["[smtp.isp.example] encrypt 12/12/12"]);
    let run = from(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "Note: the report has no figures of [smtp.isp.example] of its own (written by an \
             older sigillo?), so the figures above are the sums of the domains behind it, which \
             may count a transaction that carried several domains once for each"
        ),
        "{}",
        run.stdout
    );
    let run = from(&["--dry-run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = &run.json()["dry_run"];
    assert_eq!(
        (
            &d["messages_to_pinned"],
            &d["relay_pins_summed_over_domains"]
        ),
        (&json!(12), &json!(1))
    );
    let run = from(&["--dry-run"]);
    assert!(
        run.stdout.contains(
            "Note: 1 relay pin(s) were checked against the sums of the domains behind the relay"
        ),
        "{}",
        run.stdout
    );
    // The same log read now: 4 transactions, no pin, no note.
    let run = build_log("relayhost-four-transactions.log", &[]);
    assert!(
        run.stdout.contains("(4 messages, 4 over TLS)") && !run.stdout.contains("Note:"),
        "{}",
        run.stdout
    );
}

/// `relayhost-port.log` and `relayhost-ipv6.log`: `relayhost.log` with the relay on port 587
/// (`relayhost = [smtp.isp.example]:587`) and at an IPv6 address (`relayhost =
/// [2001:db8::25]`). Postfix looks the next hop up as written, port included, so those keys are
/// pinned; the report names the relay's port, and a dry run finds the relay's mail by the key.
#[test]
fn a_smarthost_on_another_port_or_at_an_ipv6_address_is_pinned_by_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "relayhost-port",
            "[smtp.isp.example]:587",
            "smtp.isp.example",
            587,
            "Smarthost smtp.isp.example (port 587) took the mail of 9 next-hop domain(s)",
            "hosts_require_tls = ${if match_domain{$domain}{+tls_pinned}{*}{smtp.isp.example}}",
        ),
        (
            "relayhost-ipv6",
            "[2001:db8::25]",
            "2001:db8::25",
            25,
            "Smarthost 2001:db8::25 took the mail of 9 next-hop domain(s)",
            // An IPv6 address holds the host list's separator: the list uses `;`.
            "hosts_require_tls = <; ${if match_domain{$domain}{+tls_pinned}{*}{2001:db8::25}}",
        ),
    ];
    for (name, key, host, port, smarthost, exim_line) in cases {
        let log = testdata().join(format!("{name}.log"));
        let log = log.to_str().unwrap();
        let postfix = dir.path().join(format!("{name}.pins"));
        let exim = dir.path().join(format!("{name}.exim"));
        let run = sigillo(
            &[
                "policy",
                "build",
                log,
                "--postfix",
                postfix.to_str().unwrap(),
                "--exim",
                exim.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_eq!(
            read(&postfix),
            read(&testdata().join(format!("expected/{name}.postfix"))),
            "{name}"
        );
        for want in [
            smarthost,
            &format!("Postfix looks their TLS policy up as {key} (relayhost = {key})"),
            exim_line,
        ] {
            assert!(run.stdout.contains(want), "{name}: {want}\n{}", run.stdout);
        }
        assert!(!read(&exim).contains(host), "{name}: domains only");

        let doc = sigillo(&["policy", "build", log, "--json"], None).json();
        assert_eq!(
            doc["smarthosts"],
            json!([{"host": host, "port": (port != 25).then_some(port), "port_logged": true, "key": key, "other_keys": [],
                    "domains": 9, "messages": 31, "tls_messages": 31,
                    "trusted_tls_messages": 31, "summed_over_domains": false}]),
            "{name}"
        );
        let report = sigillo(&["report", "--json", log], None).json();
        assert_eq!(
            report["next_hops"][0]["relays"],
            json!({"hosts": [{"host": host, "port": port, "messages": 12}], "other_messages": 0}),
            "{name}"
        );

        // The map reads back for a dry run: the relay's mail is found by its key.
        let pins = postfix.to_str().unwrap();
        let run = sigillo(
            &[
                "policy",
                "build",
                log,
                "--dry-run",
                "--pins",
                pins,
                "--json",
            ],
            None,
        );
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        let d = &run.json()["dry_run"];
        assert_eq!(
            (&d["pinned_domains_seen"], &d["messages_to_pinned"]),
            (&json!(2), &json!(41)),
            "{name}"
        );
    }
    // A pin spelled as main.cf may spell it (`[ipv6:…]`, another spelling of the address)
    // finds the same mail; the relay on another port does not.
    let log = testdata().join("relayhost-ipv6.log");
    for (pin, seen) in [
        ("[IPv6:2001:DB8:0::25]", 1),
        ("[2001:db8::25]:25", 1),
        ("[2001:db8::25]:587", 0),
    ] {
        let pins = dir.path().join("spelled.pins");
        std::fs::write(&pins, format!("{pin} encrypt\n")).unwrap();
        let run = sigillo(
            &[
                "policy",
                "build",
                log.to_str().unwrap(),
                "--dry-run",
                "--pins",
                pins.to_str().unwrap(),
                "--json",
            ],
            None,
        );
        assert_eq!(run.code, 0, "{pin}: {}", run.stderr);
        assert_eq!(
            run.json()["dry_run"]["pinned_domains_seen"],
            json!(seen),
            "{pin}"
        );
    }
}

/// `relayhost-ipv6-spellings.log`: `relayhost-ipv6.log` with b.example sent by a transport
/// that writes the relay `smtp:[2001:db8:0::25]`, logged so, while the relayhost writes it
/// `[2001:db8::25]`. One relay, judged once on its 31 messages; Postfix looks each spelling up
/// as written, so the map has a line for each, at the one level, which `--pins` reads back
/// and whose dry run counts the relay's mail once. A pin file with the two spellings at two
/// levels is refused, naming both lines.
#[test]
fn an_ipv6_relay_spelled_two_ways_is_judged_once_and_keyed_as_each() {
    let dir = tempfile::tempdir().unwrap();
    let log = testdata().join("relayhost-ipv6-spellings.log");
    let log = log.to_str().unwrap();
    let postfix = dir.path().join("spellings.pins");
    let run = sigillo(
        &[
            "policy",
            "build",
            log,
            "--postfix",
            postfix.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        read(&postfix),
        read(&testdata().join("expected/relayhost-ipv6-spellings.postfix"))
    );
    for want in [
        "Smarthost 2001:db8:0::25 took the mail of 9 next-hop domain(s) (31 messages, 31 over \
         TLS): Postfix looks their TLS policy up as [2001:db8:0::25]",
        "(The log spells this relay 2 ways: [2001:db8:0::25], [2001:db8::25], ",
        "Pinned: 1 domain(s) and 1 smarthost(s) (2 encrypt, 0 verify), 41 messages",
    ] {
        assert!(run.stdout.contains(want), "{want}\n{}", run.stdout);
    }
    let doc = sigillo(&["policy", "build", log, "--json"], None).json();
    assert_eq!(
        doc["smarthosts"],
        json!([{"host": "2001:db8:0::25", "port": null, "port_logged": true,
                "key": "[2001:db8:0::25]", "other_keys": ["[2001:db8::25]"], "domains": 9,
                "messages": 31, "tls_messages": 31, "trusted_tls_messages": 31,
                "summed_over_domains": false}])
    );

    // The map reads back; its dry run counts the relay once.
    let dry_run = |pins: &Path| {
        sigillo(
            &[
                "policy",
                "build",
                log,
                "--dry-run",
                "--pins",
                pins.to_str().unwrap(),
                "--json",
            ],
            None,
        )
    };
    let run = dry_run(&postfix);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = &run.json()["dry_run"];
    assert_eq!(
        (
            &d["pinned_domains"],
            &d["pinned_domains_seen"],
            &d["messages_to_pinned"]
        ),
        (&json!(2), &json!(2), &json!(41))
    );

    // At two levels, the spellings are refused.
    let conflicting = dir.path().join("conflicting.pins");
    std::fs::write(
        &conflicting,
        "[2001:db8:0::25]  verify\npartner.example  encrypt\n[2001:db8::25]  encrypt\n",
    )
    .unwrap();
    let run = dry_run(&conflicting);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "pin file line 3: relay [2001:db8::25] is pinned encrypt, but line 1 pins it \
             verify as [2001:db8:0::25]"
        ),
        "{}",
        run.stderr
    );
}

/// `shared-mx.log`: three of six domains go to a provider's shared MX
/// (`aspmx.l.google.com`), the others to their own. Postfix looks those three up by domain
/// (routed by MX), so they stay pinned, and no `[aspmx.l.google.com]` key is written: a
/// shared MX is no smarthost unless it takes 90 % of the next-hop domains.
#[test]
fn a_shared_provider_mx_is_not_a_smarthost() {
    let log = testdata().join("shared-mx.log");
    let log = log.to_str().unwrap();
    let want = [
        "acme.example",
        "bank.example",
        "gov.example",
        "shop.example",
        "uni.example",
        "widgets.example",
    ];
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let run = sigillo(&["report", "--json", log], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::write(&report, &run.stdout).unwrap();
    for input in [vec![log], vec!["--from-report", report.to_str().unwrap()]] {
        let mut args = vec!["policy", "build"];
        args.extend(&input);
        let mut json = args.clone();
        json.push("--json");
        let doc = sigillo(&json, None).json();
        assert_eq!(doc["smarthosts"], json!([]), "{input:?}");
        assert_eq!(doc["not_pinned"]["via_relay"], 0, "{input:?}");
        let pins: Vec<&str> = doc["pins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["domain"].as_str().unwrap())
            .collect();
        assert_eq!(pins, want, "{input:?}");

        args.extend(["--postfix", "-"]);
        let run = sigillo(&args, None);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stdout.contains("aspmx"), "{}", run.stdout);
        let keys: Vec<Vec<&str>> = run
            .stdout
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let want_keys: Vec<Vec<&str>> = want.iter().map(|d| vec![*d, "encrypt"]).collect();
        assert_eq!(keys, want_keys, "{}", run.stdout);
    }
}

/// `--postfix -` and `--exim -` write the map alone to stdout; the notes on stderr resolve no
/// path (there is none) and show the usage lines with FILE for the file it is saved to.
#[test]
fn a_map_written_to_stdout_gets_usage_lines_for_a_file_and_no_path_note() {
    let run = build_relayhost(&["--postfix", "-"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        read(&testdata().join("expected/relayhost.postfix"))
    );
    let run = build_relayhost(&["--exim", "-"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.ends_with("\npartner.example\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("Wrote"), "{}", run.stdout);
    for (option, want) in [
        (
            "--postfix",
            &[
                "\nWrote 2 pin(s) for Postfix to standard output. Once saved to a file, use it as \
                 below (FILE: the file's absolute path):\n",
                "\n  postmap hash:FILE\n",
                "\n  main.cf: smtp_tls_policy_maps = hash:FILE ",
            ][..],
        ),
        (
            "--exim",
            &[
                "\nWrote 1 domain(s) for Exim to standard output. Once saved to a file, use it as \
                 below (FILE: the file's absolute path):\n  domainlist tls_pinned = FILE\n",
                "\n  hosts_require_tls = ${if match_domain{$domain}{+tls_pinned}{*}{smtp.isp.example}}\n  \
                 (the relay host(s) smtp.isp.example are required to use TLS for every domain)\n",
            ][..],
        ),
    ] {
        let run = build_relayhost(&[option, "-"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stderr.contains("cannot resolve"), "{}", run.stderr);
        assert!(!run.stderr.contains("/-"), "{}", run.stderr);
        for w in want {
            assert!(run.stderr.contains(w), "{option}: {w}\n{}", run.stderr);
        }
    }
}

#[test]
fn report_json_names_the_relay_hosts_per_next_hop() {
    let log = testdata().join("relayhost.log");
    let report = sigillo(&["report", "--json", log.to_str().unwrap()], None);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let doc = report.json();
    let relays: Vec<(String, Value)> = doc["next_hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["domain"].as_str().unwrap().to_owned(),
                h["relays"].clone(),
            )
        })
        .collect();
    let isp = |n: u64| json!({"hosts": [{"host": "smtp.isp.example", "port": 25, "messages": n}], "other_messages": 0});
    assert_eq!(
        relays,
        [
            ("a.example".to_owned(), isp(12)),
            ("b.example".to_owned(), isp(10)),
            (
                "partner.example".to_owned(),
                json!({"hosts": [{"host": "mx.partner.example", "port": 25, "messages": 10}], "other_messages": 0})
            ),
            ("c.example".to_owned(), isp(3)),
            ("d.example".to_owned(), isp(1)),
            ("e.example".to_owned(), isp(1)),
            ("f.example".to_owned(), isp(1)),
            ("g.example".to_owned(), isp(1)),
            ("h.example".to_owned(), isp(1)),
            ("i.example".to_owned(), isp(1)),
        ]
    );
}

/// A report written before relay hosts were recorded: read as before (every domain judged as
/// routed by MX), and the summary says that a smarthost could not be looked for.
#[test]
fn an_older_report_without_relays_is_read_as_before_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = testdata().join("relayhost.log");
    let report = sigillo(&["report", "--json", log.to_str().unwrap()], None);
    let mut doc = report.json();
    for hop in doc["next_hops"].as_array_mut().unwrap() {
        hop.as_object_mut().unwrap().remove("relays");
    }
    let path = dir.path().join("old.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let from = |extra: &[&str]| {
        let mut args = vec!["policy", "build", "--from-report", path.to_str().unwrap()];
        args.extend(extra);
        sigillo(&args, None)
    };
    let run = from(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "Note: the report names no relay hosts per next hop (written by an older sigillo)"
        ),
        "{}",
        run.stdout
    );
    let out = from(&["--json"]).json();
    assert_eq!(out["relays_known"], false);
    let pins: Vec<&str> = out["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["domain"].as_str().unwrap())
        .collect();
    assert_eq!(pins, ["a.example", "b.example", "partner.example"]);

    // A hand-edited report whose relay counts do not add up is refused.
    let mut doc = report.json();
    doc["next_hops"][0]["relays"]["other_messages"] = json!(1);
    std::fs::write(&path, doc.to_string()).unwrap();
    let run = from(&[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the messages per relay host do not add up"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_inputs_and_options_exit_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_report = dir.path().join("other.json");
    std::fs::write(&not_report, r#"{"inbound": {}}"#).unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "not json").unwrap();
    let empty_log = dir.path().join("empty.log");
    std::fs::write(&empty_log, "").unwrap();
    let bad_pins = dir.path().join("bad.cf");
    std::fs::write(&bad_pins, "example.com  secure\n").unwrap();
    let logs = logs();
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--from-report".into(), p(&not_report)],
            "the report has no next_hops",
        ),
        (
            vec!["--from-report".into(), p(&garbage)],
            "expected the output of sigillo report --json",
        ),
        (
            vec![
                logs[0].clone(),
                "--postfix".into(),
                "-".into(),
                "--exim".into(),
                "-".into(),
            ],
            "can use stdout",
        ),
        (vec![p(&empty_log)], "no log line could be read"),
        (
            vec![
                logs[0].clone(),
                "--dry-run".into(),
                "--pins".into(),
                p(&bad_pins),
            ],
            "level encrypt or verify",
        ),
        (
            vec![logs[0].clone(), "--min-tls-share".into(), "1.5".into()],
            "at most 1",
        ),
        (
            vec![
                "--from-report".into(),
                p(&not_report),
                "--since".into(),
                "2026-11-01".into(),
            ],
            "cannot be used with",
        ),
        (
            vec![logs[0].clone(), "--pins".into(), p(&bad_pins)],
            "--dry-run",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["policy".to_owned(), "build".to_owned()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let run = sigillo(&refs, None);
        assert_eq!(run.code, 2, "{all:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(want), "{all:?}: {}", run.stderr);
    }
}

/// `policy build ARGS` must refuse before reading or writing anything: exit 2, the reason on
/// stderr, nothing on stdout.
fn refused(args: &[&str], want: &str) {
    let mut all = vec!["policy", "build"];
    all.extend(args);
    let run = sigillo(&all, None);
    assert_eq!(run.code, 2, "{all:?}: {}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(want), "{all:?}: {}", run.stderr);
    assert!(!run.stderr.contains("Wrote"), "{all:?}: {}", run.stderr);
    assert_eq!(run.stdout, "", "{all:?}");
}

#[test]
fn a_window_that_ends_before_it_starts_is_refused() {
    let log = testdata().join("postfix.log");
    let log = log.to_str().unwrap();
    refused(
        &[
            log,
            "--since",
            "2026-11-22",
            "--until",
            "2026-11-21",
            "--postfix",
            "-",
        ],
        "must be later than --since",
    );
}

#[test]
fn an_output_never_overwrites_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = |path: &Path| path.to_str().unwrap().to_owned();
    let original = read(&testdata().join("postfix.log"));
    let log = dir.path().join("mail.log");
    std::fs::write(&log, &original).unwrap();
    let log_arg = p(&log);
    // The same file spelt another way.
    let log_other = p(&dir.path().join(".").join("mail.log"));

    // The output is the log input.
    for option in ["--postfix", "--exim"] {
        refused(&[&log_arg, option, &log_arg], "the same file as the input");
        refused(
            &[&log_arg, option, &log_other],
            "the same file as the input",
        );
        assert_eq!(read(&log), original, "{option}: the log is left unchanged");
    }

    // The output is the --from-report input.
    let report = sigillo(&["report", "--json", &log_arg], None);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report_path = dir.path().join("report.json");
    std::fs::write(&report_path, &report.stdout).unwrap();
    let report_arg = p(&report_path);
    for option in ["--postfix", "--exim"] {
        refused(
            &["--from-report", &report_arg, option, &report_arg],
            &format!("the same file as --from-report {report_arg}"),
        );
    }
    assert_eq!(
        read(&report_path),
        report.stdout,
        "the report is left unchanged"
    );

    // --postfix and --exim name one file: by name, and (existing) through a hard link.
    let out = p(&dir.path().join("pins"));
    refused(
        &[&log_arg, "--postfix", &out, "--exim", &out],
        "name the same file",
    );
    assert!(!Path::new(&out).exists(), "nothing written");
    std::fs::write(&out, "mine\n").unwrap();
    let linked = p(&dir.path().join("pins-link"));
    std::fs::hard_link(&out, &linked).unwrap();
    refused(
        &[&log_arg, "--postfix", &out, "--exim", &linked],
        "name the same file",
    );
    assert_eq!(read(Path::new(&out)), "mine\n");

    // A file in an input directory (walked recursively), now or on the next run.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("old")).unwrap();
    std::fs::write(logs.join("old/mail.log.1"), &original).unwrap();
    let logs_arg = p(&logs);
    refused(
        &[&logs_arg, "--postfix", &p(&logs.join("old/mail.log.1"))],
        "inside the input directory",
    );
    let new = logs.join("tls_pins");
    refused(
        &[&logs_arg, "--postfix", &p(&new)],
        "inside the input directory",
    );
    assert!(!new.exists(), "nothing written");
    // ... or reached through a symlink in it.
    std::os::unix::fs::symlink(&out, logs.join("pins.log")).unwrap();
    refused(
        &[&logs_arg, "--exim", &out],
        "read from the input directory",
    );
    assert_eq!(read(&logs.join("old/mail.log.1")), original);
    assert_eq!(read(Path::new(&out)), "mine\n");

    // Outputs elsewhere are written as usual.
    std::fs::remove_file(logs.join("pins.log")).unwrap();
    let run = build(&["--postfix", &out, "--exim", &p(&dir.path().join("exim"))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        read(Path::new(&out)),
        read(&testdata().join("expected/encrypt.postfix"))
    );
}

/// The map file is valid Postfix syntax: Postfix's own `postmap` compiles it and answers
/// lookups from it, hashed and as `texthash:`.
#[test]
fn postmap_reads_the_built_map() {
    require_tools!("postmap");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.cf"), "").unwrap();
    let map = dir.path().join("tls_pins");
    let run = build(&["--verify", "--postfix", map.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let postmap = |args: &[&str]| {
        let out = Command::new("postmap")
            .arg("-c")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run postmap");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let hashed = format!("hash:{}", map.display());
    let (code, _, err) = postmap(&[&hashed]);
    assert_eq!(code, 0, "postmap {hashed}: {err}");
    // A relay pin is found under the key Postfix uses for `relayhost = [smtp.isp.example]`.
    let relay_map = dir.path().join("relay_pins");
    let run = build_relayhost(&["--postfix", relay_map.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let relay_table = format!("texthash:{}", relay_map.display());
    for (key, want_code, want) in [
        ("[smtp.isp.example]", 0, "encrypt"),
        ("a.example", 1, ""),
        ("partner.example", 0, "encrypt"),
    ] {
        let (code, out, err) = postmap(&["-q", key, &relay_table]);
        assert_eq!((code, out.as_str()), (want_code, want), "{key}: {err}");
    }
    // And under the keys of `relayhost = [smtp.isp.example]:587` and `relayhost =
    // [2001:db8::25]`. A static map holds one spelling: `[ipv6:2001:db8::25]` (which Postfix
    // also accepts in main.cf, and then looks up) is not found.
    for (log, key, want_code, want) in [
        ("relayhost-port.log", "[smtp.isp.example]:587", 0, "encrypt"),
        ("relayhost-port.log", "[smtp.isp.example]", 1, ""),
        ("relayhost-ipv6.log", "[2001:db8::25]", 0, "encrypt"),
        ("relayhost-ipv6.log", "[ipv6:2001:db8::25]", 1, ""),
        // A relay the log spells two ways: each spelling is found.
        (
            "relayhost-ipv6-spellings.log",
            "[2001:db8:0::25]",
            0,
            "encrypt",
        ),
        (
            "relayhost-ipv6-spellings.log",
            "[2001:db8::25]",
            0,
            "encrypt",
        ),
    ] {
        let map = dir.path().join(format!("{log}.pins"));
        let run = sigillo(
            &[
                "policy",
                "build",
                testdata().join(log).to_str().unwrap(),
                "--postfix",
                map.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let table = format!("texthash:{}", map.display());
        let (code, out, err) = postmap(&["-q", key, &table]);
        assert_eq!((code, out.as_str()), (want_code, want), "{key}: {err}");
    }
    let texthash = format!("texthash:{}", map.display());
    for table in [&hashed, &texthash] {
        // (key, exit code, answer): postmap -q exits 1 for a key not in the table.
        let cases = [
            ("verified.example", 0, "verify"),
            ("exim.example", 0, "verify"),
            ("tls.example", 0, "encrypt"),
            ("mostly.example", 1, ""),
            ("plain.example", 1, ""),
        ];
        for (key, want_code, want) in cases {
            let (code, out, err) = postmap(&["-q", key, table]);
            assert_eq!(
                (code, out.as_str()),
                (want_code, want),
                "{table} {key}: {err}"
            );
        }
    }
}

/// A report whose relays have no port (Exim without `+outgoing_port`, Sendmail, OpenSMTPD,
/// an older sigillo): the smarthost's key assumes port 25, and the summary says so, since a
/// relayhost on 587 would be looked up as `[host]:587` and the pin would never apply.
#[test]
fn a_smarthost_without_a_logged_port_is_keyed_for_25_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let log = testdata().join("relayhost-port.log");
    let run = sigillo(&["report", "--json", log.to_str().unwrap()], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut doc = run.json();
    let strip = |v: &mut serde_json::Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("port");
        }
    };
    for hop in doc["next_hops"].as_array_mut().unwrap() {
        for h in hop["relays"]["hosts"].as_array_mut().unwrap() {
            strip(h);
        }
    }
    for r in doc["relays"].as_array_mut().unwrap() {
        strip(r);
    }
    let report = dir.path().join("no-ports.json");
    std::fs::write(&report, doc.to_string()).unwrap();
    let report = report.to_str().unwrap();
    let run = sigillo(&["policy", "build", "--from-report", report], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "so [smtp.isp.example] assumes port 25: if the relayhost is on another port, the \
             key is [smtp.isp.example]:PORT."
        ),
        "{}",
        run.stdout
    );
    let doc = sigillo(
        &["policy", "build", "--from-report", report, "--json"],
        None,
    )
    .json();
    assert_eq!(doc["smarthosts"][0]["key"], "[smtp.isp.example]");
    assert_eq!(doc["smarthosts"][0]["port_logged"], false);
    // With the ports, no such note.
    let run = sigillo(&["policy", "build", log.to_str().unwrap()], None);
    assert!(!run.stdout.contains("assumes port 25"), "{}", run.stdout);
}
