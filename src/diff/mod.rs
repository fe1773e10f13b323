//! The diff engine (feature `diff`): suffix-array matching, stream building,
//! parallel compression.

mod chain;
mod edits;
mod encode;
mod matcher;
mod prefetch;
mod prune;
mod realign;
mod references;
mod sa;

use std::io::Write;
use std::num::NonZeroUsize;

use rayon::prelude::*;

use crate::error::Error;
use crate::format::{
    write_segment_header, write_stream_desc, Codec, PatchHeader, SegmentHeader, StreamDesc,
    DELTA_BYTES, DELTA_LENS, LITERALS, STREAMS, WRITER_SEGMENT_BUDGET, WRITER_WINDOW_LOG,
    ZERO_RUNS,
};
use crate::hash::Sha256Digest;
use crate::transform::Literals;
use encode::{
    compresses, literals_dominate, literals_in_pieces, lzma_cost, lzma_wins, pack_lzma, pack_plain,
    pack_stream, plain_piece, tries_lzma, PackedSegment, Packing, RawSegment, SegmentBuilder,
    DOMINANT_RUNS_LEVEL, LITERAL_PIECES, LZMA_FALLBACK_LEVEL, LZMA_PROBE, ZSTD_JOB,
};
use matcher::{scan_chunk, Index, Op};

/// The new file is matched in chunks of this size, in parallel. Fixed so that the
/// patch does not depend on the thread count.
const CHUNK: usize = 2 << 20;

/// Default level: the strongest of zstd's regular levels for the literal
/// and control streams, tuned for size; see [`DiffOptions::level`].
const DEFAULT_LEVEL: i32 = 19;

/// Settings for [`diff`]: compression level and thread count.
///
/// # Examples
///
/// ```
/// use deltaswap::DiffOptions;
/// let old = vec![1u8; 10_000];
/// let mut new = old.clone();
/// new[5000] = 2;
/// let patch = DiffOptions::new().level(3).window_log(20).threads(1).diff(&old, &new)?;
/// assert_eq!(deltaswap::apply(&old, &patch)?, new);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct DiffOptions {
    level: i32,
    window_log: u32,
    threads: Option<NonZeroUsize>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions::new()
    }
}

impl DiffOptions {
    /// The defaults: level 19 (the control stream at zstd level 19, the
    /// literal stream at 16, long literal streams also tried with LZMA, run
    /// streams at level 9; no delta model), all available cores.
    pub fn new() -> DiffOptions {
        DiffOptions {
            level: DEFAULT_LEVEL,
            window_log: WRITER_WINDOW_LOG,
            threads: None,
        }
    }

    /// Compression level, 1 (fast) to 22 (smallest); values outside that range
    /// are clamped.
    ///
    /// * 1 to 18: every stream at that zstd level.
    /// * 19, the default: the control stream at zstd level 19, the literal
    ///   stream at 16, one of 64 KiB or more that compresses also with LZMA
    ///   (the smaller kept), and the run streams (zero runs, delta lengths,
    ///   delta bytes) at level 9. From 128 KiB of such literals they are cut
    ///   into two segments coded with LZMA side by side (zstd's level 16 run
    ///   on them only where LZMA does not win); where they also make more
    ///   than a sixteenth of old and new together (across a major version)
    ///   the run streams take level 15. On the corpus's libraries the
    ///   patches are 0.25-0.89x the best peer's, and on those of 1 MB and
    ///   more the diff takes about 0.2-0.5x qbsdiff's time (old files of
    ///   up to 8 MiB are indexed in hash chains, larger ones in suffix
    ///   arrays; docs/BENCHMARKS.md).
    /// * 20 to 22: the smallest patches. Each segment is also coded in the
    ///   plain layout with the delta model (docs/MODEL.md; cut into pieces of
    ///   at most 4 MiB copied, coded in parallel), and the smaller of the two
    ///   layouts is kept (docs/FORMAT.md), when the copies add up to at most
    ///   32 MiB (64 MiB from level 21). That makes the patches of libraries
    ///   of 1 MB and more 29-39% smaller than the default's; it costs about
    ///   0.05-0.1 s of one core per MiB copied to make and as much to apply
    ///   (the default's patches apply at about the speed of `zstd
    ///   --patch-from`), and on libraries of 1-2 MiB it makes the diff
    ///   1.6-1.8x slower. (Readers of this crate before
    ///   2026-11-29 budget 32 Mi model deltas per patch by default: for them,
    ///   a level 21-22 patch of more than 32 MiB copied needs
    ///   [`Limits::max_model_len`](crate::Limits::max_model_len) raised.)
    ///
    /// The zstd window and the model's history stay capped at 8 MiB whatever
    /// the level, so apply memory does not depend on it. Until 2026-12-02 the
    /// default (19) included the delta model, as level 20 does now.
    ///
    /// ```
    /// use deltaswap::DiffOptions;
    /// let old: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    /// let mut new = old.clone();
    /// for i in 1..new.len() {
    ///     if old[i - 1] == 0xe8 { new[i] = new[i].wrapping_add(16); }
    /// }
    /// let default = DiffOptions::new().diff(&old, &new)?;
    /// let smallest = DiffOptions::new().level(20).diff(&old, &new)?;
    /// assert!(smallest.len() < default.len());
    /// assert_eq!(deltaswap::apply(&old, &smallest)?, new);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn level(mut self, level: i32) -> DiffOptions {
        self.level = level.clamp(1, 22);
        self
    }

    /// Largest zstd window for the streams, as a power of two, 10 to 24
    /// (clamped; default 23, 8 MiB). Apply needs this much memory for the
    /// literal stream; a reader's [`Limits::max_window_log`](crate::Limits::max_window_log)
    /// (default 24) must be at least this value.
    pub fn window_log(mut self, log: u32) -> DiffOptions {
        self.window_log = log.clamp(10, 24);
        self
    }

    /// Number of worker threads (0 means all cores). The patch bytes do not depend on it.
    pub fn threads(mut self, threads: usize) -> DiffOptions {
        self.threads = NonZeroUsize::new(threads);
        self
    }

    /// Computes a patch that turns `old` into `new`.
    ///
    /// When `new` has the length of `old` and differs from it in few bytes
    /// (a rebuild, a re-signing), the patch may be in the edit layout
    /// (docs/FORMAT.md): a list of the changed stretches, made without
    /// running the matcher when it takes at most 128 bytes, and kept over
    /// the segments when it is the smaller patch.
    ///
    /// ```
    /// let old: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    /// let mut new = old.clone();
    /// new[640..660].copy_from_slice(&[0x5a; 20]);
    /// let patch = deltaswap::DiffOptions::new().diff(&old, &new)?;
    /// assert_eq!(deltaswap::inspect(&patch[..])?.edits(), Some(1));
    /// assert!(patch.len() < 110);
    /// assert_eq!(deltaswap::apply(&old, &patch)?, new);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Only [`Error::Io`] from the compressor in practice.
    pub fn diff(&self, old: &[u8], new: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.diff_to(old, new, &mut out)?;
        Ok(out)
    }

    /// Computes a patch and writes it to `out`; returns the patch length.
    pub fn diff_to<W: Write>(&self, old: &[u8], new: &[u8], mut out: W) -> Result<u64, Error> {
        let packing = Packing {
            level: self.level,
            window_log: self.window_log,
        };
        let run = || build_patch(old, new, packing);
        let bytes = match self.threads {
            Some(n) => pool(n)?.install(run)?,
            None => run()?,
        };
        out.write_all(&bytes)
            .map_err(Error::io("writing the patch"))?;
        Ok(bytes.len() as u64)
    }
}

