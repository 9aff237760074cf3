//! The in-memory engine: one node's presence, sharded by channel.

use std::time::Instant;

use rollcall_core::presence::{Channel, ClientId, ClientInfo, NodeInfo, PresenceStats};

use super::index::Index;
use super::{BoxFuture, Entry, PresenceEngine};
use crate::hub::Hub;

/// Presence of a single node. `presence_stats` is O(1), `presence` O(members).
pub struct MemoryEngine {
    index: Index,
    hub: Hub,
    identity: Identity,
}

/// Who this node is, for `info`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: String,
    pub name: String,
    pub started: Instant,
}

impl Identity {
    /// This node's `NodeInfo`, with counters from the hub.
    pub fn node_info(&self, hub: &Hub) -> NodeInfo {
        let c = hub.counts();
        NodeInfo {
            uid: self.uid.clone(),
            name: self.name.clone(),
            version: rollcall_core::VERSION.to_string(),
            num_clients: c.num_clients,
            num_users: c.num_users,
            num_channels: c.num_channels,
            num_subs: c.num_subs,
            uptime: self.started.elapsed().as_secs(),
        }
    }
}

impl MemoryEngine {
    pub fn new(hub: Hub, identity: Identity) -> MemoryEngine {
        MemoryEngine {
            index: Index::default(),
            hub,
            identity,
        }
    }
}

impl PresenceEngine for MemoryEngine {
    fn add(&self, entry: Entry) {
        if entry.presence {
            self.index.insert(&entry.channel, entry.info);
        } else {
            // Replacing with an entry outside presence removes the old presence record.
            self.index.remove(&entry.channel, &entry.info.client);
        }
    }

    fn remove(&self, channel: &Channel, client: &ClientId) {
        self.index.remove(channel, client);
    }

    fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.index.presence(channel)
    }

    fn presence_json(&self, channel: &str, out: &mut Vec<u8>) {
        self.index.presence_json(channel, out)
    }

    fn presence_stats(&self, channel: &str) -> PresenceStats {
        self.index.stats(channel)
    }

    fn channels(&self) -> Vec<(Channel, PresenceStats)> {
        self.index.channels()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        vec![self.identity.node_info(&self.hub)]
    }

    fn ready(&self) -> bool {
        true
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
