//! The rules every request is held to, wherever it runs: the embedded core, the
//! single-node server, or a cluster's frontend (which checks before it routes, so
//! nothing unchecked reaches a log or a query node).

use serde_json::Value;

use crate::{Error, Limits, MetaValue, QueryRequest, Records, Result, Selection};
use indigo_types::record::validate_write;
use indigo_types::{RecordOp, WriteEntry, WriteKind};

/// Chroma's rule: 3–512 characters of `[a-zA-Z0-9._-]`, starting and ending with
/// a letter or digit.
pub fn check_collection_name(name: &str) -> Result<()> {
    check_name(name)
}

/// A database's name follows the collection rule (Chroma's).
pub fn check_database_name(name: &str) -> Result<()> {
    check_name(name)
}

/// A tenant's name: at least 3 characters (Chroma's only rule for tenants).
pub fn check_tenant_name(name: &str) -> Result<()> {
    if name.chars().count() < 3 {
        return Err(Error::InvalidArgument(format!(
            "Validation error: a tenant name needs at least 3 characters. Got: {name}"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=512).contains(&name.len())
        && name.chars().all(ok_char)
        && ends(name.chars().next())
        && ends(name.chars().last())
    {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "Expected a name containing 3-512 characters from [a-zA-Z0-9._-], starting and \
             ending with a character in [a-zA-Z0-9]. Got: {name}"
        )))
    }
}

/// The keys a schema may name that start with `#` (Chroma's reserved keys).
const SYSTEM_KEYS: [&str; 2] = ["#document", "#embedding"];

/// A collection's schema as sent on create, checked as Chroma's server checks it
/// (`validate_schema`): user keys may not start with `#`, and a sparse vector
/// index may take its source only from `#document` among the reserved keys. Its
/// shape is checked too: objects of value types of objects of indexes, whose
/// `enabled` is a bool; at most `MAX_SCHEMA_KEYS` keys.
pub fn check_collection_schema(schema: &Value) -> Result<()> {
    let bad = |what: String| {
        Err(Error::InvalidArgument(format!(
            "Invalid schema input: {what}"
        )))
    };
    let top = match schema {
        Value::Null => return Ok(()),
        Value::Object(top) => top,
        _ => return bad(format!("a schema must be an object, got {schema}")),
    };
    let shape = |at: &str, types: &Value| -> Result<()> {
        let Value::Object(types) = types else {
            return bad(format!(
                "{at} must be an object of value types, got {types}"
            ));
        };
        for (ty, indexes) in types {
            let Value::Object(indexes) = indexes else {
                if indexes.is_null() {
                    continue;
                }
                return bad(format!(
                    "{at}.{ty} must be an object of indexes, got {indexes}"
                ));
            };
            for (name, ix) in indexes {
                let enabled = &ix["enabled"];
                if !ix.is_null() && !(ix.is_object() && (enabled.is_boolean() || enabled.is_null()))
                {
                    return bad(format!(
                        "{at}.{ty}.{name} must be an index with a bool `enabled`"
                    ));
                }
            }
        }
        Ok(())
    };
    if let Some(d) = top.get("defaults").filter(|d| !d.is_null()) {
        shape("defaults", d)?;
        // A sparse index belongs to one key: on by default, every key holding
        // a sparse vector would join it as written, unindexed before that.
        if d["sparse_vector"]["sparse_vector_index"]["enabled"] == serde_json::Value::Bool(true) {
            return bad(
                "Sparse vector index requires a specific key. Use create_index(Some(\"key_name\"), \
                 config) instead of create_index(None, config)"
                    .into(),
            );
        }
    }
    let keys = match top.get("keys") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(keys)) => keys,
        Some(k) => return bad(format!("keys must be an object, got {k}")),
    };
    if keys.len() > indigo_sysdb::MAX_SCHEMA_KEYS + SYSTEM_KEYS.len() {
        return bad(format!(
            "a schema may list at most {} keys, got {}",
            indigo_sysdb::MAX_SCHEMA_KEYS,
            keys.len()
        ));
    }
    for (key, types) in keys {
        shape(&format!("keys.{key}"), types)?;
        if key.starts_with('#') && !SYSTEM_KEYS.contains(&key.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "key cannot begin with '#'. Keys starting with '#' are reserved for system use: {key}"
            )));
        }
        let source = &types["sparse_vector"]["sparse_vector_index"]["config"]["source_key"];
        if let Some(s) = source.as_str() {
            if s.starts_with('#') && s != "#document" {
                return Err(Error::InvalidArgument(format!(
                    "source_key cannot begin with '#'. The only valid key starting with '#' is \
                     Key.DOCUMENT or '#document'. (key {key}: source_key {s})"
                )));
            }
        }
    }
    Ok(())
}

/// A collection's metadata: an object of Chroma's value types (or null).
pub fn check_collection_metadata(m: &Value) -> Result<()> {
    match m {
        Value::Null => Ok(()),
        Value::Object(map) if map.is_empty() => Err(Error::InvalidArgument(
            "Validation error: metadata: Metadata cannot be empty (omit it, or send null)".into(),
        )),
        Value::Object(map) => {
            for (k, v) in map {
                MetaValue::from_json(k, v)?;
            }
            Ok(())
        }
        _ => Err(Error::InvalidArgument(format!(
            "metadata must be an object, got {m}"
        ))),
    }
}

