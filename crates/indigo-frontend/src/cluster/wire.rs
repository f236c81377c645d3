//! The internal protocol between a cluster's processes (version 1): HTTP with a
//! `x-indigo-protocol: 1` header. A write is the log's own encoding of a write
//! request (`WriteEntry`, versioned by its first byte); a read is a JSON *plan*
//! naming the collection, the index version to read, the log offset the answer
//! must cover, and the operation; records come back as JSON with embeddings as
//! base64 of little-endian f32 (exact, and a third of the size of decimal text).

use std::sync::Arc;

use base64::Engine;
use indigo::{CollectionInfo, DocFilter, Include, Records, Selection, Where};
use indigo_types::metadata::metadata_from_json;
use serde_json::{json, Map, Value};

pub const PROTOCOL: &str = "1";
pub const HEADER: &str = "x-indigo-protocol";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub fn vector_to_wire(v: &[f32]) -> Value {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Value::String(b64().encode(bytes))
}

pub fn vector_from_wire(v: &Value) -> Result<Vec<f32>, String> {
    let s = v.as_str().ok_or("a vector must be base64")?;
    let bytes = b64().decode(s).map_err(|e| e.to_string())?;
    if bytes.len() % 4 != 0 {
        return Err("a vector's bytes are not whole f32s".into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

pub fn include_to_wire(i: Include) -> Value {
    json!([i.embeddings, i.documents, i.metadatas, i.uris, i.distances])
}

pub fn include_from_wire(v: &Value) -> Result<Include, String> {
    let a = v.as_array().filter(|a| a.len() == 5).ok_or("bad include")?;
    let b = |i: usize| a[i].as_bool().ok_or("bad include");
    Ok(Include {
        embeddings: b(0)?,
        documents: b(1)?,
        metadatas: b(2)?,
        uris: b(3)?,
        distances: b(4)?,
    })
}

pub fn selection_to_wire(s: &Selection) -> Value {
    json!({
        "ids": s.ids,
        "where": s.where_.as_ref().map(Where::to_json),
        "where_document": s.where_document.as_ref().map(DocFilter::to_json),
    })
}

pub fn selection_from_wire(v: &Value) -> Result<Selection, String> {
    let ids = match v.get("ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|x| x.as_str().map(str::to_string).ok_or("ids must be strings"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err("bad ids".into()),
    };
    let w = |k: &str| v.get(k).filter(|x| !x.is_null());
    Ok(Selection {
        ids,
        where_: w("where").map(Where::parse).transpose().map_err(|e| e.0)?,
        where_document: w("where_document")
            .map(DocFilter::parse)
            .transpose()
            .map_err(|e| e.0)?,
    })
}

pub fn records_to_wire(r: &Records) -> Value {
    let mut m = Map::new();
    m.insert("ids".into(), json!(r.ids));
    if let Some(e) = &r.embeddings {
        m.insert(
            "embeddings".into(),
            Value::Array(e.iter().map(|v| vector_to_wire(v)).collect()),
        );
    }
    if let Some(d) = &r.documents {
        m.insert("documents".into(), json!(d));
    }
    if let Some(u) = &r.uris {
        m.insert("uris".into(), json!(u));
    }
    if let Some(ms) = &r.metadatas {
        m.insert(
            "metadatas".into(),
            Value::Array(
                ms.iter()
                    .map(|m| {
                        m.as_ref()
                            .map_or(Value::Null, indigo_types::record::metadata_to_json)
                    })
                    .collect(),
            ),
        );
    }
    if let Some(d) = &r.distances {
        m.insert(
            "distances".into(),
            Value::Array(d.iter().map(|x| vector_to_wire(&[*x])).collect()),
        );
    }
    Value::Object(m)
}

pub fn records_from_wire(v: &Value) -> Result<Records, String> {
    let strings = |k: &str| -> Result<Option<Vec<Option<String>>>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(
                a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
            )),
            _ => Err(format!("bad {k}")),
        }
    };
    let ids = strings("ids")?
        .ok_or("no ids")?
        .into_iter()
        .map(|x| x.ok_or("ids must be strings"))
        .collect::<Result<Vec<_>, _>>()?;
    let embeddings = match v.get("embeddings") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|x| vector_from_wire(x).map(Arc::from))
                .collect::<Result<Vec<Arc<[f32]>>, _>>()?,
        ),
        _ => return Err("bad embeddings".into()),
    };
    let metadatas = match v.get("metadatas") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|m| match m {
                    Value::Null => Ok(None),
                    m => metadata_from_json(m, false)
                        .map(|mm| Some(mm.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()))
                        .map_err(|e| e.0),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err("bad metadatas".into()),
    };
    let distances = match v.get("distances") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|x| vector_from_wire(x).map(|v| v.first().copied().unwrap_or(f32::NAN)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err("bad distances".into()),
    };
    Ok(Records {
        ids,
        embeddings,
        documents: strings("documents")?,
        uris: strings("uris")?,
        metadatas,
        distances,
    })
}

