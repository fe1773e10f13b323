//! diff → apply round trips: generated edits, edge-case inputs, the 2 MiB chunk
//! boundary, determinism across thread counts.

use deltaswap::{DiffOptions, PatchReader, Sha256Digest};
use proptest::prelude::*;

use crate::builder::{random_bytes, rebuilt, sha256};
use crate::{apply_all, naive};

/// Diffs, then checks every applier against the oracle and the header against
/// the files. Returns the patch.
fn check_roundtrip(old: &[u8], new: &[u8], opts: &DiffOptions) -> Vec<u8> {
    let patch = opts.diff(old, new).expect("diff");
    let h = naive::header(&patch).expect("oracle reads the header");
    assert_eq!(h.old_len, old.len() as u64);
    assert_eq!(h.new_len, new.len() as u64);
    assert_eq!(h.old_sha256, sha256(old));
    assert_eq!(h.new_sha256, sha256(new));
    let out = apply_all(old, &patch).expect("apply");
    assert!(out == new, "round trip changed the file");
    let reader = PatchReader::new(&patch[..]).expect("header");
    assert_eq!(reader.header().old_len(), old.len() as u64);
    assert_eq!(reader.header().new_len(), new.len() as u64);
    assert_eq!(reader.header().new_sha256(), Sha256Digest::of(new));
    let info = deltaswap::inspect(&patch[..]).expect("inspect");
    assert_eq!(info.patch_len(), patch.len() as u64);
    let literal_raw = info.streams()[4].1;
    assert!(literal_raw <= new.len() as u64);
    // The edit layout has no segments; otherwise only an empty file has none.
    match info.edits() {
        Some(_) => {
            assert_eq!(info.segments(), 0);
            assert_eq!(old.len(), new.len());
            assert!(naive::header(&patch).unwrap().edits);
        }
        None => assert_eq!(info.segments() == 0, new.is_empty()),
    }
    // The codecs `inspect` names are those of the oracle's descriptors.
    let segments = naive::segments(&patch).expect("oracle reads the descriptors");
    for (k, names) in info.stream_codecs().iter().enumerate() {
        let mut ids: Vec<u8> = segments
            .iter()
            .filter(|s| s[k].raw_len > 0)
            .map(|s| s[k].codec)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let named: Vec<&str> = ids
            .iter()
            .map(|id| match id {
                0 => "raw",
                1 => "zstd",
                3 => "model",
                4 => "lzma",
                5 => "block-model",
                _ => "unknown",
            })
            .collect();
        assert_eq!(names, &named, "codecs of stream {k}");
    }
    patch
}

fn fast() -> DiffOptions {
    DiffOptions::new().level(3).threads(1)
}

/// Level 20: the default's streams, and the delta model tried as well.
fn smallest() -> DiffOptions {
    DiffOptions::new().level(20)
}

// ---- synthetic "executables" -------------------------------------------------

/// An instruction of a toy machine: calls and jumps carry a 4-byte target
/// address, so inserting code shifts addresses all over the file, as a
/// recompiled library does.
#[derive(Clone, Copy, Debug)]
struct Instr {
    op: u8,
    arg: u32,
}

fn instrs(seed: u64, n: usize) -> Vec<Instr> {
    let r = random_bytes(seed, n * 5);
    (0..n)
        .map(|i| {
            let c = &r[i * 5..i * 5 + 5];
            let op = c[0] % 8;
            let arg = u32::from_le_bytes([c[1], c[2], c[3], c[4]]);
            Instr {
                op,
                // Calls and jumps hold the index of their target instruction.
                arg: if op < 3 { arg % n as u32 } else { arg },
            }
        })
        .collect()
}

fn is_branch(i: &Instr) -> bool {
    i.op < 3
}

fn render(code: &[Instr]) -> Vec<u8> {
    let size = |i: &Instr| if is_branch(i) { 5 } else { 3 };
    let mut offsets = Vec::with_capacity(code.len());
    let mut at = 0u32;
    for i in code {
        offsets.push(at);
        at += size(i);
    }
    let target = |i: &Instr| offsets[(i.arg as usize).min(code.len() - 1)];
    let mut out = Vec::with_capacity(at as usize);
    for (k, i) in code.iter().enumerate() {
        out.push(0x40 + i.op);
        match i.op {
            0 | 1 => out.extend(target(i).to_le_bytes()),
            2 => out.extend(target(i).wrapping_sub(offsets[k]).to_le_bytes()),
            _ => out.extend(&i.arg.to_le_bytes()[..2]),
        }
    }
    out
}

#[derive(Clone, Debug)]
enum CodeEdit {
    Insert(usize, Instr),
    Delete(usize),
    Change(usize, u32),
}

/// Applies source-level edits; branch targets follow their instructions, as a
/// linker would relocate them.
fn recompile(mut code: Vec<Instr>, edits: &[CodeEdit]) -> Vec<Instr> {
    for e in edits {
        match *e {
            CodeEdit::Insert(at, mut i) => {
                let at = at % (code.len() + 1);
                for c in code.iter_mut().filter(|c| is_branch(c)) {
                    if c.arg as usize >= at {
                        c.arg += 1;
                    }
                }
                if is_branch(&i) {
                    i.arg %= code.len() as u32 + 1;
                }
                code.insert(at, i);
            }
            CodeEdit::Delete(at) if code.len() > 1 => {
                let at = at % code.len();
                code.remove(at);
                let last = code.len() as u32 - 1;
                for c in code.iter_mut().filter(|c| is_branch(c)) {
                    if c.arg as usize > at {
                        c.arg -= 1;
                    }
                    c.arg = c.arg.min(last);
                }
            }
            CodeEdit::Change(at, arg) if !code.is_empty() => {
                let at = at % code.len();
                let len = code.len() as u32;
                let c = &mut code[at];
                c.arg = if is_branch(c) { arg % len } else { arg };
            }
            _ => {}
        }
    }
    code
}

