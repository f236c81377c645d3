//! Immutable sorted segment files (`NNNNNNNNNN.seg`). Layout (see `docs/format.md`):
//!
//! ```text
//! header  "IDGSEG" u16 version
//! blocks  [entries ...][u32 crc32c(entries)]        ~4 KiB each
//! bloom   u32 probes, u64 words, words...
//! index   varint n, n × (bytes last_key, u64 offset, u32 len)
//! footer  64 bytes: bloom_off, bloom_len, index_off, index_len, entries (u64 each),
//!         u8 strategy, 3 reserved, u32 crc32c(bloom ‖ index), u32 crc32c(footer[0..48]),
//!         u32 version, 8 bytes "IDGSEGFT"
//! ```

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use roaring::RoaringTreemap;

use crate::bloom::{key_hash, Bloom};
use crate::codec::{put_bytes, Reader};
use crate::error::{Result, StorageError};
use crate::fs::{FileSystem, ReadableFile, WritableFile};
use crate::memtable::{Entry, EntryRef};
use crate::Strategy;

const MAGIC: &[u8; 6] = b"IDGSEG";
const FOOTER_MAGIC: &[u8; 8] = b"IDGSEGFT";
pub(crate) const VERSION: u16 = 1;
const FOOTER_LEN: usize = 64;
const BLOCK_TARGET: usize = 4096;
const WRITE_BUFFER: usize = 1 << 20;

const TAG_VALUE: u8 = 0;
const TAG_TOMBSTONE: u8 = 1;
const TAG_SET: u8 = 2;

fn encode_entry(out: &mut Vec<u8>, key: &[u8], e: EntryRef<'_>) {
    put_bytes(out, key);
    match e {
        EntryRef::Value(v) => {
            out.push(TAG_VALUE);
            put_bytes(out, v);
        }
        EntryRef::Tombstone => out.push(TAG_TOMBSTONE),
        EntryRef::Set { adds, dels } => {
            out.push(TAG_SET);
            for bm in [adds, dels] {
                let mut b = Vec::with_capacity(bm.serialized_size());
                bm.serialize_into(&mut b)
                    .expect("writing to a Vec cannot fail");
                put_bytes(out, &b);
            }
        }
    }
}

fn decode_entry<'a>(r: &mut Reader<'a>) -> Option<(&'a [u8], Entry)> {
    let key = r.bytes()?;
    let e = match r.u8()? {
        TAG_VALUE => Entry::Value(r.bytes()?.to_vec()),
        TAG_TOMBSTONE => Entry::Tombstone,
        TAG_SET => {
            let adds = RoaringTreemap::deserialize_from(r.bytes()?).ok()?;
            let dels = RoaringTreemap::deserialize_from(r.bytes()?).ok()?;
            Entry::Set { adds, dels }
        }
        _ => return None,
    };
    Some((key, e))
}

/// Streams sorted entries into a new segment file.
pub(crate) struct SegmentWriter {
    file: Arc<dyn WritableFile>,
    path: PathBuf,
    strategy: Strategy,
    buf: Vec<u8>,
    block: Vec<u8>,
    block_last_key: Vec<u8>,
    written: u64,
    index: Vec<u8>,
    blocks: u64,
    hashes: Vec<u64>,
}

