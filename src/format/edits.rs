//! The edit layout (header flag bit 0, docs/FORMAT.md "Edit layout"): the new
//! file is the old file, of the same length, with a few stretches replaced.
//!
//! ```text
//! edits := count edit*count
//! edit  := gap tag (bytes | source)
//! ```
//!
//! `gap` bytes are copied unchanged from the old file at the same position,
//! then `tag >> 1` bytes are replaced: by the next bytes of the patch
//! (`tag & 1 == 0`, a *literal* edit), or by the lowercase hexadecimal digits
//! of `(tag >> 1) / 2` bytes of one of the last four literal edits
//! (`source & 3` of them back, 0 for the last), from its byte `source >> 2`
//! (`tag & 1 == 1`, a *hex* edit). After the last edit the rest of the old
//! file is copied.

use std::io::Read;

use super::varint::{put_varint, PatchInput};
use crate::error::{Error, FormatErrorKind};

/// Header flag bit of the edit layout.
pub(crate) const FLAG_EDITS: u8 = 1;

/// The most bytes one literal edit carries.
pub(crate) const MAX_LITERAL_EDIT: usize = 4096;

/// A hex edit takes its bytes from one of the last this many literal
/// edits: a reader holds them (16 KiB).
pub(crate) const HEX_SOURCES: usize = 4;

/// The lowercase hexadecimal digits a hex edit writes.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// What an edit replaces its bytes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EditKind {
    /// The next `len` bytes of the patch.
    Literal,
    /// The hex digits of `len / 2` bytes of the literal edit `back` literal
    /// edits before the last (0: the last), from its byte `from`.
    Hex { back: usize, from: usize },
}

/// One edit's fixed part: what precedes its literal bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EditHead {
    /// Bytes copied unchanged before the edit.
    pub(crate) gap: u64,
    /// Bytes the edit writes, at least 1.
    pub(crate) len: u64,
    pub(crate) kind: EditKind,
}

impl EditHead {
    /// Appends the edit's fixed part: for a literal edit its `len` bytes
    /// must follow.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.gap);
        let kind_bit = u64::from(matches!(self.kind, EditKind::Hex { .. }));
        put_varint(out, self.len << 1 | kind_bit);
        if let EditKind::Hex { back, from } = self.kind {
            put_varint(out, (from as u64) << 2 | (back as u64 & 3));
        }
    }

    /// Reads one edit's fixed part. `recent` holds the lengths of the
    /// literal edits before it: a hex edit must lie inside one of them.
    pub(crate) fn read<R: Read>(
        input: &mut PatchInput<R>,
        recent: &RecentLiterals,
    ) -> Result<EditHead, Error> {
        let gap = input.read_varint("edit gap")?;
        let tag = input.read_varint("edit length")?;
        let len = tag >> 1;
        if len == 0 {
            return Err(input.err("edit length", FormatErrorKind::EmptyOperation));
        }
        if tag & 1 == 0 {
            if len > MAX_LITERAL_EDIT as u64 {
                return Err(input.err("edit length", FormatErrorKind::OutOfRange));
            }
            return Ok(EditHead {
                gap,
                len,
                kind: EditKind::Literal,
            });
        }
        if len % 2 != 0 {
            return Err(input.err("edit length", FormatErrorKind::OutOfRange));
        }
        let source = input.read_varint("hex edit source")?;
        // At most 3: two bits.
        let back = (source & 3) as usize;
        let from = source >> 2;
        let inside = recent.len_back(back).is_some_and(|lit_len| {
            from.checked_add(len / 2)
                .is_some_and(|end| end <= lit_len as u64)
        });
        let from = usize::try_from(from)
            .ok()
            .filter(|_| inside)
            .ok_or_else(|| input.err("hex edit source", FormatErrorKind::OutOfRange))?;
        Ok(EditHead {
            gap,
            len,
            kind: EditKind::Hex { back, from },
        })
    }
}

/// The lengths of the last [`HEX_SOURCES`] literal edits, and where a
/// reader that holds them in a ring of as many slots keeps each.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecentLiterals {
    /// By ring slot: the length of the literal edit held there.
    lens: [usize; HEX_SOURCES],
    /// Literal edits seen so far.
    count: u64,
}

