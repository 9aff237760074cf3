//! Client protocol messages (Centrifugo protocol v2, JSON): commands in, replies and pushes out.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::codes::{ErrorCode, ProtocolError};
use crate::presence::{ClientInfo, PresenceStats};

/// `connect` parameters. Unknown fields are ignored, as protobuf-JSON decoding does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    pub token: String,
    pub data: Option<Box<RawValue>>,
    pub name: String,
    pub version: String,
}

/// `subscribe` parameters. Recovery fields are accepted and ignored (no history here).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    pub channel: String,
    pub token: String,
    pub join_leave: bool,
}

/// Parameters of `unsubscribe`, `presence` and `presence_stats`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChannelRequest {
    pub channel: String,
}

/// `refresh` parameters: a new connection token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    pub token: String,
}

/// `sub_refresh` parameters: a new subscription token for a channel.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubRefreshRequest {
    pub channel: String,
    pub token: String,
}

/// The wire shape of one command: `{"id":N,"<method>":{…}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireCommand {
    id: u32,
    connect: Option<ConnectRequest>,
    subscribe: Option<SubscribeRequest>,
    unsubscribe: Option<ChannelRequest>,
    presence: Option<ChannelRequest>,
    presence_stats: Option<ChannelRequest>,
    refresh: Option<RefreshRequest>,
    sub_refresh: Option<SubRefreshRequest>,
    ping: Option<IgnoredAny>,
    publish: Option<IgnoredAny>,
    history: Option<IgnoredAny>,
    rpc: Option<IgnoredAny>,
    send: Option<IgnoredAny>,
}

/// A decoded command.
#[derive(Debug)]
pub enum Method {
    Connect(ConnectRequest),
    Subscribe(SubscribeRequest),
    Unsubscribe(ChannelRequest),
    Presence(ChannelRequest),
    PresenceStats(ChannelRequest),
    Refresh(RefreshRequest),
    SubRefresh(SubRefreshRequest),
    /// The old-style ping command; answered with an empty `ping` reply.
    Ping,
    /// A Centrifugo method Rollcall does not offer (publish, history, rpc, send): error 104.
    Unsupported(&'static str),
    /// `{}`: the client's answer to a server ping.
    Pong,
}

impl Method {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Method::Connect(_) => "connect",
            Method::Subscribe(_) => "subscribe",
            Method::Unsubscribe(_) => "unsubscribe",
            Method::Presence(_) => "presence",
            Method::PresenceStats(_) => "presence_stats",
            Method::Refresh(_) => "refresh",
            Method::SubRefresh(_) => "sub_refresh",
            Method::Ping => "ping",
            Method::Unsupported(m) => m,
            Method::Pong => "pong",
        }
    }
}

/// Why a command line could not be decoded; every case closes the connection with 3501.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or a field of the wrong type.
    Malformed,
    /// No method key (and not an empty pong), or more than one.
    NoSingleMethod,
}

/// Decodes one command (one line of a frame).
pub fn decode_command(line: &[u8]) -> Result<(u32, Method), DecodeError> {
    let wire: WireCommand = serde_json::from_slice(line).map_err(|_| DecodeError::Malformed)?;
    let id = wire.id;
    let mut found: Option<Method> = None;
    let mut count = 0;
    let mut take = |m: Method| {
        count += 1;
        found = Some(m);
    };
    if let Some(r) = wire.connect {
        take(Method::Connect(r));
    }
    if let Some(r) = wire.subscribe {
        take(Method::Subscribe(r));
    }
    if let Some(r) = wire.unsubscribe {
        take(Method::Unsubscribe(r));
    }
    if let Some(r) = wire.presence {
        take(Method::Presence(r));
    }
    if let Some(r) = wire.presence_stats {
        take(Method::PresenceStats(r));
    }
    if let Some(r) = wire.refresh {
        take(Method::Refresh(r));
    }
    if let Some(r) = wire.sub_refresh {
        take(Method::SubRefresh(r));
    }
    if wire.ping.is_some() {
        take(Method::Ping);
    }
    if wire.publish.is_some() {
        take(Method::Unsupported("publish"));
    }
    if wire.history.is_some() {
        take(Method::Unsupported("history"));
    }
    if wire.rpc.is_some() {
        take(Method::Unsupported("rpc"));
    }
    if wire.send.is_some() {
        take(Method::Unsupported("send"));
    }
    match (count, found) {
        (1, Some(m)) => Ok((id, m)),
        (0, None) if id == 0 => Ok((0, Method::Pong)),
        _ => Err(DecodeError::NoSingleMethod),
    }
}

