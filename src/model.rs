//! The delta model: codecs 3 and 5, which code the plain layout's delta
//! stream one byte at a time with a binary arithmetic coder, predicting each
//! delta from the old bytes it is added to. Codec 5 also skips blocks of
//! unchanged deltas behind one coded flag (docs/MODEL.md, "Zero blocks").
//!
//! A copied byte's delta is zero unless the byte changed, and where bytes
//! change is written in the old file: the four bytes after a call opcode, the
//! low bytes of a pointer in a table. A general-purpose compressor sees only
//! the deltas; this model also sees the old bytes (the applier reads them
//! anyway), so it learns which old contexts precede changes. On the corpus's
//! library pairs that makes the delta stream 22-50% smaller than LZMA with the
//! strongest settings, and several times faster to encode (docs/MODEL.md).
//!
//! Each delta is coded as a "changed" bit, then, when changed, its eight bits
//! from the top. Every bit's probability is a logistic mix of adaptive
//! counters looked up in context tables; the mixer's weights are learned as
//! the stream is coded. The encoder and decoder run the same model, so the
//! coded bytes carry no model parameters: only the stream's bytes and the
//! history window's size. docs/MODEL.md specifies the model completely.
//!
//! Everything here is integer arithmetic, identical on every platform. Table
//! indices are masked to the table's size and read through `get`, so no
//! coded byte can index outside a table; memory is fixed by the window size
//! and the stream's declared length, both checked before [`Model::new`].

/// Interpolation knots of the logistic function `4096 / (1 + e^(-x/256))` at
/// x = -2048, -1920, ..., 2048 (computed, rounded to integers).
const KNOTS: [i32; 33] = [
    1, 2, 4, 6, 10, 17, 27, 45, 74, 120, 194, 311, 488, 747, 1102, 1546, 2048, 2550, 2994, 3349,
    3608, 3785, 3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090, 4092, 4094, 4095,
];

/// Probability (12 bits) of the logit `d` (scaled by 256), by interpolation.
const fn squash(d: i32) -> i32 {
    if d > 2047 {
        return 4095;
    }
    if d < -2047 {
        return 1;
    }
    let x = d + 2048;
    let i = (x >> 7) as usize;
    let f = x & 127;
    (KNOTS[i] * (128 - f) + KNOTS[i + 1] * f + 64) >> 7
}

/// The inverse of [`squash`]: the smallest logit whose probability reaches p.
const STRETCH: [i16; 4096] = {
    let mut t = [0i16; 4096];
    let mut next = 0usize;
    let mut x = -2047;
    while x <= 2047 {
        let v = squash(x) as usize;
        while next <= v {
            t[next] = x as i16;
            next += 1;
        }
        x += 1;
    }
    while next < 4096 {
        t[next] = 2047;
        next += 1;
    }
    t
};

/// [`squash`] of every logit in -2047..=2047, at index `logit + 2047`: the
/// mixers' output without the interpolation.
const SQUASHED: [u16; 4095] = {
    let mut t = [0u16; 4095];
    let mut i = 0;
    while i < 4095 {
        t[i] = squash(i as i32 - 2047) as u16;
        i += 1;
    }
    t
};

/// [`p16`] of each [`SQUASHED`] entry: the coder's probability, looked up.
const SQUASHED16: [u16; 4095] = {
    let mut t = [0u16; 4095];
    let mut i = 0;
    while i < 4095 {
        t[i] = p16(SQUASHED[i] as i32) as u16;
        i += 1;
    }
    t
};

/// The index into [`SQUASHED`] of a mixer's dot product (a logit scaled by
/// 2^24), clamped.
#[inline]
fn squash_index(dot: i64) -> usize {
    ((dot >> 16).clamp(-2047, 2047) + 2047) as usize
}

#[inline]
fn stretch(p12: u32) -> i32 {
    i32::from(STRETCH[(p12 & 4095) as usize])
}

/// A counter adapts at rate 1/(n + 1.5) for its first `LIMIT` updates, then at
/// 1/(LIMIT + 1.5): fast to learn, and quick to follow a stream that changes
/// character. Of 4, 6, 8, 11, 14, 20 and 30, 6 codes the corpus's delta
/// streams smallest (2026-11-29).
const LIMIT: u32 = 6;

/// 2^16 / (min(n, LIMIT) + 1.5) for every 10-bit count n (counts above
/// LIMIT do not occur; the table covers them so that it needs no check).
const RECIP: [u32; 1024] = {
    let mut t = [0u32; 1024];
    let mut n = 0;
    while n < 1024 {
        let c = if n < LIMIT as usize {
            n
        } else {
            LIMIT as usize
        };
        t[n] = 131_072 / (2 * c as u32 + 3);
        n += 1;
    }
    t
};

/// An adaptive bit probability: P(1) in the top 22 bits, the update count in
/// the low 10.
#[derive(Clone, Copy)]
struct Counter(u32);

impl Counter {
    const INIT: Counter = Counter(1 << 31);

    #[inline]
    fn p12(self) -> u32 {
        self.0 >> 20
    }

    #[inline]
    fn update(&mut self, bit: u32) {
        let n = self.0 & 1023;
        let p = i64::from(self.0 >> 10);
        let target = (i64::from(bit) << 22) - i64::from(bit);
        let rate = i64::from(RECIP[n as usize]);
        // rate < 2^16, so p moves toward target without passing it: it stays
        // in 0..2^22.
        let np = p + (((target - p) * rate) >> 16);
        let nn = n + u32::from(n < LIMIT);
        self.0 = ((np as u32) << 10) | nn;
    }
}

/// Entries of a table at full size: every table's full-scale size is at
/// most this, and a [`Full`] model allocates this many for each.
const TABLE_LEN: usize = 1 << 16;
const TABLE_MASK: usize = TABLE_LEN - 1;

/// Storage for a table of `T`, indexed by slots already masked to the
/// table's size (docs/MODEL.md). Two layouts give the same results: which
/// one a model uses is a matter of speed and memory only.
pub(crate) trait Slots<T: Copy>: Sized + Send {
    /// `len` entries (at most [`TABLE_LEN`]) of `value`.
    fn filled(len: usize, value: T) -> Self;
    fn at(&self, slot: usize) -> Option<&T>;
    fn at_mut(&mut self, slot: usize) -> Option<&mut T>;
}

/// [`TABLE_LEN`] entries whatever the length asked for: a slot masked to it
/// is always inside, so lookups need no bounds check. For long streams,
/// whose tables are at full size anyway.
pub(crate) struct FullSlots<T>(Box<[T; TABLE_LEN]>);

/// Exactly the length asked for (a stream's scaled table size): small
/// tables for short streams.
pub(crate) struct ScaledSlots<T>(Box<[T]>);

impl<T: Copy + Send> Slots<T> for FullSlots<T> {
    fn filled(_len: usize, value: T) -> Self {
        let cells = vec![value; TABLE_LEN].into_boxed_slice();
        // The vector has exactly TABLE_LEN entries, so the conversion holds.
        match cells.try_into() {
            Ok(full) => FullSlots(full),
            Err(_) => unreachable!("a boxed slice of TABLE_LEN entries"),
        }
    }

    #[inline]
    fn at(&self, slot: usize) -> Option<&T> {
        self.0.get(slot & TABLE_MASK)
    }

    #[inline]
    fn at_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.0.get_mut(slot & TABLE_MASK)
    }
}

impl<T: Copy + Send> Slots<T> for ScaledSlots<T> {
    fn filled(len: usize, value: T) -> Self {
        ScaledSlots(vec![value; len.min(TABLE_LEN)].into_boxed_slice())
    }

    #[inline]
    fn at(&self, slot: usize) -> Option<&T> {
        self.0.get(slot)
    }

    #[inline]
    fn at_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.0.get_mut(slot)
    }
}

/// Which [`Slots`] a model's tables use.
pub(crate) trait Sizing: Send + 'static {
    type Of<T: Copy + Send>: Slots<T>;
}

/// Flag, last-delta and match tables of [`TABLE_LEN`] entries: the fast
/// layout for long streams. (The value tables, read only at changed bytes,
/// keep their scaled sizes in both layouts.)
pub(crate) enum Full {}

/// Tables of the stream's scaled size: the small layout for short streams.
pub(crate) enum Scaled {}

impl Sizing for Full {
    type Of<T: Copy + Send> = FullSlots<T>;
}

impl Sizing for Scaled {
    type Of<T: Copy + Send> = ScaledSlots<T>;
}

/// Streams of more than this many deltas get [`Full`] tables: their tables
/// are all at full scale (docs/MODEL.md: `scale` ≥ 16), so the fixed size
/// costs no memory they would not use, and a short stream does not pay
/// for allocating 4 MiB.
const FULL_FROM: u64 = 1 << 13;

/// A table of counters indexed by a context, masked to its size.
struct Table<Z: Sizing> {
    cells: Z::Of<Counter>,
    mask: u32,
}

impl<Z: Sizing> Table<Z> {
    fn new(bits: u32) -> Table<Z> {
        Table {
            cells: Slots::filled(1 << bits, Counter::INIT),
            mask: (1 << bits) - 1,
        }
    }

