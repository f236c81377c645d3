//! Loads 2M keys, merges them into one segment, then range-scans 10k-key ranges in
//! a loop (for profilers).
use std::ops::Bound;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let s = indigo_storage::Store::open(dir.path(), Default::default()).unwrap();
    let b = s.bucket("kv", indigo_storage::Strategy::Replace).unwrap();
    let n = 2_000_000u64;
    for chunk in 0..n / 1000 {
        let mut wb = indigo_storage::WriteBatch::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            wb.put(
                &b,
                xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
                    .to_be_bytes()
                    .to_vec(),
                vec![1u8; 100],
            );
        }
        s.write(&wb, Default::default()).unwrap();
    }
    if std::env::args().any(|a| a == "--compact") {
        s.compact().unwrap();
    } else {
        s.flush().unwrap();
    }
    let width = (u128::MAX / u128::from(n)) * 10_000;
    let t = std::time::Instant::now();
    let mut total = 0;
    for r in 0..300u128 {
        let lo = r * (u128::MAX / 300);
        let hi = lo + width;
        total += s
            .scan(
                &b,
                Bound::Included(&lo.to_be_bytes()[..]),
                Bound::Excluded(&hi.to_be_bytes()[..]),
            )
            .unwrap()
            .len();
    }
    eprintln!(
        "{total} keys, {:.2} ms per 10k-key scan",
        t.elapsed().as_secs_f64() * 1e3 / 300.0
    );
}
