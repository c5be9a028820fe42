//! The whole of `sigillo report` short of printing: read every source (oldest rotated file
//! first), hand each line to the parser of its MTA, and count the records. One parser per
//! MTA lives across files, so a session that spans a rotation is still joined.

use crate::aggregate::{AggregateOptions, Aggregator, Figures, time_text};
use crate::exim::EximParser;
use crate::input::{
    self, Compression, Format, InputError, InputOptions, LineBlock, Source, SourcePath,
};
use crate::model::{MtaParser, Record, UnixTime};
use crate::opensmtpd::OpensmtpdParser;
use crate::postfix::{
    HalfLines, PostfixParser, PostfixParserOptions, PostfixRole, TaggedRecords, line_route,
    merge_roles,
};
use crate::sendmail::SendmailParser;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, mpsc};

/// What was read from one source, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputSummary {
    /// Path as given or found, `<stdin>` for stdin.
    pub source: String,
    /// `postfix`, `exim`, `sendmail`, `opensmtpd`, or null when unknown (not read).
    pub format: Option<&'static str>,
    pub format_forced: bool,
    /// `none`, `gzip`, `zstd`.
    pub compression: &'static str,
    pub lines: u64,
    pub good_lines: u64,
    /// Invalid UTF-8, binary, or no known line format.
    pub bad_lines: u64,
    pub skipped_long_lines: u64,
    pub bytes: u64,
    /// The first problems met, with file and line (`mail.log:12: invalid UTF-8, line skipped`).
    pub errors: Vec<String>,
    pub errors_dropped: u64,
    /// The times of the first and the last good line (UTC, RFC 3339).
    pub first: Option<String>,
    pub last: Option<String>,
    /// Lines tagged by another MTA than the file's `format` (a log written on the day one
    /// MTA replaced another), by that MTA's name: each was read by its own MTA's parser.
    pub other_mta_lines: BTreeMap<&'static str, u64>,
    /// The same as Unix times, for [`input::out_of_order`].
    #[serde(skip)]
    times: (Option<UnixTime>, Option<UnixTime>),
    /// Nothing could be read from it, only [`InputError::Unreadable`] met: reported with the
    /// paths that could not be found, in [`Analysis::input_errors`], not as an input.
    #[serde(skip)]
    unreadable: bool,
}

impl InputSummary {
    fn from_source(s: &Source, other_mtas: &OtherMtaLines) -> Self {
        Self {
            source: s.name.clone(),
            format: s.format.map(Format::name),
            format_forced: s.format_forced,
            compression: match s.compression {
                Compression::Gzip => "gzip",
                Compression::Zstd => "zstd",
                _ => "none",
            },
            lines: s.stats.lines,
            good_lines: s.stats.good_lines,
            bad_lines: s.stats.bad_lines,
            skipped_long_lines: s.stats.skipped_long_lines,
            bytes: s.stats.bytes,
            errors: s.stats.errors.iter().map(ToString::to_string).collect(),
            errors_dropped: s.stats.errors_dropped,
            other_mta_lines: Format::ALL
                .into_iter()
                .zip(other_mtas)
                .filter(|&(_, &n)| n > 0)
                .map(|(format, &n)| (format.name(), n))
                .collect(),
            first: s.stats.first_time.map(time_text),
            last: s.stats.last_time.map(time_text),
            times: (s.stats.first_time, s.stats.last_time),
            unreadable: s.stats.lines == 0
                && !s.stats.errors.is_empty()
                && (s.stats.errors.iter()).all(|e| matches!(e, InputError::Unreadable { .. })),
        }
    }
}

/// The result of an analysis: the `--json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub inputs: Vec<InputSummary>,
    /// Problems with the inputs themselves: paths that could not be found, opened or read at
    /// all (those are not in `inputs`), files skipped, files out of time order.
    pub input_errors: Vec<String>,
    /// What to change so the next report is precise.
    pub advice: Vec<String>,
    /// Lines that looked like an MTA's but were not understood.
    pub unparsed_lines: u64,
    /// Sessions or queue entries dropped at a state cap.
    pub evicted: u64,
    #[serde(flatten)]
    pub figures: Figures,
}

