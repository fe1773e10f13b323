//! Transforms 1 and 16 (docs/FORMAT.md): branch targets in literal bytes,
//! x86 (transform 1) or AArch64 (transform 16).
//!
//! x86 code calls and jumps with `E8`/`E9` and a 32-bit displacement from the
//! next instruction. Two calls to one function from different places carry
//! different displacements; their absolute targets are the same. New code,
//! which a patch carries as literals, is full of such calls, so the writer
//! can store each plausible displacement as the absolute target (its
//! new-file address added), which zstd then finds repeated: patches across
//! major versions 2-7% smaller (docs/BENCHMARKS.md).
//!
//! The transform works on one literal run at a time (the literal bytes of
//! one operation), at the run's place in the new file, and only on
//! displacements that lie wholly inside the run. At each position `i`, if the
//! byte is `E8` or `E9` and the run holds four more bytes, the scan goes on
//! at `i + 5`, and if their little-endian value `v`, read as signed, is
//! within ±2^24, `v` is replaced by `(v + a) mod 2^25` read as a signed
//! 25-bit number, where `a` is the new-file address of the next instruction
//! (`i + 5`); otherwise the scan goes on at `i + 1`. Both maps are bijections
//! of the signed 25-bit range, and the four bytes after an opcode are only
//! ever changed by that opcode's own conversion, so the reader, scanning the
//! stored bytes the same way, makes the same decisions at the same positions
//! and undoes each change. Every byte string is a valid input: the transform
//! cannot fail.
//!
//! AArch64 code (transform 16) does the same with whole words: at every
//! new-file position that is a multiple of 4 and whose word lies wholly in
//! the run, a `BL` gets its target in words (its 26-bit field plus the
//! word's address, modulo 2^26) and an `ADRP` its target page (its 21-bit
//! field plus the word's page, modulo 2^21). The opcode bits are left alone
//! and the fields map one to one, so here too every byte string is valid
//! and the reader undoes each change.

/// Which literal transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Literals {
    /// Transform 1: x86 `E8`/`E9` displacements.
    X86,
    /// Transform 16: AArch64 `BL` and `ADRP` fields.
    A64,
}

impl Literals {
    /// The transform bit.
    #[cfg(feature = "diff")]
    pub(crate) fn bit(self) -> u8 {
        match self {
            Literals::X86 => crate::format::TRANSFORM_X86,
            Literals::A64 => crate::format::TRANSFORM_A64_LITERALS,
        }
    }
}

/// Values within ±2^24 (top byte `00` or `FF`) are converted; this range is
/// kept by both directions.
const SPAN: i32 = 1 << 24;

/// Which way to convert.
#[derive(Clone, Copy)]
enum Way {
    /// Relative to absolute (the writer).
    Encode,
    /// Absolute to relative (the reader).
    Decode,
}

/// Scans `run[..]`, which starts at new-file position `base`, converting as
/// the module describes. With `complete`, the run ends with `run`; otherwise
/// more of it follows, and positions less than five bytes from the end are
/// left for later. Returns how many leading bytes are final: all of them
/// when complete; otherwise the scan stopped at the returned position, at
/// most four bytes from the end, and those bytes must be scanned again with
/// the rest of the run (at `base` plus the returned count).
fn scan(run: &mut [u8], base: u64, complete: bool, way: Way) -> usize {
    let mut i = 0usize;
    while let Some(window) = run.get_mut(i..i.saturating_add(5)) {
        let [op, b0, b1, b2, b3] = window else { break };
        if *op != 0xE8 && *op != 0xE9 {
            i += 1;
            continue;
        }
        let v = i32::from_le_bytes([*b0, *b1, *b2, *b3]);
        // An opcode byte with four bytes after it is passed over whole,
        // converted or not: the bytes after it are then never read as
        // another opcode's displacement, which a conversion there would
        // change under this decision.
        i += 5;
        if !(-SPAN..SPAN).contains(&v) {
            continue;
        }
        // The next instruction's address, modulo 2^25 (what the sum keeps).
        // (`i` is already past the instruction.)
        let addr = (base.wrapping_add(i as u64) & 0x01FF_FFFF) as u32;
        let sum = match way {
            Way::Encode => (v as u32).wrapping_add(addr),
            Way::Decode => (v as u32).wrapping_sub(addr),
        };
        // Signed 25-bit: bit 24 copied into the top seven bits.
        let w = ((sum << 7) as i32) >> 7;
        [*b0, *b1, *b2, *b3] = w.to_le_bytes();
    }
    if complete {
        run.len()
    } else {
        i.min(run.len())
    }
}

