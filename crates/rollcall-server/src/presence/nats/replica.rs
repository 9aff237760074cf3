//! The replica of every peer's owned set, and the rules that keep it equal to theirs.
//!
//! All peer state sits behind one std-style mutex that is never held across an await: the
//! async tasks decode messages, call one handler here, and run the [`SyncJob`]s it returns.
//! Handlers update the shared [`Index`] and deliver join/leave pushes to local subscribers in
//! the same critical section, so for one (channel, client) a subscriber always sees join and
//! leave alternate: a push is sent exactly when the entry appears in or vanishes from the
//! replica, never on a replace.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rollcall_core::presence::NodeInfo;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::local::now_us;
use super::metrics::Metrics;
use super::record::{Key, Record};
use super::wire::{Origin, Reject, Update, ValidDelta};
use crate::hub::Hub;
use crate::presence::index::Index;

/// Changes buffered for a peer while its snapshot is on the way. Past this the buffer is
/// dropped; the seq check after the snapshot then asks for another one.
const MAX_BUFFERED_CHANGES: usize = 500_000;
/// Retired incarnations remembered (to ignore their late messages).
const MAX_RETIRED: usize = 4096;

/// A snapshot request to make. The caller runs it and reports back with
/// [`Replica::on_snapshot`] or [`Replica::on_sync_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncJob {
    pub node: String,
    pub incarnation: Arc<str>,
    /// Identifies this attempt: a result for an older attempt is ignored.
    pub ticket: u64,
}

/// A peer's owned set as of `seq`.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub seq: u64,
    pub entries: HashMap<Key, Record>,
}

/// What a heartbeat says, decoded.
#[derive(Debug, Clone)]
pub struct Beat {
    pub last_seq: u64,
    pub entries: u64,
    pub node: NodeInfo,
}

/// Every peer's replicated entries.
pub struct Replica {
    me: String,
    me_incarnation: Arc<str>,
    node_timeout: Duration,
    state: Mutex<Peers>,
    index: Arc<Index>,
    hub: Hub,
    metrics: Arc<Metrics>,
    /// Bumped when a peer finishes a sync or goes away: the start-up wait watches it.
    progress: watch::Sender<u64>,
    /// Asks the publisher for a heartbeat now, so a new peer learns about us at once.
    pub heartbeat_now: Notify,
}

struct Peers {
    peers: HashMap<String, Peer>,
    ctl: Control,
}

/// Peer-table bookkeeping, apart from `peers` so a handler can hold a peer and update these.
struct Control {
    retired: Retired,
    link_up: bool,
    next_ticket: u64,
    warned_same_name: bool,
}

struct Peer {
    incarnation: Arc<str>,
    /// Seq of the last change applied.
    applied: u64,
    entries: HashMap<Key, Record>,
    last_seen: Instant,
    info: Option<NodeInfo>,
    phase: Phase,
    /// A snapshot of this incarnation was applied at least once.
    synced_once: bool,
    last_sync: Option<Instant>,
}

enum Phase {
    Live,
    Syncing {
        ticket: u64,
        in_flight: bool,
        started: Instant,
        buffer: Vec<ValidDelta>,
        buffered: usize,
    },
}

/// Incarnations that were replaced or announced their leave, oldest forgotten first.
#[derive(Default)]
struct Retired {
    by_node: HashMap<String, HashSet<Arc<str>>>,
    order: VecDeque<(String, Arc<str>)>,
}

impl Retired {
    fn contains(&self, o: Origin<'_>) -> bool {
        self.by_node
            .get(o.node)
            .is_some_and(|s| s.contains(o.incarnation))
    }

