//! Fuzzes the log line parsers: arbitrary bytes, split into lines, through the envelope parser
//! and every MTA parser (Postfix, Exim, Sendmail, OpenSMTPD), then the aggregator. Nothing may
//! panic, whatever the input. Also differential: Postfix's inbound and delivery halves, merged,
//! must emit exactly what one Postfix parser emits (what `report` relies on to run them on two
//! threads), both fed every line and fed as `report` feeds them: the good lines cut into
//! blocks, each block's lines split once into the halves' own lists ([`HalfLines`]), the
//! delivery half walking the inbound lines only when a sweep of idle processes falls due.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use sigillo_logs::aggregate::{AggregateOptions, Aggregator};
use sigillo_logs::envelope::{Envelope, Line, YearGuess};
use sigillo_logs::exim::EximParser;
use sigillo_logs::model::{MtaParser, Record};
use sigillo_logs::opensmtpd::OpensmtpdParser;
use sigillo_logs::postfix::{
    HalfLines, PostfixParser, PostfixParserOptions, PostfixRole, TaggedRecords, line_route,
    merge_roles,
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
    // The good lines, in order, for the halves fed as `report` feeds them (below).
    let mut good: Vec<Line<'_>> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let Ok(line) = envelope.parse(raw) else {
            continue;
        };
        good.push(line);
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
            let (by_half, split_in, split_out) = fed_as_report(&good, block_lines(data));
            assert_eq!(
                by_half, whole,
                "the two Postfix halves fed their own lines by block differ from one parser"
            );
            assert_eq!(
                split_in.unparsed() + split_out.unparsed(),
                parser.unparsed()
            );
            assert_eq!(split_in.evicted() + split_out.evicted(), parser.evicted());
        }
        let _ = (parser.unparsed(), parser.evicted(), parser.advice());
    }
    for r in records.drain(..) {
        aggregator.add(&r);
    }
    let _ = aggregator.finish();
});

/// Lines in a block for [`fed_as_report`], by the input's last byte: one block for the whole
/// input (as `report`'s blocks of thousands of lines mostly hold a short log), or 1 to 8, so
/// that block boundaries fall everywhere.
fn block_lines(data: &[u8]) -> usize {
    match data.last().copied().unwrap_or(0) % 16 {
        n @ 0..8 => 1 + usize::from(n),
        _ => usize::MAX,
    }
}

/// Feeds `lines` to an inbound and a delivery half as `report` does: cut into blocks of
/// `per_block` lines, each block's lines routed once into [`HalfLines`] and each half fed its
/// own list ([`TaggedRecords::feed_half`]), the two halves' records merged per block. Returns
/// the merged records, with both halves' `finish`, and the two halves.
fn fed_as_report(
    lines: &[Line<'_>],
    per_block: usize,
) -> (Vec<Record>, PostfixParser, PostfixParser) {
    let half = |role| {
        PostfixParser::new(PostfixParserOptions {
            role,
            ..PostfixParserOptions::default()
        })
    };
    let (mut inbound, mut delivery) = (half(PostfixRole::Inbound), half(PostfixRole::Delivery));
    let mut merged: Vec<Record> = Vec::new();
    for block in lines.chunks(per_block) {
        let mut split = HalfLines::with_capacity(block.len());
        for (i, line) in block.iter().enumerate() {
            if let Some(route) = line_route(line) {
                split.push(u32::try_from(i).unwrap_or(u32::MAX), route, line.time);
            }
        }
        let (mut tagged_in, mut tagged_out) = (TaggedRecords::default(), TaggedRecords::default());
        tagged_in.feed_half(&mut inbound, &split, |i| block.get(i).copied());
        tagged_out.feed_half(&mut delivery, &split, |i| block.get(i).copied());
        merged.extend(merge_roles(&tagged_in, &tagged_out).cloned());
    }
    inbound.finish(&mut merged);
    delivery.finish(&mut merged);
    (merged, inbound, delivery)
}
