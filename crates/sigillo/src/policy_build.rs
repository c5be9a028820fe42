//! `sigillo policy build`: pins the next-hop domains that used TLS for every message over the
//! logged window (a Postfix `smtp_tls_policy_maps` file, an Exim domain list), and a dry run
//! that says which logged messages such a policy would have deferred.
//!
//! The figures are `report`'s per-next-hop table ([`NextHopFigures`]), from logs or from a
//! saved `report --json`; choosing pins ([`select_pins`]) and the dry run ([`dry_run`]) are
//! pure functions of it.

use crate::cli::{LogArgs, emit};
use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use sigillo_check::policy::sigillo_policy::domain;
use sigillo_check::policy::sigillo_policy::postfix::{
    Evidence, PinLevel, PinnedPeer, exim_domain_list, policy_map_file, read_policy_map_file,
};
use sigillo_logs::aggregate::{
    MessageRef, MessageSample, NEXT_HOP_SAMPLE, NextHopFigures, NextHopsOmitted,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sigillo policy build /var/log/mail.log* --postfix /etc/postfix/tls_pins
  sigillo report --json /var/log/mail.log* > week.json
  sigillo policy build --from-report week.json --min-tls-share 0.95 --dry-run
  sigillo policy build /var/log/mail.log --dry-run --pins /etc/postfix/tls_pins

Exit status: 0 done (a dry run found no message that would have been deferred), 1 a dry run \
found messages that would have been deferred, 2 the inputs could not be read or an output \
not written. See docs/policy-build.md.")]
pub struct BuildArgs {
    /// Log files, directories (rotated files read oldest first), `.gz`/`.zst`, or `-` for
    /// stdin, as for `sigillo report`.
    #[arg(required_unless_present = "from_report")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub logs: LogArgs,
    /// Take the figures from `sigillo report --json` output instead of reading logs.
    #[arg(long, value_name = "FILE",
          conflicts_with_all = ["inputs", "format", "year", "since", "until", "internal"])]
    pub from_report: Option<PathBuf>,
    /// Pin a domain only when this many messages were delivered to it in the window.
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub min_messages: u64,
    /// Pin a domain when at least this share of its messages went over TLS (1: every one).
    #[arg(long, default_value_t = 1.0, value_name = "SHARE", value_parser = parse_share)]
    pub min_tls_share: f64,
    /// Pin at `verify` (not only `encrypt`) the domains whose messages had a certificate the
    /// MTA trusted, in the same share. Postfix then needs smtp_tls_CAfile or
    /// smtp_tls_CApath, and checks the MX host name.
    #[arg(long)]
    pub verify: bool,
    /// Write the pins as a Postfix smtp_tls_policy_maps file (`-`: stdout). It may not be an
    /// input, inside an input directory, or the --exim file.
    #[arg(long, value_name = "FILE")]
    pub postfix: Option<PathBuf>,
    /// Write the pinned domains as an Exim domain list for hosts_require_tls (`-`: stdout).
    /// It may not be an input, inside an input directory, or the --postfix file.
    #[arg(long, value_name = "FILE")]
    pub exim: Option<PathBuf>,
    /// List the logged messages the pins would have deferred, per domain.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: check these pins (`domain  encrypt|verify` lines, as --postfix
    /// writes them) instead of the ones the rule picks.
    #[arg(long, value_name = "FILE", requires = "dry_run", conflicts_with_all = ["postfix", "exim"])]
    pub pins: Option<PathBuf>,
    /// Print one JSON document (pins, counts, dry run) instead of the summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 1.0 => Ok(s),
        _ => Err(format!(
            "{text:?}: expected a share above 0 and at most 1, like 0.95"
        )),
    }
}

/// When a next-hop domain is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PinRule {
    /// Delivered messages needed in the window.
    pub min_messages: u64,
    /// Share of them over TLS (and, for `verify`, with a trusted certificate).
    pub min_tls_share: f64,
    /// Whether `verify` pins may be made.
    pub verify: bool,
}

/// Domains with mail in the window that the rule did not pin, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotPinned {
    /// Fewer messages than `min_messages`.
    pub few_messages: u64,
    /// Enough messages, but too few over TLS (in clear, or of unknown transport).
    pub below_tls_share: u64,
    /// Not a DNS name a policy map can hold (an address literal, a non-ASCII name).
    pub not_a_domain: u64,
}

/// The pins a rule makes from the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Sorted by domain.
    pub pins: Vec<PinnedPeer>,
    pub not_pinned: NotPinned,
}

/// `part` is at least `share` of `whole` (and `whole` is not 0).
fn reaches(part: u64, whole: u64, share: f64) -> bool {
    // The tolerance keeps 19 of 20 at 0.95 from failing on the rounding of 0.95 × 20.
    whole > 0 && part as f64 / whole as f64 >= share - 1e-9
}

