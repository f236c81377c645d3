//! Collection configuration in Chroma's shape: `{"hnsw": {"space", "ef_construction",
//! "ef_search", "max_neighbors", …}}`, plus the legacy `hnsw:*` metadata keys.

use indigo_index::Space;
use serde_json::{json, Value};

use crate::Error;

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionConfig {
    pub space: Space,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub max_neighbors: usize,
    /// Accepted and reported for compatibility; Indigo's index grows by itself
    /// and its log is folded in the background, so neither changes behaviour.
    pub resize_factor: f64,
    pub sync_threshold: usize,
    /// The client's embedding function description, kept and returned as given
    /// (clients rebuild the function from it).
    pub embedding_function: Option<Value>,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        CollectionConfig {
            space: Space::L2,
            ef_construction: 100,
            ef_search: 100,
            max_neighbors: 16,
            resize_factor: 1.2,
            sync_threshold: 1000,
            embedding_function: None,
        }
    }
}

fn positive(v: &Value, what: &str) -> Result<usize, Error> {
    match v.as_u64() {
        Some(n) if n > 0 && n <= 1 << 20 => Ok(n as usize),
        _ => Err(Error::InvalidArgument(format!(
            "{what} must be a positive integer, got {v}"
        ))),
    }
}

fn space(v: &Value) -> Result<Space, Error> {
    v.as_str().and_then(Space::parse).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "space must be one of \"l2\", \"cosine\", \"ip\", got {v}"
        ))
    })
}

impl CollectionConfig {
    /// The configuration a collection is created with: defaults, then legacy
    /// `hnsw:*` metadata keys, then the `configuration` object.
    pub fn from_create(
        configuration: Option<&Value>,
        metadata: Option<&Value>,
    ) -> Result<Self, Error> {
        let mut c = CollectionConfig::default();
        if let Some(Value::Object(m)) = metadata {
            for (k, v) in m {
                match k.as_str() {
                    "hnsw:space" => c.space = space(v)?,
                    "hnsw:construction_ef" => c.ef_construction = positive(v, k)?,
                    "hnsw:search_ef" => c.ef_search = positive(v, k)?,
                    "hnsw:M" => c.max_neighbors = positive(v, k)?,
                    "hnsw:sync_threshold" => c.sync_threshold = positive(v, k)?,
                    "hnsw:resize_factor" => {
                        c.resize_factor = v.as_f64().filter(|f| *f > 0.0).ok_or_else(|| {
                            Error::InvalidArgument(format!("{k} must be a positive number"))
                        })?
                    }
                    "hnsw:num_threads" | "hnsw:batch_size" => {
                        positive(v, k)?;
                    }
                    k if k.starts_with("hnsw:") => {
                        return Err(Error::InvalidArgument(format!("unknown metadata key {k}")))
                    }
                    _ => {}
                }
            }
        }
        if let Some(cfg) = configuration {
            c.apply(cfg, true)?;
        }
        Ok(c)
    }

