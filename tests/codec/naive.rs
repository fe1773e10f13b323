//! The oracle: a naive in-memory applier written from docs/FORMAT.md alone.
//!
//! It parses the whole patch into memory, decodes every stream completely,
//! builds the output with the copies first and adds the deltas afterwards. It
//! shares no code with the crate, except the delta model's decoder
//! (`deltaswap::model_codec::decode_deltas_with`, codecs 3 and 5), which it runs on the
//! old bytes under the copies, taken from the old file once the control stream
//! has been executed. Its errors are plain strings: the tests only
//! compare accept / reject and the output with the streaming applier.

use deltaswap::model_codec::decode_deltas_with;
use sha2::{Digest, Sha256};

pub type NaiveResult<T> = Result<T, String>;

/// Largest new file accepted (the default `Limits::max_output_len`).
const MAX_OUTPUT: u64 = 16 << 30;
/// Budget for the decoded streams 0–3 plus the stored bytes of the compressed ones.
const SEGMENT_BUFFER: u64 = 16 << 20;
/// Default `Limits::max_model_len`: deltas coded with the model, per patch.
const MODEL_LEN: u64 = 64 << 20;

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
    /// Transform 1: literal runs carry x86 branch targets.
    pub x86: bool,
    /// Transform 16: literal runs carry AArch64 branch targets and pages.
    pub a64_literals: bool,
    /// Transform 2: displacements predicted through the reference map.
    pub refs: bool,
    /// Transform 4: pointers predicted through the reference map.
    pub pointers: bool,
    /// Transform 8: AArch64 branches and page addresses predicted through
    /// the reference map.
    pub a64: bool,
    /// Flag bit 0: the body is an edit list, not segments.
    pub edits: bool,
    pub old_len: u64,
    pub new_len: u64,
    pub old_sha256: [u8; 32],
    pub new_sha256: [u8; 32],
}

/// One stream descriptor, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub raw_len: u64,
    pub codec: u8,
    pub stored_len: u64,
    /// log2 of the delta model's history window (codecs 3 and 5 only).
    pub window_log: Option<u8>,
    /// LZMA properties byte and log2 of the dictionary (codec 4 only).
    pub lzma: Option<(u8, u8)>,
}

impl Desc {
    const ABSENT: Desc = Desc {
        raw_len: 0,
        codec: 0,
        stored_len: 0,
        window_log: None,
        lzma: None,
    };
}

/// Largest model window accepted (the default `Limits::max_window_log`).
const MAX_WINDOW_LOG: u8 = 24;

