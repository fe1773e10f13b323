//! Finding approximate matches of the new file in the old one.
//!
//! The scan follows the bsdiff idea (Percival, "Naive differences of executable
//! code"): walk the new file, look up the longest exact match of the text at the
//! scan position in an index of the old file, and accept it only when it
//! is clearly better than continuing the current alignment; then grow each
//! accepted alignment forwards and backwards while at least half its bytes agree,
//! so that the small differences of recompiled code (shifted addresses) become
//! sparse byte deltas instead of literals.
//!
//! Where this differs from bsdiff:
//! - an old file of up to 8 MiB is indexed in hash chains of its 8-byte
//!   windows (`super::chain`), a lookup walking at most 256 positions of its
//!   first window's chain: built in a pass, where the suffix sort took about
//!   half of a library's diff; a larger one in suffix arrays, whose lookups
//!   find the longest match whatever the file's repetitions;
//! - suffix-array lookups start from a 64K-bucket table on the first two
//!   bytes; among the matches sharing the longest length the one nearest
//!   the current alignment is preferred, which keeps seeks and deltas small;
//! - a bitmap of the old file's 8-byte windows skips lookups that cannot be
//!   accepted, and answers without a lookup those whose result an earlier
//!   one implies ([`Known`]);
//! - where the current alignment matches the byte at the scan position, its
//!   match is taken without a lookup ([`Index::aligned`]). A better
//!   alignment starting there is found one mismatch later, by the lookup made
//!   at the alignment's first differing byte, and the backward extension
//!   grows its copy over the bytes skipped. bsdiff looks up every byte; in
//!   recompiled code most of those lookups confirm the alignment, and an
//!   exact proof that they would (the window after the match absent from old)
//!   holds for only 12-47% of them. This takes 13-19% off the diff time of
//!   libcrypto and libpython and 20% off libnode's (libc and libxml2: within
//!   the noise), and changes the patches by -0.5% to +0.35% (smaller on
//!   eight of the ten pairs of the corpus, WebKitGTK's the same, libnode's
//!   +0.04%; docs/BENCHMARKS.md);
//! - an old file of 512 KiB or more is indexed in parts built at the same
//!   time ([`part_bounds`]).
//!
//! The new file is cut into fixed-size chunks that are scanned independently (in
//! parallel); chunk boundaries depend only on the input, never on the thread
//! count, so the result is the same bytes on every machine.

use rayon::prelude::*;

use super::chain::HashChain;
use super::prefetch::prefetch;
use super::sa::SuffixArray;
use crate::error::Error;

/// One operation: copy `add_len` bytes from `old_start` (adding deltas), then
/// `extra_len` literal bytes. The new-file position is implied by order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub(crate) new_start: usize,
    pub(crate) old_start: usize,
    pub(crate) add_len: usize,
    pub(crate) extra_len: usize,
}

/// The old file's suffix arrays and filters of its 8-byte windows, one of
/// each per part (see [`part_bounds`]).
pub(crate) struct Index<'a> {
    old: &'a [u8],
    parts: Vec<Part<'a>>,
}

/// Old files from this size up are indexed in two parts or more, whose
/// suffix arrays are sorted at the same time on two cores. Suffix sorting is
/// the longest single step before the scan, and libsais's own threads gain
/// little here (measured 2026-11-29: libnode's 45 MB old file sorts in 2.5 s
/// whole, 2.4 s with two OpenMP threads, and 1.0-1.2 s per half with both
/// halves sorted at once). The parts depend only on the old file's length,
/// never on the thread count, so the patch bytes do not either.
///
/// The cost is in the scan: a lookup may search every part whose filter
/// admits the window. Until 2026-11-30 files of 2 to 16 MiB were sorted
/// whole, because there the extra lookups cost more than the shorter sort
/// saved (libcrypto: 0.435 → 0.461 s). The scan now skips most lookups where
/// the current alignment matches ([`Index::aligned`]), and a lookup skips the
/// home part when there are others and its filter rejects the first window
/// ([`Index::search`]);
/// then two parts are faster from 512 KiB up. Medians of 3-9 interleaved
/// runs, wall time: libpython −11-13%, libcrypto −12-15%, and outside the
/// corpus grpcio −21-22%, onnxruntime −14-16%, pyarrow-lib −9-14%, libparquet
/// −7-11%, tokenizers −4-9%. Chromium's resource pack, mostly new bytes that
/// each cost a filter check per part, loses: +9-14% wall time, a third more
/// CPU time.
/// Patches within 0.05% (pyarrow-lib 0.18% smaller). Below 512 KiB the sort
/// is too short to matter (libexpat, 182 KB: +4% with two parts).
const SPLIT_MIN: usize = 512 << 10;
/// Parts are at most this long (so a large file gets more than two).
const PART_MAX: usize = 64 << 20;

/// The `(start, end)` of each part of an old file of `len` bytes: equal
/// parts, one below [`SPLIT_MIN`], else at least two and at most
/// [`PART_MAX`] each.
fn part_bounds(len: usize) -> Vec<(usize, usize)> {
    let parts = if len < SPLIT_MIN {
        1
    } else {
        len.div_ceil(PART_MAX).max(2)
    };
    let size = len.div_ceil(parts).max(1);
    (0..parts)
        .map(|k| ((k * size).min(len), ((k + 1) * size).min(len)))
        .collect()
}

/// One part of the old file: what looks its matches up, and the filter of
/// its windows.
struct Part<'a> {
    /// Where the part starts in the old file.
    start: usize,
    text: &'a [u8],
    lookup: Lookup,
    grams: GramFilter,
}

/// How a part's matches are looked up.
enum Lookup {
    /// Its suffix array, and a table of SA ranges by the first two bytes:
    /// `buckets[k]..buckets[k + 1]` is the SA range of suffixes whose first
    /// two bytes are `k` (a one-byte suffix `x` counts as `x, 0`).
    Sorted { sa: SuffixArray, buckets: Vec<u32> },
    /// Hash chains of its windows (see [`super::chain`]).
    Chained(HashChain),
}

/// Matches shorter than this are not worth a lookup result.
const MIN_MATCH: usize = 2;
/// How many SA neighbours are examined to prefer the match nearest the current alignment.
const TIE_WINDOW: usize = 16;

