//! Builds the wordnet index once and runs queries in a loop (for profilers).
use indigo_bench::data;
use indigo_index::{Hnsw, HnswParams, Space};

fn main() {
    let ds = data::wordnet().unwrap();
    let mut p = HnswParams::new(Space::Cosine, 384);
    p.ef_search = 24;
    let idx = Hnsw::new(p);
    let items: Vec<(u32, &[f32])> = (0..ds.base.len())
        .map(|i| (i as u32, ds.base.row(i)))
        .collect();
    idx.insert_parallel(&items, 2).unwrap();
    let t = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..200 {
        for i in 0..ds.queries.len() {
            n += idx.search(ds.queries.row(i), 10, None).unwrap().len();
        }
    }
    eprintln!(
        "{n} results, {:.0} QPS",
        100000.0 / t.elapsed().as_secs_f64()
    );
}
