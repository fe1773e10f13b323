//! The writer's side of transforms 2 and 4 (`src/refs.rs`): the reference
//! map built from the copies, and which site kinds pay for it.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::encode::Runs;
use super::matcher::Op;
use crate::format::{Codec, StreamDesc, DELTA_BYTES, DELTA_LENS, STREAMS, ZERO_RUNS};
use crate::refs::{predict_into, predict_range, RefMap, A64, DISPLACEMENTS, MAP_MAX_RAW, POINTERS};

/// Copies shorter than this do not shape the map: their shift is often a
/// chance alignment, and each break costs a few bytes. Of 16, 24, 32, 64,
/// 128, 256, 512 and 1024, 128 and 256 made the smallest patches, within
/// 0.8% of each other except libc (128: 2.2% smaller) (2026-11-30).
const MAP_MIN_COPY: usize = 128;

/// The zstd level of the map's bytes (they are small).
const MAP_LEVEL: i32 = 19;

/// What [`choose`] picked: the map, the site kinds (transform bits), the
/// map's descriptor and stored bytes.
pub(super) struct Chosen {
    pub(super) map: RefMap,
    pub(super) kinds: u8,
    pub(super) desc: StreamDesc,
    pub(super) stored: Vec<u8>,
}

/// The reference map for `ops` and the site kinds to predict with, if they
/// make fewer changed bytes than the map costs; `None` otherwise.
///
/// The map has a break wherever the shift of the copies of at least
/// [`MAP_MIN_COPY`] bytes changes (see [`build`]). The code sites `code`
/// ([`code_sites`]: x86 displacements or AArch64 words; `None`: whichever of
/// the two leaves fewer copied bytes differing from the new file) alone or
/// with pointers, whichever leaves fewer changed bytes (when both leave
/// fewer than no prediction, whichever leaves deltas that compress
/// smaller), if it saves at least [`BYTES_PER_CHANGE`] times the map's
/// stored size over no prediction. The decision depends on the data only.
pub(super) fn choose(old: &[u8], new: &[u8], ops: &[Op], code: Option<u8>) -> Option<Chosen> {
    let mut min_copy = MAP_MIN_COPY;
    let (map, raw) = loop {
        let map = build(ops, min_copy, old.len() as u64);
        let raw = map.encode();
        if raw.len() as u64 <= MAP_MAX_RAW {
            break (map, raw);
        }
        min_copy = min_copy.checked_mul(2)?;
    };
    // With no shift anywhere, in the map or in the copies, every
    // prediction is the old bytes (WebKitGTK's rebuild: 88 MiB in place).
    let still = !map.moves() && ops.iter().all(|op| op.new_start == op.old_start);
    if map.len() == 0 || still {
        return None;
    }
    // The code sites the header names; for a file whose header names
    // neither architecture, both are counted and the one that leaves fewer
    // changed bytes is tried.
    let (code, [before, code_tally, both_tally]) = match code {
        Some(code) => (
            code,
            changes(old, new, ops, &map, [0, code, code | POINTERS]),
        ),
        None => {
            let kinds = [
                0,
                DISPLACEMENTS,
                DISPLACEMENTS | POINTERS,
                A64,
                A64 | POINTERS,
            ];
            let [before, d, dp, a, ap] = changes(old, new, ops, &map, kinds);
            if a.changed.min(ap.changed) < d.changed.min(dp.changed) {
                (A64, [before, a, ap])
            } else {
                (DISPLACEMENTS, [before, d, dp])
            }
        }
    };
    let (before, code_only, with_pointers) =
        (before.changed, code_tally.changed, both_tally.changed);
    let both = code | POINTERS;
    // Pointers can remove many changes that compressed well anyway (a table
    // whose entries all moved by one amount) and leave the rest less
    // regular: when both kinds remove changes, the copies' deltas under each
    // are compressed at a fast level and the smaller wins.
    let (kinds, after) = match (code_only < before, with_pointers < before) {
        (false, false) => return None,
        (true, false) => (code, code_only),
        (false, true) => (both, with_pointers),
        (true, true) => {
            let (d, b) = rayon::join(
                || packed_size(&code_tally.streams),
                || packed_size(&both_tally.streams),
            );
            if b < d {
                (both, with_pointers)
            } else {
                (code, code_only)
            }
        }
    };
    let raw_len = raw.len() as u64;
    let packed = zstd::bulk::compress(&raw, MAP_LEVEL).ok()?;
    let (codec, stored) = if packed.len() < raw.len() {
        (Codec::Zstd, packed)
    } else {
        (Codec::Raw, raw)
    };
    let gain = before.saturating_sub(after);
    if gain == 0 || gain < (stored.len() as u64).saturating_mul(BYTES_PER_CHANGE) {
        return None;
    }
    let desc = StreamDesc {
        raw_len,
        codec,
        stored_len: stored.len() as u64,
        model: None,
        lzma: None,
    };
    Some(Chosen {
        map,
        kinds,
        desc,
        stored,
    })
}

/// The code site kind for `old` by its header: AArch64 words for an
/// AArch64 ELF or Mach-O file, x86 displacements for another ELF or Mach-O
/// file, `None` for anything else (raw code, a universal Mach-O, data).
/// (Only the writer looks: the patch names the kind it used.)
pub(super) fn code_sites(old: &[u8]) -> Option<u8> {
    const EM_AARCH64: u16 = 183;
    const MACHO_64: [u8; 4] = [0xCF, 0xFA, 0xED, 0xFE];
    const CPU_ARM64: u32 = 0x0100_000C;
    let elf = old.get(..4) == Some(b"\x7fELF")
        && old.get(5) == Some(&1)
        && old
            .get(18..20)
            .is_some_and(|m| u16::from_le_bytes([m[0], m[1]]) == EM_AARCH64);
    let macho = old.get(..4) == Some(&MACHO_64[..])
        && old
            .get(4..8)
            .is_some_and(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == CPU_ARM64);
    let elf_other = old.get(..4) == Some(b"\x7fELF");
    let macho_other = old.get(..4) == Some(&MACHO_64[..]);
    if elf || macho {
        Some(A64)
    } else if elf_other || macho_other {
        Some(DISPLACEMENTS)
    } else {
        None
    }
}

