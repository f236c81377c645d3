//! The `where` and `where_document` filter languages, parsed into a typed AST with
//! Chroma's semantics, and their reference evaluation on one record.
//!
//! Semantics (Chroma's API notes on `where` and `where_document`):
//! - `$ne` and `$nin` match records that lack the key; `$eq`, `$in` and the range
//!   operators need it.
//! - Ints and floats compare as numbers; other types compare only with their own.
//! - `$contains` / `$not_contains` on metadata test membership in a list value.
//! - `$contains` on a record without a document is false; `$not_contains` is true
//!   (likewise `$regex` / `$not_regex`).

use serde_json::Value;

use std::cell::Cell;

use crate::limits::FilterLimits;
use crate::metadata::{same_kind, MetaValue, Metadata, Scalar};
use crate::{invalid, InvalidArgument};

/// What a filter being parsed has used of its [`FilterLimits`].
struct Budget<'a> {
    limits: &'a FilterLimits,
    conditions: Cell<usize>,
    regexes: Cell<usize>,
}

impl<'a> Budget<'a> {
    fn new(limits: &'a FilterLimits) -> Self {
        Budget {
            limits,
            conditions: Cell::new(0),
            regexes: Cell::new(0),
        }
    }

    fn condition(&self, what: &str) -> Result<(), InvalidArgument> {
        self.conditions.set(self.conditions.get() + 1);
        if self.conditions.get() > self.limits.max_conditions {
            return invalid(format!(
                "{what} has more than {} conditions, the most this server allows",
                self.limits.max_conditions
            ));
        }
        Ok(())
    }

    fn values<'v>(&self, items: &'v [Value], op: &str) -> Result<&'v [Value], InvalidArgument> {
        if items.len() > self.limits.max_values {
            return invalid(format!(
                "{op} has {} values; this server allows at most {}",
                items.len(),
                self.limits.max_values
            ));
        }
        Ok(items)
    }

    fn regex(&self, op: &str, pattern: &str) -> Result<regex::Regex, InvalidArgument> {
        self.regexes.set(self.regexes.get() + 1);
        if self.regexes.get() > self.limits.max_regexes {
            return invalid(format!(
                "a filter may use at most {} regular expressions",
                self.limits.max_regexes
            ));
        }
        regex::RegexBuilder::new(pattern)
            .size_limit(self.limits.max_regex_bytes)
            .dfa_size_limit(self.limits.max_regex_bytes)
            .build()
            .map_err(|e| InvalidArgument(format!("{op}: invalid regular expression: {e}")))
    }
}

/// Filters nest at most this deep; deeper requests are refused before evaluation.
pub const MAX_DEPTH: usize = 32;

/// A metadata (or `#document`) predicate.
#[derive(Debug, Clone)]
pub enum Where {
    And(Vec<Where>),
    Or(Vec<Where>),
    Field {
        key: String,
        op: FieldOp,
    },
    /// `{"#document": {...}}` inside `where`.
    Document(DocFilter),
}

#[derive(Debug, Clone)]
pub enum FieldOp {
    Eq(Scalar),
    Ne(Scalar),
    Gt(Scalar),
    Gte(Scalar),
    Lt(Scalar),
    Lte(Scalar),
    In(Vec<Scalar>),
    Nin(Vec<Scalar>),
    Contains(Scalar),
    NotContains(Scalar),
}

/// A predicate on the document text.
#[derive(Debug, Clone)]
pub enum DocFilter {
    And(Vec<DocFilter>),
    Or(Vec<DocFilter>),
    Contains(String),
    NotContains(String),
    Regex(regex::Regex),
    NotRegex(regex::Regex),
}

