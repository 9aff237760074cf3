//! The subscribe and presence permission tables of the client protocol (first match wins).

use crate::channel::ChannelName;
use crate::namespace::NamespaceOptions;

/// Who is asking: the connection's user and whether the node runs with `client.insecure`.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The user id; `""` for anonymous connections.
    pub user: &'a str,
    /// `client.insecure`: every permission check passes.
    pub insecure: bool,
}

impl Requester<'_> {
    fn anonymous(&self) -> bool {
        self.user.is_empty()
    }
}

/// The outcome of the subscribe table, so a caller (and a test) can see which row decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// `$` private channel without a subscription token.
    DeniedPrivateWithoutToken,
    /// A valid subscription token allows it.
    AllowedByToken,
    /// The channel is user-limited and lists the user.
    AllowedUserLimited,
    /// `allow_subscribe_for_client` (and the anonymous rule).
    AllowedForClient,
    /// `client.insecure`.
    AllowedInsecure,
    /// No row matched.
    Denied,
}

impl SubscribeDecision {
    pub fn allowed(self) -> bool {
        !matches!(
            self,
            SubscribeDecision::Denied | SubscribeDecision::DeniedPrivateWithoutToken
        )
    }
}

/// Decides a subscribe. `has_valid_token` is true when the command carried a subscription
/// token that verified (an invalid one never reaches this table: it is a 3500 disconnect).
pub fn subscribe(
    channel: &ChannelName<'_>,
    ns: &NamespaceOptions,
    who: Requester<'_>,
    has_valid_token: bool,
) -> SubscribeDecision {
    if channel.private && !has_valid_token {
        return SubscribeDecision::DeniedPrivateWithoutToken;
    }
    if has_valid_token {
        return SubscribeDecision::AllowedByToken;
    }
    if channel.lists_user(who.user) {
        return SubscribeDecision::AllowedUserLimited;
    }
    if ns.allow_subscribe_for_client && (!who.anonymous() || ns.allow_subscribe_for_anonymous) {
        return SubscribeDecision::AllowedForClient;
    }
    if who.insecure {
        return SubscribeDecision::AllowedInsecure;
    }
    SubscribeDecision::Denied
}

/// Decides a client-side `presence` or `presence_stats` (after the namespace, channel and
/// `presence` checks). `subscribed` is true when the client holds a client-side or server-side
/// subscription to the channel.
pub fn presence(ns: &NamespaceOptions, who: Requester<'_>, subscribed: bool) -> bool {
    let anonymous_ok = !who.anonymous() || ns.allow_presence_for_anonymous;
    (ns.allow_presence_for_client && anonymous_ok)
        || (ns.allow_presence_for_subscriber && subscribed && anonymous_ok)
        || who.insecure
}

