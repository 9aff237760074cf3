//! The hub: this node's subscriptions per channel and the fan-out of join/leave pushes to them.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use rollcall_core::presence::{Channel, ClientId, ClientInfo};
use rollcall_core::protocol::{PushBody, encode_push};

use crate::outbox::Outbox;

/// Shards of the channel map. Subscribes to different channels rarely contend on one lock
/// (centrifuge shards its hub the same way).
const SHARDS: usize = 64;

/// One local subscription as the hub sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub outbox: Outbox,
    /// Whether this subscription receives join/leave pushes (decided at subscribe time).
    pub push_join_leave: bool,
}

type ChannelSubs = HashMap<ClientId, Subscriber>;

/// Counters of this node for the `info` API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalCounts {
    pub num_clients: u32,
    pub num_users: u32,
    pub num_channels: u32,
    pub num_subs: u32,
}

/// What a fan-out did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Subscribers the push was queued for.
    pub queued: u32,
    /// Subscribers whose queue overflowed (they are closing with 3008).
    pub dropped: u32,
}

/// This node's subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    // parking_lot mutexes: held for map updates and non-blocking queue pushes, never across
    // an await.
    shards: Box<[Mutex<HashMap<Channel, ChannelSubs>>]>,
    hasher: RandomState,
    users: Mutex<HashMap<Arc<str>, u32>>,
    num_clients: AtomicU32,
    num_subs: AtomicU32,
    num_channels: AtomicU32,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                hasher: RandomState::new(),
                users: Mutex::new(HashMap::new()),
                num_clients: AtomicU32::new(0),
                num_subs: AtomicU32::new(0),
                num_channels: AtomicU32::new(0),
            }),
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<HashMap<Channel, ChannelSubs>> {
        &self.inner.shards[(self.inner.hasher.hash_one(channel) as usize) % SHARDS]
    }

    /// Counts a new connection of `user`.
    pub fn connect(&self, user: &Arc<str>) {
        self.inner.num_clients.fetch_add(1, Ordering::Relaxed);
        *self.inner.users.lock().entry(user.clone()).or_insert(0) += 1;
    }

    /// Forgets a connection of `user` (after all its subscriptions were removed).
    pub fn disconnect(&self, user: &Arc<str>) {
        self.inner.num_clients.fetch_sub(1, Ordering::Relaxed);
        let mut users = self.inner.users.lock();
        if let MapEntry::Occupied(mut e) = users.entry(user.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Registers a local subscription. Returns false if `client` was already subscribed.
    pub fn subscribe(&self, channel: &Channel, client: &ClientId, sub: Subscriber) -> bool {
        let mut shard = self.shard(channel).lock();
        let subs = match shard.entry(channel.clone()) {
            MapEntry::Occupied(e) => e.into_mut(),
            MapEntry::Vacant(e) => {
                self.inner.num_channels.fetch_add(1, Ordering::Relaxed);
                e.insert(HashMap::new())
            }
        };
        match subs.entry(client.clone()) {
            MapEntry::Occupied(_) => false,
            MapEntry::Vacant(e) => {
                e.insert(sub);
                self.inner.num_subs.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Removes a local subscription. Returns whether it existed.
    pub fn unsubscribe(&self, channel: &str, client: &str) -> bool {
        let mut shard = self.shard(channel).lock();
        let Some(subs) = shard.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(client).is_some();
        if removed {
            self.inner.num_subs.fetch_sub(1, Ordering::Relaxed);
        }
        if subs.is_empty() {
            shard.remove(channel);
            self.inner.num_channels.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Whether the channel has local subscribers (a cheap check before encoding a push).
    pub fn has_subscribers(&self, channel: &str) -> bool {
        self.shard(channel).lock().contains_key(channel)
    }

    /// Pushes a join to every local subscriber of `channel` with join/leave pushes enabled.
    /// The push is encoded once and shared by all receivers.
    pub fn broadcast_join(&self, channel: &str, info: &ClientInfo) -> Delivered {
        self.broadcast(channel, || encode_push(channel, PushBody::Join { info }))
    }

    /// Pushes a leave to every local subscriber of `channel` with join/leave pushes enabled.
    pub fn broadcast_leave(&self, channel: &str, info: &ClientInfo) -> Delivered {
        self.broadcast(channel, || encode_push(channel, PushBody::Leave { info }))
    }

    fn broadcast(&self, channel: &str, encode: impl FnOnce() -> Vec<u8>) -> Delivered {
        let mut delivered = Delivered::default();
        // Holding the shard lock while queueing keeps pushes of one channel in the order their
        // subscribes/unsubscribes happened; queueing never blocks, so the hold is short.
        let shard = self.shard(channel).lock();
        let Some(subs) = shard.get(channel) else {
            return delivered;
        };
        let mut encode = Some(encode);
        let mut msg: Option<Bytes> = None;
        for sub in subs.values().filter(|s| s.push_join_leave) {
            let bytes = msg
                .get_or_insert_with(|| Bytes::from(encode.take().map(|f| f()).unwrap_or_default()))
                .clone();
            match sub.outbox.send(bytes) {
                Ok(()) => delivered.queued += 1,
                Err(_) => delivered.dropped += 1,
            }
        }
        delivered
    }

    /// Every local subscription whose channel matches `pred`, as (channel, client, outbox).
    /// Used on namespace reload to find subscriptions whose namespace disappeared.
    pub fn find(&self, mut pred: impl FnMut(&str) -> bool) -> Vec<(Channel, ClientId, Outbox)> {
        let mut found = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock();
            for (channel, subs) in shard.iter().filter(|(c, _)| pred(c)) {
                for (client, sub) in subs {
                    found.push((channel.clone(), client.clone(), sub.outbox.clone()));
                }
            }
        }
        found
    }

    /// This node's counters. O(1).
    pub fn counts(&self) -> LocalCounts {
        LocalCounts {
            num_clients: self.inner.num_clients.load(Ordering::Relaxed),
            num_users: self.inner.users.lock().len() as u32,
            num_channels: self.inner.num_channels.load(Ordering::Relaxed),
            num_subs: self.inner.num_subs.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Next;

    fn info(client: &str) -> ClientInfo {
        ClientInfo {
            client: client.into(),
            user: "u".into(),
            conn_info: None,
            chan_info: None,
        }
    }

    #[tokio::test]
    async fn join_reaches_only_subscribers_with_push_enabled() {
        let hub = Hub::new();
        let ch: Channel = "chat:1".into();
        let (a, mut ra) = Outbox::new(1 << 20);
        let (b, _rb) = Outbox::new(1 << 20);
        assert!(hub.subscribe(
            &ch,
            &"a".into(),
            Subscriber {
                outbox: a,
                push_join_leave: true
            }
        ));
        assert!(hub.subscribe(
            &ch,
            &"b".into(),
            Subscriber {
                outbox: b,
                push_join_leave: false
            }
        ));
        let d = hub.broadcast_join("chat:1", &info("x"));
        assert_eq!(
            d,
            Delivered {
                queued: 1,
                dropped: 0
            }
        );
        match ra.next().await {
            Next::Frame(f) => assert_eq!(
                f,
                br#"{"push":{"channel":"chat:1","join":{"info":{"client":"x","user":"u"}}}}"#
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn counters_follow_subscriptions() {
        let hub = Hub::new();
        let ch: Channel = "c".into();
        let (a, _ra) = Outbox::new(100);
        let user: Arc<str> = "u".into();
        hub.connect(&user);
        hub.connect(&user);
        assert!(hub.subscribe(
            &ch,
            &"a".into(),
            Subscriber {
                outbox: a.clone(),
                push_join_leave: false
            }
        ));
        assert!(!hub.subscribe(
            &ch,
            &"a".into(),
            Subscriber {
                outbox: a,
                push_join_leave: false
            }
        ));
        assert_eq!(
            hub.counts(),
            LocalCounts {
                num_clients: 2,
                num_users: 1,
                num_channels: 1,
                num_subs: 1
            }
        );
        assert!(hub.unsubscribe("c", "a"));
        assert!(!hub.unsubscribe("c", "a"));
        hub.disconnect(&user);
        hub.disconnect(&user);
        assert_eq!(hub.counts(), LocalCounts::default());
    }
}
