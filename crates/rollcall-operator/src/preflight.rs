//! Start-up checks (API server reachable, CRD installed, permission to list) and the one-line
//! explanations of the API errors an operator hits when installed wrongly.

use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::crd::PresenceNamespace;

/// First and largest delay between two start-up checks.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One line that says what is wrong and what to do, for the errors of an install
/// (missing CRD, missing RBAC permission, no credentials); `None` for anything else.
pub fn explain(err: &kube::Error) -> Option<String> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    match status.code {
        404 => Some(format!(
            "the PresenceNamespace CRD (presencenamespaces.rollcall.dev) is not installed: \
             apply crds/presencenamespaces.rollcall.dev.yaml or `rollcall crd | kubectl apply -f -` \
             (API server: {})",
            status.message
        )),
        403 => Some(format!(
            "RBAC: the operator's ServiceAccount lacks a permission: {} \
             (it needs presencenamespaces get/list/watch/patch, presencenamespaces/status patch, \
             configmaps get/create/patch, events.k8s.io events create/patch, leases get/create/patch)",
            status.message
        )),
        401 => Some(format!(
            "the API server rejected the operator's credentials: {}",
            status.message
        )),
        _ => None,
    }
}

/// The one-line explanation of a watcher error (list/watch of PresenceNamespace).
pub fn explain_watcher(err: &watcher::Error) -> String {
    let inner = match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => explain(e),
        _ => None,
    };
    inner.unwrap_or_else(|| format!("watching PresenceNamespace objects failed: {err}"))
}

/// Lists one object until that works, logging each distinct problem once, with a growing
/// delay between attempts. Returns `false` when `shutdown` fires first.
pub async fn wait_until_listable(
    api: &Api<PresenceNamespace>,
    params: &ListParams,
    shutdown: &CancellationToken,
) -> bool {
    let mut delay = RETRY_MIN;
    let mut last: Option<String> = None;
    loop {
        match api.list_metadata(&params.clone().limit(1)).await {
            Ok(_) => {
                if last.is_some() {
                    tracing::info!("PresenceNamespace objects are listable now");
                }
                return true;
            }
            Err(err) => {
                let line = explain(&err)
                    .unwrap_or_else(|| format!("cannot list PresenceNamespace objects: {err}"));
                if last.as_deref() != Some(line.as_str()) {
                    tracing::error!(retry_every = ?RETRY_MAX, "{line}");
                    last = Some(line);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            reason: reason.into(),
            message: format!("{reason} message"),
            ..Default::default()
        }))
    }

    #[test]
    fn missing_crd_and_rbac_get_one_clear_line() {
        let crd = explain(&api_error(404, "NotFound")).unwrap();
        assert!(
            crd.contains("CRD") && crd.contains("not installed"),
            "{crd}"
        );
        let rbac = explain(&api_error(403, "Forbidden")).unwrap();
        assert!(
            rbac.starts_with("RBAC") && rbac.contains("Forbidden message"),
            "{rbac}"
        );
        assert!(!rbac.contains('\n') && !crd.contains('\n'));
        assert_eq!(explain(&api_error(500, "InternalError")), None);
        let watch = explain_watcher(&watcher::Error::InitialListFailed(api_error(
            404, "NotFound",
        )));
        assert!(watch.contains("not installed"), "{watch}");
    }
}
