//! What every fuzz target checks, as plain functions over bytes.
//!
//! Shared through `#[path]` by the fuzz crate (`fuzz/src/lib.rs`) and by the main
//! crate's `tests/fuzz_regressions.rs`, which replays every saved crash input
//! through the same function the fuzzer ran. Both roots declare `naive` (the
//! oracle applier of `tests/codec/naive.rs`) and `heap` (the counting allocator
//! of `fuzz/src/heap.rs`) next to this module.
//!
//! A violated property panics, which libFuzzer reports as a crash.

use std::cell::Cell;
use std::io::{self, Read};

use deltaswap::{Error, Limits, PatchReader, Sha256Digest, Source};

use crate::heap::peak_during;
use crate::naive;

/// Largest new file the fuzz targets accept.
pub const MAX_OUTPUT: u64 = 1 << 20;
/// Decoded control/delta bytes (plus stored compressed ones) per segment.
pub const MAX_SEGMENT_BUFFER: u64 = 1 << 20;
/// Largest zstd window for the literal stream, and largest delta model
/// window: 2^20.
pub const MAX_WINDOW_LOG: u32 = 20;
/// Deltas a patch may code with the delta model: a quarter of the largest
/// output, so that patches over the budget are within the fuzzer's reach.
pub const MAX_MODEL_LEN: u64 = MAX_OUTPUT / 4;

/// Heap bytes the delta model (codec 3 or 5) may hold while it decodes a plain
/// segment's deltas under [`limits`]: its tables and mixer weights (3.85 MiB
/// at full scale, docs/MODEL.md), rounded up to 4 MiB, and its history ring,
/// at most 2^`MAX_WINDOW_LOG` bytes. Neither is counted in
/// `MAX_SEGMENT_BUFFER`, which holds only the model's stored bytes.
pub const MODEL_HEAP: usize = (4 << 20) + (1 << MAX_WINDOW_LOG);

/// Heap bytes the reference map of transforms 2 and 4 may hold (docs/FORMAT.md):
/// its stored and decoded bytes while it is read (at most 1 MiB each), its
/// breaks (at most 2^19, 16 bytes each: 8 MiB), its index (at most 2^16 + 2
/// entries of 4 bytes), and 1 MiB for zstd's decompression context and
/// slack. It is read with the header and kept for the whole apply.
pub const MAP_HEAP: usize = (2 << 20) + (8 << 20) + (257 << 10) + (1 << 20);

/// Heap bytes an LZMA literal stream (codec 4) may hold while it is decoded
/// under [`limits`]: its dictionary (at most 2^`MAX_WINDOW_LOG` bytes, and
/// never more than the stream's length) and the rest of the decoder (its
/// probability tables, at most 24 KiB with `lc + lp <= 4`, and its input
/// buffer: about 80 KiB in all by `tests/bounded_memory.rs`), allowed
/// 256 KiB.
pub const LZMA_HEAP: usize = (1 << MAX_WINDOW_LOG) + (256 << 10);

/// Heap bytes (Rust allocations) apply may hold at once under [`limits`]: the
/// output vector (at most `MAX_OUTPUT`), one segment's buffered streams with
/// their compressed copies (`MAX_SEGMENT_BUFFER`), the delta model of a plain
/// segment ([`MODEL_HEAP`]), an LZMA literal stream's decoder
/// ([`LZMA_HEAP`]), the reference map ([`MAP_HEAP`]), the 256 KiB
/// copy buffer and the window around it, a 256 KiB hashing buffer, the 64 KiB
/// literal read buffer, and 1 MiB of slack. Going over it is a finding:
/// something was sized by an unchecked field.
pub const APPLY_HEAP_BUDGET: usize =
    (MAX_OUTPUT + MAX_SEGMENT_BUFFER) as usize + MODEL_HEAP + LZMA_HEAP + MAP_HEAP + (2 << 20);

/// Heap bytes `inspect` and the header parser may hold: 256 KiB, and the
/// reference map that follows the header ([`MAP_HEAP`]).
pub const INSPECT_HEAP_BUDGET: usize = (256 << 10) + MAP_HEAP;

