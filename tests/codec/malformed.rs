//! Malformed patches and wrong files: every one is refused with the specific
//! typed error, never accepted, never a panic, never a read outside the old file.

use deltaswap::{Error, FormatErrorKind as K, Limits, PatchReader, Sha256Digest, Subject};

use proptest::prelude::*;

use crate::builder::{
    assemble, copied_olds, hex_digits, op, plan, random_bytes, sample, sha256, to_plain, varint,
    window_cap, zigzag, zstd_frame, Codec, Header, Op, Patch, Sample, Segment, SegmentData, Stream,
    CONTROL, DELTA_BYTES, DELTA_LENS, LITERALS, ZERO_RUNS,
};
use crate::{apply_all, naive, stream_apply, OneByteWriter};

/// Asserts that every applier and the oracle refuse the patch; returns the error.
fn reject(old: &[u8], patch: &[u8]) -> Error {
    match apply_all(old, patch) {
        Ok(out) => panic!("accepted a malformed patch ({} bytes out)", out.len()),
        Err(e) => e,
    }
}

/// The `FormatErrorKind` the patch is refused with.
fn kind(old: &[u8], patch: &[u8]) -> K {
    let e = reject(old, patch);
    match e.format_kind() {
        Some(k) => k,
        None => panic!("expected a format error, got {e:?}"),
    }
}

const CODEC_MIXES: [[Codec; 5]; 3] = [
    [Codec::Raw; 5],
    [Codec::Zstd; 5],
    [
        Codec::Zstd,
        Codec::Raw,
        Codec::Zstd,
        Codec::Raw,
        Codec::Zstd,
    ],
];

fn sample_patch(s: &Sample, codecs: [Codec; 5]) -> Patch {
    Patch {
        header: Header::for_files(&s.old, &s.new),
        segments: s.segs.iter().map(|d| d.encode(codecs)).collect(),
        trailer: Vec::new(),
    }
}

/// A segment from explicit control triples, run pairs, delta bytes and literals.
fn seg(ctrl: &[(u64, u64, i64)], runs: &[(u64, u64)], deltas: &[u8], lits: &[u8]) -> SegmentData {
    let mut d = SegmentData::default();
    for &(c, l, s) in ctrl {
        d.streams[CONTROL].extend(varint(c));
        d.streams[CONTROL].extend(varint(l));
        d.streams[CONTROL].extend(varint(zigzag(s)));
        d.seg_len = d.seg_len.wrapping_add(c.wrapping_add(l));
    }
    for &(z, c) in runs {
        d.streams[ZERO_RUNS].extend(varint(z));
        d.streams[DELTA_LENS].extend(varint(c));
    }
    d.streams[DELTA_BYTES] = deltas.to_vec();
    d.streams[LITERALS] = lits.to_vec();
    d
}

/// A patch for `old` with the given segments; the header's new_len is the sum
/// of the segment lengths and its new_sha256 is that of `new`.
fn custom_patch(old: &[u8], new: &[u8], segs: &[SegmentData]) -> Vec<u8> {
    let mut p = assemble(old, new, segs, Codec::Raw);
    p.header.new_len = varint(segs.iter().map(|s| s.seg_len).sum());
    p.bytes()
}

fn old400() -> Vec<u8> {
    random_bytes(1, 400)
}

#[test]
fn crafted_sample_is_valid_with_every_codec_mix() {
    let s = sample();
    for codecs in CODEC_MIXES {
        let p = sample_patch(&s, codecs);
        let bytes = p.bytes();
        assert_eq!(apply_all(&s.old, &bytes).unwrap(), s.new);
        assert_eq!(naive::apply(&s.old, &bytes).unwrap(), s.new);
        let info = deltaswap::inspect(&bytes[..]).unwrap();
        assert_eq!(info.segments(), 2);
        assert_eq!(info.patch_len(), bytes.len() as u64);
        assert_eq!(info.header().new_len(), s.new.len() as u64);
        assert_eq!(info.header().old_sha256(), Sha256Digest(sha256(&s.old)));
        for (k, (_, raw, stored)) in info.streams().into_iter().enumerate() {
            let want_raw: usize = s.segs.iter().map(|d| d.streams[k].len()).sum();
            let want_stored: usize = p.segments.iter().map(|g| g.streams[k].payload.len()).sum();
            assert_eq!(raw, want_raw as u64, "stream {k} decoded total");
            assert_eq!(stored, want_stored as u64, "stream {k} stored total");
        }
    }
}

// ---- truncation -------------------------------------------------------------

/// The crafted sample with every codec mix, in run layout and with both
/// segments in plain layout with model-coded deltas.
fn sample_patches(s: &Sample) -> Vec<([Codec; 5], Patch)> {
    let runs = CODEC_MIXES.map(|c| (c, sample_patch(s, c)));
    let plain = CODEC_MIXES.map(|c| (c, plain_model_patch(s, c)));
    runs.into_iter().chain(plain).collect()
}

#[test]
fn every_truncation_is_refused() {
    let s = sample();
    for (codecs, p) in sample_patches(&s) {
        let bytes = p.bytes();
        let header_len = p.header.bytes().len();
        let literal_ranges: Vec<_> = (0..2).map(|i| p.payload_range(i, LITERALS)).collect();
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            let e = reject(&s.old, cut);
            let Error::Format(f) = &e else {
                panic!("prefix {len}: {e:?}")
            };
            // inspect reads the structure only: a cut anywhere is Truncated.
            let ie = deltaswap::inspect(cut).unwrap_err();
            assert_eq!(
                ie.format_kind(),
                Some(K::Truncated),
                "inspect, prefix {len}"
            );
            if len < header_len {
                assert_eq!(f.kind(), K::Truncated, "prefix {len}");
                assert!(PatchReader::new(cut).is_err());
                continue;
            }
            let in_literals = literal_ranges.iter().any(|r| r.start <= len && len < r.end);
            if in_literals {
                // The literal stream is streamed: it runs dry.
                assert!(
                    matches!(f.kind(), K::StreamUnderrun | K::Truncated),
                    "prefix {len} (literal stream, {codecs:?}): {e:?}"
                );
            } else {
                assert_eq!(f.kind(), K::Truncated, "prefix {len} ({codecs:?}): {e:?}");
                assert_eq!(f.offset(), len as u64, "prefix {len}: offset of the end");
            }
        }
    }
}

#[test]
fn every_truncation_of_a_diff_patch_is_refused() {
    let old = random_bytes(3, 3000);
    let mut new = old.clone();
    new[100] ^= 0x55;
    new.splice(2000..2000, random_bytes(4, 200));
    new.truncate(2900);
    let patch = deltaswap::diff(&old, &new).unwrap();
    assert_eq!(apply_all(&old, &patch).unwrap(), new);
    for len in 0..patch.len() {
        let e = reject(&old, &patch[..len]);
        assert!(
            matches!(
                e.format_kind(),
                Some(K::Truncated | K::StreamUnderrun | K::BadCompression)
            ),
            "prefix {len}: {e:?}"
        );
    }
}

// ---- header fields ------------------------------------------------------------

fn sample_with(f: impl FnOnce(&mut Header)) -> (Sample, Vec<u8>) {
    let s = sample();
    let mut p = sample_patch(&s, [Codec::Zstd; 5]);
    f(&mut p.header);
    let bytes = p.bytes();
    (s, bytes)
}

#[test]
fn bad_magic() {
    for i in 0..4 {
        for x in [0x01u8, 0x20, 0x80, 0xff] {
            let (s, p) = sample_with(|h| h.magic[i] ^= x);
            assert_eq!(kind(&s.old, &p), K::BadMagic, "byte {i} ^ {x:#x}");
        }
    }
    let (s, p) = sample_with(|h| h.magic.clear());
    assert_eq!(kind(&s.old, &p), K::BadMagic);
    assert_eq!(kind(b"", b"DSW"), K::Truncated);
    assert_eq!(kind(b"", b""), K::Truncated);
    assert_eq!(kind(b"", b"BSDIFF40"), K::BadMagic);
}

#[test]
fn unsupported_version() {
    for v in [0u8, 2, 255] {
        let (s, p) = sample_with(|h| h.version = v);
        assert_eq!(
            kind(&s.old, &p),
            K::UnsupportedVersion {
                found: v,
                supported: 1
            }
        );
    }
    // The version is checked before the later fields.
    let (s, p) = sample_with(|h| {
        h.version = 2;
        h.flags = 1;
        h.reserved = 9;
    });
    assert!(matches!(
        kind(&s.old, &p),
        K::UnsupportedVersion { found: 2, .. }
    ));
}

#[test]
fn unknown_flags_transform_reserved() {
    // Bit 0 is the edit layout (see `edit_layout_faults`).
    for v in [2u8, 3, 0x80, 0xff] {
        let (s, p) = sample_with(|h| h.flags = v);
        assert_eq!(kind(&s.old, &p), K::UnknownFlags(v));
    }
    // Bits 0 to 4 are transforms 1, 2, 4, 8 and 16 (src/transform.rs,
    // src/refs.rs); any other bit is unknown, and the two literal
    // transforms (1 and 16) exclude each other.
    for v in [0x11u8, 0x1F, 0x20, 0x39, 0x80, 255] {
        let (s, p) = sample_with(|h| h.transform = v);
        assert_eq!(kind(&s.old, &p), K::UnknownTransform(v));
    }
    for v in [1u8, 0x80, 255] {
        let (s, p) = sample_with(|h| h.reserved = v);
        assert_eq!(kind(&s.old, &p), K::Reserved);
    }
}

