fn offtin(b: &[u8]) -> i64 {
    let mut y = (b[7] & 0x7f) as i64;
    for i in (0..7).rev() {
        y = y * 256 + b[i] as i64;
    }
    if b[7] & 0x80 != 0 {
        -y
    } else {
        y
    }
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let old = std::fs::read(&a[1]).unwrap();
    let new = std::fs::read(&a[2]).unwrap();
    let mut patch = Vec::new();
    bsdiff::diff(&old, &new, &mut patch).unwrap();
    let (mut i, mut adds, mut extras, mut n, mut nz) = (0usize, 0i64, 0i64, 0, 0usize);
    while i < patch.len() {
        let add = offtin(&patch[i..]);
        let ex = offtin(&patch[i + 8..]);
        i += 24;
        nz += patch[i..i + add as usize]
            .iter()
            .filter(|&&b| b != 0)
            .count();
        i += (add + ex) as usize;
        adds += add;
        extras += ex;
        n += 1;
    }
    let zd = zstd::bulk::compress(&patch, 19).unwrap().len();
    println!(
        "ops {n} add {adds} extra {extras} nonzero-diff {nz} raw {} zstd19 {}",
        patch.len(),
        zd
    );
}