fn single_entry<'a>(v: &'a Value, what: &str) -> Result<(&'a String, &'a Value), InvalidArgument> {
    match v {
        Value::Object(m) if m.len() == 1 => Ok(m.iter().next().unwrap()),
        Value::Object(m) if m.is_empty() => invalid(format!("{what} must not be empty")),
        Value::Object(_) => invalid(format!(
            "{what} must have exactly one key; combine conditions with $and or $or"
        )),
        _ => invalid(format!("{what} must be an object, got {v}")),
    }
}

fn list<'a>(v: &'a Value, op: &str) -> Result<&'a Vec<Value>, InvalidArgument> {
    match v {
        Value::Array(items) if !items.is_empty() => Ok(items),
        Value::Array(_) => invalid(format!("{op} needs a non-empty list")),
        _ => invalid(format!("{op} needs a list, got {v}")),
    }
}

fn scalar(v: &Value, op: &str, key: &str) -> Result<Scalar, InvalidArgument> {
    Scalar::from_json(v).ok_or_else(|| {
        InvalidArgument(format!(
            "{op} on {key:?} needs a string, number or bool, got {v}"
        ))
    })
}

fn number(v: &Value, op: &str, key: &str) -> Result<Scalar, InvalidArgument> {
    match Scalar::from_json(v) {
        Some(s) if s.as_number().is_some() => Ok(s),
        _ => invalid(format!("{op} on {key:?} needs a number, got {v}")),
    }
}

impl Where {
    /// Parses a `where` object within the default [`FilterLimits`].
    pub fn parse(v: &Value) -> Result<Where, InvalidArgument> {
        Self::parse_with(v, &FilterLimits::default())
    }

    /// Parses a `where` object within `limits`.
    pub fn parse_with(v: &Value, limits: &FilterLimits) -> Result<Where, InvalidArgument> {
        Self::parse_at(v, 0, &Budget::new(limits))
    }

    fn parse_at(v: &Value, depth: usize, b: &Budget<'_>) -> Result<Where, InvalidArgument> {
        if depth > MAX_DEPTH {
            return invalid(format!("where is nested deeper than {MAX_DEPTH} levels"));
        }
        b.condition("where")?;
        let (k, val) = single_entry(v, "where")?;
        match k.as_str() {
            "$and" | "$or" => {
                let parts = b
                    .values(list(val, k)?, k)?
                    .iter()
                    .map(|p| Self::parse_at(p, depth + 1, b))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if k == "$and" {
                    Where::And(parts)
                } else {
                    Where::Or(parts)
                })
            }
            "#document" => Ok(Where::Document(DocFilter::parse_at(val, depth + 1, b)?)),
            key if key.starts_with('$') => invalid(format!("unknown operator {key} in where")),
            key => Ok(Where::Field {
                key: key.to_string(),
                op: FieldOp::parse(key, val, b)?,
            }),
        }
    }

    /// The filter in Chroma's JSON form (what [`Where::parse`] reads back to an
    /// equal filter), for handing a parsed request to another process.
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            Where::And(ps) => json!({"$and": ps.iter().map(Where::to_json).collect::<Vec<_>>()}),
            Where::Or(ps) => json!({"$or": ps.iter().map(Where::to_json).collect::<Vec<_>>()}),
            Where::Document(d) => json!({"#document": d.to_json()}),
            Where::Field { key, op } => {
                let (name, arg) = match op {
                    FieldOp::Eq(x) => ("$eq", x.to_json()),
                    FieldOp::Ne(x) => ("$ne", x.to_json()),
                    FieldOp::Gt(x) => ("$gt", x.to_json()),
                    FieldOp::Gte(x) => ("$gte", x.to_json()),
                    FieldOp::Lt(x) => ("$lt", x.to_json()),
                    FieldOp::Lte(x) => ("$lte", x.to_json()),
                    FieldOp::In(xs) => (
                        "$in",
                        Value::Array(xs.iter().map(Scalar::to_json).collect()),
                    ),
                    FieldOp::Nin(xs) => (
                        "$nin",
                        Value::Array(xs.iter().map(Scalar::to_json).collect()),
                    ),
                    FieldOp::Contains(x) => ("$contains", x.to_json()),
                    FieldOp::NotContains(x) => ("$not_contains", x.to_json()),
                };
                json!({ key.as_str(): { name: arg } })
            }
        }
    }

    /// Whether a record with this metadata and document matches.
    pub fn matches(&self, meta: Option<&Metadata>, doc: Option<&str>) -> bool {
        match self {
            Where::And(ps) => ps.iter().all(|p| p.matches(meta, doc)),
            Where::Or(ps) => ps.iter().any(|p| p.matches(meta, doc)),
            Where::Document(d) => d.matches(doc),
            Where::Field { key, op } => op.matches(meta.and_then(|m| m.get(key))),
        }
    }
}

