//! Exim parser against fixture mainlogs (testdata/exim/*.log, expected results in *.expect).

mod exim_support;

use exim_support::{check_fixtures, truncations_never_panic};
use sigillo_logs::exim::EximParser;
use sigillo_logs::model::MtaParser;

fn make() -> Box<dyn MtaParser> {
    Box::new(EximParser::new())
}

#[test]
fn fixtures_match_expected_summaries() {
    let n = check_fixtures("exim", &make);
    assert!(n >= 2, "expected at least 2 Exim fixtures, found {n}");
}

#[test]
fn every_truncation_of_every_line_is_safe() {
    let fed = truncations_never_panic("exim", &make);
    assert!(fed > 1000, "fed only {fed} truncated lines");
}
