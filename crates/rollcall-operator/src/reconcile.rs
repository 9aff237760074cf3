//! The reconciler: every change to a `PresenceNamespace` re-renders its whole Kubernetes namespace
//! into the ConfigMap, then brings each object's status in line with the rendering.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::crd::PresenceNamespace;
use crate::metrics::Metrics;
use crate::render::{self, Outcome};
use crate::status;

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "rollcall-operator";
/// Finalizer that holds an object until its namespace is out of the ConfigMap.
pub const FINALIZER: &str = "rollcall.dev/configmap";
/// Key of the rendered file in the ConfigMap.
pub const CONFIGMAP_KEY: &str = "namespaces.yaml";
/// Label put on the ConfigMap.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// How often a healthy object is reconciled again, to repair drift nobody announced.
pub const RESYNC: Duration = Duration::from_secs(300);
/// First and largest delay of the per-object exponential backoff after errors.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Why a reconciliation failed. Variant names are the `error` label of the failure metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot apply ConfigMap {name}: {source}")]
    ConfigMap {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot patch the status of {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("cannot serialize namespaces.yaml: {0}")]
    Render(#[source] serde_yaml::Error),
    #[error("object {0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// The variant name, as the metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Error::ConfigMap { .. } => "ConfigMap",
            Error::Status { .. } => "Status",
            Error::Finalizer(_) => "Finalizer",
            Error::Render(_) => "Render",
            Error::NoNamespace(_) => "NoNamespace",
        }
    }

    /// The Kubernetes API error underneath, if any.
    pub fn kube(&self) -> Option<&kube::Error> {
        match self {
            Error::ConfigMap { source, .. } | Error::Status { source, .. } => Some(source),
            Error::Finalizer(inner) => match &**inner {
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Some(e),
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.kube(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What every reconciliation shares.
pub struct Context {
    /// API client (the mocked one in tests).
    pub client: Client,
    /// The controller's cache of every watched object: the source of sibling objects.
    pub store: Store<PresenceNamespace>,
    /// Name of the ConfigMap written in each Kubernetes namespace.
    pub configmap: String,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// One lock per Kubernetes namespace: renderings of one namespace never interleave, so the
    /// last apply always comes from the newest view of the store.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Consecutive failures per object, for the backoff; cleared on success.
    failures: Mutex<HashMap<ObjectRef<PresenceNamespace>, u32>>,
}

/// What the Controller's context is made of, besides the client and the store.
#[derive(Clone)]
pub struct Settings {
    /// Name of the ConfigMap written in each Kubernetes namespace.
    pub configmap: String,
    /// This replica's name in Events (the pod name).
    pub instance: Option<String>,
    pub metrics: Metrics,
}

impl Context {
    /// A context over `store`, the Controller's cache.
    pub fn new(client: Client, store: Store<PresenceNamespace>, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: settings.instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            store,
            configmap: settings.configmap,
            metrics: settings.metrics,
            locks: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    fn namespace_lock(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        // A std Mutex is fine: held only to look up the map, never across an await.
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(namespace.to_string()).or_default().clone()
    }
}

/// Reconciles `obj` by re-rendering its whole Kubernetes namespace.
///
/// Order of writes: finalizer first (an object is rendered only once it carries it, so its
/// removal always goes through cleanup), then the ConfigMap, then statuses and Events of every
/// object whose status changed, and on deletion the finalizer removal last.
pub async fn reconcile(obj: Arc<PresenceNamespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(obj.name_any()))?;
    let lock = ctx.namespace_lock(&namespace);
    let _serial = lock.lock().await;
    let api: Api<PresenceNamespace> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            finalizer::Event::Apply(obj) => sync_namespace(&ctx, &namespace, &obj).await,
            finalizer::Event::Cleanup(obj) => {
                sync_namespace(&ctx, &namespace, &obj).await?;
                let note = format!("channel namespace removed from ConfigMap {}", ctx.configmap);
                publish(&ctx, &obj, EventType::Normal, "Removed", note).await;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(started.elapsed());
    result
}

/// Renders the objects of `namespace` (with `trigger` as the freshest copy of itself), applies
/// the ConfigMap and patches every status that differs from what the rendering says.
async fn sync_namespace(
    ctx: &Context,
    namespace: &str,
    trigger: &PresenceNamespace,
) -> Result<Action, Error> {
    let mut objects: Vec<PresenceNamespace> = ctx
        .store
        .state()
        .into_iter()
        .filter(|o| {
            o.namespace().as_deref() == Some(namespace) && o.name_any() != trigger.name_any()
        })
        .map(|o| (*o).clone())
        .collect();
    objects.push(trigger.clone());
    objects.retain(|o| o.finalizers().iter().any(|f| f == FINALIZER));
    // Statuses are written in name order: deterministic for tests and for readers of the log.
    objects.sort_by_key(|o| o.name_any());
    let rendering = render::render(&objects).map_err(Error::Render)?;
    apply_configmap(ctx, namespace, &rendering.yaml).await?;

    let now = Timestamp::now().to_string();
    for obj in &objects {
        let Some((channel_ns, outcome)) = rendering.outcomes.get(&obj.name_any()) else {
            continue; // being deleted: it gets no status
        };
        let desired = status::desired(obj, channel_ns.as_deref(), outcome, &ctx.configmap, &now);
        if obj.status.as_ref() == Some(&desired) {
            continue;
        }
        let api: Api<PresenceNamespace> = Api::namespaced(ctx.client.clone(), namespace);
        let patch = json!({
            "apiVersion": PresenceNamespace::api_version(&()),
            "kind": PresenceNamespace::kind(&()),
            "status": desired,
        });
        let params = PatchParams::apply(MANAGER).force();
        api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::Status {
                name: obj.name_any(),
                source,
            })?;
        if status::is_transition(obj.ready(), &desired.conditions[0]) {
            let (type_, reason) = match outcome {
                Outcome::Applied => (EventType::Normal, "Applied"),
                Outcome::Conflict { .. } => (EventType::Warning, "Conflict"),
                Outcome::Invalid { .. } => (EventType::Warning, "Invalid"),
            };
            let note = desired.conditions[0].message.clone();
            publish(ctx, obj, type_, reason, note).await;
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// Server-side applies the ConfigMap; an unchanged content is a no-op on the API server.
async fn apply_configmap(ctx: &Context, namespace: &str, yaml: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ctx.configmap,
            "namespace": namespace,
            "labels": { MANAGED_BY: MANAGER },
        },
        "data": { CONFIGMAP_KEY: yaml },
    });
    // force: take the key over from whoever created the ConfigMap first (e.g. a Helm chart
    // that ships an empty one so that server pods can mount it before the operator runs).
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&ctx.configmap, &params, &Patch::Apply(&cm))
        .await
        .map_err(|source| Error::ConfigMap {
            name: ctx.configmap.clone(),
            source,
        })?;
    ctx.metrics.configmap_applied();
    Ok(())
}

/// Publishes an Event on `obj`; best effort: a failure is logged, not returned.
async fn publish(
    ctx: &Context,
    obj: &PresenceNamespace,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(object = %obj.name_any(), %err, "cannot publish event");
    }
}

/// After a failed reconciliation: requeue with a per-object exponential backoff
/// (1 s, 2 s, 4 s, … up to 5 min).
pub fn error_policy(obj: Arc<PresenceNamespace>, err: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ObjectRef::from_obj(&*obj)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(failures);
    ctx.metrics.failed(err.label());
    let explained = err.kube().and_then(crate::preflight::explain);
    tracing::warn!(
        object = %obj.name_any(),
        namespace = obj.namespace().unwrap_or_default(),
        failures,
        retry_in = ?delay,
        error = %explained.unwrap_or_else(|| err.to_string()),
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// The delay after `failures` consecutive failures (`failures` ≥ 1).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX)
}

fn succeeded(ctx: &Context, obj: &ObjectRef<PresenceNamespace>) {
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(obj);
}

/// Runs the Controller over `api` until `stop` is cancelled.
pub async fn run_controller(
    client: Client,
    api: Api<PresenceNamespace>,
    watcher_config: watcher::Config,
    settings: Settings,
    stop: CancellationToken,
) {
    let config = controller::Config::default()
        .debounce(Duration::from_millis(100))
        .concurrency(4);
    let controller = Controller::new(api, watcher_config).with_config(config);
    let ctx = Arc::new(Context::new(client, controller.store(), settings));
    let results_ctx = ctx.clone();
    let mut last_problem: Option<String> = None;
    controller
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok((obj, _)) => {
                    succeeded(&results_ctx, &obj);
                    tracing::debug!(object = %obj, "reconciled");
                    last_problem = None;
                }
                // Failed reconciliations were logged by error_policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(err) => {
                    // Watch errors repeat with the watcher's own backoff: say each once.
                    let line = match &err {
                        controller::Error::QueueError(w) => crate::preflight::explain_watcher(w),
                        other => other.to_string(),
                    };
                    if last_problem.as_deref() != Some(line.as_str()) {
                        tracing::error!("{line}");
                        last_problem = Some(line);
                    }
                }
            }
            futures_util::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PresenceNamespaceSpec;
    use crate::fixtures::{Exchange, chat, context, pns, verify};
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn yaml(objects: &[PresenceNamespace]) -> String {
        render::render(objects).unwrap().yaml
    }

    fn with_status(
        mut obj: PresenceNamespace,
        outcome: &Outcome,
        channel_ns: &str,
    ) -> PresenceNamespace {
        obj.status = Some(status::desired(
            &obj,
            Some(channel_ns),
            outcome,
            "rollcall-namespaces",
            "T0",
        ));
        obj
    }

    fn deleting(mut obj: PresenceNamespace) -> PresenceNamespace {
        obj.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(100).unwrap()));
        obj
    }

    #[tokio::test]
    async fn a_new_object_first_gets_the_finalizer() {
        let mut obj = pns("chat", 1, chat());
        obj.metadata.finalizers = None;
        let (ctx, api) = context(std::slice::from_ref(&obj));
        let server = api.run(vec![Exchange::finalizer_added(&obj)]);
        let action = reconcile(Arc::new(obj), ctx).await.unwrap();
        assert_eq!(action, Action::await_change());
        verify(server).await;
    }

    #[tokio::test]
    async fn an_object_with_finalizer_is_applied_then_marked_ready() {
        let obj = pns("chat", 1, chat());
        let (ctx, api) = context(std::slice::from_ref(&obj));
        let server = api.run(vec![
            Exchange::configmap_applied(&yaml(std::slice::from_ref(&obj))),
            Exchange::status_patched(&obj, "Applied"),
            Exchange::event("chat", "Applied"),
        ]);
        let action = reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(RESYNC));
        assert!(
            ctx.metrics
                .encode()
                .contains("rollcall_operator_configmap_applies_total 1")
        );
        drop(ctx);
        verify(server).await;
    }

    #[tokio::test]
    async fn an_unchanged_status_is_not_patched_again() {
        let obj = with_status(pns("chat", 1, chat()), &Outcome::Applied, "chat");
        let (ctx, api) = context(std::slice::from_ref(&obj));
        let server = api.run(vec![Exchange::configmap_applied(&yaml(
            std::slice::from_ref(&obj),
        ))]);
        reconcile(Arc::new(obj), ctx).await.unwrap();
        verify(server).await;
    }

    #[tokio::test]
    async fn objects_without_the_finalizer_yet_are_not_rendered() {
        let obj = pns("chat", 1, chat());
        let mut newcomer = pns("other", 2, chat());
        newcomer.metadata.finalizers = None;
        let (ctx, api) = context(&[obj.clone(), newcomer]);
        let server = api.run(vec![
            Exchange::configmap_applied(&yaml(std::slice::from_ref(&obj))),
            Exchange::status_patched(&obj, "Applied"),
            Exchange::event("chat", "Applied"),
        ]);
        reconcile(Arc::new(obj), ctx).await.unwrap();
        verify(server).await;
    }

    #[tokio::test]
    async fn a_conflict_marks_the_newer_object_and_keeps_the_older() {
        let older = with_status(pns("chat", 1, chat()), &Outcome::Applied, "chat");
        let newer = pns(
            "newer",
            2,
            PresenceNamespaceSpec {
                name: Some("chat".into()),
                ..Default::default()
            },
        );
        let (ctx, api) = context(&[older.clone(), newer.clone()]);
        let server = api.run(vec![
            Exchange::configmap_applied(&yaml(std::slice::from_ref(&older))),
            Exchange::status_patched(&newer, "Conflict"),
            Exchange::event("newer", "Conflict"),
        ]);
        reconcile(Arc::new(newer), ctx).await.unwrap();
        verify(server).await;
    }

    #[tokio::test]
    async fn an_invalid_object_is_reported_and_left_out() {
        let good = with_status(pns("chat", 1, chat()), &Outcome::Applied, "chat");
        let bad = pns(
            "bad",
            2,
            PresenceNamespaceSpec {
                channel_regex: Some("([".into()),
                ..Default::default()
            },
        );
        let (ctx, api) = context(&[good.clone(), bad.clone()]);
        let server = api.run(vec![
            Exchange::configmap_applied(&yaml(std::slice::from_ref(&good))),
            Exchange::status_patched(&bad, "Invalid"),
            Exchange::event("bad", "Invalid"),
        ]);
        reconcile(Arc::new(bad), ctx).await.unwrap();
        verify(server).await;
    }

    #[tokio::test]
    async fn deletion_rewrites_the_configmap_before_the_finalizer_goes() {
        // The deleted object was the winner: its conflicting sibling takes the namespace over.
        let winner = deleting(with_status(
            pns("chat", 1, chat()),
            &Outcome::Applied,
            "chat",
        ));
        let conflict = Outcome::Conflict {
            winner: "chat".into(),
        };
        let spec = PresenceNamespaceSpec {
            name: Some("chat".into()),
            ..Default::default()
        };
        let loser = with_status(pns("second", 2, spec), &conflict, "chat");
        let (ctx, api) = context(&[winner.clone(), loser.clone()]);
        let server = api.run(vec![
            Exchange::configmap_applied(&yaml(std::slice::from_ref(&loser))),
            Exchange::status_patched(&loser, "Applied"),
            Exchange::event("second", "Applied"),
            Exchange::event("chat", "Removed"),
            Exchange::finalizer_removed(&winner),
        ]);
        let action = reconcile(Arc::new(winner), ctx).await.unwrap();
        assert_eq!(action, Action::await_change());
        verify(server).await;
    }

    #[tokio::test]
    async fn deleting_the_last_object_leaves_an_empty_list() {
        let obj = deleting(with_status(
            pns("chat", 1, chat()),
            &Outcome::Applied,
            "chat",
        ));
        let (ctx, api) = context(std::slice::from_ref(&obj));
        let server = api.run(vec![
            Exchange::configmap_applied("namespaces: []\n"),
            Exchange::event("chat", "Removed"),
            Exchange::finalizer_removed(&obj),
        ]);
        reconcile(Arc::new(obj), ctx).await.unwrap();
        verify(server).await;
    }

    #[tokio::test]
    async fn a_failed_cleanup_keeps_the_finalizer() {
        let obj = deleting(pns("chat", 1, chat()));
        let (ctx, api) = context(std::slice::from_ref(&obj));
        let server = api.run(vec![Exchange::fails(
            Method::PATCH,
            &Exchange::configmap_path(),
            500,
            "InternalError",
        )]);
        let err = reconcile(Arc::new(obj), ctx).await.unwrap_err();
        assert!(
            matches!(&err, Error::Finalizer(f) if matches!(**f, finalizer::Error::CleanupFailed(_)))
        );
        verify(server).await;
    }

    /// Runs one failing reconciliation per entry of `failures` and returns the error policy's
    /// actions: each failure must back off longer than the one before.
    async fn backoff_after(
        obj: PresenceNamespace,
        rounds: usize,
        script: Vec<Exchange>,
    ) -> (Vec<Action>, Vec<Error>) {
        let (ctx, api) = context(std::slice::from_ref(&obj));
        let server = api.run(script);
        let (mut actions, mut errors) = (vec![], vec![]);
        for _ in 0..rounds {
            let err = reconcile(Arc::new(obj.clone()), ctx.clone())
                .await
                .unwrap_err();
            actions.push(error_policy(Arc::new(obj.clone()), &err, ctx.clone()));
            errors.push(err);
        }
        let metrics = ctx.metrics.encode();
        assert!(
            metrics.contains(&format!("error=\"{}\"}} {rounds}", errors[0].label())),
            "{metrics}"
        );
        drop(ctx);
        verify(server).await;
        (actions, errors)
    }

    #[tokio::test]
    async fn api_500_on_the_configmap_requeues_with_backoff() {
        let obj = pns("chat", 1, chat());
        let fail = || {
            Exchange::fails(
                Method::PATCH,
                &Exchange::configmap_path(),
                500,
                "InternalError",
            )
        };
        let (actions, errors) = backoff_after(obj, 3, vec![fail(), fail(), fail()]).await;
        let secs = |s| Action::requeue(Duration::from_secs(s));
        assert_eq!(actions, [secs(1), secs(2), secs(4)]);
        assert_eq!(errors[0].kube().map(status_code), Some(500));
    }

    #[tokio::test]
    async fn conflict_409_on_the_status_requeues_with_backoff() {
        let obj = pns("chat", 1, chat());
        let yaml = yaml(std::slice::from_ref(&obj));
        let status_path = format!("{}/status", Exchange::object_path("chat"));
        let script = vec![
            Exchange::configmap_applied(&yaml),
            Exchange::fails(Method::PATCH, &status_path, 409, "Conflict"),
            Exchange::configmap_applied(&yaml),
            Exchange::fails(Method::PATCH, &status_path, 409, "Conflict"),
        ];
        let (actions, errors) = backoff_after(obj, 2, script).await;
        let secs = |s| Action::requeue(Duration::from_secs(s));
        assert_eq!(actions, [secs(1), secs(2)]);
        assert_eq!(errors[1].label(), "Finalizer");
        assert_eq!(errors[1].kube().map(status_code), Some(409));
    }

    #[tokio::test]
    async fn missing_crd_404_is_explained_and_requeued_with_backoff() {
        let mut obj = pns("chat", 1, chat());
        obj.metadata.finalizers = None;
        let fail = || {
            Exchange::fails(
                Method::PATCH,
                &Exchange::object_path("chat"),
                404,
                "NotFound",
            )
        };
        let (actions, errors) = backoff_after(obj, 2, vec![fail(), fail()]).await;
        let secs = |s| Action::requeue(Duration::from_secs(s));
        assert_eq!(actions, [secs(1), secs(2)]);
        let line = crate::preflight::explain(errors[0].kube().unwrap()).unwrap();
        assert!(line.contains("CRD"), "{line}");
    }

    #[tokio::test]
    async fn success_resets_the_backoff() {
        let obj = pns("chat", 1, chat());
        let (ctx, _api) = context(std::slice::from_ref(&obj));
        let err = Error::NoNamespace("x".into());
        let first = error_policy(Arc::new(obj.clone()), &err, ctx.clone());
        let second = error_policy(Arc::new(obj.clone()), &err, ctx.clone());
        assert_eq!(
            (first, second),
            (
                Action::requeue(BACKOFF_MIN),
                Action::requeue(BACKOFF_MIN * 2)
            )
        );
        succeeded(&ctx, &ObjectRef::from_obj(&obj));
        assert_eq!(
            error_policy(Arc::new(obj), &err, ctx),
            Action::requeue(BACKOFF_MIN)
        );
    }

    fn status_code(err: &kube::Error) -> u16 {
        match err {
            kube::Error::Api(status) => status.code,
            other => panic!("not an API error: {other}"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