/// The small limits the fuzz targets apply with, so that a memory or CPU bomb
/// inside them is cut short and one outside them is a finding.
pub fn limits() -> Limits {
    Limits::default()
        .max_output_len(MAX_OUTPUT)
        .max_segment_buffer(MAX_SEGMENT_BUFFER)
        .max_window_log(MAX_WINDOW_LOG)
        .max_model_len(MAX_MODEL_LEN)
}

/// The fixed old file of `apply_fixed_old`: 4 KiB, half pseudo-random, half
/// repetitive text, so that both copies and literals are plausible.
pub fn fixed_old() -> Vec<u8> {
    let mut out = splitmix_bytes(0x00dd_5eed, 2048);
    let text = b"deltaswap fixed old file: the quick brown fox jumps over the lazy dog. ";
    while out.len() < 4096 {
        let n = text.len().min(4096 - out.len());
        out.extend_from_slice(&text[..n]);
    }
    out
}

/// Deterministic pseudo-random bytes (splitmix64).
pub fn splitmix_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An old file offering only `read_at`; panics if apply reads outside it.
pub struct ReadAtOnly<'a>(pub &'a [u8]);

impl Source for ReadAtOnly<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .expect("read_at offset overflows");
        assert!(
            end <= self.0.len() as u64,
            "apply read old[{offset}..{end}] outside an old file of {} bytes",
            self.0.len()
        );
        buf.copy_from_slice(&self.0[offset as usize..end as usize]);
        Ok(())
    }
}

/// A patch reader handing out 1 to 7 bytes per call, with an `Interrupted`
/// error every 11th call.
pub struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    calls: Cell<usize>,
}

impl<'a> Trickle<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Trickle {
            data,
            pos: 0,
            calls: Cell::new(0),
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let c = self.calls.get() + 1;
        self.calls.set(c);
        if c % 11 == 0 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "again"));
        }
        let n = (c % 7 + 1).min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Errors that may come out of parsing or applying untrusted bytes. `Bug`, I/O
/// errors (all readers and writers here are in memory) and file errors are findings.
fn assert_rejection(e: &Error, ctx: &str) {
    assert!(
        e.is_rejected_input(),
        "{ctx}: an error that is not a rejection of the input: {e:?}"
    );
    if let Error::LimitExceeded { actual, limit, .. } = e {
        assert!(
            actual > limit,
            "{ctx}: LimitExceeded under its limit: {e:?}"
        );
    }
}

fn same_error(a: &Error, b: &Error) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b) && a.format_kind() == b.format_kind()
}

/// A failure of the zstd decoder on a segment's literal stream. Where the
/// decoder notices a corrupt frame depends on how many patch bytes each read
/// hands it, so the same patch can be refused as `StreamUnderrun` read from a
/// slice and as `BadCompression`, or an error found later in the segment, read
/// a few bytes at a time (open finding F1 in docs/SECURITY.md; reproducers in
/// tests/fixtures/fuzz-regressions/open/). Both are refusals; only the kind
/// differs. Tolerated unless `DELTASWAP_FUZZ_STRICT` is set, so that fuzzing
/// goes on past it.
fn literal_decoder_failure(e: &Error) -> bool {
    matches!(e, Error::Format(f) if f.what() == "literal stream"
        && matches!(f.kind(), deltaswap::FormatErrorKind::StreamUnderrun
            | deltaswap::FormatErrorKind::BadCompression))
}

thread_local! {
    /// Set by the replay of open findings: no tolerance for known issues.
    pub static STRICT: Cell<bool> = const { Cell::new(false) };
}

fn errors_agree(a: &Error, b: &Error) -> bool {
    if same_error(a, b) {
        return true;
    }
    let strict = STRICT.with(Cell::get) || std::env::var_os("DELTASWAP_FUZZ_STRICT").is_some();
    !strict && (literal_decoder_failure(a) || literal_decoder_failure(b))
}