/// Transform 2's reference map (docs/FORMAT.md): every fault of its
/// descriptor and of its breaks is refused with its error, before any
/// segment is read.
#[test]
fn reference_map_faults() {
    let with_map = |map: Vec<u8>| {
        sample_with(move |h| {
            h.transform = 6;
            h.map = map;
        })
    };
    let raw = |breaks: &[u64]| {
        let mut bytes = Vec::new();
        for &v in breaks {
            bytes.extend(varint(v));
        }
        let mut m = varint(bytes.len() as u64);
        m.push(0);
        m.extend(bytes);
        m
    };
    // An empty map is valid and predicts nothing.
    let (s, p) = with_map(varint(0));
    assert_eq!(apply_all(&s.old, &p).unwrap(), s.new);
    // Codecs other than raw and zstd; a zstd map of no stored bytes.
    for c in [2u8, 3, 255] {
        let mut m = varint(4);
        m.push(c);
        m.extend(varint(4));
        m.extend([0, 0, 0, 0]);
        let (s, p) = with_map(m);
        assert_eq!(kind(&s.old, &p), K::UnknownCodec(c));
    }
    let mut m = varint(4);
    m.extend([1, 0]);
    let (s, p) = with_map(m);
    assert_eq!(kind(&s.old, &p), K::OutOfRange);
    // Over 1 MiB decoded or stored, before anything is allocated.
    for (raw_len, codec, stored) in [(1u64 << 21, 0u8, None), (8, 1, Some(1u64 << 40))] {
        let mut m = varint(raw_len);
        m.push(codec);
        if let Some(n) = stored {
            m.extend(varint(n));
        }
        let (s, p) = with_map(m);
        assert!(matches!(
            reject(&s.old, &p),
            Error::LimitExceeded {
                what: "reference map",
                ..
            }
        ));
    }
    // A zstd frame of another length than raw_len.
    let frame = zstd_frame(&[0, 2, 5, 2]);
    let mut m = varint(5);
    m.push(1);
    m.extend(varint(frame.len() as u64));
    m.extend(frame);
    let (s, p) = with_map(m);
    assert_eq!(kind(&s.old, &p), K::BadCompression);
    // The patch ends inside the map's payload (two bytes of descriptor,
    // two of the four payload bytes).
    let (s, mut p) = with_map(raw(&[0, 2, 5, 2]));
    let old_len = s.old.len() as u64;
    let header = 8 + varint(old_len).len() + varint(s.new.len() as u64).len() + 64;
    p.truncate(header + 2 + 2);
    assert_eq!(kind(&s.old, &p), K::Truncated);
    for (breaks, want) in [
        // A break at the old file's end or past it.
        (vec![old_len, 2], K::OutOfRange),
        (vec![0, 2, old_len, 2], K::OutOfRange),
        // A break repeated.
        (vec![5, 2, 0, 4], K::OutOfRange),
        // A shift past i64.
        (vec![0, u64::MAX - 1, 1, u64::MAX - 1], K::Overflow),
        // A position past u64.
        (vec![1, 0, u64::MAX, 0], K::Overflow),
    ] {
        let (s, p) = with_map(raw(&breaks));
        assert_eq!(kind(&s.old, &p), want, "{breaks:?}");
    }
    // A map that ends inside a break, or inside a varint.
    let (s, p) = with_map(raw(&[0]));
    assert_eq!(kind(&s.old, &p), K::StreamUnderrun);
    let mut m = varint(2);
    m.extend([0, 0x80, 0x80]);
    m.remove(m.len() - 1);
    let (s, p) = with_map(m);
    assert_eq!(kind(&s.old, &p), K::StreamUnderrun);
    // A map is only a prediction: the sample's old bytes are random, so no
    // displacement in them lands inside the file, and a map that shifts
    // everything changes nothing.
    let (s, p) = with_map(raw(&[0, 7]));
    assert_eq!(apply_all(&s.old, &p).unwrap(), s.new);
}

#[test]
fn old_len_extremes_are_size_mismatches() {
    for v in [0u64, 1, 399, 401, 1 << 40, 1 << 63, u64::MAX] {
        let (s, p) = sample_with(|h| h.old_len = varint(v));
        let r = PatchReader::new(&p[..]).expect("a large old_len is a valid header");
        assert_eq!(r.header().old_len(), v);
        let e = reject(&s.old, &p);
        assert!(
            matches!(
                e,
                Error::SizeMismatch {
                    subject: Subject::Source,
                    expected,
                    found: 400
                } if expected == v
            ),
            "old_len {v}: {e:?}"
        );
        let (_, written) = stream_apply(&s.old, &p, false);
        assert!(written.is_empty());
    }
}

