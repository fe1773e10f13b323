//! Hash chains of an old file's 8-byte windows: the matcher's lookup
//! structure for old files of up to [`CHAIN_MAX_OLD`] bytes below level 20,
//! where a suffix array cost most of the diff. (Levels 20-22, the smallest
//! patches, keep suffix arrays, whose matches are the longest.)
//!
//! Every position whose window (the [`GRAM`] bytes starting there) hashes
//! to a slot is linked, newest first, from that slot. A lookup walks the
//! chain of the needle's first window, at most [`CHAIN_MAX`] positions,
//! measures each one's match against the needle and keeps the longest,
//! the one nearest the current alignment among equals. Unlike the suffix
//! array's, the answer is the longest match only when the chain is shorter
//! than the cap; a window repeated more often than that (padding, a common
//! instruction sequence) is searched among its newest occurrences. The
//! build is one pass with a multiplication and two stores a byte, where
//! the suffix-array index (libsais's sort and the filter) took 17-23 ms of
//! a 1 MB file's 33-50 ms diff.
//!
//! Highly repetitive files are why this is not used on larger files: in
//! OpenBLAS (35 MB of kernels repeated for each CPU model) most windows
//! occur thousands of times, and a capped chain finds short matches where
//! the sorted suffixes find long ones, so the scan looks up many more
//! positions (1.35x the suffix array's diff time at a cap of 256, 3.4x at
//! 64; docs/BENCHMARKS.md).

use super::matcher::{common_prefix, window_value, GRAM};

/// The largest old file looked up in hash chains; larger ones get suffix
/// arrays. The libraries of 0.3-8 MiB measured (the corpus's and five sets
/// of outside pairs, 2026-12-02) diff in 0.67-0.94x the time (11
/// interleaved rounds on six of them; libcrypto and libpython about 0.9x
/// in single runs), the patches within -3% and +0.5%; of those above, Chromium's pak and libgs were
/// faster too, but cryptography across a major version (13.7 MB) and
/// OpenBLAS (35 MB) slower.
pub(crate) const CHAIN_MAX_OLD: usize = 8 << 20;

/// The most positions a lookup examines. Of 32, 64 and 256, 256 made the
/// patches closest to the suffix array's (lxml 5.2.1 → 5.2.2: +0.2%, where
/// 64 made it +3.1% and 32 +4.5%; libcrypto +0.1%, +1.7%, +2.5%) at about
/// the same time on the libraries.
const CHAIN_MAX: usize = 256;

/// No position: the end of a chain.
const END: u32 = u32::MAX;

/// The chains of one part of the old file.
pub(crate) struct HashChain {
    /// The newest position of each slot's chain, or [`END`].
    head: Vec<u32>,
    /// The next (older) position of the same slot, by position, or [`END`].
    prev: Vec<u32>,
    /// `64 - log2(slots)`: a window's slot is the top bits of its hash.
    shift: u32,
}

impl HashChain {
    /// The chains of `text`, which must be shorter than 2^32 bytes (the
    /// caller's [`CHAIN_MAX_OLD`]); about one slot per byte, at least 2^12
    /// and at most 2^24.
    pub(crate) fn build(text: &[u8]) -> HashChain {
        let bits = (usize::BITS - 1 - text.len().max(1).leading_zeros()).clamp(12, 24);
        let mut chain = HashChain {
            head: vec![END; 1 << bits],
            prev: vec![END; text.len()],
            shift: 64 - bits,
        };
        for (i, w) in text.windows(GRAM).enumerate() {
            let slot = chain.slot(window_value(w));
            let Ok(at) = u32::try_from(i) else {
                break;
            };
            if let (Some(head), Some(prev)) = (chain.head.get_mut(slot), chain.prev.get_mut(i)) {
                *prev = *head;
                *head = at;
            }
        }
        chain
    }

