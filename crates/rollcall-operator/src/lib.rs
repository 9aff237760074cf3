//! Rollcall's Kubernetes operator: `PresenceNamespace` objects → the namespaces ConfigMap.
//!
//! `crd` holds the custom resource types and the CRD YAML; `render` turns the objects of one
//! Kubernetes namespace into `namespaces.yaml` (pure); `status` says what each object's status
//! should be; `reconcile` is the kube-runtime Controller that writes the ConfigMap, statuses and
//! Events; `leader` elects the one replica that writes; `preflight` checks the install and explains
//! its errors; `metrics` serves `/metrics`, `/health` and `/ready`. [`run`] wires them together.
#![forbid(unsafe_code)]

pub mod crd;
#[cfg(test)]
mod fixtures;
pub mod leader;
pub mod metrics;
pub mod preflight;
pub mod reconcile;
pub mod render;
pub mod status;

use anyhow::Context as _;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::crd::PresenceNamespace;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::reconcile::Settings;

/// Flags of `rollcall operator`; each is also read from the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Kubernetes namespace whose PresenceNamespace objects to render; `all` = every namespace.
    /// Default: the pod's own namespace (POD_NAMESPACE), else the kubeconfig's namespace.
    #[arg(long, env = "ROLLCALL_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Name of the ConfigMap written in each watched namespace (key `namespaces.yaml`).
    #[arg(
        long,
        env = "ROLLCALL_OPERATOR_CONFIGMAP_NAME",
        default_value = "rollcall-namespaces"
    )]
    pub configmap_name: String,
    /// Only objects matching this label selector (e.g. `tier=prod`) are rendered.
    #[arg(long, env = "ROLLCALL_OPERATOR_SELECTOR")]
    pub selector: Option<String>,
    /// Port of `/metrics`, `/health` and `/ready` (all interfaces); 0 = any free port.
    #[arg(long, env = "ROLLCALL_OPERATOR_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,
    /// Name of the coordination.k8s.io Lease used for leader election (in the pod's namespace).
    #[arg(
        long,
        env = "ROLLCALL_OPERATOR_LEASE_NAME",
        default_value = "rollcall-operator"
    )]
    pub lease_name: String,
}

/// The `PresenceNamespace` CRD as YAML (what `rollcall crd` prints).
pub fn crd_yaml() -> anyhow::Result<String> {
    crd::crd_yaml().context("cannot serialize the CRD")
}

/// Runs the operator until `shutdown` is cancelled: serves metrics at once, waits for the CRD
/// and permissions, joins the leader election, and runs the Controller while leading.
pub async fn run(args: OperatorArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (no in-cluster service account, no usable kubeconfig)")?;
    let own_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let watch_namespace = args
        .watch_namespace
        .clone()
        .unwrap_or(own_namespace.clone());
    let api: Api<PresenceNamespace> = if watch_namespace == "all" {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &watch_namespace)
    };
    let mut list_params = ListParams::default();
    let mut watcher_config = watcher::Config::default();
    if let Some(selector) = &args.selector {
        list_params = list_params.labels(selector);
        watcher_config = watcher_config.labels(selector);
    }
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("rollcall-operator-{}", std::process::id()));

    let metrics = Metrics::default();
    let (addr, server) = metrics::serve(args.metrics_port, metrics.clone(), shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on metrics port {}", args.metrics_port))?;
    tracing::info!(
        watch_namespace,
        configmap = args.configmap_name,
        selector = args.selector.as_deref().unwrap_or(""),
        metrics = %addr,
        identity,
        "operator starting"
    );

    if preflight::wait_until_listable(&api, &list_params, &shutdown).await {
        metrics.set_ready(true);
        if let Some(mut leadership) = Leadership::join(
            client.clone(),
            &own_namespace,
            &args.lease_name,
            &identity,
            &shutdown,
        )
        .await
        {
            let settings = Settings {
                configmap: args.configmap_name.clone(),
                instance: Some(identity.clone()),
                metrics: metrics.clone(),
            };
            lead_while_elected(
                &mut leadership,
                &client,
                &api,
                &watcher_config,
                &settings,
                &metrics,
                &shutdown,
            )
            .await;
            leadership.release().await;
        }
    }
    shutdown.cancel(); // stops the metrics server too when we got here on our own
    server.await.context("metrics server task")??;
    tracing::info!("operator stopped");
    Ok(())
}

/// Runs the Controller each time this replica becomes leader, stopping it when leadership is lost,
/// until `shutdown`.
async fn lead_while_elected(
    leadership: &mut Leadership,
    client: &Client,
    api: &Api<PresenceNamespace>,
    watcher_config: &watcher::Config,
    settings: &Settings,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    loop {
        tracing::info!("waiting to become leader");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            acquired = leadership.acquired() => if !acquired {
                tracing::error!("leader election stopped");
                return;
            },
        }
        tracing::info!("became leader: reconciling");
        metrics.set_leader(true);
        let stop = shutdown.child_token();
        let controller = reconcile::run_controller(
            client.clone(),
            api.clone(),
            watcher_config.clone(),
            settings.clone(),
            stop.clone(),
        );
        tokio::pin!(controller);
        tokio::select! {
            _ = &mut controller => {}
            _ = leadership.lost() => {
                tracing::warn!("lost the leader Lease: stopping the controller");
                stop.cancel();
                controller.await;
            }
        }
        metrics.set_leader(false);
        if shutdown.is_cancelled() {
            return;
        }
    }
}
