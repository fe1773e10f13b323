//! Transforms 2, 4 and 8 (docs/FORMAT.md): references in copied bytes,
//! predicted through a map of where the old file's bytes went. Transform 2
//! predicts x86 displacements, transform 4 absolute pointers, transform 8
//! AArch64 branches and page addresses.
//!
//! When code moves, every instruction that refers to it across the move
//! changes: the 32-bit displacement of a call, a jump or a RIP-relative
//! load differs by how far the target moved relative to the instruction.
//! A copy then carries one delta per such reference, and in a recompiled
//! library those deltas are most of the patch.
//!
//! The patch carries a map from old positions to their shift (new position
//! minus old), piecewise constant: the writer builds it from its copies. For
//! each copied byte that lies in the displacement of a *site* (an `E8`/`E9`
//! opcode, or one of the opcodes below with a RIP-relative ModRM byte), both
//! writer and reader replace the old byte with the *predicted* one: the
//! displacement as it would be if the target had moved by the map's shift at
//! the target and the instruction by the copy's shift. Deltas are then taken
//! against the predicted bytes: a reference whose target moved as the map
//! says needs none.
//!
//! Data holds references too: pointer tables, vtables and relocation
//! addends are absolute addresses, which in a shared library are mostly file
//! offsets. With transform 4, every 8-aligned old `u64` whose value lies in
//! the old file (from 4096 up) is predicted as that value plus the map's
//! shift there.
//!
//! AArch64 code refers the same way with whole instruction words: a `B` or
//! `BL` holds the distance to its target in words, and an `ADRP` the
//! distance to its target's 4 KiB page, the instruction after it (an `ADD`
//! or a load or store on the same register) the offset within the page.
//! With transform 8 both sides predict those words as the map says the
//! targets moved.
//!
//! The prediction of a byte depends only on the old bytes from seven before
//! it to seven after it, the map and the copy's shift, so the reader
//! computes it for any piece of a copy, whatever the writer's or the
//! reader's buffers.
//! Only old bytes are predicted, so the rule needs no inverse and cannot fail:
//! a bad guess costs a delta, never a wrong result.

use crate::error::{Error, FormatErrorKind};
#[cfg(feature = "diff")]
use crate::format::{put_varint, zigzag_encode};
use crate::format::{zigzag_decode, SliceReader};

/// The most decoded bytes a reference map may have (`LimitExceeded` above
/// it): at least two bytes per entry, so at most 2^19 entries of 16 bytes
/// (8 MiB) in memory.
pub(crate) const MAP_MAX_RAW: u64 = 1 << 20;

/// Old bytes before a predicted byte that its prediction may read: 35 for
/// an AArch64 instruction that uses the register of an `ADRP`
/// [`A64_REACH`] instructions before it (seven for a pointer; an opcode, a
/// ModRM byte and three bytes of displacement: five).
pub(crate) const LOOK_BEHIND: u64 = 35;
/// Old bytes a displacement site may start before a byte it covers: an
/// opcode and a ModRM byte before the displacement's four bytes.
const DISPLACEMENT_REACH: u64 = 5;

/// Instructions an AArch64 `ADRP` and one that uses its register may lie
/// apart, at most. On the nine arm64 pairs of docs/BENCHMARKS.md, 8 made
/// patches 0.1-7.1% smaller than 3, and 12 at most 0.1% smaller than 8
/// (with 1, only the next instruction, they were 1-88% larger than with 8).
const A64_REACH: u64 = 8;

/// Old bytes after a predicted byte that its prediction may read: 35 for an
/// `ADRP` whose register is used [`A64_REACH`] instructions later (seven
/// for a pointer; three of a displacement: four with its end).
pub(crate) const LOOK_AHEAD: u64 = 35;

const _: () = assert!(DISPLACEMENT_REACH <= LOOK_BEHIND);
const _: () = assert!(4 * A64_REACH + 3 <= LOOK_BEHIND && 4 * A64_REACH + 3 <= LOOK_AHEAD);

/// Transform bit of the displacement sites (`TRANSFORM_REFS`).
pub(crate) const DISPLACEMENTS: u8 = crate::format::TRANSFORM_REFS;
/// Transform bit of the pointer sites (`TRANSFORM_POINTERS`).
pub(crate) const POINTERS: u8 = crate::format::TRANSFORM_POINTERS;
/// Transform bit of the AArch64 sites (`TRANSFORM_A64`).
pub(crate) const A64: u8 = crate::format::TRANSFORM_A64;
/// The transform bits that put a reference map after the header.
pub(crate) const MAPPED: u8 = DISPLACEMENTS | POINTERS | A64;

/// Pointer sites hold values from here up: smaller ones are counts, sizes
/// and flags more often than addresses. Against 4096 on six pairs, 65,536
/// was 0.04-0.8% smaller on three (libc the most) and 256 0.2% larger on
/// one (2026-11-30); 4096 keeps pointer sites in files under 64 KiB.
const POINTER_MIN: u64 = 4096;