/// What a read runs against: the collection as the frontend knows it, the index
/// version to read (none yet: the log alone), and the log offset the answer must
/// cover (every write acknowledged before the read began is at or below it).
#[derive(Debug, Clone)]
pub struct Target {
    pub collection: CollectionInfo,
    pub version: Option<(i64, String)>,
    pub min_offset: u64,
}

pub fn target_to_wire(t: &Target) -> Value {
    let c = &t.collection;
    json!({
        "protocol": 1,
        "collection": {
            "id": c.id, "name": c.name, "tenant": c.tenant, "database": c.database,
            "configuration": c.configuration, "dimension": c.dimension,
        },
        "version": t.version.as_ref().map(|(n, k)| json!({"number": n, "key": k})),
        "min_offset": t.min_offset,
    })
}

pub fn target_from_wire(v: &Value) -> Result<Target, String> {
    if v["protocol"].as_u64() != Some(1) {
        return Err(format!("unsupported protocol {}", v["protocol"]));
    }
    let c = &v["collection"];
    let s = |k: &str| c[k].as_str().map(str::to_string).ok_or(format!("no {k}"));
    Ok(Target {
        collection: CollectionInfo {
            id: s("id")?,
            name: s("name")?,
            tenant: s("tenant")?,
            database: s("database")?,
            metadata: None,
            configuration: c["configuration"].clone(),
            dimension: c["dimension"].as_u64().map(|d| d as u32),
            version: 0,
        },
        version: match &v["version"] {
            Value::Null => None,
            x => Some((
                x["number"].as_i64().ok_or("no version number")?,
                x["key"].as_str().ok_or("no version key")?.to_string(),
            )),
        },
        min_offset: v["min_offset"].as_u64().ok_or("no min_offset")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_selections_survive_the_wire() {
        let r = Records {
            ids: vec!["a".into(), "b".into()],
            embeddings: Some(vec![
                Arc::from(vec![0.1f32, -2.5]),
                Arc::from(vec![1e-30f32, 3.0]),
            ]),
            documents: Some(vec![Some("d".into()), None]),
            uris: None,
            metadatas: Some(vec![
                Some(
                    metadata_from_json(&json!({"k": 1, "f": 0.1, "l": ["x"]}), false)
                        .unwrap()
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap()))
                        .collect(),
                ),
                None,
            ]),
            distances: Some(vec![0.25, 1.0 / 3.0]),
        };
        assert_eq!(records_from_wire(&records_to_wire(&r)).unwrap(), r);
        let s = Selection {
            ids: Some(vec!["x".into()]),
            where_: Some(Where::parse(&json!({"k": {"$gte": 1}})).unwrap()),
            where_document: Some(DocFilter::parse(&json!({"$contains": "d"})).unwrap()),
        };
        let back = selection_from_wire(&selection_to_wire(&s)).unwrap();
        assert_eq!(selection_to_wire(&back), selection_to_wire(&s));
    }
}
