//! The log on object storage, against an in-memory store with injected faults (and,
//! when `INDIGO_TEST_S3` names an S3-compatible server, against it too): group
//! commit, two writers on one collection, a writer dying between its two writes,
//! answers lost after a successful write, refused requests, truncation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use indigo_log::{CollectionId, Log, LogError, LogOffset};
use indigo_object::{Counted, Faulty, Objects, Op, Remote, S3Config};
use indigo_objlog::{ObjectLog, ObjectLogOptions};

const C: CollectionId = CollectionId([1; 16]);

/// The stores to run against: in memory always; the S3 server when configured
/// (`scripts/test` starts one and sets `INDIGO_TEST_S3=http://host:port/bucket`).
fn stores() -> Vec<(&'static str, Arc<dyn Objects>)> {
    let mut v: Vec<(&'static str, Arc<dyn Objects>)> = vec![("memory", Arc::new(Remote::memory()))];
    if let Some(s3) = s3() {
        v.push(("s3", s3));
    }
    v
}

/// A fresh prefix on the test S3 server, if there is one.
fn s3() -> Option<Arc<dyn Objects>> {
    let url = std::env::var("INDIGO_TEST_S3").ok()?;
    let (endpoint, bucket) = url.rsplit_once('/')?;
    let prefix = format!("objlog-{:016x}", rand::random::<u64>());
    let r = Remote::s3(&S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        prefix,
    })
    .expect("configure the test S3 server");
    Some(Arc::new(r))
}

fn opts() -> ObjectLogOptions {
    ObjectLogOptions {
        truncate_grace: Duration::ZERO,
        ..Default::default()
    }
}

fn payloads(log: &dyn Log, c: CollectionId) -> BTreeMap<u64, Vec<u8>> {
    log.read(c, LogOffset(0), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset.0, r.payload.to_vec()))
        .collect()
}

#[test]
fn appends_are_durable_dense_and_read_back_by_a_new_instance() {
    for (name, store) in stores() {
        let log = ObjectLog::new(store.clone(), opts());
        for i in 1..=20u64 {
            assert_eq!(
                log.append(C, format!("p{i}").as_bytes()).unwrap(),
                LogOffset(i),
                "{name}"
            );
        }
        let other = CollectionId([2; 16]);
        log.append(other, b"elsewhere").unwrap();
        assert_eq!(log.head(C), LogOffset(20));
        let fresh = ObjectLog::new(store.clone(), opts());
        let got = payloads(&fresh, C);
        assert_eq!(got.len(), 20, "{name}");
        assert_eq!(got[&7], b"p7");
        assert_eq!(fresh.head(other), LogOffset(1));
        // Reads after an offset, with a limit.
        let r = fresh.read(C, LogOffset(15), 3).unwrap();
        assert_eq!(
            r.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            vec![16, 17, 18]
        );
        // The fresh instance continues the offsets.
        assert_eq!(fresh.append(C, b"p21").unwrap(), LogOffset(21), "{name}");
    }
}

