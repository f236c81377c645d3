//! Chroma's newer search API (`POST …/search`): each search has a filter (a `where`
//! clause, `#document` conditions included), an optional rank expression over
//! KNN results (`$knn` on `#embedding` with a dense query, or on a key with a
//! sparse vector index with a sparse one), `$val`, `$sum`, `$sub`, `$mul`, `$div`, `$abs`,
//! `$exp`, `$log`, `$max`, `$min`; reciprocal rank fusion is built from these by
//! the client), an optional `group_by` (top k per combination of metadata values,
//! by `$min_k`/`$max_k` over the score and metadata fields), a limit/offset and the
//! keys to return. Lower scores rank first.

use std::collections::HashMap;

use indigo::{GetRequest, Include, QueryRequest, Records, Selection, Where};

use crate::backend::Coll as Collection;
use serde_json::{json, Map, Value};

use crate::ApiError;

#[derive(Debug)]
enum Rank {
    Val(f64),
    Knn(usize),
    Sum(Vec<Rank>),
    Mul(Vec<Rank>),
    Max(Vec<Rank>),
    Min(Vec<Rank>),
    Sub(Box<Rank>, Box<Rank>),
    Div(Box<Rank>, Box<Rank>),
    Abs(Box<Rank>),
    Exp(Box<Rank>),
    Log(Box<Rank>),
}

#[derive(Debug)]
struct Knn {
    query: Vec<f32>,
    /// A sparse query on this metadata key instead of `query`.
    sparse: Option<(String, indigo::SparseVector)>,
    limit: usize,
    default: Option<f64>,
    return_rank: bool,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::invalid(m)
}

fn parse_rank(v: &Value, knns: &mut Vec<Knn>) -> Result<Rank, ApiError> {
    let Value::Object(m) = v else {
        return Err(bad(format!("a rank must be an object, got {v}")));
    };
    let Some((op, arg)) = m.iter().next().filter(|_| m.len() == 1) else {
        return Err(bad("a rank object has exactly one operator"));
    };
    let list = |knns: &mut Vec<Knn>| -> Result<Vec<Rank>, ApiError> {
        arg.as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad(format!("{op} needs a non-empty list")))?
            .iter()
            .map(|r| parse_rank(r, knns))
            .collect()
    };
    let pair = |knns: &mut Vec<Knn>| -> Result<(Box<Rank>, Box<Rank>), ApiError> {
        let l = arg
            .get("left")
            .ok_or_else(|| bad(format!("{op} needs left")))?;
        let r = arg
            .get("right")
            .ok_or_else(|| bad(format!("{op} needs right")))?;
        Ok((
            Box::new(parse_rank(l, knns)?),
            Box::new(parse_rank(r, knns)?),
        ))
    };
    Ok(match op.as_str() {
        "$val" => Rank::Val(arg.as_f64().ok_or_else(|| bad("$val needs a number"))?),
        "$knn" => {
            let key = arg
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("#embedding");
            let mut sparse = None;
            if let Some(q @ Value::Object(_)) = arg.get("query") {
                if key == "#embedding" {
                    return Err(bad(
                        "$knn on #embedding takes a dense query (a list of numbers); \
                         a sparse query needs the key of a sparse vector index",
                    ));
                }
                let v = indigo::SparseVector::from_json("$knn query", q)?;
                sparse = Some((key.to_string(), v));
            } else if key != "#embedding" {
                return Err(ApiError::new(
                    501,
                    "InternalError",
                    format!("$knn over {key:?} with a dense query: dense vectors under metadata keys are not supported yet"),
                ));
            }
            let query = match arg.get("query") {
                Some(Value::Object(_)) => Vec::new(),
                Some(Value::Array(xs)) => xs
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| bad("$knn query must be a list of numbers"))?,
                Some(Value::String(_)) => {
                    return Err(bad("$knn query text must be embedded by the client first"))
                }
                _ => return Err(bad("$knn needs a query vector")),
            };
            knns.push(Knn {
                query,
                sparse,
                limit: arg.get("limit").and_then(Value::as_u64).unwrap_or(16) as usize,
                default: arg.get("default").and_then(Value::as_f64),
                return_rank: arg
                    .get("return_rank")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
            Rank::Knn(knns.len() - 1)
        }
        "$sum" => Rank::Sum(list(knns)?),
        "$mul" => Rank::Mul(list(knns)?),
        "$max" => Rank::Max(list(knns)?),
        "$min" => Rank::Min(list(knns)?),
        "$sub" => {
            let (l, r) = pair(knns)?;
            Rank::Sub(l, r)
        }
        "$div" => {
            let (l, r) = pair(knns)?;
            Rank::Div(l, r)
        }
        "$abs" => Rank::Abs(Box::new(parse_rank(arg, knns)?)),
        "$exp" => Rank::Exp(Box::new(parse_rank(arg, knns)?)),
        "$log" => Rank::Log(Box::new(parse_rank(arg, knns)?)),
        other => return Err(bad(format!("unknown rank operator {other}"))),
    })
}

