//! Replays, through the same checks the fuzz targets run (`fuzz/src/checks.rs`):
//!
//! * every crash input saved under `tests/fixtures/fuzz-regressions/<target>/`
//!   (`apply_structured` crashes are saved as `<name>.old` + `<name>.patch`,
//!   since its fuzzer input needs the `arbitrary` crate to decode);
//! * the committed seed corpora `fuzz/corpus/<target>/` (`apply_structured`
//!   seeds are `arbitrary` bytes, decoded as the fuzzer decodes them and run
//!   through `fuzz/src/structured.rs`).
//!
//! `bundle_open` is here too (its check is `fuzz/src/bundle_check.rs`); the
//! bundle state-machine and recovery targets are replayed by
//! `tests/fuzz_regressions_bundle.rs`. The `bundle_open` seeds are written by
//! `cargo test --test malformed_bundles -- --ignored write_bundle_open_seeds`.
//!
//! `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`
//! regenerates the seed corpora.

#[path = "codec/builder.rs"]
#[allow(dead_code)]
mod builder;
#[path = "../fuzz/src/bundle.rs"]
#[allow(dead_code)]
mod bundle;
#[path = "../fuzz/src/bundle_check.rs"]
#[allow(dead_code)]
mod bundle_check;
#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../fuzz/src/heap.rs"]
mod heap;
#[path = "codec/naive.rs"]
#[allow(dead_code)]
mod naive;
#[path = "../fuzz/src/structured.rs"]
#[allow(dead_code)]
mod structured;

use std::fs;
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