#[test]
fn varint_encodings_in_the_header() {
    // Non-minimal encodings of 400, of 0, 11-byte and over-64-bit varints.
    let bad: [&[u8]; 6] = [
        &[0x90, 0x83, 0x00],
        &[0x80, 0x00],
        &[0x90, 0x83, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
        &[
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
    ];
    let header_start = 8u64;
    for b in bad {
        let (s, p) = sample_with(|h| h.old_len = b.to_vec());
        let e = reject(&s.old, &p);
        assert_eq!(e.format_kind(), Some(K::BadVarint), "old_len {b:x?}");
        let Error::Format(f) = e else { unreachable!() };
        assert_eq!(f.offset(), header_start, "offset names the varint's start");
        let (s, p) = sample_with(|h| h.new_len = b.to_vec());
        assert_eq!(kind(&s.old, &p), K::BadVarint, "new_len {b:x?}");
    }
    // The longest valid encodings: 2^63 and u64::MAX in 10 bytes.
    let (_, p) = sample_with(|h| h.old_len = [&[0x80u8; 9][..], &[0x01]].concat());
    assert_eq!(
        PatchReader::new(&p[..]).unwrap().header().old_len(),
        1 << 63
    );
    let (_, p) = sample_with(|h| h.old_len = [&[0xffu8; 9][..], &[0x01]].concat());
    assert_eq!(
        PatchReader::new(&p[..]).unwrap().header().old_len(),
        u64::MAX
    );
    // Varints cut by the end of the patch.
    let (_, p) = sample_with(|_| {});
    assert_eq!(
        PatchReader::new(&[&p[..8], &[0x90]].concat()[..])
            .err()
            .and_then(|e| e.format_kind()),
        Some(K::Truncated)
    );
}

#[test]
fn new_len_extremes() {
    let s = sample();
    let real = s.new.len() as u64;
    // new_len 0: no segment expected, so the first segment is trailing.
    let (_, p) = sample_with(|h| h.new_len = varint(0));
    assert_eq!(kind(&s.old, &p), K::TrailingBytes);
    // Too small for the first or the second segment.
    let (_, p) = sample_with(|h| h.new_len = varint(1));
    assert_eq!(kind(&s.old, &p), K::OutputOverrun);
    let (_, p) = sample_with(|h| h.new_len = varint(real - 1));
    assert_eq!(kind(&s.old, &p), K::OutputOverrun);
    // Larger than the segments: the patch ends where a segment should start.
    for v in [real + 1, 16 << 30] {
        let (_, p) = sample_with(|h| h.new_len = varint(v));
        assert_eq!(kind(&s.old, &p), K::Truncated, "new_len {v}");
    }
    // Over the output limit: refused when the header is read.
    for v in [(16 << 30) + 1, 1 << 62, u64::MAX] {
        let (_, p) = sample_with(|h| h.new_len = varint(v));
        let e = PatchReader::new(&p[..]).expect_err("over the limit");
        assert!(
            matches!(e, Error::LimitExceeded { what: "target length", actual, limit } if actual == v && limit == 16 << 30),
            "{e:?}"
        );
        reject(&s.old, &p);
    }
    // A configured limit: inclusive.
    let (_, p) = sample_with(|_| {});
    let ok = PatchReader::with_limits(&p[..], Limits::default().max_output_len(real)).unwrap();
    let mut out = Vec::new();
    let v = ok.apply_to(&s.old[..], &mut out).unwrap();
    assert_eq!(out, s.new);
    assert_eq!(v.len(), real);
    let e = deltaswap::apply_with_limits(&s.old, &p, Limits::default().max_output_len(real - 1));
    assert!(matches!(e, Err(Error::LimitExceeded { actual, .. }) if actual == real));
}

#[test]
fn empty_new_file_patches() {
    let old = old400();
    let mut h = Header::for_files(&old, b"");
    let p = h.bytes();
    assert_eq!(apply_all(&old, &p).unwrap(), b"");
    // A trailing byte, or a whole segment, after an empty new file.
    assert_eq!(kind(&old, &[&p[..], &[0]].concat()), K::TrailingBytes);
    let s = sample();
    let extra = s.segs[0].encode([Codec::Raw; 5]).bytes();
    assert_eq!(kind(&old, &[&p[..], &extra[..]].concat()), K::TrailingBytes);
    // new_sha256 of something else.
    h.new_sha256 = sha256(b"x");
    let e = reject(&old, &h.bytes());
    assert!(matches!(
        e,
        Error::HashMismatch {
            subject: Subject::Target,
            ..
        }
    ));
}

#[test]
fn wrong_old_sha256_writes_nothing() {
    for i in [0usize, 17, 31] {
        let (s, p) = sample_with(|h| h.old_sha256[i] ^= 0x01);
        let e = reject(&s.old, &p);
        let mut want = sha256(&s.old);
        want[i] ^= 1;
        assert!(
            matches!(
                &e,
                Error::HashMismatch { subject: Subject::Source, expected, found }
                    if expected.0 == want && found.0 == sha256(&s.old)
            ),
            "{e:?}"
        );
        let src = crate::ReadAtOnly::new(&s.old);
        let mut w = OneByteWriter::default();
        let r = PatchReader::new(&p[..]).unwrap().apply_to(&src, &mut w);
        assert!(r.is_err());
        assert_eq!(
            w.calls, 0,
            "nothing may be written before the old file is verified"
        );
    }
}

#[test]
fn wrong_old_file_writes_nothing() {
    let s = sample();
    let patch = sample_patch(&s, [Codec::Zstd; 5]).bytes();
    let diffed = deltaswap::diff(&s.old, &s.new).unwrap();
    let mut flipped = Vec::new();
    for i in [0usize, 200, 399] {
        let mut o = s.old.clone();
        o[i] ^= 0x80;
        flipped.push(o);
    }
    for p in [&patch, &diffed] {
        for wrong in [&s.old[..399], &[&s.old[..], b"!"].concat()[..], &[][..]] {
            let (r, written) = stream_apply(wrong, p, false);
            assert!(
                matches!(
                    r,
                    Err(Error::SizeMismatch { subject: Subject::Source, expected: 400, found })
                        if found == wrong.len() as u64
                ),
                "{r:?}"
            );
            assert!(written.is_empty());
            reject(wrong, p);
        }
        for wrong in &flipped {
            let (r, written) = stream_apply(wrong, p, false);
            assert!(
                matches!(
                    &r,
                    Err(Error::HashMismatch { subject: Subject::Source, expected, found })
                        if expected.0 == sha256(&s.old) && found.0 == sha256(wrong)
                ),
                "{r:?}"
            );
            assert!(written.is_empty());
            let e = reject(wrong, p);
            assert!(e.is_rejected_input());
        }
    }
}

#[test]
fn altered_new_sha256_is_a_target_mismatch() {
    for i in [0usize, 31] {
        let (s, p) = sample_with(|h| h.new_sha256[i] ^= 0x40);
        let e = reject(&s.old, &p);
        let mut want = sha256(&s.new);
        want[i] ^= 0x40;
        assert!(
            matches!(
                &e,
                Error::HashMismatch { subject: Subject::Target, expected, found }
                    if expected.0 == want && found.0 == sha256(&s.new)
            ),
            "{e:?}"
        );
    }
}

/// Results of 4 MiB and more are hashed on a second thread as they are
/// written. The same checks hold there: every applier agrees with the oracle,
/// an altered new SHA-256 is a target mismatch naming the digest of what was
/// written, and a writer that fails part way is an I/O error, not a hang.
#[test]
fn large_results_are_checked_as_small_ones() {
    let len = (4 << 20) + 12_345;
    let old = random_bytes(91, len);
    let mut new = old.clone();
    new[len - 1] = new[len - 1].wrapping_add(1);
    let segs = [seg(
        &[(len as u64, 0, 0)],
        &[(len as u64 - 1, 1)],
        &[1],
        &[],
    )];
    let good = assemble(&old, &new, &segs, Codec::Zstd);
    #[cfg(feature = "fuzzing")]
    let piped = deltaswap::fuzzing::piped_applies();
    assert!(apply_all(&old, &good.bytes()).unwrap() == new);
    // The result is hashed on a second thread, where there is one (the
    // count needs the `fuzzing` feature, which `.ci/run` turns on).
    #[cfg(feature = "fuzzing")]
    if std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
        assert!(
            deltaswap::fuzzing::piped_applies() > piped,
            "the piped path"
        );
    }

    let mut bad = good.clone();
    bad.header.new_sha256[7] ^= 1;
    let e = reject(&old, &bad.bytes());
    assert!(
        matches!(
            &e,
            Error::HashMismatch { subject: Subject::Target, found, .. } if found.0 == sha256(&new)
        ),
        "{e:?}"
    );

    /// Accepts `left` bytes, then fails every write.
    struct FailsAfter {
        left: usize,
    }
    impl std::io::Write for FailsAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let patch = good.bytes();
    for left in [0, 1, 300_000, len - 1] {
        let e = PatchReader::new(&patch[..])
            .and_then(|r| r.apply_to(&old[..], FailsAfter { left }))
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{left}: {e:?}");
    }
}

// ---- segments -----------------------------------------------------------------

/// The sample with its segment `i` changed by `f`, codecs all zstd or all raw.
fn sample_seg(codec: Codec, i: usize, f: impl FnOnce(&mut Segment)) -> (Sample, Vec<u8>) {
    let s = sample();
    let mut p = sample_patch(&s, [codec; 5]);
    f(&mut p.segments[i]);
    let b = p.bytes();
    (s, b)
}

#[test]
fn segment_length_faults() {
    let s = sample();
    let seg0 = s.segs[0].seg_len;
    for codec in [Codec::Raw, Codec::Zstd] {
        let cases: [(Vec<u8>, K); 6] = [
            (varint(0), K::EmptyOperation),
            // Longer than what remains of the new file.
            (varint(s.new.len() as u64 + 1), K::OutputOverrun),
            (varint(u64::MAX), K::OutputOverrun),
            // Shorter than its operations.
            (varint(seg0 - 1), K::OutputOverrun),
            (vec![0x80, 0x00], K::BadVarint),
            ([&[0xffu8; 10][..], &[0x01]].concat(), K::BadVarint),
        ];
        for (v, want) in cases {
            let (s, p) = sample_seg(codec, 0, |g| g.seg_len = v.clone());
            assert_eq!(kind(&s.old, &p), want, "seg_len {v:x?} ({codec:?})");
        }
        // Longer than its operations (but within the file): the control stream runs dry.
        let (s, p) = sample_seg(codec, 0, |g| g.seg_len = varint(seg0 + 1));
        assert_eq!(kind(&s.old, &p), K::StreamUnderrun);
    }
}

#[test]
fn unknown_codec_in_every_stream() {
    // 2 was raw LZMA in development builds and is not defined; 3 and 4 are
    // only defined with their own descriptors (see the model and LZMA tests
    // below).
    for k in 0..5 {
        for c in [2u8, 4, 0x80, 0xff] {
            if c == 4 && k == LITERALS {
                continue;
            }
            let (s, p) = sample_seg(Codec::Raw, 1, |g| {
                let st = &mut g.streams[k];
                let raw_len = st.payload.len() as u64;
                *st = Stream::custom(raw_len.max(1), c, None, &st.payload.clone());
            });
            assert_eq!(kind(&s.old, &p), K::UnknownCodec(c), "stream {k} codec {c}");
        }
    }
}

/// `len` old bytes copied whole into new, every seventh changed, as one
/// plain segment whose deltas are coded with the model under `window_log`,
/// written as given: (old, new, patch).
fn long_plain(len: usize, window_log: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let old = random_bytes(7, len);
    let new: Vec<u8> = old
        .iter()
        .enumerate()
        .map(|(i, b)| if i % 7 == 3 { b.wrapping_add(1) } else { *b })
        .collect();
    let segments = vec![vec![op(len as u64, 0, 0)]];
    let olds = copied_olds(&old, &segments);
    let data = to_plain(&old, &new, &segments);
    let mut seg = data[0].encode([Codec::Raw; 5]);
    let deltas = &data[0].streams[DELTA_BYTES];
    let payload = deltaswap::model_codec::encode_deltas(&olds[0], deltas, u32::from(window_log));
    seg.streams[DELTA_BYTES] = Stream::model_payload(deltas.len() as u64, payload, window_log);
    let patch = Patch {
        header: Header::for_files(&old, &new),
        segments: vec![seg],
        trailer: Vec::new(),
    }
    .bytes();
    (old, new, patch)
}

/// The model-coded delta stream of the sample's plain segment `i`.
fn model_stream(s: &Sample, i: usize, window_log: u8) -> Stream {
    Stream::model(
        &s.plain_olds[i],
        &s.plain[i].streams[DELTA_BYTES],
        window_log,
    )
}

#[test]
fn model_outside_plain_delta_bytes_is_an_unknown_codec() {
    // A well-formed codec-3 descriptor and payload on the control, run and
    // literal streams, and on the delta bytes of a segment in run layout;
    // the same with codec 5 (the model with zero blocks), defined exactly
    // where codec 3 is.
    let makers: [(u8, Maker); 2] = [
        (3, |o, d| Stream::model(o, d, 12)),
        (5, |o, d| Stream::block_model(o, d, 12)),
    ];
    for (codec, make) in makers {
        for i in 0..2 {
            for k in 0..5 {
                let (s, p) = sample_seg(Codec::Raw, i, |g| {
                    let data = g.streams[k].payload.clone();
                    g.streams[k] = make(&vec![0; data.len()], &data);
                });
                assert_eq!(
                    kind(&s.old, &p),
                    K::UnknownCodec(codec),
                    "codec {codec}, segment {i} stream {k}"
                );
            }
        }
    }
    // A plain segment whose model delta stream is correct, with one run
    // stream added: that is the run layout, where codec 3 is not defined.
    let s = sample();
    let p = plain_model_patch(&s, [Codec::Raw; 5]);
    assert_eq!(apply_all(&s.old, &p.bytes()).unwrap(), s.new);
    for k in [ZERO_RUNS, DELTA_LENS] {
        let mut q = p.clone();
        q.segments[0].streams[k] = Stream::raw(&s.segs[0].streams[k]);
        assert_eq!(kind(&s.old, &q.bytes()), K::UnknownCodec(3), "stream {k}");
    }
    // In a plain segment, on the literal stream (the delta bytes stay raw).
    let (s, p) = plain_seg(1, |_, d| Stream::raw(d));
    assert_eq!(apply_all(&s.old, &p).unwrap(), s.new);
    let mut q = sample_patch(&s, [Codec::Raw; 5]);
    q.segments[1] = s.plain[1].encode([Codec::Raw; 5]);
    let lits = s.plain[1].streams[LITERALS].clone();
    q.segments[1].streams[LITERALS] = Stream::model(&vec![0; lits.len()], &lits, 12);
    assert_eq!(kind(&s.old, &q.bytes()), K::UnknownCodec(3));
    // The descriptor is refused when it is read: a codec-3 control stream is
    // UnknownCodec(3) even if nothing after the codec byte is well formed.
    let (s, p) = sample_seg(Codec::Raw, 0, |g| {
        g.streams[CONTROL] = Stream::custom(5, 3, None, &[]);
    });
    assert_eq!(kind(&s.old, &p), K::UnknownCodec(3));
    // Codec 5 in a plain segment, then with a run stream added.
    let p = plain_model_patch(&s, [Codec::Raw; 5]);
    for k in [ZERO_RUNS, DELTA_LENS] {
        let mut q = p.clone();
        let d = &s.plain[0].streams[DELTA_BYTES];
        q.segments[0].streams[DELTA_BYTES] = Stream::block_model(&s.plain_olds[0], d, 12);
        assert_eq!(
            apply_all(&s.old, &q.bytes()).unwrap(),
            s.new,
            "codec 5 plain"
        );
        q.segments[0].streams[k] = Stream::raw(&s.segs[0].streams[k]);
        assert_eq!(
            kind(&s.old, &q.bytes()),
            K::UnknownCodec(5),
            "codec 5, stream {k}"
        );
    }
}

#[test]
fn codec_2_is_undefined_everywhere() {
    // The descriptor development builds wrote for raw LZMA (raw_len, 2,
    // stored_len, props, dict_log), on the delta bytes of a plain segment,
    // where it used to be valid, and on every stream of a run-layout segment.
    let lzma_desc = |raw_len: usize, payload: &[u8]| {
        let mut st = Stream::custom(raw_len as u64, 2, Some(payload.len() as u64), payload);
        st.desc.extend([0, 12]);
        st
    };
    for i in 0..2 {
        let (s, p) = plain_seg(i, |_, d| {
            lzma_desc(d.len(), &[0x00, 0x11, 0x22, 0x33, 0x44])
        });
        assert_eq!(kind(&s.old, &p), K::UnknownCodec(2), "plain segment {i}");
        for k in 0..5 {
            let (s, p) = sample_seg(Codec::Zstd, i, |g| {
                let n = s_len(&g.streams[k]);
                g.streams[k] = lzma_desc(n.max(1), &[0x5d; 9]);
            });
            assert_eq!(
                kind(&s.old, &p),
                K::UnknownCodec(2),
                "segment {i} stream {k}"
            );
        }
    }
}

/// The decoded length a descriptor declares (its leading varint).
fn s_len(st: &Stream) -> usize {
    let mut v = 0usize;
    for (i, b) in st.desc.iter().enumerate() {
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

/// The sample with segment `i` in plain layout, its delta stream built by `f`
/// from the old bytes under the segment's copies and the decoded deltas.
fn plain_seg(i: usize, f: impl FnOnce(&[u8], &[u8]) -> Stream) -> (Sample, Vec<u8>) {
    let s = sample();
    let mut p = sample_patch(&s, [Codec::Raw; 5]);
    let seg = s.plain[i].encode([Codec::Raw; 5]);
    p.segments[i] = seg;
    p.segments[i].streams[DELTA_BYTES] = f(&s.plain_olds[i], &s.plain[i].streams[DELTA_BYTES]);
    let b = p.bytes();
    (s, b)
}

/// The sample with both segments in plain layout, their delta streams coded
/// with the model (window 2^12), the other streams with `codecs`.
fn plain_model_patch(s: &Sample, codecs: [Codec; 5]) -> Patch {
    let mut p = sample_patch(s, codecs);
    for i in 0..2 {
        p.segments[i] = s.plain[i].encode(codecs);
        p.segments[i].streams[DELTA_BYTES] = model_stream(s, i, 12);
    }
    p
}

type Maker = fn(&[u8], &[u8]) -> Stream;

/// The plain delta stream with each codec: (name, maker from olds and deltas).
const PLAIN_MAKERS: [(&str, Maker); 6] = [
    ("raw", |_, d| Stream::raw(d)),
    ("zstd", |_, d| Stream::zstd(d)),
    ("model 2^10", |o, d| Stream::model(o, d, 10)),
    ("model 2^24", |o, d| Stream::model(o, d, 24)),
    ("block model 2^10", |o, d| Stream::block_model(o, d, 10)),
    ("block model 2^24", |o, d| Stream::block_model(o, d, 24)),
];

#[test]
fn plain_layout_applies_with_every_codec() {
    for (name, make) in PLAIN_MAKERS {
        for i in 0..2 {
            let (s, p) = plain_seg(i, make);
            assert_eq!(apply_all(&s.old, &p).unwrap(), s.new, "{name}, segment {i}");
        }
        // Both segments plain.
        let s = sample();
        let mut p = sample_patch(&s, [Codec::Raw; 5]);
        for i in 0..2 {
            p.segments[i] = s.plain[i].encode([Codec::Raw; 5]);
            p.segments[i].streams[DELTA_BYTES] =
                make(&s.plain_olds[i], &s.plain[i].streams[DELTA_BYTES]);
        }
        let bytes = p.bytes();
        assert_eq!(apply_all(&s.old, &bytes).unwrap(), s.new, "{name}");
        // inspect reports the deltas (one per copied byte) and their stored size.
        let info = deltaswap::inspect(&bytes[..]).unwrap();
        let (_, raw, stored) = info.streams()[DELTA_BYTES];
        let copied: usize = s.plain_olds.iter().map(Vec::len).sum();
        let payloads: usize = p.segments.iter().map(|g| g.streams[3].payload.len()).sum();
        assert_eq!((raw, stored), (copied as u64, payloads as u64), "{name}");
        assert_eq!((info.streams()[1].1, info.streams()[2].1), (0, 0));
    }
    // The model codes the sample's deltas in fewer bytes than there are deltas.
    let s = sample();
    let m = model_stream(&s, 0, 12);
    assert!(m.payload.len() < s.plain_olds[0].len() / 2, "{m:?}");
}

#[test]
fn plain_delta_stream_of_the_wrong_length() {
    for (name, make) in PLAIN_MAKERS {
        // One delta short: the second copy needs more than is left.
        let (s, p) = plain_seg(0, |o, d| make(&o[..o.len() - 1], &d[..d.len() - 1]));
        assert_eq!(kind(&s.old, &p), K::StreamUnderrun, "{name}");
        // One delta too many: left over after the last copy.
        let (s, p) = plain_seg(0, |o, d| make(&[o, &[0u8]].concat(), &[d, &[0u8]].concat()));
        assert_eq!(kind(&s.old, &p), K::StreamTrailing, "{name}");
        // Longer than the whole segment: refused before it is decoded.
        let (s, p) = plain_seg(0, |o, d| {
            make(&[o, &[0u8; 300]].concat(), &[d, &[0u8; 300]].concat())
        });
        assert_eq!(kind(&s.old, &p), K::OutOfRange, "{name}");
    }
}

/// The model's deltas are budgeted over the whole patch (`max_model_len`):
/// the segment that would pass the budget is refused before it is decoded,
/// with the total it would reach.
#[test]
fn model_deltas_are_budgeted_over_the_patch() {
    let s = sample();
    let patch = plain_model_patch(&s, [Codec::Raw; 5]).bytes();
    let first = s.plain[0].streams[DELTA_BYTES].len() as u64;
    let total = first + s.plain[1].streams[DELTA_BYTES].len() as u64;
    assert!(first > 0 && total > first);
    let with = |max: u64| {
        deltaswap::apply_with_limits(&s.old, &patch, Limits::default().max_model_len(max))
    };
    assert_eq!(with(total).unwrap(), s.new, "exactly the budget");
    for (max, actual) in [
        (total - 1, total),
        (first, total),
        (first - 1, first),
        (0, first),
    ] {
        let e = with(max).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LimitExceeded { what: "delta-model deltas", actual: a, limit }
                    if a == actual && limit == max
            ),
            "max {max}: {e:?}"
        );
    }
    // Other layouts are not counted: the same sample in run layout applies
    // with no model budget at all.
    let runs = sample_patch(&s, [Codec::Raw; 5]).bytes();
    let out = deltaswap::apply_with_limits(&s.old, &runs, Limits::default().max_model_len(0));
    assert_eq!(out.unwrap(), s.new);
}

#[test]
fn model_descriptor_faults() {
    let enc = |o: &[u8], d: &[u8]| Stream::model(o, d, 12).payload;
    // window_log outside 10..=30.
    for w in [0u8, 9, 31, 0xff] {
        let (s, p) = plain_seg(0, |o, d| {
            Stream::model_payload(d.len() as u64, enc(o, d), w)
        });
        assert_eq!(kind(&s.old, &p), K::OutOfRange, "window_log {w}");
    }
    // The window is canonical: the sample's stream is shorter than 2^10, so
    // 2^10 is the only window it may name; a larger one (the same history)
    // is refused, inside the default limit (2^24) or over it.
    let (s, p) = plain_seg(0, |o, d| {
        Stream::model_payload(d.len() as u64, enc(o, d), 10)
    });
    assert_eq!(apply_all(&s.old, &p).unwrap(), s.new, "window_log 10");
    for w in [11u8, 12, 24, 25, 30] {
        let (s, p) = plain_seg(0, |o, d| {
            Stream::model_payload(d.len() as u64, enc(o, d), w)
        });
        assert_eq!(kind(&s.old, &p), K::OutOfRange, "window_log {w}");
    }
    // A stream of 40,000 deltas needs 2^16: 16 applies, 17 is refused, and a
    // reader's limit of 2^12 refuses 16 before decoding.
    let (old, new, p16) = long_plain(40_000, 16);
    assert_eq!(apply_all(&old, &p16).unwrap(), new, "window_log 16");
    let (old, _, p17) = long_plain(40_000, 17);
    assert_eq!(kind(&old, &p17), K::OutOfRange, "window_log 17");
    let e =
        deltaswap::apply_with_limits(&old, &p16, Limits::default().max_window_log(12)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                what: "delta model window (log2)",
                actual: 16,
                limit: 12
            }
        ),
        "{e:?}"
    );
    let ok = deltaswap::apply_with_limits(&old, &p16, Limits::default().max_window_log(16));
    assert_eq!(ok.unwrap(), new);
    // A smaller window than the stream needs is the writer's choice: valid.
    let (old, new, p12) = long_plain(40_000, 12);
    assert_eq!(apply_all(&old, &p12).unwrap(), new, "window_log 12");
    // stored_len 0 (no payload).
    let (s, p) = plain_seg(0, |_, d| {
        Stream::model_payload(d.len() as u64, Vec::new(), 12)
    });
    assert_eq!(kind(&s.old, &p), K::OutOfRange, "stored_len 0");
    // The descriptor without its window_log byte: the next descriptor's
    // first byte is read as the window and everything after is misread;
    // still refused.
    let (s, p) = plain_seg(0, |o, d| {
        let mut st = Stream::model(o, d, 12);
        st.desc.pop();
        st
    });
    reject(&s.old, &p);
}

