//! The node: shared state every session and API call reads (config, namespaces, keys, engine).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus_client::registry::Registry;
use rollcall_core::config::Config;
use rollcall_core::namespace::{Namespaces, NamespacesFile};
use rollcall_core::token::TokenVerifier;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::PresenceEngine;
use crate::presence::memory::Identity;

/// Why a node cannot start with a config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("channel.namespaces: {0}")]
    Namespaces(#[from] rollcall_core::namespace::NamespaceError),
    #[error("{0}")]
    Key(#[from] rollcall_core::token::KeyError),
    #[error("client.allowed_origins: {0:?} is not a valid glob: {1}")]
    Origin(String, String),
    #[error("channel.namespaces_file {path}: {reason}")]
    NamespacesFile { path: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("engine: {0}")]
    Engine(String),
}

/// Which `Origin` headers may open a WebSocket.
pub enum OriginPolicy {
    /// `allowed_origins` empty: only requests without an Origin header.
    NoneAllowed,
    /// `"*"` in the list.
    Any,
    Globs(GlobSet),
}

impl OriginPolicy {
    fn build(list: &[String]) -> Result<Self, SetupError> {
        if list.is_empty() {
            return Ok(OriginPolicy::NoneAllowed);
        }
        if list.iter().any(|o| o == "*") {
            return Ok(OriginPolicy::Any);
        }
        let mut b = GlobSetBuilder::new();
        for o in list {
            let glob = Glob::new(&o.to_ascii_lowercase())
                .map_err(|e| SetupError::Origin(o.clone(), e.to_string()))?;
            b.add(glob);
        }
        b.build()
            .map(OriginPolicy::Globs)
            .map_err(|e| SetupError::Origin(list.join(","), e.to_string()))
    }

    /// Whether a request with this Origin header (or none) may connect.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (_, None) => true,
            (OriginPolicy::Any, Some(_)) => true,
            (OriginPolicy::NoneAllowed, Some(_)) => false,
            (OriginPolicy::Globs(set), Some(o)) => set.is_match(o.to_ascii_lowercase()),
        }
    }
}

/// Shared state of one server node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    // Swapped whole on hot reload; readers take a cheap snapshot per command.
    namespaces: ArcSwap<Namespaces>,
    conn_tokens: TokenVerifier,
    /// `None`: subscription tokens are verified with the connection-token keys.
    sub_tokens: Option<TokenVerifier>,
    origins: OriginPolicy,
    hub: Hub,
    engine: Arc<dyn PresenceEngine>,
    metrics: Metrics,
    registry: Registry,
    identity: Identity,
    draining: AtomicBool,
    /// Set the first time the engine reported ready (the initial sync is done).
    started: AtomicBool,
}

/// The pieces a node is built from, checked before any socket is opened.
pub struct Parts {
    pub namespaces: Namespaces,
    pub conn_tokens: TokenVerifier,
    pub sub_tokens: Option<TokenVerifier>,
    pub origins: OriginPolicy,
}

impl Parts {
    /// Checks everything in `config` that loading alone does not: namespaces (with the
    /// namespaces file, if any), token keys, origin globs.
    pub fn build(config: &Config) -> Result<Parts, SetupError> {
        let namespaces = build_namespaces(config)?;
        let conn_tokens = TokenVerifier::new(&config.client.token, "client.token")?;
        let sub_tokens = if config.client.subscription_token.enabled {
            Some(TokenVerifier::new(
                &config.client.subscription_token.keys,
                "client.subscription_token",
            )?)
        } else {
            None
        };
        let origins = OriginPolicy::build(&config.client.allowed_origins)?;
        Ok(Parts {
            namespaces,
            conn_tokens,
            sub_tokens,
            origins,
        })
    }
}

/// Reads and parses `channel.namespaces_file`.
pub fn read_namespaces_file(path: &str) -> Result<NamespacesFile, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| SetupError::NamespacesFile {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    parse_namespaces_file(path, &text)
}

