//! Metadata values: string, int (i64), float (f64), bool, non-empty lists of one
//! of those, and sparse vectors, as Chroma accepts them.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::{invalid, InvalidArgument};

/// One scalar metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    /// Parses a JSON scalar; `None` for anything else (null, list, object).
    pub fn from_json(v: &Value) -> Option<Scalar> {
        match v {
            Value::String(s) => Some(Scalar::Str(s.clone())),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(Scalar::Int(i)),
                None => n.as_f64().filter(|f| f.is_finite()).map(Scalar::Float),
            },
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Float(f) => Value::from(*f),
            Scalar::Bool(b) => Value::Bool(*b),
        }
    }

    /// The value as a number, if it is one (ints and floats compare as numbers).
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Equality with Chroma's rules: numbers compare by value across int and
    /// float; otherwise the types must match.
    pub fn equals(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::Int(a), Scalar::Int(b)) => a == b,
            (a, b) if a.as_number().is_some() && b.as_number().is_some() => {
                a.as_number() == b.as_number()
            }
            (Scalar::Str(a), Scalar::Str(b)) => a == b,
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            _ => false,
        }
    }

    /// Numeric order; `None` unless both are numbers.
    pub fn compare(&self, other: &Scalar) -> Option<Ordering> {
        match (self, other) {
            (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
            _ => self.as_number()?.partial_cmp(&other.as_number()?),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "string",
            Scalar::Int(_) | Scalar::Float(_) => "number",
            Scalar::Bool(_) => "bool",
        }
    }
}

/// A metadata value: a scalar, a non-empty list of scalars of one type, or a
/// sparse vector.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Scalar(Scalar),
    List(Vec<Scalar>),
    Sparse(SparseVector),
}

/// A sparse vector as Chroma sends it: `{"#type": "sparse_vector", "indices":
/// [...], "values": [...], "tokens": [...]}` (the tag and tokens optional),
/// indices strictly ascending. Values are kept as f32, as Chroma keeps them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
    pub tokens: Option<Vec<String>>,
}

/// The tag Chroma puts on typed metadata objects, and a sparse vector's value.
pub const TYPE_KEY: &str = "#type";
pub const SPARSE_VECTOR_TYPE: &str = "sparse_vector";

