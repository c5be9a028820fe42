//! Signs in an SMTP transcript that a middlebox rewrote the session, as Cisco PIX/ASA
//! `inspect esmtp` does by default: a masked banner, `STARTTLS` masked as `XXXXXXXA`,
//! and STARTTLS answered 500/502 because the command itself was rewritten on its way.

use crate::dialogue::Transcript;
use crate::reply::Reply;
use serde::Serialize;

/// One sign of tampering, with the lines that show it (`S: …` from the server, `C: …` from
/// the client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Sign {
    /// The greeting's text is only asterisks (`220 ******`).
    MaskedBanner { evidence: Vec<String> },
    /// EHLO keywords replaced by runs of X or asterisks (`250-XXXXXXXA`).
    MaskedCapability {
        keywords: Vec<String>,
        evidence: Vec<String>,
    },
    /// STARTTLS was offered but the command was refused.
    StartTlsRejected { code: u16, evidence: Vec<String> },
}

impl Sign {
    /// The lines that show the sign.
    pub fn evidence(&self) -> &[String] {
        match self {
            Sign::MaskedBanner { evidence }
            | Sign::MaskedCapability { evidence, .. }
            | Sign::StartTlsRejected { evidence, .. } => evidence,
        }
    }
}

/// True when a greeting's text is nothing but asterisks (and blanks) on every line.
pub fn is_masked_banner(greeting: &Reply) -> bool {
    greeting.texts().any(|t| t.contains('*'))
        && greeting
            .texts()
            .all(|t| t.bytes().all(|b| b == b'*' || b == b' ' || b == b'\t'))
}

/// Finds the tampering signs in a transcript (before TLS; nothing inside TLS can be rewritten).
pub fn signs(transcript: &Transcript) -> Vec<Sign> {
    let mut signs = Vec::new();
    if let Some(greeting) = &transcript.greeting
        && greeting.code == 220
        && is_masked_banner(greeting)
    {
        signs.push(Sign::MaskedBanner {
            evidence: server_lines(&greeting.lines),
        });
    }
    let ehlo = transcript.ehlo_reply();
    if let Some(ehlo) = &ehlo {
        let masked: Vec<_> = ehlo.masked().collect();
        if !masked.is_empty() {
            signs.push(Sign::MaskedCapability {
                keywords: masked.iter().map(|e| e.keyword.clone()).collect(),
                evidence: masked.iter().map(|e| format!("S: {}", e.line)).collect(),
            });
        }
    }
    if let Some(reply) = &transcript.starttls
        && matches!(reply.code, 454 | 500..=504)
    {
        let mut evidence: Vec<String> = ehlo
            .iter()
            .flat_map(|e| e.extensions.iter())
            .filter(|e| e.keyword == "STARTTLS")
            .map(|e| format!("S: {}", e.line))
            .collect();
        evidence.push("C: STARTTLS".to_owned());
        evidence.extend(server_lines(&reply.lines));
        signs.push(Sign::StartTlsRejected {
            code: reply.code,
            evidence,
        });
    }
    signs
}

fn server_lines(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| format!("S: {l}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::{ClientDialogue, DialogueConfig};
    use crate::reply::{ReplyLimits, parse_reply};

    fn run(replies: &[&str]) -> Transcript {
        let mut d = ClientDialogue::new(DialogueConfig {
            ehlo_name: "probe.test".into(),
            starttls: true,
            implicit_tls: false,
        });
        for raw in replies {
            let (reply, _) = parse_reply(raw.as_bytes(), &ReplyLimits::default())
                .unwrap()
                .unwrap();
            d.on_reply(reply).unwrap();
        }
        d.into_transcript()
    }

    #[test]
    fn asa_defaults() {
        let t = run(&[
            "220 ******************************\r\n",
            "250-mx.lab.test\r\n250-PIPELINING\r\n250-XXXXXXXA\r\n250 8BITMIME\r\n",
        ]);
        let s = signs(&t);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            Sign::MaskedBanner {
                evidence: vec!["S: 220 ******************************".into()]
            }
        );
        assert_eq!(
            s[1],
            Sign::MaskedCapability {
                keywords: vec!["XXXXXXXA".into()],
                evidence: vec!["S: 250-XXXXXXXA".into()]
            }
        );
    }

    #[test]
    fn starttls_rewritten_on_the_way_out() {
        let t = run(&[
            "220 mx.lab.test ESMTP\r\n",
            "250-mx.lab.test\r\n250 STARTTLS\r\n",
            "500 5.5.2 Error: command not recognized\r\n",
        ]);
        assert_eq!(
            signs(&t),
            [Sign::StartTlsRejected {
                code: 500,
                evidence: vec![
                    "S: 250 STARTTLS".into(),
                    "C: STARTTLS".into(),
                    "S: 500 5.5.2 Error: command not recognized".into()
                ]
            }]
        );
    }

    #[test]
    fn clean_sessions_have_no_signs() {
        let plain = run(&[
            "220 mx.lab.test ESMTP Postfix\r\n",
            "250-mx.lab.test\r\n250 SIZE 1000\r\n",
        ]);
        assert!(signs(&plain).is_empty());
        let stars_in_text = run(&["220 mx.lab.test *** welcome ***\r\n"]);
        assert!(signs(&stars_in_text).is_empty());
    }

    #[test]
    fn masked_banner_table() {
        for (raw, masked) in [
            ("220 ****\r\n", true),
            ("220-*****\r\n220 ****\r\n", true),
            ("220 \r\n", false),
            ("220 mx ESMTP\r\n", false),
            ("220-****\r\n220 mx ESMTP\r\n", false),
        ] {
            let (reply, _) = parse_reply(raw.as_bytes(), &ReplyLimits::default())
                .unwrap()
                .unwrap();
            assert_eq!(is_masked_banner(&reply), masked, "{raw:?}");
        }
    }
}