/// A thread pool of `n` threads, built once per size and kept for the life of
/// the process, so that repeated diffs do not start and stop threads.
fn pool(n: NonZeroUsize) -> Result<std::sync::Arc<rayon::ThreadPool>, Error> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(p) = pools.get(&n.get()) {
        return Ok(Arc::clone(p));
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.get())
            .build()
            .map_err(|_| Error::Bug("could not start the thread pool"))?,
    );
    pools.insert(n.get(), Arc::clone(&p));
    Ok(p)
}

/// Computes a patch from `old` to `new` with the default [`DiffOptions`].
///
/// # Examples
///
/// ```
/// let old = b"version 1 of a shared library".to_vec();
/// let new = b"version 2 of a shared library, patched".to_vec();
/// let patch = deltaswap::diff(&old, &new)?;
/// assert_eq!(deltaswap::apply(&old, &patch)?, new);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn diff(old: &[u8], new: &[u8]) -> Result<Vec<u8>, Error> {
    DiffOptions::new().diff(old, new)
}

/// The operations that make `new` from `old`; `exact`: look matches up in
/// suffix arrays whatever the old file's size (the levels of the smallest
/// patches), else in hash chains up to [`chain::CHAIN_MAX_OLD`].
fn find_ops(old: &[u8], new: &[u8], exact: bool) -> Result<Vec<Op>, Error> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let index = Index::build(old, !exact && old.len() <= chain::CHAIN_MAX_OLD)?;
    let starts: Vec<usize> = (0..new.len()).step_by(CHUNK).collect();
    // With fewer chunks than threads, each chunk is scanned in two halves
    // (the same operations as one).
    let split = starts.len() < rayon::current_num_threads();
    let per_chunk: Vec<Vec<Op>> = starts
        .par_iter()
        .map(|&s| scan_chunk(&index, new, s, (s + CHUNK).min(new.len()), split))
        .collect();
    let ops = merge_ops(per_chunk.into_iter().flatten());
    // The index (4-8 bytes per old byte) is freed beside the realignment.
    let ((), ops) = rayon::join(move || drop(index), || realign::realign(ops, old, new));
    let ops = prune::prune(ops, old, new);
    Ok(anchor_start(merge_ops(ops.into_iter())))
}

/// Apply starts at old position 0 and moves only by the seek after an operation.
/// The first operation must therefore not copy from anywhere else: if it does,
/// its first byte becomes a literal whose seek carries the position there.
fn anchor_start(mut ops: Vec<Op>) -> Vec<Op> {
    let Some(first) = ops.first_mut() else {
        return ops;
    };
    if first.add_len == 0 {
        first.old_start = 0;
        return ops;
    }
    if first.old_start == 0 {
        return ops;
    }
    let f = *first;
    let literal = Op {
        new_start: f.new_start,
        old_start: 0,
        add_len: 0,
        extra_len: 1,
    };
    let rest = Op {
        new_start: f.new_start + 1,
        old_start: f.old_start + 1,
        add_len: f.add_len - 1,
        extra_len: f.extra_len,
    };
    if rest.add_len == 0 {
        ops[0] = Op {
            extra_len: 1 + f.extra_len,
            ..literal
        };
    } else {
        ops[0] = rest;
        ops.insert(0, literal);
    }
    ops
}

