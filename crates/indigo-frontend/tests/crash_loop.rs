//! The system-level crash loop: `indigo run` serves four concurrent HTTP writers
//! (adds of batches with documents and metadata, upserts over them, deletes of
//! earlier batches); it is SIGKILLed at a random moment, restarted, and every
//! acknowledged change is checked through the API: each record's content, the
//! exact count, and that no batch is half there (a batch whose request died with
//! the server is wholly present or wholly absent).
//!
//! `INDIGO_CRASH_CYCLES` sets the number of kills (default 30, what CI runs);
//! `INDIGO_CRASH_SEED` the random seed. The 1000-cycle run quoted in the closing
//! note is `INDIGO_CRASH_CYCLES=1000 cargo test --release -p indigo-frontend
//! --test crash_loop -- --nocapture`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WRITERS: u64 = 4;
const DIM: usize = 6;
/// A writer deletes its oldest batch once it has this many live, so the data
/// (and each check) stays small however many cycles run.
const LIVE_BATCHES: usize = 30;
const COL: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

/// One HTTP/1.1 request on a fresh connection.
fn http(port: u16, method: &str, path: &str, body: &Value) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no complete response"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let v = serde_json::from_str(rest).unwrap_or(Value::Null);
    Ok((status, v))
}

struct Server {
    child: Child,
    port: u16,
}

fn start(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_indigo"))
        .args(["run", "--port", "0", "--path"])
        .arg(dir)
        .env("INDIGO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start indigo run");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Server { child, port }
}

fn vector(seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// A record's content: (embedding, document, metadata).
type Content = (Vec<f32>, String, Value);

/// What one request changes: batch `(writer, n)` adds or upserts its records with
/// content derived from `version`, or deletes them.
#[derive(Clone, Debug)]
enum Change {
    Put {
        batch: (u64, u64),
        upsert: bool,
        version: u64,
        size: usize,
    },
    Delete {
        batch: (u64, u64),
        size: usize,
    },
}

fn ids(batch: (u64, u64), size: usize) -> Vec<String> {
    (0..size)
        .map(|j| format!("w{}-b{}-{j}", batch.0, batch.1))
        .collect()
}

fn content(batch: (u64, u64), version: u64, j: usize) -> Content {
    let seed = (batch.0 << 48) ^ (batch.1 << 20) ^ (version << 8) ^ j as u64;
    (
        vector(seed),
        format!("doc {} {} v{version} #{j}", batch.0, batch.1),
        json!({"writer": batch.0, "batch": batch.1, "version": version, "j": j}),
    )
}

impl Change {
    fn request(&self, col: &str) -> (String, Value) {
        match self {
            Change::Put {
                batch,
                upsert,
                version,
                size,
            } => {
                let recs: Vec<Content> = (0..*size).map(|j| content(*batch, *version, j)).collect();
                let body = json!({
                    "ids": ids(*batch, *size),
                    "embeddings": recs.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                    "documents": recs.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
                    "metadatas": recs.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
                });
                let op = if *upsert { "upsert" } else { "add" };
                (format!("{col}/{op}"), body)
            }
            Change::Delete { batch, size } => {
                (format!("{col}/delete"), json!({"ids": ids(*batch, *size)}))
            }
        }
    }

    /// The model after this change.
    fn apply(&self, m: &mut BTreeMap<String, Content>) {
        match self {
            Change::Put {
                batch,
                upsert,
                version,
                size,
            } => {
                for (j, id) in ids(*batch, *size).into_iter().enumerate() {
                    if *upsert || !m.contains_key(&id) {
                        m.insert(id, content(*batch, *version, j));
                    }
                }
            }
            Change::Delete { batch, size } => {
                for id in ids(*batch, *size) {
                    m.remove(&id);
                }
            }
        }
    }
}

/// Per writer: acknowledged changes in order, and the one whose request died with
/// the server (if any), resolved at the next check.
#[derive(Default)]
struct Writer {
    acked: Vec<Change>,
    in_doubt: Option<Change>,
    next_batch: u64,
    /// Live batches: (batch number, size, latest version).
    live: Vec<(u64, usize, u64)>,
}

/// Sends changes until the server dies (or `stop`).
fn write_until_killed(
    port: u16,
    col: &str,
    w: u64,
    st: &Mutex<Writer>,
    stop: &AtomicBool,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        let change = {
            let mut s = st.lock();
            if s.live.len() >= LIVE_BATCHES {
                let (n, size, _) = s.live.remove(0);
                Change::Delete {
                    batch: (w, n),
                    size,
                }
            } else if !s.live.is_empty() && rng.gen_bool(0.3) {
                let i = rng.gen_range(0..s.live.len());
                let (n, size, v) = s.live[i];
                s.live[i].2 = v + 1;
                Change::Put {
                    batch: (w, n),
                    upsert: true,
                    version: v + 1,
                    size,
                }
            } else {
                let n = s.next_batch;
                s.next_batch += 1;
                let size = rng.gen_range(1..=40);
                s.live.push((n, size, 0));
                Change::Put {
                    batch: (w, n),
                    upsert: false,
                    version: 0,
                    size,
                }
            }
        };
        let (path, body) = change.request(col);
        match http(port, "POST", &path, &body) {
            Ok((200 | 201, _)) => st.lock().acked.push(change),
            Ok((status, v)) => panic!("writer {w}: {status} {v} for {change:?}"),
            Err(_) => {
                // The server died with the request in flight.
                let mut s = st.lock();
                if let Change::Delete { batch, size } = &change {
                    // Deleting again is harmless, and keeps a delete that did not
                    // happen from leaving its batch behind for good.
                    s.live.insert(0, (batch.1, *size, 0));
                }
                s.in_doubt = Some(change);
                return;
            }
        }
    }
}

