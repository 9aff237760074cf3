//! Loading the config: file (YAML or JSON), `ROLLCALL_*` env overrides, unknown keys, validation.
// PLACEHOLDER: to be replaced by the full implementation.

use std::path::Path;

use super::Config;

/// A loaded config and the warnings (unknown keys) found while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Why a config cannot be used; every message names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Loads a config file with env overrides from `env`.
pub fn load_file(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    strict: bool,
) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, env, strict)
}

/// Loads a config from text (YAML, of which JSON is a subset) with env overrides from `env`.
pub fn load_str(
    text: &str,
    _env: impl IntoIterator<Item = (String, String)>,
    _strict: bool,
) -> Result<Loaded, ConfigError> {
    let config: Config =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(Loaded {
        config,
        warnings: Vec::new(),
    })
}