/// Joins an operation with the next when nothing separates them: no literal bytes
/// and no seek in between. Chunk boundaries cut long copies; this undoes that.
fn merge_ops(ops: impl Iterator<Item = Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::new();
    for op in ops {
        if let Some(last) = out.last_mut() {
            if last.extra_len == 0 && last.old_start + last.add_len == op.old_start {
                last.add_len += op.add_len;
                last.extra_len = op.extra_len;
                continue;
            }
            if op.add_len == 0 {
                last.extra_len += op.extra_len;
                continue;
            }
        }
        out.push(op);
    }
    out
}

/// The first `limit` literal bytes of `ops`, untransformed, end to end,
/// and their runs as (offset in those bytes, position in new, length).
fn gather_literals(ops: &[Op], new: &[u8], limit: usize) -> (Vec<u8>, Vec<(usize, usize, usize)>) {
    let mut plain = Vec::new();
    let mut runs = Vec::new();
    for op in ops {
        if plain.len() >= limit {
            break;
        }
        let at = op.new_start + op.add_len;
        let take = op.extra_len.min(limit - plain.len());
        if let Some(lit) = new.get(at..at + take) {
            runs.push((plain.len(), at, take));
            plain.extend_from_slice(lit);
        }
    }
    (plain, runs)
}

/// Builds the patch. A new file of the old one's length that differs in few
/// bytes may be written in the edit layout instead (`edits`): without
/// running the matcher when its edit list is tiny, else when it is the
/// smaller patch.
///
/// The two digests are computed beside the edit comparison, before the
/// matcher: hashed beside the index instead, they held back the sort of one
/// of its parts (libgs's 42 MB: by 35-45 ms), and the comparison of two
/// files of one length (8-16 ms there) left the second core idle.
fn build_patch(old: &[u8], new: &[u8], packing: Packing) -> Result<Vec<u8>, Error> {
    let (body, hashes) = rayon::join(
        || (!new.is_empty()).then(|| edits::find(old, new)).flatten(),
        || rayon::join(|| Sha256Digest::of(old), || Sha256Digest::of(new)),
    );
    let (old_hash, new_hash) = &hashes;
    let edit_patch = |old_hash: &Sha256Digest, new_hash: &Sha256Digest, body: &[u8]| {
        let mut out = Vec::with_capacity(body.len() + 96);
        let (old_len, new_len) = (old.len() as u64, new.len() as u64);
        PatchHeader::encode(old_len, new_len, old_hash, new_hash, 0, true, &mut out);
        out.extend_from_slice(body);
        out
    };
    match body {
        Some(body) if body.len() <= edits::ALONE => Ok(edit_patch(old_hash, new_hash, &body)),
        Some(body) => {
            let patch = build_patch_with_budget(old, new, &hashes, packing, BUDGETS)?;
            let edited = edit_patch(old_hash, new_hash, &body);
            Ok(if edited.len() < patch.len() {
                edited
            } else {
                patch
            })
        }
        None => build_patch_with_budget(old, new, &hashes, packing, BUDGETS),
    }
}

/// How a patch's segments are cut: at `bytes` of control and delta bytes,
/// and at `literals` literal bytes (by default, `None`: in
/// [`LITERAL_PIECES`] where [`literals_in_pieces`], else not).
#[derive(Clone, Copy)]
struct Budgets {
    bytes: usize,
    literals: Option<usize>,
}

/// The writer's budgets.
const BUDGETS: Budgets = Budgets {
    bytes: WRITER_SEGMENT_BUDGET,
    literals: None,
};

