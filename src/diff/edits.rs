//! The writer of the edit layout (docs/FORMAT.md, "Edit layout"), for a new
//! file of the old one's length that differs from it in a few places: a
//! rebuild (a new build ID, and the `.gnu_debuglink` name and checksum that
//! follow from it), a re-signing, a version stamp.
//!
//! [`find`] compares the two files and lists the changed stretches: two
//! stretches less than [`MERGE_GAP`] apart are one edit (a gap costs at
//! least two bytes of framing). A stretch of lowercase hex digits that spell
//! bytes of one of the last four literal edits becomes a hex edit: Debian
//! and Ubuntu name a library's detached debug file after its build ID, so a
//! rebuild changes the 20 bytes of the ID and 38 digits of the name, and the
//! name's edit takes six bytes (gap, tag, source) instead of 43.

use crate::format::{hex_byte, put_varint, EditHead, EditKind, HEX_SOURCES, MAX_LITERAL_EDIT};

/// An edit list of at most this many bytes (count and edits) is written
/// without running the matcher: the segment layout's own framing (a segment
/// length, five descriptors and an operation, 15 bytes or more) leaves it
/// little to gain, and skipping the matcher makes a rebuild's diff a
/// comparison and two hashes.
pub(super) const ALONE: usize = 128;

/// Edit lists longer than this are not written: more changed bytes than
/// this are better matched and compressed.
pub(super) const MAX_BODY: usize = 16 << 10;

/// Stretches of changed bytes closer than this are one edit.
const MERGE_GAP: usize = 3;

/// Files are compared in blocks of this size, byte by byte only where a
/// block differs.
const COMPARE_BLOCK: usize = 4096;

/// The edit list that turns `old` into `new` (count and edits, the body of
/// a patch in the edit layout), if they have the same length and it takes
/// at most [`MAX_BODY`] bytes.
pub(super) fn find(old: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    if old.len() != new.len() {
        return None;
    }
    let stretches = changed_stretches(old, new)?;
    let mut edits = Vec::new();
    let mut count = 0u64;
    let mut pos = 0usize;
    // The last HEX_SOURCES literal edits, as ranges of `new`, newest last.
    let mut recent: Vec<(usize, usize)> = Vec::with_capacity(HEX_SOURCES + 1);
    for (start, end) in stretches {
        let literal_cost = framing(start - pos, end - start, None) + (end - start);
        // The cheapest hex edit from any of the recent literal edits.
        let hex = recent
            .iter()
            .rev()
            .enumerate()
            .filter_map(|(back, &(a, b))| {
                let (hs, he, from) = hex_edit(new, pos, start, end, new.get(a..b)?)?;
                let kind = EditKind::Hex { back, from };
                Some((framing(hs - pos, he - hs, Some(kind)), hs, he, kind))
            })
            .min_by_key(|&(cost, ..)| cost);
        match hex {
            Some((cost, hs, he, kind)) if cost < literal_cost => {
                EditHead {
                    gap: (hs - pos) as u64,
                    len: (he - hs) as u64,
                    kind,
                }
                .encode(&mut edits);
                count += 1;
                pos = he;
            }
            _ => {
                let mut at = start;
                while at < end {
                    let piece = (end - at).min(MAX_LITERAL_EDIT);
                    EditHead {
                        gap: (at - pos) as u64,
                        len: piece as u64,
                        kind: EditKind::Literal,
                    }
                    .encode(&mut edits);
                    edits.extend_from_slice(new.get(at..at + piece)?);
                    count += 1;
                    if recent.len() == HEX_SOURCES {
                        recent.remove(0);
                    }
                    recent.push((at, at + piece));
                    at += piece;
                    pos = at;
                }
            }
        }
        if edits.len() > MAX_BODY {
            return None;
        }
    }
    let mut body = Vec::with_capacity(edits.len() + 10);
    put_varint(&mut body, count);
    body.extend_from_slice(&edits);
    (body.len() <= MAX_BODY).then_some(body)
}

/// The bytes of an edit's fixed part (a literal edit with `None`).
fn framing(gap: usize, len: usize, hex: Option<EditKind>) -> usize {
    let mut v = Vec::with_capacity(30);
    let kind = hex.unwrap_or(EditKind::Literal);
    EditHead {
        gap: gap as u64,
        len: len as u64,
        kind,
    }
    .encode(&mut v);
    v.len()
}

/// The changed stretches of two files of one length, merged across gaps
/// shorter than [`MERGE_GAP`]; `None` once they hold more than [`MAX_BODY`]
/// bytes.
fn changed_stretches(old: &[u8], new: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut changed = 0usize;
    for (k, (a, b)) in old
        .chunks(COMPARE_BLOCK)
        .zip(new.chunks(COMPARE_BLOCK))
        .enumerate()
    {
        if a == b {
            continue;
        }
        let base = k * COMPARE_BLOCK;
        for (i, _) in a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y) {
            let p = base + i;
            changed += 1;
            match out.last_mut() {
                Some((_, end)) if p - *end < MERGE_GAP => *end = p + 1,
                _ => out.push((p, p + 1)),
            }
        }
        if changed > MAX_BODY {
            return None;
        }
    }
    Some(out)
}

