//! The oracle: a naive in-memory applier written from docs/FORMAT.md alone.
//!
//! It parses the whole patch into memory, decodes every stream completely,
//! builds the output with the copies first and adds the deltas afterwards. It
//! shares no code with the crate. Its errors are plain strings: the tests only
//! compare accept / reject and the output with the streaming applier.

use sha2::{Digest, Sha256};

pub type NaiveResult<T> = Result<T, String>;

/// Largest new file accepted (the default `Limits::max_output_len`).
const MAX_OUTPUT: u64 = 16 << 30;
/// Budget for the decoded streams 0–3 plus the stored bytes of the compressed ones.
const SEGMENT_BUFFER: u64 = 16 << 20;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }

    fn byte(&mut self, what: &str) -> NaiveResult<u8> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| format!("{what}: truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: u64, what: &str) -> NaiveResult<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(format!("{what}: truncated ({n} bytes wanted, {left} left)"));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// LEB128: at most 10 bytes, fits in 64 bits, minimal.
    fn varint(&mut self, what: &str) -> NaiveResult<u64> {
        let mut v: u128 = 0;
        for i in 0..10 {
            let b = self.byte(what)?;
            v |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(format!("{what}: non-minimal varint"));
                }
                return u64::try_from(v).map_err(|_| format!("{what}: varint over 64 bits"));
            }
        }
        Err(format!("{what}: varint longer than 10 bytes"))
    }
}

fn unzigzag(v: u64) -> i128 {
    if v & 1 == 0 {
        i128::from(v >> 1)
    } else {
        -i128::from(v >> 1) - 1
    }
}

/// Everything the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaiveHeader {
    pub old_len: u64,
    pub new_len: u64,
    pub old_sha256: [u8; 32],
    pub new_sha256: [u8; 32],
}

struct Desc {
    raw_len: u64,
    codec: u8,
    stored_len: u64,
    /// LZMA properties byte and log2 of the dictionary (codec 2 only).
    lzma: (u8, u8),
}

/// Largest LZMA dictionary accepted (the default `Limits::max_window_log`).
const MAX_DICT_LOG: u8 = 24;

/// Decodes a raw LZMA stream (no header, no end marker) of known size; every
/// stored byte must be used and the range coder must end cleanly.
fn decode_lzma(desc: &Desc, payload: &[u8], what: &str) -> NaiveResult<Vec<u8>> {
    let (props, dict_log) = desc.lzma;
    let (lc, lp, pb) = (
        u32::from(props % 9),
        u32::from(props / 9 % 5),
        u32::from(props / 45),
    );
    let mut stream = lzma_rust2::LzmaStream::new(desc.raw_len, lc, lp, pb, 1u32 << dict_log, None)
        .map_err(|e| format!("{what}: {e}"))?;
    let mut out = vec![0u8; usize::try_from(desc.raw_len).unwrap() + 1];
    let (mut used, mut made) = (0usize, 0usize);
    loop {
        let r = stream
            .process(
                &payload[used..],
                &mut out[made..],
                lzma_rust2::Action::Finish,
            )
            .map_err(|e| format!("{what}: LZMA error {e}"))?;
        used += r.bytes_consumed;
        made += r.bytes_produced;
        if r.status == lzma_rust2::Status::StreamEnd {
            break;
        }
        if r.bytes_consumed == 0 && r.bytes_produced == 0 {
            return Err(format!("{what}: LZMA stream ends early"));
        }
    }
    if made as u64 != desc.raw_len || used != payload.len() {
        return Err(format!(
            "{what}: LZMA decodes to {made} bytes from {used} of {} stored",
            payload.len()
        ));
    }
    out.truncate(made);
    Ok(out)
}

fn parse_header(c: &mut Cursor<'_>) -> NaiveResult<NaiveHeader> {
    if c.bytes(4, "magic")? != b"DSWP" {
        return Err("bad magic".into());
    }
    let version = c.byte("version")?;
    if version != 1 {
        return Err(format!("unsupported version {version}"));
    }
    let flags = c.byte("flags")?;
    if flags != 0 {
        return Err(format!("unknown flags {flags}"));
    }
    let transform = c.byte("transform")?;
    if transform != 0 {
        return Err(format!("unknown transform {transform}"));
    }
    if c.byte("reserved")? != 0 {
        return Err("reserved byte".into());
    }
    let old_len = c.varint("old_len")?;
    let new_len = c.varint("new_len")?;
    let old_sha256 = c.bytes(32, "old_sha256")?.try_into().unwrap();
    let new_sha256 = c.bytes(32, "new_sha256")?.try_into().unwrap();
    Ok(NaiveHeader {
        old_len,
        new_len,
        old_sha256,
        new_sha256,
    })
}