/// [`scan`] for transform 16: converts every `BL` and `ADRP` word of `run`
/// (which starts at new-file position `base`) at a position that is a
/// multiple of 4. With `complete`, the run ends with `run`; otherwise the
/// bytes from the first word that does not fit (at most three) are left for
/// later. Returns how many leading bytes are final.
fn scan_a64(run: &mut [u8], base: u64, complete: bool, way: Way) -> usize {
    // The first word starts where the new-file position is a multiple of 4.
    let first = usize::try_from(base.wrapping_neg() % 4).unwrap_or(0);
    let mut i = first;
    while let Some(bytes) = run.get_mut(i..i.saturating_add(4)) {
        let Ok(bytes) = <&mut [u8; 4]>::try_from(bytes) else {
            break;
        };
        let w = u32::from_le_bytes(*bytes);
        let at = base.wrapping_add(i as u64);
        let converted = if w & 0xFC00_0000 == 0x9400_0000 {
            // BL: the field counts words.
            let here = (at >> 2) as u32;
            let field = match way {
                Way::Encode => w.wrapping_add(here),
                Way::Decode => w.wrapping_sub(here),
            };
            (w & 0xFC00_0000) | (field & 0x03FF_FFFF)
        } else if w & 0x9F00_0000 == 0x9000_0000 {
            // ADRP: the field (immhi:immlo) counts 4 KiB pages.
            let field = (((w >> 5) & 0x7_FFFF) << 2) | ((w >> 29) & 3);
            let here = (at >> 12) as u32;
            let field = match way {
                Way::Encode => field.wrapping_add(here),
                Way::Decode => field.wrapping_sub(here),
            } & 0x1F_FFFF;
            (w & 0x9F00_001F) | ((field & 3) << 29) | ((field >> 2) << 5)
        } else {
            w
        };
        *bytes = converted.to_le_bytes();
        i += 4;
    }
    if complete {
        run.len()
    } else {
        i.min(run.len())
    }
}

/// Converts one whole literal run, which starts at new-file position `base`,
/// for storing.
#[cfg(feature = "diff")]
pub(crate) fn encode_run(kind: Literals, run: &mut [u8], base: u64) {
    match kind {
        Literals::X86 => scan(run, base, true, Way::Encode),
        Literals::A64 => scan_a64(run, base, true, Way::Encode),
    };
}