fn code_edit() -> impl Strategy<Value = CodeEdit> {
    prop_oneof![
        (any::<usize>(), any::<u8>(), any::<u32>())
            .prop_map(|(a, op, arg)| CodeEdit::Insert(a, Instr { op: op % 8, arg })),
        any::<usize>().prop_map(CodeEdit::Delete),
        (any::<usize>(), any::<u32>()).prop_map(|(a, v)| CodeEdit::Change(a, v)),
    ]
}

// ---- byte-level edits ------------------------------------------------------

#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Copy `len` bytes from `from` over the data at `to` (a duplicated range).
    CopyRange(usize, usize, usize),
    Flip(usize, u8),
    /// Move a block elsewhere.
    MoveBlock(usize, usize, usize),
    /// Add a constant to every 4-byte little-endian word of a block (shifted pointers).
    Shift(usize, usize, u32),
    Append(Vec<u8>),
    Prepend(Vec<u8>),
}

fn clamp_range(len: usize, at: usize, n: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let a = at % len;
    (a, (a + n).min(len))
}

fn apply_edit(v: &mut Vec<u8>, e: &Edit) {
    match e {
        Edit::Insert(at, d) => {
            let at = at % (v.len() + 1);
            v.splice(at..at, d.iter().copied());
        }
        Edit::Delete(at, n) => {
            let (a, b) = clamp_range(v.len(), *at, *n);
            v.drain(a..b);
        }
        Edit::CopyRange(from, n, to) => {
            let (a, b) = clamp_range(v.len(), *from, *n);
            let chunk = v[a..b].to_vec();
            let to = to % (v.len() + 1);
            let end = (to + chunk.len()).min(v.len());
            v.splice(to..end, chunk);
        }
        Edit::Flip(at, x) => {
            if !v.is_empty() {
                let at = at % v.len();
                v[at] ^= x | 1;
            }
        }
        Edit::MoveBlock(from, n, to) => {
            let (a, b) = clamp_range(v.len(), *from, *n);
            let chunk: Vec<u8> = v.drain(a..b).collect();
            let to = to % (v.len() + 1);
            v.splice(to..to, chunk);
        }
        Edit::Shift(from, n, add) => {
            let (a, b) = clamp_range(v.len(), *from, *n);
            let mut i = a;
            while i + 4 <= b {
                let w = u32::from_le_bytes(v[i..i + 4].try_into().unwrap());
                v[i..i + 4].copy_from_slice(&w.wrapping_add(*add).to_le_bytes());
                i += 4;
            }
        }
        Edit::Append(d) => v.extend_from_slice(d),
        Edit::Prepend(d) => {
            v.splice(0..0, d.iter().copied());
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let data = || prop::collection::vec(any::<u8>(), 1..64);
    prop_oneof![
        (any::<usize>(), data()).prop_map(|(a, d)| Edit::Insert(a, d)),
        (any::<usize>(), 1usize..300).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 1usize..500, any::<usize>())
            .prop_map(|(a, n, t)| Edit::CopyRange(a, n, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, x)| Edit::Flip(a, x)),
        (any::<usize>(), 1usize..800, any::<usize>())
            .prop_map(|(a, n, t)| Edit::MoveBlock(a, n, t)),
        (any::<usize>(), 4usize..800, 1u32..4096).prop_map(|(a, n, d)| Edit::Shift(a, n, d)),
        data().prop_map(Edit::Append),
        data().prop_map(Edit::Prepend),
    ]
}

/// Old files: random, text-like, repetitive, or toy machine code.
fn old_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..3000),
        (any::<u64>(), 0usize..6000).prop_map(|(s, n)| random_bytes(s, n)
            .into_iter()
            .map(|b| b"etaoin shrdlu\n"[(b % 14) as usize])
            .collect()),
        (any::<u64>(), 0usize..6000)
            .prop_map(|(s, n)| random_bytes(s, n).into_iter().map(|b| b & 3).collect()),
        (any::<u64>(), 0usize..1500).prop_map(|(s, n)| render(&instrs(s, n))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// new = old with random byte-level edits; every applier gives new, byte for
    /// byte equal to the oracle; the patch does not depend on the thread count.
    #[test]
    fn edited_files_round_trip(
        old in old_file(),
        edits in prop::collection::vec(edit(), 0..6),
        level in prop_oneof![Just(1), Just(3), Just(19)],
    ) {
        let mut new = old.clone();
        for e in &edits {
            apply_edit(&mut new, e);
        }
        let opts = DiffOptions::new().level(level).threads(1);
        let patch = check_roundtrip(&old, &new, &opts);
        let patch2 = DiffOptions::new().level(level).threads(2).diff(&old, &new).unwrap();
        prop_assert!(patch == patch2, "threads(1) and threads(2) patches differ");
    }

    /// A "recompiled library": instructions inserted, deleted or changed, so that
    /// addresses shift all over the file. The patch must stay far smaller than
    /// the file (the whole point of bsdiff-style matching).
    #[test]
    fn recompiled_code_round_trips(
        seed in any::<u64>(),
        n in 600usize..3000,
        edits in prop::collection::vec(code_edit(), 1..6),
    ) {
        let code = instrs(seed, n);
        let old = render(&code);
        let new = render(&recompile(code, &edits));
        let patch = check_roundtrip(&old, &new, &DiffOptions::new().threads(1));
        prop_assert!(
            patch.len() < new.len() / 2,
            "patch of {} bytes for a {}-byte file with {} small edits",
            patch.len(), new.len(), edits.len()
        );
    }
}