const TARGETS: [&str; 6] = [
    "patch_header",
    "apply_fixed_old",
    "apply_any_old",
    "apply_structured",
    "roundtrip",
    "bundle_open",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Runs one saved input of `target`.
fn replay(target: &str, path: &Path) {
    let data = fs::read(path).unwrap();
    match target {
        "patch_header" => checks::check_header(&data),
        "apply_fixed_old" => checks::check_apply(&checks::fixed_old(), &data),
        "apply_any_old" => checks::check_any_old(&data),
        "roundtrip" => {
            if data.len() <= 64 << 10 {
                checks::check_roundtrip(&data)
            }
        }
        "apply_structured" => {
            if path.extension().is_some_and(|e| e == "patch") {
                let old = fs::read(path.with_extension("old")).unwrap();
                checks::check_apply(&old, &data);
            }
        }
        "bundle_open" => bundle_check::check(&data),
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn fuzz_regressions_replay() {
    let base = root().join("tests/fixtures/fuzz-regressions");
    let mut n = 0;
    for t in TARGETS {
        for f in files(&base.join(t)) {
            eprintln!("replaying {}", f.display());
            replay(t, &f);
            n += 1;
        }
    }
    // Open findings (see `open_findings_replay`) are replayed too, tolerating
    // only their known discrepancy: anything else they trigger is a failure.
    for t in TARGETS {
        for f in files(&base.join("open").join(t)) {
            replay(t, &f);
            n += 1;
        }
    }
    eprintln!("{n} regression inputs replayed");
}

/// An `apply_structured` input as the fuzzer decodes it.
fn structured_input(data: &[u8]) -> structured::Input {
    use arbitrary::Arbitrary;
    structured::Input::arbitrary_take_rest(arbitrary::Unstructured::new(data))
        .expect("every byte string decodes")
}

#[test]
fn seed_corpora_pass_the_checks() {
    for t in TARGETS {
        let seeds = files(&root().join("fuzz/corpus").join(t));
        assert!(
            seeds.len() >= 3,
            "fuzz/corpus/{t} has {} seeds",
            seeds.len()
        );
        for f in seeds {
            if t == "apply_structured" {
                structured::check(&structured_input(&fs::read(&f).unwrap()));
            } else {
                replay(t, &f);
            }
        }
    }
}

/// The committed `apply_structured` seeds of [`structured_seeds`] are what
/// `write_seed_corpus` writes today: they decode back to the inputs they were
/// written for (a change to `structured::Input` makes them stale), with the
/// validity they were meant to have.
#[test]
fn structured_seeds_are_current() {
    let dir = root().join("fuzz/corpus/apply_structured");
    for (name, valid, inp) in structured_seeds() {
        let mut bytes = Vec::new();
        structured::Emit::emit(&inp, &mut bytes);
        let back = structured_input(&bytes);
        assert_eq!(format!("{back:?}"), format!("{inp:?}"), "{name}");
        let case = structured::build(&inp);
        assert_eq!(case.expected.is_some(), valid, "{name}: validity");
        let plain_model = name.contains("model") && !name.contains("codec2");
        assert!(
            !plain_model || case.model_streams > 0,
            "{name}: no model stream"
        );
        if name.starts_with("plain-model") {
            // The codec the seed asks for is the one written.
            let want = if name.contains("model5") {
                "block-model"
            } else {
                "model"
            };
            let info = deltaswap::inspect(&case.patch[..]).unwrap();
            assert_eq!(info.stream_codecs()[3], [want], "{name}: codec");
        }
        use deltaswap::FormatErrorKind as K;
        let want = match name {
            _ if name.starts_with("codec2-") => Some(K::UnknownCodec(2)),
            _ if name.starts_with("model-on-") || name == "model-in-run-layout" => {
                Some(K::UnknownCodec(3))
            }
            _ if name.starts_with("model5-on-") || name == "model5-in-run-layout" => {
                Some(K::UnknownCodec(5))
            }
            "edits-count-over" => Some(K::Truncated),
            "edits-count-under" | "edits-trailer" => Some(K::TrailingBytes),
            "edits-transform" => Some(K::UnknownTransform(3)),
            _ => None,
        };
        assert_eq!(case.expected_error, want, "{name}: expected error");
        let overflow = match name {
            "edits-length-overflow" => Some("edit length"),
            "edits-gap-overflow" => Some("edit gap"),
            _ => None,
        };
        if let Some(what) = overflow {
            match deltaswap::apply(&case.old, &case.patch) {
                Err(deltaswap::Error::Format(f)) => {
                    assert_eq!((f.kind(), f.what()), (K::Overflow, what), "{name}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        if valid && name.starts_with("edits") {
            let info = deltaswap::inspect(&case.patch[..]).unwrap();
            assert!(info.edits().is_some(), "{name}: read as an edit list");
        }
        let committed = fs::read(dir.join(format!("seed-{name}"))).unwrap_or_default();
        assert!(
            committed == bytes,
            "fuzz/corpus/apply_structured/seed-{name} is stale: run \
             `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`"
        );
    }
}

/// The `apply_structured` seeds that exercise the plain layout: raw, zstd and
/// model-coded deltas (codec 3, and codec 5 in the `model5` seeds; windows 2^10 to 2^16: at most what each
/// stream needs, as the format requires), and the faults the
/// target can put on them; the references of transforms 2, 4 and 8; and the
/// edit layout (`edits*`) with its faults. Each with whether the case is
/// valid (applies, or is over the fuzzing limits only).
fn structured_seeds() -> Vec<(&'static str, bool, structured::Input)> {
    use structured::{FaultKind, FuzzOp, Input, Layout, ModelSpec, Refs, Seg, StreamFault};
    let op = |copy: u16, lit: u16, seek: i32, delta: u8, delta_stride: u8| FuzzOp {
        copy,
        lit,
        seek,
        delta,
        delta_stride,
    };
    // `window` as ModelSpec reads it: 10 + window % 11 below 0xe0.
    let seg = |layout: Layout, window: u8, ops: Vec<FuzzOp>| Seg {
        ops,
        zstd: [false; 5],
        level: 0,
        seg_len_skew: 0,
        layout,
        model: ModelSpec {
            window,
            declare: 0,
            declared: 0,
        },
        model_elsewhere: 0,
        codec2: 0,
    };
    let input = |segments: Vec<Seg>, stream_faults: Vec<StreamFault>| Input {
        old_len: 4096,
        old_seed: 7,
        old_periodic: false,
        segments,
        clamp: true,
        wrong_old_hash: false,
        wrong_new_hash: false,
        new_len_skew: 0,
        stream_faults,
        trailer: Vec::new(),
        refs: None,
        edits: None,
    };
    // A stored-byte fault (or, with `stored` false, a decoded-byte one) on
    // stream `stream` of the first segment.
    let fault = |stream: u8, pos: u16, kind: FaultKind, stored: bool| StreamFault {
        segment: 0,
        stream,
        pos,
        kind,
        stored,
    };
    // Copies with scattered changes (every 37th byte, every 5th), a literal,
    // a seek back to 100.
    let ops = || vec![op(3000, 20, 3000, 0x10, 37), op(900, 35, 100, 0xfc, 5)];
    let declared = |window: u8, declared: u8| {
        let mut s = seg(Layout::PlainModel, window, ops());
        s.model.declare = 0xf0;
        s.model.declared = declared;
        input(vec![s], vec![])
    };
    let model = || seg(Layout::PlainModel, 2, ops());
    // Codec 5 (zero blocks): `declare` odd, below 0xf0 (the window as coded).
    let model5 = |s: Seg| Seg {
        model: ModelSpec {
            declare: 1,
            ..s.model
        },
        ..s
    };
    let with_model5 = |k: u8, layout: Layout| {
        let mut s = model5(seg(layout, 2, ops()));
        s.model_elsewhere = 0xf0 + k;
        input(vec![s], vec![])
    };
    let with_model = |k: u8, layout: Layout| {
        let mut s = seg(layout, 2, ops());
        s.model_elsewhere = 0xf0 + k;
        input(vec![s], vec![])
    };
    let with_codec2 = |k: u8| {
        let mut s = seg(Layout::PlainModel, 2, ops());
        s.codec2 = 0xf8 + (k + 2) % 5;
        input(vec![s], vec![])
    };
    let faulted =
        |kind: FaultKind, stored: bool| input(vec![model()], vec![fault(3, 40, kind, stored)]);
    let mut periodic = input(
        vec![seg(
            Layout::PlainModel,
            4,
            vec![
                op(2000, 0, 10, 1, 4),
                op(2000, 3, 500, 0x80, 61),
                op(3000, 0, 0, 2, 7),
                op(1500, 9, 3, 0xff, 1),
            ],
        )],
        vec![],
    );
    periodic.old_periodic = true;
    // 16 copies of 4 KiB: 64 KiB of deltas (window 2^16 in use).
    let long: Vec<FuzzOp> = (0..16u8)
        .map(|i| op(4096, u16::from(i), 0, i.wrapping_mul(37) | 1, 3 + i))
        .collect();
    let mut zstd_plain = seg(Layout::PlainZstd, 0, ops());
    zstd_plain.level = 1;
    let mut skewed = model();
    skewed.seg_len_skew = -1;
    let mut unclamped = input(
        vec![seg(Layout::PlainModel, 2, vec![op(5000, 3, -20, 1, 2)])],
        vec![],
    );
    unclamped.clamp = false;
    // Transforms 2 and 4: calls planted every 23 bytes and pointers, a map
    // of three shifts; in both layouts, with displacements, pointers or
    // both, and with a break repeated (refused).
    let with_refs = |layout: Layout, breaks: Vec<(u16, i16)>, kinds: u8| {
        let mut i = input(vec![seg(layout, 2, ops())], vec![]);
        i.refs = Some(Refs {
            breaks,
            call_every: 23,
            kinds,
        });
        i
    };
    let three = vec![(0, 0), (500, 40), (400, -47)];
    // The edit layout: literal edits (one with no gap), hex edits of the
    // last one and of one three back (after five literal edits), placed
    // inside the 4 KiB old file; then its faults.
    let edit = |gap: u16, len: u16, hex: bool, source: u16| structured::FuzzEdit {
        gap,
        len,
        hex,
        source,
    };
    let edit_list = || {
        vec![
            edit(100, 19, false, 0),
            edit(0, 30, false, 0),
            edit(700, 9, true, 1 << 2),
            edit(50, 7, false, 0),
            edit(20, 40, false, 0),
            edit(10, 2, false, 0),
            edit(300, 5, true, (2 << 2) | 3),
            edit(5, 11, false, 0),
        ]
    };
    let edits = |count_skew: i8, transform: u8| {
        let mut i = input(vec![], vec![]);
        i.edits = Some(structured::EditList {
            edits: edit_list(),
            count_skew,
            transform,
        });
        i
    };
    let mut edits_trailer = edits(0, 0);
    edits_trailer.trailer = vec![0];
    let mut edits_unclamped = edits(0, 0);
    edits_unclamped.clamp = false;
    // Raw gaps near 2^64: the first edit's gap plus its length overflows,
    // the gap of an edit after it overflows by itself.
    let mut edits_overflow = edits(0, 0);
    edits_overflow.clamp = false;
    if let Some(l) = edits_overflow.edits.as_mut() {
        l.edits = vec![edit(u16::MAX, 20, false, 3)];
    }
    let mut edits_gap_overflow = edits(0, 0);
    edits_gap_overflow.clamp = false;
    if let Some(l) = edits_gap_overflow.edits.as_mut() {
        l.edits = vec![edit(10, 2, false, 0), edit(u16::MAX, 1, false, 0)];
    }
    let mut edits_wrong_new = edits(0, 0);
    edits_wrong_new.wrong_new_hash = true;
    let mut edits_none = edits(0, 0);
    if let Some(l) = edits_none.edits.as_mut() {
        l.edits.clear();
    }
    vec![
        ("edits", true, edits(0, 0)),
        ("edits-empty", true, edits_none),
        ("edits-count-over", false, edits(1, 0)),
        ("edits-count-under", false, edits(-2, 0)),
        ("edits-trailer", false, edits_trailer),
        ("edits-transform", false, edits(0, 0xf2)),
        ("edits-unclamped", false, edits_unclamped),
        ("edits-length-overflow", false, edits_overflow),
        ("edits-gap-overflow", false, edits_gap_overflow),
        ("edits-wrong-new-hash", false, edits_wrong_new),
        (
            "refs-run-layout",
            true,
            with_refs(Layout::Runs, three.clone(), 0),
        ),
        (
            "refs-pointers-run-layout",
            true,
            with_refs(Layout::Runs, three.clone(), 1),
        ),
        (
            "refs-both-plain-model",
            true,
            with_refs(Layout::PlainModel, three, 2),
        ),
        (
            "refs-break-repeated",
            false,
            with_refs(Layout::Runs, vec![(0, 0), (100, 5), (0, 5)], 2),
        ),
        ("plain-model", true, input(vec![model()], vec![])),
        ("plain-model5", true, input(vec![model5(model())], vec![])),
        (
            "plain-model5-w20-long",
            true,
            input(
                vec![model5(seg(Layout::PlainModel, 10, long.clone()))],
                vec![],
            ),
        ),
        (
            "plain-model5-two-segments",
            true,
            input(
                vec![
                    model5(model()),
                    model5(seg(Layout::PlainModel, 5, vec![op(2500, 0, 7, 0x20, 9)])),
                ],
                vec![],
            ),
        ),
        (
            "plain-model-w10",
            true,
            input(
                vec![seg(Layout::PlainModel, 0, vec![op(700, 5, 0, 3, 11)])],
                vec![],
            ),
        ),
        (
            "plain-model-w20-long",
            true,
            input(vec![seg(Layout::PlainModel, 10, long)], vec![]),
        ),
        (
            "plain-model-window-over-limit",
            true,
            // 0xe6 asks for 2^21, over the fuzzing limit; the stream needs
            // only 2^12, the most the format lets it name, so 2^12 is written.
            input(vec![seg(Layout::PlainModel, 0xe6, ops())], vec![]),
        ),
        ("plain-model-periodic", true, periodic),
        (
            "plain-model-two-segments",
            true,
            input(
                vec![
                    model(),
                    seg(Layout::PlainModel, 5, vec![op(2500, 0, 7, 0x20, 9)]),
                ],
                vec![],
            ),
        ),
        (
            "mixed-layouts",
            true,
            input(
                vec![
                    seg(Layout::Runs, 0, vec![op(1000, 10, 50, 1, 3)]),
                    seg(Layout::PlainRaw, 0, vec![op(800, 0, 900, 2, 5)]),
                    zstd_plain,
                    model(),
                ],
                vec![],
            ),
        ),
        (
            "plain-raw",
            true,
            input(vec![seg(Layout::PlainRaw, 0, ops())], vec![]),
        ),
        (
            "plain-zstd",
            true,
            input(vec![seg(Layout::PlainZstd, 0, ops())], vec![]),
        ),
        (
            "plain-zstd-stored-set",
            false,
            input(
                vec![seg(Layout::PlainZstd, 0, ops())],
                vec![fault(3, 9, FaultKind::Set(0x55), true)],
            ),
        ),
        ("plain-seg-skew", false, input(vec![skewed], vec![])),
        ("plain-unclamped", false, unclamped),
        // The descriptor names another window than the encoder's: a bigger
        // one than a stream under 2^10 deltas needs (the same history, but
        // not canonical: refused); a smaller one for a longer stream; over
        // the fuzzing limit (and over what the stream needs); outside 10..=30.
        ("model-declared-bigger-window", false, {
            let mut i = declared(0, 16);
            i.segments[0].ops = vec![op(700, 5, 0, 3, 11)];
            i
        }),
        ("model-declared-smaller-window", false, {
            // The same delta pattern 2,400 deltas apart: the match model
            // finds it in a 2^12 window, not in 2^10.
            let mut i = declared(2, 10);
            i.segments[0].ops = vec![
                op(1200, 0, 1200, 5, 3),
                op(1200, 0, 2400, 9, 7),
                op(1200, 0, 0, 5, 3),
            ];
            i
        }),
        ("model-declared-over-limit", false, declared(2, 25)),
        ("model-declared-bad-window-9", false, declared(2, 9)),
        ("model-declared-bad-window-31", false, declared(2, 31)),
        // The model where it is not defined, and the undefined codec 2.
        ("model-in-run-layout", false, with_model(3, Layout::Runs)),
        ("model-on-control", false, with_model(0, Layout::PlainModel)),
        ("model5-in-run-layout", false, with_model5(3, Layout::Runs)),
        (
            "model5-on-control",
            false,
            with_model5(0, Layout::PlainModel),
        ),
        (
            "model-on-literals",
            false,
            with_model(4, Layout::PlainModel),
        ),
        ("codec2-on-deltas", false, with_codec2(3)),
        ("codec2-on-literals", false, with_codec2(4)),
        ("codec2-on-control", false, with_codec2(0)),
        // Damaged model bytes and lengths.
        (
            "model-stored-set",
            false,
            faulted(FaultKind::Set(0xa5), true),
        ),
        (
            "model-stored-flip",
            false,
            faulted(FaultKind::FlipBit(3), true),
        ),
        (
            "model-stored-tail",
            false,
            faulted(FaultKind::Append(0), true),
        ),
        (
            "model-stored-insert",
            false,
            faulted(FaultKind::Insert(0x42), true),
        ),
        (
            "model-stored-remove",
            false,
            faulted(FaultKind::Remove, true),
        ),
        (
            "model-stored-truncate",
            false,
            faulted(FaultKind::TruncateHere, true),
        ),
        (
            "model-stored-len-plus",
            false,
            faulted(FaultKind::SkewLen(1), true),
        ),
        (
            "model-stored-len-minus",
            false,
            faulted(FaultKind::SkewLen(-1), true),
        ),
        (
            "model-raw-len-minus",
            false,
            faulted(FaultKind::SkewLen(-1), false),
        ),
        (
            "model-raw-len-plus",
            false,
            faulted(FaultKind::SkewLen(1), false),
        ),
        (
            "plain-delta-insert",
            false,
            faulted(FaultKind::Insert(7), false),
        ),
        (
            "plain-delta-remove",
            false,
            faulted(FaultKind::Remove, false),
        ),
    ]
}

/// 120 functions of AArch64 words (`BL`s to other functions, `ADRP` + `LDR`
/// pairs into a table of pointers after the code, other words), positioned
/// after the 20 bytes of ELF header that `check_roundtrip` puts first, with
/// `inserted` bytes of `NOP`s before function 60.
fn a64_code(inserted: usize) -> Vec<u8> {
    const HEADER: i64 = 20;
    let r = builder::random_bytes(12, 4096);
    let sizes: Vec<usize> = (0..120).map(|f| 4 * (8 + r[f] as usize % 20)).collect();
    let mut starts = Vec::new();
    let mut pos = HEADER as usize;
    for (f, size) in sizes.iter().enumerate() {
        if f == 60 {
            pos += inserted;
        }
        starts.push(pos as i64);
        pos += size;
    }
    let table = (pos as i64 + 4095) / 4096 * 4096;
    let mut out: Vec<u8> = Vec::new();
    let nop = 0xD503_201Fu32.to_le_bytes();
    let mut k = 0usize;
    for (f, &size) in sizes.iter().enumerate() {
        if f == 60 {
            for _ in 0..inserted / 4 {
                out.extend_from_slice(&nop);
            }
        }
        let end = out.len() + size;
        while out.len() + 8 <= end {
            let q = out.len() as i64 + HEADER;
            let pick = r[(k * 7) % r.len()];
            k += 1;
            match pick % 3 {
                0 => {
                    let t = starts[usize::from(r[k % r.len()]) % starts.len()];
                    let imm = ((t - q) / 4) as u32 & 0x03FF_FFFF;
                    out.extend_from_slice(&(0x9400_0000 | imm).to_le_bytes());
                }
                1 => {
                    let t = table + 8 * i64::from(r[k % r.len()] % 64);
                    let pages = ((t >> 12) - (q >> 12)) as u32 & 0x1F_FFFF;
                    let adrp = 0x9000_0002 | (pages & 3) << 29 | (pages >> 2) << 5;
                    let ldr = 0xF940_0043 | ((t as u32 & 0xFFF) >> 3) << 10;
                    out.extend_from_slice(&adrp.to_le_bytes());
                    out.extend_from_slice(&ldr.to_le_bytes());
                }
                _ => {
                    let w = 0xAA00_0000 | u32::from(pick) << 8 | u32::from(r[k % r.len()]);
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
        }
        while out.len() < end {
            out.extend_from_slice(&nop);
        }
    }
    out.resize((table - HEADER) as usize, 0);
    for k in 0..64 {
        out.extend_from_slice(&(starts[k * 7 % starts.len()] as u64).to_le_bytes());
    }
    out
}

/// The seeds: valid and nearly valid patches, so that the fuzzer starts past
/// the header checks.
#[test]
#[ignore = "writes fuzz/corpus; run explicitly to regenerate the seeds"]
fn write_seed_corpus() {
    use builder::{assemble, op, plan, random_bytes, rebuilt, sample, Codec};
    let corpus = root().join("fuzz/corpus");
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    let diff = |old: &[u8], new: &[u8]| {
        deltaswap::DiffOptions::new()
            .level(3)
            .threads(1)
            .diff(old, new)
            .unwrap()
    };

    // patch_header: whole small patches and bare headers.
    let s = sample();
    let sample_raw = assemble(&s.old, &s.new, &s.segs, Codec::Raw).bytes();
    let sample_zstd = assemble(&s.old, &s.new, &s.segs, Codec::Zstd).bytes();
    put("patch_header", "sample-raw", &sample_raw);
    put("patch_header", "sample-zstd", &sample_zstd);
    put("patch_header", "empty-new", &diff(b"old", b""));
    put("patch_header", "header-only", &sample_raw[..8 + 2 + 2 + 64]);
    put(
        "patch_header",
        "diff-small",
        &diff(b"hello world", b"hello there world"),
    );

    // apply_fixed_old: patches for the fixed old file.
    let old = checks::fixed_old();
    let mut edited = old.clone();
    edited[100] ^= 0x40;
    edited[3000] = b'!';
    edited.splice(2100..2100, b"inserted text ".iter().copied());
    let mut shuffled = old[2048..].to_vec();
    shuffled.extend_from_slice(&old[..2048]);
    // A crafted two-segment patch (the codec tests' builder), raw and zstd.
    let mut crafted_new = old[..190].to_vec();
    crafted_new[50] ^= 0x11;
    crafted_new.extend_from_slice(b"LITERAL");
    crafted_new.extend(old[3000..3100].iter().map(|b| b.wrapping_add(1)));
    let crafted = plan(
        &old,
        &crafted_new,
        &[vec![op(190, 7, 2810)], vec![op(100, 0, -3100)]],
    );
    put(
        "apply_fixed_old",
        "crafted-raw",
        &assemble(&old, &crafted_new, &crafted, Codec::Raw).bytes(),
    );
    put(
        "apply_fixed_old",
        "crafted-zstd",
        &assemble(&old, &crafted_new, &crafted, Codec::Zstd).bytes(),
    );
    put("apply_fixed_old", "diff-edited", &diff(&old, &edited));
    put("apply_fixed_old", "diff-shuffled", &diff(&old, &shuffled));
    put("apply_fixed_old", "diff-empty-new", &diff(&old, b""));
    put("apply_fixed_old", "diff-identity", &diff(&old, &old));
    // A rebuild: a new 20-byte ID, and a name spelling it in hex (the edit
    // layout, with a literal and a hex edit).
    let rebuild_patch = diff(&old, &rebuilt(&old, 100, 3000, 10));
    assert_eq!(
        deltaswap::inspect(&rebuild_patch[..]).unwrap().edits(),
        Some(2)
    );
    put("apply_fixed_old", "diff-rebuilt", &rebuild_patch);
    put(
        "apply_fixed_old",
        "diff-random-new",
        &diff(&old, &random_bytes(9, 700)),
    );

    // apply_any_old: [old length, fix flag][old][patch].
    let any = |old: &[u8], patch: &[u8], fix: bool| {
        let mut v = ((old.len() as u16) | if fix { 0x8000 } else { 0 })
            .to_le_bytes()
            .to_vec();
        v.extend_from_slice(old);
        v.extend_from_slice(patch);
        v
    };
    put(
        "apply_any_old",
        "sample-raw",
        &any(&s.old, &sample_raw, false),
    );
    put(
        "apply_any_old",
        "sample-zstd-fix",
        &any(&s.old, &sample_zstd, true),
    );
    let o2 = random_bytes(5, 300);
    let mut n2 = o2.clone();
    n2[7] = 0;
    n2.extend_from_slice(b"tail");
    put("apply_any_old", "diff", &any(&o2, &diff(&o2, &n2), true));
    // The edit layout: an ID and, further on, its hex digits.
    let edited = diff(&o2, &rebuilt(&o2, 10, 200, 11));
    assert_eq!(deltaswap::inspect(&edited[..]).unwrap().edits(), Some(2));
    put("apply_any_old", "diff-rebuilt", &any(&o2, &edited, true));
    put(
        "apply_any_old",
        "empty-old",
        &any(b"", &diff(b"", b"brand new"), false),
    );
    // The sample with both segments' literals in LZMA (codec 4).
    let mut lzma = assemble(&s.old, &s.new, &s.segs, Codec::Zstd);
    for (seg, data) in lzma.segments.iter_mut().zip(&s.segs) {
        seg.streams[4] = builder::Stream::lzma(&data.streams[4], (1, 2, 2), 12);
    }
    put(
        "apply_any_old",
        "sample-lzma",
        &any(&s.old, &lzma.bytes(), false),
    );

    // roundtrip: split mode and edit mode.
    let mut split = vec![0u8];
    split.extend_from_slice(&(200u16).to_le_bytes());
    split.extend_from_slice(&random_bytes(6, 200));
    split.extend_from_slice(&random_bytes(6, 150));
    split.extend_from_slice(b"and some new text");
    put("roundtrip", "split", &split);
    let mut edits = vec![1u8];
    edits.extend_from_slice(&(1000u16).to_le_bytes());
    let base: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 253) as u8).collect();
    edits.extend_from_slice(&base);
    edits.extend_from_slice(&[
        10, 0, 0, 7, 200, 1, 1, 9, 44, 2, 2, 30, 100, 3, 3, 20, 50, 0, 4, 9,
    ]);
    put("roundtrip", "edits", &edits);
    let mut text = vec![3u8];
    text.extend_from_slice(&(60u16).to_le_bytes());
    text.extend_from_slice(b"fn main() { println!(\"hello\"); }                            ");
    text.extend_from_slice(b"fn main() { println!(\"hello, world\"); }");
    put("roundtrip", "text", &text);
    // Split mode with the AArch64 header bit (8): code with calls and page
    // addresses, then the same code with 64 bytes inserted in the middle,
    // so that the writer predicts through transform 8.
    let (a, b) = (a64_code(0), a64_code(64));
    let mut a64 = vec![8u8];
    a64.extend_from_slice(&u16::try_from(a.len()).unwrap().to_le_bytes());
    a64.extend_from_slice(&a);
    a64.extend_from_slice(&b);
    put("roundtrip", "a64", &a64);

    // apply_fixed_old: patches the writer makes at its default level in the
    // plain layout, the deltas coded with the delta model (codec 5), for
    // scattered changes, shifted 32-bit words and a short prefix (window 2^10).
    let mut scattered = old.clone();
    for i in (0..scattered.len()).step_by(29) {
        scattered[i] = scattered[i].wrapping_add(1 + (i % 3) as u8);
    }
    let mut shifted = old.clone();
    for w in shifted[..2048].chunks_exact_mut(16) {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]).wrapping_add(0x40);
        w[..4].copy_from_slice(&v.to_le_bytes());
    }
    let mut prefix = old[2048..2948].to_vec();
    for i in (0..prefix.len()).step_by(13) {
        prefix[i] ^= 0x20;
    }
    prefix.extend_from_slice(b"a literal tail");
    for (name, new) in [
        ("diff-model-scattered", &scattered),
        ("diff-model-shifted", &shifted),
        ("diff-model-prefix", &prefix),
    ] {
        let patch = deltaswap::DiffOptions::new()
            .threads(1)
            .diff(&old, new)
            .unwrap();
        // The writer puts the plain layout's deltas under the model only.
        let info = deltaswap::inspect(&patch[..]).unwrap();
        let [_, runs, lens, deltas, _] = info.streams();
        assert!(
            runs.1 == 0 && lens.1 == 0 && deltas.1 > 0,
            "{name}: not in plain layout: {:?}",
            info.streams()
        );
        put("apply_fixed_old", name, &patch);
    }

    // apply_structured: arbitrary bytes (any input decodes).
    for (i, len) in [64usize, 256, 1024].into_iter().enumerate() {
        put(
            "apply_structured",
            &format!("random-{i}"),
            &random_bytes(100 + i as u64, len),
        );
    }
    // ... and inputs written for the plain layout (checked to decode back by
    // `structured_seeds_are_current`).
    for (name, _, inp) in structured_seeds() {
        let mut bytes = Vec::new();
        structured::Emit::emit(&inp, &mut bytes);
        put("apply_structured", name, &bytes);
    }
}

/// Open findings: crash inputs of bugs in `src/` that are not fixed yet, kept
/// under `tests/fixtures/fuzz-regressions/open/<target>/` and replayed strictly
/// here. When the bug is fixed, move the file up into
/// `tests/fixtures/fuzz-regressions/<target>/` (replayed by every `cargo test`).
/// See docs/SECURITY.md, "Open findings".
#[test]
#[ignore = "open findings in src/: replays inputs that still fail"]
fn open_findings_replay() {
    checks::STRICT.with(|s| s.set(true));
    let base = root().join("tests/fixtures/fuzz-regressions/open");
    let mut failed = Vec::new();
    for t in TARGETS {
        for f in files(&base.join(t)) {
            let data = fs::read(&f).unwrap();
            let (old, patch) = match t {
                "apply_fixed_old" => (checks::fixed_old(), data.clone()),
                "apply_any_old" => {
                    let n = u16::from_le_bytes([data[0], data[1]]);
                    let k = usize::from(n & 0x7fff).min(data.len() - 2);
                    let (o, p) = data[2..].split_at(k);
                    let p = if n & 0x8000 != 0 {
                        checks::fix_old_fields(p, o)
                    } else {
                        p.to_vec()
                    };
                    (o.to_vec(), p)
                }
                _ => (Vec::new(), data.clone()),
            };
            // The same patch through readers that differ only in how many
            // bytes each read call returns.
            let slice = deltaswap::apply_with_limits(&old, &patch, checks::limits()).err();
            let mut out = Vec::new();
            let trickled =
                deltaswap::PatchReader::with_limits(checks::Trickle::new(&patch), checks::limits())
                    .and_then(|r| r.apply_to(&old[..], &mut out))
                    .err();
            let one = deltaswap::PatchReader::with_limits(OneByte(&patch), checks::limits())
                .and_then(|r| r.apply_to(&old[..], &mut Vec::new()))
                .err();
            eprintln!(
                "{}:\n  slice:      {slice:?}\n  trickled:   {trickled:?}\n  1 byte/read: {one:?}",
                f.display()
            );
            if std::panic::catch_unwind(|| replay(t, &f)).is_err() {
                failed.push(f.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "open findings still fail: {failed:?}");
}

/// A patch reader returning one byte per call.
struct OneByte<'a>(&'a [u8]);

impl std::io::Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(dst)) => {
                *dst = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}
