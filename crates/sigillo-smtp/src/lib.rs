//! SMTP wire formats for sigillo, with no I/O: bytes in, values and events out.
//!
//! - [`reply`]: parse (multi-line) SMTP replies from a byte buffer, with hard limits.
//! - [`ehlo`]: the extensions of an EHLO reply, and masked keywords such as `XXXXXXXA`.
//! - [`dialogue`]: the client side of a probe session (greeting, EHLO/HELO, STARTTLS,
//!   EHLO again inside TLS, QUIT) as a state machine the I/O layer drives.
//! - [`tamper`]: signs of a rewriting middlebox (Cisco PIX/ASA `inspect esmtp`) in a transcript.
//! - [`asa`]: a PIX/ASA-style rewriter, to reproduce stripping in tests and labs.
#![forbid(unsafe_code)]

pub mod asa;
pub mod dialogue;
pub mod ehlo;
pub mod reply;
pub mod tamper;

pub use dialogue::{ClientDialogue, Command, DialogueConfig, Phase, Step, Transcript};
pub use ehlo::{EhloReply, Extension};
pub use reply::{Reply, ReplyError, ReplyLimits, parse_reply};