/// A 4.5 MiB input, so that the new file is matched as three chunks in
/// parallel (the proptests above stay below one chunk): the patch must not
/// depend on the thread count, must apply, and a block moved from the middle
/// of the file to its end must be found as a copy.
#[test]
fn multi_chunk_inputs_round_trip_and_do_not_depend_on_thread_count() {
    let code = instrs(42, 1_300_000);
    let old = render(&code);
    assert!(old.len() > 4 << 20, "old is {} bytes", old.len());
    // 1000 new bytes in front, so that every chunk boundary falls inside a copy
    // whose old position differs from the new one (the scan of each chunk
    // starts with no alignment and must find it), then sparse byte changes
    // over the first 3 MiB, across the first chunk boundary.
    let mut new = random_bytes(44, 1000);
    new.extend_from_slice(&old);
    let r = random_bytes(43, 3 << 20);
    for (i, b) in r.iter().enumerate().step_by(4) {
        new[1000 + i] = new[1000 + i].wrapping_add(*b | 1);
    }
    let changed_only = new.clone();
    let mid = old.len() / 2;
    new.extend_from_slice(&old[mid - 40_000..mid + 40_000]);
    let diff = |threads: usize, new: &[u8]| {
        DiffOptions::new()
            .level(3)
            .threads(threads)
            .diff(&old, new)
            .unwrap()
    };
    let one = diff(1, &new);
    assert!(
        one == diff(2, &new) && one == diff(4, &new),
        "patches differ with the thread count"
    );
    assert_eq!(deltaswap::apply(&old, &one).unwrap(), new);
    // The moved 80 KB block costs a few bytes, not 80 KB of literals.
    let base = diff(1, &changed_only);
    assert!(
        one.len() < base.len() + 1000,
        "{} bytes with the moved block, {} without",
        one.len(),
        base.len()
    );
}

#[test]
fn empty_files_all_four_combinations() {
    let some = random_bytes(7, 500);
    for (old, new) in [
        (&[][..], &[][..]),
        (&[][..], &some[..]),
        (&some[..], &[][..]),
        (&some[..300], &[&some[..], b"tail"].concat()[..]),
    ] {
        let patch = check_roundtrip(old, new, &fast());
        let info = deltaswap::inspect(&patch[..]).unwrap();
        if new.is_empty() {
            // magic, version, flags, transform, reserved, two varints, two digests
            let varints = if old.is_empty() { 1 } else { 2 };
            assert_eq!(patch.len(), 8 + varints + 1 + 64);
            assert_eq!(info.segments(), 0);
        }
        if old.is_empty() && !new.is_empty() {
            // Nothing to copy: no run or delta data, every byte a literal.
            let s = info.streams();
            assert_eq!((s[1].1, s[2].1, s[3].1), (0, 0, 0));
            assert_eq!(s[4].1, new.len() as u64);
        }
    }
}

#[test]
fn identical_files_give_tiny_patches() {
    for len in [1usize, 2, 1000, 100_000] {
        let data = random_bytes(len as u64, len);
        let patch = check_roundtrip(&data, &data, &fast());
        let info = deltaswap::inspect(&patch[..]).unwrap();
        assert_eq!(info.streams()[4].1, 0, "identical files need no literals");
        assert_eq!(info.streams()[3].1, 0, "identical files need no deltas");
        assert!(
            patch.len() < 100,
            "{} bytes for identical {len}-byte files",
            patch.len()
        );
    }
}

/// Identical files are an edit list of no edits: the header and a count.
#[test]
fn identical_files_are_no_edits() {
    let data = random_bytes(5, 50_000);
    let patch = check_roundtrip(&data, &data, &DiffOptions::new());
    assert_eq!(deltaswap::inspect(&patch[..]).unwrap().edits(), Some(0));
    // magic to reserved (8), old_len (3), two digests (64), the count (1).
    assert_eq!(patch.len(), 8 + 3 + 64 + 1);
}

/// A rebuild (a new build ID and the hex digits of a debug file's name
/// spelling it) is an edit list: a literal edit and a hex edit, also with
/// up to three other changes between them, at every level and thread count;
/// a patch with more changes than an edit list holds, or of files of other
/// lengths, is in segments.
#[test]
fn rebuilt_files_are_edit_lists() {
    let old = random_bytes(6, 300_000);
    let new = rebuilt(&old, 640, 250_000, 7);
    let mut patches = Vec::new();
    for opts in [DiffOptions::new(), fast(), DiffOptions::new().threads(2)] {
        let patch = check_roundtrip(&old, &new, &opts);
        assert_eq!(deltaswap::inspect(&patch[..]).unwrap().edits(), Some(2));
        // Header (8 + 3 + 64), count, the ID (3 + 20), the name (gap 3,
        // tag 1, source 1).
        assert_eq!(patch.len(), 75 + 1 + 23 + 5);
        patches.push(patch);
    }
    assert!(patches.windows(2).all(|w| w[0] == w[1]));
    let mut between = new.clone();
    for p in [1_000, 2_000, 3_000] {
        between[p] ^= 0x20;
    }
    let patch = check_roundtrip(&old, &between, &fast());
    assert_eq!(deltaswap::inspect(&patch[..]).unwrap().edits(), Some(5));
    assert_eq!(patch.len(), 75 + 1 + 23 + 3 * 4 + 5);
    // 20 KiB of scattered changes: more than an edit list may hold.
    let mut busy = new.clone();
    for p in (10_000..210_000).step_by(10) {
        busy[p] ^= 1;
    }
    let patch = check_roundtrip(&old, &busy, &fast());
    assert_eq!(deltaswap::inspect(&patch[..]).unwrap().edits(), None);
    // One byte longer: segments.
    let patch = check_roundtrip(&old, &[&new[..], b"!"].concat(), &fast());
    assert_eq!(deltaswap::inspect(&patch[..]).unwrap().edits(), None);
}

