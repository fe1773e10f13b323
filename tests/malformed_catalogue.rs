//! The malformed-input catalogue of RELIABILITY.md §5.2, classes 1–17 (the
//! single-patch classes) and 20 (the edit layout, added with it), as
//! committed vector files.
//!
//! `tests/fixtures/malformed/<nn>-<class>/<vector>.patch`, with `<vector>.old`
//! when the vector needs another old file than `tests/fixtures/malformed/old.bin`,
//! and `tests/fixtures/malformed/manifest.tsv` listing for each vector the limits
//! it is applied with and the exact error it must give
//! (`Format:<FormatErrorKind>`, `LimitExceeded:<what>`,
//! `SizeMismatch:<subject>` or `HashMismatch:<subject>`).
//!
//! Every vector is applied three ways, each of which must give that error:
//! `apply_with_limits` on slices, `PatchReader` streaming from a reader that
//! hands out a few bytes per call into a writer, and (with the same limits)
//! `patch_in_place` on a temporary copy of the old file, which must leave the
//! file unchanged and nothing else in its directory.
//!
//! The vectors are written by [`catalogue`] below, not by the crate's encoder:
//! `cargo test --test malformed_catalogue -- --ignored write_catalogue`
//! regenerates the files, and `committed_files_match_the_generator` checks
//! that they are up to date. Classes 18 (signature / manifest) and 19 (bundle
//! paths) concern bundles: `tests/malformed_bundles.rs`.

#[path = "codec/builder.rs"]
#[allow(dead_code)]
mod builder;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use builder::{
    random_bytes, sample, varint, zigzag, zstd_frame, Codec, Header, Patch, Segment, SegmentData,
    Stream, CONTROL, DELTA_BYTES, DELTA_LENS, LITERALS, ZERO_RUNS,
};
use deltaswap::{Error, Limits, PatchOptions, PatchReader};

/// One catalogue vector.
struct Vector {
    class: &'static str,
    name: &'static str,
    patch: Vec<u8>,
    /// Another old file than the default one.
    old: Option<Vec<u8>>,
    /// `default`, or `field=value` for one non-default limit.
    limits: &'static str,
    expect: String,
}

const CLASSES: [&str; 18] = [
    "01-magic-version",
    "02-truncation",
    "03-negative-header-sizes",
    "04-negative-op-lengths",
    "05-lengths-above-limits",
    "06-position-overflow",
    "07-stream-length-sum-overflow",
    "08-old-offset-out-of-range",
    "09-allocation-from-untrusted-size",
    "10-declared-stream-lengths",
    "11-decompression-bomb",
    "12-malformed-compressed-stream",
    "13-premature-end-of-stream",
    "14-zero-progress",
    "15-trailing-garbage",
    "16-wrong-base",
    "17-result-mismatch",
    "20-edit-layout",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed")
}

/// The default old file: the codec tests' 400-byte sample.
fn default_old() -> Vec<u8> {
    sample().old
}

fn fmt(kind: &str) -> String {
    format!("Format:{kind}")
}

/// The name the manifest gives an error.
fn describe(e: &Error) -> String {
    match e {
        Error::Format(f) => format!("Format:{:?}", f.kind()),
        Error::LimitExceeded { what, .. } => format!("LimitExceeded:{what}"),
        Error::SizeMismatch { subject, .. } => format!("SizeMismatch:{subject}"),
        Error::HashMismatch { subject, .. } => format!("HashMismatch:{subject}"),
        other => format!("Other:{other:?}"),
    }
}

fn parse_limits(s: &str) -> Limits {
    let l = Limits::default();
    if s == "default" {
        return l;
    }
    let (k, v) = s.split_once('=').expect("limits field=value");
    let v: u64 = v.parse().expect("limit value");
    match k {
        "max_output_len" => l.max_output_len(v),
        "max_segment_buffer" => l.max_segment_buffer(v),
        "max_window_log" => l.max_window_log(v as u32),
        "max_model_len" => l.max_model_len(v),
        _ => panic!("unknown limit {k}"),
    }
}

// ---- building blocks ------------------------------------------------------------

/// The sample patch (two segments, 400-byte old file), every stream in `codec`.
fn sample_patch(codec: Codec) -> Patch {
    let s = sample();
    Patch {
        header: Header::for_files(&s.old, &s.new),
        segments: s.segs.iter().map(|d| d.encode([codec; 5])).collect(),
        trailer: Vec::new(),
    }
}

/// A segment from control triples, run pairs, delta bytes and literals, with an
/// explicit declared length.
fn seg_data(
    seg_len: u64,
    ctrl: &[(u64, u64, i64)],
    runs: &[(u64, u64)],
    deltas: &[u8],
    lits: &[u8],
) -> SegmentData {
    let mut d = SegmentData {
        seg_len,
        ..SegmentData::default()
    };
    for &(c, l, s) in ctrl {
        d.streams[CONTROL].extend(varint(c));
        d.streams[CONTROL].extend(varint(l));
        d.streams[CONTROL].extend(varint(zigzag(s)));
    }
    for &(z, c) in runs {
        d.streams[ZERO_RUNS].extend(varint(z));
        d.streams[DELTA_LENS].extend(varint(c));
    }
    d.streams[DELTA_BYTES] = deltas.to_vec();
    d.streams[LITERALS] = lits.to_vec();
    d
}