#[test]
fn model_payload_faults() {
    let s = sample();
    let good = model_stream(&s, 0, 12).payload;
    let with = |payload: Vec<u8>| {
        plain_seg(0, move |_, d| {
            let w = window_cap(d.len() as u64);
            Stream::model_payload(d.len() as u64, payload, w)
        })
        .1
    };
    assert_eq!(apply_all(&s.old, &with(good.clone())).unwrap(), s.new);
    // The coded data ends exactly with the stored bytes: any byte after it,
    // inside stored_len, is trailing.
    for tail in [&[0u8][..], &[1], &[0xff], &[0, 0], &[0x55; 100]] {
        let p = with([&good[..], tail].concat());
        assert_eq!(kind(&s.old, &p), K::StreamTrailing, "tail {tail:x?}");
    }
    // Cut at every length, stored_len matching: the decoder runs past the
    // stored bytes (BadCompression); an empty payload is refused in the
    // descriptor.
    assert_eq!(kind(&s.old, &with(Vec::new())), K::OutOfRange);
    for cut in 1..good.len() {
        let p = with(good[..cut].to_vec());
        assert_eq!(
            kind(&s.old, &p),
            K::BadCompression,
            "cut to {cut} of {}",
            good.len()
        );
    }
    // Every single-bit flip (all eight bits of every byte) is refused, by the
    // decoder or by the result's SHA-256, and the appliers and the oracle
    // agree. That includes the last four bytes, the coder's final `low`: any
    // value in the final interval would decode the same deltas, but the
    // decoder requires exactly the encoder's (docs/MODEL.md, "The coder").
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            match apply_all(&s.old, &with(bad)) {
                Ok(_) => panic!("byte {i} bit {bit} of {} accepted", good.len()),
                Err(e) => assert!(
                    matches!(
                        e,
                        Error::Format(_)
                            | Error::HashMismatch {
                                subject: Subject::Target,
                                ..
                            }
                    ),
                    "byte {i} bit {bit}: {e:?}"
                ),
            }
        }
    }
}

#[test]
fn zstd_stored_len_zero() {
    for k in 0..5 {
        let (s, p) = sample_seg(Codec::Zstd, 0, |g| {
            g.streams[k] = Stream::custom(5, 1, Some(0), &[]);
        });
        assert_eq!(kind(&s.old, &p), K::OutOfRange, "stream {k}");
    }
}

