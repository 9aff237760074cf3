//! The status an object should carry after a rendering, and when that is a transition.

use crate::crd::{Condition, PresenceNamespace, PresenceNamespaceStatus, READY};
use crate::render::Outcome;

/// The status `obj` should have given its rendering `outcome`.
///
/// `lastTransitionTime` is carried over from the current Ready condition unless its
/// status or reason changes; `now` (RFC 3339) is used otherwise.
pub fn desired(
    obj: &PresenceNamespace,
    channel_namespace: Option<&str>,
    outcome: &Outcome,
    configmap: &str,
    now: &str,
) -> PresenceNamespaceStatus {
    let generation = obj.metadata.generation;
    let (status, reason, message) = match outcome {
        Outcome::Applied => ("True", "Applied", format!("in ConfigMap {configmap}")),
        Outcome::Conflict { winner } => {
            let what = match channel_namespace {
                Some(ns) => format!("channel namespace {ns:?} is"),
                None => "the options for channels without a namespace are".to_string(),
            };
            (
                "False",
                "Conflict",
                format!("{what} already set by the older PresenceNamespace {winner:?}"),
            )
        }
        Outcome::Invalid { reason } => ("False", "Invalid", reason.clone()),
    };
    let mut ready = Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: Some(now.into()),
        observed_generation: generation,
    };
    if let Some(old) = obj.ready()
        && !is_transition(Some(old), &ready)
    {
        ready
            .last_transition_time
            .clone_from(&old.last_transition_time);
    }
    PresenceNamespaceStatus {
        observed_generation: generation,
        channel_namespace: channel_namespace.map(str::to_string),
        conditions: vec![ready],
    }
}

/// Whether going from `old` to `new` changes the Ready status or reason (worth an Event).
pub fn is_transition(old: Option<&Condition>, new: &Condition) -> bool {
    old.is_none_or(|old| old.status != new.status || old.reason != new.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn obj(generation: i64, ready: Option<Condition>) -> PresenceNamespace {
        PresenceNamespace {
            metadata: ObjectMeta {
                name: Some("chat".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Default::default(),
            status: ready.map(|c| PresenceNamespaceStatus {
                conditions: vec![c],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn applied_is_ready_true_with_the_configmap_named() {
        let s = desired(&obj(3, None), Some("chat"), &Outcome::Applied, "cm", "T1");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.channel_namespace.as_deref(), Some("chat"));
        let c = &s.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str()), ("Ready", "True"));
        assert_eq!(c.reason, "Applied");
        assert_eq!(c.message, "in ConfigMap cm");
        assert_eq!(c.last_transition_time.as_deref(), Some("T1"));
        assert_eq!(c.observed_generation, Some(3));
    }

    #[test]
    fn conflict_and_invalid_are_ready_false() {
        let conflict = Outcome::Conflict {
            winner: "old".into(),
        };
        let s = desired(&obj(1, None), Some("chat"), &conflict, "cm", "T1");
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "Conflict");
        assert!(s.conditions[0].message.contains("\"old\""));
        let s = desired(&obj(1, None), None, &conflict, "cm", "T1");
        assert!(s.conditions[0].message.contains("without a namespace"));
        let invalid = Outcome::Invalid {
            reason: "bad regex".into(),
        };
        let s = desired(&obj(1, None), Some("chat"), &invalid, "cm", "T1");
        assert_eq!(
            (
                s.conditions[0].reason.as_str(),
                s.conditions[0].message.as_str()
            ),
            ("Invalid", "bad regex")
        );
    }

    #[test]
    fn transition_time_is_kept_while_status_and_reason_hold() {
        let first = desired(&obj(1, None), Some("chat"), &Outcome::Applied, "cm", "T1");
        let again = desired(
            &obj(2, Some(first.conditions[0].clone())),
            Some("chat"),
            &Outcome::Applied,
            "cm",
            "T2",
        );
        assert_eq!(
            again.conditions[0].last_transition_time.as_deref(),
            Some("T1")
        );
        assert_eq!(again.observed_generation, Some(2));
        assert!(!is_transition(
            Some(&first.conditions[0]),
            &again.conditions[0]
        ));

        let invalid = Outcome::Invalid { reason: "x".into() };
        let changed = desired(
            &obj(3, Some(first.conditions[0].clone())),
            Some("chat"),
            &invalid,
            "cm",
            "T3",
        );
        assert_eq!(
            changed.conditions[0].last_transition_time.as_deref(),
            Some("T3")
        );
        assert!(is_transition(
            Some(&first.conditions[0]),
            &changed.conditions[0]
        ));
        assert!(is_transition(None, &changed.conditions[0]));
    }
}
