//! Test fixtures: a scripted fake API server behind `tower-test`, objects, and a Context over them.
//!
//! A test lists the exchanges it expects, in order; the fake server checks each request against
//! the next one and answers as the real API server would, then insists no request is left over.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::crd::{PresenceNamespace, PresenceNamespaceSpec};
use crate::metrics::Metrics;
use crate::reconcile::{Context, FINALIZER, Settings};

pub const NS: &str = "apps";
pub const CONFIGMAP: &str = "rollcall-namespaces";
const PNS_PATH: &str = "/apis/rollcall.dev/v1alpha1/namespaces/apps/presencenamespaces";

/// An object named `name` in namespace `apps`, created at second `created`, with the finalizer.
pub fn pns(name: &str, created: i64, spec: PresenceNamespaceSpec) -> PresenceNamespace {
    PresenceNamespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            resource_version: Some("1".into()),
            creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
            finalizers: Some(vec![FINALIZER.into()]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// A spec with presence and join/leave on.
pub fn chat() -> PresenceNamespaceSpec {
    PresenceNamespaceSpec {
        presence: true,
        join_leave: true,
        ..Default::default()
    }
}

/// A Context whose store holds `objects` and whose client talks to the returned fake server.
pub fn context(objects: &[PresenceNamespace]) -> (Arc<Context>, FakeApi) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let (store, mut writer) = reflector::store();
    for obj in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(obj.clone()));
    }
    let settings = Settings {
        configmap: CONFIGMAP.into(),
        instance: Some("test".into()),
        metrics: Metrics::default(),
    };
    (
        Arc::new(Context::new(client, store, settings)),
        FakeApi(handle),
    )
}

/// Checks a request's body (parsed JSON) and query string; returns the response body.
type Check = Box<dyn FnOnce(&Value, &str) -> Value + Send>;

/// One request the fake server expects, and how it answers.
pub struct Exchange {
    method: Method,
    path: String,
    check: Check,
    status: StatusCode,
}

impl Exchange {
    /// JSON patch adding the finalizer to `obj`.
    pub fn finalizer_added(obj: &PresenceNamespace) -> Self {
        let mut answer = obj.clone();
        answer.metadata.finalizers = Some(vec![FINALIZER.into()]);
        Exchange {
            method: Method::PATCH,
            path: format!("{PNS_PATH}/{}", obj.name_any()),
            check: Box::new(move |body, _| {
                let ops = body.as_array().expect("a JSON patch");
                assert!(
                    ops.iter().any(|op| op["op"] == "add"
                        && op["path"] == "/metadata/finalizers"
                        && op["value"] == json!([FINALIZER])),
                    "finalizer add patch: {body}"
                );
                serde_json::to_value(&answer).unwrap()
            }),
            status: StatusCode::OK,
        }
    }

    /// Server-side apply of the ConfigMap whose `namespaces.yaml` must equal `yaml`.
    pub fn configmap_applied(yaml: &str) -> Self {
        let yaml = yaml.to_string();
        Exchange {
            method: Method::PATCH,
            path: format!("/api/v1/namespaces/{NS}/configmaps/{CONFIGMAP}"),
            check: Box::new(move |body, query| {
                assert!(query.contains("fieldManager=rollcall-operator"), "{query}");
                assert!(query.contains("force=true"), "{query}");
                assert_eq!(body["kind"], "ConfigMap");
                assert_eq!(
                    body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                    "rollcall-operator"
                );
                assert_eq!(body["data"]["namespaces.yaml"], yaml.as_str(), "{body}");
                body.clone()
            }),
            status: StatusCode::OK,
        }
    }

    /// Server-side apply of `obj`'s status with a Ready condition of `reason`.
    pub fn status_patched(obj: &PresenceNamespace, reason: &'static str) -> Self {
        let answer = obj.clone();
        Exchange {
            method: Method::PATCH,
            path: format!("{PNS_PATH}/{}/status", obj.name_any()),
            check: Box::new(move |body, query| {
                assert!(query.contains("fieldManager=rollcall-operator"), "{query}");
                assert_eq!(body["kind"], "PresenceNamespace");
                let ready = &body["status"]["conditions"][0];
                assert_eq!(ready["type"], "Ready");
                assert_eq!(ready["reason"], reason, "{body}");
                let expected = if reason == "Applied" { "True" } else { "False" };
                assert_eq!(ready["status"], expected);
                assert_eq!(
                    body["status"]["observedGeneration"],
                    json!(answer.metadata.generation)
                );
                let mut answer = serde_json::to_value(&answer).unwrap();
                answer["status"] = body["status"].clone();
                answer
            }),
            status: StatusCode::OK,
        }
    }