#[test]
fn raw_len_lies() {
    let s = sample();
    for k in 0..4 {
        for delta in [-1i64, 1] {
            // zstd: the frame decodes to a different length than declared.
            let (_, p) = sample_seg(Codec::Zstd, 0, |g| {
                let raw = s.segs[0].streams[k].len() as i64 + delta;
                let payload = g.streams[k].payload.clone();
                g.streams[k] = Stream::zstd_payload(raw as u64, payload);
            });
            assert_eq!(
                kind(&s.old, &p),
                K::BadCompression,
                "stream {k} raw_len {delta:+}"
            );
        }
    }
    // The literal stream declares one byte more than the operations consume...
    let lit = &s.segs[0].streams[LITERALS];
    let (_, p) = sample_seg(Codec::Zstd, 0, |g| {
        g.streams[LITERALS] = Stream::zstd_payload(lit.len() as u64 + 1, zstd_frame(lit));
    });
    assert_eq!(kind(&s.old, &p), K::StreamTrailing);
    // ...or one byte less than they need (declared and stored).
    let (_, p) = sample_seg(Codec::Zstd, 0, |g| {
        g.streams[LITERALS] = Stream::zstd(&lit[..lit.len() - 1]);
    });
    assert_eq!(kind(&s.old, &p), K::StreamUnderrun);
    let (_, p) = sample_seg(Codec::Raw, 0, |g| {
        g.streams[LITERALS] = Stream::raw(&lit[..lit.len() - 1]);
    });
    assert_eq!(kind(&s.old, &p), K::StreamUnderrun);
    // A literal stream longer than its segment is refused up front.
    let (_, p) = sample_seg(Codec::Raw, 0, |g| {
        g.streams[LITERALS] = Stream::custom(1 << 40, 0, None, lit);
    });
    assert_eq!(kind(&s.old, &p), K::OutOfRange);
    // Raw streams whose raw_len is off by one swallow or leave a byte of the
    // next payload: still refused.
    for k in 0..5 {
        for delta in [-1i64, 1] {
            let (_, p) = sample_seg(Codec::Raw, 0, |g| {
                let raw = g.streams[k].payload.len() as i64 + delta;
                let payload = g.streams[k].payload.clone();
                g.streams[k] = Stream::custom(raw as u64, 0, None, &payload);
            });
            reject(&s.old, &p);
        }
    }
}

#[test]
fn stream_buffer_limit_counts_decoded_and_stored_bytes() {
    let s = sample();
    let p = sample_patch(
        &s,
        [
            Codec::Zstd,
            Codec::Raw,
            Codec::Zstd,
            Codec::Zstd,
            Codec::Raw,
        ],
    );
    let need = p
        .segments
        .iter()
        .zip(&s.segs)
        .map(|(g, d)| {
            (0..4)
                .map(|k| {
                    let stored = if g.streams[k]
                        .desc
                        .get(varint(d.streams[k].len() as u64).len())
                        == Some(&1)
                    {
                        g.streams[k].payload.len()
                    } else {
                        0
                    };
                    d.streams[k].len() + stored
                })
                .sum::<usize>() as u64
        })
        .max()
        .unwrap();
    applies_at_exactly_the_buffer_limit(&s, &p.bytes(), need);
    // Declared sizes far over the default limit are refused before allocation.
    let (_, p) = sample_seg(Codec::Raw, 0, |g| {
        g.streams[DELTA_BYTES] = Stream::custom(1 << 40, 0, None, &[]);
    });
    assert!(matches!(reject(&s.old, &p), Error::LimitExceeded { .. }));
    let (_, p) = sample_seg(Codec::Raw, 0, |g| {
        g.streams[CONTROL] = Stream::custom(1 << 20, 1, Some(1 << 30), &[]);
    });
    assert!(matches!(reject(&s.old, &p), Error::LimitExceeded { .. }));
    // Two declared lengths whose sum overflows.
    let (_, p) = sample_seg(Codec::Raw, 0, |g| {
        g.streams[CONTROL] = Stream::custom(u64::MAX, 0, None, &[]);
        g.streams[ZERO_RUNS] = Stream::custom(u64::MAX, 0, None, &[]);
    });
    assert_eq!(kind(&s.old, &p), K::Overflow);
}

#[test]
fn copies_must_stay_inside_the_old_file() {
    let old = old400();
    // 10 literals, seek to 350, then a copy of 50: exactly to the end, valid.
    let lits = random_bytes(9, 10);
    let new: Vec<u8> = [&lits[..], &old[350..400]].concat();
    let good = seg(&[(0, 10, 350), (50, 0, 0)], &[(50, 0)], &[], &lits);
    assert_eq!(
        apply_all(&old, &custom_patch(&old, &new, &[good])).unwrap(),
        new
    );
    // A copy of 51 from 350 reads past the end.
    let bad = seg(&[(0, 10, 350), (51, 0, 0)], &[(51, 0)], &[], &lits);
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::SourceOutOfBounds
    );
    // A copy of the whole file plus one byte.
    let bad = seg(&[(401, 0, 0)], &[(401, 0)], &[], &[]);
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::SourceOutOfBounds
    );
    // Any copy from an empty old file.
    let bad = seg(&[(1, 0, 0)], &[(1, 0)], &[], &[]);
    assert_eq!(
        kind(b"", &custom_patch(b"", b"x", &[bad])),
        K::SourceOutOfBounds
    );
    // copy_len + literal_len overflows.
    let bad = seg(&[(u64::MAX, 1, 0)], &[], &[], &[]);
    let mut p = assemble(&old, &new, &[bad], Codec::Raw);
    p.segments[0].seg_len = varint(10);
    p.header.new_len = varint(10);
    assert_eq!(kind(&old, &p.bytes()), K::Overflow);
    // A huge copy is refused as longer than the segment.
    let bad = seg(&[(u64::MAX, 0, 0)], &[], &[], &[]);
    let mut p = assemble(&old, &new, &[bad], Codec::Raw);
    p.segments[0].seg_len = varint(10);
    p.header.new_len = varint(10);
    assert_eq!(kind(&old, &p.bytes()), K::OutputOverrun);
}

#[test]
fn seeks_must_stay_inside_the_old_file() {
    let old = old400();
    // Copy 10, seek back to 0, copy 10 again: valid.
    let new: Vec<u8> = [&old[..10], &old[..10]].concat();
    let good = seg(&[(10, 0, -10), (10, 0, 0)], &[(20, 0)], &[], &[]);
    assert_eq!(
        apply_all(&old, &custom_patch(&old, &new, &[good])).unwrap(),
        new
    );
    // Seek to exactly the end, then a literal: valid.
    let new2: Vec<u8> = [&old[..10], b"z"].concat();
    let good = seg(&[(10, 0, 390), (0, 1, 0)], &[(10, 0)], &[], b"z");
    assert_eq!(
        apply_all(&old, &custom_patch(&old, &new2, &[good])).unwrap(),
        new2
    );
    // Before 0, past the end, and the extremes, also on the last operation.
    for (s, last) in [
        (-11i64, -21i64),
        (391, 381),
        (i64::MIN, i64::MIN),
        (i64::MAX, i64::MAX),
        (i64::MIN + 1, i64::MIN + 1),
    ] {
        let bad = seg(&[(10, 0, s), (10, 0, 0)], &[(20, 0)], &[], &[]);
        assert_eq!(
            kind(&old, &custom_patch(&old, &new, &[bad])),
            K::SourceOutOfBounds,
            "seek {s}"
        );
        // After a copy of old[10..20], -21 is just before 0 and 381 just past 400.
        let bad = seg(&[(10, 0, 0), (10, 0, last)], &[(20, 0)], &[], &[]);
        let newx: Vec<u8> = old[..20].to_vec();
        assert_eq!(
            kind(&old, &custom_patch(&old, &newx, &[bad])),
            K::SourceOutOfBounds,
            "seek {last} on the last operation"
        );
    }
    // The position is carried from one segment to the next: a seek to 395 in
    // segment 0 makes a copy of 10 in segment 1 run past the end.
    let a = seg(&[(0, 1, 395)], &[], &[], b"a");
    let b = seg(&[(10, 0, 0)], &[(10, 0)], &[], &[]);
    assert_eq!(
        kind(&old, &custom_patch(&old, &old[..11], &[a, b])),
        K::SourceOutOfBounds
    );
}

#[test]
fn zero_progress_operations() {
    let old = old400();
    let new = old[..10].to_vec();
    for seek in [0i64, 5, -1] {
        let bad = seg(&[(0, 0, seek), (10, 0, 0)], &[(10, 0)], &[], &[]);
        assert_eq!(
            kind(&old, &custom_patch(&old, &new, &[bad])),
            K::EmptyOperation
        );
    }
    // A (0, 0) run pair.
    let bad = seg(&[(10, 0, 0)], &[(0, 0), (10, 0)], &[], &[]);
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::EmptyOperation
    );
    // Pairs (z, 0) and (0, c) are fine.
    let mut new2 = new.clone();
    new2[4] = new2[4].wrapping_add(3);
    let good = seg(&[(10, 0, 0)], &[(4, 0), (0, 1), (5, 0)], &[3], &[]);
    assert_eq!(
        apply_all(&old, &custom_patch(&old, &new2, &[good])).unwrap(),
        new2
    );
}

#[test]
fn run_pairs_must_cover_the_copies_exactly() {
    let old = old400();
    let mut new = [&old[..10], b"L", &old[10..20]].concat();
    new[3] = new[3].wrapping_add(1);
    new[15] = new[15].wrapping_add(2); // copy byte 14 of 20
    let ctrl = [(10, 1, 0), (10, 0, 0)];
    // Runs span the two copies laid end to end: (3,1) then (10,1) then (5,0).
    let good = seg(&ctrl, &[(3, 1), (10, 1), (5, 0)], &[1, 2], b"L");
    assert_eq!(
        apply_all(&old, &custom_patch(&old, &new, &[good])).unwrap(),
        new
    );
    // Short of the end: the run streams run dry.
    let bad = seg(&ctrl, &[(3, 1), (10, 1), (4, 0)], &[1, 2], b"L");
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::StreamUnderrun
    );
    // Past the end.
    let bad = seg(&ctrl, &[(3, 1), (10, 1), (6, 0)], &[1, 2], b"L");
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::StreamTrailing
    );
    // A delta run past the copies: the last pair does not end with them.
    let bad = seg(&ctrl, &[(3, 1), (15, 2)], &[1, 0, 0], b"L");
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::StreamTrailing
    );
    // Fewer delta bytes than the delta lengths claim.
    let bad = seg(&ctrl, &[(3, 1), (10, 1), (5, 0)], &[1], b"L");
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::StreamUnderrun
    );
    // Copies but no run streams at all.
    let bad = seg(&ctrl, &[], &[], b"L");
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::StreamUnderrun
    );
    // Run pairs in a segment without copies.
    let bad = seg(&[(0, 1, 0)], &[(1, 0)], &[], b"L");
    assert_eq!(
        kind(&old, &custom_patch(&old, b"L", &[bad])),
        K::StreamTrailing
    );
    // A control varint that is not minimal, or cut.
    let mut bad = seg(&ctrl, &[(3, 1), (10, 1), (5, 0)], &[1, 2], b"L");
    bad.streams[CONTROL][0] |= 0x80;
    bad.streams[CONTROL].insert(1, 0x00);
    assert_eq!(kind(&old, &custom_patch(&old, &new, &[bad])), K::BadVarint);
    let mut bad = seg(&ctrl, &[(3, 1), (10, 1), (5, 0)], &[1, 2], b"L");
    *bad.streams[CONTROL].last_mut().unwrap() = 0x80;
    assert_eq!(
        kind(&old, &custom_patch(&old, &new, &[bad])),
        K::StreamUnderrun
    );
}

