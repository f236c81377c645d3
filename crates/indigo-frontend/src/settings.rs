//! Server settings: defaults, then a YAML or TOML file, then `INDIGO_*` variables
//! of the same names (e.g. `allow_reset: true` / `INDIGO_ALLOW_RESET=true`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The data directory.
    pub path: PathBuf,
    pub host: String,
    pub port: u16,
    /// Whether `POST /api/v2/reset` may delete everything.
    pub allow_reset: bool,
    /// Records per write request.
    pub max_batch_size: usize,
    /// Bytes per request body.
    pub max_payload_bytes: usize,
    /// Collections per database (0: no limit).
    pub max_collections_per_database: u64,
    /// Records per collection (0: no limit).
    pub max_records_per_collection: u64,
    /// Static tokens; none means no authentication.
    pub tokens: Vec<TokenGrant>,
    /// Requests per second per token (or per client without auth); 0: no limit.
    pub rate_limit_per_second: f64,
    /// Requests a token may burst above the rate.
    pub rate_limit_burst: f64,
    /// Failed authentications per minute per client address before it gets 429s.
    pub auth_failures_per_minute: f64,
    /// A request taking longer is answered 503 (work already handed to the core
    /// may still finish).
    pub request_timeout_secs: u64,
    /// Requests served at once; more are answered 503 at once.
    pub max_requests_in_flight: usize,
    /// Embedding dimension.
    pub max_dimension: usize,
    /// HNSW `max_neighbors` (`hnsw:M`).
    pub max_hnsw_neighbors: usize,
    /// HNSW `ef_construction` and `ef_search`.
    pub max_hnsw_ef: usize,
    /// Results per query (`n_results`, a search's `limit`).
    pub max_n_results: usize,
    /// Query embeddings per query request.
    pub max_query_embeddings: usize,
    /// Ids per get or delete.
    pub max_ids: usize,
    /// Searches per search request.
    pub max_searches: usize,
    /// Values in one `$in`/`$nin` (and parts of one `$and`/`$or`).
    pub max_filter_values: usize,
    /// Conditions in one filter.
    pub max_filter_conditions: usize,
    /// `$regex`/`$not_regex` conditions in one filter.
    pub max_regexes: usize,
    /// Compiled size of one regular expression, bytes.
    pub max_regex_bytes: usize,
    /// Record operations of a collection that may wait to be indexed before
    /// writes to it wait (backpressure: ingest then runs at indexing speed, and
    /// queries scan at most this many unindexed records).
    pub max_unindexed_records: u64,
    /// Bytes of a collection's log that may wait to be indexed before writes wait.
    pub max_unindexed_bytes: u64,
    /// How long a write waits for indexing to make room before it is answered
    /// 429 (only when indexing makes no headway meanwhile).
    pub backlog_wait_secs: u64,
    /// Memory open collections may hold (HNSW graphs, memtables) before idle ones
    /// are hibernated (0: a quarter of the machine's memory).
    pub collections_memory_bytes: u64,
    /// How long a collection must go unused before it may be hibernated.
    pub hibernate_idle_secs: u64,
    /// Where `POST /api/v2/admin/backup` writes backups (none: the route is off).
    pub backup_dir: Option<PathBuf>,
    /// The vector index new collections report when they name none: `hnsw`
    /// (Chroma's single node) or `spann` (Chroma's distributed mode). Indigo
    /// builds HNSW either way; spann settings are kept and reported.
    pub default_index: String,
    /// The distributed mode (`indigo serve`).
    pub cluster: ClusterSettings,
}