    #[inline]
    fn slot(&self, ctx: u32) -> usize {
        (ctx & self.mask) as usize
    }

    #[inline]
    fn p12(&self, slot: usize) -> u32 {
        self.cells.at(slot).map_or(2048, |c| c.p12())
    }

    #[inline]
    fn update(&mut self, slot: usize, bit: u32) {
        if let Some(c) = self.cells.at_mut(slot) {
            c.update(bit);
        }
    }
}

/// Inputs per mixer: eight context predictions and a bias.
const INPUTS: usize = 9;

/// Logistic mixing of [`INPUTS`] predictions, one weight vector per set.
/// `SETS` is a power of two at least the number of sets used, so that a set
/// masked to it needs no bounds check.
struct Mixer<const SETS: usize> {
    weights: Box<[[i32; INPUTS]; SETS]>,
    inputs: [i32; INPUTS],
    set: usize,
    p12: i32,
    rate: i32,
}

impl<const SETS: usize> Mixer<SETS> {
    fn new(rate: i32) -> Mixer<SETS> {
        let weights = vec![[(1 << 16) / 3; INPUTS]; SETS].into_boxed_slice();
        let weights = match weights.try_into() {
            Ok(w) => w,
            Err(_) => unreachable!("a boxed slice of SETS entries"),
        };
        Mixer {
            weights,
            inputs: {
                let mut x = [0; INPUTS];
                x[INPUTS - 1] = BIAS;
                x
            },
            set: 0,
            p12: 2048,
            rate,
        }
    }

    /// [`Mixer::mix`] with only the flag inputs used when quiet on (1, 2, 6
    /// and 7; the others zero): the same result without the work for the
    /// inputs that are off.
    #[inline]
    fn mix_sparse(&mut self, set: usize, inputs: &[i32; 4]) -> u32 {
        self.set = set;
        let dot: i64 = match self.weights.get(set & (SETS - 1)) {
            Some(&[_, w1, w2, _, _, _, w6, w7, wb]) => {
                let [x1, x2, x6, x7] = *inputs;
                i64::from(w1) * i64::from(x1)
                    + i64::from(w2) * i64::from(x2)
                    + i64::from(w6) * i64::from(x6)
                    + i64::from(w7) * i64::from(x7)
                    + i64::from(wb) * i64::from(BIAS)
            }
            None => 0,
        };
        let x = squash_index(dot);
        self.p12 = SQUASHED.get(x).map_or(2048, |&p| i32::from(p));
        SQUASHED16.get(x).map_or(32_768, |&p| u32::from(p))
    }

    /// [`Mixer::update`] after [`Mixer::mix_sparse`].
    #[inline]
    fn update_sparse(&mut self, bit: u32, inputs: &[i32; 4]) {
        let err = ((bit as i32) << 12) - self.p12;
        if err.abs() < SKIP_ERR {
            return;
        }
        let step = i64::from(err * self.rate);
        if let Some([_, w1, w2, _, _, _, w6, w7, wb]) = self.weights.get_mut(self.set & (SETS - 1))
        {
            let [x1, x2, x6, x7] = *inputs;
            *w1 = nudge(*w1, x1, step);
            *w2 = nudge(*w2, x2, step);
            *w6 = nudge(*w6, x6, step);
            *w7 = nudge(*w7, x7, step);
            *wb = nudge(*wb, BIAS, step);
        }
    }

    /// Mixes the inputs with the weights of `set`; returns the coder's P(1)
    /// (16 bits) and keeps the 12-bit one for [`Mixer::update`].
    #[inline]
    fn mix(&mut self, set: usize) -> u32 {
        self.set = set;
        let dot: i64 = match self.weights.get(set & (SETS - 1)) {
            Some(w) => w
                .iter()
                .zip(&self.inputs)
                .map(|(w, x)| i64::from(*w) * i64::from(*x))
                .sum(),
            None => 0,
        };
        let x = squash_index(dot);
        self.p12 = SQUASHED.get(x).map_or(2048, |&p| i32::from(p));
        SQUASHED16.get(x).map_or(32_768, |&p| u32::from(p))
    }

    #[inline]
    fn update(&mut self, bit: u32) {
        let err = ((bit as i32) << 12) - self.p12;
        if err.abs() < SKIP_ERR {
            return;
        }
        let step = i64::from(err * self.rate);
        if let Some(w) = self.weights.get_mut(self.set & (SETS - 1)) {
            for (w, x) in w.iter_mut().zip(&self.inputs) {
                *w = nudge(*w, *x, step);
            }
        }
    }
}

/// Mixer weights are left alone when the error is this small (out of 4096):
/// fewer updates, and 2.7% smaller streams on the corpus than always updating.
const SKIP_ERR: i32 = 16;

/// The constant input of every mixer.
const BIAS: i32 = 256;

/// A weight moved by its input times the scaled error.
#[inline]
fn nudge(w: i32, x: i32, step: i64) -> i32 {
    let d = (i64::from(x) * step) >> 13;
    (i64::from(w) + d).clamp(-(1 << 22), 1 << 22) as i32
}

/// Codes one bit with probability `p16` of a one (out of 2^16); the encoder
/// writes `bit` and returns it, the decoder returns the bit it reads.
pub(crate) trait BitCoder {
    fn code(&mut self, p16: u32, bit: u32) -> u32;
}

/// Carry-less binary arithmetic encoder over a 32-bit interval.
#[cfg(feature = "diff")]
pub(crate) struct Encoder {
    low: u32,
    high: u32,
    out: Vec<u8>,
}

#[cfg(feature = "diff")]
impl Encoder {
    pub(crate) fn new() -> Encoder {
        Encoder {
            low: 0,
            high: u32::MAX,
            out: Vec::new(),
        }
    }

    /// Writes the final four bytes; the decoder reads exactly up to them.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&self.low.to_be_bytes());
        self.out
    }
}

#[inline]
fn split(low: u32, high: u32, p16: u32) -> u32 {
    let range = u64::from(high - low);
    low + ((range * u64::from(p16)) >> 16) as u32
}

#[cfg(feature = "diff")]
impl BitCoder for Encoder {
    #[inline]
    fn code(&mut self, p16: u32, bit: u32) -> u32 {
        let mid = split(self.low, self.high, p16);
        if bit == 1 {
            self.high = mid;
        } else {
            self.low = mid + 1;
        }
        while (self.low ^ self.high) & 0xff00_0000 == 0 {
            self.out.push((self.high >> 24) as u8);
            self.low <<= 8;
            self.high = (self.high << 8) | 0xff;
        }
        bit
    }
}

/// The decoder matching [`Encoder`], over stored bytes held in memory.
pub(crate) struct Decoder<'a> {
    low: u32,
    high: u32,
    x: u32,
    input: &'a [u8],
    /// Bytes the decoder wanted past the end of `input`.
    overrun: u32,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Decoder<'a> {
        let mut d = Decoder {
            low: 0,
            high: u32::MAX,
            x: 0,
            input,
            overrun: 0,
        };
        for _ in 0..4 {
            d.x = (d.x << 8) | u32::from(d.next_byte());
        }
        d
    }

    #[inline]
    fn next_byte(&mut self) -> u8 {
        match self.input.split_first() {
            Some((b, rest)) => {
                self.input = rest;
                *b
            }
            None => {
                self.overrun = self.overrun.saturating_add(1);
                0
            }
        }
    }

    /// True if the coded bytes ran out before the decoded ones.
    pub(crate) fn overran(&self) -> bool {
        self.overrun > 0
    }

    /// True if every stored byte was consumed, and no more.
    pub(crate) fn at_end(&self) -> bool {
        self.input.is_empty() && self.overrun == 0
    }

    /// True if the last four bytes are the ones the encoder writes: its final
    /// `low`, which the decoder's state then equals. Any other value inside
    /// the final interval would decode the same deltas; requiring this one
    /// makes the coded bytes of a stream unique.
    pub(crate) fn ends_canonically(&self) -> bool {
        self.x == self.low
    }
}

impl BitCoder for Decoder<'_> {
    #[inline]
    fn code(&mut self, p16: u32, _bit: u32) -> u32 {
        let mid = split(self.low, self.high, p16);
        let bit = u32::from(self.x <= mid);
        if bit == 1 {
            self.high = mid;
        } else {
            self.low = mid + 1;
        }
        while (self.low ^ self.high) & 0xff00_0000 == 0 {
            self.low <<= 8;
            self.high = (self.high << 8) | 0xff;
            self.x = (self.x << 8) | u32::from(self.next_byte());
        }
        bit
    }
}

/// Shortest history the match model uses before predicting.
const MATCH_MIN: usize = 6;

