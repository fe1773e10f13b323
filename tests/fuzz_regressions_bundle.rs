//! Replays, through the checks the bundle fuzz targets run
//! (`fuzz/src/bundle_inputs.rs` → `deltaswap::fuzzing`, feature `fuzzing`):
//!
//! * every input saved under `tests/fixtures/fuzz-regressions/bundle_model/`
//!   and `.../bundle_recover/`;
//! * the committed seed corpora `fuzz/corpus/bundle_model/` and
//!   `fuzz/corpus/bundle_recover/`.
//!
//! `cargo test --features fuzzing --test fuzz_regressions_bundle -- --ignored
//! write_bundle_seed_corpus` regenerates the seed corpora.

#[path = "../fuzz/src/bundle_inputs.rs"]
#[allow(dead_code)]
mod bundle_inputs;
#[path = "../fuzz/src/heap.rs"]
#[allow(dead_code)]
mod heap;

use std::fs;
use std::path::{Path, PathBuf};

use deltaswap::fuzzing::{
    Act, Call, HostileEntry, HostileInstalled, HostileJournal, HostileOp, HostileState, Name,
    Plant, RecoverInput, Seal, Step, Ver,
};

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

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

fn replay_dir(target: &str, dir: &Path) -> usize {
    let mut n = 0;
    for f in files(dir) {
        let data = fs::read(&f).unwrap();
        eprintln!("{target}: {}", f.display());
        match target {
            "bundle_model" => bundle_inputs::check_model(&data),
            "bundle_recover" => bundle_inputs::check_recover(&data),
            t => panic!("unknown target {t}"),
        }
        n += 1;
    }
    n
}

#[test]
fn bundle_model_regressions_and_seeds() {
    let r = root();
    let a = replay_dir(
        "bundle_model",
        &r.join("tests/fixtures/fuzz-regressions/bundle_model"),
    );
    let b = replay_dir("bundle_model", &r.join("fuzz/corpus/bundle_model"));
    println!("bundle_model: {a} regressions, {b} seeds replayed");
    assert!(b > 0, "no seeds in fuzz/corpus/bundle_model");
}

#[test]
fn bundle_recover_regressions_and_seeds() {
    let r = root();
    let a = replay_dir(
        "bundle_recover",
        &r.join("tests/fixtures/fuzz-regressions/bundle_recover"),
    );
    let b = replay_dir("bundle_recover", &r.join("fuzz/corpus/bundle_recover"));
    println!("bundle_recover: {a} regressions, {b} seeds replayed");
    assert!(b > 0, "no seeds in fuzz/corpus/bundle_recover");
}

// ---------------------------------------------------------------------------
// Seeds.

fn install(i: u8) -> Step {
    Step::Run(Act::Install(i))
}

fn crash(act: Act, after: u16, pick: u64) -> Step {
    Step::Crash { act, after, pick }
}

fn fail(act: Act, at: u16, errno: u8, persistent: bool) -> Step {
    Step::Fail {
        act,
        at,
        errno,
        persistent,
    }
}

fn model_seeds() -> Vec<(String, Vec<Step>)> {
    use Act::{Install, Recover, Remove};
    let mut out: Vec<(String, Vec<Step>)> = vec![
        (
            "chain".into(),
            vec![
                install(0),
                install(1),
                Step::Status,
                Step::Run(Remove),
                install(2),
                install(3),
                Step::Run(Remove),
            ],
        ),
        (
            "refusals".into(),
            vec![
                install(5),
                install(1),
                install(4),
                install(0),
                install(1),
                install(5),
                Step::Run(Remove),
                install(1),
                install(2),
            ],
        ),
        (
            "replay-b-prime".into(),
            vec![install(0), install(4), install(1), install(2), install(4)],
        ),
    ];
    for (i, k) in [8u16, 30, 60, 90, 120, 160].into_iter().enumerate() {
        out.push((
            format!("crash-install-{k}"),
            vec![
                install(0),
                crash(Install(1), k, i as u64),
                Step::Status,
                Step::Run(Recover),
                install(2),
            ],
        ));
    }
    for (i, k) in [10u16, 40, 70, 100].into_iter().enumerate() {
        out.push((
            format!("crash-remove-{k}"),
            vec![
                install(1),
                crash(Remove, k, 2 + i as u64),
                crash(Recover, 12, 3),
                Step::Run(Recover),
                install(3),
            ],
        ));
    }
    for (i, k) in [20u16, 50, 80, 110].into_iter().enumerate() {
        out.push((
            format!("crash-resume-{k}"),
            vec![
                install(0),
                crash(Install(2), k, 1 + 4 * i as u64),
                install(1),
                install(2),
                Step::Status,
            ],
        ));
    }
    for (i, k) in [5u16, 25, 45, 75, 105].into_iter().enumerate() {
        out.push((
            format!("fail-{k}"),
            vec![
                install(0),
                fail(Install(1), k, i as u8, i % 2 == 0),
                Step::Run(Recover),
                fail(Remove, k / 2, 1, false),
                Step::Run(Recover),
                install(2),
            ],
        ));
    }
    out
}

