//! The client side of a STARTTLS probe as a state machine, with no I/O.
//!
//! The I/O layer reads replies (see [`crate::reply::parse_reply`]) and hands them to
//! [`ClientDialogue::on_reply`]; the dialogue answers with the next [`Step`]: a command to
//! send, a TLS handshake to perform, or the end of the session. Everything said both ways is
//! kept in a [`Transcript`], which is the evidence for findings.

use crate::ehlo::EhloReply;
use crate::reply::Reply;
use serde::Serialize;

/// How the probe should talk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogueConfig {
    /// The name sent with EHLO/HELO.
    pub ehlo_name: String,
    /// Whether to issue STARTTLS when it is offered.
    pub starttls: bool,
    /// The connection is already inside TLS (port 465, RFC 8314): no STARTTLS.
    pub implicit_tls: bool,
}

/// A command the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    StartTls,
    Quit,
}

impl Command {
    /// The command line without CRLF.
    pub fn line(&self) -> String {
        match self {
            Command::Ehlo(name) => format!("EHLO {name}"),
            Command::Helo(name) => format!("HELO {name}"),
            Command::StartTls => "STARTTLS".to_owned(),
            Command::Quit => "QUIT".to_owned(),
        }
    }

    /// The bytes to write, CRLF included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.line().into_bytes();
        bytes.extend_from_slice(b"\r\n");
        bytes
    }
}

/// What the I/O layer must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write this command, then read the reply.
    Send(Command),
    /// The server said 220 to STARTTLS: perform the TLS handshake now, then call
    /// [`ClientDialogue::on_tls_established`].
    StartTls,
    /// The session is over: close the connection.
    Close,
}

/// Where the dialogue is: which reply it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Handshake,
    TlsEhlo,
    Quit,
    Done,
}

/// Who said a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Sent by the client (us).
    Client,
    /// Received from the server.
    Server,
}

/// One line of the session, as sent or received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscriptLine {
    pub direction: Direction,
    /// True once inside TLS.
    pub tls: bool,
    pub line: String,
}

/// The replies of a probe session, by phase, and every line in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Transcript {
    pub greeting: Option<Reply>,
    pub ehlo: Option<Reply>,
    pub helo: Option<Reply>,
    pub starttls: Option<Reply>,
    pub tls_ehlo: Option<Reply>,
    pub quit: Option<Reply>,
    pub lines: Vec<TranscriptLine>,
}

impl Transcript {
    /// The parsed EHLO reply before TLS, if EHLO succeeded.
    pub fn ehlo_reply(&self) -> Option<EhloReply> {
        self.ehlo.as_ref().and_then(|r| EhloReply::parse(r).ok())
    }

    /// The parsed EHLO reply inside TLS, if it succeeded.
    pub fn tls_ehlo_reply(&self) -> Option<EhloReply> {
        self.tls_ehlo
            .as_ref()
            .and_then(|r| EhloReply::parse(r).ok())
    }

    /// The lines of the session, in order, formatted as `S: …` / `C: …` for evidence.
    pub fn evidence_lines(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| {
                let who = match l.direction {
                    Direction::Client => "C",
                    Direction::Server => "S",
                };
                format!("{who}: {}", l.line)
            })
            .collect()
    }
}

/// A reply arrived when none was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply {code} in phase {phase:?}")]
#[non_exhaustive]
pub struct UnexpectedReply {
    pub phase: Phase,
    pub code: u16,
}

/// The client dialogue of one probe session.
#[derive(Debug, Clone)]
pub struct ClientDialogue {
    config: DialogueConfig,
    phase: Phase,
    tls: bool,
    transcript: Transcript,
}

impl ClientDialogue {
    /// A new session, waiting for the greeting.
    pub fn new(config: DialogueConfig) -> Self {
        Self {
            tls: config.implicit_tls,
            config,
            phase: Phase::Greeting,
            transcript: Transcript::default(),
        }
    }