/// Table sizes (log2) at full scale; streams shorter than 2^(bits - 2) get
/// smaller tables (see [`Model::new`]).
const FLAG_BITS: [u32; 8] = [16, 16, 14, 6, 16, 16, 16, 16];
const VALUE_BITS: [u32; 8] = [16, 16, 16, 7, 12, 16, 16, 16];
const MATCH_BITS: u32 = 16;
/// Weight sets: the flag mixer's by match state, the value mixer's by tree
/// node or, when the match model predicts this byte, by its length and bit.
const FLAG_SETS: usize = 66;
/// Unchanged bytes before the flag model goes quiet, as a mask of `changed`.
const QUIET_MASK: u32 = 0xff;
const VALUE_SETS: usize = 256 + 64;
/// The mixers' allocated sets: powers of two at least the sets used.
const FLAG_SETS_LEN: usize = 128;
const VALUE_SETS_LEN: usize = 512;
const _: () = assert!(FLAG_SETS <= FLAG_SETS_LEN && VALUE_SETS <= VALUE_SETS_LEN);
const _: () = assert!(FLAG_SETS_LEN.is_power_of_two() && VALUE_SETS_LEN.is_power_of_two());

/// What the flag half is given, in the split encoder, from the long history
/// that the value half keeps: the match state, and flag input 7, whose
/// table the value half keeps (its context is the delta last seen after the
/// same four old bytes, which only the value half knows).
#[derive(Clone, Copy, Default)]
struct FlagInputs {
    mstate: u8,
    /// Input 7: the stretched prediction of flag table 7.
    x7: i16,
}

/// The model, shared by encoder and decoder.
pub(crate) struct Model<Z: Sizing> {
    flag: [Table<Z>; 8],
    /// Used only at changed bytes: kept at their scaled sizes, which full
    /// scale leaves under [`TABLE_LEN`] for two of them.
    value: [Table<Scaled>; 8],
    /// The last delta seen after each (hashed) four old bytes.
    seen: Z::Of<u8>,
    seen_mask: u32,
    flag_mix: Mixer<FLAG_SETS_LEN>,
    value_mix: Mixer<VALUE_SETS_LEN>,
    /// The last deltas, a ring of `ring_mask + 1` bytes, for the match model.
    ring: Vec<u8>,
    ring_mask: u64,
    /// Deltas coded so far.
    pos: u64,
    /// Where the last `MATCH_MIN` deltas were last seen (position + 1; 0: never).
    match_at: Z::Of<u32>,
    match_mask: u32,
    /// The position the match model predicts from, and its length (0: none).
    match_ptr: u64,
    match_len: u32,
    /// One bit per past delta: changed or not, newest lowest.
    changed: u32,
    /// Deltas since the last nonzero one.
    run: u32,
    last_nonzero: u32,
    /// The last four old bytes and the last eight deltas, newest lowest.
    olds: u32,
    deltas: u64,
    /// Codec 5: the length of a zero block ([`BLOCK`]); 0 for codec 3,
    /// which has no block flags.
    block: u32,
    /// Positions left in the current zero block: their deltas are zero and
    /// are not coded.
    skip: u32,
    /// After a block flag that said "changed": positions still to be coded
    /// one by one before the next block flag, until a nonzero delta is
    /// coded (which the flag promised) or [`BLOCK`] positions are.
    coded_left: u32,
    /// The block flags' counters, by the bit length of `run`.
    block_flags: [Counter; 64],
}

/// Codec 5's zero block: where the model is quiet (the last eight deltas
/// zero), one flag says whether any of the next `BLOCK` deltas is nonzero;
/// if none is, they are not coded and the model learns nothing from them.
/// Measured on the corpus's four largest libraries (2026-12-01,
/// docs/BENCHMARKS.md): 512 skips 34-75% of the positions, with patches
/// within 0.6% of codec 3's (−3.0% to +1.0% on 23 pairs); 1024 skips
/// 31-66%; 256 skips 38-80% but costs up to 0.8%.
const BLOCK: u32 = 512;

impl<Z: Sizing> Model<Z> {
    /// A fresh model for a stream of `len` deltas with a history window of
    /// 2^`window_log` bytes (both checked by the caller). Tables are scaled to
    /// the stream: a short stream gets small ones.
    pub(crate) fn new(len: u64, window_log: u32, blocks: bool) -> Model<Z> {
        let need = u64::BITS - len.saturating_sub(1).leading_zeros();
        let scale = (need + 2).clamp(10, 22);
        let ring_log = need.clamp(10, window_log.max(10));
        let flag = FLAG_BITS.map(|b| Table::new(b.min(scale)));
        let value = VALUE_BITS.map(|b| Table::new(b.min(scale)));
        let match_bits = MATCH_BITS.min(scale);
        let seen_bits = 16.min(scale);
        Model {
            flag,
            value,
            flag_mix: Mixer::new(5),
            value_mix: Mixer::new(8),
            ring: vec![0; 1 << ring_log],
            ring_mask: (1 << ring_log) - 1,
            pos: 0,
            seen: Slots::filled(1 << seen_bits, 0),
            seen_mask: (1 << seen_bits) - 1,
            match_at: Slots::filled(1 << match_bits, 0),
            match_mask: (1 << match_bits) - 1,
            match_ptr: 0,
            match_len: 0,
            changed: 0,
            run: 0,
            last_nonzero: 0,
            olds: 0,
            deltas: 0,
            block: if blocks { BLOCK } else { 0 },
            skip: 0,
            coded_left: 0,
            block_flags: [Counter::INIT; 64],
        }
    }

    /// Codec 5: true when a block flag comes before the next position's
    /// delta: no zero block is under way, no position is left to code one
    /// by one, and the last eight deltas are zero.
    #[inline]
    fn wants_block(&self) -> bool {
        self.block > 0 && self.skip == 0 && self.coded_left == 0 && self.changed & QUIET_MASK == 0
    }

    /// Codes a block flag, `nonzero`: one of the next [`BLOCK`] deltas (or
    /// of those left, at the stream's end) is nonzero. Returns the flag
    /// coded (the decoder's, when decoding) and starts the zero block, or
    /// the positions to code one by one.
    fn code_block<C: BitCoder>(&mut self, coder: &mut C, nonzero: bool) -> bool {
        let ctx = (u32::BITS - self.run.leading_zeros()) as usize;
        let changed = match self.block_flags.get_mut(ctx) {
            Some(counter) => {
                let bit = coder.code(p16(counter.p12() as i32), u32::from(nonzero));
                counter.update(bit);
                bit == 1
            }
            None => nonzero,
        };
        self.start_block(changed);
        changed
    }

    /// Sets up what follows a block flag.
    #[inline]
    fn start_block(&mut self, nonzero: bool) {
        if nonzero {
            self.coded_left = self.block;
        } else {
            self.skip = self.block;
        }
    }

    /// Codec 5: moves past one position of a zero block, whose old byte is
    /// `old` and whose delta is zero. Only the history moves on: the last
    /// old bytes, deltas and changed flags, the run, the ring of deltas;
    /// the match model stops predicting; no table learns.
    #[inline]
    fn skip_one(&mut self, old: u8) {
        self.skip = self.skip.saturating_sub(1);
        self.changed <<= 1;
        self.run = self.run.saturating_add(1);
        self.olds = (self.olds << 8) | u32::from(old);
        self.deltas <<= 8;
        if let Some(slot) = self.ring.get_mut((self.pos & self.ring_mask) as usize) {
            *slot = 0;
        }
        self.pos = self.pos.wrapping_add(1);
        self.match_len = 0;
    }

    /// The step that tells the flag half of the split encoder that the last
    /// `n` positions were skipped (`n` is at most [`BLOCK`]).
    #[cfg(feature = "diff")]
    fn skipped(&self, n: u32) -> Step {
        Step::Skip {
            n: u16::try_from(n).unwrap_or(u16::MAX),
            olds: self.olds.to_le_bytes(),
        }
    }

    /// [`Model::skip_one`] for `n` positions at once, in the flag half of the
    /// split encoder, which keeps only the short history: `olds` is the
    /// last-old-bytes register after them.
    #[cfg(feature = "diff")]
    fn skip_many(&mut self, n: u32, olds: u32) {
        self.skip = self.skip.saturating_sub(n);
        self.changed = self.changed.checked_shl(n).unwrap_or(0);
        self.run = self.run.saturating_add(n);
        self.olds = olds;
        self.deltas = self.deltas.checked_shl(8 * n).unwrap_or(0);
        self.pos = self.pos.wrapping_add(u64::from(n));
        self.match_len = 0;
    }

