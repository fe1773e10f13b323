//! Turning operations into segments of five streams, and compressing them.

use super::matcher::Op;
use crate::error::Error;
use crate::format::{
    put_varint, zigzag_encode, Codec, LzmaParams, ModelParams, SegmentHeader, StreamDesc, CONTROL,
    DELTA_BYTES, DELTA_LENS, LITERALS, STREAMS, ZERO_RUNS,
};
use crate::transform::Literals;

/// Zero gaps up to this length inside a run of deltas are stored as delta bytes
/// (a zero byte compresses to almost nothing; a new run costs two varints).
/// Measured on the corpus's ELF pairs (gaps 0, 1, 3): 1 is best or within 0.2%
/// of best on five of seven; a gap of 3 is 1.2% smaller on libssl and 0.6% on
/// libxml2.
const MERGE_GAP: u64 = 1;

/// Inside a long copy, the segment budget is checked every this many delta bytes.
const BUDGET_CHECK: usize = 4096;

/// One segment's streams before compression.
#[derive(Default)]
pub(crate) struct RawSegment {
    pub(crate) new_len: u64,
    pub(crate) streams: [Vec<u8>; STREAMS],
    /// The segment's copies in order, as (old start, new start, length): what
    /// the plain layout's delta stream is computed from.
    pub(crate) copies: Vec<(usize, usize, usize)>,
    /// With transform 2 or 4, when the plain layout is tried: the old bytes
    /// of the copies as predicted (`src/refs.rs`), laid end to end.
    pub(crate) predicted: Vec<u8>,
}

impl RawSegment {
    /// Total bytes the segment copies from the old file.
    pub(crate) fn copied(&self) -> usize {
        self.copies.iter().map(|c| c.2).sum()
    }

    /// Whether the plain layout is worth trying: the segment copies something
    /// and its run and delta streams hold at least 1% of its bytes. Below that
    /// (Chromium's resource pack: mostly literals) the model could gain a
    /// fraction of those streams, under 0.1% of the patch, and would make
    /// apply decode every copied byte through it.
    pub(crate) fn worth_plain(&self) -> bool {
        let deltas: usize = [ZERO_RUNS, DELTA_LENS, DELTA_BYTES]
            .iter()
            .map(|&k| self.streams[k].len())
            .sum();
        self.copied() > 0 && deltas as u64 * 100 >= self.new_len
    }
}

/// Builds segments from the operations.
pub(crate) struct SegmentBuilder<'a> {
    old: &'a [u8],
    new: &'a [u8],
    budget: usize,
    literal_budget: usize,
    /// Bytes a segment may copy before it is closed (`usize::MAX`: no limit).
    copy_budget: usize,
    /// The transform literal runs go through, 1 or 16 (`src/transform.rs`).
    literals: Option<Literals>,
    /// With transform 2 or 4, every copied old byte as predicted, in the
    /// order of the copies (`references::predict_copies`): the deltas are
    /// taken against these. And how many of them are used.
    predicted: Option<&'a [u8]>,
    predicted_at: usize,
    /// Bytes the current segment copies so far.
    copied: usize,
    done: Vec<RawSegment>,
    cur: RawSegment,
    /// Delta-run state within the current segment.
    runs: Runs,
}

/// How the run layout cuts the deltas of copied bytes into its streams:
/// zero runs and delta lengths (a varint each per run of changed bytes),
/// and the changed bytes. Shared by the segment builder and the writer's
/// trial of reference kinds (`references::choose`), so that the trial
/// measures the streams the patch would hold.
#[derive(Default)]
pub(crate) struct Runs {
    /// Unchanged bytes before the run under way.
    pending_zeros: u64,
    /// Length of the run under way (0: none).
    pending_delta: u64,
    /// Unchanged bytes since the last changed one.
    gap: u64,
}

impl Runs {
    /// Counts `n` more unchanged bytes.
    #[inline]
    pub(crate) fn unchanged(&mut self, n: u64) {
        self.gap += n;
    }

    /// Adds a changed byte's nonzero delta `d` to `streams`.
    #[inline]
    pub(crate) fn changed(&mut self, d: u8, streams: &mut [Vec<u8>; STREAMS]) {
        if self.pending_delta > 0 && self.gap <= MERGE_GAP {
            streams[DELTA_BYTES].extend(std::iter::repeat_n(0u8, self.gap as usize));
            self.pending_delta += self.gap;
        } else if self.pending_delta > 0 {
            put_varint(&mut streams[ZERO_RUNS], self.pending_zeros);
            put_varint(&mut streams[DELTA_LENS], self.pending_delta);
            self.pending_zeros = self.gap;
            self.pending_delta = 0;
        } else {
            self.pending_zeros += self.gap;
        }
        self.gap = 0;
        streams[DELTA_BYTES].push(d);
        self.pending_delta += 1;
    }

