//! Channel names: the `$` private prefix, the `ns:` namespace boundary and the `#` user boundary.

use crate::codes::ErrorCode;

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// A channel name taken apart. Borrowed from the original string: parsing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    /// The whole channel as given.
    pub full: &'a str,
    /// Starts with `$`: subscribing always needs a subscription token.
    pub private: bool,
    /// Text before the first `:` after the `$` prefix; `None` for channels without a namespace.
    pub namespace: Option<&'a str>,
    /// The part after `ns:` (after the `$` when there is no namespace): what `channel_regex` sees.
    pub name: &'a str,
    /// The text after the last `#`: a comma-separated list of the users the channel is limited to.
    pub users: Option<&'a str>,
}

impl<'a> ChannelName<'a> {
    /// Parses a channel name. Empty names and names over [`MAX_CHANNEL_LEN`] bytes are
    /// [`ErrorCode::BadRequest`] (107).
    pub fn parse(full: &'a str) -> Result<Self, ErrorCode> {
        if full.is_empty() || full.len() > MAX_CHANNEL_LEN {
            return Err(ErrorCode::BadRequest);
        }
        let (private, rest) = match full.strip_prefix('$') {
            Some(rest) => (true, rest),
            None => (false, full),
        };
        let (namespace, name) = match rest.split_once(':') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, rest),
        };
        let users = full.rsplit_once('#').map(|(_, users)| users);
        Ok(ChannelName {
            full,
            private,
            namespace,
            name,
            users,
        })
    }

    /// Whether the channel is user-limited (`dialog#42,43`) and `user` is one of its users.
    /// An anonymous user (`""`) is never listed.
    pub fn lists_user(&self, user: &str) -> bool {
        match self.users {
            Some(users) if !user.is_empty() => users.split(',').any(|u| u == user),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_channel_has_no_namespace() {
        let c = ChannelName::parse("index").unwrap();
        assert_eq!(c.namespace, None);
        assert_eq!(c.name, "index");
        assert!(!c.private);
        assert_eq!(c.users, None);
    }

    #[test]
    fn namespace_is_text_before_first_colon() {
        let c = ChannelName::parse("chat:room:1").unwrap();
        assert_eq!(c.namespace, Some("chat"));
        assert_eq!(c.name, "room:1");
    }

    #[test]
    fn private_prefix_comes_before_namespace() {
        let c = ChannelName::parse("$chat:secret").unwrap();
        assert!(c.private);
        assert_eq!(c.namespace, Some("chat"));
        assert_eq!(c.name, "secret");
        let c = ChannelName::parse("$secret").unwrap();
        assert!(c.private);
        assert_eq!(c.namespace, None);
        assert_eq!(c.name, "secret");
    }

    #[test]
    fn user_boundary_lists_users() {
        let c = ChannelName::parse("dialog#42,43").unwrap();
        assert_eq!(c.users, Some("42,43"));
        assert!(c.lists_user("42"));
        assert!(c.lists_user("43"));
        assert!(!c.lists_user("4"));
        assert!(!c.lists_user(""));
        let c = ChannelName::parse("chat:dialog#7").unwrap();
        assert_eq!(c.namespace, Some("chat"));
        assert!(c.lists_user("7"));
    }

    #[test]
    fn empty_and_too_long_are_bad_requests() {
        assert_eq!(ChannelName::parse(""), Err(ErrorCode::BadRequest));
        let long = "a".repeat(MAX_CHANNEL_LEN + 1);
        assert_eq!(ChannelName::parse(&long), Err(ErrorCode::BadRequest));
        let max = "a".repeat(MAX_CHANNEL_LEN);
        assert!(ChannelName::parse(&max).is_ok());
    }
}
