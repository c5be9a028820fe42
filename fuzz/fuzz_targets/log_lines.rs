//! Fuzzes the log line parsers: arbitrary bytes, split into lines, through the envelope parser
//! and every MTA parser (Postfix, Exim, Sendmail, OpenSMTPD), then the aggregator. Nothing may
//! panic, whatever the input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use sigillo_logs::aggregate::{AggregateOptions, Aggregator};
use sigillo_logs::envelope::{Envelope, YearGuess};
use sigillo_logs::exim::EximParser;
use sigillo_logs::model::{MtaParser, Record};
use sigillo_logs::opensmtpd::OpensmtpdParser;
use sigillo_logs::postfix::PostfixParser;
use sigillo_logs::sendmail::SendmailParser;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut envelope = Envelope::new(YearGuess::forced(2026));
    let mut parsers: [Box<dyn MtaParser>; 4] = [
        Box::new(PostfixParser::default()),
        Box::new(EximParser::default()),
        Box::new(SendmailParser::default()),
        Box::new(OpensmtpdParser::default()),
    ];
    let mut aggregator = Aggregator::new(AggregateOptions { top: 5, ..Default::default() });
    let mut records: Vec<Record> = Vec::new();
    for raw in text.split('\n') {
        let Ok(line) = envelope.parse(raw) else { continue };
        for parser in parsers.iter_mut() {
            parser.feed(&line, &mut records);
        }
        for r in records.drain(..) {
            aggregator.add(&r);
        }
    }
    for parser in parsers.iter_mut() {
        parser.finish(&mut records);
        let _ = (parser.unparsed(), parser.evicted(), parser.advice());
    }
    for r in records.drain(..) {
        aggregator.add(&r);
    }
    let _ = aggregator.finish();
});
