//! Transform 1 (docs/FORMAT.md): the x86 branch targets in literal bytes.
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

/// Converts one whole literal run, which starts at new-file position `base`,
/// for storing.
#[cfg(feature = "diff")]
pub(crate) fn encode_run(run: &mut [u8], base: u64) {
    scan(run, base, true, Way::Encode);
}

/// Restores stored literal bytes: `run` starts at new-file position `base`;
/// `complete` says whether the literal run ends with it. Returns how many
/// leading bytes of `run` are restored; the rest (at most four bytes, only
/// when not complete) must be passed again, in front of the run's next
/// bytes.
pub(crate) fn decode_run(run: &mut [u8], base: u64, complete: bool) -> usize {
    scan(run, base, complete, Way::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(run: &[u8], base: u64) -> Vec<u8> {
        let mut v = run.to_vec();
        scan(&mut v, base, true, Way::Encode);
        v
    }

    /// Decoding in pieces of any size, carrying the unfinished tail, gives
    /// back the run.
    fn decode_in_pieces(stored: &[u8], base: u64, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut at = 0;
        while at < stored.len() || !carry.is_empty() {
            let take = piece.min(stored.len() - at);
            carry.extend_from_slice(&stored[at..at + take]);
            at += take;
            let complete = at == stored.len();
            let done = decode_run(&mut carry, base.wrapping_add(out.len() as u64), complete);
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
}
