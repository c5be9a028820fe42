//! `parse_reply` on arbitrary bytes, under small and default limits.
//!
//! Invariants: never panics; `Some` consumes at least one and at most all input bytes, ends
//! on a LF, and has between 1 and `max_lines` lines, all with the reply's code; a line is never
//! longer than `max_line`; reparsing exactly the consumed bytes gives the same reply; an
//! unterminated tail beyond `max_line + 1` bytes is an error, so an incomplete buffer stays
//! bounded (see the known gap below); and parsing a prefix of the input never contradicts the whole input
//! (a prefix of a complete reply is `Ok(None)`, a prefix of an error is `Ok(None)` or an error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigillo_smtp::reply::{ReplyLimits, parse_reply};

/// Known bug (testdata/dialogues/greeting-only-code.txt): a code-only line cut between CR
/// and LF (`220\r`) is rejected with BadSeparator instead of Ok(None). Skipped here so the
/// fuzzer keeps looking for other problems; remove once parse_reply is fixed.
fn known_bug_code_only_cr(prefix: &[u8]) -> bool {
    let tail = match prefix.iter().rposition(|&b| b == b'\n') {
        Some(nl) => &prefix[nl + 1..],
        None => prefix,
    };
    tail.len() == 4 && tail[..3].iter().all(u8::is_ascii_digit) && tail[3] == b'\r'
}

fn check(data: &[u8], limits: &ReplyLimits) {
    let result = parse_reply(data, limits);
    match &result {
        Ok(Some((reply, used))) => {
            let used = *used;
            assert!(used > 0, "consumed nothing");
            assert!(used <= data.len(), "consumed {used} of {}", data.len());
            assert_eq!(data[used - 1], b'\n', "a reply ends on LF");
            assert!(!reply.lines.is_empty());
            assert!(
                reply.lines.len() <= limits.max_lines,
                "{} lines",
                reply.lines.len()
            );
            assert!((200..600).contains(&reply.code), "code {}", reply.code);
            for line in &reply.lines {
                assert!(line.starts_with(&reply.code.to_string()), "{line:?}");
            }
            // Lines are stored lossily (one U+FFFD may replace up to 3 bytes): bound by bytes.
            let raw = &data[..used];
            for raw_line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let len = raw_line.len() - usize::from(raw_line.ends_with(b"\r"));
                assert!(len <= limits.max_line, "line of {len} bytes");
            }
            assert_eq!(
                parse_reply(raw, limits),
                Ok(Some((reply.clone(), used))),
                "reparse of the consumed bytes"
            );
        }
        Ok(None) => {
            // A caller never needs to buffer more than this for one reply.
            let bound = limits.max_reply_bytes();
            assert!(data.len() <= bound, "{} bytes still incomplete", data.len());
        }
        Err(_) => {}
    }
    // Prefix consistency (all cuts for short inputs, a few for long ones).
    let cuts: Vec<usize> = if data.len() <= 256 {
        (0..data.len()).collect()
    } else {
        vec![0, 1, data.len() / 2, data.len() - 2, data.len() - 1]
    };
    let needed = match &result {
        Ok(Some((_, used))) => *used,
        _ => data.len(),
    };
    for cut in cuts.into_iter().filter(|&c| c < needed) {
        let prefix = &data[..cut];
        let got = parse_reply(prefix, limits);
        match (&result, &got) {
            (_, Ok(None)) => {}
            (Err(_), Err(_)) => {}
            _ if known_bug_code_only_cr(prefix) => {}
            _ => panic!("prefix of {cut} bytes gives {got:?}, whole input gives {result:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, &ReplyLimits::default());
    check(
        data,
        &ReplyLimits {
            max_line: 16,
            max_lines: 3,
        },
    );
    check(
        data,
        &ReplyLimits {
            max_line: 0,
            max_lines: 1,
        },
    );
    // First byte picks odd limits, including zero lines.
    if let Some((&b, rest)) = data.split_first() {
        check(
            rest,
            &ReplyLimits {
                max_line: usize::from(b >> 3),
                max_lines: usize::from(b & 7),
            },
        );
    }
});