/// Decodes one stream's payload completely.
fn decode_stream(desc: &Desc, payload: &[u8], what: &str) -> NaiveResult<Vec<u8>> {
    match desc.codec {
        0 => Ok(payload.to_vec()),
        1 => {
            // Exactly one frame, filling the stored bytes.
            let frame_len = zstd::zstd_safe::find_frame_compressed_size(payload)
                .map_err(|e| format!("{what}: not a zstd frame ({e})"))?;
            if frame_len != payload.len() {
                return Err(format!(
                    "{what}: zstd frame of {frame_len} bytes in {} stored bytes",
                    payload.len()
                ));
            }
            // One more byte of room so that a frame decoding to more than raw_len
            // is seen as such, not as a too-small buffer.
            let cap = usize::try_from(desc.raw_len).unwrap() + 1;
            let out = zstd::bulk::decompress(payload, cap)
                .map_err(|e| format!("{what}: zstd error {e}"))?;
            if out.len() as u64 != desc.raw_len {
                return Err(format!(
                    "{what}: decodes to {} bytes, raw_len is {}",
                    out.len(),
                    desc.raw_len
                ));
            }
            Ok(out)
        }
        2 => decode_lzma(desc, payload, what),
        c => Err(format!("{what}: unknown codec {c}")),
    }
}

/// Reads the header only.
pub fn header(patch: &[u8]) -> NaiveResult<NaiveHeader> {
    parse_header(&mut Cursor::new(patch))
}