/// Restores stored literal bytes: `run` starts at new-file position `base`;
/// `complete` says whether the literal run ends with it. Returns how many
/// leading bytes of `run` are restored; the rest (at most four bytes, only
/// when not complete) must be passed again, in front of the run's next
/// bytes.
pub(crate) fn decode_run(kind: Literals, run: &mut [u8], base: u64, complete: bool) -> usize {
    match kind {
        Literals::X86 => scan(run, base, complete, Way::Decode),
        Literals::A64 => scan_a64(run, base, complete, Way::Decode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(run: &[u8], base: u64) -> Vec<u8> {
        encoded_as(Literals::X86, run, base)
    }

    fn encoded_as(kind: Literals, run: &[u8], base: u64) -> Vec<u8> {
        let mut v = run.to_vec();
        encode_run(kind, &mut v, base);
        v
    }

    fn decode_in_pieces(stored: &[u8], base: u64, piece: usize) -> Vec<u8> {
        decode_in_pieces_as(Literals::X86, stored, base, piece)
    }

    /// Decoding in pieces of any size, carrying the unfinished tail, gives
    /// back the run.
    fn decode_in_pieces_as(kind: Literals, stored: &[u8], base: u64, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut at = 0;
        while at < stored.len() || !carry.is_empty() {
            let take = piece.min(stored.len() - at);
            carry.extend_from_slice(&stored[at..at + take]);
            at += take;
            let complete = at == stored.len();
            let done = decode_run(
                kind,
                &mut carry,
                base.wrapping_add(out.len() as u64),
                complete,
            );
            assert!(complete || carry.len() - done <= 4);
            out.extend_from_slice(&carry[..done]);
            carry.drain(..done);
            if complete {
                break;
            }
        }
        out
    }

    #[test]
    fn converts_a_call_to_its_target() {
        // A call at new-file address 0x1000 to 0x1000 + 5 + 0x20 = 0x1025.
        let run = [0xE8, 0x20, 0, 0, 0];
        assert_eq!(encoded(&run, 0x1000), vec![0xE8, 0x25, 0x10, 0, 0]);
        // Two calls to one target from different places read the same.
        let two = [0xE8, 0x20, 0, 0, 0, 0xE8, 0x1B, 0, 0, 0];
        assert_eq!(
            encoded(&two, 0x1000),
            vec![0xE8, 0x25, 0x10, 0, 0, 0xE8, 0x25, 0x10, 0, 0]
        );
        // A backward call, and a far value left alone.
        assert_eq!(
            encoded(&[0xE9, 0xFB, 0xFF, 0xFF, 0xFF], 100),
            vec![0xE9, 100, 0, 0, 0]
        );
        assert_eq!(
            encoded(&[0xE8, 0, 0, 0, 0x12], 100),
            vec![0xE8, 0, 0, 0, 0x12]
        );
        // Too close to the end of the run: untouched.
        assert_eq!(encoded(&[1, 0xE8, 0, 0, 0], 0), vec![1, 0xE8, 0, 0, 0]);
    }

    #[test]
    fn wraps_within_25_bits() {
        // 0x00FF_FFFF + 5 wraps to the negative half of the 25-bit range.
        let run = [0xE8, 0xFF, 0xFF, 0xFF, 0x00];
        let e = encoded(&run, 0);
        assert_eq!(e, vec![0xE8, 0x04, 0x00, 0x00, 0xFF]);
        assert_eq!(decode_in_pieces(&e, 0, 5), run);
    }

    /// Random runs, dense in E8/E9 and in plausible displacements, at
    /// random addresses (also near 2^25 and 2^64), decoded whole and in
    /// pieces of every small size.
    #[test]
    fn decoding_undoes_encoding() {
        let mut rnd = crate::test_rng(0xA076_1D64_78BD_642F);
        for round in 0..3000 {
            let len = (rnd() % 200) as usize;
            let run: Vec<u8> = (0..len)
                .map(|_| match rnd() % 6 {
                    0 => 0xE8,
                    1 => 0xE9,
                    2 => 0x00,
                    3 => 0xFF,
                    _ => rnd() as u8,
                })
                .collect();
            let base = match round % 4 {
                0 => rnd() % 1000,
                1 => (1 << 25) - (rnd() % 300),
                2 => u64::MAX - (rnd() % 300),
                _ => rnd(),
            };
            let stored = encoded(&run, base);
            for piece in [1, 2, 3, 4, 5, 7, 64, 1000] {
                assert_eq!(
                    decode_in_pieces(&stored, base, piece),
                    run,
                    "round {round}, piece {piece}"
                );
            }
        }
    }

    /// Any stored bytes decode (the reader never fails on them) and encode
    /// back to themselves: the transform is a bijection on byte strings.
    #[test]
    fn any_stored_bytes_are_a_valid_input() {
        let mut rnd = crate::test_rng(0xE703_7ED1_A0B4_28DB);
        for _ in 0..400 {
            let len = (rnd() % 100) as usize;
            let stored: Vec<u8> = (0..len)
                .map(|_| if rnd() % 3 == 0 { 0xE8 } else { rnd() as u8 })
                .collect();
            let base = rnd() % (1 << 26);
            let run = decode_in_pieces(&stored, base, 1 + (rnd() % 9) as usize);
            assert_eq!(encoded(&run, base), stored);
        }
    }

    #[test]
    fn a64_converts_calls_and_pages_to_targets() {
        // A BL at 0x1000 to 0x1000 + 4 * 0x20, and one at 0x1004 to the
        // same target: both store the target in words, 0x420.
        let bl = |imm: u32| (0x9400_0000 | imm).to_le_bytes();
        let run = [bl(0x20), bl(0x1F)].concat();
        let want = [bl(0x420), bl(0x420)].concat();
        assert_eq!(encoded_as(Literals::A64, &run, 0x1000), want);
        // An ADRP of x3 at 0x5000 to the page two ahead: stores page 7.
        let adrp =
            |pages: u32| (0x9000_0003 | ((pages & 3) << 29) | ((pages >> 2) << 5)).to_le_bytes();
        assert_eq!(encoded_as(Literals::A64, &adrp(2), 0x5000), adrp(7));
        // A backward BL wraps within 26 bits, and other words stay.
        assert_eq!(
            encoded_as(Literals::A64, &bl(0x03FF_FFFF), 0),
            bl(0x03FF_FFFF)
        );
        assert_eq!(encoded_as(Literals::A64, &bl(0x03FF_FFFF), 8), bl(1));
        let nop = 0xD503_201Fu32.to_le_bytes();
        assert_eq!(encoded_as(Literals::A64, &nop, 0x1000), nop);
        // Only words at positions that are multiples of 4, whole in the run.
        let mut off = vec![0u8];
        off.extend_from_slice(&bl(0x20));
        assert_eq!(encoded_as(Literals::A64, &off, 0x1000), off);
        assert_eq!(
            encoded_as(Literals::A64, &bl(0x20)[..3], 0x1000),
            bl(0x20)[..3]
        );
    }

    /// Random runs dense in `BL`s and `ADRP`s at random addresses, decoded
    /// whole and in pieces of every small size; and any stored bytes decode
    /// and encode back to themselves.
    #[test]
    fn a64_decoding_undoes_encoding() {
        let mut rnd = crate::test_rng(0x51A6_4E0C_77D1_02B9);
        for round in 0..2000 {
            let words = (rnd() % 60) as usize;
            let mut run: Vec<u8> = Vec::new();
            for _ in 0..words {
                let w = match rnd() % 4 {
                    0 => 0x9400_0000 | (rnd() as u32 & 0x03FF_FFFF),
                    1 => (rnd() as u32 & 0x60FF_FFFF) | 0x9000_0000,
                    _ => rnd() as u32,
                };
                run.extend_from_slice(&w.to_le_bytes());
            }
            // Runs of any length, starting at any alignment.
            run.truncate(run.len().saturating_sub((rnd() % 4) as usize));
            let base = match round % 3 {
                0 => rnd() % 10_000,
                1 => u64::MAX - (rnd() % 300),
                _ => rnd(),
            };
            let stored = encoded_as(Literals::A64, &run, base);
            for piece in [1, 2, 3, 4, 5, 7, 64, 1000] {
                assert_eq!(
                    decode_in_pieces_as(Literals::A64, &stored, base, piece),
                    run,
                    "round {round}, piece {piece}"
                );
            }
            let back = decode_in_pieces_as(Literals::A64, &run, base, 3);
            assert_eq!(encoded_as(Literals::A64, &back, base), run);
        }
    }
}
