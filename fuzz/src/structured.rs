//! `apply_structured`: an `arbitrary`-derived description of a patch, encoded
//! into one whose lengths, streams and (optionally) digests are right, so that
//! the fuzzer spends its time in the applier's operation loop rather than at
//! the header checks. An in-target model computes what the patch must produce
//! when it is valid; deliberate faults (raw, unclamped operations, stream
//! mutations, wrong digests) then check that every applier refuses alike.
//!
//! A segment is written in the run layout (zero runs, delta lengths, changed
//! bytes) or in the plain layout (no run streams; one delta byte per copied
//! byte, stored raw, as a zstd frame or as raw LZMA). Faults on the delta-byte
//! stream of a plain segment hit its plain deltas; faults on stored bytes hit
//! the compressed frames.

use arbitrary::Arbitrary;
use sha2::{Digest, Sha256};

/// The fuzzer's input.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Old file length (mod 8193) and content seed.
    pub old_len: u16,
    pub old_seed: u64,
    /// Whether the old file repeats a short period (so copies with seeks make sense).
    pub old_periodic: bool,
    pub segments: Vec<Seg>,
    /// Clamp operations into range (a valid patch) or encode them raw.
    pub clamp: bool,
    /// Header digests: write the right ones (most of the time) or flip a bit.
    pub wrong_old_hash: bool,
    pub wrong_new_hash: bool,
    /// Added to the header's new length (0 keeps it right).
    pub new_len_skew: i8,
    /// Byte-level faults in decoded streams, applied before encoding.
    pub stream_faults: Vec<StreamFault>,
    /// Bytes appended after the last segment.
    pub trailer: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