fn state(highest: u64, entries: Vec<HostileEntry>, id: u8, count: Option<u32>) -> HostileState {
    HostileState {
        highest,
        baseline: b"26.3".to_vec(),
        installed_flag: None,
        installed: Some(HostileInstalled {
            id,
            sequence: highest,
            label: b"26.3 (a)".to_vec(),
            count,
            entries,
        }),
    }
}

fn entry(path: u8, base: Option<u8>, cur: Option<u8>) -> HostileEntry {
    let v = |x: Option<u8>| Ver {
        flag: u8::from(x.is_some()),
        pick: x.unwrap_or(0),
    };
    HostileEntry {
        path: Name::Pick(path),
        base: v(base),
        cur: v(cur),
    }
}

fn op(path: u8, stage: u8, action: u8, base_created: u8) -> HostileOp {
    HostileOp {
        path: Name::Pick(path),
        stage: Name::Pick(stage),
        action,
        base_created,
    }
}

fn seal() -> Seal {
    Seal {
        trailing: Vec::new(),
        how: 0,
        wrong_magic: false,
        cut: None,
    }
}

fn journal(phase: u8, bundle: u8, ops: Vec<HostileOp>) -> Plant {
    Plant::Journal(
        HostileJournal {
            phase,
            bundle,
            state: state(2, vec![entry(0, Some(3), Some(4))], 2, None),
            count: None,
            ops,
        },
        seal(),
    )
}