    #[inline]
    fn ring_at(&self, p: u64) -> u8 {
        self.ring
            .get((p & self.ring_mask) as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Length bucket of the current match: exact below 16, then by 16s up to 31.
    #[inline]
    fn match_bucket(&self) -> u32 {
        let l = self.match_len;
        if l < 16 {
            l
        } else {
            (16 + (l - 16) / 16).min(31)
        }
    }

    /// [`StreamModel::apply`] for this layout.
    fn apply(&mut self, coded: &mut Decoder<'_>, buf: &mut [u8]) {
        if self.block == 0 {
            for b in buf.iter_mut() {
                let d = self.code(coded, *b, 0);
                *b = b.wrapping_add(d);
            }
            return;
        }
        for b in buf.iter_mut() {
            if self.skip > 0 || (self.wants_block() && !self.code_block(coded, false)) {
                self.skip_one(*b);
                continue;
            }
            let d = self.code(coded, *b, 0);
            *b = b.wrapping_add(d);
        }
    }

    /// Codes the delta of the next copied byte, whose old value is `old`;
    /// returns the delta (the decoder's, when decoding).
    #[inline(always)]
    pub(crate) fn code<C: BitCoder>(&mut self, coder: &mut C, old: u8, delta: u8) -> u8 {
        self.code_half::<C, true, true, false>(coder, old, delta, FlagInputs::default())
            .0
    }

    /// [`Model::code`] with the changed flag (`FLAG`), the value bits
    /// (`VALUE`) or both sent to `coder`. The flag half and the value half
    /// share no adaptive state: each reads the history of deltas and old
    /// bytes and owns its tables and mixer. So an encoder, which knows every
    /// delta, can run each half on its own model and get the same
    /// probabilities as [`Model::code`] (see `encode_split`). A half left out
    /// takes its bits from `delta`, so only the encoder may leave one out.
    ///
    /// Returns the delta and the two inputs of the flag half that need the
    /// long history (match model and last-delta table). With `LIGHT` (flag
    /// half only) those come from `given` instead, and only the short history
    /// (the last bytes, deltas and changed flags) is kept: the flag half then
    /// runs beside a value half that computes them.
    #[inline(always)]
    fn code_half<C: BitCoder, const FLAG: bool, const VALUE: bool, const LIGHT: bool>(
        &mut self,
        coder: &mut C,
        old: u8,
        delta: u8,
        given: FlagInputs,
    ) -> (u8, FlagInputs) {
        let o0 = u32::from(old);
        let o1 = self.olds & 0xff;
        let d1 = (self.deltas & 0xff) as u32;
        let n1 = (o1 + d1) & 0xff;
        let hz = self.changed;
        let predicted = if !LIGHT && self.match_len > 0 {
            Some(u32::from(self.ring_at(self.match_ptr)))
        } else {
            None
        };
        let bucket = self.match_bucket();
        let mstate = match predicted {
            _ if LIGHT => u32::from(given.mstate),
            Some(p) => 1 + ((bucket.min(15) << 1) | u32::from(p != 0)),
            None => 0,
        };

        // Changed or not.
        let olds4 = (self.olds << 8) | o0;
        let seen_slot = (hash16(olds4 ^ 0x5bd1_e995) & self.seen_mask) as usize;
        let seen = if LIGHT {
            0
        } else {
            u32::from(self.seen.at(seen_slot).copied().unwrap_or(0))
        };
        // Input 7 is kept by whoever has the last-delta table: in the split
        // encoder the value half, which updates table 7 with the flag it knows.
        let slot7 = self.flag[7].slot((seen << 8) | o0);
        let x7 = if LIGHT {
            i32::from(given.x7)
        } else {
            stretch(self.flag[7].p12(slot7))
        };
        let bit = u32::from(delta != 0);
        let changed = if !FLAG {
            bit
        } else if hz & QUIET_MASK == 0 {
            // After eight unchanged bytes only the old-byte contexts and the
            // match state are consulted: the others are constant there or
            // repeat them. (Inputs 1, 2, 6 and 7; the rest are off.)
            let [_, t1, t2, _, _, _, t6, _] = &mut self.flag;
            let slots = [
                t1.slot((o1 << 8) | o0),
                t2.slot((mstate << 8) | o0),
                t6.slot(hash16(olds4 ^ (hz & 15))),
            ];
            let inputs = [
                stretch(t1.p12(slots[0])),
                stretch(t2.p12(slots[1])),
                stretch(t6.p12(slots[2])),
                x7,
            ];
            let p = self
                .flag_mix
                .mix_sparse(mstate as usize + FLAG_SETS / 2, &inputs);
            let changed = coder.code(p, bit);
            self.flag_mix.update_sparse(changed, &inputs);
            t1.update(slots[0], changed);
            t2.update(slots[1], changed);
            t6.update(slots[2], changed);
            changed
        } else {
            let ctx = [
                hz & 0xffff,
                (o1 << 8) | o0,
                (mstate << 8) | o0,
                mstate,
                (n1 << 8) | o0,
                hash16((self.run.min(3) << 18) | ((hz & 3) << 16) | (o1 << 8) | o0),
                hash16(olds4 ^ (hz & 15)),
            ];
            let mut slots = [0usize; 7];
            let inputs = self.flag_mix.inputs.iter_mut();
            for ((t, c), (slot, input)) in
                self.flag.iter().zip(ctx).zip(slots.iter_mut().zip(inputs))
            {
                *slot = t.slot(c);
                *input = stretch(t.p12(*slot));
            }
            if let Some(input) = self.flag_mix.inputs.get_mut(7) {
                *input = x7;
            }
            let p = self.flag_mix.mix(mstate as usize);
            let changed = coder.code(p, bit);
            self.flag_mix.update(changed);
            for (t, s) in self.flag.iter_mut().zip(slots) {
                t.update(s, changed);
            }
            changed
        };

        // The delta's bits, top first.
        let mut node = 1u32;
        if !VALUE {
            node = 0x100 | u32::from(delta);
        } else if changed == 1 {
            let dh = (self.deltas as u32).wrapping_mul(0x2545_F491);
            let oh = ((o1 << 16) | (o0 << 8) | d1).wrapping_mul(0x2545_F491);
            for k in (0..8).rev() {
                let agree = predicted
                    .filter(|&p| p != 0 && (p | 0x100) >> (k + 1) == node)
                    .map(|p| (p >> k) & 1);
                let mix_set = match agree {
                    Some(e) => 256 + ((bucket << 1) | e) as usize,
                    None => node as usize,
                };
                let ctx = [
                    (self.last_nonzero << 8) | node,
                    (d1 << 8) | node,
                    hash16(dh ^ node),
                    agree.map_or(0, |e| 1 + ((bucket << 1) | e)),
                    (self.run.min(15) << 8) | node,
                    (o0 << 8) | node,
                    hash16(oh ^ node),
                    (seen << 8) | node,
                ];
                let mut slots = [0usize; 8];
                let inputs = self.value_mix.inputs.iter_mut();
                for ((t, c), (slot, input)) in
                    self.value.iter().zip(ctx).zip(slots.iter_mut().zip(inputs))
                {
                    *slot = t.slot(c);
                    *input = stretch(t.p12(*slot));
                }
                let p = self.value_mix.mix(mix_set);
                let bit = coder.code(p, (u32::from(delta) >> k) & 1);
                self.value_mix.update(bit);
                for (t, s) in self.value.iter_mut().zip(slots) {
                    t.update(s, bit);
                }
                node = (node << 1) | bit;
            }
        }
        // An unchanged byte's delta is zero; a changed one's is the tree's leaf.
        let d = if changed == 1 { (node & 0xff) as u8 } else { 0 };
        self.coded_left = if d != 0 {
            0
        } else {
            self.coded_left.saturating_sub(1)
        };
        if !LIGHT {
            self.flag[7].update(slot7, changed);
        }
        if LIGHT {
            self.push_short(old, d);
        } else {
            if let Some(s) = self.seen.at_mut(seen_slot) {
                *s = d;
            }
            self.push(old, d);
        }
        // mstate is at most 32 and a stretched probability within ±2047.
        let inputs = FlagInputs {
            mstate: mstate as u8,
            x7: x7 as i16,
        };
        (d, inputs)
    }

    /// The part of [`Model::push`] that the flag half reads besides
    /// [`FlagInputs`]: the last old bytes, deltas and changed flags, and the
    /// run of unchanged bytes.
    #[inline(always)]
    fn push_short(&mut self, old: u8, d: u8) {
        let nz = u32::from(d != 0);
        self.changed = (self.changed << 1) | nz;
        self.run = if nz == 1 {
            0
        } else {
            self.run.saturating_add(1)
        };
        self.olds = (self.olds << 8) | u32::from(old);
        self.deltas = (self.deltas << 8) | u64::from(d);
    }

    /// Records a coded delta in the history and moves the match model on.
    #[inline(always)]
    fn push(&mut self, old: u8, d: u8) {
        let nz = u32::from(d != 0);
        self.changed = (self.changed << 1) | nz;
        if nz == 1 {
            self.run = 0;
            self.last_nonzero = u32::from(d);
        } else {
            self.run = self.run.saturating_add(1);
        }
        self.olds = (self.olds << 8) | u32::from(old);
        self.deltas = (self.deltas << 8) | u64::from(d);
        if let Some(slot) = self.ring.get_mut((self.pos & self.ring_mask) as usize) {
            *slot = d;
        }
        let here = self.pos;
        self.pos = self.pos.wrapping_add(1);

        if self.match_len > 0 && self.ring_at(self.match_ptr) == d {
            self.match_len = self.match_len.saturating_add(1);
            self.match_ptr = self.match_ptr.wrapping_add(1);
        } else {
            self.match_len = 0;
        }
        if self.pos < MATCH_MIN as u64 {
            return;
        }
        let key = (self.deltas & 0xffff_ffff_ffff).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = ((key >> 40) as u32 & self.match_mask) as usize;
        if self.match_len == 0 {
            let cand = u64::from(self.match_at.at(h).copied().unwrap_or(0));
            // `cand` is the position after an earlier occurrence; it must
            // still be in the window (positions are stored modulo 2^32).
            let back = (self.pos as u32).wrapping_sub(cand as u32);
            if cand > 0 && u64::from(back) < self.ring_mask.saturating_sub(32) {
                let start = self.pos.wrapping_sub(u64::from(back));
                let mut len = 0u64;
                while len < 32
                    && len < start
                    && self.ring_at(start.wrapping_sub(1 + len))
                        == self.ring_at(here.wrapping_sub(len))
                {
                    len += 1;
                }
                if len >= MATCH_MIN as u64 {
                    self.match_len = len as u32;
                    self.match_ptr = start;
                }
            }
        }
        if let Some(slot) = self.match_at.at_mut(h) {
            *slot = self.pos as u32;
        }
    }
}

/// Sixteen well-mixed bits of a context.
#[inline]
fn hash16(x: u32) -> u32 {
    x.wrapping_mul(0x9E37_79B1) >> 16
}

/// A 12-bit probability as the coder's 16 bits, kept away from 0 and 1.
const fn p16(p12: i32) -> u32 {
    let p = if p12 < 1 {
        1
    } else if p12 > 4095 {
        4095
    } else {
        p12
    };
    let p = (p as u32) << 4;
    if p < 32 {
        32
    } else if p > 65_503 {
        65_503
    } else {
        p
    }
}

/// A model for decoding a stream, with the table layout that suits its
/// length ([`FULL_FROM`]); both layouts decode the same deltas.
pub(crate) enum StreamModel {
    Full(Box<Model<Full>>),
    Scaled(Box<Model<Scaled>>),
}

impl StreamModel {
    /// A fresh model for a stream of `len` deltas (see [`Model::new`]),
    /// with zero blocks (codec 5) or without (codec 3).
    pub(crate) fn new(len: u64, window_log: u32, blocks: bool) -> StreamModel {
        if len > FULL_FROM {
            StreamModel::Full(Box::new(Model::new(len, window_log, blocks)))
        } else {
            StreamModel::Scaled(Box::new(Model::new(len, window_log, blocks)))
        }
    }

    /// Decodes one delta per byte of `buf`, each predicted from that byte
    /// (the old byte under it), and adds it: `buf` ends as the new bytes.
    pub(crate) fn apply(&mut self, coded: &mut Decoder<'_>, buf: &mut [u8]) {
        match self {
            StreamModel::Full(m) => m.apply(coded, buf),
            StreamModel::Scaled(m) => m.apply(coded, buf),
        }
    }
}

/// Codes the deltas of `copies` (old start, new start, length) of `old` and
/// `new` with a fresh model, with zero blocks (codec 5) or without (codec
/// 3); returns the stored bytes. With `split`, the flag and value halves of
/// the model run on two threads (see [`encode_split`]); the bytes are the
/// same either way.
#[cfg(feature = "diff")]
pub(crate) fn encode(
    old: &[u8],
    new: &[u8],
    copies: &[(usize, usize, usize)],
    window_log: u32,
    split: bool,
    blocks: bool,
) -> Vec<u8> {
    let len: usize = copies.iter().map(|c| c.2).sum();
    let pairs = || {
        copies
            .iter()
            .filter_map(|&(o, n, l)| Some((old.get(o..)?.get(..l)?, new.get(n..)?.get(..l)?)))
            .flat_map(|(a, b)| a.iter().zip(b))
            .map(|(&x, &y)| (x, y.wrapping_sub(x)))
    };
    let len = len as u64;
    if blocks {
        // A block flag looks ahead over the deltas, so they are laid end to
        // end first (with their old bytes: iterating two slices costs fewer
        // instructions than walking the copies again).
        let mut olds = Vec::with_capacity(len as usize);
        let mut deltas = Vec::with_capacity(len as usize);
        for &(o, n, l) in copies {
            if let (Some(a), Some(b)) = (
                old.get(o..).and_then(|s| s.get(..l)),
                new.get(n..).and_then(|s| s.get(..l)),
            ) {
                olds.extend_from_slice(a);
                deltas.extend(a.iter().zip(b).map(|(&x, &y)| y.wrapping_sub(x)));
            }
        }
        let pairs = || olds.iter().copied().zip(deltas.iter().copied());
        let ahead = Lookahead::new(&deltas);
        return match (split, len > FULL_FROM) {
            (true, true) => encode_split::<Full, _>(pairs(), len, window_log, Some(ahead)),
            (true, false) => encode_split::<Scaled, _>(pairs(), len, window_log, Some(ahead)),
            (false, true) => encode_blocks::<Full, _>(pairs(), len, window_log, ahead),
            (false, false) => encode_blocks::<Scaled, _>(pairs(), len, window_log, ahead),
        };
    }
    match (split, len > FULL_FROM) {
        (true, true) => encode_split::<Full, _>(pairs(), len, window_log, None),
        (true, false) => encode_split::<Scaled, _>(pairs(), len, window_log, None),
        (false, true) => encode_sequential::<Full>(old, new, copies, len, window_log),
        (false, false) => encode_sequential::<Scaled>(old, new, copies, len, window_log),
    }
}

/// Whether a zero block starting at a position would hold a nonzero delta:
/// the encoder's look ahead for codec 5's block flags. Positions are asked
/// about in increasing order, so the search for the next nonzero delta
/// moves forward only: linear time over the stream.
#[cfg(feature = "diff")]
struct Lookahead<'a> {
    deltas: &'a [u8],
    /// The first nonzero delta at or after the last position asked about
    /// (`deltas.len()` if none).
    next: usize,
}

#[cfg(feature = "diff")]
impl<'a> Lookahead<'a> {
    fn new(deltas: &'a [u8]) -> Lookahead<'a> {
        let next = deltas.iter().position(|&d| d != 0).unwrap_or(deltas.len());
        Lookahead { deltas, next }
    }

    /// True if a delta in `at..at + BLOCK` (within the stream) is nonzero.
    fn nonzero(&mut self, at: usize) -> bool {
        if self.next < at {
            self.next = self
                .deltas
                .get(at..)
                .and_then(|rest| rest.iter().position(|&d| d != 0))
                .map_or(self.deltas.len(), |k| at + k);
        }
        self.next < at.saturating_add(BLOCK as usize).min(self.deltas.len())
    }
}

/// [`encode`] with zero blocks, on one thread.
#[cfg(feature = "diff")]
fn encode_blocks<Z: Sizing, I>(
    pairs: I,
    len: u64,
    window_log: u32,
    mut ahead: Lookahead<'_>,
) -> Vec<u8>
where
    I: Iterator<Item = (u8, u8)>,
{
    let mut model = Model::<Z>::new(len, window_log, true);
    let mut enc = Encoder::new();
    for (i, (old, delta)) in pairs.enumerate() {
        if model.skip > 0 || (model.wants_block() && !model.code_block(&mut enc, ahead.nonzero(i)))
        {
            model.skip_one(old);
            continue;
        }
        model.code(&mut enc, old, delta);
    }
    enc.finish()
}

/// [`encode`] on one thread. Kept out of line, and looping over the copies
/// and their bytes rather than over `pairs`: inlined into the caller's job
/// loop, or iterating `pairs`, the encoder took 1-3% more instructions on
/// libc's stream (callgrind).
#[cfg(feature = "diff")]
#[inline(never)]
fn encode_sequential<Z: Sizing>(
    old: &[u8],
    new: &[u8],
    copies: &[(usize, usize, usize)],
    len: u64,
    window_log: u32,
) -> Vec<u8> {
    let mut model = Model::<Z>::new(len, window_log, false);
    let mut enc = Encoder::new();
    for &(o, n, l) in copies {
        let (Some(a), Some(b)) = (
            old.get(o..).and_then(|s| s.get(..l)),
            new.get(n..).and_then(|s| s.get(..l)),
        ) else {
            continue;
        };
        for (&x, &y) in a.iter().zip(b) {
            model.code(&mut enc, x, y.wrapping_sub(x));
        }
    }
    enc.finish()
}

/// Keeps the probabilities it is given instead of coding the bits: what one
/// half of [`encode_split`] produces.
#[cfg(feature = "diff")]
struct Recorder(Vec<u16>);

#[cfg(feature = "diff")]
impl BitCoder for Recorder {
    #[inline]
    fn code(&mut self, p16: u32, bit: u32) -> u32 {
        // The mixers' probabilities come from a table of u16.
        self.0.push(u16::try_from(p16).unwrap_or(u16::MAX));
        bit
    }
}

/// Codes the (old byte, delta) pairs that `pairs` yields, `len` of them, as
/// [`Model::code`] would, on two threads, and returns the same bytes.
///
/// The value half runs with the whole history (match model, last-delta
/// table, ring of deltas) and sends the flag half, in blocks as it goes, the
/// match state, the prediction of flag input 7 (it keeps that table: its
/// context is the last-delta table's, and it knows every flag) and the
/// probabilities of the value bits. The flag half, on the other thread,
/// keeps only the short history it reads directly and the other seven flag
/// tables, and codes every bit: each flag with its own mix, each changed
/// byte's eight bits with the probabilities it was sent.
///
/// The flag half was the longer of the two, so work moved to the value half
/// (callgrind, libc's stream): the flag half reads each position's old byte
/// and delta from the blocks rather than walking the copies (about 25
/// instructions a position), and table 7 moved (the flag half 461 M → 410 M
/// instructions, the value half 292 M → 346 M). With that, a `perf`
/// timeline shows the value half the busier of the two, as its reads of
/// the last-delta and match tables wait on the cache; moving table 6 as
/// well overloaded it (docs/BENCHMARKS.md).
///
/// At most [`AHEAD`] blocks wait between the halves: 8 bytes per step (a
/// coded position, a block flag or a skipped run) and 16 more per changed
/// position, at most 9.7 MB when 8% of the bytes change and 24 MiB when all
/// do. (The encoder with zero blocks also lays the stream's old bytes and
/// deltas end to end: 2 bytes per position.) The flag half's state sits behind a lock
/// with the receiver. When the channel is full and the flag half has not
/// started (the pool's other threads are busy, or there is only one), the
/// value half takes the lock, codes the waiting blocks and the one in hand,
/// and goes on; a flag half that starts later takes the lock and the
/// receiver and carries on from there, holding both to the end, and from
/// then on a full channel makes the value half wait. So every block is coded
/// once, in order, whoever codes it, and the bytes are the same however the
/// work falls. The value half runs on the calling thread and the flag half
/// is the one rayon may hand to another thread, so the flag half never waits
/// for a value half that cannot run. (`pairs` must not call into rayon: the
/// flag half could then run inside it, under the value half.)
///
/// With zero blocks (codec 5, `blocks` the look ahead), the value half
/// decides the block flags and sends them, and the runs of positions it
/// skipped, in order among the coded positions; the flag half codes each
/// flag with its own counters and moves its short history past each run.
#[cfg(feature = "diff")]
fn encode_split<Z: Sizing, I>(
    pairs: I,
    len: u64,
    window_log: u32,
    blocks: Option<Lookahead<'_>>,
) -> Vec<u8>
where
    I: Iterator<Item = (u8, u8)> + Send,
{
    encode_split_ahead::<Z, I>(pairs, len, window_log, blocks, AHEAD).0
}

/// [`encode_split`] with at most `ahead` blocks waiting; also says whether
/// the value half coded any of the flag half's blocks.
#[cfg(feature = "diff")]
fn encode_split_ahead<Z: Sizing, I>(
    pairs: I,
    len: u64,
    window_log: u32,
    mut blocks: Option<Lookahead<'_>>,
    ahead: usize,
) -> (Vec<u8>, bool)
where
    I: Iterator<Item = (u8, u8)> + Send,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{sync_channel, TrySendError};
    use std::sync::{Mutex, PoisonError, TryLockError};