#[test]
fn trailing_bytes_after_the_last_segment() {
    let s = sample();
    for codec in [Codec::Raw, Codec::Zstd] {
        let p = sample_patch(&s, [codec; 5]);
        let extra_seg = p.segments[1].bytes();
        for trailer in [vec![0u8], vec![0xff; 100], extra_seg] {
            let mut q = p.clone();
            q.trailer = trailer;
            assert_eq!(kind(&s.old, &q.bytes()), K::TrailingBytes);
        }
    }
}

#[test]
fn trailing_bytes_inside_buffered_streams() {
    let s = sample();
    for codec in [Codec::Raw, Codec::Zstd] {
        // An extra operation in the control stream.
        let mut d = s.segs.clone();
        d[1].streams[CONTROL].extend([1, 0, 0]);
        let p = assemble(&s.old, &s.new, &d, codec).bytes();
        assert_eq!(kind(&s.old, &p), K::StreamTrailing, "control ({codec:?})");
        // An extra run pair, an extra zero run, an extra delta length, an extra delta byte.
        for (k, extra) in [
            (ZERO_RUNS, vec![5u8]),
            (DELTA_LENS, vec![1u8]),
            (DELTA_BYTES, vec![7u8]),
        ] {
            let mut d = s.segs.clone();
            d[0].streams[k].extend(&extra);
            let p = assemble(&s.old, &s.new, &d, codec).bytes();
            assert_eq!(
                kind(&s.old, &p),
                K::StreamTrailing,
                "stream {k} ({codec:?})"
            );
        }
        let mut d = s.segs.clone();
        d[0].streams[ZERO_RUNS].push(5);
        d[0].streams[DELTA_LENS].push(0);
        let p = assemble(&s.old, &s.new, &d, codec).bytes();
        assert_eq!(
            kind(&s.old, &p),
            K::StreamTrailing,
            "extra pair ({codec:?})"
        );
        // An extra literal byte.
        let mut d = s.segs.clone();
        d[1].streams[LITERALS].push(b'!');
        let p = assemble(&s.old, &s.new, &d, codec).bytes();
        assert_eq!(kind(&s.old, &p), K::StreamTrailing, "literals ({codec:?})");
    }
    // A zstd frame followed by garbage inside a buffered stream's stored bytes.
    for k in 0..4 {
        let (_, p) = sample_seg(Codec::Zstd, 0, |g| {
            let mut payload = zstd_frame(&s.segs[0].streams[k]);
            payload.extend([0xde, 0xad, 0xbe, 0xef]);
            g.streams[k] = Stream::zstd_payload(s.segs[0].streams[k].len() as u64, payload);
        });
        assert_eq!(kind(&s.old, &p), K::BadCompression, "stream {k}");
    }
}

/// A skippable zstd frame: magic 0x184D2A50, 4-byte length, content.
fn skippable_frame(content: &[u8]) -> Vec<u8> {
    let mut f = 0x184D_2A50u32.to_le_bytes().to_vec();
    f.extend((content.len() as u32).to_le_bytes());
    f.extend_from_slice(content);
    f
}

/// The format says codec 1 is one zstd frame holding exactly raw_len bytes: a
/// buffered stream stored as two frames, or as a frame plus a skippable frame,
/// is not that.
#[test]
fn buffered_stream_must_be_one_zstd_frame() {
    let s = sample();
    for k in 0..4 {
        let data = &s.segs[0].streams[k];
        let half = data.len() / 2;
        let two = [zstd_frame(&data[..half]), zstd_frame(&data[half..])].concat();
        let skip = [zstd_frame(data), skippable_frame(b"hidden")].concat();
        for payload in [two, skip] {
            let (_, p) = sample_seg(Codec::Zstd, 0, |g| {
                g.streams[k] = Stream::zstd_payload(data.len() as u64, payload);
            });
            assert_eq!(kind(&s.old, &p), K::BadCompression, "stream {k}");
        }
    }
}

/// The format says every stored byte of the literal stream must be consumed
/// (`StreamTrailing`): bytes after the frame inside its stored_len are not.
#[test]
fn literal_stream_bytes_after_the_frame() {
    let s = sample();
    let lit = &s.segs[1].streams[LITERALS];
    let tails = [
        vec![0u8],
        vec![0xde, 0xad, 0xbe, 0xef],
        skippable_frame(b"hidden"),
        zstd_frame(b"more"),
    ];
    for tail in tails {
        let (_, p) = sample_seg(Codec::Zstd, 1, |g| {
            let payload = [zstd_frame(lit), tail.clone()].concat();
            g.streams[LITERALS] = Stream::zstd_payload(lit.len() as u64, payload);
        });
        assert_eq!(kind(&s.old, &p), K::StreamTrailing, "tail {tail:x?}");
    }
}

/// Every single-bit flip (bit 0 and bit 7) of every byte of the crafted patches
/// is refused: the old file is random, so any change to what is copied from
/// where shows in the result's SHA-256 if not earlier.
///
/// Two exceptions, where the flipped patch may be accepted if it produces
/// exactly the new file (all appliers and the oracle agree): bit 0 of a model
/// stream's window_log (12 -> 13): for a stream shorter than 2^10 the model
/// uses a 2^10 history whatever the window, so the deltas decode the same;
/// and bit 0 of the transform byte (0 -> 1): literals holding no x86 branch
/// to convert read the same through transform 1.
#[test]
fn flipped_bytes_anywhere_are_refused() {
    let s = sample();
    for (codecs, p) in sample_patches(&s) {
        let bytes = p.bytes();
        let streams: Vec<_> = (0..2)
            .flat_map(|i| (0..5).map(move |k| (i, k)))
            .map(|(i, k)| (i, k, p.payload_range(i, k)))
            .collect();
        // Where flips may go unnoticed (see above).
        let mut harmless: Vec<(usize, u8)> = Vec::new();
        // The transform byte (offset 6), 0 -> 1: literals with no x86 branch
        // to convert read the same.
        harmless.push((6, 0x01));
        for i in 0..2 {
            let st = &p.segments[i].streams[DELTA_BYTES];
            if !is_model(st) {
                continue;
            }
            assert!(s.plain_olds[i].len() < 1 << 10);
            harmless.push((model_window_offset(&p, i), 0x01));
        }
        let mut accepted = 0;
        for at in 0..bytes.len() {
            for x in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[at] ^= x;
                let e = match apply_all(&s.old, &b) {
                    Ok(out) => {
                        assert!(
                            harmless.contains(&(at, x)),
                            "byte {at} ^ {x:#x} accepted ({codecs:?})"
                        );
                        assert!(out == s.new);
                        accepted += 1;
                        continue;
                    }
                    Err(e) => e,
                };
                let in_stream = streams.iter().find(|(_, _, r)| r.contains(&at));
                if let Some((i, k, _)) = in_stream {
                    // Inside a stream: a format error, or a wrong result.
                    assert!(
                        matches!(
                            e,
                            Error::Format(_)
                                | Error::HashMismatch {
                                    subject: Subject::Target,
                                    ..
                                }
                        ),
                        "segment {i} stream {k} byte {at} ^ {x:#x}: {e:?}"
                    );
                } else {
                    assert!(e.is_rejected_input(), "byte {at}: {e:?}");
                }
            }
        }
        assert!(accepted <= harmless.len());
        if accepted > 0 {
            println!("{codecs:?}: {accepted} harmless flips accepted");
        }
    }
}

/// True if the stream's descriptor names codec 3.
fn is_model(st: &Stream) -> bool {
    let n = varint(s_len(st) as u64).len();
    st.desc.len() > n && st.desc[n] == 3
}

/// Offset in the patch of segment `i`'s delta-stream window_log byte (the
/// last byte of its descriptor).
fn model_window_offset(p: &Patch, i: usize) -> usize {
    let g = &p.segments[i];
    let descs: usize = g.streams[..=DELTA_BYTES]
        .iter()
        .map(|st| st.desc.len())
        .sum();
    p.segment_offset(i) + g.seg_len.len() + descs - 1
}

#[test]
fn a_failing_writer_is_an_io_error() {
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let s = sample();
    let p = sample_patch(&s, [Codec::Zstd; 5]).bytes();
    let e = PatchReader::new(&p[..])
        .unwrap()
        .apply_to(&s.old[..], Broken)
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(!e.is_rejected_input());
}

#[test]
fn plan_helper_matches_the_sample() {
    // The builder's plan for one plain copy is what the format describes.
    let old = b"abcdef".to_vec();
    let new = b"abXdefQ".to_vec();
    let d = plan(&old, &new, &[vec![op(6, 1, 0)]]);
    assert_eq!(d[0].seg_len, 7);
    assert_eq!(d[0].streams[CONTROL], [6, 1, 0]);
    assert_eq!(d[0].streams[ZERO_RUNS], [2, 3]);
    assert_eq!(d[0].streams[DELTA_LENS], [1, 0]);
    assert_eq!(d[0].streams[DELTA_BYTES], [b'X'.wrapping_sub(b'c')]);
    assert_eq!(d[0].streams[LITERALS], b"Q");
    assert_eq!(
        apply_all(&old, &assemble(&old, &new, &d, Codec::Raw).bytes()).unwrap(),
        new
    );
}

