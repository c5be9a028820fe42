//! Table-driven tests over `testdata/dialogues/*.txt`: server-side bytes of SMTP sessions
//! (captured from a real Postfix where possible, hand-written otherwise), each with its
//! expected outcome.
//!
//! File format (see `testdata/README.md`): header lines starting with `#`, then a line `---`,
//! then the raw server bytes exactly as received (CRLF, bare LF and non-UTF-8 bytes kept).
//! Header lines of the form `# key: value` with a known key are metadata:
//!
//! - `config: starttls=no implicit-tls=yes` (defaults: yes, no), `limits: max_line=N max_lines=N` (default limits);
//! - `expect-end: done | incomplete | waiting(Phase) | trailing(N) | error(Kind)`;
//! - `expect-replies: 220 250 …` (codes of the replies the dialogue received);
//! - `expect-steps: EHLO STARTTLS TLS EHLO QUIT CLOSE` (what the dialogue asked for);
//! - `expect-starttls: offered | not-offered | none` (none: no successful EHLO);
//! - `expect-signs: none | masked-banner masked-capability(XXXXXXXA) starttls-rejected(500)`;
//! - optional `expect-ehlo-keywords:` / `expect-tls-ehlo-keywords:` (in order).
//!
//! `known-bug: text` marks a file that shows a known bug of the chunked parsing: the split
//! tests then require the divergence to still be there (remove the line once fixed).
//!
//! Any other `#` line is a comment. After `220` to STARTTLS the following bytes stand for
//! what is read inside TLS (the driver calls `on_tls_established` right away).

use sigillo_smtp::dialogue::{ClientDialogue, Command, DialogueConfig, Phase, Step, Transcript};
use sigillo_smtp::reply::{Reply, ReplyError, ReplyLimits, parse_reply};
use sigillo_smtp::tamper::{self, Sign};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Keys every file must set.
const REQUIRED: &[&str] = &[
    "expect-end",
    "expect-replies",
    "expect-steps",
    "expect-starttls",
    "expect-signs",
];
/// Keys a file may set in addition.
const OPTIONAL: &[&str] = &["expect-ehlo-keywords", "expect-tls-ehlo-keywords"];
/// Fewer files than this means the directory was not found or lost files.
const MIN_FILES: usize = 25;

#[derive(Debug, Clone)]
struct Case {
    name: String,
    config: DialogueConfig,
    limits: ReplyLimits,
    expect: Vec<(String, String)>,
    /// A known parser bug this file shows: the chunking tests must still see it fail (so the
    /// marker is removed once the bug is fixed) instead of failing the suite.
    known_bug: Option<String>,
    body: Vec<u8>,
}

fn dialogues_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dialogues")
}

fn load_cases() -> Vec<Case> {
    let dir = dialogues_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= MIN_FILES,
        "only {} dialogue files in {}",
        paths.len(),
        dir.display()
    );
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(p).unwrap();
            parse_case(&name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect()
}

fn parse_case(name: &str, bytes: &[u8]) -> Result<Case, String> {
    let mut pos = 0;
    let mut header = Vec::new();
    loop {
        let rest = &bytes[pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no `---` line ends the header")?;
        let line = std::str::from_utf8(&rest[..nl]).map_err(|e| format!("header: {e}"))?;
        pos += nl + 1;
        if line == "---" {
            break;
        }
        let text = line
            .strip_prefix('#')
            .ok_or_else(|| format!("header line without `#`: {line:?}"))?;
        header.push(text.strip_prefix(' ').unwrap_or(text).to_owned());
    }
    let mut case = Case {
        name: name.to_owned(),
        config: DialogueConfig {
            ehlo_name: "probe.test".into(),
            starttls: true,
            implicit_tls: false,
        },
        limits: ReplyLimits::default(),
        expect: Vec::new(),
        known_bug: None,
        body: bytes[pos..].to_vec(),
    };
    for line in &header {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "config" => {
                for setting in value.split_whitespace() {
                    match setting {
                        "starttls=yes" => case.config.starttls = true,
                        "starttls=no" => case.config.starttls = false,
                        "implicit-tls=yes" => case.config.implicit_tls = true,
                        "implicit-tls=no" => case.config.implicit_tls = false,
                        other => return Err(format!("unknown config {other:?}")),
                    }
                }
            }
            "limits" => {
                for setting in value.split_whitespace() {
                    let (k, v) = setting
                        .split_once('=')
                        .ok_or_else(|| format!("bad limit {setting:?}"))?;
                    let v: usize = v.parse().map_err(|e| format!("limit {k}: {e}"))?;
                    match k {
                        "max_line" => case.limits.max_line = v,
                        "max_lines" => case.limits.max_lines = v,
                        other => return Err(format!("unknown limit {other:?}")),
                    }
                }
            }
            "known-bug" => case.known_bug = Some(value.to_owned()),
            k if k.starts_with("expect") => {
                if !REQUIRED.contains(&k) && !OPTIONAL.contains(&k) {
                    return Err(format!("unknown expectation {k:?}"));
                }
                if case.expect.iter().any(|(seen, _)| seen == k) {
                    return Err(format!("{k} given twice"));
                }
                case.expect.push((k.to_owned(), value.to_owned()));
            }
            _ => {}
        }
    }
    for key in REQUIRED {
        if !case.expect.iter().any(|(k, _)| k == key) {
            return Err(format!("missing {key}"));
        }
    }
    Ok(case)
}

