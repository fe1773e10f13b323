//! The bundle fuzz targets' inputs: the fuzzer's bytes decoded with
//! `arbitrary::Unstructured` into the checkers' input types
//! (`deltaswap::fuzzing`, feature `fuzzing`), an encoder for the seed corpora,
//! and the check each target runs.
//!
//! Shared through `#[path]` by the fuzz crate (`fuzz/src/lib.rs`) and by the
//! main crate's `tests/fuzz_regressions_bundle.rs`, so that a saved input is
//! replayed through exactly the check the fuzzer ran. Both roots declare
//! `heap` (the counting allocator of `fuzz/src/heap.rs`) next to this module.
//!
//! The layout is byte oriented (one byte per choice, little-endian integers,
//! byte-counted strings), so that mutations stay meaningful and the seeds are
//! easy to write. Bytes missing at the end read as zeros.

use arbitrary::Unstructured;
use deltaswap::fuzzing::{
    bundle_model, bundle_recover, warm_up, Act, Call, HostileEntry, HostileInstalled,
    HostileJournal, HostileOp, HostileState, Name, Plant, RecoverInput, Seal, Step, Ver, MAX_CALLS,
    MAX_STEPS,
};

use crate::heap::peak_during;

/// Rust heap bytes one `bundle_recover` input may hold at once: the models
/// (a few KiB each), the installer's two 256 KiB buffers, and slack. A state
/// or journal declaring a huge count or length must stay under it.
pub const RECOVER_HEAP_BUDGET: usize = 4 << 20;

fn byte(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary::<u8>().unwrap_or(0)
}

fn u16le(u: &mut Unstructured<'_>) -> u16 {
    u16::from_le_bytes([byte(u), byte(u)])
}

fn u32le(u: &mut Unstructured<'_>) -> u32 {
    u32::from_le_bytes([byte(u), byte(u), byte(u), byte(u)])
}

fn u64le(u: &mut Unstructured<'_>) -> u64 {
    let mut b = [0u8; 8];
    for x in &mut b {
        *x = byte(u);
    }
    u64::from_le_bytes(b)
}

/// `n` bytes (as many as remain).
fn take(u: &mut Unstructured<'_>, n: usize) -> Vec<u8> {
    let n = n.min(u.len());
    u.bytes(n).map(|b| b.to_vec()).unwrap_or_default()
}

/// A byte-counted string.
fn bytes8(u: &mut Unstructured<'_>) -> Vec<u8> {
    let n = usize::from(byte(u));
    take(u, n)
}

fn act(u: &mut Unstructured<'_>) -> Act {
    let b = byte(u);
    match b % 8 {
        6 => Act::Remove,
        7 => Act::Recover,
        i => Act::Install(i),
    }
}

/// The steps of `bundle_model`.
pub fn model_steps(data: &[u8]) -> Vec<Step> {
    let mut u = Unstructured::new(data);
    let mut steps = Vec::new();
    while !u.is_empty() && steps.len() < MAX_STEPS {
        let s = match byte(&mut u) % 8 {
            2 => Step::Status,
            3 | 4 => Step::Crash {
                act: act(&mut u),
                after: u16le(&mut u),
                pick: u64::from(u16le(&mut u)),
            },
            5 | 6 => {
                let act = act(&mut u);
                let at = u16le(&mut u);
                let e = byte(&mut u);
                Step::Fail {
                    act,
                    at,
                    errno: e & 0x7f,
                    persistent: e & 0x80 != 0,
                }
            }
            _ => Step::Run(act(&mut u)),
        };
        steps.push(s);
    }
    steps
}

fn name(u: &mut Unstructured<'_>) -> Name {
    let b = byte(u);
    if b < 0xf0 {
        Name::Pick(b)
    } else {
        Name::Raw(bytes8(u))
    }
}

/// 0 → 0, 1 or 2 → 1, else the byte itself (an invalid value 3 mod 4).
fn flag01(b: u8) -> u8 {
    match b % 4 {
        0 => 0,
        1 | 2 => 1,
        _ => b,
    }
}

fn ver(u: &mut Unstructured<'_>) -> Ver {
    Ver {
        flag: flag01(byte(u)),
        pick: byte(u),
    }
}

