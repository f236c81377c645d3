//! BM25 over a real corpus: embedded Indigo (a sparse key declared `bm25`)
//! against tantivy and SQLite FTS5 `bm25()` on the same texts and queries, and
//! Indigo's Block-Max MaxScore against exhaustive scoring of the same index.
//!
//! Corpus: WordNet glosses, GCIDE definitions and fortunes (Debian's
//! `wordnet-base`, `dict-gcide` and `fortunes`), about 250k short texts. One
//! tokenizer for all three (lowercase alphanumeric runs of 2–40 characters, an
//! English stopword list, no stemming): tantivy and FTS5 index the tokens joined
//! by spaces, which their default tokenizers split the same way; Indigo gets
//! each text's term weights as Chroma's `ChromaBm25EmbeddingFunction` makes them
//! (k1 1.2, b 0.75), with `avg_doc_length` set to the corpus mean, as a user
//! would configure it, so the scores are Lucene's BM25 up to tantivy's
//! length quantisation; FTS5's IDF has no `1 +` inside its logarithm.
//!
//! Sparse top-k: Block-Max MaxScore against scoring every posting of the query's
//! terms (no pruning) and against exhaustive scoring of every record's vector,
//! on one in-memory index.
//!
//! Queries: 1–4 distinct terms of a random text, OR semantics, top 10, one
//! thread. Every engine returns ids (tantivy reads a stored id field, FTS5 the
//! rowid of a contentless table, Indigo its record ids). Indigo's figure goes
//! through its whole read path (snapshot, log tail, store lookups).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indigo::{
    Include, Indigo, MetaValue, RecordOp, Selection, SparseQueryRequest, SparseVector, WriteKind,
};
use indigo_bench::{header, progress, quantile, row};
use indigo_index::SparseIndex;
use rand::{Rng, SeedableRng};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// At most this many texts.
    #[arg(long, default_value_t = 250_000)]
    texts: usize,
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Skip tantivy and FTS5.
    #[arg(long)]
    no_peers: bool,
}

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with", "which", "who", "from", "has", "have", "had",
    "its", "he", "she", "his", "her", "you", "your", "we", "our", "i", "me", "my", "so", "do",
];

fn tokenize(s: &str, stop: &HashSet<&str>) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| (2..=40).contains(&t.chars().count()))
        .map(str::to_lowercase)
        .filter(|t| !stop.contains(t.as_str()))
        .collect()
}

/// WordNet glosses, GCIDE paragraphs, fortunes.
fn load_texts(max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for pos in ["noun", "verb", "adj", "adv"] {
        let p = format!("/usr/share/wordnet/data.{pos}");
        let Ok(s) = std::fs::read_to_string(&p) else {
            eprintln!("{p} is missing: apt-get install wordnet-base");
            continue;
        };
        for line in s.lines().filter(|l| !l.starts_with("  ")) {
            if let Some((_, gloss)) = line.split_once(" | ") {
                out.push(gloss.trim().to_string());
            }
        }
    }
    match std::fs::File::open("/usr/share/dictd/gcide.dict.dz") {
        Ok(f) => {
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(f)
                .read_to_end(&mut bytes)
                .expect("gcide.dict.dz");
            let s = String::from_utf8_lossy(&bytes);
            for para in s.split("\n\n") {
                let text: String = para
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('['))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .replace(['{', '}'], "");
                let text = text.trim();
                if text.len() >= 20 {
                    out.push(text.to_string());
                }
            }
        }
        Err(_) => eprintln!("GCIDE is missing: apt-get install dict-gcide"),
    }
    if let Ok(rd) = std::fs::read_dir("/usr/share/games/fortunes") {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files.iter().filter(|p| p.extension().is_none()) {
            if let Ok(s) = std::fs::read_to_string(p) {
                out.extend(
                    s.split("\n%\n")
                        .map(|f| f.trim().to_string())
                        .filter(|f| f.len() >= 20),
                );
            }
        }
    } else {
        eprintln!("fortunes are missing: apt-get install fortunes");
    }
    out.truncate(max);
    out
}

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Chroma's BM25 embedding function's weights (term ids from `dict`).
fn weights(tokens: &[String], avgdl: f32, dict: &mut HashMap<String, u32>) -> SparseVector {
    let mut tf: HashMap<u32, f32> = HashMap::new();
    for t in tokens {
        let n = dict.len() as u32;
        *tf.entry(*dict.entry(t.clone()).or_insert(n)).or_default() += 1.0;
    }
    let len = tokens.len() as f32;
    let mut pairs: Vec<(u32, f32)> = tf
        .into_iter()
        .map(|(d, tf)| (d, tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avgdl))))
        .collect();
    pairs.sort_by_key(|p| p.0);
    SparseVector {
        indices: pairs.iter().map(|p| p.0).collect(),
        values: pairs.iter().map(|p| p.1).collect(),
        tokens: None,
    }
}