/// `patch_header`: the header parser and `inspect` on arbitrary bytes.
pub fn check_header(data: &[u8]) {
    let (r, peak) = peak_during(|| PatchReader::new(data).map(|r| r.header().clone()));
    assert!(
        peak <= INSPECT_HEAP_BUDGET,
        "header parse held {peak} heap bytes"
    );
    let small = PatchReader::with_limits(data, limits()).map(|r| r.header().clone());
    let naive_header = naive::header(data);
    match &r {
        Ok(h) => {
            let n = naive_header.expect("the oracle refuses a header the crate accepts");
            assert_eq!(h.old_len(), n.old_len);
            assert_eq!(h.new_len(), n.new_len);
            assert_eq!(h.old_sha256(), Sha256Digest(n.old_sha256));
            assert_eq!(h.new_sha256(), Sha256Digest(n.new_sha256));
            match &small {
                Ok(s) => assert_eq!(s, h),
                Err(Error::LimitExceeded { actual, .. }) => {
                    assert!(h.new_len() > MAX_OUTPUT);
                    assert_eq!(*actual, h.new_len());
                }
                Err(e) => panic!("small limits give {e:?} for a header accepted by default"),
            }
        }
        Err(e) => {
            assert_rejection(e, "header");
            if !matches!(e, Error::LimitExceeded { .. }) {
                assert!(
                    naive_header.is_err(),
                    "the oracle accepts a header the crate refuses: {e:?}"
                );
            }
            assert!(small.is_err());
        }
    }
    let (info, peak) = peak_during(|| deltaswap::inspect(data));
    assert!(
        peak <= INSPECT_HEAP_BUDGET,
        "inspect held {peak} heap bytes"
    );
    let streamed = deltaswap::inspect(Trickle::new(data));
    match (&info, &streamed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(a.patch_len(), data.len() as u64);
            assert_eq!(Some(a.header()), r.as_ref().ok());
            assert!(a.segments() <= a.header().new_len());
            let stored: u64 = a.streams().iter().map(|s| s.2).sum();
            assert!(stored < data.len() as u64);
        }
        (Err(a), Err(b)) => {
            assert_rejection(a, "inspect");
            assert!(same_error(a, b), "inspect on a slice {a:?}, trickled {b:?}");
        }
        _ => panic!("inspect on a slice and trickled disagree: {info:?} / {streamed:?}"),
    }
}

/// `apply_fixed_old` / `apply_any_old`: a patch against an old file. The
/// streaming applier, the slice applier and the oracle must agree; apply never
/// reads outside `old`, never holds more than [`APPLY_HEAP_BUDGET`] heap bytes,
/// and only returns bytes whose SHA-256 the patch declared.
pub fn check_apply(old: &[u8], patch: &[u8]) {
    let _ = apply_checked(old, patch);
}

/// Run before the first input by the targets whose checks hash a result on
/// a second thread. The first time a thread waits on a standard channel
/// (the piped hasher's, when one side is ahead), the standard library
/// registers a destructor for that thread's channel state, an allocation
/// that lives until the thread exits. Made during an input on the fuzzing
/// thread, LeakSanitizer reports it as that input's leak (`.ci/run`'s 30 s
/// of `apply_any_old`, 2026-11-30: 32 bytes from `__cxa_thread_atexit_impl`);
/// made here, before fuzzing, it is not an input's. Both a waiting receiver
/// and a waiting sender are made on this thread.
pub fn warm_up_threads() {
    use std::sync::mpsc::sync_channel;
    use std::time::Duration;
    let pause = Duration::from_millis(20);
    let (tx, rx) = sync_channel::<u8>(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(pause);
            let _ = tx.send(1);
        });
        let _ = rx.recv();
    });
    let (tx, rx) = sync_channel::<u8>(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(pause);
            let _ = rx.recv();
        });
        let _ = tx.send(1);
    });
}