fn count(u: &mut Unstructured<'_>) -> Option<u32> {
    if byte(u) & 1 == 1 {
        Some(u32le(u))
    } else {
        None
    }
}

fn state(u: &mut Unstructured<'_>) -> HostileState {
    let highest = u64le(u);
    let baseline = bytes8(u);
    let flag = byte(u);
    let installed = (flag == 1).then(|| {
        let id = byte(u);
        let sequence = u64le(u);
        let label = bytes8(u);
        let count = count(u);
        let n = byte(u) % 8;
        let entries = (0..n)
            .map(|_| HostileEntry {
                path: name(u),
                base: ver(u),
                cur: ver(u),
            })
            .collect();
        HostileInstalled {
            id,
            sequence,
            label,
            count,
            entries,
        }
    });
    HostileState {
        highest,
        baseline,
        installed_flag: (flag != 1).then_some(flag),
        installed,
    }
}

fn journal(u: &mut Unstructured<'_>) -> HostileJournal {
    let phase = flag01(byte(u));
    let bundle = byte(u);
    let state = state(u);
    let count = count(u);
    let n = byte(u) % 8;
    let ops = (0..n)
        .map(|_| HostileOp {
            path: name(u),
            stage: name(u),
            action: match byte(u) {
                b if b % 4 == 3 => b,
                b => b % 4,
            },
            base_created: byte(u),
        })
        .collect();
    HostileJournal {
        phase,
        bundle,
        state,
        count,
        ops,
    }
}

fn seal(u: &mut Unstructured<'_>) -> Seal {
    let s = byte(u);
    Seal {
        how: match s % 4 {
            0 | 1 => 0,
            2 => 1,
            _ => 2,
        },
        wrong_magic: s & 0x10 != 0,
        trailing: if s & 0x20 != 0 { bytes8(u) } else { Vec::new() },
        cut: (s & 0x40 != 0).then(|| u16le(u)),
    }
}

fn plant(u: &mut Unstructured<'_>) -> Plant {
    match byte(u) % 5 {
        0 => Plant::Keep,
        1 => Plant::Absent,
        2 => {
            let n = usize::from(u16le(u));
            Plant::Raw(take(u, n))
        }
        3 => {
            let s = state(u);
            Plant::State(s, seal(u))
        }
        _ => {
            let j = journal(u);
            Plant::Journal(j, seal(u))
        }
    }
}

/// The input of `bundle_recover`.
pub fn recover_input(data: &[u8]) -> RecoverInput {
    let mut u = Unstructured::new(data);
    let start = byte(&mut u);
    let flags = byte(&mut u);
    let state = plant(&mut u);
    let journal = plant(&mut u);
    let journal_tmp = (flags & 4 != 0).then(|| bytes8(&mut u));
    let mut calls = Vec::new();
    while !u.is_empty() && calls.len() < MAX_CALLS {
        let b = byte(&mut u);
        calls.push(match b % 4 {
            0 => Call::Recover,
            1 => Call::Status,
            2 => Call::Install(b >> 2),
            _ => Call::Remove,
        });
    }
    RecoverInput {
        start,
        state_outside: flags & 1 != 0,
        base_link_secret: flags & 2 != 0,
        state,
        journal,
        journal_tmp,
        calls,
    }
}

/// The `bundle_model` target.
pub fn check_model(data: &[u8]) {
    bundle_model(&model_steps(data));
}

/// The `bundle_recover` target, with the heap budget.
pub fn check_recover(data: &[u8]) {
    let input = recover_input(data);
    warm_up();
    let ((), peak) = peak_during(|| bundle_recover(&input));
    assert!(
        peak <= RECOVER_HEAP_BUDGET,
        "bundle_recover held {peak} heap bytes, over the budget of {RECOVER_HEAP_BUDGET}"
    );
}

// ---------------------------------------------------------------------------
// Encoders, for the seed corpora (the inverse of the decoders above for the
// values they produce).

