//! Table-driven tests over `testdata/` (formats in `testdata/README.md`): MTA-STS policy
//! files, socketmap byte streams, `_mta-sts` / `_smtp._tls` TXT record sets, TLSA records and
//! a static override file, each with its expected outcome.

use std::path::{Path, PathBuf};

use sigillo_policy::dane::Tlsa;
use sigillo_policy::mta_sts::{Policy, StsRecord};
use sigillo_policy::overrides::StaticOverrides;
use sigillo_policy::postfix::NextHop;
use sigillo_policy::socketmap::{self, SocketmapError};
use sigillo_policy::tlsrpt::{ReportUri, TlsRptRecord};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// The `*.txt` files of a testdata directory, sorted, at least `min` of them.
fn files(dir: &str, min: usize) -> Vec<(String, Vec<u8>)> {
    let dir = testdata(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= min,
        "only {} files in {}",
        paths.len(),
        dir.display()
    );
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Splits a header file into its `# key: value` pairs (in order) and the body after `---`.
fn header_file(name: &str, bytes: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let mut headers = Vec::new();
    let mut pos = 0;
    loop {
        let nl = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or_else(|| panic!("{name}: no --- line"));
        let line = std::str::from_utf8(&bytes[pos..pos + nl]).unwrap();
        pos += nl + 1;
        if line == "---" {
            return (headers, bytes[pos..].to_vec());
        }
        let rest = line
            .strip_prefix("# ")
            .unwrap_or_else(|| panic!("{name}: header line {line:?}"));
        if let Some((k, v)) = rest.split_once(':') {
            headers.push((k.to_owned(), v.trim().to_owned()));
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn policy_files() {
    for (name, bytes) in files("policies", 15) {
        let (h, body) = header_file(&name, &bytes);
        let result = Policy::parse(&body);
        if let Some(want) = header(&h, "error") {
            let err = result.expect_err(&name);
            assert_eq!(err.to_string(), want, "{name}");
            continue;
        }
        assert_eq!(
            header(&h, "expect"),
            Some("ok"),
            "{name}: expect: ok or error:"
        );
        let policy = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(policy.mode.as_str(), header(&h, "mode").unwrap(), "{name}");
        assert_eq!(
            policy.max_age.to_string(),
            header(&h, "max_age").unwrap(),
            "{name}"
        );
        let mx: Vec<String> = policy.mx.iter().map(ToString::to_string).collect();
        assert_eq!(mx.join(" "), header(&h, "mx").unwrap(), "{name}");
        if let Some(n) = header(&h, "extensions") {
            assert_eq!(policy.extensions.len().to_string(), n, "{name}");
        }
        if let Some(matches) = header(&h, "match") {
            for pair in matches.split_whitespace() {
                let (host, want) = pair.split_once('=').unwrap();
                assert_eq!(
                    policy.mx_matches(&[host]),
                    [want == "true"],
                    "{name}: {host}"
                );
            }
        }
        // The canonical text reads back as the same policy.
        assert_eq!(
            Policy::parse(policy.to_text().as_bytes()).as_ref(),
            Ok(&policy),
            "{name}"
        );
    }
}

#[test]
fn policy_size_cap() {
    let mut body = b"version: STSv1\nmode: none\nmax_age: 0\n".to_vec();
    body.resize(sigillo_policy::mta_sts::MAX_POLICY_BYTES, b'\n');
    assert!(Policy::parse(&body).is_ok(), "exactly the cap is accepted");
    body.push(b'\n');
    assert_eq!(
        Policy::parse(&body).unwrap_err().to_string(),
        "policy larger than 65536 bytes (got 65537)"
    );
}

/// Decodes a socketmap stream with `decode` from a buffer that grows by `chunk` bytes at a
/// time; returns the items and how it ended ("done", "incomplete" or "error TEXT").
fn run_stream<T>(
    body: &[u8],
    chunk: usize,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocketmapError>,
    show: impl Fn(&T) -> String,
) -> (Vec<String>, String) {
    let mut buf = Vec::new();
    let mut items = Vec::new();
    for piece in body.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&buf) {
                Ok(Some((item, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    items.push(show(&item));
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return (items, format!("error {e}")),
            }
        }
    }
    let end = if buf.is_empty() { "done" } else { "incomplete" };
    (items, end.to_owned())
}

#[test]
fn socketmap_streams() {
    for (name, bytes) in files("socketmap", 12) {
        let (h, body) = header_file(&name, &bytes);
        let want_items: Vec<&str> = h
            .iter()
            .filter(|(k, _)| k == "item")
            .map(|(_, v)| v.as_str())
            .collect();
        let want_end = header(&h, "end").unwrap_or_else(|| panic!("{name}: no end"));
        for chunk in [body.len().max(1), 1, 3] {
            let got = match header(&h, "direction") {
                Some("request") => run_stream(&body, chunk, socketmap::decode_request, |r| {
                    format!("{} {}", r.map_name, r.key).trim_end().to_owned()
                }),
                Some("reply") => run_stream(&body, chunk, socketmap::decode_reply, |r| {
                    r.to_string().trim_end().to_owned()
                }),
                other => panic!("{name}: direction {other:?}"),
            };
            let want: Vec<String> = want_items.iter().map(|s| s.trim_end().to_owned()).collect();
            assert_eq!(
                got,
                (want, want_end.to_owned()),
                "{name}, chunks of {chunk}"
            );
        }
    }
}

/// The lines of a table file that are cases: (input, expectation), split at the last tab.
fn table(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(testdata(name)).unwrap();
    let cases: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (input, want) = l
                .rsplit_once('\t')
                .unwrap_or_else(|| panic!("{name}: no tab in {l:?}"));
            (input.to_owned(), want.to_owned())
        })
        .collect();
    assert!(cases.len() >= 10, "{name}: only {} cases", cases.len());
    cases
}

fn records(input: &str) -> Vec<Vec<u8>> {
    input.split(" || ").map(|r| r.as_bytes().to_vec()).collect()
}

/// A TXT table case's outcome: `ok <shown> [name=value …]`, `none` or `error <text>`.
fn txt_outcome<T>(
    result: Result<Option<T>, sigillo_policy::TxtRecordError>,
    show: impl Fn(&T) -> (String, &[(String, String)]),
) -> String {
    match result {
        Ok(Some(record)) => {
            let (shown, extensions) = show(&record);
            let mut s = format!("ok {shown}");
            for (k, v) in extensions {
                s.push_str(&format!(" {k}={v}"));
            }
            s
        }
        Ok(None) => "none".to_owned(),
        Err(e) => format!("error {e}"),
    }
}

#[test]
fn sts_records() {
    for (input, want) in table("sts-records.txt") {
        let got = txt_outcome(StsRecord::from_txt(&records(&input)), |r| {
            (r.id.clone(), &r.extensions)
        });
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn tlsrpt_records() {
    for (input, want) in table("tlsrpt-records.txt") {
        let got = txt_outcome(TlsRptRecord::from_txt(&records(&input)), |r| {
            let uris: Vec<String> = r
                .rua
                .iter()
                .map(|u| match u {
                    ReportUri::Other(o) => format!("other:{o}"),
                    known => known.to_string(),
                })
                .collect();
            (uris.join(","), &r.extensions)
        });
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn tlsa_records() {
    for (input, want) in table("tlsa-records.txt") {
        let got = match Tlsa::from_presentation(&input) {
            Ok(t) => {
                // Presentation output parses back to the same record.
                assert_eq!(Tlsa::from_presentation(&t.to_string()).as_ref(), Ok(&t));
                match t.usability() {
                    Ok(usage) => format!(
                        "usable {}",
                        serde_json::to_value(usage).unwrap().as_str().unwrap()
                    ),
                    Err(why) => format!("unusable {why}"),
                }
            }
            Err(e) => format!("error {e}"),
        };
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn override_file() {
    let text = std::fs::read_to_string(testdata("overrides.conf")).unwrap();
    let overrides = StaticOverrides::parse(&text).unwrap();
    let expectations: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#> "))
        .map(|l| l.split_once(" => ").unwrap())
        .collect();
    assert!(expectations.len() >= 5);
    for (key, want) in expectations {
        let got = overrides
            .lookup(&NextHop::parse(key))
            .map(ToString::to_string);
        assert_eq!(got.as_deref().unwrap_or("-"), want, "{key}");
    }
}