/// Site kinds by the byte at the site: 1 = `E8`/`E9` (displacement at +1),
/// 2 = an opcode whose ModRM byte, when RIP-relative, puts a displacement
/// at +2.
const SITE: [u8; 256] = {
    let mut t = [0u8; 256];
    t[0xE8] = 1;
    t[0xE9] = 1;
    // ALU r/m,r and r,r/m; test, xchg, mov, lea, movsxd; the FF group (call,
    // jmp, push through memory); mov, ALU and cmp with an immediate (their
    // target is off by the immediate's length, which the map rarely sees);
    // and the second bytes of common 0F opcodes (SSE moves and arithmetic,
    // movzx, movsx).
    let rip: [u8; 48] = [
        0x01, 0x03, 0x09, 0x0B, 0x10, 0x11, 0x13, 0x19, 0x1B, 0x21, 0x23, 0x28, 0x29, 0x2B, 0x2E,
        0x2F, 0x31, 0x33, 0x39, 0x3B, 0x54, 0x57, 0x58, 0x59, 0x5C, 0x5E, 0x63, 0x6F, 0x7E, 0x7F,
        0x80, 0x81, 0x83, 0x85, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D, 0xB6, 0xB7, 0xBE, 0xBF, 0xC6,
        0xC7, 0xD6, 0xFF,
    ];
    let mut i = 0;
    while i < rip.len() {
        if t[rip[i] as usize] == 0 {
            t[rip[i] as usize] = 2;
        }
        i += 1;
    }
    t
};

/// One bit per position of `block[..16]` that may be a site: an `E8`/`E9`
/// byte, or a byte followed by a RIP-relative ModRM byte. [`displacement_at`]
/// decides.
#[inline]
fn maybe_sites(block: &[u8; 17]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::maybe_sites(block)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        maybe_sites_portable(block)
    }
}

/// [`maybe_sites`] a byte at a time.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn maybe_sites_portable(block: &[u8; 17]) -> u32 {
    let mut mask = 0u32;
    for (k, (&b0, &b1)) in block.iter().zip(&block[1..]).enumerate() {
        let maybe = (b0 & 0xFE == 0xE8) | (b1 & 0xC7 == 0x05);
        mask |= u32::from(maybe) << k;
    }
    mask
}

/// [`maybe_sites`] with SSE2, part of the x86-64 baseline: sixteen bytes
/// compared at once. This module holds the reader's only unsafe code: two
/// unaligned 16-byte loads from inside a 17-byte array.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    #[inline]
    pub(super) fn maybe_sites(block: &[u8; 17]) -> u32 {
        let (_, next) = block.split_at(1);
        // SAFETY: `block` has 17 bytes, so `block[0..16]` and `block[1..17]`
        // (`next`, 16 bytes) are in bounds; `_mm_loadu_si128` reads 16 bytes
        // with no alignment requirement. SSE2 is in the x86-64 baseline, so
        // every intrinsic here is available.
        unsafe {
            let a = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            let b = _mm_loadu_si128(next.as_ptr().cast::<__m128i>());
            let call = _mm_cmpeq_epi8(
                _mm_and_si128(a, _mm_set1_epi8(0xFEu8 as i8)),
                _mm_set1_epi8(0xE8u8 as i8),
            );
            let rip = _mm_cmpeq_epi8(
                _mm_and_si128(b, _mm_set1_epi8(0xC7u8 as i8)),
                _mm_set1_epi8(0x05),
            );
            _mm_movemask_epi8(_mm_or_si128(call, rip)) as u32
        }
    }
}

/// Where the displacement of a site at `b0` (followed by `b1`) starts,
/// relative to the site; `None` if `b0` is no site.
#[inline]
fn displacement_at(b0: u8, b1: u8) -> Option<u64> {
    match SITE[usize::from(b0)] {
        1 => Some(1),
        2 if b1 & 0xC7 == 0x05 => Some(2),
        _ => None,
    }
}

/// Whether `w` is an AArch64 `ADRP`.
#[inline]
fn is_adrp(w: u32) -> bool {
    w & 0x9F00_0000 == 0x9000_0000
}

/// If `n` adds to or loads or stores through register `r` (an AArch64 `ADD`
/// immediate, 64-bit and unshifted, or a load or store with an unsigned
/// 12-bit offset, whose base is `r`), the log2 of its offset's scale.
#[inline]
fn uses(n: u32, r: u32) -> Option<u32> {
    if (n >> 5) & 31 != r {
        None
    } else if n & 0xFFC0_0000 == 0x9100_0000 {
        Some(0)
    } else if n & 0x3B00_0000 == 0x3900_0000 {
        // size, or 4 for a 128-bit SIMD register (V set, opc 1x).
        let simd_q = (n >> 26) & 1 == 1 && (n >> 23) & 1 == 1;
        Some(if simd_q { 4 } else { n >> 30 })
    } else {
        None
    }
}

/// Some of the old file's bytes: `bytes` from old position `at`, in a file
/// of `old_len` bytes.
#[derive(Clone, Copy)]
pub(crate) struct OldWindow<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: u64,
    pub(crate) old_len: u64,
}

/// Where the old file's bytes went: from each break (an old position) up to
/// the next, new position = old position + shift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefMap {
    starts: Vec<u64>,
    shifts: Vec<i64>,
    /// For each bucket of `1 << bucket_log` old positions, how many breaks
    /// lie at or before its first position: where [`RefMap::shift_at`]'s
    /// search starts. At most [`INDEX_MAX`] + 1 entries.
    index: Vec<u32>,
    bucket_log: u32,
}

