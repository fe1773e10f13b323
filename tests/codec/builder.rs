//! A small patch writer for crafted test patches, written from docs/FORMAT.md
//! (not from the crate's encoder), so that every field can take any value,
//! valid or not.

use sha2::{Digest, Sha256};

/// Unsigned LEB128, minimal.
pub fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// zigzag: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ...
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// One zstd frame, with the content size in its header.
pub fn zstd_frame(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).expect("zstd compress")
}

/// The header, each field as the bytes that will be written.
#[derive(Clone, Debug)]
pub struct Header {
    pub magic: Vec<u8>,
    pub version: u8,
    pub flags: u8,
    pub transform: u8,
    pub reserved: u8,
    pub old_len: Vec<u8>,
    pub new_len: Vec<u8>,
    pub old_sha256: [u8; 32],
    pub new_sha256: [u8; 32],
    /// Bytes after the header: transform 2's reference map (descriptor and
    /// payload), empty without it.
    pub map: Vec<u8>,
}

impl Header {
    /// A correct header for `old` -> `new`.
    pub fn for_files(old: &[u8], new: &[u8]) -> Header {
        Header {
            magic: b"DSWP".to_vec(),
            version: 1,
            flags: 0,
            transform: 0,
            reserved: 0,
            old_len: varint(old.len() as u64),
            new_len: varint(new.len() as u64),
            old_sha256: sha256(old),
            new_sha256: sha256(new),
            map: Vec::new(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.magic.clone();
        out.extend_from_slice(&[self.version, self.flags, self.transform, self.reserved]);
        out.extend_from_slice(&self.old_len);
        out.extend_from_slice(&self.new_len);
        out.extend_from_slice(&self.old_sha256);
        out.extend_from_slice(&self.new_sha256);
        out.extend_from_slice(&self.map);
        out
    }
}

/// One stream of a segment: its descriptor bytes and its payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    pub desc: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Stream {
    pub fn absent() -> Stream {
        Stream {
            desc: vec![0],
            payload: Vec::new(),
        }
    }

    /// Codec 0 (absent when empty).
    pub fn raw(data: &[u8]) -> Stream {
        if data.is_empty() {
            return Stream::absent();
        }
        let mut desc = varint(data.len() as u64);
        desc.push(0);
        Stream {
            desc,
            payload: data.to_vec(),
        }
    }

    /// Codec 1, one zstd frame (absent when empty).
    pub fn zstd(data: &[u8]) -> Stream {
        if data.is_empty() {
            return Stream::absent();
        }
        Stream::zstd_payload(data.len() as u64, zstd_frame(data))
    }

    /// Codec 1 with an explicit raw_len and stored payload.
    pub fn zstd_payload(raw_len: u64, payload: Vec<u8>) -> Stream {
        let mut desc = varint(raw_len);
        desc.push(1);
        desc.extend(varint(payload.len() as u64));
        Stream { desc, payload }
    }

    /// Codec 3, the delta model: `deltas` (one per copied byte) coded over
    /// `olds`, the old bytes under the segment's copies in order (the same
    /// length), with a history window of 2^`window_log` bytes, or the
    /// smallest power of two (at least 2^10) that holds the stream if that is
    /// less, as the format requires (absent when empty).
    pub fn model(olds: &[u8], deltas: &[u8], window_log: u8) -> Stream {
        Stream::model_codec(olds, deltas, window_log, false)
    }

    /// Codec 5, the delta model with zero blocks, as [`Stream::model`].
    pub fn block_model(olds: &[u8], deltas: &[u8], window_log: u8) -> Stream {
        Stream::model_codec(olds, deltas, window_log, true)
    }

    fn model_codec(olds: &[u8], deltas: &[u8], window_log: u8, blocks: bool) -> Stream {
        assert_eq!(olds.len(), deltas.len(), "one old byte per delta");
        if deltas.is_empty() {
            return Stream::absent();
        }
        let window_log = window_log.min(window_cap(deltas.len() as u64));
        let payload =
            deltaswap::model_codec::encode_deltas_with(olds, deltas, u32::from(window_log), blocks);
        let codec = if blocks { 5 } else { 3 };
        Stream::model_codec_payload(codec, deltas.len() as u64, payload, window_log)
    }

    /// Codec 3 with explicit fields (the window as given, canonical or not):
    /// `raw_len 3 stored_len window_log`, where
    /// stored_len is the payload's length.
    pub fn model_payload(raw_len: u64, payload: Vec<u8>, window_log: u8) -> Stream {
        Stream::model_codec_payload(3, raw_len, payload, window_log)
    }

    /// [`Stream::model_payload`] with the codec byte given (3 or 5).
    fn model_codec_payload(codec: u8, raw_len: u64, payload: Vec<u8>, window_log: u8) -> Stream {
        let mut desc = varint(raw_len);
        desc.push(codec);
        desc.extend(varint(payload.len() as u64));
        desc.push(window_log);
        Stream { desc, payload }
    }

    /// Codec 4, raw LZMA (no header, no end marker) with `(lc, lp, pb)` and
    /// a dictionary of 2^`dict_log` bytes, the descriptor as given:
    /// `raw_len 4 stored_len props dict_log` (absent when empty).
    pub fn lzma(data: &[u8], (lc, lp, pb): (u32, u32, u32), dict_log: u8) -> Stream {
        if data.is_empty() {
            return Stream::absent();
        }
        let mut opts = lzma_rust2::LzmaOptions::with_preset(6);
        opts.lc = lc;
        opts.lp = lp;
        opts.pb = pb;
        opts.dict_size = 1 << dict_log;
        let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &opts, false).expect("lzma");
        std::io::Write::write_all(&mut w, data).expect("lzma write");
        let payload = w.finish().expect("lzma finish");
        let props = u8::try_from((pb * 5 + lp) * 9 + lc).expect("props");
        Stream::lzma_payload(data.len() as u64, payload, props, dict_log)
    }