#[test]
fn unrelated_random_files() {
    let old = random_bytes(11, 20_000);
    let new = random_bytes(12, 30_000);
    let patch = check_roundtrip(&old, &new, &DiffOptions::new());
    // Incompressible and unrelated: at most a small overhead over storing new.
    assert!(patch.len() < new.len() + 1000, "{} bytes", patch.len());
}

#[test]
fn all_zero_files() {
    let zeros = vec![0u8; 100_000];
    for new_len in [0usize, 1, 99_999, 100_000, 250_000] {
        let new = vec![0u8; new_len];
        let patch = check_roundtrip(&zeros, &new, &fast());
        assert!(
            patch.len() < 300,
            "{} bytes for {new_len} zeros",
            patch.len()
        );
    }
    // Zeros with a few marks, in both directions.
    let mut marked = zeros.clone();
    for i in [0usize, 77, 50_000, 99_999] {
        marked[i] = 0xAA;
    }
    check_roundtrip(&zeros, &marked, &fast());
    check_roundtrip(&marked, &zeros, &fast());
    check_roundtrip(&[], &zeros, &fast());
}

#[test]
fn one_byte_inputs() {
    let files: [&[u8]; 4] = [b"", b"\0", b"\xff", b"x"];
    for old in files {
        for new in files {
            for level in [1, 19] {
                check_roundtrip(old, new, &DiffOptions::new().level(level));
            }
        }
    }
    check_roundtrip(b"a", &b"a".repeat(1000), &fast());
    check_roundtrip(&b"a".repeat(1000), b"a", &fast());
}

/// Identical inputs give identical bytes for every thread count and every run.
#[test]
fn patches_are_deterministic() {
    let (old, new) = small_recompile();
    let reference = DiffOptions::new().threads(1).diff(&old, &new).unwrap();
    for threads in [1, 2, 0] {
        for _ in 0..2 {
            let p = DiffOptions::new()
                .threads(threads)
                .diff(&old, &new)
                .unwrap();
            assert!(p == reference, "threads({threads}) gave a different patch");
        }
    }
    assert!(deltaswap::diff(&old, &new).unwrap() == reference);
    assert_eq!(deltaswap::apply(&old, &reference).unwrap(), new);
}

/// The new file is matched in 2 MiB chunks: copies, literals and changes that
/// straddle the boundary must come out right, with any thread count.
#[test]
fn crossing_the_2mib_chunk_boundary() {
    const MIB2: usize = 2 << 20;
    // ~2.25 MiB of toy code (5-byte and 3-byte instructions).
    let code = instrs(99, 600_000);
    let old = render(&code);
    assert!(old.len() > MIB2 + (128 << 10));
    // Insert an instruction early (shifts every later address), change one near
    // the boundary, and put 3000 fresh bytes straddling 2 MiB of the new file.
    let mut new = render(&recompile(
        code,
        &[
            CodeEdit::Insert(1000, Instr { op: 3, arg: 1 }),
            CodeEdit::Change(500_000, 42),
        ],
    ));
    let fresh = random_bytes(100, 3000);
    new.splice(MIB2 - 1500..MIB2 - 1500, fresh);
    // And byte flips right at the boundary.
    new[MIB2 + 3] ^= 0x10;
    new[MIB2 - 1] ^= 0x01;

    let opts1 = DiffOptions::new().level(3).threads(1);
    let patch = check_roundtrip(&old, &new, &opts1);
    // With 4 threads each of the two chunks is also scanned in two halves.
    for threads in [2, 4] {
        let patch2 = DiffOptions::new()
            .level(3)
            .threads(threads)
            .diff(&old, &new)
            .unwrap();
        assert!(patch == patch2, "threads({threads}) gave a different patch");
    }
    assert!(
        patch.len() < new.len() / 20,
        "patch of {} bytes for {} bytes",
        patch.len(),
        new.len()
    );

    // A new file made of the old file's second half followed by its first half:
    // one long copy ends, another begins, across the boundary.
    // (It starts with one literal byte: see bug_new_starting_with_a_copy_from_inside_old.)
    let half = old.len() / 2;
    let mut swapped = b"!".to_vec();
    swapped.extend_from_slice(&old[half..]);
    swapped.extend_from_slice(&old[..half]);
    let patch = check_roundtrip(&old, &swapped, &opts1);
    assert!(patch.len() < 4096, "{} bytes", patch.len());
}

/// Old files from 512 KiB up are indexed in two halves (or more parts, from
/// 128 MiB), here one of about 0.9 MiB: matches must be
/// found in either half and across the middle, and the patch must not depend
/// on the thread count (at level 20, so the model's halves and the scan's
/// halves run too).
#[test]
fn old_file_indexed_in_two_halves() {
    // About 0.9 MiB of toy code.
    let code = instrs(42, 240_000);
    let old = render(&code);
    assert!(
        old.len() > 768 << 10 && old.len() < 1 << 20,
        "{}",
        old.len()
    );
    let mid = old.len() / 2;
    // An instruction inserted early, one changed near the middle; then a block
    // from the second half moved to the front, and one that straddles the
    // middle copied to the end.
    let mut new = render(&recompile(
        code,
        &[
            CodeEdit::Insert(100, Instr { op: 3, arg: 7 }),
            CodeEdit::Change(120_000, 99),
        ],
    ));
    let moved = old[mid + 100_000..mid + 140_000].to_vec();
    new.splice(0..0, moved);
    new.extend_from_slice(&old[mid - 20_000..mid + 20_000]);

    let patch = check_roundtrip(&old, &new, &smallest().threads(1));
    for threads in [2, 4] {
        let p = smallest().threads(threads).diff(&old, &new).unwrap();
        assert!(p == patch, "threads({threads}) gave a different patch");
    }
    // The moved and copied blocks cost a few operations, not their bytes.
    assert!(
        patch.len() < 16 << 10,
        "patch of {} bytes for {} bytes",
        patch.len(),
        new.len()
    );
}

