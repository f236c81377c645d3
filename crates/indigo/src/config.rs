//! Collection configuration in Chroma's shape: `{"hnsw": {"space", "ef_construction",
//! "ef_search", "max_neighbors", …}}`, plus the legacy `hnsw:*` metadata keys, and
//! the collection's schema (see [`crate::schema`]), stored beside them.

use indigo_index::Space;
use serde_json::{json, Value};

use crate::schema::{self, VectorIndexKind};
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
    /// The collection's schema, reconciled with the configuration when it was
    /// created (`None` for collections made before Indigo kept schemas: theirs
    /// follows from the configuration, see [`CollectionConfig::schema`]).
    pub schema: Option<Value>,
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
            schema: None,
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
    /// `hnsw:*` metadata keys, then the `configuration` object; then the schema
    /// (the configuration's `schema` member, Chroma's schema JSON) is reconciled
    /// with it as Chroma's server does, and the index settings are read back
    /// from the result. `kind` is the vector index reported when neither names
    /// one.
    pub fn from_create(
        configuration: Option<&Value>,
        metadata: Option<&Value>,
        kind: VectorIndexKind,
    ) -> Result<Self, Error> {
        let mut c = CollectionConfig::default();
        let mut legacy = false;
        if let Some(Value::Object(m)) = metadata {
            for (k, v) in m {
                legacy |= k.starts_with("hnsw:");
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
        let member = |k: &str| {
            configuration
                .and_then(|c| c.get(k))
                .filter(|v| !v.is_null())
        };
        let user_schema = member("schema");
        if let Some(s) = user_schema {
            crate::rules::check_collection_schema(s)?;
        }
        // The vector index the configuration names, as Chroma reads it. A node
        // that reports HNSW serves a spann configuration as HNSW (keeping its
        // space), as Chroma's single node does.
        let spann = member("spann").filter(|_| kind == VectorIndexKind::Spann);
        let (ckind, params) = if legacy || member("hnsw").is_some() || spann.is_none() {
            (VectorIndexKind::Hnsw, c.hnsw_params())
        } else {
            let mut sp = spann.cloned().unwrap_or_default();
            if let Value::Object(m) = &mut sp {
                m.remove("space");
            }
            let sp = schema::fields_over(&schema::spann_defaults(), &sp);
            schema::check_spann(&sp)?;
            (VectorIndexKind::Spann, sp)
        };
        let config_default = schema::is_default_ef(c.embedding_function.as_ref())
            && c.space == Space::L2
            && match ckind {
                VectorIndexKind::Hnsw => {
                    let d = CollectionConfig::default();
                    (
                        c.ef_construction,
                        c.ef_search,
                        c.max_neighbors,
                        c.sync_threshold,
                    ) == (
                        d.ef_construction,
                        d.ef_search,
                        d.max_neighbors,
                        d.sync_threshold,
                    ) && (c.resize_factor - d.resize_factor).abs() < 1e-9
                }
                VectorIndexKind::Spann => {
                    schema::params_default(&params, &schema::spann_defaults(), false)
                }
            };
        let s = schema::reconcile(
            user_schema,
            kind,
            Some((
                ckind,
                c.space.name(),
                &params,
                c.embedding_function.as_ref(),
            )),
            config_default,
        )?;
        c.adopt(&s)?;
        c.schema = Some(s);
        Ok(c)
    }

    /// The HNSW parameters in the schema's shape.
    fn hnsw_params(&self) -> Value {
        let mut h = schema::hnsw_defaults();
        h["ef_construction"] = json!(self.ef_construction);
        h["max_neighbors"] = json!(self.max_neighbors);
        h["ef_search"] = json!(self.ef_search);
        h["sync_threshold"] = json!(self.sync_threshold);
        h["resize_factor"] = json!(self.resize_factor);
        h
    }

    /// Takes the space, embedding function and HNSW parameters of the schema's
    /// `#embedding` index.
    fn adopt(&mut self, s: &Value) -> Result<(), Error> {
        let e = schema::embedding_index(s);
        if !e["space"].is_null() {
            self.space = space(&e["space"])?;
        }
        if let Some(ef) = e.get("embedding_function").filter(|v| !v.is_null()) {
            self.embedding_function = Some(ef.clone());
        }
        if let Value::Object(h) = &e["hnsw"] {
            let get = |k: &str| h.get(k).filter(|v| !v.is_null());
            if let Some(v) = get("ef_construction") {
                self.ef_construction = positive(v, "hnsw.ef_construction")?;
            }
            if let Some(v) = get("max_neighbors") {
                self.max_neighbors = positive(v, "hnsw.max_neighbors")?;
            }
            if let Some(v) = get("ef_search") {
                self.ef_search = positive(v, "hnsw.ef_search")?;
            }
            if let Some(v) = get("sync_threshold") {
                self.sync_threshold = positive(v, "hnsw.sync_threshold")?;
            }
            if let Some(v) = get("resize_factor") {
                self.resize_factor = v.as_f64().filter(|f| *f > 0.0).ok_or_else(|| {
                    Error::InvalidArgument("hnsw.resize_factor must be a positive number".into())
                })?;
            }
        }
        Ok(())
    }

    /// The collection's schema: as stored, or (for a collection made before
    /// Indigo kept schemas) the one its configuration describes.
    pub fn schema(&self) -> Value {
        match &self.schema {
            Some(s) => s.clone(),
            None => schema::from_configuration(
                VectorIndexKind::Hnsw,
                self.space.name(),
                &self.hnsw_params(),
                self.embedding_function.as_ref(),
            ),
        }
    }

    /// How the collection's segment indexes (`exact`: scan instead of HNSW).
    pub fn index_config(&self, exact: bool) -> indigo_segment::IndexConfig {
        indigo_segment::IndexConfig {
            space: self.space,
            max_neighbors: self.max_neighbors,
            ef_construction: self.ef_construction,
            ef_search: self.ef_search,
            exact,
            unindexed: self
                .schema
                .as_ref()
                .map(schema::unindexed)
                .unwrap_or_default(),
            sparse: self
                .schema
                .as_ref()
                .map(schema::sparse_keys)
                .unwrap_or_default(),
        }
    }

    /// The SPANN parameters the collection reports, if its index is reported as
    /// SPANN.
    fn spann(&self) -> Option<&Value> {
        let s = self.schema.as_ref()?;
        Some(&schema::embedding_index(s)["spann"]).filter(|v| v.is_object())
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
                    if let Some(s) = self.schema.as_mut().filter(|_| !creating) {
                        schema::set_embedding_function(s, ef);
                    }
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
                if !creating && self.spann().is_some() {
                    // Chroma lets these two change; both are search-time settings.
                    for (k, v) in sp {
                        if v.is_null() {
                            continue;
                        }
                        if k != "search_nprobe" && k != "ef_search" {
                            return Err(Error::InvalidArgument(format!(
                                "spann.{k} is fixed when the collection is created (only \
                                 search_nprobe and ef_search can change)"
                            )));
                        }
                        schema::check_spann(&json!({ k.as_str(): v }))?;
                        if let Some(s) = self.schema.as_mut() {
                            schema::set_vector_param(s, "spann", k, v.clone());
                        }
                    }
                    return Ok(());
                }
                if !creating {
                    return Err(Error::InvalidArgument(
                        "a collection's index type is fixed when it is created; this one's \
                         is hnsw, so spann settings cannot be changed"
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
        if !creating && self.spann().is_some() && hnsw.is_some_and(|h| !h.is_null()) {
            // What is stored for it is spann's settings: an hnsw one would be lost.
            return Err(Error::InvalidArgument(
                "a collection's index type is fixed when it is created; this one's is spann, \
                 so hnsw settings cannot be changed (change spann's search_nprobe or ef_search)"
                    .into(),
            ));
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
            if !creating {
                if let Some(s) = self.schema.as_mut() {
                    schema::set_vector_param(s, "hnsw", k, v.clone());
                }
            }
        }
        Ok(())
    }

    /// What is stored: the configuration and the schema.
    pub fn to_json(&self) -> Value {
        let mut v = self.configuration_json();
        if let Some(s) = &self.schema {
            v["schema"] = s.clone();
        }
        v
    }

    /// The configuration as Chroma's clients read it (`configuration_json`).
    pub fn configuration_json(&self) -> Value {
        if let Some(sp) = self.spann() {
            let mut sp = sp.clone();
            sp["space"] = json!(self.space.name());
            return json!({
                "hnsw": null,
                "spann": sp,
                "embedding_function": self.embedding_function,
            });
        }
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
        c.schema = v.get("schema").filter(|s| s.is_object()).cloned();
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
            VectorIndexKind::Hnsw,
        )
        .unwrap();
        assert_eq!(c.space, Space::Cosine);
        assert_eq!(c.max_neighbors, 8);
        assert_eq!(c.ef_search, 50);
        assert_eq!(CollectionConfig::from_stored(&c.to_json()).unwrap(), c);
        assert!(CollectionConfig::from_create(
            None,
            Some(&json!({"hnsw:space": "manhattan"})),
            VectorIndexKind::Hnsw
        )
        .is_err());
        let mut c2 = c.clone();
        assert!(c2.apply(&json!({"hnsw": {"space": "l2"}}), false).is_err());
        c2.apply(&json!({"hnsw": {"ef_search": 200}}), false)
            .unwrap();
        assert_eq!(c2.ef_search, 200);
    }
}
