//! The store's write-ahead log: one file per memtable, `NNNNNNNNNN.wal`.
//! Format (see `docs/format.md`): an 8-byte header (`IDGWAL`, u16 version), then
//! records `[u32 len][u32 crc32c(payload)][payload]`, one record per batch.

use std::path::Path;

use crate::codec::{put_bytes, put_varint, Reader};
use crate::error::{Result, StorageError};
use crate::fs::FileSystem;
use crate::memtable::Op;

pub(crate) const WAL_MAGIC: &[u8; 6] = b"IDGWAL";
/// Version 2 logs a set change's ids as a sorted run (version 1: one id each).
pub(crate) const WAL_VERSION: u16 = 2;
pub(crate) const HEADER_LEN: usize = 8;

pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(WAL_MAGIC);
    h[6..].copy_from_slice(&WAL_VERSION.to_le_bytes());
    h
}

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;
const TAG_SET_ADD: u8 = 2;
const TAG_SET_REMOVE: u8 = 3;

/// Encodes one batch as a complete WAL record (length, checksum, payload).
pub(crate) fn encode_record(ops: &[Op], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    put_varint(out, ops.len() as u64);
    for op in ops {
        match op {
            Op::Put { bucket, key, value } => {
                out.push(TAG_PUT);
                put_varint(out, u64::from(*bucket));
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Op::Delete { bucket, key } => {
                out.push(TAG_DELETE);
                put_varint(out, u64::from(*bucket));
                put_bytes(out, key);
            }
            Op::SetAdd { bucket, key, ids } | Op::SetRemove { bucket, key, ids } => {
                out.push(if matches!(op, Op::SetAdd { .. }) {
                    TAG_SET_ADD
                } else {
                    TAG_SET_REMOVE
                });
                put_varint(out, u64::from(*bucket));
                put_bytes(out, key);
                // Ascending: the first id, then each one's gap from the last.
                put_varint(out, ids.len() as u64);
                let mut last = 0;
                for (i, id) in ids.iter().enumerate() {
                    put_varint(out, if i == 0 { *id } else { id - last });
                    last = *id;
                }
            }
        }
    }
    let payload = &out[start + 8..];
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A set change's ids: one (version 1), or a count and ascending gaps.
fn decode_ids(r: &mut Reader, version: u16) -> Option<Vec<u64>> {
    if version == 1 {
        return Some(vec![r.varint()?]);
    }
    let n = r.varint()?;
    if n == 0 {
        return None;
    }
    let mut ids = Vec::with_capacity(n.min(1 << 16) as usize);
    let mut last = 0u64;
    for i in 0..n {
        let d = r.varint()?;
        if i > 0 && d == 0 {
            return None;
        }
        last = if i == 0 { d } else { last.checked_add(d)? };
        ids.push(last);
    }
    Some(ids)
}

fn decode_payload(p: &[u8], version: u16) -> Option<Vec<Op>> {
    let mut r = Reader::new(p);
    let n = r.varint()?;
    let mut ops = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let tag = r.u8()?;
        let bucket = u32::try_from(r.varint()?).ok()?;
        let key = r.bytes()?.to_vec();
        ops.push(match tag {
            TAG_PUT => Op::Put {
                bucket,
                key,
                value: r.bytes()?.to_vec(),
            },
            TAG_DELETE => Op::Delete { bucket, key },
            TAG_SET_ADD => Op::SetAdd {
                bucket,
                key,
                ids: decode_ids(&mut r, version)?,
            },
            TAG_SET_REMOVE => Op::SetRemove {
                bucket,
                key,
                ids: decode_ids(&mut r, version)?,
            },
            _ => return None,
        });
    }
    r.is_empty().then_some(ops)
}

/// What replay found in one WAL file.
pub(crate) struct Replayed {
    pub batches: Vec<Vec<Op>>,
    /// True when the file ended in an incomplete or corrupt record (a torn tail).
    pub torn: bool,
}

/// Reads every whole record of a WAL file, stopping at the first torn one.
pub(crate) fn replay(fs: &dyn FileSystem, path: &Path) -> Result<Replayed> {
    let data = fs
        .read_all(path)
        .map_err(StorageError::io("read WAL", path))?;
    if data.len() < HEADER_LEN {
        // Created but the header never reached the disk: nothing was acknowledged in it.
        return Ok(Replayed {
            batches: Vec::new(),
            torn: !data.is_empty(),
        });
    }
    if &data[..6] != WAL_MAGIC {
        return Err(StorageError::corrupt(path, "not a WAL file (bad magic)"));
    }
    let version = u16::from_le_bytes([data[6], data[7]]);
    if !(1..=WAL_VERSION).contains(&version) {
        return Err(StorageError::corrupt(
            path,
            format!("WAL version {version} is not supported (this build reads 1 to {WAL_VERSION})"),
        ));
    }
    let mut r = Reader::new(&data);
    r.pos = HEADER_LEN;
    let mut batches = Vec::new();
    while !r.is_empty() {
        let rec = (|| {
            let len = r.u32()? as usize;
            let crc = r.u32()?;
            let payload = r.take(len)?;
            if crc32c::crc32c(payload) != crc {
                return None;
            }
            decode_payload(payload, version)
        })();
        match rec {
            Some(ops) => batches.push(ops),
            None => {
                return Ok(Replayed {
                    batches,
                    torn: true,
                })
            }
        }
    }
    Ok(Replayed {
        batches,
        torn: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FaultFs, FileSystem};

    #[test]
    fn records_roundtrip_and_a_torn_tail_is_cut() {
        let fs = FaultFs::new();
        let p = Path::new("/d/1.wal");
        let f = fs.create(p).unwrap();
        f.append(&header()).unwrap();
        let b1 = vec![
            Op::Put {
                bucket: 1,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Op::SetAdd {
                bucket: 2,
                key: b"t".to_vec(),
                ids: vec![7],
            },
            Op::SetRemove {
                bucket: 2,
                key: b"u".to_vec(),
                ids: vec![3, 4, 1 << 40],
            },
        ];
        let b2 = vec![Op::Delete {
            bucket: 1,
            key: b"k".to_vec(),
        }];
        let mut buf = Vec::new();
        encode_record(&b1, &mut buf);
        let first_len = buf.len();
        encode_record(&b2, &mut buf);
        f.append(&buf).unwrap();
        let r = replay(&fs, p).unwrap();
        assert_eq!(r.batches, vec![b1.clone(), b2]);
        assert!(!r.torn);
        for cut in 0..buf.len() - first_len {
            let q = Path::new("/d/2.wal");
            let g = fs.create(q).unwrap();
            g.append(&header()).unwrap();
            g.append(&buf[..first_len + cut]).unwrap();
            let r = replay(&fs, q).unwrap();
            assert_eq!(r.batches, vec![b1.clone()]);
            assert_eq!(r.torn, cut > 0);
        }
    }

    #[test]
    fn version_1_records_still_replay() {
        // A version-1 file: one id per set change.
        let fs = FaultFs::new();
        let p = Path::new("/d/1.wal");
        let f = fs.create(p).unwrap();
        let mut h = header();
        h[6..].copy_from_slice(&1u16.to_le_bytes());
        f.append(&h).unwrap();
        let mut payload = Vec::new();
        put_varint(&mut payload, 1);
        payload.push(TAG_SET_ADD);
        put_varint(&mut payload, 2);
        put_bytes(&mut payload, b"t");
        put_varint(&mut payload, 9);
        let mut rec = Vec::new();
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        f.append(&rec).unwrap();
        let r = replay(&fs, p).unwrap();
        assert_eq!(
            r.batches,
            vec![vec![Op::SetAdd {
                bucket: 2,
                key: b"t".to_vec(),
                ids: vec![9],
            }]]
        );
    }
}