/// A new file that starts with bytes copied from somewhere other than the
/// start of the old file (a deleted prefix, a moved block) must round-trip.
#[test]
fn bug_new_starting_with_a_copy_from_inside_old() {
    let old = random_bytes(7, 300);
    // A deleted prefix.
    check_roundtrip(&old, &old[100..], &fast());
    // A block moved to the front.
    let moved = [&old[200..], &old[..200]].concat();
    check_roundtrip(&old, &moved, &fast());
    // The same with the default options.
    check_roundtrip(&old, &old[1..], &DiffOptions::new());
}

/// The codec of each segment's delta-byte stream and its window_log (for
/// codec 3), and whether the segment is in plain layout, as the oracle's
/// parser reads them.
fn delta_streams(patch: &[u8]) -> Vec<(bool, u8, Option<u8>)> {
    naive::segments(patch)
        .expect("oracle parses the segments")
        .iter()
        .map(|d| {
            let plain = d[1].raw_len == 0 && d[2].raw_len == 0 && d[3].raw_len > 0;
            (plain, d[3].codec, d[3].window_log)
        })
        .collect()
}

/// A recompiled library, the case the plain layout's delta model is made for:
/// an instruction inserted early shifts every later branch target, so the
/// four bytes after most call opcodes change, by amounts that repeat. The
/// model predicts each delta from the old bytes it is added to (the opcode
/// before it); the run layout spends two varints per changed run. Level 20
/// chooses the plain layout with the model, with the smallest history window
/// that holds the stream; the default (19) and level 18 keep the run layout.
/// All apply exactly, and the choice does not depend on the thread count.
#[test]
fn plain_layout_is_chosen_when_smaller_and_round_trips() {
    let (old, new) = small_recompile();
    let streams = |p: &[u8]| {
        let info = deltaswap::inspect(p).unwrap();
        info.streams().map(|(_, raw, _)| raw)
    };
    let plain = check_roundtrip(&old, &new, &smallest().threads(1));
    let s = streams(&plain);
    assert_eq!((s[1], s[2]), (0, 0), "run streams absent: {s:?}");
    assert_eq!(
        s[3] + s[4],
        new.len() as u64,
        "one delta per copied byte: {s:?}"
    );
    // 75,185 deltas: a window of 2^17 holds them.
    assert!(s[3] > 1 << 16 && s[3] <= 1 << 17, "{s:?}");
    assert_eq!(delta_streams(&plain), [(true, 5, Some(17))]);
    assert_eq!(smallest().threads(2).diff(&old, &new).unwrap(), plain);
    // A smaller window_log caps the model's window (2^10 is the smallest for
    // both zstd and the model); a larger one changes nothing.
    for (log, want) in [(10, 10), (12, 12), (16, 16), (17, 17), (24, 17)] {
        let p = check_roundtrip(&old, &new, &smallest().window_log(log).threads(1));
        assert_eq!(
            delta_streams(&p),
            [(true, 5, Some(want))],
            "window_log {log}"
        );
    }
    // Measured 2026-11-29: 2,329 bytes (2,214 of them the model's stream)
    // against 4,669 in run layout at level 18.
    let runs = check_roundtrip(&old, &new, &DiffOptions::new().level(18).threads(1));
    let r = streams(&runs);
    assert!(r[1] > 0 && r[2] > 0, "level 18 keeps the run layout: {r:?}");
    assert_eq!(delta_streams(&runs), [(false, 1, None)]);
    assert!(
        plain.len() * 3 / 2 < runs.len(),
        "{} vs {}",
        plain.len(),
        runs.len()
    );
    // The default keeps the run layout, with its run streams at a fast level.
    let default = check_roundtrip(&old, &new, &DiffOptions::new().threads(1));
    assert_eq!(delta_streams(&default), [(false, 1, None)]);
    assert!(streams(&default)[1] > 0);
}

/// Over 4 MiB of copies, level 20 cuts segments into equal pieces
/// whose plain-layout trials (model encodings) run in parallel: the pieces,
/// and so the patch bytes, must not depend on the thread count. Here the plain
/// layout wins in both pieces, so both model streams are checked too.
#[test]
fn plain_pieces_do_not_depend_on_thread_count() {
    // 4.6 MiB of toy code, with an instruction inserted near the start and
    // one near the end: branch targets shift all over the file.
    let code = instrs(53, 1_300_000);
    let old = render(&code);
    let new = render(&recompile(
        code,
        &[
            CodeEdit::Insert(1000, Instr { op: 0, arg: 5 }),
            CodeEdit::Insert(900_000, Instr { op: 4, arg: 5 }),
        ],
    ));
    assert!(old.len() > 4 << 20 && new.len() > 4 << 20);
    let one = check_roundtrip(&old, &new, &smallest().threads(1));
    let two = smallest().threads(2).diff(&old, &new).unwrap();
    assert!(one == two, "patches differ with the thread count");
    let info = deltaswap::inspect(&one[..]).unwrap();
    assert_eq!(
        info.segments(),
        2,
        "two pieces of 2.3 MiB: {:?}",
        info.streams()
    );
    // Both pieces in plain layout; 2.3 MiB of deltas each need a 2^22 window.
    assert_eq!(
        delta_streams(&one),
        [(true, 5, Some(22)), (true, 5, Some(22))],
        "{:?}",
        info.streams()
    );
    // At level 18 the file is one segment (no pieces, no model trial).
    let fast = DiffOptions::new()
        .level(18)
        .threads(2)
        .diff(&old, &new)
        .unwrap();
    assert_eq!(deltaswap::inspect(&fast[..]).unwrap().segments(), 1);
    assert_eq!(delta_streams(&fast), [(false, 1, None)]);
    assert!(one.len() < fast.len(), "{} vs {}", one.len(), fast.len());
}