impl Analysis {
    /// True when nothing at all could be read.
    pub fn nothing_read(&self) -> bool {
        self.inputs.iter().all(|i| i.good_lines == 0)
    }
}

#[derive(Default)]
struct Parsers {
    postfix: Option<PostfixParser>,
    /// A whole Postfix parser for Postfix lines in another MTA's file (the halves read
    /// Postfix files).
    postfix_in_other: Option<PostfixParser>,
    exim: Option<EximParser>,
    sendmail: Option<SendmailParser>,
    opensmtpd: Option<OpensmtpdParser>,
}

impl Parsers {
    /// The inbound half of the Postfix parser; the delivery half runs on its own thread
    /// (`deliver_all`).
    fn postfix_inbound(&mut self) -> &mut PostfixParser {
        self.postfix.get_or_insert_with(|| {
            PostfixParser::new(PostfixParserOptions {
                role: PostfixRole::Inbound,
                ..PostfixParserOptions::default()
            })
        })
    }

    /// The parser that reads lines of `format` whole on the parser thread: every MTA's but
    /// Postfix's, and Postfix's lines in another MTA's file (a Postfix file goes to the two
    /// halves).
    fn whole(&mut self, format: Format) -> &mut dyn MtaParser {
        match format {
            Format::Postfix => self
                .postfix_in_other
                .get_or_insert_with(|| PostfixParser::new(PostfixParserOptions::default())),
            Format::Exim => self.exim.get_or_insert_with(EximParser::default),
            Format::Sendmail => self.sendmail.get_or_insert_with(SendmailParser::default),
            Format::Opensmtpd => self.opensmtpd.get_or_insert_with(OpensmtpdParser::default),
        }
    }

    /// The parsers in use other than the two halves of Postfix's.
    fn others(&mut self) -> Vec<&mut dyn MtaParser> {
        let mut out: Vec<&mut dyn MtaParser> = Vec::new();
        if let Some(p) = &mut self.postfix_in_other {
            out.push(p);
        }
        if let Some(p) = &mut self.exim {
            out.push(p);
        }
        if let Some(p) = &mut self.sendmail {
            out.push(p);
        }
        if let Some(p) = &mut self.opensmtpd {
            out.push(p);
        }
        out
    }
}

/// Reads `inputs` (files, directories, `-`) and computes the figures.
///
/// Three stages run at once, joined by bounded channels: a reader thread (decompression,
/// line splitting, UTF-8 checks, envelopes, each Postfix line's half), the MTA parsers on the
/// calling thread (Postfix's in two halves, the delivery half on a thread of its own), and an
/// aggregator thread. Lines
/// and records keep their order, so the result is the same as one thread's; at most
/// [`PIPELINE_DEPTH`] batches wait between two stages, so memory stays bounded whatever the
/// input's size.
pub fn analyze<P: AsRef<Path>>(
    inputs: &[P],
    input_options: &InputOptions,
    options: AggregateOptions,
) -> Analysis {
    let (paths, errors) = input::discover(inputs);
    let (line_tx, line_rx) = mpsc::sync_channel::<ReaderMsg>(PIPELINE_DEPTH);
    let (record_tx, record_rx) = mpsc::sync_channel::<RecordBatch>(PIPELINE_DEPTH);
    // Emptied line blocks go back to the reader, so their buffers are reused.
    let (spare_tx, spare_rx) = mpsc::sync_channel::<LineBlock>(PIPELINE_DEPTH + 2);
    // Postfix blocks also go to a thread of their own, for the delivery half of the parser.
    let (delivery_tx, delivery_rx) = mpsc::sync_channel::<Arc<LineBatch>>(PIPELINE_DEPTH);
    let (delivered_tx, delivered_rx) = mpsc::sync_channel::<TaggedRecords>(PIPELINE_DEPTH);
    let (summaries, parsers_out, figures) = std::thread::scope(|scope| {
        let paths = &paths;
        let reader = scope.spawn(move || read_all(paths, input_options, &line_tx, &spare_rx));
        let delivery_spare = spare_tx.clone();
        let delivery =
            scope.spawn(move || deliver_all(&delivery_rx, &delivered_tx, &delivery_spare));
        let aggregator = scope.spawn(move || {
            let mut aggregator = Aggregator::new(options);
            for batch in record_rx {
                match &batch {
                    RecordBatch::Records(records) => records.iter().for_each(|r| aggregator.add(r)),
                    RecordBatch::Postfix(inbound) => {
                        // The delivery half's records of the same block: blocks reach both
                        // halves in the same order. None only if the delivery thread panicked
                        // (its join passes the panic on).
                        let Ok(delivery) = delivered_rx.recv() else {
                            break;
                        };
                        merge_roles(inbound, &delivery).for_each(|r| aggregator.add(r));
                    }
                }
            }
            aggregator.finish()
        });
        let postfix_delivery = DeliveryStage {
            batches: delivery_tx,
            parser: delivery,
        };
        let (summaries, parsers_out) = parse_all(line_rx, record_tx, spare_tx, postfix_delivery);
        // The reader ends early only if the parser stage is gone, which it is not here; a
        // panic in it (a bug) is passed on rather than reported as a short read.
        if let Err(panic) = reader.join() {
            std::panic::resume_unwind(panic);
        }
        let figures = aggregator.join();
        (summaries, parsers_out, figures)
    });
    let (advice, unparsed, evicted) = parsers_out;
    // A file that could not be opened is reported where a path that could not be found is.
    let (unreadable, summaries): (Vec<InputSummary>, Vec<InputSummary>) =
        summaries.into_iter().partition(|s| s.unreadable);
    let out_of_order = input::out_of_order(
        summaries
            .iter()
            .map(|s: &InputSummary| (s.source.as_str(), s.times.0, s.times.1)),
    );
    Analysis {
        inputs: summaries,
        input_errors: (errors.iter().map(InputError::to_string))
            .chain(unreadable.into_iter().flat_map(|s| s.errors))
            .chain(out_of_order.iter().map(InputError::to_string))
            .collect(),
        advice,
        unparsed_lines: unparsed,
        evicted,
        // The aggregator does not panic on any input; if a bug made it, empty figures would
        // be a silent lie, so the panic goes on to the caller.
        figures: figures.unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
    }
}