/// The most buckets of a map's index (256 KiB).
const INDEX_MAX: u64 = 1 << 16;

impl RefMap {
    /// A map from breaks sorted by position, strictly increasing, all below
    /// `old_len` (the writer's).
    #[cfg(feature = "diff")]
    pub(crate) fn from_breaks(breaks: &[(u64, i64)], old_len: u64) -> RefMap {
        RefMap::indexed(
            breaks.iter().map(|b| b.0).collect(),
            breaks.iter().map(|b| b.1).collect(),
            old_len,
        )
    }

    /// The map with its index, for an old file of `old_len` bytes.
    fn indexed(starts: Vec<u64>, shifts: Vec<i64>, old_len: u64) -> RefMap {
        let mut bucket_log = 12;
        while old_len >> bucket_log > INDEX_MAX {
            bucket_log += 1;
        }
        let buckets = (old_len >> bucket_log) + 1;
        let mut index = Vec::with_capacity(buckets as usize + 1);
        let mut k = 0usize;
        for b in 0..=buckets {
            let first = b << bucket_log;
            while starts.get(k).is_some_and(|&s| s <= first) {
                k += 1;
            }
            index.push(u32::try_from(k).unwrap_or(u32::MAX));
        }
        RefMap {
            starts,
            shifts,
            index,
            bucket_log,
        }
    }

    /// Breaks in the map.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether any break has a shift other than zero.
    #[cfg(feature = "diff")]
    pub(crate) fn moves(&self) -> bool {
        self.shifts.iter().any(|&s| s != 0)
    }

