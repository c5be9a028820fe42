//! Runs the `sigillo` binary once, to completion, with a hard time limit so a hang fails
//! the test instead of stalling CI; for the `check` tests.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a single run may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `sigillo ARGS` (with `stdin`, if given, and `NO_COLOR=1`): (exit code, stdout,
/// stderr).
pub fn sigillo<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sigillo");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sigillo {shown:?} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if shown.first().is_some_and(|c| c == "check") && shown.iter().any(|a| a == "--json") {
        findings_are_documented(&stdout);
    }
    (
        out.status.code().unwrap_or(-1),
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every finding id and kind in `check --json` output is named in docs/check-json.md (the
/// finding table is checked row by row against the code in sigillo-check's `finding_docs`
/// test; this catches kinds the code picks at run time).
fn findings_are_documented(stdout: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/check-json.md");
    let docs = std::fs::read_to_string(path).unwrap();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        for f in doc["findings"].as_array().into_iter().flatten() {
            for field in ["id", "kind"] {
                let name = f[field].as_str().unwrap_or_default();
                assert!(
                    docs.contains(&format!("`{name}`")),
                    "finding {field} {name:?} is not in docs/check-json.md: {f}"
                );
            }
        }
    }
}