/// Reads a segment's length and its five stream descriptors, with the checks
/// the format puts on the descriptors themselves: codecs 0 and 1 anywhere,
/// codecs 3 and 5 (the delta model) only for the delta bytes of a plain-layout
/// segment, a nonzero stored_len, a window_log in 10..=30.
fn parse_segment_descs(c: &mut Cursor<'_>) -> NaiveResult<(u64, [Desc; 5])> {
    let seg_len = c.varint("seg_len")?;
    let mut descs = [Desc::ABSENT; 5];
    for (k, d) in descs.iter_mut().enumerate() {
        let raw_len = c.varint("raw_len")?;
        if raw_len == 0 {
            continue;
        }
        let codec = c.byte("codec")?;
        // Codecs 3 and 5 (the delta model) are defined for the delta-byte
        // stream only, codec 4 (LZMA) for the literal stream only; 2 is not
        // defined.
        let known =
            codec == 0 || codec == 1 || (is_model(codec) && k == 3) || (codec == 4 && k == 4);
        if !known {
            return Err(format!("stream {k}: unknown codec {codec}"));
        }
        let stored_len = if codec == 0 {
            raw_len
        } else {
            let s = c.varint("stored_len")?;
            if s == 0 {
                return Err(format!("stream {k}: codec {codec} with stored_len 0"));
            }
            s
        };
        let mut window_log = None;
        if is_model(codec) {
            let w = c.byte("window_log")?;
            if !(10..=30).contains(&w) {
                return Err(format!("model window_log {w} out of range"));
            }
            let cap = window_cap(raw_len);
            if w > cap {
                return Err(format!(
                    "model window_log {w} over {cap}, all this stream needs"
                ));
            }
            window_log = Some(w);
        }
        let mut lzma = None;
        if codec == 4 {
            let props = c.byte("lzma props")?;
            let dict_log = c.byte("lzma dict_log")?;
            let (lc, lp, pb) = (props % 9, (props / 9) % 5, props / 45);
            if lc + lp > 4 || pb > 4 {
                return Err(format!("LZMA properties {props} out of range"));
            }
            let cap = window_cap(raw_len).max(12);
            if !(12..=30).contains(&dict_log) || dict_log > cap {
                return Err(format!("LZMA dict_log {dict_log} out of range"));
            }
            if dict_log > MAX_WINDOW_LOG {
                return Err(format!("LZMA dict_log {dict_log} over the limit"));
            }
            lzma = Some((props, dict_log));
        }
        *d = Desc {
            raw_len,
            codec,
            stored_len,
            window_log,
            lzma,
        };
    }
    if is_model(descs[3].codec) && !is_plain(&descs) {
        return Err("delta model outside the plain layout".into());
    }
    Ok((seg_len, descs))
}

/// Codec 3, the delta model, or 5, the delta model with zero blocks.
fn is_model(codec: u8) -> bool {
    codec == 3 || codec == 5
}

/// Plain layout: no run streams, and a delta-byte stream.
/// The largest window_log a model stream of `raw_len` deltas may name (it
/// must be canonical): the smallest power of two that holds the stream, at
/// least 2^10.
pub fn window_cap(raw_len: u64) -> u8 {
    let mut cap = 10u8;
    while cap < 64 && (1u128 << cap) < u128::from(raw_len) {
        cap += 1;
    }
    cap
}

fn is_plain(descs: &[Desc; 5]) -> bool {
    descs[1].raw_len == 0 && descs[2].raw_len == 0 && descs[3].raw_len > 0
}