impl FieldOp {
    fn parse(key: &str, v: &Value, b: &Budget<'_>) -> Result<FieldOp, InvalidArgument> {
        if let Some(s) = Scalar::from_json(v) {
            return Ok(FieldOp::Eq(s));
        }
        let (op, arg) = single_entry(v, &format!("the condition on {key:?}"))?;
        Ok(match op.as_str() {
            "$eq" => FieldOp::Eq(scalar(arg, op, key)?),
            "$ne" => FieldOp::Ne(scalar(arg, op, key)?),
            "$gt" => FieldOp::Gt(number(arg, op, key)?),
            "$gte" => FieldOp::Gte(number(arg, op, key)?),
            "$lt" => FieldOp::Lt(number(arg, op, key)?),
            "$lte" => FieldOp::Lte(number(arg, op, key)?),
            "$in" | "$nin" => {
                let items = b
                    .values(list(arg, op)?, op)?
                    .iter()
                    .map(|x| scalar(x, op, key))
                    .collect::<Result<Vec<_>, _>>()?;
                if !same_kind(&items) {
                    return invalid(format!("{op} on {key:?} needs values of one type"));
                }
                if op == "$in" {
                    FieldOp::In(items)
                } else {
                    FieldOp::Nin(items)
                }
            }
            "$contains" => FieldOp::Contains(scalar(arg, op, key)?),
            "$not_contains" => FieldOp::NotContains(scalar(arg, op, key)?),
            other => return invalid(format!("unknown operator {other} on {key:?}")),
        })
    }

    /// Whether a record whose value for the key is `value` (`None`: no such key)
    /// matches.
    pub fn matches(&self, value: Option<&MetaValue>) -> bool {
        let scalar = match value {
            Some(MetaValue::Scalar(s)) => Some(s),
            _ => None,
        };
        let list = match value {
            Some(MetaValue::List(l)) => Some(l),
            _ => None,
        };
        let cmp = |x: &Scalar, f: fn(std::cmp::Ordering) -> bool| {
            scalar.and_then(|s| s.compare(x)).is_some_and(f)
        };
        match self {
            FieldOp::Eq(x) => scalar.is_some_and(|s| s.equals(x)),
            FieldOp::Ne(x) => !scalar.is_some_and(|s| s.equals(x)),
            FieldOp::Gt(x) => cmp(x, |o| o.is_gt()),
            FieldOp::Gte(x) => cmp(x, |o| o.is_ge()),
            FieldOp::Lt(x) => cmp(x, |o| o.is_lt()),
            FieldOp::Lte(x) => cmp(x, |o| o.is_le()),
            FieldOp::In(xs) => scalar.is_some_and(|s| xs.iter().any(|x| s.equals(x))),
            FieldOp::Nin(xs) => !scalar.is_some_and(|s| xs.iter().any(|x| s.equals(x))),
            FieldOp::Contains(x) => list.is_some_and(|l| l.iter().any(|s| s.equals(x))),
            FieldOp::NotContains(x) => !list.is_some_and(|l| l.iter().any(|s| s.equals(x))),
        }
    }
}

