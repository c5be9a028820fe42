//! Guards docs/report-json.md against drift: `sigillo report --json` and `--csv` over every
//! log fixture of sigillo-logs (Postfix, Exim, Sendmail, OpenSMTPD) may write no field and no
//! CSV column that the document does not name.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Objects keyed by data (TLS versions, cipher names, MTA names), not by field names.
const MAPS: [&str; 5] = [
    "versions",
    "trust",
    "ciphers",
    "key_exchange",
    "other_mta_lines",
];

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sigillo-logs/testdata");
    let mut logs = Vec::new();
    for mta in ["postfix", "exim", "sendmail", "opensmtpd"] {
        for entry in std::fs::read_dir(root.join(mta)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                logs.push(path);
            }
        }
    }
    logs.sort();
    logs
}

/// Every field name in `value`, as `parent.name` (the parent is only for the message).
fn fields(value: &Value, parent: &str, out: &mut BTreeSet<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                out.insert((name.clone(), parent.to_owned()));
                if !MAPS.contains(&name.as_str()) {
                    fields(child, name, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| fields(v, parent, out)),
        _ => {}
    }
}

#[test]
fn every_report_field_and_csv_column_is_documented() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/report-json.md"),
    )
    .unwrap();
    let csv_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .arg("report")
        .arg("--json")
        .arg("--csv")
        .arg(csv_dir.path())
        .args(fixtures())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The fixtures must reach the optional parts, or the check says little.
    for list in [
        "downgrades",
        "starttls_failures",
        "stripping_traces",
        "next_hops",
        "relays",
    ] {
        assert!(
            doc[list].as_array().is_some_and(|l| !l.is_empty()),
            "no {list} in the fixtures' report"
        );
    }
    let mut seen = BTreeSet::new();
    fields(&doc, "", &mut seen);
    for (name, parent) in &seen {
        // `name`, `parent.name`, `name.child`, or a member of an object spelled
        // `{a, name, b}`.
        let named = [
            format!("`{name}`"),
            format!("`{name}."),
            format!("`{parent}.{name}`"),
            format!("{{{name},"),
            format!(", {name},"),
            format!(", {name}}}"),
        ];
        assert!(
            named.iter().any(|n| docs.contains(n.as_str())),
            "report --json writes `{name}` (in `{parent}`), which docs/report-json.md does not name"
        );
    }

    let (_, csv_docs) = docs
        .split_once("## CSV")
        .expect("a CSV section in docs/report-json.md");
    for file in ["daily.csv", "hourly.csv", "peers.csv", "next_hops.csv"] {
        let text = std::fs::read_to_string(csv_dir.path().join(file)).unwrap();
        assert!(csv_docs.contains(&format!("`{file}`")), "{file}");
        let header = text.lines().next().unwrap_or_default();
        for column in header.split(',') {
            assert!(
                csv_docs.contains(&format!("`{column}`")),
                "{file} has the column `{column}`, which the CSV section does not name"
            );
        }
    }
}
