//! Rendering: the `PresenceNamespace` objects of one Kubernetes namespace → `namespaces.yaml`.
//!
//! Pure and deterministic: the same objects (in any order) give byte-identical text, so an
//! unchanged set never rewrites the ConfigMap nor triggers a reload in the server pods.

use std::collections::BTreeMap;

use kube::ResourceExt;
use rollcall_core::namespace::{NamespaceConfig, NamespaceOptions, Namespaces, NamespacesFile};

use crate::crd::PresenceNamespace;

/// What became of one object in a rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its namespace (or the without-namespace options) is in the file.
    Applied,
    /// An older object claims the same channel namespace; `winner` is its metadata.name.
    Conflict { winner: String },
    /// The object cannot be rendered; `reason` says why, for humans.
    Invalid { reason: String },
}

/// The result of [`render`]: the file, its YAML text, and one outcome per rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendering {
    /// The file content as data.
    pub file: NamespacesFile,
    /// The file content as the YAML text written to the ConfigMap key `namespaces.yaml`.
    pub yaml: String,
    /// Per object (by metadata.name): the channel namespace it claims (`None` for
    /// withoutNamespace objects) and what became of it.
    pub outcomes: BTreeMap<String, (Option<String>, Outcome)>,
}

/// The channel namespace an object claims: `spec.name`, else `metadata.name`; `None` when it
/// configures channels without a namespace.
pub fn channel_namespace(obj: &PresenceNamespace) -> Option<String> {
    if obj.spec.without_namespace {
        return obj.spec.name.clone();
    }
    Some(obj.spec.name.clone().unwrap_or_else(|| obj.name_any()))
}

/// Renders the objects of one Kubernetes namespace.
///
/// Rules: objects being deleted are left out (and get no outcome); an invalid object (bad name,
/// bad `channelRegex`, `name` together with `withoutNamespace`) is left out and reported; when
/// several valid objects claim one channel namespace (or several set `withoutNamespace`), the
/// oldest by creationTimestamp wins (ties: the smaller metadata.name) and the others are
/// reported as conflicts. Namespaces are sorted by name. O(n log n).
pub fn render(objects: &[PresenceNamespace]) -> Result<Rendering, serde_yaml::Error> {
    let mut live: Vec<&PresenceNamespace> = objects
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .collect();
    // Oldest first, so the first claimant of a channel namespace is the winner.
    live.sort_by(|a, b| {
        let key = |o: &PresenceNamespace| {
            let ts = o.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (ts.is_none(), ts, o.name_any())
        };
        key(a).cmp(&key(b))
    });

    let mut outcomes = BTreeMap::new();
    let mut named: BTreeMap<String, (String, NamespaceOptions)> = BTreeMap::new();
    let mut without: Option<(String, NamespaceOptions)> = None;
    for obj in live {
        let object = obj.name_any();
        let channel_ns = channel_namespace(obj);
        let outcome = match validate(obj, channel_ns.as_deref()) {
            Err(reason) => Outcome::Invalid { reason },
            Ok(options) => {
                let slot = match &channel_ns {
                    Some(ns) => named.get(ns).map(|(winner, _)| winner.clone()),
                    None => without.as_ref().map(|(winner, _)| winner.clone()),
                };
                match slot {
                    Some(winner) => Outcome::Conflict { winner },
                    None => {
                        match &channel_ns {
                            Some(ns) => named.insert(ns.clone(), (object.clone(), options)),
                            None => without.replace((object.clone(), options)),
                        };
                        Outcome::Applied
                    }
                }
            }
        };
        outcomes.insert(object, (channel_ns, outcome));
    }

    let file = NamespacesFile {
        // BTreeMap iteration is sorted by channel namespace name.
        namespaces: named
            .into_iter()
            .map(|(name, (_, options))| NamespaceConfig { name, options })
            .collect(),
        without_namespace: without.map(|(_, options)| options),
    };
    let yaml = serde_yaml::to_string(&file)?;
    Ok(Rendering {
        file,
        yaml,
        outcomes,
    })
}

