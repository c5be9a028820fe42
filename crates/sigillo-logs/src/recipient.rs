//! The recipient domain of an outbound delivery ([`MessageRecord::recipient_domain`]): the
//! next hop a sending MTA's TLS policy is keyed by. Address parsing is total and allocation
//! free; [`DomainTexts`] shares one copy of each domain between records.
//!
//! [`MessageRecord::recipient_domain`]: crate::model::MessageRecord::recipient_domain

use crate::model::Text;
use crate::postfix::bounded::FxBuild;
use std::collections::HashSet;
use std::hash::BuildHasher;

/// Longest domain kept (RFC 1035's 253 characters, plus brackets for an address literal).
const MAX_DOMAIN: usize = 255;

/// Distinct domains [`DomainTexts`] keeps before it starts afresh.
const MAX_SHARED: usize = 65_536;

/// The domain of a mail address as logged (`user@example.com`, `<user@Example.COM.>`,
/// `"a@b"@example.org`): the text after the last `@`, without angle brackets and a trailing
/// dot. `None` without an `@` (a local user), for an empty or over-long domain, and for one
/// with characters no domain or address literal has (spaces, quotes, controls). With it,
/// whether the domain has uppercase letters.
fn domain_of(address: &str) -> Option<(&str, bool)> {
    let address = trimmed(address);
    let address = address.strip_prefix('<').unwrap_or(address);
    let address = address.strip_suffix('>').unwrap_or(address);
    // One pass from the end to the last `@` finds it and the kinds of the domain's bytes (a
    // trailing dot, stripped below, changes no kind).
    let mut kinds = 0;
    let mut at = None;
    for (i, &b) in address.as_bytes().iter().enumerate().rev() {
        if b == b'@' {
            at = Some(i);
            break;
        }
        kinds |= DOMAIN_BYTE_KINDS[usize::from(b)];
    }
    let domain = address.get(at? + 1..)?;
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    (!domain.is_empty() && domain.len() <= MAX_DOMAIN && kinds & NOT_IN_DOMAIN == 0)
        .then_some((domain, kinds & UPPERCASE != 0))
}

/// `address.trim()`, without looking at characters when both ends are ASCII and not space
/// (nearly always).
fn trimmed(address: &str) -> &str {
    let plain = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii() && !char::from(b).is_whitespace());
    let bytes = address.as_bytes();
    if plain(bytes.first()) && plain(bytes.last()) {
        address
    } else {
        address.trim()
    }
}

/// Bits of [`DOMAIN_BYTE_KINDS`]: a byte no domain or address literal has.
const NOT_IN_DOMAIN: u8 = 1;
/// Bits of [`DOMAIN_BYTE_KINDS`]: an ASCII uppercase letter.
const UPPERCASE: u8 = 2;

/// What each byte is to [`domain_of`]: letters, digits, `-._[]:` and non-ASCII (UTF-8) bytes
/// are allowed; one table lookup a byte checks that and finds uppercase letters.
const DOMAIN_BYTE_KINDS: [u8; 256] = {
    let mut kinds = [0; 256];
    let mut b: u8 = 0;
    loop {
        let allowed = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
            || b >= 0x80;
        kinds[b as usize] = if !allowed {
            NOT_IN_DOMAIN
        } else if b.is_ascii_uppercase() {
            UPPERCASE
        } else {
            0
        };
        if b == u8::MAX {
            break kinds;
        }
        b += 1;
    }
};

/// One shared, lowercase copy of each recipient domain a parser meets, so records of one
/// domain share their text and the aggregator mostly compares pointers. Bounded: past
/// [`MAX_SHARED`] distinct domains it starts afresh, which costs sharing, never correctness.
/// Recipient domains can be chosen by others (a bounce to a forged sender), so the set uses
/// the standard library's keyed hash, not the fast one; the fast one only picks a slot of
/// `recent`, where a crafted collision can do no more than miss.
#[derive(Debug, Default)]
pub(crate) struct DomainTexts {
    shared: HashSet<Text>,
    /// The last domain handed out: deliveries to one domain come in runs.
    last: Option<Text>,
    /// A direct-mapped cache in front of `shared`: per slot (picked by FxHash), the last
    /// domain found through it. Empty until the first domain is shared.
    recent: Vec<Option<Text>>,
}