/// Batches that may wait between two pipeline stages.
pub const PIPELINE_DEPTH: usize = 4;
/// A record batch is sent once it holds this many records.
const BATCH_RECORDS: usize = 1024;

/// From the parser stage to the aggregator.
enum RecordBatch {
    /// Records in order.
    Records(Vec<Record>),
    /// The inbound half's records of one Postfix line block. The aggregator takes the delivery
    /// half's records of the same block from the delivery thread, and counts both in the order
    /// one parser would have emitted them ([`merge_roles`]).
    Postfix(TaggedRecords),
}

/// From the reader stage to the parser stage.
enum ReaderMsg {
    Lines(LineBatch),
    /// A source was read to its end (or could not be read), with the lines in it that
    /// another MTA wrote.
    Done(Box<Source>, OtherMtaLines),
}

/// Lines of a source tagged by another MTA than the source's format, per [`Format::ALL`].
type OtherMtaLines = [u64; Format::ALL.len()];

/// Lines of one source, in the buffer the reader read them into.
struct LineBatch {
    format: Format,
    block: LineBlock,
    /// For Postfix, the lines of each half with their daemon ([`line_route`]), found once on
    /// the reader thread so that each half walks only its own lines; else empty.
    halves: HalfLines,
    /// The lines tagged by another MTA than `format` (by their index, in order), for that
    /// MTA's parser: a mail log written on the day one MTA replaced another holds both.
    /// Usually empty.
    other_mta: Vec<(u32, Format)>,
}

