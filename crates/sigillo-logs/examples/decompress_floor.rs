//! The floor under `sigillo report` on a compressed log: the decoders `report` uses (flate2
//! with zlib-rs for `.gz`, zstd for `.zst`), reading through the same 256 KiB `BufReader` into
//! 256 KiB chunks, counting newlines and doing nothing else. `bench/report.sh` times it next
//! to `sigillo report` on the same file, so "limited only by decompression" is a measured
//! comparison with sigillo's own decompression, not only with other tools'.
//!
//! ```text
//! decompress_floor FILE.gz|FILE.zst   # prints the line count
//! ```

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, Read};
use std::process::ExitCode;

const CHUNK: usize = 256 * 1024;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: decompress_floor FILE.gz|FILE.zst");
        return ExitCode::from(2);
    };
    match count_lines(&path) {
        Ok(lines) => {
            println!("{lines}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("decompress_floor: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn count_lines(path: &str) -> std::io::Result<u64> {
    let raw = BufReader::with_capacity(CHUNK, File::open(path)?);
    let mut reader: Box<dyn Read> = if path.ends_with(".zst") {
        Box::new(zstd::Decoder::with_buffer(raw)?)
    } else {
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    };
    let mut buf = vec![0u8; CHUNK];
    let mut lines = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', buf.get(..n).unwrap_or_default()).count() as u64;
    }
}
