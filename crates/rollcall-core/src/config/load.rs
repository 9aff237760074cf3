//! Loading the config: file (YAML or JSON), `ROLLCALL_*` env overrides, unknown keys, validation.
//!
//! The pipeline is text → JSON tree → env overrides applied to the tree → typed [`Config`]
//! (unknown keys collected on the way) → [`Config::validate`]. Working on one tree lets every
//! error name a key path, and lets an error in an env-provided value name the variable too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Config, SubscriptionTokenConfig};
use crate::namespace::{NamespaceConfig, NamespaceOptions};

/// The prefix of every env override.
pub const ENV_PREFIX: &str = "ROLLCALL_";

/// A loaded config and the warnings (unknown keys) found while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Unknown config keys (`unknown config key "client.tokne"`) and unknown `ROLLCALL_*`
    /// variables, in a stable order. The caller logs them.
    pub warnings: Vec<String>,
}

/// Why a config cannot be used; every message names the key, variable or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable; the I/O error is the source.
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The text is not valid YAML or JSON (the message has line and column).
    #[error("config is not valid {format}: {message}")]
    Syntax {
        /// `"YAML"` or `"JSON"`.
        format: &'static str,
        message: String,
    },
    /// An env override cannot be used for its key.
    #[error("environment variable {var} (config key {key}): {reason}")]
    Env {
        var: String,
        key: String,
        reason: String,
    },
    /// A key has a wrong type or a value the rules refuse.
    #[error("config key {key}: {reason}")]
    Key { key: String, reason: String },
    /// Unknown keys, in strict mode.
    #[error("{} (unknown keys are errors in strict mode)", quote_keys(.0))]
    UnknownKeys(Vec<String>),
    /// Anything else wrong with the config as a whole.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

fn quote_keys(keys: &[String]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    match list.len() {
        1 => format!("unknown config key {}", list[0]),
        _ => format!("unknown config keys {}", list.join(", ")),
    }
}

/// Loads a config file with env overrides from `env`.
///
/// A missing or unreadable file is [`ConfigError::Read`] naming `path`; everything else is as
/// for [`load_str`].
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
///
/// `env` may hold any variables; only those starting with `ROLLCALL_` are read. Each is
/// `ROLLCALL_` + a key path upper-cased with `.` → `_` (`ROLLCALL_HTTP_API_KEY` →
/// `http_api.key`) and beats the file. Its text is coerced by the key's type: booleans
/// (`true`/`false`/`1`/`0`), integers, strings and durations as written, arrays as a JSON
/// array or a comma-separated list, sections as a JSON object. Unknown keys in the text are
/// warnings, or [`ConfigError::UnknownKeys`] when `strict`; unknown `ROLLCALL_*` variables are
/// always warnings. The result is validated ([`Config::validate`]).
pub fn load_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    strict: bool,
) -> Result<Loaded, ConfigError> {
    let mut tree = parse(text)?;
    let mut warnings = Vec::new();
    let overrides = apply_env(&mut tree, env, &mut warnings)?;
    let (config, unknown) = deserialize(tree, &overrides)?;
    if strict && !unknown.is_empty() {
        return Err(ConfigError::UnknownKeys(unknown));
    }
    config
        .validate()
        .map_err(|e| attribute_to_env(e, &overrides))?;
    let mut all: Vec<String> = unknown
        .iter()
        .map(|k| format!("unknown config key {k:?}"))
        .collect();
    all.append(&mut warnings);
    Ok(Loaded {
        config,
        warnings: all,
    })
}

/// Text → JSON tree. Text that starts with `{` is read as JSON (for JSON's error messages)
/// unless it is valid YAML flow style; empty text is an empty mapping.
fn parse(text: &str) -> Result<Value, ConfigError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    let tree = if trimmed.starts_with('{') {
        match serde_json::from_str(trimmed) {
            Ok(tree) => tree,
            Err(json) => parse_yaml(text).map_err(|_| ConfigError::Syntax {
                format: "JSON",
                message: json.to_string(),
            })?,
        }
    } else {
        parse_yaml(text)?
    };
    match tree {
        Value::Object(_) => Ok(tree),
        Value::Null => Ok(Value::Object(Map::new())),
        other => Err(ConfigError::Invalid(format!(
            "the config must be a mapping of keys, not {}",
            kind_name(&other)
        ))),
    }
}

