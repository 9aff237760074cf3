//! The wire format of cluster messages: one format-version byte, then a postcard frame.
//!
//! Decoding borrows from the NATS payload and never panics: an empty payload, an unknown
//! version, bytes that are not a frame, trailing bytes or an invalid entry are each a
//! [`Reject`] reason, counted by the caller and never applied. A rolling upgrade that changes
//! the format bumps [`FORMAT_VERSION`]; old nodes then reject (and count) the new frames
//! instead of misreading them.

use std::sync::Arc;

use rollcall_core::presence::{ClientInfo, NodeInfo};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::record::{Key, Record, shared};

/// The first byte of every message.
pub const FORMAT_VERSION: u8 = 1;

/// Longest node id, incarnation, channel or client id accepted from the wire.
const MAX_ID_LEN: usize = 1024;

/// Who sent a message: the node and its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin<'a> {
    pub node: &'a str,
    pub incarnation: &'a str,
}

/// One subscription on the wire. `conn_info`/`chan_info` are raw JSON texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEntry<'a> {
    pub channel: &'a str,
    pub client: &'a str,
    pub user: &'a str,
    #[serde(borrow)]
    pub conn_info: Option<&'a str>,
    #[serde(borrow)]
    pub chan_info: Option<&'a str>,
    /// bit 0: presence, bit 1: join_leave.
    pub flags: u8,
}

/// One change in a delta; its seq is the delta's `first_seq` plus its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change<'a> {
    /// The entry was added (or replaced).
    Join(#[serde(borrow)] WireEntry<'a>),
    /// The entry was removed; receivers know its record from their replica.
    Leave { channel: &'a str, client: &'a str },
}

/// `<prefix>.delta`: consecutive changes of one origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta<'a> {
    #[serde(borrow)]
    pub origin: Origin<'a>,
    pub first_seq: u64,
    /// When the batch's first change happened at the origin, µs since the Unix epoch
    /// (for the propagation-latency histogram).
    pub origin_time_us: u64,
    #[serde(borrow)]
    pub changes: Vec<Change<'a>>,
}

/// `<prefix>.heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat<'a> {
    #[serde(borrow)]
    pub origin: Origin<'a>,
    /// The last seq the origin published (or dropped while its link was down).
    pub last_seq: u64,
    /// How many entries the origin owned at `last_seq`.
    pub entries: u64,
    pub node: NodeInfo,
}

/// `<prefix>.sync.<node>` request body; the reply subject receives [`SyncChunk`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest<'a> {
    #[serde(borrow)]
    pub requester: Origin<'a>,
}

/// One part of a snapshot; the last one has `last: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncChunk<'a> {
    #[serde(borrow)]
    pub origin: Origin<'a>,
    /// The snapshot is the origin's owned set right after this seq.
    pub seq: u64,
    /// 0, 1, 2… so a lost chunk is noticed.
    pub index: u32,
    pub last: bool,
    #[serde(borrow)]
    pub entries: Vec<WireEntry<'a>>,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame<'a> {
    Delta(#[serde(borrow)] Delta<'a>),
    Heartbeat(#[serde(borrow)] Heartbeat<'a>),
    Leaving(#[serde(borrow)] Origin<'a>),
    SyncRequest(#[serde(borrow)] SyncRequest<'a>),
    SyncChunk(#[serde(borrow)] SyncChunk<'a>),
}

/// Why a message was not applied. The label is the `reason` of
/// `rollcall_cluster_rejected_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// No bytes at all.
    Empty,
    /// A format version this node does not speak (a newer or older node, or garbage).
    UnknownVersion,
    /// Not a frame of this version.
    Malformed,
    /// A well-formed frame with an invalid field (empty id, info that is not JSON…).
    Invalid,
    /// A frame on a subject where it does not belong, or an unknown subject.
    WrongSubject,
    /// From an incarnation that was replaced or announced its leave.
    RetiredIncarnation,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::Empty,
        Reject::UnknownVersion,
        Reject::Malformed,
        Reject::Invalid,
        Reject::WrongSubject,
        Reject::RetiredIncarnation,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::Empty => "empty",
            Reject::UnknownVersion => "unknown_version",
            Reject::Malformed => "malformed",
            Reject::Invalid => "invalid",
            Reject::WrongSubject => "wrong_subject",
            Reject::RetiredIncarnation => "retired_incarnation",
        }
    }
}

/// Encodes a frame with the version byte in front.
pub fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.push(FORMAT_VERSION);
    // Serializing into a Vec only fails for types postcard cannot represent (maps with
    // unknown length, `serialize_any`); our frames have none.
    postcard::to_extend(frame, buf).expect("cluster frames always serialize")
}

/// Decodes a message. Never panics; see [`Reject`].
pub fn decode(payload: &[u8]) -> Result<Frame<'_>, Reject> {
    let (&version, body) = payload.split_first().ok_or(Reject::Empty)?;
    if version != FORMAT_VERSION {
        return Err(Reject::UnknownVersion);
    }
    let (frame, rest) =
        postcard::take_from_bytes::<Frame<'_>>(body).map_err(|_| Reject::Malformed)?;
    if !rest.is_empty() {
        return Err(Reject::Malformed);
    }
    Ok(frame)
}

fn valid_id(s: &str) -> Result<(), Reject> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        Err(Reject::Invalid)
    } else {
        Ok(())
    }
}

impl Origin<'_> {
    /// Both ids non-empty and of sane length.
    pub fn validate(&self) -> Result<(), Reject> {
        valid_id(self.node)?;
        valid_id(self.incarnation)
    }
}