fn fetch_all(port: u16, col: &str) -> BTreeMap<String, Content> {
    let (s, v) = http(
        port,
        "POST",
        &format!("{col}/get"),
        &json!({"include": ["embeddings", "documents", "metadatas"]}),
    )
    .unwrap();
    assert_eq!(s, 200, "{v}");
    let mut out = BTreeMap::new();
    let ids = v["ids"].as_array().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let emb: Vec<f32> = v["embeddings"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        out.insert(
            id.as_str().unwrap().to_string(),
            (
                emb,
                v["documents"][i].as_str().unwrap_or_default().to_string(),
                v["metadatas"][i].clone(),
            ),
        );
    }
    out
}

/// Checks the served state against the model; a change in doubt must be wholly
/// applied or wholly not, and is resolved into the model.
fn check(
    port: u16,
    col: &str,
    model: &mut BTreeMap<String, Content>,
    doubts: Vec<Change>,
    cycle: usize,
) {
    let got = fetch_all(port, col);
    let (s, n) = http(port, "GET", &format!("{col}/count"), &Value::Null).unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        n.as_u64().unwrap() as usize,
        got.len(),
        "cycle {cycle}: count disagrees with get"
    );
    for change in doubts {
        let mut with = model.clone();
        change.apply(&mut with);
        let touched: Vec<String> = match &change {
            Change::Put { batch, size, .. } | Change::Delete { batch, size } => ids(*batch, *size),
        };
        let agrees =
            |m: &BTreeMap<String, Content>| touched.iter().all(|id| got.get(id) == m.get(id));
        if agrees(&with) {
            *model = with;
        } else {
            assert!(
                agrees(model),
                "cycle {cycle}: a batch is half there: {change:?}"
            );
        }
    }
    if &got != model {
        let missing: Vec<_> = model
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !model.contains_key(*k))
            .take(5)
            .collect();
        let changed: Vec<_> = model
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .map(|(k, _)| k)
            .take(5)
            .collect();
        panic!(
            "cycle {cycle}: served state differs from every acknowledged change: \
             {} served vs {} expected; missing {missing:?}, unexpected {extra:?}, changed {changed:?}",
            got.len(),
            model.len()
        );
    }
}

#[test]
fn sigkill_loop_through_http_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("INDIGO_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("INDIGO_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let (s, c) = http(server.port, "POST", COL, &json!({"name": "crashes"})).unwrap();
    assert_eq!(s, 200, "{c}");
    let col = format!("{COL}/{}", c["id"].as_str().unwrap());
    let writers: Vec<Arc<Mutex<Writer>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let mut model: BTreeMap<String, Content> = BTreeMap::new();
    let started = Instant::now();
    let mut acked_total = 0usize;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(w, st)| {
                let (st, stop, col) = (st.clone(), stop.clone(), col.clone());
                let port = server.port;
                let seed = rng.gen();
                std::thread::spawn(move || {
                    write_until_killed(port, &col, w as u64, &st, &stop, seed)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Release);
        for h in handles {
            h.join().unwrap();
        }
        server = start(dir.path());
        // Acknowledged changes in each writer's order; the ones in doubt after.
        let mut doubts = Vec::new();
        for st in &writers {
            let mut s = st.lock();
            acked_total += s.acked.len();
            for change in s.acked.drain(..) {
                change.apply(&mut model);
            }
            doubts.extend(s.in_doubt.take());
        }
        check(server.port, &col, &mut model, doubts, cycle);
        if (cycle + 1) % 50 == 0 || cycle + 1 == cycles {
            eprintln!(
                "{} kills, {acked_total} acknowledged requests, {} records live, {:.0} s",
                cycle + 1,
                model.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    server.child.kill().unwrap();
    let _ = server.child.wait();
}