/// Checks a write and makes it a log entry; also returns the dimension its
/// embeddings have (the caller fixes it on the collection).
pub fn prepare_write(
    kind: WriteKind,
    records: Vec<RecordOp>,
    limits: &Limits,
) -> Result<(WriteEntry, Option<u32>)> {
    let entry = WriteEntry { kind, records };
    let dim = validate_write(&entry)?;
    if let Some(dim) = dim {
        let max = limits.max_dimension;
        if dim > max {
            return Err(Error::InvalidArgument(format!(
                "embeddings of dimension {dim} are larger than the {max} this server allows"
            )));
        }
    }
    Ok((entry, dim.map(|d| d as u32)))
}

/// Ids in a read or delete, within the limits.
pub fn check_ids(sel: &Selection, limits: &Limits) -> Result<()> {
    match &sel.ids {
        Some(ids) if ids.len() > limits.max_ids => Err(Error::Quota(format!(
            "{} ids in one request; this server takes at most {}",
            ids.len(),
            limits.max_ids
        ))),
        _ => Ok(()),
    }
}

/// A delete names what it deletes.
pub fn check_delete(sel: &Selection, limit: Option<u32>, limits: &Limits) -> Result<()> {
    check_ids(sel, limits)?;
    let filtered = sel.where_.is_some() || sel.where_document.is_some();
    if sel.ids.is_none() && !filtered {
        return Err(Error::InvalidArgument(
            "delete needs ids, a where or a where_document filter".into(),
        ));
    }
    if limit.is_some() && !filtered {
        return Err(Error::InvalidArgument(
            "limit can only be specified when a where or where_document clause is provided".into(),
        ));
    }
    Ok(())
}

/// A query restricted to an id that names no record (Chroma's words).
pub fn missing_query_id(id: &str) -> Error {
    Error::InvalidArgument(format!(
        "Error finding id: {id:?} names no record of this collection (a query's ids \
         must all exist)"
    ))
}

/// Keeps the first `limit` of the ids a filtered delete matched.
pub fn truncate_to_limit(ids: &mut Vec<String>, limit: Option<u32>) {
    if let Some(l) = limit {
        ids.truncate(l as usize);
    }
}

/// What a delete logs: with ids and no filters, the ids themselves (so a
/// concurrent add of one is ordered by the log rather than missed); otherwise the
/// records that matched (`existing`).
pub fn delete_ops(sel: &Selection, existing: &[String]) -> Vec<RecordOp> {
    let filtered = sel.where_.is_some() || sel.where_document.is_some();
    let ids = match (&sel.ids, filtered) {
        (Some(ids), false) => indigo_executor::dedup_ids(ids),
        _ => existing.to_vec(),
    };
    ids.into_iter()
        .map(|id| RecordOp {
            id,
            ..Default::default()
        })
        .collect()
}

/// Checks a query against the limits and the collection's dimension (0: not yet
/// fixed). `Some` answers it already: a collection without a dimension has no
/// records to find.
/// Checks a sparse query against the collection's schema (the key must have a
/// sparse vector index, as Chroma requires) and the limits; returns whether the
/// key's index applies BM25.
pub fn check_sparse_query(
    req: &crate::SparseQueryRequest,
    schema: &serde_json::Value,
    limits: &Limits,
) -> Result<bool> {
    check_ids(&req.selection, limits)?;
    if req.n_results > limits.max_n_results {
        return Err(Error::Quota(format!(
            "a limit of {} is more than the {} this server returns per query",
            req.n_results, limits.max_n_results
        )));
    }
    req.vector
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("$knn query: {e}")))?;
    if req.vector.values.iter().any(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(
            "$knn query: sparse vector values must be finite".into(),
        ));
    }
    crate::schema::sparse_keys(schema)
        .into_iter()
        .find(|k| k.key == req.key)
        .map(|k| k.bm25)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "Cannot filter using metadata key '{}' with type 'SparseVector' because \
                 indexing is disabled",
                req.key
            ))
        })
}

pub fn check_query(req: &QueryRequest, limits: &Limits, dim: u32) -> Result<Option<Vec<Records>>> {
    check_ids(&req.selection, limits)?;
    if req.n_results > limits.max_n_results {
        return Err(Error::Quota(format!(
            "n_results of {} is more than the {} this server returns per query",
            req.n_results, limits.max_n_results
        )));
    }
    if req.embeddings.len() > limits.max_query_embeddings {
        return Err(Error::Quota(format!(
            "{} query embeddings in one request; this server takes at most {}",
            req.embeddings.len(),
            limits.max_query_embeddings
        )));
    }
    for q in &req.embeddings {
        if q.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(
                "query embeddings must be finite numbers".into(),
            ));
        }
        if dim != 0 && q.len() as u32 != dim {
            return Err(Error::DimensionMismatch {
                expected: dim,
                got: q.len() as u32,
            });
        }
    }
    if dim == 0 {
        return Ok(Some(
            req.embeddings
                .iter()
                .map(|_| Records::empty(req.include))
                .collect(),
        ));
    }
    Ok(None)
}