/// 20,000 toy instructions, then the same code with one instruction inserted
/// and one deleted: every later address shifts.
fn small_recompile() -> (Vec<u8>, Vec<u8>) {
    let code = instrs(5, 20_000);
    let old = render(&code);
    let new = render(&recompile(
        code,
        &[
            CodeEdit::Insert(7000, Instr { op: 0, arg: 5 }),
            CodeEdit::Delete(100),
        ],
    ));
    (old, new)
}

/// x86-like new code (`E8`/`E9` with displacements to a few shared
/// targets, between random filler) added to a file: the literals go through
/// transform 1, and every applier undoes it, also inside literal runs longer
/// than the appliers' 256 KiB buffer, where a call may straddle two reads.
#[test]
fn new_x86_code_goes_through_transform_1() {
    let old = random_bytes(71, 300_000);
    let filler = random_bytes(72, 2_000_000);
    let mut new = old[..100_000].to_vec();
    let targets = [0x1000u32, 0x8_0000, 0x12_3456, 0x40_0000];
    let mut k = 0;
    while new.len() < 100_000 + 900_000 {
        // A few bytes of filler (never E8/E9 here), then a call or a jump.
        let n = 1 + filler[k] as usize % 7;
        new.extend(filler[k..k + n].iter().map(|b| b & 0x7F));
        k += n;
        let at = new.len() as u32 + 5;
        let t = targets[filler[k] as usize % targets.len()];
        new.push(if filler[k + 1] % 4 == 0 { 0xE9 } else { 0xE8 });
        new.extend(t.wrapping_sub(at).to_le_bytes());
        k += 2;
    }
    new.extend_from_slice(&old[100_000..]);
    let patch = check_roundtrip(&old, &new, &DiffOptions::new().threads(1));
    let reader = PatchReader::new(&patch[..]).expect("header");
    assert_eq!(reader.header().transform(), 1);
    assert!(naive::header(&patch).unwrap().x86);
    // Without the calls' regularity the transform does not pay: plain
    // random literals keep transform 0.
    let mut plain = old.clone();
    plain.splice(100_000..100_000, filler[..400_000].iter().copied());
    let patch = check_roundtrip(&old, &plain, &DiffOptions::new().threads(1));
    assert_eq!(
        PatchReader::new(&patch[..]).unwrap().header().transform(),
        0
    );
}

/// AArch64-like new code (`BL`s to a few shared targets and `ADRP`s of a
/// few shared pages, between other words) added to a file whose header says
/// AArch64, at an offset that is not a multiple of 4 in the literal run:
/// the literals go through transform 16, and every applier undoes it, also
/// across the appliers' 256 KiB reads.
#[test]
fn new_a64_code_goes_through_transform_16() {
    let mut old = random_bytes(73, 300_000);
    old[..20].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0\xb7\0");
    let filler = random_bytes(74, 2_000_000);
    // The new code starts at 100,002: its words at new-file positions that
    // are multiples of 4.
    let mut new = old[..100_002].to_vec();
    new.extend_from_slice(&[0xAA, 0xBB]);
    let targets = [0x1000u64, 0x8_0000, 0x12_3456, 0x40_0000];
    let mut k = 0;
    while new.len() < 100_004 + 900_000 {
        let at = new.len() as u64;
        let t = targets[filler[k] as usize % targets.len()];
        let w = match filler[k + 1] % 4 {
            0 => 0x9400_0000 | ((t / 4).wrapping_sub(at / 4) as u32 & 0x03FF_FFFF),
            1 => {
                let pages = (t >> 12).wrapping_sub(at >> 12) as u32 & 0x1F_FFFF;
                0x9000_0001 | ((pages & 3) << 29) | ((pages >> 2) << 5)
            }
            // Other words, never BL or ADRP.
            _ => 0x1100_0000 | u32::from_le_bytes([filler[k + 2], filler[k + 3], 0, 0]),
        };
        new.extend(w.to_le_bytes());
        k += 4;
    }
    new.extend_from_slice(&old[100_002..]);
    let patch = check_roundtrip(&old, &new, &DiffOptions::new().threads(1));
    let h = naive::header(&patch).unwrap();
    assert!(h.a64_literals && !h.x86, "transform 16 chosen");
    // The same literals in a file with an x86 header try transform 1 only,
    // which finds nothing to convert.
    let (mut old_x86, mut new_x86) = (old.clone(), new.clone());
    old_x86[18] = 62;
    new_x86[18] = 62;
    let without = check_roundtrip(&old_x86, &new_x86, &DiffOptions::new().threads(1));
    let h = naive::header(&without).unwrap();
    assert!(!h.a64_literals && !h.x86);
    // (The other words carry two random bytes each, which no transform
    // touches: 395,871 against 499,852 bytes when written.)
    assert!(
        patch.len() * 100 < without.len() * 85,
        "{} bytes with transform 16, {} without",
        patch.len(),
        without.len()
    );
}

/// Where functions of `sizes` bytes start when laid out from `first`, with
/// `inserted` bytes before function `at`; and where the last one ends.
fn function_starts(
    sizes: &[usize],
    first: usize,
    at: usize,
    inserted: usize,
) -> (Vec<usize>, usize) {
    let mut starts = Vec::with_capacity(sizes.len());
    let mut pos = first;
    for (f, size) in sizes.iter().enumerate() {
        if f == at {
            pos += inserted;
        }
        starts.push(pos);
        pos += size;
    }
    (starts, pos)
}