impl Rank {
    /// The score of one record; `None` when a KNN without a default did not find it.
    fn eval(&self, knn: &[Option<f64>]) -> Option<f64> {
        let fold = |rs: &[Rank], f: fn(f64, f64) -> f64| {
            let mut it = rs.iter().map(|r| r.eval(knn));
            let first = it.next()??;
            it.try_fold(first, |a, b| Some(f(a, b?)))
        };
        Some(match self {
            Rank::Val(v) => *v,
            Rank::Knn(i) => knn[*i]?,
            Rank::Sum(rs) => fold(rs, |a, b| a + b)?,
            Rank::Mul(rs) => fold(rs, |a, b| a * b)?,
            Rank::Max(rs) => fold(rs, f64::max)?,
            Rank::Min(rs) => fold(rs, f64::min)?,
            Rank::Sub(l, r) => l.eval(knn)? - r.eval(knn)?,
            Rank::Div(l, r) => l.eval(knn)? / r.eval(knn)?,
            Rank::Abs(r) => r.eval(knn)?.abs(),
            Rank::Exp(r) => r.eval(knn)?.exp(),
            Rank::Log(r) => r.eval(knn)?.ln(),
        })
    }
}

/// What a search returns: predefined keys and metadata fields.
struct Select {
    keys: Vec<String>,
    document: bool,
    embedding: bool,
    metadata: bool,
    score: bool,
    fields: Vec<String>,
}

fn parse_select(v: Option<&Value>) -> Result<Select, ApiError> {
    let keys: Vec<String> = match v.and_then(|s| s.get("keys")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("select keys must be strings"))?,
        Some(o) => return Err(bad(format!("select keys must be a list, got {o}"))),
    };
    let has = |k: &str| keys.iter().any(|x| x == k);
    Ok(Select {
        document: has("#document"),
        embedding: has("#embedding"),
        metadata: has("#metadata"),
        score: has("#score"),
        fields: keys
            .iter()
            .filter(|k| !k.starts_with('#'))
            .cloned()
            .collect(),
        keys,
    })
}

/// One search, parsed and checked against the limits before anything runs.
pub(crate) struct Plan {
    selection: Selection,
    group: Option<GroupBy>,
    limit: Option<usize>,
    offset: usize,
    select: Select,
    include: Include,
    rank: Option<Rank>,
    knns: Vec<Knn>,
}