/// Splits a frame into its non-empty command lines.
pub fn lines(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    frame
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// Result of `connect`.
#[derive(Debug, Serialize)]
pub struct ConnectResult<'a> {
    pub client: &'a str,
    pub version: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
    /// Server-side subscriptions, each `{}` (or with `expires`/`ttl`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<&'a str, SubscribeResult>,
    /// Server ping interval in seconds.
    pub ping: u32,
    pub pong: bool,
}

/// Result of `subscribe` (and of `sub_refresh`).
#[derive(Debug, Default, Serialize)]
pub struct SubscribeResult {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
}

/// Result of `refresh`.
#[derive(Debug, Serialize)]
pub struct RefreshResult<'a> {
    pub client: &'a str,
    pub version: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// An empty result object `{}`.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// Serializes presence records as Centrifugo's map `{"<client id>": ClientInfo}`.
#[derive(Debug)]
pub struct PresenceMap<'a>(pub &'a [ClientInfo]);

impl Serialize for PresenceMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for info in self.0 {
            map.serialize_entry(&*info.client, info)?;
        }
        map.end()
    }
}

/// Result of `presence`: `{"presence":{…}}`, the map always present.
#[derive(Debug, Serialize)]
pub struct PresenceResult<'a> {
    pub presence: PresenceMap<'a>,
}

/// The body of a reply: exactly one result key, or `error`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyBody<'a> {
    Connect(ConnectResult<'a>),
    Subscribe(SubscribeResult),
    Unsubscribe(Empty),
    Presence(PresenceResult<'a>),
    PresenceStats(PresenceStats),
    Refresh(RefreshResult<'a>),
    SubRefresh(SubscribeResult),
    Ping(Empty),
    Error(ProtocolError),
}

/// A reply to a command: `{"id":N,"<method>":{…}}`.
#[derive(Debug, Serialize)]
pub struct Reply<'a> {
    pub id: u32,
    #[serde(flatten)]
    pub body: ReplyBody<'a>,
}

impl<'a> Reply<'a> {
    pub fn error(id: u32, code: ErrorCode) -> Self {
        Reply {
            id,
            body: ReplyBody::Error(code.to_error()),
        }
    }

    /// The reply as one JSON line (no trailing newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("replies always serialize")
    }
}

/// What a push carries besides its channel.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushBody<'a> {
    Join { info: &'a ClientInfo },
    Leave { info: &'a ClientInfo },
    Unsubscribe { code: u32, reason: &'a str },
}

#[derive(Debug, Serialize)]
struct PushInner<'a> {
    channel: &'a str,
    #[serde(flatten)]
    body: PushBody<'a>,
}

#[derive(Debug, Serialize)]
struct PushFrame<'a> {
    push: PushInner<'a>,
}

/// Encodes a push as one JSON line: `{"push":{"channel":"…","join":{"info":{…}}}}`.
pub fn encode_push(channel: &str, body: PushBody<'_>) -> Vec<u8> {
    serde_json::to_vec(&PushFrame {
        push: PushInner { channel, body },
    })
    .expect("pushes always serialize")
}

