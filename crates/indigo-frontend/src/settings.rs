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
}

impl Default for Settings {
    fn default() -> Self {
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
        }
    }
}

impl Settings {
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
            match name.to_ascii_lowercase().as_str() {
                "path" => s.path = PathBuf::from(&v),
                "host" => s.host = v.clone(),
                "port" => s.port = v.parse().map_err(|_| bad("a port number"))?,
                "allow_reset" => s.allow_reset = flag(&v)?,
                "max_batch_size" => s.max_batch_size = v.parse().map_err(|_| bad("a number"))?,
                "max_payload_bytes" => {
                    s.max_payload_bytes = v.parse().map_err(|_| bad("a number"))?
                }
                "max_collections_per_database" => {
                    s.max_collections_per_database = v.parse().map_err(|_| bad("a number"))?
                }
                "max_records_per_collection" => {
                    s.max_records_per_collection = v.parse().map_err(|_| bad("a number"))?
                }
                "rate_limit_per_second" => {
                    s.rate_limit_per_second = v.parse().map_err(|_| bad("a number"))?
                }
                "rate_limit_burst" => {
                    s.rate_limit_burst = v.parse().map_err(|_| bad("a number"))?
                }
                // Variables for other tools (RUST_LOG-style) are not ours to judge.
                _ => {}
            }
        }
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