    /// The slot of a window whose [`window_value`] is `v`.
    #[inline]
    fn slot(&self, v: u64) -> usize {
        (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The longest match of a prefix of `needle` in `text` among the first
    /// [`CHAIN_MAX`] positions of its first window's chain: `(pos, len)`,
    /// `pos` counted from `text`'s start plus `start`; among equally long
    /// ones the nearest to `prefer`. `(0, 0)` for a needle shorter than a
    /// window, or none found.
    pub(crate) fn search(
        &self,
        text: &[u8],
        needle: &[u8],
        start: usize,
        prefer: usize,
    ) -> (usize, usize) {
        let Some(w) = needle.get(..GRAM) else {
            return (0, 0);
        };
        let mut at = self
            .head
            .get(self.slot(window_value(w)))
            .copied()
            .unwrap_or(END);
        let dist = |p: usize| (start + p).abs_diff(prefer);
        let (mut best_pos, mut best_len) = (0usize, 0usize);
        let mut seen = 0;
        while at != END && seen < CHAIN_MAX {
            seen += 1;
            let p = at as usize;
            at = self.prev.get(p).copied().unwrap_or(END);
            // A position can equal the best only if it agrees at the best's
            // last byte: one comparison rejects most of a long chain.
            if best_len > 0 && text.get(p + best_len - 1) != needle.get(best_len - 1) {
                continue;
            }
            let len = common_prefix(text.get(p..).unwrap_or_default(), needle);
            if len > best_len || (len == best_len && len > 0 && dist(p) < dist(best_pos)) {
                (best_pos, best_len) = (p, len);
            }
        }
        (start + best_pos, best_len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::matcher::tests::brute;
    use super::*;

    /// Where no window repeats more often than the cap, the chain finds
    /// the longest match, as a full search does.
    #[test]
    fn finds_the_longest_match_in_short_chains() {
        let mut rnd = crate::test_rng(5);
        let text: Vec<u8> = (0..60_000).map(|_| (rnd() % 7) as u8).collect();
        let chain = HashChain::build(&text);
        for _ in 0..300 {
            let at = rnd() as usize % (text.len() - 100);
            let mut needle = text[at..at + 40 + rnd() as usize % 50].to_vec();
            let k = rnd() as usize % needle.len();
            needle[k] ^= 1 + (rnd() % 3) as u8;
            let (pos, len) = chain.search(&text, &needle, 0, 0);
            let want = brute(&text, &needle);
            if want >= GRAM && needle.len() >= GRAM {
                assert_eq!(len, want);
                assert_eq!(common_prefix(&text[pos..], &needle), len);
            }
        }
    }

    /// Among equally long matches the nearest to `prefer` wins, and
    /// positions count from the part's start.
    #[test]
    fn prefers_the_match_nearest_the_alignment() {
        let block = b"0123456789abcdefXYZ";
        let mut text = Vec::new();
        for k in 0..5u8 {
            text.extend_from_slice(block);
            text.extend_from_slice(&[k; 13]);
        }
        let chain = HashChain::build(&text);
        let stride = block.len() + 13;
        for k in 0..5 {
            let prefer = 1000 + k * stride + 2;
            assert_eq!(
                chain.search(&text, block, 1000, prefer),
                (1000 + k * stride, block.len())
            );
        }
        assert_eq!(chain.search(&text, b"0123", 0, 0), (0, 0), "under a window");
        assert_eq!(chain.search(&text, b"zzzzzzzzzz", 0, 0), (0, 0));
    }

    /// A window repeated past the cap is searched among its newest
    /// occurrences only: the longest match, 20 zeros and "tail" at the end
    /// of the first run, lies thousands of positions down the zeros' chain,
    /// and the walk stops at 20 zeros of the second run.
    #[test]
    fn a_long_chain_is_capped() {
        let mut text = vec![0u8; 10_000];
        text.extend_from_slice(b"tail");
        text.extend(std::iter::repeat_n(0u8, 5_000));
        let chain = HashChain::build(&text);
        let needle = [vec![0u8; 20], b"tail".to_vec()].concat();
        assert_eq!(brute(&text, &needle), 24);
        let (pos, len) = chain.search(&text, &needle, 0, 0);
        assert_eq!(len, 20);
        assert!(pos > 10_004, "in the second run: {pos}");
        assert_eq!(common_prefix(&text[pos..], &needle), len);
        assert_eq!(
            HashChain::build(b"short").search(b"short", b"shortish", 0, 0),
            (0, 0)
        );
    }
}
