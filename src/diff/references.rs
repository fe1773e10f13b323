//! The writer's side of transform 2 (`src/refs.rs`): the reference map built
//! from the copies, and whether it pays for itself.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::matcher::Op;
use crate::format::{Codec, StreamDesc};
use crate::refs::{predict_range, RefMap, MAP_MAX_RAW};

/// Copies shorter than this do not shape the map: their shift is often a
/// chance alignment, and each break costs a few bytes. Of 16, 24, 32, 64,
/// 128, 256, 512 and 1024, 128 and 256 made the smallest patches, within
/// 0.5% of each other except libc (128: 2.2% smaller) (2026-11-30).
const MAP_MIN_COPY: usize = 128;

/// The zstd level of the map's bytes (they are small).
const MAP_LEVEL: i32 = 19;

/// Transform 2's map for `ops`, with its descriptor and stored bytes, if it
/// makes fewer changed bytes than it costs; `None` otherwise.
///
/// The map has a break wherever the shift of the copies of at least
/// [`MAP_MIN_COPY`] bytes changes (see [`build`]). It is used when the
/// copied bytes that differ from the new file number fewer with the
/// prediction than without, by at least [`BYTES_PER_CHANGE`] times the
/// map's stored size. The decision depends on the data only.
pub(super) fn choose(old: &[u8], new: &[u8], ops: &[Op]) -> Option<(RefMap, StreamDesc, Vec<u8>)> {
    let mut min_copy = MAP_MIN_COPY;
    let (map, raw) = loop {
        let map = build(ops, min_copy, old.len() as u64);
        let raw = map.encode();
        if raw.len() as u64 <= MAP_MAX_RAW {
            break (map, raw);
        }
        min_copy = min_copy.checked_mul(2)?;
    };
    if map.len() < 2 {
        // One shift everywhere: every prediction is the old bytes.
        return None;
    }
    let (before, after) = changes(old, new, ops, &map);
    let packed = zstd::bulk::compress(&raw, MAP_LEVEL).ok()?;
    let (codec, stored) = if packed.len() < raw.len() {
        (Codec::Zstd, packed)
    } else {
        (Codec::Raw, raw.clone())
    };
    let gain = before.saturating_sub(after);
    if gain == 0 || gain < (stored.len() as u64).saturating_mul(BYTES_PER_CHANGE) {
        return None;
    }
    let desc = StreamDesc {
        raw_len: raw.len() as u64,
        codec,
        stored_len: stored.len() as u64,
        model: None,
    };
    Some((map, desc, stored))
}

/// Changed bytes the prediction must save per byte of the stored map. 4
/// kept it off pydantic-core across a major version, where it gains 0.6%;
/// 0 (any gain) put it on Chromium's resource pack, where it costs 0.03%
/// (2026-11-30).
const BYTES_PER_CHANGE: u64 = 1;

/// The map of the shifts of `ops`' copies of at least `min_copy` bytes:
/// each old byte takes the shift of the longest such copy over it, and a
/// byte no copy covers the shift of the last one before it.
fn build(ops: &[Op], min_copy: usize, old_len: u64) -> RefMap {
    let mut copies: Vec<(u64, u64, i64)> = ops
        .iter()
        .filter(|op| op.add_len >= min_copy)
        .map(|op| {
            (
                op.old_start as u64,
                (op.old_start + op.add_len) as u64,
                op.new_start as i64 - op.old_start as i64,
            )
        })
        .collect();
    // Longest first (stable: of equal ones, the first in the new file); each
    // paints the old bytes no longer one has painted.
    copies.sort_by_key(|c| std::cmp::Reverse(c.1 - c.0));
    let mut painted: BTreeMap<u64, (u64, i64)> = BTreeMap::new();
    for (start, end, shift) in copies {
        // Painted pieces are disjoint, so their ends increase with their
        // starts: those overlapping [start, end) are the last few before `end`.
        let mut over: Vec<(u64, u64)> = painted
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, _))| (s, e))
            .collect();
        over.reverse();
        let mut at = start;
        for (s, e) in over {
            if s > at {
                painted.insert(at, (s, shift));
            }
            at = at.max(e);
        }
        if at < end {
            painted.insert(at, (end, shift));
        }
    }
    let mut breaks: Vec<(u64, i64)> = Vec::with_capacity(painted.len());
    for (start, (_, shift)) in painted {
        if breaks.last().is_none_or(|&(_, s)| s != shift) {
            breaks.push((start, shift));
        }
    }
    RefMap::from_breaks(&breaks, old_len)
}

/// Copied bytes that differ from the new file, without and with the
/// prediction through `map`.
fn changes(old: &[u8], new: &[u8], ops: &[Op], map: &RefMap) -> (u64, u64) {
    const PIECE: usize = 1 << 20;
    let pieces: Vec<(usize, usize, usize)> = ops
        .iter()
        .flat_map(|op| {
            (0..op.add_len).step_by(PIECE).map(move |k| {
                (
                    op.old_start + k,
                    op.new_start + k,
                    PIECE.min(op.add_len - k),
                )
            })
        })
        .collect();
    pieces
        .par_iter()
        .map_init(Vec::new, |pred, &(o, n, l)| {
            let (Some(a), Some(b)) = (old.get(o..o + l), new.get(n..n + l)) else {
                return (0, 0);
            };
            let shift = n as i64 - o as i64;
            predict_range(map, old, o, l, shift, pred);
            let count = |x: &[u8]| x.iter().zip(b).filter(|(p, q)| p != q).count() as u64;
            (count(a), count(pred))
        })
        .reduce(|| (0, 0), |x, y| (x.0 + y.0, x.1 + y.1))
}