/// How a process of the distributed mode runs (`indigo serve`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// What this process does: any of `frontend`, `log`, `query`, `compactor`, `gc`.
    pub roles: Vec<String>,
    /// The catalogue: a PostgreSQL connection (`host=… port=… user=… dbname=…` or
    /// a `postgres://` URL).
    pub catalogue: String,
    /// The S3-compatible store (credentials from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`); no endpoint means AWS.
    pub s3_endpoint: Option<String>,
    pub s3_bucket: String,
    pub s3_region: Option<String>,
    /// Every object of this deployment lives under this prefix.
    pub s3_prefix: String,
    /// Query nodes cache index versions here (local SSD)...
    pub cache_dir: PathBuf,
    /// ...up to this many bytes, least recently used out first.
    pub cache_bytes: u64,
    /// Compactors keep their working copies here.
    pub work_dir: PathBuf,
    /// The address others reach this process at (default: where it listens).
    pub advertise: Option<String>,
    /// A member's lease; it drops out of routing this long after it stops.
    pub lease_ms: u64,
    /// How often compactors look for work.
    pub compact_interval_ms: u64,
    /// How often the garbage collector runs, and what it keeps.
    pub gc_interval_ms: u64,
    pub gc_keep_versions: usize,
    pub gc_keep_window_secs: u64,
    /// Unreferenced objects younger than this are left alone.
    pub gc_grace_secs: u64,
    /// Truncated log fragments stay readable this long.
    pub log_grace_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            roles: Vec::new(),
            catalogue: String::new(),
            s3_endpoint: None,
            s3_bucket: String::new(),
            s3_region: None,
            s3_prefix: "indigo".into(),
            cache_dir: PathBuf::from("./indigo_cache"),
            cache_bytes: 8 << 30,
            work_dir: PathBuf::from("./indigo_work"),
            advertise: None,
            lease_ms: 3000,
            compact_interval_ms: 500,
            gc_interval_ms: 60_000,
            gc_keep_versions: 2,
            gc_keep_window_secs: 600,
            gc_grace_secs: 600,
            log_grace_secs: 300,
        }
    }
}