#[test]
fn descriptor_varints_must_be_minimal() {
    let s = sample();
    for k in 0..5 {
        // raw_len with a redundant zero byte, zstd and raw.
        let data = &s.segs[0].streams[k];
        for codec in [Codec::Raw, Codec::Zstd] {
            let (_, p) = sample_seg(codec, 0, |g| {
                let st = &mut g.streams[k];
                let n = varint(data.len() as u64).len();
                st.desc[n - 1] |= 0x80;
                st.desc.insert(n, 0x00);
            });
            assert_eq!(
                kind(&s.old, &p),
                K::BadVarint,
                "stream {k} raw_len ({codec:?})"
            );
        }
        // zstd stored_len with a redundant zero byte.
        let (_, p) = sample_seg(Codec::Zstd, 0, |g| {
            let st = &mut g.streams[k];
            let last = st.desc.len() - 1;
            st.desc[last] |= 0x80;
            st.desc.push(0x00);
        });
        assert_eq!(kind(&s.old, &p), K::BadVarint, "stream {k} stored_len");
    }
    // A model descriptor's raw_len and stored_len, each with a redundant zero
    // byte (the window_log byte after stored_len is kept).
    for field in ["raw_len", "stored_len"] {
        let (s, p) = plain_seg(0, |o, d| {
            let mut st = Stream::model(o, d, 12);
            let n = varint(d.len() as u64).len();
            let end = match field {
                "raw_len" => n,
                _ => st.desc.len() - 1,
            };
            st.desc[end - 1] |= 0x80;
            st.desc.insert(end, 0x00);
            st
        });
        assert_eq!(kind(&s.old, &p), K::BadVarint, "model {field}");
    }
}

/// In plain layout the delta stream is decoded as the copies consume it: only
/// its stored bytes count against the segment buffer, not its decoded length.
#[test]
fn plain_model_stream_counts_its_stored_bytes_against_the_buffer_limit() {
    let s = sample();
    let p = plain_model_patch(&s, [Codec::Raw; 5]);
    let need = (0..2)
        .map(|i| {
            let g = &p.segments[i];
            (s.plain[i].streams[CONTROL].len() + g.streams[DELTA_BYTES].payload.len()) as u64
        })
        .max()
        .unwrap();
    let decoded = s.plain_olds.iter().map(Vec::len).max().unwrap() as u64;
    assert!(
        need < decoded,
        "control and stored deltas ({need} bytes) against {decoded} decoded deltas"
    );
    applies_at_exactly_the_buffer_limit(&s, &p.bytes(), need);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Hand-built patches in plain layout with model-coded deltas, from random
    /// operation plans (copies with changes, literals, seeks both ways, several
    /// segments, any window): every applier and the oracle give the new file.
    /// Then one byte anywhere is damaged: they accept or refuse it alike, and
    /// anything accepted is the new file.
    #[test]
    fn random_plain_model_patches_agree_with_the_oracle(
        old in prop::collection::vec(any::<u8>(), 1..2000),
        plan_seeds in prop::collection::vec(
            (any::<u16>(), 0u64..30, any::<u16>(), any::<u8>(), any::<bool>()),
            1..10,
        ),
        window_log in 10u8..=24,
        damage in (any::<usize>(), 1u8..=255),
    ) {
        let mut new = Vec::new();
        let mut segments: Vec<Vec<Op>> = vec![Vec::new()];
        let mut p = 0usize;
        for (copy_frac, lit, seek_frac, change, split) in plan_seeds {
            let copy = (old.len() - p) * usize::from(copy_frac) / 65535;
            if copy == 0 && lit == 0 {
                continue;
            }
            // Every `change % 8`-th copied byte changes (none when 0).
            let every = usize::from(change % 8);
            for (k, b) in old[p..p + copy].iter().enumerate() {
                let changed = every != 0 && k % every == 0;
                new.push(if changed { b.wrapping_add(change | 1) } else { *b });
            }
            new.extend(random_bytes(new.len() as u64, lit as usize));
            let target = old.len() * usize::from(seek_frac) / 65535;
            if split && !segments.last().unwrap().is_empty() {
                segments.push(Vec::new());
            }
            let seek = target as i64 - (p + copy) as i64;
            segments.last_mut().unwrap().push(op(copy as u64, lit, seek));
            p = target;
        }
        segments.retain(|s| !s.is_empty());
        let olds = copied_olds(&old, &segments);
        let segs = to_plain(&old, &new, &segments)
            .iter()
            .zip(&olds)
            .map(|(d, o)| {
                let mut g = d.encode([Codec::Raw; 5]);
                g.streams[DELTA_BYTES] = Stream::model(o, &d.streams[DELTA_BYTES], window_log);
                g
            })
            .collect();
        let patch = Patch {
            header: Header::for_files(&old, &new),
            segments: segs,
            trailer: Vec::new(),
        }
        .bytes();
        prop_assert_eq!(naive::apply(&old, &patch).unwrap(), new.clone());
        prop_assert!(apply_all(&old, &patch).unwrap() == new);
        let mut bad = patch.clone();
        let at = damage.0 % bad.len();
        bad[at] ^= damage.1;
        if let Ok(out) = apply_all(&old, &bad) {
            prop_assert!(out == new, "byte {} ^ {:#x} gave another file", at, damage.1);
        }
    }
}

/// The patch applies with `max_segment_buffer(need)` and is refused one byte
/// below, with a `LimitExceeded` that names both figures.
fn applies_at_exactly_the_buffer_limit(s: &Sample, bytes: &[u8], need: u64) {
    let ok =
        deltaswap::apply_with_limits(&s.old, bytes, Limits::default().max_segment_buffer(need));
    assert_eq!(ok.unwrap(), s.new);
    let e = deltaswap::apply_with_limits(
        &s.old,
        bytes,
        Limits::default().max_segment_buffer(need - 1),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::LimitExceeded { actual, limit, .. } if actual == need && limit == need - 1),
        "{e:?}"
    );
}

/// The largest reference map the format allows (1 MiB decoded: 2^19 breaks
/// of two bytes) is read and applied; one byte more is `LimitExceeded`
/// before anything is allocated for it.
#[test]
fn reference_map_at_its_limit() {
    let old = random_bytes(91, (1 << 19) + 1000);
    // One byte longer, so that the patch has segments (not the edit layout).
    let mut new = old.clone();
    new.push(7);
    let patch = deltaswap::DiffOptions::new()
        .level(3)
        .threads(1)
        .diff(&old, &new)
        .unwrap();
    let h = naive::header(&patch).unwrap();
    assert!(!h.refs && !h.pointers);
    let header_len = 8 + varint(old.len() as u64).len() * 2 + 64;
    let with_map = |breaks: usize| {
        // Breaks at 0, 1, 2, ..., all with shift 0: every prediction is the
        // old bytes, so the patch still applies.
        let mut raw = Vec::with_capacity(2 * breaks);
        for k in 0..breaks {
            raw.extend(varint(u64::from(k > 0)));
            raw.push(0);
        }
        let mut p = patch[..header_len].to_vec();
        p[6] = 2;
        p.extend(varint(raw.len() as u64));
        p.push(0);
        p.extend(raw);
        p.extend_from_slice(&patch[header_len..]);
        p
    };
    let full = with_map(1 << 19);
    assert_eq!(apply_all(&old, &full).unwrap(), new);
    let info = deltaswap::inspect(&full[..]).unwrap();
    assert_eq!(info.reference_map(), Some((1 << 19, 1 << 20)));
    let over = with_map((1 << 19) + 1);
    assert!(matches!(
        reject(&old, &over),
        Error::LimitExceeded {
            what: "reference map",
            actual,
            limit: 1_048_576,
        } if actual == (1 << 20) + 2
    ));
}

// ---- codec 4: LZMA literals ---------------------------------------------------

/// The literals' properties the writer uses: lc = 1, lp = 2, pb = 2.
const LZMA_LC_LP_PB: (u32, u32, u32) = (1, 2, 2);

/// The sample with segment `i`'s literal stream replaced by `f(literals)`,
/// the other streams zstd.
fn lzma_seg(i: usize, f: impl FnOnce(&[u8]) -> Stream) -> (Sample, Vec<u8>) {
    let (s, p) = lzma_patch(i, f);
    (s, p.bytes())
}

/// As [`lzma_seg`], the patch not yet serialized.
fn lzma_patch(i: usize, f: impl FnOnce(&[u8]) -> Stream) -> (Sample, Patch) {
    let s = sample();
    let mut p = sample_patch(&s, [Codec::Zstd; 5]);
    p.segments[i].streams[LITERALS] = f(&s.segs[i].streams[LITERALS]);
    (s, p)
}

/// [`LZMA_LC_LP_PB`] as the descriptor's properties byte.
const LZMA_PROPS_BYTE: u8 = (2 * 5 + 2) * 9 + 1;

#[test]
fn lzma_literals_apply_in_every_segment() {
    for i in 0..2 {
        let (s, p) = lzma_seg(i, |l| Stream::lzma(l, LZMA_LC_LP_PB, 12));
        assert_eq!(apply_all(&s.old, &p).expect("valid LZMA literals"), s.new);
        let (s, p) = lzma_seg(i, |l| Stream::lzma(l, (0, 0, 0), 12));
        assert_eq!(apply_all(&s.old, &p).expect("lc = lp = pb = 0"), s.new);
        let (s, p) = lzma_seg(i, |l| Stream::lzma(l, (4, 0, 4), 12));
        assert_eq!(apply_all(&s.old, &p).expect("lc = 4, pb = 4"), s.new);
    }
}

#[test]
fn lzma_outside_the_literal_stream_is_an_unknown_codec() {
    for i in 0..2 {
        for k in 0..LITERALS {
            let (s, p) = sample_seg(Codec::Zstd, i, |g| {
                let n = s_len(&g.streams[k]).max(1);
                g.streams[k] = Stream::lzma(&vec![7u8; n], LZMA_LC_LP_PB, 12);
            });
            assert_eq!(
                kind(&s.old, &p),
                K::UnknownCodec(4),
                "segment {i} stream {k}"
            );
        }
    }
}

#[test]
fn lzma_descriptor_faults() {
    let with = |props: u8, dict_log: u8| {
        lzma_seg(0, |l| {
            let good = Stream::lzma(l, (0, 0, 0), 12);
            Stream::lzma_payload(l.len() as u64, good.payload, props, dict_log)
        })
    };
    // Properties outside lc + lp <= 4, pb <= 4 (and bytes no LZMA encoder
    // writes), a dictionary below 2^12, above 2^30, or above the smallest
    // power of two (at least 2^12) that holds the stream.
    for (props, dict_log) in [
        (9 + 4, 12),     // lc 4, lp 1
        (2 * 9 + 3, 12), // lc 3, lp 2
        (225, 12),       // pb 5
        (255, 12),
        (0, 11),
        (0, 13),
        (0, 31),
        (0, 0),
    ] {
        let (s, p) = with(props, dict_log);
        assert_eq!(
            kind(&s.old, &p),
            K::OutOfRange,
            "props {props} dict_log {dict_log}"
        );
    }
    // Valid properties that are not the ones the payload was coded with
    // (pb = 1): refused by the decoder or by the hash.
    let (s, p) = with(45, 12);
    reject(&s.old, &p);
    // stored_len 0.
    let (s, p) = lzma_seg(0, |l| {
        Stream::lzma_payload(l.len() as u64, Vec::new(), 0, 12)
    });
    assert_eq!(kind(&s.old, &p), K::OutOfRange);
}

