//! Model-based test: random operations against the store and a `BTreeMap` model.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use indigo_storage::fs::FaultFs;
use indigo_storage::{Options, Store, Strategy as Kind, WriteBatch, WriteOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum W {
    Put(u8, u8),
    Delete(u8),
    Add(u8, u8),
    Remove(u8, u8),
    /// Many ids in one change, unsorted and with repeats (large ids cross
    /// the 32-bit halves of the sets).
    AddMany(u8, Vec<u64>),
    RemoveMany(u8, Vec<u64>),
}

#[derive(Debug, Clone)]
enum Step {
    Batch(Vec<W>),
    Flush,
    Merge,
    Compact,
    Reopen,
    SyncAndCrash,
    Scan(u8, u8),
}

fn w() -> impl Strategy<Value = W> {
    prop_oneof![
        (0..24u8, any::<u8>()).prop_map(|(k, v)| W::Put(k, v)),
        (0..24u8).prop_map(W::Delete),
        (0..8u8, 0..40u8).prop_map(|(k, id)| W::Add(k, id)),
        (0..8u8, 0..40u8).prop_map(|(k, id)| W::Remove(k, id)),
        (0..8u8, prop::collection::vec(ids(), 0..6)).prop_map(|(k, v)| W::AddMany(k, v)),
        (0..8u8, prop::collection::vec(ids(), 0..6)).prop_map(|(k, v)| W::RemoveMany(k, v)),
    ]
}

fn ids() -> impl Strategy<Value = u64> {
    prop_oneof![0..40u64, (1u64 << 32)..(1u64 << 32) + 4]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => prop::collection::vec(w(), 1..12).prop_map(Step::Batch),
        2 => Just(Step::Flush),
        2 => Just(Step::Merge),
        1 => Just(Step::Compact),
        1 => Just(Step::Reopen),
        1 => Just(Step::SyncAndCrash),
        2 => (0..24u8, 0..24u8).prop_map(|(a, b)| Step::Scan(a.min(b), a.max(b))),
    ]
}

fn k(i: u8) -> Vec<u8> {
    format!("k{i:02}").into_bytes()
}

#[derive(Default)]
struct Model {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    sets: BTreeMap<Vec<u8>, BTreeSet<u64>>,
}

fn open(fs: &FaultFs, background: bool) -> Store {
    let opts = Options {
        memtable_bytes: 512,
        background,
        max_frozen: 2,
        ..Default::default()
    };
    Store::open_with_fs(Arc::new(fs.clone()), Path::new("/db"), opts).unwrap()
}

fn check(store: &Store, m: &Model) {
    let kv = store.bucket("kv", Kind::Replace).unwrap();
    let sets = store.bucket("sets", Kind::Set).unwrap();
    let got: BTreeMap<_, _> = store
        .scan(&kv, Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(got, m.kv);
    for i in 0..24 {
        assert_eq!(store.get(&kv, &k(i)).unwrap().as_ref(), m.kv.get(&k(i)));
    }
    let got: BTreeMap<_, BTreeSet<u64>> = store
        .scan_set(&sets, Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .into_iter()
        .map(|(k, s)| (k, s.into_iter().collect()))
        .collect();
    let want: BTreeMap<_, _> = m
        .sets
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    assert_eq!(got, want);
    for i in 0..8 {
        let s: BTreeSet<u64> = store.get_set(&sets, &k(i)).unwrap().into_iter().collect();
        assert_eq!(s, m.sets.get(&k(i)).cloned().unwrap_or_default());
    }
}

/// `PROPTEST_CASES` raises the count for a longer hunt; CI runs the default.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(150), ..ProptestConfig::default() })]
    #[test]
    fn store_matches_btreemap_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps, false)?;
    }

    /// The same with flush and merge threads running beside the test's own calls.
    #[test]
    fn store_with_background_threads_matches_btreemap_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps, true)?;
    }
}

fn run(steps: Vec<Step>, background: bool) -> Result<(), TestCaseError> {
    let fs = FaultFs::new();
    let mut store = open(&fs, background);
    let mut m = Model::default();
    for s in steps {
        match s {
            Step::Batch(ws) => {
                let kv = store.bucket("kv", Kind::Replace).unwrap();
                let sets = store.bucket("sets", Kind::Set).unwrap();
                let mut wb = WriteBatch::new();
                // Some batches as a segment writes them: rotation left for after.
                let unrotated = ws.len() % 2 == 1;
                for w in ws {
                    match w {
                        W::Put(key, v) => {
                            wb.put(&kv, k(key), vec![v; 1 + v as usize % 40]);
                            m.kv.insert(k(key), vec![v; 1 + v as usize % 40]);
                        }
                        W::Delete(key) => {
                            wb.delete(&kv, k(key));
                            m.kv.remove(&k(key));
                        }
                        W::Add(key, id) => {
                            wb.set_add(&sets, k(key), u64::from(id));
                            m.sets.entry(k(key)).or_default().insert(u64::from(id));
                        }
                        W::Remove(key, id) => {
                            wb.set_remove(&sets, k(key), u64::from(id));
                            m.sets.entry(k(key)).or_default().remove(&u64::from(id));
                        }
                        W::AddMany(key, ids) => {
                            wb.set_add_many(&sets, k(key), ids.iter().copied());
                            m.sets.entry(k(key)).or_default().extend(ids);
                        }
                        W::RemoveMany(key, ids) => {
                            wb.set_remove_many(&sets, k(key), ids.iter().copied());
                            let s = m.sets.entry(k(key)).or_default();
                            ids.iter().for_each(|id| {
                                s.remove(id);
                            });
                        }
                    }
                }
                if unrotated {
                    store.write_unrotated(&wb).unwrap();
                    store.rotate_if_full().unwrap();
                } else {
                    store.write(&wb, WriteOptions::default()).unwrap();
                }
            }
            Step::Flush => store.flush().unwrap(),
            Step::Merge => {
                store.merge_step().unwrap();
            }
            Step::Compact => store.compact().unwrap(),
            Step::Reopen => {
                drop(store);
                store = open(&fs, background);
            }
            Step::SyncAndCrash => {
                store.sync().unwrap();
                // Leak nothing: dropping would sync again, which is harmless.
                drop(store);
                fs.crash(|n| n);
                store = open(&fs, background);
            }
            Step::Scan(a, b) => {
                let kv = store.bucket("kv", Kind::Replace).unwrap();
                let got = store
                    .scan(&kv, Bound::Included(&k(a)[..]), Bound::Excluded(&k(b)[..]))
                    .unwrap();
                let want: Vec<_> =
                    m.kv.range(k(a)..k(b))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
    check(&store, &m);
    drop(store);
    let store = open(&fs, background);
    check(&store, &m);
    Ok(())
}