    /// Ends the runs: writes the one under way and the unchanged bytes after it.
    pub(crate) fn flush(&mut self, streams: &mut [Vec<u8>; STREAMS]) {
        let mut pair = |zeros: u64, deltas: u64| {
            put_varint(&mut streams[ZERO_RUNS], zeros);
            put_varint(&mut streams[DELTA_LENS], deltas);
        };
        if self.pending_delta > 0 {
            pair(self.pending_zeros, self.pending_delta);
            if self.gap > 0 {
                pair(self.gap, 0);
            }
        } else {
            let z = self.pending_zeros + self.gap;
            if z > 0 {
                pair(z, 0);
            }
        }
        *self = Runs::default();
    }

    /// The deltas of `new` against `old` (equal lengths), unchanged bytes
    /// skipped eight at a time.
    pub(crate) fn push_all(&mut self, old: &[u8], new: &[u8], streams: &mut [Vec<u8>; STREAMS]) {
        let mut i = 0usize;
        while i < old.len() {
            if old
                .get(i..i + 8)
                .is_some_and(|o| Some(o) == new.get(i..i + 8))
            {
                self.unchanged(8);
                i += 8;
                continue;
            }
            let d = new.get(i).map_or(0, |&b| b.wrapping_sub(old[i]));
            if d == 0 {
                self.unchanged(1);
            } else {
                self.changed(d, streams);
            }
            i += 1;
        }
    }
}

impl<'a> SegmentBuilder<'a> {
    pub(crate) fn with_budget(old: &'a [u8], new: &'a [u8], budget: usize) -> Self {
        SegmentBuilder {
            old,
            new,
            budget,
            literal_budget: usize::MAX,
            copy_budget: usize::MAX,
            literals: None,
            predicted: None,
            predicted_at: 0,
            copied: 0,
            done: Vec::new(),
            cur: RawSegment::default(),
            runs: Runs::default(),
        }
    }

    /// Also closes a segment once it copies `bytes` (cutting a copy if needed),
    /// so that segments can be coded in parallel.
    pub(crate) fn with_copy_budget(mut self, bytes: usize) -> Self {
        self.copy_budget = bytes.max(1);
        self
    }

    /// Also closes a segment after the operation whose literals bring it to
    /// `bytes` or more, so that long literal streams are coded in parallel
    /// (see [`literals_in_pieces`]).
    pub(crate) fn with_literal_budget(mut self, bytes: usize) -> Self {
        self.literal_budget = bytes.max(1);
        self
    }

    /// Stores literal runs through transform 1 or 16 (`src/transform.rs`).
    pub(crate) fn with_literals(mut self, literals: Option<Literals>) -> Self {
        self.literals = literals;
        self
    }

    /// Takes deltas against the old bytes as transforms 2 and 4 predict
    /// them (`src/refs.rs`): `predicted` holds every copied old byte of the
    /// operations to come, in order, as predicted.
    pub(crate) fn with_predicted(mut self, predicted: Option<&'a [u8]>) -> Self {
        self.predicted = predicted;
        self
    }

    fn buffered(&self) -> usize {
        self.cur.streams[..LITERALS].iter().map(Vec::len).sum()
    }

    fn close_segment(&mut self) {
        self.runs.flush(&mut self.cur.streams);
        self.copied = 0;
        if self.cur.new_len > 0 {
            self.done.push(std::mem::take(&mut self.cur));
        }
    }

    fn push_ctrl(&mut self, add: usize, lit: usize, seek: i64) {
        let c = &mut self.cur.streams[CONTROL];
        put_varint(c, add as u64);
        put_varint(c, lit as u64);
        put_varint(c, zigzag_encode(seek));
        self.cur.new_len += (add + lit) as u64;
    }

    /// Adds the deltas of `len` bytes: new[n..n+len] - old[o..o+len] (the
    /// old bytes as predicted, with transform 2 or 4). Returns how many bytes were
    /// consumed before the segment budget was hit (all of them, unless a
    /// split is needed).
    fn push_deltas(&mut self, o: usize, n: usize, len: usize) -> usize {
        let Some(predicted) = self.predicted else {
            return self.push_delta_bytes(&self.old[o..o + len], &self.new[n..n + len]);
        };
        let from = self.predicted_at;
        let Some(pred) = predicted.get(from..from + len) else {
            // Cannot happen: the predicted bytes are the copies'. Carry on
            // without them, so that the build ends, and `finish` says so.
            self.predicted_at = usize::MAX;
            return self.push_delta_bytes(&self.old[o..o + len], &self.new[n..n + len]);
        };
        let used = self.push_delta_bytes(pred, &self.new[n..n + len]);
        // The keeping of predicted bytes is for the plain layout, whose
        // segments have a copy budget.
        if self.copy_budget != usize::MAX {
            self.cur.predicted.extend_from_slice(&pred[..used]);
        }
        self.predicted_at = self.predicted_at.saturating_add(used);
        used
    }

