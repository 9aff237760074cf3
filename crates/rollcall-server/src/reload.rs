//! Hot reload of `channel.namespaces_file`: poll, parse, swap, unsubscribe what disappeared.
//!
//! Polling the file's content (every 250 ms) instead of watching inotify events is what makes
//! the Kubernetes ConfigMap update work: the kubelet swaps a `..data` symlink, which replaces
//! the file without modifying it, and inotify watches on the old target then go silent.

use std::time::Duration;

use rollcall_core::namespace::Namespaces;
use tokio_util::sync::CancellationToken;

use crate::node::{Node, SetupError, parse_namespaces_file};
use crate::outbox::Control;

/// How often the file is checked. A change applies within this interval.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Watches the namespaces file until `shutdown`. Does nothing when no file is configured.
pub async fn watch(node: Node, shutdown: CancellationToken) {
    let path = node.config().channel.namespaces_file.clone();
    if path.is_empty() {
        return;
    }
    let mut last = std::fs::read(&path).ok();
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        // A missing file (the operator has not written it yet, or a swap in progress) is
        // treated as empty only when it stays missing: read errors keep the current set.
        let current = match tokio::fs::read(&path).await {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot read channel.namespaces_file; keeping the current namespaces");
                continue;
            }
        };
        if current == last {
            continue;
        }
        last = current.clone();
        let text = current
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match apply(&node, &path, &text) {
            Ok(removed) => {
                node.metrics()
                    .reloads
                    .get_or_create(&[("result", "ok")])
                    .inc();
                tracing::info!(%path, unsubscribed = removed, "channel namespaces reloaded");
            }
            Err(e) => {
                node.metrics()
                    .reloads
                    .get_or_create(&[("result", "invalid")])
                    .inc();
                tracing::error!(%path, error = %e, "channel.namespaces_file rejected; keeping the previous namespaces");
            }
        }
    }
}

/// Parses `text`, swaps the namespace set in, and asks every session subscribed to a channel
/// whose namespace no longer exists to unsubscribe (push code 2000). Returns how many
/// subscriptions were asked.
pub fn apply(node: &Node, path: &str, text: &str) -> Result<usize, SetupError> {
    let file = parse_namespaces_file(path, text)?;
    let ch = &node.config().channel;
    let namespaces = Namespaces::build_with_file(&ch.without_namespace, &ch.namespaces, &file)
        .map_err(|e| SetupError::NamespacesFile {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    node.set_namespaces(namespaces);
    let current = node.namespaces();
    let gone = node.hub().find(|channel| {
        matches!(
            current.resolve(channel),
            Err(rollcall_core::codes::ErrorCode::UnknownChannel)
        )
    });
    let n = gone.len();
    for (channel, _client, outbox) in gone {
        outbox.control(Control::Unsubscribe(channel));
    }
    Ok(n)
}