/// A segment whose length is the sum of its operations.
fn seg(ctrl: &[(u64, u64, i64)], runs: &[(u64, u64)], deltas: &[u8], lits: &[u8]) -> SegmentData {
    let len = ctrl
        .iter()
        .fold(0u64, |a, &(c, l, _)| a.wrapping_add(c).wrapping_add(l));
    seg_data(len, ctrl, runs, deltas, lits)
}

/// A patch for the default old file: header new_len = `new_len` (or the sum of
/// the segment lengths), new_sha256 of `new`, raw streams.
fn patch_of(segs: &[SegmentData], new_len: Option<u64>, new: &[u8]) -> Vec<u8> {
    let old = default_old();
    let mut h = Header::for_files(&old, new);
    let total = segs.iter().fold(0u64, |a, s| a.wrapping_add(s.seg_len));
    h.new_len = varint(new_len.unwrap_or(total));
    Patch {
        header: h,
        segments: segs.iter().map(|s| s.encode([Codec::Raw; 5])).collect(),
        trailer: Vec::new(),
    }
    .bytes()
}

/// A patch with explicitly encoded segments.
fn patch_with(segments: Vec<Segment>, new_len: u64) -> Vec<u8> {
    let old = default_old();
    let mut h = Header::for_files(&old, b"");
    h.new_len = varint(new_len);
    Patch {
        header: h,
        segments,
        trailer: Vec::new(),
    }
    .bytes()
}

/// A segment with explicit streams.
fn segment(seg_len: u64, streams: [Stream; 5]) -> Segment {
    Segment {
        seg_len: varint(seg_len),
        streams,
    }
}

fn raw_ctrl(ops: &[(u64, u64, i64)]) -> Vec<u8> {
    seg(ops, &[], &[], &[]).streams[CONTROL].clone()
}

fn absent() -> Stream {
    Stream::absent()
}

/// `Header` edits on the sample patch.
fn sample_with_header(f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut p = sample_patch(Codec::Zstd);
    f(&mut p.header);
    p.bytes()
}

/// A zstd frame of `data` compressed with an explicit window log.
fn wide_window_frame(data: &[u8], window_log: u32) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(1).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log))
        .unwrap();
    c.compress(data).unwrap()
}

/// A zstd frame whose content size is in its header.
fn frame(data: &[u8]) -> Vec<u8> {
    zstd_frame(data)
}

// ---- the catalogue ---------------------------------------------------------------

