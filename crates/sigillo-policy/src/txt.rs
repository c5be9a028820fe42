//! The `v=…; name=value` TXT record syntax that MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460
//! §3) share: choosing the one record of a version among a name's TXT records, and splitting
//! it into fields.

use crate::domain::excerpt;
use std::collections::HashSet;

/// Why the TXT records of `_mta-sts` or `_smtp._tls` do not give a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxtRecordError {
    /// More than one TXT record starts with the version tag; the RFCs then say the domain has
    /// no (usable) record.
    #[error("{count} TXT records start with {version:?}, expected exactly one")]
    MultipleRecords { version: &'static str, count: usize },
    /// The record holds bytes outside printable ASCII (and tab).
    #[error("TXT record holds a byte outside printable ASCII: {byte:#04x}")]
    NotAscii { byte: u8 },
    /// The record does not start with the version tag.
    #[error("TXT record must start with {expected:?}, got {got:?}")]
    NoVersion { expected: &'static str, got: String },
    /// Two separators in a row (`;;`), or a field after the version that is empty.
    #[error("empty field {index} in TXT record (two ';' in a row)")]
    EmptyField { index: usize },
    /// A field without `=`.
    #[error("TXT record field {got:?}: expected name=value")]
    MissingEquals { got: String },
    /// A field name that is not 1-32 letters, digits, `_`, `-` or `.` starting with a letter
    /// or digit.
    #[error("TXT record field name {got:?}: expected 1-32 letters, digits, '_', '-', '.'")]
    BadFieldName { got: String },
    /// A field value that breaks its syntax.
    #[error("TXT record field {field}: expected {expected}, got {got:?}")]
    BadValue {
        field: String,
        expected: &'static str,
        got: String,
    },
    /// A field appears twice.
    #[error("TXT record field {field} appears more than once")]
    Duplicate { field: String },
    /// A required field is absent.
    #[error("TXT record has no {field} field")]
    MissingField { field: &'static str },
}

/// Concatenates the character-strings of one TXT record, as both RFCs require before parsing
/// (e.g. hickory's `TXT::txt_data()`).
pub fn concat_strings<S: AsRef<[u8]>>(strings: &[S]) -> Vec<u8> {
    strings.iter().flat_map(|s| s.as_ref()).copied().collect()
}

/// Whether `record` begins with `version` then optional white space and a `;`: the records
/// RFC 8461 §3.1 and RFC 8460 §3 keep ("records that do not begin with "v=STSv1;" are
/// discarded"; white space before the `;` as the ABNF's field delimiter allows).
fn starts_with_version(record: &[u8], version: &str) -> bool {
    record
        .strip_prefix(version.as_bytes())
        .map(|rest| rest.trim_ascii_start())
        .is_some_and(|rest| rest.first() == Some(&b';'))
}

/// Whether `record` is a broken one of `version`: the tag followed by the end or white space
/// (`v=STSv1`, `v=STSv1 id=1`).
fn starts_with_version_loosely(record: &[u8], version: &str) -> bool {
    record
        .strip_prefix(version.as_bytes())
        .is_some_and(|rest| matches!(rest.first(), None | Some(b' ') | Some(b'\t')))
}

/// Picks the record for `version` among a name's TXT records (each already concatenated):
/// records that do not start with it and a `;` are discarded; none left is `Ok(None)`, more
/// than one is an error. The chosen record is returned as text. When none is left but one
/// record starts with the version tag alone (`v=STSv1`, `v=STSv1 id=1`), that one is
/// returned, so that its parse says what is wrong with it rather than that there is none.
pub(crate) fn select<'a, R: AsRef<[u8]>>(
    records: &'a [R],
    version: &'static str,
) -> Result<Option<&'a str>, TxtRecordError> {
    let pick = |keep: fn(&[u8], &str) -> bool| -> Result<Option<&'a [u8]>, TxtRecordError> {
        let mut chosen = (records.iter().map(AsRef::as_ref)).filter(|r| keep(r, version));
        let Some(first) = chosen.next() else {
            return Ok(None);
        };
        match chosen.count() {
            0 => Ok(Some(first)),
            others => Err(TxtRecordError::MultipleRecords {
                version,
                count: others + 1,
            }),
        }
    };
    let chosen = match pick(starts_with_version)? {
        Some(record) => Some(record),
        None => pick(starts_with_version_loosely)?,
    };
    chosen.map(ascii_text).transpose()
}

/// [`select`], then `parse` on the chosen record.
pub(crate) fn parse_selected<R: AsRef<[u8]>, T>(
    records: &[R],
    version: &'static str,
    parse: impl FnOnce(&str) -> Result<T, TxtRecordError>,
) -> Result<Option<T>, TxtRecordError> {
    select(records, version)?.map(parse).transpose()
}