fn recover_seeds() -> Vec<(String, RecoverInput)> {
    use Call::{Install, Recover, Remove, Status};
    let all = vec![Recover, Status, Install(1), Remove, Install(2), Recover];
    let base = RecoverInput {
        start: 1,
        state_outside: false,
        base_link_secret: false,
        state: Plant::Keep,
        journal: Plant::Keep,
        journal_tmp: None,
        calls: all.clone(),
    };
    let with = |name: &str, f: &dyn Fn(&mut RecoverInput)| {
        let mut i = base.clone();
        f(&mut i);
        (name.to_string(), i)
    };
    let mut seeds = vec![
        with("keep-a", &|_| {}),
        with("keep-mid", &|i| i.start = 3),
        with("keep-mid-outside", &|i| {
            i.start = 3;
            i.state_outside = true
        }),
        with("keep-b-outside-secret-link", &|i| {
            i.start = 2;
            i.state_outside = true;
            i.base_link_secret = true
        }),
        with("no-state", &|i| i.state = Plant::Absent),
        with("raw-state", &|i| {
            i.state = Plant::Raw(b"DSSTATE1 garbage".to_vec())
        }),
        with("raw-journal", &|i| {
            i.journal = Plant::Raw(b"DSJRNL01\x01".to_vec());
            i.journal_tmp = Some(b"partial".to_vec())
        }),
        with("state-huge-count", &|i| {
            i.state = Plant::State(
                state(1, vec![entry(0, Some(1), Some(2))], 1, Some(u32::MAX)),
                seal(),
            )
        }),
        with("state-escaping-paths", &|i| {
            i.state = Plant::State(
                state(
                    1,
                    vec![
                        entry(9, Some(1), None),
                        entry(10, None, Some(2)),
                        entry(7, Some(3), Some(3)),
                    ],
                    1,
                    None,
                ),
                seal(),
            )
        }),
        with("state-consistent-secret", &|i| {
            i.base_link_secret = true;
            i.state = Plant::State(state(1, vec![entry(0, Some(2), Some(5))], 1, None), seal())
        }),
        with("journal-committed-stage-escape", &|i| {
            i.journal = journal(1, 2, vec![op(0, 5, 1, 0), op(1, 6, 1, 0)])
        }),
        with("journal-uncommitted-stage-escape", &|i| {
            i.journal = journal(0, 2, vec![op(0, 5, 1, 1), op(2, 10, 2, 1)])
        }),
        with("journal-symlink-paths", &|i| {
            i.journal = journal(1, 2, vec![op(7, 1, 2, 0), op(8, 1, 1, 0), op(17, 0, 2, 0)])
        }),
        with("journal-removal", &|i| {
            i.journal = journal(1, 0, vec![op(0, 1, 1, 0), op(4, 0, 2, 0)])
        }),
        with("journal-huge-count", &|i| {
            i.journal = Plant::Journal(
                HostileJournal {
                    phase: 0,
                    bundle: 2,
                    state: state(2, vec![], 2, Some(0x7fff_ffff)),
                    count: Some(u32::MAX),
                    ops: vec![op(0, 1, 1, 1)],
                },
                seal(),
            )
        }),
        with("journal-bad-seal", &|i| {
            i.journal = Plant::Journal(
                HostileJournal {
                    phase: 1,
                    bundle: 2,
                    state: state(2, vec![], 2, None),
                    count: None,
                    ops: vec![op(0, 1, 1, 0)],
                },
                Seal {
                    trailing: b"trailing".to_vec(),
                    how: 1,
                    wrong_magic: true,
                    cut: None,
                },
            )
        }),
        with("journal-in-state-file", &|i| {
            i.state = journal(1, 2, vec![op(0, 1, 1, 0)])
        }),
        with("journal-raw-names", &|i| {
            i.journal = Plant::Journal(
                HostileJournal {
                    phase: 1,
                    bundle: 2,
                    state: state(2, vec![], 2, None),
                    count: None,
                    ops: vec![HostileOp {
                        path: Name::Raw(b"lib/c1".to_vec()),
                        stage: Name::Raw(b".deltaswap-stage.0/../../../outside/secret".to_vec()),
                        action: 2,
                        base_created: 1,
                    }],
                },
                seal(),
            )
        }),
        with("baseline-start-journal", &|i| {
            i.start = 0;
            i.journal = journal(0, 1, vec![op(0, 1, 1, 1), op(4, 0, 0, 0)])
        }),
    ];
    // Correctly sealed files cut at every byte: the decoder's truncation checks
    // behind the seal (a random change never passes the seal to reach them).
    let cut_state = state(
        7,
        vec![entry(0, Some(1), Some(2)), entry(3, None, Some(4))],
        2,
        None,
    );
    let cut_journal = HostileJournal {
        phase: 1,
        bundle: 2,
        state: cut_state.clone(),
        count: None,
        ops: vec![op(0, 1, 1, 0), op(3, 2, 2, 1)],
    };
    let plant = |is_state: bool, seal: Seal| {
        if is_state {
            Plant::State(cut_state.clone(), seal)
        } else {
            Plant::Journal(cut_journal.clone(), seal)
        }
    };
    for (what, is_state) in [("state", true), ("journal", false)] {
        // The unsealed length: the whole file less its 32-byte SHA-256 seal.
        let len = deltaswap::fuzzing::plant_bytes(&plant(is_state, seal()))
            .unwrap()
            .len()
            - 32;
        for cut in 0..len {
            let cut_seal = Seal {
                cut: Some(u16::try_from(cut).unwrap()),
                ..seal()
            };
            let p = plant(is_state, cut_seal);
            seeds.push(with(&format!("{what}-sealed-cut-{cut:03}"), &|i| {
                if is_state {
                    i.state = p.clone();
                } else {
                    i.journal = p.clone();
                }
            }));
        }
    }
    seeds
}

#[test]
fn seed_encodings_round_trip() {
    for (name, steps) in model_seeds() {
        let bytes = bundle_inputs::encode_steps(&steps);
        assert_eq!(bundle_inputs::model_steps(&bytes), steps, "{name}");
    }
    for (name, input) in recover_seeds() {
        let bytes = bundle_inputs::encode_recover(&input);
        assert_eq!(bundle_inputs::recover_input(&bytes), input, "{name}");
    }
}

#[test]
#[ignore]
fn write_bundle_seed_corpus() {
    let r = root();
    let dm = r.join("fuzz/corpus/bundle_model");
    let dr = r.join("fuzz/corpus/bundle_recover");
    for d in [&dm, &dr] {
        fs::create_dir_all(d).unwrap();
        for f in files(d) {
            if f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                fs::remove_file(f).unwrap();
            }
        }
    }
    for (name, steps) in model_seeds() {
        fs::write(
            dm.join(format!("seed-{name}")),
            bundle_inputs::encode_steps(&steps),
        )
        .unwrap();
    }
    for (name, input) in recover_seeds() {
        fs::write(
            dr.join(format!("seed-{name}")),
            bundle_inputs::encode_recover(&input),
        )
        .unwrap();
    }
}