fn p50_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    (quantile(&mut v, 0.5), quantile(&mut v, 0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn overlap(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let sb: HashSet<&u32> = b.iter().collect();
    a.iter().filter(|x| sb.contains(x)).count() as f64 / a.len().max(b.len()) as f64
}

fn main() {
    let args = Args::parse();
    let stop: HashSet<&str> = STOPWORDS.iter().copied().collect();
    let t = Instant::now();
    let texts = load_texts(args.texts);
    let tokens: Vec<Vec<String>> = texts.iter().map(|s| tokenize(s, &stop)).collect();
    if tokens.iter().all(Vec::is_empty) {
        eprintln!("no corpus: apt-get install wordnet-base dict-gcide fortunes");
        std::process::exit(2);
    }
    let total: usize = tokens.iter().map(Vec::len).sum();
    let avgdl = total as f32 / tokens.len().max(1) as f32;
    println!(
        "corpus: {} texts, {} tokens (mean {:.1} per text), loaded in {:.1} s",
        texts.len(),
        total,
        avgdl,
        t.elapsed().as_secs_f64()
    );
    let mut dict: HashMap<String, u32> = HashMap::new();
    let vectors: Vec<SparseVector> = tokens
        .iter()
        .map(|t| weights(t, avgdl, &mut dict))
        .collect();
    println!("vocabulary: {} terms", dict.len());

    // Queries: 1–4 distinct terms of a random text.
    let mut rng = rand::rngs::StdRng::seed_from_u64(25);
    let mut queries: Vec<Vec<String>> = Vec::new();
    while queries.len() < args.queries {
        let t = &tokens[rng.gen_range(0..tokens.len())];
        let mut uniq: Vec<&String> = t.iter().collect::<HashSet<_>>().into_iter().collect();
        if uniq.is_empty() {
            continue;
        }
        uniq.sort();
        let n = rng.gen_range(1..=4usize).min(uniq.len());
        let mut q = Vec::new();
        while q.len() < n {
            let w = uniq[rng.gen_range(0..uniq.len())].clone();
            if !q.contains(&w) {
                q.push(w);
            }
        }
        queries.push(q);
    }
    let query_vec = |q: &[String]| -> SparseVector {
        let mut d = dict.clone();
        let v = weights(q, avgdl, &mut d);
        assert_eq!(d.len(), dict.len(), "query terms come from the corpus");
        v
    };
    let qvecs: Vec<SparseVector> = queries.iter().map(|q| query_vec(q)).collect();

    // Indigo, embedded.
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open(dir.path()).unwrap();
    let schema = json!({"schema": {"keys": {"bm25": {"sparse_vector": {"sparse_vector_index": {
        "enabled": true, "config": {"embedding_function": {"type": "unknown"}, "bm25": true}}}}}}});
    let c = db
        .create_collection(
            "default_tenant",
            "default_database",
            "bm25",
            None,
            Some(schema),
        )
        .unwrap();
    let t = Instant::now();
    let pb = progress(vectors.len() as u64, "indigo ingest");
    for (b, chunk) in vectors.chunks(1000).enumerate() {
        let ops: Vec<RecordOp> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut m = std::collections::BTreeMap::new();
                m.insert("bm25".to_string(), Some(MetaValue::Sparse(v.clone())));
                RecordOp {
                    id: format!("{}", b * 1000 + i),
                    embedding: Some(Arc::from(vec![1.0f32])),
                    metadata: Some(m),
                    ..Default::default()
                }
            })
            .collect();
        c.write(WriteKind::Add, ops).unwrap();
        pb.inc(chunk.len() as u64);
    }
    db.compact().unwrap();
    pb.finish_and_clear();
    let indigo_ingest = t.elapsed();
    let req = |v: &SparseVector| SparseQueryRequest {
        key: "bm25".into(),
        vector: v.clone(),
        n_results: args.k,
        selection: Selection::default(),
        include: Include::default(),
    };
    let t = Instant::now();
    c.query_sparse(&req(&qvecs[0])).unwrap();
    let first = t.elapsed();
    let mut lat = Vec::new();
    let mut indigo_ids: Vec<Vec<u32>> = Vec::new();
    for v in &qvecs {
        let t = Instant::now();
        let r = c.query_sparse(&req(v)).unwrap();
        lat.push(t.elapsed());
        indigo_ids.push(r.ids.iter().map(|s| s.parse().unwrap()).collect());
    }
    let indigo = p50_p99(lat);

    // The same index in memory, without the read path: MaxScore against
    // exhaustive scoring, with the IDF-scaled query Indigo's executor makes.
    let ix = SparseIndex::from_postings(vectors.iter().enumerate().flat_map(|(l, v)| {
        v.indices
            .iter()
            .zip(&v.values)
            .map(move |(d, w)| (*d, l as u32, *w))
    }));
    let n = vectors.len() as f32;
    let scaled: Vec<Vec<(u32, f32)>> = qvecs
        .iter()
        .map(|v| {
            v.indices
                .iter()
                .zip(&v.values)
                .map(|(d, w)| (*d, w * indigo_executor_idf(n, ix.df(*d) as f32)))
                .collect()
        })
        .collect();
    let (mut lat_bmm, mut lat_ex, mut lat_all) = (Vec::new(), Vec::new(), Vec::new());
    let mut exact_agree = 0.0;
    for q in &scaled {
        let t = Instant::now();
        let a = ix.search(q, args.k, |_| true);
        lat_bmm.push(t.elapsed());
        let t = Instant::now();
        let b = ix.search_exhaustive(q, args.k, |_| true);
        lat_ex.push(t.elapsed());
        // Exhaustive scoring: every record's vector against the query.
        let qv = SparseVector {
            indices: q.iter().map(|x| x.0).collect(),
            values: q.iter().map(|x| x.1).collect(),
            tokens: None,
        };
        let t = Instant::now();
        let mut all: Vec<(f32, u32)> = vectors
            .iter()
            .enumerate()
            .map(|(l, v)| (v.dot(&qv), l as u32))
            .filter(|x| x.0 != 0.0)
            .collect();
        let k = args.k.min(all.len());
        if k > 0 {
            all.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            all.truncate(k);
        }
        lat_all.push(t.elapsed());
        std::hint::black_box(&all);
        let sa: Vec<f32> = a.iter().map(|h| h.score).collect();
        let sb: Vec<f32> = b.iter().map(|h| h.score).collect();
        if sa.len() == sb.len()
            && sa
                .iter()
                .zip(&sb)
                .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
        {
            exact_agree += 1.0;
        }
    }
    let exact: Vec<Vec<u32>> = scaled
        .iter()
        .map(|q| {
            ix.search_exhaustive(q, args.k, |_| true)
                .iter()
                .map(|h| h.label)
                .collect()
        })
        .collect();
    let bmm = p50_p99(lat_bmm);
    let ex = p50_p99(lat_ex);
    let all = p50_p99(lat_all);

    // Peers.
    let mut peers: Vec<PeerRun> = Vec::new();
    if !args.no_peers {
        peers.push(tantivy_run(&tokens, &queries, args.k));
        peers.push(fts5_run(&tokens, &queries, args.k, dir.path()));
    }

    println!();
    println!(
        "BM25 top-{} over {} texts, {} queries of 1–4 terms, one thread",
        args.k,
        texts.len(),
        queries.len()
    );
    header("engine", &["p50", "p99", "index build", "top-10 = exact"]);
    let agree = |ids: &[Vec<u32>]| -> String {
        let s: f64 = ids.iter().zip(&exact).map(|(a, b)| overlap(a, b)).sum();
        format!("{:.3}", s / ids.len() as f64)
    };
    row(
        "indigo (embedded, whole read path)",
        &[
            ms(indigo.0),
            ms(indigo.1),
            format!("{:.1} s", indigo_ingest.as_secs_f64()),
            agree(&indigo_ids),
        ],
    );
    for (name, (p50, p99), build, ids) in &peers {
        row(
            name,
            &[
                ms(*p50),
                ms(*p99),
                format!("{:.1} s", build.as_secs_f64()),
                agree(ids),
            ],
        );
    }
    println!(
        "indigo's first query (loads the index from the store): {}",
        ms(first)
    );
    println!();
    println!(
        "Sparse top-{} on the same in-memory index (no read path), one thread",
        args.k
    );
    header("method", &["p50", "p99", "p50 / maxscore"]);
    let ratio = |d: Duration| format!("{:.1}×", d.as_secs_f64() / bmm.0.as_secs_f64().max(1e-9));
    row("block-max maxscore", &[ms(bmm.0), ms(bmm.1), ratio(bmm.0)]);
    row(
        "query terms' postings, all scored",
        &[ms(ex.0), ms(ex.1), ratio(ex.0)],
    );
    row(
        "exhaustive: every record's vector",
        &[ms(all.0), ms(all.1), ratio(all.0)],
    );
    println!(
        "maxscore's scores equal the unpruned scoring's on {:.1}% of queries",
        100.0 * exact_agree / scaled.len() as f64
    );
    for (name, (p50, _), _, ids) in &peers {
        let s: f64 = ids
            .iter()
            .zip(&indigo_ids)
            .map(|(a, b)| overlap(a, b))
            .sum();
        println!(
            "indigo p50 / {name} p50: {:.2}; top-10 overlap with indigo {:.3}",
            indigo.0.as_secs_f64() / p50.as_secs_f64().max(1e-9),
            s / ids.len() as f64
        );
    }
}