impl SparseVector {
    /// Parses and validates a sparse vector object, with Chroma's messages.
    pub fn from_json(key: &str, v: &Value) -> Result<SparseVector, InvalidArgument> {
        let Value::Object(m) = v else {
            return invalid(format!(
                "{key:?}: a sparse vector must be an object, got {v}"
            ));
        };
        match m.get(TYPE_KEY) {
            None => {}
            Some(Value::String(t)) if t == SPARSE_VECTOR_TYPE => {}
            Some(t) => return invalid(format!("{key:?}: Expected #type='sparse_vector', got {t}")),
        }
        for k in m.keys() {
            if !matches!(k.as_str(), TYPE_KEY | "indices" | "values" | "tokens") {
                return invalid(format!("{key:?}: unknown sparse vector field {k:?}"));
            }
        }
        let list = |name: &str| -> Result<&Vec<Value>, InvalidArgument> {
            m.get(name).and_then(Value::as_array).ok_or_else(|| {
                InvalidArgument(format!("{key:?}: a sparse vector needs a list of {name}"))
            })
        };
        let indices = list("indices")?
            .iter()
            .map(|x| x.as_u64().and_then(|i| u32::try_from(i).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| {
                InvalidArgument(format!(
                    "{key:?}: sparse vector indices must be integers from 0 to {}",
                    u32::MAX
                ))
            })?;
        let values = list("values")?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32).filter(|f| f.is_finite()))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| {
                InvalidArgument(format!(
                    "{key:?}: sparse vector values must be finite numbers (within f32)"
                ))
            })?;
        let tokens = match m.get("tokens") {
            None | Some(Value::Null) => None,
            Some(Value::Array(t)) => Some(
                t.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| {
                        InvalidArgument(format!("{key:?}: sparse vector tokens must be strings"))
                    })?,
            ),
            Some(t) => {
                return invalid(format!(
                    "{key:?}: sparse vector tokens must be a list, got {t}"
                ))
            }
        };
        let sv = SparseVector {
            indices,
            values,
            tokens,
        };
        sv.validate()
            .map_err(|e| InvalidArgument(format!("{key:?}: {e}")))?;
        Ok(sv)
    }

    /// Chroma's `SparseVector::validate`.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.indices.len();
        if self.values.len() != n || self.tokens.as_ref().is_some_and(|t| t.len() != n) {
            return Err(
                "Sparse vector indices, values, and tokens (when present) must have \
                        the same length"
                    .into(),
            );
        }
        if self.indices.windows(2).any(|w| w[0] >= w[1]) {
            return Err(
                "Sparse vector indices must be sorted in strictly ascending order (no duplicates)"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(TYPE_KEY.into(), Value::from(SPARSE_VECTOR_TYPE));
        m.insert("indices".into(), Value::from(self.indices.clone()));
        m.insert(
            "values".into(),
            Value::Array(self.values.iter().map(|&x| f32_json(x)).collect()),
        );
        if let Some(t) = &self.tokens {
            m.insert("tokens".into(), Value::from(t.clone()));
        }
        Value::Object(m)
    }

    /// The dot product with `other` (both sorted by index).
    pub fn dot(&self, other: &SparseVector) -> f32 {
        let (mut i, mut j, mut s) = (0, 0, 0.0f32);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                Ordering::Less => i += 1,
                Ordering::Greater => j += 1,
                Ordering::Equal => {
                    s += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        s
    }
}

/// An f32 as the JSON number that prints as its shortest form (0.1, not
/// 0.10000000149011612), as Chroma's f32 values serialise.
fn f32_json(x: f32) -> Value {
    let f: f64 = x.to_string().parse().unwrap_or(x as f64);
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

pub type Metadata = BTreeMap<String, MetaValue>;

impl MetaValue {
    pub fn from_json(key: &str, v: &Value) -> Result<MetaValue, InvalidArgument> {
        if let Some(s) = Scalar::from_json(v) {
            return Ok(MetaValue::Scalar(s));
        }
        match v {
            Value::Object(_) => Ok(MetaValue::Sparse(SparseVector::from_json(key, v)?)),
            Value::Array(items) => {
                if items.is_empty() {
                    return invalid(format!("metadata {key:?}: lists must not be empty"));
                }
                let list = items
                    .iter()
                    .map(Scalar::from_json)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        InvalidArgument(format!(
                            "metadata {key:?}: list items must be strings, numbers or bools"
                        ))
                    })?;
                if !same_kind(&list) {
                    return invalid(format!(
                        "metadata {key:?}: list items must all have one type"
                    ));
                }
                Ok(MetaValue::List(list))
            }
            Value::Number(_) => invalid(format!("metadata {key:?}: numbers must be finite")),
            _ => invalid(format!(
                "metadata {key:?}: expected a string, number, bool, a list of one of those, \
                 or a sparse vector, got {v}"
            )),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            MetaValue::Scalar(s) => s.to_json(),
            MetaValue::List(l) => Value::Array(l.iter().map(Scalar::to_json).collect()),
            MetaValue::Sparse(v) => v.to_json(),
        }
    }
}

/// Whether all scalars are of one type (ints and floats count as one: numbers).
pub(crate) fn same_kind(items: &[Scalar]) -> bool {
    items.windows(2).all(|w| w[0].kind() == w[1].kind())
}

