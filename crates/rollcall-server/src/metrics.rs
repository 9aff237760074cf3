//! The node's Prometheus metrics: one registry, named handles, labels from error variant names.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels `(method, result)`: result is `ok` or an error label from `ErrorCode::label`.
pub type MethodResult = [(&'static str, &'static str); 2];

/// Every metric of the server (the cluster engine registers its own under `rollcall_cluster_`).
pub struct Metrics {
    /// Open WebSocket connections (connected or not yet).
    pub connections: Gauge,
    /// Client-side and server-side subscriptions on this node.
    pub subscriptions: Gauge,
    /// Presence entries owned by this node.
    pub presence_entries: Gauge,
    /// Client protocol commands by method and result.
    pub commands: Family<MethodResult, Counter>,
    /// Server API calls by method and result.
    pub api_calls: Family<MethodResult, Counter>,
    /// Join/leave events emitted, by kind (`join`/`leave`) and cause.
    pub join_leave: Family<[(&'static str, &'static str); 2], Counter>,
    /// Pushes queued for local subscribers.
    pub pushes_queued: Counter,
    /// Pushes dropped because a subscriber's queue overflowed.
    pub pushes_dropped: Counter,
    /// Connections closed, by reason.
    pub disconnects: Family<[(&'static str, &'static str); 1], Counter>,
    /// Namespace reloads by result (`ok`, `invalid`).
    pub reloads: Family<[(&'static str, &'static str); 1], Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the `rollcall_` prefix.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            presence_entries: Gauge::default(),
            commands: Family::default(),
            api_calls: Family::default(),
            join_leave: Family::default(),
            pushes_queued: Counter::default(),
            pushes_dropped: Counter::default(),
            disconnects: Family::default(),
            reloads: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("rollcall");
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "subscriptions",
            "Subscriptions on this node",
            m.subscriptions.clone(),
        );
        r.register(
            "presence_entries",
            "Presence entries owned by this node",
            m.presence_entries.clone(),
        );
        r.register(
            "client_commands",
            "Client protocol commands by method and result",
            m.commands.clone(),
        );
        r.register(
            "api_calls",
            "Server API calls by method and result",
            m.api_calls.clone(),
        );
        r.register(
            "join_leave",
            "Join and leave events emitted by kind and cause",
            m.join_leave.clone(),
        );
        r.register(
            "pushes_queued",
            "Join/leave pushes queued for local subscribers",
            m.pushes_queued.clone(),
        );
        r.register(
            "pushes_dropped",
            "Pushes dropped because the subscriber's queue overflowed",
            m.pushes_dropped.clone(),
        );
        r.register(
            "disconnects",
            "Connections closed by reason",
            m.disconnects.clone(),
        );
        r.register(
            "namespace_reloads",
            "Reloads of channel.namespaces_file by result",
            m.reloads.clone(),
        );
        m
    }

    /// Counts one join or leave (`kind`) and the pushes it produced.
    pub fn emitted(&self, kind: &'static str, cause: &'static str, d: crate::hub::Delivered) {
        self.join_leave
            .get_or_create(&[("kind", kind), ("cause", cause)])
            .inc();
        self.pushes_queued.inc_by(d.queued as u64);
        self.pushes_dropped.inc_by(d.dropped as u64);
    }
}

/// Renders a registry as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}