fn ascii_text(record: &[u8]) -> Result<&str, TxtRecordError> {
    if let Some(&byte) = record
        .iter()
        .find(|&&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
    {
        return Err(TxtRecordError::NotAscii { byte });
    }
    // Printable ASCII is UTF-8.
    std::str::from_utf8(record).map_err(|_| TxtRecordError::NotAscii { byte: 0 })
}

/// One `name=value` field after the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// Splits a record into its fields after checking the version tag: `v=X; a=b; c=d;`.
/// Separators are `*WSP ";" *WSP`; one trailing separator is allowed. Duplicate names are an
/// error.
pub(crate) fn fields<'a>(
    record: &'a str,
    version: &'static str,
) -> Result<Vec<Field<'a>>, TxtRecordError> {
    ascii_text(record.as_bytes())?;
    let mut parts = record.split(';');
    let head = parts.next().unwrap_or("").trim_end_matches([' ', '\t']);
    if head != version {
        return Err(TxtRecordError::NoVersion {
            expected: version,
            got: excerpt(record),
        });
    }
    let parts: Vec<&str> = parts.map(|p| p.trim_matches([' ', '\t'])).collect();
    let mut out: Vec<Field<'a>> = Vec::with_capacity(parts.len());
    let mut names: HashSet<&str> = HashSet::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        if part.is_empty() {
            if index + 1 == parts.len() {
                break; // the optional trailing separator
            }
            return Err(TxtRecordError::EmptyField { index: index + 1 });
        }
        let Some((name, value)) = part.split_once('=') else {
            return Err(TxtRecordError::MissingEquals { got: excerpt(part) });
        };
        if !is_field_name(name) {
            return Err(TxtRecordError::BadFieldName { got: excerpt(name) });
        }
        if !names.insert(name) {
            return Err(TxtRecordError::Duplicate {
                field: name.to_owned(),
            });
        }
        out.push(Field { name, value });
    }
    Ok(out)
}

/// Unknown `name=value` fields of a record, in order.
pub(crate) type Extensions = Vec<(String, String)>;

/// A record split into its one required field's value and its other fields (extensions,
/// each checked with [`check_extension_value`]).
pub(crate) fn required_and_extensions<'a>(
    record: &'a str,
    version: &'static str,
    required: &'static str,
) -> Result<(&'a str, Extensions), TxtRecordError> {
    let mut value = None;
    let mut extensions = Vec::new();
    for field in fields(record, version)? {
        if field.name == required {
            value = Some(field.value);
        } else {
            check_extension_value(&field)?;
            extensions.push((field.name.to_owned(), field.value.to_owned()));
        }
    }
    let value = value.ok_or(TxtRecordError::MissingField { field: required })?;
    Ok((value, extensions))
}

/// `(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`, the extension-name rule of both
/// RFCs (and of the MTA-STS policy file).
pub(crate) fn is_field_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Checks an extension value: `1*(%x21-3A / %x3C / %x3E-7E)`, visible characters except
/// `;` and `=`.
fn check_extension_value(field: &Field<'_>) -> Result<(), TxtRecordError> {
    let ok = !field.value.is_empty()
        && field
            .value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=');
    if ok {
        Ok(())
    } else {
        Err(TxtRecordError::BadValue {
            field: field.name.to_owned(),
            expected: "visible characters other than ';' and '='",
            got: excerpt(field.value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_discards_other_versions() {
        let records: Vec<&[u8]> = vec![
            b"v=spf1 -all",
            b"v=STSv1; id=1",
            b"v=STSv10; id=2",
            b"garbage \xff",
        ];
        assert_eq!(select(&records, "v=STSv1"), Ok(Some("v=STSv1; id=1")));
        let none: Vec<&[u8]> = vec![b"v=spf1 -all"];
        assert_eq!(select(&none, "v=STSv1"), Ok(None));
        let two: Vec<&[u8]> = vec![b"v=STSv1; id=1", b"v=STSv1;id=2"];
        assert_eq!(
            select(&two, "v=STSv1"),
            Err(TxtRecordError::MultipleRecords {
                version: "v=STSv1",
                count: 2
            })
        );
        // Records that do not begin with the version and a `;` are discarded: a stray one
        // does not void the valid one (RFC 8461 §3.1).
        for stray in [
            &b"v=STSv1"[..],
            b"v=STSv1 junk",
            b"v=STSv1junk",
            b"v=STSv1 id=2",
        ] {
            let records: Vec<&[u8]> = vec![stray, b"v=STSv1 ; id=1"];
            assert_eq!(
                select(&records, "v=STSv1"),
                Ok(Some("v=STSv1 ; id=1")),
                "{stray:?}"
            );
        }
        // With no valid one, a lone broken one is handed on to say what is wrong with it.
        let broken: Vec<&[u8]> = vec![b"v=spf1 -all", b"v=STSv1 id=2"];
        assert_eq!(select(&broken, "v=STSv1"), Ok(Some("v=STSv1 id=2")));
        let broken: Vec<&[u8]> = vec![b"v=STSv1", b"v=STSv1 id=2"];
        assert!(matches!(
            select(&broken, "v=STSv1"),
            Err(TxtRecordError::MultipleRecords { count: 2, .. })
        ));
        let bin: Vec<&[u8]> = vec![b"v=STSv1; id=\x01"];
        assert_eq!(
            select(&bin, "v=STSv1"),
            Err(TxtRecordError::NotAscii { byte: 1 })
        );
    }

    #[test]
    fn concatenation_joins_strings_without_separator() {
        let strings: Vec<&[u8]> = vec![b"v=STSv1; ", b"id=2019"];
        assert_eq!(concat_strings(&strings), b"v=STSv1; id=2019");
    }

    #[test]
    fn field_names() {
        for ok in ["id", "a", "x-y_z.1", &"a".repeat(32)] {
            assert!(is_field_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", ".a", "a b", "a=b", &"a".repeat(33)] {
            assert!(!is_field_name(bad), "{bad}");
        }
    }
}
