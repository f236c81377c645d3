//! Readers for the fvecs/ivecs formats and the data sets the benchmarks use.

use std::io;
use std::path::{Path, PathBuf};

/// Row-major vectors of one dimension.
#[derive(Debug, Clone)]
pub struct Vectors {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Vectors {
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

fn read_vecs<T: Copy>(path: &Path, conv: fn([u8; 4]) -> T) -> io::Result<(usize, Vec<T>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut dim = 0usize;
    let mut pos = 0;
    while pos + 4 <= bytes.len() {
        let d = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if dim == 0 {
            dim = d;
        } else if d != dim {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: rows of dimension {dim} and {d}", path.display()),
            ));
        }
        pos += 4;
        let end = pos + 4 * d;
        if end > bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: truncated row", path.display()),
            ));
        }
        out.extend(
            bytes[pos..end]
                .chunks_exact(4)
                .map(|c| conv(c.try_into().unwrap())),
        );
        pos = end;
    }
    Ok((dim, out))
}

pub fn read_fvecs(path: &Path) -> io::Result<Vectors> {
    let (dim, data) = read_vecs(path, f32::from_le_bytes)?;
    Ok(Vectors { dim, data })
}

/// Rows of ids (ground-truth neighbours).
pub fn read_ivecs(path: &Path) -> io::Result<Vec<Vec<u32>>> {
    let (dim, data) = read_vecs(path, |b| i32::from_le_bytes(b) as u32)?;
    Ok(data.chunks(dim.max(1)).map(|c| c.to_vec()).collect())
}

/// The original wordnet-minilm-10k files (float32, with documents), when
/// `$INDIGO_DATA_DIR` names them; `None` means the repository's fixture. Only an
/// explicit setting reads data from outside the repository, so a clone alone
/// runs every benchmark and test the same way everywhere.
pub fn wordnet_dir() -> Option<PathBuf> {
    std::env::var_os("INDIGO_DATA_DIR").map(PathBuf::from)
}

/// The wordnet-minilm-10k set: base, queries, exact top-100 (cosine).
pub struct Dataset {
    pub name: String,
    pub base: Vectors,
    pub queries: Vectors,
    pub truth: Vec<Vec<u32>>,
}

/// The wordnet set; see [`wordnet_with_files`] (cached under `bench/cache`).
pub fn wordnet() -> io::Result<Dataset> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/cache");
    Ok(wordnet_with_files(&cache)?.0)
}

/// The wordnet set and its base, query and ground-truth files: from
/// [`wordnet_dir`] when it is there, otherwise from the repository's fixture
/// (the same embeddings in bfloat16, `testdata/wordnet`), whose exact top-100 by
/// cosine is computed once and cached in `cache`, so a clone of the repository
/// alone runs the benchmarks.
pub fn wordnet_with_files(cache: &Path) -> io::Result<(Dataset, [PathBuf; 3])> {
    if let Some(d) = wordnet_dir() {
        let paths = [
            d.join("base.fvecs"),
            d.join("query.fvecs"),
            d.join("groundtruth.ivecs"),
        ];
        let set = Dataset {
            name: "wordnet-minilm-10k".into(),
            base: read_fvecs(&paths[0])?,
            queries: read_fvecs(&paths[1])?,
            truth: read_ivecs(&paths[2])?,
        };
        return Ok((set, paths));
    }
    let name = "wordnet-minilm-10k (bf16 fixture)";
    let paths = [
        cache.join("wordnet-fixture-base.fvecs"),
        cache.join("wordnet-fixture-query.fvecs"),
        cache.join("wordnet-fixture-truth.ivecs"),
    ];
    {
        std::fs::create_dir_all(cache)?;
        if !paths.iter().all(|p| p.exists()) {
            eprintln!(
                "the repository's wordnet fixture (set INDIGO_DATA_DIR for the original files): \
                 computing its exact ground truth (cached afterwards) ..."
            );
            let (dim, base, queries) =
                crate::fixture::read_wordnet_fixture(&crate::fixture::wordnet_fixture_path())?;
            let flat = |rows: &[Vec<f32>], unit: bool| Vectors {
                dim,
                data: rows
                    .iter()
                    .flat_map(|r| {
                        let n = if unit {
                            r.iter()
                                .map(|x| x * x)
                                .sum::<f32>()
                                .sqrt()
                                .max(f32::MIN_POSITIVE)
                        } else {
                            1.0
                        };
                        r.iter().map(move |x| x / n)
                    })
                    .collect(),
            };
            // Cosine order is the L2 order of unit vectors.
            let truth = exact_l2_topk(&flat(&base, true), &flat(&queries, true), 100, 2);
            write_fvecs(&paths[0], &flat(&base, false))?;
            write_fvecs(&paths[1], &flat(&queries, false))?;
            write_ivecs(&paths[2], &truth)?;
        }
    }
    Ok((
        Dataset {
            name: name.into(),
            base: read_fvecs(&paths[0])?,
            queries: read_fvecs(&paths[1])?,
            truth: read_ivecs(&paths[2])?,
        },
        paths,
    ))
}