/// The patch in segments; `hashes` are the SHA-256 digests of old and new.
fn build_patch_with_budget(
    old: &[u8],
    new: &[u8],
    hashes: &(Sha256Digest, Sha256Digest),
    packing: Packing,
    budgets: Budgets,
) -> Result<Vec<u8>, Error> {
    let (old_hash, new_hash) = hashes;
    let ops = find_ops(old, new, packing.tries_plain())?;
    let copied: usize = ops.iter().map(|op| op.add_len).sum();
    let literal_bytes: usize = ops.iter().map(|op| op.extra_len).sum();
    let pieces = literals_in_pieces(
        packing,
        literal_bytes,
        // Untransformed: the branch transforms change a few bytes of an
        // instruction, not whether the stream compresses.
        || compresses(&gather_literals(&ops, new, LZMA_PROBE).0),
    );
    let dominant = pieces && literals_dominate(literal_bytes, old.len().saturating_add(new.len()));
    let code = references::code_sites(old);
    let (literals, refs) = rayon::join(
        || choose_literals(&ops, new, code),
        || references::choose(old, new, &ops, code),
    );
    let predicted = refs
        .as_ref()
        .map(|r| references::predict_copies(old, &ops, &r.map, r.kinds));
    let build = |piece: Option<usize>| {
        let mut builder = SegmentBuilder::with_budget(old, new, budgets.bytes)
            .with_literals(literals)
            .with_predicted(predicted.as_deref());
        if let Some(bytes) = piece {
            builder = builder.with_copy_budget(bytes);
        }
        if let Some(bytes) = budgets.literals {
            builder = builder.with_literal_budget(bytes);
        } else if pieces {
            // One more than the share, so that the last piece, never above
            // it, does not close a segment of its own.
            builder = builder.with_literal_budget(literal_bytes / LITERAL_PIECES + 1);
        }
        for (i, op) in ops.iter().enumerate() {
            let next_old = ops
                .get(i + 1)
                .map_or(op.old_start + op.add_len, |n| n.old_start);
            builder.push(op, next_old);
        }
        builder.finish()
    };
    let mut plain = packing.tries_plain() && copied <= packing.plain_max_copied();
    let mut segments = build(plain.then(|| plain_piece(copied)))?;
    if plain && !segments.iter().any(RawSegment::worth_plain) {
        // Nothing for the model to gain: keep the segments whole.
        plain = false;
        if segments.len() > 1 {
            segments = build(None)?;
        }
    }
    // The plain layout is tried beside the zstd jobs, one model job per segment.
    let plain_jobs: Vec<usize> = (0..segments.len())
        .filter(|&s| plain && segments[s].worth_plain())
        .collect();
    // The run streams of segments tried in plain layout are first packed at a
    // fast level: the model usually beats them by far, and the strong level
    // costs more than the model itself.
    let tried =
        |s: usize, k: usize| RUN_STREAMS.contains(&k) && plain_jobs.binary_search(&s).is_ok();
    let fast = Packing {
        level: PLAIN_RUNS_LEVEL.min(packing.level),
        ..packing
    };
    // Every stream and every model piece is one job; they run longest first
    // (see `par_map_longest_first`), so that the longest does not start last.
    let mut jobs: Vec<PackJob> = (0..segments.len())
        .flat_map(|s| (0..STREAMS).map(move |k| (s, k)))
        .map(|(s, k)| PackJob::Stream {
            segment: s,
            stream: k,
            packing: if tried(s, k) {
                fast
            } else if RUN_STREAMS.contains(&k) {
                Packing {
                    level: if dominant {
                        DOMINANT_RUNS_LEVEL
                    } else {
                        packing.runs_level()
                    },
                    ..packing
                }
            } else if k == LITERALS {
                Packing {
                    level: if pieces {
                        LZMA_FALLBACK_LEVEL
                    } else {
                        packing.literals_level()
                    },
                    ..packing
                }
            } else {
                packing
            },
            jobs: false,
        })
        .collect();
    jobs.extend(plain_jobs.iter().map(|&s| PackJob::Plain(s)));
    // Long literal streams are also coded with LZMA, as jobs of their own
    // beside zstd's (see `encode::tries_lzma`).
    jobs.extend(
        (0..segments.len())
            .filter(|&s| tries_lzma(&segments[s].streams[LITERALS], packing))
            .map(PackJob::Lzma),
    );
    let cost = |job: &PackJob| match *job {
        PackJob::Stream {
            segment,
            stream,
            packing,
            ..
        } => segments
            .get(segment)
            .map_or(0, |seg| zstd_cost(seg.streams[stream].len(), packing.level)),
        PackJob::Plain(s) => segments.get(s).map_or(0, |seg| seg.copied() as u64),
        PackJob::Lzma(s) => segments
            .get(s)
            .map_or(0, |seg| lzma_cost(seg.streams[LITERALS].len())),
    };
    mark_long_streams(&mut jobs, cost, &segments);
    // With fewer model pieces than threads, each piece's flag and value
    // halves run on two threads (the same bytes as one).
    let split = plain_jobs.len() < rayon::current_num_threads();
    let done = par_map_longest_first(&jobs, cost, |job| match *job {
        PackJob::Stream {
            segment,
            stream,
            packing,
            jobs,
        } => Packed::Stream(pack_stream(
            &segments[segment].streams[stream],
            packing,
            jobs,
        )),
        PackJob::Lzma(s) => Packed::Lzma(
            s,
            pack_lzma(&segments[s].streams[LITERALS], packing.window_log),
        ),
        PackJob::Plain(s) => Packed::Plain(s, pack_plain(&segments[s], old, new, packing, split)),
    });
    let mut packed = Vec::with_capacity(segments.len() * STREAMS);
    let mut plain = Vec::with_capacity(plain_jobs.len());
    let mut lzma = Vec::new();
    for d in done {
        match d {
            Packed::Stream(r) => packed.push(r),
            Packed::Plain(s, r) => plain.push((s, r)),
            Packed::Lzma(s, r) => lzma.push((s, r)),
        }
    }
    let packed: Result<Vec<_>, _> = packed.into_iter().collect();
    let mut packed = packed.map_err(Error::io("compressing a stream"))?;
    // LZMA literals replace zstd's where they are clearly smaller.
    for (s, r) in lzma {
        let (desc, bytes) = r.map_err(Error::io("compressing the literal stream"))?;
        if let Some(slot) = packed.get_mut(s * STREAMS + LITERALS) {
            if lzma_wins(bytes.len(), &slot.0) {
                *slot = (desc, bytes);
            }
        }
    }
    // Where the literals are cut into pieces, zstd coded them at a fast
    // level as a fallback: the streams LZMA did not replace get the
    // literals' level.
    if pieces {
        let strong = Packing {
            level: packing.literals_level(),
            ..packing
        };
        let again: Vec<usize> = (0..segments.len())
            .filter(|&s| {
                packed
                    .get(s * STREAMS + LITERALS)
                    .is_some_and(|(desc, _)| desc.codec != Codec::Lzma)
            })
            .collect();
        let strong = again
            .par_iter()
            .map(|&s| pack_stream(&segments[s].streams[LITERALS], strong, false))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::io("compressing the literal stream"))?;
        for (&s, p) in again.iter().zip(strong) {
            if let Some(slot) = packed.get_mut(s * STREAMS + LITERALS) {
                *slot = p;
            }
        }
    }
    // Where the model does not clearly win, the run streams get the strong
    // level after all, and the smaller layout is kept.
    let redo: Vec<(usize, usize)> = plain
        .iter()
        .filter(|(s, (desc, _))| {
            let runs: u64 = RUN_STREAMS
                .iter()
                .filter_map(|&k| packed.get(s * STREAMS + k))
                .map(|(d, _)| stored_cost(d))
                .sum();
            stored_cost(desc) * 5 > runs * 4
        })
        .flat_map(|(s, _)| RUN_STREAMS.iter().map(move |&k| (*s, k)))
        .collect();
    if packing.level > fast.level {
        let strong = redo
            .par_iter()
            .map(|&(s, k)| pack_stream(&segments[s].streams[k], packing, false))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::io("compressing a stream"))?;
        for (&(s, k), p) in redo.iter().zip(strong) {
            if let Some(slot) = packed.get_mut(s * STREAMS + k) {
                *slot = p;
            }
        }
    }
    let mut plain = plain.into_iter().peekable();
    let mut out = Vec::new();
    PatchHeader::encode(
        old.len() as u64,
        new.len() as u64,
        old_hash,
        new_hash,
        literals.map_or(0, Literals::bit) | refs.as_ref().map_or(0, |r| r.kinds),
        false,
        &mut out,
    );
    if let Some(r) = &refs {
        write_stream_desc(&r.desc, &mut out);
        out.extend_from_slice(&r.stored);
    }
    let mut it = packed.into_iter();
    for (index, seg) in segments.iter().enumerate() {
        let mut streams = [StreamDesc::EMPTY; STREAMS];
        let mut payloads = Vec::with_capacity(STREAMS);
        for slot in streams.iter_mut() {
            let (d, p) = it.next().ok_or(Error::Bug("stream count"))?;
            *slot = d;
            payloads.push(p);
        }
        if let Some((_, (desc, bytes))) = plain.next_if(|(s, _)| *s == index) {
            choose_layout(&mut streams, &mut payloads, desc, bytes);
        }
        let packed = PackedSegment {
            header: SegmentHeader {
                new_len: seg.new_len,
                streams,
            },
            payloads,
        };
        write_segment_header(&packed.header, &mut out);
        for p in &packed.payloads {
            out.extend_from_slice(p);
        }
    }
    Ok(out)
}