/// Bits of the fast hash that pick a slot of [`DomainTexts::recent`].
const RECENT_BITS: u32 = 10;

impl DomainTexts {
    /// The shared lowercase text of `domain`.
    #[cfg(test)]
    fn get(&mut self, domain: &str) -> Text {
        self.get_scanned(domain, domain.bytes().any(|b| b.is_ascii_uppercase()))
    }

    /// The shared lowercase text of `domain`, which has uppercase letters if `uppercase`.
    fn get_scanned(&mut self, domain: &str, uppercase: bool) -> Text {
        if let Some(last) = &self.last {
            // `last` is lowercase: without uppercase letters, equal bytes are enough.
            let same = if uppercase {
                last.eq_ignore_ascii_case(domain)
            } else {
                **last == *domain
            };
            if same {
                return Text::clone(last);
            }
        }
        let text = if uppercase {
            self.share(&domain.to_ascii_lowercase())
        } else {
            self.share(domain)
        };
        self.last = Some(Text::clone(&text));
        text
    }

    /// The shared text of the domain of `address` ([`domain_of`]).
    pub(crate) fn of_address(&mut self, address: &str) -> Option<Text> {
        if let Some(last) = self.last_again(address) {
            return Some(last);
        }
        domain_of(address).map(|(domain, uppercase)| self.get_scanned(domain, uppercase))
    }

    /// `last` when `address` ends in `@` and exactly it, which is then what [`domain_of`]
    /// finds: deliveries to one domain come in runs, and a suffix comparison is cheaper than
    /// looking at each byte.
    fn last_again(&self, address: &str) -> Option<Text> {
        let last = self.last.as_ref()?;
        // `domain_of` strips an address's last dot: `x@example.com.` is not `example.com.`
        // (which `x@example.com..` shares).
        if last.ends_with('.') {
            return None;
        }
        let address = trimmed(address);
        let address = address.strip_suffix('>').unwrap_or(address);
        let local = address.strip_suffix(&**last)?;
        local.ends_with('@').then(|| Text::clone(last))
    }

    fn share(&mut self, lower: &str) -> Text {
        // FxHash mixes into the high bits.
        let slot = (FxBuild.hash_one(lower) >> (u64::BITS - RECENT_BITS)) as usize;
        if let Some(Some(t)) = self.recent.get(slot)
            && **t == *lower
        {
            return Text::clone(t);
        }
        let t = self.share_anew(lower);
        if self.recent.is_empty() {
            self.recent.resize(1 << RECENT_BITS, None);
        }
        if let Some(cached) = self.recent.get_mut(slot) {
            *cached = Some(Text::clone(&t));
        }
        t
    }

    /// [`Self::share`] through `shared`.
    fn share_anew(&mut self, lower: &str) -> Text {
        if let Some(t) = self.shared.get(lower) {
            return Text::clone(t);
        }
        if self.shared.len() >= MAX_SHARED {
            self.shared.clear();
        }
        let t: Text = lower.into();
        self.shared.insert(Text::clone(&t));
        t
    }
}

/// Most distinct recipient domains kept for one transaction whose recipients span several
/// ([`MessageRecord::spanned_domains`]): Exim's `max_rcpt` default (Postfix sends at most
/// `smtp_destination_recipient_limit`, 50 by default, in one transaction).
///
/// [`MessageRecord::spanned_domains`]: crate::model::MessageRecord::spanned_domains
pub const MAX_SPANNED_DOMAINS: usize = 100;

/// Adds a recipient's domain to a transaction's: `transaction` keeps a domain only while all
/// its recipients share it (`None` once they differ, or once one has none); from then on
/// `spanned` holds the distinct domains of its recipients ([`MAX_SPANNED_DOMAINS`] at most).
/// Recipients of one domain (nearly always) cost one comparison, as before.
#[inline]
pub(crate) fn merge(
    transaction: &mut Option<Text>,
    spanned: &mut Option<Box<[Text]>>,
    recipient: Option<&Text>,
) {
    if let (Some(a), Some(b)) = (&*transaction, recipient)
        && (Text::ptr_eq(a, b) || a == b)
    {
        return;
    }
    span(transaction, spanned, recipient);
}