    /// The loop of [`Self::push_deltas`] over equal-length `old` and `new`.
    fn push_delta_bytes(&mut self, old: &[u8], new: &[u8]) -> usize {
        let len = old.len();
        let mut i = 0usize;
        while i < len {
            // Skip equal bytes eight at a time.
            if i + 8 <= len && old[i..i + 8] == new[i..i + 8] {
                self.runs.unchanged(8);
                i += 8;
                continue;
            }
            let d = new[i].wrapping_sub(old[i]);
            i += 1;
            if d == 0 {
                self.runs.unchanged(1);
                continue;
            }
            self.runs.changed(d, &mut self.cur.streams);
            if self.cur.streams[DELTA_BYTES].len() % BUDGET_CHECK == 0
                && self.buffered() >= self.budget
            {
                return i;
            }
        }
        len
    }

    /// Adds one operation; `next_old` is where the next operation copies from.
    pub(crate) fn push(&mut self, op: &Op, next_old: usize) {
        let mut old_start = op.old_start;
        let mut new_start = op.new_start;
        let mut add = op.add_len;
        loop {
            // `copied < copy_budget` here: a segment is closed when it reaches it.
            let room = self.copy_budget.saturating_sub(self.copied).max(1);
            let used = self.push_deltas(old_start, new_start, add.min(room));
            if used > 0 {
                self.cur.copies.push((old_start, new_start, used));
                self.copied += used;
            }
            if used == add {
                break;
            }
            // A budget reached inside the copy: end the operation and the segment here.
            self.push_ctrl(used, 0, 0);
            self.close_segment();
            old_start += used;
            new_start += used;
            add -= used;
        }
        let mut at = new_start + add;
        let mut extra = op.extra_len;
        loop {
            // A literal budget reached inside the run: end the operation
            // and the segment there; the rest follows with nothing copied.
            let room = self
                .literal_budget
                .saturating_sub(self.cur.streams[LITERALS].len())
                .max(1);
            let take = extra.min(room);
            let lits = &mut self.cur.streams[LITERALS];
            let from = lits.len();
            lits.extend_from_slice(&self.new[at..at + take]);
            if let Some(kind) = self.literals {
                crate::transform::encode_run(kind, &mut lits[from..], at as u64);
            }
            if take == extra {
                break;
            }
            self.push_ctrl(add, take, 0);
            self.close_segment();
            old_start += add;
            add = 0;
            at += take;
            extra -= take;
        }
        let seek = next_old as i64 - (old_start + add) as i64;
        self.push_ctrl(add, extra, seek);
        if self.buffered() >= self.budget
            || self.copied >= self.copy_budget
            || self.cur.streams[LITERALS].len() >= self.literal_budget
        {
            self.close_segment();
        }
    }

    /// The segments; an error if the operations did not use exactly the
    /// predicted bytes given to [`Self::with_predicted`].
    pub(crate) fn finish(mut self) -> Result<Vec<RawSegment>, Error> {
        self.close_segment();
        if self.predicted.is_some_and(|p| p.len() != self.predicted_at) {
            return Err(Error::Bug("predicted bytes and copies differ in length"));
        }
        Ok(self.done)
    }
}

/// Compression settings for the streams.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packing {
    pub(crate) level: i32,
    pub(crate) window_log: u32,
}

impl Packing {
    /// Whether segments are also tried in plain layout with the delta model:
    /// from [`PLAIN_MIN_LEVEL`] up, above the default.
    pub(crate) fn tries_plain(&self) -> bool {
        self.level >= PLAIN_MIN_LEVEL
    }

    /// Whether long literal streams are also tried with LZMA: at the levels
    /// tuned for size, the default ([`SIZE_MIN_LEVEL`]) and above.
    pub(crate) fn tries_lzma(&self) -> bool {
        self.level >= SIZE_MIN_LEVEL
    }

    /// The zstd level of the run streams (zero runs, delta lengths, delta
    /// bytes) when they are not tried against the model: [`RUNS_LEVEL`] at
    /// the default level, else the level itself.
    pub(crate) fn runs_level(&self) -> i32 {
        self.at_default_else_level(RUNS_LEVEL)
    }

    /// The zstd level of the literal stream where it is not [cut into
    /// pieces](literals_in_pieces): [`LITERALS_LEVEL`] at the default
    /// level, else the level itself.
    pub(crate) fn literals_level(&self) -> i32 {
        self.at_default_else_level(LITERALS_LEVEL)
    }

    /// `default` at the default level (the levels tuned for size below the
    /// model's), else the level itself.
    fn at_default_else_level(&self, default: i32) -> i32 {
        if (SIZE_MIN_LEVEL..PLAIN_MIN_LEVEL).contains(&self.level) {
            default
        } else {
            self.level
        }
    }