#[allow(clippy::vec_init_then_push)]
fn catalogue() -> Vec<Vector> {
    let mut v: Vec<Vector> = Vec::new();
    let mut add = |class: &'static str, name: &'static str, patch: Vec<u8>, expect: String| {
        v.push(Vector {
            class,
            name,
            patch,
            old: None,
            limits: "default",
            expect,
        })
    };
    let s = sample();
    let old = default_old();

    // 1. Bad magic / unknown version (and the other identity bytes of the header).
    let c = CLASSES[0];
    add(
        c,
        "wrong-magic",
        sample_with_header(|h| h.magic = b"DSWQ".to_vec()),
        fmt("BadMagic"),
    );
    let mut bsdiff = b"BSDIFF40".to_vec();
    bsdiff.extend_from_slice(&[0u8; 24]);
    add(c, "bsdiff-magic", bsdiff, fmt("BadMagic"));
    for (name, ver) in [("version-0", 0u8), ("version-2", 2), ("version-255", 255)] {
        add(
            c,
            name,
            sample_with_header(|h| h.version = ver),
            fmt(&format!(
                "UnsupportedVersion {{ found: {ver}, supported: 1 }}"
            )),
        );
    }
    add(
        c,
        "unknown-flag",
        sample_with_header(|h| h.flags = 0x80),
        fmt("UnknownFlags(128)"),
    );
    add(
        c,
        "unknown-transform",
        sample_with_header(|h| h.transform = 0x20),
        fmt("UnknownTransform(32)"),
    );
    add(
        c,
        "reserved-byte",
        sample_with_header(|h| h.reserved = 1),
        fmt("Reserved"),
    );

    // 2. Truncation: prefixes of the raw sample patch.
    let c = CLASSES[1];
    let p = sample_patch(Codec::Raw);
    let full = p.bytes();
    let header_len = p.header.bytes().len();
    let ctrl0 = p.payload_range(0, CONTROL);
    let lit0 = p.payload_range(0, LITERALS);
    let cut = |n: usize| full[..n].to_vec();
    add(c, "empty", cut(0), fmt("Truncated"));
    add(c, "in-magic", cut(3), fmt("Truncated"));
    add(c, "in-old-len-varint", cut(9), fmt("Truncated"));
    add(c, "in-new-sha256", cut(header_len - 1), fmt("Truncated"));
    add(c, "header-only", cut(header_len), fmt("Truncated"));
    add(
        c,
        "in-segment-descriptors",
        cut(header_len + 3),
        fmt("Truncated"),
    );
    add(
        c,
        "in-control-payload",
        cut(ctrl0.start + 2),
        fmt("Truncated"),
    );
    add(
        c,
        "in-literal-payload",
        cut(lit0.start + 4),
        fmt("Truncated"),
    );
    add(
        c,
        "last-byte-missing",
        cut(full.len() - 1),
        fmt("Truncated"),
    );

    // 3. "Negative" header sizes: values with the sign bit set, and wider ones.
    let c = CLASSES[2];
    add(
        c,
        "new-len-minus-1",
        sample_with_header(|h| h.new_len = varint(u64::MAX)),
        "LimitExceeded:target length".into(),
    );
    add(
        c,
        "new-len-2pow63",
        sample_with_header(|h| h.new_len = varint(1 << 63)),
        "LimitExceeded:target length".into(),
    );
    add(
        c,
        "old-len-minus-1",
        sample_with_header(|h| h.old_len = varint(u64::MAX)),
        "SizeMismatch:source".into(),
    );
    add(
        c,
        "old-len-2pow63",
        sample_with_header(|h| h.old_len = varint(1 << 63)),
        "SizeMismatch:source".into(),
    );
    let mut wide = vec![0xffu8; 9];
    wide.push(0x02); // bit 64 set: a sign extension past 64 bits
    add(
        c,
        "old-len-65-bits",
        sample_with_header(|h| h.old_len = wide),
        fmt("BadVarint"),
    );
    add(
        c,
        "new-len-overlong",
        sample_with_header(|h| h.new_len = vec![0x80 | 0x7f, 0x81, 0x00]),
        fmt("BadVarint"),
    );

    // 4. "Negative" copy / literal / run lengths (two's complement values).
    let c = CLASSES[3];
    let ten: Vec<u8> = (1..=10).collect();
    add(
        c,
        "copy-minus-1",
        patch_of(
            &[seg_data(10, &[(u64::MAX, 0, 0)], &[], &[], &[])],
            None,
            b"",
        ),
        fmt("OutputOverrun"),
    );
    add(
        c,
        "literal-minus-1",
        patch_of(
            &[seg_data(10, &[(0, u64::MAX, 0)], &[], &[], &ten)],
            None,
            b"",
        ),
        fmt("OutputOverrun"),
    );
    add(
        c,
        "copy-minus-1-plus-literal",
        patch_of(
            &[seg_data(10, &[(u64::MAX, 1, 0)], &[], &[], &ten)],
            None,
            b"",
        ),
        fmt("Overflow"),
    );
    add(
        c,
        "zero-run-minus-1",
        patch_of(&[seg(&[(10, 0, 0)], &[(u64::MAX, 0)], &[], &[])], None, b""),
        fmt("StreamTrailing"),
    );
    add(
        c,
        "delta-length-minus-1",
        patch_of(
            &[seg(&[(10, 0, 0)], &[(0, u64::MAX)], &ten, &[])],
            None,
            b"",
        ),
        fmt("StreamTrailing"),
    );

    // 5. Lengths above limits: the remaining output, INT_MAX, the caller's limits.
    let c = CLASSES[4];
    add(
        c,
        "segment-longer-than-new-len",
        patch_of(&[seg(&[(20, 0, 0)], &[(20, 0)], &[], &[])], Some(10), b""),
        fmt("OutputOverrun"),
    );
    add(
        c,
        "copy-past-segment",
        patch_of(
            &[seg_data(20, &[(30, 0, 0)], &[(30, 0)], &[], &[])],
            None,
            b"",
        ),
        fmt("OutputOverrun"),
    );
    add(
        c,
        "literal-over-int-max",
        patch_of(
            &[seg_data(20, &[(0, 1 << 31, 0)], &[], &[], &ten)],
            None,
            b"",
        ),
        fmt("OutputOverrun"),
    );
    add(
        c,
        "literal-stream-longer-than-segment",
        patch_of(&[seg_data(5, &[(0, 5, 0)], &[], &[], &ten)], None, b""),
        fmt("OutOfRange"),
    );
    v.push(Vector {
        class: c,
        name: "new-len-over-caller-limit",
        patch: sample_patch(Codec::Zstd).bytes(),
        old: None,
        limits: "max_output_len=244",
        expect: "LimitExceeded:target length".into(),
    });
    v.push(Vector {
        class: c,
        name: "segment-buffer-over-caller-limit",
        patch: sample_patch(Codec::Raw).bytes(),
        old: None,
        limits: "max_segment_buffer=8",
        expect: "LimitExceeded:segment control and delta streams".into(),
    });
    // Both segments in plain layout with model-coded deltas, against a model
    // budget that the first segment fits exactly: the second is refused.
    let model_patch = {
        let s = sample();
        let mut p = sample_patch(Codec::Raw);
        for (i, seg) in p.segments.iter_mut().enumerate() {
            *seg = s.plain[i].encode([Codec::Raw; 5]);
            seg.streams[DELTA_BYTES] =
                Stream::model(&s.plain_olds[i], &s.plain[i].streams[DELTA_BYTES], 12);
        }
        assert_eq!(
            s.plain[0].streams[DELTA_BYTES].len(),
            170,
            "the limit below"
        );
        p.bytes()
    };
    v.push(Vector {
        class: c,
        name: "model-deltas-over-caller-limit",
        patch: model_patch,
        old: None,
        limits: "max_model_len=170",
        expect: "LimitExceeded:delta-model deltas".into(),
    });
    // A 64 KiB literal frame (window 64 KiB) against a caller limit of 2^10.
    let lits64k = random_bytes(15, 64 << 10);
    v.push(Vector {
        class: c,
        name: "literal-window-over-caller-limit",
        patch: patch_with(
            vec![segment(
                64 << 10,
                [
                    Stream::raw(&raw_ctrl(&[(0, 64 << 10, 0)])),
                    absent(),
                    absent(),
                    absent(),
                    Stream::zstd(&lits64k),
                ],
            )],
            64 << 10,
        ),
        old: None,
        limits: "max_window_log=10",
        expect: fmt("BadCompression"),
    });
    let mut add = |class: &'static str, name: &'static str, patch: Vec<u8>, expect: String| {
        v.push(Vector {
            class,
            name,
            patch,
            old: None,
            limits: "default",
            expect,
        })
    };

    // 6. Position and length sums that overflow.
    let c = CLASSES[5];
    add(
        c,
        "copy-plus-literal-wraps",
        patch_of(
            &[seg_data(10, &[(u64::MAX - 5, 10, 0)], &[], &[], &ten)],
            None,
            b"",
        ),
        fmt("Overflow"),
    );
    add(
        c,
        "copy-plus-literal-2pow63-each",
        patch_of(
            &[seg_data(10, &[(1 << 63, 1 << 63, 0)], &[], &[], &[])],
            None,
            b"",
        ),
        fmt("Overflow"),
    );
    add(
        c,
        "seek-i64-max",
        patch_of(
            &[seg(&[(10, 0, i64::MAX)], &[(10, 0)], &[], &[])],
            None,
            b"",
        ),
        fmt("SourceOutOfBounds"),
    );
    add(
        c,
        "seek-i64-min",
        patch_of(
            &[seg(&[(10, 0, i64::MIN)], &[(10, 0)], &[], &[])],
            None,
            b"",
        ),
        fmt("SourceOutOfBounds"),
    );
    add(
        c,
        "segment-lengths-wrap",
        patch_of(
            &[
                seg(&[(10, 0, 0)], &[(10, 0)], &[], &[]),
                seg_data(u64::MAX - 5, &[(10, 0, 0)], &[(10, 0)], &[], &[]),
            ],
            Some(20),
            b"",
        ),
        fmt("OutputOverrun"),
    );

    // 7. Sums of declared stream lengths that overflow (the header-offset-sum class).
    let c = CLASSES[6];
    add(
        c,
        "control-raw-plus-stored-wraps",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::custom(1 << 63, 1, Some(1 << 63), &[]),
                    absent(),
                    absent(),
                    absent(),
                    absent(),
                ],
            )],
            10,
        ),
        fmt("Overflow"),
    );
    let big = || Stream::custom(1 << 62, 0, None, &[]);
    add(
        c,
        "four-streams-sum-2pow64",
        patch_with(
            vec![segment(10, [big(), big(), big(), big(), absent()])],
            10,
        ),
        fmt("Overflow"),
    );
    add(
        c,
        "max-plus-one",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::custom(u64::MAX, 0, None, &[]),
                    Stream::custom(1, 0, None, &[]),
                    absent(),
                    absent(),
                    absent(),
                ],
            )],
            10,
        ),
        fmt("Overflow"),
    );
    add(
        c,
        "literal-stored-len-max",
        patch_with(
            vec![segment(
                5,
                [
                    Stream::raw(&raw_ctrl(&[(0, 5, 0)])),
                    absent(),
                    absent(),
                    absent(),
                    Stream::custom(5, 1, Some(u64::MAX), &frame(b"12345")),
                ],
            )],
            5,
        ),
        fmt("StreamTrailing"),
    );

    // 8. Old-file offsets out of range.
    let c = CLASSES[7];
    add(
        c,
        "seek-before-start",
        patch_of(&[seg(&[(0, 1, -1)], &[], &[], b"x")], None, b""),
        fmt("SourceOutOfBounds"),
    );
    add(
        c,
        "copy-past-end",
        patch_of(&[seg(&[(401, 0, 0)], &[(401, 0)], &[], &[])], None, b""),
        fmt("SourceOutOfBounds"),
    );
    add(
        c,
        "seek-past-end",
        patch_of(&[seg(&[(0, 1, 401)], &[], &[], b"x")], None, b""),
        fmt("SourceOutOfBounds"),
    );
    add(
        c,
        "copy-after-seek-to-end",
        patch_of(
            &[seg(&[(0, 1, 395), (10, 0, 0)], &[(10, 0)], &[], b"x")],
            None,
            b"",
        ),
        fmt("SourceOutOfBounds"),
    );
    add(
        c,
        "seek-minus-2pow40",
        patch_of(
            &[seg(&[(10, 0, -(1 << 40))], &[(10, 0)], &[], &[])],
            None,
            b"",
        ),
        fmt("SourceOutOfBounds"),
    );

    // 9. Allocation sizes taken from the patch.
    let c = CLASSES[8];
    add(
        c,
        "new-len-2pow62",
        sample_with_header(|h| h.new_len = varint(1 << 62)),
        "LimitExceeded:target length".into(),
    );
    add(
        c,
        "control-raw-len-2pow40",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::custom(1 << 40, 0, None, b"abc"),
                    absent(),
                    absent(),
                    absent(),
                    absent(),
                ],
            )],
            10,
        ),
        "LimitExceeded:segment control and delta streams".into(),
    );
    add(
        c,
        "zstd-stored-len-2pow40",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::custom(100, 1, Some(1 << 40), b"abc"),
                    absent(),
                    absent(),
                    absent(),
                    absent(),
                ],
            )],
            10,
        ),
        "LimitExceeded:segment control and delta streams".into(),
    );
    let fifteen_gib: u64 = 15 << 30;
    add(
        c,
        "literal-15gib-tiny-patch",
        patch_with(
            vec![segment(
                fifteen_gib,
                [
                    Stream::raw(&raw_ctrl(&[(0, fifteen_gib, 0)])),
                    absent(),
                    absent(),
                    absent(),
                    Stream::custom(fifteen_gib, 0, None, b"only ten b"),
                ],
            )],
            fifteen_gib,
        ),
        fmt("Truncated"),
    );

    // 10. Declared stream lengths that do not match the data.
    let c = CLASSES[9];
    add(
        c,
        "raw-stream-past-end-of-file",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::custom(1000, 0, None, b"abc"),
                    absent(),
                    absent(),
                    absent(),
                    absent(),
                ],
            )],
            10,
        ),
        fmt("Truncated"),
    );
    let ctrl10 = raw_ctrl(&[(0, 10, 0)]);
    let mut padded = frame(&ctrl10);
    padded.extend_from_slice(&[0, 0, 0]);
    add(
        c,
        "zstd-stored-len-longer-than-frame",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64, padded),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    add(
        c,
        "zstd-raw-len-longer-than-content",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64 + 5, frame(&ctrl10)),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    add(
        c,
        "zstd-raw-len-shorter-than-content",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64 - 1, frame(&ctrl10)),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    let mut short_frame = frame(&ctrl10);
    short_frame.pop();
    add(
        c,
        "zstd-stored-len-shorter-than-frame",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64, short_frame),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );

    // 11. Decompression bombs: tiny frames that expand far past their declared size.
    let c = CLASSES[10];
    let zeros = vec![0u8; 8 << 20];
    let bomb = frame(&zeros);
    assert!(bomb.len() < 2048, "the bomb frame is {} bytes", bomb.len());
    add(
        c,
        "control-8mib-declared-30",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(30, bomb.clone()),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    add(
        c,
        "delta-bytes-8mib-declared-10",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::raw(&raw_ctrl(&[(10, 0, 0)])),
                    Stream::raw(&varint(0)),
                    Stream::raw(&varint(10)),
                    Stream::zstd_payload(10, bomb.clone()),
                    absent(),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    add(
        c,
        "literals-8mib-declared-5",
        patch_with(
            vec![segment(
                5,
                [
                    Stream::raw(&raw_ctrl(&[(0, 5, 0)])),
                    absent(),
                    absent(),
                    absent(),
                    Stream::zstd_payload(5, bomb.clone()),
                ],
            )],
            5,
        ),
        fmt("StreamTrailing"),
    );
    // A frame that declares a 32 MiB window (window log 25, single segment):
    // over the 16 MiB default limit for streamed literals.
    let n32: u64 = 32 << 20;
    let wide = wide_window_frame(&vec![0u8; n32 as usize], 25);
    add(
        c,
        "literals-window-32mib",
        patch_with(
            vec![segment(
                n32,
                [
                    Stream::raw(&raw_ctrl(&[(0, n32, 0)])),
                    absent(),
                    absent(),
                    absent(),
                    Stream::zstd_payload(n32, wide),
                ],
            )],
            n32,
        ),
        fmt("BadCompression"),
    );
    // 12. Malformed compressed streams.
    let c = CLASSES[11];
    add(
        c,
        "control-random-bytes",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64, random_bytes(12, 24)),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    let mut bad_magic_frame = frame(&ctrl10);
    bad_magic_frame[0] ^= 0xff;
    add(
        c,
        "control-frame-magic-flipped",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64, bad_magic_frame),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    let mut two_frames = frame(&ctrl10[..1]);
    two_frames.extend(frame(&ctrl10[1..]));
    add(
        c,
        "control-two-frames",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64, two_frames),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    // A skippable frame (magic 0x184D2A50, 4-byte length, 3 bytes) holds no data.
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0];
    skippable.extend_from_slice(&ctrl10);
    add(
        c,
        "control-skippable-frame",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::zstd_payload(ctrl10.len() as u64, skippable),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );
    add(
        c,
        "literals-random-bytes",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::raw(&ctrl10),
                    absent(),
                    absent(),
                    absent(),
                    Stream::zstd_payload(10, random_bytes(13, 24)),
                ],
            )],
            10,
        ),
        fmt("BadCompression"),
    );

    // 13. Streams that end before the operations are done.
    let c = CLASSES[12];
    let mut ctrl_cut = raw_ctrl(&[(0, 10, 0)]);
    ctrl_cut.pop();
    add(
        c,
        "control-ends-mid-operation",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::raw(&ctrl_cut),
                    absent(),
                    absent(),
                    absent(),
                    Stream::raw(&ten),
                ],
            )],
            10,
        ),
        fmt("StreamUnderrun"),
    );
    add(
        c,
        "control-ends-before-segment",
        patch_of(
            &[seg_data(10, &[(0, 5, 0)], &[], &[], &ten[..5])],
            None,
            b"",
        ),
        fmt("StreamUnderrun"),
    );
    add(
        c,
        "literals-shorter-than-operation",
        patch_of(
            &[seg_data(10, &[(0, 10, 0)], &[], &[], &ten[..5])],
            None,
            b"",
        ),
        fmt("StreamUnderrun"),
    );
    add(
        c,
        "delta-bytes-shorter-than-runs",
        patch_of(&[seg(&[(10, 0, 0)], &[(0, 10)], &ten[..4], &[])], None, b""),
        fmt("StreamUnderrun"),
    );
    add(
        c,
        "no-run-pairs-for-copies",
        patch_of(&[seg(&[(10, 0, 0)], &[], &[], &[])], None, b""),
        fmt("StreamUnderrun"),
    );

    // 14. Zero progress.
    let c = CLASSES[13];
    add(
        c,
        "empty-operation",
        patch_of(
            &[seg_data(10, &[(0, 0, 0), (0, 10, 0)], &[], &[], &ten)],
            None,
            b"",
        ),
        fmt("EmptyOperation"),
    );
    add(
        c,
        "empty-operation-with-seek",
        patch_of(
            &[seg_data(10, &[(0, 0, 5), (0, 10, 0)], &[], &[], &ten)],
            None,
            b"",
        ),
        fmt("EmptyOperation"),
    );
    let many: Vec<(u64, u64, i64)> = std::iter::repeat_n((0, 0, 0), 10_000).collect();
    add(
        c,
        "ten-thousand-empty-operations",
        patch_of(&[seg_data(10, &many, &[], &[], &[])], None, b""),
        fmt("EmptyOperation"),
    );
    add(
        c,
        "empty-run-pair",
        patch_of(
            &[seg(&[(10, 0, 0)], &[(0, 0), (10, 0)], &[], &[])],
            None,
            b"",
        ),
        fmt("EmptyOperation"),
    );
    add(
        c,
        "zero-length-segment",
        patch_of(
            &[
                seg_data(0, &[], &[], &[], &[]),
                seg(&[(0, 10, 0)], &[], &[], &ten),
            ],
            Some(10),
            b"",
        ),
        fmt("EmptyOperation"),
    );

    // 15. Trailing garbage.
    let c = CLASSES[14];
    let mut p = sample_patch(Codec::Zstd);
    p.trailer = vec![0];
    add(
        c,
        "byte-after-last-segment",
        p.bytes(),
        fmt("TrailingBytes"),
    );
    let mut empty_new = Header::for_files(&old, b"").bytes();
    empty_new.extend_from_slice(b"garbage");
    add(
        c,
        "bytes-after-empty-patch",
        empty_new,
        fmt("TrailingBytes"),
    );
    add(
        c,
        "extra-control-operation",
        patch_of(
            &[seg_data(10, &[(0, 10, 0), (0, 1, 0)], &[], &[], &ten)],
            None,
            b"",
        ),
        fmt("StreamTrailing"),
    );
    add(
        c,
        "extra-literal-byte",
        patch_of(&[seg(&[(5, 4, 0)], &[(5, 0)], &[], &ten[..5])], None, b""),
        fmt("StreamTrailing"),
    );
    add(
        c,
        "extra-delta-byte",
        patch_of(
            &[seg(
                &[(10, 0, 0)],
                &[(0, 10)],
                &[ten.as_slice(), b"!"].concat(),
                &[],
            )],
            None,
            b"",
        ),
        fmt("StreamTrailing"),
    );
    let mut lit_frame = frame(&ten);
    lit_frame.push(0x42);
    add(
        c,
        "byte-after-literal-frame",
        patch_with(
            vec![segment(
                10,
                [
                    Stream::raw(&ctrl10),
                    absent(),
                    absent(),
                    absent(),
                    Stream::zstd_payload(10, lit_frame),
                ],
            )],
            10,
        ),
        fmt("StreamTrailing"),
    );

    // 16. Wrong base: a valid patch and an old file it was not made for.
    let c = CLASSES[15];
    let good = sample_patch(Codec::Zstd).bytes();
    let mut one_byte = s.old.clone();
    one_byte[200] ^= 1;
    let mut garbage_body = sample_patch(Codec::Zstd).header.bytes();
    garbage_body.extend_from_slice(&random_bytes(14, 100));
    let wrong: [(&'static str, Vec<u8>, Vec<u8>, &str); 5] = [
        (
            "one-byte-changed",
            good.clone(),
            one_byte.clone(),
            "HashMismatch:source",
        ),
        (
            "old-one-byte-short",
            good.clone(),
            s.old[..399].to_vec(),
            "SizeMismatch:source",
        ),
        ("old-empty", good.clone(), Vec::new(), "SizeMismatch:source"),
        (
            "old-all-zeros",
            good.clone(),
            vec![0; 400],
            "HashMismatch:source",
        ),
        // The body is never read when the old file is wrong.
        (
            "garbage-body-wrong-old",
            garbage_body,
            one_byte,
            "HashMismatch:source",
        ),
    ];
    for (name, patch, o, expect) in wrong {
        v.push(Vector {
            class: c,
            name,
            patch,
            old: Some(o),
            limits: "default",
            expect: expect.into(),
        });
    }
    let mut add = |class: &'static str, name: &'static str, patch: Vec<u8>, expect: String| {
        v.push(Vector {
            class,
            name,
            patch,
            old: None,
            limits: "default",
            expect,
        })
    };

    // 17. Result mismatch: well-formed patches whose output is not the declared one.
    let c = CLASSES[16];
    add(
        c,
        "new-sha256-flipped",
        sample_with_header(|h| h.new_sha256[31] ^= 1),
        "HashMismatch:target".into(),
    );
    let p = sample_patch(Codec::Raw);
    let mut lit_changed = p.bytes();
    lit_changed[p.payload_range(1, LITERALS).start + 3] ^= 0x20;
    add(
        c,
        "literal-byte-changed",
        lit_changed,
        "HashMismatch:target".into(),
    );
    let mut delta_changed = p.bytes();
    delta_changed[p.payload_range(0, DELTA_BYTES).start] ^= 0x01;
    add(
        c,
        "delta-byte-changed",
        delta_changed,
        "HashMismatch:target".into(),
    );
    // The same output length from other operations: copy old[0..10] instead of literals.
    add(
        c,
        "valid-structure-other-bytes",
        patch_of(
            &[seg(&[(10, 0, 0)], &[(10, 0)], &[], &[])],
            None,
            &old[1..11],
        ),
        "HashMismatch:target".into(),
    );

    // 20. The edit layout (header flag bit 0; 18 and 19 are the bundle
    // classes): every edit checked before it is applied.
    let c = CLASSES[17];
    let mut new = old.clone();
    new[10..14].copy_from_slice(b"\x01\x02\x03\x04");
    new[100..108].copy_from_slice(b"01020304");
    let edits = |new: &[u8], edits: &[&[u8]]| {
        let mut h = Header::for_files(&old, new);
        h.flags = 1;
        h.new_len.clear();
        let mut p = h.bytes();
        p.extend(varint(edits.len() as u64));
        for e in edits {
            p.extend_from_slice(e);
        }
        p
    };
    // gap 10, 4 literal bytes; then gap 86, 8 hex digits of them.
    let literal: &[u8] = &[10, 8, 1, 2, 3, 4];
    let hex: &[u8] = &[86, 17, 0];
    add(
        c,
        "edit-past-end",
        edits(&new, &[literal, &[0x8f, 0x03, 2, 7]]),
        fmt("OutputOverrun"),
    );
    add(
        c,
        "gap-overflow",
        edits(
            &new,
            &[
                literal,
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 2, 7,
                ],
            ],
        ),
        fmt("Overflow"),
    );
    add(
        c,
        "hex-before-any-literal",
        edits(&new, &[hex]),
        fmt("OutOfRange"),
    );
    add(
        c,
        "hex-past-its-literal",
        edits(&new, &[literal, &[86, 17, 4]]),
        fmt("OutOfRange"),
    );
    add(
        c,
        "hex-odd-digits",
        edits(&new, &[literal, &[86, 15, 0]]),
        fmt("OutOfRange"),
    );
    add(
        c,
        "empty-edit",
        edits(&new, &[&[10, 0]]),
        fmt("EmptyOperation"),
    );
    add(
        c,
        "literal-over-4096",
        edits(&new, &[&[0, 0x82, 0x40]]),
        fmt("OutOfRange"),
    );
    let mut three = edits(&new, &[literal, hex]);
    three[74] = 3;
    add(c, "count-past-the-edits", three, fmt("Truncated"));
    let mut after = edits(&new, &[literal, hex]);
    after.push(0);
    add(c, "byte-after-the-edits", after, fmt("TrailingBytes"));
    let mut transform = edits(&new, &[literal, hex]);
    transform[6] = 2;
    add(c, "with-a-transform", transform, fmt("UnknownTransform(2)"));
    let mut other = new.clone();
    other[105] = b'f';
    add(
        c,
        "valid-edits-other-bytes",
        edits(&other, &[literal, hex]),
        "HashMismatch:target".into(),
    );

    v
}