fn raw_json(s: Option<&str>) -> Result<Option<Arc<RawValue>>, Reject> {
    // Checked because the text is spliced verbatim into pushes to WebSocket clients: a peer
    // (or garbage on the subject) must not be able to break their JSON.
    s.map(|s| {
        RawValue::from_string(s.to_owned())
            .map(Arc::from)
            .map_err(|_| Reject::Invalid)
    })
    .transpose()
}

impl<'a> WireEntry<'a> {
    /// The wire form of a stored record.
    pub fn new(channel: &'a str, record: &'a Record) -> WireEntry<'a> {
        WireEntry {
            channel,
            client: &record.info.client,
            user: &record.info.user,
            conn_info: record.info.conn_info.as_deref().map(RawValue::get),
            chan_info: record.info.chan_info.as_deref().map(RawValue::get),
            flags: record.flags(),
        }
    }

    /// Validates and converts to a stored record.
    pub fn to_record(&self) -> Result<(Key, Record), Reject> {
        valid_id(self.channel)?;
        valid_id(self.client)?;
        if self.flags > 3 {
            return Err(Reject::Invalid);
        }
        let client = shared(self.client);
        let record = Record {
            info: ClientInfo {
                client: client.clone(),
                user: shared(self.user),
                conn_info: raw_json(self.conn_info)?,
                chan_info: raw_json(self.chan_info)?,
            },
            presence: self.flags & 1 != 0,
            join_leave: self.flags & 2 != 0,
        };
        Ok(((shared(self.channel), client), record))
    }

    /// Bytes this entry takes on the wire, roughly (for chunking under the max payload).
    pub fn size_hint(&self) -> usize {
        self.channel.len()
            + self.client.len()
            + self.user.len()
            + self.conn_info.map_or(0, str::len)
            + self.chan_info.map_or(0, str::len)
            + 16
    }
}

/// A validated change owning its data: what a delta carries, on either side of the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Join(Key, Record),
    Leave(Key),
}

/// A validated delta.
#[derive(Debug, Clone)]
pub struct ValidDelta {
    pub first_seq: u64,
    pub origin_time_us: u64,
    pub changes: Vec<Update>,
}

impl Delta<'_> {
    /// Validates every change; one bad change rejects the whole delta.
    pub fn validate(&self) -> Result<ValidDelta, Reject> {
        self.origin.validate()?;
        if self.changes.is_empty() || self.first_seq == 0 {
            return Err(Reject::Invalid);
        }
        self.first_seq
            .checked_add(self.changes.len() as u64)
            .ok_or(Reject::Invalid)?;
        let changes = self
            .changes
            .iter()
            .map(|c| match c {
                Change::Join(e) => e.to_record().map(|(k, r)| Update::Join(k, r)),
                Change::Leave { channel, client } => {
                    valid_id(channel)?;
                    valid_id(client)?;
                    Ok(Update::Leave((shared(channel), shared(client))))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(ValidDelta {
            first_seq: self.first_seq,
            origin_time_us: self.origin_time_us,
            changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> WireEntry<'static> {
        WireEntry {
            channel: "chat:1",
            client: "c1",
            user: "42",
            conn_info: Some(r#"{"name":"x"}"#),
            chan_info: None,
            flags: 3,
        }
    }

    fn origin() -> Origin<'static> {
        Origin {
            node: "a",
            incarnation: "a-1",
        }
    }

    #[test]
    fn frames_round_trip() {
        let frame = Frame::Delta(Delta {
            origin: origin(),
            first_seq: 7,
            origin_time_us: 1,
            changes: vec![
                Change::Join(entry()),
                Change::Leave {
                    channel: "chat:1",
                    client: "c0",
                },
            ],
        });
        let bytes = encode(&frame);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode(&bytes), Ok(frame));
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(decode(b""), Err(Reject::Empty));
        assert_eq!(decode(b"\x09abc"), Err(Reject::UnknownVersion));
        assert_eq!(decode(b"\x01\xff\xff\xff"), Err(Reject::Malformed));
        let mut ok = encode(&Frame::Leaving(origin()));
        ok.push(0);
        assert_eq!(decode(&ok), Err(Reject::Malformed));
        // Every prefix of a valid frame is rejected, never a panic.
        let full = encode(&Frame::SyncChunk(SyncChunk {
            origin: origin(),
            seq: 3,
            index: 0,
            last: true,
            entries: vec![entry(), entry()],
        }));
        for n in 0..full.len() {
            assert!(decode(&full[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut with_version = vec![FORMAT_VERSION];
            with_version.extend_from_slice(&bytes);
            let _ = decode(&bytes);
            if let Ok(Frame::Delta(d)) = decode(&with_version) {
                let _ = d.validate();
            }
        }
    }

    #[test]
    fn invalid_entries_reject_the_delta() {
        let mut bad = entry();
        bad.conn_info = Some("{not json");
        let d = Delta {
            origin: origin(),
            first_seq: 1,
            origin_time_us: 0,
            changes: vec![Change::Join(entry()), Change::Join(bad)],
        };
        assert_eq!(d.validate().unwrap_err(), Reject::Invalid);
        let mut empty = entry();
        empty.channel = "";
        assert_eq!(empty.to_record().unwrap_err(), Reject::Invalid);
        let mut flags = entry();
        flags.flags = 4;
        assert_eq!(flags.to_record().unwrap_err(), Reject::Invalid);
        let d = Delta {
            origin: origin(),
            first_seq: u64::MAX,
            origin_time_us: 0,
            changes: vec![Change::Join(entry())],
        };
        assert_eq!(d.validate().unwrap_err(), Reject::Invalid);
    }

    #[test]
    fn records_survive_the_wire() {
        let (key, record) = entry().to_record().unwrap();
        assert_eq!(&*key.0, "chat:1");
        assert!(record.presence && record.join_leave);
        assert_eq!(WireEntry::new(&key.0, &record), entry());
    }
}
