//! Rollcall's Kubernetes operator (placeholder until the operator lands).
#![forbid(unsafe_code)]

use tokio_util::sync::CancellationToken;

/// Flags of `rollcall operator`.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {}

/// The `PresenceNamespace` CRD as YAML (what `rollcall crd` prints).
pub fn crd_yaml() -> anyhow::Result<String> {
    anyhow::bail!("the operator is not built yet")
}

/// Runs the operator until `shutdown` is cancelled.
pub async fn run(_args: OperatorArgs, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("the operator is not built yet")
}