    /// The map's bytes: per break, a varint of its distance from the one
    /// before (from 0 for the first) and a zigzag varint of its shift less
    /// the one before (less 0 for the first).
    #[cfg(feature = "diff")]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut at, mut last) = (0u64, 0i64);
        for (&s, &d) in self.starts.iter().zip(&self.shifts) {
            put_varint(&mut out, s.wrapping_sub(at));
            put_varint(&mut out, zigzag_encode(d.wrapping_sub(last)));
            (at, last) = (s, d);
        }
        out
    }

    /// Reads a map's decoded bytes (found at patch offset `at`) for an old
    /// file of `old_len` bytes. Every break after the first must be at least
    /// one byte after the one before, and every break must lie in the old
    /// file; shifts are checked sums.
    pub(crate) fn decode(bytes: &[u8], at: u64, old_len: u64) -> Result<RefMap, Error> {
        let mut r = SliceReader::new(bytes, at, "reference map");
        let mut starts = Vec::new();
        let mut shifts = Vec::new();
        let (mut pos, mut last) = (0u64, 0i64);
        while !r.is_empty() {
            let gap = r.read_varint()?;
            let delta = zigzag_decode(r.read_varint()?);
            if !starts.is_empty() && gap == 0 {
                return Err(r.err(FormatErrorKind::OutOfRange));
            }
            pos = pos
                .checked_add(gap)
                .ok_or_else(|| r.err(FormatErrorKind::Overflow))?;
            if pos >= old_len {
                return Err(r.err(FormatErrorKind::OutOfRange));
            }
            last = last
                .checked_add(delta)
                .ok_or_else(|| r.err(FormatErrorKind::Overflow))?;
            starts.push(pos);
            shifts.push(last);
        }
        Ok(RefMap::indexed(starts, shifts, old_len))
    }

    /// The shift at old position `t`: that of the last break at or before it.
    #[inline]
    fn shift_at(&self, t: u64) -> Option<i64> {
        // The breaks at or before `t` are those at or before its bucket's
        // start and some of the bucket's own.
        let b = usize::try_from(t >> self.bucket_log).ok()?;
        let lo = self.index.get(b).map_or(0, |&k| k as usize);
        let hi = self
            .index
            .get(b + 1)
            .map_or(self.starts.len(), |&k| k as usize);
        let within = self.starts.get(lo..hi).unwrap_or_default();
        let k = (lo + within.partition_point(|&s| s <= t)).checked_sub(1)?;
        self.shifts.get(k).copied()
    }

    /// Predicts the old bytes `out` stands for: `out` is filled with old
    /// bytes from old position `at`, predicted for a copy whose new position
    /// is `shift` bytes after its old one, with the site kinds `kinds`
    /// ([`DISPLACEMENTS`], [`POINTERS`], [`A64`]). `old` holds the old file's bytes
    /// from at most [`LOOK_BEHIND`] bytes before `at` (or the file's start)
    /// through [`LOOK_AHEAD`] bytes past `out`'s end (or the file's end).
    /// With a window shorter than that, sites near its edges are missed
    /// (never a panic).
    ///
    /// Pointers first: each 8-aligned old position `q` with `q + 8 ≤
    /// old_len`, whose eight bytes read as a little-endian `u64` `v` with
    /// `POINTER_MIN ≤ v < old_len`, where the map has a shift `e` at `v`
    /// and `v + e` fits a `u64`, has its bytes predicted as `v + e`.
    ///
    /// Then displacements: a site is an old position `q` whose byte and the
    /// next make [`displacement_at`] give `k`, with its four displacement
    /// bytes `q + k .. q + k + 4` inside the old file. Each byte a site
    /// covers takes the first site (lowest `q`) that covers it; with `w`
    /// those four bytes read as a little-endian `i32` and `t = q + k + 4 +
    /// w`, if `0 ≤ t < old_len` and the map has a shift `e` at `t`, the
    /// displacement is predicted as `v = w + e − shift` when `v` fits an
    /// `i32`, written the same way; otherwise the byte keeps what the pointer
    /// pass left (the old byte, if no pointer covers it).
    ///
    /// Last the AArch64 words (FORMAT.md gives the rule), over what the
    /// passes before left. Every pass reads the old bytes as they are.
    pub(crate) fn predict(
        &self,
        kinds: u8,
        old: OldWindow<'_>,
        out: &mut [u8],
        at: u64,
        shift: i64,
    ) {
        if kinds & POINTERS != 0 {
            self.predict_pointers(old, out, at);
        }
        if kinds & DISPLACEMENTS != 0 {
            self.predict_displacements(old, out, at, shift);
        }
        if kinds & A64 != 0 {
            self.predict_a64(old, out, at, shift);
        }
    }

    /// The pointer pass of [`RefMap::predict`].
    fn predict_pointers(&self, old: OldWindow<'_>, out: &mut [u8], at: u64) {
        let OldWindow {
            bytes: win,
            at: win_at,
            old_len,
        } = old;
        let end = at.saturating_add(out.len() as u64);
        // The first 8-aligned position whose eight bytes reach `at`.
        let mut q = at.saturating_sub(7).div_ceil(8).saturating_mul(8);
        while q < end {
            let bytes = q
                .checked_sub(win_at)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| win.get(i..i.checked_add(8)?))
                .and_then(|b| <[u8; 8]>::try_from(b).ok());
            if let Some(bytes) = bytes.filter(|_| q.saturating_add(8) <= old_len) {
                let v = u64::from_le_bytes(bytes);
                let predicted = (POINTER_MIN..old_len)
                    .contains(&v)
                    .then(|| self.shift_at(v))
                    .flatten()
                    .and_then(|e| v.checked_add_signed(e));
                if let Some(p) = predicted {
                    let p = p.to_le_bytes();
                    for x in q.max(at)..q.saturating_add(8).min(end) {
                        let (Some(slot), Some(&b)) =
                            (out.get_mut((x - at) as usize), p.get((x - q) as usize))
                        else {
                            break;
                        };
                        *slot = b;
                    }
                }
            }
            q = q.saturating_add(8);
        }
    }

    /// The displacement pass of [`RefMap::predict`].
    fn predict_displacements(&self, old: OldWindow<'_>, out: &mut [u8], at: u64, shift: i64) {
        let OldWindow {
            bytes: win,
            at: win_at,
            old_len,
        } = old;
        let Some(start) = at.checked_sub(win_at) else {
            return;
        };
        let end = at.saturating_add(out.len() as u64);
        // Sites that can cover `out` start at most `DISPLACEMENT_REACH`
        // bytes before it.
        let first = start.saturating_sub(DISPLACEMENT_REACH);
        // The first old position not yet covered by a site.
        let mut free = 0u64;
        let mut i = usize::try_from(first).unwrap_or(usize::MAX);
        let last = usize::try_from(end.saturating_sub(win_at)).unwrap_or(usize::MAX);
        let mut visit = |i: usize| {
            let (Some(&b0), Some(&b1)) = (win.get(i), win.get(i + 1)) else {
                return;
            };
            let Some(k) = displacement_at(b0, b1) else {
                return;
            };
            let d = win_at.saturating_add(i as u64).saturating_add(k);
            let d_end = d.saturating_add(4);
            if d_end > old_len {
                return;
            }
            let Some(disp) = win
                .get((d - win_at) as usize..)
                .and_then(|s| s.get(..4))
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
            else {
                return;
            };
            // Bytes of this displacement not covered by an earlier site, and in `out`.
            let from = d.max(free).max(at);
            let to = d_end.min(end);
            free = free.max(d_end);
            if from >= to {
                return;
            }
            if let Some(v) = self.predicted(disp, d_end, old_len, shift) {
                for p in from..to {
                    let (Some(slot), Some(&b)) =
                        (out.get_mut((p - at) as usize), v.get((p - d) as usize))
                    else {
                        break;
                    };
                    *slot = b;
                }
            }
        };
        // Sixteen positions at a time, visiting only those that may be sites.
        while i < last {
            let Some(block) = win
                .get(i..i + 17)
                .and_then(|b| <&[u8; 17]>::try_from(b).ok())
            else {
                break;
            };
            let mut mask = maybe_sites(block);
            if last - i < 16 {
                mask &= (1u32 << (last - i)) - 1;
            }
            while mask != 0 {
                visit(i + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
            i += 16;
        }
        while i < last {
            visit(i);
            i += 1;
        }
    }

    /// The predicted displacement bytes of a site whose displacement `disp`
    /// ends at old position `d_end`, in a copy shifted by `shift`.
    #[inline]
    fn predicted(&self, disp: [u8; 4], d_end: u64, old_len: u64, shift: i64) -> Option<[u8; 4]> {
        let w = i64::from(i32::from_le_bytes(disp));
        let t = i64::try_from(d_end).ok()?.checked_add(w)?;
        let t = u64::try_from(t).ok().filter(|&t| t < old_len)?;
        let e = self.shift_at(t)?;
        let v = w.checked_add(e)?.checked_sub(shift)?;
        Some(i32::try_from(v).ok()?.to_le_bytes())
    }

    /// The AArch64 pass of [`RefMap::predict`]: every word that overlaps
    /// `out`, each on its own (reading up to [`A64_REACH`] words either side).
    fn predict_a64(&self, old: OldWindow<'_>, out: &mut [u8], at: u64, shift: i64) {
        let end = at.saturating_add(out.len() as u64);
        let word = |q: u64| {
            q.checked_sub(old.at)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| old.bytes.get(i..i.checked_add(4)?))
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .filter(|_| q.saturating_add(4) <= old.old_len)
                .map(u32::from_le_bytes)
        };
        let mut put = |q: u64, w: u32| {
            for x in q.max(at)..q.saturating_add(4).min(end) {
                let (Some(slot), Some(&b)) = (
                    out.get_mut((x - at) as usize),
                    w.to_le_bytes().get((x - q) as usize),
                ) else {
                    break;
                };
                *slot = b;
            }
        };
        let mut q = at - at % 4;
        while q < end {
            if let Some(w) = word(q) {
                let predicted = if is_adrp(w) {
                    // The first instruction after it that adds to or loads
                    // through its register, unless one that may set that
                    // register comes first.
                    let r = w & 31;
                    (1..=A64_REACH)
                        .map_while(|k| word(q.checked_add(4 * k)?))
                        .find(|&n| n & 31 == r || uses(n, r).is_some())
                        .filter(|&n| uses(n, r).is_some())
                        .and_then(|n| self.predicted_adrp(w, n, q, old.old_len, shift))
                } else if let Some(scale) = uses(w, (w >> 5) & 31) {
                    // The ADRP that set its base register, if nothing that
                    // may set it comes between.
                    let r = (w >> 5) & 31;
                    (1..=A64_REACH)
                        .map_while(|k| {
                            let p = q.checked_sub(4 * k)?;
                            Some((p, word(p)?))
                        })
                        .find(|&(_, p)| p & 31 == r)
                        .filter(|&(_, p)| is_adrp(p))
                        .and_then(|(p, adrp)| self.predicted_low(adrp, p, w, scale, old.old_len))
                } else {
                    self.predicted_branch(w, q, old.old_len, shift)
                };
                if let Some(v) = predicted {
                    put(q, v);
                }
            }
            q = q.saturating_add(4);
        }
    }

    /// The predicted word of a `B` or `BL` instruction `w` at old position
    /// `q`, in a copy shifted by `shift`.
    #[inline]
    fn predicted_branch(&self, w: u32, q: u64, old_len: u64, shift: i64) -> Option<u32> {
        if w & 0x7C00_0000 != 0x1400_0000 {
            return None;
        }
        // imm26, sign-extended: the distance to the target in words.
        let imm = i64::from(((w << 6) as i32) >> 6);
        let t = i64::try_from(q).ok()?.checked_add(imm.checked_mul(4)?)?;
        let t = u64::try_from(t).ok().filter(|&t| t < old_len)?;
        let moved = self.shift_at(t)?.checked_sub(shift)?;
        if moved % 4 != 0 {
            return None;
        }
        let v = imm.checked_add(moved / 4)?;
        if !(-(1 << 25)..1 << 25).contains(&v) {
            return None;
        }
        Some((w & 0xFC00_0000) | (v as u32 & 0x03FF_FFFF))
    }

    /// The old target of the `ADRP` `w` at old position `q` with the
    /// instruction `n` that adds to or loads through its register, whose
    /// offset has the scale `2^scale`.
    fn adrp_target(w: u32, q: u64, n: u32, scale: u32, old_len: u64) -> Option<i64> {
        // immhi:immlo, sign-extended: the distance to the target's page in pages.
        let pages = ((((w >> 5) & 0x7_FFFF) << 2) | ((w >> 29) & 3)) as i32;
        let pages = i64::from((pages << 11) >> 11);
        let low = i64::from(((n >> 10) & 0xFFF) << scale);
        let t = (i64::try_from(q).ok()? & !0xFFF)
            .checked_add(pages.checked_mul(4096)?)?
            .checked_add(low)?;
        u64::try_from(t).is_ok_and(|t| t < old_len).then_some(t)
    }

    /// The predicted `ADRP` `w` at old position `q`, whose register `n`
    /// adds to or loads through, in a copy shifted by `shift`.
    fn predicted_adrp(&self, w: u32, n: u32, q: u64, old_len: u64, shift: i64) -> Option<u32> {
        let t = Self::adrp_target(w, q, n, uses(n, w & 31)?, old_len)?;
        let t = t.checked_add(self.shift_at(t as u64)?)?;
        let here = i64::try_from(q).ok()?.checked_add(shift)?;
        let pages = (t & !0xFFF).checked_sub(here & !0xFFF)? >> 12;
        if !(-(1 << 20)..1 << 20).contains(&pages) {
            return None;
        }
        let pages = pages as u32 & 0x1F_FFFF;
        Some((w & 0x9F00_001F) | ((pages & 3) << 29) | ((pages >> 2) << 5))
    }

    /// The predicted instruction `n` (offset scale `2^scale`) that adds to or
    /// loads through the register of the `ADRP` `w` at old position `q`.
    fn predicted_low(&self, w: u32, q: u64, n: u32, scale: u32, old_len: u64) -> Option<u32> {
        let t = Self::adrp_target(w, q, n, scale, old_len)?;
        let low = (t.checked_add(self.shift_at(t as u64)?)? & 0xFFF) as u32;
        (low % (1 << scale) == 0).then_some((n & !(0xFFF << 10)) | ((low >> scale) << 10))
    }
}