fn parse_yaml(text: &str) -> Result<Value, ConfigError> {
    let syntax = |e: serde_yaml::Error| ConfigError::Syntax {
        format: "YAML",
        message: e.to_string(),
    };
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(syntax)?;
    yaml.apply_merge().map_err(syntax)?;
    serde_json::to_value(yaml).map_err(|e| ConfigError::Syntax {
        format: "YAML",
        message: format!("{e} (config keys must be strings)"),
    })
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// How an env value is read, from the JSON type of the key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    String,
    Array,
    Object,
}

/// A key an env variable can set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EnvKey {
    path: Vec<String>,
    kind: Kind,
}

impl EnvKey {
    fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// The default config with every optional field filled in, so that serializing it shows every
/// key (`channel_regex` is skipped when empty).
fn sample_config() -> Config {
    let mut config = Config::default();
    config.channel.without_namespace.channel_regex = "x".into();
    config
}

/// Env name → key, for every key path of the config (sections included). Key names contain
/// underscores, so the name cannot be split back into a path; it is looked up here instead.
fn env_table() -> BTreeMap<String, EnvKey> {
    fn walk(map: &Map<String, Value>, path: &mut Vec<String>, out: &mut BTreeMap<String, EnvKey>) {
        for (key, value) in map {
            path.push(key.clone());
            let kind = match value {
                Value::Bool(_) => Kind::Bool,
                Value::Number(_) => Kind::Integer,
                Value::String(_) | Value::Null => Kind::String,
                Value::Array(_) => Kind::Array,
                Value::Object(inner) => {
                    walk(inner, path, out);
                    Kind::Object
                }
            };
            let name = format!("{ENV_PREFIX}{}", path.join("_").to_ascii_uppercase());
            let key = EnvKey {
                path: path.clone(),
                kind,
            };
            if let Some(previous) = out.insert(name.clone(), key) {
                // Would make an env name ambiguous; `env_names_are_unique` guards this.
                debug_assert!(false, "{name} names two keys, one is {}", previous.dotted());
            }
            path.pop();
        }
    }
    let tree = serde_json::to_value(sample_config()).expect("Config serializes to JSON");
    let mut out = BTreeMap::new();
    if let Value::Object(map) = &tree {
        walk(map, &mut Vec::new(), &mut out);
    }
    out
}

/// Kubernetes injects `<SERVICE>_PORT…` and `<SERVICE>_SERVICE_…` variables for a Service
/// named `rollcall`; they are not meant for us and must not cause warnings.
fn is_kubernetes_service_link(name: &str, value: &str) -> bool {
    name.starts_with("ROLLCALL_SERVICE_")
        || name.starts_with("ROLLCALL_PORT_")
        || (name == "ROLLCALL_PORT" && value.contains("://"))
}

/// Applies `ROLLCALL_*` overrides to the tree, sections before the keys inside them so both
/// apply. Returns (dotted key path, variable) for each override applied.
fn apply_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let table = env_table();
    // Last one wins for a repeated name, as with a process environment.
    let vars: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    let mut found = Vec::new();
    for (name, raw) in vars {
        match table.get(&name) {
            Some(key) => found.push((key, name, raw)),
            None if is_kubernetes_service_link(&name, &raw) => {}
            None => warnings.push(format!(
                "unknown environment variable {name}: it matches no config key"
            )),
        }
    }
    found.sort_by_key(|(key, _, _)| key.path.len());
    let mut applied = Vec::with_capacity(found.len());
    for (key, var, raw) in found {
        let env_error = |reason: String| ConfigError::Env {
            var: var.clone(),
            key: key.dotted(),
            reason,
        };
        let value = coerce(key.kind, &raw).map_err(&env_error)?;
        set_path(tree, &key.path, value).map_err(&env_error)?;
        applied.push((key.dotted(), var));
    }
    Ok(applied)
}

