//! Criterion benches of the codec on generated inputs: `cargo bench --bench codec`.
//!
//! * `library`: a synthetic ~3.6 MiB "shared library" (machine-code-like bytes
//!   with rel32 branch/call displacements, plus a string table) and a new
//!   version with small scattered edits: inserted instructions shift every
//!   later address, so the displacements that cross an edit change, which is
//!   what makes real executable deltas hard.
//! * `unrelated-512KiB`: two unrelated 512 KiB random buffers (the worst case: no match).
//! * `rebuild-16MiB`: a 16 MiB file and its rebuild, which differs only in
//!   a 20-byte build ID and, near the end, the 38 hex digits of a debug
//!   file's name that spell it and a 4-byte checksum (the edit layout,
//!   docs/FORMAT.md: the diff is a comparison and two hashes).
//!
//! Group `diff` measures `DiffOptions::diff` (suffix-array index + matching +
//! stream compression) at the default settings, single-threaded, and at
//! level 20 (the delta model tried: the smallest patches); group `apply`
//! measures the in-memory `apply` and the streaming `PatchReader::apply_to`
//! into a sink, and the in-memory `apply` of the level-20 patch. Throughput
//! is bytes of the new file.
//! Every patch is checked once (apply == new) outside the timed loops.

use std::hint::black_box;
use std::io;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use deltaswap::{DiffOptions, PatchReader};

/// splitmix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// One instruction of the synthetic code: fixed bytes and, optionally, a rel32
/// displacement (at the end of the instruction) to the instruction `target`.
#[derive(Clone)]
struct Insn {
    id: usize,
    bytes: Vec<u8>,
    target: Option<usize>,
}

/// Opcode bytes weighted roughly like x86-64 code (mov, lea, push/pop, ...).
const OPCODES: &[u8] = &[
    0x48, 0x48, 0x48, 0x48, 0x89, 0x89, 0x89, 0x8b, 0x8b, 0x8b, 0x8d, 0x8d, 0x0f, 0x0f, 0x83, 0x83,
    0x85, 0x31, 0x39, 0x3b, 0x41, 0x44, 0x4c, 0x50, 0x53, 0x55, 0x5b, 0x5d, 0xc3, 0xc7, 0xf6, 0xff,
    0x74, 0x75, 0x66, 0x90,
];

fn random_insn(rng: &mut Rng, id: usize, n_targets: usize) -> Insn {
    let kind = rng.below(100);
    let mut bytes = Vec::with_capacity(8);
    let target = if kind < 12 && n_targets > 0 {
        // call/jmp rel32 to another instruction.
        bytes.push(if kind < 8 { 0xe8 } else { 0xe9 });
        Some(rng.below(n_targets as u64) as usize)
    } else if kind < 20 && n_targets > 0 {
        // RIP-relative lea/mov: 48 8d 05 disp32.
        bytes.extend_from_slice(&[0x48, if kind < 16 { 0x8d } else { 0x8b }, 0x05]);
        Some(rng.below(n_targets as u64) as usize)
    } else {
        let len = 1 + rng.below(6) as usize;
        for i in 0..len {
            if i == 0 || rng.below(3) > 0 {
                bytes.push(OPCODES[rng.below(OPCODES.len() as u64) as usize]);
            } else {
                // Small immediates and ModRM bytes: mostly low values.
                bytes.push((rng.below(64) as u8) << (rng.below(3) as u8));
            }
        }
        None
    };
    Insn { id, bytes, target }
}

/// Lays out the instructions and encodes every rel32 against its target's address.
fn assemble(code: &[Insn], ids: usize, data: &[u8]) -> Vec<u8> {
    let mut addr = vec![0i64; ids];
    let mut pos = 0i64;
    for insn in code {
        addr[insn.id] = pos;
        pos += insn.bytes.len() as i64 + if insn.target.is_some() { 4 } else { 0 };
    }
    let mut out = Vec::with_capacity(pos as usize + data.len());
    for insn in code {
        out.extend_from_slice(&insn.bytes);
        if let Some(t) = insn.target {
            let next = out.len() as i64 + 4;
            out.extend_from_slice(&((addr[t] - next) as i32).to_le_bytes());
        }
    }
    out.extend_from_slice(data);
    out
}

/// A string table: words separated by NULs, like .rodata/.dynstr.
fn string_table(rng: &mut Rng, size: usize) -> Vec<u8> {
    const SYL: &[&str] = &[
        "lib", "ssl", "ctx", "get", "set", "init", "free", "new", "read", "write", "error", "x509",
        "bio", "evp", "md", "cipher", "_", "ex", "cert", "key",
    ];
    let mut t = Vec::with_capacity(size + 64);
    while t.len() < size {
        for _ in 0..2 + rng.below(4) {
            t.extend_from_slice(SYL[rng.below(SYL.len() as u64) as usize].as_bytes());
        }
        t.push(0);
    }
    t.truncate(size);
    t
}