/// The reader stage: every source in turn, as line batches.
fn read_all(
    paths: &[SourcePath],
    options: &InputOptions,
    tx: &mpsc::SyncSender<ReaderMsg>,
    spare: &mpsc::Receiver<LineBlock>,
) {
    // The rotation family (directory and base name) of the last file read and the time of its
    // last good line: with `--year`, the next file of the same log goes on from it; another
    // log starts again from the year given.
    let mut last: Option<(input::LogFamily, UnixTime)> = None;
    for path in paths {
        let family = input::log_family(path);
        let previous = last
            .as_ref()
            .filter(|(f, _)| family.as_ref() == Some(f))
            .map(|&(_, t)| t);
        let open = input::open_after(path, options, previous);
        let mut gone = false;
        let mut other_mtas = OtherMtaLines::default();
        let source = match open.format() {
            // A source of unknown format is not read (see `InputError::UnknownFormat`).
            None => open.for_each_line(|_| {}),
            Some(format) => open.for_each_block(|block| {
                if gone {
                    return Some(block);
                }
                let mut other_mta = Vec::new();
                let mut other = |i: usize, line: &input::LineView<'_>| {
                    if let Some(f) = Format::from_program(line.program()).filter(|&f| f != format) {
                        other_mta.push((u32::try_from(i).unwrap_or(u32::MAX), f));
                        if let Some(n) = (Format::ALL.iter().position(|&x| x == f))
                            .and_then(|at| other_mtas.get_mut(at))
                        {
                            *n += 1;
                        }
                    }
                };
                let halves = match format {
                    Format::Postfix => {
                        let mut halves = HalfLines::with_capacity(block.len());
                        for (i, line) in block.views().enumerate() {
                            match line_route(&line) {
                                Some(route) => halves.push(
                                    u32::try_from(i).unwrap_or(u32::MAX),
                                    route,
                                    line.time(),
                                ),
                                // Only a line that is no Postfix daemon's may be another MTA's.
                                None => other(i, &line),
                            }
                        }
                        halves
                    }
                    _ => {
                        block
                            .views()
                            .enumerate()
                            .for_each(|(i, line)| other(i, &line));
                        HalfLines::default()
                    }
                };
                let batch = LineBatch {
                    format,
                    block,
                    halves,
                    other_mta,
                };
                match tx.send(ReaderMsg::Lines(batch)) {
                    Ok(()) => spare.try_recv().ok(),
                    Err(_) => {
                        gone = true;
                        None
                    }
                }
            }),
        };
        if let Some(family) = family {
            match (source.stats.last_time, &last) {
                (Some(t), _) => last = Some((family, t)),
                // A file with no good line keeps the family's year going only if it is the same.
                (None, Some((f, _))) if *f == family => {}
                (None, _) => last = None,
            }
        } else {
            last = None;
        }
        if gone
            || tx
                .send(ReaderMsg::Done(Box::new(source), other_mtas))
                .is_err()
        {
            return;
        }
    }
}

/// The delivery half of the Postfix parser ([`PostfixRole::Delivery`]) on its own thread: it
/// gets every Postfix block and sends the aggregator, per block, its records tagged with their
/// line. Returns the parser when the blocks end, for its `finish`.
fn deliver_all(
    rx: &mpsc::Receiver<Arc<LineBatch>>,
    tx: &mpsc::SyncSender<TaggedRecords>,
    spare: &mpsc::SyncSender<LineBlock>,
) -> PostfixParser {
    let mut parser = PostfixParser::new(PostfixParserOptions {
        role: PostfixRole::Delivery,
        ..PostfixParserOptions::default()
    });
    for batch in rx {
        // About one record for every three lines: room for most blocks without growing.
        let mut tagged = TaggedRecords::with_capacity(batch.block.len() / 2);
        feed_half(&mut tagged, &mut parser, &batch);
        // Whichever half finishes a block last hands it back to the reader.
        if let Some(batch) = Arc::into_inner(batch) {
            let _ = spare.try_send(batch.block);
        }
        if tx.send(tagged).is_err() {
            break;
        }
    }
    parser
}

/// Feeds a Postfix block's lines to one half of the parser: only its own lines, routed by the
/// reader (the other half's are looked at only for the delivery half's sweep at their time).
fn feed_half(tagged: &mut TaggedRecords, parser: &mut PostfixParser, batch: &LineBatch) {
    tagged.feed_half(parser, &batch.halves, |i| batch.block.view(i));
}

/// The parser stage's end of the delivery thread.
struct DeliveryStage<'scope> {
    batches: mpsc::SyncSender<Arc<LineBatch>>,
    parser: std::thread::ScopedJoinHandle<'scope, PostfixParser>,
}