    fn insert(&mut self, node: &str, incarnation: Arc<str>) {
        let set = self.by_node.entry(node.to_string()).or_default();
        if set.insert(incarnation.clone()) {
            self.order.push_back((node.to_string(), incarnation));
            if self.order.len() > MAX_RETIRED
                && let Some((node, inc)) = self.order.pop_front()
                && let Some(set) = self.by_node.get_mut(&node)
            {
                set.remove(&inc);
                if set.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }
}

impl Peer {
    fn new(incarnation: Arc<str>, now: Instant) -> Peer {
        Peer {
            incarnation,
            applied: 0,
            entries: HashMap::new(),
            last_seen: now,
            info: None,
            phase: Phase::Live,
            synced_once: false,
            last_sync: None,
        }
    }

    fn state_label(&self) -> &'static str {
        match (&self.phase, self.synced_once) {
            (Phase::Live, _) => "live",
            (Phase::Syncing { .. }, false) => "syncing",
            (Phase::Syncing { .. }, true) => "resyncing",
        }
    }
}

impl Replica {
    pub fn new(
        me: Origin<'_>,
        node_timeout: Duration,
        index: Arc<Index>,
        hub: Hub,
        metrics: Arc<Metrics>,
    ) -> Replica {
        Replica {
            me: me.node.to_string(),
            me_incarnation: Arc::from(me.incarnation),
            node_timeout,
            state: Mutex::new(Peers {
                peers: HashMap::new(),
                ctl: Control {
                    retired: Retired::default(),
                    link_up: true,
                    next_ticket: 0,
                    warned_same_name: false,
                },
            }),
            index,
            hub,
            metrics,
            progress: watch::Sender::new(0),
            heartbeat_now: Notify::new(),
        }
    }

    /// Applies a delta: in order, once; a gap or an unknown origin starts a sync.
    pub fn on_delta(
        &self,
        origin: Origin<'_>,
        delta: ValidDelta,
        now: Instant,
    ) -> Result<Option<SyncJob>, Reject> {
        let mut st = self.state.lock();
        let Peers { peers, ctl } = &mut *st;
        let Some((peer, job)) = self.peer_for(peers, ctl, origin, now)? else {
            return Ok(None);
        };
        let job = match (job, &peer.phase) {
            (Some(job), _) => Some(job),
            (None, Phase::Syncing { .. }) => None,
            (None, Phase::Live) if delta.first_seq > peer.applied + 1 => {
                // A delta was lost (slow consumer, a blip of our link, a dropped publish queue
                // on the origin): only a snapshot can tell what it contained.
                Some(self.start_sync(&mut ctl.next_ticket, origin.node, peer, now, "gap"))
            }
            (None, Phase::Live) => {
                let age_us = now_us().saturating_sub(delta.origin_time_us);
                self.apply(peer, delta);
                self.metrics.propagation.observe(age_us as f64 / 1e6);
                return Ok(None);
            }
        };
        buffer(peer, delta);
        if job.is_some() {
            self.refresh_gauges(peers);
        }
        Ok(job)
    }

    /// Notes a heartbeat: liveness, node info, and a sync if the peer is ahead of us.
    pub fn on_heartbeat(
        &self,
        origin: Origin<'_>,
        beat: Beat,
        now: Instant,
    ) -> Result<Option<SyncJob>, Reject> {
        let mut st = self.state.lock();
        let Peers { peers, ctl } = &mut *st;
        let Some((peer, job)) = self.peer_for(peers, ctl, origin, now)? else {
            return Ok(None);
        };
        peer.info = Some(beat.node);
        if job.is_some() {
            self.refresh_gauges(peers);
            return Ok(job);
        }
        let cause = match &peer.phase {
            Phase::Live if beat.last_seq > peer.applied => Some("gap"),
            Phase::Live
                if beat.last_seq == peer.applied
                    && beat.entries != peer.entries.len() as u64
                    && peer
                        .last_sync
                        .is_none_or(|t| now.duration_since(t) > self.node_timeout) =>
            {
                // Seqs agree but the sets do not: a bug somewhere. Heal by syncing, at most
                // once per node_timeout so a persistent cause cannot storm the origin.
                tracing::warn!(
                    peer = origin.node,
                    "entry count differs from peer's, re-syncing"
                );
                Some("count_mismatch")
            }
            // The last attempt failed (timeout, no responder): the peer is alive, try again.
            Phase::Syncing {
                in_flight: false, ..
            } => Some("retry"),
            _ => None,
        };
        let job = cause.map(|c| self.start_sync(&mut ctl.next_ticket, origin.node, peer, now, c));
        if job.is_some() {
            self.refresh_gauges(peers);
        }
        Ok(job)
    }