impl<'a> Part<'a> {
    /// Indexes `text`, which starts at `start` in the old file: in hash
    /// chains if `chained`, else in a suffix array. The chains or the sort
    /// take longest; the filter (and the bucket table) are built beside.
    fn build(text: &'a [u8], start: usize, chained: bool) -> Result<Part<'a>, Error> {
        let (lookup, grams) = if chained {
            let (chain, grams) = rayon::join(|| HashChain::build(text), || GramFilter::build(text));
            (Lookup::Chained(chain), grams)
        } else {
            let (sa, (grams, buckets)) = rayon::join(
                || SuffixArray::build(text),
                || (GramFilter::build(text), bucket_starts(text)),
            );
            (Lookup::Sorted { sa: sa?, buckets }, grams)
        };
        Ok(Part {
            start,
            text,
            lookup,
            grams,
        })
    }

    /// The longest match of a prefix of `needle` in this part (in hash
    /// chains, the longest the capped walk finds): `(old_pos, len)` with
    /// `old_pos` in the whole old file; among equally long ones the one
    /// nearest `prefer` (in a suffix array, among the SA neighbours).
    fn search(&self, needle: &[u8], prefer: usize) -> (usize, usize) {
        match &self.lookup {
            Lookup::Sorted { sa, buckets } => self.search_sorted(sa, buckets, needle, prefer),
            Lookup::Chained(chain) => chain.search(self.text, needle, self.start, prefer),
        }
    }

    /// [`Part::search`] in the suffix array `sa` with its `buckets`.
    fn search_sorted(
        &self,
        sa: &SuffixArray,
        buckets: &[u32],
        needle: &[u8],
        prefer: usize,
    ) -> (usize, usize) {
        let (mut lo, mut hi) = bucket_range(sa, buckets, needle);
        if lo >= hi {
            return (0, 0);
        }
        let base = lo;
        let end = hi;
        let suffix = |r: usize| self.text.get(sa.get(r)..).unwrap_or_default();
        // Lower bound: first suffix >= needle.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if suffix(mid) < needle {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // The longest common prefix is at lo - 1 or lo.
        let mut best_len = 0usize;
        let mut best_pos = 0usize;
        let mut best_rank = lo;
        for r in [lo.wrapping_sub(1), lo] {
            if r < base || r >= end {
                continue;
            }
            let l = common_prefix(suffix(r), needle);
            if l > best_len {
                best_len = l;
                best_pos = sa.get(r);
                best_rank = r;
            }
        }
        if best_len < MIN_MATCH {
            return (self.start + best_pos, best_len);
        }
        // Among neighbours sharing the same match length, prefer the nearest to `prefer`.
        let dist = |p: usize| (self.start + p).abs_diff(prefer);
        if dist(best_pos) != 0 {
            let mut chosen = best_pos;
            let lo_r = best_rank.saturating_sub(TIE_WINDOW).max(base);
            let hi_r = best_rank.saturating_add(TIE_WINDOW + 1).min(end);
            // Ranks sharing best_len with the needle form a contiguous run around best_rank.
            let mut r = best_rank;
            while r > lo_r {
                r -= 1;
                if common_prefix(suffix(r), needle) < best_len {
                    break;
                }
                let p = sa.get(r);
                if dist(p) < dist(chosen) {
                    chosen = p;
                }
            }
            let mut r = best_rank + 1;
            while r < hi_r {
                if common_prefix(suffix(r), needle) < best_len {
                    break;
                }
                let p = sa.get(r);
                if dist(p) < dist(chosen) {
                    chosen = p;
                }
                r += 1;
            }
            best_pos = chosen;
        }
        (self.start + best_pos, best_len)
    }
}

/// The SA range to search for a needle starting with bytes `a, b`.
fn bucket_range(sa: &SuffixArray, buckets: &[u32], needle: &[u8]) -> (usize, usize) {
    if buckets.is_empty() || needle.len() < 2 {
        return (0, sa.len());
    }
    let k = (usize::from(needle[0]) << 8) | usize::from(needle[1]);
    let lo = buckets.get(k).copied().unwrap_or(0) as usize;
    let hi = buckets.get(k + 1).copied().unwrap_or(0) as usize;
    (lo, hi)
}

impl<'a> Index<'a> {
    /// Indexes `old`: the hash chains (if `chained`) or the suffix arrays,
    /// and the window filters, of its parts, all built in parallel.
    pub(crate) fn build(old: &'a [u8], chained: bool) -> Result<Index<'a>, Error> {
        Index::build_parts(old, &part_bounds(old.len()), chained)
    }

    /// [`Index::build`] with the parts given, in hash chains if `chained`.
    fn build_parts(
        old: &'a [u8],
        bounds: &[(usize, usize)],
        chained: bool,
    ) -> Result<Index<'a>, Error> {
        let parts = bounds
            .par_iter()
            .map(|&(s, e)| Part::build(old.get(s..e).unwrap_or_default(), s, chained))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Index { old, parts })
    }

    /// False when no match of [`GRAM`] bytes or more can start with `needle`.
    #[inline]
    pub(crate) fn may_match(&self, needle: &[u8]) -> bool {
        self.parts.iter().any(|p| p.grams.may_contain(needle))
    }

    /// The longest match of a prefix of `needle` within one part of old:
    /// `(old_pos, len)`. Among equally long matches near the SA position
    /// found, the one closest to `prefer` wins.
    ///
    /// The part holding `prefer` (the current alignment) is searched first;
    /// when there are others, only if its filter admits the needle's first
    /// window (else it holds no match of [`GRAM`] bytes, and the scan looks
    /// the needle up because another part's filter admitted that window).
    /// Another part is searched only if its filter allows a longer match: one
    /// of `len + 1` bytes or more would contain the window that ends with the
    /// first byte past the match found. (Below [`GRAM`] - 1 bytes the first
    /// window stands in for it, so a part may then be skipped that holds a
    /// match a few bytes longer but shorter than [`GRAM`]: too short to be
    /// accepted by the scan.)
    pub(crate) fn search(&self, needle: &[u8], prefer: usize) -> (usize, usize) {
        let home = self.part_at(prefer).unwrap_or(0);
        let mut best: (usize, usize) = match self.parts.get(home) {
            Some(part)
                if self.parts.len() == 1
                    || needle.len() < GRAM
                    || part.grams.may_contain(needle) =>
            {
                part.search(needle, prefer)
            }
            Some(_) => (0, 0),
            None => return (0, 0),
        };
        for (k, part) in self.parts.iter().enumerate() {
            if k == home || needle.len() <= best.1 {
                continue;
            }
            let from = best.1.saturating_sub(GRAM - 1);
            if let Some(window) = needle.get(from..from + GRAM) {
                if !part.grams.may_contain(window) {
                    continue;
                }
            }
            let (p, l) = part.search(needle, prefer);
            if l > best.1 || (l == best.1 && l > 0 && p.abs_diff(prefer) < best.0.abs_diff(prefer))
            {
                best = (p, l);
            }
        }
        best
    }