/// Adds the recipients of another part of a transaction (its domain, or the domains it
/// spans) to the transaction's, as [`merge`] does one recipient's.
pub(crate) fn merge_part(
    transaction: &mut Option<Text>,
    spanned: &mut Option<Box<[Text]>>,
    part: Option<&Text>,
    part_spanned: &[Text],
) {
    if part_spanned.is_empty() {
        merge(transaction, spanned, part);
        return;
    }
    span(transaction, spanned, None);
    for d in part_spanned {
        span(transaction, spanned, Some(d));
    }
}

/// [`merge`] once the recipients differ: the transaction's domain so far and the recipient's
/// go into `spanned`, each once.
#[cold]
fn span(
    transaction: &mut Option<Text>,
    spanned: &mut Option<Box<[Text]>>,
    recipient: Option<&Text>,
) {
    let first = transaction.take();
    for d in first.as_ref().into_iter().chain(recipient) {
        let list = spanned.as_deref().unwrap_or_default();
        if list.len() < MAX_SPANNED_DOMAINS && !list.iter().any(|s| Text::ptr_eq(s, d) || s == d) {
            // Rebuilt a domain at a time: rare, and at most `MAX_SPANNED_DOMAINS` long.
            let mut grown = spanned.take().map(Vec::from).unwrap_or_default();
            grown.push(Text::clone(d));
            *spanned = Some(grown.into_boxed_slice());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_of_addresses() {
        let cases: &[(&str, Option<&str>)] = &[
            ("user@example.com", Some("example.com")),
            ("<user@Example.COM>", Some("Example.COM")),
            ("user@example.com.", Some("example.com")),
            ("\"a@b\"@example.org", Some("example.org")),
            ("\"odd, >name\"@example.org", Some("example.org")),
            ("user@[192.0.2.1]", Some("[192.0.2.1]")),
            ("user@bücher.example", Some("bücher.example")),
            ("root", None),
            ("user@", None),
            ("user@.", None),
            ("user@exa mple.com", None),
            ("user@exa\"mple.com", None),
            ("", None),
            ("<>", None),
            (" <user@Example.COM.>\t", Some("Example.COM")),
            ("\u{2003}user@example.com\u{a0}", Some("example.com")),
            ("user@example.com\u{b}", Some("example.com")),
        ];
        for (address, want) in cases {
            assert_eq!(domain_of(address).map(|(d, _)| d), *want, "{address:?}");
        }
        let long = format!("u@{}", "a".repeat(MAX_DOMAIN + 1));
        assert_eq!(domain_of(&long), None);
        assert_eq!(domain_of("u@Example.com"), Some(("Example.com", true)));
        assert_eq!(domain_of("u@example.com"), Some(("example.com", false)));
    }

    #[test]
    fn byte_kinds_follow_the_domain_alphabet() {
        for b in 0..=u8::MAX {
            let allowed = b.is_ascii_alphanumeric() || b"-._[]:".contains(&b) || b >= 0x80;
            let kinds = DOMAIN_BYTE_KINDS[usize::from(b)];
            assert_eq!(kinds & NOT_IN_DOMAIN == 0, allowed, "{b:#x}");
            assert_eq!(kinds & UPPERCASE != 0, b.is_ascii_uppercase(), "{b:#x}");
        }
    }

    #[test]
    fn shared_lowercase_texts() {
        let mut texts = DomainTexts::default();
        let a = texts.get("Example.COM");
        let b = texts.get("example.com");
        let c = texts.get("other.example");
        let d = texts.get("EXAMPLE.com");
        assert_eq!(&*a, "example.com");
        assert!(Text::ptr_eq(&a, &b) && Text::ptr_eq(&a, &d));
        assert_eq!(&*c, "other.example");
        assert_eq!(
            texts.of_address("x@Other.Example").as_deref(),
            Some("other.example")
        );
        assert_eq!(texts.of_address("postmaster"), None);
    }

    #[test]
    fn the_last_domain_again_is_the_domain_of_the_address() {
        let addresses = [
            "user@example.com",
            "<user@Example.COM>",
            "user@example.com.",
            "user@example.com..",
            "x@example.com.",
            "<@example.com>",
            " user@example.com\t",
            "\"a@b\"@example.org",
            "user@[192.0.2.1]",
            "root",
            "user@",
            "userexample.com",
            "user@exa mple.com",
            "a.example.com",
            "u@a.example.com",
        ];
        // Each address after each other one, so that `last` is each domain in turn.
        for first in addresses {
            for then in addresses {
                let mut texts = DomainTexts::default();
                texts.of_address(first);
                let want = domain_of(then).map(|(d, _)| d.to_ascii_lowercase());
                assert_eq!(
                    texts.of_address(then).as_deref(),
                    want.as_deref(),
                    "{then:?} after {first:?}"
                );
            }
        }
    }

    #[test]
    fn merged_transactions() {
        let a: Text = "a.example".into();
        let a2: Text = "a.example".into();
        let b: Text = "b.example".into();
        // (transaction, recipient, result)
        let cases = [
            (Some(&a), Some(&a), Some("a.example")),
            (Some(&a), Some(&a2), Some("a.example")),
            (Some(&a), Some(&b), None),
            (Some(&a), None, None),
            (None, Some(&a), None),
            (None, None, None),
        ];
        for (start, recipient, want) in cases {
            let mut t = start.cloned();
            let mut spanned = None;
            merge(&mut t, &mut spanned, recipient);
            assert_eq!(t.as_deref(), want, "{start:?} + {recipient:?}");
        }
    }

    /// The recipients' domains in turn (`None`: a recipient without a domain), and what the
    /// transaction then names: its one domain, or the domains it spans.
    type SpanCase = (
        &'static [Option<&'static str>],
        Option<&'static str>,
        &'static [&'static str],
    );

    #[test]
    fn spanned_domains() {
        let cases: &[SpanCase] = &[
            (
                &[Some("a.example"), Some("a.example")],
                Some("a.example"),
                &[],
            ),
            (
                &[Some("a.example"), Some("b.example"), Some("a.example")],
                None,
                &["a.example", "b.example"],
            ),
            (
                &[
                    Some("a.example"),
                    Some("a.example"),
                    Some("b.example"),
                    Some("c.example"),
                ],
                None,
                &["a.example", "b.example", "c.example"],
            ),
            // A recipient without a domain ends the one domain and adds none.
            (&[Some("a.example"), None], None, &["a.example"]),
            (
                &[None, Some("b.example"), Some("b.example")],
                None,
                &["b.example"],
            ),
            (&[None, None], None, &[]),
        ];
        for (recipients, want, want_spanned) in cases {
            let texts: Vec<Option<Text>> = recipients.iter().map(|d| d.map(Text::from)).collect();
            let mut t = texts[0].clone();
            let mut spanned = None;
            for r in &texts[1..] {
                merge(&mut t, &mut spanned, r.as_ref());
            }
            let got: Vec<&str> = spanned.iter().flatten().map(|d| &**d).collect();
            assert_eq!(
                (t.as_deref(), got.as_slice()),
                (*want, *want_spanned),
                "{recipients:?}"
            );
        }
        // Capped.
        let mut t = None;
        let mut spanned = None;
        for i in 0..MAX_SPANNED_DOMAINS + 10 {
            merge(
                &mut t,
                &mut spanned,
                Some(&Text::from(format!("d{i}.example"))),
            );
        }
        assert_eq!(spanned.map_or(0, |s| s.len()), MAX_SPANNED_DOMAINS);
        // Parts of one transaction: one domain each, or spanning several.
        let (a, b, c): (Text, Text, Text) =
            ("a.example".into(), "b.example".into(), "c.example".into());
        let mut t = Some(Text::clone(&a));
        let mut spanned = None;
        merge_part(&mut t, &mut spanned, Some(&a), &[]);
        assert_eq!((t.as_deref(), spanned.is_none()), (Some("a.example"), true));
        merge_part(
            &mut t,
            &mut spanned,
            None,
            &[Text::clone(&b), Text::clone(&a)],
        );
        merge_part(&mut t, &mut spanned, Some(&c), &[]);
        let got: Vec<&str> = spanned.iter().flatten().map(|d| &**d).collect();
        assert_eq!(
            (t.as_deref(), got.as_slice()),
            (None, &["a.example", "b.example", "c.example"][..])
        );
    }
}