/// Reads an env value as the key's type. Durations stay strings: `Dur` parses them, and an
/// error there still names the variable (see [`attribute_to_env`]).
fn coerce(kind: Kind, raw: &str) -> Result<Value, String> {
    let text = raw.trim();
    match kind {
        Kind::String => Ok(Value::String(raw.to_string())),
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Ok(Value::Bool(true)),
            "false" | "f" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Kind::Integer => {
            if let Ok(n) = text.parse::<u64>() {
                Ok(n.into())
            } else if let Ok(n) = text.parse::<i64>() {
                // Negative: the key's type refuses it with a precise message.
                Ok(n.into())
            } else {
                Err(format!("expected an integer, got {raw:?}"))
            }
        }
        Kind::Array if text.starts_with('[') => match serde_json::from_str(text) {
            Ok(v @ Value::Array(_)) => Ok(v),
            Ok(_) | Err(_) => Err(format!("expected a JSON array, got {raw:?}")),
        },
        Kind::Array => Ok(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        Kind::Object => match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) | Err(_) => Err(format!("expected a JSON object, got {raw:?}")),
        },
    }
}

/// Sets `path` in the tree, creating missing sections; a non-mapping on the way is an error.
fn set_path(tree: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut node = tree;
    for (depth, segment) in path.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(format!(
                "{} is {} in the config file, not a mapping",
                path[..depth].join("."),
                kind_name(node)
            ));
        };
        if depth + 1 == path.len() {
            map.insert(segment.clone(), value);
            return Ok(());
        }
        node = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// The tree → `Config`, with each unknown key's full path, sorted.
fn deserialize(
    tree: Value,
    overrides: &[(String, String)],
) -> Result<(Config, Vec<String>), ConfigError> {
    let mut unknown = unknown_in_flattened(&tree);
    let mut on_ignored = |path: serde_ignored::Path| unknown.push(ignored_path(&path));
    let result =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(tree, &mut on_ignored));
    let config: Config = result.map_err(|e| {
        let key = e.path().to_string();
        let reason = e.inner().to_string();
        if key == "." {
            ConfigError::Invalid(reason)
        } else {
            attribute_to_env(ConfigError::Key { key, reason }, overrides)
        }
    })?;
    let unknown: BTreeSet<String> = unknown.into_iter().collect();
    Ok((config, unknown.into_iter().collect()))
}