    /// Codec 4 with explicit fields.
    pub fn lzma_payload(raw_len: u64, payload: Vec<u8>, props: u8, dict_log: u8) -> Stream {
        let mut desc = varint(raw_len);
        desc.push(4);
        desc.extend(varint(payload.len() as u64));
        desc.extend([props, dict_log]);
        Stream { desc, payload }
    }

    /// Any descriptor: raw_len, codec byte, optional stored_len; and a payload.
    pub fn custom(raw_len: u64, codec: u8, stored_len: Option<u64>, payload: &[u8]) -> Stream {
        let mut desc = varint(raw_len);
        desc.push(codec);
        if let Some(s) = stored_len {
            desc.extend(varint(s));
        }
        Stream {
            desc,
            payload: payload.to_vec(),
        }
    }

    pub fn with_codec(data: &[u8], codec: Codec) -> Stream {
        match codec {
            Codec::Raw => Stream::raw(data),
            Codec::Zstd => Stream::zstd(data),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Raw,
    Zstd,
}

pub const CONTROL: usize = 0;
pub const ZERO_RUNS: usize = 1;
pub const DELTA_LENS: usize = 2;
pub const DELTA_BYTES: usize = 3;
pub const LITERALS: usize = 4;

/// The decoded contents of a segment's five streams, plus its length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentData {
    pub seg_len: u64,
    pub streams: [Vec<u8>; 5],
}

impl SegmentData {
    pub fn encode(&self, codecs: [Codec; 5]) -> Segment {
        Segment {
            seg_len: varint(self.seg_len),
            streams: std::array::from_fn(|i| Stream::with_codec(&self.streams[i], codecs[i])),
        }
    }
}

/// An encoded segment.
#[derive(Clone, Debug)]
pub struct Segment {
    pub seg_len: Vec<u8>,
    pub streams: [Stream; 5],
}

impl Segment {
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.seg_len.clone();
        for s in &self.streams {
            out.extend_from_slice(&s.desc);
        }
        for s in &self.streams {
            out.extend_from_slice(&s.payload);
        }
        out
    }
}

/// A whole patch.
#[derive(Clone, Debug)]
pub struct Patch {
    pub header: Header,
    pub segments: Vec<Segment>,
    pub trailer: Vec<u8>,
}

