//! Log analysis for `sigillo report`: how much mail really travelled over TLS, from what the
//! MTAs wrote.
//!
//! The pipeline, each stage its own module:
//! 1. [`envelope`]: one raw log line → a [`envelope::Line`] (timestamp, host, program, pid,
//!    message), whatever the syslog or journald format; no I/O.
//! 2. An MTA parser ([`postfix`], [`exim`], [`sendmail`], [`opensmtpd`]), each a
//!    [`model::MtaParser`]: lines in, [`model::Record`]s out (messages, deliveries,
//!    connections, anomalies), joining the lines of a session by pid, queue id or session id;
//!    no I/O, state bounded by open sessions.
//! 3. [`aggregate`]: records in, figures out (shares per direction, day, hour, peer, TLS
//!    version; downgrades); state bounded by distinct peers.
//!
//! [`input`] is the I/O around it: files, directories, `.gz`/`.zst`, stdin, format detection,
//! and the bad input met on the way.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod analysis;
pub mod envelope;
pub mod exim;
mod fields;
pub mod input;
pub mod model;
pub mod next_hop_relays;
pub mod opensmtpd;
pub mod postfix;
mod recipient;
pub mod sendmail;
