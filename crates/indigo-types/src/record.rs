//! Records, the write operations that change them, their encoding as one log entry
//! per request, and [`Resolver`]: the one definition of what a sequence of writes
//! does, used both by the compactor (to fold the log into storage) and by the
//! executor (to overlay the log tail not yet folded), so the two cannot disagree.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::metadata::{metadata_from_json, MetaValue, Metadata};
use crate::{invalid, InvalidArgument};

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub embedding: Arc<[f32]>,
    pub document: Option<String>,
    pub uri: Option<String>,
    pub metadata: Option<Metadata>,
}

/// What a write request does to each of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Inserts ids that do not exist; an existing id is left unchanged.
    Add = 1,
    /// Inserts, or updates an existing record as [`WriteKind::Update`] does.
    Upsert = 2,
    /// Changes the given fields of existing records; unknown ids are ignored.
    /// Metadata is merged key by key; a `None` value removes the key.
    Update = 3,
    Delete = 4,
}

/// One record of a write request. `None` fields are not given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordOp {
    pub id: String,
    pub embedding: Option<Arc<[f32]>>,
    pub document: Option<String>,
    pub uri: Option<String>,
    pub metadata: Option<BTreeMap<String, Option<MetaValue>>>,
}

/// One write request: the payload of one log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteEntry {
    pub kind: WriteKind,
    pub records: Vec<RecordOp>,
}

const ENTRY_VERSION: u8 = 1;

impl WriteEntry {
    /// `[u8 version][u8 kind][u32 n]` then per record `[str id][u8 flags]` and the
    /// fields the flags name: embedding `[u32 dim][f32…]`, document, uri (strings
    /// `[u32 len][utf-8]`), metadata (a JSON object string; null values remove keys).
    /// The log adds the length and checksum around it.
    pub fn encode(&self) -> Vec<u8> {
        let dim = self
            .records
            .first()
            .and_then(|r| r.embedding.as_ref())
            .map_or(0, |e| e.len());
        let mut out = Vec::with_capacity(6 + self.records.len() * (32 + dim * 4));
        out.push(ENTRY_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for r in &self.records {
            put_str(&mut out, &r.id);
            let flags = (r.embedding.is_some() as u8)
                | (r.document.is_some() as u8) << 1
                | (r.uri.is_some() as u8) << 2
                | (r.metadata.is_some() as u8) << 3;
            out.push(flags);
            if let Some(e) = &r.embedding {
                out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                for x in e.iter() {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            if let Some(d) = &r.document {
                put_str(&mut out, d);
            }
            if let Some(u) = &r.uri {
                put_str(&mut out, u);
            }
            if let Some(m) = &r.metadata {
                let obj: serde_json::Map<String, Value> = m
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_ref().map_or(Value::Null, |v| v.to_json())))
                    .collect();
                put_str(&mut out, &Value::Object(obj).to_string());
            }
        }
        out
    }

    /// Bytes of an encoded entry that [`WriteEntry::record_count`] reads.
    pub const HEADER_LEN: usize = 6;

    /// How many record operations an encoded entry holds, from its header alone
    /// (indexing progress is counted in them, as Chroma does).
    pub fn record_count(buf: &[u8]) -> Result<u32, String> {
        match buf {
            [v, _, a, b, c, d, ..] if *v == ENTRY_VERSION => {
                Ok(u32::from_le_bytes([*a, *b, *c, *d]))
            }
            [v, ..] if *v != ENTRY_VERSION => Err(format!(
                "write entry version {v} is not supported (this build reads {ENTRY_VERSION})"
            )),
            _ => Err("a write entry shorter than its header".into()),
        }
    }

    /// Decodes [`WriteEntry::encode`]'s output; the error says what is wrong.
    pub fn decode(buf: &[u8]) -> Result<WriteEntry, String> {
        let mut r = Reader { buf, pos: 0 };
        let v = r.u8()?;
        if v != ENTRY_VERSION {
            return Err(format!(
                "write entry version {v} is not supported (this build reads {ENTRY_VERSION})"
            ));
        }
        let kind = match r.u8()? {
            1 => WriteKind::Add,
            2 => WriteKind::Upsert,
            3 => WriteKind::Update,
            4 => WriteKind::Delete,
            k => return Err(format!("unknown write kind {k}")),
        };
        let n = r.u32()? as usize;
        let mut records = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let id = r.str()?;
            let flags = r.u8()?;
            let embedding = if flags & 1 != 0 {
                let dim = r.u32()? as usize;
                let bytes = r.take(dim * 4)?;
                let v: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                // Writes are validated before they are logged, so this is damage.
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(format!("the embedding of {id:?} is not finite"));
                }
                Some(Arc::from(v))
            } else {
                None
            };
            let document = if flags & 2 != 0 { Some(r.str()?) } else { None };
            let uri = if flags & 4 != 0 { Some(r.str()?) } else { None };
            let metadata = if flags & 8 != 0 {
                let text = r.str()?;
                let json: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                Some(metadata_from_json(&json, true).map_err(|e| e.0)?)
            } else {
                None
            };
            records.push(RecordOp {
                id,
                embedding,
                document,
                uri,
                metadata,
            });
        }
        if r.pos != buf.len() {
            return Err("trailing bytes after the write entry".into());
        }
        Ok(WriteEntry { kind, records })
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked cursor over an encoded buffer.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .buf
            .get(self.pos..self.pos.checked_add(n).ok_or("length overflow")?)
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8".to_string())
    }
}

