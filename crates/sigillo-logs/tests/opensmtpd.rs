//! OpenSMTPD parser against hand-written fixtures (testdata/opensmtpd/*.log, expected results
//! in *.expect).

mod exim_support;

use exim_support::{check_fixtures, truncations_never_panic};
use sigillo_logs::model::MtaParser;
use sigillo_logs::opensmtpd::OpensmtpdParser;

fn make() -> Box<dyn MtaParser> {
    Box::new(OpensmtpdParser::new())
}

#[test]
fn fixtures_match_expected_summaries() {
    let n = check_fixtures("opensmtpd", &make);
    assert!(n >= 1, "no OpenSMTPD fixtures found");
}

#[test]
fn every_truncation_of_every_line_is_safe() {
    let fed = truncations_never_panic("opensmtpd", &make);
    assert!(fed > 1000, "fed only {fed} truncated lines");
}
