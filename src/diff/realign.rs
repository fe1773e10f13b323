//! A second look at the alignment of long copies.
//!
//! The bsdiff-style scan is greedy: once it follows an alignment it keeps it for
//! as long as half the bytes agree, even where a neighbouring alignment would
//! agree on far more (measured on libnode: a 485 KB copy followed an offset with
//! 16% differing bytes where the next copy's offset had 5%). This pass walks
//! each long copy in blocks and, block by block, moves it to the alignment of
//! the previous or next copy where that removes clearly more differences than
//! the extra operation costs. It only changes where bytes are copied from, never
//! which new bytes are produced.

use rayon::prelude::*;

use super::matcher::Op;

/// Granularity of the search, in bytes.
const BLOCK: usize = 512;
/// A block moves to another alignment only if that removes at least this many
/// differing bytes: a new operation costs a few bytes of control and breaks
/// the runs of the delta streams.
const MIN_GAIN: usize = 24;
/// Copies at least this long have their blocks decided in parallel.
const PARALLEL_MIN: usize = 256 << 10;

/// Differing bytes between `new[n..n+len]` and `old[o..o+len]`.
fn mismatches(old: &[u8], o: usize, new: &[u8], n: usize, len: usize) -> usize {
    match (old.get(o..o + len), new.get(n..n + len)) {
        (Some(a), Some(b)) => a.iter().zip(b).filter(|(x, y)| x != y).count(),
        _ => usize::MAX,
    }
}

/// Rewrites `ops` so that long copies take each block from the best of their
/// own, the previous and the next copy's alignment. Each copy is decided on
/// its own (from its neighbours' original offsets), so the copies are
/// processed in parallel, in groups, and the result does not depend on the
/// thread count.
pub(crate) fn realign(ops: Vec<Op>, old: &[u8], new: &[u8]) -> Vec<Op> {
    /// Operations per parallel job.
    const GROUP: usize = 64;
    let offsets: Vec<Option<isize>> = ops
        .iter()
        .map(|op| (op.add_len > 0).then(|| op.old_start as isize - op.new_start as isize))
        .collect();
    let groups: Vec<Vec<Op>> = ops
        .par_chunks(GROUP)
        .enumerate()
        .map(|(g, group)| {
            let mut out = Vec::with_capacity(group.len());
            for (j, op) in group.iter().enumerate() {
                realign_op(g * GROUP + j, op, &offsets, old, new, &mut out);
            }
            out
        })
        .collect();
    groups.concat()
}

/// [`realign`] for the `i`-th operation, `op`: appends what replaces it.
fn realign_op(
    i: usize,
    op: &Op,
    offsets: &[Option<isize>],
    old: &[u8],
    new: &[u8],
    out: &mut Vec<Op>,
) {
    if op.add_len < 2 * BLOCK {
        out.push(*op);
        return;
    }
    let own = op.old_start as isize - op.new_start as isize;
    let mut cands: Vec<isize> = Vec::with_capacity(3);
    for o in [
        i.checked_sub(1)
            .and_then(|j| offsets.get(j).copied().flatten()),
        offsets.get(i + 1).copied().flatten(),
    ]
    .into_iter()
    .flatten()
    {
        if o != own && !cands.contains(&o) {
            cands.push(o);
        }
    }
    if cands.is_empty() {
        out.push(*op);
        return;
    }
    // Choose an offset per block. Each block is decided on its own, so a
    // long copy's blocks are decided in parallel (libgs's in-place update
    // is a few copies of megabytes: one thread took 20-37 ms over them).
    let end = op.new_start + op.add_len;
    let choose = |n: usize| {
        let len = BLOCK.min(end - n);
        let base = mismatches(old, (n as isize + own) as usize, new, n, len);
        let mut best = (base, own);
        for &c in &cands {
            let o = n as isize + c;
            if o < 0 {
                continue;
            }
            let m = mismatches(old, o as usize, new, n, len);
            if m.saturating_add(MIN_GAIN) <= best.0 && m < best.0 {
                best = (m, c);
            }
        }
        (n, len, best.1)
    };
    let starts = (op.new_start..end).step_by(BLOCK);
    let choices: Vec<(usize, usize, isize)> = if op.add_len >= PARALLEL_MIN {
        starts
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(choose)
            .collect()
    } else {
        starts.map(choose).collect()
    };
    let mut pieces: Vec<(usize, usize, isize)> = Vec::new(); // (new_start, len, offset)
    for (n, len, offset) in choices {
        match pieces.last_mut() {
            Some(last) if last.2 == offset => last.1 += len,
            _ => pieces.push((n, len, offset)),
        }
    }
    let count = pieces.len();
    for (k, (ns, len, off)) in pieces.into_iter().enumerate() {
        out.push(Op {
            new_start: ns,
            old_start: (ns as isize + off) as usize,
            add_len: len,
            extra_len: if k + 1 == count { op.extra_len } else { 0 },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_moves_to_the_better_neighbouring_alignment() {
        // new = old shifted by 8, except that the copy before uses offset 0.
        let old: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let new: Vec<u8> = old[8..].to_vec();
        let ops = vec![
            Op {
                new_start: 0,
                old_start: 8,
                add_len: 16,
                extra_len: 0,
            },
            // A poor alignment (offset 0) for a long copy whose true offset is 8.
            Op {
                new_start: 16,
                old_start: 16,
                add_len: 4000,
                extra_len: 0,
            },
        ];
        let out = realign(ops, &old, &new);
        let moved: usize = out
            .iter()
            .filter(|o| o.old_start as isize - o.new_start as isize == 8)
            .map(|o| o.add_len)
            .sum();
        assert!(moved >= 4000, "{out:?}");
        assert_eq!(
            out.iter().map(|o| o.add_len + o.extra_len).sum::<usize>(),
            4016
        );
    }

    /// The parallel groups give what the operations give one by one, in
    /// order: each copy sees its true neighbours across group boundaries.
    #[test]
    fn groups_see_their_neighbours() {
        let old: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        // Copies of 1.5 KB, all with offset 8 (new is old shifted by 8)
        // except poorly aligned pairs (offset 0). 63 and 128 have one poor
        // neighbour inside their group, so each can move only by seeing its
        // good neighbour in the next or previous group (64 and 127); and
        // the pair at 1 and 2 makes a group that indexes its neighbours from
        // its own start see the wrong ones.
        const POOR: [usize; 6] = [1, 2, 62, 63, 128, 129];
        let mut new = Vec::new();
        let mut ops = Vec::new();
        for k in 0..300usize {
            let n = new.len();
            let off = if POOR.contains(&k) { 0 } else { 8 };
            ops.push(Op {
                new_start: n,
                old_start: n + off,
                add_len: 1536,
                extra_len: 0,
            });
            new.extend_from_slice(&old[n + 8..n + 8 + 1536]);
        }
        let offsets: Vec<Option<isize>> = ops
            .iter()
            .map(|op| Some(op.old_start as isize - op.new_start as isize))
            .collect();
        let mut one_by_one = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            realign_op(i, op, &offsets, &old, &new, &mut one_by_one);
        }
        let out = realign(ops, &old, &new);
        assert_eq!(out, one_by_one);
        assert!(out
            .iter()
            .all(|o| o.old_start as isize - o.new_start as isize == 8));
    }
}