    /// Files whose copies add up to more than this are not tried in plain
    /// layout: [`PLAIN_MAX_COPIED`] at level 20, [`PLAIN_MAX_COPIED_ULTRA`]
    /// from [`ULTRA_MIN_LEVEL`] up.
    pub(crate) fn plain_max_copied(&self) -> usize {
        if self.level >= ULTRA_MIN_LEVEL {
            PLAIN_MAX_COPIED_ULTRA
        } else {
            PLAIN_MAX_COPIED
        }
    }
}

/// The lowest level tuned for size, and the default: the control stream at
/// zstd's level 19, the literal stream at [`LITERALS_LEVEL`] (long ones also
/// tried with LZMA), the run streams at [`RUNS_LEVEL`].
pub(crate) const SIZE_MIN_LEVEL: i32 = 19;

/// The zstd level of the run streams at the default level. Level 19 costs
/// most where they are long: the diff took 0.62-0.63x qbsdiff's time on
/// libxml2 and libcrypto with them at level 19, against 0.39-0.51x at
/// level 3, for patches 8-13% smaller (2026-12-02, docs/BENCHMARKS.md).
/// Level 9 takes 1-13% off the patches against level 3 (libnode 13%, libgio
/// 11%, libc 7%, libxml2 4%, expat 1%) for 0-2% more diff time on the
/// libraries of 1-2 MB (15 interleaved rounds), 5% on libcrypto; it was 3 until
/// 2026-12-02 (evening), when libxml2 had no margin left for it.
pub(crate) const RUNS_LEVEL: i32 = 9;

/// The zstd level of the literal stream at the default level. On the
/// libraries of minor updates that stream is 7-40 KB, and level 19 coded it
/// at 3-5 MB/s, the last job to finish: libunbound's 40 KB took 10-15 ms of
/// a 55 ms diff. Level 16 (zstd's `btopt` on streams this short, where 19
/// is `btultra2`, which codes the first block twice) is 1.7x as fast for
/// 0-0.5% more on the stream (libunbound +71 bytes, libexpat +59,
/// libcrypto +63; the libraries of 1-2 MB mostly 0): diff time 0.85x on
/// libunbound, 0.96x on libavformat, 0.93x on libgnutls (11 interleaved
/// rounds, 2026-12-02). Level 15 was no faster there for 0.1-0.4% more.
pub(crate) const LITERALS_LEVEL: i32 = 16;

/// The lowest zstd level at which the plain layout is tried with the delta
/// model. It was the default (19) until 2026-12-02: the model makes the
/// patches of the corpus's libraries of 1 MB and more 34-42% smaller, but
/// on libc and libxml2 it makes the diff 1.6-1.8x slower, and issue 2
/// bounds the default's diff at half of qbsdiff's (docs/BENCHMARKS.md).
pub(crate) const PLAIN_MIN_LEVEL: i32 = 20;

/// Files whose copies add up to more than this are not tried in plain layout
/// at level 20:
/// the delta model decodes at 11-24 MB/s where zstd decodes the run layout at
/// hundreds of MB/s, so this bounds what the model adds to an apply to about
/// 1.5-3 s (16-21 MiB/s measured on files of 18-51 MiB copied), and large
/// files (libnode's 45 MiB of copies) keep the speed of `zstd --patch-from`.
/// It was 16 MiB until a file just above it (pyarrow's libarrow_flight,
/// 18.4 MiB) came out 1.18x the size of qbsdiff's patch in the run layout and
/// 0.50x with the model (docs/BENCHMARKS.md).
pub(crate) const PLAIN_MAX_COPIED: usize = 32 << 20;

/// From this level up, the plain layout is also tried for files of up to
/// [`PLAIN_MAX_COPIED_ULTRA`] copied: the smallest patches of large files, at
/// the price of the model's apply speed (libnode: 285 KB instead of 680 KB,
/// 2.1 s to apply instead of 0.11 s).
pub(crate) const ULTRA_MIN_LEVEL: i32 = 21;

/// The most copies the writer codes with the model, from [`ULTRA_MIN_LEVEL`]:
/// the default [`Limits::max_model_len`](crate::Limits::max_model_len), so a
/// reader with the default limits accepts every patch the writer makes.
pub(crate) const PLAIN_MAX_COPIED_ULTRA: usize = 64 << 20;

/// When the plain layout is tried, segments are cut into pieces of equal
/// copied bytes, at most this many, so that their model encodings run in
/// parallel; each piece starts a fresh model. 4 MiB keeps the small libraries
/// whole: coding the corpus's delta streams in halves costs 0.1-5.5% of their
/// size (libssl the most), in quarters up to 6.4% (libpython3.11 gains 6.7%:
/// a fresh model suits its second half better) (2026-11-29).
pub(crate) const PLAIN_PIECE_MAX: usize = 4 << 20;