    let (tx, rx) = sync_channel::<Block>(ahead);
    // The flag half's state (made by whoever codes first, so that its
    // tables are filled on that thread), and the receiver until the flag
    // half starts and takes it.
    let flag_half = Mutex::new((None::<FlagHalf<Z>>, Some(rx)));
    let zero_blocks = blocks.is_some();
    let new_half = || FlagHalf::new(len, window_log, zero_blocks);
    // Set by the flag half when it starts: from then on the value half only
    // ever waits for it.
    let started = AtomicBool::new(false);
    let (new_half_ref, flag_half_ref, started_ref) = (&new_half, &flag_half, &started);
    let (helped, ()) = rayon::join(
        // `move`: the sender is dropped when this half ends, which ends the
        // flag half's loop over the blocks.
        move || {
            let mut model = Model::<Z>::new(len, window_log, zero_blocks);
            let mut rec = Recorder(Vec::new());
            let mut positions = Vec::with_capacity(SPLIT_BLOCK + 2);
            let mut helped = false;
            let mut send = |block: Block| {
                let block = match tx.try_send(block) {
                    Ok(()) => return,
                    Err(TrySendError::Full(block)) => block,
                    // Only if the flag half panicked, which `join` passes on.
                    Err(TrySendError::Disconnected(_)) => return,
                };
                // Nobody is coding the flags yet: code the waiting blocks,
                // then this one, which follows them. (The lock is taken only
                // if free: a flag half that holds it is running.)
                if !started_ref.load(Ordering::Acquire) {
                    let guard = match flag_half_ref.try_lock() {
                        Ok(guard) => Some(guard),
                        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                        Err(TryLockError::WouldBlock) => None,
                    };
                    if let Some(mut guard) = guard {
                        if let (half, Some(rx)) = &mut *guard {
                            let half = half.get_or_insert_with(new_half_ref);
                            for waiting in rx.try_iter() {
                                half.code_block(waiting);
                            }
                            half.code_block(block);
                            helped = true;
                            return;
                        }
                    }
                }
                // The flag half has started: wait for room.
                let _ = tx.send(block);
            };
            // Positions of the zero block under way not yet sent as a step.
            let mut skipped = 0u32;
            for (i, (old, delta)) in pairs.enumerate() {
                if let Some(blocks) = blocks.as_mut() {
                    if model.wants_block() {
                        let nonzero = blocks.nonzero(i);
                        model.start_block(nonzero);
                        positions.push(Step::Block(nonzero));
                    }
                    if model.skip > 0 {
                        model.skip_one(old);
                        skipped += 1;
                        if model.skip == 0 {
                            positions.push(model.skipped(skipped));
                            skipped = 0;
                        }
                        continue;
                    }
                }
                let (_, inputs) = model.code_half::<_, false, true, false>(
                    &mut rec,
                    old,
                    delta,
                    FlagInputs::default(),
                );
                positions.push(Step::Code(Sent { old, delta, inputs }));
                if positions.len() >= SPLIT_BLOCK {
                    send(Block {
                        positions: std::mem::replace(
                            &mut positions,
                            Vec::with_capacity(SPLIT_BLOCK + 2),
                        ),
                        values: std::mem::take(&mut rec.0),
                    });
                }
            }
            // The stream may end inside a zero block.
            if skipped > 0 {
                positions.push(model.skipped(skipped));
            }
            send(Block {
                positions,
                values: rec.0,
            });
            helped
        },
        || {
            started.store(true, Ordering::Release);
            // Waits while the value half codes waiting blocks, if it is.
            let mut guard = flag_half.lock().unwrap_or_else(PoisonError::into_inner);
            let (half, receiver) = &mut *guard;
            // Owned here, so that a panic drops it and the value half's
            // sends fail instead of waiting.
            let Some(rx) = receiver.take() else { return };
            let half = half.get_or_insert_with(new_half);
            // Ends when the value half is done and every block coded.
            for block in rx {
                half.code_block(block);
            }
        },
    );
    let (half, _) = flag_half
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    // Every run codes at least the last block, so the half exists.
    debug_assert!(half.is_some(), "no block was coded");
    (half.unwrap_or_else(new_half).finish(), helped)
}

/// Positions per block of [`encode_split`].
#[cfg(feature = "diff")]
const SPLIT_BLOCK: usize = 1 << 14;

/// Blocks that may wait between the halves of [`encode_split`]: 2^20
/// positions.
#[cfg(feature = "diff")]
const AHEAD: usize = 64;

/// What the value half of [`encode_split`] sends: [`SPLIT_BLOCK`] steps
/// (fewer in the last block, which may be empty) and the value bits'
/// probabilities of the coded positions that changed, eight each.
#[cfg(feature = "diff")]
struct Block {
    positions: Vec<Step>,
    values: Vec<u16>,
}

/// One step of a [`Block`], in the stream's order.
#[cfg(feature = "diff")]
#[derive(Clone, Copy)]
enum Step {
    /// A coded position.
    Code(Sent),
    /// Codec 5: a block flag, and whether the block holds a nonzero delta.
    Block(bool),
    /// Codec 5: `n` positions of a zero block (at most [`BLOCK`]), skipped;
    /// `olds` is the last-old-bytes register after them (little-endian).
    Skip { n: u16, olds: [u8; 4] },
}

/// One position of a [`Block`]: its old byte, its delta, and the flag
/// inputs that need the long history.
#[cfg(feature = "diff")]
#[derive(Clone, Copy)]
struct Sent {
    old: u8,
    delta: u8,
    inputs: FlagInputs,
}

/// The block memory [`encode_split`] documents.
#[cfg(feature = "diff")]
const _: () = assert!(std::mem::size_of::<Step>() == 8);

/// The flag half of [`encode_split`]: a model that keeps only the short
/// history, and the coder.
#[cfg(feature = "diff")]
struct FlagHalf<Z: Sizing> {
    model: Model<Z>,
    enc: Encoder,
}

#[cfg(feature = "diff")]
impl<Z: Sizing> FlagHalf<Z> {
    fn new(len: u64, window_log: u32, blocks: bool) -> FlagHalf<Z> {
        FlagHalf {
            model: Model::new(len, window_log, blocks),
            enc: Encoder::new(),
        }
    }

