//! Metadata values: string, int (i64), float (f64), bool, and non-empty lists of one
//! of those, as Chroma accepts them.

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

/// A metadata value: a scalar or a non-empty list of scalars of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Scalar(Scalar),
    List(Vec<Scalar>),
}

pub type Metadata = BTreeMap<String, MetaValue>;

impl MetaValue {
    pub fn from_json(key: &str, v: &Value) -> Result<MetaValue, InvalidArgument> {
        if let Some(s) = Scalar::from_json(v) {
            return Ok(MetaValue::Scalar(s));
        }
        match v {
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
                    return invalid(format!("metadata {key:?}: list items must all have one type"));
                }
                Ok(MetaValue::List(list))
            }
            Value::Number(_) => invalid(format!("metadata {key:?}: numbers must be finite")),
            _ => invalid(format!(
                "metadata {key:?}: expected a string, number, bool or a list of one of those, got {v}"
            )),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            MetaValue::Scalar(s) => s.to_json(),
            MetaValue::List(l) => Value::Array(l.iter().map(Scalar::to_json).collect()),
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
        assert!(MetaValue::from_json("k", &json!(null)).is_err());
        assert!(MetaValue::from_json("k", &json!([1, 2.5])).is_ok());
        for v in [
            json!("s"),
            json!(-3),
            json!(2.5),
            json!(true),
            json!(["a", "b"]),
            json!([1, 2]),
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
