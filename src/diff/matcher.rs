//! Finding approximate matches of the new file in the old one.
//!
//! The scan follows the bsdiff idea (Percival, "Naive differences of executable
//! code"): walk the new file, look up the longest exact match of the text at the
//! scan position in the suffix array of the old file, and accept it only when it
//! is clearly better than continuing the current alignment; then grow each
//! accepted alignment forwards and backwards while at least half its bytes agree,
//! so that the small differences of recompiled code (shifted addresses) become
//! sparse byte deltas instead of literals.
//!
//! Two things differ from bsdiff: lookups start from a 64K-bucket table on the
//! first two bytes, and among the suffixes sharing the longest match the one
//! nearest the current alignment is preferred, which keeps seeks and deltas small.
//!
//! The new file is cut into fixed-size chunks that are scanned independently (in
//! parallel); chunk boundaries depend only on the input, never on the thread
//! count, so the result is the same bytes on every machine.

use super::sa::SuffixArray;

/// One operation: copy `add_len` bytes from `old_start` (adding deltas), then
/// `extra_len` literal bytes. The new-file position is implied by order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub(crate) new_start: usize,
    pub(crate) old_start: usize,
    pub(crate) add_len: usize,
    pub(crate) extra_len: usize,
}

/// Suffix array plus a table of SA ranges by the first two bytes, and a filter
/// of the old file's 8-byte windows.
pub(crate) struct Index<'a> {
    old: &'a [u8],
    sa: SuffixArray,
    grams: GramFilter,
    /// `buckets[k]..buckets[k + 1]` is the SA range of suffixes whose first two
    /// bytes are `k` (a one-byte suffix `x` counts as `x, 0`).
    buckets: Vec<u32>,
}

/// Matches shorter than this are not worth a lookup result.
const MIN_MATCH: usize = 2;
/// How many SA neighbours are examined to prefer the match nearest the current alignment.
const TIE_WINDOW: usize = 16;

impl<'a> Index<'a> {
    pub(crate) fn new(old: &'a [u8], sa: SuffixArray) -> Index<'a> {
        let mut buckets = vec![0u32; 65537];
        if u32::try_from(sa.len()).is_ok() {
            let mut counts = vec![0u32; 65536];
            for i in 0..old.len() {
                let k = key(old, i);
                if let Some(c) = counts.get_mut(k) {
                    *c = c.saturating_add(1);
                }
            }
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
        } else {
            buckets.clear();
        }
        Index {
            old,
            sa,
            buckets,
            grams: GramFilter::default(),
        }
    }

    /// Attaches the 8-byte window filter (built in parallel with the suffix array).
    pub(crate) fn with_grams(mut self, grams: GramFilter) -> Index<'a> {
        self.grams = grams;
        self
    }

    /// False when no match of [`GRAM`] bytes or more can start with `needle`.
    #[inline]
    pub(crate) fn may_match(&self, needle: &[u8]) -> bool {
        self.grams.may_contain(needle)
    }

    /// The SA range to search for a needle starting with bytes `a, b`.
    fn range(&self, needle: &[u8]) -> (usize, usize) {
        if self.buckets.is_empty() || needle.len() < 2 {
            return (0, self.sa.len());
        }
        let k = (usize::from(needle[0]) << 8) | usize::from(needle[1]);
        let lo = self.buckets.get(k).copied().unwrap_or(0) as usize;
        let hi = self.buckets.get(k + 1).copied().unwrap_or(0) as usize;
        (lo, hi)
    }

    /// The longest match of a prefix of `needle` in old: `(old_pos, len)`.
    /// Among equally long matches near the SA position found, the one closest to
    /// `prefer` wins.
    pub(crate) fn search(&self, needle: &[u8], prefer: usize) -> (usize, usize) {
        let (mut lo, mut hi) = self.range(needle);
        if lo >= hi {
            return (0, 0);
        }
        let base = lo;
        let end = hi;
        // Lower bound: first suffix >= needle.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let s = self.sa.get(mid);
            let suffix = self.old.get(s..).unwrap_or_default();
            if suffix < needle {
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
            let p = self.sa.get(r);
            let l = common_prefix(self.old.get(p..).unwrap_or_default(), needle);
            if l > best_len {
                best_len = l;
                best_pos = p;
                best_rank = r;
            }
        }
        if best_len < MIN_MATCH {
            return (best_pos, best_len);
        }
        // Among neighbours sharing the same match length, prefer the nearest to `prefer`.
        let dist = |p: usize| p.abs_diff(prefer);
        if dist(best_pos) != 0 {
            let mut chosen = best_pos;
            let lo_r = best_rank.saturating_sub(TIE_WINDOW).max(base);
            let hi_r = best_rank.saturating_add(TIE_WINDOW + 1).min(end);
            // Ranks sharing best_len with the needle form a contiguous run around best_rank.
            let mut r = best_rank;
            while r > lo_r {
                r -= 1;
                let p = self.sa.get(r);
                if common_prefix(self.old.get(p..).unwrap_or_default(), needle) < best_len {
                    break;
                }
                if dist(p) < dist(chosen) {
                    chosen = p;
                }
            }
            let mut r = best_rank + 1;
            while r < hi_r {
                let p = self.sa.get(r);
                if common_prefix(self.old.get(p..).unwrap_or_default(), needle) < best_len {
                    break;
                }
                if dist(p) < dist(chosen) {
                    chosen = p;
                }
                r += 1;
            }
            best_pos = chosen;
        }
        (best_pos, best_len)
    }

