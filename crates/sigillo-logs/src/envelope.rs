//! One raw log line → its envelope: timestamp, host, program, pid and the message, for
//! every format sigillo reads (RFC 3164 syslog without a year, ISO 8601 / RFC 3339 syslog,
//! RFC 5424, journald `short-iso`, and Exim's own mainlog). No I/O.

use crate::model::UnixTime;

/// A log line split into its envelope. Borrowed from the raw line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// When, in Unix seconds (a time without zone is taken as UTC).
    pub time: UnixTime,
    /// The host that logged it (empty for Exim's mainlog).
    pub host: &'a str,
    /// The program or syslog tag without the pid: `postfix/smtpd`,
    /// `postfix/submission/smtpd`, `exim` (also for Exim's mainlog), `sm-mta`, `smtpd`.
    pub program: &'a str,
    pub pid: Option<u32>,
    /// What follows the tag (`connect from …`, `1xV7Qo-… <= …`).
    pub message: &'a str,
    /// The whole line, for evidence.
    pub raw: &'a str,
}
