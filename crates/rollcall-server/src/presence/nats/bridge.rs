//! The tasks between NATS and the engine's state: receive, publish, serve and fetch syncs,
//! expire peers, follow the connection, and the start-up sync.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Event, Subscriber};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, MissedTickBehavior};

use super::Shared;
use super::local::Taken;
use super::replica::{Beat, SyncJob};
use super::subjects::Kind;
use super::sync::{self, SyncError};
use super::wire::{Frame, Heartbeat, Reject, decode, encode};

/// Most changes in one delta message.
const MAX_BATCH: usize = 1024;

/// Starts every task of the engine.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    broadcast: Subscriber,
    sync_requests: Subscriber,
    events: UnboundedReceiver<Event>,
) {
    let tasks = &shared.tasks;
    tasks.spawn(receive(shared.clone(), broadcast));
    tasks.spawn(serve_syncs(shared.clone(), sync_requests));
    tasks.spawn(publish(shared.clone()));
    tasks.spawn(reap(shared.clone()));
    tasks.spawn(follow_link(shared.clone(), events));
    tasks.spawn(start_up(shared.clone()));
}

/// Applies every message on `<prefix>.*`, in arrival order.
async fn receive(shared: Arc<Shared>, mut sub: Subscriber) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else { return };
        shared
            .metrics
            .bytes_received
            .inc_by(msg.payload.len() as u64);
        if let Err(reason) = handle(&shared, &msg.subject, &msg.payload) {
            shared.metrics.reject(reason);
            tracing::debug!(subject = %msg.subject, reason = reason.label(), "rejected cluster message");
        }
    }
}

fn handle(shared: &Arc<Shared>, subject: &str, payload: &[u8]) -> Result<(), Reject> {
    let kind = shared.subjects.kind(subject).ok_or(Reject::WrongSubject)?;
    let frame = decode(payload)?;
    let now = Instant::now();
    let replica = &shared.replica;
    let job = match (kind, frame) {
        (Kind::Delta, Frame::Delta(delta)) => {
            let valid = delta.validate()?;
            shared.metrics.deltas_received.inc();
            replica.on_delta(delta.origin, valid, now)?
        }
        (
            Kind::Heartbeat,
            Frame::Heartbeat(Heartbeat {
                origin,
                last_seq,
                entries,
                node,
            }),
        ) => {
            origin.validate()?;
            shared.metrics.heartbeats_received.inc();
            let beat = Beat {
                last_seq,
                entries,
                node,
            };
            replica.on_heartbeat(origin, beat, now)?
        }
        (Kind::Leaving, Frame::Leaving(origin)) => {
            origin.validate()?;
            replica.on_leaving(origin)?;
            None
        }
        _ => return Err(Reject::WrongSubject),
    };
    if let Some(job) = job {
        spawn_sync(shared, job);
    }
    Ok(())
}

/// Fetches a snapshot in its own task and hands it to the replica.
fn spawn_sync(shared: &Arc<Shared>, job: SyncJob) {
    let s = shared.clone();
    shared.tasks.spawn(async move {
        let subject = s.subjects.sync(&job.node);
        let timeout = s.node_timeout.max(Duration::from_secs(2));
        let fetch = sync::fetch(&s.client, subject, s.origin(), &job, timeout, &s.metrics);
        let result = tokio::select! {
            _ = s.cancel.cancelled() => return,
            r = fetch => r,
        };
        match result {
            Ok(snap) => {
                s.metrics
                    .syncs_requested
                    .get_or_create(&[("result", "ok")])
                    .inc();
                tracing::debug!(peer = %job.node, entries = snap.entries.len(), seq = snap.seq, "synced");
                if let Some(next) = s.replica.on_snapshot(&job, snap, Instant::now()) {
                    spawn_sync(&s, next);
                }
            }
            Err(e) => {
                s.metrics
                    .syncs_requested
                    .get_or_create(&[("result", e.label())])
                    .inc();
                if let SyncError::Rejected(reason) = e {
                    s.metrics.reject(reason);
                }
                tracing::info!(peer = %job.node, error = %e, "sync failed; retrying on the peer's next heartbeat");
                s.replica.on_sync_failed(&job);
            }
        }
    });
}

/// Answers snapshot requests on `<prefix>.sync.<this node>`.
async fn serve_syncs(shared: Arc<Shared>, mut sub: Subscriber) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else { return };
        shared
            .metrics
            .bytes_received
            .inc_by(msg.payload.len() as u64);
        let valid = match decode(&msg.payload) {
            Ok(Frame::SyncRequest(req)) => req.requester.validate(),
            Ok(_) => Err(Reject::WrongSubject),
            Err(reason) => Err(reason),
        };
        let reply = match (valid, msg.reply) {
            (Ok(()), Some(reply)) => reply,
            (Ok(()), None) => {
                shared.metrics.reject(Reject::Invalid);
                continue;
            }
            (Err(reason), _) => {
                shared.metrics.reject(reason);
                continue;
            }
        };
        let s = shared.clone();
        shared.tasks.spawn(async move {
            if let Err(e) = sync::serve(&s.client, reply, &s.local, s.origin(), &s.metrics).await {
                tracing::warn!(error = %e, "could not answer a sync request");
            }
        });
    }
}