/// The piece size for `copied` bytes: the fewest pieces of at most
/// [`PLAIN_PIECE_MAX`], of equal size.
pub(crate) fn plain_piece(copied: usize) -> usize {
    let pieces = copied.div_ceil(PLAIN_PIECE_MAX).max(1);
    copied.div_ceil(pieces).max(1)
}

/// The segment's plain-layout delta stream coded with the delta model:
/// descriptor and bytes. The model's history window is the smallest power of
/// two that holds the whole stream, at most 2^`window_log`, so apply allocates
/// no more than it needs. With `split` the model's two halves run on two
/// threads (same bytes).
pub(crate) fn pack_plain(
    seg: &RawSegment,
    old: &[u8],
    new: &[u8],
    packing: Packing,
    split: bool,
) -> (StreamDesc, Vec<u8>) {
    let copied = seg.copied();
    let min_log = u32::from(ModelParams::MIN_WINDOW_LOG);
    let cap = u32::from(ModelParams::window_log_cap(copied as u64));
    let window_log = cap.min(packing.window_log.max(min_log));
    let packed = if seg.predicted.is_empty() {
        crate::model::encode(old, new, &seg.copies, window_log, split, true)
    } else {
        // The predicted old bytes lie end to end: the copies read them in turn.
        let mut at = 0;
        let copies: Vec<(usize, usize, usize)> = seg
            .copies
            .iter()
            .map(|&(_, n, l)| {
                at += l;
                (at - l, n, l)
            })
            .collect();
        crate::model::encode(&seg.predicted, new, &copies, window_log, split, true)
    };
    let params = ModelParams {
        window_log: u8::try_from(window_log).unwrap_or(ModelParams::MAX_WINDOW_LOG),
    };
    (
        StreamDesc {
            raw_len: copied as u64,
            codec: Codec::BlockModel,
            stored_len: packed.len() as u64,
            model: Some(params),
            lzma: None,
        },
        packed,
    )
}

/// Literal streams at least this long are also compressed with LZMA
/// ([`tries_lzma`]). Below it LZMA gains a few dozen bytes at most on the
/// corpus (0.2-2% of the literals), while its encoder, at 1.4-2 MB/s,
/// would lengthen the diffs that the time target is on.
const LZMA_MIN: usize = 64 << 10;

/// LZMA is kept only when it is at least this much smaller than zstd: it
/// decodes at 26-42 MB/s here (LZMA literals made libxul's apply 18% longer).
const LZMA_GAIN: f64 = 0.98;

/// LZMA properties of literal streams: `lc = 1, lp = 2, pb = 2`. Literals
/// of large files are often tables of 4- and 8-byte values, whose byte
/// position the literal coder (`lp`) and the match coder (`pb`) can use.
/// Against zstd level 19 (2026-11-30, `deltaswap info` on the patches): the
/// literals of JDK 21's `modules` 410,535 → 351,922 bytes, Firefox's libxul
/// 2,534,000 → 2,100,393, LibreOffice's libmergedlo 340,506 → 242,072. Of
/// (0,2,2), (3,0,0), (0,0,0) and (1,2,2) under `xz --lzma1=preset=9e` it was
/// best on two of the three and 0.3% behind (0,2,2) on libxul.
const LZMA_PROPS: (u32, u32, u32) = (1, 2, 2);

/// The match length at which LZMA's match finder stops looking for a
/// longer one. lzma-rust2 on the literal streams of five pairs (best of
/// three runs, 2026-12-02), against the maximum (273) used before:
/// libMagickCore 56.0 → 48.2 ms (−12 bytes), pydantic-core 2.18.3 → 2.18.4
/// 34.1 → 24.9 ms (+26 bytes), lxml 5.2.1 → 5.2.2 19.3 → 15.7 ms (+1 byte),
/// OpenBLAS across numpy 2 354 → 299 ms (+160 bytes, 0.05%), half of
/// lxml 4 → 5's literals 828 → 743 ms (+295 bytes, 0.06%). 32 loses more
/// (0.1-0.2%) for little more speed.
const LZMA_NICE_LEN: u32 = 64;

/// Largest LZMA dictionary the writer uses (log2): 16 MiB, the default
/// [`Limits::max_window_log`](crate::Limits::max_window_log) of readers.
const LZMA_MAX_DICT_LOG: u32 = 24;

/// Whether a literal stream is also coded with LZMA: at the levels tuned
/// for size, when it is at least [`LZMA_MIN`] bytes long and its first
/// [`LZMA_PROBE`] bytes compress at zstd's fastest level to under
/// [`INCOMPRESSIBLE`] of their length (Chromium's resource pack, already
/// compressed, is not: an LZMA trial of its 15 MB of literals would cost
/// seconds for nothing). The writer runs the trial as a job of its own,
/// beside the stream's zstd job, and keeps whichever [`lzma_wins`].
pub(crate) fn tries_lzma(raw: &[u8], packing: Packing) -> bool {
    raw.len() >= LZMA_MIN && packing.tries_lzma() && compresses(raw)
}

