//! What the cluster engine stores per subscription, locally and in the replica.

use std::sync::Arc;

use rollcall_core::presence::{Channel, ClientId, ClientInfo};

use crate::presence::Entry;

/// A subscription's identity: (channel, client). Client ids are unique per connection, so a key
/// belongs to exactly one node.
pub type Key = (Channel, ClientId);

/// One subscription as replicated: its presence record and the two flags that decide what the
/// receivers do with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub info: ClientInfo,
    /// Counted by `presence` / `presence_stats`.
    pub presence: bool,
    /// Joins/leaves are pushed to subscribers when it appears/disappears.
    pub join_leave: bool,
}

impl Record {
    /// Splits an engine entry into its key and record.
    pub fn from_entry(entry: Entry) -> (Key, Record) {
        let key = (entry.channel, entry.info.client.clone());
        let record = Record {
            info: entry.info,
            presence: entry.presence,
            join_leave: entry.join_leave,
        };
        (key, record)
    }

    /// Whether a receiver has anything to do with it: entries with neither presence nor
    /// join/leave are not replicated at all.
    pub fn is_replicated(&self) -> bool {
        self.presence || self.join_leave
    }

    /// The two flags in one byte (wire format).
    pub fn flags(&self) -> u8 {
        u8::from(self.presence) | (u8::from(self.join_leave) << 1)
    }
}

/// A shared, immutable string, as ids are stored everywhere.
pub fn shared(s: &str) -> Arc<str> {
    Arc::from(s)
}