impl DocFilter {
    /// Parses a `where_document` object within the default [`FilterLimits`].
    pub fn parse(v: &Value) -> Result<DocFilter, InvalidArgument> {
        Self::parse_with(v, &FilterLimits::default())
    }

    /// Parses a `where_document` object within `limits`.
    pub fn parse_with(v: &Value, limits: &FilterLimits) -> Result<DocFilter, InvalidArgument> {
        Self::parse_at(v, 0, &Budget::new(limits))
    }

    fn parse_at(v: &Value, depth: usize, b: &Budget<'_>) -> Result<DocFilter, InvalidArgument> {
        if depth > MAX_DEPTH {
            return invalid(format!(
                "where_document is nested deeper than {MAX_DEPTH} levels"
            ));
        }
        b.condition("where_document")?;
        let (op, arg) = single_entry(v, "where_document")?;
        let text = |op: &str| match arg {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => invalid(format!(
                "{op} in where_document needs a non-empty string, got {arg}"
            )),
        };
        let re = |op: &str| b.regex(op, &text(op)?);
        Ok(match op.as_str() {
            "$and" | "$or" => {
                let parts = b
                    .values(list(arg, op)?, op)?
                    .iter()
                    .map(|p| Self::parse_at(p, depth + 1, b))
                    .collect::<Result<Vec<_>, _>>()?;
                if op == "$and" {
                    DocFilter::And(parts)
                } else {
                    DocFilter::Or(parts)
                }
            }
            "$contains" => DocFilter::Contains(text(op)?),
            "$not_contains" => DocFilter::NotContains(text(op)?),
            "$regex" => DocFilter::Regex(re(op)?),
            "$not_regex" => DocFilter::NotRegex(re(op)?),
            other => return invalid(format!("unknown operator {other} in where_document")),
        })
    }

