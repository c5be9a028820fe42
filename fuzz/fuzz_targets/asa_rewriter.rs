//! The ASA imitation (`AsaRewriter`) on arbitrary byte streams, cut into arbitrary reads in
//! both directions.
//!
//! Invariants: never panics; every rewrite keeps lengths (what comes out of a direction, with
//! what is still buffered, is exactly as long as what went in); with masking and stripping
//! both off it changes no byte at all; how a direction's bytes are cut into reads changes
//! nothing: the same conversation with each run of reads one way fed as one read gives the
//! same bytes out, the same replies owed, stats and body state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigillo_smtp::asa::{AsaConfig, AsaRewriter};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let config = AsaConfig {
        mask_banner: mode & 1 != 0,
        strip_starttls: mode & 2 != 0,
        // Bit 3: a limit of a few bytes, shorter than a reply code and its space.
        max_line: match (mode & 8 != 0, mode & 4 != 0) {
            (true, _) => 3,
            (false, true) => 16,
            (false, false) => 8 * 1024,
        },
    };
    let mut asa = AsaRewriter::new(config);
    // The same conversation, each run of reads in one direction fed as one read.
    let mut joined = AsaRewriter::new(config);
    let (mut joined_c2s, mut joined_s2c) = (Vec::new(), Vec::new());
    let mut run: (bool, Vec<u8>) = (false, Vec::new());
    let mut feed = |joined: &mut AsaRewriter, (to_client, bytes): &mut (bool, Vec<u8>)| {
        if *to_client {
            joined_s2c.extend(joined.server_to_client(bytes));
        } else {
            joined_c2s.extend(joined.client_to_server(bytes));
        }
        bytes.clear();
    };
    let (mut c2s_in, mut c2s_out, mut s2c_in, mut s2c_out) = (0usize, 0usize, 0usize, 0usize);
    let (mut c2s_all, mut s2c_all) = (Vec::new(), Vec::new());
    let (mut c2s_seen, mut s2c_seen) = (Vec::new(), Vec::new());
    // Segments: one header byte (top bit: direction, low bits: length), then that many bytes.
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 0x3f).min(tail.len());
        let (chunk, after) = tail.split_at(len);
        rest = after;
        let to_client = head & 0x80 != 0;
        if run.0 != to_client {
            feed(&mut joined, &mut run);
            run.0 = to_client;
        }
        run.1.extend_from_slice(chunk);
        if to_client {
            let out = asa.server_to_client(chunk);
            s2c_in += chunk.len();
            s2c_out += out.len();
            s2c_all.extend_from_slice(chunk);
            s2c_seen.extend_from_slice(&out);
        } else {
            let out = asa.client_to_server(chunk);
            c2s_in += chunk.len();
            c2s_out += out.len();
            c2s_all.extend_from_slice(chunk);
            c2s_seen.extend_from_slice(&out);
        }
    }
    feed(&mut joined, &mut run);
    joined_s2c.extend(joined.take_pending_server());
    joined_c2s.extend(joined.take_pending_client());
    let s2c_rest = asa.take_pending_server();
    let c2s_rest = asa.take_pending_client();
    s2c_seen.extend_from_slice(&s2c_rest);
    c2s_seen.extend_from_slice(&c2s_rest);
    assert_eq!(
        s2c_out + s2c_rest.len(),
        s2c_in,
        "server to client changed length"
    );
    assert_eq!(
        c2s_out + c2s_rest.len(),
        c2s_in,
        "client to server changed length"
    );
    assert_eq!(
        joined_s2c, s2c_seen,
        "server to client depends on the reads"
    );
    assert_eq!(
        joined_c2s, c2s_seen,
        "client to server depends on the reads"
    );
    assert_eq!(joined.replies_owed(), asa.replies_owed(), "replies owed");
    assert_eq!(joined.stats(), asa.stats(), "stats");
    assert_eq!(joined.in_body(), asa.in_body(), "body state");
    if !config.mask_banner && !config.strip_starttls {
        assert_eq!(s2c_seen, s2c_all);
        assert_eq!(c2s_seen, c2s_all);
    }
});