/// Pins every domain with at least `min_messages` delivered messages of which at least
/// `min_tls_share` went over TLS: `verify` when `rule.verify` and that share also had a
/// trusted certificate, else `encrypt`.
pub fn select_pins(hops: &[NextHopFigures], rule: &PinRule) -> Selection {
    let mut pins = Vec::new();
    let mut not_pinned = NotPinned::default();
    for hop in hops {
        if hop.messages < rule.min_messages {
            not_pinned.few_messages += 1;
            continue;
        }
        if !reaches(hop.tls_messages, hop.messages, rule.min_tls_share) {
            not_pinned.below_tls_share += 1;
            continue;
        }
        let level =
            if rule.verify && reaches(hop.trusted_tls_messages, hop.messages, rule.min_tls_share) {
                PinLevel::Verify
            } else {
                PinLevel::Encrypt
            };
        match PinnedPeer::new(&hop.domain, level, evidence(hop)) {
            Ok(pin) => pins.push(pin),
            Err(_) => not_pinned.not_a_domain += 1,
        }
    }
    pins.sort_by(|a, b| a.domain.cmp(&b.domain));
    // Spellings of one domain are merged before ([`merge_spellings`]); a caller that did not
    // still gets one pin each.
    pins.dedup_by(|b, a| a.domain == b.domain);
    Selection { pins, not_pinned }
}

fn evidence(hop: &NextHopFigures) -> Evidence {
    Evidence {
        messages: hop.messages,
        tls: hop.tls_messages,
        verified: hop.trusted_tls_messages,
    }
}

/// What a set of pins would have done to the logged mail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    /// `rule`, or the pin file given with `--pins`.
    pub pins_from: String,
    pub pinned_domains: usize,
    /// Pinned domains with delivered mail in the window.
    pub pinned_domains_seen: usize,
    /// Messages delivered to pinned domains.
    pub messages_to_pinned: u64,
    /// Of those, the ones the pins would have deferred: sent in clear (and, under `verify`,
    /// over TLS without a trusted certificate).
    pub deferred_messages: u64,
    /// Of those, the ones whose transport the log does not tell: they may have been deferred.
    pub unknown_messages: u64,
    /// The pinned domains with deferred or unknown messages, most deferred first.
    pub domains: Vec<DeferredDomain>,
}

/// One pinned domain's messages that would have been deferred.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeferredDomain {
    pub domain: String,
    pub level: PinLevel,
    /// Delivered messages in the window.
    pub messages: u64,
    /// `plain + untrusted_tls` (the latter under `verify` only).
    pub deferred: u64,
    pub plain: u64,
    pub untrusted_tls: u64,
    pub unknown: u64,
    /// The deferred messages: first and last by time, and up to five, earliest first.
    pub first: Option<MessageRef>,
    pub last: Option<MessageRef>,
    pub sample: Vec<MessageRef>,
}

/// The messages `pins` would have deferred, from the per-domain figures. A `verify` pin
/// counts `Trusted` TLS as passing: the log does not say whether the certificate also
/// matched the MX host name, which `verify` checks.
pub fn dry_run(hops: &[NextHopFigures], pins: &[PinnedPeer], pins_from: &str) -> DryRun {
    let mut by_domain: HashMap<String, &NextHopFigures> = HashMap::with_capacity(hops.len());
    for hop in hops {
        if let Ok(d) = domain::normalize(&hop.domain) {
            by_domain.entry(d).or_insert(hop);
        }
    }
    let mut run = DryRun {
        pins_from: pins_from.to_owned(),
        pinned_domains: pins.len(),
        pinned_domains_seen: 0,
        messages_to_pinned: 0,
        deferred_messages: 0,
        unknown_messages: 0,
        domains: Vec::new(),
    };
    for pin in pins {
        let Some(hop) = by_domain.get(&pin.domain) else {
            continue;
        };
        run.pinned_domains_seen += 1;
        run.messages_to_pinned = run.messages_to_pinned.saturating_add(hop.messages);
        let untrusted = match pin.level {
            PinLevel::Verify => hop.tls_messages.saturating_sub(hop.trusted_tls_messages),
            PinLevel::Encrypt => 0,
        };
        let deferred = hop.plain_messages.saturating_add(untrusted);
        run.deferred_messages = run.deferred_messages.saturating_add(deferred);
        run.unknown_messages = run.unknown_messages.saturating_add(hop.unknown_messages);
        if deferred == 0 && hop.unknown_messages == 0 {
            continue;
        }
        let samples: Vec<&MessageSample> = match pin.level {
            PinLevel::Encrypt => hop.plain.iter().collect(),
            PinLevel::Verify => hop.plain.iter().chain(&hop.untrusted_tls).collect(),
        };
        let (first, last, sample) = merge_samples(&samples);
        run.domains.push(DeferredDomain {
            domain: pin.domain.clone(),
            level: pin.level,
            messages: hop.messages,
            deferred,
            plain: hop.plain_messages,
            untrusted_tls: untrusted,
            unknown: hop.unknown_messages,
            first,
            last,
            sample,
        });
    }
    run.domains.sort_by(|a, b| {
        b.deferred
            .cmp(&a.deferred)
            .then_with(|| b.unknown.cmp(&a.unknown))
            .then_with(|| a.domain.cmp(&b.domain))
    });
    run
}