/// Literal bytes [`choose_literals`] looks at, at most.
const LITERALS_PROBE: usize = 8 << 20;

/// The literal transform (`src/transform.rs`) that makes the literal bytes
/// of `ops` smallest, if any makes them smaller: the first
/// [`LITERALS_PROBE`] of them are compressed at a fast level as they are
/// and through each transform the code kind allows (`code`, from
/// `references::code_sites`: transform 1 for x86 or other ELF and Mach-O
/// files, 16 for AArch64 ones, both for the rest). Transform 1 wins on x86
/// code (pydantic-core across a major version: −5.6% patch) and loses a
/// little elsewhere (OpenBLAS, forced: +0.3%), which is why it is measured,
/// not assumed. The decision depends on the data only.
fn choose_literals(ops: &[Op], new: &[u8], code: Option<u8>) -> Option<Literals> {
    let (plain, runs) = gather_literals(ops, new, LITERALS_PROBE);
    if plain.is_empty() {
        return None;
    }
    let kinds: &[Literals] = match code {
        Some(crate::refs::A64) => &[Literals::A64],
        Some(_) => &[Literals::X86],
        None => &[Literals::X86, Literals::A64],
    };
    let size =
        |b: &[u8]| zstd::bulk::compress(b, LITERALS_PROBE_LEVEL).map_or(usize::MAX, |c| c.len());
    let (as_is, sizes) = rayon::join(
        || size(&plain),
        || {
            kinds
                .par_iter()
                .map(|&kind| {
                    let mut moved = plain.clone();
                    for &(from, at, len) in &runs {
                        if let Some(run) = moved.get_mut(from..from + len) {
                            crate::transform::encode_run(kind, run, at as u64);
                        }
                    }
                    // A transform that changes nothing is not worth its bit.
                    let size = if moved == plain {
                        usize::MAX
                    } else {
                        size(&moved)
                    };
                    (size, kind)
                })
                .collect::<Vec<_>>()
        },
    );
    sizes
        .into_iter()
        .filter(|&(size, _)| size < as_is)
        .min_by_key(|&(size, _)| size)
        .map(|(_, kind)| kind)
}

/// The zstd level of [`choose_literals`]' compressions.
const LITERALS_PROBE_LEVEL: i32 = 3;