    /// The filter in Chroma's JSON form (see [`Where::to_json`]).
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            DocFilter::And(ps) => {
                json!({"$and": ps.iter().map(DocFilter::to_json).collect::<Vec<_>>()})
            }
            DocFilter::Or(ps) => {
                json!({"$or": ps.iter().map(DocFilter::to_json).collect::<Vec<_>>()})
            }
            DocFilter::Contains(s) => json!({"$contains": s}),
            DocFilter::NotContains(s) => json!({"$not_contains": s}),
            DocFilter::Regex(r) => json!({"$regex": r.as_str()}),
            DocFilter::NotRegex(r) => json!({"$not_regex": r.as_str()}),
        }
    }

    /// Whether a record with this document (`None`: no document) matches.
    pub fn matches(&self, doc: Option<&str>) -> bool {
        match self {
            DocFilter::And(ps) => ps.iter().all(|p| p.matches(doc)),
            DocFilter::Or(ps) => ps.iter().any(|p| p.matches(doc)),
            DocFilter::Contains(s) => doc.is_some_and(|d| d.contains(s.as_str())),
            DocFilter::NotContains(s) => !doc.is_some_and(|d| d.contains(s.as_str())),
            DocFilter::Regex(r) => doc.is_some_and(|d| r.is_match(d)),
            DocFilter::NotRegex(r) => !doc.is_some_and(|d| r.is_match(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Metadata {
        crate::metadata::metadata_from_json(&v, false)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap()))
            .collect()
    }

    /// (filter, metadata, document, expected) — one row per semantic rule.
    #[test]
    fn where_semantics_table() {
        let cases: &[(Value, Value, Option<&str>, bool)] = &[
            (json!({"a": 1}), json!({"a": 1}), None, true),
            (json!({"a": 1}), json!({"a": 1.0}), None, true),
            (json!({"a": {"$eq": "x"}}), json!({"a": "x"}), None, true),
            (json!({"a": {"$eq": 1}}), json!({"a": true}), None, false),
            (json!({"a": {"$eq": 1}}), json!({"b": 1}), None, false),
            (json!({"a": {"$ne": 1}}), json!({"b": 1}), None, true),
            (json!({"a": {"$ne": 1}}), json!({"a": 2}), None, true),
            (json!({"a": {"$ne": 1}}), json!({"a": 1.0}), None, false),
            (json!({"a": {"$ne": "1"}}), json!({"a": 1}), None, true),
            (json!({"a": {"$gt": 1}}), json!({"a": 1.5}), None, true),
            (json!({"a": {"$gt": 1}}), json!({"a": 1}), None, false),
            (json!({"a": {"$gte": 1}}), json!({"a": 1}), None, true),
            (json!({"a": {"$lt": 1}}), json!({"b": 0}), None, false),
            (json!({"a": {"$lt": 1}}), json!({"a": "0"}), None, false),
            (json!({"a": {"$lte": 2.5}}), json!({"a": 2}), None, true),
            (json!({"a": {"$in": [1, 2]}}), json!({"a": 2.0}), None, true),
            (json!({"a": {"$in": ["x"]}}), json!({"b": "x"}), None, false),
            (json!({"a": {"$nin": ["x"]}}), json!({"b": "x"}), None, true),
            (
                json!({"a": {"$nin": ["x"]}}),
                json!({"a": "x"}),
                None,
                false,
            ),
            (
                json!({"t": {"$contains": "red"}}),
                json!({"t": ["red", "blue"]}),
                None,
                true,
            ),
            (
                json!({"t": {"$contains": "red"}}),
                json!({"t": ["blue"]}),
                None,
                false,
            ),
            (
                json!({"t": {"$contains": 2}}),
                json!({"t": [1.0, 2.0]}),
                None,
                true,
            ),
            (
                json!({"t": {"$not_contains": "red"}}),
                json!({}),
                None,
                true,
            ),
            (
                json!({"t": {"$not_contains": "red"}}),
                json!({"t": ["red"]}),
                None,
                false,
            ),
            (
                json!({"$and": [{"a": 1}, {"b": 2}]}),
                json!({"a": 1, "b": 2}),
                None,
                true,
            ),
            (
                json!({"$and": [{"a": 1}, {"b": 2}]}),
                json!({"a": 1}),
                None,
                false,
            ),
            (
                json!({"$or": [{"a": 1}, {"b": 2}]}),
                json!({"b": 2}),
                None,
                true,
            ),
            (
                json!({"#document": {"$contains": "cat"}}),
                json!({}),
                Some("a cat"),
                true,
            ),
            (
                json!({"#document": {"$contains": "cat"}}),
                json!({}),
                None,
                false,
            ),
            (
                json!({"#document": {"$not_contains": "cat"}}),
                json!({}),
                None,
                true,
            ),
        ];
        for (f, m, d, want) in cases {
            let w = Where::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            let m = meta(m.clone());
            assert_eq!(w.matches(Some(&m), *d), *want, "{f} on {m:?} / {d:?}");
        }
        // A record with no metadata at all behaves as one lacking every key.
        assert!(Where::parse(&json!({"a": {"$ne": 1}}))
            .unwrap()
            .matches(None, None));
        assert!(!Where::parse(&json!({"a": 1})).unwrap().matches(None, None));
    }

    #[test]
    fn where_document_semantics() {
        let d = |v: Value| DocFilter::parse(&v).unwrap();
        assert!(d(json!({"$contains": "fox"})).matches(Some("the quick fox")));
        assert!(
            !d(json!({"$contains": "Fox"})).matches(Some("the quick fox")),
            "case-sensitive"
        );
        assert!(d(json!({"$regex": "^the \\w+"})).matches(Some("the quick fox")));
        assert!(!d(json!({"$regex": "x"})).matches(None));
        assert!(d(json!({"$not_regex": "x"})).matches(None));
        assert!(
            d(json!({"$and": [{"$contains": "a"}, {"$not_contains": "z"}]})).matches(Some("abc"))
        );
        assert!(d(json!({"$or": [{"$contains": "z"}, {"$contains": "b"}]})).matches(Some("abc")));
    }

    #[test]
    fn bad_filters_are_rejected_with_a_reason() {
        for (f, fragment) in [
            (json!({}), "must not be empty"),
            (json!({"a": 1, "b": 2}), "exactly one key"),
            (json!({"a": {"$gt": "x"}}), "needs a number"),
            (json!({"a": {"$in": []}}), "non-empty list"),
            (json!({"a": {"$in": [1, "x"]}}), "one type"),
            (json!({"a": {"$bogus": 1}}), "unknown operator"),
            (json!({"$not": [{"a": 1}]}), "unknown operator"),
            (json!({"a": null}), "object"),
            (json!({"$and": {"a": 1}}), "needs a list"),
        ] {
            let e = Where::parse(&f).expect_err(&f.to_string());
            assert!(e.0.contains(fragment), "{f}: {e}");
        }
        for (f, fragment) in [
            (json!({"$contains": ""}), "non-empty string"),
            (json!({"$regex": "("}), "invalid regular expression"),
            (json!({"$near": "x"}), "unknown operator"),
        ] {
            let e = DocFilter::parse(&f).expect_err(&f.to_string());
            assert!(e.0.contains(fragment), "{f}: {e}");
        }
        let mut deep = json!({"a": 1});
        for _ in 0..40 {
            deep = json!({"$and": [deep]});
        }
        assert!(Where::parse(&deep).unwrap_err().0.contains("nested deeper"));
    }

    #[test]
    fn filters_stay_within_their_limits() {
        let limits = FilterLimits {
            max_values: 3,
            max_conditions: 4,
            max_regexes: 1,
            max_regex_bytes: 10_000,
        };
        let w = |v: Value| Where::parse_with(&v, &limits).map_err(|e| e.0);
        let d = |v: Value| DocFilter::parse_with(&v, &limits).map_err(|e| e.0);
        assert!(w(json!({"a": {"$in": [1, 2, 3]}})).is_ok());
        assert!(w(json!({"a": {"$in": [1, 2, 3, 4]}}))
            .unwrap_err()
            .contains("at most 3"));
        assert!(w(json!({"$or": [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]}))
            .unwrap_err()
            .contains("at most 3"));
        assert!(
            w(json!({"$and": [{"a": 1}, {"$or": [{"b": 2}, {"c": 3}, {"d": 4}]}]}))
                .unwrap_err()
                .contains("more than 4 conditions")
        );
        assert!(d(json!({"$regex": "a+"})).is_ok());
        assert!(d(json!({"$or": [{"$regex": "a"}, {"$not_regex": "b"}]}))
            .unwrap_err()
            .contains("at most 1 regular"));
        // A pattern whose compiled program exceeds the size limit is refused.
        assert!(d(json!({"$regex": "\\w{500}"}))
            .unwrap_err()
            .contains("invalid regular expression"));
    }

    #[test]
    fn filters_survive_their_json_form() {
        for w in [
            json!({"a": 1}),
            json!({"$and": [{"a": {"$gte": 2.5}}, {"b": {"$in": ["x", "y"]}}, {"c": {"$ne": false}}]}),
            json!({"$or": [{"l": {"$contains": 3}}, {"l": {"$not_contains": "z"}}, {"#document": {"$regex": "^q"}}]}),
            json!({"n": {"$nin": [1, 2]}}),
        ] {
            let parsed = Where::parse(&w).unwrap();
            let again = Where::parse(&parsed.to_json()).unwrap();
            assert_eq!(again.to_json(), parsed.to_json(), "{w}");
        }
        let d =
            DocFilter::parse(&json!({"$or": [{"$contains": "a"}, {"$not_regex": "b+"}]})).unwrap();
        assert_eq!(
            DocFilter::parse(&d.to_json()).unwrap().to_json(),
            d.to_json()
        );
    }
}