    /// A peer announced its graceful shutdown: drop its entries at once.
    pub fn on_leaving(&self, origin: Origin<'_>) -> Result<(), Reject> {
        if origin.node == self.me {
            return Ok(());
        }
        let mut st = self.state.lock();
        if st.ctl.retired.contains(origin) {
            return Err(Reject::RetiredIncarnation);
        }
        st.ctl
            .retired
            .insert(origin.node, Arc::from(origin.incarnation));
        let current = st
            .peers
            .get(origin.node)
            .is_some_and(|p| *p.incarnation == *origin.incarnation);
        if current {
            tracing::info!(peer = origin.node, "peer is leaving");
            self.remove_peer(&mut st, origin.node, "leaving");
        }
        Ok(())
    }

    /// A snapshot arrived: replace the peer's entries (pushing only real differences), then
    /// apply what was buffered after the snapshot's seq. Returns a new job if a gap remains.
    pub fn on_snapshot(&self, job: &SyncJob, snap: Snapshot, now: Instant) -> Option<SyncJob> {
        let mut st = self.state.lock();
        let Peers { peers, ctl } = &mut *st;
        let peer = peers.get_mut(&job.node)?;
        if peer.incarnation != job.incarnation {
            return None;
        }
        let Phase::Syncing {
            ticket,
            buffer: buffered,
            started,
            ..
        } = &mut peer.phase
        else {
            return None;
        };
        if *ticket != job.ticket {
            return None;
        }
        let buffered = std::mem::take(buffered);
        self.metrics
            .sync_duration
            .observe(now.duration_since(*started).as_secs_f64());
        self.replace_entries(peer, snap.entries);
        peer.applied = snap.seq;
        peer.phase = Phase::Live;
        peer.synced_once = true;
        peer.last_sync = Some(now);
        peer.last_seen = now;
        let mut next = None;
        for delta in buffered {
            if next.is_none() && delta.first_seq > peer.applied + 1 {
                next = Some(self.start_sync(&mut ctl.next_ticket, &job.node, peer, now, "gap"));
            }
            if next.is_some() {
                buffer(peer, delta);
            } else {
                self.apply(peer, delta);
            }
        }
        self.refresh_gauges(peers);
        self.progress.send_modify(|n| *n += 1);
        next
    }

    /// A snapshot request failed; the next heartbeat of the peer retries it.
    pub fn on_sync_failed(&self, job: &SyncJob) {
        let mut st = self.state.lock();
        if let Some(peer) = st.peers.get_mut(&job.node)
            && let Phase::Syncing {
                ticket, in_flight, ..
            } = &mut peer.phase
            && *ticket == job.ticket
        {
            *in_flight = false;
        }
    }

    /// Declares peers silent for `node_timeout` down, with a leave for each of their entries.
    /// Does nothing while this node's own link is down: then the silence is our fault.
    pub fn reap(&self, now: Instant) {
        let mut st = self.state.lock();
        if !st.ctl.link_up {
            return;
        }
        let dead: Vec<String> = st
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_seen) > self.node_timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for node in dead {
            tracing::warn!(peer = %node, timeout = ?self.node_timeout, "peer silent, declaring it down");
            self.remove_peer(&mut st, &node, "timeout");
        }
    }

    /// This node's NATS connection went down: stop expiring peers.
    pub fn link_down(&self) {
        let mut st = self.state.lock();
        if st.ctl.link_up {
            st.ctl.link_up = false;
            self.metrics.link_up.set(0);
            tracing::warn!("NATS connection lost; peers are not expired until it is back");
        }
    }

    /// The connection is back: give every peer a fresh `node_timeout`, and re-sync each (what
    /// we missed meanwhile is unknown; the snapshot diff pushes only real differences).
    /// `None` if the link was already known to be up.
    pub fn link_up(&self, now: Instant) -> Option<Vec<SyncJob>> {
        let mut st = self.state.lock();
        let Peers { peers, ctl } = &mut *st;
        if ctl.link_up {
            return None;
        }
        ctl.link_up = true;
        self.metrics.link_up.set(1);
        tracing::info!("NATS connection back; re-syncing every peer");
        let mut jobs = Vec::new();
        for (node, peer) in peers.iter_mut() {
            peer.last_seen = now;
            jobs.push(self.start_sync(&mut ctl.next_ticket, node, peer, now, "reconnect"));
        }
        self.refresh_gauges(peers);
        Some(jobs)
    }