/// Whether `raw`'s first [`LZMA_PROBE`] bytes compress at zstd's fastest
/// level to under [`INCOMPRESSIBLE`] of their length.
pub(crate) fn compresses(raw: &[u8]) -> bool {
    let probe = raw.get(..LZMA_PROBE).unwrap_or(raw);
    zstd::bulk::compress(probe, 1)
        .is_ok_and(|c| (c.len() as f64) < probe.len() as f64 * INCOMPRESSIBLE)
}

/// Whether the literals are cut into [`LITERAL_PIECES`] segments, each
/// with its own LZMA job: at the default level, when there are at least
/// [`LITERAL_PIECES`] × [`LZMA_MIN`] of them and they compress
/// (`compresses`, the probe of [`tries_lzma`]). LZMA codes 1.5-2 MB a
/// second on one core, zstd's level 16 about four times as fast: one LZMA
/// job on such a stream outlasts every other job of the patch and keeps the
/// other core waiting. zstd, whose output LZMA replaces on such streams,
/// codes them first at [`LZMA_FALLBACK_LEVEL`]; where LZMA does not win
/// against that, the stream is coded again at [`Packing::literals_level`].
///
/// Across major versions (where [`literals_dominate`]: lxml 4 → 5,
/// pydantic-core, numpy, cryptography) the diff took 0.58-0.71x the time
/// it took with one LZMA job beside zstd's level 19 (2026-12-02). On minor
/// updates with 128 KiB or more of literals, far under that share, the
/// same cut takes ImageMagick's libMagickCore (208 KB of literals in 5.7
/// MB of old and new) from 225 to 191 ms and pydantic-core 2.18.3 → 2.18.4
/// (155 KB in 10 MB) from 200 to 194 ms, for patches 1.1% and 1.3% larger:
/// each piece's LZMA starts without the other's data (7 interleaved
/// rounds). Below that size, where most minor updates are, nothing is cut.
pub(crate) fn literals_in_pieces(
    packing: Packing,
    literals: usize,
    compresses: impl FnOnce() -> bool,
) -> bool {
    packing.level == SIZE_MIN_LEVEL && literals >= LITERAL_PIECES * LZMA_MIN && compresses()
}

/// Whether the literals dominate the diff, as across a major version,
/// where much of the new file is new code: more than a sixteenth of old and
/// new together. Where they are also [cut into pieces](literals_in_pieces)
/// the run streams are coded at [`DOMINANT_RUNS_LEVEL`]. Minor updates
/// have literals of 0.001-0.7 of that sixteenth.
pub(crate) fn literals_dominate(literals: usize, inputs: usize) -> bool {
    literals.saturating_mul(16) > inputs
}

/// How many segments [`literals_in_pieces`] cuts the literals into: one
/// LZMA job for each of two cores. A fixed number, so that the patch does
/// not depend on the thread count; a third piece made lxml's patch 1.3%
/// larger again for no time on two cores.
pub(crate) const LITERAL_PIECES: usize = 2;

/// The zstd level of literal streams [cut into pieces](literals_in_pieces):
/// LZMA's result replaces zstd's on such streams, so zstd's is a fallback.
pub(crate) const LZMA_FALLBACK_LEVEL: i32 = 3;

/// The zstd level of the run streams (zero runs, delta lengths, delta
/// bytes) where [`literals_dominate`] (and they are cut into pieces),
/// instead of [`RUNS_LEVEL`]: their
/// jobs run beside the literals' LZMA, and across a major version, where
/// the copies change in many bytes, the stronger level takes 1-1.6% off
/// the patch against level 9 (level 15, zstd's `btopt`: cryptography
/// 1,690,960 → 1,663,800 bytes, lxml 1,367,854 → 1,353,899, numpy
/// 957,922 → 943,116, pydantic-core 1,335,810 → 1,319,347; 1.8-2.7%
/// against level 3) for a diff time within −2.5% to +4.3% of level 3's
/// (7 interleaved rounds). Level 19 takes 0.0-1.3% more off than level 15,
/// at 2-14% more time than level 3.
pub(crate) const DOMINANT_RUNS_LEVEL: i32 = 15;

/// The bytes of a literal stream [`tries_lzma`] compresses to decide.
pub(crate) const LZMA_PROBE: usize = 256 << 10;

/// LZMA's `stored` bytes win over the stream `other` stores when they are at
/// least 2% fewer ([`LZMA_GAIN`]).
pub(crate) fn lzma_wins(stored: usize, other: &StreamDesc) -> bool {
    (stored as f64) < other.stored_len as f64 * LZMA_GAIN
}