/// [`check_apply`], returning what the slice applier gave under [`limits`].
pub fn apply_checked(old: &[u8], patch: &[u8]) -> Result<Vec<u8>, Error> {
    let (res, peak) = peak_during(|| deltaswap::apply_with_limits(old, patch, limits()));
    assert!(
        peak <= APPLY_HEAP_BUDGET,
        "apply held {peak} heap bytes (budget {APPLY_HEAP_BUDGET})"
    );
    // The streaming applier hashes the result on a second thread, as it
    // does for results of 4 MiB and more; the slice applier above hashes
    // inline. Both must give the same result or the same error.
    let mut streamed_out = Vec::new();
    let streamed = deltaswap::fuzzing::always_piped(|| {
        PatchReader::with_limits(Trickle::new(patch), limits())
            .and_then(|r| r.apply_to(&ReadAtOnly(old), &mut streamed_out))
    });
    match (&res, &streamed) {
        (Ok(out), Ok(v)) => {
            assert_eq!(&streamed_out, out, "streaming and slice outputs differ");
            assert_eq!(v.len(), out.len() as u64);
            assert_eq!(v.sha256(), Sha256Digest::of(out));
            assert!(out.len() as u64 <= MAX_OUTPUT);
            let h = PatchReader::new(patch).expect("header of an applied patch");
            assert_eq!(h.header().new_sha256(), Sha256Digest::of(out));
            assert_eq!(h.header().old_sha256(), Sha256Digest::of(old));
            let info = deltaswap::inspect(patch).expect("inspect refuses an applied patch");
            assert_eq!(info.patch_len(), patch.len() as u64);
        }
        (Err(a), Err(b)) => {
            assert_rejection(a, "apply");
            assert!(errors_agree(a, b), "slice apply {a:?}, streamed {b:?}");
        }
        _ => panic!("slice and streaming apply disagree: {res:?} / {streamed:?}"),
    }
    // The oracle. Skipped past a limit: it applies the default limits, and with
    // the small ones out of the way the inputs it would decode are unbounded.
    if matches!(res, Err(Error::LimitExceeded { .. })) {
        return res;
    }
    let oracle = naive::apply(old, patch);
    match (&res, &oracle) {
        (Ok(a), Ok(b)) => assert!(a == b, "the oracle's output differs"),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("the crate accepts a patch the oracle refuses: {e}"),
        (Err(e), Ok(b)) => {
            // The crate refused under the fuzzing limits (for example a literal
            // frame with a window over 2^20): with the defaults it must agree.
            match deltaswap::apply(old, patch) {
                Ok(a) => assert!(&a == b, "the oracle's output differs (default limits)"),
                Err(d) => panic!(
                    "the oracle accepts a patch the crate refuses: {e:?} / default limits {d:?}"
                ),
            }
        }
    }
    res
}

/// `apply_any_old`: the first two bytes give the old file's length (little
/// endian; the top bit asks to rewrite the patch header's old length and
/// SHA-256 to match the old file, so mutations of the old file still reach the
/// body), then the old file, then the patch.
pub fn check_any_old(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = u16::from_le_bytes(*len);
    let fix = n & 0x8000 != 0;
    let n = usize::from(n & 0x7fff).min(rest.len());
    let (old, patch) = rest.split_at(n);
    if fix {
        let fixed = fix_old_fields(patch, old);
        check_apply(old, &fixed);
    } else {
        check_apply(old, patch);
    }
}

/// Rewrites the old length and old SHA-256 of a patch header to those of `old`,
/// when the header parses as far as them.
pub fn fix_old_fields(patch: &[u8], old: &[u8]) -> Vec<u8> {
    fn varint_end(p: &[u8], at: usize) -> Option<usize> {
        (0..10)
            .map(|i| at + i)
            .find(|&i| p.get(i).is_some_and(|b| b & 0x80 == 0))
            .map(|i| i + 1)
    }
    let Some(old_len_end) = varint_end(patch, 8) else {
        return patch.to_vec();
    };
    let Some(new_len_end) = varint_end(patch, old_len_end) else {
        return patch.to_vec();
    };
    if patch.len() < new_len_end + 32 {
        return patch.to_vec();
    }
    let mut out = patch[..8].to_vec();
    let mut v = old.len() as u64;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&patch[old_len_end..new_len_end]);
    out.extend_from_slice(Sha256Digest::of(old).as_bytes());
    out.extend_from_slice(&patch[new_len_end + 32..]);
    out
}