impl Patch {
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.header.bytes();
        for s in &self.segments {
            out.extend(s.bytes());
        }
        out.extend_from_slice(&self.trailer);
        out
    }

    /// Offset of segment `i`'s first byte.
    pub fn segment_offset(&self, i: usize) -> usize {
        self.header.bytes().len()
            + self.segments[..i]
                .iter()
                .map(|s| s.bytes().len())
                .sum::<usize>()
    }

    /// Offset and length of stream `k`'s payload in segment `i`.
    pub fn payload_range(&self, i: usize, k: usize) -> std::ops::Range<usize> {
        let seg = &self.segments[i];
        let mut at = self.segment_offset(i) + seg.seg_len.len();
        at += seg.streams.iter().map(|s| s.desc.len()).sum::<usize>();
        at += seg.streams[..k]
            .iter()
            .map(|s| s.payload.len())
            .sum::<usize>();
        at..at + seg.streams[k].payload.len()
    }
}

/// One operation: copy `copy` bytes from the old position, then `lit` literal
/// bytes, then move the old position by `seek` past the end of the copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub copy: u64,
    pub lit: u64,
    pub seek: i64,
}

pub fn op(copy: u64, lit: u64, seek: i64) -> Op {
    Op { copy, lit, seek }
}

/// Computes the five streams of segments that turn `old` into `new` with the
/// given operations (one list per segment). `p` is the old position, carried
/// across segments. Panics if the operations do not describe `new`.
pub fn plan(old: &[u8], new: &[u8], segments: &[Vec<Op>]) -> Vec<SegmentData> {
    let mut p: i64 = 0;
    let mut n: usize = 0;
    let mut out = Vec::new();
    for ops in segments {
        let mut seg = SegmentData::default();
        let mut deltas: Vec<u8> = Vec::new();
        for o in ops {
            seg.streams[CONTROL].extend(varint(o.copy));
            seg.streams[CONTROL].extend(varint(o.lit));
            seg.streams[CONTROL].extend(varint(zigzag(o.seek)));
            let (pu, c, l) = (p as usize, o.copy as usize, o.lit as usize);
            for k in 0..c {
                deltas.push(new[n + k].wrapping_sub(old[pu + k]));
            }
            seg.streams[LITERALS].extend_from_slice(&new[n + c..n + c + l]);
            n += c + l;
            p = p + o.copy as i64 + o.seek;
            seg.seg_len += o.copy + o.lit;
        }
        // Run pairs over the copies laid end to end: (unchanged, changed).
        let mut i = 0;
        while i < deltas.len() {
            let z0 = i;
            while i < deltas.len() && deltas[i] == 0 {
                i += 1;
            }
            let c0 = i;
            while i < deltas.len() && deltas[i] != 0 {
                i += 1;
            }
            seg.streams[ZERO_RUNS].extend(varint((c0 - z0) as u64));
            seg.streams[DELTA_LENS].extend(varint((i - c0) as u64));
            seg.streams[DELTA_BYTES].extend_from_slice(&deltas[c0..i]);
        }
        out.push(seg);
    }
    assert_eq!(n, new.len(), "the plan does not cover the new file");
    out
}

/// The same segments in plain layout: no run streams, one delta per copied byte.
pub fn to_plain(old: &[u8], new: &[u8], segments: &[Vec<Op>]) -> Vec<SegmentData> {
    let mut segs = plan(old, new, segments);
    let olds = copied_olds(old, segments);
    let mut n: usize = 0;
    for ((seg, ops), olds) in segs.iter_mut().zip(segments).zip(&olds) {
        let mut news = Vec::new();
        for o in ops {
            let c = o.copy as usize;
            news.extend_from_slice(&new[n..n + c]);
            n += c + o.lit as usize;
        }
        seg.streams[ZERO_RUNS].clear();
        seg.streams[DELTA_LENS].clear();
        seg.streams[DELTA_BYTES] = news
            .iter()
            .zip(olds)
            .map(|(n, o)| n.wrapping_sub(*o))
            .collect();
    }
    segs
}