/// Applies `patch` to `old`; returns the verified new file.
pub fn apply(old: &[u8], patch: &[u8]) -> NaiveResult<Vec<u8>> {
    let mut c = Cursor::new(patch);
    let h = parse_header(&mut c)?;
    if h.new_len > MAX_OUTPUT {
        return Err("new_len over the limit".into());
    }
    if h.old_len != old.len() as u64 {
        return Err("old file size mismatch".into());
    }
    if <[u8; 32]>::from(Sha256::digest(old)) != h.old_sha256 {
        return Err("old file SHA-256 mismatch".into());
    }

    let mut out: Vec<u8> = Vec::new();
    let mut p: u64 = 0;
    while (out.len() as u64) < h.new_len {
        let remaining = h.new_len - out.len() as u64;
        let seg_len = c.varint("seg_len")?;
        if seg_len == 0 || seg_len > remaining {
            return Err(format!("seg_len {seg_len} with {remaining} remaining"));
        }
        let mut descs = Vec::new();
        for k in 0..5 {
            let raw_len = c.varint("raw_len")?;
            if raw_len == 0 {
                descs.push(Desc {
                    raw_len: 0,
                    codec: 0,
                    stored_len: 0,
                    lzma: (0, 0),
                });
                continue;
            }
            let codec = c.byte("codec")?;
            let stored_len = match codec {
                0 => raw_len,
                1 => {
                    let s = c.varint("stored_len")?;
                    if s == 0 {
                        return Err("zstd stored_len 0".into());
                    }
                    s
                }
                2 if k == 3 => {
                    let s = c.varint("stored_len")?;
                    if s == 0 {
                        return Err("LZMA stored_len 0".into());
                    }
                    s
                }
                other => return Err(format!("stream {k}: unknown codec {other}")),
            };
            let mut lzma = (0, 0);
            if codec == 2 {
                let props = c.byte("LZMA props")?;
                let dict_log = c.byte("LZMA dict_log")?;
                let (lc, lp, pb) = (props % 9, props / 9 % 5, props / 45);
                if pb > 4 || lc + lp > 4 || !(12..=30).contains(&dict_log) {
                    return Err("LZMA parameters out of range".into());
                }
                lzma = (props, dict_log);
            }
            descs.push(Desc {
                raw_len,
                codec,
                stored_len,
                lzma,
            });
        }
        // Plain layout: no run streams, and a delta-byte stream.
        let plain = descs[1].raw_len == 0 && descs[2].raw_len == 0 && descs[3].raw_len > 0;
        if descs[3].codec == 2 && !plain {
            return Err("LZMA outside the plain layout".into());
        }
        let mut budget: u128 = 0;
        for (k, d) in descs[..4].iter().enumerate() {
            if plain && k == 3 {
                budget += u128::from(d.stored_len);
                continue;
            }
            budget += u128::from(d.raw_len);
            if d.codec != 0 {
                budget += u128::from(d.stored_len);
            }
        }
        if budget > u128::from(SEGMENT_BUFFER) {
            return Err("segment buffer limit".into());
        }
        // The literal stream can hold at most seg_len useful bytes; anything
        // longer is refused before the oracle allocates for it.
        if descs[4].raw_len > seg_len {
            return Err("literal stream longer than its segment".into());
        }
        // The plain delta stream decodes to one byte per copied byte, so it
        // cannot be longer than its segment.
        if plain && descs[3].raw_len > seg_len {
            return Err("plain delta stream longer than its segment".into());
        }
        if descs[3].codec == 2 && descs[3].lzma.1 > MAX_DICT_LOG {
            return Err("LZMA dictionary over the limit".into());
        }
        let mut streams: Vec<Vec<u8>> = Vec::new();
        for (k, d) in descs.iter().enumerate() {
            let payload = c.bytes(d.stored_len, "payload")?;
            if d.raw_len == 0 {
                streams.push(Vec::new());
            } else {
                streams.push(decode_stream(d, payload, &format!("stream {k}"))?);
            }
        }

        // Pass 1: copies (unchanged) and literals; remember where the copies went.
        let mut ctrl = Cursor::new(&streams[0]);
        let mut lits = Cursor::new(&streams[4]);
        let mut copied: Vec<std::ops::Range<usize>> = Vec::new();
        let mut produced: u64 = 0;
        while produced < seg_len {
            let copy = ctrl.varint("copy_len")?;
            let lit = ctrl.varint("literal_len")?;
            let seek = unzigzag(ctrl.varint("seek")?);
            if copy == 0 && lit == 0 {
                return Err("empty operation".into());
            }
            let total = copy.checked_add(lit).ok_or("operation length overflows")?;
            if total > seg_len - produced {
                return Err("operation past the segment".into());
            }
            let end = p.checked_add(copy).ok_or("copy end overflows")?;
            if end > old.len() as u64 {
                return Err("copy outside the old file".into());
            }
            let start = out.len();
            out.extend_from_slice(&old[p as usize..end as usize]);
            copied.push(start..out.len());
            out.extend_from_slice(lits.bytes(lit, "literals")?);
            produced += total;
            let next = i128::from(end) + seek;
            if next < 0 || next > i128::from(old.len() as u64) {
                return Err("seek outside the old file".into());
            }
            p = next as u64;
        }
        if !ctrl.at_end() {
            return Err("control stream not fully consumed".into());
        }
        if !lits.at_end() {
            return Err("literal stream not fully consumed".into());
        }

        // Pass 2: the deltas over the copies laid end to end.
        let positions: Vec<usize> = copied.into_iter().flatten().collect();
        if plain {
            if streams[3].len() != positions.len() {
                return Err("plain delta stream length differs from the copies".into());
            }
            for (&at, d) in positions.iter().zip(&streams[3]) {
                out[at] = out[at].wrapping_add(*d);
            }
            continue;
        }
        let mut zeros = Cursor::new(&streams[1]);
        let mut lens = Cursor::new(&streams[2]);
        let mut deltas = Cursor::new(&streams[3]);
        let mut i: u64 = 0;
        while i < positions.len() as u64 {
            let z = zeros.varint("zero run")?;
            let d = lens.varint("delta length")?;
            if z == 0 && d == 0 {
                return Err("empty run pair".into());
            }
            let run_end = i
                .checked_add(z)
                .and_then(|x| x.checked_add(d))
                .ok_or("run overflows")?;
            if run_end > positions.len() as u64 {
                return Err("run pair past the copies".into());
            }
            let add = deltas.bytes(d, "delta bytes")?;
            for (k, a) in add.iter().enumerate() {
                let at = positions[(i + z) as usize + k];
                out[at] = out[at].wrapping_add(*a);
            }
            i = run_end;
        }
        if !zeros.at_end() || !lens.at_end() || !deltas.at_end() {
            return Err("run or delta streams not fully consumed".into());
        }
    }
    if !c.at_end() {
        return Err("trailing bytes after the last segment".into());
    }
    if <[u8; 32]>::from(Sha256::digest(&out)) != h.new_sha256 {
        return Err("new file SHA-256 mismatch".into());
    }
    Ok(out)
}