/// The writer's side: `old[o .. o + len]` as predicted with the site kinds
/// `kinds` for a copy shifted by `shift`, into `out` (cleared first).
#[cfg(feature = "diff")]
pub(crate) fn predict_range(
    map: &RefMap,
    kinds: u8,
    old: &[u8],
    o: usize,
    len: usize,
    shift: i64,
    out: &mut Vec<u8>,
) {
    let end = o.saturating_add(len).min(old.len());
    out.clear();
    out.resize(end.saturating_sub(o), 0);
    predict_into(map, kinds, old, o, shift, out);
}

/// [`predict_range`] into a slice: `out` is filled with `old[o..]` as
/// predicted (as much of it as `old` holds; the rest is left alone).
#[cfg(feature = "diff")]
pub(crate) fn predict_into(
    map: &RefMap,
    kinds: u8,
    old: &[u8],
    o: usize,
    shift: i64,
    out: &mut [u8],
) {
    let end = o.saturating_add(out.len()).min(old.len());
    if let (Some(src), Some(dst)) = (old.get(o..end), out.get_mut(..end.saturating_sub(o))) {
        dst.copy_from_slice(src);
    }
    let win_at = o.saturating_sub(LOOK_BEHIND as usize);
    let win_end = end.saturating_add(LOOK_AHEAD as usize).min(old.len());
    let window = OldWindow {
        bytes: old.get(win_at..win_end).unwrap_or_default(),
        at: win_at as u64,
        old_len: old.len() as u64,
    };
    map.predict(kinds, window, out, o as u64, shift);
}