    /// An Event (events.k8s.io/v1) with `reason` about the object named `name`.
    pub fn event(name: &'static str, reason: &'static str) -> Self {
        Exchange {
            method: Method::POST,
            path: format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            check: Box::new(move |body, _| {
                assert_eq!(body["reason"], reason, "{body}");
                assert_eq!(body["regarding"]["name"], name, "{body}");
                assert_eq!(body["reportingController"], "rollcall-operator");
                body.clone()
            }),
            status: StatusCode::CREATED,
        }
    }

    /// JSON patch removing the finalizer from `obj` (index-checked with a `test` op).
    pub fn finalizer_removed(obj: &PresenceNamespace) -> Self {
        let mut answer = obj.clone();
        answer.metadata.finalizers = None;
        Exchange {
            method: Method::PATCH,
            path: format!("{PNS_PATH}/{}", obj.name_any()),
            check: Box::new(move |body, _| {
                let ops = body.as_array().expect("a JSON patch");
                assert!(
                    ops.iter()
                        .any(|op| op["op"] == "test" && op["value"] == FINALIZER),
                    "{body}"
                );
                assert!(ops.iter().any(|op| op["op"] == "remove"), "{body}");
                serde_json::to_value(&answer).unwrap()
            }),
            status: StatusCode::OK,
        }
    }

    /// `method path` answered with an API error `code`/`reason`, whatever the body.
    pub fn fails(method: Method, path: &str, code: u16, reason: &'static str) -> Self {
        Exchange {
            method,
            path: path.to_string(),
            check: Box::new(move |_, _| {
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("injected {reason}"),
                    "reason": reason, "code": code,
                })
            }),
            status: StatusCode::from_u16(code).unwrap(),
        }
    }

    /// The ConfigMap apply path, for [`Exchange::fails`].
    pub fn configmap_path() -> String {
        format!("/api/v1/namespaces/{NS}/configmaps/{CONFIGMAP}")
    }

    /// The path of object `name`, for [`Exchange::fails`].
    pub fn object_path(name: &str) -> String {
        format!("{PNS_PATH}/{name}")
    }
}

/// The server side of the mocked client.
pub struct FakeApi(tower_test::mock::Handle<Request<Body>, Response<Body>>);

impl FakeApi {
    /// Serves `script` in order, then asserts that no further request arrives before every
    /// client is dropped (drop the Context to end the scenario).
    pub fn run(mut self, script: Vec<Exchange>) -> JoinHandle<()> {
        tokio::spawn(async move {
            for (i, exchange) in script.into_iter().enumerate() {
                let (request, send) = self.0.next_request().await.unwrap_or_else(|| {
                    panic!(
                        "exchange {i}: no request came ({} {})",
                        exchange.method, exchange.path
                    )
                });
                let (parts, body) = request.into_parts();
                assert_eq!(
                    (&parts.method, parts.uri.path()),
                    (&exchange.method, exchange.path.as_str()),
                    "exchange {i}: unexpected request"
                );
                let bytes = body.collect_bytes().await.unwrap();
                let value: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("a JSON body")
                };
                let answer = (exchange.check)(&value, parts.uri.query().unwrap_or(""));
                let response = Response::builder()
                    .status(exchange.status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
            if let Some((request, _)) = self.0.next_request().await {
                panic!(
                    "request beyond the script: {} {}",
                    request.method(),
                    request.uri()
                );
            }
        })
    }
}

/// Awaits the fake server's verdict, bounded.
pub async fn verify(server: JoinHandle<()>) {
    tokio::time::timeout(std::time::Duration::from_secs(2), server)
        .await
        .expect("the fake API server did not finish within 2 s (a client still alive?)")
        .expect("scenario failed");
}