/// `roundtrip`: the first byte chooses how to read the rest. Bit 0 clear: old
/// and new are the two halves around a split point given by the next two
/// bytes. Bit 0 set: old is the next `len` bytes and new is old edited by the
/// rest, read as 4-byte edits (position, kind, value). Bits 1-2 pick the
/// level (1, 3, 19 or 20: the default, and the delta model's lowest). Bit 3 puts the first 20 bytes of an AArch64 ELF
/// header before both files, so that the writer tries transform 8's sites.
/// `diff` must succeed and every applier must rebuild new.
pub fn check_roundtrip(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (old, new): (Vec<u8>, Vec<u8>) = if mode & 1 == 0 {
        (rest[..n].to_vec(), rest[n..].to_vec())
    } else {
        let old = rest[..n].to_vec();
        (old.clone(), edit(&old, &rest[n..]))
    };
    let (old, new) = if mode & 8 != 0 {
        let mut head = b"\x7fELF\x02\x01\x01".to_vec();
        head.resize(18, 0);
        head.extend_from_slice(&183u16.to_le_bytes());
        ([&head[..], &old].concat(), [&head[..], &new].concat())
    } else {
        (old, new)
    };
    let level = [1, 3, 19, 20][usize::from((mode >> 1) & 3)];
    let patch = deltaswap::DiffOptions::new()
        .level(level)
        // The global rayon pool: `threads(n)` builds a pool per call, whose
        // exiting workers LeakSanitizer reports (see docs/SECURITY.md).
        .threads(0)
        .diff(&old, &new)
        .expect("diff failed");
    let out = deltaswap::apply(&old, &patch).expect("apply refuses a patch diff wrote");
    assert!(out == new, "round trip does not reproduce the new file");
    let n = naive::apply(&old, &patch).expect("the oracle refuses a patch diff wrote");
    assert!(n == new, "the oracle does not reproduce the new file");
    // Hashing the result on a second thread, as large results are.
    let mut streamed = Vec::new();
    let v = deltaswap::fuzzing::always_piped(|| {
        PatchReader::new(Trickle::new(&patch))
            .and_then(|r| r.apply_to(&ReadAtOnly(&old), &mut streamed))
    })
    .expect("streaming apply refuses a patch diff wrote");
    assert_eq!(v.sha256(), Sha256Digest::of(&new));
    assert!(streamed == new);
    let info = deltaswap::inspect(&patch[..]).expect("inspect refuses a patch diff wrote");
    assert_eq!(info.patch_len(), patch.len() as u64);
}

/// Applies 4-byte edits `(pos lo, pos hi, kind, value)` to a copy of `old`.
fn edit(old: &[u8], script: &[u8]) -> Vec<u8> {
    let mut v = old.to_vec();
    for e in script.chunks_exact(4) {
        let pos = usize::from(u16::from_le_bytes([e[0], e[1]]));
        let pos = if v.is_empty() { 0 } else { pos % (v.len() + 1) };
        let (kind, val) = (e[2], e[3]);
        match kind % 5 {
            0 => {
                if let Some(b) = v.get_mut(pos) {
                    *b = val;
                }
            }
            1 => v.insert(pos, val),
            2 => {
                let end = (pos + usize::from(val)).min(v.len());
                v.drain(pos..end);
            }
            3 => {
                // Insert a run of `val` copies of the byte before pos.
                let b = pos
                    .checked_sub(1)
                    .and_then(|i| v.get(i))
                    .copied()
                    .unwrap_or(val);
                v.splice(pos..pos, std::iter::repeat_n(b, usize::from(val)));
            }
            _ => {
                // Move a block: duplicate 64 bytes from an earlier position.
                let from = usize::from(val) * 16 % (v.len() + 1);
                let end = (from + 64).min(v.len());
                let block: Vec<u8> = v[from..end].to_vec();
                v.splice(pos..pos, block);
            }
        }
        if v.len() > 256 << 10 {
            break;
        }
    }
    v
}
