//! Variable-length integers and the two bounded readers.

use std::io::{self, Read};

use crate::error::{Error, FormatError, FormatErrorKind};

/// Appends `v` as unsigned LEB128 (7 bits per byte, low bits first).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Maps a signed value to an unsigned one so that small magnitudes stay small.
pub(crate) fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag_encode`].
pub(crate) fn zigzag_decode(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Decodes one varint from a byte source. `next` yields the next byte or `None`
/// at the end. Rejects encodings longer than 10 bytes, values over 64 bits and
/// non-minimal encodings (a final byte of zero after the first), so that every
/// value has exactly one encoding.
fn decode_varint(mut next: impl FnMut() -> Result<Option<u8>, Error>) -> Result<u64, VarintFault> {
    let mut value: u64 = 0;
    for i in 0..10u32 {
        let byte = match next() {
            Ok(Some(b)) => b,
            Ok(None) => return Err(VarintFault::Truncated),
            Err(e) => return Err(VarintFault::Io(e)),
        };
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Err(VarintFault::Bad);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(VarintFault::Bad);
            }
            return Ok(value);
        }
    }
    Err(VarintFault::Bad)
}

enum VarintFault {
    Truncated,
    Bad,
    Io(Error),
}

/// The patch as a byte stream, with the offset of the next byte.
pub(crate) struct PatchInput<R> {
    inner: R,
    offset: u64,
}

impl<R> PatchInput<R> {
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

impl<R: Read> PatchInput<R> {
    pub(crate) fn new(inner: R) -> Self {
        PatchInput { inner, offset: 0 }
    }

    #[allow(dead_code)]
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    pub(crate) fn err(&self, what: &'static str, kind: FormatErrorKind) -> Error {
        Error::Format(FormatError::new(self.offset, what, kind))
    }

    /// Fills `buf` completely; a short patch is `Truncated`.
    pub(crate) fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), Error> {
        let mut filled = 0usize;
        while let Some(rest) = buf.get_mut(filled..) {
            if rest.is_empty() {
                break;
            }
            match self.inner.read(rest) {
                Ok(0) => return Err(self.err(what, FormatErrorKind::Truncated)),
                Ok(n) => {
                    filled = filled.saturating_add(n);
                    self.offset = self.offset.saturating_add(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Io {
                        context: "reading the patch",
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }

    pub(crate) fn read_u8(&mut self, what: &'static str) -> Result<u8, Error> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b, what)?;
        Ok(b[0])
    }

    pub(crate) fn read_array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], Error> {
        let mut b = [0u8; N];
        self.read_exact(&mut b, what)?;
        Ok(b)
    }

    pub(crate) fn read_varint(&mut self, what: &'static str) -> Result<u64, Error> {
        let start = self.offset;
        let res = decode_varint(|| {
            let mut b = [0u8; 1];
            loop {
                match self.inner.read(&mut b) {
                    Ok(0) => return Ok(None),
                    Ok(_) => {
                        self.offset = self.offset.saturating_add(1);
                        return Ok(Some(b[0]));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::Io {
                            context: "reading the patch",
                            source: e,
                        })
                    }
                }
            }
        });
        match res {
            Ok(v) => Ok(v),
            Err(VarintFault::Truncated) => Err(self.err(what, FormatErrorKind::Truncated)),
            Err(VarintFault::Bad) => Err(Error::Format(FormatError::new(
                start,
                what,
                FormatErrorKind::BadVarint,
            ))),
            Err(VarintFault::Io(e)) => Err(e),
        }
    }

    /// Succeeds only at the end of the patch.
    pub(crate) fn expect_end(&mut self) -> Result<(), Error> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(self.err("end of patch", FormatErrorKind::TrailingBytes)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Io {
                        context: "reading the patch",
                        source: e,
                    })
                }
            }
        }
    }

    /// A reader over the next `len` bytes, for streamed payloads.
    pub(crate) fn by_ref_take(&mut self, len: u64) -> TakeCounted<'_, R> {
        TakeCounted {
            input: self,
            left: len,
            hit_eof: false,
        }
    }
}

/// `Read` over the next `left` bytes of a [`PatchInput`], keeping its offset right.
pub(crate) struct TakeCounted<'a, R> {
    input: &'a mut PatchInput<R>,
    left: u64,
    /// The patch ended while bytes of this range were still expected.
    hit_eof: bool,
}

impl<R> TakeCounted<'_, R> {
    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    pub(crate) fn hit_eof(&self) -> bool {
        self.hit_eof
    }
}

impl<R: Read> Read for TakeCounted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let dst = buf.get_mut(..max).unwrap_or_default();
        let n = self.input.inner.read(dst)?;
        if n == 0 && !dst.is_empty() {
            self.hit_eof = true;
        }
        self.left = self.left.saturating_sub(n as u64);
        self.input.offset = self.input.offset.saturating_add(n as u64);
        Ok(n)
    }
}

/// A cursor over a decoded stream held in memory.
pub(crate) struct SliceReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Patch offset reported in errors (the start of the segment).
    at: u64,
    what: &'static str,
}

impl<'a> SliceReader<'a> {
    pub(crate) fn new(data: &'a [u8], at: u64, what: &'static str) -> Self {
        SliceReader {
            data,
            pos: 0,
            at,
            what,
        }
    }

    pub(crate) fn err(&self, kind: FormatErrorKind) -> Error {
        Error::Format(FormatError::new(self.at, self.what, kind))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub(crate) fn read_varint(&mut self) -> Result<u64, Error> {
        let data = self.data;
        let mut pos = self.pos;
        let res = decode_varint(|| {
            let b = data.get(pos).copied();
            if b.is_some() {
                pos = pos.saturating_add(1);
            }
            Ok(b)
        });
        self.pos = pos;
        match res {
            Ok(v) => Ok(v),
            Err(VarintFault::Truncated) => Err(self.err(FormatErrorKind::StreamUnderrun)),
            Err(VarintFault::Bad) => Err(self.err(FormatErrorKind::BadVarint)),
            Err(VarintFault::Io(e)) => Err(e),
        }
    }

    /// The next `len` bytes.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or_else(|| self.err(FormatErrorKind::Overflow))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| self.err(FormatErrorKind::StreamUnderrun))?;
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Result<u64, Error> {
        SliceReader::new(bytes, 0, "t").read_varint()
    }

    #[test]
    fn varint_roundtrip_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(dec(&b).unwrap(), v);
        }
    }

    #[test]
    fn varint_rejects_overlong_and_nonminimal() {
        assert_eq!(
            dec(&[0x80, 0x00]).unwrap_err().format_kind(),
            Some(FormatErrorKind::BadVarint)
        );
        let eleven = [0xffu8; 11];
        assert_eq!(
            dec(&eleven).unwrap_err().format_kind(),
            Some(FormatErrorKind::BadVarint)
        );
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        assert_eq!(
            dec(&over).unwrap_err().format_kind(),
            Some(FormatErrorKind::BadVarint)
        );
        assert_eq!(
            dec(&[0x80]).unwrap_err().format_kind(),
            Some(FormatErrorKind::StreamUnderrun)
        );
    }

    #[test]
    fn zigzag() {
        for v in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(zigzag_decode(zigzag_encode(v)), v);
        }
        assert_eq!(zigzag_encode(-1), 1);
    }
}
