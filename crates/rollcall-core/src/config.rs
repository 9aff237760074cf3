//! The server configuration: Centrifugo v6 key names, serde defaults, durations as strings.
//!
//! Loading (file, `ROLLCALL_*` env overrides, unknown-key warnings) and validation live in
//! `config/load.rs`; this file is the struct tree, its documented defaults and the validation
//! rules ([`Config::validate`]) that the types cannot express.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::namespace::{NamespaceConfig, NamespaceError, NamespaceOptions, Namespaces};
use crate::token::{KeyError, TokenVerifier};

mod load;
pub use load::{ConfigError, ENV_PREFIX, Loaded, load_file, load_str};

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

impl Config {
    /// Checks the rules the types cannot express. The first broken rule is returned as
    /// [`ConfigError::Key`] naming its key, with how to fix it where that is not obvious.
    ///
    /// Rules: `http_api.key` unless `http_api.insecure`; `http_api.error_mode` is `""` or
    /// `"transport"`; `log.level` is trace/debug/info/warn/error; `client.ping_interval`,
    /// `pong_timeout`, `presence_update_interval` and `queue_max_size` are positive; origins are
    /// valid globs; token keys parse ([`TokenVerifier::new`]); an enabled subscription token
    /// has a key; namespaces build ([`Namespaces::build`]); `engine.nats.node_timeout` exceeds
    /// a positive `heartbeat_interval`; the NATS prefix is a valid subject prefix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| Err(ConfigError::key(key, reason));
        if self.http_server.address.trim().is_empty() {
            return bad(
                "http_server.address",
                "must not be empty (e.g. \"0.0.0.0\")".into(),
            );
        }
        if self.http_api.key.is_empty() && !self.http_api.insecure {
            return bad(
                "http_api.key",
                "is required: set http_api.key (or ROLLCALL_HTTP_API_KEY), or set \
                 http_api.insecure: true to serve the API without a key (development only)"
                    .into(),
            );
        }
        if !matches!(self.http_api.error_mode.as_str(), "" | "transport") {
            let got = &self.http_api.error_mode;
            return bad(
                "http_api.error_mode",
                format!("must be \"\" or \"transport\", got {got:?}"),
            );
        }
        const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
        if !LEVELS
            .iter()
            .any(|l| l.eq_ignore_ascii_case(&self.log.level))
        {
            let got = &self.log.level;
            return bad(
                "log.level",
                format!("must be one of {}, got {got:?}", LEVELS.join(", ")),
            );
        }
        self.validate_client()?;
        self.validate_channel()?;
        self.validate_engine()
    }

    fn validate_client(&self) -> Result<(), ConfigError> {
        let c = &self.client;
        for (key, d) in [
            ("client.ping_interval", c.ping_interval),
            ("client.pong_timeout", c.pong_timeout),
            (
                "client.presence_update_interval",
                c.presence_update_interval,
            ),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        if c.queue_max_size == 0 {
            return Err(ConfigError::key(
                "client.queue_max_size",
                "must be greater than 0 (bytes buffered per client)",
            ));
        }
        for (i, origin) in c.allowed_origins.iter().enumerate() {
            if let Err(e) = globset::Glob::new(origin) {
                let reason = format!("{origin:?} is not a valid glob: {e}");
                return Err(ConfigError::key(
                    format!("client.allowed_origins[{i}]"),
                    reason,
                ));
            }
        }
        let key_error = |e: KeyError| ConfigError::key(e.key, e.reason);
        TokenVerifier::new(&c.token, "client.token").map_err(key_error)?;
        let sub = &c.subscription_token;
        if sub.enabled {
            let verifier =
                TokenVerifier::new(&sub.keys, "client.subscription_token").map_err(key_error)?;
            if !verifier.has_keys() {
                return Err(ConfigError::key(
                    "client.subscription_token",
                    "is enabled but has no key: set hmac_secret_key, rsa_public_key or \
                     ecdsa_public_key",
                ));
            }
        }
        Ok(())
    }

    fn validate_channel(&self) -> Result<(), ConfigError> {
        let ch = &self.channel;
        Namespaces::build(&ch.without_namespace, &ch.namespaces).map_err(|e| match e {
            NamespaceError::InvalidRegex { ref name, .. } if name.is_empty() => {
                ConfigError::key("channel.without_namespace.channel_regex", e.to_string())
            }
            e => ConfigError::key("channel.namespaces", e.to_string()),
        })?;
        Ok(())
    }

    fn validate_engine(&self) -> Result<(), ConfigError> {
        let nats = &self.engine.nats;
        if nats.heartbeat_interval.0.is_zero() {
            return Err(ConfigError::key(
                "engine.nats.heartbeat_interval",
                "must be greater than 0",
            ));
        }
        if nats.node_timeout <= nats.heartbeat_interval {
            let reason = format!(
                "must be greater than engine.nats.heartbeat_interval ({} <= {})",
                nats.node_timeout, nats.heartbeat_interval
            );
            return Err(ConfigError::key("engine.nats.node_timeout", reason));
        }
        // The prefix starts every subject: tokens must be non-empty, without wildcards or spaces.
        let valid_prefix = !nats.prefix.is_empty()
            && nats.prefix.split('.').all(|token| {
                !token.is_empty()
                    && !token
                        .chars()
                        .any(|ch| ch.is_whitespace() || ch == '*' || ch == '>')
            });
        if !valid_prefix {
            let reason = format!(
                "{:?} is not a valid NATS subject prefix (non-empty dot-separated tokens \
                 without spaces, * or >)",
                nats.prefix
            );
            return Err(ConfigError::key("engine.nats.prefix", reason));
        }
        if self.engine.kind == EngineKind::Nats && nats.url.trim().is_empty() {
            return Err(ConfigError::key(
                "engine.nats.url",
                "is required with engine.type nats",
            ));
        }
        Ok(())
    }
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
    /// How long an expired connection stays open waiting for the SDK's `refresh` before it is
    /// closed with 3005 (Centrifugo's `client.expired_close_delay`). Default 25s.
    pub expired_close_delay: Dur,
    /// How long an expired subscription stays waiting for `sub_refresh` before it ends with an
    /// unsubscribe push (Centrifugo's `client.expired_sub_close_delay`). Default 25s.
    pub expired_sub_close_delay: Dur,
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
            expired_close_delay: Dur::secs(25),
            expired_sub_close_delay: Dur::secs(25),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults plus the one key they lack.
    fn valid() -> Config {
        let mut c = Config::default();
        c.http_api.key = "k".into();
        c
    }

    /// The key named by `c.validate()`'s error, and its message.
    fn refused(c: &Config) -> (String, String) {
        let err = c.validate().expect_err("the config should be refused");
        let msg = err.to_string();
        match err {
            ConfigError::Key { key, .. } => (key, msg),
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_with_an_api_key_are_valid() {
        assert!(valid().validate().is_ok());
    }

    #[test]
    fn dur_parses_and_prints() {
        let d: Dur = serde_json::from_str(r#""1h30m""#).unwrap();
        assert_eq!(d, Dur::secs(5400));
        assert_eq!(
            serde_json::to_string(&Dur::millis(500)).unwrap(),
            r#""500ms""#
        );
        let e = serde_json::from_str::<Dur>(r#""5 parsecs""#).unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }

    #[test]
    fn api_key_is_required_unless_insecure() {
        let (key, msg) = refused(&Config::default());
        assert_eq!(key, "http_api.key");
        assert!(msg.contains("http_api.insecure: true"), "{msg}");
        let mut c = Config::default();
        c.http_api.insecure = true;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn each_rule_names_its_key() {
        type Edit = fn(&mut Config);
        let cases: [(Edit, &str); 17] = [
            (
                |c| c.http_server.address = " ".into(),
                "http_server.address",
            ),
            (
                |c| c.http_api.error_mode = "status".into(),
                "http_api.error_mode",
            ),
            (|c| c.log.level = "verbose".into(), "log.level"),
            (
                |c| c.client.ping_interval = Dur::secs(0),
                "client.ping_interval",
            ),
            (
                |c| c.client.pong_timeout = Dur::secs(0),
                "client.pong_timeout",
            ),
            (
                |c| c.client.presence_update_interval = Dur::secs(0),
                "client.presence_update_interval",
            ),
            (|c| c.client.queue_max_size = 0, "client.queue_max_size"),
            (
                |c| c.client.allowed_origins = vec!["*".into(), "[".into()],
                "client.allowed_origins[1]",
            ),
            (
                |c| c.client.token.rsa_public_key = "junk".into(),
                "client.token.rsa_public_key",
            ),
            (
                |c| c.client.token.ecdsa_public_key = "junk".into(),
                "client.token.ecdsa_public_key",
            ),
            (
                |c| c.client.subscription_token.enabled = true,
                "client.subscription_token",
            ),
            (
                |c| {
                    c.channel.namespaces = vec![NamespaceConfig {
                        name: "x".into(),
                        ..Default::default()
                    }]
                },
                "channel.namespaces",
            ),
            (
                |c| c.channel.without_namespace.channel_regex = "(".into(),
                "channel.without_namespace.channel_regex",
            ),
            (
                |c| c.engine.nats.heartbeat_interval = Dur::secs(0),
                "engine.nats.heartbeat_interval",
            ),
            (
                |c| c.engine.nats.node_timeout = Dur::secs(1),
                "engine.nats.node_timeout",
            ),
            (
                |c| c.engine.nats.prefix = "a.*".into(),
                "engine.nats.prefix",
            ),
            (
                |c| {
                    c.engine.kind = EngineKind::Nats;
                    c.engine.nats.url = String::new();
                },
                "engine.nats.url",
            ),
        ];
        for (edit, want) in cases {
            let mut c = valid();
            edit(&mut c);
            let (key, msg) = refused(&c);
            assert_eq!(key, want, "{msg}");
            assert!(msg.starts_with(&format!("config key {want}")), "{msg}");
        }
    }

    #[test]
    fn namespace_errors_are_reported_under_channel_namespaces() {
        let chat = NamespaceConfig {
            name: "chat".into(),
            ..Default::default()
        };
        let mut c = valid();
        c.channel.namespaces = vec![chat.clone(), chat];
        let (key, msg) = refused(&c);
        assert_eq!(key, "channel.namespaces");
        assert!(msg.contains("defined twice"), "{msg}");
    }

    #[test]
    fn accepted_edge_values() {
        let mut c = valid();
        c.http_api.error_mode = "transport".into();
        c.log.level = "WARN".into();
        c.http_server.port = 0;
        c.engine.nats.prefix = "team.rollcall".into();
        c.client.subscription_token.enabled = true;
        c.client.subscription_token.keys.hmac_secret_key = "s".into();
        c.client.token.rsa_public_key = "   ".into();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
    }
}
