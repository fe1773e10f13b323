//! Short copies that cost more than they save become literal bytes.
//!
//! The bsdiff-style scan starts a copy wherever an exact match beats the
//! current alignment by eight bytes. Between two versions that share most of
//! their code that is rare, but where much of the new file is new code (a
//! major version), the scan finds a great many short matches of common
//! instruction sequences at scattered places in the old file: 85% of the
//! 94,000 copies of pydantic-core 2.14.6 → 2.18.4 are under 32 bytes. Each
//! costs an operation in the control stream, mostly its seek: a jump to an
//! unrelated place is a varint of three or four bytes that barely compresses.
//! As literals the same bytes cost less than half a byte each under zstd
//! (pydantic-core's literal stream compresses 2.4:1).
//!
//! So a copy is dropped, its bytes joining the literals before it, when the
//! bytes it gets right, less two for each it gets wrong (a delta to code),
//! number fewer than [`BASE`] plus [`PER_SEEK_BYTE`] for each byte of its
//! seek's varint (docs/BENCHMARKS.md has the measurements behind both).

use super::matcher::Op;

/// Bytes a copy must get right beyond what its seek's length asks.
const BASE: usize = 4;
/// Bytes a copy must get right for each byte of its seek's varint.
const PER_SEEK_BYTE: usize = 6;
/// Copies this long or longer are always kept, whatever they get wrong: the
/// most any seek asks (a varint is at most ten bytes). Weighing them too
/// changed the measured patches by −0.3% to +0.9% and would compare every
/// copied byte; this way only short copies are compared.
const ALWAYS_KEPT: usize = BASE + 10 * PER_SEEK_BYTE;

/// Bytes of the varint of `seek` as the control stream writes it (zigzag,
/// seven bits per byte).
fn seek_bytes(seek: i64) -> usize {
    let z = crate::format::zigzag_encode(seek);
    let bits = (u64::BITS - z.leading_zeros()) as usize;
    bits.div_ceil(7).max(1)
}

/// Returns `ops` with the copies that are not worth their operation turned
/// into literal bytes of the operation before. The first operation is kept
/// as it is (apply starts at old position 0, see `anchor_start`). Operations
/// stay contiguous in the new file, so the result describes the same new
/// file; only which of its bytes are copied changes.
pub(crate) fn prune(ops: Vec<Op>, old: &[u8], new: &[u8]) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        if let Some(last) = out.last_mut() {
            if op.add_len > 0 && op.add_len < ALWAYS_KEPT {
                let from = last.old_start.saturating_add(last.add_len);
                let seek = (op.old_start as i64).saturating_sub(from as i64);
                let wrong = mismatches(old, op.old_start, new, op.new_start, op.add_len);
                let worth = op.add_len.saturating_sub(2 * wrong);
                if worth < BASE + PER_SEEK_BYTE * seek_bytes(seek) {
                    last.extra_len += op.add_len + op.extra_len;
                    continue;
                }
            }
        }
        out.push(op);
    }
    out
}

/// Bytes that differ between `new[n..n + len]` and `old[o..o + len]` (all of
/// them if either range is out of bounds, which the matcher never makes).
fn mismatches(old: &[u8], o: usize, new: &[u8], n: usize, len: usize) -> usize {
    let a = o.checked_add(len).and_then(|end| old.get(o..end));
    let b = n.checked_add(len).and_then(|end| new.get(n..end));
    match (a, b) {
        (Some(a), Some(b)) => a.iter().zip(b).filter(|(x, y)| x != y).count(),
        _ => len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(new_start: usize, old_start: usize, add_len: usize, extra_len: usize) -> Op {
        Op {
            new_start,
            old_start,
            add_len,
            extra_len,
        }
    }

    #[test]
    fn seek_bytes_counts_the_zigzag_varint() {
        assert_eq!(seek_bytes(0), 1);
        assert_eq!(seek_bytes(-64), 1);
        assert_eq!(seek_bytes(63), 1);
        assert_eq!(seek_bytes(64), 2);
        assert_eq!(seek_bytes(-8192), 2);
        assert_eq!(seek_bytes(8192), 3);
        assert_eq!(seek_bytes(i64::MAX), 10);
        assert_eq!(seek_bytes(i64::MIN), 10);
    }

    /// A short copy far away becomes literals; the same copy next to the
    /// previous one's end, a long one far away, and the first operation stay.
    #[test]
    fn drops_short_far_copies_only() {
        let old: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut new = Vec::new();
        new.extend_from_slice(&old[..16]); // first: kept even if short
        new.extend_from_slice(&old[50_000..50_020]); // 20 bytes, seek +50,000: dropped
        new.extend_from_slice(&old[50_020..50_032]); // continues the previous copy's old bytes
        new.extend_from_slice(&old[10_000..10_100]); // 100 bytes, far: kept
        new.extend_from_slice(b"lit");
        new.extend_from_slice(&old[10_100..10_114]); // 14 bytes, seek 0: kept
        let ops = vec![
            op(0, 0, 16, 0),
            op(16, 50_000, 20, 0),
            op(36, 50_020, 12, 0),
            op(48, 10_000, 100, 3),
            op(151, 10_100, 14, 0),
        ];
        let got = prune(ops, &old, &new);
        // The 20-byte copy is gone: its bytes are literals of the first
        // operation. The next copy now seeks +50,004 from the first one's
        // end, and at 12 bytes it goes too.
        assert_eq!(
            got,
            vec![
                op(0, 0, 16, 32),
                op(48, 10_000, 100, 3),
                op(151, 10_100, 14, 0)
            ]
        );
        // Same new file, contiguous.
        let mut at = 0;
        for o in &got {
            assert_eq!(o.new_start, at);
            at += o.add_len + o.extra_len;
        }
        assert_eq!(at, new.len());
    }

    /// Wrong bytes count against a copy: 40 bytes with 12 wrong are worth 16,
    /// under the 4 + 6 * 3 that a seek of 50,000 asks.
    #[test]
    fn mismatches_count_against_a_copy() {
        let old: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
        let mut new = old[..16].to_vec();
        let mut far = old[50_000..50_040].to_vec();
        for b in far.iter_mut().step_by(3).take(12) {
            *b ^= 0x55;
        }
        new.extend_from_slice(&far);
        let ops = vec![op(0, 0, 16, 0), op(16, 50_000, 40, 0)];
        assert_eq!(prune(ops.clone(), &old, &new), vec![op(0, 0, 16, 40)]);
        // Without the wrong bytes it is worth 40 and stays.
        new[16..].copy_from_slice(&old[50_000..50_040]);
        assert_eq!(prune(ops.clone(), &old, &new), ops);
    }
}
