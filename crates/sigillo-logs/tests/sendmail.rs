//! Sendmail parser against hand-written fixtures (testdata/sendmail/*.log, expected results in
//! *.expect).

mod exim_support;

use exim_support::{check_fixtures, truncations_never_panic};
use sigillo_logs::model::MtaParser;
use sigillo_logs::sendmail::SendmailParser;

fn make() -> Box<dyn MtaParser> {
    Box::new(SendmailParser::new())
}

#[test]
fn fixtures_match_expected_summaries() {
    let n = check_fixtures("sendmail", &make);
    assert!(n >= 1, "no Sendmail fixtures found");
}

#[test]
fn every_truncation_of_every_line_is_safe() {
    let fed = truncations_never_panic("sendmail", &make);
    assert!(fed > 1000, "fed only {fed} truncated lines");
}