/// Writes vectors in fvecs format.
pub fn write_fvecs(path: &Path, v: &Vectors) -> io::Result<()> {
    let mut out = Vec::with_capacity(v.data.len() * 4 + v.len() * 4);
    for i in 0..v.len() {
        out.extend_from_slice(&(v.dim as u32).to_le_bytes());
        for x in v.row(i) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, out)
}

pub fn write_ivecs(path: &Path, rows: &[Vec<u32>]) -> io::Result<()> {
    let mut out = Vec::new();
    for r in rows {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        for x in r {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, out)
}

/// Reads a gzipped IDX image file (as in MNIST) into one f32 row per image.
pub fn read_idx_images_gz(path: &Path) -> io::Result<Vectors> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: {e} (apt-get install dataset-fashion-mnist)",
                path.display()
            ),
        )
    })?;
    let mut buf = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut buf)?;
    let be = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().unwrap()) as usize;
    if buf.len() < 16 || be(0) != 0x0803 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not an IDX image file", path.display()),
        ));
    }
    let (n, rows, cols) = (be(4), be(8), be(12));
    let dim = rows * cols;
    if buf.len() < 16 + n * dim {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: truncated", path.display()),
        ));
    }
    Ok(Vectors {
        dim,
        data: buf[16..16 + n * dim]
            .iter()
            .map(|&b| f32::from(b))
            .collect(),
    })
}

pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Exact top-`k` by squared L2 for each query, using `threads` threads.
pub fn exact_l2_topk(base: &Vectors, queries: &Vectors, k: usize, threads: usize) -> Vec<Vec<u32>> {
    use simsimd::SpatialSimilarity;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: std::sync::Mutex<Vec<Vec<u32>>> =
        std::sync::Mutex::new(vec![Vec::new(); queries.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let qi = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if qi >= queries.len() {
                    break;
                }
                let q = queries.row(qi);
                let mut d: Vec<(f64, u32)> = (0..base.len())
                    .map(|i| (f32::sqeuclidean(q, base.row(i)).unwrap(), i as u32))
                    .collect();
                d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                d.truncate(k);
                d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                out.lock().unwrap()[qi] = d.into_iter().map(|x| x.1).collect();
            });
        }
    });
    out.into_inner().unwrap()
}

/// Fashion-MNIST (60k train as base, the first `nq` test images as queries, L2),
/// with exact top-100 ground truth computed once and cached in `cache`.
/// Returns the data set and the paths of its cached fvecs/ivecs files.
pub fn fashion(cache: &Path, nq: usize) -> io::Result<(Dataset, [PathBuf; 3])> {
    std::fs::create_dir_all(cache)?;
    let paths = [
        cache.join("fashion-base.fvecs"),
        cache.join(format!("fashion-query-{nq}.fvecs")),
        cache.join(format!("fashion-truth-{nq}.ivecs")),
    ];
    if paths.iter().all(|p| p.exists()) {
        return Ok((
            Dataset {
                name: "fashion-mnist-784".into(),
                base: read_fvecs(&paths[0])?,
                queries: read_fvecs(&paths[1])?,
                truth: read_ivecs(&paths[2])?,
            },
            paths,
        ));
    }
    let dir = Path::new(FASHION_DIR);
    let base = read_idx_images_gz(&dir.join("train-images-idx3-ubyte.gz"))?;
    let mut queries = read_idx_images_gz(&dir.join("t10k-images-idx3-ubyte.gz"))?;
    queries.data.truncate(nq.min(queries.len()) * queries.dim);
    eprintln!(
        "computing exact ground truth for {} Fashion-MNIST queries (cached afterwards) ...",
        queries.len()
    );
    let truth = exact_l2_topk(&base, &queries, 100, 2);
    write_fvecs(&paths[0], &base)?;
    write_fvecs(&paths[1], &queries)?;
    write_ivecs(&paths[2], &truth)?;
    Ok((
        Dataset {
            name: "fashion-mnist-784".into(),
            base,
            queries,
            truth,
        },
        paths,
    ))
}