    /// The match of `needle` at old position `at`, the current alignment,
    /// within the part that holds `at`: `(at, len)`, or `None` when its
    /// first byte differs (or `at` is past old).
    pub(crate) fn aligned(&self, needle: &[u8], at: usize) -> Option<(usize, usize)> {
        let part = self.parts.get(self.part_at(at)?)?;
        let len = common_prefix(part.text.get(at - part.start..)?, needle);
        (len > 0).then_some((at, len))
    }

    /// The number of the part that holds old position `at`.
    fn part_at(&self, at: usize) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| at >= p.start && at - p.start < p.text.len())
    }

    pub(crate) fn old(&self) -> &'a [u8] {
        self.old
    }
}

/// Window length of the filter. A new match is only accepted when it is longer
/// than the current alignment's score plus 8, so where no 8-byte window of the
/// new file occurs in the old one, the suffix-array lookup can be skipped.
pub(crate) const GRAM: usize = 8;

/// A Bloom filter of the old file's 8-byte windows, one byte per byte of old:
/// each window sets [`GRAM_BITS`] bits of one 64-bit word, and a clear one
/// among them proves that the window occurs nowhere in old.
///
/// Three bits per window in one word (3.8% false positives on random data in
/// the test below; the one bit it set before admitted 11.8%, as a review
/// measured) cost no more memory traffic than one: the build and every
/// lookup touch one word either way. Each false positive costs the scan a
/// suffix-array lookup it could skip, or a [`Known`] shortcut it cannot take:
/// on libnode's 45 MB the diff takes about 9% less CPU than with one bit
/// (docs/BENCHMARKS.md). Which lookups are skipped can decide a match of
/// under [`GRAM`] bytes, so the filter is part of what fixes the patch bytes
/// (one bit to three changed them by -5 to +81 bytes on 11 of 24 pairs).
#[derive(Default)]
pub(crate) struct GramFilter {
    bits: Vec<u64>,
}

/// Bits each window sets in its word of the [`GramFilter`].
const GRAM_BITS: u32 = 3;

/// How many windows ahead [`GramFilter::build`] prefetches the word it will
/// write. The filter is as large as old, so for a file of more than a few
/// MiB nearly every write misses the caches; one at a time, libnode's two
/// 22 MB filters took 0.4 s each. With the word asked for 64 windows ahead
/// the same build takes a third of that (16: half, 32: 40%; measured
/// 2026-11-30, docs/BENCHMARKS.md).
const FILTER_AHEAD: usize = 64;

impl GramFilter {
    pub(crate) fn build(old: &[u8]) -> GramFilter {
        if old.len() < GRAM {
            return GramFilter::default();
        }
        let words = (old.len() / 8).max(1 << 10);
        let mut bits = vec![0u64; words];
        // Each window's word is asked for (prefetched) `FILTER_AHEAD` windows
        // before it is written, so that many cache misses are under way at
        // once. A slot not yet used holds a zero mask, which writes nothing.
        let mut pending = [(0usize, 0u64); FILTER_AHEAD];
        // A window equal to the one before it (inside a run of one byte,
        // or of any period dividing 8) sets the bits already set: skipped.
        // libgs keeps 13 MB of zeros in its data.
        let mut previous = None;
        for (k, w) in old.windows(GRAM).enumerate() {
            let v = window_value(w);
            if previous == Some(v) {
                continue;
            }
            previous = Some(v);
            let (i, mask) = value_bits(v, words);
            prefetch(&bits, i);
            if let Some(slot) = pending.get_mut(k % FILTER_AHEAD) {
                let (j, m) = std::mem::replace(slot, (i, mask));
                if let Some(word) = bits.get_mut(j) {
                    *word |= m;
                }
            }
        }
        for (j, m) in pending {
            if let Some(word) = bits.get_mut(j) {
                *word |= m;
            }
        }
        GramFilter { bits }
    }

    #[inline]
    fn may_contain(&self, needle: &[u8]) -> bool {
        if self.bits.is_empty() || needle.len() < GRAM {
            return true;
        }
        let (i, mask) = gram_bits(&needle[..GRAM], self.bits.len());
        self.bits.get(i).is_none_or(|word| word & mask == mask)
    }
}

/// Maps a window to a word below `words` (multiply, then scale the high
/// half) and the [`GRAM_BITS`] bits it sets there (six bits each of a second
/// mix).
#[inline]
fn gram_bits(w: &[u8], words: usize) -> (usize, u64) {
    value_bits(window_value(w), words)
}

/// A window's eight bytes as the number [`gram_bits`] hashes.
#[inline]
pub(crate) fn window_value(w: &[u8]) -> u64 {
    u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))
}