/// A ~`size`-byte old library and a new version with scattered small edits.
fn library_pair(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(0x5eed_0001);
    let data_size = size / 8;
    // Instructions average about 4.5 bytes.
    let n = (size - data_size) * 2 / 9;
    let mut code: Vec<Insn> = (0..n).map(|i| random_insn(&mut rng, i, n)).collect();
    let data = string_table(&mut rng, data_size);
    let mut ids = n;
    let old = assemble(&code, ids, &data);

    // New version: ~40 patched spots. Each inserts a few instructions (shifting
    // everything after it) and rewrites a few immediates nearby.
    let mut spots: Vec<usize> = (0..40).map(|_| rng.below(n as u64) as usize).collect();
    spots.sort_unstable();
    for &at in spots.iter().rev() {
        let extra = 1 + rng.below(12) as usize;
        let mut inserted = Vec::with_capacity(extra);
        for _ in 0..extra {
            inserted.push(random_insn(&mut rng, ids, n));
            ids += 1;
        }
        code.splice(at..at, inserted);
        for k in 0..4 {
            if let Some(insn) = code.get_mut(at + extra + k * 3) {
                if insn.target.is_none() {
                    if let Some(b) = insn.bytes.last_mut() {
                        *b = b.wrapping_add(8);
                    }
                }
            }
        }
    }
    let mut new_data = data;
    // A couple of changed strings (version tags) in the data.
    for _ in 0..4 {
        let at = rng.below(new_data.len() as u64 - 16) as usize;
        new_data[at..at + 6].copy_from_slice(b"3.0.20");
    }
    let new = assemble(&code, ids, &new_data);
    (old, new)
}

fn unrelated_pair(size: usize) -> (Vec<u8>, Vec<u8>) {
    (Rng(1).bytes(size), Rng(2).bytes(size))
}

fn rebuild_pair(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(3);
    let mut old = rng.bytes(size);
    let mut new = old.clone();
    for (file, id) in [(&mut old, rng.bytes(20)), (&mut new, rng.bytes(20))] {
        file[0x280..0x294].copy_from_slice(&id);
        let name: Vec<u8> = id[1..]
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect();
        let at = size - 4096;
        file[at..at + 38].copy_from_slice(&name);
        file[at + 38..at + 44].copy_from_slice(b".debug");
        let crc = rng.bytes(4);
        file[at + 48..at + 52].copy_from_slice(&crc);
    }
    (old, new)
}

struct Case {
    name: &'static str,
    old: Vec<u8>,
    new: Vec<u8>,
    patch: Vec<u8>,
    /// The level-20 patch.
    smallest: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, (old, new)) in [
        ("library", library_pair(4 << 20)),
        ("unrelated-512KiB", unrelated_pair(512 << 10)),
        ("rebuild-16MiB", rebuild_pair(16 << 20)),
    ] {
        let patch = DiffOptions::new().diff(&old, &new).expect("diff");
        // Correctness, once, outside the timed loops.
        let out = deltaswap::apply(&old, &patch).expect("apply");
        assert!(out == new, "{name}: apply(diff(old, new)) != new");
        let mut streamed = Vec::new();
        let verified = PatchReader::new(&patch[..])
            .expect("patch header")
            .apply_to(&old[..], &mut streamed)
            .expect("streaming apply");
        assert!(streamed == new, "{name}: streaming apply != new");
        assert_eq!(verified.len(), new.len() as u64);
        let single = DiffOptions::new()
            .threads(1)
            .diff(&old, &new)
            .expect("diff");
        assert!(single == patch, "{name}: patch depends on the thread count");
        let smallest = DiffOptions::new().level(20).diff(&old, &new).expect("diff");
        let out = deltaswap::apply(&old, &smallest).expect("apply");
        assert!(out == new, "{name}: apply(diff at level 20) != new");
        eprintln!(
            "{name}: old {} B, new {} B, patch {} B ({:.2}% of new), {} B at level 20",
            old.len(),
            new.len(),
            patch.len(),
            100.0 * patch.len() as f64 / new.len() as f64,
            smallest.len()
        );
        v.push(Case {
            name,
            old,
            new,
            patch,
            smallest,
        });
    }
    v
}

fn benches(c: &mut Criterion) {
    let cases = cases();

    let mut g = c.benchmark_group("diff");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for case in &cases {
        g.throughput(Throughput::Bytes(case.new.len() as u64));
        g.bench_with_input(BenchmarkId::new("default", case.name), case, |b, case| {
            b.iter(|| DiffOptions::new().diff(black_box(&case.old), black_box(&case.new)))
        });
        g.bench_with_input(BenchmarkId::new("threads-1", case.name), case, |b, case| {
            b.iter(|| {
                DiffOptions::new()
                    .threads(1)
                    .diff(black_box(&case.old), black_box(&case.new))
            })
        });
        g.bench_with_input(BenchmarkId::new("level-20", case.name), case, |b, case| {
            b.iter(|| {
                DiffOptions::new()
                    .level(20)
                    .diff(black_box(&case.old), black_box(&case.new))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("apply");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for case in &cases {
        g.throughput(Throughput::Bytes(case.new.len() as u64));
        g.bench_with_input(BenchmarkId::new("in-memory", case.name), case, |b, case| {
            b.iter(|| deltaswap::apply(black_box(&case.old), black_box(&case.patch)))
        });
        g.bench_with_input(
            BenchmarkId::new("streaming-to-sink", case.name),
            case,
            |b, case| {
                b.iter(|| -> Result<_, deltaswap::Error> {
                    PatchReader::new(black_box(&case.patch[..]))?
                        .apply_to(black_box(&case.old[..]), io::sink())
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("in-memory-level-20", case.name),
            case,
            |b, case| b.iter(|| deltaswap::apply(black_box(&case.old), black_box(&case.smallest))),
        );
    }
    g.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