/// Checks one object the way the server will check the file, so that a bad object is reported
/// on itself instead of making the whole file unloadable.
fn validate(obj: &PresenceNamespace, channel_ns: Option<&str>) -> Result<NamespaceOptions, String> {
    let options = obj.spec.options();
    if obj.spec.without_namespace && obj.spec.name.is_some() {
        return Err("spec.name and spec.withoutNamespace are exclusive".into());
    }
    let built = match channel_ns {
        Some(name) => Namespaces::build(
            &NamespaceOptions::default(),
            &[NamespaceConfig {
                name: name.to_string(),
                options: options.clone(),
            }],
        ),
        None => Namespaces::build(&options, &[]),
    };
    built.map(|_| options).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PresenceNamespaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    fn pns(name: &str, created: i64, spec: PresenceNamespaceSpec) -> PresenceNamespace {
        PresenceNamespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("apps".into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    fn chat() -> PresenceNamespaceSpec {
        PresenceNamespaceSpec {
            presence: true,
            join_leave: true,
            ..Default::default()
        }
    }

    #[test]
    fn renders_sorted_snake_case_yaml() {
        let objects = [
            pns("zeta", 1, chat()),
            pns(
                "alpha",
                2,
                PresenceNamespaceSpec {
                    allow_subscribe_for_client: true,
                    channel_regex: Some("^[a-z]+$".into()),
                    ..Default::default()
                },
            ),
        ];
        let r = render(&objects).unwrap();
        let expected = "\
namespaces:
- name: alpha
  presence: false
  join_leave: false
  force_push_join_leave: false
  allow_presence_for_client: false
  allow_presence_for_subscriber: false
  allow_presence_for_anonymous: false
  allow_subscribe_for_client: true
  allow_subscribe_for_anonymous: false
  channel_regex: ^[a-z]+$
- name: zeta
  presence: true
  join_leave: true
  force_push_join_leave: false
  allow_presence_for_client: false
  allow_presence_for_subscriber: false
  allow_presence_for_anonymous: false
  allow_subscribe_for_client: false
  allow_subscribe_for_anonymous: false
";
        assert_eq!(r.yaml, expected);
        assert_eq!(r.outcomes["zeta"], (Some("zeta".into()), Outcome::Applied));
        assert_eq!(
            r.outcomes["alpha"],
            (Some("alpha".into()), Outcome::Applied)
        );
        // What the server reads back is what was rendered.
        let back: NamespacesFile = serde_yaml::from_str(&r.yaml).unwrap();
        assert_eq!(back, r.file);
    }

    #[test]
    fn spec_name_overrides_metadata_name() {
        let mut spec = chat();
        spec.name = Some("chat.v2".into());
        let r = render(&[pns("my-object", 1, spec)]).unwrap();
        assert_eq!(r.file.namespaces[0].name, "chat.v2");
        assert_eq!(r.outcomes["my-object"].0.as_deref(), Some("chat.v2"));
    }

    #[test]
    fn output_is_byte_stable_whatever_the_input_order() {
        let a = pns("a1", 5, chat());
        let b = pns("b2", 3, PresenceNamespaceSpec::default());
        let c = pns("c3", 4, chat());
        let first = render(&[a.clone(), b.clone(), c.clone()]).unwrap();
        for order in [[&c, &b, &a], [&b, &a, &c], [&c, &a, &b]] {
            let objects: Vec<_> = order.into_iter().cloned().collect();
            let again = render(&objects).unwrap();
            assert_eq!(again.yaml.as_bytes(), first.yaml.as_bytes());
            assert_eq!(again.outcomes, first.outcomes);
        }
    }

    #[test]
    fn empty_set_renders_an_empty_list() {
        let r = render(&[]).unwrap();
        assert_eq!(r.yaml, "namespaces: []\n");
        assert!(r.outcomes.is_empty());
    }

    #[test]
    fn conflict_oldest_wins() {
        let newer = PresenceNamespaceSpec {
            name: Some("chat".into()),
            ..Default::default()
        };
        let r = render(&[pns("newer", 20, newer), pns("chat", 10, chat())]).unwrap();
        assert_eq!(r.file.namespaces.len(), 1);
        assert!(
            r.file.namespaces[0].options.presence,
            "the older object's options win"
        );
        assert_eq!(r.outcomes["chat"].1, Outcome::Applied);
        assert_eq!(
            r.outcomes["newer"],
            (
                Some("chat".into()),
                Outcome::Conflict {
                    winner: "chat".into()
                }
            )
        );
    }

    #[test]
    fn conflict_tie_goes_to_the_smaller_name() {
        let spec = |presence| PresenceNamespaceSpec {
            name: Some("chat".into()),
            presence,
            ..Default::default()
        };
        let r = render(&[pns("b", 7, spec(false)), pns("a", 7, spec(true))]).unwrap();
        assert_eq!(r.outcomes["a"].1, Outcome::Applied);
        assert_eq!(r.outcomes["b"].1, Outcome::Conflict { winner: "a".into() });
        assert!(r.file.namespaces[0].options.presence);
    }

    #[test]
    fn deleted_object_frees_its_namespace_for_the_next_claimant() {
        let mut old = pns("old", 1, chat());
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        let spec = PresenceNamespaceSpec {
            name: Some("old".into()),
            ..Default::default()
        };
        let r = render(&[old, pns("young", 2, spec)]).unwrap();
        assert!(!r.outcomes.contains_key("old"));
        assert_eq!(r.outcomes["young"].1, Outcome::Applied);
        assert_eq!(r.file.namespaces[0].name, "old");
        assert!(!r.file.namespaces[0].options.presence);
    }

    #[test]
    fn without_namespace_fills_its_own_section() {
        let spec = PresenceNamespaceSpec {
            without_namespace: true,
            presence: true,
            allow_presence_for_subscriber: true,
            ..Default::default()
        };
        let r = render(&[pns("defaults", 1, spec), pns("chat", 2, chat())]).unwrap();
        let without = r.file.without_namespace.as_ref().unwrap();
        assert!(without.presence && without.allow_presence_for_subscriber);
        assert_eq!(r.file.namespaces.len(), 1);
        assert_eq!(r.outcomes["defaults"], (None, Outcome::Applied));
        assert!(r.yaml.contains("without_namespace:\n  presence: true\n"));
    }

    #[test]
    fn two_without_namespace_objects_conflict() {
        let spec = PresenceNamespaceSpec {
            without_namespace: true,
            ..Default::default()
        };
        let r = render(&[pns("second", 2, spec.clone()), pns("first", 1, spec)]).unwrap();
        assert_eq!(r.outcomes["first"].1, Outcome::Applied);
        assert_eq!(
            r.outcomes["second"].1,
            Outcome::Conflict {
                winner: "first".into()
            }
        );
    }

    #[test]
    fn invalid_objects_are_reported_and_left_out() {
        let bad_regex = PresenceNamespaceSpec {
            channel_regex: Some("([".into()),
            ..Default::default()
        };
        let bad_name = PresenceNamespaceSpec {
            name: Some("no spaces".into()),
            ..Default::default()
        };
        let both = PresenceNamespaceSpec {
            name: Some("chat".into()),
            without_namespace: true,
            ..Default::default()
        };
        let bad_without = PresenceNamespaceSpec {
            without_namespace: true,
            channel_regex: Some("(".into()),
            ..Default::default()
        };
        let r = render(&[
            pns("regex", 1, bad_regex),
            pns("name", 2, bad_name),
            pns("both", 3, both),
            pns("x", 4, PresenceNamespaceSpec::default()), // one-letter metadata.name
            pns("without", 5, bad_without),
            pns("good", 6, chat()),
        ])
        .unwrap();
        let reason = |name: &str| match &r.outcomes[name].1 {
            Outcome::Invalid { reason } => reason.clone(),
            other => panic!("{name}: expected Invalid, got {other:?}"),
        };
        assert!(
            reason("regex").contains("channel_regex"),
            "{}",
            reason("regex")
        );
        assert!(reason("name").contains("invalid"), "{}", reason("name"));
        assert!(reason("both").contains("exclusive"), "{}", reason("both"));
        assert!(reason("x").contains("\"x\""), "{}", reason("x"));
        assert!(
            reason("without").contains("channel_regex"),
            "{}",
            reason("without")
        );
        assert_eq!(r.file.namespaces.len(), 1);
        assert_eq!(r.file.namespaces[0].name, "good");
        assert!(r.file.without_namespace.is_none());
    }

    #[test]
    fn an_invalid_object_does_not_block_a_valid_claimant() {
        let bad = PresenceNamespaceSpec {
            name: Some("chat".into()),
            channel_regex: Some("[".into()),
            ..Default::default()
        };
        let r = render(&[pns("old-bad", 1, bad), pns("chat", 2, chat())]).unwrap();
        assert_eq!(r.outcomes["chat"].1, Outcome::Applied);
        assert!(matches!(r.outcomes["old-bad"].1, Outcome::Invalid { .. }));
    }
}