/// Parses one search (everything a search request carries is checked here).
pub(crate) fn plan(s: &Value, limits: &indigo::Limits) -> Result<Plan, ApiError> {
    let filter = s
        .get("filter")
        .filter(|f| !f.is_null() && !f.as_object().is_some_and(|o| o.is_empty()));
    let selection = Selection {
        ids: None,
        where_: filter
            .map(|f| Where::parse_with(f, &limits.filter))
            .transpose()?,
        where_document: None,
    };
    let group = parse_group_by(s.get("group_by"))?;
    let limit = s
        .get("limit")
        .and_then(|l| l.get("limit"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    if let Some(n) = limit.filter(|&n| n > limits.max_n_results) {
        return Err(ApiError::quota(format!(
            "a search limit of {n} is more than the {} this server returns",
            limits.max_n_results
        )));
    }
    let offset = s
        .get("limit")
        .and_then(|l| l.get("offset"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    let select = parse_select(s.get("select"))?;
    let include = Include {
        embeddings: select.embedding,
        documents: select.document,
        metadatas: select.metadata || !select.fields.is_empty(),
        uris: false,
        distances: false,
    };
    let mut knns = Vec::new();
    let rank = match s.get("rank").filter(|r| !r.is_null()) {
        Some(r) => Some(parse_rank(r, &mut knns)?),
        None => None,
    };
    if knns.len() > limits.max_searches {
        return Err(ApiError::quota(format!(
            "{} $knn expressions in one search; this server takes at most {}",
            knns.len(),
            limits.max_searches
        )));
    }
    if let Some(k) = knns.iter().find(|k| k.limit > limits.max_n_results) {
        return Err(ApiError::quota(format!(
            "a $knn limit of {} is more than the {} this server returns",
            k.limit, limits.max_n_results
        )));
    }
    if group.is_some() && rank.is_none() {
        return Err(bad(
            "group_by needs a rank (a $knn expression) to pick the top records of each group",
        ));
    }
    Ok(Plan {
        selection,
        group,
        limit,
        offset,
        select,
        include,
        rank,
        knns,
    })
}

/// Runs one search on `c`; returns its column values.
pub fn run(c: &Collection, s: &Value) -> Result<Map<String, Value>, ApiError> {
    let Plan {
        selection,
        group,
        limit,
        offset,
        select,
        include,
        rank,
        knns,
    } = plan(s, c.limits())?;
    let (records, scores) = match rank {
        None => {
            let r = c.get(&GetRequest {
                selection,
                limit,
                offset,
                include,
            })?;
            (r, None)
        }
        Some(rank) => {
            // Each KNN's top results among the filtered records: id → value.
            let mut found: Vec<HashMap<String, f64>> = Vec::new();
            let mut candidates: Vec<String> = Vec::new();
            for k in &knns {
                let include = Include {
                    distances: true,
                    ..Default::default()
                };
                let r = match &k.sparse {
                    Some((key, v)) => c.query_sparse(&indigo::SparseQueryRequest {
                        key: key.clone(),
                        vector: v.clone(),
                        n_results: k.limit,
                        selection: selection.clone(),
                        include,
                    })?,
                    None => {
                        let mut q = QueryRequest::new(vec![k.query.clone()], k.limit);
                        q.selection = selection.clone();
                        q.include = include;
                        c.query(&q)?.remove(0)
                    }
                };
                let mut m = HashMap::new();
                for (i, (id, d)) in r
                    .ids
                    .iter()
                    .zip(r.distances.unwrap_or_default())
                    .enumerate()
                {
                    m.insert(id.clone(), if k.return_rank { i as f64 } else { d as f64 });
                    if !candidates.contains(id) {
                        candidates.push(id.clone());
                    }
                }
                found.push(m);
            }
            let mut scored: Vec<(f64, String)> = candidates
                .into_iter()
                .filter_map(|id| {
                    let vals: Vec<Option<f64>> = knns
                        .iter()
                        .zip(&found)
                        .map(|(k, m)| m.get(&id).copied().or(k.default))
                        .collect();
                    rank.eval(&vals).map(|s| (s, id))
                })
                .collect();
            scored.sort_by(|a, b| a.0.total_cmp(&b.0));
            if let Some(g) = &group {
                scored = g.apply(c, scored)?;
            }
            let page: Vec<(f64, String)> = scored
                .into_iter()
                .skip(offset)
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            let ids: Vec<String> = page.iter().map(|p| p.1.clone()).collect();
            let got = c.get(&GetRequest {
                selection: Selection {
                    ids: Some(ids.clone()),
                    ..Default::default()
                },
                limit: None,
                offset: 0,
                include,
            })?;
            let records = reorder(got, &ids, include);
            // A record deleted since the KNN ran is dropped with its score.
            let score_of: HashMap<&str, f64> = page.iter().map(|p| (p.1.as_str(), p.0)).collect();
            let scores = records
                .ids
                .iter()
                .map(|id| score_of[id.as_str()])
                .collect::<Vec<f64>>();
            (records, Some(scores))
        }
    };
    let mut out = Map::new();
    out.insert("ids".into(), json!(records.ids));
    out.insert(
        "documents".into(),
        if select.document {
            json!(records.documents)
        } else {
            Value::Null
        },
    );
    out.insert(
        "embeddings".into(),
        match (&records.embeddings, select.embedding) {
            (Some(e), true) => Value::Array(e.iter().map(|v| json!(&v[..])).collect()),
            _ => Value::Null,
        },
    );
    out.insert(
        "metadatas".into(),
        match &records.metadatas {
            Some(ms) if include.metadatas => Value::Array(
                ms.iter()
                    .map(|m| {
                        let Some(m) = m else { return Value::Null };
                        let full = indigo_types::record::metadata_to_json(m);
                        if select.metadata {
                            return full;
                        }
                        let picked: Map<String, Value> = select
                            .fields
                            .iter()
                            .filter_map(|f| full.get(f).map(|v| (f.clone(), v.clone())))
                            .collect();
                        Value::Object(picked)
                    })
                    .collect(),
            ),
            _ => Value::Null,
        },
    );
    out.insert(
        "scores".into(),
        match (scores, select.score) {
            (Some(s), true) => json!(s),
            (None, true) => Value::Array(records.ids.iter().map(|_| Value::Null).collect()),
            _ => Value::Null,
        },
    );
    out.insert("select".into(), json!(select.keys));
    Ok(out)
}

/// `got` (in collection order) in the order of `ids`.
/// `group_by`: records grouped by their values of `keys` (a missing key is a
/// value of its own); each group keeps its first `k` by the aggregate keys
/// (ascending for `$min_k`, descending for `$max_k`, missing values last); the
/// kept records are ranked by score again.
#[derive(Debug)]
struct GroupBy {
    keys: Vec<String>,
    order: Vec<String>,
    k: usize,
    max: bool,
}

fn string_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("{what} must be strings")))?,
        Some(Value::String(k)) => vec![k.clone()],
        _ => return Err(bad(format!("{what} must be a list of keys"))),
    };
    if list.is_empty() {
        return Err(bad(format!("{what} cannot be empty")));
    }
    Ok(list)
}

