//! Rollcall's pure core: everything that can be decided without I/O.
//!
//! - [`config`]: the configuration tree (Centrifugo v6 key names), loading and validation.
//! - [`channel`]: channel names (`$private`, `ns:name`, `#user,limits`).
//! - [`namespace`]: namespace options, the namespace set, resolving a channel.
//! - [`permission`]: the subscribe and presence permission tables.
//! - [`token`]: connection and subscription JWT verification (and signing for `gentoken`).
//! - [`protocol`]: client protocol commands, replies and pushes (JSON).
//! - [`presence`]: the presence index with O(1) counters.
//! - [`codes`]: every error and disconnect code.
#![forbid(unsafe_code)]

pub mod channel;
pub mod codes;
pub mod config;
pub mod namespace;
pub mod permission;
pub mod presence;
pub mod protocol;
pub mod token;

/// The version reported to clients and in `info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
