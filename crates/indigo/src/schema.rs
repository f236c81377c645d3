//! A collection's schema, in Chroma's JSON shape: for each value type
//! (`string`, `int`, `float`, `bool`, `float_list`, `sparse_vector`) which index
//! is on, as a default and per metadata key, with `#document` (full-text search)
//! and `#embedding` (the vector index) as reserved keys.
//!
//! Indigo keeps it as Chroma's server does: what a client sends is merged onto the
//! defaults field by field, reconciled with the collection's configuration, stored
//! with the configuration, and returned as stored. It decides what filters may
//! use (an index switched off refuses filters on it, with Chroma's messages). The
//! vector index's `spann` parameters are accepted, checked and kept; Indigo's HNSW
//! index serves them (with its own HNSW parameters).

use serde_json::{json, Map, Value};

use crate::{Error, Result, Selection};
use indigo_types::filter::{FieldOp, Where};
use indigo_types::Scalar;

pub const EMBEDDING_KEY: &str = "#embedding";
pub const DOCUMENT_KEY: &str = "#document";

/// The vector index a collection gets when neither its configuration nor its
/// schema names one: Chroma's single node uses `hnsw`, its distributed mode
/// `spann`. Either way Indigo builds HNSW; this decides what is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorIndexKind {
    #[default]
    Hnsw,
    Spann,
}

impl VectorIndexKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hnsw" => Some(Self::Hnsw),
            "spann" => Some(Self::Spann),
            _ => None,
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Hnsw => "hnsw",
            Self::Spann => "spann",
        }
    }
}

/// Chroma's HNSW defaults (`num_threads`: the cores of this machine).
pub fn hnsw_defaults() -> Value {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "ef_construction": 100,
        "max_neighbors": 16,
        "ef_search": 100,
        "num_threads": threads,
        "batch_size": 100,
        "sync_threshold": 1000,
        "resize_factor": 1.2,
    })
}

/// Chroma's SPANN defaults.
pub fn spann_defaults() -> Value {
    json!({
        "search_nprobe": 64,
        "search_rng_factor": 1.0,
        "search_rng_epsilon": 10.0,
        "nreplica_count": 8,
        "write_rng_factor": 1.0,
        "write_rng_epsilon": 5.0,
        "split_threshold": 50,
        "num_samples_kmeans": 1000,
        "initial_lambda": 100.0,
        "reassign_neighbor_count": 64,
        "merge_threshold": 25,
        "num_centers_to_merge_to": 8,
        "write_nprobe": 32,
        "ef_construction": 200,
        "ef_search": 200,
        "max_neighbors": 64,
    })
}

/// (field, lowest, highest) of each SPANN parameter, as Chroma validates them.
const SPANN_RANGES: [(&str, f64, f64); 17] = [
    ("search_nprobe", 0.0, 128.0),
    ("search_rng_factor", 1.0, 1.0),
    ("search_rng_epsilon", 5.0, 10.0),
    ("nreplica_count", 0.0, 8.0),
    ("write_rng_factor", 1.0, 1.0),
    ("write_rng_epsilon", 5.0, 10.0),
    ("split_threshold", 50.0, 200.0),
    ("num_samples_kmeans", 0.0, 1000.0),
    ("initial_lambda", 100.0, 100.0),
    ("reassign_neighbor_count", 0.0, 64.0),
    ("merge_threshold", 25.0, 100.0),
    ("num_centers_to_merge_to", 0.0, 8.0),
    ("write_nprobe", 0.0, 64.0),
    ("ef_construction", 0.0, 200.0),
    ("ef_search", 0.0, 200.0),
    ("max_neighbors", 0.0, 64.0),
    ("center_drift_threshold", 0.1, 1.0),
];

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Checks a `spann` object's fields (names and ranges).
pub fn check_spann(sp: &Value) -> Result<()> {
    let Value::Object(m) = sp else {
        return Err(invalid(format!("spann must be an object, got {sp}")));
    };
    for (k, v) in m {
        if v.is_null() || k == "space" {
            continue;
        }
        if k == "quantize" {
            if v == "none" {
                continue;
            }
            return Err(invalid(
                "Invalid schema input: quantize field cannot be set in user schema",
            ));
        }
        let Some(&(_, lo, hi)) = SPANN_RANGES.iter().find(|r| r.0 == k) else {
            return Err(invalid(format!("'{k}' is not a valid field for spann")));
        };
        match v.as_f64() {
            Some(x) if x >= lo && x <= hi => {}
            _ => {
                return Err(invalid(format!(
                    "Invalid SPANN configuration: {k} must be between {lo} and {hi}, got {v}"
                )))
            }
        }
    }
    Ok(())
}