    /// The reply the dialogue is waiting for.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether TLS has been established.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// What was said so far.
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// Consumes the dialogue, returning what was said.
    pub fn into_transcript(self) -> Transcript {
        self.transcript
    }

    fn send(&mut self, command: Command) -> Step {
        self.transcript.lines.push(TranscriptLine {
            direction: Direction::Client,
            tls: self.tls,
            line: command.line(),
        });
        self.phase = match command {
            Command::Ehlo(_) if self.tls && !self.config.implicit_tls => Phase::TlsEhlo,
            Command::Ehlo(_) => Phase::Ehlo,
            Command::Helo(_) => Phase::Helo,
            Command::StartTls => Phase::StartTls,
            Command::Quit => Phase::Quit,
        };
        Step::Send(command)
    }

    fn close(&mut self) -> Step {
        self.phase = Phase::Done;
        Step::Close
    }

    /// Feeds the next complete reply from the server; returns what to do next.
    pub fn on_reply(&mut self, reply: Reply) -> Result<Step, UnexpectedReply> {
        if matches!(self.phase, Phase::Handshake | Phase::Done) {
            return Err(UnexpectedReply {
                phase: self.phase,
                code: reply.code,
            });
        }
        for line in &reply.lines {
            self.transcript.lines.push(TranscriptLine {
                direction: Direction::Server,
                tls: self.tls,
                line: line.clone(),
            });
        }
        let code = reply.code;
        let step = match self.phase {
            Phase::Greeting => {
                self.transcript.greeting = Some(reply);
                match code {
                    220 => self.send(Command::Ehlo(self.config.ehlo_name.clone())),
                    // RFC 5321 §3.1: after a 554 greeting the client should QUIT.
                    554 => self.send(Command::Quit),
                    _ => self.close(),
                }
            }
            Phase::Ehlo => {
                // A masked keyword (`XXXXXXXA`) may be STARTTLS hidden by a middlebox: try the
                // command anyway, so a rewrite of the command itself shows too (the server then
                // answers 500/502 to `XXXXXXXA`).
                let starttls = EhloReply::parse(&reply)
                    .is_ok_and(|e| e.starttls() || e.masked().next().is_some());
                self.transcript.ehlo = Some(reply);
                match code {
                    250 if starttls && self.config.starttls && !self.tls => {
                        self.send(Command::StartTls)
                    }
                    250 => self.send(Command::Quit),
                    421 => self.close(),
                    // EHLO not understood: fall back to HELO (RFC 5321 §4.1.1.1).
                    500..=504 | 550 => self.send(Command::Helo(self.config.ehlo_name.clone())),
                    _ => self.send(Command::Quit),
                }
            }
            Phase::Helo => {
                self.transcript.helo = Some(reply);
                if code == 421 {
                    self.close()
                } else {
                    self.send(Command::Quit)
                }
            }
            Phase::StartTls => {
                self.transcript.starttls = Some(reply);
                match code {
                    220 => {
                        self.phase = Phase::Handshake;
                        Step::StartTls
                    }
                    421 => self.close(),
                    _ => self.send(Command::Quit),
                }
            }
            Phase::TlsEhlo => {
                self.transcript.tls_ehlo = Some(reply);
                if code == 421 {
                    self.close()
                } else {
                    self.send(Command::Quit)
                }
            }
            Phase::Quit => {
                self.transcript.quit = Some(reply);
                self.close()
            }
            Phase::Handshake | Phase::Done => unreachable_phase(),
        };
        Ok(step)
    }

    /// The TLS handshake after STARTTLS succeeded: the dialogue sends EHLO again.
    pub fn on_tls_established(&mut self) -> Step {
        self.tls = true;
        self.send(Command::Ehlo(self.config.ehlo_name.clone()))
    }
}