/// [`gram_bits`] of the window whose [`window_value`] is `v`.
#[inline]
fn value_bits(v: u64, words: usize) -> (usize, u64) {
    let h = (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (v >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let i = ((u128::from(h) * u128::from(words as u64)) >> 64) as usize;
    // The bits come from a second mix of the whole hash: the low bits of `h`
    // depend only on the low bits of `v`, and the top ones also decide `i`.
    let m = (h ^ (h >> 32)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mut mask = 0u64;
    for j in 0..GRAM_BITS {
        mask |= 1u64 << ((m >> (58 - 6 * j)) & 63);
    }
    (i, mask)
}

/// Where each two-byte bucket starts in the suffix array of `text` (see
/// `Part::buckets`), from counting the keys: it needs only the text, so it is
/// built while the suffix array is sorted. Empty for a text of 2^32 bytes or
/// more (its suffix array is searched whole).
fn bucket_starts(text: &[u8]) -> Vec<u32> {
    if u32::try_from(text.len()).is_err() {
        return Vec::new();
    }
    // A two-byte key indexes the 2^16 counts whatever its bytes, so the
    // counting needs no bounds check; no count can pass the text's length,
    // which fits in a u32.
    let mut counts: Box<[u32; 65536]> = match vec![0u32; 65536].into_boxed_slice().try_into() {
        Ok(c) => c,
        Err(_) => unreachable!("a boxed slice of 2^16 counts"),
    };
    // Equal keys in a row (a run of one byte) are counted together: one
    // counter bumped millions of times in a row waits on itself each time.
    let (mut key, mut run) = (0usize, 0u32);
    for w in text.windows(2) {
        if let [a, b] = *w {
            let k = usize::from(u16::from_be_bytes([a, b]));
            if k == key {
                run = run.wrapping_add(1);
                continue;
            }
            if let Some(c) = counts.get_mut(key) {
                *c = c.wrapping_add(run);
            }
            (key, run) = (k, 1);
        }
    }
    if let Some(c) = counts.get_mut(key) {
        *c = c.wrapping_add(run);
    }
    // The last suffix is one byte long: its key pads it with a zero.
    if let Some(&last) = text.last() {
        if let Some(c) = counts.get_mut(usize::from(last) << 8) {
            *c = c.wrapping_add(1);
        }
    }
    let mut buckets = vec![0u32; 65537];
    let mut acc = 0u32;
    for (k, c) in counts.iter().enumerate() {
        if let Some(b) = buckets.get_mut(k) {
            *b = acc;
        }
        acc = acc.saturating_add(*c);
    }
    if let Some(b) = buckets.get_mut(65536) {
        *b = acc;
    }
    buckets
}

/// Length of the common prefix of two slices.
#[inline]
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    // Compare eight bytes at a time.
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let d = x ^ y;
        if d != 0 {
            return i + (d.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// How far the alignment of `old` and `new` (both from their starts) grows
/// forwards: the length `i` that maximises `2 * agreeing - i`, the number
/// of equal bytes among the first `i` counted twice against `i` (the first
/// such length when several tie; 0 when none is positive).
fn grow_forward(old: &[u8], new: &[u8]) -> usize {
    let limit = old.len().min(new.len());
    let (old, new) = (&old[..limit], &new[..limit]);
    grow(limit, |i| common_prefix(&old[i..], &new[i..]))
}

/// [`grow_forward`] backwards: how far the alignment of the ends of `old`
/// and `new` grows towards their starts.
fn grow_backward(old: &[u8], new: &[u8]) -> usize {
    let limit = old.len().min(new.len());
    let (old, new) = (&old[old.len() - limit..], &new[new.len() - limit..]);
    grow(limit, |i| {
        common_suffix(&old[..limit - i], &new[..limit - i])
    })
}

/// bsdiff's growth rule over `limit` byte pairs, taken a run of equal bytes
/// at a time: `run(i)` is how many pairs agree from the `i`-th on. Along a
/// run the measure rises by one per byte, so only a run's end can be a new
/// best, and at a differing byte it falls.
fn grow(limit: usize, run: impl Fn(usize) -> usize) -> usize {
    let (mut agree, mut i) = (0usize, 0usize);
    let (mut best, mut best_len) = (0isize, 0usize);
    while i < limit {
        let r = run(i);
        if r > 0 {
            agree += r;
            i += r;
            let score = 2 * agree as isize - i as isize;
            if score > best {
                best = score;
                best_len = i;
            }
        }
        // The pair at `i`, if any, differs: the measure falls by one.
        i += 1;
    }
    best_len
}

/// Length of the common suffix of two slices.
#[inline]
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    // Compare eight bytes at a time, from the ends.
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[n - i - 8..n - i].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[n - i - 8..n - i].try_into().unwrap_or([0; 8]));
        let d = x ^ y;
        if d != 0 {
            return i + (d.leading_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[n - i - 1] == b[n - i - 1] {
        i += 1;
    }
    i
}

#[inline]
fn eq_at(old: &[u8], o: isize, new: &[u8], n: usize) -> bool {
    match (usize::try_from(o).ok().and_then(|o| old.get(o)), new.get(n)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// What one lookup proves about the next ones. A lookup at `from` found the
/// longest match `new[from..end]` at `pos`, and the [`GRAM`] bytes ending with
/// `new[end]` (the first byte it could not match) occur nowhere in old. Then
/// no match starting at `s` in `from + 1..limit` (`limit = end + 1 - GRAM`)
/// can reach past `end`, since it would contain those bytes; and
/// `new[s..end]` does occur, at `pos + (s - from)`. So the longest match at
/// `s` is exactly `end - s` bytes long, known without a lookup. (At `limit`
/// itself the first window is the absent one, so the filter skips the lookup
/// there and the scan scores the byte as unmatched; the shortcut stops short
/// of it, or it would score a match of `GRAM - 1` bytes instead.)
///
/// Only the length is known, not which occurrence a lookup would pick; that
/// does not matter, because such a match is never accepted: its mismatches
/// with the current alignment are a subset of those of the match it is the
/// rest of, which was not accepted either. (It can end the search as the
/// current alignment itself, which moves on by its length and uses no
/// position.) The tests check the operations are the same with and without.
///
/// In recompiled code, where the bsdiff scan looks up every byte of long
/// stretches that mostly match, this removes most lookups: each changed byte
/// usually makes a window that old does not have.
#[derive(Clone, Copy)]
struct Known {
    from: usize,
    pos: usize,
    end: usize,
    limit: usize,
}

impl Known {
    fn after(
        index: &Index<'_>,
        new: &[u8],
        from: usize,
        chunk_end: usize,
        (pos, len): (usize, usize),
    ) -> Option<Known> {
        let end = from.checked_add(len)?;
        if len < GRAM || end >= chunk_end {
            return None;
        }
        let window = new.get(end + 1 - GRAM..end + 1)?;
        if index.may_match(window) {
            return None;
        }
        Some(Known {
            from,
            pos,
            end,
            limit: end + 1 - GRAM,
        })
    }
}

/// Scans `new[start..end]` and returns operations covering exactly that range.
///
/// A chunk of at least [`SPLIT_SCAN_MIN`] bytes, when `split` is set, is
/// scanned by two threads with the same result (see [`scan_split`]).
pub(crate) fn scan_chunk(
    index: &Index<'_>,
    new: &[u8],
    start: usize,
    end: usize,
    split: bool,
) -> Vec<Op> {
    if split && end - start >= SPLIT_SCAN_MIN {
        scan_split(index, new, start, start + (end - start) / 2, end)
    } else {
        scan(index, new, start, end, true)
    }
}

/// Chunks from this size up may be scanned in two halves.
const SPLIT_SCAN_MIN: usize = 64 << 10;

/// [`scan_chunk`], with its shortcuts on or off: the [`Known`] lookups
/// and the scoring of a match at the current alignment in one addition (the
/// tests check that they change nothing).
fn scan(index: &Index<'_>, new: &[u8], start: usize, end: usize, shortcut: bool) -> Vec<Op> {
    let mut s = Scanner::new(index, new, start, end, shortcut);
    while s.step() {}
    s.finish()
}

/// The scan of `new[start..end]` on two threads, with the operations of
/// [`scan`] over the whole range.
///
/// The scan is a sequence of steps, and what a step and all later ones do
/// depends only on the [`Checkpoint`] before it (the [`Known`] shortcut
/// saves lookups but changes no result). So a second scanner starts at `mid`
/// as if a chunk started there, and notes its checkpoints; the first scans
/// from `start` up to `mid`, then goes on alone until it reaches a checkpoint
/// the second one passed through (usually within a few operations: both
/// follow the same matches). From there the second's operations are the
/// first's. If they never meet, the first scans to `end` itself: the result
/// is the same either way, only the time differs.
fn scan_split(index: &Index<'_>, new: &[u8], start: usize, mid: usize, end: usize) -> Vec<Op> {
    let (mut first, (second, marks)) = rayon::join(
        || {
            let mut s = Scanner::new(index, new, start, end, true);
            while s.checkpoint().is_some_and(|c| c.at < mid) && s.step() {}
            s
        },
        || {
            let mut s = Scanner::new(index, new, mid, end, true);
            let mut marks: Vec<(Checkpoint, usize)> = Vec::new();
            loop {
                if let Some(c) = s.checkpoint() {
                    marks.push((c, s.ops.len()));
                }
                if !s.step() {
                    break;
                }
            }
            (s.ops, marks)
        },
    );
    let mut k = 0usize;
    loop {
        if let Some(c) = first.checkpoint() {
            while marks.get(k).is_some_and(|(m, _)| m.at < c.at) {
                k += 1;
            }
            if let Some(&(m, n)) = marks.get(k) {
                if m == c {
                    first
                        .ops
                        .extend_from_slice(second.get(n..).unwrap_or_default());
                    return first.finish();
                }
            }
        }
        if !first.step() {
            break;
        }
    }
    first.finish()
}

/// The state a scan step starts from: the position it scans from, and the
/// current alignment (where the last operation's copy ended, in new and old,
/// and their offset). Two scanners of the same chunk end that reach the same
/// checkpoint make the same operations from there on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Checkpoint {
    at: usize,
    last_scan: usize,
    last_pos: usize,
    last_offset: isize,
}

/// The bsdiff-style scan of one range of the new file, a step at a time.
struct Scanner<'i, 'a, 'n> {
    index: &'i Index<'a>,
    new: &'n [u8],
    end: usize,
    shortcut: bool,
    scan: usize,
    len: usize,
    pos: usize,
    last_scan: usize,
    last_pos: usize,
    last_offset: isize,
    known: Option<Known>,
    ops: Vec<Op>,
}

impl<'i, 'a, 'n> Scanner<'i, 'a, 'n> {
    fn new(
        index: &'i Index<'a>,
        new: &'n [u8],
        start: usize,
        end: usize,
        shortcut: bool,
    ) -> Scanner<'i, 'a, 'n> {
        Scanner {
            index,
            new,
            end,
            shortcut,
            scan: start,
            len: 0,
            pos: 0,
            last_scan: start,
            last_pos: start.min(index.old().len()),
            last_offset: 0,
            known: None,
            ops: Vec::new(),
        }
    }

    /// The state the next step starts from, while that step scans new bytes.
    /// (A step from the end of the range only closes the last operation,
    /// and how depends on more than this state, so it has no checkpoint.)
    fn checkpoint(&self) -> Option<Checkpoint> {
        let at = self.scan + self.len;
        (self.scan < self.end && at < self.end).then_some(Checkpoint {
            at,
            last_scan: self.last_scan,
            last_pos: self.last_pos,
            last_offset: self.last_offset,
        })
    }

    /// The operations, without the empty ones (possible at a chunk start).
    fn finish(mut self) -> Vec<Op> {
        self.ops.retain(|op| op.add_len + op.extra_len > 0);
        self.ops
    }

    /// One step of the scan: from the current position, find the next match
    /// worth a new operation and close the current one. False when the range
    /// was already done.
    fn step(&mut self) -> bool {
        let (index, new, end, shortcut) = (self.index, self.new, self.end, self.shortcut);
        let old = index.old();
        let mut scan = self.scan;
        if scan >= end {
            return false;
        }
        let mut len = self.len;
        let mut pos = self.pos;
        let mut last_scan = self.last_scan;
        let mut last_pos = self.last_pos;
        let mut last_offset = self.last_offset;
        let mut known = self.known;
        let ops = &mut self.ops;
        let mut old_score: usize = 0;
        scan += len;
        let mut scsc = scan;
        while scan < end {
            let prefer = (scan as isize + last_offset).max(0) as usize;
            let needle = &new[scan..end];
            if let Some(k) = known.filter(|k| shortcut && scan > k.from && scan < k.limit) {
                // The longest match here is the rest of an earlier one (see
                // `Known`): no lookup needed to score it.
                len = k.end - scan;
                pos = k.pos + (scan - k.from);
            } else if index.may_match(needle) {
                // Where the current alignment matches, its match is taken
                // without a lookup (see the module documentation).
                let aligned = usize::try_from(scan as isize + last_offset)
                    .ok()
                    .and_then(|at| index.aligned(needle, at));
                let (p, l) = aligned.unwrap_or_else(|| index.search(needle, prefer));
                pos = p;
                len = l;
                known = Known::after(index, new, scan, end, (p, l)).or(known);
            } else {
                // No match of 8 bytes or more starts here, so none can be
                // accepted: skip the lookup. Keep the score of the current
                // alignment counted up to and including this byte.
                len = 0;
                if scsc <= scan {
                    if eq_at(old, scan as isize + last_offset, new, scan) {
                        old_score += 1;
                    }
                    scsc = scan + 1;
                }
            }
            if shortcut && len > 0 && scsc >= scan && pos as isize == scan as isize + last_offset {
                // The match is at the current alignment: every byte of it
                // agrees there, so the byte loop below would count each one
                // not yet scored. (Scoring lags behind `scan` only after a
                // lookup that matched nothing; the loop handles that.)
                old_score += (scan + len).saturating_sub(scsc);
                scsc = scsc.max(scan + len);
            }
            while scsc < scan + len {
                if eq_at(old, scsc as isize + last_offset, new, scsc) {
                    old_score += 1;
                }
                scsc += 1;
            }
            if (len == old_score && len != 0) || len > old_score + 8 {
                break;
            }
            if eq_at(old, scan as isize + last_offset, new, scan) {
                old_score = old_score.saturating_sub(1);
            }
            scan += 1;
        }
        if len != old_score || scan >= end {
            let scan_end = scan.min(end);
            // Grow the previous alignment forwards while at least half
            // agrees, and the new match backwards likewise.
            let mut lenf = grow_forward(
                old.get(last_pos..).unwrap_or_default(),
                new.get(last_scan..scan_end).unwrap_or_default(),
            );
            let mut lenb = if scan < end {
                grow_backward(
                    old.get(..pos).unwrap_or_default(),
                    new.get(last_scan..scan).unwrap_or_default(),
                )
            } else {
                0
            };
            // Resolve an overlap between the two extensions at the best split.
            if last_scan + lenf > scan_end - lenb {
                let overlap = (last_scan + lenf) - (scan_end - lenb);
                let (mut s, mut ss, mut lens) = (0isize, 0isize, 0usize);
                for i in 0..overlap {
                    if new[last_scan + lenf - overlap + i] == old[last_pos + lenf - overlap + i] {
                        s += 1;
                    }
                    if new[scan_end - lenb + i] == old[pos - lenb + i] {
                        s -= 1;
                    }
                    if s > ss {
                        ss = s;
                        lens = i + 1;
                    }
                }
                lenf = lenf + lens - overlap;
                lenb -= lens;
            }
            ops.push(Op {
                new_start: last_scan,
                old_start: last_pos,
                add_len: lenf,
                extra_len: (scan_end - lenb) - (last_scan + lenf),
            });
            last_scan = scan_end - lenb;
            last_pos = pos - lenb;
            last_offset = pos as isize - scan as isize;
        }
        self.scan = scan;
        self.len = len;
        self.pos = pos;
        self.last_scan = last_scan;
        self.last_pos = last_pos;
        self.last_offset = last_offset;
        self.known = known;
        true
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `old` indexed in suffix arrays, whatever its size.
    fn sorted(old: &[u8]) -> Index<'_> {
        Index::build_parts(old, &part_bounds(old.len()), false).unwrap()
    }

    /// The longest match of a prefix of `needle` anywhere in `old`, by
    /// trying every position.
    pub(in crate::diff) fn brute(old: &[u8], needle: &[u8]) -> usize {
        (0..old.len())
            .map(|p| common_prefix(&old[p..], needle))
            .max()
            .unwrap_or(0)
    }

    /// Each two-byte bucket spans exactly the suffixes that start with its
    /// key (a one-byte suffix padded with a zero), for texts of every short
    /// length and of a few letters, where the buckets are crowded.
    #[test]
    fn buckets_span_the_suffixes_of_their_key() {
        let mut rnd = crate::test_rng(0xD1B5_4A32_D192_ED03);
        for len in (0..40).chain([1_000, 70_000]) {
            let text: Vec<u8> = (0..len).map(|_| b"\0ab"[(rnd() % 3) as usize]).collect();
            let sa = SuffixArray::build(&text).unwrap();
            let buckets = bucket_starts(&text);
            assert_eq!(buckets.len(), 65537);
            assert_eq!(buckets[65536] as usize, len);
            for r in 0..len {
                let p = sa.get(r);
                let k = (usize::from(text[p]) << 8)
                    | usize::from(text.get(p + 1).copied().unwrap_or(0));
                assert!(
                    buckets[k] as usize <= r && r < buckets[k + 1] as usize,
                    "length {len}, rank {r}, key {k:#06x}"
                );
            }
        }
    }

    #[test]
    fn search_finds_longest() {
        let mut x = 12345u32;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let old: Vec<u8> = (0..3000).map(|_| (rnd() % 4) as u8).collect();
        let idx = sorted(&old);
        for _ in 0..500 {
            let s = (rnd() as usize) % 2900;
            let mut needle = old[s..s + 50].to_vec();
            let k = (rnd() as usize) % 50;
            needle[k] ^= 1;
            let (p, l) = idx.search(&needle, 0);
            assert_eq!(l, brute(&old, &needle));
            assert_eq!(common_prefix(&old[p..], &needle), l);
        }
        // Needles that are a suffix of old, run past its end, or share long
        // prefixes with many suffixes (a text of long runs): comparisons that
        // end at the end of a suffix or of the needle, and long runs of ties
        // among which the position found must still hold the match.
        let runs: Vec<u8> = (0..3000).map(|i| u8::from(i % 700 < 690)).collect();
        for text in [&old, &runs] {
            let idx = sorted(text);
            for _ in 0..300 {
                let s = (rnd() as usize) % text.len();
                let mut needle = text[s..].to_vec();
                match rnd() % 3 {
                    0 => needle.truncate((rnd() as usize) % 64 + 1),
                    1 => needle.extend_from_slice(&text[..(rnd() as usize) % 40]),
                    _ => {}
                }
                let prefer = (rnd() as usize) % text.len();
                let (p, l) = idx.search(&needle, prefer);
                assert_eq!(l, brute(text, &needle));
                assert_eq!(common_prefix(&text[p..], &needle), l);
            }
        }
    }

    /// The filter never denies a window old has, and admits few it lacks:
    /// under 5% of random windows on random data (three bits per window
    /// admit 3.8%, one bit 11.8%: `GRAM_BITS = 1` fails), and under 3% of
    /// the absent windows of data that is three quarters zero bytes (1.3%;
    /// three bits taken from the low end of the hash, which depends on only
    /// some of the window's bytes, admitted 6.4%).
    #[test]
    fn gram_filter_is_exact_for_old_and_rarely_wrong_otherwise() {
        let mut rnd = crate::test_rng(0x9E37_79B9_7F4A_7C15);
        let mut old: Vec<u8> = (0..400_000).map(|_| rnd() as u8).collect();
        // Some repeated structure too, as in code.
        for i in (0..old.len()).step_by(64) {
            old[i] = 0xe8;
        }
        let filter = GramFilter::build(&old);
        assert!(old.windows(GRAM).all(|w| filter.may_contain(w)));
        let trials = 200_000;
        let admitted = (0..trials)
            .filter(|_| filter.may_contain(&rnd().to_le_bytes()))
            .count();
        assert!(
            admitted * 20 < trials,
            "{admitted} of {trials} absent windows admitted"
        );

        let mut sparse = || {
            if rnd() % 4 == 0 {
                rnd() as u8
            } else {
                0
            }
        };
        let old: Vec<u8> = (0..200_000).map(|_| sparse()).collect();
        let filter = GramFilter::build(&old);
        let present: std::collections::HashSet<&[u8]> = old.windows(GRAM).collect();
        assert!(present.iter().all(|w| filter.may_contain(w)));
        let (mut absent, mut admitted) = (0usize, 0usize);
        for _ in 0..200_000 {
            let w: Vec<u8> = (0..GRAM).map(|_| sparse()).collect();
            if !present.contains(&w[..]) {
                absent += 1;
                admitted += usize::from(filter.may_contain(&w));
            }
        }
        assert!(
            admitted * 100 < absent * 3,
            "{admitted} of {absent} absent sparse windows admitted"
        );

        // Every size around the smallest table and the window length.
        for len in [0, 1, 7, 8, 9, 100, 8191, 8192, 8193, 65_539] {
            let old: Vec<u8> = (0..len)
                .map(|i| (i % 7) as u8 ^ (rnd() % 3) as u8)
                .collect();
            let filter = GramFilter::build(&old);
            assert!(old.windows(GRAM).all(|w| filter.may_contain(w)), "{len}");
        }
    }

    /// The prefetching build sets exactly the bits of a plain one, window by
    /// window, whether old has fewer windows than it looks ahead or many more.
    #[test]
    fn gram_filter_build_sets_the_bits_of_every_window() {
        let mut rnd = crate::test_rng(0x2545_F491_4F6C_DD1D);
        let ahead = FILTER_AHEAD + GRAM - 1;
        for len in [8, 9, ahead - 1, ahead, ahead + 1, 1_000, 8_200, 300_001] {
            let old: Vec<u8> = (0..len).map(|_| (rnd() % 5) as u8).collect();
            let filter = GramFilter::build(&old);
            let mut plain = vec![0u64; filter.bits.len()];
            for w in old.windows(GRAM) {
                let (i, mask) = gram_bits(w, plain.len());
                plain[i] |= mask;
            }
            assert!(filter.bits == plain, "{len}");
        }
    }

    /// Old and new files like two builds of a program: new is old with bytes
    /// changed here and there, runs inserted and deleted, blocks moved.
    fn recompiled(seed: u32, len: usize) -> (Vec<u8>, Vec<u8>) {
        let mut x = seed | 1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let old: Vec<u8> = (0..len)
            .map(|i| match rnd() % 8 {
                0..=2 => (i % 7) as u8,
                3 => 0,
                _ => (rnd() % 32) as u8,
            })
            .collect();
        let mut new = Vec::with_capacity(len);
        let mut i = 0;
        while i < old.len() {
            match rnd() % 64 {
                0 => i += (rnd() % 40) as usize,
                1 => new.extend((0..rnd() % 40).map(|_| rnd() as u8)),
                2 => {
                    let from = (rnd() as usize) % old.len();
                    let n = (rnd() % 200) as usize;
                    new.extend_from_slice(&old[from..(from + n).min(old.len())]);
                }
                3..=12 => {
                    new.push(old[i].wrapping_add(1 + (rnd() % 3) as u8));
                    i += 1;
                }
                _ => {
                    new.push(old[i]);
                    i += 1;
                }
            }
        }
        (old, new)
    }

    /// Checks that operations cover `new[start..end]` exactly, in order, and
    /// copy from inside old.
    fn check_cover(ops: &[Op], old: &[u8], start: usize, end: usize) {
        let mut at = start;
        for op in ops {
            assert_eq!(op.new_start, at);
            assert!(op.old_start + op.add_len <= old.len());
            at += op.add_len + op.extra_len;
        }
        assert_eq!(at, end);
    }

    /// A block moved to where the current alignment happens to match its
    /// first bytes is still found: the lookup skipped there is made at the
    /// alignment's first mismatch, and the copy grows back over the bytes
    /// skipped.
    #[test]
    fn moved_block_is_found_where_the_alignment_matches_its_start() {
        let mut rnd = crate::test_rng(0x5851_F42D_4C95_7F2D);
        for agree in [1, 3, 7, 8, 20] {
            let mut old: Vec<u8> = (0..20_000).map(|_| rnd() as u8).collect();
            // The moved block (old[12_000..15_000]) starts with the bytes
            // the alignment reaches at the insertion point (old[5_000..]).
            let (head, tail) = old.split_at_mut(12_000);
            tail[..agree].copy_from_slice(&head[5_000..5_000 + agree]);
            let mut new = old[..5_000].to_vec();
            new.extend_from_slice(&old[12_000..15_000]);
            new.extend_from_slice(&old[5_000..]);
            let idx = Index::build(&old, true).unwrap();
            let ops = scan(&idx, &new, 0, new.len(), true);
            check_cover(&ops, &old, 0, new.len());
            let literal: usize = ops.iter().map(|op| op.extra_len).sum();
            assert!(literal < 16, "{agree} bytes agree: {literal} literal bytes");
            // The copy over the block's new place starts at or before it
            // and reads it from its old place.
            let moved = ops
                .iter()
                .find(|op| op.new_start <= 5_000 && 8_000 <= op.new_start + op.add_len)
                .map(|op| op.old_start + (5_000 - op.new_start));
            assert_eq!(moved, Some(12_000), "{agree} bytes agree: {ops:?}");
        }
    }

    /// `aligned` returns the match at the position asked, as long as it
    /// runs within that position's part, and nothing when the first byte
    /// differs or the position is past old.
    #[test]
    fn aligned_is_the_match_at_the_position_within_its_part() {
        let (old, new) = recompiled(3, 20_000);
        let bounds = [(0, 6_000), (6_000, 20_000)];
        let idx = Index::build_parts(&old, &bounds, true).unwrap();
        let mut rnd = crate::test_rng(0x1234_5678_9ABC_DEF1);
        for _ in 0..5_000 {
            let s = rnd() as usize % new.len();
            let needle = &new[s..(s + 200).min(new.len())];
            let at = rnd() as usize % (old.len() + 10);
            let end = bounds.iter().find(|b| at >= b.0 && at < b.1).map(|b| b.1);
            let expect = end
                .map(|e| common_prefix(&old[at..e], needle))
                .filter(|&l| l > 0)
                .map(|l| (at, l));
            assert_eq!(idx.aligned(needle, at), expect, "at {at}, needle at {s}");
        }
        // Old's own bytes just before the part boundary: the match stops there.
        for k in 1..50 {
            let at = 6_000 - k;
            assert_eq!(idx.aligned(&old[at..at + 100], at), Some((at, k)));
        }
    }

    #[test]
    fn parts_follow_the_length_only() {
        assert_eq!(part_bounds(0), vec![(0, 0)]);
        assert_eq!(part_bounds(SPLIT_MIN - 1), vec![(0, SPLIT_MIN - 1)]);
        let half = SPLIT_MIN / 2;
        assert_eq!(part_bounds(SPLIT_MIN), vec![(0, half), (half, SPLIT_MIN)]);
        let two = part_bounds(16 << 20);
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].0, 0);
        assert_eq!(two[0].1, two[1].0);
        assert_eq!(two[1].1, 16 << 20);
        assert_eq!(part_bounds(2 * PART_MAX).len(), 2);
        assert_eq!(part_bounds(2 * PART_MAX + 1).len(), 3);
        let big = 3 * PART_MAX + 5;
        let parts = part_bounds(big);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|&(s, e)| e - s <= PART_MAX));
        assert!(parts.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(parts.last().map(|p| p.1), Some(big));
    }

    #[test]
    fn search_over_parts_finds_longest_within_a_part() {
        let (old, new) = recompiled(7, 20_000);
        let bounds = [(0, 6_000), (6_000, 13_000), (13_000, 20_000)];
        let idx = Index::build_parts(&old, &bounds, false).unwrap();
        let whole = sorted(&old);
        let chained = Index::build_parts(&old, &bounds, true).unwrap();
        for s in (0..new.len()).step_by(37) {
            let needle = &new[s..(s + 300).min(new.len())];
            let longest = bounds
                .iter()
                .flat_map(|&(a, b)| (a..b).map(move |p| (p, b)))
                .map(|(p, b)| common_prefix(&old[p..b], needle))
                .max()
                .unwrap_or(0);
            // Exact from GRAM bytes up, the only matches the scan accepts.
            let (p, l) = idx.search(needle, s);
            if longest >= GRAM {
                assert_eq!(l, longest, "at {s}");
            } else {
                assert!(l <= longest, "at {s}");
            }
            assert!(common_prefix(&old[p..], needle) >= l);
            // In hash chains (none here reaches the cap): the same length
            // from GRAM bytes up.
            let (p, l) = chained.search(needle, s);
            if longest >= GRAM {
                assert_eq!(l, longest, "chained, at {s}");
            }
            assert!(common_prefix(&old[p..], needle) >= l);
            // One part: the longest match anywhere.
            let l = whole.search(needle, s).1;
            assert_eq!(l.max(MIN_MATCH), brute(&old, needle).max(MIN_MATCH));
        }
    }

    /// The scan in two halves gives the operations of the scan in one, at
    /// any split point: where the halves meet early, where they meet late,
    /// and where the second half is unrelated to old.
    #[test]
    fn split_scan_changes_no_operation() {
        for seed in 1..9 {
            let (old, mut new) = recompiled(seed, 40_000);
            if seed == 8 {
                // A tail old has nothing of: the halves may never meet.
                let mut x = 7u32;
                for b in new.iter_mut().skip(25_000) {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *b = (x >> 24) as u8;
                }
            }
            let idx = Index::build(&old, true).unwrap();
            for (a, b) in [(0, new.len()), (3_000, new.len() - 2_000)] {
                let whole = scan(&idx, &new, a, b, true);
                check_cover(&whole, &old, a, b);
                for mid in [a + 1, a + 777, (a + b) / 2, b - 100, b - 1] {
                    let halves = scan_split(&idx, &new, a, mid, b);
                    assert_eq!(halves, whole, "seed {seed}, {a}..{b} split at {mid}");
                }
            }
        }
    }

    /// Where the shortcut's range ends: at the position whose first window is
    /// the one old lacks, the scan must score the byte as the filter does, not
    /// as a match of seven bytes. (A review found this pair; the shortcut
    /// used to reach that position and gave other operations.)
    #[test]
    fn shortcut_stops_before_the_absent_window() {
        let old = [
            1u8, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1,
        ];
        let new = [
            0u8, 1, 0, 0, 0, 0, 1, 1, 1, 2, 1, 0, 2, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1,
            1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1,
        ];
        let idx = Index::build(&old, true).unwrap();
        let fast = scan(&idx, &new, 0, new.len(), true);
        let slow = scan(&idx, &new, 0, new.len(), false);
        assert_eq!(fast, slow);
        check_cover(&fast, &old, 0, new.len());
    }

    /// bsdiff's forward growth, a byte at a time.
    fn grow_forward_naive(old: &[u8], new: &[u8]) -> usize {
        let (mut s, mut sf, mut lenf) = (0isize, 0isize, 0usize);
        let mut i = 0usize;
        while i < new.len() && i < old.len() {
            if old[i] == new[i] {
                s += 1;
            }
            i += 1;
            if s * 2 - i as isize > sf * 2 - lenf as isize {
                sf = s;
                lenf = i;
            }
        }
        lenf
    }

    /// bsdiff's backward growth, a byte at a time.
    fn grow_backward_naive(old: &[u8], new: &[u8]) -> usize {
        let (mut s, mut sb, mut lenb) = (0isize, 0isize, 0usize);
        let mut i = 1usize;
        while new.len() >= i && old.len() >= i {
            if old[old.len() - i] == new[new.len() - i] {
                s += 1;
            }
            if s * 2 - i as isize > sb * 2 - lenb as isize {
                sb = s;
                lenb = i;
            }
            i += 1;
        }
        lenb
    }

    proptest::proptest! {
        /// The run-at-a-time growth is bsdiff's byte loop, on pairs that
        /// agree in runs of every length with stretches of noise between.
        #[test]
        fn growth_is_the_byte_loops(
            old in proptest::collection::vec(0u8..4, 0..300),
            flips in proptest::collection::vec((0usize..300, 0u8..4), 0..40),
            cut in 0usize..40,
        ) {
            let mut new = old.clone();
            for (at, b) in flips {
                if let Some(x) = new.get_mut(at) {
                    *x = b;
                }
            }
            let new = new.get(cut.min(new.len())..).unwrap_or_default().to_vec();
            proptest::prop_assert_eq!(grow_forward(&old, &new), grow_forward_naive(&old, &new));
            proptest::prop_assert_eq!(grow_backward(&old, &new), grow_backward_naive(&old, &new));
            let suffix = old.iter().rev().zip(new.iter().rev()).take_while(|(a, b)| a == b).count();
            proptest::prop_assert_eq!(common_suffix(&old, &new), suffix);
        }
    }

    /// A byte old does not hold, whose window the filter admits by chance,
    /// is looked up and matches nothing; the scan then scores the bytes
    /// after it one step late, where the one-addition scoring of aligned
    /// matches stands aside. The operations must not change.
    #[test]
    fn shortcut_changes_no_operation_after_an_absent_byte() {
        let mut x = 7u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let old: Vec<u8> = (0..60_000).map(|_| (next() % 255) as u8).collect();
        let mut new = old.clone();
        for _ in 0..3_000 {
            let at = next() as usize % new.len();
            new[at] = 0xff;
        }
        let idx = Index::build(&old, true).unwrap();
        // Some window starting with 0xff must pass the filter for the test
        // to mean anything.
        let admitted = (0..new.len() - GRAM)
            .filter(|&i| new[i] == 0xff && idx.may_match(&new[i..]))
            .count();
        assert!(admitted > 10, "{admitted}");
        let fast = scan(&idx, &new, 0, new.len(), true);
        let slow = scan(&idx, &new, 0, new.len(), false);
        assert_eq!(fast, slow);
        check_cover(&fast, &old, 0, new.len());
    }

    #[test]
    fn shortcut_changes_no_operation() {
        for seed in 1..6 {
            let (old, new) = recompiled(seed, 30_000);
            for bounds in [vec![(0, old.len())], vec![(0, 12_345), (12_345, old.len())]] {
                for chained in [false, true] {
                    let idx = Index::build_parts(&old, &bounds, chained).unwrap();
                    for (a, b) in [(0, new.len()), (1_000, new.len() / 2)] {
                        let fast = scan(&idx, &new, a, b, true);
                        let slow = scan(&idx, &new, a, b, false);
                        let parts = bounds.len();
                        assert_eq!(fast, slow, "seed {seed}, {parts} parts, chained {chained}");
                        check_cover(&fast, &old, a, b);
                    }
                }
            }
        }
    }
}