pub struct Seg {
    pub ops: Vec<FuzzOp>,
    /// Codec per stream: false raw, true zstd.
    pub zstd: [bool; 5],
    /// Zstd level for this segment's compressed streams (odd → 3, even → 1;
    /// higher levels cost milliseconds per call and add nothing for apply).
    pub level: u8,
    /// Added to the declared segment length (0 keeps it right).
    pub seg_len_skew: i8,
    /// Run layout, or plain layout with its delta bytes raw, zstd or LZMA.
    pub layout: Layout,
    /// How the plain deltas are LZMA-coded (valid parameters only).
    pub lzma: LzmaSpec,
    /// From 0xf0 up: also code stream `lzma_elsewhere % 5` with LZMA, which is
    /// refused unless it is the delta-byte stream of a plain segment (or
    /// absent). A rare fault, so that most cases get past the descriptors.
    pub lzma_elsewhere: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Runs,
    PlainRaw,
    PlainZstd,
    PlainLzma,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct LzmaSpec {
    /// lc = props % 5, lp = (props / 5) % (5 - lc), pb = (props / 25) % 5:
    /// always lc + lp <= 4, as the format requires.
    pub props: u8,
    /// The declared dictionary is 2^(12 + dict % 9), the fuzzing limit's range;
    /// the encoder's is at most that and at most what the stream needs.
    pub dict: u8,
    /// The encoder's preset: `encoder & 1` (0 or 1, the fast ones).
    pub encoder: u16,
    /// From 0xf0 up, `declared` is written instead of the (props, dict_log)
    /// descriptor bytes. Valid when the properties are the encoder's and the
    /// dictionary is within 12..=30 and holds the encoder's window or the whole
    /// stream (over 2^20 the fuzzing limits refuse it with `LimitExceeded`).
    pub declare: u8,
    pub declared: (u8, u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct FuzzOp {
    pub copy: u16,
    pub lit: u16,
    pub seek: i32,
    /// Edits of the copied bytes: every `delta_stride`-th byte gets `delta` added.
    pub delta: u8,
    pub delta_stride: u8,
}

#[derive(Arbitrary, Debug)]
pub struct StreamFault {
    pub segment: u8,
    pub stream: u8,
    pub pos: u16,
    pub kind: FaultKind,
    /// Hit the stored (compressed) bytes rather than the decoded ones. For a
    /// raw stream the two are the same bytes.
    pub stored: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FaultKind {
    Set(u8),
    Insert(u8),
    Remove,
    TruncateHere,
}

const CONTROL: usize = 0;
const ZERO_RUNS: usize = 1;
const DELTA_LENS: usize = 2;
const DELTA_BYTES: usize = 3;
const LITERALS: usize = 4;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The encoded case: the old file, the patch, and the new file the model
/// expects when the patch is meant to be valid.
pub struct Case {
    pub old: Vec<u8>,
    pub patch: Vec<u8>,
    pub expected: Option<Vec<u8>>,
}

/// Literal bytes of the new file come from a fixed pseudo-random pool, not
/// from the input, so a large literal length costs the fuzzer nothing.
fn literal_pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| crate::checks::splitmix_bytes(0x0117_e4a1, 64 << 10))
}

/// The run pairs (unchanged, changed) over a segment's copies laid end to end,
/// built as the copies are: maximal runs, as the writer makes them.
/// In plain layout it keeps one delta per copied byte instead.
#[derive(Default)]
struct Runs {
    plain: bool,
    zeros: u64,
    changed: u64,
    bytes: Vec<u8>,
    out_zeros: Vec<u8>,
    out_lens: Vec<u8>,
}

impl Runs {
    fn zeros(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if self.plain {
            self.bytes.resize(self.bytes.len() + n as usize, 0);
            return;
        }
        if self.changed > 0 {
            self.emit();
        }
        self.zeros += n;
    }
    fn changed(&mut self, d: u8) {
        self.changed += 1;
        self.bytes.push(d);
    }
    fn emit(&mut self) {
        varint(&mut self.out_zeros, self.zeros);
        varint(&mut self.out_lens, self.changed);
        self.zeros = 0;
        self.changed = 0;
    }
    fn finish(mut self, streams: &mut [Vec<u8>; 5]) {
        if !self.plain && (self.zeros > 0 || self.changed > 0) {
            self.emit();
        }
        streams[ZERO_RUNS] = self.out_zeros;
        streams[DELTA_LENS] = self.out_lens;
        streams[DELTA_BYTES] = self.bytes;
    }
}

/// Builds the case. Output sizes stay under 1 MiB (the targets' limit) only
/// because operations are at most 64 KiB and the list is short; the targets'
/// limits decide the rest.
pub fn build(inp: &Input) -> Case {
    let old_len = usize::from(inp.old_len) % 8193;
    let old: Vec<u8> = if inp.old_periodic {
        let period = crate::checks::splitmix_bytes(inp.old_seed, 61);
        (0..old_len).map(|i| period[i % 61]).collect()
    } else {
        crate::checks::splitmix_bytes(inp.old_seed, old_len)
    };

    let mut valid = inp.clamp && inp.stream_faults.is_empty();
    let mut new: Vec<u8> = Vec::new();
    let mut p: i128 = 0;
    let mut lit_counter: u64 = inp.old_seed % 4096;
    let mut total: u64 = 0;
    let mut encoded_segments: Vec<Vec<u8>> = Vec::new();
    for (si, seg) in inp.segments.iter().take(6).enumerate() {
        let mut streams: [Vec<u8>; 5] = Default::default();
        let mut runs = Runs {
            plain: seg.layout != Layout::Runs,
            ..Runs::default()
        };
        let mut seg_len: u64 = 0;
        for o in seg.ops.iter().take(32) {
            let (copy, lit, seek) = if inp.clamp {
                // Copy within what is left of old, then a seek back into 0..=old_len.
                let left = (old.len() as i128 - p).max(0) as u64;
                let copy = u64::from(o.copy) % (left + 1);
                let lit = u64::from(o.lit % 4096);
                let (copy, lit) = if copy == 0 && lit == 0 {
                    (0, 1)
                } else {
                    (copy, lit)
                };
                let end = p + i128::from(copy);
                let target = i128::from(o.seek).rem_euclid(old.len() as i128 + 1);
                (copy, lit, (target - end) as i64)
            } else {
                // Raw values, but small enough that building the case stays cheap.
                (
                    u64::from(o.copy % 16384),
                    u64::from(o.lit % 4096),
                    i64::from(o.seek),
                )
            };
            varint(&mut streams[CONTROL], copy);
            varint(&mut streams[CONTROL], lit);
            varint(&mut streams[CONTROL], zigzag(seek));
            seg_len = seg_len.wrapping_add(copy).wrapping_add(lit);
            // The copy, with its deltas: every `stride`-th byte gets `delta`.
            let stride = u64::from(o.delta_stride);
            let in_old = usize::try_from(p)
                .ok()
                .zip(usize::try_from(p + i128::from(copy)).ok())
                .and_then(|(a, b)| old.get(a..b));
            match in_old {
                Some(src) if valid => new.extend_from_slice(src),
                Some(_) => {}
                None => valid = false,
            }
            let copy_start = new.len().saturating_sub(copy as usize);
            if stride == 0 || o.delta == 0 {
                runs.zeros(copy);
            } else {
                let mut k = 0;
                while k < copy {
                    runs.changed(o.delta);
                    if valid {
                        let at = copy_start + k as usize;
                        new[at] = new[at].wrapping_add(o.delta);
                    }
                    let z = (stride - 1).min(copy - k - 1);
                    runs.zeros(z);
                    k += 1 + z;
                }
            }
            let pool = literal_pool();
            let mut left = lit as usize;
            while left > 0 {
                let at = (lit_counter as usize) % pool.len();
                let n = left.min(pool.len() - at);
                streams[LITERALS].extend_from_slice(&pool[at..at + n]);
                if valid {
                    new.extend_from_slice(&pool[at..at + n]);
                }
                lit_counter += n as u64;
                left -= n;
            }
            let next = p + i128::from(copy) + i128::from(seek);
            if next < 0 || next > old.len() as i128 || (copy == 0 && lit == 0) {
                valid = false;
            }
            p = next.clamp(0, old.len() as i128);
            if new.len() > 1 << 20 {
                valid = false;
                break;
            }
        }
        runs.finish(&mut streams);
        for f in &inp.stream_faults {
            if usize::from(f.segment) % 8 == si && !f.stored {
                fault(&mut streams[usize::from(f.stream) % 5], f);
            }
        }
        if seg.seg_len_skew != 0 {
            valid = false;
        }
        let declared = seg_len.wrapping_add_signed(i64::from(seg.seg_len_skew));
        total = total.wrapping_add(declared);
        if declared == 0 {
            valid = false;
        }
        let level = if seg.level & 1 == 1 { 3 } else { 1 };
        let mut codecs = seg
            .zstd
            .map(|z| if z { Enc::Zstd(level) } else { Enc::Raw });
        // The layout the applier will see: plain needs a delta-byte stream and
        // no run streams (a fault may have changed either).
        let plain = streams[ZERO_RUNS].is_empty()
            && streams[DELTA_LENS].is_empty()
            && !streams[DELTA_BYTES].is_empty();
        match seg.layout {
            Layout::Runs => {}
            Layout::PlainRaw => codecs[DELTA_BYTES] = Enc::Raw,
            Layout::PlainZstd => codecs[DELTA_BYTES] = Enc::Zstd(level),
            Layout::PlainLzma => codecs[DELTA_BYTES] = Enc::Lzma,
        }
        if seg.lzma_elsewhere >= 0xf0 {
            let k = usize::from(seg.lzma_elsewhere) % 5;
            codecs[k] = Enc::Lzma;
            let harmless = streams[k].is_empty() || (k == DELTA_BYTES && plain);
            if !harmless {
                valid = false;
            }
        }
        if codecs[DELTA_BYTES] == Enc::Lzma && !streams[DELTA_BYTES].is_empty() && !plain {
            valid = false;
        }
        let faults: Vec<&StreamFault> = inp
            .stream_faults
            .iter()
            .filter(|f| usize::from(f.segment) % 8 == si && f.stored)
            .collect();
        let (bytes, lzma_ok) = encode_segment(declared, &streams, codecs, &seg.lzma, &faults);
        if !lzma_ok {
            valid = false;
        }
        encoded_segments.push(bytes);
    }
    if !inp.trailer.is_empty() || inp.new_len_skew != 0 || inp.wrong_old_hash || inp.wrong_new_hash
    {
        valid = false;
    }
    let new_len = total.wrapping_add_signed(i64::from(inp.new_len_skew));
    let mut old_hash: [u8; 32] = Sha256::digest(&old).into();
    let mut new_hash: [u8; 32] = Sha256::digest(&new).into();
    if inp.wrong_old_hash {
        old_hash[0] ^= 1;
    }
    if inp.wrong_new_hash {
        new_hash[31] ^= 0x80;
    }
    let mut patch = b"DSWP\x01\x00\x00\x00".to_vec();
    varint(&mut patch, old.len() as u64);
    varint(&mut patch, new_len);
    patch.extend_from_slice(&old_hash);
    patch.extend_from_slice(&new_hash);
    for s in &encoded_segments {
        patch.extend_from_slice(s);
    }
    patch.extend_from_slice(&inp.trailer);
    Case {
        old,
        patch,
        expected: valid.then_some(new),
    }
}

fn fault(s: &mut Vec<u8>, f: &StreamFault) {
    let at = usize::from(f.pos) % (s.len() + 1);
    match f.kind {
        FaultKind::Set(b) => {
            if let Some(x) = s.get_mut(at) {
                *x = b
            }
        }
        FaultKind::Insert(b) => s.insert(at, b),
        FaultKind::Remove => {
            if at < s.len() {
                s.remove(at);
            }
        }
        FaultKind::TruncateHere => s.truncate(at),
    }
}

/// How a stream is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Enc {
    Raw,
    /// One zstd frame at this level.
    Zstd(i32),
    /// Raw LZMA1 (no header, no end marker) with the segment's [`LzmaSpec`].
    Lzma,
}

/// Codes `data` (not empty) as raw LZMA. Returns the stored bytes, the
/// descriptor's (props, dict_log) and whether they are valid for it.
fn lzma_encode(data: &[u8], spec: &LzmaSpec) -> (Vec<u8>, [u8; 2], bool) {
    let lc = u32::from(spec.props % 5);
    let lp = u32::from(spec.props / 5) % (5 - lc);
    let pb = u32::from(spec.props / 25) % 5;
    let props = ((pb * 5 + lp) * 9 + lc) as u8;
    let dict_log = 12 + u32::from(spec.dict % 9);
    // The smallest window that holds the stream, within 2^12..=2^dict_log.
    let need = usize::BITS - (data.len() - 1).leading_zeros();
    let enc_log = need.clamp(12, dict_log);
    // The writer's encoder at a fast preset. Under the fuzzer's coverage
    // instrumentation it costs a few milliseconds per LZMA case; mutations of
    // the stored bytes (`StreamFault::stored`) give the decoder the symbol
    // kinds a fast preset does not write.
    let mut o = lzma_rust2::LzmaOptions::with_preset(u32::from(spec.encoder) & 1);
    o.lc = lc;
    o.lp = lp;
    o.pb = pb;
    o.dict_size = 1 << enc_log;
    let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &o, false).expect("lzma writer");
    std::io::Write::write_all(&mut w, data).expect("lzma write");
    let bytes = w.finish().expect("lzma finish");
    match (spec.declare >= 0xf0).then_some(spec.declared) {
        None => (bytes, [props, dict_log as u8], true),
        Some((p, d)) => {
            let ok = p == props
                && (12..=30).contains(&d)
                && (u32::from(d) >= enc_log || 1u64 << d >= data.len() as u64);
            (bytes, [p, d], ok)
        }
    }
}