/// Per segment, the old bytes under its copies, in order and laid end to end:
/// what the delta model codes a plain delta stream over. `p` is the old
/// position, carried across segments as in [`plan`].
pub fn copied_olds(old: &[u8], segments: &[Vec<Op>]) -> Vec<Vec<u8>> {
    let mut p: i64 = 0;
    let mut out = Vec::new();
    for ops in segments {
        let mut olds = Vec::new();
        for o in ops {
            let (pu, c) = (p as usize, o.copy as usize);
            olds.extend_from_slice(&old[pu..pu + c]);
            p = p + o.copy as i64 + o.seek;
        }
        out.push(olds);
    }
    out
}

/// A patch from decoded segments, all streams with the same codec.
pub fn assemble(old: &[u8], new: &[u8], segs: &[SegmentData], codec: Codec) -> Patch {
    Patch {
        header: Header::for_files(old, new),
        segments: segs.iter().map(|s| s.encode([codec; 5])).collect(),
        trailer: Vec::new(),
    }
}

/// Deterministic pseudo-random bytes (splitmix64).
/// The lowercase hex digits of `bytes`, two per byte (what a hex edit of
/// the edit layout writes).
pub fn hex_digits(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect()
}

/// `old` rebuilt: a new 20-byte ID (from `seed`) at `id_at`, and at
/// `name_at` the 38 hex digits of all but its first byte, as Debian names a
/// detached debug file after a build ID.
pub fn rebuilt(old: &[u8], id_at: usize, name_at: usize, seed: u64) -> Vec<u8> {
    let mut new = old.to_vec();
    let id = random_bytes(seed, 20);
    new[id_at..id_at + 20].copy_from_slice(&id);
    new[name_at..name_at + 38].copy_from_slice(&hex_digits(&id[1..]));
    new
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The standard crafted case: a 400-byte random old file, a new file made of
/// changed copies, literals and a backwards seek, in two segments (so that the
/// old position is carried from one to the next).
pub struct Sample {
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub segs: Vec<SegmentData>,
    /// The same operations in plain layout.
    pub plain: Vec<SegmentData>,
    /// Per segment, the old bytes under its copies (what a codec-3 delta
    /// stream of `plain` is coded over).
    pub plain_olds: Vec<Vec<u8>>,
}

pub fn sample() -> Sample {
    let old = random_bytes(1, 400);
    let mut new = Vec::new();
    // seg 0, op 0: old[0..100] with deltas at 10, 11, 50; then 20 literals; seek +30 -> p = 130
    let mut a = old[0..100].to_vec();
    a[10] ^= 1;
    a[11] = a[11].wrapping_add(7);
    a[50] = a[50].wrapping_sub(1);
    new.extend(&a);
    new.extend(random_bytes(2, 20));
    // seg 0, op 1: old[130..200] unchanged, 5 literals, seek -150 -> p = 50
    new.extend(&old[130..200]);
    new.extend(b"LITER");
    // seg 1, op 0: old[50..90] with the last byte changed, no literal, seek 0 -> p = 90
    let mut b = old[50..90].to_vec();
    b[39] = b[39].wrapping_add(128);
    new.extend(&b);
    // seg 1, op 1: old[90..95], 30 literals, seek +305 -> p = 400 = old_len
    new.extend(&old[90..95]);
    new.extend(random_bytes(3, 30));
    let ops = [
        vec![op(100, 20, 30), op(70, 5, -150)],
        vec![op(40, 0, 0), op(5, 30, 305)],
    ];
    let segs = plan(&old, &new, &ops);
    let plain = to_plain(&old, &new, &ops);
    let plain_olds = copied_olds(&old, &ops);
    Sample {
        old,
        new,
        segs,
        plain,
        plain_olds,
    }
}

/// The largest window_log a model stream of `len` deltas may name: the
/// smallest power of two that holds it, at least 2^10.
pub fn window_cap(len: u64) -> u8 {
    let mut cap = 10u8;
    while (1u64 << cap) < len {
        cap += 1;
    }
    cap
}