#[test]
fn concurrent_appends_share_fragments() {
    for (name, store) in stores() {
        let counted = Arc::new(Counted::new(store));
        let log = Arc::new(ObjectLog::new(counted.clone(), opts()));
        log.append(C, b"warm").unwrap(); // the first load and write
        let before = counted.stats.snapshot();
        let threads = 8;
        let per = 40;
        let offsets: Vec<Vec<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let log = log.clone();
                    s.spawn(move || {
                        (0..per)
                            .map(|i| log.append(C, format!("{t}-{i}").as_bytes()).unwrap().0)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let after = counted.stats.snapshot();
        let mut all: Vec<u64> = offsets.concat();
        all.sort_unstable();
        assert_eq!(
            all,
            (2..2 + (threads * per) as u64).collect::<Vec<_>>(),
            "{name}: dense"
        );
        let puts = after.puts - before.puts;
        eprintln!(
            "{name}: {} appends took {puts} PUTs and {} GETs",
            threads * per,
            after.gets - before.gets
        );
        assert!(
            puts < (threads * per) as u64 * 2,
            "{name}: no group commit: {puts} PUTs"
        );
        let got = payloads(&*log, C);
        for (t, offs) in offsets.iter().enumerate() {
            for (i, o) in offs.iter().enumerate() {
                assert_eq!(got[o], format!("{t}-{i}").as_bytes(), "{name}");
            }
        }
    }
}

#[test]
fn two_writers_on_one_collection_fence_each_other_and_lose_nothing() {
    for (name, store) in stores() {
        let a = Arc::new(ObjectLog::new(store.clone(), opts()));
        let b = Arc::new(ObjectLog::new(store.clone(), opts()));
        let acked: Vec<Vec<(u64, String)>> = std::thread::scope(|s| {
            let hs: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
                .into_iter()
                .enumerate()
                .map(|(w, log)| {
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        let mut fenced = 0;
                        for i in 0..60 {
                            let p = format!("w{w}-{i}");
                            match log.append(C, p.as_bytes()) {
                                Ok(off) => mine.push((off.0, p)),
                                Err(LogError::Fenced(_)) => fenced += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        eprintln!("writer {w}: {} acknowledged, {fenced} fenced", mine.len());
                        mine
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Exactly one history: every acknowledged append at its offset, no
        // payload twice, offsets dense.
        let fresh = ObjectLog::new(store.clone(), opts());
        let got = payloads(&fresh, C);
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            (1..=got.len() as u64).collect::<Vec<_>>()
        );
        let distinct: HashSet<&Vec<u8>> = got.values().collect();
        assert_eq!(distinct.len(), got.len(), "{name}: a payload appears twice");
        for (off, p) in acked.concat() {
            assert_eq!(
                got.get(&off).map(Vec::as_slice),
                Some(p.as_bytes()),
                "{name}: lost {p}"
            );
        }
    }
}

#[test]
fn a_writer_that_dies_between_fragment_and_manifest_leaves_a_whole_batch() {
    for (name, store) in stores() {
        let faulty = Arc::new(Faulty::new(store.clone()));
        let log = ObjectLog::new(
            faulty.clone(),
            ObjectLogOptions {
                attempts: 1,
                ..opts()
            },
        );
        for i in 0..5 {
            log.append(C, format!("a{i}").as_bytes()).unwrap();
        }
        // The manifest can no longer be written: the fragment is stored, the
        // append is not acknowledged (it fails as ambiguous).
        faulty.refuse(u32::MAX, Op::Put, "manifest");
        let e = log.append(C, b"in flight").unwrap_err();
        assert!(matches!(e, LogError::Ambiguous(_)), "{name}: {e}");
        drop(log); // the writer dies
        faulty.heal();
        // The next writer adopts the stored fragment: the batch is wholly there.
        let next = ObjectLog::new(store.clone(), opts());
        let got = payloads(&next, C);
        assert_eq!(got.len(), 6, "{name}");
        assert_eq!(got[&6], b"in flight");
        assert_eq!(next.append(C, b"after").unwrap(), LogOffset(7));
    }
}

#[test]
fn lost_answers_and_refused_requests_neither_duplicate_nor_lose() {
    for (name, store) in stores() {
        let faulty = Arc::new(Faulty::new(store.clone()));
        let log = ObjectLog::new(faulty.clone(), opts());
        // A fragment written whose answer is lost; then a manifest the same.
        faulty.lose_answers(1, "/frag/");
        assert_eq!(log.append(C, b"one").unwrap(), LogOffset(1), "{name}");
        faulty.lose_answers(1, "manifest");
        assert_eq!(log.append(C, b"two").unwrap(), LogOffset(2), "{name}");
        // A third of all requests refused.
        faulty.refuse_randomly(0.3, Op::Any);
        let mut acked = vec![(1u64, b"one".to_vec()), (2, b"two".to_vec())];
        for i in 0..40 {
            let p = format!("r{i}").into_bytes();
            match log.append(C, &p) {
                Ok(off) => acked.push((off.0, p)),
                Err(LogError::Ambiguous(_) | LogError::Io { .. }) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
        faulty.heal();
        let got = payloads(&ObjectLog::new(store.clone(), opts()), C);
        let distinct: HashSet<&Vec<u8>> = got.values().collect();
        assert_eq!(distinct.len(), got.len(), "{name}: a payload appears twice");
        for (off, p) in acked {
            assert_eq!(got.get(&off), Some(&p), "{name}: acknowledged {off} lost");
        }
    }
}

#[test]
fn truncation_keeps_fragments_readable_for_the_grace_period_then_deletes_them() {
    for (name, store) in stores() {
        let log = ObjectLog::new(
            store.clone(),
            ObjectLogOptions {
                truncate_grace: Duration::from_millis(300),
                ..opts()
            },
        );
        for i in 1..=10u64 {
            log.append(C, format!("p{i}").as_bytes()).unwrap();
        }
        log.truncate(C, LogOffset(6)).unwrap();
        let (live, garbage) = log.fragments(C).unwrap();
        assert_eq!((live.len(), garbage.len()), (4, 6), "{name}");
        // Still readable by a reader that started from an older version.
        assert_eq!(log.read(C, LogOffset(2), usize::MAX).unwrap().len(), 8);
        std::thread::sleep(Duration::from_millis(400));
        log.truncate(C, LogOffset(6)).unwrap();
        let (live, garbage) = log.fragments(C).unwrap();
        assert_eq!((live.len(), garbage.len()), (4, 0), "{name}");
        let keys = store.list("log/").unwrap();
        assert_eq!(
            keys.iter().filter(|k| k.key.contains("/frag/")).count(),
            4,
            "{name}"
        );
        // Reads from the compacted offset work; below it, they say why not.
        let fresh = ObjectLog::new(store.clone(), opts());
        assert_eq!(fresh.read(C, LogOffset(6), usize::MAX).unwrap().len(), 4);
        assert!(fresh.read(C, LogOffset(2), usize::MAX).is_err());
        assert_eq!(fresh.append(C, b"p11").unwrap(), LogOffset(11), "{name}");
    }
}

const CHILD: &str = "INDIGO_OBJLOG_CHILD_PREFIX";

/// The child of the kill test: four threads append numbered payloads to the S3
/// log under `$INDIGO_OBJLOG_CHILD_PREFIX` and print each acknowledgement.
#[test]
fn kill_child() {
    let Ok(prefix) = std::env::var(CHILD) else {
        return;
    };
    let url = std::env::var("INDIGO_TEST_S3").unwrap();
    let (endpoint, bucket) = url.rsplit_once('/').unwrap();
    let store: Arc<dyn Objects> = Arc::new(
        Remote::s3(&S3Config {
            bucket: bucket.into(),
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
            prefix,
        })
        .unwrap(),
    );
    let log = Arc::new(ObjectLog::new(store, opts()));
    let run: u64 = rand::random();
    std::thread::scope(|s| {
        for t in 0..4 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0.. {
                    let p = format!("{run:x}-{t}-{i}");
                    match log.append(C, p.as_bytes()) {
                        Ok(off) => println!("ACK {} {p}", off.0),
                        Err(LogError::Fenced(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
}

/// SIGKILL a writer process at random moments (mid-append, between a fragment
/// and its manifest, …); after each kill a new process's view holds every
/// acknowledged append at its offset, offsets are dense, and nothing is there
/// twice. Needs the S3 server (state must outlive the process).
#[test]
fn a_killed_writer_process_loses_nothing_acknowledged() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let Some(store) = s3() else {
        if std::env::var("INDIGO_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
            panic!("INDIGO_TEST_S3 is not set but the services are required");
        }
        return;
    };
    let _ = store;
    let url = std::env::var("INDIGO_TEST_S3").unwrap();
    let (endpoint, bucket) = url.rsplit_once('/').unwrap();
    let prefix = format!("objlog-kill-{:016x}", rand::random::<u64>());
    let reader_store: Arc<dyn Objects> = Arc::new(
        Remote::s3(&S3Config {
            bucket: bucket.into(),
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
            prefix: prefix.clone(),
        })
        .unwrap(),
    );
    use std::io::BufRead;
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    use rand::{Rng, SeedableRng};
    for kill in 0..12 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["kill_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, &prefix)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().push(line);
            }
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for line in lines.lock().iter() {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (off, p) = rest.split_once(' ').unwrap();
                acked.push((off.parse().unwrap(), p.to_string()));
            }
        }
        let got = payloads(&ObjectLog::new(reader_store.clone(), opts()), C);
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            (1..=got.len() as u64).collect::<Vec<_>>(),
            "kill {kill}: offsets not dense"
        );
        let distinct: HashSet<&Vec<u8>> = got.values().collect();
        assert_eq!(distinct.len(), got.len(), "kill {kill}: a payload twice");
        for (off, p) in &acked {
            assert_eq!(
                got.get(off).map(Vec::as_slice),
                Some(p.as_bytes()),
                "kill {kill}: lost {p}"
            );
        }
    }
    eprintln!(
        "12 kills, {} acknowledged appends, all present",
        acked.len()
    );
    assert!(
        acked.len() > 100,
        "the child wrote too little to mean anything"
    );
}

#[test]
fn a_reader_in_another_process_refreshes_its_view_cheaply() {
    for (name, store) in stores() {
        let counted = Arc::new(Counted::new(store.clone()));
        let writer = ObjectLog::new(store.clone(), opts());
        let reader = ObjectLog::new(counted.clone(), opts());
        // A reader that looks before the log exists sees it once it does.
        assert_eq!(reader.refresh(C).unwrap(), LogOffset(0), "{name}");
        writer.append(C, b"one").unwrap();
        assert_eq!(reader.refresh(C).unwrap(), LogOffset(1), "{name}");
        writer.append(C, b"two").unwrap();
        assert_eq!(
            reader.head(C),
            LogOffset(1),
            "{name}: cached until refreshed"
        );
        assert_eq!(reader.refresh(C).unwrap(), LogOffset(2), "{name}");
        let before = counted.stats.snapshot();
        assert_eq!(reader.refresh(C).unwrap(), LogOffset(2));
        let after = counted.stats.snapshot();
        assert_eq!(after.gets - before.gets, 1, "{name}: one conditional read");
        assert_eq!(
            after.bytes_got, before.bytes_got,
            "{name}: nothing changed, nothing sent"
        );
        assert_eq!(payloads(&reader, C)[&2], b"two");
    }
}

/// A store whose conditional read waits, when gated, until `want` callers have
/// entered (so they are all waiting for the one read in flight).
struct Gated {
    inner: Arc<dyn Objects>,
    gated: std::sync::atomic::AtomicBool,
    entered: std::sync::atomic::AtomicUsize,
    want: usize,
}

impl Objects for Gated {
    fn put(
        &self,
        key: &str,
        data: &[u8],
        mode: indigo_object::PutMode,
    ) -> indigo_object::Result<String> {
        self.inner.put(key, data, mode)
    }
    fn get(&self, key: &str) -> indigo_object::Result<indigo_object::Object> {
        self.inner.get(key)
    }
    fn get_if_changed(
        &self,
        key: &str,
        etag: &str,
    ) -> indigo_object::Result<Option<indigo_object::Object>> {
        use std::sync::atomic::Ordering;
        if self.gated.swap(false, Ordering::AcqRel) {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while self.entered.load(Ordering::Acquire) < self.want
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Give the last to enter time to queue behind this read.
            std::thread::sleep(Duration::from_millis(20));
        }
        self.inner.get_if_changed(key, etag)
    }
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> indigo_object::Result<Vec<u8>> {
        self.inner.get_range(key, range)
    }
    fn head(&self, key: &str) -> indigo_object::Result<(u64, String)> {
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> indigo_object::Result<Vec<indigo_object::Listed>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> indigo_object::Result<()> {
        self.inner.delete(key)
    }
}

/// Readers in another process than the writer never see less than what was
/// acknowledged before they asked, and callers waiting on one read in flight
/// share the next instead of reading one each.
#[test]
fn concurrent_refreshes_share_reads_and_never_miss_an_acknowledged_append() {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    let store: Arc<dyn Objects> = Arc::new(Remote::memory());
    let gated = Arc::new(Gated {
        inner: store.clone(),
        gated: AtomicBool::new(false),
        entered: AtomicUsize::new(0),
        want: 8,
    });
    let counted = Arc::new(Counted::new(gated.clone()));
    let writer = ObjectLog::new(store, opts());
    let reader = ObjectLog::new(counted.clone(), opts());
    writer.append(C, b"first").unwrap();
    // Freshness, with a writer going on.
    let acked = AtomicU64::new(1);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..50u32 {
                let off = writer.append(C, &i.to_le_bytes()).unwrap();
                acked.fetch_max(off.0, Ordering::AcqRel);
            }
            done.store(true, Ordering::Release);
        });
        for _ in 0..8 {
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let before = acked.load(Ordering::Acquire);
                    let head = reader.refresh(C).unwrap();
                    assert!(
                        head.0 >= before,
                        "refresh saw {} after {before} was acknowledged",
                        head.0
                    );
                }
            });
        }
    });
    assert_eq!(reader.refresh(C).unwrap(), LogOffset(51));
    // Sharing: 8 callers arrive while one read is in flight; the read after it
    // serves the rest.
    let mut calls = 0;
    let g0 = counted.stats.snapshot().gets;
    for _ in 0..5 {
        gated.entered.store(0, Ordering::Release);
        gated.gated.store(true, Ordering::Release);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    gated.entered.fetch_add(1, Ordering::AcqRel);
                    assert_eq!(reader.refresh(C).unwrap(), LogOffset(51));
                });
            }
        });
        calls += 8;
    }
    let gets = counted.stats.snapshot().gets - g0;
    assert!(
        gets < calls,
        "{calls} refreshes cost {gets} reads: none shared"
    );
    eprintln!("{calls} refreshes cost {gets} reads");
}