/// How the byte stream ended for the dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The dialogue closed and every byte was used.
    Done,
    /// The stream ends inside a reply.
    Incomplete,
    /// The stream ends between replies while the dialogue still waits.
    Waiting(Phase),
    /// The dialogue closed with bytes left unread.
    Trailing(usize),
    /// `parse_reply` failed (the error's kind only: `got` in `LineTooLong` depends on how much
    /// of the line was buffered).
    Error(&'static str),
    /// `on_reply` refused a reply.
    Unexpected(Phase, u16),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Done => write!(f, "done"),
            End::Incomplete => write!(f, "incomplete"),
            End::Waiting(phase) => write!(f, "waiting({phase:?})"),
            End::Trailing(n) => write!(f, "trailing({n})"),
            End::Error(kind) => write!(f, "error({kind})"),
            End::Unexpected(phase, code) => write!(f, "unexpected({phase:?},{code})"),
        }
    }
}

fn error_kind(e: &ReplyError) -> &'static str {
    match e {
        ReplyError::LineTooLong { .. } => "LineTooLong",
        ReplyError::TooManyLines { .. } => "TooManyLines",
        ReplyError::BadCode { .. } => "BadCode",
        ReplyError::BadSeparator { .. } => "BadSeparator",
        ReplyError::CodeMismatch { .. } => "CodeMismatch",
        _ => "Other",
    }
}

/// Everything observable about one run of the dialogue over a byte stream.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    replies: Vec<Reply>,
    steps: Vec<String>,
    end: End,
    transcript: Transcript,
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Send(Command::Ehlo(_)) => "EHLO",
        Step::Send(Command::Helo(_)) => "HELO",
        Step::Send(Command::StartTls) => "STARTTLS",
        Step::Send(Command::Quit) => "QUIT",
        Step::StartTls => "TLS",
        Step::Close => "CLOSE",
    }
}

/// Drives `ClientDialogue` like an I/O layer would: append each chunk to a buffer, take
/// every complete reply out of it, and stop at `Close` or the first error.
fn run<'a>(case: &Case, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut dialogue = ClientDialogue::new(case.config.clone());
    let mut buf = Vec::new();
    let mut consumed = 0;
    let mut replies = Vec::new();
    let mut steps = Vec::new();
    let mut stop: Option<End> = None;
    'chunks: for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_reply(&buf, &case.limits) {
                Ok(None) => break,
                Ok(Some((reply, used))) => {
                    assert!(used > 0 && used <= buf.len(), "{}: used {used}", case.name);
                    buf.drain(..used);
                    consumed += used;
                    replies.push(reply.clone());
                    let code = reply.code;
                    let mut step = match dialogue.on_reply(reply) {
                        Ok(step) => step,
                        Err(e) => {
                            stop = Some(End::Unexpected(e.phase, e.code));
                            break 'chunks;
                        }
                    };
                    steps.push(step_name(&step).to_owned());
                    if step == Step::StartTls {
                        assert_eq!(code, 220, "{}", case.name);
                        step = dialogue.on_tls_established();
                        steps.push(step_name(&step).to_owned());
                    }
                    if step == Step::Close {
                        assert_eq!(dialogue.phase(), Phase::Done, "{}", case.name);
                        stop = Some(if consumed == case.body.len() {
                            End::Done
                        } else {
                            End::Trailing(case.body.len() - consumed)
                        });
                        break 'chunks;
                    }
                }
                Err(e) => {
                    stop = Some(End::Error(error_kind(&e)));
                    break 'chunks;
                }
            }
        }
    }
    let end = stop.unwrap_or_else(|| {
        if consumed < case.body.len() {
            End::Incomplete
        } else {
            End::Waiting(dialogue.phase())
        }
    });
    Outcome {
        replies,
        steps,
        end,
        transcript: dialogue.into_transcript(),
    }
}

fn run_whole(case: &Case) -> Outcome {
    run(case, [case.body.as_slice()])
}