fn parse_group_by(v: Option<&Value>) -> Result<Option<GroupBy>, ApiError> {
    let g = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) if o.is_empty() => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(other) => return Err(bad(format!("group_by must be an object, got {other}"))),
    };
    let keys = string_list(g.get("keys"), "group_by keys")?;
    if let Some(k) = keys.iter().find(|k| k.starts_with('#')) {
        return Err(bad(format!("group_by keys are metadata fields, not {k}")));
    }
    let agg = g
        .get("aggregate")
        .and_then(Value::as_object)
        .filter(|a| a.len() == 1)
        .ok_or_else(|| bad("group_by needs an aggregate: {\"$min_k\": …} or {\"$max_k\": …}"))?;
    let (op, arg) = agg.iter().next().unwrap();
    let max = match op.as_str() {
        "$min_k" => false,
        "$max_k" => true,
        _ => {
            return Err(bad(format!(
                "unknown group_by aggregate {op}; use $min_k or $max_k"
            )))
        }
    };
    let order = string_list(arg.get("keys"), "aggregate keys")?;
    if let Some(k) = order.iter().find(|k| k.starts_with('#') && *k != "#score") {
        return Err(bad(format!(
            "aggregate keys are #score or metadata fields, not {k}"
        )));
    }
    let k = arg
        .get("k")
        .and_then(Value::as_u64)
        .filter(|&k| k > 0)
        .ok_or_else(|| bad("aggregate k must be a positive integer"))? as usize;
    Ok(Some(GroupBy {
        keys,
        order,
        k,
        max,
    }))
}

