//! [P5] Bounded memory: applying a patch to a 1 GiB target holds no more heap
//! than applying one to a 16 MiB target (within 5 %), and every run stays
//! within the apply memory budget documented on `Limits` (52.5 MiB). Results of
//! 4 MiB and more are hashed on a second thread (1 MiB of chunks at most), so
//! a 1 MiB target, hashed inline, shows the applier's fixed buffers alone.
//!
//! The old file is a `Source` that generates zeros on the fly (nothing of it is
//! stored); the new file is the old one with a delta-changed byte near the
//! start, five literal bytes in the middle and a changed last byte; the patch is
//! written field by field (the codec tests' builder), not by `diff`, so that
//! building it is instant; the output goes into a sink that only counts bytes
//! (apply itself checks the result's SHA-256).
//!
//! Heap is measured by a counting global allocator (Rust allocations); zstd's
//! C allocations are not counted there, so the process peak RSS (`VmHWM`,
//! reset through `/proc/self/clear_refs` before each run) is reported and
//! checked against the budget too.
//!
//! A third run puts the second segment of a 64 MiB target in the plain layout,
//! its 32 Mi deltas coded with the delta model (codec 3) and a 2^20-byte
//! history window: the model's memory is fixed by the window and the stream's
//! declared length (tables of at most 4 MiB at full scale, reached here, plus
//! the history ring), so its heap must stay within the ring, 4 MiB and the
//! applier's fixed buffers, whatever the stream's length.
//!
//! A fourth run applies a patch whose 4 MiB literal stream is coded with LZMA
//! (codec 4) under a 2^22-byte dictionary: its heap must hold the dictionary
//! (so the run cannot pass without LZMA) and no more than the dictionary, the
//! rest of the decoder (tables and input buffer, 256 KiB allowed) and the
//! applier's fixed buffers.
//!
//! `harness = false`: one process, the runs one after the other.

#[path = "codec/builder.rs"]
#[allow(dead_code)]
mod builder;
#[path = "../fuzz/src/heap.rs"]
mod heap;

use std::io::{self, Write};
use std::time::Instant;

use builder::{
    varint, zigzag, Codec, Header, Patch, SegmentData, Stream, CONTROL, DELTA_BYTES, DELTA_LENS,
    LITERALS, ZERO_RUNS,
};
use deltaswap::{PatchReader, Source};
use sha2::{Digest, Sha256};

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

/// The apply memory budget documented on `deltaswap::Limits` (defaults).
const BUDGET: usize = 52 << 20;

/// An old file of `len` zeros that exists only as a length.
struct Zeros(u64);

impl Source for Zeros {
    fn len(&self) -> u64 {
        self.0
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        assert!(
            end.is_some_and(|e| e <= self.0),
            "read outside the old file"
        );
        buf.fill(0);
        Ok(())
    }
}

/// Counts what it is given.
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const LIT: &[u8] = b"HELLO";

/// The new file for an old file of `len` zeros: byte 4096 is 1, five literal
/// bytes are inserted at `len / 2`, the last byte is 7. Returns its SHA-256,
/// computed in 1 MiB pieces.
fn new_sha256(len: u64) -> [u8; 32] {
    let mid = len / 2;
    let mut h = Sha256::new();
    let chunk = vec![0u8; 1 << 20];
    let feed = |from: u64, to: u64, h: &mut Sha256| {
        let mut p = from;
        while p < to {
            let n = (to - p).min(chunk.len() as u64) as usize;
            h.update(&chunk[..n]);
            p += n as u64;
        }
    };
    feed(0, 4096, &mut h);
    h.update([1u8]);
    feed(4097, mid, &mut h);
    h.update(LIT);
    feed(mid, len - 1, &mut h);
    h.update([7u8]);
    h.finalize().into()
}

fn old_sha256(len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let chunk = vec![0u8; 1 << 20];
    let mut p = 0;
    while p < len {
        let n = (len - p).min(chunk.len() as u64) as usize;
        h.update(&chunk[..n]);
        p += n as u64;
    }
    h.finalize().into()
}