/// The server's ping: an empty object.
pub const PING: &[u8] = b"{}";

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn decodes_each_method() {
        let (id, m) = decode_command(br#"{"id":1,"connect":{"token":"t","name":"js"}}"#).unwrap();
        assert_eq!(id, 1);
        assert!(matches!(m, Method::Connect(ConnectRequest { ref token, .. }) if token == "t"));
        let (_, m) =
            decode_command(br#"{"id":2,"subscribe":{"channel":"c","join_leave":true}}"#).unwrap();
        assert!(matches!(
            m,
            Method::Subscribe(SubscribeRequest {
                join_leave: true,
                ..
            })
        ));
        let (_, m) = decode_command(br#"{"id":3,"presence_stats":{"channel":"c"}}"#).unwrap();
        assert!(matches!(m, Method::PresenceStats(_)));
        let (_, m) = decode_command(br#"{"id":3,"publish":{"channel":"c","data":{}}}"#).unwrap();
        assert!(matches!(m, Method::Unsupported("publish")));
        let (_, m) = decode_command(br#"{"id":3,"ping":{}}"#).unwrap();
        assert!(matches!(m, Method::Ping));
    }

    #[test]
    fn empty_object_is_a_pong() {
        assert!(matches!(decode_command(b"{}"), Ok((0, Method::Pong))));
    }

    #[test]
    fn bad_commands_are_rejected() {
        assert_eq!(decode_command(b"nope").unwrap_err(), DecodeError::Malformed);
        assert_eq!(
            decode_command(br#"{"id":1,"subscribe":{"channel":5}}"#).unwrap_err(),
            DecodeError::Malformed
        );
        assert_eq!(
            decode_command(br#"{"id":1}"#).unwrap_err(),
            DecodeError::NoSingleMethod
        );
        assert_eq!(
            decode_command(br#"{"id":1,"foo":{}}"#).unwrap_err(),
            DecodeError::NoSingleMethod
        );
        assert_eq!(
            decode_command(br#"{"id":1,"presence":{},"presence_stats":{}}"#).unwrap_err(),
            DecodeError::NoSingleMethod
        );
        assert!(decode_command(b"[1]").is_err());
        assert!(decode_command(b"\"x\"").is_err());
    }

    #[test]
    fn splits_frames_into_lines() {
        let v: Vec<_> = lines(b"{\"id\":1}\n\n{\"id\":2}\r\n").collect();
        assert_eq!(v, vec![&b"{\"id\":1}"[..], &b"{\"id\":2}"[..]]);
    }

    #[test]
    fn replies_have_centrifugo_shapes() {
        let r = Reply {
            id: 4,
            body: ReplyBody::PresenceStats(PresenceStats {
                num_clients: 2,
                num_users: 1,
            }),
        };
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            r#"{"id":4,"presence_stats":{"num_clients":2,"num_users":1}}"#
        );
        let r = Reply::error(5, ErrorCode::PermissionDenied);
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            r#"{"id":5,"error":{"code":103,"message":"permission denied"}}"#
        );
        let r = Reply {
            id: 6,
            body: ReplyBody::Subscribe(SubscribeResult::default()),
        };
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            r#"{"id":6,"subscribe":{}}"#
        );
        let mut subs = BTreeMap::new();
        subs.insert("chat:1", SubscribeResult::default());
        let r = Reply {
            id: 1,
            body: ReplyBody::Connect(ConnectResult {
                client: "c",
                version: "0.1.0",
                expires: true,
                ttl: 60,
                subs,
                ping: 25,
                pong: true,
            }),
        };
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            r#"{"id":1,"connect":{"client":"c","version":"0.1.0","expires":true,"ttl":60,"subs":{"chat:1":{}},"ping":25,"pong":true}}"#
        );
    }

    #[test]
    fn presence_and_pushes_have_centrifugo_shapes() {
        let info = ClientInfo {
            client: Arc::from("c1"),
            user: Arc::from("42"),
            conn_info: None,
            chan_info: Some(Arc::from(RawValue::from_string("[1]".into()).unwrap())),
        };
        let list = [info.clone()];
        let r = Reply {
            id: 2,
            body: ReplyBody::Presence(PresenceResult {
                presence: PresenceMap(&list),
            }),
        };
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            r#"{"id":2,"presence":{"presence":{"c1":{"client":"c1","user":"42","chan_info":[1]}}}}"#
        );
        let p = encode_push("chat:1", PushBody::Join { info: &info });
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"{"push":{"channel":"chat:1","join":{"info":{"client":"c1","user":"42","chan_info":[1]}}}}"#
        );
        let p = encode_push(
            "chat:1",
            PushBody::Unsubscribe {
                code: 2000,
                reason: "server unsubscribe",
            },
        );
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"{"push":{"channel":"chat:1","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#
        );
    }
}
