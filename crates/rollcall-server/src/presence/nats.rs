//! The NATS cluster engine: every node answers presence for the whole cluster from memory.
//!
//! Each node owns the entries of its own connections and is their only writer; it publishes
//! every change as a numbered delta of its `(node_id, incarnation)` and keeps a replica of
//! every peer's owned set, applied in seq order. A gap, an unknown origin or a new incarnation
//! triggers a snapshot request (chunked request/reply) to the origin; deltas that arrive
//! meanwhile are buffered and applied past the snapshot's seq. Heartbeats carry the last seq,
//! so a lost delta is noticed even when the origin goes quiet, and their absence for
//! `node_timeout` declares a peer down. Joins and leaves of remote entries are pushed to local
//! subscribers exactly when the entry appears in or vanishes from the replica, so one message
//! serves both replication and events, and a subscriber never sees a duplicate join.
//!
//! Layout: `subjects` (every subject name), `wire` (versioned encoding), `record` (what is
//! stored), `index` (cluster-wide presence, sharded), `local` (owned set and change log),
//! `replica` (peer state machine), `sync` (snapshots), `bridge` (the tasks doing NATS I/O),
//! `metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::Client;
use prometheus_client::registry::Registry;
use rollcall_core::config::NatsConfig;
use rollcall_core::presence::{Channel, ClientId, ClientInfo, NodeInfo, PresenceStats};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::memory::Identity;
use super::{BoxFuture, Entry, PresenceEngine};
use crate::hub::Hub;

mod bridge;
mod local;
mod metrics;
mod record;
mod replica;
mod subjects;
mod sync;
mod wire;

pub use subjects::InvalidPrefix;
pub use wire::FORMAT_VERSION;

