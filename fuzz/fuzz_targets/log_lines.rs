//! Fuzzes the log line parsers: arbitrary bytes, split into lines, through the envelope parser
//! and every MTA parser (Postfix, Exim, Sendmail, OpenSMTPD), then the aggregator. Nothing may
//! panic, whatever the input. Also differential: Postfix's inbound and delivery halves, merged,
//! must emit exactly what one Postfix parser emits (what `report` relies on to run them on two
//! threads).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use sigillo_logs::aggregate::{AggregateOptions, Aggregator};
use sigillo_logs::envelope::{Envelope, YearGuess};
use sigillo_logs::exim::EximParser;
use sigillo_logs::model::{MtaParser, Record};
use sigillo_logs::opensmtpd::OpensmtpdParser;
use sigillo_logs::postfix::{
    PostfixParser, PostfixParserOptions, PostfixRole, TaggedRecords, merge_roles,
};
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
    let mut aggregator = Aggregator::new(AggregateOptions {
        top: 5,
        ..Default::default()
    });
    let mut records: Vec<Record> = Vec::new();
    let half = |role| {
        PostfixParser::new(PostfixParserOptions {
            role,
            ..PostfixParserOptions::default()
        })
    };
    let (mut inbound, mut delivery) = (half(PostfixRole::Inbound), half(PostfixRole::Delivery));
    let (mut tagged_in, mut tagged_out) = (TaggedRecords::default(), TaggedRecords::default());
    let mut whole: Vec<Record> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let Ok(line) = envelope.parse(raw) else {
            continue;
        };
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        tagged_in.feed(&mut inbound, &line, i);
        tagged_out.feed(&mut delivery, &line, i);
        for (n, parser) in parsers.iter_mut().enumerate() {
            let before = records.len();
            parser.feed(&line, &mut records);
            if n == 0 {
                whole.extend(records[before..].iter().cloned());
            }
        }
        for r in records.drain(..) {
            aggregator.add(&r);
        }
    }
    for (n, parser) in parsers.iter_mut().enumerate() {
        let before = records.len();
        parser.finish(&mut records);
        if n == 0 {
            whole.extend(records[before..].iter().cloned());
            let mut merged: Vec<Record> = merge_roles(&tagged_in, &tagged_out).cloned().collect();
            inbound.finish(&mut merged);
            delivery.finish(&mut merged);
            assert_eq!(
                merged, whole,
                "the two Postfix halves differ from one parser"
            );
            assert_eq!(inbound.unparsed() + delivery.unparsed(), parser.unparsed());
            assert_eq!(inbound.evicted() + delivery.evicted(), parser.evicted());
        }
        let _ = (parser.unparsed(), parser.evicted(), parser.advice());
    }
    for r in records.drain(..) {
        aggregator.add(&r);
    }
    let _ = aggregator.finish();
});