/// Encodes a stored record without its embedding (kept apart, since most reads do
/// not ask for it): `[u8 version][str id][u8 flags][document][uri][metadata JSON]`.
pub fn encode_record_body(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.document.as_ref().map_or(0, |d| d.len()));
    out.push(ENTRY_VERSION);
    put_str(&mut out, &r.id);
    let flags = (r.document.is_some() as u8)
        | (r.uri.is_some() as u8) << 1
        | (r.metadata.is_some() as u8) << 2;
    out.push(flags);
    if let Some(d) = &r.document {
        put_str(&mut out, d);
    }
    if let Some(u) = &r.uri {
        put_str(&mut out, u);
    }
    if let Some(m) = &r.metadata {
        put_str(&mut out, &metadata_to_json(m).to_string());
    }
    out
}

/// The parts of a stored record body.
pub struct RecordBody {
    pub id: String,
    pub document: Option<String>,
    pub uri: Option<String>,
    pub metadata: Option<Metadata>,
}

pub fn decode_record_body(buf: &[u8]) -> Result<RecordBody, String> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.u8()?;
    if v != ENTRY_VERSION {
        return Err(format!("record version {v} is not supported"));
    }
    let id = r.str()?;
    let flags = r.u8()?;
    let document = if flags & 1 != 0 { Some(r.str()?) } else { None };
    let uri = if flags & 2 != 0 { Some(r.str()?) } else { None };
    let metadata = if flags & 4 != 0 {
        let json: Value = serde_json::from_str(&r.str()?).map_err(|e| e.to_string())?;
        let m = metadata_from_json(&json, false).map_err(|e| e.0)?;
        Some(m.into_iter().map(|(k, v)| (k, v.unwrap())).collect())
    } else {
        None
    };
    Ok(RecordBody {
        id,
        document,
        uri,
        metadata,
    })
}

/// The id of a stored record body, without decoding the rest.
pub fn decode_record_id(buf: &[u8]) -> Result<String, String> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.u8()?;
    if v != ENTRY_VERSION {
        return Err(format!("record version {v} is not supported"));
    }
    r.str()
}

pub fn metadata_to_json(m: &Metadata) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

