//! Writes the test fixture `testdata/wordnet/vectors.bf16` from
//! the original wordnet-minilm-10k files named by `$INDIGO_DATA_DIR`, so the
//! test suite runs from the repository alone. Format: `docs/format.md`, "Test fixtures".
//!
//! `cargo run --release -p indigo-bench --example make_testdata`

use std::path::Path;

use indigo_bench::data;

/// Round-to-nearest-even truncation of an f32 to its top 16 bits.
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let round = 0x7fff + ((b >> 16) & 1);
    ((b + round) >> 16) as u16
}

fn main() -> std::io::Result<()> {
    let src = data::wordnet_dir()
        .expect("set INDIGO_DATA_DIR to the original wordnet-minilm-10k directory");
    let w = data::wordnet()?;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wordnet");
    std::fs::create_dir_all(&out)?;
    let mut buf = Vec::new();
    buf.extend_from_slice(b"IDGVBF16");
    buf.extend_from_slice(&1u32.to_le_bytes());
    buf.extend_from_slice(&(w.base.dim as u32).to_le_bytes());
    buf.extend_from_slice(&(w.base.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(w.queries.len() as u32).to_le_bytes());
    for x in w.base.data.iter().chain(&w.queries.data) {
        buf.extend_from_slice(&bf16(*x).to_le_bytes());
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(out.join("vectors.bf16"), &buf)?;
    std::fs::copy(src.join("WORDNET-LICENSE"), out.join("WORDNET-LICENSE"))?;
    println!(
        "wrote {} base + {} query vectors of {} dimensions ({} bytes)",
        w.base.len(),
        w.queries.len(),
        w.base.dim,
        buf.len()
    );
    Ok(())
}