/// Two segments: `copy mid, literal 5` then `copy len - mid`, all streams zstd;
/// with `plain`, the second segment's deltas in plain layout, coded with the
/// delta model over the old bytes under the copy (all zeros).
fn patch_for(len: u64, plain: bool) -> Vec<u8> {
    let mid = len / 2;
    let mut s1 = SegmentData {
        seg_len: mid + LIT.len() as u64,
        ..Default::default()
    };
    for v in [mid, LIT.len() as u64, zigzag(0)] {
        s1.streams[CONTROL].extend(varint(v));
    }
    for (z, d) in [(4096, 1), (mid - 4097, 0)] {
        s1.streams[ZERO_RUNS].extend(varint(z));
        s1.streams[DELTA_LENS].extend(varint(d));
    }
    s1.streams[DELTA_BYTES] = vec![1];
    s1.streams[LITERALS] = LIT.to_vec();
    let mut s2 = SegmentData {
        seg_len: len - mid,
        ..Default::default()
    };
    for v in [len - mid, 0, zigzag(0)] {
        s2.streams[CONTROL].extend(varint(v));
    }
    s2.streams[ZERO_RUNS].extend(varint(len - mid - 1));
    s2.streams[DELTA_LENS].extend(varint(1));
    s2.streams[DELTA_BYTES] = vec![7];
    let header = Header {
        magic: b"DSWP".to_vec(),
        version: 1,
        flags: 0,
        transform: 0,
        reserved: 0,
        old_len: varint(len),
        new_len: varint(len + LIT.len() as u64),
        old_sha256: old_sha256(len),
        new_sha256: new_sha256(len),
        map: Vec::new(),
    };
    let mut second = s2.encode([Codec::Zstd; 5]);
    if plain {
        let mut deltas = vec![0u8; (len - mid) as usize];
        if let Some(last) = deltas.last_mut() {
            *last = 7;
        }
        second.streams[ZERO_RUNS] = Stream::absent();
        second.streams[DELTA_LENS] = Stream::absent();
        let olds = vec![0u8; deltas.len()];
        second.streams[DELTA_BYTES] = Stream::model(&olds, &deltas, PLAIN_WINDOW_LOG);
    }
    Patch {
        header,
        segments: vec![s1.encode([Codec::Zstd; 5]), second],
        trailer: Vec::new(),
    }
    .bytes()
}

/// Peak resident set size of this process in bytes (`VmHWM`).
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn current_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Measured {
    heap_peak: usize,
    rss_growth: Option<u64>,
    secs: f64,
}

/// log2 of the model's history window in the plain-layout run. The stream
/// (32 Mi deltas) is longer than the window, so the ring is 2^20 bytes.
const PLAIN_WINDOW_LOG: u8 = 20;

/// The delta model's tables at full scale (streams of 2^20 deltas or more),
/// whatever the window: at most 4 MiB (docs/MODEL.md: 3.85 MiB).
const MODEL_TABLES: usize = 4 << 20;

fn measure(len: u64, plain: bool) -> Measured {
    let patch = patch_for(len, plain);
    apply_measured(&patch, &Zeros(len), len + LIT.len() as u64, new_sha256(len))
}

/// Applies `patch` to `old` into a counting sink, checks the result's length
/// and SHA-256, and measures the peak heap, the peak RSS growth and the time.
fn apply_measured(patch: &[u8], old: &Zeros, new_len: u64, new_sha: [u8; 32]) -> Measured {
    let rss_before = current_rss();
    let rss_ok = reset_peak_rss();
    let t = Instant::now();
    let (res, heap_peak) = heap::peak_during(|| {
        let mut sink = CountingSink(0);
        let v = PatchReader::new(patch).and_then(|r| r.apply_to(old, &mut sink));
        (v, sink.0)
    });
    let secs = t.elapsed().as_secs_f64();
    let (verified, written) = res;
    let verified = verified.expect("the patch applies");
    assert_eq!(written, new_len);
    assert_eq!(verified.len(), written);
    assert_eq!(verified.sha256().as_bytes(), &new_sha);
    let rss_growth = match (rss_ok, rss_before, peak_rss()) {
        (true, Some(b), Some(p)) => Some(p.saturating_sub(b)),
        _ => None,
    };
    Measured {
        heap_peak,
        rss_growth,
        secs,
    }
}

/// log2 of the LZMA dictionary in the LZMA run; its literal stream is as
/// long, so the decoder allocates all of it.
const LZMA_DICT_LOG: u8 = 22;

/// Applies `zeros(2 MiB) + literals(4 MiB) + zeros(2 MiB)` to 4 MiB of zeros,
/// the literals in LZMA; returns the measurement.
fn measure_lzma() -> Measured {
    let half = 2u64 << 20;
    let lits: Vec<u8> = (0..1usize << LZMA_DICT_LOG)
        .map(|i| {
            ((i % 65_521) as u32)
                .wrapping_mul(2_654_435_761)
                .to_le_bytes()[i % 4]
        })
        .collect();
    let mut seg = SegmentData {
        seg_len: 2 * half + lits.len() as u64,
        ..Default::default()
    };
    for v in [half, lits.len() as u64, zigzag(0), half, 0, zigzag(0)] {
        seg.streams[CONTROL].extend(varint(v));
    }
    seg.streams[ZERO_RUNS].extend(varint(2 * half));
    seg.streams[DELTA_LENS].extend(varint(0));
    let mut new = vec![0u8; half as usize];
    new.extend(&lits);
    new.extend(vec![0u8; half as usize]);
    let mut encoded = seg.encode([Codec::Zstd; 5]);
    encoded.streams[LITERALS] = Stream::lzma(&lits, (1, 2, 2), LZMA_DICT_LOG);
    let header = Header {
        magic: b"DSWP".to_vec(),
        version: 1,
        flags: 0,
        transform: 0,
        reserved: 0,
        old_len: varint(2 * half),
        new_len: varint(new.len() as u64),
        old_sha256: old_sha256(2 * half),
        new_sha256: Sha256::digest(&new).into(),
        map: Vec::new(),
    };
    let patch = Patch {
        header,
        segments: vec![encoded],
        trailer: Vec::new(),
    }
    .bytes();
    let new_sha = Sha256::digest(&new).into();
    apply_measured(&patch, &Zeros(2 * half), new.len() as u64, new_sha)
}