/// Encodes a segment; `faults` hit the stored bytes. Returns the bytes and
/// false if an LZMA descriptor was written with parameters that do not decode
/// the stream.
fn encode_segment(
    seg_len: u64,
    streams: &[Vec<u8>; 5],
    codecs: [Enc; 5],
    lzma: &LzmaSpec,
    faults: &[&StreamFault],
) -> (Vec<u8>, bool) {
    let mut head = Vec::new();
    let mut body = Vec::new();
    let mut ok = true;
    varint(&mut head, seg_len);
    for (k, (s, enc)) in streams.iter().zip(codecs).enumerate() {
        if s.is_empty() {
            varint(&mut head, 0);
            continue;
        }
        let (codec, mut stored, params) = match enc {
            Enc::Raw => (0, s.clone(), None),
            Enc::Zstd(level) => (
                1,
                zstd::bulk::compress(s, level).expect("zstd compress"),
                None,
            ),
            Enc::Lzma => {
                let (bytes, params, valid) = lzma_encode(s, lzma);
                ok &= valid;
                (2, bytes, Some(params))
            }
        };
        for f in faults.iter().filter(|f| usize::from(f.stream) % 5 == k) {
            fault(&mut stored, f);
        }
        if codec == 0 {
            // Raw: the stored bytes are the stream.
            varint(&mut head, stored.len() as u64);
            if stored.is_empty() {
                continue;
            }
            head.push(0);
        } else {
            varint(&mut head, s.len() as u64);
            head.push(codec);
            varint(&mut head, stored.len() as u64);
            if let Some(p) = params {
                head.extend_from_slice(&p);
            }
        }
        body.extend_from_slice(&stored);
    }
    head.extend_from_slice(&body);
    (head, ok)
}

/// The target: a valid case must apply to exactly the model's output; every
/// case goes through [`crate::checks::check_apply`] (appliers and oracle agree,
/// heap budget, reads inside old).
pub fn check(inp: &Input) {
    let case = build(inp);
    crate::checks::check_apply(&case.old, &case.patch);
    if let Some(want) = &case.expected {
        if want.len() as u64 <= crate::checks::MAX_OUTPUT {
            match deltaswap::apply_with_limits(&case.old, &case.patch, crate::checks::limits()) {
                Ok(out) => assert!(
                    &out == want,
                    "a valid structured patch applies to other bytes"
                ),
                Err(deltaswap::Error::LimitExceeded { .. }) => {}
                Err(e) => panic!("a valid structured patch is refused: {e:?}"),
            }
        }
    }
}