// Both phases return early in `on_reply`; this keeps the match exhaustive without a panic.
fn unreachable_phase() -> Step {
    Step::Close
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{ReplyLimits, parse_reply};

    fn reply(raw: &str) -> Reply {
        parse_reply(raw.as_bytes(), &ReplyLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn dialogue() -> ClientDialogue {
        ClientDialogue::new(DialogueConfig {
            ehlo_name: "probe.test".into(),
            starttls: true,
            implicit_tls: false,
        })
    }

    #[test]
    fn full_starttls_session() {
        let mut d = dialogue();
        assert_eq!(
            d.on_reply(reply("220 mx ESMTP\r\n")).unwrap(),
            Step::Send(Command::Ehlo("probe.test".into()))
        );
        assert_eq!(
            d.on_reply(reply("250-mx\r\n250 STARTTLS\r\n")).unwrap(),
            Step::Send(Command::StartTls)
        );
        assert_eq!(
            d.on_reply(reply("220 2.0.0 Ready to start TLS\r\n"))
                .unwrap(),
            Step::StartTls
        );
        assert_eq!(d.phase(), Phase::Handshake);
        assert!(d.on_reply(reply("250 early\r\n")).is_err());
        assert_eq!(
            d.on_tls_established(),
            Step::Send(Command::Ehlo("probe.test".into()))
        );
        assert_eq!(
            d.on_reply(reply("250-mx\r\n250 AUTH PLAIN\r\n")).unwrap(),
            Step::Send(Command::Quit)
        );
        assert_eq!(d.on_reply(reply("221 bye\r\n")).unwrap(), Step::Close);
        let t = d.into_transcript();
        assert!(t.tls_ehlo_reply().unwrap().has("AUTH"));
        assert_eq!(t.lines.iter().filter(|l| l.tls).count(), 5);
        assert_eq!(t.evidence_lines()[0], "S: 220 mx ESMTP");
        assert_eq!(t.evidence_lines()[1], "C: EHLO probe.test");
    }

    #[test]
    fn masked_keyword_gets_a_starttls_attempt() {
        let mut d = dialogue();
        d.on_reply(reply("220 ****\r\n")).unwrap();
        assert_eq!(
            d.on_reply(reply("250-mx\r\n250 XXXXXXXA\r\n")).unwrap(),
            Step::Send(Command::StartTls)
        );
        assert_eq!(
            d.on_reply(reply("500 5.5.2 Error: command not recognized\r\n"))
                .unwrap(),
            Step::Send(Command::Quit)
        );
    }

    #[test]
    fn no_starttls_quits() {
        let mut d = dialogue();
        d.on_reply(reply("220 mx\r\n")).unwrap();
        assert_eq!(
            d.on_reply(reply("250-mx\r\n250 SIZE 10\r\n")).unwrap(),
            Step::Send(Command::Quit)
        );
    }

    #[test]
    fn helo_fallback_and_rejections() {
        let mut d = dialogue();
        d.on_reply(reply("220 mx\r\n")).unwrap();
        assert_eq!(
            d.on_reply(reply("502 no\r\n")).unwrap(),
            Step::Send(Command::Helo("probe.test".into()))
        );
        assert_eq!(
            d.on_reply(reply("250 mx\r\n")).unwrap(),
            Step::Send(Command::Quit)
        );

        let mut d = dialogue();
        assert_eq!(d.on_reply(reply("421 busy\r\n")).unwrap(), Step::Close);
        let mut d = dialogue();
        assert_eq!(
            d.on_reply(reply("554 go away\r\n")).unwrap(),
            Step::Send(Command::Quit)
        );

        let mut d = dialogue();
        d.on_reply(reply("220 mx\r\n")).unwrap();
        d.on_reply(reply("250-mx\r\n250 STARTTLS\r\n")).unwrap();
        assert_eq!(
            d.on_reply(reply("454 4.7.0 TLS not available\r\n"))
                .unwrap(),
            Step::Send(Command::Quit)
        );
        assert_eq!(d.transcript().starttls.as_ref().unwrap().code, 454);
    }
}