fn main() {
    // libtest arguments (--list, filters) are accepted and ignored; `--list`
    // must print nothing for `cargo test -- --list` to work.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let small = measure(1 << 20, false);
    let mid = measure(16 << 20, false);
    let large = measure(1 << 30, false);
    let plain = measure(64 << 20, true);
    let lzma = measure_lzma();
    for (name, m) in [
        ("1 MiB", &small),
        ("16 MiB", &mid),
        ("1 GiB", &large),
        ("64 MiB, plain model", &plain),
        ("8 MiB, LZMA literals", &lzma),
    ] {
        println!(
            "bounded_memory: {name} target: peak heap {} bytes ({:.2} MiB), peak RSS growth {}, {:.2} s",
            m.heap_peak,
            m.heap_peak as f64 / (1 << 20) as f64,
            m.rss_growth
                .map(|r| format!("{r} bytes ({:.2} MiB)", r as f64 / (1 << 20) as f64))
                .unwrap_or_else(|| "not measured".into()),
            m.secs
        );
    }
    assert!(
        large.heap_peak <= BUDGET,
        "1 GiB apply held {} heap bytes",
        large.heap_peak
    );
    assert!(small.heap_peak <= BUDGET);
    let ratio = large.heap_peak as f64 / mid.heap_peak as f64;
    println!("bounded_memory: heap peak ratio 1 GiB / 16 MiB = {ratio:.4}");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "the 1 GiB peak ({}) is not within 5 % of the 16 MiB peak ({})",
        large.heap_peak,
        mid.heap_peak
    );
    // The hashing thread's chunks: at most 1 MiB (and a little for the
    // thread and its channels) over the inline run.
    assert!(
        mid.heap_peak <= small.heap_peak + (1 << 20) + (64 << 10),
        "hashing on a second thread held {} bytes more",
        mid.heap_peak - small.heap_peak
    );
    if let Some(r) = large.rss_growth {
        assert!(r <= BUDGET as u64, "1 GiB apply grew RSS by {r} bytes");
    }
    // The plain run holds the applier's fixed buffers (copy buffer, a
    // segment's decoded streams, the literal reader: what the zstd runs hold,
    // 0.31 MiB measured), the hashing thread's chunks (1 MiB) and the model:
    // its ring and tables. Measured 2026-11-30: 6.11 MiB = 1 MiB ring + 3.85
    // MiB tables + 1 MiB of hashing chunks + 0.25 MiB copy buffer. The fixed
    // buffers stay under 512 KiB, so the limit is at most ring + 4 MiB +
    // 1.5 MiB.
    assert!(
        small.heap_peak <= 512 << 10,
        "the applier's fixed buffers grew to {} bytes",
        small.heap_peak
    );
    let ring = 1usize << PLAIN_WINDOW_LOG;
    let plain_limit = ring + MODEL_TABLES + mid.heap_peak;
    assert!(
        plain.heap_peak <= plain_limit,
        "plain model apply held {} heap bytes (limit {plain_limit})",
        plain.heap_peak
    );
    // And the model was really used: its ring and tables were allocated.
    assert!(
        plain.heap_peak > mid.heap_peak + ring + (2 << 20),
        "plain model apply held only {} heap bytes",
        plain.heap_peak
    );
    // The LZMA run: the dictionary, the rest of its decoder (tables, input
    // buffer), and what the zstd runs hold (the fixed buffers and the
    // hashing chunks). Measured 2026-11-30: 16 KiB over dictionary + the 16
    // MiB run's peak (the decoder's tables and buffer, less the 64 KiB
    // literal read buffer the zstd runs hold); allowed 256 KiB.
    let dict = 1usize << LZMA_DICT_LOG;
    let lzma_limit = dict + (256 << 10) + mid.heap_peak;
    assert!(
        lzma.heap_peak <= lzma_limit,
        "LZMA apply held {} heap bytes (limit {lzma_limit})",
        lzma.heap_peak
    );
    assert!(
        lzma.heap_peak >= dict,
        "LZMA apply held only {} heap bytes",
        lzma.heap_peak
    );
    println!("bounded_memory: ok");
}
