//! TLS policy for sending MTAs, with no I/O: MTA-STS and TLS-RPT parsing, DANE TLSA matching,
//! the Postfix socketmap codec, and the decision a policy daemon gives Postfix.
//!
//! Everything here takes bytes, strings and timestamps and returns values: no network, DNS,
//! file or clock access. The I/O layer (sigillo's `check` and `policy serve`) does the
//! lookups and fetches, and calls in here to interpret them. All types are `Send + Sync`
//! plain data, so async code can call these functions directly.
//!
//! | module | what it does | standard |
//! |---|---|---|
//! | [`socketmap`] | netstring framing; decode requests (pipelined, with `Ok(None)` for "need more"), encode replies | Postfix `socketmap_table(5)` |
//! | [`mta_sts`] | `_mta-sts` TXT record, policy file, MX pattern matching | RFC 8461 |
//! | [`tlsrpt`] | `_smtp._tls` TXT record, result and policy type names | RFC 8460 |
//! | [`dane`] | TLSA records, usability for SMTP, matching a certificate chain | RFC 6698, 7671, 7672 |
//! | [`postfix`] | Postfix policy answers (`secure match=…`), next-hop keys, pin files for Postfix and Exim | Postfix TLS_README |
//! | [`overrides`] | the static override file (`key  policy` lines) | |
//! | [`cache`] | MTA-STS cache validity, refresh and negative-TTL rules | RFC 8461 §3.3, §5.1 |
//! | [`decide`] | the answer for one key: override → DANE → MTA-STS → pin → `NOTFOUND`/`TEMP` | |
//! | [`domain`] | domain-name validation and canonical form | RFC 1035, 5321 |
//!
//! # A socketmap daemon's loop, in outline
//!
//! ```
//! use jiff::Timestamp;
//! use sigillo_policy::cache::CachedPolicy;
//! use sigillo_policy::decide::{decide, DaneState, DecideConfig, Inputs};
//! use sigillo_policy::mta_sts::{Policy, StsRecord};
//! use sigillo_policy::postfix::NextHop;
//! use sigillo_policy::socketmap::decode_request;
//!
//! // Bytes read from Postfix's connection (possibly several pipelined requests).
//! let mut input: &[u8] = b"19:postfix example.com,";
//! let mut output = Vec::new();
//! let now = Timestamp::from_second(1_700_000_000)?;
//!
//! // What the I/O layer found earlier: the TXT record and the policy it fetched.
//! let record = StsRecord::from_txt(&["v=STSv1; id=20240101;"])?.expect("one record");
//! let policy = Policy::parse(b"version: STSv1\nmode: enforce\nmx: *.example.com\nmax_age: 86400\n")?;
//! let cached = CachedPolicy::new(record.id, policy, now);
//!
//! while let Some((request, used)) = decode_request(input)? {
//!     input = &input[used..];
//!     let next_hop = NextHop::parse(&request.key);
//!     let mut inputs = Inputs::new(&next_hop);
//!     inputs.dane = DaneState::NoTlsa;
//!     inputs.sts.cached = Some(&cached);
//!     let decision = decide(&inputs, now, &DecideConfig::default());
//!     decision.reply().encode(&mut output)?;
//! }
//! assert_eq!(output, b"48:OK secure match=.example.com servername=hostname,");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Limits
//!
//! Every input has a hard cap: socketmap requests [`socketmap::MAX_REQUEST_LEN`] and replies
//! [`socketmap::MAX_REPLY_LEN`] (Postfix's), policy files [`mta_sts::MAX_POLICY_BYTES`],
//! domain names [`domain::MAX_DOMAIN_LEN`]. Errors are `#[non_exhaustive]` enums with the
//! expected and the offending value (cut to 100 characters).
#![forbid(unsafe_code)]

pub mod cache;
pub mod dane;
pub mod decide;
pub mod domain;
pub mod mta_sts;
pub mod overrides;
pub mod postfix;
pub mod socketmap;
pub mod tlsrpt;
mod txt;

pub use txt::{TxtRecordError, concat_strings};

/// Helpers shared by the unit tests.
#[cfg(test)]
mod test_support {
    /// The error and its sources joined by `: `, as the CLI prints them (anyhow's `{:#}`).
    pub(crate) fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(source) = next {
            out.push_str(": ");
            out.push_str(&source.to_string());
            next = source.source();
        }
        out
    }
}