#[test]
fn lzma_dictionary_over_the_limit() {
    let (s, p) = lzma_seg(0, |l| Stream::lzma(l, LZMA_LC_LP_PB, 12));
    let limits = Limits::default().max_window_log(11);
    let err = deltaswap::apply_with_limits(&s.old, &p, limits).expect_err("over the limit");
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
}

#[test]
fn lzma_payload_damage_is_refused() {
    for i in 0..2 {
        let (s, good) = lzma_patch(i, |l| Stream::lzma(l, LZMA_LC_LP_PB, 12));
        let lits = s.segs[i].streams[LITERALS].clone();
        let payload = good.segments[i].streams[LITERALS].payload.clone();
        let range = good.payload_range(i, LITERALS);
        let good = good.bytes();
        // One stored byte short, one byte of garbage after the stream.
        let (s, p) = lzma_seg(i, |l| {
            let short = payload[..payload.len() - 1].to_vec();
            Stream::lzma_payload(l.len() as u64, short, LZMA_PROPS_BYTE, 12)
        });
        reject(&s.old, &p);
        let (s, p) = lzma_seg(i, |l| {
            let mut long = payload.clone();
            long.push(0);
            Stream::lzma_payload(l.len() as u64, long, LZMA_PROPS_BYTE, 12)
        });
        assert_eq!(kind(&s.old, &p), K::StreamTrailing);
        // A first byte other than zero cannot start a stream.
        let (s, p) = lzma_seg(i, |l| {
            let mut bad = payload.clone();
            bad[0] = 1;
            Stream::lzma_payload(l.len() as u64, bad, LZMA_PROPS_BYTE, 12)
        });
        assert_eq!(kind(&s.old, &p), K::BadCompression);
        // A raw_len one more or one less than the stream decodes to.
        for raw_len in [lits.len() as u64 - 1, lits.len() as u64 + 1] {
            let (s, p) = lzma_seg(i, |_| {
                Stream::lzma_payload(raw_len, payload.clone(), LZMA_PROPS_BYTE, 12)
            });
            reject(&s.old, &p);
        }
        // Every bit of every stored byte flipped, and every truncation of the
        // whole patch: refused, never accepted, never a panic.
        // The range coder's last bytes carry slack: a flip there can decode
        // to the same bytes, which the new file's hash then accepts. Anywhere
        // else a flip must be refused.
        let end = range.end;
        for at in range {
            for bit in 0..8 {
                let mut p = good.clone();
                p[at] ^= 1 << bit;
                match apply_all(&s.old, &p) {
                    Err(_) => {}
                    Ok(out) => {
                        assert_eq!(out, s.new, "byte {at} bit {bit}");
                        assert!(end - at <= 4, "byte {at} of ..{end}, bit {bit}, accepted");
                    }
                }
            }
        }
        for len in 0..good.len() {
            reject(&s.old, &good[..len]);
        }
    }
}

// ---- the edit layout (header flag bit 0) --------------------------------------

/// A patch in the edit layout: the header with flag bit 0 and no new_len,
/// then `body` (the edit count and the edits).
fn edit_patch(old: &[u8], new: &[u8], body: &[u8]) -> Vec<u8> {
    let mut h = Header::for_files(old, new);
    h.flags = 1;
    h.new_len.clear();
    [&h.bytes()[..], body].concat()
}

/// One edit: gap, tag (length and kind), and the source of a hex edit
/// (`(back, from)`: from byte `from` of the literal edit `back` before the
/// last) or the bytes of a literal one.
fn edit(gap: u64, len: u64, hex: Option<(u64, u64)>, bytes: &[u8]) -> Vec<u8> {
    let mut e = varint(gap);
    e.extend(varint(len << 1 | u64::from(hex.is_some())));
    if let Some((back, from)) = hex {
        e.extend(varint(from << 2 | back));
    }
    e.extend_from_slice(bytes);
    e
}

/// An old file of 10,000 bytes and, from it, a new one with a literal edit
/// of 20 bytes at 100, one of 2 bytes at 200, the hex digits of bytes 4-13
/// of the first at 5,000 (a hex edit), and a literal edit of the last byte;
/// the body that says so.
fn edit_sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let old = random_bytes(77, 10_000);
    let mut new = old.clone();
    let id = random_bytes(78, 20);
    new[100..120].copy_from_slice(&id);
    new[200] ^= 1;
    new[201] ^= 1;
    let digits = hex_digits(&id[4..14]);
    new[5000..5020].copy_from_slice(&digits);
    new[9999] ^= 0xff;
    let body = [
        varint(4),
        edit(100, 20, None, &id),
        edit(80, 2, None, &new[200..202]),
        edit(5000 - 202, 20, Some((1, 4)), &[]),
        edit(9999 - 5020, 1, None, &[new[9999]]),
    ]
    .concat();
    (old, new, body)
}

#[test]
fn edit_layout_applies_and_every_truncation_is_refused() {
    let (old, new, body) = edit_sample();
    let patch = edit_patch(&old, &new, &body);
    assert_eq!(apply_all(&old, &patch).unwrap(), new);
    let info = deltaswap::inspect(&patch[..]).unwrap();
    assert_eq!(info.edits(), Some(4));
    assert_eq!(info.segments(), 0);
    assert_eq!(info.header().new_len(), 10_000);
    assert!(naive::header(&patch).unwrap().edits);
    // No edits: the old file itself.
    assert_eq!(
        apply_all(&old, &edit_patch(&old, &old, &varint(0))).unwrap(),
        old
    );
    for len in 0..patch.len() {
        let cut = &patch[..len];
        let e = reject(&old, cut);
        assert_eq!(e.format_kind(), Some(K::Truncated), "prefix {len}: {e:?}");
        let ie = deltaswap::inspect(cut).unwrap_err();
        assert_eq!(
            ie.format_kind(),
            Some(K::Truncated),
            "inspect, prefix {len}"
        );
    }
    // A byte after the last edit, or a count one short.
    assert_eq!(kind(&old, &[&patch[..], &[0]].concat()), K::TrailingBytes);
    let mut short = body.clone();
    short[0] = 3;
    assert_eq!(
        kind(&old, &edit_patch(&old, &new, &short)),
        K::TrailingBytes
    );
    // A wrong byte anywhere in the edits' bytes is the new file's mismatch.
    let mut wrong = body.clone();
    wrong[5] ^= 1;
    assert!(matches!(
        reject(&old, &edit_patch(&old, &new, &wrong)),
        Error::HashMismatch {
            subject: Subject::Target,
            ..
        }
    ));
}

#[test]
fn edit_layout_faults() {
    let (old, new, _) = edit_sample();
    let with = |edits: &[Vec<u8>]| {
        let body = [&varint(edits.len() as u64)[..], &edits.concat()].concat();
        kind(&old, &edit_patch(&old, &new, &body))
    };
    let lit = edit(100, 20, None, &new[100..120]);
    // An edit of no bytes, literal or hex.
    assert_eq!(with(&[edit(3, 0, None, &[])]), K::EmptyOperation);
    assert_eq!(
        with(&[lit.clone(), edit(3, 0, Some((0, 0)), &[])]),
        K::EmptyOperation
    );
    // A literal edit over 4,096 bytes.
    assert_eq!(with(&[edit(0, 4097, None, &old[..4097])]), K::OutOfRange);
    // Hex edits: an odd number of digits, a source past its literal edit,
    // a literal edit further back than there are, or none before it.
    for (len, source) in [
        (3, (0, 0)),
        (4, (0, 19)),
        (42, (0, 0)),
        (2, (0, 1 << 60)),
        (2, (1, 0)),
    ] {
        assert_eq!(
            with(&[lit.clone(), edit(1, len, Some(source), &[])]),
            K::OutOfRange,
            "{len} digits from {source:?}"
        );
    }
    assert_eq!(with(&[edit(1, 2, Some((0, 0)), &[])]), K::OutOfRange);
    // After five literal edits, the one three before the last is the
    // second: the ring of four holds it, and every applier agrees.
    let mut rebuilt = old.clone();
    let mut edits = Vec::new();
    for k in 0..5usize {
        let bytes = random_bytes(200 + k as u64, 20);
        rebuilt[100 + 30 * k..120 + 30 * k].copy_from_slice(&bytes);
        edits.push(edit(if k == 0 { 100 } else { 10 }, 20, None, &bytes));
    }
    let digits = hex_digits(&rebuilt[130..140]);
    rebuilt[5000..5020].copy_from_slice(&digits);
    edits.push(edit(5000 - 240, 20, Some((3, 0)), &[]));
    let body = [&varint(6)[..], &edits.concat()].concat();
    assert_eq!(
        apply_all(&old, &edit_patch(&old, &rebuilt, &body)).unwrap(),
        rebuilt
    );
    // Past the end of the file, or past 2^64.
    assert_eq!(with(&[edit(9_999, 2, None, &[1, 2])]), K::OutputOverrun);
    assert_eq!(with(&[edit(10_000, 1, None, &[1])]), K::OutputOverrun);
    // Which sum overflows: the gap's, or (the gap reaching 2^64 - 1
    // exactly) the edit's length.
    for (gap, what) in [(u64::MAX, "edit gap"), (u64::MAX - 120, "edit length")] {
        let body = [&varint(2)[..], &lit, &edit(gap, 1, None, &[1])].concat();
        let e = reject(&old, &edit_patch(&old, &new, &body));
        let Error::Format(f) = &e else {
            panic!("{e:?}")
        };
        assert_eq!((f.kind(), f.what()), (K::Overflow, what));
    }
    // Flag bit 0 excludes every transform.
    for t in [1u8, 2, 4, 16] {
        let mut h = Header::for_files(&old, &new);
        h.flags = 1;
        h.new_len.clear();
        h.transform = t;
        let p = [&h.bytes()[..], &varint(0)[..]].concat();
        assert_eq!(kind(&old, &p), K::UnknownTransform(t));
    }
    // A wrong old file: refused before anything is written.
    let (_, _, body) = edit_sample();
    let patch = edit_patch(&old, &new, &body);
    let mut other = old.clone();
    other[0] ^= 1;
    let (r, written) = stream_apply(&other, &patch, false);
    assert!(matches!(
        r,
        Err(Error::HashMismatch {
            subject: Subject::Source,
            ..
        })
    ));
    assert!(written.is_empty());
}