fn vector_config(kind: VectorIndexKind) -> Value {
    let mut c = json!({"space": "l2"});
    match kind {
        VectorIndexKind::Hnsw => c["hnsw"] = hnsw_defaults(),
        VectorIndexKind::Spann => c["spann"] = spann_defaults(),
    }
    c
}

fn index(enabled: bool) -> Value {
    json!({"enabled": enabled, "config": {}})
}

/// Chroma's `Schema::new_default`.
pub fn default_schema(kind: VectorIndexKind) -> Value {
    let mut embedding = vector_config(kind);
    embedding["source_key"] = json!(DOCUMENT_KEY);
    json!({
        "defaults": {
            "string": {"fts_index": index(false), "string_inverted_index": index(true)},
            "float_list": {"vector_index": {"enabled": false, "config": vector_config(kind)}},
            "sparse_vector": {"sparse_vector_index": {"enabled": false, "config": {
                "embedding_function": {"type": "unknown"}, "bm25": false}}},
            "int": {"int_inverted_index": index(true)},
            "float": {"float_inverted_index": index(true)},
            "bool": {"bool_inverted_index": index(true)},
        },
        "keys": {
            DOCUMENT_KEY: {"string": {"fts_index": index(true), "string_inverted_index": index(false)}},
            EMBEDDING_KEY: {"float_list": {"vector_index": {"enabled": true, "config": embedding}}},
        },
    })
}