impl RecentLiterals {
    /// Records a literal edit of `len` bytes, in the slot after the last
    /// one's (`slot(0)` from now on).
    pub(crate) fn push(&mut self, len: usize) {
        let slot = (self.count % HEX_SOURCES as u64) as usize;
        if let Some(l) = self.lens.get_mut(slot) {
            *l = len;
        }
        self.count += 1;
    }

    /// The ring slot of the literal edit `back` before the last (0: the
    /// last), if there is one.
    pub(crate) fn slot(&self, back: usize) -> Option<usize> {
        let back = back as u64;
        (back < HEX_SOURCES as u64 && back < self.count)
            .then(|| ((self.count - 1 - back) % HEX_SOURCES as u64) as usize)
    }

    /// The length of the literal edit `back` before the last, if there is one.
    pub(crate) fn len_back(&self, back: usize) -> Option<usize> {
        self.slot(back).and_then(|s| self.lens.get(s).copied())
    }
}

/// Reads an edit list front to back, checking where each edit lies.
#[derive(Debug)]
pub(crate) struct EditList {
    /// Edits not yet read.
    left: u64,
    /// Total edits the list declares.
    count: u64,
    /// New-file position after the last edit read.
    pos: u64,
    /// Length of the new file.
    len: u64,
    /// The literal edits read so far.
    recent: RecentLiterals,
}

impl EditList {
    /// Reads the edit count of a list for a new file of `len` bytes.
    pub(crate) fn start<R: Read>(input: &mut PatchInput<R>, len: u64) -> Result<Self, Error> {
        let count = input.read_varint("edit count")?;
        Ok(EditList {
            left: count,
            count,
            pos: 0,
            len,
            recent: RecentLiterals::default(),
        })
    }

    /// The number of edits the list declares.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The literal edits read so far: where a reader holding them in a
    /// ring of [`HEX_SOURCES`] slots finds each.
    pub(crate) fn recent(&self) -> &RecentLiterals {
        &self.recent
    }

    /// The next edit and the new-file position where it starts, or `None`
    /// after the last. A literal edit's bytes follow in `input`: the caller
    /// reads them before the next call. Every edit writes at least one
    /// byte and must end inside the file, so the list is bounded by the
    /// file as well as by the patch.
    pub(crate) fn next<R: Read>(
        &mut self,
        input: &mut PatchInput<R>,
    ) -> Result<Option<(EditHead, u64)>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        let head = EditHead::read(input, &self.recent)?;
        let start = self
            .pos
            .checked_add(head.gap)
            .ok_or_else(|| input.err("edit gap", FormatErrorKind::Overflow))?;
        let end = start
            .checked_add(head.len)
            .ok_or_else(|| input.err("edit length", FormatErrorKind::Overflow))?;
        if end > self.len {
            return Err(input.err("edit length", FormatErrorKind::OutputOverrun));
        }
        if head.kind == EditKind::Literal {
            // At most MAX_LITERAL_EDIT: `EditHead::read` checked it.
            self.recent
                .push(usize::try_from(head.len).unwrap_or(MAX_LITERAL_EDIT));
        }
        self.left -= 1;
        self.pos = end;
        Ok(Some((head, start)))
    }
}

/// Writes the lowercase hex digits of `bytes` into `out`, two per byte, as
/// many as fit in whole pairs.
pub(crate) fn hex_digits(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&[
            HEX_DIGITS[usize::from(b >> 4)],
            HEX_DIGITS[usize::from(b & 15)],
        ]);
    }
}