fn sign_name(sign: &Sign) -> String {
    match sign {
        Sign::MaskedBanner { .. } => "masked-banner".into(),
        Sign::MaskedCapability { keywords, .. } => {
            format!("masked-capability({})", keywords.join(","))
        }
        Sign::StartTlsRejected { code, .. } => format!("starttls-rejected({code})"),
        _ => "unknown-sign".into(),
    }
}

fn joined<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of each expectation key, as observed.
fn observe(outcome: &Outcome, key: &str) -> String {
    let t = &outcome.transcript;
    match key {
        "expect-end" => outcome.end.to_string(),
        "expect-replies" => joined(outcome.replies.iter().map(|r| r.code)),
        "expect-steps" => outcome.steps.join(" "),
        "expect-starttls" => match t.ehlo_reply() {
            None => "none".into(),
            Some(e) if e.starttls() => "offered".into(),
            Some(_) => "not-offered".into(),
        },
        "expect-ehlo-keywords" => t
            .ehlo_reply()
            .map(|e| e.keywords().join(" "))
            .unwrap_or_default(),
        "expect-tls-ehlo-keywords" => t
            .tls_ehlo_reply()
            .map(|e| e.keywords().join(" "))
            .unwrap_or_default(),
        "expect-signs" => {
            let signs = tamper::signs(t);
            if signs.is_empty() {
                "none".into()
            } else {
                joined(signs.iter().map(sign_name))
            }
        }
        other => panic!("no observation for {other}"),
    }
}

/// The mismatches between a case's expectations and an outcome (empty: all met).
fn check(case: &Case, outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, want) in &case.expect {
        let got = observe(outcome, key);
        if &got != want {
            problems.push(format!(
                "{}: {key}: expected {want:?}, got {got:?}",
                case.name
            ));
        }
    }
    // Evidence must be lines of the session, as `Transcript::evidence_lines` writes them.
    let session = outcome.transcript.evidence_lines();
    for sign in tamper::signs(&outcome.transcript) {
        assert!(!sign.evidence().is_empty(), "{}: {sign:?}", case.name);
        for line in sign.evidence() {
            if !session.contains(line) {
                problems.push(format!(
                    "{}: evidence {line:?} not in transcript",
                    case.name
                ));
            }
        }
    }
    problems
}