/// One compression job of `build_patch_with_budget`.
enum PackJob {
    /// A stream of a segment, compressed with zstd.
    Stream {
        segment: usize,
        stream: usize,
        packing: Packing,
        /// Compressed in jobs on libzstd's threads (see [`mark_long_streams`]).
        jobs: bool,
    },
    /// A segment's plain-layout delta stream, coded with the delta model.
    Plain(usize),
    /// A segment's literal stream, coded with LZMA.
    Lzma(usize),
}

/// Marks the stream that would keep the other threads waiting: one whose
/// compression costs more than all the other jobs together (by `cost`), long
/// enough for two of libzstd's jobs ([`ZSTD_JOB`]), is compressed in jobs on
/// libzstd's own threads instead of on one thread while the others idle.
/// (pydantic-core 2.14.6 → 2.18.4: a `perf` timeline showed its 2.8 MB of
/// literals at level 19 alone on one core for 1.2 s, most of the diff.) The
/// decision depends on the data, never on the thread count, so the patch
/// does not either; the price is a little size, each job seeing only an
/// eighth of the window before it.
fn mark_long_streams(
    jobs: &mut [PackJob],
    cost: impl Fn(&PackJob) -> u64,
    segments: &[RawSegment],
) {
    let costs: Vec<u64> = jobs.iter().map(&cost).collect();
    let total: u64 = costs.iter().sum();
    for (job, c) in jobs.iter_mut().zip(costs) {
        if let PackJob::Stream {
            segment,
            stream,
            jobs: in_jobs,
            ..
        } = job
        {
            let len = segments
                .get(*segment)
                .and_then(|seg| seg.streams.get(*stream))
                .map_or(0, Vec::len);
            *in_jobs = c.saturating_mul(2) > total && len >= 2 * ZSTD_JOB;
        }
    }
}

/// What a [`PackJob`] made.
enum Packed {
    Stream(std::io::Result<(StreamDesc, Vec<u8>)>),
    Plain(usize, (StreamDesc, Vec<u8>)),
    Lzma(usize, std::io::Result<(StreamDesc, Vec<u8>)>),
}

/// A rough cost of compressing `len` bytes with zstd at `level`, in the unit
/// of one byte coded by the delta model. Only the order of the jobs depends on
/// it. Measured on libnode's and the libraries' streams (2026-11-29): level 19
/// takes 0.2-0.35 µs per byte, the model 0.035-0.1 µs per copied byte, level 3
/// about 0.01 µs.
fn zstd_cost(len: usize, level: i32) -> u64 {
    let len = len as u64;
    if level >= 16 {
        len.saturating_mul(4)
    } else {
        len / 8
    }
}

/// Maps `f` over `items` on the current thread pool, the costliest items
/// first: each thread takes the next item when it is free. rayon's own
/// splitting hands out items by position, so a long job at the end of the
/// list could start when the others are done and run alone; here it starts
/// first (longest-processing-time-first scheduling). libnode's delta bytes,
/// 0.72 s of zstd, used to start after two other streams. The results are in
/// the order of `items`, whatever the thread count.
fn par_map_longest_first<I, T, C, F>(items: &[I], cost: C, f: F) -> Vec<T>
where
    I: Sync,
    T: Send,
    C: Fn(&I) -> u64,
    F: Fn(&I) -> T + Sync,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Stable: equal costs keep their order.
    order.sort_by_key(|&i| std::cmp::Reverse(items.get(i).map_or(0, &cost)));
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().clamp(1, items.len().max(1));
    let mut done: Vec<(usize, T)> = (0..workers)
        .into_par_iter()
        .flat_map_iter(|_| {
            let mut mine = Vec::new();
            while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                if let Some(item) = items.get(i) {
                    mine.push((i, f(item)));
                }
            }
            mine
        })
        .collect();
    done.sort_unstable_by_key(|d| d.0);
    done.into_iter().map(|d| d.1).collect()
}

/// The streams the plain layout replaces.
const RUN_STREAMS: [usize; 3] = [ZERO_RUNS, DELTA_LENS, DELTA_BYTES];

/// The zstd level at which the run streams of a segment tried in plain layout
/// are packed first (see `build_patch_with_budget`).
const PLAIN_RUNS_LEVEL: i32 = 3;

/// A stream's bytes in the patch: its descriptor and stored bytes.
fn stored_cost(d: &StreamDesc) -> u64 {
    let mut v = Vec::new();
    write_stream_desc(d, &mut v);
    d.stored_len + v.len() as u64
}