/// A rough cost of coding `len` literal bytes with LZMA, in the unit of
/// [`zstd_cost`](super::zstd_cost): 0.5-0.7 µs per byte here (lzma-rust2 at
/// its strongest settings, 2026-11-30), about twice zstd level 19's.
pub(crate) fn lzma_cost(len: usize) -> u64 {
    (len as u64).saturating_mul(8)
}

/// `raw` as raw LZMA (no header, no end marker: the descriptor gives the
/// length) with [`LZMA_PROPS`] and the smallest dictionary that holds it, at
/// most 2^[`LZMA_MAX_DICT_LOG`] and 2^`window_log`.
pub(crate) fn pack_lzma(raw: &[u8], window_log: u32) -> std::io::Result<(StreamDesc, Vec<u8>)> {
    use lzma_rust2::{LzmaOptions, LzmaWriter};
    let cap = u32::from(LzmaParams::dict_log_cap(raw.len() as u64));
    let dict_log = cap
        .min(LZMA_MAX_DICT_LOG)
        .min(window_log)
        .max(u32::from(LzmaParams::MIN_DICT_LOG));
    let (lc, lp, pb) = LZMA_PROPS;
    let mut opts = LzmaOptions::with_preset(9);
    opts.lc = lc;
    opts.lp = lp;
    opts.pb = pb;
    opts.nice_len = LZMA_NICE_LEN;
    opts.dict_size = 1 << dict_log;
    let mut w = LzmaWriter::new_no_header(Vec::new(), &opts, false)?;
    std::io::Write::write_all(&mut w, raw)?;
    let packed = w.finish()?;
    let params = LzmaParams {
        props: u8::try_from((pb * 5 + lp) * 9 + lc).unwrap_or(0),
        dict_log: u8::try_from(dict_log).unwrap_or(LzmaParams::MIN_DICT_LOG),
    };
    Ok((
        StreamDesc {
            raw_len: raw.len() as u64,
            codec: Codec::Lzma,
            stored_len: packed.len() as u64,
            model: None,
            lzma: Some(params),
        },
        packed,
    ))
}

/// Streams at least this long are first compressed at [`PROBE_LEVEL`].
const PROBE_MIN: usize = 1 << 20;
/// The fast level used to detect incompressible streams.
const PROBE_LEVEL: i32 = 3;
/// A stream whose fast compression keeps more than this share of its size is
/// stored with the fast result.
const INCOMPRESSIBLE: f64 = 0.95;

/// A stream compressed in jobs (see `mark_long_streams`) is cut into jobs of
/// this many bytes.
pub(crate) const ZSTD_JOB: usize = 1 << 20;
/// Each job also sees this much of the data before it: libzstd's
/// `overlapLog`, the log2 of a fraction of the window (6: an eighth).
const ZSTD_OVERLAP_LOG: u32 = 6;
/// The match finder's chain log for a stream compressed in jobs (hash log
/// one less; a job and its overlap span at most 2 MiB).
const ZSTD_JOB_CHAIN_LOG: u32 = 21;
/// libzstd's worker threads for a stream compressed in jobs: as many as
/// rayon's, at most this many.
const MAX_ZSTD_WORKERS: usize = 8;

/// One zstd frame with the format's fixed parameters: no checksum (the patch has
/// SHA-256), no dictionary id, content size recorded, window capped.
fn zstd_frame(raw: &[u8], level: i32, window_log: u32, jobs: bool) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(CParameter::WindowLog(window_log))?;
    // libzstd's output in this mode depends on the job size and the overlap,
    // not on the number of workers, so the patch does not depend on the
    // thread count (a test checks it). A libzstd built without threads (a
    // system library, with zstd-sys told to use it) refuses workers: the
    // stream is then compressed on this thread, a valid frame of other bytes.
    let workers = rayon::current_num_threads().clamp(1, MAX_ZSTD_WORKERS);
    if jobs
        && c.set_parameter(CParameter::NbWorkers(workers as u32))
            .is_ok()
    {
        c.set_parameter(CParameter::JobSize(ZSTD_JOB as u32))?;
        c.set_parameter(CParameter::OverlapSizeLog(ZSTD_OVERLAP_LOG))?;
        // A job searches at most its own megabyte and the one before it, and
        // each worker has its own match finder: tables for 2^21 positions
        // (12 MiB a worker) give the same size within 0.01% as libzstd's
        // level-19 sizes (50 MiB a worker).
        c.set_parameter(CParameter::ChainLog(ZSTD_JOB_CHAIN_LOG))?;
        c.set_parameter(CParameter::HashLog(ZSTD_JOB_CHAIN_LOG - 1))?;
    }
    c.set_parameter(CParameter::ChecksumFlag(false))?;
    c.set_parameter(CParameter::DictIdFlag(false))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    c.compress(raw)
}

