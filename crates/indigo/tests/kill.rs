//! The kill test: a child process writes numbered batches and reports each one
//! the API acknowledged; it is killed with SIGKILL at random moments, more than
//! 100 times. After every kill the data directory is reopened and must hold every
//! acknowledged batch whole, the batch in flight whole or not at all, and answer
//! queries as the model does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use indigo::{Batch, GetRequest, Include, Indigo, QueryRequest, Selection};
use rand::{Rng, SeedableRng};
use serde_json::json;

const DIM: usize = 8;
const PER_BATCH: usize = 8;
const ENV: &str = "INDIGO_KILL_CHILD_DIR";

/// What batch `b` does, deterministically.
enum Step {
    Add(Vec<(String, Vec<f32>, i64)>),
    Update(Vec<(String, Vec<f32>, i64)>),
    Delete(Vec<String>),
}

fn vector(seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn step(b: u64) -> Step {
    let ids = |of: u64, odd: bool| {
        (0..PER_BATCH)
            .filter(move |i| (i % 2 == 1) == odd)
            .map(move |i| (format!("k{of}-{i}"), i))
    };
    match b % 4 {
        0 | 1 => Step::Add(
            (0..PER_BATCH)
                .map(|i| (format!("k{b}-{i}"), vector(b * 1000 + i as u64), b as i64))
                .collect(),
        ),
        2 => Step::Update(
            ids(b - 2, false)
                .map(|(id, i)| (id, vector(b * 1000 + i as u64), b as i64))
                .collect(),
        ),
        _ => Step::Delete(ids(b - 3, true).map(|(id, _)| id).collect()),
    }
}

type Model = HashMap<String, (Vec<f32>, i64)>;

fn apply(m: &mut Model, b: u64) {
    match step(b) {
        Step::Add(recs) => {
            for (id, v, g) in recs {
                m.entry(id).or_insert((v, g));
            }
        }
        Step::Update(recs) => {
            for (id, v, g) in recs {
                if let Some(r) = m.get_mut(&id) {
                    *r = (v, g);
                }
            }
        }
        Step::Delete(ids) => {
            for id in ids {
                m.remove(&id);
            }
        }
    }
}

fn collection(db: &Indigo) -> indigo::Collection {
    db.get_or_create_collection("default_tenant", "default_database", "kill", None, None)
        .unwrap()
}

/// The child: writes batches from `$INDIGO_KILL_CHILD_FROM` on until killed.
#[test]
fn kill_child() {
    let Ok(dir) = std::env::var(ENV) else { return };
    let from: u64 = std::env::var("INDIGO_KILL_CHILD_FROM")
        .unwrap()
        .parse()
        .unwrap();
    let db = Indigo::open(&dir).unwrap();
    let c = collection(&db);
    println!("READY");
    for b in from.. {
        match step(b) {
            Step::Add(recs) => c
                .add(
                    Batch::new(
                        recs.iter().map(|r| r.0.clone()).collect(),
                        recs.iter().map(|r| r.1.clone()).collect(),
                    )
                    .metadatas_json(recs.iter().map(|r| json!({"b": r.2})).collect())
                    .unwrap(),
                )
                .unwrap(),
            Step::Update(recs) => c
                .update(
                    Batch::new(
                        recs.iter().map(|r| r.0.clone()).collect(),
                        recs.iter().map(|r| r.1.clone()).collect(),
                    )
                    .metadatas_json(recs.iter().map(|r| json!({"b": r.2})).collect())
                    .unwrap(),
                )
                .unwrap(),
            Step::Delete(ids) => {
                c.delete(&Selection {
                    ids: Some(ids),
                    ..Default::default()
                })
                .unwrap();
            }
        }
        println!("ACK {b}");
        // Paced, so a hundred runs stay quick to verify; kills still land
        // anywhere in a write, a compaction or a checkpoint.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The state on disk, as id → (vector, b).
fn read_back(db: &Indigo) -> Model {
    let c = collection(db);
    let all = c
        .get(&GetRequest {
            include: Include {
                embeddings: true,
                metadatas: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
    assert_eq!(c.count().unwrap() as usize, all.ids.len());
    let mut m = Model::new();
    for (i, id) in all.ids.iter().enumerate() {
        let b = match all.metadatas.as_ref().unwrap()[i].as_ref().unwrap()["b"] {
            indigo_types::MetaValue::Scalar(indigo::Scalar::Int(b)) => b,
            ref v => panic!("bad metadata {v:?}"),
        };
        m.insert(
            id.clone(),
            (all.embeddings.as_ref().unwrap()[i].to_vec(), b),
        );
    }
    m
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut model = Model::new();
    let mut next = 0u64;
    let runs = 110;
    for run in 0..runs {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
            .env(ENV, dir.path())
            .env("INDIGO_KILL_CHILD_FROM", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = tx.send(());
                } else if let Some(b) = line.strip_prefix("ACK ") {
                    LAST.lock().unwrap().replace(b.parse::<u64>().unwrap());
                }
            }
        });
        // Wait until the child has opened the database, then let it write a while.
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!("run {run}: the child did not open the database");
        }
        if run % 10 == 0 {
            // Another process holds the directory: opening it fails at once.
            let t = std::time::Instant::now();
            match Indigo::open(dir.path()) {
                Err(indigo::Error::InUse(_)) => {}
                Err(e) => panic!("run {run}: expected an in-use error, got {e}"),
                Ok(_) => panic!("run {run}: opened a directory another process holds"),
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the in-use error took {:?}",
                t.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let last = LAST.lock().unwrap().take();
        // Every acknowledged batch is in the model.
        if let Some(last) = last {
            while next <= last {
                apply(&mut model, next);
                next += 1;
            }
        }
        let t = std::time::Instant::now();
        let db = Indigo::open(dir.path()).unwrap();
        let t_open = t.elapsed();
        let got = read_back(&db);
        if std::env::var("INDIGO_KILL_VERBOSE").is_ok() {
            eprintln!(
                "run {run}: next {next} open {t_open:?} read {:?}",
                t.elapsed()
            );
        }
        // The batch in flight is whole or absent.
        let mut with_next = model.clone();
        apply(&mut with_next, next);
        if got == with_next && got != model {
            model = with_next;
            next += 1;
        } else {
            assert!(
                got == model,
                "run {run}: the data after the kill is neither the acknowledged state nor that plus batch {next} \
                 ({} records, model {})",
                got.len(),
                model.len()
            );
        }
        // Queries agree: each sampled record is its own nearest neighbour.
        let c = collection(&db);
        let ids: Vec<&String> = model.keys().take(5).collect();
        for id in ids {
            let q = QueryRequest::new(vec![model[id].0.clone()], 1);
            let r = c.query(&q).unwrap().remove(0);
            if r.ids.first() != Some(id) {
                // Say whether the index missed (a recall failure) or holds a
                // vector under the wrong record (a consistency failure).
                let found = r.ids.first().cloned().unwrap_or_default();
                let stored = c
                    .get(&GetRequest {
                        selection: Selection {
                            ids: Some(vec![found.clone()]),
                            ..Default::default()
                        },
                        include: Include {
                            embeddings: true,
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                    .unwrap();
                let mut wide = QueryRequest::new(vec![model[id].0.clone()], 10);
                wide.include.distances = true;
                let w = c.query(&wide).unwrap().remove(0);
                // Filtered to its own batch, the search scores a handful exactly.
                let mut own = QueryRequest::new(vec![model[id].0.clone()], 10);
                own.selection.where_ =
                    Some(indigo::Where::parse(&json!({"b": model[id].1})).unwrap());
                let o = c.query(&own).unwrap().remove(0);
                let st = c.fold_progress();
                panic!(
                    "run {run}: {id} is not its own nearest neighbour: found {found} at \
                     distance {:?}; {found} is stored as {:?} (model {:?}); {id} is {:?}; \
                     top 10: {:?} at {:?}; filtered to its batch: {:?}; folded {st:?}",
                    r.distances,
                    stored
                        .embeddings
                        .as_ref()
                        .and_then(|e| e.first().map(|v| v.to_vec())),
                    model.get(&found).map(|m| &m.0),
                    model[id].0,
                    w.ids,
                    w.distances,
                    o.ids
                );
            }
            assert!(r.distances.unwrap()[0] < 1e-6);
        }
    }
    assert!(next > runs as u64, "the children wrote only {next} batches");
}

/// The last batch the current child acknowledged.
static LAST: std::sync::Mutex<Option<u64>> = std::sync::Mutex::new(None);
