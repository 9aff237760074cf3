//! The server configuration: Centrifugo v6 key names, serde defaults, durations as strings.
//!
//! Loading (file, `ROLLCALL_*` env overrides, unknown-key warnings) and validation live in
//! `config/load.rs`; this file is the struct tree and its documented defaults.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::namespace::{NamespaceConfig, NamespaceOptions};

mod load;
pub use load::{ConfigError, Loaded, load_file, load_str};

/// A duration written as a string: `"500ms"`, `"25s"`, `"1m"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (use e.g. \"500ms\", \"25s\", \"1m\")"
            ))
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http_server: HttpServerConfig,
    pub http_api: HttpApiConfig,
    pub client: ClientConfig,
    pub channel: ChannelConfig,
    pub engine: EngineConfig,
    pub node: NodeConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

/// `http_server`: where the node listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpServerConfig {
    /// Listen address. Default `"0.0.0.0"`.
    pub address: String,
    /// Listen port. Default 8000; 0 picks a free port.
    pub port: u16,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            address: "0.0.0.0".into(),
            port: 8000,
        }
    }
}

/// `http_api`: the server HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpApiConfig {
    /// The API key; required unless `insecure`.
    pub key: String,
    /// Serve the API without a key (development only). Default false.
    pub insecure: bool,
    /// `""` (HTTP 200 with an error object) or `"transport"` (HTTP status codes).
    pub error_mode: String,
}

/// Keys that verify a JWT: `client.token` and `client.subscription_token`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Secret for HS256/384/512.
    pub hmac_secret_key: String,
    /// PEM public key for RS256/384/512.
    pub rsa_public_key: String,
    /// PEM public key for ES256/384.
    pub ecdsa_public_key: String,
    /// Required `aud` when non-empty.
    pub audience: String,
    /// Required `iss` when non-empty.
    pub issuer: String,
}

/// `client.subscription_token`: separate keys for subscription tokens when `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionTokenConfig {
    /// Verify subscription tokens with these keys instead of `client.token`. Default false.
    pub enabled: bool,
    #[serde(flatten)]
    pub keys: TokenConfig,
}

/// `client`: connection behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    pub token: TokenConfig,
    pub subscription_token: SubscriptionTokenConfig,
    /// Connect without a token as an anonymous user (`""`). Default false.
    pub allow_anonymous_connect_without_token: bool,
    /// Allowed `Origin` globs; empty = only requests without an Origin header; `"*"` = all.
    pub allowed_origins: Vec<String>,
    /// Development only: no authentication, every permission check passes. Default false.
    pub insecure: bool,
    /// How often the server pings. Default 25s.
    pub ping_interval: Dur,
    /// How long the client has to answer a ping. Default 8s.
    pub pong_timeout: Dur,
    /// Local liveness check of presence entries. Default 27s.
    pub presence_update_interval: Dur,
    /// Subscriptions per connection. Default 128.
    pub channel_limit: u32,
    /// Connections per node; 0 = unlimited. Default 0.
    pub connection_limit: u32,
    /// Bytes buffered for a slow client before it is closed with 3008. Default 1 MiB.
    pub queue_max_size: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: TokenConfig::default(),
            subscription_token: SubscriptionTokenConfig::default(),
            allow_anonymous_connect_without_token: false,
            allowed_origins: Vec::new(),
            insecure: false,
            ping_interval: Dur::secs(25),
            pong_timeout: Dur::secs(8),
            presence_update_interval: Dur::secs(27),
            channel_limit: 128,
            connection_limit: 0,
            queue_max_size: 1_048_576,
        }
    }
}

/// `channel`: namespaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelConfig {
    /// Options for channels without a namespace.
    pub without_namespace: NamespaceOptions,
    /// Named namespaces.
    pub namespaces: Vec<NamespaceConfig>,
    /// Optional YAML/JSON file `{namespaces: […], without_namespace: {…}}`, hot-reloaded; its
    /// entries win by name. Default `""` (none).
    pub namespaces_file: String,
}

/// `engine`: where presence lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// `memory` (single node, default) or `nats` (cluster).
    #[serde(rename = "type")]
    pub kind: EngineKind,
    pub nats: NatsConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kind: EngineKind::Memory,
            nats: NatsConfig::default(),
        }
    }
}

/// The presence engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Memory,
    Nats,
}

/// `engine.nats`: the cluster engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsConfig {
    /// Default `"nats://127.0.0.1:4222"`.
    pub url: String,
    /// Subject prefix. Default `"rollcall"`.
    pub prefix: String,
    /// Default 1s.
    pub heartbeat_interval: Dur,
    /// A peer silent this long is down. Default 3s.
    pub node_timeout: Dur,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "rollcall".into(),
            heartbeat_interval: Dur::secs(1),
            node_timeout: Dur::secs(3),
        }
    }
}

/// `node`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Node name; default: the hostname.
    pub name: String,
}

/// `shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    /// Longest graceful shutdown. Default 30s.
    pub timeout: Dur,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: Dur::secs(30),
        }
    }
}

/// `log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `trace`, `debug`, `info` (default), `warn`, `error`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
