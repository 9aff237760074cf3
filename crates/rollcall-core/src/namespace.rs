//! Channel namespaces: their options, the set a node runs with, and resolving a channel to one.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::channel::ChannelName;
use crate::codes::ErrorCode;

/// The options of one channel namespace (Centrifugo's names). Every flag defaults to `false`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceOptions {
    /// Keep presence (who is subscribed) for channels of this namespace.
    pub presence: bool,
    /// Emit join/leave events when a client subscribes or unsubscribes.
    pub join_leave: bool,
    /// Push join/leave to every subscriber without asking them to opt in.
    pub force_push_join_leave: bool,
    /// Any authenticated client may ask for presence.
    pub allow_presence_for_client: bool,
    /// A subscriber of the channel may ask for its presence.
    pub allow_presence_for_subscriber: bool,
    /// The two rules above extend to anonymous clients.
    pub allow_presence_for_anonymous: bool,
    /// Any authenticated client may subscribe without a subscription token.
    pub allow_subscribe_for_client: bool,
    /// The rule above extends to anonymous clients.
    pub allow_subscribe_for_anonymous: bool,
    /// When set, the part of the channel after `ns:` must match this regular expression.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel_regex: String,
}

/// A named namespace as it appears in config: `{name: chat, presence: true, …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceConfig {
    /// The namespace name: `^[-a-zA-Z0-9_.]{2,}$`.
    pub name: String,
    #[serde(flatten)]
    pub options: NamespaceOptions,
}

/// The content of `channel.namespaces_file`, as the operator writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespacesFile {
    /// Named namespaces, sorted by name when the operator writes them.
    pub namespaces: Vec<NamespaceConfig>,
    /// Options for channels without a namespace; when present they replace the main config's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_namespace: Option<NamespaceOptions>,
}

/// Why a namespace set cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    #[error("namespace name {0:?} is invalid: it must match ^[-a-zA-Z0-9_.]{{2,}}$")]
    InvalidName(String),
    #[error("namespace {0:?} is defined twice")]
    Duplicate(String),
    #[error(
        "namespace {name:?}: channel_regex {regex:?} is not a valid regular expression: {reason}"
    )]
    InvalidRegex {
        name: String,
        regex: String,
        reason: String,
    },
}

static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[-a-zA-Z0-9_.]{2,}$").expect("static regex"));

/// Whether `name` is a valid namespace name.
pub fn valid_namespace_name(name: &str) -> bool {
    NAME_RE.is_match(name)
}

/// One namespace ready for use: its options and its compiled `channel_regex`.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The namespace name; `""` for channels without a namespace.
    pub name: Arc<str>,
    pub options: NamespaceOptions,
    regex: Option<Regex>,
}

impl Namespace {
    fn build(name: &str, options: NamespaceOptions) -> Result<Self, NamespaceError> {
        let regex = if options.channel_regex.is_empty() {
            None
        } else {
            let re =
                Regex::new(&options.channel_regex).map_err(|e| NamespaceError::InvalidRegex {
                    name: name.to_string(),
                    regex: options.channel_regex.clone(),
                    reason: e.to_string(),
                })?;
            Some(re)
        };
        Ok(Namespace {
            name: name.into(),
            options,
            regex,
        })
    }
}

/// The namespace set a node runs with. Immutable: a hot reload builds a new one and swaps it in.
#[derive(Debug, Clone)]
pub struct Namespaces {
    without: Arc<Namespace>,
    by_name: HashMap<Arc<str>, Arc<Namespace>>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            without: Arc::new(Namespace {
                name: "".into(),
                options: NamespaceOptions::default(),
                regex: None,
            }),
            by_name: HashMap::new(),
        }
    }
}

impl Namespaces {
    /// Builds the set from the main config's `channel` section. Names are validated, duplicates
    /// and bad regular expressions rejected.
    pub fn build(
        without_namespace: &NamespaceOptions,
        namespaces: &[NamespaceConfig],
    ) -> Result<Self, NamespaceError> {
        let without = Arc::new(Namespace::build("", without_namespace.clone())?);
        let mut by_name = HashMap::with_capacity(namespaces.len());
        for ns in namespaces {
            if !valid_namespace_name(&ns.name) {
                return Err(NamespaceError::InvalidName(ns.name.clone()));
            }
            let built = Arc::new(Namespace::build(&ns.name, ns.options.clone())?);
            if by_name.insert(built.name.clone(), built).is_some() {
                return Err(NamespaceError::Duplicate(ns.name.clone()));
            }
        }
        Ok(Namespaces { without, by_name })
    }

    /// Builds the set from the main config plus a namespaces file whose entries win by name
    /// (and whose `without_namespace`, when present, replaces the main one).
    pub fn build_with_file(
        without_namespace: &NamespaceOptions,
        namespaces: &[NamespaceConfig],
        file: &NamespacesFile,
    ) -> Result<Self, NamespaceError> {
        // The file itself must not repeat a name; against the main config it simply wins.
        Namespaces::build(&NamespaceOptions::default(), &file.namespaces)?;
        let mut merged: Vec<NamespaceConfig> = namespaces
            .iter()
            .filter(|ns| !file.namespaces.iter().any(|f| f.name == ns.name))
            .cloned()
            .collect();
        merged.extend(file.namespaces.iter().cloned());
        let without = file.without_namespace.as_ref().unwrap_or(without_namespace);
        Namespaces::build(without, &merged)
    }

