//! Connection and subscription JWTs: verification (HS/RS/ES) and HS256 signing for `gentoken`.
// PLACEHOLDER: to be replaced by the full implementation.

use serde_json::value::RawValue;

use crate::config::TokenConfig;

/// Why a token was refused. `Expired` is error 109; everything else closes with 3500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why the configured keys cannot be used (a bad PEM, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct KeyError {
    /// The config key at fault, e.g. `client.token.rsa_public_key`.
    pub key: String,
    pub reason: String,
}

/// Claims of a verified connection token.
#[derive(Debug, Default)]
pub struct ConnectClaims {
    /// `sub`; `""` for anonymous.
    pub user: String,
    /// When the connection expires (unix seconds): `expire_at` if set (0 = never), else `exp`.
    pub expires_at: Option<u64>,
    /// `info`, or `b64info` decoded; raw JSON for `conn_info`.
    pub info: Option<Box<RawValue>>,
    /// Server-side subscriptions: from `subs` (channel → `{info}`), else `channels`.
    /// Sorted by channel, each with its optional `info` (→ `chan_info`).
    pub subs: Vec<(String, Option<Box<RawValue>>)>,
}

/// A token override of one namespace flag: `{"value": true}`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Overrides {
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub force_push_join_leave: Option<bool>,
}

/// Claims of a verified subscription token.
#[derive(Debug, Default)]
pub struct SubscribeClaims {
    /// `sub`: must equal the connection's user (checked by the caller).
    pub user: String,
    /// `channel`: must equal the subscribed channel (checked by the caller).
    pub channel: String,
    /// When the subscription expires (unix seconds): `expire_at` if set (0 = never), else `exp`.
    pub expires_at: Option<u64>,
    /// `info` or `b64info`: raw JSON for `chan_info`.
    pub info: Option<Box<RawValue>>,
    pub overrides: Overrides,
}

/// Verifies tokens with the keys of one `TokenConfig`. Built once at start-up (and on reload).
pub struct TokenVerifier {
    _private: (),
}

impl TokenVerifier {
    /// Builds a verifier; `prefix` names the config section in errors (`client.token`).
    pub fn new(_cfg: &TokenConfig, _prefix: &str) -> Result<Self, KeyError> {
        todo!()
    }

    /// Verifies a connection token at time `now` (unix seconds).
    pub fn verify_connect(&self, _token: &str, _now: u64) -> Result<ConnectClaims, TokenError> {
        todo!()
    }

    /// Verifies a subscription token at time `now` (unix seconds).
    pub fn verify_subscribe(&self, _token: &str, _now: u64) -> Result<SubscribeClaims, TokenError> {
        todo!()
    }
}

/// Signs an HS256 connection token (for `rollcall gentoken` and tests).
pub fn sign_hs256(_secret: &str, _claims: &serde_json::Value) -> String {
    todo!()
}