/// One aggregate key's value: numbers before strings before other values.
#[derive(PartialEq, PartialOrd)]
enum SortValue {
    Num(f64),
    Str(String),
    Other(String),
}

/// A record's aggregate keys; `None` where it lacks the field.
type SortKey = Vec<Option<SortValue>>;

impl GroupBy {
    /// Aggregate order: ascending for `$min_k`, descending for `$max_k`, and
    /// missing values last either way.
    fn compare(&self, a: &SortKey, b: &SortKey) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        for (x, y) in a.iter().zip(b) {
            let o = match (x, y) {
                (Some(x), Some(y)) => {
                    let o = x.partial_cmp(y).unwrap_or(Ordering::Equal);
                    if self.max {
                        o.reverse()
                    } else {
                        o
                    }
                }
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            if o.is_ne() {
                return o;
            }
        }
        Ordering::Equal
    }

    fn apply(
        &self,
        c: &Collection,
        scored: Vec<(f64, String)>,
    ) -> Result<Vec<(f64, String)>, ApiError> {
        let got = c.get(&GetRequest {
            selection: Selection {
                ids: Some(scored.iter().map(|s| s.1.clone()).collect()),
                ..Default::default()
            },
            limit: None,
            offset: 0,
            include: Include {
                metadatas: true,
                ..Default::default()
            },
        })?;
        let metas: HashMap<&str, Value> = got
            .ids
            .iter()
            .zip(got.metadatas.iter().flatten())
            .map(|(id, m)| {
                let v = m
                    .as_ref()
                    .map_or(Value::Null, indigo_types::record::metadata_to_json);
                (id.as_str(), v)
            })
            .collect();
        let field = |id: &str, key: &str| -> Option<Value> {
            metas
                .get(id)
                .and_then(|m| m.get(key))
                .filter(|v| !v.is_null())
                .cloned()
        };
        // Groups in order of their best-scored record, so ties stay stable.
        let mut groups: Vec<Vec<(f64, String)>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (score, id) in scored {
            let key: Vec<Option<Value>> = self.keys.iter().map(|k| field(&id, k)).collect();
            let key = serde_json::to_string(&key).unwrap_or_default();
            let i = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push((score, id));
        }
        let sort_key = |score: f64, id: &str| -> SortKey {
            self.order
                .iter()
                .map(|k| {
                    if k == "#score" {
                        return Some(SortValue::Num(score));
                    }
                    field(id, k).map(|v| match v {
                        Value::Number(n) => SortValue::Num(n.as_f64().unwrap_or(f64::NAN)),
                        Value::String(s) => SortValue::Str(s),
                        other => SortValue::Other(other.to_string()),
                    })
                })
                .collect()
        };
        let mut kept = Vec::new();
        for mut g in groups {
            let mut keyed: Vec<(SortKey, (f64, String))> = g
                .drain(..)
                .map(|(s, id)| (sort_key(s, &id), (s, id)))
                .collect();
            keyed.sort_by(|a, b| self.compare(&a.0, &b.0));
            kept.extend(keyed.into_iter().take(self.k).map(|(_, r)| r));
        }
        kept.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(kept)
    }
}

fn reorder(got: Records, ids: &[String], include: Include) -> Records {
    let pos: HashMap<&str, usize> = got
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut out = Records::empty(include);
    for id in ids {
        let Some(&i) = pos.get(id.as_str()) else {
            continue;
        };
        out.ids.push(id.clone());
        if let (Some(o), Some(g)) = (&mut out.embeddings, &got.embeddings) {
            o.push(g[i].clone());
        }
        if let (Some(o), Some(g)) = (&mut out.documents, &got.documents) {
            o.push(g[i].clone());
        }
        if let (Some(o), Some(g)) = (&mut out.metadatas, &got.metadatas) {
            o.push(g[i].clone());
        }
    }
    out
}