/// Whether a subscription gets join/leave pushes: forced by the namespace, or asked for with
/// `join_leave: true` when the namespace has `join_leave` and the subscriber passes the presence
/// check (as a subscriber).
pub fn push_join_leave(ns: &NamespaceOptions, who: Requester<'_>, asked: bool) -> bool {
    ns.force_push_join_leave || (asked && ns.join_leave && presence(ns, who, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Requester<'static> = Requester {
        user: "42",
        insecure: false,
    };
    const ANON: Requester<'static> = Requester {
        user: "",
        insecure: false,
    };
    const INSECURE_ANON: Requester<'static> = Requester {
        user: "",
        insecure: true,
    };

    fn ch(s: &str) -> ChannelName<'_> {
        ChannelName::parse(s).unwrap()
    }

    fn open() -> NamespaceOptions {
        NamespaceOptions {
            allow_subscribe_for_client: true,
            ..Default::default()
        }
    }

    // Subscribe table, one test per row.

    #[test]
    fn subscribe_row1_private_without_token_denied_even_when_open() {
        let d = subscribe(&ch("$chat:x"), &open(), USER, false);
        assert_eq!(d, SubscribeDecision::DeniedPrivateWithoutToken);
        let d = subscribe(&ch("$chat:x"), &open(), INSECURE_ANON, false);
        assert_eq!(d, SubscribeDecision::DeniedPrivateWithoutToken);
        assert!(!d.allowed());
    }

    #[test]
    fn subscribe_row2_valid_token_allows_closed_and_private_channels() {
        let closed = NamespaceOptions::default();
        assert_eq!(
            subscribe(&ch("$chat:x"), &closed, USER, true),
            SubscribeDecision::AllowedByToken
        );
        assert_eq!(
            subscribe(&ch("chat:x"), &closed, ANON, true),
            SubscribeDecision::AllowedByToken
        );
    }

    #[test]
    fn subscribe_row3_user_limited_channel_listing_the_user() {
        let closed = NamespaceOptions::default();
        assert_eq!(
            subscribe(&ch("dialog#42,43"), &closed, USER, false),
            SubscribeDecision::AllowedUserLimited
        );
        assert_eq!(
            subscribe(&ch("dialog#41,43"), &closed, USER, false),
            SubscribeDecision::Denied
        );
        // Anonymous users are never listed.
        assert_eq!(
            subscribe(&ch("dialog#,1"), &closed, ANON, false),
            SubscribeDecision::Denied
        );
    }

    #[test]
    fn subscribe_row4_allow_subscribe_for_client_and_anonymous_rule() {
        assert_eq!(
            subscribe(&ch("chat:x"), &open(), USER, false),
            SubscribeDecision::AllowedForClient
        );
        assert_eq!(
            subscribe(&ch("chat:x"), &open(), ANON, false),
            SubscribeDecision::Denied
        );
        let anon_ok = NamespaceOptions {
            allow_subscribe_for_anonymous: true,
            ..open()
        };
        assert_eq!(
            subscribe(&ch("chat:x"), &anon_ok, ANON, false),
            SubscribeDecision::AllowedForClient
        );
        // allow_subscribe_for_anonymous alone opens nothing.
        let only_anon = NamespaceOptions {
            allow_subscribe_for_anonymous: true,
            ..Default::default()
        };
        assert_eq!(
            subscribe(&ch("chat:x"), &only_anon, ANON, false),
            SubscribeDecision::Denied
        );
    }

    #[test]
    fn subscribe_row5_insecure_allows() {
        assert_eq!(
            subscribe(
                &ch("chat:x"),
                &NamespaceOptions::default(),
                INSECURE_ANON,
                false
            ),
            SubscribeDecision::AllowedInsecure
        );
    }

    #[test]
    fn subscribe_row6_otherwise_denied() {
        let d = subscribe(&ch("chat:x"), &NamespaceOptions::default(), USER, false);
        assert_eq!(d, SubscribeDecision::Denied);
        assert!(!d.allowed());
    }

    // Presence table, one test per row.

    #[test]
    fn presence_row1_allow_presence_for_client() {
        let ns = NamespaceOptions {
            allow_presence_for_client: true,
            ..Default::default()
        };
        assert!(presence(&ns, USER, false));
        assert!(!presence(&ns, ANON, false));
        let anon = NamespaceOptions {
            allow_presence_for_anonymous: true,
            ..ns
        };
        assert!(presence(&anon, ANON, false));
    }

    #[test]
    fn presence_row2_allow_presence_for_subscriber_needs_subscription() {
        let ns = NamespaceOptions {
            allow_presence_for_subscriber: true,
            ..Default::default()
        };
        assert!(presence(&ns, USER, true));
        assert!(!presence(&ns, USER, false));
        assert!(!presence(&ns, ANON, true));
        let anon = NamespaceOptions {
            allow_presence_for_anonymous: true,
            ..ns
        };
        assert!(presence(&anon, ANON, true));
        assert!(!presence(&anon, ANON, false));
    }

    #[test]
    fn presence_row3_insecure() {
        assert!(presence(&NamespaceOptions::default(), INSECURE_ANON, false));
    }

    #[test]
    fn presence_row4_otherwise_denied() {
        assert!(!presence(&NamespaceOptions::default(), USER, true));
        let anon_only = NamespaceOptions {
            allow_presence_for_anonymous: true,
            ..Default::default()
        };
        assert!(!presence(&anon_only, ANON, true));
    }

    #[test]
    fn join_leave_push_rules() {
        let forced = NamespaceOptions {
            force_push_join_leave: true,
            ..Default::default()
        };
        assert!(push_join_leave(&forced, USER, false));
        let opt_in = NamespaceOptions {
            join_leave: true,
            allow_presence_for_subscriber: true,
            ..Default::default()
        };
        assert!(push_join_leave(&opt_in, USER, true));
        assert!(!push_join_leave(&opt_in, USER, false));
        // Opt-in without presence permission gets nothing.
        let no_perm = NamespaceOptions {
            join_leave: true,
            ..Default::default()
        };
        assert!(!push_join_leave(&no_perm, USER, true));
        // Opt-in where the namespace has no join_leave gets nothing.
        let no_jl = NamespaceOptions {
            allow_presence_for_client: true,
            ..Default::default()
        };
        assert!(!push_join_leave(&no_jl, USER, true));
    }
}