/// The byte two lowercase hex digits spell, if they are such digits.
#[cfg(feature = "diff")]
pub(crate) fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(hi)? << 4 | digit(lo)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes and reads `head` after literal edits of `literals` bytes.
    fn round_trip(head: EditHead, literals: &[usize]) -> Result<EditHead, Error> {
        let mut recent = RecentLiterals::default();
        for &len in literals {
            recent.push(len);
        }
        let mut bytes = Vec::new();
        head.encode(&mut bytes);
        let mut input = PatchInput::new(&bytes[..]);
        let read = EditHead::read(&mut input, &recent)?;
        input.expect_end()?;
        Ok(read)
    }

    #[test]
    fn heads_round_trip() {
        for head in [
            EditHead {
                gap: 0,
                len: 1,
                kind: EditKind::Literal,
            },
            EditHead {
                gap: u64::MAX,
                len: MAX_LITERAL_EDIT as u64,
                kind: EditKind::Literal,
            },
            EditHead {
                gap: 92_215_780,
                len: 38,
                kind: EditKind::Hex { back: 0, from: 1 },
            },
            EditHead {
                gap: 5,
                len: 2,
                kind: EditKind::Hex { back: 3, from: 4 },
            },
        ] {
            assert_eq!(round_trip(head, &[5, 6, 7, 20]).unwrap(), head);
        }
    }

    #[test]
    fn the_ring_keeps_the_last_four_literals() {
        let mut recent = RecentLiterals::default();
        assert_eq!(recent.slot(0), None);
        for (k, len) in [10, 20, 30, 40, 50, 60].into_iter().enumerate() {
            recent.push(len);
            assert_eq!(recent.slot(0), Some(k % HEX_SOURCES));
            assert_eq!(recent.len_back(0), Some(len));
        }
        // 60 in slot 1, 50 in slot 0, 40 in slot 3, 30 in slot 2.
        let backs: Vec<_> = (0..5)
            .map(|b| (recent.slot(b), recent.len_back(b)))
            .collect();
        assert_eq!(
            backs,
            [
                (Some(1), Some(60)),
                (Some(0), Some(50)),
                (Some(3), Some(40)),
                (Some(2), Some(30)),
                (None, None)
            ]
        );
    }

    #[test]
    fn bad_heads_are_refused() {
        let kind = |e: Error| match e {
            Error::Format(f) => f.kind(),
            other => panic!("not a format error: {other}"),
        };
        let literal = |len| EditHead {
            gap: 3,
            len,
            kind: EditKind::Literal,
        };
        let hex = |len, back, from| EditHead {
            gap: 3,
            len,
            kind: EditKind::Hex { back, from },
        };
        assert_eq!(
            kind(round_trip(literal(0), &[]).unwrap_err()),
            FormatErrorKind::EmptyOperation
        );
        assert_eq!(
            kind(round_trip(literal(MAX_LITERAL_EDIT as u64 + 1), &[]).unwrap_err()),
            FormatErrorKind::OutOfRange
        );
        // Odd digit counts, sources past the literal edit, or a literal
        // edit further back than there are.
        let literals = [8, 20];
        for (len, back, from) in [
            (3, 0, 0),
            (40, 0, 1),
            (18, 1, 0),
            (2, 2, 0),
            (2, 0, 1 << 40),
        ] {
            assert_eq!(
                kind(round_trip(hex(len, back, from), &literals).unwrap_err()),
                FormatErrorKind::OutOfRange,
                "len {len} back {back} from {from}"
            );
        }
        assert_eq!(
            kind(round_trip(hex(2, 0, 0), &[]).unwrap_err()),
            FormatErrorKind::OutOfRange
        );
        for ok in [hex(40, 0, 0), hex(16, 1, 0), hex(2, 1, 7)] {
            assert_eq!(round_trip(ok, &literals).unwrap(), ok);
        }
    }

    #[test]
    fn hex_digits_and_bytes_agree() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut digits = vec![0u8; 512];
        hex_digits(&bytes, &mut digits);
        assert_eq!(&digits[..8], b"00010203");
        assert_eq!(&digits[510..], b"ff");
        // A short output takes whole pairs only.
        let mut short = [0u8; 5];
        hex_digits(&[0xab, 0xcd, 0xef], &mut short);
        assert_eq!(&short, b"abcd\0");
        #[cfg(feature = "diff")]
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            assert_eq!(hex_byte(pair[0], pair[1]), Some(i as u8));
        }
        #[cfg(feature = "diff")]
        for bad in [b'A', b'g', b' ', b'/', b':'] {
            assert_eq!(hex_byte(bad, b'0'), None);
            assert_eq!(hex_byte(b'0', bad), None);
        }
    }
}
