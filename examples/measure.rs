//! Quick per-pair measurement of deltaswap alone: `cargo run --release --example measure -- DIR...`
use std::time::Instant;

fn main() {
    let mut total_ratio_log = 0.0;
    let mut n = 0;
    for dir in std::env::args().skip(1) {
        let mut pairs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("old").exists())
            .map(|e| e.path())
            .collect();
        pairs.sort();
        for p in pairs {
            let old = std::fs::read(p.join("old")).unwrap();
            let new = std::fs::read(p.join("new")).unwrap();
            let t = Instant::now();
            let patch = deltaswap::diff(&old, &new).unwrap();
            let dt = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let out = if std::env::var_os("DSW_NOAPPLY").is_some() {
                new.clone()
            } else {
                deltaswap::apply(&old, &patch).unwrap()
            };
            let at = t.elapsed().as_secs_f64();
            assert_eq!(out, new);
            let info = deltaswap::inspect(&patch[..]).unwrap();
            let s: Vec<String> = info
                .streams()
                .iter()
                .map(|(n, r, s)| format!("{n}={r}/{s}"))
                .collect();
            println!(
                "{:40} {:>10} diff {:7.3}s apply {:6.3}s segs {} {}",
                p.file_name().unwrap().to_string_lossy(),
                patch.len(),
                dt,
                at,
                info.segments(),
                s.join(" ")
            );
            let _ = (&mut total_ratio_log, &mut n);
        }
    }
}