// ---- running a vector -------------------------------------------------------------

/// Hands out 1 to 5 bytes per call.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.1 += 1;
        let n = (self.1 % 5 + 1).min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// The three ways of applying; returns the error each gave.
fn run(old: &[u8], patch: &[u8], limits: &str) -> [String; 3] {
    let lim = parse_limits(limits);
    let slice = match deltaswap::apply_with_limits(old, patch, lim.clone()) {
        Ok(out) => format!("Ok({} bytes)", out.len()),
        Err(e) => describe(&e),
    };
    let mut sink = Vec::new();
    let streamed = match PatchReader::with_limits(Trickle(patch, 0), lim.clone())
        .and_then(|r| r.apply_to(old, &mut sink))
    {
        Ok(v) => format!("Ok({} bytes)", v.len()),
        Err(e) => describe(&e),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("component.so");
    fs::write(&path, old).unwrap();
    let in_place = match deltaswap::patch_in_place(&path, patch, &PatchOptions::new().limits(lim)) {
        Ok(_) => "Ok".to_string(),
        Err(Error::NoSpace { .. }) => "NoSpace".to_string(),
        Err(e) => describe(&e),
    };
    assert_eq!(
        fs::read(&path).unwrap(),
        old,
        "patch_in_place changed the file"
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "patch_in_place left files behind: {left:?}");
    [slice, streamed, in_place]
}

struct Row {
    path: String,
    old: String,
    limits: String,
    expect: String,
}

fn manifest_text(vectors: &[Vector]) -> String {
    let mut s = String::from("# vector\told file\tlimits\texpected error\n");
    for v in vectors {
        let old = if v.old.is_some() {
            format!("{}/{}.old", v.class, v.name)
        } else {
            "old.bin".to_string()
        };
        s.push_str(&format!(
            "{}/{}.patch\t{}\t{}\t{}\n",
            v.class, v.name, old, v.limits, v.expect
        ));
    }
    s
}

fn read_manifest() -> Vec<Row> {
    let text = fs::read_to_string(fixtures().join("manifest.tsv")).expect("manifest.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "manifest line {l:?}");
            Row {
                path: f[0].into(),
                old: f[1].into(),
                limits: f[2].into(),
                expect: f[3].into(),
            }
        })
        .collect()
}