/// The parser stage: feeds each line to the parser of its MTA and passes the records on in
/// batches. Postfix lines are parsed in two halves at once: the inbound half here, the
/// delivery half on the delivery thread, each at its own pace; the aggregator counts their
/// records in the order one parser would have emitted them ([`merge_roles`]). Returns the
/// per-source summaries and the parsers' (advice, unparsed, evicted).
fn parse_all(
    rx: mpsc::Receiver<ReaderMsg>,
    tx: mpsc::SyncSender<RecordBatch>,
    spare: mpsc::SyncSender<LineBlock>,
    delivery: DeliveryStage<'_>,
) -> (Vec<InputSummary>, (Vec<String>, u64, u64)) {
    let mut parsers = Parsers::default();
    let mut inbound = TaggedRecords::with_capacity(BATCH_RECORDS);
    let mut records: Vec<Record> = Vec::with_capacity(BATCH_RECORDS);
    let mut summaries = Vec::new();
    let send = |records: &mut Vec<Record>, force: bool| {
        if records.len() >= BATCH_RECORDS || (force && !records.is_empty()) {
            let full = std::mem::replace(records, Vec::with_capacity(BATCH_RECORDS));
            // The aggregator only goes away if it panicked; then nothing more can be counted.
            let _ = tx.send(RecordBatch::Records(full));
        }
    };
    for msg in rx {
        match msg {
            ReaderMsg::Lines(batch) => {
                if batch.format != Format::Postfix {
                    let mut others = batch.other_mta.iter().peekable();
                    // Sent as soon as full, so the vector seldom grows past its capacity.
                    for (i, line) in batch.block.lines().enumerate() {
                        let format = match others.next_if(|&&(at, _)| at as usize == i) {
                            Some(&(_, other)) => other,
                            None => batch.format,
                        };
                        parsers.whole(format).feed(&line, &mut records);
                        send(&mut records, false);
                    }
                    // When the reader has enough spares (or is gone), the block is just freed.
                    let _ = spare.try_send(batch.block);
                    continue;
                }
                // Postfix: both halves get the block.
                let batch = Arc::new(batch);
                if delivery.batches.send(Arc::clone(&batch)).is_err() {
                    // The delivery thread panicked: its join below passes the panic on.
                    break;
                }
                feed_half(&mut inbound, parsers.postfix_inbound(), &batch);
                // Records from before (another format's) go first.
                send(&mut records, true);
                // Room for a block with half as many records again as this one: growing a
                // vector of records moves them all.
                let capacity = inbound.records.len();
                let full = std::mem::replace(
                    &mut inbound,
                    TaggedRecords::with_capacity(capacity + capacity / 2),
                );
                let _ = tx.send(RecordBatch::Postfix(full));
                // Other MTAs' lines in the block, after its Postfix records (the next Postfix
                // block's go after them).
                if !batch.other_mta.is_empty() {
                    let mut others = batch.other_mta.iter().peekable();
                    for (i, line) in batch.block.views().enumerate() {
                        let Some(&(_, format)) = others.next_if(|&&(at, _)| at as usize == i)
                        else {
                            continue;
                        };
                        parsers.whole(format).feed(&line.line(), &mut records);
                        send(&mut records, false);
                    }
                }
                // Whichever half finishes a block last hands it back to the reader.
                if let Some(batch) = Arc::into_inner(batch) {
                    let _ = spare.try_send(batch.block);
                }
            }
            ReaderMsg::Done(source, other_mtas) => {
                summaries.push(InputSummary::from_source(&source, &other_mtas));
            }
        }
    }
    drop(delivery.batches);
    let mut postfix_delivery = match delivery.parser.join() {
        Ok(parser) => parser,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut advice = Vec::new();
    let (mut unparsed, mut evicted) = (0, 0);
    let mut finish = |parser: &mut dyn MtaParser, records: &mut Vec<Record>| {
        parser.finish(records);
        send(records, false);
        unparsed += parser.unparsed();
        evicted += parser.evicted();
        for a in parser.advice() {
            if !advice.contains(&a) {
                advice.push(a);
            }
        }
    };
    if let Some(inbound) = &mut parsers.postfix {
        // The delivery half ends right after the inbound half, as one parser's finish does.
        finish(inbound, &mut records);
        finish(&mut postfix_delivery, &mut records);
    }
    for parser in parsers.others() {
        finish(parser, &mut records);
    }
    send(&mut records, true);
    (summaries, (advice, unparsed, evicted))
}
