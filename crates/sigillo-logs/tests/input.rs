//! The input layer on files written into temp dirs: plain, gzip (whole, multi-member,
//! truncated, corrupt), zstd (whole, multi-frame, truncated), rotated directories, stdin-like
//! magic detection, binary garbage, over-long lines, CRLF, no final newline, format detection;
//! and on logs written by a real Postfix and a real Exim. Expected counts for the fixture files
//! are in `testdata/input/expected.tsv`.

use sigillo_logs::envelope::Line;
use sigillo_logs::input::{
    self, Compression, Format, InputError, InputOptions, InputStats, Source, SourcePath, discover,
};
use sigillo_testkit::{
    Exim, EximOptions, Postfix, PostfixOptions, TestCa, require_tools, swaks_ok,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/input")
        .join(name)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// Reads a file; returns the source and the raw lines handed over.
fn read_path(path: &Path, opts: &InputOptions) -> (Source, Vec<String>) {
    let mut lines = Vec::new();
    let src = input::open(&SourcePath::File(path.to_path_buf()), opts)
        .for_each_line(|l: &Line<'_>| lines.push(l.raw.to_string()));
    (src, lines)
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn error_lines(src: &Source) -> Vec<u64> {
    src.stats
        .errors
        .iter()
        .filter_map(|e| match e {
            InputError::InvalidUtf8 { line, .. }
            | InputError::Binary { line, .. }
            | InputError::LongLine { line, .. }
            | InputError::BadLine { line, .. } => Some(*line),
            _ => None,
        })
        .collect()
}

#[test]
fn fixtures_plain_gz_zst_match_expected_table() {
    let table = std::fs::read_to_string(testdata("expected.tsv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for row in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = row.split('\t').collect();
        let [file, format, lines, good, bad, first_err] = f[..] else {
            panic!("bad row {row:?}");
        };
        let data = std::fs::read(testdata(file)).unwrap();
        // The compressed copies get names that do not say so: detection is by magic bytes.
        let variants = [
            (Compression::None, testdata(file)),
            (
                Compression::Gzip,
                write(dir.path(), &format!("{file}.a"), &gzip(&data)),
            ),
            (
                Compression::Zstd,
                write(dir.path(), &format!("{file}.b"), &zstd(&data)),
            ),
        ];
        for (compression, path) in variants {
            let (src, got) = read_path(&path, &InputOptions::default());
            let at = format!("{file} as {compression:?}: {:?}", src.stats.errors);
            assert_eq!(src.compression, compression, "{at}");
            assert_eq!(src.format.map_or("-", Format::name), format, "{at}");
            assert!(!src.format_forced);
            assert_eq!(src.stats.lines, lines.parse::<u64>().unwrap(), "{at}");
            assert_eq!(src.stats.good_lines, good.parse::<u64>().unwrap(), "{at}");
            assert_eq!(src.stats.bad_lines, bad.parse::<u64>().unwrap(), "{at}");
            assert_eq!(got.len() as u64, src.stats.good_lines, "{at}");
            let first = error_lines(&src).first().map(u64::to_string);
            assert_eq!(first.as_deref().unwrap_or("-"), first_err, "{at}");
            if src.format.is_some() {
                assert_eq!(src.stats.bytes, data.len() as u64, "{at}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 18);
}

#[test]
fn mixed_bad_lines_are_reported_with_their_line_numbers() {
    let (src, got) = read_path(&testdata("mixed.log"), &InputOptions::default());
    assert_eq!(error_lines(&src), [4, 6, 8, 10, 11]);
    let kinds: Vec<&str> = src
        .stats
        .errors
        .iter()
        .map(|e| match e {
            InputError::BadLine { .. } => "bad",
            InputError::InvalidUtf8 { .. } => "utf8",
            InputError::Binary { .. } => "binary",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["bad", "utf8", "binary", "utf8", "bad"]);
    assert!(got.last().unwrap().ends_with("last good line"));
    let shown = src.stats.errors[0].to_string();
    assert!(
        shown.contains("mixed.log:4:") && shown.contains("this line fits no"),
        "{shown}"
    );
}

#[test]
fn gzip_multi_member_and_zstd_multi_frame_read_whole() {
    let a = std::fs::read(testdata("postfix.log")).unwrap();
    let b = std::fs::read(testdata("exim.log")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in [
        ("multi.gz", [gzip(&a), gzip(&b), gzip(&a)].concat()),
        ("multi.zst", [zstd(&a), zstd(&b), zstd(&a)].concat()),
    ] {
        let p = write(dir.path(), name, &data);
        let (src, got) = read_path(&p, &InputOptions::default());
        assert!(
            src.stats.errors.is_empty(),
            "{name}: {:?}",
            src.stats.errors
        );
        assert_eq!(src.format, Some(Format::Postfix), "{name}");
        assert_eq!(got.len(), 16 + 8 + 16, "{name}");
        assert_eq!(
            got[16],
            b.split(|&c| c == b'\n')
                .next()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .unwrap()
        );
    }
}

/// A longer Postfix log, so truncation points fall inside the compressed stream.
fn long_log(lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        writeln!(
            out,
            "Nov 22 13:{:02}:{:02} mx postfix/smtpd[{}]: connect from unknown[127.0.0.{}] line {i}",
            (i / 60) % 60,
            i % 60,
            1000 + i % 7,
            i % 250
        )
        .unwrap();
    }
    out
}

#[test]
fn truncated_compressed_files_report_and_keep_what_came_before() {
    let data = long_log(20_000);
    let total = 20_000u64;
    let dir = tempfile::tempdir().unwrap();
    for (kind, packed) in [("gz", gzip(&data)), ("zst", zstd(&data))] {
        for frac in [0.1, 0.5, 0.9, 0.999] {
            let cut = (packed.len() as f64 * frac) as usize;
            let p = write(dir.path(), &format!("t.{kind}"), &packed[..cut]);
            let (src, got) = read_path(&p, &InputOptions::default());
            let at = format!(
                "{kind} cut at {cut}/{}: {:?}",
                packed.len(),
                src.stats.errors
            );
            let trunc: Vec<u64> = src
                .stats
                .errors
                .iter()
                .filter_map(|e| match e {
                    InputError::Truncated { lines, .. } => Some(*lines),
                    _ => None,
                })
                .collect();
            assert_eq!(trunc.len(), 1, "{at}");
            assert_eq!(src.stats.errors.len(), 1, "{at}");
            assert!(trunc[0] < total, "{at}");
            assert_eq!(got.len() as u64, trunc[0], "{at}");
            assert_eq!(
                src.stats.bad_lines, 0,
                "{at}: a cut last line must not be handed over"
            );
            // What came before the cut is intact, in order.
            for (i, l) in got.iter().enumerate() {
                assert!(l.ends_with(&format!(" line {i}")), "{at}: {l}");
            }
            assert!(
                src.to_owned().stats.errors[0]
                    .to_string()
                    .contains("truncated after")
            );
        }
        // A corrupt middle: flipped bytes.
        let mut bad = packed.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 16] {
            *b ^= 0x5a;
        }
        let p = write(dir.path(), &format!("c.{kind}"), &bad);
        let (src, _) = read_path(&p, &InputOptions::default());
        assert!(
            src.stats
                .errors
                .iter()
                .any(|e| matches!(e, InputError::Truncated { .. })),
            "{kind} corrupt: {} errors, last {:?}",
            src.stats.errors.len(),
            src.stats.errors.last()
        );
    }
    // Cut inside the header: nothing readable.
    let p = write(dir.path(), "h.gz", &gzip(&data)[..5]);
    let (src, got) = read_path(&p, &InputOptions::default());
    assert!(got.is_empty());
    assert!(
        matches!(
            src.stats.errors[..],
            [InputError::Truncated { lines: 0, .. }]
        ),
        "{:?}",
        src.stats.errors
    );
}

#[test]
fn rotated_directory_is_read_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Day N's file holds lines for Nov 10+N; the names are those logrotate writes.
    let day = |n: u32| format!("Nov {:02} 10:00:00 mx postfix/qmgr[1]: day {n}\n", 10 + n);
    write(d, "mail.log", day(5).as_bytes());
    write(d, "mail.log.1", day(4).as_bytes());
    write(d, "mail.log.2.gz", &gzip(day(3).as_bytes()));
    write(d, "mail.log.3.gz", &gzip(day(2).as_bytes()));
    write(d, "mail.log.10.zst", &zstd(day(1).as_bytes()));
    write(d, ".hidden", b"not read");
    std::fs::create_dir(d.join("sub")).unwrap();
    write(
        &d.join("sub"),
        "maillog-20261121.gz",
        &gzip(day(11).as_bytes()),
    );
    write(&d.join("sub"), "maillog-20261120", day(10).as_bytes());
    write(&d.join("sub"), "maillog", day(12).as_bytes());

    let (paths, errors) = discover(&[d.to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<String> = paths
        .iter()
        .map(|p| match p {
            SourcePath::File(f) => f.strip_prefix(d).unwrap().display().to_string(),
            SourcePath::Stdin => "-".into(),
        })
        .collect();
    assert_eq!(
        names,
        [
            "mail.log.10.zst",
            "mail.log.3.gz",
            "mail.log.2.gz",
            "mail.log.1",
            "mail.log",
            "sub/maillog-20261120",
            "sub/maillog-20261121.gz",
            "sub/maillog",
        ]
    );
    let mut days = Vec::new();
    for p in &paths {
        let src = input::read(p, &InputOptions::default(), |f, l| {
            assert_eq!(f, Some(Format::Postfix));
            days.push(l.message.trim_start_matches("day ").parse::<u32>().unwrap());
        });
        assert!(src.stats.errors.is_empty(), "{:?}", src.stats.errors);
    }
    assert_eq!(days, [1, 2, 3, 4, 5, 10, 11, 12]);

    // `-` is stdin (which ends a run of named files, sorted oldest first); missing paths are
    // reported.
    let (paths, errors) = discover(&[
        d.join("mail.log"),
        PathBuf::from("-"),
        d.join("nope"),
        d.join("mail.log.1"),
    ]);
    assert_eq!(
        paths,
        [
            SourcePath::File(d.join("mail.log")),
            SourcePath::Stdin,
            SourcePath::File(d.join("mail.log.1")),
        ]
    );
    assert!(
        matches!(&errors[..], [InputError::Unreadable { file, .. }] if file.ends_with("nope")),
        "{errors:?}"
    );
}

/// The names of `paths`, relative to `dir`.
fn names_under(dir: &Path, paths: &[SourcePath]) -> Vec<String> {
    paths
        .iter()
        .map(|p| match p {
            SourcePath::File(f) => f.strip_prefix(dir).unwrap_or(f).display().to_string(),
            SourcePath::Stdin => "-".into(),
        })
        .collect()
}

#[test]
fn named_files_are_read_oldest_first_and_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["mail.log", "mail.log.1", "mail.log.2.gz", "other.log"] {
        write(d, name, b"x\n");
    }
    std::os::unix::fs::symlink(d.join("mail.log"), d.join("link.log")).unwrap();
    // What the shell makes of `mail.log*`: newest first. Then the same file again, by name
    // and through a symlink; stdin ends a run of named files.
    let (paths, errors) = discover(&[
        d.join("mail.log"),
        d.join("mail.log.1"),
        d.join("mail.log.2.gz"),
        d.join("mail.log.1"),
        PathBuf::from("-"),
        d.join("other.log"),
        d.join("link.log"),
    ]);
    assert_eq!(
        names_under(d, &paths),
        ["mail.log.2.gz", "mail.log.1", "mail.log", "-", "other.log"]
    );
    let same: Vec<(String, String)> = errors
        .iter()
        .map(|e| match e {
            InputError::SameFile { file, first } => (file.clone(), first.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let name = |n: &str| d.join(n).display().to_string();
    assert_eq!(
        same,
        [
            (name("mail.log.1"), name("mail.log.1")),
            (name("link.log"), name("mail.log")),
        ]
    );

    // Different logs keep the order they were named in; each log's files go oldest first.
    let (paths, errors) = discover(&[
        d.join("other.log"),
        d.join("mail.log"),
        d.join("mail.log.2.gz"),
        d.join("mail.log.1"),
    ]);
    assert_eq!(
        names_under(d, &paths),
        ["other.log", "mail.log.2.gz", "mail.log.1", "mail.log"]
    );
    assert!(errors.is_empty(), "{errors:?}");

    // A directory and a file inside it: the file is read once, where the walk put it.
    let (paths, errors) = discover(&[d.to_path_buf(), d.join("mail.log.1")]);
    assert_eq!(paths.len(), 4, "{paths:?}");
    assert_eq!(errors.len(), 2, "{errors:?}"); // link.log and the named mail.log.1
}

#[test]
fn a_debian_log_directory_is_not_counted_twice() {
    // rsyslog on Debian copies every mail line into `syslog` (and, in older configurations,
    // into `mail.info`/`mail.warn`/`mail.err`) beside `mail.log`.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in [
        "mail.log",
        "mail.log.1",
        "syslog",
        "syslog.1",
        "mail.info",
        "mail.warn.2.gz",
        "messages",
        "daemon.log",
    ] {
        write(d, name, b"x\n");
    }
    let (paths, errors) = discover(&[d.to_path_buf()]);
    assert_eq!(
        names_under(d, &paths),
        ["daemon.log", "mail.log.1", "mail.log", "messages"]
    );
    let mut covered: Vec<String> = errors
        .iter()
        .map(|e| match e {
            InputError::CoveredBy { file, covered_by } => {
                assert_eq!(covered_by, &d.join("mail.log").display().to_string());
                Path::new(file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    covered.sort();
    assert_eq!(
        covered,
        ["mail.info", "mail.warn.2.gz", "syslog", "syslog.1"]
    );
    // Named, it is read; and without a mail.log beside it, a walked syslog is read too.
    let (paths, errors) = discover(&[d.join("syslog")]);
    assert_eq!(names_under(d, &paths), ["syslog"]);
    assert!(errors.is_empty(), "{errors:?}");
    std::fs::remove_file(d.join("mail.log")).unwrap();
    std::fs::remove_file(d.join("mail.log.1")).unwrap();
    let (paths, errors) = discover(&[d.to_path_buf()]);
    assert_eq!(paths.len(), 6, "{paths:?}");
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn an_exim_log_directory_is_not_counted_twice() {
    // Exim writes each rejection line (one naming a callout's failed STARTTLS) to its main
    // log and again to its reject log: Debian's mainlog/rejectlog, Red Hat's
    // main.log/reject.log, cPanel's exim_mainlog/exim_rejectlog.
    for (main, reject, panic) in [
        ("mainlog", "rejectlog", "paniclog"),
        ("main.log", "reject.log", "panic.log"),
        ("exim_mainlog", "exim_rejectlog", "exim_paniclog"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rotated = format!("{reject}.1");
        for name in [main, reject, rotated.as_str(), panic] {
            write(d, name, b"x\n");
        }
        let (paths, errors) = discover(&[d.to_path_buf()]);
        let mut read = names_under(d, &paths);
        read.sort();
        let mut want = vec![main.to_owned(), panic.to_owned()];
        want.sort();
        assert_eq!(read, want, "{main}");
        let mut covered: Vec<String> = errors
            .iter()
            .map(|e| match e {
                InputError::CoveredBy { file, covered_by } => {
                    assert_eq!(covered_by, &d.join(main).display().to_string());
                    Path::new(file)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        covered.sort();
        assert_eq!(covered, [reject.to_owned(), rotated.clone()], "{main}");
        // Named, it is read; without the main log beside it, a walked reject log is read.
        let (paths, errors) = discover(&[d.join(reject)]);
        assert_eq!(names_under(d, &paths), [reject]);
        assert!(errors.is_empty(), "{errors:?}");
        std::fs::remove_file(d.join(main)).unwrap();
        let (paths, errors) = discover(&[d.to_path_buf()]);
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[test]
fn unreadable_and_unsupported_sources_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (src, got) = read_path(&dir.path().join("missing.log"), &InputOptions::default());
    assert!(got.is_empty());
    assert!(matches!(
        src.stats.errors[..],
        [InputError::Unreadable { .. }]
    ));
    // A directory opened as a file.
    let (src, _) = read_path(dir.path(), &InputOptions::default());
    assert!(
        matches!(
            src.stats.errors[..],
            [InputError::Unreadable { .. }] | [InputError::Truncated { .. }]
        ),
        "{:?}",
        src.stats.errors
    );
    let xz = write(
        dir.path(),
        "a.xz",
        &[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3],
    );
    let (src, _) = read_path(&xz, &InputOptions::default());
    assert!(
        matches!(
            src.stats.errors[..],
            [InputError::UnsupportedCompression {
                compression: "xz",
                ..
            }]
        ),
        "{:?}",
        src.stats.errors
    );
    let bz = write(dir.path(), "a.bz2", b"BZh91AY&SY....");
    let (src, _) = read_path(&bz, &InputOptions::default());
    assert!(
        matches!(
            src.stats.errors[..],
            [InputError::UnsupportedCompression {
                compression: "bzip2",
                ..
            }]
        ),
        "{:?}",
        src.stats.errors
    );
    // An empty file: no lines, no error.
    let empty = write(dir.path(), "empty.log", b"");
    let (src, _) = read_path(&empty, &InputOptions::default());
    assert_eq!((src.stats.lines, src.stats.errors.len()), (0, 0));
}

#[test]
fn binary_garbage_file_is_not_read_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let mut garbage = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    let p = write(dir.path(), "garbage.bin", &garbage);
    let (src, got) = read_path(&p, &InputOptions::default());
    assert!(got.is_empty());
    assert_eq!(src.format, None);
    assert!(
        matches!(src.stats.errors[..], [InputError::UnknownFormat { .. }]),
        "{:?}",
        src.stats.errors
    );

    // Forced: every line is read and rejected, errors capped and counted.
    let opts = InputOptions {
        format: Some(Format::Postfix),
        max_errors: 10,
        ..InputOptions::default()
    };
    let (src, got) = read_path(&p, &opts);
    assert!(src.format_forced);
    assert!(
        got.len() as u64 <= src.stats.lines / 10,
        "{} of {}",
        got.len(),
        src.stats.lines
    );
    assert_eq!(src.stats.errors.len(), 10);
    let newlines = garbage.iter().filter(|&&c| c == b'\n').count() as u64;
    assert!(src.stats.lines == newlines || src.stats.lines == newlines + 1);
    assert_eq!(
        src.stats.errors.len() as u64 + src.stats.errors_dropped,
        src.stats.bad_lines + src.stats.skipped_long_lines
    );
    assert!(
        src.stats.good_lines + src.stats.bad_lines + src.stats.skipped_long_lines
            <= src.stats.lines
    );
    assert!(src.stats.bad_lines > src.stats.lines / 2, "{:?}", src.stats);
}

#[test]
fn overlong_lines_are_skipped_without_buffering_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = "Nov 22 13:24:13 mx postfix/smtpd[1]: ok\n";
    let mut data = String::new();
    data.push_str(good);
    // 100 KiB: over the 64 KiB limit, found whole in one buffer.
    data.push_str(&format!(
        "Nov 22 13:24:13 mx postfix/smtpd[1]: {}\n",
        "x".repeat(100 * 1024)
    ));
    data.push_str(good);
    // 3 MiB: longer than the buffer, spans many reads.
    data.push_str(&"y".repeat(3 * 1024 * 1024));
    data.push('\n');
    data.push_str(good);
    data.push_str("bad line after the long ones\n");
    data.push_str(good);
    // Over-long and unterminated at the end.
    data.push_str(&"z".repeat(200 * 1024));
    for (name, bytes) in [
        ("long.log", data.as_bytes().to_vec()),
        ("long.gz", gzip(data.as_bytes())),
    ] {
        let p = write(dir.path(), name, &bytes);
        let (src, got) = read_path(&p, &InputOptions::default());
        assert_eq!(got.len(), 4, "{name}");
        assert_eq!(src.stats.lines, 8, "{name}");
        assert_eq!(src.stats.skipped_long_lines, 3, "{name}");
        assert_eq!(src.stats.bad_lines, 1, "{name}");
        assert_eq!(
            error_lines(&src),
            [2, 4, 6, 8],
            "{name}: {:?}",
            src.stats.errors
        );
        // A limit just above or below a line's length.
        let opts = InputOptions {
            max_line_len: good.len() - 1,
            ..InputOptions::default()
        };
        let (src, _) = read_path(&p, &opts);
        assert_eq!(src.stats.good_lines, 4, "{name}: limit = line length");
        let opts = InputOptions {
            max_line_len: good.len() - 2,
            ..InputOptions::default()
        };
        let (src, _) = read_path(&p, &opts);
        assert_eq!(src.stats.good_lines, 0, "{name}: limit below line length");
    }
}

#[test]
fn crlf_and_missing_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let data = "Nov 22 13:24:13 mx postfix/smtpd[1]: one\r\n\r\nNov 22 13:24:14 mx postfix/smtpd[1]: two\r\nNov 22 13:24:15 mx postfix/smtpd[1]: three";
    for (name, bytes) in [
        ("crlf.log", data.as_bytes().to_vec()),
        ("crlf.zst", zstd(data.as_bytes())),
    ] {
        let p = write(dir.path(), name, &bytes);
        let mut msgs = Vec::new();
        let src = input::open(&SourcePath::File(p), &InputOptions::default())
            .for_each_line(|l| msgs.push((l.message.to_string(), l.raw.to_string())));
        assert_eq!(
            msgs.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            ["one", "two", "three"],
            "{name}"
        );
        assert!(msgs.iter().all(|m| !m.1.ends_with('\r')));
        assert_eq!((src.stats.lines, src.stats.bad_lines), (4, 0), "{name}");
    }
}

/// Lines of random lengths (CRLF or LF) read with the smallest buffer: every line comes out
/// exactly once, whole, in order, whatever the buffer boundaries.
#[test]
fn buffer_boundaries_never_split_or_lose_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 42;
    let mut rnd = |n: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    let mut data = Vec::new();
    let mut want = Vec::new();
    for i in 0..30_000 {
        let pad = "p".repeat(rnd(300) as usize);
        let line = format!("Nov 22 13:24:13 mx postfix/smtpd[{i}]: n{i} {pad}");
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(if rnd(2) == 0 { b"\n" } else { b"\r\n" });
        want.push(line);
    }
    let p = write(dir.path(), "rand.log", &data);
    let opts = InputOptions {
        max_line_len: 1024,
        buffer_size: 0, // the minimum: 2 × 1024 + 64 KiB
        ..InputOptions::default()
    };
    let (src, got) = read_path(&p, &opts);
    assert_eq!(src.stats.errors, []);
    assert_eq!(got, want);
}

#[test]
fn format_is_forced_or_detected_by_majority() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = std::fs::read(testdata("other.log")).unwrap();
    data.extend(std::fs::read(testdata("sendmail.log")).unwrap());
    data.extend(std::fs::read(testdata("postfix.log")).unwrap());
    let p = write(dir.path(), "mixed-programs.log", &data);
    let (src, got) = read_path(&p, &InputOptions::default());
    assert_eq!(src.format, Some(Format::Postfix));
    assert_eq!(
        got.len(),
        3 + 4 + 16,
        "other programs' lines are handed over too"
    );
    let opts = InputOptions {
        format: Some(Format::Sendmail),
        ..InputOptions::default()
    };
    let (src, _) = read_path(&p, &opts);
    assert_eq!(
        (src.format, src.format_forced),
        (Some(Format::Sendmail), true)
    );
    // A mail.log that starts with a few thousand lines of another program on the mail
    // facility (dovecot's logins) is still a Postfix log.
    let mut data: Vec<u8> = (0..3000)
        .flat_map(|i| {
            format!("Nov 22 10:00:00 mx dovecot: imap-login: Login: user=<u{i}>, rip=192.0.2.1\n")
                .into_bytes()
        })
        .collect();
    data.extend(std::fs::read(testdata("postfix.log")).unwrap());
    let p = write(dir.path(), "dovecot-first.log", &data);
    let (src, got) = read_path(&p, &InputOptions::default());
    assert_eq!((src.format, got.len()), (Some(Format::Postfix), 3000 + 16));
    // other.log alone: unknown unless forced.
    let (src, _) = read_path(&testdata("other.log"), &opts);
    assert_eq!(
        (src.format, src.stats.good_lines),
        (Some(Format::Sendmail), 3)
    );

    for (arg, want) in [
        ("postfix", Some(Format::Postfix)),
        ("Exim", Some(Format::Exim)),
        ("sendmail", Some(Format::Sendmail)),
        ("opensmtpd", Some(Format::Opensmtpd)),
        ("qmail", None),
    ] {
        assert_eq!(arg.parse::<Format>().ok(), want, "{arg}");
    }
    for (program, want) in [
        ("postfix/smtpd", Some(Format::Postfix)),
        ("postfix-out/smtp", Some(Format::Postfix)),
        ("postfix/submission/smtpd", Some(Format::Postfix)),
        ("exim4", Some(Format::Exim)),
        ("sm-mta", Some(Format::Sendmail)),
        ("sm-msp-queue", Some(Format::Sendmail)),
        ("smtpd", Some(Format::Opensmtpd)),
        ("kernel", None),
    ] {
        assert_eq!(Format::from_program(program), want, "{program}");
    }
}

#[test]
fn year_comes_from_mtime_or_is_forced() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "y.log",
        b"Dec 31 23:59:59 mx postfix/smtpd[1]: a\nJan  1 00:00:00 mx postfix/smtpd[1]: b\n",
    );
    // mtime 2027-01-01T12:00:00Z
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_798_804_800);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let mut times = Vec::new();
    input::read(
        &SourcePath::File(p.clone()),
        &InputOptions::default(),
        |_, l| times.push(l.time),
    );
    assert_eq!(times, [1_798_761_599, 1_798_761_600]); // 2026-12-31T23:59:59Z, 2027-01-01
    times.clear();
    let opts = InputOptions {
        year: Some(2020),
        ..InputOptions::default()
    };
    input::read(&SourcePath::File(p), &opts, |_, l| times.push(l.time));
    assert_eq!(times, [1_609_459_199, 1_609_459_200]); // 2020-12-31T23:59:59Z, 2021-01-01
}

/// With `--year`, a file read after another goes on from the other's last line: the
/// rotated file ends on Dec 31 and the current one starts on Jan 1 of the next year.
#[test]
fn forced_year_goes_on_across_files_read_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(
        dir.path(),
        "mail.log.1",
        b"Dec 31 23:59:59 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]\n",
    );
    let new = write(
        dir.path(),
        "mail.log",
        b"Jan  1 00:00:00 mx postfix/smtpd[2]: connect from a.example[192.0.2.1]\n",
    );
    let opts = InputOptions {
        year: Some(2026),
        ..InputOptions::default()
    };
    let first = input::open(&SourcePath::File(old), &opts).for_each_line(|_| {});
    assert_eq!(first.stats.last_time, Some(1_798_761_599)); // 2026-12-31T23:59:59Z
    let mut times = Vec::new();
    input::open_after(&SourcePath::File(new.clone()), &opts, first.stats.last_time)
        .for_each_line(|l: &Line<'_>| times.push(l.time));
    assert_eq!(times, [1_798_761_600]); // 2027-01-01T00:00:00Z, not 2026-01-01
    // Read on its own, the file starts in the year given.
    times.clear();
    input::open(&SourcePath::File(new), &opts).for_each_line(|l: &Line<'_>| times.push(l.time));
    assert_eq!(times, [1_767_225_600]); // 2026-01-01T00:00:00Z
}

/// The year goes on only within one log's rotated files: another directory's `mail.log` (a
/// second host's) starts again from the year given, whatever the first one ended with.
#[test]
fn forced_year_starts_again_for_another_log() {
    let dir = tempfile::tempdir().unwrap();
    for (host, line) in [
        (
            "hostA",
            "Dec 31 23:59:59 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]\n",
        ),
        (
            "hostB",
            "Jan  1 00:00:00 mx postfix/smtpd[2]: connect from a.example[192.0.2.1]\n",
        ),
    ] {
        std::fs::create_dir(dir.path().join(host)).unwrap();
        write(&dir.path().join(host), "mail.log", line.as_bytes());
    }
    let opts = InputOptions {
        year: Some(2024),
        ..InputOptions::default()
    };
    let a = dir.path().join("hostA/mail.log");
    let b = dir.path().join("hostB/mail.log");
    let analysis = sigillo_logs::analysis::analyze(
        &[&a, &b],
        &opts,
        sigillo_logs::aggregate::AggregateOptions::default(),
    );
    let firsts: Vec<Option<&str>> = analysis.inputs.iter().map(|i| i.first.as_deref()).collect();
    assert_eq!(
        firsts,
        [Some("2024-12-31T23:59:59Z"), Some("2024-01-01T00:00:00Z")]
    );
    // The same two lines as one log's rotated files: the year goes on.
    write(dir.path(), "mail.log.1", &std::fs::read(&a).unwrap());
    write(dir.path(), "mail.log", &std::fs::read(&b).unwrap());
    let analysis = sigillo_logs::analysis::analyze(
        &[dir.path().join("mail.log.1"), dir.path().join("mail.log")],
        &opts,
        sigillo_logs::aggregate::AggregateOptions::default(),
    );
    let firsts: Vec<Option<&str>> = analysis.inputs.iter().map(|i| i.first.as_deref()).collect();
    assert_eq!(
        firsts,
        [Some("2024-12-31T23:59:59Z"), Some("2025-01-01T00:00:00Z")]
    );
}

/// Every line a real Postfix wrote has an envelope, and the file is detected as Postfix.
#[test]
fn live_postfix_log_reads_clean() {
    require_tools!("postfix", "swaks");
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["mx.sigillo.test"]).expect("cert");
    let pf = Postfix::start(PostfixOptions::default().tls(&cert)).expect("start postfix");
    let to = format!("user@{}", pf.options().domain);
    for tls in [true, false] {
        let mut args = vec!["--local-interface", "127.0.0.2", "--to", &to];
        args.extend(["--from", "input-test@sender.test", "--timeout", "20"]);
        if tls {
            args.push("--tls");
        }
        swaks_ok(pf.addr(), &args).expect("swaks");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while pf.log().matches(": removed").count() < 2 {
        assert!(Instant::now() < deadline, "log:\n{}", pf.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = pf.log();
    let nonempty = text.lines().filter(|l| !l.is_empty()).count() as u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut programs = std::collections::BTreeSet::new();
    let src = input::read(
        &SourcePath::File(pf.log_path()),
        &InputOptions::default(),
        |f, l| {
            assert_eq!(f, Some(Format::Postfix));
            // Local time written without a zone, read as UTC: within a day of now.
            assert!((l.time - now).abs() < 86_400 + 600, "{l:?}");
            assert!(l.pid.is_some(), "{l:?}");
            programs.insert(l.program.to_string());
        },
    );
    assert_eq!(src.stats.errors, [], "log:\n{text}");
    assert_eq!(src.stats.good_lines, nonempty, "log:\n{text}");
    assert!(
        programs.iter().all(|p| p.starts_with("postfix")),
        "{programs:?}"
    );
    for want in ["postfix/smtpd", "postfix/qmgr", "postfix/cleanup"] {
        assert!(programs.contains(want), "{want} not in {programs:?}");
    }
}

/// The same for a real Exim's mainlog.
#[test]
fn live_exim_log_reads_clean() {
    require_tools!("exim4", "swaks");
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["exim.sigillo.test"]).expect("cert");
    let ex = Exim::start(EximOptions::default().tls(&cert)).expect("start exim");
    for tls in [true, false] {
        let mut args = vec![
            "--to",
            "user@sigillo.test",
            "--from",
            "input-test@sender.test",
        ];
        args.extend(["--timeout", "20"]);
        if tls {
            args.push("--tls");
        }
        swaks_ok(ex.addr(), &args).expect("swaks");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ex.log().matches(" Completed").count() < 2 {
        assert!(Instant::now() < deadline, "log:\n{}", ex.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = ex.log();
    let nonempty = text.lines().filter(|l| !l.is_empty()).count() as u64;
    let mut tls_lines = 0;
    let src = input::read(
        &SourcePath::File(ex.log_path()),
        &InputOptions::default(),
        |f, l| {
            assert_eq!(f, Some(Format::Exim));
            assert_eq!((l.program, l.host), ("exim", ""), "{l:?}");
            tls_lines += usize::from(l.message.contains(" <= ") && l.message.contains("P=esmtps"));
        },
    );
    assert_eq!(src.stats.errors, [], "log:\n{text}");
    assert_eq!(src.stats.good_lines, nonempty, "log:\n{text}");
    assert_eq!(tls_lines, 1, "log:\n{text}");
}

/// A decompressed chunk of whole lines becomes the reader's buffer as it is, and a line that
/// spans chunks is carried over: lines shorter and longer than a chunk (256 KiB) and than the
/// line limit, lines ending exactly where a chunk would, CRLF, binary and no final newline
/// must read from `.gz` and `.zst` exactly as from the plain file, stats and errors included.
#[test]
fn compressed_chunks_give_the_lines_the_plain_file_gives() {
    const CHUNK: usize = 256 * 1024;
    let line = |i: usize, len: usize| {
        let head = format!(
            "Nov 22 13:00:{:02} mx postfix/smtpd[{}]: x",
            i % 60,
            1000 + i
        );
        let mut l = head.into_bytes();
        l.resize(len.max(l.len()), b'a' + (i % 26) as u8);
        l
    };
    let mut data = Vec::new();
    let mut i = 0;
    // Ordinary lines up to just before the first chunk boundary, then one line that ends
    // exactly on it.
    while data.len() < CHUNK - 300 {
        data.extend_from_slice(&line(i, 90 + i % 50));
        data.push(b'\n');
        i += 1;
    }
    let fill = CHUNK - data.len() - 1;
    data.extend_from_slice(&line(i, fill));
    data.push(b'\n');
    i += 1;
    for len in [
        70_000,    // over the 64 KiB line limit
        CHUNK + 5, // longer than a chunk
        3 * CHUNK, // spans several chunks
        65_536,    // at the limit
        40,
    ] {
        for _ in 0..3 {
            data.extend_from_slice(&line(i, 120));
            data.push(b'\n');
            i += 1;
        }
        data.extend_from_slice(&line(i, len));
        data.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"\n" });
        i += 1;
    }
    data.extend_from_slice(b"Nov 22 13:00:00 mx postfix/smtpd[1]: \x00 binary\n");
    for _ in 0..5_000 {
        data.extend_from_slice(&line(i, 100 + i % 200));
        data.push(b'\n');
        i += 1;
    }
    data.extend_from_slice(&line(i, 80)); // no final newline
    let dir = tempfile::tempdir().unwrap();
    let opts = InputOptions::default();
    let (plain, want) = read_path(&write(dir.path(), "a.log", &data), &opts);
    assert!(want.len() > 5_000, "{} lines", want.len());
    assert!(plain.stats.skipped_long_lines >= 3, "{:?}", plain.stats);
    assert!(plain.stats.bad_lines >= 1, "{:?}", plain.stats);
    for (name, packed) in [("a.log.gz", gzip(&data)), ("a.log.zst", zstd(&data))] {
        let (src, got) = read_path(&write(dir.path(), name, &packed), &opts);
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(got == want, "{name}: lines differ");
        // Every count the same (the errors name their files, so they are compared by line).
        let counts = |s: &Source| InputStats {
            errors: Vec::new(),
            ..s.stats.clone()
        };
        assert_eq!(counts(&src), counts(&plain), "{name}");
        assert_eq!(error_lines(&src), error_lines(&plain), "{name}");
    }
}