/// What one token may reach.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenGrant {
    pub token: String,
    pub tenant: String,
    /// Databases of the tenant it may use; empty: all of them.
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub user_id: String,
    /// Whether it may use the server-wide admin routes (backups).
    #[serde(default)]
    pub admin: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let l = indigo::Limits::default();
        let b = indigo::BacklogLimit::default();
        Settings {
            path: PathBuf::from("./indigo_data"),
            host: "127.0.0.1".into(),
            port: 8000,
            allow_reset: false,
            max_batch_size: 100_000,
            max_payload_bytes: 512 << 20,
            max_collections_per_database: 0,
            max_records_per_collection: 0,
            tokens: Vec::new(),
            rate_limit_per_second: 0.0,
            rate_limit_burst: 100.0,
            auth_failures_per_minute: 30.0,
            request_timeout_secs: 300,
            max_requests_in_flight: 1024,
            max_dimension: l.max_dimension,
            max_hnsw_neighbors: l.max_hnsw_neighbors,
            max_hnsw_ef: l.max_hnsw_ef,
            max_n_results: l.max_n_results,
            max_query_embeddings: l.max_query_embeddings,
            max_ids: l.max_ids,
            max_searches: l.max_searches,
            max_filter_values: l.filter.max_values,
            max_filter_conditions: l.filter.max_conditions,
            max_regexes: l.filter.max_regexes,
            max_regex_bytes: l.filter.max_regex_bytes,
            max_unindexed_records: b.records,
            max_unindexed_bytes: b.bytes,
            backlog_wait_secs: b.wait.as_secs(),
            collections_memory_bytes: 0,
            hibernate_idle_secs: 30,
            backup_dir: None,
            default_index: "hnsw".into(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl Settings {
    /// The bound on each collection's unindexed log.
    pub fn backlog(&self) -> indigo::BacklogLimit {
        indigo::BacklogLimit {
            records: self.max_unindexed_records.max(1),
            bytes: self.max_unindexed_bytes.max(1),
            wait: std::time::Duration::from_secs(self.backlog_wait_secs.max(1)),
        }
    }

    /// The memory budget of open collections.
    pub fn memory(&self) -> indigo::MemoryBudget {
        let d = indigo::MemoryBudget::default();
        indigo::MemoryBudget {
            bytes: if self.collections_memory_bytes == 0 {
                d.bytes
            } else {
                self.collections_memory_bytes
            },
            // At least a second: 0 would hibernate collections in use, and every
            // read would load the index again.
            idle: std::time::Duration::from_secs(self.hibernate_idle_secs.max(1)),
        }
    }

    /// The per-request bounds the core and the gateway enforce.
    pub fn limits(&self) -> indigo::Limits {
        indigo::Limits {
            max_dimension: self.max_dimension,
            max_hnsw_neighbors: self.max_hnsw_neighbors,
            max_hnsw_ef: self.max_hnsw_ef,
            max_n_results: self.max_n_results,
            max_query_embeddings: self.max_query_embeddings,
            max_ids: self.max_ids,
            max_searches: self.max_searches,
            filter: indigo::FilterLimits {
                max_values: self.max_filter_values,
                max_conditions: self.max_filter_conditions,
                max_regexes: self.max_regexes,
                max_regex_bytes: self.max_regex_bytes,
            },
        }
    }

    /// The parsed `default_index`.
    pub fn default_index(&self) -> Result<indigo::schema::VectorIndexKind, String> {
        indigo::schema::VectorIndexKind::parse(&self.default_index).ok_or_else(|| {
            format!(
                "default_index {:?}: expected hnsw or spann",
                self.default_index
            )
        })
    }

    /// Loads `file` (YAML if it ends in .yaml/.yml, else TOML) over the defaults,
    /// then applies `INDIGO_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Settings, String> {
        let mut s = match file {
            None => Settings::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
                let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
                if yaml {
                    serde_yaml::from_str(&text)
                        .map_err(|e| format!("config file {}: {e}", p.display()))?
                } else {
                    toml::from_str(&text)
                        .map_err(|e| format!("config file {}: {e}", p.display()))?
                }
            }
        };
        for (k, v) in env {
            let Some(name) = k.strip_prefix("INDIGO_") else {
                continue;
            };
            let bad = |what: &str| format!("{k}={v:?}: expected {what}");
            let flag = |v: &str| match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(bad("true or false")),
            };
            let num = |v: &str| v.parse::<usize>().map_err(|_| bad("a whole number"));
            let real = |v: &str| v.parse::<f64>().map_err(|_| bad("a number"));
            match name.to_ascii_lowercase().as_str() {
                "path" => s.path = PathBuf::from(&v),
                "host" => s.host = v.clone(),
                "port" => s.port = v.parse().map_err(|_| bad("a port number"))?,
                "allow_reset" => s.allow_reset = flag(&v)?,
                "max_batch_size" => s.max_batch_size = num(&v)?,
                "max_payload_bytes" => s.max_payload_bytes = num(&v)?,
                "max_collections_per_database" => s.max_collections_per_database = num(&v)? as u64,
                "max_records_per_collection" => s.max_records_per_collection = num(&v)? as u64,
                "rate_limit_per_second" => s.rate_limit_per_second = real(&v)?,
                "rate_limit_burst" => s.rate_limit_burst = real(&v)?,
                "auth_failures_per_minute" => s.auth_failures_per_minute = real(&v)?,
                "request_timeout_secs" => s.request_timeout_secs = num(&v)? as u64,
                "max_requests_in_flight" => s.max_requests_in_flight = num(&v)?,
                "max_dimension" => s.max_dimension = num(&v)?,
                "max_hnsw_neighbors" => s.max_hnsw_neighbors = num(&v)?,
                "max_hnsw_ef" => s.max_hnsw_ef = num(&v)?,
                "max_n_results" => s.max_n_results = num(&v)?,
                "max_query_embeddings" => s.max_query_embeddings = num(&v)?,
                "max_ids" => s.max_ids = num(&v)?,
                "max_searches" => s.max_searches = num(&v)?,
                "max_filter_values" => s.max_filter_values = num(&v)?,
                "max_filter_conditions" => s.max_filter_conditions = num(&v)?,
                "max_regexes" => s.max_regexes = num(&v)?,
                "max_regex_bytes" => s.max_regex_bytes = num(&v)?,
                "max_unindexed_records" => s.max_unindexed_records = num(&v)? as u64,
                "max_unindexed_bytes" => s.max_unindexed_bytes = num(&v)? as u64,
                "backlog_wait_secs" => s.backlog_wait_secs = num(&v)? as u64,
                "collections_memory_bytes" => s.collections_memory_bytes = num(&v)? as u64,
                "hibernate_idle_secs" => s.hibernate_idle_secs = num(&v)? as u64,
                "backup_dir" => s.backup_dir = Some(PathBuf::from(&v)),
                "default_index" => s.default_index = v.clone(),
                "roles" => {
                    s.cluster.roles = v
                        .split(',')
                        .map(|r| r.trim().to_string())
                        .filter(|r| !r.is_empty())
                        .collect()
                }
                "catalogue" => s.cluster.catalogue = v.clone(),
                "s3_endpoint" => s.cluster.s3_endpoint = Some(v.clone()),
                "s3_bucket" => s.cluster.s3_bucket = v.clone(),
                "s3_region" => s.cluster.s3_region = Some(v.clone()),
                "s3_prefix" => s.cluster.s3_prefix = v.clone(),
                "cache_dir" => s.cluster.cache_dir = PathBuf::from(&v),
                "cache_bytes" => s.cluster.cache_bytes = num(&v)? as u64,
                "work_dir" => s.cluster.work_dir = PathBuf::from(&v),
                "advertise" => s.cluster.advertise = Some(v.clone()),
                "lease_ms" => s.cluster.lease_ms = num(&v)? as u64,
                "compact_interval_ms" => s.cluster.compact_interval_ms = num(&v)? as u64,
                "gc_interval_ms" => s.cluster.gc_interval_ms = num(&v)? as u64,
                "gc_keep_versions" => s.cluster.gc_keep_versions = num(&v)?,
                "gc_keep_window_secs" => s.cluster.gc_keep_window_secs = num(&v)? as u64,
                "gc_grace_secs" => s.cluster.gc_grace_secs = num(&v)? as u64,
                "log_grace_secs" => s.cluster.log_grace_secs = num(&v)? as u64,
                // Variables for other tools (RUST_LOG-style) are not ours to judge.
                _ => {}
            }
        }
        s.default_index()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("c.toml");
        std::fs::write(
            &toml_path,
            "allow_reset = true\nport = 9000\n[[tokens]]\ntoken = \"t1\"\ntenant = \"acme\"\n",
        )
        .unwrap();
        let env = vec![("INDIGO_PORT".to_string(), "9100".to_string())];
        let s = Settings::load(Some(&toml_path), env.into_iter()).unwrap();
        assert!(s.allow_reset);
        assert_eq!(s.port, 9100);
        assert_eq!(s.tokens[0].tenant, "acme");
        let yaml_path = dir.path().join("c.yaml");
        std::fs::write(&yaml_path, "allow_reset: true\nmax_batch_size: 10\n").unwrap();
        let env = vec![("INDIGO_ALLOW_RESET".to_string(), "false".to_string())];
        let s = Settings::load(Some(&yaml_path), env.into_iter()).unwrap();
        assert!(!s.allow_reset);
        assert_eq!(s.max_batch_size, 10);
        std::fs::write(&yaml_path, "allow_rest: true\n").unwrap();
        assert!(Settings::load(Some(&yaml_path), std::iter::empty()).is_err());
        let env = vec![("INDIGO_PORT".to_string(), "x".to_string())];
        assert!(Settings::load(None, env.into_iter())
            .unwrap_err()
            .contains("INDIGO_PORT"));
    }
}
