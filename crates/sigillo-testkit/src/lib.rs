//! Test harness for sigillo's integration tests: real and fake peers on loopback, in temp dirs,
//! on free ports, stopped and cleaned up when their handle is dropped. Nothing reaches the internet.
//!
//! The API is synchronous, for plain `#[test]` functions; servers run on background threads.
//!
//! - [`Postfix`] / [`Exim`]: private instances of the real MTAs (need root, as in CI).
//! - [`TestCa`], [`self_signed`]: certificates for them ([`CertPair`]).
//! - [`StripProxy`]: a PIX/ASA-style STARTTLS stripping proxy in front of any server.
//! - [`SilentServer`] (accepts, never speaks) and [`ScriptedServer`] (speaks what it is told).
//! - [`DnsServer`] + [`ZoneBuilder`]: an authoritative DNS server for MX/A/AAAA/TXT/TLSA
//!   lookups.
//! - [`NetNs`]: a network namespace of the test's own, with its own `/etc/resolv.conf`, for
//!   a real MTA that routes by MX ([`DnsServer::start_at`] port 53 inside it); a test runs
//!   itself again inside it ([`NetNs::run_test_inside`]).
//! - [`free_port`], [`require_tool`] / [`require_tools!`]: skip a test when a real peer is
//!   missing, except under `CI=true` where a missing peer fails the test loudly.
//!
//! ## Servers for TLS policy tests (MTA-STS, DANE)
//!
//! - [`ZoneBuilder::signed`]: the DNS server signs its zone with DNSSEC. A validating
//!   resolver trusts it through [`DnsServer::trust_anchor`] (a DNSKEY line, also as a file
//!   and as hickory's `TrustAnchors`). [`ZoneBuilder::bogus`] breaks the signatures of one
//!   name, and [`ZoneBuilder::unsigned_child`] adds an insecure delegation.
//!   [`ZoneBuilder::tlsa`] adds `_25._tcp` TLSA records.
//! - [`HttpsServer`] + [`HttpResponse`]: an HTTPS/1.1 server for `mta-sts.<domain>` policies.
//!   It picks certificates by SNI (valid, expired, wrong name) and serves canned responses
//!   per path and host. Knobs cover a delay, a redirect, and oversized, endless or trickled
//!   bodies. It counts connections, handshakes and requests, to assert caching and reuse.
//!
//! ```no_run
//! use sigillo_testkit::{Postfix, StripProxy, TestCa, require_tools};
//!
//! #[test]
//! fn finds_stripping() {
//!     require_tools!("postfix"); // returns early here, or panics under CI=true
//!     let ca = TestCa::new().expect("test CA");
//!     let cert = ca.issue(&["mx.sigillo.test"]).expect("cert");
//!     let mx = Postfix::start_with_tls(&cert).expect("postfix");
//!     let asa = StripProxy::start(mx.addr()).expect("proxy"); // 220 ****, 250-XXXXXXXA
//!     // … point the code under test at asa.addr(), trusting ca.ca_pem() …
//! }
//! ```
//!
//! Real peers are installed by `.ci/install-peers` (Postfix and swaks from Debian, Exim 4.96
//! extracted to `/opt/sigillo/exim`, see [`Exim`]).

mod ca;
mod dns;
mod exim;
mod https;
mod netns;
mod postfix;
mod proxy;
mod scripted;
mod util;

pub use ca::{CertPair, TestCa, self_signed};
pub use dns::{DnsServer, ZoneBuilder};
pub use exim::{Exim, EximOptions};
/// Record types, for [`ZoneBuilder::servfail_type`].
pub use hickory_proto::rr::RecordType;
pub use https::{HttpRequest, HttpResponse, HttpsServer};
pub use netns::{NETNS_ENV, NetNs};
pub use postfix::{POSTFIX_310_ROOT, Postfix, PostfixOptions};
pub use proxy::StripProxy;
pub use scripted::{Script, ScriptedServer, SilentServer, Then};
pub use sigillo_smtp::asa::AsaConfig;
pub use util::{free_port, is_root, read_reply, require_tool, swaks, swaks_ok};

/// Return early from the calling test when one of the named tools is missing (see
/// [`require_tool`]): `require_tools!("postfix", "swaks");`. Under `CI=true` it panics instead.
#[macro_export]
macro_rules! require_tools {
    ($($name:expr),+ $(,)?) => {
        $(
            if !$crate::require_tool($name) {
                return;
            }
        )+
    };
}