    /// The namespace for channels without one.
    pub fn without_namespace(&self) -> &Arc<Namespace> {
        &self.without
    }

    /// The namespace named `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.by_name.get(name)
    }

    /// Whether a namespace of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The names of every configured namespace, unsorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(|k| &**k)
    }

    /// Resolves a channel to its namespace.
    ///
    /// Errors: empty or over-long channel, or a name that fails `channel_regex` → 107;
    /// a namespace that is not configured → 102.
    pub fn resolve<'c>(
        &self,
        channel: &'c str,
    ) -> Result<(ChannelName<'c>, &Arc<Namespace>), ErrorCode> {
        let parsed = ChannelName::parse(channel)?;
        let ns = match parsed.namespace {
            None => &self.without,
            Some(name) => self.by_name.get(name).ok_or(ErrorCode::UnknownChannel)?,
        };
        if let Some(re) = &ns.regex
            && !re.is_match(parsed.name)
        {
            return Err(ErrorCode::BadRequest);
        }
        Ok((parsed, ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> NamespaceConfig {
        NamespaceConfig {
            name: "chat".into(),
            options: NamespaceOptions {
                presence: true,
                join_leave: true,
                ..Default::default()
            },
        }
    }

    #[test]
    fn resolves_named_and_unnamed_channels() {
        let set = Namespaces::build(&NamespaceOptions::default(), &[chat()]).unwrap();
        let (_, ns) = set.resolve("chat:1").unwrap();
        assert_eq!(&*ns.name, "chat");
        assert!(ns.options.presence);
        let (_, ns) = set.resolve("index").unwrap();
        assert_eq!(&*ns.name, "");
        assert!(!ns.options.presence);
    }

    #[test]
    fn unknown_namespace_is_102() {
        let set = Namespaces::build(&NamespaceOptions::default(), &[chat()]).unwrap();
        assert_eq!(
            set.resolve("nope:1").unwrap_err(),
            ErrorCode::UnknownChannel
        );
    }

    #[test]
    fn bad_channel_is_107() {
        let set = Namespaces::build(&NamespaceOptions::default(), &[chat()]).unwrap();
        assert_eq!(set.resolve("").unwrap_err(), ErrorCode::BadRequest);
        assert_eq!(
            set.resolve(&"x".repeat(256)).unwrap_err(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn channel_regex_checks_the_part_after_namespace() {
        let mut ns = chat();
        ns.options.channel_regex = "^[a-z]+$".into();
        let set = Namespaces::build(&NamespaceOptions::default(), &[ns]).unwrap();
        assert!(set.resolve("chat:abc").is_ok());
        assert_eq!(set.resolve("chat:ABC").unwrap_err(), ErrorCode::BadRequest);
        assert_eq!(set.resolve("chat:a1").unwrap_err(), ErrorCode::BadRequest);
    }

    #[test]
    fn private_channels_resolve_their_namespace() {
        let set = Namespaces::build(&NamespaceOptions::default(), &[chat()]).unwrap();
        let (parsed, ns) = set.resolve("$chat:secret").unwrap();
        assert!(parsed.private);
        assert_eq!(&*ns.name, "chat");
    }

    #[test]
    fn invalid_names_duplicates_and_regexes_are_rejected() {
        let mut bad = chat();
        bad.name = "c".into();
        assert_eq!(
            Namespaces::build(&NamespaceOptions::default(), &[bad]).unwrap_err(),
            NamespaceError::InvalidName("c".into())
        );
        let mut bad = chat();
        bad.name = "ch at".into();
        assert!(Namespaces::build(&NamespaceOptions::default(), &[bad]).is_err());
        assert_eq!(
            Namespaces::build(&NamespaceOptions::default(), &[chat(), chat()]).unwrap_err(),
            NamespaceError::Duplicate("chat".into())
        );
        let mut bad = chat();
        bad.options.channel_regex = "([".into();
        assert!(matches!(
            Namespaces::build(&NamespaceOptions::default(), &[bad]),
            Err(NamespaceError::InvalidRegex { .. })
        ));
    }

    #[test]
    fn file_entries_win_by_name() {
        let file = NamespacesFile {
            namespaces: vec![NamespaceConfig {
                name: "chat".into(),
                options: NamespaceOptions {
                    presence: false,
                    ..Default::default()
                },
            }],
            without_namespace: Some(NamespaceOptions {
                presence: true,
                ..Default::default()
            }),
        };
        let other = NamespaceConfig {
            name: "other".into(),
            options: NamespaceOptions::default(),
        };
        let set =
            Namespaces::build_with_file(&NamespaceOptions::default(), &[chat(), other], &file)
                .unwrap();
        assert!(!set.get("chat").unwrap().options.presence);
        assert!(set.contains("other"));
        assert!(set.without_namespace().options.presence);
    }

    #[test]
    fn options_parse_from_snake_case_yaml() {
        let yaml = "name: chat\npresence: true\nforce_push_join_leave: true\n";
        let ns: NamespaceConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(ns.name, "chat");
        assert!(ns.options.presence);
        assert!(ns.options.force_push_join_leave);
        assert!(!ns.options.join_leave);
    }
}