/// Parses the text of a namespaces file (YAML or JSON). An empty file means no namespaces.
pub fn parse_namespaces_file(path: &str, text: &str) -> Result<NamespacesFile, SetupError> {
    if text.trim().is_empty() {
        return Ok(NamespacesFile::default());
    }
    serde_yaml::from_str(text).map_err(|e| SetupError::NamespacesFile {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// The namespace set of `config`, merged with its namespaces file when one is set and exists.
/// A file that does not exist yet (the operator has not written it) counts as empty.
pub fn build_namespaces(config: &Config) -> Result<Namespaces, SetupError> {
    let ch = &config.channel;
    if ch.namespaces_file.is_empty() {
        return Ok(Namespaces::build(&ch.without_namespace, &ch.namespaces)?);
    }
    let file = match std::fs::metadata(&ch.namespaces_file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NamespacesFile::default(),
        _ => read_namespaces_file(&ch.namespaces_file)?,
    };
    Namespaces::build_with_file(&ch.without_namespace, &ch.namespaces, &file).map_err(|e| {
        SetupError::NamespacesFile {
            path: ch.namespaces_file.clone(),
            reason: e.to_string(),
        }
    })
}

impl Node {
    pub fn new(
        config: Config,
        parts: Parts,
        hub: Hub,
        engine: Arc<dyn PresenceEngine>,
        metrics: Metrics,
        registry: Registry,
        identity: Identity,
    ) -> Node {
        Node {
            inner: Arc::new(Inner {
                config,
                namespaces: ArcSwap::from_pointee(parts.namespaces),
                conn_tokens: parts.conn_tokens,
                sub_tokens: parts.sub_tokens,
                origins: parts.origins,
                hub,
                engine,
                metrics,
                registry,
                identity,
                draining: AtomicBool::new(false),
                started: AtomicBool::new(false),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The current namespace set (a snapshot: a reload does not change it under the caller).
    pub fn namespaces(&self) -> Arc<Namespaces> {
        self.inner.namespaces.load_full()
    }

    /// Swaps in a new namespace set; returns the previous one.
    pub fn set_namespaces(&self, namespaces: Namespaces) -> Arc<Namespaces> {
        self.inner.namespaces.swap(Arc::new(namespaces))
    }

    pub fn conn_tokens(&self) -> &TokenVerifier {
        &self.inner.conn_tokens
    }

    pub fn sub_tokens(&self) -> &TokenVerifier {
        self.inner
            .sub_tokens
            .as_ref()
            .unwrap_or(&self.inner.conn_tokens)
    }

    pub fn origins(&self) -> &OriginPolicy {
        &self.inner.origins
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn engine(&self) -> &dyn PresenceEngine {
        &*self.inner.engine
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// Whether the node serves traffic (`/ready`): not draining and the engine is ready (with
    /// NATS: connected and synced).
    pub fn ready(&self) -> bool {
        let ready = !self.inner.draining.load(Ordering::Acquire) && self.inner.engine.ready();
        if ready {
            self.inner.started.store(true, Ordering::Relaxed);
        }
        ready
    }

    /// Whether new WebSocket connections are accepted: not draining, and the engine was ready
    /// once. A NATS blip turns `/ready` to 503 but must not refuse clients: existing sessions
    /// keep working from the replica, and new ones may too.
    pub fn accepting(&self) -> bool {
        if self.inner.draining.load(Ordering::Acquire) {
            return false;
        }
        self.inner.started.load(Ordering::Relaxed) || self.ready()
    }

    /// Marks the node as shutting down (`/ready` turns 503).
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy() {
        let none = OriginPolicy::build(&[]).unwrap();
        assert!(none.allows(None));
        assert!(!none.allows(Some("https://a.example")));
        let any = OriginPolicy::build(&["*".into()]).unwrap();
        assert!(any.allows(Some("https://a.example")));
        let globs = OriginPolicy::build(&["https://*.example.com".into()]).unwrap();
        assert!(globs.allows(Some("https://app.example.com")));
        assert!(globs.allows(Some("HTTPS://APP.EXAMPLE.COM")));
        assert!(!globs.allows(Some("https://evil.com")));
    }
}