    /// Codes the positions of `block`: each flag with the model's own
    /// probability, each changed byte's bits with the probabilities sent.
    fn code_block(&mut self, block: Block) {
        let mut values = block.values.into_iter();
        for step in block.positions {
            let Sent { old, delta, inputs } = match step {
                Step::Code(sent) => sent,
                Step::Block(nonzero) => {
                    self.model.code_block(&mut self.enc, nonzero);
                    continue;
                }
                Step::Skip { n, olds } => {
                    self.model.skip_many(u32::from(n), u32::from_le_bytes(olds));
                    continue;
                }
            };
            self.model
                .code_half::<_, true, false, true>(&mut self.enc, old, delta, inputs);
            if delta != 0 {
                for k in (0..8).rev() {
                    let p = values.next().unwrap_or(32_768);
                    self.enc.code(u32::from(p), u32::from(delta >> k) & 1);
                }
            }
        }
        debug_assert!(
            values.next().is_none(),
            "a block's values outlast its flags"
        );
    }

    fn finish(self) -> Vec<u8> {
        self.enc.finish()
    }
}

/// Codes `deltas`, one per copied byte over the old bytes `olds` (the same
/// length), with a fresh model and a history window of 2^`window_log` bytes;
/// returns the stored bytes. For tests and fuzz targets that build patches by
/// hand; the writer codes its segments with the crate-private `encode`.
///
/// ```
/// use deltaswap::model_codec::{decode_deltas, encode_deltas};
/// let olds = b"call 0x1000; call 0x1000; call 0x1000";
/// let mut deltas = vec![0u8; olds.len()];
/// deltas[6] = 0x10;
/// let stored = encode_deltas(olds, &deltas, 12);
/// let back = decode_deltas(&stored, olds, 12);
/// assert_eq!(back.deltas, deltas);
/// assert!(back.exact);
/// ```
#[cfg(feature = "diff")]
pub fn encode_deltas(olds: &[u8], deltas: &[u8], window_log: u32) -> Vec<u8> {
    encode_deltas_with(olds, deltas, window_log, false)
}

/// [`encode_deltas`] for codec 3 (`blocks` false) or codec 5 (true, with
/// zero blocks).
///
/// ```
/// use deltaswap::model_codec::{decode_deltas_with, encode_deltas_with};
/// let olds = vec![0x90u8; 5000];
/// let mut deltas = vec![0u8; olds.len()];
/// deltas[4000] = 1;
/// let stored = encode_deltas_with(&olds, &deltas, 13, true);
/// let back = decode_deltas_with(&stored, &olds, 13, true);
/// assert_eq!(back.deltas, deltas);
/// assert!(back.exact);
/// ```
#[cfg(feature = "diff")]
pub fn encode_deltas_with(olds: &[u8], deltas: &[u8], window_log: u32, blocks: bool) -> Vec<u8> {
    fn with<Z: Sizing>(olds: &[u8], deltas: &[u8], window_log: u32, blocks: bool) -> Vec<u8> {
        let len = olds.len().min(deltas.len());
        let (olds, deltas) = (&olds[..len], &deltas[..len]);
        let pairs = olds.iter().copied().zip(deltas.iter().copied());
        if blocks {
            return encode_blocks::<Z, _>(pairs, len as u64, window_log, Lookahead::new(deltas));
        }
        let mut model = Model::<Z>::new(len as u64, window_log, false);
        let mut enc = Encoder::new();
        for (o, d) in pairs {
            model.code(&mut enc, o, d);
        }
        enc.finish()
    }
    if olds.len() as u64 > FULL_FROM {
        with::<Full>(olds, deltas, window_log, blocks)
    } else {
        with::<Scaled>(olds, deltas, window_log, blocks)
    }
}

/// What [`decode_deltas`] made of stored bytes.
#[derive(Debug)]
pub struct DecodedDeltas {
    /// One delta per old byte.
    pub deltas: Vec<u8>,
    /// The decoder needed bytes past the end of the stored ones.
    pub overran: bool,
    /// Every stored byte was consumed, and no more, and the stream ended as
    /// the encoder ends it.
    pub exact: bool,
}

/// Decodes `olds.len()` deltas from `stored` with a fresh model and a history
/// window of 2^`window_log` bytes (`window_log` is clamped to 10..=30). For
/// tests and fuzz targets; see [`encode_deltas`].
pub fn decode_deltas(stored: &[u8], olds: &[u8], window_log: u32) -> DecodedDeltas {
    decode_deltas_with(stored, olds, window_log, false)
}

/// [`decode_deltas`] for codec 3 (`blocks` false) or codec 5 (true); see
/// [`encode_deltas_with`].
pub fn decode_deltas_with(
    stored: &[u8],
    olds: &[u8],
    window_log: u32,
    blocks: bool,
) -> DecodedDeltas {
    let mut model = StreamModel::new(olds.len() as u64, window_log.clamp(10, 30), blocks);
    let mut dec = Decoder::new(stored);
    let mut news = olds.to_vec();
    model.apply(&mut dec, &mut news);
    let deltas = news
        .iter()
        .zip(olds)
        .map(|(n, o)| n.wrapping_sub(*o))
        .collect();
    DecodedDeltas {
        deltas,
        overran: dec.overran(),
        exact: dec.at_end() && dec.ends_canonically(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(stored: &[u8], olds: &[u8], window_log: u32) -> (Vec<u8>, bool) {
        let mut model = Model::<Scaled>::new(olds.len() as u64, window_log, false);
        let mut dec = Decoder::new(stored);
        let out = olds.iter().map(|&o| model.code(&mut dec, o, 0)).collect();
        (out, dec.at_end())
    }

    /// The split encoder gives the sequential encoder's bytes: streams of
    /// every density of change, short and long, with repeats for the match
    /// model, windows small enough to wrap, several copies.
    #[test]
    fn split_encoder_gives_the_same_bytes() {
        let mut rnd = crate::test_rng(0x9E37_79B9_7F4A_7C15);
        for len in [0usize, 1, 7, 300, 5_000, 120_000] {
            for per_mille in [0u64, 5, 100, 500, 1000] {
                let old: Vec<u8> = (0..len)
                    .map(|i| (i % 97) as u8 ^ (rnd() % 3) as u8)
                    .collect();
                let mut new = old.clone();
                for i in 0..len {
                    if rnd() % 1000 < per_mille {
                        new[i] = new[i].wrapping_add(1 + (rnd() % 16) as u8);
                    }
                    // A repeated pattern of deltas, for the match model.
                    if per_mille > 0 && i % 4096 < 64 && i % 8 == 3 {
                        new[i] = old[i].wrapping_add(0x40);
                    }
                }
                let half = len / 2;
                let copies = [(0, 0, half), (half / 3, half, len - half)];
                for (window_log, blocks) in [(10, false), (20, false), (10, true), (20, true)] {
                    let one = encode(&old, &new, &copies, window_log, false, blocks);
                    let two = encode(&old, &new, &copies, window_log, true, blocks);
                    assert!(
                        one == two,
                        "len {len}, {per_mille}/1000 changed, window 2^{window_log}, blocks {blocks}"
                    );
                }
            }
        }
    }

    /// At most `ahead` blocks wait between the halves. With one thread the
    /// flag half cannot start until the value half is done, so the value
    /// half must code the waiting blocks itself whenever the channel is full
    /// (else every block would wait in memory); with two or three, either
    /// may code them, and several encoders share the pool. The bytes are the
    /// sequential encoder's every time.
    #[test]
    fn split_encoder_waits_a_bounded_number_of_blocks() {
        let mut rnd = crate::test_rng(0x2545_F491_4F6C_DD1D);
        for (len, per_mille, blocks) in [
            (5 * SPLIT_BLOCK + 123, 143, false),
            (5 * SPLIT_BLOCK, 1000, false),
            (3 * SPLIT_BLOCK - 1, 0, false),
            (5 * SPLIT_BLOCK + 123, 1, true),
            (3 * SPLIT_BLOCK - 1, 0, true),
        ] {
            let old: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            let new: Vec<u8> = old
                .iter()
                .map(|&b| {
                    if rnd() % 1000 < per_mille {
                        b.wrapping_add(1 + (rnd() % 255) as u8)
                    } else {
                        b
                    }
                })
                .collect();
            let want = encode(&old, &new, &[(0, 0, len)], 12, false, blocks);
            let pairs = || old.iter().zip(&new).map(|(&o, &n)| (o, n.wrapping_sub(o)));
            let deltas: Vec<u8> = pairs().map(|(_, d)| d).collect();
            let ahead = || blocks.then(|| Lookahead::new(&deltas));
            // Full blocks, then one more (partial, or empty).
            let sends = len / SPLIT_BLOCK + 1;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                for sends_ahead in [0, 1, 2, sends - 1, sends] {
                    let (got, helped) = pool.install(|| {
                        encode_split_ahead::<Full, _>(pairs(), len as u64, 12, ahead(), sends_ahead)
                    });
                    assert!(
                        got == want,
                        "{len} bytes, {threads} threads, {sends_ahead} ahead, blocks {blocks}"
                    );
                    if threads == 1 && !blocks {
                        assert_eq!(
                            helped,
                            sends_ahead < sends,
                            "{len} bytes, {sends_ahead} ahead"
                        );
                    }
                }
                // Several encoders at once in the same pool.
                let all: Vec<Vec<u8>> = pool.install(|| {
                    use rayon::prelude::*;
                    (0..4)
                        .into_par_iter()
                        .map(|k| {
                            encode_split_ahead::<Full, _>(pairs(), len as u64, 12, ahead(), k).0
                        })
                        .collect()
                });
                assert!(
                    all.iter().all(|got| *got == want),
                    "{threads} threads, 4 at once"
                );
            }
        }
    }

    /// Full tables (a fixed size, slots masked to it) and scaled ones code
    /// the same bytes, at lengths whose tables are smaller than full, full,
    /// and either side of [`FULL_FROM`], and decode them back.
    #[test]
    fn table_layouts_code_the_same_bytes() {
        fn run<Z: Sizing>(olds: &[u8], deltas: &[u8]) -> Vec<u8> {
            let mut model = Model::<Z>::new(olds.len() as u64, 12, false);
            let mut enc = Encoder::new();
            for (&o, &d) in olds.iter().zip(deltas) {
                model.code(&mut enc, o, d);
            }
            enc.finish()
        }
        let mut rnd = crate::test_rng(0x5851_F42D_4C95_7F2D);
        let sizes = [
            1,
            100,
            1_500,
            FULL_FROM as usize,
            FULL_FROM as usize + 1,
            70_000,
        ];
        for len in sizes {
            // Code-like olds with a few repeated contexts, sparse changes.
            let olds: Vec<u8> = (0..len)
                .map(|i| [0xe8, 0x48, 0x89, (rnd() % 7) as u8][i % 4])
                .collect();
            let deltas: Vec<u8> = (0..len)
                .map(|_| if rnd() % 40 == 0 { rnd() as u8 } else { 0 })
                .collect();
            let full = run::<Full>(&olds, &deltas);
            let scaled = run::<Scaled>(&olds, &deltas);
            assert!(full == scaled, "{len} deltas");
            for mut model in [
                StreamModel::Full(Box::new(Model::new(len as u64, 12, false))),
                StreamModel::Scaled(Box::new(Model::new(len as u64, 12, false))),
            ] {
                let mut dec = Decoder::new(&full);
                let mut buf = olds.clone();
                model.apply(&mut dec, &mut buf);
                let back: Vec<u8> = buf
                    .iter()
                    .zip(&olds)
                    .map(|(n, o)| n.wrapping_sub(*o))
                    .collect();
                assert!(back == deltas && dec.at_end(), "{len} deltas decoded");
            }
        }
    }

    /// Stored bytes that no encoder wrote (random ones, and a real stream
    /// with a byte flipped) decode to the same deltas with both layouts, and
    /// leave both decoders in the same state: a hostile stream cannot tell
    /// them apart either. Tables fill up here: every delta is random.
    #[test]
    fn table_layouts_decode_damage_alike() {
        fn decode(model: &mut StreamModel, stored: &[u8], olds: &[u8]) -> (Vec<u8>, bool, bool) {
            let mut dec = Decoder::new(stored);
            let mut buf = olds.to_vec();
            model.apply(&mut dec, &mut buf);
            (buf, dec.overran(), dec.at_end())
        }
        let mut rnd = crate::test_rng(0x2127_599B_F432_5C37);
        for len in [FULL_FROM as usize + 1, 30_000, 200_000] {
            let olds: Vec<u8> = (0..len).map(|_| (rnd() % 5) as u8).collect();
            let deltas: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            let mut flipped = encode_deltas(&olds, &deltas, 16);
            let at = (rnd() as usize) % flipped.len();
            flipped[at] ^= 0x10;
            let random: Vec<u8> = (0..len / 3).map(|_| rnd() as u8).collect();
            for stored in [flipped, random] {
                let mut full = StreamModel::Full(Box::new(Model::new(len as u64, 16, false)));
                let mut scaled = StreamModel::Scaled(Box::new(Model::new(len as u64, 16, false)));
                assert!(
                    decode(&mut full, &stored, &olds) == decode(&mut scaled, &stored, &olds),
                    "{len} deltas"
                );
            }
        }
    }

    /// Codec 5 round trips whatever the buffers apply is given (zero
    /// blocks cut across them), with both table layouts, and ends exactly;
    /// on streams with long unchanged runs its zero blocks skip positions,
    /// and a stream cut short or flipped in its last bytes is noticed.
    #[test]
    fn zero_blocks_round_trip_in_any_buffers() {
        let mut rnd = crate::test_rng(0x6A09_E667_F3BC_C909);
        for len in [1usize, 100, 3_000, FULL_FROM as usize + 1, 70_000] {
            for gap in [3u64, 600, 5_000] {
                let olds: Vec<u8> = (0..len)
                    .map(|i| [0xe8, 0x48, 0x89, (rnd() % 7) as u8][i % 4])
                    .collect();
                // Changes about every `gap` positions, in bursts.
                let deltas: Vec<u8> = (0..len)
                    .map(|i| {
                        if rnd() % gap == 0 || (i % 9_000 < 40 && i % 5 == 0) {
                            1 + (rnd() % 200) as u8
                        } else {
                            0
                        }
                    })
                    .collect();
                let stored = encode_deltas_with(&olds, &deltas, 12, true);
                let news: Vec<u8> = olds
                    .iter()
                    .zip(&deltas)
                    .map(|(o, d)| o.wrapping_add(*d))
                    .collect();
                let copies = [(0, 0, len)];
                assert!(
                    encode(&olds, &news, &copies, 12, true, true) == stored,
                    "{len} deltas, gap {gap}: split encoder"
                );
                for chunk in [1usize, 7, 1000, len] {
                    for mut model in [
                        StreamModel::Full(Box::new(Model::new(len as u64, 12, true))),
                        StreamModel::Scaled(Box::new(Model::new(len as u64, 12, true))),
                    ] {
                        let mut dec = Decoder::new(&stored);
                        let mut buf = olds.clone();
                        for piece in buf.chunks_mut(chunk) {
                            model.apply(&mut dec, piece);
                        }
                        assert!(
                            buf == news && dec.at_end() && dec.ends_canonically(),
                            "{len} deltas, gap {gap}, buffers of {chunk}"
                        );
                    }
                }
                let back = decode_deltas_with(&stored[..stored.len() - 1], &olds, 12, true);
                assert!(!back.exact, "{len} deltas, gap {gap}: cut short");
                for i in stored.len().saturating_sub(4)..stored.len() {
                    for bit in 0..8 {
                        let mut bad = stored.clone();
                        bad[i] ^= 1 << bit;
                        let back = decode_deltas_with(&bad, &olds, 12, true);
                        assert!(
                            back.deltas != deltas || !back.exact,
                            "{len} deltas, gap {gap}: byte {i} bit {bit} flipped"
                        );
                    }
                }
            }
        }
        // A long unchanged stretch costs a few bytes, not one flag per byte.
        let olds: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut deltas = vec![0u8; olds.len()];
        deltas[100_000] = 5;
        let blocks = encode_deltas_with(&olds, &deltas, 18, true);
        let plain = encode_deltas_with(&olds, &deltas, 18, false);
        assert!(
            blocks.len() < plain.len(),
            "{} vs {}",
            blocks.len(),
            plain.len()
        );
        assert_eq!(decode_deltas_with(&blocks, &olds, 18, true).deltas, deltas);
    }

    #[test]
    fn stretch_inverts_squash() {
        for p in 1..4095u32 {
            let d = stretch(p);
            assert!(squash(d) as u32 >= p, "p {p}");
            assert!(d == -2047 || (squash(d - 1) as u32) < p, "p {p}");
        }
    }

    #[test]
    fn round_trips_and_ends_exactly() {
        let old: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut new = old.clone();
        for i in (0..new.len()).step_by(37) {
            new[i] = new[i].wrapping_add((i % 5) as u8);
        }
        let copies = [(0, 0, 30_000), (100, 30_000, 20_000)];
        let stored = encode(&old, &new, &copies, 16, false, false);
        assert_eq!(encode(&old, &new, &copies, 16, true, false), stored);
        let olds: Vec<u8> = old[..30_000]
            .iter()
            .chain(&old[100..20_100])
            .copied()
            .collect();
        let want: Vec<u8> = olds
            .iter()
            .zip(new.iter())
            .map(|(o, n)| n.wrapping_sub(*o))
            .collect();
        let (got, at_end) = decode(&stored, &olds, 16);
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first, None, "{:?} {:?}", &got[..8], &want[..8]);
        assert_eq!(got.len(), want.len());
        assert!(at_end);
        assert!(stored.len() < 3000, "{} bytes", stored.len());
        // One byte short: the decoder notices.
        let (_, at_end) = decode(&stored[..stored.len() - 1], &olds, 16);
        assert!(!at_end);
        // A flip in the final four bytes decodes other deltas or ends
        // elsewhere than the encoder's `low`.
        for i in stored.len() - 4..stored.len() {
            for bit in 0..8 {
                let mut bad = stored.clone();
                bad[i] ^= 1 << bit;
                let back = decode_deltas(&bad, &olds, 16);
                assert!(back.deltas != want || !back.exact, "byte {i} bit {bit}");
            }
        }
    }
}