    /// Applies a configuration object; after creation only search-time settings
    /// may change.
    pub fn apply(&mut self, cfg: &Value, creating: bool) -> Result<(), Error> {
        let hnsw = match cfg {
            Value::Null => return Ok(()),
            Value::Object(m) => m.get("hnsw"),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "configuration must be an object, got {cfg}"
                )))
            }
        };
        if let Value::Object(m) = cfg {
            if let Some(ef) = m.get("embedding_function") {
                if !ef.is_null() {
                    self.embedding_function = Some(ef.clone());
                }
            }
            if let Some(s) = m.get("spann").filter(|s| !s.is_null()) {
                // Chroma's single node serves a spann configuration with its HNSW
                // index, keeping only the space; so does Indigo (one node or many).
                let Value::Object(sp) = s else {
                    return Err(Error::InvalidArgument(format!(
                        "spann must be an object, got {s}"
                    )));
                };
                if !creating {
                    return Err(Error::InvalidArgument(
                        "a collection's index type is fixed when it is created; spann \
                         settings cannot be changed (Indigo serves spann with HNSW)"
                            .into(),
                    ));
                }
                if m.get("hnsw").is_some_and(|h| !h.is_null()) {
                    return Err(Error::InvalidArgument(
                        "configure either hnsw or spann, not both".into(),
                    ));
                }
                if let Some(v) = sp.get("space").filter(|v| !v.is_null()) {
                    self.space = space(v)?;
                }
            }
        }
        let Some(hnsw) = hnsw else { return Ok(()) };
        let Value::Object(h) = hnsw else {
            if hnsw.is_null() {
                return Ok(());
            }
            return Err(Error::InvalidArgument(format!(
                "hnsw must be an object, got {hnsw}"
            )));
        };
        for (k, v) in h {
            if v.is_null() {
                continue;
            }
            let fixed = |k: &str| {
                Err(Error::InvalidArgument(format!(
                    "hnsw.{k} is fixed when the collection is created"
                )))
            };
            match k.as_str() {
                "ef_search" => self.ef_search = positive(v, "hnsw.ef_search")?,
                "space" if creating => self.space = space(v)?,
                "ef_construction" if creating => self.ef_construction = positive(v, k)?,
                "max_neighbors" if creating => self.max_neighbors = positive(v, k)?,
                "space" | "ef_construction" | "max_neighbors" => return fixed(k),
                "resize_factor" => {
                    self.resize_factor = v.as_f64().filter(|f| *f > 0.0).ok_or_else(|| {
                        Error::InvalidArgument(
                            "hnsw.resize_factor must be a positive number".into(),
                        )
                    })?
                }
                "sync_threshold" => self.sync_threshold = positive(v, "hnsw.sync_threshold")?,
                "num_threads" | "batch_size" => {
                    positive(v, k)?;
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown hnsw configuration key {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "hnsw": {
                "space": self.space.name(),
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
                "max_neighbors": self.max_neighbors,
                "resize_factor": self.resize_factor,
                "sync_threshold": self.sync_threshold,
            },
            "spann": null,
            "embedding_function": self.embedding_function,
        })
    }

    /// Refuses HNSW parameters beyond `limits` (they size every node's links and
    /// every search's queues, on the compactor thread and again at each restart).
    pub fn check_limits(&self, limits: &indigo_types::Limits) -> Result<(), Error> {
        if self.max_neighbors > limits.max_hnsw_neighbors {
            return Err(Error::InvalidArgument(format!(
                "hnsw max_neighbors of {} is more than the {} this server allows",
                self.max_neighbors, limits.max_hnsw_neighbors
            )));
        }
        for (name, v) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if v > limits.max_hnsw_ef {
                return Err(Error::InvalidArgument(format!(
                    "hnsw {name} of {v} is more than the {} this server allows",
                    limits.max_hnsw_ef
                )));
            }
        }
        Ok(())
    }

    /// Reads back what [`CollectionConfig::to_json`] stored.
    pub fn from_stored(v: &Value) -> Result<Self, Error> {
        let mut c = CollectionConfig::default();
        c.apply(v, true)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_keys_then_configuration() {
        let c = CollectionConfig::from_create(
            Some(&json!({"hnsw": {"ef_search": 50}})),
            Some(&json!({"hnsw:space": "cosine", "hnsw:M": 8, "x": 1})),
        )
        .unwrap();
        assert_eq!(c.space, Space::Cosine);
        assert_eq!(c.max_neighbors, 8);
        assert_eq!(c.ef_search, 50);
        assert_eq!(CollectionConfig::from_stored(&c.to_json()).unwrap(), c);
        assert!(
            CollectionConfig::from_create(None, Some(&json!({"hnsw:space": "manhattan"}))).is_err()
        );
        let mut c2 = c.clone();
        assert!(c2.apply(&json!({"hnsw": {"space": "l2"}}), false).is_err());
        c2.apply(&json!({"hnsw": {"ef_search": 200}}), false)
            .unwrap();
        assert_eq!(c2.ef_search, 200);
    }
}