/// Parses a metadata object. `allow_null` permits `null` values (an update's way of
/// removing a key), returned as `None`.
pub fn metadata_from_json(
    v: &Value,
    allow_null: bool,
) -> Result<BTreeMap<String, Option<MetaValue>>, InvalidArgument> {
    let Value::Object(map) = v else {
        return invalid(format!("metadata must be an object, got {v}"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if k.is_empty() {
            return invalid("metadata keys must not be empty");
        }
        if v.is_null() {
            if !allow_null {
                return invalid(format!("metadata {k:?}: null is only allowed in updates"));
            }
            out.insert(k.clone(), None);
        } else {
            out.insert(k.clone(), Some(MetaValue::from_json(k, v)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_across_int_and_float() {
        assert!(Scalar::Int(3).equals(&Scalar::Float(3.0)));
        assert!(!Scalar::Int(1).equals(&Scalar::Bool(true)));
        assert!(!Scalar::Str("1".into()).equals(&Scalar::Int(1)));
        assert_eq!(
            Scalar::Int(2).compare(&Scalar::Float(2.5)),
            Some(Ordering::Less)
        );
        assert_eq!(Scalar::Str("a".into()).compare(&Scalar::Int(1)), None);
        assert_eq!(
            Scalar::Int(i64::MAX).compare(&Scalar::Int(i64::MAX - 1)),
            Some(Ordering::Greater),
            "large ints compare exactly, not through f64"
        );
    }

    #[test]
    fn metadata_values_are_validated() {
        assert_eq!(
            MetaValue::from_json("k", &json!(["a", "b"])).unwrap(),
            MetaValue::List(vec![Scalar::Str("a".into()), Scalar::Str("b".into())])
        );
        assert!(MetaValue::from_json("k", &json!([])).is_err());
        assert!(MetaValue::from_json("k", &json!(["a", 1])).is_err());
        assert!(MetaValue::from_json("k", &json!({"x": 1})).is_err());
        let sv = json!({"#type": "sparse_vector", "indices": [1, 7], "values": [0.1, 2.0]});
        let MetaValue::Sparse(parsed) = MetaValue::from_json("k", &sv).unwrap() else {
            panic!("a sparse vector")
        };
        assert_eq!(parsed.indices, vec![1, 7]);
        assert_eq!(
            parsed.to_json(),
            sv,
            "f32 values print in their shortest form"
        );
        assert!(MetaValue::from_json("k", &json!({"indices": [1], "values": [1.0]})).is_ok());
        for bad in [
            json!({"indices": [2, 1], "values": [1.0, 1.0]}),
            json!({"indices": [1, 1], "values": [1.0, 1.0]}),
            json!({"indices": [1], "values": [1.0, 2.0]}),
            json!({"indices": [-1], "values": [1.0]}),
            json!({"indices": [4294967296u64], "values": [1.0]}),
            json!({"indices": [1], "values": [1e300]}),
            json!({"indices": [1], "values": ["a"]}),
            json!({"indices": [1], "values": [1.0], "tokens": ["a", "b"]}),
            json!({"#type": "dense", "indices": [1], "values": [1.0]}),
        ] {
            assert!(MetaValue::from_json("k", &bad).is_err(), "{bad}");
        }
        assert!(MetaValue::from_json("k", &json!(null)).is_err());
        assert!(MetaValue::from_json("k", &json!([1, 2.5])).is_ok());
        for v in [
            json!("s"),
            json!(-3),
            json!(2.5),
            json!(true),
            json!(["a", "b"]),
            json!([1, 2]),
            json!({"#type": "sparse_vector", "indices": [], "values": []}),
            json!({"#type": "sparse_vector", "indices": [3], "values": [-1.5], "tokens": ["x"]}),
        ] {
            assert_eq!(
                MetaValue::from_json("k", &v).unwrap().to_json(),
                v,
                "round trip"
            );
        }
        let m = metadata_from_json(&json!({"a": 1, "b": null}), true).unwrap();
        assert_eq!(m["b"], None);
        assert!(metadata_from_json(&json!({"b": null}), false).is_err());
        assert!(metadata_from_json(&json!([1]), false).is_err());
    }
}
