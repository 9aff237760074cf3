//! The cluster engine's metrics, registered under `rollcall_cluster_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::wire::Reject;

/// One label, e.g. `[("state", "live")]`.
pub type Label = [(&'static str, &'static str); 1];

/// Named handles; cheap to update from any task.
pub struct Metrics {
    /// Known peers by state: `syncing` (first sync pending), `live`, `resyncing`.
    pub peers: Family<Label, Gauge>,
    /// Delta messages published / received (and the changes in them).
    pub deltas_sent: Counter,
    pub deltas_received: Counter,
    pub changes_sent: Counter,
    pub changes_received: Counter,
    /// Changes not published because this node's NATS link was down (peers re-sync).
    pub changes_unpublished: Counter,
    pub heartbeats_sent: Counter,
    pub heartbeats_received: Counter,
    /// Snapshot requests this node made, by result (`ok`, `timeout`, `no_responders`, `error`).
    pub syncs_requested: Family<Label, Counter>,
    /// Snapshot requests this node answered.
    pub syncs_served: Counter,
    /// Why a sync was started: `new_peer`, `new_incarnation`, `gap`, `count_mismatch`,
    /// `reconnect`, `retry`.
    pub sync_causes: Family<Label, Counter>,
    /// Seconds from sync request to snapshot applied.
    pub sync_duration: Histogram,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    /// Messages not applied, by [`Reject`] reason.
    pub rejected: Family<Label, Counter>,
    /// Peers declared gone, by reason (`timeout`, `leaving`, `replaced`).
    pub peers_down: Family<Label, Counter>,
    /// Seconds from a change at its origin to its application here (clocks of different hosts
    /// make it approximate; negative values count as 0).
    pub propagation: Histogram,
    /// 1 while this node's NATS connection is up.
    pub link_up: Gauge,
    /// Entries replicated from peers (all nodes but this one).
    pub replicated_entries: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            peers: Family::default(),
            deltas_sent: Counter::default(),
            deltas_received: Counter::default(),
            changes_sent: Counter::default(),
            changes_received: Counter::default(),
            changes_unpublished: Counter::default(),
            heartbeats_sent: Counter::default(),
            heartbeats_received: Counter::default(),
            syncs_requested: Family::default(),
            syncs_served: Counter::default(),
            sync_causes: Family::default(),
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            rejected: Family::default(),
            peers_down: Family::default(),
            propagation: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            link_up: Gauge::default(),
            replicated_entries: Gauge::default(),
        };
        // Zero-valued series exist from the start, so dashboards and tests see them.
        for state in ["syncing", "live", "resyncing"] {
            let _ = m.peers.get_or_create(&[("state", state)]);
        }
        for reason in Reject::ALL {
            let _ = m.rejected.get_or_create(&[("reason", reason.label())]);
        }
        let r = registry.sub_registry_with_prefix("rollcall_cluster");
        r.register("peers", "Known peer nodes by state", m.peers.clone());
        r.register(
            "deltas_sent",
            "Delta messages published",
            m.deltas_sent.clone(),
        );
        r.register(
            "deltas_received",
            "Delta messages received from peers",
            m.deltas_received.clone(),
        );
        r.register(
            "changes_sent",
            "Join/leave changes published",
            m.changes_sent.clone(),
        );
        r.register(
            "changes_received",
            "Join/leave changes received",
            m.changes_received.clone(),
        );
        r.register(
            "changes_unpublished",
            "Changes not published because the NATS link was down (peers re-sync)",
            m.changes_unpublished.clone(),
        );
        r.register(
            "heartbeats_sent",
            "Heartbeats published",
            m.heartbeats_sent.clone(),
        );
        r.register(
            "heartbeats_received",
            "Heartbeats received from peers",
            m.heartbeats_received.clone(),
        );
        r.register(
            "syncs_requested",
            "Snapshot requests made to peers, by result",
            m.syncs_requested.clone(),
        );
        r.register(
            "syncs_served",
            "Snapshot requests answered",
            m.syncs_served.clone(),
        );
        r.register(
            "sync_causes",
            "Syncs started, by cause",
            m.sync_causes.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Time from snapshot request to snapshot applied",
            m.sync_duration.clone(),
        );
        r.register(
            "bytes_sent",
            "Payload bytes published",
            m.bytes_sent.clone(),
        );
        r.register(
            "bytes_received",
            "Payload bytes received",
            m.bytes_received.clone(),
        );
        r.register(
            "rejected_messages",
            "Messages rejected and not applied, by reason",
            m.rejected.clone(),
        );
        r.register(
            "peers_down",
            "Peers declared gone, by reason",
            m.peers_down.clone(),
        );
        r.register(
            "propagation_latency_seconds",
            "Time from a change at its origin node to its application on this node",
            m.propagation.clone(),
        );
        r.register(
            "link_up",
            "1 while this node's NATS connection is up",
            m.link_up.clone(),
        );
        r.register(
            "replicated_entries",
            "Entries replicated from peer nodes",
            m.replicated_entries.clone(),
        );
        m
    }

    pub fn reject(&self, reason: Reject) {
        self.rejected
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }
}