/// One stream as stored: its descriptor and bytes.
pub(crate) fn pack_stream(
    raw: &[u8],
    packing: Packing,
    jobs: bool,
) -> std::io::Result<(StreamDesc, Vec<u8>)> {
    let raw_desc = StreamDesc {
        raw_len: raw.len() as u64,
        codec: Codec::Raw,
        stored_len: raw.len() as u64,
        model: None,
        lzma: None,
    };
    if raw.is_empty() {
        return Ok((StreamDesc::EMPTY, Vec::new()));
    }
    // Large streams that barely compress at a fast level (already-compressed
    // resources) are not worth the strong level: it costs seconds per MiB and
    // gains a fraction of a percent.
    let mut packed = None;
    if raw.len() >= PROBE_MIN && packing.level > PROBE_LEVEL {
        let fast = zstd_frame(raw, PROBE_LEVEL, packing.window_log, false)?;
        if fast.len() as f64 > raw.len() as f64 * INCOMPRESSIBLE {
            packed = Some(fast);
        }
    }
    let packed = match packed {
        Some(p) => p,
        None => zstd_frame(raw, packing.level, packing.window_log, jobs)?,
    };
    if packed.len() < raw.len() {
        Ok((
            StreamDesc {
                raw_len: raw.len() as u64,
                codec: Codec::Zstd,
                stored_len: packed.len() as u64,
                model: None,
                lzma: None,
            },
            packed,
        ))
    } else {
        Ok((raw_desc, raw.to_vec()))
    }
}

/// A segment ready to write.
pub(crate) struct PackedSegment {
    pub(crate) header: SegmentHeader,
    pub(crate) payloads: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference trial's runs (`Runs::push_all`, piece by piece) are the
    /// run streams the segment builder writes for the same copy: changed
    /// bytes alone, in runs, one unchanged byte inside a run (merged), long
    /// unchanged stretches, and a change in the last byte.
    #[test]
    fn trial_runs_are_the_segment_builders() {
        let mut rnd = crate::test_rng(0x005E_ED0F_2024);
        let old: Vec<u8> = (0..50_000).map(|_| rnd() as u8).collect();
        let mut new = old.clone();
        for at in [0, 1, 2, 4, 100, 101, 103, 9_000, 20_000, 20_001, 49_999] {
            new[at] = new[at].wrapping_add(1);
        }
        for at in (30_000..31_000).step_by(7) {
            new[at] ^= 0x40;
        }
        let op = Op {
            new_start: 0,
            old_start: 0,
            add_len: old.len(),
            extra_len: 0,
        };
        let mut builder = SegmentBuilder::with_budget(&old, &new, usize::MAX);
        builder.push(&op, old.len());
        let segments = builder.finish().unwrap();
        assert_eq!(segments.len(), 1);
        let mut runs = Runs::default();
        let mut streams: [Vec<u8>; STREAMS] = Default::default();
        for (from, to) in [(0, 101), (101, 20_000), (20_000, old.len())] {
            runs.push_all(&old[from..to], &new[from..to], &mut streams);
        }
        runs.flush(&mut streams);
        for k in [ZERO_RUNS, DELTA_LENS, DELTA_BYTES] {
            assert!(!streams[k].is_empty(), "stream {k} empty");
            assert_eq!(streams[k], segments[0].streams[k], "stream {k}");
        }
    }

    /// A stream compressed in jobs is the same frame whatever the number of
    /// libzstd's workers (so the patch does not depend on the thread count),
    /// and decodes to the stream.
    #[test]
    fn jobs_give_the_same_frame_on_any_thread_count() {
        let mut rnd = crate::test_rng(0x0123_4567_89AB_CDEF);
        // Compressible, with repeats near and far: 2.5 jobs.
        let mut raw = Vec::with_capacity(5 * ZSTD_JOB / 2);
        while raw.len() < 5 * ZSTD_JOB / 2 {
            let r = rnd();
            if r % 4 == 0 && raw.len() > 4096 {
                let back = (rnd() as usize) % raw.len().min(3 * ZSTD_JOB / 2);
                let from = raw.len() - back - 1;
                let take = 8 + (r as usize >> 8) % 64;
                for i in 0..take {
                    raw.push(raw[from + i % (back + 1)]);
                }
            } else {
                raw.push((r % 40) as u8 + b'A');
            }
        }
        let frame = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| zstd_frame(&raw, 19, 23, true).unwrap())
        };
        let one = frame(1);
        // Jobs are in use: the frame is not the one-thread frame.
        assert!(one != zstd_frame(&raw, 19, 23, false).unwrap());
        assert!(one == frame(2), "2 workers");
        assert!(one == frame(3), "3 workers");
        assert_eq!(zstd::bulk::decompress(&one, raw.len()).unwrap(), raw);
        assert!(one.len() < raw.len() / 2, "{} of {}", one.len(), raw.len());
    }
}