/// Bytes under construction.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    fn b(&mut self, x: u8) -> &mut Self {
        self.0.push(x);
        self
    }
    fn bytes(&mut self, x: &[u8]) -> &mut Self {
        self.0.extend_from_slice(x);
        self
    }
    fn s8(&mut self, x: &[u8]) -> &mut Self {
        let x = &x[..x.len().min(255)];
        self.b(x.len() as u8).bytes(x)
    }
    fn act(&mut self, a: Act) -> &mut Self {
        self.b(match a {
            Act::Install(i) => i % 6,
            Act::Remove => 6,
            Act::Recover => 7,
        })
    }
    fn name(&mut self, n: &Name) -> &mut Self {
        match n {
            Name::Pick(i) => self.b(*i % 0xf0),
            Name::Raw(b) => self.b(0xf0).s8(b),
        }
    }
    fn ver(&mut self, v: Ver) -> &mut Self {
        self.b(v.flag).b(v.pick)
    }
    fn count(&mut self, c: Option<u32>) -> &mut Self {
        match c {
            Some(n) => self.b(1).bytes(&n.to_le_bytes()),
            None => self.b(0),
        }
    }
    fn state(&mut self, s: &HostileState) -> &mut Self {
        self.bytes(&s.highest.to_le_bytes()).s8(&s.baseline);
        match &s.installed {
            None => self.b(s.installed_flag.filter(|&f| f != 1).unwrap_or(0)),
            Some(i) => {
                self.b(1)
                    .b(i.id)
                    .bytes(&i.sequence.to_le_bytes())
                    .s8(&i.label)
                    .count(i.count)
                    .b(i.entries.len().min(7) as u8);
                for e in i.entries.iter().take(7) {
                    self.name(&e.path).ver(e.base).ver(e.cur);
                }
                self
            }
        }
    }
    fn seal(&mut self, s: &Seal) -> &mut Self {
        let mut x = match s.how {
            0 => 0,
            1 => 2,
            _ => 3,
        };
        if s.wrong_magic {
            x |= 0x10;
        }
        if !s.trailing.is_empty() {
            x |= 0x20;
        }
        if s.cut.is_some() {
            x |= 0x40;
        }
        self.b(x);
        if !s.trailing.is_empty() {
            self.s8(&s.trailing);
        }
        if let Some(c) = s.cut {
            self.bytes(&c.to_le_bytes());
        }
        self
    }
    fn plant(&mut self, p: &Plant) -> &mut Self {
        match p {
            Plant::Keep => self.b(0),
            Plant::Absent => self.b(1),
            Plant::Raw(b) => self.b(2).bytes(&(b.len() as u16).to_le_bytes()).bytes(b),
            Plant::State(s, seal) => self.b(3).state(s).seal(seal),
            Plant::Journal(j, seal) => {
                self.b(4)
                    .b(j.phase)
                    .b(j.bundle)
                    .state(&j.state)
                    .count(j.count);
                self.b(j.ops.len().min(7) as u8);
                for op in j.ops.iter().take(7) {
                    self.name(&op.path)
                        .name(&op.stage)
                        .b(op.action)
                        .b(op.base_created);
                }
                self.seal(seal)
            }
        }
    }
}

/// The bytes that decode to `steps`.
pub fn encode_steps(steps: &[Step]) -> Vec<u8> {
    let mut e = Enc::default();
    for s in steps {
        match *s {
            Step::Run(a) => e.b(0).act(a),
            Step::Status => e.b(2),
            Step::Crash { act, after, pick } => e
                .b(3)
                .act(act)
                .bytes(&after.to_le_bytes())
                .bytes(&(pick as u16).to_le_bytes()),
            Step::Fail {
                act,
                at,
                errno,
                persistent,
            } => e
                .b(5)
                .act(act)
                .bytes(&at.to_le_bytes())
                .b((errno & 0x7f) | if persistent { 0x80 } else { 0 }),
        };
    }
    e.0
}

/// The bytes that decode to `input`.
pub fn encode_recover(input: &RecoverInput) -> Vec<u8> {
    let mut e = Enc::default();
    let flags = u8::from(input.state_outside)
        | (u8::from(input.base_link_secret) << 1)
        | (u8::from(input.journal_tmp.is_some()) << 2);
    e.b(input.start)
        .b(flags)
        .plant(&input.state)
        .plant(&input.journal);
    if let Some(t) = &input.journal_tmp {
        e.s8(t);
    }
    for c in &input.calls {
        e.b(match *c {
            Call::Recover => 0,
            Call::Status => 1,
            Call::Install(i) => 2 | ((i % 6) << 2),
            Call::Remove => 3,
        });
    }
    e.0
}