/// Publishes the change log as deltas and a heartbeat every interval.
///
/// A batch is whatever accumulated while the previous publish was under way (capped at
/// `MAX_BATCH` and the max payload): an idle node publishes a change at once, a busy one
/// sends fewer, larger messages.
async fn publish(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.heartbeat_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let budget = shared
        .client
        .max_payload()
        .saturating_sub(4096)
        .max(16 * 1024);
    loop {
        let heartbeat_due = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            _ = shared.replica.heartbeat_now.notified() => true,
            _ = tick.tick() => true,
            _ = shared.local.changed.notified() => false,
        };
        // Let the subscribes that are running right now join this batch.
        tokio::task::yield_now().await;
        let (seq, entries) = loop {
            match shared.local.take(MAX_BATCH, budget) {
                Taken::Batch(batch) => {
                    let n = batch.updates.len() as u64;
                    if shared.client.connection_state() != State::Connected {
                        // Peers will see the gap (next delta or heartbeat) and sync.
                        shared.metrics.changes_unpublished.inc_by(n);
                        continue;
                    }
                    let payload = batch.encode(shared.origin());
                    let len = payload.len() as u64;
                    match shared
                        .client
                        .publish(shared.subjects.delta.clone(), payload.into())
                        .await
                    {
                        Ok(()) => {
                            shared.metrics.deltas_sent.inc();
                            shared.metrics.changes_sent.inc_by(n);
                            shared.metrics.bytes_sent.inc_by(len);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not publish a delta; peers will re-sync");
                            shared.metrics.changes_unpublished.inc_by(n);
                        }
                    }
                }
                Taken::Idle { seq, entries } => break (seq, entries),
            }
        };
        if heartbeat_due && shared.client.connection_state() == State::Connected {
            let payload = encode(&Frame::Heartbeat(Heartbeat {
                origin: shared.origin(),
                last_seq: seq,
                entries,
                node: shared.identity.node_info(&shared.hub),
            }));
            let len = payload.len() as u64;
            if shared
                .client
                .publish(shared.subjects.heartbeat.clone(), payload.into())
                .await
                .is_ok()
            {
                shared.metrics.heartbeats_sent.inc();
                shared.metrics.bytes_sent.inc_by(len);
            }
        }
    }
}

/// Declares silent peers down. Also notices link changes the event stream has not reported
/// yet (both paths are idempotent).
async fn reap(shared: Arc<Shared>) {
    let period =
        (shared.node_timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        link_changed(
            &shared,
            shared.client.connection_state() == State::Connected,
        );
        shared.replica.reap(Instant::now());
    }
}

/// Follows the NATS connection's events.
async fn follow_link(shared: Arc<Shared>, mut events: UnboundedReceiver<Event>) {
    loop {
        let event = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            e = events.recv() => e,
        };
        let Some(event) = event else { return };
        match event {
            Event::Connected => link_changed(&shared, true),
            Event::Disconnected => link_changed(&shared, false),
            Event::SlowConsumer(sid) => {
                // Messages were dropped for us; the seq checks turn that into syncs.
                tracing::warn!(sid, "NATS dropped messages for this node (slow consumer)");
            }
            other => tracing::info!(event = %other, "NATS event"),
        }
    }
}

fn link_changed(shared: &Arc<Shared>, up: bool) {
    if up {
        if let Some(jobs) = shared.replica.link_up(Instant::now()) {
            // Tell peers at once that we are back, before their node_timeout runs out.
            shared.replica.heartbeat_now.notify_one();
            for job in jobs {
                spawn_sync(shared, job);
            }
        }
    } else {
        shared.replica.link_down();
    }
}

/// The longest a starting node listens for peers before it syncs from those it found.
///
/// cluster.md has a newcomer listen for one heartbeat interval. Peers answer this node's
/// announcement with a heartbeat at once, so a round trip is enough to learn them; capping the
/// window keeps a fresh node's start-to-ready under a second with the default 1 s heartbeat.
/// A peer whose answer comes later is still synced when its next heartbeat arrives (unknown
/// origin → sync), just after `/ready` turned 200.
const DISCOVERY_WINDOW_MAX: Duration = Duration::from_millis(300);

/// Announces this node, learns peers for a short window (their heartbeats start the syncs),
/// then waits until every peer found is synced and marks the engine synced.
async fn start_up(shared: Arc<Shared>) {
    shared.replica.heartbeat_now.notify_one();
    let mut progress = shared.replica.progress();
    let window = shared.heartbeat_interval.min(DISCOVERY_WINDOW_MAX);
    tokio::select! {
        _ = shared.cancel.cancelled() => return,
        _ = tokio::time::sleep(window) => {}
    }
    // A peer that never answers must not keep this node out of service forever.
    let deadline = Instant::now() + (shared.node_timeout * 3).max(Duration::from_secs(10));
    while !shared.replica.all_synced() {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = progress.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("start-up sync incomplete at the deadline; serving anyway");
                break;
            }
        }
    }
    tracing::info!(
        peers = shared.replica.nodes().len(),
        "cluster engine synced"
    );
    shared.synced.send_replace(true);
}
