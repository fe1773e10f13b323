//! The streaming applier against the oracle on patches the diff engine never
//! writes (random operation plans, odd run splits, any codec per stream) and on
//! randomly mutated patches.

use proptest::prelude::*;

use crate::builder::{op, plan, random_bytes, varint, Codec, Header, Op, Patch, SegmentData};
use crate::builder::{DELTA_BYTES, DELTA_LENS, ZERO_RUNS};
use crate::{apply_all, naive};

/// One generated operation: how much to copy (as a fraction of what is left of
/// the old file), how many literals, where to seek next, which copied bytes change.
#[derive(Clone, Debug)]
struct OpSeed {
    copy_frac: u16,
    lit: u16,
    seek_to: u16,
    change_every: u8,
    new_segment: bool,
}

fn op_seed() -> impl Strategy<Value = OpSeed> {
    (
        any::<u16>(),
        0u16..40,
        any::<u16>(),
        any::<u8>(),
        prop::bool::weighted(0.25),
    )
        .prop_map(
            |(copy_frac, lit, seek_to, change_every, new_segment)| OpSeed {
                copy_frac,
                lit,
                seek_to,
                change_every,
                new_segment,
            },
        )
}

/// Builds new from old by executing the seeds; returns new and the operations
/// grouped in segments.
fn execute(old: &[u8], seeds: &[OpSeed], seed: u64) -> (Vec<u8>, Vec<Vec<Op>>) {
    let noise = random_bytes(seed, 1 << 16);
    let mut nz = 0usize;
    let mut next = || {
        nz = (nz + 1) % noise.len();
        noise[nz]
    };
    let mut new = Vec::new();
    let mut segs: Vec<Vec<Op>> = vec![Vec::new()];
    let mut p = 0usize;
    for s in seeds {
        let left = old.len() - p;
        let copy = left * usize::from(s.copy_frac) / 65535;
        let lit = usize::from(s.lit);
        if copy == 0 && lit == 0 {
            continue;
        }
        for (k, b) in old[p..p + copy].iter().enumerate() {
            let every = usize::from(s.change_every % 16);
            let changed = every != 0 && k % every == 0;
            new.push(if changed {
                b.wrapping_add(next().max(1))
            } else {
                *b
            });
        }
        for _ in 0..lit {
            new.push(next());
        }
        let target = old.len() * usize::from(s.seek_to) / 65535;
        let seek = target as i64 - (p + copy) as i64;
        if s.new_segment && !segs.last().unwrap().is_empty() {
            segs.push(Vec::new());
        }
        segs.last_mut()
            .unwrap()
            .push(op(copy as u64, lit as u64, seek));
        p = target;
    }
    segs.retain(|s| !s.is_empty());
    (new, segs)
}

/// Re-cuts a segment's run pairs so that no run is longer than `k` bytes: still
/// valid, but not what the diff engine writes.
fn split_runs(d: &mut SegmentData, k: u64) {
    let read = |v: &[u8]| {
        let mut out = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let (mut x, mut sh) = (0u64, 0);
            loop {
                let b = v[i];
                i += 1;
                x |= u64::from(b & 0x7f) << sh;
                sh += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            out.push(x);
        }
        out
    };
    let zeros = read(&d.streams[ZERO_RUNS]);
    let lens = read(&d.streams[DELTA_LENS]);
    let mut pairs = Vec::new();
    for (mut z, mut c) in zeros.into_iter().zip(lens) {
        while z > k {
            pairs.push((k, 0));
            z -= k;
        }
        while c > k {
            pairs.push((z, k));
            z = 0;
            c -= k;
        }
        pairs.push((z, c));
    }
    d.streams[ZERO_RUNS].clear();
    d.streams[DELTA_LENS].clear();
    for (z, c) in pairs {
        assert!(z > 0 || c > 0);
        d.streams[ZERO_RUNS].extend(varint(z));
        d.streams[DELTA_LENS].extend(varint(c));
    }
}

fn codec(zstd: bool) -> Codec {
    if zstd {
        Codec::Zstd
    } else {
        Codec::Raw
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Valid patches of any shape: the streaming applier and the oracle both
    /// produce exactly the new file.
    #[test]
    fn random_plans_apply_like_the_oracle(
        old in prop::collection::vec(any::<u8>(), 0..1500),
        seeds in prop::collection::vec(op_seed(), 0..12),
        noise_seed in any::<u64>(),
        run_split in prop::option::of(1u64..6),
        codecs in prop::array::uniform5(any::<bool>()),
    ) {
        let (new, ops) = execute(&old, &seeds, noise_seed);
        let mut segs = plan(&old, &new, &ops);
        if let Some(k) = run_split {
            for d in &mut segs {
                split_runs(d, k);
            }
        }
        let patch = Patch {
            header: Header::for_files(&old, &new),
            segments: segs.iter().map(|d| d.encode(codecs.map(codec))).collect(),
            trailer: Vec::new(),
        }
        .bytes();
        prop_assert_eq!(naive::apply(&old, &patch).unwrap(), new.clone());
        let out = apply_all(&old, &patch).unwrap();
        prop_assert!(out == new);
        // The delta bytes are exactly the changed bytes (none are zero).
        let deltas: usize = segs.iter().map(|d| d.streams[DELTA_BYTES].len()).sum();
        prop_assert!(deltas <= new.len());
    }

    /// Randomly damaged diff patches: the streaming applier and the oracle
    /// accept and refuse the same ones, and anything accepted is the new file.
    #[test]
    fn mutated_patches_agree_with_the_oracle(
        old in prop::collection::vec(any::<u8>(), 0..800),
        tail in prop::collection::vec(any::<u8>(), 0..100),
        mutations in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..5), 1..4),
        zstd in any::<bool>(),
    ) {
        let mut new = old.clone();
        if new.len() > 10 {
            let (third, half) = (new.len() / 3, new.len() / 2);
            new[third] ^= 0x21;
            new.drain(half..half + 5);
        }
        new.extend(&tail);
        let patch = if zstd {
            deltaswap::diff(&old, &new).unwrap()
        } else {
            // Raw streams expose the structure to the mutations.
            let common = old.len().min(new.len());
            let ops = if new.is_empty() {
                vec![]
            } else {
                vec![vec![op(common as u64, (new.len() - common) as u64, 0)]]
            };
            let segs = plan(&old, &new, &ops);
            Patch {
                header: Header::for_files(&old, &new),
                segments: segs.iter().map(|d| d.encode([Codec::Raw; 5])).collect(),
                trailer: Vec::new(),
            }
            .bytes()
        };
        let mut p = patch.clone();
        for (at, v, how) in mutations {
            let at = at % (p.len() + 1);
            match how {
                0 if at < p.len() => p[at] ^= v | 1,
                1 if at < p.len() => p[at] = v,
                2 => p.insert(at, v),
                3 if at < p.len() => {
                    p.remove(at);
                }
                _ => p.truncate(at),
            }
        }
        // apply_all asserts that the oracle and every applier agree.
        if let Ok(out) = apply_all(&old, &p) {
            prop_assert!(out == new, "a damaged patch produced a different file");
        }
    }
}