/// x86-64-like code: functions of filler bytes, calls (`E8`) to other
/// functions and RIP-relative loads (`48 8B 05`) from a table at the end,
/// each displacement computed from the layout. `inserted` bytes of new code
/// go in before function `at`, which moves every later function and so
/// changes every displacement that crosses the insertion.
fn x86_layout(seed: u64, functions: usize, at: usize, inserted: usize) -> Vec<u8> {
    let r = random_bytes(seed, functions * 64);
    let sizes: Vec<usize> = (0..functions).map(|f| 40 + r[f] as usize % 200).collect();
    let (starts, table) = function_starts(&sizes, 0, at, inserted);
    let mut out = Vec::with_capacity(table + 4096);
    let filler = random_bytes(seed ^ 0x55, functions * 256 + inserted);
    for (f, &size) in sizes.iter().enumerate() {
        if f == at {
            out.extend(filler[functions * 256..].iter().map(|b| b & 0x7F));
        }
        let body = out.len();
        let end = body + size;
        let mut k = 0usize;
        while out.len() + 12 < end {
            let pick = r[(f * 7 + k) % r.len()];
            k += 1;
            match pick % 4 {
                0 => {
                    let target = starts[(f * 31 + k * 17) % functions] as i64;
                    out.push(0xE8);
                    let next = out.len() as i64 + 4;
                    out.extend(((target - next) as i32).to_le_bytes());
                }
                1 => {
                    let slot = table as i64 + 8 * ((f * 13 + k) % 512) as i64;
                    out.extend([0x48, 0x8B, 0x05]);
                    let next = out.len() as i64 + 4;
                    out.extend(((slot - next) as i32).to_le_bytes());
                }
                _ => {
                    let n = 1 + pick as usize % 6;
                    let from = f * 256 + out.len() - body;
                    out.extend(filler[from..from + n].iter().map(|b| b & 0x7F));
                }
            }
        }
        while out.len() < end {
            out.push(0x90);
        }
    }
    out.extend(random_bytes(seed ^ 0xAA, 4096));
    // A table of pointers to functions, 8-aligned, as in `.data.rel.ro`.
    out.resize(out.len().next_multiple_of(8), 0);
    for k in 0..4096 {
        out.extend((starts[(k * 7 + k / 3) % functions] as u64).to_le_bytes());
    }
    out
}