#[test]
fn every_file_meets_its_expectations() {
    let mut problems = Vec::new();
    for case in load_cases() {
        let outcome = run_whole(&case);
        problems.extend(check(&case, &outcome));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Asserts no divergence for a normal file, and at least one for a file with a known bug.
fn assert_divergences(case: &Case, test: &str, divergences: &[String]) {
    match &case.known_bug {
        None => assert!(
            divergences.is_empty(),
            "{}: {test}:\n{}",
            case.name,
            divergences.join("\n")
        ),
        Some(bug) => assert!(
            !divergences.is_empty(),
            "{}: {test}: the known bug {bug:?} no longer shows: remove its known-bug line",
            case.name
        ),
    }
}

#[test]
fn split_at_every_position_gives_the_same_outcome() {
    for case in load_cases() {
        let whole = run_whole(&case);
        let mut divergences = Vec::new();
        for at in 0..=case.body.len() {
            let (a, b) = case.body.split_at(at);
            let split = run(&case, [a, b]);
            if split != whole {
                divergences.push(format!("split at {at}: {split:?}\n  whole: {whole:?}"));
            }
        }
        for size in [1, 2, 3, 7] {
            let chunked = run(&case, case.body.chunks(size));
            if chunked != whole {
                divergences.push(format!("chunks of {size}: {chunked:?}\n  whole: {whole:?}"));
            }
        }
        assert_divergences(&case, "split", &divergences);
    }
}

/// Independently of the dialogue: walk the replies of each file; every proper prefix of a
/// complete reply must be `Ok(None)`, the reply alone and the reply followed by the rest of
/// the stream must parse to the same reply and length, and the lines must be the bytes.
#[test]
fn every_proper_prefix_of_a_reply_needs_more_input() {
    let mut complete = 0;
    for case in load_cases() {
        let mut divergences = Vec::new();
        let mut pos = 0;
        while pos < case.body.len() {
            let rest = &case.body[pos..];
            let Ok(Some((reply, used))) = parse_reply(rest, &case.limits) else {
                break;
            };
            complete += 1;
            for cut in 0..used {
                let got = parse_reply(&rest[..cut], &case.limits);
                if got != Ok(None) {
                    divergences.push(format!("reply at {pos}, prefix of {cut} bytes: {got:?}"));
                }
            }
            assert_eq!(
                parse_reply(&rest[..used], &case.limits),
                Ok(Some((reply.clone(), used))),
                "{}: reply at {pos} alone",
                case.name
            );
            let raw = String::from_utf8_lossy(&rest[..used]);
            let lines: Vec<&str> = raw
                .strip_suffix('\n')
                .expect("a reply ends in LF")
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .collect();
            assert_eq!(reply.lines, lines, "{}: reply at {pos}", case.name);
            assert!(reply.lines.len() <= case.limits.max_lines);
            pos += used;
        }
        assert_divergences(&case, "prefixes", &divergences);
    }
    assert!(
        complete >= 60,
        "only {complete} complete replies in the test data"
    );
}

/// Each expectation is really checked: a wrong value for any key of any file is reported.
#[test]
fn wrong_expectations_are_detected() {
    for case in load_cases() {
        let outcome = run_whole(&case);
        assert!(check(&case, &outcome).is_empty(), "{}", case.name);
        for i in 0..case.expect.len() {
            let mut wrong = case.clone();
            wrong.expect[i].1.push_str(" __wrong__");
            let problems = check(&wrong, &outcome);
            assert_eq!(problems.len(), 1, "{}: {:?}", case.name, wrong.expect[i]);
        }
    }
}

#[test]
fn header_format_errors_are_reported() {
    let full = "# expect-end: done\n# expect-replies:\n# expect-steps:\n# expect-starttls: none\n# expect-signs: none\n";
    assert!(parse_case("ok", format!("{full}---\n220 x\r\n").as_bytes()).is_ok());
    let mut bad = Vec::new();
    bad.push(format!("{full}220 x\r\n"));
    bad.push(format!("{full}# expect-stepz: EHLO\n---\n"));
    bad.push(format!("{full}# expect-end: done\n---\n"));
    bad.push(format!("{full}# config: tls=maybe\n---\n"));
    bad.push(format!("{full}# limits: max_line=x\n---\n"));
    bad.push(format!("{full}no hash\n---\n"));
    for key in REQUIRED {
        let mut missing = String::new();
        for line in full.lines().filter(|l| !l.contains(key)) {
            writeln!(missing, "{line}").unwrap();
        }
        missing.push_str("---\n");
        bad.push(missing);
    }
    for text in bad {
        assert!(parse_case("bad", text.as_bytes()).is_err(), "{text:?}");
    }
}

fn case_named(cases: &[Case], name: &str) -> Case {
    cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .clone()
}

/// The hand-made ASA file is what the crate's own ASA imitation makes of the Postfix capture
/// (greeting and EHLO reply; then Postfix's answer to the rewritten command, from
/// postfix-3.7-starttls-rewritten-500.txt, and a 221, since the capture's own 221 follows a STARTTLS session).
#[test]
fn asa_rewriter_turns_the_postfix_capture_into_the_masked_file() {
    use sigillo_smtp::asa::AsaRewriter;
    let cases = load_cases();
    let postfix = case_named(&cases, "postfix-3.7-tls-may.txt");
    let masked = case_named(&cases, "asa-default-masked.txt");
    let plain_end = postfix
        .body
        .windows(9)
        .position(|w| w == b"220 2.0.0")
        .expect("the STARTTLS reply");
    let mut server = postfix.body[..plain_end].to_vec();
    server.extend_from_slice(b"500 5.5.2 Error: command not recognized\r\n221 2.0.0 Bye\r\n");
    let mut whole = AsaRewriter::default();
    assert_eq!(whole.server_to_client(&server), masked.body);
    let mut bytewise = AsaRewriter::default();
    let out: Vec<u8> = server
        .chunks(1)
        .flat_map(|b| bytewise.server_to_client(b))
        .collect();
    assert_eq!(out, masked.body);
}

/// `ReplyLimits::max_reply_bytes` promises a bound on what a caller must buffer: no prefix of
/// any file that is still `Ok(None)` may be longer (regression: `max-reply-bytes-exceeded.txt`,
/// a partial line after `max_lines` continuation lines).
#[test]
fn incomplete_input_stays_within_max_reply_bytes() {
    let mut problems = Vec::new();
    for case in load_cases() {
        let bound = case.limits.max_reply_bytes();
        let mut pos = 0;
        while pos < case.body.len() {
            let rest = &case.body[pos..];
            let mut next = None;
            for cut in 0..=rest.len() {
                match parse_reply(&rest[..cut], &case.limits) {
                    Ok(None) if cut > bound => {
                        problems.push(format!("{}: {cut} bytes at {pos} > {bound}", case.name));
                        break;
                    }
                    Ok(None) => {}
                    Ok(Some((_, used))) => {
                        next = Some(used);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let Some(used) = next else { break };
            pos += used;
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
