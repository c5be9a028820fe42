//! Guards docs/check-json.md against drift: every finding id the code can emit, and every
//! kind written next to it as a literal, must be in the finding table there, and every id the
//! table lists must still be emitted. The code is read as text (its non-test part), the
//! table is parsed from the Markdown: no probe runs.

use sigillo_check::policy::sigillo_policy::tlsrpt::ResultType;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The files that construct findings.
const SOURCES: [&str; 3] = ["src/report.rs", "src/check.rs", "src/policy_report.rs"];

/// The finding table of docs/check-json.md: id → its kinds (every backticked word of the
/// kinds column, so a parenthetical `text/plain` is harmless). A row with an empty id
/// continues the id above it.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/check-json.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut table = BTreeMap::<String, BTreeSet<String>>::new();
    let mut current = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("| id | severity | kinds |") {
            inside = true;
            continue;
        }
        if !inside || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            if !table.is_empty() {
                break;
            }
            continue;
        }
        let line = line.replace("\\|", "/");
        let cells: Vec<&str> = line.split('|').skip(1).collect();
        let id = cells[0].trim().trim_matches('`');
        if !id.is_empty() {
            current = id.to_owned();
        }
        let kinds = table.entry(current.clone()).or_default();
        for (i, word) in cells.get(2).unwrap_or(&"").split('`').enumerate() {
            if i % 2 == 1 {
                kinds.insert(word.to_owned());
            }
        }
    }
    assert!(
        table.len() > 10,
        "no finding table found in {}",
        path.display()
    );
    table
}

/// The non-test part of each source file, with all white space removed.
fn code() -> String {
    let mut all = String::new();
    for file in SOURCES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        all.extend(text.chars().filter(|c| !c.is_whitespace()));
    }
    all
}

/// The id an expression names: a literal, or `ResultType::X.as_str()`.
fn id_expr(expr: &str) -> Option<(String, usize)> {
    if let Some(rest) = expr.strip_prefix('"') {
        let end = rest.find('"')?;
        return Some((rest[..end].to_owned(), end + 2));
    }
    let rest = expr.strip_prefix("ResultType::")?;
    let end = rest.find(".as_str()")?;
    let variant = &rest[..end];
    let id = ResultType::ALL
        .iter()
        .find(|t| format!("{t:?}") == variant)
        .unwrap_or_else(|| panic!("unknown ResultType::{variant}"));
    Some((
        id.as_str().to_owned(),
        "ResultType::".len() + end + ".as_str()".len(),
    ))
}

/// (id, kind) of every finding built with a literal or `ResultType` id; kind is `None` when
/// it is not a literal (a variable set from a match, checked by the integration tests).
fn emitted(code: &str) -> BTreeSet<(String, Option<String>)> {
    let mut out = BTreeSet::new();
    for opener in ["finding(", "id:", "acc.inconclusive("] {
        for (at, _) in code.match_indices(opener) {
            // `fn finding(` and `mismatch_finding(` are definitions or wrappers.
            if code[..at].ends_with("fn") || code[..at].ends_with('_') {
                continue;
            }
            let rest = &code[at + opener.len()..];
            if opener == "acc.inconclusive(" {
                let kind = rest
                    .strip_prefix('"')
                    .and_then(|r| Some(&r[..r.find('"')?]));
                out.insert(("inconclusive".to_owned(), kind.map(str::to_owned)));
                continue;
            }
            let Some((id, len)) = id_expr(rest) else {
                continue;
            };
            let after = rest[len..].strip_prefix(',').unwrap_or_default();
            let after = after.strip_prefix("kind:").unwrap_or(after);
            let kind = after
                .strip_prefix('"')
                .and_then(|r| Some(r[..r.find('"')?].to_owned()));
            out.insert((id, kind));
        }
    }
    // `(id, kind, severity)` tuples chosen by a match before the finding is built.
    for (at, _) in code.match_indices(",Severity::") {
        let head = &code[..at];
        let Some(open) = head.rfind('(') else {
            continue;
        };
        let fields: Vec<&str> = head[open + 1..].split(',').collect();
        if let [id, kind] = fields[..]
            && id.starts_with('"')
            && kind.starts_with('"')
        {
            let unquote = |s: &str| s.trim_matches('"').to_owned();
            out.insert((unquote(id), Some(unquote(kind))));
        }
    }
    out
}

#[test]
fn every_emitted_finding_is_documented_and_every_documented_id_is_emitted() {
    let docs = documented();
    let code = code();
    let emitted = emitted(&code);
    let ids: BTreeSet<&str> = emitted.iter().map(|(id, _)| id.as_str()).collect();
    assert!(
        ids.len() >= 10,
        "the scan found too few finding ids: {ids:?}"
    );
    for (id, kind) in &emitted {
        let kinds = docs.get(id).unwrap_or_else(|| {
            panic!("finding id {id:?} is emitted but not in docs/check-json.md")
        });
        if let Some(kind) = kind {
            assert!(
                kinds.contains(kind),
                "finding {id:?} kind {kind:?} is emitted but not in docs/check-json.md ({kinds:?})"
            );
        }
    }
    // Certificate problems become findings through `result_type()`, not a literal.
    let certificate = [
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
        ResultType::ValidationFailure,
        ResultType::StsPolicyFetchError,
        ResultType::StsWebpkiInvalid,
    ]
    .map(ResultType::as_str);
    for id in docs.keys() {
        assert!(
            ids.contains(id.as_str()) || certificate.contains(&id.as_str()),
            "docs/check-json.md lists finding id {id:?}, which the code never emits"
        );
    }
}
