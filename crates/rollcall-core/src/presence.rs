//! The presence index: who is in each channel, with O(1) `num_clients` / `num_users` counters.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A client (connection) id: a UUID string, cheap to clone.
pub type ClientId = Arc<str>;
/// A channel name, cheap to clone.
pub type Channel = Arc<str>;

/// One subscription's presence record, serialized exactly as the protocol's `ClientInfo`:
/// `client` and `user` always present, `conn_info`/`chan_info` raw JSON and omitted when absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client: ClientId,
    /// The user id; `""` for anonymous connections.
    pub user: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub conn_info: Option<Arc<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chan_info: Option<Arc<RawValue>>,
}

/// Records are equal when ids match and the raw JSON texts are identical.
impl PartialEq for ClientInfo {
    fn eq(&self, other: &Self) -> bool {
        fn text(v: &Option<Arc<RawValue>>) -> Option<&str> {
            v.as_deref().map(RawValue::get)
        }
        self.client == other.client
            && self.user == other.user
            && text(&self.conn_info) == text(&other.conn_info)
            && text(&self.chan_info) == text(&other.chan_info)
    }
}

/// `num_clients` and `num_users` of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStats {
    pub num_clients: u32,
    pub num_users: u32,
}

/// One node as the `info` API lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique id of this run of the node (changes on restart).
    pub uid: String,
    pub name: String,
    pub version: String,
    /// Connections on the node.
    pub num_clients: u32,
    /// Distinct users connected to the node.
    pub num_users: u32,
    /// Channels with at least one subscriber on the node.
    pub num_channels: u32,
    /// Subscriptions on the node.
    pub num_subs: u32,
    /// Seconds since the node started.
    pub uptime: u64,
}

/// One member and its map entry `"<client id>":{ClientInfo}` encoded once at insert time, so
/// answering `presence` copies bytes instead of serializing every member on every query.
#[derive(Debug, Clone)]
struct Member {
    info: ClientInfo,
    entry_json: Box<str>,
}

impl Member {
    fn new(info: ClientInfo) -> Member {
        let mut json = serde_json::to_string(&*info.client).expect("strings serialize");
        json.push(':');
        json.push_str(&serde_json::to_string(&info).expect("ClientInfo serializes"));
        Member {
            info,
            entry_json: json.into_boxed_str(),
        }
    }
}

/// The members of one channel and a per-user count, so both stats are O(1).
#[derive(Debug, Default, Clone)]
pub struct ChannelPresence {
    clients: HashMap<ClientId, Member>,
    users: HashMap<Arc<str>, u32>,
}

impl ChannelPresence {
    pub fn stats(&self) -> PresenceStats {
        PresenceStats {
            num_clients: self.clients.len() as u32,
            num_users: self.users.len() as u32,
        }
    }

    pub fn members(&self) -> impl Iterator<Item = &ClientInfo> {
        self.clients.values().map(|m| &m.info)
    }

    pub fn get(&self, client: &str) -> Option<&ClientInfo> {
        self.clients.get(client).map(|m| &m.info)
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Appends the members as the protocol's JSON map `{"<client id>":ClientInfo,…}`.
    /// O(members), a copy of pre-encoded bytes.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let bytes: usize = self.clients.values().map(|m| m.entry_json.len() + 1).sum();
        out.reserve(bytes + 2);
        out.push(b'{');
        for (i, m) in self.clients.values().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(m.entry_json.as_bytes());
        }
        out.push(b'}');
    }
}

/// Appends `{}` or the channel's members as a JSON map (see [`ChannelPresence::write_json`]).
pub fn write_presence_json(channel: Option<&ChannelPresence>, out: &mut Vec<u8>) {
    match channel {
        Some(c) => c.write_json(out),
        None => out.extend_from_slice(b"{}"),
    }
}

/// Presence of many channels. Not synchronized: engines shard it behind their own locks.
///
/// Invariants: a channel key exists only while it has members; for every channel,
/// `users` holds exactly the distinct user ids of `clients` with their multiplicity.
#[derive(Debug, Default, Clone)]
pub struct PresenceIndex {
    channels: HashMap<Channel, ChannelPresence>,
    entries: usize,
}