/// `user` over `default`, one field deep: a field `user` has (and is not null)
/// wins.
pub(crate) fn fields_over(default: &Value, user: &Value) -> Value {
    let mut out = default.as_object().cloned().unwrap_or_default();
    if let Value::Object(u) = user {
        for (k, v) in u {
            if !v.is_null() {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn merge_vector_index(default: &Value, user: &Value, kind: VectorIndexKind) -> Value {
    let (d, u) = (&default["config"], &user["config"]);
    let mut config = Map::new();
    for k in ["space", "embedding_function", "source_key"] {
        let v = if u[k].is_null() { &d[k] } else { &u[k] };
        if !v.is_null() {
            config.insert(k.into(), v.clone());
        }
    }
    let f = kind.field();
    let params = match (&d[f], &u[f]) {
        (Value::Null, Value::Null) => Value::Null,
        (d, Value::Null) => d.clone(),
        (Value::Null, u) => u.clone(),
        (d, u) => fields_over(d, u),
    };
    if !params.is_null() {
        config.insert(f.into(), params);
    }
    json!({"enabled": user["enabled"].as_bool().unwrap_or(false), "config": config})
}

fn merge_index(default: &Value, user: &Value, kind: VectorIndexKind, name: &str) -> Value {
    match name {
        "vector_index" => merge_vector_index(default, user, kind),
        "sparse_vector_index" => json!({
            "enabled": user["enabled"].as_bool().unwrap_or(false),
            "config": fields_over(&default["config"], &user["config"]),
        }),
        // Inverted and full-text indexes have no parameters: the user's stands.
        _ => user.clone(),
    }
}

/// Chroma's `merge_value_types`: per value type, per index, the user's over the
/// default's (vector and sparse configurations field by field).
fn merge_value_types(default: &Value, user: &Value, kind: VectorIndexKind) -> Value {
    let mut out = default.as_object().cloned().unwrap_or_default();
    if let Value::Object(u) = user {
        for (ty, uv) in u {
            if uv.is_null() {
                continue;
            }
            let merged = match (default.get(ty), uv) {
                (Some(Value::Object(dv)), Value::Object(um)) => {
                    let mut m = dv.clone();
                    for (name, ui) in um {
                        if ui.is_null() {
                            continue;
                        }
                        let v = match dv.get(name) {
                            Some(di) if !di.is_null() => merge_index(di, ui, kind, name),
                            _ => ui.clone(),
                        };
                        m.insert(name.clone(), v);
                    }
                    Value::Object(m)
                }
                _ => uv.clone(),
            };
            out.insert(ty.clone(), merged);
        }
    }
    Value::Object(out)
}

/// Chroma's `reconcile_with_defaults`: the user's schema merged onto the default
/// one (defaults, then each key; keys the defaults lack are taken as sent).
pub fn merge_with_defaults(user: Option<&Value>, kind: VectorIndexKind) -> Result<Value> {
    let mut out = default_schema(kind);
    let Some(user) = user.filter(|u| !u.is_null()) else {
        return Ok(out);
    };
    if !user.is_object() {
        return Err(invalid(format!("schema must be an object, got {user}")));
    }
    out["defaults"] = merge_value_types(&out["defaults"], &user["defaults"], kind);
    if let Some(keys) = user.get("keys").and_then(Value::as_object) {
        for (key, uv) in keys {
            let merged = match out["keys"].get(key) {
                Some(dv) => merge_value_types(dv, uv, kind),
                None => uv.clone(),
            };
            out["keys"][key] = merged;
        }
    }
    if let Some(c) = user.get("cmek").filter(|c| !c.is_null()) {
        out["cmek"] = c.clone();
    }
    for vi in [
        &out["defaults"]["float_list"]["vector_index"]["config"],
        &out["keys"][EMBEDDING_KEY]["float_list"]["vector_index"]["config"],
    ] {
        if !vi["spann"].is_null() {
            check_spann(&vi["spann"])?;
        }
    }
    Ok(out)
}

/// Whether an embedding function description is Chroma's default one: absent,
/// `unknown`, or the known `default` (`legacy` is not).
pub fn is_default_ef(ef: Option<&Value>) -> bool {
    match ef {
        None | Some(Value::Null) => true,
        Some(v) => match v["type"].as_str() {
            Some("unknown") => true,
            Some("known") => v["name"] == "default",
            _ => false,
        },
    }
}

fn enabled(v: &Value) -> Option<bool> {
    v["enabled"].as_bool()
}

/// Chroma's `Schema::is_default`: the defaults' indexes as they come, no keys
/// but the reserved ones, those as they come, and no encryption key.
pub fn is_default(schema: &Value) -> bool {
    let d = &schema["defaults"];
    let off = |v: &Value, want: bool| enabled(v).is_some_and(|e| e != want);
    if off(&d["string"]["string_inverted_index"], true)
        || off(&d["string"]["fts_index"], false)
        || off(&d["float"]["float_inverted_index"], true)
        || off(&d["int"]["int_inverted_index"], true)
        || off(&d["bool"]["bool_inverted_index"], true)
        || off(&d["sparse_vector"]["sparse_vector_index"], false)
        || !is_default_vector(&d["float_list"]["vector_index"], false)
    {
        return false;
    }
    if let Some(keys) = schema["keys"].as_object() {
        if keys.keys().any(|k| k != EMBEDDING_KEY && k != DOCUMENT_KEY) {
            return false;
        }
    }
    let doc = &schema["keys"][DOCUMENT_KEY]["string"];
    if off(&doc["fts_index"], true) || off(&doc["string_inverted_index"], false) {
        return false;
    }
    let emb = &schema["keys"][EMBEDDING_KEY]["float_list"]["vector_index"];
    if !is_default_vector(emb, true) {
        return false;
    }
    if let Some(s) = emb["config"]["source_key"].as_str() {
        if s != DOCUMENT_KEY {
            return false;
        }
    }
    schema["cmek"].is_null()
}

fn is_default_vector(vi: &Value, want_enabled: bool) -> bool {
    if vi.is_null() {
        return true;
    }
    if enabled(vi).is_some_and(|e| e != want_enabled) {
        return false;
    }
    let c = &vi["config"];
    if c["space"].as_str().is_some_and(|s| s != "l2") || !is_default_ef(c.get("embedding_function"))
    {
        return false;
    }
    params_default(&c["hnsw"], &hnsw_defaults(), true)
        && params_default(&c["spann"], &spann_defaults(), false)
}

/// Whether every parameter set is its default (`num_threads` is this machine's,
/// so any value counts as default for it).
pub(crate) fn params_default(p: &Value, defaults: &Value, hnsw: bool) -> bool {
    let Value::Object(m) = p else { return true };
    m.iter().all(|(k, v)| {
        v.is_null()
            || (hnsw && k == "num_threads")
            || match (v.as_f64(), defaults[k].as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => false,
            }
    })
}

/// The schema a configuration describes (Chroma's `Schema::try_from(config)`):
/// the default one with the configuration's vector index, space and embedding
/// function on both the `float_list` default and `#embedding`.
pub fn from_configuration(
    kind: VectorIndexKind,
    space: &str,
    params: &Value,
    ef: Option<&Value>,
) -> Value {
    let mut s = default_schema(kind);
    let mut config = json!({"space": space});
    config[kind.field()] = params.clone();
    if let Some(ef) = ef.filter(|e| !e.is_null()) {
        config["embedding_function"] = ef.clone();
    }
    s["defaults"]["float_list"]["vector_index"]["config"] = config.clone();
    config["source_key"] = json!(DOCUMENT_KEY);
    s["keys"][EMBEDDING_KEY]["float_list"]["vector_index"]["config"] = config;
    s
}

/// The vector index configuration of `#embedding` (where the collection's
/// space, embedding function and index parameters are read from).
pub fn embedding_index(schema: &Value) -> &Value {
    &schema["keys"][EMBEDDING_KEY]["float_list"]["vector_index"]["config"]
}

/// Sets `field` of the vector index parameters (`hnsw` or `spann`) in both
/// places a schema keeps them.
pub fn set_vector_param(schema: &mut Value, kind: &str, field: &str, v: Value) {
    for at in [
        "/defaults/float_list/vector_index/config",
        "/keys/#embedding/float_list/vector_index/config",
    ] {
        if let Some(Value::Object(c)) = schema.pointer_mut(at) {
            if let Some(Value::Object(p)) = c.get_mut(kind) {
                p.insert(field.into(), v.clone());
            }
        }
    }
}

/// Sets the embedding function in both places a schema keeps it.
pub fn set_embedding_function(schema: &mut Value, ef: &Value) {
    for at in [
        "/defaults/float_list/vector_index/config",
        "/keys/#embedding/float_list/vector_index/config",
    ] {
        if let Some(Value::Object(c)) = schema.pointer_mut(at) {
            c.insert("embedding_function".into(), ef.clone());
        }
    }
}

/// The keys whose sparse vectors are indexed, and whether each applies BM25.
pub fn sparse_keys(schema: &Value) -> Vec<indigo_segment::SparseKey> {
    let Some(keys) = schema["keys"].as_object() else {
        return Vec::new();
    };
    keys.iter()
        .filter(|(k, _)| !k.starts_with('#'))
        .filter_map(|(k, types)| {
            let ix = &types["sparse_vector"]["sparse_vector_index"];
            (enabled(ix) == Some(true)).then(|| indigo_segment::SparseKey {
                key: k.clone(),
                bm25: ix["config"]["bm25"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// Full-text search on documents: `#document`'s setting, else the default's.
pub fn fts_enabled(schema: &Value) -> bool {
    enabled(&schema["keys"][DOCUMENT_KEY]["string"]["fts_index"])
        .or_else(|| enabled(&schema["defaults"]["string"]["fts_index"]))
        .unwrap_or(true)
}

/// Whether the inverted index of `key` for values of type `ty` (`string`, `int`,
/// `float`, `bool`) is on: the key's own setting, else the default's.
pub fn inverted_enabled(schema: &Value, key: &str, ty: &str) -> bool {
    let name = format!("{ty}_inverted_index");
    enabled(&schema["keys"][key][ty][&name])
        .or_else(|| enabled(&schema["defaults"][ty][&name]))
        .unwrap_or(true)
}

/// The (key, value type) pairs of these records' metadata that `schema` does not
/// list yet (reserved `#` keys aside; a list's elements count by their type).
pub fn new_keys(schema: &Value, records: &[indigo_types::RecordOp]) -> Vec<(String, &'static str)> {
    use indigo_types::MetaValue;
    let Some(keys) = schema.get("keys").and_then(Value::as_object) else {
        return Vec::new();
    };
    let ty = |s: &Scalar| match s {
        Scalar::Str(_) => "string",
        Scalar::Int(_) => "int",
        Scalar::Float(_) => "float",
        Scalar::Bool(_) => "bool",
    };
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in records {
        for (k, v) in r.metadata.iter().flatten() {
            let t = match v {
                Some(MetaValue::Sparse(_)) => "sparse_vector",
                Some(MetaValue::Scalar(s)) => ty(s),
                Some(MetaValue::List(l)) => match l.first() {
                    Some(s) => ty(s),
                    None => continue,
                },
                None => continue,
            };
            let listed = keys.get(k);
            // A key listed as something other than an object cannot take types.
            let known = listed.is_some_and(|e| !e.is_object() || e.get(t).is_some());
            // A full schema lists no more keys (the catalogue would refuse them).
            let full = listed.is_none() && keys.len() + seen.len() >= indigo_sysdb::MAX_SCHEMA_KEYS;
            if !known && !full && !k.starts_with('#') && seen.insert((k.as_str(), t)) {
                out.push((k.clone(), t));
            }
        }
    }
    out
}

/// The postings a collection with this schema does not keep (its switched-off
/// inverted and full-text indexes).
pub fn unindexed(schema: &Value) -> indigo_segment::Unindexed {
    use indigo_segment::{Kinds, Unindexed};
    let kinds = |on: &dyn Fn(&str) -> bool| Kinds {
        strings: !on("string"),
        numbers: !on("int") && !on("float"),
        bools: !on("bool"),
    };
    let default_on = |ty: &str| {
        let name = format!("{ty}_inverted_index");
        enabled(&schema["defaults"][ty][&name]).unwrap_or(true)
    };
    let mut u = Unindexed {
        trigrams: !fts_enabled(schema),
        default: kinds(&default_on),
        ..Default::default()
    };
    if let Some(keys) = schema["keys"].as_object() {
        for key in keys.keys().filter(|k| !k.starts_with('#')) {
            u.fields
                .insert(key.clone(), kinds(&|ty| inverted_enabled(schema, key, ty)));
        }
    }
    u
}

/// Refuses a filter that needs an index the schema switched off, with Chroma's
/// messages (clients match on them).
pub fn check_filter(schema: &Value, sel: &Selection) -> Result<()> {
    if schema.is_null() {
        return Ok(());
    }
    if sel.where_document.is_some() && !fts_enabled(schema) {
        return Err(fts_disabled());
    }
    match &sel.where_ {
        Some(w) => check_where(schema, w),
        None => Ok(()),
    }
}

fn fts_disabled() -> Error {
    invalid("Cannot filter using full-text search because FTS indexing is disabled")
}

fn check_where(schema: &Value, w: &Where) -> Result<()> {
    match w {
        Where::And(ws) | Where::Or(ws) => ws.iter().try_for_each(|w| check_where(schema, w)),
        Where::Document(_) if !fts_enabled(schema) => Err(fts_disabled()),
        Where::Document(_) => Ok(()),
        Where::Field { key, op } => {
            let value = match op {
                FieldOp::Eq(v)
                | FieldOp::Ne(v)
                | FieldOp::Gt(v)
                | FieldOp::Gte(v)
                | FieldOp::Lt(v)
                | FieldOp::Lte(v)
                | FieldOp::Contains(v)
                | FieldOp::NotContains(v) => Some(v),
                FieldOp::In(vs) | FieldOp::Nin(vs) => vs.first(),
            };
            let Some(value) = value else { return Ok(()) };
            // Chroma names the type as its Rust enum prints it.
            let (ty, shown) = match value {
                Scalar::Str(_) => ("string", "Str"),
                Scalar::Int(_) => ("int", "Int"),
                Scalar::Float(_) => ("float", "Float"),
                Scalar::Bool(_) => ("bool", "Bool"),
            };
            if inverted_enabled(schema, key, ty) {
                Ok(())
            } else {
                Err(invalid(format!(
                    "Cannot filter using metadata key '{key}' with type '{shown}' because \
                     indexing is disabled"
                )))
            }
        }
    }
}

/// Chroma's `reconcile_schema_and_config`. `config` describes the collection's
/// configuration as sent (its index kind, space, parameters, embedding
/// function) and `config_default` says whether it is Chroma's default one.
pub fn reconcile(
    user: Option<&Value>,
    kind: VectorIndexKind,
    config: Option<(VectorIndexKind, &str, &Value, Option<&Value>)>,
    config_default: bool,
) -> Result<Value> {
    let user = user.filter(|u| !u.is_null());
    if let Some(u) = user {
        if !config_default && !is_default(&merge_with_defaults(Some(u), kind)?) {
            return Err(invalid(
                "Invalid schema input: Cannot set both collection config and schema \
                 simultaneously (a conflict: give the vector index settings in one of them)",
            ));
        }
    }
    let merged = merge_with_defaults(user, kind)?;
    let Some((ckind, space, params, ef)) = config else {
        return Ok(merged);
    };
    if !config_default {
        return Ok(from_configuration(ckind, space, params, ef));
    }
    if !is_default(&merged) {
        return Ok(merged);
    }
    let mut s = default_schema(kind);
    if let Some(ef) = ef.filter(|e| !e.is_null()) {
        set_embedding_function(&mut s, ef);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schema_is_default_and_keys_make_it_not() {
        for kind in [VectorIndexKind::Hnsw, VectorIndexKind::Spann] {
            let s = default_schema(kind);
            assert!(is_default(&s), "{s}");
            let mut t = s.clone();
            t["keys"]["tag"] = json!({"string": {"string_inverted_index": index(true)}});
            assert!(!is_default(&t));
            let mut t = s.clone();
            t["keys"][DOCUMENT_KEY]["string"]["fts_index"]["enabled"] = json!(false);
            assert!(!is_default(&t));
        }
    }

    #[test]
    fn user_fields_win_field_by_field() {
        let user = json!({
            "defaults": {"float_list": {"vector_index": {"enabled": false,
                "config": {"space": "cosine", "spann": {"search_nprobe": 16}}}}},
            "keys": {
                EMBEDDING_KEY: {"float_list": {"vector_index": {"enabled": true,
                    "config": {"space": "cosine", "spann": {"search_nprobe": 16, "write_nprobe": 20}}}}},
                "tag": {"string": {"string_inverted_index": {"enabled": false, "config": {}}}},
            },
        });
        let s = merge_with_defaults(Some(&user), VectorIndexKind::Spann).unwrap();
        let e = embedding_index(&s);
        assert_eq!(e["space"], "cosine");
        assert_eq!(e["source_key"], DOCUMENT_KEY);
        assert_eq!(e["spann"]["search_nprobe"], 16);
        assert_eq!(e["spann"]["write_nprobe"], 20);
        assert_eq!(e["spann"]["ef_search"], 200);
        assert!(e["hnsw"].is_null());
        // On a node that defaults to HNSW the spann settings give way to HNSW's.
        let s2 = merge_with_defaults(Some(&user), VectorIndexKind::Hnsw).unwrap();
        assert!(embedding_index(&s2)["spann"].is_null());
        assert_eq!(embedding_index(&s2)["hnsw"]["max_neighbors"], 16);
        assert!(!inverted_enabled(&s, "tag", "string"));
        assert!(inverted_enabled(&s, "tag", "int"));
        assert!(inverted_enabled(&s, "other", "string"));
        assert!(fts_enabled(&s));
        let bad = json!({"keys": {EMBEDDING_KEY: {"float_list": {"vector_index": {
            "enabled": true, "config": {"spann": {"search_nprobe": 500}}}}}}});
        assert!(merge_with_defaults(Some(&bad), VectorIndexKind::Spann).is_err());
    }

    #[test]
    fn schema_and_configuration_reconcile_as_chroma_does() {
        let default_ef = json!({"type": "known", "name": "default", "config": {}});
        let custom_ef = json!({"type": "known", "name": "mine", "config": {"dim": 4}});
        assert!(is_default_ef(Some(&default_ef)) && !is_default_ef(Some(&custom_ef)));
        assert!(!is_default_ef(Some(&json!({"type": "legacy"}))));
        let with_key = json!({"keys": {"tag": {"int": {"int_inverted_index": index(false)}}}});
        let h = hnsw_defaults();
        let k = VectorIndexKind::Hnsw;
        // Both non-default: refused.
        let e = reconcile(Some(&with_key), k, Some((k, "cosine", &h, None)), false).unwrap_err();
        assert!(e.to_string().contains("conflict"), "{e}");
        // Only the configuration: the schema follows it.
        let s = reconcile(None, k, Some((k, "cosine", &h, Some(&custom_ef))), false).unwrap();
        assert_eq!(embedding_index(&s)["space"], "cosine");
        assert_eq!(embedding_index(&s)["embedding_function"], custom_ef);
        assert_eq!(
            s["defaults"]["float_list"]["vector_index"]["config"]["space"],
            "cosine"
        );
        // Only the schema: it stands.
        let s = reconcile(
            Some(&with_key),
            k,
            Some((k, "l2", &h, Some(&default_ef))),
            true,
        )
        .unwrap();
        assert!(!inverted_enabled(&s, "tag", "int"));
        // Neither: the defaults, with the configuration's embedding function.
        let s = reconcile(None, k, Some((k, "l2", &h, Some(&default_ef))), true).unwrap();
        assert!(is_default(&s));
        assert_eq!(embedding_index(&s)["embedding_function"], default_ef);
    }

    #[test]
    fn filters_on_switched_off_indexes_are_refused() {
        use indigo_types::filter::DocFilter;
        let mut s = default_schema(VectorIndexKind::Hnsw);
        s["keys"]["tag"] = json!({"string": {"string_inverted_index": index(false)}});
        let sel = |w: Where| Selection {
            ids: None,
            where_: Some(w),
            where_document: None,
        };
        let tag = |v: Scalar| Where::Field {
            key: "tag".into(),
            op: FieldOp::Eq(v),
        };
        let e = check_filter(&s, &sel(tag(Scalar::Str("x".into())))).unwrap_err();
        assert!(
            e.to_string()
                .contains("Cannot filter using metadata key 'tag' with type 'Str'"),
            "{e}"
        );
        // Other types of the same key keep their (default) index.
        check_filter(&s, &sel(tag(Scalar::Int(1)))).unwrap();
        check_filter(&s, &sel(Where::And(vec![tag(Scalar::Int(1))]))).unwrap();
        assert!(check_filter(&s, &sel(Where::Or(vec![tag(Scalar::Str("x".into()))]))).is_err());
        let doc = Selection {
            ids: None,
            where_: None,
            where_document: Some(DocFilter::Contains("a".into())),
        };
        check_filter(&s, &doc).unwrap();
        s["keys"][DOCUMENT_KEY]["string"]["fts_index"]["enabled"] = json!(false);
        let e = check_filter(&s, &doc).unwrap_err();
        assert!(e.to_string().contains("FTS indexing is disabled"), "{e}");
    }
}