/// The stream descriptors of every segment, read without applying anything
/// (payloads are skipped, not decoded). For tests that check which layout and
/// codec the writer chose.
pub fn segments(patch: &[u8]) -> NaiveResult<Vec<[Desc; 5]>> {
    let mut c = Cursor::new(patch);
    let h = parse_header(&mut c)?;
    if h.refs || h.pointers || h.a64 {
        parse_ref_map(&mut c, h.old_len)?;
    }
    if h.edits {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut produced: u64 = 0;
    while produced < h.new_len {
        let (seg_len, descs) = parse_segment_descs(&mut c)?;
        if seg_len == 0 || seg_len > h.new_len - produced {
            return Err(format!("seg_len {seg_len}"));
        }
        for d in &descs {
            c.bytes(d.stored_len, "payload")?;
        }
        produced += seg_len;
        out.push(descs);
    }
    if !c.at_end() {
        return Err("trailing bytes after the last segment".into());
    }
    Ok(out)
}

/// Transform 16, undone on one literal run at new-file position `at`, as
/// docs/FORMAT.md words it: every word of the run at a new-file position
/// `p` that is a multiple of 4, if a `BL`, gets `p / 4` subtracted from its
/// low 26 bits, and if an `ADRP`, `p / 4096` from its 21-bit page field
/// (immhi:immlo), each modulo its width.
fn undo_a64(run: &mut [u8], at: u64) {
    let mut i = ((4 - at % 4) % 4) as usize;
    while i + 4 <= run.len() {
        let p = at.wrapping_add(i as u64);
        let w = u32::from_le_bytes(run[i..i + 4].try_into().unwrap());
        let v = if w >> 26 == 0x25 {
            let field = (u64::from(w & 0x03FF_FFFF)).wrapping_sub(p / 4) % (1 << 26);
            (w & 0xFC00_0000) | field as u32
        } else if (w >> 24) & 0x9F == 0x90 {
            let field = u64::from(((w >> 5) & 0x7FFFF) * 4 + ((w >> 29) & 3));
            let field = field.wrapping_sub(p / 4096) % (1 << 21);
            let field = field as u32;
            (w & 0x9F00_001F) | (field % 4) << 29 | (field / 4) << 5
        } else {
            w
        };
        run[i..i + 4].copy_from_slice(&v.to_le_bytes());
        i += 4;
    }
}

/// Transform 1, undone on one literal run at new-file position `at`, as
/// docs/FORMAT.md words it: at an `E8`/`E9` with four bytes after it in the
/// run, skip five bytes, and if the four read as a signed value within
/// ±2^24, subtract the address after them, modulo 2^25, sign-extended.
fn undo_x86(run: &mut [u8], at: u64) {
    let mut i = 0;
    while i + 5 <= run.len() {
        if run[i] != 0xE8 && run[i] != 0xE9 {
            i += 1;
            continue;
        }
        let stored = i32::from_le_bytes(run[i + 1..i + 5].try_into().unwrap()) as i64;
        if (-(1i64 << 24)..(1i64 << 24)).contains(&stored) {
            let next = (at.wrapping_add(i as u64 + 5) & 0x01FF_FFFF) as i64;
            let mut v = (stored - next).rem_euclid(1 << 25);
            if v >= 1 << 24 {
                v -= 1 << 25;
            }
            run[i + 1..i + 5].copy_from_slice(&(v as i32).to_le_bytes());
        }
        i += 5;
    }
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
    if flags > 1 {
        return Err(format!("unknown flags {flags}"));
    }
    let edits = flags == 1;
    let transform = c.byte("transform")?;
    if transform > 31 || transform & 17 == 17 || (edits && transform != 0) {
        return Err(format!("unknown transform {transform}"));
    }
    if c.byte("reserved")? != 0 {
        return Err("reserved byte".into());
    }
    let old_len = c.varint("old_len")?;
    // The edit layout does not write new_len: it is old_len.
    let new_len = if edits { old_len } else { c.varint("new_len")? };
    let old_sha256 = c.bytes(32, "old_sha256")?.try_into().unwrap();
    let new_sha256 = c.bytes(32, "new_sha256")?.try_into().unwrap();
    Ok(NaiveHeader {
        x86: transform & 1 == 1,
        refs: transform & 2 == 2,
        pointers: transform & 4 == 4,
        a64: transform & 8 == 8,
        a64_literals: transform & 16 == 16,
        edits,
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
        4 => {
            let (props, dict_log) = desc
                .lzma
                .ok_or(format!("{what}: LZMA without parameters"))?;
            let (lc, lp, pb) = (props % 9, (props / 9) % 5, props / 45);
            let mut r = lzma_rust2::LzmaReader::new(
                payload,
                desc.raw_len,
                u32::from(lc),
                u32::from(lp),
                u32::from(pb),
                1 << dict_log,
                None,
            )
            .map_err(|e| format!("{what}: LZMA stream cannot start ({e})"))?;
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut out)
                .map_err(|e| format!("{what}: LZMA error {e}"))?;
            if out.len() as u64 != desc.raw_len {
                return Err(format!(
                    "{what}: decodes to {} bytes, raw_len is {}",
                    out.len(),
                    desc.raw_len
                ));
            }
            let (rest, unread) = r.into_parts();
            if !rest.is_empty() || !unread.is_empty() {
                return Err(format!("{what}: stored bytes after the LZMA stream"));
            }
            Ok(out)
        }
        c => Err(format!("{what}: codec {c} is not decoded up front")),
    }
}

/// Transform 2's map as (break position, shift), in order.
pub type Breaks = Vec<(u64, i128)>;

/// Reads transform 2's reference map after the header, as FORMAT.md puts it.
fn parse_ref_map(c: &mut Cursor<'_>, old_len: u64) -> NaiveResult<Breaks> {
    let raw_len = c.varint("map raw_len")?;
    if raw_len == 0 {
        return Ok(Vec::new());
    }
    let codec = c.byte("map codec")?;
    let stored_len = match codec {
        0 => raw_len,
        1 => match c.varint("map stored_len")? {
            0 => return Err("map stored_len 0".into()),
            n => n,
        },
        other => return Err(format!("map codec {other}")),
    };
    if raw_len > 1 << 20 || stored_len > 1 << 20 {
        return Err("map over 1 MiB".into());
    }
    let desc = Desc {
        raw_len,
        codec,
        stored_len,
        window_log: None,
        lzma: None,
    };
    let bytes = decode_stream(&desc, c.bytes(stored_len, "map payload")?, "map")?;
    let mut m = Cursor::new(&bytes);
    let mut breaks: Breaks = Vec::new();
    let (mut at, mut shift) = (0u64, 0i128);
    while !m.at_end() {
        let gap = m.varint("map gap")?;
        let delta = unzigzag(m.varint("map delta")?);
        if !breaks.is_empty() && gap == 0 {
            return Err("map break repeated".into());
        }
        at = at.checked_add(gap).ok_or("map position overflows")?;
        if at >= old_len {
            return Err("map break past the old file".into());
        }
        shift += delta;
        if shift < i128::from(i64::MIN) || shift > i128::from(i64::MAX) {
            return Err("map shift overflows".into());
        }
        breaks.push((at, shift));
    }
    Ok(breaks)
}

/// The old bytes `old[p..end]` as transforms 2, 4 and 8 (`kinds`: bits 2,
/// 4 and 8 of the transform byte) predict them for a copy with shift `s`,
/// byte by byte from FORMAT.md's words.
pub fn predict_naive(
    old: &[u8],
    breaks: &Breaks,
    kinds: u8,
    p: usize,
    end: usize,
    s: i128,
) -> Vec<u8> {
    const RIP: [u8; 48] = [
        0x01, 0x03, 0x09, 0x0B, 0x10, 0x11, 0x13, 0x19, 0x1B, 0x21, 0x23, 0x28, 0x29, 0x2B, 0x2E,
        0x2F, 0x31, 0x33, 0x39, 0x3B, 0x54, 0x57, 0x58, 0x59, 0x5C, 0x5E, 0x63, 0x6F, 0x7E, 0x7F,
        0x80, 0x81, 0x83, 0x85, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D, 0xB6, 0xB7, 0xBE, 0xBF, 0xC6,
        0xC7, 0xD6, 0xFF,
    ];
    // The displacement offset of a site at q, if it is one.
    let site = |q: usize| -> Option<usize> {
        let k = if old[q] == 0xE8 || old[q] == 0xE9 {
            1
        } else if RIP.contains(&old[q]) && q + 1 < old.len() && old[q + 1] & 0xC7 == 0x05 {
            2
        } else {
            return None;
        };
        (q + k + 4 <= old.len()).then_some(q + k)
    };
    let shift_at = |t: u64| breaks.iter().rev().find(|b| b.0 <= t).map(|b| b.1);
    // Pass one: 8-aligned pointers whose value lies in the old file.
    let pointer = |x: usize| -> u8 {
        let q = x / 8 * 8;
        if kinds & 4 == 0 || q + 8 > old.len() {
            return old[x];
        }
        let v = u64::from_le_bytes(old[q..q + 8].try_into().unwrap());
        if v < 4096 || v >= old.len() as u64 {
            return old[x];
        }
        match shift_at(v) {
            Some(e) if i128::from(v) + e >= 0 && i128::from(v) + e <= i128::from(u64::MAX) => {
                ((i128::from(v) + e) as u64).to_le_bytes()[x - q]
            }
            _ => old[x],
        }
    };
    // Transform 8: the AArch64 word holding x, as FORMAT.md words it.
    let word = |q: i128| {
        (q >= 0 && q + 4 <= old.len() as i128).then(|| {
            let q = q as usize;
            u32::from_le_bytes(old[q..q + 4].try_into().unwrap())
        })
    };
    let adrp = |w: u32| w & 0x9F00_0000 == 0x9000_0000;
    let scale_if_uses = |w: u32, r: u32| -> Option<u32> {
        if (w >> 5) & 31 != r {
            None
        } else if w & 0xFFC0_0000 == 0x9100_0000 {
            Some(0)
        } else if w & 0x3B00_0000 == 0x3900_0000 {
            Some(if w & (1 << 26) != 0 && w & (1 << 23) != 0 {
                4
            } else {
                w >> 30
            })
        } else {
            None
        }
    };
    let page = |x: i128| x - x.rem_euclid(4096);
    let moved_target = |a: u32, at: i128, n: u32, z: u32| -> Option<i128> {
        let raw = ((a >> 5) & 0x7FFFF) << 2 | (a >> 29) & 3;
        let pages = if raw & (1 << 20) != 0 {
            i128::from(raw) - (1 << 21)
        } else {
            i128::from(raw)
        };
        let t = page(at) + 4096 * pages + (i128::from((n >> 10) & 0xFFF) << z);
        if t < 0 || t >= old.len() as i128 {
            return None;
        }
        Some(t + shift_at(t as u64)?)
    };
    let a64_word = |q: i128| -> Option<u32> {
        let w = word(q)?;
        if adrp(w) {
            let r = w & 31;
            let n = (1..=8)
                .map_while(|k| word(q + 4 * k))
                .find(|&n| n & 31 == r || scale_if_uses(n, r).is_some())?;
            let nt = moved_target(w, q, n, scale_if_uses(n, r)?)?;
            let np = (page(nt) - page(q + s)) / 4096;
            if !(-(1 << 20)..1 << 20).contains(&np) {
                return None;
            }
            let np = np.rem_euclid(1 << 21) as u32;
            return Some((w & 0x9F00_001F) | (np & 3) << 29 | (np >> 2) << 5);
        }
        let r = (w >> 5) & 31;
        if let Some(z) = scale_if_uses(w, r) {
            let (at, a) = (1..=8)
                .map_while(|k| word(q - 4 * k).map(|a| (q - 4 * k, a)))
                .find(|&(_, a)| a & 31 == r)?;
            if !adrp(a) {
                return None;
            }
            let nlo = moved_target(a, at, w, z)?.rem_euclid(4096);
            if nlo % (1 << z) != 0 {
                return None;
            }
            return Some((w & !(0xFFF << 10)) | ((nlo >> z) as u32) << 10);
        }
        if w & 0x7C00_0000 != 0x1400_0000 {
            return None;
        }
        let raw = i128::from(w & 0x03FF_FFFF);
        let imm = if raw >= 1 << 25 { raw - (1 << 26) } else { raw };
        let t = q + 4 * imm;
        if t < 0 || t >= old.len() as i128 {
            return None;
        }
        let moved = shift_at(t as u64)? - s;
        if moved % 4 != 0 {
            return None;
        }
        let v = imm + moved / 4;
        (-(1 << 25)..1 << 25)
            .contains(&v)
            .then_some((w & 0xFC00_0000) | (v & 0x03FF_FFFF) as u32)
    };
    let a64 = |x: usize| -> Option<u8> {
        let q = x - x % 4;
        Some(a64_word(q as i128)?.to_le_bytes()[x - q])
    };
    (p..end)
        .map(|x| {
            if kinds & 8 != 0 {
                if let Some(b) = a64(x) {
                    return b;
                }
            }
            if kinds & 2 == 0 {
                return pointer(x);
            }
            let covering = (x.saturating_sub(5)..x)
                .filter_map(|q| site(q).map(|d| (q, d)))
                .find(|&(_, d)| d <= x && x < d + 4);
            let Some((_, d)) = covering else {
                return pointer(x);
            };
            let w = i128::from(i32::from_le_bytes(old[d..d + 4].try_into().unwrap()));
            let t = d as i128 + 4 + w;
            if t < 0 || t >= old.len() as i128 {
                return pointer(x);
            }
            let Some(e) = shift_at(t as u64) else {
                return pointer(x);
            };
            let v = w + e - s;
            if v < i128::from(i32::MIN) || v > i128::from(i32::MAX) {
                return pointer(x);
            }
            (v as i32).to_le_bytes()[x - d]
        })
        .collect()
}

/// The edit layout: a copy of the old file, then each edit overwrites its
/// bytes; the result's SHA-256 is checked.
fn apply_edits(old: &[u8], c: &mut Cursor<'_>, h: &NaiveHeader) -> NaiveResult<Vec<u8>> {
    let mut out = old.to_vec();
    let count = c.varint("edit count")?;
    let mut pos: u128 = 0;
    // Every literal edit so far; a hex edit may use the last four.
    let mut literals: Vec<&[u8]> = Vec::new();
    for _ in 0..count {
        let gap = c.varint("edit gap")?;
        let tag = c.varint("edit tag")?;
        let len = tag >> 1;
        if len == 0 {
            return Err("empty edit".into());
        }
        let start = pos + u128::from(gap);
        let end = start + u128::from(len);
        if end > u128::from(h.new_len) {
            return Err("edit past the end of the file".into());
        }
        let (start, end) = (start as usize, end as usize);
        if tag & 1 == 0 {
            if len > 4096 {
                return Err("literal edit over 4096 bytes".into());
            }
            let bytes = c.bytes(len, "literal edit")?;
            out[start..end].copy_from_slice(bytes);
            literals.push(bytes);
        } else {
            if len % 2 == 1 {
                return Err("odd hex edit".into());
            }
            let source = c.varint("hex edit source")?;
            let (back, from) = ((source & 3) as usize, source >> 2);
            if back >= literals.len() {
                return Err("hex edit from a literal edit that is not there".into());
            }
            let lit = literals[literals.len() - 1 - back];
            if u128::from(from) + u128::from(len / 2) > lit.len() as u128 {
                return Err("hex edit outside its literal edit".into());
            }
            let source = &lit[from as usize..from as usize + len as usize / 2];
            let digits: Vec<u8> = source
                .iter()
                .flat_map(|b| format!("{b:02x}").into_bytes())
                .collect();
            out[start..end].copy_from_slice(&digits);
        }
        pos = end as u128;
    }
    if !c.at_end() {
        return Err("bytes after the last edit".into());
    }
    if <[u8; 32]>::from(Sha256::digest(&out)) != h.new_sha256 {
        return Err("new file SHA-256 mismatch".into());
    }
    Ok(out)
}

/// Reads the header, and the reference map after it when the transform
/// byte asks for one (what `PatchReader::new` reads).
pub fn header(patch: &[u8]) -> NaiveResult<NaiveHeader> {
    let mut c = Cursor::new(patch);
    let h = parse_header(&mut c)?;
    if h.refs || h.pointers || h.a64 {
        parse_ref_map(&mut c, h.old_len)?;
    }
    Ok(h)
}

/// Applies `patch` to `old`; returns the verified new file.
pub fn apply(old: &[u8], patch: &[u8]) -> NaiveResult<Vec<u8>> {
    let mut c = Cursor::new(patch);
    let h = parse_header(&mut c)?;
    if h.new_len > MAX_OUTPUT {
        return Err("new_len over the limit".into());
    }
    // The map follows the header and is read with it, before the old file.
    let breaks = if h.refs || h.pointers || h.a64 {
        Some(parse_ref_map(&mut c, h.old_len)?)
    } else {
        None
    };
    if h.old_len != old.len() as u64 {
        return Err("old file size mismatch".into());
    }
    if <[u8; 32]>::from(Sha256::digest(old)) != h.old_sha256 {
        return Err("old file SHA-256 mismatch".into());
    }

    if h.edits {
        return apply_edits(old, &mut c, &h);
    }
    let mut out: Vec<u8> = Vec::new();
    let mut p: u64 = 0;
    let mut model_len: u64 = 0;
    while (out.len() as u64) < h.new_len {
        let remaining = h.new_len - out.len() as u64;
        let (seg_len, descs) = parse_segment_descs(&mut c)?;
        if seg_len == 0 || seg_len > remaining {
            return Err(format!("seg_len {seg_len} with {remaining} remaining"));
        }
        let plain = is_plain(&descs);
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
        if descs[3].window_log.is_some_and(|w| w > MAX_WINDOW_LOG) {
            return Err("model window over the limit".into());
        }
        if plain && is_model(descs[3].codec) {
            model_len = model_len.saturating_add(descs[3].raw_len);
            if model_len > MODEL_LEN {
                return Err("model deltas over the patch's budget".into());
            }
        }
        // Every stream is decoded here, except a model-coded delta stream:
        // the model needs the old bytes under the copies, known only once the
        // control stream has been executed (pass 2 below).
        let mut streams: Vec<Vec<u8>> = Vec::new();
        let mut model_payload: &[u8] = &[];
        for (k, d) in descs.iter().enumerate() {
            let payload = c.bytes(d.stored_len, "payload")?;
            if d.raw_len == 0 {
                streams.push(Vec::new());
            } else if is_model(d.codec) {
                model_payload = payload;
                streams.push(Vec::new());
            } else {
                streams.push(decode_stream(d, payload, &format!("stream {k}"))?);
            }
        }

        // Pass 1: copies (unchanged) and literals; remember where the copies went.
        let mut ctrl = Cursor::new(&streams[0]);
        let mut lits = Cursor::new(&streams[4]);
        let mut copied: Vec<std::ops::Range<usize>> = Vec::new();
        // The old bytes under the copies, laid end to end (read from the old
        // file itself, not from the output).
        let mut olds: Vec<u8> = Vec::new();
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
            let bytes = match &breaks {
                Some(b) => {
                    let s = start as i128 - i128::from(p);
                    let kinds = (u8::from(h.refs) << 1)
                        | (u8::from(h.pointers) << 2)
                        | (u8::from(h.a64) << 3);
                    predict_naive(old, b, kinds, p as usize, end as usize, s)
                }
                None => old[p as usize..end as usize].to_vec(),
            };
            out.extend_from_slice(&bytes);
            olds.extend_from_slice(&bytes);
            copied.push(start..out.len());
            let run_at = out.len() as u64;
            out.extend_from_slice(lits.bytes(lit, "literals")?);
            if h.x86 {
                undo_x86(&mut out[run_at as usize..], run_at);
            }
            if h.a64_literals {
                undo_a64(&mut out[run_at as usize..], run_at);
            }
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
            if descs[3].raw_len != positions.len() as u64 {
                return Err("plain delta stream length differs from the copies".into());
            }
            if let Some(w) = descs[3].window_log {
                // Codecs 3 and 5: decode over the old bytes; the coded data
                // must be neither cut short nor followed by unused bytes.
                let blocks = descs[3].codec == 5;
                let got = decode_deltas_with(model_payload, &olds, u32::from(w), blocks);
                if got.overran {
                    return Err("model stream: coded data cut short".into());
                }
                if !got.exact {
                    return Err("model stream: bytes after the coded data".into());
                }
                streams[3] = got.deltas;
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
