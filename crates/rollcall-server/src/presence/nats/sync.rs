//! Snapshot sync by request/reply: serving this node's owned set in chunks, fetching a peer's.

use std::time::Duration;

use async_nats::{Client, StatusCode, Subject};
use futures_util::StreamExt;

use super::local::Local;
use super::metrics::Metrics;
use super::replica::{Snapshot, SyncJob};
use super::wire::{Frame, Origin, Reject, SyncChunk, SyncRequest, WireEntry, decode, encode};

/// Room left in each chunk for the frame around the entries and the NATS headers.
const CHUNK_HEADROOM: usize = 4096;
/// Smallest chunk budget, whatever the server's max payload says.
const MIN_CHUNK: usize = 16 * 1024;

/// Why a snapshot could not be fetched. The label is the `result` of
/// `rollcall_cluster_syncs_requested_total`.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no chunk within {0:?}")]
    Timeout(Duration),
    #[error("no node answers on the sync subject")]
    NoResponders,
    #[error("the answer came from another incarnation (the peer restarted)")]
    WrongOrigin,
    #[error("a chunk was rejected: {0:?}")]
    Rejected(Reject),
    #[error("NATS: {0}")]
    Nats(String),
}

impl SyncError {
    pub fn label(&self) -> &'static str {
        match self {
            SyncError::Timeout(_) => "timeout",
            SyncError::NoResponders => "no_responders",
            SyncError::WrongOrigin => "wrong_origin",
            SyncError::Rejected(_) => "rejected",
            SyncError::Nats(_) => "error",
        }
    }
}

/// Fetches the owned set of `job.node` through `subject`. Waits at most `timeout` for each
/// chunk. Chunks arrive in order (one publisher, one subscriber), so a missing index means a
/// lost chunk and fails the sync.
pub async fn fetch(
    client: &Client,
    subject: String,
    me: Origin<'_>,
    job: &SyncJob,
    timeout: Duration,
    metrics: &Metrics,
) -> Result<Snapshot, SyncError> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| SyncError::Nats(e.to_string()))?;
    let request = encode(&Frame::SyncRequest(SyncRequest { requester: me }));
    metrics.bytes_sent.inc_by(request.len() as u64);
    client
        .publish_with_reply(subject, inbox, request.into())
        .await
        .map_err(|e| SyncError::Nats(e.to_string()))?;
    let mut snap = Snapshot::default();
    for index in 0u32.. {
        let msg = tokio::time::timeout(timeout, replies.next())
            .await
            .map_err(|_| SyncError::Timeout(timeout))?
            .ok_or_else(|| SyncError::Nats("reply subscription closed".into()))?;
        if msg.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(SyncError::NoResponders);
        }
        metrics.bytes_received.inc_by(msg.payload.len() as u64);
        let chunk = match decode(&msg.payload).map_err(SyncError::Rejected)? {
            Frame::SyncChunk(chunk) => chunk,
            _ => return Err(SyncError::Rejected(Reject::WrongSubject)),
        };
        chunk.origin.validate().map_err(SyncError::Rejected)?;
        if chunk.origin.node != job.node || chunk.origin.incarnation != &*job.incarnation {
            return Err(SyncError::WrongOrigin);
        }
        if chunk.index != index || (index > 0 && chunk.seq != snap.seq) {
            return Err(SyncError::Rejected(Reject::Invalid));
        }
        snap.seq = chunk.seq;
        snap.entries.reserve(chunk.entries.len());
        for entry in &chunk.entries {
            let (key, record) = entry.to_record().map_err(SyncError::Rejected)?;
            snap.entries.insert(key, record);
        }
        if chunk.last {
            break;
        }
    }
    Ok(snap)
}

/// Answers one sync request: this node's owned set as of its current seq, in chunks that each
/// fit the server's max payload. An entry is never split.
pub async fn serve(
    client: &Client,
    reply: Subject,
    local: &Local,
    me: Origin<'_>,
    metrics: &Metrics,
) -> Result<(), async_nats::PublishError> {
    let (seq, entries) = local.snapshot();
    let budget = client
        .max_payload()
        .saturating_sub(CHUNK_HEADROOM)
        .max(MIN_CHUNK);
    let wire: Vec<WireEntry<'_>> = entries
        .iter()
        .map(|(k, r)| WireEntry::new(&k.0, r))
        .collect();
    let mut index = 0;
    let mut start = 0;
    let mut bytes = 0;
    for (i, entry) in wire.iter().enumerate() {
        let size = entry.size_hint();
        if i > start && bytes + size > budget {
            publish_chunk(
                client,
                &reply,
                me,
                seq,
                index,
                false,
                &wire[start..i],
                metrics,
            )
            .await?;
            index += 1;
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    publish_chunk(
        client,
        &reply,
        me,
        seq,
        index,
        true,
        &wire[start..],
        metrics,
    )
    .await?;
    metrics.syncs_served.inc();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn publish_chunk(
    client: &Client,
    reply: &Subject,
    origin: Origin<'_>,
    seq: u64,
    index: u32,
    last: bool,
    entries: &[WireEntry<'_>],
    metrics: &Metrics,
) -> Result<(), async_nats::PublishError> {
    let payload = encode(&Frame::SyncChunk(SyncChunk {
        origin,
        seq,
        index,
        last,
        entries: entries.to_vec(),
    }));
    metrics.bytes_sent.inc_by(payload.len() as u64);
    client.publish(reply.clone(), payload.into()).await
}