/// The next hops with the figures of spellings of one domain (`Example.com` from one MTA,
/// `example.com.` from another: [`domain::normalize`]) added up, in first-seen order, so
/// that the rule and the dry run judge each domain on all its mail.
fn merge_spellings(hops: &[NextHopFigures]) -> Vec<NextHopFigures> {
    let mut merged: Vec<NextHopFigures> = Vec::with_capacity(hops.len());
    let mut at: HashMap<String, usize> = HashMap::with_capacity(hops.len());
    for hop in hops {
        let key = domain::normalize(&hop.domain).unwrap_or_else(|_| hop.domain.clone());
        let Some(m) = at.get(&key).and_then(|&i| merged.get_mut(i)) else {
            at.insert(key, merged.len());
            merged.push(hop.clone());
            continue;
        };
        m.messages = m.messages.saturating_add(hop.messages);
        m.tls_messages = m.tls_messages.saturating_add(hop.tls_messages);
        m.trusted_tls_messages = m
            .trusted_tls_messages
            .saturating_add(hop.trusted_tls_messages);
        m.plain_messages = m.plain_messages.saturating_add(hop.plain_messages);
        m.unknown_messages = m.unknown_messages.saturating_add(hop.unknown_messages);
        m.tls_share = sigillo_logs::aggregate::share(m.tls_messages, m.messages);
        m.first_seen = m.first_seen.clone().min(hop.first_seen.clone());
        m.last_seen = m.last_seen.clone().max(hop.last_seen.clone());
        for (mine, theirs) in [
            (&mut m.plain, &hop.plain),
            (&mut m.untrusted_tls, &hop.untrusted_tls),
        ] {
            if let Some(theirs) = theirs {
                *mine = Some(match mine.take() {
                    Some(ours) => {
                        let (first, last, sample) = merge_samples(&[&ours, theirs]);
                        MessageSample {
                            first: first.unwrap_or(ours.first),
                            last: last.unwrap_or(ours.last),
                            sample,
                        }
                    }
                    None => theirs.clone(),
                });
            }
        }
    }
    merged
}

type Merged = (Option<MessageRef>, Option<MessageRef>, Vec<MessageRef>);

/// The earliest first, the latest last, and the earliest few of several samples.
fn merge_samples(samples: &[&MessageSample]) -> Merged {
    // RFC 3339 UTC times of one width sort as text.
    let key = |m: &MessageRef| (m.time.clone(), m.id.clone());
    let first = samples.iter().map(|s| &s.first).min_by_key(|m| key(m));
    let last = samples.iter().map(|s| &s.last).max_by_key(|m| key(m));
    let mut sample: Vec<MessageRef> = samples
        .iter()
        .flat_map(|s| s.sample.iter().cloned())
        .collect();
    sample.sort_by_key(key);
    sample.truncate(NEXT_HOP_SAMPLE);
    (first.cloned(), last.cloned(), sample)
}