impl SegmentWriter {
    pub fn create(fs: &dyn FileSystem, path: &Path, strategy: Strategy) -> Result<Self> {
        let file = fs
            .create(path)
            .map_err(StorageError::io("create segment", path))?;
        let mut buf = Vec::with_capacity(WRITE_BUFFER + BLOCK_TARGET * 2);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            strategy,
            buf,
            block: Vec::with_capacity(BLOCK_TARGET * 2),
            block_last_key: Vec::new(),
            written: 0,
            index: Vec::new(),
            blocks: 0,
            hashes: Vec::new(),
        })
    }

    /// Adds an entry; keys must arrive in strictly increasing order.
    pub fn add(&mut self, key: &[u8], e: EntryRef<'_>) -> Result<()> {
        debug_assert!(self.hashes.is_empty() || key > self.block_last_key.as_slice());
        encode_entry(&mut self.block, key, e);
        self.block_last_key.clear();
        self.block_last_key.extend_from_slice(key);
        self.hashes.push(key_hash(key));
        if self.block.len() >= BLOCK_TARGET {
            self.finish_block()?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    fn offset(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    fn finish_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let off = self.offset();
        let crc = crc32c::crc32c(&self.block);
        self.buf.extend_from_slice(&self.block);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        let len = (self.block.len() + 4) as u32;
        put_bytes(&mut self.index, &self.block_last_key);
        self.index.extend_from_slice(&off.to_le_bytes());
        self.index.extend_from_slice(&len.to_le_bytes());
        self.blocks += 1;
        self.block.clear();
        if self.buf.len() >= WRITE_BUFFER {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<()> {
        self.file
            .append(&self.buf)
            .map_err(StorageError::io("write segment", &self.path))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes bloom, index and footer, then fsyncs. Returns the file size.
    pub fn finish(mut self) -> Result<u64> {
        self.finish_block()?;
        let bloom_off = self.offset();
        let mut meta = Vec::new();
        Bloom::build(&self.hashes).encode(&mut meta);
        let bloom_len = meta.len() as u64;
        let mut idx = Vec::new();
        crate::codec::put_varint(&mut idx, self.blocks);
        idx.extend_from_slice(&self.index);
        meta.extend_from_slice(&idx);
        let meta_crc = crc32c::crc32c(&meta);
        self.buf.extend_from_slice(&meta);
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        for v in [
            bloom_off,
            bloom_len,
            bloom_off + bloom_len,
            idx.len() as u64,
            self.hashes.len() as u64,
        ] {
            footer.extend_from_slice(&v.to_le_bytes());
        }
        footer.push(self.strategy as u8);
        footer.extend_from_slice(&[0; 3]);
        footer.extend_from_slice(&meta_crc.to_le_bytes());
        let fcrc = crc32c::crc32c(&footer);
        footer.extend_from_slice(&fcrc.to_le_bytes());
        footer.extend_from_slice(&u32::from(VERSION).to_le_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        debug_assert_eq!(footer.len(), FOOTER_LEN);
        self.buf.extend_from_slice(&footer);
        self.flush_buf()?;
        self.file
            .sync()
            .map_err(StorageError::io("fsync segment", &self.path))?;
        Ok(self.written)
    }
}

/// Counters for how reads used the bloom filters.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub probes: AtomicU64,
    pub bloom_negatives: AtomicU64,
    pub block_reads: AtomicU64,
}

/// An open, immutable segment. When marked obsolete (merged away), its file is
/// removed once the last reader drops it.
pub(crate) struct Segment {
    pub file_no: u64,
    pub level: u32,
    pub size: u64,
    path: PathBuf,
    fs: Arc<dyn FileSystem>,
    file: Arc<dyn ReadableFile>,
    bloom: Bloom,
    /// Concatenated last keys of the blocks; `key_ends[i]` is where block i's key ends.
    index_keys: Vec<u8>,
    key_ends: Vec<u32>,
    block_pos: Vec<(u64, u32)>,
    obsolete: AtomicBool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segment({} L{})", self.path.display(), self.level)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            // Best effort: a file left behind is removed as an orphan at the next open.
            let _ = self.fs.remove(&self.path);
        }
    }
}

impl Segment {
    pub fn open(
        fs: Arc<dyn FileSystem>,
        path: &Path,
        file_no: u64,
        level: u32,
        strategy: Strategy,
    ) -> Result<Segment> {
        let corrupt = |d: &str| StorageError::corrupt(path, d.to_string());
        let file = fs
            .open(path)
            .map_err(StorageError::io("open segment", path))?;
        let size = file.len();
        if size < (8 + FOOTER_LEN) as u64 {
            return Err(corrupt("file too short to be a segment"));
        }
        let mut footer = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut footer, size - FOOTER_LEN as u64)
            .map_err(StorageError::io("read segment footer", path))?;
        if &footer[56..64] != FOOTER_MAGIC {
            return Err(corrupt("bad footer magic (truncated or not a segment)"));
        }
        let mut r = Reader::new(&footer);
        let bloom_off = r.u64().unwrap();
        let bloom_len = r.u64().unwrap();
        let index_off = r.u64().unwrap();
        let index_len = r.u64().unwrap();
        let _entries = r.u64().unwrap();
        let strat = r.u8().unwrap();
        r.take(3);
        let meta_crc = r.u32().unwrap();
        let fcrc = r.u32().unwrap();
        let version = r.u32().unwrap();
        if crc32c::crc32c(&footer[..48]) != fcrc {
            return Err(corrupt("footer checksum mismatch"));
        }
        if version != u32::from(VERSION) {
            return Err(corrupt(&format!(
                "segment version {version} is not supported (this build reads {VERSION})"
            )));
        }
        if strat != strategy as u8 {
            return Err(corrupt("segment strategy differs from its bucket's"));
        }
        // Checked: a damaged footer may hold any numbers, and its CRC can match.
        if bloom_off < 8
            || bloom_off.checked_add(bloom_len) != Some(index_off)
            || index_off.checked_add(index_len) != Some(size - FOOTER_LEN as u64)
        {
            return Err(corrupt("footer offsets are inconsistent"));
        }
        let mut meta = vec![0u8; (bloom_len + index_len) as usize];
        file.read_exact_at(&mut meta, bloom_off)
            .map_err(StorageError::io("read segment index", path))?;
        if crc32c::crc32c(&meta) != meta_crc {
            return Err(corrupt("bloom filter / block index checksum mismatch"));
        }
        let bloom = Bloom::decode(&meta[..bloom_len as usize])
            .ok_or_else(|| corrupt("malformed bloom filter"))?;
        let mut r = Reader::new(&meta[bloom_len as usize..]);
        let n = r.varint().ok_or_else(|| corrupt("malformed block index"))? as usize;
        let mut index_keys = Vec::new();
        let mut key_ends = Vec::with_capacity(n);
        let mut block_pos = Vec::with_capacity(n);
        for _ in 0..n {
            let (k, off, len) = (|| Some((r.bytes()?, r.u64()?, r.u32()?)))()
                .ok_or_else(|| corrupt("malformed block index"))?;
            if off
                .checked_add(u64::from(len))
                .is_none_or(|end| end > bloom_off)
            {
                return Err(corrupt("block index points past the data"));
            }
            // Every block ends with its 4-byte checksum.
            if len < 4 {
                return Err(corrupt("block index names a block too short to be one"));
            }
            index_keys.extend_from_slice(k);
            key_ends.push(index_keys.len() as u32);
            block_pos.push((off, len));
        }
        Ok(Segment {
            file_no,
            level,
            size,
            path: path.to_path_buf(),
            fs,
            file,
            bloom,
            index_keys,
            key_ends,
            block_pos,
            obsolete: AtomicBool::new(false),
        })
    }

    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    fn block_key(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.key_ends[i - 1] as usize
        };
        &self.index_keys[start..self.key_ends[i] as usize]
    }

    /// The first block whose last key is ≥ `key`.
    fn find_block(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.block_pos.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.block_key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn read_block(&self, i: usize, stats: Option<&ReadStats>) -> Result<Vec<u8>> {
        let (off, len) = self.block_pos[i];
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, off)
            .map_err(StorageError::io("read segment block", &self.path))?;
        if let Some(s) = stats {
            s.block_reads.fetch_add(1, Ordering::Relaxed);
        }
        let body = buf.len() - 4;
        let crc = u32::from_le_bytes(buf[body..].try_into().unwrap());
        if crc32c::crc32c(&buf[..body]) != crc {
            return Err(StorageError::corrupt(
                &self.path,
                format!("block {i} at offset {off}: checksum mismatch"),
            ));
        }
        buf.truncate(body);
        Ok(buf)
    }

    /// Point lookup; the bloom filter answers most misses without reading a block.
    pub fn get(&self, key: &[u8], hash: u64, stats: &ReadStats) -> Result<Option<Entry>> {
        stats.probes.fetch_add(1, Ordering::Relaxed);
        if !self.bloom.may_contain(hash) {
            stats.bloom_negatives.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let i = self.find_block(key);
        if i >= self.block_pos.len() {
            return Ok(None);
        }
        let block = self.read_block(i, Some(stats))?;
        let mut r = Reader::new(&block);
        while !r.is_empty() {
            let (k, e) = decode_entry(&mut r).ok_or_else(|| self.malformed(i))?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(e)),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }

    fn malformed(&self, block: usize) -> StorageError {
        StorageError::corrupt(&self.path, format!("block {block}: malformed entry"))
    }

    /// Entries with keys in `[lo, hi)` (bounds as given), in order.
    pub fn iter(self: &Arc<Self>, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> SegmentIter {
        let block = match &lo {
            Bound::Included(k) | Bound::Excluded(k) => self.find_block(k),
            Bound::Unbounded => 0,
        };
        SegmentIter {
            seg: self.clone(),
            block,
            buf: Vec::new(),
            pos: 0,
            lo,
            hi,
            done: false,
        }
    }
}

/// Streams a key range of a segment block by block.
pub(crate) struct SegmentIter {
    seg: Arc<Segment>,
    block: usize,
    buf: Vec<u8>,
    pos: usize,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    done: bool,
}

impl Iterator for SegmentIter {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.pos >= self.buf.len() {
                if self.block >= self.seg.block_pos.len() {
                    self.done = true;
                    return None;
                }
                match self.seg.read_block(self.block, None) {
                    Ok(b) => self.buf = b,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                self.block += 1;
                self.pos = 0;
            }
            let mut r = Reader::new(&self.buf);
            r.pos = self.pos;
            let Some((k, e)) = decode_entry(&mut r) else {
                self.done = true;
                return Some(Err(self.seg.malformed(self.block - 1)));
            };
            self.pos = r.pos;
            let below = match &self.lo {
                Bound::Included(l) => k < l.as_slice(),
                Bound::Excluded(l) => k <= l.as_slice(),
                Bound::Unbounded => false,
            };
            if below {
                continue;
            }
            let above = match &self.hi {
                Bound::Included(h) => k > h.as_slice(),
                Bound::Excluded(h) => k >= h.as_slice(),
                Bound::Unbounded => false,
            };
            if above {
                self.done = true;
                return None;
            }
            return Some(Ok((k.to_vec(), e)));
        }
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;
    use crate::fs::FaultFs;

    /// Found by the store_segment fuzz target: footer offsets whose sum overflows
    /// (under a valid footer checksum) panicked instead of being damage.
    #[test]
    fn footer_offsets_that_overflow_are_damage() {
        let bytes = include_bytes!("../tests/fuzz/segment_offsets_overflow.bin");
        let fs = Arc::new(FaultFs::new());
        let path = Path::new("/s/0000000001.seg");
        let f = fs.create(path).unwrap();
        f.append(bytes).unwrap();
        for strategy in [Strategy::Replace, Strategy::Set] {
            match Segment::open(fs.clone(), path, 1, 0, strategy) {
                Err(StorageError::Corrupt { .. }) => {}
                other => panic!("{strategy:?}: {other:?}"),
            }
        }
    }
}