pub fn encode_embedding(e: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.len() * 4);
    for x in e {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn decode_embedding(b: &[u8]) -> Arc<[f32]> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The fate of one id after a sequence of writes.
#[derive(Debug, Clone)]
pub struct Resolved<B> {
    /// The record as it was before the writes, with the caller's handle for it
    /// (the compactor's internal id).
    pub base: Option<(B, Arc<Record>)>,
    /// The record after the writes (`None`: it does not exist).
    pub current: Option<Arc<Record>>,
    /// `Some(n)` when `current` is a new record (it did not exist, or was deleted
    /// and added again): the n-th record created by these writes. New records are
    /// ordered after existing ones, by this number.
    pub created: Option<u64>,
}

impl<B> Resolved<B> {
    /// Whether the record after the writes is the base record, possibly changed.
    pub fn keeps_base(&self) -> bool {
        self.current.is_some() && self.created.is_none() && self.base.is_some()
    }
}

/// Applies write entries in log order to the records they touch, looking up each
/// record's state before them once, through `base`.
pub struct Resolver<B> {
    pub touched: HashMap<String, Resolved<B>>,
    created: u64,
}

impl<B> Default for Resolver<B> {
    fn default() -> Self {
        Resolver {
            touched: HashMap::new(),
            created: 0,
        }
    }
}

impl<B: Clone> Resolver<B> {
    pub fn apply<E>(
        &mut self,
        entry: &WriteEntry,
        mut base: impl FnMut(&str) -> Result<Option<(B, Arc<Record>)>, E>,
    ) -> Result<(), E> {
        for op in &entry.records {
            let slot = match self.touched.get_mut(&op.id) {
                Some(s) => s,
                None => {
                    let b = base(&op.id)?;
                    let current = b.as_ref().map(|(_, r)| r.clone());
                    self.touched.entry(op.id.clone()).or_insert(Resolved {
                        base: b,
                        current,
                        created: None,
                    })
                }
            };
            match (entry.kind, &slot.current) {
                (WriteKind::Delete, _) => {
                    slot.current = None;
                    slot.created = None;
                }
                (WriteKind::Add | WriteKind::Upsert, None) => {
                    let Some(embedding) = op.embedding.clone() else {
                        continue; // validated before logging; never stored
                    };
                    slot.current = Some(Arc::new(Record {
                        id: op.id.clone(),
                        embedding,
                        document: op.document.clone(),
                        uri: op.uri.clone(),
                        metadata: op.metadata.as_ref().and_then(|m| {
                            let m: Metadata = m
                                .iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                                .collect();
                            (!m.is_empty()).then_some(m)
                        }),
                    }));
                    self.created += 1;
                    slot.created = Some(self.created);
                }
                (WriteKind::Add, Some(_)) | (WriteKind::Update, None) => {}
                (WriteKind::Upsert | WriteKind::Update, Some(cur)) => {
                    let mut r = (**cur).clone();
                    if let Some(e) = &op.embedding {
                        r.embedding = e.clone();
                    }
                    if let Some(d) = &op.document {
                        r.document = Some(d.clone());
                    }
                    if let Some(u) = &op.uri {
                        r.uri = Some(u.clone());
                    }
                    if let Some(changes) = &op.metadata {
                        let mut m = r.metadata.take().unwrap_or_default();
                        for (k, v) in changes {
                            match v {
                                Some(v) => m.insert(k.clone(), v.clone()),
                                None => m.remove(k),
                            };
                        }
                        r.metadata = (!m.is_empty()).then_some(m);
                    }
                    slot.current = Some(Arc::new(r));
                }
            }
        }
        Ok(())
    }
}

/// Ids are keys in the store's id map; longer ones are refused.
pub const MAX_ID_BYTES: usize = 4096;

/// Checks the parts of a write that do not depend on stored state: ids present and
/// unique within the request, embeddings finite and of one dimension (returned),
/// metadata without nulls except in updates, the fields a kind needs.
pub fn validate_write(entry: &WriteEntry) -> Result<Option<usize>, InvalidArgument> {
    let mut seen = std::collections::HashSet::with_capacity(entry.records.len());
    let mut dim = None;
    for r in &entry.records {
        if r.id.is_empty() {
            return invalid("ids must not be empty strings");
        }
        if r.id.len() > MAX_ID_BYTES {
            return Err(InvalidArgument(format!(
                "id of {} bytes is longer than the {MAX_ID_BYTES} allowed (starts {:?})",
                r.id.len(),
                &r.id[..r.id.floor_char_boundary(32)]
            )));
        }
        if !seen.insert(r.id.as_str()) {
            return Err(InvalidArgument(format!(
                "duplicate id {:?} in one request; ids in a request must be unique",
                r.id
            )));
        }
        if let Some(e) = &r.embedding {
            if e.is_empty() {
                return invalid(format!("embedding of {:?} is empty", r.id));
            }
            if let Some(bad) = e.iter().position(|x| !x.is_finite()) {
                return invalid(format!(
                    "embedding of {:?} has a non-finite value at position {bad}",
                    r.id
                ));
            }
            match dim {
                None => dim = Some(e.len()),
                Some(d) if d != e.len() => {
                    return invalid(format!(
                        "embeddings in one request differ in dimension ({d} and {})",
                        e.len()
                    ))
                }
                _ => {}
            }
        }
        match entry.kind {
            WriteKind::Add | WriteKind::Upsert if r.embedding.is_none() => {
                return invalid(format!(
                    "record {:?} has no embedding; add and upsert need one per record",
                    r.id
                ))
            }
            WriteKind::Delete
                if r.embedding.is_some()
                    || r.document.is_some()
                    || r.metadata.is_some()
                    || r.uri.is_some() =>
            {
                return invalid("a delete carries only ids")
            }
            _ => {}
        }
        if let Some(m) = &r.metadata {
            if entry.kind != WriteKind::Update && m.values().any(Option::is_none) {
                return invalid(format!(
                    "metadata of {:?}: null values are only allowed in updates",
                    r.id
                ));
            }
        }
    }
    Ok(dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scalar;

    fn op(id: &str, e: Option<&[f32]>, meta: &[(&str, Option<i64>)]) -> RecordOp {
        RecordOp {
            id: id.into(),
            embedding: e.map(Arc::from),
            document: Some(format!("doc {id}")),
            uri: None,
            metadata: (!meta.is_empty()).then(|| {
                meta.iter()
                    .map(|(k, v)| (k.to_string(), v.map(|i| MetaValue::Scalar(Scalar::Int(i)))))
                    .collect()
            }),
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = WriteEntry {
            kind: WriteKind::Update,
            records: vec![
                op("a", Some(&[1.0, -2.5]), &[("x", Some(3)), ("y", None)]),
                RecordOp {
                    id: "b".into(),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(WriteEntry::decode(&e.encode()).unwrap(), e);
        let bytes = e.encode();
        assert!(WriteEntry::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn resolver_follows_chroma_semantics() {
        let mut r: Resolver<u32> = Resolver::default();
        let none = |_: &str| Ok::<_, ()>(None);
        let add = WriteEntry {
            kind: WriteKind::Add,
            records: vec![op("a", Some(&[1.0]), &[("x", Some(1))])],
        };
        r.apply(&add, none).unwrap();
        // Adding again changes nothing.
        let add2 = WriteEntry {
            kind: WriteKind::Add,
            records: vec![op("a", Some(&[9.0]), &[])],
        };
        r.apply(&add2, none).unwrap();
        assert_eq!(&*r.touched["a"].current.as_ref().unwrap().embedding, &[1.0]);
        // Update merges metadata and removes null keys; unknown ids are ignored.
        let upd = WriteEntry {
            kind: WriteKind::Update,
            records: vec![
                op("a", None, &[("x", None), ("y", Some(2))]),
                op("zz", None, &[("y", Some(2))]),
            ],
        };
        r.apply(&upd, none).unwrap();
        let a = r.touched["a"].current.clone().unwrap();
        assert_eq!(a.metadata.as_ref().unwrap().len(), 1);
        assert!(r.touched["zz"].current.is_none());
        // Delete then add again makes a new record.
        let del = WriteEntry {
            kind: WriteKind::Delete,
            records: vec![RecordOp {
                id: "a".into(),
                ..Default::default()
            }],
        };
        r.apply(&del, none).unwrap();
        r.apply(&add2, none).unwrap();
        assert_eq!(r.touched["a"].created, Some(2));
    }

    #[test]
    fn validation_explains_the_problem() {
        let bad = |kind, records| validate_write(&WriteEntry { kind, records }).unwrap_err().0;
        assert!(bad(WriteKind::Add, vec![op("a", None, &[])]).contains("no embedding"));
        assert!(bad(
            WriteKind::Add,
            vec![op("a", Some(&[1.0]), &[]), op("a", Some(&[1.0]), &[])]
        )
        .contains("duplicate"));
        assert!(bad(WriteKind::Add, vec![op("a", Some(&[f32::NAN]), &[])]).contains("non-finite"));
        assert!(bad(
            WriteKind::Add,
            vec![op(&"x".repeat(5000), Some(&[1.0]), &[])]
        )
        .contains("longer"));
        assert!(validate_write(&WriteEntry {
            kind: WriteKind::Add,
            records: vec![op(&"x".repeat(4096), Some(&[1.0]), &[])]
        })
        .is_ok());
        assert!(bad(WriteKind::Add, vec![op("a", Some(&[1.0]), &[("k", None)])]).contains("null"));
        assert_eq!(
            validate_write(&WriteEntry {
                kind: WriteKind::Update,
                records: vec![op("a", None, &[("k", None)])]
            }),
            Ok(None)
        );
    }

    /// Found by the `log_payload` fuzz target: a payload whose embedding holds a
    /// NaN decoded fine (and then did not equal itself re-encoded). Writes are
    /// validated before they are logged, so it is damage.
    #[test]
    fn fuzz_regression_a_logged_embedding_that_is_not_finite_is_damage() {
        let payload: &[u8] = &[
            0x01, 0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x61, 0x0b, 0x02, 0x00,
            0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03, 0x03, 0x00, 0x00, 0x00,
            0x64, 0x6f, 0x63, 0x11, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x6b, 0x22, 0x3a, 0x30, 0x2c,
            0x22, 0x6c, 0x22, 0x3a, 0x5b, 0x22, 0x78, 0x22, 0x5d, 0x7d,
        ];
        let err = WriteEntry::decode(payload).unwrap_err();
        assert!(err.contains("not finite"), "{err}");
    }

    /// Found by the `request_write` fuzz target: a float metadata value came back
    /// from the log one ulp off (7.777777777777776e120 read as
    /// 7.777777777777777e120), because JSON was parsed without exact float
    /// round-tripping. Every value must come back exactly as written.
    #[test]
    fn fuzz_regression_metadata_floats_survive_the_log_exactly() {
        let m = crate::metadata::metadata_from_json(
            &serde_json::json!({"x": 7.777777777777776e120, "y": [1, 7.777777777777776e120]}),
            true,
        )
        .unwrap();
        let e = WriteEntry {
            kind: WriteKind::Update,
            records: vec![RecordOp {
                id: "a".into(),
                metadata: Some(m),
                ..Default::default()
            }],
        };
        assert_eq!(WriteEntry::decode(&e.encode()).unwrap(), e);
        let parsed: serde_json::Value = serde_json::from_str("7.777777777777776e120").unwrap();
        assert_eq!(parsed.as_f64(), Some(7.777777777777776e120));
    }
}
