//! Every NATS subject the cluster engine uses, built in this one place from `engine.nats.prefix`.

use std::fmt::Write as _;

/// The subjects of one cluster (one prefix). Two clusters with different prefixes share no
/// subject, so they never see each other's messages.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    /// `<prefix>.delta`: batches of changes from one origin.
    pub delta: String,
    /// `<prefix>.heartbeat`: liveness, last seq and node info.
    pub heartbeat: String,
    /// `<prefix>.leaving`: graceful shutdown announcements.
    pub leaving: String,
    /// `<prefix>.*`: what the receiver subscribes to. One subscription (not three) keeps a
    /// peer's deltas, heartbeats and leaving in the order it published them, so a heartbeat's
    /// `last_seq` is never seen before the delta it covers.
    pub broadcast: String,
}

/// Which broadcast subject a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Delta,
    Heartbeat,
    Leaving,
}

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "engine.nats.prefix {0:?} is not a valid NATS subject prefix: use dot-separated tokens \
     without spaces, '*' or '>' (e.g. \"rollcall\" or \"prod.rollcall\")"
)]
pub struct InvalidPrefix(pub String);

impl Subjects {
    /// Subjects under `prefix`, which must be one or more non-empty dot-separated tokens
    /// without whitespace or wildcards.
    pub fn new(prefix: &str) -> Result<Subjects, InvalidPrefix> {
        let valid = !prefix.is_empty()
            && prefix.split('.').all(|t| {
                !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>')
            });
        if !valid {
            return Err(InvalidPrefix(prefix.to_string()));
        }
        Ok(Subjects {
            prefix: prefix.to_string(),
            delta: format!("{prefix}.delta"),
            heartbeat: format!("{prefix}.heartbeat"),
            leaving: format!("{prefix}.leaving"),
            broadcast: format!("{prefix}.*"),
        })
    }

    /// `<prefix>.sync.<node>`: where `node` answers snapshot requests. The node id is escaped
    /// into one subject token (see [`escape_token`]), so any node name is safe.
    pub fn sync(&self, node: &str) -> String {
        format!("{}.sync.{}", self.prefix, escape_token(node))
    }

    /// Which broadcast subject `subject` is, if any.
    pub fn kind(&self, subject: &str) -> Option<Kind> {
        if subject == self.delta {
            Some(Kind::Delta)
        } else if subject == self.heartbeat {
            Some(Kind::Heartbeat)
        } else if subject == self.leaving {
            Some(Kind::Leaving)
        } else {
            None
        }
    }
}

/// Escapes a node id into a single subject token: `[A-Za-z0-9-]` stay, every other byte
/// becomes `_XX` (hex). Injective, because `_` itself is always escaped; host names with dots
/// (`pod.ns.svc`) would otherwise split into several tokens.
pub fn escape_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "_{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_live_under_the_prefix() {
        let s = Subjects::new("prod.rc").unwrap();
        assert_eq!(s.delta, "prod.rc.delta");
        assert_eq!(s.heartbeat, "prod.rc.heartbeat");
        assert_eq!(s.leaving, "prod.rc.leaving");
        assert_eq!(s.broadcast, "prod.rc.*");
        assert_eq!(s.sync("node-1"), "prod.rc.sync.node-1");
        assert_eq!(s.kind("prod.rc.delta"), Some(Kind::Delta));
        assert_eq!(s.kind("prod.rc.other"), None);
    }

    #[test]
    fn node_ids_become_one_token() {
        assert_eq!(escape_token("pod.ns_1 x"), "pod_2Ens_5F1_20x");
        assert_ne!(escape_token("a.b"), escape_token("a_b"));
        assert_eq!(escape_token("é"), "_C3_A9");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["", "a..b", ".a", "a.", "a b", "a.*", ">"] {
            assert!(Subjects::new(p).is_err(), "{p:?}");
        }
        assert!(Subjects::new("rollcall").is_ok());
    }
}