/// `a.b[0].c` for a path `serde_ignored` reports.
fn ignored_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => match ignored_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// The field names a type serializes to.
fn field_names<T: Serialize>(sample: &T) -> BTreeSet<String> {
    match serde_json::to_value(sample) {
        Ok(Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
        _ => BTreeSet::new(),
    }
}

/// Unknown keys inside `#[serde(flatten)]` structs, which serde drops without telling
/// `serde_ignored`: namespace entries and `client.subscription_token`.
fn unknown_in_flattened(tree: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |map: &Map<String, Value>, known: &BTreeSet<String>, at: &str| {
        for key in map.keys().filter(|k| !known.contains(*k)) {
            out.push(format!("{at}.{key}"));
        }
    };
    let namespace = NamespaceConfig {
        name: "x".into(),
        options: NamespaceOptions {
            channel_regex: "x".into(),
            ..NamespaceOptions::default()
        },
    };
    if let Some(Value::Array(entries)) = tree.pointer("/channel/namespaces") {
        let known = field_names(&namespace);
        for (i, entry) in entries.iter().enumerate() {
            if let Value::Object(map) = entry {
                check(map, &known, &format!("channel.namespaces[{i}]"));
            }
        }
    }
    if let Some(Value::Object(map)) = tree.pointer("/client/subscription_token") {
        let known = field_names(&SubscriptionTokenConfig::default());
        check(map, &known, "client.subscription_token");
    }
    out
}

/// Rewrites a key error as an env error when that key (or a section holding it) came from a
/// variable, so the message names the variable to fix.
fn attribute_to_env(err: ConfigError, overrides: &[(String, String)]) -> ConfigError {
    let ConfigError::Key { key, reason } = err else {
        return err;
    };
    let inside = |section: &str| {
        key == section
            || key
                .strip_prefix(section)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    let var = overrides
        .iter()
        .filter(|(path, _)| inside(path))
        .max_by_key(|(path, _)| path.len());
    match var {
        Some((path, var)) => ConfigError::Env {
            var: var.clone(),
            key: path.clone(),
            reason: if *path == key {
                reason
            } else {
                format!("{key}: {reason}")
            },
        },
        None => ConfigError::Key { key, reason },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{EngineKind, LogFormat};

    const MINIMAL: &str = "http_api: {key: k}\n";

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load_str(text, env(vars), false)
    }

    fn err(text: &str, vars: &[(&str, &str)]) -> String {
        load(text, vars).unwrap_err().to_string()
    }

    #[test]
    fn defaults_with_only_the_api_key() {
        let loaded = load(MINIMAL, &[]).unwrap();
        let mut want = Config::default();
        want.http_api.key = "k".into();
        assert_eq!(loaded.config, want);
        assert!(loaded.warnings.is_empty());
        assert_eq!(loaded.config.http_server.port, 8000);
        assert_eq!(
            loaded.config.client.ping_interval.0,
            Duration::from_secs(25)
        );
    }

    #[test]
    fn empty_text_is_the_defaults() {
        for text in ["", "   \n", "# only a comment\n", "{}", "null"] {
            let loaded = load(text, &[("ROLLCALL_HTTP_API_KEY", "k")]).unwrap();
            assert_eq!(loaded.config.http_server.port, 8000, "{text:?}");
        }
    }

    #[test]
    fn yaml_file() {
        let text = r#"
http_server: {address: "127.0.0.1", port: 9000}
http_api:
  key: "api-secret"
  error_mode: transport
client:
  token:
    hmac_secret_key: "token-secret"
    audience: app
  allowed_origins: ["https://*.example.com"]
  ping_interval: "10s"
  pong_timeout: 500ms
  queue_max_size: 4096
channel:
  without_namespace: {presence: true}
  namespaces:
    - name: chat
      presence: true
      join_leave: true
      channel_regex: "^[a-z0-9]+$"
engine:
  type: nats
  nats: {url: "nats://nats:4222", prefix: "rc", heartbeat_interval: 2s, node_timeout: 1m}
shutdown: {timeout: "1m30s"}
log: {level: debug, format: json}
"#;
        let c = load(text, &[]).unwrap().config;
        assert_eq!(c.http_server.address, "127.0.0.1");
        assert_eq!(c.http_server.port, 9000);
        assert_eq!(c.http_api.error_mode, "transport");
        assert_eq!(c.client.token.audience, "app");
        assert_eq!(c.client.allowed_origins, ["https://*.example.com"]);
        assert_eq!(c.client.pong_timeout.0, Duration::from_millis(500));
        assert_eq!(c.client.queue_max_size, 4096);
        assert!(c.channel.without_namespace.presence);
        assert_eq!(c.channel.namespaces[0].name, "chat");
        assert!(c.channel.namespaces[0].options.join_leave);
        assert_eq!(c.engine.kind, EngineKind::Nats);
        assert_eq!(c.engine.nats.node_timeout.0, Duration::from_secs(60));
        assert_eq!(c.shutdown.timeout.0, Duration::from_secs(90));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn yaml_merge_keys_apply() {
        let text = "base: &b {presence: true}\nhttp_api: {key: k}\n\
                    channel: {without_namespace: {<<: *b, join_leave: true}}\n";
        let loaded = load(text, &[]).unwrap();
        assert!(loaded.config.channel.without_namespace.presence);
        assert_eq!(loaded.warnings, [r#"unknown config key "base""#]);
    }

    #[test]
    fn json_file() {
        let text = r#"{
            "http_api": {"key": "k", "insecure": false},
            "client": {"channel_limit": 7, "subscription_token": {"enabled": true,
                       "hmac_secret_key": "sub"}},
            "channel": {"namespaces": [{"name": "room", "presence": true}]}
        }"#;
        let c = load(text, &[]).unwrap().config;
        assert_eq!(c.client.channel_limit, 7);
        assert!(c.client.subscription_token.enabled);
        assert_eq!(c.client.subscription_token.keys.hmac_secret_key, "sub");
        assert!(c.channel.namespaces[0].options.presence);
    }

    #[test]
    fn syntax_errors_say_which_format_and_where() {
        let json = err("{\n  \"http_api\": {\"key\": \"k\"}\n  \"log\": {}\n}", &[]);
        assert!(json.starts_with("config is not valid JSON"), "{json}");
        assert!(json.contains("line 3 column 3"), "{json}");
        let yaml = err("http_api:\n  key: [unclosed\n", &[]);
        assert!(yaml.starts_with("config is not valid YAML"), "{yaml}");
        // YAML flow style (or a trailing comma) is not JSON but is fine.
        assert!(load("{http_api: {key: k}}", &[]).is_ok());
        assert!(load(r#"{"http_api": {"key": "k",}}"#, &[]).is_ok());
        let list = err("- a\n- b\n", &[]);
        assert!(list.contains("must be a mapping"), "{list}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let path = Path::new("/nonexistent/rollcall-test.yaml");
        let e = load_file(path, env(&[]), false).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string().contains("/nonexistent/rollcall-test.yaml"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn load_file_reads_yaml() {
        let path = std::env::temp_dir().join(format!("rollcall-load-{}.yaml", std::process::id()));
        std::fs::write(&path, "http_api: {key: from-file}\n").unwrap();
        let loaded = load_file(&path, env(&[]), true);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap().config.http_api.key, "from-file");
    }

    #[test]
    fn env_beats_file() {
        let text = "http_api: {key: file}\nhttp_server: {port: 9000}\n\
                    client: {token: {hmac_secret_key: file}}\n";
        let c = load(
            text,
            &[
                ("ROLLCALL_HTTP_API_KEY", "env-key"),
                ("ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY", "env-secret"),
                ("ROLLCALL_ENGINE_NATS_URL", "nats://env:4222"),
                ("ROLLCALL_HTTP_SERVER_PORT", "7000"),
                ("ROLLCALL_ENGINE_TYPE", "nats"),
                ("ROLLCALL_CLIENT_SUBSCRIPTION_TOKEN_ENABLED", "true"),
                ("ROLLCALL_CLIENT_SUBSCRIPTION_TOKEN_HMAC_SECRET_KEY", "sub"),
                ("ROLLCALL_CLIENT_PING_INTERVAL", "5s"),
                ("ROLLCALL_CHANNEL_WITHOUT_NAMESPACE_PRESENCE", "1"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap()
        .config;
        assert_eq!(c.http_api.key, "env-key");
        assert_eq!(c.client.token.hmac_secret_key, "env-secret");
        assert_eq!(c.engine.nats.url, "nats://env:4222");
        assert_eq!(c.http_server.port, 7000);
        assert_eq!(c.engine.kind, EngineKind::Nats);
        assert!(c.client.subscription_token.enabled);
        assert_eq!(c.client.subscription_token.keys.hmac_secret_key, "sub");
        assert_eq!(c.client.ping_interval.0, Duration::from_secs(5));
        assert!(c.channel.without_namespace.presence);
    }

    #[test]
    fn env_arrays_and_sections() {
        let ns = r#"[{"name":"chat","presence":true},{"name":"news"}]"#;
        let c = load(
            MINIMAL,
            &[
                ("ROLLCALL_CHANNEL_NAMESPACES", ns),
                (
                    "ROLLCALL_CLIENT_ALLOWED_ORIGINS",
                    " https://a.com , https://b.com,",
                ),
            ],
        )
        .unwrap()
        .config;
        assert_eq!(c.channel.namespaces.len(), 2);
        assert!(c.channel.namespaces[0].options.presence);
        assert_eq!(c.client.allowed_origins, ["https://a.com", "https://b.com"]);

        let json = r#"["https://c.com"]"#;
        let c = load(MINIMAL, &[("ROLLCALL_CLIENT_ALLOWED_ORIGINS", json)])
            .unwrap()
            .config;
        assert_eq!(c.client.allowed_origins, ["https://c.com"]);

        // A whole section as JSON, and a key inside it: the more specific one wins.
        let c = load(
            MINIMAL,
            &[
                ("ROLLCALL_LOG", r#"{"level":"warn","format":"json"}"#),
                ("ROLLCALL_LOG_LEVEL", "error"),
            ],
        )
        .unwrap()
        .config;
        assert_eq!(
            (c.log.level.as_str(), c.log.format),
            ("error", LogFormat::Json)
        );
    }

    #[test]
    fn env_typing_errors_name_the_variable_and_key() {
        let cases = [
            (
                "ROLLCALL_HTTP_SERVER_PORT",
                "eighty",
                "http_server.port",
                "integer",
            ),
            (
                "ROLLCALL_HTTP_SERVER_PORT",
                "70000",
                "http_server.port",
                "u16",
            ),
            (
                "ROLLCALL_CLIENT_CHANNEL_LIMIT",
                "-1",
                "client.channel_limit",
                "-1",
            ),
            (
                "ROLLCALL_HTTP_API_INSECURE",
                "maybe",
                "http_api.insecure",
                "true or false",
            ),
            (
                "ROLLCALL_CLIENT_PING_INTERVAL",
                "soon",
                "client.ping_interval",
                "duration",
            ),
            ("ROLLCALL_ENGINE_TYPE", "redis", "engine.type", "redis"),
            (
                "ROLLCALL_CHANNEL_NAMESPACES",
                "[{",
                "channel.namespaces",
                "JSON array",
            ),
            (
                "ROLLCALL_CHANNEL_NAMESPACES",
                "chat,news",
                "channel.namespaces",
                "[0]",
            ),
            ("ROLLCALL_LOG", "level=debug", "log", "JSON object"),
        ];
        for (var, value, key, detail) in cases {
            let e = load(MINIMAL, &[(var, value)]).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(&e, ConfigError::Env { var: v, key: k, .. } if v == var && k == key),
                "{var}={value}: {msg}"
            );
            assert!(msg.contains(var) && msg.contains(key), "{msg}");
            assert!(msg.contains(detail), "{var}={value}: {msg}");
        }
    }

    #[test]
    fn env_validation_errors_name_the_variable() {
        let e = load(MINIMAL, &[("ROLLCALL_CLIENT_PING_INTERVAL", "0s")]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Env { var, key, .. }
                if var == "ROLLCALL_CLIENT_PING_INTERVAL" && key == "client.ping_interval"),
            "{e}"
        );
    }

    #[test]
    fn env_into_a_non_mapping_is_an_error() {
        let e = err(
            "http_api: {key: k}\nlog: 5\n",
            &[("ROLLCALL_LOG_LEVEL", "debug")],
        );
        assert!(
            e.contains("ROLLCALL_LOG_LEVEL") && e.contains("not a mapping"),
            "{e}"
        );
    }

    #[test]
    fn unknown_env_variables_warn() {
        let loaded = load_str(
            MINIMAL,
            env(&[
                ("ROLLCALL_CLIENT_TOKNE", "x"),
                ("ROLLCALL_SERVICE_HOST", "10.0.0.1"),
                ("ROLLCALL_PORT", "tcp://10.0.0.1:8000"),
                ("ROLLCALL_PORT_8000_TCP_PORT", "8000"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            loaded.warnings,
            ["unknown environment variable ROLLCALL_CLIENT_TOKNE: it matches no config key"]
        );
    }

    #[test]
    fn unknown_keys_warn_or_fail_in_strict_mode() {
        let text = "http_api: {key: k}\nclient:\n  tokne: {}\n  token: {hmac_secret: x}\n\
                    channel:\n  namespaces:\n    - {name: chat, presense: true}\n\
                    \x20 without_namespace: {presense: true}\n\
                    client_x: 1\n";
        let loaded = load(text, &[]).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                r#"unknown config key "channel.namespaces[0].presense""#,
                r#"unknown config key "channel.without_namespace.presense""#,
                r#"unknown config key "client.token.hmac_secret""#,
                r#"unknown config key "client.tokne""#,
                r#"unknown config key "client_x""#,
            ]
        );
        let e = load_str(text, env(&[]), true).unwrap_err();
        assert!(matches!(&e, ConfigError::UnknownKeys(keys) if keys.len() == 5));
        let msg = e.to_string();
        assert!(
            msg.contains(r#""client.tokne""#) && msg.contains("strict"),
            "{msg}"
        );

        let sub = "http_api: {key: k}\nclient: {subscription_token: {enabled: false, hmac: x}}\n";
        let e = load_str(sub, env(&[]), true).unwrap_err().to_string();
        assert_eq!(
            e,
            r#"unknown config key "client.subscription_token.hmac" (unknown keys are errors in strict mode)"#
        );
        assert!(load_str(MINIMAL, env(&[]), true).is_ok());
    }

    #[test]
    fn bad_duration_names_its_key() {
        let e = load(
            "http_api: {key: k}\nengine: {nats: {node_timeout: 3 parsecs}}\n",
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Key { key, .. } if key == "engine.nats.node_timeout"),
            "{e}"
        );
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let e = err("http_api: {key: k}\nclient: {ping_interval: 25}\n", &[]);
        assert!(e.starts_with("config key client.ping_interval:"), "{e}");
    }

    #[test]
    fn type_errors_name_their_key() {
        for (text, key) in [
            ("http_server: {port: 70000}", "http_server.port"),
            ("http_server: {port: -1}", "http_server.port"),
            ("client: {queue_max_size: big}", "client.queue_max_size"),
            ("engine: {type: redis}", "engine.type"),
            ("log: {format: xml}", "log.format"),
            ("client: {allowed_origins: a}", "client.allowed_origins"),
            (
                "channel: {namespaces: [{name: 5}]}",
                "channel.namespaces[0]",
            ),
            ("client: {token: 5}", "client.token"),
        ] {
            let e = load(&format!("http_api: {{key: k}}\n{text}\n"), &[]).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Key { key: k, .. } if k.starts_with(key)),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn load_validates() {
        let e = load("{}", &[]).unwrap_err().to_string();
        assert!(e.starts_with("config key http_api.key:"), "{e}");
        assert!(load("http_api: {insecure: true}", &[]).is_ok());
        let e = err(
            "http_api: {key: k}\nchannel: {namespaces: [{name: x}]}\n",
            &[],
        );
        assert!(e.starts_with("config key channel.namespaces:"), "{e}");
    }

    #[test]
    fn env_names_are_unique_and_cover_the_documented_keys() {
        // A collision would trip the debug_assert in `env_table`.
        let table = env_table();
        for (name, path, kind) in [
            ("ROLLCALL_HTTP_API_KEY", "http_api.key", Kind::String),
            (
                "ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY",
                "client.token.hmac_secret_key",
                Kind::String,
            ),
            ("ROLLCALL_ENGINE_NATS_URL", "engine.nats.url", Kind::String),
            (
                "ROLLCALL_HTTP_SERVER_PORT",
                "http_server.port",
                Kind::Integer,
            ),
            ("ROLLCALL_ENGINE_TYPE", "engine.type", Kind::String),
            (
                "ROLLCALL_CLIENT_SUBSCRIPTION_TOKEN_ENABLED",
                "client.subscription_token.enabled",
                Kind::Bool,
            ),
            (
                "ROLLCALL_CHANNEL_NAMESPACES",
                "channel.namespaces",
                Kind::Array,
            ),
            (
                "ROLLCALL_CLIENT_ALLOWED_ORIGINS",
                "client.allowed_origins",
                Kind::Array,
            ),
            (
                "ROLLCALL_CHANNEL_WITHOUT_NAMESPACE_CHANNEL_REGEX",
                "channel.without_namespace.channel_regex",
                Kind::String,
            ),
            ("ROLLCALL_CLIENT", "client", Kind::Object),
        ] {
            let key = table.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!((key.dotted().as_str(), key.kind), (path, kind), "{name}");
        }
    }
}