    /// Whether this node's link is up (as far as the engine has processed events).
    pub fn is_link_up(&self) -> bool {
        self.state.lock().ctl.link_up
    }

    /// Every known peer's node info, ordered by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let st = self.state.lock();
        let mut nodes: Vec<NodeInfo> = st.peers.values().filter_map(|p| p.info.clone()).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// Whether every known peer was synced at least once.
    pub fn all_synced(&self) -> bool {
        self.state.lock().peers.values().all(|p| p.synced_once)
    }

    /// Watches sync completions and peer removals.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Finds (or creates) the peer of `origin`. `None`: the message is our own and ignored.
    /// A job is returned when the peer is new or a new incarnation replaced the old one.
    fn peer_for<'p>(
        &self,
        peers: &'p mut HashMap<String, Peer>,
        ctl: &mut Control,
        origin: Origin<'_>,
        now: Instant,
    ) -> Result<Option<(&'p mut Peer, Option<SyncJob>)>, Reject> {
        if origin.node == self.me {
            if *origin.incarnation == *self.me_incarnation {
                return Ok(None); // our own echo
            }
            if !ctl.warned_same_name {
                ctl.warned_same_name = true;
                tracing::warn!(
                    incarnation = origin.incarnation,
                    "another node uses this node's name (node.name must be unique); ignoring it"
                );
            }
            return Err(Reject::RetiredIncarnation);
        }
        if ctl.retired.contains(origin) {
            return Err(Reject::RetiredIncarnation);
        }
        let mut cause = None;
        // `contains_key` first: a known peer (the common case) costs no allocation.
        let known = peers.contains_key(origin.node);
        if !known {
            tracing::info!(
                peer = origin.node,
                incarnation = origin.incarnation,
                "new peer"
            );
            cause = Some("new_peer");
            let peer = Peer::new(Arc::from(origin.incarnation), now);
            peers.insert(origin.node.to_string(), peer);
        }
        let peer = peers.get_mut(origin.node).expect("present or inserted");
        if known && *peer.incarnation != *origin.incarnation {
            // A restarted node: the old run is gone for good. Its entries stay until the new
            // run's snapshot arrives, and the diff then sends leaves for those that vanished
            // and joins only for new ones.
            tracing::info!(
                peer = origin.node,
                old = %peer.incarnation,
                new = origin.incarnation,
                "peer restarted"
            );
            self.metrics
                .peers_down
                .get_or_create(&[("reason", "replaced")])
                .inc();
            ctl.retired.insert(origin.node, peer.incarnation.clone());
            peer.incarnation = Arc::from(origin.incarnation);
            peer.applied = 0;
            peer.info = None;
            peer.synced_once = false;
            peer.last_sync = None;
            if let Phase::Syncing {
                buffer, buffered, ..
            } = &mut peer.phase
            {
                buffer.clear();
                *buffered = 0;
            }
            cause = Some("new_incarnation");
        }
        peer.last_seen = now;
        let job = cause.map(|c| {
            // Answer a newcomer with a heartbeat at once, so it learns about us well within
            // its one-interval discovery window.
            self.heartbeat_now.notify_one();
            self.start_sync(&mut ctl.next_ticket, origin.node, peer, now, c)
        });
        Ok(Some((peer, job)))
    }

    fn start_sync(
        &self,
        next_ticket: &mut u64,
        node: &str,
        peer: &mut Peer,
        now: Instant,
        cause: &'static str,
    ) -> SyncJob {
        *next_ticket += 1;
        let ticket = *next_ticket;
        self.metrics
            .sync_causes
            .get_or_create(&[("cause", cause)])
            .inc();
        tracing::debug!(peer = node, cause, "sync");
        // Keep what was buffered: deltas after the coming snapshot's seq are still needed.
        let (buffer, buffered) = match std::mem::replace(&mut peer.phase, Phase::Live) {
            Phase::Syncing {
                buffer, buffered, ..
            } => (buffer, buffered),
            Phase::Live => (Vec::new(), 0),
        };
        peer.phase = Phase::Syncing {
            ticket,
            in_flight: true,
            started: now,
            buffer,
            buffered,
        };
        SyncJob {
            node: node.to_string(),
            incarnation: peer.incarnation.clone(),
            ticket,
        }
    }

    /// Applies the changes of `delta` past `peer.applied`, in order.
    fn apply(&self, peer: &mut Peer, delta: ValidDelta) {
        let first = delta.first_seq;
        let n = delta.changes.len() as u64;
        for (i, update) in delta.changes.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq <= peer.applied {
                continue; // already in the snapshot, or a duplicate
            }
            match update {
                Update::Join(key, record) => self.join(&mut peer.entries, key, record),
                Update::Leave(key) => self.leave(&mut peer.entries, &key),
            }
            peer.applied = seq;
        }
        self.metrics.changes_received.inc_by(n);
    }

    fn join(&self, entries: &mut HashMap<Key, Record>, key: Key, record: Record) {
        if record.presence {
            self.index.insert(&key.0, record.info.clone());
        }
        let channel = key.0.clone();
        match entries.entry(key) {
            MapEntry::Occupied(mut e) => {
                // A replace: same subscription, no push (the subscriber already saw its join).
                let old = e.insert(record);
                if old.presence && !e.get().presence {
                    self.index.remove(&channel, &e.key().1);
                }
            }
            MapEntry::Vacant(e) => {
                let record = e.insert(record);
                self.metrics.replicated_entries.inc();
                if record.join_leave {
                    self.hub.broadcast_join(&channel, &record.info);
                }
            }
        }
    }

    fn leave(&self, entries: &mut HashMap<Key, Record>, key: &Key) {
        if let Some(old) = entries.remove(key) {
            self.metrics.replicated_entries.dec();
            if old.presence {
                self.index.remove(&key.0, &key.1);
            }
            if old.join_leave {
                self.hub.broadcast_leave(&key.0, &old.info);
            }
        }
    }

    /// Makes `peer.entries` equal to `new`: leaves for vanished entries, joins for new ones,
    /// silent replaces for the rest. O(old + new).
    fn replace_entries(&self, peer: &mut Peer, new: HashMap<Key, Record>) {
        let mut entries = std::mem::take(&mut peer.entries);
        let vanished: Vec<Key> = entries
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        for key in &vanished {
            self.leave(&mut entries, key);
        }
        entries.reserve(new.len().saturating_sub(entries.len()));
        for (key, record) in new {
            self.join(&mut entries, key, record);
        }
        peer.entries = entries;
    }

    fn remove_peer(&self, st: &mut Peers, node: &str, reason: &'static str) {
        if let Some(mut peer) = st.peers.remove(node) {
            let keys: Vec<Key> = peer.entries.keys().cloned().collect();
            for key in &keys {
                self.leave(&mut peer.entries, key);
            }
            self.metrics
                .peers_down
                .get_or_create(&[("reason", reason)])
                .inc();
            self.refresh_gauges(&st.peers);
            self.progress.send_modify(|n| *n += 1);
        }
    }

    fn refresh_gauges(&self, peers: &HashMap<String, Peer>) {
        for state in ["syncing", "live", "resyncing"] {
            let n = peers.values().filter(|p| p.state_label() == state).count();
            self.metrics
                .peers
                .get_or_create(&[("state", state)])
                .set(n as i64);
        }
    }
}

/// Buffers a delta for after the snapshot; past the limit the buffer is dropped (the seq
/// check after the snapshot then asks for another sync).
fn buffer(peer: &mut Peer, delta: ValidDelta) {
    if let Phase::Syncing {
        buffer, buffered, ..
    } = &mut peer.phase
    {
        if *buffered + delta.changes.len() > MAX_BUFFERED_CHANGES {
            buffer.clear();
            *buffered = 0;
        }
        *buffered += delta.changes.len();
        buffer.push(delta);
    }
}

#[cfg(test)]
mod tests;
