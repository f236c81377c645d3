//! `MANIFEST`: the durable list of buckets and their live segments, replaced
//! atomically (write `MANIFEST.tmp`, fsync, rename, fsync the directory).
//! Layout: "IDGMAN" u16 version, u32 body length, body, u32 crc32c(body).

use std::path::Path;

use crate::codec::{put_bytes, put_varint, Reader};
use crate::error::{Result, StorageError};
use crate::fs::FileSystem;
use crate::Strategy;

const MAGIC: &[u8; 6] = b"IDGMAN";
const VERSION: u16 = 1;
pub(crate) const NAME: &str = "MANIFEST";
pub(crate) const TMP_NAME: &str = "MANIFEST.tmp";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SegmentMeta {
    pub file_no: u64,
    pub level: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BucketMeta {
    pub id: u32,
    pub name: String,
    pub strategy: Strategy,
    /// Oldest first.
    pub segments: Vec<SegmentMeta>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Manifest {
    /// The next unused file number (WAL and segment files share the sequence).
    pub next_file: u64,
    /// WAL files numbered below this are fully flushed into segments.
    pub wal_min: u64,
    pub buckets: Vec<BucketMeta>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            next_file: 1,
            wal_min: 0,
            buckets: Vec::new(),
        }
    }
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_varint(&mut body, self.next_file);
        put_varint(&mut body, self.wal_min);
        put_varint(&mut body, self.buckets.len() as u64);
        for b in &self.buckets {
            put_varint(&mut body, u64::from(b.id));
            put_bytes(&mut body, b.name.as_bytes());
            body.push(b.strategy as u8);
            put_varint(&mut body, b.segments.len() as u64);
            for s in &b.segments {
                put_varint(&mut body, s.file_no);
                put_varint(&mut body, u64::from(s.level));
            }
        }
        let mut out = Vec::with_capacity(body.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out
    }

    fn decode(buf: &[u8]) -> Option<std::result::Result<Manifest, String>> {
        let mut r = Reader::new(buf);
        if r.take(6)? != MAGIC {
            return Some(Err("bad magic".into()));
        }
        let version = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        if version != VERSION {
            return Some(Err(format!(
                "manifest version {version} is not supported (this build reads {VERSION})"
            )));
        }
        let len = r.u32()? as usize;
        let body = r.take(len)?;
        let crc = r.u32()?;
        if crc32c::crc32c(body) != crc || !r.is_empty() {
            return Some(Err("checksum mismatch".into()));
        }
        let mut r = Reader::new(body);
        let next_file = r.varint()?;
        let wal_min = r.varint()?;
        let n = r.varint()?;
        let mut buckets = Vec::new();
        for _ in 0..n {
            let id = u32::try_from(r.varint()?).ok()?;
            let name = String::from_utf8(r.bytes()?.to_vec()).ok()?;
            let strategy = Strategy::from_u8(r.u8()?)?;
            let ns = r.varint()?;
            let mut segments = Vec::new();
            for _ in 0..ns {
                segments.push(SegmentMeta {
                    file_no: r.varint()?,
                    level: u32::try_from(r.varint()?).ok()?,
                });
            }
            buckets.push(BucketMeta {
                id,
                name,
                strategy,
                segments,
            });
        }
        Some(Ok(Manifest {
            next_file,
            wal_min,
            buckets,
        }))
    }

    /// Loads the manifest, or `None` for a directory that never had one.
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(NAME);
        if !fs.exists(&path) {
            return Ok(None);
        }
        let buf = fs
            .read_all(&path)
            .map_err(StorageError::io("read manifest", &path))?;
        match Manifest::decode(&buf) {
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => Err(StorageError::corrupt(path, e)),
            None => Err(StorageError::corrupt(path, "truncated or malformed")),
        }
    }

    pub fn store(&self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let tmp = dir.join(TMP_NAME);
        let f = fs
            .create(&tmp)
            .map_err(StorageError::io("create manifest", &tmp))?;
        f.append(&self.encode())
            .map_err(StorageError::io("write manifest", &tmp))?;
        f.sync().map_err(StorageError::io("fsync manifest", &tmp))?;
        let path = dir.join(NAME);
        fs.rename(&tmp, &path)
            .map_err(StorageError::io("rename manifest", &path))?;
        fs.sync_dir(dir)
            .map_err(StorageError::io("fsync directory", dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn roundtrip_and_detects_damage() {
        let m = Manifest {
            next_file: 42,
            wal_min: 7,
            buckets: vec![BucketMeta {
                id: 3,
                name: "objects".into(),
                strategy: Strategy::Set,
                segments: vec![SegmentMeta {
                    file_no: 5,
                    level: 2,
                }],
            }],
        };
        let enc = m.encode();
        assert_eq!(Manifest::decode(&enc), Some(Ok(m)));
        let mut bad = enc.clone();
        let n = bad.len();
        bad[n - 6] ^= 1;
        assert!(matches!(Manifest::decode(&bad), Some(Err(_))));
        assert!(Manifest::decode(&enc[..enc.len() - 1]).is_none());
    }
}