/// Chroma's IDF (the executor's).
fn indigo_executor_idf(n: f32, nt: f32) -> f32 {
    let nt = nt.clamp(0.0, n);
    ((n - nt + 0.5) / (nt + 0.5)).ln_1p()
}

type PeerRun = (&'static str, (Duration, Duration), Duration, Vec<Vec<u32>>);

fn tantivy_run(tokens: &[Vec<String>], queries: &[Vec<String>], k: usize) -> PeerRun {
    use tantivy::collector::TopDocs;
    use tantivy::query::QueryParser;
    use tantivy::schema::{Schema, Value, STORED, TEXT};
    use tantivy::{doc, Index, TantivyDocument};
    let mut sb = Schema::builder();
    let id = sb.add_u64_field("id", STORED);
    let body = sb.add_text_field("body", TEXT);
    let schema = sb.build();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::create_in_dir(dir.path(), schema).unwrap();
    let t = Instant::now();
    let mut w = index.writer(256 << 20).unwrap();
    let pb = progress(tokens.len() as u64, "tantivy ingest");
    for (i, t) in tokens.iter().enumerate() {
        w.add_document(doc!(id => i as u64, body => t.join(" ")))
            .unwrap();
        pb.inc(1);
    }
    w.commit().unwrap();
    pb.finish_and_clear();
    let reader = index.reader().unwrap();
    let build = t.elapsed();
    let searcher = reader.searcher();
    let qp = QueryParser::for_index(&index, vec![body]);
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for q in queries {
        let t = Instant::now();
        let query = qp.parse_query(&q.join(" ")).unwrap();
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .unwrap();
        let got: Vec<u32> = top
            .iter()
            .map(|(_, a)| {
                let d: TantivyDocument = searcher.doc(*a).unwrap();
                d.get_first(id).and_then(|v| v.as_u64()).unwrap() as u32
            })
            .collect();
        lat.push(t.elapsed());
        ids.push(got);
    }
    ("tantivy 0.27", p50_p99(lat), build, ids)
}

fn fts5_run(tokens: &[Vec<String>], queries: &[Vec<String>], k: usize, dir: &Path) -> PeerRun {
    let conn = rusqlite::Connection::open(dir.join("fts5.sqlite3")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE VIRTUAL TABLE f USING fts5(body, content='');",
    )
    .unwrap();
    let t = Instant::now();
    let pb = progress(tokens.len() as u64, "fts5 ingest");
    for chunk in tokens.chunks(10_000).enumerate() {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut st = tx
                .prepare("INSERT INTO f(rowid, body) VALUES (?1, ?2)")
                .unwrap();
            for (i, t) in chunk.1.iter().enumerate() {
                st.execute(rusqlite::params![
                    (chunk.0 * 10_000 + i) as i64,
                    t.join(" ")
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
        pb.inc(chunk.1.len() as u64);
    }
    pb.finish_and_clear();
    let build = t.elapsed();
    let mut st = conn
        .prepare("SELECT rowid FROM f WHERE f MATCH ?1 ORDER BY rank LIMIT ?2")
        .unwrap();
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for q in queries {
        let expr = q
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR ");
        let t = Instant::now();
        let got: Vec<u32> = st
            .query_map(rusqlite::params![expr, k as i64], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|r| r.unwrap() as u32)
            .collect();
        lat.push(t.elapsed());
        ids.push(got);
    }
    ("sqlite fts5 bm25()", p50_p99(lat), build, ids)
}