use super::index::Index;
use local::Local;
use metrics::Metrics;
use replica::Replica;
use subjects::Subjects;
use wire::{Frame, Origin, encode};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url} (engine.nats.url): {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to NATS subject {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    #[error("invalid engine.nats settings: {0}")]
    Config(String),
}

/// The cluster engine. Queries never touch the network: they read the local index.
pub struct NatsEngine {
    shared: Arc<Shared>,
}

/// State shared by the engine handle and its tasks.
struct Shared {
    client: Client,
    subjects: Subjects,
    node: String,
    incarnation: String,
    identity: Identity,
    hub: Hub,
    heartbeat_interval: Duration,
    node_timeout: Duration,
    index: Arc<Index>,
    local: Local,
    replica: Replica,
    metrics: Arc<Metrics>,
    /// True once the start-up sync from every peer found is done.
    synced: watch::Sender<bool>,
    stopping: AtomicBool,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Shared {
    fn origin(&self) -> Origin<'_> {
        Origin {
            node: &self.node,
            incarnation: &self.incarnation,
        }
    }
}

/// Connects to NATS, subscribes, and starts the engine's tasks.
///
/// Returns once connected and subscribed; an unreachable NATS here is an error naming the URL.
/// After that the connection is retried forever. [`PresenceEngine::ready`] turns true after
/// one `heartbeat_interval` of peer discovery and a snapshot sync from every peer found
/// ([`NatsEngine::wait_synced`] awaits it). Metrics are registered in `registry` under
/// `rollcall_cluster_`.
pub async fn start(
    config: &NatsConfig,
    hub: Hub,
    identity: Identity,
    registry: &mut Registry,
) -> Result<Arc<NatsEngine>, NatsError> {
    let subjects = Subjects::new(&config.prefix)?;
    let heartbeat_interval = config.heartbeat_interval.0;
    let node_timeout = config.node_timeout.0;
    if heartbeat_interval.is_zero() {
        return Err(NatsError::Config(
            "heartbeat_interval must be positive".into(),
        ));
    }
    if node_timeout <= heartbeat_interval {
        return Err(NatsError::Config(format!(
            "node_timeout ({}) must be longer than heartbeat_interval ({})",
            config.node_timeout, config.heartbeat_interval
        )));
    }
    if identity.name.is_empty() || identity.uid.is_empty() {
        return Err(NatsError::Config(
            "the node needs a name (node.name) and a uid".into(),
        ));
    }

    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    // Reconnect fast (NATS restarts must be survived well within node_timeout), but not in a
    // tight loop: 0 ms, then doubling from 20 ms up to half a heartbeat interval.
    let cap = (heartbeat_interval / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let client = async_nats::ConnectOptions::new()
        .name(format!("rollcall {}", identity.name))
        .no_echo()
        .ping_interval(node_timeout.max(Duration::from_secs(1)))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            if attempts <= 1 {
                Duration::ZERO
            } else {
                let exp = attempts.min(16) as u32;
                (Duration::from_millis(10) * 2u32.pow(exp)).min(cap)
            }
        })
        .event_callback(move |event| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .connect(config.url.as_str())
        .await
        .map_err(|source| NatsError::Connect {
            url: config.url.clone(),
            source,
        })?;

    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|source| NatsError::Subscribe { subject, source })
        }
    };
    let broadcast = subscribe(subjects.broadcast.clone()).await?;
    let sync_requests = subscribe(subjects.sync(&identity.name)).await?;

    let metrics = Arc::new(Metrics::new(registry));
    metrics.link_up.set(1);
    let index = Arc::new(Index::default());
    let me = Origin {
        node: &identity.name,
        incarnation: &identity.uid,
    };
    let replica = Replica::new(
        me,
        node_timeout,
        index.clone(),
        hub.clone(),
        metrics.clone(),
    );
    let shared = Arc::new(Shared {
        client,
        subjects,
        node: identity.name.clone(),
        incarnation: identity.uid.clone(),
        identity,
        hub,
        heartbeat_interval,
        node_timeout,
        local: Local::new(index.clone()),
        index,
        replica,
        metrics,
        synced: watch::Sender::new(false),
        stopping: AtomicBool::new(false),
        cancel: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    bridge::spawn(&shared, broadcast, sync_requests, events_rx);
    tracing::info!(
        url = %config.url,
        prefix = %config.prefix,
        node = %shared.node,
        incarnation = %shared.incarnation,
        "cluster engine connected to NATS"
    );
    Ok(Arc::new(NatsEngine { shared }))
}

impl NatsEngine {
    /// Waits until the start-up sync is done (what turns [`PresenceEngine::ready`] true while
    /// connected).
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// This node's `(node_id, incarnation)`.
    pub fn identity(&self) -> (&str, &str) {
        (&self.shared.node, &self.shared.incarnation)
    }
}

impl Drop for NatsEngine {
    /// Stops the tasks without announcing a leave (peers expire this node after
    /// `node_timeout`, as after a crash); call [`PresenceEngine::shutdown`] first for a
    /// graceful stop.
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl PresenceEngine for NatsEngine {
    fn add(&self, entry: Entry) {
        self.shared.local.add(entry);
    }

    fn remove(&self, channel: &Channel, client: &ClientId) {
        self.shared.local.remove(channel, client);
    }

    fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.shared.index.presence(channel)
    }

    fn presence_json(&self, channel: &str, out: &mut Vec<u8>) {
        self.shared.index.presence_json(channel, out)
    }

    fn presence_stats(&self, channel: &str) -> PresenceStats {
        self.shared.index.stats(channel)
    }

    fn channels(&self) -> Vec<(Channel, PresenceStats)> {
        self.shared.index.channels()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = vec![self.shared.identity.node_info(&self.shared.hub)];
        nodes.extend(self.shared.replica.nodes());
        nodes
    }

    fn ready(&self) -> bool {
        *self.shared.synced.borrow()
            && self.shared.replica.is_link_up()
            && !self.shared.stopping.load(Ordering::Acquire)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let shared = &self.shared;
            if shared.stopping.swap(true, Ordering::AcqRel) {
                return;
            }
            shared.local.stop();
            let leaving = encode(&Frame::Leaving(shared.origin()));
            shared.metrics.bytes_sent.inc_by(leaving.len() as u64);
            let announce = async {
                shared
                    .client
                    .publish(shared.subjects.leaving.clone(), leaving.into())
                    .await
                    .ok()?;
                shared.client.flush().await.ok()
            };
            if tokio::time::timeout(Duration::from_secs(2), announce)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                tracing::warn!(
                    "could not announce the leave to peers; they will time this node out"
                );
            }
            shared.cancel.cancel();
            shared.tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(2), shared.tasks.wait()).await;
        })
    }
}
