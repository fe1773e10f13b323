//! Replays, through the same checks the fuzz targets run (`fuzz/src/checks.rs`):
//!
//! * every crash input saved under `tests/fixtures/fuzz-regressions/<target>/`
//!   (`apply_structured` crashes are saved as `<name>.old` + `<name>.patch`,
//!   since its fuzzer input needs the `arbitrary` crate to decode);
//! * the committed seed corpora `fuzz/corpus/<target>/` (except
//!   `apply_structured`, whose seeds are raw `arbitrary` bytes).
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

#[test]
fn seed_corpora_pass_the_checks() {
    for t in TARGETS {
        if t == "apply_structured" {
            continue;
        }
        let seeds = files(&root().join("fuzz/corpus").join(t));
        assert!(
            seeds.len() >= 3,
            "fuzz/corpus/{t} has {} seeds",
            seeds.len()
        );
        for f in seeds {
            replay(t, &f);
        }
    }
}

/// The seeds: valid and nearly valid patches, so that the fuzzer starts past
/// the header checks.
#[test]
#[ignore = "writes fuzz/corpus; run explicitly to regenerate the seeds"]
fn write_seed_corpus() {
    use builder::{assemble, op, plan, random_bytes, sample, Codec};
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
    put(
        "apply_any_old",
        "empty-old",
        &any(b"", &diff(b"", b"brand new"), false),
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

    // apply_structured: arbitrary bytes (any input decodes).
    for (i, len) in [64usize, 256, 1024].into_iter().enumerate() {
        put(
            "apply_structured",
            &format!("random-{i}"),
            &random_bytes(100 + i as u64, len),
        );
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
