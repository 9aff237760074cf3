//! The operator's metrics registry and its HTTP endpoint: `/metrics`, `/health`, `/ready`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Label of a failed reconciliation: the error variant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

/// Named metric handles plus the readiness flag. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    reconciliations: Counter,
    failures: Family<ErrorLabels, Counter>,
    duration: Histogram,
    configmap_writes: Counter,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rollcall_operator");
        let reconciliations = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let configmap_writes = Counter::default();
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations run (each renders a whole Kubernetes namespace)",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciliations by error variant",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconciliation",
            duration.clone(),
        );
        registry.register(
            "configmap_applies",
            "Server-side applies of the namespaces ConfigMap",
            configmap_writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                reconciliations,
                failures,
                duration,
                configmap_writes,
                leader,
                ready: AtomicBool::new(false),
            }),
        }
    }
}

impl Metrics {
    /// Counts one reconciliation and its duration.
    pub fn reconciled(&self, took: Duration) {
        self.inner.reconciliations.inc();
        self.inner.duration.observe(took.as_secs_f64());
    }

    /// Counts a failed reconciliation under its error variant name.
    pub fn failed(&self, error: &'static str) {
        self.inner
            .failures
            .get_or_create(&ErrorLabels { error })
            .inc();
    }

    /// Counts one ConfigMap apply.
    pub fn configmap_applied(&self) {
        self.inner.configmap_writes.inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// `/ready` answers 200 once the API server, the CRD and the permissions were checked.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// Binds `port` on all interfaces (so the kubelet's probes reach it) and serves until
/// `shutdown`. Returns the bound address and the server task.
pub async fn serve(
    port: u16,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(metrics);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    Ok((addr, task))
}

async fn metrics_text(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn ready(State(metrics): State<Metrics>) -> impl IntoResponse {
    if metrics.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_named_metrics_with_error_labels() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(3));
        m.failed("Kube");
        m.set_leader(true);
        let text = m.encode();
        assert!(
            text.contains("rollcall_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("rollcall_operator_reconcile_failures_total{error=\"Kube\"} 1"),
            "{text}"
        );
        assert!(text.contains("rollcall_operator_leader 1"), "{text}");
    }

    #[tokio::test]
    async fn serves_health_ready_and_metrics() {
        let m = Metrics::default();
        let stop = CancellationToken::new();
        let (addr, task) = serve(0, m.clone(), stop.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
                .await
                .unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/health").await.starts_with("HTTP/1.0 200"));
        assert!(get("/ready").await.starts_with("HTTP/1.0 503"));
        m.set_ready(true);
        assert!(get("/ready").await.starts_with("HTTP/1.0 200"));
        assert!(get("/metrics").await.contains("rollcall_operator_leader"));
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
