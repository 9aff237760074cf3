//! The in-memory engine: one node's presence, sharded by channel.

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use parking_lot::Mutex;
use rollcall_core::presence::{
    Channel, ClientId, ClientInfo, NodeInfo, PresenceIndex, PresenceStats,
};

use super::{BoxFuture, Entry, PresenceEngine};
use crate::hub::Hub;

const SHARDS: usize = 64;

/// Presence of a single node. `presence_stats` is O(1), `presence` O(members).
pub struct MemoryEngine {
    // Sharded so that subscribes to different channels do not contend; each lock is held only
    // for one index operation.
    shards: Box<[Mutex<PresenceIndex>]>,
    hasher: RandomState,
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
            shards: (0..SHARDS)
                .map(|_| Mutex::new(PresenceIndex::new()))
                .collect(),
            hasher: RandomState::new(),
            hub,
            identity,
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<PresenceIndex> {
        &self.shards[(self.hasher.hash_one(channel) as usize) % SHARDS]
    }
}

impl PresenceEngine for MemoryEngine {
    fn add(&self, entry: Entry) {
        let mut shard = self.shard(&entry.channel).lock();
        if entry.presence {
            shard.insert(&entry.channel, entry.info);
        } else {
            // Replacing with an entry outside presence removes the old presence record.
            shard.remove(&entry.channel, &entry.info.client);
        }
    }

    fn remove(&self, channel: &Channel, client: &ClientId) {
        self.shard(channel).lock().remove(channel, client);
    }

    fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        let shard = self.shard(channel).lock();
        shard
            .channel(channel)
            .map(|c| c.members().cloned().collect())
            .unwrap_or_default()
    }

    fn presence_stats(&self, channel: &str) -> PresenceStats {
        self.shard(channel).lock().stats(channel)
    }

    fn channels(&self) -> Vec<(Channel, PresenceStats)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(shard.channels().map(|(c, p)| (c.clone(), p.stats())));
        }
        out
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