/// AArch64-like code after an ELF header that says so (`e_machine` 183):
/// functions of filler words, `BL`s to other functions, and `ADRP`s each
/// followed by an `ADD` or an `LDR` on its register that reach into a table
/// of pointers after the code, all computed from the layout. `inserted`
/// bytes (a multiple of 4) of new code go in before function `at`.
fn a64_layout(seed: u64, functions: usize, at: usize, inserted: usize) -> Vec<u8> {
    let r = random_bytes(seed, functions * 64);
    let sizes: Vec<usize> = (0..functions)
        .map(|f| 4 * (10 + r[f] as usize % 50))
        .collect();
    let (starts, end) = function_starts(&sizes, 64, at, inserted);
    let table = end.next_multiple_of(4096);
    let mut out = vec![0u8; 64];
    out[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    out[18..20].copy_from_slice(&183u16.to_le_bytes());
    let filler = random_bytes(seed ^ 0x55, functions * 256 + inserted);
    let word = |out: &mut Vec<u8>, w: u32| out.extend(w.to_le_bytes());
    for (f, &size) in sizes.iter().enumerate() {
        if f == at {
            for c in filler[functions * 256..].chunks(4) {
                word(&mut out, 0xAA00_0000 | u32::from(c[0]));
            }
        }
        let end = out.len() + size;
        let mut k = 0usize;
        while out.len() + 8 <= end {
            let pick = r[(f * 7 + k) % r.len()];
            k += 1;
            let q = out.len() as i64;
            match pick % 4 {
                0 => {
                    let target = starts[(f * 31 + k * 17) % functions] as i64;
                    word(
                        &mut out,
                        0x9400_0000 | ((target - q) / 4) as u32 & 0x03FF_FFFF,
                    );
                }
                1 => {
                    let slot = (table + 8 * ((f * 13 + k) % 4096)) as i64;
                    let pages = ((slot >> 12) - (q >> 12)) as u32 & 0x1F_FFFF;
                    let rd = u32::from(pick) % 29;
                    word(
                        &mut out,
                        0x9000_0000 | (pages & 3) << 29 | (pages >> 2) << 5 | rd,
                    );
                    let low = (slot & 0xFFF) as u32;
                    let next = if pick % 8 == 1 {
                        0x9100_0000 | low << 10 // ADD rd, rd, #low
                    } else {
                        0xF940_0000 | (low >> 3) << 10 // LDR x(rd+1), [rd, #low]
                    };
                    word(&mut out, next | rd << 5 | (rd + 1));
                }
                _ => {
                    let from = f * 256 + (out.len() % 200);
                    let b = &filler[from..from + 3];
                    word(
                        &mut out,
                        0xAA00_0000 | u32::from_le_bytes([b[0], b[1], b[2], 0]),
                    );
                }
            }
        }
        while out.len() < end {
            word(&mut out, 0xD503_201F); // NOP
        }
    }
    out.resize(table, 0);
    for k in 0..4096 {
        out.extend((starts[(k * 7 + k / 3) % functions] as u64).to_le_bytes());
    }
    out
}

/// Changes a few bytes of `new` (as security fixes do), then diffs `old`
/// and `new` with one thread, three threads and a fast level, checks every
/// applier and `check` on each patch, and returns the patch sizes; the
/// first two must be equal.
fn moved_code_round_trips(old: &[u8], new: &mut [u8], check: impl Fn(&[u8])) -> Vec<usize> {
    for i in (1000..new.len()).step_by(250_000) {
        new[i] ^= 0x24;
    }
    assert!(old.len() > 1 << 20);
    let sizes: Vec<usize> = [
        DiffOptions::new().threads(1),
        DiffOptions::new().threads(3),
        fast(),
    ]
    .iter()
    .map(|opts| {
        let patch = check_roundtrip(old, new, opts);
        check(&patch);
        patch.len()
    })
    .collect();
    assert_eq!(sizes[0], sizes[1], "the thread count changes nothing");
    sizes
}

/// AArch64 code moved by an insertion: the writer predicts the branches,
/// the page addresses and the pointer table through the reference map
/// (transforms 8 and 4), and every applier (the oracle from FORMAT.md's
/// words included) rebuilds the new file, on any thread count.
#[test]
fn moved_a64_code_goes_through_transforms_8_and_4() {
    let old = a64_layout(83, 9000, 4000, 0);
    let mut new = a64_layout(83, 9000, 4000, 3000);
    let sizes = moved_code_round_trips(&old, &mut new, |patch| {
        let h = naive::header(patch).unwrap();
        assert!(h.a64 && h.pointers && !h.refs, "transforms 8 and 4 chosen");
    });
    // Without transform 8 (an x86 file header, so the writer tries
    // displacements instead) every branch and page address that crosses
    // the insertion is a delta.
    let mut old_x86 = old.clone();
    let mut new_x86 = new.clone();
    old_x86[18..20].copy_from_slice(&62u16.to_le_bytes());
    new_x86[18..20].copy_from_slice(&62u16.to_le_bytes());
    let without = check_roundtrip(&old_x86, &new_x86, &DiffOptions::new().threads(1));
    assert!(!naive::header(&without).unwrap().a64);
    // With a header that names no architecture, the writer counts both
    // kinds of code sites and finds the AArch64 ones.
    let mut old_raw = old.clone();
    let mut new_raw = new.clone();
    old_raw[..4].copy_from_slice(b"RAW!");
    new_raw[..4].copy_from_slice(b"RAW!");
    let raw = check_roundtrip(&old_raw, &new_raw, &DiffOptions::new().threads(1));
    let h = naive::header(&raw).unwrap();
    assert!(h.a64 && !h.refs, "transform 8 found by its count");
    assert!(
        sizes[0] * 2 < without.len(),
        "{} bytes with transform 8, {} without",
        sizes[0],
        without.len()
    );
}

/// Code moved by an insertion: the writer predicts the displacements and
/// the pointer table through the reference map (transforms 2 and 4), the
/// header says so, and every applier (the oracle from FORMAT.md's words
/// included) rebuilds the new file, in both layouts, on any thread count,
/// with copies longer than the appliers' 256 KiB buffer.
#[test]
fn moved_x86_code_goes_through_transforms_2_and_4() {
    let old = x86_layout(81, 9000, 4000, 0);
    let mut new = x86_layout(81, 9000, 4000, 3000);
    let sizes = moved_code_round_trips(&old, &mut new, |patch| {
        let h = naive::header(patch).unwrap();
        assert!(h.refs && h.pointers, "transforms 2 and 4 chosen");
        let info = deltaswap::inspect(patch).unwrap();
        assert_eq!(info.header().transform() & 6, 6);
        let (breaks, stored) = info.reference_map().expect("a map");
        assert!(breaks >= 2 && stored > 0);
    });
    // Without the map every crossing displacement is a delta: 18,012 bytes
    // at the default level and 46,078 at level 3 (measured with the map
    // turned off). With it, 5,003 and 5,104: about the inserted bytes.
    assert!(sizes[0] < 6000, "patch of {} bytes", sizes[0]);
}

/// A table of `n` little-endian `u32` records of three fields: an offset
/// that grows by a varying step, a small kind, and a flag word: the kind of
/// new data (a relocation or lookup table) that LZMA's position bits code
/// better than zstd.
fn table(seed: u64, n: usize) -> Vec<u8> {
    let noise = random_bytes(seed, n);
    let mut out = Vec::with_capacity(n * 12);
    let mut offset = 0x4000u32;
    for (i, &r) in noise.iter().enumerate() {
        offset = offset.wrapping_add(8 + u32::from(r % 5) * 8);
        out.extend(offset.to_le_bytes());
        out.extend((u32::from(r >> 5) | 0x0100).to_le_bytes());
        out.extend(((i as u32 / 64) << 16 | 0x0001).to_le_bytes());
    }
    out
}

#[test]
fn large_compressible_literals_are_coded_with_lzma() {
    // New: the old file's first half, 96 KiB of a new table, the old file's
    // second half. At the default level the literals (the table) are coded
    // with LZMA (codec 4); at level 18 and below with zstd only.
    let old = random_bytes(41, 64 << 10);
    let mut new = old[..32 << 10].to_vec();
    new.extend(table(42, 8 << 10));
    new.extend(&old[32 << 10..]);
    let patch = check_roundtrip(&old, &new, &DiffOptions::new());
    let with_lzma = naive::segments(&patch).expect("descriptors");
    assert!(
        with_lzma.iter().any(|s| s[4].codec == 4),
        "no LZMA literals: {with_lzma:?}"
    );
    let zstd_only = check_roundtrip(&old, &new, &DiffOptions::new().level(18));
    let without = naive::segments(&zstd_only).expect("descriptors");
    assert!(without.iter().all(|s| s[4].codec != 4), "LZMA at level 18");
    // The literal streams alone: LZMA's at least 2% smaller than zstd's.
    let stored = |segs: &[[naive::Desc; 5]]| segs.iter().map(|s| s[4].stored_len).sum::<u64>();
    assert!(
        stored(&with_lzma) * 50 < stored(&without) * 49,
        "LZMA literals {} vs zstd {}",
        stored(&with_lzma),
        stored(&without)
    );
    // Short literal streams stay with zstd: 32 KiB of the table.
    let mut short = old[..32 << 10].to_vec();
    short.extend(table(43, (32 << 10) / 12));
    short.extend(&old[32 << 10..]);
    let patch = check_roundtrip(&old, &short, &DiffOptions::new());
    let segs = naive::segments(&patch).expect("descriptors");
    assert!(segs.iter().all(|s| s[4].codec != 4), "LZMA below 64 KiB");
}