/// Replaces a segment's run streams by the plain delta stream when that makes
/// the segment smaller, descriptors included.
fn choose_layout(
    streams: &mut [StreamDesc; STREAMS],
    payloads: &mut [Vec<u8>],
    plain: StreamDesc,
    plain_bytes: Vec<u8>,
) {
    let runs: u64 = RUN_STREAMS.iter().map(|&k| stored_cost(&streams[k])).sum();
    let plain_cost = stored_cost(&plain) + 2 * stored_cost(&StreamDesc::EMPTY);
    if plain_cost < runs {
        for k in [ZERO_RUNS, DELTA_LENS] {
            streams[k] = StreamDesc::EMPTY;
            if let Some(p) = payloads.get_mut(k) {
                p.clear();
            }
        }
        streams[DELTA_BYTES] = plain;
        if let Some(p) = payloads.get_mut(DELTA_BYTES) {
            *p = plain_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model is not tried at the default level, up to 32 MiB of copies
    /// at level 20 and up to 64 MiB from level 21; no level makes a patch
    /// that a reader with the default limits refuses for its model budget.
    #[test]
    fn model_size_bound_follows_the_level() {
        let packing = |level| Packing {
            level,
            window_log: WRITER_WINDOW_LOG,
        };
        let at = |level| packing(level).plain_max_copied();
        assert!(!packing(DEFAULT_LEVEL).tries_plain());
        assert!(packing(20).tries_plain());
        assert_eq!(at(20), 32 << 20);
        assert_eq!(at(21), 64 << 20);
        let budget = crate::Limits::default().max_model_len;
        for level in 1..=22 {
            assert!(at(level) as u64 <= budget, "level {level}");
        }
    }

    /// LZMA is tried on literal streams of 64 KiB and more that compress, at
    /// the levels tuned for size only; an incompressible stream (a resource
    /// pack's) and a short one are left to zstd.
    #[test]
    fn lzma_is_tried_on_long_compressible_literals_only() {
        let packing = |level| Packing {
            level,
            window_log: WRITER_WINDOW_LOG,
        };
        let mut rnd = crate::test_rng(7);
        let noise: Vec<u8> = (0..200_000).map(|_| rnd() as u8).collect();
        let table: Vec<u8> = (0..200_000u32)
            .map(|i| ((i / 4) * 24 + 0x4000).to_le_bytes()[(i % 4) as usize])
            .collect();
        assert!(tries_lzma(&table, packing(19)));
        assert!(!tries_lzma(&table, packing(18)), "below the size levels");
        assert!(!tries_lzma(&table[..60_000], packing(19)), "short");
        assert!(!tries_lzma(&noise, packing(19)), "incompressible");
    }

    /// The literals are cut into pieces only at the default level, when
    /// long and compressible; they dominate when more than a sixteenth of
    /// old and new together.
    #[test]
    fn literals_are_cut_when_long_and_dominate_across_major_versions_only() {
        let packing = |level| Packing {
            level,
            window_log: WRITER_WINDOW_LOG,
        };
        let cut = |level, literals| literals_in_pieces(packing(level), literals, || true);
        let mib = 1 << 20;
        // lxml 4 -> 5: 3.05 MB of literals in 14.1 MB of old and new.
        assert!(cut(19, 3_052_600));
        assert!(literals_dominate(3_052_600, 14_122_200));
        assert!(!cut(18, 3_052_600), "no LZMA there");
        assert!(!cut(20, 3_052_600), "the smallest");
        // libMagickCore's 208 KB of literals in 5.7 MB: cut, not dominant.
        assert!(cut(19, 208_510));
        assert!(!literals_dominate(208_510, 5_705_776));
        // libxul's 5.1 MB of literals in 350 MB: a minor update.
        assert!(!literals_dominate(5_136_446, 350 * mib));
        assert!(!cut(19, 100_000), "each piece under LZMA's minimum");
        assert!(!literals_in_pieces(packing(19), 4 * mib, || false));
    }

    /// The literal stream takes level 16 at the default level only; the
    /// control stream keeps the level given.
    #[test]
    fn literals_take_level_16_at_the_default_level_only() {
        let literals = |level| {
            Packing {
                level,
                window_log: WRITER_WINDOW_LOG,
            }
            .literals_level()
        };
        assert_eq!(literals(DEFAULT_LEVEL), 16);
        assert_eq!(literals(18), 18);
        assert_eq!(literals(3), 3);
        assert_eq!(literals(20), 20);
    }

    /// End to end: across a "major version" (more than half the new file
    /// new, compressible data) the default patch cuts the literals into two
    /// segments, each coded with LZMA; so it does for a long insertion in a
    /// file many times its size, where the literals do not dominate; the
    /// same edit on a minor scale keeps one segment.
    #[test]
    fn long_literals_are_coded_in_two_pieces() {
        let mut rnd = crate::test_rng(11);
        let table = |len: u32| -> Vec<u8> {
            (0..len)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3f)
                .collect()
        };
        let old = table(300_000);
        let mut copied = old[..200_000].to_vec();
        for b in copied.iter_mut().step_by(40) {
            *b = b.wrapping_add(1 + (rnd() % 3) as u8);
        }
        let fresh: Vec<u8> = (0..400_000u32)
            .map(|i| ((i / 4) * 24 + 0x4000).to_le_bytes()[(i % 4) as usize])
            .collect();
        let layout = |old: &[u8], new: &[u8]| {
            let patch = crate::DiffOptions::new().threads(2).diff(old, new).unwrap();
            assert_eq!(crate::apply(old, &patch).unwrap(), new);
            let info = crate::inspect(&patch[..]).unwrap();
            (info.segments(), info.stream_codecs()[LITERALS].clone())
        };
        let major = [copied.clone(), fresh.clone()].concat();
        assert_eq!(layout(&old, &major), (2, vec!["lzma"]));
        // The new data between copies: the cut falls inside a run or at
        // the end of one.
        let mut mixed = Vec::new();
        for (i, (c, f)) in copied.chunks(10_000).zip(fresh.chunks(21_000)).enumerate() {
            mixed.extend_from_slice(c);
            mixed.extend_from_slice(f);
            mixed.extend_from_slice(&fresh[..i * 7]);
        }
        assert_eq!(layout(&old, &mixed).0, 2);
        let minor = [copied, old[200_000..].to_vec()].concat();
        assert_eq!(layout(&old, &minor).0, 1);
        // 140 KB inserted in 1.2 MB: a twentieth of old and new together.
        let big = table(1_200_000);
        let inserted = [&big[..600_000], &fresh[..140_000], &big[600_000..]].concat();
        assert!(!literals_dominate(140_000, big.len() + inserted.len()));
        assert_eq!(layout(&big, &inserted), (2, vec!["lzma"]));
    }

    /// The run streams are coded at a fast level at the default level only:
    /// below it every stream takes the level given, above it the model's
    /// trial decides (and they take the level given where it is not run).
    #[test]
    fn run_streams_are_fast_at_the_default_level_only() {
        let runs = |level| {
            Packing {
                level,
                window_log: WRITER_WINDOW_LOG,
            }
            .runs_level()
        };
        assert_eq!(runs(DEFAULT_LEVEL), 9);
        assert_eq!(runs(18), 18);
        assert_eq!(runs(9), 9);
        assert_eq!(runs(20), 20);
        assert_eq!(runs(22), 22);
    }

    #[test]
    fn longest_first_returns_results_in_item_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let items: Vec<u64> = vec![3, 90, 1, 1, 50, 7, 0, 90];
        let expect: Vec<u64> = items.iter().map(|x| x * 10).collect();
        for threads in [1, 2, 3, 8] {
            let pool = pool(NonZeroUsize::new(threads).unwrap()).unwrap();
            let started = Mutex::new(Vec::new());
            let calls = AtomicUsize::new(0);
            let got = pool.install(|| {
                par_map_longest_first(
                    &items,
                    |&x| x,
                    |&x| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        started.lock().unwrap().push(x);
                        x * 10
                    },
                )
            });
            assert_eq!(got, expect, "{threads} threads");
            assert_eq!(calls.load(Ordering::Relaxed), items.len());
            if threads == 1 {
                // One thread takes the jobs strictly longest first, ties in order.
                assert_eq!(*started.lock().unwrap(), vec![90, 90, 50, 7, 3, 1, 1, 0]);
            }
        }
        let none: Vec<u64> = par_map_longest_first(&[] as &[u64], |&x| x, |&x| x);
        assert!(none.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Segments cut at any literal budget, inside literal runs or
        /// between them, apply to the new file: x86-like code (calls whose
        /// targets transform 1 rewrites) with new code inserted and bytes
        /// changed.
        #[test]
        fn segments_cut_at_any_literal_budget_apply(
            seed in proptest::prelude::any::<u64>(),
            cut in 1usize..3000,
            inserts in proptest::collection::vec((0usize..60_000, 1usize..4000), 1..8),
        ) {
            let mut rnd = crate::test_rng(seed | 1);
            let mut old: Vec<u8> = Vec::with_capacity(60_000);
            while old.len() < 60_000 {
                if rnd() % 6 == 0 {
                    old.push(0xe8);
                    old.extend_from_slice(&((rnd() % 40_000) as u32).to_le_bytes());
                } else {
                    old.push((rnd() % 48) as u8);
                }
            }
            let mut new = old.clone();
            for b in new.iter_mut().step_by(97) {
                *b = b.wrapping_add(1);
            }
            for &(at, len) in &inserts {
                let code: Vec<u8> = (0..len).map(|_| (rnd() % 64) as u8 | 0x80).collect();
                new.splice(at.min(new.len())..at.min(new.len()), code);
            }
            let hashes = (Sha256Digest::of(&old), Sha256Digest::of(&new));
            let packing = Packing { level: 3, window_log: WRITER_WINDOW_LOG };
            let budgets = Budgets { bytes: WRITER_SEGMENT_BUDGET, literals: Some(cut) };
            let patch = build_patch_with_budget(&old, &new, &hashes, packing, budgets).unwrap();
            let info = crate::inspect(&patch[..]).unwrap();
            let literals = info.streams()[LITERALS].1;
            proptest::prop_assert!(info.segments() as usize >= (literals as usize).div_ceil(cut));
            proptest::prop_assert_eq!(crate::apply(&old, &patch).unwrap(), new);
        }
    }

    #[test]
    fn segments_split_under_a_small_budget_and_apply() {
        let old: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut new = old.clone();
        for i in (0..new.len()).step_by(5) {
            new[i] = new[i].wrapping_add(1);
        }
        new.extend_from_slice(b"a literal tail");
        let hashes = (Sha256Digest::of(&old), Sha256Digest::of(&new));
        let patch = build_patch_with_budget(
            &old,
            &new,
            &hashes,
            Packing {
                level: 3,
                window_log: WRITER_WINDOW_LOG,
            },
            Budgets {
                bytes: 1000,
                literals: None,
            },
        )
        .unwrap();
        let info = crate::inspect(&patch[..]).unwrap();
        assert!(info.segments() >= 5, "{} segments", info.segments());
        assert_eq!(crate::apply(&old, &patch).unwrap(), new);
        let one = build_patch(
            &old,
            &new,
            Packing {
                level: 3,
                window_log: WRITER_WINDOW_LOG,
            },
        )
        .unwrap();
        assert_eq!(crate::inspect(&one[..]).unwrap().segments(), 1);
    }
}
