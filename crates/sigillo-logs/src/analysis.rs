//! The whole of `sigillo report` short of printing: read every source (oldest rotated file
//! first), hand each line to the parser of its MTA, and count the records. One parser per
//! MTA lives across files, so a session that spans a rotation is still joined.

use crate::aggregate::{AggregateOptions, Aggregator, Figures};
use crate::envelope::Line;
use crate::exim::EximParser;
use crate::input::{self, Compression, Format, InputError, InputOptions, Source, SourcePath};
use crate::model::{MtaParser, Record};
use crate::opensmtpd::OpensmtpdParser;
use crate::postfix::PostfixParser;
use crate::sendmail::SendmailParser;
use serde::Serialize;
use std::path::Path;

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
}

impl InputSummary {
    fn from_source(s: &Source) -> Self {
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
        }
    }
}

/// The result of an analysis: the `--json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub inputs: Vec<InputSummary>,
    /// Problems with the command-line inputs themselves (unreadable paths).
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
    exim: Option<EximParser>,
    sendmail: Option<SendmailParser>,
    opensmtpd: Option<OpensmtpdParser>,
}

impl Parsers {
    fn get(&mut self, format: Format) -> &mut dyn MtaParser {
        match format {
            Format::Postfix => self.postfix.get_or_insert_with(PostfixParser::default),
            Format::Exim => self.exim.get_or_insert_with(EximParser::default),
            Format::Sendmail => self.sendmail.get_or_insert_with(SendmailParser::default),
            Format::Opensmtpd => self.opensmtpd.get_or_insert_with(OpensmtpdParser::default),
        }
    }

    fn all(&mut self) -> Vec<&mut dyn MtaParser> {
        let mut out: Vec<&mut dyn MtaParser> = Vec::new();
        if let Some(p) = &mut self.postfix {
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
pub fn analyze<P: AsRef<Path>>(
    inputs: &[P],
    input_options: &InputOptions,
    options: AggregateOptions,
) -> Analysis {
    let (paths, errors) = input::discover(inputs);
    let mut aggregator = Aggregator::new(options);
    let mut parsers = Parsers::default();
    let mut records: Vec<Record> = Vec::new();
    let mut summaries = Vec::new();
    for path in &paths {
        let source = read_one(
            path,
            input_options,
            &mut parsers,
            &mut aggregator,
            &mut records,
        );
        summaries.push(InputSummary::from_source(&source));
    }
    let mut advice = Vec::new();
    let (mut unparsed, mut evicted) = (0, 0);
    for parser in parsers.all() {
        parser.finish(&mut records);
        for r in records.drain(..) {
            aggregator.add(&r);
        }
        unparsed += parser.unparsed();
        evicted += parser.evicted();
        for a in parser.advice() {
            if !advice.contains(&a) {
                advice.push(a);
            }
        }
    }
    Analysis {
        inputs: summaries,
        input_errors: errors.iter().map(InputError::to_string).collect(),
        advice,
        unparsed_lines: unparsed,
        evicted,
        figures: aggregator.finish(),
    }
}

fn read_one(
    path: &SourcePath,
    options: &InputOptions,
    parsers: &mut Parsers,
    aggregator: &mut Aggregator,
    records: &mut Vec<Record>,
) -> Source {
    input::read(path, options, |format, line: &Line<'_>| {
        // Lines are fed to the parser of the source's format; a source of unknown format
        // is not read at all (see `InputError::UnknownFormat`).
        let Some(format) = format else { return };
        parsers.get(format).feed(line, records);
        for r in records.drain(..) {
            aggregator.add(&r);
        }
    })
}