fn is_hex_digit(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// A hex edit `(start, end, from)` that covers the changed stretch
/// `new[c0..c1]`, starting at or after `pos`: the digits of `new[start..end]`
/// spell `lit[from..from + (end - start) / 2]` (the shortest, if both
/// pairings of the digits do).
fn hex_edit(
    new: &[u8],
    pos: usize,
    c0: usize,
    c1: usize,
    lit: &[u8],
) -> Option<(usize, usize, usize)> {
    let digit_at = |i: usize| new.get(i).is_some_and(|&c| is_hex_digit(c));
    if !(c0..c1).all(digit_at) {
        return None;
    }
    // Digits come in pairs: the edit starts at the stretch or one digit
    // before it (never before `pos`), and ends at it or one digit after.
    let starts = [Some(c0), (c0 > pos && digit_at(c0 - 1)).then(|| c0 - 1)];
    let mut best: Option<(usize, usize, usize)> = None;
    for start in starts.into_iter().flatten() {
        let end = start + (c1 - start).div_ceil(2) * 2;
        if (end > c1 && !digit_at(c1)) || (end - start) / 2 > lit.len() {
            continue;
        }
        let bytes: Option<Vec<u8>> = new
            .get(start..end)?
            .chunks_exact(2)
            .map(|p| hex_byte(p[0], p[1]))
            .collect();
        let bytes = bytes?;
        if let Some(from) = lit.windows(bytes.len()).position(|w| w == bytes) {
            if best.is_none_or(|(s, e, _)| end - start < e - s) {
                best = Some((start, end, from));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_merge_across_short_gaps() {
        let old = vec![0u8; 10_000];
        let mut new = old.clone();
        for p in [5, 7, 9, 100, 4095, 4096, 9999] {
            new[p] = 1;
        }
        let s = changed_stretches(&old, &new).unwrap();
        assert_eq!(s, [(5, 10), (100, 101), (4095, 4097), (9999, 10_000)]);
        assert!(changed_stretches(&old, &old).unwrap().is_empty());
        let old = vec![0u8; 2 * MAX_BODY];
        let mut many = old.clone();
        many[..MAX_BODY + 1].fill(1);
        assert!(changed_stretches(&old, &many).is_none());
        many[MAX_BODY] = 0;
        assert_eq!(changed_stretches(&old, &many).unwrap(), [(0, MAX_BODY)]);
    }

    #[test]
    fn a_rebuilds_debuglink_is_a_hex_edit() {
        // A build ID at 640 and a debug-file name spelling all but its
        // first byte, 4,000 bytes later, as Debian names it.
        let mut old = vec![7u8; 8000];
        let id_old: Vec<u8> = (0..20u8).map(|i| i.wrapping_mul(37)).collect();
        let id_new: Vec<u8> = (0..20u8).map(|i| i.wrapping_mul(91) ^ 0x5a).collect();
        let name = |id: &[u8]| {
            let mut s: Vec<u8> = id[1..]
                .iter()
                .flat_map(|b| format!("{b:02x}").into_bytes())
                .collect();
            s.extend_from_slice(b".debug\0\0");
            s
        };
        old[640..660].copy_from_slice(&id_old);
        old[4640..4640 + 46].copy_from_slice(&name(&id_old));
        let mut new = old.clone();
        new[640..660].copy_from_slice(&id_new);
        new[4640..4640 + 46].copy_from_slice(&name(&id_new));
        new[4700] = 3; // the checksum
        let body = find(&old, &new).unwrap();
        // count, a literal edit of 20 bytes, a hex edit, a literal of 1.
        assert_eq!(body.len(), 1 + (2 + 1 + 20) + (2 + 1 + 1) + (1 + 1 + 1));
        // Changes between the ID and the name: the name still refers to the
        // ID, three literal edits back.
        let mut between = new.clone();
        for p in [1000, 2000, 3000] {
            between[p] ^= 0x10;
        }
        let body = find(&old, &between).unwrap();
        assert_eq!(body.len(), 1 + 23 + 3 * 4 + 4 + 3);
        // Four are too many: the name is written out.
        between[3500] ^= 0x10;
        let body = find(&old, &between).unwrap();
        assert!(body.len() > 1 + 23 + 4 * 4 + 38, "{}", body.len());
    }

    #[test]
    fn long_stretches_become_several_literal_edits() {
        let old = vec![0u8; 3 * MAX_LITERAL_EDIT];
        let mut new = old.clone();
        new[10..10 + 2 * MAX_LITERAL_EDIT + 5].fill(9);
        let body = find(&old, &new).unwrap();
        assert_eq!(body[0], 3);
        assert_eq!(
            body.len(),
            1 + 2 * MAX_LITERAL_EDIT + 5 + (1 + 2) + (1 + 2) + (1 + 1)
        );
        assert!(find(&old, &old[1..]).is_none());
    }
}
