//! Leader election over a `coordination.k8s.io` Lease, so that of several replicas only one writes.
//!
//! Built on `kube-lease-manager` (Lease locking by server-side apply, renewals before expiry,
//! release on shutdown); this module only adapts it to the operator's life cycle.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Seconds a Lease stays valid after its last renewal: how long a crashed leader blocks the others.
pub const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry at which the leader renews.
pub const GRACE_SECONDS: u64 = 5;

/// This replica's place in the election: follow [`Leadership::acquired`] and
/// [`Leadership::lost`], and [`Leadership::release`] on shutdown.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Joins the election for Lease `name` in `namespace` as `identity`. Errors (no RBAC for
    /// leases, API down) are logged once each and retried; `None` when `shutdown` fires first.
    pub async fn join(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        shutdown: &CancellationToken,
    ) -> Option<Self> {
        let mut delay = Duration::from_secs(1);
        let mut last: Option<String> = None;
        let manager = loop {
            let built = LeaseManagerBuilder::new(client.clone(), name)
                .with_namespace(namespace)
                .with_identity(identity)
                .with_duration(LEASE_SECONDS)
                .with_grace(GRACE_SECONDS)
                // The field manager stays the crate's default (it embeds the identity): locking
                // relies on server-side apply conflicts between distinct managers.
                .build()
                .await;
            match built {
                Ok(manager) => break manager,
                Err(err) => {
                    let line = match &err {
                        LeaseManagerError::KubeError(e) => crate::preflight::explain(e),
                        _ => None,
                    }
                    .unwrap_or_else(|| err.to_string());
                    if last.as_deref() != Some(line.as_str()) {
                        tracing::error!(lease = name, namespace, "leader election: {line}");
                        last = Some(line);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        };
        let (state, task) = manager.watch().await;
        Some(Leadership { state, task })
    }

    /// Waits until this replica holds the Lease. `false` if the election task ended.
    pub async fn acquired(&mut self) -> bool {
        self.state.wait_for(|leader| *leader).await.is_ok()
    }

    /// Waits until this replica no longer holds the Lease (or the election task ended).
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Leaves the election, releasing the Lease if held so a standby takes over at once.
    /// Bounded: gives up after 5 s.
    pub async fn release(self) {
        let Leadership { state, task } = self;
        // Closing the channel tells the manager's task to release the Lease and return.
        drop(state);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => tracing::info!("leader Lease released"),
            Ok(Ok(Err(err))) => tracing::warn!(%err, "cannot release the leader Lease"),
            Ok(Err(err)) => tracing::warn!(%err, "leader election task failed"),
            Err(_) => tracing::warn!("leader Lease not released within 5 s"),
        }
    }
}
