//! The presence engine interface: where subscriptions are recorded and presence is answered.
//!
//! `memory` keeps one node's presence; `nats` replicates it across a cluster. Sessions and the
//! HTTP API only see this trait, so engines plug in without touching them.

use std::future::Future;
use std::pin::Pin;

use rollcall_core::presence::{Channel, ClientId, ClientInfo, NodeInfo, PresenceStats};

pub mod index;
pub mod memory;
pub mod nats;

/// A local subscription as the engine records it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub channel: Channel,
    pub info: ClientInfo,
    /// Visible to `presence` / `presence_stats` (the namespace or token override has presence).
    pub presence: bool,
    /// Join/leave events are emitted for it (namespace or token override has `join_leave`).
    pub join_leave: bool,
}

/// A boxed future, for the engine's async methods (keeps the trait object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Records local subscriptions and answers presence for the whole cluster.
///
/// Contract:
/// - `add`/`remove` concern this node's own subscriptions; the caller delivers their
///   join/leave pushes to local subscribers itself (so the subscriber's reply comes first).
///   Joins/leaves of *other* nodes' subscriptions reach local subscribers through the
///   [`Hub`](crate::hub::Hub) the engine was built with.
/// - After `add` returns, `presence` on this node includes the entry (read-your-writes).
/// - `presence_stats` is O(1); `presence` is O(members of the channel).
/// - None of the methods block on I/O: a network engine answers from its local replica.
pub trait PresenceEngine: Send + Sync + 'static {
    /// Records a local subscription. Adding the same (channel, client) again replaces it.
    fn add(&self, entry: Entry);
    /// Forgets a local subscription; unknown ones are ignored.
    fn remove(&self, channel: &Channel, client: &ClientId);
    /// Every member of the channel across the cluster.
    fn presence(&self, channel: &str) -> Vec<ClientInfo>;
    /// The same members as the protocol's JSON map `{"<client id>":ClientInfo,…}` (`{}` when
    /// empty), appended to `out`. What the APIs answer with: it copies pre-encoded entries.
    fn presence_json(&self, channel: &str, out: &mut Vec<u8>);
    /// Counters of the channel across the cluster.
    fn presence_stats(&self, channel: &str) -> PresenceStats;
    /// Every channel with presence members across the cluster, with its counters.
    fn channels(&self) -> Vec<(Channel, PresenceStats)>;
    /// Every live node, this one first.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// Whether the node may serve traffic (`/ready`): always for memory; synced for nats.
    fn ready(&self) -> bool;
    /// Announces a graceful leave (peers drop this node's entries at once) and stops.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
