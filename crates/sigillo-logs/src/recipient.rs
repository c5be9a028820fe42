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

/// Adds a recipient's domain to a transaction's: the transaction keeps a domain only while
/// all its recipients share it (`None` once they differ, or once one has none).
pub(crate) fn merge(transaction: &mut Option<Text>, recipient: Option<&Text>) {
    let same = match (&*transaction, recipient) {
        (Some(a), Some(b)) => Text::ptr_eq(a, b) || a == b,
        _ => false,
    };
    if !same {
        *transaction = None;
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
            merge(&mut t, recipient);
            assert_eq!(t.as_deref(), want, "{start:?} + {recipient:?}");
        }
    }
}