/// The part of `sigillo report --json` that `policy build` reads.
#[derive(Debug, Deserialize)]
struct ReportFigures {
    first: Option<String>,
    last: Option<String>,
    next_hops: Option<Vec<NextHopFigures>>,
    #[serde(default)]
    next_hops_omitted: NextHopsOmitted,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct BuildOutput<'a> {
    first: Option<&'a str>,
    last: Option<&'a str>,
    /// Domains with delivered outbound Internet mail in the window.
    next_hops: usize,
    next_hops_omitted: NextHopsOmitted,
    /// Absent when the pins come from `--pins`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<PinRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_pinned: Option<NotPinned>,
    pins: &'a [PinnedPeer],
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<&'a DryRun>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<u8> {
    let to_stdout = [&args.postfix, &args.exim]
        .iter()
        .filter(|p| p.as_deref() == Some(Path::new("-")))
        .count();
    if to_stdout > 1 || (to_stdout == 1 && args.json) {
        bail!("only one of --postfix -, --exim - and --json can use stdout");
    }
    refuse_overwriting_inputs(&args)?;
    args.logs.check()?;
    let figures = match &args.from_report {
        Some(path) => read_report(path)?,
        None => {
            let analysis = args.logs.analyze(&args.inputs, 0);
            let problems = crate::report_text::input_problems(&analysis)
                .replace("sigillo report:", "sigillo policy build:");
            let _ = std::io::stderr().write_all(problems.as_bytes());
            if analysis.nothing_read() {
                eprintln!("sigillo policy build: no log line could be read from the inputs");
                return Ok(2);
            }
            let f = analysis.figures;
            ReportFigures {
                first: f.first,
                last: f.last,
                next_hops: Some(f.next_hops),
                next_hops_omitted: f.next_hops_omitted,
            }
        }
    };
    let merged = merge_spellings(figures.next_hops.as_deref().unwrap_or_default());
    let hops = merged.as_slice();
    let rule = PinRule {
        min_messages: args.min_messages,
        min_tls_share: args.min_tls_share,
        verify: args.verify,
    };
    let (pins, rule, not_pinned, pins_from) = match &args.pins {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--pins {}", path.display()))?;
            let pins = read_policy_map_file(&text)
                .with_context(|| format!("--pins {}", path.display()))?;
            (pins, None, None, path.display().to_string())
        }
        None => {
            let s = select_pins(hops, &rule);
            (s.pins, Some(rule), Some(s.not_pinned), "rule".to_owned())
        }
    };
    let window = (figures.first.as_deref(), figures.last.as_deref());
    let header = rule.map(|r| file_header(&r, window)).unwrap_or_default();
    let mut notes = String::new();
    if let Some(path) = &args.postfix {
        let text = header.clone() + &policy_map_file(&pins)?;
        write_output(path, &text, "--postfix")?;
        postfix_notes(&mut notes, path, pins.len());
    }
    if let Some(path) = &args.exim {
        let text = header.clone() + &exim_domain_list(&pins)?;
        write_output(path, &text, "--exim")?;
        exim_notes(&mut notes, path, pins.len());
    }
    let dry = args.dry_run.then(|| dry_run(hops, &pins, &pins_from));
    let output = BuildOutput {
        first: window.0,
        last: window.1,
        next_hops: hops.len(),
        next_hops_omitted: figures.next_hops_omitted,
        rule,
        not_pinned,
        pins: &pins,
        dry_run: dry.as_ref(),
    };
    if args.json {
        let mut text = serde_json::to_string(&output)?;
        text.push('\n');
        emit(&text)?;
    } else {
        let summary = summary(&output, hops) + &notes;
        if to_stdout > 0 {
            eprint!("{summary}");
        } else {
            emit(&summary)?;
        }
    }
    Ok(match dry {
        Some(d) if d.deferred_messages > 0 => 1,
        _ => 0,
    })
}

/// Symlinks followed by hand when working out where a path that does not exist yet leads.
const MAX_SYMLINKS: usize = 8;

/// Where a path leads, to tell whether two paths name one file.
#[derive(Debug)]
struct FileIdentity {
    /// Device and inode of the file, when it exists (symlinks followed).
    id: Option<(u64, u64)>,
    /// Its canonical path when it exists; else where a write would create it: the canonical
    /// parent joined with the file name (after a dangling symlink, its target's); else the
    /// path made absolute.
    location: PathBuf,
    /// The canonical parent joined with the file name, a symlink at the end not followed: the
    /// entry a directory walk finds.
    entry: PathBuf,
}

impl FileIdentity {
    fn of(path: &Path) -> FileIdentity {
        let id = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let entry = parent_and_name(path);
        let location = path
            .canonicalize()
            .unwrap_or_else(|_| creation_target(path, &entry));
        FileIdentity {
            id,
            location,
            entry,
        }
    }

    fn same_file(&self, other: &FileIdentity) -> bool {
        match (self.id, other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.location == other.location,
        }
    }

    /// Whether the file is, or would be created, under the canonical directory `dir`.
    fn is_under(&self, dir: &Path) -> bool {
        self.location.starts_with(dir) || self.entry.starts_with(dir)
    }
}

/// `path` with its parent canonicalized (a symlink at the end is kept), else `path` made
/// absolute.
fn parent_and_name(path: &Path) -> PathBuf {
    let joined = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent.canonicalize().ok().map(|p| p.join(name))
        }
        _ => None,
    };
    joined
        .or_else(|| std::path::absolute(path).ok())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Where writing a path that does not exist creates the file: through dangling symlinks
/// (at most [`MAX_SYMLINKS`]) to the last target's parent and name. `entry` is
/// [`parent_and_name`] of `path`.
fn creation_target(path: &Path, entry: &Path) -> PathBuf {
    let mut at = entry.to_path_buf();
    let mut link = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        let Ok(target) = std::fs::read_link(&link) else {
            break;
        };
        let dir = at.parent().map(Path::to_path_buf).unwrap_or_default();
        link = dir.join(target);
        at = parent_and_name(&link);
    }
    at
}

