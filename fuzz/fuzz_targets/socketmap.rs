//! The socketmap codec of sigillo-policy on arbitrary bytes, read as a request stream (what
//! Postfix sends the daemon) and as a reply stream (what a client reads), plus the decision
//! for each decoded key.
//!
//! Invariants: never panics; each decoded item uses at least 3 and at most all remaining
//! bytes; every proper prefix of an item's bytes is `Ok(None)` ("need more"), never an item
//! or an error; an item re-encodes to exactly its bytes (the framing is canonical: no leading
//! zeros) unless its text holds a control character, which the encoders refuse, or a reply
//! is not written `STATUS TEXT` (`OK` alone, `NOTFOUND x`: see `decode_reply`); an
//! incomplete tail stays within the cap; every decision for a decoded key encodes.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use sigillo_policy::decide::{DecideConfig, Inputs, decide};
use sigillo_policy::postfix::NextHop;
use sigillo_policy::socketmap::{
    self, MAX_REPLY_LEN, MAX_REQUEST_LEN, Reply, SocketmapError, decode_reply, decode_request,
};

/// Digits of the cap, the colon, the payload: the most an incomplete netstring can hold.
fn incomplete_bound(cap: usize) -> usize {
    cap.to_string().len() + 1 + cap
}

fn walk<T>(
    data: &[u8],
    cap: usize,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocketmapError>,
    reencode: impl Fn(&T, &[u8]) -> Option<Vec<u8>>,
    mut each: impl FnMut(&T),
) {
    let mut rest = data;
    loop {
        match decode(rest) {
            Ok(Some((item, used))) => {
                assert!(
                    used >= 3 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                let bytes = &rest[..used];
                for cut in [0, 1, used / 2, used - 1] {
                    assert!(
                        matches!(decode(&bytes[..cut]), Ok(None)),
                        "a prefix of {cut} bytes of an item is not 'need more'"
                    );
                }
                if let Some(again) = reencode(&item, bytes) {
                    assert_eq!(again, bytes, "re-encoding differs");
                }
                each(&item);
                rest = &rest[used..];
            }
            Ok(None) => {
                assert!(
                    rest.len() <= incomplete_bound(cap),
                    "{} bytes incomplete",
                    rest.len()
                );
                return;
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = DecideConfig::default();
    let now = jiff::Timestamp::UNIX_EPOCH;
    walk(
        data,
        MAX_REQUEST_LEN,
        decode_request,
        |r, _| {
            let mut out = Vec::new();
            socketmap::encode_request(&r.map_name, &r.key, &mut out).ok()?;
            Some(out)
        },
        |r| {
            let next_hop = NextHop::parse(&r.key);
            let decision = decide(&Inputs::new(&next_hop), now, &config);
            decision
                .reply()
                .to_bytes()
                .expect("a decision always encodes");
        },
    );
    walk(
        data,
        MAX_REPLY_LEN,
        decode_reply,
        |r, bytes| {
            // Read as Postfix reads replies, a status word without its space decodes too
            // (`OK` alone as not found), and `NOTFOUND` with any text after it; each encodes
            // as `STATUS TEXT`, so only replies written that way come back the same.
            let colon = bytes.iter().position(|&b| b == b':').unwrap_or_default();
            let payload = &bytes[colon + 1..];
            let canonical = match r {
                Reply::NotFound => payload == b"NOTFOUND ,",
                _ => payload.starts_with(format!("{} ", r.status()).as_bytes()),
            };
            canonical.then(|| r.to_bytes().ok()).flatten()
        },
        |r| {
            let clean = Reply::Temp(socketmap::sanitize_text(r.text()));
            clean.to_bytes().expect("sanitized text always encodes");
        },
    );
});