/// Every committed vector gives its error, the same way through every applier.
#[test]
fn every_vector_gives_its_error() {
    let rows = read_manifest();
    let mut failures = Vec::new();
    for r in &rows {
        let patch = fs::read(fixtures().join(&r.path)).unwrap();
        let old = fs::read(fixtures().join(&r.old)).unwrap();
        let [slice, streamed, in_place] = run(&old, &patch, &r.limits);
        if slice != r.expect || streamed != r.expect {
            failures.push(format!(
                "{}: expected {}, apply gave {slice}, streaming gave {streamed}",
                r.path, r.expect
            ));
        }
        // patch_in_place checks free space before reading the body.
        if in_place != r.expect && in_place != "NoSpace" {
            failures.push(format!(
                "{}: expected {}, patch_in_place gave {in_place}",
                r.path, r.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Classes 1–17 each have at least three vectors.
#[test]
fn every_class_has_three_vectors() {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for r in read_manifest() {
        let class = r.path.split('/').next().unwrap().to_string();
        *per.entry(class).or_default() += 1;
    }
    for c in CLASSES {
        let n = per.get(c).copied().unwrap_or(0);
        assert!(n >= 3, "class {c} has {n} vectors");
    }
    assert_eq!(per.len(), CLASSES.len(), "{per:?}");
}

/// Every prefix of a valid patch is refused with `Truncated` (or, inside the
/// streamed literal data, `StreamUnderrun`): class 2 in full.
#[test]
fn every_prefix_is_refused() {
    let old = default_old();
    for codec in [Codec::Raw, Codec::Zstd] {
        let full = sample_patch(codec).bytes();
        for n in 0..full.len() {
            let e = deltaswap::apply(&old, &full[..n]).unwrap_err();
            let d = describe(&e);
            assert!(
                d == "Format:Truncated" || d == "Format:StreamUnderrun",
                "prefix {n} ({codec:?}): {d}"
            );
        }
    }
}

fn write_all(vectors: &[Vector], root: &Path) {
    fs::create_dir_all(root).unwrap();
    fs::write(root.join("old.bin"), default_old()).unwrap();
    for v in vectors {
        let dir = root.join(v.class);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{}.patch", v.name)), &v.patch).unwrap();
        if let Some(o) = &v.old {
            fs::write(dir.join(format!("{}.old", v.name)), o).unwrap();
        }
    }
    fs::write(root.join("manifest.tsv"), manifest_text(vectors)).unwrap();
}

/// The committed files are what the generator writes.
#[test]
fn committed_files_match_the_generator() {
    let vectors = catalogue();
    assert_eq!(
        fs::read_to_string(fixtures().join("manifest.tsv")).unwrap(),
        manifest_text(&vectors),
        "manifest.tsv is stale: run the ignored write_catalogue test"
    );
    for v in &vectors {
        let p = fixtures().join(v.class).join(format!("{}.patch", v.name));
        assert!(
            fs::read(&p).unwrap() == v.patch,
            "{} is stale: run the ignored write_catalogue test",
            p.display()
        );
    }
}

#[test]
#[ignore = "writes tests/fixtures/malformed; run explicitly to regenerate"]
fn write_catalogue() {
    write_all(&catalogue(), &fixtures());
}