/// Refuses, before anything is read, outputs that would overwrite what the run reads: an
/// output (`--postfix`, `--exim`; not `-`) that is the other output, a log file given as
/// input, the `--from-report` file, a file found in an input directory (also
/// through a symlink there), or any path under an input directory, where it would be read
/// as a log on the next run (even under a hidden name the walk skips: simpler to keep
/// outputs out of log directories altogether). Paths are compared by device and inode when
/// the file exists, else by canonical location.
fn refuse_overwriting_inputs(args: &BuildArgs) -> anyhow::Result<()> {
    let outputs: Vec<(&str, &Path, FileIdentity)> =
        [("--postfix", &args.postfix), ("--exim", &args.exim)]
            .into_iter()
            .filter_map(|(option, path)| {
                let path = path.as_deref().filter(|p| *p != Path::new("-"))?;
                Some((option, path, FileIdentity::of(path)))
            })
            .collect();
    if let [(a, a_path, a_id), (b, b_path, b_id)] = outputs.as_slice()
        && a_id.same_file(b_id)
    {
        bail!(
            "{a} {} and {b} {} name the same file: one would overwrite the other",
            a_path.display(),
            b_path.display()
        );
    }
    if outputs.is_empty() {
        return Ok(());
    }
    let clash = |option: &str, output: &Path, input: String| {
        anyhow::anyhow!(
            "{option} {}: the same file as {input}; refusing to overwrite an input, write the \
             output elsewhere",
            output.display()
        )
    };
    // An output that is the file `input` (called `what` in the error).
    let same_as = |input: &Path, what: String| -> anyhow::Result<()> {
        let input_id = FileIdentity::of(input);
        match outputs.iter().find(|(_, _, id)| id.same_file(&input_id)) {
            Some((option, output, _)) => Err(clash(option, output, what)),
            None => Ok(()),
        }
    };
    // (`--pins` cannot be given with an output.)
    if let Some(input) = &args.from_report {
        same_as(input, format!("--from-report {}", input.display()))?;
    }
    for input in &args.inputs {
        if input.as_path() == Path::new("-") {
            continue;
        }
        let dir = std::fs::metadata(input)
            .is_ok_and(|m| m.is_dir())
            .then(|| input.canonicalize().ok())
            .flatten();
        let Some(dir) = dir else {
            same_as(input, format!("the input {}", input.display()))?;
            continue;
        };
        for (option, output, id) in &outputs {
            if id.is_under(&dir) {
                bail!(
                    "{option} {}: inside the input directory {}, whose files are all read as \
                     logs (it would be read as one on the next run); write it elsewhere",
                    output.display(),
                    input.display()
                );
            }
        }
        // A symlink in the directory may lead to an output elsewhere.
        let (found, _) = sigillo_logs::input::discover(std::slice::from_ref(input));
        for file in found {
            let sigillo_logs::input::SourcePath::File(file) = file else {
                continue;
            };
            // Only an existing output can be a file found there: compare inodes (one stat
            // per file; the run reads them all anyway).
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let file_id = Some((meta.dev(), meta.ino()));
            for (option, output, id) in &outputs {
                if id.id.is_some() && id.id == file_id {
                    return Err(clash(
                        option,
                        output,
                        format!(
                            "{}, read from the input directory {}",
                            file.display(),
                            input.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Reads the figures from `report --json` output.
fn read_report(path: &Path) -> anyhow::Result<ReportFigures> {
    let file =
        std::fs::File::open(path).with_context(|| format!("--from-report {}", path.display()))?;
    let figures: ReportFigures = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| {
            format!(
                "--from-report {}: expected the output of sigillo report --json",
                path.display()
            )
        })?;
    let Some(hops) = &figures.next_hops else {
        bail!(
            "--from-report {}: the report has no next_hops (written by an older sigillo?); run sigillo report --json again",
            path.display()
        );
    };
    check_next_hops(hops).with_context(|| format!("--from-report {}", path.display()))?;
    Ok(figures)
}

/// Counts `report` can write: they add up. A hand-edited report that breaks this would pin
/// from figures no log gave.
fn check_next_hops(hops: &[NextHopFigures]) -> anyhow::Result<()> {
    for h in hops {
        let parts = [h.tls_messages, h.plain_messages, h.unknown_messages];
        let sum = parts.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        if sum != Some(h.messages) || h.trusted_tls_messages > h.tls_messages {
            bail!(
                "next_hops {:?}: the counts do not add up (messages {}, TLS {}, plaintext {}, unknown {}, trusted TLS {})",
                h.domain,
                h.messages,
                h.tls_messages,
                h.plain_messages,
                h.unknown_messages,
                h.trusted_tls_messages
            );
        }
    }
    Ok(())
}

/// Writes `text` to `path` (`-`: standard output) whole or not at all: into a new file beside
/// it, then renamed over it, so an MTA reading the map meanwhile never sees it half written.
fn write_output(path: &Path, text: &str, option: &str) -> anyhow::Result<()> {
    if path == Path::new("-") {
        emit(text)?;
        return Ok(());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.sigillo-{}", std::process::id()));
    let written = std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.with_context(|| format!("{option} {}", path.display()))
}

/// Comment lines that open a written pin file: the window and the rule.
fn file_header(rule: &PinRule, (first, last): (Option<&str>, Option<&str>)) -> String {
    let share = share_words(rule.min_tls_share);
    let mut out = format!(
        "# From mail logged {} to {}: next-hop domains with at least {} delivered\n\
         # messages, {share} over TLS",
        first.unwrap_or("(none)"),
        last.unwrap_or("(none)"),
        rule.min_messages,
    );
    if rule.verify {
        let _ = write!(out, " (verify: {share} with a trusted certificate)");
    }
    out.push_str(".\n");
    out
}

/// `every one` for 1, else `at least 95%`.
fn share_words(share: f64) -> String {
    if share >= 1.0 {
        "every one".to_owned()
    } else {
        format!("at least {}%", (share * 1e4).round() / 1e2)
    }
}

/// After writing `path` (not stdout): what was written and the lines that use it.
fn usage_notes(out: &mut String, path: &Path, written: &str, usage: &[String]) {
    if path == Path::new("-") {
        return;
    }
    let _ = writeln!(out, "\nWrote {written} to {}.", path.display());
    for line in usage {
        let _ = writeln!(out, "  {line}");
    }
}

fn postfix_notes(out: &mut String, path: &Path, pins: usize) {
    let p = path.display();
    let usage = [
        format!("postmap hash:{p}"),
        format!("main.cf: smtp_tls_policy_maps = hash:{p}   (or texthash:{p}, without postmap)"),
        format!("or serve them after DANE and MTA-STS: sigillo policy serve --pins {p}"),
    ];
    usage_notes(out, path, &format!("{pins} pin(s) for Postfix"), &usage);
}

fn exim_notes(out: &mut String, path: &Path, pins: usize) {
    let usage = [
        format!("domainlist tls_pinned = {}", path.display()),
        "in the smtp transport: multi_domain = false".to_owned(),
        "hosts_require_tls = ${if match_domain{$domain}{+tls_pinned}{*}{}}".to_owned(),
    ];
    usage_notes(out, path, &format!("{pins} domain(s) for Exim"), &usage);
}

fn summary(o: &BuildOutput<'_>, hops: &[NextHopFigures]) -> String {
    let mut out = String::new();
    let messages: u64 = hops.iter().fold(0u64, |a, h| a.saturating_add(h.messages));
    let _ = writeln!(
        out,
        "Next-hop domains with delivered mail: {} ({messages} messages), from {} to {}",
        o.next_hops,
        o.first.unwrap_or("(none)"),
        o.last.unwrap_or("(none)"),
    );
    let omitted = o.next_hops_omitted;
    if omitted.no_domain_messages > messages {
        let _ = writeln!(
            out,
            "Note: {} outbound messages named no single recipient domain: if a relay host takes \
             your mail, Postfix keys its TLS policy by [relay], and pins by domain do not apply.",
            omitted.no_domain_messages
        );
    }
    if omitted.over_cap_messages > 0 {
        let _ = writeln!(
            out,
            "Note: {} messages went to domains past the report's cap of distinct domains.",
            omitted.over_cap_messages
        );
    }
    if let (Some(rule), Some(np)) = (&o.rule, &o.not_pinned) {
        let share = share_words(rule.min_tls_share);
        let _ = writeln!(
            out,
            "Rule: at least {} messages, {share} over TLS{}",
            rule.min_messages,
            if rule.verify {
                format!("; verify when {share} had a trusted certificate")
            } else {
                String::new()
            }
        );
        let verify = o
            .pins
            .iter()
            .filter(|p| p.level == PinLevel::Verify)
            .count();
        let pinned_messages: u64 = o
            .pins
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.evidence.messages));
        let _ = writeln!(
            out,
            "Pinned: {} domain(s) ({} encrypt, {verify} verify), {pinned_messages} messages",
            o.pins.len(),
            o.pins.len() - verify,
        );
        let _ = writeln!(
            out,
            "Not pinned: {} with fewer messages, {} below the TLS share, {} not a domain name",
            np.few_messages, np.below_tls_share, np.not_a_domain
        );
    }
    if let Some(d) = o.dry_run {
        dry_run_text(&mut out, d);
    }
    out
}

fn dry_run_text(out: &mut String, d: &DryRun) {
    let from = if d.pins_from == "rule" {
        "the rule's pins".to_owned()
    } else {
        format!("the pins in {}", d.pins_from)
    };
    let _ = writeln!(
        out,
        "\nDry run with {from}: {} of {} messages to {} pinned domain(s) seen would have been \
         deferred{}",
        d.deferred_messages,
        d.messages_to_pinned,
        d.pinned_domains_seen,
        if d.unknown_messages > 0 {
            format!(
                "; {} more, of unknown transport, might have been",
                d.unknown_messages
            )
        } else {
            String::new()
        }
    );
    if d.pinned_domains > d.pinned_domains_seen {
        let _ = writeln!(
            out,
            "{} pinned domain(s) had no delivered mail in the window.",
            d.pinned_domains - d.pinned_domains_seen
        );
    }
    if d.domains.is_empty() {
        return;
    }
    let width = d.domains.iter().map(|x| x.domain.len()).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "  {:width$}  level    deferred  unknown  messages  first / last deferred",
        "domain"
    );
    for x in &d.domains {
        let level = match x.level {
            PinLevel::Encrypt => "encrypt",
            PinLevel::Verify => "verify",
        };
        let when = |m: &Option<MessageRef>| {
            m.as_ref()
                .map(|m| format!("{} {}", m.time, m.id))
                .unwrap_or_else(|| "-".to_owned())
        };
        let _ = writeln!(
            out,
            "  {:width$}  {level:7}  {:8}  {:7}  {:8}  {} / {}",
            x.domain,
            x.deferred,
            x.unknown,
            x.messages,
            when(&x.first),
            when(&x.last),
        );
        if !x.sample.is_empty() {
            let ids: Vec<&str> = x.sample.iter().map(|m| m.id.as_str()).collect();
            let _ = writeln!(out, "  {:width$}  e.g. {}", "", ids.join(" "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: u32) -> MessageRef {
        MessageRef {
            time: format!("2026-11-0{i}T00:00:00Z"),
            id: format!("Q{i}"),
        }
    }

    fn sample(ids: &[u32]) -> Option<MessageSample> {
        let refs: Vec<MessageRef> = ids.iter().map(|&i| at(i)).collect();
        Some(MessageSample {
            first: refs.first()?.clone(),
            last: refs.last()?.clone(),
            sample: refs,
        })
    }

    /// (domain, messages, tls, trusted, plain, unknown); samples from the plain and the
    /// untrusted TLS counts.
    fn hop(domain: &str, messages: u64, tls: u64, trusted: u64, plain: u64) -> NextHopFigures {
        let unknown = messages - tls - plain;
        NextHopFigures {
            domain: domain.to_owned(),
            messages,
            tls_messages: tls,
            trusted_tls_messages: trusted,
            plain_messages: plain,
            unknown_messages: unknown,
            tls_share: 0.0,
            first_seen: "2026-11-01T00:00:00Z".into(),
            last_seen: "2026-11-08T00:00:00Z".into(),
            plain: sample(&(1..=plain.min(5) as u32).collect::<Vec<_>>()),
            untrusted_tls: sample(&(5..5 + (tls - trusted).min(4) as u32).collect::<Vec<_>>()),
        }
    }

    /// A hand-edited report is checked before anything is pinned from it, and spellings of
    /// one domain are judged together.
    #[test]
    fn figures_no_log_gave_are_refused_and_spellings_merged() {
        assert!(
            check_next_hops(&[hop("a.example", 10, 8, 8, 2), hop("b.example", 3, 3, 0, 0)]).is_ok()
        );
        // Two spellings of one domain are one domain, judged on all its mail.
        let merged = merge_spellings(&[
            hop("Example.com", 10, 10, 10, 0),
            hop("other.example", 1, 1, 1, 0),
            hop("example.com.", 5, 0, 0, 5),
        ]);
        let figures: Vec<(&str, u64, u64, u64)> = merged
            .iter()
            .map(|h| {
                (
                    h.domain.as_str(),
                    h.messages,
                    h.tls_messages,
                    h.plain_messages,
                )
            })
            .collect();
        assert_eq!(
            figures,
            [("Example.com", 15, 10, 5), ("other.example", 1, 1, 0)]
        );
        assert!(merged[0].plain.is_some());
        let rule = PinRule {
            min_messages: 1,
            min_tls_share: 1.0,
            verify: false,
        };
        let pins = select_pins(&merged, &rule).pins;
        assert_eq!(pins.len(), 1, "example.com had plaintext mail: not pinned");
        let mut more_tls = hop("big.example", 10, 10, 10, 0);
        more_tls.tls_messages = 25;
        let err = check_next_hops(&[more_tls]).unwrap_err();
        assert!(format!("{err:#}").contains("do not add up"), "{err:#}");
        let mut trusted = hop("t.example", 10, 10, 10, 0);
        trusted.trusted_tls_messages = 11;
        assert!(check_next_hops(&[trusted]).is_err());
        let mut huge = hop("h.example", 0, 0, 0, 0);
        (huge.messages, huge.tls_messages, huge.plain_messages) = (u64::MAX, u64::MAX, 1);
        assert!(
            check_next_hops(&[huge]).is_err(),
            "an overflowing sum does not add up"
        );
    }

    #[test]
    fn pins_by_rule() {
        let hops = [
            hop("all-trusted.example", 12, 12, 12, 0),
            hop("all-tls.example", 20, 20, 3, 0),
            hop("one-plain.example", 20, 19, 19, 1),
            hop("one-unknown.example", 20, 19, 19, 0),
            hop("few.example", 9, 9, 9, 0),
            hop("[192.0.2.1]", 30, 30, 30, 0),
            hop("Upper.Example", 10, 10, 10, 0),
        ];
        // (min messages, min share, verify) → pins as "domain level"; not pinned (few, below, not a domain)
        type Case = (u64, f64, bool, &'static [&'static str], (u64, u64, u64));
        let cases: &[Case] = &[
            (
                10,
                1.0,
                false,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example encrypt",
                    "upper.example encrypt",
                ],
                (1, 2, 1),
            ),
            (
                10,
                1.0,
                true,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example verify",
                    "upper.example verify",
                ],
                (1, 2, 1),
            ),
            (
                10,
                0.95,
                true,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example verify",
                    "one-plain.example verify",
                    "one-unknown.example verify",
                    "upper.example verify",
                ],
                (1, 0, 1),
            ),
            (
                1,
                1.0,
                false,
                &[
                    "all-tls.example encrypt",
                    "all-trusted.example encrypt",
                    "few.example encrypt",
                    "upper.example encrypt",
                ],
                (0, 2, 1),
            ),
            (21, 1.0, false, &[], (6, 0, 1)),
        ];
        for (min_messages, share, verify, want, (few, below, bad)) in cases {
            let rule = PinRule {
                min_messages: *min_messages,
                min_tls_share: *share,
                verify: *verify,
            };
            let s = select_pins(&hops, &rule);
            let got: Vec<String> = s
                .pins
                .iter()
                .map(|p| format!("{} {}", p.domain, p.level.policy()))
                .collect();
            assert_eq!(got, *want, "{rule:?}");
            assert_eq!(
                s.not_pinned,
                NotPinned {
                    few_messages: *few,
                    below_tls_share: *below,
                    not_a_domain: *bad
                },
                "{rule:?}"
            );
        }
        let s = select_pins(
            &hops,
            &PinRule {
                min_messages: 10,
                min_tls_share: 1.0,
                verify: false,
            },
        );
        assert_eq!(
            s.pins[0].evidence,
            Evidence {
                messages: 20,
                tls: 20,
                verified: 3
            }
        );
    }

    #[test]
    fn dry_run_counts_what_pins_would_defer() {
        let hops = [
            hop("mixed.example", 10, 7, 5, 2),
            hop("clean.example", 10, 10, 10, 0),
            hop("Untrusted.Example", 4, 4, 0, 0),
        ];
        let pin = |d: &str, level| PinnedPeer::new(d, level, Evidence::default()).unwrap();
        let pins = [
            pin("mixed.example", PinLevel::Encrypt),
            pin("clean.example", PinLevel::Verify),
            pin("untrusted.example", PinLevel::Verify),
            pin("unseen.example", PinLevel::Encrypt),
        ];
        let d = dry_run(&hops, &pins, "pins.cf");
        assert_eq!(
            (
                d.pinned_domains,
                d.pinned_domains_seen,
                d.messages_to_pinned,
                d.deferred_messages,
                d.unknown_messages
            ),
            (4, 3, 24, 6, 1)
        );
        let rows: Vec<_> = d
            .domains
            .iter()
            .map(|x| {
                (
                    x.domain.as_str(),
                    x.deferred,
                    x.plain,
                    x.untrusted_tls,
                    x.unknown,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("untrusted.example", 4, 0, 4, 0),
                ("mixed.example", 2, 2, 0, 1)
            ]
        );
        let ids = |x: &DeferredDomain| x.sample.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&d.domains[0]), ["Q5", "Q6", "Q7", "Q8"]);
        // Under encrypt only the plaintext messages count, not the untrusted TLS ones.
        assert_eq!(ids(&d.domains[1]), ["Q1", "Q2"]);
        assert_eq!(d.domains[1].first, Some(at(1)));
        assert_eq!(d.domains[1].last, Some(at(2)));
        // The same domain pinned at verify also defers its untrusted TLS messages.
        let d = dry_run(&hops, &[pin("mixed.example", PinLevel::Verify)], "rule");
        assert_eq!((d.deferred_messages, d.domains[0].untrusted_tls), (4, 2));
        assert_eq!(ids(&d.domains[0]), ["Q1", "Q2", "Q5", "Q6"]);
        assert_eq!(d.domains[0].last, Some(at(6)));
    }

    #[test]
    fn shares_and_headers() {
        assert_eq!(parse_share("0.95"), Ok(0.95));
        assert_eq!(parse_share("1"), Ok(1.0));
        for bad in ["0", "1.5", "-0.1", "x", "NaN"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert!(reaches(19, 20, 0.95));
        assert!(!reaches(18, 20, 0.95));
        assert!(!reaches(0, 0, 0.5));
        let rule = PinRule {
            min_messages: 10,
            min_tls_share: 0.95,
            verify: true,
        };
        assert_eq!(
            file_header(
                &rule,
                (Some("2026-11-01T00:00:00Z"), Some("2026-11-08T00:00:00Z"))
            ),
            "# From mail logged 2026-11-01T00:00:00Z to 2026-11-08T00:00:00Z: next-hop domains with at least 10 delivered\n\
             # messages, at least 95% over TLS (verify: at least 95% with a trusted certificate).\n"
        );
    }
}
