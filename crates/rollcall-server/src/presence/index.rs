//! A presence index sharded by channel: what both engines answer presence queries from.

use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;
use rollcall_core::presence::{
    Channel, ClientInfo, PresenceIndex, PresenceStats, write_presence_json,
};

const SHARDS: usize = 64;

/// Every entry with presence (for the NATS engine: whichever node owns it). `stats` is O(1),
/// `presence` O(members).
///
/// Sharded so that subscribes to different channels do not contend; each shard lock is held
/// for one index operation only, never across an await, so API queries never wait behind a
/// sync or a burst of deltas for long.
pub struct Index {
    shards: Box<[Mutex<PresenceIndex>]>,
    hasher: RandomState,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(PresenceIndex::new()))
                .collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Index {
    fn shard(&self, channel: &str) -> &Mutex<PresenceIndex> {
        &self.shards[(self.hasher.hash_one(channel) as usize) % SHARDS]
    }

    /// Adds or replaces a member. O(1).
    pub fn insert(&self, channel: &Channel, info: ClientInfo) {
        self.shard(channel).lock().insert(channel, info);
    }

    /// Removes a member if present. O(1).
    pub fn remove(&self, channel: &str, client: &str) {
        self.shard(channel).lock().remove(channel, client);
    }

    /// Members of a channel. O(members).
    pub fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.shard(channel)
            .lock()
            .channel(channel)
            .map(|c| c.members().cloned().collect())
            .unwrap_or_default()
    }

    /// Members of a channel as the protocol's JSON map, appended to `out`. O(members), a copy
    /// of entries encoded at insert time.
    pub fn presence_json(&self, channel: &str, out: &mut Vec<u8>) {
        write_presence_json(self.shard(channel).lock().channel(channel), out);
    }

    /// Counters of a channel. O(1).
    pub fn stats(&self, channel: &str) -> PresenceStats {
        self.shard(channel).lock().stats(channel)
    }

    /// Every channel with members. O(channels).
    pub fn channels(&self) -> Vec<(Channel, PresenceStats)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(shard.channels().map(|(c, p)| (c.clone(), p.stats())));
        }
        out
    }
}