    pub(crate) fn old(&self) -> &'a [u8] {
        self.old
    }
}

/// Window length of the filter. A new match is only accepted when it is longer
/// than the current alignment's score plus 8, so where no 8-byte window of the
/// new file occurs in the old one, the suffix-array lookup can be skipped.
pub(crate) const GRAM: usize = 8;

/// A bitmap of hashed 8-byte windows of the old file: a clear bit proves that a
/// window occurs nowhere in it. About one byte per byte of old.
#[derive(Default)]
pub(crate) struct GramFilter {
    bits: Vec<u64>,
    nbits: u64,
}

impl GramFilter {
    pub(crate) fn build(old: &[u8]) -> GramFilter {
        if old.len() < GRAM {
            return GramFilter::default();
        }
        // Eight bits per window: one byte per byte of old, about 12% false positives.
        let words = (old.len() / 8).max(1 << 10);
        let mut bits = vec![0u64; words];
        let nbits = (words as u64) * 64;
        for w in old.windows(GRAM) {
            let h = gram_hash(w, nbits);
            if let Some(word) = bits.get_mut(h >> 6) {
                *word |= 1u64 << (h & 63);
            }
        }
        GramFilter { bits, nbits }
    }

    #[inline]
    fn may_contain(&self, needle: &[u8]) -> bool {
        if self.bits.is_empty() || needle.len() < GRAM {
            return true;
        }
        let h = gram_hash(&needle[..GRAM], self.nbits);
        self.bits
            .get(h >> 6)
            .is_none_or(|word| word & (1u64 << (h & 63)) != 0)
    }
}

/// Maps a window to a bit index below `nbits` (multiply, then scale the high half).
#[inline]
fn gram_hash(w: &[u8], nbits: u64) -> usize {
    let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
    let h = v.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (v >> 29);
    ((u128::from(h.wrapping_mul(0xBF58_476D_1CE4_E5B9)) * u128::from(nbits)) >> 64) as usize
}

fn key(text: &[u8], i: usize) -> usize {
    let a = text.get(i).copied().unwrap_or(0);
    let b = text.get(i + 1).copied().unwrap_or(0);
    (usize::from(a) << 8) | usize::from(b)
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

#[inline]
fn eq_at(old: &[u8], o: isize, new: &[u8], n: usize) -> bool {
    match (usize::try_from(o).ok().and_then(|o| old.get(o)), new.get(n)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Scans `new[start..end]` and returns operations covering exactly that range.
pub(crate) fn scan_chunk(index: &Index<'_>, new: &[u8], start: usize, end: usize) -> Vec<Op> {
    let old = index.old();
    let old_len = old.len();
    let mut ops = Vec::new();
    let mut scan = start;
    let mut len = 0usize;
    let mut pos = 0usize;
    let mut last_scan = start;
    let mut last_pos = start.min(old_len);
    let mut last_offset: isize = 0;
    while scan < end {
        let mut old_score: usize = 0;
        scan += len;
        let mut scsc = scan;
        while scan < end {
            let prefer = (scan as isize + last_offset).max(0) as usize;
            let needle = &new[scan..end];
            if index.may_match(needle) {
                let (p, l) = index.search(needle, prefer);
                pos = p;
                len = l;
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
            // Grow the previous alignment forwards while at least half agrees.
            let (mut s, mut sf, mut lenf) = (0isize, 0isize, 0usize);
            let mut i = 0usize;
            while last_scan + i < scan_end && last_pos + i < old_len {
                if old[last_pos + i] == new[last_scan + i] {
                    s += 1;
                }
                i += 1;
                if s * 2 - i as isize > sf * 2 - lenf as isize {
                    sf = s;
                    lenf = i;
                }
            }
            // Grow the new match backwards likewise.
            let mut lenb = 0usize;
            if scan < end {
                let (mut s, mut sb) = (0isize, 0isize);
                let mut i = 1usize;
                while scan >= last_scan + i && pos >= i {
                    if old[pos - i] == new[scan - i] {
                        s += 1;
                    }
                    if s * 2 - i as isize > sb * 2 - lenb as isize {
                        sb = s;
                        lenb = i;
                    }
                    i += 1;
                }
            }
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
    }
    // Drop empty operations (possible at a chunk start).
    ops.retain(|op| op.add_len + op.extra_len > 0);
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(old: &[u8], needle: &[u8]) -> usize {
        (0..old.len())
            .map(|p| common_prefix(&old[p..], needle))
            .max()
            .unwrap_or(0)
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
        let idx = Index::new(&old, SuffixArray::build(&old).unwrap());
        for _ in 0..500 {
            let s = (rnd() as usize) % 2900;
            let mut needle = old[s..s + 50].to_vec();
            let k = (rnd() as usize) % 50;
            needle[k] ^= 1;
            let (p, l) = idx.search(&needle, 0);
            assert_eq!(l, brute(&old, &needle));
            assert_eq!(common_prefix(&old[p..], &needle), l);
        }
    }
}
