//! Decodes the repository's wordnet fixture, `testdata/wordnet/vectors.bf16`
//! (format in `docs/format.md`, "Test fixtures"). Shared by the benchmarks and the
//! index tests (`crates/indigo-index/tests/common` includes this file), so it uses
//! only `std` and `crc32c`.

use std::io;
use std::path::{Path, PathBuf};

/// Where the fixture is, from the repository root.
pub fn wordnet_fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wordnet/vectors.bf16")
}

/// Rows of vectors.
pub type Rows = Vec<Vec<f32>>;

/// (dimension, base rows, query rows) of the fixture at `path`, checksum checked.
pub fn read_wordnet_fixture(path: &Path) -> io::Result<(usize, Rows, Rows)> {
    let bad = |m: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    let b = std::fs::read(path)?;
    if b.len() < 28 || &b[..8] != b"IDGVBF16" {
        return Err(bad("not the wordnet fixture (bad magic)".into()));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(bad("checksum mismatch".into()));
    }
    let u32_at = |p: usize| u32::from_le_bytes(body[p..p + 4].try_into().unwrap()) as usize;
    if u32_at(8) != 1 {
        return Err(bad(format!(
            "fixture version {} (this build reads 1)",
            u32_at(8)
        )));
    }
    let (dim, nb, nq) = (u32_at(12), u32_at(16), u32_at(20));
    let vals: Vec<f32> = body[24..]
        .chunks_exact(2)
        .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
        .collect();
    if dim == 0 || vals.len() != (nb + nq) * dim {
        return Err(bad(format!(
            "{} values for {nb}+{nq} rows of {dim}",
            vals.len()
        )));
    }
    let mut rows: Vec<Vec<f32>> = vals.chunks(dim).map(<[f32]>::to_vec).collect();
    let queries = rows.split_off(nb);
    Ok((dim, rows, queries))
}
