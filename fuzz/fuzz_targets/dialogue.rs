//! Arbitrary server bytes through the whole client side: split into replies with
//! `parse_reply`, fed to `ClientDialogue` (STARTTLS "handshakes" succeed at once), then
//! `EhloReply::parse`, `tamper::signs` and the transcript accessors. Never panics.
//!
//! The first input byte chooses the configuration (STARTTLS on/off, implicit TLS, small
//! limits); the rest is the server's byte stream, fed in chunks whose sizes come from the
//! same byte, so partial replies are exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigillo_smtp::dialogue::{ClientDialogue, DialogueConfig, Phase, Step};
use sigillo_smtp::ehlo::EhloReply;
use sigillo_smtp::reply::{ReplyLimits, parse_reply};
use sigillo_smtp::tamper;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let config = DialogueConfig {
        ehlo_name: "probe.test".into(),
        starttls: mode & 1 == 0,
        implicit_tls: mode & 2 != 0,
    };
    let limits = if mode & 4 != 0 {
        ReplyLimits {
            max_line: 32,
            max_lines: 4,
        }
    } else {
        ReplyLimits::default()
    };
    let chunk = usize::from(mode >> 3) + 1;

    let mut dialogue = ClientDialogue::new(config);
    let mut buf = Vec::new();
    'stream: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parse_reply(&buf, &limits) {
                Ok(Some((reply, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    buf.drain(..used);
                    let _ = EhloReply::parse(&reply).map(|e| (e.starttls(), e.masked().count()));
                    match dialogue.on_reply(reply) {
                        Ok(Step::StartTls) => {
                            assert_eq!(dialogue.phase(), Phase::Handshake);
                            let next = dialogue.on_tls_established();
                            assert!(matches!(next, Step::Send(_)));
                        }
                        Ok(Step::Close) => {
                            assert_eq!(dialogue.phase(), Phase::Done);
                            break 'stream;
                        }
                        Ok(Step::Send(_)) => {}
                        Err(_) => break 'stream,
                    }
                }
                Ok(None) => {
                    assert!(buf.len() <= limits.max_reply_bytes());
                    break;
                }
                Err(_) => break 'stream,
            }
        }
    }
    let transcript = dialogue.transcript();
    let _ = transcript.ehlo_reply();
    let _ = transcript.tls_ehlo_reply();
    let _ = transcript.evidence_lines();
    for sign in tamper::signs(transcript) {
        assert!(!sign.evidence().is_empty());
    }
});