impl PresenceIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `info` in `channel`. Returns the record it replaced, if any. O(1).
    pub fn insert(&mut self, channel: &Channel, info: ClientInfo) -> Option<ClientInfo> {
        let chan = self.channels.entry(channel.clone()).or_default();
        let user = info.user.clone();
        let old = chan
            .clients
            .insert(info.client.clone(), Member::new(info))
            .map(|m| m.info);
        match &old {
            Some(prev) if prev.user == user => {}
            Some(prev) => {
                let prev_user = prev.user.clone();
                Self::dec_user(&mut chan.users, &prev_user);
                *chan.users.entry(user).or_insert(0) += 1;
            }
            None => {
                *chan.users.entry(user).or_insert(0) += 1;
                self.entries += 1;
            }
        }
        old
    }

    /// Removes a client from a channel. Returns the removed record. O(1).
    pub fn remove(&mut self, channel: &str, client: &str) -> Option<ClientInfo> {
        let chan = self.channels.get_mut(channel)?;
        let removed = chan.clients.remove(client)?.info;
        Self::dec_user(&mut chan.users, &removed.user);
        if chan.clients.is_empty() {
            self.channels.remove(channel);
        }
        self.entries -= 1;
        Some(removed)
    }

    fn dec_user(users: &mut HashMap<Arc<str>, u32>, user: &Arc<str>) {
        if let Entry::Occupied(mut e) = users.entry(user.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// The channel's members, if it has any.
    pub fn channel(&self, channel: &str) -> Option<&ChannelPresence> {
        self.channels.get(channel)
    }

    /// The channel's stats; zeros for a channel without members. O(1).
    pub fn stats(&self, channel: &str) -> PresenceStats {
        self.channels
            .get(channel)
            .map(ChannelPresence::stats)
            .unwrap_or_default()
    }

    /// Every channel with members.
    pub fn channels(&self) -> impl Iterator<Item = (&Channel, &ChannelPresence)> {
        self.channels.iter()
    }

    /// Total (channel, client) entries. O(1).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Number of channels with members. O(1).
    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client: &str, user: &str) -> ClientInfo {
        ClientInfo {
            client: client.into(),
            user: user.into(),
            conn_info: None,
            chan_info: None,
        }
    }

    #[test]
    fn counters_track_clients_and_distinct_users() {
        let mut idx = PresenceIndex::new();
        let ch: Channel = "chat:1".into();
        idx.insert(&ch, info("a", "1"));
        idx.insert(&ch, info("b", "1"));
        idx.insert(&ch, info("c", "2"));
        idx.insert(&ch, info("d", ""));
        idx.insert(&ch, info("e", ""));
        assert_eq!(
            idx.stats("chat:1"),
            PresenceStats {
                num_clients: 5,
                num_users: 3
            }
        );
        assert_eq!(idx.len(), 5);
        idx.remove("chat:1", "a");
        assert_eq!(idx.stats("chat:1").num_users, 3);
        idx.remove("chat:1", "b");
        assert_eq!(idx.stats("chat:1").num_users, 2);
        idx.remove("chat:1", "d");
        idx.remove("chat:1", "e");
        assert_eq!(
            idx.stats("chat:1"),
            PresenceStats {
                num_clients: 1,
                num_users: 1
            }
        );
    }

    #[test]
    fn empty_channels_disappear() {
        let mut idx = PresenceIndex::new();
        let ch: Channel = "c".into();
        idx.insert(&ch, info("a", "1"));
        assert_eq!(idx.num_channels(), 1);
        assert!(idx.remove("c", "a").is_some());
        assert_eq!(idx.num_channels(), 0);
        assert!(idx.channel("c").is_none());
        assert_eq!(idx.stats("c"), PresenceStats::default());
        assert!(idx.is_empty());
    }

    #[test]
    fn removing_unknown_is_a_no_op() {
        let mut idx = PresenceIndex::new();
        assert!(idx.remove("c", "a").is_none());
        let ch: Channel = "c".into();
        idx.insert(&ch, info("a", "1"));
        assert!(idx.remove("c", "zz").is_none());
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn reinsert_replaces_without_double_counting() {
        let mut idx = PresenceIndex::new();
        let ch: Channel = "c".into();
        assert!(idx.insert(&ch, info("a", "1")).is_none());
        assert!(idx.insert(&ch, info("a", "1")).is_some());
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.stats("c").num_users, 1);
        // Same client id, other user: the user counts move.
        idx.insert(&ch, info("a", "2"));
        assert_eq!(
            idx.stats("c"),
            PresenceStats {
                num_clients: 1,
                num_users: 1
            }
        );
        assert_eq!(
            idx.channel("c").unwrap().get("a").unwrap().user.as_ref(),
            "2"
        );
    }

    #[test]
    fn presence_json_is_the_protocol_map() {
        let mut idx = PresenceIndex::new();
        let ch: Channel = "c".into();
        let mut out = Vec::new();
        write_presence_json(idx.channel("c"), &mut out);
        assert_eq!(out, b"{}");
        idx.insert(&ch, info("a", "1"));
        let mut b = info("b\"q", "2");
        b.chan_info = Some(Arc::from(RawValue::from_string("[1]".into()).unwrap()));
        idx.insert(&ch, b);
        let mut out = Vec::new();
        write_presence_json(idx.channel("c"), &mut out);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "a": {"client": "a", "user": "1"},
                "b\"q": {"client": "b\"q", "user": "2", "chan_info": [1]}
            })
        );
        // A replaced member's cached JSON is replaced too.
        idx.insert(&ch, info("a", "9"));
        let mut out = Vec::new();
        write_presence_json(idx.channel("c"), &mut out);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["a"]["user"], "9");
    }

    #[test]
    fn client_info_serializes_like_centrifugo() {
        let mut i = info("c1", "");
        assert_eq!(
            serde_json::to_string(&i).unwrap(),
            r#"{"client":"c1","user":""}"#
        );
        i.conn_info = Some(Arc::from(
            RawValue::from_string(r#"{"n":1}"#.into()).unwrap(),
        ));
        assert_eq!(
            serde_json::to_string(&i).unwrap(),
            r#"{"client":"c1","user":"","conn_info":{"n":1}}"#
        );
    }
}