#[cfg(all(test, feature = "diff"))]
mod tests {
    use super::*;

    fn kind(r: Result<RefMap, Error>) -> FormatErrorKind {
        match r {
            Err(Error::Format(e)) => e.kind(),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    /// Transform 8's prediction of byte `p`, from the rule in FORMAT.md.
    fn naive_a64(map: &RefMap, old: &[u8], p: usize, shift: i64) -> Option<u8> {
        let len = old.len() as i128;
        let word = |q: i128| {
            (q >= 0 && q + 4 <= len).then(|| {
                let q = q as usize;
                u32::from_le_bytes(old[q..q + 4].try_into().unwrap())
            })
        };
        let shift_at = |t: i128| {
            (0..len)
                .contains(&t)
                .then(|| map.shift_at(t as u64))
                .flatten()
                .map(i128::from)
        };
        let is_adrp = |w: u32| (w >> 24) & 0x9F == 0x90;
        // The scale of a word that uses register `r`.
        let uses = |w: u32, r: u32| -> Option<u32> {
            if (w >> 5) & 31 != r {
                return None;
            }
            if w >> 22 == 0x244 {
                Some(0)
            } else if (w >> 24) & 0x3B == 0x39 {
                Some(if (w >> 26) & 1 == 1 && (w >> 23) & 1 == 1 {
                    4
                } else {
                    w >> 30
                })
            } else {
                None
            }
        };
        let page = |x: i128| x.div_euclid(4096) * 4096;
        // The moved target of ADRP `a` at `at` through `n` (scale `z`).
        let moved = |a: u32, at: i128, n: u32, z: u32| -> Option<i128> {
            let mut pages = i128::from(((a >> 5) & 0x7FFFF) * 4 + ((a >> 29) & 3));
            if pages >= 1 << 20 {
                pages -= 1 << 21;
            }
            let t = page(at) + 4096 * pages + (i128::from((n >> 10) & 0xFFF) << z);
            Some(t + shift_at(t)?)
        };
        let q = (p - p % 4) as i128;
        let w = word(q)?;
        let s = i128::from(shift);
        let predicted = if is_adrp(w) {
            let r = w & 31;
            let n = (1..=8)
                .filter_map(|k| word(q + 4 * k))
                .find(|&n| n & 31 == r || uses(n, r).is_some())?;
            let t = moved(w, q, n, uses(n, r)?)?;
            let pages = (page(t) - page(q + s)) / 4096;
            if !(-(1 << 20)..1 << 20).contains(&pages) {
                return None;
            }
            let pages = pages.rem_euclid(1 << 21) as u32;
            (w & 0x9F00_001F) | ((pages % 4) << 29) | ((pages / 4) << 5)
        } else if let Some(z) = uses(w, (w >> 5) & 31) {
            let r = (w >> 5) & 31;
            let (at, a) = (1..=8)
                .filter_map(|k| word(q - 4 * k).map(|a| (q - 4 * k, a)))
                .find(|&(_, a)| a & 31 == r)?;
            if !is_adrp(a) {
                return None;
            }
            let low = moved(a, at, w, z)?.rem_euclid(4096);
            if low % (1 << z) != 0 {
                return None;
            }
            (w & !(0xFFF << 10)) | (((low >> z) as u32) << 10)
        } else {
            if (w >> 26) & 0x1F != 0x05 {
                return None;
            }
            let mut imm = i128::from(w & 0x03FF_FFFF);
            if imm >= 1 << 25 {
                imm -= 1 << 26;
            }
            let moved = shift_at(q + 4 * imm)? - s;
            if moved % 4 != 0 {
                return None;
            }
            let v = imm + moved / 4;
            if !(-(1 << 25)..1 << 25).contains(&v) {
                return None;
            }
            (w & 0xFC00_0000) | (v.rem_euclid(1 << 26) as u32)
        };
        Some(predicted.to_le_bytes()[p - q as usize])
    }

    /// Byte by byte from the rule in FORMAT.md, for comparison.
    fn naive(map: &RefMap, kinds: u8, old: &[u8], p: usize, shift: i64) -> u8 {
        if kinds & A64 != 0 {
            if let Some(b) = naive_a64(map, old, p, shift) {
                return b;
            }
        }
        let mut byte = old[p];
        let q = p - p % 8;
        if kinds & POINTERS != 0 && q + 8 <= old.len() {
            let v = u64::from_le_bytes(old[q..q + 8].try_into().unwrap());
            if (4096..old.len() as u64).contains(&v) {
                if let Some(w) = map.shift_at(v).and_then(|e| v.checked_add_signed(e)) {
                    byte = w.to_le_bytes()[p - q];
                }
            }
        }
        if kinds & DISPLACEMENTS == 0 {
            return byte;
        }
        for q in p.saturating_sub(5)..p {
            let (Some(&b0), Some(&b1)) = (old.get(q), old.get(q + 1)) else {
                continue;
            };
            let k = match (b0, b1 & 0xC7) {
                (0xE8 | 0xE9, _) => 1,
                (b, 0x05) if SITE[b as usize] == 2 => 2,
                _ => continue,
            };
            let d = q + k;
            if d + 4 > old.len() || !(d..d + 4).contains(&p) {
                continue;
            }
            let disp: [u8; 4] = old[d..d + 4].try_into().unwrap();
            return match map.predicted(disp, (d + 4) as u64, old.len() as u64, shift) {
                Some(v) => v[p - d],
                None => byte,
            };
        }
        byte
    }

    /// Code with calls and RIP-relative loads into the file, and 8-aligned
    /// pointers into it, between random bytes.
    fn code_like(n: usize, seed: u64) -> Vec<u8> {
        let mut next = crate::test_rng(seed);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            match next() % 6 {
                0 => {
                    v.push(0xE8);
                    let t = (next() % n as u64) as i64 - v.len() as i64 - 4;
                    v.extend_from_slice(&(t as i32).to_le_bytes());
                }
                1 => {
                    v.extend_from_slice(&[0x48, 0x8B, 0x05]);
                    let t = (next() % n as u64) as i64 - v.len() as i64 - 4;
                    v.extend_from_slice(&(t as i32).to_le_bytes());
                }
                2 => {
                    v.resize(v.len().next_multiple_of(8), 0);
                    v.extend_from_slice(&(next() % n as u64).to_le_bytes());
                }
                _ => v.push(next() as u8),
            }
        }
        v.truncate(n);
        v
    }

    /// AArch64-like code: `BL`s and `B`s into the file, `ADRP`s followed by
    /// an `ADD` or a load on the same register (or on another), pointers,
    /// and random words, all 4-aligned.
    fn a64_like(n: usize, seed: u64) -> Vec<u8> {
        let mut next = crate::test_rng(seed);
        let mut v: Vec<u8> = Vec::with_capacity(n + 16);
        let put = |v: &mut Vec<u8>, w: u32| v.extend_from_slice(&w.to_le_bytes());
        while v.len() < n {
            let q = v.len() as i64;
            let target = (next() % n as u64) as i64;
            match next() % 8 {
                0 | 1 => {
                    let op = if next() % 2 == 0 {
                        0x9400_0000
                    } else {
                        0x1400_0000
                    };
                    put(&mut v, op | (((target - q) / 4) as u32 & 0x03FF_FFFF));
                }
                2 | 3 => {
                    let pages = ((target & !0xFFF) - (q & !0xFFF)) >> 12;
                    let p = pages as u32 & 0x1F_FFFF;
                    let rd = (next() % 31) as u32;
                    put(&mut v, 0x9000_0000 | ((p & 3) << 29) | ((p >> 2) << 5) | rd);
                    // Up to nine other words between (past the reach at
                    // nine), mostly naming other registers.
                    for _ in 0..[0, 0, 1, 2, 3, 7, 9][(next() % 7) as usize] {
                        let w = next() as u32 & !0x9F00_0000;
                        let low = if next() % 8 == 0 { rd } else { (rd + 1) % 31 };
                        put(&mut v, (w & !31) | low);
                    }
                    // Mostly the same register, sometimes another.
                    let rn = if next() % 8 == 0 { (rd + 1) % 31 } else { rd };
                    let (base, scale) = [
                        (0x9100_0000u32, 0),
                        (0xF940_0000, 3),
                        (0xB940_0000, 2),
                        (0x3DC0_0000, 4),
                        (0x3940_0000, 0),
                    ][(next() % 5) as usize];
                    let low = ((target & 0xFFF) as u32 >> scale) << 10;
                    put(&mut v, base | low | (rn << 5) | (next() as u32 & 31));
                    // Sometimes a second use of the register: a load from
                    // elsewhere in the same page.
                    if next() % 3 == 0 {
                        let low = (next() as u32 & 0x1FF) << 10;
                        put(&mut v, 0xF940_0000 | low | (rn << 5) | ((rn + 1) % 31));
                    }
                }
                4 => {
                    v.resize(v.len().next_multiple_of(8), 0);
                    v.extend_from_slice(&(next() % n as u64).to_le_bytes());
                }
                _ => put(&mut v, next() as u32),
            }
        }
        v.truncate(n);
        v
    }

    #[test]
    fn any_piece_predicts_as_the_rule() {
        for (old, kinds_list) in [
            (
                code_like(20_000, 7),
                &[DISPLACEMENTS, POINTERS, DISPLACEMENTS | POINTERS][..],
            ),
            (
                a64_like(20_003, 11),
                &[A64, A64 | POINTERS, A64 | DISPLACEMENTS | POINTERS][..],
            ),
        ] {
            any_piece_predicts_as_the_rule_on(&old, kinds_list);
        }
    }

    fn any_piece_predicts_as_the_rule_on(old: &[u8], kinds_list: &[u8]) {
        let old = old.to_vec();
        let map = RefMap::from_breaks(
            &[(0, 0), (4000, 36), (9000, -400), (12_001, 5), (16000, 9)],
            old.len() as u64,
        );
        for &kinds in kinds_list {
            // ADRPs change only where a target's page moves against the
            // instruction's: count them over all the shifts.
            let mut adrps = 0;
            for shift in [0i64, 37, -400, 100_000, 4096 + 36] {
                let want: Vec<u8> = (0..old.len())
                    .map(|p| naive(&map, kinds, &old, p, shift))
                    .collect();
                assert_ne!(want, old, "the map predicts something");
                if kinds & A64 != 0 {
                    // Branches, ADRPs and the instructions after them all
                    // get predictions of their own.
                    let without: Vec<u8> = (0..old.len())
                        .map(|p| naive(&map, kinds & !A64, &old, p, shift))
                        .collect();
                    let mut seen = [0usize; 3];
                    for q in (0..old.len() - 3).step_by(4) {
                        if want[q..q + 4] == without[q..q + 4] {
                            continue;
                        }
                        let w = u32::from_le_bytes(old[q..q + 4].try_into().unwrap());
                        let k = match w >> 24 {
                            0x94 | 0x14..=0x17 => 0,
                            b if b & 0x9F == 0x90 => 1,
                            _ => 2,
                        };
                        seen[k] += 1;
                    }
                    assert!(seen[0] > 50 && seen[2] > 50, "{seen:?}");
                    adrps += seen[1];
                }
                let mut out = Vec::new();
                for piece in [1usize, 2, 3, 5, 7, 8, 9, 64, 999, 20_000] {
                    let mut at = 0;
                    while at < old.len() {
                        let len = piece.min(old.len() - at);
                        predict_range(&map, kinds, &old, at, len, shift, &mut out);
                        assert_eq!(out[..], want[at..at + len], "piece {piece} at {at}");
                        at += len;
                    }
                }
            }
            assert!(kinds & A64 == 0 || adrps > 50, "{adrps} ADRPs predicted");
        }
    }

    #[test]
    fn the_site_mask_is_the_portable_one() {
        let mut next = crate::test_rng(3);
        for _ in 0..20_000 {
            let mut block = [0u8; 17];
            for b in &mut block {
                // Often the bytes that matter.
                *b = match next() % 4 {
                    0 => [0xE8, 0xE9, 0x05, 0x0D, 0x3D, 0xC5][(next() % 6) as usize],
                    _ => next() as u8,
                };
            }
            assert_eq!(maybe_sites(&block), maybe_sites_portable(&block));
        }
    }

    #[test]
    fn the_map_round_trips_and_rejects_bad_breaks() {
        let map = RefMap::from_breaks(&[(0, -5), (17, 1 << 40), (18, -(1 << 40)), (999, 0)], 1000);
        let bytes = map.encode();
        assert_eq!(RefMap::decode(&bytes, 0, 1000).unwrap(), map);
        // The last break must lie in the old file.
        assert_eq!(
            kind(RefMap::decode(&bytes, 0, 999)),
            FormatErrorKind::OutOfRange
        );
        // A repeated break.
        let mut two = Vec::new();
        for v in [5u64, 0, 0, 2] {
            put_varint(&mut two, v);
        }
        assert_eq!(
            kind(RefMap::decode(&two, 0, 100)),
            FormatErrorKind::OutOfRange
        );
        // A shift past i64.
        let mut far = Vec::new();
        for v in [0u64, zigzag_encode(i64::MAX), 1, zigzag_encode(1)] {
            put_varint(&mut far, v);
        }
        assert_eq!(
            kind(RefMap::decode(&far, 0, 100)),
            FormatErrorKind::Overflow
        );
        // Truncated inside a pair.
        assert!(RefMap::decode(&bytes[..bytes.len() - 1], 0, 1000).is_err());
        assert_eq!(RefMap::decode(&[], 0, 10).unwrap().len(), 0);
    }
}
