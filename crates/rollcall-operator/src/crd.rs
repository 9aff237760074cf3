//! The `PresenceNamespace` custom resource: its Rust types, schema rules and CRD YAML.

use kube::{CustomResource, CustomResourceExt, KubeSchema};
use rollcall_core::namespace::NamespaceOptions;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the CRD.
pub const GROUP: &str = "rollcall.dev";
/// The only served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// The type of the one condition the operator maintains.
pub const READY: &str = "Ready";

/// The options of one channel namespace (or of channels without a namespace).
///
/// `rollcall operator` renders every object of a Kubernetes namespace into one ConfigMap
/// (`namespaces.yaml`) that the server pods mount and hot-reload.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[kube(
    group = "rollcall.dev",
    version = "v1alpha1",
    kind = "PresenceNamespace",
    plural = "presencenamespaces",
    shortname = "pns",
    namespaced,
    status = "PresenceNamespaceStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Rollcall channel namespace: presence, join/leave and permission options for channels `name:*`.",
    printcolumn(
        name = "Channel-NS",
        type_ = "string",
        description = "The channel namespace this object configures",
        json_path = ".status.channelNamespace"
    ),
    printcolumn(name = "Presence", type_ = "boolean", json_path = ".spec.presence"),
    printcolumn(name = "Join-Leave", type_ = "boolean", json_path = ".spec.joinLeave"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.withoutNamespace || has(self.spec.name) || size(self.metadata.name) >= 2")
        .message("metadata.name is used as the channel namespace when spec.name is not set, and must then be at least 2 characters")
)]
#[x_kube(
    validation = Rule::new("!(has(self.name) && self.withoutNamespace)")
        .message("name and withoutNamespace are exclusive: an object configures either one named namespace or channels without a namespace")
)]
#[serde(rename_all = "camelCase")]
pub struct PresenceNamespaceSpec {
    /// Channel namespace name (`name:` prefix of channels); default: metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-a-zA-Z0-9_.]{2,}$"), length(max = 253))]
    pub name: Option<String>,
    /// true: these options apply to channels without a namespace (then `name` must be unset).
    #[serde(default)]
    pub without_namespace: bool,
    /// Keep presence (who is subscribed) for channels of this namespace.
    #[serde(default)]
    pub presence: bool,
    /// Emit join/leave events when a client subscribes or unsubscribes.
    #[serde(default)]
    pub join_leave: bool,
    /// Push join/leave to every subscriber without asking them to opt in.
    #[serde(default)]
    pub force_push_join_leave: bool,
    /// A subscriber of the channel may ask for its presence.
    #[serde(default)]
    pub allow_presence_for_subscriber: bool,
    /// Any authenticated client may ask for presence.
    #[serde(default)]
    pub allow_presence_for_client: bool,
    /// The presence rules above extend to anonymous clients.
    #[serde(default)]
    pub allow_presence_for_anonymous: bool,
    /// Any authenticated client may subscribe without a subscription token.
    #[serde(default)]
    pub allow_subscribe_for_client: bool,
    /// The subscribe rule above extends to anonymous clients.
    #[serde(default)]
    pub allow_subscribe_for_anonymous: bool,
    /// When set, the part of a channel after `name:` must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub channel_regex: Option<String>,
}

/// What the operator last observed and did with an object.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceNamespaceStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The channel namespace this object claims (unset for withoutNamespace objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_namespace: Option<String>,
    /// `Ready`: True/Applied, False/Conflict or False/Invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition in the usual Kubernetes shape.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    /// CamelCase reason: `Applied`, `Conflict`, `Invalid`.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`/`reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The metadata.generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl PresenceNamespaceSpec {
    /// The server options this object asks for (snake_case, as the server reads them).
    pub fn options(&self) -> NamespaceOptions {
        NamespaceOptions {
            presence: self.presence,
            join_leave: self.join_leave,
            force_push_join_leave: self.force_push_join_leave,
            allow_presence_for_client: self.allow_presence_for_client,
            allow_presence_for_subscriber: self.allow_presence_for_subscriber,
            allow_presence_for_anonymous: self.allow_presence_for_anonymous,
            allow_subscribe_for_client: self.allow_subscribe_for_client,
            allow_subscribe_for_anonymous: self.allow_subscribe_for_anonymous,
            channel_regex: self.channel_regex.clone().unwrap_or_default(),
        }
    }
}

impl PresenceNamespace {
    /// The Ready condition, if the operator has set one.
    pub fn ready(&self) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
    }
}

/// The CustomResourceDefinition as YAML, byte-stable for the same types.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&PresenceNamespace::crd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn crd() -> Value {
        serde_json::to_value(PresenceNamespace::crd()).unwrap()
    }

    #[test]
    fn names_scope_and_status_subresource() {
        let crd = crd();
        assert_eq!(crd["metadata"]["name"], "presencenamespaces.rollcall.dev");
        assert_eq!(crd["spec"]["group"], GROUP);
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], "PresenceNamespace");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["pns"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], VERSION);
        assert_eq!(version["subresources"]["status"], json!({}));
    }

    #[test]
    fn printer_columns_in_order() {
        let crd = crd();
        let columns: Vec<_> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_uppercase())
            .collect();
        assert_eq!(
            columns,
            ["CHANNEL-NS", "PRESENCE", "JOIN-LEAVE", "READY", "AGE"]
        );
    }

    #[test]
    fn schema_validates_name_and_exclusive_fields() {
        let crd = crd();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let spec = &root["properties"]["spec"];
        assert_eq!(
            spec["properties"]["name"]["pattern"],
            "^[-a-zA-Z0-9_.]{2,}$"
        );
        assert_eq!(spec["properties"]["presence"]["default"], false);
        assert_eq!(spec["properties"]["joinLeave"]["type"], "boolean");
        let rules = spec["x-kubernetes-validations"].to_string();
        assert!(
            rules.contains("has(self.name) && self.withoutNamespace"),
            "{rules}"
        );
        let root_rules = root["x-kubernetes-validations"].to_string();
        assert!(
            root_rules.contains("size(self.metadata.name) >= 2"),
            "{root_rules}"
        );
    }

    #[test]
    fn committed_crd_matches_what_rollcall_crd_prints() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crds/presencenamespaces.rollcall.dev.yaml");
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            committed == crd_yaml().unwrap(),
            "crds/presencenamespaces.rollcall.dev.yaml differs from `rollcall crd`: regenerate it with \
             `cargo run -p rollcall -- crd > crds/presencenamespaces.rollcall.dev.yaml`"
        );
    }

    #[test]
    fn spec_round_trips_camel_case() {
        let spec: PresenceNamespaceSpec = serde_json::from_value(json!({
            "name": "chat", "joinLeave": true, "allowSubscribeForClient": true,
            "channelRegex": "^[a-z]+$"
        }))
        .unwrap();
        let options = spec.options();
        assert!(options.join_leave && options.allow_subscribe_for_client);
        assert!(!options.presence);
        assert_eq!(options.channel_regex, "^[a-z]+$");
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["withoutNamespace"], false);
        assert_eq!(back["name"], "chat");
    }
}