/// The level at which [`deltas_packed`] compresses: the run streams'
/// level at the default ([`super::encode::RUNS_LEVEL`]).
const TRIAL_LEVEL: i32 = super::encode::RUNS_LEVEL;

/// The size of a kind's deltas in the run layout's three streams (from
/// [`changes`]), each compressed at [`TRIAL_LEVEL`]: what the default patch
/// stores of them.
///
/// Until 2026-12-02 the trial predicted the copies again and compressed
/// every delta, zeros included; the run streams hold a few percent of those
/// bytes, and [`changes`] makes them in the pass that counts the changes
/// (docs/BENCHMARKS.md).
fn packed_size(streams: &[Vec<u8>; STREAMS]) -> u64 {
    [ZERO_RUNS, DELTA_LENS, DELTA_BYTES]
        .iter()
        .filter_map(|&k| streams.get(k))
        .map(|s| zstd::bulk::compress(s, TRIAL_LEVEL).map_or(u64::MAX / 4, |c| c.len() as u64))
        .sum()
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

/// What [`changes`] found under one prediction kind.
#[derive(Default)]
struct Tally {
    /// Copied bytes that differ from the new file.
    changed: u64,
    /// The copies' deltas in the run layout's streams (`encode::Runs`), each
    /// piece's runs started afresh; empty for kind 0 (no prediction), which
    /// is never tried.
    streams: [Vec<u8>; STREAMS],
}

/// What each of `kinds` (`0`: no prediction) leaves of the copies: the
/// bytes that differ from the new file, and their runs. Each piece is
/// predicted once per kind, every (piece, kind) a job of its own on the
/// thread pool: with the kinds of a piece in one job, the thread given the
/// first (longest) piece of a file of 1-2 MiB copied kept the other waiting.
fn changes<const N: usize>(
    old: &[u8],
    new: &[u8],
    ops: &[Op],
    map: &RefMap,
    kinds: [u8; N],
) -> [Tally; N] {
    let jobs: Vec<((usize, usize, usize), usize)> = pieces(ops)
        .flat_map(|piece| (0..N).map(move |k| (piece, k)))
        .collect();
    let per_job: Vec<Tally> = jobs
        .par_iter()
        .map_init(Vec::new, |pred, &((o, n, l), k)| {
            let mut tally = Tally::default();
            let (Some(b), Some(&kinds)) = (new.get(n..n + l), kinds.get(k)) else {
                return tally;
            };
            let shift = n as i64 - o as i64;
            predict_range(map, kinds, old, o, l, shift, pred);
            tally.changed = pred.iter().zip(b).filter(|(p, q)| p != q).count() as u64;
            if kinds != 0 {
                let mut runs = Runs::default();
                runs.push_all(
                    pred,
                    b.get(..pred.len()).unwrap_or_default(),
                    &mut tally.streams,
                );
                runs.flush(&mut tally.streams);
            }
            tally
        })
        .collect();
    let mut total: [Tally; N] = std::array::from_fn(|_| Tally::default());
    for (&(_, k), one) in jobs.iter().zip(per_job) {
        if let Some(sum) = total.get_mut(k) {
            sum.changed += one.changed;
            for (a, b) in sum.streams.iter_mut().zip(&one.streams) {
                a.extend_from_slice(b);
            }
        }
    }
    total
}

/// The copies of `ops` as (old start, new start, length), cut into pieces of
/// at most 1 MiB: the unit of the trials' predictions (each piece's runs
/// start afresh, so the cut is part of what the trial measures).
fn pieces(ops: &[Op]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    pieces_of(ops, 1 << 20)
}

/// The copies of `ops` as (old start, new start, length), cut into pieces of
/// at most `piece` bytes.
fn pieces_of(ops: &[Op], piece: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    ops.iter().flat_map(move |op| {
        (0..op.add_len).step_by(piece).map(move |k| {
            (
                op.old_start + k,
                op.new_start + k,
                piece.min(op.add_len - k),
            )
        })
    })
}

/// The copied old bytes of `ops`, in order, as transforms 2 and 4 predict
/// them with `map` and the site kinds `kinds`: what the segment builder
/// takes the deltas against. The copies are predicted in pieces of at most
/// 256 KiB on the thread pool (a byte's prediction depends only on old
/// bytes, so any cut gives the same bytes): the builder's pass on one
/// thread kept the other waiting (0.3-1.7% of the diff's wall time,
/// docs/BENCHMARKS.md), and so did pieces of 1 MiB on files of 1-2 MiB.
pub(super) fn predict_copies(old: &[u8], ops: &[Op], map: &RefMap, kinds: u8) -> Vec<u8> {
    let total: usize = ops.iter().map(|op| op.add_len).sum();
    let mut out = vec![0u8; total];
    let mut jobs = Vec::new();
    let mut rest: &mut [u8] = &mut out;
    for (o, n, len) in pieces_of(ops, 256 << 10) {
        let cut = len.min(rest.len());
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(cut);
        jobs.push((o, n, head));
        rest = tail;
    }
    jobs.into_par_iter()
        .for_each(|(o, n, dst)| predict_into(map, kinds, old, o, n as i64 - o as i64, dst));
    out
}
